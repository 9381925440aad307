//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so
//! building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "roomcast/v1/common.proto",
        "roomcast/v1/client.proto",
        "roomcast/v1/control.proto",
        "roomcast/v1/adapter.proto",
        "roomcast/v1/backend.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("roomcast_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // No generated `connect` constructors: the `Backend` service has an rpc
    // named `Connect`, whose client method would clash with it. `lib.rs`
    // gives `ControlClient` its constructor back.
    tonic_build::configure()
        .bytes(["."])
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
