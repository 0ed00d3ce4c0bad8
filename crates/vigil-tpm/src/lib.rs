//! The agent's TPM layer: the only Vigil crate that links libtss2 (through
//! `tss-esapi` 7).
//!
//! A [`Tpm`] owns one TSS context on a dedicated thread and runs every operation there:
//! the tss-esapi `Context` is `Send` but not `Sync`, and a TPM without a resource
//! manager (swtpm, `device:/dev/tpm0`) must see one client with a coherent view of its
//! handles. `Tpm` itself is `Send + Sync`; calls from several threads are serialised.
//!
//! Handle discipline: at most two transient objects stay loaded, the EK and the AK
//! (swtpm has three transient slots); sessions are flushed after the command that used
//! them; every loaded object is flushed when it is replaced and when the `Tpm` is
//! dropped (a persistent EK is only closed, never flushed).
//!
//! Every structure is encoded and parsed by `vigil-core` (quote string, PCR blob,
//! credential blob, `TPM2B_PUBLIC` parsing and names); this crate only converts between
//! those bytes and tss-esapi types. See `docs/agent-tpm.md`.

mod error;
mod worker;

use std::ops::RangeInclusive;
use std::sync::mpsc;
use std::thread::JoinHandle;

pub use error::TpmError;
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_core::{Digest, HashAlg};
use worker::Worker;

/// NV indices the EK CA chain is read from (TCG EK credential profile). rust-keylime
/// appends these certificates to the `ekcert` PEM bundle it registers; Keylime's
/// registrar keeps only the first certificate.
pub const EK_CA_CHAIN_NV: RangeInclusive<u32> = 0x01c0_0100..=0x01c0_01ff;

/// The PCR Keylime binds the agent's node key (NK) to.
pub const DATA_PCR: u32 = 16;

/// How many times [`Tpm::quote`] reads the PCRs and quotes before giving up because a
/// PCR kept changing in between.
pub const QUOTE_ATTEMPTS: usize = 5;

/// An EK from the TCG default templates (EK credential profile, low range for RSA-2048
/// and P-256, high range for P-384).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkAlg {
    /// RSA-2048, template L-1.
    Rsa2048,
    /// ECC NIST P-256, template L-2.
    EccP256,
    /// ECC NIST P-384, template H-3.
    EccP384,
}

impl EkAlg {
    /// The NV index of the EK certificate the TCG profile assigns to this template.
    pub const fn cert_nv_index(self) -> u32 {
        match self {
            Self::Rsa2048 => 0x01c0_0002,
            Self::EccP256 => 0x01c0_000a,
            Self::EccP384 => 0x01c0_0016,
        }
    }
}

/// Where the EK comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkSource {
    /// Created (deterministically) from the TCG default template.
    Template(EkAlg),
    /// An EK the platform persisted at this handle (`0x81xxxxxx`), e.g. Keylime's
    /// `ek_handle`.
    Persistent(u32),
}

/// The EK now loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkInfo {
    /// `TPM2B_PUBLIC` bytes: what the agent registers as `ek_tpm` (base64), and what
    /// `vigil_core::tpm::public::TpmPublic::parse_tpm2b` reads for MakeCredential.
    pub public: Vec<u8>,
    /// The TPM's name of the EK (`nameAlg || H(TPMT_PUBLIC)`).
    pub name: Vec<u8>,
    /// The template it matches by key type and size; `None` for a persistent EK of
    /// another kind.
    pub alg: Option<EkAlg>,
    /// The persistent handle, when it came from one.
    pub persistent: Option<u32>,
}

/// An AK's key type. The signing scheme follows: RSASSA for RSA, ECDSA for ECC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkKey {
    /// RSA-2048 with RSASSA-PKCS1-v1_5.
    Rsa2048,
    /// ECC NIST P-256 with ECDSA.
    EccP256,
    /// ECC NIST P-384 with ECDSA.
    EccP384,
}

/// An AK's algorithms: key type and the hash of both its name and its signing scheme
/// (as Keylime's `tpm_hash_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AkAlg {
    /// Key type.
    pub key: AkKey,
    /// Name and signing hash.
    pub hash: HashAlg,
}

impl AkAlg {
    /// RSA-2048, RSASSA with SHA-256: Keylime's default.
    pub const RSA_SHA256: Self = Self {
        key: AkKey::Rsa2048,
        hash: HashAlg::Sha256,
    };
    /// ECC P-256, ECDSA with SHA-256.
    pub const ECC_P256_SHA256: Self = Self {
        key: AkKey::EccP256,
        hash: HashAlg::Sha256,
    };
}

impl Default for AkAlg {
    fn default() -> Self {
        Self::RSA_SHA256
    }
}

/// What the agent persists to reuse its AK across restarts. The private part is
/// encrypted by the TPM under the EK and useless elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkBlob {
    /// `TPM2B_PUBLIC` (size-prefixed, as `tpm2_createak -u` writes it): registered as
    /// `aik_tpm` (base64).
    pub public: Vec<u8>,
    /// `TPM2B_PRIVATE` (size-prefixed, as `tpm2_createak -r` writes it).
    pub private: Vec<u8>,
    /// The name of the EK the AK was created under: an AK is only reloaded under the
    /// same EK.
    pub ek_name: Vec<u8>,
}

/// The AK now loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkInfo {
    /// The TPM's name of the AK (what MakeCredential binds the secret to).
    pub name: Vec<u8>,
    /// Its algorithms.
    pub alg: AkAlg,
}

/// Whether [`Tpm::load_or_create_ak`] reused the persisted AK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkOrigin {
    /// The persisted blob was loaded.
    Reloaded,
    /// A new AK was created (no blob, or it did not match).
    Created,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// A connection to one TPM, owned by a worker thread (see the crate docs).
pub struct Tpm {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").finish_non_exhaustive()
    }
}

impl Tpm {
    /// Opens the TPM behind a TCTI string: `device:/dev/tpmrm0` (production, through
    /// the kernel resource manager), `swtpm:host=127.0.0.1,port=2321` (swtpm's socket
    /// interface), `mssim:host=…,port=…` (the Microsoft simulator protocol) or
    /// `tabrmd:…`. The TPM must be started up already (swtpm:
    /// `--flags not-need-init,startup-clear`).
    pub fn connect(tcti: &str) -> Result<Self, TpmError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = mpsc::sync_channel(1);
        let tcti = tcti.to_owned();
        let worker = std::thread::Builder::new()
            .name("vigil-tpm".into())
            .spawn(move || match Worker::open(&tcti) {
                Ok(mut worker) => {
                    let _ = ready.send(Ok(()));
                    for job in queue {
                        job(&mut worker);
                    }
                    // Dropping the worker flushes what it loaded.
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|_| TpmError::WorkerGone)?;
        opened.recv().map_err(|_| TpmError::WorkerGone)??;
        Ok(Self {
            jobs: Some(jobs),
            worker: Some(worker),
        })
    }

    /// Runs `f` on the worker thread and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, TpmError> {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |worker| {
            let _ = reply.send(f(worker));
        });
        self.jobs
            .as_ref()
            .ok_or(TpmError::WorkerGone)?
            .send(job)
            .map_err(|_| TpmError::WorkerGone)?;
        result.recv().map_err(|_| TpmError::WorkerGone)?
    }

    /// Sets up the EK (replacing, and flushing, any EK and AK loaded before) and keeps
    /// it loaded.
    pub fn setup_ek(&self, source: EkSource) -> Result<EkInfo, TpmError> {
        self.call(move |w| w.setup_ek(source))
    }

    /// The contents of an NV index, or `None` when it is not defined.
    pub fn nv_read(&self, index: u32) -> Result<Option<Vec<u8>>, TpmError> {
        self.call(move |w| w.nv_read(index))
    }

    /// The certificate of the loaded EK from its TCG NV index (RSA-2048 `0x01c00002`,
    /// P-256 `0x01c0000a`, P-384 `0x01c00016`), or `None` when the TPM has none there.
    /// The bytes are as stored (DER, sometimes padded; `vigil_core::tpm::ek_cert`
    /// decides what to accept).
    pub fn ek_certificate(&self) -> Result<Option<Vec<u8>>, TpmError> {
        self.call(|w| w.ek_certificate())
    }

    /// The EK CA chain: the contents of every defined NV index in [`EK_CA_CHAIN_NV`], in
    /// index order (Keylime sends them concatenated). Empty when there is none.
    pub fn ek_ca_chain(&self) -> Result<Vec<Vec<u8>>, TpmError> {
        self.call(|w| w.ek_ca_chain())
    }

    /// Creates an AK under the loaded EK (restricted signing key, `fixedTPM`,
    /// `fixedParent`, authorised by the EK's policy), loads it (flushing any previous
    /// AK) and returns what to persist.
    pub fn create_ak(&self, alg: AkAlg) -> Result<AkBlob, TpmError> {
        self.call(move |w| w.create_ak(alg))
    }

    /// Loads a persisted AK under the loaded EK (flushing any previous AK). It must
    /// have been made under this EK and, when `expected` is given, with these
    /// algorithms; otherwise [`TpmError::AkMismatch`].
    pub fn load_ak(&self, blob: &AkBlob, expected: Option<AkAlg>) -> Result<AkInfo, TpmError> {
        let blob = blob.clone();
        self.call(move |w| w.load_ak(&blob, expected))
    }

    /// Reuses the persisted AK when it belongs to the loaded EK and has algorithms
    /// `alg` (and the TPM accepts it), and creates a new one otherwise: the agent's
    /// start-up rule. Returns the blob to persist (the old one when reloaded).
    pub fn load_or_create_ak(
        &self,
        persisted: Option<&AkBlob>,
        alg: AkAlg,
    ) -> Result<(AkBlob, AkInfo, AkOrigin), TpmError> {
        if let Some(blob) = persisted {
            match self.load_ak(blob, Some(alg)) {
                Ok(info) => return Ok((blob.clone(), info, AkOrigin::Reloaded)),
                // A blob that no longer fits (another EK or TPM, other algorithms) is
                // replaced; an unreachable TPM is not a reason to make a new AK.
                Err(TpmError::AkMismatch(_) | TpmError::Tpm { .. } | TpmError::Malformed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let blob = self.create_ak(alg)?;
        let info = self.ak_info()?;
        Ok((blob, info, AkOrigin::Created))
    }

    /// The loaded AK.
    pub fn ak_info(&self) -> Result<AkInfo, TpmError> {
        self.call(|w| w.ak_info())
    }

    /// `TPM2_ActivateCredential(activate = AK, key = EK)` on a tpm2-tools credential
    /// file (what a Keylime registrar returns, base64-decoded, as `blob`); the secret.
    pub fn activate_credential(&self, blob: &[u8]) -> Result<Vec<u8>, TpmError> {
        let blob = blob.to_vec();
        self.call(move |w| w.activate_credential(&blob))
    }

    /// Keylime's node-key binding: resets PCR 16 and extends it in `bank` with
    /// `H_bank(nk_public_pem)`, the exact PEM text the agent serves as its public key.
    pub fn bind_data_pcr(&self, bank: HashAlg, nk_public_pem: &str) -> Result<(), TpmError> {
        let measurement = bank.hash(nk_public_pem.as_bytes());
        self.call(move |w| {
            w.pcr_reset(DATA_PCR)?;
            w.pcr_extend(DATA_PCR, bank, &measurement)
        })
    }

    /// `TPM2_PCR_Extend` of one bank of `pcr` with `digest`.
    pub fn pcr_extend(&self, pcr: u32, bank: HashAlg, digest: &Digest) -> Result<(), TpmError> {
        let digest = *digest;
        self.call(move |w| w.pcr_extend(pcr, bank, &digest))
    }

    /// The values of `pcrs` (0–23) in `bank`, in ascending PCR order.
    pub fn pcr_read(&self, bank: HashAlg, pcrs: &[u32]) -> Result<Vec<(u32, Digest)>, TpmError> {
        let pcrs = pcrs.to_vec();
        self.call(move |w| w.pcr_read(bank, &pcrs))
    }

    /// A Keylime quote with the loaded AK: the PCRs of `mask` (bit *i* = PCR *i*, PCRs
    /// 0–23) plus PCR 16 as Keylime always adds, in `bank`, with `nonce` as the
    /// qualifying data (at most 64 bytes). The PCRs are read, then quoted; when the
    /// values read do not hash to the signed `pcrDigest` (a PCR moved in between) it
    /// tries again, up to [`QUOTE_ATTEMPTS`] times.
    pub fn quote(&self, nonce: &[u8], mask: u32, bank: HashAlg) -> Result<KeylimeQuote, TpmError> {
        let nonce = nonce.to_vec();
        self.call(move |w| w.quote(&nonce, mask, bank))
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        // Closing the queue ends the worker's loop; it then flushes and finalizes.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
