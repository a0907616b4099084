//! Keel on an NVMe disk (QEMU `-device nvme`), end to end, with the kernel's own NVMe driver:
//!
//! - SeaBIOS (`-M pc`): a blank NVMe disk and one of 4096-byte sectors sit before Keel's on
//!   PCI; the banner names the NVMe boot disk and its guest store, `disk` lists the blank one
//!   under "host disks:" with why it is not Keel's and the other as failed, naming its size, `store ls`/`store sum` read the store (a 64 MiB file: sequential
//!   read throughput), and a `config save` survives a reboot. The same image then boots from
//!   virtio-blk for the figures beside it.
//! - OVMF (`-M q35`): the same checks without the second disk and the large file.
//! - Power cuts during `config save` on NVMe: never a corrupt configuration.
//!
//! Figures (boot time, save time, read throughput) are printed to stderr.

use std::time::{Duration, Instant};

use keel_qemu_tests::machine::scaled;
use keel_qemu_tests::power_cut::{self, shown};
use keel_qemu_tests::{Machine, Qemu, artifacts, check};
use regex::Regex;

/// Size of the large store file read for throughput.
const BIG_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Power cuts in the NVMe power-cut test (each about 2 s).
const POWER_CUTS: usize = 8;

/// Waits for the banner and the prompt; checks the boot-disk line: NVMe, its location, the
/// store mounted. Returns the banner's boot time in ms.
fn check_nvme_banner(m: &mut Machine) -> u64 {
    let banner = m.expect_banner();
    let re = Regex::new(r"disk: nvme .* at \S+ nsid 1, \d+ MiB; guest store FAT").unwrap();
    check!(
        m,
        re.is_match(&banner.text),
        "no NVMe boot disk line:\n{}",
        banner.text
    );
    check!(
        m,
        !banner.text.contains("WARNING"),
        "banner:\n{}",
        banner.text
    );
    banner.number("boot time").unwrap_or(0)
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

/// Reboots and checks the saved hostname came back.
fn reboot_and_check_hostname(m: &mut Machine, name: &str) {
    m.type_line("reboot");
    m.expect("rebooting...");
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some(name),
        "after reboot:\n{}",
        banner.text
    );
    let show = m.command("config show");
    check!(
        m,
        shown(&show, "hostname") == Some(format!("\"{name}\"").as_str()),
        "{show}"
    );
}

/// `store sum` of the big file; returns MB/s.
fn read_big_file(m: &mut Machine, bytes: &[u8]) -> f64 {
    let expected = format!(
        "big.bin: {} bytes, crc32 {:08x}",
        bytes.len(),
        crc32fast::hash(bytes)
    );
    let start = Instant::now();
    let out = m.command("store sum big.bin");
    let took = start.elapsed();
    check!(
        m,
        out.contains(&expected),
        "expected {expected:?}, got {out:?}"
    );
    bytes.len() as f64 / 1e6 / took.as_secs_f64()
}

#[test]
fn seabios_nvme_boot_disk_among_others_store_and_saved_config() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let big = artifacts::noise(BIG_FILE_BYTES, 0xb16);
    let image = artifacts::image_with_store(
        tmp.path(),
        &[
            ("big.bin", big.clone()),
            ("notes.txt", b"on nvme\n".to_vec()),
        ],
    );
    let blank = tmp.path().join("blank.img");
    std::fs::File::create(&blank)
        .and_then(|f| f.set_len(32 * 1024 * 1024))
        .unwrap();
    let sectors_4k = tmp.path().join("4k.img");
    std::fs::File::create(&sectors_4k)
        .and_then(|f| f.set_len(4 * 1024 * 1024))
        .unwrap();

    let started = Instant::now();
    let mut m = Qemu::nvme_disk(&image)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args([
            "-nic".to_owned(),
            "none".to_owned(),
            "-drive".to_owned(),
            format!("file={},format=raw,if=none,id=blank", blank.display()),
            // Before Keel's disk on PCI (Boot::Nvme puts that in slot 5): Keel must pass it by.
            "-device".to_owned(),
            "nvme,drive=blank,serial=blank-disk".to_owned(),
            // A namespace of 4096-byte sectors (slot 3): refused, and listed as failed.
            "-drive".to_owned(),
            format!("file={},format=raw,if=none,id=big", sectors_4k.display()),
            "-device".to_owned(),
            "nvme,drive=big,serial=sectors-4k,logical_block_size=4096,physical_block_size=4096"
                .to_owned(),
        ])
        .spawn()
        .unwrap();
    let boot_ms = check_nvme_banner(&mut m);
    let wall = started.elapsed();

    let disk = m.command("disk");
    // The listing: both NVMe disks, the blank one with why Keel left it alone.
    let listed = disk.split("host disks:").nth(1).unwrap_or_default();
    let blank_row = Regex::new(
        r"nvme at 00:02\.0 nsid 1, QEMU NVMe Ctrl, serial blank-disk, 32 MiB: not used \(.+\)",
    )
    .unwrap();
    check!(
        m,
        blank_row.is_match(listed),
        "blank disk not listed with a reason:\n{disk}"
    );
    check!(
        m,
        listed.contains(
            "nvme at 00:03.0: failed (namespace 1 uses 4096-byte sectors; Keel handles only \
             512-byte sectors"
        ),
        "4096-byte namespace not listed as failed:\n{disk}"
    );
    check!(
        m,
        listed.contains("nvme at 00:05.0 nsid 1, QEMU NVMe Ctrl, serial keel-boot,")
            && listed.contains(": Keel's disk"),
        "Keel's disk not listed:\n{disk}"
    );

    let ls = m.command("store ls");
    check!(
        m,
        ls.contains("big.bin") && ls.contains("notes.txt"),
        "store ls:\n{ls}"
    );
    let nvme_mbps = read_big_file(&mut m, &big);
    let save = save_hostname(&mut m, "nvme1");
    reboot_and_check_hostname(&mut m, "nvme1");
    drop(m);

    // The same image on virtio-blk, for the figures beside NVMe.
    let started = Instant::now();
    let mut v = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .args(["-nic", "none"])
        .spawn()
        .unwrap();
    let banner = v.expect_banner();
    let virtio_wall = started.elapsed();
    let virtio_boot_ms = banner.number("boot time").unwrap_or(0);
    let virtio_mbps = read_big_file(&mut v, &big);
    let virtio_save = save_hostname(&mut v, "virtio1");
    eprintln!(
        "figures: SeaBIOS NVMe: boot time {boot_ms} ms (wall clock to prompt {wall:.1?}), \
         config save {save:.0?}, store sum 64 MiB {nvme_mbps:.1} MB/s; \
         virtio-blk: boot time {virtio_boot_ms} ms (wall {virtio_wall:.1?}), config save \
         {virtio_save:.0?}, store sum {virtio_mbps:.1} MB/s"
    );
}

#[test]
fn ovmf_nvme_boot_disk_store_and_saved_config() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let image = artifacts::image_with_store(tmp.path(), &[("notes.txt", b"on nvme\n".to_vec())]);
    let started = Instant::now();
    let mut m = Qemu::nvme_disk_ovmf(&image)
        .defmt_elf(&a.elf)
        // OVMF takes 14 s to the prompt on an idle machine and twice that when the other
        // tests of this binary run beside it.
        .timeout(scaled(Duration::from_secs(90)))
        .writable_disk()
        .args(["-nic", "none"])
        .spawn()
        .unwrap();
    let boot_ms = check_nvme_banner(&mut m);
    let wall = started.elapsed();
    let ls = m.command("store ls");
    check!(m, ls.contains("notes.txt"), "store ls:\n{ls}");
    let save = save_hostname(&mut m, "uefi1");
    reboot_and_check_hostname(&mut m, "uefi1");
    eprintln!(
        "figures: OVMF NVMe: boot time {boot_ms} ms (wall clock to prompt {wall:.1?}), config save {save:.0?}"
    );
}

#[test]
fn power_cuts_during_saves_on_nvme_never_lose_the_configuration() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let image = artifacts::image_with_store(tmp.path(), &[]);
    let cuts = std::env::var("KEEL_NVME_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POWER_CUTS);
    power_cut::saves_survive_power_cuts(&image, cuts, |image| {
        Qemu::nvme_disk(image)
            .defmt_elf(&a.elf)
            .writable_disk()
            .args(["-nic", "none"])
            .spawn()
            .unwrap()
    });
}
