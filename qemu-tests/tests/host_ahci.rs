//! Keel on a SATA disk: `keel.img` on port 0 of q35's AHCI controller (ICH9) under SeaBIOS,
//! with the kernel's own AHCI driver.
//!
//! - The banner names the AHCI boot disk (`disk: ahci … at 00:1f.2 port 0`) and its guest
//!   store; `store ls`/`store sum` read the store (a 32 MiB file: sequential read
//!   throughput) against CRC32s computed here; a configuration saved on the console survives a
//!   reboot; a second, blank SATA disk on port 1 is listed by `disk` under "host disks:" with
//!   why it is not Keel's, and is never written; an empty CD-ROM drive (ATAPI) on port 2 is
//!   listed as not a disk. The same image then boots from virtio-blk
//!   for the figures beside AHCI (printed to stderr).
//! - Power cuts during `config save` on AHCI (`power_cut`'s loop, 8 cuts): never a corrupt
//!   configuration.

use std::path::Path;
use std::time::{Duration, Instant};

use keel_qemu_tests::power_cut::{self, shown};
use keel_qemu_tests::{Machine, Qemu, artifacts, check};
use regex::Regex;

/// Size of the large store file read for throughput.
const BIG_FILE_BYTES: usize = 32 * 1024 * 1024;

/// Power cuts in the AHCI power-cut test (override with `KEEL_AHCI_POWER_CUTS`).
const POWER_CUTS: usize = 8;

/// Boots `image` writable on AHCI port 0, with `blank` on port 1 and an empty CD-ROM drive
/// (ATAPI) on port 2 when given; no NIC.
fn boot_ahci(image: &Path, blank: Option<&Path>) -> Machine {
    let mut q = Qemu::ahci_disk(image)
        .defmt_elf(&artifacts().elf)
        .writable_disk()
        .args(["-nic", "none"]);
    if let Some(blank) = blank {
        let drive = format!(
            "file={},format=raw,if=none,id=blank",
            blank.to_string_lossy().replace(',', ",,")
        );
        q = q.args([
            "-drive",
            &drive,
            "-device",
            "ide-hd,drive=blank,bus=ide.1",
            "-device",
            "ide-cd,bus=ide.2",
        ]);
    }
    q.spawn().unwrap()
}

/// `config set hostname <name>` and `config save`; returns the save's wall-clock time.
fn save_hostname(m: &mut Machine, name: &str) -> Duration {
    let set = m.command(&format!("config set hostname {name}"));
    check!(m, set.contains(&format!("-> \"{name}\"")), "{set}");
    let start = Instant::now();
    let save = m.command("config save");
    let took = start.elapsed();
    check!(
        m,
        save.contains("configuration saved as generation"),
        "{save}"
    );
    took
}

/// `store sum` of `name`, checked against `bytes`; returns MB/s.
fn read_file(m: &mut Machine, name: &str, bytes: &[u8]) -> f64 {
    let expected = format!(
        "{name}: {} bytes, crc32 {:08x}",
        bytes.len(),
        crc32fast::hash(bytes)
    );
    let start = Instant::now();
    let out = m.command(&format!("store sum {name}"));
    let took = start.elapsed();
    check!(
        m,
        out.contains(&expected),
        "expected {expected:?}, got {out:?}"
    );
    bytes.len() as f64 / 1e6 / took.as_secs_f64()
}

#[test]
fn keel_boots_from_sata_keeps_its_configuration_and_lists_the_other_disk() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let big = artifacts::noise(BIG_FILE_BYTES, 0x5a7a);
    let notes = b"on a SATA disk\n".to_vec();
    let image = artifacts::image_with_store(
        tmp.path(),
        &[("big.bin", big.clone()), ("notes.txt", notes.clone())],
    );
    let blank = tmp.path().join("blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(16 * 1024 * 1024))
        .unwrap();

    let started = Instant::now();
    let mut m = boot_ahci(&image, Some(&blank));
    let banner = m.expect_banner();
    let disk_line = Regex::new(
        r"disk: ahci QEMU HARDDISK, serial \S+ at 00:1f\.2 port 0, \d+ MiB; guest store FAT",
    )
    .unwrap();
    check!(
        m,
        disk_line.is_match(&banner.text) && !banner.text.contains("WARNING"),
        "no 'disk: ahci … at 00:1f.2 port 0' line, or a warning:\n{}",
        banner.text
    );
    let (generation, _) = power_cut::loaded_generation(&m, &banner.text);
    check!(m, generation == 1, "{}", banner.text);
    let wall = started.elapsed();
    let boot_ms = banner.number("boot time").unwrap_or(0);

    let disk = m.command("disk");
    let listed = disk.split("host disks:").nth(1).unwrap_or_default();
    let blank_row =
        Regex::new(r"ahci at 00:1f\.2 port 1, QEMU HARDDISK, serial \S+, 16 MiB: not used \(.+\)")
            .unwrap();
    check!(
        m,
        blank_row.is_match(listed),
        "the blank disk on port 1 is not listed with a reason:\n{disk}"
    );
    check!(
        m,
        listed.contains(
            "ahci at 00:1f.2 port 2: failed (not a disk: ATAPI device (optical drive) \
             (signature 0xeb140101))"
        ),
        "the CD-ROM drive on port 2 is not listed as not a disk:\n{disk}"
    );
    check!(
        m,
        listed.contains("ahci at 00:1f.2 port 0, QEMU HARDDISK")
            && listed.contains(": Keel's disk"),
        "Keel's disk not listed:\n{disk}"
    );

    let ls = m.command("store ls");
    for (name, len) in [("big.bin", big.len()), ("notes.txt", notes.len())] {
        let row = ls.lines().find(|l| l.trim_start().starts_with(name));
        let size = row.and_then(|r| r.split_whitespace().last());
        check!(
            m,
            size == Some(len.to_string().as_str()),
            "store ls: {name} should be {len} bytes:\n{ls}"
        );
    }
    read_file(&mut m, "notes.txt", &notes);
    let ahci_mbps = read_file(&mut m, "big.bin", &big);

    let save = save_hostname(&mut m, "sata1");
    m.type_line("reboot");
    m.expect("rebooting...");
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("sata1")
            && power_cut::loaded_generation(&m, &banner.text).0 == 2,
        "after reboot:\n{}",
        banner.text
    );
    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"sata1\""), "{show}");
    drop(m);
    let blank_bytes = std::fs::read(&blank).unwrap();
    assert!(
        blank_bytes.iter().all(|&b| b == 0),
        "the blank disk was written"
    );

    // The same image on virtio-blk, for the figures beside AHCI.
    let started = Instant::now();
    let mut v = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .args(["-nic", "none"])
        .spawn()
        .unwrap();
    let banner = v.expect_banner();
    let virtio_wall = started.elapsed();
    let virtio_boot_ms = banner.number("boot time").unwrap_or(0);
    let virtio_mbps = read_file(&mut v, "big.bin", &big);
    let virtio_save = save_hostname(&mut v, "virtio1");
    eprintln!(
        "figures: SeaBIOS q35 AHCI: boot time {boot_ms} ms (wall clock to prompt {wall:.1?}), \
         config save {save:.0?}, store sum 32 MiB {ahci_mbps:.1} MB/s; SeaBIOS pc virtio-blk: \
         boot time {virtio_boot_ms} ms (wall {virtio_wall:.1?}), config save {virtio_save:.0?}, \
         store sum {virtio_mbps:.1} MB/s"
    );
}

#[test]
fn power_cuts_during_saves_on_ahci_never_lose_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let image = artifacts::image_with_store(tmp.path(), &[]);
    let cuts = std::env::var("KEEL_AHCI_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POWER_CUTS);
    power_cut::saves_survive_power_cuts(&image, cuts, |image| boot_ahci(image, None));
}
