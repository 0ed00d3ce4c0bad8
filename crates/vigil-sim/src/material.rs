//! What every simulated node shares, made once: the IMA entries nodes measure (their
//! lines and PCR 10 extends precomputed, so a node's log is a list of small indices),
//! the UEFI event log and the PCRs it replays to, the runtime and measured-boot
//! policies that allow exactly that, and the node key V is encrypted to.

use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use vigil_core::eventlog;
use vigil_core::ima::ImaNgRecord;
use vigil_core::policy::measured_boot::{create_refstate, LogView};
use vigil_core::HashAlg;

/// The bank every node quotes.
pub(crate) const BANK: HashAlg = HashAlg::Sha256;

/// One IMA entry as a node serves it.
pub(crate) struct Entry {
    /// The ascii line, newline included.
    pub(crate) line: String,
    /// What it extends into PCR 10 (SHA-256 bank).
    pub(crate) extend: [u8; 32],
}

/// The PCR binding the node key (`pubkey`), always quoted.
pub(crate) const DATA_PCR: usize = 16;

/// Indices into [`Material::entries`].
pub(crate) const BOOT_AGGREGATE: u16 = 0;
/// The entry no policy allows (the "file outside the policy" fault).
pub(crate) const INTRUDER: u16 = 1;
/// The first of the allowed files.
const FIRST_FILE: u16 = 2;

/// Shared by every node.
pub(crate) struct Material {
    pub(crate) entries: Vec<Entry>,
    /// PCRs 0–23 after the UEFI log (PCR 10 is each node's own).
    pub(crate) boot_pcrs: [[u8; 32]; 24],
    /// The UEFI log, base64 (`mb_measurement_list`).
    pub(crate) uefi_b64: Arc<str>,
    /// The runtime policy allowing every entry but the intruder.
    pub(crate) runtime_policy: Value,
    /// The measured-boot reference state of the UEFI log.
    pub(crate) mb_refstate: Value,
    /// The node key (RSA-2048, PEM) every node sends as `pubkey`: V is encrypted to it.
    pub(crate) nk_pem: Arc<str>,
}

impl Material {
    /// Reads the UEFI log at `uefi_log` and makes `files` allowed files.
    pub(crate) fn new(uefi_log: &std::path::Path, files: u16) -> Result<Self> {
        let uefi = std::fs::read(uefi_log)
            .with_context(|| format!("the UEFI event log {}", uefi_log.display()))?;
        let log = eventlog::parse(&uefi).context("parsing the UEFI event log")?;
        let banks = log.replay();
        let replayed = banks
            .get(&BANK)
            .context("the UEFI log has no SHA-256 bank")?;
        let mut boot_pcrs = [[0u8; 32]; 24];
        for (&pcr, d) in replayed {
            if let Some(slot) = boot_pcrs.get_mut(pcr as usize) {
                slot.copy_from_slice(d.as_bytes());
            }
        }
        let aggregate = eventlog::boot_aggregates(&banks)
            .get(&BANK)
            .and_then(|a| a.first().cloned())
            .context("no boot aggregate from the UEFI log")?;
        let mb_refstate = create_refstate(&LogView::new(&log), true)
            .context("a reference state from the UEFI log")?
            .refstate;

        let record = |digest: &[u8], name: &str| -> Result<Entry> {
            let r = ImaNgRecord::new(BANK, digest, name, HashAlg::Sha1)?;
            let mut extend = [0u8; 32];
            extend.copy_from_slice(r.pcr_digest(BANK).as_bytes());
            Ok(Entry {
                line: format!("{}\n", r.line),
                extend,
            })
        };
        let mut entries = vec![
            record(aggregate.as_bytes(), "boot_aggregate")?,
            record(&[0x11; 32], "/usr/bin/intruder")?,
        ];
        let mut digests = serde_json::Map::new();
        digests.insert("boot_aggregate".into(), json!([aggregate.to_hex()]));
        for i in 0..files.max(1) {
            let name = format!("/usr/lib/sim/file-{i}");
            let digest = BANK.hash(name.as_bytes());
            digests.insert(name.clone(), json!([digest.to_hex()]));
            entries.push(record(digest.as_bytes(), &name)?);
        }
        let runtime_policy = json!({
            "meta": {"version": 1, "generator": 3},
            "release": 0,
            "digests": digests,
            "excludes": [],
            "keyrings": {},
            "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
            "ima-buf": {},
            "verification-keys": "",
        });
        let nk = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).context("node key")?;
        let nk_pem = nk.public_key_pem();
        // PCR 16 binds the node key, as Keylime's agents extend it.
        extend(
            &mut boot_pcrs[DATA_PCR],
            BANK.hash(nk_pem.as_bytes()).as_bytes(),
        );
        Ok(Self {
            entries,
            boot_pcrs,
            uefi_b64: base64::engine::general_purpose::STANDARD
                .encode(&uefi)
                .into(),
            runtime_policy,
            mb_refstate,
            nk_pem: nk_pem.into(),
        })
    }

    /// The `n`-th measurement after boot (every node measures the allowed files in
    /// turn).
    pub(crate) fn nth_file(&self, n: u64) -> u16 {
        let files = self.entries.len() as u64 - u64::from(FIRST_FILE);
        FIRST_FILE + u16::try_from(n % files).unwrap_or(0)
    }
}

/// `PCR := H(PCR || digest)` in the SHA-256 bank.
pub(crate) fn extend(pcr: &mut [u8; 32], digest: &[u8]) {
    let mut h = BANK.hasher();
    h.update(pcr);
    h.update(digest);
    pcr.copy_from_slice(h.finalize().as_bytes());
}
