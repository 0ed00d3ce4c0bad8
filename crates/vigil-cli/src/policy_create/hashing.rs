//! Hashing files in parallel, with a progress bar (files and bytes, rate, ETA) on a
//! terminal and nothing at all otherwise.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vigil_core::hash::{blocks_of, BlockHasher};
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

/// Bytes read from a file at a time.
const READ_SIZE: usize = 64 * 1024;

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
    let queue = Queue {
        jobs: &jobs,
        next: AtomicUsize::new(0),
        bar: &progress.bar,
    };
    let per_thread = rayon::broadcast(|_| match BlockHasher::new(alg) {
        Some(hasher) => queue.hash_in_pairs(hasher),
        None => queue.hash_one_at_a_time(alg),
    });
    per_thread.into_iter().flatten().collect()
}

/// The sorted files, handed out one at a time to every hashing thread.
struct Queue<'j> {
    jobs: &'j [FileJob],
    next: AtomicUsize,
    bar: &'j ProgressBar,
}

impl<'j> Queue<'j> {
    fn take(&self) -> Option<&'j FileJob> {
        self.jobs.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn skip(&self, job: &FileJob, e: &std::io::Error) {
        self.bar.suspend(|| {
            eprintln!("warning: skipping {}: {e}", job.path.display());
        });
    }

    /// For algorithms without a [`BlockHasher`]: each file through its streaming hash.
    fn hash_one_at_a_time(&self, alg: HashAlg) -> Vec<(String, String)> {
        let mut buf = vec![0u8; READ_SIZE];
        let mut done = Vec::new();
        while let Some(job) = self.take() {
            match hash_file(job, alg, &mut buf, self.bar) {
                Ok(hex) => done.push((job.key.clone(), hex)),
                Err(e) => self.skip(job, &e),
            }
        }
        done
    }

    /// SHA-1 and SHA-256: two files at once, their blocks fed alternately, so that each
    /// hash runs while the other waits on its rounds' latency (`vigil_core::hash`'s
    /// block module; SHA-256 at 24 ns per 64-byte block this way, against 32 ns for one
    /// file at a time through the crate's streaming API).
    fn hash_in_pairs(&self, fresh: BlockHasher) -> Vec<(String, String)> {
        let mut done = Vec::new();
        let mut lanes: [Option<Lane<'j>>; 2] = [None, None];
        let mut spare: Vec<Vec<u8>> = Vec::new();
        loop {
            for slot in &mut lanes {
                // Keep the lane busy: a file with a whole block to hash, or none left.
                loop {
                    let lane = match slot {
                        Some(lane) => lane,
                        None => match self.open_next(fresh, &mut spare) {
                            Some(lane) => slot.insert(lane),
                            None => break,
                        },
                    };
                    match lane.fill(self.bar) {
                        Ok(()) if !lane.is_done() => break,
                        Ok(()) => {
                            if let Some(lane) = slot.take() {
                                let (key, hex, buf) = lane.finish();
                                done.push((key, hex));
                                spare.push(buf);
                            }
                        }
                        Err(e) => {
                            if let Some(lane) = slot.take() {
                                self.skip(lane.job, &e);
                                spare.push(lane.buf);
                            }
                        }
                    }
                }
            }
            match &mut lanes {
                [Some(a), Some(b)] => {
                    let n = a.whole_blocks().min(b.whole_blocks());
                    let ((a_hasher, a_data), (b_hasher, b_data)) = (a.parts(), b.parts());
                    for (x, y) in blocks_of(a_data).zip(blocks_of(b_data)) {
                        a_hasher.block(x);
                        b_hasher.block(y);
                    }
                    a.start += n * 64;
                    b.start += n * 64;
                }
                [Some(lane), None] | [None, Some(lane)] => {
                    let (hasher, data) = lane.parts();
                    let rest = hasher.blocks(data).len();
                    lane.start = lane.end - rest;
                }
                [None, None] => break,
            }
        }
        done
    }

    fn open_next(&self, fresh: BlockHasher, spare: &mut Vec<Vec<u8>>) -> Option<Lane<'j>> {
        while let Some(job) = self.take() {
            match File::open(&job.path) {
                Ok(file) => {
                    return Some(Lane {
                        job,
                        file,
                        hasher: fresh,
                        buf: spare.pop().unwrap_or_else(|| vec![0u8; READ_SIZE]),
                        start: 0,
                        end: 0,
                        eof: false,
                    })
                }
                Err(e) => self.skip(job, &e),
            }
        }
        None
    }
}

/// One file being hashed by [`Queue::hash_in_pairs`].
struct Lane<'j> {
    job: &'j FileJob,
    file: File,
    hasher: BlockHasher,
    /// Read but not yet hashed: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Lane<'_> {
    /// The hasher, and the bytes read and not yet hashed.
    fn parts(&mut self) -> (&mut BlockHasher, &[u8]) {
        let pending = self.buf.get(self.start..self.end).unwrap_or_default();
        (&mut self.hasher, pending)
    }

    fn whole_blocks(&self) -> usize {
        (self.end - self.start) / 64
    }

    /// True when the file has ended and less than a block is left.
    fn is_done(&self) -> bool {
        self.eof && self.whole_blocks() == 0
    }

    /// Reads until a whole block is buffered or the file ends.
    fn fill(&mut self, bar: &ProgressBar) -> std::io::Result<()> {
        if self.whole_blocks() > 0 || self.eof {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < 64 && !self.eof {
            match self
                .file
                .read(self.buf.get_mut(self.end..).unwrap_or_default())
            {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    bar.inc(n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The policy key, the hex digest, and the buffer for the next file.
    fn finish(mut self) -> (String, String, Vec<u8>) {
        let (hasher, pending) = self.parts();
        let digest = hasher.finish(pending);
        (self.job.key.clone(), digest.to_hex(), self.buf)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_matches_the_whole_file_hash_at_block_and_buffer_edges() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            127,
            128,
            1000,
            READ_SIZE - 1,
            READ_SIZE,
            READ_SIZE + 1,
            3 * READ_SIZE + 5,
        ];
        let mut jobs = Vec::new();
        let mut want = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let body: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, &body).unwrap();
            jobs.push((path, format!("/f{i}"), size as u64));
            want.push((format!("/f{i}"), body));
        }
        // A file that vanished after the walk is skipped, not fatal.
        jobs.push((dir.path().join("gone"), "/gone".into(), 5));
        let progress = Progress::new(false);
        for alg in HashAlg::ALL {
            let to_hash = jobs
                .iter()
                .map(|(path, key, size)| FileJob {
                    path: path.clone(),
                    key: key.clone(),
                    size: *size,
                })
                .collect();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let mut got = pool.install(|| hash_files(to_hash, alg, &progress));
            got.sort();
            let mut expected: Vec<(String, String)> = want
                .iter()
                .map(|(key, body)| (key.clone(), alg.hash(body).to_hex()))
                .collect();
            expected.sort();
            assert_eq!(got, expected, "{alg}");
        }
    }
}
