//! What the machine is: QEMU's `-smbios` values reach the banner, the console's `system`
//! and `GET /api/v1/system`, under SeaBIOS (entry point found by the F-segment scan) and
//! under OVMF (through GRUB's EFI system table pointer and its configuration table). One
//! boot each, on the shared appliance image.

use keel_qemu_tests::http;
use keel_qemu_tests::{Machine, Qemu, artifacts, check};

/// The values QEMU puts into SMBIOS types 1 and 0.
const SMBIOS_ARGS: [&str; 4] = [
    "-smbios",
    "type=1,manufacturer=KeelTest,product=Rack9,serial=SN-4711",
    "-smbios",
    "type=0,vendor=TestBIOS,version=9.9,date=01/02/2026",
];

fn boot(qemu: Qemu) -> (Machine, u16) {
    let a = artifacts();
    let port = http::free_port();
    let mut m = qemu
        .defmt_elf(&a.elf)
        .args(SMBIOS_ARGS)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("machine") == Some("KeelTest Rack9, serial SN-4711"),
        "banner's machine line: {:?}\n{}",
        banner.field("machine"),
        banner.text
    );
    (m, port)
}

fn console_and_api_show_the_machine(m: &mut Machine, port: u16) {
    let out = m.command("system");
    for line in [
        "  vendor:       KeelTest",
        "  product:      Rack9",
        "  serial:       SN-4711",
        "  bios vendor:  TestBIOS",
        "  bios version: 9.9",
        "  bios date:    01/02/2026",
    ] {
        check!(
            m,
            out.lines().any(|l| l == line),
            "`system` lacks {line:?}:\n{out}"
        );
    }
    check!(
        m,
        out.lines()
            .any(|l| l.starts_with("  source:       SMBIOS ")),
        "`system` names no SMBIOS version:\n{out}"
    );
    check!(m, !out.contains("warning"), "`system` warns:\n{out}");

    http::await_api(m, port);
    let token = &artifacts().api_token;
    let r = http::request(port, "GET", "/api/v1/system", Some(token), None).expect("GET");
    check!(m, r.status == 200, "GET /api/v1/system: {r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON body");
    let hw = &body["hardware"];
    let expected = [
        ("vendor", "KeelTest"),
        ("product", "Rack9"),
        ("serial", "SN-4711"),
        ("bios_vendor", "TestBIOS"),
        ("bios_version", "9.9"),
        ("bios_date", "01/02/2026"),
    ];
    for (field, value) in expected {
        check!(m, hw[field] == value, "hardware.{field}: {hw}");
    }
    let source = hw["source"].as_str().unwrap_or("");
    check!(m, source.starts_with("SMBIOS "), "hardware.source: {hw}");
    // The console and the API name the same version.
    check!(
        m,
        out.contains(&format!("  source:       {source}")),
        "console and API disagree on the source: {source:?}\n{out}"
    );
}

#[test]
fn seabios_shows_the_smbios_values() {
    let (mut m, port) = boot(Qemu::seabios(&artifacts().image).machine("q35"));
    console_and_api_show_the_machine(&mut m, port);
}

#[test]
fn ovmf_shows_the_smbios_values() {
    let (mut m, port) = boot(Qemu::ovmf(&artifacts().image));
    console_and_api_show_the_machine(&mut m, port);
}
