//! The platform's integration tests: real PostgreSQL, real RabbitMQ, every service in
//! process. Each test gets a fresh database (cloned from a migrated template) and its own
//! RabbitMQ vhost, so tests run in parallel without seeing each other.

mod actions;
mod admission;
mod api;
mod audience;
mod batch;
mod bounds;
mod cache;
mod chat;
mod commit;
mod dead_letters;
mod delivery;
mod devices;
mod erasure_race;
mod failures;
mod handoff;
mod harness;
mod idempotency;
mod inbox;
mod inbox_live;
mod integrations;
mod limits;
mod listing;
mod messages;
mod notification_view;
mod openapi;
mod parameters;
mod plans;
mod providers_aws;
mod providers_http;
mod publishing;
mod receipts;
mod recovery;
mod relay;
mod rendering;
mod rotation;
mod schemathesis;
mod statuses;
mod stubs;
mod subscribers;
mod templates;
mod tenant_receipts;
mod tenant_sending;
mod traces;
