//! [`ResponseActions`] and [`KnownGoodSets`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::error::{exists_or_db, found};
use crate::response::{ActionRecord, KnownGood, KnownGoodSets, PolicyVersion, ResponseActions};
use crate::{checksum, Entity, StoreError};

for_every_dialect! {
    impl SqlStore {
        fn known_good_from_row(row: &D::Row) -> Result<KnownGood, StoreError> {
            Ok(KnownGood {
                name: get(row, "name")?,
                class: get(row, "class")?,
                measurements: get(row, "measurements")?,
                recorded_by: get(row, "recorded_by")?,
                recorded_at: get(row, "recorded_at")?,
            })
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl ResponseActions for SqlStore {
        async fn record(&self, a: &ActionRecord) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO response_actions (agent_id, event_uuid, rule, action, outcome, \
                 detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(a.agent_id.as_str())
            .bind(a.event_uuid.as_str())
            .bind(a.rule.as_str())
            .bind(a.action.as_str())
            .bind(a.outcome.as_str())
            .bind(a.detail.as_str())
            .bind(a.at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("record a response action"))?;
            Ok(())
        }

        async fn recent(&self, agent_id: &str, limit: u32) -> Result<Vec<ActionRecord>, StoreError> {
            let rows = sqlx::query(
                "SELECT agent_id, event_uuid, rule, action, outcome, detail, at \
                 FROM response_actions WHERE agent_id = $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(agent_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list response actions"))?;
            rows.iter()
                .map(|r| {
                    Ok(ActionRecord {
                        agent_id: get(r, "agent_id")?,
                        event_uuid: get(r, "event_uuid")?,
                        rule: get(r, "rule")?,
                        action: get(r, "action")?,
                        outcome: get(r, "outcome")?,
                        detail: get(r, "detail")?,
                        at: get(r, "at")?,
                    })
                })
                .collect()
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl KnownGoodSets for SqlStore {
        async fn add(&self, set: &KnownGood) -> Result<(), StoreError> {
            const OP: &str = "add a known-good set";
            sqlx::query(
                "INSERT INTO known_good (name, class, measurements, recorded_by, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(set.name.as_str())
            .bind(set.class.as_str())
            .bind(set.measurements.as_str())
            .bind(set.recorded_by.as_str())
            .bind(set.recorded_at)
            .execute(&self.pool)
            .await
            .map_err(|e| exists_or_db(e, Entity::KnownGood, &set.name, OP))?;
            Ok(())
        }

        async fn get(&self, name: &str) -> Result<Option<KnownGood>, StoreError> {
            sqlx::query("SELECT * FROM known_good WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read a known-good set"))?
                .as_ref()
                .map(Self::known_good_from_row)
                .transpose()
        }

        async fn list(&self, class: Option<&str>) -> Result<Vec<KnownGood>, StoreError> {
            let rows = sqlx::query(
                "SELECT * FROM known_good WHERE CAST($1 AS TEXT) IS NULL OR class = $1 \
                 ORDER BY name",
            )
            .bind(class)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list known-good sets"))?;
            rows.iter().map(Self::known_good_from_row).collect()
        }

        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            let done = sqlx::query("DELETE FROM known_good WHERE name = $1")
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("delete a known-good set"))?;
            found(D::rows_affected(&done), Entity::KnownGood, name)
        }

        async fn adopt(
            &self,
            agent_id: &str,
            tpm_policy: &str,
            runtime_policy: Option<&str>,
            reason: &str,
            at: i64,
        ) -> Result<(), StoreError> {
            const OP: &str = "adopt relearnt policies";
            let mut tx = self.begin(OP).await?;
            let sql = format!(
                "SELECT a.tpm_policy, a.runtime_policy_id, rp.ima_policy \
                 FROM verifier_agents a LEFT JOIN runtime_policies rp \
                 ON rp.id = a.runtime_policy_id WHERE a.agent_id = $1{}",
                D::FOR_UPDATE_OF_A
            );
            let row = sqlx::query(&sql)
                .bind(agent_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?
                .ok_or_else(|| StoreError::NotFound {
                    entity: Entity::VerifierAgent,
                    id: agent_id.to_owned(),
                })?;
            let old_tpm: String = get(&row, "tpm_policy")?;
            let runtime_id: Option<i64> = get(&row, "runtime_policy_id")?;
            let old_runtime: Option<String> = get(&row, "ima_policy")?;
            sqlx::query(
                "INSERT INTO policy_versions (agent_id, tpm_policy, runtime_policy, reason, at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(agent_id)
            .bind(old_tpm.as_str())
            .bind(old_runtime.as_deref())
            .bind(reason)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
            sqlx::query("UPDATE verifier_agents SET tpm_policy = $2 WHERE agent_id = $1")
                .bind(agent_id)
                .bind(tpm_policy)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            if let (Some(text), Some(id)) = (runtime_policy, runtime_id) {
                sqlx::query(
                    "UPDATE runtime_policies SET ima_policy = $2, checksum = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(text)
                .bind(checksum(Some(text)))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            }
            commit(tx, OP).await
        }

        async fn versions(&self, agent_id: &str) -> Result<Vec<PolicyVersion>, StoreError> {
            let rows = sqlx::query(
                "SELECT agent_id, tpm_policy, runtime_policy, reason, at FROM policy_versions \
                 WHERE agent_id = $1 ORDER BY id",
            )
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list policy versions"))?;
            rows.iter()
                .map(|r| {
                    Ok(PolicyVersion {
                        agent_id: get(r, "agent_id")?,
                        tpm_policy: get(r, "tpm_policy")?,
                        runtime_policy: get(r, "runtime_policy")?,
                        reason: get(r, "reason")?,
                        at: get(r, "at")?,
                    })
                })
                .collect()
        }
    }
}
