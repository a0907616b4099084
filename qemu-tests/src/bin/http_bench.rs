//! `http-bench`: requests/s and p50/p99 latency of `GET /api/v1/system` on Keel over HTTPS
//! and over plain HTTP (one appliance with `management.http = "serve"`), TLS handshakes/s,
//! beside the same figures for a Linux guest serving a file of the same bytes over plain
//! HTTP, in one run.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin http-bench -- [--requests 300] [--warmup 20]
//! ```
//!
//! Both systems run in the same QEMU configuration: TCG, `-M pc`, `-cpu qemu64,+svm,+npt`,
//! 1024 MiB, 2 CPUs, an Intel e1000 on user networking with
//! `hostfwd=tcp:127.0.0.1:<port>-:80` (and 443 for Keel's HTTPS; traffic only to 127.0.0.1). Keel boots `keel.img`
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
//! then N requests each on a new connection (latency includes connect, and over HTTPS the
//! full TLS 1.3 handshake), then for Keel N bare HTTPS handshakes (connect, handshake,
//! close: no request). busybox `httpd` answers every request with `Connection: close`, so
//! Linux has no keep-alive row.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_qemu_tests::http::{self, Response, Scheme};
use keel_qemu_tests::linux_guest::{self, LinuxGuest};
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts};

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
fn keep_alive(
    scheme: Scheme,
    port: u16,
    token: &str,
    warmup: usize,
    n: usize,
) -> Result<Stats, String> {
    let req = request_bytes(token, true);
    let mut stream =
        http::connect_with(scheme, port, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
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
fn new_connections(
    scheme: Scheme,
    port: u16,
    token: &str,
    warmup: usize,
    n: usize,
) -> Result<Stats, String> {
    let req = request_bytes(token, false);
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for i in 0..warmup + n {
        if i == warmup {
            started = Instant::now();
        }
        let t = Instant::now();
        let r = http::raw_with(scheme, port, &req).map_err(|e| format!("request {i}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        check_ok(&r)?;
        if i >= warmup {
            latencies.push(elapsed);
        }
    }
    Ok(Stats::new(latencies, started.elapsed().as_secs_f64()))
}

/// `warmup` then `n` HTTPS handshakes, each on a new connection closed right after it.
fn handshakes(port: u16, warmup: usize, n: usize) -> Result<Stats, String> {
    let mut latencies = Vec::with_capacity(n);
    let mut started = Instant::now();
    for i in 0..warmup + n {
        if i == warmup {
            started = Instant::now();
        }
        let t = Instant::now();
        // `connect_with` returns once the handshake is complete.
        let stream = http::connect_with(Scheme::Https, port, IO_TIMEOUT)
            .map_err(|e| format!("handshake {i}: {e}"))?;
        let elapsed = t.elapsed().as_secs_f64();
        drop(stream);
        if i >= warmup {
            latencies.push(elapsed);
        }
    }
    Ok(Stats::new(latencies, started.elapsed().as_secs_f64()))
}

fn measure(
    scheme: Scheme,
    port: u16,
    token: &str,
    warmup: usize,
    n: usize,
) -> Result<(Figures, String), String> {
    let first = http::request_with(scheme, port, "GET", PATH, Some(token), None)
        .map_err(|e| format!("first GET {PATH}: {e}"))?;
    check_ok(&first)?;
    let keep_alive = keep_alive(scheme, port, token, warmup, n);
    let new_connection = new_connections(scheme, port, token, warmup, n)?;
    Ok((
        Figures {
            keep_alive,
            new_connection,
            body_len: first.body.len(),
        },
        first.body,
    ))
}

/// The Linux guest's `-nic`: `port` on 127.0.0.1 forwarded to its httpd on port 80.
fn linux_nic(port: u16) -> [String; 2] {
    [
        "-nic".to_owned(),
        format!(
            "user,model=e1000,hostfwd=tcp:127.0.0.1:{port}-:{}",
            http::GUEST_PLAIN_PORT
        ),
    ]
}

/// What Keel measured.
struct KeelFigures {
    https: Figures,
    plain: Figures,
    handshakes: Stats,
}

fn wait(m: &mut Machine, pattern: &str, timeout: Duration) -> Result<(), String> {
    m.wait_for(pattern, timeout)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Boots Keel (serving the API over HTTPS and, as `management.http = "serve"`, plain
/// HTTP), measures both, and returns the figures and the `/api/v1/system` body.
fn keel(warmup: usize, n: usize) -> Result<(KeelFigures, String), String> {
    let a = artifacts();
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let image = dir.path().join("keel.img");
    let mut config = keel_image::tls_cert::default_config(&a.api_token);
    config.management.http = keel_config::schema::PlainHttpMode::Serve;
    appliance_image(
        None,
        &config.to_json_pretty(),
        &[],
        &image,
        "the image serving plain HTTP too",
    );
    let (port, plain) = (http::free_port(), http::free_port());
    let mut m = Qemu::seabios(&image)
        .machine("pc")
        .defmt_elf(&a.elf)
        .args([
            "-nic".to_owned(),
            http::nic_arg_with_plain("e1000", port, plain),
        ])
        .spawn()
        .map_err(|e| e.to_string())?;
    wait(
        &mut m,
        "network: DHCP lease 10.0.2.15/24",
        Duration::from_secs(120),
    )?;
    http::wait_until_up(port, "/api/v1/health", Duration::from_secs(30))?;
    let result = (|| {
        let (https, body) = measure(Scheme::Https, port, &a.api_token, warmup, n)?;
        let (plain, _) = measure(Scheme::Http, plain, &a.api_token, warmup, n)?;
        let handshakes = handshakes(port, warmup, n)?;
        Ok((
            KeelFigures {
                https,
                plain,
                handshakes,
            },
            body,
        ))
    })();
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
        .args(linux_nic(port));
    q.defmt_elf = None;
    let mut m = q.spawn().map_err(|e| e.to_string())?;
    wait(&mut m, LINUX_READY, Duration::from_secs(180))?;
    if let Err(e) = http::wait_until_up_with(Scheme::Http, port, PATH, Duration::from_secs(30)) {
        return Err(format!("{e}\n{}", m.report()));
    }
    let result = measure(Scheme::Http, port, "unused-by-httpd", warmup, n).map(|(f, _)| f);
    m.kill();
    result
}

// ---------------------------------------------------------------------------------------

fn print(keel: &KeelFigures, linux: &Figures, guest: &LinuxGuest, warmup: usize, n: usize) {
    println!();
    println!(
        "GET {PATH}: {n} requests after {warmup} warm-up, one host client on 127.0.0.1, QEMU TCG \
         user networking (hostfwd), -M pc, e1000, -cpu qemu64,+svm,+npt, 1024 MiB, 2 CPUs"
    );
    println!(
        "Keel: keel.img via SeaBIOS + GRUB, management.http = \"serve\", body {} bytes; HTTPS is \
         TLS 1.3 with its P-256 certificate.  Linux: {} (-kernel) + busybox-static httpd, \
         e1000.ko insmod'ed from the initramfs, same body ({} bytes) as a static file, plain HTTP.",
        keel.https.body_len, guest.kernel_package, linux.body_len
    );
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "", "Keel HTTPS", "Keel HTTP", "Linux HTTP", "HTTPS/HTTP", "Keel HTTP/Linux"
    );
    let row = |label: &str, tls: Option<f64>, k: Option<f64>, l: Option<f64>| {
        let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "n/a".to_owned(),
        };
        println!(
            "{label:<32} {:>12} {:>12} {:>12} {:>12} {:>14}",
            cell(tls),
            cell(k),
            cell(l),
            ratio(tls, k),
            ratio(k, l)
        );
    };
    let series = |name: &str, tls: Option<&Stats>, k: Option<&Stats>, l: Option<&Stats>| {
        row(
            &format!("{name}: requests/s"),
            tls.map(Stats::per_second),
            k.map(Stats::per_second),
            l.map(Stats::per_second),
        );
        row(
            &format!("{name}: p50 latency ms"),
            tls.map(|s| s.quantile_ms(0.5)),
            k.map(|s| s.quantile_ms(0.5)),
            l.map(|s| s.quantile_ms(0.5)),
        );
        row(
            &format!("{name}: p99 latency ms"),
            tls.map(|s| s.quantile_ms(0.99)),
            k.map(|s| s.quantile_ms(0.99)),
            l.map(|s| s.quantile_ms(0.99)),
        );
    };
    series(
        "keep-alive",
        keel.https.keep_alive.as_ref().ok(),
        keel.plain.keep_alive.as_ref().ok(),
        linux.keep_alive.as_ref().ok(),
    );
    series(
        "new connection",
        Some(&keel.https.new_connection),
        Some(&keel.plain.new_connection),
        Some(&linux.new_connection),
    );
    let h = &keel.handshakes;
    println!(
        "{:<32} {:>12.2}   (p50 {:.2} ms, p99 {:.2} ms per handshake)",
        "HTTPS handshakes/s (no request)",
        h.per_second(),
        h.quantile_ms(0.5),
        h.quantile_ms(0.99)
    );
    for (who, f) in [
        ("Keel HTTPS", &keel.https),
        ("Keel HTTP", &keel.plain),
        ("Linux", linux),
    ] {
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
