//! Differential test of the U/V payload crypto and revocation notices against Keylime
//! 7.14.3's own functions (`tests/keylime/payload_oracle.py`, run with the reference
//! venv's Python from `VIGIL_KEYLIME_PYTHON`). Skipped locally without it; fails under
//! CI.

use std::io::Write;
use std::process::{Command, Stdio};

use aws_lc_rs::encoding::AsDer;
use rand_core::SeedableRng;
use rsa::pkcs8::{DecodePublicKey, LineEnding};
use serde_json::{json, Value};
use vigil_core::payload::{decrypt_share, encrypt_share, BootstrapKey, NodePrivateKey};
use vigil_core::revocation::{asctime, RevocationKey, RevocationMessage, RevocationNotice};

fn keylime(request: &Value) -> Option<Value> {
    let python = crate::skip::keylime_python("payload_keylime")?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/keylime/payload_oracle.py"
    );
    let mut child = Command::new(python)
        .arg(script)
        .env_remove("KEYLIME_VERIFIER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Keylime oracle");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "Keylime oracle failed");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn payloads_shares_tags_and_notices_interoperate_with_keylime() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
    // One RSA key plays the node key and the revocation key, as both are RSA.
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap();
    let nk = NodePrivateKey::from_pkcs8_der(pkcs8.as_ref()).unwrap();
    let revocation_key = RevocationKey::from_pkcs8_der(pkcs8.as_ref()).unwrap();
    let nk_public = rsa::RsaPublicKey::from_public_key_der(&nk.public_key_der().unwrap()).unwrap();
    let pem = |label, der: &[u8]| der::pem::encode_string(label, LineEnding::LF, der).unwrap();
    let k = BootstrapKey::generate(&mut rng);
    let message = RevocationMessage {
        kind: "revocation".into(),
        ip: "10.0.0.7".into(),
        agent_id: "d432fbb3-d2f1-4a97-9ef7-75bd81c00000".into(),
        port: 9002.into(),
        tpm_policy: r#"{"mask": "0x0"}"#.into(),
        meta_data: "{}".into(),
        event_time: asctime(1_785_744_519),
        event_id: Some("pcr_validation.invalid_pcr_7".into()),
        severity_label: Some("emergency".into()),
        context: Some("{}".into()),
    };
    let notice = RevocationNotice::sign(&message, Some(&revocation_key)).unwrap();
    let request = json!({
        "key_hex": hex::encode(k.as_bytes()),
        "plaintext": "payload bytes",
        "agent_id": message.agent_id,
        "challenge": "Ai5M5SjYjnkyv4P7itH1",
        "nk_private_pem": pem("PRIVATE KEY", pkcs8.as_ref()),
        "nk_public_pem": pem("PUBLIC KEY", &nk.public_key_der().unwrap()),
        "payload_by_vigil": k.encrypt_payload(b"made by vigil", &mut rng),
        "share_by_vigil": encrypt_share(&nk_public, k.as_bytes(), &mut rng).unwrap(),
        "notice_msg": notice.msg,
        "vigil_notice": notice,
    });
    let Some(answer) = keylime(&request) else {
        return;
    };
    let text = |k: &str| answer[k].as_str().unwrap().to_owned();
    assert_eq!(
        k.decrypt_payload(&text("payload_by_keylime")).unwrap(),
        b"payload bytes"
    );
    assert_eq!(
        decrypt_share(&nk, &text("share_by_keylime")).unwrap(),
        k.as_bytes()
    );
    assert_eq!(text("auth_tag"), k.auth_tag(&message.agent_id));
    assert_eq!(
        text("challenge_answer"),
        k.answer_challenge("Ai5M5SjYjnkyv4P7itH1")
    );
    assert_eq!(text("payload_by_vigil"), "made by vigil");
    assert_eq!(text("share_by_vigil"), hex::encode(k.as_bytes()));
    assert_eq!(answer["vigil_notice_verifies"], true);
    let keylime_notice = RevocationNotice {
        msg: request["notice_msg"].as_str().unwrap().into(),
        signature: text("notice_signature_by_keylime"),
    };
    let got = keylime_notice.verify(&nk_public).unwrap();
    assert_eq!(got["event_id"], "pcr_validation.invalid_pcr_7");
}
