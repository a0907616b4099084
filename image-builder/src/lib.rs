//! `keel_image`: the host side of Keel — building, running and reading the bootable image.
//!
//! Layering, bottom up:
//!
//! - [`grub`] runs `grub-mkimage` (Debian's `grub-pc-bin` and `grub-efi-amd64-bin`) and patches
//!   GRUB's boot sector and core image the way `grub-bios-setup` would, as pure functions.
//! - [`fat`] formats FAT file systems inside a byte range of the image file and copies files in
//!   (the `fatfs` crate: no loop devices, no mounts, no root, no mtools).
//! - [`appliance`] reads the operator's `appliance.toml` into a validated
//!   [`keel_config::Config`] (or makes the default one); its canonical JSON becomes the first
//!   record of the configuration partition.
//! - [`guest_disks`] parses `--disk NAME=SIZE[,partition]` and stages the store's files
//!   (`--store`, empty disk images, the `--firmware` ELF) for the image.
//! - [`gpt_image`] lays out the disk (protective MBR + GPT, BIOS boot partition, ESP, raw
//!   configuration partition, guest store) and writes it: [`gpt_image::assemble_image`].
//! - [`kernel_build`] compiles `keel-kernel` for `x86_64-unknown-none` with cargo.
//! - [`linux_guest`] fetches Debian's kernel and busybox (`apt-get download`, into
//!   `target/linux-guest/`) and writes initramfs archives; [`demo`] makes the demo VM's store
//!   and configuration (`config/demo.toml`) from them.
//! - [`build`] (this file) ties kernel compile and image assembly together under
//!   `<workspace>/target/keel/`.
//! - [`flash`] writes an image to a disk or file (`keel flash`), checked, read back, and
//!   optionally with its own configuration.
//! - [`run`] boots the image in QEMU; [`logs`] decodes the kernel's defmt stream from COM2.
//! - [`client`] speaks a running appliance's HTTP API (`keel status`, `keel vm`, `keel
//!   config`, `keel store`).
//!
//! The `keel` binary (`src/main.rs`) is a thin clap front end over these functions; the
//! integration tests in `qemu-tests/` call [`build`] directly (without the demo VM) and use
//! [`linux_guest`] for their Linux guests.

pub mod api_token;
pub mod appliance;
pub mod client;
pub mod console;
pub mod demo;
pub mod elf_strip;
pub mod fat;
pub mod flash;
pub mod fleet;
pub mod gpt_image;
pub mod grub;
pub mod guest_disks;
pub mod kernel_build;
pub mod linux_guest;
pub mod logs;
pub mod run;
pub mod tls_cert;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use appliance::ApplianceConfigError;
pub use gpt_image::{ImageError, ImageSummary, assemble_image, assemble_image_with_partitions};
pub use guest_disks::{DiskRequest, GuestDiskError};
pub use keel_config::Config;
pub use kernel_build::{KernelBuildError, Profile};
pub use logs::{LogsError, decode_defmt};

/// What [`build`] should put into the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Files to add as Multiboot2 modules. Each lands in the ESP as `/boot/modules/<file name>`
    /// and is handed to the kernel with its file name as the module's command line.
    pub modules: Vec<PathBuf>,
    /// The kernel command line (GRUB passes it in the Multiboot2 command-line tag).
    pub cmdline: String,
    /// A directory whose regular files are copied into the guest store (`keel-store`).
    pub store: Option<PathBuf>,
    /// Suppress progress output on stderr (and cargo's output unless the compile fails).
    pub quiet: bool,
    /// The appliance configuration (TOML) to store in the configuration partition. `None`:
    /// the defaults plus the build's API token ([`tls_cert::default_config`]), or the demo
    /// configuration (see `demo`).
    pub config: Option<PathBuf>,
    /// When neither `config` nor `store` is given: add the demo VM ([`demo`]), downloading
    /// Debian's kernel and busybox the first time. If that fails, the image is built without
    /// it and [`BuildOutput::demo`] says why. `false` (the default, and what the tests use):
    /// no demo.
    pub demo: bool,
    /// Guest disks to make (`--disk NAME=SIZE[,partition]`): empty, fully allocated image
    /// files in the store, or guest-disk partitions after it.
    pub disks: Vec<DiskRequest>,
    /// A rust-hypervisor-firmware ELF to put into the store as
    /// [`guest_disks::FIRMWARE_STORE_NAME`] (`--firmware FILE`).
    pub firmware: Option<PathBuf>,
}

/// Whether [`build`] put the demo VM into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoStatus {
    /// Not asked for ([`BuildOptions::demo`] is false, or a configuration or store was given).
    NotRequested,
    /// The store holds `vmlinuz` and `demo-initramfs.cpio`; the configuration defines `demo`.
    Included {
        /// The store directory (`target/keel/demo-store`).
        store: PathBuf,
        /// The Debian kernel package the VM boots, such as `linux-image-6.1.0-28-amd64`.
        kernel_package: String,
    },
    /// Asked for, but the guest could not be made; the image has the plain defaults.
    Unavailable {
        /// Why (a [`demo::DemoError`] as text).
        reason: String,
    },
}

/// Where [`build`] left its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    /// `<workspace>/target/keel/keel.elf`: the kernel, with its defmt table (for `keel logs`).
    pub elf: PathBuf,
    /// `<workspace>/target/keel/keel.img`: the bootable disk image.
    pub image: PathBuf,
    /// The management API bearer token the image carries on its kernel command line (see
    /// [`api_token`]).
    pub api_token: String,
    /// The configuration stored in the image's configuration partition.
    pub config: Config,
    /// The HTTPS certificate in that configuration (PEM), and its SHA-256 fingerprint.
    pub tls_cert_pem: String,
    /// See [`BuildOutput::tls_cert_pem`].
    pub tls_fingerprint: String,
    /// Whether the image has the demo VM.
    pub demo: DemoStatus,
}

/// Why [`build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTPS certificate could not be made or read.
    #[error("HTTPS certificate: {0}")]
    TlsCert(#[from] tls_cert::TlsCertError),
    /// Compiling the kernel failed.
    #[error(transparent)]
    CompileKernel(#[from] KernelBuildError),
    /// Creating `target/keel/` failed.
    #[error("cannot create output directory {path}: {source}")]
    CreateOutputDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Copying the kernel ELF to `target/keel/keel.elf` failed.
    #[error("cannot copy kernel {from} to {to}: {source}")]
    CopyElf {
        /// The ELF cargo produced.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Assembling the disk image failed.
    #[error(transparent)]
    AssembleImage(#[from] ImageError),
    /// The appliance configuration file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ApplianceConfigError),
    /// A `--disk` or `--firmware` cannot be made.
    #[error(transparent)]
    GuestDisk(#[from] GuestDiskError),
    /// Reading or creating `target/keel/api-token` failed.
    #[error("cannot read or create the API token file {path}: {source}")]
    ApiToken {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The workspace root: the parent of this crate's directory, fixed at compile time.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// `<workspace>/target/keel`: where `keel build` leaves `keel.elf` and `keel.img`, and where
/// `keel run` writes `com2.log`.
pub fn output_dir() -> PathBuf {
    workspace_root().join("target").join("keel")
}

/// Compiles the kernel (release profile) and assembles `target/keel/keel.img`.
pub fn build(opts: &BuildOptions) -> Result<BuildOutput, BuildError> {
    build_with_profile(opts, Profile::Release)
}

/// [`build`] with a choice of cargo profile for the kernel (`keel build --debug`).
pub fn build_with_profile(
    opts: &BuildOptions,
    profile: Profile,
) -> Result<BuildOutput, BuildError> {
    // Read the configuration first: a mistake in it should not wait for a kernel compile.
    let operator_config = opts.config.as_deref().map(appliance::load).transpose()?;
    // Likewise the disks and the firmware.
    let partitions = guest_disks::partition_requests(&opts.disks);
    gpt_image::check_guest_partitions(&partitions)?;
    if let Some(firmware) = &opts.firmware {
        guest_disks::check_firmware(firmware)?;
    }
    let root = workspace_root();
    let out_dir = output_dir();
    std::fs::create_dir_all(&out_dir).map_err(|source| BuildError::CreateOutputDir {
        path: out_dir.clone(),
        source,
    })?;

    // The demo guest before the kernel: a download problem shows up at once.
    let demo = demo_status(opts, demo::demo_store_dir(), demo::prepare_demo_store);
    let store = match &demo {
        DemoStatus::Included { store, .. } => Some(store.as_path()),
        _ => opts.store.as_deref(),
    };

    let started = Instant::now();
    progress(opts.quiet, &format!("compiling kernel ({profile})…"));
    let built = kernel_build::compile_kernel(&root, profile, opts.quiet)?;
    let elf = out_dir.join("keel.elf");
    copy_atomically(&built, &elf).map_err(|source| BuildError::CopyElf {
        from: built.clone(),
        to: elf.clone(),
        source,
    })?;
    progress(
        opts.quiet,
        &format!(
            "kernel compiled in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );

    let token_path = out_dir.join("api-token");
    let api_token =
        api_token::load_or_create(&token_path).map_err(|source| BuildError::ApiToken {
            path: token_path.clone(),
            source,
        })?;
    let cmdline = api_token::with_token(&opts.cmdline, &api_token);
    let config = match (operator_config, &demo) {
        (Some(config), _) => config,
        (None, DemoStatus::Included { .. }) => demo::demo_config(&api_token),
        (None, _) => tls_cert::default_config(&api_token),
    };
    let identity = tls_cert::load_or_create(&out_dir, &config.hostname)?;
    let config = tls_cert::with_certificate(config, &identity);
    let (tls_cert_pem, tls_fingerprint) = match &config.management.certificate {
        Some(cert) => (
            cert.cert_pem.clone(),
            keel_netstack::tls::Identity::from_pem(&cert.cert_pem, &cert.key_pem, 0)
                .map(|i| i.fingerprint())
                .unwrap_or_default(),
        ),
        None => (identity.cert_pem(), identity.fingerprint()),
    };

    let started = Instant::now();
    progress(opts.quiet, "assembling image…");
    let image = out_dir.join("keel.img");
    // Store files beyond a `--store` directory's are staged next to its files; without any,
    // the directory goes in as it is.
    let staging = if opts.firmware.is_some() || opts.disks.iter().any(|d| !d.partition) {
        Some(guest_disks::StoreStaging::new(
            &out_dir,
            store,
            &opts.disks,
            opts.firmware.as_deref(),
        )?)
    } else {
        None
    };
    let summary = assemble_image_with_partitions(
        &elf,
        &opts.modules,
        &cmdline,
        staging.as_ref().map_or(store, |s| Some(s.path())),
        &config.to_json_pretty(),
        &partitions,
        &image,
    )?;
    drop(staging);
    progress(
        opts.quiet,
        &format!(
            "image assembled in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    if !opts.quiet {
        for line in summary.describe() {
            eprintln!("  {line}");
        }
        eprintln!("  kernel ELF: {}", elf.display());
        eprintln!(
            "  API token:  {api_token} (kept in {})",
            token_path.display()
        );
        eprintln!(
            "  HTTPS cert: SHA-256 {tls_fingerprint} ({})",
            tls_cert::paths(&out_dir).0.display()
        );
        match (&opts.config, &demo) {
            (Some(path), _) => eprintln!("  config:     {} (validated)", path.display()),
            (None, DemoStatus::Included { kernel_package, .. }) => eprintln!(
                "  config:     config/demo.toml (VM `demo`: {kernel_package} and busybox, \
                 autostart)"
            ),
            (None, _) => eprintln!("  config:     defaults (no --config given)"),
        }
    }
    Ok(BuildOutput {
        elf,
        image,
        api_token,
        config,
        tls_cert_pem,
        tls_fingerprint,
        demo,
    })
}

/// Whether the image gets the demo VM: `NotRequested` unless `opts` asks for it and gives
/// neither a configuration nor a store; otherwise what `prepare` (which writes the store
/// files into `store`) made of it. A failure is not an error: the image is built without it.
fn demo_status(
    opts: &BuildOptions,
    store: PathBuf,
    prepare: impl FnOnce(&Path) -> Result<linux_guest::LinuxGuest, demo::DemoError>,
) -> DemoStatus {
    if !opts.demo || opts.config.is_some() || opts.store.is_some() {
        return DemoStatus::NotRequested;
    }
    progress(
        opts.quiet,
        "preparing the demo VM (Debian's kernel and busybox in target/linux-guest/)…",
    );
    match prepare(&store) {
        Ok(guest) => DemoStatus::Included {
            store,
            kernel_package: guest.kernel_package,
        },
        Err(e) => DemoStatus::Unavailable {
            reason: e.to_string(),
        },
    }
}

/// Copies `from` to `to` through a temporary file in `to`'s directory, so that concurrent builds
/// (parallel tests) never leave a half-written `to`.
fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".keel-elf-")
        .tempfile_in(dir)?;
    std::io::copy(&mut std::fs::File::open(from)?, tmp.as_file_mut())?;
    let permissions = std::fs::metadata(from)?.permissions();
    tmp.as_file().set_permissions(permissions)?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

/// Prints one progress line on stderr unless `quiet`.
fn progress(quiet: bool, message: &str) {
    if !quiet {
        eprintln!("keel: {message}");
    }
}

/// Finds an executable named `name` on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("image-builder").is_dir());
        assert_eq!(output_dir(), root.join("target/keel"));
    }

    #[test]
    fn default_options_are_empty() {
        let opts = BuildOptions::default();
        assert!(opts.modules.is_empty());
        assert!(opts.cmdline.is_empty());
        assert!(!opts.quiet);
        assert!(opts.config.is_none());
        assert!(
            !opts.demo,
            "library callers (the tests) get no demo VM unless they ask"
        );
    }

    fn guest(package: &str) -> linux_guest::LinuxGuest {
        linux_guest::LinuxGuest {
            kernel: "vmlinuz".into(),
            e1000: "e1000.ko".into(),
            button: "button.ko".into(),
            evdev: "evdev.ko".into(),
            busybox: "busybox".into(),
            kernel_package: package.into(),
            kernel_release: "6.1.0-28-amd64".into(),
            kernel_version: "6.1.119-1".into(),
        }
    }

    #[test]
    fn the_demo_is_made_only_when_asked_for_without_config_or_store() {
        let never = |_: &Path| -> Result<linux_guest::LinuxGuest, demo::DemoError> {
            panic!("the demo store must not be prepared")
        };
        let quiet = BuildOptions {
            quiet: true,
            ..BuildOptions::default()
        };
        let store = PathBuf::from("/t/demo-store");
        assert_eq!(
            demo_status(&quiet, store.clone(), never),
            DemoStatus::NotRequested
        );
        let asked = BuildOptions {
            demo: true,
            ..quiet.clone()
        };
        let with_config = BuildOptions {
            config: Some("a.toml".into()),
            ..asked.clone()
        };
        assert_eq!(
            demo_status(&with_config, store.clone(), never),
            DemoStatus::NotRequested
        );
        let with_store = BuildOptions {
            store: Some("guests".into()),
            ..asked.clone()
        };
        assert_eq!(
            demo_status(&with_store, store.clone(), never),
            DemoStatus::NotRequested
        );

        let made = demo_status(&asked, store.clone(), |dir| {
            assert_eq!(dir, Path::new("/t/demo-store"));
            Ok(guest("linux-image-6.1.0-28-amd64"))
        });
        assert_eq!(
            made,
            DemoStatus::Included {
                store: store.clone(),
                kernel_package: "linux-image-6.1.0-28-amd64".into()
            }
        );
    }

    #[test]
    fn a_failed_demo_download_is_reported_not_fatal() {
        let asked = BuildOptions {
            demo: true,
            quiet: true,
            ..BuildOptions::default()
        };
        let status = demo_status(&asked, "/t/demo-store".into(), |_| {
            Err(linux_guest::LinuxGuestError::NoKernelPackage.into())
        });
        let DemoStatus::Unavailable { reason } = status else {
            panic!("{status:?}")
        };
        assert!(
            reason.starts_with("cannot fetch Debian's kernel and busybox: apt knows no"),
            "{reason}"
        );
    }

    #[test]
    fn copy_atomically_replaces_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("a");
        let to = tmp.path().join("b");
        std::fs::write(&from, b"new").unwrap();
        std::fs::write(&to, b"old contents").unwrap();
        copy_atomically(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    #[test]
    fn find_in_path_finds_sh_and_not_nonsense() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("keel-no-such-tool-xyz").is_none());
    }
}
