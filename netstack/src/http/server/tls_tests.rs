//! HTTPS through the server: a rustls (ring) client over the loopback stack, trusting only
//! the appliance's generated certificate.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use std::io::{Read, Write};

use smoltcp::iface::SocketHandle;
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use super::*;
use crate::http::response::Response;
use crate::iface::{Addressing, NetConfig, NetStack, StaticAddress};
use crate::tls::{Identity, TlsServer, random};

const SERVER: Ipv4Address = Ipv4Address::new(192, 168, 69, 1);
const HTTPS: u16 = 443;
const PLAIN: u16 = 80;

fn hello(req: &Request<'_>) -> Response {
    Response::json(
        200,
        &serde_json::json!({ "path": req.path, "token": req.bearer_token }),
    )
}

struct Net {
    dev: Loopback,
    stack: NetStack,
    server: HttpServer,
    now: Instant,
    next_port: u16,
}

impl Net {
    fn new(plain: PlainHttp) -> (Net, Identity) {
        random::seed([9; 32]);
        let identity = Identity::generate("keel", None, 1_760_000_000).unwrap();
        let tls = TlsServer::new(&identity, || Some(1_760_000_000)).unwrap();
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
        let config = ServerConfig {
            port: PLAIN,
            connections: 4,
            ..ServerConfig::default()
        };
        let server = HttpServer::with_tls(config, tls, HTTPS, plain, stack.sockets_mut()).unwrap();
        (
            Net {
                dev,
                stack,
                server,
                now,
                next_port: 49152,
            },
            identity,
        )
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.server
                .serve(self.now, &mut self.stack, &mut self.dev, &mut hello);
            self.now += Duration::from_millis(1);
        }
    }

    fn connect(&mut self, port: u16) -> SocketHandle {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        );
        let local = self.next_port;
        self.next_port += 1;
        let (iface, sockets) = self.stack.parts_mut();
        socket
            .connect(iface.context(), (SERVER, port), local)
            .unwrap();
        let handle = sockets.add(socket);
        for _ in 0..100 {
            if self.socket(handle).may_send() {
                return handle;
            }
            self.run(1);
        }
        panic!("connection not established");
    }

    fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.stack.sockets_mut().get_mut::<tcp::Socket>(handle)
    }

    /// Moves bytes between the rustls client and its socket for `ms` milliseconds.
    fn drive(&mut self, client: &mut rustls::ClientConnection, handle: SocketHandle, ms: u64) {
        for _ in 0..ms {
            let mut out = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() {
                assert_eq!(self.socket(handle).send_slice(&out), Ok(out.len()));
            }
            let mut inbox = Vec::new();
            let socket = self.socket(handle);
            while socket.can_recv() {
                let _ = socket.recv(|data| {
                    inbox.extend_from_slice(data);
                    (data.len(), ())
                });
            }
            if !inbox.is_empty() {
                let mut reader = &inbox[..];
                while !reader.is_empty() {
                    client.read_tls(&mut reader).unwrap();
                    if let Err(e) = client.process_new_packets() {
                        std::eprintln!("client: {e}");
                        return;
                    }
                }
            }
            self.run(1);
        }
    }
}

fn client_for(identity: &Identity) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            identity.cert_der.clone(),
        ))
        .unwrap();
    #[allow(deprecated)] // ring's provider without post-quantum groups: enough here.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    rustls::ClientConnection::new(Arc::new(config), "keel".try_into().unwrap()).unwrap()
}

fn read_all(client: &mut rustls::ClientConnection) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match client.reader().read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn https_request_is_answered_on_a_kept_alive_connection() {
    let (mut net, identity) = Net::new(PlainHttp::Redirect);
    let handle = net.connect(HTTPS);
    let mut client = client_for(&identity);
    for path in ["/one", "/two"] {
        client
            .writer()
            .write_all(
                alloc::format!(
                    "GET {path} HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer t0k\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        net.drive(&mut client, handle, 300);
        let text = read_all(&mut client);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{text} {:?} {:?} {:?}",
            net.server.stats(),
            client.is_handshaking(),
            net.server
                .slots
                .iter()
                .map(|s| (
                    s.tls.as_ref().map(|t| alloc::format!("{t:?}")),
                    alloc::format!("{:?}", s.conn)
                ))
                .collect::<Vec<_>>()
        );
        assert!(
            text.contains(&alloc::format!("\"path\":\"{path}\"")),
            "{text}"
        );
        assert!(text.contains("\"token\":\"t0k\""), "{text}");
    }
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn plain_http_redirects_without_reaching_the_handler() {
    let (mut net, _) = Net::new(PlainHttp::Redirect);
    let handle = net.connect(PLAIN);
    net.socket(handle)
        .send_slice(b"GET /api/v1/vms?x=1 HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nAuthorization: Bearer t0k\r\n\r\n")
        .unwrap();
    net.run(200);
    let mut inbox = Vec::new();
    let socket = net.socket(handle);
    while socket.can_recv() {
        let _ = socket.recv(|d| {
            inbox.extend_from_slice(d);
            (d.len(), ())
        });
    }
    let text = String::from_utf8_lossy(&inbox);
    assert!(text.starts_with("HTTP/1.1 301"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("location: https://10.0.0.5/api/v1/vms?x=1"),
        "{text}"
    );
    assert!(!text.contains("t0k"), "{text}");
}

#[test]
fn garbage_instead_of_a_client_hello_is_dropped_and_others_still_served() {
    let (mut net, identity) = Net::new(PlainHttp::Off);
    let bad = net.connect(HTTPS);
    net.socket(bad).send_slice(&[0xFF; 64]).unwrap();
    net.run(100);
    // Dropped without an answer: reset.
    assert!(!net.socket(bad).can_recv());
    assert!(!net.socket(bad).is_open());
    assert_eq!(net.server.stats().tls_aborted, 1);
    // A stalled handshake is cut off after the handshake timeout.
    let stalled = net.connect(HTTPS);
    net.socket(stalled).send_slice(&[0x16, 0x03, 0x01]).unwrap();
    net.run(HANDSHAKE_TIMEOUT.total_millis() + 200);
    assert_eq!(net.server.stats().tls_aborted, 2);
    let handle = net.connect(HTTPS);
    let mut client = client_for(&identity);
    client
        .writer()
        .write_all(b"GET /ok HTTP/1.1\r\nHost: keel\r\n\r\n")
        .unwrap();
    net.drive(&mut client, handle, 300);
    assert!(read_all(&mut client).starts_with("HTTP/1.1 200"));
}
