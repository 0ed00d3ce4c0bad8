//! PCR 10 replay, template-hash checks, quoted-PCR matching and incremental state: the
//! processing loop of Keylime's `process_measurement_list`, with validation of each
//! entry delegated to an [`EntryValidator`].
//!
//! Feed lines one at a time with [`ImaReplay::feed_line`] (streaming) or a whole batch
//! with [`ImaReplay::feed_text`] / [`process_measurement_list`], then call
//! [`ImaReplay::finish`] for the [`ImaVerdict`].

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::entry::{EntryError, ImaEntry, LineError, Template};
use super::fasthash::{self, PendingExtend, Raw};
use super::hex::py_bytes_repr;
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};

/// The PCR IMA extends, as Keylime's `config.IMA_PCR`.
pub const IMA_PCR: u32 = 10;

/// [`IMA_PCR`] as the text the PCR column must hold.
const IMA_PCR_TEXT: &str = "10";

/// At most this many typed parse errors are kept in a verdict; the count of all of them
/// is in [`ImaCounts::parse`] and every one has its `ima.parser.entry` event.
pub const MAX_KEPT_PARSE_ERRORS: usize = 64;

/// How a batch is replayed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImaConfig {
    /// The quoted PCR bank (`hash_alg` of the quote): each entry extends
    /// `Hbank(template data)`.
    pub bank: HashAlg,
    /// The algorithm of the template-hash column: the runtime policy's
    /// `ima.log_hash_alg`, `sha1` by default.
    pub log_hash_alg: HashAlg,
    /// The verifier's `ignore_tomtou_errors` option. Keylime adds a recoverable
    /// `ima.validation.tomtou` event for every violation entry only when it is **true**
    /// (the opposite of what its configuration comment says); with the default `false`
    /// violation entries pass silently.
    pub ignore_tomtou_errors: bool,
}

impl ImaConfig {
    /// Replay in `bank` with Keylime's defaults: SHA-1 template hashes, no ToMToU events.
    pub const fn new(bank: HashAlg) -> Self {
        Self {
            bank,
            log_hash_alg: HashAlg::Sha1,
            ignore_tomtou_errors: false,
        }
    }
}

/// What a policy check concluded about one entry, so counters can be kept. The
/// validator records the matching events itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryVerdict {
    /// The entry is allowed (digest in policy, or valid signature).
    Good,
    /// The entry matched the exclude list (or an ignored keyring) and was not checked.
    Excluded,
    /// The path or name is not in the policy (`not_in_allowlist`).
    NotFound,
    /// The path is known but its digest is not allowed (`runtime_policy_hash`).
    HashMismatch,
    /// A signature was present and did not verify, and nothing else allowed the entry.
    BadSignature,
    /// Any other failure (a bad key, a device-mapper rule, ...).
    Failed,
}

/// The per-entry policy hook: the lead's runtime-policy validator plugs in here.
///
/// It is called only for entries whose template hash checked out and that are not
/// violation (ToMToU) entries, exactly where Keylime calls its mode validators. It must
/// push any failure events into `failure` (the loop does not invent policy events) and
/// return the verdict for the counters.
pub trait EntryValidator {
    /// Checks one entry; `line_no` is its 1-based line number within the batch.
    fn validate(
        &mut self,
        entry: &ImaEntry<'_>,
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict;

    /// [`EntryValidator::validate`], given also the entry's file digest already decoded
    /// (the replay loop decodes it into the template data anyway). The replay loop calls
    /// this one; the default ignores `digest` and calls `validate`.
    #[inline]
    fn validate_decoded(
        &mut self,
        entry: &ImaEntry<'_>,
        digest: &[u8],
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        let _ = digest;
        self.validate(entry, line_no, failure)
    }
}

impl<V: EntryValidator + ?Sized> EntryValidator for &mut V {
    fn validate(
        &mut self,
        entry: &ImaEntry<'_>,
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        (**self).validate(entry, line_no, failure)
    }

    #[inline]
    fn validate_decoded(
        &mut self,
        entry: &ImaEntry<'_>,
        digest: &[u8],
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        (**self).validate_decoded(entry, digest, line_no, failure)
    }
}

/// A validator that accepts every entry: replay-only checks and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl EntryValidator for AcceptAll {
    fn validate(&mut self, _: &ImaEntry<'_>, _: usize, _: &mut Failure) -> EntryVerdict {
        EntryVerdict::Good
    }
}

/// Where the previous quote stood relative to the log it came with (Keylime's
/// `quote_progress`), to detect a PCR that never catches up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteProgress {
    /// Lines of that batch replayed when the quoted PCR matched.
    pub match_line: u64,
    /// Non-empty lines in that batch.
    pub log_length: u64,
}

/// The per-agent IMA state that survives between attestations (the IMA part of
/// Keylime's `AgentAttestState`).
///
/// Semantics, as in Keylime:
/// - a fresh state asks for entry 0 and replays from the bank's zero value;
/// - after the quoted PCR matched at line `k` of a batch, `next_entry += k` and
///   `running_pcr` is the value at that line; lines after `k` were checked but will be
///   sent (and checked) again next time;
/// - any IMA failure resets everything, so the next poll fetches the whole log again
///   (the caller must also forget what it learnt alongside, e.g. IMA keyrings, when
///   [`ImaVerdict::state_reset`] is set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImaAttestState {
    /// The entry number to ask the agent for next (`next_ima_ml_entry`).
    pub next_entry: u64,
    /// PCR 10 after entry `next_entry - 1`; `None` means the bank's zero value.
    pub running_pcr: Option<Digest>,
    /// The agent's boot time from the previous attestation (0 when unknown).
    pub boottime: u64,
    /// The previous quote's progress, if any.
    pub quote_progress: Option<QuoteProgress>,
}

/// How a batch's starting entry relates to the stored state (see
/// [`ImaAttestState::begin_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStart {
    /// The batch starts at entry 0: the state was reset and replay starts from zero.
    Fresh,
    /// The batch continues where the state left off.
    Continue,
    /// The agent sent a batch starting elsewhere than requested. Keylime records the
    /// irrecoverable `qoute_validation.invalid_ima_entry_nb` event and still goes on
    /// with the attestation using the unchanged state.
    UnexpectedEntry {
        /// The entry the state asked for.
        expected: u64,
        /// The entry the batch starts at.
        got: u64,
    },
    /// A continuation batch from an agent whose boot time changed: the state was reset
    /// and Keylime abandons this attestation *without* a failure, fetching the whole
    /// log next time.
    Rebooted,
}

impl BatchStart {
    /// The failure event Keylime records for this outcome, if any.
    pub fn failure_event(&self) -> Option<Event> {
        match *self {
            Self::UnexpectedEntry { expected, got } => Some(Event::new(
                Component::QuoteValidation,
                &[],
                "invalid_ima_entry_nb",
                json!({
                    "message": "Agent did not respond with requested next IMA measurement list entry",
                    "got": got,
                    "expected": expected,
                }),
                false,
            )),
            _ => None,
        }
    }

    /// False when Keylime stops this attestation here ([`BatchStart::Rebooted`]).
    pub fn should_process(&self) -> bool {
        !matches!(self, Self::Rebooted)
    }
}

impl ImaAttestState {
    /// A state that asks for the whole log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything: next time the whole log is replayed from zero.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Checks the entry number a batch starts at (`ima_measurement_list_entry`) and the
    /// agent's boot time before the batch is replayed, updating the state as Keylime's
    /// quote processing does.
    pub fn begin_batch(&mut self, start_entry: u64, boottime: u64) -> BatchStart {
        let outcome = if start_entry == 0 {
            self.reset();
            BatchStart::Fresh
        } else if start_entry != self.next_entry {
            BatchStart::UnexpectedEntry {
                expected: self.next_entry,
                got: start_entry,
            }
        } else if boottime != self.boottime {
            self.reset();
            return BatchStart::Rebooted;
        } else {
            BatchStart::Continue
        };
        self.boottime = boottime;
        outcome
    }

    /// The value replay starts from in `bank`.
    pub fn start_value(&self, bank: HashAlg) -> Digest {
        self.running_pcr.unwrap_or_else(|| bank.zero())
    }

    /// Keylime's `check_quote_progress`: false when the previous quote lagged its log
    /// and this one has still not replayed past that lag.
    fn check_quote_progress(&mut self, match_line: u64, log_length: u64) -> bool {
        let now = QuoteProgress {
            match_line,
            log_length,
        };
        let Some(prev) = self.quote_progress.replace(now) else {
            return true;
        };
        if match_line == log_length {
            return true;
        }
        let prev_lag = prev.log_length.saturating_sub(prev.match_line);
        !(prev_lag > 0 && match_line < prev_lag)
    }
}

/// Counters of one processed batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImaCounts {
    /// Non-empty lines seen (Keylime's `log_length`).
    pub lines: u64,
    /// Lines parsed into entries; each of them extended the running PCR.
    pub entries: u64,
    /// Entries the validator accepted.
    pub good: u64,
    /// Entries the validator skipped as excluded.
    pub excluded: u64,
    /// Entries whose path was not in the policy ("fnf": file not found).
    pub fnf: u64,
    /// Entries whose digest was not allowed.
    pub hash: u64,
    /// Entries with a bad signature.
    pub bad_sig: u64,
    /// Entries failing the validator for another reason.
    pub other: u64,
    /// Entries whose template-hash column did not match the template data.
    pub template_hash: u64,
    /// Violation (ToMToU) entries: extended with 0xff… and not validated.
    pub tomtou: u64,
    /// Entries with a PCR column other than `10`.
    pub wrong_pcr: u64,
    /// Lines that did not parse (unknown templates included); not extended.
    pub parse: u64,
    /// Of [`ImaCounts::parse`], lines of a template Keylime does not know.
    pub unknown_template: u64,
    /// Entries per template, indexed by [`Template::index`].
    pub per_template: [u64; 4],
    /// Entries with at least one failure event, per template ([`Template::index`]).
    pub failed_per_template: [u64; 4],
    /// Templates in the order their first failing entry appeared (Keylime prints its
    /// per-mode failure counts in that order).
    failure_order: [Option<Template>; 4],
}

impl ImaCounts {
    fn note_failed(&mut self, t: Template) {
        let i = t.index();
        if self.failed_per_template[i] == 0 {
            if let Some(slot) = self.failure_order.iter_mut().find(|s| s.is_none()) {
                *slot = Some(t);
            }
        }
        self.failed_per_template[i] += 1;
    }

    /// Keylime's current summary log line, or `None` when no entry failed:
    /// `IMA ERRORS: Some entries couldn't be validated. Number of failures in modes: ImaNg 1.`
    pub fn error_summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .failure_order
            .iter()
            .flatten()
            .map(|t| format!("{} {}", t.mode_name(), self.failed_per_template[t.index()]))
            .collect();
        if parts.is_empty() {
            return None;
        }
        Some(format!(
            "IMA ERRORS: Some entries couldn't be validated. Number of failures in modes: {}.",
            parts.join(", ")
        ))
    }

    /// Every counter in one line, for operators:
    /// `good 5, excluded 0, not in policy 1, wrong hash 1, template-hash errors 0, ToMToU 0, unparsable 0`.
    pub fn counters_line(&self) -> String {
        format!(
            "good {}, excluded {}, not in policy {}, wrong hash {}, template-hash errors {}, \
             ToMToU {}, unparsable {}",
            self.good,
            self.excluded,
            self.fnf,
            self.hash,
            self.template_hash,
            self.tomtou,
            self.parse
        )
    }

    /// The pre-2021 Keylime summary line:
    /// `IMA ERRORS: template-hash N fnf N hash N bad-sig N good N`.
    pub fn legacy_summary(&self) -> String {
        format!(
            "IMA ERRORS: template-hash {} fnf {} hash {} bad-sig {} good {}",
            self.template_hash, self.fnf, self.hash, self.bad_sig, self.good
        )
    }
}

/// The outcome of processing one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ImaVerdict {
    /// Every failure event, in Keylime's order. Empty means the batch passed.
    pub failure: Failure,
    /// PCR 10 after the last line of the batch (what Keylime's function returns).
    pub running_pcr: Digest,
    /// Lines of this batch (blank lines included, as Keylime counts them) replayed when
    /// the quoted PCR matched: `Some(0)` for the empty prefix. `None` when nothing
    /// matched or no PCR was quoted.
    pub pcr_match: Option<usize>,
    /// Counters.
    pub counts: ImaCounts,
    /// True when the incremental state was reset because of an IMA failure.
    pub state_reset: bool,
    /// The first [`MAX_KEPT_PARSE_ERRORS`] lines that did not parse, with reasons.
    pub parse_errors: Vec<LineError>,
}

impl ImaVerdict {
    /// True when the batch passed every check.
    pub fn is_ok(&self) -> bool {
        self.failure.is_empty()
    }
}

/// One batch being processed. Create it, feed lines, then [`ImaReplay::finish`].
pub struct ImaReplay<'s, V> {
    cfg: ImaConfig,
    state: Option<&'s mut ImaAttestState>,
    validator: V,
    quoted: Option<Digest>,
    running: Raw,
    /// Scratch for the bank hash and the log hash of the current entry.
    bank_hash: Raw,
    log_hash: Raw,
    found: bool,
    pcr_match: Option<usize>,
    /// Lines seen so far, blank ones included (Keylime's `linenum + 1`).
    line_no: usize,
    failure: Failure,
    counts: ImaCounts,
    parse_errors: Vec<LineError>,
    /// Template data of the current entry, reused for every line.
    scratch: Vec<u8>,
    /// The last entry's measurement, extended into `running` only with the next entry
    /// (or at the end), so that extend runs alongside the next entry's hashing.
    pending: Option<Pending>,
}

/// An entry's measurement not yet extended into the running PCR.
struct Pending {
    measurement: Raw,
    /// The entry's line, where the quoted PCR matches if it matches after it.
    line_no: usize,
}

impl<'s, V: EntryValidator> ImaReplay<'s, V> {
    /// Starts a batch.
    ///
    /// - `state`: the agent's incremental state, already checked with
    ///   [`ImaAttestState::begin_batch`]; `None` replays from zero and keeps nothing.
    /// - `quoted_pcr`: PCR 10 from the quote, in `cfg.bank`; `None` (an offline check)
    ///   attempts no match and no quote-progress check.
    pub fn new(
        cfg: ImaConfig,
        state: Option<&'s mut ImaAttestState>,
        quoted_pcr: Option<Digest>,
        validator: V,
    ) -> Self {
        let running = state
            .as_ref()
            .map_or_else(|| cfg.bank.zero(), |s| s.start_value(cfg.bank));
        // The log may run ahead of the quote; an unchanged PCR matches before any line.
        let found = quoted_pcr.is_some_and(|q| q == running);
        Self {
            cfg,
            state,
            validator,
            quoted: quoted_pcr,
            running: Raw::from_digest(&running),
            bank_hash: Raw::filled(cfg.bank, 0),
            log_hash: Raw::filled(cfg.log_hash_alg, 0),
            found,
            pcr_match: found.then_some(0),
            line_no: 0,
            failure: Failure::new(),
            counts: ImaCounts::default(),
            parse_errors: Vec::new(),
            scratch: Vec::with_capacity(512),
            pending: None,
        }
    }

    /// PCR 10 after the lines fed so far.
    pub fn running_pcr(&self) -> Digest {
        let mut running = self.running;
        if let Some(p) = &self.pending {
            fasthash::extend(self.cfg.bank, &mut running, &p.measurement);
        }
        running.to_digest()
    }

    /// The number of lines fed so far (blank ones included).
    pub fn lines_fed(&self) -> usize {
        self.line_no
    }

    /// Feeds every line of `text`, split on `\n` exactly as Keylime splits the list.
    pub fn feed_text(&mut self, text: &str) {
        let mut rest = text;
        // `memchr` is much faster than `str::split` here; `\n` is ASCII, so every cut
        // is on a character boundary.
        while let Some(i) = memchr::memchr(b'\n', rest.as_bytes()) {
            let (Some(line), Some(tail)) = (rest.get(..i), rest.get(i + 1..)) else {
                break;
            };
            self.feed_line(line);
            rest = tail;
        }
        self.feed_line(rest);
    }

    /// Feeds one line, without its `\n`. Empty lines are skipped but counted in line
    /// numbers, as in Keylime.
    pub fn feed_line(&mut self, line: &str) {
        self.line_no += 1;
        if line.is_empty() {
            return;
        }
        self.counts.lines += 1;
        match ImaEntry::parse(line) {
            Ok(entry) => self.process_entry(&entry),
            Err(error) => {
                if error.is_unknown_template() {
                    self.counts.unknown_template += 1;
                }
                self.record_parse_error(line, error);
            }
        }
    }

    /// Accounts for a line the reader could not deliver as text (not UTF-8, too long):
    /// it counts as a line that did not parse. `shown` is what to quote in the event.
    pub fn feed_unreadable(&mut self, shown: &str, error: EntryError) {
        self.line_no += 1;
        self.counts.lines += 1;
        self.record_parse_error(shown, error);
    }

    fn record_parse_error(&mut self, line: &str, error: EntryError) {
        self.counts.parse += 1;
        self.failure.push(Event::new(
            Component::Ima,
            &["parser"],
            "entry",
            Event::message(format!(
                "Line was not parsable into a valid IMA entry: {line}"
            )),
            true,
        ));
        if self.parse_errors.len() < MAX_KEPT_PARSE_ERRORS {
            self.parse_errors.push(LineError {
                line: self.line_no,
                error,
            });
        }
    }

    fn process_entry(&mut self, entry: &ImaEntry<'_>) {
        let cfg = self.cfg;
        self.counts.entries += 1;
        self.counts.per_template[entry.template.index()] += 1;
        let digest_at = entry.write_template_data(&mut self.scratch);
        let data_len = self.scratch.len();

        // A violation entry shows zeros in the log while the kernel extended 0xff….
        let violation = entry.template_hash.is_violation(cfg.log_hash_alg);
        // Keylime skips the check for a column that *is* 0xff… too (it compares after
        // turning zeros into ones), while still extending the real hash for it.
        let ones_column = violation || entry.template_hash.is_all_ones(cfg.log_hash_alg);
        // The previous entry's extend is applied now, interleaved with this entry's
        // hashing (see `fasthash::hash_interleaved`).
        let pending = self.pending.take();
        if violation {
            if let Some(p) = pending {
                self.apply_extend(p);
            }
            self.bank_hash = Raw::filled(cfg.bank, 0xff);
        } else {
            let second = (cfg.log_hash_alg != cfg.bank && !ones_column)
                .then_some((cfg.log_hash_alg, &mut self.log_hash));
            fasthash::hash_interleaved(
                cfg.bank,
                &mut self.bank_hash,
                second,
                pending.as_ref().map(|p| PendingExtend {
                    alg: cfg.bank,
                    pcr: &mut self.running,
                    measurement: &p.measurement,
                }),
                &mut self.scratch,
                data_len,
            );
            if let Some(p) = pending {
                self.note_extended(p.line_no);
            }
        }
        self.pending = Some(Pending {
            measurement: self.bank_hash,
            line_no: self.line_no,
        });

        let events_before = self.failure.recorded();
        // A fixed-size compare, so no `memcmp` call for every entry.
        if <[u8; 2]>::try_from(entry.pcr.as_bytes()).ok() != Some(*b"10") {
            self.counts.wrong_pcr += 1;
            self.failure.push(Event::new(
                Component::Ima,
                &["validation"],
                "ima_pcr",
                json!({
                    "message": "IMA PCR is not the configured one",
                    "expected": IMA_PCR_TEXT,
                    "got": entry.pcr,
                }),
                true,
            ));
        }
        if ones_column {
            self.counts.tomtou += 1;
            if cfg.ignore_tomtou_errors {
                self.failure.push(Event::new(
                    Component::Ima,
                    &["validation"],
                    "tomtou",
                    Event::message("hash validation was skipped"),
                    true,
                ));
            }
        } else {
            let expected = if cfg.log_hash_alg == cfg.bank {
                &self.bank_hash
            } else {
                &self.log_hash
            };
            if !entry.template_hash.matches(expected.as_slice()) {
                self.counts.template_hash += 1;
                self.failure.push(Event::new(
                    Component::Ima,
                    &["validation"],
                    "ima_hash",
                    json!({
                        "message": "IMA template hash does not match the calculated hash.",
                        "expected": py_bytes_repr(&entry.template_hash.to_vec()),
                        "got": py_bytes_repr(self.scratch.get(..data_len).unwrap_or_default()),
                    }),
                    true,
                ));
            } else {
                // Hashing may have appended padding after the data; the digest is inside.
                let digest = self.scratch.get(digest_at).unwrap_or_default();
                let verdict =
                    self.validator
                        .validate_decoded(entry, digest, self.line_no, &mut self.failure);
                let c = &mut self.counts;
                match verdict {
                    EntryVerdict::Good => c.good += 1,
                    EntryVerdict::Excluded => c.excluded += 1,
                    EntryVerdict::NotFound => c.fnf += 1,
                    EntryVerdict::HashMismatch => c.hash += 1,
                    EntryVerdict::BadSignature => c.bad_sig += 1,
                    EntryVerdict::Failed => c.other += 1,
                }
            }
        }
        if self.failure.recorded() > events_before {
            self.counts.note_failed(entry.template);
        }
    }

    /// Extends `running` with an entry's measurement and checks the quote against it.
    fn apply_extend(&mut self, p: Pending) {
        fasthash::extend(self.cfg.bank, &mut self.running, &p.measurement);
        self.note_extended(p.line_no);
    }

    /// `running` now includes line `line_no`: the quoted PCR may match here.
    fn note_extended(&mut self, line_no: usize) {
        if !self.found
            && self
                .quoted
                .as_ref()
                .is_some_and(|q| q.as_bytes() == self.running.as_slice())
        {
            self.found = true;
            self.pcr_match = Some(line_no);
            if let Some(state) = self.state.as_deref_mut() {
                state.next_entry = state.next_entry.saturating_add(line_no as u64);
                state.running_pcr = Some(self.running.to_digest());
            }
        }
    }

    /// Ends the batch: PCR match and quote-progress checks, then the state reset Keylime
    /// applies after any IMA failure.
    pub fn finish(mut self) -> ImaVerdict {
        if let Some(p) = self.pending.take() {
            self.apply_extend(p);
        }
        if let Some(quoted) = &self.quoted {
            if !self.found {
                self.failure.push(Event::new(
                    Component::Ima,
                    &[],
                    "pcr_mismatch",
                    Event::message(format!(
                        "IMA measurement list does not match TPM PCR {}",
                        quoted.to_hex()
                    )),
                    true,
                ));
            } else if let Some(state) = self.state.as_deref_mut() {
                let match_line = self.pcr_match.unwrap_or(0) as u64;
                if !state.check_quote_progress(match_line, self.counts.lines) {
                    self.failure.push(Event::new(
                        Component::Ima,
                        &[],
                        "quote_progress",
                        Event::message("PCR quote did not make progress to catch up with log"),
                        true,
                    ));
                }
            }
        }
        let mut state_reset = false;
        if !self.failure.is_empty() {
            if let Some(state) = self.state.as_deref_mut() {
                state.reset();
                state_reset = true;
            }
        }
        ImaVerdict {
            failure: self.failure,
            running_pcr: self.running.to_digest(),
            pcr_match: self.pcr_match,
            counts: self.counts,
            state_reset,
            parse_errors: self.parse_errors,
        }
    }
}

/// Processes a whole batch in one call: Keylime's `process_measurement_list(state,
/// lines, policy, pcrval, hash_alg)` with the policy behind `validator`.
pub fn process_measurement_list<V: EntryValidator>(
    cfg: ImaConfig,
    state: Option<&mut ImaAttestState>,
    text: &str,
    quoted_pcr: Option<Digest>,
    validator: V,
) -> ImaVerdict {
    let mut replay = ImaReplay::new(cfg, state, quoted_pcr, validator);
    replay.feed_text(text);
    replay.finish()
}
