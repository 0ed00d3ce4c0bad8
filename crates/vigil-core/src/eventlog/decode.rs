//! Event-data decoding: what an event's bytes mean for its type, following the TCG PC
//! Client Platform Firmware Profile and the UEFI specification, and decoding exactly the
//! structures `tpm2_eventlog` decodes (so [`super::to_yaml`] can print what it prints).
//!
//! Decoding never fails: data too short or inconsistent for its type becomes
//! [`EventData::Raw`], the way `tpm2_eventlog` falls back to hex. Lengths inside the data
//! (name lengths, signature-list sizes, partition counts) only ever select sub-slices of
//! the event's bytes; vectors grow one parsed item at a time, so a lying length cannot
//! make Vigil allocate more than the event holds.

use std::fmt;

use super::parse::parse_spec_id;
use super::{
    Event, SpecId, EV_ACTION, EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_GPT_EVENT, EV_EFI_HANDOFF_TABLES, EV_EFI_HANDOFF_TABLES2,
    EV_EFI_HCRTM_EVENT, EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    EV_EFI_RUNTIME_SERVICES_DRIVER, EV_EFI_VARIABLE_AUTHORITY, EV_EFI_VARIABLE_BOOT,
    EV_EFI_VARIABLE_BOOT2, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EVENT_TAG, EV_IPL, EV_NO_ACTION,
    EV_POST_CODE, EV_SEPARATOR, EV_S_CRTM_CONTENTS, SPEC_ID_SIGNATURE, STARTUP_LOCALITY_SIGNATURE,
};

/// A UEFI `EFI_GUID`, kept in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// `EFI_CERT_X509_GUID`: a signature-list entry holding a DER X.509 certificate.
    pub const CERT_X509: Self = Self([
        0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0,
        0x72,
    ]);
    /// `EFI_CERT_SHA256_GUID`: a signature-list entry holding a SHA-256 image hash.
    pub const CERT_SHA256: Self = Self([
        0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43,
        0x28,
    ]);
}

impl fmt::Display for Guid {
    /// The textual form (`8be4df61-93ca-11d2-aa0d-00e098032b8c`): the first three fields
    /// are little-endian, as UEFI stores them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An event's data, decoded for its type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventData<'a> {
    /// The log's first event: the `Spec ID Event03` header.
    SpecId(SpecId),
    /// An `EV_NO_ACTION` `StartupLocality` event: the locality the TPM started from.
    StartupLocality(u8),
    /// Another `EV_NO_ACTION` event.
    NoAction(&'a [u8]),
    /// `EV_EFI_VARIABLE_*`: a UEFI variable (`UEFI_VARIABLE_DATA`).
    Variable(Variable<'a>),
    /// `EV_POST_CODE`: a firmware blob or a POST string.
    PostCode(PostCode<'a>),
    /// `EV_EFI_PLATFORM_FIRMWARE_BLOB` and `EV_S_CRTM_CONTENTS`.
    FirmwareBlob {
        /// Physical address of the blob.
        base: u64,
        /// Its length.
        length: u64,
    },
    /// `EV_EFI_PLATFORM_FIRMWARE_BLOB2`.
    FirmwareBlob2 {
        /// The blob's description.
        description: BlobDescription<'a>,
        /// Physical address of the blob.
        base: u64,
        /// Its length.
        length: u64,
    },
    /// `EV_EFI_ACTION` and `EV_ACTION`: an ASCII action string.
    Action(&'a [u8]),
    /// `EV_IPL`: boot-loader measurements (`grub_cmd: …`, `kernel_cmdline: …`, file
    /// paths, or UTF-16 command lines from systemd-boot), in no declared encoding.
    Ipl(&'a [u8]),
    /// `EV_EFI_BOOT_SERVICES_APPLICATION`, `…_DRIVER`, `EV_EFI_RUNTIME_SERVICES_DRIVER`.
    ImageLoad(ImageLoad<'a>),
    /// `EV_EFI_GPT_EVENT`: the GPT header and its non-empty partitions.
    Gpt(GptData<'a>),
    /// `EV_SEPARATOR`: normally 0 (success) or 0xffffffff (error).
    Separator(u32),
    /// `EV_EFI_HANDOFF_TABLES`: configuration tables handed to the OS.
    HandoffTables(Vec<HandoffTable>),
    /// `EV_EFI_HANDOFF_TABLES2`: described configuration tables.
    HandoffTables2 {
        /// The tables' description.
        description: BlobDescription<'a>,
        /// The tables.
        tables: Vec<HandoffTable>,
    },
    /// `EV_EVENT_TAG` (`TCG_PCClientTaggedEvent`): an id and its data.
    EventTag {
        /// `taggedEventID`.
        id: u32,
        /// `taggedEventData`.
        data: &'a [u8],
    },
    /// `EV_EFI_HCRTM_EVENT`: the H-CRTM's string.
    Hcrtm(&'a [u8]),
    /// No data.
    Empty,
    /// Data of a type Vigil does not decode, or that does not decode as its type.
    Raw(&'a [u8]),
}

/// A description field of `*_BLOB2`/`*_TABLES2` events (usually ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobDescription<'a>(pub &'a [u8]);

/// `EV_POST_CODE` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostCode<'a> {
    /// A 16-byte `UEFI_PLATFORM_FIRMWARE_BLOB`.
    Blob {
        /// Physical address of the blob.
        base: u64,
        /// Its length.
        length: u64,
    },
    /// A string such as `POST CODE`, `SMM CODE`, `ACPI DATA`.
    Text(&'a [u8]),
}

/// A UEFI variable measurement (`UEFI_VARIABLE_DATA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable<'a> {
    /// `VariableName`: the vendor GUID (EFI global variables, image security database,
    /// shim, ...).
    pub guid: Guid,
    /// `UnicodeNameLength` as declared, in UTF-16 units.
    pub name_length: u64,
    /// `VariableDataLength` as declared.
    pub data_length: u64,
    /// The name, decoded from UTF-16 (unpaired surrogates become U+FFFD).
    pub name: String,
    /// The variable's value: `data_length` bytes, or fewer when the event is shorter.
    pub data: &'a [u8],
    /// Every byte after the name, up to the end of the event (signature lists are read
    /// from here, as `tpm2_eventlog` reads them).
    pub rest: &'a [u8],
    /// The value, decoded for the variable.
    pub value: VariableValue<'a>,
}

/// A UEFI variable's value, decoded by name and event type as `tpm2_eventlog` does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VariableValue<'a> {
    /// `SecureBoot` (driver config) and `MokListTrusted` (authority): enabled or not.
    Enabled(bool),
    /// `PK`, `KEK`, `db`, `dbx` (driver config): `EFI_SIGNATURE_LIST`s.
    SignatureLists(Vec<SignatureList<'a>>),
    /// `db`, `Shim`, `vendor_db` (authority): the one `EFI_SIGNATURE_DATA` that
    /// authorised an image.
    Signature(SignatureEntry<'a>),
    /// `SbatLevel` (authority): the SBAT revocation CSV.
    Sbat(&'a [u8]),
    /// `BootOrder`: the boot option numbers.
    BootOrder(Vec<u16>),
    /// `Boot####`: an `EFI_LOAD_OPTION`.
    LoadOption(LoadOption<'a>),
    /// Anything else: the raw value.
    Raw,
    /// A value of a decoded variable that does not fit its type (a 2-byte `SecureBoot`,
    /// an odd-length `BootOrder`, a load option without a terminated description):
    /// `tpm2_eventlog --eventlog-version=2` refuses the log; Vigil prints it as hex.
    Malformed,
}

/// An `EFI_SIGNATURE_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureList<'a> {
    /// `SignatureType`: [`Guid::CERT_X509`], [`Guid::CERT_SHA256`], ...
    pub signature_type: Guid,
    /// `SignatureListSize` as declared.
    pub list_size: u32,
    /// `SignatureHeaderSize` as declared.
    pub header_size: u32,
    /// `SignatureSize` as declared (owner GUID included).
    pub signature_size: u32,
    /// The entries that fit in the list and in the event. Empty when the list's sizes
    /// are inconsistent (`tpm2_eventlog` then stops after the list's header).
    pub signatures: Vec<SignatureEntry<'a>>,
}

/// An `EFI_SIGNATURE_DATA`: who owns the entry and the entry (a DER certificate or a
/// hash, per the list's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry<'a> {
    /// `SignatureOwner`.
    pub owner: Guid,
    /// `SignatureData`.
    pub data: &'a [u8],
}

/// An `EFI_LOAD_OPTION` (`Boot####`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption<'a> {
    /// `Attributes` (bit 0: `LOAD_OPTION_ACTIVE`).
    pub attributes: u32,
    /// `FilePathListLength` as declared.
    pub file_path_list_length: u16,
    /// `Description`, decoded from UTF-16 up to its terminator.
    pub description: String,
    /// Everything after the description: the device path list and optional data.
    pub device_path: &'a [u8],
}

impl LoadOption<'_> {
    /// Whether `LOAD_OPTION_ACTIVE` is set.
    pub fn enabled(&self) -> bool {
        self.attributes & 1 != 0
    }
}

/// A loaded image (`UEFI_IMAGE_LOAD_EVENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLoad<'a> {
    /// `ImageLocationInMemory`.
    pub location: u64,
    /// `ImageLengthInMemory`.
    pub length: u64,
    /// `ImageLinkTimeAddress`.
    pub link_time_address: u64,
    /// `LengthOfDevicePath` as declared.
    pub device_path_length: u64,
    /// Every byte after the header (the device path, when the length is honest).
    pub device_path: &'a [u8],
}

/// An `EV_EFI_GPT_EVENT` (`UEFI_GPT_DATA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptData<'a> {
    /// The 8-byte signature (`EFI PART`).
    pub signature: &'a [u8],
    /// `Revision`.
    pub revision: u32,
    /// `HeaderSize`.
    pub header_size: u32,
    /// `HeaderCRC32`.
    pub header_crc32: u32,
    /// `MyLBA`.
    pub my_lba: u64,
    /// `AlternateLBA`.
    pub alternate_lba: u64,
    /// `FirstUsableLBA`.
    pub first_usable_lba: u64,
    /// `LastUsableLBA`.
    pub last_usable_lba: u64,
    /// `DiskGUID`.
    pub disk_guid: Guid,
    /// `PartitionEntryLBA`.
    pub partition_entry_lba: u64,
    /// `NumberOfPartitionEntries`.
    pub number_of_partition_entries: u32,
    /// `SizeOfPartitionEntry`.
    pub size_of_partition_entry: u32,
    /// `PartitionEntryArrayCRC32`.
    pub partition_entry_array_crc32: u32,
    /// The partitions measured (`NumberOfPartitions` of them).
    pub partitions: Vec<GptPartition>,
}

/// One GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// `PartitionTypeGUID`.
    pub type_guid: Guid,
    /// `UniquePartitionGUID`.
    pub unique_guid: Guid,
    /// `StartingLBA`.
    pub starting_lba: u64,
    /// `EndingLBA`.
    pub ending_lba: u64,
    /// `Attributes`.
    pub attributes: u64,
    /// `PartitionName`, up to its first NUL.
    pub name: String,
}

/// One `EFI_CONFIGURATION_TABLE` entry of a handoff-tables event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffTable {
    /// `VendorGuid` (ACPI, SMBIOS, ...).
    pub vendor_guid: Guid,
    /// `VendorTable`: the table's address.
    pub address: u64,
}

/// A little-endian reader that answers `None` instead of reading past the end.
struct Le<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn guid(&mut self) -> Option<Guid> {
        self.array().map(Guid)
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos.min(self.bytes.len())..]
    }
}

/// Decodes UTF-16LE units, replacing unpaired surrogates.
pub(crate) fn utf16_lossy(bytes: &[u8]) -> String {
    char::decode_utf16(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]])),
    )
    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    .collect()
}

/// Decodes one event's data for its type.
pub fn decode<'a>(event: &Event<'a>) -> EventData<'a> {
    let data = event.data;
    if data.is_empty() {
        return EventData::Empty;
    }
    let decoded = match event.event_type {
        EV_NO_ACTION => Some(no_action(event)),
        EV_EFI_VARIABLE_DRIVER_CONFIG
        | EV_EFI_VARIABLE_BOOT
        | EV_EFI_VARIABLE_BOOT2
        | EV_EFI_VARIABLE_AUTHORITY => variable(data, event.event_type).map(EventData::Variable),
        EV_POST_CODE => Some(EventData::PostCode(match blob(data) {
            Some((base, length)) if data.len() == 16 => PostCode::Blob { base, length },
            _ => PostCode::Text(data),
        })),
        EV_S_CRTM_CONTENTS | EV_EFI_PLATFORM_FIRMWARE_BLOB => {
            blob(data).map(|(base, length)| EventData::FirmwareBlob { base, length })
        }
        EV_EFI_PLATFORM_FIRMWARE_BLOB2 => {
            let mut r = Le::new(data);
            let n = usize::from(r.u8().unwrap_or(0));
            r.take(n).and_then(|d| {
                Some(EventData::FirmwareBlob2 {
                    description: BlobDescription(d),
                    base: r.u64()?,
                    length: r.u64()?,
                })
            })
        }
        EV_EFI_ACTION | EV_ACTION => Some(EventData::Action(data)),
        EV_IPL => Some(EventData::Ipl(data)),
        EV_EFI_BOOT_SERVICES_APPLICATION
        | EV_EFI_BOOT_SERVICES_DRIVER
        | EV_EFI_RUNTIME_SERVICES_DRIVER => image_load(data).map(EventData::ImageLoad),
        EV_EFI_GPT_EVENT => gpt(data).map(EventData::Gpt),
        EV_SEPARATOR => <[u8; 4]>::try_from(data)
            .ok()
            .map(|b| EventData::Separator(u32::from_le_bytes(b))),
        EV_EFI_HANDOFF_TABLES => handoff_tables(&mut Le::new(data)).map(EventData::HandoffTables),
        EV_EFI_HANDOFF_TABLES2 => {
            let mut r = Le::new(data);
            let n = usize::from(r.u8().unwrap_or(0));
            r.take(n).and_then(|d| {
                Some(EventData::HandoffTables2 {
                    description: BlobDescription(d),
                    tables: handoff_tables(&mut r)?,
                })
            })
        }
        EV_EVENT_TAG => {
            let mut r = Le::new(data);
            r.u32().and_then(|id| {
                let size = r.u32()? as usize;
                let tagged = r.take(size)?;
                r.rest()
                    .is_empty()
                    .then_some(EventData::EventTag { id, data: tagged })
            })
        }
        EV_EFI_HCRTM_EVENT => Some(EventData::Hcrtm(data)),
        _ => None,
    };
    decoded.unwrap_or(EventData::Raw(data))
}

fn no_action<'a>(event: &Event<'a>) -> EventData<'a> {
    let data = event.data;
    if event.number == 0 && data.get(..16) == Some(SPEC_ID_SIGNATURE) {
        if let Ok(spec) = parse_spec_id(data) {
            return EventData::SpecId(spec);
        }
    }
    match (data.get(..16), data.get(16)) {
        (Some(sig), Some(&locality)) if sig == STARTUP_LOCALITY_SIGNATURE => {
            EventData::StartupLocality(locality)
        }
        _ => EventData::NoAction(data),
    }
}

fn blob(data: &[u8]) -> Option<(u64, u64)> {
    let mut r = Le::new(data);
    Some((r.u64()?, r.u64()?))
}

fn image_load(data: &[u8]) -> Option<ImageLoad<'_>> {
    let mut r = Le::new(data);
    Some(ImageLoad {
        location: r.u64()?,
        length: r.u64()?,
        link_time_address: r.u64()?,
        device_path_length: r.u64()?,
        device_path: r.rest(),
    })
}

fn handoff_tables(r: &mut Le<'_>) -> Option<Vec<HandoffTable>> {
    let count = r.u64()?;
    let mut tables = Vec::new();
    for _ in 0..count {
        tables.push(HandoffTable {
            vendor_guid: r.guid()?,
            address: r.u64()?,
        });
    }
    r.rest().is_empty().then_some(tables)
}

fn gpt(data: &[u8]) -> Option<GptData<'_>> {
    let mut r = Le::new(data);
    let signature = r.take(8)?;
    let revision = r.u32()?;
    let header_size = r.u32()?;
    let header_crc32 = r.u32()?;
    let _reserved = r.u32()?;
    let mut gpt = GptData {
        signature,
        revision,
        header_size,
        header_crc32,
        my_lba: r.u64()?,
        alternate_lba: r.u64()?,
        first_usable_lba: r.u64()?,
        last_usable_lba: r.u64()?,
        disk_guid: r.guid()?,
        partition_entry_lba: r.u64()?,
        number_of_partition_entries: r.u32()?,
        size_of_partition_entry: r.u32()?,
        partition_entry_array_crc32: r.u32()?,
        partitions: Vec::new(),
    };
    let count = r.u64()?;
    for _ in 0..count {
        let type_guid = r.guid()?;
        let unique_guid = r.guid()?;
        let starting_lba = r.u64()?;
        let ending_lba = r.u64()?;
        let attributes = r.u64()?;
        let name = utf16_lossy(r.take(72)?);
        let name = name.split('\0').next().unwrap_or_default().to_owned();
        gpt.partitions.push(GptPartition {
            type_guid,
            unique_guid,
            starting_lba,
            ending_lba,
            attributes,
            name,
        });
    }
    // tpm2_eventlog refuses a GPT event with bytes after the partitions.
    r.rest().is_empty().then_some(gpt)
}

fn variable(data: &[u8], event_type: u32) -> Option<Variable<'_>> {
    let mut r = Le::new(data);
    let guid = r.guid()?;
    let name_length = r.u64()?;
    let data_length = r.u64()?;
    let name_bytes = r.take(usize::try_from(name_length).ok()?.checked_mul(2)?)?;
    let name = utf16_lossy(name_bytes);
    let rest = r.rest();
    let value_len = usize::try_from(data_length).map_or(rest.len(), |n| n.min(rest.len()));
    let value_bytes = &rest[..value_len];
    let value = variable_value(&name, event_type, data_length, value_bytes, rest)
        .unwrap_or(VariableValue::Malformed);
    Some(Variable {
        guid,
        name_length,
        data_length,
        name,
        data: value_bytes,
        rest,
        value,
    })
}

/// `None` where `tpm2_eventlog` gives up on the event (it then fails the whole log).
fn variable_value<'a>(
    name: &str,
    event_type: u32,
    declared: u64,
    data: &'a [u8],
    rest: &'a [u8],
) -> Option<VariableValue<'a>> {
    let enabled = || match (declared, data.first()) {
        (0, _) => Some(VariableValue::Enabled(false)),
        (1, Some(&b)) => Some(VariableValue::Enabled(b != 0)),
        _ => None,
    };
    Some(match (event_type, name) {
        (EV_EFI_VARIABLE_DRIVER_CONFIG, "PK" | "KEK" | "db" | "dbx") => {
            VariableValue::SignatureLists(signature_lists(rest))
        }
        (EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot") => enabled()?,
        (EV_EFI_VARIABLE_AUTHORITY, "MokListTrusted") => enabled()?,
        (EV_EFI_VARIABLE_AUTHORITY, "db" | "Shim" | "vendor_db") => {
            let mut r = Le::new(data);
            let owner = r.guid()?;
            VariableValue::Signature(SignatureEntry {
                owner,
                data: r.rest(),
            })
        }
        (EV_EFI_VARIABLE_AUTHORITY, "SbatLevel") => VariableValue::Sbat(data),
        (EV_EFI_VARIABLE_BOOT | EV_EFI_VARIABLE_BOOT2, "BootOrder") => {
            if declared % 2 != 0 {
                return None;
            }
            VariableValue::BootOrder(
                data.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        }
        (EV_EFI_VARIABLE_BOOT | EV_EFI_VARIABLE_BOOT2, _) if is_boot_option(name) => {
            VariableValue::LoadOption(load_option(data)?)
        }
        _ => VariableValue::Raw,
    })
}

fn is_boot_option(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 8 && b.starts_with(b"Boot") && b[4..].iter().all(u8::is_ascii_hexdigit)
}

fn load_option(data: &[u8]) -> Option<LoadOption<'_>> {
    let mut r = Le::new(data);
    let attributes = r.u32()?;
    let file_path_list_length = r.u16()?;
    let rest = r.rest();
    // The description is NUL-terminated UTF-16; the device paths follow it.
    let end = rest
        .chunks_exact(2)
        .position(|c| c == [0, 0])
        .map(|i| i * 2)?;
    Some(LoadOption {
        attributes,
        file_path_list_length,
        description: utf16_lossy(&rest[..end]),
        device_path: &rest[end + 2..],
    })
}

/// `EFI_SIGNATURE_LIST`s, read the way `tpm2_eventlog` reads them: from the bytes after
/// the name to the end of the event, stopping at the first inconsistent list.
fn signature_lists(mut bytes: &[u8]) -> Vec<SignatureList<'_>> {
    let mut lists = Vec::new();
    while !bytes.is_empty() {
        let mut r = Le::new(bytes);
        let (Some(signature_type), Some(list_size), Some(header_size), Some(signature_size)) =
            (r.guid(), r.u32(), r.u32(), r.u32())
        else {
            break;
        };
        if signature_size < 16 {
            break;
        }
        let mut list = SignatureList {
            signature_type,
            list_size,
            header_size,
            signature_size,
            signatures: Vec::new(),
        };
        let body = (list_size as usize)
            .checked_sub(28)
            .and_then(|n| n.checked_sub(header_size as usize));
        let consistent = r.take(header_size as usize).is_some()
            && body.is_some_and(|n| n % signature_size as usize == 0);
        if consistent {
            let count = body.unwrap_or(0) / signature_size as usize;
            for _ in 0..count {
                let Some(entry) = r.take(signature_size as usize) else {
                    break;
                };
                list.signatures.push(SignatureEntry {
                    owner: Guid(entry[..16].try_into().unwrap_or([0; 16])),
                    data: &entry[16..],
                });
            }
        }
        let complete =
            consistent && list.signatures.len() == body.unwrap_or(0) / signature_size as usize;
        lists.push(list);
        if !complete {
            break;
        }
        match bytes.get(list_size as usize..) {
            Some(next) => bytes = next,
            None => break,
        }
    }
    lists
}
