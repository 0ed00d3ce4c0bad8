//! Integrity events end to end, on swtpm and both databases: a node's verdict changes
//! reach the JSON-lines file and NATS JetStream exactly once per round, and none is
//! lost when the verifier is SIGKILLed while delivering them (a redelivery carries the
//! same uuid). NATS must run on 127.0.0.1:4222 with JetStream; without it (or swtpm)
//! the tests skip with a note, except under `CI`.

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{wait_for, Pki, TestAgent};

pub(crate) const NATS: &str = "nats://127.0.0.1:4222";
const FILES: [(&str, &[u8]); 2] = [("/usr/bin/a", b"a v1"), ("/usr/bin/b", b"b v1")];

/// A JetStream context, or `None` after skipping `test`.
pub(crate) async fn jetstream(test: &str) -> Option<async_nats::jetstream::Context> {
    match async_nats::connect(NATS).await {
        Ok(c) => Some(async_nats::jetstream::new(c)),
        Err(e) => {
            vigil_testkit::skip(
                test,
                &format!("no NATS server at {NATS} ({e}); start nats-server -js"),
            );
            None
        }
    }
}

/// A subject prefix and stream name no other test run uses.
pub(crate) fn unique(test: &str) -> (String, String) {
    let n = format!("{}{}", std::process::id(), rand_suffix());
    (
        format!("vigiltest.{test}.{n}"),
        format!("VIGILTEST_{}_{n}", test.to_uppercase()),
    )
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::from(t.subsec_nanos())
}

/// Every message of `stream` as JSON, in order (none if the stream is not there yet).
pub(crate) async fn nats_events(js: &async_nats::jetstream::Context, stream: &str) -> Vec<Value> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&m.payload).unwrap());
        }
    }
    out
}

/// Every line of the events file as JSON.
pub(crate) fn file_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn uuids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["uuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn events_reach_file_and_nats_once_per_round(db: String) {
    let test = "verifier_events_once";
    let Some(js) = jetstream(test).await else {
        return;
    };
    let pki = Pki::new();
    let Some(agent) = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await else {
        return;
    };
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    let (prefix, stream) = unique("once");
    let config = vigil_verifier::Config {
        event_sinks: vec!["file".into(), "nats".into()],
        event_nats_subject_prefix: prefix.clone(),
        event_nats_stream: stream.clone(),
        ..pki.config(&db)
    };
    let v = support::start(&config).await;
    let (code, r) = pki
        .client(true)
        .call(
            v.addr(),
            "POST",
            "/v2.6/agents/n1",
            Some(agent.enrolment(&TestAgent::policy_b64(&FILES))),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let file = pki.dir.path().join("events.jsonl");
    // The first verdict makes an event; the rounds after it, passing too, make none.
    wait_for(30, "the first event", || async {
        (!file_events(&file).is_empty()).then_some(())
    })
    .await;
    agent.measure("/usr/bin/a", b"a tampered");
    let events = wait_for(30, "the failure event on NATS", || async {
        let on_nats = nats_events(&js, &stream).await;
        (on_nats.len() >= 2).then_some(on_nats)
    })
    .await;
    // A few more (failing) rounds: no more events.
    tokio::time::sleep(Duration::from_millis(900)).await;
    v.shutdown().await;
    let in_file = file_events(&file);
    let on_nats = nats_events(&js, &stream).await;
    assert_eq!(uuids(&in_file), uuids(&on_nats), "{in_file:?}");
    assert_eq!(in_file.len(), 2, "{in_file:?}");
    assert_eq!(uuids(&events), uuids(&on_nats));
    let (pass, fail) = (&in_file[0], &in_file[1]);
    assert_eq!(
        (
            pass["kind"].as_str(),
            pass["policy_evaluation_passed"].as_bool()
        ),
        (Some("runtime"), Some(true))
    );
    assert_eq!(fail["node_id"], "n1");
    assert_eq!(fail["kind"], "runtime");
    assert_eq!(fail["policy_evaluation_passed"], false);
    assert_eq!(
        fail["failures"][0]["id"],
        "ima.validation.ima-ng.runtime_policy_hash"
    );
    assert_eq!(fail["failures"][0]["file"], "/usr/bin/a");
    let d = &fail["differences"][0];
    assert_eq!(
        (d["type"].as_str(), d["file"].as_str()),
        (Some("file"), Some("/usr/bin/a"))
    );
    assert_eq!(
        d["measured"],
        vigil_core::HashAlg::Sha256.hash(b"a tampered").to_hex()
    );
    assert_eq!(
        d["expected"][0],
        vigil_core::HashAlg::Sha256.hash(b"a v1").to_hex()
    );
    let _ = js.delete_stream(&stream).await;
}

async fn sigkill_mid_delivery_loses_no_event(db: String) {
    let test = "verifier_events_sigkill";
    let Some(js) = jetstream(test).await else {
        return;
    };
    let pki = Pki::new();
    let Some(agent) = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await else {
        return;
    };
    for (p, c) in FILES {
        agent.measure(p, c);
    }
    let (prefix, stream) = unique("kill");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let spawn = |run: u32| {
        let log =
            std::fs::File::create(pki.dir.path().join(format!("verifier-{run}.log"))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_vigil-verifier"))
            .arg("--database")
            .arg(&db)
            .env("VIGIL_VERIFIER_STATE_DIR", pki.dir.path())
            .env("VIGIL_VERIFIER_PORT", port.to_string())
            .env("VIGIL_VERIFIER_QUOTE_INTERVAL", "0.2")
            .env("VIGIL_VERIFIER_RETRY_INTERVAL", "0.2")
            // The same replica restarted: it takes back the rows it had leased at once.
            .env("VIGIL_VERIFIER_REPLICA_ID", "events-kill")
            .env("VIGIL_VERIFIER_EVENT_SINKS", "file,nats")
            .env("VIGIL_VERIFIER_EVENT_NATS_SUBJECT_PREFIX", &prefix)
            .env("VIGIL_VERIFIER_EVENT_NATS_STREAM", &stream)
            .env_remove("RUST_LOG")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("vigil-verifier starts")
    };
    let mut p = spawn(0);
    wait_for(20, "the verifier listening", || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    let (code, r) = pki
        .client(true)
        .call(
            addr,
            "POST",
            "/v2.6/agents/n1",
            Some(agent.enrolment(&TestAgent::policy_b64(&FILES))),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let file = pki.dir.path().join("events.jsonl");
    wait_for(30, "the first event", || async {
        (!file_events(&file).is_empty()).then_some(())
    })
    .await;
    // The failing round's event is being delivered when the verifier dies.
    agent.measure("/usr/bin/a", b"a tampered");
    wait_for(30, "the failure event queued or delivered", || async {
        (file_events(&file).len() >= 2).then_some(())
    })
    .await;
    let _ = p.kill();
    let _ = p.wait();
    let mut p = spawn(1);
    // Every event reaches both sinks; a redelivery repeats a uuid, never a new one.
    let store = vigil_store::Store::open(&db).await.unwrap();
    wait_for(30, "the outbox drained", || async {
        (store.outbox().pending().await.ok()? == 0).then_some(())
    })
    .await;
    let _ = p.kill();
    let _ = p.wait();
    store.close().await;
    let in_file = file_events(&file);
    let on_nats = nats_events(&js, &stream).await;
    let file_set: BTreeSet<String> = uuids(&in_file).into_iter().collect();
    let nats_list = uuids(&on_nats);
    let nats_set: BTreeSet<String> = nats_list.iter().cloned().collect();
    assert_eq!(file_set, nats_set, "file {in_file:?}\nnats {on_nats:?}");
    assert_eq!(
        nats_list.len(),
        nats_set.len(),
        "JetStream de-duplicated by Nats-Msg-Id"
    );
    assert!(
        in_file
            .iter()
            .any(|e| e["policy_evaluation_passed"] == false),
        "{in_file:?}"
    );
    for e in &in_file {
        let same: Vec<_> = in_file.iter().filter(|o| o["uuid"] == e["uuid"]).collect();
        assert!(
            same.iter().all(|o| *o == e),
            "a duplicate is the same event: {same:?}"
        );
    }
    let _ = js.delete_stream(&stream).await;
}

on_both_backends!(
    events_reach_file_and_nats_once_per_round,
    sigkill_mid_delivery_loses_no_event,
);

// ---------------------------------------------------------------------------------
// Figures for docs/benchmarks.md, not tests (ignored; they print what they measured):
//
//   cargo test -p vigil-verifier --test it events::figure_ -- --ignored --nocapture --test-threads 1

/// Latency from a round whose verdict changed to its event arriving on NATS: a node
/// on swtpm alternates between a quote whose signature does not verify and a genuine
/// one (reactivated), so every round judged makes an event; the figure is each event's
/// arrival at a NATS subscriber minus the event's own time (stamped when its round was
/// recorded), over 120 events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a figure, not a test: run it explicitly (see above)"]
async fn figure_event_latency() {
    use support::Tamper;
    let test = "verifier_figure_event_latency";
    let Some(js) = jetstream(test).await else {
        return;
    };
    let pki = Pki::new();
    let Some(agent) = TestAgent::new(test, &pki.tls_dir().join("cacert.crt")).await else {
        return;
    };
    agent.measure("/usr/bin/a", b"a");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let (prefix, stream) = unique("latency");
    let config = vigil_verifier::Config {
        event_sinks: vec!["nats".into()],
        event_nats_subject_prefix: prefix.clone(),
        event_nats_stream: stream.clone(),
        quote_interval: 0.05,
        ..pki.config(&db)
    };
    let client = async_nats::connect(NATS).await.unwrap();
    let mut sub = client.subscribe(format!("{prefix}.>")).await.unwrap();
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(true));
    let files = [("/usr/bin/a", b"a".as_slice())];
    let (code, _) = c
        .call(
            a,
            "POST",
            "/v2.6/agents/n1",
            Some(agent.enrolment(&TestAgent::policy_b64(&files))),
        )
        .await;
    assert_eq!(code, 200);
    const EVENTS: usize = 120;
    let mut samples = Vec::with_capacity(EVENTS);
    let mut failing = false;
    while samples.len() < EVENTS {
        let msg = tokio::time::timeout(Duration::from_secs(30), futures_next(&mut sub))
            .await
            .expect("an event within 30 s");
        let arrived = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let e: Value = serde_json::from_slice(&msg.payload).unwrap();
        let made = u128::from(e["time_ms"].as_u64().unwrap()) * 1000;
        samples.push(Duration::from_micros(
            u64::try_from(arrived.saturating_sub(made)).unwrap(),
        ));
        // Flip the node: a bad signature fails it; genuine again, reactivated, it passes.
        failing = !failing;
        if failing {
            agent.set_tamper(Tamper::QuoteSignature);
        } else {
            agent.set_tamper(Tamper::None);
            c.call(a, "PUT", "/v2.6/agents/n1/reactivate", None).await;
        }
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    eprintln!(
        "FIGURE event latency round -> NATS over {} events: median {:?}, p99 {:?}, max {:?}",
        samples.len(),
        p(0.5),
        p(0.99),
        samples[samples.len() - 1]
    );
    v.shutdown().await;
    let _ = js.delete_stream(&stream).await;
}

/// The next message of a subscription.
async fn futures_next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures_core::Stream;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *sub).poll_next(cx))
        .await
        .expect("the subscription goes on")
}

/// Outbox throughput: 1,000 events queued while NATS is unreachable (the sink points at
/// a forwarder that is not listening yet), then NATS comes back (the forwarder starts):
/// the time from then until the outbox is empty, and from the first delivery to the
/// last. The verifier in-process on SQLite, one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a figure, not a test: run it explicitly (see above)"]
async fn figure_outbox_throughput() {
    let test = "verifier_figure_outbox";
    let Some(js) = jetstream(test).await else {
        return;
    };
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let (prefix, stream) = unique("outbox");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = vigil_verifier::Config {
        event_sinks: vec!["nats".into()],
        event_nats_url: format!("nats://127.0.0.1:{port}"),
        event_nats_subject_prefix: prefix.clone(),
        event_nats_stream: stream.clone(),
        ..pki.config(&db)
    };
    let v = support::start(&config).await;
    const EVENTS: usize = 1000;
    let store = vigil_store::Store::open(&db).await.unwrap();
    let rows: Vec<vigil_store::NewEvent> = (0..EVENTS)
        .map(|i| {
            let uuid = format!("00000000-0000-4000-8000-{i:012}");
            vigil_store::NewEvent {
                uuid: uuid.clone(),
                agent_id: format!("n{}", i % 10),
                event: serde_json::json!({"uuid": uuid, "kind": "runtime"}).to_string(),
                sinks: vec!["nats".into()],
            }
        })
        .collect();
    store.outbox().enqueue(&rows, 0).await.unwrap();
    // NATS "down": every attempt fails for a while (backoff grows).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(store.outbox().pending().await.unwrap(), EVENTS as u64);
    let back = std::time::Instant::now();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect("127.0.0.1:4222").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    let mut first = None;
    loop {
        let left = store.outbox().pending().await.unwrap();
        if first.is_none() && left < EVENTS as u64 {
            first = Some(back.elapsed());
        }
        if left == 0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(300),
            "not drained: {left} left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = back.elapsed();
    let first = first.unwrap_or_default();
    let on_nats = nats_events(&js, &stream).await.len();
    eprintln!(
        "FIGURE outbox: {EVENTS} queued while NATS was down; NATS back -> first delivery {first:?}, \
         all delivered {drained:?} ({:.0} events/s from the first delivery); {on_nats} on the stream",
        EVENTS as f64 / (drained - first).as_secs_f64()
    );
    store.close().await;
    v.shutdown().await;
    let _ = js.delete_stream(&stream).await;
}
