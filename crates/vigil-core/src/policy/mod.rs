//! Policies evidence is judged against.
