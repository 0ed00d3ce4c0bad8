//! Legacy allowlist + exclude list conversion (a `\x01` separates the two files).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::policy::runtime::RuntimePolicy;

fuzz_target!(|text: &str| {
    let (allow, exclude) = text.split_once('\u{1}').unwrap_or((text, ""));
    let _ = RuntimePolicy::from_legacy(Some(allow), Some(exclude));
});
