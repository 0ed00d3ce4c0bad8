//! A strict reader for big-endian TPM structures: every read is bounds-checked, sized
//! buffers (`TPM2B_*`) borrow from the input, and [`Reader::finish`] rejects trailing
//! bytes, so a structure is accepted only when it is exactly what was sent.

/// Why bytes are not the TPM structure expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended inside a field.
    #[error("{structure}: {field} needs {need} bytes at offset {offset}, {left} left")]
    Truncated {
        /// The structure being decoded.
        structure: &'static str,
        /// The field.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Offset of the field.
        offset: usize,
        /// Bytes left.
        left: usize,
    },
    /// Bytes after the end of the structure.
    #[error("{structure}: {extra} unexpected trailing bytes")]
    Trailing {
        /// The structure decoded.
        structure: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field holds a value the structure does not allow.
    #[error("{structure}: {message}")]
    Invalid {
        /// The structure being decoded.
        structure: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Reads one structure from a byte slice.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `structure` (its name goes into errors).
    pub fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Self {
            bytes,
            pos: 0,
            structure,
        }
    }

    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let out =
            self.bytes
                .get(self.pos..self.pos.saturating_add(n))
                .ok_or(CodecError::Truncated {
                    structure: self.structure,
                    field,
                    need: n,
                    offset: self.pos,
                    left: self.bytes.len() - self.pos,
                })?;
        self.pos += n;
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.bytes(1, field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A `TPM2B_*`: a big-endian `u16` size, then that many bytes.
    pub fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let n = self.u16(field)?;
        self.bytes(usize::from(n), field)
    }

    /// An error about this structure.
    pub fn invalid(&self, message: impl Into<String>) -> CodecError {
        CodecError::Invalid {
            structure: self.structure,
            message: message.into(),
        }
    }

    /// Ends the structure: no bytes may remain.
    pub fn finish(self) -> Result<(), CodecError> {
        let extra = self.bytes.len() - self.pos;
        if extra == 0 {
            Ok(())
        } else {
            Err(CodecError::Trailing {
                structure: self.structure,
                extra,
            })
        }
    }
}

/// Writes one big-endian TPM structure: the inverse of [`Reader`].
pub struct Writer {
    out: Vec<u8>,
    structure: &'static str,
}

impl Writer {
    /// Starts writing `structure` (its name goes into errors).
    pub fn new(structure: &'static str) -> Self {
        Self {
            out: Vec::new(),
            structure,
        }
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        self.out.extend_from_slice(data);
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a sized buffer (`TPM2B_*`): a `u16` length, then the bytes.
    pub fn tpm2b(&mut self, data: &[u8], field: &'static str) -> Result<&mut Self, CodecError> {
        let len = u16::try_from(data.len()).map_err(|_| CodecError::Invalid {
            structure: self.structure,
            message: format!("{field} is {} bytes, more than a TPM2B holds", data.len()),
        })?;
        Ok(self.u16(len).bytes(data))
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}
