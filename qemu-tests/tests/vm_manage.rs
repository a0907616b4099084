//! Named VMs on the console (QEMU TCG with AMD-V, SeaBIOS, a writable `keel.img` whose guest
//! store holds the flat test guests and whose configuration defines VMs from them):
//!
//! - the whole lifecycle: defined → start → info → graceful stop that the guest ignores
//!   (forced after the grace time) → restart → force stop; `vm create` / `vm destroy` edit the
//!   saved configuration; two named VMs run at once;
//! - autostart at boot, also for a VM created on the console, after a reboot;
//! - bad names, bad states and bad definitions give the exact error and change nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, check, guests};

/// A configuration with two VMs from store files: `ticker` (the counter guest, autostart as
/// given) and `hello`.
fn config(ticker_autostart: bool) -> Vec<u8> {
    let a = artifacts();
    let toml = format!(
        r#"
hostname = "vmhost"

[management]
api_tokens = ["{token}"]

[[vms]]
name = "ticker"
kernel = "counter.bin"
memory_mib = 16
autostart = {ticker_autostart}

[[vms]]
name = "hello"
kernel = "hello.bin"
memory_mib = 16
"#,
        token = a.api_token
    );
    keel_image::appliance::parse_toml(&toml)
        .expect("the test configuration is valid")
        .to_json_pretty()
}

/// Builds `keel.img` in `dir` with the test guests in the store and `config`.
fn image(dir: &Path, config: &[u8]) -> PathBuf {
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let set = guests::build_guests().expect("building the test guests");
    for name in [guests::COUNTER, guests::HELLO, guests::ECHO] {
        let from = set.path(name);
        std::fs::copy(&from, store.join(from.file_name().unwrap())).unwrap();
    }
    let image = dir.join("keel.img");
    appliance_image(Some(&store), config, &[], &image, "keel.img with the store");
    image
}

/// Boots `image` writable; returns the machine and the boot output up to the first prompt
/// (autostart lines come before it).
fn boot(image: &Path) -> (Machine, String) {
    let a = artifacts();
    let mut m = Qemu::seabios(image)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args(["-nic", "none"])
        .spawn()
        .unwrap();
    let banner = m.expect_banner();
    (m, banner.text)
}

/// The `vm list` line of VM `name`.
fn list_line(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn named_vm_lifecycle_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path(), &config(false));
    let (mut m, _) = boot(&image);

    let list = m.command("vm list");
    for name in ["ticker", "hello"] {
        let line = list_line(&list, name);
        check!(
            m,
            line.contains("defined") && line.contains("16 MiB"),
            "{name} should be defined, not running:\n{list}"
        );
    }

    // Start and watch it run.
    m.type_line("vm start ticker");
    m.expect("vm ticker started");
    m.expect("[ticker] tick 2");
    // The ticker prints all the time, so wait for each answer rather than for a prompt.
    m.type_line("vm info ticker");
    for want in [
        "state:      running",
        "kernel:     counter.bin (store)",
        "uptime:",
        "io-out",
    ] {
        m.expect(want);
    }

    // Starting it again is refused; so are unknown names and a stop of a defined VM.
    let cases = [
        (
            "vm start ticker",
            "error: VM ticker is already running: 'vm restart ticker' restarts it",
        ),
        ("vm start nosuch", "error: no VM named 'nosuch'"),
        ("vm stop hello", "error: VM hello is not running (defined)"),
        ("vm info Ticker", "bad argument 'Ticker'"),
        (
            "vm destroy nosuch",
            "error: no VM named 'nosuch' in the configuration",
        ),
        (
            "vm create ticker kernel=counter.bin",
            "error: a VM named ticker exists already",
        ),
        (
            "vm create tiny kernel=counter.bin mem=5",
            "vms[2].memory_mib: must be between 16 and 65536",
        ),
        (
            "vm create nokernel",
            "usage: vm create <name> kernel=<file>",
        ),
    ];
    for (line, expected) in cases {
        m.type_line(line);
        m.expect(expected);
    }
    m.type_line("vm list");
    m.expect(Pattern::regex(r"(?m)^\s+1\s+ticker\s+.*running\r?$"));
    m.expect(Pattern::regex(
        r"(?m)^\s+2\s+hello\s+store:hello.bin\s+16 MiB\s+1\s+-\s+defined\r?$",
    ));

    // A second named VM alongside: both run at once.
    m.type_line("vm create echo kernel=echo.bin mem=16 vcpus=2");
    m.expect("vm echo created: 'vm start echo' starts it");
    m.type_line("vm start echo");
    // Generous: the ticker floods the console, and CI machines are busy.
    m.expect_within("[echo] echo guest: ready", Duration::from_secs(90));
    // Two vCPUs; the flat guest never starts its AP.
    m.type_line("vm info echo");
    m.expect(Pattern::regex(
        r"vcpus:      2 \((running|halted), waiting-for-startup\)",
    ));
    m.expect("[ticker] tick");
    m.type_line("vm list");
    m.expect(Pattern::regex(r"(?m)^\s+1\s+ticker\s+.*running\r?$"));
    m.expect(Pattern::regex(
        r"(?m)^\s+3\s+echo\s+store:echo.bin\s+16 MiB\s+2\s+.*running\r?$",
    ));

    // The flat guest ignores the power button: the stop turns forced after the grace time.
    m.type_line("vm stop ticker timeout=2");
    m.expect("vm ticker: power button pressed; forced off in 2 s unless it shuts down");
    m.expect_within(
        "vm ticker: no shutdown within the grace time after the power button: forced off",
        Duration::from_secs(60),
    );
    m.expect("vm ticker stopped: stopped by the operator");
    m.type_line("vm info ticker");
    m.expect("state:      stopped: stopped by the operator");
    m.expect("ran for:");

    // Restart a stopped VM: it simply starts.
    m.type_line("vm restart ticker");
    m.expect("vm ticker: restarting");
    m.expect("[ticker] tick 1");
    // Restart a running one: power button, forced off after the 30 s grace time (the echo
    // guest ignores the button), then started again.
    m.type_line("vm restart echo");
    m.expect("vm echo: restarting");
    m.expect_within(
        "vm echo: no shutdown within the grace time after the power button: forced off",
        Duration::from_secs(90),
    );
    m.expect("vm echo stopped: stopped by the operator");
    m.expect("vm echo started (restart)");
    m.expect("[echo] echo guest: ready");

    // Destroy removes the definition (stopping it at once).
    m.type_line("vm destroy ticker");
    m.expect("vm ticker destroyed");
    m.expect_prompt();
    // Nothing prints any more: the prompt is the end of each answer again.
    let list = m.command("vm list");
    check!(
        m,
        list_line(&list, "ticker").is_empty() && list_line(&list, "hello").contains("defined"),
        "after destroy:\n{list}"
    );
    let show = m.command("config show");
    check!(
        m,
        !show.contains("counter.bin")
            && show.contains("echo.bin")
            && show.contains("vms[1].vcpus = 2"),
        "the configuration should hold echo (2 vCPUs) but not ticker:\n{show}"
    );
}

#[test]
fn autostart_at_boot_and_after_a_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image(tmp.path(), &config(true));
    let (mut m, boot_text) = boot(&image);
    check!(
        m,
        boot_text.contains("vm ticker started (autostart)"),
        "no autostart line:\n{boot_text}"
    );
    m.expect("[ticker] tick 1");
    m.type_line("vm list");
    m.expect(Pattern::regex(
        r"(?m)^\s+2\s+hello\s+store:hello.bin\s+16 MiB\s+1\s+-\s+defined\r?$",
    ));

    // A VM created on the console with autostart comes up after a reboot too.
    m.type_line("vm create echo kernel=echo.bin mem=16 autostart");
    m.expect("vm echo created");
    m.type_line("reboot");
    m.expect("rebooting...");
    let banner = m.expect_banner();
    for want in [
        "config: loaded generation 2",
        "vm ticker started (autostart)",
        "vm echo started (autostart)",
    ] {
        check!(
            m,
            banner.text.contains(want),
            "after the reboot, no {want:?}:\n{}",
            banner.text
        );
    }
    m.expect("[echo] echo guest: ready");
    m.expect("[ticker] tick 1");
}
