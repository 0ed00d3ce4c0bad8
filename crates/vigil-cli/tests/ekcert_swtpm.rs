//! `vigil ekcert verify` on a real EK certificate chain: swtpm_setup manufactures a
//! TPM whose EK certificates (RSA and ECC) are issued by swtpm_localca and written to
//! NV; a running swtpm gives them back through tpm2-tools, as an agent reads them.
//!
//! Needs swtpm, swtpm_setup, swtpm_localca and tpm2-tools. Without them the test prints
//! a skip note — or fails when `CI` is set, so CI never silently stops checking.
//! Self-contained on purpose (a shared swtpm harness is being written elsewhere).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOOLS: [&str; 6] = [
    "swtpm",
    "swtpm_setup",
    "swtpm_localca",
    "tpm2_nvread",
    "tpm2_createek",
    "tpm2_readpublic",
];

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A running `swtpm socket`, killed (by its PID) when dropped.
struct Swtpm {
    child: Child,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port P whose successor is free too: the swtpm TCTI always finds the control
/// channel at P + 1.
fn free_port_pair() -> Option<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = l.local_addr().ok()?.port();
    let ctrl = port.checked_add(1)?;
    TcpListener::bind(("127.0.0.1", ctrl)).ok()?;
    Some(port)
}

impl Swtpm {
    fn start(state: &Path) -> Self {
        // Ports are picked free, then bound by swtpm: retry if another process won
        // the race.
        for _ in 0..5 {
            let Some(port) = free_port_pair() else {
                continue;
            };
            let ctrl = port + 1;
            let mut child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
                ])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start swtpm");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // The control port answers once the TPM is up; the server port is
                // left untouched for tpm2-tools.
                if TcpStream::connect(("127.0.0.1", ctrl)).is_ok() {
                    return Self { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("swtpm did not start");
    }

    /// Runs a tpm2-tools command against this TPM.
    fn tpm2(&self, tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .args(args)
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .stdout(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keylime_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/keylime/tpm_cert_store")
}

/// Manufactures a TPM with swtpm_setup and a local CA living in `dir`.
fn manufacture(dir: &Path) -> (PathBuf, PathBuf) {
    let (state, ca) = (dir.join("state"), dir.join("localca"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&ca).unwrap();
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )
    .unwrap();
    let localca_options = dir.join("swtpm-localca.options");
    std::fs::write(
        &localca_options,
        "--platform-manufacturer Vigil\n--platform-version 2.1\n--platform-model test\n",
    )
    .unwrap();
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            localca_options.display()
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate", s(&state)])
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
        .args(["--config", s(&setup_conf)])
        .output()
        .expect("run swtpm_setup");
    assert!(
        out.status.success(),
        "swtpm_setup: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (state, ca)
}

#[test]
fn swtpm_ek_certificates_chain_to_the_local_ca() {
    let missing: Vec<_> = TOOLS.iter().filter(|t| !in_path(t)).collect();
    if !missing.is_empty() {
        let msg = format!("swtpm/tpm2-tools not installed (missing {missing:?})");
        if std::env::var_os("CI").is_some() {
            panic!("{msg}; CI must run this test (apt-get install swtpm swtpm-tools tpm2-tools)");
        }
        eprintln!("skipping swtpm EK certificate test: {msg}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (state, ca) = manufacture(dir);
    let (ek_der, ek_pub) = (dir.join("ek.der"), dir.join("ek.pub"));
    let (ecc_der, ecc_pub) = (dir.join("ek-ecc.der"), dir.join("ek-ecc.pub"));
    {
        let tpm = Swtpm::start(&state);
        // RSA-2048 EK certificate and the EK recreated from the default template.
        tpm.tpm2("tpm2_nvread", &["0x01c00002", "-o", s(&ek_der)]);
        tpm.tpm2("tpm2_createek", &["-c", "-", "-G", "rsa", "-u", s(&ek_pub)]);
        // swtpm_setup also made an ECC P-384 EK (persisted at 0x81010016, its
        // certificate at 0x01c00016, the high-range H-3 template).
        tpm.tpm2("tpm2_nvread", &["0x01c00016", "-o", s(&ecc_der)]);
        tpm.tpm2("tpm2_readpublic", &["-c", "0x81010016", "-o", s(&ecc_pub)]);
    } // swtpm is killed here

    // The local CA's directory (its private keys are skipped) as the store: trusted.
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ek_der),
        "--store",
        s(&ca),
        "--ek",
        s(&ek_pub),
        "--at",
        "now",
        "--reject-malformed",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["trusted"], true);
    assert_eq!(v["ek_key_match"], true);
    assert_eq!(v["ek_cert"]["der"], true);
    assert_eq!(v["chain"][0]["subject"], "CN=unknown");
    assert_eq!(v["chain"][1]["subject"], "CN=swtpm-localca");
    assert_eq!(v["chain"][1]["source"]["entry"], "issuercert.pem");
    assert_eq!(v["store_certificates"], 2);

    // Only the root trusted; the issuing CA given as an intermediate: three links.
    let root_store = dir.join("root-only");
    std::fs::create_dir(&root_store).unwrap();
    std::fs::copy(
        ca.join("swtpm-localca-rootca-cert.pem"),
        root_store.join("swtpm-localca-rootca-cert.pem"),
    )
    .unwrap();
    let issuer = ca.join("issuercert.pem");
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ecc_der),
        "--intermediate",
        s(&issuer),
        "--store",
        s(&root_store),
        "--ek",
        s(&ecc_pub),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("CN=swtpm-localca  (intermediate #1)"),
        "{text}"
    );
    assert!(
        text.contains("CN=swtpm-localca-rootca  (trust store: swtpm-localca-rootca-cert.pem)"),
        "{text}"
    );
    assert!(
        text.contains("EK public key: matches the certificate"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("TRUSTED"), "{text}");

    // Without the intermediate, the root alone does not reach the EK certificate.
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ecc_der),
        "--store",
        s(&root_store),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(
        v["failures"][0],
        "not trusted: 'CN=unknown': its issuer 'CN=swtpm-localca' is neither in the trust store nor among the intermediates"
    );

    // The ECC certificate does not certify the RSA EK.
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ecc_der),
        "--store",
        s(&ca),
        "--ek",
        s(&ek_pub),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ek_key_match"], false);
    let reason = v["failures"][0].as_str().unwrap();
    assert!(reason.contains("does not certify this EK"), "{reason}");
    assert!(
        reason.contains("EC P384 key, the EK is RSA-2048"),
        "{reason}"
    );

    // Keylime's vendor store does not know swtpm's CA: not trusted, and why.
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ek_der),
        "--store",
        s(&keylime_store()),
        "--ek",
        s(&ek_pub),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("'CN=unknown': its issuer 'CN=swtpm-localca' is neither in the trust store nor among the intermediates"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("NOT TRUSTED"), "{text}");

    // Before the certificates were made.
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        s(&ek_der),
        "--store",
        s(&ca),
        "--at",
        "2000-01-01T00:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("'CN=unknown': not valid before"), "{text}");
}
