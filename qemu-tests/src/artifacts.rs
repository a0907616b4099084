//! The kernel ELF and disk images the tests boot, built once per test binary.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::linux_guest::{LinuxGuest, linux_guest, write_shell_initramfs, write_test_initramfs};

/// Set both this and [`IMAGE_ENV`] to boot prebuilt artifacts instead of building them.
pub const ELF_ENV: &str = "KEEL_TEST_ELF";

/// See [`ELF_ENV`].
pub const IMAGE_ENV: &str = "KEEL_TEST_IMAGE";

/// What the tests boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifacts {
    /// The kernel ELF (PVH note, Multiboot2 header, defmt table).
    pub elf: PathBuf,
    /// `keel.img`: the GPT disk image with GRUB for BIOS and UEFI.
    pub image: PathBuf,
    /// The management API bearer token the image's kernel command line carries.
    pub api_token: String,
}

/// Builds the test guests (`guests::build_guests`), then the kernel and `keel.img` with
/// `keel_image::build`, every guest added as a boot module named after its file
/// (`hello.bin`, `exits.bin`, …), the first time it is called in this process, and returns
/// the paths; later calls, from any thread, wait for that build and get the same answer.
///
/// # Panics
///
/// If the build fails; every test that asks panics with the same build error (the build is
/// not retried).
pub fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if let (Some(elf), Some(image)) = (std::env::var_os(ELF_ENV), std::env::var_os(IMAGE_ENV)) {
            let token_file = keel_image::output_dir().join("api-token");
            let api_token = std::fs::read_to_string(&token_file)
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            return Ok(Artifacts {
                elf: elf.into(),
                image: image.into(),
                api_token,
            });
        }
        let guests = crate::guests::build_guests()
            .map_err(|e| format!("building the test guests failed: {e}"))?;
        let opts = keel_image::BuildOptions {
            quiet: true,
            modules: guests.names().map(|n| guests.path(n)).collect(),
            ..Default::default()
        };
        keel_image::build(&opts)
            .map(|out| Artifacts {
                elf: out.elf,
                image: out.image,
                api_token: out.api_token,
            })
            .map_err(|e| format!("building the kernel and keel.img failed: {e}"))
    });
    match built {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// What the Linux-guest tests and `linux-bench` boot: [`Artifacts`]' kernel in a second disk
/// image whose only boot modules are Debian's kernel, the test initramfs and the shell
/// initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxArtifacts {
    /// The kernel ELF (the same as [`Artifacts::elf`]).
    pub elf: PathBuf,
    /// `target/keel/keel-linux.img`: GPT disk with GRUB and the modules `vmlinuz` (index 0),
    /// `initramfs.cpio` (index 1) and `shell.cpio` (index 2).
    pub image: PathBuf,
    /// The downloaded kernel and busybox.
    pub guest: LinuxGuest,
    /// The test initramfs (see [`crate::linux_guest::TEST_INIT`]).
    pub initramfs: PathBuf,
}

/// Assembles the appliance image `image` from the test kernel (with the API token on its
/// command line), the guest store `store` (if any), the configuration `config` (JSON) and
/// guest-disk `partitions` after the store: the image step the appliance tests share.
/// Panics naming `what` if it fails.
pub fn appliance_image(
    store: Option<&Path>,
    config: &[u8],
    partitions: &[keel_image::gpt_image::GuestPartitionRequest],
    image: &Path,
    what: &str,
) -> keel_image::gpt_image::ImageSummary {
    let a = artifacts();
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = with_build_certificate(config);
    keel_image::gpt_image::assemble_image_with_partitions(
        &a.elf,
        &[],
        &cmdline,
        store,
        &config,
        partitions,
        image,
    )
    .unwrap_or_else(|e| panic!("building {what} failed: {e}"))
}

/// `config` with `keel build`'s HTTPS certificate when it has none, as `keel build` does:
/// otherwise the appliance makes one at first boot, a configuration save of its own (the
/// generations a test counts move by one) and a key made in emulated time. Bytes that are
/// not a configuration document stay as they are.
fn with_build_certificate(config: &[u8]) -> Vec<u8> {
    match keel_config::Config::from_json(config) {
        Ok(parsed) if parsed.management.certificate.is_none() => {
            let identity =
                keel_image::tls_cert::load_or_create(&keel_image::output_dir(), &parsed.hostname)
                    .unwrap_or_else(|e| panic!("keel build's HTTPS certificate: {e}"));
            keel_image::tls_cert::with_certificate(parsed, &identity).to_json_pretty()
        }
        _ => config.to_vec(),
    }
}

/// Builds [`artifacts()`], fetches the Linux guest ([`linux_guest()`]), writes the test and
/// shell initramfs, and assembles `keel-linux.img` with the three as boot modules (named after
/// their files, `vmlinuz`, `initramfs.cpio` and `shell.cpio`), once per process like [`artifacts()`]. The image is
/// separate from `keel.img` so that the other tests do not load 10 MB of modules through
/// GRUB (slow under Bochs).
///
/// # Panics
///
/// If a step fails (with the same error in every caller).
pub fn linux_artifacts() -> &'static LinuxArtifacts {
    static BUILT: OnceLock<Result<LinuxArtifacts, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let a = artifacts();
        let guest = linux_guest().map_err(|e| format!("fetching the Linux guest failed: {e}"))?;
        let initramfs = write_test_initramfs(&guest)?;
        let shell = write_shell_initramfs(&guest)?;
        let image = keel_image::output_dir().join("keel-linux.img");
        let cmdline = keel_image::api_token::with_token("", &a.api_token);
        let config = keel_image::tls_cert::default_config(&a.api_token);
        keel_image::assemble_image(
            &a.elf,
            &[guest.kernel.clone(), initramfs.clone(), shell],
            &cmdline,
            None,
            &config.to_json_pretty(),
            &image,
        )
        .map_err(|e| format!("assembling keel-linux.img failed: {e}"))?;
        Ok(LinuxArtifacts {
            elf: a.elf.clone(),
            image,
            guest,
            initramfs,
        })
    });
    match built {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

/// Pseudo-random bytes (xorshift64), reproducible from `seed`: store files whose every
/// sector differs, for tests that read them back and compare checksums.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds `keel.img` in `dir` with the default configuration and a guest store holding
/// `files` (written to `dir/store` first); returns the image's path. Panics if a step fails.
pub fn image_with_store(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let a = artifacts();
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap_or_else(|e| panic!("creating {store:?}: {e}"));
    for (name, bytes) in files {
        std::fs::write(store.join(name), bytes)
            .unwrap_or_else(|e| panic!("writing {name} into {store:?}: {e}"));
    }
    let image = dir.join("keel.img");
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    appliance_image(Some(&store), &config, &[], &image, "keel.img with a store");
    image
}

/// `keel.img` in `dir` with the echo guest (`echo.bin`) in its store and the build's
/// configuration (its token and certificate): the metrics and WebSocket tests' appliance.
pub fn image_with_echo(dir: &Path) -> PathBuf {
    let a = artifacts();
    let set = crate::guests::build_guests().expect("building the test guests");
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let path = set.path(crate::guests::ECHO);
    std::fs::copy(&path, store.join(path.file_name().unwrap())).unwrap();
    let image = dir.join("keel.img");
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    appliance_image(
        Some(&store),
        &config,
        &[],
        &image,
        "the image with echo.bin",
    );
    image
}
