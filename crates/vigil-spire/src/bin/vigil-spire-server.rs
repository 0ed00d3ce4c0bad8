//! `vigil-spire-server`: the server-side SPIRE NodeAttestor plugin (docs/spire.md).
//! SPIRE's server starts it; run by hand it says so and exits 1.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let names = vigil_spire::server::SERVICE_NAMES
        .map(String::from)
        .to_vec();
    match vigil_spire::plugin::serve(vigil_spire::server::ServerPlugin::routes(), names).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-spire-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
