//! [`Leases`] in SQL.

use async_trait::async_trait;

use super::{for_every_dialect, get};
use crate::error::unsigned;
use crate::{Fleet, Lease, Leases, StoreError};

/// How long (seconds) an expired heartbeat row is kept before a replica deletes it:
/// replica names carry a pid, so rows of past processes would otherwise pile up.
const FORGET_AFTER: i64 = 3_600;

for_every_dialect! {
    impl SqlStore {
        fn lease_from_row(row: &D::Row) -> Result<Lease, StoreError> {
            Ok(Lease {
                agent_id: get(row, "agent_id")?,
                holder: get(row, "holder")?,
                expires_at: get(row, "expires_at")?,
                epoch: unsigned("epoch", get(row, "epoch")?)?,
            })
        }

        fn leases_from_rows(rows: &[D::Row]) -> Result<Vec<Lease>, StoreError> {
            let mut leases = rows
                .iter()
                .map(Self::lease_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            leases.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            Ok(leases)
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl Leases for SqlStore {
        async fn acquire(
            &self,
            holder: &str,
            now: i64,
            ttl: u32,
            limit: u32,
        ) -> Result<Vec<Lease>, StoreError> {
            // One statement. On PostgreSQL the candidates' agent rows are locked and rows
            // another replica is claiming are skipped, so concurrent acquirers split the
            // free agents between them. On SQLite the statement takes the write lock before
            // reading: acquirers run one after the other, and the second finds the first's
            // leases unexpired. The upsert's WHERE re-checks expiry on the lease row itself.
            let sql = format!(
                "WITH candidates AS ( \
                     SELECT a.agent_id FROM verifier_agents a \
                     LEFT JOIN agent_leases l ON l.agent_id = a.agent_id \
                     WHERE l.agent_id IS NULL OR l.expires_at <= $2 \
                     ORDER BY a.agent_id LIMIT $4{}) \
                 INSERT INTO agent_leases (agent_id, holder, expires_at, epoch) \
                 SELECT agent_id, $1, $3, 1 FROM candidates WHERE TRUE \
                 ON CONFLICT (agent_id) DO UPDATE SET holder = EXCLUDED.holder, \
                     expires_at = EXCLUDED.expires_at, epoch = agent_leases.epoch + 1 \
                     WHERE agent_leases.expires_at <= $2 \
                 RETURNING agent_id, holder, expires_at, epoch",
                D::SKIP_LOCKED
            );
            let rows = sqlx::query(&sql)
                .bind(holder)
                .bind(now)
                .bind(now.saturating_add(i64::from(ttl)))
                .bind(i64::from(limit))
                .fetch_all(&self.lease_pool)
                .await
                .map_err(StoreError::db("acquire leases"))?;
            Self::leases_from_rows(&rows)
        }

        async fn renew(&self, holder: &str, now: i64, ttl: u32) -> Result<Vec<Lease>, StoreError> {
            // The rows are locked in agent order, as a batch of rounds locks them
            // (`record_rounds`): a renewal and a batch cannot deadlock on PostgreSQL.
            let sql = format!(
                "UPDATE agent_leases SET expires_at = $3 WHERE agent_id IN ( \
                     SELECT agent_id FROM agent_leases WHERE holder = $1 AND expires_at > $2 \
                     ORDER BY agent_id{}) \
                 AND holder = $1 AND expires_at > $2 \
                 RETURNING agent_id, holder, expires_at, epoch",
                D::FOR_UPDATE
            );
            let rows = sqlx::query(&sql)
                .bind(holder)
                .bind(now)
                .bind(now.saturating_add(i64::from(ttl)))
                .fetch_all(&self.lease_pool)
                .await
                .map_err(StoreError::db("renew leases"))?;
            Self::leases_from_rows(&rows)
        }

        async fn release(&self, holder: &str, agent_id: &str) -> Result<bool, StoreError> {
            // The row stays (expired) so the next holder's epoch keeps counting up.
            let done = sqlx::query(
                "UPDATE agent_leases SET expires_at = 0 \
                 WHERE agent_id = $1 AND holder = $2 AND expires_at <> 0",
            )
            .bind(agent_id)
            .bind(holder)
            .execute(&self.lease_pool)
            .await
            .map_err(StoreError::db("release lease"))?;
            Ok(D::rows_affected(&done) > 0)
        }

        async fn release_all(&self, holder: &str) -> Result<u64, StoreError> {
            let done = sqlx::query(
                "UPDATE agent_leases SET expires_at = 0 WHERE holder = $1 AND expires_at <> 0",
            )
            .bind(holder)
            .execute(&self.lease_pool)
            .await
            .map_err(StoreError::db("release leases"))?;
            // The others stop counting this replica in their shares at once.
            sqlx::query("DELETE FROM verifier_replicas WHERE holder = $1")
                .bind(holder)
                .execute(&self.lease_pool)
                .await
                .map_err(StoreError::db("forget the replica"))?;
            Ok(D::rows_affected(&done))
        }

        async fn heartbeat(&self, holder: &str, now: i64, ttl: u32) -> Result<Fleet, StoreError> {
            sqlx::query(
                "INSERT INTO verifier_replicas (holder, seen_until) VALUES ($1, $2) \
                 ON CONFLICT (holder) DO UPDATE SET seen_until = EXCLUDED.seen_until",
            )
            .bind(holder)
            .bind(now.saturating_add(i64::from(ttl)))
            .execute(&self.lease_pool)
            .await
            .map_err(StoreError::db("write the replica heartbeat"))?;
            sqlx::query("DELETE FROM verifier_replicas WHERE seen_until < $1")
                .bind(now.saturating_sub(FORGET_AFTER))
                .execute(&self.lease_pool)
                .await
                .map_err(StoreError::db("forget past replicas"))?;
            let rows = sqlx::query(
                "SELECT r.holder, (SELECT COUNT(*) FROM agent_leases l \
                     WHERE l.holder = r.holder AND l.expires_at > $1) AS held \
                 FROM verifier_replicas r WHERE r.seen_until > $1 ORDER BY r.holder",
            )
            .bind(now)
            .fetch_all(&self.lease_pool)
            .await
            .map_err(StoreError::db("read the replicas"))?;
            let replicas = rows
                .iter()
                .map(|row| Ok((get(row, "holder")?, unsigned("held", get(row, "held")?)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM verifier_agents) AS nodes, \
                     (SELECT MIN(expires_at) FROM agent_leases \
                      WHERE holder <> $1 AND expires_at > $2) AS next_expiry",
            )
            .bind(holder)
            .bind(now)
            .fetch_one(&self.lease_pool)
            .await
            .map_err(StoreError::db("count the nodes"))?;
            Ok(Fleet {
                replicas,
                nodes: unsigned("nodes", get(&row, "nodes")?)?,
                next_expiry: get(&row, "next_expiry")?,
            })
        }

        async fn get(&self, agent_id: &str) -> Result<Option<Lease>, StoreError> {
            sqlx::query(
                "SELECT agent_id, holder, expires_at, epoch FROM agent_leases WHERE agent_id = $1",
            )
            .bind(agent_id)
            .fetch_optional(&self.lease_pool)
            .await
            .map_err(StoreError::db("read lease"))?
            .as_ref()
            .map(Self::lease_from_row)
            .transpose()
        }
    }
}
