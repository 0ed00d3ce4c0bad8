//! One measurement-list line: parsing and template-data reconstruction must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::ima::ImaEntry;

fuzz_target!(|line: &str| {
    if let Ok(entry) = ImaEntry::parse(line) {
        let mut data = Vec::new();
        entry.write_template_data(&mut data);
        let _ = entry.digest.to_digest();
    }
});
