//! Generates the gRPC code of SPIRE's plugin services from `proto/` (protoc is
//! installed by scripts/setup.sh): servers for the plugins, clients for the test host.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/nodeattestor_agent.proto",
        "proto/nodeattestor_server.proto",
        "proto/config.proto",
        "proto/init.proto",
        "proto/go_plugin.proto",
        "proto/go_plugin_controller.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
