//! The real `vigil-verifier` binary, killed with SIGKILL at seeded pseudo-random
//! moments (half of them while a quote request is in flight) and started again on the
//! same database, on SQLite and PostgreSQL, attesting a test agent backed by swtpm.
//! After every kill the stored node must be there exactly once, in Get Quote, with
//! counters that never went backwards; after every restart the first quote request
//! must ask from the stored IMA entry, not from 0. Without swtpm the test skips with a
//! note, except under `CI`.

use crate::support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{wait_for, Pki, TestAgent};
use vigil_store::Store;

/// How many times the verifier is killed per backend.
const KILLS: u64 = 7;
/// The seed of the kill schedule (printed, so a failing schedule can be replayed).
const SEED: u64 = 0x5eed_0007;

/// xorshift64: a reproducible schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `[lo, hi)` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// A `vigil-verifier` process in its own process group, SIGKILLed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(pki: &Pki, db: &str, port: u16, run: u64) -> Self {
        let log = pki.dir.path().join(format!("verifier-{run}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigil-verifier"))
            .arg("--database")
            .arg(db)
            .env("VIGIL_VERIFIER_STATE_DIR", pki.dir.path())
            .env("VIGIL_VERIFIER_PORT", port.to_string())
            .env("VIGIL_VERIFIER_QUOTE_INTERVAL", "0.2")
            .env("VIGIL_VERIFIER_RETRY_INTERVAL", "0.2")
            .env("VIGIL_VERIFIER_REQUEST_TIMEOUT", "5")
            .env("VIGIL_VERIFIER_LOG", "info")
            .env_remove("RUST_LOG")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("vigil-verifier starts");
        Self { child, log }
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Waits until the verifier answers on `addr`.
async fn serving(pki: &Pki, addr: SocketAddr, p: &Process) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the verifier never listened:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, _) = pki.client(false).call(addr, "GET", "/version", None).await;
    assert_eq!(code, 200);
}

/// What the store holds for the node while no verifier runs: (attestation_count,
/// ima next entry), after checking it is there exactly once and in Get Quote.
async fn stored(db: &str, p: &Process) -> (u64, u64) {
    let store = Store::open(db).await.unwrap();
    let agents = store.verifier_agents();
    assert_eq!(
        agents.list(None).await.unwrap(),
        ["n1"],
        "the node is there exactly once"
    );
    let a = agents.get("n1").await.unwrap().expect("the node is stored");
    store.close().await;
    assert_eq!(
        a.state.operational_state,
        3,
        "stored state is Get Quote:\n{}",
        p.log()
    );
    (a.state.attestation_count, a.state.ima.next_entry)
}

async fn status(pki: &Pki, addr: SocketAddr) -> serde_json::Value {
    pki.client(true)
        .call(addr, "GET", "/v2.6/agents/n1", None)
        .await
        .1["results"]
        .clone()
}

async fn killed_mid_round_resumes_from_the_stored_offset(db: String) {
    let pki = Pki::new();
    let Some(agent) = TestAgent::new("verifier_sigkill", &pki.tls_dir().join("cacert.crt")).await
    else {
        return;
    };
    let files: Vec<(String, Vec<u8>)> = (0..=KILLS)
        .map(|i| (format!("/usr/bin/f{i}"), format!("f{i}").into_bytes()))
        .collect();
    let policy: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_slice()))
        .collect();
    agent.measure(policy[0].0, policy[0].1);
    // A slow node: every round stays in flight for 150 ms, so a kill can land in it.
    agent.set_delay(Duration::from_millis(150));
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut rng = Rng(SEED);
    eprintln!("kill schedule seed {SEED:#x}");

    let mut p = Process::spawn(&pki, &db, port, 0);
    serving(&pki, addr, &p).await;
    let (code, r) = pki
        .client(true)
        .call(
            addr,
            "POST",
            "/v2.6/agents/n1",
            Some(agent.enrolment(&TestAgent::policy_b64(&policy))),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    wait_for(30, "first attestations", || async {
        (status(&pki, addr).await["attestation_count"].as_u64() >= Some(2)).then_some(())
    })
    .await;

    let (mut count, mut mid_round) = (0, 0);
    for run in 1..=KILLS {
        if run % 2 == 1 {
            // Mid-round: just after a request reached the node, before it answers.
            let seen = agent.requests().len();
            let k = 1 + usize::try_from(rng.next() % 3).unwrap();
            wait_for(20, "a quote request", || async {
                (agent.requests().len() >= seen + k).then_some(())
            })
            .await;
            tokio::time::sleep(rng.millis(0, 100)).await;
            mid_round += 1;
        } else {
            tokio::time::sleep(rng.millis(100, 1500)).await;
        }
        p.kill();
        let (c, entry) = stored(&db, &p).await;
        assert!(c >= count, "attestation_count went back: {count} -> {c}");
        assert!(entry > 0, "the IMA offset was stored");
        count = c;

        // The node measures a new file while no verifier runs.
        let i = usize::try_from(run).unwrap();
        agent.measure(policy[i].0, policy[i].1);
        let seen = agent.requests().len();
        p = Process::spawn(&pki, &db, port, run);
        serving(&pki, addr, &p).await;
        let first = wait_for(20, "the first request after the restart", || async {
            agent.requests().get(seen).copied()
        })
        .await;
        assert_eq!(
            first, entry,
            "run {run}: the first request asks from the stored entry, not 0"
        );
        // It carries on: attested past what was stored, the new entry included.
        let s = wait_for(30, "attestation after the restart", || async {
            let s = status(&pki, addr).await;
            (s["attestation_count"].as_u64() > Some(count)
                && s["vigil"]["ima_next_entry"].as_u64() == Some(run + 1))
            .then_some(s)
        })
        .await;
        assert_eq!(s["operational_state"], 3, "{s}\n{}", p.log());
        let (code, list) = pki
            .client(true)
            .call(addr, "GET", "/v2.6/agents/", None)
            .await;
        assert_eq!(code, 200);
        assert_eq!(list["results"]["uuids"], serde_json::json!([["n1"]]));
    }
    assert!(mid_round >= 3);
    p.kill();
    let (c, _) = stored(&db, &p).await;
    assert!(c >= count);
}

on_both_backends!(killed_mid_round_resumes_from_the_stored_offset);
