//! [`HardwareClasses`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get};
use crate::error::{exists_or_db, found, is_foreign_key_violation, unsigned};
use crate::{Entity, HardwareClass, HardwareClasses, StoreError};

const COLUMNS: &str = "name, description, golden, mb_policy, runtime_policy, changed_at";

for_every_dialect! {
    impl SqlStore {
        fn class_from_row(row: &D::Row) -> Result<HardwareClass, StoreError> {
            Ok(HardwareClass {
                name: get(row, "name")?,
                description: get(row, "description")?,
                golden: get(row, "golden")?,
                mb_policy: get(row, "mb_policy")?,
                runtime_policy: get(row, "runtime_policy")?,
                changed_at: get(row, "changed_at")?,
            })
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl HardwareClasses for SqlStore {
        async fn create(&self, c: HardwareClass) -> Result<(), StoreError> {
            const OP: &str = "create hardware class";
            sqlx::query(&format!("INSERT INTO hardware_classes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"))
                .bind(&c.name)
                .bind(&c.description)
                .bind(&c.golden)
                .bind(&c.mb_policy)
                .bind(&c.runtime_policy)
                .bind(c.changed_at)
                .execute(&self.pool)
                .await
                .map_err(|e| exists_or_db(e, Entity::HardwareClass, &c.name, OP))?;
            Ok(())
        }

        async fn update(&self, c: HardwareClass) -> Result<(), StoreError> {
            let done = sqlx::query(
                "UPDATE hardware_classes SET description = $2, golden = $3, mb_policy = $4, \
                 runtime_policy = $5, changed_at = $6 WHERE name = $1",
            )
            .bind(&c.name)
            .bind(&c.description)
            .bind(&c.golden)
            .bind(&c.mb_policy)
            .bind(&c.runtime_policy)
            .bind(c.changed_at)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("update hardware class"))?;
            found(D::rows_affected(&done), Entity::HardwareClass, &c.name)
        }

        async fn get(&self, name: &str) -> Result<Option<HardwareClass>, StoreError> {
            sqlx::query(&format!("SELECT {COLUMNS} FROM hardware_classes WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read hardware class"))?
                .as_ref()
                .map(Self::class_from_row)
                .transpose()
        }

        async fn list(&self) -> Result<Vec<HardwareClass>, StoreError> {
            sqlx::query(&format!("SELECT {COLUMNS} FROM hardware_classes ORDER BY name"))
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("list hardware classes"))?
                .iter()
                .map(Self::class_from_row)
                .collect()
        }

        async fn users(&self, name: &str) -> Result<u64, StoreError> {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM verifier_agents WHERE hardware_class = $1",
            )
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("count a hardware class's nodes"))?;
            unsigned("users", n)
        }

        async fn delete(&self, name: &str) -> Result<(), StoreError> {
            const OP: &str = "delete hardware class";
            let mut tx = self.begin(OP).await?;
            let sql = format!("SELECT name FROM hardware_classes WHERE name = $1{}", D::FOR_UPDATE);
            let exists: Option<String> = sqlx::query_scalar(&sql)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    entity: Entity::HardwareClass,
                    id: name.to_owned(),
                });
            }
            let in_use = |agents, agent_id| StoreError::PolicyInUse {
                entity: Entity::HardwareClass,
                name: name.to_owned(),
                agents,
                agent_id,
            };
            let (users, first): (i64, Option<String>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(agent_id) FROM verifier_agents WHERE hardware_class = $1",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
            if let Some(first) = first {
                return Err(in_use(unsigned("agents", users)?, first));
            }
            sqlx::query("DELETE FROM hardware_classes WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    // The foreign key is the backstop should a node take the class anyway.
                    if is_foreign_key_violation(&e) {
                        in_use(1, String::new())
                    } else {
                        StoreError::db(OP)(e)
                    }
                })?;
            commit(tx, OP).await
        }
    }
}
