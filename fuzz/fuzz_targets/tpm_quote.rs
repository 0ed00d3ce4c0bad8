//! TPM structures and Keylime quote strings: TPMS_ATTEST, TPMT_SIGNATURE, the PCR blob,
//! TPM2B_PUBLIC, tpm2-tools credential files.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_core::tpm::attest::{CertifyAttest, QuoteAttest};
use vigil_core::tpm::pcr_blob::PcrBlob;
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_core::tpm::signature::TpmSignature;

fuzz_target!(|data: &[u8]| {
    let _ = QuoteAttest::parse(data);
    let _ = CertifyAttest::parse(data);
    let _ = TpmSignature::parse(data);
    let _ = PcrBlob::parse(data);
    if let Ok(public) = vigil_core::tpm::public::TpmPublic::parse_tpm2b(data) {
        let _ = public.name();
        let _ = public.to_spki_der();
    }
    if let Ok(blob) = vigil_core::tpm::credential::CredentialBlob::parse_tpm2_tools(data) {
        // A parsed file writes back to exactly the same bytes.
        assert_eq!(blob.to_tpm2_tools(), data);
    }
    let _ = vigil_core::tpm::public::TpmPublic::ek_from_spki(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KeylimeQuote::parse(text);
    }
});
