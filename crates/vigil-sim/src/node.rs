//! One simulated node: a software AK (its `TPM2B_PUBLIC` as a TPM would make it), an
//! mTLS server certificate, a growing IMA log with PCR 10 kept consistent, the shared
//! UEFI log's PCRs, a TPM clock and a boot time — and the faults injected into it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use hyper::body::Bytes;
use serde_json::json;
use vigil_core::tpm::attest::{AttestHeader, ClockInfo, PcrSelection, QuoteAttest};
use vigil_core::tpm::pcr_blob::PcrBlob;
use vigil_core::tpm::public::{attributes, TpmPublic, ALG_ECC, ALG_NULL, ALG_RSA, ECC_NIST_P256};
use vigil_core::tpm::quote::KeylimeQuote;
use vigil_core::tpm::signature::{TpmSignature, ALG_ECDSA, ALG_RSASSA};

use crate::material::{extend, Material, BANK, BOOT_AGGREGATE, DATA_PCR, INTRUDER};

/// The AK's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AkKind {
    /// ECC P-256, ECDSA-SHA256 (cheap to sign).
    Ecc,
    /// RSA-2048, RSASSA-SHA256.
    Rsa,
}

enum Ak {
    Ecc(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// The software EK of a node, for the registrar's MakeCredential.
pub(crate) struct SoftEk {
    pub(crate) public: TpmPublic,
    pub(crate) key: vigil_core::tpm::credential::EkPrivateKey,
}

/// A fault in effect on a node.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    /// Quotes are made over another nonce than the one asked for.
    pub(crate) wrong_nonce: bool,
    /// Every answer is the last genuine one again.
    pub(crate) replay: bool,
    /// Connections are dropped at once.
    pub(crate) unreachable: bool,
    /// Answers wait this long.
    pub(crate) delay: Duration,
}

struct State {
    /// The IMA log since boot, as indices into the shared entries.
    log: Vec<u16>,
    pcr10: [u8; 32],
    /// PCR 4 extended past the UEFI log (the "changed PCR 0–7" fault).
    pcr4_changed: Option<[u8; 32]>,
    booted: Instant,
    boottime: u64,
    reset_count: u32,
    faults: Faults,
    last_genuine: Option<Bytes>,
}

/// One node.
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    ak: Ak,
    /// The AK's `TPM2B_PUBLIC`.
    pub(crate) ak_tpm: Vec<u8>,
    ak_name: Vec<u8>,
    pub(crate) ek: SoftEk,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) cert_pem: String,
    state: Mutex<State>,
    /// IMA entries measured per second.
    rate: f64,
}

/// The loopback address of node `index` (127.b.c.d, never 127.0.x.x, d in 1..=254).
pub(crate) fn node_ip(index: usize) -> Ipv4Addr {
    let d = 1 + index % 254;
    let rest = index / 254;
    let c = rest % 256;
    let b = 1 + rest / 256;
    Ipv4Addr::new(127, u8::try_from(b).unwrap_or(255), c as u8, d as u8)
}

/// The node index of a loopback address, if it is one of [`node_ip`]'s.
pub(crate) fn node_index(ip: Ipv4Addr) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    if a != 127 || b == 0 || d == 0 || d == 255 {
        return None;
    }
    Some(((usize::from(b) - 1) * 256 + usize::from(c)) * 254 + usize::from(d) - 1)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `TPMT_PUBLIC` of a restricted signing key made by a TPM (fixedTPM, fixedParent,
/// sensitiveDataOrigin, userWithAuth, restricted, sign), with the SHA-256 scheme.
fn ak_public(ak: &Ak) -> Result<TpmPublic> {
    let attrs = attributes::FIXED_TPM
        | attributes::FIXED_PARENT
        | attributes::SENSITIVE_DATA_ORIGIN
        | 1 << 6 // userWithAuth
        | attributes::RESTRICTED
        | attributes::SIGN_ENCRYPT;
    let mut t = Vec::with_capacity(300);
    let u16b = |t: &mut Vec<u8>, v: u16| t.extend_from_slice(&v.to_be_bytes());
    let tpm2b = |t: &mut Vec<u8>, b: &[u8]| {
        t.extend_from_slice(&(b.len() as u16).to_be_bytes());
        t.extend_from_slice(b);
    };
    let sha256 = BANK.tpm_alg_id();
    match ak {
        Ak::Ecc(k) => {
            let point = k.public_key().as_ref();
            let (x, y) = point[1..].split_at(32);
            u16b(&mut t, ALG_ECC);
            u16b(&mut t, sha256);
            t.extend_from_slice(&attrs.to_be_bytes());
            tpm2b(&mut t, &[]);
            for v in [ALG_NULL, ALG_ECDSA, sha256, ECC_NIST_P256, ALG_NULL] {
                u16b(&mut t, v);
            }
            tpm2b(&mut t, x);
            tpm2b(&mut t, y);
        }
        Ak::Rsa(k) => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::traits::PublicKeyParts;
            let public = rsa::RsaPublicKey::from_pkcs1_der(k.public_key().as_ref())
                .context("the RSA AK's public key")?;
            u16b(&mut t, ALG_RSA);
            u16b(&mut t, sha256);
            t.extend_from_slice(&attrs.to_be_bytes());
            tpm2b(&mut t, &[]);
            for v in [ALG_NULL, ALG_RSASSA, sha256, 2048] {
                u16b(&mut t, v);
            }
            t.extend_from_slice(&0u32.to_be_bytes());
            tpm2b(&mut t, &public.n().to_bytes_be());
        }
    }
    Ok(TpmPublic::parse(&t)?)
}

/// A software EK (P-256: cheap to make, and the registrar's MakeCredential is ECDH).
fn soft_ek() -> Result<SoftEk> {
    use p256::pkcs8::EncodePublicKey;
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let spki = secret.public_key().to_public_key_der()?;
    Ok(SoftEk {
        public: TpmPublic::ek_from_spki(spki.as_bytes())?,
        key: vigil_core::tpm::credential::EkPrivateKey::P256(secret),
    })
}

impl Node {
    /// Node `index`, listening (through the shared socket) at `node_ip(index):port`.
    pub(crate) fn new(
        index: usize,
        run: u32,
        port: u16,
        kind: AkKind,
        rate: f64,
        client_verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    ) -> Result<Self> {
        let ak = match kind {
            AkKind::Ecc => Ak::Ecc(
                EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| anyhow::anyhow!("ECC AK generation"))?,
            ),
            AkKind::Rsa => Ak::Rsa(
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| anyhow::anyhow!("RSA AK generation"))?,
            ),
        };
        let public = ak_public(&ak)?;
        let ip = node_ip(index);
        let key = rcgen::KeyPair::generate().context("TLS key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.into())];
        let cert = params.self_signed(&key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        // Like Keylime's agent: no session resumption.
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let id = format!("{run:08x}-0000-4000-8000-{index:012x}");
        Ok(Self {
            id,
            addr: SocketAddr::new(ip.into(), port),
            ak_tpm: public.to_tpm2b(),
            ak_name: public.name(),
            ak,
            ek: soft_ek()?,
            tls: Arc::new(tls),
            cert_pem: cert.pem(),
            state: Mutex::new(State {
                log: vec![BOOT_AGGREGATE],
                pcr10: [0; 32],
                pcr4_changed: None,
                booted: Instant::now(),
                boottime: now_secs(),
                reset_count: 0,
                faults: Faults::default(),
                last_genuine: None,
            }),
            rate,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The faults in effect.
    pub(crate) fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Changes the faults in effect.
    pub(crate) fn set_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.lock().faults);
    }

    /// Measures a file no policy allows.
    pub(crate) fn measure_intruder(&self, m: &Material) {
        let st = &mut *self.lock();
        st.log.push(INTRUDER);
        extend(&mut st.pcr10, &m.entries[usize::from(INTRUDER)].extend);
    }

    /// Extends PCR 4 once more than the UEFI log says (another boot loader).
    pub(crate) fn change_boot_pcr(&self) {
        let st = &mut *self.lock();
        let mut pcr = st.pcr4_changed.unwrap_or([0; 32]);
        extend(&mut pcr, &[0x42; 32]);
        st.pcr4_changed = Some(pcr);
    }

    /// Reboots: a new boot time, a TPM reset, the IMA log from its start.
    pub(crate) fn reboot(&self) {
        let st = &mut *self.lock();
        st.log = vec![BOOT_AGGREGATE];
        st.pcr10 = [0; 32];
        st.pcr4_changed = None;
        st.booted = Instant::now();
        st.boottime = st.boottime.max(now_secs()) + 1;
        st.reset_count += 1;
        st.last_genuine = None;
    }

    /// The answer body to `quotes/integrity`, as the node's faults make it.
    pub(crate) fn integrity(
        &self,
        m: &Material,
        nonce: &str,
        mask: u32,
        partial: bool,
        from: u64,
        started: Instant,
    ) -> Result<Bytes> {
        let st = &mut *self.lock();
        if st.faults.replay {
            if let Some(last) = &st.last_genuine {
                return Ok(last.clone());
            }
        }
        // Measurements due since boot: the boot aggregate, then `rate` a second.
        if st.log.first() == Some(&BOOT_AGGREGATE) && st.pcr10 == [0; 32] {
            extend(
                &mut st.pcr10,
                &m.entries[usize::from(BOOT_AGGREGATE)].extend,
            );
        }
        let due = 1 + (st.booted.elapsed().as_secs_f64() * self.rate) as u64;
        let measured = st.log.iter().filter(|&&e| e != INTRUDER).count() as u64;
        for n in measured..due {
            let e = m.nth_file(n - 1);
            st.log.push(e);
            extend(&mut st.pcr10, &m.entries[usize::from(e)].extend);
        }
        let quoted_nonce = if st.faults.wrong_nonce {
            format!("{nonce}x")
        } else {
            nonce.to_owned()
        };
        // Keylime's agents always add the data PCR.
        let mask = mask | 1 << DATA_PCR;
        let pcrs: Vec<u32> = (0..24).filter(|p| mask >> p & 1 == 1).collect();
        let mut values = Vec::with_capacity(pcrs.len());
        let mut h = BANK.hasher();
        for &p in &pcrs {
            let v = match p {
                10 => st.pcr10,
                4 if st.pcr4_changed.is_some() => {
                    let mut v = m.boot_pcrs[4];
                    extend(&mut v, &st.pcr4_changed.unwrap_or_default());
                    v
                }
                _ => m.boot_pcrs[p as usize],
            };
            h.update(&v);
            values.push(v.to_vec());
        }
        let digest = h.finalize();
        let selection = vec![PcrSelection {
            alg_id: BANK.tpm_alg_id(),
            pcrs,
        }];
        let attest = QuoteAttest {
            header: AttestHeader {
                qualified_signer: &self.ak_name,
                extra_data: quoted_nonce.as_bytes(),
                clock_info: ClockInfo {
                    clock: 1_000_000 + started.elapsed().as_millis() as u64,
                    reset_count: st.reset_count,
                    restart_count: 0,
                    safe: true,
                },
                firmware_version: 0x2024_0101,
            },
            pcr_select: selection.clone(),
            pcr_digest: digest.as_bytes(),
        }
        .to_bytes()?;
        let signature = self.sign(&attest)?;
        let pcr_blob = PcrBlob { selection, values }.to_bytes()?;
        let quote = KeylimeQuote {
            attest,
            signature,
            pcr_blob,
        };
        let start = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(st.log.len());
        let mut list = String::with_capacity((st.log.len() - start) * 100);
        for &e in &st.log[start..] {
            list.push_str(&m.entries[usize::from(e)].line);
        }
        let (sign_alg, enc_alg) = match self.ak {
            Ak::Ecc(_) => ("ecdsa", "ecc"),
            Ak::Rsa(_) => ("rsassa", "ecc"),
        };
        let mut results = json!({
            "quote": quote.to_keylime_string(),
            "hash_alg": "sha256",
            "enc_alg": enc_alg,
            "sign_alg": sign_alg,
            "ima_measurement_list": list,
            "ima_measurement_list_entry": from,
            "boottime": st.boottime,
        });
        if mask & 0xff != 0 {
            results["mb_measurement_list"] = json!(&*m.uefi_b64);
        }
        if !partial {
            results["pubkey"] = json!(&*m.nk_pem);
        }
        let body =
            Bytes::from(json!({"code": 200, "status": "Success", "results": results}).to_string());
        if !st.faults.wrong_nonce {
            st.last_genuine = Some(body.clone());
        }
        Ok(body)
    }

    fn sign(&self, attest: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        let hash = BANK;
        let sig = match &self.ak {
            Ak::Ecc(k) => {
                let sig = k
                    .sign(&rng, attest)
                    .map_err(|_| anyhow::anyhow!("ECDSA signing"))?;
                let (r, s) = sig.as_ref().split_at(32);
                TpmSignature::Ecdsa { hash, r, s }.to_bytes()?
            }
            Ak::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    attest,
                    &mut sig,
                )
                .map_err(|_| anyhow::anyhow!("RSA signing"))?;
                TpmSignature::RsaSsa { hash, sig: &sig }.to_bytes()?
            }
        };
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_back_to_nodes() {
        for i in [0, 1, 253, 254, 255, 10_000, 254 * 256, 100_000] {
            assert_eq!(node_index(node_ip(i)), Some(i), "{i}");
        }
        assert_eq!(node_index(Ipv4Addr::new(127, 0, 0, 1)), None);
    }
}
