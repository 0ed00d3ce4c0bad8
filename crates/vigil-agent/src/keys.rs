//! The agent's own keys, kept in the state directory across restarts:
//!
//! - the node key (NK): RSA-2048, the payload key Keylime calls `payload-private.pem`;
//!   its public PEM is what `keys/pubkey` serves and what PCR 16 is bound to;
//! - the AK blob from `vigil-tpm` (`ak.json`), reloaded when EK and algorithms match;
//! - the server certificate: self-signed P-256, CN = UUID, SAN = contact address.

use std::path::{Path, PathBuf};

use base64::Engine;
use der::pem::LineEnding;
use serde_json::{json, Value};
use vigil_core::payload::NodePrivateKey;
use vigil_tpm::AkBlob;

/// The NK's file name in the state directory.
pub const NK_FILE: &str = "payload-private.pem";
/// The AK blob's file name in the state directory.
pub const AK_FILE: &str = "ak.json";

/// Why a key cannot be loaded or made; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable key or blob.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key generation failed.
    #[error("cannot generate the node key: {0}")]
    Generate(String),
    /// The server certificate cannot be made.
    #[error("server certificate: {0}")]
    Tls(#[from] vigil_tls::TlsError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a private file with mode 0600 from the start.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

/// The node key and the exact PEM text of its public half.
#[derive(Clone)]
pub struct NodeKey {
    /// The private key (decrypts U and V, in aws-lc: constant time).
    pub private: NodePrivateKey,
    /// `-----BEGIN PUBLIC KEY-----` SPKI PEM: served as `pubkey`, hashed into PCR 16.
    pub public_pem: String,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public_pem", &self.public_pem)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Loads the NK (PKCS#8 PEM) from `path`, or makes an RSA-2048 one and writes it
    /// there.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let bad = |message: String| KeyError::Malformed {
            path: path.to_owned(),
            message,
        };
        let private = if path.exists() {
            let text = std::fs::read_to_string(path).map_err(io(path))?;
            let der = match der::pem::decode_vec(text.trim().as_bytes()) {
                Ok(("PRIVATE KEY", der)) => der,
                Ok((label, _)) => return Err(bad(format!("a {label} block, not PRIVATE KEY"))),
                Err(e) => return Err(bad(format!("not PEM: {e}"))),
            };
            NodePrivateKey::from_pkcs8_der(&der)
                .map_err(|e| bad(format!("not a PKCS#8 RSA private key: {e}")))?
        } else {
            use aws_lc_rs::encoding::AsDer;
            let generate = |e: aws_lc_rs::error::Unspecified| KeyError::Generate(e.to_string());
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(generate)?;
            let der = pair.as_der().map_err(generate)?;
            let key = NodePrivateKey::from_pkcs8_der(der.as_ref())
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            write_private(path, pem("PRIVATE KEY", der.as_ref())?.as_bytes())?;
            key
        };
        let spki = private
            .public_key_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Self {
            public_pem: pem("PUBLIC KEY", &spki)?,
            private,
        })
    }
}

/// PEM with 64-column lines and LF endings (what the `rsa` crate wrote before, so the
/// public PEM, which PCR 16 binds, is the same text for an existing key).
fn pem(label: &'static str, der: &[u8]) -> Result<String, KeyError> {
    der::pem::encode_string(label, LineEnding::LF, der)
        .map_err(|e| KeyError::Generate(e.to_string()))
}

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Reads a persisted AK blob; `None` when there is none.
pub fn load_ak(path: &Path) -> Result<Option<AkBlob>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let bad = |message: String| KeyError::Malformed {
        path: path.to_owned(),
        message,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad(format!("{name} missing or not base64")))
    };
    Ok(Some(AkBlob {
        public: field("public")?,
        private: field("private")?,
        ek_name: field("ek_name")?,
    }))
}

/// Persists an AK blob.
pub fn save_ak(path: &Path, blob: &AkBlob) -> Result<(), KeyError> {
    let v = json!({
        "public": B64.encode(&blob.public),
        "private": B64.encode(&blob.private),
        "ek_name": B64.encode(&blob.ek_name),
    });
    write_private(path, v.to_string().as_bytes())
}

/// Makes the server certificate and key unless both exist.
pub fn ensure_server_cert(
    uuid: &str,
    contact: &str,
    cert: &Path,
    key: &Path,
) -> Result<bool, KeyError> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    vigil_tls::ca::self_signed(uuid, &[contact.to_owned()], cert, key)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nk_and_ak_persist() {
        let dir = tempfile::tempdir().unwrap();
        let nk_path = dir.path().join(NK_FILE);
        let a = NodeKey::load_or_create(&nk_path).unwrap();
        let b = NodeKey::load_or_create(&nk_path).unwrap();
        assert_eq!(a.public_pem, b.public_pem);
        assert!(a.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        // A key written by earlier versions (the `rsa` crate's PKCS#8 PEM) loads, and
        // its public PEM is the text they served, so PCR 16 stays bound to it.
        {
            use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
            let text = std::fs::read_to_string(&nk_path).unwrap();
            let old = rsa::RsaPrivateKey::from_pkcs8_pem(&text).unwrap();
            let old_path = dir.path().join("old-nk.pem");
            std::fs::write(
                &old_path,
                old.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap();
            let old_pem = old
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap();
            assert_eq!(
                NodeKey::load_or_create(&old_path).unwrap().public_pem,
                old_pem
            );
            assert_eq!(a.public_pem, old_pem);
        }
        std::fs::write(
            &nk_path,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            NodeKey::load_or_create(&nk_path),
            Err(KeyError::Malformed { .. })
        ));
        let ak = dir.path().join(AK_FILE);
        assert_eq!(load_ak(&ak).unwrap(), None);
        let blob = AkBlob {
            public: vec![1, 2],
            private: vec![3],
            ek_name: vec![4, 5, 6],
        };
        save_ak(&ak, &blob).unwrap();
        assert_eq!(load_ak(&ak).unwrap(), Some(blob));
        std::fs::write(&ak, "{}").unwrap();
        assert!(load_ak(&ak).is_err());
    }
}
