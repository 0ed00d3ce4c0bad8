//! `tpm_policy` as the verifier's enrolment and the tenant read it (a REST body field):
//! Keylime's PCR policy JSON. A policy that parses writes back to one that parses alike.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::policy::tpm::TpmPolicy;

fuzz_target!(|text: &str| {
    if let Ok(policy) = TpmPolicy::from_json(text) {
        let again = TpmPolicy::from_value(&policy.to_value()).expect("a written policy re-reads");
        assert_eq!(again.mask(), policy.mask());
        assert_eq!(again.allowed(), policy.allowed());
    }
});
