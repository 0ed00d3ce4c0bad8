//! Differential tests against a real (software) TPM and tpm2-tools:
//! - credentials Vigil makes are activated by `tpm2_activatecredential` to the exact
//!   secret, for RSA and ECC P-256 EKs, and the TPM's own `tpm2_makecredential` blobs
//!   parse in Vigil;
//! - quotes `tpm2_quote` makes (RSA AK with RSASSA, ECC AK with ECDSA) are valid for
//!   `vigil quote check` exactly when `tpm2_checkquote` says so.
//!
//! Each test runs its own swtpm (the `vigil-testkit` harness). Without swtpm and tpm2-tools
//! the tests skip with a note, except under `CI`, where they fail.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use vigil_core::tpm::credential::{random_challenge, CredentialBlob};
use vigil_core::HashAlg;
use vigil_testkit::Swtpm;

/// The tools these differentials run.
const TOOLS: &[&str] = &[
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_readpublic",
    "tpm2_makecredential",
    "tpm2_activatecredential",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_flushcontext",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_quote",
    "tpm2_checkquote",
];

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An EK and an AK under it, as `tpm2_createek` / `tpm2_createak` make them, with the EK
/// also as PEM. Files: ek.pub, ek.pem, ek.ctx, ak.pub, ak.name, ak.ctx.
fn keys(tpm: &Swtpm, ek_alg: &str, ak_alg: &str, ak_scheme: &str) {
    tpm.tool(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"],
    );
    tpm.tool(
        "tpm2_readpublic",
        &["-c", "ek.ctx", "-f", "pem", "-o", "ek.pem"],
    );
    tpm.tool(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", ak_alg, "-g", "sha256", "-s", ak_scheme, "-u",
            "ak.pub", "-n", "ak.name", "-r", "ak.priv",
        ],
    );
}

/// The credential round trip for one EK type; `seed_len` is the size of the encrypted
/// seed the TPM's blob must have (RSA: the modulus; ECC: the marshalled point).
fn credential_differential(
    test: &str,
    ek_alg: &str,
    ak_alg: &str,
    ak_scheme: &str,
    seed_len: usize,
) {
    let Some(tpm) = Swtpm::start(test, TOOLS) else {
        return;
    };
    keys(&tpm, ek_alg, ak_alg, ak_scheme);
    // A Keylime-shaped challenge: 32 alphanumeric characters.
    let secret = random_challenge(&mut rand_core::OsRng).unwrap();
    let secret_file = tpm.path("secret.bin");
    std::fs::write(&secret_file, secret).unwrap();
    let name_hex = hex::encode(std::fs::read(tpm.path("ak.name")).unwrap());
    let (ek, ek_pem, ak, ak_name) = (
        tpm.path("ek.pub"),
        tpm.path("ek.pem"),
        tpm.path("ak.pub"),
        tpm.path("ak.name"),
    );

    // Vigil makes, the TPM activates: every way of naming the EK and the AK.
    let cases: [&[&str]; 3] = [
        &["--ek", p(&ek), "--ak-name", p(&ak_name)],
        &["--ek", p(&ek_pem), "--ek-format", "pem", "--ak", p(&ak)],
        &["--ek", p(&ek), "--ak-name", &name_hex],
    ];
    for case in cases {
        let blob = tpm.path("vigil.cred");
        let mut args = vec![
            "credential",
            "make",
            "--secret",
            p(&secret_file),
            "-o",
            p(&blob),
        ];
        args.extend_from_slice(case);
        let out = vigil(&args);
        assert_eq!(out.status.code(), Some(0), "{case:?}: {out:?}");
        let recovered = tpm
            .activate("ak.ctx", "ek.ctx", &blob)
            .unwrap_or_else(|e| panic!("{test} {case:?}: activation failed: {e:?}"));
        assert_eq!(recovered, secret, "{test} {case:?}");
    }

    // A blob for another AK name is refused by the TPM (the name is bound in the HMAC).
    let other_name = format!("000b{}", "11".repeat(32));
    let blob = tpm.path("other.cred");
    let out = vigil(&[
        "credential",
        "make",
        "--ek",
        p(&ek),
        "--ak-name",
        &other_name,
        "--secret",
        p(&secret_file),
        "-o",
        p(&blob),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        tpm.activate("ak.ctx", "ek.ctx", &blob).is_err(),
        "{test}: wrong AK name accepted"
    );

    // The TPM's own MakeCredential: Vigil parses its blob, writes it back byte for byte,
    // and it has the shape Vigil's blobs have.
    let tpm_blob = tpm.path("tpm.cred");
    tpm.tool(
        "tpm2_makecredential",
        &[
            "-u",
            "ek.pub",
            "-s",
            p(&secret_file),
            "-n",
            &name_hex,
            "-o",
            p(&tpm_blob),
        ],
    );
    let bytes = std::fs::read(&tpm_blob).unwrap();
    let parsed = CredentialBlob::parse_tpm2_tools(&bytes).unwrap();
    assert_eq!(parsed.to_tpm2_tools(), bytes);
    assert_eq!(parsed.integrity().len(), 32);
    assert_eq!(parsed.enc_identity().len(), 2 + secret.len());
    assert_eq!(parsed.encrypted_secret().len(), seed_len);
    let out = vigil(&["credential", "parse", p(&tpm_blob), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(tpm.activate("ak.ctx", "ek.ctx", &tpm_blob).unwrap(), secret);

    // Both refuse a secret longer than the EK's nameAlg digest.
    let long = tpm.path("long.bin");
    std::fs::write(&long, [b'a'; 33]).unwrap();
    let out = tpm.try_tool(
        "tpm2_makecredential",
        &[
            "-u",
            "ek.pub",
            "-s",
            p(&long),
            "-n",
            &name_hex,
            "-o",
            "long.cred",
        ],
    );
    assert!(
        !out.status.success(),
        "{test}: the TPM took a 33-byte credential"
    );
    let out = vigil(&[
        "credential",
        "make",
        "--ek",
        p(&ek),
        "--ak-name",
        p(&ak_name),
        "--secret",
        p(&long),
        "-o",
        p(&tpm.path("long.vigil")),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn credential_rsa_ek() {
    credential_differential("credential_rsa_ek", "rsa", "rsa", "rsassa", 256);
}

#[test]
fn credential_ecc_p256_ek() {
    credential_differential(
        "credential_ecc_p256_ek",
        "ecc",
        "ecc",
        "ecdsa",
        2 + 32 + 2 + 32,
    );
}

/// `vigil quote check` on tpm2-tools' files `<stem>.msg`, `<sig>`, `<stem>.pcrs`:
/// (exit code, JSON).
fn vigil_check(
    tpm: &Swtpm,
    stem: &str,
    sig: &str,
    nonce_file: &Path,
    extra: &[&str],
) -> (Option<i32>, Value) {
    let out = vigil_check_output(tpm, stem, sig, nonce_file, extra);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vigil printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

/// `vigil quote check --json` on the stem's files, as run.
fn vigil_check_output(
    tpm: &Swtpm,
    stem: &str,
    sig: &str,
    nonce_file: &Path,
    extra: &[&str],
) -> std::process::Output {
    let (msg, sig, pcrs, ak) = (
        tpm.path(&format!("{stem}.msg")),
        tpm.path(sig),
        tpm.path(&format!("{stem}.pcrs")),
        tpm.path("ak.pub"),
    );
    let mut args = vec![
        "quote",
        "check",
        "--attest",
        p(&msg),
        "--sig",
        p(&sig),
        "--pcrs",
        p(&pcrs),
        "--ak",
        p(&ak),
        "--nonce-file",
        p(nonce_file),
        "--json",
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

/// `tpm2_checkquote` on the same files.
fn tpm2_checkquote(tpm: &Swtpm, sig: &str, nonce_hex: &str) -> bool {
    tpm.try_tool(
        "tpm2_checkquote",
        &[
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            sig,
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            nonce_hex,
        ],
    )
    .status
    .success()
}

fn quote_differential(test: &str, ak_alg: &str, ak_scheme: &str) {
    let Some(tpm) = Swtpm::start(test, TOOLS) else {
        return;
    };
    keys(&tpm, "rsa", ak_alg, ak_scheme);
    // Measure something into PCR 16 so a quoted PCR is not at its reset value.
    let measurement = HashAlg::Sha256.hash(test.as_bytes());
    tpm.tool(
        "tpm2_pcrextend",
        &[&format!("16:sha256={}", measurement.to_hex())],
    );
    let nonce = b"vigil-differential-20";
    let nonce_hex = hex::encode(nonce);
    let nonce_file = tpm.path("nonce.bin");
    std::fs::write(&nonce_file, nonce).unwrap();
    tpm.tool(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,7,16",
            "-q",
            &nonce_hex,
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "quote.pcrs",
            "-g",
            "sha256",
        ],
    );

    // Both accept the genuine quote, and agree on PCR 16.
    let (code, json) = vigil_check(&tpm, "quote", "quote.sig", &nonce_file, &[]);
    assert_eq!(code, Some(0), "{test}: {json}");
    assert_eq!(json["valid"], true);
    let pcr16 = HashAlg::Sha256.extend(&HashAlg::Sha256.zero(), &measurement);
    assert_eq!(json["pcrs"]["16"], pcr16.to_hex());
    assert_eq!(json["pcrs"]["0"].as_str().unwrap().len(), 64);
    assert!(json["pcrs"].get("2").is_none());
    let pcrread = tpm.tool("tpm2_pcrread", &["sha256:16"]);
    assert!(String::from_utf8_lossy(&pcrread.stdout)
        .to_lowercase()
        .contains(&pcr16.to_hex()));
    assert!(
        tpm2_checkquote(&tpm, "quote.sig", &nonce_hex),
        "{test}: tpm2_checkquote"
    );

    // Both reject another nonce.
    let other = tpm.path("other-nonce.bin");
    std::fs::write(&other, b"another-nonce").unwrap();
    let (code, json) = vigil_check(&tpm, "quote", "quote.sig", &other, &[]);
    assert_eq!(code, Some(1), "{test}: {json}");
    assert_eq!(json["valid"], false);
    assert!(!tpm2_checkquote(
        &tpm,
        "quote.sig",
        &hex::encode(b"another-nonce")
    ));

    // Both reject a signature with one bit flipped, in its last byte (inside the RSA
    // signature or the ECDSA s value).
    let mut sig = std::fs::read(tpm.path("quote.sig")).unwrap();
    *sig.last_mut().unwrap() ^= 0x01;
    std::fs::write(tpm.path("flipped.sig"), &sig).unwrap();
    let (code, json) = vigil_check(&tpm, "quote", "flipped.sig", &nonce_file, &[]);
    assert_eq!(code, Some(1), "{test}: {json}");
    assert!(!tpm2_checkquote(&tpm, "flipped.sig", &nonce_hex));

    // `tpm2_quote -f plain` (bare RSA signature / DER ECDSA) with `--sig-format plain`.
    tpm.tool(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,16",
            "-q",
            &nonce_hex,
            "-m",
            "plain.msg",
            "-s",
            "plain.sig",
            "-o",
            "plain.pcrs",
            "-g",
            "sha256",
            "-f",
            "plain",
        ],
    );
    let plain = ["--sig-format", "plain"];
    let (code, json) = vigil_check(&tpm, "plain", "plain.sig", &nonce_file, &plain);
    assert_eq!(code, Some(0), "{test}: {json}");
    assert_eq!(json["pcrs"]["16"], pcr16.to_hex());
    let (code, _) = vigil_check(&tpm, "plain", "plain.sig", &other, &plain);
    assert_eq!(code, Some(1));
    // Read as a TPMT_SIGNATURE it does not parse: bad input (exit 2) naming the file,
    // not a quote that failed a check (exit 1).
    let out = vigil_check_output(&tpm, "plain", "plain.sig", &nonce_file, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{test}: {stderr}");
    assert!(stderr.contains("plain.sig"), "{test}: {stderr}");
}

#[test]
fn quote_rsa_ak_rsassa() {
    quote_differential("quote_rsa_ak_rsassa", "rsa", "rsassa");
}

#[test]
fn quote_ecc_ak_ecdsa() {
    quote_differential("quote_ecc_ak_ecdsa", "ecc", "ecdsa");
}
