//! Is the node at that address the TPM the registrar knows? Keylime's tenant checks
//! (`validate_tpm_quote`, `check_ek`): the identity quote is signed by the registrar's
//! AK over our nonce, PCR 16 binds the node key it sent, the algorithms are accepted,
//! the TPM clock is sane, and the EK certificate comes from a trusted TPM vendor.

use base64::Engine;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use serde_json::Value;
use vigil_core::policy::tpm::{data_pcr_value, DATA_PCR};
use vigil_core::tpm::attest::ClockInfo;
use vigil_core::tpm::ek_cert::{self, EkCert, EkCertStore};
use vigil_core::tpm::quote::{AkPublicKey, KeylimeQuote, QuoteVerifier};
use vigil_core::HashAlg;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Why the node's identity is refused. Every variant says what to check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    /// A field of the registrar's or the node's answer is missing or malformed.
    #[error("{source_name} answer: {field} {problem}")]
    Field {
        /// "registrar" or "node".
        source_name: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// An algorithm outside the accept lists.
    #[error(
        "the identity quote uses {kind} algorithm '{alg}', which is not accepted ({accepted}); \
             change --accept-{kind}-algs if this is intended"
    )]
    Algorithm {
        /// "hash", "encryption" or "signing".
        kind: &'static str,
        /// The algorithm the node uses.
        alg: String,
        /// The accepted ones.
        accepted: String,
    },
    /// The quote does not verify with the registrar's AK and our nonce.
    #[error("the identity quote is invalid for nonce {nonce}: {reason}{hint}")]
    Quote {
        /// The nonce sent.
        nonce: String,
        /// Why.
        reason: String,
        /// A hint when the node registered more than once.
        hint: &'static str,
    },
    /// PCR 16 does not hold the node key the node sent.
    #[error(
        "the identity quote's PCR 16 is {got}, but binding the node key gives {expected}: \
             the node key is not the one the TPM vouches for"
    )]
    DataPcr {
        /// The quoted value.
        got: String,
        /// The expected value.
        expected: String,
    },
    /// No EK certificate while one is required.
    #[error(
        "the registrar has no EK certificate for this node; pass --no-require-ek-cert to \
             enrol it anyway (only for TPMs without one, e.g. some emulators)"
    )]
    NoEkCert,
    /// The EK certificate does not verify.
    #[error(
        "the EK certificate is not trusted: {0}; add its vendor CA to --tpm-cert-store \
             or pass --no-require-ek-cert"
    )]
    EkCert(String),
}

/// What the registrar knows about a node (`GET /agents/{id}` results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistrarRecord {
    /// base64 TPM2B_PUBLIC of the AK (sent on to the verifier verbatim).
    pub(crate) aik_tpm: String,
    /// base64 TPM2B_PUBLIC of the EK.
    pub(crate) ek_tpm: String,
    /// The EK certificate (base64 DER), if any.
    pub(crate) ekcert: Option<String>,
    /// The node's TLS server certificate (PEM), if any.
    pub(crate) mtls_cert: Option<String>,
    /// The address the node registered.
    pub(crate) ip: Option<String>,
    /// The port the node registered.
    pub(crate) port: Option<u16>,
    /// How many times this id registered.
    pub(crate) regcount: u64,
}

fn field(src: &'static str, name: &'static str, problem: impl Into<String>) -> IdentityError {
    IdentityError::Field {
        source_name: src,
        field: name,
        problem: problem.into(),
    }
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl RegistrarRecord {
    /// Reads the `results` of the registrar's answer.
    pub(crate) fn from_results(v: &Value) -> Result<Self, IdentityError> {
        let req =
            |k: &'static str| opt_str(v, k).ok_or_else(|| field("registrar", k, "is missing"));
        let port = match v.get("port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| field("registrar", "port", format!("{n} is not a port")))?,
            ),
            Some(Value::String(s)) => Some(
                s.parse()
                    .map_err(|_| field("registrar", "port", format!("'{s}' is not a port")))?,
            ),
            Some(other) => {
                return Err(field("registrar", "port", format!("{other} is not a port")))
            }
        };
        Ok(Self {
            aik_tpm: req("aik_tpm")?,
            ek_tpm: req("ek_tpm")?,
            ekcert: opt_str(v, "ekcert"),
            // Keylime's registrar answers "disabled" when the node has no TLS.
            mtls_cert: opt_str(v, "mtls_cert").filter(|c| c != "disabled"),
            ip: opt_str(v, "ip"),
            port,
            regcount: v.get("regcount").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// The node's identity quote answer (`GET /quotes/identity` results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityQuote {
    /// Keylime's quote string (`r<attest>:<sig>:<pcrs>`).
    pub(crate) quote: String,
    /// The bank.
    pub(crate) hash_alg: String,
    /// The EK algorithm.
    pub(crate) enc_alg: String,
    /// The AK signing scheme.
    pub(crate) sign_alg: String,
    /// The node key (PEM), which U is encrypted to.
    pub(crate) pubkey: String,
}

impl IdentityQuote {
    /// Reads the `results` of the node's answer.
    pub(crate) fn from_results(v: &Value) -> Result<Self, IdentityError> {
        let req = |k: &'static str| opt_str(v, k).ok_or_else(|| field("node", k, "is missing"));
        Ok(Self {
            quote: req("quote")?,
            hash_alg: req("hash_alg")?,
            enc_alg: req("enc_alg")?,
            sign_alg: req("sign_alg")?,
            pubkey: req("pubkey")?,
        })
    }
}

/// The algorithms the tenant accepts (Keylime's `accept_tpm_*_algs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptLists {
    /// Banks.
    pub(crate) hash: Vec<String>,
    /// EK algorithms.
    pub(crate) encryption: Vec<String>,
    /// AK signing schemes.
    pub(crate) signing: Vec<String>,
}

impl Default for AcceptLists {
    /// Keylime's tenant defaults.
    fn default() -> Self {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Self {
            hash: v(&["sha512", "sha384", "sha256"]),
            encryption: v(&["ecc", "rsa"]),
            signing: v(&["ecschnorr", "rsassa"]),
        }
    }
}

/// Keylime's `Encrypt.normalize`: `rsa` means RSA-2048, `ecc` P-256.
fn normalize(alg: &str) -> &str {
    match alg {
        "rsa" => "rsa2048",
        "ecc" => "ecc256",
        other => other,
    }
}

/// Keylime's `is_accepted`: listed as is, or equal after normalising.
pub(crate) fn is_accepted(alg: &str, accepted: &[String]) -> bool {
    accepted
        .iter()
        .any(|a| a == alg || normalize(a) == normalize(alg))
}

/// A node whose identity quote verified.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedIdentity {
    /// The quoted bank.
    pub(crate) bank: HashAlg,
    /// The node key U is encrypted to.
    pub(crate) nk: rsa::RsaPublicKey,
}

/// Reads the node key: a PEM SubjectPublicKeyInfo (or PKCS#1) RSA key.
pub(crate) fn parse_nk(pem: &str) -> Result<rsa::RsaPublicKey, IdentityError> {
    rsa::RsaPublicKey::from_public_key_pem(pem.trim())
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem.trim()))
        .map_err(|e| {
            field(
                "node",
                "pubkey",
                format!("is not an RSA public key in PEM: {e}"),
            )
        })
}

/// Keylime's `validate_tpm_quote` before the EK checks: accept lists, quote signature
/// and nonce, TPM clock, and PCR 16 = H(0 ‖ H(pubkey)).
pub(crate) fn check_identity_quote(
    reg: &RegistrarRecord,
    q: &IdentityQuote,
    nonce: &str,
    accept: &AcceptLists,
) -> Result<VerifiedIdentity, IdentityError> {
    let bank = HashAlg::from_name(&q.hash_alg);
    if !is_accepted(&q.hash_alg, &accept.hash) || bank.is_none() {
        return Err(IdentityError::Algorithm {
            kind: "hash",
            alg: q.hash_alg.clone(),
            accepted: accept.hash.join(", "),
        });
    }
    let bank = bank.unwrap_or(HashAlg::Sha256);
    for (kind, alg, list) in [
        ("encryption", &q.enc_alg, &accept.encryption),
        ("signing", &q.sign_alg, &accept.signing),
    ] {
        if !is_accepted(alg, list) {
            return Err(IdentityError::Algorithm {
                kind,
                alg: alg.clone(),
                accepted: list.join(", "),
            });
        }
    }
    let quote_err = |reason: String| IdentityError::Quote {
        nonce: nonce.to_owned(),
        reason,
        hint: if reg.regcount > 1 {
            " (this node id registered more than once with different keys: this may be a \
             misconfiguration or a malicious host; run `vigil tenant regdelete` and restart \
             the node)"
        } else {
            ""
        },
    };
    let ak_bytes = B64
        .decode(&reg.aik_tpm)
        .map_err(|e| field("registrar", "aik_tpm", format!("is not base64: {e}")))?;
    let ak = AkPublicKey::from_spki_or_tpm2b(&ak_bytes)
        .map_err(|e| field("registrar", "aik_tpm", e.to_string()))?;
    let quote = KeylimeQuote::parse(&q.quote).map_err(|e| quote_err(e.to_string()))?;
    // A fresh attestation state: Keylime's tenant checks the clock against zero (safe
    // flag set, clock advanced).
    let verified = QuoteVerifier::new(ak)
        .verify_with_clock(&quote, nonce.as_bytes(), bank, &ClockInfo::default())
        .map_err(|f| quote_err(failure_text(&f)))?;
    let expected = data_pcr_value(bank, &q.pubkey);
    match verified.pcrs.get(&DATA_PCR) {
        Some(got) if *got == expected => {}
        Some(got) => {
            return Err(IdentityError::DataPcr {
                got: got.to_hex(),
                expected: expected.to_hex(),
            })
        }
        None => return Err(quote_err("the quote does not include PCR 16".into())),
    }
    Ok(VerifiedIdentity {
        bank,
        nk: parse_nk(&q.pubkey)?,
    })
}

fn failure_text(f: &vigil_core::failure::Failure) -> String {
    f.events()
        .iter()
        .map(|e| {
            let c = &e.context;
            c.get("error")
                .or_else(|| c.get("data"))
                .and_then(Value::as_str)
                .map_or_else(|| c.to_string(), str::to_owned)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How the EK certificate was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EkVerdict {
    /// Verified: the chain's subjects, the EK certificate's first.
    Trusted(Vec<String>),
    /// Not checked (`--no-require-ek-cert`).
    Skipped,
}

/// Keylime's `check_ek` with `require_ek_cert`: the registrar's EK certificate must be
/// issued by a certificate of `store`; Vigil also requires it to certify the EK the
/// node registered. `store` `None` skips the check.
pub(crate) fn check_ek(
    reg: &RegistrarRecord,
    store: Option<&EkCertStore>,
) -> Result<EkVerdict, IdentityError> {
    let Some(store) = store else {
        return Ok(EkVerdict::Skipped);
    };
    let text = reg.ekcert.as_deref().ok_or(IdentityError::NoEkCert)?;
    let cert = EkCert::parse(text.as_bytes()).map_err(|e| IdentityError::EkCert(e.to_string()))?;
    let ek = B64
        .decode(&reg.ek_tpm)
        .map_err(|e| field("registrar", "ek_tpm", format!("is not base64: {e}")))?;
    cert.check_ek_public(&ek)
        .map_err(|e| IdentityError::EkCert(format!("it does not certify the node's EK: {e}")))?;
    let chain = ek_cert::verify(&cert, &[], store, None)
        .map_err(|e| IdentityError::EkCert(e.to_string()))?;
    Ok(EkVerdict::Trusted(
        chain.links.iter().map(|l| l.subject.clone()).collect(),
    ))
}
