//! Compiles proto/ with protox (pure Rust): no `protoc` needed on any machine.

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/clawswarm/v1/common.proto",
    "proto/clawswarm/v1/agent_link.proto",
    "proto/clawswarm/v1/identity.proto",
    "proto/clawswarm/v1/gateway.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("clawswarm_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The generated `connect` constructor would clash with the `AgentLink.Connect`
        // RPC; clients are built from our own mTLS `Channel` anyway.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
