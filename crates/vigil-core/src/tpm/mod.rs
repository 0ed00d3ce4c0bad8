//! TPM 2.0 structures, Keylime quote strings and quote verification.
