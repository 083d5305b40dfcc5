//! The end-user inbox (docs/contract.md §3.3): subscriber tokens, and the real-time side.

pub mod demo;
pub mod hub;
pub mod offline;
pub mod socket;
pub mod token;
