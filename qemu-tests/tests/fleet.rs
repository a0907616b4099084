//! `keel fleet` against two appliances in QEMU, each on its own forwarded port (`hostfwd`
//! to 127.0.0.1 only), in one inventory file: `small` with 512 MiB, `big` with 1024 MiB, both
//! with the flat test guests `counter.bin` and `echo.bin` in their guest store.
//!
//! One run: `fleet status` shows both with the version each one's API reports;
//! `fleet vm create --place auto` lands on `big` (checked through `big`'s API, and absent on
//! `small`); `fleet vm list` shows the VM with its appliance; then `small` is frozen
//! (SIGSTOP: its port still accepts, nothing answers) and `fleet status --timeout 2` must
//! come back within the timeout with `small` unreachable and `big` still right; then
//! `small` is killed (connection refused) and the same holds. Both times are printed.
//! Before that, a VM placed on `small` by name (`--place small --start`) is reached with
//! `keel vm console` (attach, a line echoed, Ctrl-] detaches); and `fleet config set` with
//! `small` down changes `big`, says `small` was not changed, and exits non-zero.
//!
//! The tests run the real `keel` binary (built with `cargo build -p keel-image-builder
//! --bin keel` the first time), so argument parsing, exit status and output are covered.

use keel_qemu_tests::keel_cli::{console_echo_round_trip, keel_binary};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keel_qemu_tests::guests::{self, COUNTER, ECHO};
use keel_qemu_tests::http;
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts, check};
use serde_json::Value;

/// Builds an appliance image into `dir` with `counter.bin` and `echo.bin` in its store.
fn image_with_guests(dir: &Path, name: &str) -> PathBuf {
    let a = artifacts();
    let set = guests::build_guests().expect("building the test guests");
    let store = dir.join(format!("{name}-store"));
    std::fs::create_dir(&store).unwrap();
    for guest in [COUNTER, ECHO] {
        let path = set.path(guest);
        std::fs::copy(&path, store.join(path.file_name().unwrap())).unwrap();
    }
    let image = dir.join(format!("{name}.img"));
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    appliance_image(Some(&store), &config, &[], &image, name);
    image
}

struct Appliance {
    m: Machine,
    /// The forwarded HTTPS port (the tests' requests and `keel fleet`).
    port: u16,
}

fn spawn(image: &Path, memory_mib: u32) -> Appliance {
    let a = artifacts();
    let port = http::free_port();
    let m = Qemu::seabios(image)
        .machine("q35")
        .memory_mib(memory_mib)
        .defmt_elf(&a.elf)
        .writable_disk()
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    Appliance { m, port }
}

impl Appliance {
    fn get(&self, path: &str) -> http::Response {
        http::request(self.port, "GET", path, Some(&artifacts().api_token), None).expect("GET")
    }

    fn json(&mut self, path: &str) -> Value {
        let response = self.get(path);
        let parsed = serde_json::from_str(&response.body);
        check!(self.m, response.status == 200, "GET {path}: {response:?}");
        parsed.unwrap_or_else(|e| self.m.fail(format!("GET {path}: not JSON: {e}")))
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// Runs `keel fleet --fleet INVENTORY ARGS…` and returns its output.
fn fleet(inventory: &Path, args: &[&str]) -> Output {
    Command::new(keel_binary())
        .arg("fleet")
        .arg("--fleet")
        .arg(inventory)
        .args(args)
        // The inventory carries the tokens: a KEEL_TOKEN of the caller must not matter.
        .env_remove("KEEL_TOKEN")
        .output()
        .expect("running keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keel fleet status --json --timeout SECONDS`, timed; panics with keel's output unless it
/// exits 0 with a JSON array.
fn timed_status(inventory: &Path, timeout: &str) -> (Vec<Value>, Duration) {
    let start = Instant::now();
    let out = fleet(inventory, &["status", "--json", "--timeout", timeout]);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "fleet status failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("fleet status --json: {e}: {}", text(&out.stdout)));
    (rows, took)
}

#[test]
fn fleet_status_placement_and_an_appliance_going_down() {
    let dir = tempfile::tempdir().unwrap();
    let small_image = image_with_guests(dir.path(), "small");
    let big_image = image_with_guests(dir.path(), "big");
    keel_binary();
    // Both boot at once: the test waits for one boot, not two.
    let mut small = spawn(&small_image, 512);
    let mut big = spawn(&big_image, 1024);
    for a in [&mut small, &mut big] {
        a.m.expect_banner();
        http::await_api(&mut a.m, a.port);
    }
    let token = &artifacts().api_token;
    let inventory = dir.path().join("fleet.toml");
    std::fs::write(
        &inventory,
        format!(
            "[[appliance]]\nname = \"small\"\nurl = \"{}\"\ntoken = \"{token}\"\n\n\
             [[appliance]]\nname = \"big\"\nurl = \"{}\"\ntoken = \"{token}\"\n",
            small.url(),
            big.url()
        ),
    )
    .unwrap();

    // Both rows, with what each API says about itself.
    let small_system = small.json("/api/v1/system");
    let big_system = big.json("/api/v1/system");
    let (rows, took) = timed_status(&inventory, "3");
    println!("fleet status, both up: {took:?}");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, name, system) in [
        (&rows[0], "small", &small_system),
        (&rows[1], "big", &big_system),
    ] {
        assert_eq!(row["name"], name, "{row}");
        assert_eq!(row["reachable"], true, "{row}");
        assert_eq!(row["version"], system["version"], "{row}");
        assert_eq!(row["cpus"], system["cpus"], "{row}");
        assert_eq!(row["virtualization"], system["virtualization"], "{row}");
    }
    // Both certificates were pinned on first use, next to the inventory.
    let pins = std::fs::read_to_string(dir.path().join("known-appliances")).unwrap_or_default();
    let presented = http::fingerprint(&http::build_certificate().expect("tls-cert.pem"));
    for url in [small.url(), big.url()] {
        assert!(
            pins.contains(&format!("{url} {presented}")),
            "{url} not pinned: {pins:?}"
        );
    }
    let free = |row: &Value| row["memory"]["free_bytes"].as_u64().unwrap();
    assert!(
        free(&rows[1]) > free(&rows[0]),
        "big has more free memory: {rows:?}"
    );
    let table = fleet(&inventory, &["status"]);
    assert!(table.status.success());
    let table = text(&table.stdout);
    println!("{table}");
    for (name, url) in [("small", small.url()), ("big", big.url())] {
        let line = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"));
        assert!(line.contains(&url) && line.contains(" up "), "{line}");
        let version = small_system["version"].as_str().unwrap();
        assert!(line.contains(version), "{line}");
    }

    // What each machine is (SMBIOS): QEMU names itself as the vendor and sets no serial.
    for (row, system) in [(&rows[0], &small_system), (&rows[1], &big_system)] {
        assert_eq!(system["hardware"]["vendor"], "QEMU", "{system}");
        for field in ["vendor", "product", "serial", "bios_version"] {
            assert_eq!(row["hardware"][field], system["hardware"][field], "{row}");
        }
    }
    let wide = fleet(&inventory, &["status", "--wide"]);
    assert!(wide.status.success());
    let wide = text(&wide.stdout);
    println!("{wide}");
    let header = wide.lines().next().unwrap_or("");
    assert!(
        header.contains("VENDOR") && header.contains("SERIAL"),
        "{wide}"
    );
    let product = small_system["hardware"]["product"].as_str().unwrap_or("-");
    for name in ["small", "big"] {
        let line = wide.lines().find(|l| l.starts_with(name)).unwrap_or("");
        assert!(line.contains(" QEMU ") && line.contains(product), "{wide}");
    }

    // Placement: the VM goes where memory is freest, and says so.
    let out = fleet(
        &inventory,
        &[
            "vm",
            "create",
            "ticker",
            "--kernel",
            "counter.bin",
            "--mem",
            "16",
            "--place",
            "auto",
        ],
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    println!("{said}");
    assert!(said.contains("created VM ticker on big"), "{said}");
    assert!(said.contains("most free memory"), "{said}");
    assert_eq!(big.get("/api/v1/vms/ticker").status, 200);
    assert_eq!(small.get("/api/v1/vms/ticker").status, 404);

    // A file no store has: refused, non-zero, each appliance's reason.
    let out = fleet(
        &inventory,
        &[
            "vm",
            "create",
            "nowhere",
            "--kernel",
            "absent.bin",
            "--place",
            "auto",
        ],
    );
    let said = text(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("small: no absent.bin in its store"), "{said}");
    assert!(said.contains("big: no absent.bin in its store"), "{said}");

    // The fleet's VM list names the VM with its appliance.
    let out = fleet(&inventory, &["vm", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let vms: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ticker: Vec<&Value> = vms.iter().filter(|v| v["name"] == "ticker").collect();
    assert_eq!(ticker.len(), 1, "{vms:?}");
    assert_eq!(ticker[0]["appliance"], "big");

    // The other appliance: a VM placed there by name and started, then `keel vm console`
    // attaches to it (a line typed comes back from the echo guest in upper case) and Ctrl-]
    // detaches.
    let out = fleet(
        &inventory,
        &[
            "vm", "create", "echo", "--kernel", "echo.bin", "--mem", "16", "--place", "small",
            "--start",
        ],
    );
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("created VM echo and started it on small"),
        "{said}"
    );
    let mut console = Command::new(keel_binary());
    console
        .args(["vm", "console", "echo", "--appliance", "small", "--fleet"])
        .arg(&inventory)
        .env_remove("KEEL_TOKEN");
    if let Err(e) = console_echo_round_trip(console, "echo") {
        small.m.fail(e);
    }

    // `small` hangs: its forwarded port still accepts (the host kernel completes the
    // handshake) but nothing answers, so only the timeout can end the wait.
    let small_pid = small.m.pid() as libc::pid_t;
    // SAFETY: kill(2) on the emulator this test spawned; no memory is involved.
    assert_eq!(unsafe { libc::kill(small_pid, libc::SIGSTOP) }, 0);
    let (rows, took) = timed_status(&inventory, "2");
    println!("fleet status with `small` hung (SIGSTOP), --timeout 2: {took:?}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(small_pid, libc::SIGCONT) }, 0);
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} with a 2 s timeout"
    );
    assert_eq!(rows[0]["reachable"], false, "{rows:?}");
    assert!(
        rows[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{rows:?}"
    );
    assert_eq!(rows[1]["reachable"], true, "{rows:?}");
    assert_eq!(rows[1]["version"], big_system["version"]);
    assert_eq!(rows[1]["vms_total"], 1, "{rows:?}");
    assert_eq!(
        rows[1]["vms_running"], 0,
        "ticker was defined, not started: {rows:?}"
    );

    // `small` is gone: connection refused, at once.
    small.m.kill();
    let (rows, took) = timed_status(&inventory, "3");
    println!("fleet status with `small` shut down (killed), --timeout 3: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(rows[0]["reachable"], false, "{rows:?}");
    assert_eq!(rows[1]["reachable"], true, "{rows:?}");
    let table = text(&fleet(&inventory, &["status"]).stdout);
    println!("{table}");
    let small_line = table.lines().find(|l| l.starts_with("small")).unwrap();
    assert!(small_line.contains("DOWN"), "{small_line}");

    // A change that cannot happen everywhere exits non-zero and says where it failed.
    let out = fleet(&inventory, &["config", "set", "hostname", "fleet-big"]);
    let summary = text(&out.stdout);
    println!("{summary}");
    assert!(!out.status.success(), "{summary}");
    assert!(summary.contains("big: changed: hostname"), "{summary}");
    assert!(summary.contains("small: not changed:"), "{summary}");
    let config = big.json("/api/v1/config");
    assert_eq!(config["hostname"], "fleet-big");
}
