//! UEFI event log parsing, replay, event decoding and YAML/JSON rendering.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = vigil_core::eventlog::parse(data) {
        let _ = log.replay();
        for event in &log.events {
            let _ = vigil_core::eventlog::decode(event);
        }
        let opts = vigil_core::eventlog::RenderOptions::default();
        let _ = vigil_core::eventlog::to_yaml(&log, opts);
        let _ = vigil_core::eventlog::to_json(&log, opts);
    }
});
