//! Trusting exactly one server certificate: a node's `mtls_cert` as its registrar
//! recorded it. Keylime's tenant and verifier do the same (that certificate is the only
//! CA and host names are not checked); handshake signatures are still checked with the
//! certificate's key.
//!
//! These are the configurations for connections to nodes, and they never resume a TLS
//! session. rust-keylime's agent (OpenSSL) requires a client certificate and issues
//! session tickets but sets no session id context, so OpenSSL aborts every resumed
//! handshake with an `internal_error` alert; rustls' default client session cache
//! would make every connection after the first to that node fail. Keylime's own
//! clients never resume either, and a full handshake per request costs the node little
//! at a quote every few seconds.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The one crypto provider every pinned configuration shares.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A client certificate and its key, loaded once and shared by every pinned
/// configuration made with it: a verifier holds one configuration per node, and a
/// copy of the parsed key in each would cost memory per node for nothing.
#[derive(Debug, Clone)]
pub struct PinnedIdentity(Arc<Always>);

#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesClientCert for Always {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl PinnedIdentity {
    /// Loads `key` (the private key of `chain`'s first certificate).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let key = provider().key_provider.load_private_key(key)?;
        Ok(Self(Arc::new(Always(Arc::new(CertifiedKey::new(
            chain, key,
        ))))))
    }
}

/// A client configuration that accepts only `cert` (DER) from the server, whatever its
/// names and validity, presents `identity` (certificate chain and key) when given, and
/// never resumes a session (see the module documentation).
pub fn pinned_client_config(
    cert: CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let identity = identity
        .map(|(chain, key)| PinnedIdentity::new(chain, key))
        .transpose()?;
    config(Expect::Cert(cert), identity.as_ref())
}

/// The SHA-256 of the one certificate a server may present: what a client holding
/// many pinned peers keeps for each, rather than a configuration per peer (a
/// configuration and a certificate are most of a KiB; a verifier holds thousands).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertPin([u8; 32]);

impl CertPin {
    /// The pin of `cert` (DER).
    pub fn of(cert: &[u8]) -> Self {
        let digest = vigil_core::HashAlg::Sha256.hash(cert);
        let mut pin = [0; 32];
        pin.copy_from_slice(digest.as_bytes());
        Self(pin)
    }

    /// Whether `cert` (DER) is the pinned certificate.
    pub fn matches(&self, cert: &[u8]) -> bool {
        Self::of(cert) == *self
    }
}

impl std::fmt::Debug for CertPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertPin(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// One client configuration for every pinned peer, each checked against its own
/// [`CertPin`] by the client that uses it: its verifier checks the handshake
/// signatures with the presented certificate's key but accepts any certificate.
///
/// Alone it authenticates no one. A client using it must compare the peer's
/// certificate with the pin as soon as rustls has it and before it sends anything
/// more (rustls records the certificate before it makes the client's next flight, in
/// TLS 1.2 and 1.3): `vigil_service`'s client does. It presents the identity it was
/// made with and never resumes a session, as [`pinned_client_config`] does.
#[derive(Debug, Clone)]
pub struct PinCheckedConfig(Arc<rustls::ClientConfig>);

impl PinCheckedConfig {
    /// The configuration presenting `identity`, if given.
    pub fn new(identity: Option<&PinnedIdentity>) -> Result<Self, rustls::Error> {
        config(Expect::CheckedByClient, identity).map(|c| Self(Arc::new(c)))
    }

    /// The rustls configuration: only for a client that checks the pin (see above).
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.0
    }
}

fn config(
    expect: Expect,
    identity: Option<&PinnedIdentity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        expect,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(id.0.clone()),
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Which server certificate a [`PinnedCert`] accepts.
#[derive(Debug)]
enum Expect {
    /// Exactly this one.
    Cert(CertificateDer<'static>),
    /// Any: the client compares it with its pin (see [`PinCheckedConfig`]).
    CheckedByClient,
}

#[derive(Debug)]
struct PinnedCert {
    expect: Expect,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let accepted = match &self.expect {
            Expect::Cert(cert) => end_entity.as_ref() == cert.as_ref(),
            Expect::CheckedByClient => true,
        };
        if accepted {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node presented a certificate other than the mtls_cert it registered".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
