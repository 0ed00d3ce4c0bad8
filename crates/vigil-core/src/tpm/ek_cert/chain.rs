//! Chain building: from an EK certificate through the caller's intermediates to a
//! certificate of the trust store, every signature checked, with the CA flag and (when
//! asked) validity periods.

use serde::Serialize;

use super::cert::EkCert;
use super::signature::SigFailure;
use super::store::EkCertStore;
use super::time::format_unix_time;

/// Longest chain [`verify`] builds (EK certificate and anchor included).
pub const MAX_CHAIN_LEN: usize = 8;

/// Where a certificate of a verified chain came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum LinkSource {
    /// The EK certificate itself.
    EkCert,
    /// The caller's intermediates (the TPM's NV chain), by index.
    Intermediate {
        /// Index in the list given to [`verify`].
        index: usize,
    },
    /// The trust store.
    Store {
        /// The store entry.
        entry: String,
    },
}

/// One certificate of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// Its subject.
    pub subject: String,
    /// Where it came from.
    pub source: LinkSource,
}

/// A verified chain, EK certificate first, trust anchor (a store certificate) last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedChain {
    /// The certificates.
    pub links: Vec<ChainLink>,
}

/// Why an EK certificate is not trusted. Each variant names the certificate (by
/// subject) at which the chain broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No store certificate or intermediate has the certificate's issuer as subject.
    #[error("'{subject}': its issuer '{issuer}' is neither in the trust store nor among the intermediates")]
    NoIssuer {
        /// The certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// A candidate issuer's key does not verify the signature.
    #[error("'{subject}': the signature does not verify with the key of '{issuer}' ({from})")]
    BadSignature {
        /// The certificate.
        subject: String,
        /// The candidate issuer.
        issuer: String,
        /// Where the candidate came from (store entry or intermediate).
        from: String,
    },
    /// The signature algorithm is not one Vigil verifies.
    #[error("'{subject}': unsupported signature algorithm {algorithm}")]
    UnsupportedAlgorithm {
        /// The certificate.
        subject: String,
        /// The algorithm (OID or description).
        algorithm: String,
    },
    /// The issuer's key is not one Vigil verifies with, or does not fit the algorithm.
    #[error("'{subject}': the key of issuer '{issuer}' cannot verify it: {message}")]
    UnsupportedKey {
        /// The certificate.
        subject: String,
        /// The issuer.
        issuer: String,
        /// Why.
        message: String,
    },
    /// The outer signatureAlgorithm differs from the signed one.
    #[error("'{subject}': signatureAlgorithm differs from the signed signature algorithm")]
    AlgorithmMismatch {
        /// The certificate.
        subject: String,
    },
    /// The issuer's basicConstraints says it is not a CA.
    #[error("'{subject}': issuer '{issuer}' is not a CA (basicConstraints cA is false)")]
    NotCa {
        /// The certificate.
        subject: String,
        /// The issuer.
        issuer: String,
    },
    /// Checked after notAfter.
    #[error("'{subject}': expired at {not_after} (checked at {at})")]
    Expired {
        /// The certificate.
        subject: String,
        /// Its notAfter (RFC 3339).
        not_after: String,
        /// The check time (RFC 3339).
        at: String,
    },
    /// Checked before notBefore.
    #[error("'{subject}': not valid before {not_before} (checked at {at})")]
    NotYetValid {
        /// The certificate.
        subject: String,
        /// Its notBefore (RFC 3339).
        not_before: String,
        /// The check time (RFC 3339).
        at: String,
    },
    /// More than [`MAX_CHAIN_LEN`] certificates.
    #[error("'{subject}': the chain is longer than {MAX_CHAIN_LEN} certificates")]
    TooLong {
        /// The certificate at which the limit was hit.
        subject: String,
    },
}

fn check_validity(cert: &EkCert, at: Option<i64>) -> Result<(), ChainError> {
    let Some(at) = at else { return Ok(()) };
    if at < cert.not_before {
        return Err(ChainError::NotYetValid {
            subject: cert.subject.to_string(),
            not_before: format_unix_time(cert.not_before),
            at: format_unix_time(at),
        });
    }
    if at > cert.not_after {
        return Err(ChainError::Expired {
            subject: cert.subject.to_string(),
            not_after: format_unix_time(cert.not_after),
            at: format_unix_time(at),
        });
    }
    Ok(())
}

/// Checks that `issuer` signed `cert` and may sign certificates.
fn link_error(cert: &EkCert, issuer: &EkCert, from: &str) -> Option<ChainError> {
    let subject = cert.subject.to_string();
    if issuer.ca == Some(false) {
        return Some(ChainError::NotCa {
            subject,
            issuer: issuer.subject.to_string(),
        });
    }
    match cert.signed_by(issuer) {
        Ok(()) => None,
        Err(SigFailure::Invalid) => Some(ChainError::BadSignature {
            subject,
            issuer: issuer.subject.to_string(),
            from: from.to_string(),
        }),
        Err(SigFailure::UnsupportedAlgorithm(algorithm)) => {
            Some(ChainError::UnsupportedAlgorithm { subject, algorithm })
        }
        Err(SigFailure::AlgorithmMismatch) => Some(ChainError::AlgorithmMismatch { subject }),
        Err(SigFailure::UnsupportedKey(message)) => Some(ChainError::UnsupportedKey {
            subject,
            issuer: issuer.subject.to_string(),
            message,
        }),
        Err(SigFailure::WrongKeyType) => Some(ChainError::UnsupportedKey {
            subject,
            issuer: issuer.subject.to_string(),
            message: format!(
                "a {} key cannot check {}",
                issuer.public_key.describe(),
                cert.sig_alg
            ),
        }),
    }
}

/// Verifies an EK certificate: builds the chain `ek_cert` → `intermediates` (e.g. the
/// TPM's NV chain) → a certificate of `store`, checking every signature over the
/// signed bytes as given. Any store certificate ends the chain (Keylime's rule: the
/// store holds trust anchors, intermediates included). Validity periods are checked
/// only when `at` (Unix seconds) is given — Keylime never checks them.
///
/// The encoding policy is not applied here: call [`EkCert::check_encoding`] on the
/// certificates read from the TPM first.
pub fn verify(
    ek_cert: &EkCert,
    intermediates: &[EkCert],
    store: &EkCertStore,
    at: Option<i64>,
) -> Result<VerifiedChain, ChainError> {
    let mut used = Vec::new();
    let mut links = build(ek_cert, intermediates, store, at, &mut used)?;
    links.insert(
        0,
        ChainLink {
            subject: ek_cert.subject.to_string(),
            source: LinkSource::EkCert,
        },
    );
    Ok(VerifiedChain { links })
}

/// The links above `cert` (its issuer first), depth-first over candidate issuers.
fn build(
    cert: &EkCert,
    intermediates: &[EkCert],
    store: &EkCertStore,
    at: Option<i64>,
    used: &mut Vec<usize>,
) -> Result<Vec<ChainLink>, ChainError> {
    check_validity(cert, at)?;
    let mut error = None;
    for anchor in store.by_subject(&cert.issuer) {
        match link_error(cert, &anchor.cert, &anchor.entry)
            .map_or_else(|| check_validity(&anchor.cert, at), Err)
        {
            Ok(()) => {
                return Ok(vec![ChainLink {
                    subject: anchor.cert.subject.to_string(),
                    source: LinkSource::Store {
                        entry: anchor.entry.clone(),
                    },
                }])
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    for (index, inter) in intermediates.iter().enumerate() {
        if inter.subject != cert.issuer || used.contains(&index) {
            continue;
        }
        if let Some(e) = link_error(cert, inter, &format!("intermediate #{}", index + 1)) {
            error.get_or_insert(e);
            continue;
        }
        // `used` holds the intermediates already in the chain, so its length is the
        // depth: EK certificate + used + this one + an anchor.
        if used.len() + 3 > MAX_CHAIN_LEN {
            return Err(ChainError::TooLong {
                subject: inter.subject.to_string(),
            });
        }
        used.push(index);
        match build(inter, intermediates, store, at, used) {
            Ok(mut rest) => {
                rest.insert(
                    0,
                    ChainLink {
                        subject: inter.subject.to_string(),
                        source: LinkSource::Intermediate { index },
                    },
                );
                return Ok(rest);
            }
            // A failure further up explains more than a sibling's bad signature.
            Err(e) => error = Some(e),
        }
        used.pop();
    }
    Err(error.unwrap_or_else(|| ChainError::NoIssuer {
        subject: cert.subject.to_string(),
        issuer: cert.issuer.to_string(),
    }))
}
