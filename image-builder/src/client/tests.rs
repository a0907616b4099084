//! Host tests of the client: tables, error rendering, URL checks, and [`ApiClient`] against a
//! one-shot HTTP server on 127.0.0.1 that answers as the appliance does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use super::commands::{leaves, lookup, path_segment, status_text, store_table, vm_table};
use super::console::split_at_detach;
use super::table::{bytes, duration_s, render};
use super::*;

#[test]
fn tables_align_columns_without_trailing_blanks() {
    let out = render(
        &["NAME", "STATE", "SOURCE"],
        &[
            vec!["web".into(), "running".into(), "store:vmlinuz".into()],
            vec!["database".into(), "stopped".into(), "".into()],
        ],
    );
    assert_eq!(
        out,
        "NAME      STATE    SOURCE\n\
         web       running  store:vmlinuz\n\
         database  stopped\n"
    );
}

#[test]
fn sizes_and_durations_read_as_people_write_them() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(16 << 20), "16.0 MiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
    assert_eq!(duration_s(42), "42s");
    assert_eq!(duration_s(7 * 60 + 3), "7m 3s");
    assert_eq!(duration_s(2 * 3600 + 5 * 60), "2h 5m");
    assert_eq!(duration_s(3 * 86_400 + 4 * 3600), "3d 4h");
}

#[test]
fn vm_and_store_tables_show_the_api_fields() {
    let vms = json!({"vms": [
        {"name": "web", "number": 1, "configured": true, "source": "store:vmlinuz",
         "state": "running", "stop_reason": null, "memory_mib": 256, "vcpus": 2,
         "uptime_s": 65, "autostart": true},
        {"name": "db", "number": 2, "configured": true, "source": "store:vmlinuz",
         "state": "stopped", "stop_reason": "guest halted", "memory_mib": 1024, "vcpus": 1,
         "uptime_s": null, "autostart": false}
    ]});
    let table = vm_table(&vms);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME  NUMBER  STATE"), "{table}");
    assert!(
        lines[1].contains("running") && lines[1].contains("1m 5s"),
        "{table}"
    );
    assert!(lines[2].contains("stopped (guest halted)"), "{table}");
    assert!(lines[2].contains("1024 MiB"), "{table}");
    let store = store_table(&json!({"files": [{"name": "echo.bin", "size": 2048}]}));
    assert_eq!(store, "NAME      SIZE     BYTES\necho.bin  2.0 KiB  2048\n");
}

#[test]
fn status_counts_running_vms_and_shows_memory() {
    let system = json!({"hostname": "rack1-a", "version": "0.1.0", "uptime_ms": 61_000,
        "cpus": 2, "memory": {"total_bytes": 1u64 << 30, "free_bytes": 512u64 << 20},
        "virtualization": "AMD-V with NPT",
        "network": {"mac": "52:54:00:12:34:56", "dhcp": true, "address": "10.0.2.15/24",
                    "gateway": null, "dns": [], "lease_events": 1}});
    let vms = json!({"vms": [{"state": "running"}, {"state": "stopped"}, {"state": "idle"}]});
    let text = status_text("http://127.0.0.1:8080", &system, &vms);
    assert!(text.contains("hostname:       rack1-a\n"), "{text}");
    assert!(
        text.contains("memory:         512.0 MiB free of 1.0 GiB"),
        "{text}"
    );
    assert!(
        text.contains("vms:            2 running, 3 defined"),
        "{text}"
    );
    assert!(text.contains("uptime:         1m 1s"), "{text}");
}

#[test]
fn api_errors_carry_message_and_every_path() {
    let body = br#"{"error":{"status":422,"message":"invalid VM definition: memory_mib: must be even (nothing was changed)"},"errors":[{"path":"memory_mib","message":"must be even"},{"path":"","message":"whole"}]}"#;
    let err = api_error(422, body);
    assert_eq!(
        err.to_string(),
        "422 invalid VM definition: memory_mib: must be even (nothing was changed)\n  \
         memory_mib: must be even\n  whole"
    );
    let plain = api_error(
        401,
        br#"{"error":{"status":401,"message":"invalid bearer token"}}"#,
    );
    assert_eq!(plain.to_string(), "401 invalid bearer token");
    // Not the API's shape (a proxy's page): its first line, not a parse error.
    let proxy = api_error(502, b"Bad Gateway\nmore");
    assert_eq!(proxy.to_string(), "502 Bad Gateway");
    assert_eq!(api_error(500, b"").to_string(), "500 (no message)");
}

#[test]
fn base_urls_are_checked() {
    assert_eq!(
        check_base_url("http://10.0.0.5/").unwrap(),
        "http://10.0.0.5"
    );
    assert_eq!(
        check_base_url("http://127.0.0.1:8080").unwrap(),
        "http://127.0.0.1:8080"
    );
    assert_eq!(
        check_base_url("http://[::1]:80").unwrap(),
        "http://[::1]:80"
    );
    assert_eq!(
        check_base_url("https://[::1]:8443/").unwrap(),
        "https://[::1]:8443"
    );
    for (bad, why) in [
        ("10.0.0.5", "not an https:// URL"),
        ("ftp://10.0.0.5", "not an https:// URL"),
        ("https://h/x", "without a path"),
        ("http://", "no host"),
        ("http://h/api/v1", "without a path"),
        ("http://h:0", "port"),
        ("http://h:99999", "port"),
        ("http://h:", "port"),
    ] {
        let err = check_base_url(bad).expect_err(bad).to_string();
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn config_paths_are_looked_up_and_listed() {
    let doc = json!({"hostname": "a", "network": {"dns": ["1.1.1.1", "8.8.8.8"]},
                     "vms": [{"name": "web", "disks": []}]});
    assert_eq!(lookup(&doc, "hostname"), Some(&json!("a")));
    assert_eq!(lookup(&doc, "network.dns[1]"), Some(&json!("8.8.8.8")));
    assert_eq!(lookup(&doc, "vms[0].name"), Some(&json!("web")));
    assert_eq!(lookup(&doc, "vms[1].name"), None);
    assert_eq!(lookup(&doc, "vms[x]"), None);
    assert_eq!(lookup(&doc, "nosuch"), None);
    assert_eq!(
        leaves(&doc),
        [
            ("hostname".to_owned(), "\"a\"".to_owned()),
            ("network.dns[0]".to_owned(), "\"1.1.1.1\"".to_owned()),
            ("network.dns[1]".to_owned(), "\"8.8.8.8\"".to_owned()),
            ("vms[0].disks".to_owned(), "[]".to_owned()),
            ("vms[0].name".to_owned(), "\"web\"".to_owned()),
        ]
    );
}

#[test]
fn vm_names_cannot_escape_their_path_segment() {
    assert_eq!(path_segment("web-1"), "web-1");
    assert_eq!(path_segment("../system"), "..%2Fsystem");
    assert_eq!(path_segment("a?b c"), "a%3Fb%20c");
}

#[test]
fn ctrl_close_bracket_ends_the_input() {
    assert_eq!(split_at_detach(b"ls\r"), (&b"ls\r"[..], false));
    assert_eq!(split_at_detach(b"ab\x1dcd"), (&b"ab"[..], true));
    assert_eq!(split_at_detach(b"\x1d"), (&b""[..], true));
}

#[derive(Parser)]
struct TestCli {
    #[command(subcommand)]
    command: TestCmd,
}

#[derive(clap::Subcommand)]
enum TestCmd {
    Vm(VmArgs),
}

#[test]
fn vm_create_options_make_a_definition() {
    let cli = TestCli::try_parse_from([
        "keel",
        "vm",
        "create",
        "web",
        "--kernel",
        "vmlinuz",
        "--mem",
        "128",
        "--vcpus",
        "2",
        "--disk",
        "file=data.img,readonly",
        "--nic",
        "bridged,mac=52:54:00:00:00:01",
        "--autostart",
        "--appliance",
        "http://h",
    ])
    .unwrap();
    let TestCmd::Vm(args) = cli.command;
    assert_eq!(args.connection.appliance.as_deref(), Some("http://h"));
    let VmCmd::Create(create) = args.command else {
        panic!("not create")
    };
    assert_eq!(
        create.definition(),
        json!({"name": "web", "kernel": "vmlinuz", "memory_mib": 128, "vcpus": 2,
               "disks": [{"file": "data.img", "readonly": true}],
               "nics": [{"network": "bridged", "mac": "52:54:00:00:00:01"}],
               "autostart": true})
    );
    let err = TestCli::try_parse_from(["keel", "vm", "create", "w", "--disk", "data.img"])
        .err()
        .expect("a disk without file= or partition= is refused")
        .to_string();
    assert!(err.contains("file=NAME or partition=NAME"), "{err}");
}

/// Serves one request with `status` and `body`; the request's head and body come back.
fn serve_once(status: &str, headers: &str, body: &str) -> (String, JoinHandle<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        reader.get_mut().write_all(response.as_bytes()).unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    (url, handle)
}

#[test]
fn client_sends_token_and_if_match_and_reads_etag() {
    let (url, server) = serve_once("200 OK", "ETag: \"abc\"\r\n", r#"{"hostname":"x"}"#);
    let client = ApiClient::new(&url, Some("s3cret".into()), Duration::from_secs(5)).unwrap();
    let (value, etag) = client.get_with_etag("/api/v1/config").unwrap();
    assert_eq!(value, json!({"hostname": "x"}));
    assert_eq!(etag.as_deref(), Some("\"abc\""));
    let (head, _) = server.join().unwrap();
    assert!(head.starts_with("GET /api/v1/config HTTP/1.1"), "{head}");
    assert!(head.contains("Authorization: Bearer s3cret"), "{head}");

    let (url, server) = serve_once("200 OK", "", "");
    let client = ApiClient::new(&url, None, Duration::from_secs(5)).unwrap();
    let answer = client
        .send(
            "PUT",
            "/api/v1/config",
            Some(&json!({"a": 1})),
            Some("\"abc\""),
        )
        .unwrap();
    assert_eq!(answer, serde_json::Value::Null);
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("PUT /api/v1/config"), "{head}");
    assert!(head.contains("If-Match: \"abc\""), "{head}");
    assert!(!head.contains("Authorization"), "{head}");
    assert_eq!(body, r#"{"a":1}"#);
}

#[test]
fn client_turns_refusals_into_api_errors() {
    let (url, server) = serve_once(
        "422 Unprocessable Entity",
        "",
        r#"{"error":{"status":422,"message":"invalid VM definition: memory_mib: odd"},"errors":[{"path":"memory_mib","message":"odd"}]}"#,
    );
    let client = ApiClient::new(&url, None, Duration::from_secs(5)).unwrap();
    let err = client
        .send("POST", "/api/v1/vms", Some(&json!({})), None)
        .unwrap_err();
    server.join().unwrap();
    match err {
        ClientError::Api {
            status,
            message,
            errors,
        } => {
            assert_eq!(status, 422);
            assert_eq!(message, "invalid VM definition: memory_mib: odd");
            assert_eq!(errors, ["memory_mib: odd"]);
        }
        other => panic!("not an API error: {other}"),
    }

    let (url, server) = serve_once("200 OK", "", "<html>");
    let client = ApiClient::new(&url, None, Duration::from_secs(5)).unwrap();
    let err = client.get("/api/v1/system").unwrap_err();
    server.join().unwrap();
    assert!(
        matches!(&err, ClientError::BadResponse { url: u, .. } if u.ends_with("/api/v1/system")),
        "{err}"
    );
}

#[test]
fn a_silent_appliance_times_out_naming_the_url() {
    // Accepts the connection and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = ApiClient::new(&url, None, Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = client.get("/api/v1/system").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    assert!(
        matches!(err, ClientError::Unreachable { .. }) && text.contains(&url),
        "{text}"
    );
    drop(listener);
}

#[test]
fn a_post_without_body_says_its_length_is_zero() {
    let (url, server) = serve_once("200 OK", "", r#"{"name":"web","state":"running"}"#);
    let client = ApiClient::new(&url, None, Duration::from_secs(5)).unwrap();
    client
        .send("POST", "/api/v1/vms/web/start", None, None)
        .unwrap();
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /api/v1/vms/web/start"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 0"),
        "{head}"
    );
    assert_eq!(body, "");
}

#[test]
fn connection_options_are_checked_before_any_request() {
    let connection = |appliance: Option<&str>, timeout: f64| Connection {
        appliance: appliance.map(str::to_owned),
        token: Some("t".to_owned()),
        fleet: None,
        json: false,
        timeout,
    };
    let err = connection(None, 10.0).client().unwrap_err().to_string();
    assert!(err.contains("--appliance https://HOST[:PORT]"), "{err}");
    for bad in [0.0, -1.0, f64::NAN, 1e9] {
        let err = connection(Some("http://h"), bad)
            .client()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--timeout must be"), "{bad}: {err}");
    }
    let target = connection(Some("http://h:8080/"), 10.0).target().unwrap();
    assert_eq!(
        target,
        Target {
            name: None,
            url: "http://h:8080".to_owned(),
            token: Some("t".to_owned()),
            fingerprint: None,
            pins: target.pins.clone(),
        }
    );
}

#[test]
fn appliance_names_come_from_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    std::fs::write(
        &path,
        "[[appliance]]\nname = \"rack1-a\"\nurl = \"http://10.0.0.5/\"\ntoken = \"inv\"\n\n\
         [[appliance]]\nname = \"rack1-b\"\nurl = \"http://10.0.0.6:8080\"\n",
    )
    .unwrap();
    let connection = |appliance: &str, token: Option<&str>| Connection {
        appliance: Some(appliance.to_owned()),
        token: token.map(str::to_owned),
        fleet: Some(path.clone()),
        json: false,
        timeout: 10.0,
    };
    let a = connection("rack1-a", None).target().unwrap();
    assert_eq!(a.name.as_deref(), Some("rack1-a"));
    assert_eq!(a.url, "http://10.0.0.5");
    assert_eq!(a.token.as_deref(), Some("inv"));
    // First-use pins go next to the inventory.
    assert_eq!(
        a.pins,
        Some(super::pin::PinStore::new(
            dir.path().join("known-appliances")
        ))
    );
    // --token wins over the inventory's.
    let a = connection("rack1-a", Some("flag")).target().unwrap();
    assert_eq!(a.token.as_deref(), Some("flag"));
    let err = connection("rack9", None).target().unwrap_err().to_string();
    assert!(
        err.contains("no appliance named \"rack9\"") && err.contains("rack1-a, rack1-b"),
        "{err}"
    );
    // The environment's token only when neither gives one.
    let lookup_b = |_: &str| {
        Ok(crate::fleet::InventoryEntry {
            name: "rack1-b".into(),
            url: "http://10.0.0.6:8080".into(),
            token: None,
            fingerprint: None,
        })
    };
    let b = resolve_target(Some("rack1-b"), None, Some("env".into()), lookup_b).unwrap();
    assert_eq!(b.token.as_deref(), Some("env"));
    // A URL is never looked up.
    let url = resolve_target(Some("http://h:1"), None, Some("env".into()), |_| {
        panic!("a URL was looked up")
    })
    .unwrap();
    assert_eq!((url.name, url.url), (None, "http://h:1".to_owned()));
    let missing = Connection {
        fleet: Some(dir.path().join("nosuch.toml")),
        ..connection("rack1-a", None)
    };
    let err = missing.target().unwrap_err().to_string();
    assert!(err.contains("nosuch.toml"), "{err}");
}

/// A one-answer-per-connection HTTPS server with `identity` on 127.0.0.1, for `connections`
/// connections; its URL.
fn https_server(identity: &keel_netstack::tls::cert::Identity, connections: usize) -> String {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    #[allow(deprecated)] // ring's provider, as the client's.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
        )
        .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match std::io::Read::read(&mut tls, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.ends_with(b"\r\n\r\n") {
                let _ = std::io::Write::write_all(
                    &mut tls,
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      Content-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
                );
                tls.conn.send_close_notify();
                let _ = std::io::Write::flush(&mut tls);
            }
        }
    });
    url
}

#[test]
fn https_pins_on_first_use_and_refuses_a_changed_certificate() {
    use super::pin::PinStore;
    let dir = tempfile::tempdir().unwrap();
    let identity = |name: &str| {
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        crate::tls_cert::load_or_create(&out, "keel").unwrap()
    };
    let (first, other) = (identity("a"), identity("b"));
    assert_ne!(first.fingerprint(), other.fingerprint());
    let store = PinStore::new(dir.path().join("known-appliances"));
    let url = https_server(&first, 2);
    let client = ApiClient::pinned(
        &url,
        None,
        Duration::from_secs(5),
        None,
        Some(store.clone()),
    )
    .unwrap();
    assert_eq!(client.get("/x").unwrap()["ok"], true);
    assert_eq!(
        store.get(&url).unwrap().as_deref(),
        Some(first.fingerprint().as_str())
    );
    assert_eq!(client.get("/x").unwrap()["ok"], true);
    // Another certificate at the same address: refused, naming both and the pin file.
    let changed = https_server(&other, 2);
    store.set(&changed, &first.fingerprint()).unwrap();
    let client = ApiClient::pinned(
        &changed,
        None,
        Duration::from_secs(5),
        None,
        Some(store.clone()),
    )
    .unwrap();
    let error = client.get("/x").unwrap_err();
    assert!(
        matches!(error, ClientError::CertificateChanged { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        first.fingerprint(),
        other.fingerprint(),
        store.path().display().to_string(),
    ] {
        assert!(message.contains(&needle), "{needle} not in {message}");
    }
    // The console's WebSocket checks the same pin.
    let ws = super::websocket::WsConsole::connect(
        &changed,
        "/ws",
        None,
        client.tls_config(),
        Duration::from_secs(5),
    );
    assert!(
        ws.is_err_and(|e| e.contains(&other.fingerprint())),
        "WebSocket over a changed certificate"
    );
}
