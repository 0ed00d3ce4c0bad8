//! EK certificates: parsing vendor certificates as they really are, a trust store of
//! vendor CAs, chain verification and the EK public-key match.
//!
//! TPM vendors ship EK certificates that strict DER decoders refuse (non-minimal
//! lengths, BOOLEAN true that is not 0xFF, zero-padded or negative serials, strings
//! outside their type's alphabet), and TPM NV indices pad the certificate with 0x00 or
//! 0xFF. [`EkCert`] reads all of these with a lenient BER reader, keeps the original
//! bytes, records every deviation from DER ([`EkCert::der_issues`]) and lets the caller
//! refuse non-DER input ([`MalformedCertAction::Reject`], Keylime's
//! `malformed_cert_action = reject`). Signatures are always checked over the
//! TBSCertificate bytes exactly as they appear — what the vendor actually signed.
//! (Keylime re-encodes a non-DER certificate through pyasn1 and then checks the
//! signature over the re-encoded bytes, which fails whenever the deviation is inside
//! the signed part.)
//!
//! [`verify`] builds the chain EK certificate → intermediates → a certificate of the
//! [`EkCertStore`]. Like Keylime, any store certificate (even an intermediate) is a
//! trust anchor. Unlike Keylime, intermediates that are not in the store (the TPM's NV
//! chain) can bridge the gap, an issuer whose basicConstraints says it is not a CA is
//! refused, and validity periods are checked when the caller gives a time.
//!
//! One module per job: `name` (distinguished names), `cert` (reading certificates),
//! `key` (subject public keys and the EK match), `signature` (signature algorithms and
//! checks), `store` (the trust store) and `chain` (chain building), over the lenient
//! `ber` reader and the calendar conversions of `time`.

mod ber;
mod cert;
mod chain;
mod key;
mod name;
mod signature;
mod store;
mod time;

pub use self::cert::{CertError, EkCert, MalformedCertAction};
pub use self::chain::{verify, ChainError, ChainLink, LinkSource, VerifiedChain, MAX_CHAIN_LEN};
pub use self::key::{CertPublicKey, EcCurve, KeyMatchError};
pub use self::name::Name;
pub use self::signature::SignatureAlgorithm;
pub use self::store::{EkCertStore, StoreCert, StoreError};
pub use self::time::{format_unix_time, parse_rfc3339};

#[cfg(test)]
mod tests;
