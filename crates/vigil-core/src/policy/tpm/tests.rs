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
    ] {
        let err = TpmPolicy::from_json(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
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
