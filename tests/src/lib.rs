//! clawswarm end-to-end harness.

pub mod stub_model;
