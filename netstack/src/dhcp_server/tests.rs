//! The DHCP server: the pool and the protocol from message bytes, and smoltcp's own DHCP
//! client getting and renewing a lease from it over a pair of in-memory queues.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
    UdpPacket, UdpRepr,
};

use super::protocol::{
    DECLINE_HOLD_SECS, DhcpServerStats, MAX_POOL_ADDRESSES, MIN_LEASE_SECS, OFFER_HOLD_SECS,
    Responder,
};
use super::*;

const SERVER: Ipv4Address = Ipv4Address::new(10, 99, 0, 1);
const MASK_24: Ipv4Address = Ipv4Address::new(255, 255, 255, 0);
const A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
const B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0b]);
const C: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0c]);

fn ip(last: u8) -> Ipv4Address {
    Ipv4Address::new(10, 99, 0, last)
}

fn config() -> DhcpServerConfig {
    DhcpServerConfig::for_subnet(Ipv4Cidr::new(SERVER, 24)).unwrap()
}

/// A server whose pool is `.100` to `.100 + size - 1`.
fn small_pool(size: u8) -> Responder {
    Responder::new(DhcpServerConfig {
        pool_last: ip(99 + size),
        ..config()
    })
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s as i64)
}

/// A client message as a client would send it.
#[derive(Clone, Copy)]
struct Msg {
    kind: DhcpMessageType,
    mac: EthernetAddress,
    xid: u32,
    ciaddr: Ipv4Address,
    requested: Option<Ipv4Address>,
    server: Option<Ipv4Address>,
}

impl Msg {
    fn new(kind: DhcpMessageType, mac: EthernetAddress) -> Msg {
        Msg {
            kind,
            mac,
            xid: 0x1234_5678,
            ciaddr: Ipv4Address::UNSPECIFIED,
            requested: None,
            server: None,
        }
    }
    fn requested(self, address: Ipv4Address) -> Msg {
        Msg {
            requested: Some(address),
            ..self
        }
    }
    fn server(self, server: Ipv4Address) -> Msg {
        Msg {
            server: Some(server),
            ..self
        }
    }
    fn ciaddr(self, address: Ipv4Address) -> Msg {
        Msg {
            ciaddr: address,
            ..self
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type: self.kind,
            transaction_id: self.xid,
            secs: 0,
            client_hardware_address: self.mac,
            client_ip: self.ciaddr,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: self.requested,
            client_identifier: Some(self.mac),
            server_identifier: self.server,
            parameter_request_list: Some(&[1, 3, 6]),
            dns_servers: None,
            max_size: Some(1432),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut bytes = vec![0; repr.buffer_len()];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut bytes[..]))
            .unwrap();
        bytes
    }
}

fn discover(mac: EthernetAddress) -> Msg {
    Msg::new(DhcpMessageType::Discover, mac)
}

/// REQUEST in the SELECTING state: our server identifier and the offered address.
fn select(mac: EthernetAddress, address: Ipv4Address) -> Msg {
    Msg::new(DhcpMessageType::Request, mac)
        .requested(address)
        .server(SERVER)
}

/// REQUEST in the RENEWING state: `ciaddr`, no server identifier.
fn renew(mac: EthernetAddress, address: Ipv4Address) -> Msg {
    Msg::new(DhcpMessageType::Request, mac).ciaddr(address)
}

/// REQUEST in the INIT-REBOOT state: the remembered address, no server identifier.
fn reboot(mac: EthernetAddress, address: Ipv4Address) -> Msg {
    Msg::new(DhcpMessageType::Request, mac).requested(address)
}

/// What a reply says, copied out of the parsed message.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    kind: DhcpMessageType,
    xid: u32,
    mac: EthernetAddress,
    yiaddr: Ipv4Address,
    ciaddr: Ipv4Address,
    server: Option<Ipv4Address>,
    mask: Option<Ipv4Address>,
    router: Option<Ipv4Address>,
    dns: bool,
    lease: Option<u32>,
    renewal: Option<u32>,
    rebinding: Option<u32>,
    len: usize,
}

fn parse(bytes: &[u8]) -> Reply {
    let packet = DhcpPacket::new_checked(bytes).unwrap();
    let repr = DhcpRepr::parse(&packet).unwrap();
    Reply {
        kind: repr.message_type,
        xid: repr.transaction_id,
        mac: repr.client_hardware_address,
        yiaddr: repr.your_ip,
        ciaddr: repr.client_ip,
        server: repr.server_identifier,
        mask: repr.subnet_mask,
        router: repr.router,
        dns: repr.dns_servers.is_some(),
        lease: repr.lease_duration,
        renewal: repr.renew_duration,
        rebinding: repr.rebind_duration,
        len: bytes.len(),
    }
}

fn send(server: &mut Responder, msg: Msg, now: Instant) -> Option<Reply> {
    server.handle(&msg.bytes(), now).map(|bytes| parse(&bytes))
}

/// Sends `msg` and expects a reply of `kind`; returns its `yiaddr`.
fn expect(server: &mut Responder, msg: Msg, now: Instant, kind: DhcpMessageType) -> Ipv4Address {
    let reply = send(server, msg, now).unwrap_or_else(|| panic!("no reply, expected {kind:?}"));
    assert_eq!(reply.kind, kind, "{reply:?}");
    assert_eq!(reply.server, Some(server.config().server.address()));
    assert_eq!(reply.mac, msg.mac);
    assert_eq!(reply.xid, msg.xid);
    reply.yiaddr
}

/// DISCOVER then REQUEST: the bound address.
fn lease(server: &mut Responder, mac: EthernetAddress, now: Instant) -> Ipv4Address {
    let offered = expect(server, discover(mac), now, DhcpMessageType::Offer);
    let acked = expect(server, select(mac, offered), now, DhcpMessageType::Ack);
    assert_eq!(acked, offered);
    acked
}

fn leased(server: &Responder, now: Instant) -> Vec<(EthernetAddress, Ipv4Address)> {
    server
        .leases(now)
        .iter()
        .map(|lease| (lease.mac, lease.address))
        .collect()
}

#[test]
fn for_subnet_picks_host_numbers_100_to_199() {
    let c = config();
    assert_eq!(
        (c.server, c.pool_first, c.pool_last, c.lease_secs),
        (Ipv4Cidr::new(SERVER, 24), ip(100), ip(199), 3600)
    );
    let wide =
        DhcpServerConfig::for_subnet(Ipv4Cidr::new(Ipv4Address::new(172, 16, 5, 9), 16)).unwrap();
    assert_eq!(
        (wide.pool_first, wide.pool_last),
        (
            Ipv4Address::new(172, 16, 0, 100),
            Ipv4Address::new(172, 16, 0, 199)
        )
    );
    // A /25 has host numbers 1 to 126.
    let half = DhcpServerConfig::for_subnet(Ipv4Cidr::new(ip(129), 25)).unwrap();
    assert_eq!((half.pool_first, half.pool_last), (ip(228), ip(254)));
    // At the top of the address space.
    let top = DhcpServerConfig::for_subnet(Ipv4Cidr::new(Ipv4Address::new(255, 255, 255, 1), 25))
        .unwrap();
    assert_eq!(top.pool_last, Ipv4Address::new(255, 255, 255, 126));
    let top = Ipv4Cidr::new(Ipv4Address::new(255, 255, 255, 253), 30);
    assert!(DhcpServerConfig::for_subnet(top).is_err());
    for prefix in [26, 30, 31, 32] {
        let cidr = Ipv4Cidr::new(SERVER, prefix);
        let err = DhcpServerConfig::for_subnet(cidr).unwrap_err();
        assert_eq!(err, DhcpConfigError::SubnetTooSmall(cidr));
        assert!(err.to_string().contains("/25 or shorter"), "{err}");
    }
    for address in [ip(0), ip(255)] {
        let cidr = Ipv4Cidr::new(address, 24);
        let err = DhcpServerConfig::for_subnet(cidr).unwrap_err();
        assert_eq!(err, DhcpConfigError::NotAHostAddress(cidr));
        assert!(err.to_string().contains("not a host address"), "{err}");
    }
}

#[test]
fn discover_and_request_give_the_lowest_free_address() {
    let mut server = Responder::new(config());
    let offer = send(&mut server, discover(A), secs(0)).unwrap();
    assert_eq!(
        offer,
        Reply {
            kind: DhcpMessageType::Offer,
            xid: 0x1234_5678,
            mac: A,
            yiaddr: ip(100),
            ciaddr: Ipv4Address::UNSPECIFIED,
            server: Some(SERVER),
            mask: Some(MASK_24),
            // The internal network has no way out: no router, no DNS.
            router: None,
            dns: false,
            lease: Some(3600),
            renewal: Some(1800),
            rebinding: Some(3150),
            len: 300,
        }
    );
    // An offer is not a lease yet.
    assert!(server.leases(secs(0)).is_empty());
    let ack = send(&mut server, select(A, ip(100)), secs(1)).unwrap();
    assert_eq!((ack.kind, ack.yiaddr), (DhcpMessageType::Ack, ip(100)));
    assert_eq!((ack.mask, ack.lease), (Some(MASK_24), Some(3600)));
    assert_eq!(
        server.leases(secs(11)),
        vec![Lease {
            mac: A,
            address: ip(100),
            expires_in_secs: 3590
        }]
    );
    assert_eq!(lease(&mut server, B, secs(2)), ip(101));
    assert_eq!(leased(&server, secs(2)), vec![(A, ip(100)), (B, ip(101))]);
    assert_eq!(
        server.stats(),
        DhcpServerStats {
            received: 4,
            offers: 2,
            acks: 2,
            ..DhcpServerStats::default()
        }
    );
}

#[test]
fn the_address_a_client_asks_for_is_offered_when_free() {
    let mut server = Responder::new(config());
    let asked = discover(A).requested(ip(150));
    assert_eq!(
        expect(&mut server, asked, secs(0), DhcpMessageType::Offer),
        ip(150)
    );
    expect(
        &mut server,
        select(A, ip(150)),
        secs(0),
        DhcpMessageType::Ack,
    );
    // Taken, outside the pool, the server's own or another network's: the lowest free one.
    for wanted in [ip(150), ip(20), SERVER, Ipv4Address::new(192, 168, 1, 50)] {
        let asked = discover(B).requested(wanted);
        assert_eq!(
            expect(&mut server, asked, secs(1), DhcpMessageType::Offer),
            ip(100)
        );
    }
}

#[test]
fn a_client_keeps_its_address_and_gets_it_back_after_a_release() {
    let mut server = Responder::new(config());
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    // A client that lost track of its lease is offered the same address, still leased.
    assert_eq!(
        expect(&mut server, discover(A), secs(5), DhcpMessageType::Offer),
        ip(100)
    );
    assert_eq!(leased(&server, secs(5)), vec![(A, ip(100))]);
    let release = Msg::new(DhcpMessageType::Release, A)
        .ciaddr(ip(100))
        .server(SERVER);
    assert_eq!(send(&mut server, release, secs(10)), None);
    assert!(server.leases(secs(10)).is_empty());
    assert_eq!(server.stats().releases, 1);
    // The released address is A's previous one: a new client gets a never-used address...
    assert_eq!(lease(&mut server, B, secs(11)), ip(101));
    // ...and A gets its own back.
    assert_eq!(lease(&mut server, A, secs(12)), ip(100));
}

#[test]
fn a_request_for_another_server_frees_our_offer() {
    let mut server = small_pool(1);
    assert_eq!(
        expect(&mut server, discover(A), secs(0), DhcpMessageType::Offer),
        ip(100)
    );
    // While the offer is held for A, B gets nothing.
    assert_eq!(send(&mut server, discover(B), secs(1)), None);
    let elsewhere =
        select(A, Ipv4Address::new(10, 99, 0, 77)).server(Ipv4Address::new(10, 99, 0, 2));
    assert_eq!(send(&mut server, elsewhere, secs(2)), None);
    assert_eq!(
        expect(&mut server, discover(B), secs(3), DhcpMessageType::Offer),
        ip(100)
    );
}

#[test]
fn requests_for_someone_elses_address_are_refused() {
    let mut server = Responder::new(config());
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    // SELECTING: A's address, an address outside the pool, the server's own.
    for wanted in [ip(100), ip(5), SERVER, Ipv4Address::new(192, 168, 1, 50)] {
        let reply = send(&mut server, select(B, wanted), secs(1)).unwrap();
        assert_eq!(reply.kind, DhcpMessageType::Nak, "{wanted}");
        assert_eq!(
            (reply.yiaddr, reply.mask, reply.lease),
            (Ipv4Address::UNSPECIFIED, None, None)
        );
        assert_eq!(reply.server, Some(SERVER));
    }
    // INIT-REBOOT: A's address, or one of another network (the client moved here).
    for wanted in [ip(100), Ipv4Address::new(10, 0, 2, 15)] {
        expect(
            &mut server,
            reboot(B, wanted),
            secs(1),
            DhcpMessageType::Nak,
        );
    }
    // RENEWING with A's address: NAK; with another network's: not ours to answer.
    expect(
        &mut server,
        renew(B, ip(100)),
        secs(1),
        DhcpMessageType::Nak,
    );
    assert_eq!(
        send(
            &mut server,
            renew(B, Ipv4Address::new(10, 0, 2, 15)),
            secs(1)
        ),
        None
    );
    assert_eq!(leased(&server, secs(1)), vec![(A, ip(100))]);
    assert_eq!(server.stats().naks, 7);
}

#[test]
fn renewing_and_rebooting_extend_the_clients_lease() {
    let mut server = Responder::new(config());
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    let ack = send(&mut server, renew(A, ip(100)), secs(1800)).unwrap();
    assert_eq!(
        (ack.kind, ack.yiaddr, ack.ciaddr),
        (DhcpMessageType::Ack, ip(100), ip(100))
    );
    assert_eq!(server.leases(secs(1800))[0].expires_in_secs, 3600);
    expect(
        &mut server,
        reboot(A, ip(100)),
        secs(2000),
        DhcpMessageType::Ack,
    );
    assert_eq!(server.leases(secs(2000))[0].expires_in_secs, 3600);
}

#[test]
fn a_client_from_before_a_restart_keeps_its_free_address() {
    // The server forgot its leases (the appliance restarted): a client renewing or rebooting
    // with a free pool address keeps it.
    let mut server = Responder::new(config());
    expect(
        &mut server,
        renew(A, ip(130)),
        secs(0),
        DhcpMessageType::Ack,
    );
    expect(
        &mut server,
        reboot(B, ip(131)),
        secs(0),
        DhcpMessageType::Ack,
    );
    assert_eq!(leased(&server, secs(0)), vec![(A, ip(130)), (B, ip(131))]);
}

#[test]
fn leases_expire_and_their_addresses_are_reused() {
    let mut server = small_pool(1);
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    assert_eq!(server.leases(secs(3599))[0].expires_in_secs, 1);
    assert_eq!(send(&mut server, discover(B), secs(3599)), None);
    assert!(server.leases(secs(3600)).is_empty());
    assert_eq!(lease(&mut server, B, secs(3600)), ip(100));
    // A comes back too late: its address is B's now.
    expect(
        &mut server,
        renew(A, ip(100)),
        secs(3700),
        DhcpMessageType::Nak,
    );
    // A lapsed lease not taken by anyone is renewed.
    let mut server = small_pool(1);
    lease(&mut server, A, secs(0));
    expect(
        &mut server,
        renew(A, ip(100)),
        secs(5000),
        DhcpMessageType::Ack,
    );
}

#[test]
fn an_exhausted_pool_offers_nothing_and_counts_it() {
    let mut server = small_pool(2);
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    assert_eq!(
        expect(&mut server, discover(B), secs(0), DhcpMessageType::Offer),
        ip(101)
    );
    assert_eq!(send(&mut server, discover(C), secs(1)), None);
    assert_eq!(send(&mut server, discover(C), secs(2)), None);
    assert_eq!(server.stats().pool_exhausted, 2);
    // B never took its offer: once the hold ends, C gets the address.
    assert_eq!(
        expect(
            &mut server,
            discover(C),
            secs(OFFER_HOLD_SECS),
            DhcpMessageType::Offer
        ),
        ip(101)
    );
    // ...and B's request for it is refused.
    expect(
        &mut server,
        select(B, ip(101)),
        secs(OFFER_HOLD_SECS),
        DhcpMessageType::Nak,
    );
}

#[test]
fn a_declined_address_is_kept_out_of_the_pool_for_a_while() {
    let mut server = small_pool(2);
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    let decline = Msg::new(DhcpMessageType::Decline, A)
        .requested(ip(100))
        .server(SERVER);
    assert_eq!(send(&mut server, decline, secs(1)), None);
    assert_eq!(server.stats().declines, 1);
    assert!(server.leases(secs(1)).is_empty());
    assert_eq!(lease(&mut server, A, secs(2)), ip(101));
    assert_eq!(send(&mut server, discover(B), secs(3)), None);
    // Asking for it does not help either.
    assert_eq!(
        send(&mut server, discover(B).requested(ip(100)), secs(3)),
        None
    );
    assert_eq!(
        expect(
            &mut server,
            discover(B),
            secs(1 + DECLINE_HOLD_SECS),
            DhcpMessageType::Offer
        ),
        ip(100)
    );
}

#[test]
fn release_and_decline_of_someone_elses_lease_change_nothing() {
    let mut server = Responder::new(config());
    assert_eq!(lease(&mut server, A, secs(0)), ip(100));
    let release = Msg::new(DhcpMessageType::Release, B).ciaddr(ip(100));
    let decline = Msg::new(DhcpMessageType::Decline, B).requested(ip(100));
    let other_server = Msg::new(DhcpMessageType::Release, A)
        .ciaddr(ip(100))
        .server(Ipv4Address::new(10, 99, 0, 2));
    for msg in [release, decline, other_server] {
        assert_eq!(send(&mut server, msg, secs(1)), None);
    }
    assert_eq!(leased(&server, secs(1)), vec![(A, ip(100))]);
    let stats = server.stats();
    assert_eq!((stats.releases, stats.declines, stats.ignored), (0, 0, 3));
}

#[test]
fn inform_gets_the_mask_and_no_lease() {
    let mut server = Responder::new(config());
    let inform = Msg::new(DhcpMessageType::Inform, A).ciaddr(ip(20));
    let ack = send(&mut server, inform, secs(0)).unwrap();
    assert_eq!(ack.kind, DhcpMessageType::Ack);
    assert_eq!((ack.yiaddr, ack.ciaddr), (Ipv4Address::UNSPECIFIED, ip(20)));
    assert_eq!(
        (ack.mask, ack.lease, ack.renewal),
        (Some(MASK_24), None, None)
    );
    assert!(server.leases(secs(0)).is_empty());
    let foreign = Msg::new(DhcpMessageType::Inform, A).ciaddr(Ipv4Address::new(10, 0, 2, 15));
    assert_eq!(send(&mut server, foreign, secs(0)), None);
}

#[test]
fn the_servers_own_address_is_never_handed_out() {
    let own = Ipv4Cidr::new(ip(100), 24);
    let mut server = Responder::new(DhcpServerConfig::for_subnet(own).unwrap());
    assert_eq!(
        expect(&mut server, discover(A), secs(0), DhcpMessageType::Offer),
        ip(101)
    );
}

#[test]
fn short_leases_and_huge_pools_are_bounded() {
    let mut server = Responder::new(DhcpServerConfig {
        lease_secs: 0,
        ..config()
    });
    let offer = send(&mut server, discover(A), secs(0)).unwrap();
    assert_eq!(offer.lease, Some(MIN_LEASE_SECS));
    // A pool spanning a /8: only the first MAX_POOL_ADDRESSES are handed out.
    let wide = DhcpServerConfig {
        server: Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 1), 8),
        pool_first: Ipv4Address::new(10, 0, 0, 2),
        pool_last: Ipv4Address::new(10, 255, 255, 254),
        lease_secs: 3600,
    };
    let mut server = Responder::new(wide);
    let last = u32::from(wide.pool_first) + MAX_POOL_ADDRESSES - 1;
    let asked = discover(A).requested(Ipv4Address::from(last + 1));
    assert_eq!(
        expect(&mut server, asked, secs(0), DhcpMessageType::Offer),
        wide.pool_first
    );
    let asked = discover(B).requested(Ipv4Address::from(last));
    assert_eq!(
        expect(&mut server, asked, secs(0), DhcpMessageType::Offer),
        Ipv4Address::from(last)
    );
}

#[test]
fn malformed_and_foreign_messages_are_ignored() {
    let mut server = Responder::new(config());
    let good = discover(A).bytes();
    let mut cases: Vec<Vec<u8>> = vec![Vec::new(), vec![1], good[..239].to_vec(), vec![0xff; 600]];
    // Bad magic cookie.
    let mut bad = good.clone();
    bad[236] ^= 0xff;
    cases.push(bad);
    // No message type option: the options end right away.
    let mut bad = good.clone();
    bad[240] = 255;
    cases.push(bad);
    // A BOOTREPLY (a server's OFFER).
    let mut offer = Responder::new(config()).handle(&good, secs(0)).unwrap();
    cases.push(offer.clone());
    // A BOOTREQUEST carrying a server's message type.
    offer[0] = 1;
    cases.push(offer);
    // Relayed (giaddr set).
    let mut bad = good.clone();
    bad[24..28].copy_from_slice(&[10, 1, 2, 3]);
    cases.push(bad);
    // Not Ethernet, and a bad hardware address length.
    let mut bad = good.clone();
    bad[1] = 6;
    cases.push(bad);
    let mut bad = good.clone();
    bad[2] = 16;
    cases.push(bad);
    // Multicast and all-zero client hardware addresses.
    cases.push(discover(EthernetAddress([0x01, 0, 0x5e, 0, 0, 1])).bytes());
    cases.push(discover(EthernetAddress([0; 6])).bytes());
    // A selecting REQUEST without the requested address.
    cases.push(Msg::new(DhcpMessageType::Request, A).server(SERVER).bytes());
    let count = cases.len() as u64;
    for case in cases {
        assert_eq!(server.handle(&case, secs(0)), None, "{case:?}");
    }
    assert_eq!(
        server.stats(),
        DhcpServerStats {
            received: count,
            ignored: count,
            ..DhcpServerStats::default()
        }
    );
    // Nothing was recorded: A's DISCOVER still gets the first address.
    assert_eq!(
        expect(&mut server, discover(A), secs(0), DhcpMessageType::Offer),
        ip(100)
    );
}

#[test]
fn mangled_messages_never_panic() {
    // Every message kind with bytes flipped, cut short and options overrunning the end.
    let mut server = Responder::new(config());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kinds = [
        discover(A),
        select(A, ip(100)),
        renew(A, ip(100)),
        reboot(B, ip(101)),
        Msg::new(DhcpMessageType::Release, A).ciaddr(ip(100)),
        Msg::new(DhcpMessageType::Decline, A).requested(ip(100)),
        Msg::new(DhcpMessageType::Inform, A).ciaddr(ip(20)),
    ];
    for round in 0..20_000u64 {
        let mut bytes = kinds[(round % kinds.len() as u64) as usize].bytes();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let keep = bytes.len() - (next() as usize % 8);
        bytes.truncate(keep);
        if let Some(reply) = server.handle(&bytes, secs(round / 100)) {
            assert!(DhcpRepr::parse(&DhcpPacket::new_checked(&reply[..]).unwrap()).is_ok());
        }
    }
}

/// One end of an in-memory Ethernet link: frames it sends go to `sent`, frames for it wait
/// in `inbox`.
#[derive(Default)]
struct QueueDevice {
    inbox: VecDeque<Vec<u8>>,
    sent: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.0.push_back(frame);
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((Rx(frame), Tx(&mut self.sent)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// Whether `frame` is a DHCP reply (UDP 67 → 68) sent to the Ethernet and IPv4 broadcast
/// addresses. Panics on a DHCP reply sent any other way.
fn is_broadcast_dhcp_reply(frame: &[u8]) -> bool {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return false;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    if ip.next_header() != IpProtocol::Udp {
        return false;
    }
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    if (udp.src_port(), udp.dst_port()) != (67, 68) {
        return false;
    }
    assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
    assert_eq!(ip.dst_addr(), Ipv4Address::BROADCAST);
    assert_eq!(ip.src_addr(), SERVER);
    true
}

/// The appliance's side (an interface at 10.99.0.1/24 with the server) and a guest's (an
/// interface with smoltcp's DHCP client), joined by two queues.
struct Link {
    server_dev: QueueDevice,
    server_iface: Interface,
    server_sockets: SocketSet<'static>,
    server: DhcpServer,
    client_dev: QueueDevice,
    client_iface: Interface,
    client_sockets: SocketSet<'static>,
    client: smoltcp::iface::SocketHandle,
    broadcast_replies: usize,
}

impl Link {
    fn new() -> Link {
        let mut server_dev = QueueDevice::default();
        let server_mac = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let mut server_iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(server_mac)),
            &mut server_dev,
            Instant::ZERO,
        );
        server_iface.update_ip_addrs(|addrs| {
            addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(SERVER, 24))).unwrap();
        });
        let mut server_sockets = SocketSet::new(Vec::new());
        let server = DhcpServer::new(config(), &mut server_sockets);
        let mut client_dev = QueueDevice::default();
        let client_iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(A)),
            &mut client_dev,
            Instant::ZERO,
        );
        let mut client_sockets = SocketSet::new(Vec::new());
        let client = client_sockets.add(dhcpv4::Socket::new());
        Link {
            server_dev,
            server_iface,
            server_sockets,
            server,
            client_dev,
            client_iface,
            client_sockets,
            client,
            broadcast_replies: 0,
        }
    }

    /// One pass of both sides at `now`; returns the client's event, if any.
    fn step(&mut self, now: Instant) -> Option<(Ipv4Cidr, Option<Ipv4Address>, usize)> {
        self.client_iface
            .poll(now, &mut self.client_dev, &mut self.client_sockets);
        self.server_dev.inbox.extend(self.client_dev.sent.drain(..));
        self.server_iface
            .poll(now, &mut self.server_dev, &mut self.server_sockets);
        self.server.poll(&mut self.server_sockets, now);
        self.server_iface
            .poll(now, &mut self.server_dev, &mut self.server_sockets);
        for frame in self.server_dev.sent.drain(..) {
            if is_broadcast_dhcp_reply(&frame) {
                self.broadcast_replies += 1;
            }
            self.client_dev.inbox.push_back(frame);
        }
        self.client_iface
            .poll(now, &mut self.client_dev, &mut self.client_sockets);
        let event = match self
            .client_sockets
            .get_mut::<dhcpv4::Socket>(self.client)
            .poll()
        {
            Some(dhcpv4::Event::Configured(lease)) => {
                Some((lease.address, lease.router, lease.dns_servers.len()))
            }
            _ => None,
        };
        if let Some((address, _, _)) = event {
            self.client_iface.update_ip_addrs(|addrs| {
                addrs.clear();
                addrs.push(IpCidr::Ipv4(address)).unwrap();
            });
        }
        event
    }
}

#[test]
fn smoltcps_dhcp_client_gets_and_renews_a_lease() {
    let mut link = Link::new();
    let mut now = Instant::ZERO;
    let mut lease = None;
    while lease.is_none() && now < Instant::from_secs(10) {
        lease = link.step(now);
        now += Duration::from_millis(100);
    }
    let (address, router, dns) = lease.expect("the client got no lease within 10 s");
    assert_eq!(address, Ipv4Cidr::new(ip(100), 24));
    assert_eq!((router, dns), (None, 0));
    // OFFER and ACK, both broadcast.
    assert_eq!(link.broadcast_replies, 2);
    let leases = link.server.leases(now);
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].mac, leases[0].address), (A, ip(100)));
    assert!(leases[0].expires_in_secs > 3590);
    let stats = link.server.stats();
    assert_eq!((stats.offers, stats.acks, stats.ignored), (1, 1, 0));

    // At T1 (half the lease) the client renews by unicast to the server; the lease is
    // extended, the address unchanged.
    let t1 = Instant::from_secs(1800);
    now = t1;
    while link.server.stats().acks < 2 && now < t1 + Duration::from_secs(10) {
        assert_eq!(link.step(now), None, "the renewal changed the lease");
        now += Duration::from_millis(100);
    }
    assert_eq!(link.server.stats().acks, 2, "no renewal within 10 s of T1");
    let leases = link.server.leases(now);
    assert_eq!((leases[0].mac, leases[0].address), (A, ip(100)));
    assert!(leases[0].expires_in_secs > 3590, "{leases:?}");
    assert_eq!(link.broadcast_replies, 3);
}

/// A client's broadcast DHCP message as an Ethernet frame (0.0.0.0:68 → 255.255.255.255:67).
fn client_frame(msg: Msg) -> Vec<u8> {
    let payload = msg.bytes();
    let udp = UdpRepr {
        src_port: 68,
        dst_port: 67,
    };
    let ip = Ipv4Repr {
        src_addr: Ipv4Address::UNSPECIFIED,
        dst_addr: Ipv4Address::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: msg.mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut frame = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    let mut eth_frame = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut eth_frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(eth_frame.payload_mut());
    ip.emit(&mut ip_packet, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(ip_packet.payload_mut()),
        &ip.src_addr.into(),
        &ip.dst_addr.into(),
        payload.len(),
        |buf| buf.copy_from_slice(&payload),
        &caps,
    );
    frame
}

#[test]
fn a_burst_of_clients_is_answered_over_several_polls() {
    let mut link = Link::new();
    let now = Instant::ZERO;
    for n in 0..20u8 {
        let mac = EthernetAddress([0x02, 0, 0, 0, 1, n]);
        link.server_dev.inbox.push_back(client_frame(discover(mac)));
    }
    link.server_iface
        .poll(now, &mut link.server_dev, &mut link.server_sockets);
    // A poll handles at most 16 messages; the rest wait in the socket for the next one.
    link.server.poll(&mut link.server_sockets, now);
    assert_eq!(link.server.stats().received, 16);
    // smoltcp sends one datagram per socket and interface poll: the replies drain one per
    // pass, and the interface says it has more to do.
    let mut offered = Vec::new();
    for _ in 0..40 {
        link.server_iface
            .poll(now, &mut link.server_dev, &mut link.server_sockets);
        link.server.poll(&mut link.server_sockets, now);
        for frame in link.server_dev.sent.drain(..) {
            assert!(is_broadcast_dhcp_reply(&frame));
            let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            offered.push(parse(udp.payload()).yiaddr);
        }
        if offered.len() < 20 {
            let delay = link.server_iface.poll_delay(now, &link.server_sockets);
            assert_eq!(delay, Some(Duration::ZERO));
        }
    }
    let expected: Vec<_> = (100..120).map(ip).collect();
    assert_eq!(offered, expected);
    assert_eq!(link.server.stats().offers, 20);
}
