//! AK ↔ IAK binding: the registrar's check that an AK lives in the same TPM as a
//! manufacturer-certified IAK (`TPM2_Certify(object = AK, sign = IAK, qualifyingData =
//! SHA-256(agent id))`), as Keylime's registrar does when an agent registers with an
//! IAK and IDevID.

use super::attest::CertifyAttest;
use super::codec::CodecError;
use super::public::TpmPublic;
use super::quote::{AkPublicKey, SignatureMismatch};
use super::signature::TpmSignature;
use crate::hash::HashAlg;

/// Why a certification does not bind the AK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// The attestation or signature does not parse, or is not a certification.
    #[error("malformed certification: {0}")]
    Malformed(#[from] CodecError),
    /// `qualifyingData` is neither SHA-256(agent id) nor the raw agent id.
    #[error("the certification's qualifying data does not match agent {0:?}")]
    QualifyingData(String),
    /// The certified object is not this AK.
    #[error("the certification is for object {certified}, not for the AK {ak}")]
    WrongObject {
        /// Name in the attestation (hex).
        certified: String,
        /// The AK's name (hex).
        ak: String,
    },
    /// The IAK's signature is wrong.
    #[error("the IAK {0}")]
    Signature(SignatureMismatch),
}

/// Checks that `attest`/`signature` (`iak_attest`/`iak_sign`) certify `ak` for
/// `agent_id` under the IAK. RSASSA, RSA-PSS (salt as long as the digest) and ECDSA
/// signatures are accepted, as in Keylime. `qualifyingData` may be SHA-256 of the
/// agent id (API 2.6 agents) or the raw id (older agents).
pub fn verify_ak_certification(
    iak: &AkPublicKey,
    ak: &TpmPublic,
    agent_id: &str,
    attest: &[u8],
    signature: &[u8],
) -> Result<(), CertifyError> {
    let certify = CertifyAttest::parse(attest)?;
    let sig = TpmSignature::parse(signature)?;
    let extra = certify.header.extra_data;
    let hashed = HashAlg::Sha256.hash(agent_id.as_bytes());
    // Equality on public values (the agent id and its hash): no timing secret here.
    if extra != hashed.as_bytes() && extra != agent_id.as_bytes() {
        return Err(CertifyError::QualifyingData(agent_id.into()));
    }
    let ak_name = ak.name();
    if certify.name != ak_name.as_slice() {
        return Err(CertifyError::WrongObject {
            certified: hex::encode(certify.name),
            ak: hex::encode(ak_name),
        });
    }
    iak.verify(&sig, attest, true)
        .map_err(CertifyError::Signature)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::{signature::hazmat::PrehashSigner, Signature, SigningKey};

    use super::*;
    use crate::tpm::attest::{ST_ATTEST_CERTIFY, TPM_GENERATED};

    const FILES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test-data/files/"
    );

    fn tpm2b(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }

    fn certify_attest(extra: &[u8], name: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&TPM_GENERATED.to_be_bytes());
        a.extend_from_slice(&ST_ATTEST_CERTIFY.to_be_bytes());
        tpm2b(&mut a, b"\x00\x0bsigner-name-0123456789abcdef0123");
        tpm2b(&mut a, extra);
        a.extend_from_slice(&77u64.to_be_bytes()); // clock
        a.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 1]); // resets, restarts, safe
        a.extend_from_slice(&9u64.to_be_bytes()); // firmware
        tpm2b(&mut a, name);
        tpm2b(&mut a, name); // qualified name (not checked)
        a
    }

    fn sign(key: &SigningKey, attest: &[u8]) -> Vec<u8> {
        let digest = HashAlg::Sha256.hash(attest);
        let sig: Signature = key.sign_prehash(digest.as_bytes()).unwrap();
        let (r, s) = sig.split_bytes();
        let mut out = Vec::new();
        out.extend_from_slice(&0x0018u16.to_be_bytes());
        out.extend_from_slice(&0x000bu16.to_be_bytes());
        tpm2b(&mut out, &r);
        tpm2b(&mut out, &s);
        out
    }

    fn fixture() -> (SigningKey, AkPublicKey, TpmPublic) {
        let key = SigningKey::from_slice(&[7; 32]).unwrap();
        let iak = AkPublicKey::P256(*key.verifying_key());
        // Keylime's AK vector as the certified object.
        let ak = TpmPublic::parse_tpm2b(&std::fs::read(format!("{FILES}ak.pub")).unwrap()).unwrap();
        (key, iak, ak)
    }

    #[test]
    fn a_certification_of_the_ak_verifies() {
        let (key, iak, ak) = fixture();
        let id = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
        for extra in [
            HashAlg::Sha256.hash(id.as_bytes()).as_bytes(),
            id.as_bytes(),
        ] {
            let attest = certify_attest(extra, &ak.name());
            let sig = sign(&key, &attest);
            verify_ak_certification(&iak, &ak, id, &attest, &sig).unwrap();
        }
    }

    #[test]
    fn every_mismatch_is_refused_with_its_reason() {
        let (key, iak, ak) = fixture();
        let id = "agent-1";
        let good = certify_attest(HashAlg::Sha256.hash(id.as_bytes()).as_bytes(), &ak.name());
        let sig = sign(&key, &good);
        // Another agent id.
        assert!(matches!(
            verify_ak_certification(&iak, &ak, "agent-2", &good, &sig),
            Err(CertifyError::QualifyingData(_))
        ));
        // Another object.
        let other = certify_attest(HashAlg::Sha256.hash(id.as_bytes()).as_bytes(), b"\x00\x0bx");
        assert!(matches!(
            verify_ak_certification(&iak, &ak, id, &other, &sign(&key, &other)),
            Err(CertifyError::WrongObject { .. })
        ));
        // A flipped byte in the signed attestation.
        let mut tampered = good.clone();
        let at = tampered.len() - 40;
        tampered[at] ^= 1;
        assert!(verify_ak_certification(&iak, &ak, id, &tampered, &sig).is_err());
        // Another key.
        let stranger =
            AkPublicKey::P256(*SigningKey::from_slice(&[9; 32]).unwrap().verifying_key());
        assert_eq!(
            verify_ak_certification(&stranger, &ak, id, &good, &sig),
            Err(CertifyError::Signature(SignatureMismatch::Invalid))
        );
        // A quote is not a certification.
        let quote = std::fs::read(format!("{FILES}quote.out")).unwrap();
        assert!(matches!(
            verify_ak_certification(&iak, &ak, id, &quote, &sig),
            Err(CertifyError::Malformed(_))
        ));
        // Truncations never panic.
        for cut in 0..good.len() {
            assert!(verify_ak_certification(&iak, &ak, id, &good[..cut], &sig).is_err());
        }
    }
}
