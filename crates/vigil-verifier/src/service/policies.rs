//! Named runtime (`allowlists`) and measured-boot (`mbpolicies`) policies: list, show,
//! create or update, delete. A change bumps the policy cache's generation, so the nodes
//! using it rebuild their context before their next round.

use serde_json::{json, Map, Value};
use vigil_core::policy::tpm::TpmPolicy;
use vigil_store::{NewMbPolicy, NewRuntimePolicy, StoreError};

use super::Service;
use crate::enrol::{check_policy_signature, mb_policy_text, runtime_policy_text};
use crate::error::ApiError;

/// Which kind of named policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyKind {
    /// A runtime policy (Keylime's `allowlists` routes).
    Runtime,
    /// A measured-boot reference state (`mbpolicies`).
    MeasuredBoot,
}

impl PolicyKind {
    /// Keylime's name of the kind in its texts.
    fn title(self) -> &'static str {
        match self {
            Self::Runtime => "Runtime policy",
            Self::MeasuredBoot => "Measured boot policy",
        }
    }

    /// Keylime's name of the kind in its "in use" text.
    fn in_use_name(self) -> &'static str {
        match self {
            Self::Runtime => "allowlist",
            Self::MeasuredBoot => "mb_policy",
        }
    }
}

/// Keylime's 409 text for deleting a policy in use, which names one agent. Keylime
/// fails with a 500 when several use it; Vigil names the first and counts the others.
fn in_use_text(kind: &str, agents: u64, first: &str) -> String {
    let text = format!("Can't delete {kind} as it's currently in use by agent {first}");
    match agents {
        0 | 1 => text,
        n => format!("{text} and {} more", n - 1),
    }
}

impl Service {
    /// The names of the stored policies of `kind`, in Keylime's result shape.
    pub(crate) async fn policy_names(&self, kind: PolicyKind) -> Result<Value, ApiError> {
        let policies = self.engine.store.policies();
        Ok(match kind {
            PolicyKind::Runtime => {
                let names = policies
                    .list_runtime()
                    .await
                    .map_err(ApiError::store("listing runtime policies"))?;
                json!({ "runtimepolicy names": names })
            }
            PolicyKind::MeasuredBoot => {
                let names = policies
                    .list_mb()
                    .await
                    .map_err(ApiError::store("listing mb policies"))?;
                json!({ "mbpolicy names": names })
            }
        })
    }

    /// One stored policy, in Keylime's result shape.
    pub(crate) async fn policy(&self, kind: PolicyKind, name: &str) -> Result<Value, ApiError> {
        let policies = self.engine.store.policies();
        let not_found = || ApiError::NotFound(format!("{} {name} not found", kind.title()));
        match kind {
            PolicyKind::Runtime => {
                let p = policies
                    .get_runtime(name)
                    .await
                    .map_err(ApiError::store("reading a runtime policy"))?
                    .ok_or_else(not_found)?;
                Ok(json!({"name": p.name, "tmp_policy": null, "runtime_policy": p.ima_policy}))
            }
            PolicyKind::MeasuredBoot => {
                let p = policies
                    .get_mb(name)
                    .await
                    .map_err(ApiError::store("reading an mb policy"))?
                    .ok_or_else(not_found)?;
                Ok(json!({ "name": p.name, "mb_policy": p.mb_policy }))
            }
        }
    }

    /// Creates (`create`) or replaces the named runtime policy from an upload body.
    pub(crate) async fn put_runtime_policy(
        &self,
        name: &str,
        body: &Map<String, Value>,
        create: bool,
    ) -> Result<(), ApiError> {
        let b64 = body
            .get("runtime_policy")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Exception error: runtime_policy is required (base64 of the policy JSON)"
                        .into(),
                )
            })?;
        let (text, parsed) = runtime_policy_text(b64).map_err(ApiError::BadRequest)?;
        if self.engine.config.require_allow_list_signatures {
            check_policy_signature(Some(&text), body)?;
        }
        let tpm_policy = match body.get("tpm_policy") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        };
        if let Some(t) = &tpm_policy {
            TpmPolicy::from_json(t).map_err(|e| ApiError::invalid("tpm_policy", e))?;
        }
        let policy = NewRuntimePolicy {
            name: name.to_owned(),
            generator: Some(i64::from(parsed.generator())),
            tpm_policy,
            ima_policy: Some(text),
        };
        let policies = self.engine.store.policies();
        let result = if create {
            policies.create_runtime(policy).await.map(drop)
        } else {
            policies.update_runtime(policy).await.map(drop)
        };
        self.stored(PolicyKind::Runtime, name, result)
    }

    /// Creates (`create`) or replaces the named measured-boot policy from an upload body.
    pub(crate) async fn put_mb_policy(
        &self,
        name: &str,
        body: &Map<String, Value>,
        create: bool,
    ) -> Result<(), ApiError> {
        let text = mb_policy_text(body.get("mb_policy"))
            .map_err(ApiError::BadRequest)?
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "Exception error: mb_policy is required (the reference state as JSON text)"
                        .into(),
                )
            })?;
        let policy = NewMbPolicy {
            name: name.to_owned(),
            mb_policy: Some(text),
        };
        let policies = self.engine.store.policies();
        let result = if create {
            policies.create_mb(policy).await.map(drop)
        } else {
            policies.update_mb(policy).await.map(drop)
        };
        self.stored(PolicyKind::MeasuredBoot, name, result)
    }

    /// Keylime's answers to a policy write.
    fn stored(
        &self,
        kind: PolicyKind,
        name: &str,
        result: Result<(), StoreError>,
    ) -> Result<(), ApiError> {
        let title = kind.title();
        match result {
            Ok(()) => {
                self.engine.cache.bump();
                Ok(())
            }
            Err(StoreError::AlreadyExists { .. }) => Err(ApiError::Conflict(format!(
                "{title} with name {name} already exists"
            ))),
            // Keylime answers 404 for runtime policies, 409 for measured-boot ones.
            Err(StoreError::NotFound { .. }) => Err(match kind {
                PolicyKind::Runtime => ApiError::NotFound(format!(
                    "{title} with name {name} does not already exist, use POST to create"
                )),
                PolicyKind::MeasuredBoot => {
                    ApiError::Conflict(format!("{title} with name {name} does not already exist"))
                }
            }),
            Err(source) => Err(ApiError::Store {
                doing: "storing a policy",
                source,
            }),
        }
    }

    /// Deletes the named policy unless an agent uses it.
    pub(crate) async fn delete_policy(&self, kind: PolicyKind, name: &str) -> Result<(), ApiError> {
        let policies = self.engine.store.policies();
        let result = match kind {
            PolicyKind::Runtime => policies.delete_runtime(name).await,
            PolicyKind::MeasuredBoot => policies.delete_mb(name).await,
        };
        match result {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound(format!(
                "{} {name} not found",
                kind.title()
            ))),
            Err(StoreError::PolicyInUse {
                agents, agent_id, ..
            }) => Err(ApiError::Conflict(in_use_text(
                kind.in_use_name(),
                agents,
                &agent_id,
            ))),
            Err(source) => Err(ApiError::Store {
                doing: "deleting a policy",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_names_an_agent_as_keylime() {
        assert_eq!(
            in_use_text("allowlist", 1, "n1"),
            "Can't delete allowlist as it's currently in use by agent n1"
        );
        assert_eq!(
            in_use_text("mb_policy", 3, "n1"),
            "Can't delete mb_policy as it's currently in use by agent n1 and 2 more"
        );
    }
}
