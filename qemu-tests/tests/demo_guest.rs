//! The demo VM's guest without Keel: the store files `keel run` puts into the image
//! (`keel_image::demo::prepare_demo_store`: Debian's `vmlinuz` and the demo initramfs) booted
//! by plain QEMU TCG (`-M pc -cpu qemu64 -m 512 -kernel -initrd`) with the demo VM's command
//! line from `config/demo.toml`. The shell on ttyS0 answers, and both ways to stop the guest
//! end in ACPI S5, which makes QEMU exit: `poweroff` typed in the shell, and the ACPI power
//! button (`system_powerdown` on the QEMU monitor, what `vm stop demo` presses in Keel).
//!
//! The first run downloads the kernel and busybox with `apt-get download` into
//! `target/linux-guest/` (Debian's apt and network access needed once).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keel_image::demo::{
    BANNER_PREFIX, DEMO_INITRAMFS, DEMO_KERNEL, DEMO_PROMPT, demo_config, prepare_demo_store,
};
use keel_qemu_tests::{Machine, Pattern, Qemu, check};

/// The store files, written once per test binary.
struct DemoStore {
    dir: PathBuf,
    kernel_release: String,
}

fn demo_store() -> &'static DemoStore {
    static STORE: OnceLock<Result<DemoStore, String>> = OnceLock::new();
    let store = STORE.get_or_init(|| {
        // Not target/keel/demo-store, which a `keel run` at the same time may be writing.
        let dir = keel_image::output_dir().join("demo-guest-test");
        let guest = prepare_demo_store(&dir).map_err(|e| format!("demo store: {e}"))?;
        Ok(DemoStore {
            dir,
            kernel_release: guest.kernel_release,
        })
    });
    match store {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Boots the demo guest with a QEMU monitor on `monitor` and waits for its first prompt,
/// checking the banner on the way.
fn boot(monitor: &Path) -> Machine {
    let store = demo_store();
    let cmdline = demo_config("unused-token-0123456789").vms[0]
        .cmdline
        .clone();
    let mut q = Qemu::pvh(&store.dir.join(DEMO_KERNEL))
        .machine("pc")
        .cpu("qemu64")
        .memory_mib(512)
        .cpus(1)
        .append(&cmdline)
        .timeout(Duration::from_secs(60))
        .hard_timeout(Duration::from_secs(180))
        .args([
            "-initrd".to_owned(),
            store.dir.join(DEMO_INITRAMFS).display().to_string(),
            "-monitor".to_owned(),
            format!("unix:{},server=on,wait=off", monitor.display()),
        ]);
    q.defmt_elf = None;
    let mut m = q.spawn().unwrap();
    let banner = m.expect(Pattern::line_starting(BANNER_PREFIX));
    check!(
        m,
        banner.group(1).starts_with(&format!(
            " {} - type commands here; 'poweroff' to stop",
            store.kernel_release
        )),
        "banner: {:?}",
        banner.group(1)
    );
    m.expect(DEMO_PROMPT);
    m
}

/// Reads from the monitor until its `(qemu) ` prompt.
fn read_to_prompt(monitor: &mut UnixStream) -> std::io::Result<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while !text.ends_with(b"(qemu) ") {
        let n = monitor.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("monitor closed"));
        }
        text.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// Types `command` on the human monitor at `path` and waits for it to be done.
fn monitor_command(path: &Path, command: &str) -> std::io::Result<()> {
    let mut monitor = UnixStream::connect(path)?;
    monitor.set_read_timeout(Some(Duration::from_secs(10)))?;
    read_to_prompt(&mut monitor)?;
    monitor.write_all(format!("{command}\n").as_bytes())?;
    read_to_prompt(&mut monitor)?;
    Ok(())
}

/// Waits for the guest's orderly shutdown (busybox init stopping everything, then the
/// kernel's ACPI power-off) and QEMU's clean exit.
fn expect_acpi_power_off(m: &mut Machine, since: Instant) {
    m.expect("The system is going down NOW!");
    m.expect("reboot: Power down");
    let status = m.expect_exit(Duration::from_secs(30));
    check!(m, status.success(), "QEMU exited with {status}");
    eprintln!(
        "guest powered off {:.1} s after the request",
        since.elapsed().as_secs_f64()
    );
}

#[test]
fn demo_guest_shell_answers_and_the_power_button_powers_it_off() {
    let tmp = tempfile::tempdir().unwrap();
    let monitor = tmp.path().join("monitor.sock");
    let mut m = boot(&monitor);
    eprintln!(
        "prompt {:.1} s after QEMU started",
        m.elapsed().as_secs_f64()
    );
    m.type_line("echo hi");
    m.expect(Pattern::regex(r"(?m)^hi\r?$"));
    m.expect(DEMO_PROMPT);
    m.type_line("hostname; ls /dev/input");
    m.expect(Pattern::regex(r"(?m)^demo\r?$"));
    m.expect("event0");
    m.expect(DEMO_PROMPT);

    let pressed = Instant::now();
    if let Err(e) = monitor_command(&monitor, "system_powerdown") {
        m.fail(format!("QEMU monitor {}: {e}", monitor.display()));
    }
    expect_acpi_power_off(&mut m, pressed);
}

#[test]
fn demo_guest_poweroff_in_the_shell_powers_it_off() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = boot(&tmp.path().join("monitor.sock"));
    let typed = Instant::now();
    m.type_line("poweroff");
    expect_acpi_power_off(&mut m, typed);
}
