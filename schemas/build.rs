//! Compiles every `.proto` file under `proto/` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY-free: build scripts are single-threaded here.
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Edition 2021 build script: set_var is safe to call.
        std::env::set_var("PROTOC", protoc);
    }
    let mut protos = Vec::new();
    collect(Path::new("proto"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &[PathBuf::from("proto")])?;
    Ok(())
}
