//! `vigil ekcert verify` on a real EK certificate chain: swtpm_setup manufactures a
//! TPM whose EK certificates (RSA and ECC) are issued by swtpm_localca and written to
//! NV; a running swtpm gives them back through tpm2-tools, as an agent reads them.
//!
//! Needs swtpm, swtpm_setup, swtpm_localca and tpm2-tools (the `vigil-testkit`
//! harness). Without them the test prints a skip note — or fails when `CI` is set, so
//! CI never silently stops checking.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vigil_testkit::Swtpm;

const TOOLS: [&str; 3] = ["tpm2_nvread", "tpm2_createek", "tpm2_readpublic"];

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

#[test]
fn swtpm_ek_certificates_chain_to_the_local_ca() {
    let Some(tpm) = Swtpm::manufactured("swtpm_ek_certificates_chain_to_the_local_ca", &TOOLS)
    else {
        return;
    };
    let ca = tpm.ca_dir().expect("manufactured").to_path_buf();
    let (ek_der, ek_pub) = (tpm.path("ek.der"), tpm.path("ek.pub"));
    let (ecc_der, ecc_pub) = (tpm.path("ek-ecc.der"), tpm.path("ek-ecc.pub"));
    // RSA-2048 EK certificate and the EK recreated from the default template.
    tpm.tool("tpm2_nvread", &["0x01c00002", "-o", s(&ek_der)]);
    tpm.tool("tpm2_createek", &["-c", "-", "-G", "rsa", "-u", s(&ek_pub)]);
    // swtpm_setup also made an ECC P-384 EK (persisted at 0x81010016, its
    // certificate at 0x01c00016, the high-range H-3 template).
    tpm.tool("tpm2_nvread", &["0x01c00016", "-o", s(&ecc_der)]);
    tpm.tool("tpm2_readpublic", &["-c", "0x81010016", "-o", s(&ecc_pub)]);

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
    let root_store = tpm.path("root-only");
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
