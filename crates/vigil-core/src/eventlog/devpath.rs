//! UEFI device paths (`EFI_DEVICE_PATH_PROTOCOL`) as text, the way libefivar's
//! `efidp_format_device_path` prints them — which is what `tpm2_eventlog` prints when it
//! is built with libefivar, and what Keylime's `tpm_bootlog_enrich` turns hex device
//! paths into. Keylime's `example` policy and `create_mb_policy` match on this text
//! (`FvVol(…)/FvFile(…)` firmware applications, for instance).
//!
//! The nodes that boot logs carry are rendered like libefivar (PCI, ACPI roots, USB,
//! SATA, NVMe, SCSI, MAC, URI, hard-drive partitions, files, firmware volumes, relative
//! offsets, vendor nodes); other nodes print in libefivar's generic `Path(type,subtype,
//! hex)` style for their type. Node lengths are checked against the bytes present.

use super::decode::{utf16_lossy, Guid};

/// How device paths are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePathStyle {
    /// Hex, as `tpm2_eventlog` prints them when built without libefivar (Debian's).
    Hex,
    /// Text as libefivar before 39 prints it (file nodes as `File(\EFI\…)`).
    #[default]
    Efivar,
    /// Text as libefivar 39 and later print it (file nodes as bare `\EFI\…`).
    Efivar39,
}

/// Formats a device path of at most `limit` bytes as libefivar does. `None` where
/// libefivar reports an error (a node shorter than its header, or the first node running
/// past the limit); `tpm2_eventlog` then prints the bytes as hex.
pub fn device_path_text(bytes: &[u8], limit: usize, style: DevicePathStyle) -> Option<String> {
    let mut limit = limit.min(bytes.len());
    let mut out = String::new();
    let mut pos = 0usize;
    let mut first = true;
    while limit > 0 {
        let header = bytes.get(pos..pos + 4).filter(|_| limit >= 4);
        let Some(header) = header else {
            return (!out.is_empty()).then_some(out);
        };
        let (ty, sub) = (header[0], header[1]);
        let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
        if len < 4 {
            return None;
        }
        if len > limit {
            return (!out.is_empty()).then_some(out);
        }
        let node = &bytes[pos..pos + len];
        if !first {
            match (ty, sub) {
                (0x7f, 0x01) => out.push(','),
                (0x7f, _) => return Some(out),
                _ => out.push('/'),
            }
        }
        first = false;
        format_node(&mut out, ty, sub, &node[4..], style)?;
        limit -= len;
        if ty == 0x7f && sub == 0xff {
            // libefivar stays on an end-of-path node and stops at the next turn.
            if limit > 0 {
                return Some(out);
            }
            break;
        }
        pos += len;
    }
    Some(out)
}

fn hex(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

struct Fields<'a>(&'a [u8], usize);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.0.get(self.1..self.1 + N)?.try_into().ok()?;
        self.1 += N;
        Some(v)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn guid(&mut self) -> Option<Guid> {
        self.take().map(Guid)
    }
}

fn vendor(out: &mut String, label: &str, body: &[u8]) -> Option<()> {
    let mut f = Fields(body, 0);
    let guid = f.guid()?;
    out.push_str(&format!("{label}({guid}"));
    if body.len() > 16 {
        out.push(',');
        hex(out, &body[16..]);
    }
    out.push(')');
    Some(())
}

fn generic(out: &mut String, label: &str, sub: u8, body: &[u8]) {
    out.push_str(&format!("{label}({sub},"));
    hex(out, body);
    out.push(')');
}

fn format_node(
    out: &mut String,
    ty: u8,
    sub: u8,
    body: &[u8],
    style: DevicePathStyle,
) -> Option<()> {
    let mut f = Fields(body, 0);
    match ty {
        // Hardware.
        0x01 => match sub {
            0x01 => {
                let function = f.u8()?;
                let device = f.u8()?;
                out.push_str(&format!("Pci(0x{device:x},0x{function:x})"));
            }
            0x02 => out.push_str(&format!("PcCard(0x{:x})", f.u8()?)),
            0x03 => {
                let (kind, start, end) = (f.u32()?, f.u64()?, f.u64()?);
                out.push_str(&format!("MemoryMapped({kind},0x{start:x},0x{end:x})"));
            }
            0x04 => vendor(out, "VenHw", body)?,
            0x05 => out.push_str(&format!("Ctrl(0x{:x})", f.u32()?)),
            0x06 => {
                let (kind, base) = (f.u8()?, f.u64()?);
                out.push_str(&format!("BMC({kind},0x{base:x})"));
            }
            _ => generic(out, "HardwarePath", sub, body),
        },
        // ACPI.
        0x02 if sub == 0x01 => {
            let (hid, uid) = (f.u32()?, f.u32()?);
            match hid {
                0x0a03_41d0 => out.push_str(&format!("PciRoot(0x{uid:x})")),
                0x0a08_41d0 => out.push_str(&format!("PcieRoot(0x{uid:x})")),
                0x0a05_41d0 | 0x0a06_41d0 => out.push_str("AcpiContainer()"),
                0x0c09_41d0 => out.push_str("EmbeddedController()"),
                0x0604_41d0 => out.push_str(&format!("Floppy(0x{uid:x})")),
                0x0301_41d0 => out.push_str(&format!("Keyboard(0x{uid:x})")),
                0x0501_41d0 => out.push_str(&format!("Serial(0x{uid:x})")),
                _ => out.push_str(&format!("Acpi(0x{hid:08x},0x{uid:x})")),
            }
        }
        0x02 => generic(out, "AcpiPath", sub, body),
        // Messaging.
        0x03 => match sub {
            0x01 => {
                let (primary, slave, lun) = (f.u8()?, f.u8()?, f.u16()?);
                out.push_str(&format!("Ata({primary},{slave},{lun})"));
            }
            0x02 => {
                let (target, lun) = (f.u16()?, f.u16()?);
                out.push_str(&format!("SCSI({target},{lun})"));
            }
            0x05 => {
                let (port, interface) = (f.u8()?, f.u8()?);
                out.push_str(&format!("USB({port},{interface})"));
            }
            0x0a => vendor(out, "VenMsg", body)?,
            0x0b => {
                let mac = f.take::<32>()?;
                let if_type = f.u8()?;
                out.push_str("MAC(");
                hex(out, &mac[..if if_type < 2 { 6 } else { 32 }]);
                out.push_str(&format!(",{if_type})"));
            }
            0x11 => out.push_str(&format!("Unit({})", f.u8()?)),
            0x12 => {
                let (hba, pmp, lun) = (f.u16()?, f.u16()?, f.u16()?);
                out.push_str(&format!("Sata({hba},{pmp},{lun})"));
            }
            0x14 => out.push_str(&format!("Vlan({})", f.u16()?)),
            0x17 => {
                let nsid = f.u32()?;
                let e = f.take::<8>()?;
                out.push_str(&format!(
                    "NVMe(0x{nsid:x},{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X})",
                    e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]
                ));
            }
            0x18 => {
                let uri = body.split(|&b| b == 0).next().unwrap_or_default();
                out.push_str(&format!("Uri({})", String::from_utf8_lossy(uri)));
            }
            0x1a => out.push_str(&format!("SD({})", f.u8()?)),
            0x1d => out.push_str(&format!("eMMC({})", f.u8()?)),
            _ => generic(out, "Msg", sub, body),
        },
        // Media.
        0x04 => match sub {
            0x01 => {
                let number = f.u32()?;
                let (start, size) = (f.u64()?, f.u64()?);
                let signature = f.take::<16>()?;
                let _format = f.u8()?;
                let kind = f.u8()?;
                out.push_str(&format!("HD({number},"));
                match kind {
                    1 => {
                        let sig = u32::from_le_bytes([
                            signature[0],
                            signature[1],
                            signature[2],
                            signature[3],
                        ]);
                        out.push_str(&format!("MBR,0x{sig:x},0x{start:x},0x{size:x})"));
                    }
                    2 => out.push_str(&format!("GPT,{},0x{start:x},0x{size:x})", Guid(signature))),
                    _ => {
                        out.push_str(&format!("{kind},"));
                        hex(out, &signature);
                        out.push_str(&format!(",0x{start:x},0x{size:x})"));
                    }
                }
            }
            0x02 => {
                let (entry, rba, sectors) = (f.u32()?, f.u64()?, f.u64()?);
                out.push_str(&format!("CDROM({entry},0x{rba:x},0x{sectors:x})"));
            }
            0x03 => vendor(out, "VenMedia", body)?,
            0x04 => {
                // The node's last UTF-16 unit is its terminator; stop at any NUL.
                let units = (body.len() / 2).saturating_sub(1);
                let name = utf16_lossy(&body[..units * 2]);
                let name = name.split('\0').next().unwrap_or_default();
                if style == DevicePathStyle::Efivar39 {
                    out.push_str(name);
                } else {
                    out.push_str(&format!("File({name})"));
                }
            }
            0x05 => out.push_str(&format!("Media({})", f.guid()?)),
            0x06 => out.push_str(&format!("FvFile({})", f.guid()?)),
            0x07 => out.push_str(&format!("FvVol({})", f.guid()?)),
            0x08 => {
                let _reserved = f.u32()?;
                let (first, last) = (f.u64()?, f.u64()?);
                out.push_str(&format!("Offset(0x{first:x},0x{last:x})"));
            }
            // libefivar prints only the first half of an unknown media node's bytes.
            _ => generic(out, "MediaPath", sub, &body[..body.len() / 2]),
        },
        // BIOS boot specification.
        0x05 if sub == 0x01 => {
            let (device_type, status) = (f.u16()?, f.u16()?);
            let description = body[4..].split(|&b| b == 0).next().unwrap_or_default();
            let description = String::from_utf8_lossy(description);
            const TYPES: [&str; 7] = ["", "Floppy", "HD", "CDROM", "PCMCIA", "USB", "Network"];
            match TYPES
                .get(usize::from(device_type))
                .filter(|_| device_type > 0)
            {
                Some(t) => out.push_str(&format!("BBS({t},{description},0x{status:x})")),
                None => out.push_str(&format!("BBS({device_type},{description},0x{status:x})")),
            }
        }
        0x05 => generic(out, "BbsPath", sub, body),
        // End of an instance (a comma) or of the whole path (nothing).
        0x7f => {
            if sub == 0x01 {
                out.push(',');
            }
        }
        _ => {
            out.push_str(&format!("Path({ty},{sub},"));
            hex(out, body);
            out.push(')');
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn paths_from_tpm2_tools_fixtures() {
        // Pairs of tpm2-tools' event-raw and event-pretty(-39) fixtures.
        let dp = unhex("02010c00d041030a0000000001010600000201010600000004081800000000000026010000000000ffc30300000000007fff0400");
        assert_eq!(
            device_path_text(&dp, dp.len(), DevicePathStyle::Efivar).unwrap(),
            "PciRoot(0x0)/Pci(0x2,0x0)/Pci(0x0,0x0)/Offset(0x12600,0x3c3ff)"
        );
        let dp = unhex("02010c00d041030a0000000001010600000604012a000f0000000028000000000000005003000000000098e759c36a59b642b6f6eca290429d990202040430005c004500460049005c0042004f004f0054005c0042004f004f0054005800360034002e0045004600490000007fff0400");
        assert_eq!(
            device_path_text(&dp, dp.len(), DevicePathStyle::Efivar).unwrap(),
            r"PciRoot(0x0)/Pci(0x6,0x0)/HD(15,GPT,c359e798-596a-42b6-b6f6-eca290429d99,0x2800,0x35000)/File(\EFI\BOOT\BOOTX64.EFI)"
        );
        assert_eq!(
            device_path_text(&dp, dp.len(), DevicePathStyle::Efivar39).unwrap(),
            r"PciRoot(0x0)/Pci(0x6,0x0)/HD(15,GPT,c359e798-596a-42b6-b6f6-eca290429d99,0x2800,0x35000)/\EFI\BOOT\BOOTX64.EFI"
        );
        // A vendor node, then the end of the path, then more nodes: only the first path.
        let dp = unhex("01041400e775e299a075374ba2e6c5385e6c00cb7fff040004012a0001000000");
        assert_eq!(
            device_path_text(&dp, dp.len(), DevicePathStyle::Efivar).unwrap(),
            "VenHw(99e275e7-75a0-4b37-a2e6-c5385e6c00cb)"
        );
        // A zero limit is an empty path; a bogus first node is an error.
        assert_eq!(
            device_path_text(&dp, 0, DevicePathStyle::Efivar).unwrap(),
            ""
        );
        assert_eq!(
            device_path_text(&unhex("0102020000"), 5, DevicePathStyle::Efivar),
            None
        );
    }
}
