//! clawswarm's end-to-end harness.

pub mod control_plane;
