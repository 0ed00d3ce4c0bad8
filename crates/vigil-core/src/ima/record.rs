//! Writing measurement-list entries, the other way round from parsing: what an IMA
//! emulator (the agent's `--ima-emulate` mode) appends to its log and extends into
//! PCR 10, so that the log it serves replays exactly as a kernel's would.
//!
//! The line is built in the kernel's text form and parsed back with [`ImaEntry::parse`],
//! and its template data comes from [`ImaEntry::write_template_data`]: the bytes that
//! are hashed are the bytes a verifier rebuilds, by construction.

use super::entry::{EntryError, ImaEntry};
use crate::hash::{Digest, HashAlg};

/// Why an entry cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The name holds a newline (it would split the line) or is empty.
    #[error("cannot record {name:?}: an IMA name is non-empty and has no newline")]
    BadName {
        /// The name, as given.
        name: String,
    },
    /// The digest's length is not the algorithm's.
    #[error("a {alg} digest is {expected} bytes, got {got}")]
    DigestLength {
        /// The file digest's algorithm.
        alg: &'static str,
        /// Its length.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The line does not parse back (cannot happen for valid input; kept total).
    #[error("the written line does not parse: {0}")]
    Parse(#[from] EntryError),
}

/// One `ima-ng` entry: the ascii line and what it extends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaNgRecord {
    /// The line, without its trailing newline:
    /// `10 <log hash> ima-ng <alg>:<digest> <name>`.
    pub line: String,
    /// The template data the line stands for.
    pub template_data: Vec<u8>,
}

impl ImaNgRecord {
    /// The entry for `name` with file digest `digest` in `file_alg`, its template-hash
    /// column in `log_alg` (SHA-1 on every current kernel).
    pub fn new(
        file_alg: HashAlg,
        digest: &[u8],
        name: &str,
        log_alg: HashAlg,
    ) -> Result<Self, RecordError> {
        if name.is_empty() || name.contains('\n') {
            return Err(RecordError::BadName {
                name: name.to_owned(),
            });
        }
        if digest.len() != file_alg.digest_len() {
            return Err(RecordError::DigestLength {
                alg: file_alg.name(),
                expected: file_alg.digest_len(),
                got: digest.len(),
            });
        }
        let fields = format!("ima-ng {}:{} {name}", file_alg.name(), hex::encode(digest));
        // The template-hash column does not enter the template data, so a placeholder
        // (not all zeros, which would mean a violation) stands in while it is computed.
        let placeholder = format!("10 {} {fields}", "1".repeat(2 * log_alg.digest_len()));
        let template_data = ImaEntry::parse(&placeholder)?.template_data();
        let line = format!("10 {} {fields}", log_alg.hash(&template_data).to_hex());
        ImaEntry::parse(&line)?;
        Ok(Self {
            line,
            template_data,
        })
    }

    /// What this entry extends into PCR 10 of a `bank` bank.
    pub fn pcr_digest(&self, bank: HashAlg) -> Digest {
        bank.hash(&self.template_data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::{AcceptAll, ImaConfig, ImaReplay};

    #[test]
    fn records_replay_and_hash_check() {
        let a = ImaNgRecord::new(
            HashAlg::Sha256,
            HashAlg::Sha256.hash(b"file").as_bytes(),
            "/usr/bin/my tool",
            HashAlg::Sha1,
        )
        .unwrap();
        assert!(a.line.starts_with("10 "));
        assert!(a.line.contains(" ima-ng sha256:"), "{}", a.line);
        assert!(a.line.ends_with(" /usr/bin/my tool"), "{}", a.line);
        let mut expected = HashAlg::Sha256.zero();
        expected = HashAlg::Sha256.extend(&expected, &a.pcr_digest(HashAlg::Sha256));
        let mut replay = ImaReplay::new(
            ImaConfig::new(HashAlg::Sha256),
            None,
            Some(expected),
            AcceptAll,
        );
        replay.feed_text(&format!("{}\n", a.line));
        assert_eq!(replay.running_pcr(), expected);
        let verdict = replay.finish();
        assert!(verdict.is_ok(), "{verdict:?}");
        assert_eq!(
            ImaNgRecord::new(HashAlg::Sha256, &[1, 2], "/x", HashAlg::Sha1),
            Err(RecordError::DigestLength {
                alg: "sha256",
                expected: 32,
                got: 2
            })
        );
        assert!(matches!(
            ImaNgRecord::new(HashAlg::Sha1, &[0; 20], "a\nb", HashAlg::Sha1),
            Err(RecordError::BadName { .. })
        ));
    }
}
