//! `GET /metrics` against Keel in QEMU: `keel.img` with the flat test guest `echo.bin` (it
//! polls COM1, an IN exit per poll, so its exit counters move on their own), booted under
//! SeaBIOS on `-M q35` with virtio-net (`hostfwd` to 127.0.0.1).
//!
//! Without a token: 401. With it: Prometheus text format that `promtool check metrics`
//! (Debian's `prometheus` package; `image-builder/install-deps.sh` installs it) accepts, with
//! the VM's state, and its exits counter larger in a second scrape than in the first.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel_qemu_tests::http;
use keel_qemu_tests::{Qemu, artifacts, check};

const ECHO_VM: &str = r#"{"name":"echo","kernel":"echo.bin","memory_mib":16}"#;

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool: {e} (install Debian's prometheus: image-builder/install-deps.sh)")
        })?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The sum of the echo VM's `keel_vm_exits_total` samples.
fn echo_exits(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("keel_vm_exits_total{vm=\"echo\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The value of the sample whose name and labels are `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_pass_promtool_and_move_as_a_guest_runs() {
    let a = artifacts();
    let token = a.api_token.as_str();
    let tmp = tempfile::tempdir().unwrap();
    let image = keel_qemu_tests::artifacts::image_with_echo(tmp.path());
    let port = http::free_port();
    let mut m = Qemu::seabios(&image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    m.expect_banner();
    http::await_api(&mut m, port);
    let r = http::request(port, "GET", "/metrics", None, None).unwrap();
    check!(m, r.status == 401, "/metrics without a token: {r:?}");
    let created = http::request(port, "POST", "/api/v1/vms", Some(token), Some(ECHO_VM)).unwrap();
    check!(m, created.status == 201, "create echo: {created:?}");
    let started = http::request(port, "POST", "/api/v1/vms/echo/start", Some(token), None).unwrap();
    check!(m, started.status == 200, "start echo: {started:?}");

    let first = http::request(port, "GET", "/metrics", Some(token), None).unwrap();
    check!(m, first.status == 200, "/metrics: {first:?}");
    check!(
        m,
        first.header("content-type") == Some("text/plain; version=0.0.4; charset=utf-8"),
        "content type: {first:?}"
    );
    if let Err(e) = promtool(&first.body) {
        m.fail(format!(
            "promtool check metrics refused /metrics:\n{e}\n{}",
            first.body
        ));
    }
    for needle in [
        "keel_vm_state{vm=\"echo\",state=\"running\"} 1",
        "keel_http_requests_total{route=\"/api/v1/vms\",status=\"201\"} 1",
        "keel_memory_total_bytes ",
        "keel_switch_rx_frames_total{switch=\"bridged\"",
    ] {
        check!(
            m,
            first.body.contains(needle),
            "no {needle:?} in\n{}",
            first.body
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let second = http::request(port, "GET", "/metrics", Some(token), None).unwrap();
    let (before, after) = (echo_exits(&first.body), echo_exits(&second.body));
    check!(
        m,
        before > 0 && after > before,
        "echo's exits did not move between scrapes: {before} then {after}\n{}",
        second.body
    );
    // The boot CPU's time: idle and busy add up to the uptime, which moved between the
    // scrapes (by less than the 2 s of wall time when TCG's TSC calibrated fast on a
    // loaded host); the echo VM ran in slices.
    let cpu0 = |text: &str| {
        sample(text, "keel_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}")
            .zip(sample(
                text,
                "keel_cpu_seconds_total{cpu=\"0\",mode=\"busy\"}",
            ))
            .map(|(idle, busy)| idle + busy)
    };
    let (t1, t2) = (cpu0(&first.body), cpu0(&second.body));
    check!(
        m,
        t1.zip(t2).is_some_and(|(a, b)| b > a),
        "CPU 0's idle + busy seconds did not move between scrapes: {t1:?} then {t2:?}"
    );
    let ran = sample(&second.body, "keel_vm_run_seconds_total{vm=\"echo\"}");
    check!(
        m,
        ran.is_some_and(|s| s > 0.0),
        "echo's run seconds: {ran:?}\n{}",
        second.body
    );
    check!(
        m,
        second
            .body
            .contains("keel_http_requests_total{route=\"/metrics\",status=\"200\"} 1"),
        "the first scrape is not counted:\n{}",
        second.body
    );
}
