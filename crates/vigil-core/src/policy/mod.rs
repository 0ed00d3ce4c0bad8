//! Policies evidence is judged against: Keylime runtime policies ([`runtime`]), Keylime's
//! `tpm_policy` and PCR checks ([`tpm`]), measured-boot policies and reference states
//! ([`measured_boot`]), and golden PCR values per hardware class ([`golden`]).
pub mod golden;
pub mod measured_boot;
pub mod runtime;
pub mod tpm;
