//! EK certificates: the lenient BER reader, names, times, keys, PEM/base64 sniffing,
//! the store and chain building (the input is used as its own trust store too).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::tpm::ek_cert::{verify, EkCert, EkCertStore, MalformedCertAction};

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = EkCert::parse(data) {
        let _ = cert.check_encoding(MalformedCertAction::Reject);
        let _ = cert.check_ek_public(cert.spki_bytes());
        let _ = cert.subject().to_string();
    }
    if let Ok(certs) = EkCert::parse_all(data) {
        if let Ok(store) = EkCertStore::from_entries([("fuzz.pem", data)]) {
            for c in &certs {
                let _ = verify(c, &certs, &store, Some(0));
            }
        }
    }
});
