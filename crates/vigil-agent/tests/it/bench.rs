//! Figures for docs/benchmarks.md (ignored by default; run with
//! `cargo test -p vigil-agent --test it bench:: -- --ignored --nocapture`): quote latency on
//! swtpm, serving `ima_ml_entry=N` from a 100k-entry list, and the agent's RSS at idle.

use std::time::{Duration, Instant};

use vigil_agent::ima::ImaLog;
use vigil_agent::{Agent, Config};
use vigil_testkit::Swtpm;

fn line(i: u64) -> String {
    format!(
        "10 {:040x} ima-ng sha256:{:064x} /usr/lib/x86_64-linux-gnu/lib{i}.so.1\n",
        i + 1,
        i
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark"]
fn ima_ml_entry_from_100k() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m");
    let text: String = (0..100_000).map(line).collect();
    std::fs::write(&p, &text).unwrap();
    println!("log: 100000 entries, {} bytes", text.len());
    for n in [0u64, 50_000, 99_990] {
        let log = ImaLog::new(&p);
        let t = Instant::now();
        let s = log.read_from(n).unwrap();
        let cold = t.elapsed();
        assert_eq!(s.start, n);
        // The verifier's next poll asks for the entry after the last one it saw.
        let t = Instant::now();
        let s2 = log.read_from(s.entries).unwrap();
        let warm = t.elapsed();
        assert_eq!(s2.text, "");
        let warm_n: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                log.read_from(n).unwrap();
                t.elapsed()
            })
            .collect();
        println!(
            "ima_ml_entry={n}: first {cold:?}, cached same N {:?}, next N (end) {warm:?}",
            median(warm_n)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn quote_latency_and_idle_rss() {
    let Some(tpm) = Swtpm::manufactured("agent_bench", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = vigil_tls::ca::init(&dir.path().join("cv_ca"), &[], false).unwrap();
    // 10k files measured by the emulator: a 10k-entry IMA list behind PCR 10.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..10_000 {
        std::fs::write(files.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let config = Config {
        port: 0,
        contact_port: 0,
        registrar_port: 1, // no registrar: the agent serves anyway
        tpm_tcti: tpm.tcti(),
        state_dir: dir.path().join("agent"),
        trusted_client_ca: vec![ca.ca_cert()],
        ima_emulate: vec![files],
        ima_emulate_interval: 0,
        registration_retry_max: 60,
        ..Config::default()
    };
    let t = Instant::now();
    let agent = Agent::start(&config).await.unwrap();
    println!("start with 10k emulated measurements: {:?}", t.elapsed());
    let endpoint =
        vigil_service::client::Endpoint::addr(agent.addr()).with_tls(std::sync::Arc::new(
            vigil_tls::client_config(
                &config.state_dir.join("server-cert.crt"),
                Some((&ca.cert("client"), &ca.key("client"))),
            )
            .unwrap(),
        ));
    let client = vigil_service::client::Client::default();
    for (name, path) in [
        ("identity", "/v2.6/quotes/identity?nonce=bench1".to_owned()),
        (
            "integrity (mask 0x400, 10k-entry list)",
            "/v2.6/quotes/integrity?nonce=bench2&mask=0x400&partial=0&ima_ml_entry=0".to_owned(),
        ),
        (
            "integrity (mask 0x400, ima_ml_entry=10001)",
            "/v2.6/quotes/integrity?nonce=bench3&mask=0x400&partial=1&ima_ml_entry=10001"
                .to_owned(),
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let a = client
                .request(&endpoint, hyper::Method::GET, &path, None)
                .await
                .unwrap();
            times.push(t.elapsed());
            assert_eq!(a.status, 200);
        }
        println!(
            "{name}: median {:?} over 20 (TLS handshake included)",
            median(times)
        );
    }
    agent.shutdown().await;
}

/// The `vigil-agent` binary's resident set at idle, after start-up (no registrar).
#[test]
#[ignore = "benchmark"]
fn idle_rss() {
    let Some(tpm) = Swtpm::manufactured("agent_rss", &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = vigil_tls::ca::init(&dir.path().join("cv_ca"), &[], false).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "port = 0\nregistrar_port = 1\ntpm_tcti = \"{}\"\nstate_dir = \"{}\"\ntrusted_client_ca = [\"{}\"]\nlog = \"warn\"\n",
            tpm.tcti(),
            dir.path().join("agent").display(),
            ca.ca_cert().display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .arg("--config")
        .arg(&cfg)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .to_owned();
    println!("vigil-agent idle: {rss}");
    let _ = child.kill();
    let _ = child.wait();
}
