//! Compiles the Layotto-compatible protobuf API without a system `protoc`:
//! `protox` parses the `.proto` files into a `FileDescriptorSet`, which
//! `tonic-prost-build` turns into Rust code. The encoded descriptor set is
//! also written to `OUT_DIR` for gRPC server reflection.

use std::{env, error::Error, fs, path::PathBuf};

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "spec/proto/runtime/v1/appcallback.proto",
    "spec/proto/runtime/v1/lifecycle.proto",
    "spec/proto/runtime/v1/runtime.proto",
    "plinth/admin/v1/functions.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }

    // `google/protobuf/*.proto` imports resolve to protox's bundled copies.
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(
        out_dir.join("plinth_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;

    Ok(())
}
