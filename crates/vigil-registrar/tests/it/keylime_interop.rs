//! Interoperability with Keylime 7.14.3 (docs/interop.md):
//!
//! - `tenant_reads_vigil_registrar`: Keylime's `keylime_tenant -c regstatus / reglist /
//!   regdelete` against Vigil's registrar, with an agent registered and activated from
//!   a swtpm EK/AK. The tenant must see the fields that were registered.
//! - `registrar_differential`: the same registration flow, step by step, against
//!   Keylime's registrar and Vigil's, side by side: the same status codes, envelope
//!   shapes and (where Vigil keeps Keylime's text) status texts.
//!
//! Both need swtpm, tpm2-tools and the Keylime reference venv (`VIGIL_KEYLIME_PYTHON`);
//! without them they skip with a note, except under `CI`, where they fail.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{json, Value};
use support::{b64, request, tpm_auth_tag, Env};
use vigil_testkit::keylime::KeylimeEnv;
use vigil_testkit::Swtpm;

const TPM_TOOLS: &[&str] = &["tpm2_createek", "tpm2_createak", "tpm2_activatecredential"];

/// Agent ids: the tenant wants UUIDs.
const AGENT: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0aa01";
const AGENT_BAD_TAG: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c0aa02";

fn registration(tpm: &Swtpm) -> Value {
    let read = |f: &str| std::fs::read(tpm.path(f)).expect("tpm2-tools output");
    json!({
        "ek_tpm": b64(&read("ek.pub")),
        "aik_tpm": b64(&read("ak.pub")),
        "ip": "127.0.0.1",
        "port": 9002,
        "mtls_cert": "disabled",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_reads_vigil_registrar() {
    let Some(keylime) = KeylimeEnv::new("tenant_reads_vigil_registrar") else {
        return;
    };
    let Some(tpm) = Swtpm::start("tenant_reads_vigil_registrar", TPM_TOOLS) else {
        return;
    };
    vigil_testkit::db::with_sqlite(|db| async move {
        let env = Env::start_with_ca(&db, Some(keylime.ca().clone()), |_| {}).await;
        support::make_ek_ak(&tpm, "rsa");
        let reg = registration(&tpm);
        let path = format!("/v2.6/agents/{AGENT}");
        let (code, reply) = env
            .http("POST", &path, Some(serde_json::to_vec(&reg).unwrap()))
            .await;
        assert_eq!(code, 200, "{reply}");
        let tag = tpm_auth_tag(&tpm, reply["results"]["blob"].as_str().unwrap(), AGENT);
        let (code, reply) = env
            .http(
                "PUT",
                &path,
                Some(serde_json::to_vec(&json!({"auth_tag": tag})).unwrap()),
            )
            .await;
        assert_eq!(code, 200, "{reply}");

        let tls_port = env.https_addr().port();
        // No verifier is involved in these commands; the port only has to be valid.
        let tenant =
            |args: &[&str]| tokio::task::block_in_place(|| keylime.tenant(tls_port, 1, args));

        let run = tenant(&["-c", "regstatus", "-u", AGENT]);
        assert!(run.success, "regstatus failed:\n{}", run.log);
        let status = run.response().expect("regstatus response");
        assert_eq!(status["code"], 200, "{status}");
        let seen = &status["results"][AGENT];
        for field in ["ek_tpm", "aik_tpm", "ip", "port", "mtls_cert"] {
            assert_eq!(seen[field], reg[field], "{field} as the tenant sees it");
        }
        assert_eq!(seen["regcount"], 1);
        assert_eq!(seen["ekcert"], Value::Null);
        assert_eq!(seen["operational_state"], "Registered");

        let run = tenant(&["-c", "reglist"]);
        assert!(run.success, "reglist failed:\n{}", run.log);
        let list = run.response().expect("reglist response");
        assert_eq!(list["results"]["uuids"], json!([AGENT]), "{list}");

        let run = tenant(&["-c", "regdelete", "-u", AGENT]);
        assert!(run.success, "regdelete failed:\n{}", run.log);
        let (code, _) = env.admin("GET", &path).await;
        assert_eq!(code, 404, "the tenant's regdelete removed the record");

        let run = tenant(&["-c", "regstatus", "-u", AGENT]);
        assert!(!run.success, "regstatus of a deleted agent must fail");
        assert_eq!(run.response().expect("regstatus response")["code"], 404);
        env.stop().await;
    })
    .await;
}

/// One registrar under test: its two ports.
struct Target {
    name: &'static str,
    http: SocketAddr,
    https: SocketAddr,
}

/// One step's outcome: status code, `status` text, the `results` keys (the shape),
/// and `results` itself.
#[derive(Debug)]
struct Outcome {
    code: u16,
    status: String,
    keys: Vec<String>,
    results: Value,
}

impl Target {
    async fn call(
        &self,
        env: &Env,
        admin: bool,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Outcome {
        let (addr, tls) = if admin {
            (self.https, Some(env.client_tls(Some("client"))))
        } else {
            (self.http, None)
        };
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let (code, v) = request(addr, tls, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name));
        let results = v["results"].clone();
        let mut keys: Vec<String> = results
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(
            v["code"], code,
            "{}: envelope code of {method} {path}: {v}",
            self.name
        );
        Outcome {
            code,
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            keys,
            results,
        }
    }
}

/// Runs `step` on both registrars and checks the code and the shape match; returns
/// (Keylime's, Vigil's).
async fn both<'a, F, Fut>(targets: &'a [Target; 2], step: &str, f: F) -> (Outcome, Outcome)
where
    F: Fn(&'a Target) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let k = f(&targets[0]).await;
    let v = f(&targets[1]).await;
    assert_eq!(
        k.code, v.code,
        "{step}: status code (Keylime {k:?}, Vigil {v:?})"
    );
    assert_eq!(
        k.keys, v.keys,
        "{step}: results shape (Keylime {k:?}, Vigil {v:?})"
    );
    (k, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_differential() {
    let Some(keylime) = KeylimeEnv::new("registrar_differential") else {
        return;
    };
    let Some(tpm) = Swtpm::start("registrar_differential", TPM_TOOLS) else {
        return;
    };
    let kl_registrar = tokio::task::block_in_place(|| {
        keylime.registrar(&[("KEYLIME_REGISTRAR_MALFORMED_CERT_ACTION", "warn")])
    });
    vigil_testkit::db::with_sqlite(|db| async move {
        let owned = Env::start_with_ca(&db, Some(keylime.ca().clone()), |_| {}).await;
        let env = &owned;
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let targets = [
            Target {
                name: "keylime",
                http: local(kl_registrar.port()),
                https: local(kl_registrar.tls_port()),
            },
            Target {
                name: "vigil",
                http: env.http_addr(),
                https: env.https_addr(),
            },
        ];
        support::make_ek_ak(&tpm, "rsa");
        let reg = registration(&tpm);
        let agent = format!("/v2.6/agents/{AGENT}");

        let (k, v) = both(&targets, "version", |t| {
            t.call(env, false, "GET", "/version", None)
        })
        .await;
        assert_eq!(k.results["current_version"], v.results["current_version"]);

        // Register: 200 with a blob each (different: the challenge is random).
        let (k, v) = both(&targets, "register", |t| {
            t.call(env, false, "POST", &agent, Some(reg.clone()))
        })
        .await;
        assert_eq!((k.code, k.status.as_str()), (200, "Success"));
        assert_eq!(v.status, k.status);
        let blobs = [k.results["blob"].clone(), v.results["blob"].clone()];

        // Not activated yet: 404 on both.
        let (k, v) = both(&targets, "get before activation", |t| {
            t.call(env, true, "GET", &agent, None)
        })
        .await;
        assert_eq!(k.code, 404, "{k:?}");
        assert_eq!(v.status, k.status);

        // Activate with the TPM's answer to each registrar's own blob.
        for (t, blob) in targets.iter().zip(&blobs) {
            let tag = tpm_auth_tag(&tpm, blob.as_str().unwrap(), AGENT);
            let o = t
                .call(env, false, "PUT", &agent, Some(json!({"auth_tag": tag})))
                .await;
            assert_eq!(
                (o.code, o.status.as_str()),
                (200, "Success"),
                "{}: {o:?}",
                t.name
            );
        }

        // Show: the same record, field for field.
        let (k, v) = both(&targets, "get after activation", |t| {
            t.call(env, true, "GET", &agent, None)
        })
        .await;
        assert_eq!(k.code, 200, "{k:?}");
        assert_eq!(
            k.results, v.results,
            "the record as each registrar renders it"
        );

        // Re-registration with another EK: 403, Keylime's text.
        support::make_ek_ak(&tpm, "ecc");
        let mut other = reg.clone();
        other["ek_tpm"] = json!(b64(&std::fs::read(tpm.path("ek.pub")).unwrap()));
        let (k, v) = both(&targets, "identity change", |t| {
            t.call(env, false, "POST", &agent, Some(other.clone()))
        })
        .await;
        assert_eq!(k.code, 403, "{k:?}");
        assert_eq!(v.status, k.status);

        // A wrong auth tag: 400 and the record is gone.
        let bad = format!("/v2.6/agents/{AGENT_BAD_TAG}");
        both(&targets, "register second agent", |t| {
            t.call(env, false, "POST", &bad, Some(reg.clone()))
        })
        .await;
        let (k, v) = both(&targets, "bad auth tag", |t| {
            t.call(
                env,
                false,
                "PUT",
                &bad,
                Some(json!({"auth_tag": "00".repeat(48)})),
            )
        })
        .await;
        assert_eq!(k.code, 400, "{k:?}");
        assert_eq!(v.status, k.status);
        let (k, _) = both(&targets, "get after bad tag", |t| {
            t.call(env, true, "GET", &bad, None)
        })
        .await;
        assert_eq!(k.code, 404, "{k:?}");

        // Missing AK: 400 on both (the texts differ: Vigil names the field).
        let (k, _) = both(&targets, "missing aik_tpm", |t| {
            t.call(
                env,
                false,
                "POST",
                "/v2.6/agents/no-ak",
                Some(json!({"ek_tpm": reg["ek_tpm"]})),
            )
        })
        .await;
        assert_eq!(k.code, 400, "{k:?}");

        // List and delete; unknown agent.
        let (k, v) = both(&targets, "list", |t| {
            t.call(env, true, "GET", "/v2.6/agents/", None)
        })
        .await;
        assert_eq!(k.results, v.results);
        assert_eq!(k.results["uuids"], json!([AGENT]));
        let (k, _) = both(&targets, "delete", |t| {
            t.call(env, true, "DELETE", &agent, None)
        })
        .await;
        assert_eq!(k.code, 200, "{k:?}");
        let (k, v) = both(&targets, "delete unknown", |t| {
            t.call(env, true, "DELETE", &agent, None)
        })
        .await;
        assert_eq!(k.code, 404, "{k:?}");
        assert_eq!(v.status, k.status);
        drop(kl_registrar);
        owned.stop().await;
    })
    .await;
}
