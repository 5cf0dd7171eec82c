//! Access control, abuse limits and robustness, over real HTTP against the
//! real application on 127.0.0.1:0, one module per scenario.
//!
//! The role × route matrix (`roles`) is written from the access
//! specification, not from the access rules the routes are registered
//! with, and walks every operation of the OpenAPI document: a new route
//! fails there until it has both an expectation and a rule.

mod connections;
mod cors;
mod headers;
mod helpers;
mod keys;
mod open_mode;
mod pages;
mod random_requests;
mod rate_limits;
mod roles;
