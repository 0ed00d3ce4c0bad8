//! `vigil demo response`: integrity events, response rules and relearn, narrated
//! (docs/events.md, docs/response.md). The verifier sends its events to a JSON-lines
//! file and to NATS JetStream, and reads a rule file the demo writes: `quarantine` the
//! production nodes whose runtime fails (the agent answers in dry-run, its default),
//! and `relearn` changes covered by a known-good set of the node's hardware class.
//!
//! Two nodes of one class, a production node and a canary. Each agent runs in a
//! directory of its own, its "root", and measures `opt/app` there, so both name their
//! files alike (`opt/app/app.sh`), as two machines would. An unplanned change on the
//! production node: `Invalid Quote`, the `runtime` event read back from the file and
//! from the stream, the quarantine recorded as dry-run and the agent's log saying what
//! it would do. IMA's log is append-only, so every later round would fail on that
//! entry again: the operator adopts the node's current state (`vigil tenant relearn`).
//! Then a planned update: applied to the canary first (which fails), recorded from it
//! with `vigil known-good add --from-node`, applied to the production node: a
//! `relearned` event and the node stays in `Get Quote`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use serde_json::Value;

use super::{free_port, note, step, toml_str, verdict, write_script, Binaries, Demo, Ports, NODE};

/// The canary: planned updates go there first.
const CANARY: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0000c";
/// The hardware class of both nodes.
const CLASS: &str = "demo-web";
/// The known-good set recorded from the canary.
const SET: &str = "app-2.0";
/// Where each node's measured files are, relative to its root.
const APP: &str = "opt/app";
/// The rule file: every verdict change to every sink, quarantine production nodes
/// whose runtime fails, and relearn what a known-good set of the class covers.
fn rules() -> String {
    format!(
        r#"[[rules]]
name = "notify-all"
on_pass = true
actions = [{{ action = "notify" }}]

[[rules]]
name = "relearn-planned-updates"
kinds = ["runtime"]
class = "{CLASS}"
actions = [{{ action = "relearn" }}]

[[rules]]
name = "quarantine-runtime"
kinds = ["runtime"]
labels = {{ ring = "prod" }}
actions = [{{ action = "quarantine" }}]
"#
    )
}

/// The demo's JetStream stream, read back to show the events the verifier sent, and
/// deleted at the end.
pub(super) struct Nats {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
    url: String,
    /// The stream (`VIGIL_DEMO_<pid>`) and its subject prefix (`vigil.demo.<pid>`):
    /// this run's own, so no earlier run's events are read.
    stream: String,
    prefix: String,
}

impl Nats {
    /// Connects to JetStream at `url` and makes the stream; fails, saying so, when
    /// NATS or JetStream is not there.
    pub(super) fn connect(url: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let pid = std::process::id();
        let (stream, prefix) = (format!("VIGIL_DEMO_{pid}"), format!("vigil.demo.{pid}"));
        let js = runtime
            .block_on(async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let js = jetstream::new(client);
                // The verifier's sink makes the same stream when it is missing.
                js.get_or_create_stream(jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![format!("{prefix}.>")],
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("JetStream: {e}"))?;
                Ok::<_, anyhow::Error>(js)
            })
            .with_context(|| {
                format!(
                    "NATS JetStream is not reachable at {url}: the response scenario sends its \
                     events there (start `nats-server -js`, or name another server with --nats-url)"
                )
            })?;
        Ok(Self {
            runtime,
            js,
            url: url.to_owned(),
            stream,
            prefix,
        })
    }

    /// Every event on the stream so far, with its subject.
    fn events(&self) -> Result<Vec<(String, Value)>> {
        self.runtime.block_on(async {
            let mut s = self
                .js
                .get_stream(&self.stream)
                .await
                .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.stream))?;
            let last = s
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.stream))?
                .state
                .last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                if let Ok(m) = s.get_raw_message(seq).await {
                    let event = serde_json::from_slice(&m.payload)
                        .with_context(|| format!("message {seq} on NATS is no JSON"))?;
                    out.push((m.subject.to_string(), event));
                }
            }
            Ok(out)
        })
    }

    /// Deletes the demo's stream (clean-up).
    pub(super) fn delete(&self) -> Result<()> {
        self.runtime
            .block_on(self.js.delete_stream(&self.stream))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// The stream's name.
    pub(super) fn stream(&self) -> &str {
        &self.stream
    }
}

/// One line of an event: its kind, verdict, uuid and failures.
fn summary(e: &Value) -> String {
    let failures: Vec<String> = e["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} {}",
                f["id"].as_str().unwrap_or("?"),
                f["file"].as_str().unwrap_or("")
            )
            .trim_end()
            .to_owned()
        })
        .collect();
    let mut s = format!(
        "kind {}, policy_evaluation_passed: {}, uuid {}",
        e["kind"].as_str().unwrap_or("?"),
        e["policy_evaluation_passed"],
        e["uuid"].as_str().unwrap_or("?")
    );
    if !failures.is_empty() {
        s.push_str(&format!(", failures [{}]", failures.join(", ")));
    }
    s
}

impl Demo {
    /// The verifier's events and rules settings (the response scenario); writes the
    /// rule file.
    pub(super) fn response_verifier_extra(&self) -> Result<String> {
        let Some(nats) = &self.nats else {
            return Ok(String::new());
        };
        let rule_file = self.path("response-rules.toml");
        std::fs::write(&rule_file, rules())?;
        Ok(format!(
            "event_sinks = [\"file\", \"nats\"]\nevent_file = {}\nevent_nats_url = {}\n\
             event_nats_subject_prefix = \"{}\"\nevent_nats_stream = \"{}\"\nresponse_rules = {}\n",
            toml_str(&self.events_file()),
            Value::String(nats.url.clone()),
            nats.prefix,
            nats.stream,
            toml_str(&rule_file)
        ))
    }

    /// The verifier's `file` sink.
    fn events_file(&self) -> PathBuf {
        self.path("events.jsonl")
    }

    /// Every event in the file sink.
    fn file_events(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.events_file()).unwrap_or_default();
        // Only whole lines: the verifier may be appending one.
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).context("a line of the events file is no JSON"))
            .collect()
    }

    fn nats(&self) -> Result<&Nats> {
        self.nats.as_ref().context("no NATS connection")
    }

    /// A node's root: the agent's working directory.
    fn root(&self, name: &str) -> PathBuf {
        self.path(&format!("root-{name}"))
    }

    /// A node's emulated IMA log.
    fn node_ima_log(&self, name: &str) -> PathBuf {
        self.path(&format!("agent-{name}"))
            .join("ima_emulated_measurements")
    }

    pub(super) fn run_response(&mut self, bins: &Binaries) -> Result<()> {
        let ports = Ports::free()?;
        let canary_port = free_port(&[
            ports.registrar,
            ports.registrar_tls,
            ports.verifier,
            ports.agent,
        ])?;
        self.tenant = self.tenant_args(&ports);
        {
            let nats = self.nats()?;
            note(&format!(
                "NATS JetStream at {}: stream {} (subjects {}.<node id>)",
                nats.url, nats.stream, nats.prefix
            ));
        }
        self.start_control_plane(bins, &ports, 1.0)?;
        note(&format!(
            "events to {} and to NATS; rules in {}:",
            self.events_file().display(),
            self.path("response-rules.toml").display()
        ));
        for line in rules().lines().filter(|l| !l.is_empty()) {
            note(&format!("  {line}"));
        }
        self.start_root_node(bins, &ports, "prod", NODE, ports.agent)?;
        self.start_root_node(bins, &ports, "canary", CANARY, canary_port)?;
        self.enrol_class()?;
        self.unplanned_change()?;
        self.operator_relearn()?;
        self.planned_update()?;
        println!(
            "\ndemo response: every step as expected, in {:.1} s; logs in {}",
            self.started.elapsed().as_secs_f64(),
            self.path("logs").display()
        );
        Ok(())
    }

    /// A swtpm and an agent measuring `opt/app` under the node's root, until it
    /// registered.
    fn start_root_node(
        &mut self,
        bins: &Binaries,
        ports: &Ports,
        name: &str,
        id: &str,
        port: u16,
    ) -> Result<()> {
        step(&format!(
            "Node {name} ({id}): swtpm, vigil-agent measuring {APP} under its root"
        ));
        let (tcti, _) = self.launch_swtpm(&format!("swtpm-{name}"), name, "")?;

        let root = self.root(name);
        let app = root.join(APP);
        std::fs::create_dir_all(&app)?;
        write_script(&app.join("app.sh"), "echo \"app 1.0\"")?;
        write_script(&app.join("backup.sh"), "echo \"backup done\"")?;
        std::fs::write(app.join("sshd_config"), "PermitRootLogin no\n")?;
        let agent_dir = self.path(&format!("agent-{name}"));
        std::fs::create_dir_all(&agent_dir)?;
        let conf = self.path(&format!("agent-{name}.toml"));
        // Response actions in dry-run (the agent's default, said here for the reader).
        std::fs::write(
            &conf,
            format!(
                "uuid = \"{id}\"\nport = {port}\ncontact_port = {port}\nregistrar_port = {}\n\
                 tpm_tcti = \"{tcti}\"\nstate_dir = {}\ntrusted_client_ca = [{}]\n\
                 ima_emulate = [\"{APP}\"]\nima_emulate_interval = 1\n\
                 response_dry_run = true\ncontrol_plane = [\"127.0.0.1\"]\n",
                ports.registrar,
                toml_str(&agent_dir),
                toml_str(&self.path("cv_ca").join("cacert.crt")),
            ),
        )?;
        for p in [ports.registrar, ports.registrar_tls, ports.verifier] {
            self.wait_for(&format!("port {p} to listen"), |_| {
                Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, p)).ok())
            })?;
        }
        let pid = self.procs.spawn(
            &format!("agent-{name}"),
            Command::new(&bins.agent)
                .arg("--config")
                .arg(&conf)
                .current_dir(&root),
        )?;
        note(&format!(
            "vigil-agent (pid {pid}) on :{port}, in {}, measuring {APP}/app.sh, backup.sh and sshd_config every second",
            root.display()
        ));
        self.wait_for(&format!("node {name} to register"), |d| {
            Ok(d.tenant_cmd(&["regstatus", "-u", id])?
                .status
                .success()
                .then_some(()))
        })?;
        Ok(())
    }

    /// `vigil tenant add` of a node with a runtime policy from its own IMA log.
    fn add_node(&mut self, name: &str, id: &str, extra: &[&str]) -> Result<()> {
        let policy = self.path(&format!("runtime-policy-{name}.json"));
        self.vigil_ok(&[
            "policy".into(),
            "create".into(),
            "runtime".into(),
            "-m".into(),
            self.node_ima_log(name).into(),
            "-o".into(),
            policy.clone().into(),
        ])?;
        let mut args: Vec<OsString> = vec![
            "add".into(),
            "-u".into(),
            id.into(),
            "--runtime-policy".into(),
            policy.into(),
            "--tpm-cert-store".into(),
            self.path("tpm_cert_store").into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let out = self.tenant_cmd(&args)?;
        self.save_log(&format!("tenant-add-{name}"), &out);
        if !out.status.success() {
            bail!(
                "vigil tenant add -u {id} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        note(&format!(
            "$ vigil policy create runtime -m <{name}'s IMA log>; vigil tenant add -u <{name}> {}",
            extra.join(" ")
        ));
        Ok(())
    }

    /// Waits until `id` passed `n` more rounds than now and is in Get Quote; fails if
    /// it fails meanwhile. (A node enrolled with `--cert` passes its first rounds in
    /// Provide V, while its package is delivered.)
    fn wait_rounds(&mut self, id: &str, n: u64) -> Result<u64> {
        let start = self.node_status(id)?["attestation_count"]
            .as_u64()
            .unwrap_or(0);
        self.wait_for(&format!("{n} more rounds of {id} to pass"), |d| {
            let s = d.node_status(id)?;
            let count = s["attestation_count"].as_u64().unwrap_or(0);
            match s["operational_state"].as_str() {
                Some("Get Quote") => Ok((count >= start + n).then_some(count)),
                Some(bad @ ("Invalid Quote" | "Failed" | "Tenant Quote Failed"))
                    if count > start =>
                {
                    bail!("{id} went to {bad} after {} rounds", count - start)
                }
                _ => Ok(None),
            }
        })
    }

    /// Both nodes enrolled; the class learnt from the production node's quote; the
    /// production node labelled `ring=prod`, the canary `ring=canary`.
    fn enrol_class(&mut self) -> Result<()> {
        step("Enrolment: a hardware class for both nodes, labels ring=prod and ring=canary");
        // --cert: the node's certificate package, whose RevocationNotifier key signs
        // the verifier's requests to the agent (quarantine) and its revocation notices.
        self.add_node("prod", NODE, &["--cert", "default"])?;
        self.wait_for("the production node's first round", |d| {
            Ok((d.node_status(NODE)?["attestation_count"].as_u64() >= Some(1)).then_some(()))
        })?;
        let out = self.with_conn(&[
            "class",
            "create",
            CLASS,
            "--from-node",
            NODE,
            "--pcrs",
            "0-7",
            "--description",
            "the demo's web servers",
        ])?;
        self.show(
            &format!("class create {CLASS} --from-node <prod> --pcrs 0-7"),
            &out,
        );
        if !out.status.success() {
            bail!("vigil class create failed");
        }
        let out =
            self.tenant_cmd(&["set", "-u", NODE, "--class", CLASS, "--label", "ring=prod"])?;
        self.show(
            &format!("tenant set -u <prod> --class {CLASS} --label ring=prod"),
            &out,
        );
        if !out.status.success() {
            bail!("vigil tenant set failed");
        }
        self.add_node(
            "canary",
            CANARY,
            &[
                "--class",
                CLASS,
                "--label",
                "ring=canary",
                "--cert",
                "default",
            ],
        )?;
        for id in [NODE, CANARY] {
            self.wait_rounds(id, 2)?;
        }
        self.show_status()?;
        verdict("both nodes are trusted (Get Quote), class demo-web");
        Ok(())
    }

    /// Appends to a node's measured file (or replaces it with `content`) and waits
    /// until its agent measured it.
    fn change_file(&mut self, name: &str, file: &str, content: Option<&str>) -> Result<()> {
        let path = self.root(name).join(APP).join(file);
        match content {
            Some(c) => write_script(&path, c)?,
            None => {
                let mut text = std::fs::read_to_string(&path)?;
                text.push_str("# changed\n");
                std::fs::write(&path, text)?;
            }
        }
        let measured_as = format!("{APP}/{file}");
        let log = self.node_ima_log(name);
        self.wait_measured(&path, &measured_as, &log)
    }

    /// The event in the file sink that `pick` selects, waited for.
    fn wait_file_event(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Result<Value> {
        self.wait_for(&format!("{what} in the events file"), |d| {
            Ok(d.file_events()?.into_iter().find(|e| pick(e)))
        })
    }

    /// The event `uuid` on NATS, waited for; returns its subject.
    fn wait_nats_event(&mut self, uuid: &str) -> Result<(String, Value)> {
        self.wait_for(&format!("event {uuid} on NATS"), |d| {
            Ok(d.nats()?
                .events()?
                .into_iter()
                .find(|(_, e)| e["uuid"] == uuid))
        })
    }

    /// An event shown from the file sink and from NATS (the same uuid).
    fn show_event_both(&mut self, event: &Value) -> Result<()> {
        note(&format!(
            "file sink ({}): {}",
            self.events_file().display(),
            summary(event)
        ));
        let uuid = event["uuid"].as_str().unwrap_or_default().to_owned();
        let (subject, on_nats) = self.wait_nats_event(&uuid)?;
        if on_nats != *event {
            bail!("the event {uuid} on NATS differs from the file's: {on_nats}");
        }
        let count = self
            .nats()?
            .events()?
            .iter()
            .filter(|(_, e)| e["uuid"] == uuid.as_str())
            .count();
        note(&format!(
            "NATS ({}, subject {subject}): {} (the same event, {count} message)",
            self.nats()?.stream(),
            summary(&on_nats)
        ));
        Ok(())
    }

    /// An unplanned change on the production node: caught, the events, the quarantine.
    fn unplanned_change(&mut self) -> Result<()> {
        let file = format!("{APP}/backup.sh");
        step(&format!(
            "An unplanned change on the production node: appending to {file}"
        ));
        let since = now_ms();
        self.change_file("prod", "backup.sh", None)?;
        let caught = self.wait_caught(
            "ima.validation.ima-ng.runtime_policy_hash",
            Path::new(&file),
        )?;
        self.show_catch(&caught, "Hash not found in runtime policy")?;

        let event = self.wait_file_event("the runtime event", |e| {
            e["node_id"] == NODE
                && e["kind"] == "runtime"
                && e["policy_evaluation_passed"] == false
                && e["time_ms"].as_u64() >= Some(since)
        })?;
        self.show_event_both(&event)?;
        if !event["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["file"] == file.as_str())
        {
            bail!("the runtime event does not name {file}: {event}");
        }
        let uncovered = &event["detail"]["relearn"]["uncovered"];
        if let Some(u) = uncovered.as_array().and_then(|u| u.first()) {
            note(&format!(
                "detail.relearn: the relearn rule matched, no known-good set covers {} ({})",
                u["file"].as_str().unwrap_or("?"),
                u["measured"].as_str().unwrap_or("?")
            ));
        }
        verdict(
            "Invalid Quote; a runtime event with policy_evaluation_passed: false, in the file and on NATS",
        );

        step("The quarantine rule: a signed request to the node's agent, in dry-run");
        let trigger = event["uuid"].as_str().unwrap_or_default().to_owned();
        let action = self.wait_for("the quarantine action to be recorded", |d| {
            let out = d.tenant_cmd(&["status", "-u", NODE, "--json"])?;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            Ok(v[NODE]["vigil_actions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["action"] == "quarantine" && a["event"] == trigger.as_str())
                .cloned())
        })?;
        if action["outcome"] != "dry_run" {
            bail!("the quarantine action's outcome is not dry-run: {action}");
        }
        let out = self.tenant_cmd(&["status", "-u", NODE])?;
        note("$ vigil tenant status (its response actions)");
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip_while(|l| !l.contains("response actions"))
            .filter(|l| l.contains("quarantine"))
        {
            note(&format!("  {}", line.trim()));
        }
        let log = self.procs.log("agent-prod");
        let line = self.wait_for("the agent's log to say what it would do", |_| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text
                .lines()
                .find(|l| l.contains("dry-run: would run") && l.contains("quarantine"))
                .map(str::to_owned))
        })?;
        let shown = line.find("dry-run").map_or(line.as_str(), |i| &line[i..]);
        note(&format!("agent log: {shown}"));
        let action_event = self.wait_file_event("the action event", |e| {
            e["node_id"] == NODE
                && e["kind"] == "action"
                && e["detail"]["action"] == "quarantine"
                && e["detail"]["trigger"] == trigger.as_str()
        })?;
        note(&format!(
            "event kind action: {} {} ({})",
            action_event["detail"]["action"].as_str().unwrap_or("?"),
            action_event["detail"]["outcome"].as_str().unwrap_or("?"),
            action_event["detail"]["rule"].as_str().unwrap_or("?")
        ));
        verdict("quarantine recorded as dry_run: the agent only says it would drop the network");
        Ok(())
    }

    /// The operator adopts the production node's current state.
    fn operator_relearn(&mut self) -> Result<()> {
        step("Recovery: the operator adopts the production node's current state");
        note("IMA's log is append-only: until the node reboots, every round reads the changed");
        note("backup.sh again and fails. The operator looked at the change and accepts it,");
        note("so the node's current measurements become its baseline (Shielded VM's");
        note("'learn integrity policy'); the old policy version is kept for audit.");
        let since = now_ms();
        let out = self.tenant_cmd(&["relearn", "-u", NODE])?;
        self.show("tenant relearn -u <prod>", &out);
        if !out.status.success() {
            bail!("vigil tenant relearn failed");
        }
        let event = self.wait_file_event("the operator's relearned event", |e| {
            e["node_id"] == NODE && e["kind"] == "relearned" && e["time_ms"].as_u64() >= Some(since)
        })?;
        note(&format!(
            "event: {} (rule {})",
            summary(&event),
            event["detail"]["rule"].as_str().unwrap_or("?")
        ));
        self.wait_rounds(NODE, 2)?;
        verdict("the production node is trusted again (Get Quote)");
        Ok(())
    }

    /// A planned update: the canary first, a known-good set from it, then the
    /// production node, adopted by the relearn rule.
    fn planned_update(&mut self) -> Result<()> {
        const V2: &str = "echo \"app 2.0\"";
        let file = format!("{APP}/app.sh");
        step(&format!(
            "A planned update, on the canary first: {file} version 2.0"
        ));
        let since = now_ms();
        self.change_file("canary", "app.sh", Some(V2))?;
        let event = self.wait_file_event("the canary's runtime event", |e| {
            e["node_id"] == CANARY
                && e["kind"] == "runtime"
                && e["policy_evaluation_passed"] == false
                && e["time_ms"].as_u64() >= Some(since)
        })?;
        note(&format!("the canary's event: {}", summary(&event)));
        let refused = event["detail"]["relearn"]["refused"]
            .as_str()
            .unwrap_or("?");
        note(&format!("the relearn rule matched and refused: {refused}"));
        self.wait_for("the canary to be marked Invalid Quote", |d| {
            Ok((d.node_status(CANARY)?["operational_state"] == "Invalid Quote").then_some(()))
        })?;
        note("the canary: Invalid Quote (no set covers 2.0 yet; ring=canary is not quarantined)");
        let out = self.with_conn(&[
            "known-good",
            "add",
            SET,
            "--class",
            CLASS,
            "--from-node",
            CANARY,
            "--by",
            "ops",
        ])?;
        self.show(
            &format!("known-good add {SET} --class {CLASS} --from-node <canary> --by ops"),
            &out,
        );
        let set: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() || set["measurements"]["files"][&file].is_null() {
            bail!("the known-good set does not hold {file}");
        }
        verdict(&format!("{SET}: {file}'s new digest, for class {CLASS}"));

        step(&format!(
            "The update rolled out to the production node: {file} version 2.0"
        ));
        let since = now_ms();
        self.change_file("prod", "app.sh", Some(V2))?;
        let event = self.wait_file_event("the relearned event", |e| {
            e["node_id"] == NODE && e["kind"] == "relearned" && e["time_ms"].as_u64() >= Some(since)
        })?;
        self.show_event_both(&event)?;
        let sets = &event["detail"]["sets"];
        note(&format!(
            "detail: sets {sets}, rule {}",
            event["detail"]["rule"].as_str().unwrap_or("?")
        ));
        if !sets.as_array().is_some_and(|s| s.iter().any(|n| n == SET)) {
            bail!("the relearned event does not name {SET}: {event}");
        }
        let count = self.wait_rounds(NODE, 2)?;
        // The node never failed: no failing event of it since the update.
        if let Some(e) = self.file_events()?.iter().find(|e| {
            e["node_id"] == NODE
                && e["kind"] != "action"
                && e["policy_evaluation_passed"] == false
                && e["time_ms"].as_u64() >= Some(since)
        }) {
            bail!(
                "the production node failed during the update: {}",
                summary(e)
            );
        }
        self.show_status()?;
        verdict(&format!(
            "relearned from {SET}: the production node stayed in Get Quote ({count} quotes verified)"
        ));
        Ok(())
    }
}

/// Milliseconds since the epoch: events at or after it are newer.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
