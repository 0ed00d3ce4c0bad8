//! The EK trust store: vendor CA certificates read from a directory's entries and
//! indexed by subject for chain building.

use std::collections::BTreeMap;

use super::cert::{CertError, EkCert};
use super::name::Name;

/// A trust-store entry that is not a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trust store entry {name}: {source}")]
pub struct StoreError {
    /// The entry (file name).
    pub name: String,
    /// Why.
    #[source]
    pub source: CertError,
}

/// A certificate of the store and where it came from.
#[derive(Debug, Clone)]
pub struct StoreCert {
    /// The entry name, with `#n` (from 1) when the entry holds several certificates.
    pub entry: String,
    /// The certificate.
    pub cert: EkCert,
}

/// The EK trust store: vendor CA certificates (Keylime's `tpm_cert_store`), indexed by
/// subject. Every certificate in it is a trust anchor.
#[derive(Debug, Clone, Default)]
pub struct EkCertStore {
    certs: Vec<StoreCert>,
    by_subject: BTreeMap<Name, Vec<usize>>,
    skipped: Vec<String>,
}

impl EkCertStore {
    /// Builds a store from `(name, bytes)` entries (a directory's files): each PEM,
    /// possibly with several certificates, or DER. Non-DER certificates are accepted,
    /// as Keylime does for its store. An entry holding PEM blocks but no certificate
    /// (a private key next to a CA certificate) is skipped and listed in
    /// [`skipped`](Self::skipped); anything else unreadable is an error naming it.
    pub fn from_entries<I, N, B>(entries: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = (N, B)>,
        N: Into<String>,
        B: AsRef<[u8]>,
    {
        let mut store = Self::default();
        for (name, bytes) in entries {
            let name = name.into();
            let bytes = bytes.as_ref();
            let certs = match EkCert::parse_all(bytes) {
                Ok(certs) => certs,
                Err(CertError::NoCertificate)
                    if std::str::from_utf8(bytes).is_ok_and(|t| t.contains("-----BEGIN ")) =>
                {
                    store.skipped.push(name);
                    continue;
                }
                Err(source) => return Err(StoreError { name, source }),
            };
            let several = certs.len() > 1;
            for (i, cert) in certs.into_iter().enumerate() {
                let entry = if several {
                    format!("{name}#{}", i + 1)
                } else {
                    name.clone()
                };
                store.push(StoreCert { entry, cert });
            }
        }
        Ok(store)
    }

    fn push(&mut self, c: StoreCert) {
        self.by_subject
            .entry(c.cert.subject.clone())
            .or_default()
            .push(self.certs.len());
        self.certs.push(c);
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when there is no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Every certificate, in entry order.
    pub fn certs(&self) -> &[StoreCert] {
        &self.certs
    }

    /// Entries skipped because they held no certificate.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The certificates whose subject is `name`.
    pub fn by_subject<'a>(&'a self, name: &Name) -> impl Iterator<Item = &'a StoreCert> + 'a {
        self.by_subject
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.certs[i])
    }
}
