//! Host tests for `appliance`: the example file, TOML error locations, defaults.

use super::*;
use keel_config::schema::{NetworkMode, VmDisk};

fn example_path() -> PathBuf {
    crate::workspace_root().join("config/appliance.example.toml")
}

fn invalid(text: &str) -> Vec<String> {
    match parse_toml(text) {
        Err(TomlConfigError::Invalid(errors)) => errors.iter().map(|e| e.to_string()).collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn schema(text: &str) -> Located<SchemaError> {
    match parse_toml(text) {
        Err(TomlConfigError::Schema(e)) => e,
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[test]
fn the_example_parses_validates_and_uses_every_field() {
    let config = load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.hostname, "keel-demo");
    assert_eq!(config.network.mode, NetworkMode::Static);
    assert_eq!(config.network.address, Some("10.0.2.15".parse().unwrap()));
    assert_eq!(config.network.prefix, Some(24));
    assert_eq!(config.network.gateway, Some("10.0.2.2".parse().unwrap()));
    assert_eq!(
        config.network.dns,
        ["10.0.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(config.management.api_tokens.len(), 1);
    assert_eq!(config.management.http_port, 80);
    assert_eq!(config.vms.len(), 3);
    assert_eq!(config.vms[2].boot_file(), Some("hypervisor-fw"));
    assert_eq!(config.vms[2].kernel, None);
    let web = &config.vms[0];
    assert_eq!(
        (
            web.name.as_str(),
            web.vcpus,
            web.memory_mib,
            web.kernel.as_deref()
        ),
        ("web", 1, 256, Some("bzImage"))
    );
    assert_eq!(web.initrd.as_deref(), Some("initrd.img"));
    assert_eq!(web.cmdline, "console=ttyS0 quiet");
    assert_eq!(
        web.disks,
        [
            VmDisk {
                serial: Some("web-root".into()),
                ..VmDisk::file("web-root.img")
            },
            VmDisk::partition("web-data"),
        ]
    );
    assert!(web.autostart);
    // The second VM takes the defaults.
    assert_eq!(config.vms[1].vcpus, 1);
    assert!(!config.vms[1].autostart);
    // Every field of the schema appears in the example: its canonical JSON names them all.
    let text = std::fs::read_to_string(example_path()).unwrap();
    for (path, _) in keel_config::edit::leaves(&config) {
        let field = path.rsplit(['.', ']']).next().unwrap();
        if !field.is_empty() {
            // A key, or an array of tables (`[[vms.disks]]`).
            assert!(
                text.contains(&format!("\n{field} = ")) || text.contains(&format!(".{field}]]")),
                "{field} is not documented"
            );
        }
    }
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(parse_toml("").unwrap(), Config::default());
    assert_eq!(parse_toml("# nothing\n").unwrap(), Config::default());
}

#[test]
fn syntax_errors_have_line_and_column() {
    let err = parse_toml("hostname = \"a\"\n\n[network\nmode = 1\n").unwrap_err();
    let TomlConfigError::Syntax { location, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(location.line, 3);
    assert!(
        err.to_string()
            .starts_with("not valid TOML at line 3, column "),
        "{err}"
    );
    let err = parse_toml("hostname = \"a\"\nhostname = \"b\"\n").unwrap_err();
    assert!(
        matches!(
            err,
            TomlConfigError::Syntax {
                location: Location { line: 2, .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_keys_point_at_the_key() {
    let e = schema("hostname = \"a\"\n[network]\nmode = \"dhcp\"\n  adress = \"10.0.0.1\"\n");
    assert_eq!(e.error.path, "network.adress");
    assert_eq!(e.location, Some(Location { line: 4, column: 3 }));
    assert_eq!(
        e.to_string(),
        "line 4, column 3: network.adress: unknown field; expected one of: mode, address, \
         prefix, gateway, dns, interface, internal"
    );
    let e = schema(
        "[[vms]]\nname = \"a\"\nmemory_mib = 64\nkernel = \"k\"\n[[vms]]\nname = \"b\"\nmemory = 64\n",
    );
    assert_eq!(e.error.path, "vms[1].memory");
    assert_eq!(e.location, Some(Location { line: 7, column: 1 }));
}

#[test]
fn type_errors_point_at_the_value_and_name_the_path() {
    let e = schema("[management]\nhttp_port = \"eighty\"\n");
    assert_eq!(e.error.path, "management.http_port");
    assert_eq!(e.location.map(|l| l.line), Some(2));
    assert_eq!(
        e.to_string(),
        "line 2, column 1: management.http_port: expected an integer from 0 to 65535, found \
         string \"eighty\""
    );
    let e = schema("[management]\nhttp_port = 99999999999999999999\n");
    assert_eq!(e.error.path, "management.http_port");
    let e = schema("\nhostname = 1979-05-27\n");
    assert_eq!(
        e.to_string(),
        "line 2, column 12: hostname: expected a value of this field's type, found a TOML \
         date-time (quote it if it is meant as a string)"
    );
    let e = schema("[network]\nmode = \"dhcp\"\ndns = [\"10.0.2.3\", \"x\"]\n");
    assert_eq!(e.error.path, "network.dns[1]");
    assert_eq!(e.location.map(|l| l.line), Some(3));
}

#[test]
fn a_missing_required_field_points_at_its_table() {
    let e = schema("hostname = \"a\"\n\n[[vms]]\nname = \"a\"\nkernel = \"k\"\n");
    assert_eq!(e.error.path, "vms[0].memory_mib");
    assert_eq!(e.location.map(|l| l.line), Some(3));
    assert_eq!(
        e.to_string(),
        "line 3, column 1: vms[0].memory_mib: required field is missing"
    );
    // Neither kernel nor firmware: a rule, pointed at the VM's table.
    let errors = invalid("hostname = \"a\"\n\n[[vms]]\nname = \"a\"\nmemory_mib = 64\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("line 3, column 1: vms[0].kernel: required: name the guest kernel"),
        "{errors:?}"
    );
}

#[test]
fn disk_tables_parse_and_their_errors_have_lines() {
    let text = "[[vms]]\nname = \"a\"\nmemory_mib = 64\nkernel = \"k\"\n\
                [[vms.disks]]\nfile = \"a.img\"\nreadonly = true\n\
                [[vms.disks]]\npartition = \"Big\"\n\
                [[vms.disks]]\nfile = \"a.img\"\nserial = \"0123456789abcdefghijk\"\n";
    assert_eq!(
        invalid(text),
        [
            "line 9, column 1: vms[0].disks[1].partition: a partition name may hold only \
             lowercase letters, digits and '-'",
            "line 11, column 1: vms[0].disks[2].file: \"a.img\" is already attached as \
             vms[0].disks[0]",
            "line 12, column 1: vms[0].disks[2].serial: must be at most 20 bytes (it has 21)",
        ]
    );
    let fixed = text
        .replace("Big", "big")
        .replace("a.img\"\nserial", "b.img\"\nserial")
        .replace("ghijk", "ghij");
    let ok = parse_toml(&fixed).unwrap();
    assert_eq!(ok.vms[0].disks.len(), 3);
    assert!(ok.vms[0].disks[0].readonly);
    assert_eq!(ok.vms[0].disks[1], VmDisk::partition("big"));
}

#[test]
fn every_validation_error_is_listed_with_its_line() {
    let text = "hostname = \"bad_name\"\n\
                [network]\n\
                mode = \"dhcp\"\n\
                gateway = \"10.0.2.2\"\n\
                [[vms]]\n\
                name = \"a\"\n\
                memory_mib = 64\n\
                kernel = \"k\"\n\
                [[vms]]\n\
                name = \"b\"\n\
                memory_mib = 8\n\
                kernel = \"k\"\n";
    assert_eq!(
        invalid(text),
        [
            "line 1, column 1: hostname: label \"bad_name\" may hold only letters, digits and '-'",
            "line 4, column 1: network.gateway: only valid when network.mode is \"static\"",
            "line 11, column 1: vms[1].memory_mib: must be between 16 and 65536",
        ]
    );
    // A rule about an absent field points at its table's name.
    let errors = invalid("[network]\nmode = \"static\"\n");
    assert_eq!(
        errors,
        [
            "line 1, column 2: network.address: required when network.mode is \"static\"",
            "line 1, column 2: network.prefix: required when network.mode is \"static\"",
        ]
    );
    let err = parse_toml("[network]\nmode = \"static\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 errors:\n  \
         line 1, column 2: network.address: required when network.mode is \"static\"\n  \
         line 1, column 2: network.prefix: required when network.mode is \"static\""
    );
}

#[test]
fn load_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("appliance.toml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ApplianceConfigError::Read { .. }), "{err}");
    std::fs::write(&path, "[management]\nhttp_port = 0\n").unwrap();
    let err = load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "appliance configuration {}: 1 error:\n  line 2, column 1: management.http_port: \
             must be between 1 and 65535",
            path.display()
        )
    );
}

#[test]
fn the_default_configuration_carries_the_build_token() {
    let token = "0123456789abcdef0123456789abcdef";
    let config = crate::tls_cert::default_config(token);
    assert_eq!(config.management.api_tokens, [token]);
    assert_eq!(
        Config {
            management: Default::default(),
            ..config.clone()
        },
        Config::default()
    );
    config.validate().unwrap();
}

#[test]
fn locations_count_characters() {
    let text = "a\nb\u{e9}c\n";
    assert_eq!(
        Location::of_offset(text, 0),
        Location { line: 1, column: 1 }
    );
    assert_eq!(
        Location::of_offset(text, 2),
        Location { line: 2, column: 1 }
    );
    assert_eq!(
        Location::of_offset(text, 5),
        Location { line: 2, column: 3 }
    );
    // Offsets inside a character or past the end stay in bounds.
    assert_eq!(
        Location::of_offset(text, 4),
        Location { line: 2, column: 2 }
    );
    assert_eq!(
        Location::of_offset(text, 100),
        Location { line: 3, column: 1 }
    );
}
