//! Write the CRD manifests generated from the Rust types into deploy/crds/
//! (or the directory given as the first argument).
//!
//! `cargo run -p clawswarm-controller --bin crdgen` from the repository root.

use std::path::PathBuf;
use std::process::ExitCode;

use clawswarm_controller::runtime::kubernetes::crd;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("deploy/crds"));
    let files = match crd::render() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: cannot render CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
