//! The fuzz smoke: builds every cargo-fuzz target in `fuzz/` once (release, debug assertions
//! on, on the pinned nightly), then runs each for `KEEL_FUZZ_SECONDS` (default 12) seconds,
//! starting from a temporary copy of its committed corpus `fuzz/corpus/<target>/`, so the
//! repository's corpus never grows. A crash, leak, timeout or out-of-memory fails the test,
//! naming the target and the input libFuzzer saved (`fuzz/artifacts/<target>/…`). Each
//! target's executions per second are printed (`--nocapture` to see them).
//!
//! Nothing is skipped: a missing nightly or cargo-fuzz fails with the command to install it
//! (`image-builder/install-deps.sh` installs both). It lives here, not in `.ci/run`, so the
//! README's `cargo test --workspace` is all CI runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The nightly cargo-fuzz builds with (libFuzzer needs `-Zsanitizer`): the one
/// `image-builder/install-deps.sh` installs as `FIRMWARE_TOOLCHAIN`.
const NIGHTLY: &str = "nightly-2025-06-05";
/// The cargo-fuzz version `image-builder/install-deps.sh` installs.
const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Seconds each target runs unless `KEEL_FUZZ_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 12;
/// libFuzzer's per-input timeout (seconds): an input slower than this is a failure.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests has a parent directory")
        .join("fuzz")
}

/// `cargo +NIGHTLY <args>` in `fuzz/`, without the outer cargo's toolchain and build settings
/// leaking in (`cargo test` runs under the stable toolchain rust-toolchain.toml pins).
fn cargo_nightly(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{NIGHTLY}"))
        .args(args)
        .current_dir(fuzz_dir());
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("fuzz smoke: could not run {what}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `lines` lines of `s`.
fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Fails with the install command when the pinned nightly or cargo-fuzz is missing.
fn check_tools() {
    let out = run(cargo_nightly(&["--version"]), &format!("cargo +{NIGHTLY}"));
    assert!(
        out.status.success(),
        "fuzz smoke: the {NIGHTLY} toolchain is missing ({}); install it with \
         `rustup toolchain install {NIGHTLY} --profile minimal -c rust-src` \
         (or run image-builder/install-deps.sh)",
        text(&out.stderr).trim()
    );
    let out = run(
        cargo_nightly(&["fuzz", "--version"]),
        "cargo fuzz --version",
    );
    let version = text(&out.stdout);
    assert!(
        out.status.success() && version.trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}"),
        "fuzz smoke: cargo-fuzz {CARGO_FUZZ_VERSION} is missing (found: {:?}); install it with \
         `cargo install --locked --force cargo-fuzz --version {CARGO_FUZZ_VERSION}` \
         (or run image-builder/install-deps.sh)",
        if out.status.success() {
            version.trim().to_string()
        } else {
            text(&out.stderr).trim().to_string()
        }
    );
}

/// The targets `cargo fuzz list` names.
fn targets() -> Vec<String> {
    let out = run(cargo_nightly(&["fuzz", "list"]), "cargo fuzz list");
    assert!(
        out.status.success(),
        "fuzz smoke: `cargo +{NIGHTLY} fuzz list` in fuzz/ failed:\n{}",
        text(&out.stderr)
    );
    let targets: Vec<String> = text(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert!(
        !targets.is_empty(),
        "fuzz smoke: `cargo fuzz list` in fuzz/ names no target"
    );
    targets
}

/// Copies `fuzz/corpus/<target>/` (which must hold at least one seed) into a fresh directory.
fn corpus_copy(target: &str) -> Result<tempfile::TempDir, String> {
    let seeds = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&seeds)
        .map_err(|e| format!("{target}: no committed corpus {}: {e}", seeds.display()))?;
    let copy = tempfile::Builder::new()
        .prefix(&format!("keel-fuzz-{target}-"))
        .tempdir()
        .expect("a temporary corpus directory");
    let mut n = 0;
    for entry in entries {
        let entry = entry.expect("a corpus directory entry");
        if entry.file_type().expect("a corpus entry's type").is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name()))
                .expect("copying a seed");
            n += 1;
        }
    }
    if n == 0 {
        return Err(format!("{target}: the corpus {} is empty", seeds.display()));
    }
    Ok(copy)
}

/// A `stat::<name>: <value>` line of libFuzzer's final statistics.
fn stat(output: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// The input libFuzzer saved for a failure (`Test unit written to <path>`), if any.
fn artifact(output: &str) -> Option<PathBuf> {
    output.lines().find_map(|l| {
        let (_, path) = l.split_once("Test unit written to ")?;
        let path = Path::new(path.trim());
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            fuzz_dir().join(path)
        })
    })
}

/// What kind of failure libFuzzer reported.
fn failure_kind(output: &str) -> &'static str {
    if output.contains("ERROR: libFuzzer: timeout") {
        "timeout"
    } else if output.contains("ERROR: LeakSanitizer") {
        "leak"
    } else if output.contains("out-of-memory") {
        "out of memory"
    } else {
        "crash"
    }
}

#[test]
fn every_fuzz_target_builds_and_survives_a_short_run() {
    let seconds: u64 = match std::env::var("KEEL_FUZZ_SECONDS") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("KEEL_FUZZ_SECONDS={s:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECONDS,
    };
    check_tools();

    // Build every target once; the runs below reuse the build (same flags).
    let start = Instant::now();
    let out = run(
        cargo_nightly(&["fuzz", "build", "-O", "--debug-assertions"]),
        "cargo fuzz build",
    );
    assert!(
        out.status.success(),
        "fuzz smoke: `cargo +{NIGHTLY} fuzz build -O --debug-assertions` in fuzz/ failed:\n{}",
        tail(&text(&out.stderr), 60)
    );
    eprintln!(
        "fuzz smoke: built all targets in {:.0} s",
        start.elapsed().as_secs_f64()
    );

    let targets = targets();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for target in &targets {
        let corpus = match corpus_copy(target) {
            Ok(corpus) => corpus,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let corpus_arg = corpus.path().to_str().expect("a UTF-8 temporary path");
        let max_time = format!("-max_total_time={seconds}");
        let timeout = format!("-timeout={INPUT_TIMEOUT_SECONDS}");
        let started = Instant::now();
        let out = run(
            cargo_nightly(&[
                "fuzz",
                "run",
                "-O",
                "--debug-assertions",
                target,
                corpus_arg,
                "--",
                &max_time,
                &timeout,
                "-print_final_stats=1",
            ]),
            &format!("cargo fuzz run {target}"),
        );
        let elapsed = started.elapsed().as_secs_f64();
        let stderr = text(&out.stderr);
        if !out.status.success() {
            let saved = match artifact(&stderr) {
                Some(path) => format!("input saved as {}", path.display()),
                None => "no input saved".to_string(),
            };
            failures.push(format!(
                "{target}: {} ({saved}); reproduce with `cd fuzz && cargo +{NIGHTLY} fuzz run -O -a \
                 {target} <that file>`\n{}",
                failure_kind(&stderr),
                tail(&stderr, 40)
            ));
            continue;
        }
        let Some(units) = stat(&stderr, "number_of_executed_units") else {
            failures.push(format!(
                "{target}: libFuzzer printed no final statistics\n{}",
                tail(&stderr, 20)
            ));
            continue;
        };
        // libFuzzer fuzzed for `seconds`; the rest of `elapsed` is cargo and loading.
        let rate = units as f64 / seconds.max(1) as f64;
        report.push(format!(
            "fuzz smoke: {target:<16} {units:>10} executions in {seconds} s = {rate:>9.0} exec/s \
             (run took {elapsed:.1} s)"
        ));
        eprintln!("{}", report.last().expect("just pushed"));
    }
    eprintln!(
        "fuzz smoke: {} targets:\n{}",
        targets.len(),
        report.join("\n")
    );
    assert!(
        failures.is_empty(),
        "fuzz smoke: {} of {} targets failed:\n\n{}",
        failures.len(),
        targets.len(),
        failures.join("\n\n")
    );
}
