//! [`Identities`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::{Identities, NonceUse, StoreError};

for_every_dialect! {
    #[async_trait]
    impl Identities for SqlStore {
        async fn issue_nonce(&self, nonce: &str, now: i64, forget_before: i64) -> Result<(), StoreError> {
            const OP: &str = "issue an identity nonce";
            let mut tx = self.begin(OP).await?;
            sqlx::query("DELETE FROM identity_nonces WHERE issued_at < $1")
                .bind(forget_before)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            sqlx::query("INSERT INTO identity_nonces (nonce, issued_at) VALUES ($1, $2)")
                .bind(nonce)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            commit(tx, OP).await
        }

        async fn use_nonce(&self, nonce: &str, now: i64, issued_after: i64) -> Result<NonceUse, StoreError> {
            const OP: &str = "use an identity nonce";
            // One statement: of concurrent users, one changes the row.
            let done = sqlx::query(
                "UPDATE identity_nonces SET used_at = $2 \
                 WHERE nonce = $1 AND used_at IS NULL AND issued_at >= $3",
            )
            .bind(nonce)
            .bind(now)
            .bind(issued_after)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db(OP))?;
            if D::rows_affected(&done) == 1 {
                return Ok(NonceUse::Fresh);
            }
            let row = sqlx::query("SELECT used_at FROM identity_nonces WHERE nonce = $1 AND issued_at >= $2")
                .bind(nonce)
                .bind(issued_after)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db(OP))?;
            let Some(row) = row else {
                return Ok(NonceUse::Unknown);
            };
            let used_at: Option<i64> = get(&row, "used_at")?;
            Ok(if used_at.is_some() { NonceUse::Used } else { NonceUse::Unknown })
        }

        async fn record_issued(&self, agent_id: &str, spiffe_id: &str, now: i64) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO issued_identities (agent_id, spiffe_id, issued_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent_id, spiffe_id) DO NOTHING",
            )
            .bind(agent_id)
            .bind(spiffe_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("record an issued identity"))?;
            Ok(())
        }

        async fn take_issued(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
            let rows = sqlx::query(
                "DELETE FROM issued_identities WHERE agent_id = $1 RETURNING spiffe_id, issued_at",
            )
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("take the issued identities"))?;
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let issued_at: i64 = get(row, "issued_at")?;
                let spiffe_id: String = get(row, "spiffe_id")?;
                ids.push((issued_at, spiffe_id));
            }
            ids.sort();
            Ok(ids.into_iter().map(|(_, id)| id).collect())
        }
    }
}
