//! HTTP integration tests: the real application on a loopback port, checked
//! against the contract in API.md, once per storage backend.

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
mod helpers;

mod absence;
mod backups;
mod closing;
mod concurrency;
mod docs;
mod durability;
mod errors;
mod events;
mod fhir;
mod idempotency;
mod limits;
mod metrics;
mod one_call;
mod opd_day;
mod opd_flow;
mod reports;
mod retention;
mod slots;
mod stream;
mod templates;
mod tokens;
