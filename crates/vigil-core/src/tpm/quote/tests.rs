//! Quote verification on Keylime's verified vectors (`test-data/files/quote.out`,
//! `quotesig.out`, `quotepcr.out`, `akpub.pem`, nonce `rand.out`) and mutations of them.

use super::*;

const FILES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test-data/files/"
);

fn file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FILES}{name}")).unwrap()
}

fn vector() -> (KeylimeQuote, Vec<u8>, QuoteVerifier) {
    let quote = KeylimeQuote {
        attest: file("quote.out"),
        signature: file("quotesig.out"),
        pcr_blob: file("quotepcr.out"),
    };
    let ak = AkPublicKey::from_spki(&file("akpub.pem")).unwrap();
    (quote, file("rand.out"), QuoteVerifier::new(ak))
}

fn event_id(f: &Failure) -> &str {
    &f.events()[0].event_id
}

#[test]
fn keylime_vector_verifies() {
    let (quote, nonce, v) = vector();
    let ok = v.verify(&quote, &nonce, HashAlg::Sha256).unwrap();
    assert_eq!(ok.pcrs.keys().copied().collect::<Vec<_>>(), [15, 16, 22]);
    assert!(ok.pcrs[&15].is_all_zero());
    assert_eq!(
        ok.pcrs[&16].to_hex(),
        "9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0"
    );
    assert_eq!(ok.pcrs[&22], HashAlg::Sha256.ones());
    assert_eq!(ok.clock_info.clock, 5994);
    assert!(ok.clock_info.safe);
    // The string form round-trips, and so does the push-mode split form.
    let text = quote.to_keylime_string();
    assert_eq!(KeylimeQuote::parse(&text).unwrap(), quote);
    let [m, s, p] = quote.to_push_parts();
    assert_eq!(text, format!("r{m}:{s}:{p}"));
    assert_eq!(KeylimeQuote::from_push_parts(&m, &s, &p).unwrap(), quote);
    assert!(KeylimeQuote::from_push_parts(&m, "!", &p).is_err());
}

#[test]
fn every_tampering_is_quote_validation() {
    let (quote, nonce, v) = vector();
    // Wrong nonce, wrong bank.
    let f = v
        .verify(&quote, b"another nonce", HashAlg::Sha256)
        .unwrap_err();
    assert_eq!(event_id(&f), "qoute_validation.quote_validation");
    assert!(f.is_irrecoverable());
    assert!(v.verify(&quote, &nonce, HashAlg::Sha1).is_err());
    // A flipped byte anywhere in the attestation or signature, or in a PCR value.
    for part in 0..3 {
        let len = [
            quote.attest.len(),
            quote.signature.len(),
            quote.pcr_blob.len(),
        ][part];
        for i in (0..len).step_by(5) {
            let mut q = quote.clone();
            let bytes = match part {
                0 => &mut q.attest,
                1 => &mut q.signature,
                _ => &mut q.pcr_blob,
            };
            bytes[i] ^= 0x01;
            // Unused padding bytes of the blob may change without consequence; nothing
            // else may.
            if let Ok(ok) = v.verify(&q, &nonce, HashAlg::Sha256) {
                assert_eq!(part, 2, "attest/signature byte {i} flipped yet verified");
                assert_eq!(ok, v.verify(&quote, &nonce, HashAlg::Sha256).unwrap());
            }
        }
    }
    // Truncations never panic.
    for cut in 0..quote.pcr_blob.len() {
        let mut q = quote.clone();
        q.pcr_blob.truncate(cut);
        assert!(v.verify(&q, &nonce, HashAlg::Sha256).is_err());
    }
}

#[test]
fn malformed_parts_are_told_from_failed_checks() {
    let (quote, nonce, v) = vector();
    let parts = quote.parse_parts().unwrap();
    assert_eq!(parts.pcrs.values.len(), 3);
    // Each part cut short, emptied or replaced by garbage is named as malformed, and
    // verify() still reports it as Keylime's quote_validation with the same reason.
    for part in [QuotePart::Attest, QuotePart::Signature, QuotePart::Pcrs] {
        for bad in [Vec::new(), vec![0xa5; 7], {
            let mut q = quote.clone();
            let field = part_bytes(&mut q, part);
            field.pop();
            field.clone()
        }] {
            let mut q = quote.clone();
            *part_bytes(&mut q, part) = bad.clone();
            let err = q.parse_parts().unwrap_err();
            assert_eq!(err.part, part, "{bad:02x?}");
            assert!(err.to_string().contains("malformed"), "{err}");
            let f = v.verify(&q, &nonce, HashAlg::Sha256).unwrap_err();
            assert_eq!(
                f.events()[0].context["error"],
                err.source.to_string(),
                "{part}"
            );
        }
    }
    // A well-formed quote that fails a check is not malformed.
    let mut flipped = quote.clone();
    let last = flipped.signature.len() - 1;
    flipped.signature[last] ^= 1;
    assert!(flipped.parse_parts().is_ok());
    assert!(v.verify(&flipped, &nonce, HashAlg::Sha256).is_err());
}

fn part_bytes(q: &mut KeylimeQuote, part: QuotePart) -> &mut Vec<u8> {
    match part {
        QuotePart::Attest => &mut q.attest,
        QuotePart::Signature => &mut q.signature,
        QuotePart::Pcrs => &mut q.pcr_blob,
    }
}

#[test]
fn unsigned_pcr_values_are_rejected() {
    let (quote, nonce, v) = vector();
    // Claim PCR 0 in the blob's selection (bit 0 of the first select byte): the TPM did
    // not sign it, so the quote must be refused even if the digest were consistent.
    let mut q = quote.clone();
    q.pcr_blob[7] |= 0x01;
    let f = v.verify(&q, &nonce, HashAlg::Sha256).unwrap_err();
    assert!(f.events()[0].context["error"]
        .as_str()
        .unwrap()
        .contains("signed PCR selection"));
}

#[test]
fn quote_strings_are_checked() {
    assert!(KeylimeQuote::parse("xAAAA:AAAA:AAAA").is_err());
    assert!(KeylimeQuote::parse("rAAAA:AAAA").is_err());
    assert!(KeylimeQuote::parse("r!!!:AAAA:AAAA").is_err());
    assert!(KeylimeQuote::parse("rAAAA:AAAA:AAAA:AAAA").is_err());
    // rust-keylime's test quote parses (SHA-1 bank, PCR 16, nonce "TEST").
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/rust-keylime/keylime/test-data/test-quote.txt"
    ))
    .unwrap();
    let q = KeylimeQuote::parse(&text).unwrap();
    let attest = QuoteAttest::parse(&q.attest).unwrap();
    assert_eq!(attest.header.extra_data, b"TEST");
    assert_eq!(attest.selection(HashAlg::Sha1).unwrap().pcrs, [16]);
    assert_eq!(
        TpmSignature::parse(&q.signature).unwrap().hash(),
        HashAlg::Sha1
    );
    let blob = PcrBlob::parse(&q.pcr_blob).unwrap();
    assert_eq!(blob.values.len(), 1);
}

fn clock(clock: u64, reset_count: u32, restart_count: u32, safe: bool) -> ClockInfo {
    ClockInfo {
        clock,
        reset_count,
        restart_count,
        safe,
    }
}

#[test]
fn clock_rules_are_keylimes() {
    let prev = clock(1000, 2, 3, true);
    // Normal progress is stored.
    let now = clock(2000, 2, 3, true);
    assert_eq!(now.check_after(&prev), Ok(()));
    // A restart alone still needs the clock to advance (Keylime checks the clock
    // unless *both* counters increased).
    assert!(clock(500, 2, 4, true).check_after(&prev).is_err());
    assert!(clock(1500, 2, 4, true).check_after(&prev).is_ok());
    // Both counters increased: a new epoch, the clock may start over.
    assert!(clock(10, 3, 4, true).check_after(&prev).is_ok());
    // Decreasing counters, an unsafe clock, a stalled clock.
    for (bad, why) in [
        (clock(2000, 1, 3, true), "resetCount"),
        (clock(2000, 2, 2, true), "restartCount"),
        (clock(2000, 2, 3, false), "safe"),
        (clock(1000, 2, 3, true), "did not increase"),
    ] {
        assert!(bad.check_after(&prev).unwrap_err().contains(why), "{why}");
    }
    // Before the first quote the previous clock is all zero.
    assert!(now.check_after(&ClockInfo::default()).is_ok());
}

#[test]
fn verify_with_clock_reports_keylimes_event() {
    let (quote, nonce, v) = vector();
    // Keylime's vector has clock 5994 and safe = 1.
    let ok = v
        .verify_with_clock(&quote, &nonce, HashAlg::Sha256, &ClockInfo::default())
        .unwrap();
    // The same quote again (a replay) is refused: the clock did not advance.
    let f = v
        .verify_with_clock(&quote, &nonce, HashAlg::Sha256, &ok.clock_info)
        .unwrap_err();
    assert_eq!(event_id(&f), "qoute_validation.quote_validation");
    assert!(f.is_irrecoverable());
    assert!(f.events()[0].context["data"]
        .as_str()
        .unwrap()
        .contains("did not increase"));
}

#[test]
fn plain_rsa_signature_becomes_the_tpmt_signature() {
    let tpmt = file("quotesig.out");
    // TPMT_SIGNATURE: sigAlg, hash, size, then the bare signature tpm2-tools' `plain` has.
    let plain = &tpmt[6..];
    let ak = AkPublicKey::from_spki(&file("akpub.pem")).unwrap();
    assert_eq!(
        ak.signature_from_plain(plain, HashAlg::Sha256).unwrap(),
        tpmt
    );
    use rsa::pkcs8::EncodePublicKey;
    let key = p256::SecretKey::from_slice(&[7; 32]).unwrap().public_key();
    let p256 = AkPublicKey::from_spki(key.to_public_key_der().unwrap().as_bytes()).unwrap();
    assert!(p256.signature_from_plain(plain, HashAlg::Sha256).is_err());
}

#[test]
fn attestations_and_signatures_marshal_back_to_the_tpms_bytes() {
    let (quote, ..) = vector();
    let attest = QuoteAttest::parse(&quote.attest).unwrap();
    assert_eq!(attest.to_bytes().unwrap(), quote.attest);
    let sig = TpmSignature::parse(&quote.signature).unwrap();
    assert_eq!(sig.to_bytes().unwrap(), quote.signature);
    // rust-keylime's SHA-1 quote too.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/rust-keylime/keylime/test-data/test-quote.txt"
    ))
    .unwrap();
    let q = KeylimeQuote::parse(&text).unwrap();
    assert_eq!(
        QuoteAttest::parse(&q.attest).unwrap().to_bytes().unwrap(),
        q.attest
    );
    assert_eq!(
        TpmSignature::parse(&q.signature)
            .unwrap()
            .to_bytes()
            .unwrap(),
        q.signature
    );
    // A certification round-trips as well.
    let mut cert = attest.header.clone();
    cert.extra_data = b"nonce";
    let c = crate::tpm::attest::CertifyAttest {
        header: cert,
        name: b"\x00\x0bname",
        qualified_name: b"\x00\x0bqname",
    };
    let bytes = c.to_bytes().unwrap();
    assert_eq!(crate::tpm::attest::CertifyAttest::parse(&bytes).unwrap(), c);
}
