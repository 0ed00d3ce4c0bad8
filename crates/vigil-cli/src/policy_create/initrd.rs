//! The files inside initrds, hashed straight from the (decompressed) cpio stream without
//! unpacking anything to disk.
//!
//! Keylime (`keylime/policy/initrd.py`) does what dracut's `skipcpio` does: if the file
//! starts with an uncompressed cpio archive (the early microcode one), it skips that
//! archive and the zero padding after it; if only zeros follow it, the first archive *is*
//! the initrd. The compression of what remains is recognised by its magic bytes (gzip, xz,
//! zstd, lz4, bzip2, or none), it is decompressed, and the first cpio archive in it is
//! extracted with `cpio -i`. Every regular file is then recorded under its path in the
//! archive with a leading `/` (spaces as `_`). This module follows the same steps,
//! including `cpio -i`'s handling of hard links (the data travels with the last link) and
//! of repeated names (the first one stays).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use vigil_core::HashAlg;

const HEADER_LEN: u64 = 110;
/// Longest member name accepted (Linux's PATH_MAX), so a corrupt header cannot make us
/// allocate without bound.
const MAX_NAME: u64 = 4096;
const TRAILER: &[u8] = b"TRAILER!!!";

/// `(path, hex digest)` of every regular file of every initrd in `dir` (files whose name
/// starts with `initr`, symbolic links to files included, as Keylime lists them).
pub(crate) fn digests(dir: &Path, alg: HashAlg) -> Result<Vec<(String, String)>> {
    let mut initrds = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("--ramdisk-dir {}: cannot list it", dir.display()))?
    {
        let entry = entry?;
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if is_file && entry.file_name().to_string_lossy().starts_with("initr") {
            initrds.push(entry.path());
        }
    }
    let per_initrd: Vec<Result<Vec<(String, String)>>> = initrds
        .par_iter()
        .map(|p| initrd_digests(p, alg).with_context(|| format!("initrd {}", p.display())))
        .collect();
    let mut out = Vec::new();
    for r in per_initrd {
        out.extend(r?);
    }
    Ok(out)
}

/// The digests of one initrd.
pub(crate) fn initrd_digests(path: &Path, alg: HashAlg) -> Result<Vec<(String, String)>> {
    let mut file = File::open(path)?;
    let offset = skip_cpio(&mut file)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut magic = [0u8; 6];
    let n = read_full(&mut file, &mut magic)?;
    file.seek(SeekFrom::Start(offset))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let stream: Box<dyn Read> = match Compression::detect(&magic[..n]) {
        Some(Compression::Cpio) => Box::new(reader),
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Some(Compression::Bzip2) => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
        Some(Compression::Zstd) => Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|e| anyhow!("zstd stream at offset {offset}: {e}"))?,
        ),
        Some(Compression::Lz4) => Box::new(lz4_flex::frame::FrameDecoder::new(reader)),
        Some(Compression::Lz4Legacy) => Box::new(Lz4Legacy::new(reader)),
        Some(Compression::Xz) => Box::new(XzReader::spawn(reader)),
        Some(Compression::Lzo) => {
            bail!("lzo-compressed initrds are not supported (recompress with another codec)")
        }
        None => bail!(
            "unrecognised data at offset {offset} (magic {}); expected a cpio archive or \
             gzip, xz, zstd, lz4 or bzip2 data",
            hex::encode(&magic[..n])
        ),
    };
    read_cpio(stream, alg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Cpio,
    Gzip,
    Bzip2,
    Zstd,
    Lz4,
    /// The kernel's legacy lz4 format (`lz4 -l`, what dracut writes); Keylime does not
    /// recognise it.
    Lz4Legacy,
    Xz,
    Lzo,
}

impl Compression {
    fn detect(magic: &[u8]) -> Option<Self> {
        const TABLE: [(&[u8], Compression); 9] = [
            (b"070701", Compression::Cpio),
            (b"070702", Compression::Cpio),
            (b"\x89LZO\x00\x0d", Compression::Lzo),
            (b"BZh", Compression::Bzip2),
            (b"\x1f\x8b", Compression::Gzip),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
            (b"\x04\x22\x4d\x18", Compression::Lz4),
            (b"\x02\x21\x4c\x18", Compression::Lz4Legacy),
            (b"\xfd7zXZ\x00", Compression::Xz),
        ];
        TABLE
            .iter()
            .find(|(m, _)| magic.starts_with(m))
            .map(|(_, c)| *c)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_at(f: &mut File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(pos))?;
    let mut buf = vec![0u8; len];
    let n = read_full(f, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn hex_field(header: &[u8], at: usize) -> Result<u64> {
    let text = header
        .get(at..at + 8)
        .and_then(|f| std::str::from_utf8(f).ok())
        .ok_or_else(|| anyhow!("truncated cpio header"))?;
    u64::from_str_radix(text, 16).map_err(|_| anyhow!("cpio header field '{text}' is not hex"))
}

fn is_cpio(b: &[u8]) -> bool {
    b.starts_with(b"070701") || b.starts_with(b"070702")
}

const fn align4(x: u64) -> u64 {
    (x + 3) & !3
}

/// Where the main initrd starts: after a leading uncompressed cpio archive and the zeros
/// that pad it, or at 0 when nothing but zeros follows that archive (dracut's skipcpio,
/// step for step as Keylime runs it).
fn skip_cpio(f: &mut File) -> Result<u64> {
    let size = f.metadata()?.len();
    let mut buf = read_at(f, 0, 2048)?;
    if !is_cpio(&buf) {
        return Ok(0);
    }
    let mut pos = 0u64;
    let mut trailer = false;
    loop {
        let namesize = hex_field(&buf, 94)?;
        let filesize = hex_field(&buf, 54)?;
        // Keylime slices the name from its buffer with an absolute end, so only the
        // part inside the buffer is compared; kept for identical offsets.
        let end = usize::try_from((pos + HEADER_LEN + namesize).min(buf.len() as u64))
            .unwrap_or(buf.len());
        let name = buf.get(HEADER_LEN as usize..end).unwrap_or(&[]);
        pos = align4(pos + HEADER_LEN + namesize);
        pos = align4(pos + filesize);
        if namesize == TRAILER.len() as u64 + 1 && name == TRAILER {
            trailer = true;
            break;
        }
        buf = read_at(f, pos, (HEADER_LEN as usize) + TRAILER.len())?;
        if !is_cpio(&buf) {
            eprintln!("warning: corrupt cpio archive at offset {pos}");
            return Ok(pos);
        }
        if pos + buf.len() as u64 >= size {
            break;
        }
    }
    let at_eof = if trailer { pos >= size } else { true };
    if at_eof {
        return Ok(pos);
    }
    // Skip the zeros after the early archive.
    loop {
        let chunk = read_at(f, pos, 2048)?;
        if let Some(i) = chunk.iter().position(|&b| b != 0) {
            return Ok(pos + i as u64);
        }
        pos += chunk.len() as u64;
        if chunk.is_empty() || pos >= size {
            // Nothing but padding: the first archive is the whole initrd.
            return Ok(0);
        }
    }
}

/// Hashes every regular file of the first cpio archive of `stream`.
fn read_cpio(mut stream: impl Read, alg: HashAlg) -> Result<Vec<(String, String)>> {
    let mut out: HashMap<String, String> = HashMap::new();
    // Hard links of newc archives: every link but the last has no data; cpio creates
    // them once the data arrives (or empty, at the end, if it never does).
    let mut pending: HashMap<(u64, u64, u64), Vec<String>> = HashMap::new();
    let mut header = [0u8; HEADER_LEN as usize];
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = read_full(&mut stream, &mut header)?;
        if n == 0 {
            break;
        }
        if n < header.len() {
            bail!("truncated cpio header");
        }
        if !is_cpio(&header) {
            bail!(
                "not a cpio newc header (magic {})",
                String::from_utf8_lossy(&header[..6])
            );
        }
        let ino = hex_field(&header, 6)?;
        let mode = hex_field(&header, 14)?;
        let nlink = hex_field(&header, 38)?;
        let filesize = hex_field(&header, 54)?;
        let (major, minor) = (hex_field(&header, 62)?, hex_field(&header, 70)?);
        let namesize = hex_field(&header, 94)?;
        if namesize > MAX_NAME {
            bail!("cpio member name of {namesize} bytes");
        }
        let mut name = vec![0u8; namesize as usize];
        if read_full(&mut stream, &mut name)? < name.len() {
            bail!("truncated cpio member name");
        }
        skip(
            &mut stream,
            align4(HEADER_LEN + namesize) - (HEADER_LEN + namesize),
        )?;
        let name = name.strip_suffix(b"\0").unwrap_or(&name);
        if name == TRAILER {
            break;
        }
        let regular = mode & 0o170000 == 0o100000;
        let key = if regular { member_key(name) } else { None };
        match key {
            Some(key) => {
                let mut hasher = alg.hasher();
                let mut left = filesize;
                while left > 0 {
                    let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
                    let got = read_full(&mut stream, &mut buf[..want])?;
                    if got == 0 {
                        bail!("truncated cpio member data");
                    }
                    hasher.update(&buf[..got]);
                    left -= got as u64;
                }
                let digest = hasher.finalize().to_hex();
                if nlink > 1 && filesize == 0 {
                    pending.entry((ino, major, minor)).or_default().push(key);
                } else {
                    if nlink > 1 {
                        for k in pending.remove(&(ino, major, minor)).unwrap_or_default() {
                            out.entry(k).or_insert_with(|| digest.clone());
                        }
                    }
                    out.entry(key).or_insert(digest);
                }
            }
            None => skip(&mut stream, filesize)?,
        }
        skip(&mut stream, align4(filesize) - filesize)?;
    }
    let empty = alg.hash(&[]).to_hex();
    for k in pending.into_values().flatten() {
        out.entry(k).or_insert_with(|| empty.clone());
    }
    Ok(out.into_iter().collect())
}

/// The policy path of a member: a leading `/`, `.` parts and leading slashes dropped
/// (as `cpio -i` extracts it), spaces as `_`. Names with `..` are refused by `cpio`.
fn member_key(name: &[u8]) -> Option<String> {
    let name = String::from_utf8_lossy(name);
    let mut parts = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")).replace(' ', "_"))
}

fn skip(r: &mut impl Read, n: u64) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied < n {
        bail!("truncated cpio archive");
    }
    Ok(())
}

/// The kernel's legacy lz4 format: a magic, then blocks of `[u32 LE compressed size]
/// [block]`, each decompressing to at most 8 MiB; other magic numbers between blocks
/// (concatenated streams) are skipped.
struct Lz4Legacy<R> {
    inner: R,
    out: Vec<u8>,
    at: usize,
    done: bool,
}

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

impl<R: Read> Lz4Legacy<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            out: Vec::new(),
            at: 0,
            done: false,
        }
    }

    fn next_block(&mut self) -> std::io::Result<()> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        loop {
            let mut word = [0u8; 4];
            let n = read_full(&mut self.inner, &mut word)?;
            if n == 0 {
                self.done = true;
                return Ok(());
            }
            if n < 4 {
                return Err(bad("truncated lz4 block size"));
            }
            let size = u32::from_le_bytes(word);
            if size == LZ4_LEGACY_MAGIC {
                continue;
            }
            let size = size as usize;
            if size > lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK) {
                // Not a block: the end of the lz4 data (the kernel stops here too).
                self.done = true;
                return Ok(());
            }
            let mut block = vec![0u8; size];
            if read_full(&mut self.inner, &mut block)? < size {
                return Err(bad("truncated lz4 block"));
            }
            self.out.resize(LZ4_LEGACY_BLOCK, 0);
            let len = lz4_flex::block::decompress_into(&block, &mut self.out)
                .map_err(|e| bad(&format!("lz4 block: {e}")))?;
            self.out.truncate(len);
            self.at = 0;
            return Ok(());
        }
    }
}

impl<R: Read> Read for Lz4Legacy<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.out.len() && !self.done {
            self.next_block()?;
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// xz decompression as a `Read`: `lzma-rs` decodes into a `Write`, so it runs on its own
/// thread and hands chunks over a bounded channel (memory stays flat however large the
/// initrd).
struct XzReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

struct ChannelWriter {
    tx: std::sync::mpsc::SyncSender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx
                .send(Ok(chunk))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader gone"))?;
        }
        Ok(())
    }
}

impl XzReader {
    fn spawn<R: std::io::BufRead + Send + 'static>(mut input: R) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            let mut w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            let result = lzma_rs::xz_decompress(&mut input, &mut w)
                .map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("xz: {e}"))
                })
                .and_then(|()| std::io::Write::flush(&mut w));
            if let Err(e) = result {
                // The reader may have stopped at the cpio trailer already; then nobody
                // listens and the error does not matter.
                let _ = tx.send(Err(e));
            }
        });
        Self {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for XzReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys() {
        assert_eq!(
            member_key(b"./usr/bin/foo bar").as_deref(),
            Some("/usr/bin/foo_bar")
        );
        assert_eq!(member_key(b"/etc//x").as_deref(), Some("/etc/x"));
        assert_eq!(member_key(b"."), None);
        assert_eq!(member_key(b"a/../b"), None);
    }
}
