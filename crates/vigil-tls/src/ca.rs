//! A small certificate authority in Keylime's `cv_ca` layout.
//!
//! | file | what |
//! |---|---|
//! | `cacert.crt` | the CA certificate (what `trusted_client_ca` / `trusted_server_ca` name) |
//! | `ca-private.pem`, `ca-public.pem` | the CA key (mode 0600) and its public half |
//! | `NAME-cert.crt` | a certificate issued to NAME (`server`, `client`, …) |
//! | `NAME-private.pem`, `NAME-public.pem` | its key (mode 0600) and public half |
//!
//! Keylime keeps the CA key and serial counter in an encrypted `private.yml`
//! instead of `ca-private.pem`; everything a service or client reads (`cacert.crt`
//! and the `NAME-*` files) is named and encoded as Keylime's `ca_util` writes it, so a
//! Vigil CA directory works where a Keylime `cv_ca` is expected and the other way
//! round. Keys are ECDSA P-256; serials are 16 random bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;

/// How long certificates are valid (Keylime's `cert_expiration` default, 10 years).
const VALIDITY_DAYS: i64 = 3650;

/// The key type of a new CA or certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA P-256 (the default: small and fast).
    #[default]
    EcdsaP256,
    /// RSA 2048 with SHA-256 signatures: what Keylime's `ca_util` makes, and what a
    /// revocation signing key must be (Keylime signs notices with RSA-PSS).
    Rsa2048,
}

impl KeyType {
    fn generate(self, name: &str) -> Result<KeyPair, TlsError> {
        match self {
            Self::EcdsaP256 => KeyPair::generate(),
            Self::Rsa2048 => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
        }
        .map_err(gen_err(name))
    }
}

/// What a certificate is for: its extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TLS server (serverAuth), with subject alternative names.
    Server,
    /// TLS client (clientAuth): an admin / tenant identity.
    Client,
    /// No extended key usage (any purpose), with subject alternative names: the
    /// node certificates of Keylime's certificate packages.
    Any,
}

/// The files of a CA directory.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    /// The CA directory at `dir` (nothing is read).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cacert.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("cacert.crt")
    }

    /// `ca-private.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-private.pem")
    }

    /// `NAME-cert.crt`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-cert.crt"))
    }

    /// `NAME-private.pem`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-private.pem"))
    }

    /// `NAME-public.pem`.
    pub fn public_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-public.pem"))
    }

    /// `cacrl.der`: the certificate revocation list (made by [`init_ca`]).
    pub fn crl_der(&self) -> PathBuf {
        self.dir.join("cacrl.der")
    }

    /// `cacrl.pem`.
    pub fn crl_pem(&self) -> PathBuf {
        self.dir.join("cacrl.pem")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn gen_err(name: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Generate {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `contents` to `path`, replacing it; private files get mode 0600 from the
/// start (never briefly world-readable).
pub fn write(path: &Path, contents: &str, private: bool) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn params(name: &str, sans: &[String]) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen_err(name))?;
    for san in sans {
        // An address is an IP SAN, anything else a DNS name.
        let entry = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.clone().try_into().map_err(gen_err(name))?),
        };
        p.subject_alt_names.push(entry);
    }
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(DnType::OrganizationName, "Vigil");
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that are slightly behind.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(VALIDITY_DAYS);
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(p)
}

/// A valid certificate name: it becomes part of file names.
fn check_name(name: &str) -> Result<(), TlsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name != "ca"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TlsError::Generate {
            name: name.to_owned(),
            message:
                "a name is 1-64 characters of [A-Za-z0-9._-], not starting with '.', and not 'ca'"
                    .into(),
        })
    }
}

/// Creates the CA in `dir` (made with mode 0700 if missing) plus a `server`
/// certificate for `server_sans` and a `client` certificate — what Keylime's
/// `tls_dir = generate` makes. Refuses to replace an existing `cacert.crt` unless
/// `force`.
pub fn init(dir: &Path, server_sans: &[String], force: bool) -> Result<CaDir, TlsError> {
    let ca = init_ca(dir, force, KeyType::EcdsaP256)?;
    issue(&ca, "server", Kind::Server, server_sans, true)?;
    issue(&ca, "client", Kind::Client, &[], true)?;
    Ok(ca)
}

/// Creates only the CA (`cacert.crt`, `ca-private.pem`, `ca-public.pem`) in `dir`
/// with a `key` key, and an empty certificate revocation list (`cacrl.der`,
/// `cacrl.pem`) as Keylime's `ca_util init` writes. Refuses to replace an existing
/// `cacert.crt` unless `force`.
pub fn init_ca(dir: &Path, force: bool, key_type: KeyType) -> Result<CaDir, TlsError> {
    let ca = CaDir::new(dir);
    if ca.ca_cert().exists() && !force {
        return Err(TlsError::Exists { path: ca.ca_cert() });
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))?;

    let key = key_type.generate("ca")?;
    let mut p = params("Vigil CA", &[])?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).map_err(gen_err("ca"))?;
    write(&ca.ca_key(), &key.serialize_pem(), true)?;
    write(&dir.join("ca-public.pem"), &key.public_key_pem(), false)?;
    write(&ca.ca_cert(), &cert.pem(), false)?;
    write_crl(&ca, &[])?;
    Ok(ca)
}

/// The CA's key and a certificate object to sign with.
fn issuer(ca: &CaDir) -> Result<(rcgen::Certificate, KeyPair), TlsError> {
    let ca_key_path = ca.ca_key();
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        message: e.to_string(),
    })?;
    let ca_cert_path = ca.ca_cert();
    let ca_params = issuer_params(&read(&ca_cert_path)?).map_err(|message| TlsError::Pem {
        path: ca_cert_path.clone(),
        message,
    })?;
    let issuer = ca_params.self_signed(&ca_key).map_err(gen_err("ca"))?;
    Ok((issuer, ca_key))
}

/// What rcgen takes from an issuer when it signs, read from the CA certificate (PEM):
/// its subject (written as the issued certificate's issuer, so it is copied attribute
/// by attribute with each value's string type: chain building compares the encoded
/// names), its subject key identifier (the issued certificate's authority key id) and
/// its key usages (a CRL needs `cRLSign`). rcgen can read a certificate itself only
/// through its `x509-parser` feature, which would link a third crypto library (ring).
fn issuer_params(pem: &str) -> Result<CertificateParams, String> {
    use x509_cert::der::{DecodePem, Tag, Tagged};
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectKeyIdentifier};

    let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let mut p = CertificateParams::default();
    for rdn in tbs.subject.0.iter() {
        let [atv] = rdn.0.as_slice() else {
            return Err("a multi-valued name component in the CA subject".into());
        };
        let oid: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
        let bytes = atv.value.value();
        let text = || String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string());
        let bad = |e: rcgen::Error| e.to_string();
        let value = match atv.value.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(bad)?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(bad)?),
            Tag::TeletexString => DnValue::TeletexString(text()?.try_into().map_err(bad)?),
            Tag::BmpString => {
                DnValue::BmpString(rcgen::BmpString::from_utf16be(bytes.to_vec()).map_err(bad)?)
            }
            other => return Err(format!("CA subject attribute {} is a {other}", atv.oid)),
        };
        p.distinguished_name.push(DnType::from_oid(&oid), value);
    }
    if let Some((_, ski)) = tbs
        .get::<SubjectKeyIdentifier>()
        .map_err(|e| e.to_string())?
    {
        p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ski.0.as_bytes().to_vec());
    }
    if let Some((_, KeyUsage(flags))) = tbs.get::<KeyUsage>().map_err(|e| e.to_string())? {
        p.key_usages = [
            (
                KeyUsages::DigitalSignature,
                KeyUsagePurpose::DigitalSignature,
            ),
            (
                KeyUsages::NonRepudiation,
                KeyUsagePurpose::ContentCommitment,
            ),
            (KeyUsages::KeyEncipherment, KeyUsagePurpose::KeyEncipherment),
            (
                KeyUsages::DataEncipherment,
                KeyUsagePurpose::DataEncipherment,
            ),
            (KeyUsages::KeyAgreement, KeyUsagePurpose::KeyAgreement),
            (KeyUsages::KeyCertSign, KeyUsagePurpose::KeyCertSign),
            (KeyUsages::CRLSign, KeyUsagePurpose::CrlSign),
            (KeyUsages::EncipherOnly, KeyUsagePurpose::EncipherOnly),
            (KeyUsages::DecipherOnly, KeyUsagePurpose::DecipherOnly),
        ]
        .into_iter()
        .filter(|(bit, _)| flags.contains(*bit))
        .map(|(_, purpose)| purpose)
        .collect();
    }
    Ok(p)
}

/// Signs a certificate revocation list revoking `serials` (big-endian bytes) and
/// writes it as `cacrl.der` and `cacrl.pem`, valid for the CA's lifetime (Keylime's
/// CRLs are regenerated only when a certificate is revoked). Returns the DER.
pub fn write_crl(ca: &CaDir, serials: &[Vec<u8>]) -> Result<Vec<u8>, TlsError> {
    let (issuer, ca_key) = issuer(ca)?;
    let now = OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(VALIDITY_DAYS),
        crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer, &ca_key).map_err(gen_err("crl"))?;
    let der = crl.der().to_vec();
    let pem = crl.pem().map_err(gen_err("crl"))?;
    let der_path = ca.crl_der();
    std::fs::write(&der_path, &der).map_err(io(&der_path))?;
    write(&ca.crl_pem(), &pem, false)?;
    Ok(der)
}

/// Issues a certificate named `name` (its subject CN) from the CA in `ca`, writing
/// `NAME-cert.crt`, `NAME-private.pem` and `NAME-public.pem`. Refuses to replace an
/// existing certificate of that name unless `force`.
pub fn issue(
    ca: &CaDir,
    name: &str,
    kind: Kind,
    sans: &[String],
    force: bool,
) -> Result<PathBuf, TlsError> {
    issue_with(ca, name, kind, sans, force, KeyType::EcdsaP256)
}

/// [`issue`] with a `key_type` key.
pub fn issue_with(
    ca: &CaDir,
    name: &str,
    kind: Kind,
    sans: &[String],
    force: bool,
    key_type: KeyType,
) -> Result<PathBuf, TlsError> {
    check_name(name)?;
    let out = ca.cert(name);
    if out.exists() && !force {
        return Err(TlsError::Exists { path: out });
    }
    let (issuer, ca_key) = issuer(ca)?;
    let key = key_type.generate(name)?;
    let mut p = params(name, sans)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match kind {
        Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Any => Vec::new(),
    };
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer, &ca_key).map_err(gen_err(name))?;
    write(&ca.key(name), &key.serialize_pem(), true)?;
    write(&ca.public_key(name), &key.public_key_pem(), false)?;
    write(&out, &cert.pem(), false)?;
    Ok(out)
}

/// Makes a self-signed server certificate named `name` (its subject CN) with `sans`
/// as subject alternative names on a new P-256 key, and writes it to `cert` and the key
/// (mode 0600) to `key` — Keylime's agent identity: CN = agent UUID, SAN = its contact
/// address. Clients trust it by pinning the certificate itself (the verifier takes it
/// from the registrar's `mtls_cert`).
pub fn self_signed(name: &str, sans: &[String], cert: &Path, key: &Path) -> Result<(), TlsError> {
    let pair = KeyPair::generate().map_err(gen_err(name))?;
    let mut p = params(name, sans)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let made = p.self_signed(&pair).map_err(gen_err(name))?;
    write(key, &pair.serialize_pem(), true)?;
    write(cert, &made.pem(), false)
}

/// The self-signed certificate `keylime-policy sign runtime --backend x509` makes for its
/// signing key (Keylime's `dsse.x509.Signer.construct`), over the EC key `pkcs8_der`:
/// subject and issuer CN `dsse_lib`, the DNS SAN `dsse_lib`, a critical `cA = false`,
/// valid from a day ago for 30 days, a random serial. Returns the PEM. Keylime signs it
/// with SHA-256 whatever the curve; rcgen uses the curve's own hash (SHA-384 for P-384,
/// SHA-512 for P-521), which no DSSE verifier looks at: they only take the key.
pub fn dsse_certificate(pkcs8_der: &[u8]) -> Result<String, TlsError> {
    const NAME: &str = "dsse_lib";
    let pair = KeyPair::try_from(pkcs8_der).map_err(gen_err(NAME))?;
    let mut p = CertificateParams::new(vec![NAME.to_owned()]).map_err(gen_err(NAME))?;
    p.distinguished_name.push(DnType::CommonName, NAME);
    p.is_ca = IsCa::ExplicitNoCa;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(30);
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(p.self_signed(&pair).map_err(gen_err(NAME))?.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_the_keylime_layout_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cv_ca");
        let ca = init(&dir, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        for f in [
            "cacert.crt",
            "ca-private.pem",
            "server-cert.crt",
            "server-private.pem",
            "client-cert.crt",
            "client-private.pem",
        ] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ca.key("client"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            init(&dir, &[], false),
            Err(TlsError::Exists { .. })
        ));
        assert!(matches!(
            issue(&ca, "client", Kind::Client, &[], false),
            Err(TlsError::Exists { .. })
        ));
        assert!(issue(&ca, "../x", Kind::Client, &[], false).is_err());
        // The material loads into rustls both ways round.
        crate::server_config(
            &ca.cert("server"),
            &ca.key("server"),
            &[&ca.ca_cert()],
            crate::ClientAuth::Optional,
        )
        .unwrap();
        issue(&ca, "tenant-2", Kind::Client, &[], false).unwrap();
        crate::client_config(
            &ca.ca_cert(),
            Some((&ca.cert("tenant-2"), &ca.key("tenant-2"))),
        )
        .unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::pem_file_iter(ca.cert("tenant-2"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert!(crate::peer_subject(&der).unwrap().contains("CN=tenant-2"));
    }

    #[test]
    fn issued_certificates_name_the_ca_exactly() {
        use x509_cert::der::{DecodePem, Encode};
        use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
        let tmp = tempfile::tempdir().unwrap();
        let ca = init_ca(tmp.path(), false, KeyType::Rsa2048).unwrap();
        issue_with(&ca, "node", Kind::Any, &[], false, KeyType::Rsa2048).unwrap();
        let load =
            |path: PathBuf| x509_cert::Certificate::from_pem(std::fs::read(path).unwrap()).unwrap();
        let (root, leaf) = (load(ca.ca_cert()), load(ca.cert("node")));
        // Chain building compares the encoded names byte for byte.
        assert_eq!(
            leaf.tbs_certificate.issuer.to_der().unwrap(),
            root.tbs_certificate.subject.to_der().unwrap()
        );
        let (_, ski) = root
            .tbs_certificate
            .get::<SubjectKeyIdentifier>()
            .unwrap()
            .unwrap();
        let (_, aki) = leaf
            .tbs_certificate
            .get::<AuthorityKeyIdentifier>()
            .unwrap()
            .unwrap();
        assert_eq!(aki.key_identifier.unwrap(), ski.0);
        assert!(issuer_params("not a certificate").is_err());
    }
}
