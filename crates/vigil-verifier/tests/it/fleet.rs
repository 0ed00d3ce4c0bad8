//! A fleet: 120 nodes simulated by `vigil-sim` (software AKs, mTLS, growing
//! IMA logs, a UEFI log with measured boot), three verifier replicas sharing them by
//! leases on PostgreSQL, one killed. Every node of the killed replica must be attested
//! again by the others, and no node polled by two replicas at once (seen from the
//! nodes' side: no two quote requests to a node less than half an interval apart).
//! Timing is asserted on nothing but "eventually, within a bound": figures come from
//! `scripts/bench-fleet.sh`.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use support::{wait_for, Pki};
use vigil_sim::{Sim, SimConfig, VerifierApi};

const NODES: usize = 120;
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
        // A port of its own per test process, so parallel runs do not collide.
        let port = 30_000 + (std::process::id() % 20_000) as u16;
        let mut sim_config = SimConfig::new(NODES, port, pki.tls_dir().join("cacert.crt"));
        sim_config.ima_rate = 0.2;
        let started = std::time::Instant::now();
        let sim = Sim::start(&sim_config)
            .await
            .expect("the simulated nodes start");
        eprintln!("fleet: {NODES} nodes made in {:?}", started.elapsed());
        let api = Arc::new(
            VerifierApi::new(
                &format!("https://127.0.0.1:{}", replicas[0].addr().port()),
                &pki.tls_dir(),
                Some("localhost"),
                "2.2",
            )
            .unwrap(),
        );
        sim.enrol(&api, 8).await.expect("bulk enrolment");
        eprintln!("fleet: enrolled after {:?}", started.elapsed());
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
        // Enrolments go through the first replica, whose lease loop they wake, so it may
        // well hold every node: the replica killed is the one holding the most.
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
