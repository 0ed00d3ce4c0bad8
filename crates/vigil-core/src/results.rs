//! Attestation results for the provisioning trust gate: the gate's verdict on a node as
//! an EAR (IETF RATS "EAT Attestation Results", draft-ietf-rats-ear-04 JSON
//! serialisation) token, a JWT signed with the verifier's attestation-results key
//! (ES256, P-256), checked offline by anyone holding the public key with any JWT
//! library.
//!
//! The token carries `ear_status` (affirming, warning or contraindicated), one
//! appraisal in `submods` named after the node with its AR4SI trustworthiness vector
//! (`hardware`, `executables`, `configuration`, `instance-identity`), the caller's
//! nonce (`eat_nonce`), issue and expiry times, and the verifier's claims: node id,
//! class, reasons and the time of the evidence.
//!
//! The claims are written here, after the draft, and the JWS is jsonwebtoken's on
//! aws-lc-rs: Veraison's `ear` crate links OpenSSL in every release (0.6 through its
//! `cmw` dependency's build-time HTTP client), which Vigil's one-crypto-stack rule
//! refuses. Times come in as arguments (epoch seconds) and keys from the caller's
//! random source: nothing here reads a clock or a file.

use std::collections::BTreeMap;

use base64::Engine as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The EAT profile of the tokens (draft-ietf-rats-ear-04).
pub const EAR_PROFILE: &str = "tag:ietf.org,2026:rats/ear#04";

/// AR4SI trustworthiness claim values used by the gate.
pub mod claim {
    /// Genuine hardware and firmware (affirming).
    pub const GENUINE_HARDWARE: i8 = 2;
    /// Hardware or firmware outside what is expected (contraindicated).
    pub const CONTRAINDICATED_HARDWARE: i8 = 96;
    /// Approved executables (affirming).
    pub const APPROVED_RUNTIME: i8 = 2;
    /// Executables outside what is approved (contraindicated).
    pub const CONTRAINDICATED_RUNTIME: i8 = 96;
    /// Approved configuration (affirming).
    pub const APPROVED_CONFIG: i8 = 2;
    /// Configuration that cannot be supported (contraindicated).
    pub const UNSUPPORTABLE_CONFIG: i8 = 96;
    /// The attesting instance is the one expected (affirming).
    pub const TRUSTWORTHY_INSTANCE: i8 = 2;
    /// The evidence does not come from the expected instance (contraindicated).
    pub const UNTRUSTWORTHY_INSTANCE: i8 = 96;
}

/// An AR4SI tier, as `ear_status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustTier {
    /// No claim made.
    None,
    /// Claims 2–31.
    Affirming,
    /// Claims 32–95.
    Warning,
    /// Claims 96–127.
    Contraindicated,
}

impl TrustTier {
    /// The tier of a claim value.
    fn of(v: i8) -> Self {
        match v {
            2..=31 => Self::Affirming,
            32..=95 => Self::Warning,
            96..=127 => Self::Contraindicated,
            _ => Self::None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Affirming => "affirming",
            Self::Warning => "warning",
            Self::Contraindicated => "contraindicated",
        }
    }
}

/// The verifier's identity (`ear_verifier_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierId {
    /// Its build.
    pub build: String,
    /// Who made it.
    pub developer: String,
}

/// One appraisal (a `submods` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appraisal {
    /// Its tier.
    pub ear_status: TrustTier,
    /// AR4SI claims by name (`hardware`, `executables`, …), only those set.
    #[serde(default)]
    pub ear_trustworthiness_vector: BTreeMap<String, i8>,
    /// What the verifier adds: `node-id`, `class`, `reasons`, `evidence-time`.
    #[serde(default)]
    pub ear_verifier_claims: BTreeMap<String, Value>,
}

/// The claims of an EAR token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ear {
    /// [`EAR_PROFILE`].
    pub eat_profile: String,
    /// Issued at (epoch seconds).
    pub iat: i64,
    /// Not valid from then on (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// The verifier.
    pub ear_verifier_id: VerifierId,
    /// The overall tier: the least trustworthy appraisal's.
    pub ear_status: TrustTier,
    /// The caller's nonce, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eat_nonce: Option<String>,
    /// One appraisal per attested environment: here, the node.
    pub submods: BTreeMap<String, Appraisal>,
}

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
    let firmware = event_id
        .strip_prefix("pcr_validation.invalid_pcr_")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n <= 3);
    if firmware {
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

fn appraisal(r: &GateResult<'_>) -> Appraisal {
    let mut vector = BTreeMap::new();
    let status = match r.judgement {
        Judgement::Trusted => {
            vector.insert("hardware".to_owned(), claim::GENUINE_HARDWARE);
            vector.insert("executables".to_owned(), claim::APPROVED_RUNTIME);
            vector.insert("configuration".to_owned(), claim::APPROVED_CONFIG);
            vector.insert("instance-identity".to_owned(), claim::TRUSTWORTHY_INSTANCE);
            TrustTier::Affirming
        }
        Judgement::Failed(ids) => {
            for id in ids {
                let (name, value) = implicated(id);
                vector.insert(name.to_owned(), value);
            }
            // Judged evidence came in a quote the node's AK signed, unless that failed.
            vector
                .entry("instance-identity".to_owned())
                .or_insert(claim::TRUSTWORTHY_INSTANCE);
            // A failure still contraindicates the node whatever claims it touched.
            vector
                .values()
                .map(|&v| TrustTier::of(v))
                .max()
                .unwrap_or(TrustTier::None)
                .max(TrustTier::Contraindicated)
        }
        Judgement::NoEvidence(_) => TrustTier::Warning,
    };
    let mut claims = BTreeMap::new();
    claims.insert("node-id".to_owned(), Value::from(r.node_id));
    if let Some(class) = r.class {
        claims.insert("class".to_owned(), Value::from(class));
    }
    let reasons: Vec<String> = match r.judgement {
        Judgement::Trusted => Vec::new(),
        Judgement::Failed(ids) => ids.clone(),
        Judgement::NoEvidence(why) => vec![why.clone()],
    };
    claims.insert("reasons".to_owned(), Value::from(reasons));
    if let Some(t) = r.evidence_time {
        claims.insert("evidence-time".to_owned(), Value::from(t));
    }
    Appraisal {
        ear_status: status,
        ear_trustworthiness_vector: vector,
        ear_verifier_claims: claims,
    }
}

/// `eat_nonce` for a caller's nonce: its bytes, base64url without padding.
fn ear_nonce(nonce: &str) -> Result<String, ResultsError> {
    if !NONCE_LEN.contains(&nonce.len()) {
        return Err(ResultsError::NonceLength(nonce.len()));
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce))
}

fn epoch(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The EAR of `result`, signed with `key` (ES256): a compact JWT.
pub fn sign(key: &ResultsKey, result: &GateResult<'_>) -> Result<String, ResultsError> {
    let submod = appraisal(result);
    let claims = Ear {
        eat_profile: EAR_PROFILE.to_owned(),
        iat: epoch(result.issued_at),
        exp: Some(epoch(result.expires_at)),
        ear_verifier_id: VerifierId {
            build: concat!("vigil-verifier ", env!("CARGO_PKG_VERSION")).to_owned(),
            developer: "Vigil".to_owned(),
        },
        ear_status: submod.ear_status,
        eat_nonce: result.nonce.map(ear_nonce).transpose()?,
        submods: BTreeMap::from([(result.node_id.to_owned(), submod)]),
    };
    let pem = key.to_pem()?;
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
        .map_err(|e| ResultsError::Key(e.to_string()))?;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    jsonwebtoken::encode(&header, &claims, &encoding).map_err(|e| ResultsError::Sign(e.to_string()))
}

/// Checks a token offline: its ES256 signature with `public_pem` (SubjectPublicKeyInfo
/// PEM), its profile, its expiry against `now` (a token without `exp` is refused),
/// and, when `nonce` is given, that it carries that nonce. Returns the claims.
pub fn verify(
    token: &str,
    public_pem: &str,
    nonce: Option<&str>,
    now: u64,
) -> Result<Ear, ResultsError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let token = token.trim();
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
    let ear = jsonwebtoken::decode::<Ear>(token, &key, &validation)
        .map_err(|e| ResultsError::Signature(e.to_string()))?
        .claims;
    if ear.eat_profile != EAR_PROFILE {
        return Err(ResultsError::Signature(format!(
            "unknown eat_profile {:?}",
            ear.eat_profile
        )));
    }
    if ear.exp.is_none_or(|exp| exp <= epoch(now)) {
        return Err(ResultsError::Expired { exp: ear.exp, now });
    }
    if let Some(expected) = nonce {
        let expected = ear_nonce(expected).map_err(|_| ResultsError::Nonce)?;
        if ear.eat_nonce.as_deref() != Some(expected.as_str()) {
            return Err(ResultsError::Nonce);
        }
    }
    Ok(ear)
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    const T: u64 = 1_700_000_000;

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
        assert_eq!(ear.ear_status, TrustTier::Affirming);
        let a = &ear.submods["node-1"];
        assert_eq!(a.ear_trustworthiness_vector["hardware"], 2);
        assert_eq!(a.ear_verifier_claims["class"], "r650");
        assert_eq!(a.ear_verifier_claims["evidence-time"], T - 10);
        assert_eq!(ear.iat, T as i64);
        // The key round-trips through its PEM form.
        let again = ResultsKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert_eq!(again.public_pem().unwrap(), public);
    }

    /// A plain JWS: any ES256 implementation (here p256's, not the one that signed)
    /// checks the signature over `header.payload`, and the claims use the draft's names.
    #[test]
    fn tokens_are_standard_es256_jwts() {
        use p256::ecdsa::signature::Verifier;
        use p256::pkcs8::DecodePublicKey;
        let k = key(5);
        let token = sign(&k, &result(&Judgement::Trusted, None)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["eat_profile"], EAR_PROFILE);
        assert_eq!(claims["ear_status"], "affirming");
        assert_eq!(
            claims["submods"]["node-1"]["ear_trustworthiness_vector"]["instance-identity"],
            2
        );
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&k.public_pem().unwrap()).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&b64.decode(parts[2]).unwrap()).unwrap();
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
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
        assert_eq!(ear.ear_status, TrustTier::Contraindicated);
        let v = &ear.submods["node-1"].ear_trustworthiness_vector;
        assert_eq!((v["executables"], v["instance-identity"]), (96, 2));
        let reasons = &ear.submods["node-1"].ear_verifier_claims["reasons"];
        assert_eq!(reasons[0], "pcr_validation.invalid_pcr_4");
        let firmware = Judgement::Failed(vec!["pcr_validation.invalid_pcr_0".to_owned()]);
        let ear = verify(
            &sign(&k, &result(&firmware, None)).unwrap(),
            &public,
            None,
            T + 100,
        )
        .unwrap();
        assert_eq!(
            ear.submods["node-1"].ear_trustworthiness_vector["hardware"],
            96
        );
        let none = Judgement::NoEvidence("unreachable".to_owned());
        let ear = verify(
            &sign(&k, &result(&none, None)).unwrap(),
            &public,
            None,
            T + 100,
        )
        .unwrap();
        assert_eq!(ear.ear_status, TrustTier::Warning);
        assert!(ear.submods["node-1"].ear_trustworthiness_vector.is_empty());
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
