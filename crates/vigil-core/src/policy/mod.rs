//! Policies evidence is judged against: Keylime runtime policies ([`runtime`]), Keylime's
//! `tpm_policy` and PCR checks ([`tpm`]), and golden PCR values per hardware class
//! ([`golden`]).
pub mod golden;
pub mod runtime;
pub mod tpm;
