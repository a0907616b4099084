//! The kvm-unit-tests table: every x86_64 test of `x86/unittests.cfg` directly under plain
//! QEMU TCG and as a Keel guest on AMD-V (Keel under QEMU TCG `-cpu qemu64,+svm,+npt`) and/or
//! VT-x (Keel under Bochs).
//!
//! ```sh
//! cargo run -p keel-qemu-tests --bin kvm-unit-tests -- [--backend svm|vmx]… [--no-qemu]
//!     [--no-keel] [--max-timeout <s>] [TEST…]
//! ```
//!
//! Without `--backend` it runs AMD-V only. TEST names sections of `unittests.cfg` (all
//! default x86_64 tests when none is given). Prints one row per test, then for each test
//! whose Keel result differs from QEMU's the last lines of Keel's output, then the counts.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_qemu_tests::kut::{self, Bucket, Outcome, TestSpec};
use keel_qemu_tests::{Bochs, Machine, Qemu, artifacts};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    Svm,
    Vmx,
}

impl Backend {
    fn column(self) -> &'static str {
        match self {
            Backend::Svm => "Keel AMD-V",
            Backend::Vmx => "Keel VT-x",
        }
    }
}

struct Args {
    backends: Vec<Backend>,
    qemu: bool,
    keel: bool,
    /// Caps every test's timeout (for a quicker table; the table then says so).
    max_timeout: Option<Duration>,
    tests: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        backends: Vec::new(),
        qemu: true,
        keel: true,
        max_timeout: None,
        tests: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => match it.next().as_deref() {
                Some("svm") => args.backends.push(Backend::Svm),
                Some("vmx") => args.backends.push(Backend::Vmx),
                other => return Err(format!("--backend takes svm or vmx, not {other:?}")),
            },
            "--no-qemu" => args.qemu = false,
            "--no-keel" => args.keel = false,
            "--max-timeout" => {
                let secs = it.next().and_then(|s| s.parse().ok());
                let Some(secs) = secs else {
                    return Err("--max-timeout takes a number of seconds".into());
                };
                args.max_timeout = Some(Duration::from_secs(secs));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: kvm-unit-tests [--backend svm|vmx]… [--no-qemu] [--no-keel] \
                     [--max-timeout <s>] [TEST…]"
                        .into(),
                );
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ => args.tests.push(a),
        }
    }
    if !args.keel {
        args.backends.clear();
    } else if args.backends.is_empty() {
        args.backends.push(Backend::Svm);
    }
    args.backends.sort();
    args.backends.dedup();
    Ok(args)
}

fn boot(backend: Backend, image: &std::path::Path) -> Machine {
    let a = artifacts();
    let mut m = match backend {
        Backend::Svm => Qemu::seabios(image)
            .defmt_elf(&a.elf)
            .hard_timeout(Duration::from_secs(4 * 3600))
            .spawn(),
        Backend::Vmx => Bochs::disk(image)
            .defmt_elf(&a.elf)
            .hard_timeout(Duration::from_secs(8 * 3600))
            .spawn(),
    }
    .unwrap_or_else(|e| panic!("starting Keel failed: {e}"));
    m.set_timeout(Duration::from_secs(120));
    m.expect_banner();
    m
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let suite = kut::build_suite().unwrap_or_else(|e| panic!("building kvm-unit-tests: {e}"));
    let all = kut::load_tests(&suite).unwrap_or_else(|e| panic!("{e}"));
    let mut tests: Vec<TestSpec> = if args.tests.is_empty() {
        all
    } else {
        let picked: Vec<TestSpec> = all
            .into_iter()
            .filter(|t| args.tests.contains(&t.name))
            .collect();
        for name in &args.tests {
            if !picked.iter().any(|t| &t.name == name) {
                eprintln!("no x86_64 test named {name} in unittests.cfg");
                std::process::exit(2);
            }
        }
        picked
    };
    if let Some(cap) = args.max_timeout {
        for t in &mut tests {
            t.timeout = t.timeout.min(cap);
        }
    }
    let scratch = kut::cache_dir().join(if args.keel { "run" } else { "run-qemu" });
    let mut results: BTreeMap<String, BTreeMap<&str, Outcome>> = BTreeMap::new();

    if args.qemu {
        for t in &tests {
            let o = kut::run_on_qemu(&suite, t, &scratch);
            eprintln!("{:<28} QEMU TCG    {}", t.name, o.cell());
            results
                .entry(t.name.clone())
                .or_default()
                .insert("QEMU TCG", o);
        }
    }
    // Keel takes at most 16 boot modules: one image (and boot) per batch of tests whose
    // `.flat` files and environment files fit.
    let batches = kut::batches(&tests, kut::MAX_BOOT_MODULES);
    for &backend in &args.backends {
        for (n, batch) in batches.iter().enumerate() {
            let dir = scratch.join(format!("batch-{n}"));
            let modules = kut::modules_for(&suite, batch, &dir).unwrap_or_else(|e| panic!("{e}"));
            let image = kut::keel_image(&modules, "kut.img").unwrap_or_else(|e| panic!("{e}"));
            let mut m = boot(backend, &image);
            for t in batch {
                if m.exit_status().is_some() {
                    m = boot(backend, &image);
                }
                let o = kut::run_on_keel(&mut m, t);
                eprintln!("{:<28} {:<11} {}", t.name, backend.column(), o.cell());
                results
                    .entry(t.name.clone())
                    .or_default()
                    .insert(backend.column(), o);
            }
            m.kill();
        }
    }

    let mut columns = Vec::new();
    if args.qemu {
        columns.push("QEMU TCG");
    }
    columns.extend(args.backends.iter().map(|b| b.column()));
    print!("| test |");
    for c in &columns {
        print!(" {c} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(columns.len()));
    for t in &tests {
        let row = &results[&t.name];
        print!("| {} |", t.name);
        for c in &columns {
            print!(
                " {} |",
                row.get(c).map_or_else(|| "-".into(), Outcome::cell)
            );
        }
        println!();
    }
    print!("| **passed / failed / skipped** |");
    for c in &columns {
        let (mut p, mut f, mut s) = (0, 0, 0);
        for row in results.values() {
            match row.get(c).map(Outcome::bucket) {
                Some(Bucket::Passed) => p += 1,
                Some(Bucket::Failed) => f += 1,
                Some(Bucket::Skipped) => s += 1,
                None => {}
            }
        }
        print!(" {p} / {f} / {s} |");
    }
    println!();
    for t in &tests {
        let row = &results[&t.name];
        for backend in &args.backends {
            let Some(keel) = row.get(backend.column()) else {
                continue;
            };
            let differs = row
                .get("QEMU TCG")
                .is_none_or(|q| q.bucket() != keel.bucket());
            if let (true, Some(tail)) = (differs, keel.tail()) {
                println!("\n{} on {} ({}):", t.name, backend.column(), keel.cell());
                for line in tail.lines() {
                    println!("    {line}");
                }
            }
        }
    }
}
