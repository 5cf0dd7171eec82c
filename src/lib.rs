//! OPD Token Engine.
pub mod engine;
