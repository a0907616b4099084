//! QEMU (TCG): the kernel ELF through `-kernel` (PVH), or `keel.img` through SeaBIOS or OVMF
//! and GRUB.
//!
//! COM1 is the child's stdio (`-serial stdio`): the harness reads its stdout on a background
//! thread and types into its stdin. QEMU only hands the guest UART as many bytes as its FIFO
//! takes, so typed text is never dropped. COM2 goes to `com2.bin` in the machine's temporary
//! directory (`-serial file:`), QEMU's own messages to `qemu.stderr`.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::machine::{Machine, Parts, emulator_command, scaled, shell_line};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// OVMF as Debian's `ovmf` package installs it.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// Default timeout of one wait under QEMU.
pub const QEMU_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default hard timeout after which a QEMU is killed whatever the test does.
pub const QEMU_HARD_TIMEOUT: Duration = Duration::from_secs(600);

/// The CPU model with AMD-V and nested paging under TCG.
pub const CPU_SVM: &str = "qemu64,+svm,+npt,+rdrand";

/// Which firmware boots a disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default), legacy BIOS boot through GRUB's i386-pc core image.
    SeaBios,
    /// OVMF (`-bios /usr/share/ovmf/OVMF.fd`), UEFI boot through `/EFI/BOOT/BOOTX64.EFI`.
    Ovmf,
}

/// How the machine boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// `-kernel <elf> -append <cmdline>`: QEMU loads the ELF through its PVH note.
    Kernel {
        /// The kernel ELF.
        elf: PathBuf,
        /// The kernel command line (left out when empty).
        cmdline: String,
    },
    /// A raw disk image as a virtio-blk-pci disk (`-device virtio-blk-pci,drive=boot`), which
    /// both firmwares boot from and the kernel reads its configuration and guest store from;
    /// opened with `snapshot=on` so that several machines can boot the same file at once and
    /// none of them changes it — unless [`Qemu::writable_disk`] is set.
    Disk {
        /// The image.
        image: PathBuf,
        /// The firmware.
        firmware: Firmware,
    },
    /// A raw disk image as a SATA disk on port 0 of q35's built-in AHCI controller (ICH9,
    /// `-device ide-hd,drive=boot,bus=ide.0`), booted by SeaBIOS; `snapshot=on` unless
    /// [`Qemu::writable_disk`] is set, as for [`Boot::Disk`].
    AhciDisk {
        /// The image.
        image: PathBuf,
    },
    /// A raw disk image as the first IDE disk (`snapshot=on` unless [`Qemu::writable_disk`]),
    /// booted by SeaBIOS: the test guests' BIOS images (`GuestSet::bios_image`), and the
    /// appliance on the host ATA driver (`host_ata`).
    IdeDisk {
        /// The image.
        image: PathBuf,
    },
    /// A raw disk image as an NVMe controller's namespace (`-device nvme,drive=boot`),
    /// `snapshot=on` unless [`Qemu::writable_disk`]; both firmwares boot from it.
    Nvme {
        /// The image.
        image: PathBuf,
        /// The firmware.
        firmware: Firmware,
    },
}

/// A QEMU configuration; [`Qemu::spawn`] starts it.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// `-M`.
    pub machine: String,
    /// `-cpu`.
    pub cpu: String,
    /// `-m`, in MiB.
    pub memory_mib: u32,
    /// `-smp`.
    pub cpus: u32,
    /// What boots.
    pub boot: Boot,
    /// More arguments, appended last.
    pub extra_args: Vec<OsString>,
    /// The kernel ELF used to decode COM2 in failure reports.
    pub defmt_elf: Option<PathBuf>,
    /// Default timeout of one wait.
    pub timeout: Duration,
    /// The machine is killed after this long, whatever happens.
    pub hard_timeout: Duration,
    /// Write the disk image itself (no `snapshot=on`), through `cache=writethrough`: every
    /// write the guest completes is in the file (written with `O_DSYNC`) before the guest
    /// sees it complete, so what one machine saves the next one boots from — and a `SIGKILL`
    /// of the emulator loses only the requests still in flight.
    pub writable_disk: bool,
    /// The harness's console (stdio) on COM2 and the `com2.bin` file on COM1, for a kernel
    /// told `console=ttyS1` or given an SPCR naming COM2 (its defmt log then moves to COM1,
    /// so `com2.bin` still holds the log).
    pub console_on_com2: bool,
    /// `-accel tcg,thread=multi`: one host thread per emulated CPU, so the CPUs really run
    /// at the same time (the SMP tests).
    pub multi_threaded_tcg: bool,
}

impl Qemu {
    fn new(machine: &str, boot: Boot, defmt_elf: Option<PathBuf>) -> Self {
        Qemu {
            machine: machine.to_owned(),
            cpu: CPU_SVM.to_owned(),
            memory_mib: 1024,
            cpus: 2,
            boot,
            extra_args: Vec::new(),
            defmt_elf,
            timeout: scaled(QEMU_WAIT_TIMEOUT),
            hard_timeout: scaled(QEMU_HARD_TIMEOUT),
            writable_disk: false,
            console_on_com2: false,
            multi_threaded_tcg: false,
        }
    }

    /// The kernel ELF through `-kernel` (PVH) on `-M q35 -cpu qemu64,+svm,+npt -m 1024 -smp 2`.
    pub fn pvh(elf: &Path) -> Self {
        let boot = Boot::Kernel {
            elf: elf.to_owned(),
            cmdline: String::new(),
        };
        Self::new("q35", boot, Some(elf.to_owned()))
    }

    /// A disk image under SeaBIOS on `-M pc`, 1024 MiB, 2 CPUs, AMD-V CPU model.
    pub fn seabios(image: &Path) -> Self {
        let boot = Boot::Disk {
            image: image.to_owned(),
            firmware: Firmware::SeaBios,
        };
        Self::new("pc", boot, None)
    }

    /// A BIOS image as an IDE disk under SeaBIOS on `-M pc`, 64 MiB, 1 CPU, `-cpu qemu64`:
    /// a test guest without Keel.
    pub fn ide_disk(image: &Path) -> Self {
        let boot = Boot::IdeDisk {
            image: image.to_owned(),
        };
        Self::new("pc", boot, None)
            .cpu("qemu64")
            .memory_mib(64)
            .cpus(1)
    }

    /// A disk image as a SATA disk on q35's AHCI controller (port 0) under SeaBIOS, 1024 MiB,
    /// 2 CPUs, AMD-V CPU model. More SATA disks go on `ide.1`… with [`Qemu::args`].
    pub fn ahci_disk(image: &Path) -> Self {
        let boot = Boot::AhciDisk {
            image: image.to_owned(),
        };
        Self::new("q35", boot, None)
    }

    /// A disk image under OVMF on `-M q35`, 1024 MiB, 2 CPUs, AMD-V CPU model.
    pub fn ovmf(image: &Path) -> Self {
        let boot = Boot::Disk {
            image: image.to_owned(),
            firmware: Firmware::Ovmf,
        };
        Self::new("q35", boot, None)
    }

    /// A disk image on an NVMe controller (serial `keel-boot`) under SeaBIOS on `-M pc`,
    /// 1024 MiB, 2 CPUs, AMD-V CPU model.
    pub fn nvme_disk(image: &Path) -> Self {
        let boot = Boot::Nvme {
            image: image.to_owned(),
            firmware: Firmware::SeaBios,
        };
        Self::new("pc", boot, None)
    }

    /// [`Qemu::nvme_disk`] under OVMF on `-M q35`.
    pub fn nvme_disk_ovmf(image: &Path) -> Self {
        let boot = Boot::Nvme {
            image: image.to_owned(),
            firmware: Firmware::Ovmf,
        };
        Self::new("q35", boot, None)
    }

    /// Swaps the serial ports: the console the harness drives on COM2, `com2.bin` on COM1
    /// (see [`Qemu::console_on_com2`]).
    pub fn console_on_com2(mut self) -> Self {
        self.console_on_com2 = true;
        self
    }

    /// Sets the kernel command line (for [`Boot::Kernel`]; ignored for disks).
    pub fn append(mut self, cmdline: &str) -> Self {
        if let Boot::Kernel { cmdline: c, .. } = &mut self.boot {
            *c = cmdline.to_owned();
        }
        self
    }

    /// Sets `-cpu`.
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.to_owned();
        self
    }

    /// Sets `-M`.
    pub fn machine(mut self, machine: &str) -> Self {
        self.machine = machine.to_owned();
        self
    }

    /// Sets `-m` in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Sets `-smp`.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Runs the emulated CPUs on host threads of their own (`-accel tcg,thread=multi`).
    pub fn multi_threaded_tcg(mut self) -> Self {
        self.multi_threaded_tcg = true;
        self
    }

    /// Appends raw arguments (network devices, for example).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the kernel ELF that decodes COM2 in failure reports.
    pub fn defmt_elf(mut self, elf: &Path) -> Self {
        self.defmt_elf = Some(elf.to_owned());
        self
    }

    /// Boots the disk image writable (see [`Qemu::writable_disk`]); only one machine may use
    /// the file at a time.
    pub fn writable_disk(mut self) -> Self {
        self.writable_disk = true;
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
        match &self.boot {
            Boot::Kernel { .. } => format!("QEMU -kernel (PVH), -M {}", self.machine),
            Boot::Disk {
                firmware: Firmware::SeaBios,
                ..
            } => format!("QEMU SeaBIOS + GRUB, -M {}", self.machine),
            Boot::Disk {
                firmware: Firmware::Ovmf,
                ..
            } => format!("QEMU OVMF + GRUB, -M {}", self.machine),
            Boot::IdeDisk { .. } => format!("QEMU SeaBIOS, IDE disk, -M {}", self.machine),
            Boot::AhciDisk { .. } => format!("QEMU SeaBIOS + GRUB, AHCI disk, -M {}", self.machine),
            Boot::Nvme {
                firmware: Firmware::SeaBios,
                ..
            } => format!("QEMU SeaBIOS + GRUB, NVMe disk, -M {}", self.machine),
            Boot::Nvme {
                firmware: Firmware::Ovmf,
                ..
            } => format!("QEMU OVMF + GRUB, NVMe disk, -M {}", self.machine),
        }
    }

    /// The full argument list, with COM2 written to `com2`.
    pub fn command_args(&self, com2: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &str| args.push(a.into());
        push("-accel");
        push(if self.multi_threaded_tcg {
            "tcg,thread=multi"
        } else {
            "tcg"
        });
        push("-M");
        push(&self.machine);
        push("-cpu");
        push(&self.cpu);
        push("-m");
        push(&self.memory_mib.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        for a in [
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-user-config",
            "-nodefaults",
        ] {
            push(a);
        }
        let mut com2_arg = OsString::from("file:");
        com2_arg.push(com2);
        let stdio = OsString::from("stdio");
        let (first, second) = if self.console_on_com2 {
            (com2_arg, stdio)
        } else {
            (stdio, com2_arg)
        };
        args.extend(["-serial".into(), first, "-serial".into(), second]);
        match &self.boot {
            Boot::Kernel { elf, cmdline } => {
                args.push("-kernel".into());
                args.push(elf.into());
                if !cmdline.is_empty() {
                    args.push("-append".into());
                    args.push(cmdline.into());
                }
            }
            Boot::Disk { image, firmware } => {
                if *firmware == Firmware::Ovmf {
                    args.push("-bios".into());
                    args.push(OVMF.into());
                }
                // In -drive, a comma in a value is written as two.
                let image = image.to_string_lossy().replace(',', ",,");
                args.push("-drive".into());
                let mode = if self.writable_disk {
                    "cache=writethrough"
                } else {
                    "snapshot=on"
                };
                args.push(format!("file={image},format=raw,if=none,id=boot,{mode}").into());
                args.push("-device".into());
                args.push("virtio-blk-pci,drive=boot".into());
            }
            Boot::AhciDisk { image } => {
                let image = image.to_string_lossy().replace(',', ",,");
                let mode = if self.writable_disk {
                    "cache=writethrough"
                } else {
                    "snapshot=on"
                };
                args.push("-drive".into());
                args.push(format!("file={image},format=raw,if=none,id=boot,{mode}").into());
                args.push("-device".into());
                args.push("ide-hd,drive=boot,bus=ide.0".into());
            }
            Boot::IdeDisk { image } => {
                let image = image.to_string_lossy().replace(',', ",,");
                args.push("-drive".into());
                // Writable like `Boot::Disk` (the ATA tests save configurations on it).
                let mode = if self.writable_disk {
                    "cache=writethrough"
                } else {
                    "snapshot=on"
                };
                args.push(format!("file={image},format=raw,if=ide,{mode}").into());
            }
            Boot::Nvme { image, firmware } => {
                if *firmware == Firmware::Ovmf {
                    args.push("-bios".into());
                    args.push(OVMF.into());
                }
                let image = image.to_string_lossy().replace(',', ",,");
                let mode = if self.writable_disk {
                    "cache=writethrough"
                } else {
                    "snapshot=on"
                };
                args.push("-drive".into());
                args.push(format!("file={image},format=raw,if=none,id=boot,{mode}").into());
                args.push("-device".into());
                // Slot 5 and boot index 0: disks a test adds come before it on PCI (Keel must pass
                // them by) and the firmware still boots this one.
                args.push("nvme,drive=boot,serial=keel-boot,addr=0x5,bootindex=0".into());
            }
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts QEMU.
    pub fn spawn(&self) -> Result<Machine, Error> {
        let dir = tempfile::Builder::new()
            .prefix("keel-qemu-")
            .tempdir()
            .map_err(Error::prepare("a temporary directory"))?;
        let com2 = dir.path().join("com2.bin");
        let stderr_path = dir.path().join("qemu.stderr");
        let stderr = File::create(&stderr_path).map_err(Error::prepare("qemu.stderr"))?;
        let args = self.command_args(&com2);
        let command_line = shell_line(QEMU, &args);
        let started = Instant::now();
        let mut child = emulator_command(QEMU, &args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: QEMU.to_owned(),
                hint: "Debian package qemu-system-x86",
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Unreachable: both were requested as pipes above.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Prepare {
                what: "QEMU's stdio pipes".into(),
                source: std::io::Error::other("missing pipe"),
            });
        };
        Ok(Machine::start(Parts {
            name: self.describe(),
            command_line,
            child,
            console: Box::new(stdout),
            input: Box::new(stdin),
            dir,
            com2,
            defmt_elf: self.defmt_elf.clone(),
            logs: vec![stderr_path],
            timeout: self.timeout,
            hard_timeout: self.hard_timeout,
            started,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn pvh_command_line() {
        let q = Qemu::pvh(Path::new("/k/keel.elf")).append("keel.test-crash=page-fault");
        let args = strings(&q.command_args(Path::new("/t/com2.bin")));
        let line = args.join(" ");
        assert!(
            line.starts_with("-accel tcg -M q35 -cpu qemu64,+svm,+npt,+rdrand -m 1024 -smp 2 "),
            "{line}"
        );
        assert!(
            line.contains("-serial stdio -serial file:/t/com2.bin"),
            "{line}"
        );
        assert!(line.contains("-nodefaults"));
        assert!(
            line.ends_with("-kernel /k/keel.elf -append keel.test-crash=page-fault"),
            "{line}"
        );
    }

    #[test]
    fn empty_cmdline_is_left_out() {
        let args = strings(&Qemu::pvh(Path::new("k")).command_args(Path::new("c")));
        assert!(!args.contains(&"-append".to_owned()));
    }

    #[test]
    fn disk_boots() {
        let bios = strings(&Qemu::seabios(Path::new("/a,b/keel.img")).command_args(Path::new("c")));
        assert!(bios.contains(&"pc".to_owned()));
        assert!(!bios.contains(&"-bios".to_owned()));
        let line = bios.join(" ");
        assert!(
            line.ends_with(
                "-drive file=/a,,b/keel.img,format=raw,if=none,id=boot,snapshot=on \
                 -device virtio-blk-pci,drive=boot"
            ),
            "{line}"
        );
        let uefi = strings(
            &Qemu::ovmf(Path::new("/i/keel.img"))
                .cpu("qemu64,-svm")
                .args(["-device", "foo"])
                .command_args(Path::new("c")),
        );
        let line = uefi.join(" ");
        assert!(line.contains("-M q35 -cpu qemu64,-svm"), "{line}");
        assert!(line.contains(&format!("-bios {OVMF} -drive file=/i/keel.img")));
        assert!(line.ends_with("-device foo"));
    }

    #[test]
    fn ide_disks_boot_test_guests() {
        let args =
            strings(&Qemu::ide_disk(Path::new("/g/x.bios.img")).command_args(Path::new("c")));
        let line = args.join(" ");
        assert!(
            line.starts_with("-accel tcg -M pc -cpu qemu64 -m 64 -smp 1 "),
            "{line}"
        );
        assert!(
            line.ends_with("-drive file=/g/x.bios.img,format=raw,if=ide,snapshot=on"),
            "{line}"
        );
        // The appliance on the host ATA driver saves its configuration into the file.
        let args = strings(
            &Qemu::ide_disk(Path::new("/i/keel.img"))
                .writable_disk()
                .command_args(Path::new("c")),
        );
        let line = args.join(" ");
        assert!(
            line.ends_with("-drive file=/i/keel.img,format=raw,if=ide,cache=writethrough"),
            "{line}"
        );
    }

    #[test]
    fn ahci_disks_sit_on_q35s_sata_port_0() {
        let line = strings(
            &Qemu::ahci_disk(Path::new("/i/keel.img"))
                .writable_disk()
                .command_args(Path::new("c")),
        )
        .join(" ");
        assert!(line.contains("-M q35 "), "{line}");
        assert!(
            line.ends_with(
                "-drive file=/i/keel.img,format=raw,if=none,id=boot,cache=writethrough \
                 -device ide-hd,drive=boot,bus=ide.0"
            ),
            "{line}"
        );
    }

    #[test]
    fn writable_disks_write_through() {
        let args = strings(
            &Qemu::seabios(Path::new("/i/keel.img"))
                .writable_disk()
                .command_args(Path::new("c")),
        );
        let line = args.join(" ");
        assert!(
            line.contains("-drive file=/i/keel.img,format=raw,if=none,id=boot,cache=writethrough "),
            "{line}"
        );
        assert!(!line.contains("snapshot"), "{line}");
    }

    #[test]
    fn append_is_ignored_for_disks() {
        let q = Qemu::seabios(Path::new("img")).append("x");
        assert!(matches!(q.boot, Boot::Disk { .. }));
    }
}
