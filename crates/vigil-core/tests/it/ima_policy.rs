//! Runtime-policy validation of IMA entries, signatures and keyrings, on the scenarios
//! of Keylime's own `test/test_ima_verification.py` (its vectors restated here) and
//! Keylime's key files in `../shared/testdata`.

use vigil_core::ima::keyring::{parse_ima_key, ImaKeyring, ImaKeyrings};
use vigil_core::ima::signature::SignatureError;
use vigil_core::ima::validate::PolicyValidator;
use vigil_core::ima::{process_measurement_list, ImaConfig, ImaEntry, ImaVerdict};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::{Digest, HashAlg};

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test/data/ima_keys/"
);

/// ima-sig lines: the first signed with rsa2048.pem, the second with secp256k1.pem.
const SIGNED_DD: &str = "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f";
const SIGNED_ZMORE: &str = "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402500483046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3";
/// The same entry with a signature whose size field is wrong.
const BAD_SIZE_ZMORE: &str = "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402548003046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3";
/// An `.ima` keyring entry carrying a P-256 certificate.
const IMA_KEY: &str = "10 978351440c6c8a17568f0c366b9ede28efd14f8c ima-buf sha256:a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a .ima 308201d130820178a003020102020101300906072a8648ce3d0401301b3119301706035504030c1054657374696e672d45434453412d4341301e170d3231303631313133353831365a170d3232303631313133353831365a3021311f301d06035504030c1665636473612d63612d7369676e65642d65632d6b65793059301306072a8648ce3d020106082a8648ce3d030107034200044ce55be36765b59de2767f6d6721be8bea8e3db4ccc25ab76c30f5d1c11752ae1699cc39d31b378f69fecbe65ce1eb09e075f840fe4c052bafb9039742b76202a381a73081a430090603551d1304023000301d0603551d0e04160414b6fb3c083d19695be441c5f59afb95742cb6058c30560603551d23044f304d80140a51da379e45bd7ac623c3f765b53e1e2dde5195a11fa41d301b3119301706035504030c1054657374696e672d45434453412d434182142bb351b0d645e4d8594316ac3c96fc6d9c83791530130603551d25040c300a06082b06010505070302300b0603551d0f040403020780300906072a8648ce3d04010348003045022033d47b623c9feefab7d6e68b001ac6463433f99b61ce7b951a32da065a5d17af022100f3d73e38070053aec63a941ed36ae0dcfa25ed9cd538c459732a7e782132a4ca";
/// Keylime's tenant keyring string: rsa2048 and secp256k1 with their key ids.
const TENANT_KEYRING: &str = r#"{"pubkeys": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1cD7bW5tX5qIVgWskS5tzY+XpqWzcW6HFq5npj8dHFIWsAJJCUdoSU631hkyY8HP/RfXDPq/J4IeKvx35EVXj49t1Z1FTJBgUlEbkKvqm0rY6jo7PnJ6BsDRrauXtiEXVKNXcWXDk8ES+9v9Cz26BJYAr+5Xgm2aEyAbj8GhicxUZfsjDm8eJ7ZnQKuhF7jejG5dYAYxnBVu99bQJHI5Fsu3dAjGbys9v7ToNbonS+1bJXdHyEE0swhxBOPvvV6vx5CzRNw1Sou3rT19T4j8wpsFOyYXVcbbRVBAmBE2Qy2UHvojFqaJN/A9lztllyER1S5heGG6CxK3GoR6pkOXAQIDAQAB", "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEnNH3Y/xOTwRRd8D6hpodRLnVx71qDTLvJHouno7nU7JSzcXWN1PxK+HQEh1V7sMdwBER4KFKE635JTv6C+BRBg=="], "keyids": [4081397027, 1394556965]}"#;

fn policy(digests: &str, excludes: &str, keyrings: &str, ignored: &str) -> RuntimePolicy {
    let text = format!(
        r#"{{"meta":{{"version":1,"generator":3}},"release":0,"digests":{{{digests}}},
        "excludes":[{excludes}],"keyrings":{{{keyrings}}},
        "ima":{{"ignored_keyrings":[{ignored}],"log_hash_alg":"sha1","dm_policy":null}},
        "ima-buf":{{}},"verification-keys":""}}"#
    );
    RuntimePolicy::from_json(text.as_bytes()).expect("test policy")
}

const GOOD_DIGESTS: &str = r#""/usr/bin/dd":["d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"],
    "/usr/bin/zmore":["b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b"]"#;
const WRONG_DIGESTS: &str = r#""/usr/bin/dd":["bad05d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef"],
    "/usr/bin/zmore":["bad00b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b"]"#;

fn check(p: &RuntimePolicy, keyrings: &mut ImaKeyrings, log: &str) -> ImaVerdict {
    let v = PolicyValidator::new(p, &[], keyrings);
    process_measurement_list(ImaConfig::new(HashAlg::Sha256), None, log, None, v)
}

fn ids(v: &ImaVerdict) -> Vec<&str> {
    v.failure
        .events()
        .iter()
        .map(|e| e.event_id.as_str())
        .collect()
}

fn tenant() -> ImaKeyrings {
    let mut k = ImaKeyrings::new();
    k.set_tenant_keyring(ImaKeyring::from_keylime_json(TENANT_KEYRING).unwrap());
    k
}

fn key_file(name: &str) -> (vigil_core::ima::keyring::ImaPublicKey, Option<u32>) {
    let bytes = std::fs::read(format!("{KEYS}{name}")).unwrap();
    parse_ima_key(&bytes).unwrap().expect("a key")
}

/// A PKCS#1 RSA private key wrapped as PKCS#8 (`PrivateKeyInfo`, version 0).
fn pkcs8_rsa(pkcs1: &[u8]) -> Vec<u8> {
    use der::Encode;
    let info = rsa::pkcs8::PrivateKeyInfo::new(
        rsa::pkcs8::AlgorithmIdentifierRef {
            oid: rsa::pkcs1::ALGORITHM_OID,
            parameters: Some(der::asn1::AnyRef::NULL),
        },
        pkcs1,
    );
    info.to_der().unwrap()
}

#[test]
fn key_ids_are_derived_as_keylime_derives_them() {
    let (rsa, _) = key_file("rsa2048pub.pem");
    assert_eq!(rsa.derived_keyid(), 4_081_397_027);
    // A private key file gives its public half, PKCS#1 or PKCS#8 (read, not computed).
    let (from_private, _) = key_file("rsa2048.pem");
    assert_eq!(from_private.derived_keyid(), 4_081_397_027);
    let pkcs1 = std::fs::read_to_string(format!("{KEYS}rsa2048.pem")).unwrap();
    let (_, der) = der::pem::decode_vec(pkcs1.as_bytes()).unwrap();
    let pkcs8 =
        der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, &pkcs8_rsa(&der)).unwrap();
    let (from_pkcs8, _) = parse_ima_key(pkcs8.as_bytes()).unwrap().unwrap();
    assert_eq!(from_pkcs8.derived_keyid(), 4_081_397_027);
    let (k1, _) = key_file("secp256k1.pem");
    assert_eq!(k1.derived_keyid(), 1_394_556_965);
    // A certificate's key id is the tail of its Subject Key Identifier.
    let entry = ImaEntry::parse(IMA_KEY).unwrap();
    let (_, keyid) = parse_ima_key(&entry.buffer.unwrap().to_vec())
        .unwrap()
        .unwrap();
    assert_eq!(keyid, Some(0x2cb6_058c));
    // A plain buffer is not a key.
    assert!(parse_ima_key(b"grub_cmd: linux /vmlinuz")
        .unwrap()
        .is_none());
}

#[test]
fn keyring_json_round_trips() {
    let ring = ImaKeyring::from_keylime_json(TENANT_KEYRING)
        .unwrap()
        .unwrap();
    assert_eq!(ring.len(), 2);
    let again = ImaKeyring::from_keylime_json(&ring.to_keylime_json())
        .unwrap()
        .unwrap();
    assert_eq!(again.to_keylime_json(), ring.to_keylime_json());
    // Doubly encoded, as Keylime's database stores it; and without keyids.
    let quoted = serde_json::to_string(TENANT_KEYRING).unwrap();
    assert_eq!(
        ImaKeyring::from_keylime_json(&quoted)
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    let no_ids = TENANT_KEYRING
        .split(", \"keyids\"")
        .next()
        .unwrap()
        .to_owned()
        + "}";
    assert_eq!(
        ImaKeyring::from_keylime_json(&no_ids)
            .unwrap()
            .unwrap()
            .len(),
        2
    );
    assert!(ImaKeyring::from_keylime_json("").unwrap().is_none());
    assert!(ImaKeyring::from_keylime_json("{not json").is_err());
}

#[test]
fn signatures_verify_with_tenant_keys_rsa_and_secp256k1() {
    let keyrings = tenant();
    for line in [SIGNED_DD, SIGNED_ZMORE] {
        let e = ImaEntry::parse(line).unwrap();
        let sig = e.signature.expect("signature").to_vec();
        let digest = e.digest.to_digest();
        keyrings
            .verify(e.digest.alg, digest.as_bytes(), &sig)
            .unwrap_or_else(|err| panic!("{}: {err}", e.name));
        // A flipped digest byte, the wrong algorithm name, a truncated blob all fail.
        let mut flipped = digest.as_bytes().to_vec();
        flipped[0] ^= 1;
        assert!(matches!(
            keyrings.verify(e.digest.alg, &flipped, &sig),
            Err(SignatureError::Invalid(_))
        ));
        assert!(matches!(
            keyrings.verify("sha1", digest.as_bytes(), &sig),
            Err(SignatureError::HashMismatch { .. })
        ));
        for cut in 0..sig.len() {
            assert!(keyrings
                .verify(e.digest.alg, digest.as_bytes(), &sig[..cut])
                .is_err());
        }
    }
    let e = ImaEntry::parse(SIGNED_DD).unwrap();
    assert!(matches!(
        ImaKeyrings::new().verify(
            e.digest.alg,
            e.digest.to_digest().as_bytes(),
            &e.signature.unwrap().to_vec()
        ),
        Err(SignatureError::UnknownKey(0xf345_2d23))
    ));
}

#[test]
fn keylime_mixed_verification_scenarios() {
    let log = format!("{SIGNED_DD}\n{SIGNED_ZMORE}\n");
    let good = policy(GOOD_DIGESTS, "", "", "");
    let wrong = policy(WRONG_DIGESTS, "", "", "");
    let empty = RuntimePolicy::empty();

    // Covered by the allowlist, no keys: passes.
    assert_eq!(
        ids(&check(&good, &mut ImaKeyrings::new(), &log)),
        Vec::<&str>::new()
    );
    // Valid signatures rescue wrong or missing digests.
    assert!(check(&wrong, &mut tenant(), &log).is_ok());
    assert!(check(&empty, &mut tenant(), &log).is_ok());
    // Without keys the digest rule decides, and reports ima-ng events.
    assert_eq!(
        ids(&check(&wrong, &mut ImaKeyrings::new(), &log)),
        ["ima.validation.ima-ng.runtime_policy_hash"; 2]
    );
    assert_eq!(
        ids(&check(&empty, &mut ImaKeyrings::new(), &log)),
        ["ima.validation.ima-ng.not_in_allowlist"; 2]
    );
    // Excluded files pass whatever their signature.
    let excluded = policy(WRONG_DIGESTS, r#""/usr/bin/dd","/usr/bin/zmore""#, "", "");
    assert!(check(&excluded, &mut ImaKeyrings::new(), &log).is_ok());
    // A signature whose size field lies counts as absent: that changes the template
    // data, so the template hash fails, and (as in Keylime) an entry whose template
    // hash fails is not judged by the policy.
    let v = check(&wrong, &mut tenant(), BAD_SIZE_ZMORE);
    assert_eq!(ids(&v), ["ima.validation.ima_hash"]);
}

#[test]
fn failing_file_entries_name_their_file_outside_keylimes_context() {
    let log = format!("{SIGNED_DD}\n{SIGNED_ZMORE}\n");
    let files = |v: &ImaVerdict| -> Vec<Option<String>> {
        v.failure.events().iter().map(|e| e.file.clone()).collect()
    };
    let wrong = check(
        &policy(WRONG_DIGESTS, "", "", ""),
        &mut ImaKeyrings::new(),
        &log,
    );
    assert_eq!(
        files(&wrong),
        [Some("/usr/bin/dd".into()), Some("/usr/bin/zmore".into())]
    );
    // Keylime's context is untouched: message, got, expected and nothing else.
    let ctx = wrong.failure.events()[0].context.as_object().unwrap();
    assert_eq!(
        ctx.keys().map(String::as_str).collect::<Vec<_>>(),
        ["message", "got", "expected"]
    );
    let unknown = check(&RuntimePolicy::empty(), &mut ImaKeyrings::new(), &log);
    assert_eq!(
        files(&unknown),
        [Some("/usr/bin/dd".into()), Some("/usr/bin/zmore".into())]
    );
    // An ima-buf name (a keyring) is not a file.
    let key = check(&RuntimePolicy::empty(), &mut ImaKeyrings::new(), IMA_KEY);
    assert_eq!(ids(&key), ["ima.validation.ima-ng.not_in_allowlist"]);
    assert_eq!(files(&key), [None]);
}

#[test]
fn ima_buf_keys_are_checked_then_learnt() {
    let key_digest =
        r#"".ima":["a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a"]"#;
    let trusted = policy("", "", key_digest, "");
    let mut keyrings = ImaKeyrings::new();
    assert!(check(&trusted, &mut keyrings, IMA_KEY).is_ok());
    // The key is learnt now: a signature by key id 0x2cb6058c would be looked up.
    let mut blob = vec![3, 2, 4, 0x2c, 0xb6, 0x05, 0x8c, 0, 1, 0];
    assert!(matches!(
        keyrings.verify("sha256", &[0; 32], &blob),
        Err(SignatureError::Invalid(0x2cb6_058c))
    ));
    blob[3] = 0;
    assert!(matches!(
        keyrings.verify("sha256", &[0; 32], &blob),
        Err(SignatureError::UnknownKey(_))
    ));

    // Not in the policy's keyrings: not_in_allowlist, and nothing learnt.
    let mut fresh = ImaKeyrings::new();
    assert_eq!(
        ids(&check(&RuntimePolicy::empty(), &mut fresh, IMA_KEY)),
        ["ima.validation.ima-ng.not_in_allowlist"]
    );
    // An ignored keyring accepts the key unchecked.
    let ignoring = policy("", "", "", r#""*""#);
    assert!(check(&ignoring, &mut ImaKeyrings::new(), IMA_KEY).is_ok());
}

/// An `.ima` keyring `ima-buf` line carrying `der`, with its true template hash.
fn ima_buf_line(der: &[u8]) -> String {
    let digest = HashAlg::Sha256.hash(der).to_hex();
    let body = format!("ima-buf sha256:{digest} .ima {}", hex::encode(der));
    let placeholder = format!("10 {} {body}", "0".repeat(40));
    let data = ImaEntry::parse(&placeholder).unwrap().template_data();
    format!("10 {} {body}", HashAlg::Sha1.hash(&data).to_hex())
}

#[test]
fn learnt_keys_survive_their_keylime_json_and_still_verify_signatures() {
    // The rsa2048 key that signed SIGNED_DD, measured into `.ima` and vouched for by the
    // policy; /usr/bin/dd has a wrong digest, so only its signature can make it pass.
    let pem = std::fs::read_to_string(format!("{KEYS}rsa2048pub.pem")).unwrap();
    let der = der::pem::decode_vec(pem.as_bytes()).unwrap().1;
    let key_line = ima_buf_line(&der);
    let key_digest = HashAlg::Sha256.hash(&der).to_hex();
    let p = policy(
        WRONG_DIGESTS,
        "",
        &format!(r#"".ima":["{key_digest}"]"#),
        "",
    );

    let mut before = ImaKeyrings::new();
    assert!(check(&p, &mut before, &key_line).is_ok());
    assert_eq!(before.learned_len(), 1);
    let stored = before.learned_to_keylime_json();
    // Keylime's form: keyring name → that keyring's JSON text.
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(
        v[".ima"].as_str().unwrap().contains("\"pubkeys\""),
        "{stored}"
    );

    // A restarted verifier: only what was stored.
    let mut after = ImaKeyrings::new();
    after.set_learned_from_keylime_json(&stored).unwrap();
    assert_eq!(after.learned_to_keylime_json(), stored);
    assert!(check(&p, &mut after, SIGNED_DD).is_ok());
    // Without the learnt key the same entry fails.
    assert_eq!(
        ids(&check(&p, &mut ImaKeyrings::new(), SIGNED_DD)),
        ["ima.validation.ima-ng.runtime_policy_hash"]
    );
    // Keylime's doubly encoded text and object keyrings read the same; empty texts and
    // `null` learn nothing; garbage is an error that keeps what was learnt.
    let mut again = ImaKeyrings::new();
    again
        .set_learned_from_keylime_json(&serde_json::to_string(&stored).unwrap())
        .unwrap();
    assert_eq!(again.learned_to_keylime_json(), stored);
    let object = format!(r#"{{".ima": {}}}"#, v[".ima"].as_str().unwrap());
    again.set_learned_from_keylime_json(&object).unwrap();
    assert_eq!(again.learned_to_keylime_json(), stored);
    for text in ["not json", "[1]", r#"{".ima": "{\"pubkeys\": 3}"}"#] {
        assert!(again.set_learned_from_keylime_json(text).is_err(), "{text}");
        assert_eq!(again.learned_len(), 1, "{text}");
    }
    for text in ["", "null", "{}"] {
        let mut k = ImaKeyrings::new();
        k.set_learned_from_keylime_json(text).unwrap();
        assert_eq!(k.learned_len(), 0);
        assert_eq!(k.learned_to_keylime_json(), "{}");
    }
}

#[test]
fn boot_aggregates_from_the_event_log_extend_the_policy() {
    let digest = "e4cb9f5709c88376b5fc3743cd88e76b9aae8f3d992d845678de5215edb31216";
    let line = "10 0c8a706a75a5689c1e168f0a573a3cbec33061b5 ima-sig sha256:e4cb9f5709c88376b5fc3743cd88e76b9aae8f3d992d845678de5215edb31216 boot_aggregate ";
    let p = RuntimePolicy::empty();
    let extra = [Digest::from_hex(digest).unwrap()];
    let mut k = ImaKeyrings::new();
    let v = process_measurement_list(
        ImaConfig::new(HashAlg::Sha256),
        None,
        line,
        None,
        PolicyValidator::new(&p, &extra, &mut k),
    );
    assert!(v.is_ok(), "{:?}", v.failure);
    let other = [HashAlg::Sha256.hash(b"other boot")];
    let v = process_measurement_list(
        ImaConfig::new(HashAlg::Sha256),
        None,
        line,
        None,
        PolicyValidator::new(&p, &other, &mut k),
    );
    assert_eq!(ids(&v), ["ima.validation.ima-ng.runtime_policy_hash"]);
    assert_eq!(
        v.failure.events()[0].context["expected"][0],
        other[0].to_hex()
    );
}
