//! The operator console's port: `console=ttyS1` on the kernel command line moves it to COM2,
//! and without `console=` an ACPI SPCR table naming COM2 (a fixture passed with
//! `-acpitable`) does the same. Both boot PVH (no firmware menu, quickest) with the harness's
//! console on COM2 and a file on COM1, where the defmt log moves. A third boots an image
//! whose grub.cfg the image builder wrote for `--console ttyS1` through SeaBIOS and GRUB.

use std::path::Path;

use keel_qemu_tests::{Machine, Qemu, artifacts, check};

/// Boots the kernel ELF through PVH with the console the harness drives on COM2.
fn boot_on_com2(cmdline: &str, extra: Vec<String>) -> Machine {
    let a = artifacts();
    Qemu::pvh(&a.elf)
        .append(cmdline)
        .console_on_com2()
        .args(["-nic".to_owned(), "user,model=virtio-net-pci".to_owned()])
        .args(extra)
        .spawn()
        .unwrap()
}

/// The console answers commands on COM2 and says it is there.
fn check_console_on_com2(m: &mut Machine, source_line: &str) {
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("console") == Some("ttyS1 (0x2f8) 115200"),
        "banner console field: {:?}",
        banner.field("console")
    );
    // The lease line comes after the banner and redraws the prompt; a command typed before
    // it would end at that prompt (seen in CI: `net` read only the lease line).
    m.expect("network: DHCP lease 10.0.2.15/24");
    m.expect_prompt();
    let help = m.command("help");
    check!(m, help.contains("net"), "help on COM2: {help}");
    let net = m.command("net");
    check!(m, net.contains("virtio"), "net on COM2: {net}");
    // COM1 got the notice before the move (in text), then the defmt log.
    let com1 = m.com2_bytes();
    let com1_text = String::from_utf8_lossy(&com1);
    check!(
        m,
        com1_text.contains(source_line),
        "COM1 lacks {source_line:?}: {com1_text:?}"
    );
    check!(
        m,
        !com1_text.contains("keel> "),
        "the prompt went to COM1 as well"
    );
}

#[test]
fn console_ttys1_moves_the_console_to_com2() {
    let mut m = boot_on_com2("console=ttyS1,115200", Vec::new());
    check_console_on_com2(
        &mut m,
        "console: moving to ttyS1 (0x2f8) 115200 (kernel command line)",
    );
}

/// A revision-2 SPCR table naming a 16550 at `port` on I/O ports, IRQ 3, 115200 baud, with a
/// correct checksum.
fn spcr_fixture(port: u16) -> Vec<u8> {
    let mut t = vec![0u8; 80];
    t[..4].copy_from_slice(b"SPCR");
    t[4..8].copy_from_slice(&80u32.to_le_bytes());
    t[8] = 2; // revision
    t[10..16].copy_from_slice(b"KEELTS");
    t[16..24].copy_from_slice(b"SPCRTEST");
    t[36] = 0; // interface type: full 16550
    t[40] = 1; // GAS: system I/O
    t[41] = 8; // register width
    t[43] = 1; // byte access
    t[44..52].copy_from_slice(&u64::from(port).to_le_bytes());
    t[52] = 1; // interrupt type: dual 8259
    t[53] = 3; // IRQ 3
    t[58] = 7; // 115200 baud
    let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

#[test]
fn an_spcr_table_naming_com2_moves_the_console_there() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("spcr.bin");
    std::fs::write(&table, spcr_fixture(0x2f8)).unwrap();
    let arg = format!("file={}", path_arg(&table));
    let mut m = boot_on_com2("", vec!["-acpitable".to_owned(), arg]);
    check_console_on_com2(
        &mut m,
        "console: moving to ttyS1 (0x2f8) 115200 (ACPI SPCR)",
    );
}

#[test]
fn an_image_built_for_ttys1_talks_on_com2_from_grub_on() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("console-ttys1.img");
    let console = keel_image::console::parse_console_option("ttyS1,115200").unwrap();
    let cmdline = keel_image::console::with_console(
        &keel_image::api_token::with_token("", &a.api_token),
        &console,
    );
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    keel_image::gpt_image::assemble_image_with_partitions(
        &a.elf,
        &[],
        &cmdline,
        None,
        &config,
        &[],
        &image,
    )
    .unwrap();
    let mut m = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .console_on_com2()
        .spawn()
        .unwrap();
    // GRUB's own menu line comes on COM2 too: its `serial` follows the console.
    m.expect("Booting `Keel'");
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("console") == Some("ttyS1 (0x2f8) 115200"),
        "banner console field: {:?}",
        banner.field("console")
    );
    let version = m.command("version");
    check!(
        m,
        version.contains("Keel 0.1.0"),
        "version on COM2: {version}"
    );
}

fn path_arg(path: &Path) -> String {
    // In QEMU option values a comma is written as two.
    path.to_string_lossy().replace(',', ",,")
}
