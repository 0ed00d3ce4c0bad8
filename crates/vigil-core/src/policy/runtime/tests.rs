//! Tests of runtime policy parsing.
