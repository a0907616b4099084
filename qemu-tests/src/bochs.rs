//! Bochs 2.7 (Debian's build), the VT-x path: `keel.img` through the Bochs BIOS and GRUB on a
//! `corei7_skylake_x` CPU (VMX with EPT and unrestricted guest).
//!
//! What works headless, as found on the development machines:
//!
//! - **Display**: Debian's Bochs has no `nogui` library. `display_library: rfb,
//!   options="timeout=0"` runs without waiting for a viewer; it listens for VNC on
//!   `0.0.0.0` at the first free port of 5900–5949 (there is no option to choose the port or
//!   address) and exits ("RFB could not bind any port") when all are taken, as happened in a
//!   CI run on a shared machine. So each Bochs runs in a network namespace of its own
//!   (`netns`, needs root; the shared one otherwise), where every port is free. `display_library: term` (package
//!   `bochs-term`) is no use headless: it attached to a terminal of the machine
//!   (`Bochs connected to screen "/dev/pts/0"`) even with stdio redirected and under
//!   `setsid`, exited with "Error opening terminal" when `TERM` was unset, and then ignored
//!   SIGTERM.
//! - **COM1, both ways**: `mode=socket-client` with the harness as the server. The harness
//!   listens on an ephemeral port of 127.0.0.1 (in Bochs's namespace) *before* it starts
//!   Bochs, so there is no port race and no start-up blocking; Bochs connects during device
//!   init, well before the BIOS prints anything, and typed text arrives intact. (`mode=socket-server`, per the bochsrc
//!   documentation, makes Bochs wait for a client before it simulates anything, and needs a
//!   free port picked in advance.) If Bochs cannot connect it treats COM1 as unplugged, so the
//!   harness fails when no connection arrives.
//! - **COM2**: `mode=file`, into `com2.bin` in the temporary directory.
//! - **Start and stop**: `bochs -q -f bochsrc -rc cont.rc` with `cont.rc` holding `c` (the
//!   debugger is compiled in, and without it Bochs stops at the debugger prompt); standard
//!   input is `/dev/null`. ACPI S5 from the guest ends Bochs ("ACPI control: soft power
//!   off") with exit status 1: judge by the output. `panic: action=fatal` ends it on a Bochs
//!   panic, such as a triple fault (`reset_on_triple_fault=0`).
//! - **Disk**: the image is copied into the temporary directory first. Bochs writes to flat
//!   images and locks them with a `<image>.lock` file, which a killed Bochs leaves behind
//!   (the next Bochs then fails with "image locked"); two Bochs on one file would clash too.
//! - **Process**: `/usr/bin/bochs` is a shell script that `exec`s `bochs-bin`, so the child's
//!   pid is the emulator's and killing it leaves nothing behind.
//! - **Sound**: the `sound:` and `speaker:` lines are required; the default sound driver
//!   aborts Bochs ("buffer overflow detected").

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::machine::{Machine, Parts, emulator_command, log_sections, scaled, shell_line};
use crate::netns::{Namespace, run_in_private_network};
use crate::report;

/// The Bochs binary.
pub const BOCHS: &str = "bochs";

/// Default timeout of one wait under Bochs.
pub const BOCHS_WAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Default hard timeout after which a Bochs is killed whatever the test does.
pub const BOCHS_HARD_TIMEOUT: Duration = Duration::from_secs(1200);

/// How long the harness waits for Bochs to connect COM1.
pub const BOCHS_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A Bochs configuration; [`Bochs::spawn`] starts it.
#[derive(Clone, Debug)]
pub struct Bochs {
    /// The disk image (copied before boot).
    pub image: PathBuf,
    /// Guest memory in MiB (`megs:`).
    pub megs: u32,
    /// `cpu: model=`.
    pub cpu_model: String,
    /// `cpu: count=`.
    pub cpus: u32,
    /// `cpu: ips=`: emulated instructions per emulated second.
    pub ips: u64,
    /// The kernel ELF used to decode COM2 in failure reports.
    pub defmt_elf: Option<PathBuf>,
    /// Default timeout of one wait.
    pub timeout: Duration,
    /// The machine is killed after this long, whatever happens.
    pub hard_timeout: Duration,
    /// An Intel e1000 (82540EM) with this MAC on Bochs' own slirp user network (10.0.2.x,
    /// DHCP from 10.0.2.15 on, like QEMU's), or no NIC.
    pub e1000_mac: Option<String>,
}

impl Bochs {
    /// A disk image on a `corei7_skylake_x` with 512 MiB and one CPU.
    pub fn disk(image: &Path) -> Self {
        Bochs {
            image: image.to_owned(),
            megs: 512,
            cpu_model: "corei7_skylake_x".to_owned(),
            cpus: 1,
            ips: 100_000_000,
            defmt_elf: None,
            timeout: scaled(BOCHS_WAIT_TIMEOUT),
            hard_timeout: scaled(BOCHS_HARD_TIMEOUT),
            e1000_mac: None,
        }
    }

    /// Adds an e1000 with MAC `mac` on Bochs' slirp network (`e1000: …, ethmod=slirp`).
    pub fn e1000(mut self, mac: &str) -> Self {
        self.e1000_mac = Some(mac.to_owned());
        self
    }

    /// Sets the guest memory in MiB.
    pub fn megs(mut self, megs: u32) -> Self {
        self.megs = megs;
        self
    }

    /// Sets the CPU count.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Sets the kernel ELF that decodes COM2 in failure reports.
    pub fn defmt_elf(mut self, elf: &Path) -> Self {
        self.defmt_elf = Some(elf.to_owned());
        self
    }

    /// Sets the default wait timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the hard timeout after which the emulator is killed.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = timeout;
        self
    }

    /// A short description for reports and tables.
    pub fn describe(&self) -> String {
        format!("Bochs {} + GRUB", self.cpu_model)
    }

    /// The bochsrc. Paths are relative to the machine's temporary directory, where Bochs
    /// runs: the image copy is `keel.img`, COM2 goes to `com2.bin`, the log to `bochs.log`.
    /// COM1 connects to the harness at `127.0.0.1:<com1_port>`.
    pub fn bochsrc(&self, com1_port: u16) -> String {
        let nic = self.e1000_mac.as_ref().map_or_else(String::new, |mac| {
            format!("e1000: enabled=1, mac={mac}, ethmod=slirp\n")
        });
        format!(
            "\
# Generated by keel-qemu-tests (see qemu-tests/src/bochs.rs).
megs: {megs}
cpu: model={model}, count={cpus}, ips={ips}, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
display_library: rfb, options=\"timeout=0\"
ata0-master: type=disk, path=keel.img, mode=flat
boot: disk
com1: enabled=1, mode=socket-client, dev=127.0.0.1:{com1_port}
com2: enabled=1, mode=file, dev=com2.bin
port_e9_hack: enabled=1
log: bochs.log
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
clock: sync=none
mouse: enabled=0
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
{nic}",
            megs = self.megs,
            model = self.cpu_model,
            cpus = self.cpus,
            ips = self.ips,
        )
    }

    /// Starts Bochs and waits for it to connect COM1.
    pub fn spawn(&self) -> Result<Machine, Error> {
        let dir = tempfile::Builder::new()
            .prefix("keel-bochs-")
            .tempdir()
            .map_err(Error::prepare("a temporary directory"))?;
        let d = dir.path().to_owned();
        let d = d.as_path();
        fs::copy(&self.image, d.join("keel.img")).map_err(Error::prepare(format!(
            "a copy of {}",
            self.image.display()
        )))?;
        fs::write(d.join("cont.rc"), "c\n").map_err(Error::prepare("cont.rc"))?;
        let out_path = d.join("bochs.out");
        let out = File::create(&out_path).map_err(Error::prepare("bochs.out"))?;
        let err = out.try_clone().map_err(Error::prepare("bochs.out"))?;
        let args: Vec<OsString> = ["-q", "-f", "bochsrc", "-rc", "cont.rc"]
            .iter()
            .map(OsString::from)
            .collect();
        let mut command_line = format!("cd {} && {}", d.display(), shell_line(BOCHS, &args));
        let logs = vec![out_path, d.join("bochs.log")];

        let started = Instant::now();
        // Bochs's VNC display needs a free port of 5900-5949; a network namespace of its own
        // guarantees one (see `netns`). The COM1 listener lives there too.
        let (spawned, namespace) = run_in_private_network(|| {
            let listener =
                TcpListener::bind("127.0.0.1:0").map_err(Error::prepare("the COM1 listener"))?;
            let port = listener
                .local_addr()
                .map_err(Error::prepare("the COM1 listener"))?
                .port();
            fs::write(d.join("bochsrc"), self.bochsrc(port)).map_err(Error::prepare("bochsrc"))?;
            let child = emulator_command(BOCHS, &args)
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|source| Error::Spawn {
                    program: BOCHS.to_owned(),
                    hint: "Debian packages bochs, bochsbios, vgabios",
                    source,
                })?;
            Ok::<_, Error>((listener, port, child))
        });
        let (listener, port, mut child) = spawned?;
        match namespace {
            Namespace::Private => command_line.push_str("  # in a network namespace of its own"),
            Namespace::Shared(why) => command_line.push_str(&format!(
                "  # in the shared network namespace (a private one failed: {why})"
            )),
        }
        let connect_timeout = scaled(BOCHS_CONNECT_TIMEOUT);
        let stream = match accept(&listener, &mut child, connect_timeout) {
            Ok(stream) => stream,
            Err(why) => {
                let _ = child.kill();
                let status = child.wait();
                let mut report = format!("{why}; bochs: {status:?}\n");
                log_sections(&mut report, &logs);
                report::section(&mut report, "command line", &command_line);
                report::section(&mut report, "bochsrc", &self.bochsrc(port));
                return Err(Error::Connect {
                    emulator: self.describe(),
                    timeout: connect_timeout,
                    report,
                });
            }
        };
        let input = stream
            .try_clone()
            .map_err(Error::prepare("the COM1 connection"))?;
        Ok(Machine::start(Parts {
            name: self.describe(),
            command_line,
            child,
            console: Box::new(stream),
            input: Box::new(input),
            dir,
            com2: d.join("com2.bin"),
            defmt_elf: self.defmt_elf.clone(),
            logs,
            timeout: self.timeout,
            hard_timeout: self.hard_timeout,
            started,
        }))
    }
}

/// Accepts Bochs's COM1 connection, giving up when Bochs exits or the timeout passes.
fn accept(
    listener: &TcpListener,
    child: &mut Child,
    timeout: Duration,
) -> Result<TcpStream, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("could not poll the COM1 listener: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| format!("could not configure the COM1 connection: {e}"))?;
                // Typed characters go out at once rather than waiting to fill a segment.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accepting the COM1 connection failed: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("bochs exited ({status}) before connecting COM1"));
        }
        if Instant::now() >= deadline {
            return Err("no COM1 connection from bochs".to_owned());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_what_bochs_needs() {
        let rc = Bochs::disk(Path::new("/x/keel.img")).cpus(2).bochsrc(40123);
        for line in [
            "megs: 512",
            "cpu: model=corei7_skylake_x, count=2, ips=100000000, reset_on_triple_fault=0",
            "display_library: rfb, options=\"timeout=0\"",
            "ata0-master: type=disk, path=keel.img, mode=flat",
            "boot: disk",
            "com1: enabled=1, mode=socket-client, dev=127.0.0.1:40123",
            "com2: enabled=1, mode=file, dev=com2.bin",
            "log: bochs.log",
            "clock: sync=none",
            "speaker: enabled=0",
            "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy",
        ] {
            assert!(rc.lines().any(|l| l == line), "missing {line:?} in\n{rc}");
        }
        // Every line is a comment or a `key: value` directive.
        for l in rc.lines() {
            assert!(l.starts_with('#') || l.contains(": "), "odd line {l:?}");
        }
        assert!(!rc.contains("e1000"), "{rc}");
    }

    #[test]
    fn an_e1000_goes_on_slirp() {
        let rc = Bochs::disk(Path::new("k"))
            .e1000("52:54:00:12:34:56")
            .bochsrc(1);
        assert!(
            rc.lines()
                .any(|l| l == "e1000: enabled=1, mac=52:54:00:12:34:56, ethmod=slirp"),
            "{rc}"
        );
    }

    #[test]
    fn accept_gives_up_when_bochs_exits() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let err = accept(&listener, &mut child, Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("before connecting"), "{err}");
    }

    #[test]
    fn accept_takes_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let client = thread::spawn(move || TcpStream::connect(addr).unwrap());
        let stream = accept(&listener, &mut child, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        assert!(stream.is_ok());
        drop(client.join().unwrap());
    }
}
