//! TPM 2.0 structures, Keylime quote strings and quote verification.
//!
//! [`credential`] is the registrar's side of credential activation (`MakeCredential`).
//!
//! Everything here is pure Rust over bytes (no TPM library): a strict big-endian
//! [`codec`] for TPM structures, [`attest`] (`TPMS_ATTEST`), [`signature`]
//! (`TPMT_SIGNATURE`), [`pcr_blob`] (the little-endian PCR dump tpm2-tools writes and
//! Keylime sends) and [`quote`] (the `r<attest>:<sig>:<pcrs>` string and
//! [`quote::QuoteVerifier`]), [`certify`] (AK ↔ IAK binding by `TPM2_Certify`),
//! [`credential`] (MakeCredential) and [`ek_cert`] (EK certificates, the vendor CA
//! store and chain verification).

pub mod attest;
pub mod certify;
pub mod codec;
pub mod credential;
pub mod ek_cert;
pub mod pcr_blob;
pub mod public;
pub mod quote;
pub mod signature;
