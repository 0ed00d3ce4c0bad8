//! Policies evidence is judged against.
pub mod runtime;
