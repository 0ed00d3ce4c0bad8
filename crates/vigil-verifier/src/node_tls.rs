//! The verifier's TLS to nodes: a node must present exactly its enrolled `mtls_cert`,
//! and the verifier presents its client certificate — Keylime's
//! `generate_agent_tls_context`, which makes the node's certificate the only CA and
//! checks no host name. Requests go through `vigil_service::client`, with one client
//! configuration for every node ([`NodeTls`]) and each node's certificate held as a
//! pin: a configuration and a certificate per node were most of a KiB of each node's
//! memory.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;
use vigil_service::client::Endpoint;
use vigil_tls::CertPin;

/// The verifier's client identity (certificate chain and key), loaded once.
pub(crate) type ClientIdentity = vigil_tls::PinnedIdentity;

/// The one client configuration of every request to a node, presenting the verifier's
/// identity; the node's certificate is compared with its pin by the client's stream.
pub(crate) type NodeTls = vigil_tls::PinCheckedConfig;

/// A node at `addr`: over TLS with `tls`, its certificate checked against `pin`, if it
/// has one; plain HTTP if it has none (a node enrolled without mTLS).
pub(crate) fn endpoint(addr: SocketAddr, tls: &NodeTls, pin: Option<CertPin>) -> Endpoint {
    match pin {
        Some(pin) => Endpoint::addr(addr).with_pinned_tls(tls, pin),
        None => Endpoint::addr(addr),
    }
}

/// The DER of the first certificate in `pem` (or `pem` itself if it is DER).
pub(crate) fn cert_der(pem_or_der: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    if let Ok(c) = CertificateDer::from_pem_slice(pem_or_der) {
        return Some(c);
    }
    // A DER certificate starts with a SEQUENCE tag.
    (pem_or_der.first() == Some(&0x30)).then(|| CertificateDer::from(pem_or_der.to_vec()))
}

/// The pin of a node's enrolled `mtls_cert` (PEM or DER), if it is a certificate.
pub(crate) fn pin(pem_or_der: &[u8]) -> Option<CertPin> {
    cert_der(pem_or_der).map(|der| CertPin::of(&der))
}
