//! [`Policies`] in SQL, and the policy steps of an enrolment.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::error::{exists_or_db, found, is_foreign_key_violation, unsigned};
use crate::{
    Entity, MbPolicy, NewMbPolicy, NewRuntimePolicy, Policies, PolicyRef, RuntimePolicy, StoreError,
};

/// Where a kind of policy is stored and how verifier agents reference it.
pub(super) struct PolicyTable {
    table: &'static str,
    /// The `verifier_agents` column referencing it.
    column: &'static str,
    entity: Entity,
}

const RUNTIME: PolicyTable = PolicyTable {
    table: "runtime_policies",
    column: "runtime_policy_id",
    entity: Entity::RuntimePolicy,
};

const MB: PolicyTable = PolicyTable {
    table: "mb_policies",
    column: "mb_policy_id",
    entity: Entity::MeasuredBootPolicy,
};

for_every_dialect! {
    impl SqlStore {
        async fn policy_checksum(
            &self,
            t: &PolicyTable,
            name: &str,
        ) -> Result<Option<String>, StoreError> {
            sqlx::query_scalar(&format!("SELECT checksum FROM {} WHERE name = $1", t.table))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read a policy checksum"))
        }

        fn runtime_from_row(row: &D::Row) -> Result<RuntimePolicy, StoreError> {
            Ok(RuntimePolicy {
                name: get(row, "name")?,
                checksum: get(row, "checksum")?,
                generator: get(row, "generator")?,
                tpm_policy: get(row, "tpm_policy")?,
                ima_policy: get(row, "ima_policy")?,
            })
        }

        fn mb_from_row(row: &D::Row) -> Result<MbPolicy, StoreError> {
            Ok(MbPolicy {
                name: get(row, "name")?,
                checksum: get(row, "checksum")?,
                mb_policy: get(row, "mb_policy")?,
            })
        }

        /// Inserts a runtime policy inside `tx`, returning its id.
        async fn insert_runtime(tx: &mut D::Connection, p: &RuntimePolicy) -> Result<i64, StoreError> {
            sqlx::query_scalar(
                "INSERT INTO runtime_policies (name, checksum, generator, tpm_policy, ima_policy) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(&p.name)
            .bind(&p.checksum)
            .bind(p.generator)
            .bind(&p.tpm_policy)
            .bind(&p.ima_policy)
            .fetch_one(tx)
            .await
            .map_err(|e| exists_or_db(e, Entity::RuntimePolicy, &p.name, "insert runtime policy"))
        }

        /// Inserts a measured-boot policy inside `tx`, returning its id.
        async fn insert_mb(tx: &mut D::Connection, p: &MbPolicy) -> Result<i64, StoreError> {
            sqlx::query_scalar(
                "INSERT INTO mb_policies (name, checksum, mb_policy) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(&p.name)
            .bind(&p.checksum)
            .bind(&p.mb_policy)
            .fetch_one(tx)
            .await
            .map_err(|e| exists_or_db(e, Entity::MeasuredBootPolicy, &p.name, "insert mb policy"))
        }

        /// The id of the policy `name` in `t`, locked against deletion until `tx` ends
        /// ([`NotFound`](StoreError::NotFound) if there is none).
        async fn named_policy_id(
            tx: &mut D::Connection,
            t: &PolicyTable,
            name: String,
        ) -> Result<i64, StoreError> {
            let sql = format!("SELECT id FROM {} WHERE name = $1{}", t.table, D::FOR_SHARE);
            let id: Option<i64> = sqlx::query_scalar(&sql)
                .bind(&name)
                .fetch_optional(tx)
                .await
                .map_err(StoreError::db("resolve policy"))?;
            id.ok_or(StoreError::NotFound {
                entity: t.entity,
                id: name,
            })
        }

        /// Resolves an enrolment's runtime policy to a row id inside `tx`: locks a named
        /// policy against deletion, or creates an inline one.
        pub(super) async fn resolve_runtime(
            tx: &mut D::Connection,
            r: Option<PolicyRef<NewRuntimePolicy>>,
        ) -> Result<Option<i64>, StoreError> {
            match r {
                None => Ok(None),
                Some(PolicyRef::Inline(p)) => {
                    Self::insert_runtime(tx, &p.into_stored()).await.map(Some)
                }
                Some(PolicyRef::Named(name)) => {
                    Self::named_policy_id(tx, &RUNTIME, name).await.map(Some)
                }
            }
        }

        /// [`Self::resolve_runtime`] for the measured-boot policy.
        pub(super) async fn resolve_mb(
            tx: &mut D::Connection,
            r: Option<PolicyRef<NewMbPolicy>>,
        ) -> Result<Option<i64>, StoreError> {
            match r {
                None => Ok(None),
                Some(PolicyRef::Inline(p)) => Self::insert_mb(tx, &p.into_stored()).await.map(Some),
                Some(PolicyRef::Named(name)) => Self::named_policy_id(tx, &MB, name).await.map(Some),
            }
        }

        /// Deletes the policy `name` from `t` unless a verifier agent references it. The
        /// policy row is locked first (on SQLite the write lock covers it), so an
        /// enrolment cannot start using it between the check and the delete.
        async fn delete_policy(&self, t: &PolicyTable, name: &str) -> Result<(), StoreError> {
            const OP: &str = "delete policy";
            let mut tx = self.begin(OP).await?;
            let sql = format!(
                "SELECT id FROM {} WHERE name = $1{}",
                t.table,
                D::FOR_UPDATE
            );
            let id: Option<i64> = sqlx::query_scalar(&sql)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            let Some(id) = id else {
                return Err(StoreError::NotFound {
                    entity: t.entity,
                    id: name.to_owned(),
                });
            };
            let in_use = |agents, agent_id| StoreError::PolicyInUse {
                entity: t.entity,
                name: name.to_owned(),
                agents,
                agent_id,
            };
            let sql = format!(
                "SELECT COUNT(*), MIN(agent_id) FROM verifier_agents WHERE {} = $1",
                t.column
            );
            let (users, first): (i64, Option<String>) = sqlx::query_as(&sql)
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            if let Some(first) = first {
                return Err(in_use(unsigned("agents", users)?, first));
            }
            sqlx::query(&format!("DELETE FROM {} WHERE id = $1", t.table))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    // The foreign key is the backstop should a reference appear anyway.
                    if is_foreign_key_violation(&e) {
                        in_use(1, String::new())
                    } else {
                        StoreError::db(OP)(e)
                    }
                })?;
            commit(tx, OP).await
        }

        /// Inside `tx` (an agent's deletion): deletes the runtime and measured-boot
        /// policies named `agent_id` that no agent uses any more, as Keylime's
        /// `verifier_db_delete_agent` does. That name is where an enrolment stores its
        /// inline policies, so `keylime_tenant -c update` (delete, then add with the
        /// same inline policy) finds it free again.
        pub(super) async fn delete_agent_policies(
            tx: &mut D::Connection,
            agent_id: &str,
        ) -> Result<(), StoreError> {
            for t in [&RUNTIME, &MB] {
                let sql = format!(
                    "DELETE FROM {table} WHERE name = $1 AND NOT EXISTS \
                     (SELECT 1 FROM verifier_agents WHERE {column} = {table}.id)",
                    table = t.table,
                    column = t.column,
                );
                sqlx::query(&sql)
                    .bind(agent_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db("delete an agent's policies"))?;
            }
            Ok(())
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl Policies for SqlStore {
        async fn create_runtime(&self, policy: NewRuntimePolicy) -> Result<RuntimePolicy, StoreError> {
            const OP: &str = "create runtime policy";
            let p = policy.into_stored();
            let mut tx = self.begin(OP).await?;
            Self::insert_runtime(&mut tx, &p).await?;
            commit(tx, OP).await?;
            Ok(p)
        }

        async fn update_runtime(&self, policy: NewRuntimePolicy) -> Result<RuntimePolicy, StoreError> {
            let p = policy.into_stored();
            let done = sqlx::query(
                "UPDATE runtime_policies SET checksum = $2, generator = $3, tpm_policy = $4, \
                 ima_policy = $5 WHERE name = $1",
            )
            .bind(&p.name)
            .bind(&p.checksum)
            .bind(p.generator)
            .bind(&p.tpm_policy)
            .bind(&p.ima_policy)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("update runtime policy"))?;
            found(D::rows_affected(&done), Entity::RuntimePolicy, &p.name)?;
            Ok(p)
        }

        async fn get_runtime(&self, name: &str) -> Result<Option<RuntimePolicy>, StoreError> {
            sqlx::query(
                "SELECT name, checksum, generator, tpm_policy, ima_policy FROM runtime_policies \
                 WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read runtime policy"))?
            .as_ref()
            .map(Self::runtime_from_row)
            .transpose()
        }

        async fn list_runtime(&self) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar("SELECT name FROM runtime_policies ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("list runtime policies"))
        }

        async fn delete_runtime(&self, name: &str) -> Result<(), StoreError> {
            self.delete_policy(&RUNTIME, name).await
        }

        async fn create_mb(&self, policy: NewMbPolicy) -> Result<MbPolicy, StoreError> {
            const OP: &str = "create mb policy";
            let p = policy.into_stored();
            let mut tx = self.begin(OP).await?;
            Self::insert_mb(&mut tx, &p).await?;
            commit(tx, OP).await?;
            Ok(p)
        }

        async fn update_mb(&self, policy: NewMbPolicy) -> Result<MbPolicy, StoreError> {
            let p = policy.into_stored();
            let done =
                sqlx::query("UPDATE mb_policies SET checksum = $2, mb_policy = $3 WHERE name = $1")
                    .bind(&p.name)
                    .bind(&p.checksum)
                    .bind(&p.mb_policy)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("update mb policy"))?;
            found(D::rows_affected(&done), Entity::MeasuredBootPolicy, &p.name)?;
            Ok(p)
        }

        async fn get_mb(&self, name: &str) -> Result<Option<MbPolicy>, StoreError> {
            sqlx::query("SELECT name, checksum, mb_policy FROM mb_policies WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read mb policy"))?
                .as_ref()
                .map(Self::mb_from_row)
                .transpose()
        }

        async fn list_mb(&self) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar("SELECT name FROM mb_policies ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("list mb policies"))
        }

        async fn delete_mb(&self, name: &str) -> Result<(), StoreError> {
            self.delete_policy(&MB, name).await
        }

        async fn runtime_checksum(&self, name: &str) -> Result<Option<String>, StoreError> {
            self.policy_checksum(&RUNTIME, name).await
        }

        async fn mb_checksum(&self, name: &str) -> Result<Option<String>, StoreError> {
            self.policy_checksum(&MB, name).await
        }
    }
}
