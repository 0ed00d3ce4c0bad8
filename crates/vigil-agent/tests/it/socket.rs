//! The node-local identity socket (docs/spire.md) on a real swtpm: `agent/info` and
//! `quotes/identity` over the socket, nothing else there, the network API told not to
//! serve them, and the socket file's mode deciding who may connect — checked with a
//! client running as another user (`curl` started with uid 65534), refused when
//! neither its user nor its group may write the socket, served when its group may.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vigil_agent::{Agent, Config};
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_testkit::Swtpm;

const UUID: &str = "0c1d2e3f-0000-4000-8000-00000000a021";
/// `nobody`: a user that is neither the socket's owner nor in its group.
const OTHER_UID: u32 = 65534;
/// curl's exit code when it cannot connect.
const CURL_CANNOT_CONNECT: i32 = 7;

/// `curl --unix-socket socket http://localhost{path}` as `uid`:`gid` (None: as this
/// process): (exit code, body JSON or Null).
fn curl(socket: &Path, path: &str, as_user: Option<(u32, u32)>) -> (i32, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://localhost{path}"));
    if let Some((uid, gid)) = as_user {
        // std drops the supplementary groups when it changes the uid.
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("curl runs");
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_socket() {
    let test = "identity_socket";
    let Some(tpm) = Swtpm::start(test, &["curl"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The other user must reach the socket's directory; the socket's mode is the test.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("run/vigil/agent.sock");
    let agent = Agent::start(&Config {
        uuid: UUID.into(),
        port: 0,
        contact_port: 0,
        // No registrar: registration retries in the background; quotes need none.
        registrar_port: 1,
        tpm_tcti: tpm.tcti(),
        state_dir: dir.path().join("agent"),
        enable_agent_mtls: false,
        measuredboot_ml_path: dir.path().join("no-uefi-log"),
        ima_ml_path: dir.path().join("no-ima-log"),
        serve_identity_socket: true,
        identity_socket: socket.clone(),
        identity_socket_mode: "0660".into(),
        identity_socket_group: "0".into(),
        identity_on_network: false,
        ..Config::default()
    })
    .await
    .expect("agent starts");

    // The socket file: the configured mode and group.
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 0);

    // Over the socket: the node's info and an identity quote over the nonce asked for.
    let (code, r) = curl(&socket, "/v2.2/agent/info", None);
    assert_eq!(code, 0);
    assert_eq!(r["results"]["agent_uuid"], UUID, "{r}");
    assert_eq!(r["results"]["tpm_hash_alg"], "sha256", "{r}");
    let (code, r) = curl(&socket, "/v2.6/quotes/identity?nonce=ABCDEFGH234567", None);
    assert_eq!(code, 0);
    let quote = r["results"]["quote"].as_str().expect("a quote");
    KeylimeQuote::parse(quote).expect("a Keylime quote string");
    // Bad input is refused there as on the network API; nothing else is served.
    let (_, r) = curl(&socket, "/v2.6/quotes/identity?nonce=not-alnum", None);
    assert_eq!(r["code"], 400, "{r}");
    let (_, r) = curl(&socket, "/v2.6/keys/pubkey", None);
    assert_eq!(r["code"], 404, "{r}");

    // The network API does not serve them (`identity_on_network = false`).
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/v2.2/agent/info", agent.addr())])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["code"], 403, "{r}");
    assert!(r["status"].as_str().unwrap().contains("node-local"), "{r}");

    // Another user outside the socket's group: the kernel refuses the connection.
    let (code, r) = curl(&socket, "/v2.2/agent/info", Some((OTHER_UID, OTHER_UID)));
    assert_eq!(code, CURL_CANNOT_CONNECT, "{r}");
    // The same user in the socket's group (0): served.
    let (code, r) = curl(&socket, "/v2.2/agent/info", Some((OTHER_UID, 0)));
    assert_eq!(code, 0);
    assert_eq!(r["results"]["agent_uuid"], UUID, "{r}");

    agent.shutdown().await;
}
