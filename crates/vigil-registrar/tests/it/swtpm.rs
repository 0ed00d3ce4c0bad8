//! The real-TPM end-to-end test: an EK and AK made by swtpm with tpm2-tools register
//! over HTTP, `tpm2_activatecredential` recovers the secret from the registrar's blob,
//! and its auth tag activates the agent — on SQLite and PostgreSQL. A second
//! registration whose AK is not in that TPM cannot be activated.
//!
//! Without swtpm and tpm2-tools the test skips with a note, except under `CI`.

use crate::support;

use serde_json::json;
use support::{b64, status_text, Env};
use vigil_core::tpm::credential::auth_tag;
use vigil_testkit::Swtpm;

async fn swtpm_registration(db: String) {
    let Some(tpm) = Swtpm::start(
        "swtpm_registration",
        &["tpm2_createek", "tpm2_createak", "tpm2_activatecredential"],
    ) else {
        return;
    };
    let env = Env::start(&db, |_| {}).await;
    for (id, ek_alg) in [("swtpm-rsa", "rsa"), ("swtpm-ecc", "ecc")] {
        support::make_ek_ak(&tpm, ek_alg);
        let read = |f: &str| std::fs::read(tpm.path(f)).unwrap();
        let reg = json!({"ek_tpm": b64(&read("ek.pub")), "aik_tpm": b64(&read("ak.pub"))});
        let (code, reply) = env
            .http(
                "POST",
                &format!("/v2.6/agents/{id}"),
                Some(serde_json::to_vec(&reg).unwrap()),
            )
            .await;
        assert_eq!(code, 200, "{ek_alg}: {reply}");
        let blob = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(reply["results"]["blob"].as_str().unwrap())
                .unwrap()
        };
        let cred = tpm.path("blob.cred");
        std::fs::write(&cred, &blob).unwrap();
        let secret = tpm
            .activate("ak.ctx", "ek.ctx", &cred)
            .unwrap_or_else(|o| panic!("{ek_alg}: tpm2_activatecredential failed: {o:?}"));
        assert_eq!(secret.len(), 32, "{ek_alg}");
        let tag = auth_tag(&secret, id);
        let (code, v) = env
            .http(
                "PUT",
                &format!("/v2.6/agents/{id}"),
                Some(serde_json::to_vec(&json!({"auth_tag": tag})).unwrap()),
            )
            .await;
        assert_eq!(
            (code, status_text(200, &v)),
            (200, "Success".into()),
            "{ek_alg}"
        );
        let (code, v) = env.admin("GET", &format!("/v2.6/agents/{id}")).await;
        assert_eq!(code, 200, "{ek_alg}: {v}");
        assert_eq!(v["results"]["aik_tpm"], b64(&read("ak.pub")));
    }

    // The registrar bound the blob to the AK it was given: with Keylime's AK (not in
    // this TPM) registered under this TPM's EK, the TPM refuses to activate for its
    // own AK, so the agent can never produce the tag.
    support::make_ek_ak(&tpm, "rsa");
    let read = |f: &str| std::fs::read(tpm.path(f)).unwrap();
    let foreign_ak = std::fs::read(format!("{}/ak.pub", support::KEYLIME_FILES)).unwrap();
    let reg = json!({"ek_tpm": b64(&read("ek.pub")), "aik_tpm": b64(&foreign_ak)});
    let (code, reply) = env
        .http(
            "POST",
            "/v2.6/agents/impostor",
            Some(serde_json::to_vec(&reg).unwrap()),
        )
        .await;
    assert_eq!(code, 200);
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(reply["results"]["blob"].as_str().unwrap())
        .unwrap();
    let cred = tpm.path("impostor.cred");
    std::fs::write(&cred, blob).unwrap();
    assert!(tpm.activate("ak.ctx", "ek.ctx", &cred).is_err());
    env.stop().await;
}

on_both_backends!(swtpm_registration);
