//! `vigil-spire-agent`: the agent-side SPIRE NodeAttestor plugin (docs/spire.md).
//! SPIRE's agent starts it; run by hand it says so and exits 1.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let names = vigil_spire::agent::SERVICE_NAMES.map(String::from).to_vec();
    match vigil_spire::plugin::serve(vigil_spire::agent::AgentPlugin::routes(), names).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-spire-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
