//! Figures for docs/benchmarks.md, not tests: every one is `#[ignore]` and prints what
//! it measured, asserting nothing about time. Both need swtpm.
//!
//! ```sh
//! cargo test --release -p vigil-verifier --test it figures:: -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `detection_latency`: the verifier in-process on SQLite with `quote_interval` 2 s,
//!   attesting a test agent on swtpm. A measured file changes (the agent appends the
//!   new ima-ng entry and extends PCR 10 at once) at a pseudo-random moment of the
//!   polling cycle; the figure is the time from that change until `GET agents/{id}`
//!   shows Invalid Quote (polled every 10 ms).
//! - `round_cpu_10k`: the CPU the verifier spends judging one round whose incremental
//!   IMA batch holds 10,000 new ima-ng entries (`vigil_core::attestation::evaluate_round`: parse the answer's
//!   quote, verify the RSA signature, nonce and PCR digest, replay the 10k entries
//!   from the stored running PCR 10 and check each against a 10,010-path runtime
//!   policy). The answer is a real swtpm quote over the extended PCR 10. Fetching,
//!   the HTTP/TLS exchange and the store write are not included.
//! - `answer_memory`: the memory the verifier spends judging one hostile answer of
//!   25 MB and 250 MB — a genuine swtpm quote whose `ima_measurement_list` carries that
//!   much of well-formed ima-ng lines for files no policy allows (every one a failure,
//!   the PCR no longer matching): peak RSS above the body while the answer is parsed
//!   and judged (`/proc/self/clear_refs` resets the peak), and resident RSS after the
//!   round, once everything is dropped. The body itself, which the HTTP read holds
//!   (preallocated to its length), is not counted in the peak.
//! - `gate_latency`: the trust gate (`GET /vigil/v1/trust/{id}`, over mTLS, with its
//!   EAR token signed) for one node with fresh evidence (answered from the store) and
//!   with stale evidence (`max_age=0`: a round now — quote over HTTPS from a test agent
//!   on swtpm, judged, recorded), 20 samples each; then 100 nodes at once, each stale
//!   (100 concurrent requests, each forcing a round), the nodes served by 10 test
//!   agents on 10 swtpms (10 node ids per agent). The verifier runs in-process on
//!   SQLite with `quote_interval` 3600 s, so only the gate makes rounds happen.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{wait_for, Pki, TestAgent};
use vigil_core::attestation::{
    evaluate_round, Action, AttestationConfig, NodeAnswer, NodeAttestation, RoundPolicy, UnixTime,
};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::policy::tpm::TpmPolicy;
use vigil_core::tpm::quote::{AkPublicKey, QuoteVerifier};

/// Median and maximum of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a figure, not a test: run it explicitly (see the file's docs)"]
async fn detection_latency() {
    const SAMPLES: usize = 10;
    let pki = Pki::new();
    let Some(agent) =
        TestAgent::new("verifier_figure_latency", &pki.tls_dir().join("cacert.crt")).await
    else {
        return;
    };
    agent.measure("/usr/bin/a", b"a v1");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let mut config = pki.config(&db);
    config.quote_interval = 2.0;
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), pki.client(true));
    // xorshift64 for the moment of each change within the 2 s cycle.
    let mut seed: u64 = 0x1a7e_0c1e;
    let mut contents: Vec<Vec<u8>> = vec![b"a v1".to_vec()];
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        // A fresh node whose policy allows every version of the file seen so far.
        let id = format!("d{i}");
        let allowed: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|c| ("/usr/bin/a", c.as_slice()))
            .collect();
        let (code, r) = c
            .call(
                a,
                "POST",
                &format!("/v2.6/agents/{id}"),
                Some(agent.enrolment(&TestAgent::policy_b64(&allowed))),
            )
            .await;
        assert_eq!(code, 200, "{r}");
        let path = format!("/v2.6/agents/{id}");
        wait_for(30, "attested", || async {
            let s = c.call(a, "GET", &path, None).await.1["results"].clone();
            (s["attestation_count"].as_u64() >= Some(1)).then_some(())
        })
        .await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 2000)).await;
        let changed = format!("a tampered {i}").into_bytes();
        let t0 = Instant::now();
        agent.measure("/usr/bin/a", &changed);
        loop {
            let s = c.call(a, "GET", &path, None).await.1["results"].clone();
            if s["operational_state"] == 9 {
                assert_eq!(
                    s["last_event_id"], "ima.validation.ima-ng.runtime_policy_hash",
                    "{s}"
                );
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "never detected: {s}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = t0.elapsed();
        eprintln!("sample {i}: {:.0} ms", took.as_secs_f64() * 1e3);
        samples.push(took);
        contents.push(changed);
        assert_eq!(c.call(a, "DELETE", &path, None).await.0, 200);
    }
    let (median, max) = summary(&mut samples);
    let min = samples[0];
    println!(
        "detection latency, quote_interval 2 s, {SAMPLES} samples: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    v.shutdown().await;
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`, in clock
/// ticks of 10 ms.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a figure, not a test: run it explicitly (see the file's docs)"]
async fn round_cpu_10k() {
    const BEFORE: usize = 10;
    const BATCH: usize = 10_000;
    const RUNS: usize = 30;
    let pki = Pki::new();
    let Some(agent) =
        TestAgent::new("verifier_figure_round", &pki.tls_dir().join("cacert.crt")).await
    else {
        return;
    };
    let files: Vec<(String, Vec<u8>)> = (0..BEFORE + BATCH)
        .map(|i| {
            (
                format!("/usr/lib/x86_64-linux-gnu/lib{}/file_{i:06}.so", i % 97),
                format!("content-{i}").into_bytes(),
            )
        })
        .collect();
    let allowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    let policy =
        RuntimePolicy::from_json(TestAgent::policy(&allowed).to_string().as_bytes()).unwrap();
    let verifier = QuoteVerifier::new(AkPublicKey::from_spki_or_tpm2b(&agent.ak_tpm).unwrap());
    let tpm_policy = TpmPolicy::from_json("{\"mask\": \"0x400\"}").unwrap();
    let algs = (
        vec!["sha256".to_owned()],
        vec!["rsa".to_owned()],
        vec!["rsassa".to_owned()],
    );
    let judge = |nonce| RoundPolicy {
        verifier: &verifier,
        nonce,
        accept_hash_algs: Some(&algs.0),
        accept_enc_algs: Some(&algs.1),
        accept_sign_algs: Some(&algs.2),
        bind_public_key: true,
        requested_pcrs: 0x400,
        tpm_policy: &tpm_policy,
        runtime_policy: Some(&policy),
        measured_boot: None,
        ignore_tomtou_errors: false,
        golden: None,
    };

    // The node attested the first entries: its stored state is at entry BEFORE.
    for (p, c) in &allowed[..BEFORE] {
        agent.measure(p, c);
    }
    let t = UnixTime::from_secs(1_800_000_000);
    let mut node = NodeAttestation::new(Arc::new(AttestationConfig::default()), false);
    node.start(t).unwrap();
    let Some(Action::GetQuote { id, .. }) = node.poll_action(t) else {
        panic!("the node asks for a quote first");
    };
    let answer =
        NodeAnswer::parse(&agent.integrity_answer("first-nonce", 0x400, false, 0)).unwrap();
    let outcome = evaluate_round(
        &node,
        &answer.as_quote_answer(),
        &judge(b"first-nonce"),
        &mut ImaKeyrings::new(),
    );
    assert!(outcome.failure.is_empty(), "{:?}", outcome.failure);
    node.quote_received(t, id, outcome).unwrap();
    assert_eq!(node.ima_state().next_entry, BEFORE as u64);

    // 10,000 new entries, extended into the swtpm's PCR 10, then one partial answer.
    for (p, c) in &allowed[BEFORE..] {
        agent.measure(p, c);
    }
    let nonce = "second-nonce";
    let body = agent.integrity_answer(nonce, 0x400, true, BEFORE as u64);
    let mut wall = Vec::new();
    let ticks = thread_cpu_ticks();
    for _ in 0..RUNS {
        let start = Instant::now();
        let answer = NodeAnswer::parse(&body).unwrap();
        let outcome = evaluate_round(
            &node,
            &answer.as_quote_answer(),
            &judge(nonce.as_bytes()),
            &mut ImaKeyrings::new(),
        );
        wall.push(start.elapsed());
        assert!(outcome.failure.is_empty(), "{:?}", outcome.failure);
        assert_eq!(
            outcome.ima.as_ref().map(|(s, _)| s.next_entry),
            Some((BEFORE + BATCH) as u64)
        );
    }
    let cpu_ms = (thread_cpu_ticks() - ticks) as f64 * 10.0 / RUNS as f64;
    let (median, max) = summary(&mut wall);
    println!(
        "round with a {BATCH}-entry incremental IMA batch, {RUNS} runs: wall median {:.1} ms (min {:.1}, max {:.1}); thread CPU {cpu_ms:.1} ms per round",
        median.as_secs_f64() * 1e3,
        wall[0].as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss_and_peak_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap()
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a figure, not a test: run it explicitly (see the file's docs)"]
async fn answer_memory() {
    let pki = Pki::new();
    let Some(agent) =
        TestAgent::new("verifier_figure_memory", &pki.tls_dir().join("cacert.crt")).await
    else {
        return;
    };
    agent.measure("/usr/bin/a", b"a");
    let policy = RuntimePolicy::from_json(
        TestAgent::policy(&[("/usr/bin/a", b"a")])
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let verifier = QuoteVerifier::new(AkPublicKey::from_spki_or_tpm2b(&agent.ak_tpm).unwrap());
    let tpm_policy = TpmPolicy::from_json("{\"mask\": \"0x400\"}").unwrap();
    let algs = (
        vec!["sha256".to_owned()],
        vec!["rsa".to_owned()],
        vec!["rsassa".to_owned()],
    );
    let nonce = "memory-nonce";
    let genuine: serde_json::Value =
        serde_json::from_slice(&agent.integrity_answer(nonce, 0x400, false, 0)).unwrap();
    for mb in [25usize, 250] {
        let mut answer = genuine.clone();
        let mut list = answer["results"]["ima_measurement_list"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut i = 0u64;
        while list.len() < mb << 20 {
            list.push_str(&format!(
                "10 {:040x} ima-ng sha256:{:064x} /usr/lib/hostile/file-{i:09}.so\n",
                i, i
            ));
            i += 1;
        }
        answer["results"]["ima_measurement_list"] = serde_json::Value::String(list);
        let body = serde_json::to_vec(&answer).unwrap();
        drop(answer);
        let node = NodeAttestation::new(Arc::new(AttestationConfig::default()), false);
        let (before, _) = rss_and_peak_mib();
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let start = Instant::now();
        let parsed = NodeAnswer::parse(&body).unwrap();
        let outcome = evaluate_round(
            &node,
            &parsed.as_quote_answer(),
            &RoundPolicy {
                verifier: &verifier,
                nonce: nonce.as_bytes(),
                accept_hash_algs: Some(&algs.0),
                accept_enc_algs: Some(&algs.1),
                accept_sign_algs: Some(&algs.2),
                bind_public_key: true,
                requested_pcrs: 0x400,
                tpm_policy: &tpm_policy,
                runtime_policy: Some(&policy),
                measured_boot: None,
                ignore_tomtou_errors: false,
                golden: None,
            },
            &mut ImaKeyrings::new(),
        );
        let elapsed = start.elapsed();
        let (_, peak) = rss_and_peak_mib();
        assert!(!outcome.failure.is_empty(), "a hostile answer fails");
        let events = outcome.failure.events().len();
        drop((parsed, outcome));
        let body_mib = body.len() as f64 / 1048576.0;
        drop(body);
        let (after, _) = rss_and_peak_mib();
        println!(
            "answer {body_mib:.0} MiB ({i} extra entries): judged in {:.2} s, {events} failure events kept; RSS before {before:.0} MiB (body included), peak {peak:.0} MiB = {:.1}x the body above it; resident after the round {after:.0} MiB",
            elapsed.as_secs_f64(),
            (peak - before) / body_mib,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a figure, not a test: run it explicitly (see the file's docs)"]
async fn gate_latency() {
    const SAMPLES: usize = 20;
    const AGENTS: usize = 10;
    const NODES: usize = 100;
    let pki = Pki::new();
    let ca = pki.tls_dir().join("cacert.crt");
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let Some(agent) = TestAgent::new(&format!("verifier_figure_gate_{i}"), &ca).await else {
            return;
        };
        agents.push(agent);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let mut config = pki.config(&db);
    config.quote_interval = 3600.0;
    let v = support::start(&config).await;
    let (a, c) = (v.addr(), Arc::new(pki.client(true)));
    for n in 0..NODES {
        let agent = &agents[n % AGENTS];
        let (code, r) = c
            .call(
                a,
                "POST",
                &format!("/v2.6/agents/g{n}"),
                Some(agent.enrolment("")),
            )
            .await;
        assert_eq!(code, 200, "{r}");
    }
    for n in 0..NODES {
        let path = format!("/v2.6/agents/g{n}");
        wait_for(60, "attested", || async {
            let s = c.call(a, "GET", &path, None).await.1["results"].clone();
            (s["attestation_count"].as_u64() >= Some(1)).then_some(())
        })
        .await;
    }
    let gate = |c: Arc<support::Client>, id: String, max_age: u64| async move {
        let t0 = Instant::now();
        let (code, r) = c
            .call(
                a,
                "GET",
                &format!("/vigil/v1/trust/{id}?max_age={max_age}&timeout=60"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["results"]["trusted"], true, "{r}");
        (t0.elapsed(), r["results"]["attested_now"] == true)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (label, max_age, now) in [("fresh", 3600, false), ("stale", 0, true)] {
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            let (took, attested_now) = gate(c.clone(), "g0".into(), max_age).await;
            assert_eq!(attested_now, now);
            samples.push(took);
        }
        let (median, max) = summary(&mut samples);
        println!(
            "gate, one node, {label}: {SAMPLES} samples: min {:.1} ms, median {:.1} ms, max {:.1} ms",
            ms(samples[0]),
            ms(median),
            ms(max)
        );
    }
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..NODES {
        tasks.spawn(gate(c.clone(), format!("g{n}"), 0));
    }
    let mut samples = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (took, attested_now) = done.unwrap();
        assert!(attested_now);
        samples.push(took);
    }
    let wall = t0.elapsed();
    let (median, max) = summary(&mut samples);
    println!(
        "gate, {NODES} stale nodes at once ({AGENTS} swtpm agents): all answered in {:.0} ms; per request median {:.0} ms, max {:.0} ms",
        ms(wall),
        ms(median),
        ms(max)
    );
    v.shutdown().await;
}
