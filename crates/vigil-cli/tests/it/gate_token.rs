//! `vigil gate verify-token` offline: a token the gate's signing code made verifies with
//! the public key and nonce (exit 0), and fails (exit 1) once altered, expired, checked
//! with another key or another nonce; an unreadable key is bad input (exit 2).

use std::process::{Command, Output};

use rand_chacha::rand_core::SeedableRng;
use vigil_core::results::{sign, GateResult, Judgement, ResultsKey};

fn verify(token: &str, key: &std::path::Path, nonce: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.args(["gate", "verify-token", token, "--key"]).arg(key);
    if let Some(n) = nonce {
        c.args(["--nonce", n]);
    }
    c.output().unwrap()
}

#[test]
fn verify_token_checks_signature_expiry_and_nonce() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (key, other) = (
        ResultsKey::generate(&mut rng),
        ResultsKey::generate(&mut rng),
    );
    let dir = tempfile::tempdir().unwrap();
    let (pem, other_pem) = (dir.path().join("ar.pem"), dir.path().join("other.pem"));
    std::fs::write(&pem, key.public_pem().unwrap()).unwrap();
    std::fs::write(&other_pem, other.public_pem().unwrap()).unwrap();
    let token = |expires_at| {
        sign(
            &key,
            &GateResult {
                node_id: "n1",
                class: Some("r650"),
                judgement: &Judgement::Trusted,
                evidence_time: Some(now),
                nonce: Some("deploy-4711"),
                issued_at: now,
                expires_at,
            },
        )
        .unwrap()
    };
    let good = token(now + 300);
    let out = verify(&good, &pem, Some("deploy-4711"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ear_status affirming"), "{stdout}");
    // Altered: one character of the claims changed.
    let mut altered = good.clone().into_bytes();
    let i = good.find('.').unwrap() + 10;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for (what, out) in [
        ("altered", verify(&altered, &pem, None)),
        ("expired", verify(&token(now - 1), &pem, None)),
        ("another key", verify(&good, &other_pem, None)),
        ("another nonce", verify(&good, &pem, Some("deploy-4712"))),
    ] {
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid"),
            "{what}"
        );
    }
    let out = verify(&good, &dir.path().join("missing.pem"), None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
