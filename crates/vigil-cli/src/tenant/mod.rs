//! The tenant: enrolling nodes with a verifier and managing them, over Keylime's REST
//! APIs, against Vigil's services or Keylime's.
//!
//! - [`http`]: the HTTP/1.1 client (rustls with vigil-tls configurations; nodes are
//!   reached with their registered `mtls_cert` pinned);
//! - [`version`]: API version negotiation;
//! - [`identity`]: the identity quote and EK certificate checks;
//! - [`policy`], [`body`], [`pyjson`]: what is sent, byte for byte as Keylime's
//!   tenant sends it;
//! - [`certpkg`]: `--cert`'s CA and certificate package;
//! - [`flow`]: the conversations (`add`, status, delete, policies, ...).

pub(crate) mod body;
pub(crate) mod certpkg;
pub(crate) mod flow;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod policy;
pub(crate) mod pyjson;
pub(crate) mod version;

/// Prints a warning on stderr.
pub(crate) fn warn(message: &str) {
    use crate::cmd::style::WARN;
    anstream::eprintln!("{}warning:{} {message}", WARN.render(), WARN.render_reset());
}

#[cfg(test)]
mod tests;
