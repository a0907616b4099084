//! `host-disk-bench`: the appliance booted from each host disk kind Keel drives, with the
//! figures issue 21 asks for.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin host-disk-bench -- [--runs N]
//!     [--only virtio,nvme,ahci,ide] [--mib M]
//! ```
//!
//! One image (the test kernel, its API token, a store holding an `M` MiB file of
//! pseudo-random bytes, default 64) is copied once per kind and booted writable, with no NIC:
//! virtio-blk and NVMe under SeaBIOS on `-M pc`, AHCI (port 0 of ICH9) on `-M q35`, IDE
//! (`if=ide`) on `-M pc`. Per run: the wall time from emulator start to the prompt and the
//! kernel's own `boot time:`; the banner's `disk:` line must name the kind's driver; the
//! wall time of `config set hostname …` + `config save` (the save alone, as the console
//! answers it); `store sum` of the file, whose CRC32 must match, as the kernel times it and
//! as the console round trip does, in MB/s. Kinds run one after another; the table shows
//! the median of each figure. Not part of CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_qemu_tests::{Error, Machine, PROMPT, Qemu, appliance_image, artifacts, banner};

const USAGE: &str = "usage: host-disk-bench [--runs N] [--only virtio,nvme,ahci,ide] [--mib M]";

/// The store file read by `store sum`.
const BIG_FILE: &str = "big.bin";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Virtio,
    Nvme,
    Ahci,
    Ide,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Virtio, Kind::Nvme, Kind::Ahci, Kind::Ide];

    fn key(self) -> &'static str {
        match self {
            Kind::Virtio => "virtio",
            Kind::Nvme => "nvme",
            Kind::Ahci => "ahci",
            Kind::Ide => "ide",
        }
    }

    /// The first word of the banner's `disk:` line for this kind.
    fn driver(self) -> &'static str {
        match self {
            Kind::Virtio => "virtio-blk",
            Kind::Nvme => "nvme",
            Kind::Ahci => "ahci",
            Kind::Ide => "ata",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Virtio => "virtio-blk, SeaBIOS, -M pc",
            Kind::Nvme => "NVMe, SeaBIOS, -M pc",
            Kind::Ahci => "AHCI (ICH9), SeaBIOS, -M q35",
            Kind::Ide => "IDE (PIIX3), SeaBIOS, -M pc",
        }
    }

    fn qemu(self, image: &Path) -> Qemu {
        let q = match self {
            Kind::Virtio => Qemu::seabios(image),
            Kind::Nvme => Qemu::nvme_disk(image),
            Kind::Ahci => Qemu::ahci_disk(image),
            // `ide_disk` defaults to the small test guests' machine; the appliance gets the
            // same machine as the other kinds.
            Kind::Ide => Qemu::ide_disk(image)
                .cpu(keel_qemu_tests::qemu::CPU_SVM)
                .memory_mib(1024)
                .cpus(2),
        };
        q.writable_disk()
            .args(["-nic", "none"])
            .defmt_elf(&artifacts().elf)
    }
}

struct Options {
    runs: usize,
    only: Vec<Kind>,
    mib: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        runs: 1,
        only: Kind::ALL.to_vec(),
        mib: 64,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let count = |s: String, name: &str| match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} needs a positive number, got {s:?}")),
        };
        match arg.as_str() {
            "--runs" => opts.runs = count(value("--runs")?, "--runs")?,
            "--mib" => opts.mib = count(value("--mib")?, "--mib")?,
            "--only" => {
                opts.only = value("--only")?
                    .split(',')
                    .map(|k| {
                        Kind::ALL
                            .into_iter()
                            .find(|kind| kind.key() == k.trim())
                            .ok_or(format!("unknown disk kind {k:?} (virtio, nvme, ahci, ide)"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// One boot's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    boot_wall: Duration,
    boot_kernel_ms: Option<u64>,
    save_wall: Duration,
    sum_kernel_ms: u64,
    sum_wall: Duration,
}

/// Types `line` and returns the console output up to the next prompt, waiting at most
/// `timeout`.
fn command_within(m: &mut Machine, line: &str, timeout: Duration) -> Result<String, String> {
    m.send_line(line).map_err(|e| e.to_string())?;
    m.wait_for(PROMPT, timeout)
        .map(|found| found.before)
        .map_err(|e| format!("`{line}`: {e}"))
}

/// [`command_within`] the machine's default timeout.
fn command(m: &mut Machine, line: &str) -> Result<String, String> {
    let timeout = m.timeout();
    command_within(m, line, timeout)
}

/// How long `store sum` of `bytes` may take: PIO reads about 13 MB/s in QEMU on an idle
/// machine, and a machine shared with builds is several times slower.
fn read_timeout(bytes: usize) -> Duration {
    Duration::from_secs(60 + (bytes >> 20) as u64 * 2)
}

fn one_run(kind: Kind, image: &Path, file: &[u8], run: usize) -> Result<Figures, String> {
    let started = Instant::now();
    let mut m = kind.qemu(image).spawn().map_err(|e: Error| e.to_string())?;
    let timeout = m.timeout();
    let prompt = m
        .wait_for(PROMPT, timeout)
        .map_err(|e| format!("no prompt: {e}"))?;
    let boot_wall = started.elapsed();
    let banner = banner::Banner::parse(prompt.before.as_bytes());
    let disk = banner
        .text
        .lines()
        .find(|l| l.starts_with("disk: "))
        .unwrap_or("")
        .to_owned();
    let want = format!("disk: {} ", kind.driver());
    if !disk.starts_with(&want) || !disk.contains("guest store FAT") {
        return Err(format!(
            "the banner's disk line is {disk:?}, not {want:?} with a guest store"
        ));
    }

    command(
        &mut m,
        &format!("config set hostname bench-{}-{run}", kind.key()),
    )?;
    let t = Instant::now();
    let saved = command(&mut m, "config save")?;
    let save_wall = t.elapsed();
    if !saved.contains("configuration saved as generation") {
        return Err(format!("config save answered {saved:?}"));
    }

    let t = Instant::now();
    let out = command_within(
        &mut m,
        &format!("store sum {BIG_FILE}"),
        read_timeout(file.len()),
    )?;
    let sum_wall = t.elapsed();
    let expected = format!(
        "{BIG_FILE}: {} bytes, crc32 {:08x} (",
        file.len(),
        crc32fast::hash(file)
    );
    if !out.contains(&expected) {
        return Err(format!("store sum answered {out:?}, expected {expected}…"));
    }
    let sum_kernel_ms = out
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.trim_end().strip_suffix(" ms)"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(format!("no time in store sum's answer {out:?}"))?;
    m.kill();
    Ok(Figures {
        boot_wall,
        boot_kernel_ms: banner.number("boot time"),
        save_wall,
        sum_kernel_ms,
        sum_wall,
    })
}

fn median<T: Copy + PartialOrd>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

fn mb_per_s(bytes: usize, secs: f64) -> String {
    format!("{:.1}", bytes as f64 / 1e6 / secs.max(1e-3))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("host-disk-bench: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    eprintln!("host-disk-bench: building the kernel and the image…");
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("host-disk-bench: temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let a = artifacts();
    let file = artifacts::noise(opts.mib << 20, 0xd15c);
    let store = tmp.path().join("store");
    let built =
        std::fs::create_dir(&store).and_then(|()| std::fs::write(store.join(BIG_FILE), &file));
    if let Err(e) = built {
        eprintln!("host-disk-bench: writing the store: {e}");
        return ExitCode::FAILURE;
    }
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    let master = tmp.path().join("keel.img");
    appliance_image(Some(&store), &config, &[], &master, "the bench image");

    let mut failed = false;
    let mut rows = Vec::new();
    for &kind in &opts.only {
        let image: PathBuf = tmp.path().join(format!("{}.img", kind.key()));
        if let Err(e) = std::fs::copy(&master, &image) {
            eprintln!("host-disk-bench: copying the image: {e}");
            return ExitCode::FAILURE;
        }
        let mut figures = Vec::new();
        let mut error = None;
        for run in 1..=opts.runs {
            eprint!(
                "host-disk-bench: {} run {run}/{}… ",
                kind.label(),
                opts.runs
            );
            match one_run(kind, &image, &file, run) {
                Ok(f) => {
                    eprintln!(
                        "boot {:.2} s, save {} ms, store sum {} ms",
                        f.boot_wall.as_secs_f64(),
                        f.save_wall.as_millis(),
                        f.sum_kernel_ms
                    );
                    figures.push(f);
                }
                Err(e) => {
                    eprintln!("failed: {e}");
                    error = Some(e);
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&image);
        if let Some(e) = error {
            failed = true;
            rows.push(vec![kind.label().to_owned(), format!("FAILED: {e}")]);
            continue;
        }
        let boot = median(figures.iter().map(|f| f.boot_wall.as_secs_f64())).unwrap_or(0.0);
        let kernel = median(figures.iter().filter_map(|f| f.boot_kernel_ms));
        let save = median(figures.iter().map(|f| f.save_wall.as_millis())).unwrap_or(0);
        let sum_ms = median(figures.iter().map(|f| f.sum_kernel_ms)).unwrap_or(0);
        let sum_wall = median(figures.iter().map(|f| f.sum_wall.as_secs_f64())).unwrap_or(0.0);
        rows.push(vec![
            kind.label().to_owned(),
            format!("{boot:.2} s"),
            kernel.map_or("-".to_owned(), |k| format!("{k} ms")),
            format!("{save} ms"),
            format!("{sum_ms} ms"),
            mb_per_s(file.len(), sum_ms as f64 / 1e3),
            mb_per_s(file.len(), sum_wall),
        ]);
    }

    println!(
        "host disks: {} MiB store file, {} run(s) each, medians",
        opts.mib, opts.runs
    );
    let header = [
        "disk",
        "boot to prompt",
        "kernel boot",
        "config save",
        "store sum",
        "MB/s (kernel)",
        "MB/s (wall)",
    ];
    println!("{}", header.join(" | "));
    println!("{}", vec!["---"; header.len()].join(" | "));
    for row in rows {
        println!("{}", row.join(" | "));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
