//! [`VerifierAgents`] in SQL.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{commit, for_every_dialect, get, port};
use crate::error::{exists_or_db, found, is_foreign_key_violation, signed, unsigned};
use crate::leases::check_fence;
use crate::verifier::{decode_labels, decode_list, encode_labels, encode_list, RoundCounts};
use crate::{
    AgentState, AgentStatusRecord, EnrolledAgent, Enrolment, Entity, FailureRecord, Fence,
    ImaProgress, QuoteAlgs, RoundOutcome, RoundUpdate, RoundWrite, StoreError, VerifierAgent,
    VerifierAgents,
};

/// The operation a round's write is named by in errors.
const RECORD_ROUND: &str = "record attestation round";

for_every_dialect! {
    impl SqlStore {
        fn enrolment_from_row(row: &D::Row) -> Result<EnrolledAgent, StoreError> {
            Ok(EnrolledAgent {
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
                    &get::<String, _>(row, "accept_tpm_hash_algs")?,
                )?,
                accept_tpm_encryption_algs: decode_list(
                    "accept_tpm_encryption_algs",
                    &get::<String, _>(row, "accept_tpm_encryption_algs")?,
                )?,
                accept_tpm_signing_algs: decode_list(
                    "accept_tpm_signing_algs",
                    &get::<String, _>(row, "accept_tpm_signing_algs")?,
                )?,
                supported_version: get(row, "supported_version")?,
                ak_tpm: get(row, "ak_tpm")?,
                mtls_cert: get(row, "mtls_cert")?,
                hardware_class: get(row, "hardware_class")?,
                labels: decode_labels(get::<Option<String>, _>(row, "labels")?.as_deref())?,
                class_since: get(row, "class_since")?,
            })
        }

        fn agent_from_rows(
            row: &D::Row,
            pcrs: Vec<D::Row>,
            failures: Vec<D::Row>,
        ) -> Result<VerifierAgent, StoreError> {
            let enrolment = Self::enrolment_from_row(row)?;
            let mut running_pcrs = BTreeMap::new();
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
                        file: get(r, "file")?,
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
                severity_level: get::<Option<i64>, _>(row, "severity_level")?
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
                engine_state: get(row, "engine_state")?,
            };
            Ok(VerifierAgent { enrolment, state })
        }

        /// Writes one round in `tx`: fence checks (nothing written if the lease moved or
        /// the agent is gone), the agent's row, its IMA running PCRs, its failures, its
        /// events.
        async fn write_round(
            tx: &mut sqlx::Transaction<'static, D>,
            agent_id: &str,
            u: &RoundUpdate,
            fence: Option<&Fence>,
        ) -> Result<(), StoreError> {
            const OP: &str = RECORD_ROUND;
            let counts = RoundCounts::of(&u.outcome);
            let next_entry = u
                .ima
                .as_ref()
                .map(|i| signed("ima_next_entry", i.next_entry))
                .transpose()?;
            if let Some(f) = fence {
                // A missing agent is NotFound, not a lost lease. The lock order is agent
                // row, then lease row (the order `acquire` takes them in), so a stale
                // holder's round and a takeover cannot deadlock on PostgreSQL.
                let sql = format!(
                    "SELECT 1 FROM verifier_agents WHERE agent_id = $1{}",
                    D::FOR_UPDATE
                );
                let agent: Option<i32> = sqlx::query_scalar(&sql)
                    .bind(agent_id)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                if agent.is_none() {
                    return Err(StoreError::NotFound {
                        entity: Entity::VerifierAgent,
                        id: agent_id.to_owned(),
                    });
                }
                // The lease row's lock (SQLite: the write lock) holds off a takeover until
                // this round is written.
                let sql = format!(
                    "SELECT holder, epoch FROM agent_leases WHERE agent_id = $1{}",
                    D::FOR_UPDATE
                );
                let current: Option<(String, i64)> = sqlx::query_as(&sql)
                    .bind(agent_id)
                    .fetch_optional(&mut **tx)
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
                 ima_next_entry = COALESCE($16, ima_next_entry), \
                 public_key = COALESCE($17, public_key), \
                 engine_state = COALESCE($18, engine_state) \
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
            .bind(u.public_key.as_deref())
            .bind(u.engine_state.as_deref())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(OP))?;
            found(D::rows_affected(&done), Entity::VerifierAgent, agent_id)?;
            if let Some(ima) = &u.ima {
                sqlx::query("DELETE FROM ima_running_pcrs WHERE agent_id = $1")
                    .bind(agent_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                for (bank, value) in &ima.running_pcrs {
                    sqlx::query(
                        "INSERT INTO ima_running_pcrs (agent_id, bank, value) VALUES ($1, $2, $3)",
                    )
                    .bind(agent_id)
                    .bind(bank)
                    .bind(value)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                }
            }
            if let RoundOutcome::Failed { failures } = &u.outcome {
                sqlx::query("DELETE FROM agent_failures WHERE agent_id = $1")
                    .bind(agent_id)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                for (seq, f) in (0_i64..).zip(failures) {
                    sqlx::query(
                        "INSERT INTO agent_failures (agent_id, seq, event_id, severity_label, \
                         recoverable, context, file) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(agent_id)
                    .bind(seq)
                    .bind(&f.event_id)
                    .bind(&f.severity_label)
                    .bind(f.recoverable)
                    .bind(&f.context)
                    .bind(&f.file)
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(OP))?;
                }
            }
            Self::insert_events(tx, &u.events, u.at, OP).await
        }
    }
}

for_every_dialect! {
    #[async_trait]
    impl VerifierAgents for SqlStore {
        async fn enrol(&self, e: Enrolment) -> Result<(), StoreError> {
            const OP: &str = "enrol verifier agent";
            let mut tx = self.begin(OP).await?;
            let runtime_id = Self::resolve_runtime(&mut tx, e.runtime_policy).await?;
            let mb_id = Self::resolve_mb(&mut tx, e.mb_policy).await?;
            sqlx::query(
                "INSERT INTO verifier_agents (agent_id, v, ip, port, verifier_id, verifier_ip, \
                 verifier_port, operational_state, public_key, tpm_policy, meta_data, \
                 runtime_policy_id, mb_policy_id, ima_sign_verification_keys, revocation_key, \
                 accept_tpm_hash_algs, accept_tpm_encryption_algs, accept_tpm_signing_algs, \
                 supported_version, ak_tpm, mtls_cert, accept_attestations, hardware_class, \
                 labels, class_since) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23, $24, $25)",
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
            .bind(&e.hardware_class)
            .bind(encode_labels(&e.labels))
            .bind(e.class_since)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                if is_foreign_key_violation(&err) {
                    StoreError::NotFound {
                        entity: Entity::HardwareClass,
                        id: e.hardware_class.clone().unwrap_or_default(),
                    }
                } else {
                    exists_or_db(err, Entity::VerifierAgent, &e.agent_id, OP)
                }
            })?;
            commit(tx, OP).await
        }

        async fn get(&self, agent_id: &str) -> Result<Option<VerifierAgent>, StoreError> {
            const OP: &str = "read verifier agent";
            // One snapshot for the three reads, so a round committed in between cannot mix
            // its IMA progress with the previous round's counters.
            let mut tx = self.begin_snapshot(OP).await?;
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
                "SELECT event_id, severity_label, recoverable, context, file FROM agent_failures \
                 WHERE agent_id = $1 ORDER BY seq",
            )
            .bind(agent_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(OP))?;
            commit(tx, OP).await?;
            Self::agent_from_rows(&row, pcrs, failures).map(Some)
        }

        async fn statuses(
            &self,
            verifier_id: Option<&str>,
            agent_id: Option<&str>,
        ) -> Result<Vec<AgentStatusRecord>, StoreError> {
            const OP: &str = "read verifier agent statuses";
            let rows = sqlx::query(
                "SELECT a.*, rp.name AS runtime_policy_name, mp.name AS mb_policy_name, \
                 rp.generator AS runtime_policy_generator, mp.mb_policy AS mb_policy_text \
                 FROM verifier_agents a \
                 LEFT JOIN runtime_policies rp ON rp.id = a.runtime_policy_id \
                 LEFT JOIN mb_policies mp ON mp.id = a.mb_policy_id \
                 WHERE (CAST($1 AS TEXT) IS NULL OR a.verifier_id = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR a.agent_id = $2) \
                 ORDER BY a.agent_id",
            )
            .bind(verifier_id)
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db(OP))?;
            rows.iter()
                .map(|row| {
                    Ok(AgentStatusRecord {
                        enrolment: Self::enrolment_from_row(row)?,
                        operational_state: unsigned(
                            "operational_state",
                            get(row, "operational_state")?,
                        )?,
                        engine_state: get(row, "engine_state")?,
                        runtime_policy_generator: get(row, "runtime_policy_generator")?,
                        mb_policy_text: get(row, "mb_policy_text")?,
                    })
                })
                .collect()
        }

        async fn list(&self, verifier_id: Option<&str>) -> Result<Vec<String>, StoreError> {
            sqlx::query_scalar(
                "SELECT agent_id FROM verifier_agents \
                 WHERE CAST($1 AS TEXT) IS NULL OR verifier_id = $1 ORDER BY agent_id",
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
            let mut tx = self.begin(RECORD_ROUND).await?;
            Self::write_round(&mut tx, agent_id, &u, fence).await?;
            commit(tx, RECORD_ROUND).await
        }

        async fn record_rounds(&self, mut batch: Vec<RoundWrite>) -> Vec<Result<(), StoreError>> {
            // Agent rows are locked in one order by every batch, so two replicas' batches
            // cannot deadlock on PostgreSQL (a stale holder's and a taker's overlap only
            // at a hand-over).
            let mut order: Vec<usize> = (0..batch.len()).collect();
            order.sort_by(|&a, &b| batch[a].agent_id.cmp(&batch[b].agent_id));
            let together = async {
                let mut tx = self.begin(RECORD_ROUND).await?;
                let mut results: Vec<Option<Result<(), StoreError>>> =
                    batch.iter().map(|_| None).collect();
                for &i in &order {
                    let w = &batch[i];
                    match Self::write_round(&mut tx, &w.agent_id, &w.update, w.fence.as_ref()).await {
                        // Found before anything of this round was written: the others go on.
                        Err(e @ (StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                            results[i] = Some(Err(e));
                        }
                        Err(e) => return Err(e),
                        Ok(()) => results[i] = Some(Ok(())),
                    }
                }
                commit(tx, RECORD_ROUND).await?;
                Ok(results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect::<Vec<_>>())
            };
            match together.await {
                Ok(results) => results,
                // A database error rolled the whole batch back: each round on its own,
                // so each gets its own answer (and one bad round does not fail the rest).
                Err(_) => {
                    let mut results = Vec::with_capacity(batch.len());
                    for w in batch.drain(..) {
                        results.push(self.record_round(&w.agent_id, w.update, w.fence.as_ref()).await);
                    }
                    results
                }
            }
        }

        async fn set_class_and_labels(
            &self,
            agent_id: &str,
            hardware_class: Option<Option<&str>>,
            labels: Option<&BTreeMap<String, String>>,
            at: i64,
        ) -> Result<(), StoreError> {
            const OP: &str = "set a node's class and labels";
            let class_missing = |e: sqlx::Error| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound {
                        entity: Entity::HardwareClass,
                        id: hardware_class.flatten().unwrap_or_default().to_owned(),
                    }
                } else {
                    StoreError::db(OP)(e)
                }
            };
            // One statement: unchanged columns keep their value (CASE on a flag).
            let done = sqlx::query(
                "UPDATE verifier_agents SET \
                 hardware_class = CASE WHEN $2 THEN $3 ELSE hardware_class END, \
                 class_since = CASE WHEN $2 THEN $6 ELSE class_since END, \
                 labels = CASE WHEN $4 THEN $5 ELSE labels END \
                 WHERE agent_id = $1",
            )
            .bind(agent_id)
            .bind(hardware_class.is_some())
            .bind(hardware_class.flatten())
            .bind(labels.is_some())
            .bind(labels.and_then(encode_labels))
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(class_missing)?;
            found(D::rows_affected(&done), Entity::VerifierAgent, agent_id)
        }

        async fn with_labels(
            &self,
            selector: &BTreeMap<String, String>,
        ) -> Result<Vec<String>, StoreError> {
            const OP: &str = "select verifier agents by label";
            // Labels are a JSON text column on both backends: read and match here.
            let rows: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT agent_id, labels FROM verifier_agents ORDER BY agent_id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db(OP))?;
            let mut ids = Vec::new();
            for (id, text) in rows {
                let labels = decode_labels(text.as_deref())?;
                if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    ids.push(id);
                }
            }
            Ok(ids)
        }

        async fn delete(&self, agent_id: &str) -> Result<(), StoreError> {
            const OP: &str = "delete verifier agent";
            let mut tx = self.begin(OP).await?;
            // Child rows (IMA PCRs, failures, lease) go with it by ON DELETE CASCADE, in the
            // same statement.
            let done = sqlx::query("DELETE FROM verifier_agents WHERE agent_id = $1")
                .bind(agent_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(OP))?;
            found(D::rows_affected(&done), Entity::VerifierAgent, agent_id)?;
            Self::delete_agent_policies(&mut tx, agent_id).await?;
            commit(tx, OP).await
        }
    }
}
