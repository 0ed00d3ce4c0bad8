//! `--cert`: Keylime's certificate package. A CA directory (created on first use, RSA
//! 2048 like Keylime's `ca_util`) issues the node a key and certificate (CN = node id)
//! and a `RevocationNotifier` certificate; the node receives, as its encrypted payload,
//! an uncompressed zip of
//!
//! `<id>-public.pem`, `<id>-cert.crt`, `<id>-private.pem`, `cacert.crt`, `cacrl.der`,
//! `cacrl.pem`, `RevocationNotifier-cert.crt` and the files of `--include DIR`,
//!
//! and the verifier receives the `RevocationNotifier` private key to sign revocation
//! notices the node can check with that certificate.

use std::path::Path;

use anyhow::{bail, Context, Result};
use vigil_tls::ca::{self, CaDir, KeyType, Kind};

/// The revocation signer's certificate name (Keylime's).
pub(crate) const REVOCATION_NAME: &str = "RevocationNotifier";

/// A built certificate package.
#[derive(Debug, Clone)]
pub(crate) struct CertPackage {
    /// The zip archive (stored, no compression: the node unpacks it in a small tmpfs).
    pub(crate) zip: Vec<u8>,
    /// The PEM private key the verifier signs revocation notices with.
    pub(crate) revocation_key: String,
    /// `{"cert_serial": <int>, "subject": "<RFC 4514 subject>"}` of the node
    /// certificate, as JSON text (the serial may exceed 64 bits).
    pub(crate) metadata: String,
}

/// Creates the CA in `dir` unless it holds one, issues the node's and the revocation
/// notifier's certificates unless already issued, and builds the package.
pub(crate) fn build(dir: &Path, agent_id: &str, include: Option<&Path>) -> Result<CertPackage> {
    let ca = CaDir::new(dir);
    if !ca.ca_cert().exists() {
        ca::init_ca(dir, false, KeyType::Rsa2048).with_context(|| {
            format!(
                "cannot create the certificate package CA in {}",
                dir.display()
            )
        })?;
    } else if !ca.ca_key().exists() {
        bail!(
            "{} holds a CA certificate but no ca-private.pem: Vigil cannot issue from a Keylime \
             ca_util directory (its key is in the encrypted private.yml); use a new directory",
            dir.display()
        );
    }
    if !ca.crl_der().exists() || !ca.crl_pem().exists() {
        ca::write_crl(&ca, &[]).context("cannot write the CA's revocation list")?;
    }
    for name in [agent_id, REVOCATION_NAME] {
        if !ca.key(name).exists() || !ca.cert(name).exists() {
            ca::issue_with(
                &ca,
                name,
                Kind::Any,
                &[name.to_owned()],
                true,
                KeyType::Rsa2048,
            )
            .with_context(|| format!("cannot issue the '{name}' certificate"))?;
        }
    }
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let node_cert = read(ca.cert(agent_id))?;
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            format!("{agent_id}-public.pem"),
            read(ca.public_key(agent_id))?,
        ),
        (format!("{agent_id}-cert.crt"), node_cert.clone()),
        (format!("{agent_id}-private.pem"), read(ca.key(agent_id))?),
        ("cacert.crt".into(), read(ca.ca_cert())?),
        ("cacrl.der".into(), read(ca.crl_der())?),
        ("cacrl.pem".into(), read(ca.crl_pem())?),
        (
            format!("{REVOCATION_NAME}-cert.crt"),
            read(ca.cert(REVOCATION_NAME))?,
        ),
    ];
    if let Some(dir) = include {
        files.extend(include_files(dir)?);
    }
    let revocation_key = String::from_utf8(read(ca.key(REVOCATION_NAME))?)
        .context("the revocation key is not PEM text")?;
    Ok(CertPackage {
        zip: stored_zip(&files)?,
        revocation_key,
        metadata: cert_metadata(&node_cert)?,
    })
}

/// The regular files directly in `dir`, sorted by name (Keylime takes the top level
/// only).
fn include_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("--include: cannot read the directory {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("--include: {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            out.push((name, bytes));
        }
    }
    out.sort();
    Ok(out)
}

/// `{"cert_serial", "subject"}` of a PEM certificate, as Keylime's tenant sends in
/// `metadata`: the serial as an integer, the subject as RFC 4514 text.
pub(crate) fn cert_metadata(pem: &[u8]) -> Result<String> {
    use x509_cert::der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(pem).context("the node certificate is not PEM")?;
    // Python ints are unbounded and Vigil's serials are 127-bit, beyond serde_json's
    // numbers: the text is written directly, in json.dumps' layout.
    let serial = big_decimal(cert.tbs_certificate.serial_number.as_bytes());
    let subject = super::pyjson::dumps(&serde_json::Value::String(rfc4514(
        &cert.tbs_certificate.subject,
    )));
    Ok(format!(
        "{{\"cert_serial\": {serial}, \"subject\": {subject}}}"
    ))
}

/// The RFC 4514 text of a name as Python's `rfc4514_string`: last RDN first.
fn rfc4514(name: &x509_cert::name::Name) -> String {
    // x509-cert's Display already writes RFC 4514 order (reversed, comma-separated).
    name.to_string()
}

/// Big-endian unsigned bytes as decimal text.
fn big_decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0]; // little-endian base-10 digits
    for &b in bytes {
        let mut carry = u32::from(b);
        for d in &mut digits {
            let v = u32::from(*d) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// A zip archive of `files`, stored without compression, as Python's
/// `zipfile.ZipFile(..., compression=ZIP_STORED)` writes (no data descriptors, no
/// extra fields, DOS time 1980-01-01).
pub(crate) fn stored_zip(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    // Classic zip limits; the package is far below them (Keylime caps payloads at 1 MiB).
    if files.len() > 0xffff {
        bail!("too many files for a zip archive");
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    // 1980-01-01 00:00: day 1 | month 1 << 5 | year-1980 (0) << 9.
    let (dos_time, dos_date) = (0u16, (1u16 << 5) | 1);
    for (name, data) in files {
        let size = u32::try_from(data.len()).context("a file is too large for a zip archive")?;
        let name_len = u16::try_from(name.len()).context("a file name is too long")?;
        let offset = u32::try_from(out.len()).context("the archive is too large")?;
        let crc = crc32fast::hash(data);
        // UTF-8 names set bit 11, as Python does for non-ASCII names.
        let flags: u16 = if name.is_ascii() { 0 } else { 1 << 11 };
        // Local file header.
        le32(&mut out, 0x0403_4b50);
        le16(&mut out, 20); // version needed
        le16(&mut out, flags);
        le16(&mut out, 0); // stored
        le16(&mut out, dos_time);
        le16(&mut out, dos_date);
        le32(&mut out, crc);
        le32(&mut out, size);
        le32(&mut out, size);
        le16(&mut out, name_len);
        le16(&mut out, 0); // extra
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // Central directory entry.
        le32(&mut central, 0x0201_4b50);
        le16(&mut central, 0x0314); // made by: Unix, 2.0
        le16(&mut central, 20);
        le16(&mut central, flags);
        le16(&mut central, 0);
        le16(&mut central, dos_time);
        le16(&mut central, dos_date);
        le32(&mut central, crc);
        le32(&mut central, size);
        le32(&mut central, size);
        le16(&mut central, name_len);
        le16(&mut central, 0); // extra
        le16(&mut central, 0); // comment
        le16(&mut central, 0); // disk
        le16(&mut central, 0); // internal attributes
        le32(&mut central, 0o100_600 << 16); // regular file, rw-------
        le32(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).context("the archive is too large")?;
    let cd_size = u32::try_from(central.len()).context("the archive is too large")?;
    let count = u16::try_from(files.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&central);
    le32(&mut out, 0x0605_4b50);
    le16(&mut out, 0);
    le16(&mut out, 0);
    le16(&mut out, count);
    le16(&mut out, count);
    le32(&mut out, cd_size);
    le32(&mut out, cd_offset);
    le16(&mut out, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_of_big_endian_bytes() {
        assert_eq!(big_decimal(&[]), "0");
        assert_eq!(big_decimal(&[0]), "0");
        assert_eq!(big_decimal(&[1, 0]), "256");
        assert_eq!(big_decimal(&[0xff; 8]), u64::MAX.to_string());
        assert_eq!(
            big_decimal(&[
                0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff
            ]),
            i128::MAX.to_string()
        );
    }
}
