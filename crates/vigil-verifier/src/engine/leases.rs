//! Leases, when replicas share the database (`lease_ttl > 0`): a loop renews the
//! leases this replica holds, stops the nodes whose lease it lost, and claims free or
//! expired ones, so the nodes of a replica that died are taken over once their leases
//! expire. The database is the only arbiter: no replica talks to another.
//!
//! A lease this replica's id holds but no task of this process runs is adopted: a
//! previous process with the same `replica_id` (restarted after a crash, or a container
//! restarted with the same host name and pid) left it. It is released and claimed
//! again in the same pass, at a new epoch, so the node is attested again and any write
//! of the previous process is fenced off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{Command, Engine};

/// Batches of `lease_batch` claimed at most per lease-loop tick.
const MAX_BATCHES_PER_TICK: u32 = 100;

impl Engine {
    /// Renews held leases, drops lost nodes, claims free ones; every `ttl / 3`.
    pub(super) async fn lease_loop(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let period = Duration::from_secs(u64::from((ttl / 3).clamp(1, 10)));
        let mut stop = self.stop.clone();
        loop {
            let leases = self.store.leases();
            let renewed = self
                .metrics
                .store
                .time(
                    "lease_renew",
                    leases.renew(&self.holder, self.clock.now_secs(), ttl),
                )
                .await;
            match renewed {
                Ok(held) => {
                    self.leases_renewed();
                    let held: HashSet<_> = held.into_iter().map(|l| l.agent_id).collect();
                    let (lost, orphaned) = {
                        let nodes = self.lock_nodes();
                        let lost: Vec<String> = nodes
                            .keys()
                            .filter(|id| !held.contains(*id))
                            .cloned()
                            .collect();
                        let orphaned: Vec<&String> =
                            held.iter().filter(|id| !nodes.contains_key(*id)).collect();
                        (lost, orphaned.into_iter().cloned().collect::<Vec<_>>())
                    };
                    for id in lost {
                        warn!(agent_id = %id, holder = %self.holder, "lease lost: no longer attesting this node");
                        self.command(&id, Command::Shutdown);
                    }
                    for id in orphaned {
                        info!(agent_id = %id, holder = %self.holder, "adopting a lease this replica id holds without a task (a previous process's): claiming it again");
                        if let Err(e) = leases.release(&self.holder, &id).await {
                            error!(agent_id = %id, "releasing a lease to adopt it: {e}");
                        }
                    }
                }
                Err(e) => error!("renewing leases: {e}"),
            }
            // Batch after batch while batches come back full: a dead replica's nodes
            // (thousands, all expiring together) are taken over in one tick rather than
            // `lease_batch` a tick, which made the takeover gap grow with the fleet.
            // Replicas claiming together split the nodes (SKIP LOCKED).
            let batch = self.config.lease_batch.max(1);
            for _ in 0..MAX_BATCHES_PER_TICK {
                match leases
                    .acquire(&self.holder, self.clock.now_secs(), ttl, batch)
                    .await
                {
                    Ok(got) => {
                        let full = got.len() == batch as usize;
                        for lease in got {
                            info!(agent_id = %lease.agent_id, epoch = lease.epoch, holder = %self.holder, "lease acquired");
                            let fence = lease.fence();
                            self.spawn_node(lease.agent_id, Some(fence)).await;
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        error!("acquiring leases: {e}");
                        break;
                    }
                }
            }
            if let Err(e) = self.notifiers.renew_and_claim().await {
                error!("renewing and claiming revocation notice deliveries: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.wake_leases.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}
