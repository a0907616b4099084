//! keel-netstack: Keel's management-plane networking.
//!
//! # Layering
//!
//! The kernel owns the NIC (virtio-net and friends, each implementing
//! `smoltcp::phy::Device`) and the clock; this crate owns everything above the wire: the
//! TCP/IP interface, the HTTP/1.1 server and the REST router over a `Management` trait the
//! kernel implements. It never reads a clock or touches hardware — time and packets are
//! passed in — so all of it runs in host tests. It is `no_std` + `alloc` for the kernel target,
//! links `std` only for its tests, and contains no `unsafe` code.
//!
//! ```text
//!   kernel: NIC driver (phy::Device), clock, impl api::Management
//!        │ frames, Instant                         ▲ system(), vms(), start_vm(), ...
//!        ▼                                         │
//!   iface::NetStack ── TCP sockets ──▶ http::server::HttpServer ──Request──▶ api::Router
//!   (DHCP/static, ICMP echo)           (pool, timeouts, limits)  ◀─Response─  (auth, JSON)
//! ```
//!
//! # What it owns
//!
//! - [`iface`]: the smoltcp interface on the kernel's NIC: DHCPv4 (or a static address),
//!   ping, the socket set, and [`NetStatus`](iface::NetStatus) for the console and the API.
//! - [`http`]: HTTP/1.1 with hard limits: request-head parsing ([`http::request`]), which any
//!   peer on the network can feed arbitrary bytes, so it never panics and maps every
//!   rejection to a 4xx; responses with JSON error bodies ([`http::response`]); the server
//!   on a pool of TCP sockets with keep-alive and slow-client timeouts ([`http::server`]).
//! - [`switch`]: the software switch joining guest NICs, the appliance's interfaces and the
//!   physical uplink (MAC learning and aging, flooding, bounded per-port queues, a fair
//!   poll order, per-port counters), and [`PortDevice`](switch::PortDevice), the smoltcp
//!   device an appliance interface uses on a port.
//! - [`api`]: the `/api/v1` REST router (bearer tokens, JSON bodies) over the
//!   [`Management`](api::Management) trait, its OpenAPI document, and the web page at `/`.
//! - [`dhcp_server`]: the DHCPv4 server for the internal network (a lease pool behind a UDP
//!   socket on port 67).
//!
//! # The kernel's loop
//!
//! ```no_run
//! # use keel_netstack::{api, http, iface};
//! # use smoltcp::time::Instant;
//! # fn run<D: smoltcp::phy::Device, M: api::Management>(
//! #     nic: &mut D, mgmt: &mut M, mac: smoltcp::wire::EthernetAddress, seed: u64,
//! #     clock: impl Fn() -> Instant, sleep: impl Fn(Option<smoltcp::time::Duration>),
//! # ) {
//! let mut stack = iface::NetStack::new(iface::NetConfig::dhcp(mac, seed), nic, clock()).unwrap();
//! let mut server =
//!     http::HttpServer::new(http::ServerConfig::default(), stack.sockets_mut()).unwrap();
//! let router = api::Router::new(["token-from-the-configuration"]);
//! loop {
//!     let now = clock();
//!     if !server.serve(now, &mut stack, nic, &mut router.bind(mgmt)) {
//!         sleep(server.serve_delay(now, &mut stack)); // or until the NIC interrupts
//!     }
//!     while let Some(event) = stack.take_event() { /* print it on the console */ }
//! }
//! # }
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod api;
pub mod dhcp_server;
pub mod http;
pub mod iface;
pub mod switch;
pub mod tls;
