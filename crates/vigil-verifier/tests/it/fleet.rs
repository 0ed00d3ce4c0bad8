//! A fleet: 200 nodes simulated by `vigil-sim` (software AKs, mTLS, growing
//! IMA logs, a UEFI log with measured boot), verifier replicas sharing them by leases
//! on PostgreSQL: three, one killed, whose nodes must be attested again by the others;
//! one, joined by a second that must be handed about half of the nodes. No node may be
//! polled by two replicas at once (seen from the nodes' side: no two quote requests to
//! a node less than half an interval apart). Timing is asserted on nothing but
//! "eventually, within a bound" and the gaps a hand-over leaves: figures come from
//! `scripts/bench-fleet.sh`.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use support::{wait_for, Pki};
use vigil_sim::{Sim, SimConfig, VerifierApi};

const NODES: usize = 200;
/// Long enough for a debug build on a loaded 2-core CI machine to keep up with 200
/// nodes (about 70 rounds a second at most).
const INTERVAL: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_nodes_are_taken_over_without_double_attestation() {
    vigil_testkit::db::with_postgres(|db| async move {
        let pki = Pki::new();
        let mut config = pki.config(&db);
        config.quote_interval = INTERVAL.as_secs_f64();
        config.retry_interval = 1.0;
        // Longer than the 3 s a quiet machine needs: a loaded CI machine stalls
        // replicas past short leases, and churn is not what this test is about.
        config.lease_ttl = 6;
        config.lease_batch = 50;
        let mut replicas = Vec::new();
        for r in ["r1", "r2", "r3"] {
            config.replica_id = r.into();
            replicas.push(support::start(&config).await);
        }
        let started = std::time::Instant::now();
        let sim = fleet(&pki, &replicas[0], 0).await;
        eprintln!(
            "fleet: {NODES} nodes made and enrolled in {:?}",
            started.elapsed()
        );
        let last = std::sync::atomic::AtomicUsize::new(0);
        let attested = |since| {
            let n = sim.attested_since(since).len();
            if n / 20 != last.swap(n, std::sync::atomic::Ordering::Relaxed) / 20 {
                eprintln!("fleet: {n} of {NODES} nodes attested");
            }
            (n == NODES).then_some(())
        };
        wait_for(120, "every node attested", || async {
            attested(Duration::ZERO)
        })
        .await;
        eprintln!("fleet: all attested after {:?}", started.elapsed());
        // Enrolments go through the first replica, whose lease loop they wake; it claims
        // up to its share, the others theirs: the replica killed is the one holding the
        // most.
        wait_for(30, "the replicas holding every node", || async {
            let held: usize = replicas.iter().map(|r| r.attested_nodes()).sum();
            (held == NODES).then_some(())
        })
        .await;
        let busiest = (0..replicas.len())
            .max_by_key(|&i| replicas[i].attested_nodes())
            .expect("three replicas");
        let killed = replicas.remove(busiest);
        let lost = killed.attested_nodes();
        let kill_at = sim.elapsed();
        killed.abort();
        // Every node, the killed replica's included, is polled again after the kill.
        let after = kill_at + Duration::from_millis(100);
        wait_for(120, "every node attested again after the kill", || async {
            attested(after)
        })
        .await;
        eprintln!(
            "fleet: all attested again {:?} after the kill",
            sim.elapsed() - kill_at
        );
        wait_for(60, "the survivors holding every node", || async {
            let held: usize = replicas.iter().map(|r| r.attested_nodes()).sum();
            (held == NODES).then_some(())
        })
        .await;
        let report = sim.report(INTERVAL, Duration::ZERO, sim.elapsed(), &HashSet::new());
        assert_eq!(
            report["doubles"], 0,
            "no node polled twice at once: {report}"
        );
        eprintln!("fleet: the killed replica held {lost} of {NODES} nodes; {report}");
        for r in replicas {
            r.shutdown().await;
        }
    })
    .await;
}

/// Starts the simulator's 200 nodes and enrols them through `via`; `test` (0, 1, 2)
/// tells this file's tests apart.
async fn fleet(pki: &Pki, via: &vigil_verifier::Verifier, test: u16) -> Sim {
    // A port of its own per test and test process, so parallel runs do not collide,
    // and below Linux's ephemeral range (32768–60999): a port there can be held by any
    // outgoing connection of the same run (a database pool's), and the bind fails.
    // 25000–28999: clear of the tenant tests' 20000–24999 and bench-fleet's 29100.
    let port = 25_000 + (std::process::id() % 1_333) as u16 * 3 + test;
    let mut sim_config = SimConfig::new(NODES, port, pki.tls_dir().join("cacert.crt"));
    sim_config.ima_rate = 0.2;
    let sim = Sim::start(&sim_config)
        .await
        .expect("the simulated nodes start");
    let api = VerifierApi::new(
        &format!("https://127.0.0.1:{}", via.addr().port()),
        &pki.tls_dir(),
        Some("localhost"),
        "2.2",
    )
    .unwrap();
    sim.enrol(&Arc::new(api), 8).await.expect("bulk enrolment");
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_is_handed_its_share_without_gaps_or_double_attestation() {
    vigil_testkit::db::with_postgres(|db| async move {
        let pki = Pki::new();
        let mut config = pki.config(&db);
        config.quote_interval = INTERVAL.as_secs_f64();
        config.retry_interval = 1.0;
        config.lease_ttl = 6;
        config.lease_batch = 50;
        config.replica_id = "r1".into();
        let r1 = support::start(&config).await;
        let sim = fleet(&pki, &r1, 1).await;
        wait_for(120, "r1 attesting every node", || async {
            (sim.attested_since(Duration::ZERO).len() == NODES && r1.attested_nodes() == NODES)
                .then_some(())
        })
        .await;
        let join_at = sim.elapsed();
        config.replica_id = "r2".into();
        let r2 = support::start(&config).await;
        // The share is half, the slack 5 % of it (100 and 5 for 200 nodes): r1 hands
        // over until it holds at most share + slack.
        let (share, slack) = (NODES / 2, (NODES / 2 / 20).max(1));
        wait_for(60, "an even split", || async {
            let (a, b) = (r1.attested_nodes(), r2.attested_nodes());
            (a + b == NODES && a <= share + slack && b >= share - slack).then_some(())
        })
        .await;
        let even_after = sim.elapsed() - join_at;
        // Every node handed over polled again by r2, the gaps over.
        tokio::time::sleep(INTERVAL * 2).await;
        let report = sim.report(INTERVAL, join_at, sim.elapsed(), &HashSet::new());
        eprintln!(
            "fleet: even split {}/{} {even_after:?} after r2 joined; {report}",
            r1.attested_nodes(),
            r2.attested_nodes()
        );
        assert_eq!(
            report["doubles"], 0,
            "no node polled twice at once: {report}"
        );
        assert_eq!(report["nodes_attested"], NODES, "{report}");
        // A handed-over node is polled again an interval after its last round (give or
        // take the half second the stored time is rounded to); the rest is slack for
        // a loaded machine running a debug build.
        let max_gap = report["gap_ms"]["max"].as_u64().unwrap();
        assert!(
            max_gap < (INTERVAL + Duration::from_secs(2)).as_millis() as u64,
            "no node left unpolled much past an interval: {report}"
        );
        r1.shutdown().await;
        r2.shutdown().await;
    })
    .await;
}

/// With one round in flight at a time (`max_rounds_in_flight` 1), every node is still
/// attested round after round: each round gives its place back once recorded, failed
/// or not (a place kept would stop the whole verifier after its first round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_in_flight_still_attests_every_node_again_and_again() {
    vigil_testkit::db::with_sqlite(|db| async move {
        let pki = Pki::new();
        let mut config = pki.config(&db);
        config.quote_interval = INTERVAL.as_secs_f64();
        config.max_rounds_in_flight = 1;
        let verifier = support::start(&config).await;
        let sim = fleet(&pki, &verifier, 2).await;
        wait_for(120, "every node attested", || async {
            (sim.attested_since(Duration::ZERO).len() == NODES).then_some(())
        })
        .await;
        let after = sim.elapsed();
        wait_for(120, "every node attested again", || async {
            (sim.attested_since(after).len() == NODES).then_some(())
        })
        .await;
        let report = sim.report(INTERVAL, Duration::ZERO, sim.elapsed(), &HashSet::new());
        assert_eq!(report["doubles"], 0, "{report}");
        verifier.shutdown().await;
    })
    .await;
}
