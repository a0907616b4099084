//! Snapshots as store files on AMD-V under QEMU TCG: the Debian shell guest with a counting
//! loop is snapshotted (`vm snapshot`), stopped and restored (`vm restore`), and counts on
//! from where it was; the snapshot survives a reboot of the appliance; power cuts while a
//! snapshot is being written never leave a store that `fsck.fat -n` rejects once Keel has
//! booted again (and right after the cut, at worst lost clusters, never a damaged file).
//!
//! On VT-x under Bochs the counter guest (`counter.bin`, 16 MiB) makes the round trip: its
//! tick stream before the snapshot and after the restore is one stream with no gap or
//! repeat.
//!
//! The image: the test kernel with the Debian kernel and the shell initramfs as boot
//! modules, and a guest store with room for snapshots (built around a filler file that
//! `mdel` then deletes, as the store is sized to its files).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::linux_guest::{SHELL_INITRAMFS, SHELL_READY_MARKER, vm_run_shell_line};
use keel_qemu_tests::{Bochs, Machine, Pattern, Qemu, artifacts, check, linux_artifacts};

/// Free room in the store for snapshots (the 256 MiB shell guest's is about 72 MiB).
const ROOM_BYTES: u64 = 200 << 20;

/// Power cuts while a snapshot is written (each a boot that restores the base snapshot).
const POWER_CUTS: usize = 8;

struct Image {
    path: PathBuf,
    store_offset: u64,
    store_bytes: u64,
}

fn build_image(dir: &Path) -> Image {
    let a = artifacts();
    let linux = linux_artifacts();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let filler = std::fs::File::create(store.join("room.bin")).unwrap();
    filler.set_len(ROOM_BYTES).unwrap();
    drop(filler);
    let shell = linux.initramfs.with_file_name(SHELL_INITRAMFS);
    let path = dir.join("keel-snapshots.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = keel_image::tls_cert::default_config(&a.api_token);
    let summary = keel_image::assemble_image(
        &a.elf,
        &[linux.guest.kernel.clone(), shell],
        &cmdline,
        Some(&store),
        &config.to_json_pretty(),
        &path,
    )
    .unwrap_or_else(|e| panic!("assembling the snapshot image: {e}"));
    let part = summary.layout.store();
    let image = Image {
        path,
        store_offset: part.first_lba * 512,
        store_bytes: part.sectors * 512,
    };
    let out = std::process::Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@{}", image.path.display(), image.store_offset))
        .arg("::room.bin")
        .output()
        .expect("mdel from mtools (image-builder/install-deps.sh installs it)");
    assert!(out.status.success(), "mdel: {out:?}");
    assert_eq!(fsck(&image).0, 0, "the fresh store");
    image
}

/// `fsck.fat -n` over the image's store partition: exit code and output.
fn fsck(image: &Image) -> (i32, String) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&image.path).unwrap();
    f.seek(SeekFrom::Start(image.store_offset)).unwrap();
    let mut bytes = vec![0u8; image.store_bytes as usize];
    f.read_exact(&mut bytes).unwrap();
    let copy = image.path.with_extension("store");
    std::fs::write(&copy, &bytes).unwrap();
    let out = std::process::Command::new("fsck.fat")
        .arg("-n")
        .arg(&copy)
        .output()
        .expect("fsck.fat from dosfstools");
    std::fs::remove_file(&copy).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// What `fsck.fat -n` may report right after a cut, before Keel repairs it at boot: lost
/// clusters and FAT copies that differ (see `kernel/src/store/fat_write.rs`).
fn only_lost_clusters(out: &str) -> bool {
    out.lines().skip(1).all(|l| {
        let l = l.trim();
        l.is_empty()
            || l.starts_with("Reclaimed ")
            || l.starts_with("FATs differ but appear to be intact")
            || l.starts_with("Using first FAT")
            || l.starts_with("Free cluster summary")
            || l.starts_with("Auto-correcting")
            || l.starts_with("Leaving filesystem unchanged")
            || l.contains(" files, ")
    })
}

fn boot(image: &Image) -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&image.path)
        .memory_mib(1024)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args(["-nic", "none"])
        .hard_timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    m.expect_banner();
    m
}

/// Types `line` into VM `id`'s shell through its console, waits for `answer`, detaches.
fn in_guest_shell(m: &mut Machine, id: u32, line: &str, answer: &str) {
    m.type_line(&format!("vm console {id}"));
    m.expect(format!("[attached to {id}: Ctrl-] detaches]"));
    m.type_line(line);
    m.expect(answer);
    m.send("\x1d").unwrap();
    m.expect(format!("[detached from {id}]"));
    m.expect_prompt();
}

/// The counts VM `id` printed in `text`.
fn counts(text: &str, id: u32) -> Vec<u64> {
    let prefix = format!("[vm{id}] KEEL-COUNT ");
    text.lines()
        .filter_map(|l| {
            let at = l.find(&prefix)?;
            l[at + prefix.len()..].trim().parse().ok()
        })
        .collect()
}

/// Starts the shell guest as VM 1 with a loop printing `KEEL-COUNT n` every second.
fn start_counting_guest(m: &mut Machine) {
    m.type_line(&vm_run_shell_line());
    m.expect("vm 1 started");
    m.expect_within(
        format!("[vm1] {SHELL_READY_MARKER}"),
        Duration::from_secs(480),
    );
    in_guest_shell(
        m,
        1,
        "(i=0; while :; do i=$((i+1)); echo KEEL-COUNT $i; sleep 1; done) &",
        "KEEL-COUNT 1",
    );
    m.expect("[vm1] KEEL-COUNT 3");
}

/// Types `line` and returns its answer: the line holding `marker`, or an `error:` line. (A
/// running guest's output redraws the prompt, so `Machine::command` could take a redrawn
/// prompt for the command's end.)
fn answer(m: &mut Machine, line: &str, marker: &str) -> String {
    m.type_line(line);
    let found = m.expect_within(
        Pattern::regex(&format!(
            r"([^\r\n]*{}[^\r\n]*|error: [^\r\n]*)\r?\n",
            regex::escape(marker)
        )),
        Duration::from_secs(600),
    );
    found.text.trim_end().to_owned()
}

/// `vm snapshot <vm> <name>`: checks the answer, returns the last count `vm` printed
/// before it paused and the milliseconds the write took.
fn snapshot(m: &mut Machine, vm: u32, name: &str) -> (u64, u64) {
    let start = m.cursor();
    let out = answer(
        m,
        &format!("vm snapshot {vm} {name}"),
        &format!("vm {vm} snapshot '{name}': "),
    );
    check!(
        m,
        out.contains(&format!("vm {vm} snapshot '{name}': ")) && out.contains("the VM runs on"),
        "vm snapshot: {out:?}"
    );
    eprintln!("{}", out.trim());
    let text = String::from_utf8_lossy(&m.transcript()).into_owned();
    let upto = text[start.min(text.len())..]
        .find(&format!("vm {vm} snapshot '{name}'"))
        .map_or(text.len(), |i| start + i);
    let Some(&last) = counts(&text[..upto], vm).last() else {
        m.fail("no count before the snapshot");
    };
    let ms = out
        .split(" in ")
        .nth(2)
        .and_then(|s| s.split(" ms").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    (last, ms)
}

/// `vm restore <name>` as VM `id`: it runs and counts on from `last` (the next count is
/// `last + 1`, or `last` again if that line was still on its way out at the pause; never a
/// new count from 1).
fn restore_and_check_count(m: &mut Machine, name: &str, id: u32, last: u64) {
    let start = m.cursor();
    let out = answer(
        m,
        &format!("vm restore {name}"),
        &format!("restored from snapshot '{name}' in "),
    );
    check!(
        m,
        out.contains(&format!("vm {id} restored from snapshot '{name}' in ")),
        "vm restore: {out:?}"
    );
    eprintln!("{}", out.trim());
    m.expect(format!("[vm{id}] KEEL-COUNT {}", last + 2));
    let raw = m.transcript();
    let after = counts(&String::from_utf8_lossy(&raw[start.min(raw.len())..]), id);
    // The console forwards a VM's output in the main loop, so a count the guest printed
    // just before the pause may reach the transcript after the snapshot's answer: the next
    // count is `last + 1`, `last + 2`, or `last` again if that line was cut at the pause.
    check!(
        m,
        after.first().is_some_and(|&f| f >= last && f <= last + 2)
            && after.windows(2).all(|w| w[1] == w[0] + 1),
        "VM {id} restored from '{name}' counted {after:?}; it stood at {last}"
    );
    in_guest_shell(m, id, "echo alive-$((6*7))", "alive-42");
}

#[test]
fn a_snapshot_restores_counting_on_and_again_after_a_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(tmp.path());
    let mut m = boot(&image);
    start_counting_guest(&mut m);
    let (last, write_ms) = snapshot(&mut m, 1, "counting");
    // The original goes on counting after its snapshot.
    m.expect(format!("[vm1] KEEL-COUNT {}", last + 2));
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    let listed = m.command("vm snapshots");
    check!(
        m,
        listed
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["counting", "1"])),
        "vm snapshots: {listed}"
    );
    let restore_started = Instant::now();
    restore_and_check_count(&mut m, "counting", 2, last);
    let restore_ms: u64 = m
        .transcript_text()
        .rsplit("restored from snapshot 'counting' in ")
        .next()
        .and_then(|t| t.split(" ms").next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "snapshot figures (256 MiB shell guest, TCG): write {write_ms} ms, restore {restore_ms} \
         ms in Keel, {:?} from typing to the guest's shell answering",
        restore_started.elapsed()
    );
    m.type_line("vm stop 2 force");
    m.expect("vm 2 stopped: stopped by the operator");
    m.expect_prompt();
    m.kill();
    let (rc, out) = fsck(&image);
    check!(m, rc == 0, "fsck.fat -n after the snapshot: {out}");

    // Power off and on: the snapshot is files, listed, restored and deleted after the reboot.
    let mut m = boot(&image);
    let listed = m.command("vm snapshots");
    check!(
        m,
        listed
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["counting", "1"])),
        "vm snapshots after a reboot: {listed}"
    );
    // This boot calibrated the TSC anew: the restored VM takes its rate and counts on.
    restore_and_check_count(&mut m, "counting", 1, last);
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    let rm = m.command("snapshot rm counting");
    check!(
        m,
        rm.contains("snapshot 'counting' deleted ("),
        "snapshot rm: {rm}"
    );
    let listed = m.command("vm snapshots");
    check!(m, listed.contains("no snapshots"), "after rm: {listed}");
    let again = m.command("vm restore counting");
    check!(
        m,
        again.contains("no saved VM or snapshot named 'counting'"),
        "restore of a deleted snapshot: {again}"
    );
    m.kill();
    let (rc, out) = fsck(&image);
    check!(m, rc == 0, "fsck.fat -n after snapshot rm: {out}");
}

/// xorshift64 delays, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn power_cuts_while_writing_a_snapshot_never_corrupt_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(tmp.path());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("snapshot power cuts: {POWER_CUTS} cuts, seed {seed:#x}");
    let mut rng = Rng(seed);

    // Each boot starts the shell guest and snapshots it at once (its kernel and initramfs
    // are in RAM: about 10 MiB to write); the first boot's whole snapshot times the window.
    let start_guest = |m: &mut Machine| {
        m.type_line(&vm_run_shell_line());
        m.expect("vm 1 started");
        m.expect_prompt();
    };
    let mut m = boot(&image);
    start_guest(&mut m);
    let typed = Instant::now();
    let out = answer(&mut m, "vm snapshot 1 calib", "vm 1 snapshot 'calib': ");
    check!(m, out.contains("vm 1 snapshot 'calib': "), "{out}");
    let window = typed.elapsed();
    eprintln!("{} ({window:?} from typing)", out.trim());
    m.kill();

    let mut complete = 0;
    for cut in 0..POWER_CUTS {
        let mut m = boot(&image);
        start_guest(&mut m);
        let name = format!("cut{cut}");
        m.type_line(&format!("vm snapshot 1 {name}"));
        std::thread::sleep(Duration::from_micros(
            rng.below(window.as_micros() as u64 + 1),
        ));
        m.kill();
        std::thread::sleep(Duration::from_millis(300));
        if m.transcript_text()
            .contains(&format!("snapshot '{name}': "))
        {
            complete += 1;
        }
        let (rc, out) = fsck(&image);
        check!(
            m,
            rc == 0 || only_lost_clusters(&out),
            "cut {cut} (seed {seed:#x}): fsck.fat -n right after the cut: {out}"
        );
    }
    // A last boot repairs what the last cut left; the finished snapshots are listed, the
    // interrupted ones are not, and no info file is damaged.
    let mut m = boot(&image);
    let listed = m.command("vm snapshots");
    let listed_cuts = listed
        .lines()
        .filter(|l| l.trim_start().starts_with("cut"))
        .count();
    check!(
        m,
        listed.contains("calib") && !listed.contains("error") && listed_cuts >= complete,
        "vm snapshots after the cuts ({complete} finished): {listed}"
    );
    eprintln!(
        "{complete} of {POWER_CUTS} snapshots finished before their cut; {listed_cuts} listed"
    );
    m.kill();
    let (rc, out) = fsck(&image);
    check!(
        m,
        rc == 0,
        "fsck.fat -n after the cuts and a boot (seed {seed:#x}): {out}"
    );
}

/// The counter guest's tick lines in `stream` if they are exactly `tick 0`, `tick 1`, … (the
/// last line may be cut short): the last whole tick.
fn consecutive_ticks(stream: &str) -> Option<u64> {
    let mut last = None;
    let mut lines = stream.split('\n').peekable();
    while let Some(line) = lines.next() {
        let want = format!("tick {}", last.map_or(0, |n: u64| n + 1));
        if lines.peek().is_none() && line != want {
            return want.starts_with(line).then_some(last).flatten();
        }
        if line != want {
            return None;
        }
        last = Some(last.map_or(0, |n| n + 1));
    }
    last
}

fn vm_log(m: &mut Machine, id: u32) -> String {
    m.command(&format!("vm log {id}")).replace('\r', "")
}

/// VT-x: the counter guest paused, snapshotted to the store, stopped, restored from the
/// files: its ticks go on from the last one with no gap or repeat.
#[test]
fn vtx_counter_snapshot_round_trip() {
    let a = artifacts();
    let mut m = Bochs::disk(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        banner
            .field("virtualization")
            .is_some_and(|v| v.starts_with("VT-x with EPT")),
        "not the VT-x path:\n{}",
        banner.text
    );
    m.type_line("vm run counter.bin");
    m.expect("[vm1] tick 3");
    m.type_line("vm pause 1");
    m.expect("vm 1 paused");
    m.expect_prompt();
    let before = vm_log(&mut m, 1);
    let out = m.command("vm snapshot 1 ticker");
    check!(
        m,
        out.contains("vm 1 snapshot 'ticker': ")
            && out.contains(" for 16 MiB of RAM")
            && out.contains("the VM stays paused"),
        "vm snapshot: {out:?}"
    );
    eprintln!("VT-x: {}", out.trim());
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    let restored = m.command("vm restore ticker");
    check!(
        m,
        restored.contains("vm 2 restored from snapshot 'ticker' in "),
        "vm restore: {restored:?}"
    );
    eprintln!("VT-x: {}", restored.trim());
    m.expect(Pattern::regex(r"\[vm2\] tick \d+"));
    m.expect(Pattern::regex(r"\[vm2\] tick \d+"));
    m.type_line("vm pause 2");
    m.expect("vm 2 paused");
    m.expect_prompt();
    let after = vm_log(&mut m, 2);
    let joined = [format!("{before}\n{after}"), format!("{before}{after}")];
    let last = joined
        .iter()
        .find_map(|s| consecutive_ticks(s.trim_end_matches('\n')));
    check!(
        m,
        last.is_some_and(|n| n >= 4),
        "the restored counter does not continue the stream:\nbefore:\n{before}\nafter:\n{after}"
    );
    let rm = m.command("snapshot rm ticker");
    check!(m, rm.contains("snapshot 'ticker' deleted"), "{rm}");
}
