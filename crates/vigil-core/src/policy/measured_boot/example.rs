//! Keylime's `example` measured-boot policy, compiled from a [`RefState`] into a
//! [`Test`] over the parsed log.
//!
//! Every event is dispatched on `(PCRIndex, EventType)`; a pair the policy does not list
//! fails the log. Events whose meaning depends on their neighbours (the firmware blobs,
//! the boot applications, the PCR 8/9 `EV_IPL`s) are stashed and checked together after
//! the last event, against the `scrtm_and_bios` and `kernels` alternatives.

use serde_json::Value;

use super::check::{digests, field, Builder, Pattern, Test};
use super::refstate::{DigestSet, Key, RefState};
use crate::hash::HashAlg;

/// The PCRs the `example` policy relies on: 0–9 and 14.
pub const RELEVANT_PCRS: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14];

/// EFI global variables (`8be4df61-…`), and as tpm2-tools before 5.2 printed it.
const EFI_GLOBAL: [&str; 2] = [
    "61dfe48b-ca93-d211-aa0d-00e098032b8c",
    "8be4df61-93ca-11d2-aa0d-00e098032b8c",
];
/// The image security database (db, dbx), both spellings.
const IMAGE_SECURITY_DB: [&str; 2] = [
    "cbb219d7-3a3d-9645-a3bc-dad00e67656f",
    "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
];
/// Shim's vendor GUID, both spellings.
const SHIM: [&str; 2] = [
    "50ab5d60-46e0-0043-abb6-3dd810dd8b23",
    "605dab50-e046-4300-abb6-3dd810dd8b23",
];
/// `EFI_CERT_X509_GUID`, both spellings.
const CERT_X509: [&str; 2] = [
    "a159c0a5-e494-a74a-87b5-ab155c2bf072",
    "a5c059a1-94e4-4aa7-87b5-ab155c2bf072",
];
/// `EFI_CERT_SHA256_GUID`, both spellings.
const CERT_SHA256: [&str; 2] = [
    "2616c4c1-4c50-9240-aca9-41f936934328",
    "c1c41626-504c-4092-aca9-41f936934328",
];

const DELAYED: &[&str] = &[
    "kernel_cmdlines",
    "bsas",
    "ipl9s",
    "vmlinuz",
    "s_crtms",
    "platform_firmware_blobs",
];

fn s(v: &str) -> Test {
    Test::StrEq(v.to_owned())
}

fn re(pattern: &str, dotall: bool) -> Test {
    Test::Regex {
        // Fixed patterns of the policy itself; they always compile.
        re: Pattern::new(pattern, dotall).unwrap_or_else(|_| unreachable_pattern()),
        pattern: pattern.to_owned(),
    }
}

fn unreachable_pattern() -> Pattern {
    Pattern::Fast(regex::Regex::new("\\A\\z").unwrap_or_else(|_| unreachable!()))
}

fn sha256(hex: &str) -> Test {
    digests([&[("sha256".to_owned(), hex.to_owned())][..]])
}

fn event_string(test: Test) -> Test {
    field("Event", field("String", test))
}

fn signature_member(keys: &[Key]) -> Test {
    Test::Or(
        keys.iter()
            .map(|k| {
                Test::And(vec![
                    field("SignatureOwner", s(&k.owner)),
                    field("SignatureData", s(&k.data)),
                ])
            })
            .collect(),
    )
}

fn iterate(test: Test) -> Test {
    Test::Iterate {
        test: Box::new(test),
        show_elt: false,
    }
}

/// Every list is of one of `types` and every key in it is allowed.
fn key_subset(types: &[&str], keys: &[Key]) -> Test {
    let per_type: Vec<Test> = types
        .iter()
        .map(|t| {
            Test::And(vec![
                field("SignatureType", s(t)),
                field("Keys", iterate(signature_member(keys))),
            ])
        })
        .collect();
    if per_type.len() == 1 {
        iterate(per_type.into_iter().next().unwrap_or(Test::Accept))
    } else {
        iterate(Test::Or(per_type))
    }
}

/// Exactly one list, of type `sig_type`, holding at least every key.
fn key_superset(sig_type: &str, keys: &[Key]) -> Test {
    let mut reqs: Vec<Vec<Value>> = Vec::new();
    for k in keys {
        let req = vec![Value::from(k.owner.clone()), Value::from(k.data.clone())];
        if !reqs.contains(&req) {
            reqs.push(req);
        }
    }
    Test::Tuple(vec![Test::And(vec![
        field("SignatureType", s(sig_type)),
        field(
            "Keys",
            Test::SupersetOfDicts {
                fields: &["SignatureOwner", "SignatureData"],
                reqs,
            },
        ),
    ])])
}

/// The event's string is `value` and its digests are of that string.
fn tcg_string(value: &str, bytes: &[u8]) -> Test {
    let good: DigestSet = HashAlg::ALL
        .iter()
        .map(|a| (a.name().to_owned(), a.hash(bytes).to_hex()))
        .collect();
    Test::And(vec![field("Event", s(value)), digests([&good[..]])])
}

fn separator() -> Test {
    Test::Or(
        ["00000000", "FFFFFFFF"]
            .iter()
            .map(|v| {
                let bytes = hex::decode(v).unwrap_or_default();
                tcg_string(v, &bytes)
            })
            .collect(),
    )
}

fn efi_action(pcr: u32) -> Test {
    let strings: &[&str] = match pcr {
        1 => &["Entering ROM Based Setup"],
        4 => &[
            "Calling EFI Application from Boot Option",
            "Returning from EFI Application from Boot Option",
        ],
        5 => &[
            "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Failure",
            "Exit Boot Services Returned with Success",
        ],
        6 => &["UEFI Debug Mode"],
        _ => {
            return Test::Reject(format!(
                "No EV_EFI_ACTION event for {pcr} is expected in the spec"
            ))
        }
    };
    Test::Or(
        strings
            .iter()
            .map(|v| tcg_string(v, v.as_bytes()))
            .collect(),
    )
}

/// `VariableDispatch`: a test per `(VariableName, UnicodeName)`, applied to the data.
struct VarDispatch(Vec<(Vec<Value>, Test)>);

impl VarDispatch {
    fn set(&mut self, guids: &[&str], name: &str, test: &Test) {
        for guid in guids {
            self.0.push((
                vec![Value::from(*guid), Value::from(name)],
                field("VariableData", test.clone()),
            ));
        }
    }

    fn into_test(self) -> Test {
        field(
            "Event",
            Test::Dispatch {
                keys: vec!["VariableName", "UnicodeName"],
                cases: self.0,
            },
        )
    }
}

/// Compiles the `example` policy for a reference state; the [`Builder`] then makes
/// the evaluation context.
pub(crate) fn compile(rs: &RefState) -> (Test, Builder) {
    let mut b = Builder::default();
    let sb = rs.has_secureboot;
    let delay = Test::Delay;

    let kernel_alternatives: Vec<Test> = rs
        .kernels
        .iter()
        .map(|k| {
            let bsas = if sb {
                let kernel = k.kernel_authcode_sha256.as_deref().unwrap_or_default();
                let three = vec![
                    sha256(&k.shim_authcode_sha256),
                    sha256(&k.grub_authcode_sha256),
                    sha256(kernel),
                ];
                let mut four = three.clone();
                // Some boots measure the kernel twice.
                four.push(sha256(kernel));
                Test::Or(vec![Test::Tuple(three), Test::Tuple(four)])
            } else {
                // Without Secure Boot grub does not verify (and measure) the kernel
                // through shim.
                Test::Tuple(vec![
                    sha256(&k.shim_authcode_sha256),
                    sha256(&k.grub_authcode_sha256),
                ])
            };
            let vmlinuz = if sb {
                Test::Accept
            } else {
                sha256(k.vmlinuz_plain_sha256.as_deref().unwrap_or_default())
            };
            Test::And(vec![
                field("bsas", bsas),
                field("ipl9s", Test::Tuple(vec![sha256(&k.initrd_plain_sha256)])),
                field("vmlinuz", Test::Tuple(vec![vmlinuz])),
                field(
                    "kernel_cmdlines",
                    Test::Tuple(vec![Test::Regex {
                        re: k.cmdline_re.clone(),
                        pattern: format!("kernel_cmdline: {}", k.kernel_cmdline),
                    }]),
                ),
            ])
        })
        .collect();
    let scrtm_alternatives: Vec<Test> = rs
        .scrtm_and_bios
        .iter()
        .map(|a| {
            Test::And(vec![
                field("s_crtms", Test::Tuple(vec![digests([&a.scrtm[..]])])),
                field(
                    "platform_firmware_blobs",
                    Test::Tuple(
                        a.platform_firmware
                            .iter()
                            .map(|pf| digests([&pf[..]]))
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let events_final = Test::DelayCheck {
        names: DELAYED,
        test: Box::new(Test::And(vec![
            Test::Or(kernel_alternatives),
            Test::Or(scrtm_alternatives),
        ])),
    };

    let mut cases: Vec<((u32, &str), Test)> = vec![
        ((0, "EV_NO_ACTION"), b.once(Test::Accept)),
        ((1, "EV_CPU_MICROCODE"), b.once(Test::Accept)),
        ((1, "EV_EFI_HANDOFF_TABLES"), b.once(Test::Accept)),
        ((1, "EV_EFI_HANDOFF_TABLES2"), b.once(Test::Accept)),
        ((0, "EV_S_CRTM_VERSION"), delay("s_crtms")),
        (
            (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
            delay("platform_firmware_blobs"),
        ),
        (
            (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"),
            delay("platform_firmware_blobs"),
        ),
    ];

    let mut driver_config = VarDispatch(Vec::new());
    let secure_boot = field("Enabled", s(if sb { "Yes" } else { "No" }));
    driver_config.set(&EFI_GLOBAL, "SecureBoot", &secure_boot);
    let key_test = |b: &mut Builder, keys: &[Key], per_spelling: &dyn Fn(usize) -> Test| {
        if !sb && keys.is_empty() {
            b.once(Test::Accept)
        } else {
            b.once(Test::Or(vec![per_spelling(0), per_spelling(1)]))
        }
    };
    let pk = key_test(&mut b, &rs.pk, &|i| key_subset(&[CERT_X509[i]], &rs.pk));
    driver_config.set(&EFI_GLOBAL, "PK", &pk);
    let kek = key_test(&mut b, &rs.kek, &|i| key_subset(&[CERT_X509[i]], &rs.kek));
    driver_config.set(&EFI_GLOBAL, "KEK", &kek);
    let db = key_test(&mut b, &rs.db, &|i| {
        key_subset(&[CERT_X509[i], CERT_SHA256[i]], &rs.db)
    });
    driver_config.set(&IMAGE_SECURITY_DB, "db", &db);
    let vendor_db = key_test(&mut b, &rs.vendor_db, &|i| {
        key_subset(&[CERT_X509[i], CERT_SHA256[i]], &rs.vendor_db)
    });
    driver_config.set(&IMAGE_SECURITY_DB, "vendor_db", &vendor_db);
    let dbx = key_test(&mut b, &rs.dbx, &|i| key_superset(CERT_SHA256[i], &rs.dbx));
    driver_config.set(&IMAGE_SECURITY_DB, "dbx", &dbx);
    cases.push((
        (7, "EV_EFI_VARIABLE_DRIVER_CONFIG"),
        driver_config.into_test(),
    ));

    let mut authority = VarDispatch(Vec::new());
    // The certificate that verified shim is trusted as such.
    let db_authority = b.once(Test::Accept);
    authority.set(&IMAGE_SECURITY_DB, "db", &db_authority);
    let vendor_db_authority = if !sb && rs.vendor_db.is_empty() {
        b.once(Test::Accept)
    } else {
        b.once(iterate(signature_member(&rs.vendor_db)))
    };
    authority.set(&IMAGE_SECURITY_DB, "vendor_db", &vendor_db_authority);
    // Shim's own variables: shim's digest was already checked.
    let sbat = b.once(Test::Accept);
    authority.set(&SHIM, "SbatLevel", &sbat);
    let shim = b.once(Test::Accept);
    authority.set(&SHIM, "Shim", &shim);
    let trusted = b.once(Test::Or(vec![
        field("Enabled", s("Yes")),
        field("Enabled", s("No")),
    ]));
    authority.set(&SHIM[1..], "MokListTrusted", &trusted);
    let rt = b.once(Test::Accept);
    authority.set(&SHIM[1..], "MokListRT", &rt);
    cases.push(((7, "EV_EFI_VARIABLE_AUTHORITY"), authority.into_test()));

    cases.push(((2, "EV_EFI_BOOT_SERVICES_DRIVER"), Test::Accept));
    let boot_var = |guid: &str| {
        let pattern = "BootOrder|Boot[0-9a-fA-F]+";
        Test::Variable {
            guid: guid.to_owned(),
            name: (
                Pattern::new(pattern, false).unwrap_or_else(|_| unreachable_pattern()),
                pattern.to_owned(),
            ),
            data: Box::new(Test::Accept),
        }
    };
    cases.push((
        (1, "EV_EFI_VARIABLE_BOOT"),
        Test::Or(vec![boot_var(EFI_GLOBAL[0]), boot_var(EFI_GLOBAL[1])]),
    ));
    // edk2 measures up to four of these, with no reference values to compare.
    let flags = (0..4).map(|_| b.once(Test::Accept)).collect();
    cases.push(((1, "EV_PLATFORM_CONFIG_FLAGS"), Test::Or(flags)));
    cases.push(((4, "EV_EFI_ACTION"), efi_action(4)));
    for pcr in 0..8 {
        cases.push(((pcr, "EV_SEPARATOR"), separator()));
    }
    cases.push(((4, "EV_EFI_BOOT_SERVICES_APPLICATION"), delay("bsas")));
    let mok_trusted = b.once(Test::Accept);
    let mok = |name: &str, list: &[DigestSet]| {
        Test::And(vec![
            event_string(s(name)),
            digests(list.iter().map(|d| &d[..])),
        ])
    };
    cases.push((
        (14, "EV_IPL"),
        Test::Or(vec![
            mok("MokList", &rs.mokdig),
            mok("MokListX", &rs.mokxdig),
            Test::And(vec![event_string(s("MokListTrusted")), mok_trusted]),
        ]),
    ));
    cases.push((
        (9, "EV_IPL"),
        Test::Or(vec![
            // Boot Loader Spec entries and grub's own files are not checked.
            event_string(re(".*/loader/entries.*", false)),
            event_string(re(".*/grub.*", false)),
            Test::And(vec![
                event_string(re(".*/vmlinuz.*", false)),
                delay("vmlinuz"),
            ]),
            Test::And(vec![
                event_string(Test::Or(vec![
                    re(".*/initrd.*", false),
                    re(".*/initramfs.*", false),
                ])),
                delay("ipl9s"),
            ]),
        ]),
    ));
    cases.push((
        (8, "EV_IPL"),
        event_string(Test::Or(vec![
            re("grub_cmd: .*", true),
            Test::And(vec![
                re("kernel_cmdline: .*", false),
                delay("kernel_cmdlines"),
            ]),
        ])),
    ));
    cases.push(((5, "EV_EFI_ACTION"), efi_action(5)));
    cases.push(((1, "EV_EFI_ACTION"), efi_action(1)));
    cases.push(((5, "EV_EFI_GPT_EVENT"), b.once(Test::Accept)));

    let dispatcher = Test::Dispatch {
        keys: vec!["PCRIndex", "EventType"],
        cases: cases
            .into_iter()
            .map(|((pcr, ty), t)| (vec![Value::from(pcr), Value::from(ty)], t))
            .collect(),
    };
    let test = Test::Field {
        name: "events",
        test: Box::new(Test::And(vec![
            Test::DelayInit(DELAYED),
            Test::Iterate {
                test: Box::new(dispatcher),
                show_elt: true,
            },
            events_final,
        ])),
        show_name: false,
    };
    (test, b)
}
