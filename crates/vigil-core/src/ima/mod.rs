//! The Linux IMA measurement list: parsing `ascii_runtime_measurements`, rebuilding
//! template data as the kernel does, replaying PCR 10 and validating entries against a
//! runtime policy with Keylime's semantics and event ids.
//!
//! # The model
//!
//! IMA measures files (and buffers such as keys) and, for each measurement, builds a
//! *template*: a short record whose fields depend on the template in use (`ima`,
//! `ima-ng`, `ima-sig`, `ima-buf`). The kernel hashes that record's bytes — the
//! *template data* — and extends the hash into PCR 10 of every active TPM bank, each
//! bank with its own algorithm. The ascii list shows one line per record: the PCR, the
//! record's hash in the *log* algorithm (SHA-1 on current kernels, whatever the bank),
//! the template name and the fields in text form.
//!
//! A verifier therefore:
//! 1. parses each line ([`ImaEntry::parse`], zero-copy);
//! 2. rebuilds the template data from the text fields ([`ImaEntry::write_template_data`]:
//!    little-endian length prefixes, `alg:` followed by a NUL before the digest, a NUL
//!    after the name, the legacy `ima` name padded to 256 bytes);
//! 3. checks that the log-algorithm hash of those bytes equals the template-hash column
//!    (`ima.validation.ima_hash`), so the text cannot say anything the hash does not;
//! 4. extends the bank-algorithm hash of the same bytes into a running value
//!    `R := Hbank(R ‖ Hbank(data))`;
//! 5. compares `R` with the quoted PCR 10 and checks each entry against the policy
//!    through an [`EntryValidator`].
//!
//! # The 0x00 / 0xff quirk
//!
//! When IMA records a *violation* (a file measured while open for writing, or opened
//! for writing while measured — "ToMToU"), it writes a template hash of all zeros into
//! the log but extends all ones (`0xff…`, bank size) into the PCR. Replay must do the
//! same, and such an entry is neither hash-checked nor validated against the policy.
//! Only an all-zero column of exactly the log algorithm's length counts. Keylime also
//! skips the check for a column that is literally all `0xff`, while extending that
//! entry's real hash; that is reproduced too.
//!
//! # Matching the quote
//!
//! IMA appends to the log and extends the PCR without atomicity, and the agent reads the
//! log after quoting, so the log may run ahead of the quote. The quoted PCR 10 is
//! accepted if it equals `R` after *any* prefix of the batch, the empty prefix included
//! ([`ImaVerdict::pcr_match`] says how many lines that was). Every line is still
//! validated; failures do not stop processing.
//!
//! # Incremental attestation
//!
//! [`ImaAttestState`] is what the verifier keeps per agent between polls. It asks for
//! entries from `next_entry` on; a batch starting at 0 resets it; a batch starting
//! elsewhere than requested is the irrecoverable `qoute_validation.invalid_ima_entry_nb`
//! ([`ImaAttestState::begin_batch`]). When the quote matched after `k` lines the state
//! advances by `k` and remembers `R_k`, so the lines after `k` come again next time.
//! Any IMA failure resets the state so that the whole log is fetched and replayed
//! again. Quote progress (`ima.quote_progress`) catches a PCR that keeps lagging.
//!
//! # Performance
//!
//! The replay loop allocates nothing per entry: lines are parsed in place, hex is
//! validated and located in one pass and decoded straight into a reused template buffer,
//! and SHA-1/SHA-256 messages are padded once and fed to the hash crates' block
//! functions. Hashing dominates what is left (`benches/ima.rs`).
//!
//! # Where Vigil knowingly differs from Keylime
//!
//! Only inputs no kernel produces: a digest over 64 bytes, an `ima` name over 255 bytes
//! (Keylime crashes with an internal error on it), non-ASCII text in hex fields (CPython
//! maps Unicode digits to ASCII) and a non-numeric PCR column on the line where the quote
//! matches (Keylime raises) are all plain parse errors or plain `ima_pcr` failures here.
//! Without a quoted PCR no quote-progress check is made (Keylime would compare a match
//! line of -1).

mod fasthash;
mod hex;

pub mod entry;
pub mod keyring;
pub mod reader;
pub mod record;
pub mod replay;
pub mod signature;
pub mod template;
pub mod validate;

pub use entry::{
    EntryError, Field, FileDigest, HexBytes, ImaEntry, LineError, Template, TemplateHash,
};
pub use hex::HexError;
pub use reader::{process_reader, ImaLine, ImaLogReader, ReadError, DEFAULT_MAX_LINE};
pub use record::{ImaNgRecord, RecordError};
pub use replay::{
    process_measurement_list, AcceptAll, BatchStart, EntryValidator, EntryVerdict, ImaAttestState,
    ImaConfig, ImaCounts, ImaReplay, ImaVerdict, QuoteProgress, IMA_PCR,
};

#[cfg(test)]
mod tests;
