//! Hashing files in parallel, with a progress bar (files and bytes, rate, ETA) on a
//! terminal and nothing at all otherwise.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vigil_core::HashAlg;

/// One file to hash, and the policy path it is recorded under.
#[derive(Debug)]
pub(crate) struct FileJob {
    /// Where the file is on this machine.
    pub(crate) path: PathBuf,
    /// The policy key (path inside the root filesystem, spaces as `_`).
    pub(crate) key: String,
    /// Its size when listed, for the progress bar.
    pub(crate) size: u64,
}

/// The progress bar of one run (hidden when standard error is not a terminal).
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn new(visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            None,
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        Self { bar }
    }

    fn start(&self, files: usize, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {msg} files [{bar:30}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_message(format!("{files}"));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Hashes `jobs` on the current rayon pool; returns `(key, hex digest)` pairs. Files that
/// cannot be read are reported on standard error and left out, as Keylime leaves them.
pub(crate) fn hash_files(
    jobs: Vec<FileJob>,
    alg: HashAlg,
    progress: &Progress,
) -> Vec<(String, String)> {
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    progress.start(jobs.len(), total);
    // Largest first, each thread taking the next file when it is free (longest
    // processing time first), so no thread is left hashing alone at the end. A rayon
    // iterator over the sorted list splits it into contiguous ranges instead: one thread
    // got the large files and hashed alone for half the run (docs/benchmarks.md).
    let mut jobs = jobs;
    jobs.sort_unstable_by_key(|j| std::cmp::Reverse(j.size));
    let next = AtomicUsize::new(0);
    let per_thread = rayon::broadcast(|_| {
        let mut buf = vec![0u8; 256 * 1024];
        let mut done = Vec::new();
        while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            match hash_file(job, alg, &mut buf, &progress.bar) {
                Ok(hex) => done.push((job.key.clone(), hex)),
                Err(e) => progress.bar.suspend(|| {
                    eprintln!("warning: skipping {}: {e}", job.path.display());
                }),
            }
        }
        done
    });
    per_thread.into_iter().flatten().collect()
}

fn hash_file(
    job: &FileJob,
    alg: HashAlg,
    buf: &mut [u8],
    bar: &ProgressBar,
) -> std::io::Result<String> {
    let mut file = File::open(&job.path)?;
    let mut hasher = alg.hasher();
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(hasher.finalize().to_hex())
}
