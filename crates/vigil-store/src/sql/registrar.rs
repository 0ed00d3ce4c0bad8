//! [`RegistrarAgents`] in SQL.

use async_trait::async_trait;

use super::{commit, for_every_dialect, get, port};
use crate::error::{exists_or_db, found, unsigned};
use crate::{
    registrar, Entity, RegisterOutcome, RegistrarAgent, RegistrarAgents, Registration, StoreError,
};

const COLUMNS: &str = "agent_id, ek_tpm, ekcert, aik_tpm, iak_tpm, iak_cert, \
     idevid_tpm, idevid_cert, key, active, ip, port, mtls_cert, regcount";

for_every_dialect! {
    impl SqlStore {
        fn registrar_from_row(row: &D::Row) -> Result<RegistrarAgent, StoreError> {
            Ok(RegistrarAgent {
                agent_id: get(row, "agent_id")?,
                ek_tpm: get(row, "ek_tpm")?,
                ekcert: get(row, "ekcert")?,
                aik_tpm: get(row, "aik_tpm")?,
                iak_tpm: get(row, "iak_tpm")?,
                iak_cert: get(row, "iak_cert")?,
                idevid_tpm: get(row, "idevid_tpm")?,
                idevid_cert: get(row, "idevid_cert")?,
                key: get(row, "key")?,
                active: get(row, "active")?,
                ip: get(row, "ip")?,
                port: port("port", get(row, "port")?)?,
                mtls_cert: get(row, "mtls_cert")?,
                regcount: unsigned("regcount", get(row, "regcount")?)?,
            })
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl RegistrarAgents for SqlStore {
        async fn get(&self, agent_id: &str) -> Result<Option<RegistrarAgent>, StoreError> {
            let sql = format!("SELECT {COLUMNS} FROM registrar_agents WHERE agent_id = $1");
            sqlx::query(&sql)
                .bind(agent_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read registrar agent"))?
                .as_ref()
                .map(Self::registrar_from_row)
                .transpose()
        }

        async fn list(&self) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar("SELECT agent_id FROM registrar_agents ORDER BY agent_id")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("list registrar agents"))
        }

        async fn register(&self, reg: Registration) -> Result<RegisterOutcome, StoreError> {
            const OP: &str = "register agent";
            // On PostgreSQL a concurrent first registration of the same id makes our
            // INSERT a no-op; the retry then sees its row (locked) and applies the
            // identity rules to it. On SQLite the write lock keeps registrations apart
            // and the loop never repeats.
            for _ in 0..3 {
                let mut tx = self.begin(OP).await?;
                let sql = format!(
                    "SELECT {COLUMNS} FROM registrar_agents WHERE agent_id = $1{}",
                    D::FOR_UPDATE
                );
                let existing = sqlx::query(&sql)
                    .bind(&reg.agent_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db(OP))?
                    .as_ref()
                    .map(Self::registrar_from_row)
                    .transpose()?;
                let is_new = existing.is_none();
                let merged = match registrar::merge(existing, reg.clone()) {
                    Ok(m) => m,
                    Err(field) => return Ok(RegisterOutcome::IdentityChanged { field }),
                };
                let sql = if is_new {
                    "INSERT INTO registrar_agents (agent_id, ek_tpm, ekcert, aik_tpm, iak_tpm, \
                     iak_cert, idevid_tpm, idevid_cert, key, active, ip, port, mtls_cert, \
                     regcount) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                     ON CONFLICT (agent_id) DO NOTHING"
                } else {
                    "UPDATE registrar_agents SET ek_tpm = $2, ekcert = $3, aik_tpm = $4, \
                     iak_tpm = $5, iak_cert = $6, idevid_tpm = $7, idevid_cert = $8, key = $9, \
                     active = $10, ip = $11, port = $12, mtls_cert = $13, regcount = $14 \
                     WHERE agent_id = $1"
                };
                let done = sqlx::query(sql)
                    .bind(&merged.agent_id)
                    .bind(&merged.ek_tpm)
                    .bind(&merged.ekcert)
                    .bind(&merged.aik_tpm)
                    .bind(&merged.iak_tpm)
                    .bind(&merged.iak_cert)
                    .bind(&merged.idevid_tpm)
                    .bind(&merged.idevid_cert)
                    .bind(&merged.key)
                    .bind(merged.active)
                    .bind(&merged.ip)
                    .bind(merged.port.map(i64::from))
                    .bind(&merged.mtls_cert)
                    .bind(i64::from(merged.regcount))
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                if D::rows_affected(&done) == 0 {
                    continue;
                }
                commit(tx, OP).await?;
                return Ok(if is_new {
                    RegisterOutcome::Created(merged)
                } else {
                    RegisterOutcome::Updated(merged)
                });
            }
            Err(StoreError::Database {
                op: OP,
                source: "the record kept changing under concurrent registrations".into(),
            })
        }

        async fn activate(&self, agent_id: &str) -> Result<(), StoreError> {
            let done = sqlx::query("UPDATE registrar_agents SET active = TRUE WHERE agent_id = $1")
                .bind(agent_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("activate registrar agent"))?;
            found(D::rows_affected(&done), Entity::RegistrarAgent, agent_id)
        }

        async fn delete(&self, agent_id: &str) -> Result<(), StoreError> {
            let done = sqlx::query("DELETE FROM registrar_agents WHERE agent_id = $1")
                .bind(agent_id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("delete registrar agent"))?;
            found(D::rows_affected(&done), Entity::RegistrarAgent, agent_id)
        }

        async fn put(&self, a: &RegistrarAgent, replace: bool) -> Result<(), StoreError> {
            const OP: &str = "import registrar agent";
            let on_conflict = if replace {
                " ON CONFLICT (agent_id) DO UPDATE SET ek_tpm = excluded.ek_tpm, \
                 ekcert = excluded.ekcert, aik_tpm = excluded.aik_tpm, \
                 iak_tpm = excluded.iak_tpm, iak_cert = excluded.iak_cert, \
                 idevid_tpm = excluded.idevid_tpm, idevid_cert = excluded.idevid_cert, \
                 key = excluded.key, active = excluded.active, ip = excluded.ip, \
                 port = excluded.port, mtls_cert = excluded.mtls_cert, \
                 regcount = excluded.regcount"
            } else {
                ""
            };
            let sql = format!(
                "INSERT INTO registrar_agents ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14){on_conflict}"
            );
            sqlx::query(&sql)
                .bind(&a.agent_id)
                .bind(&a.ek_tpm)
                .bind(&a.ekcert)
                .bind(&a.aik_tpm)
                .bind(&a.iak_tpm)
                .bind(&a.iak_cert)
                .bind(&a.idevid_tpm)
                .bind(&a.idevid_cert)
                .bind(&a.key)
                .bind(a.active)
                .bind(&a.ip)
                .bind(a.port.map(i64::from))
                .bind(&a.mtls_cert)
                .bind(i64::from(a.regcount))
                .execute(&self.pool)
                .await
                .map_err(|e| exists_or_db(e, Entity::RegistrarAgent, &a.agent_id, OP))?;
            Ok(())
        }
    }
}
