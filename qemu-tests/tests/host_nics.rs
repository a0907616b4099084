//! Host NICs beyond virtio-net and the e1000, and the operator's choice among several:
//!
//! - The Intel 82574L (`-device e1000e`, q35's usual NIC) takes a DHCP lease and the API
//!   answers through it; `net`, `pci` and `GET /api/v1/network` list it as the management
//!   uplink and an RTL8139 beside it as "no driver".
//! - With an e1000 and a virtio-net NIC, each on its own user network with its own
//!   `hostfwd` port, `network.interface` set to the virtio-net NIC's MAC (built into the
//!   image) makes the API answer through that NIC, not through the first one; set on the
//!   console to a PCI address no NIC has, the next boot warns and falls back to the first.
//!
//! Two machines, three boots.

use keel_qemu_tests::http::{self, Response};
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts, check};

fn get(m: &Machine, port: u16, path: &str) -> Response {
    let token = artifacts().api_token.clone();
    match http::request(port, "GET", path, Some(&token), None) {
        Ok(r) => r,
        Err(e) => m.fail(format!("GET {path} on port {port}: {e}")),
    }
}

/// The `host_nics` entries of `GET /api/v1/network`.
fn host_nics(m: &Machine, port: u16) -> Vec<serde_json::Value> {
    let r = get(m, port, "/api/v1/network");
    check!(m, r.status == 200, "network: {r:?}");
    let body: serde_json::Value = match serde_json::from_str(&r.body) {
        Ok(v) => v,
        Err(e) => m.fail(format!("network body is not JSON ({e}): {}", r.body)),
    };
    match body["host_nics"].as_array() {
        Some(nics) => nics.clone(),
        None => m.fail(format!("no host_nics in {}", r.body)),
    }
}

fn nic_with_driver<'a>(
    nics: &'a [serde_json::Value],
    driver: &str,
) -> Option<&'a serde_json::Value> {
    nics.iter().find(|n| n["driver"] == driver)
}

#[test]
fn e1000e_on_q35_serves_the_api() {
    let a = artifacts();
    let port = http::free_port();
    let mut m = Qemu::seabios(&a.image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .args([
            "-nic".to_owned(),
            http::nic_arg("e1000e", port),
            "-device".to_owned(),
            "rtl8139,mac=52:54:00:00:81:39".to_owned(),
        ])
        .spawn()
        .unwrap();
    m.expect_banner();
    let lease = http::await_api(&mut m, port);
    check!(m, lease.ends_with(", gateway 10.0.2.2"), "lease: {lease:?}");

    let system = get(&m, port, "/api/v1/system");
    check!(
        m,
        system.status == 200 && system.body.contains("10.0.2.15/24"),
        "system: {system:?}"
    );
    let nics = host_nics(&m, port);
    let Some(e1000e) = nic_with_driver(&nics, "e1000e") else {
        m.fail(format!("no e1000e in {nics:?}"));
    };
    check!(
        m,
        e1000e["state"] == "up"
            && e1000e["management"] == true
            && e1000e["link_up"] == true
            && e1000e["pci_id"] == "8086:10d3"
            && e1000e["mac"] == "52:54:00:12:34:56",
        "e1000e: {e1000e}"
    );
    let Some(rtl) = nics.iter().find(|n| n["pci_id"] == "10ec:8139") else {
        m.fail(format!("no RTL8139 in {nics:?}"));
    };
    check!(
        m,
        rtl["state"] == "no_driver" && rtl["driver"].is_null() && rtl["management"] == false,
        "rtl8139: {rtl}"
    );

    let net = m.command("net");
    check!(
        m,
        net.contains("nic:      e1000e 52:54:00:12:34:56")
            && net.contains("8086:10d3 e1000e 52:54:00:12:34:56 link up, management uplink")
            && net.contains("10ec:8139 no driver"),
        "net: {net}"
    );
    let pci = m.command("pci");
    check!(
        m,
        pci.lines()
            .any(|l| l.contains("8086:10d3") && l.trim_end().ends_with("[driver e1000e]"))
            && pci
                .lines()
                .any(|l| l.contains("10ec:8139") && l.trim_end().ends_with("[no driver]")),
        "pci: {pci}"
    );
}

#[test]
fn network_interface_picks_the_uplink_and_an_absent_one_falls_back() {
    const E1000_MAC: &str = "52:54:00:00:10:00";
    const VIRTIO_MAC: &str = "52:54:00:00:20:00";
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("keel.img");
    let mut config = keel_image::tls_cert::default_config(&a.api_token);
    config.network.interface = Some(VIRTIO_MAC.to_owned());
    appliance_image(
        None,
        &config.to_json_pretty(),
        &[],
        &image,
        "the image with network.interface",
    );

    let (e1000_port, virtio_port) = (http::free_port(), http::free_port());
    let netdev = |id: &str, port: u16| {
        format!(
            "user,id={id},hostfwd=tcp:127.0.0.1:{port}-:{}",
            http::GUEST_API_PORT
        )
    };
    let mut m = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args([
            "-netdev".to_owned(),
            netdev("first", e1000_port),
            "-device".to_owned(),
            format!("e1000,netdev=first,mac={E1000_MAC}"),
            "-netdev".to_owned(),
            netdev("second", virtio_port),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=second,mac={VIRTIO_MAC}"),
        ])
        .spawn()
        .unwrap();

    // Configured: the second NIC carries the API.
    m.expect_banner();
    http::await_api(&mut m, virtio_port);
    let nics = host_nics(&m, virtio_port);
    let (Some(e1000), Some(virtio)) = (
        nic_with_driver(&nics, "e1000"),
        nic_with_driver(&nics, "virtio-net"),
    ) else {
        m.fail(format!("e1000 and virtio-net expected in {nics:?}"));
    };
    check!(
        m,
        virtio["management"] == true && virtio["mac"] == VIRTIO_MAC,
        "virtio-net: {virtio}"
    );
    check!(
        m,
        e1000["management"] == false && e1000["mac"] == E1000_MAC && e1000["state"] == "up",
        "e1000: {e1000}"
    );
    let net = m.command("net");
    check!(
        m,
        net.contains(&format!("nic:      virtio-net {VIRTIO_MAC}"))
            && net.contains(&format!(
                "virtio-net {VIRTIO_MAC} link unknown, management uplink"
            ))
            && net.lines().any(|l| l
                .trim_end()
                .ends_with(&format!("e1000 {E1000_MAC} link up"))),
        "net: {net}"
    );

    // Refused on the console with its path, then an absent NIC saved: the next boot warns
    // and falls back to the first NIC, which then answers.
    let refused = m.command("config set network.interface eth0");
    check!(
        m,
        refused.contains("network.interface") && refused.contains("expected a NIC's MAC address"),
        "config set eth0: {refused}"
    );
    m.command("config set network.interface 00:1f.0");
    let saved = m.command("config save");
    check!(
        m,
        saved.contains("configuration saved as generation"),
        "config save: {saved}"
    );
    m.type_line("reboot");
    m.expect("rebooting...");
    // The boot messages up to the prompt: the warning is among them.
    let banner = m.expect_banner();
    check!(
        m,
        banner.text.contains(
            "warning: network.interface 00:1f.0 is not present (see `net` for the NICs \
             found); using the first usable NIC, e1000 52:54:00:00:10:00 at 00:"
        ),
        "no fallback warning in the boot messages:\n{}",
        banner.text
    );
    http::await_api(&mut m, e1000_port);
    let nics = host_nics(&m, e1000_port);
    check!(
        m,
        nic_with_driver(&nics, "e1000").is_some_and(|n| n["management"] == true),
        "after the fallback: {nics:?}"
    );
}
