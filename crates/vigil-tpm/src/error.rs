//! The one error type of the TPM layer.

use vigil_core::tpm::codec::CodecError;

/// Why a TPM operation failed. TPM and TSS failures keep tss-esapi's error, whose
/// message decodes the TPM response code (layer, error and handle/parameter number).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not `device:…`, `swtpm:…`, `mssim:…` or `tabrmd:…`, or the TPM
    /// behind it cannot be reached.
    #[error("cannot open TPM through TCTI {tcti:?}: {source}")]
    Connect {
        /// The TCTI string as given.
        tcti: String,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command (or its TSS preparation) failed.
    #[error("TPM {operation} failed: {source}")]
    Tpm {
        /// What was being done ("create EK", "quote", …).
        operation: &'static str,
        /// The TSS error, with the TPM response code decoded.
        #[source]
        source: tss_esapi::Error,
    },
    /// An operation needs the EK or the AK, and it has not been set up on this
    /// connection yet.
    #[error("no {0} loaded: set it up first")]
    NotLoaded(&'static str),
    /// A persisted AK does not belong to this EK or has other algorithms.
    #[error("the persisted AK cannot be reused: {0}")]
    AkMismatch(String),
    /// A structure from the caller, the TPM or a file does not parse.
    #[error("{0}")]
    Malformed(#[from] CodecError),
    /// A caller argument is out of range (nonce too long, PCR above 23, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The quoted PCRs kept changing between the PCR read and the quote.
    #[error("PCRs changed between reading and quoting in each of {0} attempts")]
    PcrsUnstable(usize),
    /// The thread owning the TPM context is gone (it panicked).
    #[error("the TPM worker thread stopped")]
    WorkerGone,
}

/// Wraps a tss-esapi error with the operation it failed in.
pub(crate) fn tpm(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tpm { operation, source }
}
