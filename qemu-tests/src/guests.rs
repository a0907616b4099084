//! The small guest payloads the VMM tests run, built from source at test time.
//!
//! The sources are GNU assembler files in `qemu-tests/guests/` (one `<name>.S`
//! per guest, shared code in `guests/include/`, the benchmark loop in
//! `guests/cpu_loop.S`). [`build_guests`] assembles each with binutils `as` and
//! links it with `ld -Ttext=0x7c00 --oformat binary` into
//! `<workspace>/target/keel/guests/<name>.bin`. No binaries are committed.
//!
//! Every guest is a flat payload for Keel's flat loader: loaded at guest-physical
//! [`LOAD_ADDRESS`] and started in 16-bit real mode at CS:IP = 0000:7C00, with
//! COM1 (a 16550 at 0x3F8) as its only output. Each starts with
//! [`ENTRY_BYTES`] (`cli; cld; ljmp $0,$0x7c07; xor %ax,%ax`).
//!
//! | guest | what it does | serial output |
//! | --- | --- | --- |
//! | `hello` | real mode, prints, halts | `hello from a Keel guest` |
//! | `exits` | long mode; CPUID/MSR/port/MMIO/VMMCALL checks | `PASS <check>` / `FAIL <check> (<detail>)` per check, then `exits guest: all 9 checks passed` or `exits guest: M of 9 checks failed` |
//! | `hostile-triple` | zero-limit IDT + INT3: triple fault | `triple fault next` (then the VM must stop with "shutdown") |
//! | `hostile-spin` | `jmp .` with IF=0, no exits | `spinning` |
//! | `hostile-memory` | 32-bit PM; reads/writes 0x4000_0000 | `touching memory beyond RAM`, `read 0x…`, `read 0x…`, `still alive` |
//! | `hostile-vmrun` | VMRUN and VMMCALL under its own #UD handler | `caught #UD` (twice), `survived VMRUN and VMMCALL` |
//! | `hostile-virtio` | 32-bit PM; finds virtio-blk (0x1AF4:0x1042) on PCI bus 0, posts malformed requests, each after a device reset | `virtio case used 0x… status 0x… device 0x…: <case>` per case (see `hostile-virtio.S`), `hostile-virtio: done` |
//! | `hostile-net` | 32-bit PM; finds virtio-net (0x1AF4:0x1041) on PCI bus 0, sends a valid frame, forged-source, runt, oversize and malformed TX chains (each case after a device reset), then floods broadcast frames | `hostile-net: mac 0x… 0x…`, `net case used 0x… device 0x…: <case>` per case (see `hostile-net.S`), `hostile-net: flooding`, `hostile-net: flood sent 0x…` every 0x4000 frames |
//! | `counter` | prints forever | `tick 0`, `tick 1`, … |
//! | `bench` | long mode; RDTSC timings | `bench cpuid-exits 100000 cycles N`, `bench out-exits 100000 cycles N`, `bench cpu-loop 50000000 cycles N`, `bench done` |
//! | `echo` | real mode; polls COM1, writes each byte back (letters upper-cased, CR as LF) | `echo guest: ready`, then the input |
//! | `dirty` | real mode; polls COM1, writes one byte into each of the pages 0x30000, 0x31000, 0x45000, 0x9F000 per `w` received | `dirty guest: ready`, then `dirty guest: wrote 4 pages` per `w` |
//! | `pvh` | a PVH ELF kernel (`pvh.ld`): start-info checks, PIT interrupts while halted, ACPI power-off | `pvh guest: …` lines (see `pvh.S`) |
//! | `smp` | a PVH ELF kernel (`pvh.ld`): starts every MADT CPU with INIT-SIPI-SIPI, sends the APs a fixed IPI, ACPI power-off | `smp guest: madt cpus=N`, `smp guest: bsp apic id 0`, `smp guest: ap <id> up` per AP, `smp guest: N cpus up`, `smp guest: ap <id> got ipi` per AP, `smp guest: ipis delivered to <N-1> aps`, `smp guest: done` (AP lines in any order; see `smp.S`) |
//!
//! All lines end in `\n` (`smp`'s in `\r\n`). [`GuestSet::bios_image`] also gives, for each guest, a
//! disk image that plain QEMU or Bochs can boot through their BIOS (a test-only
//! boot sector loads the guest to 0x7C00 and jumps to it), so the guests can be
//! checked without Keel.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};

/// Guest-physical address every guest is linked for and loaded at.
pub const LOAD_ADDRESS: u64 = 0x7C00;

/// The first bytes of every guest: `cli`, `cld`, `ljmp $0,$0x7c07`,
/// `xor %ax,%ax` (see `REAL_MODE_ENTRY` in `guests/include/common.S`).
pub const ENTRY_BYTES: [u8; 9] = [0xFA, 0xFC, 0xEA, 0x07, 0x7C, 0x00, 0x00, 0x31, 0xC0];

/// Largest guest the flat loader (and the BIOS test loader) takes: 64 KiB.
pub const MAX_GUEST_SIZE: usize = 64 * 1024;

/// `hello`: prints `hello from a Keel guest` from real mode and halts.
pub const HELLO: &str = "hello";
/// `exits`: long-mode checks of CPUID, MSR, port I/O, MMIO and VMMCALL handling.
pub const EXITS: &str = "exits";
/// `hostile-triple`: triple-faults (the VM must stop with "shutdown").
pub const HOSTILE_TRIPLE: &str = "hostile-triple";
/// `hostile-spin`: spins forever with interrupts off and no exits.
pub const HOSTILE_SPIN: &str = "hostile-spin";
/// `hostile-memory`: reads and writes guest-physical 0x4000_0000, beyond its RAM.
pub const HOSTILE_MEMORY: &str = "hostile-memory";
/// `hostile-vmrun`: executes VMRUN and VMMCALL and catches the #UDs.
pub const HOSTILE_VMRUN: &str = "hostile-vmrun";
/// `hostile-virtio`: drives a virtio-blk PCI function with malformed virtqueues.
pub const HOSTILE_VIRTIO: &str = "hostile-virtio";
/// `hostile-net`: malformed and forged frames on a virtio-net PCI function, then a flood.
pub const HOSTILE_NET: &str = "hostile-net";
/// `counter`: prints `tick N` forever.
pub const COUNTER: &str = "counter";
/// `bench`: times CPUID exits, OUT exits and a CPU-bound loop with RDTSC.
pub const BENCH: &str = "bench";
/// `pvh`: a PVH ELF kernel; checks its start info, takes timer interrupts, powers off.
pub const PVH: &str = "pvh";
/// `smp`: a PVH ELF kernel; starts every CPU of its MADT, IPIs them, powers off.
pub const SMP: &str = "smp";
/// `echo`: reads COM1 and writes each byte back, letters in upper case.
pub const ECHO: &str = "echo";

/// `dirty`: writes four known pages per `w` on COM1 (the dirty-log test).
pub const DIRTY: &str = "dirty";

/// How a guest is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFormat {
    /// A flat binary at [`LOAD_ADDRESS`], `<name>.bin` (also wrapped in a BIOS image).
    Flat,
    /// A PVH ELF kernel linked with this script (relative to `qemu-tests/guests/`),
    /// `<name>.elf`.
    PvhElf(&'static str),
}

/// One guest payload: where its source is and how big it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSpec {
    /// Name used with [`GuestSet::path`]; the output is `<name>.bin` or `<name>.elf`.
    pub name: &'static str,
    /// Source file, relative to `qemu-tests/guests/`.
    pub source: &'static str,
    /// Size budget in bytes (inclusive); the build fails above it.
    pub max_size: usize,
    /// How it is linked.
    pub format: GuestFormat,
}

impl GuestSpec {
    /// The output file name.
    pub fn file_name(&self) -> String {
        match self.format {
            GuestFormat::Flat => format!("{}.bin", self.name),
            GuestFormat::PvhElf(_) => format!("{}.elf", self.name),
        }
    }
}

/// Every guest [`build_guests`] builds.
pub const GUESTS: &[GuestSpec] = &[
    GuestSpec {
        name: HELLO,
        source: "hello.S",
        max_size: 511,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: EXITS,
        source: "exits.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_TRIPLE,
        source: "hostile-triple.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_SPIN,
        source: "hostile-spin.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_MEMORY,
        source: "hostile-memory.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_VMRUN,
        source: "hostile-vmrun.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_VIRTIO,
        source: "hostile-virtio.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: HOSTILE_NET,
        source: "hostile-net.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: COUNTER,
        source: "counter.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: BENCH,
        source: "bench.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: ECHO,
        source: "echo.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: DIRTY,
        source: "dirty.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::Flat,
    },
    GuestSpec {
        name: PVH,
        source: "pvh.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::PvhElf("pvh.ld"),
    },
    GuestSpec {
        name: SMP,
        source: "smp.S",
        max_size: MAX_GUEST_SIZE,
        format: GuestFormat::PvhElf("pvh.ld"),
    },
];

/// Test-only boot sector used by [`GuestSet::bios_image`] (not a guest).
const BIOS_LOADER_SOURCE: &str = "test-support/bios-loader.S";
/// Where the BIOS loader runs after moving itself out of the guest's way.
const BIOS_LOADER_ADDRESS: u64 = 0x600;

/// `qemu-tests/guests/`: the guest sources.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests")
}

/// `<workspace>/target/keel/guests/`: where the built guests go.
pub fn output_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().unwrap_or(manifest);
    workspace.join("target").join("keel").join("guests")
}

/// The built guests. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSet {
    dir: PathBuf,
}

impl GuestSet {
    /// Directory holding `<name>.bin` for every guest.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of guest `name` (one of [`GUESTS`], e.g. [`HELLO`]): its flat binary or ELF.
    ///
    /// # Panics
    ///
    /// If `name` is not a known guest: that is a typo in a test.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(spec(name).file_name())
    }

    /// Path of a raw disk image that boots guest `name` under a PC BIOS
    /// (plain QEMU, Bochs) without Keel: sector 0 is a test-only loader that
    /// sets COM1 to 115200 8N1, reads the guest (sectors 1–128, padded to
    /// 64 KiB) to 0x7C00 and jumps to 0000:7C00 with interrupts off.
    ///
    /// # Panics
    ///
    /// If `name` is not a known guest (PVH guests have no BIOS image).
    pub fn bios_image(&self, name: &str) -> PathBuf {
        let spec = spec(name);
        self.dir.join(format!("{}.bios.img", spec.name))
    }

    /// The names of all guests, in [`GUESTS`] order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        GUESTS.iter().map(|g| g.name)
    }
}

fn spec(name: &str) -> &'static GuestSpec {
    GUESTS.iter().find(|g| g.name == name).unwrap_or_else(|| {
        let known: Vec<&str> = GUESTS.iter().map(|g| g.name).collect();
        panic!(
            "unknown test guest {name:?}; known guests: {}",
            known.join(", ")
        )
    })
}

/// Why the guests could not be built.
#[derive(Debug, Clone)]
pub enum GuestBuildError {
    /// `as` or `ld` is not installed.
    ToolMissing {
        /// `"as"` or `"ld"`.
        tool: &'static str,
    },
    /// `as` or `ld` could not be started for another reason.
    ToolSpawn {
        /// `"as"` or `"ld"`.
        tool: &'static str,
        /// The error from starting it.
        error: Arc<io::Error>,
    },
    /// `as` or `ld` failed (or warned: warnings are fatal).
    ToolFailed {
        /// `"as"` or `"ld"`.
        tool: &'static str,
        /// Guest (or `bios-loader`) being built.
        guest: String,
        /// The full command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// What the tool printed.
        output: String,
    },
    /// A guest came out empty or bigger than its budget.
    BadSize {
        /// Guest name.
        guest: String,
        /// Size of the flat binary in bytes.
        size: usize,
        /// Its budget in bytes.
        max: usize,
    },
    /// Reading or writing a file failed.
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        error: Arc<io::Error>,
    },
}

impl fmt::Display for GuestBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ToolMissing { tool } => write!(
                f,
                "cannot build the test guests: `{tool}` was not found; install GNU binutils \
                 (Debian/Ubuntu: `apt-get install binutils`, or run image-builder/install-deps.sh)"
            ),
            Self::ToolSpawn { tool, error } => write!(
                f,
                "cannot build the test guests: starting `{tool}` (from GNU binutils) failed: {error}"
            ),
            Self::ToolFailed {
                tool: _,
                guest,
                command,
                status,
                output,
            } => write!(
                f,
                "building test guest {guest:?}: `{command}` failed ({status}):\n{}",
                output.trim_end()
            ),
            Self::BadSize { guest, size, max } if *size == 0 => {
                write!(
                    f,
                    "test guest {guest:?} came out empty (budget {max} bytes)"
                )
            }
            Self::BadSize { guest, size, max } => {
                write!(
                    f,
                    "test guest {guest:?} is {size} bytes, over its budget of {max} bytes"
                )
            }
            Self::Io {
                action,
                path,
                error,
            } => {
                write!(
                    f,
                    "building test guests: {action} {}: {error}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for GuestBuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ToolSpawn { error, .. } | Self::Io { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

/// Builds every guest in [`GUESTS`] into [`output_dir`] (and its BIOS disk
/// image, see [`GuestSet::bios_image`]). The work is done once per process;
/// later calls return the same result.
///
/// Safe to call from several test processes at once: each builds in its own
/// scratch directory and renames finished files into place.
pub fn build_guests() -> Result<GuestSet, GuestBuildError> {
    static BUILT: OnceLock<Result<GuestSet, GuestBuildError>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_all(&source_dir(), &output_dir()))
        .clone()
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GuestBuildError + use<> {
    let path = path.to_path_buf();
    move |error| GuestBuildError::Io {
        action,
        path,
        error: Arc::new(error),
    }
}

fn build_all(src: &Path, out: &Path) -> Result<GuestSet, GuestBuildError> {
    fs::create_dir_all(out).map_err(io_err("create directory", out))?;
    check_tool("as")?;
    check_tool("ld")?;

    let scratch = Scratch::new(out)?;
    let loader = assemble_and_link(
        src,
        BIOS_LOADER_SOURCE,
        "bios-loader",
        &Link::Flat(BIOS_LOADER_ADDRESS),
        &scratch.0,
    )?;
    let loader = fs::read(&loader).map_err(io_err("read", &loader))?;

    for guest in GUESTS {
        let link = match guest.format {
            GuestFormat::Flat => Link::Flat(LOAD_ADDRESS),
            GuestFormat::PvhElf(script) => Link::Script(src.join(script)),
        };
        let bin = assemble_and_link(src, guest.source, guest.name, &link, &scratch.0)?;
        let bytes = fs::read(&bin).map_err(io_err("read", &bin))?;
        if bytes.is_empty() || bytes.len() > guest.max_size {
            return Err(GuestBuildError::BadSize {
                guest: guest.name.to_string(),
                size: bytes.len(),
                max: guest.max_size,
            });
        }
        let final_bin = out.join(guest.file_name());
        if let GuestFormat::PvhElf(_) = guest.format {
            fs::rename(&bin, &final_bin).map_err(io_err("rename into", &final_bin))?;
            continue;
        }
        let mut image = loader.clone();
        image.extend_from_slice(&bytes);
        image.resize(loader.len() + MAX_GUEST_SIZE, 0);
        let image_tmp = scratch.0.join(format!("{}.bios.img", guest.name));
        fs::write(&image_tmp, &image).map_err(io_err("write", &image_tmp))?;

        // Rename into place: readers never see a half-written file.
        fs::rename(&bin, &final_bin).map_err(io_err("rename into", &final_bin))?;
        let final_image = out.join(format!("{}.bios.img", guest.name));
        fs::rename(&image_tmp, &final_image).map_err(io_err("rename into", &final_image))?;
    }
    Ok(GuestSet {
        dir: out.to_path_buf(),
    })
}

/// A per-process scratch directory under the output directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(out: &Path) -> Result<Self, GuestBuildError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = out.join(format!(".build-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn check_tool(tool: &'static str) -> Result<(), GuestBuildError> {
    match Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(GuestBuildError::ToolMissing { tool }),
        Err(e) => Err(GuestBuildError::ToolSpawn {
            tool,
            error: Arc::new(e),
        }),
    }
}

/// How [`assemble_and_link`] links.
enum Link {
    /// A flat binary whose text starts at this address.
    Flat(u64),
    /// An ELF executable laid out by this linker script.
    Script(PathBuf),
}

/// Assembles `src/<source>` and links it as `link` says; returns the path of the output (in
/// `scratch`).
fn assemble_and_link(
    src: &Path,
    source: &str,
    name: &str,
    link_as: &Link,
    scratch: &Path,
) -> Result<PathBuf, GuestBuildError> {
    let obj = scratch.join(format!("{name}.o"));
    let bin = scratch.join(format!("{name}.bin"));
    let mut assemble = Command::new("as");
    assemble
        .arg("--64")
        .arg("--fatal-warnings")
        .arg("-I")
        .arg(src.join("include"))
        .arg("-I")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .arg(src.join(source));
    run_tool("as", name, &mut assemble)?;

    let mut link = Command::new("ld");
    link.args([
        "-m",
        "elf_x86_64",
        "-nostdlib",
        "-static",
        "--build-id=none",
        "--fatal-warnings",
    ])
    .args(["-e", "_start"]);
    match link_as {
        Link::Flat(address) => {
            link.arg(format!("-Ttext={address:#x}"))
                .args(["--oformat", "binary"]);
        }
        Link::Script(script) => {
            // One RWX segment keeps the test kernel's script trivial.
            link.arg("--no-warn-rwx-segments").arg("-T").arg(script);
        }
    }
    link.arg("-o").arg(&bin).arg(&obj);
    run_tool("ld", name, &mut link)?;
    Ok(bin)
}

fn run_tool(
    tool: &'static str,
    guest: &str,
    command: &mut Command,
) -> Result<Output, GuestBuildError> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            GuestBuildError::ToolMissing { tool }
        } else {
            GuestBuildError::ToolSpawn {
                tool,
                error: Arc::new(e),
            }
        }
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Err(GuestBuildError::ToolFailed {
        tool,
        guest: guest.to_string(),
        command: line,
        status: output.status.to_string(),
        output: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Child;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    fn guests() -> GuestSet {
        build_guests().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_guest_builds_within_budget_and_starts_with_the_entry_sequence() {
        let set = guests();
        assert_eq!(set.names().count(), GUESTS.len());
        for guest in GUESTS {
            let bytes = fs::read(set.path(guest.name)).expect("read guest");
            assert!(!bytes.is_empty(), "{} is empty", guest.name);
            assert!(
                bytes.len() <= guest.max_size,
                "{} is {} bytes, budget {}",
                guest.name,
                bytes.len(),
                guest.max_size
            );
            assert!(bytes.len() <= MAX_GUEST_SIZE);
            let magic: &[u8] = match guest.format {
                GuestFormat::Flat => &ENTRY_BYTES,
                // An ELF64 executable (the PVH loader checks the rest).
                GuestFormat::PvhElf(_) => b"\x7fELF\x02",
            };
            assert!(
                bytes.starts_with(magic),
                "{} starts with {:02x?}",
                guest.name,
                &bytes[..bytes.len().min(ENTRY_BYTES.len())]
            );
        }
    }

    #[test]
    fn hello_fits_in_a_boot_sector() {
        let bytes = fs::read(guests().path(HELLO)).unwrap();
        assert!(bytes.len() < 512, "hello is {} bytes", bytes.len());
    }

    #[test]
    fn guest_names_are_unique_and_map_to_their_files() {
        let set = guests();
        let mut names: Vec<&str> = set.names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GUESTS.len());
        assert_eq!(
            set.path(HOSTILE_VMRUN),
            output_dir().join("hostile-vmrun.bin")
        );
        assert_eq!(
            set.bios_image(COUNTER),
            output_dir().join("counter.bios.img")
        );
        assert_eq!(set.path(SMP), output_dir().join("smp.elf"));
        assert!(output_dir().ends_with("target/keel/guests"));
    }

    #[test]
    #[should_panic(expected = "unknown test guest \"helo\"")]
    fn unknown_guest_names_panic_with_the_known_names() {
        let _ = guests().path("helo");
    }

    #[test]
    fn the_build_is_cached_per_process() {
        assert_eq!(guests(), guests());
    }

    #[test]
    fn bios_images_hold_the_loader_then_the_padded_guest() {
        let set = guests();
        for guest in GUESTS.iter().filter(|g| g.format == GuestFormat::Flat) {
            let image = fs::read(set.bios_image(guest.name)).unwrap();
            let bin = fs::read(set.path(guest.name)).unwrap();
            assert_eq!(image.len(), 512 + MAX_GUEST_SIZE);
            assert_eq!(&image[510..512], &[0x55, 0xAA], "boot signature");
            assert_eq!(&image[512..512 + bin.len()], &bin[..]);
            assert!(image[512 + bin.len()..].iter().all(|&b| b == 0));
        }
    }

    /// cpu_loop.S must be position-independent (the kernel includes the same
    /// code at another address): linked at two addresses it gives the same bytes.
    #[test]
    fn cpu_loop_is_position_independent() {
        let dir = Scratch::new(&output_dir()).unwrap();
        let wrapper = format!(
            "        .code64\n        .globl _start\n_start:\n        .include \"{}\"\n",
            source_dir().join("cpu_loop.S").display()
        );
        fs::write(dir.0.join("cpu-loop.S"), wrapper).unwrap();
        let link_at = |address: u64| {
            let name = format!("cpu-loop-{address:x}");
            let bin = assemble_and_link(&dir.0, "cpu-loop.S", &name, &Link::Flat(address), &dir.0)
                .unwrap_or_else(|e| panic!("{e}"));
            fs::read(bin).unwrap()
        };
        let (a, b) = (link_at(0x7C00), link_at(0x12_3450));
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(a.last(), Some(&0xC3), "ends in RET");
    }

    /// The kernel includes cpu_loop.S through `global_asm!`, which reads it as a
    /// format string: a brace anywhere (even in a comment) breaks that build.
    #[test]
    fn cpu_loop_source_has_no_braces() {
        let text = fs::read_to_string(source_dir().join("cpu_loop.S")).unwrap();
        assert!(
            !text.contains(['{', '}']),
            "cpu_loop.S must not contain braces"
        );
        assert!(text.contains(".globl keel_cpu_loop"));
    }

    #[test]
    fn a_missing_tool_names_binutils() {
        let e = GuestBuildError::ToolMissing { tool: "as" };
        let text = e.to_string();
        assert!(text.contains("`as`") && text.contains("binutils"), "{text}");
    }

    #[test]
    fn assembler_errors_name_the_guest_and_show_the_message() {
        let dir = Scratch::new(&output_dir()).unwrap();
        fs::write(
            dir.0.join("broken.S"),
            "        .code16\n_start: not_an_instruction\n",
        )
        .unwrap();
        let err = assemble_and_link(
            &dir.0,
            "broken.S",
            "broken",
            &Link::Flat(LOAD_ADDRESS),
            &dir.0,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, GuestBuildError::ToolFailed { tool: "as", .. }),
            "{text}"
        );
        assert!(
            text.contains("\"broken\"") && text.contains("not_an_instruction"),
            "{text}"
        );
    }

    // ------------------------------------------------------------------
    // Smoke tests under plain QEMU (no Keel): the guests boot through
    // SeaBIOS and the test loader. They check the mode switches, printing,
    // the fault handlers and the guests' own logic. Checks that need Keel
    // (hypervisor signature, all-ones for unbacked memory, ...) are not
    // asserted here. Without qemu-system-x86_64 they fail, as the
    // integration tests do: a missing emulator must not pass as a green run.
    // ------------------------------------------------------------------

    const QEMU: &str = "qemu-system-x86_64";

    struct Qemu {
        child: Child,
        output: Arc<Mutex<Vec<u8>>>,
    }

    impl Qemu {
        /// Boots `name`'s BIOS image.
        fn boot(name: &str) -> Self {
            let image = guests().bios_image(name);
            Self::spawn(&[
                "-m".into(),
                "16".into(),
                "-drive".into(),
                format!("file={},format=raw,if=ide,snapshot=on", image.display()),
            ])
        }

        /// Boots PVH guest `name` with QEMU's `-kernel` on `cpus` CPUs.
        fn boot_pvh(name: &str, cpus: u32) -> Self {
            let elf = guests().path(name);
            Self::spawn(&[
                "-m".into(),
                "64".into(),
                "-smp".into(),
                cpus.to_string(),
                "-kernel".into(),
                elf.display().to_string(),
            ])
        }

        /// Starts QEMU (TCG, `qemu64`, no default devices, COM1 on stdout) with
        /// `args` added. Panics when QEMU cannot be started (not installed, say).
        fn spawn(args: &[String]) -> Self {
            let spawned = Command::new(QEMU)
                .args([
                    "-accel",
                    "tcg",
                    "-cpu",
                    "qemu64",
                    "-nodefaults",
                    "-no-reboot",
                ])
                .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                    "{QEMU} is not installed: these tests need it \
                     (Debian/Ubuntu: `apt-get install qemu-system-x86`, or run \
                     image-builder/install-deps.sh)"
                ),
                Err(e) => panic!("starting {QEMU}: {e}"),
            };
            let output = Arc::new(Mutex::new(Vec::new()));
            let mut stdout = child.stdout.take().unwrap();
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            Self { child, output }
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
        }

        /// Waits until the output contains `needle` (or QEMU exits, or 20 s
        /// pass); returns the output so far.
        fn wait_for(&mut self, needle: &str) -> String {
            self.wait_until(|text| text.contains(needle))
        }

        /// Waits until `done(output)` holds (or QEMU exits, or 20 s pass);
        /// returns the output so far.
        fn wait_until(&mut self, done: impl Fn(&str) -> bool) -> String {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = self.text();
                if done(&text) || Instant::now() > deadline {
                    return text;
                }
                if let Ok(Some(_)) = self.child.try_wait() {
                    std::thread::sleep(Duration::from_millis(50)); // let the reader drain
                    return self.text();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Waits up to `limit` for QEMU to exit on its own.
        fn exited_within(&mut self, limit: Duration) -> bool {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    }

    impl Drop for Qemu {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn qemu_hello_prints_its_line() {
        let mut vm = Qemu::boot(HELLO);
        let out = vm.wait_for("\n");
        assert_eq!(out, "hello from a Keel guest\n");
    }

    #[test]
    fn qemu_exits_reaches_long_mode_and_reports_every_check() {
        let mut vm = Qemu::boot(EXITS);
        let out =
            vm.wait_until(|t| t.ends_with(" checks passed\n") || t.ends_with(" checks failed\n"));
        assert!(
            out.starts_with("exits guest: in long mode, running checks\n"),
            "{out}"
        );
        assert!(!out.contains("unexpected exception"), "{out}");
        let checks = [
            "cpuid-hypervisor-bit",
            "cpuid-signature",
            "cpuid-no-vmx",
            "cpuid-no-svm",
            "msr-allowed",
            "msr-unknown-gp",
            "io-unclaimed",
            "mmio-unbacked",
            "vmmcall-ud",
        ];
        let mut failed = 0;
        for check in checks {
            let pass = out.lines().any(|l| l == format!("PASS {check}"));
            let fail = out
                .lines()
                .any(|l| l.starts_with(&format!("FAIL {check} (")) && l.ends_with(')'));
            assert!(
                pass != fail,
                "{check}: exactly one PASS/FAIL line expected in\n{out}"
            );
            failed += usize::from(fail);
        }
        // What QEMU 7.2 TCG with -cpu qemu64 does the same way Keel should.
        for check in ["cpuid-no-vmx", "msr-allowed", "io-unclaimed", "vmmcall-ud"] {
            assert!(
                out.contains(&format!("PASS {check}\n")),
                "{check} under plain QEMU:\n{out}"
            );
        }
        let summary = if failed == 0 {
            format!("exits guest: all {} checks passed\n", checks.len())
        } else {
            format!("exits guest: {failed} of {} checks failed\n", checks.len())
        };
        assert!(
            out.ends_with(&summary),
            "expected summary {summary:?} in\n{out}"
        );
    }

    #[test]
    fn qemu_hostile_triple_shuts_the_machine_down() {
        let mut vm = Qemu::boot(HOSTILE_TRIPLE);
        // With -no-reboot a triple fault (CPU shutdown) makes QEMU exit.
        assert!(
            vm.exited_within(Duration::from_secs(20)),
            "QEMU still running: {}",
            vm.text()
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(vm.text(), "triple fault next\n");
    }

    #[test]
    fn qemu_hostile_spin_keeps_spinning() {
        let mut vm = Qemu::boot(HOSTILE_SPIN);
        assert_eq!(vm.wait_for("\n"), "spinning\n");
        assert!(!vm.exited_within(Duration::from_millis(500)));
        assert_eq!(vm.text(), "spinning\n");
    }

    #[test]
    fn qemu_hostile_memory_survives_its_probe() {
        let mut vm = Qemu::boot(HOSTILE_MEMORY);
        let out = vm.wait_for("still alive\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "touching memory beyond RAM");
        for line in &lines[1..3] {
            let hex = line
                .strip_prefix("read 0x")
                .unwrap_or_else(|| panic!("{out}"));
            assert_eq!(hex.len(), 8, "{out}");
            u32::from_str_radix(hex, 16).unwrap();
        }
        assert_eq!(lines[3], "still alive");
    }

    #[test]
    fn qemu_hostile_vmrun_catches_both_uds() {
        let mut vm = Qemu::boot(HOSTILE_VMRUN);
        let out = vm.wait_for("survived VMRUN and VMMCALL\n");
        assert_eq!(out, "caught #UD\ncaught #UD\nsurvived VMRUN and VMMCALL\n");
    }

    #[test]
    fn qemu_counter_counts() {
        let mut vm = Qemu::boot(COUNTER);
        let out = vm.wait_for("tick 3\n");
        let lines: Vec<&str> = out.lines().take(4).collect();
        assert_eq!(lines, ["tick 0", "tick 1", "tick 2", "tick 3"], "{out}");
    }

    #[test]
    fn qemu_bench_prints_its_measurements() {
        let mut vm = Qemu::boot(BENCH);
        let out = vm.wait_for("bench done\n");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        for (line, prefix) in lines.iter().zip([
            "bench cpuid-exits 100000 cycles ",
            "bench out-exits 100000 cycles ",
            "bench cpu-loop 50000000 cycles ",
        ]) {
            let cycles = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{out}"));
            assert!(cycles.parse::<u64>().unwrap() > 0, "{out}");
        }
        assert_eq!(lines[3], "bench done");
    }

    /// The SMP guest on plain QEMU's PVH boot: every AP starts, takes the IPI,
    /// and the guest powers the machine off.
    #[test]
    fn qemu_smp_starts_every_cpu_and_powers_off() {
        for cpus in [1u32, 4] {
            let mut vm = Qemu::boot_pvh(SMP, cpus);
            assert!(
                vm.exited_within(Duration::from_secs(20)),
                "-smp {cpus}: QEMU still running: {}",
                vm.text()
            );
            let out = vm.wait_for("smp guest: done\n"); // drains the output after the exit
            let aps = (cpus - 1) as usize;
            let ap_lines = |what: &str| {
                let mut v: Vec<String> = (1..cpus)
                    .map(|id| format!("smp guest: ap {id} {what}"))
                    .collect();
                v.sort();
                v
            };
            let mut expected = vec![
                format!("smp guest: madt cpus={cpus}"),
                "smp guest: bsp apic id 0".to_string(),
            ];
            expected.extend(ap_lines("up"));
            expected.push(format!("smp guest: {cpus} cpus up"));
            expected.extend(ap_lines("got ipi"));
            expected.push(format!("smp guest: ipis delivered to {aps} aps"));
            expected.extend(ap_lines("got nmi"));
            expected.push(format!("smp guest: nmis delivered to {aps} aps"));
            expected.push("smp guest: done".to_string());
            // The APs check in and take the IPI and the NMI in any order.
            let mut got: Vec<String> = out.lines().map(String::from).collect();
            if got.len() == expected.len() {
                got[2..2 + aps].sort();
                got[3 + aps..3 + 2 * aps].sort();
                got[4 + 2 * aps..4 + 3 * aps].sort();
            }
            assert_eq!(got, expected, "-smp {cpus}:\n{out}");
        }
    }
}
