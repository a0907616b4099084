//! kvm-unit-tests as Keel guests: building the suite from `../shared/vendor/` (GPL-2.0: it is
//! built and run as guests, never copied into the repository), reading `x86/unittests.cfg`,
//! running a test as a Keel VM (`vm run <file>.flat initrd=<env> … devices=debug-exit,
//! pc-testdev`, the result read from the VM's stop reason) and directly under plain QEMU TCG
//! with the options `unittests.cfg` gives.
//!
//! A test's result is its exit status (QEMU's `(code << 1) | 1` for the code written to the
//! debug-exit port, the same figure Keel's stop reason shows): 1 passed (code 0), 77 skipped,
//! anything else failed (3: a test failed, 127: the test aborted), as kvm-unit-tests'
//! `scripts/arch-run.bash` and `scripts/vmm.bash` read it. A test still running after its
//! timeout is stopped and reported as a timeout.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::console::Pattern;
use crate::machine::Machine;

/// The pinned source archive, relative to the repository root.
pub const ARCHIVE: &str = "../shared/vendor/kvm-unit-tests-1da1819.tar.gz";
/// The directory the archive unpacks to.
pub const SOURCE_DIR: &str = "kvm-unit-tests-1da1819";
/// Guest RAM for every test, in MiB (the environment's `MEMSIZE`).
pub const MEM_MIB: u32 = 256;
/// Most vCPUs a Keel VM has (`keel_vmm::devices::MAX_CPUS`).
pub const MAX_KEEL_CPUS: u32 = 8;
/// Most boot modules Keel takes (`kernel/src/boot`'s `MAX_MODULES`).
pub const MAX_BOOT_MODULES: usize = 16;

/// Splits `tests` into runs of consecutive tests whose modules ([`modules_for`]: each
/// `.flat` once, one environment per vCPU count) number at most `max`.
pub fn batches(tests: &[TestSpec], max: usize) -> Vec<Vec<TestSpec>> {
    let mut out: Vec<Vec<TestSpec>> = Vec::new();
    let modules = |batch: &[TestSpec]| {
        let files: BTreeSet<&str> = batch.iter().map(|t| t.file.as_str()).collect();
        let smps: BTreeSet<u32> = batch.iter().map(|t| t.smp).collect();
        files.len() + smps.len()
    };
    for t in tests {
        let fits = out.last().is_some_and(|last| {
            let mut with = last.clone();
            with.push(t.clone());
            modules(&with) <= max
        });
        match out.last_mut() {
            Some(last) if fits => last.push(t.clone()),
            _ => out.push(vec![t.clone()]),
        }
    }
    out
}

/// The exit status of a skipped test.
pub const SKIP_STATUS: u32 = 77;
/// The exit status of a passed test (code 0).
pub const PASS_STATUS: u32 = 1;

/// One `[section]` of `x86/unittests.cfg`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSpec {
    /// The section name (the test's name).
    pub name: String,
    /// The `.flat` file.
    pub file: String,
    /// vCPUs (`smp`, 1 when absent).
    pub smp: u32,
    /// QEMU options (`extra_params`), `-append` included.
    pub extra_params: String,
    /// The test's arguments (`test_args`, unquoted), if given.
    pub test_args: Option<String>,
    /// `arch` (`x86_64`, `i386`), if restricted.
    pub arch: Option<String>,
    /// The timeout (`timeout`, 90 s when absent, as the suite's runner).
    pub timeout: Duration,
    /// `groups`.
    pub groups: Vec<String>,
}

impl TestSpec {
    /// Whether the test runs on x86_64 builds.
    pub fn runs_on_x86_64(&self) -> bool {
        self.arch.as_deref().is_none_or(|a| a == "x86_64")
    }

    /// Whether the suite's default run skips it (`groups = nodefault`).
    pub fn is_nodefault(&self) -> bool {
        self.groups.iter().any(|g| g == "nodefault")
    }

    /// The test's arguments: `test_args`, else the `-append` value of `extra_params`.
    pub fn args(&self) -> String {
        if let Some(args) = &self.test_args {
            return shell_words(args).join(" ");
        }
        let words = shell_words(&self.extra_params);
        words
            .iter()
            .position(|w| w == "-append")
            .and_then(|i| words.get(i + 1).cloned())
            .unwrap_or_default()
    }

    /// `extra_params` without `-append` and its value: the QEMU options.
    pub fn qemu_options(&self) -> Vec<String> {
        let words = shell_words(&self.extra_params);
        let mut out = Vec::new();
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            if w == "-append" {
                it.next();
            } else {
                out.push(w);
            }
        }
        out
    }
}

/// Splits `text` into words as a shell would for `extra_params`: whitespace separates,
/// single and double quotes group.
pub fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Parses `x86/unittests.cfg`: `[name]` sections with `key = value` lines; `#` comments.
pub fn parse_unittests_cfg(text: &str) -> Vec<TestSpec> {
    let mut tests: Vec<TestSpec> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            tests.push(TestSpec {
                name: name.trim().to_owned(),
                file: String::new(),
                smp: 1,
                extra_params: String::new(),
                test_args: None,
                arch: None,
                timeout: Duration::from_secs(90),
                groups: Vec::new(),
            });
            continue;
        }
        let (Some(test), Some((key, value))) = (tests.last_mut(), line.split_once('=')) else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "file" => test.file = value.to_owned(),
            "smp" => test.smp = value.parse().unwrap_or(1),
            "extra_params" => test.extra_params = value.to_owned(),
            "test_args" => test.test_args = Some(value.to_owned()),
            "arch" => test.arch = Some(value.to_owned()),
            "timeout" => {
                let secs = value.trim_end_matches('s');
                if let Ok(s) = secs.parse() {
                    test.timeout = Duration::from_secs(s);
                }
            }
            "groups" => test.groups = value.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    tests
}

/// How a test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 1 (code 0).
    Pass,
    /// Exit status 77: the test found a feature missing and skipped.
    Skip,
    /// Any other exit status, with the last lines of output.
    Fail {
        /// The status.
        status: u32,
        /// The output's last lines.
        tail: String,
    },
    /// Still running at its timeout.
    Timeout {
        /// The output's last lines.
        tail: String,
    },
    /// Not run: why.
    NotRun(String),
}

impl Outcome {
    /// The outcome for exit status `status` and `output`.
    pub fn from_status(status: u32, output: &str) -> Outcome {
        match status {
            PASS_STATUS => Outcome::Pass,
            SKIP_STATUS => Outcome::Skip,
            _ => Outcome::Fail {
                status,
                tail: last_lines(output, 6),
            },
        }
    }

    /// The table cell.
    pub fn cell(&self) -> String {
        match self {
            Outcome::Pass => "PASS".into(),
            Outcome::Skip => "SKIP".into(),
            Outcome::Fail { status, .. } => format!("FAIL ({status})"),
            Outcome::Timeout { .. } => "TIMEOUT".into(),
            Outcome::NotRun(why) => format!("n/a: {why}"),
        }
    }

    /// The output's last lines, for a failure or a timeout.
    pub fn tail(&self) -> Option<&str> {
        match self {
            Outcome::Fail { tail, .. } | Outcome::Timeout { tail } => Some(tail),
            _ => None,
        }
    }

    /// The column a count goes into: passed, failed, skipped.
    pub fn bucket(&self) -> Bucket {
        match self {
            Outcome::Pass => Bucket::Passed,
            Outcome::Skip | Outcome::NotRun(_) => Bucket::Skipped,
            Outcome::Fail { .. } | Outcome::Timeout { .. } => Bucket::Failed,
        }
    }
}

/// Counts per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Passed.
    Passed,
    /// Failed or timed out.
    Failed,
    /// Skipped or not run.
    Skipped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cell())
    }
}

/// The last `n` non-empty lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `target/kvm-unit-tests/`, next to the other build outputs.
pub fn cache_dir() -> PathBuf {
    keel_image::output_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("kvm-unit-tests")
}

/// The built suite's directory: unpacks the archive into [`cache_dir`] and runs
/// `./configure --arch=x86_64 && make` the first time (GCC and binutils from Debian; about
/// two minutes on two cores); later calls find `x86/*.flat` and return at once.
pub fn build_suite() -> Result<PathBuf, String> {
    let cache = cache_dir();
    let src = cache.join(SOURCE_DIR);
    if src.join("x86/apic.flat").is_file() && src.join("x86/unittests.cfg").is_file() {
        return Ok(src);
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
    let archive = repo_root().join(ARCHIVE);
    if !archive.is_file() {
        return Err(format!(
            "{} is missing: the kvm-unit-tests archive comes with the shared vendor directory",
            archive.display()
        ));
    }
    run(Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&cache))?;
    run(Command::new("./configure")
        .arg("--arch=x86_64")
        .current_dir(&src))?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run(Command::new("make")
        .arg(format!("-j{jobs}"))
        .current_dir(&src))?;
    Ok(src)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 20)
        ))
    }
}

/// The suite's tests that run on x86_64 by default, from `suite/x86/unittests.cfg`.
pub fn load_tests(suite: &Path) -> Result<Vec<TestSpec>, String> {
    let path = suite.join("x86/unittests.cfg");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(parse_unittests_cfg(&text)
        .into_iter()
        .filter(|t| t.runs_on_x86_64() && !t.is_nodefault())
        .collect())
}

/// The environment module's name for `smp` vCPUs (a boot module is named after its file).
pub fn env_name(smp: u32) -> String {
    format!("kut-env-{smp}")
}

/// The environment the test reads instead of fw_cfg (`lib/x86/fwcfg.c`).
pub fn env_text(smp: u32) -> String {
    format!("NR_CPUS={smp}\nMEMSIZE={MEM_MIB}\nMEMLIMIT={MEM_MIB}\n")
}

/// Writes the environment files for `tests` into `dir` and returns the boot modules a Keel
/// image needs: every test's `.flat` once and one environment per vCPU count.
pub fn modules_for(suite: &Path, tests: &[TestSpec], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let files: BTreeSet<&str> = tests.iter().map(|t| t.file.as_str()).collect();
    let smps: BTreeSet<u32> = tests.iter().map(|t| t.smp).collect();
    let mut modules: Vec<PathBuf> = files.iter().map(|f| suite.join("x86").join(f)).collect();
    for smp in smps {
        let path = dir.join(env_name(smp));
        std::fs::write(&path, env_text(smp))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        modules.push(path);
    }
    Ok(modules)
}

/// Builds `kut.img` (Keel with `modules` as boot modules) in the output directory, from the
/// test kernel of [`crate::artifacts`].
pub fn keel_image(modules: &[PathBuf], name: &str) -> Result<PathBuf, String> {
    let a = crate::artifacts();
    let image = keel_image::output_dir().join(name);
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = keel_image::tls_cert::default_config(&a.api_token);
    keel_image::assemble_image(
        &a.elf,
        modules,
        &cmdline,
        None,
        &config.to_json_pretty(),
        &image,
    )
    .map_err(|e| format!("assembling {name} failed: {e}"))?;
    Ok(image)
}

/// The `vm run` line for `test`. The command line starts with the kernel's file name, as
/// GRUB's and QEMU's Multiboot command lines do: kvm-unit-tests takes its first word as
/// `argv[0]` and the rest as the test's arguments.
pub fn vm_run_line(test: &TestSpec) -> String {
    let cmdline = format!("{} {}", test.file, test.args());
    format!(
        "vm run {} initrd={} vcpus={} mem={MEM_MIB} devices=debug-exit,pc-testdev \
         cmdline=\"{}\"",
        test.file,
        env_name(test.smp),
        test.smp,
        cmdline.trim_end()
    )
}

/// Runs `test` as a Keel VM on machine `m` (at its prompt) and returns how it ended; the
/// machine is at its prompt again afterwards.
///
/// The `vm run` line is longer than the console is wide, so its echo redraws the prompt
/// many times, and guest output redraws it too: the waits here are for the lines `vm run`
/// and the VM's stop print, never for a bare prompt.
pub fn run_on_keel(m: &mut Machine, test: &TestSpec) -> Outcome {
    if test.smp > MAX_KEEL_CPUS {
        return Outcome::NotRun(format!(
            "{} vCPUs; Keel VMs have at most {MAX_KEEL_CPUS}",
            test.smp
        ));
    }
    if test.args().contains('"') {
        return Outcome::NotRun("arguments with a double quote".into());
    }
    m.type_line(&vm_run_line(test));
    let answer = m.expect(Pattern::regex(
        r"(?:\nvm (\d+) started|\nerror: ([^\r\n]*))",
    ));
    let (number, refusal) = (answer.group(1).to_owned(), answer.group(2).to_owned());
    if number.is_empty() {
        m.expect_prompt();
        return Outcome::NotRun(format!("vm run refused: {refusal}"));
    }
    let stopped =
        |number: &str| Pattern::regex(&format!(r"vm {number} stopped: ([^\r\n\x1b]*)[\r\n\x1b]"));
    let started = Instant::now();
    let reason = m
        .wait_for(stopped(&number), test.timeout)
        .ok()
        .map(|s| s.group(1).trim().to_owned());
    let timed_out = reason.is_none();
    if timed_out {
        m.type_line(&format!("vm stop {number} force"));
        m.expect(stopped(&number));
    }
    // The prompt redrawn after the stop line.
    m.expect_prompt();
    let log = m.command(&format!("vm log {number}"));
    match reason {
        Some(reason) => match parse_debug_exit(&reason) {
            Some(status) => Outcome::from_status(status, &log),
            None => Outcome::Fail {
                status: 0,
                tail: format!("{}\nstopped: {reason}", last_lines(&log, 5)),
            },
        },
        None => Outcome::Timeout {
            tail: format!(
                "{}\n(stopped after {} s)",
                last_lines(&log, 5),
                started.elapsed().as_secs()
            ),
        },
    }
}

/// The status in a stop reason `debug-exit: code N (status S)`.
pub fn parse_debug_exit(reason: &str) -> Option<u32> {
    reason
        .trim()
        .strip_prefix("debug-exit: code ")?
        .split_once("(status ")?
        .1
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// Runs `test` directly under plain QEMU TCG (`-cpu qemu64`, its options from
/// `unittests.cfg`, the environment as `-initrd`), as kvm-unit-tests' own `x86/run` would.
pub fn run_on_qemu(suite: &Path, test: &TestSpec, scratch: &Path) -> Outcome {
    let env = scratch.join(env_name(test.smp));
    if let Err(e) =
        std::fs::create_dir_all(scratch).and_then(|()| std::fs::write(&env, env_text(test.smp)))
    {
        return Outcome::NotRun(format!("writing {}: {e}", env.display()));
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel", "tcg", "-M", "pc", "-cpu", "qemu64", "-display", "none",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ])
    .args([
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "-device",
        "pc-testdev",
    ])
    .args(["-m", &MEM_MIB.to_string(), "-smp", &test.smp.to_string()])
    .arg("-kernel")
    .arg(suite.join("x86").join(&test.file))
    .arg("-initrd")
    .arg(&env)
    .args(test.qemu_options());
    let args = test.args();
    if !args.is_empty() {
        cmd.args(["-append", &args]);
    }
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return Outcome::NotRun("qemu-system-x86_64 did not start".into());
    };
    let deadline = Instant::now() + test.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut output);
    }
    let mut errors = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut errors);
    }
    match status.and_then(|s| s.code()) {
        None => Outcome::Timeout {
            tail: last_lines(&output, 5),
        },
        Some(status) if status & 1 == 1 => Outcome::from_status(status as u32, &output),
        Some(status) => Outcome::Fail {
            status: status as u32,
            tail: format!(
                "QEMU exited with {status} without a debug exit\n{}",
                last_lines(&format!("{output}\n{errors}"), 5)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "\
# comment
[apic-split]
file = apic.flat
smp = 2
extra_params = -cpu qemu64,+x2apic,+tsc-deadline -machine kernel_irqchip=split
arch = x86_64
timeout = 30
groups = apic

[vmexit_cpuid]
file = vmexit.flat
test_args = 'cpuid'
groups = vmexit

[vmexit_old]
file = vmexit.flat
extra_params = -append 'ipi halt'

[cmpxchg8b]
file = cmpxchg8b.flat
arch = i386

[access_fep]
file = access_test.flat
timeout = 240s
groups = nodefault
";

    #[test]
    fn unittests_cfg_sections_and_fields() {
        let tests = parse_unittests_cfg(CFG);
        assert_eq!(tests.len(), 5);
        assert_eq!(tests[2].args(), "ipi halt");
        let apic = &tests[0];
        assert_eq!(apic.name, "apic-split");
        assert_eq!((apic.file.as_str(), apic.smp), ("apic.flat", 2));
        assert_eq!(apic.timeout, Duration::from_secs(30));
        assert_eq!(apic.args(), "");
        assert_eq!(
            apic.qemu_options(),
            [
                "-cpu",
                "qemu64,+x2apic,+tsc-deadline",
                "-machine",
                "kernel_irqchip=split"
            ]
        );
        let cpuid = &tests[1];
        assert_eq!(cpuid.args(), "cpuid");
        assert!(cpuid.qemu_options().is_empty());
        assert_eq!(cpuid.timeout, Duration::from_secs(90));
        assert!(!tests[3].runs_on_x86_64());
        assert!(tests[4].is_nodefault());
        assert_eq!(tests[4].timeout, Duration::from_secs(240));
    }

    #[test]
    fn outcomes_from_codes_and_stop_reasons() {
        assert_eq!(
            parse_debug_exit("debug-exit: code 63 (status 127)"),
            Some(127)
        );
        assert_eq!(
            parse_debug_exit("debug-exit: code 38 (status 77)"),
            Some(77)
        );
        assert_eq!(parse_debug_exit("guest powered off"), None);
        assert_eq!(Outcome::from_status(1, ""), Outcome::Pass);
        assert_eq!(Outcome::from_status(77, ""), Outcome::Skip);
        let fail = Outcome::from_status(
            3,
            "a\nb\n\nFAIL: x\nSUMMARY: 3 tests, 1 unexpected failures\n",
        );
        assert_eq!(fail.cell(), "FAIL (3)");
        assert_eq!(
            fail.tail(),
            Some("a\nb\nFAIL: x\nSUMMARY: 3 tests, 1 unexpected failures")
        );
        assert_eq!(fail.bucket(), Bucket::Failed);
    }

    #[test]
    fn batches_keep_to_the_module_limit() {
        let t = |file: &str, smp: u32| TestSpec {
            file: file.into(),
            smp,
            ..parse_unittests_cfg(CFG)[0].clone()
        };
        let tests = [t("a", 1), t("a", 2), t("b", 1), t("c", 1), t("d", 4)];
        let b = batches(&tests, 4);
        // {a, b, env1, env2} then {c, d, env1, env4}.
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(batches(&tests, 100).len(), 1);
    }

    #[test]
    fn vm_run_line_and_environment() {
        let tests = parse_unittests_cfg(CFG);
        assert_eq!(
            vm_run_line(&tests[1]),
            "vm run vmexit.flat initrd=kut-env-1 vcpus=1 mem=256 devices=debug-exit,pc-testdev \
             cmdline=\"vmexit.flat cpuid\""
        );
        assert_eq!(env_text(2), "NR_CPUS=2\nMEMSIZE=256\nMEMLIMIT=256\n");
        assert_eq!(shell_words(r#"-append "a b" 'c'"#), ["-append", "a b", "c"]);
    }
}
