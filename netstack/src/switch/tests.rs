//! The switch with frames built by hand, and two smoltcp interfaces pinging through it.

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::icmp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address, Ipv4Cidr};

use super::*;
use crate::iface::{Addressing, NetConfig, NetStack, StaticAddress};

const T0: Instant = Instant::ZERO;

fn mac(last: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0, 0, 0, 0, last])
}

const BROADCAST: EthernetAddress = EthernetAddress::BROADCAST;
const MULTICAST: EthernetAddress = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]);

/// An IPv4-typed frame of `len` bytes in all, its last header byte and payload marked `tag`.
fn frame_len(to: EthernetAddress, from: EthernetAddress, tag: u8, len: usize) -> Vec<u8> {
    let mut frame = vec![tag; len];
    frame[..6].copy_from_slice(&to.0);
    frame[6..12].copy_from_slice(&from.0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame
}

fn frame(to: EthernetAddress, from: EthernetAddress, tag: u8) -> Vec<u8> {
    frame_len(to, from, tag, 60)
}

fn guest(vm: &str) -> PortKind {
    PortKind::Guest {
        vm: vm.to_string(),
        nic: 0,
    }
}

/// Every frame waiting for `port`, taken.
fn drain(port: &PortHandle) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while port.receive(&mut |frame| {
        frames.push(frame.to_vec());
        true
    }) {}
    frames
}

fn stats(switch: &Switch, port: &PortHandle) -> PortStats {
    switch
        .ports()
        .into_iter()
        .find(|status| status.id == port.id())
        .expect("the port is attached")
        .stats
}

fn three_ports(config: SwitchConfig) -> (Switch, PortHandle, PortHandle, PortHandle) {
    let mut switch = Switch::new("bridged", config);
    let a = switch.add_port(guest("a"), None);
    let b = switch.add_port(guest("b"), None);
    let c = switch.add_port(guest("c"), None);
    (switch, a, b, c)
}

#[test]
fn unknown_destinations_are_flooded_then_learnt_ones_go_to_their_port() {
    let (mut switch, a, b, c) = three_ports(SwitchConfig::default());
    // B is unknown yet: flooded to B and C, not back to A.
    assert!(a.send(&frame(mac(2), mac(1), 1)));
    assert!(switch.poll(T0));
    assert_eq!(drain(&a), Vec::<Vec<u8>>::new());
    assert_eq!(drain(&b), vec![frame(mac(2), mac(1), 1)]);
    assert_eq!(drain(&c), vec![frame(mac(2), mac(1), 1)]);
    // A was learnt from that frame: B's answer goes to A only.
    assert!(b.send(&frame(mac(1), mac(2), 2)));
    switch.poll(T0);
    assert_eq!(drain(&a), vec![frame(mac(1), mac(2), 2)]);
    assert!(drain(&c).is_empty());
    // And now B is known too.
    assert!(a.send(&frame(mac(2), mac(1), 3)));
    switch.poll(T0);
    assert_eq!(drain(&b), vec![frame(mac(2), mac(1), 3)]);
    assert!(drain(&c).is_empty());
    assert_eq!(
        switch.mac_table(T0),
        vec![
            MacEntry {
                mac: mac(1),
                port: a.id(),
                age_secs: 0
            },
            MacEntry {
                mac: mac(2),
                port: b.id(),
                age_secs: 0
            },
        ]
    );
    let a_stats = stats(&switch, &a);
    assert_eq!((a_stats.rx_frames, a_stats.rx_bytes), (2, 120));
    assert_eq!((a_stats.tx_frames, a_stats.tx_bytes), (1, 60));
    assert_eq!(stats(&switch, &c).tx_frames, 1);
    // Nothing waiting: nothing moves.
    assert!(!switch.poll(T0));
}

#[test]
fn broadcast_and_multicast_go_to_every_other_port_never_back() {
    let (mut switch, a, b, c) = three_ports(SwitchConfig::default());
    // Even once B is learnt, group destinations are flooded.
    assert!(b.send(&frame(BROADCAST, mac(2), 0)));
    switch.poll(T0);
    drain(&a);
    drain(&c);
    for (tag, destination) in [(1, BROADCAST), (2, MULTICAST)] {
        assert!(b.send(&frame(destination, mac(2), tag)));
        switch.poll(T0);
        assert!(drain(&b).is_empty(), "reflected to its sender");
        assert_eq!(drain(&a), vec![frame(destination, mac(2), tag)]);
        assert_eq!(drain(&c), vec![frame(destination, mac(2), tag)]);
    }
    // Group addresses are never learnt as stations.
    assert_eq!(switch.mac_table(T0).len(), 1);
}

#[test]
fn a_frame_for_a_station_on_its_own_port_is_not_forwarded() {
    let (mut switch, a, b, c) = three_ports(SwitchConfig::default());
    // The uplink side: two stations behind port A.
    a.send(&frame(BROADCAST, mac(1), 0));
    a.send(&frame(BROADCAST, mac(11), 0));
    switch.poll(T0);
    drain(&b);
    drain(&c);
    assert!(a.send(&frame(mac(11), mac(1), 1)));
    switch.poll(T0);
    assert!(drain(&a).is_empty() && drain(&b).is_empty() && drain(&c).is_empty());
    // Not a drop anyone has to look at.
    for port in [&a, &b, &c] {
        let stats = stats(&switch, port);
        assert_eq!(stats.dropped_egress_full + stats.dropped_bad_frame, 0);
    }
}

#[test]
fn a_station_that_moves_is_followed() {
    let (mut switch, a, b, c) = three_ports(SwitchConfig::default());
    a.send(&frame(BROADCAST, mac(9), 0));
    switch.poll(T0);
    b.send(&frame(BROADCAST, mac(9), 0));
    switch.poll(T0 + Duration::from_secs(1));
    assert_eq!(
        switch.mac_table(T0 + Duration::from_secs(1))[0].port,
        b.id()
    );
    drain(&a);
    drain(&b);
    c.send(&frame(mac(9), mac(3), 1));
    switch.poll(T0 + Duration::from_secs(1));
    assert_eq!(drain(&b).len(), 1);
    assert!(drain(&a).is_empty());
}

#[test]
fn stations_age_out_after_mac_aging() {
    let config = SwitchConfig {
        mac_aging: Duration::from_secs(300),
        ..SwitchConfig::default()
    };
    let (mut switch, a, b, c) = three_ports(config);
    a.send(&frame(BROADCAST, mac(1), 0));
    switch.poll(Instant::from_secs(10));
    drain(&b);
    drain(&c);
    let table = switch.mac_table(Instant::from_secs(309));
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].age_secs, 299);
    // Still known at 309 s: unicast to A only.
    b.send(&frame(mac(1), mac(2), 1));
    switch.poll(Instant::from_secs(309));
    assert_eq!(drain(&a).len(), 1);
    assert!(drain(&c).is_empty());
    // 300 s after its last frame, A is forgotten and flooded to again.
    c.send(&frame(mac(1), mac(3), 2));
    switch.poll(Instant::from_secs(310));
    assert_eq!(drain(&a).len(), 1);
    assert_eq!(drain(&b).len(), 1);
    assert!(
        !switch
            .mac_table(Instant::from_secs(310))
            .iter()
            .any(|entry| entry.mac == mac(1))
    );
    // A clock that reads earlier than a learnt frame shows age 0 rather than wrapping.
    assert_eq!(switch.mac_table(Instant::from_secs(1))[0].age_secs, 0);
    // Stale entries leave the table itself at the sweeps, not only the listing.
    assert_eq!(switch.macs.len(), 2);
    switch.poll(Instant::from_secs(700));
    assert_eq!(switch.macs.len(), 0);
}

#[test]
fn the_mac_table_is_bounded_and_evicts_the_least_recently_seen() {
    let config = SwitchConfig {
        mac_table_size: 4,
        ..SwitchConfig::default()
    };
    let mut switch = Switch::new("bridged", config);
    let uplink = switch.add_port(
        PortKind::Uplink {
            name: "e1000 52:54:00:12:34:56".to_string(),
        },
        None,
    );
    for station in 1..=6u8 {
        uplink.send(&frame(BROADCAST, mac(station), 0));
        switch.poll(Instant::from_secs(station));
    }
    // The two oldest went.
    let table: Vec<_> = switch
        .mac_table(Instant::from_secs(7))
        .iter()
        .map(|entry| entry.mac)
        .collect();
    assert_eq!(table.len(), 4);
    assert_eq!(table, vec![mac(3), mac(4), mac(5), mac(6)]);
    assert_eq!(switch.macs.len(), 4);
    let mut switch = Switch::new("bridged", config);
    let uplink = switch.add_port(
        PortKind::Uplink {
            name: "e1000".to_string(),
        },
        None,
    );
    // Station 2 is seen again before the table overflows: 1 and 3 go, not 2.
    for (second, station) in [(1, 1u8), (2, 2), (3, 3), (4, 4), (5, 2), (6, 5), (7, 6)] {
        uplink.send(&frame(BROADCAST, mac(station), 0));
        switch.poll(Instant::from_secs(second));
    }
    let table: Vec<_> = switch
        .mac_table(Instant::from_secs(7))
        .iter()
        .map(|entry| entry.mac)
        .collect();
    assert_eq!(table, vec![mac(2), mac(4), mac(5), mac(6)]);
}

#[test]
fn forged_sources_are_dropped_and_counted() {
    let mut switch = Switch::new("bridged", SwitchConfig::default());
    let honest = switch.add_port(guest("web"), Some(mac(1)));
    let forger = switch.add_port(guest("evil"), Some(mac(2)));
    assert!(!forger.send(&frame(BROADCAST, mac(1), 1)));
    assert!(!forger.send(&frame(mac(1), mac(7), 1)));
    assert!(forger.send(&frame(BROADCAST, mac(2), 2)));
    switch.poll(T0);
    assert_eq!(drain(&honest), vec![frame(BROADCAST, mac(2), 2)]);
    let forger_stats = stats(&switch, &forger);
    assert_eq!(forger_stats.dropped_forged_source, 2);
    assert_eq!(forger_stats.rx_frames, 1);
    // The forged source was never learnt: web's MAC still points nowhere but web's port.
    assert!(
        !switch
            .mac_table(T0)
            .iter()
            .any(|entry| entry.port == forger.id() && entry.mac != mac(2))
    );
    let ports = switch.ports();
    assert_eq!(ports[0].mac, Some(mac(1)));
    assert_eq!(ports[1].kind, guest("evil"));
}

#[test]
fn the_uplink_cannot_divert_a_pinned_mac() {
    let mut switch = Switch::new("bridged", SwitchConfig::default());
    let uplink = switch.add_port(
        PortKind::Uplink {
            name: "e1000".to_string(),
        },
        None,
    );
    let appliance = switch.add_port(PortKind::Appliance, Some(mac(1)));
    let web = switch.add_port(guest("web"), Some(mac(2)));
    // Before the guest said anything, a frame for it goes to it alone.
    uplink.send(&frame(mac(2), mac(50), 1));
    switch.poll(T0);
    assert_eq!(drain(&web), vec![frame(mac(2), mac(50), 1)]);
    assert!(drain(&appliance).is_empty());
    // The appliance's broadcast comes back through the physical network (or someone forges
    // its MAC there): dropped and counted, and the appliance's MAC stays on its port.
    appliance.send(&frame(BROADCAST, mac(1), 2));
    switch.poll(T0);
    uplink.send(&frame(BROADCAST, mac(1), 3));
    switch.poll(T0);
    assert_eq!(drain(&web), vec![frame(BROADCAST, mac(1), 2)]);
    assert!(drain(&appliance).is_empty());
    assert_eq!(stats(&switch, &uplink).dropped_forged_source, 1);
    web.send(&frame(mac(1), mac(2), 4));
    switch.poll(T0);
    assert_eq!(drain(&appliance), vec![frame(mac(1), mac(2), 4)]);
    assert!(
        switch
            .mac_table(T0)
            .iter()
            .all(|entry| entry.mac != mac(1) || entry.port == appliance.id())
    );
    drain(&uplink);
    // A frame from the uplink for the appliance goes to it, not back to the uplink.
    uplink.send(&frame(mac(1), mac(50), 5));
    switch.poll(T0);
    assert_eq!(drain(&appliance), vec![frame(mac(1), mac(50), 5)]);
    assert!(drain(&uplink).is_empty());
}

#[test]
fn bad_frames_are_dropped_and_counted() {
    let (mut switch, a, b, _c) = three_ports(SwitchConfig::default());
    let mut runt = frame_len(BROADCAST, mac(1), 0, MIN_FRAME);
    runt.pop();
    let oversize = frame_len(BROADCAST, mac(1), 0, MAX_FRAME + 1);
    let multicast_source = frame(BROADCAST, MULTICAST, 0);
    let zero_source = frame(BROADCAST, EthernetAddress([0; 6]), 0);
    for bad in [&[][..], &runt, &oversize, &multicast_source, &zero_source] {
        assert!(!a.send(bad));
    }
    assert_eq!(stats(&switch, &a).dropped_bad_frame, 5);
    // The extremes are fine: a bare header, a tagged full-size frame.
    assert!(a.send(&frame_len(BROADCAST, mac(1), 0, MIN_FRAME)));
    assert!(a.send(&frame_len(BROADCAST, mac(1), 0, MAX_FRAME)));
    switch.poll(T0);
    assert_eq!(drain(&b).len(), 2);
    let a_stats = stats(&switch, &a);
    assert_eq!((a_stats.rx_frames, a_stats.rx_bytes), (2, 14 + 1518));
}

#[test]
fn full_queues_drop_and_count_on_their_port() {
    let config = SwitchConfig {
        queue_frames: 4,
        ..SwitchConfig::default()
    };
    let mut switch = Switch::new("internal", config);
    let sender = switch.add_port(guest("a"), None);
    let slow = switch.add_port(PortKind::Appliance, Some(mac(2)));
    // Frames for the appliance's own MAC: a flood would be held to a quarter of the queue.
    for tag in 0..6 {
        let accepted = sender.send(&frame(mac(2), mac(1), tag));
        assert_eq!(accepted, tag < 4);
    }
    assert_eq!(stats(&switch, &sender).dropped_ingress_full, 2);
    switch.poll(T0);
    for tag in 6..8 {
        assert!(sender.send(&frame(mac(2), mac(1), tag)));
    }
    // The appliance did not read: two of the six frames for it find its queue full.
    switch.poll(T0);
    let slow_stats = stats(&switch, &slow);
    assert_eq!(slow_stats.tx_frames, 4);
    assert_eq!(slow_stats.dropped_egress_full, 2);
    let tags: Vec<u8> = drain(&slow).iter().map(|frame| frame[14]).collect();
    assert_eq!(tags, vec![0, 1, 2, 3]);
}

#[test]
fn receive_keeps_a_refused_frame_first_in_line() {
    let (mut switch, a, b, _c) = three_ports(SwitchConfig::default());
    assert!(!b.has_frames());
    assert!(!b.receive(&mut |_| panic!("no frame is waiting")));
    a.send(&frame(BROADCAST, mac(1), 1));
    a.send(&frame(BROADCAST, mac(1), 2));
    switch.poll(T0);
    assert!(b.has_frames());
    // No buffers: offered, refused, still there.
    assert!(b.receive(&mut |_| false));
    // The deliverer may use the handle (no lock is held).
    let mut seen = Vec::new();
    assert!(b.receive(&mut |frame| {
        seen.push(frame[14]);
        b.has_frames()
    }));
    assert_eq!(seen, vec![1]);
    assert_eq!(drain(&b).iter().map(|f| f[14]).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn a_flooding_port_delays_another_ports_frame_by_at_most_one_poll() {
    let config = SwitchConfig {
        queue_frames: 20_000,
        ..SwitchConfig::default()
    };
    let mut switch = Switch::new("bridged", config);
    let flooder = switch.add_port(guest("flood"), Some(mac(1)));
    let quiet = switch.add_port(guest("quiet"), Some(mac(2)));
    let appliance = switch.add_port(PortKind::Appliance, Some(mac(3)));
    assert!(!switch.has_work());
    appliance.send(&frame(BROADCAST, mac(3), 0));
    assert!(switch.has_work());
    switch.poll(T0);
    assert!(!switch.has_work());
    drain(&flooder);
    drain(&quiet);
    for _ in 0..10_000 {
        assert!(flooder.send(&frame(BROADCAST, mac(1), 0xff)));
    }
    assert!(quiet.send(&frame(mac(3), mac(2), 7)));
    assert!(switch.poll(T0));
    let received = drain(&appliance);
    assert!(received.contains(&frame(mac(3), mac(2), 7)));
    // The flooder got its budget and no more; the rest waits for later polls.
    assert_eq!(received.len(), 1 + config.poll_budget);
    assert_eq!(drain(&quiet).len(), config.poll_budget);
    assert!(switch.has_work());
}

#[test]
fn a_flood_cannot_take_another_ports_place_in_an_egress_queue() {
    let config = SwitchConfig {
        queue_frames: 128,
        poll_budget: 64,
        ..SwitchConfig::default()
    };
    // Whichever port the rotation serves first, the quiet guest's frames get into the
    // appliance's queue: a flooder's frames take at most a quarter of it.
    for flood_first in [true, false] {
        let mut switch = Switch::new("bridged", config);
        let (flooder, quiet) = if flood_first {
            let flooder = switch.add_port(guest("flood"), Some(mac(1)));
            (flooder, switch.add_port(guest("quiet"), Some(mac(2))))
        } else {
            let quiet = switch.add_port(guest("quiet"), Some(mac(2)));
            (switch.add_port(guest("flood"), Some(mac(1))), quiet)
        };
        let appliance = switch.add_port(PortKind::Appliance, Some(mac(3)));
        // Three polls of flood, unread by the appliance: 32 of its 128 places taken.
        for _ in 0..3 {
            for _ in 0..64 {
                flooder.send(&frame(BROADCAST, mac(1), 0xff));
            }
            switch.poll(T0);
        }
        drain(&quiet);
        assert_eq!(stats(&switch, &appliance).dropped_egress_full, 3 * 64 - 32);
        // Another poll of flood beside the quiet guest's broadcast and 90 frames for the
        // appliance alone: every one of the quiet guest's frames finds room.
        for _ in 0..64 {
            flooder.send(&frame(BROADCAST, mac(1), 0xff));
        }
        assert!(quiet.send(&frame(BROADCAST, mac(2), 7)));
        for _ in 0..2 {
            for tag in 0..45 {
                assert!(quiet.send(&frame(mac(3), mac(2), tag)));
            }
            switch.poll(T0);
        }
        let received = drain(&appliance);
        assert_eq!(received.len(), 32 + 1 + 90);
        assert!(received.contains(&frame(BROADCAST, mac(2), 7)), "starved");
        let from_quiet = received.iter().filter(|f| f[6..12] == mac(2).0).count();
        assert_eq!(from_quiet, 91);
        assert_eq!(stats(&switch, &appliance).dropped_egress_full, 4 * 64 - 32);
    }
}

#[test]
fn detached_ports_are_removed_with_their_stations() {
    let (mut switch, a, b, c) = three_ports(SwitchConfig::default());
    b.send(&frame(BROADCAST, mac(2), 0));
    let b_clone = b.clone();
    switch.poll(T0);
    assert_eq!(switch.mac_table(T0).len(), 1);
    drop(b);
    // One clone still holds the port.
    assert!(!switch.poll(T0));
    assert_eq!(switch.ports().len(), 3);
    let gone = b_clone.id();
    drop(b_clone);
    assert!(switch.poll(T0));
    assert!(switch.ports().iter().all(|port| port.id != gone));
    assert!(switch.mac_table(T0).is_empty());
    drain(&a);
    drain(&c);
    // Its MAC is unknown again: flooded to the remaining ports.
    a.send(&frame(mac(2), mac(1), 1));
    switch.poll(T0);
    assert_eq!(drain(&c).len(), 1);
    // A new port gets a new id.
    let d = switch.add_port(guest("d"), None);
    assert!(d.id() > gone);
    // After a wrap, ids still attached are skipped.
    switch.next_port_id = u32::MAX;
    let e = switch.add_port(guest("e"), None);
    assert_eq!(e.id(), u32::MAX);
    let f = switch.add_port(guest("f"), None);
    assert_eq!(f.id(), 1, "0 is port A's");
    assert_eq!(a.id(), 0);
}

#[test]
fn zero_limits_are_taken_as_one() {
    let config = SwitchConfig {
        queue_frames: 0,
        mac_table_size: 0,
        poll_budget: 0,
        mac_aging: Duration::from_secs(1),
    };
    let (mut switch, a, b, _c) = three_ports(config);
    assert!(a.send(&frame(BROADCAST, mac(1), 0)));
    assert!(!a.send(&frame(BROADCAST, mac(1), 0)));
    assert!(switch.poll(T0));
    assert_eq!(drain(&b).len(), 1);
    assert_eq!(switch.mac_table(T0).len(), 1);
}

fn stack_on(port: &PortHandle, station: EthernetAddress, address: Ipv4Address) -> NetStack {
    let config = NetConfig {
        mac: station,
        addressing: Addressing::Static(StaticAddress {
            address: Ipv4Cidr::new(address, 24),
            gateway: None,
            dns: Vec::new(),
        }),
        random_seed: u64::from(station.0[5]),
    };
    NetStack::new(config, &mut PortDevice::new(port.clone()), T0).unwrap()
}

#[test]
fn two_interfaces_on_a_switch_ping_each_other() {
    let mut switch = Switch::new("internal", SwitchConfig::default());
    let (mac_a, mac_b) = (mac(0xa), mac(0xb));
    let mut device_a = PortDevice::new(switch.add_port(PortKind::Appliance, Some(mac_a)));
    let mut device_b = PortDevice::new(switch.add_port(guest("b"), Some(mac_b)));
    // A third station sees only the ARP broadcast, never the unicast echo.
    let bystander = switch.add_port(guest("c"), Some(mac(0xc)));
    let (ip_a, ip_b) = (
        Ipv4Address::new(10, 99, 0, 1),
        Ipv4Address::new(10, 99, 0, 2),
    );
    let mut stack_a = stack_on(device_a.handle(), mac_a, ip_a);
    let mut stack_b = stack_on(device_b.handle(), mac_b, ip_b);
    assert_eq!(device_a.capabilities().max_transmission_unit, 1514);
    assert_eq!(device_a.capabilities().medium, Medium::Ethernet);

    let mut socket = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 512]),
    );
    socket.bind(icmp::Endpoint::Ident(0x5357)).unwrap();
    let handle = stack_a.sockets_mut().add(socket);
    let request = Icmpv4Repr::EchoRequest {
        ident: 0x5357,
        seq_no: 1,
        data: b"through the switch",
    };
    let mut now = T0;
    let mut reply = None;
    for _ in 0..50 {
        {
            let socket = stack_a.sockets_mut().get_mut::<icmp::Socket>(handle);
            if socket.can_send() && reply.is_none() && now == T0 {
                let buf = socket
                    .send(request.buffer_len(), IpAddress::Ipv4(ip_b))
                    .unwrap();
                request.emit(
                    &mut Icmpv4Packet::new_unchecked(buf),
                    &ChecksumCapabilities::default(),
                );
            }
        }
        stack_a.poll(now, &mut device_a);
        switch.poll(now);
        stack_b.poll(now, &mut device_b);
        switch.poll(now);
        let socket = stack_a.sockets_mut().get_mut::<icmp::Socket>(handle);
        if let Ok((payload, from)) = socket.recv() {
            let packet = Icmpv4Packet::new_checked(payload).unwrap();
            let repr = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap();
            if let Icmpv4Repr::EchoReply { seq_no, data, .. } = repr {
                reply = Some((from, seq_no, data.to_vec()));
                break;
            }
        }
        now += Duration::from_millis(10);
    }
    assert_eq!(
        reply,
        Some((IpAddress::Ipv4(ip_b), 1, b"through the switch".to_vec()))
    );
    let table: Vec<_> = switch
        .mac_table(now)
        .iter()
        .map(|entry| entry.mac)
        .collect();
    assert_eq!(table, vec![mac_a, mac_b]);
    // ARP request (broadcast) reached the bystander; the echo and its reply did not.
    let seen = drain(&bystander);
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0][..6], &BROADCAST.0);
    assert_eq!(&seen[0][12..14], &[0x08, 0x06]);
}

#[test]
fn port_device_withholds_transmit_tokens_while_the_switch_is_behind() {
    let config = SwitchConfig {
        queue_frames: 1,
        ..SwitchConfig::default()
    };
    let mut switch = Switch::new("internal", config);
    let mut device = PortDevice::new(switch.add_port(PortKind::Appliance, Some(mac(1))));
    let _other = switch.add_port(guest("b"), None);
    let token = device.transmit(T0).expect("room in the ingress queue");
    phy::TxToken::consume(token, 60, |buffer| {
        buffer.copy_from_slice(&frame(BROADCAST, mac(1), 0))
    });
    assert!(device.transmit(T0).is_none());
    switch.poll(T0);
    assert!(device.transmit(T0).is_some());
    assert!(device.receive(T0).is_none());
}

/// A NIC with scripted received frames, recording what is sent, with a limited TX ring.
struct MockNic {
    received: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    tx_room: usize,
    mtu: usize,
}

struct MockRx(Vec<u8>);
struct MockTx<'a>(&'a mut MockNic);

impl phy::RxToken for MockRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for MockTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = vec![0; len];
        let result = f(&mut buffer);
        self.0.tx_room -= 1;
        self.0.sent.push(buffer);
        result
    }
}

impl Device for MockNic {
    type RxToken<'a> = MockRx;
    type TxToken<'a> = MockTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(MockRx, MockTx<'_>)> {
        let frame = self.received.pop_front()?;
        Some((MockRx(frame), MockTx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<MockTx<'_>> {
        (self.tx_room > 0).then_some(MockTx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = self.mtu;
        capabilities
    }
}

#[test]
fn pump_uplink_moves_frames_both_ways_within_its_budget() {
    let mut switch = Switch::new("bridged", SwitchConfig::default());
    let uplink = switch.add_port(
        PortKind::Uplink {
            name: "e1000 52:54:00:12:34:56".to_string(),
        },
        None,
    );
    let guest_port = switch.add_port(guest("web"), Some(mac(1)));
    let mut nic = MockNic {
        received: (0..6)
            .map(|tag| frame(BROADCAST, mac(50 + tag), tag))
            .collect(),
        sent: Vec::new(),
        tx_room: 3,
        mtu: 1514,
    };
    assert!(pump_uplink(&mut nic, &uplink, T0, 4));
    assert_eq!(nic.received.len(), 2);
    switch.poll(T0);
    assert_eq!(drain(&guest_port).len(), 4);
    assert!(pump_uplink(&mut nic, &uplink, T0, 4));
    switch.poll(T0);
    assert_eq!(drain(&guest_port).len(), 2);
    assert_eq!(stats(&switch, &uplink).rx_frames, 6);

    // Out: the guest's frames, a tagged one too long for this NIC's MTU among them.
    guest_port.send(&frame_len(BROADCAST, mac(1), 9, 1518));
    for tag in 0..4 {
        guest_port.send(&frame(mac(50), mac(1), tag));
    }
    switch.poll(T0);
    assert!(pump_uplink(&mut nic, &uplink, T0, 2));
    // The oversize frame was taken and dropped, one frame sent: budget 2.
    assert_eq!(nic.sent, vec![frame(mac(50), mac(1), 0)]);
    assert_eq!(stats(&switch, &uplink).dropped_bad_frame, 1);
    // The NIC's ring has room for two more: the fourth frame stays queued.
    assert!(pump_uplink(&mut nic, &uplink, T0, 8));
    assert_eq!(nic.sent.len(), 3);
    assert!(uplink.has_frames());
    assert!(!pump_uplink(&mut nic, &uplink, T0, 8));
}

#[test]
fn handles_cross_threads_and_the_switch_can_sit_in_a_static_lock() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<PortHandle>();
    send::<Switch>();
    send::<PortDevice>();
    // A guest's vCPU thread sends while the loop's thread polls.
    let mut switch = Switch::new("bridged", SwitchConfig::default());
    let from_thread = switch.add_port(guest("a"), Some(mac(1)));
    let kept = from_thread.clone();
    let listener = switch.add_port(guest("b"), Some(mac(2)));
    let sender = std::thread::spawn(move || {
        (0..100)
            .filter(|&tag| from_thread.send(&frame(mac(2), mac(1), tag)))
            .count()
    });
    let mut received = 0;
    let mut now = T0;
    let sent = loop {
        switch.poll(now);
        received += drain(&listener).len();
        if sender.is_finished() {
            break sender.join().unwrap();
        }
        now += Duration::from_millis(1);
    };
    // The rest, a budget per poll.
    while switch.has_work() {
        switch.poll(now);
        received += drain(&listener).len();
    }
    assert_eq!(received, sent);
    assert_eq!(stats(&switch, &kept).rx_frames, sent as u64);
    // With the last handle gone the port goes, and frames it still had queued go with it.
    kept.send(&frame(BROADCAST, mac(1), 0));
    drop(kept);
    switch.poll(now);
    assert_eq!(switch.ports().len(), 1);
    assert!(drain(&listener).is_empty());
}
