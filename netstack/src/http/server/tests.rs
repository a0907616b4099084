//! The server over `smoltcp::phy::Loopback`, with smoltcp TCP clients in the same socket set
//! and a clock the tests advance.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use serde_json::json;
use smoltcp::iface::SocketHandle;
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use super::*;
use crate::api::Router;
use crate::http::response::Response;
use crate::iface::{Addressing, NetConfig, NetStack, StaticAddress};

const SERVER: Ipv4Address = Ipv4Address::new(192, 168, 69, 1);

/// A handler that says what it got.
fn echo(req: &Request<'_>) -> Response {
    Response::json(
        200,
        &json!({
            "method": req.method.as_str(),
            "path": req.path,
            "query": req.query,
            "body_len": req.body.len(),
        }),
    )
}

struct Client {
    handle: SocketHandle,
    inbox: Vec<u8>,
}

struct Net {
    dev: Loopback,
    stack: NetStack,
    server: HttpServer,
    now: Instant,
    next_port: u16,
}

/// A parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Net {
    fn new(config: ServerConfig) -> Net {
        let mut dev = Loopback::new(Medium::Ethernet);
        let net = NetConfig {
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
            addressing: Addressing::Static(StaticAddress {
                address: Ipv4Cidr::new(SERVER, 24),
                gateway: None,
                dns: Vec::new(),
            }),
            random_seed: 3,
        };
        let now = Instant::from_secs(1000);
        let mut stack = NetStack::new(net, &mut dev, now).unwrap();
        let server = HttpServer::new(config, stack.sockets_mut()).unwrap();
        Net {
            dev,
            stack,
            server,
            now,
            next_port: 49152,
        }
    }

    /// Polls everything `ms` times, one simulated millisecond apart.
    fn run<H: Handler + ?Sized>(&mut self, handler: &mut H, ms: u64) {
        for _ in 0..ms {
            self.server
                .serve(self.now, &mut self.stack, &mut self.dev, handler);
            self.now += Duration::from_millis(1);
        }
    }

    /// A new client connection, established.
    fn connect<H: Handler + ?Sized>(&mut self, handler: &mut H) -> Client {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
            tcp::SocketBuffer::new(vec![0; 128 * 1024]),
        );
        let port = self.next_port;
        self.next_port += 1;
        let (iface, sockets) = self.stack.parts_mut();
        socket
            .connect(iface.context(), (SERVER, self.server.config().port), port)
            .unwrap();
        let client = Client {
            handle: sockets.add(socket),
            inbox: Vec::new(),
        };
        for _ in 0..100 {
            if self.socket(&client).may_send() {
                return client;
            }
            self.run(handler, 1);
        }
        panic!("connection not established");
    }

    fn socket(&mut self, client: &Client) -> &mut tcp::Socket<'static> {
        self.stack
            .sockets_mut()
            .get_mut::<tcp::Socket>(client.handle)
    }

    fn send(&mut self, client: &Client, bytes: &[u8]) {
        assert_eq!(self.socket(client).send_slice(bytes), Ok(bytes.len()));
    }

    /// Moves what the client socket received into its inbox.
    fn collect(&mut self, client: &mut Client) {
        let socket = self
            .stack
            .sockets_mut()
            .get_mut::<tcp::Socket>(client.handle);
        while socket.can_recv() {
            let _ = socket.recv(|data| {
                client.inbox.extend_from_slice(data);
                (data.len(), ())
            });
        }
    }

    /// The next complete response, if one arrived.
    fn reply(&mut self, client: &mut Client) -> Option<Reply> {
        self.collect(client);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&client.inbox).unwrap() {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return None,
        };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        if client.inbox.len() < head_len + length {
            return None;
        }
        let status = response.code.unwrap();
        let body = client.inbox[head_len..head_len + length].to_vec();
        client.inbox.drain(..head_len + length);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Runs until `client` has a response (at most `ms` simulated milliseconds).
    fn await_reply<H: Handler + ?Sized>(
        &mut self,
        handler: &mut H,
        client: &mut Client,
        ms: u64,
    ) -> Reply {
        for _ in 0..ms {
            if let Some(reply) = self.reply(client) {
                return reply;
            }
            self.run(handler, 1);
        }
        panic!("no response within {ms} ms");
    }

    /// Whether the server has closed the client's connection (FIN or RST seen).
    fn closed_by_server(&mut self, client: &Client) -> bool {
        !self.socket(client).may_recv()
    }
}

fn get(path: &str) -> String {
    alloc::format!("GET {path} HTTP/1.1\r\nHost: keel\r\n\r\n")
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut client = net.connect(&mut handler);
    for i in 0..5 {
        net.send(&client, get(&alloc::format!("/r{i}?n={i}")).as_bytes());
        let reply = net.await_reply(&mut handler, &mut client, 100);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json(),
            json!({"method": "GET", "path": alloc::format!("/r{i}"),
                   "query": alloc::format!("n={i}"), "body_len": 0})
        );
    }
    net.send(
        &client,
        b"POST /last HTTP/1.1\r\nHost: k\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    );
    let reply = net.await_reply(&mut handler, &mut client, 100);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.json()["body_len"], 3);
    net.run(&mut handler, 50);
    assert!(net.closed_by_server(&client));
    assert_eq!(net.server.stats().accepted, 1);
    assert_eq!(net.server.stats().handled, 6);
    // The client closes too; the server's socket listens again.
    net.socket(&client).close();
    net.run(&mut handler, 50);
    assert_eq!(net.server.open_connections(), 0);
}

#[test]
fn malformed_request_gets_400_and_others_are_served() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut bad = net.connect(&mut handler);
    let mut good = net.connect(&mut handler);
    net.run(&mut handler, 5);
    net.send(&bad, b"GET /\x01 HTTP/1.1\r\nHost: k\r\n\r\n");
    net.send(&good, get("/fine").as_bytes());
    let reply = net.await_reply(&mut handler, &mut bad, 100);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        reply.json(),
        json!({"error": {"status": 400, "message": "malformed request line"}})
    );
    assert_eq!(net.await_reply(&mut handler, &mut good, 100).status, 200);
    net.run(&mut handler, 20);
    assert!(net.closed_by_server(&bad));
    // The good connection goes on, and new ones are served.
    net.send(&good, get("/again").as_bytes());
    assert_eq!(net.await_reply(&mut handler, &mut good, 100).status, 200);
    let mut third = net.connect(&mut handler);
    net.send(&third, get("/third").as_bytes());
    assert_eq!(net.await_reply(&mut handler, &mut third, 100).status, 200);
    assert_eq!(net.server.stats().rejected, 1);
}

#[test]
fn oversized_body_gets_413_and_a_full_size_one_is_read() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut client = net.connect(&mut handler);
    // Exactly the limit: streamed through a 4 KiB receive window.
    let body = vec![b'x'; 64 * 1024];
    let head = alloc::format!(
        "PUT /big HTTP/1.1\r\nHost: k\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    net.send(&client, head.as_bytes());
    net.send(&client, &body);
    let reply = net.await_reply(&mut handler, &mut client, 2000);
    assert_eq!(
        (reply.status, reply.json()["body_len"].clone()),
        (200, json!(65536))
    );
    // One byte more is refused before any of it is read.
    let head = "PUT /big HTTP/1.1\r\nHost: k\r\nContent-Length: 65537\r\n\r\n";
    net.send(&client, head.as_bytes());
    net.send(&client, &body);
    let reply = net.await_reply(&mut handler, &mut client, 2000);
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.json()["error"]["message"],
        "request body exceeds 65536 bytes"
    );
    net.run(&mut handler, 500);
    assert!(net.closed_by_server(&client));
    // A head over the limit is 431.
    let mut other = net.connect(&mut handler);
    let huge = alloc::format!(
        "GET / HTTP/1.1\r\nHost: k\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    net.send(&other, huge.as_bytes());
    assert_eq!(net.await_reply(&mut handler, &mut other, 500).status, 431);
}

#[test]
fn more_concurrent_connections_than_sixteen() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut clients: Vec<Client> = (0..24).map(|_| net.connect(&mut handler)).collect();
    net.run(&mut handler, 10);
    for (i, client) in clients.iter().enumerate() {
        net.send(client, get(&alloc::format!("/c{i}")).as_bytes());
    }
    net.run(&mut handler, 50);
    assert_eq!(net.server.open_connections(), 24);
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = net.reply(client).expect("every client answered");
        assert_eq!(reply.json()["path"], alloc::format!("/c{i}"));
    }
    assert_eq!(net.server.stats().accepted, 24);
}

#[test]
fn a_full_pool_makes_room_by_closing_the_longest_idle_connection() {
    let config = ServerConfig {
        connections: 16,
        ..ServerConfig::default()
    };
    let mut net = Net::new(config);
    let mut handler = echo;
    let mut idle: Vec<Client> = Vec::new();
    for _ in 0..16 {
        let mut client = net.connect(&mut handler);
        net.send(&client, get("/").as_bytes());
        assert_eq!(net.await_reply(&mut handler, &mut client, 100).status, 200);
        idle.push(client);
        net.run(&mut handler, 10);
    }
    // When the 16th took the last listening socket, the first (longest idle) connection was
    // aborted so that one socket listens again.
    assert_eq!(net.server.open_connections(), 15);
    assert_eq!(net.server.stats().idle_closed, 1);
    // The 17th is served, and the second goes.
    let mut late = net.connect(&mut handler);
    net.send(&late, get("/late").as_bytes());
    let reply = net.await_reply(&mut handler, &mut late, 100);
    assert_eq!(reply.json()["path"], "/late");
    assert_eq!(net.server.stats().idle_closed, 2);
    assert_eq!(net.server.open_connections(), 15);
    // The evicted client finds out when it next sends.
    net.send(&idle[0], get("/").as_bytes());
    net.run(&mut handler, 20);
    assert!(!net.socket(&idle[0]).is_open());
    // The others are still served.
    let mut last = idle.pop().unwrap();
    net.send(&last, get("/still").as_bytes());
    assert_eq!(net.await_reply(&mut handler, &mut last, 100).status, 200);
}

#[test]
fn slow_client_gets_408_without_blocking_others() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut slow = net.connect(&mut handler);
    let mut fast = net.connect(&mut handler);
    let request = get("/slow");
    let mut sent = 0;
    let started = net.now;
    // One byte per simulated second; a fast client's request every second in between.
    let reply = loop {
        if let Some(reply) = net.reply(&mut slow) {
            break reply;
        }
        net.send(&slow, &request.as_bytes()[sent..=sent]);
        sent += 1;
        net.send(&fast, get("/fast").as_bytes());
        let fast_sent = net.now;
        let reply = net.await_reply(&mut handler, &mut fast, 50);
        assert_eq!(reply.status, 200);
        assert!(net.now - fast_sent < Duration::from_millis(20));
        let rest = Duration::from_secs(1) - (net.now - fast_sent);
        net.run(&mut handler, rest.total_millis());
        assert!(
            net.now - started < Duration::from_secs(12),
            "no 408 in time"
        );
    };
    assert_eq!(reply.status, 408);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(
        reply.json()["error"]["message"],
        "request not complete within 10 s"
    );
    assert!(sent >= 9 && sent < request.len(), "{sent}");
    net.run(&mut handler, 50);
    assert!(net.closed_by_server(&slow));
    assert_eq!(net.server.stats().timed_out, 1);
}

#[test]
fn silent_connections_get_408_and_idle_ones_are_closed() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut silent = net.connect(&mut handler);
    let mut idle = net.connect(&mut handler);
    net.send(&idle, get("/").as_bytes());
    assert_eq!(net.await_reply(&mut handler, &mut idle, 100).status, 200);
    // The next timeout is the silent connection's, 10 s after accept.
    let delay = net.server.poll_delay(net.now).unwrap();
    assert!(delay <= Duration::from_secs(10) && delay > Duration::from_secs(9));
    net.run(&mut handler, 10_100);
    assert_eq!(net.reply(&mut silent).unwrap().status, 408);
    assert!(!net.closed_by_server(&idle));
    // An idle keep-alive connection is closed quietly after 30 s.
    net.run(&mut handler, 20_000);
    assert!(net.closed_by_server(&idle));
    assert!(net.reply(&mut idle).is_none());
    for client in [&silent, &idle] {
        net.socket(client).close();
    }
    net.run(&mut handler, 100);
    assert_eq!(net.server.open_connections(), 0);
    assert_eq!(net.server.poll_delay(net.now), None);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut client = net.connect(&mut handler);
    let mut burst = String::new();
    for i in 0..3 {
        burst.push_str(&get(&alloc::format!("/p{i}")));
    }
    burst.push_str("HEAD /h HTTP/1.1\r\nHost: k\r\n\r\n");
    burst.push_str("POST /p3 HTTP/1.1\r\nHost: k\r\nContent-Length: 2\r\n\r\nhi");
    net.send(&client, burst.as_bytes());
    for i in 0..3 {
        let reply = net.await_reply(&mut handler, &mut client, 100);
        assert_eq!(reply.json()["path"], alloc::format!("/p{i}"));
    }
    // HEAD: the length of the body it would have had, and no body.
    net.run(&mut handler, 20);
    net.collect(&mut client);
    let text = String::from_utf8_lossy(&client.inbox).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    let would_be = r#"{"body_len":0,"method":"HEAD","path":"/h","query":null}"#;
    assert!(
        head.contains(&alloc::format!("Content-Length: {}", would_be.len())),
        "{head}"
    );
    assert!(rest.starts_with("HTTP/1.1 200 OK"), "{rest}");
    client.inbox.drain(..head.len() + 4);
    assert_eq!(net.reply(&mut client).unwrap().json()["body_len"], 2);
}

#[test]
fn a_request_followed_by_fin_is_still_answered() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = echo;
    let mut client = net.connect(&mut handler);
    net.send(&client, get("/bye").as_bytes());
    net.socket(&client).close();
    assert_eq!(net.await_reply(&mut handler, &mut client, 100).status, 200);
    net.run(&mut handler, 50);
    assert_eq!(net.server.open_connections(), 0);
    // A partial request and FIN: 400.
    let mut partial = net.connect(&mut handler);
    net.send(&partial, b"GET /half HTTP/1.1\r\nHo");
    net.socket(&partial).close();
    let reply = net.await_reply(&mut handler, &mut partial, 100);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"]["message"],
        "connection closed before the request was complete"
    );
}

#[test]
fn the_api_router_over_tcp() {
    let mut net = Net::new(ServerConfig::default());
    let router = Router::new(["t0ken"]);
    let mut mock = crate::api::mock::Mock::default();
    let mut api = router.bind(&mut mock);
    let mut client = net.connect(&mut api);
    net.send(&client, get("/api/v1/health").as_bytes());
    let reply = net.await_reply(&mut api, &mut client, 100);
    assert_eq!((reply.status, reply.json()), (200, json!({"status": "ok"})));
    net.send(&client, get("/api/v1/vms").as_bytes());
    let reply = net.await_reply(&mut api, &mut client, 100);
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"keel\"")
    );
    let start = "POST /api/v1/modules/0/run HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer t0ken\r\n\
                 Content-Length: 14\r\n\r\n{\"mem_mib\": 8}";
    net.send(&client, start.as_bytes());
    let reply = net.await_reply(&mut api, &mut client, 100);
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("location"), Some("/api/v1/vms/4"));
    // A large response (the OpenAPI document) through an 8 KiB send buffer.
    net.send(&client, get("/api/v1/openapi.json").as_bytes());
    let reply = net.await_reply(&mut api, &mut client, 500);
    assert!(reply.body.len() > 8192, "{}", reply.body.len());
    assert_eq!(reply.json()["openapi"], "3.0.3");
}

#[test]
fn bad_configurations_are_refused() {
    let mut net = Net::new(ServerConfig::default());
    let sockets = net.stack.sockets_mut();
    let bad_port = ServerConfig {
        port: 0,
        ..ServerConfig::default()
    };
    assert_eq!(
        HttpServer::new(bad_port, sockets).unwrap_err(),
        ServerError::InvalidPort
    );
    let none = ServerConfig {
        connections: 0,
        ..ServerConfig::default()
    };
    assert_eq!(
        HttpServer::new(none, sockets).unwrap_err().to_string(),
        "the HTTP server needs at least one connection and non-empty buffers"
    );
}

// WebSocket connections.

/// Upgrades `/ws`; the first message must be `secret`, then messages come back upper-case.
struct WsEcho;

impl Handler for WsEcho {
    fn handle(&mut self, req: &Request<'_>) -> Response {
        match crate::http::websocket::handshake::check(req) {
            Ok(accept) => crate::http::websocket::handshake::switching_protocols(&accept)
                .with_upgrade(crate::http::websocket::Upgrade {
                    target: req.path.to_string(),
                    authorized: false,
                }),
            Err(err) => err.response(),
        }
    }

    fn websocket(&mut self, session: &mut WsSession) {
        while let Some(message) = session.recv() {
            if !session.authorized() {
                if message.bytes() == b"secret" {
                    session.authorize();
                } else {
                    session.close(close::POLICY, "invalid token");
                }
                continue;
            }
            let upper = message.bytes().to_ascii_uppercase();
            assert!(session.send_binary(&upper));
        }
    }
}

const WS_UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: keel\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    crate::http::websocket::frame::encode_masked(true, opcode, payload, [1, 2, 3, 4])
}

impl Net {
    /// Connects and upgrades; returns the client with the 101 consumed.
    fn ws_connect(&mut self, handler: &mut WsEcho) -> Client {
        let mut client = self.connect(handler);
        self.send(&client, WS_UPGRADE.as_bytes());
        for _ in 0..100 {
            self.run(handler, 1);
            self.collect(&mut client);
            if let Some(end) = client.inbox.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(client.inbox[..end].to_vec()).unwrap();
                assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
                assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
                client.inbox.drain(..end + 4);
                return client;
            }
        }
        panic!("no 101");
    }

    /// Runs until the client holds `n` bytes of server frames; returns them.
    fn ws_read(&mut self, handler: &mut WsEcho, client: &mut Client, n: usize) -> Vec<u8> {
        for _ in 0..200 {
            self.collect(client);
            if client.inbox.len() >= n {
                return client.inbox.drain(..n).collect();
            }
            self.run(handler, 1);
        }
        panic!("only {:?} arrived", client.inbox);
    }
}

#[test]
fn websocket_echo_after_the_token_and_two_clients() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = WsEcho;
    let mut a = net.ws_connect(&mut handler);
    let mut b = net.ws_connect(&mut handler);
    // Before the token, nothing is echoed.
    net.send(&a, &masked(1, b"secret"));
    net.send(&a, &masked(2, b"hi"));
    net.send(&b, &masked(1, b"secret"));
    net.send(&b, &masked(9, b"ping!"));
    assert_eq!(net.ws_read(&mut handler, &mut a, 4), b"\x82\x02HI");
    assert_eq!(net.ws_read(&mut handler, &mut b, 7), b"\x8A\x05ping!");
    // An unmasked frame fails b with 1002 and closes it; a goes on.
    net.send(&b, b"\x82\x01x");
    let close = net.ws_read(&mut handler, &mut b, 4);
    assert_eq!((close[0], &close[2..4]), (0x88, &b"\x03\xea"[..]));
    net.run(&mut handler, 20);
    assert!(net.closed_by_server(&b));
    net.send(&a, &masked(2, b"again"));
    assert_eq!(net.ws_read(&mut handler, &mut a, 7), b"\x82\x05AGAIN");
    assert_eq!(net.server.stats().websockets, 2);
}

#[test]
fn websocket_wrong_token_closes_1008_and_client_close_is_answered() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = WsEcho;
    let mut a = net.ws_connect(&mut handler);
    net.send(&a, &masked(1, b"wrong"));
    let frame = net.ws_read(&mut handler, &mut a, 2 + 2 + 13);
    assert_eq!(&frame[..4], b"\x88\x0f\x03\xf0");
    assert_eq!(&frame[4..], b"invalid token");
    // The client completes the handshake; the server closes TCP.
    net.send(&a, &masked(8, &[0x03, 0xf0]));
    net.run(&mut handler, 50);
    assert!(net.closed_by_server(&a));
    net.socket(&a).close();
    net.run(&mut handler, 50);
    assert_eq!(net.server.open_connections(), 0);
    // A client that closes first gets its code back.
    let mut b = net.ws_connect(&mut handler);
    net.send(&b, &masked(8, &[0x03, 0xe8]));
    assert_eq!(net.ws_read(&mut handler, &mut b, 4), b"\x88\x02\x03\xe8");
}

#[test]
fn websocket_client_vanishing_mid_frame_releases_the_socket() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = WsEcho;
    let a = net.ws_connect(&mut handler);
    net.send(&a, &masked(2, &[7; 100])[..20]);
    net.run(&mut handler, 10);
    assert_eq!(net.server.open_connections(), 1);
    net.socket(&a).abort();
    net.run(&mut handler, 20);
    assert_eq!(net.server.open_connections(), 0);
    assert_eq!(net.server.stats().websockets_dropped, 1);
    // A silent, unauthorized one is closed with 1008 after the request timeout.
    let mut b = net.ws_connect(&mut handler);
    net.run(&mut handler, 10_100);
    let frame = net.ws_read(&mut handler, &mut b, 4);
    assert_eq!(&frame[2..4], b"\x03\xf0");
}

#[test]
fn websocket_bad_handshakes_get_400_and_426() {
    let mut net = Net::new(ServerConfig::default());
    let mut handler = WsEcho;
    let mut a = net.connect(&mut handler);
    net.send(
        &a,
        WS_UPGRADE.replace("Version: 13", "Version: 8").as_bytes(),
    );
    let reply = net.await_reply(&mut handler, &mut a, 100);
    assert_eq!(reply.status, 426);
    assert_eq!(reply.header("sec-websocket-version"), Some("13"));
    net.send(
        &a,
        WS_UPGRADE
            .replace("dGhlIHNhbXBsZSBub25jZQ==", "abc")
            .as_bytes(),
    );
    let reply = net.await_reply(&mut handler, &mut a, 100);
    assert_eq!(reply.status, 400);
    assert_eq!(net.server.stats().websockets, 0);
}
