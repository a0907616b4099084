//! [`DhcpServer`]: the [`Responder`] on a smoltcp UDP socket.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, IpEndpoint, Ipv4Address};

use super::protocol::{DhcpServerStats, Responder};
use super::{DhcpServerConfig, Lease};

/// Messages the socket buffers each way; a client sends one at a time and retries, so a
/// handful per guest is plenty.
const QUEUED_MESSAGES: usize = 32;
/// Bytes the socket buffers each way: [`QUEUED_MESSAGES`] messages of a typical 300–600
/// bytes (a larger one that does not fit is dropped by smoltcp, and the client retries).
const QUEUED_BYTES: usize = 16 * 1024;
/// Messages handled per [`DhcpServer::poll`], so a guest flooding DISCOVERs cannot hold up
/// the caller's loop; the rest wait in the socket for the next poll.
const POLL_BUDGET: usize = 16;

/// The DHCP server on an interface: a UDP socket on port 67 in the interface's socket set
/// and the lease pool behind it.
#[derive(Debug)]
pub struct DhcpServer {
    responder: Responder,
    socket: SocketHandle,
}

impl DhcpServer {
    /// Adds a UDP socket bound to port 67 to `sockets` and serves `config` on it. The
    /// interface those sockets belong to should have `config.server` as its address: replies
    /// are sent from the interface's first IPv4 address.
    pub fn new(config: DhcpServerConfig, sockets: &mut SocketSet<'_>) -> DhcpServer {
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; QUEUED_MESSAGES],
                vec![0; QUEUED_BYTES],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; QUEUED_MESSAGES],
                vec![0; QUEUED_BYTES],
            ),
        );
        // `bind` fails only for port 0 or a socket already bound; this one is new and the
        // port is 67.
        let bound = socket.bind(DHCP_SERVER_PORT);
        debug_assert!(
            bound.is_ok(),
            "binding a new UDP socket to port 67: {bound:?}"
        );
        DhcpServer {
            responder: Responder::new(config),
            socket: sockets.add(socket),
        }
    }

    /// Answers the messages that arrived since the last call (at most 16; the rest wait for
    /// the next call). Call it after the interface's poll; the replies go out at the
    /// interface's next polls, one per poll (smoltcp sends one datagram per socket and poll;
    /// `Interface::poll_delay` is zero while some wait).
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, now: Instant) {
        let socket = sockets.get_mut::<udp::Socket>(self.socket);
        let clients = IpEndpoint::new(Ipv4Address::BROADCAST.into(), DHCP_CLIENT_PORT);
        for _ in 0..POLL_BUDGET {
            // Leave requests queued while there is no room for an answer: the client's
            // retries would only add to the backlog.
            if !socket.can_send() {
                break;
            }
            let reply = match socket.recv() {
                Ok((message, _from)) => self.responder.handle(message, now),
                // Nothing queued (`recv` hands out whole datagrams, it never truncates).
                Err(_) => break,
            };
            if let Some(reply) = reply
                && socket.send_slice(&reply, clients).is_err()
            {
                self.responder.count_send_failure();
            }
        }
    }

    /// The bound leases at `now`, in address order.
    pub fn leases(&self, now: Instant) -> Vec<Lease> {
        self.responder.leases(now)
    }

    /// What the server has done since it started.
    pub fn stats(&self) -> DhcpServerStats {
        self.responder.stats()
    }

    /// What it serves.
    pub fn config(&self) -> &DhcpServerConfig {
        self.responder.config()
    }
}
