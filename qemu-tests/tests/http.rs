//! The HTTP management API through QEMU user networking (`hostfwd` to 127.0.0.1 only), with
//! each host NIC driver: virtio-net on `-M q35`, Intel e1000 on `-M pc`, and legacy-only
//! virtio-net (`disable-modern=on`, the I/O-port transport) on `-M pc`. Every test asserts
//! status codes and JSON bodies the appliance sent.

use std::io::Write;
use std::time::{Duration, Instant};

use keel_qemu_tests::http::{self, Response};
use keel_qemu_tests::{Machine, Qemu, artifacts, check};

struct Appliance {
    m: Machine,
    port: u16,
    token: String,
}

fn boot(machine: &str, nic: &str) -> Appliance {
    boot_with_args(machine, |port| {
        vec!["-nic".to_owned(), http::nic_arg(nic, port)]
    })
}

/// Boots with the network arguments `net_args(port)` gives, which must forward
/// 127.0.0.1:`port` to the guest's port 80.
fn boot_with_args(machine: &str, net_args: impl FnOnce(u16) -> Vec<String>) -> Appliance {
    let a = artifacts();
    let port = http::free_port();
    let mut m = Qemu::seabios(&a.image)
        .machine(machine)
        .defmt_elf(&a.elf)
        .args(net_args(port))
        .spawn()
        .unwrap();
    m.expect_banner();
    // Before any request: slirp's own accept queue holds two connections (see
    // `deepen_hostfwd_backlog`), so the API is awaited only after it is deepened.
    let lease = http::await_api(&mut m, port);
    check!(
        m,
        lease.ends_with(", gateway 10.0.2.2"),
        "lease notice: {lease:?}"
    );
    Appliance {
        m,
        port,
        token: a.api_token.clone(),
    }
}

impl Appliance {
    fn get(&self, path: &str, token: Option<&str>) -> Response {
        http::request(self.port, "GET", path, token, None).expect("GET")
    }

    fn send(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        http::request(self.port, method, path, Some(&self.token), body).expect(method)
    }

    fn raw(&self, bytes: &[u8]) -> Response {
        http::raw(self.port, bytes).expect("raw request")
    }
}

fn auth_and_system(app: &mut Appliance, driver: &str) {
    let health = app.get("/api/v1/health", None);
    check!(
        app.m,
        health.status == 200 && health.body.contains("\"ok\""),
        "health: {health:?}"
    );

    let none = app.get("/api/v1/system", None);
    check!(app.m, none.status == 401, "no token: {none:?}");
    check!(
        app.m,
        none.header("www-authenticate").is_some(),
        "401 without WWW-Authenticate"
    );
    check!(
        app.m,
        none.body.contains("\"error\""),
        "401 body is not a JSON error: {}",
        none.body
    );
    let wrong = app.get("/api/v1/system", Some("not-the-token"));
    check!(app.m, wrong.status == 401, "wrong token: {wrong:?}");

    let token = app.token.clone();
    let system = app.get("/api/v1/system", Some(&token));
    check!(app.m, system.status == 200, "system: {system:?}");
    for needle in [
        "\"version\":\"0.1.0\"",
        "AMD-V with NPT",
        "10.0.2.15/24",
        "\"gateway\":\"10.0.2.2\"",
    ] {
        check!(
            app.m,
            system.body.contains(needle),
            "system lacks {needle}: {}",
            system.body
        );
    }
    let net = app.m.command("net");
    check!(
        app.m,
        net.contains(driver) && net.contains("10.0.2.15/24"),
        "net: {net}"
    );

    let spec = app.get("/api/v1/openapi.json", None);
    check!(
        app.m,
        spec.status == 200 && spec.body.contains("\"openapi\""),
        "openapi: {}",
        spec.status
    );
}

fn bad_requests_get_4xx_and_change_nothing(app: &mut Appliance) {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET /api/v1/health HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (
            format!("GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000))
                .into_bytes(),
            431,
        ),
        (
            format!(
                "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 70000\r\n\r\n",
                app.token
            )
            .into_bytes(),
            413,
        ),
        (b"POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 411),
    ];
    for (request, status) in cases {
        let r = app.raw(&request);
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        check!(
            app.m,
            r.status == status,
            "{shown:?} got {} (wanted {status}): {}",
            r.status,
            r.body
        );
        check!(
            app.m,
            r.body.contains("\"error\""),
            "{status} without a JSON error body: {}",
            r.body
        );
    }
    let not_found = app.send("GET", "/api/v1/nothing-here", None);
    check!(
        app.m,
        not_found.status == 404,
        "unknown path: {not_found:?}"
    );
    let method = app.send("DELETE", "/api/v1/system", None);
    check!(
        app.m,
        method.status == 405 && method.header("allow").is_some(),
        "wrong method: {method:?}"
    );
    let bad_json = app.send("POST", "/api/v1/vms", Some("{\"name\": 5"));
    check!(app.m, bad_json.status == 400, "bad JSON: {bad_json:?}");
    let not_a_vm = app.send("POST", "/api/v1/vms", Some("{\"module\":\"hello.bin\"}"));
    check!(
        app.m,
        not_a_vm.status == 422 && not_a_vm.body.contains("\"errors\""),
        "not a VM definition: {not_a_vm:?}"
    );
    let unknown = app.send("POST", "/api/v1/modules/nope.bin/run", None);
    check!(app.m, unknown.status == 404, "unknown module: {unknown:?}");
    // Nothing above created a VM, and the server still answers.
    let vms = app.send("GET", "/api/v1/vms", None);
    check!(
        app.m,
        vms.status == 200 && vms.body.contains("\"vms\":[]"),
        "vms: {vms:?}"
    );
}

fn vm_lifecycle(app: &mut Appliance) {
    let created = app.send(
        "POST",
        "/api/v1/modules/hello.bin/run",
        Some("{\"mem_mib\":16}"),
    );
    check!(
        app.m,
        created.status == 201
            && created.body.contains("\"number\":1")
            && created.header("location") == Some("/api/v1/vms/1"),
        "start: {created:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let console = app.send("GET", "/api/v1/vms/1/console?since=0", None);
        if console.body.contains("hello from a Keel guest") {
            break;
        }
        check!(
            app.m,
            Instant::now() < deadline,
            "no guest output: {console:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let detail = app.send("GET", "/api/v1/vms/1", None);
    check!(
        app.m,
        detail.body.contains("\"state\":\"stopped\""),
        "detail: {}",
        detail.body
    );
    check!(
        app.m,
        detail.body.contains("halted with interrupts disabled"),
        "detail: {}",
        detail.body
    );
    let again = app.send("POST", "/api/v1/vms/1/stop", None);
    check!(
        app.m,
        again.status == 409,
        "stopping a stopped VM: {again:?}"
    );
    let missing = app.send("POST", "/api/v1/vms/9/stop", None);
    check!(
        app.m,
        missing.status == 404,
        "stopping a missing VM: {missing:?}"
    );

    let spinner = app.send("POST", "/api/v1/modules/hostile-spin.bin/run", None);
    check!(
        app.m,
        spinner.status == 201 && spinner.body.contains("\"number\":2"),
        "start: {spinner:?}"
    );
    // Wait until the guest really spins: it has printed its line (so it is past its last
    // exit of its own) and the host's timer has preempted it since, which it counts as an
    // `interrupt` exit. Only then does the health check show the API answers beside it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let preempted_after_its_line = loop {
        let console = app.send("GET", "/api/v1/vms/2/console?since=0", None);
        if console.body.contains("spinning") {
            break interrupt_exits(&app.send("GET", "/api/v1/vms/2", None).body);
        }
        check!(
            app.m,
            Instant::now() < deadline,
            "the spinner never printed its line: {console:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    loop {
        let detail = app.send("GET", "/api/v1/vms/2", None);
        let preemptions = interrupt_exits(&detail.body);
        if detail.body.contains("\"state\":\"running\"") && preemptions > preempted_after_its_line {
            break;
        }
        check!(
            app.m,
            Instant::now() < deadline,
            "the spinner was not preempted while spinning \
             ({preempted_after_its_line} interrupt exits when it printed): {detail:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The API keeps answering while a guest spins.
    let health = app.get("/api/v1/health", None);
    check!(
        app.m,
        health.status == 200,
        "health while a guest spins: {health:?}"
    );
    let stopped = app.send("POST", "/api/v1/vms/2/stop", Some("{\"force\":true}"));
    check!(
        app.m,
        stopped.status == 200 && stopped.body.contains("stopped by the operator"),
        "stop: {stopped:?}"
    );
}

/// The `"interrupt"` count in a VM's JSON `exits` (0 when there is none yet).
fn interrupt_exits(body: &str) -> u64 {
    body.split_once("\"interrupt\":")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn concurrent_and_slow_clients(app: &mut Appliance) {
    let port = app.port;
    // A slow client: one byte per second of a request head.
    let slow = std::thread::spawn(move || {
        let mut s = http::connect(port, Duration::from_secs(30)).expect("connect");
        let start = Instant::now();
        for byte in b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n" {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            if start.elapsed() > Duration::from_secs(14) {
                break;
            }
        }
        (
            http::read_response(&mut s).map(|r| r.status).ok(),
            start.elapsed(),
        )
    });
    // Fifty concurrent clients meanwhile: they reach the guest only because `boot` deepened
    // slirp's accept queue (with its own of two, some waited 20 s and more under load).
    const CLIENTS: usize = 50;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                http::request(port, "GET", "/api/v1/health", None, None).map(|r| r.status)
            })
        })
        .collect();
    let statuses: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    check!(
        app.m,
        ok == CLIENTS,
        "only {ok} of {CLIENTS} concurrent clients got 200: {statuses:?}"
    );
    let (status, took) = slow.join().unwrap();
    check!(
        app.m,
        status == Some(408),
        "slow client got {status:?} after {took:?}"
    );
}

#[test]
fn virtio_net_on_q35() {
    let mut app = boot("q35", "virtio-net-pci");
    auth_and_system(&mut app, "virtio-net");
    concurrent_and_slow_clients(&mut app);
    bad_requests_get_4xx_and_change_nothing(&mut app);
    vm_lifecycle(&mut app);
}

#[test]
fn e1000_on_pc() {
    let mut app = boot("pc", "e1000");
    auth_and_system(&mut app, "e1000");
    concurrent_and_slow_clients(&mut app);
    bad_requests_get_4xx_and_change_nothing(&mut app);
    vm_lifecycle(&mut app);
}

#[test]
fn legacy_virtio_net_on_pc() {
    let mut app = boot_with_args("pc", |port| {
        vec![
            "-device".to_owned(),
            "virtio-net-pci,netdev=n0,disable-modern=on".to_owned(),
            "-netdev".to_owned(),
            format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{}",
                http::GUEST_API_PORT
            ),
        ]
    });
    auth_and_system(&mut app, "virtio-net");
    concurrent_and_slow_clients(&mut app);
    bad_requests_get_4xx_and_change_nothing(&mut app);
    vm_lifecycle(&mut app);
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let app = boot("q35", "e1000");
    let venv = keel_image::workspace_root().join("target/schemathesis-venv/bin/schemathesis");
    let program = if venv.is_file() {
        venv
    } else {
        "schemathesis".into()
    };
    // Over HTTPS. schemathesis cannot pin a certificate and the appliance's names `keel`, not
    // 127.0.0.1: it runs without verification (the pinning is `http`'s and `tls`' job).
    let url = format!("https://127.0.0.1:{}/api/v1/openapi.json", app.port);
    // `positive_data_acceptance` is left out: a request can match the schema and still name a
    // boot module this appliance does not have (404), a VM that does not exist (404) or a
    // definition the configuration's rules refuse (422), which no schema can rule out. Every
    // other check runs, server errors and response-schema conformance included, with the
    // settings in qemu-tests/schemathesis.toml.
    // Run in the machine's temporary directory: schemathesis writes a cache where it runs.
    let config = keel_image::workspace_root().join("qemu-tests/schemathesis.toml");
    let output = std::process::Command::new(&program)
        .current_dir(app.m.dir())
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &url,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
            "--tls-verify",
            "false",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", app.token)])
        .output();
    let m = app.m;
    let output = match output {
        Ok(o) => o,
        Err(e) => m.fail(format!(
            "cannot run {}: {e} (image-builder/install-deps.sh installs it)",
            program.display()
        )),
    };
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    check!(
        m,
        output.status.success(),
        "schemathesis reported problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
