//! The provisioning trust gate end to end on swtpm nodes, on SQLite and PostgreSQL: a
//! class learnt from a known-good node, a node outside it, the gate answering from
//! fresh evidence, forcing a round for stale evidence (a new quote is taken), holding
//! a failing node with the PCR named, and an unreachable and an unknown node; EAR
//! tokens checked with the verifier's public key; nodes selected by label.

use crate::support;

use serde_json::{json, Value};
use support::{wait_for, Pki, TestAgent};
use vigil_core::results::{self, TrustTier};

/// Two nodes with the same "firmware" in PCRs 0–7; the second's boot loader (PCR 4)
/// measured something else too.
async fn nodes(pki: &Pki) -> Option<(TestAgent, TestAgent)> {
    let ca = pki.tls_dir().join("cacert.crt");
    let a = TestAgent::new("verifier_gate_a", &ca).await?;
    let b = TestAgent::new("verifier_gate_b", &ca).await?;
    for pcr in 0..8 {
        a.extend(pcr, format!("firmware {pcr}").as_bytes());
        b.extend(pcr, format!("firmware {pcr}").as_bytes());
    }
    b.extend(4, b"another boot loader");
    Some((a, b))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn gate_holds_what_is_outside_the_class(db: String) {
    let pki = Pki::new();
    let Some((mut a, b)) = nodes(&pki).await else {
        return;
    };
    // Rounds far apart, so that only the gate makes a round happen now.
    let config = vigil_verifier::Config {
        quote_interval: 3600.0,
        ..pki.config(&db)
    };
    let v = support::start(&config).await;
    let (addr, c) = (v.addr(), pki.client(true));
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let c = &c;
        async move { c.call(addr, method, &path, body).await }
    };
    let (code, r) = call("POST", "/v2.6/agents/a".into(), Some(a.enrolment(""))).await;
    assert_eq!(code, 200, "{r}");
    wait_for(30, "a attested", || async {
        let (_, s) = call("GET", "/v2.6/agents/a".into(), None).await;
        (s["results"]["attestation_count"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    // The class, learnt from a's verified quote; deleting it is refused once used.
    let (code, pcrs) = call("GET", "/vigil/v1/nodes/a/pcrs?pcrs=0-7".into(), None).await;
    assert_eq!(code, 200, "{pcrs}");
    let values = &pcrs["results"]["pcrs"];
    let golden = json!({
        "name": "r650",
        "bank": pcrs["results"]["bank"],
        "pcrs": values.as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!([v]))).collect::<serde_json::Map<_, _>>(),
    });
    // Refused: a set named after another class, a policy that does not exist.
    let (code, _) = call(
        "POST",
        "/vigil/v1/classes/other".into(),
        Some(json!({"golden": golden})),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = call(
        "POST",
        "/vigil/v1/classes/r650".into(),
        Some(json!({"golden": golden, "runtime_policy": "missing"})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, r) = call(
        "POST",
        "/vigil/v1/classes/r650".into(),
        Some(json!({"description": "test machines", "golden": golden})),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let (_, listed) = call("GET", "/vigil/v1/classes".into(), None).await;
    assert_eq!(listed["results"]["classes"][0]["name"], "r650", "{listed}");
    let labels = json!({"rack": "7"});
    let (code, r) = call(
        "PATCH",
        "/vigil/v1/nodes/a".into(),
        Some(json!({"class": "r650", "labels": labels})),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    let mut enrol_b = b.enrolment("");
    enrol_b["vigil_hardware_class"] = json!("r650");
    enrol_b["vigil_labels"] = labels;
    let (code, r) = call("POST", "/v2.6/agents/b".into(), Some(enrol_b)).await;
    assert_eq!(code, 200, "{r}");
    let (code, _) = call("DELETE", "/vigil/v1/classes/r650".into(), None).await;
    assert_eq!(code, 409);
    let (_, status) = call("GET", "/v2.6/agents/b".into(), None).await;
    assert_eq!(status["results"]["vigil"]["class"], "r650", "{status}");
    assert_eq!(status["results"]["vigil"]["labels"]["rack"], "7");
    let (_, sel) = call("GET", "/vigil/v1/nodes?label=rack=7".into(), None).await;
    assert_eq!(sel["results"]["nodes"], json!(["a", "b"]));

    let (code, key) = c.text(addr, "/vigil/v1/trust/key").await;
    assert_eq!(code, 200);
    assert!(key.starts_with("-----BEGIN PUBLIC KEY-----"), "{key}");
    let gate = |id: &'static str, query: &'static str| {
        let c = &c;
        async move {
            let (code, r) = c
                .call(addr, "GET", &format!("/vigil/v1/trust/{id}?{query}"), None)
                .await;
            (code, r["results"].clone())
        }
    };

    // Evidence counts only when judged after the class was set, to the second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Stale (older than 0 s): a round now, with a new quote; judged with the class.
    let before = a.requests().len();
    let (code, r) = gate("a", "max_age=0&nonce=gate-nonce-1&timeout=20").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["trusted"].as_bool(), r["attested_now"].as_bool()),
        (Some(true), Some(true)),
        "{r}"
    );
    assert!(a.requests().len() > before, "the gate took a new quote");
    assert_eq!(r["class"], "r650");
    let token = r["token"].as_str().unwrap();
    let ear = results::verify(token, &key, Some("gate-nonce-1"), now()).unwrap();
    assert_eq!(ear.ear_status, TrustTier::Affirming);
    assert!(results::verify(token, &key, Some("other-nonce"), now()).is_err());
    // Fresh: answered from that round, no new quote.
    let before = a.requests().len();
    let (_, r) = gate("a", "max_age=3600").await;
    assert_eq!(
        (r["trusted"].as_bool(), r["attested_now"].as_bool()),
        (Some(true), Some(false)),
        "{r}"
    );
    assert_eq!(a.requests().len(), before);

    // Outside the class: held, naming PCR 4, what was quoted and what is allowed.
    let (_, r) = gate("b", "max_age=60&timeout=20").await;
    assert_eq!(r["trusted"], false, "{r}");
    let reason = r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "pcr_validation.invalid_pcr_4")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(reason["context"]["class"], "r650");
    assert_eq!(reason["context"]["expected"], json!([values["4"]]));
    let ear = results::verify(r["token"].as_str().unwrap(), &key, None, now()).unwrap();
    assert_eq!(ear.ear_status, TrustTier::Contraindicated);

    // Unreachable: not trusted, whatever its last round said.
    a.go_offline();
    let (_, r) = gate("a", "max_age=0&timeout=10").await;
    assert_eq!(r["trusted"], false, "{r}");
    assert_eq!(r["reasons"][0]["id"], "unreachable", "{r}");
    // Unknown.
    let (code, _) = gate("nobody", "max_age=0").await;
    assert_eq!(code, 404);
    v.shutdown().await;
}

on_both_backends!(gate_holds_what_is_outside_the_class);
