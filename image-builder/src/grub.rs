//! GRUB for both firmwares: runs `grub-mkimage`, writes `early.cfg` and `grub.cfg`, and patches
//! GRUB's MBR boot code and core image the way `grub-bios-setup` does — without touching a
//! device.
//!
//! BIOS path: the firmware runs the 440 bytes of `boot.img` in the MBR; they load the first
//! sector of `core.img` from the LBA stored at MBR offset 0x5C; that sector (`diskboot.img`)
//! loads the rest of `core.img` using the block list in its last 12 bytes. `core.img` lives in
//! the GPT BIOS boot partition. UEFI path: the firmware runs `/EFI/BOOT/BOOTX64.EFI` from the ESP.
//! Both images embed the same `early.cfg`, which finds the ESP by its FAT label and hands over
//! to `/boot/grub/grub.cfg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// FAT volume label of the ESP; `early.cfg` searches for it (GRUB 2.06 for i386-pc has no
/// search by partition name).
pub const ESP_LABEL: &str = "KEELESP";
/// Where GRUB looks for `grub.cfg` on the ESP.
pub const GRUB_PREFIX: &str = "/boot/grub";
/// Where Debian installs GRUB's platform directories (`i386-pc`, `x86_64-efi`).
pub const DEFAULT_GRUB_LIB: &str = "/usr/lib/grub";
/// Environment variable that overrides [`DEFAULT_GRUB_LIB`].
pub const GRUB_LIB_ENV: &str = "KEEL_GRUB_LIB";

/// Modules built into both images. `grub-mkimage` adds their dependencies itself. Nothing can be
/// loaded later: the ESP holds no module directory.
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "multiboot2",
    "normal",
    "configfile",
    "search",
    "search_label",
    "serial",
    "terminal",
    "boot",
    "echo",
    // `[ "$grub_platform" = pc ]` in grub.cfg (text mode for the status screen on BIOS).
    "test",
];

/// Offset in `boot.img` of the u64 LBA of core.img's first sector
/// (`GRUB_BOOT_MACHINE_KERNEL_SECTOR`).
pub const MBR_CORE_LBA_OFFSET: usize = 0x5C;
/// Offset in `boot.img` of the two-byte jump that skips the boot-drive workaround
/// (`GRUB_BOOT_MACHINE_DRIVE_CHECK`).
pub const MBR_DRIVE_CHECK_OFFSET: usize = 0x66;
/// Size of the MBR boot code area (the rest of sector 0 holds disk signature and partitions).
pub const MBR_BOOT_CODE_LEN: usize = 440;
/// Offset in core.img's first sector of its block list: start LBA (u64), sector count (u16),
/// load segment (u16).
pub const CORE_BLOCKLIST_OFFSET: usize = 0x1F4;
/// Segment `diskboot.img` loads the rest of core.img to (`GRUB_BOOT_MACHINE_KERNEL_SEG + 0x20`).
pub const CORE_LOAD_SEGMENT: u16 = 0x820;
/// Sector size the BIOS path works in.
pub const SECTOR: usize = 512;

/// A GRUB platform this crate builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Legacy BIOS (`grub-pc-bin`).
    I386Pc,
    /// UEFI x86-64 (`grub-efi-amd64-bin`).
    X86_64Efi,
}

impl Platform {
    /// GRUB's name for the platform (`-O` argument and directory name).
    pub fn name(self) -> &'static str {
        match self {
            Platform::I386Pc => "i386-pc",
            Platform::X86_64Efi => "x86_64-efi",
        }
    }

    /// The Debian package that installs this platform's directory.
    pub fn debian_package(self) -> &'static str {
        match self {
            Platform::I386Pc => "grub-pc-bin",
            Platform::X86_64Efi => "grub-efi-amd64-bin",
        }
    }

    /// The modules to build into this platform's image.
    pub fn modules(self) -> Vec<&'static str> {
        let mut modules = Vec::new();
        match self {
            Platform::I386Pc => modules.push("biosdisk"),
            // UEFI has no VGA text mode: without a graphics driver GRUB's multiboot2 loader
            // reports "no suitable video mode found" before booting.
            Platform::X86_64Efi => modules.extend_from_slice(&["efi_gop", "efi_uga"]),
        }
        modules.extend_from_slice(COMMON_MODULES);
        modules
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why making or patching GRUB images failed.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// Neither `grub-mkimage` nor `grub2-mkimage` is on `PATH`.
    #[error(
        "grub-mkimage not found: install Debian packages grub-pc-bin and grub-efi-amd64-bin \
         (image-builder/install-deps.sh does this)"
    )]
    MkimageNotFound,
    /// A GRUB platform directory is missing.
    #[error(
        "GRUB {platform} files not found in {dir}: install Debian package {package} \
         (image-builder/install-deps.sh does this), or point {GRUB_LIB_ENV} at the directory \
         holding i386-pc/ and x86_64-efi/"
    )]
    PlatformDirMissing {
        /// The platform.
        platform: Platform,
        /// The directory that should exist.
        dir: PathBuf,
        /// The package that provides it.
        package: &'static str,
    },
    /// Creating the scratch directory or `early.cfg` failed.
    #[error("cannot prepare GRUB scratch files: {0}")]
    Scratch(#[source] std::io::Error),
    /// `grub-mkimage` could not be started.
    #[error("cannot run {tool}: {source}")]
    SpawnMkimage {
        /// The program.
        tool: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `grub-mkimage` exited with an error.
    #[error("grub-mkimage -O {platform} failed ({status}): {stderr}")]
    MkimageFailed {
        /// The platform.
        platform: Platform,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Reading a GRUB file (boot.img, grub-mkimage's output) failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `boot.img` is not a 512-byte sector ending in 0x55AA.
    #[error(
        "{path} is not a GRUB boot sector (expected 512 bytes ending in 55 AA): reinstall grub-pc-bin"
    )]
    BadBootImg {
        /// The file.
        path: PathBuf,
    },
    /// `core.img` does not look like GRUB 2's `diskboot.img` + kernel.
    #[error("core.img from grub-mkimage has an unexpected layout ({0}): is this GRUB 2?")]
    BadCoreImg(String),
    /// `BOOTX64.EFI` is not a PE image.
    #[error("grub-mkimage -O x86_64-efi did not produce a PE image (no MZ header)")]
    BadEfiImg,
}

/// The three pieces of GRUB an image needs, unpatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubImages {
    /// `i386-pc/boot.img`: the 512-byte MBR boot sector.
    pub boot_img: Vec<u8>,
    /// `grub-mkimage -O i386-pc` output, unpadded.
    pub core_img: Vec<u8>,
    /// `grub-mkimage -O x86_64-efi` output: `/EFI/BOOT/BOOTX64.EFI`.
    pub efi_img: Vec<u8>,
}

/// The GRUB library directory: `$KEEL_GRUB_LIB` or `/usr/lib/grub`.
pub fn grub_lib_dir() -> PathBuf {
    std::env::var_os(GRUB_LIB_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GRUB_LIB))
}

/// Finds `grub-mkimage` (Debian) or `grub2-mkimage` (Fedora) on `PATH`.
pub fn find_mkimage() -> Result<PathBuf, GrubError> {
    crate::find_in_path("grub-mkimage")
        .or_else(|| crate::find_in_path("grub2-mkimage"))
        .ok_or(GrubError::MkimageNotFound)
}

/// Checks that `lib/<platform>` exists, with the Debian package to install if not.
pub fn platform_dir(lib: &Path, platform: Platform) -> Result<PathBuf, GrubError> {
    let dir = lib.join(platform.name());
    let marker = match platform {
        Platform::I386Pc => "boot.img",
        Platform::X86_64Efi => "kernel.img",
    };
    if dir.join(marker).is_file() {
        Ok(dir)
    } else {
        Err(GrubError::PlatformDirMissing {
            platform,
            dir,
            package: platform.debian_package(),
        })
    }
}

/// The configuration embedded in both GRUB images: find the ESP by label, load `grub.cfg`.
pub fn early_cfg() -> String {
    format!(
        "search --no-floppy --label {ESP_LABEL} --set=root\n\
         set prefix=($root){GRUB_PREFIX}\n\
         configfile ($root){GRUB_PREFIX}/grub.cfg\n"
    )
}

/// `/boot/grub/grub.cfg`: serial console on the port the command line's `console=` names
/// (COM1 at 115200 without one), no menu delay, the display left in text mode on BIOS (the
/// status screen writes the VGA text buffer there; on UEFI GRUB hands over the firmware's
/// framebuffer, which the kernel's Multiboot2 header asks for), one entry that boots the
/// kernel with `cmdline` and one `module2` per module name (the module's command line is its
/// name).
pub fn grub_cfg(kernel_path: &str, cmdline: &str, module_names: &[String]) -> String {
    let mut cfg = format!(
        "set timeout=0\n\
         {}\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         menuentry 'Keel' {{\n",
        crate::console::grub_serial_for_cmdline(cmdline)
    );
    let mut kernel_line = format!("    multiboot2 {kernel_path}");
    for word in cmdline.split_whitespace() {
        kernel_line.push(' ');
        kernel_line.push_str(&quote_word(word));
    }
    cfg.push_str(&kernel_line);
    cfg.push('\n');
    for name in module_names {
        let quoted = quote_word(name);
        // Writing to a String cannot fail.
        let _ = writeln!(cfg, "    module2 /boot/modules/{quoted} {quoted}");
    }
    // After `multiboot2`, which sets gfxpayload from the kernel's framebuffer request: on BIOS
    // the status screen wants text mode, on UEFI (no text mode) the firmware's framebuffer.
    cfg.push_str("    if [ \"$grub_platform\" = pc ]; then set gfxpayload=text; fi\n");
    cfg.push_str("    boot\n}\n");
    cfg
}

/// Quotes one word for GRUB's shell-like script syntax, only when it needs it. Single quotes
/// keep everything literal; an embedded `'` becomes `'\''` as in sh.
pub fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._,:=/+@%-".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `grub-mkimage` for both platforms and reads `boot.img`.
pub fn make_images() -> Result<GrubImages, GrubError> {
    let tool = find_mkimage()?;
    let lib = grub_lib_dir();
    let pc_dir = platform_dir(&lib, Platform::I386Pc)?;
    let efi_dir = platform_dir(&lib, Platform::X86_64Efi)?;

    let scratch = tempfile::Builder::new()
        .prefix("keel-grub")
        .tempdir()
        .map_err(GrubError::Scratch)?;
    let early = scratch.path().join("early.cfg");
    std::fs::write(&early, early_cfg()).map_err(GrubError::Scratch)?;

    let boot_path = pc_dir.join("boot.img");
    let boot_img = std::fs::read(&boot_path).map_err(|source| GrubError::Read {
        path: boot_path.clone(),
        source,
    })?;
    if boot_img.len() != SECTOR || boot_img[510..] != [0x55, 0xAA] {
        return Err(GrubError::BadBootImg { path: boot_path });
    }
    let core_img = run_mkimage(&tool, Platform::I386Pc, &pc_dir, &early, scratch.path())?;
    let efi_img = run_mkimage(&tool, Platform::X86_64Efi, &efi_dir, &early, scratch.path())?;
    if !efi_img.starts_with(b"MZ") {
        return Err(GrubError::BadEfiImg);
    }
    Ok(GrubImages {
        boot_img,
        core_img,
        efi_img,
    })
}

/// Runs one `grub-mkimage` and returns the image it wrote.
fn run_mkimage(
    tool: &Path,
    platform: Platform,
    dir: &Path,
    early: &Path,
    scratch: &Path,
) -> Result<Vec<u8>, GrubError> {
    let out = scratch.join(format!("{}.img", platform.name()));
    let output = Command::new(tool)
        .arg("-O")
        .arg(platform.name())
        .arg("-d")
        .arg(dir)
        .arg("-c")
        .arg(early)
        .arg("-p")
        .arg(GRUB_PREFIX)
        .arg("-o")
        .arg(&out)
        .args(platform.modules())
        .output()
        .map_err(|source| GrubError::SpawnMkimage {
            tool: tool.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        return Err(GrubError::MkimageFailed {
            platform,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    std::fs::read(&out).map_err(|source| GrubError::Read { path: out, source })
}

/// The MBR boot code: the first 440 bytes of `boot.img`, pointed at core.img's first sector
/// (`core_lba`), with the boot-drive check jump replaced by NOPs as `grub-bios-setup` does for a
/// hard disk (some BIOSes pass a wrong drive number in DL; the workaround forces 0x80).
pub fn mbr_boot_code(boot_img: &[u8], core_lba: u64) -> Result<[u8; MBR_BOOT_CODE_LEN], GrubError> {
    if boot_img.len() != SECTOR || boot_img[510..] != [0x55, 0xAA] {
        return Err(GrubError::BadBootImg {
            path: PathBuf::from("boot.img"),
        });
    }
    let mut code = [0u8; MBR_BOOT_CODE_LEN];
    code.copy_from_slice(&boot_img[..MBR_BOOT_CODE_LEN]);
    code[MBR_CORE_LBA_OFFSET..MBR_CORE_LBA_OFFSET + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[MBR_DRIVE_CHECK_OFFSET..MBR_DRIVE_CHECK_OFFSET + 2].copy_from_slice(&[0x90, 0x90]);
    Ok(code)
}

/// core.img padded to whole sectors, with the block list in its first sector describing the
/// remaining sectors as one run starting at `core_lba + 1`.
pub fn patch_core_img(core_img: &[u8], core_lba: u64) -> Result<Vec<u8>, GrubError> {
    if core_img.len() < 2 * SECTOR {
        return Err(GrubError::BadCoreImg(format!(
            "only {} bytes",
            core_img.len()
        )));
    }
    let mut core = core_img.to_vec();
    core.resize(core.len().div_ceil(SECTOR) * SECTOR, 0);
    let sectors = core.len() / SECTOR;
    let segment_at = CORE_BLOCKLIST_OFFSET + 10;
    let segment = u16::from_le_bytes([core[segment_at], core[segment_at + 1]]);
    if segment != CORE_LOAD_SEGMENT {
        return Err(GrubError::BadCoreImg(format!(
            "block list load segment {segment:#x}, expected {CORE_LOAD_SEGMENT:#x}"
        )));
    }
    let count = u16::try_from(sectors - 1)
        .map_err(|_| GrubError::BadCoreImg(format!("{sectors} sectors is too large")))?;
    let list = &mut core[CORE_BLOCKLIST_OFFSET..CORE_BLOCKLIST_OFFSET + 12];
    list[0..8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    list[8..10].copy_from_slice(&count.to_le_bytes());
    list[10..12].copy_from_slice(&CORE_LOAD_SEGMENT.to_le_bytes());
    Ok(core)
}

/// A `boot.img`-shaped sector for tests: recognisable bytes, the right signature.
#[cfg(test)]
pub(crate) fn fake_boot_img() -> Vec<u8> {
    let mut img: Vec<u8> = (0..SECTOR).map(|i| (i % 251) as u8).collect();
    img[510] = 0x55;
    img[511] = 0xAA;
    img
}

/// A core.img-shaped blob for tests: `len` bytes with GRUB's default block list.
#[cfg(test)]
pub(crate) fn fake_core_img(len: usize) -> Vec<u8> {
    let mut img: Vec<u8> = (0..len).map(|i| (i % 253) as u8 | 1).collect();
    img[CORE_BLOCKLIST_OFFSET..CORE_BLOCKLIST_OFFSET + 12]
        .copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x08]);
    img
}

/// Whether the GRUB platform files are installed; tests that need them print why they skip.
#[cfg(test)]
pub(crate) fn grub_available() -> bool {
    let lib = grub_lib_dir();
    if platform_dir(&lib, Platform::I386Pc).is_ok()
        && platform_dir(&lib, Platform::X86_64Efi).is_ok()
        && find_mkimage().is_ok()
    {
        true
    } else {
        eprintln!(
            "SKIPPED: GRUB not installed under {} (run image-builder/install-deps.sh)",
            lib.display()
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_cfg_searches_the_esp_label() {
        assert_eq!(
            early_cfg(),
            "search --no-floppy --label KEELESP --set=root\n\
             set prefix=($root)/boot/grub\n\
             configfile ($root)/boot/grub/grub.cfg\n"
        );
    }

    #[test]
    fn grub_cfg_has_serial_kernel_and_modules() {
        let cfg = grub_cfg(
            "/boot/keel.elf",
            "console=com1  log=debug",
            &["guest.bin".to_string(), "initrd.cpio".to_string()],
        );
        assert_eq!(
            cfg,
            "set timeout=0\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n\
             menuentry 'Keel' {\n\
             \x20   multiboot2 /boot/keel.elf console=com1 log=debug\n\
             \x20   module2 /boot/modules/guest.bin guest.bin\n\
             \x20   module2 /boot/modules/initrd.cpio initrd.cpio\n\
             \x20   if [ \"$grub_platform\" = pc ]; then set gfxpayload=text; fi\n\
             \x20   boot\n\
             }\n"
        );
    }

    #[test]
    fn grub_cfg_serial_follows_the_console() {
        let cfg = grub_cfg("/boot/keel.elf", "console=ttyS1,57600", &[]);
        assert!(cfg.contains("\nserial --unit=1 --speed=57600\n"), "{cfg}");
        assert!(cfg.contains("multiboot2 /boot/keel.elf console=ttyS1,57600\n"));
    }

    #[test]
    fn grub_cfg_without_cmdline_or_modules() {
        let cfg = grub_cfg("/boot/keel.elf", "", &[]);
        assert!(cfg.contains("    multiboot2 /boot/keel.elf\n    if "));
    }

    #[test]
    fn quoting_keeps_grub_script_syntax_inert() {
        assert_eq!(quote_word("a=b,c:d/e"), "a=b,c:d/e");
        assert_eq!(quote_word("$root"), "'$root'");
        assert_eq!(quote_word("a;b"), "'a;b'");
        assert_eq!(quote_word("it's"), r"'it'\''s'");
        assert_eq!(quote_word("{x}"), "'{x}'");
    }

    #[test]
    fn platform_modules() {
        let pc = Platform::I386Pc.modules();
        let efi = Platform::X86_64Efi.modules();
        assert_eq!(pc[0], "biosdisk");
        assert!(!efi.contains(&"biosdisk"));
        assert_eq!(&pc[1..], &efi[2..]);
        assert!(efi.contains(&"efi_gop"));
        for m in [
            "part_gpt",
            "fat",
            "multiboot2",
            "search_label",
            "serial",
            "terminal",
        ] {
            assert!(efi.contains(&m), "{m}");
        }
    }

    #[test]
    fn mbr_boot_code_points_at_core_and_nops_drive_check() {
        let boot = fake_boot_img();
        let code = mbr_boot_code(&boot, 2048).unwrap();
        assert_eq!(&code[..MBR_CORE_LBA_OFFSET], &boot[..MBR_CORE_LBA_OFFSET]);
        assert_eq!(
            u64::from_le_bytes(code[0x5C..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(code[0x64], boot[0x64]);
        assert_eq!(&code[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&code[0x68..], &boot[0x68..440]);
    }

    #[test]
    fn mbr_boot_code_rejects_non_boot_sectors() {
        assert!(matches!(
            mbr_boot_code(&[0u8; 512], 2048),
            Err(GrubError::BadBootImg { .. })
        ));
        assert!(mbr_boot_code(&[0u8; 100], 2048).is_err());
    }

    #[test]
    fn core_img_block_list_covers_the_rest() {
        let core = patch_core_img(&fake_core_img(5 * 512 + 7), 2048).unwrap();
        assert_eq!(core.len(), 6 * 512);
        let list = &core[0x1F4..0x200];
        assert_eq!(u64::from_le_bytes(list[0..8].try_into().unwrap()), 2049);
        assert_eq!(u16::from_le_bytes([list[8], list[9]]), 5);
        assert_eq!(u16::from_le_bytes([list[10], list[11]]), 0x820);
        assert!(core[5 * 512 + 7..].iter().all(|&b| b == 0));
    }

    #[test]
    fn core_img_with_unexpected_layout_is_refused() {
        let mut bad = fake_core_img(4096);
        bad[0x1FE] = 0;
        assert!(matches!(
            patch_core_img(&bad, 2048),
            Err(GrubError::BadCoreImg(_))
        ));
        assert!(patch_core_img(&[0u8; 100], 2048).is_err());
    }

    #[test]
    fn missing_platform_dir_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = platform_dir(dir.path(), Platform::X86_64Efi).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("grub-efi-amd64-bin"), "{msg}");
        assert!(msg.contains("install-deps.sh"), "{msg}");
    }

    #[test]
    fn mkimage_not_found_message_is_actionable() {
        let msg = GrubError::MkimageNotFound.to_string();
        assert_eq!(
            msg,
            "grub-mkimage not found: install Debian packages grub-pc-bin and \
             grub-efi-amd64-bin (image-builder/install-deps.sh does this)"
        );
    }

    #[test]
    fn real_grub_images() {
        if !grub_available() {
            return;
        }
        let images = make_images().unwrap();
        assert_eq!(images.boot_img.len(), 512);
        assert!(images.efi_img.starts_with(b"MZ"));
        // The unpatched core image carries GRUB's default block list: start 2, segment 0x820.
        let core = &images.core_img;
        assert_eq!(
            u64::from_le_bytes(core[0x1F4..0x1FC].try_into().unwrap()),
            2
        );
        assert_eq!(u16::from_le_bytes([core[0x1FE], core[0x1FF]]), 0x820);
        let patched = patch_core_img(core, 2048).unwrap();
        assert!(
            patched.len() <= 2048 * 512,
            "core.img outgrew the BIOS boot partition"
        );
        // The default boot.img carries 0x5C = 1 and the drive-check jump; both get patched.
        assert_eq!(&images.boot_img[0x66..0x68], &[0xEB, 0x05]);
        let code = mbr_boot_code(&images.boot_img, 2048).unwrap();
        assert_eq!(&code[0x5C..0x64], &2048u64.to_le_bytes());
    }
}
