//! A fleet: a few hundred nodes simulated by `vigil-sim` (software AKs, mTLS, growing
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

const NODES: usize = 200;
const INTERVAL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_nodes_are_taken_over_without_double_attestation() {
    vigil_testkit::db::with_postgres(|db| async move {
        let pki = Pki::new();
        let mut config = pki.config(&db);
        config.quote_interval = INTERVAL.as_secs_f64();
        config.retry_interval = 1.0;
        config.lease_ttl = 3;
        config.lease_batch = 50;
        let mut replicas = Vec::new();
        for r in ["r1", "r2", "r3"] {
            config.replica_id = r.into();
            replicas.push(support::start(&config).await);
        }
        // A port of its own per test process, so parallel runs do not collide.
        let port = 30_000 + (std::process::id() % 20_000) as u16;
        let sim = Sim::start(&SimConfig::new(
            NODES,
            port,
            pki.tls_dir().join("cacert.crt"),
        ))
        .await
        .expect("the simulated nodes start");
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
        wait_for(60, "every node attested", || async {
            (sim.attested_since(Duration::ZERO).len() == NODES).then_some(())
        })
        .await;
        wait_for(30, "the replicas sharing the nodes", || async {
            let held: usize = replicas.iter().map(|r| r.attested_nodes()).sum();
            (held == NODES && replicas.iter().all(|r| r.attested_nodes() > 0)).then_some(())
        })
        .await;
        let killed = replicas.remove(0);
        let lost = killed.attested_nodes();
        let kill_at = sim.elapsed();
        killed.abort();
        // Every node, the killed replica's included, is polled again after the kill.
        let after = kill_at + Duration::from_millis(100);
        wait_for(60, "every node attested again after the kill", || async {
            (sim.attested_since(after).len() == NODES).then_some(())
        })
        .await;
        let survivors: usize = replicas.iter().map(|r| r.attested_nodes()).sum();
        assert_eq!(survivors, NODES, "the survivors hold every node");
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
