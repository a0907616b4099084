//! The guest console over a WebSocket (`GET /api/v1/vms/{name}/console/ws`), end to end:
//! `keel.img` with the flat test guest `echo.bin` (it echoes typed letters in upper case) in
//! its store, booted under SeaBIOS on `-M q35` with virtio-net (`hostfwd` to 127.0.0.1), one
//! boot for everything:
//!
//! - bad handshakes: version 8 gets 426 with `Sec-WebSocket-Version: 13`, a key that is not
//!   16 bytes of base64 gets 400, a wrong bearer token 401;
//! - without a token nothing flows; a wrong token message closes with 1008;
//! - two clients (one with the token message, one with a bearer header) watch one console:
//!   both get the history (`echo guest: ready`), what one types (`hi`) reaches the guest and
//!   both see its answer (`HI`); ping gets its pong;
//! - an unmasked frame closes with 1002, a frame announcing 1 MiB with 1009, and a client
//!   that vanishes mid-frame is dropped; the console keeps working for the others; the
//!   close handshake echoes 1000.

use std::time::Duration;

use keel_qemu_tests::http;
use keel_qemu_tests::ws::{self, HandshakeFailure, Received, WsClient};
use keel_qemu_tests::{Qemu, artifacts, check};

const ECHO_VM: &str = r#"{"name":"echo","kernel":"echo.bin","memory_mib":16}"#;
const CONSOLE: &str = "/api/v1/vms/echo/console/ws";
const WAIT: Duration = Duration::from_secs(20);

fn refused(result: Result<WsClient, HandshakeFailure>) -> http::Response {
    match result {
        Err(HandshakeFailure::Refused(r)) => r,
        Err(e) => panic!("handshake failed otherwise: {e:?}"),
        Ok(_) => panic!("a bad handshake was upgraded"),
    }
}

#[test]
fn guest_console_over_websocket() {
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
    let created = http::request(port, "POST", "/api/v1/vms", Some(token), Some(ECHO_VM)).unwrap();
    check!(m, created.status == 201, "create echo: {created:?}");
    let started = http::request(port, "POST", "/api/v1/vms/echo/start", Some(token), None).unwrap();
    check!(m, started.status == 200, "start echo: {started:?}");

    // Bad handshakes are plain HTTP errors.
    let r = refused(WsClient::connect_with(
        port,
        &ws::upgrade_request(CONSOLE, ws::EXAMPLE_KEY, "8", None),
    ));
    check!(
        m,
        r.status == 426 && r.header("sec-websocket-version") == Some("13"),
        "version 8: {r:?}"
    );
    let r = refused(WsClient::connect_with(
        port,
        &ws::upgrade_request(CONSOLE, "c2hvcnQ=", "13", None),
    ));
    check!(
        m,
        r.status == 400 && r.body.contains("Sec-WebSocket-Key"),
        "bad key: {r:?}"
    );
    let r = refused(WsClient::connect(port, CONSOLE, Some("not-the-token")));
    check!(m, r.status == 401, "wrong bearer: {r:?}");

    // No token: nothing flows; a wrong one closes with 1008.
    let mut stranger = WsClient::connect(port, CONSOLE, None).unwrap();
    let nothing = stranger.receive(Duration::from_secs(2));
    check!(
        m,
        nothing
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        "guest bytes flowed before the token: {nothing:?}"
    );
    stranger.send_token("wrong-token").unwrap();
    let closed = stranger.receive(WAIT);
    check!(
        m,
        matches!(&closed, Ok(Received::Close(Some(1008), _))),
        "wrong token: {closed:?}"
    );

    // Two watchers: the token message, and a bearer header.
    let mut first = WsClient::connect(port, CONSOLE, None).unwrap();
    first.send_token(token).unwrap();
    let history = first.read_until("echo guest: ready", WAIT);
    check!(m, history.is_ok(), "first watcher's history: {history:?}");
    let mut second = WsClient::connect(port, CONSOLE, Some(token)).unwrap();
    let history = second.read_until("echo guest: ready", WAIT);
    check!(m, history.is_ok(), "second watcher's history: {history:?}");
    first.send_binary(b"hi\r").unwrap();
    for (who, client) in [("first", &mut first), ("second", &mut second)] {
        let answer = client.read_until("HI", WAIT);
        check!(
            m,
            answer.is_ok(),
            "{who} watcher, the answer to hi: {answer:?}"
        );
    }
    // Echo latency, for the record: one letter typed, its upper case back.
    let mut rounds = Vec::new();
    for letter in *b"abcde" {
        let start = std::time::Instant::now();
        first.send_binary(&[letter]).unwrap();
        let upper = char::from(letter.to_ascii_uppercase()).to_string();
        let echoed = first.read_until(&upper, WAIT);
        check!(m, echoed.is_ok(), "echo of {letter}: {echoed:?}");
        rounds.push(start.elapsed());
    }
    rounds.sort();
    eprintln!(
        "websocket console echo latency: median {:?}, max {:?}",
        rounds[2], rounds[4]
    );
    let caught_up = second.read_until("E", WAIT);
    check!(
        m,
        caught_up.is_ok(),
        "second watcher, the echoes: {caught_up:?}"
    );
    second
        .send_frame(true, 0x9, b"are you there", true)
        .unwrap();
    let pong = second.receive(WAIT);
    check!(
        m,
        matches!(&pong, Ok(Received::Pong(p)) if p == b"are you there"),
        "ping: {pong:?}"
    );

    // Protocol errors close only the offender.
    let mut unmasked = WsClient::connect(port, CONSOLE, Some(token)).unwrap();
    unmasked.send_frame(true, 0x2, b"x", false).unwrap();
    let code = loop {
        match unmasked.receive(WAIT) {
            Ok(Received::Binary(_)) => continue,
            other => break other,
        }
    };
    check!(
        m,
        matches!(&code, Ok(Received::Close(Some(1002), _))),
        "unmasked: {code:?}"
    );
    check!(
        m,
        unmasked.closed_within(WAIT),
        "the server kept the unmasked client open"
    );
    let mut huge = WsClient::connect(port, CONSOLE, None).unwrap();
    // The head of a 1 MiB binary frame, masked: refused from the head alone.
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    huge.send_raw(&head).unwrap();
    let code = huge.receive(WAIT);
    check!(
        m,
        matches!(&code, Ok(Received::Close(Some(1009), _))),
        "1 MiB frame: {code:?}"
    );
    let mut vanishing = WsClient::connect(port, CONSOLE, None).unwrap();
    vanishing.send_token(token).unwrap();
    let half = ws::frame(true, 0x2, b"half a frame", Some([9, 9, 9, 9]));
    vanishing.send_raw(&half[..7]).unwrap();
    vanishing.vanish();

    // The console goes on for the watchers.
    second.send_text("ok\r").unwrap();
    for (who, client) in [("first", &mut first), ("second", &mut second)] {
        let answer = client.read_until("OK", WAIT);
        check!(
            m,
            answer.is_ok(),
            "{who} watcher after the others failed: {answer:?}"
        );
    }
    first
        .send_frame(true, 0x8, &1000u16.to_be_bytes(), true)
        .unwrap();
    let code = loop {
        match first.receive(WAIT) {
            Ok(Received::Binary(_)) => continue,
            other => break other,
        }
    };
    check!(
        m,
        matches!(&code, Ok(Received::Close(Some(1000), _))),
        "close: {code:?}"
    );
    check!(
        m,
        first.closed_within(WAIT),
        "the server did not close TCP after the handshake"
    );
}
