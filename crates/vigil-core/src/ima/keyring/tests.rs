//! Tests of IMA keyrings and signature verification.
