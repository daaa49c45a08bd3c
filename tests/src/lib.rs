//! clawswarm end-to-end harness.

pub mod harness;
pub mod stub_model;
