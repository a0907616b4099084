//! `http-bench`: requests/s and p50/p99 latency of `GET /api/v1/system` on Keel, beside
//! the same figures for a Linux guest serving a file of the same bytes, in one run.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin http-bench -- [--requests 300] [--warmup 20]
//! ```
//!
//! Both systems run in the same QEMU configuration: TCG, `-M pc`, `-cpu qemu64,+svm,+npt`,
//! 1024 MiB, 2 CPUs, an Intel e1000 on user networking with
//! `hostfwd=tcp:127.0.0.1:<port>-:80` (traffic only to 127.0.0.1). Keel boots `keel.img`
//! through SeaBIOS and GRUB and takes its address by DHCP. Linux is Debian 12's stock
//! `linux-image-6.1.0-*-amd64` booted with `-kernel`/`-initrd`; the initramfs (written here
//! in the `newc` format) holds `busybox-static`, Debian's `e1000.ko` (built as a module, so
//! `/init` loads it with `insmod`), a static address (10.0.2.15/24, gateway 10.0.2.2) and
//! `busybox httpd -f -p 80 -h /www` serving `/www/api/v1/system`: the body Keel answered,
//! byte for byte.
//!
//! The two `.deb`s are fetched at run time by `keel_qemu_tests::linux_guest` (`apt-get
//! download`, `dpkg -x` into `target/linux-guest/`, kept there; skipped when present).
//!
//! One client for both: N sequential requests on one keep-alive connection after a warm-up,
//! then N requests each on a new connection (latency includes connect). busybox `httpd`
//! answers every request with `Connection: close`, so Linux has no keep-alive row.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_qemu_tests::http::{self, Response};
use keel_qemu_tests::linux_guest::{self, LinuxGuest};
use keel_qemu_tests::{Machine, Qemu, artifacts};

const PATH: &str = "/api/v1/system";
const LINUX_READY: &str = "HTTP-BENCH: httpd up";
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One series of requests.
struct Stats {
    requests: usize,
    seconds: f64,
    /// Sorted latencies in seconds.
    latencies: Vec<f64>,
}

impl Stats {
    fn new(mut latencies: Vec<f64>, seconds: f64) -> Self {
        latencies.sort_by(f64::total_cmp);
        Stats {
            requests: latencies.len(),
            seconds,
            latencies,
        }
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The `q` quantile (nearest rank), in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let rank = ((q * self.requests as f64).ceil() as usize).clamp(1, self.requests);
        self.latencies[rank - 1] * 1e3
    }
}

/// What one system measured.
struct Figures {
    /// An error when the server closes the connection after each response.
    keep_alive: Result<Stats, String>,
    new_connection: Stats,
    body_len: usize,
}

fn request_bytes(token: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: {connection}\r\n\r\n"
    )
    .into_bytes()
}

fn check_ok(r: &Response) -> Result<(), String> {
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("GET {PATH} answered {}: {}", r.status, r.body))
    }
}

fn closes(r: &Response) -> bool {
    r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// `warmup` then `n` sequential requests over one connection.
fn keep_alive(port: u16, token: &str, warmup: usize, n: usize) -> Result<Stats, String> {
    let req = request_bytes(token, true);
    let mut stream = http::connect(port, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for i in 0..warmup + n {
        if i == warmup {
            started = Instant::now();
        }
        let t = Instant::now();
        stream
            .write_all(&req)
            .map_err(|e| format!("request {i}: {e}"))?;
        let r = http::read_response(&mut stream).map_err(|e| format!("response {i}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        check_ok(&r)?;
        if closes(&r) {
            return Err("no keep-alive (server sends Connection: close)".into());
        }
        if i >= warmup {
            latencies.push(elapsed);
        }
    }
    Ok(Stats::new(latencies, started.elapsed().as_secs_f64()))
}

/// `warmup` then `n` requests, each on a new connection.
fn new_connections(port: u16, token: &str, warmup: usize, n: usize) -> Result<Stats, String> {
    let req = request_bytes(token, false);
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for i in 0..warmup + n {
        if i == warmup {
            started = Instant::now();
        }
        let t = Instant::now();
        let r = http::raw(port, &req).map_err(|e| format!("request {i}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        check_ok(&r)?;
        if i >= warmup {
            latencies.push(elapsed);
        }
    }
    Ok(Stats::new(latencies, started.elapsed().as_secs_f64()))
}

fn measure(port: u16, token: &str, warmup: usize, n: usize) -> Result<(Figures, String), String> {
    let first = http::request(port, "GET", PATH, Some(token), None)
        .map_err(|e| format!("first GET {PATH}: {e}"))?;
    check_ok(&first)?;
    let keep_alive = keep_alive(port, token, warmup, n);
    let new_connection = new_connections(port, token, warmup, n)?;
    Ok((
        Figures {
            keep_alive,
            new_connection,
            body_len: first.body.len(),
        },
        first.body,
    ))
}

fn nic(port: u16) -> [String; 2] {
    ["-nic".to_owned(), http::nic_arg("e1000", port)]
}

fn wait(m: &mut Machine, pattern: &str, timeout: Duration) -> Result<(), String> {
    m.wait_for(pattern, timeout)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Boots Keel, measures, and returns the figures and the `/api/v1/system` body.
fn keel(warmup: usize, n: usize) -> Result<(Figures, String), String> {
    let a = artifacts();
    let port = http::free_port();
    let mut m = Qemu::seabios(&a.image)
        .machine("pc")
        .defmt_elf(&a.elf)
        .args(nic(port))
        .spawn()
        .map_err(|e| e.to_string())?;
    wait(
        &mut m,
        "network: DHCP lease 10.0.2.15/24",
        Duration::from_secs(120),
    )?;
    http::wait_until_up(port, "/api/v1/health", Duration::from_secs(30))?;
    let result = measure(port, &a.api_token, warmup, n);
    m.kill();
    result
}

// ---------------------------------------------------------------------------------------
// The Linux guest.

fn initramfs(guest: &LinuxGuest, body: &str) -> Result<Vec<u8>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let init = format!(
        "mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/e1000.ko
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
httpd -f -p 80 -h /www &
echo '{LINUX_READY}'
while true; do sleep 3600; done
"
    );
    let applets = ["mount", "insmod", "ip", "httpd", "sleep"];
    let mut c = linux_guest::busybox_initramfs(&read(&guest.busybox)?, &init, &applets);
    for d in ["www", "www/api", "www/api/v1"] {
        c.dir(d);
    }
    c.file("lib/e1000.ko", 0o644, &read(&guest.e1000)?);
    c.file("www/api/v1/system", 0o644, body.as_bytes());
    Ok(c.finish())
}

/// Boots the Linux guest serving `body` at /api/v1/system and measures it.
fn linux(guest: &LinuxGuest, body: &str, warmup: usize, n: usize) -> Result<Figures, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let initrd = dir.path().join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(guest, body)?).map_err(|e| format!("initramfs: {e}"))?;
    let port = http::free_port();
    let mut q = Qemu::pvh(&guest.kernel)
        .machine("pc")
        .append("console=ttyS0 panic=-1 quiet")
        .args(["-initrd".to_owned(), initrd.display().to_string()])
        .args(nic(port));
    q.defmt_elf = None;
    let mut m = q.spawn().map_err(|e| e.to_string())?;
    wait(&mut m, LINUX_READY, Duration::from_secs(180))?;
    if let Err(e) = http::wait_until_up(port, PATH, Duration::from_secs(30)) {
        return Err(format!("{e}\n{}", m.report()));
    }
    let result = measure(port, "unused-by-httpd", warmup, n).map(|(f, _)| f);
    m.kill();
    result
}

// ---------------------------------------------------------------------------------------

fn print(keel: &Figures, linux: &Figures, guest: &LinuxGuest, warmup: usize, n: usize) {
    println!();
    println!(
        "GET {PATH}: {n} requests after {warmup} warm-up, one host client on 127.0.0.1, QEMU TCG \
         user networking (hostfwd), -M pc, e1000, -cpu qemu64,+svm,+npt, 1024 MiB, 2 CPUs"
    );
    println!(
        "Keel: keel.img via SeaBIOS + GRUB, body {} bytes.  Linux: {} (-kernel) + busybox-static \
         httpd, e1000.ko insmod'ed from the initramfs, same body ({} bytes) as a static file.",
        keel.body_len, guest.kernel_package, linux.body_len
    );
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>12}",
        "", "Keel", "Linux", "Keel/Linux"
    );
    let row = |label: &str, k: Option<f64>, l: Option<f64>| {
        let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let ratio = match (k, l) {
            (Some(k), Some(l)) if l > 0.0 => format!("{:.2}", k / l),
            _ => "n/a".to_owned(),
        };
        println!("{label:<32} {:>12} {:>12} {ratio:>12}", cell(k), cell(l));
    };
    let series = |name: &str, k: Option<&Stats>, l: Option<&Stats>| {
        row(
            &format!("{name}: requests/s"),
            k.map(Stats::per_second),
            l.map(Stats::per_second),
        );
        row(
            &format!("{name}: p50 latency ms"),
            k.map(|s| s.quantile_ms(0.5)),
            l.map(|s| s.quantile_ms(0.5)),
        );
        row(
            &format!("{name}: p99 latency ms"),
            k.map(|s| s.quantile_ms(0.99)),
            l.map(|s| s.quantile_ms(0.99)),
        );
    };
    series(
        "keep-alive",
        keel.keep_alive.as_ref().ok(),
        linux.keep_alive.as_ref().ok(),
    );
    series(
        "new connection",
        Some(&keel.new_connection),
        Some(&linux.new_connection),
    );
    for (who, f) in [("Keel", keel), ("Linux", linux)] {
        if let Err(e) = &f.keep_alive {
            println!("{who} keep-alive: {e}");
        }
    }
}

fn main() -> ExitCode {
    let mut n = 300;
    let mut warmup = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<usize>().ok());
        match (arg.as_str(), value) {
            ("--requests", Some(v)) if v > 0 => n = v,
            ("--warmup", Some(v)) => warmup = v,
            _ => {
                eprintln!("usage: http-bench [--requests 300] [--warmup 20]");
                return ExitCode::from(2);
            }
        }
    }
    let result = (|| -> Result<(), String> {
        // Fetch first so that a missing tool or download fails before any boot.
        let guest = linux_guest::linux_guest().map_err(|e| e.to_string())?;
        eprintln!("http-bench: measuring Keel");
        let (keel, body) = keel(warmup, n).map_err(|e| format!("Keel: {e}"))?;
        eprintln!("http-bench: measuring Linux ({})", guest.kernel_package);
        let linux = linux(&guest, &body, warmup, n).map_err(|e| format!("Linux guest: {e}"))?;
        print(&keel, &linux, &guest, warmup, n);
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
