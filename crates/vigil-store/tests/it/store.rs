//! The store's conformance suite: every test body is written once against `Store` and
//! runs on both backends — SQLite in a temporary directory and PostgreSQL in a schema
//! of its own (created and dropped per test, so parallel runs never collide).
//!
//! PostgreSQL: `VIGIL_TEST_DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/test,
//! else the same as user root (`vigil_testkit::db`). When none answers the PostgreSQL
//! half is skipped with a `SKIPPED` line — except under `CI`, where that is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use sha2::Digest;
use vigil_store::{
    checksum, Backend, Enrolment, Entity, FailureRecord, HardwareClass, IdentityField, ImaProgress,
    NewMbPolicy, NewNotice, NewRuntimePolicy, NonceUse, PolicyRef, QuoteAlgs, RegisterOutcome,
    Registration, RoundOutcome, RoundUpdate, Store, StoreError,
};
use vigil_store::{ActionRecord, Fence, KnownGood, NewEvent, RoundWrite};

/// What a test body gets: an open store and the URL that opens the same database.
struct TestDb {
    store: Store,
    url: String,
}

async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    vigil_testkit::db::with_sqlite(|url| async move {
        let store = Store::open(&url).await.expect("open SQLite store");
        assert_eq!(store.backend(), Backend::Sqlite);
        body(TestDb { store, url }).await;
    })
    .await;
}

/// Skipped, after a `SKIPPED` line naming this file, when no PostgreSQL server answers
/// (a failure under `CI`).
async fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(TestDb) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    vigil_testkit::db::with_postgres(|url| async move {
        let store = Store::open(&url).await.expect("open PostgreSQL store");
        assert_eq!(store.backend(), Backend::Postgres);
        body(TestDb {
            store: store.clone(),
            url,
        })
        .await;
        store.close().await;
    })
    .await;
}

/// Declares each test body once and runs it on both backends (`<name>::sqlite`,
/// `<name>::postgres`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::store::run_sqlite(super::$name).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::store::run_postgres(super::$name).await;
            }
        }
    )*};
}

on_both_backends!(
    registrar_lifecycle,
    registrar_concurrent_first_registration,
    policies_crud_and_in_use,
    enrol_and_read_back,
    statuses_in_one_query,
    enrol_error_leaves_nothing,
    delete_agent_takes_its_unused_policies,
    record_round_results,
    record_round_error_midway_writes_nothing,
    leases_acquire_renew_release_and_fence,
    record_rounds_in_one_transaction_each_with_its_answer,
    leases_concurrent_acquirers_split_agents,
    heartbeats_give_the_fleet,
    reopen_keeps_everything,
    ping_answers_until_closed,
    notices_record_fail_deliver_and_survive_reopen,
    keylime_tables_import,
    identities_nonces_once_and_issued_survive_reopen,
    hardware_classes_crud_class_and_labels,
    outbox_rides_the_round_and_leases_deliveries,
    known_good_sets_and_adopted_policies,
    notices_leased_to_a_replica_pass_to_another_when_it_dies,
);

// ---------------------------------------------------------------------------------
// Fixtures

fn registration(id: &str, aik: &[u8]) -> Registration {
    Registration {
        agent_id: id.to_owned(),
        aik_tpm: aik.to_vec(),
        ekcert: Some(b"ek cert der".to_vec()),
        key: Some("Y2hhbGxlbmdl".to_owned()),
        ip: Some("127.0.0.1".to_owned()),
        port: Some(9002),
        mtls_cert: Some("-----BEGIN CERTIFICATE-----".to_owned()),
        ..Registration::default()
    }
}

fn enrolment(id: &str, verifier: &str) -> Enrolment {
    Enrolment {
        agent_id: id.to_owned(),
        v: Some("dmtleQ==".to_owned()),
        ip: Some("10.0.0.7".to_owned()),
        port: Some(9002),
        verifier_id: verifier.to_owned(),
        verifier_ip: "127.0.0.1".to_owned(),
        verifier_port: 8881,
        operational_state: 1,
        public_key: None,
        tpm_policy: r#"{"mask": "0x400"}"#.to_owned(),
        meta_data: "{}".to_owned(),
        runtime_policy: None,
        mb_policy: None,
        ima_sign_verification_keys: "[]".to_owned(),
        revocation_key: None,
        accept_tpm_hash_algs: vec!["sha256".to_owned(), "sha1".to_owned()],
        accept_tpm_encryption_algs: vec!["rsa".to_owned(), "ecc".to_owned()],
        accept_tpm_signing_algs: vec!["rsassa".to_owned()],
        supported_version: "2.3".to_owned(),
        ak_tpm: vec![0, 1, 2, 3],
        mtls_cert: Some("-----BEGIN CERTIFICATE-----".to_owned()),
        accept_attestations: true,
        hardware_class: None,
        labels: Default::default(),
        class_since: 0,
    }
}

fn runtime_policy(name: &str, body: &str) -> NewRuntimePolicy {
    NewRuntimePolicy {
        name: name.to_owned(),
        generator: Some(3),
        tpm_policy: None,
        ima_policy: Some(body.to_owned()),
    }
}

fn failure(event_id: &str) -> FailureRecord {
    FailureRecord {
        event_id: event_id.to_owned(),
        severity_label: Some("emergency".to_owned()),
        recoverable: false,
        context: r#"{"message": "File not found in allowlist: /root/bad-script.sh"}"#.to_owned(),
        file: event_id
            .starts_with("ima.")
            .then(|| "/root/bad-script.sh".to_owned()),
    }
}

fn pcrs(banks: &[(&str, u8)]) -> BTreeMap<String, Vec<u8>> {
    banks
        .iter()
        .map(|&(b, v)| (b.to_owned(), vec![v; 32]))
        .collect()
}

// ---------------------------------------------------------------------------------
// Registrar

async fn registrar_lifecycle(db: TestDb) {
    let reg = db.store.registrar_agents();
    let created = match reg.register(registration("a1", b"aik")).await.unwrap() {
        RegisterOutcome::Created(r) => r,
        other => panic!("expected Created, got {other:?}"),
    };
    assert_eq!((created.regcount, created.active), (1, false));
    assert_eq!(reg.get("a1").await.unwrap().as_ref(), Some(&created));
    assert_eq!(reg.get("nobody").await.unwrap(), None);

    // The same registration again: updated, nothing counted.
    let again = reg.register(registration("a1", b"aik")).await.unwrap();
    assert_eq!(again, RegisterOutcome::Updated(created.clone()));

    reg.activate("a1").await.unwrap();
    assert!(reg.get("a1").await.unwrap().unwrap().active);

    // An IAK change counts and keeps the agent active.
    let iak = Registration {
        iak_tpm: Some(b"iak".to_vec()),
        ..registration("a1", b"aik")
    };
    let RegisterOutcome::Updated(r) = reg.register(iak.clone()).await.unwrap() else {
        panic!("expected Updated");
    };
    assert_eq!((r.regcount, r.active), (2, true));

    // A different AK is refused and changes nothing.
    let before = reg.get("a1").await.unwrap().unwrap();
    assert_eq!(
        reg.register(registration("a1", b"other aik"))
            .await
            .unwrap(),
        RegisterOutcome::IdentityChanged {
            field: IdentityField::AikTpm
        }
    );
    let cert = Registration {
        ekcert: Some(b"another cert".to_vec()),
        ..iak.clone()
    };
    assert_eq!(
        reg.register(cert).await.unwrap(),
        RegisterOutcome::IdentityChanged {
            field: IdentityField::EkCert
        }
    );
    assert_eq!(reg.get("a1").await.unwrap().unwrap(), before);

    // Setting the EK that was unset is allowed, counts, and requires re-activation.
    let ek = Registration {
        ek_tpm: Some(b"ek".to_vec()),
        ..iak
    };
    let RegisterOutcome::Updated(r) = reg.register(ek).await.unwrap() else {
        panic!("expected Updated");
    };
    assert_eq!((r.regcount, r.active), (3, false));
    assert_eq!(reg.get("a1").await.unwrap().unwrap(), r);

    reg.register(registration("a0", b"aik0")).await.unwrap();
    assert_eq!(reg.list().await.unwrap(), ["a0", "a1"]);
    reg.delete("a1").await.unwrap();
    assert_eq!(reg.get("a1").await.unwrap(), None);
    assert!(matches!(
        reg.delete("a1").await,
        Err(StoreError::NotFound {
            entity: Entity::RegistrarAgent,
            ..
        })
    ));
    assert!(matches!(
        reg.activate("a1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(reg.list().await.unwrap(), ["a0"]);
}

async fn registrar_concurrent_first_registration(db: TestDb) {
    // Eight agents race to register one id, each with its own AK: exactly one wins,
    // the others see an identity change (Keylime answers them 403).
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let out = store
                    .registrar_agents()
                    .register(registration("race", &[i]))
                    .await
                    .unwrap();
                (i, out)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, RegisterOutcome::Created(_)) => winners.push(i),
            (_, RegisterOutcome::IdentityChanged { field }) => {
                assert_eq!(field, IdentityField::AikTpm)
            }
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "one registration creates the record");
    let stored = db
        .store
        .registrar_agents()
        .get("race")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.aik_tpm, stored.regcount), (vec![winners[0]], 1));
}

// ---------------------------------------------------------------------------------
// Policies

async fn policies_crud_and_in_use(db: TestDb) {
    let pol = db.store.policies();
    let body = r#"{"meta": {"version": 1}, "digests": {}}"#;
    let p = pol
        .create_runtime(runtime_policy("base", body))
        .await
        .unwrap();
    assert_eq!(p.checksum, hex::encode(sha2::Sha256::digest(body)));
    assert_eq!(p.checksum, checksum(Some(body)));
    // SHA-256 of the empty string when there is no document.
    let empty = pol
        .create_runtime(NewRuntimePolicy {
            name: "empty".to_owned(),
            ..NewRuntimePolicy::default()
        })
        .await
        .unwrap();
    assert_eq!(
        empty.checksum,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    pol.delete_runtime("empty").await.unwrap();
    assert!(matches!(
        pol.create_runtime(runtime_policy("base", "{}")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::RuntimePolicy,
            ..
        })
    ));
    assert_eq!(pol.get_runtime("base").await.unwrap(), Some(p));
    pol.create_runtime(runtime_policy("alpha", "{}"))
        .await
        .unwrap();
    assert_eq!(pol.list_runtime().await.unwrap(), ["alpha", "base"]);

    let updated = pol
        .update_runtime(runtime_policy("base", "{ }"))
        .await
        .unwrap();
    assert_eq!(updated.checksum, checksum(Some("{ }")));
    assert_eq!(pol.get_runtime("base").await.unwrap(), Some(updated));
    assert!(matches!(
        pol.update_runtime(runtime_policy("missing", "{}")).await,
        Err(StoreError::NotFound { .. })
    ));

    let mb = pol
        .create_mb(NewMbPolicy {
            name: "boot".to_owned(),
            mb_policy: Some("{\"scrtm\": 1}".to_owned()),
        })
        .await
        .unwrap();
    assert_eq!(mb.checksum, checksum(Some("{\"scrtm\": 1}")));
    assert_eq!(pol.list_mb().await.unwrap(), ["boot"]);

    // In use: refused with the count, and still there.
    let mut e = enrolment("user", "v1");
    e.runtime_policy = Some(PolicyRef::Named("base".to_owned()));
    e.mb_policy = Some(PolicyRef::Named("boot".to_owned()));
    db.store.verifier_agents().enrol(e).await.unwrap();
    match pol.delete_runtime("base").await {
        Err(StoreError::PolicyInUse {
            entity: Entity::RuntimePolicy,
            name,
            agents: 1,
            agent_id,
        }) => assert_eq!((name.as_str(), agent_id.as_str()), ("base", "user")),
        other => panic!("expected PolicyInUse, got {other:?}"),
    }
    assert!(matches!(
        pol.delete_mb("boot").await,
        Err(StoreError::PolicyInUse {
            entity: Entity::MeasuredBootPolicy,
            agents: 1,
            ..
        })
    ));
    assert!(pol.get_runtime("base").await.unwrap().is_some());

    // Unused once the agent is gone.
    db.store.verifier_agents().delete("user").await.unwrap();
    pol.delete_runtime("base").await.unwrap();
    pol.delete_mb("boot").await.unwrap();
    assert_eq!(pol.get_runtime("base").await.unwrap(), None);
    assert_eq!(pol.get_mb("boot").await.unwrap(), None);
    assert!(matches!(
        pol.delete_runtime("base").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(pol.list_runtime().await.unwrap(), ["alpha"]);
}

// ---------------------------------------------------------------------------------
// Verifier agents

/// `statuses` gives what a status answer needs, for one agent, one verifier or all,
/// with each agent's policy facts, in id order.
async fn statuses_in_one_query(db: TestDb) {
    let va = db.store.verifier_agents();
    db.store
        .policies()
        .create_mb(NewMbPolicy {
            name: "boot".to_owned(),
            mb_policy: Some(r#"{"scrtm_and_bios": []}"#.to_owned()),
        })
        .await
        .unwrap();
    let mut e = enrolment("n1", "v1");
    e.runtime_policy = Some(PolicyRef::Inline(runtime_policy("n1-policy", "{}")));
    e.mb_policy = Some(PolicyRef::Named("boot".to_owned()));
    va.enrol(e.clone()).await.unwrap();
    va.enrol(enrolment("n2", "v2")).await.unwrap();
    va.enrol(enrolment("n0", "v1")).await.unwrap();
    let update = RoundUpdate {
        engine_state: Some(r#"{"snapshot": 1}"#.to_owned()),
        ..RoundUpdate::state_only(3)
    };
    va.record_round("n1", update, None).await.unwrap();

    let ids = |rs: &[vigil_store::AgentStatusRecord]| -> Vec<String> {
        rs.iter().map(|r| r.enrolment.agent_id.clone()).collect()
    };
    assert_eq!(
        ids(&va.statuses(None, None).await.unwrap()),
        ["n0", "n1", "n2"]
    );
    assert_eq!(
        ids(&va.statuses(Some("v1"), None).await.unwrap()),
        ["n0", "n1"]
    );
    assert!(va.statuses(Some("v3"), None).await.unwrap().is_empty());
    let one = va.statuses(None, Some("n1")).await.unwrap();
    let [n1] = one.as_slice() else {
        panic!("one record: {one:?}")
    };
    assert_eq!(n1.enrolment, va.get("n1").await.unwrap().unwrap().enrolment);
    assert_eq!(n1.operational_state, 3);
    assert_eq!(n1.engine_state.as_deref(), Some(r#"{"snapshot": 1}"#));
    assert_eq!(n1.runtime_policy_generator, Some(3));
    assert_eq!(
        n1.mb_policy_text.as_deref(),
        Some(r#"{"scrtm_and_bios": []}"#)
    );
    let n0 = &va.statuses(None, Some("n0")).await.unwrap()[0];
    assert_eq!(
        (
            n0.runtime_policy_generator,
            n0.mb_policy_text.as_deref(),
            n0.operational_state
        ),
        (None, None, 1)
    );
    assert!(va.statuses(None, Some("nope")).await.unwrap().is_empty());
}

async fn enrol_and_read_back(db: TestDb) {
    let va = db.store.verifier_agents();
    db.store
        .policies()
        .create_mb(NewMbPolicy {
            name: "boot".to_owned(),
            mb_policy: None,
        })
        .await
        .unwrap();
    let mut e = enrolment("n1", "v1");
    e.runtime_policy = Some(PolicyRef::Inline(runtime_policy("n1-policy", "{}")));
    e.mb_policy = Some(PolicyRef::Named("boot".to_owned()));
    va.enrol(e.clone()).await.unwrap();
    va.enrol(enrolment("n2", "v2")).await.unwrap();
    va.enrol(enrolment("n0", "v1")).await.unwrap();

    let got = va.get("n1").await.unwrap().unwrap();
    let en = &got.enrolment;
    assert_eq!(en.agent_id, "n1");
    assert_eq!(
        (en.v.as_deref(), en.port, en.verifier_port),
        (Some("dmtleQ=="), Some(9002), 8881)
    );
    assert_eq!(en.runtime_policy.as_deref(), Some("n1-policy"));
    assert_eq!(en.mb_policy.as_deref(), Some("boot"));
    assert_eq!(en.accept_tpm_hash_algs, e.accept_tpm_hash_algs);
    assert_eq!(en.accept_tpm_encryption_algs, e.accept_tpm_encryption_algs);
    assert_eq!(en.accept_tpm_signing_algs, e.accept_tpm_signing_algs);
    assert_eq!((&en.tpm_policy, &en.ak_tpm), (&e.tpm_policy, &e.ak_tpm));
    // The inline policy exists on its own now.
    assert!(db
        .store
        .policies()
        .get_runtime("n1-policy")
        .await
        .unwrap()
        .is_some());

    // A fresh agent: state from the enrolment, every counter at its "never" value.
    let s = &got.state;
    assert_eq!(s.operational_state, 1);
    assert_eq!(s.algs, QuoteAlgs::default());
    assert_eq!(s.ima, ImaProgress::default());
    assert_eq!(
        (
            s.attestation_count,
            s.last_received_quote,
            s.last_successful_attestation
        ),
        (0, 0, 0)
    );
    assert_eq!((s.severity_level, s.last_event_id.as_deref()), (None, None));
    assert!(s.accept_attestations && s.last_failures.is_empty());

    assert_eq!(va.list(None).await.unwrap(), ["n0", "n1", "n2"]);
    assert_eq!(va.list(Some("v1")).await.unwrap(), ["n0", "n1"]);
    assert_eq!(va.list(Some("v9")).await.unwrap(), Vec::<String>::new());
    assert_eq!(va.get("zz").await.unwrap(), None);

    assert!(matches!(
        va.enrol(enrolment("n1", "v1")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::VerifierAgent,
            ..
        })
    ));
    let mut missing = enrolment("n3", "v1");
    missing.runtime_policy = Some(PolicyRef::Named("nope".to_owned()));
    assert!(matches!(
        va.enrol(missing).await,
        Err(StoreError::NotFound {
            entity: Entity::RuntimePolicy,
            ..
        })
    ));
    assert_eq!(va.get("n3").await.unwrap(), None);

    va.delete("n1").await.unwrap();
    assert!(matches!(
        va.delete("n1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(va.list(None).await.unwrap(), ["n0", "n2"]);
}

async fn delete_agent_takes_its_unused_policies(db: TestDb) {
    // As Keylime: deleting an agent deletes the policies named after it (where its
    // inline policies live), but never one another agent still uses, nor another name.
    let (va, pol) = (db.store.verifier_agents(), db.store.policies());
    pol.create_runtime(runtime_policy("shared", "{}"))
        .await
        .unwrap();
    let mut n1 = enrolment("n1", "v1");
    n1.runtime_policy = Some(PolicyRef::Inline(runtime_policy("n1", "{}")));
    n1.mb_policy = Some(PolicyRef::Inline(NewMbPolicy {
        name: "n1".to_owned(),
        mb_policy: None,
    }));
    va.enrol(n1).await.unwrap();
    let mut n2 = enrolment("n2", "v1");
    n2.runtime_policy = Some(PolicyRef::Named("n1".to_owned()));
    va.enrol(n2).await.unwrap();
    let mut n3 = enrolment("n3", "v1");
    n3.runtime_policy = Some(PolicyRef::Named("shared".to_owned()));
    va.enrol(n3).await.unwrap();

    va.delete("n1").await.unwrap();
    assert_eq!(
        pol.list_runtime().await.unwrap(),
        ["n1", "shared"],
        "n2 uses n1"
    );
    assert_eq!(pol.list_mb().await.unwrap(), Vec::<String>::new());
    // n2's own name holds no policy; n1's stays, as Keylime's deletion goes by name.
    va.delete("n2").await.unwrap();
    assert_eq!(pol.list_runtime().await.unwrap(), ["n1", "shared"]);
    va.delete("n3").await.unwrap();
    assert_eq!(pol.list_runtime().await.unwrap(), ["n1", "shared"]);
    // A failed deletion (no such agent) deletes no policy either.
    assert!(matches!(
        va.delete("n1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(pol.list_runtime().await.unwrap(), ["n1", "shared"]);
}

async fn enrol_error_leaves_nothing(db: TestDb) {
    // The inline policy is inserted first, then the agent insert fails (duplicate id):
    // the policy must not survive the failed enrolment.
    let va = db.store.verifier_agents();
    va.enrol(enrolment("dup", "v1")).await.unwrap();
    let mut again = enrolment("dup", "v1");
    again.runtime_policy = Some(PolicyRef::Inline(runtime_policy("orphan", "{}")));
    again.mb_policy = Some(PolicyRef::Inline(NewMbPolicy {
        name: "orphan-mb".to_owned(),
        mb_policy: None,
    }));
    assert!(matches!(
        va.enrol(again).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::VerifierAgent,
            ..
        })
    ));
    assert_eq!(
        db.store.policies().get_runtime("orphan").await.unwrap(),
        None
    );
    assert_eq!(db.store.policies().get_mb("orphan-mb").await.unwrap(), None);

    // An inline policy whose name is taken fails the enrolment, and no agent appears.
    let mut clash = enrolment("fresh", "v1");
    db.store
        .policies()
        .create_runtime(runtime_policy("taken", "{}"))
        .await
        .unwrap();
    clash.runtime_policy = Some(PolicyRef::Inline(runtime_policy("taken", "[]")));
    assert!(matches!(
        va.enrol(clash).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::RuntimePolicy,
            ..
        })
    ));
    assert_eq!(va.get("fresh").await.unwrap(), None);
    assert_eq!(
        db.store
            .policies()
            .get_runtime("taken")
            .await
            .unwrap()
            .unwrap()
            .ima_policy
            .as_deref(),
        Some("{}")
    );
}

async fn record_round_results(db: TestDb) {
    let va = db.store.verifier_agents();
    va.enrol(enrolment("n", "v1")).await.unwrap();

    let algs = QuoteAlgs {
        hash_alg: "sha256".to_owned(),
        enc_alg: "rsa".to_owned(),
        sign_alg: "rsassa".to_owned(),
    };
    let passed = RoundUpdate {
        operational_state: 3,
        outcome: RoundOutcome::Passed { at: 1_000 },
        received_quote_at: Some(999),
        algs: Some(algs.clone()),
        ima: Some(ImaProgress {
            next_entry: 812,
            running_pcrs: pcrs(&[("sha1", 1), ("sha256", 2)]),
        }),
        boottime: Some(500),
        tpm_clockinfo: Some(r#"{"clock": 42}"#.to_owned()),
        learned_ima_keyrings: Some("{}".to_owned()),
        severity: None,
        public_key: Some("PEM".to_owned()),
        engine_state: Some(r#"{"operational_state":3}"#.to_owned()),
        events: Vec::new(),
        at: 0,
    };
    va.record_round("n", passed, None).await.unwrap();
    let got = va.get("n").await.unwrap().unwrap();
    assert_eq!(got.enrolment.public_key.as_deref(), Some("PEM"));
    let s = got.state;
    assert_eq!(
        s.engine_state.as_deref(),
        Some(r#"{"operational_state":3}"#)
    );
    assert_eq!(s.operational_state, 3);
    assert_eq!(s.algs, algs);
    assert_eq!(s.ima.next_entry, 812);
    assert_eq!(s.ima.running_pcrs, pcrs(&[("sha1", 1), ("sha256", 2)]));
    assert_eq!(
        (s.boottime, s.tpm_clockinfo.as_deref()),
        (500, Some(r#"{"clock": 42}"#))
    );
    assert_eq!(
        (
            s.attestation_count,
            s.last_received_quote,
            s.last_successful_attestation
        ),
        (1, 999, 1_000)
    );

    // A failed round: failures stored in order, severity set, success counters kept.
    let failed = RoundUpdate {
        outcome: RoundOutcome::Failed {
            failures: vec![
                failure("ima.validation.ima-ng.not_in_allowlist"),
                failure("pcr_validation.invalid_pcr_0"),
            ],
        },
        received_quote_at: Some(1_010),
        severity: Some((6, "ima.validation.ima-ng.not_in_allowlist".to_owned())),
        ..RoundUpdate::state_only(9)
    };
    va.record_round("n", failed, None).await.unwrap();
    let s = va.get("n").await.unwrap().unwrap().state;
    assert_eq!(s.operational_state, 9);
    assert_eq!(s.severity_level, Some(6));
    assert_eq!(
        s.last_event_id.as_deref(),
        Some("ima.validation.ima-ng.not_in_allowlist")
    );
    assert_eq!(
        (s.attestation_count, s.consecutive_attestation_failures),
        (1, 1)
    );
    assert_eq!(
        (s.last_received_quote, s.last_successful_attestation),
        (1_010, 1_000)
    );
    let ids: Vec<_> = s
        .last_failures
        .iter()
        .map(|f| f.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "ima.validation.ima-ng.not_in_allowlist",
            "pcr_validation.invalid_pcr_0"
        ]
    );
    assert_eq!(
        s.last_failures[0],
        failure("ima.validation.ima-ng.not_in_allowlist")
    );
    // Untouched by a round that did not carry them.
    assert_eq!(
        (s.algs, s.ima.next_entry, s.boottime),
        (algs.clone(), 812, 500)
    );

    // After a reboot the verifier restarts IMA from entry 0 with one bank only: the
    // stored banks are replaced, not merged.
    let rebooted = RoundUpdate {
        outcome: RoundOutcome::Passed { at: 1_100 },
        ima: Some(ImaProgress {
            next_entry: 3,
            running_pcrs: pcrs(&[("sha256", 7)]),
        }),
        boottime: Some(1_050),
        ..RoundUpdate::state_only(3)
    };
    va.record_round("n", rebooted, None).await.unwrap();
    let s = va.get("n").await.unwrap().unwrap().state;
    assert_eq!(s.ima.running_pcrs, pcrs(&[("sha256", 7)]));
    assert_eq!((s.ima.next_entry, s.boottime), (3, 1_050));
    assert_eq!(
        (s.attestation_count, s.consecutive_attestation_failures),
        (2, 0)
    );
    // The last failed round's failures and the severity stay for operators.
    assert_eq!((s.last_failures.len(), s.severity_level), (2, Some(6)));

    // State-only update (stop: Tenant Quote Failed).
    va.record_round("n", RoundUpdate::state_only(10), None)
        .await
        .unwrap();
    let s2 = va.get("n").await.unwrap().unwrap().state;
    assert_eq!(s2.operational_state, 10);
    assert_eq!(
        AgentStateWithoutOp::from(&s2),
        AgentStateWithoutOp::from(&s)
    );

    assert!(matches!(
        va.record_round("ghost", RoundUpdate::state_only(3), None)
            .await,
        Err(StoreError::NotFound {
            entity: Entity::VerifierAgent,
            ..
        })
    ));
}

/// An agent state with the operational state blanked, to compare the rest.
#[derive(Debug, PartialEq)]
struct AgentStateWithoutOp(vigil_store::AgentState);

impl From<&vigil_store::AgentState> for AgentStateWithoutOp {
    fn from(s: &vigil_store::AgentState) -> Self {
        let mut s = s.clone();
        s.operational_state = 0;
        Self(s)
    }
}

async fn record_round_error_midway_writes_nothing(db: TestDb) {
    let va = db.store.verifier_agents();
    va.enrol(enrolment("n", "v1")).await.unwrap();
    let good = RoundUpdate {
        outcome: RoundOutcome::Passed { at: 10 },
        ima: Some(ImaProgress {
            next_entry: 5,
            running_pcrs: pcrs(&[("sha256", 1)]),
        }),
        ..RoundUpdate::state_only(3)
    };
    va.record_round("n", good, None).await.unwrap();
    let before = va.get("n").await.unwrap().unwrap();

    // The agent row is updated and the old PCRs deleted before the bad bank's insert
    // fails (a bank name may not be empty): all of it must roll back.
    let bad_bank = RoundUpdate {
        outcome: RoundOutcome::Passed { at: 20 },
        ima: Some(ImaProgress {
            next_entry: 9,
            running_pcrs: pcrs(&[("sha1", 2), ("", 3)]),
        }),
        ..RoundUpdate::state_only(4)
    };
    let err = va.record_round("n", bad_bank, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
    assert_eq!(va.get("n").await.unwrap().unwrap(), before);

    // Same with the failure list: the second failure is invalid (empty event id).
    let bad_failure = RoundUpdate {
        outcome: RoundOutcome::Failed {
            failures: vec![
                failure("ima.validation.ima-ng.not_in_allowlist"),
                failure(""),
            ],
        },
        severity: Some((6, "x".to_owned())),
        ima: Some(ImaProgress::default()),
        ..RoundUpdate::state_only(9)
    };
    assert!(va.record_round("n", bad_failure, None).await.is_err());
    assert_eq!(va.get("n").await.unwrap().unwrap(), before);

    // An operational state outside Keylime's 0–10 is refused by the schema.
    assert!(va
        .record_round("n", RoundUpdate::state_only(11), None)
        .await
        .is_err());
    assert_eq!(va.get("n").await.unwrap().unwrap(), before);
}

// ---------------------------------------------------------------------------------
// Leases

async fn leases_acquire_renew_release_and_fence(db: TestDb) {
    let va = db.store.verifier_agents();
    let leases = db.store.leases();
    for i in 0..5 {
        va.enrol(enrolment(&format!("a{i}"), "v")).await.unwrap();
    }
    let r1 = leases.acquire("r1", 100, 30, 3).await.unwrap();
    let ids: Vec<_> = r1.iter().map(|l| l.agent_id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1", "a2"]);
    assert!(r1
        .iter()
        .all(|l| l.holder == "r1" && l.expires_at == 130 && l.epoch == 1));
    let r2 = leases.acquire("r2", 100, 30, 10).await.unwrap();
    let ids: Vec<_> = r2.iter().map(|l| l.agent_id.as_str()).collect();
    assert_eq!(ids, ["a3", "a4"]);
    assert!(leases.acquire("r2", 129, 30, 10).await.unwrap().is_empty());

    // r1 renews in time; r2 does not.
    let renewed = leases.renew("r1", 120, 30).await.unwrap();
    assert_eq!(renewed.len(), 3);
    assert!(renewed.iter().all(|l| l.expires_at == 150 && l.epoch == 1));

    // At 130 r2's leases expired: a third replica takes them over with a new epoch.
    let r3 = leases.acquire("r3", 130, 30, 10).await.unwrap();
    let ids: Vec<_> = r3.iter().map(|l| (l.agent_id.as_str(), l.epoch)).collect();
    assert_eq!(ids, [("a3", 2), ("a4", 2)]);
    assert!(
        leases.renew("r2", 131, 30).await.unwrap().is_empty(),
        "r2 lost them"
    );

    // The stale holder's fence no longer writes; the new holder's does.
    let stale = r2[0].fence();
    let err = va
        .record_round("a3", RoundUpdate::state_only(3), Some(&stale))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { ref holder, epoch: 1, .. } if holder == "r2"));
    assert_eq!(
        va.get("a3").await.unwrap().unwrap().state.operational_state,
        1
    );
    va.record_round("a3", RoundUpdate::state_only(3), Some(&r3[0].fence()))
        .await
        .unwrap();
    assert_eq!(
        va.get("a3").await.unwrap().unwrap().state.operational_state,
        3
    );
    // No lease at all is also a lost lease.
    va.enrol(enrolment("unleased", "v")).await.unwrap();
    assert!(matches!(
        va.record_round("unleased", RoundUpdate::state_only(3), Some(&stale))
            .await,
        Err(StoreError::LeaseLost { .. })
    ));

    // A fenced write to an agent that is gone is NotFound on both backends.
    assert!(matches!(
        va.record_round("ghost", RoundUpdate::state_only(3), Some(&stale))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // Release: only by the holder; the agent is free at once, and the epoch goes on.
    assert!(!leases.release("r3", "a0").await.unwrap());
    assert!(leases.release("r1", "a0").await.unwrap());
    assert!(
        !leases.release("r1", "a0").await.unwrap(),
        "already released"
    );
    let again = leases.acquire("r3", 140, 30, 1).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|l| (l.agent_id.as_str(), l.epoch))
            .collect::<Vec<_>>(),
        [("a0", 2)]
    );
    assert_eq!(leases.get("a0").await.unwrap().unwrap().holder, "r3");
    assert_eq!(leases.release_all("r3").await.unwrap(), 3);
    assert_eq!(leases.release_all("r3").await.unwrap(), 0);
    assert_eq!(
        leases.renew("r1", 141, 30).await.unwrap().len(),
        2,
        "a1, a2"
    );

    // Deleting the agent deletes its lease.
    va.delete("a1").await.unwrap();
    assert_eq!(leases.get("a1").await.unwrap(), None);
    assert_eq!(leases.renew("r1", 142, 30).await.unwrap().len(), 1);
}

/// A batch of rounds: written together, each with its own answer — a stale lease or
/// a deleted agent refuses that round only; the others are written.
async fn record_rounds_in_one_transaction_each_with_its_answer(db: TestDb) {
    let va = db.store.verifier_agents();
    let leases = db.store.leases();
    for id in ["b0", "b1", "b2"] {
        va.enrol(enrolment(id, "v")).await.unwrap();
    }
    let held = leases.acquire("r1", 100, 30, 10).await.unwrap();
    let fence = |id: &str| held.iter().find(|l| l.agent_id == id).unwrap().fence();
    let stale = Fence {
        holder: "r0".into(),
        epoch: 7,
    };
    let write = |id: &str, state: u8, fence: Option<Fence>| RoundWrite {
        agent_id: id.to_owned(),
        update: RoundUpdate::state_only(state),
        fence,
    };
    // Out of agent order on purpose: answers come back in the batch's order.
    let results = va
        .record_rounds(vec![
            write("b2", 3, Some(fence("b2"))),
            write("ghost", 3, Some(fence("b0"))),
            write("b1", 3, Some(stale)),
            write("b0", 4, Some(fence("b0"))),
        ])
        .await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::NotFound { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(StoreError::LeaseLost { .. })),
        "{results:?}"
    );
    assert!(results[3].is_ok(), "{results:?}");
    let state = |id: &'static str| async move {
        va.get(id).await.unwrap().unwrap().state.operational_state
    };
    assert_eq!(
        (state("b0").await, state("b1").await, state("b2").await),
        (4, 1, 3)
    );
    assert!(va.record_rounds(Vec::new()).await.is_empty());

    // A round the database refuses (an empty bank name) rolls the batch back; each
    // round is then written on its own, so only the bad one fails.
    let bad_bank = RoundWrite {
        update: RoundUpdate {
            ima: Some(ImaProgress {
                next_entry: 9,
                running_pcrs: pcrs(&[("", 3)]),
            }),
            ..RoundUpdate::state_only(5)
        },
        ..write("b0", 5, Some(fence("b0")))
    };
    let results = va
        .record_rounds(vec![bad_bank, write("b2", 5, Some(fence("b2")))])
        .await;
    assert!(
        matches!(results[0], Err(StoreError::Database { .. })),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!((state("b0").await, state("b2").await), (4, 5));
}

async fn leases_concurrent_acquirers_split_agents(db: TestDb) {
    const AGENTS: usize = 40;
    for i in 0..AGENTS {
        db.store
            .verifier_agents()
            .enrol(enrolment(&format!("n{i:02}"), "v"))
            .await
            .unwrap();
    }
    // Four replicas grab in small batches at the same time until nothing is left.
    let tasks: Vec<_> = (0..4)
        .map(|r| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let holder = format!("replica-{r}");
                let mut mine = Vec::new();
                loop {
                    let got = store.leases().acquire(&holder, 1_000, 60, 3).await.unwrap();
                    if got.is_empty() {
                        break mine;
                    }
                    assert!(got.iter().all(|l| l.holder == holder));
                    mine.extend(got.into_iter().map(|l| l.agent_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), AGENTS, "no agent leased twice");
    assert_eq!(distinct.len(), AGENTS, "every agent leased");
}

async fn heartbeats_give_the_fleet(db: TestDb) {
    let va = db.store.verifier_agents();
    let leases = db.store.leases();
    for i in 0..5 {
        va.enrol(enrolment(&format!("a{i}"), "v")).await.unwrap();
    }
    // Alone: no other replica, no lease of another's to wait for.
    let fleet = leases.heartbeat("r1", 100, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r1".to_owned(), 0)]);
    assert_eq!((fleet.nodes, fleet.next_expiry), (5, None));
    leases.acquire("r1", 100, 30, 3).await.unwrap();
    leases.acquire("r2", 110, 30, 1).await.unwrap();
    // r2 holds a lease but its heartbeat is not there yet: it is not counted live.
    let fleet = leases.heartbeat("r1", 110, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r1".to_owned(), 3)]);
    assert_eq!(fleet.next_expiry, Some(140), "r2's lease expires at 140");
    let fleet = leases.heartbeat("r2", 111, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r1".to_owned(), 3), ("r2".to_owned(), 1)]);
    assert_eq!(fleet.next_expiry, Some(130), "r1's leases expire at 130");
    // r1 stops: its heartbeat (written at 110) and leases (renewed at 110) expire
    // together at 140; r2, renewing, is alone from then on.
    leases.renew("r1", 110, 30).await.unwrap();
    leases.renew("r2", 120, 30).await.unwrap();
    let fleet = leases.heartbeat("r2", 139, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r1".to_owned(), 3), ("r2".to_owned(), 1)]);
    assert_eq!(fleet.next_expiry, Some(140));
    let fleet = leases.heartbeat("r2", 140, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r2".to_owned(), 1)]);
    assert_eq!(fleet.next_expiry, None);
    // A clean shutdown takes the heartbeat away at once.
    leases.heartbeat("r1", 141, 30).await.unwrap();
    leases.release_all("r2").await.unwrap();
    let fleet = leases.heartbeat("r1", 142, 30).await.unwrap();
    assert_eq!(fleet.replicas, [("r1".to_owned(), 0)]);
}

// ---------------------------------------------------------------------------------
// Restart

async fn reopen_keeps_everything(db: TestDb) {
    db.store
        .registrar_agents()
        .register(registration("r", b"aik"))
        .await
        .unwrap();
    db.store
        .verifier_agents()
        .enrol(enrolment("n", "v"))
        .await
        .unwrap();
    let update = RoundUpdate {
        outcome: RoundOutcome::Passed { at: 7 },
        ima: Some(ImaProgress {
            next_entry: 42,
            running_pcrs: pcrs(&[("sha256", 9)]),
        }),
        ..RoundUpdate::state_only(3)
    };
    db.store
        .verifier_agents()
        .record_round("n", update, None)
        .await
        .unwrap();
    let lease = db.store.leases().acquire("r1", 0, 60, 10).await.unwrap();
    let before = db.store.verifier_agents().get("n").await.unwrap();
    db.store.close().await;

    // Opening again re-runs the (already applied) migrations and finds everything.
    let again = Store::open(&db.url).await.unwrap();
    assert!(again.registrar_agents().get("r").await.unwrap().is_some());
    assert_eq!(again.verifier_agents().get("n").await.unwrap(), before);
    assert_eq!(
        again.leases().get("n").await.unwrap().as_ref(),
        lease.first()
    );
    again.close().await;
}

/// `ping` (the services' readiness check) answers while the store is open, and fails,
/// without hanging, once it is closed.
async fn ping_answers_until_closed(db: TestDb) {
    db.store.ping().await.unwrap();
    db.store.close().await;
    let e = db.store.ping().await.unwrap_err();
    assert!(matches!(e, StoreError::Database { op: "ping", .. }), "{e}");
}

// ---------------------------------------------------------------------------------
// Workload identity

async fn identities_nonces_once_and_issued_survive_reopen(db: TestDb) {
    let ids = db.store.identities();
    ids.issue_nonce("NONCEA", 100, 0).await.unwrap();
    ids.issue_nonce("NONCEB", 100, 0).await.unwrap();
    // Used once; a second use, an unknown nonce and an expired one are told apart.
    assert_eq!(
        ids.use_nonce("NONCEA", 110, 50).await.unwrap(),
        NonceUse::Fresh
    );
    assert_eq!(
        ids.use_nonce("NONCEA", 111, 50).await.unwrap(),
        NonceUse::Used
    );
    assert_eq!(
        ids.use_nonce("OTHER", 111, 50).await.unwrap(),
        NonceUse::Unknown
    );
    assert_eq!(
        ids.use_nonce("NONCEB", 300, 200).await.unwrap(),
        NonceUse::Unknown
    );
    // Issuing forgets nonces issued before the cut, used or not.
    ids.issue_nonce("NONCEC", 400, 200).await.unwrap();
    assert_eq!(
        ids.use_nonce("NONCEA", 401, 0).await.unwrap(),
        NonceUse::Unknown
    );
    // The same nonce cannot be issued twice.
    assert!(ids.issue_nonce("NONCEC", 401, 0).await.is_err());

    ids.record_issued("node-1", "spiffe://td/a", 10)
        .await
        .unwrap();
    ids.record_issued("node-1", "spiffe://td/a", 11)
        .await
        .unwrap();
    ids.record_issued("node-1", "spiffe://td/b", 12)
        .await
        .unwrap();
    ids.record_issued("node-2", "spiffe://td/c", 12)
        .await
        .unwrap();
    let reopened = Store::open(&db.url).await.unwrap();
    let ids = reopened.identities();
    assert_eq!(
        ids.take_issued("node-1").await.unwrap(),
        ["spiffe://td/a", "spiffe://td/b"]
    );
    assert!(ids.take_issued("node-1").await.unwrap().is_empty());
    assert_eq!(ids.take_issued("node-2").await.unwrap(), ["spiffe://td/c"]);
    assert_eq!(
        ids.use_nonce("NONCEC", 402, 0).await.unwrap(),
        NonceUse::Fresh
    );
    reopened.close().await;
}

// ---------------------------------------------------------------------------------
// Pending revocation notices

fn notice(channel: &str, target: &str) -> NewNotice {
    NewNotice {
        agent_id: "n".into(),
        channel: channel.into(),
        target: target.into(),
        notice: r#"{"msg":"{\"type\": \"revocation\"}","signature":"c2ln"}"#.into(),
    }
}

async fn notices_leased_to_a_replica_pass_to_another_when_it_dies(db: TestDb) {
    use vigil_store::NoticeLease;
    let notices = db.store.notices();
    let lease = |holder: &str, until| NoticeLease {
        holder: holder.into(),
        until,
    };
    let held = notices
        .record(
            &[notice("agent", "peer-1"), notice("agent", "peer-2")],
            100,
            Some(&lease("r1", 110)),
        )
        .await
        .unwrap();
    let free = notices
        .record(&[notice("webhook", "http://h/")], 100, None)
        .await
        .unwrap();
    // r2 gets only the unleased row while r1's lease runs; r1 renews its own.
    let got = notices.claim(&lease("r2", 115), 105, 10).await.unwrap();
    assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), [free[0].id]);
    assert_eq!(notices.renew(&lease("r1", 120), 108).await.unwrap(), 2);
    assert!(notices
        .claim(&lease("r2", 125), 112, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(notices.renew(&lease("r2", 130), 113).await.unwrap(), 1);
    // r1 dies: its lease runs out at 120 and r2 takes its deliveries, the limit obeyed.
    let got = notices.claim(&lease("r2", 130), 120, 1).await.unwrap();
    assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), [held[0].id]);
    let got = notices.claim(&lease("r2", 130), 120, 10).await.unwrap();
    assert_eq!(got.iter().map(|n| n.id).collect::<Vec<_>>(), [held[1].id]);
    // A late renewal by r1 extends nothing it lost.
    assert_eq!(notices.renew(&lease("r1", 140), 121).await.unwrap(), 0);
}

async fn notices_record_fail_deliver_and_survive_reopen(db: TestDb) {
    let notices = db.store.notices();
    let recorded = notices
        .record(
            &[
                notice("agent", "peer-1"),
                notice("agent", "peer-2"),
                notice("webhook", "http://127.0.0.1:9/hook"),
            ],
            100,
            None,
        )
        .await
        .unwrap();
    assert_eq!(recorded.len(), 3);
    assert!(recorded
        .iter()
        .all(|r| r.attempts == 0 && r.next_attempt_at == 100 && r.created_at == 100));
    assert_eq!(recorded[2].target, "http://127.0.0.1:9/hook");
    assert_eq!(recorded[0].notice, notice("agent", "peer-1").notice);
    assert_eq!(notices.pending().await.unwrap(), recorded);
    assert!(notices.due(99).await.unwrap().is_empty());
    assert_eq!(notices.due(100).await.unwrap().len(), 3);

    // A failed attempt counts and moves the row out of the due set until its time.
    let failed = notices
        .failed(recorded[2].id, 130, "connection refused")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.next_attempt_at, 130);
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    let due: Vec<_> = notices.due(129).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.id).collect::<Vec<_>>(),
        [recorded[0].id, recorded[1].id]
    );
    assert_eq!(notices.due(130).await.unwrap().len(), 3);
    let again = notices
        .failed(recorded[2].id, 200, "HTTP 500")
        .await
        .unwrap();
    assert_eq!(again.map(|r| r.attempts), Some(2));

    // Delivered rows go; a second delete or a failure on a gone row changes nothing.
    assert!(notices.delivered(recorded[0].id).await.unwrap());
    assert!(!notices.delivered(recorded[0].id).await.unwrap());
    assert_eq!(notices.failed(recorded[0].id, 1, "x").await.unwrap(), None);
    // Nothing recorded from an empty batch.
    assert!(notices.record(&[], 1, None).await.unwrap().is_empty());
    let left = notices.pending().await.unwrap();
    assert_eq!(left.len(), 2);
    db.store.close().await;

    // What is pending survives a restart, attempts and all.
    let reopened = Store::open(&db.url).await.unwrap();
    assert_eq!(reopened.notices().pending().await.unwrap(), left);
    reopened.close().await;
}

#[tokio::test]
async fn unsupported_url_is_refused_without_echoing_it() {
    let err = Store::open("mysql://user:secret@host/db")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { ref scheme } if scheme == "mysql"));
    assert!(!err.to_string().contains("secret"));
}

#[tokio::test]
async fn sqlite_in_memory_keeps_data_across_calls() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store
        .registrar_agents()
        .register(registration("m", b"aik"))
        .await
        .unwrap();
    store
        .verifier_agents()
        .enrol(enrolment("m", "v"))
        .await
        .unwrap();
    // Several calls in flight at once share the one connection.
    let gets: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.registrar_agents().get("m").await.unwrap() })
        })
        .collect();
    for g in gets {
        assert_eq!(g.await.unwrap().unwrap().regcount, 1);
    }
    assert_eq!(store.verifier_agents().list(None).await.unwrap(), ["m"]);
}

// ---------------------------------------------------------------------------------
// Importing a Keylime database (vigil_store::keylime)

/// Keylime 7's tables with the column types its migrations give them (the columns the
/// import reads), and one enrolled node: written into the test's own database next to
/// Vigil's tables (the names differ), in SQL both backends take.
const KEYLIME_SCHEMA: &[&str] = &[
    "CREATE TABLE registrarmain (agent_id VARCHAR(80) PRIMARY KEY, key VARCHAR(45), \
     aik_tpm VARCHAR(500), ekcert TEXT, ek_tpm VARCHAR(500), iak_tpm VARCHAR(500), \
     idevid_tpm VARCHAR(500), iak_cert VARCHAR(2048), idevid_cert VARCHAR(2048), \
     mtls_cert TEXT, virtual BOOLEAN, ip VARCHAR(15), port INTEGER, active BOOLEAN, \
     provider_keys TEXT, regcount INTEGER)",
    "CREATE TABLE allowlists (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, \
     checksum VARCHAR(128), generator INTEGER, tpm_policy TEXT, ima_policy TEXT)",
    "CREATE TABLE mbpolicies (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, mb_policy TEXT)",
    "CREATE TABLE verifiermain (agent_id VARCHAR(80) PRIMARY KEY, v VARCHAR(45), \
     ip VARCHAR(15), verifier_id VARCHAR(80), verifier_ip VARCHAR(15), verifier_port INTEGER, \
     port INTEGER, operational_state INTEGER, public_key VARCHAR(500), tpm_policy TEXT, \
     meta_data TEXT, ima_policy_id INTEGER REFERENCES allowlists (id), \
     mb_policy_id INTEGER REFERENCES mbpolicies (id), ima_sign_verification_keys TEXT, \
     revocation_key VARCHAR(2800), accept_tpm_hash_algs TEXT, \
     accept_tpm_encryption_algs TEXT, accept_tpm_signing_algs TEXT, \
     supported_version VARCHAR(20), ak_tpm VARCHAR(500), mtls_cert VARCHAR(2048), \
     accept_attestations BOOLEAN)",
    "INSERT INTO registrarmain (agent_id, key, aik_tpm, ek_tpm, mtls_cert, virtual, ip, port, \
     active, regcount) VALUES ('n1', 'k', 'AQID', 'BAUG', 'disabled', FALSE, '127.0.0.1', 9002, \
     TRUE, 2)",
    "INSERT INTO registrarmain (agent_id, aik_tpm, virtual, active, regcount) \
     VALUES ('vtpm', 'AQID', TRUE, TRUE, 1)",
    "INSERT INTO allowlists (id, name, generator, ima_policy) VALUES (7, 'rt', 3, '{\"meta\": {}}')",
    "INSERT INTO mbpolicies (id, name, mb_policy) VALUES (4, 'n1', NULL)",
    "INSERT INTO verifiermain (agent_id, ip, port, verifier_id, verifier_ip, verifier_port, \
     operational_state, tpm_policy, meta_data, ima_policy_id, mb_policy_id, \
     ima_sign_verification_keys, accept_tpm_hash_algs, accept_tpm_encryption_algs, \
     accept_tpm_signing_algs, supported_version, ak_tpm, mtls_cert) VALUES ('n1', \
     '127.0.0.1', 9002, 'default', '127.0.0.1', 8881, 9, '\"{\\\"mask\\\": \\\"0x400\\\"}\"', \
     '{}', 7, 4, '', '[\"sha256\"]', '[\"rsa\"]', '[\"rsassa\"]', '2.5', 'AQID', 'disabled')",
];

async fn keylime_tables_import(db: TestDb) {
    use vigil_store::keylime::{self, How, KeylimeDump};
    match db.store.backend() {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            for sql in KEYLIME_SCHEMA {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            for sql in KEYLIME_SCHEMA {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let mut dump = KeylimeDump::default();
    keylime::read(&db.url, &mut dump).await.unwrap();
    assert_eq!(dump.registrar.len(), 1);
    assert_eq!(dump.skipped.len(), 1, "{:?}", dump.skipped);
    assert!(
        dump.skipped[0].reason.contains("vTPM"),
        "{:?}",
        dump.skipped
    );

    // A policy Vigil holds under the same name with other content: refused, and the
    // enrolment using it with it.
    let store = &db.store;
    store
        .policies()
        .create_runtime(NewRuntimePolicy {
            name: "rt".into(),
            ima_policy: Some("{}".into()),
            ..NewRuntimePolicy::default()
        })
        .await
        .unwrap();
    let report = keylime::import(dump.clone(), store, store, false, false)
        .await
        .unwrap();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.table, s.id.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("registrarmain", "vtpm"),
            ("allowlists", "rt"),
            ("verifiermain", "n1")
        ]
    );
    let reg = store.registrar_agents().get("n1").await.unwrap().unwrap();
    assert_eq!((reg.active, reg.regcount, reg.port), (true, 2, Some(9002)));
    assert_eq!(reg.aik_tpm, [1, 2, 3]);
    assert_eq!(reg.mtls_cert.as_deref(), Some("disabled"));
    assert!(store.verifier_agents().get("n1").await.unwrap().is_none());

    // With --replace everything but the vTPM node goes over.
    let report = keylime::import(dump, store, store, true, false)
        .await
        .unwrap();
    assert_eq!(report.skipped.len(), 1);
    let hows: Vec<_> = report.imported.iter().map(|i| (i.table, i.how)).collect();
    assert_eq!(
        hows,
        [
            ("registrarmain", How::Replaced),
            ("allowlists", How::Replaced),
            // Imported the first time (policies go over even when their user does not).
            ("mbpolicies", How::Same),
            ("verifiermain", How::New),
        ]
    );
    let a = store.verifier_agents().get("n1").await.unwrap().unwrap();
    // Invalid Quote in Keylime: stopped in Vigil until an operator reactivates it.
    assert_eq!(a.state.operational_state, 10);
    assert_eq!(a.enrolment.runtime_policy.as_deref(), Some("rt"));
    assert_eq!(a.enrolment.mb_policy.as_deref(), Some("n1"));
    assert_eq!(a.enrolment.tpm_policy, r#"{"mask": "0x400"}"#);
    assert_eq!(a.enrolment.accept_tpm_signing_algs, ["rsassa"]);
    assert_eq!(a.enrolment.ak_tpm, [1, 2, 3]);
    let rt = store.policies().get_runtime("rt").await.unwrap().unwrap();
    assert_eq!(rt.ima_policy.as_deref(), Some(r#"{"meta": {}}"#));
}

fn class(name: &str, golden: &str) -> HardwareClass {
    HardwareClass {
        name: name.to_owned(),
        description: format!("{name} machines"),
        golden: golden.to_owned(),
        mb_policy: None,
        runtime_policy: Some("rp".to_owned()),
        changed_at: 1000,
    }
}

/// Classes: create, read, widen (update), list; nodes take a class and labels at
/// enrolment or later, are selected by label, and keep a class from being deleted.
async fn hardware_classes_crud_class_and_labels(db: TestDb) {
    let classes = db.store.hardware_classes();
    let agents = db.store.verifier_agents();
    classes.create(class("r650", "{}")).await.unwrap();
    assert!(matches!(
        classes.create(class("r650", "{}")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::HardwareClass,
            ..
        })
    ));
    classes
        .update(class("r650", "{\"widened\": 1}"))
        .await
        .unwrap();
    assert_eq!(
        classes.get("r650").await.unwrap().unwrap().golden,
        "{\"widened\": 1}"
    );
    assert!(matches!(
        classes.update(class("nope", "{}")).await,
        Err(StoreError::NotFound {
            entity: Entity::HardwareClass,
            ..
        })
    ));
    classes.create(class("a100", "{}")).await.unwrap();
    let names: Vec<_> = classes
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a100", "r650"]);

    // Enrolled with a class and labels; a missing class refuses the enrolment.
    let mut e = enrolment("n1", "v");
    e.hardware_class = Some("r650".to_owned());
    e.labels = BTreeMap::from([("rack".to_owned(), "7".to_owned())]);
    agents.enrol(e).await.unwrap();
    let mut bad = enrolment("n2", "v");
    bad.hardware_class = Some("nope".to_owned());
    assert!(matches!(
        agents.enrol(bad).await,
        Err(StoreError::NotFound {
            entity: Entity::HardwareClass,
            ..
        })
    ));
    agents.enrol(enrolment("n2", "v")).await.unwrap();
    let n1 = agents.get("n1").await.unwrap().unwrap().enrolment;
    assert_eq!(n1.hardware_class.as_deref(), Some("r650"));
    assert_eq!(n1.labels["rack"], "7");
    assert_eq!(classes.users("r650").await.unwrap(), 1);

    // Later: n2 joins rack 7 and class a100, labels kept when only the class changes.
    let rack7 = BTreeMap::from([("rack".to_owned(), "7".to_owned())]);
    agents
        .set_class_and_labels("n2", Some(Some("a100")), Some(&rack7), 2000)
        .await
        .unwrap();
    agents
        .set_class_and_labels("n1", Some(None), None, 2001)
        .await
        .unwrap();
    let n1 = agents.get("n1").await.unwrap().unwrap().enrolment;
    assert_eq!((n1.hardware_class, n1.labels), (None, rack7.clone()));
    assert!(matches!(
        agents
            .set_class_and_labels("n1", Some(Some("nope")), None, 2002)
            .await,
        Err(StoreError::NotFound {
            entity: Entity::HardwareClass,
            ..
        })
    ));
    assert!(matches!(
        agents.set_class_and_labels("gone", None, None, 2003).await,
        Err(StoreError::NotFound {
            entity: Entity::VerifierAgent,
            ..
        })
    ));
    assert_eq!(agents.with_labels(&rack7).await.unwrap(), ["n1", "n2"]);
    let rack8 = BTreeMap::from([("rack".to_owned(), "8".to_owned())]);
    assert!(agents.with_labels(&rack8).await.unwrap().is_empty());
    let statuses = agents.statuses(None, Some("n2")).await.unwrap();
    assert_eq!(
        statuses[0].enrolment.hardware_class.as_deref(),
        Some("a100")
    );

    // In use: refused, naming a node; free again once the node leaves.
    match classes.delete("a100").await {
        Err(StoreError::PolicyInUse {
            agents, agent_id, ..
        }) => {
            assert_eq!((agents, agent_id.as_str()), (1, "n2"));
        }
        other => panic!("{other:?}"),
    }
    agents.delete("n2").await.unwrap();
    classes.delete("a100").await.unwrap();
    classes.delete("r650").await.unwrap();
    assert!(matches!(
        classes.delete("r650").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(classes.get("r650").await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------
// Integrity events, response actions, known-good sets

async fn outbox_rides_the_round_and_leases_deliveries(db: TestDb) {
    let va = db.store.verifier_agents();
    va.enrol(enrolment("n1", "v1")).await.unwrap();
    let event = |uuid: &str| NewEvent {
        uuid: uuid.into(),
        agent_id: "n1".into(),
        event: format!(r#"{{"uuid":"{uuid}"}}"#),
        sinks: vec!["file".into(), "nats".into()],
    };
    let update = RoundUpdate {
        events: vec![event("u1")],
        at: 100,
        ..RoundUpdate::state_only(3)
    };
    va.record_round("n1", update, None).await.unwrap();
    // A round that cannot be recorded queues nothing.
    let lost = RoundUpdate {
        events: vec![event("u2")],
        at: 100,
        ..RoundUpdate::state_only(3)
    };
    assert!(va.record_round("gone", lost, None).await.is_err());
    let outbox = db.store.outbox();
    assert_eq!(outbox.pending().await.unwrap(), 2);

    // Replica a leases both rows; b gets none until the lease expires.
    let a = outbox.claim("a", 100, 30, 10).await.unwrap();
    assert_eq!(
        a.iter().map(|r| r.sink.as_str()).collect::<Vec<_>>(),
        ["file", "nats"]
    );
    assert!(a
        .iter()
        .all(|r| r.uuid == "u1" && r.event == r#"{"uuid":"u1"}"#));
    assert!(outbox.claim("b", 110, 30, 10).await.unwrap().is_empty());
    assert!(outbox.delivered(a[0].id).await.unwrap());
    // a died holding the nats row: b takes it over once its lease ran out.
    let b = outbox.claim("b", 131, 30, 10).await.unwrap();
    assert_eq!(b.iter().map(|r| r.id).collect::<Vec<_>>(), [a[1].id]);
    outbox
        .failed(b[0].id, 200, "connection refused")
        .await
        .unwrap();
    assert!(outbox.claim("a", 199, 30, 10).await.unwrap().is_empty());
    let again = outbox.claim("a", 200, 30, 10).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("connection refused"));
    outbox.enqueue(&[event("u3")], 300).await.unwrap();
    assert_eq!(outbox.pending().await.unwrap(), 3);

    let actions = db.store.response_actions();
    for (i, outcome) in ["dry_run", "failed"].into_iter().enumerate() {
        actions
            .record(&ActionRecord {
                agent_id: "n1".into(),
                event_uuid: "u1".into(),
                rule: "r".into(),
                action: "quarantine".into(),
                outcome: outcome.into(),
                detail: "d".into(),
                at: 100 + i64::try_from(i).unwrap(),
            })
            .await
            .unwrap();
    }
    let recent = actions.recent("n1", 1).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].outcome, "failed");
}

async fn known_good_sets_and_adopted_policies(db: TestDb) {
    let sets = db.store.known_good();
    let set = KnownGood {
        name: "kernel-6.1.2".into(),
        class: "c1".into(),
        measurements: r#"{"pcrs":{},"files":{}}"#.into(),
        recorded_by: "ops".into(),
        recorded_at: 5,
    };
    sets.add(&set).await.unwrap();
    assert!(matches!(
        sets.add(&set).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::KnownGood,
            ..
        })
    ));
    assert_eq!(sets.get("kernel-6.1.2").await.unwrap(), Some(set.clone()));
    assert_eq!(
        sets.list(Some("c1")).await.unwrap(),
        std::slice::from_ref(&set)
    );
    assert!(sets.list(Some("c2")).await.unwrap().is_empty());

    let va = db.store.verifier_agents();
    let mut e = enrolment("n1", "v1");
    e.runtime_policy = Some(PolicyRef::Inline(runtime_policy("n1", r#"{"old":1}"#)));
    va.enrol(e).await.unwrap();
    sets.adopt(
        "n1",
        r#"{"mask":"0x1"}"#,
        Some(r#"{"new":1}"#),
        "kernel-6.1.2",
        9,
    )
    .await
    .unwrap();
    let agent = va.get("n1").await.unwrap().unwrap();
    assert_eq!(agent.enrolment.tpm_policy, r#"{"mask":"0x1"}"#);
    let policy = db
        .store
        .policies()
        .get_runtime("n1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(policy.ima_policy.as_deref(), Some(r#"{"new":1}"#));
    let versions = sets.versions("n1").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].runtime_policy.as_deref(), Some(r#"{"old":1}"#));
    assert!(matches!(
        sets.adopt("gone", "{}", None, "x", 1).await,
        Err(StoreError::NotFound { .. })
    ));
    sets.delete("kernel-6.1.2").await.unwrap();
    assert!(matches!(
        sets.delete("kernel-6.1.2").await,
        Err(StoreError::NotFound { .. })
    ));
}
