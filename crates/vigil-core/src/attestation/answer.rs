//! A node's answer to `GET /v2.x/quotes/integrity` (compat §1.5), read from its JSON
//! body into [`NodeAnswer`].
//!
//! The body is deserialised straight into the owned fields, with no intermediate JSON
//! tree: an answer can carry a first full IMA list of hundreds of megabytes, and a tree
//! of it plus copies of its strings cost several times the body. The IMA list is the
//! one large field; it is unescaped once into its `String`.

use serde::Deserialize;

use super::evaluate::QuoteAnswer;

/// The `results` of a `quotes/integrity` answer, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeAnswer {
    /// `quote`.
    pub quote: String,
    /// `pubkey`, absent in a partial answer.
    #[serde(default, rename = "pubkey")]
    pub public_key: Option<String>,
    /// `hash_alg`.
    #[serde(default, deserialize_with = "string_or_null")]
    pub hash_alg: String,
    /// `enc_alg`.
    #[serde(default, deserialize_with = "string_or_null")]
    pub enc_alg: String,
    /// `sign_alg`.
    #[serde(default, deserialize_with = "string_or_null")]
    pub sign_alg: String,
    /// `ima_measurement_list`.
    #[serde(default)]
    pub ima_measurement_list: Option<String>,
    /// `ima_measurement_list_entry` (0 when absent).
    #[serde(default, deserialize_with = "u64_or_null")]
    pub ima_measurement_list_entry: u64,
    /// `boottime` (0 when absent).
    #[serde(default, deserialize_with = "u64_or_null")]
    pub boottime: u64,
    /// `mb_measurement_list`: base64 of the binary UEFI event log.
    #[serde(default)]
    pub mb_measurement_list: Option<String>,
}

/// Why a node's answer body is unusable (Keylime's `exception` event).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The body is not the `{"code","status","results":{…}}` envelope, or a field of
    /// `results` has the wrong type; serde's message names the field and position.
    #[error("the answer is not a quote envelope: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Envelope {
    results: NodeAnswer,
}

fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn u64_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or_default())
}

impl NodeAnswer {
    /// Reads the node's answer body (`{"code","status","results":{…}}`).
    pub fn parse(body: &[u8]) -> Result<Self, AnswerError> {
        Ok(serde_json::from_slice::<Envelope>(body)?.results)
    }

    /// The answer as [`evaluate_round`](super::evaluate_round) reads it.
    pub fn as_quote_answer(&self) -> QuoteAnswer<'_> {
        QuoteAnswer {
            quote: &self.quote,
            public_key: self.public_key.as_deref(),
            hash_alg: &self.hash_alg,
            enc_alg: &self.enc_alg,
            sign_alg: &self.sign_alg,
            ima_measurement_list: self.ima_measurement_list.as_deref(),
            ima_measurement_list_entry: self.ima_measurement_list_entry,
            boottime: self.boottime,
            mb_measurement_list: self.mb_measurement_list.as_deref(),
        }
    }

    /// How many IMA entries the answer carries (for logs).
    pub fn ima_entries(&self) -> usize {
        self.ima_measurement_list
            .as_deref()
            .map_or(0, |l| memchr::memchr_iter(b'\n', l.as_bytes()).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keylimes_envelope_with_nulls_and_absent_fields() {
        let body = br#"{"code":200,"status":"Success","results":{
            "quote":"rAAA:BBB:CCC","pubkey":null,"hash_alg":"sha256","enc_alg":"rsa",
            "sign_alg":"rsassa","ima_measurement_list":"a\nb\n",
            "ima_measurement_list_entry":null,"extra":[1,2]}}"#;
        let a = NodeAnswer::parse(body).unwrap();
        assert_eq!(a.quote, "rAAA:BBB:CCC");
        assert_eq!(a.public_key, None);
        assert_eq!(a.ima_measurement_list.as_deref(), Some("a\nb\n"));
        assert_eq!((a.ima_measurement_list_entry, a.boottime), (0, 0));
        assert_eq!(a.ima_entries(), 2);
        assert_eq!(a.as_quote_answer().hash_alg, "sha256");
    }

    #[test]
    fn refuses_what_is_not_a_quote_envelope() {
        for bad in [
            &b"not json"[..],
            br#"{"results":[]}"#,
            br#"{"results":{}}"#,
            br#"{"results":{"quote":1}}"#,
            br#"{"results":{"quote":"r","boottime":-1}}"#,
            br#"{"results":{"quote":"r","hash_alg":{}}}"#,
            br#"{"code":200}"#,
        ] {
            assert!(
                NodeAnswer::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
