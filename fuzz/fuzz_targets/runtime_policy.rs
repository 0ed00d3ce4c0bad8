//! Runtime policy JSON (plain or DSSE-wrapped) and the lookups a loaded policy answers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::policy::runtime::RuntimePolicy;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = RuntimePolicy::from_json(data) {
        let _ = policy.is_excluded("/usr/bin/bash");
        let _ = policy.digests_for("boot_aggregate");
        let _ = policy.to_json();
    }
});
