//! The `clawswarm.v1` wire protocol: generated code, the encoded file
//! descriptor set that feeds gRPC server reflection, and what every
//! clawswarm server shares at its edge (introspection, decode statuses, the
//! `/metrics` format). No domain logic lives here.

pub mod decode_status;
pub mod exposition;
pub mod introspection;
pub mod skill_bundle;

/// Generated code: lints are the generator's business.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("clawswarm.v1");
}

/// Encoded `FileDescriptorSet` of every clawswarm.v1 file (and the
/// well-known types they import), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clawswarm_descriptor.bin"));
