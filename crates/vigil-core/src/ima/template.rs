//! Template data: the bytes the kernel hashed for an entry, rebuilt from the ascii line.
//!
//! Layouts (all lengths `u32` little-endian, as the kernel writes them on x86 and in
//! its canonical format):
//! - `d-ng`: `u32(len(alg) + 2 + len(digest))`, `alg`, `':'`, `0x00`, `digest`;
//! - `n-ng`: `u32(len(name) + 1)`, `name`, `0x00`;
//! - `sig`, `buf`: `u32(len)` then the bytes (`u32(0)` for a missing signature);
//! - `ima` (legacy): the raw digest with no length, then the name NUL-padded to exactly
//!   256 bytes.
//!
//! | template  | fields                |
//! |-----------|-----------------------|
//! | `ima`     | `d` `n`               |
//! | `ima-ng`  | `d-ng` `n-ng`         |
//! | `ima-sig` | `d-ng` `n-ng` `sig`   |
//! | `ima-buf` | `d-ng` `n-ng` `buf`   |

use super::entry::{ImaEntry, Template};

/// Longest name the legacy `ima` template's 256-byte `n` field holds with its NUL.
pub const LEGACY_NAME_MAX: usize = 255;

/// Size of the legacy `n` field.
const LEGACY_NAME_FIELD: usize = LEGACY_NAME_MAX + 1;

/// Appends a length prefix. Parsing caps lines at [`super::entry::MAX_ENTRY_LINE`], so
/// every length fits; saturating keeps this total even if that invariant were broken.
#[inline]
fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
}

/// The bytes Keylime writes for the algorithm text of `d-ng`.
///
/// Keylime sizes this part by the algorithm's *character* count while writing its UTF-8
/// bytes, so a non-ASCII name is cut to that many bytes. Kernel names are ASCII, where
/// both agree; the quirk is kept so odd input hashes as it does in Keylime.
#[inline]
fn alg_bytes(alg: &str) -> &[u8] {
    if alg.is_ascii() {
        return alg.as_bytes();
    }
    let chars = alg.chars().count();
    alg.as_bytes().get(..chars).unwrap_or(alg.as_bytes())
}

impl ImaEntry<'_> {
    /// Writes this entry's template data into `out`, replacing its contents. Reusing
    /// one buffer across entries keeps the replay loop free of allocations.
    ///
    /// Returns where the decoded file digest sits in `out`, so the policy check can
    /// use it without decoding the hex again.
    pub fn write_template_data(&self, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        out.clear();
        let digest = &self.digest.value;
        let name = self.name.as_bytes();
        if self.template == Template::Ima {
            digest.decode_into(out);
            let at = 0..out.len();
            out.extend_from_slice(name);
            // Parsing rejects longer names, so padding is at least the NUL.
            let pad = LEGACY_NAME_FIELD.saturating_sub(name.len()).max(1);
            out.resize(out.len() + pad, 0);
            return at;
        }
        let alg = alg_bytes(self.digest.alg);
        put_len(out, alg.len() + 2 + digest.len());
        out.extend_from_slice(alg);
        out.extend_from_slice(b":\0");
        let start = out.len();
        digest.decode_into(out);
        let at = start..out.len();
        put_len(out, name.len() + 1);
        out.extend_from_slice(name);
        out.push(0);
        match self.template {
            Template::ImaSig => match &self.signature {
                Some(sig) => {
                    put_len(out, sig.len());
                    sig.decode_into(out);
                }
                None => put_len(out, 0),
            },
            Template::ImaBuf => {
                let len = self.buffer.as_ref().map_or(0, |b| b.len());
                put_len(out, len);
                if let Some(buf) = &self.buffer {
                    buf.decode_into(out);
                }
            }
            Template::Ima | Template::ImaNg => {}
        }
        at
    }

    /// This entry's template data in a new vector (convenience for tests and tools).
    pub fn template_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_template_data(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;

    fn decode(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Lines from Keylime's `test/test_ima_ast.py` (VALID_ENTRIES): for each, the
    /// template-hash column is SHA-1 of the template data Keylime builds, so a correct
    /// rebuild must hash to it.
    const KEYLIME_VALID: &[&str] = &[
        "10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009dd340c852f37e35748363586939d4199b6684be27e7c1236ca1528f708372ed9cd52a0d991f66448790f5616ed5bd7f9bbd22193b1e3e54f6bf29a1497945a34d1b418b24f4cbeaef897bf3cebca27065ebb8761b46bc2662fe76f141245b9186a5ac8493c7f4976cf0d6dfc085c3e503e3f771bc3ccb121230db76fd8aba4f45f060ad64ab3afd99b4e52824b9eba12e93e46f9dcb2fa01d9cef89f298a0da02a82a4fb56924afd3e3c277a1302d99f770d488449df2d43eb5b174a0a528827e6877b965c2f0b7c89cf1aa26a7417a892df4c2294e2872d62748b72ea04ecb0689b5d792e615a9bf9d56f6e0f298560bf9441df0a22729c5f23389f028c25f",
        "10 5d4d5141ccd5066d50dc3f21d79ba02fedc24256 ima-sig sha256:b8ae0b8dd04a5935cd8165aa2260cd11b658bd71629bdb52256a675a1f73907b /usr/bin/zmore 030204531f402500483046022100fe24678d21083ead47660e1a2d553a592d777c478d1b0466de6ed484b54956b3022100cad3adb37f277bbb03544d6107751b4cd4f2289d8353fa36257400a99334d5c3",
        "10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ",
        "10 b7862dbbf1383ac6c7cca7f02d981a081aacb1f1 ima-buf sha1:6e0e6fc8a188ef4f059638949adca4d221946906 device_resume 6e616d653d544553543b757569643d43525950542d5645524954592d39656633326535623635623034343234613561386562343436636630653731332d544553543b63617061636974793d303b6d616a6f723d3235333b6d696e6f723d303b6d696e6f725f636f756e743d313b6e756d5f746172676574733d313b6163746976655f7461626c655f686173683d346565383065333365353635643336333430356634303238393436653837623365396563306335383661666639656630656436663561653762656237326431333b",
        "10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod",
        "10 7936eb315fb4e74b99e7d461bc5c96049e1ee092 ima-ng sha1:bc026ae66d81713e4e852465e980784dc96651f8 /usr/lib/systemd/systemd",
        // rust-keylime's ima-sig vector (keylime/src/ima/entry.rs).
        "10 06e804489a77ddab51b9ef27e17053c0e5d503bd ima-sig sha1:1cb84b12db45d7da8de58ba6744187db84082f0e /usr/bin/zmore 030202531f402500483046022100bff9c02dc7b270c83cc94bfec10eecd42831de2cdcb04f024369a14623bc3a91022100cc4d015ae932fb98d6846645ed7d1bb1afd4621ec9089bc087126f191886dd31",
    ];

    #[test]
    fn rebuilt_data_hashes_to_the_template_hash_column() {
        let mut buf = Vec::new();
        for line in KEYLIME_VALID {
            let e = ImaEntry::parse(line).unwrap();
            e.write_template_data(&mut buf);
            assert!(
                e.template_hash.matches(HashAlg::Sha1.hash(&buf).as_bytes()),
                "{line}"
            );
        }
    }

    #[test]
    fn byte_exact_vectors_from_rust_keylime() {
        // From rust-keylime keylime/src/ima/entry.rs unit tests. Its ima-ng/ima-sig/
        // ima-buf vectors with a `sha1:` digest leave the `sha1:\0` prefix out of d-ng,
        // which does not hash to their own template-hash column (checked above with
        // the prefix), so only the vectors where both implementations agree are here.
        let ima = ImaEntry::parse("10 d7026dc672344d3ee372217bdbc7395947788671 ima 6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e /usr/bin/kmod").unwrap();
        let mut expected =
            decode("6f66d1d8e2fffcc12dfcb78c04b81fe5b8bbae4e2f7573722f62696e2f6b6d6f64");
        expected.resize(20 + 256, 0);
        assert_eq!(ima.template_data(), expected);

        let sig_missing = ImaEntry::parse("10 5426cf3031a43f5bfca183d79950698a95a728f6 ima-sig sha256:f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e /lib/modules/5.4.48-openpower1/kernel/drivers/usb/common/usb-common.ko ").unwrap();
        assert_eq!(
            sig_missing.template_data(),
            decode("280000007368613235363a00f1125b940480d20ad841d26d5ea253edc0704b5ec1548c891edf212cb1a9365e470000002f6c69622f6d6f64756c65732f352e342e34382d6f70656e706f776572312f6b65726e656c2f647269766572732f7573622f636f6d6d6f6e2f7573622d636f6d6d6f6e2e6b6f0000000000")
        );
    }

    #[test]
    fn layouts_follow_the_field_definitions() {
        let e = ImaEntry::parse("10 00 ima-buf sm3_256:0102 key ff00").unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&(7u32 + 2 + 2).to_le_bytes());
        expected.extend_from_slice(b"sm3_256:\0\x01\x02");
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(b"key\0");
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(&[0xff, 0x00]);
        assert_eq!(e.template_data(), expected);

        // A prefix-less SHA-1 digest is encoded as if `sha1:` had been written.
        let bare_line = format!("10 00 ima-ng {} /x", "ab".repeat(20));
        let bare = ImaEntry::parse(&bare_line).unwrap();
        let prefixed_line = format!("10 00 ima-ng sha1:{} /x", "ab".repeat(20));
        let prefixed = ImaEntry::parse(&prefixed_line).unwrap();
        assert_eq!(bare.template_data(), prefixed.template_data());

        // Legacy names fill exactly 256 bytes, NUL included.
        let name = "n".repeat(255);
        let e_line = format!("10 00 ima {} {name}", "cd".repeat(20));
        let e = ImaEntry::parse(&e_line).unwrap();
        let data = e.template_data();
        assert_eq!(data.len(), 20 + 256);
        assert_eq!(data[20..275], *name.as_bytes());
        assert_eq!(data[275], 0);
    }

    #[test]
    fn non_ascii_algorithm_is_cut_to_its_character_count() {
        // "é" is one character but two UTF-8 bytes: Keylime writes one byte of it.
        let e = ImaEntry::parse("10 00 ima-ng \u{e9}:01 /x").unwrap();
        let data = e.template_data();
        assert_eq!(&data[..4], &(1u32 + 2 + 1).to_le_bytes());
        assert_eq!(&data[4..8], &[0xc3, b':', 0, 1]);
    }
}
