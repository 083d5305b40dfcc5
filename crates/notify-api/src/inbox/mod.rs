//! The end-user inbox (DESIGN.md §5): subscriber tokens, and the real-time side.

pub mod demo;
pub mod hub;
pub mod socket;
pub mod token;
