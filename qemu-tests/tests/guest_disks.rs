//! Guest disks (issue 13): a Debian guest mounts an ext4 data disk on virtio-blk, reads the
//! host's file, writes its own, syncs and powers off; the host reads the guest's bytes back
//! with `debugfs`. rust-hypervisor-firmware boots a GPT disk with a BLS entry.
//!
//! The `plain_qemu_*` tests run the guest (or the firmware) directly under QEMU TCG with
//! `virtio-blk-pci,disable-legacy=on`: they are the reference the Keel versions are held to,
//! and they prove the test guest, the images and the firmware build. The `keel_*` tests run
//! the same guests as Keel VMs, held to the same answers.
//!
//! The first run downloads Debian's kernel package twice (once for the kernel, once for its
//! virtio and ext4 modules) and builds the firmware with its pinned nightly (about a minute).

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_qemu_tests::boot_disk::{
    BootEntry, FIRMWARE_FILE, FW_BOOT_APPLETS, FW_BOOT_INIT, FW_BOOT_MARKER, gpt_boot_disk,
    hypervisor_fw,
};
use keel_qemu_tests::disk_guest::{
    BOOTS_FILE, DISK_CMDLINE, DISK_DONE_MARKER, DISK_INIT_MARKER, DISK_INITRAMFS,
    DISK_SHELL_APPLETS, DISK_SHELL_INIT, DISK_SHELL_INITRAMFS, DISK_SHELL_MARKER, GUEST_FILE,
    HOST_FILE, disk_guest, disk_initramfs, disk_value, ext4_check, ext4_read, make_ext4,
    write_atomically,
};
use keel_qemu_tests::linux_guest::{busybox_initramfs, guest_dir};
use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, check};

/// The data disk's size.
const DATA_MIB: u32 = 32;

/// How long the guest may take from QEMU's start to its done marker under plain QEMU.
const PLAIN_BOOT: Duration = Duration::from_secs(180);

/// A fresh ext4 data image in `dir` with [`HOST_FILE`] holding `text`.
fn data_image(dir: &Path, name: &str, text: &str) -> PathBuf {
    let files = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join(HOST_FILE), text).unwrap();
    let image = dir.join(name);
    make_ext4(&files, &image, DATA_MIB).unwrap();
    image
}

/// A marker unlikely to be on the disk by chance.
fn nonce(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{tag}-{}-{}", std::process::id(), t.subsec_nanos())
}

/// The guest's lines in `text` (plain QEMU: the whole console; Keel: after `[<vm name>] `).
fn lines_of(text: &str, vm: Option<&str>) -> Vec<String> {
    let text = text.replace('\r', "\n");
    match vm {
        None => text.lines().map(|l| l.trim_end().to_owned()).collect(),
        Some(name) => {
            let prefix = format!("[{name}] ");
            text.lines()
                .filter_map(|l| {
                    let at = l.find(&prefix)?;
                    Some(l[at + prefix.len()..].trim_end().to_owned())
                })
                .collect()
        }
    }
}

/// Boots the disk guest under plain QEMU with `image` as a modern-only virtio-blk-pci disk
/// (`readonly` as `-drive readonly=on`) and waits for it to power off; returns its lines.
fn plain_qemu_disk_boot(image: &Path, readonly: bool, serial: &str) -> Vec<String> {
    let g = disk_guest();
    let image_arg = image.to_string_lossy().replace(',', ",,");
    let ro = if readonly { ",readonly=on" } else { "" };
    let mut q = Qemu::pvh(&g.guest.kernel)
        .machine("q35")
        .cpu("qemu64")
        .memory_mib(256)
        .cpus(1)
        .append(DISK_CMDLINE)
        .timeout(PLAIN_BOOT)
        .hard_timeout(Duration::from_secs(300))
        .args([
            "-initrd".to_owned(),
            g.initramfs.display().to_string(),
            "-drive".to_owned(),
            format!("file={image_arg},format=raw,if=none,id=data,cache=writethrough{ro}"),
            "-device".to_owned(),
            format!("virtio-blk-pci,drive=data,disable-legacy=on,serial={serial}"),
        ]);
    q.defmt_elf = None;
    let mut m = q.spawn().unwrap();
    m.expect(DISK_INIT_MARKER);
    let done = m.expect(DISK_DONE_MARKER);
    eprintln!(
        "plain QEMU: {DISK_DONE_MARKER} {:.1} s after QEMU started",
        done.at.as_secs_f64()
    );
    let status = m.expect_exit(Duration::from_secs(30));
    check!(m, status.success(), "QEMU exited with {status}");
    let lines = lines_of(&m.transcript_text(), None);
    check!(
        m,
        !lines.iter().any(|l| l.starts_with("KEEL-INSMOD-FAILED")),
        "a module did not load:\n{}",
        lines.join("\n")
    );
    lines
}

/// The checks of a writable disk's boot: mounted read-write, the host's file read, the
/// guest's file written (`boot`th boot), the previous boot's file seen, unmounted cleanly.
fn check_writable_boot(
    m: Option<&Machine>,
    lines: &[String],
    host_text: &str,
    boot: u32,
    serial: &str,
) {
    let fail = |msg: String| match m {
        Some(m) => m.fail(msg),
        None => panic!("{msg}"),
    };
    let all = lines.join("\n");
    let expect = |key: &str, want: &str| {
        let got = disk_value(lines, key);
        if got != Some(want) {
            fail(format!(
                "DISK-{key}: expected {want:?}, got {got:?}; guest output:\n{all}"
            ));
        }
    };
    expect("RO", "0");
    expect("SECTORS", &(u64::from(DATA_MIB) * 2048).to_string());
    expect("SERIAL", serial);
    expect("MOUNT", "ok");
    expect("MOUNT-OPTIONS", "rw");
    expect("HOST", host_text);
    let previous = if boot == 1 {
        "none".to_owned()
    } else {
        format!("guest boot {} saw {host_text}", boot - 1)
    };
    expect("PREVIOUS", &previous);
    expect("WRITE", "ok");
    expect("UMOUNT", "ok");
}

/// What the guest leaves on the image after its `boot`th boot.
fn expected_guest_file(host_text: &str, boot: u32) -> String {
    format!("guest boot {boot} saw {host_text}\n")
}

#[test]
fn plain_qemu_debian_mounts_reads_and_writes_an_ext4_virtio_blk_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let host_text = nonce("host");
    let image = data_image(tmp.path(), "data.img", &host_text);
    for boot in 1..=2 {
        let lines = plain_qemu_disk_boot(&image, false, "keel-data-1");
        check_writable_boot(None, &lines, &host_text, boot, "keel-data-1");
        let written = ext4_read(&image, &format!("/{GUEST_FILE}")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&written),
            expected_guest_file(&host_text, boot)
        );
        assert_eq!(
            ext4_read(&image, &format!("/{BOOTS_FILE}")).unwrap(),
            format!("{boot}\n").as_bytes()
        );
        if let Err(e) = ext4_check(&image) {
            panic!("the guest left an unclean file system: {e}");
        }
    }
    let missing = ext4_read(&image, "/no-such-file").unwrap_err().to_string();
    assert!(missing.contains("no-such-file"), "{missing}");
}

/// The checks of a read-only disk's boot: the device says read-only, the mount fell back to
/// read-only, the host's file is read, and both the file write and a raw write of the device
/// fail with EROFS or EPERM/EACCES as Linux reports them.
fn check_readonly_boot(m: Option<&Machine>, lines: &[String], host_text: &str) {
    let all = lines.join("\n");
    let fail = |msg: String| match m {
        Some(m) => m.fail(msg),
        None => panic!("{msg}"),
    };
    let value = |key: &str| disk_value(lines, key).unwrap_or("(missing)");
    for (key, want) in [("RO", "1"), ("MOUNT", "ok"), ("MOUNT-OPTIONS", "ro")] {
        if value(key) != want {
            fail(format!(
                "DISK-{key}={}, expected {want}:\n{all}",
                value(key)
            ));
        }
    }
    if value("HOST") != host_text {
        fail(format!("DISK-HOST={}, expected {host_text}", value("HOST")));
    }
    let write = value("WRITE");
    if !(write.starts_with("failed:") && write.contains("Read-only file system")) {
        fail(format!(
            "the file write on a read-only disk: DISK-WRITE={write}"
        ));
    }
    let raw = value("RAW-WRITE");
    if !raw.starts_with("failed:") {
        fail(format!(
            "the raw write on a read-only disk: DISK-RAW-WRITE={raw}"
        ));
    }
}

#[test]
fn plain_qemu_readonly_disk_refuses_writes_and_stays_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let host_text = nonce("ro");
    let image = data_image(tmp.path(), "ro.img", &host_text);
    let before = std::fs::read(&image).unwrap();
    let lines = plain_qemu_disk_boot(&image, true, "keel-ro");
    check_readonly_boot(None, &lines, &host_text);
    eprintln!(
        "read-only: DISK-WRITE={:?}, DISK-RAW-WRITE={:?}",
        disk_value(&lines, "WRITE"),
        disk_value(&lines, "RAW-WRITE")
    );
    assert!(
        std::fs::read(&image).unwrap() == before,
        "the read-only image changed"
    );
}

/// The firmware test's initramfs and GPT boot disk in `dir`: Debian's kernel and an
/// initramfs printing [`FW_BOOT_MARKER`], under a BLS entry whose options carry `marker`.
fn fw_boot_disk(dir: &Path, marker: &str) -> PathBuf {
    let g = disk_guest();
    let busybox = std::fs::read(&g.guest.busybox).unwrap();
    let initrd = dir.join("fw-initrd.img");
    std::fs::write(
        &initrd,
        busybox_initramfs(&busybox, FW_BOOT_INIT, FW_BOOT_APPLETS).finish(),
    )
    .unwrap();
    let options = format!("console=ttyS0 loglevel=4 panic=-1 keel.marker={marker}");
    let image = dir.join("boot.img");
    let entry = BootEntry {
        kernel: &g.guest.kernel,
        initrd: &initrd,
        options: &options,
    };
    gpt_boot_disk(&image, &entry, 64).unwrap();
    image
}

#[test]
fn plain_qemu_hypervisor_fw_boots_a_bls_entry_from_a_gpt_virtio_blk_disk() {
    let firmware = hypervisor_fw().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let marker = nonce("fw");
    let image = fw_boot_disk(tmp.path(), &marker);
    let image_arg = image.to_string_lossy().replace(',', ",,");
    let mut q = Qemu::pvh(&firmware)
        .machine("q35")
        .cpu("qemu64")
        .memory_mib(256)
        .cpus(1)
        .timeout(PLAIN_BOOT)
        .hard_timeout(Duration::from_secs(300))
        .args([
            "-drive".to_owned(),
            format!("file={image_arg},format=raw,if=none,id=boot,snapshot=on"),
            "-device".to_owned(),
            "virtio-blk-pci,drive=boot,disable-legacy=on".to_owned(),
        ]);
    q.defmt_elf = None;
    let mut m = q.spawn().unwrap();
    let booted = m.expect(FW_BOOT_MARKER);
    eprintln!(
        "plain QEMU: hypervisor-fw reached the initramfs {:.1} s after QEMU started",
        booted.at.as_secs_f64()
    );
    let cmdline = m.expect(Pattern::line_starting("FW-CMDLINE="));
    check!(
        m,
        cmdline.group(1).contains(&format!("keel.marker={marker}")),
        "the kernel did not get the BLS entry's options: {:?}",
        cmdline.group(1)
    );
    let status = m.expect_exit(Duration::from_secs(30));
    check!(m, status.success(), "QEMU exited with {status}");
}

// ---------------------------------------------------------------------------------------
// Keel versions: the same guests as Keel VMs.
// ---------------------------------------------------------------------------------------

/// The VM definition of the disk guest (TOML), named `name`, with `disks` as
/// `[[vms.disks]]` tables.
fn disk_vm_toml(name: &str, disks: &[(&str, bool, &str)], autostart: bool) -> String {
    let mut toml = format!(
        "[[vms]]\nname = \"{name}\"\nmemory_mib = 256\nvcpus = 1\nkernel = \"vmlinuz\"\n\
         initrd = \"{DISK_INITRAMFS}\"\ncmdline = \"{DISK_CMDLINE}\"\nautostart = {autostart}\n"
    );
    for (file, readonly, serial) in disks {
        toml.push_str(&format!(
            "[[vms.disks]]\nfile = \"{file}\"\nreadonly = {readonly}\nserial = \"{serial}\"\n"
        ));
    }
    toml
}

/// Builds `keel.img` in `dir` with a store of `files` (plus the guest's kernel and
/// initramfs) and the configuration `toml` (plus the build's API token).
fn keel_image_with(dir: &Path, files: &[(&str, &Path)], toml: &str) -> PathBuf {
    let a = artifacts();
    let g = disk_guest();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::copy(&g.guest.kernel, store.join("vmlinuz")).unwrap();
    std::fs::copy(&g.initramfs, store.join(DISK_INITRAMFS)).unwrap();
    for (name, path) in files {
        std::fs::copy(path, store.join(name)).unwrap();
    }
    let mut config = match keel_image::appliance::parse_toml(toml) {
        Ok(c) => c,
        Err(e) => panic!("the test configuration does not parse: {e}\n{toml}"),
    };
    config.management.api_tokens.push(a.api_token.clone());
    let image = dir.join("keel.img");
    appliance_image(
        Some(&store),
        &config.to_json_pretty(),
        &[],
        &image,
        "keel.img with the disk store",
    );
    image
}

/// Boots Keel from `image`, writable (store writes land in the file), and waits for the
/// prompt.
fn keel_boot(image: &Path) -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .writable_disk()
        .hard_timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    m.expect_banner();
    m
}

/// Waits for VM `name`'s done marker and power-off; returns its lines.
fn keel_disk_run(m: &mut Machine, name: &str) -> Vec<String> {
    m.expect_within(
        format!("[{name}] {DISK_INIT_MARKER}"),
        Duration::from_secs(480),
    );
    m.expect_within(
        format!("[{name}] {DISK_DONE_MARKER}"),
        Duration::from_secs(120),
    );
    m.expect_within(
        format!("vm {name} stopped: guest powered off"),
        Duration::from_secs(60),
    );
    // The prompt redrawn after the notice: a later `command` must not take it for its own.
    m.expect_prompt();
    lines_of(&m.transcript_text(), Some(name))
}

/// `text` with the regex metacharacters a file name may hold escaped.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = "\\.+*?()|[]{}^$".contains(c);
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// A GPT partition's first LBA and sector count, by its name (UTF-16LE in the entry).
fn gpt_partition(image: &Path, name: &str) -> Option<(u64, u64)> {
    let bytes = std::fs::read(image).ok()?;
    let header = bytes.get(512..1024)?;
    if &header[..8] != b"EFI PART" {
        return None;
    }
    let le64 = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let entries = usize::try_from(le64(header, 72)).ok()? * 512;
    let (count, size) = (le32(header, 80) as usize, le32(header, 84) as usize);
    (0..count).find_map(|i| {
        let e = bytes.get(entries + i * size..entries + (i + 1) * size)?;
        let units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        (String::from_utf16_lossy(&units) == name)
            .then(|| (le64(e, 32), le64(e, 40) - le64(e, 32) + 1))
    })
}

/// Copies store file `name` out of `keel.img`'s store partition (FAT) with `mcopy`.
fn store_file(image: &Path, name: &str, to: &Path) {
    let (first, _) = gpt_partition(image, keel_image::gpt_image::STORE_NAME)
        .expect("keel.img has no keel-store partition");
    let out = std::process::Command::new("mcopy")
        .arg("-n")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), first * 512))
        .arg(format!("::/{name}"))
        .arg(to)
        .output()
        .expect("running mcopy (Debian package mtools)");
    assert!(
        out.status.success(),
        "mcopy {name} out of the store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keel_vm_writes_its_store_disk_and_reads_it_back_after_an_appliance_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let host_text = nonce("keel");
    let data = data_image(tmp.path(), "data-src.img", &host_text);
    let toml = disk_vm_toml("disk", &[("data.img", false, "keel-data-1")], true);
    let image = keel_image_with(tmp.path(), &[("data.img", &data)], &toml);

    let mut m = keel_boot(&image);
    let lines = keel_disk_run(&mut m, "disk");
    check_writable_boot(Some(&m), &lines, &host_text, 1, "keel-data-1");
    let info = m.command("vm info disk");
    check!(
        m,
        info.contains("data.img"),
        "vm info does not list the disk:\n{info}"
    );
    let sum1 = m.command("store sum data.img");

    // The appliance reboots (a machine reset): the VM starts again from the same store file.
    m.type_line("reboot");
    m.expect_banner();
    let lines = keel_disk_run(&mut m, "disk");
    let second: Vec<String> = {
        // The transcript holds both boots; keep the second one's lines (after its init marker).
        let at = lines
            .iter()
            .rposition(|l| l == DISK_INIT_MARKER)
            .unwrap_or(0);
        lines[at..].to_vec()
    };
    check_writable_boot(Some(&m), &second, &host_text, 2, "keel-data-1");
    let sum2 = m.command("store sum data.img");
    check!(
        m,
        sum1 != sum2,
        "store sum did not change across a boot that wrote: {sum1:?}"
    );
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));

    let copy = tmp.path().join("data-after.img");
    store_file(&image, "data.img", &copy);
    let bytes = std::fs::read(&copy).unwrap();
    let expected_sum = format!("crc32 {:08x}", crc32fast::hash(&bytes));
    assert!(
        sum2.contains(&expected_sum),
        "store sum said {sum2:?}; the file read out of the image has {expected_sum}"
    );
    assert_eq!(
        String::from_utf8_lossy(&ext4_read(&copy, &format!("/{GUEST_FILE}")).unwrap()),
        expected_guest_file(&host_text, 2)
    );
    if let Err(e) = ext4_check(&copy) {
        panic!("the guest left an unclean file system in the store: {e}");
    }
}

#[test]
fn keel_readonly_disk_refuses_writes_and_stays_byte_for_byte_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let host_text = nonce("keel-ro");
    let data = data_image(tmp.path(), "ro-src.img", &host_text);
    let before = std::fs::read(&data).unwrap();
    let toml = disk_vm_toml("ro", &[("ro.img", true, "keel-ro")], true);
    let image = keel_image_with(tmp.path(), &[("ro.img", &data)], &toml);
    let mut m = keel_boot(&image);
    let lines = keel_disk_run(&mut m, "ro");
    check_readonly_boot(Some(&m), &lines, &host_text);
    let sum = m.command("store sum ro.img");
    let expected = format!("crc32 {:08x}", crc32fast::hash(&before));
    check!(
        m,
        sum.contains(&expected),
        "store sum: {sum:?}, expected {expected}"
    );
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));
    let copy = tmp.path().join("ro-after.img");
    store_file(&image, "ro.img", &copy);
    assert!(
        std::fs::read(&copy).unwrap() == before,
        "the read-only store file changed"
    );
}

#[test]
fn keel_two_vms_with_own_disks_and_a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (text_a, text_b) = (nonce("a"), nonce("b"));
    let data_a = data_image(tmp.path(), "a-src.img", &text_a);
    let data_b = data_image(tmp.path(), "b-src.img", &text_b);
    let mut toml = disk_vm_toml("vm-a", &[("a.img", false, "disk-a")], false);
    toml.push_str(&disk_vm_toml("vm-b", &[("b.img", false, "disk-b")], false));
    // Wants a.img writable too: refused while vm-a runs.
    toml.push_str(&disk_vm_toml("vm-c", &[("a.img", false, "disk-c")], false));
    let image = keel_image_with(tmp.path(), &[("a.img", &data_a), ("b.img", &data_b)], &toml);
    let mut m = keel_boot(&image);

    // vm-c's guest powers off quickly after its run; to keep vm-a holding a.img while vm-c
    // asks for it, vm-c is started right after vm-a, before vm-a's guest gets to its end.
    m.type_line("vm start vm-a");
    m.expect("vm vm-a started");
    m.type_line("vm start vm-b");
    m.expect("vm vm-b started");
    // The guests print all the time: wait for each answer rather than for a prompt.
    m.type_line("vm start vm-c");
    if let Err(e) = m.wait_for(
        "error: a.img is attached writable to VM vm-a",
        Duration::from_secs(30),
    ) {
        m.fail(format!(
            "a second writer of a.img was not refused with a message naming the image and \
             its user: {e}"
        ));
    }
    m.type_line("store ls");
    for (image, vm) in [("a.img", "vm-a"), ("b.img", "vm-b")] {
        let row = format!(r"(?m)^\s*{}\s+{vm} \(rw\)\s", regex_escape(image));
        if let Err(e) = m.wait_for(Pattern::regex(&row), Duration::from_secs(30)) {
            m.fail(format!(
                "store ls does not show {image} used by {vm} (rw): {e}"
            ));
        }
    }
    // Creating a VM with a disk the appliance does not have is refused up front, naming it.
    m.type_line("vm create vm-d kernel=vmlinuz disk=nope.img");
    let refused = r#"vms\[3\]\.disks\[0\]\.file: no file "nope\.img" in the guest store"#;
    if let Err(e) = m.wait_for(Pattern::regex(refused), Duration::from_secs(30)) {
        m.fail(format!(
            "vm create with a missing disk file was not refused: {e}"
        ));
    }
    // Both guests run at once, so either may finish first: wait on the whole transcript.
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let both_off = |text: &str| {
        ["vm-a", "vm-b"]
            .iter()
            .all(|n| text.contains(&format!("vm {n} stopped: guest powered off")))
    };
    while !both_off(&m.transcript_text()) {
        if std::time::Instant::now() > deadline {
            m.fail("vm-a and vm-b did not both power off within 600 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = m.transcript_text();
    check_writable_boot(
        Some(&m),
        &lines_of(&text, Some("vm-a")),
        &text_a,
        1,
        "disk-a",
    );
    check_writable_boot(
        Some(&m),
        &lines_of(&text, Some("vm-b")),
        &text_b,
        1,
        "disk-b",
    );
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));
    for (name, text) in [("a.img", &text_a), ("b.img", &text_b)] {
        let copy = tmp.path().join(format!("{name}.after"));
        store_file(&image, name, &copy);
        assert_eq!(
            String::from_utf8_lossy(&ext4_read(&copy, &format!("/{GUEST_FILE}")).unwrap()),
            expected_guest_file(text, 1),
            "{name}"
        );
    }
}

/// Types `line` into the shell of VM `key` (attaching its console and detaching after) and
/// waits for `answer` in its output.
fn in_guest_shell(m: &mut Machine, key: &str, line: &str, answer: &str) {
    m.type_line(&format!("vm console {key}"));
    m.expect(format!("[attached to {key}: Ctrl-] detaches]"));
    m.type_line(line);
    m.expect_within(answer, Duration::from_secs(60));
    m.send("\x1d").unwrap();
    m.expect(format!("[detached from {key}]"));
    m.expect_prompt();
}

/// Fails unless `store ls` shows `name` used by `users` (`""`: by no VM). Waits for the row
/// itself rather than the next prompt: a guest line printed meanwhile redraws the prompt.
fn expect_store_users(m: &mut Machine, name: &str, users: &str) {
    m.type_line("store ls");
    // Columns: name, used by (may be empty or hold spaces), size (one word); up to the
    // line end, so a line still arriving is not taken.
    let row = format!(
        r"(?m)^[ \t]*{}[ \t]+([^\r\n]*?)[ \t]*[^ \t\r\n]+[ \t]*\r?\n",
        regex_escape(name)
    );
    let found = match m.wait_for(Pattern::regex(&row), Duration::from_secs(30)) {
        Ok(found) => found,
        Err(e) => m.fail(format!("store ls has no row for {name}: {e}")),
    };
    let used_by = found.group(1).trim().to_owned();
    m.expect_prompt();
    check!(
        m,
        used_by == users,
        "store ls: {name} used by {used_by:?}, expected {users:?}"
    );
}

#[test]
fn keel_vm_with_a_disk_is_saved_stopped_restored_and_keeps_writing_it() {
    let g = disk_guest();
    let tmp = tempfile::tempdir().unwrap();
    let host_text = nonce("saverest");
    let data = data_image(tmp.path(), "data-src.img", &host_text);
    let shell = tmp.path().join(DISK_SHELL_INITRAMFS);
    let archive = disk_initramfs(&g.guest, &g.modules, DISK_SHELL_INIT, DISK_SHELL_APPLETS)
        .expect("building the disk shell initramfs");
    std::fs::write(&shell, archive).unwrap();
    let toml = disk_vm_toml("disk", &[("data.img", false, "keel-data-1")], true).replace(
        &format!("initrd = \"{DISK_INITRAMFS}\""),
        &format!("initrd = \"{DISK_SHELL_INITRAMFS}\""),
    );
    let image = keel_image_with(
        tmp.path(),
        &[("data.img", &data), (DISK_SHELL_INITRAMFS, &shell)],
        &toml,
    );
    let mut m = keel_boot(&image);
    m.expect_within(
        format!("[disk] {DISK_SHELL_MARKER}"),
        Duration::from_secs(480),
    );
    // The answers are computed by the guest's shell, so the echo of the typed line does not
    // match them.
    let (text_a, text_b) = (nonce("file-a"), nonce("file-b"));
    in_guest_shell(
        &mut m,
        "disk",
        &format!(
            "mount -t ext4 /dev/vda /mnt && echo {text_a}-$((6*7)) > /mnt/a.txt && sync && \
             echo A-SYNCED-$((6*7))"
        ),
        "A-SYNCED-42",
    );
    expect_store_users(&mut m, "data.img", "disk (rw)");

    let paused = m.command("vm pause disk");
    check!(m, paused.contains("vm disk paused"), "vm pause: {paused:?}");
    let saved = m.command("vm save disk snap");
    check!(
        m,
        saved.contains("vm disk saved as 'snap': "),
        "vm save: {saved:?}"
    );
    // The paused VM still holds data.img writable: a restore of it is refused.
    let refused = m.command("vm restore snap");
    check!(
        m,
        refused.contains(
            "error: cannot restore 'snap': data.img is attached writable to VM disk; stop it \
             first"
        ),
        "a restore while the saved VM holds its disk: {refused:?}"
    );
    m.type_line("vm stop disk force");
    m.expect("vm disk stopped: stopped by the operator");
    m.expect_prompt();
    expect_store_users(&mut m, "data.img", "");

    let restored = m.command("vm restore snap");
    let restored_as = regex::Regex::new(r"vm (\d+) restored from 'snap' in \d+ ms, paused")
        .unwrap()
        .captures(&restored)
        .and_then(|c| c[1].parse::<u32>().ok());
    let Some(id) = restored_as else {
        m.fail(format!("vm restore: {restored:?}"));
    };
    eprintln!("{}\n{}", saved.trim(), restored.trim());
    expect_store_users(&mut m, "data.img", &format!("{id} (rw)"));
    // A second restore would be a second writer.
    let twice = m.command("vm restore snap");
    check!(
        m,
        twice.contains(&format!(
            "error: cannot restore 'snap': data.img is attached writable to VM {id}; stop it \
             first"
        )),
        "a second restore of a VM with a writable disk: {twice:?}"
    );
    let resumed = m.command(&format!("vm resume {id}"));
    check!(
        m,
        resumed.contains(&format!("vm {id} resumed")),
        "vm resume: {resumed:?}"
    );
    in_guest_shell(
        &mut m,
        &id.to_string(),
        &format!(
            "cat /mnt/a.txt && echo {text_b}-$((6*7)) > /mnt/b.txt && sync && cat /mnt/b.txt && \
             umount /mnt && echo B-UNMOUNTED-$((6*7))"
        ),
        "B-UNMOUNTED-42",
    );
    // An attached console shows the guest's lines without the `[vm<id>] ` prefix; the
    // typed line holds `$((6*7))`, so only the guest's `cat` prints these.
    let text = m.transcript_text().replace('\r', "\n");
    for want in [format!("{text_a}-42"), format!("{text_b}-42")] {
        check!(
            m,
            text.lines().any(|l| l.trim_end() == want),
            "the restored guest did not print {want:?} (file a.txt read back, b.txt written)"
        );
    }
    m.type_line(&format!("vm stop {id} force"));
    m.expect(format!("vm {id} stopped: stopped by the operator"));
    m.expect_prompt();
    expect_store_users(&mut m, "data.img", "");
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));

    let copy = tmp.path().join("data-after.img");
    store_file(&image, "data.img", &copy);
    for (file, text) in [("/a.txt", &text_a), ("/b.txt", &text_b)] {
        assert_eq!(
            String::from_utf8_lossy(&ext4_read(&copy, file).unwrap()),
            format!("{text}-42\n"),
            "{file} in the store's data.img"
        );
    }
    if let Err(e) = ext4_check(&copy) {
        panic!("the restored guest left an unclean file system in the store: {e}");
    }
}

#[test]
fn keel_vm_boots_hypervisor_fw_from_a_gpt_store_disk() {
    let firmware = hypervisor_fw().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let marker = nonce("keel-fw");
    let boot = fw_boot_disk(tmp.path(), &marker);
    let toml = format!(
        "[[vms]]\nname = \"fw\"\nmemory_mib = 256\nvcpus = 1\nfirmware = \"{FIRMWARE_FILE}\"\n\
         autostart = true\n[[vms.disks]]\nfile = \"boot.img\"\nreadonly = true\n"
    );
    let image = keel_image_with(
        tmp.path(),
        &[(FIRMWARE_FILE, &firmware), ("boot.img", &boot)],
        &toml,
    );
    let mut m = keel_boot(&image);
    m.expect_within(format!("[fw] {FW_BOOT_MARKER}"), Duration::from_secs(480));
    // Up to the line end: a match on a half-arrived line would cut the options short.
    let cmdline = m.expect(Pattern::regex(r"\[fw\] FW-CMDLINE=([^\r\n]*)[\r\n]"));
    check!(
        m,
        cmdline.group(1).contains(&format!("keel.marker={marker}")),
        "the kernel did not get the BLS entry's options: {:?}",
        cmdline.group(1)
    );
    m.expect_within("vm fw stopped: guest powered off", Duration::from_secs(60));
    m.expect_prompt();
    let version = m.command("version");
    check!(m, version.contains("built with rustc"), "{version:?}");
}

/// The disk guest's initramfs under `target/linux-guest/` stays current for `disk-bench`.
#[test]
fn the_disk_initramfs_carries_the_modules_in_load_order() {
    let g = disk_guest();
    let names = g.modules.names();
    let at = |n: &str| names.iter().position(|m| m == n);
    for (before, after) in [
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_pci"),
        ("virtio", "virtio_blk"),
        ("jbd2", "ext4"),
        ("mbcache", "ext4"),
        ("crc16", "ext4"),
        ("crc32c_generic", "ext4"),
    ] {
        assert!(
            at(before).is_some() && at(before) < at(after),
            "{before} must load before {after}: {names:?}"
        );
    }
    assert!(g.initramfs.starts_with(guest_dir()));
    let bytes = std::fs::read(&g.initramfs).unwrap();
    write_atomically(&g.initramfs, &bytes).unwrap();
}

/// One `virtio case used 0x… status 0x… device 0x…: <name>` line of `hostile-virtio`:
/// (used index, request status byte, device_status).
fn virtio_case(lines: &[String], name: &str) -> Option<(u32, u32, u32)> {
    let line = lines
        .iter()
        .find(|l| l.starts_with("virtio case ") && l.ends_with(&format!(": {name}")))?;
    let hex = |key: &str| {
        let at = line.find(&format!("{key} 0x"))? + key.len() + 3;
        u32::from_str_radix(line.get(at..at + 8)?, 16).ok()
    };
    Some((hex("used")?, hex("status")?, hex("device")?))
}

/// The malformed-chain cases: each must end in IOERR (status byte 1) on a used entry, or
/// in DEVICE_NEEDS_RESET (0x40) in device_status. (`zero-length` is checked apart: a
/// 0-byte read is a multiple of 512 bytes, so serving it is allowed.)
const HOSTILE_CHAIN_CASES: &[&str] = &[
    "desc-outside-ram",
    "desc-loop",
    "chain-too-long",
    "unaligned-length",
    "head-out-of-range",
];

#[test]
fn hostile_virtio_case_lines_are_parsed() {
    let lines = vec![
        "virtio case used 0x00000001 status 0x00000000 device 0x0000000f: valid-read".to_owned(),
        "virtio case used 0x00000000 status 0x000000ff device 0x0000004f: desc-loop".to_owned(),
    ];
    assert_eq!(virtio_case(&lines, "valid-read"), Some((1, 0, 0x0f)));
    assert_eq!(virtio_case(&lines, "desc-loop"), Some((0, 0xff, 0x4f)));
    assert_eq!(virtio_case(&lines, "loop"), None);
}

#[test]
fn keel_hostile_virtqueues_fail_the_request_or_the_device_not_the_host() {
    use keel_qemu_tests::guests::{COUNTER, HOSTILE_VIRTIO, build_guests};
    let guests = build_guests().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch.img");
    std::fs::write(&scratch, vec![0x5a; 1024 * 1024]).unwrap();
    // The flat guests as store files, run as configured VMs: `hostile` with a scratch disk,
    // `counter` beside it to show that other VMs keep running.
    let toml = format!(
        "[[vms]]\nname = \"counter\"\nmemory_mib = 16\nkernel = \"{COUNTER}.bin\"\nautostart = true\n\
         [[vms]]\nname = \"hostile\"\nmemory_mib = 64\nkernel = \"{HOSTILE_VIRTIO}.bin\"\n\
         autostart = false\n[[vms.disks]]\nfile = \"scratch.img\"\n"
    );
    let counter = guests.path(COUNTER);
    let hostile = guests.path(HOSTILE_VIRTIO);
    let image = keel_image_with(
        tmp.path(),
        &[
            (&format!("{COUNTER}.bin"), &counter),
            (&format!("{HOSTILE_VIRTIO}.bin"), &hostile),
            ("scratch.img", &scratch),
        ],
        &toml,
    );
    let mut m = keel_boot(&image);
    m.expect("[counter] tick ");
    m.type_line("vm start hostile");
    m.expect("vm hostile started");
    m.expect_within("[hostile] hostile-virtio: done", Duration::from_secs(120));
    let lines = lines_of(&m.transcript_text(), Some("hostile"));
    let all = lines.join("\n");
    let case = |name: &str| match virtio_case(&lines, name) {
        Some(c) => c,
        None => m.fail(format!("no line for case {name}:\n{all}")),
    };
    let valid = case("valid-read");
    check!(
        m,
        valid == (1, 0, 0x0f),
        "a correct read after a reset must succeed: {valid:x?}\n{all}"
    );
    for name in HOSTILE_CHAIN_CASES {
        let (used, status, device) = case(name);
        check!(
            m,
            (used == 1 && status == 1) || device & 0x40 != 0,
            "{name}: neither IOERR nor DEVICE_NEEDS_RESET (used {used}, status {status:#x}, \
             device {device:#x})\n{all}"
        );
    }
    let (used, status, device) = case("zero-length");
    check!(
        m,
        (used == 1 && status <= 1) || device & 0x40 != 0,
        "zero-length: the request was left unanswered (used {used}, status {status:#x}, \
         device {device:#x})\n{all}"
    );
    let (_, status, device) = case("queue-size-3");
    check!(
        m,
        status != 0 || device & 0x40 != 0,
        "queue-size-3: a queue of 3 entries served a request (device {device:#x})\n{all}"
    );
    let (used, _, _) = case("notify-early");
    check!(
        m,
        used == 0,
        "notify-early: a request was served before DRIVER_OK\n{all}"
    );

    // The host answers, the other VM still runs, and vm info shows the failed requests.
    // `counter` prints all the time: wait for each answer rather than for a prompt.
    m.type_line("version");
    m.expect("built with rustc");
    let ticks_before = m.transcript_text().matches("[counter] tick ").count();
    m.expect("[counter] tick ");
    m.expect("[counter] tick ");
    check!(
        m,
        m.transcript_text().matches("[counter] tick ").count() > ticks_before,
        "the counter VM stopped ticking"
    );
    m.type_line("vm info hostile");
    let counters = m.expect(Pattern::regex(
        r"disk:\s+scratch\.img[^\n]*\n[^\n]*reads \d+ \(\d+ KiB\), writes \d+ \(\d+ KiB\), flushes \d+, failed (\d+)",
    ));
    let failed: u64 = counters.group(1).parse().unwrap_or(0);
    check!(
        m,
        failed >= 1,
        "vm info counts no failed request after the hostile cases:\n{}",
        counters.text
    );
}

/// The reference for the Keel test above: under plain QEMU (SeaBIOS boots the guest's BIOS
/// image from IDE; the target is a modern-only virtio-blk disk), every case prints its line
/// and a correct read after each reset succeeds. QEMU itself answers the malformed chains
/// with DEVICE_NEEDS_RESET (0x40) or by serving them.
#[test]
fn plain_qemu_hostile_virtio_runs_every_case() {
    use keel_qemu_tests::guests::{HOSTILE_VIRTIO, build_guests};
    let guests = build_guests().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch.img");
    std::fs::write(&scratch, vec![0x5a; 1024 * 1024]).unwrap();
    let comma = |p: &Path| p.display().to_string().replace(',', ",,");
    let mut child = std::process::Command::new("timeout")
        .arg("60")
        .arg(keel_qemu_tests::qemu::QEMU)
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "qemu64",
            "-m",
            "64",
            "-nodefaults",
            "-no-reboot",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=ide,snapshot=on",
            comma(&guests.bios_image(HOSTILE_VIRTIO))
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=scratch",
            comma(&scratch)
        ))
        .args(["-device", "virtio-blk-pci,drive=scratch,disable-legacy=on"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running QEMU (Debian package qemu-system-x86)");
    // The guest halts when done: read up to its last line (or to EOF if `timeout` ends
    // QEMU first), then stop QEMU.
    let mut text = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            if line.trim_end() == "hostile-virtio: done" {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines_of(&text, None);
    let all = text.clone();
    assert!(lines.iter().any(|l| l == "hostile-virtio: done"), "{all}");
    assert_eq!(
        virtio_case(&lines, "valid-read"),
        Some((1, 0, 0x0f)),
        "valid-read under QEMU:\n{all}"
    );
    for name in HOSTILE_CHAIN_CASES
        .iter()
        .chain(&["queue-size-3", "notify-early"])
    {
        assert!(
            virtio_case(&lines, name).is_some(),
            "no line for {name}:\n{all}"
        );
    }
    assert!(
        virtio_case(&lines, "desc-loop").is_some_and(|(_, _, d)| d & 0x40 != 0),
        "QEMU flags a descriptor loop with DEVICE_NEEDS_RESET:\n{all}"
    );
}
