//! Compiles proto/rewind/v1/*.proto with protox (pure Rust, no protoc) into
//! prost messages and tonic client/server stubs, and writes the file
//! descriptor set that the coordinator serves through reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("..").join("proto");
    let files = ["rewind/v1/fleet.proto", "rewind/v1/admin.proto", "rewind/v1/comms.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("rewind_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_transport(false).build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
