//! Tests of runtime policy parsing, conversion and DSSE verification, on Keylime's own
//! policy fixtures and on schema violations.

use super::*;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test/data/"
);

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn minimal(patch: impl FnOnce(&mut Value)) -> Result<RuntimePolicy, PolicyError> {
    let mut doc = RuntimePolicy::empty().to_json();
    patch(&mut doc);
    RuntimePolicy::from_json(&serde_json::to_vec(&doc).unwrap())
}

fn schema_path(err: PolicyError) -> String {
    match err {
        PolicyError::Schema { path, .. } => path,
        other => panic!("expected a schema error, got {other}"),
    }
}

#[test]
fn keylime_generated_policies_load() {
    for alg in ["sha1", "sha256", "sha384", "sha512", "sm3_256", "unknown"] {
        let name = format!("create-runtime-policy/policy-{alg}");
        let bytes = read(&name);
        let p = RuntimePolicy::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.generator(), 3, "{name}");
        assert_eq!(p.len(), 1, "{name}");
        assert_eq!(p.checksum(), HashAlg::Sha256.hash(&bytes).to_hex());
    }
    let p = RuntimePolicy::from_json(&read("sign-runtime-policy/runtime-policy.json")).unwrap();
    assert!(p.digests_for("/usr/sbin/foobar-sbin").is_some());
    let e =
        RuntimePolicy::from_json(&read("sign-runtime-policy/runtime-policy-empty.json")).unwrap();
    assert!(e.is_empty());
    assert!(
        RuntimePolicy::from_json(&read("sign-runtime-policy/runtime-policy-bogus.json")).is_err()
    );
}

#[test]
fn prefixed_digests_and_envelopes_unwrap() {
    // Keylime's DSSE fixture policy carries `sha256:` on boot_aggregate.
    let plain = RuntimePolicy::from_json(&read("runtime-policy-test.json")).unwrap();
    let ba = plain.digests_for("boot_aggregate").unwrap();
    assert_eq!(
        ba.iter().next().unwrap().to_hex(),
        "4309217e9709def327c3409407f4d52907aeba46ef1b4f46529fd095f2ef9fb2"
    );
    let wrapped = RuntimePolicy::from_json(&read("runtime-policy-test-signed.json")).unwrap();
    assert_eq!(wrapped.len(), plain.len());
    assert_eq!(wrapped.to_json()["digests"], plain.to_json()["digests"]);
}

#[test]
fn dsse_signatures_verify_with_the_key_only() {
    let key = read("runtime-policy-pubkey.pub");
    let p = verify_dsse(&read("runtime-policy-test-signed.json"), &key).unwrap();
    assert!(p.digests_for("boot_aggregate").is_some());
    assert!(matches!(
        verify_dsse(&read("runtime-policy-test-signed-bad.json"), &key),
        Err(PolicyError::Signature(DsseError::BadSignature))
    ));
    // A payload changed after signing.
    let mut env: Value = serde_json::from_slice(&read("runtime-policy-test-signed.json")).unwrap();
    let other = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        serde_json::to_vec(&RuntimePolicy::empty().to_json()).unwrap(),
    );
    env["payload"] = json!(other);
    assert!(matches!(
        verify_dsse(&serde_json::to_vec(&env).unwrap(), &key),
        Err(PolicyError::Signature(DsseError::BadSignature))
    ));
    // An RSA key is not a DSSE policy key; garbage is not an envelope.
    let rsa = std::fs::read(format!("{DATA}ima_keys/rsa2048pub.pem")).unwrap();
    assert!(matches!(
        verify_dsse(&read("runtime-policy-test-signed.json"), &rsa),
        Err(PolicyError::Signature(DsseError::Key(_)))
    ));
    assert!(verify_dsse(b"{}", &key).is_err());
}

#[test]
fn schema_violations_name_the_field() {
    assert_eq!(
        schema_path(minimal(|d| drop(d.as_object_mut().unwrap().remove("excludes"))).unwrap_err()),
        "(document)"
    );
    let err = minimal(|d| d["digests"] = json!({"/bin/ls": ["XYZ"]})).unwrap_err();
    assert!(err.to_string().contains("digests./bin/ls"), "{err}");
    let err = minimal(|d| d["digests"] = json!({"/bin/ls": []})).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert_eq!(
        schema_path(minimal(|d| d["ima"]["dm_policy"] = json!({})).unwrap_err()),
        "ima.dm_policy"
    );
    assert_eq!(
        schema_path(minimal(|d| d["ima"]["log_hash_alg"] = json!("md5")).unwrap_err()),
        "ima.log_hash_alg"
    );
    assert_eq!(
        schema_path(minimal(|d| d["meta"]["generator"] = json!(4)).unwrap_err()),
        "meta.generator"
    );
    assert_eq!(
        schema_path(minimal(|d| d["release"] = json!("0")).unwrap_err()),
        "release"
    );
    // Odd-length hex can never equal a digest.
    assert!(minimal(|d| d["digests"] = json!({"/x": ["a".repeat(41)]})).is_err());
    // Properties the schema does not know are allowed, as in Keylime.
    assert!(minimal(|d| d["comment"] = json!("made by hand")).is_ok());
    assert!(RuntimePolicy::from_json(b"[]").is_err());
    assert!(RuntimePolicy::from_json(b"").is_err());
}

#[test]
fn bad_excludes_fail_at_load() {
    let err = minimal(|d| d["excludes"] = json!(["/ok", "(unclosed"])).unwrap_err();
    assert!(
        matches!(err, PolicyError::Exclude(ExcludeError { index: 1, .. })),
        "{err}"
    );
}

#[test]
fn truncated_policies_are_refused() {
    // Every cut inside the JSON value is refused (a typed error, not a panic); only
    // cuts into the trailing whitespace leave a whole document, which must still load.
    for (file, step) in [
        ("sign-runtime-policy/runtime-policy.json", 1),
        ("runtime-policy-test-signed.json", 7),
    ] {
        let bytes = read(file);
        let end = bytes.trim_ascii_end().len();
        for cut in (0..end).step_by(step) {
            assert!(
                RuntimePolicy::from_json(&bytes[..cut]).is_err(),
                "{file} cut at {cut} of {end} bytes was accepted"
            );
        }
        for cut in end..=bytes.len() {
            RuntimePolicy::from_json(&bytes[..cut])
                .unwrap_or_else(|e| panic!("{file} cut at {cut} (whitespace only): {e}"));
        }
    }
}

#[test]
fn lookups_and_keyrings() {
    let p = minimal(|d| {
        d["digests"] = json!({"/usr/bin/ls": ["aa".repeat(32), "bb".repeat(20)]});
        d["keyrings"] = json!({".ima": ["cc".repeat(32)]});
        d["ima"]["ignored_keyrings"] = json!([".builtin_trusted_keys"]);
        d["excludes"] = json!(["/tmp/"]);
    })
    .unwrap();
    assert_eq!(p.digests_for("/usr/bin/ls").unwrap().len(), 2);
    assert!(p.digests_for("/usr/bin/cat").is_none());
    assert!(p.keyring_digests(".ima").is_some());
    assert!(p.ignores_keyring(".builtin_trusted_keys"));
    assert!(!p.ignores_keyring(".ima"));
    assert!(p.is_excluded("/tmp/x"));
    assert!(!p.is_excluded("/var/tmp/x"));
    assert_eq!(p.log_hash_alg(), HashAlg::Sha1);
    // Canonical JSON round-trips.
    let again = RuntimePolicy::from_json(&serde_json::to_vec(&p.to_json()).unwrap()).unwrap();
    assert_eq!(again.to_json(), p.to_json());
}

#[test]
fn legacy_allowlists_convert() {
    let short = String::from_utf8(read("ima-allowlist-short.txt")).unwrap();
    let p = RuntimePolicy::from_legacy(Some(&short), None).unwrap();
    assert_eq!(p.generator(), 3);
    assert_eq!(
        p.digests_for("boot_aggregate")
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .to_hex(),
        "4309217e9709def327c3409407f4d52907aeba46ef1b4f46529fd095f2ef9fb2"
    );
    for alg in ["sha1", "sha256", "sha384", "sha512", "sm3_256"] {
        let text =
            String::from_utf8(read(&format!("create-runtime-policy/allowlist-{alg}"))).unwrap();
        let p = RuntimePolicy::from_legacy(Some(&text), None).unwrap();
        assert!(p.digests_for("data").is_some(), "{alg}");
    }
    let p = RuntimePolicy::from_legacy(
        Some("aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11 %keyring:.ima\n"),
        Some("# comment\n\n/tmp/.*\n  ^/var/log/  \n"),
    )
    .unwrap();
    assert!(p.keyring_digests(".ima").is_some());
    assert_eq!(p.excludes(), ["/tmp/.*", "^/var/log/"]);
    let json_allowlist = r#"{"meta":{"version":2},"release":0,
        "hashes":{"/bin/ls":["aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"]},
        "ima":{"ignored_keyrings":["*"]}}"#;
    let p = RuntimePolicy::from_legacy(Some(json_allowlist), None).unwrap();
    assert!(p.digests_for("/bin/ls").is_some());
    assert!(p.ignores_keyring("anything"));
    // Bad lines name the line.
    let err = RuntimePolicy::from_legacy(
        Some("aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11 /ok\nnot-a-line\n"),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    let err = RuntimePolicy::from_legacy(Some("zz /bad\n"), None).unwrap_err();
    assert!(err.to_string().contains("digests./bad"), "{err}");
    assert!(RuntimePolicy::from_legacy(Some(r#"{"digests":{}}"#), None).is_err());
}

#[test]
fn signed_envelopes_round_trip_on_both_curves() {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let payload = serde_json::to_vec(&RuntimePolicy::empty().to_json()).unwrap();
    let p256 = DsseSigningKey::generate_p256(&mut rng);
    // A P-384 key read back from PKCS#8.
    let p384 = DsseSigningKey::P384(p384::ecdsa::SigningKey::random(&mut rng));
    let p384_pkcs8 = {
        use p384::pkcs8::EncodePrivateKey;
        let DsseSigningKey::P384(k) = &p384 else {
            unreachable!()
        };
        p384::SecretKey::from(k)
            .to_pkcs8_pem(der::pem::LineEnding::LF)
            .unwrap()
    };
    let p384_again = DsseSigningKey::from_pem(&p384_pkcs8).unwrap();
    for key in [p256, p384_again] {
        let keyid = key.ecdsa_keyid().unwrap();
        let env = sign_dsse(&payload, &key, Some(&keyid));
        let public = key.public_key_pem().unwrap();
        let p = verify_dsse(env.as_bytes(), public.as_bytes()).unwrap();
        assert!(p.is_empty());
        let doc: Value = serde_json::from_str(&env).unwrap();
        assert_eq!(doc["signatures"][0]["keyid"], json!(keyid));
        assert_eq!(doc["payloadType"], json!(KEYLIME_PAYLOAD_TYPE));
        // Python json.dumps layout.
        assert!(env.starts_with("{\"payload\": \""), "{env}");
        // The PKCS#8 form reads back as the same key.
        let again = DsseSigningKey::from_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.public_key_pem().unwrap(), public);
        // Another key does not verify it.
        let other = DsseSigningKey::generate_p256(&mut rng)
            .public_key_pem()
            .unwrap();
        assert!(matches!(
            verify_dsse(env.as_bytes(), other.as_bytes()),
            Err(PolicyError::Signature(DsseError::BadSignature))
        ));
    }
    assert!(DsseSigningKey::from_pem(
        &String::from_utf8(read("runtime-policy-pubkey.pub")).unwrap()
    )
    .is_err());
    assert!(matches!(
        DsseSigningKey::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"),
        Err(DsseError::Key(m)) if m.contains("encrypted")
    ));
}

#[test]
fn keylime_p521_test_key_signs_and_verifies() {
    let dir = format!("{DATA}sign-runtime-policy/");
    let private = std::fs::read_to_string(format!("{dir}ec-p521-private.pem")).unwrap();
    let public = std::fs::read(format!("{dir}ec-p521-public.pem")).unwrap();
    let key = DsseSigningKey::from_pem(&private).unwrap();
    assert_eq!(key.public_key_pem().unwrap().as_bytes(), public.as_slice());
    let payload = read("sign-runtime-policy/runtime-policy.json");
    let env = sign_dsse(&payload, &key, None);
    assert!(!env.contains("keyid"));
    let p = verify_dsse(env.as_bytes(), &public).unwrap();
    assert!(p.digests_for("/usr/sbin/foobar-sbin").is_some());
    // An RSA private key is refused with a reason.
    let rsa = std::fs::read_to_string(format!("{dir}rsa-4096-private.pem")).unwrap();
    assert!(matches!(
        DsseSigningKey::from_pem(&rsa),
        Err(DsseError::Key(_))
    ));
}
