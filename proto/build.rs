//! Compiles `csi.proto` with protox (a pure-Rust parser), so a fresh machine
//! needs no system `protoc` to build Cairn.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=csi.proto");
    let descriptors = protox::compile(["csi.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
