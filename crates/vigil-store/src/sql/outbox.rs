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
            const OP: &str = "claim events";
            let mut tx = self.begin(OP).await?;
            let sql = format!(
                "SELECT id FROM event_outbox WHERE next_attempt_at <= $1 \
                 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires <= $1) \
                 ORDER BY id LIMIT $3{}",
                D::SKIP_LOCKED_ROWS
            );
            let ids: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(now)
                .bind(owner)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                let row = sqlx::query(&format!(
                    "UPDATE event_outbox SET lease_owner = $2, lease_expires = $3 \
                     WHERE id = $1 RETURNING {COLUMNS}"
                ))
                .bind(id)
                .bind(owner)
                .bind(now.saturating_add(lease_secs))
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
                rows.push(Self::outbox_from_row(&row)?);
            }
            commit(tx, OP).await?;
            Ok(rows)
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
