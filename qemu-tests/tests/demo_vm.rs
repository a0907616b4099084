//! The demo VM under Keel: what a new user sees first after `keel run`. The image is the one
//! `keel build` makes without `--config`, `--store` and `--no-demo` — the store from
//! `keel_image::demo::prepare_demo_store` (Debian's `vmlinuz` and the demo initramfs), the
//! configuration `demo_config` (`config/demo.toml` plus the API token) — booted as `keel run`
//! boots it (QEMU TCG with AMD-V, `-M q35`, 1 GiB, 2 CPUs, virtio-blk and virtio-net).
//!
//! `demo` starts at boot; `vm list` shows it running on 2 vCPUs; `vm console demo` attaches to
//! the guest's shell, which answers (`nproc`, `hostname`); Ctrl-] detaches; `vm stop demo`
//! presses the ACPI power button, which the guest's `acpid` turns into an orderly `poweroff`,
//! and Keel reports `guest powered off`.
//!
//! The first run downloads the kernel and busybox with `apt-get download` into
//! `target/linux-guest/` (Debian's apt and network access needed once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_image::demo::{
    BANNER_PREFIX, DEMO_HOSTNAME, DEMO_PROMPT, demo_config, prepare_demo_store,
};
use keel_qemu_tests::machine::scaled;
use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, check};

/// Ctrl-]: detaches the console from a VM.
const DETACH: &str = "\x1d";

/// How long Debian's kernel may take from the autostart to its shell's banner (10–40 s seen
/// under TCG with Keel on AMD-V).
const GUEST_BOOT: Duration = Duration::from_secs(240);

/// How long the guest may take from the power button to its power-off.
const GUEST_SHUTDOWN: Duration = Duration::from_secs(120);

/// Builds `keel.img` in `dir` as `keel build` does with the demo VM: the demo store, the demo
/// configuration with the build's API token, the token on the kernel command line. Returns
/// the image and the guest's kernel release.
fn demo_image(dir: &Path) -> (PathBuf, String) {
    let a = artifacts();
    // Not target/keel/demo-store, which a `keel run` at the same time may be writing.
    let store = keel_image::output_dir().join("demo-vm-test");
    let guest = match prepare_demo_store(&store) {
        Ok(g) => g,
        Err(e) => panic!("demo store: {e}"),
    };
    let config = demo_config(&a.api_token);
    let image = dir.join("keel.img");
    appliance_image(
        Some(&store),
        &config.to_json_pretty(),
        &[],
        &image,
        "keel.img with the demo store and configuration",
    );
    (image, guest.kernel_release)
}

/// Boots `image` the way `keel run` does (q35, SeaBIOS, 1 GiB, 2 CPUs, virtio-net with user
/// networking); returns the machine and the boot output up to the first prompt.
fn boot(image: &Path) -> (Machine, String) {
    let a = artifacts();
    let mut m = Qemu::seabios(image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .args(["-nic", "user,model=virtio-net-pci"])
        .hard_timeout(scaled(Duration::from_secs(900)))
        .spawn()
        .unwrap();
    let banner = m.expect_banner();
    (m, banner.text)
}

#[test]
fn demo_vm_autostarts_answers_on_its_console_and_powers_off_at_vm_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, release) = demo_image(tmp.path());
    let (mut m, boot_text) = boot(&image);
    check!(
        m,
        boot_text.contains("vm demo started (autostart)"),
        "no autostart line before the prompt:\n{boot_text}"
    );
    let autostarted = m.elapsed();

    // Running on 2 vCPUs, from the store's kernel. (Busy booting, or idle in between.)
    m.type_line("vm list");
    m.expect(Pattern::regex(
        r"(?m)^\s+1\s+demo\s+store:vmlinuz\s+256 MiB\s+2\s+\S+\s+running( \(idle\))?\r?$",
    ));
    m.expect_prompt();

    // Detached, the guest's lines come to the host console with its name in front (each
    // after `\r` and an erase-line that clear the prompt, then the prompt again).
    let banner = m.expect_within(
        Pattern::regex(&format!(
            r"\[demo\] {}([^\r\n]*)\r?\n",
            regex::escape(BANNER_PREFIX)
        )),
        scaled(GUEST_BOOT),
    );
    check!(
        m,
        banner.group(1).starts_with(&format!(
            " {release} - type commands here; 'poweroff' to stop"
        )),
        "banner: {:?}",
        banner.group(1)
    );
    eprintln!(
        "demo guest's shell {:.1} s after its autostart ({:.1} s after QEMU started)",
        (m.elapsed() - autostarted).as_secs_f64(),
        m.elapsed().as_secs_f64()
    );

    // Attach. The prompt the shell printed before may already count as shown (a partial line
    // is never echoed), so Enter asks for a fresh one.
    m.type_line("vm console demo");
    m.expect("[attached to demo: Ctrl-] detaches]");
    m.type_line("");
    m.expect(DEMO_PROMPT);
    m.type_line("nproc; hostname; echo sum=$((6*7))");
    // The guest's lines arrive ending in `\r\r\n`.
    m.expect(Pattern::regex(r"(?m)^2\r*$"));
    m.expect(Pattern::regex(&format!(r"(?m)^{DEMO_HOSTNAME}\r*$")));
    m.expect(Pattern::regex(r"(?m)^sum=42\r*$"));
    m.expect(DEMO_PROMPT);
    if let Err(e) = m.send(DETACH) {
        m.fail(e);
    }
    m.expect("[detached from demo]");
    m.expect_prompt();
    let version = m.command("version");
    check!(
        m,
        version.contains("built with rustc"),
        "the host console after detaching: {version:?}"
    );

    // The power button: the guest's acpid runs `poweroff`, busybox init stops everything and
    // the kernel enters ACPI S5.
    m.type_line("vm stop demo");
    let pressed = m.elapsed();
    m.expect("vm demo: power button pressed; forced off in ");
    // (busybox init starts its console messages with `\r`, after the `[demo] ` prefix.)
    m.expect_within("The system is going down NOW!", scaled(GUEST_SHUTDOWN));
    m.expect("reboot: Power down");
    m.expect_within("vm demo stopped: guest powered off", scaled(GUEST_SHUTDOWN));
    eprintln!(
        "demo guest powered off {:.1} s after `vm stop demo`",
        (m.elapsed() - pressed).as_secs_f64()
    );
    m.type_line("vm list");
    m.expect(Pattern::regex(
        r"(?m)^\s+1\s+demo\s+store:vmlinuz\s+256 MiB\s+2\s+-\s+stopped: guest powered off\r?$",
    ));
    m.expect_prompt();
}
