//! Response rules (filled in below).
