//! The PostgreSQL backend: every repository over one `PgPool`.
//!
//! Concurrency: read-modify-write calls lock the rows they read (`FOR UPDATE`, or
//! `FOR SHARE` for a policy an enrolment references), so two replicas serialise on
//! the same agent and never on different ones. Lease acquisition skips rows another
//! replica is claiming (`FOR UPDATE … SKIP LOCKED`) instead of waiting for them.

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::error::{exists_or_db, found, is_foreign_key_violation, signed, unsigned};
use crate::leases::check_fence;
use crate::verifier::RoundCounts;
use crate::verifier::{decode_list, encode_list};
use crate::{
    migrations, registrar, AgentState, EnrolledAgent, Enrolment, Entity, FailureRecord, Fence,
    ImaProgress, Lease, Leases, MbPolicy, NewMbPolicy, NewRuntimePolicy, Policies, PolicyRef,
    QuoteAlgs, RegisterOutcome, RegistrarAgent, RegistrarAgents, Registration, RoundOutcome,
    RoundUpdate, RuntimePolicy, StoreError, VerifierAgent, VerifierAgents,
};

/// Pool size: the verifier's round tasks share it; PostgreSQL's default limit is 100
/// connections for every replica together.
const MAX_CONNECTIONS: u32 = 10;

pub(crate) struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect(url)
            .await
            .map_err(StoreError::db("connect to PostgreSQL"))?;
        migrations::migrator(migrations::POSTGRES)
            .await?
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(Box::new(e)))?;
        Ok(Self { pool })
    }

    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::db(op))
    }
}

async fn commit(tx: Transaction<'static, Postgres>, op: &'static str) -> Result<(), StoreError> {
    tx.commit().await.map_err(StoreError::db(op))
}

fn get<'r, T>(row: &'r PgRow, col: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(StoreError::db("decode a row"))
}

fn port(field: &'static str, v: Option<i64>) -> Result<Option<u16>, StoreError> {
    v.map(|p| unsigned(field, p)).transpose()
}

// ---------------------------------------------------------------------------------
// Registrar

const REGISTRAR_COLUMNS: &str = "agent_id, ek_tpm, ekcert, aik_tpm, iak_tpm, iak_cert, \
     idevid_tpm, idevid_cert, key, active, ip, port, mtls_cert, regcount";

fn registrar_from_row(row: &PgRow) -> Result<RegistrarAgent, StoreError> {
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

#[async_trait]
impl RegistrarAgents for PgStore {
    async fn get(&self, agent_id: &str) -> Result<Option<RegistrarAgent>, StoreError> {
        let sql = format!("SELECT {REGISTRAR_COLUMNS} FROM registrar_agents WHERE agent_id = $1");
        sqlx::query(&sql)
            .bind(agent_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read registrar agent"))?
            .as_ref()
            .map(registrar_from_row)
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
        // A concurrent first registration of the same id makes our INSERT a no-op; the
        // retry then sees its row and applies the identity rules to it.
        for _ in 0..3 {
            let mut tx = self.begin(OP).await?;
            let sql = format!(
                "SELECT {REGISTRAR_COLUMNS} FROM registrar_agents WHERE agent_id = $1 FOR UPDATE"
            );
            let existing = sqlx::query(&sql)
                .bind(&reg.agent_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?
                .as_ref()
                .map(registrar_from_row)
                .transpose()?;
            let is_new = existing.is_none();
            let merged = match registrar::merge(existing, reg.clone()) {
                Ok(m) => m,
                Err(field) => return Ok(RegisterOutcome::IdentityChanged { field }),
            };
            let sql = if is_new {
                "INSERT INTO registrar_agents (agent_id, ek_tpm, ekcert, aik_tpm, iak_tpm, \
                 iak_cert, idevid_tpm, idevid_cert, key, active, ip, port, mtls_cert, regcount) \
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
            if done.rows_affected() == 0 {
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
        found(done.rows_affected(), Entity::RegistrarAgent, agent_id)
    }

    async fn delete(&self, agent_id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM registrar_agents WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("delete registrar agent"))?;
        found(done.rows_affected(), Entity::RegistrarAgent, agent_id)
    }
}

// ---------------------------------------------------------------------------------
// Policies

fn runtime_from_row(row: &PgRow) -> Result<RuntimePolicy, StoreError> {
    Ok(RuntimePolicy {
        name: get(row, "name")?,
        checksum: get(row, "checksum")?,
        generator: get(row, "generator")?,
        tpm_policy: get(row, "tpm_policy")?,
        ima_policy: get(row, "ima_policy")?,
    })
}

fn mb_from_row(row: &PgRow) -> Result<MbPolicy, StoreError> {
    Ok(MbPolicy {
        name: get(row, "name")?,
        checksum: get(row, "checksum")?,
        mb_policy: get(row, "mb_policy")?,
    })
}

/// Inserts a runtime policy inside `tx`, returning its id.
async fn insert_runtime(
    tx: &mut Transaction<'static, Postgres>,
    p: &RuntimePolicy,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO runtime_policies (name, checksum, generator, tpm_policy, ima_policy) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(&p.name)
    .bind(&p.checksum)
    .bind(p.generator)
    .bind(&p.tpm_policy)
    .bind(&p.ima_policy)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| exists_or_db(e, Entity::RuntimePolicy, &p.name, "insert runtime policy"))
}

/// Inserts a measured-boot policy inside `tx`, returning its id.
async fn insert_mb(
    tx: &mut Transaction<'static, Postgres>,
    p: &MbPolicy,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO mb_policies (name, checksum, mb_policy) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&p.name)
    .bind(&p.checksum)
    .bind(&p.mb_policy)
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| exists_or_db(e, Entity::MeasuredBootPolicy, &p.name, "insert mb policy"))
}

/// Deletes the policy `name` from `table` unless a verifier agent references it
/// through `column`. The policy row is locked first, so an enrolment cannot start
/// using it between the check and the delete.
async fn delete_policy(
    store: &PgStore,
    table: &'static str,
    column: &'static str,
    entity: Entity,
    name: &str,
) -> Result<(), StoreError> {
    const OP: &str = "delete policy";
    let mut tx = store.begin(OP).await?;
    let id: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT id FROM {table} WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    let Some(id) = id else {
        return Err(StoreError::NotFound {
            entity,
            id: name.to_owned(),
        });
    };
    let users: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM verifier_agents WHERE {column} = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::db(OP))?;
    if users > 0 {
        return Err(StoreError::PolicyInUse {
            entity,
            name: name.to_owned(),
            agents: unsigned("agents", users)?,
        });
    }
    sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // The foreign key is the backstop should a reference appear anyway.
            if is_foreign_key_violation(&e) {
                StoreError::PolicyInUse {
                    entity,
                    name: name.to_owned(),
                    agents: 1,
                }
            } else {
                StoreError::db(OP)(e)
            }
        })?;
    commit(tx, OP).await
}

#[async_trait]
impl Policies for PgStore {
    async fn create_runtime(&self, policy: NewRuntimePolicy) -> Result<RuntimePolicy, StoreError> {
        const OP: &str = "create runtime policy";
        let p = policy.into_stored();
        let mut tx = self.begin(OP).await?;
        insert_runtime(&mut tx, &p).await?;
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
        found(done.rows_affected(), Entity::RuntimePolicy, &p.name)?;
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
        .map(runtime_from_row)
        .transpose()
    }

    async fn list_runtime(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT name FROM runtime_policies ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list runtime policies"))
    }

    async fn delete_runtime(&self, name: &str) -> Result<(), StoreError> {
        delete_policy(
            self,
            "runtime_policies",
            "runtime_policy_id",
            Entity::RuntimePolicy,
            name,
        )
        .await
    }

    async fn create_mb(&self, policy: NewMbPolicy) -> Result<MbPolicy, StoreError> {
        const OP: &str = "create mb policy";
        let p = policy.into_stored();
        let mut tx = self.begin(OP).await?;
        insert_mb(&mut tx, &p).await?;
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
        found(done.rows_affected(), Entity::MeasuredBootPolicy, &p.name)?;
        Ok(p)
    }

    async fn get_mb(&self, name: &str) -> Result<Option<MbPolicy>, StoreError> {
        sqlx::query("SELECT name, checksum, mb_policy FROM mb_policies WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read mb policy"))?
            .as_ref()
            .map(mb_from_row)
            .transpose()
    }

    async fn list_mb(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT name FROM mb_policies ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list mb policies"))
    }

    async fn delete_mb(&self, name: &str) -> Result<(), StoreError> {
        delete_policy(
            self,
            "mb_policies",
            "mb_policy_id",
            Entity::MeasuredBootPolicy,
            name,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------
// Verifier agents

/// Resolves an enrolment's policy reference to a row id inside `tx`: locks a named
/// policy against deletion, or creates an inline one.
async fn resolve_runtime(
    tx: &mut Transaction<'static, Postgres>,
    r: Option<PolicyRef<NewRuntimePolicy>>,
) -> Result<Option<i64>, StoreError> {
    match r {
        None => Ok(None),
        Some(PolicyRef::Inline(p)) => insert_runtime(tx, &p.into_stored()).await.map(Some),
        Some(PolicyRef::Named(name)) => {
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM runtime_policies WHERE name = $1 FOR SHARE")
                    .bind(&name)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(StoreError::db("resolve runtime policy"))?;
            id.map(Some).ok_or(StoreError::NotFound {
                entity: Entity::RuntimePolicy,
                id: name,
            })
        }
    }
}

async fn resolve_mb(
    tx: &mut Transaction<'static, Postgres>,
    r: Option<PolicyRef<NewMbPolicy>>,
) -> Result<Option<i64>, StoreError> {
    match r {
        None => Ok(None),
        Some(PolicyRef::Inline(p)) => insert_mb(tx, &p.into_stored()).await.map(Some),
        Some(PolicyRef::Named(name)) => {
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM mb_policies WHERE name = $1 FOR SHARE")
                    .bind(&name)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(StoreError::db("resolve mb policy"))?;
            id.map(Some).ok_or(StoreError::NotFound {
                entity: Entity::MeasuredBootPolicy,
                id: name,
            })
        }
    }
}

fn agent_from_rows(
    row: &PgRow,
    pcrs: Vec<PgRow>,
    failures: Vec<PgRow>,
) -> Result<VerifierAgent, StoreError> {
    let enrolment = EnrolledAgent {
        agent_id: get(row, "agent_id")?,
        v: get(row, "v")?,
        ip: get(row, "ip")?,
        port: port("port", get(row, "port")?)?,
        verifier_id: get(row, "verifier_id")?,
        verifier_ip: get(row, "verifier_ip")?,
        verifier_port: unsigned("verifier_port", get(row, "verifier_port")?)?,
        public_key: get(row, "public_key")?,
        tpm_policy: get(row, "tpm_policy")?,
        meta_data: get(row, "meta_data")?,
        runtime_policy: get(row, "runtime_policy_name")?,
        mb_policy: get(row, "mb_policy_name")?,
        ima_sign_verification_keys: get(row, "ima_sign_verification_keys")?,
        revocation_key: get(row, "revocation_key")?,
        accept_tpm_hash_algs: decode_list(
            "accept_tpm_hash_algs",
            &get::<String>(row, "accept_tpm_hash_algs")?,
        )?,
        accept_tpm_encryption_algs: decode_list(
            "accept_tpm_encryption_algs",
            &get::<String>(row, "accept_tpm_encryption_algs")?,
        )?,
        accept_tpm_signing_algs: decode_list(
            "accept_tpm_signing_algs",
            &get::<String>(row, "accept_tpm_signing_algs")?,
        )?,
        supported_version: get(row, "supported_version")?,
        ak_tpm: get(row, "ak_tpm")?,
        mtls_cert: get(row, "mtls_cert")?,
    };
    let mut running_pcrs = std::collections::BTreeMap::new();
    for r in &pcrs {
        running_pcrs.insert(get(r, "bank")?, get(r, "value")?);
    }
    let last_failures = failures
        .iter()
        .map(|r| {
            Ok(FailureRecord {
                event_id: get(r, "event_id")?,
                severity_label: get(r, "severity_label")?,
                recoverable: get(r, "recoverable")?,
                context: get(r, "context")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let state = AgentState {
        operational_state: unsigned("operational_state", get(row, "operational_state")?)?,
        algs: QuoteAlgs {
            hash_alg: get(row, "hash_alg")?,
            enc_alg: get(row, "enc_alg")?,
            sign_alg: get(row, "sign_alg")?,
        },
        boottime: get(row, "boottime")?,
        ima: ImaProgress {
            next_entry: unsigned("ima_next_entry", get(row, "ima_next_entry")?)?,
            running_pcrs,
        },
        learned_ima_keyrings: get(row, "learned_ima_keyrings")?,
        tpm_clockinfo: get(row, "tpm_clockinfo")?,
        severity_level: get::<Option<i64>>(row, "severity_level")?
            .map(|v| unsigned("severity_level", v))
            .transpose()?,
        last_event_id: get(row, "last_event_id")?,
        attestation_count: unsigned("attestation_count", get(row, "attestation_count")?)?,
        last_received_quote: get(row, "last_received_quote")?,
        last_successful_attestation: get(row, "last_successful_attestation")?,
        accept_attestations: get(row, "accept_attestations")?,
        consecutive_attestation_failures: unsigned(
            "consecutive_attestation_failures",
            get(row, "consecutive_attestation_failures")?,
        )?,
        last_failures,
    };
    Ok(VerifierAgent { enrolment, state })
}

#[async_trait]
impl VerifierAgents for PgStore {
    async fn enrol(&self, e: Enrolment) -> Result<(), StoreError> {
        const OP: &str = "enrol verifier agent";
        let mut tx = self.begin(OP).await?;
        let runtime_id = resolve_runtime(&mut tx, e.runtime_policy).await?;
        let mb_id = resolve_mb(&mut tx, e.mb_policy).await?;
        sqlx::query(
            "INSERT INTO verifier_agents (agent_id, v, ip, port, verifier_id, verifier_ip, \
             verifier_port, operational_state, public_key, tpm_policy, meta_data, \
             runtime_policy_id, mb_policy_id, ima_sign_verification_keys, revocation_key, \
             accept_tpm_hash_algs, accept_tpm_encryption_algs, accept_tpm_signing_algs, \
             supported_version, ak_tpm, mtls_cert, accept_attestations) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22)",
        )
        .bind(&e.agent_id)
        .bind(&e.v)
        .bind(&e.ip)
        .bind(e.port.map(i64::from))
        .bind(&e.verifier_id)
        .bind(&e.verifier_ip)
        .bind(i64::from(e.verifier_port))
        .bind(i64::from(e.operational_state))
        .bind(&e.public_key)
        .bind(&e.tpm_policy)
        .bind(&e.meta_data)
        .bind(runtime_id)
        .bind(mb_id)
        .bind(&e.ima_sign_verification_keys)
        .bind(&e.revocation_key)
        .bind(encode_list(&e.accept_tpm_hash_algs))
        .bind(encode_list(&e.accept_tpm_encryption_algs))
        .bind(encode_list(&e.accept_tpm_signing_algs))
        .bind(&e.supported_version)
        .bind(&e.ak_tpm)
        .bind(&e.mtls_cert)
        .bind(e.accept_attestations)
        .execute(&mut *tx)
        .await
        .map_err(|err| exists_or_db(err, Entity::VerifierAgent, &e.agent_id, OP))?;
        commit(tx, OP).await
    }

    async fn get(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError> {
        const OP: &str = "read verifier agent";
        // One snapshot for the three reads, so a round committed in between cannot mix
        // its IMA progress with the previous round's counters.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(StoreError::db(OP))?;
        let row = sqlx::query(
            "SELECT a.*, rp.name AS runtime_policy_name, mp.name AS mb_policy_name \
             FROM verifier_agents a \
             LEFT JOIN runtime_policies rp ON rp.id = a.runtime_policy_id \
             LEFT JOIN mb_policies mp ON mp.id = a.mb_policy_id \
             WHERE a.agent_id = $1",
        )
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let pcrs = sqlx::query("SELECT bank, value FROM ima_running_pcrs WHERE agent_id = $1")
            .bind(agent_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
        let failures = sqlx::query(
            "SELECT event_id, severity_label, recoverable, context FROM agent_failures \
             WHERE agent_id = $1 ORDER BY seq",
        )
        .bind(agent_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
        commit(tx, OP).await?;
        agent_from_rows(&row, pcrs, failures).map(Some)
    }

    async fn list(&self, verifier_id: Option<&str>) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT agent_id FROM verifier_agents WHERE $1::TEXT IS NULL OR verifier_id = $1 \
             ORDER BY agent_id",
        )
        .bind(verifier_id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("list verifier agents"))
    }

    async fn record_round(
        &self,
        agent_id: &str,
        u: RoundUpdate,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        const OP: &str = "record attestation round";
        let counts = RoundCounts::of(&u.outcome);
        let next_entry = u
            .ima
            .as_ref()
            .map(|i| signed("ima_next_entry", i.next_entry))
            .transpose()?;
        let mut tx = self.begin(OP).await?;
        if let Some(f) = fence {
            // Lock order is agent row, then lease row — the order `acquire` takes them
            // in — so a stale holder's round and a takeover cannot deadlock.
            let agent: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM verifier_agents WHERE agent_id = $1 FOR UPDATE")
                    .bind(agent_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::db(OP))?;
            if agent.is_none() {
                return Err(StoreError::NotFound {
                    entity: Entity::VerifierAgent,
                    id: agent_id.to_owned(),
                });
            }
            // Locking the lease row holds off a takeover until this round is written.
            let current: Option<(String, i64)> = sqlx::query_as(
                "SELECT holder, epoch FROM agent_leases WHERE agent_id = $1 FOR UPDATE",
            )
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
            check_fence(agent_id, f, current)?;
        }
        let algs = u.algs.as_ref();
        let done = sqlx::query(
            "UPDATE verifier_agents SET operational_state = $2, \
             hash_alg = COALESCE($3, hash_alg), enc_alg = COALESCE($4, enc_alg), \
             sign_alg = COALESCE($5, sign_alg), boottime = COALESCE($6, boottime), \
             tpm_clockinfo = COALESCE($7, tpm_clockinfo), \
             learned_ima_keyrings = COALESCE($8, learned_ima_keyrings), \
             severity_level = COALESCE($9, severity_level), \
             last_event_id = COALESCE($10, last_event_id), \
             last_received_quote = COALESCE($11, last_received_quote), \
             attestation_count = attestation_count + $12, \
             last_successful_attestation = COALESCE($13, last_successful_attestation), \
             consecutive_attestation_failures = CASE WHEN $14 THEN 0 \
                 ELSE consecutive_attestation_failures + $15 END, \
             ima_next_entry = COALESCE($16, ima_next_entry) \
             WHERE agent_id = $1",
        )
        .bind(agent_id)
        .bind(i64::from(u.operational_state))
        .bind(algs.map(|a| a.hash_alg.as_str()))
        .bind(algs.map(|a| a.enc_alg.as_str()))
        .bind(algs.map(|a| a.sign_alg.as_str()))
        .bind(u.boottime)
        .bind(u.tpm_clockinfo.as_deref())
        .bind(u.learned_ima_keyrings.as_deref())
        .bind(u.severity.as_ref().map(|(l, _)| i64::from(*l)))
        .bind(u.severity.as_ref().map(|(_, id)| id.as_str()))
        .bind(u.received_quote_at)
        .bind(counts.passed)
        .bind(counts.passed_at)
        .bind(counts.reset_failures)
        .bind(counts.failed)
        .bind(next_entry)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(OP))?;
        found(done.rows_affected(), Entity::VerifierAgent, agent_id)?;
        if let Some(ima) = &u.ima {
            sqlx::query("DELETE FROM ima_running_pcrs WHERE agent_id = $1")
                .bind(agent_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            for (bank, value) in &ima.running_pcrs {
                sqlx::query(
                    "INSERT INTO ima_running_pcrs (agent_id, bank, value) VALUES ($1, $2, $3)",
                )
                .bind(agent_id)
                .bind(bank)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            }
        }
        if let RoundOutcome::Failed { failures } = &u.outcome {
            sqlx::query("DELETE FROM agent_failures WHERE agent_id = $1")
                .bind(agent_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            for (seq, f) in (0_i64..).zip(failures) {
                sqlx::query(
                    "INSERT INTO agent_failures (agent_id, seq, event_id, severity_label, \
                     recoverable, context) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(agent_id)
                .bind(seq)
                .bind(&f.event_id)
                .bind(&f.severity_label)
                .bind(f.recoverable)
                .bind(&f.context)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            }
        }
        commit(tx, OP).await
    }

    async fn delete(&self, agent_id: &str) -> Result<(), StoreError> {
        // Child rows (IMA PCRs, failures, lease) go with it by ON DELETE CASCADE, in the
        // same statement.
        let done = sqlx::query("DELETE FROM verifier_agents WHERE agent_id = $1")
            .bind(agent_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::db("delete verifier agent"))?;
        found(done.rows_affected(), Entity::VerifierAgent, agent_id)
    }
}

// ---------------------------------------------------------------------------------
// Leases

fn lease_from_row(row: &PgRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        agent_id: get(row, "agent_id")?,
        holder: get(row, "holder")?,
        expires_at: get(row, "expires_at")?,
        epoch: unsigned("epoch", get(row, "epoch")?)?,
    })
}

fn leases_from_rows(rows: &[PgRow]) -> Result<Vec<Lease>, StoreError> {
    let mut leases = rows
        .iter()
        .map(lease_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    leases.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Ok(leases)
}

#[async_trait]
impl Leases for PgStore {
    async fn acquire(
        &self,
        holder: &str,
        now: i64,
        ttl: u32,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        // Candidates are locked (their agent rows) and rows another replica is claiming
        // are skipped, so concurrent acquirers split the free agents between them.
        // The upsert's WHERE re-checks expiry on the lease row itself.
        let rows = sqlx::query(
            "WITH candidates AS ( \
                 SELECT a.agent_id FROM verifier_agents a \
                 LEFT JOIN agent_leases l ON l.agent_id = a.agent_id \
                 WHERE l.agent_id IS NULL OR l.expires_at <= $2 \
                 ORDER BY a.agent_id LIMIT $4 \
                 FOR UPDATE OF a SKIP LOCKED) \
             INSERT INTO agent_leases (agent_id, holder, expires_at, epoch) \
             SELECT agent_id, $1, $3, 1 FROM candidates WHERE TRUE \
             ON CONFLICT (agent_id) DO UPDATE SET holder = EXCLUDED.holder, \
                 expires_at = EXCLUDED.expires_at, epoch = agent_leases.epoch + 1 \
                 WHERE agent_leases.expires_at <= $2 \
             RETURNING agent_id, holder, expires_at, epoch",
        )
        .bind(holder)
        .bind(now)
        .bind(now.saturating_add(i64::from(ttl)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("acquire leases"))?;
        leases_from_rows(&rows)
    }

    async fn renew(&self, holder: &str, now: i64, ttl: u32) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(
            "UPDATE agent_leases SET expires_at = $3 WHERE holder = $1 AND expires_at > $2 \
             RETURNING agent_id, holder, expires_at, epoch",
        )
        .bind(holder)
        .bind(now)
        .bind(now.saturating_add(i64::from(ttl)))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("renew leases"))?;
        leases_from_rows(&rows)
    }

    async fn release(&self, holder: &str, agent_id: &str) -> Result<bool, StoreError> {
        // The row stays (expired) so the next holder's epoch keeps counting up.
        let done = sqlx::query(
            "UPDATE agent_leases SET expires_at = 0 \
             WHERE agent_id = $1 AND holder = $2 AND expires_at <> 0",
        )
        .bind(agent_id)
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("release lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_all(&self, holder: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_leases SET expires_at = 0 WHERE holder = $1 AND expires_at <> 0",
        )
        .bind(holder)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("release leases"))?;
        Ok(done.rows_affected())
    }

    async fn get(&self, agent_id: &str) -> Result<Option<Lease>, StoreError> {
        sqlx::query(
            "SELECT agent_id, holder, expires_at, epoch FROM agent_leases WHERE agent_id = $1",
        )
        .bind(agent_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("read lease"))?
        .as_ref()
        .map(lease_from_row)
        .transpose()
    }
}
