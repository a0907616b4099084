//! `disk-bench`: virtio-blk throughput of the Debian guest, directly under QEMU and as a Keel
//! VM, on the same raw image file; run by hand, not in CI.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin disk-bench -- [--only direct,keel]
//! ```
//!
//! The guest (Debian 12's kernel, busybox, the virtio-blk modules of
//! `keel_qemu_tests::disk_guest`) runs, on the raw device `/dev/vda` of a 256 MiB image:
//! sequential writes and reads of 192 MiB in 1 MiB blocks (`dd oflag=direct conv=fsync`,
//! `dd iflag=direct`), then 500 random 4 KiB reads (`dd iflag=direct`, one process each), and
//! prints its uptime around each phase. MB/s and IOPS come from those times (10 ms
//! resolution). The random-read figure includes starting a `dd` per read, the same in both
//! runs. Direct: `-M q35 -cpu qemu64 -m 256 -kernel -initrd -device
//! virtio-blk-pci,disable-legacy=on` on the image (`cache=writethrough`). Keel: the image in
//! the guest store as `bench.img`, the VM defined with `[[vms.disks]] file = "bench.img"`
//! (needs guest disks, issue 13). Both run in QEMU TCG: the ratio compares Keel's nested path
//! with TCG's direct one, not with hardware.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use keel_qemu_tests::disk_guest::{DISK_APPLETS, DISK_CMDLINE, disk_initramfs, disk_modules};
use keel_qemu_tests::linux_guest::{LinuxGuest, guest_dir, linux_guest};
use keel_qemu_tests::{Machine, Pattern, Qemu, artifacts};

/// The bench image's size.
const IMAGE_MIB: u64 = 256;
/// Bytes each sequential phase moves.
const SEQ_MIB: u64 = 192;
/// Random 4 KiB reads.
const RANDOM_READS: u64 = 500;

const TIMEOUT: Duration = Duration::from_secs(900);

/// The bench `/init` (after the module loads). `BENCH <phase> <start> <end>` lines, uptimes
/// in seconds.
const BENCH_INIT: &str = r#"n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
up() { cut -d' ' -f1 /proc/uptime; }
echo KEEL-BENCH-START
t0=$(up); dd if=/dev/zero of=/dev/vda bs=1M count=192 oflag=direct conv=fsync 2>/dev/null || echo BENCH-FAILED seq-write; t1=$(up)
echo "BENCH seq-write $t0 $t1"
t0=$(up); dd if=/dev/vda of=/dev/null bs=1M count=192 iflag=direct 2>/dev/null || echo BENCH-FAILED seq-read; t1=$(up)
echo "BENCH seq-read $t0 $t1"
blocks=$(( $(cat /sys/block/vda/size) / 8 ))
i=0
t0=$(up)
while [ $i -lt 500 ]; do
    dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$((RANDOM * 2 % blocks)) iflag=direct 2>/dev/null || echo BENCH-FAILED rand-read
    i=$((i+1))
done
t1=$(up)
echo "BENCH rand-read $t0 $t1"
echo KEEL-BENCH-DONE
poweroff -f
"#;

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    seq_write_mbs: f64,
    seq_read_mbs: f64,
    rand_read_iops: f64,
}

/// Seconds of each `BENCH <phase> <start> <end>` line among `lines`.
fn phase_seconds(lines: &[String], phase: &str) -> Result<f64, String> {
    let prefix = format!("BENCH {phase} ");
    let line = lines
        .iter()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
        .ok_or_else(|| format!("the guest printed no '{prefix}' line"))?;
    let mut times = line.split_whitespace().map(str::parse::<f64>);
    match (times.next(), times.next()) {
        (Some(Ok(start)), Some(Ok(end))) if end > start => Ok(end - start),
        _ => Err(format!("bad timing line {line:?}")),
    }
}

fn figures(text: &str) -> Result<Figures, String> {
    let lines: Vec<String> = text
        .replace('\r', "\n")
        .lines()
        .map(str::to_owned)
        .collect();
    if let Some(failed) = lines.iter().find(|l| l.contains("BENCH-FAILED")) {
        return Err(format!("a dd failed in the guest: {failed}"));
    }
    let mb = SEQ_MIB as f64 * 1.048_576;
    Ok(Figures {
        seq_write_mbs: mb / phase_seconds(&lines, "seq-write")?,
        seq_read_mbs: mb / phase_seconds(&lines, "seq-read")?,
        rand_read_iops: RANDOM_READS as f64 / phase_seconds(&lines, "rand-read")?,
    })
}

fn wait_done(m: &mut Machine, prefix: &str) -> Result<String, String> {
    m.wait_for(format!("{prefix}KEEL-BENCH-START"), TIMEOUT)
        .map_err(|e| e.to_string())?;
    m.wait_for(format!("{prefix}KEEL-BENCH-DONE"), TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(m.transcript_text())
}

fn direct(guest: &LinuxGuest, initramfs: &Path, image: &Path) -> Result<Figures, String> {
    let image_arg = image.to_string_lossy().replace(',', ",,");
    let mut q = Qemu::pvh(&guest.kernel)
        .machine("q35")
        .cpu("qemu64")
        .memory_mib(256)
        .cpus(1)
        .append(DISK_CMDLINE)
        .hard_timeout(TIMEOUT)
        .args([
            "-initrd".to_owned(),
            initramfs.display().to_string(),
            "-drive".to_owned(),
            format!("file={image_arg},format=raw,if=none,id=bench,cache=writethrough"),
            "-device".to_owned(),
            "virtio-blk-pci,drive=bench,disable-legacy=on".to_owned(),
        ]);
    q.defmt_elf = None;
    let mut m = q.spawn().map_err(|e| e.to_string())?;
    let text = wait_done(&mut m, "")?;
    let _ = m.wait_exit(Duration::from_secs(30));
    figures(&text)
}

fn keel(guest: &LinuxGuest, initramfs: &Path, image: &Path) -> Result<Figures, String> {
    let a = artifacts();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = dir.path().join("store");
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, store.join(name))
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", from.display()))
    };
    std::fs::create_dir(&store).map_err(|e| e.to_string())?;
    copy(&guest.kernel, "vmlinuz")?;
    copy(initramfs, "disk-bench.cpio")?;
    copy(image, "bench.img")?;
    let toml = format!(
        "[[vms]]\nname = \"bench\"\nmemory_mib = 256\nvcpus = 1\nkernel = \"vmlinuz\"\n\
         initrd = \"disk-bench.cpio\"\ncmdline = \"{DISK_CMDLINE}\"\nautostart = true\n\
         [[vms.disks]]\nfile = \"bench.img\"\n"
    );
    let mut config = keel_image::appliance::parse_toml(&toml)
        .map_err(|e| format!("the bench VM's configuration does not parse: {e}"))?;
    config.management.api_tokens.push(a.api_token.clone());
    let keel_img = dir.path().join("keel.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    keel_image::assemble_image(
        &a.elf,
        &[],
        &cmdline,
        Some(&store),
        &config.to_json_pretty(),
        &keel_img,
    )
    .map_err(|e| e.to_string())?;
    let mut m = Qemu::seabios(&keel_img)
        .machine("q35")
        .defmt_elf(&a.elf)
        .writable_disk()
        .hard_timeout(TIMEOUT)
        .spawn()
        .map_err(|e| e.to_string())?;
    m.expect_banner();
    let text = wait_done(&mut m, "[bench] ")?;
    // The VM's exits and disk counters, for finding where Keel's time goes (issue 16).
    m.wait_for("vm bench stopped", TIMEOUT)
        .map_err(|e| e.to_string())?;
    m.type_line("vm info bench");
    m.wait_for(Pattern::regex(r"(?s)vm info bench.*exits.*keel> "), TIMEOUT)
        .map_err(|e| e.to_string())?;
    let transcript = m.transcript_text();
    let info = transcript
        .rsplit("vm info bench")
        .next()
        .unwrap_or_default();
    eprintln!("{info}");
    let guest_lines: String = text
        .replace('\r', "\n")
        .lines()
        .filter_map(|l| l.split_once("[bench] ").map(|(_, g)| format!("{g}\n")))
        .collect();
    figures(&guest_lines)
}

/// A zero-filled raw image of [`IMAGE_MIB`] in `dir`.
fn bench_image(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("bench.img");
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(IMAGE_MIB * 1024 * 1024)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<8} seq write {:>8.1} MB/s   seq read {:>8.1} MB/s   4 KiB random read {:>8.1} IOPS",
        f.seq_write_mbs, f.seq_read_mbs, f.rand_read_iops
    );
}

fn main() -> ExitCode {
    let mut only = vec!["direct".to_owned(), "keel".to_owned()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--only", Some(list)) => only = list.split(',').map(str::to_owned).collect(),
            _ => {
                eprintln!("usage: disk-bench [--only direct,keel]");
                return ExitCode::from(2);
            }
        }
    }
    let run = || -> Result<(), String> {
        let guest = linux_guest().map_err(|e| e.to_string())?;
        let modules = disk_modules(&guest).map_err(|e| e.to_string())?;
        let archive = disk_initramfs(&guest, &modules, BENCH_INIT, DISK_APPLETS)
            .map_err(|e| e.to_string())?;
        let initramfs = guest_dir().join("disk-bench.cpio");
        keel_qemu_tests::disk_guest::write_atomically(&initramfs, &archive)
            .map_err(|e| e.to_string())?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut results = Vec::new();
        for name in &only {
            let image = bench_image(dir.path())?;
            let f = match name.as_str() {
                "direct" => direct(&guest, &initramfs, &image)?,
                "keel" => keel(&guest, &initramfs, &image)?,
                other => return Err(format!("unknown run {other:?}: direct or keel")),
            };
            print(name, &f);
            results.push((name.clone(), f));
        }
        if let (Some((_, d)), Some((_, k))) = (
            results.iter().find(|(n, _)| n == "direct"),
            results.iter().find(|(n, _)| n == "keel"),
        ) {
            println!(
                "keel/direct  seq write {:.2}   seq read {:.2}   random read {:.2}",
                k.seq_write_mbs / d.seq_write_mbs,
                k.seq_read_mbs / d.seq_read_mbs,
                k.rand_read_iops / d.rand_read_iops
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disk-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_phase_lines() {
        let text = "x\r\nBENCH seq-write 10.00 12.00\nBENCH seq-read 12.50 13.50\n\
                    BENCH rand-read 14.00 19.00\n";
        let f = figures(text).unwrap();
        assert!((f.seq_write_mbs - 192.0 * 1.048_576 / 2.0).abs() < 1e-9);
        assert!((f.seq_read_mbs - 192.0 * 1.048_576).abs() < 1e-9);
        assert!((f.rand_read_iops - 100.0).abs() < 1e-9);
        assert!(figures("BENCH-FAILED seq-read").is_err());
        assert!(figures("BENCH seq-write 3 2").is_err());
    }

    #[test]
    fn the_script_moves_what_the_figures_assume() {
        assert_eq!(
            BENCH_INIT
                .matches(&format!("bs=1M count={SEQ_MIB} "))
                .count(),
            2
        );
        assert!(BENCH_INIT.contains(&format!("[ $i -lt {RANDOM_READS} ]")));
    }
}
