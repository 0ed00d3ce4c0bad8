//! Streaming reader for `ascii_runtime_measurements`: lines with their numbers, out of
//! one reused buffer, so memory stays flat however long the log is.
//!
//! The source is any [`BufRead`] the caller opened (a file, a socket body, a slice);
//! this module does no I/O of its own.

use std::io::{self, BufRead};

use super::entry::EntryError;
use super::replay::{EntryValidator, ImaAttestState, ImaConfig, ImaReplay, ImaVerdict};
use crate::hash::Digest;

/// Default cap on one line. `ima-buf` lines carrying certificates are a few KiB; a
/// megabyte leaves ample room while bounding what one line can make us hold.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// A reason a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The underlying reader failed; reading stops.
    #[error("ima log line {line}: read failed: {source}")]
    Io {
        /// 1-based number of the line being read.
        line: usize,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The line is longer than the cap; it was skipped and reading can go on.
    #[error("ima log line {line} is longer than {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The cap in force.
        limit: usize,
    },
    /// The line is not UTF-8; reading can go on.
    #[error("ima log line {line} is not valid UTF-8 (byte offset {offset})")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
        /// Offset of the first invalid byte within the line.
        offset: usize,
    },
}

impl ReadError {
    /// The 1-based line number the error is about.
    pub fn line(&self) -> usize {
        match self {
            Self::Io { line, .. }
            | Self::LineTooLong { line, .. }
            | Self::InvalidUtf8 { line, .. } => *line,
        }
    }

    /// The same problem as a per-line parse error, when reading can go on after it.
    pub fn as_entry_error(&self) -> Option<EntryError> {
        match *self {
            Self::Io { .. } => None,
            Self::LineTooLong { limit, .. } => Some(EntryError::LineTooLong { len: limit + 1 }),
            Self::InvalidUtf8 { offset, .. } => Some(EntryError::NotUtf8 { offset }),
        }
    }
}

/// One line of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImaLine<'b> {
    /// 1-based number of the line within this read.
    pub line_no: usize,
    /// The measurement-list entry number of the line (the first entry number plus the
    /// lines before it), as the agent counts entries.
    pub entry_no: u64,
    /// The line without its `\n`.
    pub text: &'b str,
}

/// Reads a measurement list line by line. Not an [`Iterator`]: each line borrows the
/// reader's buffer until the next call.
#[derive(Debug)]
pub struct ImaLogReader<R> {
    inner: R,
    buf: Vec<u8>,
    max_line: usize,
    line_no: usize,
    first_entry: u64,
    done: bool,
}

impl<R: BufRead> ImaLogReader<R> {
    /// Reads from `inner`, numbering entries from 0, with [`DEFAULT_MAX_LINE`].
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max_line: DEFAULT_MAX_LINE,
            line_no: 0,
            first_entry: 0,
            done: false,
        }
    }

    /// Numbers entries from `entry` (the `ima_measurement_list_entry` of a batch).
    pub fn with_first_entry(mut self, entry: u64) -> Self {
        self.first_entry = entry;
        self
    }

    /// Caps lines at `max_line` bytes (excluding the `\n`).
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// The bytes of the last line read, cut at the cap (useful to quote a line that was
    /// rejected as not UTF-8 or too long).
    pub fn raw_line(&self) -> &[u8] {
        &self.buf
    }

    /// The next line, `None` at the end of input (or after an I/O error).
    pub fn next_line(&mut self) -> Option<Result<ImaLine<'_>, ReadError>> {
        if self.done {
            return None;
        }
        self.buf.clear();
        let line = self.line_no + 1;
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.done = true;
                    return Some(Err(ReadError::Io { line, source }));
                }
            };
            if chunk.is_empty() {
                self.done = true;
                if !saw_any {
                    return None;
                }
                break;
            }
            saw_any = true;
            let (take, newline) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                let room = self.max_line.saturating_sub(self.buf.len());
                if take > room {
                    // Keep what fits (to quote it) and drop the rest of this line.
                    self.buf
                        .extend_from_slice(chunk.get(..room).unwrap_or_default());
                    too_long = true;
                } else {
                    self.buf
                        .extend_from_slice(chunk.get(..take).unwrap_or_default());
                }
            }
            self.inner.consume(take + usize::from(newline));
            if newline {
                break;
            }
        }
        self.line_no = line;
        if too_long {
            return Some(Err(ReadError::LineTooLong {
                line,
                limit: self.max_line,
            }));
        }
        let entry_no = self.first_entry.saturating_add(line as u64 - 1);
        match std::str::from_utf8(&self.buf) {
            Ok(text) => Some(Ok(ImaLine {
                line_no: line,
                entry_no,
                text,
            })),
            Err(e) => Some(Err(ReadError::InvalidUtf8 {
                line,
                offset: e.valid_up_to(),
            })),
        }
    }
}

/// Streams a whole batch from `reader` through [`ImaReplay`]. Lines the reader rejects
/// (too long, not UTF-8) count as unparsable lines (`ima.parser.entry`); only an I/O
/// error aborts.
pub fn process_reader<R: BufRead, V: EntryValidator>(
    cfg: ImaConfig,
    state: Option<&mut ImaAttestState>,
    reader: &mut ImaLogReader<R>,
    quoted_pcr: Option<Digest>,
    validator: V,
) -> Result<ImaVerdict, ReadError> {
    let mut replay = ImaReplay::new(cfg, state, quoted_pcr, validator);
    while let Some(next) = reader.next_line() {
        match next {
            Ok(line) => replay.feed_line(line.text),
            Err(err) => match err.as_entry_error() {
                Some(entry_error) => {
                    const SHOWN: usize = 256;
                    let raw = reader.raw_line();
                    let shown = String::from_utf8_lossy(raw.get(..SHOWN).unwrap_or(raw));
                    replay.feed_unreadable(&shown, entry_error);
                }
                None => return Err(err),
            },
        }
    }
    Ok(replay.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], max: usize) -> Vec<Result<(usize, u64, String), String>> {
        let mut r = ImaLogReader::new(input)
            .with_max_line(max)
            .with_first_entry(5);
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push(
                l.map(|l| (l.line_no, l.entry_no, l.text.to_owned()))
                    .map_err(|e| e.to_string()),
            );
        }
        out
    }

    #[test]
    fn numbers_lines_and_keeps_trailing_spaces() {
        let got = collect(b"a \n\nb\nc", 100);
        let want = [(1, 5, "a "), (2, 6, ""), (3, 7, "b"), (4, 8, "c")];
        assert_eq!(got.len(), want.len());
        for (g, (n, e, t)) in got.iter().zip(want) {
            assert_eq!(g.as_ref().unwrap(), &(n, e, t.to_owned()));
        }
        assert!(collect(b"", 100).is_empty());
        assert_eq!(collect(b"x\n", 100).len(), 1);
    }

    #[test]
    fn long_and_invalid_lines_are_errors_naming_the_line() {
        let got = collect(b"ok\n0123456789abc\n\xff\xfe\nend", 8);
        assert_eq!(got[0].as_ref().unwrap().2, "ok");
        assert_eq!(
            got[1].as_ref().unwrap_err(),
            "ima log line 2 is longer than 8 bytes"
        );
        assert_eq!(
            got[2].as_ref().unwrap_err(),
            "ima log line 3 is not valid UTF-8 (byte offset 0)"
        );
        assert_eq!(got[3].as_ref().unwrap().2, "end");
        // Exactly at the cap is fine.
        assert_eq!(collect(b"12345678\n", 8)[0].as_ref().unwrap().2, "12345678");
    }

    #[test]
    fn tiny_read_chunks_give_the_same_lines() {
        let data = b"first line\nsecond \n\nthird";
        let small = std::io::BufReader::with_capacity(1, &data[..]);
        let mut r = ImaLogReader::new(small);
        let mut lines = Vec::new();
        while let Some(l) = r.next_line() {
            lines.push(l.unwrap().text.to_owned());
        }
        assert_eq!(lines, ["first line", "second ", "", "third"]);
    }

    #[test]
    fn buffer_size_does_not_change_the_lines() {
        // Whole input buffered at once vs. 3-byte reads that split every line.
        let data = b"10 aa ima-ng sha1:00 /x\n\nbad \xc3(\n0123456789012345678901234\nlast ";
        let run = |cap: usize| {
            let mut r = ImaLogReader::new(std::io::BufReader::with_capacity(cap, &data[..]))
                .with_max_line(20);
            let mut out = Vec::new();
            while let Some(l) = r.next_line() {
                out.push(match l {
                    Ok(l) => Ok((l.line_no, l.entry_no, l.text.to_owned())),
                    Err(e) => Err((e.to_string(), r.raw_line().to_vec())),
                });
            }
            out
        };
        let whole = run(1 << 16);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole, run(3));
        assert_eq!(whole[2].as_ref().unwrap_err().1, b"bad \xc3(");
        assert_eq!(whole[3].as_ref().unwrap_err().1, b"01234567890123456789");
    }

    #[test]
    fn io_errors_stop_reading() {
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut r = ImaLogReader::new(io::BufReader::new(Failing));
        let err = r.next_line().unwrap().unwrap_err();
        assert!(matches!(err, ReadError::Io { line: 1, .. }));
        assert!(err.as_entry_error().is_none());
        assert!(r.next_line().is_none());
    }
}
