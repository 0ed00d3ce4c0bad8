//! What a registration request must satisfy before anything is stored (compat §2.3),
//! as pure functions of the request body and the configuration: decoding, the EK
//! certificate ↔ `ek_tpm` match, the malformed-certificate policy, the IAK/IDevID
//! identity (keys ↔ certificates, certificate trust, the AK certified by the IAK),
//! and, beyond Keylime, EK certificate trust (`require_ek_cert`) and the AK's
//! attributes.
//!
//! Every refusal is a [`FieldError`] naming the request field, which the service
//! turns into a 400.

use base64::Engine;
use serde_json::{Map, Value};
use vigil_core::tpm::certify::verify_ak_certification;
use vigil_core::tpm::ek_cert::{self, EkCert, EkCertStore};
use vigil_core::tpm::public::{attributes, TpmPublic};
use vigil_core::tpm::quote::AkPublicKey;
use vigil_store::Registration;

use crate::config::MalformedCertAction;

/// Longest agent id (Keylime's `registrarmain.agent_id` is `String(80)`).
pub(crate) const MAX_AGENT_ID: usize = 80;
/// Longest `ip` value kept (a host name at most).
const MAX_IP: usize = 255;

/// A request field that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub(crate) struct FieldError {
    /// The JSON field.
    pub(crate) field: &'static str,
    /// What is wrong, phrased to follow the field name.
    pub(crate) message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// The registration checks the configuration turns on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checks {
    pub(crate) malformed_cert_action: MalformedCertAction,
    /// The vendor CAs (`tpm_cert_store`), when configured: EK certificates are checked
    /// against it under `require_ek_cert`, IAK and IDevID certificates always.
    pub(crate) trust_store: Option<std::sync::Arc<EkCertStore>>,
    /// Require an EK certificate trusted by `trust_store`.
    pub(crate) require_ek_cert: bool,
    pub(crate) check_ak_attributes: bool,
}

/// A request that passed every check: the record to store (without the challenge
/// key), the parsed keys for MakeCredential, and warnings to log.
#[derive(Debug)]
pub(crate) struct Validated {
    pub(crate) registration: Registration,
    pub(crate) ek: TpmPublic,
    pub(crate) ak: TpmPublic,
    pub(crate) warnings: Vec<String>,
}

/// Agent ids are what Keylime's agents accept (`[\w.-]+`, ASCII here), at most
/// [`MAX_AGENT_ID`] characters, and not made only of dots: every HTTP client rewrites
/// `.` and `..` in a path, so such a record could never be read or deleted again.
pub(crate) fn check_agent_id(id: &str) -> Result<(), FieldError> {
    if id.is_empty() || id.len() > MAX_AGENT_ID {
        return Err(err(
            "agent_id",
            format!("must be 1 to {MAX_AGENT_ID} characters"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(err(
            "agent_id",
            "may contain only letters, digits, '_', '.' and '-'",
        ));
    }
    if id.bytes().all(|b| b == b'.') {
        return Err(err("agent_id", "must not be made only of dots"));
    }
    Ok(())
}

/// An activation's `auth_tag` must be hex (an HMAC): a malformed one is the caller's
/// error, refused with the registration kept, where a well-formed wrong one deletes it
/// (Keylime's rule).
pub(crate) fn check_auth_tag_format(tag: &str) -> Result<(), FieldError> {
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err("auth_tag", "must be a hex string"));
    }
    Ok(())
}

/// No key or string in the request may hold a NUL character: none is meaningful, and
/// PostgreSQL cannot store one in text (the registration would fail as a server error).
fn check_no_nul(body: &Map<String, Value>) -> Result<(), FieldError> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    match body.iter().find(|(k, v)| k.contains('\0') || has_nul(v)) {
        Some((k, _)) => Err(err(
            "request",
            format!(
                "field {:?} must not contain a NUL character",
                k.replace('\0', "\\0")
            ),
        )),
        None => Ok(()),
    }
}

/// A string field: `None` when absent or null.
pub(crate) fn opt_str<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, FieldError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(field, "must be a string")),
    }
}

fn opt_b64(body: &Map<String, Value>, field: &'static str) -> Result<Option<Vec<u8>>, FieldError> {
    opt_str(body, field)?
        .map(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| err(field, format!("is not valid base64: {e}")))
        })
        .transpose()
}

fn tpm_public(field: &'static str, bytes: &[u8]) -> Result<TpmPublic, FieldError> {
    TpmPublic::parse_tpm2b(bytes).map_err(|e| {
        err(
            field,
            format!("must be a valid TPM2B_PUBLIC structure: {e}"),
        )
    })
}

/// Applies `malformed_cert_action` to a parsed certificate.
fn encoding(
    field: &'static str,
    cert: &EkCert,
    action: MalformedCertAction,
    warnings: &mut Vec<String>,
) -> Result<(), FieldError> {
    if cert.is_der() {
        return Ok(());
    }
    let issues = cert.der_issues().join("; ");
    match action {
        MalformedCertAction::Reject => Err(err(
            field,
            format!("is not strictly DER-encoded and malformed_cert_action is 'reject': {issues}"),
        )),
        MalformedCertAction::Warn => {
            warnings.push(format!(
                "{field} is not strictly DER-encoded, accepted as given (malformed_cert_action = warn): {issues}"
            ));
            Ok(())
        }
        MalformedCertAction::Ignore => Ok(()),
    }
}

/// A certificate field: PEM (first certificate of a bundle) or base64 DER. Returns
/// the first certificate and any further ones (an EK CA chain, as rk sends it).
fn cert_field(
    body: &Map<String, Value>,
    field: &'static str,
    action: MalformedCertAction,
    warnings: &mut Vec<String>,
) -> Result<Option<(EkCert, Vec<EkCert>)>, FieldError> {
    let Some(text) = opt_str(body, field)? else {
        return Ok(None);
    };
    let mut certs = EkCert::parse_all(text.as_bytes()).map_err(|e| {
        err(
            field,
            format!("must be a PEM or base64 DER certificate: {e}"),
        )
    })?;
    let first = certs.remove(0);
    encoding(field, &first, action, warnings)?;
    Ok(Some((first, certs)))
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn port(body: &Map<String, Value>) -> Result<Option<u16>, FieldError> {
    let bad = || err("port", "must be a port number (0-65535)");
    match body.get("port") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        // Keylime's Integer field also takes the number as a string.
        Some(Value::String(s)) => s.trim().parse::<u16>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// The AK attributes required when `check_ak_attributes` is on.
const AK_ATTRIBUTES: [(u32, &str); 3] = [
    (attributes::RESTRICTED, "restricted"),
    (attributes::FIXED_TPM, "fixedTPM"),
    (attributes::SIGN_ENCRYPT, "sign"),
];

/// A certificate's trust against the vendor store (Keylime's `verify_cert`, which
/// also accepts the chain certificates sent alongside).
fn trusted(
    field: &'static str,
    cert: &(EkCert, Vec<EkCert>),
    store: Option<&EkCertStore>,
) -> Result<(), FieldError> {
    let store = store.ok_or_else(|| {
        err(
            field,
            "cannot be checked: no tpm_cert_store is configured on this registrar",
        )
    })?;
    ek_cert::verify(&cert.0, &cert.1, store, None)
        .map(|_| ())
        .map_err(|e| {
            err(
                field,
                format!(
                    "must contain a certificate issued by a CA present in the trust store: {e}"
                ),
            )
        })
}

/// The IAK/IDevID identity of a registration (Keylime's `_check_iak_idevid` and the
/// presence rules of `_check_root_identity_presence`): both keys and both
/// certificates together, each key matching its certificate, both certificates
/// trusted, and the AK certified by the IAK (`iak_attest`, `iak_sign`).
struct DevId {
    iak_tpm: Vec<u8>,
    iak_cert: Vec<u8>,
    idevid_tpm: Vec<u8>,
    idevid_cert: Vec<u8>,
}

fn devid(
    agent_id: &str,
    body: &Map<String, Value>,
    ak: &TpmPublic,
    checks: &Checks,
    warnings: &mut Vec<String>,
) -> Result<Option<DevId>, FieldError> {
    let iak_bytes = opt_b64(body, "iak_tpm")?;
    let idevid_bytes = opt_b64(body, "idevid_tpm")?;
    let action = checks.malformed_cert_action;
    let iak_cert = cert_field(body, "iak_cert", action, warnings)?;
    let idevid_cert = cert_field(body, "idevid_cert", action, warnings)?;
    if iak_bytes.is_none() && idevid_bytes.is_none() && iak_cert.is_none() && idevid_cert.is_none()
    {
        return Ok(None);
    }
    // Keylime's presence rules: keys need both certificates, certificates need both keys.
    let (Some(iak_bytes), Some(idevid_bytes)) = (iak_bytes, idevid_bytes) else {
        let missing = if body.get("iak_tpm").is_some_and(|v| !v.is_null()) {
            "idevid_tpm"
        } else {
            "iak_tpm"
        };
        return Err(err(
            missing,
            "is required when an IDevID/IAK key or certificate is provided",
        ));
    };
    let (Some(iak_cert), Some(idevid_cert)) = (iak_cert, idevid_cert) else {
        let missing = if body.get("iak_cert").is_some_and(|v| !v.is_null()) {
            "idevid_cert"
        } else {
            "iak_cert"
        };
        return Err(err(
            missing,
            "is required when an IDevID/IAK key is provided",
        ));
    };
    let iak = tpm_public("iak_tpm", &iak_bytes)?;
    let idevid = tpm_public("idevid_tpm", &idevid_bytes)?;
    iak_cert.0.check_tpm_public(&iak).map_err(|e| {
        err(
            "iak_tpm",
            format!("must contain the same public key found in iak_cert ({e})"),
        )
    })?;
    idevid_cert.0.check_tpm_public(&idevid).map_err(|e| {
        err(
            "idevid_tpm",
            format!("must contain the same public key found in idevid_cert ({e})"),
        )
    })?;
    let store = checks.trust_store.as_deref();
    trusted("iak_cert", &iak_cert, store)?;
    trusted("idevid_cert", &idevid_cert, store)?;

    let (Some(attest), Some(sign)) = (opt_b64(body, "iak_attest")?, opt_b64(body, "iak_sign")?)
    else {
        return Err(err(
            "aik_tpm",
            "cannot be bound to the IAK because of a missing 'iak_attest' or 'iak_sign'",
        ));
    };
    let iak_key = AkPublicKey::from_spki_or_tpm2b(&iak_bytes)
        .map_err(|e| err("iak_tpm", format!("is not a usable signing key: {e}")))?;
    verify_ak_certification(&iak_key, ak, agent_id, &attest, &sign).map_err(|e| {
        err(
            "aik_tpm",
            format!("cannot be confirmed as having been created by the same TPM as the IAK: {e}"),
        )
    })?;
    Ok(Some(DevId {
        iak_tpm: iak_bytes,
        iak_cert: iak_cert.0.as_bytes().to_vec(),
        idevid_tpm: idevid_bytes,
        idevid_cert: idevid_cert.0.as_bytes().to_vec(),
    }))
}

/// Checks a registration body for `agent_id`.
pub(crate) fn validate(
    agent_id: &str,
    body: &Map<String, Value>,
    checks: &Checks,
) -> Result<Validated, FieldError> {
    check_agent_id(agent_id)?;
    check_no_nul(body)?;
    let mut warnings = Vec::new();

    let aik_bytes = opt_b64(body, "aik_tpm")?.ok_or_else(|| err("aik_tpm", "is required"))?;
    let ak = tpm_public("aik_tpm", &aik_bytes)?;
    if checks.check_ak_attributes {
        let missing: Vec<&str> = AK_ATTRIBUTES
            .iter()
            .filter(|(bit, _)| !ak.has_attributes(*bit))
            .map(|(_, name)| *name)
            .collect();
        if !missing.is_empty() || ak.has_attributes(attributes::DECRYPT) {
            let mut why = String::new();
            if !missing.is_empty() {
                why = format!("missing {}", missing.join(", "));
            }
            if ak.has_attributes(attributes::DECRYPT) {
                if !why.is_empty() {
                    why.push_str("; ");
                }
                why.push_str("has decrypt set");
            }
            return Err(err(
                "aik_tpm",
                format!("must be a restricted signing key fixed to its TPM ({why})"),
            ));
        }
    }

    let ek_bytes = opt_b64(body, "ek_tpm")?
        .ok_or_else(|| err("ek_tpm", "is required (this registrar needs an EK)"))?;
    let ek = tpm_public("ek_tpm", &ek_bytes)?;

    let ekcert = cert_field(body, "ekcert", checks.malformed_cert_action, &mut warnings)?;
    if let Some((cert, _)) = &ekcert {
        cert.check_tpm_public(&ek).map_err(|e| {
            err(
                "ek_tpm",
                format!("must contain the same public key found in ekcert ({e})"),
            )
        })?;
    }
    if checks.require_ek_cert {
        let store = checks.trust_store.as_deref().ok_or_else(|| {
            err(
                "ekcert",
                "cannot be checked: no tpm_cert_store is configured",
            )
        })?;
        let (cert, chain) = ekcert
            .as_ref()
            .ok_or_else(|| err("ekcert", "is required by configuration (require_ek_cert)"))?;
        ek_cert::verify(cert, chain, store, None)
            .map_err(|e| err("ekcert", format!("is not trusted: {e}")))?;
    }
    let devid = devid(agent_id, body, &ak, checks, &mut warnings)?;

    let mtls_cert = match opt_str(body, "mtls_cert")? {
        Some("disabled") => Some("disabled".to_owned()),
        Some(_) => cert_field(
            body,
            "mtls_cert",
            checks.malformed_cert_action,
            &mut warnings,
        )?
        .map(|(c, _)| pem(c.as_bytes())),
        None => None,
    };
    let ip = opt_str(body, "ip")?.map(str::to_owned);
    if ip.as_ref().is_some_and(|ip| ip.len() > MAX_IP) {
        return Err(err("ip", format!("must be at most {MAX_IP} characters")));
    }

    Ok(Validated {
        registration: Registration {
            agent_id: agent_id.to_owned(),
            ek_tpm: Some(ek_bytes),
            ekcert: ekcert.map(|(c, _)| c.as_bytes().to_vec()),
            aik_tpm: aik_bytes,
            ip,
            port: port(body)?,
            mtls_cert,
            iak_tpm: devid.as_ref().map(|d| d.iak_tpm.clone()),
            iak_cert: devid.as_ref().map(|d| d.iak_cert.clone()),
            idevid_tpm: devid.as_ref().map(|d| d.idevid_tpm.clone()),
            idevid_cert: devid.map(|d| d.idevid_cert),
            ..Registration::default()
        },
        ek,
        ak,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILES: &str = "../../../shared/testdata/keylime/test-data/files";

    fn b64_file(name: &str) -> String {
        let bytes = std::fs::read(format!("{FILES}/{name}")).unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good() -> Map<String, Value> {
        body(
            json!({"ek_tpm": b64_file("ek.pub"), "aik_tpm": b64_file("ak.pub"),
                    "ip": "127.0.0.1", "port": 9002}),
        )
    }

    fn checks() -> Checks {
        Checks {
            check_ak_attributes: true,
            ..Checks::default()
        }
    }

    #[test]
    fn keylime_test_keys_pass() {
        let v = validate("agent-1", &good(), &checks()).unwrap();
        assert_eq!(v.registration.port, Some(9002));
        assert_eq!(v.ak.name().len(), 34);
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("aik_tpm", Value::Null, "is required"),
            ("aik_tpm", json!("%%%"), "base64"),
            ("aik_tpm", json!("AAAA"), "TPM2B_PUBLIC"),
            ("aik_tpm", json!(5), "must be a string"),
            ("ek_tpm", json!("!"), "base64"),
            ("ek_tpm", json!("AAECAwQFBgcICQ=="), "TPM2B_PUBLIC"),
            ("ekcert", json!("not a cert"), "certificate"),
            ("port", json!(70000), "port number"),
            ("port", json!("x"), "port number"),
            ("mtls_cert", json!("garbage"), "certificate"),
            ("iak_cert", json!("not a cert"), "certificate"),
        ];
        for (field, value, expect) in cases {
            let mut b = good();
            b.insert(field.to_owned(), value.clone());
            let e = validate("a", &b, &checks()).unwrap_err();
            assert_eq!(e.field, field, "{field}={value}: {e}");
            assert!(e.message.contains(expect), "{field}={value}: {e}");
        }
        for (field, value) in [
            ("ip", json!("a\u{0}")),
            ("x\u{0}", json!(1)),
            ("ip", json!({"a": ["\u{0}"]})),
        ] {
            let mut b = good();
            b.insert(field.to_owned(), value);
            let e = validate("a", &b, &checks()).unwrap_err();
            assert_eq!(e.field, "request", "{e}");
            assert!(e.message.contains("NUL"), "{e}");
        }
        for id in ["", "a/b", "ä", &"x".repeat(81), ".", "..", "..."] {
            assert_eq!(
                validate(id, &good(), &checks()).unwrap_err().field,
                "agent_id"
            );
        }
    }

    #[test]
    fn auth_tags_must_be_hex() {
        assert!(check_auth_tag_format("00ff").is_ok());
        assert!(check_auth_tag_format(&"aB".repeat(48)).is_ok());
        for bad in ["", "xyz", "00 ff", "0x00", "ä"] {
            assert_eq!(check_auth_tag_format(bad).unwrap_err().field, "auth_tag");
        }
    }

    #[test]
    fn iak_and_idevid_come_together_with_certificates_and_a_certification() {
        let ak = b64_file("ak.pub");
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!({"iak_tpm": ak}), "idevid_tpm", "is required"),
            (json!({"idevid_tpm": ak}), "iak_tpm", "is required"),
            (
                json!({"iak_tpm": ak, "idevid_tpm": ak}),
                "iak_cert",
                "is required",
            ),
            (json!({"iak_tpm": "!!"}), "iak_tpm", "base64"),
            (
                json!({"iak_tpm": "AAAA", "idevid_tpm": "AAAA", "iak_cert": "x"}),
                "iak_cert",
                "certificate",
            ),
        ];
        for (extra, field, expect) in cases {
            let mut b = good();
            b.extend(extra.as_object().unwrap().clone());
            let e = validate("a", &b, &checks()).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.message.contains(expect), "{extra}: {e}");
        }
        // Without IAK/IDevID fields nothing of them is stored.
        let v = validate("a", &good(), &checks()).unwrap();
        assert_eq!(v.registration.iak_tpm, None);
        assert_eq!(v.registration.idevid_cert, None);
    }

    #[test]
    fn ak_attributes_are_checked_unless_disabled() {
        // The EK is a restricted decryption key: not an AK.
        let mut b = good();
        b.insert("aik_tpm".into(), json!(b64_file("ek.pub")));
        let e = validate("a", &b, &checks()).unwrap_err();
        assert_eq!(e.field, "aik_tpm");
        assert!(
            e.message.contains("missing sign") && e.message.contains("decrypt"),
            "{e}"
        );
        let lax = Checks {
            check_ak_attributes: false,
            ..Checks::default()
        };
        validate("a", &b, &lax).unwrap();
    }
}
