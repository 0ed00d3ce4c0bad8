//! `vigil demo identity`: workload identity on the attested node (docs/spire.md). The
//! agent also serves its identity routes on its node-local socket (the network API
//! keeps them: `vigil tenant add` checks an identity quote there); the verifier grants
//! the identity role to a `spire-server` certificate and runs a stub eviction hook that
//! logs. `vigil_spire::host` plays SPIRE: it starts `vigil-spire-agent` and
//! `vigil-spire-server` through the plugin handshake, configures them with HCL and
//! relays one attestation: the node gets its SPIFFE ID and selectors. Then a measured
//! file changes, the verifier marks the node Invalid Quote, the same flow is refused
//! with the verifier's reason, and the hook evicts the identity issued.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use vigil_spire::host::{self, PluginProcess};

use super::{note, step, toml_str, verdict, write_script, Demo, Ports};

/// The plugin executables the scenario needs next to the services.
const PLUGINS: [&str; 2] = ["vigil-spire-agent", "vigil-spire-server"];
/// The trust domain the demo's SPIFFE IDs are in.
const TRUST_DOMAIN: &str = "example.org";
/// The client certificate holding the identity role.
const SPIRE_CERT: &str = "spire-server";

/// Fails unless both plugin executables are in `bin_dir`.
pub(super) fn check_plugins(bin_dir: &Path) -> Result<()> {
    for p in PLUGINS {
        if !bin_dir.join(p).is_file() {
            bail!(
                "{} not found: build it (cargo build -p vigil-spire) or name its directory with --bin-dir",
                bin_dir.join(p).display()
            );
        }
    }
    Ok(())
}

impl Demo {
    /// The node-local socket.
    fn socket(&self) -> PathBuf {
        self.path("agent.sock")
    }

    /// The eviction hook's log.
    fn evictions(&self) -> PathBuf {
        self.path("evictions.log")
    }

    /// The verifier's scenario settings: identity (writing the stub hook), response
    /// (events and rules), none for the others.
    pub(super) fn verifier_extra(&self, ports: &Ports) -> Result<String> {
        match self.scenario {
            super::Scenario::Identity => {}
            super::Scenario::Response => return self.response_verifier_extra(),
            super::Scenario::Tour | super::Scenario::Gate => return Ok(String::new()),
        }
        let hook = self.path("evict.sh");
        write_script(
            &hook,
            &format!(
                "echo \"spire-server agent evict -spiffeID $1\" >> {}",
                toml_str(&self.evictions())
            ),
        )?;
        Ok(format!(
            "identity_clients = [\"{SPIRE_CERT}\"]\nidentity_trust_domain = \"{TRUST_DOMAIN}\"\n\
             identity_registrar = \"127.0.0.1:{}\"\nidentity_evict_command = [{}, \"{{spiffe_id}}\"]\n",
            ports.registrar_tls,
            toml_str(&hook)
        ))
    }

    /// The agent's socket settings (empty for the tour).
    pub(super) fn agent_extra(&self) -> String {
        if self.scenario != super::Scenario::Identity {
            return String::new();
        }
        format!(
            "serve_identity_socket = true\nidentity_socket = {}\nidentity_socket_mode = \"0600\"\n\
             identity_socket_group = \"\"\n",
            toml_str(&self.socket())
        )
    }

    /// The same check without SPIRE, as a shell script would make it: `vigil identity
    /// nonce` and `verify` on the server side, `attest` on the node; then the same
    /// evidence again, refused as a replay.
    fn reference_flow(&mut self, ports: &Ports) -> Result<()> {
        step("The same without SPIRE: vigil identity nonce, attest (node) and verify");
        let conn: Vec<std::ffi::OsString> = vec![
            "--verifier".into(),
            format!("127.0.0.1:{}", ports.verifier).into(),
            "--tls-dir".into(),
            self.path("cv_ca").into(),
            "--cert".into(),
            SPIRE_CERT.into(),
        ];
        let mut ask = vec!["identity".into(), "nonce".into()];
        ask.extend(conn.iter().cloned());
        let out = self.vigil(&ask)?;
        if !out.status.success() {
            bail!(
                "vigil identity nonce failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let nonce = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        note(&format!(
            "$ vigil identity nonce: {nonce} (from the verifier, usable once)"
        ));
        let out = self.vigil(&[
            "identity".into(),
            "attest".into(),
            "--socket".into(),
            self.socket().into(),
            "--nonce".into(),
            nonce.clone().into(),
        ])?;
        if !out.status.success() {
            bail!(
                "vigil identity attest failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let evidence = self.path("evidence.json");
        std::fs::write(&evidence, &out.stdout)?;
        note(&format!(
            "$ vigil identity attest --nonce {nonce} > {}",
            evidence.display()
        ));
        let mut verify: Vec<std::ffi::OsString> = vec![
            "identity".into(),
            "verify".into(),
            "--nonce".into(),
            nonce.clone().into(),
            "--evidence".into(),
            evidence.into(),
        ];
        verify.extend(conn);
        let out = self.vigil(&verify)?;
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !out.status.success() || answer["status"] != "trusted" {
            bail!(
                "vigil identity verify failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        note(&format!(
            "$ vigil identity verify --nonce {nonce} --evidence evidence.json: {} with {} selectors",
            answer["spiffe_id"].as_str().unwrap_or("?"),
            answer["selectors"].as_array().map_or(0, Vec::len)
        ));
        let out = self.vigil(&verify)?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("already used") {
            bail!("the replayed evidence was not refused as a replay: {err}");
        }
        note(&format!("the same evidence again: {}", err.trim()));
        verdict("the reference flow agrees, and a replayed nonce is refused");
        Ok(())
    }

    /// The scenario's steps, after the node was attested.
    pub(super) fn identity(&mut self, ports: &Ports) -> Result<()> {
        step(
            "SPIRE's plugins: vigil-spire-agent and vigil-spire-server, loaded as SPIRE loads them",
        );
        let cv_ca = self.path("cv_ca");
        self.vigil_ok(&[
            "ca".into(),
            "issue".into(),
            "--name".into(),
            SPIRE_CERT.into(),
            "--dir".into(),
            cv_ca.clone().into(),
        ])?;
        note(&format!(
            "$ vigil ca issue --name {SPIRE_CERT}: the server plugin's certificate (the verifier's identity_clients)"
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (agent_side, server_side) = runtime.block_on(async {
            let agent_side = PluginProcess::start(&self.bin_dir.join(PLUGINS[0])).await?;
            let server_side = PluginProcess::start(&self.bin_dir.join(PLUGINS[1])).await?;
            let agent_hcl = format!("socket_path = {}\n", toml_str(&self.socket()));
            agent_side.init_and_configure(TRUST_DOMAIN, &agent_hcl).await?;
            let server_hcl = format!(
                "verifier_address = \"127.0.0.1:{}\"\nca_cert = {}\nclient_cert = {}\nclient_key = {}\n",
                ports.verifier,
                toml_str(&cv_ca.join("cacert.crt")),
                toml_str(&cv_ca.join(format!("{SPIRE_CERT}-cert.crt"))),
                toml_str(&cv_ca.join(format!("{SPIRE_CERT}-private.pem"))),
            );
            server_side.init_and_configure(TRUST_DOMAIN, &server_hcl).await?;
            Ok::<_, host::HostError>((agent_side, server_side))
        })?;
        note("handshake read, Init and Configure (HCL) done for both; the agent side reads the node's socket");

        let attributes = runtime
            .block_on(host::attest(&agent_side, &server_side))
            .map_err(|s| anyhow::anyhow!("the plugin pair refused the attested node: {s}"))?;
        note(&format!("SPIFFE ID: {}", attributes.spiffe_id));
        for s in &attributes.selector_values {
            note(&format!("selector vigil:{s}"));
        }
        if !attributes
            .selector_values
            .contains(&"status:trusted".to_owned())
        {
            bail!("the selectors do not say the node is trusted");
        }
        verdict(&format!(
            "verdict 2: the node holds {} (can re-attest: {})",
            attributes.spiffe_id, attributes.can_reattest
        ));

        self.reference_flow(ports)?;

        let target = self.path("node").join("backup.sh");
        step(&format!("Tampering: appending to {}", target.display()));
        self.modify_measured_file(&target)?;
        self.wait_for("the verifier to mark the node Invalid Quote", |d| {
            Ok(d.status()?
                .filter(|s| s["operational_state"] == "Invalid Quote")
                .map(|_| ()))
        })?;
        note("the verifier: Invalid Quote");
        let refused = match runtime.block_on(host::attest(&agent_side, &server_side)) {
            Ok(a) => bail!("the tampered node still got {}", a.spiffe_id),
            Err(s) => s,
        };
        note(&format!("the same flow: {}", refused.message()));
        if !refused.message().contains("failed attestation") {
            bail!("refused for another reason than the failure: {refused}");
        }
        let evictions = self.evictions();
        let line = self.wait_for("the eviction hook to run", |_| {
            Ok(std::fs::read_to_string(&evictions)
                .ok()
                .and_then(|t| t.lines().last().map(str::to_owned)))
        })?;
        note(&format!("eviction hook ({}): {line}", evictions.display()));
        if !line.contains(&attributes.spiffe_id) {
            bail!("the eviction hook ran for another identity: {line}");
        }
        runtime.block_on(async {
            agent_side.shutdown().await;
            server_side.shutdown().await;
        });
        verdict(&format!(
            "verdict 3: the tampered node is refused and {} is evicted",
            attributes.spiffe_id
        ));
        Ok(())
    }
}
