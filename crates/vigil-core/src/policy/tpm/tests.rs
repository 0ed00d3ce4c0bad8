//! `tpm_policy` parsing and Keylime's PCR-check order and event ids.

use super::*;

const NK: &str = "-----BEGIN PUBLIC KEY-----\nMIIB...\n-----END PUBLIC KEY-----\n";

fn digest(byte: u8) -> Digest {
    Digest::from_slice(&[byte; 32]).unwrap()
}

fn ids(f: &Failure) -> Vec<&str> {
    f.events().iter().map(|e| e.event_id.as_str()).collect()
}

/// A quote of PCRs 0, 7, 10, 15 and a correctly bound 16.
fn quoted() -> BTreeMap<u32, Digest> {
    BTreeMap::from([
        (0, digest(0xa0)),
        (7, digest(0xa7)),
        (10, digest(0x10)),
        (15, digest(0)),
        (16, data_pcr_value(HashAlg::Sha256, NK)),
    ])
}

fn run(policy: &TpmPolicy, pcrs: &BTreeMap<u32, Digest>, ima: &ImaPcr) -> PcrVerdict {
    check_pcrs(
        HashAlg::Sha256,
        pcrs,
        &PcrCheck {
            tpm_policy: policy,
            data: Some(NK),
            ima,
            measured_boot: None,
        },
    )
}

#[test]
fn keylime_policy_json_round_trips() {
    let p = TpmPolicy::from_json(&format!(
        r#"{{"15": "{}", "7": ["{}", "{}"], "mask": "0x0"}}"#,
        "00".repeat(32),
        "A7".repeat(32),
        "b7".repeat(32)
    ))
    .unwrap();
    assert_eq!(p.mask(), (1 << 15) | (1 << 7));
    // Values are lowercased; a single string becomes a list.
    assert_eq!(p.allowed()[&7], ["a7".repeat(32), "b7".repeat(32)]);
    assert_eq!(p.allowed()[&15], ["00".repeat(32)]);
    let back = p.to_value();
    assert_eq!(back["mask"], "0x8080");
    assert_eq!(TpmPolicy::from_value(&back).unwrap(), p);
}

#[test]
fn bad_policies_name_the_problem() {
    for (text, needle) in [
        ("[]", "not a JSON object"),
        (r#"{"x": "00"}"#, "\"x\""),
        (r#"{"25": "00"}"#, "\"25\""),
        (r#"{"-1": "00"}"#, "\"-1\""),
        (r#"{"10": "00"}"#, "PCR 10"),
        (r#"{"16": "00"}"#, "PCR 16"),
        (r#"{"7": 5}"#, "PCR 7"),
        (r#"{"7": ["zz"]}"#, "not a hex digest"),
        (r#"{"7": "abc"}"#, "not a hex digest"),
        (r#"{"24": "00"}"#, "\"24\""),
    ] {
        let err = TpmPolicy::from_json(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn masks_must_be_hex_of_at_most_24_bits() {
    let policy = |mask: &str| TpmPolicy::from_json(&format!(r#"{{"mask": {mask}}}"#));
    for bad in [
        r#""0xZZ""#,
        r#""0x""#,
        r#""""#,
        r#""0x 400""#,
        r#""-0x1""#,
        "1024",
        "null",
    ] {
        let err = policy(bad).unwrap_err();
        assert!(matches!(err, TpmPolicyError::MaskNotHex(_)), "{bad}: {err}");
        assert!(err.to_string().contains("mask"), "{bad}: {err}");
    }
    for wide in ["0x1000000", "0xffffffff", "0x10000000000000000", "1000000"] {
        let err = policy(&format!("{wide:?}")).unwrap_err();
        assert_eq!(err, TpmPolicyError::MaskTooWide(wide.into()));
        assert!(err.to_string().contains(wide), "{err}");
    }
    // What Keylime's tenant writes (`hex(mask)`), any case, with or without `0x`, and
    // leading zeros: all select PCRs 0-23 only.
    for ok in [
        "0x0",
        "0x400",
        "0x408000",
        "0xffffff",
        "0XFFFFFF",
        "400",
        "0x000000ffffff",
    ] {
        assert!(policy(&format!("{ok:?}")).is_ok(), "{ok}");
    }
}

#[test]
fn values_must_be_digests_of_a_known_bank() {
    for len in [20, 32, 48, 64] {
        let text = format!(r#"{{"7": ["{}"]}}"#, "ab".repeat(len));
        assert!(TpmPolicy::from_json(&text).is_ok(), "{len} bytes");
    }
    for len in [1, 2, 19, 21, 31, 33, 47, 49, 63, 65, 128] {
        let text = format!(
            r#"{{"7": ["{}"], "8": "{}"}}"#,
            "00".repeat(32),
            "ab".repeat(len)
        );
        let err = TpmPolicy::from_json(&text).unwrap_err();
        assert_eq!(err, TpmPolicyError::DigestLength { pcr: 8, len }, "{len}");
        assert!(err.to_string().contains("PCR 8"), "{err}");
    }
    // Non-hex values are refused before their length is looked at.
    let err = TpmPolicy::from_json(&format!(r#"{{"9": "{}"}}"#, "zz".repeat(32))).unwrap_err();
    assert!(
        matches!(err, TpmPolicyError::BadValue { pcr: 9, .. }),
        "{err}"
    );
}

#[test]
fn values_are_checked_against_the_bank_in_use() {
    let policy = TpmPolicy::from_json(&format!(
        r#"{{"0": ["{}", "{}"], "7": "{}"}}"#,
        "11".repeat(32),
        "22".repeat(32),
        "33".repeat(20)
    ))
    .unwrap();
    assert_eq!(
        policy.check_bank(HashAlg::Sha256),
        Err(TpmPolicyError::WrongBank {
            pcr: 7,
            len: 20,
            bank: HashAlg::Sha256
        })
    );
    assert_eq!(
        policy.check_bank(HashAlg::Sha1),
        Err(TpmPolicyError::WrongBank {
            pcr: 0,
            len: 32,
            bank: HashAlg::Sha1
        })
    );
    let err = policy.check_bank(HashAlg::Sha1).unwrap_err().to_string();
    assert!(err.contains("PCR 0") && err.contains("sha1"), "{err}");
    let sha256_only = TpmPolicy::from_json(&format!(r#"{{"0": "{}"}}"#, "11".repeat(32))).unwrap();
    assert_eq!(sha256_only.check_bank(HashAlg::Sha256), Ok(()));
    assert_eq!(sha256_only.check_bank(HashAlg::Sm3_256), Ok(()));
    assert_eq!(TpmPolicy::empty().check_bank(HashAlg::Sha384), Ok(()));
}

#[test]
fn a_passing_quote_has_no_events_and_lists_what_was_checked() {
    let policy = TpmPolicy::from_json(&format!(
        r#"{{"0": ["{}", "{}"], "15": "{}"}}"#,
        "11".repeat(32),
        "a0".repeat(32),
        "00".repeat(32)
    ))
    .unwrap();
    let v = run(&policy, &quoted(), &ImaPcr::Checked(Failure::new()));
    assert!(v.failure.is_empty(), "{:?}", v.failure);
    // PCR 7 is quoted but not in the policy: skipped, not counted (as in Keylime).
    assert_eq!(v.checked, BTreeSet::from([0, 10, 15, 16]));
}

#[test]
fn each_check_fails_with_keylimes_event() {
    let policy = TpmPolicy::from_json(&format!(
        r#"{{"0": "{}", "4": "{}"}}"#,
        "11".repeat(32),
        "00".repeat(32)
    ))
    .unwrap();
    let mut pcrs = quoted();
    pcrs.insert(16, digest(0x16));
    let v = run(&policy, &pcrs, &ImaPcr::NoList);
    assert_eq!(
        ids(&v.failure),
        [
            "pcr_validation.invalid_pcr_16",
            "pcr_validation.unused_pcr_10",
            "pcr_validation.invalid_pcr_0",
            "pcr_validation.missing_pcrs",
        ]
    );
    let events = v.failure.events();
    assert_eq!(
        events[0].context["expected"],
        data_pcr_value(HashAlg::Sha256, NK).to_hex()
    );
    assert_eq!(events[2].context["got"], "a0".repeat(32));
    assert_eq!(events[2].context["expected"][0], "11".repeat(32));
    assert_eq!(events[3].context["data"], json!([4]));
    assert!(events.iter().all(|e| e.recoverable));
    // Without PCR 16 in the quote the binding is missing.
    pcrs.remove(&16);
    let v = run(&TpmPolicy::empty(), &pcrs, &ImaPcr::Checked(Failure::new()));
    assert_eq!(ids(&v.failure), ["pcr_validation.missing_pcr_16"]);
}

#[test]
fn the_ima_result_is_merged_in_place() {
    let mut ima = Failure::new();
    ima.push(Event::new(
        Component::Ima,
        &[],
        "pcr_mismatch",
        Event::message("x"),
        true,
    ));
    let mut pcrs = quoted();
    pcrs.insert(16, digest(1));
    let v = run(&TpmPolicy::empty(), &pcrs, &ImaPcr::Checked(ima));
    assert_eq!(
        ids(&v.failure),
        ["pcr_validation.invalid_pcr_16", "ima.pcr_mismatch"]
    );
    // PCR 10 not quoted: the IMA input is not used.
    pcrs.remove(&10);
    pcrs.insert(16, data_pcr_value(HashAlg::Sha256, NK));
    assert!(run(&TpmPolicy::empty(), &pcrs, &ImaPcr::NoList)
        .failure
        .is_empty());
}

#[test]
fn measured_boot_pcrs_are_compared_with_the_replayed_log() {
    let relevant = BTreeSet::from([0, 4, 7]);
    // PCR 0 matches, PCR 7 differs, PCR 4 is not quoted (skipped).
    let replayed = BTreeMap::from([(0, digest(0xa0)), (7, digest(0xee))]);
    let policy = TpmPolicy::from_json(&format!(r#"{{"7": "{}"}}"#, "bb".repeat(32))).unwrap();
    let verdict = |replayed| {
        check_pcrs(
            HashAlg::Sha256,
            &quoted(),
            &PcrCheck {
                tpm_policy: &policy,
                data: None,
                ima: &ImaPcr::Checked(Failure::new()),
                measured_boot: Some(MeasuredBootPcrs {
                    relevant: &relevant,
                    replayed,
                }),
            },
        )
    };
    let v = verdict(Some(&replayed));
    // The tpm_policy event of an MB PCR comes before the measured-boot events.
    assert_eq!(
        ids(&v.failure),
        [
            "pcr_validation.invalid_pcr_7",
            "measured_boot.invalid_pcr_7"
        ]
    );
    assert_eq!(v.failure.events()[1].context["expected"], "ee".repeat(32));
    assert_eq!(v.checked, BTreeSet::from([0, 7, 10]));
    // No event log sent: each quoted MB PCR is "unused", and the tpm_policy still
    // applies to PCR 7 among the remaining PCRs.
    let v = verdict(None);
    assert_eq!(
        ids(&v.failure),
        [
            "pcr_validation.unused_pcr_0",
            "pcr_validation.unused_pcr_7",
            "pcr_validation.invalid_pcr_7"
        ]
    );
    assert_eq!(v.checked, BTreeSet::from([7, 10]));
}

#[test]
fn data_pcr_matches_keylimes_sim_extend() {
    // sim_extend("x") = sha256(32 zero bytes || sha256("x")).
    let inner = HashAlg::Sha256.hash(b"x");
    let mut h = HashAlg::Sha256.hasher();
    h.update(&[0; 32]);
    h.update(inner.as_bytes());
    assert_eq!(data_pcr_value(HashAlg::Sha256, "x"), h.finalize());
}
