//! rust-hypervisor-firmware built from `../shared/vendor/` and the GPT boot disks it boots.
//!
//! [`hypervisor_fw`] installs the firmware's pinned nightly (`rustup toolchain install
//! nightly-2025-06-05 --profile minimal -c rust-src`), unpacks the vendored tarball into a
//! temporary directory outside the workspace (inside it, cargo would take the firmware for a
//! member of Keel's workspace) and builds it into `target/rust-hypervisor-firmware/`, once:
//! later calls find `hypervisor-fw` next to a stamp naming the tarball.
//!
//! [`gpt_boot_disk`] makes a disk the firmware boots: a GPT with one EFI system partition
//! (FAT16, `mkfs.vfat`, filled with `mtools`) holding a Boot Loader Specification entry
//! (`loader/loader.conf`, `loader/entries/debian.conf`), the kernel as `/vmlinuz` and the
//! initramfs as `/initrd.img`.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk_guest::{DiskToolError, io_error, run_tool};

/// The vendored firmware source, relative to the workspace root.
pub const FIRMWARE_TARBALL: &str = "../shared/vendor/rust-hypervisor-firmware-82a9a4f.tar.gz";

/// The directory inside the tarball.
const FIRMWARE_SOURCE_DIR: &str = "rust-hypervisor-firmware-82a9a4f";

/// The toolchain the firmware's `rust-toolchain.toml` pins.
pub const FIRMWARE_TOOLCHAIN: &str = "nightly-2025-06-05";

/// The file name of the firmware, in the store too.
pub const FIRMWARE_FILE: &str = "hypervisor-fw";

/// Environment a `cargo test` hands its tests that must not leak into the firmware's build
/// (another toolchain, target directory or flags).
const CARGO_ENV: &[&str] = &[
    "CARGO",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_MANIFEST_DIR",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "RUSTUP_TOOLCHAIN",
];

/// `target/rust-hypervisor-firmware/hypervisor-fw` (a PVH ELF), built the first time.
pub fn hypervisor_fw() -> Result<PathBuf, DiskToolError> {
    let root = keel_image::workspace_root();
    let tarball = root.join(FIRMWARE_TARBALL);
    let out_dir = root.join("target").join("rust-hypervisor-firmware");
    let firmware = out_dir.join(FIRMWARE_FILE);
    let stamp = out_dir.join("built-from");
    let source_name = FIRMWARE_TARBALL
        .rsplit('/')
        .next()
        .unwrap_or(FIRMWARE_TARBALL);
    if firmware.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == source_name)
    {
        return Ok(firmware);
    }
    if !tarball.is_file() {
        return Err(DiskToolError::Io {
            path: tarball,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the vendored firmware source is missing (see ../shared/vendor/README.md)",
            ),
        });
    }
    std::fs::create_dir_all(&out_dir).map_err(io_error(&out_dir))?;
    let _ = std::fs::remove_file(&stamp);
    eprintln!("boot-disk: building rust-hypervisor-firmware with {FIRMWARE_TOOLCHAIN}");
    run_tool(
        Command::new("rustup").args([
            "toolchain",
            "install",
            FIRMWARE_TOOLCHAIN,
            "--profile",
            "minimal",
            "-c",
            "rust-src",
        ]),
        "rustup (https://rustup.rs)",
    )?;
    let source = tempfile::Builder::new()
        .prefix("keel-hypervisor-fw-")
        .tempdir()
        .map_err(io_error(&std::env::temp_dir()))?;
    run_tool(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(source.path()),
        "tar",
    )?;
    let build_dir = out_dir.join("build");
    let mut cargo = Command::new("cargo");
    for var in CARGO_ENV {
        cargo.env_remove(var);
    }
    cargo
        .arg(format!("+{FIRMWARE_TOOLCHAIN}"))
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-none.json",
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .env("CARGO_TARGET_DIR", &build_dir)
        .current_dir(source.path().join(FIRMWARE_SOURCE_DIR));
    run_tool(&mut cargo, "rustup's cargo")?;
    let built = build_dir
        .join("x86_64-unknown-none/release")
        .join(FIRMWARE_FILE);
    std::fs::copy(&built, &firmware).map_err(io_error(&built))?;
    std::fs::write(&stamp, source_name).map_err(io_error(&stamp))?;
    Ok(firmware)
}

/// What goes on a boot disk's EFI system partition.
#[derive(Clone, Debug)]
pub struct BootEntry<'a> {
    /// The kernel (bzImage), `/vmlinuz` on the ESP.
    pub kernel: &'a Path,
    /// The initramfs, `/initrd.img` on the ESP.
    pub initrd: &'a Path,
    /// The entry's `options` line (the kernel command line).
    pub options: &'a str,
}

/// The BLS entry `loader/entries/debian.conf` for `entry`.
pub fn bls_entry(entry: &BootEntry<'_>) -> String {
    format!(
        "title Debian (Keel guest-disk test)\nlinux /vmlinuz\ninitrd /initrd.img\noptions {}\n",
        entry.options
    )
}

/// Bytes per sector.
const SECTOR: u64 = 512;

/// Where the ESP starts (1 MiB, the usual alignment).
const ESP_FIRST_LBA: u64 = 2048;

/// Writes a GPT disk image to `image` with an EFI system partition of `esp_mib` MiB (FAT16)
/// holding `entry`, and returns the partition's first LBA and sector count.
pub fn gpt_boot_disk(
    image: &Path,
    entry: &BootEntry<'_>,
    esp_mib: u64,
) -> Result<(u64, u64), DiskToolError> {
    let work = tempfile::tempdir().map_err(io_error(&std::env::temp_dir()))?;
    let esp = work.path().join("esp.img");
    let esp_sectors = esp_mib * 1024 * 1024 / SECTOR;
    run_tool(
        Command::new("mkfs.vfat")
            .args(["-F", "16", "-n", "KEEL-ESP", "-C"])
            .arg(&esp)
            .arg((esp_mib * 1024).to_string()),
        "dosfstools",
    )?;
    let conf = work.path().join("debian.conf");
    std::fs::write(&conf, bls_entry(entry)).map_err(io_error(&conf))?;
    let loader_conf = work.path().join("loader.conf");
    std::fs::write(&loader_conf, "default debian.conf\n").map_err(io_error(&loader_conf))?;
    run_tool(
        Command::new("mmd")
            .arg("-i")
            .arg(&esp)
            .args(["::/loader", "::/loader/entries"]),
        "mtools",
    )?;
    for (from, to) in [
        (entry.kernel, "::/vmlinuz"),
        (entry.initrd, "::/initrd.img"),
        (loader_conf.as_path(), "::/loader/loader.conf"),
        (conf.as_path(), "::/loader/entries/debian.conf"),
    ] {
        run_tool(
            Command::new("mcopy").arg("-i").arg(&esp).arg(from).arg(to),
            "mtools",
        )?;
    }

    // The ESP, then 1 MiB for the backup GPT.
    let total = (ESP_FIRST_LBA + esp_sectors + 2048) * SECTOR;
    let _ = std::fs::remove_file(image);
    let file = std::fs::File::create(image).map_err(io_error(image))?;
    file.set_len(total).map_err(io_error(image))?;
    drop(file);
    let last = ESP_FIRST_LBA + esp_sectors - 1;
    run_tool(
        Command::new("sgdisk")
            .arg("-o")
            .arg(format!("-n=1:{ESP_FIRST_LBA}:{last}"))
            .args(["-t=1:EF00", "-c=1:ESP"])
            .arg(image),
        "gdisk",
    )?;
    let esp_bytes = std::fs::read(&esp).map_err(io_error(&esp))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io_error(image))?;
    file.seek(SeekFrom::Start(ESP_FIRST_LBA * SECTOR))
        .and_then(|_| file.write_all(&esp_bytes))
        .and_then(|()| file.sync_all())
        .map_err(io_error(image))?;
    Ok((ESP_FIRST_LBA, esp_sectors))
}

/// The initramfs `/init` of the firmware test: prints [`FW_BOOT_MARKER`] and the kernel
/// command line, then powers off.
pub const FW_BOOT_INIT: &str = r#"mount -t proc proc /proc
echo KEEL-FW-BOOTED
echo "FW-CMDLINE=$(cat /proc/cmdline)"
poweroff -f
"#;

/// The line [`FW_BOOT_INIT`] prints first.
pub const FW_BOOT_MARKER: &str = "KEEL-FW-BOOTED";

/// The busybox applets [`FW_BOOT_INIT`] runs.
pub const FW_BOOT_APPLETS: &[&str] = &["mount", "echo", "cat", "poweroff"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bls_entry_names_kernel_initrd_and_options() {
        let entry = BootEntry {
            kernel: Path::new("/k"),
            initrd: Path::new("/i"),
            options: "console=ttyS0 quiet",
        };
        let text = bls_entry(&entry);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"linux /vmlinuz"));
        assert!(lines.contains(&"initrd /initrd.img"));
        assert!(lines.contains(&"options console=ttyS0 quiet"));
    }
}
