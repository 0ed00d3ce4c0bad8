//! Keylime's signed revocation notices.
//!
//! When a node fails attestation the verifier tells other parties (nodes, webhooks) in a
//! notice: a JSON object serialised to the string `msg`, and `signature` = base64
//! RSA-PSS (MGF1-SHA-256, maximum salt length) over SHA-256 of the `msg` bytes, made with
//! the `RevocationNotifier` key from the tenant's certificate package. A receiver acts
//! only on a notice whose signature verifies with the `RevocationNotifier` certificate.
//!
//! Signing is a private-key operation on a long-lived key, so it runs in aws-lc
//! ([`RevocationKey`]), whose RSA is constant time; the `rsa` crate's is not
//! (RUSTSEC-2023-0071). aws-lc draws the PSS salt from its own generator, which cannot
//! be seeded: a notice's signature is the one output of this crate that a test cannot
//! reproduce, so tests check signatures by verifying them. Verification is a public-key
//! operation and stays on the `rsa` crate, which also takes keys smaller than aws-lc's
//! 2048-bit minimum.

use base64::Engine;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// Why a notice was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The notice carries no signature (Keylime sends `""` when it has no key).
    #[error("the revocation notice is not signed")]
    Unsigned,
    /// The signature is not base64 or does not verify.
    #[error("invalid revocation notice signature")]
    BadSignature,
    /// `msg` is not a JSON object.
    #[error("the revocation notice's msg is not a JSON object: {0}")]
    Message(String),
    /// The certificate or key cannot be used.
    #[error("revocation certificate: {0}")]
    Key(String),
}

/// The notice as it travels: `{"msg": "<JSON text>", "signature": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationNotice {
    /// The message, a JSON object serialised to text (signed as these exact bytes).
    pub msg: String,
    /// Base64 RSA-PSS signature of `msg`, or empty.
    #[serde(default)]
    pub signature: String,
}

/// The content of a notice, as Keylime's verifier writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationMessage {
    /// `revocation` (attestation failed) or `comm_error` (the node stopped answering).
    #[serde(rename = "type")]
    pub kind: String,
    /// The failing node's address.
    pub ip: Value,
    /// The failing node.
    pub agent_id: String,
    /// The failing node's port.
    pub port: Value,
    /// Its `tpm_policy` (JSON text).
    pub tpm_policy: Value,
    /// Its tenant-supplied metadata (JSON text).
    pub meta_data: Value,
    /// When, in `time.asctime()` form (`Mon Aug  3 08:08:39 2026`).
    pub event_time: String,
    /// The highest-severity failure event, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Its severity label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_label: Option<String>,
    /// Its context, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// RSA-PSS over SHA-256 with MGF1-SHA-256 and the longest salt the key allows
/// (`emLen - hLen - 2`, Python's `PSS.MAX_LENGTH`), as Keylime signs notices.
static NOTICE_PSS: aws_lc_rs::signature::RsaSignatureEncoding =
    aws_lc_rs::signature::RSA_PSS_SHA256
        .with_pss_salt_length(aws_lc_rs::signature::RsaPssSaltLength::Max);

/// The `RevocationNotifier` private key that signs notices (Keylime's
/// `revocation_key`): RSA, 2048 to 8192 bits.
pub struct RevocationKey(aws_lc_rs::signature::RsaKeyPair);

impl std::fmt::Debug for RevocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "RevocationKey(RSA-{})", self.0.public_modulus_len() * 8)
    }
}

impl RevocationKey {
    /// A PEM RSA private key, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), as
    /// Keylime's tenant sends it.
    pub fn from_pem(pem: &str) -> Result<Self, RevocationError> {
        let bad = |e: String| RevocationError::Key(format!("not a PEM RSA private key: {e}"));
        let (label, der) =
            der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
        let pair = match label {
            "PRIVATE KEY" => aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => aws_lc_rs::signature::RsaKeyPair::from_der(&der),
            other => return Err(bad(format!("a {other} block"))),
        };
        pair.map(Self).map_err(|e| bad(e.to_string()))
    }

    /// An RSA private key in PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, RevocationError> {
        aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der)
            .map(Self)
            .map_err(|e| RevocationError::Key(format!("not a usable RSA private key: {e}")))
    }

    /// The public half, which verifies this key's notices.
    pub fn public_key(&self) -> Result<rsa::RsaPublicKey, RevocationError> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::KeyPair;
        let der: aws_lc_rs::encoding::PublicKeyX509Der<'_> = self
            .0
            .public_key()
            .as_der()
            .map_err(|_| RevocationError::Key("cannot encode the public key".into()))?;
        public_key(der.as_ref())
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, RevocationError> {
        let mut sig = vec![0; self.0.public_modulus_len()];
        // The random-number argument is unused by aws-lc; it draws the salt itself.
        self.0
            .sign(
                &NOTICE_PSS,
                &aws_lc_rs::rand::SystemRandom::new(),
                msg,
                &mut sig,
            )
            .map_err(|_| RevocationError::Key("RSA-PSS signing failed".into()))?;
        Ok(sig)
    }
}

impl RevocationNotice {
    /// Serialises `message` and signs it with `key` (no key: an unsigned notice, as
    /// Keylime sends when the node has no certificate package).
    pub fn sign(
        message: &RevocationMessage,
        key: Option<&RevocationKey>,
    ) -> Result<Self, RevocationError> {
        let msg =
            serde_json::to_string(message).map_err(|e| RevocationError::Message(e.to_string()))?;
        let signature = match key {
            None => String::new(),
            Some(key) => B64.encode(key.sign(msg.as_bytes())?),
        };
        Ok(Self { msg, signature })
    }

    /// Verifies the signature with the `RevocationNotifier` public key and returns the
    /// message object (what revocation actions receive).
    pub fn verify(&self, key: &rsa::RsaPublicKey) -> Result<Value, RevocationError> {
        let sig = self.signature.trim();
        if sig.is_empty() || sig == "none" {
            return Err(RevocationError::Unsigned);
        }
        let sig = B64.decode(sig).map_err(|_| RevocationError::BadSignature)?;
        let digest = crate::HashAlg::Sha256.hash(self.msg.as_bytes());
        key.verify(pss_max_salt(key), digest.as_bytes(), &sig)
            .map_err(|_| RevocationError::BadSignature)?;
        match serde_json::from_str::<Value>(&self.msg) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(other) => Err(RevocationError::Message(format!("found {other}"))),
            Err(e) => Err(RevocationError::Message(e.to_string())),
        }
    }
}

/// RSA-PSS with SHA-256 and the longest salt the key allows (`PSS.MAX_LENGTH`):
/// `emLen - hLen - 2` with `emLen = ⌈(modBits - 1) / 8⌉`.
fn pss_max_salt(key: &impl PublicKeyParts) -> rsa::Pss {
    let em_len = (key.n().bits() + 6) / 8;
    rsa::Pss::new_with_salt::<sha2::Sha256>(em_len.saturating_sub(32 + 2))
}

/// The RSA public key of a PEM or DER certificate (the `RevocationNotifier`
/// certificate), or of a PEM/DER SubjectPublicKeyInfo.
pub fn public_key(cert_or_key: &[u8]) -> Result<rsa::RsaPublicKey, RevocationError> {
    use der::{Decode, DecodePem, Encode};
    let bad = |e: String| RevocationError::Key(e);
    let spki_der = if let Ok(cert) = x509_cert::Certificate::from_pem(cert_or_key)
        .or_else(|_| x509_cert::Certificate::from_der(cert_or_key))
    {
        cert.tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| bad(e.to_string()))?
    } else {
        match std::str::from_utf8(cert_or_key) {
            Ok(text) if text.contains("-----BEGIN") => der::pem::decode_vec(text.trim().as_bytes())
                .map(|(_, d)| d)
                .map_err(|e| bad(e.to_string()))?,
            _ => cert_or_key.to_vec(),
        }
    };
    rsa::RsaPublicKey::from_public_key_der(&spki_der)
        .map_err(|e| bad(format!("not an RSA certificate or public key: {e}")))
}

/// `time.asctime()` of a Unix time, in UTC: `Mon Aug  3 08:08:39 2026`. A time outside
/// the years -9999 to 9999 is given as its number of seconds.
pub fn asctime(unix_seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix_seconds) else {
        return format!("{unix_seconds} s since 1970-01-01T00:00:00Z");
    };
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RK: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/rust-keylime/keylime-agent/test-data/"
    );

    #[test]
    fn rust_keylimes_signed_message_verifies() {
        // rust-keylime's fixture: revocation.sig is the notice signature of test_ok.json
        // under test-cert.pem.
        let key = public_key(&std::fs::read(format!("{RK}test-cert.pem")).unwrap()).unwrap();
        let notice = RevocationNotice {
            msg: std::fs::read_to_string(format!("{RK}test_ok.json")).unwrap(),
            signature: std::fs::read_to_string(format!("{RK}revocation.sig")).unwrap(),
        };
        assert_eq!(notice.verify(&key).unwrap()["hello"], "there");
        let mut altered = notice.clone();
        altered.msg = altered.msg.replace("there", "where");
        assert_eq!(altered.verify(&key), Err(RevocationError::BadSignature));
        let unsigned = RevocationNotice {
            signature: String::new(),
            ..notice
        };
        assert_eq!(unsigned.verify(&key), Err(RevocationError::Unsigned));
    }

    /// A fresh 2048-bit key (aws-lc makes it in milliseconds even unoptimised).
    fn fresh_key() -> RevocationKey {
        use aws_lc_rs::encoding::AsDer;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        RevocationKey::from_pkcs8_der(pair.as_der().unwrap().as_ref()).unwrap()
    }

    #[test]
    fn signed_notices_round_trip_and_bind_every_byte() {
        let key = fresh_key();
        let message = RevocationMessage {
            kind: "revocation".into(),
            ip: "127.0.0.1".into(),
            agent_id: "d432fbb3".into(),
            port: 9002.into(),
            tpm_policy: "{}".into(),
            meta_data: "{}".into(),
            event_time: asctime(1_785_744_519),
            event_id: Some("ima.validation.ima-ng.not_in_allowlist".into()),
            severity_label: Some("emergency".into()),
            context: Some(r#"{"message": "File not found in allowlist: /bin/x"}"#.into()),
        };
        let notice = RevocationNotice::sign(&message, Some(&key)).unwrap();
        let got = notice.verify(&key.public_key().unwrap()).unwrap();
        assert_eq!(
            serde_json::from_value::<RevocationMessage>(got).unwrap(),
            message
        );
        let stranger = fresh_key();
        assert!(notice.verify(&stranger.public_key().unwrap()).is_err());
        let unsigned = RevocationNotice::sign(&message, None).unwrap();
        assert_eq!(unsigned.signature, "");
        // Not JSON inside a valid signature is still refused.
        let mut odd = RevocationNotice::sign(&message, Some(&key)).unwrap();
        odd.msg = "[1]".into();
        assert!(odd.verify(&key.public_key().unwrap()).is_err());
    }

    #[test]
    fn signatures_use_the_maximum_salt_length() {
        // Receivers (rust-keylime, Keylime's agent) verify with exactly the maximum salt
        // length, as `verify` does: aws-lc's default, a digest-length salt, must fail.
        let key = fresh_key();
        let public = key.public_key().unwrap();
        let msg = r#"{"type": "revocation"}"#;
        let notice = |sig: Vec<u8>| RevocationNotice {
            msg: msg.into(),
            signature: B64.encode(sig),
        };
        notice(key.sign(msg.as_bytes()).unwrap())
            .verify(&public)
            .unwrap();
        let mut default_salt = vec![0; key.0.public_modulus_len()];
        key.0
            .sign(
                &aws_lc_rs::signature::RSA_PSS_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                msg.as_bytes(),
                &mut default_salt,
            )
            .unwrap();
        assert_eq!(
            notice(default_salt).verify(&public),
            Err(RevocationError::BadSignature)
        );
    }

    #[test]
    fn revocation_keys_load_from_pkcs8_and_pkcs1_pem_only() {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        // rust-keylime's fixture key, PKCS#1, and the same key as PKCS#8.
        let pkcs1 = std::fs::read_to_string(format!("{RK}test-rsa.pem")).unwrap();
        let parsed = rsa::RsaPrivateKey::from_pkcs1_pem(&pkcs1).unwrap();
        let pkcs8 = parsed.to_pkcs8_pem(LineEnding::LF).unwrap();
        let a = RevocationKey::from_pem(&pkcs1).unwrap();
        let b = RevocationKey::from_pem(&pkcs8).unwrap();
        assert_eq!(a.public_key().unwrap(), parsed.to_public_key());
        assert_eq!(b.public_key().unwrap(), parsed.to_public_key());
        let cert = std::fs::read_to_string(format!("{RK}test-cert.pem")).unwrap();
        assert!(RevocationKey::from_pem(&cert).is_err());
        assert!(RevocationKey::from_pem("not a key").is_err());
    }

    #[test]
    fn asctime_matches_python() {
        // time.asctime(time.gmtime(t)) in Python.
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_785_744_519), "Mon Aug  3 08:08:39 2026");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(-1), "Wed Dec 31 23:59:59 1969");
        assert_eq!(
            asctime(i64::MAX),
            format!("{} s since 1970-01-01T00:00:00Z", i64::MAX)
        );
    }
}
