//! Host tests for `edit`: set, unset, apply, diff, leaves and etag.

use super::*;
use crate::schema::{NetworkMode, Vm};
use alloc::vec;
use core::net::Ipv4Addr;

fn with_vms() -> Config {
    let vm = |name: &str| Vm {
        name: name.into(),
        vcpus: 1,
        memory_mib: 256,
        kernel: Some("bzImage".into()),
        firmware: None,
        initrd: None,
        cmdline: String::new(),
        disks: Vec::new(),
        nics: Vec::new(),
        autostart: false,
        cpuid: Default::default(),
        devices: Vec::new(),
    };
    Config {
        vms: vec![vm("web"), vm("db")],
        ..Config::default()
    }
}

fn change(path: &str, old: Option<&str>, new: Option<&str>) -> Change {
    Change {
        path: path.into(),
        old: old.map(Into::into),
        new: new.map(Into::into),
    }
}

#[test]
fn set_a_bare_string() {
    let config = Config::default();
    let new = set(&config, "hostname", "web1").unwrap();
    assert_eq!(new.hostname, "web1");
    assert_eq!(config.hostname, "keel", "the input is never modified");
    // A quoted JSON string is the same string.
    assert_eq!(set(&config, "hostname", "\"web1\"").unwrap(), new);
}

#[test]
fn set_numbers_and_booleans() {
    let config = with_vms();
    let new = set(&config, "vms[1].memory_mib", "1024").unwrap();
    assert_eq!(new.vms[1].memory_mib, 1024);
    assert_eq!(new.vms[0].memory_mib, 256);
    let new = set(&new, "vms[0].autostart", "true").unwrap();
    assert!(new.vms[0].autostart);
    let new = set(&new, "management.http_port", "8080").unwrap();
    assert_eq!(new.management.http_port, 8080);
}

#[test]
fn set_lists_and_list_elements() {
    let token = "0123456789abcdef";
    let config = set(
        &Config::default(),
        "management.api_tokens",
        &alloc::format!("[\"{token}\"]"),
    )
    .unwrap();
    assert_eq!(config.management.api_tokens, [token]);
    let other = "ABCDEFGHIJKLMNOP";
    // Index == len appends; index < len replaces.
    let config = set(&config, "management.api_tokens[1]", other).unwrap();
    assert_eq!(config.management.api_tokens, [token, other]);
    let config = set(&config, "management.api_tokens[0]", "zzzzzzzzzzzzzzzz").unwrap();
    assert_eq!(config.management.api_tokens, ["zzzzzzzzzzzzzzzz", other]);
    assert_eq!(
        set(&config, "management.api_tokens[3]", token),
        Err(EditError::IndexOutOfRange {
            path: "management.api_tokens[3]".into(),
            len: 2
        })
    );
}

#[test]
fn append_a_vm_from_an_object() {
    let config = with_vms();
    let new = set(
        &config,
        "vms[2]",
        r#"{"name":"cache","memory_mib":128,"kernel":"vmlinuz","autostart":true}"#,
    )
    .unwrap();
    assert_eq!(new.vms.len(), 3);
    assert_eq!(new.vms[2].name, "cache");
    assert_eq!(new.vms[2].vcpus, 1);
    assert!(new.vms[2].autostart);
    // Appending to an empty list works too.
    let first = set(
        &Config::default(),
        "vms[0]",
        r#"{"name":"a","memory_mib":64,"kernel":"k"}"#,
    )
    .unwrap();
    assert_eq!(first.vms.len(), 1);
    // A new VM without its required fields is refused with the path of the gap.
    let err = set(&config, "vms[2]", r#"{"name":"x","memory_mib":64}"#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("vms[2].kernel: required: name the guest kernel"),
        "{err}"
    );
}

#[test]
fn set_an_absent_optional_field_and_clear_it_with_null() {
    let config = with_vms();
    let new = set(&config, "vms[0].initrd", "initrd.img").unwrap();
    assert_eq!(new.vms[0].initrd.as_deref(), Some("initrd.img"));
    let cleared = set(&new, "vms[0].initrd", "null").unwrap();
    assert_eq!(cleared, config);
}

#[test]
fn invalid_values_leave_the_original_and_report_every_error() {
    let config = with_vms();
    let err = set(&config, "vms[1].memory_mib", "8").unwrap_err();
    let EditError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(
        err.to_string(),
        "vms[1].memory_mib: must be between 16 and 65536"
    );
    assert_eq!(config.vms[1].memory_mib, 256);

    let err = set(
        &config,
        "vms[1]",
        r#"{"name":"web","memory_mib":1,"kernel":""}"#,
    )
    .unwrap_err();
    let EditError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["vms[1].name", "vms[1].memory_mib", "vms[1].kernel"]);

    let err = set(&config, "vms[0].memory_mib", "lots").unwrap_err();
    assert_eq!(
        err.to_string(),
        "vms[0].memory_mib: expected a non-negative integer, found string \"lots\""
    );
    assert!(matches!(err, EditError::Schema(_)));
    assert!(matches!(
        set(&config, "network.mode", "manual"),
        Err(EditError::Schema(_))
    ));
}

#[test]
fn unknown_paths_are_named() {
    let config = with_vms();
    let err = set(&config, "hostnmae", "x").unwrap_err();
    assert_eq!(
        err,
        EditError::UnknownPath {
            path: "hostnmae".into(),
            expected: &["hostname", "network", "management", "vms"],
        }
    );
    assert_eq!(
        err.to_string(),
        "hostnmae: no such setting; expected one of: hostname, network, management, vms"
    );
    let err = set(&config, "vms[0].memory", "64").unwrap_err();
    assert!(
        matches!(&err, EditError::UnknownPath { path, .. } if path == "vms[0].memory"),
        "{err:?}"
    );
    let err = set(&config, "network.static.address", "10.0.0.1").unwrap_err();
    assert!(
        matches!(&err, EditError::UnknownPath { path, .. } if path == "network.static"),
        "{err:?}"
    );
    assert_eq!(
        set(&config, "hostname.label", "x"),
        Err(EditError::WrongStep {
            path: "hostname".into(),
            found: "a string"
        })
    );
    assert_eq!(
        set(&config, "vms.name", "x"),
        Err(EditError::WrongStep {
            path: "vms".into(),
            found: "a list"
        })
    );
    assert_eq!(
        set(&config, "network[0]", "x"),
        Err(EditError::WrongStep {
            path: "network".into(),
            found: "an object"
        })
    );
    assert_eq!(
        set(&config, "vms[5].name", "x"),
        Err(EditError::IndexOutOfRange {
            path: "vms[5]".into(),
            len: 2
        })
    );
}

#[test]
fn malformed_paths_are_refused() {
    let config = Config::default();
    for path in [
        "",
        ".hostname",
        "hostname.",
        "vms[",
        "vms[]",
        "vms[x]",
        "vms[0",
        "vms[0]name",
        "[0]",
        "host name",
        "vms[99999999999999999999999]",
    ] {
        assert!(
            matches!(set(&config, path, "x"), Err(EditError::BadPath { .. })),
            "{path:?}"
        );
    }
    assert!(matches!(
        set(&config, &"a".repeat(MAX_PATH_LEN + 1), "x"),
        Err(EditError::BadPath { .. })
    ));
}

#[test]
fn static_network_needs_an_atomic_batch() {
    let config = Config::default();
    // One field at a time cannot get there: each step alone is invalid.
    let err = set(&config, "network.mode", "static").unwrap_err();
    assert_eq!(
        err.to_string(),
        "network.address: required when network.mode is \"static\"; \
         network.prefix: required when network.mode is \"static\""
    );
    let new = apply(
        &config,
        &[
            Edit::Set {
                path: "network.mode",
                value: "static",
            },
            Edit::Set {
                path: "network.address",
                value: "10.0.2.15",
            },
            Edit::Set {
                path: "network.prefix",
                value: "24",
            },
            Edit::Set {
                path: "network.dns[0]",
                value: "10.0.2.3",
            },
        ],
    )
    .unwrap();
    assert_eq!(new.network.mode, NetworkMode::Static);
    assert_eq!(new.network.address, Some(Ipv4Addr::new(10, 0, 2, 15)));
    assert_eq!(new.network.prefix, Some(24));
    assert_eq!(new.network.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
    // So can a whole object.
    let same = set(
        &config,
        "network",
        r#"{"mode":"static","address":"10.0.2.15","prefix":24,"dns":["10.0.2.3"]}"#,
    )
    .unwrap();
    assert_eq!(same, new);
}

#[test]
fn unset_removes_elements_and_resets_fields() {
    let config = with_vms();
    let new = unset(&config, "vms[0]").unwrap();
    assert_eq!(new.vms.len(), 1);
    assert_eq!(new.vms[0].name, "db");
    assert_eq!(
        unset(&config, "vms[2]"),
        Err(EditError::IndexOutOfRange {
            path: "vms[2]".into(),
            len: 2
        })
    );

    let custom = set(&config, "management.http_port", "8080").unwrap();
    assert_eq!(unset(&custom, "management.http_port").unwrap(), config);
    let named = set(&config, "hostname", "web1").unwrap();
    assert_eq!(unset(&named, "hostname").unwrap().hostname, "keel");
    // An optional field that is already absent: no change, no error.
    assert_eq!(unset(&config, "vms[0].initrd").unwrap(), config);
    assert_eq!(unset(&config, "network.gateway").unwrap(), config);
    assert_eq!(unset(&config, "network.dns").unwrap(), config);
    // A typo is still an error.
    assert!(matches!(
        unset(&config, "network.gatewya"),
        Err(EditError::UnknownPath { path, .. }) if path == "network.gatewya"
    ));
    // A required field cannot go.
    assert_eq!(
        unset(&config, "vms[1].memory_mib").unwrap_err().to_string(),
        "vms[1].memory_mib: required field is missing"
    );
    // Nor can the kernel, unless a firmware boots the VM instead.
    assert!(
        unset(&config, "vms[1].kernel")
            .unwrap_err()
            .to_string()
            .starts_with("vms[1].kernel: required: name the guest kernel")
    );
    let firmware = apply(
        &config,
        &[
            Edit::Unset {
                path: "vms[1].kernel",
            },
            Edit::Set {
                path: "vms[1].firmware",
                value: "hypervisor-fw",
            },
        ],
    )
    .unwrap();
    assert_eq!(firmware.vms[1].kernel, None);
    assert_eq!(firmware.vms[1].firmware.as_deref(), Some("hypervisor-fw"));
}

#[test]
fn diff_lists_changed_leaves_in_path_order() {
    let old = with_vms();
    assert!(diff(&old, &old).is_empty());
    let new = apply(
        &old,
        &[
            Edit::Set {
                path: "vms[1].memory_mib",
                value: "512",
            },
            Edit::Set {
                path: "hostname",
                value: "web1",
            },
            Edit::Set {
                path: "vms[0].initrd",
                value: "initrd.img",
            },
        ],
    )
    .unwrap();
    assert_eq!(
        diff(&old, &new),
        [
            change("hostname", Some("\"keel\""), Some("\"web1\"")),
            change("vms[0].initrd", None, Some("\"initrd.img\"")),
            change("vms[1].memory_mib", Some("256"), Some("512")),
        ]
    );
    assert_eq!(
        diff(&new, &old)[1],
        change("vms[0].initrd", Some("\"initrd.img\""), None)
    );
    assert_eq!(
        diff(&old, &new)[2].to_string(),
        "vms[1].memory_mib: 256 -> 512"
    );
}

#[test]
fn diff_of_added_and_removed_list_elements() {
    let old = with_vms();
    let new = unset(&old, "vms[1]").unwrap();
    let changes = diff(&old, &new);
    assert!(
        changes
            .iter()
            .all(|c| c.path.starts_with("vms[1].") && c.new.is_none())
    );
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "vms[1].autostart",
            "vms[1].cmdline",
            "vms[1].disks",
            "vms[1].kernel",
            "vms[1].memory_mib",
            "vms[1].name",
            "vms[1].vcpus",
        ]
    );
    assert_eq!(changes[2], change("vms[1].disks", Some("[]"), None));
    assert_eq!(changes[5], change("vms[1].name", Some("\"db\""), None));
    let grown = set(
        &old,
        "vms[0].disks",
        r#"[{"file":"a.img"},{"partition":"big","readonly":true}]"#,
    )
    .unwrap();
    assert_eq!(
        diff(&old, &grown),
        [
            change("vms[0].disks[0].file", None, Some("\"a.img\"")),
            change("vms[0].disks[0].readonly", None, Some("false")),
            change("vms[0].disks[1].partition", None, Some("\"big\"")),
            change("vms[0].disks[1].readonly", None, Some("true")),
        ]
    );
    // A disk's field is a path of its own.
    let ro = set(&grown, "vms[0].disks[0].readonly", "true").unwrap();
    assert!(ro.vms[0].disks[0].readonly);
    assert_eq!(
        set(&grown, "vms[0].disks[1].file", "a.img")
            .unwrap_err()
            .to_string(),
        "vms[0].disks[1].partition: must not be set together with file: a disk is either a \
         store file or a partition (remove one)"
    );
}

#[test]
fn leaves_list_every_setting() {
    let leaves = leaves(&Config::default());
    let expected: Vec<(String, String)> = [
        ("hostname", "\"keel\""),
        ("management.api_tokens", "[]"),
        ("management.http", "\"redirect\""),
        ("management.http_port", "80"),
        ("management.https_port", "443"),
        ("network.internal.address", "\"10.99.0.1\""),
        ("network.internal.dhcp", "true"),
        ("network.internal.prefix", "24"),
        ("network.mode", "\"dhcp\""),
        ("vms", "[]"),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(leaves, expected);
}

#[test]
fn etag_is_quoted_stable_and_tracks_content() {
    let config = with_vms();
    let tag = etag(&config);
    assert_eq!(tag.len(), 18);
    assert!(tag.starts_with('"') && tag.ends_with('"'));
    assert!(tag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(etag(&config.clone()), tag);
    let changed = set(&config, "vms[0].autostart", "true").unwrap();
    assert_ne!(etag(&changed), tag);
    assert_eq!(etag(&unset(&changed, "vms[0].autostart").unwrap()), tag);
    // The FNV-1a 64 of the canonical bytes, so other tools can recompute it.
    let bytes = Config::default().to_json_pretty();
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    assert_eq!(etag(&Config::default()), alloc::format!("\"{hash:016x}\""));
}

#[test]
fn parse_value_prefers_json() {
    assert_eq!(parse_value("80"), Value::from(80));
    assert_eq!(parse_value("true"), Value::Bool(true));
    assert_eq!(parse_value("\"80\""), Value::from("80"));
    assert_eq!(parse_value("10.0.2.15"), Value::from("10.0.2.15"));
    assert_eq!(parse_value("web 1"), Value::from("web 1"));
    assert_eq!(parse_value(""), Value::from(""));
    assert_eq!(parse_value("[1,2"), Value::from("[1,2"));
}

#[test]
fn nics_and_the_internal_network_are_settings() {
    use crate::schema::{MacAddress, NicNetwork, VmNic};
    let config = with_vms();
    // `nics` is absent from a VM without NICs, and is set all the same.
    let new = set(&config, "vms[0].nics", r#"[{"network":"bridged"}]"#).unwrap();
    assert_eq!(new.vms[0].nics, [VmNic::on(NicNetwork::Bridged)]);
    // Append one, then give it a MAC as a bare string.
    let new = set(&new, "vms[0].nics[1]", r#"{"network":"internal"}"#).unwrap();
    let new = set(&new, "vms[0].nics[1].mac", "52:54:00:AA:BB:CC").unwrap();
    assert_eq!(
        new.vms[0].nics[1].mac,
        Some(MacAddress([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]))
    );
    // The same MAC on another VM is refused with both owners; the input stays.
    let err = set(
        &new,
        "vms[1].nics",
        r#"[{"network":"bridged","mac":"52:54:00:aa:bb:cc"}]"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "vms[1].nics[0].mac: 52:54:00:aa:bb:cc is already vms[0].nics[1]'s MAC"
    );
    let err = set(&new, "vms[0].nics[0].network", "nat").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("vms[0].nics[0].network: unknown value \"nat\""),
        "{err}"
    );
    // The internal network's fields, checked together with DHCP.
    let wide = set(&config, "network.internal.prefix", "16").unwrap();
    assert_eq!(wide.network.internal.prefix, 16);
    let err = set(&config, "network.internal.prefix", "27").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("network.internal.prefix: a /27 is too small for the DHCP pool"),
        "{err}"
    );
    let no_dhcp = set(&config, "network.internal.dhcp", "false").unwrap();
    let small = set(&no_dhcp, "network.internal.prefix", "27").unwrap();
    assert_eq!(small.network.internal.prefix, 27);
    // Diff names the changed leaf.
    assert_eq!(
        diff(&config, &wide),
        [change("network.internal.prefix", Some("24"), Some("16"))]
    );
}
