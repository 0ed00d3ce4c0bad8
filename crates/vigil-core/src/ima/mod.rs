//! The Linux IMA measurement list: parsing `ascii_runtime_measurements`, rebuilding
//! template data as the kernel does, replaying PCR 10 and validating entries against a
//! runtime policy with Keylime's semantics and event ids.
