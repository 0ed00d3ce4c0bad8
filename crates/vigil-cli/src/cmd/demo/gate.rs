//! `vigil demo gate`: the provisioning trust gate, narrated. Two swtpm nodes whose
//! PCRs 0–7 the demo extends with the same "firmware" measurements before their agents
//! start, the second one's boot-loader PCR (4) with one more; a hardware class learnt
//! from the first with `vigil class create --from-node`; `vigil gate check` releasing
//! the first (an affirming EAR token, checked offline with `vigil gate verify-token`)
//! and holding the second (naming PCR 4); a stale node attested on demand (a new quote
//! taken); both checked at once by label; then the class widened with the odd node's
//! boot loader (a roll-out) and the odd node released. The verifier quotes every
//! 300 s, so every round the demo shows is one the gate asked for.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{free_port, note, pause, step, toml_str, verdict, Binaries, Demo, Ports};

/// The node released by the gate.
const GOOD: &str = "6a1c8a5e-0000-4000-8000-00000000000a";
/// The node held: its boot loader measured something else.
const ODD: &str = "6a1c8a5e-0000-4000-8000-00000000000b";
/// The class.
const CLASS: &str = "demo-r650";
/// The nonce the caller of the gate binds its token to.
const NONCE: &str = "deploy-4711-nonce";

/// `TPM2_PCR_Extend` of PCR `pcr`'s SHA-256 bank with `digest`, sent to a swtpm's
/// command port (it runs with `startup-clear`) before any agent holds it: what
/// firmware and a boot loader would have measured at boot.
fn pcr_extend(port: u16, pcr: u32, digest: &[u8; 32]) -> Result<()> {
    let mut cmd = Vec::with_capacity(65);
    cmd.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    cmd.extend_from_slice(&65u32.to_be_bytes());
    cmd.extend_from_slice(&0x0000_0182u32.to_be_bytes()); // TPM_CC_PCR_Extend
    cmd.extend_from_slice(&pcr.to_be_bytes());
    cmd.extend_from_slice(&9u32.to_be_bytes()); // authorization area
    cmd.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW, empty auth
    cmd.extend_from_slice(&[0, 0, 0, 0, 0]);
    cmd.extend_from_slice(&1u32.to_be_bytes()); // one digest
    cmd.extend_from_slice(&0x000Bu16.to_be_bytes()); // SHA-256
    cmd.extend_from_slice(digest);
    let mut tpm = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot reach the swtpm on port {port}"))?;
    tpm.set_read_timeout(Some(Duration::from_secs(10)))?;
    tpm.write_all(&cmd)?;
    let mut head = [0u8; 10];
    tpm.read_exact(&mut head)
        .context("no answer to TPM2_PCR_Extend")?;
    let rc = u32::from_be_bytes([head[6], head[7], head[8], head[9]]);
    if rc != 0 {
        bail!("TPM2_PCR_Extend of PCR {pcr} failed: TPM_RC {rc:#x}");
    }
    Ok(())
}

fn sha256(data: &str) -> [u8; 32] {
    let d = vigil_core::HashAlg::Sha256.hash(data.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_bytes());
    out
}

impl Demo {
    pub(super) fn run_gate(&mut self, bins: &Binaries) -> Result<()> {
        let ports = Ports::free()?;
        let odd_port = free_port(&[
            ports.registrar,
            ports.registrar_tls,
            ports.verifier,
            ports.agent,
        ])?;
        self.tenant = self.tenant_args(&ports);
        // Rounds every 300 s: every round shown below is one the gate asked for.
        self.start_control_plane(bins, &ports, 300.0)?;
        self.start_gate_node(bins, &ports, GOOD, ports.agent, false)?;
        self.start_gate_node(bins, &ports, ODD, odd_port, true)?;
        self.learn_class()?;
        let key = self.release_good()?;
        self.hold_odd()?;
        self.stale_on_demand()?;
        self.batch(&key)?;
        self.widen()?;
        println!(
            "\ndemo gate: every step as expected, in {:.1} s; logs in {}",
            self.started.elapsed().as_secs_f64(),
            self.path("logs").display()
        );
        Ok(())
    }

    /// A swtpm with "firmware" in PCRs 0–7 (and, for the odd node, another boot
    /// loader in PCR 4), and its agent, until it registered.
    fn start_gate_node(
        &mut self,
        bins: &Binaries,
        ports: &Ports,
        id: &str,
        port: u16,
        odd: bool,
    ) -> Result<()> {
        let name = if odd { "odd" } else { "good" };
        step(&format!(
            "Node {name} ({id}): swtpm with PCRs 0-7 measured as the class's firmware{}",
            if odd {
                ", and another boot loader in PCR 4"
            } else {
                ""
            }
        ));
        let (tcti, port_tpm) = self.launch_swtpm(&format!("swtpm-{name}"), name, "")?;
        for pcr in 0..8 {
            pcr_extend(port_tpm, pcr, &sha256(&format!("demo firmware, PCR {pcr}")))?;
        }
        if odd {
            pcr_extend(port_tpm, 4, &sha256("an unexpected boot loader"))?;
        }
        let agent_dir = self.path(&format!("agent-{name}"));
        std::fs::create_dir_all(&agent_dir)?;
        let conf = self.path(&format!("agent-{name}.toml"));
        // No IMA and no UEFI log: this node is judged on its PCRs alone.
        std::fs::write(
            &conf,
            format!(
                "uuid = \"{id}\"\nport = {port}\ncontact_port = {port}\nregistrar_port = {}\n\
                 tpm_tcti = \"{tcti}\"\nstate_dir = {}\ntrusted_client_ca = [{}]\n\
                 ima_ml_path = {}\nmeasuredboot_ml_path = {}\n",
                ports.registrar,
                toml_str(&agent_dir),
                toml_str(&self.path("cv_ca").join("cacert.crt")),
                toml_str(&agent_dir.join("no-ima-log")),
                toml_str(&agent_dir.join("no-uefi-log")),
            ),
        )?;
        for p in [ports.registrar, ports.registrar_tls, ports.verifier] {
            self.wait_for(&format!("port {p} to listen"), |_| {
                Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, p)).ok())
            })?;
        }
        let pid = self.procs.spawn(
            &format!("agent-{name}"),
            Command::new(&bins.agent).arg("--config").arg(&conf),
        )?;
        note(&format!("vigil-agent (pid {pid}) on :{port}"));
        self.wait_for(&format!("node {name} to register"), |d| {
            Ok(d.tenant_cmd(&["regstatus", "-u", id])?
                .status
                .success()
                .then_some(()))
        })?;
        Ok(())
    }

    /// The connection options, for `vigil class` and `vigil gate`.
    pub(super) fn conn(&self) -> Vec<OsString> {
        self.tenant[1..].to_vec()
    }

    /// `vigil <args> <connection options>`.
    pub(super) fn with_conn(&self, args: &[&str]) -> Result<Output> {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.extend(self.conn());
        self.vigil(&all)
    }

    pub(super) fn show(&self, command: &str, out: &Output) {
        note(&format!("$ vigil {command}"));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            note(&format!("  {line}"));
        }
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            note(&format!("  {line}"));
        }
    }

    pub(super) fn node_status(&self, id: &str) -> Result<Value> {
        let out = self.tenant_cmd(&["status", "-u", id, "--json"])?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Ok(v[id].clone())
    }

    /// Enrols the good node, learns the class from it, puts both nodes in it.
    fn learn_class(&mut self) -> Result<()> {
        step("The good node enrolled; the hardware class learnt from its verified quote");
        let store = self.path("tpm_cert_store");
        let out = self.tenant_cmd(&[
            OsString::from("add"),
            "-u".into(),
            GOOD.into(),
            "--tpm-cert-store".into(),
            store.clone().into(),
            "--label".into(),
            "rack=7".into(),
        ])?;
        self.save_log("tenant-add-good", &out);
        if !out.status.success() {
            bail!(
                "vigil tenant add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        note("$ vigil tenant add -u <good> --label rack=7");
        self.wait_for("the good node's first round", |d| {
            Ok((d.node_status(GOOD)?["attestation_count"].as_u64() >= Some(1)).then_some(()))
        })?;
        let command = format!("class create {CLASS} --from-node {GOOD} --pcrs 0-7");
        let out = self.with_conn(&[
            "class",
            "create",
            CLASS,
            "--from-node",
            GOOD,
            "--pcrs",
            "0-7",
            "--description",
            "the demo's machines",
        ])?;
        self.show(&command, &out);
        if !out.status.success() {
            bail!("vigil {command} failed");
        }
        let out = self.with_conn(&["class", "show", CLASS])?;
        self.show(&format!("class show {CLASS}"), &out);
        let out = self.tenant_cmd(&["set", "-u", GOOD, "--class", CLASS, "--label", "rack=7"])?;
        self.show(
            &format!("tenant set -u <good> --class {CLASS} --label rack=7"),
            &out,
        );
        if !out.status.success() {
            bail!("vigil tenant set failed");
        }
        let out = self.tenant_cmd(&[
            OsString::from("add"),
            "-u".into(),
            ODD.into(),
            "--tpm-cert-store".into(),
            store.into(),
            "--class".into(),
            CLASS.into(),
            "--label".into(),
            "rack=7".into(),
        ])?;
        self.save_log("tenant-add-odd", &out);
        if !out.status.success() {
            bail!(
                "vigil tenant add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        note(&format!(
            "$ vigil tenant add -u <odd> --class {CLASS} --label rack=7"
        ));
        Ok(())
    }

    /// `vigil gate check` on the good node: exit 0, an affirming token, verified
    /// offline with the verifier's public key. Returns the key file.
    fn release_good(&mut self) -> Result<std::path::PathBuf> {
        step("The gate releases the good node");
        let out = self.with_conn(&["gate", "key"])?;
        if !out.status.success() {
            bail!(
                "vigil gate key failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let key = self.path("attestation-results-key.pub.pem");
        std::fs::write(&key, &out.stdout)?;
        self.show("gate key", &out);
        let out = self.with_conn(&["gate", "check", GOOD, "--max-age", "60", "--nonce", NONCE])?;
        self.show(
            &format!("gate check <good> --max-age 60 --nonce {NONCE}"),
            &out,
        );
        if out.status.code() != Some(0) {
            bail!(
                "the gate did not release the good node (exit {:?})",
                out.status.code()
            );
        }
        let token = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
            .context("the gate printed no token")?;
        let mut args: Vec<OsString> = ["gate", "verify-token"].map(OsString::from).into();
        args.extend([
            token.into(),
            "--key".into(),
            key.clone().into(),
            "--nonce".into(),
            NONCE.into(),
        ]);
        let out = self.vigil(&args)?;
        self.show("gate verify-token <token> --key <key> --nonce ...", &out);
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("affirming") {
            bail!("the good node's token did not verify as affirming");
        }
        verdict("released: trusted, EAR affirming, verified offline with the public key");
        Ok(key)
    }

    /// `vigil gate check` on the odd node: exit 1, PCR 4 named.
    fn hold_odd(&mut self) -> Result<()> {
        step("The gate holds the odd node");
        let out = self.with_conn(&["gate", "check", ODD, "--max-age", "60"])?;
        self.show("gate check <odd> --max-age 60", &out);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(1) || !text.contains("pcr_validation.invalid_pcr_4") {
            bail!(
                "the gate did not hold the odd node on PCR 4 (exit {:?})",
                out.status.code()
            );
        }
        verdict("held: PCR 4 (the boot loader) is outside the class");
        Ok(())
    }

    /// The good node's evidence made stale (older than 1 s): the gate asks for a
    /// round, and the attestation count shows a new quote.
    fn stale_on_demand(&mut self) -> Result<()> {
        step("A stale node attested on demand");
        let before = self.node_status(GOOD)?["attestation_count"]
            .as_u64()
            .unwrap_or(0);
        pause(Duration::from_millis(1500))?;
        let out = self.with_conn(&["gate", "check", GOOD, "--max-age", "1", "--json"])?;
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let after = self.node_status(GOOD)?["attestation_count"]
            .as_u64()
            .unwrap_or(0);
        note(&format!(
            "$ vigil gate check <good> --max-age 1: trusted {}, attested now {}, evidence at {}",
            answer["trusted"], answer["attested_now"], answer["evidence_time"]
        ));
        note(&format!(
            "attestation_count {before} -> {after} (rounds are 300 s apart)"
        ));
        if out.status.code() != Some(0) || answer["attested_now"] != true || after <= before {
            bail!("the stale node was not attested on demand");
        }
        verdict("a new quote was taken on demand, not at the 300 s interval");
        Ok(())
    }

    /// A firmware roll-out: the odd node's boot loader becomes a second allowed value
    /// of the class (`vigil class widen`), the node is reactivated (Keylime's default
    /// severity stopped polling it at its failure), and the gate releases it.
    fn widen(&mut self) -> Result<()> {
        step("A new boot loader rolled out: the class widened from the odd node");
        let out = self.with_conn(&["class", "widen", CLASS, "--from-node", ODD])?;
        self.show(&format!("class widen {CLASS} --from-node <odd>"), &out);
        if !out.status.success() {
            bail!("vigil class widen failed");
        }
        self.tenant_ok(&["reactivate", "-u", ODD])?;
        note("$ vigil tenant reactivate -u <odd>");
        let out = self.with_conn(&["gate", "check", ODD, "--max-age", "60"])?;
        self.show("gate check <odd> --max-age 60", &out);
        if out.status.code() != Some(0) {
            bail!(
                "the widened class did not release the odd node (exit {:?})",
                out.status.code()
            );
        }
        verdict("released: PCR 4 now has two allowed values (both boot loaders)");
        Ok(())
    }

    /// Both nodes of rack 7 at once.
    fn batch(&mut self, key: &std::path::Path) -> Result<()> {
        step("Every node of rack 7 at once");
        let out = self.with_conn(&["gate", "check", "--label", "rack=7", "--max-age", "60"])?;
        self.show("gate check --label rack=7 --max-age 60", &out);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(1) || !text.contains("NOT trusted") {
            bail!("the batch check did not hold the odd node");
        }
        note(&format!(
            "anyone can check the tokens with a JWT library and {}",
            key.display()
        ));
        verdict("exit 1: one node of the rack is not trusted");
        Ok(())
    }
}
