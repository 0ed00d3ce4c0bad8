//! [`Notices`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::error::unsigned;
use crate::notices::{NewNotice, NoticeLease, Notices, PendingNotice};
use crate::StoreError;

const COLUMNS: &str =
    "id, agent_id, channel, target, notice, created_at, attempts, next_attempt_at, last_error";

for_every_dialect! {
    impl SqlStore {
        fn notice_from_row(row: &D::Row) -> Result<PendingNotice, StoreError> {
            Ok(PendingNotice {
                id: get(row, "id")?,
                agent_id: get(row, "agent_id")?,
                channel: get(row, "channel")?,
                target: get(row, "target")?,
                notice: get(row, "notice")?,
                created_at: get(row, "created_at")?,
                attempts: unsigned("attempts", get(row, "attempts")?)?,
                next_attempt_at: get(row, "next_attempt_at")?,
                last_error: get(row, "last_error")?,
            })
        }

        fn notices_from_rows(rows: &[D::Row]) -> Result<Vec<PendingNotice>, StoreError> {
            rows.iter().map(Self::notice_from_row).collect()
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl Notices for SqlStore {
        async fn record(
            &self,
            deliveries: &[NewNotice],
            now: i64,
            lease: Option<&NoticeLease>,
        ) -> Result<Vec<PendingNotice>, StoreError> {
            const OP: &str = "record notices";
            let mut tx = self.begin(OP).await?;
            let mut recorded = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let sql = format!(
                    "INSERT INTO pending_notices \
                     (agent_id, channel, target, notice, created_at, attempts, next_attempt_at, \
                      holder, lease_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $5, $6, $7) RETURNING {COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(d.agent_id.as_str())
                    .bind(d.channel.as_str())
                    .bind(d.target.as_str())
                    .bind(d.notice.as_str())
                    .bind(now)
                    .bind(lease.map(|l| l.holder.as_str()))
                    .bind(lease.map_or(0, |l| l.until))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                recorded.push(Self::notice_from_row(&row)?);
            }
            commit(tx, OP).await?;
            Ok(recorded)
        }

        async fn claim(
            &self,
            lease: &NoticeLease,
            now: i64,
            limit: u32,
        ) -> Result<Vec<PendingNotice>, StoreError> {
            // As for agent leases: on PostgreSQL rows another replica is claiming are
            // skipped; on SQLite the statement holds the write lock. The outer WHERE
            // re-checks expiry on the row itself.
            let sql = format!(
                "UPDATE pending_notices SET holder = $1, lease_expires_at = $3 \
                 WHERE lease_expires_at <= $2 AND id IN ( \
                     SELECT a.id FROM pending_notices a WHERE a.lease_expires_at <= $2 \
                     ORDER BY a.id LIMIT $4{}) \
                 RETURNING {COLUMNS}",
                D::SKIP_LOCKED
            );
            let rows = sqlx::query(&sql)
                .bind(lease.holder.as_str())
                .bind(now)
                .bind(lease.until)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("claim notices"))?;
            let mut claimed = Self::notices_from_rows(&rows)?;
            claimed.sort_by_key(|n| n.id);
            Ok(claimed)
        }

        async fn renew(&self, lease: &NoticeLease, now: i64) -> Result<u64, StoreError> {
            let done = sqlx::query(
                "UPDATE pending_notices SET lease_expires_at = $3 \
                 WHERE holder = $1 AND lease_expires_at > $2",
            )
            .bind(lease.holder.as_str())
            .bind(now)
            .bind(lease.until)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("renew notice leases"))?;
            Ok(D::rows_affected(&done))
        }

        async fn pending(&self) -> Result<Vec<PendingNotice>, StoreError> {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM pending_notices ORDER BY id"))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("list notices"))?;
            Self::notices_from_rows(&rows)
        }

        async fn due(&self, now: i64) -> Result<Vec<PendingNotice>, StoreError> {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM pending_notices WHERE next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, id"
            ))
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list due notices"))?;
            Self::notices_from_rows(&rows)
        }

        async fn delivered(&self, id: i64) -> Result<bool, StoreError> {
            let done = sqlx::query("DELETE FROM pending_notices WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("delete notice"))?;
            Ok(D::rows_affected(&done) > 0)
        }

        async fn failed(
            &self,
            id: i64,
            next_attempt_at: i64,
            error: &str,
        ) -> Result<Option<PendingNotice>, StoreError> {
            sqlx::query(&format!(
                "UPDATE pending_notices SET attempts = attempts + 1, next_attempt_at = $2, \
                 last_error = $3 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(next_attempt_at)
            .bind(error)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("record a failed notice attempt"))?
            .as_ref()
            .map(Self::notice_from_row)
            .transpose()
        }
    }
}
