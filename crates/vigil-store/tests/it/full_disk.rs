//! SQLite on a filesystem that fills up: every write fails while it is full (and
//! nothing is half-written), and once space is freed the same `Store` reads and writes
//! again, without a restart. The test mounts a small tmpfs of its own (root only); where
//! mounting is not allowed it skips with a visible line, and fails under `CI`.

use vigil_store::{Enrolment, RoundUpdate, Store};

fn enrolment(id: &str) -> Enrolment {
    Enrolment {
        agent_id: id.to_owned(),
        v: None,
        ip: Some("10.0.0.7".to_owned()),
        port: Some(9002),
        verifier_id: "v".to_owned(),
        verifier_ip: "127.0.0.1".to_owned(),
        verifier_port: 8881,
        operational_state: 1,
        public_key: None,
        tpm_policy: "{}".to_owned(),
        meta_data: "{}".to_owned(),
        runtime_policy: None,
        mb_policy: None,
        ima_sign_verification_keys: "[]".to_owned(),
        revocation_key: None,
        accept_tpm_hash_algs: vec!["sha256".to_owned()],
        accept_tpm_encryption_algs: vec!["rsa".to_owned()],
        accept_tpm_signing_algs: vec!["rsassa".to_owned()],
        supported_version: "2.6".to_owned(),
        ak_tpm: vec![0; 64],
        mtls_cert: None,
        accept_attestations: true,
        hardware_class: None,
        labels: Default::default(),
        class_since: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_recovers_from_a_full_disk_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = vigil_testkit::Tmpfs::mount(dir.path(), "8m") else {
        return;
    };
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v.db").display());
    let store = Store::open(&url).await.unwrap();
    let agents = store.verifier_agents();
    agents.enrol(enrolment("n1")).await.unwrap();
    let big = RoundUpdate {
        engine_state: Some("x".repeat(256 * 1024)),
        ..RoundUpdate::state_only(3)
    };
    agents.record_round("n1", big.clone(), None).await.unwrap();

    let filler = fs.fill("filler");
    // Full: writes fail, and a failed enrolment leaves nothing behind.
    let mut failed = 0;
    for i in 0..20 {
        if agents.enrol(enrolment(&format!("m{i}"))).await.is_err() {
            failed += 1;
        }
        if agents.record_round("n1", big.clone(), None).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "writes must fail on a full filesystem");

    std::fs::remove_file(&filler).unwrap();
    // Space is back: the same store reads and writes again.
    let n1 = agents
        .get("n1")
        .await
        .expect("reads work again")
        .expect("n1 is there");
    assert_eq!(n1.state.operational_state, 3);
    agents
        .record_round("n1", RoundUpdate::state_only(9), None)
        .await
        .expect("writes work again");
    agents
        .enrol(enrolment("n2"))
        .await
        .expect("enrolments work again");
    assert_eq!(
        agents
            .get("n1")
            .await
            .unwrap()
            .unwrap()
            .state
            .operational_state,
        9
    );
    for id in agents.list(None).await.unwrap() {
        // Every agent stored is whole.
        let a = agents.get(&id).await.unwrap().unwrap();
        assert_eq!(a.enrolment.agent_id, id);
    }
    store.close().await;
}
