//! The web console in a real browser: Debian's headless Chromium, driven through
//! chromium-driver by Selenium (`qemu-tests/web/web_console.py`, in the virtualenv
//! `image-builder/install-deps.sh` makes at `target/selenium-venv`), against Keel in QEMU
//! with the demo VM (one boot, the demo image as `keel build` makes it).
//!
//! The script, step by step: the page loads compressed with its security headers
//! (CSP without inline script, `frame-ancestors 'none'`, `nosniff`, `no-referrer`; an
//! `If-None-Match` with its ETag answers 304); a wrong token shows an error and is not kept;
//! the right one shows the dashboard (facts, and the memory and exits/s graphs filling); the
//! demo VM is listed running; its console in xterm.js answers `uname -r` with the guest's
//! kernel release and echoes what is typed (latency measured); a graceful stop turns it
//! stopped; a new VM with 7 MiB shows the API's error at the memory field, with 128 MiB it is
//! created and starts; saving the configuration after someone else changed it shows the
//! conflict (412); the event log lists demo's stop, the new VM's start and the saved
//! configuration; the page fits a phone's width; the browser logged no CSP violation;
//! signing out forgets the token. A failing step leaves a screenshot, the page's HTML and the
//! browser's log in `target/test-artifacts/web_console/` (the dashboard's screenshot is
//! always there).
//!
//! Prints the figures: first-load size (on the wire and uncompressed), time to interactive,
//! console echo latency.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_image::demo::{BANNER_PREFIX, demo_config, prepare_demo_store};
use keel_qemu_tests::machine::scaled;
use keel_qemu_tests::{Pattern, Qemu, appliance_image, artifacts, check, http};

/// How long the demo guest may take from its autostart to its shell's banner under TCG.
const GUEST_BOOT: Duration = Duration::from_secs(240);

/// How long the browser script may take for every step (about 40 s seen).
const BROWSER: Duration = Duration::from_secs(240);

fn demo_image(dir: &Path) -> (PathBuf, String) {
    let a = artifacts();
    // Its own store directory: another test may be writing the demo VM test's.
    let store = keel_image::output_dir().join("web-console-test");
    let guest = prepare_demo_store(&store).unwrap_or_else(|e| panic!("demo store: {e}"));
    let image = dir.join("keel.img");
    appliance_image(
        Some(&store),
        &demo_config(&a.api_token).to_json_pretty(),
        &[],
        &image,
        "keel.img with the demo store and configuration",
    );
    (image, guest.kernel_release)
}

#[test]
fn web_console_in_chromium_manages_the_demo_vm() {
    let root = keel_image::workspace_root();
    let python = root.join("target/selenium-venv/bin/python");
    for needed in [python.as_path(), Path::new("/usr/bin/chromedriver")] {
        assert!(
            needed.exists(),
            "{} missing: run image-builder/install-deps.sh (installs chromium, \
             chromium-driver and Selenium)",
            needed.display()
        );
    }
    let artifact_dir = root.join("target/test-artifacts/web_console");
    let _ = std::fs::remove_dir_all(&artifact_dir);

    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (image, release) = demo_image(tmp.path());
    let image_ready = test_start.elapsed();
    let a = artifacts();
    let port = http::free_port();
    let mut m = Qemu::seabios(&image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .hard_timeout(scaled(Duration::from_secs(600)))
        .spawn()
        .unwrap();
    m.expect_banner();
    http::await_api(&mut m, port);
    // The console step needs the guest's shell.
    m.expect_within(
        Pattern::regex(&format!(r"\[demo\] {}", regex::escape(BANNER_PREFIX))),
        scaled(GUEST_BOOT),
    );
    let guest_up = m.elapsed();

    let started = Instant::now();
    let mut child = Command::new(&python)
        .arg(root.join("qemu-tests/web/web_console.py"))
        .arg(http::page_url(port))
        .arg(&a.api_token)
        .arg(&release)
        .arg(&artifact_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
    // The script's lines as they come, on a thread: a hung browser must not hang the test.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = scaled(BROWSER);
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            eprintln!("browser: {line}");
            lines.push(line);
        }
        if let Some(status) = child.try_wait().expect("waiting for the browser script") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            m.fail(format!(
                "the browser script took over {deadline:?}; its steps:\n{}",
                lines.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The rest of its output (the thread ends at EOF).
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        eprintln!("browser: {line}");
        lines.push(line);
    }
    let failed = lines.iter().find(|l| l.starts_with("FAIL "));
    check!(
        m,
        status.success() && failed.is_none(),
        "the browser script failed ({status}): {}\nartifacts in {}",
        failed.map_or("no FAIL line", String::as_str),
        artifact_dir.display()
    );
    let figures = lines
        .iter()
        .find_map(|l| l.strip_prefix("FIGURES "))
        .unwrap_or_else(|| m.fail("the browser script printed no figures"));
    let figures: serde_json::Value = serde_json::from_str(figures).unwrap();
    eprintln!(
        "web console: image ready after {:.1} s (kernel build included); guest shell up {:.1} s \
         after QEMU started; browser steps {:.1} s; figures {figures}",
        image_ready.as_secs_f64(),
        guest_up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // What the browser did, seen from the appliance's side too.
    m.expect("vm demo stopped");
    m.type_line("vm list");
    m.expect(Pattern::regex(
        r"(?m)^\s+\d+\s+webtest\s+store:vmlinuz\s+128 MiB\s+1\s",
    ));
    m.expect_prompt();
}
