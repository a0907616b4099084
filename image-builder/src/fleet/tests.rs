use std::path::{Path, PathBuf};

use serde_json::json;

use super::config_set::{self, ConfigOutcome};
use super::inventory::{FleetError, default_inventory_path_from, parse_inventory};
use super::placement::{self, Candidate};
use super::report::{self, ApplianceStatus, StatusRow, VmListRow};

fn inv(text: &str) -> Result<super::Inventory, FleetError> {
    parse_inventory(text, Path::new("/tmp/fleet.toml"))
}

#[test]
fn inventory_reads_names_urls_and_optional_tokens_in_order() {
    let inventory = inv(r#"
        [[appliance]]
        name = "rack1-a"
        url = "http://10.0.0.5"
        token = "secret-a"

        [[appliance]]
        name = "rack1-b"
        url = "http://127.0.0.1:8081/"
    "#)
    .unwrap();
    assert_eq!(inventory.appliances.len(), 2);
    assert_eq!(inventory.appliances[0].name, "rack1-a");
    assert_eq!(inventory.appliances[0].token.as_deref(), Some("secret-a"));
    assert_eq!(inventory.appliances[1].url, "http://127.0.0.1:8081/");
    assert_eq!(inventory.appliances[1].token, None);
    assert_eq!(
        inventory.find("rack1-b").unwrap().url,
        "http://127.0.0.1:8081/"
    );
    assert!(inventory.find("rack1-c").is_none());
    assert_eq!(inventory.names(), "rack1-a, rack1-b");
}

#[test]
fn inventory_refusals_name_the_file_and_the_entry() {
    let cases = [
        ("", "no appliances"),
        (
            "[[appliance]]\nname = \"a\"\nurl = \"ftp://x\"\n",
            "appliance[0] \"a\": url \"ftp://x\" is not an https:// URL",
        ),
        (
            "[[appliance]]\nname = \"a\"\nurl = \"https://x\"\nfingerprint = \"AB:CD\"\n",
            "appliance[0] \"a\": fingerprint \"AB:CD\" is not a SHA-256 fingerprint",
        ),
        (
            "[[appliance]]\nname = \"a\"\nurl = \"http://x/api\"\n",
            "has a path",
        ),
        (
            "[[appliance]]\nname = \"a\"\nurl = \"http://x:99999\"\n",
            "port that is not a number",
        ),
        (
            "[[appliance]]\nname = \"\"\nurl = \"http://x\"\n",
            "appliance[0]: name \"\"",
        ),
        (
            "[[appliance]]\nname = \"auto\"\nurl = \"http://x\"\n",
            "the name \"auto\" is reserved",
        ),
        (
            "[[appliance]]\nname = \"a\"\nurl = \"http://x\"\n[[appliance]]\nname = \"a\"\nurl = \"http://y\"\n",
            "appliance[1]: the name \"a\" is used by appliance[0] already",
        ),
    ];
    for (text, expected) in cases {
        let err = inv(text).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, FleetError::Invalid { .. }),
            "{text:?}: {message}"
        );
        assert!(message.contains("/tmp/fleet.toml"), "{message}");
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn inventory_parse_errors_carry_the_place_and_unknown_keys_are_refused() {
    let err = inv("[[appliance]]\nname = \"a\"\nurl = \"http://x\"\ntoken = 5\n").unwrap_err();
    assert!(matches!(err, FleetError::Parse { .. }));
    assert!(err.to_string().contains("line 4"), "{err}");
    let err = inv("[[appliance]]\nname = \"a\"\nurl = \"http://x\"\ntokn = \"t\"\n").unwrap_err();
    assert!(err.to_string().contains("tokn"), "{err}");
    let err = inv("[[appliance]]\nname = \"a\"\n").unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
}

#[test]
fn a_missing_inventory_says_how_to_make_one() {
    let err = super::load_inventory(Path::new("/nonexistent/keel/fleet.toml")).unwrap_err();
    assert!(matches!(err, FleetError::Read { .. }));
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/keel/fleet.toml"),
        "{message}"
    );
    assert!(message.contains("[[appliance]]"), "{message}");
}

#[test]
fn default_inventory_path_follows_xdg() {
    assert_eq!(
        default_inventory_path_from(Some("/x/cfg".into()), Some("/home/op".into())).unwrap(),
        PathBuf::from("/x/cfg/keel/fleet.toml")
    );
    // A relative XDG_CONFIG_HOME is invalid by the spec and ignored.
    assert_eq!(
        default_inventory_path_from(Some("cfg".into()), Some("/home/op".into())).unwrap(),
        PathBuf::from("/home/op/.config/keel/fleet.toml")
    );
    assert!(matches!(
        default_inventory_path_from(None, None),
        Err(FleetError::NoDefaultPath)
    ));
}

fn system(version: &str, free_mib: u64) -> serde_json::Value {
    json!({
        "hostname": "keel", "version": version, "uptime_ms": 5, "cpus": 2,
        "memory": {"total_bytes": 1024u64 << 20, "free_bytes": free_mib << 20},
        "virtualization": "AMD-V with NPT",
        "network": {"mac": "52:54:00:12:34:56", "dhcp": true, "address": null,
                    "gateway": null, "dns": [], "lease_events": 0},
        "a_field_from_a_newer_keel": 1,
    })
}

fn vms() -> serde_json::Value {
    json!({"vms": [
        {"name": "web", "number": 1, "configured": true, "source": "store:vmlinuz",
         "state": "running", "stop_reason": null, "memory_mib": 256, "vcpus": 2,
         "uptime_s": 3, "autostart": true},
        {"name": "db", "number": 2, "configured": true, "source": "store:vmlinuz",
         "state": "idle", "stop_reason": null, "memory_mib": 128, "vcpus": 1,
         "uptime_s": 3, "autostart": false},
        {"name": "old", "number": 3, "configured": true, "source": "store:vmlinuz",
         "state": "stopped", "stop_reason": "guest powered off", "memory_mib": 64,
         "vcpus": 1, "uptime_s": null, "autostart": false},
    ]})
}

#[test]
fn status_counts_live_vms_and_the_table_shows_down_appliances_with_their_reason() {
    let status = ApplianceStatus::from_bodies(&system("0.1.0", 700), &vms()).unwrap();
    assert_eq!((status.vms_running, status.vms_total), (2, 3));
    let rows = vec![
        StatusRow {
            name: "rack1-a".into(),
            url: "http://10.0.0.5".into(),
            status: Ok(status),
        },
        StatusRow {
            name: "b".into(),
            url: "http://10.0.0.6".into(),
            status: Err("unreachable: http://10.0.0.6: timed out after 3 s".into()),
        },
    ];
    let table = report::status_table(&rows, false);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "NAME     URL              STATE  VERSION  CPUS  FREE MEM  VMS RUN/ALL  VIRTUALIZATION"
    );
    assert_eq!(
        lines[1],
        "rack1-a  http://10.0.0.5  up     0.1.0    2     700 MiB   2/3          AMD-V with NPT"
    );
    assert_eq!(
        lines[2],
        "b        http://10.0.0.6  DOWN   -        -     -         -            unreachable: http://10.0.0.6: timed out after 3 s"
    );
    let json = report::status_json(&rows);
    assert_eq!(json[0]["reachable"], true);
    assert_eq!(json[0]["memory"]["free_bytes"], 700u64 << 20);
    assert_eq!(json[0]["vms_running"], 2);
    assert_eq!(json[1]["reachable"], false);
    assert!(json[1]["error"].as_str().unwrap().contains("timed out"));
}

#[test]
fn the_wide_status_shows_vendor_product_and_serial() {
    let mut with_hardware = system("0.2.0", 700);
    with_hardware["hardware"] = json!({
        "source": "SMBIOS 3.0", "vendor": "Dell Inc.", "product": "PowerEdge R650",
        "serial": "7XK2JQ3", "bios_vendor": "Dell Inc.", "bios_version": "1.9.2",
        "bios_date": null,
    });
    // An older Keel (no `hardware`) and one whose firmware names no vendor or serial.
    let mut partial = system("0.2.0", 500);
    partial["hardware"] = json!({"source": "SMBIOS 2.8", "vendor": null, "product": "Rack9",
                                 "serial": null, "bios_vendor": null, "bios_version": null,
                                 "bios_date": null});
    let row = |name: &str, body: &serde_json::Value| StatusRow {
        name: name.into(),
        url: format!("http://{name}"),
        status: ApplianceStatus::from_bodies(body, &vms()),
    };
    let rows = vec![
        row("r650", &with_hardware),
        row("old", &system("0.1.0", 600)),
        row("q", &partial),
        StatusRow {
            name: "gone".into(),
            url: "http://gone".into(),
            status: Err("unreachable: refused".into()),
        },
    ];
    let table = report::status_table(&rows, true);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines,
        [
            "NAME  URL          STATE  VERSION  CPUS  FREE MEM  VMS RUN/ALL  VENDOR     PRODUCT         SERIAL   VIRTUALIZATION",
            "r650  http://r650  up     0.2.0    2     700 MiB   2/3          Dell Inc.  PowerEdge R650  7XK2JQ3  AMD-V with NPT",
            "old   http://old   up     0.1.0    2     600 MiB   2/3          -          -               -        AMD-V with NPT",
            "q     http://q     up     0.2.0    2     500 MiB   2/3          -          Rack9           -        AMD-V with NPT",
            "gone  http://gone  DOWN   -        -     -         -            -          -               -        unreachable: refused",
        ]
    );
    assert!(!report::status_table(&rows, false).contains("VENDOR"));
    let json = report::status_json(&rows);
    assert_eq!(
        json[0]["hardware"],
        json!({"vendor": "Dell Inc.", "product": "PowerEdge R650", "serial": "7XK2JQ3",
               "bios_version": "1.9.2"})
    );
    assert_eq!(json[1]["hardware"]["vendor"], serde_json::Value::Null);
}

#[test]
fn an_answer_of_the_wrong_shape_is_a_reason_not_a_panic() {
    let err = ApplianceStatus::from_bodies(&json!({"hostname": "x"}), &vms()).unwrap_err();
    assert!(err.contains("GET /api/v1/system"), "{err}");
    let err = ApplianceStatus::from_bodies(&system("0.1.0", 1), &json!([1, 2])).unwrap_err();
    assert!(err.contains("GET /api/v1/vms"), "{err}");
}

#[test]
fn vm_list_names_each_vms_appliance_and_keeps_down_ones_visible() {
    let rows = vec![
        VmListRow {
            appliance: "a".into(),
            vms: report::parse_vms(&vms()),
        },
        VmListRow {
            appliance: "b".into(),
            vms: Err("unreachable: connection refused".into()),
        },
    ];
    let table = report::vm_table(&rows);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert_eq!(
        lines[1],
        "a          web  running  256 MiB  2      store:vmlinuz"
    );
    assert!(lines[4].starts_with("b          -    DOWN"), "{table}");
    assert!(
        lines[4].ends_with("unreachable: connection refused"),
        "{table}"
    );
    let json = report::vm_json(&rows);
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert_eq!(json[2]["appliance"], "a");
    assert_eq!(json[2]["state"], "stopped");
    assert_eq!(json[3]["error"], "unreachable: connection refused");
}

fn candidate(name: &str, free_mib: u64, store: &[&str]) -> Candidate {
    Candidate {
        name: name.into(),
        answer: Ok((
            report::parse_system(&system("0.1.0", free_mib)).unwrap(),
            report::parse_store(&json!({"files": store
                .iter()
                .map(|f| json!({"name": f, "size": 10}))
                .collect::<Vec<_>>()}))
            .unwrap(),
        )),
    }
}

#[test]
fn placement_picks_most_free_memory_among_those_with_the_files() {
    let candidates = vec![
        candidate("small", 300, &["vmlinuz", "initrd.cpio"]),
        // Most memory of all, but no initrd: passed over.
        candidate("no-initrd", 900, &["vmlinuz"]),
        candidate("big", 700, &["initrd.cpio", "vmlinuz", "other"]),
        Candidate {
            name: "down".into(),
            answer: Err("unreachable: connection refused".into()),
        },
    ];
    let placed = placement::choose(&candidates, &["vmlinuz", "initrd.cpio"], 128).unwrap();
    assert_eq!(placed.chosen, "big");
    assert_eq!(placed.free_bytes, 700 << 20);
    assert_eq!(
        placed.passed_over,
        vec![
            ("small".to_string(), "300 MiB free".to_string()),
            (
                "no-initrd".to_string(),
                "no initrd.cpio in its store".to_string()
            ),
            (
                "down".to_string(),
                "unreachable: connection refused".to_string()
            ),
        ]
    );
    let why = placed.explain(&["vmlinuz", "initrd.cpio"]);
    assert!(
        why.starts_with(
            "big: most free memory (700 MiB) among the appliances with vmlinuz and initrd.cpio"
        ),
        "{why}"
    );
}

#[test]
fn placement_breaks_ties_by_inventory_order_and_needs_room_for_the_vm() {
    let candidates = vec![
        candidate("first", 500, &["k"]),
        candidate("second", 500, &["k"]),
    ];
    assert_eq!(
        placement::choose(&candidates, &["k"], 64).unwrap().chosen,
        "first"
    );
    let err = placement::choose(&candidates, &["k"], 600).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no appliance can take the VM: first: 500 MiB free, the VM needs 600 MiB; \
         second: 500 MiB free, the VM needs 600 MiB"
    );
    let err = placement::choose(&candidates, &["absent"], 64).unwrap_err();
    assert!(
        err.to_string().contains("first: no absent in its store"),
        "{err}"
    );
}

#[test]
fn config_set_edits_locally_and_reports_per_appliance() {
    let current = keel_config::Config::default().to_value();
    let (new, changes) = config_set::edited(&current, "hostname", "rack1-a")
        .unwrap()
        .unwrap();
    assert_eq!(new.hostname, "rack1-a");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, "hostname");
    // Setting what is there already sends nothing.
    assert_eq!(
        config_set::edited(&new.to_value(), "hostname", "rack1-a").unwrap(),
        None
    );
    let err = config_set::edited(&current, "hostnme", "x").unwrap_err();
    assert!(err.contains("hostnme: no such setting"), "{err}");

    let outcomes = vec![
        ("a".to_string(), ConfigOutcome::Changed(changes)),
        ("b".to_string(), ConfigOutcome::Unchanged),
        (
            "c".to_string(),
            ConfigOutcome::Refused("422 hostname: too long".into()),
        ),
        (
            "d".to_string(),
            ConfigOutcome::Failed("unreachable: timed out".into()),
        ),
    ];
    let summary = config_set::summary(&outcomes);
    let lines: Vec<&str> = summary.lines().collect();
    assert!(lines[0].starts_with("a: changed: hostname"), "{summary}");
    assert!(lines[0].contains("rack1-a"), "{summary}");
    assert_eq!(lines[1], "b: unchanged (already set)");
    assert_eq!(lines[2], "c: refused: 422 hostname: too long");
    assert_eq!(lines[3], "d: not changed: unreachable: timed out");
    assert_eq!(lines[4], "2 of 4 appliances have the new value");
    let json = config_set::summary_json(&outcomes);
    assert_eq!(json[0]["result"], "changed");
    assert_eq!(json[0]["changes"][0]["path"], "hostname");
    assert_eq!(json[2]["result"], "refused");
}

/// Appliances that accept connections but never answer (a listener nobody accepts from: the
/// kernel completes the handshake into its backlog): each is a row saying so, and the
/// queries run side by side, so three of them cost one timeout, not three.
#[test]
fn hung_appliances_cost_one_timeout_in_parallel_and_are_rows() {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let appliances = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| super::InventoryEntry {
            name: format!("hung{i}"),
            url: format!("http://{}", l.local_addr().unwrap()),
            token: None,
            fingerprint: None,
        })
        .collect();
    let inventory = super::Inventory { appliances };
    let timeout = std::time::Duration::from_millis(700);
    let fleet = super::commands::Fleet::with_pins(&inventory, timeout, None);
    let start = std::time::Instant::now();
    let rows = fleet.status();
    let took = start.elapsed();
    assert!(took >= timeout, "answered before the timeout: {took:?}");
    assert!(took < timeout * 2, "queries were not parallel: {took:?}");
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.name, format!("hung{i}"));
        let reason = row.status.as_ref().unwrap_err();
        assert!(reason.contains(&row.url), "{reason}");
    }
    // A change is not made anywhere, and every appliance says why.
    let outcomes = fleet.config_set("hostname", "x");
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, ConfigOutcome::Failed(_))),
        "{outcomes:?}"
    );
    drop(listeners);
}
