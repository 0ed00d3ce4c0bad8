//! rustls configurations from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn pem_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    // Keylime's ca_util encrypts the keys it makes when `server_key_password` or
    // `client_key_password` is set; say so rather than "no private key".
    if bytes
        .windows(ENCRYPTED.len())
        .any(|w| w == ENCRYPTED.as_bytes())
    {
        return Err(pem_err(
            path,
            "the private key is encrypted (Keylime's server_key_password / \
             client_key_password): Vigil reads unencrypted keys; decrypt it with \
             `openssl pkey -in FILE -out FILE` and keep the file mode 0600",
        ));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_err(path, format!("no private key: {e}")))
}

pub(crate) fn roots(paths: &[&Path]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for path in paths {
        for cert in certs(path)? {
            store
                .add(cert)
                .map_err(|e| pem_err(path, format!("unusable CA certificate: {e}")))?;
        }
    }
    Ok(store)
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Ask for one and verify it when sent, but also accept clients without one; the
    /// application decides per route (Keylime's registrar: `CERT_OPTIONAL`, so
    /// `/version` works without a certificate while admin routes need one).
    Optional,
    /// Refuse the handshake of a client without a valid certificate.
    Required,
}

/// A server configuration: `cert` (chain, PEM) and `key`, verifying client certificates
/// against `client_cas` (which must chain to one of them and carry the clientAuth
/// extended key usage when they have any EKU). ALPN offers HTTP/1.1 only.
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_cas: &[&Path],
    auth: ClientAuth,
) -> Result<rustls::ServerConfig, TlsError> {
    let roots = Arc::new(roots(client_cas)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let builder = match auth {
        ClientAuth::Optional => builder.allow_unauthenticated(),
        ClientAuth::Required => builder,
    };
    let verifier = builder
        .build()
        .map_err(|e| TlsError::ClientVerifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert)?, key(key_path)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration trusting `ca` (PEM), presenting `identity` (certificate and
/// key) when given.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&[ca])?);
    Ok(match identity {
        Some((cert, key_path)) => builder.with_client_auth_cert(certs(cert)?, key(key_path)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// The subject common name (CN) of a DER certificate, if it has one as a UTF-8 or
/// printable string: what a client certificate is authorised by.
pub fn peer_common_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    use x509_cert::der::oid::ObjectIdentifier;
    use x509_cert::der::Decode;
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let atv = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)?;
    Utf8StringRef::try_from(&atv.value)
        .map(|s| s.as_str().to_owned())
        .or_else(|_| PrintableStringRef::try_from(&atv.value).map(|s| s.as_str().to_owned()))
        .ok()
}

/// The issuer of a DER certificate as RFC 4514 text (`CN=…,O=…`).
pub fn certificate_issuer(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.issuer.to_string())
}

/// The subject of a DER certificate as RFC 4514 text (`CN=client,...`), for logs.
pub fn peer_subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(cert.tbs_certificate.subject.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_encrypted_key_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server-private.pem");
        std::fs::write(
            &path,
            format!(
                "{}\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
                super::ENCRYPTED
            ),
        )
        .unwrap();
        let err = super::key(&path).unwrap_err().to_string();
        assert!(
            err.contains("encrypted") && err.contains("openssl pkey"),
            "{err}"
        );
    }
}
