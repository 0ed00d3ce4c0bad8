//! Attestation results for the provisioning trust gate: the gate's verdict on a node as
//! an EAR (IETF RATS "EAT Attestation Results") token, a JWT signed with the
//! verifier's attestation-results key (ES256, P-256), built with Veraison's `ear`
//! crate, and checked offline by anyone holding the public key.
//!
//! The token carries `ear.status` (affirming, warning or contraindicated), one
//! appraisal named after the node with its AR4SI trustworthiness vector (`hardware`,
//! `executables`, `configuration`, `instance-identity`), the caller's nonce, the
//! issue and expiry times, and the verifier's claims: node id, class, reasons and the
//! time of the evidence.
//!
//! Times come in as arguments (epoch seconds) and keys from the caller's random
//! source; the one clock read is the `ear` crate's own, which refuses to serialise a
//! token whose `exp` has already passed.

use std::collections::BTreeMap;

use ear::{claim, Appraisal, Ear, RawValue, TrustTier, VerifierID, EAR_PROFILE};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRngCore;

/// The largest token [`verify`] reads.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Nonce lengths an EAR carries (bytes).
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// What went wrong signing or checking a token.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The attestation-results key cannot be read.
    #[error("attestation-results key: {0}")]
    Key(String),
    /// A nonce outside [`NONCE_LEN`].
    #[error("nonce must be 8–64 bytes (NONCE_LEN), got {0}")]
    NonceLength(usize),
    /// The token could not be built or signed.
    #[error("signing the attestation result: {0}")]
    Sign(String),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token of {0} bytes is longer than {MAX_TOKEN_LEN}")]
    TooLong(usize),
    /// Not a well-formed EAR JWT, or its signature does not verify with the key.
    #[error("token does not verify: {0}")]
    Signature(String),
    /// Past its expiry (or without one).
    #[error("token expired at {exp:?} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: Option<i64>,
        /// The time it was checked at.
        now: u64,
    },
    /// The nonce is not the one expected.
    #[error("token nonce does not match the expected one")]
    Nonce,
}

/// The verifier's attestation-results signing key (ECDSA P-256).
#[derive(Clone)]
pub struct ResultsKey {
    secret: p256::SecretKey,
}

impl std::fmt::Debug for ResultsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResultsKey(..)")
    }
}

impl ResultsKey {
    /// A new key from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            secret: p256::SecretKey::random(rng),
        }
    }

    /// Reads a PKCS#8 PEM private key, as [`Self::to_pem`] writes it.
    pub fn from_pem(pem: &str) -> Result<Self, ResultsError> {
        p256::SecretKey::from_pkcs8_pem(pem)
            .map(|secret| Self { secret })
            .map_err(|e| ResultsError::Key(format!("not a PKCS#8 P-256 private key: {e}")))
    }

    /// The private key, PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, ResultsError> {
        self.secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .map_err(|e| ResultsError::Key(e.to_string()))
    }

    /// The public key, SubjectPublicKeyInfo PEM: what [`verify`] checks tokens with.
    pub fn public_pem(&self) -> Result<String, ResultsError> {
        self.secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| ResultsError::Key(e.to_string()))
    }
}

/// How the gate judged a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Fresh evidence verified: `affirming`.
    Trusted,
    /// Evidence was judged and failed with these event ids: `contraindicated`.
    Failed(Vec<String>),
    /// No fresh evidence (unreachable, polling stopped for a reason other than a
    /// failed round, not attested here): `warning`, no claim made.
    NoEvidence(String),
}

/// The gate's answer on one node, as the token states it.
#[derive(Debug, Clone)]
pub struct GateResult<'a> {
    /// The node.
    pub node_id: &'a str,
    /// Its hardware class, if any.
    pub class: Option<&'a str>,
    /// The judgement.
    pub judgement: &'a Judgement,
    /// When the evidence was taken (epoch seconds), if there is any.
    pub evidence_time: Option<u64>,
    /// The caller's nonce, echoed.
    pub nonce: Option<&'a str>,
    /// Issued at (epoch seconds).
    pub issued_at: u64,
    /// Valid until (epoch seconds).
    pub expires_at: u64,
}

/// The AR4SI claim a failure event speaks against, with its contraindicated value: a
/// firmware PCR (0–3) outside the class is the hardware's; other PCRs, IMA and
/// measured boot are what ran; a quote that does not verify is the instance's identity.
fn implicated(event_id: &str) -> (&'static str, i8) {
    let golden_firmware = event_id
        .strip_prefix("pcr_validation.invalid_pcr_")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n <= 3);
    if golden_firmware {
        ("hardware", claim::CONTRAINDICATED_HARDWARE)
    } else if event_id.starts_with("pcr_validation.")
        || event_id.starts_with("ima.")
        || event_id.starts_with("measured_boot.")
    {
        ("executables", claim::CONTRAINDICATED_RUNTIME)
    } else if event_id.starts_with("qoute_validation.") || event_id.starts_with("quote_validation.")
    {
        ("instance-identity", claim::UNTRUSTWORTHY_INSTANCE)
    } else {
        ("configuration", claim::UNSUPPORTABLE_CONFIG)
    }
}

fn appraisal(r: &GateResult<'_>) -> Result<Appraisal, ResultsError> {
    let mut a = Appraisal::new();
    let set = |a: &mut Appraisal, name: &str, v: i8| -> Result<(), ResultsError> {
        a.trust_vector
            .mut_by_name(name)
            .map(|c| c.set(v))
            .map_err(|e| ResultsError::Sign(e.to_string()))
    };
    match r.judgement {
        Judgement::Trusted => {
            set(&mut a, "hardware", claim::GENUINE_HARDWARE)?;
            set(&mut a, "executables", claim::APPROVED_RUNTIME)?;
            set(&mut a, "configuration", claim::APPROVED_CONFIG)?;
            set(&mut a, "instance-identity", claim::TRUSTWORTHY_INSTANCE)?;
            a.update_status_from_trust_vector();
        }
        Judgement::Failed(ids) => {
            let mut identity_failed = false;
            for id in ids {
                let (name, value) = implicated(id);
                identity_failed |= name == "instance-identity";
                set(&mut a, name, value)?;
            }
            // Judged evidence came in a quote the node's AK signed, unless that failed.
            if !identity_failed {
                set(&mut a, "instance-identity", claim::TRUSTWORTHY_INSTANCE)?;
            }
            a.update_status_from_trust_vector();
            // A failure of a kind no claim covers still contraindicates the node.
            a.status = a.status.max(TrustTier::Contraindicated);
        }
        Judgement::NoEvidence(_) => a.status = TrustTier::Warning,
    }
    let mut claims = BTreeMap::new();
    claims.insert("node-id".to_owned(), RawValue::String(r.node_id.to_owned()));
    if let Some(class) = r.class {
        claims.insert("class".to_owned(), RawValue::String(class.to_owned()));
    }
    let reasons = match r.judgement {
        Judgement::Trusted => Vec::new(),
        Judgement::Failed(ids) => ids.clone(),
        Judgement::NoEvidence(why) => vec![why.clone()],
    };
    claims.insert(
        "reasons".to_owned(),
        RawValue::Array(reasons.into_iter().map(RawValue::String).collect()),
    );
    if let Some(t) = r.evidence_time {
        claims.insert(
            "evidence-time".to_owned(),
            RawValue::Integer(i64::try_from(t).unwrap_or(i64::MAX)),
        );
    }
    a.verifier_claims = claims;
    Ok(a)
}

fn ear_nonce(nonce: &str) -> Result<ear::Nonce, ResultsError> {
    if !NONCE_LEN.contains(&nonce.len()) {
        return Err(ResultsError::NonceLength(nonce.len()));
    }
    ear::Nonce::try_from(nonce.as_bytes()).map_err(|e| ResultsError::Sign(e.to_string()))
}

fn epoch(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The EAR of `result`, signed with `key` (ES256): a compact JWT.
pub fn sign(key: &ResultsKey, result: &GateResult<'_>) -> Result<String, ResultsError> {
    let submod = appraisal(result)?;
    let status = submod.status;
    let token = Ear {
        profile: EAR_PROFILE.to_owned(),
        iat: epoch(result.issued_at),
        exp: Some(epoch(result.expires_at)),
        vid: VerifierID {
            build: concat!("vigil-verifier ", env!("CARGO_PKG_VERSION")).to_owned(),
            developer: "Vigil".to_owned(),
        },
        raw_evidence: None,
        nonce: result.nonce.map(ear_nonce).transpose()?,
        status: Some(status),
        topology: None,
        submods: BTreeMap::from([(result.node_id.to_owned(), submod)]),
        extensions: ear::Extensions::new(),
    };
    token
        .sign_jwt_pem(ear::Algorithm::ES256, key.to_pem()?.as_bytes())
        .map_err(|e| ResultsError::Sign(e.to_string()))
}

/// Checks a token offline: its ES256 signature with `public_pem` (SubjectPublicKeyInfo
/// PEM), its expiry against `now` (a token without `exp` is refused), and, when
/// `nonce` is given, that it carries that nonce. Returns the EAR.
pub fn verify(
    token: &str,
    public_pem: &str,
    nonce: Option<&str>,
    now: u64,
) -> Result<Ear, ResultsError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    if token.len() > MAX_TOKEN_LEN {
        return Err(ResultsError::TooLong(token.len()));
    }
    let key = DecodingKey::from_ec_pem(public_pem.as_bytes())
        .map_err(|e| ResultsError::Key(format!("not an EC public key (PEM): {e}")))?;
    // Expiry is checked below against the caller's time, with no leeway.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_required_spec_claims::<&str>(&[]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let ear = jsonwebtoken::decode::<Ear>(token.trim(), &key, &validation)
        .map_err(|e| ResultsError::Signature(e.to_string()))?
        .claims;
    if ear.exp.is_none_or(|exp| exp <= epoch(now)) {
        return Err(ResultsError::Expired { exp: ear.exp, now });
    }
    if let Some(expected) = nonce {
        let expected = ear_nonce(expected).map_err(|_| ResultsError::Nonce)?;
        if ear.nonce.as_ref() != Some(&expected) {
            return Err(ResultsError::Nonce);
        }
    }
    Ok(ear)
}

/// The overall status of a verified token: `affirming`, `warning`,
/// `contraindicated` or `none`.
pub fn status(ear: &Ear) -> &'static str {
    match ear.status.unwrap_or(TrustTier::None) {
        TrustTier::None => "none",
        TrustTier::Affirming => "affirming",
        TrustTier::Warning => "warning",
        TrustTier::Contraindicated => "contraindicated",
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    /// Far ahead: the `ear` crate refuses to serialise a token already expired by the
    /// system clock.
    const T: u64 = 4_000_000_000;

    fn key(seed: u64) -> ResultsKey {
        ResultsKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    fn result<'a>(j: &'a Judgement, nonce: Option<&'a str>) -> GateResult<'a> {
        GateResult {
            node_id: "node-1",
            class: Some("r650"),
            judgement: j,
            evidence_time: Some(T - 10),
            nonce,
            issued_at: T,
            expires_at: T + 300,
        }
    }

    #[test]
    fn a_trusted_node_verifies_affirming_with_its_nonce() {
        let k = key(1);
        let public = k.public_pem().unwrap();
        let token = sign(&k, &result(&Judgement::Trusted, Some("nonce-1234"))).unwrap();
        let ear = verify(&token, &public, Some("nonce-1234"), T + 100).unwrap();
        assert_eq!(status(&ear), "affirming");
        let a = &ear.submods["node-1"];
        assert_eq!(a.trust_vector.by_name("hardware").unwrap().get(), 2);
        assert_eq!(
            a.verifier_claims["class"],
            RawValue::String("r650".to_owned())
        );
        assert_eq!(ear.iat, T as i64);
        // The key round-trips through its PEM form.
        let again = ResultsKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert_eq!(again.public_pem().unwrap(), public);
    }

    #[test]
    fn failures_contraindicate_and_missing_evidence_warns() {
        let k = key(2);
        let public = k.public_pem().unwrap();
        let failed = Judgement::Failed(vec!["pcr_validation.invalid_pcr_4".to_owned()]);
        let ear = verify(
            &sign(&k, &result(&failed, None)).unwrap(),
            &public,
            None,
            T + 100,
        )
        .unwrap();
        assert_eq!(status(&ear), "contraindicated");
        let v = &ear.submods["node-1"].trust_vector;
        assert_eq!(v.by_name("executables").unwrap().get(), 96);
        assert_eq!(v.by_name("instance-identity").unwrap().get(), 2);
        let firmware = Judgement::Failed(vec!["pcr_validation.invalid_pcr_0".to_owned()]);
        let ear = verify(
            &sign(&k, &result(&firmware, None)).unwrap(),
            &public,
            None,
            T + 100,
        )
        .unwrap();
        let v = &ear.submods["node-1"].trust_vector;
        assert_eq!(v.by_name("hardware").unwrap().get(), 96);
        let none = Judgement::NoEvidence("unreachable".to_owned());
        let ear = verify(
            &sign(&k, &result(&none, None)).unwrap(),
            &public,
            None,
            T + 100,
        )
        .unwrap();
        assert_eq!(status(&ear), "warning");
    }

    #[test]
    fn altered_expired_other_key_or_nonce_fail() {
        let k = key(3);
        let public = k.public_pem().unwrap();
        let token = sign(&k, &result(&Judgement::Trusted, Some("nonce-1234"))).unwrap();
        // A flipped character in the payload.
        let mut altered = token.clone().into_bytes();
        let mid = token.find('.').unwrap() + 5;
        altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(matches!(
            verify(&altered, &public, None, T + 100),
            Err(ResultsError::Signature(_))
        ));
        assert!(matches!(
            verify(&token, &public, None, T + 300),
            Err(ResultsError::Expired { .. })
        ));
        let other = key(4).public_pem().unwrap();
        assert!(matches!(
            verify(&token, &other, None, T + 100),
            Err(ResultsError::Signature(_))
        ));
        assert!(matches!(
            verify(&token, &public, Some("nonce-9999"), T + 100),
            Err(ResultsError::Nonce)
        ));
        assert!(matches!(
            sign(&k, &result(&Judgement::Trusted, Some("short"))),
            Err(ResultsError::NonceLength(5))
        ));
    }
}
