//! UEFI event log parsing and replay.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = vigil_core::eventlog::parse(data) {
        let _ = log.replay();
    }
});
