//! Guest-disk partitions on Keel's own disk, end to end: `keel.img` under SeaBIOS with its
//! GPT image as a writable virtio-blk disk.
//!
//! - A 6 GiB partition made by the image builder (`--disk big=6G,partition`) stays sparse on
//!   the host; the image file is then grown, as when `keel.img` is written to a larger disk,
//!   and Keel extends its GPT to the new end at boot. `disk create` carves a partition from
//!   that space, refuses one too large saying how much is free, `disk` lists both, the host's
//!   `sgdisk -v` accepts the table, a reboot keeps it, and `disk delete` removes one.
//! - Power cuts during `disk create`: QEMU is killed (SIGKILL) at random delays after the
//!   command; every next boot lists the old or the new set of partitions, and once Keel has
//!   checked the table at boot, `sgdisk -v` accepts it. Finer tears (every prefix of the
//!   writes, reordering between flushes, torn multi-sector writes) are covered
//!   deterministically by `kernel/src/blk/gpt_write_tests.rs`.
//! - A running VM (the echo test guest) with a partition disk holds it: `disk` names it as
//!   the user, `disk delete` is refused until it stops, a second writer is refused, and a VM
//!   whose partition is gone does not start.
//! - A Debian guest (the disk guest's kernel and modules with a raw-disk `/init`) writes 8
//!   sectors before the end of its 5 GiB partition disk, reads it back after an appliance
//!   reboot, and the host finds the bytes at that place in the image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_image::gpt_image::GuestPartitionRequest;
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts, check};

const MIB: u64 = 1 << 20;

/// The 5 GiB guest-disk partition `big` the VM tests' images carry.
fn big_partition() -> [GuestPartitionRequest; 1] {
    [GuestPartitionRequest {
        name: "big".into(),
        bytes: 5 << 30,
    }]
}

/// Builds `keel.img` into `dir` with `partitions` (name, bytes), then grows the file by
/// `grow_mib` (sparse), as a larger disk would be.
fn image(dir: &Path, partitions: &[(&str, u64)], grow_mib: u64) -> PathBuf {
    let a = artifacts();
    let image = dir.join("keel.img");
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    let requests: Vec<_> = partitions
        .iter()
        .map(|(name, bytes)| GuestPartitionRequest {
            name: (*name).to_owned(),
            bytes: *bytes,
        })
        .collect();
    appliance_image(None, &config, &requests, &image, "keel.img");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len + grow_mib * MIB).unwrap();
    image
}

fn boot(image: &Path) -> Machine {
    let a = artifacts();
    Qemu::seabios(image)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args(["-nic", "none"])
        .spawn()
        .unwrap()
}

/// The partition names `disk` lists, in order.
fn partitions(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("partition "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `sgdisk -v` on the image: its output, and whether it found no problems.
fn sgdisk_verify(image: &Path) -> (bool, String) {
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(image)
        .output()
        .expect("sgdisk (gdisk) not installed: run image-builder/install-deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("No problems found"),
        text,
    )
}

#[test]
fn partitions_from_keel_build_and_disk_create_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path(), &[("big", 6 << 30)], 64);
    let meta = std::fs::metadata(&image).unwrap();
    assert!(meta.len() > 6 << 30, "image of {} bytes", meta.len());
    {
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < 256 * MIB,
            "image not sparse: {} MiB allocated",
            meta.blocks() * 512 / MIB
        );
    }

    let mut m = boot(&image);
    let banner = m.expect_banner();
    check!(
        m,
        banner
            .text
            .contains("disk: GPT extended to the end of the disk: 64 MiB more usable"),
        "no GPT extension at boot:\n{}",
        banner.text
    );
    check!(
        m,
        !banner.text.contains("warning"),
        "banner:\n{}",
        banner.text
    );
    let listing = m.command("disk");
    check!(m, partitions(&listing) == ["big"], "{listing}");
    check!(m, listing.contains("6 GiB"), "{listing}");
    check!(
        m,
        listing.contains("free for partitions: 64 MiB"),
        "{listing}"
    );

    let made = m.command("disk create extra 32M");
    check!(
        m,
        made.contains("disk partition extra created: 32 MiB"),
        "{made}"
    );
    let refused = m.command("disk create huge 1G");
    check!(
        m,
        refused.contains("not enough free space")
            && refused.contains("largest free space is 32 MiB"),
        "{refused}"
    );
    let taken = m.command("disk create big 1M");
    check!(m, taken.contains("already exists"), "{taken}");
    let listing = m.command("disk");
    eprintln!("disk after disk create:\n{listing}");
    check!(m, partitions(&listing) == ["big", "extra"], "{listing}");
    let (ok, report) = sgdisk_verify(&image);
    check!(m, ok, "sgdisk -v after disk create:\n{report}");
    m.kill();

    // The table is on the disk: a new boot lists it, with nothing to repair.
    let mut m = boot(&image);
    let banner = m.expect_banner();
    check!(
        m,
        !banner.text.contains("disk: GPT") && !banner.text.contains("warning"),
        "banner:\n{}",
        banner.text
    );
    let listing = m.command("disk");
    check!(m, partitions(&listing) == ["big", "extra"], "{listing}");
    let deleted = m.command("disk delete extra");
    check!(
        m,
        deleted.contains("disk partition extra deleted"),
        "{deleted}"
    );
    let gone = m.command("disk delete extra");
    check!(m, gone.contains("no disk partition named"), "{gone}");
    let store = m.command("disk delete keel-store");
    check!(m, store.contains("no disk partition named"), "{store}");
    let listing = m.command("disk");
    check!(m, partitions(&listing) == ["big"], "{listing}");
    let (ok, report) = sgdisk_verify(&image);
    check!(m, ok, "sgdisk -v after disk delete:\n{report}");
    m.kill();
}

/// Boots after the first (which times an uninterrupted create); each but the last ends in a
/// power cut during `disk create`. Override with `KEEL_GPT_POWER_CUTS`.
const POWER_CUTS: usize = 10;

/// xorshift64: reproducible delays from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Power cuts during `disk create`.
///
/// Each boot checks what the previous one left: the partitions listed are those before its
/// `disk create` or those plus the new one (never neither, never a boot without Keel's
/// disk), and `sgdisk -v` accepts the table once Keel has checked it at boot. Then it types
/// `disk create cutN 1M` and kills QEMU a random delay later, within the time the first
/// boot's create took (measured).
#[test]
fn power_cuts_during_disk_create_leave_a_valid_table() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path(), &[], 32);
    let cuts = std::env::var("KEEL_GPT_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POWER_CUTS);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("gpt power-cut test: {cuts} cuts, seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut window = Duration::from_millis(300);
    let mut expected: Vec<String> = Vec::new();
    let mut in_flight: Option<String> = None;
    let (mut old, mut new) = (0usize, 0usize);
    for boot_number in 0..=cuts {
        let mut m = boot(&image);
        let banner = m.expect_banner();
        check!(
            m,
            !banner.text.contains("no boot disk"),
            "boot {boot_number} lost Keel's disk (seed {seed:#x}):\n{}",
            banner.text
        );
        let listing = m.command("disk");
        let listed = partitions(&listing);
        if listed == expected {
            old += 1;
        } else {
            let mut with_new = expected.clone();
            with_new.extend(in_flight.clone());
            check!(
                m,
                listed == with_new,
                "boot {boot_number}: partitions {listed:?}, expected {expected:?} or \
                 {with_new:?} (seed {seed:#x})\n{listing}"
            );
            new += 1;
            expected = with_new;
        }
        let (ok, report) = sgdisk_verify(&image);
        check!(
            m,
            ok,
            "boot {boot_number}: sgdisk -v (seed {seed:#x}):\n{report}\nboot:\n{}",
            banner.text
        );
        if boot_number == cuts {
            break;
        }
        let name = format!("cut{boot_number}");
        in_flight = Some(name.clone());
        if boot_number == 0 {
            // Calibration: let the first create finish, and time it.
            let start = Instant::now();
            let made = m.command(&format!("disk create {name} 1M"));
            check!(m, made.contains("created"), "{made}");
            window = start.elapsed();
            eprintln!("disk create took {window:?}");
        } else {
            if let Err(e) = m.send(&format!("disk create {name} 1M\r")) {
                m.fail(e);
            }
            std::thread::sleep(Duration::from_micros(
                rng.below(window.as_micros() as u64 + 1),
            ));
        }
        m.kill();
    }
    eprintln!("after the cuts: {old} boots found the old table, {new} the new one");
}

/// A VM with a partition disk holds it: `disk` shows it as the user, `disk delete` is refused
/// while it runs and works once it has stopped; a second VM asking for it writable is
/// refused.
#[test]
fn a_running_vm_holds_its_partition() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let set = keel_qemu_tests::guests::build_guests().expect("building the test guests");
    // The echo guest: silent until typed to, so its output cannot interleave with the
    // console's.
    let echo = set.path(keel_qemu_tests::guests::ECHO);
    std::fs::copy(&echo, store.join(echo.file_name().unwrap())).unwrap();
    let toml = format!(
        r#"
[management]
api_tokens = ["{token}"]

[[vms]]
name = "first"
kernel = "echo.bin"
memory_mib = 16

[[vms.disks]]
partition = "big"

[[vms]]
name = "second"
kernel = "echo.bin"
memory_mib = 16

[[vms.disks]]
partition = "big"
"#,
        token = a.api_token
    );
    let config = keel_image::appliance::parse_toml(&toml)
        .expect("the test configuration is valid")
        .to_json_pretty();
    let image = tmp.path().join("keel.img");
    appliance_image(Some(&store), &config, &big_partition(), &image, "keel.img");

    let mut m = boot(&image);
    m.expect_banner();
    m.type_line("vm start first");
    // The guest's line comes above a redrawn prompt: read both before typing.
    m.expect("[first] echo guest: ready");
    m.expect_prompt();
    let listing = m.command("disk");
    let line = listing
        .lines()
        .find(|l| l.trim_start().starts_with("partition ") && l.contains(" big "))
        .unwrap_or_default()
        .to_owned();
    check!(
        m,
        line.contains("5 GiB") && line.trim_end().ends_with("first"),
        "{listing}"
    );
    let refused = m.command("disk delete big");
    check!(
        m,
        refused.contains("in use by first") && refused.contains("stop it first"),
        "{refused}"
    );
    let second = m.command("vm start second");
    check!(
        m,
        second.contains("error") && second.contains("big"),
        "a second writer was not refused: {second}"
    );
    m.type_line("vm stop first force");
    m.expect("vm first stopped: stopped by the operator");
    m.expect_prompt();
    let listing = m.command("disk");
    check!(m, partitions(&listing) == ["big"], "{listing}");
    let deleted = m.command("disk delete big");
    check!(
        m,
        deleted.contains("disk partition big deleted"),
        "{deleted}"
    );
    let missing = m.command("vm start first");
    check!(
        m,
        missing.contains("error") && missing.contains("big"),
        "a VM started without its partition: {missing}"
    );
    m.kill();
}

/// The raw-disk guest's `/init` after the module loads: reads the marker the previous boot
/// left 8 sectors before the end of `/dev/vda`, writes the next one there (`part-boot-N`),
/// reads it back, syncs and powers off. Reports are `PART-<KEY>=<value>` lines.
const PART_INIT: &str = r#"echo KEEL-PART-INIT
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
sectors=$(cat /sys/block/vda/size)
echo "PART-SECTORS=$sectors"
at=$((sectors-8))
prev=$(dd if=/dev/vda bs=512 skip=$at count=1 2>/dev/null | tr -d '\000')
echo "PART-PREVIOUS=$prev"
case "$prev" in part-boot-*) boots=${prev#part-boot-} ;; *) boots=0 ;; esac
boots=$((boots+1))
if err=$(echo "part-boot-$boots" | dd of=/dev/vda bs=512 seek=$at count=1 conv=sync,notrunc,fsync 2>&1); then echo PART-WRITE=ok; else echo "PART-WRITE=failed: $err" | tr '\n' ' '; echo; fi
echo "PART-READBACK=$(dd if=/dev/vda bs=512 skip=$at count=1 2>/dev/null | tr -d '\000')"
sync
echo KEEL-PART-DONE
poweroff -f
"#;

/// Waits for VM `part`'s run to end and returns its `PART-` values by key.
fn part_run(m: &mut Machine) -> std::collections::BTreeMap<String, String> {
    let start = m.cursor();
    m.expect_within("[part] KEEL-PART-DONE", Duration::from_secs(480));
    m.expect_within(
        "vm part stopped: guest powered off",
        Duration::from_secs(60),
    );
    let raw = m.transcript();
    let text = String::from_utf8_lossy(&raw[start.min(raw.len())..]).replace('\r', "\n");
    text.lines()
        .filter_map(|l| l.split_once("[part] PART-")?.1.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_end().to_owned()))
        .collect()
}

/// A Debian guest writes 8 sectors before the end of its 5 GiB partition disk (made by the
/// image builder, sparse) and reads the marker back after an appliance reboot; the host finds
/// it in the image at that place.
#[test]
fn a_guest_writes_near_the_end_of_its_partition_and_reads_it_after_a_reboot() {
    use keel_qemu_tests::disk_guest::{DISK_APPLETS, DISK_CMDLINE, disk_guest, disk_initramfs};
    let a = artifacts();
    let g = disk_guest();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::copy(&g.guest.kernel, store.join("vmlinuz")).unwrap();
    let initramfs = disk_initramfs(&g.guest, &g.modules, PART_INIT, DISK_APPLETS)
        .expect("building the raw-disk initramfs");
    std::fs::write(store.join("part-init.cpio"), initramfs).unwrap();
    let toml = format!(
        r#"
[management]
api_tokens = ["{token}"]

[[vms]]
name = "part"
memory_mib = 256
kernel = "vmlinuz"
initrd = "part-init.cpio"
cmdline = "{DISK_CMDLINE}"
autostart = true

[[vms.disks]]
partition = "big"
"#,
        token = a.api_token
    );
    let config = keel_image::appliance::parse_toml(&toml)
        .expect("the test configuration is valid")
        .to_json_pretty();
    let image = tmp.path().join("keel.img");
    let summary = appliance_image(Some(&store), &config, &big_partition(), &image, "keel.img");
    let part = &summary.guest_partitions[0];

    let mut m = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args(["-nic", "none"])
        .hard_timeout(Duration::from_secs(1200))
        .spawn()
        .unwrap();
    m.expect_banner();
    let first = part_run(&mut m);
    let sectors = (5u64 << 30) / 512;
    check!(
        m,
        first.get("SECTORS").map(String::as_str) == Some(sectors.to_string().as_str()),
        "{first:?}"
    );
    check!(
        m,
        first.get("PREVIOUS").map(String::as_str) == Some("")
            && first.get("WRITE").map(String::as_str) == Some("ok")
            && first.get("READBACK").map(String::as_str) == Some("part-boot-1"),
        "first boot: {first:?}"
    );

    // The appliance reboots; the VM starts again (autostart) on the same partition.
    m.type_line("reboot");
    m.expect_banner();
    let second = part_run(&mut m);
    check!(
        m,
        second.get("PREVIOUS").map(String::as_str) == Some("part-boot-1")
            && second.get("READBACK").map(String::as_str) == Some("part-boot-2"),
        "second boot: {second:?}"
    );
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));

    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&image).unwrap();
    file.seek(SeekFrom::Start((part.first_lba + sectors - 8) * 512))
        .unwrap();
    let mut sector = [0u8; 512];
    file.read_exact(&mut sector).unwrap();
    assert!(
        sector.starts_with(b"part-boot-2\n") && sector[12..].iter().all(|&b| b == 0),
        "the host reads {:?} at the partition's end",
        String::from_utf8_lossy(&sector[..32])
    );
}
