//! `keel run`: booting `keel.img` in QEMU with the terminal on COM1.
//!
//! The machine is QEMU's software emulator (TCG) with AMD-V and nested paging exposed
//! (`-cpu qemu64,+svm,+npt`), which is how Keel's SVM backend runs on machines without hardware
//! virtualization. COM1 is multiplexed with the QEMU monitor on stdio (Ctrl-A X quits, Ctrl-A C
//! switches to the monitor); COM2 — the kernel's defmt stream — goes to a file for `keel logs`.
//! The management plane's HTTP port is forwarded to localhost through a virtio-net NIC; the
//! image is a virtio-blk disk.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// Debian's OVMF firmware image.
pub const OVMF_PATH: &str = "/usr/share/ovmf/OVMF.fd";
/// Port the appliance serves HTTP on inside the guest network.
pub const GUEST_HTTP_PORT: u16 = 80;

/// The appliance's HTTPS port, which `--http-port` is forwarded to.
pub const GUEST_HTTPS_PORT: u16 = 443;

/// Which firmware boots the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default): GRUB from the MBR and BIOS boot partition.
    #[default]
    Bios,
    /// OVMF: GRUB from `/EFI/BOOT/BOOTX64.EFI`.
    Uefi,
}

/// QEMU machine type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Machine {
    /// Q35 chipset (PCIe, AHCI).
    #[default]
    Q35,
    /// i440FX chipset (PCI, PIIX IDE).
    Pc,
}

impl Machine {
    /// QEMU's name for the machine.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Pc => "pc",
        }
    }
}

/// How to run QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Firmware.
    pub firmware: Firmware,
    /// Machine type.
    pub machine: Machine,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of CPUs.
    pub smp: u32,
    /// Host port forwarded to the guest's HTTP port on 127.0.0.1; `None` attaches no NIC.
    pub http_port: Option<u16>,
    /// Extra arguments appended to QEMU's command line.
    pub extra_args: Vec<OsString>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            firmware: Firmware::Bios,
            machine: Machine::Q35,
            mem_mib: 1024,
            smp: 2,
            http_port: Some(8080),
            extra_args: Vec::new(),
        }
    }
}

/// Why QEMU could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// QEMU is not installed.
    #[error(
        "{QEMU} not found: install Debian package qemu-system-x86 \
         (image-builder/install-deps.sh does this)"
    )]
    QemuNotFound,
    /// OVMF is not installed.
    #[error(
        "UEFI firmware {} not found: install Debian package ovmf \
         (image-builder/install-deps.sh does this)", path.display()
    )]
    OvmfNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The image does not exist.
    #[error("{} not found: run `keel build` first", path.display())]
    ImageNotFound {
        /// The image.
        path: PathBuf,
    },
    /// QEMU could not be started.
    #[error("cannot run {QEMU}: {0}")]
    Spawn(#[source] std::io::Error),
}

/// QEMU's arguments (without the program name) for booting `image`, with COM2 captured to
/// `com2_log` and UEFI firmware from `ovmf`.
pub fn qemu_args(opts: &RunOptions, image: &Path, com2_log: &Path, ovmf: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&str]| args.extend(parts.iter().map(OsString::from));
    // +rdrand: Keel's random source for TLS keys and handshakes (without it HTTPS is off).
    push(&["-accel", "tcg", "-cpu", "qemu64,+svm,+npt,+rdrand"]);
    push(&[
        "-m",
        &opts.mem_mib.to_string(),
        "-smp",
        &opts.smp.to_string(),
    ]);
    push(&["-machine", opts.machine.name()]);
    if opts.firmware == Firmware::Uefi {
        args.push("-bios".into());
        args.push(ovmf.into());
    }
    // The image as a virtio-blk disk on both machines: SeaBIOS and OVMF boot from it, and it
    // is the disk the kernel's driver finds its configuration and guest store on.
    let mut drive = OsString::from("file=");
    drive.push(escape_option_value(image));
    drive.push(",format=raw,if=none,id=boot");
    args.push("-drive".into());
    args.push(drive);
    args.push("-device".into());
    args.push("virtio-blk-pci,drive=boot,bootindex=0".into());
    if let Some(port) = opts.http_port {
        args.push("-nic".into());
        args.push(
            format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_HTTPS_PORT}")
                .into(),
        );
    } else {
        args.push("-nic".into());
        args.push("none".into());
    }
    args.push("-serial".into());
    args.push("mon:stdio".into());
    let mut com2 = OsString::from("file:");
    com2.push(com2_log);
    args.push("-serial".into());
    args.push(com2);
    args.extend(["-display", "none", "-no-user-config"].map(OsString::from));
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// QEMU option values separate sub-options with commas; a literal comma is written twice.
fn escape_option_value(path: &Path) -> OsString {
    match path.to_str() {
        Some(s) => s.replace(',', ",,").into(),
        None => path.as_os_str().to_owned(),
    }
}

/// The line printed before QEMU starts.
pub fn hint(opts: &RunOptions, com2_log: &Path) -> String {
    let mut hint = format!(
        "keel: booting ({}, {}); quit QEMU with Ctrl-A X; COM2 diagnostics go to {} \
         (decode with `keel logs {}`)",
        match opts.firmware {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        },
        opts.machine.name(),
        com2_log.display(),
        com2_log.display(),
    );
    if let Some(port) = opts.http_port {
        hint.push_str(&format!("; HTTPS on https://127.0.0.1:{port}/"));
        let (cert, _) = crate::tls_cert::paths(&crate::output_dir());
        let fingerprint = std::fs::read_to_string(&cert)
            .ok()
            .and_then(|pem| keel_netstack::tls::cert::cert_pem_to_der(&pem))
            .map(|der| keel_netstack::tls::cert::fingerprint(&der));
        if let Some(fingerprint) = fingerprint {
            hint.push_str(&format!(
                "\nkeel: certificate SHA-256 {fingerprint}\nkeel: curl --cacert {} --resolve \
                 keel:{port}:127.0.0.1 -H \"Authorization: Bearer $(cat {})\" \
                 https://keel:{port}/api/v1/system",
                cert.display(),
                crate::output_dir().join("api-token").display()
            ));
        }
    }
    hint
}

/// Runs QEMU on `image` with the terminal inherited and waits for it to exit.
pub fn run_qemu(opts: &RunOptions, image: &Path, com2_log: &Path) -> Result<ExitStatus, RunError> {
    let qemu = crate::find_in_path(QEMU).ok_or(RunError::QemuNotFound)?;
    let ovmf = PathBuf::from(OVMF_PATH);
    if opts.firmware == Firmware::Uefi && !ovmf.is_file() {
        return Err(RunError::OvmfNotFound { path: ovmf });
    }
    if !image.is_file() {
        return Err(RunError::ImageNotFound {
            path: image.to_path_buf(),
        });
    }
    eprintln!("{}", hint(opts, com2_log));
    Command::new(qemu)
        .args(qemu_args(opts, image, com2_log, &ovmf))
        .status()
        .map_err(RunError::Spawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn default_command_line() {
        let args = qemu_args(
            &RunOptions::default(),
            Path::new("/w/target/keel/keel.img"),
            Path::new("/w/target/keel/com2.log"),
            Path::new(OVMF_PATH),
        );
        assert_eq!(
            joined(&args),
            "-accel tcg -cpu qemu64,+svm,+npt,+rdrand -m 1024 -smp 2 -machine q35 \
             -drive file=/w/target/keel/keel.img,format=raw,if=none,id=boot \
             -device virtio-blk-pci,drive=boot,bootindex=0 \
             -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:8080-:443 \
             -serial mon:stdio -serial file:/w/target/keel/com2.log -display none -no-user-config"
        );
    }

    #[test]
    fn uefi_pc_no_net_and_extra_args() {
        let opts = RunOptions {
            firmware: Firmware::Uefi,
            machine: Machine::Pc,
            mem_mib: 512,
            smp: 1,
            http_port: None,
            extra_args: vec!["-d".into(), "int".into()],
        };
        let args = joined(&qemu_args(
            &opts,
            Path::new("/a,b/keel.img"),
            Path::new("c.log"),
            Path::new("/fw/OVMF.fd"),
        ));
        assert!(
            args.contains("-m 512 -smp 1 -machine pc -bios /fw/OVMF.fd "),
            "{args}"
        );
        assert!(args.contains("file=/a,,b/keel.img,"), "{args}");
        assert!(args.contains("-nic none "), "{args}");
        assert!(args.ends_with("-no-user-config -d int"), "{args}");
    }

    #[test]
    fn hint_says_how_to_quit_and_where_com2_goes() {
        let h = hint(&RunOptions::default(), Path::new("target/keel/com2.log"));
        assert!(h.contains("Ctrl-A X"), "{h}");
        assert!(h.contains("target/keel/com2.log"), "{h}");
        assert!(h.contains("https://127.0.0.1:8080/"), "{h}");
        // With `keel build`'s certificate kept: its fingerprint and a pinned curl line.
        let (cert, _) = crate::tls_cert::paths(&crate::output_dir());
        if cert.is_file() {
            assert!(h.contains("certificate SHA-256 "), "{h}");
            assert!(h.contains("curl --cacert"), "{h}");
        }
    }

    #[test]
    fn missing_tools_name_their_packages() {
        assert!(
            RunError::QemuNotFound
                .to_string()
                .contains("qemu-system-x86")
        );
        let ovmf = RunError::OvmfNotFound {
            path: OVMF_PATH.into(),
        };
        assert!(ovmf.to_string().contains("Debian package ovmf"));
    }

    #[test]
    fn missing_image_is_reported() {
        if crate::find_in_path(QEMU).is_none() {
            eprintln!("SKIPPED: {QEMU} not installed");
            return;
        }
        let err = run_qemu(
            &RunOptions::default(),
            Path::new("/nonexistent/keel.img"),
            Path::new("/tmp/com2.log"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("run `keel build` first"), "{err}");
    }
}
