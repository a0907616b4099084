//! Tests of the harness itself, independent of the Keel kernel: they boot GRUB's own serial
//! command line (a `grub-mkrescue` image whose `grub.cfg` prints a marker and falls through to
//! the `grub>` prompt), type at it, and check waits, failure reports, exits and killing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keel_qemu_tests::{Bochs, Error, Machine, Pattern, Qemu};

const MARKER: &str = "HARNESS VEHICLE READY";

/// A hybrid GRUB rescue image (boots as a disk under SeaBIOS, OVMF and Bochs), built once per
/// test binary into `target/qemu-tests/`.
fn vehicle() -> &'static Path {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        let out = keel_image::workspace_root().join("target/qemu-tests");
        let tree = out.join("grub-vehicle");
        let grub = tree.join("boot/grub");
        std::fs::create_dir_all(&grub).unwrap();
        std::fs::write(
            grub.join("grub.cfg"),
            format!(
                "set timeout=0\nserial --unit=0 --speed=115200\nterminal_input serial\n\
                 terminal_output serial\necho \"{MARKER}\"\n"
            ),
        )
        .unwrap();
        let iso = out.join("grub-vehicle.iso");
        let status = Command::new("grub-mkrescue")
            .arg("-o")
            .arg(&iso)
            .arg(&tree)
            .output()
            .expect("grub-mkrescue (Debian packages grub-pc-bin, xorriso, mtools)");
        assert!(
            status.status.success(),
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        iso
    })
}

/// Checks that a process no longer exists (it was killed and reaped).
fn assert_gone(pid: u32) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!proc.exists(), "emulator {pid} still exists");
}

fn drive_grub(m: &mut Machine) {
    m.expect(MARKER);
    m.expect("grub> ");
    m.type_line("echo typed through COM1");
    let line = m.expect(Pattern::regex(r"(?m)^\r?(typed through COM1)\r?\n"));
    assert_eq!(line.group(1), "typed through COM1");
    m.expect("grub> ");
    m.type_line("halt");
}

#[test]
fn qemu_types_and_exits_by_itself() {
    let mut m = Qemu::seabios(vehicle()).spawn().unwrap();
    drive_grub(&mut m);
    let status = m.expect_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn bochs_types_and_exits_by_itself() {
    let mut m = Bochs::disk(vehicle()).spawn().unwrap();
    drive_grub(&mut m);
    // Bochs ends on ACPI S5 ("soft power off"), with exit status 1.
    m.expect_exit(Duration::from_secs(60));
    let out = std::fs::read_to_string(m.dir().join("bochs.out")).unwrap();
    assert!(out.contains("soft power off"), "{out}");
}

#[test]
fn a_failed_wait_reports_the_transcript() {
    let mut m = Qemu::seabios(vehicle()).spawn().unwrap();
    m.expect("grub> ");
    let err = m
        .wait_for("text that never comes", Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, Error::WaitTimeout { .. }));
    let text = err.to_string();
    for part in [
        "timed out after 1s waiting for text \"text that never comes\"",
        MARKER,
        "grub> ",
        "--- COM2 diagnostic log (defmt) ---\n(nothing received on COM2)",
        "--- emulator output: qemu.stderr ---",
        "--- command line ---\nqemu-system-x86_64 -accel tcg -M pc",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
    // Debug prints the same readable text (what `.unwrap()` shows).
    assert_eq!(format!("{err:?}"), text);
}

#[test]
fn a_panicking_test_still_kills_the_emulator() {
    let pid = std::sync::Mutex::new(0);
    let result = std::panic::catch_unwind(|| {
        let mut m = Qemu::seabios(vehicle()).spawn().unwrap();
        *pid.lock().unwrap() = m.pid();
        m.expect_within("text that never comes", Duration::from_millis(500));
    });
    let message = *result.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("timed out"), "{message}");
    assert_gone(*pid.lock().unwrap());
}

#[test]
fn the_hard_timeout_kills_the_emulator() {
    let mut m = Qemu::seabios(vehicle())
        .hard_timeout(Duration::from_secs(2))
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let err = m
        .wait_for("text that never comes", Duration::from_secs(60))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(30));
    let text = err.to_string();
    assert!(matches!(err, Error::ConsoleClosed { .. }), "{text}");
    assert!(text.contains("killed after the hard timeout"), "{text}");
}

#[test]
fn an_emulator_that_cannot_start_fails_clearly() {
    let mut m = Qemu::seabios(vehicle())
        .args(["-no-such-option"])
        .spawn()
        .unwrap();
    let err = m.wait_for("grub> ", Duration::from_secs(30)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::ConsoleClosed { .. }), "{text}");
    assert!(text.contains("-no-such-option"), "{text}");
}

#[test]
fn two_bochs_run_at_once_and_die_on_drop() {
    let mut a = Bochs::disk(vehicle()).spawn().unwrap();
    let mut b = Bochs::disk(vehicle()).spawn().unwrap();
    a.expect(MARKER);
    b.expect(MARKER);
    let pids = [a.pid(), b.pid()];
    drop(a);
    drop(b);
    for pid in pids {
        assert_gone(pid);
    }
}
