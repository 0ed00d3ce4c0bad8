//! The measured-boot reference state of an enrolment or an `mbpolicies` upload (a REST
//! body field): any JSON through the `example` policy's reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::policy::measured_boot::RefState;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = RefState::from_json(&value);
    }
});
