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
//! # What it owns
//!
//! - [`http`]: HTTP/1.1 message handling with hard limits. Today: parsing a request head
//!   ([`http::request`]), which any peer on the network can feed arbitrary bytes, so it never
//!   panics and maps every rejection to a 4xx status.
//!
//! The smoltcp interface setup (DHCP/static addressing), the connection handling of the HTTP
//! server (bounded buffers, keep-alive) and the `/api/v1` router build on [`http`].
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod http;
