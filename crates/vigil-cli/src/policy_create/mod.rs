//! `vigil policy create runtime`: the I/O half of runtime-policy creation (reading the
//! inputs, walking a root filesystem, unpacking initrds, hashing in parallel, writing the
//! document). The rules that decide what lands in the policy live in
//! `vigil_core::policy::runtime::create`; docs/policy-create.md describes both.

mod hashing;
mod initrd;
mod rootfs;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use vigil_core::policy::runtime::create::{
    exclude_list, flat_allowlist, ima_log_alg_hint, ima_log_buffers, ima_log_digests,
    resolve_algorithm, table_alg_hint, AlgHint, PolicyDraft,
};
use vigil_core::HashAlg;

/// Where the kernel publishes the IMA measurement list (a bare `-m` reads it).
const IMA_MEASUREMENT_LIST: &str = "/sys/kernel/security/ima/ascii_runtime_measurements";

/// Options of `vigil policy create runtime`, spelled as `keylime-policy create runtime`'s.
#[derive(Debug, Args)]
pub(crate) struct RuntimeArgs {
    /// Hash every root-owned regular file under this root filesystem (e.g. `/`).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Hash the files inside every initrd (file name starting `initr`) in this directory.
    #[arg(long, value_name = "DIR")]
    ramdisk_dir: Option<PathBuf>,
    /// Take digests (and `boot_aggregate`) from an IMA measurement list; a bare `-m` reads
    /// the running kernel's, `/dev/null` means none.
    #[arg(short = 'm', long = "ima-measurement-list", value_name = "IMA_LOG",
          num_args = 0..=1, default_missing_value = IMA_MEASUREMENT_LIST)]
    ima_log: Option<PathBuf>,
    /// Take digests from a flat allowlist (`<digest>  <path>` lines).
    #[arg(short = 'a', long, value_name = "FILE")]
    allowlist: Option<PathBuf>,
    /// Add the patterns of an exclude list (one Python regular expression per line).
    #[arg(short = 'e', long, value_name = "FILE")]
    excludelist: Option<PathBuf>,
    /// Merge everything into this existing runtime policy.
    #[arg(short = 'p', long, value_name = "FILE")]
    base_policy: Option<PathBuf>,
    /// Add the keys measured into keyrings (`ima-buf` certificates of the IMA log).
    #[arg(short = 'k', long)]
    keyrings: bool,
    /// Add the other `ima-buf` entries of the IMA log (critical data).
    #[arg(short = 'b', long)]
    ima_buf: bool,
    /// Keyrings whose keys are not checked (comma-separated or repeated).
    #[arg(long, value_name = "K", value_delimiter = ',')]
    ignored_keyrings: Vec<String>,
    /// Directories of the root filesystem not to hash (comma-separated or repeated).
    #[arg(short = 's', long, value_name = "P", value_delimiter = ',')]
    skip_path: Vec<String>,
    /// Digest algorithm of the file hashes [default: the inputs', else sha256].
    #[arg(long, value_name = "ALG")]
    algo: Option<HashAlg>,
    /// Write the policy here instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Hashing threads [default: one per CPU].
    #[arg(short = 'j', long, value_name = "N")]
    jobs: Option<usize>,
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    // Keylime reads these as UTF-8; a stray byte should not stop policy creation.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn run(args: &RuntimeArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut draft = match &args.base_policy {
        Some(p) => {
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read the base policy {}", p.display()))?;
            PolicyDraft::from_base_policy(&bytes)
                .with_context(|| format!("base policy {}", p.display()))?
        }
        None => PolicyDraft::new(),
    };

    let allowlist = match &args.allowlist {
        Some(p) => flat_allowlist(&read_text(p, "allowlist")?),
        None => Vec::new(),
    };
    let ima_log = match &args.ima_log {
        Some(p) if p != Path::new("/dev/null") => Some(read_text(p, "IMA measurement list")?),
        _ => None,
    };
    let allowlist_hint = table_alg_hint(allowlist.iter().map(|(_, d)| d.as_str()));
    let alg = resolve_algorithm(&[
        ("--algo option", args.algo.map(AlgHint::Exact)),
        ("base policy", draft.base_alg_hint()),
        ("allowlist", allowlist_hint),
        (
            "IMA measurement list",
            ima_log.as_deref().map(ima_log_alg_hint),
        ),
    ])?;

    let progress = hashing::Progress::new(std::io::stderr().is_terminal());
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = args.jobs {
            b = b.num_threads(n.max(1));
        }
        b.build().context("cannot start the hashing threads")?
    };

    let mut initrd_files = 0usize;
    if let Some(dir) = &args.ramdisk_dir {
        let found = pool.install(|| initrd::digests(dir, alg))?;
        initrd_files = found.len();
        draft.add_digests(found);
    }
    let mut rootfs_files = 0usize;
    if let Some(root) = &args.rootfs {
        let jobs = pool.install(|| rootfs::collect(root, &args.skip_path))?;
        let found = pool.install(|| hashing::hash_files(jobs, alg, &progress));
        rootfs_files = found.len();
        draft.add_digests(found);
    }
    progress.finish();

    draft.add_digests(allowlist);
    if let Some(log) = &ima_log {
        draft.add_digests(ima_log_digests(log));
    }
    if let Some(p) = &args.excludelist {
        draft.add_excludes(exclude_list(&read_text(p, "exclude list")?)?);
    }
    draft.add_ignored_keyrings(args.ignored_keyrings.iter().cloned());
    if args.keyrings || args.ima_buf {
        // As Keylime: without -m there is no list to read, so nothing is added.
        if let Some(log) = &ima_log {
            draft.add_ima_buffers(&ima_log_buffers(log), args.keyrings, args.ima_buf);
        }
    }

    let doc = draft.finish(&timestamp(SystemTime::now()))?;
    let mut text = python_json(&doc)?;
    match &args.output {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => {
            text.push(b'\n');
            std::io::stdout().lock().write_all(&text)?;
        }
    }
    anstream::eprintln!(
        "{}policy:{} {} paths ({} from the root filesystem, {} from initrds), {}, in {:.2} s{}",
        crate::cmd::style::EM.render(),
        crate::cmd::style::EM.render_reset(),
        draft.digest_paths(),
        rootfs_files,
        initrd_files,
        alg,
        started.elapsed().as_secs_f64(),
        args.output
            .as_ref()
            .map(|p| format!(", written to {}", p.display()))
            .unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `meta.timestamp` as Python's `str(datetime)` prints it (Keylime writes local time;
/// Vigil writes UTC, which is what the machines it runs on use).
pub(crate) fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let micros = d.subsec_micros();
    let base = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

/// Serializes as Python's `json.dumps` does (`", "` and `": "` separators, non-ASCII as
/// `\uXXXX`), so Vigil's policies read like Keylime's.
pub(crate) fn python_json(value: &serde_json::Value) -> Result<Vec<u8>> {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            // Python escapes everything outside ' '..'~' (DEL included); serde_json has
            // already escaped the control characters.
            if c.is_ascii() && c != '\x7f' {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamp_is_python_style() {
        let t = UNIX_EPOCH + Duration::from_micros(1_726_148_684_298_873);
        assert_eq!(timestamp(t), "2024-09-12 13:44:44.298873");
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00"
        );
    }

    #[test]
    fn json_is_python_style() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": "é"}});
        assert_eq!(
            String::from_utf8(python_json(&v).unwrap()).unwrap(),
            r#"{"a": [1, 2], "b": {"c": "\u00e9"}}"#
        );
    }
}
