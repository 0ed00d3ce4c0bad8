//! `vigil tenant` and `vigil policy push|list|show|delete` against real services:
//!
//! - Vigil's registrar in-process (SQLite) with a swtpm-backed identity registered and
//!   activated by tpm2-tools: `regstatus`, `reglist`, `regdelete`;
//! - Keylime 7.14.3's verifier (from the reference venv, `VIGIL_KEYLIME_PYTHON`), started
//!   with a configuration in a temporary directory and killed by process group:
//!   policies, `list`, `status`, `stop`, `reactivate`, `delete`.
//!
//! The Keylime harness is deliberately small and local to this file so that the shared
//! one in vigil-testkit can replace it. Without swtpm or the venv the tests skip
//! (`vigil_testkit::skip`; they fail under CI).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use vigil_service::client::{Client, Endpoint};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

fn vigil(args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_STATE_DIR")
        .output()
        .expect("run vigil");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vigil_json(args: &[&str]) -> Value {
    let (code, out, err) = vigil(args);
    assert_eq!(code, Some(0), "vigil {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vigil {args:?}: {e}: {out}"))
}

/// One HTTP/1.1 request to 127.0.0.1, plain or over TLS; status and JSON body.
async fn request(
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let endpoint =
        Endpoint::addr((std::net::Ipv4Addr::LOCALHOST, port).into()).with_optional_tls(tls);
    let method = hyper::Method::from_bytes(method.as_bytes()).unwrap();
    let answer = Client::default()
        .request(
            &endpoint,
            method,
            path,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
        .unwrap();
    (answer.status, answer.json())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_commands_on_a_swtpm_identity() {
    use vigil_testkit::Swtpm;
    let Some(tpm) = Swtpm::start(
        "tenant_registrar",
        &["tpm2_createek", "tpm2_createak", "tpm2_activatecredential"],
    ) else {
        return;
    };
    vigil_testkit::db::with_sqlite(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            vigil_tls::ca::init(&dir.path().join("cv_ca"), &["127.0.0.1".into()], false).unwrap();
        let config = vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().to_owned(),
            database_url: url,
            ..vigil_registrar::Config::default()
        };
        let registrar = vigil_registrar::Registrar::start(&config).await.unwrap();
        let (http, https) = (registrar.http_addr().port(), registrar.https_addr().port());

        tpm.tool(
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
        );
        tpm.tool(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa", "-u",
                "ak.pub", "-n", "ak.name",
            ],
        );
        let ak = B64.encode(std::fs::read(tpm.path("ak.pub")).unwrap());
        let ek = B64.encode(std::fs::read(tpm.path("ek.pub")).unwrap());
        let id = "tenant-swtpm";
        let (code, reply) = request(
            http,
            None,
            "POST",
            &format!("/v2.6/agents/{id}"),
            Some(json!({"ek_tpm": ek, "aik_tpm": ak, "ip": "127.0.0.9", "port": 9002})),
        )
        .await;
        assert_eq!(code, 200, "{reply}");

        let tls_dir = ca.dir().to_owned();
        let port = https.to_string();
        let conn = ["--tls-dir", p(&tls_dir), "--registrar-port", &port];
        // Registered but not activated: the registrar does not show it.
        let (code, _, err) = vigil(&[&["tenant", "regstatus", "-u", id][..], &conn].concat());
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("does not exist at the registrar"), "{err}");

        let blob = B64
            .decode(reply["results"]["blob"].as_str().unwrap())
            .unwrap();
        std::fs::write(tpm.path("blob.cred"), blob).unwrap();
        let secret = tpm
            .activate("ak.ctx", "ek.ctx", &tpm.path("blob.cred"))
            .unwrap();
        let tag = vigil_core::tpm::credential::auth_tag(&secret, id);
        let (code, reply) = request(
            http,
            None,
            "PUT",
            &format!("/v2.6/agents/{id}"),
            Some(json!({"auth_tag": tag})),
        )
        .await;
        assert_eq!(code, 200, "{reply}");

        let status =
            vigil_json(&[&["tenant", "regstatus", "-u", id, "--json"][..], &conn].concat());
        assert_eq!(status[id]["aik_tpm"], ak);
        assert_eq!(status[id]["ek_tpm"], ek);
        assert_eq!(status[id]["ip"], "127.0.0.9");
        assert_eq!(status[id]["operational_state"], "Registered");
        let (code, text, _) = vigil(&[&["tenant", "regstatus", "-u", id][..], &conn].concat());
        assert_eq!(code, Some(0));
        assert!(
            text.contains("registered") && text.contains("127.0.0.9"),
            "{text}"
        );
        // Keylime's -c spelling and multi-letter flags.
        let list = vigil_json(&[
            "tenant",
            "-c",
            "reglist",
            "--tls-dir",
            p(&tls_dir),
            "-rp",
            &port,
            "--json",
        ]);
        assert_eq!(list["uuids"], json!([id]));

        let (code, _, err) = vigil(&[&["tenant", "regdelete", "-u", id][..], &conn].concat());
        assert_eq!(code, Some(0), "{err}");
        let list = vigil_json(&[&["tenant", "reglist", "--json"][..], &conn].concat());
        assert_eq!(list["uuids"], json!([]));
        let (code, _, _) = vigil(&[&["tenant", "regdelete", "-u", id][..], &conn].concat());
        assert_eq!(code, Some(1));

        // Without the client certificate the admin routes are refused by TLS.
        let empty = tempfile::tempdir().unwrap();
        std::fs::copy(ca.ca_cert(), empty.path().join("cacert.crt")).unwrap();
        let (code, _, err) = vigil(&[
            "tenant",
            "reglist",
            "--tls-dir",
            p(empty.path()),
            "--registrar-port",
            &port,
        ]);
        assert_eq!(code, Some(2));
        assert!(err.contains("client"), "{err}");
        registrar.shutdown().await;
    })
    .await;
}

/// Keylime's verifier in a temporary directory, killed (by process group) on drop.
struct KeylimeVerifier {
    child: Child,
    port: u16,
    tls_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for KeylimeVerifier {
    fn drop(&mut self) {
        // setsid made the verifier (and its workers) a process group led by the child.
        // Keylime's main process waits for its workers on SIGTERM and its shared-memory
        // manager ignores SIGTERM, so the group gets SIGKILL after a grace period.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &group])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

/// A free port below the ephemeral range: a port the kernel handed out (port 0) and
/// released could be handed to another program's connection or listener before the
/// verifier binds it, and the tenant would then talk to that program.
fn free_port() -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    (start..start + 2_000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port")
}

impl KeylimeVerifier {
    fn start() -> Option<Self> {
        let bin = vigil_testkit::keylime::venv_bin("policies_and_nodes_at_keylimes_verifier")?;
        let dir = tempfile::tempdir().unwrap();
        // Keylime reads tls_dir = default as WORK_DIR/cv_ca: a Vigil CA there.
        let ca = vigil_tls::ca::init(
            &dir.path().join("cv_ca"),
            &["127.0.0.1".into(), "localhost".into()],
            false,
        )
        .unwrap();
        let etc = bin.parent().unwrap().join("etc");
        let port = free_port();
        let template = std::fs::read_to_string(etc.join("verifier.conf")).unwrap();
        let conf: String = template
            .lines()
            .map(|l| {
                let key = l.split('=').next().unwrap_or("").trim();
                match key {
                    "port" => format!("port = {port}"),
                    "tls_dir" => "tls_dir = default".into(),
                    "enabled_revocation_notifications" => {
                        "enabled_revocation_notifications = []".into()
                    }
                    "database_url" => format!(
                        "database_url = sqlite:///{}/cv.sqlite",
                        dir.path().display()
                    ),
                    "retry_interval" => "retry_interval = 0.2".into(),
                    "max_retries" => "max_retries = 2".into(),
                    "exponential_backoff" => "exponential_backoff = False".into(),
                    _ => l.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("verifier.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.path().join("verifier.log")).unwrap();
        let child = Command::new("setsid")
            .arg(bin.join("keylime_verifier"))
            .current_dir(dir.path())
            .env("KEYLIME_DIR", dir.path())
            .env("KEYLIME_VERIFIER_CONFIG", dir.path().join("verifier.conf"))
            .env("KEYLIME_LOGGING_CONFIG", etc.join("logging.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start keylime_verifier");
        let v = Self {
            child,
            port,
            tls_dir: ca.dir().to_owned(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while v.run(&["tenant", "list"]).0 != Some(0) {
            assert!(
                Instant::now() < deadline,
                "keylime_verifier did not start: {}",
                std::fs::read_to_string(v._dir.path().join("verifier.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(v)
    }

    fn args<'a>(&'a self, cmd: &[&'a str]) -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
        v.extend([
            "--tls-dir".into(),
            p(&self.tls_dir).to_owned(),
            "--verifier-port".into(),
            self.port.to_string(),
        ]);
        v
    }

    fn run(&self, cmd: &[&str]) -> (Option<i32>, String, String) {
        let args = self.args(cmd);
        vigil(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn json(&self, cmd: &[&str]) -> Value {
        self.json_exit(0, cmd)
    }

    /// The JSON `cmd` prints, exiting with `code`.
    fn json_exit(&self, code: i32, cmd: &[&str]) -> Value {
        let (got, out, err) = self.run(cmd);
        assert_eq!(got, Some(code), "vigil {cmd:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("vigil {cmd:?}: {e}: {out}"))
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(
            vigil_tls::danger::client_config_any_name(
                &self.tls_dir.join("cacert.crt"),
                Some((
                    &self.tls_dir.join("client-cert.crt"),
                    &self.tls_dir.join("client-private.pem"),
                )),
            )
            .unwrap(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_and_nodes_at_keylimes_verifier() {
    let Some(kv) = KeylimeVerifier::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root/usr/bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("tool"), "#!/bin/sh\n").unwrap();
    let policy = work.path().join("policy.json");
    let (code, _, err) = vigil(&[
        "policy",
        "create",
        "runtime",
        "--rootfs",
        p(&work.path().join("root")),
        "-o",
        p(&policy),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let mb = work.path().join("mb.json");
    std::fs::write(&mb, r#"{"scrtm_and_bios": [], "kernels": []}"#).unwrap();

    // Runtime policies: 201, 409 on a second POST, PUT with --update, list, show.
    let (code, _, err) = kv.run(&["policy", "push", "runtime", "web", p(&policy)]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = kv.run(&["policy", "push", "runtime", "web", p(&policy)]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("already exists") && err.contains("--update"),
        "{err}"
    );
    let (code, _, err) = kv.run(&["policy", "push", "runtime", "web", p(&policy), "--update"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = kv.run(&["policy", "push", "runtime", "nope", p(&policy), "--update"]);
    assert_eq!(code, Some(1), "{err}");
    // Keylime's spelling, and a measured-boot reference state.
    let (code, _, err) = kv.run(&[
        "tenant",
        "-c",
        "addmbpolicy",
        "--mb-policy",
        p(&mb),
        "--mb-policy-name",
        "boot",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let list = kv.json(&["policy", "list", "--json"]);
    assert_eq!(list, json!({"runtime": ["web"], "measured-boot": ["boot"]}));
    let shown = kv.json(&["policy", "show", "runtime", "web", "--json"]);
    let stored: Value = serde_json::from_str(shown["runtime_policy"].as_str().unwrap()).unwrap();
    let original: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(stored["digests"], original["digests"]);
    let shown = kv.json(&["policy", "show", "measured-boot", "boot", "--json"]);
    assert_eq!(
        shown["mb_policy"],
        r#"{"scrtm_and_bios": [], "kernels": []}"#
    );
    let (code, text, _) = kv.run(&["policy", "show", "runtime", "web"]);
    assert_eq!(code, Some(0));
    assert!(text.contains("/usr/bin/tool"), "{text}");
    let (code, _, _) = kv.run(&["policy", "show", "runtime", "missing"]);
    assert_eq!(code, Some(1));

    // Nodes: none, then one enrolled directly. Its "node" is a port this test holds,
    // closing every connection: a port merely free now could later be taken by another
    // program, which the verifier would then poll.
    assert_eq!(kv.json(&["tenant", "list", "--json"]), json!([]));
    assert_eq!(
        kv.json(&["tenant", "-c", "cvlist", "--json"]),
        json!({"uuids": []})
    );
    let dead_node = TcpListener::bind("127.0.0.1:0").unwrap();
    let node_port = dead_node.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in dead_node.incoming() {
            drop(conn);
        }
    });
    let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00001";
    let ak = std::fs::read("../../../shared/testdata/keylime/test-data/files/ak.pub").unwrap();
    let cert = std::fs::read_to_string(kv.tls_dir.join("client-cert.crt")).unwrap();
    let enrol = json!({
        "v": null, "cloudagent_ip": "127.0.0.1", "cloudagent_port": node_port,
        "verifier_ip": "127.0.0.1", "verifier_port": kv.port.to_string(),
        "tpm_policy": "{\"mask\": \"0x400\"}", "runtime_policy": "", "runtime_policy_name": "web",
        "runtime_policy_key": "", "mb_policy": null, "mb_policy_name": "",
        "ima_sign_verification_keys": "", "metadata": "{}", "revocation_key": "",
        "accept_tpm_hash_algs": ["sha256"], "accept_tpm_encryption_algs": ["rsa"],
        "accept_tpm_signing_algs": ["rsassa"], "ak_tpm": B64.encode(ak), "mtls_cert": cert,
        "supported_version": "2.6",
    });
    let (code, reply) = request(
        kv.port,
        Some(kv.tls()),
        "POST",
        &format!("/v2.6/agents/{id}"),
        Some(enrol),
    )
    .await;
    assert_eq!(code, 200, "{reply}");

    // Keylime's form for `-c cvlist`; Vigil's own (objects with state and times) for
    // `list --json`.
    let list = kv.json(&["tenant", "-c", "cvlist", "--json"]);
    assert_eq!(list["uuids"], json!([[id]]));
    let list = kv.json(&["tenant", "list", "--json"]);
    assert_eq!(list[0]["agent_id"], id, "{list}");
    assert!(list[0]["operational_state"].is_string(), "{list}");
    assert_eq!(list[0]["attestation_count"], 0, "{list}");
    assert_eq!(list[0]["last_successful_attestation"], 0, "{list}");
    let (_, text, _) = kv.run(&["tenant", "-c", "cvlist"]);
    assert_eq!(text.trim(), id);
    // Never attested: failed (1) once Keylime gave up on the closed port, not yet (3)
    // before.
    let (code, out, err) = kv.run(&["tenant", "status", "-u", id, "--json"]);
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    let state = status[id]["operational_state"].as_str().unwrap();
    let failed = ["Failed", "Invalid Quote", "Tenant Quote Failed"].contains(&state);
    assert_eq!(code, Some(if failed { 1 } else { 3 }), "{status}");
    assert_eq!(status[id]["attestation_count"], 0);
    let bulk = kv.json(&["tenant", "list", "--bulk", "--json"]);
    assert!(bulk[id]["operational_state"].is_number(), "{bulk}");
    let (code, text, _) = kv.run(&["tenant", "status", "-u", id]);
    let failed = ["Failed (FAILED)", "Invalid Quote", "Tenant Quote Failed"]
        .iter()
        .any(|s| text.lines().next().unwrap_or_default().contains(s));
    assert_eq!(code, Some(if failed { 1 } else { 3 }), "{text}");
    assert!(text.contains("attestation_count: 0"), "{text}");

    // A policy in use cannot be deleted.
    let (code, _, err) = kv.run(&["policy", "delete", "runtime", "web"]);
    assert_eq!(code, Some(1));
    assert!(err.contains(id), "{err}");

    // stop → TENANT_FAILED; reactivate; delete (200 or 202 then gone).
    let (code, _, err) = kv.run(&["tenant", "stop", "-u", id]);
    assert_eq!(code, Some(0), "{err}");
    // Stopped: failed (1).
    let status = kv.json_exit(1, &["tenant", "status", "-u", id, "--json"]);
    assert_eq!(status[id]["operational_state"], "Tenant Quote Failed");
    let (code, _, err) = kv.run(&["tenant", "reactivate", "-u", id]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = kv.run(&[
        "tenant",
        "delete",
        "-u",
        id,
        "--retry-interval",
        "0.5",
        "--max-retries",
        "20",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = kv.run(&["tenant", "status", "-u", id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not enrolled"), "{err}");
    let deleted = kv.json(&["tenant", "delete", "-u", id, "--json"]);
    assert_eq!(deleted["deleted"], false);

    // Now the policies can go.
    let (code, _, err) = kv.run(&["policy", "delete", "runtime", "web"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = kv.run(&["tenant", "-c", "deletembpolicy", "--mb-policy-name", "boot"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, _) = kv.run(&["policy", "delete", "runtime", "web"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        kv.json(&["policy", "list", "--json"]),
        json!({"runtime": [], "measured-boot": []})
    );
}
