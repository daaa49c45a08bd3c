//! clawswarm end-to-end harness.

pub mod harness;
pub mod openclaw;
pub mod stub_model;
