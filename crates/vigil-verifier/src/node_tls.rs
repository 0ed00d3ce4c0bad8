//! The verifier's TLS to nodes: a client configuration that trusts exactly the node's
//! enrolled `mtls_cert` and presents the verifier's client certificate — Keylime's
//! `generate_agent_tls_context`, which makes the node's certificate the only CA and
//! checks no host name. Requests go through `vigil_service::client`.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// The verifier's client identity (certificate chain and key), loaded once and shared
/// by every node's pinned configuration.
pub(crate) type ClientIdentity = vigil_tls::PinnedIdentity;

/// The DER of the first certificate in `pem` (or `pem` itself if it is DER).
pub(crate) fn cert_der(pem_or_der: &[u8]) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    if let Ok(c) = CertificateDer::from_pem_slice(pem_or_der) {
        return Some(c);
    }
    // A DER certificate starts with a SEQUENCE tag.
    (pem_or_der.first() == Some(&0x30)).then(|| CertificateDer::from(pem_or_der.to_vec()))
}

/// A client configuration trusting exactly `node_cert`, presenting `identity`.
pub(crate) fn pinned_config(
    node_cert: CertificateDer<'static>,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    vigil_tls::pinned_client_config_shared(node_cert, identity).map(Arc::new)
}
