//! Interface set-up, ping over `Loopback`, and a DHCP lease from a scripted server.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Loopback, Medium};
use smoltcp::socket::icmp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Cidr,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use super::*;

const MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

fn fixed(address: Ipv4Cidr, gateway: Option<Ipv4Address>) -> NetConfig {
    NetConfig {
        mac: MAC,
        addressing: Addressing::Static(StaticAddress {
            address,
            gateway,
            dns: vec![Ipv4Address::new(1, 1, 1, 1)],
        }),
        random_seed: 7,
    }
}

#[test]
fn static_address_is_set_at_creation() {
    let mut dev = Loopback::new(Medium::Ethernet);
    let cidr = Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 20), 24);
    let gw = Ipv4Address::new(192, 168, 1, 1);
    let mut stack = NetStack::new(fixed(cidr, Some(gw)), &mut dev, Instant::ZERO).unwrap();
    assert_eq!(
        stack.status(),
        &NetStatus {
            mac: MAC,
            dhcp: false,
            address: Some(cidr),
            gateway: Some(gw),
            dns: vec![Ipv4Address::new(1, 1, 1, 1)],
            lease_events: 0,
        }
    );
    assert_eq!(stack.interface_mut().ip_addrs(), &[IpCidr::Ipv4(cidr)]);
    assert_eq!(stack.interface_mut().ipv4_addr(), Some(cidr.address()));
    assert_eq!(stack.take_event(), None);
    // Nothing to do on an idle static interface: no DHCP timer.
    assert!(!stack.poll(Instant::from_secs(1), &mut dev));
    assert_eq!(stack.poll_delay(Instant::from_secs(1)), None);
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    let mut dev = Loopback::new(Medium::Ethernet);
    let now = Instant::ZERO;
    let mut multicast = NetConfig::dhcp(EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]), 0);
    assert_eq!(
        NetStack::new(multicast.clone(), &mut dev, now).unwrap_err(),
        NetError::InvalidMac(multicast.mac)
    );
    multicast.mac = EthernetAddress([0; 6]);
    assert!(NetStack::new(multicast, &mut dev, now).is_err());
    // (`NetError::NotEthernet` needs a medium this build of smoltcp does not have.)
    for (a, b, c, d, prefix) in [
        (192, 168, 1, 0, 24),
        (192, 168, 1, 255, 24),
        (0, 0, 0, 0, 8),
        (255, 255, 255, 255, 32),
        (224, 0, 0, 1, 4),
    ] {
        let cidr = Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), prefix);
        let err = NetStack::new(fixed(cidr, None), &mut dev, now).unwrap_err();
        assert_eq!(err, NetError::InvalidStaticAddress(cidr));
        assert!(err.to_string().contains("is not a unicast host address"));
    }
    // /31 and /32 have no network or broadcast address.
    for prefix in [31, 32] {
        let cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 0), prefix);
        assert!(NetStack::new(fixed(cidr, None), &mut dev, now).is_ok());
    }
    let cidr = Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 5), 24);
    let gw = Ipv4Address::BROADCAST;
    assert_eq!(
        NetStack::new(fixed(cidr, Some(gw)), &mut dev, now).unwrap_err(),
        NetError::InvalidGateway(gw)
    );
}

#[test]
fn echo_requests_are_answered_by_the_interface() {
    let mut dev = Loopback::new(Medium::Ethernet);
    let me = Ipv4Address::new(192, 168, 69, 1);
    let cidr = Ipv4Cidr::new(me, 24);
    let mut stack = NetStack::new(fixed(cidr, None), &mut dev, Instant::ZERO).unwrap();
    let mut socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]),
    );
    socket.bind(icmp::Endpoint::Ident(0x4b45)).unwrap();
    let handle = stack.sockets_mut().add(socket);
    let request = Icmpv4Repr::EchoRequest {
        ident: 0x4b45,
        seq_no: 1,
        data: b"keel ping",
    };
    {
        let socket = stack.sockets_mut().get_mut::<icmp::Socket>(handle);
        let buf = socket
            .send(request.buffer_len(), IpAddress::Ipv4(me))
            .unwrap();
        let mut packet = Icmpv4Packet::new_unchecked(buf);
        request.emit(&mut packet, &ChecksumCapabilities::default());
    }
    let mut now = Instant::ZERO;
    for _ in 0..10 {
        stack.poll(now, &mut dev);
        now += Duration::from_millis(1);
    }
    let socket = stack.sockets_mut().get_mut::<icmp::Socket>(handle);
    // The socket sees its own request (it accepts any echo with its ident) and the reply.
    let mut replies = 0;
    while let Ok((payload, from)) = socket.recv() {
        assert_eq!(from, IpAddress::Ipv4(me));
        let packet = Icmpv4Packet::new_checked(payload).unwrap();
        if let Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        } = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap()
        {
            assert_eq!((ident, seq_no, data), (0x4b45, 1, &b"keel ping"[..]));
            replies += 1;
        }
    }
    assert_eq!(replies, 1);
}

/// A NIC whose wire the test holds: frames the stack sends pile up in `sent`, frames in
/// `incoming` are received.
#[derive(Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.incoming.pop_front()?;
        Some((Rx(frame), Tx(&mut self.sent)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

const SERVER_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const LEASED: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const DNS: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);

/// The DHCP messages the client sent since the last call: (type, transaction id).
fn dhcp_sent(wire: &mut Wire) -> Vec<(DhcpMessageType, u32)> {
    let mut out = Vec::new();
    for frame in wire.sent.drain(..) {
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            continue;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        if ip.next_header() != IpProtocol::Udp {
            continue;
        }
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (68, 67));
        let dhcp = DhcpPacket::new_checked(udp.payload()).unwrap();
        let repr = DhcpRepr::parse(&dhcp).unwrap();
        assert_eq!(repr.client_hardware_address, MAC);
        out.push((repr.message_type, repr.transaction_id));
    }
    out
}

/// A DHCP reply from the scripted server, as an Ethernet frame.
fn dhcp_reply(kind: DhcpMessageType, xid: u32, lease_secs: u32) -> Vec<u8> {
    let dhcp = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: MAC,
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: LEASED,
        server_ip: SERVER_IP,
        router: Some(SERVER_IP),
        subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER_IP),
        parameter_request_list: None,
        dns_servers: Some([DNS].into_iter().collect()),
        max_size: None,
        lease_duration: Some(lease_secs),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let udp = UdpRepr {
        src_port: 67,
        dst_port: 68,
    };
    let udp_len = 8 + dhcp.buffer_len();
    let ip = Ipv4Repr {
        src_addr: SERVER_IP,
        dst_addr: Ipv4Address::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: SERVER_MAC,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    };
    let caps = ChecksumCapabilities::default();
    let mut frame = vec![0; 14 + 20 + udp_len];
    let mut eth_frame = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut eth_frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(eth_frame.payload_mut());
    ip.emit(&mut ip_packet, &caps);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(SERVER_IP),
        &IpAddress::Ipv4(Ipv4Address::BROADCAST),
        dhcp.buffer_len(),
        |payload| {
            let mut packet = DhcpPacket::new_unchecked(payload);
            dhcp.emit(&mut packet).unwrap();
        },
        &caps,
    );
    frame
}

#[test]
fn dhcp_lease_is_applied_and_removed_when_lost() {
    let mut wire = Wire::default();
    let mut now = Instant::from_secs(100);
    let mut stack = NetStack::new(NetConfig::dhcp(MAC, 42), &mut wire, now).unwrap();
    assert!(stack.status().dhcp);
    assert_eq!(stack.status().address, None);

    // DISCOVER -> OFFER -> REQUEST -> ACK.
    stack.poll(now, &mut wire);
    let sent = dhcp_sent(&mut wire);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (kind, xid) = sent[0];
    assert_eq!(kind, DhcpMessageType::Discover);
    wire.incoming
        .push_back(dhcp_reply(DhcpMessageType::Offer, xid, 60));
    now += Duration::from_millis(10);
    stack.poll(now, &mut wire);
    let sent = dhcp_sent(&mut wire);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (kind, xid) = sent[0];
    assert_eq!(kind, DhcpMessageType::Request);
    assert_eq!(stack.status().address, None);
    wire.incoming
        .push_back(dhcp_reply(DhcpMessageType::Ack, xid, 60));
    now += Duration::from_millis(10);
    assert!(stack.poll(now, &mut wire));

    let leased = Ipv4Cidr::new(LEASED, 24);
    assert_eq!(stack.status().address, Some(leased));
    assert_eq!(stack.status().gateway, Some(SERVER_IP));
    assert_eq!(stack.status().dns, [DNS]);
    assert_eq!(stack.status().lease_events, 1);
    assert_eq!(stack.interface_mut().ip_addrs(), &[IpCidr::Ipv4(leased)]);
    let event = stack.take_event().unwrap();
    assert_eq!(
        event,
        NetEvent::LeaseAcquired {
            address: leased,
            gateway: Some(SERVER_IP)
        }
    );
    assert_eq!(
        event.to_string(),
        "DHCP lease 10.0.2.15/24, gateway 10.0.2.2"
    );
    assert_eq!(stack.take_event(), None);
    // The renewal is the next timer: half the lease.
    let delay = stack.poll_delay(now).unwrap();
    assert!(delay <= Duration::from_secs(30), "{delay}");

    // Nobody answers the renewals: the lease runs out after 60 s.
    let mut renewals = 0;
    while stack.status().address.is_some() {
        now += Duration::from_secs(1);
        stack.poll(now, &mut wire);
        renewals += dhcp_sent(&mut wire)
            .iter()
            .filter(|(kind, _)| *kind == DhcpMessageType::Request)
            .count();
        assert!(now < Instant::from_secs(100 + 62), "lease never lost");
    }
    assert!(renewals >= 1);
    assert_eq!(stack.status().gateway, None);
    assert!(stack.status().dns.is_empty());
    assert_eq!(stack.status().lease_events, 2);
    assert!(stack.interface_mut().ip_addrs().is_empty());
    assert_eq!(stack.take_event(), Some(NetEvent::LeaseLost));
    // And the client starts over.
    for _ in 0..20 {
        now += Duration::from_secs(1);
        stack.poll(now, &mut wire);
    }
    assert!(
        dhcp_sent(&mut wire)
            .iter()
            .any(|(kind, _)| *kind == DhcpMessageType::Discover)
    );
}

#[test]
fn events_are_bounded() {
    let mut dev = Loopback::new(Medium::Ethernet);
    let mut stack = NetStack::new(NetConfig::dhcp(MAC, 1), &mut dev, Instant::ZERO).unwrap();
    let address = Ipv4Cidr::new(LEASED, 24);
    for _ in 0..40 {
        stack.apply_lease(LeaseChange::Acquired {
            address,
            gateway: None,
            dns: Vec::new(),
        });
    }
    stack.apply_lease(LeaseChange::Lost);
    assert_eq!(stack.status().lease_events, 41);
    let events: Vec<_> = core::iter::from_fn(|| stack.take_event()).collect();
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(events.last(), Some(&NetEvent::LeaseLost));
    assert_eq!(events[0].to_string(), "DHCP lease 10.0.2.15/24, no gateway");
}

#[test]
fn addressing_from_the_configuration() {
    use keel_config::schema::{Network, NetworkMode};
    assert_eq!(
        Addressing::from_config(&Network::default()),
        Ok(Addressing::Dhcp)
    );
    let network = Network {
        mode: NetworkMode::Static,
        address: Some(Ipv4Address::new(192, 168, 7, 20)),
        prefix: Some(24),
        gateway: Some(Ipv4Address::new(192, 168, 7, 1)),
        dns: vec![
            Ipv4Address::new(192, 168, 7, 53),
            Ipv4Address::new(9, 9, 9, 9),
        ],
        interface: None,
        internal: Default::default(),
    };
    let addressing = Addressing::from_config(&network).unwrap();
    let cidr = Ipv4Cidr::new(Ipv4Address::new(192, 168, 7, 20), 24);
    assert_eq!(
        addressing,
        Addressing::Static(StaticAddress {
            address: cidr,
            gateway: network.gateway,
            dns: network.dns.clone(),
        })
    );
    // The stack comes up with exactly that: address, route, DNS; no DHCP.
    let mut dev = Loopback::new(Medium::Ethernet);
    let mut stack =
        NetStack::new(NetConfig::new(MAC, addressing, 1), &mut dev, Instant::ZERO).unwrap();
    let status = stack.status().clone();
    assert!(!status.dhcp);
    assert_eq!(status.address, Some(cidr));
    assert_eq!(status.gateway, network.gateway);
    assert_eq!(status.dns, network.dns);
    assert_eq!(stack.interface_mut().ipv4_addr(), Some(cidr.address()));
    assert_eq!(stack.poll_delay(Instant::ZERO), None);
    // Static without a gateway: no default route, still an address.
    let no_gateway = Network {
        gateway: None,
        dns: Vec::new(),
        ..network.clone()
    };
    let Addressing::Static(fixed) = Addressing::from_config(&no_gateway).unwrap() else {
        panic!("static expected");
    };
    assert_eq!((fixed.gateway, fixed.dns.len()), (None, 0));
    // Unvalidated input is an error, not a panic.
    let missing = Network {
        address: None,
        ..network.clone()
    };
    assert_eq!(
        Addressing::from_config(&missing),
        Err(NetError::IncompleteStatic)
    );
    let wide = Network {
        prefix: Some(40),
        ..network
    };
    assert_eq!(
        Addressing::from_config(&wide),
        Err(NetError::InvalidPrefix(40))
    );
}
