//! The log as `tpm2_eventlog` prints it: the YAML Keylime's measured-boot code loads
//! (field names, nesting and scalar styles of tpm2-tools 5.8), and the same tree as
//! JSON.
//!
//! The output follows `tpm2_eventlog`'s quirks on purpose, because policies match on
//! the parsed YAML: Spec ID algorithms are `- Algorithm[0]:` entries whose fields are
//! siblings of that key, events of a legacy SHA-1 log have no `EventNum` and no list
//! dash (so that YAML has duplicate keys), event data printed as hex stops after 1024
//! bytes, action strings stop at a NUL, and `EV_IPL` strings are double-quoted with
//! tpm2-tools' escapes and line continuations. The `pcrs` section lists every PCR an
//! event names, as tpm2-tools does, even one that only `EV_NO_ACTION` events touch.
//!
//! With `version: 1` (tpm2_eventlog's default) variables print their data as hex and GPT
//! events as hex; `version: 2` (what Keylime asks for) decodes SecureBoot, PK/KEK/db/dbx
//! signature lists, authority entries, BootOrder, Boot#### load options, GPT headers and
//! StartupLocality.

use std::fmt::Write;

use serde_json::{Map, Value as Json};

use super::decode::{decode, EventData, PostCode, Variable, VariableValue};
use super::devpath::{device_path_text, DevicePathStyle};
use super::{event_type_name, EventLog, PcrBanks, EV_ACTION, EV_NO_ACTION};
use crate::hash::HashAlg;

/// What `tpm2_eventlog` printing to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// `--eventlog-version`: 1 (hex variable data) or 2 (decoded; what Keylime uses).
    pub version: u32,
    /// How device paths print: hex (tpm2-tools without libefivar) or libefivar text.
    pub device_paths: DevicePathStyle,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            version: 2,
            device_paths: DevicePathStyle::Efivar,
        }
    }
}

/// Most bytes `tpm2_eventlog` prints as hex for undecoded event data.
const MAX_HEX_EVENT: usize = 1024;

/// A YAML value, with the scalar style tpm2-tools uses for it.
enum Node {
    Map(Vec<(String, Self)>),
    Seq(Vec<Self>),
    /// A decimal integer.
    Int(u64),
    /// `0x…` hexadecimal.
    Hex(u64),
    /// An unquoted string.
    Plain(String),
    /// A double-quoted string printed as is (hex, or text tpm2-tools does not escape).
    Quoted(String),
    /// A single-quoted string.
    Single(String),
    /// A `|-` block scalar.
    Block(String),
    /// A double-quoted string with tpm2-tools' escapes, one entry per output line.
    Escaped {
        lines: Vec<String>,
        raw: String,
    },
    /// No value (`key:`).
    Null,
}

fn map(entries: Vec<(&str, Node)>) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    // Certificates make up most of a log's output: avoid the formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn until_nul(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// tpm2-tools' escaping for strings of unknown encoding: C escapes for control bytes,
/// `\x20`/`\t` for leading blanks (YAML would drop them after a line continuation), and
/// one output line per input line.
fn escaped(bytes: &[u8]) -> Node {
    let mut lines = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let mut out = Vec::with_capacity(line.len());
        let mut leading = true;
        for &b in line {
            let esc: Option<&[u8]> = match b {
                0 => Some(b"\\0"),
                0x07 => Some(b"\\a"),
                0x08 => Some(b"\\b"),
                b'\t' if leading => Some(b"\\t"),
                0x0b => Some(b"\\v"),
                0x0c => Some(b"\\f"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                0x1b => Some(b"\\e"),
                b'\\' => Some(b"\\\\"),
                b'"' => Some(b"\\\""),
                b' ' if leading => Some(b"\\x20"),
                _ => None,
            };
            if b != b' ' && b != b'\t' {
                leading = false;
            }
            match esc {
                Some(e) => out.extend_from_slice(e),
                None => out.push(b),
            }
        }
        lines.push(String::from_utf8_lossy(&out).into_owned());
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    Node::Escaped {
        lines,
        raw: String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn alg_name(id: u16) -> String {
    HashAlg::from_tpm_alg_id(id).map_or_else(|| format!("0x{id:04x}"), |a| a.name().to_owned())
}

fn hex_event(data: &[u8]) -> Node {
    Node::Quoted(hex(&data[..data.len().min(MAX_HEX_EVENT)]))
}

fn device_path(bytes: &[u8], limit: u64, style: DevicePathStyle) -> Node {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let text = match style {
        DevicePathStyle::Hex => None,
        _ => device_path_text(bytes, limit, style),
    };
    Node::Single(text.unwrap_or_else(|| hex(bytes)))
}

fn yes_no(b: bool) -> Node {
    Node::Single(if b { "Yes" } else { "No" }.to_owned())
}

fn variable_node(v: &Variable<'_>, opts: RenderOptions) -> Node {
    let mut entries = vec![
        ("VariableName", Node::Plain(v.guid.to_string())),
        ("UnicodeNameLength", Node::Int(v.name_length)),
        ("VariableDataLength", Node::Int(v.data_length)),
        ("UnicodeName", Node::Plain(v.name.clone())),
    ];
    let decoded = match (&v.value, opts.version >= 2) {
        (_, false) | (VariableValue::Raw | VariableValue::Malformed, _) => None,
        (VariableValue::Enabled(b), _) => Some(map(vec![("Enabled", yes_no(*b))])),
        (VariableValue::SignatureLists(lists), _) if lists.is_empty() => Some(Node::Null),
        (VariableValue::SignatureLists(lists), _) => Some(Node::Seq(
            lists
                .iter()
                .map(|l| {
                    let keys = if l.signatures.is_empty() {
                        Node::Null
                    } else {
                        Node::Seq(
                            l.signatures
                                .iter()
                                .map(|s| {
                                    map(vec![
                                        ("SignatureOwner", Node::Plain(s.owner.to_string())),
                                        ("SignatureData", Node::Plain(hex(s.data))),
                                    ])
                                })
                                .collect(),
                        )
                    };
                    map(vec![
                        ("SignatureType", Node::Plain(l.signature_type.to_string())),
                        ("SignatureListSize", Node::Int(l.list_size.into())),
                        ("SignatureHeaderSize", Node::Int(l.header_size.into())),
                        ("SignatureSize", Node::Int(l.signature_size.into())),
                        ("Keys", keys),
                    ])
                })
                .collect(),
        )),
        (VariableValue::Signature(s), _) => Some(Node::Seq(vec![map(vec![
            ("SignatureOwner", Node::Plain(s.owner.to_string())),
            ("SignatureData", Node::Plain(hex(s.data))),
        ])])),
        (VariableValue::Sbat(text), _) => Some(map(vec![("String", escaped(text))])),
        (VariableValue::BootOrder(order), _) if order.is_empty() => Some(Node::Null),
        (VariableValue::BootOrder(order), _) => Some(Node::Seq(
            order
                .iter()
                .map(|n| Node::Plain(format!("Boot{n:04x}")))
                .collect(),
        )),
        (VariableValue::LoadOption(o), _) => Some(map(vec![
            ("Enabled", yes_no(o.enabled())),
            (
                "FilePathListLength",
                Node::Int(o.file_path_list_length.into()),
            ),
            ("Description", Node::Quoted(o.description.clone())),
            (
                "DevicePath",
                device_path(o.device_path, u64::MAX, opts.device_paths),
            ),
        ])),
    };
    match decoded {
        Some(node) => entries.push(("VariableData", node)),
        None if v.data_length != 0 => entries.push(("VariableData", Node::Quoted(hex(v.data)))),
        None => {}
    }
    map(entries)
}

/// The `Event` node for one event's data, or `None` when tpm2-tools prints none.
fn event_node(
    event_type: u32,
    data: &EventData<'_>,
    raw: &[u8],
    opts: RenderOptions,
) -> Option<Node> {
    let v2 = opts.version >= 2;
    Some(match data {
        EventData::Empty => return None,
        EventData::Variable(v) => variable_node(v, opts),
        EventData::PostCode(PostCode::Blob { base, length })
        | EventData::FirmwareBlob { base, length } => map(vec![
            ("BlobBase", Node::Hex(*base)),
            ("BlobLength", Node::Hex(*length)),
        ]),
        EventData::PostCode(PostCode::Text(t)) | EventData::Hcrtm(t) => Node::Block(until_nul(t)),
        EventData::FirmwareBlob2 {
            description,
            base,
            length,
        } => map(vec![
            ("BlobDescriptionSize", Node::Int(description.0.len() as u64)),
            ("BlobDescription", Node::Quoted(hex(description.0))),
            ("BlobBase", Node::Hex(*base)),
            ("BlobLength", Node::Hex(*length)),
        ]),
        EventData::Action(t) if event_type != EV_ACTION => Node::Block(until_nul(t)),
        EventData::Ipl(t) => map(vec![("String", escaped(t))]),
        EventData::ImageLoad(i) => map(vec![
            ("ImageLocationInMemory", Node::Hex(i.location)),
            ("ImageLengthInMemory", Node::Int(i.length)),
            ("ImageLinkTimeAddress", Node::Hex(i.link_time_address)),
            ("LengthOfDevicePath", Node::Int(i.device_path_length)),
            (
                "DevicePath",
                device_path(i.device_path, i.device_path_length, opts.device_paths),
            ),
        ]),
        EventData::Gpt(g) if v2 => {
            let partitions = if g.partitions.is_empty() {
                Node::Null
            } else {
                Node::Seq(
                    g.partitions
                        .iter()
                        .map(|p| {
                            map(vec![
                                ("PartitionTypeGUID", Node::Plain(p.type_guid.to_string())),
                                (
                                    "UniquePartitionGUID",
                                    Node::Plain(p.unique_guid.to_string()),
                                ),
                                ("StartingLBA", Node::Hex(p.starting_lba)),
                                ("EndingLBA", Node::Hex(p.ending_lba)),
                                ("Attributes", Node::Hex(p.attributes)),
                                ("PartitionName", Node::Quoted(p.name.clone())),
                            ])
                        })
                        .collect(),
                )
            };
            map(vec![
                (
                    "Header",
                    map(vec![
                        ("Signature", Node::Quoted(until_nul(g.signature))),
                        ("Revision", Node::Hex(g.revision.into())),
                        ("HeaderSize", Node::Int(g.header_size.into())),
                        ("HeaderCRC32", Node::Hex(g.header_crc32.into())),
                        ("MyLBA", Node::Hex(g.my_lba)),
                        ("AlternateLBA", Node::Hex(g.alternate_lba)),
                        ("FirstUsableLBA", Node::Hex(g.first_usable_lba)),
                        ("LastUsableLBA", Node::Hex(g.last_usable_lba)),
                        ("DiskGUID", Node::Plain(g.disk_guid.to_string())),
                        ("PartitionEntryLBA", Node::Hex(g.partition_entry_lba)),
                        (
                            "NumberOfPartitionEntry",
                            Node::Int(g.number_of_partition_entries.into()),
                        ),
                        (
                            "SizeOfPartitionEntry",
                            Node::Int(g.size_of_partition_entry.into()),
                        ),
                        (
                            "PartitionEntryArrayCRC32",
                            Node::Hex(g.partition_entry_array_crc32.into()),
                        ),
                    ]),
                ),
                ("NumberOfPartitions", Node::Int(g.partitions.len() as u64)),
                ("Partitions", partitions),
            ])
        }
        EventData::StartupLocality(l) if v2 => {
            map(vec![("StartupLocality", Node::Int((*l).into()))])
        }
        _ => hex_event(raw),
    })
}

/// The document tree: `version`, `events`, and `pcrs` (written separately, because of
/// its padded keys).
fn tree(log: &EventLog<'_>, opts: RenderOptions) -> (Vec<Node>, PcrBanks) {
    let mut events = Vec::with_capacity(log.events.len());
    for event in &log.events {
        let data = decode(event);
        let mut entries: Vec<(&str, Node)> = Vec::with_capacity(8);
        if log.spec_id.is_some() {
            entries.push(("EventNum", Node::Int(event.number as u64)));
        }
        entries.push(("PCRIndex", Node::Int(event.pcr.into())));
        entries.push((
            "EventType",
            Node::Plain(
                event_type_name(event.event_type)
                    .unwrap_or("Unknown event type")
                    .to_owned(),
            ),
        ));
        // The log's Spec ID (which has any vendor data past the event) over the event's.
        let spec = match (&data, &log.spec_id) {
            (EventData::SpecId(_), Some(spec)) => Some(spec),
            (EventData::SpecId(spec), None) => Some(spec),
            _ => None,
        };
        if let (Some(spec), Some((_, digest))) = (spec, event.digests.first()) {
            // The header event keeps its SHA-1 layout.
            entries.push(("Digest", Node::Quoted(hex(digest))));
            entries.push(("EventSize", Node::Int(event.data.len() as u64)));
            let mut fields = vec![
                ("Signature", Node::Plain("Spec ID Event03".to_owned())),
                ("platformClass", Node::Int(spec.platform_class.into())),
                ("specVersionMinor", Node::Int(spec.version.0.into())),
                ("specVersionMajor", Node::Int(spec.version.1.into())),
                ("specErrata", Node::Int(spec.version.2.into())),
                ("uintnSize", Node::Int(spec.uintn_size.into())),
                (
                    "numberOfAlgorithms",
                    Node::Int(spec.algorithms.len() as u64),
                ),
            ];
            let algorithms = spec
                .algorithms
                .iter()
                .enumerate()
                .map(|(i, (alg, size))| {
                    // tpm2-tools indents the fields as siblings of `Algorithm[i]`.
                    Node::Map(vec![
                        (format!("Algorithm[{i}]"), Node::Null),
                        ("algorithmId".to_owned(), Node::Plain(alg_name(*alg))),
                        ("digestSize".to_owned(), Node::Int((*size).into())),
                    ])
                })
                .collect();
            fields.push(("Algorithms", Node::Seq(algorithms)));
            fields.push(("vendorInfoSize", Node::Int(spec.vendor_info.len() as u64)));
            if !spec.vendor_info.is_empty() {
                fields.push(("vendorInfo", Node::Quoted(hex(&spec.vendor_info))));
            }
            entries.push(("SpecID", Node::Seq(vec![map(fields)])));
            events.push(map(entries));
            continue;
        }
        entries.push(("DigestCount", Node::Int(event.digests.len() as u64)));
        entries.push((
            "Digests",
            Node::Seq(
                event
                    .digests
                    .iter()
                    .map(|(alg, d)| {
                        map(vec![
                            ("AlgorithmId", Node::Plain(alg_name(*alg))),
                            ("Digest", Node::Quoted(hex(d))),
                        ])
                    })
                    .collect(),
            ),
        ));
        entries.push(("EventSize", Node::Int(event.data.len() as u64)));
        if let Some(node) = event_node(event.event_type, &data, event.data, opts) {
            entries.push(("Event", node));
        }
        events.push(map(entries));
    }
    (events, pcrs_as_printed(log))
}

/// The replayed PCRs plus, like tpm2-tools, the PCRs that only no-action events name
/// (at their initial value).
fn pcrs_as_printed(log: &EventLog<'_>) -> PcrBanks {
    let mut banks = log.replay();
    for event in log.events.iter().skip(1) {
        if event.event_type != EV_NO_ACTION {
            continue;
        }
        for (alg_id, _) in &event.digests {
            if let Some(alg) = HashAlg::from_tpm_alg_id(*alg_id) {
                banks
                    .entry(alg)
                    .or_default()
                    .entry(event.pcr)
                    .or_insert_with(|| super::replay::initial_pcr_for(log, alg, event.pcr));
            }
        }
    }
    banks
}

/// Indentation without an allocation per line (tpm2-tools nests at most a few levels).
fn spaces(n: usize) -> &'static str {
    const SPACES: &str = "                                ";
    &SPACES[..n.min(SPACES.len())]
}

fn write_node(out: &mut String, key: &str, node: &Node, indent: usize) {
    let pad = spaces(indent);
    match node {
        Node::Map(entries) => {
            let _ = writeln!(out, "{key}:");
            write_entries(out, entries, indent + 2, None);
        }
        Node::Seq(items) => {
            let _ = writeln!(out, "{key}:");
            write_seq(out, items, indent);
        }
        Node::Int(n) => {
            let _ = writeln!(out, "{key}: {n}");
        }
        Node::Hex(n) => {
            let _ = writeln!(out, "{key}: 0x{n:x}");
        }
        Node::Plain(s) => {
            let _ = writeln!(out, "{key}: {s}");
        }
        Node::Quoted(s) => {
            let _ = writeln!(out, "{key}: \"{s}\"");
        }
        Node::Single(s) => {
            let _ = writeln!(out, "{key}: '{s}'");
        }
        Node::Block(s) => {
            let _ = writeln!(out, "{key}: |-\n{pad}  {s}");
        }
        Node::Escaped { lines, .. } => {
            let _ = write!(out, "{key}: \"");
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    let _ = write!(out, "{pad}  ");
                }
                out.push_str(line);
                out.push_str(if i + 1 == lines.len() { "\"\n" } else { "\\\n" });
            }
        }
        Node::Null => {
            let _ = writeln!(out, "{key}:");
        }
    }
}

/// Writes map entries at `indent`; the first one after `first` (`"- "` for a sequence
/// item) instead of spaces.
fn write_entries(out: &mut String, entries: &[(String, Node)], indent: usize, first: Option<&str>) {
    for (i, (key, node)) in entries.iter().enumerate() {
        match (i, first) {
            (0, Some(prefix)) => {
                out.push_str(spaces(indent - 2));
                out.push_str(prefix);
            }
            _ => out.push_str(spaces(indent)),
        }
        write_node(out, key, node, indent);
    }
}

fn write_seq(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        match item {
            Node::Map(entries) => write_entries(out, entries, indent + 2, Some("- ")),
            Node::Plain(s) => {
                let _ = writeln!(out, "{}- {s}", spaces(indent));
            }
            _ => {}
        }
    }
}

/// Prints the log as `tpm2_eventlog [--eventlog-version=N]` does.
pub fn to_yaml(log: &EventLog<'_>, opts: RenderOptions) -> String {
    let (events, banks) = tree(log, opts);
    let mut out = String::with_capacity(log.events.len() * 400 + 1024);
    let _ = write!(out, "---\nversion: {}\nevents:\n", opts.version);
    // SHA-1 logs print their events without a list dash, as tpm2-tools does.
    let prefix = if log.spec_id.is_some() { "- " } else { "  " };
    for event in &events {
        if let Node::Map(entries) = event {
            write_entries(&mut out, entries, 2, Some(prefix));
        }
    }
    out.push_str("pcrs:\n");
    for (alg, pcrs) in &banks {
        let _ = writeln!(out, "  {}:", alg.name());
        for (i, d) in pcrs {
            let _ = writeln!(out, "    {i:<2} : 0x{}", d.to_hex());
        }
    }
    out
}

fn json(node: &Node) -> Json {
    match node {
        Node::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), json(v)))
                .collect::<Map<String, Json>>(),
        ),
        Node::Seq(items) => Json::Array(items.iter().map(json).collect()),
        Node::Int(n) => Json::from(*n),
        Node::Hex(n) => Json::String(format!("0x{n:x}")),
        Node::Plain(s) | Node::Quoted(s) | Node::Single(s) | Node::Block(s) => {
            Json::String(s.clone())
        }
        Node::Escaped { raw, .. } => Json::String(raw.clone()),
        Node::Null => Json::Null,
    }
}

/// The same document as [`to_yaml`] as JSON: hex integers (`0x…`, PCR values included)
/// stay strings, so 256-bit values survive, and escaped strings are the raw text.
pub fn to_json(log: &EventLog<'_>, opts: RenderOptions) -> Json {
    let (events, banks) = tree(log, opts);
    let pcrs: Map<String, Json> = banks
        .iter()
        .map(|(alg, pcrs)| {
            let values: Map<String, Json> = pcrs
                .iter()
                .map(|(i, d)| (i.to_string(), Json::String(format!("0x{}", d.to_hex()))))
                .collect();
            (alg.name().to_owned(), Json::Object(values))
        })
        .collect();
    let mut doc = Map::new();
    doc.insert("version".to_owned(), Json::from(opts.version));
    doc.insert(
        "events".to_owned(),
        Json::Array(events.iter().map(json).collect()),
    );
    doc.insert("pcrs".to_owned(), Json::Object(pcrs));
    Json::Object(doc)
}

fn typed_json(node: &Node) -> Json {
    match node {
        Node::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), typed_json(v)))
                .collect::<Map<String, Json>>(),
        ),
        Node::Seq(items) => Json::Array(items.iter().map(typed_json).collect()),
        Node::Hex(n) => Json::from(*n),
        other => json(other),
    }
}

/// The events as a YAML loader reads [`to_yaml`]'s output: like [`to_json`], except that
/// hexadecimal integers (`BlobBase: 0x…`) are numbers. This is the shape Keylime's
/// measured-boot code works on (before its own string post-processing).
pub fn to_yaml_values(log: &EventLog<'_>, opts: RenderOptions) -> Vec<Json> {
    let (events, _) = tree(log, opts);
    events.iter().map(typed_json).collect()
}
