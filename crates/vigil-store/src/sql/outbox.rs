//! [`Outbox`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::error::unsigned;
use crate::outbox::{NewEvent, Outbox, OutboxRow};
use crate::StoreError;

const COLUMNS: &str =
    "id, uuid, agent_id, sink, event, created_at, attempts, next_attempt_at, last_error";

for_every_dialect! {
    impl SqlStore {
        fn outbox_from_row(row: &D::Row) -> Result<OutboxRow, StoreError> {
            Ok(OutboxRow {
                id: get(row, "id")?,
                uuid: get(row, "uuid")?,
                agent_id: get(row, "agent_id")?,
                sink: get(row, "sink")?,
                event: get(row, "event")?,
                created_at: get(row, "created_at")?,
                attempts: unsigned("attempts", get(row, "attempts")?)?,
                next_attempt_at: get(row, "next_attempt_at")?,
                last_error: get(row, "last_error")?,
            })
        }

        /// Inserts one row per (event, sink) inside `tx`.
        pub(crate) async fn insert_events(
            tx: &mut sqlx::Transaction<'static, D>,
            events: &[NewEvent],
            now: i64,
            op: &'static str,
        ) -> Result<(), StoreError> {
            for e in events {
                for sink in &e.sinks {
                    sqlx::query(
                        "INSERT INTO event_outbox (uuid, agent_id, sink, event, created_at, \
                         attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, 0, $5)",
                    )
                    .bind(e.uuid.as_str())
                    .bind(e.agent_id.as_str())
                    .bind(sink.as_str())
                    .bind(e.event.as_str())
                    .bind(now)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(op))?;
                }
            }
            Ok(())
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl Outbox for SqlStore {
        async fn enqueue(&self, events: &[NewEvent], now: i64) -> Result<(), StoreError> {
            const OP: &str = "enqueue events";
            let mut tx = self.begin(OP).await?;
            Self::insert_events(&mut tx, events, now, OP).await?;
            commit(tx, OP).await
        }

        async fn claim(
            &self,
            owner: &str,
            now: i64,
            lease_secs: i64,
            limit: u32,
        ) -> Result<Vec<OutboxRow>, StoreError> {
            // One statement, as for notices: on PostgreSQL rows another replica is
            // claiming are skipped; on SQLite the statement holds the write lock. The
            // outer WHERE re-checks the claim on the row itself.
            let sql = format!(
                "UPDATE event_outbox SET lease_owner = $2, lease_expires = $3 \
                 WHERE next_attempt_at <= $1 \
                 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires <= $1) \
                 AND id IN ( \
                     SELECT a.id FROM event_outbox a WHERE a.next_attempt_at <= $1 \
                     AND (a.lease_owner IS NULL OR a.lease_owner = $2 OR a.lease_expires <= $1) \
                     ORDER BY a.id LIMIT $4{}) \
                 RETURNING {COLUMNS}",
                D::SKIP_LOCKED
            );
            let rows = sqlx::query(&sql)
                .bind(now)
                .bind(owner)
                .bind(now.saturating_add(lease_secs))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("claim events"))?;
            let mut claimed = rows
                .iter()
                .map(Self::outbox_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by_key(|r| r.id);
            Ok(claimed)
        }

        async fn delivered(&self, id: i64) -> Result<bool, StoreError> {
            let done = sqlx::query("DELETE FROM event_outbox WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("delete an event delivery"))?;
            Ok(D::rows_affected(&done) > 0)
        }

        async fn failed(
            &self,
            id: i64,
            next_attempt_at: i64,
            error: &str,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE event_outbox SET attempts = attempts + 1, next_attempt_at = $2, \
                 last_error = $3, lease_owner = NULL, lease_expires = 0 WHERE id = $1",
            )
            .bind(id)
            .bind(next_attempt_at)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("record a failed event delivery"))?;
            Ok(())
        }

        async fn pending(&self) -> Result<u64, StoreError> {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_outbox")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::db("count event deliveries"))?;
            unsigned("pending events", n)
        }
    }
}
