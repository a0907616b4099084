//! `keel_qemu_tests`: boots Keel in emulators and drives its serial console, for the
//! integration tests in `tests/` and the `boot-bench` benchmark.
//!
//! Layering, bottom up:
//!
//! - [`report`] renders raw console bytes (firmware escape sequences, `\r\n`) as readable text.
//! - [`console`] copies an emulator's COM1 output into a shared transcript on a background
//!   thread; waits search it for a [`Pattern`] (text or regex) with a deadline, from a cursor
//!   that each match moves forward.
//! - [`machine`] is one running emulator ([`Machine`]): waits that panic with a failure
//!   report (console tail, COM2 defmt log decoded with the kernel ELF, emulator output,
//!   command line), typing, console commands, exit waits, and kill on drop and after a hard
//!   timeout.
//! - [`qemu`] and [`bochs`] start the two emulators ([`Qemu`], [`Bochs`]); `bochs` documents
//!   what it takes to run Bochs headless with a two-way COM1.
//! - [`banner`] parses the boot banner; [`artifacts()`] builds the kernel and image once per
//!   test binary.
//! - [`guests`] builds the small guest payloads the VMM tests run.
//! - [`linux_guest`] re-exports `keel_image::linux_guest` (Debian's kernel and busybox,
//!   fetched with `apt-get download` into `target/linux-guest/`, and the initramfs writer) and
//!   adds the test initramfs; [`linux_artifacts()`] puts the kernel and the test initramfs
//!   into `keel-linux.img` as boot modules.
//! - [`disk_guest`] adds Debian's virtio-blk and ext4 modules to an initramfs whose `/init`
//!   mounts `/dev/vda`, and makes and reads ext4 images on the host; [`boot_disk`] builds
//!   rust-hypervisor-firmware and the GPT boot disks it boots (the guest-disk tests and
//!   `disk-bench`).
//! - [`net_guest`] adds Debian's virtio-net modules to an initramfs whose `/init` gets an
//!   address (DHCP or static, from the kernel command line), serves a page with busybox
//!   `httpd` and offers a shell (the guest-networking tests and `net-bench`).
//!
//! A test reads like an operator session:
//!
//! ```no_run
//! use keel_qemu_tests::{Qemu, artifacts, check};
//!
//! let mut m = Qemu::pvh(&artifacts().elf).spawn().unwrap();
//! let banner = m.expect_banner();
//! check!(m, banner.field("boot path") == Some("PVH"));
//! let out = m.command("version");
//! check!(m, out.starts_with("Keel 0.1.0"), "version printed {out:?}");
//! m.type_line("poweroff");
//! m.expect("powering off...");
//! m.expect_exit(std::time::Duration::from_secs(10));
//! ```
//!
//! Run with `cargo test -p keel-qemu-tests --release`. The tests need Debian's
//! `qemu-system-x86`, `ovmf`, `bochs`, `bochsbios`, `vgabios`, and for the image `grub-pc-bin`,
//! `grub-efi-amd64-bin` (plus `xorriso` and `mtools` for the harness's own GRUB test image).
//! `cargo run --release -p keel-qemu-tests --bin boot-bench` measures boot times;
//! `vm-bench`, `http-bench`, `disk-bench`, `net-bench` and `linux-bench` (a Linux guest under Keel against the same
//! kernel booted by QEMU directly) are the other benchmarks. The Linux tests (`linux.rs`,
//! `linux_vtx.rs`, and `demo_guest.rs`, which boots the demo VM's guest in plain QEMU) and the
//! `http-bench` and `linux-bench` binaries also need Debian's `apt` and `dpkg` and network
//! access the first time (run as root on a fresh machine: the package list is fetched with
//! `apt-get update` when empty).
//!
//! Environment: `KEEL_TEST_TIMEOUT_SCALE` scales default timeouts, `KEEL_TEST_KEEP_DIR` keeps
//! each emulator's temporary directory, `KEEL_TEST_ELF` with `KEEL_TEST_IMAGE` boot prebuilt
//! artifacts instead of building.

pub mod artifacts;
pub mod banner;
pub mod bochs;
pub mod boot_disk;
pub mod console;
pub mod disk_guest;
pub mod error;
pub mod guests;
pub mod http;
pub mod keel_cli;
pub mod kut;
pub mod linux_guest;
pub mod machine;
pub mod net_guest;
pub mod netns;
pub mod power_cut;
pub mod qemu;
pub mod report;
pub mod ws;

pub use artifacts::{Artifacts, LinuxArtifacts, appliance_image, artifacts, linux_artifacts};
pub use banner::{Banner, PROMPT, VERSION_LINE, first_number};
pub use bochs::Bochs;
pub use console::{Match, Pattern};
pub use error::Error;
pub use machine::Machine;
pub use qemu::{Firmware, Qemu};
