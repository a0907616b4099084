//! Guest networking over the API against the mock: `GET /api/v1/network` (token, JSON shape,
//! guest ports and leases of running VMs), VMs created with `nics` (derived and explicit MACs
//! in the VM view) and refused ones (unknown network, multicast, zero and duplicate MACs,
//! too many NICs) with their paths, changing nothing.

use alloc::format;
use alloc::string::String;

use serde_json::{Value, json};

use keel_config::mac::derived_mac;

use super::super::mock::Mock;
use super::{body, error_of, get, raw, send, send_raw};
use crate::http::response::Response;

fn post(mock: &mut Mock, path: &str, json_body: &str) -> Response {
    send(mock, "POST", path, Some(json_body))
}

/// A switch port as the mock reports it (counters grow with the id).
fn port(id: u64, kind: &str, name: &str, vm: Value, nic: Value, mac: Value) -> Value {
    let n = id + 1;
    json!({
        "id": id, "kind": kind, "name": name, "vm": vm, "nic": nic, "mac": mac,
        "rx_frames": 10 * n, "rx_bytes": 1000 * n, "tx_frames": 12 * n, "tx_bytes": 1300 * n,
        "dropped_ingress_full": 0, "dropped_egress_full": 0,
        "dropped_forged_source": 0, "dropped_bad_frame": 0
    })
}

#[test]
fn network_needs_the_token() {
    let mut mock = Mock::default();
    for token in [None, Some("wrong")] {
        let r = send_raw(&mut mock, &raw("GET", "/api/v1/network", token, None));
        assert_eq!(error_of(&r).0, 401, "{token:?}");
    }
    let r = send(&mut mock, "POST", "/api/v1/network", Some("{}"));
    assert_eq!(
        (r.status, r.header("allow")),
        (405, Some("GET")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn network_shows_the_host_nics_both_switches_and_the_internal_network() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/network");
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r),
        json!({
            "host_nics": [
                {
                    "pci_address": "00:03.0", "pci_id": "8086:100e", "driver": "e1000",
                    "mac": "52:54:00:12:34:56", "state": "up", "error": null, "link_up": true,
                    "management": true
                },
                {
                    "pci_address": "00:04.0", "pci_id": "10ec:8139", "driver": null,
                    "mac": null, "state": "no_driver", "error": null, "link_up": null,
                    "management": false
                }
            ],
            "switches": [
                {
                    "network": "bridged",
                    "ports": [
                        port(0, "uplink", "e1000 52:54:00:12:34:56", Value::Null, Value::Null, Value::Null),
                        port(1, "appliance", "appliance", Value::Null, Value::Null, json!("52:54:00:12:34:56"))
                    ],
                    "mac_table": [ { "mac": "52:54:00:12:34:56", "port": 1, "age_secs": 0 } ]
                },
                {
                    "network": "internal",
                    "ports": [
                        port(0, "appliance", "appliance", Value::Null, Value::Null, json!("02:4b:45:45:4c:00"))
                    ],
                    "mac_table": [ { "mac": "02:4b:45:45:4c:00", "port": 0, "age_secs": 3 } ]
                }
            ],
            "internal": { "address": "10.99.0.1/24", "dhcp": true, "leases": [] }
        })
    );
    assert!(mock.changes.is_empty());
}

#[test]
fn a_vm_with_nics_shows_them_and_its_switch_ports() {
    let mut mock = Mock::default();
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"net","kernel":"vmlinuz-6.1","memory_mib":64,"nics":[
            {"network":"bridged"},{"network":"internal","mac":"52:54:00:AA:BB:CC"}]}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let derived = derived_mac("keel-test", "net", 0).to_string();
    let zeros = json!({
        "rx_frames": 0, "rx_bytes": 0, "tx_frames": 0, "tx_bytes": 0,
        "tx_dropped": 0, "tx_bad": 0, "rx_dropped": 0
    });
    let nic = |index: u32, network: &str, mac: &str| {
        let mut v = json!({ "index": index, "network": network, "mac": mac });
        v.as_object_mut()
            .unwrap()
            .extend(zeros.as_object().unwrap().clone());
        v
    };
    let vm = body(&r);
    assert_eq!(
        vm["nics"],
        json!([
            nic(0, "bridged", &derived),
            nic(1, "internal", "52:54:00:aa:bb:cc")
        ])
    );
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/net")), vm);
    // The configuration keeps what was given: no MAC for the first, lower case for the second.
    let saved = serde_json::to_value(&mock.config.vms.last().unwrap().nics).unwrap();
    assert_eq!(
        saved,
        json!([{"network": "bridged"}, {"network": "internal", "mac": "52:54:00:aa:bb:cc"}])
    );
    // Defined only: no ports yet.
    let network = body(&get(&mut mock, "/api/v1/network"));
    assert_eq!(network["switches"][0]["ports"].as_array().unwrap().len(), 2);
    // Running: a guest port on each switch, its MAC learned, a lease on internal.
    assert_eq!(post(&mut mock, "/api/v1/vms/net/start", "").status, 200);
    let network = body(&get(&mut mock, "/api/v1/network"));
    assert_eq!(
        network["switches"][0]["ports"][2],
        port(
            2,
            "guest",
            "net nic0",
            json!("net"),
            json!(0),
            json!(derived)
        )
    );
    assert_eq!(
        network["switches"][1]["ports"][1],
        port(
            1,
            "guest",
            "net nic1",
            json!("net"),
            json!(1),
            json!("52:54:00:aa:bb:cc")
        )
    );
    assert_eq!(
        network["switches"][1]["mac_table"][1],
        json!({ "mac": "52:54:00:aa:bb:cc", "port": 1, "age_secs": 1 })
    );
    assert_eq!(
        network["internal"]["leases"],
        json!([{ "mac": "52:54:00:aa:bb:cc", "address": "10.99.0.100", "expires_in_secs": 3500 }])
    );
    // VMs without NICs show an empty list.
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/web"))["nics"], json!([]));
    assert_eq!(mock.changes, ["create net", "start net"]);
}

#[test]
fn create_refuses_bad_nics_with_their_paths() {
    let mut mock = Mock::default();
    let taken = r#"{"name":"one","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","mac":"52:54:00:aa:bb:cc"}]}"#;
    assert_eq!(post(&mut mock, "/api/v1/vms", taken).status, 201);
    mock.changes.clear();
    let before = mock.config.clone();
    let five = format!(
        r#"{{"name":"a","kernel":"k","memory_mib":64,"nics":[{}]}}"#,
        [r#"{"network":"internal"}"#; 5].join(",")
    );
    for (json_body, problems) in [
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"nat"}]}"#,
            json!([{"path": "nics[0].network", "message": "unknown value \"nat\"; expected one of: \"bridged\", \"internal\""}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","mac":"52:54:00:aa"}]}"#,
            json!([{"path": "nics[0].mac", "message": "invalid value string \"52:54:00:aa\": expected a MAC address such as 52:54:00:12:34:56"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","mac":"01:00:5e:00:00:01"}]}"#,
            json!([{"path": "nics[0].mac", "message": "01:00:5e:00:00:01 is a multicast address; a NIC needs a unicast MAC"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","mac":"00:00:00:00:00:00"}]}"#,
            json!([{"path": "nics[0].mac", "message": "00:00:00:00:00:00 is not an address; a NIC needs a unicast MAC (or none, for a derived one)"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","mac":"02:00:00:00:00:01"},{"network":"internal","mac":"02:00:00:00:00:01"}]}"#,
            json!([{"path": "nics[1].mac", "message": "02:00:00:00:00:01 is already vms[0].nics[0]'s MAC"}]),
        ),
        (
            &five,
            json!([{"path": "nics", "message": "at most 4 NICs per VM (it lists 5)"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"nics":[{"network":"bridged","vlan":7}]}"#,
            json!([{"path": "nics[0].vlan", "message": "unknown field; expected one of: network, mac"}]),
        ),
        // Another VM's MAC: found in the whole configuration, so the paths are absolute.
        (
            r#"{"name":"two","kernel":"k","memory_mib":64,"nics":[{"network":"internal","mac":"52:54:00:AA:BB:CC"}]}"#,
            json!([{"path": "vms[3].nics[0].mac", "message": "52:54:00:aa:bb:cc is already vms[2].nics[0]'s MAC"}]),
        ),
    ] {
        let r = post(&mut mock, "/api/v1/vms", json_body);
        let (status, message) = error_of(&r);
        assert_eq!(status, 422, "{json_body}: {message}");
        assert_eq!(body(&r)["errors"], problems, "{json_body}");
    }
    assert!(mock.changes.is_empty());
    assert_eq!(mock.config, before);
}

#[test]
fn the_internal_network_follows_the_configuration() {
    let mut mock = Mock::default();
    mock.config.network.internal.address = core::net::Ipv4Addr::new(192, 168, 77, 1);
    mock.config.network.internal.prefix = 25;
    mock.config.network.internal.dhcp = false;
    let internal = &body(&get(&mut mock, "/api/v1/network"))["internal"];
    assert_eq!(
        internal,
        &json!({ "address": "192.168.77.1/25", "dhcp": false, "leases": [] })
    );
}
