//! Response rules and relearn end to end, on swtpm and both databases: every action
//! kind is taken and recorded with its outcome; a change covered by a known-good set of
//! the node's class is adopted (new policy version, `relearned` event, the node stays
//! in Get Quote); a partly covered one fails naming what is not covered; a relearn rule
//! never fires on a quote whose signature does not verify.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_for, Pki, Tamper, TestAgent};
use vigil_core::HashAlg;
use vigil_store::{KnownGood, Store};

use crate::events::file_events;

const FILES: [(&str, &[u8]); 2] = [("/usr/bin/a", b"a v1"), ("/usr/bin/b", b"b v1")];

fn digest(content: &[u8]) -> String {
    HashAlg::Sha256.hash(content).to_hex()
}

async fn status(pki: &Pki, addr: std::net::SocketAddr) -> Value {
    pki.client(true)
        .call(addr, "GET", "/v2.6/agents/n1", None)
        .await
        .1["results"]
        .clone()
}

async fn known_good(store: &Store, name: &str, files: &[(&str, &[u8])]) {
    let files: serde_json::Map<String, Value> = files
        .iter()
        .map(|(f, c)| ((*f).to_owned(), json!([digest(c)])))
        .collect();
    store
        .known_good()
        .add(&KnownGood {
            name: name.into(),
            class: "c1".into(),
            measurements: json!({ "files": files }).to_string(),
            recorded_by: "test".into(),
            recorded_at: 1,
        })
        .await
        .unwrap();
}

async fn rules_act_and_relearn_adopts_only_covered_changes(db: String) {
    let test = "verifier_response";
    let pki = Pki::new();
    let Some(agent) = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await else {
        return;
    };
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    let hook_out = pki.dir.path().join("hook.json");
    std::fs::write(
        pki.dir.path().join("rules.toml"),
        format!(
            r#"
[[rules]]
name = "relearn-planned-updates"
kinds = ["runtime"]
class = "c1"
actions = [{{ action = "relearn" }}]

[[rules]]
name = "respond"
event_id = "ima\\..*|qoute_validation\\..*"
actions = [
  {{ action = "notify" }},
  {{ action = "revoke" }},
  {{ action = "quarantine" }},
  {{ action = "shutdown" }},
  {{ action = "exec", command = ["sh", "-c", "cat > {}"], timeout_secs = 5 }},
]
"#,
            hook_out.display()
        ),
    )
    .unwrap();
    let config = vigil_verifier::Config {
        event_sinks: vec!["file".into()],
        response_rules: "rules.toml".into(),
        enabled_revocation_notifications: vec!["agent".into()],
        ..pki.config(&db)
    };
    let v = support::start(&config).await;
    let a = v.addr();
    // The node's hardware class, which relearn needs (no golden values).
    let (code, r) = pki
        .client(true)
        .call(
            a,
            "POST",
            "/vigil/v1/classes/c1",
            Some(json!({"golden": {"name": "c1", "bank": "sha256", "pcrs": {}}})),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    let mut body = agent.enrolment(&TestAgent::policy_b64(&FILES));
    body["vigil_hardware_class"] = json!("c1");
    let (code, r) = pki
        .client(true)
        .call(a, "POST", "/v2.6/agents/n1", Some(body))
        .await;
    assert_eq!(code, 200, "{r}");
    let store = Store::open(&db).await.unwrap();
    known_good(&store, "update-a", &[("/usr/bin/a", b"a v2")]).await;
    let file = pki.dir.path().join("events.jsonl");
    let kinds = || {
        file_events(&file)
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    // With rules, a passing round's event goes to no sink (no rule notifies on it).
    wait_for(30, "good rounds", || async {
        (status(&pki, a).await["attestation_count"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    assert!(kinds().is_empty());

    // A planned update covered by the set: adopted, the node stays in Get Quote.
    agent.measure("/usr/bin/a", b"a v2");
    wait_for(30, "the relearned event", || async {
        kinds().contains(&"relearned".to_owned()).then_some(())
    })
    .await;
    let count = status(&pki, a).await["attestation_count"].as_u64().unwrap();
    wait_for(30, "more good rounds", || async {
        let s = status(&pki, a).await;
        (s["attestation_count"].as_u64() > Some(count + 1)).then_some(s)
    })
    .await;
    let s = status(&pki, a).await;
    assert_eq!(s["operational_state"], 3, "{s}");
    let relearned = file_events(&file)
        .into_iter()
        .find(|e| e["kind"] == "relearned")
        .unwrap();
    assert_eq!(relearned["detail"]["sets"], json!(["update-a"]));
    assert_eq!(relearned["differences"][0]["measured"], digest(b"a v2"));
    let versions = store.known_good().versions("n1").await.unwrap();
    assert_eq!(versions.len(), 1, "the old policy is kept");
    assert!(versions[0]
        .runtime_policy
        .as_deref()
        .unwrap()
        .contains(&digest(b"a v1")));

    // Partly covered: b's change is known-good, a's is not: the node fails, and the
    // event names what no set covers.
    known_good(&store, "update-b", &[("/usr/bin/b", b"b v2")]).await;
    agent.measure("/usr/bin/a", b"a v3");
    agent.measure("/usr/bin/b", b"b v2");
    wait_for(30, "Invalid Quote", || async {
        (status(&pki, a).await["operational_state"] == 9).then_some(())
    })
    .await;
    let failed = wait_for(10, "the failure event", || async {
        file_events(&file)
            .into_iter()
            .find(|e| e["kind"] == "runtime" && e["policy_evaluation_passed"] == false)
    })
    .await;
    let uncovered = &failed["detail"]["relearn"]["uncovered"];
    assert_eq!(uncovered.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!(uncovered[0]["file"], "/usr/bin/a");

    // Every action of the matching rule ran and was recorded, and sent out as an event.
    let actions = wait_for(20, "five recorded actions", || async {
        let got = store.response_actions().recent("n1", 50).await.ok()?;
        (got.len() >= 6).then_some(got)
    })
    .await;
    let outcome = |name: &str| {
        actions
            .iter()
            .find(|r| r.action == name)
            .map(|r| r.outcome.clone())
    };
    assert_eq!(outcome("relearn").as_deref(), Some("done"));
    assert_eq!(outcome("notify").as_deref(), Some("done"));
    assert_eq!(outcome("revoke").as_deref(), Some("done"));
    assert_eq!(outcome("exec").as_deref(), Some("done"));
    // This test node has no Vigil agent endpoint (and no revocation key): recorded as
    // failed, with why. The agent's side is tested in vigil-agent.
    let q = actions.iter().find(|r| r.action == "quarantine").unwrap();
    assert_eq!(q.outcome, "failed");
    assert!(q.detail.contains("revocation key"), "{q:?}");
    assert!(actions.iter().any(|r| r.action == "shutdown"));
    let hook: Value = serde_json::from_str(&std::fs::read_to_string(&hook_out).unwrap()).unwrap();
    assert_eq!(hook["uuid"], failed["uuid"]);
    wait_for(10, "a revocation notice", || async {
        agent.revocations().first().cloned()
    })
    .await;
    wait_for(10, "action events", || async {
        kinds().contains(&"action".to_owned()).then_some(())
    })
    .await;

    // A quote whose signature does not verify is never relearnt, even when the files
    // it reports are known-good.
    agent.set_tamper(Tamper::QuoteSignature);
    known_good(&store, "update-a3", &[("/usr/bin/a", b"a v3")]).await;
    let before = store.known_good().versions("n1").await.unwrap().len();
    let (code, _) = pki
        .client(true)
        .call(a, "PUT", "/v2.6/agents/n1/reactivate", None)
        .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(&pki, a).await;
    assert_eq!(s["operational_state"], 9, "{s}");
    assert_eq!(
        s["vigil"]["last_failures"][0]["event_id"], "qoute_validation.quote_validation",
        "{s}"
    );
    assert_eq!(
        store.known_good().versions("n1").await.unwrap().len(),
        before
    );
    // Nor by the operator: the explicit relearn refuses it too.
    let c = pki.client(true);
    let (code, r) = c.call(a, "POST", "/vigil/v1/agents/n1/relearn", None).await;
    assert_eq!(code, 400, "{r}");
    assert!(
        r["status"].as_str().unwrap().contains("never relearnt"),
        "{r}"
    );
    // The operator's routes: the node's actions, known-good sets.
    let (code, r) = c.call(a, "GET", "/vigil/v1/agents/n1/actions", None).await;
    assert_eq!(code, 200, "{r}");
    assert!(
        r["results"]["actions"].as_array().unwrap().len() >= 6,
        "{r}"
    );
    let set = json!({"name": "k9", "class": "c2", "recorded_by": "ops",
        "measurements": {"pcrs": {"4": [digest(b"pcr4")]}}});
    assert_eq!(
        c.call(a, "POST", "/vigil/v1/known-good", Some(set.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        c.call(a, "POST", "/vigil/v1/known-good", Some(set)).await.0,
        409
    );
    let (_, r) = c
        .call(a, "GET", "/vigil/v1/known-good?class=c2", None)
        .await;
    assert_eq!(r["results"]["sets"][0]["name"], "k9", "{r}");
    assert_eq!(
        c.call(a, "DELETE", "/vigil/v1/known-good/k9", None).await.0,
        200
    );
    assert_eq!(
        c.call(a, "GET", "/vigil/v1/known-good/k9", None).await.0,
        404
    );
    assert_eq!(
        pki.client(false)
            .call(a, "GET", "/vigil/v1/known-good", None)
            .await
            .0,
        403
    );
    store.close().await;
    v.shutdown().await;
}

on_both_backends!(rules_act_and_relearn_adopts_only_covered_changes);

/// The rule file is read again on SIGHUP: a bad one is named and the rules in force
/// stay; a good one replaces them. (The real binary: a signal to the test process
/// would reach every in-process verifier.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_on_sighup() {
    use std::process::{Command, Stdio};
    let pki = Pki::new();
    let rules = pki.dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"a\"\nactions = [{ action = \"revoke\" }]\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = pki.dir.path().join("verifier.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        pki.dir.path().join("v.db").display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-verifier"))
        .arg("--database")
        .arg(&db)
        .env("VIGIL_VERIFIER_STATE_DIR", pki.dir.path())
        .env("VIGIL_VERIFIER_PORT", port.to_string())
        .env("VIGIL_VERIFIER_RESPONSE_RULES", &rules)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(20, "the verifier listening", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"b\"\nmin_severity = \"nope\"\nactions = []\n",
    )
    .unwrap();
    hup(child.id());
    wait_for(10, "the bad file named", || async {
        read().contains("rule \"b\": min_severity").then_some(())
    })
    .await;
    assert!(read().contains("the rules in force stay"), "{}", read());
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"c\"\nactions = [{ action = \"revoke\" }]\n",
    )
    .unwrap();
    hup(child.id());
    wait_for(10, "the rules reloaded", || async {
        read().contains("response rules reloaded").then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}
