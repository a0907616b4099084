//! `boot-bench`: wall time from emulator start to Keel's first `keel> ` prompt, per boot path.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin boot-bench -- [--runs N] [--bochs-runs N]
//!     [--only pvh,seabios,ovmf,bochs]
//! ```
//!
//! Runs are sequential, so they do not compete for the CPU. Each run ends by killing the
//! emulator. The table shows the median, minimum and maximum wall time, and the median of the
//! kernel's own `boot time:` banner line (kernel entry to prompt, measured by the kernel).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use keel_qemu_tests::{Bochs, Error, Machine, PROMPT, Qemu, VERSION_LINE, artifacts, banner};

const USAGE: &str = "usage: boot-bench [--runs N] [--bochs-runs N] [--only pvh,seabios,ovmf,bochs]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BootPath {
    Pvh,
    SeaBios,
    Ovmf,
    Bochs,
}

impl BootPath {
    const ALL: [BootPath; 4] = [
        BootPath::Pvh,
        BootPath::SeaBios,
        BootPath::Ovmf,
        BootPath::Bochs,
    ];

    fn key(self) -> &'static str {
        match self {
            BootPath::Pvh => "pvh",
            BootPath::SeaBios => "seabios",
            BootPath::Ovmf => "ovmf",
            BootPath::Bochs => "bochs",
        }
    }

    fn label(self) -> &'static str {
        match self {
            BootPath::Pvh => "QEMU -kernel (PVH)",
            BootPath::SeaBios => "QEMU SeaBIOS + GRUB",
            BootPath::Ovmf => "QEMU OVMF + GRUB",
            BootPath::Bochs => "Bochs + GRUB (VT-x)",
        }
    }

    fn spawn(self, elf: &Path, image: &Path) -> Result<Machine, Error> {
        match self {
            BootPath::Pvh => Qemu::pvh(elf).spawn(),
            BootPath::SeaBios => Qemu::seabios(image).defmt_elf(elf).spawn(),
            BootPath::Ovmf => Qemu::ovmf(image).defmt_elf(elf).spawn(),
            BootPath::Bochs => Bochs::disk(image).defmt_elf(elf).spawn(),
        }
    }
}

struct Options {
    runs: usize,
    bochs_runs: usize,
    only: Vec<BootPath>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        runs: 5,
        bochs_runs: 3,
        only: BootPath::ALL.to_vec(),
    };
    let mut bochs_set = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let count = |s: String, name: &str| match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} needs a positive number, got {s:?}")),
        };
        match arg.as_str() {
            "--runs" => {
                opts.runs = count(value("--runs")?, "--runs")?;
                if !bochs_set {
                    opts.bochs_runs = opts.runs;
                }
            }
            "--bochs-runs" => {
                opts.bochs_runs = count(value("--bochs-runs")?, "--bochs-runs")?;
                bochs_set = true;
            }
            "--only" => {
                let list = value("--only")?;
                opts.only = list
                    .split(',')
                    .map(|k| {
                        BootPath::ALL
                            .into_iter()
                            .find(|p| p.key() == k.trim())
                            .ok_or(format!("unknown boot path {k:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

/// One boot: wall time to the prompt and the kernel's own boot time in ms.
fn measure(path: BootPath, elf: &Path, image: &Path) -> Result<(Duration, Option<u64>), Error> {
    let mut m = path.spawn(elf, image)?;
    m.wait_for(VERSION_LINE, m.timeout())?;
    let prompt = m.wait_for(PROMPT, m.timeout())?;
    let kernel_ms = banner::Banner::parse(prompt.before.as_bytes()).number("boot time");
    Ok((prompt.at, kernel_ms))
}

fn median<T: Copy + Ord>(values: &[T]) -> Option<T> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn size(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(md) => format!(
            "{:.1} MiB ({} bytes)",
            md.len() as f64 / (1024.0 * 1024.0),
            md.len()
        ),
        Err(e) => format!("unreadable: {e}"),
    }
}

/// The bytes an ELF64 loader copies (sum of `p_filesz` over PT_LOAD), without debug info.
fn loaded_bytes(elf: &Path) -> Option<u64> {
    let data = std::fs::read(elf).ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    // ELF magic, 64-bit class, little endian.
    if data.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    let mut total = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_LOAD: u32 = 1;
        if u32_at(ph)? == PT_LOAD {
            total += u64_at(ph + 0x20)?;
        }
    }
    Some(total)
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("boot-bench: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };

    eprintln!("boot-bench: building the kernel and keel.img…");
    let a = artifacts();
    let mut failed = false;
    let mut rows = Vec::new();
    for &path in &opts.only {
        let runs = if path == BootPath::Bochs {
            opts.bochs_runs
        } else {
            opts.runs
        };
        let mut walls = Vec::new();
        let mut kernel = Vec::new();
        let mut error = None;
        for run in 1..=runs {
            eprint!("boot-bench: {} run {run}/{runs}… ", path.label());
            match measure(path, &a.elf, &a.image) {
                Ok((wall, kernel_ms)) => {
                    eprintln!("{}", secs(wall));
                    walls.push(wall);
                    kernel.extend(kernel_ms);
                }
                Err(e) => {
                    eprintln!("failed");
                    eprintln!("{e}");
                    error = Some(e.to_string().lines().next().unwrap_or("").to_owned());
                    failed = true;
                    break;
                }
            }
        }
        rows.push((path, walls, kernel, error));
    }

    println!();
    println!("Keel boot time: wall time from emulator start to the first `keel> `");
    println!();
    println!(
        "{:<22} {:>4} {:>9} {:>9} {:>9} {:>14}",
        "boot path", "runs", "median", "min", "max", "kernel (med.)"
    );
    for (path, walls, kernel, error) in &rows {
        match (median(walls), error) {
            (Some(med), None) => println!(
                "{:<22} {:>4} {:>9} {:>9} {:>9} {:>14}",
                path.label(),
                walls.len(),
                secs(med),
                secs(walls.iter().copied().min().unwrap_or_default()),
                secs(walls.iter().copied().max().unwrap_or_default()),
                median(kernel).map_or("-".to_owned(), |ms| format!("{ms} ms")),
            ),
            (_, Some(e)) => println!("{:<22} failed: {e}", path.label()),
            (None, None) => println!("{:<22} no runs", path.label()),
        }
    }
    println!();
    println!("kernel ELF  {}  {}", a.elf.display(), size(&a.elf));
    if let Some(n) = loaded_bytes(&a.elf) {
        println!(
            "            loaded segments: {:.1} KiB ({n} bytes)",
            n as f64 / 1024.0
        );
    }
    // What GRUB reads from the ESP: the ELF cut to its loadable segments (keel_image's
    // stripping; the image builder does the same).
    match std::fs::read(&a.elf).map(|elf| keel_image::elf_strip::loadable_only(&elf)) {
        Ok(Ok(stripped)) => println!(
            "            on the ESP (stripped): {:.1} KiB ({} bytes)",
            stripped.len() as f64 / 1024.0,
            stripped.len()
        ),
        Ok(Err(e)) => println!("            on the ESP: cannot strip: {e}"),
        Err(e) => println!("            on the ESP: cannot read: {e}"),
    }
    println!("image       {}  {}", a.image.display(), size(&a.image));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> impl Iterator<Item = String> {
        s.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_and_flags() {
        let o = parse_args(args("")).unwrap();
        assert_eq!((o.runs, o.bochs_runs, o.only.len()), (5, 3, 4));
        let o = parse_args(args("--runs 7")).unwrap();
        assert_eq!((o.runs, o.bochs_runs), (7, 7));
        let o = parse_args(args("--bochs-runs 1 --runs 9 --only pvh,bochs")).unwrap();
        assert_eq!((o.runs, o.bochs_runs), (9, 1));
        assert_eq!(o.only, vec![BootPath::Pvh, BootPath::Bochs]);
        assert!(parse_args(args("--runs 0")).is_err());
        assert!(parse_args(args("--only nope")).is_err());
        assert!(parse_args(args("--frobnicate")).is_err());
    }

    #[test]
    fn median_picks_the_middle() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median::<u32>(&[]), None);
    }
}
