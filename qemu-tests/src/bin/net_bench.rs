//! `net-bench`: TCP throughput and request latency from the host to the Debian network guest,
//! directly under QEMU and as a Keel VM on the `bridged` switch; run by hand, not in CI.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin net-bench -- [--only direct,keel] [--requests 300]
//! ```
//!
//! The guest (`keel_qemu_tests::net_guest`: Debian 12's kernel, `virtio_net`, busybox `httpd`)
//! gets its address by DHCP from QEMU's user network and serves a 64 MiB file and a small
//! page. The host downloads the file twice through `hostfwd` (one TCP connection each; MB/s
//! of the better run and of both) and then makes the small requests, each on a new
//! connection (busybox `httpd` closes after each answer), for p50 and p99 latency. Direct:
//! `-M q35 -cpu qemu64 -m 256 -smp 1 -kernel -initrd`, `virtio-net-pci,disable-legacy=on` on
//! user networking. Keel: `keel.img` on `-M q35 -cpu qemu64,+svm,+npt -m 1024 -smp 2` with a
//! virtio-net uplink on user networking; the guest a 256 MiB, 1-vCPU VM with
//! `[[vms.nics]] network = "bridged"`, leasing 10.0.2.16 after the appliance's 10.0.2.15.
//! Both in QEMU TCG: the ratio compares Keel's nested path with TCG's direct one.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keel_qemu_tests::net_guest::{
    Addressing, BIG_FILE_PATH, NET_INITRAMFS, NET_READY_MARKER, net_cmdline, net_guest,
};
use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, http};

/// The bench file's size.
const BIG_MIB: u32 = 64;

/// How long a guest may take to its ready line.
const BOOT: Duration = Duration::from_secs(600);

/// One run's figures.
#[derive(Clone, Debug)]
struct Figures {
    /// Seconds of each download of the big file.
    downloads: Vec<f64>,
    /// Latency of each small request, sorted.
    latencies: Vec<Duration>,
}

impl Figures {
    fn best_mbs(&self) -> f64 {
        let best = self.downloads.iter().copied().fold(f64::INFINITY, f64::min);
        f64::from(BIG_MIB) * 1.048_576 / best
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// Downloads `path` from 127.0.0.1:`port` on one connection (HTTP/1.0: the server closes
/// at the end); returns the body's length and the seconds from connect to the last byte.
fn download(port: u16, path: &str) -> Result<(usize, f64), String> {
    let started = Instant::now();
    let mut stream = http::connect_with(http::Scheme::Http, port, Duration::from_secs(120))
        .map_err(|e| format!("connecting to port {port}: {e}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut body = 0usize;
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("reading {path} after {body} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if body == 0 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&chunk[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body = head.len() - (end + 4);
                let status = String::from_utf8_lossy(&head[..end]);
                if !status.starts_with("HTTP/1.0 200") && !status.starts_with("HTTP/1.1 200") {
                    return Err(format!("GET {path}: {status}"));
                }
            }
        } else {
            body += n;
        }
    }
    Ok((body, started.elapsed().as_secs_f64()))
}

/// Two downloads of the big file and `requests` small ones from 127.0.0.1:`port`.
fn measure(port: u16, requests: usize) -> Result<Figures, String> {
    http::wait_until_up_with(http::Scheme::Http, port, "/", Duration::from_secs(60))?;
    let mut downloads = Vec::new();
    for _ in 0..2 {
        let (len, secs) = download(port, BIG_FILE_PATH)?;
        if len != BIG_MIB as usize * 1024 * 1024 {
            return Err(format!(
                "{BIG_FILE_PATH}: {len} bytes, expected {BIG_MIB} MiB"
            ));
        }
        downloads.push(secs);
    }
    let mut latencies = Vec::with_capacity(requests);
    for i in 0..requests {
        let t = Instant::now();
        let r = http::request_with(http::Scheme::Http, port, "GET", "/", None, None)
            .map_err(|e| format!("small request {i}: {e}"))?;
        if r.status != 200 {
            return Err(format!("small request {i}: {r:?}"));
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(Figures {
        downloads,
        latencies,
    })
}

fn wait(m: &mut Machine, pattern: impl Into<Pattern>, timeout: Duration) -> Result<(), String> {
    m.wait_for(pattern, timeout)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn direct(requests: usize) -> Result<Figures, String> {
    let g = net_guest();
    let port = http::free_port();
    let mut q = Qemu::pvh(&g.guest.kernel)
        .machine("q35")
        .cpu("qemu64")
        .memory_mib(256)
        .cpus(1)
        .append(&net_cmdline("direct", &Addressing::Dhcp, BIG_MIB))
        .hard_timeout(Duration::from_secs(900))
        .args([
            "-initrd".to_owned(),
            g.initramfs.display().to_string(),
            "-netdev".to_owned(),
            format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80"),
            "-device".to_owned(),
            "virtio-net-pci,netdev=n0,disable-legacy=on".to_owned(),
        ]);
    q.defmt_elf = None;
    let mut m = q.spawn().map_err(|e| e.to_string())?;
    wait(&mut m, format!("{NET_READY_MARKER} direct"), BOOT)?;
    let result = measure(port, requests).map_err(|e| format!("{e}\n{}", m.report()));
    m.kill();
    result
}

fn keel(requests: usize) -> Result<(Figures, String), String> {
    let a = artifacts();
    let g = net_guest();
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let store = dir.path().join("store");
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    std::fs::create_dir_all(&store).map_err(|e| io("store", e))?;
    std::fs::copy(&g.guest.kernel, store.join("vmlinuz")).map_err(|e| io("vmlinuz", e))?;
    std::fs::copy(&g.initramfs, store.join(NET_INITRAMFS)).map_err(|e| io("initramfs", e))?;
    let cmdline = net_cmdline("bench", &Addressing::Dhcp, BIG_MIB);
    let toml = format!(
        "[[vms]]\nname = \"bench\"\nmemory_mib = 256\nvcpus = 1\nkernel = \"vmlinuz\"\n\
         initrd = \"{NET_INITRAMFS}\"\ncmdline = \"{cmdline}\"\nautostart = true\n\
         [[vms.nics]]\nnetwork = \"bridged\"\n"
    );
    let mut config = keel_image::appliance::parse_toml(&toml)
        .map_err(|e| format!("the bench configuration: {e}"))?;
    config.management.api_tokens.push(a.api_token.clone());
    let image = dir.path().join("keel.img");
    appliance_image(
        Some(&store),
        &config.to_json_pretty(),
        &[],
        &image,
        "keel.img for net-bench",
    );
    let (api, port) = (http::free_port(), http::free_port());
    let mut m = Qemu::seabios(&image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .hard_timeout(Duration::from_secs(1200))
        .args([
            "-nic".to_owned(),
            format!(
                "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{api}-:443,\
                 hostfwd=tcp:127.0.0.1:{port}-10.0.2.16:80"
            ),
        ])
        .spawn()
        .map_err(|e| e.to_string())?;
    wait(&mut m, "[bench] lease: 10.0.2.16", BOOT)?;
    wait(&mut m, format!("[bench] {NET_READY_MARKER} bench"), BOOT)?;
    let figures = measure(port, requests).map_err(|e| format!("{e}\n{}", m.report()))?;
    // The guest may redraw the prompt at any time: wait for the NIC line, not a prompt.
    m.type_line("vm info bench");
    let mut info = m
        .wait_for(
            Pattern::regex(r"nic0: [^\r\n]*\r?\n"),
            Duration::from_secs(30),
        )
        .map(|found| found.text)
        .unwrap_or_else(|e| format!("(vm info bench: {e})"));
    // The exit counts follow; the guest is silent by now, so the next prompt ends them.
    if let Ok(rest) = m.wait_for(keel_qemu_tests::PROMPT, Duration::from_secs(30)) {
        info.push_str(&rest.before);
    }
    let info = info.replace('\r', "");
    m.kill();
    Ok((figures, info))
}

fn print(keel: Option<&Figures>, direct: Option<&Figures>, requests: usize) {
    println!();
    println!(
        "Host to the Debian guest's busybox httpd through QEMU user networking (hostfwd on \
         127.0.0.1), QEMU TCG: {BIG_MIB} MiB file downloaded twice (one connection each), then \
         {requests} small requests (a new connection each)."
    );
    println!(
        "Direct: -M q35 -cpu qemu64 -m 256, virtio-net-pci,disable-legacy=on.  Keel: -M q35 \
         -cpu qemu64,+svm,+npt -m 1024 -smp 2, virtio-net uplink; the guest a 256 MiB VM on the \
         bridged switch."
    );
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>12}",
        "", "Keel", "direct", "Keel/direct"
    );
    let row = |label: &str, k: Option<f64>, d: Option<f64>| {
        let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let ratio = match (k, d) {
            (Some(k), Some(d)) if d > 0.0 => format!("{:.2}", k / d),
            _ => "n/a".to_owned(),
        };
        println!("{label:<34} {:>12} {:>12} {ratio:>12}", cell(k), cell(d));
    };
    row(
        "download MB/s (better run)",
        keel.map(Figures::best_mbs),
        direct.map(Figures::best_mbs),
    );
    let runs = |f: Option<&Figures>| {
        f.map_or_else(
            || "n/a".to_owned(),
            |f| {
                f.downloads
                    .iter()
                    .map(|s| format!("{:.1}", f64::from(BIG_MIB) * 1.048_576 / s))
                    .collect::<Vec<_>>()
                    .join(" / ")
            },
        )
    };
    println!(
        "{:<34} {:>12} {:>12}",
        "download MB/s (each run)",
        runs(keel),
        runs(direct)
    );
    row(
        "small request p50 ms",
        keel.map(|f| f.quantile_ms(0.5)),
        direct.map(|f| f.quantile_ms(0.5)),
    );
    row(
        "small request p99 ms",
        keel.map(|f| f.quantile_ms(0.99)),
        direct.map(|f| f.quantile_ms(0.99)),
    );
}

fn main() -> ExitCode {
    let mut requests = 300;
    let mut only: Vec<String> = vec!["direct".into(), "keel".into()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--requests", Some(v)) if v.parse::<usize>().is_ok_and(|n| n > 0) => {
                requests = v.parse().unwrap_or(300);
            }
            ("--only", Some(v))
                if v.split(',').all(|s| s == "direct" || s == "keel") && !v.is_empty() =>
            {
                only = v.split(',').map(str::to_owned).collect();
            }
            _ => {
                eprintln!("usage: net-bench [--only direct,keel] [--requests 300]");
                return ExitCode::from(2);
            }
        }
    }
    let result = (|| -> Result<(), String> {
        let direct = if only.iter().any(|s| s == "direct") {
            eprintln!("net-bench: measuring the guest directly under QEMU");
            Some(direct(requests).map_err(|e| format!("direct: {e}"))?)
        } else {
            None
        };
        let keel = if only.iter().any(|s| s == "keel") {
            eprintln!("net-bench: measuring the guest as a Keel VM");
            let (figures, info) = keel(requests).map_err(|e| format!("Keel: {e}"))?;
            eprintln!("vm info bench after the Keel run:\n{info}");
            Some(figures)
        } else {
            None
        };
        print(keel.as_ref(), direct.as_ref(), requests);
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("net-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
