//! The management plane over TLS (issue 23), in QEMU (`-cpu qemu64,+svm,+npt,+rdrand`:
//! Keel's random source is RDRAND/RDSEED).
//!
//! - `hostile_clients_and_curl`: one appliance with `keel build`'s certificate. `curl
//!   --cacert` with the exported certificate gets the API; curl without it refuses; a wrong
//!   token gets 401 over TLS; plain HTTP redirects (301) and never reaches the API; TLS 1.2
//!   and older are refused (openssl s_client); sslscan finds no old protocol, weak cipher
//!   or vulnerability; garbage instead of a ClientHello, a truncated
//!   handshake and a client that stops mid-handshake are dropped; 100 concurrent handshakes
//!   while a kept-alive client measures health latency; the console still answers (`net`
//!   shows the fingerprint).
//! - `certificate_is_made_kept_and_replaced`: an image without a certificate: the appliance
//!   makes one at first boot and keeps it across a reboot (same fingerprint); an operator's
//!   pair replaces it through `PUT /api/v1/config` (served at once, and after a reboot); a
//!   mismatched pair is refused with 422 naming the field; the API never shows the key.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_qemu_tests::http::{self, Scheme};
use keel_qemu_tests::{Machine, Qemu, artifacts, check};

/// `-nic` forwarding `https` to 443 and `plain` to 80.
fn nic(https: u16, plain: u16) -> Vec<String> {
    vec![
        "-nic".to_owned(),
        format!(
            "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{https}-:{},hostfwd=tcp:127.0.0.1:{plain}-:{}",
            http::GUEST_API_PORT,
            http::GUEST_PLAIN_PORT
        ),
    ]
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("running curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The fingerprint on the last console line starting with `prefix` (`… SHA-256 AB:CD:…`).
fn console_fingerprint(m: &Machine, prefix: &str) -> Option<String> {
    let text = m.transcript_text();
    let at = text.rfind(prefix)?;
    let line = text[at..].lines().next()?;
    fingerprint_in(line)
}

/// The fingerprint a console line `… SHA-256 AB:CD:…` shows.
fn fingerprint_in(text: &str) -> Option<String> {
    let at = text.rfind("SHA-256 ")? + "SHA-256 ".len();
    Some(text[at..].chars().take(95).collect())
}

#[test]
fn hostile_clients_and_curl() {
    let a = artifacts();
    let (port, plain) = (http::free_port(), http::free_port());
    let mut m = Qemu::seabios(&a.image)
        .defmt_elf(&a.elf)
        .args(nic(port, plain))
        .spawn()
        .unwrap();
    m.expect_banner();
    http::await_api(&mut m, port);
    let fp_line = console_fingerprint(&m, "tls: certificate SHA-256").unwrap_or_default();
    let cert_path = keel_image::output_dir().join("tls-cert.pem");
    let expected_fp = http::fingerprint(&http::build_certificate().expect("keel build's cert"));
    check!(
        m,
        fp_line == expected_fp,
        "console: {fp_line:?}, keel build: {expected_fp}"
    );

    // curl with the exported certificate: the certificate names the hostname `keel`.
    let resolve = format!("keel:{port}:127.0.0.1");
    let url = format!("https://keel:{port}/api/v1/system");
    let auth = format!("Authorization: Bearer {}", a.api_token);
    let cacert = cert_path.display().to_string();
    let (code, out) = curl(&[
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
        "-H",
        &auth,
        &url,
    ]);
    check!(
        m,
        code == 0 && out.contains("\"version\""),
        "curl --cacert: {code} {out}"
    );
    let (code, out) = curl(&["--resolve", &resolve, "-H", &auth, &url]);
    check!(
        m,
        code == 60,
        "curl without --cacert must refuse (60): {code} {out}"
    );
    let wrong = http::request(
        port,
        "GET",
        "/api/v1/system",
        Some("0123456789abcdef0"),
        None,
    )
    .expect("wrong token");
    check!(m, wrong.status == 401, "wrong token: {wrong:?}");

    // Plain HTTP: a redirect, never the API.
    let r = http::request_with(
        Scheme::Http,
        plain,
        "GET",
        "/api/v1/system",
        Some(&a.api_token),
        None,
    )
    .expect("plain GET");
    check!(
        m,
        r.status == 301
            && r.header("location") == Some("https://127.0.0.1/api/v1/system")
            && !r.body.contains("version"),
        "plain HTTP: {r:?}"
    );

    // Old protocols are refused.
    for old in ["-tls1_2", "-tls1_1"] {
        let out = Command::new("openssl")
            .args(["s_client", old, "-connect", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        check!(
            m,
            !out.status.success() || !text.contains("BEGIN CERTIFICATE"),
            "openssl s_client {old} got a session:\n{text}"
        );
    }

    // A real scanner: sslscan finds no protocol below TLS 1.2, no weak cipher, nothing
    // vulnerable.
    let scan_started = Instant::now();
    let scan = Command::new("sslscan")
        .args(["--no-colour", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output();
    match scan {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            eprintln!(
                "sslscan ({:.1} s):\n{text}",
                scan_started.elapsed().as_secs_f64()
            );
            let findings = sslscan_findings(&text);
            check!(
                m,
                out.status.success() && findings.is_empty(),
                "sslscan ({}): {findings:?}\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => m.fail(format!(
            "running sslscan: {e} (image-builder/install-deps.sh installs it)"
        )),
    }

    // Hostile handshakes, each on its own connection to the HTTPS port.
    let mut garbage = http::connect_with(Scheme::Http, port, Duration::from_secs(10)).unwrap();
    garbage.write_all(&[0xFF; 300]).unwrap();
    let mut buf = [0u8; 64];
    let n = garbage.read(&mut buf).unwrap_or(0);
    check!(m, n == 0, "garbage ClientHello got {n} bytes back");
    // A truncated ClientHello (a record header promising more than comes), then silence:
    // the handshake timeout closes it.
    let mut truncated = http::connect_with(Scheme::Http, port, Duration::from_secs(15)).unwrap();
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    let started = Instant::now();
    let n = truncated.read(&mut buf).unwrap_or(0);
    check!(
        m,
        n == 0 && started.elapsed() < Duration::from_secs(12),
        "truncated handshake: {n} bytes after {:?}",
        started.elapsed()
    );
    let health = http::request(port, "GET", "/api/v1/health", None, None).expect("health");
    check!(
        m,
        health.status == 200,
        "health after hostile handshakes: {health:?}"
    );

    // 100 concurrent handshakes while a kept-alive client measures health latency.
    let mut monitor = http::connect(port, Duration::from_secs(30)).unwrap();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (latencies, stop) = (latencies.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                monitor
                    .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: keel\r\n\r\n")
                    .unwrap();
                let r = http::read_response(&mut monitor).map(|r| r.status);
                latencies.lock().unwrap().push((t.elapsed(), r.ok()));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let flood_start = Instant::now();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                // Past the appliance's cap on handshakes in progress a connection is reset:
                // a client retries, as browsers do.
                let mut last = String::new();
                for attempt in 0..10 {
                    match http::connect(port, Duration::from_secs(30)) {
                        Ok(_) => return Ok(attempt),
                        Err(e) => last = e.to_string(),
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(last)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let flood = flood_start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let done = results.iter().filter(|r| r.is_ok()).count();
    let first_try = results.iter().filter(|r| matches!(r, Ok(0))).count();
    let latencies = latencies.lock().unwrap().clone();
    let worst = latencies.iter().map(|(d, _)| *d).max().unwrap_or_default();
    let failed = latencies.iter().filter(|(_, s)| *s != Some(200)).count();
    eprintln!(
        "100 concurrent handshakes: {done} completed ({first_try} at the first try) in {:.2} s \
         ({:.1}/s); kept-alive health during the flood: {} requests, worst {:.0} ms, {failed} \
         failed",
        flood.as_secs_f64(),
        done as f64 / flood.as_secs_f64(),
        latencies.len(),
        worst.as_secs_f64() * 1e3
    );
    check!(
        m,
        failed == 0 && !latencies.is_empty(),
        "health during the flood: {latencies:?}"
    );
    check!(
        m,
        done == 100,
        "only {done} of 100 handshakes completed: {results:?}"
    );

    // The console answers, and `net` shows the certificate.
    let net = m.command("net");
    check!(
        m,
        net.contains(&format!("cert:     SHA-256 {expected_fp}"))
            && net.contains("https:    port 443"),
        "net:\n{net}"
    );
}

/// What is wrong in an sslscan report: an old protocol enabled, a weak cipher accepted, a
/// "vulnerable" verdict, or no TLS 1.3 at all (the scan did not reach the server).
fn sslscan_findings(report: &str) -> Vec<String> {
    let mut findings = Vec::new();
    let mut tls13 = false;
    for line in report.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [protocol, state] = words[..]
            && ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"].contains(&protocol)
            && state != "disabled"
        {
            findings.push(format!("old protocol: {line}"));
        }
        if line.starts_with("TLSv1.3") && line.ends_with("enabled") {
            tls13 = true;
        }
        let weak = ["NULL", "RC4", "DES", "EXP", "ANON", "MD5", "CBC"];
        if (line.starts_with("Accepted") || line.starts_with("Preferred"))
            && weak.iter().any(|w| line.to_ascii_uppercase().contains(w))
        {
            findings.push(format!("weak cipher: {line}"));
        }
        if line.contains("vulnerable") && !line.contains("not vulnerable") {
            findings.push(format!("vulnerable: {line}"));
        }
    }
    if !tls13 {
        findings.push("no \"TLSv1.3 enabled\" line".to_owned());
    }
    findings
}

/// A P-256 pair from openssl in `dir` (files `name`.crt, `name`.key).
fn openssl_pair(dir: &Path, name: &str) -> (String, String) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-subj", "/CN=keel", "-days", "30", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("running openssl");
    assert!(status.status.success(), "{status:?}");
    (
        std::fs::read_to_string(crt).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

fn put_config(port: u16, token: &str, etag: &str, body: &str) -> http::Response {
    let req = format!(
        "PUT /api/v1/config HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\nIf-Match: {etag}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http::raw(port, req.as_bytes()).expect("PUT /api/v1/config")
}

#[test]
fn certificate_is_made_kept_and_replaced() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("keel.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let mut config = keel_image::tls_cert::default_config(&a.api_token);
    config.management.certificate = None;
    keel_image::assemble_image(
        &a.elf,
        &[],
        &cmdline,
        None,
        &config.to_json_pretty(),
        &image,
    )
    .expect("building keel.img");
    let port = http::free_port();
    let boot = |port: u16| -> Machine {
        Qemu::seabios(&image)
            .defmt_elf(&a.elf)
            .writable_disk()
            .args(nic(port, http::free_port()))
            .spawn()
            .unwrap()
    };
    let mut m = boot(port);
    m.expect_banner();
    http::await_api(&mut m, port);
    let made = console_fingerprint(&m, "tls: generated a certificate, SHA-256").unwrap_or_default();
    // Kept across a reboot.
    m.type_line("reboot");
    m.expect("rebooting...");
    m.expect_banner();
    http::await_api(&mut m, port);
    let kept = console_fingerprint(&m, "tls: certificate SHA-256");
    check!(
        m,
        !made.is_empty() && kept.as_deref() == Some(made.as_str()),
        "generated {made}, after reboot {kept:?}"
    );
    let config = http::request(port, "GET", "/api/v1/config", Some(&a.api_token), None).unwrap();
    check!(
        m,
        config.body.contains("BEGIN CERTIFICATE")
            && !config.body.contains("PRIVATE KEY")
            && config.body.contains("withheld"),
        "GET /api/v1/config must show the certificate, never the key: {}",
        config.body
    );

    // A mismatched pair is refused.
    let (crt_a, key_a) = openssl_pair(dir.path(), "a");
    let (_, key_b) = openssl_pair(dir.path(), "b");
    let etag = config.header("etag").unwrap_or_default().to_owned();
    let mut doc: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    doc["management"]["certificate"] = serde_json::json!({"cert_pem": crt_a, "key_pem": key_b});
    let r = put_config(port, &a.api_token, &etag, &doc.to_string());
    check!(
        m,
        r.status == 422
            && r.body.contains("management.certificate")
            && r.body.contains("does not match"),
        "mismatched pair: {r:?}"
    );

    // The operator's pair replaces the appliance's, at once.
    doc["management"]["certificate"] = serde_json::json!({"cert_pem": crt_a, "key_pem": key_a});
    let r = put_config(port, &a.api_token, &etag, &doc.to_string());
    check!(m, r.status == 200, "operator pair: {r:?}");
    http::trust_certificate(&crt_a);
    let operator_fp = http::fingerprint(&http::pem_to_der(&crt_a).unwrap());
    let new_port_view = m.command("net");
    check!(
        m,
        new_port_view.contains(&operator_fp),
        "net after the replacement:\n{new_port_view}"
    );
    m.type_line("reboot");
    m.expect("rebooting...");
    m.expect_banner();
    http::await_api(&mut m, port);
    let kept = console_fingerprint(&m, "tls: certificate SHA-256");
    check!(
        m,
        kept.as_deref() == Some(operator_fp.as_str()) && operator_fp != made,
        "after reboot: {kept:?}, operator {operator_fp}, made {made}"
    );
    let r = http::request(port, "GET", "/api/v1/health", None, None).expect("health");
    check!(m, r.status == 200, "after reboot: {r:?}");
}
