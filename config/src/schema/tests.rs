//! Host tests for the schema: defaults, round trips, every validation rule, schema errors.

use super::*;
use alloc::vec;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn vm(name: &str) -> Vm {
    Vm {
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
        cpuid: VmCpuid::default(),
        devices: Vec::new(),
    }
}

fn static_net() -> Network {
    Network {
        mode: NetworkMode::Static,
        address: Some(Ipv4Addr::new(10, 0, 2, 15)),
        prefix: Some(24),
        gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
        dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
        interface: None,
        internal: InternalNetwork::default(),
    }
}

/// A configuration that uses every field.
fn full() -> Config {
    let mut web = vm("web");
    web.initrd = Some("initrd.img".into());
    web.cmdline = "console=ttyS0 quiet".into();
    web.disks = vec![
        VmDisk {
            serial: Some("web-root 01".into()),
            ..VmDisk::file("web.img")
        },
        VmDisk {
            readonly: true,
            ..VmDisk::partition("big")
        },
    ];
    web.nics = vec![
        VmNic::on(NicNetwork::Bridged),
        VmNic {
            mac: Some(MacAddress([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc])),
            ..VmNic::on(NicNetwork::Internal)
        },
    ];
    web.autostart = true;
    Config {
        hostname: "appliance-1.example.net".into(),
        network: static_net(),
        management: Management {
            api_tokens: vec![TOKEN.into(), "tok_en.with~all+chars/-ok".into()],
            http_port: 8080,
            ..Management::default()
        },
        vms: vec![web, vm("db")],
    }
}

/// The errors of `config` as `path: message` strings.
fn errors(config: &Config) -> Vec<String> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts that `config` fails with exactly one error, at `path`, and returns its message.
fn single_error(config: &Config, path: &str) -> String {
    let errors = config.validate().expect_err("should be invalid");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, path, "{errors:?}");
    errors[0].message.clone()
}

fn schema_error(json: &str) -> SchemaError {
    match Config::from_json(json.as_bytes()) {
        Err(ConfigError::Schema(e)) => e,
        other => panic!("expected a schema error for {json}, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_documented_ones_and_validate() {
    let config = Config::default();
    assert_eq!(config.hostname, "keel");
    assert_eq!(config.network.mode, NetworkMode::Dhcp);
    assert!(config.management.api_tokens.is_empty());
    assert_eq!(config.management.http_port, 80);
    assert!(config.vms.is_empty());
    config.validate().unwrap();
    assert_eq!(Config::from_json(b"{}").unwrap(), config);
}

#[test]
fn canonical_json_is_stable_and_round_trips() {
    let config = full();
    config.validate().unwrap();
    let json = config.to_json_pretty();
    assert_eq!(Config::from_json(&json).unwrap(), config);
    assert_eq!(Config::from_json(&json).unwrap().to_json_pretty(), json);
    let text = core::str::from_utf8(&json).unwrap();
    // Declaration order, not alphabetical.
    let order = ["\"hostname\"", "\"network\"", "\"management\"", "\"vms\""];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.ends_with("}\n"));
}

#[test]
fn canonical_json_of_the_defaults_omits_absent_fields() {
    let text = String::from_utf8(Config::default().to_json_pretty()).unwrap();
    assert_eq!(
        text,
        "{\n  \"hostname\": \"keel\",\n  \"network\": {\n    \"mode\": \"dhcp\",\n    \
         \"internal\": {\n      \"address\": \"10.99.0.1\",\n      \"prefix\": 24,\n      \
         \"dhcp\": true\n    }\n  },\n  \
         \"management\": {\n    \"api_tokens\": [],\n    \"http_port\": 80,\n    \"http\": \"redirect\",\n    \"https_port\": 443\n  },\n  \
         \"vms\": []\n}\n"
    );
}

#[test]
fn vm_defaults_apply_and_required_fields_are_required() {
    let config =
        Config::from_json(br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k"}]}"#).unwrap();
    let vm = &config.vms[0];
    assert_eq!(vm.vcpus, 1);
    assert_eq!(vm.initrd, None);
    assert_eq!(vm.cmdline, "");
    assert!(vm.disks.is_empty());
    assert!(!vm.autostart);

    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k"},{"name":"b","kernel":"k"}]}"#,
    );
    assert_eq!(e.path, "vms[1].memory_mib");
    assert_eq!(e.kind, SchemaErrorKind::MissingField);
    assert_eq!(
        e.to_string(),
        "vms[1].memory_mib: required field is missing"
    );
}

#[test]
fn unknown_fields_are_refused_with_their_path_and_the_alternatives() {
    let e = schema_error(r#"{"hostnme":"x"}"#);
    assert_eq!(e.path, "hostnme");
    assert_eq!(
        e.to_string(),
        "hostnme: unknown field; expected one of: hostname, network, management, vms"
    );
    let e = schema_error(r#"{"network":{"mode":"dhcp","adress":"1.2.3.4"}}"#);
    assert_eq!(e.path, "network.adress");
    let e = schema_error(r#"{"management":{"token":"x"}}"#);
    assert_eq!(e.path, "management.token");
    let e = schema_error(r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","cpus":2}]}"#);
    assert_eq!(e.path, "vms[0].cpus");
    assert!(
        matches!(e.kind, SchemaErrorKind::UnknownField { expected } if expected.contains(&"vcpus"))
    );
}

#[test]
fn type_errors_name_the_path() {
    let cases = [
        (
            r#"{"hostname":5}"#,
            "hostname",
            "hostname: expected a string, found integer `5`",
        ),
        (
            r#"{"management":{"http_port":70000}}"#,
            "management.http_port",
            "management.http_port: 70000 is out of range: expected an integer from 0 to 65535",
        ),
        (
            r#"{"management":{"http_port":"80"}}"#,
            "management.http_port",
            "management.http_port: expected an integer from 0 to 65535, found string \"80\"",
        ),
        (
            r#"{"network":{"mode":"manual"}}"#,
            "network.mode",
            "network.mode: unknown value \"manual\"; expected one of: \"dhcp\", \"static\"",
        ),
        (
            r#"{"network":{"mode":"static","address":"10.0.2"}}"#,
            "network.address",
            "network.address: invalid IPv4 address syntax: found \"10.0.2\"",
        ),
        (
            r#"{"network":{"mode":"static","dns":["10.0.2.3",7]}}"#,
            "network.dns[1]",
            "network.dns[1]: expected an IPv4 address such as 10.0.2.15, found integer `7`",
        ),
        (
            r#"{"vms":[{"name":"a","memory_mib":-1,"kernel":"k"}]}"#,
            "vms[0].memory_mib",
            "vms[0].memory_mib: -1 is out of range: expected a non-negative integer",
        ),
        (
            r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","autostart":"yes"}]}"#,
            "vms[0].autostart",
            "vms[0].autostart: expected a boolean, found string \"yes\"",
        ),
        (
            r#"{"vms":{}}"#,
            "vms",
            "vms: expected a list, found an object",
        ),
        (
            r#"{"network":null}"#,
            "network",
            "network: expected an object (a TOML table), found null",
        ),
        (
            r#"[]"#,
            "",
            "expected an object (a TOML table), found a list",
        ),
        (
            r#"{"vms":[["a",1,64,"k"]]}"#,
            "vms[0]",
            "vms[0]: expected an object (a TOML table), found a list",
        ),
    ];
    for (json, path, display) in cases {
        let e = schema_error(json);
        assert_eq!(e.path, path, "{json}");
        assert_eq!(e.to_string(), display, "{json}");
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let err = Config::from_json(b"{\n  \"hostname\": \"a\",\n  oops\n}").unwrap_err();
    match &err {
        ConfigError::Syntax {
            line,
            column,
            message,
        } => {
            assert_eq!((*line, *column), (3, 3));
            assert_eq!(message, "key must be a string");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "not valid JSON at line 3, column 3: key must be a string"
    );
    assert!(matches!(
        Config::from_json(b"{\"hostname\": \"a\""),
        Err(ConfigError::Syntax { line: 1, .. })
    ));
    assert!(matches!(
        Config::from_json(b""),
        Err(ConfigError::Syntax { .. })
    ));
    assert!(matches!(
        Config::from_json(&[0xff, 0xfe]),
        Err(ConfigError::Syntax { .. })
    ));
}

#[test]
fn from_json_validates() {
    let err = Config::from_json(br#"{"hostname":"-bad"}"#).unwrap_err();
    let ConfigError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].path, "hostname");
    assert_eq!(
        err.to_string(),
        "hostname: label \"-bad\" must not start or end with '-'"
    );
}

#[test]
fn hostname_rules() {
    for good in ["keel", "a", "web-1", "1st", "a.b.c", &"x".repeat(63)] {
        let config = Config {
            hostname: good.into(),
            ..Config::default()
        };
        assert_eq!(errors(&config), Vec::<String>::new(), "{good}");
    }
    let long_total = ["a".repeat(63).as_str(); 4].join(".") + ".ab";
    let cases = [
        ("", "hostname: must not be empty"),
        (
            "web_1",
            "hostname: label \"web_1\" may hold only letters, digits and '-'",
        ),
        (
            "a..b",
            "hostname: must not have empty labels (leading, trailing or doubled dots)",
        ),
        (
            "a.",
            "hostname: must not have empty labels (leading, trailing or doubled dots)",
        ),
        (
            "web-",
            "hostname: label \"web-\" must not start or end with '-'",
        ),
        (
            "a b",
            "hostname: label \"a b\" may hold only letters, digits and '-'",
        ),
        (
            "caf\u{e9}",
            "hostname: label \"caf\\u{e9}\" may hold only letters, digits and '-'",
        ),
    ];
    for (bad, message) in cases {
        let config = Config {
            hostname: bad.into(),
            ..Config::default()
        };
        assert_eq!(errors(&config), vec![message.to_string()], "{bad:?}");
    }
    let config = Config {
        hostname: "x".repeat(64),
        ..Config::default()
    };
    assert!(single_error(&config, "hostname").contains("at most 63 characters"));
    let config = Config {
        hostname: long_total,
        ..Config::default()
    };
    assert_eq!(
        single_error(&config, "hostname"),
        "must be at most 253 characters (it has 258)"
    );
}

#[test]
fn dhcp_refuses_every_static_field() {
    let config = Config {
        network: Network {
            mode: NetworkMode::Dhcp,
            ..static_net()
        },
        ..Config::default()
    };
    assert_eq!(
        errors(&config),
        [
            "network.address: only valid when network.mode is \"static\"",
            "network.prefix: only valid when network.mode is \"static\"",
            "network.gateway: only valid when network.mode is \"static\"",
            "network.dns: only valid when network.mode is \"static\"",
        ]
    );
}

#[test]
fn static_needs_address_and_prefix() {
    let mut config = Config::default();
    config.network.mode = NetworkMode::Static;
    assert_eq!(
        errors(&config),
        [
            "network.address: required when network.mode is \"static\"",
            "network.prefix: required when network.mode is \"static\"",
        ]
    );
    // Gateway and DNS are optional.
    config.network.address = Some(Ipv4Addr::new(192, 168, 1, 10));
    config.network.prefix = Some(32);
    config.validate().unwrap();
}

#[test]
fn static_address_rules() {
    let with = |f: &dyn Fn(&mut Network)| {
        let mut config = Config {
            network: static_net(),
            ..Config::default()
        };
        f(&mut config.network);
        config
    };
    assert_eq!(
        single_error(&with(&|n| n.prefix = Some(0)), "network.prefix"),
        "must be between 1 and 32"
    );
    assert_eq!(
        single_error(&with(&|n| n.prefix = Some(33)), "network.prefix"),
        "must be between 1 and 32"
    );
    let bad_addresses = [
        ([0, 0, 0, 0], "must not be 0.0.0.0"),
        (
            [255, 255, 255, 255],
            "must not be the broadcast address 255.255.255.255",
        ),
        (
            [224, 0, 0, 1],
            "must not be a multicast address (224.0.0.0/4)",
        ),
        (
            [127, 0, 0, 1],
            "must not be a loopback address (127.0.0.0/8)",
        ),
    ];
    for (octets, message) in bad_addresses {
        let config = with(&|n| {
            n.address = Some(Ipv4Addr::from(octets));
            n.gateway = None;
        });
        assert_eq!(single_error(&config, "network.address"), message);
    }
    assert_eq!(
        single_error(
            &with(&|n| n.address = Some(Ipv4Addr::new(10, 0, 2, 0))),
            "network.address"
        ),
        "10.0.2.0 is the network or broadcast address of 10.0.2.0/24"
    );
    assert_eq!(
        single_error(
            &with(&|n| n.address = Some(Ipv4Addr::new(10, 0, 2, 255))),
            "network.address"
        ),
        "10.0.2.255 is the network or broadcast address of 10.0.2.255/24"
    );
    // /31 point-to-point links use both addresses.
    with(&|n| {
        n.address = Some(Ipv4Addr::new(10, 0, 2, 0));
        n.prefix = Some(31);
        n.gateway = Some(Ipv4Addr::new(10, 0, 2, 1));
    })
    .validate()
    .unwrap();
}

#[test]
fn gateway_must_be_inside_the_subnet() {
    let with_gateway = |gw: [u8; 4], prefix: u8| Config {
        network: Network {
            gateway: Some(Ipv4Addr::from(gw)),
            prefix: Some(prefix),
            ..static_net()
        },
        ..Config::default()
    };
    assert_eq!(
        single_error(&with_gateway([10, 0, 3, 1], 24), "network.gateway"),
        "10.0.3.1 is outside the subnet 10.0.2.0/24"
    );
    with_gateway([10, 0, 3, 1], 16).validate().unwrap();
    assert_eq!(
        single_error(&with_gateway([10, 0, 2, 15], 24), "network.gateway"),
        "must differ from network.address (this appliance)"
    );
    assert_eq!(
        single_error(&with_gateway([0, 0, 0, 0], 24), "network.gateway"),
        "must not be 0.0.0.0"
    );
}

#[test]
fn dns_rules() {
    let mut config = Config {
        network: static_net(),
        ..Config::default()
    };
    config.network.dns = vec![Ipv4Addr::new(1, 1, 1, 1); 4];
    assert_eq!(
        single_error(&config, "network.dns"),
        "at most 3 servers (it lists 4)"
    );
    config.network.dns = vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(239, 1, 1, 1)];
    assert_eq!(
        single_error(&config, "network.dns[1]"),
        "must not be a multicast address (224.0.0.0/4)"
    );
}

#[test]
fn api_token_rules() {
    let with_tokens = |tokens: &[&str]| Config {
        management: Management {
            api_tokens: tokens.iter().map(|t| t.to_string()).collect(),
            http_port: 80,
            ..Management::default()
        },
        ..Config::default()
    };
    with_tokens(&[&"a".repeat(16), &"b".repeat(128)])
        .validate()
        .unwrap();
    assert_eq!(
        single_error(&with_tokens(&[TOKEN, "short"]), "management.api_tokens[1]"),
        "must be 16 to 128 characters long (it has 5)"
    );
    assert!(
        single_error(
            &with_tokens(&[&"a".repeat(129)]),
            "management.api_tokens[0]"
        )
        .contains("(it has 129)")
    );
    let spaced = "0123456789 abcdef";
    let message = single_error(&with_tokens(&[spaced]), "management.api_tokens[0]");
    assert_eq!(
        message,
        "may hold only letters, digits and . _ ~ + / - (no spaces)"
    );
    assert!(!message.contains(spaced), "messages must not echo secrets");
    assert_eq!(
        single_error(
            &with_tokens(&[TOKEN, &"c".repeat(20), TOKEN]),
            "management.api_tokens[2]"
        ),
        "duplicates management.api_tokens[0]"
    );
}

#[test]
fn http_port_zero_is_refused() {
    let mut config = Config::default();
    config.management.http_port = 0;
    assert_eq!(
        single_error(&config, "management.http_port"),
        "must be between 1 and 65535"
    );
}

#[test]
fn vm_name_rules() {
    for good in ["a", "web-1", &"a".repeat(32)] {
        let config = Config {
            vms: vec![vm(good)],
            ..Config::default()
        };
        config.validate().unwrap();
    }
    let cases = [
        ("", "must be 1 to 32 characters long"),
        (&*"a".repeat(33), "must be 1 to 32 characters long"),
        ("Web", "may hold only lowercase letters, digits and '-'"),
        ("web_1", "may hold only lowercase letters, digits and '-'"),
        ("1web", "must start with a lowercase letter"),
        ("-web", "must start with a lowercase letter"),
    ];
    for (name, message) in cases {
        let config = Config {
            vms: vec![vm("ok"), vm(name)],
            ..Config::default()
        };
        assert_eq!(single_error(&config, "vms[1].name"), message, "{name:?}");
    }
    let config = Config {
        vms: vec![vm("web"), vm("db"), vm("web")],
        ..Config::default()
    };
    assert_eq!(
        single_error(&config, "vms[2].name"),
        "\"web\" is already the name of vms[0]"
    );
}

#[test]
fn vm_resource_rules() {
    let with = |f: &dyn Fn(&mut Vm)| {
        let mut second = vm("b");
        f(&mut second);
        Config {
            vms: vec![vm("a"), second],
            ..Config::default()
        }
    };
    for vcpus in [0, 9, 64] {
        assert_eq!(
            single_error(&with(&|v| v.vcpus = vcpus), "vms[1].vcpus"),
            "must be between 1 and 8"
        );
    }
    for vcpus in [1, 2, 8] {
        with(&|v| v.vcpus = vcpus).validate().unwrap();
    }
    for memory in [0, 15, 65537, u64::MAX] {
        assert_eq!(
            errors(&with(&|v| v.memory_mib = memory)),
            ["vms[1].memory_mib: must be between 16 and 65536"]
        );
    }
    with(&|v| v.memory_mib = 16).validate().unwrap();
    with(&|v| v.memory_mib = 65536).validate().unwrap();
    // Guest RAM comes in 2 MiB pages: odd sizes are refused here, not when the VM starts.
    for memory in [17, 257, 65535] {
        assert_eq!(
            errors(&with(&|v| v.memory_mib = memory)),
            ["vms[1].memory_mib: must be an even number (guest RAM comes in 2 MiB pages)"]
        );
    }
}

#[test]
fn vm_file_and_cmdline_rules() {
    let with = |f: &dyn Fn(&mut Vm)| {
        let mut v = vm("a");
        f(&mut v);
        Config {
            vms: vec![v],
            ..Config::default()
        }
    };
    let bad_names = [
        ("", "must name a file in the guest store (it is empty)"),
        (
            "boot/bzImage",
            "must be a plain file name in the guest store, without '/' or '\\'",
        ),
        (
            "a\\b",
            "must be a plain file name in the guest store, without '/' or '\\'",
        ),
        ("..", "must name a file, not \".\" or \"..\""),
        ("a\nb", "must not contain control characters"),
    ];
    for (name, message) in bad_names {
        assert_eq!(
            single_error(&with(&|v| v.kernel = Some(name.into())), "vms[0].kernel"),
            message
        );
        assert_eq!(
            single_error(&with(&|v| v.initrd = Some(name.into())), "vms[0].initrd"),
            message
        );
        assert_eq!(
            single_error(
                &with(&|v| v.disks = vec![VmDisk::file("ok.img"), VmDisk::file(name)]),
                "vms[0].disks[1].file"
            ),
            message
        );
        assert_eq!(
            single_error(
                &with(&|v| {
                    v.kernel = None;
                    v.firmware = Some(name.into());
                }),
                "vms[0].firmware"
            ),
            message
        );
    }
    assert!(
        single_error(
            &with(&|v| v.kernel = Some("k".repeat(256))),
            "vms[0].kernel"
        )
        .contains("at most 255 bytes")
    );
    with(&|v| v.cmdline = "x".repeat(2048)).validate().unwrap();
    assert_eq!(
        single_error(&with(&|v| v.cmdline = "x".repeat(2049)), "vms[0].cmdline"),
        "must be at most 2048 bytes (it has 2049)"
    );
    assert_eq!(
        single_error(&with(&|v| v.cmdline = "a\nb".into()), "vms[0].cmdline"),
        "must be one line of printable text"
    );
}

#[test]
fn every_error_is_reported_in_document_order() {
    let json = br#"{
        "hostname": "bad_name",
        "network": {"mode": "dhcp", "gateway": "10.0.2.2"},
        "management": {"api_tokens": ["short"], "http_port": 0},
        "vms": [
            {"name": "ok", "memory_mib": 64, "kernel": "k"},
            {"name": "Bad", "vcpus": 9, "memory_mib": 8, "kernel": "a/b"}
        ]
    }"#;
    let ConfigError::Invalid(errors) = Config::from_json(json).unwrap_err() else {
        panic!("expected validation errors")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "hostname",
            "network.gateway",
            "management.api_tokens[0]",
            "management.http_port",
            "vms[1].name",
            "vms[1].vcpus",
            "vms[1].memory_mib",
            "vms[1].kernel",
        ]
    );
    assert_eq!(
        errors[6].to_string(),
        "vms[1].memory_mib: must be between 16 and 65536"
    );
}

#[test]
fn hostile_input_is_an_error_not_a_panic() {
    let deep = "[".repeat(10_000);
    assert!(Config::from_json(deep.as_bytes()).is_err());
    let deep_vm = alloc::format!(r#"{{"vms":[{}]}}"#, "[".repeat(200));
    assert!(Config::from_json(deep_vm.as_bytes()).is_err());
    assert!(Config::from_json(br#"{"management":{"http_port":1e400}}"#).is_err());
    assert!(Config::from_json(br#"{"management":{"http_port":80.5}}"#).is_err());
    assert!(
        Config::from_json(
            br#"{"vms":[{"name":"a","memory_mib":18446744073709551616,"kernel":"k"}]}"#
        )
        .is_err()
    );
    // Every prefix of a valid document fails cleanly.
    let json = full().to_json_pretty();
    for end in 0..json.len() - 1 {
        assert!(Config::from_json(&json[..end]).is_err(), "{end}");
    }
}

/// A one-VM configuration with `disks`.
fn with_disks(disks: Vec<VmDisk>) -> Config {
    let mut v = vm("a");
    v.disks = disks;
    Config {
        vms: vec![v],
        ..Config::default()
    }
}

#[test]
fn disks_round_trip_through_json_with_their_canonical_shape() {
    let config = full();
    let json = config.to_json_pretty();
    assert_eq!(Config::from_json(&json).unwrap(), config);
    let value: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        value["vms"][0]["disks"],
        serde_json::json!([
            { "file": "web.img", "readonly": false, "serial": "web-root 01" },
            { "partition": "big", "readonly": true }
        ])
    );
    // `readonly` defaults to false; an absent serial stays absent.
    let parsed = Config::from_json(
        br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","disks":[{"file":"d.img"}]}]}"#,
    )
    .unwrap();
    assert_eq!(parsed.vms[0].disks, [VmDisk::file("d.img")]);
    assert_eq!(parsed.vms[0].disks[0].source(), DiskSource::File("d.img"));
    assert_eq!(
        VmDisk::partition("big").source(),
        DiskSource::Partition("big")
    );
    assert_eq!(DiskSource::Partition("big").to_string(), "partition:big");
    assert_eq!(DiskSource::File("d.img").to_string(), "d.img");
}

#[test]
fn disk_shape_errors_name_the_field() {
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","disks":[{"file":"d","size":1}]}]}"#,
    );
    assert_eq!(e.path, "vms[0].disks[0].size");
    // The old form, a list of file names, is a clear type error.
    let e =
        schema_error(r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","disks":["d.img"]}]}"#);
    assert_eq!(e.path, "vms[0].disks[0]");
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","disks":[{"file":"d","readonly":"yes"}]}]}"#,
    );
    assert_eq!(e.path, "vms[0].disks[0].readonly");
}

#[test]
fn disk_rules() {
    // Exactly one of file and partition.
    assert_eq!(
        single_error(&with_disks(vec![VmDisk::file("")]), "vms[0].disks[0].file"),
        "must name a file in the guest store (it is empty)"
    );
    let neither = VmDisk {
        file: None,
        ..VmDisk::file("x")
    };
    assert!(
        single_error(&with_disks(vec![neither]), "vms[0].disks[0]")
            .contains("file (a store file) or partition")
    );
    let both = VmDisk {
        file: Some("d.img".into()),
        ..VmDisk::partition("big")
    };
    assert!(
        single_error(&with_disks(vec![both]), "vms[0].disks[0].partition")
            .contains("either a store file or a partition")
    );
    // Partition names follow the VM-name rule.
    assert_eq!(
        single_error(
            &with_disks(vec![VmDisk::partition("Big")]),
            "vms[0].disks[0].partition"
        ),
        "a partition name may hold only lowercase letters, digits and '-'"
    );
    with_disks(vec![VmDisk::partition("big-1")])
        .validate()
        .unwrap();
    // The same source twice is refused; a file and a partition of one name are different.
    assert_eq!(
        single_error(
            &with_disks(vec![
                VmDisk::file("a.img"),
                VmDisk::partition("a"),
                VmDisk {
                    readonly: true,
                    ..VmDisk::file("a.img")
                },
            ]),
            "vms[0].disks[2].file"
        ),
        "\"a.img\" is already attached as vms[0].disks[0]"
    );
    assert_eq!(
        single_error(
            &with_disks(vec![VmDisk::partition("a"), VmDisk::partition("a")]),
            "vms[0].disks[1].partition"
        ),
        "\"a\" is already attached as vms[0].disks[0]"
    );
    with_disks(vec![VmDisk::file("a"), VmDisk::partition("a")])
        .validate()
        .unwrap();
    // At most MAX_VM_DISKS.
    let names: Vec<String> = (0..=crate::limits::MAX_VM_DISKS)
        .map(|n| alloc::format!("d{n}.img"))
        .collect();
    let many: Vec<VmDisk> = names.iter().map(|n| VmDisk::file(n)).collect();
    with_disks(many[..crate::limits::MAX_VM_DISKS].to_vec())
        .validate()
        .unwrap();
    assert_eq!(
        single_error(&with_disks(many), "vms[0].disks"),
        "at most 8 disks per VM (it lists 9): remove some, or combine them into one larger disk"
    );
    // Serials: at most 20 bytes of printable ASCII.
    let serial = |s: &str| {
        with_disks(vec![VmDisk {
            serial: Some(s.into()),
            ..VmDisk::file("d.img")
        }])
    };
    serial("ABCDEFGHIJ 0123456~!").validate().unwrap();
    serial("").validate().unwrap();
    assert_eq!(
        single_error(&serial(&"x".repeat(21)), "vms[0].disks[0].serial"),
        "must be at most 20 bytes (it has 21)"
    );
    for bad in ["tab\there", "é", "nul\0"] {
        assert!(
            single_error(&serial(bad), "vms[0].disks[0].serial").contains("printable ASCII"),
            "{bad:?}"
        );
    }
}

#[test]
fn a_vm_boots_exactly_one_of_kernel_and_firmware() {
    let with = |f: &dyn Fn(&mut Vm)| {
        let mut v = vm("a");
        f(&mut v);
        Config {
            vms: vec![v],
            ..Config::default()
        }
    };
    let firmware_only = with(&|v| {
        v.kernel = None;
        v.firmware = Some("hypervisor-fw".into());
        v.cmdline = "console=ttyS0".into();
        v.disks = vec![VmDisk::file("debian.img")];
    });
    firmware_only.validate().unwrap();
    assert_eq!(firmware_only.vms[0].boot_file(), Some("hypervisor-fw"));
    assert_eq!(vm("a").boot_file(), Some("bzImage"));
    let json = firmware_only.to_json_pretty();
    let text = core::str::from_utf8(&json).unwrap();
    assert!(text.contains("\"firmware\": \"hypervisor-fw\""), "{text}");
    assert!(!text.contains("\"kernel\""), "{text}");
    assert_eq!(Config::from_json(&json).unwrap(), firmware_only);

    assert!(
        single_error(&with(&|v| v.kernel = None), "vms[0].kernel")
            .starts_with("required: name the guest kernel")
    );
    assert!(
        single_error(
            &with(&|v| v.firmware = Some("hypervisor-fw".into())),
            "vms[0].firmware"
        )
        .contains("either a kernel or a firmware")
    );
    assert_eq!(
        single_error(
            &with(&|v| {
                v.kernel = None;
                v.firmware = Some("hypervisor-fw".into());
                v.initrd = Some("initrd.img".into());
            }),
            "vms[0].initrd"
        ),
        "only valid with a kernel: a firmware loads its own initrd from the disk"
    );
}

/// A one-VM configuration with `nics`.
fn with_nics(nics: Vec<VmNic>) -> Config {
    let mut v = vm("a");
    v.nics = nics;
    Config {
        vms: vec![v],
        ..Config::default()
    }
}

fn nic(network: NicNetwork, mac: &str) -> VmNic {
    VmNic {
        network,
        mac: Some(mac.parse().unwrap()),
    }
}

#[test]
fn nics_round_trip_through_json_with_their_canonical_shape() {
    let config = full();
    let json = config.to_json_pretty();
    assert_eq!(Config::from_json(&json).unwrap(), config);
    let value: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        value["vms"][0]["nics"],
        serde_json::json!([
            { "network": "bridged" },
            { "network": "internal", "mac": "52:54:00:aa:bb:cc" }
        ])
    );
    // No NICs: no `nics` at all, so older documents keep their bytes and ETags.
    assert!(value["vms"][1].get("nics").is_none());
    assert_eq!(
        value["network"]["internal"],
        serde_json::json!({ "address": "10.99.0.1", "prefix": 24, "dhcp": true })
    );
    // Upper-case MACs are taken and written back in lower case.
    let parsed = Config::from_json(
        br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k",
             "nics":[{"network":"internal","mac":"52:54:00:AA:BB:0C"}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        parsed.vms[0].nics,
        [nic(NicNetwork::Internal, "52:54:00:aa:bb:0c")]
    );
    let text = String::from_utf8(parsed.to_json_pretty()).unwrap();
    assert!(text.contains("\"mac\": \"52:54:00:aa:bb:0c\""), "{text}");
    // A document without network.internal gets the defaults; a partial one the rest of them.
    let partial = Config::from_json(br#"{"network":{"internal":{"prefix":16}}}"#).unwrap();
    assert_eq!(
        partial.network.internal,
        InternalNetwork {
            prefix: 16,
            ..InternalNetwork::default()
        }
    );
}

#[test]
fn nic_shape_errors_name_the_field() {
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","nics":[{"network":"nat"}]}]}"#,
    );
    assert_eq!(e.path, "vms[0].nics[0].network");
    assert_eq!(
        e.to_string(),
        "vms[0].nics[0].network: unknown value \"nat\"; expected one of: \"bridged\", \"internal\""
    );
    let e = schema_error(r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","nics":[{}]}]}"#);
    assert_eq!(
        e.to_string(),
        "vms[0].nics[0].network: required field is missing"
    );
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","nics":[{"network":"bridged","mac":"52:54:00:aa:bb"}]}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "vms[0].nics[0].mac: invalid value string \"52:54:00:aa:bb\": expected a MAC address \
         such as 52:54:00:12:34:56"
    );
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","nics":[{"network":"bridged","model":"e1000"}]}]}"#,
    );
    assert_eq!(e.path, "vms[0].nics[0].model");
    let e = schema_error(r#"{"network":{"internal":{"address":"10.99.0.1","dns":[]}}}"#);
    assert_eq!(e.path, "network.internal.dns");
    let e = schema_error(r#"{"network":{"internal":{"dhcp":"yes"}}}"#);
    assert_eq!(e.path, "network.internal.dhcp");
}

#[test]
fn nic_mac_rules() {
    with_nics(vec![
        VmNic::on(NicNetwork::Bridged),
        VmNic::on(NicNetwork::Bridged),
        nic(NicNetwork::Internal, "52:54:00:aa:bb:cc"),
    ])
    .validate()
    .unwrap();
    assert_eq!(
        errors(&with_nics(vec![nic(
            NicNetwork::Bridged,
            "01:00:5e:00:00:01"
        )])),
        ["vms[0].nics[0].mac: 01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC"]
    );
    assert_eq!(
        single_error(
            &with_nics(vec![nic(NicNetwork::Bridged, "ff:ff:ff:ff:ff:ff")]),
            "vms[0].nics[0].mac"
        ),
        "ff:ff:ff:ff:ff:ff is a multicast address; a NIC needs a unicast MAC"
    );
    assert!(
        single_error(
            &with_nics(vec![nic(NicNetwork::Bridged, "00:00:00:00:00:00")]),
            "vms[0].nics[0].mac"
        )
        .starts_with("00:00:00:00:00:00 is not an address")
    );
    // At most MAX_VM_NICS.
    let five = vec![VmNic::on(NicNetwork::Bridged); crate::limits::MAX_VM_NICS + 1];
    assert_eq!(
        single_error(&with_nics(five), "vms[0].nics"),
        "at most 4 NICs per VM (it lists 5)"
    );
}

#[test]
fn duplicate_macs_are_refused_across_vms_with_both_owners() {
    let mac = "52:54:00:aa:bb:cc";
    let mut a = vm("a");
    a.nics = vec![
        VmNic::on(NicNetwork::Bridged),
        nic(NicNetwork::Internal, mac),
    ];
    let b = vm("b");
    let mut c = vm("c");
    c.nics = vec![nic(NicNetwork::Bridged, mac)];
    let config = Config {
        vms: vec![a.clone(), b, c],
        ..Config::default()
    };
    assert_eq!(
        errors(&config),
        ["vms[2].nics[0].mac: 52:54:00:aa:bb:cc is already vms[0].nics[1]'s MAC"]
    );
    // Within one VM, and whatever the case it was written in.
    let mut twice = vm("d");
    twice.nics = vec![
        nic(NicNetwork::Bridged, mac),
        nic(NicNetwork::Internal, "52:54:00:AA:BB:CC"),
    ];
    assert_eq!(
        single_error(
            &Config {
                vms: vec![twice],
                ..Config::default()
            },
            "vms[0].nics[1].mac"
        ),
        "52:54:00:aa:bb:cc is already vms[0].nics[0]'s MAC"
    );
    // An explicit MAC that equals another NIC's derived one (with this hostname).
    let derived = crate::mac::derived_mac("keel", "a", 0);
    let mut e = vm("e");
    e.nics = vec![VmNic {
        mac: Some(derived),
        ..VmNic::on(NicNetwork::Bridged)
    }];
    let config = Config {
        vms: vec![a.clone(), e.clone()],
        ..Config::default()
    };
    assert_eq!(
        errors(&config),
        [alloc::format!(
            "vms[1].nics[0].mac: {derived} is already vms[0].nics[0]'s MAC"
        )]
    );
    // The other way round the derived NIC is the one named; under another hostname the
    // derived MAC differs and both are fine.
    let config = Config {
        vms: vec![e.clone(), a.clone()],
        ..Config::default()
    };
    assert_eq!(
        errors(&config),
        [alloc::format!(
            "vms[1].nics[0]: its derived MAC {derived} is already vms[0].nics[0]'s MAC: give \
             one of them another mac"
        )]
    );
    Config {
        hostname: "other".into(),
        vms: vec![e, a.clone()],
        ..Config::default()
    }
    .validate()
    .unwrap();
    // A repeated VM name is one error, not one more per derived MAC.
    let config = Config {
        vms: vec![a.clone(), a],
        ..Config::default()
    };
    assert_eq!(
        errors(&config),
        [
            "vms[1].name: \"a\" is already the name of vms[0]",
            "vms[1].nics[1].mac: 52:54:00:aa:bb:cc is already vms[0].nics[1]'s MAC"
        ]
    );
}

#[test]
fn mac_for_is_the_explicit_or_the_derived_mac() {
    let explicit = nic(NicNetwork::Bridged, "52:54:00:aa:bb:cc");
    assert_eq!(
        explicit.mac_for("keel", "web", 3).to_string(),
        "52:54:00:aa:bb:cc"
    );
    let derived = VmNic::on(NicNetwork::Internal);
    assert_eq!(
        derived.mac_for("keel", "web", 1),
        crate::mac::derived_mac("keel", "web", 1)
    );
    assert_ne!(
        derived.mac_for("keel", "web", 1),
        derived.mac_for("keel", "web", 0)
    );
    assert_eq!(NicNetwork::Bridged.to_string(), "bridged");
    assert_eq!(NicNetwork::Internal.as_str(), "internal");
}

fn with_internal(address: [u8; 4], prefix: u8, dhcp: bool) -> Config {
    let mut config = Config::default();
    config.network.internal = InternalNetwork {
        address: Ipv4Addr::from(address),
        prefix,
        dhcp,
    };
    config
}

#[test]
fn internal_network_rules() {
    with_internal([10, 99, 0, 1], 24, true).validate().unwrap();
    with_internal([172, 16, 5, 1], 8, true).validate().unwrap();
    with_internal([192, 168, 50, 1], 25, true)
        .validate()
        .unwrap();
    with_internal([192, 168, 50, 1], 30, false)
        .validate()
        .unwrap();
    for prefix in [0, 7, 31, 32] {
        assert_eq!(
            single_error(
                &with_internal([10, 99, 0, 1], prefix, false),
                "network.internal.prefix"
            ),
            "must be between 8 and 30"
        );
    }
    assert_eq!(
        single_error(
            &with_internal([10, 99, 0, 1], 26, true),
            "network.internal.prefix"
        ),
        "a /26 is too small for the DHCP pool (host numbers 100 to 199): use a prefix of 25 \
         or less, or set network.internal.dhcp = false"
    );
    assert_eq!(
        single_error(
            &with_internal([10, 99, 0, 0], 24, true),
            "network.internal.address"
        ),
        "10.99.0.0 is the network or broadcast address of 10.99.0.0/24"
    );
    assert_eq!(
        single_error(
            &with_internal([10, 99, 0, 3], 30, false),
            "network.internal.address"
        ),
        "10.99.0.3 is the network or broadcast address of 10.99.0.3/30"
    );
    for (address, problem) in [
        ([0, 0, 0, 0], "must not be 0.0.0.0"),
        (
            [127, 0, 0, 1],
            "must not be a loopback address (127.0.0.0/8)",
        ),
        (
            [224, 0, 0, 1],
            "must not be a multicast address (224.0.0.0/4)",
        ),
    ] {
        assert_eq!(
            single_error(
                &with_internal(address, 24, true),
                "network.internal.address"
            ),
            problem
        );
    }
}

#[test]
fn internal_network_must_not_overlap_a_static_management_network() {
    let mut config = Config {
        network: static_net(),
        ..Config::default()
    };
    config.validate().unwrap();
    config.network.internal.address = Ipv4Addr::new(10, 0, 2, 1);
    assert_eq!(
        single_error(&config, "network.internal.address"),
        "the internal network 10.0.2.0/24 overlaps the management network 10.0.2.15/24 \
         (network.address): choose another subnet"
    );
    // A wider management subnet that holds the internal one overlaps too.
    config.network.internal.address = Ipv4Addr::new(10, 99, 0, 1);
    config.network.prefix = Some(8);
    config.network.gateway = None;
    assert!(
        single_error(&config, "network.internal.address")
            .contains("overlaps the management network 10.0.2.15/8")
    );
    // Beside it is fine; with DHCP management nothing is known to overlap.
    config.network.prefix = Some(16);
    config.validate().unwrap();
    let dhcp = with_internal([10, 0, 2, 1], 24, true);
    dhcp.validate().unwrap();
}

#[test]
fn network_interface_takes_a_mac_or_a_pci_address() {
    for good in ["52:54:00:12:34:56", "00:03.0", "0000:3b:00.1"] {
        let config =
            Config::from_json(format!(r#"{{"network":{{"interface":"{good}"}}}}"#).as_bytes())
                .unwrap();
        assert_eq!(config.network.interface.as_deref(), Some(good));
        assert_eq!(errors(&config), Vec::<String>::new(), "{good}");
    }
    let config = Config {
        network: Network {
            interface: Some("eth0".into()),
            ..Network::default()
        },
        ..Config::default()
    };
    let message = single_error(&config, "network.interface");
    assert!(
        message.starts_with("\"eth0\": expected a NIC's MAC address"),
        "{message}"
    );
    // Set on the console the same way, and refused there with the same path.
    let set = crate::edit::set(&Config::default(), "network.interface", "00:04.0").unwrap();
    assert_eq!(set.network.interface.as_deref(), Some("00:04.0"));
    let refused = crate::edit::set(&Config::default(), "network.interface", "00:04").unwrap_err();
    assert!(
        refused.to_string().contains("network.interface"),
        "{refused}"
    );
}

#[test]
fn cpuid_paravirt_defaults_to_kvm_and_takes_none() {
    let config =
        Config::from_json(br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k"}]}"#).unwrap();
    assert_eq!(config.vms[0].cpuid.paravirt, Paravirt::Kvm);
    // The default is not written out, so existing configurations read back the same.
    let json = String::from_utf8(config.to_json_pretty()).unwrap();
    assert!(!json.contains("cpuid"), "{json}");

    let config = Config::from_json(
        br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","cpuid":{"paravirt":"none"}}]}"#,
    )
    .unwrap();
    assert_eq!(config.vms[0].cpuid.paravirt, Paravirt::None);
    let json = config.to_json_pretty();
    assert_eq!(Config::from_json(&json).unwrap(), config, "round trip");
    assert_eq!(Paravirt::parse("none"), Some(Paravirt::None));
    assert_eq!(Paravirt::parse("kvm"), Some(Paravirt::Kvm));
    assert_eq!(Paravirt::parse("hyperv"), None);
    assert_eq!(Paravirt::None.to_string(), "none");
}

#[test]
fn cpuid_paravirt_errors_name_the_field() {
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","cpuid":{"paravirt":"hyperv"}}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "vms[0].cpuid.paravirt: unknown value \"hyperv\"; expected one of: \"kvm\", \"none\""
    );
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","cpuid":{"hypervisor":"kvm"}}]}"#,
    );
    assert_eq!(e.path, "vms[0].cpuid.hypervisor");
}

#[test]
fn migration_settings_are_checked_with_their_paths() {
    let config = Config::from_json(
        br#"{"management":{"migration_token":"0123456789abcdef","migration_port":7071,
            "migration_link":{"interface":"52:54:00:12:34:57","address":"10.77.0.1","prefix":24}}}"#,
    )
    .unwrap();
    config.validate().unwrap();
    let link = config.management.migration_link.clone().unwrap();
    assert_eq!(link.address, core::net::Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(config.management.migration_port, 7071);
    // The default port is not written out.
    assert!(
        !String::from_utf8(Config::default().to_json_pretty())
            .unwrap()
            .contains("migration")
    );

    let mut bad = config.clone();
    bad.management.migration_token = Some("short".into());
    assert_eq!(
        single_error(&bad, "management.migration_token"),
        "must be 16 to 128 characters long"
    );
    let mut bad = config.clone();
    bad.management.migration_port = bad.management.http_port;
    assert!(single_error(&bad, "management.migration_port").contains("must differ"));
    let mut bad = config.clone();
    bad.management.migration_link.as_mut().unwrap().address = core::net::Ipv4Addr::BROADCAST;
    assert!(single_error(&bad, "management.migration_link.address").contains("unicast"));
    let mut bad = config;
    bad.management.migration_link.as_mut().unwrap().prefix = 0;
    assert!(single_error(&bad, "management.migration_link.prefix").contains("1 and 32"));
}

#[test]
fn https_port_and_certificate_rules() {
    use super::{ManagementCertificate, PlainHttpMode};
    let mut config = Config::default();
    assert_eq!(config.management.https_port, 443);
    assert_eq!(config.management.http, PlainHttpMode::Redirect);
    config.management.https_port = 80;
    assert_eq!(
        errors(&config),
        [
            "management.https_port: must differ from management.http_port (80), unless management.http is \"off\""
        ]
    );
    config.management.http = PlainHttpMode::Off;
    assert!(config.validate().is_ok());
    config.management.certificate = Some(ManagementCertificate {
        cert_pem: "junk".into(),
        key_pem: "-----BEGIN RSA PRIVATE KEY-----\n...".into(),
    });
    assert_eq!(
        errors(&config),
        [
            "management.certificate.cert_pem: must be PEM (-----BEGIN CERTIFICATE-----)",
            "management.certificate.key_pem: must be PEM (-----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)"
        ]
    );
    let json = r#"{"management":{"http":"serve","https_port":8443}}"#;
    let parsed = Config::from_json(json.as_bytes()).unwrap();
    assert_eq!(parsed.management.http, PlainHttpMode::Serve);
    assert!(Config::from_json(br#"{"management":{"http":"maybe"}}"#).is_err());
}

#[test]
fn vm_devices_default_empty_and_take_the_test_devices() {
    let config =
        Config::from_json(br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k"}]}"#).unwrap();
    assert!(config.vms[0].devices.is_empty());
    let json = String::from_utf8(config.to_json_pretty()).unwrap();
    assert!(!json.contains("devices"), "{json}");

    let config = Config::from_json(
        br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","devices":["debug-exit","pc-testdev"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        config.vms[0].devices,
        vec![VmDevice::DebugExit, VmDevice::PcTestdev]
    );
    assert_eq!(
        Config::from_json(&config.to_json_pretty()).unwrap(),
        config,
        "round trip"
    );
    assert_eq!(VmDevice::parse("pc-testdev"), Some(VmDevice::PcTestdev));
    assert_eq!(VmDevice::parse("isa-debug-exit"), None);
}

#[test]
fn vm_devices_errors_name_the_field() {
    let e = schema_error(
        r#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","devices":["debug-exit","vga"]}]}"#,
    );
    assert_eq!(
        e.to_string(),
        "vms[0].devices[1]: unknown value \"vga\"; expected one of: \"debug-exit\", \"pc-testdev\""
    );
    let config = Config::from_json(
        br#"{"vms":[{"name":"a","memory_mib":64,"kernel":"k","devices":["pc-testdev","pc-testdev"]}]}"#,
    );
    let e = config.unwrap_err();
    assert!(
        e.to_string().contains(
            "vms[0].devices[1]: \"pc-testdev\" is already vms[0].devices[0]: list each device once"
        ),
        "{e}"
    );
}
