//! Providers reached over plain HTTPS with our own small reqwest clients (no vendor SDK):
//! each has a configurable base URL, keeps the HTTP status and `Retry-After`, and sorts
//! every failure into the buckets of providers.md §0.
