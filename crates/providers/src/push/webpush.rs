//! Placeholder: the webpush unit is written on its own branch.
