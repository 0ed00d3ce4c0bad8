//! The TCG PC Client (UEFI) event log — `/sys/kernel/security/tpm0/binary_bios_measurements`:
//! parsing, replay to per-bank PCR values, boot aggregates, event-data decoding and the
//! `tpm2_eventlog`-compatible YAML that Keylime's measured-boot policies read.
//!
//! - [`parse`] reads the log. It starts with one event in the SHA-1 format
//!   (`TCG_PCClientPCREvent`); in a crypto-agile log that event is an `EV_NO_ACTION`
//!   carrying the `Spec ID Event03` structure, which lists the banks and their digest
//!   sizes, and every later event is a `TCG_PCR_EVENT2` with one digest per bank. Without
//!   it the whole log is SHA-1 events (legacy firmware), whose first event must then be a
//!   measurement (into PCR 0–23, with data) — otherwise the bytes are not an event log
//!   (zero bytes would read as one empty event). Firmware may leave zero padding
//!   after the last event; like `tpm2_eventlog` (through which Keylime reads logs), Vigil
//!   also ignores a trailing fragment shorter than an event header.
//! - [`EventLog::replay`] extends every digest of every event into its bank, except
//!   `EV_NO_ACTION` events, which are informational. PCRs start at zero, except that a
//!   `StartupLocality` `EV_NO_ACTION` event sets the last byte of PCR 0's initial value to
//!   the locality the TPM was started from, and an H-CRTM event starts PCR 0 at locality
//!   4 (as the TPM does). [`boot_aggregates`] hashes the replayed PCRs 0–7 (and 0–9) as
//!   IMA's `boot_aggregate` does.
//! - [`decode`] turns an event's data into a typed [`EventData`] (EFI variables and
//!   signature lists, load options, image loads with device paths, GPT headers, ...).
//! - [`to_yaml`] and [`to_json`] print the log as `tpm2_eventlog` does.
//!
//! Everything is read through bounds-checked cursors: a truncated or absurd log is a
//! typed error naming the event and byte offset, never a panic, and nothing is allocated
//! from a length field (events borrow the log's bytes). Event data that does not decode
//! falls back to its raw bytes rather than failing the log.

mod decode;
mod devpath;
mod parse;
mod render;
mod replay;

pub use decode::{
    decode, BlobDescription, EventData, GptData, GptPartition, Guid, HandoffTable, ImageLoad,
    LoadOption, PostCode, SignatureEntry, SignatureList, Variable, VariableValue,
};
pub use devpath::{device_path_text, DevicePathStyle};
pub use parse::{parse, Event, EventLog, EventLogError, SpecId};
pub use render::{to_json, to_yaml, to_yaml_values, RenderOptions};
pub use replay::{boot_aggregates, BootAggregates, PcrBanks};

/// `EV_POST_CODE`: a firmware blob or a POST string.
pub const EV_POST_CODE: u32 = 0x0000_0001;
/// `EV_NO_ACTION`: informational events, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`: the end of pre-OS measurements into a PCR.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_ACTION`: a TCG-defined action string.
pub const EV_ACTION: u32 = 0x0000_0005;
/// `EV_EVENT_TAG`: tagged event data (`TCG_PCClientTaggedEvent`).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_S_CRTM_CONTENTS`: the S-CRTM's firmware blob.
pub const EV_S_CRTM_CONTENTS: u32 = 0x0000_0007;
/// `EV_IPL`: boot loader measurements (grub commands, kernel command lines, files).
pub const EV_IPL: u32 = 0x0000_000D;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`: SecureBoot, PK, KEK, db, dbx.
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_VARIABLE_BOOT`: BootOrder and Boot#### variables.
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: a loaded UEFI application (shim, grub, kernel).
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_BOOT_SERVICES_DRIVER`: a loaded boot-services driver.
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
/// `EV_EFI_RUNTIME_SERVICES_DRIVER`: a loaded runtime driver.
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
/// `EV_EFI_GPT_EVENT`: the boot disk's GPT header and partitions.
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
/// `EV_EFI_ACTION`: a UEFI action string.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
/// `EV_EFI_PLATFORM_FIRMWARE_BLOB`: base and length of a firmware volume.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
/// `EV_EFI_HANDOFF_TABLES`: configuration tables handed to the OS.
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
/// `EV_EFI_PLATFORM_FIRMWARE_BLOB2`: a described firmware volume.
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;
/// `EV_EFI_HANDOFF_TABLES2`: described configuration tables.
pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000B;
/// `EV_EFI_VARIABLE_BOOT2`: Boot#### variables measured whole.
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000C;
/// `EV_EFI_HCRTM_EVENT`: an H-CRTM measurement (the TPM started PCR 0 at locality 4).
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
/// `EV_EFI_VARIABLE_AUTHORITY`: the db/shim entry that authorised an image.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// The name `tpm2_eventlog` prints for an event type.
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        0x0000_0000 => "EV_PREBOOT_CERT",
        0x0000_0001 => "EV_POST_CODE",
        0x0000_0002 => "EV_UNUSED",
        0x0000_0003 => "EV_NO_ACTION",
        0x0000_0004 => "EV_SEPARATOR",
        0x0000_0005 => "EV_ACTION",
        0x0000_0006 => "EV_EVENT_TAG",
        0x0000_0007 => "EV_S_CRTM_CONTENTS",
        0x0000_0008 => "EV_S_CRTM_VERSION",
        0x0000_0009 => "EV_CPU_MICROCODE",
        0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
        0x0000_000B => "EV_TABLE_OF_DEVICES",
        0x0000_000C => "EV_COMPACT_HASH",
        0x0000_000D => "EV_IPL",
        0x0000_000E => "EV_IPL_PARTITION_DATA",
        0x0000_000F => "EV_NONHOST_CODE",
        0x0000_0010 => "EV_NONHOST_CONFIG",
        0x0000_0011 => "EV_NONHOST_INFO",
        0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
        0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
        _ => return None,
    })
}
