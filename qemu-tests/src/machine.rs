//! A running emulator: its process, its COM1 console (read by a background thread, written by
//! typing), its COM2 log file, its temporary directory, and the failure report.
//!
//! The emulator is always killed: by [`Drop`] (which also runs while a failed test unwinds),
//! by a watchdog thread when the hard timeout passes, and — where util-linux `setpriv` exists —
//! by the kernel (`PR_SET_PDEATHSIG`) when the thread that started it dies without unwinding.
//! The last one means a `Machine` should be used from the thread that created it, as a test
//! does.

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::banner::{Banner, PROMPT, VERSION_LINE};
use crate::console::{Console, Match, Pattern, WaitFailure};
use crate::error::Error;
use crate::report::{self, LOG_TAIL, TRANSCRIPT_TAIL};

/// Set this environment variable to keep each emulator's temporary directory (transcript,
/// COM2 log, emulator logs, generated config) after the machine is dropped; its path is
/// printed on stderr.
pub const KEEP_DIR_ENV: &str = "KEEL_TEST_KEEP_DIR";

/// Set this to a number (such as `2` or `0.5`) to scale every default timeout.
pub const TIMEOUT_SCALE_ENV: &str = "KEEL_TEST_TIMEOUT_SCALE";

/// Scales a default timeout by `KEEL_TEST_TIMEOUT_SCALE` (1 if unset or not a positive number).
pub fn scaled(timeout: Duration) -> Duration {
    let scale = std::env::var(TIMEOUT_SCALE_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    timeout.mul_f64(scale)
}

/// Builds the command that starts `program`, wrapped in `setpriv --pdeathsig KILL` when that
/// works here, so the emulator dies with the thread that started it even if the test process
/// is killed outright.
pub(crate) fn emulator_command(program: &str, args: &[OsString]) -> Command {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    let setpriv = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if setpriv {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", program]).args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

/// A command line as one string, quoted for a POSIX shell where needed.
pub(crate) fn shell_line(program: &str, args: &[OsString]) -> String {
    std::iter::once(OsStr::new(program))
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| {
            let a = a.to_string_lossy();
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.,/:=+@%".contains(c));
            if plain {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tails of emulator log files, as report sections.
pub(crate) fn log_sections(out: &mut String, logs: &[PathBuf]) {
    for path in logs {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match fs::read(path) {
            Ok(bytes) if bytes.is_empty() => {
                report::section(out, &format!("emulator output: {name}"), "(empty)")
            }
            Ok(bytes) => {
                let (text, cut) = report::tail(&bytes, LOG_TAIL);
                let title = if cut {
                    format!(
                        "emulator output: {name} (last {LOG_TAIL} of {} bytes)",
                        bytes.len()
                    )
                } else {
                    format!("emulator output: {name}")
                };
                report::section(out, &title, &text);
            }
            Err(e) => report::section(
                out,
                &format!("emulator output: {name}"),
                &format!("(could not read {}: {e})", path.display()),
            ),
        }
    }
}

/// Everything an emulator front end hands over once the process runs and COM1 is connected.
pub(crate) struct Parts {
    pub name: String,
    pub command_line: String,
    pub child: Child,
    pub console: Box<dyn Read + Send>,
    pub input: Box<dyn Write + Send>,
    pub dir: TempDir,
    pub com2: PathBuf,
    pub defmt_elf: Option<PathBuf>,
    pub logs: Vec<PathBuf>,
    pub timeout: Duration,
    pub hard_timeout: Duration,
    pub started: Instant,
}

/// A running emulator. See the [module docs](self).
pub struct Machine {
    name: String,
    command_line: String,
    child: Arc<Mutex<Child>>,
    console: Console,
    input: Box<dyn Write + Send>,
    dir: Option<TempDir>,
    com2: PathBuf,
    defmt_elf: Option<PathBuf>,
    logs: Vec<PathBuf>,
    timeout: Duration,
    started: Instant,
    hard_timeout: Duration,
    hard_timeout_hit: Arc<AtomicBool>,
    /// Dropping this ends the watchdog thread.
    _watchdog: mpsc::Sender<()>,
}

impl Machine {
    pub(crate) fn start(parts: Parts) -> Machine {
        let child = Arc::new(Mutex::new(parts.child));
        let hit = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        {
            let child = Arc::clone(&child);
            let hit = Arc::clone(&hit);
            let hard = parts.hard_timeout;
            // If the watchdog thread cannot start, Drop and pdeathsig still end the emulator.
            let _ = thread::Builder::new()
                .name("emulator-watchdog".into())
                .spawn(move || {
                    if rx.recv_timeout(hard) == Err(RecvTimeoutError::Timeout) {
                        hit.store(true, Ordering::SeqCst);
                        let mut child = child.lock().unwrap_or_else(PoisonError::into_inner);
                        let _ = child.kill();
                    }
                });
        }
        Machine {
            name: parts.name,
            command_line: parts.command_line,
            child,
            console: Console::spawn(parts.console, parts.started),
            input: parts.input,
            dir: Some(parts.dir),
            com2: parts.com2,
            defmt_elf: parts.defmt_elf,
            logs: parts.logs,
            timeout: parts.timeout,
            started: parts.started,
            hard_timeout: parts.hard_timeout,
            hard_timeout_hit: hit,
            _watchdog: tx,
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A short description, such as `QEMU -kernel (PVH)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The emulator's process id (of `setpriv`, which execs the emulator in place).
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The emulator's temporary directory (COM2 log, emulator logs, generated config).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), TempDir::path)
    }

    /// The emulator's command line, quoted for a shell.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Time since the emulator was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The timeout of [`Machine::expect`] and the other waits without an explicit one.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the default wait timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The console's cursor: the offset just past the last match.
    pub fn cursor(&self) -> usize {
        self.console.cursor()
    }

    /// Waits for `pattern` after the cursor (see [`Console::wait_for`]).
    pub fn wait_for(
        &mut self,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<Match, Error> {
        let pattern = pattern.into();
        match self.console.wait_for(&pattern, timeout) {
            Ok(m) => Ok(m),
            Err(WaitFailure::Timeout) => Err(Error::WaitTimeout {
                pattern: pattern.to_string(),
                timeout,
                report: self.report(),
            }),
            Err(WaitFailure::Closed(why)) => {
                // Let the process finish exiting so the report can show its status.
                self.wait_exit_quietly(Duration::from_secs(2));
                Err(Error::ConsoleClosed {
                    pattern: pattern.to_string(),
                    why,
                    report: self.report(),
                })
            }
        }
    }

    /// Waits for `pattern` with the default timeout.
    ///
    /// # Panics
    ///
    /// With the failure report if the pattern does not appear in time.
    #[track_caller]
    pub fn expect(&mut self, pattern: impl Into<Pattern>) -> Match {
        let timeout = self.timeout;
        self.expect_within(pattern, timeout)
    }

    /// Waits for `pattern` with the given timeout; panics with the failure report on failure.
    #[track_caller]
    pub fn expect_within(&mut self, pattern: impl Into<Pattern>, timeout: Duration) -> Match {
        match self.wait_for(pattern, timeout) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits for a whole line that starts with `prefix` and returns the rest of it, trimmed
    /// at the end; panics with the failure report on timeout.
    #[track_caller]
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let m = self.expect(Pattern::line_starting(prefix));
        m.group(1).trim_end().to_owned()
    }

    /// Waits for the next prompt.
    #[track_caller]
    pub fn expect_prompt(&mut self) -> Match {
        self.expect(PROMPT)
    }

    /// Waits for the next boot banner and the prompt after it, and parses the banner.
    #[track_caller]
    pub fn expect_banner(&mut self) -> Banner {
        self.expect(VERSION_LINE);
        let rest = self.expect(PROMPT);
        Banner::parse(rest.before.as_bytes())
    }

    /// Sends raw text to COM1.
    pub fn send(&mut self, text: &str) -> Result<(), Error> {
        let result = self
            .input
            .write_all(text.as_bytes())
            .and_then(|()| self.input.flush());
        result.map_err(|source| Error::Type {
            text: text.to_owned(),
            source,
            report: self.report(),
        })
    }

    /// Types a line on COM1: the text, then `\r` (what a terminal's Enter key sends).
    pub fn send_line(&mut self, line: &str) -> Result<(), Error> {
        self.send(&format!("{line}\r"))
    }

    /// Types a line; panics with the failure report if the emulator's input is gone.
    #[track_caller]
    pub fn type_line(&mut self, line: &str) {
        if let Err(e) = self.send_line(line) {
            panic!("{e}");
        }
    }

    /// Runs a console command: types it, waits for the next prompt, and returns what was
    /// printed in between, cleaned (see [`report::clean`]), without the echoed command line.
    /// Expects the cursor to sit after a prompt.
    #[track_caller]
    pub fn command(&mut self, line: &str) -> String {
        self.type_line(line);
        let m = self.expect(PROMPT);
        strip_echo(&report::clean(m.before.as_bytes()), line)
    }

    /// The exit status, if the emulator has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    fn wait_exit_quietly(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the emulator to exit by itself (after `poweroff`), up to `timeout`, and
    /// returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        match self.wait_exit_quietly(timeout) {
            Some(status) => Ok(status),
            None => Err(Error::ExitTimeout {
                emulator: self.name.clone(),
                timeout,
                report: self.report(),
            }),
        }
    }

    /// [`Machine::wait_exit`], panicking with the failure report on timeout.
    #[track_caller]
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout) {
            Ok(status) => status,
            Err(e) => panic!("{e}"),
        }
    }

    /// Everything received on COM1 so far, raw.
    pub fn transcript(&self) -> Vec<u8> {
        self.console.transcript()
    }

    /// Everything received on COM1 so far, made printable (see [`report::printable`]).
    pub fn transcript_text(&self) -> String {
        report::printable(&self.console.transcript())
    }

    /// The raw bytes the kernel wrote to COM2 (defmt frames) so far.
    pub fn com2_bytes(&self) -> Vec<u8> {
        fs::read(&self.com2).unwrap_or_default()
    }

    /// The COM2 diagnostic log, decoded with the kernel ELF; or a note saying why it could
    /// not be.
    pub fn com2_log(&self) -> String {
        let bytes = self.com2_bytes();
        if bytes.is_empty() {
            return "(nothing received on COM2)".to_owned();
        }
        let Some(elf) = &self.defmt_elf else {
            return format!("({} bytes; no kernel ELF to decode them with)", bytes.len());
        };
        match keel_image::decode_defmt(elf, &bytes) {
            Ok(text) if text.trim().is_empty() => {
                format!("({} bytes decoded to no log lines)", bytes.len())
            }
            Ok(text) => text,
            Err(e) => format!(
                "({} bytes; could not decode with {}: {e})",
                bytes.len(),
                elf.display()
            ),
        }
    }

    /// The failure report: console tail, decoded COM2 log, emulator output, command line.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let transcript = self.console.transcript();
        let (tail, cut) = report::tail(&transcript, TRANSCRIPT_TAIL);
        let status = match self.exit_status() {
            Some(s) if self.hard_timeout_hit.load(Ordering::SeqCst) => {
                format!(
                    "killed after the hard timeout of {:?} ({s})",
                    self.hard_timeout
                )
            }
            Some(s) => format!("exited: {s}"),
            None => "running".to_owned(),
        };
        let unread = transcript.len().saturating_sub(self.console.cursor());
        let title = format!(
            "{}: COM1 console, {}{} bytes, {unread} after the last match; {:.1} s since start, {status}",
            self.name,
            if cut {
                format!("last {TRANSCRIPT_TAIL} of ")
            } else {
                String::new()
            },
            transcript.len(),
            self.elapsed().as_secs_f64(),
        );
        report::section(
            &mut out,
            &title,
            if tail.is_empty() {
                "(no output)"
            } else {
                &tail
            },
        );
        let com2 = self.com2_log();
        report::section(
            &mut out,
            "COM2 diagnostic log (defmt)",
            report::tail_str(&com2, LOG_TAIL),
        );
        log_sections(&mut out, &self.logs);
        report::section(&mut out, "command line", &self.command_line);
        if let Some(dir) = &self.dir {
            out.push_str(&format!(
                "(set {KEEP_DIR_ENV}=1 to keep {} after the test)\n",
                dir.path().display()
            ));
        }
        out
    }

    /// Panics with `message` followed by the failure report. The [`check!`](crate::check)
    /// macro calls this.
    #[track_caller]
    pub fn fail(&self, message: impl Display) -> ! {
        panic!("{message}\n{}", self.report())
    }

    /// Kills the emulator now (Drop does this too).
    pub fn kill(&mut self) {
        let mut child = self.child();
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        let Some(dir) = self.dir.take() else { return };
        let _ = fs::write(dir.path().join("com1.txt"), self.console.transcript());
        if std::env::var_os(KEEP_DIR_ENV).is_some() {
            let path = dir.keep();
            eprintln!("{}: kept {}", self.name, path.display());
        }
    }
}

/// Drops the echoed command line from a command's output: the first line, if it ends with
/// the command.
fn strip_echo(output: &str, line: &str) -> String {
    let output = output.strip_prefix('\n').unwrap_or(output);
    match output.split_once('\n') {
        Some((first, rest)) if first.trim_end().ends_with(line.trim()) => rest.to_owned(),
        None if output.trim_end().ends_with(line.trim()) => String::new(),
        _ => output.to_owned(),
    }
}

/// Asserts a condition about a machine's output; on failure panics with the message and the
/// machine's failure report (console transcript, COM2 log).
///
/// ```no_run
/// # let mut m: keel_qemu_tests::Machine = unimplemented!();
/// let banner = m.expect_banner();
/// keel_qemu_tests::check!(m, banner.field("boot path") == Some("PVH"), "boot path: {:?}", banner.field("boot path"));
/// ```
#[macro_export]
macro_rules! check {
    ($machine:expr, $cond:expr $(,)?) => {
        if !$cond {
            $machine.fail(concat!("check failed: ", stringify!($cond)));
        }
    };
    ($machine:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $machine.fail(format!(
                "check failed: {}: {}",
                stringify!($cond),
                format_args!($($fmt)+)
            ));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_stripped() {
        assert_eq!(
            strip_echo("version\nKeel 0.1.0\n  built with rustc\n", "version"),
            "Keel 0.1.0\n  built with rustc\n"
        );
        assert_eq!(strip_echo("\nmem\n  total: 1 MiB", "mem"), "  total: 1 MiB");
        assert_eq!(strip_echo("Keel 0.1.0\n", "version"), "Keel 0.1.0\n");
        assert_eq!(strip_echo("help", "help"), "");
    }

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let args: Vec<OsString> = ["-append", "a b", "it's", "file:/tmp/x,y"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(
            shell_line("qemu", &args),
            r"qemu -append 'a b' 'it'\''s' file:/tmp/x,y"
        );
    }

    #[test]
    fn scale_defaults_to_one() {
        // The variable is not set in the test environment unless a developer sets it.
        if std::env::var_os(TIMEOUT_SCALE_ENV).is_none() {
            assert_eq!(scaled(Duration::from_secs(30)), Duration::from_secs(30));
        }
    }
}
