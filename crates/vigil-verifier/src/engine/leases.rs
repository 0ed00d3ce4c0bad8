//! Leases, when replicas share the database (`lease_ttl > 0`): a loop renews the
//! leases this replica holds, stops the nodes whose lease it lost, and claims free or
//! expired ones, so the nodes of a replica that died are taken over once their leases
//! expire. The database is the only arbiter: no replica talks to another.
//!
//! Each tick also writes this replica's heartbeat and reads the fleet (the live
//! replicas and how many leases each holds), from which [`plan`] computes its fair
//! share of the nodes: a replica claims no more than its share while another live
//! replica is under its own, and one holding more than its share hands nodes over a
//! few at a time (the node's task finishes its round, then releases the lease, which
//! the replica under its share claims at a new epoch). A joining replica is thereby
//! given its share gradually, and enrolments through one replica no longer leave it
//! holding most nodes.
//!
//! A lease this replica's id holds but no task of this process runs is adopted: a
//! previous process with the same `replica_id` (restarted after a crash, or a container
//! restarted with the same host name and pid) left it. It is released and claimed
//! again in the same pass, at a new epoch, so the node is attested again and any write
//! of the previous process is fenced off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};
use vigil_core::attestation::UnixTime;
use vigil_store::Fleet;

use super::{Command, Engine};

/// Batches of `lease_batch` claimed at most per lease-loop tick.
const MAX_BATCHES_PER_TICK: u32 = 100;

/// How late after a lease of another replica expires this replica's claim tick
/// runs: the expiry is in whole seconds, so this is only clock slack.
const AFTER_EXPIRY: Duration = Duration::from_millis(20);

/// What a replica does about its share of the nodes at one lease tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// How many free leases it may claim; `None`: all there are.
    pub(super) claim: Option<u64>,
    /// How many of its nodes it hands over to the replicas under their share.
    pub(super) hand_over: u64,
}

/// This replica's plan, given the fleet it read (`fleet.replicas`: every live replica
/// with the leases it holds) and `mine`, the nodes it attests and is not already
/// handing over.
///
/// With `L` live replicas (this one counted even if its heartbeat was not seen) and
/// `N` nodes, the share is `ceil(N / L)`. While another live replica is under the
/// share, this one claims only up to the share and, holding more than the share plus a
/// slack of 5 % (at least one node), hands over the excess, at most a tenth of the share
/// (at least one) per tick and no more than the others lack. Otherwise (alone, or every
/// other replica at its share) it claims every free lease: a node is never left
/// unclaimed.
pub(super) fn plan(me: &str, mine: u64, fleet: &Fleet) -> Plan {
    let others = fleet.replicas.iter().filter(|(holder, _)| holder != me);
    let live = others.clone().count() as u64 + 1;
    let share = fleet.nodes.div_ceil(live);
    let lacking: u64 = others.map(|(_, held)| share.saturating_sub(*held)).sum();
    if lacking == 0 {
        return Plan {
            claim: None,
            hand_over: 0,
        };
    }
    let slack = (share / 20).max(1);
    let hand_over = if mine > share + slack {
        (mine - share).min((share / 10).max(1)).min(lacking)
    } else {
        0
    };
    Plan {
        claim: Some(share.saturating_sub(mine)),
        hand_over,
    }
}

impl Engine {
    /// Renews held leases, drops lost nodes, hands over or claims nodes towards this
    /// replica's share; every `ttl / 3`, and right after a lease of another replica
    /// expires (its nodes are taken over then, not up to a tick later).
    pub(super) async fn lease_loop(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let period = Self::lease_period(ttl);
        let mut stop = self.stop.clone();
        // Nodes told to hand over whose task has not ended yet.
        let mut handing: HashSet<String> = HashSet::new();
        loop {
            let leases = self.store.leases();
            // Before renewing, with the same or an earlier `now`: the heartbeat of a
            // replica that dies then expires no later than its leases, so the others
            // count it out of the share by the time they can claim its nodes.
            let fleet = match leases
                .heartbeat(&self.holder, self.clock.now_secs(), ttl)
                .await
            {
                Ok(fleet) => Some(fleet),
                Err(e) => {
                    error!("writing the replica heartbeat: {e}");
                    None
                }
            };
            let now = self.clock.now_secs();
            let renewed = self
                .metrics
                .store
                .time("lease_renew", leases.renew(&self.holder, now, ttl))
                .await;
            let mut mine = None;
            match renewed {
                Ok(held) => {
                    let held: HashSet<_> = held.into_iter().map(|l| l.agent_id).collect();
                    let (lost, orphaned) = {
                        let nodes = self.lock_nodes();
                        handing.retain(|id| nodes.contains_key(id));
                        let lost: Vec<String> = nodes
                            .keys()
                            .filter(|id| !held.contains(*id))
                            .cloned()
                            .collect();
                        let orphaned: Vec<&String> =
                            held.iter().filter(|id| !nodes.contains_key(*id)).collect();
                        (lost, orphaned.into_iter().cloned().collect::<Vec<_>>())
                    };
                    mine = Some(held.len().saturating_sub(handing.len()) as u64);
                    // Before the adoptions below (a query each): the node tasks
                    // waiting for the renewal go on at once.
                    self.leases_renewed(
                        UnixTime::from_secs(u64::try_from(now).unwrap_or(0) + u64::from(ttl)),
                        held,
                    );
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
            // Without the fleet or its own leases a replica cannot tell its share:
            // it claims every free node, as a lone replica does (no node is left
            // unattested), and hands nothing over.
            let plan = match (&fleet, mine) {
                (Some(fleet), Some(mine)) => plan(&self.holder, mine, fleet),
                _ => Plan {
                    claim: None,
                    hand_over: 0,
                },
            };
            if plan.hand_over > 0 {
                let ids: Vec<String> = self
                    .lock_nodes()
                    .keys()
                    .filter(|id| !handing.contains(*id))
                    .take(usize::try_from(plan.hand_over).unwrap_or(usize::MAX))
                    .cloned()
                    .collect();
                info!(holder = %self.holder, nodes = ids.len(), "over this replica's share: handing nodes over after their round");
                for id in ids {
                    if self.command(&id, Command::Release) {
                        handing.insert(id);
                    }
                }
            }
            // Nodes being handed over are not claimed back.
            let claim = if handing.is_empty() {
                plan.claim
            } else {
                Some(0)
            };
            self.claim(ttl, claim).await;
            // Wake when another replica's lease expires if that comes before the
            // next tick: that replica stopped renewing, and its nodes are free then.
            let sleep = fleet
                .as_ref()
                .and_then(|f| f.next_expiry)
                .map(|at| {
                    let at = UnixTime::from_secs(u64::try_from(at).unwrap_or(0));
                    at.saturating_since(self.clock.now()) + AFTER_EXPIRY
                })
                .map_or(period, |until| until.min(period));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake_leases.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Renews and claims revocation notice deliveries every lease period, apart from
    /// the lease loop: they go through the main connection pool, which a busy
    /// replica's node tasks keep busy, and must not hold up the renewal of the leases.
    pub(super) async fn notice_loop(self: Arc<Self>) {
        let period = Self::lease_period(self.config.lease_ttl);
        let mut stop = self.stop.clone();
        loop {
            if let Err(e) = self.notifiers.renew_and_claim().await {
                error!("renewing and claiming revocation notice deliveries: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// The lease loop's period: a third of the TTL (two renewals may fail before a
    /// lease expires), between 0.5 and 10 seconds.
    fn lease_period(ttl: u32) -> Duration {
        (Duration::from_secs(u64::from(ttl)) / 3)
            .clamp(Duration::from_millis(500), Duration::from_secs(10))
    }

    /// Claims free or expired leases, at most `limit` (`None`: all there are), and
    /// starts their nodes.
    ///
    /// Batch after batch while batches come back full: a dead replica's nodes
    /// (thousands, all expiring together) are taken over in one tick rather than
    /// `lease_batch` a tick, which made the takeover gap grow with the fleet. Replicas
    /// claiming together split the nodes (SKIP LOCKED).
    async fn claim(self: &Arc<Self>, ttl: u32, limit: Option<u64>) {
        let batch = self.config.lease_batch.max(1);
        let mut left = limit.unwrap_or(u64::MAX);
        for _ in 0..MAX_BATCHES_PER_TICK {
            let want = u32::try_from(left).unwrap_or(u32::MAX).min(batch);
            if want == 0 {
                debug!(holder = %self.holder, "at this replica's share: claiming nothing");
                break;
            }
            match self
                .store
                .leases()
                .acquire(&self.holder, self.clock.now_secs(), ttl, want)
                .await
            {
                Ok(got) => {
                    let full = got.len() == want as usize;
                    left -= got.len() as u64;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(nodes: u64, replicas: &[(&str, u64)]) -> Fleet {
        Fleet {
            replicas: replicas.iter().map(|&(h, n)| (h.to_owned(), n)).collect(),
            nodes,
            next_expiry: None,
        }
    }

    const ALL: Plan = Plan {
        claim: None,
        hand_over: 0,
    };

    #[test]
    fn a_lone_replica_claims_everything() {
        assert_eq!(plan("r1", 0, &fleet(100, &[("r1", 0)])), ALL);
        // Its own heartbeat not seen (a failed write): still alone.
        assert_eq!(plan("r1", 40, &fleet(100, &[])), ALL);
    }

    #[test]
    fn a_joining_replica_is_handed_its_share_a_tenth_at_a_time() {
        // r2 joins r1, which holds all 2,000: the share is 1,000, the slack 50.
        let f = fleet(2_000, &[("r1", 2_000), ("r2", 0)]);
        assert_eq!(
            plan("r1", 2_000, &f),
            Plan {
                claim: Some(0),
                hand_over: 100
            }
        );
        // r2 claims whatever is free: r1, at or above its share, lacks nothing, and
        // hands over no more than its excess.
        assert_eq!(plan("r2", 0, &f), ALL);
        // Within the slack, r1 keeps what it has.
        let f = fleet(2_000, &[("r1", 1_040), ("r2", 960)]);
        assert_eq!(
            plan("r1", 1_040, &f),
            Plan {
                claim: Some(0),
                hand_over: 0
            }
        );
        // No more than the others lack.
        let f = fleet(2_000, &[("r1", 1_100), ("r2", 990)]);
        assert_eq!(plan("r1", 1_100, &f).hand_over, 10);
    }

    #[test]
    fn small_fleets_move_one_node_a_tick() {
        let f = fleet(5, &[("r1", 5), ("r2", 0)]);
        // Share 3, slack 1: holding 5 is over 4.
        assert_eq!(
            plan("r1", 5, &f),
            Plan {
                claim: Some(0),
                hand_over: 1
            }
        );
        let f = fleet(5, &[("r1", 4), ("r2", 1)]);
        assert_eq!(plan("r1", 4, &f).hand_over, 0);
    }

    #[test]
    fn replicas_at_their_share_claim_every_free_node() {
        // 3 new nodes enrolled while both replicas hold their share: claimed by
        // whichever ticks first, balanced out later by hand-over.
        let f = fleet(103, &[("r1", 50), ("r2", 52)]);
        assert_eq!(plan("r1", 50, &f), ALL);
        // Bulk enrolment through r1 with r2, r3 at 0: r1 stops at its share.
        let f = fleet(120, &[("r1", 0), ("r2", 0), ("r3", 0)]);
        assert_eq!(
            plan("r1", 0, &f),
            Plan {
                claim: Some(40),
                hand_over: 0
            }
        );
        // Every share together covers every node, however the count divides.
        for nodes in [1, 2, 119, 121, 2_001] {
            for live in 2..=4 {
                let replicas: Vec<(String, u64)> =
                    (0..live).map(|i| (format!("r{i}"), 0)).collect();
                let f = Fleet {
                    replicas: replicas.clone(),
                    nodes,
                    next_expiry: None,
                };
                let total: u64 = replicas
                    .iter()
                    .map(|(h, _)| plan(h, 0, &f).claim.unwrap_or(u64::MAX))
                    .fold(0, u64::saturating_add);
                assert!(total >= nodes, "{nodes} nodes, {live} replicas");
            }
        }
    }

    #[test]
    fn survivors_of_a_dead_replica_take_its_nodes_over() {
        // r1 died holding 1,300 of 2,000; its heartbeat expired with its leases.
        let f = fleet(2_000, &[("r2", 350), ("r3", 350)]);
        let (p2, p3) = (plan("r2", 350, &f), plan("r3", 350, &f));
        assert_eq!(p2.claim.unwrap() + p3.claim.unwrap(), 1_300);
        assert_eq!(p2.hand_over + p3.hand_over, 0);
    }

    #[test]
    fn the_lease_period_is_a_third_of_the_ttl() {
        assert_eq!(Engine::lease_period(3), Duration::from_secs(1));
        assert_eq!(Engine::lease_period(1), Duration::from_millis(500));
        assert_eq!(Engine::lease_period(60), Duration::from_secs(10));
    }
}
