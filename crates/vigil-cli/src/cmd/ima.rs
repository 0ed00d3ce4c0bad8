//! `vigil ima check`: evaluate an IMA measurement list offline, exactly as the verifier
//! (and Keylime's verifier) would, so operators can try a policy before enrolling a node.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use vigil_core::failure::{Event, Failure};
use vigil_core::ima::keyring::{ImaKeyring, ImaKeyrings};
use vigil_core::ima::validate::PolicyValidator;
use vigil_core::ima::{
    process_reader, EntryValidator, EntryVerdict, ImaAttestState, ImaConfig, ImaEntry,
    ImaLogReader, ImaVerdict,
};
use vigil_core::policy::runtime::RuntimePolicy;
use vigil_core::{Digest, HashAlg};

use super::style::{EM, ERROR, OK, WARN};

/// IMA measurement lists.
#[derive(Debug, Subcommand)]
pub(crate) enum ImaCommand {
    /// Check a measurement list against a runtime policy (and a quoted PCR 10).
    ///
    /// Exit status: 0 trusted, 1 not trusted, 2 bad input.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The measurement list (`ascii_runtime_measurements` format).
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Keylime runtime policy (format v1 JSON, or a DSSE envelope holding one).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["allowlist", "excludelist"],
          required_unless_present = "allowlist")]
    policy: Option<PathBuf>,
    /// Legacy flat allowlist (`<digest>  <path>` lines), instead of --policy.
    #[arg(long, value_name = "FILE")]
    allowlist: Option<PathBuf>,
    /// Legacy exclude list (one Python regular expression per line), with --allowlist.
    #[arg(long, value_name = "FILE", requires = "allowlist")]
    excludelist: Option<PathBuf>,
    /// PCR 10 as the TPM quoted it (hex). Without it no PCR match is attempted.
    #[arg(long, value_name = "HEX")]
    pcr: Option<String>,
    /// The PCR bank to replay (default: inferred from --pcr's length, else sha256).
    #[arg(long, value_name = "ALG")]
    bank: Option<HashAlg>,
    /// Incremental attestation: the first entry number of this log excerpt is N
    /// (the log file is the whole list; its first N lines are skipped).
    #[arg(long, value_name = "N", requires = "from_pcr")]
    from_entry: Option<u64>,
    /// Incremental attestation: the running PCR 10 value after entry N-1 (hex).
    #[arg(long, value_name = "HEX", requires = "from_entry")]
    from_pcr: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also print, to standard error, how long loading the policy and checking the log
    /// took (for benchmarks: `scripts/bench-ima.sh` reads it).
    #[arg(long)]
    timings: bool,
}

pub(crate) fn run(cmd: ImaCommand) -> Result<ExitCode> {
    match cmd {
        ImaCommand::Check(args) => check(&args),
    }
}

/// Records which line and name produced each policy failure event, for the human
/// report (Keylime's event contexts do not always name the file).
struct Annotating<'v, V> {
    inner: V,
    notes: &'v mut Vec<(usize, usize, String)>,
}

impl<V: EntryValidator> EntryValidator for Annotating<'_, V> {
    fn validate(
        &mut self,
        entry: &ImaEntry<'_>,
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        let before = failure.events().len();
        let verdict = self.inner.validate(entry, line_no, failure);
        self.note(before, line_no, entry, failure);
        verdict
    }

    fn validate_decoded(
        &mut self,
        entry: &ImaEntry<'_>,
        digest: &[u8],
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        let before = failure.events().len();
        let verdict = self.inner.validate_decoded(entry, digest, line_no, failure);
        self.note(before, line_no, entry, failure);
        verdict
    }
}

impl<V> Annotating<'_, V> {
    /// Notes the line and name of the events pushed since `before`.
    fn note(&mut self, before: usize, line_no: usize, entry: &ImaEntry<'_>, failure: &Failure) {
        for index in before..failure.events().len() {
            self.notes.push((index, line_no, entry.name.to_owned()));
        }
    }
}

fn load_policy(args: &CheckArgs) -> Result<RuntimePolicy> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    if let Some(path) = &args.policy {
        let bytes = read(path)?;
        // Not JSON at all: say what a policy is rather than where JSON parsing stopped.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            let hint = if looks_like_ima_log(&bytes) {
                "; it looks like an IMA measurement list: pass that as --log"
            } else {
                ""
            };
            bail!(
                "{} is not a runtime policy (a JSON object: Keylime format v1, or a DSSE \
                 envelope holding one; `vigil policy create runtime` makes one){hint}",
                path.display()
            );
        }
        return RuntimePolicy::from_json(&bytes)
            .with_context(|| format!("invalid runtime policy {}", path.display()));
    }
    let allowlist = args
        .allowlist
        .as_deref()
        .context("--policy or --allowlist is required")?;
    let text = |p: &Path| -> Result<String> {
        String::from_utf8(read(p)?).with_context(|| format!("{} is not UTF-8 text", p.display()))
    };
    let allow = text(allowlist)?;
    let exclude = args.excludelist.as_deref().map(text).transpose()?;
    RuntimePolicy::from_legacy(Some(&allow), exclude.as_deref())
        .with_context(|| format!("invalid allowlist/excludelist {}", allowlist.display()))
}

/// Whether `bytes` start like an `ascii_runtime_measurements` line: a PCR number, then
/// a hex template hash.
fn looks_like_ima_log(bytes: &[u8]) -> bool {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut fields = line.split(|b| *b == b' ');
    let pcr = fields.next().unwrap_or_default();
    let hash = fields.next().unwrap_or_default();
    !pcr.is_empty()
        && pcr.iter().all(u8::is_ascii_digit)
        && hash.len() >= 40
        && hash.iter().all(u8::is_ascii_hexdigit)
}

fn parse_pcr(what: &str, hex: &str, bank: HashAlg) -> Result<Digest> {
    Digest::from_hex_for(bank, hex.trim()).with_context(|| format!("invalid {what}"))
}

fn bank_for(args: &CheckArgs) -> Result<HashAlg> {
    if let Some(bank) = args.bank {
        return Ok(bank);
    }
    let (flag, pcr) = match (args.pcr.as_deref(), args.from_pcr.as_deref()) {
        (Some(pcr), _) => ("--pcr", pcr),
        (None, Some(pcr)) => ("--from-pcr", pcr),
        (None, None) => return Ok(HashAlg::Sha256),
    };
    if !pcr.trim().bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "invalid {flag}: '{pcr}' is not hex (a PCR value as the TPM quoted it, e.g. 64 hex \
             digits for sha256)"
        );
    }
    Ok(match pcr.trim().len() {
        40 => HashAlg::Sha1,
        64 => HashAlg::Sha256,
        96 => HashAlg::Sha384,
        128 => HashAlg::Sha512,
        n => bail!("cannot infer the PCR bank from a {n}-digit PCR value; pass --bank"),
    })
}

/// Skips the first `n` lines of `reader`; errors if the log has fewer.
fn skip_lines(reader: &mut impl BufRead, n: u64) -> Result<()> {
    let mut scratch = Vec::new();
    for done in 0..n {
        scratch.clear();
        if reader.read_until(b'\n', &mut scratch)? == 0 {
            bail!("--from-entry {n} is past the end of the log ({done} entries)");
        }
    }
    Ok(())
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let policy = load_policy(args)?;
    let loaded = Instant::now();
    let bank = bank_for(args)?;
    let quoted = args
        .pcr
        .as_deref()
        .map(|p| parse_pcr("--pcr", p, bank))
        .transpose()?;

    let mut keyrings = ImaKeyrings::new();
    keyrings.set_tenant_keyring(
        ImaKeyring::from_keylime_json(policy.verification_keys())
            .context("invalid verification-keys in the runtime policy")?,
    );

    let file =
        File::open(&args.log).with_context(|| format!("cannot read {}", args.log.display()))?;
    let mut input = BufReader::with_capacity(1 << 16, file);
    let first_entry = args.from_entry.unwrap_or(0);
    let mut state = ImaAttestState::new();
    if let (Some(n), Some(pcr)) = (args.from_entry, args.from_pcr.as_deref()) {
        skip_lines(&mut input, n)?;
        state.next_entry = n;
        state.running_pcr = Some(parse_pcr("--from-pcr", pcr, bank)?);
    }
    let cfg = ImaConfig {
        bank,
        log_hash_alg: policy.log_hash_alg(),
        ignore_tomtou_errors: false,
    };
    let mut notes = Vec::new();
    let validator = Annotating {
        inner: PolicyValidator::new(&policy, &[], &mut keyrings),
        notes: &mut notes,
    };
    let mut reader = ImaLogReader::new(input).with_first_entry(first_entry);
    let verdict = process_reader(cfg, Some(&mut state), &mut reader, quoted, validator)
        .with_context(|| format!("cannot read {}", args.log.display()))?;
    // Every line failed to parse: this is not a measurement list (a policy given as
    // --log, say), which is bad input, not an untrusted node.
    if verdict.counts.lines > 0 && verdict.counts.entries == 0 {
        let first = verdict
            .failure
            .events()
            .first()
            .map(|e| describe(e, ""))
            .unwrap_or_default();
        bail!(
            "{} is not an IMA measurement list: none of its {} lines parses ({first}); \
             --log takes the list (ascii_runtime_measurements), --policy the runtime policy",
            args.log.display(),
            verdict.counts.lines
        );
    }
    if args.timings {
        let check = loaded.elapsed().as_secs_f64();
        eprintln!(
            "timings: policy {:.6} s, check {check:.6} s, {} entries",
            (loaded - started).as_secs_f64(),
            verdict.counts.lines,
        );
    }

    // Without a quote nothing is matched, so the next excerpt starts after every line.
    let (next_entry, next_pcr) = if quoted.is_some() {
        (state.next_entry, state.start_value(bank))
    } else {
        (first_entry + verdict.counts.lines, verdict.running_pcr)
    };
    let trusted = verdict.is_ok();
    if args.json {
        print_json(&verdict, trusted, bank, next_entry, &next_pcr, &notes)?;
    } else {
        print_human(args, &verdict, trusted, bank, quoted.is_some(), &notes)?;
    }
    Ok(if trusted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The line and file name noted for the event at `index`, when it concerns an entry.
fn note_of(notes: &[(usize, usize, String)], index: usize) -> Option<(usize, &str)> {
    // Notes are recorded in event order, so a binary search finds an event's note.
    notes
        .binary_search_by_key(&index, |(i, _, _)| *i)
        .ok()
        .and_then(|at| notes.get(at))
        .map(|(_, line, name)| (*line, name.as_str()))
}

fn print_json(
    v: &ImaVerdict,
    trusted: bool,
    bank: HashAlg,
    next_entry: u64,
    next_pcr: &Digest,
    notes: &[(usize, usize, String)],
) -> Result<()> {
    let c = &v.counts;
    let failures: Vec<_> = v
        .failure
        .events()
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let mut failure = json!({"event_id": e.event_id, "context": e.context});
            // As the text output: the entry's line and file (Keylime's contexts do not
            // always name it).
            if let Some((line, name)) = note_of(notes, index) {
                failure["line"] = json!(line);
                failure["file"] = json!(name);
            }
            failure
        })
        .collect();
    let out = json!({
        "trusted": trusted,
        "empty": c.lines == 0,
        "pcr_match": v.pcr_match,
        "failures": failures,
        "counts": {
            "entries": c.entries,
            "good": c.good,
            "template_hash": c.template_hash,
            "fnf": c.fnf,
            "hash": c.hash,
            "bad_sig": c.bad_sig,
            "tomtou": c.tomtou,
            "parse": c.parse,
            "excluded": c.excluded,
            "wrong_pcr": c.wrong_pcr,
        },
        "summary": c.error_summary(),
        "bank": bank,
        "running_pcr": v.running_pcr,
        "next_entry": next_entry,
        "next_pcr": next_pcr,
    });
    super::print_json(&out)?;
    Ok(())
}

fn print_human(
    args: &CheckArgs,
    v: &ImaVerdict,
    trusted: bool,
    bank: HashAlg,
    quoted: bool,
    notes: &[(usize, usize, String)],
) -> Result<()> {
    let mut out = anstream::stdout().lock();
    let (em, r) = (EM.render(), EM.render_reset());
    writeln!(
        out,
        "{em}{}{r}: {} entries, PCR bank {bank}",
        args.log.display(),
        v.counts.entries
    )?;
    for (index, event) in v.failure.events().iter().enumerate() {
        let (bad, rr) = (ERROR.render(), ERROR.render_reset());
        write!(out, "  {bad}FAIL{rr} {em}{}{r}", event.event_id)?;
        match note_of(notes, index) {
            Some((line, name)) => writeln!(out, "  line {line}: {}", describe(event, name))?,
            None => writeln!(out, "  {}", describe(event, ""))?,
        }
    }
    if v.counts.lines == 0 {
        writeln!(
            out,
            "  the measurement list is empty: nothing was measured{}",
            if quoted {
                ", so PCR 10 must hold its initial value"
            } else {
                ""
            }
        )?;
    }
    let (w, wr) = (WARN.render(), WARN.render_reset());
    match (quoted, v.pcr_match) {
        (false, _) => writeln!(out, "  {w}PCR 10 not checked{wr} (no --pcr given)")?,
        (true, Some(n)) => writeln!(out, "  PCR 10 matches the log after line {n}")?,
        (true, None) => {} // reported as ima.pcr_mismatch above
    }
    let c = &v.counts;
    if let Some(summary) = c.error_summary() {
        writeln!(out, "  {summary}")?;
    }
    writeln!(out, "  {}", c.counters_line())?;
    if trusted {
        let (ok, okr) = (OK.render(), OK.render_reset());
        writeln!(out, "{ok}TRUSTED{okr}")?;
    } else {
        let (bad, rr) = (ERROR.render(), ERROR.render_reset());
        let n = v.failure.events().len();
        let s = if n == 1 { "" } else { "s" };
        writeln!(out, "{bad}NOT TRUSTED{rr} ({n} failure{s})")?;
    }
    Ok(())
}

/// One line of text for an event: its message, plus what a digest mismatch got and
/// expected, prefixed by the file it concerns when known.
fn describe(event: &Event, name: &str) -> String {
    let ctx = &event.context;
    let message = ctx["message"].as_str().unwrap_or_default();
    let mut text = if name.is_empty() || message.contains(name) {
        message.to_owned()
    } else {
        format!("{name}: {message}")
    };
    if let (Some(got), Some(expected)) = (ctx["got"].as_str(), ctx["expected"].as_array()) {
        let expected: Vec<&str> = expected.iter().filter_map(|e| e.as_str()).collect();
        text.push_str(&format!(
            " (got {got}, policy allows {})",
            expected.join(", ")
        ));
    }
    if text.is_empty() {
        text = ctx.to_string();
    }
    text
}
