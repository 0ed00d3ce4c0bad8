//! The thread-owned side of [`crate::Tpm`]: the tss-esapi context and the handles it
//! keeps loaded. Every method runs on the worker thread.

use std::convert::TryFrom;
use std::str::FromStr;

use tss_esapi::abstraction::{ak, ek, nv, pcr, AsymmetricAlgorithmSelection};
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, SessionHandle,
    TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Data, DigestValues, EncryptedSecret, IdObject, PcrSelectionListBuilder,
    PcrSlot, Private, Public, PublicBuffer, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use vigil_core::tpm::attest::QuoteAttest;
use vigil_core::tpm::credential::CredentialBlob;
use vigil_core::tpm::pcr_blob::PcrBlob;
use vigil_core::tpm::public::{PublicKey, TpmPublic, ECC_NIST_P256, ECC_NIST_P384};
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_core::{Digest, HashAlg};

use crate::error::tpm;
use crate::{AkAlg, AkBlob, AkInfo, AkKey, EkAlg, EkInfo, EkSource, TpmError, EK_CA_CHAIN_NV};

/// The loaded EK.
struct Ek {
    handle: KeyHandle,
    persistent: bool,
    name: Vec<u8>,
    alg: Option<EkAlg>,
    /// Whether the EK accepts its (empty) password for the USER role; the low-range
    /// templates do not, and need PolicySecret(endorsement) instead.
    user_with_auth: bool,
    name_alg: HashingAlgorithm,
}

/// The loaded AK.
struct Ak {
    handle: KeyHandle,
    info: AkInfo,
}

pub(crate) struct Worker {
    ctx: Context,
    ek: Option<Ek>,
    ak: Option<Ak>,
}

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
        HashAlg::Sm3_256 => HashingAlgorithm::Sm3_256,
    }
}

impl EkAlg {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            Self::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }
}

impl AkKey {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            Self::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }

    fn scheme(self) -> SignatureSchemeAlgorithm {
        match self {
            Self::Rsa2048 => SignatureSchemeAlgorithm::RsaSsa,
            Self::EccP256 | Self::EccP384 => SignatureSchemeAlgorithm::EcDsa,
        }
    }
}

/// Key type and size, as vigil-core reads them from a `TPM2B_PUBLIC`.
enum KeyKind {
    Rsa2048,
    P256,
    P384,
    Other,
}

fn key_kind(public: &TpmPublic) -> KeyKind {
    match &public.key {
        PublicKey::Rsa { modulus, .. } if modulus.len() == 256 => KeyKind::Rsa2048,
        PublicKey::Ecc { curve, .. } if *curve == ECC_NIST_P256 => KeyKind::P256,
        PublicKey::Ecc { curve, .. } if *curve == ECC_NIST_P384 => KeyKind::P384,
        _ => KeyKind::Other,
    }
}

/// `TPM2B_PUBLIC` bytes of a tss-esapi `Public`.
fn public_bytes(public: &Public) -> Result<Vec<u8>, TpmError> {
    PublicBuffer::try_from(public.clone())
        .and_then(|b| b.marshall())
        .map_err(tpm("marshal public area"))
}

/// `TPM2B_PRIVATE` bytes (size-prefixed) of a tss-esapi `Private`.
fn private_bytes(private: &Private) -> Vec<u8> {
    let value = private.value();
    // A Private holds at most TPM2B_PRIVATE's buffer size, far below u16::MAX.
    let mut out = (value.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(value);
    out
}

fn private_from_bytes(bytes: &[u8]) -> Result<Private, TpmError> {
    let malformed = || TpmError::AkMismatch("the private blob is not a TPM2B_PRIVATE".into());
    let (size, rest) = bytes.split_first_chunk::<2>().ok_or_else(malformed)?;
    if usize::from(u16::from_be_bytes(*size)) != rest.len() {
        return Err(malformed());
    }
    Private::try_from(rest.to_vec()).map_err(|_| malformed())
}

impl Worker {
    pub(crate) fn open(tcti: &str) -> Result<Self, TpmError> {
        let connect = |source| TpmError::Connect {
            tcti: tcti.to_owned(),
            source,
        };
        let conf = TctiNameConf::from_str(tcti).map_err(connect)?;
        let ctx = Context::new(conf).map_err(connect)?;
        Ok(Self {
            ctx,
            ek: None,
            ak: None,
        })
    }

    fn flush(&mut self, handle: KeyHandle) {
        // A failed flush leaves nothing to recover: the context drop retries it.
        let _ = self.ctx.flush_context(handle.into());
    }

    fn unload_ak(&mut self) {
        if let Some(ak) = self.ak.take() {
            self.flush(ak.handle);
        }
    }

    fn unload_ek(&mut self) {
        if let Some(ek) = self.ek.take() {
            if ek.persistent {
                // Persistent objects are only closed in ESYS, never flushed.
                let mut handle = ObjectHandle::from(ek.handle);
                let _ = self.ctx.tr_close(&mut handle);
            } else {
                self.flush(ek.handle);
            }
        }
    }

    pub(crate) fn setup_ek(&mut self, source: EkSource) -> Result<EkInfo, TpmError> {
        // An AK is tied to the EK it was loaded under.
        self.unload_ak();
        self.unload_ek();
        let (handle, persistent) = match source {
            EkSource::Template(alg) => (
                ek::create_ek_object_2(&mut self.ctx, alg.selection(), None)
                    .map_err(tpm("create EK"))?,
                None,
            ),
            EkSource::Persistent(index) => {
                let tpm_handle = match TpmHandle::try_from(index) {
                    Ok(h @ TpmHandle::Persistent(_)) => h,
                    _ => {
                        return Err(TpmError::InvalidArgument(format!(
                            "0x{index:08x} is not a persistent handle"
                        )))
                    }
                };
                let object = self
                    .ctx
                    .execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
                    .map_err(tpm("open persistent EK"))?;
                (KeyHandle::from(object), Some(index))
            }
        };
        self.ek = Some(Ek {
            handle,
            persistent: persistent.is_some(),
            name: Vec::new(),
            alg: None,
            user_with_auth: false,
            name_alg: HashingAlgorithm::Sha256,
        });
        // From here on a failure leaves the EK registered, so it is unloaded again.
        match self.describe_ek(handle, persistent) {
            Ok(info) => Ok(info),
            Err(e) => {
                self.unload_ek();
                Err(e)
            }
        }
    }

    fn describe_ek(
        &mut self,
        handle: KeyHandle,
        persistent: Option<u32>,
    ) -> Result<EkInfo, TpmError> {
        let (public, name, _) = self
            .ctx
            .read_public(handle)
            .map_err(tpm("read EK public"))?;
        let bytes = public_bytes(&public)?;
        let parsed = TpmPublic::parse_tpm2b(&bytes)?;
        let alg = match key_kind(&parsed) {
            KeyKind::Rsa2048 => Some(EkAlg::Rsa2048),
            KeyKind::P256 => Some(EkAlg::EccP256),
            KeyKind::P384 => Some(EkAlg::EccP384),
            KeyKind::Other => None,
        };
        let name = name.value().to_vec();
        if let Some(ek) = self.ek.as_mut() {
            ek.name = name.clone();
            ek.alg = alg;
            ek.user_with_auth = public.object_attributes().user_with_auth();
            ek.name_alg = public.name_hashing_algorithm();
        }
        Ok(EkInfo {
            public: bytes,
            name,
            alg,
            persistent,
        })
    }

    fn ek(&self) -> Result<&Ek, TpmError> {
        self.ek.as_ref().ok_or(TpmError::NotLoaded("EK"))
    }

    /// Defined NV indices in `range`, ascending.
    fn nv_indices(&mut self, first: u32, last: u32) -> Result<Vec<u32>, TpmError> {
        let mut found = Vec::new();
        let mut next = first;
        loop {
            let (data, more) = self
                .ctx
                .execute_without_session(|c| c.get_capability(CapabilityType::Handles, next, 64))
                .map_err(tpm("list NV indices"))?;
            let CapabilityData::Handles(handles) = data else {
                return Ok(found);
            };
            let mut last_seen = None;
            for handle in handles.iter() {
                let value = u32::from(*handle);
                last_seen = Some(value);
                if (first..=last).contains(&value) {
                    found.push(value);
                }
            }
            match last_seen {
                Some(v) if more && v < last => next = v + 1,
                _ => return Ok(found),
            }
        }
    }

    pub(crate) fn nv_read(&mut self, index: u32) -> Result<Option<Vec<u8>>, TpmError> {
        let nv_index = NvIndexTpmHandle::new(index)
            .map_err(|_| TpmError::InvalidArgument(format!("0x{index:08x} is not an NV index")))?;
        if self.nv_indices(index, index)?.is_empty() {
            return Ok(None);
        }
        let object = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv_index)))
            .map_err(tpm("open NV index"))?;
        // EK certificate indices are readable with their own (empty) auth; fall back
        // to the owner for indices defined with ownerread only.
        let own = NvAuth::NvIndex(NvIndexHandle::from(object));
        let read = self
            .ctx
            .execute_with_nullauth_session(|c| nv::read_full(c, own, nv_index))
            .or_else(|_| {
                self.ctx
                    .execute_with_nullauth_session(|c| nv::read_full(c, NvAuth::Owner, nv_index))
            })
            .map_err(tpm("read NV index"));
        // No tr_close here: ESYS hands out one object per NV index, and nv::read_full
        // closes it when done.
        read.map(Some)
    }

    pub(crate) fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, TpmError> {
        let Some(alg) = self.ek()?.alg else {
            return Ok(None);
        };
        self.nv_read(alg.cert_nv_index())
    }

    pub(crate) fn ek_ca_chain(&mut self) -> Result<Vec<Vec<u8>>, TpmError> {
        let indices = self.nv_indices(*EK_CA_CHAIN_NV.start(), *EK_CA_CHAIN_NV.end())?;
        let mut chain = Vec::with_capacity(indices.len());
        for index in indices {
            if let Some(data) = self.nv_read(index)? {
                chain.push(data);
            }
        }
        Ok(chain)
    }

    pub(crate) fn create_ak(&mut self, alg: AkAlg) -> Result<AkBlob, TpmError> {
        let ek = self.ek()?;
        let (ek_handle, ek_name) = (ek.handle, ek.name.clone());
        let created = ak::create_ak_2(
            &mut self.ctx,
            ek_handle,
            hashing(alg.hash),
            alg.key.selection(),
            alg.key.scheme(),
            None,
            None,
        )
        .map_err(tpm("create AK"))?;
        let blob = AkBlob {
            public: public_bytes(&created.out_public)?,
            private: private_bytes(&created.out_private),
            ek_name,
        };
        self.load_ak(&blob, Some(alg))?;
        Ok(blob)
    }

    pub(crate) fn load_ak(
        &mut self,
        blob: &AkBlob,
        expected: Option<AkAlg>,
    ) -> Result<AkInfo, TpmError> {
        let ek = self.ek()?;
        let ek_handle = ek.handle;
        if blob.ek_name != ek.name {
            return Err(TpmError::AkMismatch(
                "it was created under another EK".into(),
            ));
        }
        let parsed = TpmPublic::parse_tpm2b(&blob.public)?;
        let key = match key_kind(&parsed) {
            KeyKind::Rsa2048 => AkKey::Rsa2048,
            KeyKind::P256 => AkKey::EccP256,
            KeyKind::P384 => AkKey::EccP384,
            KeyKind::Other => {
                return Err(TpmError::AkMismatch("unsupported key type".into()));
            }
        };
        // The AKs made here use one hash for name and signing scheme.
        let alg = AkAlg {
            key,
            hash: parsed.name_alg,
        };
        if let Some(want) = expected {
            if want != alg {
                return Err(TpmError::AkMismatch(format!(
                    "it is {alg:?}, {want:?} is configured"
                )));
            }
        }
        let public = PublicBuffer::unmarshall(&blob.public)
            .and_then(Public::try_from)
            .map_err(tpm("unmarshal AK public"))?;
        let private = private_from_bytes(&blob.private)?;
        self.unload_ak();
        let handle =
            ak::load_ak(&mut self.ctx, ek_handle, None, private, public).map_err(tpm("load AK"))?;
        let name = match self.ctx.tr_get_name(handle.into()) {
            Ok(name) => name.value().to_vec(),
            Err(e) => {
                self.flush(handle);
                return Err(tpm("read AK name")(e));
            }
        };
        let info = AkInfo { name, alg };
        self.ak = Some(Ak {
            handle,
            info: info.clone(),
        });
        Ok(info)
    }

    pub(crate) fn ak_info(&self) -> Result<AkInfo, TpmError> {
        Ok(self.ak()?.info.clone())
    }

    fn ak(&self) -> Result<&Ak, TpmError> {
        self.ak.as_ref().ok_or(TpmError::NotLoaded("AK"))
    }

    pub(crate) fn activate_credential(&mut self, blob: &[u8]) -> Result<Vec<u8>, TpmError> {
        let credential = CredentialBlob::parse_tpm2_tools(blob)?;
        // tss-esapi wants the buffers without their size prefixes.
        let id_object = IdObject::try_from(credential.id_object()[2..].to_vec())
            .map_err(tpm("convert credential"))?;
        let secret = EncryptedSecret::try_from(credential.encrypted_secret().to_vec())
            .map_err(tpm("convert encrypted secret"))?;
        let ak_handle = self.ak()?.handle;
        let ek = self.ek()?;
        let (ek_handle, user_with_auth, name_alg) = (ek.handle, ek.user_with_auth, ek.name_alg);
        if user_with_auth {
            // High-range templates: the EK's empty password authorises the USER role.
            return self
                .ctx
                .execute_with_sessions(
                    (
                        Some(AuthSession::Password),
                        Some(AuthSession::Password),
                        None,
                    ),
                    |c| c.activate_credential(ak_handle, ek_handle, id_object, secret),
                )
                .map(|d| d.value().to_vec())
                .map_err(tpm("activate credential"));
        }
        // Low-range templates: policy A, PolicySecret on the endorsement hierarchy.
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                name_alg,
            )
            .map_err(tpm("start EK policy session"))?
            .ok_or_else(|| TpmError::InvalidArgument("the TPM returned no session".into()))?;
        // The temporary object (the session) is flushed whatever happens inside.
        self.ctx
            .execute_with_temporary_object(SessionHandle::from(session).into(), |c, _| {
                c.execute_with_nullauth_session(|c| {
                    c.policy_secret(
                        PolicySession::try_from(session)?,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })?;
                c.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                    c.activate_credential(ak_handle, ek_handle, id_object, secret)
                })
            })
            .map(|d| d.value().to_vec())
            .map_err(tpm("activate credential"))
    }

    pub(crate) fn pcr_reset(&mut self, pcr: u32) -> Result<(), TpmError> {
        let handle = pcr_handle(pcr)?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| c.pcr_reset(handle))
            .map_err(tpm("reset PCR"))
    }

    pub(crate) fn pcr_extend(
        &mut self,
        pcr: u32,
        bank: HashAlg,
        digest: &Digest,
    ) -> Result<(), TpmError> {
        let handle = pcr_handle(pcr)?;
        if digest.len() != bank.digest_len() {
            return Err(TpmError::InvalidArgument(format!(
                "a {}-byte digest for the {bank} bank",
                digest.len()
            )));
        }
        let mut values = DigestValues::new();
        values.set(
            hashing(bank),
            tss_esapi::structures::Digest::try_from(digest.as_bytes().to_vec())
                .map_err(tpm("convert digest"))?,
        );
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(tpm("extend PCR"))
    }

    pub(crate) fn pcr_read(
        &mut self,
        bank: HashAlg,
        pcrs: &[u32],
    ) -> Result<Vec<(u32, Digest)>, TpmError> {
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let slots = pcr_slots(&sorted)?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(hashing(bank), &slots)
            .build()
            .map_err(tpm("build PCR selection"))?;
        // pcr::read_all issues as many TPM2_PCR_Read as needed (8 digests per answer).
        let data = self
            .ctx
            .execute_without_session(|c| pcr::read_all(c, selection))
            .map_err(tpm("read PCRs"))?;
        let pcr_bank = data
            .pcr_bank(hashing(bank))
            .ok_or_else(|| TpmError::InvalidArgument(format!("the {bank} bank is not active")))?;
        let mut out = Vec::with_capacity(sorted.len());
        for (&pcr, slot) in sorted.iter().zip(slots) {
            let digest = pcr_bank.get_digest(slot).ok_or_else(|| {
                TpmError::InvalidArgument(format!("PCR {pcr} of the {bank} bank is not allocated"))
            })?;
            let digest = Digest::from_slice(digest.value())
                .map_err(|e| TpmError::InvalidArgument(format!("PCR {pcr}: {e}")))?;
            out.push((pcr, digest));
        }
        Ok(out)
    }

    pub(crate) fn quote(
        &mut self,
        nonce: &[u8],
        mask: u32,
        bank: HashAlg,
    ) -> Result<KeylimeQuote, TpmError> {
        if mask >> 24 != 0 {
            return Err(TpmError::InvalidArgument(format!(
                "mask 0x{mask:x} selects PCRs above 23"
            )));
        }
        let ak_handle = self.ak()?.handle;
        let mask = mask | 1 << crate::DATA_PCR;
        let pcrs: Vec<u32> = (0..24).filter(|i| mask >> i & 1 == 1).collect();
        let selection = PcrSelectionListBuilder::new()
            .with_selection(hashing(bank), &pcr_slots(&pcrs)?)
            .build()
            .map_err(tpm("build PCR selection"))?;
        let qualifying = Data::try_from(nonce.to_vec()).map_err(|_| {
            TpmError::InvalidArgument(format!("a {}-byte nonce (at most 64)", nonce.len()))
        })?;
        for _ in 0..crate::QUOTE_ATTEMPTS {
            let values = self.pcr_read(bank, &pcrs)?;
            let (attest, signature) = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    // Null: the AK's own scheme (restricted keys have one).
                    c.quote(
                        ak_handle,
                        qualifying.clone(),
                        SignatureScheme::Null,
                        selection.clone(),
                    )
                })
                .map_err(tpm("quote"))?;
            let attest = attest.marshall().map_err(tpm("marshal attestation"))?;
            let signature = signature.marshall().map_err(tpm("marshal signature"))?;
            let parsed = QuoteAttest::parse(&attest)?;
            let mut h = bank.hasher();
            for (_, v) in &values {
                h.update(v.as_bytes());
            }
            if h.finalize().as_bytes() != parsed.pcr_digest {
                // A PCR moved between the read and the quote: read and quote again.
                continue;
            }
            let pcr_blob = PcrBlob {
                selection: parsed.pcr_select.clone(),
                values: values.iter().map(|(_, v)| v.as_bytes().to_vec()).collect(),
            }
            .to_bytes()?;
            return Ok(KeylimeQuote {
                attest,
                signature,
                pcr_blob,
            });
        }
        Err(TpmError::PcrsUnstable(crate::QUOTE_ATTEMPTS))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.unload_ak();
        self.unload_ek();
    }
}

fn pcr_handle(pcr: u32) -> Result<PcrHandle, TpmError> {
    if pcr > 23 {
        return Err(TpmError::InvalidArgument(format!("PCR {pcr} (0–23)")));
    }
    // ESYS_TR_PCR0..23 are 0..23.
    PcrHandle::try_from(pcr).map_err(tpm("PCR handle"))
}

fn pcr_slots(pcrs: &[u32]) -> Result<Vec<PcrSlot>, TpmError> {
    pcrs.iter()
        .map(|&p| {
            if p > 23 {
                return Err(TpmError::InvalidArgument(format!("PCR {p} (0–23)")));
            }
            PcrSlot::try_from(1u32 << p).map_err(tpm("PCR slot"))
        })
        .collect()
}
