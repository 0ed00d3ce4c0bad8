//! A whole log through the streaming reader and replay (any bytes, any bank).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::ima::{process_reader, AcceptAll, ImaConfig, ImaLogReader};
use vigil_core::HashAlg;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, log)) = data.split_first() else {
        return;
    };
    let bank = HashAlg::ALL[usize::from(selector) % HashAlg::ALL.len()];
    let mut reader = ImaLogReader::new(log).with_max_line(4096);
    let _ = process_reader(ImaConfig::new(bank), None, &mut reader, None, AcceptAll);
});
