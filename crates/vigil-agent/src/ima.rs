//! IMA sources: the measurement list served from entry N without rescanning, and the
//! IMA emulation mode for machines without kernel IMA.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vigil_core::eventlog::{boot_aggregates, PcrBanks};
use vigil_core::ima::{ImaEntry, ImaNgRecord, RecordError};
use vigil_core::{Digest, HashAlg};
use vigil_tpm::{Tpm, TpmError};

/// How many (entry number, byte offset) pairs are remembered. The verifier asks for
/// the entry after the last one it matched, so a few recent pairs cover it.
const CACHE_SIZE: usize = 32;

/// The measurement list file and where its recent entries start.
#[derive(Debug)]
pub struct ImaLog {
    path: PathBuf,
    /// entry number → byte offset of its line.
    cache: Mutex<BTreeMap<u64, u64>>,
}

/// What [`ImaLog::read_from`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImaSlice {
    /// The lines from `start` to the end of the file (complete lines only).
    pub text: String,
    /// The first entry's number: the one asked for, or 0 when it is past the end.
    pub start: u64,
    /// The number of entries in the file.
    pub entries: u64,
}

impl ImaLog {
    /// The list at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries from number `n` on. Past the end it falls back to entry 0, as
    /// Keylime's agent does (the log was reset by a reboot); `n` equal to the number of
    /// entries gives an empty text. Seeks to the nearest remembered entry at or before
    /// `n` and counts lines from there only.
    pub fn read_from(&self, n: u64) -> std::io::Result<ImaSlice> {
        let mut file = File::open(&self.path)?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut slice = self.try_read_from(&mut file, &cache, n)?;
        if slice.is_none() {
            // A remembered offset no longer starts a line (the file was replaced):
            // forget everything and count from the start.
            cache.clear();
            slice = self.try_read_from(&mut file, &cache, n)?;
        }
        let (slice, start_off, tail) = slice.unwrap_or_default();
        remember(&mut cache, slice.start, start_off);
        remember(&mut cache, slice.entries, start_off + tail);
        Ok(slice)
    }

    /// `None` when a cached offset proved stale.
    fn try_read_from(
        &self,
        file: &mut File,
        cache: &BTreeMap<u64, u64>,
        n: u64,
    ) -> std::io::Result<Option<(ImaSlice, u64, u64)>> {
        let (mut entry, mut off) = cache
            .range(..=n)
            .next_back()
            .map_or((0, 0), |(&e, &o)| (e, o));
        if off > 0 {
            // The byte before a line start is the previous line's newline.
            file.seek(SeekFrom::Start(off - 1))?;
            let mut b = [0u8; 1];
            if file.read(&mut b)? != 1 || b[0] != b'\n' {
                return Ok(None);
            }
        } else {
            file.seek(SeekFrom::Start(0))?;
        }
        let mut reader = BufReader::with_capacity(1 << 16, &mut *file);
        let mut line = Vec::new();
        while entry < n {
            line.clear();
            let got = reader.read_until(b'\n', &mut line)?;
            if got == 0 || line.last() != Some(&b'\n') {
                break;
            }
            entry += 1;
            off += got as u64;
        }
        if entry < n {
            if off == 0 && entry == 0 {
                return Ok(Some((
                    ImaSlice {
                        text: String::new(),
                        start: 0,
                        entries: 0,
                    },
                    0,
                    0,
                )));
            }
            // Past the end: the whole list, from entry 0.
            drop(reader);
            return self.try_read_from(file, &BTreeMap::new(), 0);
        }
        drop(reader);
        file.seek(SeekFrom::Start(off))?;
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)?;
        // Only complete lines: the kernel may be appending one right now.
        let complete = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        rest.truncate(complete);
        let lines = memchr_count(&rest);
        let text = String::from_utf8(rest)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok(Some((
            ImaSlice {
                text,
                start: entry,
                entries: entry + lines,
            },
            off,
            complete as u64,
        )))
    }
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn remember(cache: &mut BTreeMap<u64, u64>, entry: u64, off: u64) {
    cache.insert(entry, off);
    while cache.len() > CACHE_SIZE {
        // Keep the newest entries: the verifier only moves forward.
        if let Some((&first, _)) = cache.iter().next() {
            cache.remove(&first);
        }
    }
}

/// Why IMA emulation failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    /// The log or a measured file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TPM refused a read or an extend.
    #[error("TPM: {0}")]
    Tpm(#[from] TpmError),
    /// A path cannot be written as an IMA name.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// PCR 10 holds extends the emulated log does not account for.
    #[error(
        "PCR 10 ({pcr}) does not match the emulated log {log} ({replayed}): PCR 10 was \
         extended by something else; reset the TPM (restart swtpm) or remove the log"
    )]
    Inconsistent {
        /// The log.
        log: PathBuf,
        /// PCR 10 now.
        pcr: String,
        /// The log's replay.
        replayed: String,
    },
}

/// The IMA emulator: measures files as the kernel would under an `ima-ng` policy,
/// appends each entry to its log, then extends PCR 10 with it (log first, so the log
/// never lags the PCR a verifier sees).
#[derive(Debug)]
pub struct ImaEmulator {
    tpm: Arc<Tpm>,
    bank: HashAlg,
    log: PathBuf,
    targets: Vec<PathBuf>,
    /// Last digest recorded per path: a file is measured again only when it changed,
    /// as the kernel re-measures a file whose content changed.
    measured: BTreeMap<String, Vec<u8>>,
}

/// The digest algorithm of emulated file measurements (`ima_hash=sha256`).
const FILE_ALG: HashAlg = HashAlg::Sha256;
/// The template-hash column's algorithm (every current kernel: SHA-1).
const LOG_ALG: HashAlg = HashAlg::Sha1;

impl ImaEmulator {
    /// Opens the emulated log at `log`: continues it when it accounts for PCR 10,
    /// starts it with a `boot_aggregate` entry when PCR 10 is still zero.
    pub fn start(
        tpm: Arc<Tpm>,
        bank: HashAlg,
        log: PathBuf,
        targets: Vec<PathBuf>,
    ) -> Result<Self, EmulateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| EmulateError::Io { path, source }
        };
        let pcr10 = read_pcr(&tpm, bank, 10)?;
        let mut me = Self {
            tpm,
            bank,
            log: log.clone(),
            targets,
            measured: BTreeMap::new(),
        };
        let existing = match std::fs::read_to_string(&log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&log)(e)),
        };
        let mut replayed = bank.zero();
        for line in existing.lines() {
            if let Ok(entry) = ImaEntry::parse(line) {
                replayed = bank.extend(&replayed, &bank.hash(&entry.template_data()));
                me.measured
                    .insert(entry.name.to_owned(), entry.digest.value.to_vec());
            }
        }
        if !existing.is_empty() && replayed == pcr10 {
            return Ok(me);
        }
        if pcr10 != bank.zero() {
            return Err(EmulateError::Inconsistent {
                log,
                pcr: pcr10.to_hex(),
                replayed: replayed.to_hex(),
            });
        }
        me.measured.clear();
        File::create(&log).map_err(io(&log))?;
        let aggregate = me.boot_aggregate()?;
        me.record(&ImaNgRecord::new(
            bank,
            aggregate.as_bytes(),
            "boot_aggregate",
            LOG_ALG,
        )?)?;
        Ok(me)
    }

    /// IMA's boot aggregate from the TPM's PCRs: `H(PCR0‖…‖PCR7)` for SHA-1, PCRs 0–9
    /// for other banks (kernels since 5.8), computed by `vigil_core::eventlog`.
    fn boot_aggregate(&self) -> Result<Digest, EmulateError> {
        let pcrs: Vec<u32> = (0..10).collect();
        let values = self.tpm.pcr_read(self.bank, &pcrs)?;
        let mut banks = PcrBanks::new();
        banks.insert(self.bank, values.into_iter().collect());
        let forms = boot_aggregates(&banks)
            .remove(&self.bank)
            .unwrap_or_default();
        let form = if self.bank == HashAlg::Sha1 { 0 } else { 1 };
        Ok(forms.get(form).cloned().unwrap_or_else(|| self.bank.zero()))
    }

    fn record(&mut self, record: &ImaNgRecord) -> Result<(), EmulateError> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|source| EmulateError::Io {
                path: self.log.clone(),
                source,
            })?;
        f.write_all(format!("{}\n", record.line).as_bytes())
            .and_then(|()| f.flush())
            .map_err(|source| EmulateError::Io {
                path: self.log.clone(),
                source,
            })?;
        self.tpm
            .pcr_extend(10, self.bank, &record.pcr_digest(self.bank))?;
        Ok(())
    }

    /// Measures every target file whose content is new or changed; returns how many
    /// entries were added. Unreadable files are skipped with a log line, as IMA does
    /// not measure what it cannot open.
    pub fn rescan(&mut self) -> Result<usize, EmulateError> {
        let mut files = Vec::new();
        for t in &self.targets {
            collect(t, &mut files);
        }
        files.sort();
        files.dedup();
        let mut added = 0;
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(path = %path.display(), "not measured: {e}");
                    continue;
                }
            };
            let digest = FILE_ALG.hash(&bytes).as_bytes().to_vec();
            let name = path.to_string_lossy().into_owned();
            if self.measured.get(&name) == Some(&digest) {
                continue;
            }
            let record = match ImaNgRecord::new(FILE_ALG, &digest, &name, LOG_ALG) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("not measured: {e}");
                    continue;
                }
            };
            self.record(&record)?;
            self.measured.insert(name, digest);
            added += 1;
        }
        Ok(added)
    }
}

fn read_pcr(tpm: &Tpm, bank: HashAlg, pcr: u32) -> Result<Digest, TpmError> {
    Ok(tpm
        .pcr_read(bank, &[pcr])?
        .into_iter()
        .next()
        .map_or_else(|| bank.zero(), |(_, d)| d))
}

/// Regular files at or under `path` (symlinks are not followed, so a loop cannot
/// recurse forever).
fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push(path.to_owned());
    } else if meta.is_dir() {
        if let Ok(dir) = std::fs::read_dir(path) {
            for entry in dir.flatten() {
                collect(&entry.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> String {
        format!("10 {:040x} ima-ng sha256:{:064x} /f{i}\n", i + 1, i)
    }

    #[test]
    fn offsets_are_remembered_and_past_the_end_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        let all: String = (0..100).map(line).collect();
        std::fs::write(&p, &all).unwrap();
        let log = ImaLog::new(&p);
        let s = log.read_from(40).unwrap();
        assert_eq!((s.start, s.entries), (40, 100));
        assert_eq!(s.text, (40..100).map(line).collect::<String>());
        // From the cache: entry 40 and the end (100) are remembered.
        assert_eq!(
            log.cache.lock().unwrap().get(&100),
            Some(&(all.len() as u64))
        );
        assert_eq!(log.read_from(100).unwrap().text, "");
        let s = log.read_from(70).unwrap();
        assert_eq!(s.text, (70..100).map(line).collect::<String>());
        // Past the end: from 0.
        let s = log.read_from(101).unwrap();
        assert_eq!((s.start, s.entries), (0, 100));
        assert_eq!(s.text, all);
        // The log grows; a partial line is not served.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all((line(100) + "10 abc").as_bytes()).unwrap();
        let s = log.read_from(100).unwrap();
        assert_eq!((s.start, s.entries, s.text), (100, 101, line(100)));
        // Replaced by a shorter file (a reboot): stale offsets are detected.
        std::fs::write(&p, (0..10).map(line).collect::<String>()).unwrap();
        let s = log.read_from(70).unwrap();
        assert_eq!((s.start, s.entries), (0, 10));
        let s = log.read_from(5).unwrap();
        assert_eq!(s.text, (5..10).map(line).collect::<String>());
        // Empty log.
        std::fs::write(&p, "").unwrap();
        assert_eq!(log.read_from(3).unwrap(), ImaSlice::default());
    }
}
