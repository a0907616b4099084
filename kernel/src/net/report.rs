//! What operators read about guest networking: a guest NIC's `vm info` line, a switch's
//! ports and MAC table and the internal network's leases for `net`. Pure formatting over
//! the switch's and the devices' values, so it is host-tested; the console and `vm info`
//! gather the values and print these lines.

use alloc::string::String;
use core::fmt::{self, Display, Write};

use keel_config::schema::MacAddress;
use keel_netstack::dhcp_server::Lease;
use keel_netstack::switch::{MacEntry, PortKind, PortStatus};
use keel_vmm::virtio::net::NetStats;

/// A port's kind as the API names it: `uplink`, `appliance` or `guest`.
pub fn port_kind(kind: &PortKind) -> &'static str {
    match kind {
        PortKind::Uplink { .. } => "uplink",
        PortKind::Appliance => "appliance",
        PortKind::Guest { .. } => "guest",
    }
}

/// A port's name: the uplink NIC (`e1000 52:54:00:12:34:56`), `appliance`, or a guest NIC
/// (`web nic0`).
pub fn port_name(kind: &PortKind) -> String {
    match kind {
        PortKind::Uplink { name } => name.clone(),
        PortKind::Appliance => String::from("appliance"),
        PortKind::Guest { vm, nic } => alloc::format!("{vm} nic{nic}"),
    }
}

/// One NIC of `vm info`:
/// `nic0: 02:xx:xx:xx:xx:xx bridged rx 12 frames 3456 bytes, tx 10 frames 1234 bytes,
/// dropped 0, bad 0` (dropped: frames the network refused or that fit no receive buffer;
/// bad: malformed frames the guest sent).
pub fn write_nic_line(
    out: &mut dyn Write,
    index: usize,
    mac: [u8; 6],
    network: &str,
    stats: &NetStats,
) -> fmt::Result {
    writeln!(
        out,
        "nic{index}: {} {network} rx {} frames {} bytes, tx {} frames {} bytes, dropped {}, bad {}",
        MacAddress(mac),
        stats.rx_frames,
        stats.rx_bytes,
        stats.tx_frames,
        stats.tx_bytes,
        stats.tx_dropped.saturating_add(stats.rx_dropped),
        stats.tx_bad
    )
}

/// A switch for `net`: its ports (id, kind and name, MAC, traffic as the port sees it,
/// drops) and its MAC table, each line indented by `indent`.
pub fn write_switch(
    out: &mut dyn Write,
    indent: &str,
    network: &str,
    ports: &[PortStatus],
    macs: &[MacEntry],
) -> fmt::Result {
    writeln!(
        out,
        "{indent}switch {network}: {} port{}, {} MAC{} learned",
        ports.len(),
        plural(ports.len()),
        macs.len(),
        plural(macs.len())
    )?;
    for port in ports {
        let mac = match port.mac {
            Some(mac) => alloc::format!("{}", MacAddress(mac.0)),
            None => String::from("any MAC"),
        };
        writeln!(
            out,
            "{indent}  port {} {} {}, {mac}",
            port.id,
            port_kind(&port.kind),
            port_name(&port.kind)
        )?;
        let s = &port.stats;
        writeln!(
            out,
            "{indent}    in {} frames {} bytes, out {} frames {} bytes",
            s.rx_frames, s.rx_bytes, s.tx_frames, s.tx_bytes
        )?;
        writeln!(
            out,
            "{indent}    dropped: {} in-queue full, {} out-queue full, {} forged source, {} bad frame",
            s.dropped_ingress_full,
            s.dropped_egress_full,
            s.dropped_forged_source,
            s.dropped_bad_frame
        )?;
    }
    for entry in macs {
        writeln!(
            out,
            "{indent}  mac {} at port {}, seen {} s ago",
            MacAddress(entry.mac.0),
            entry.port,
            entry.age_secs
        )?;
    }
    Ok(())
}

/// The internal network for `net`: the appliance's address and MAC there, whether the DHCP
/// server runs, and its leases.
pub fn write_internal(
    out: &mut dyn Write,
    indent: &str,
    address: &dyn Display,
    mac: [u8; 6],
    dhcp: bool,
    leases: &[Lease],
) -> fmt::Result {
    let server = if dhcp {
        alloc::format!(
            "DHCP server on, {} lease{}",
            leases.len(),
            plural(leases.len())
        )
    } else {
        String::from("DHCP server off")
    };
    writeln!(
        out,
        "{indent}internal: {address} (appliance {}), {server}",
        MacAddress(mac)
    )?;
    for lease in leases {
        writeln!(
            out,
            "{indent}  lease {} {}, expires in {} s",
            MacAddress(lease.mac.0),
            lease.address,
            lease.expires_in_secs
        )?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_line_has_the_contract_s_shape() {
        let stats = NetStats {
            rx_frames: 12,
            rx_bytes: 3456,
            tx_frames: 10,
            tx_bytes: 1234,
            tx_dropped: 2,
            tx_bad: 1,
            rx_dropped: 3,
        };
        let mut out = String::new();
        write_nic_line(
            &mut out,
            0,
            [2, 0xab, 0, 0x12, 0x34, 0xff],
            "bridged",
            &stats,
        )
        .unwrap();
        assert_eq!(
            out,
            "nic0: 02:ab:00:12:34:ff bridged rx 12 frames 3456 bytes, tx 10 frames 1234 bytes, \
             dropped 5, bad 1\n"
        );
    }

    #[test]
    fn a_switch_shows_its_ports_traffic_drops_and_mac_table() {
        use keel_netstack::switch::{Switch, SwitchConfig};
        use smoltcp::time::Instant;
        use smoltcp::wire::EthernetAddress;

        let guest_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x07]);
        let mut switch = Switch::new("bridged", SwitchConfig::default());
        let uplink = switch.add_port(
            PortKind::Uplink {
                name: String::from("e1000 52:54:00:12:34:56"),
            },
            None,
        );
        let guest = switch.add_port(
            PortKind::Guest {
                vm: String::from("web"),
                nic: 0,
            },
            Some(guest_mac),
        );
        // A broadcast from the guest, and one with a forged source.
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&guest_mac.0);
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(guest.send(&frame));
        let mut forged = frame;
        forged[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        guest.send(&forged);
        let now = Instant::from_secs(10);
        switch.poll(now);
        assert!(uplink.has_frames());

        let mut out = String::new();
        write_switch(
            &mut out,
            "  ",
            "bridged",
            &switch.ports(),
            &switch.mac_table(now),
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  switch bridged: 2 ports, 1 MAC learned");
        assert!(
            lines.contains(&"    port 0 uplink e1000 52:54:00:12:34:56, any MAC"),
            "{out}"
        );
        assert!(
            lines.contains(&"    port 1 guest web nic0, 02:00:00:00:00:07"),
            "{out}"
        );
        assert!(
            lines.contains(&"      in 1 frames 60 bytes, out 0 frames 0 bytes"),
            "{out}"
        );
        assert!(
            lines.contains(&"      in 0 frames 0 bytes, out 1 frames 60 bytes"),
            "{out}"
        );
        assert!(
            lines.contains(
                &"      dropped: 0 in-queue full, 0 out-queue full, 1 forged source, 0 bad frame"
            ),
            "{out}"
        );
        assert_eq!(
            lines.last(),
            Some(&"    mac 02:00:00:00:00:07 at port 1, seen 0 s ago")
        );
    }

    #[test]
    fn the_internal_network_shows_its_address_and_leases() {
        use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

        let leases = [Lease {
            mac: EthernetAddress([0x02, 0xaa, 0, 0, 0, 1]),
            address: Ipv4Address::new(10, 99, 0, 100),
            expires_in_secs: 3500,
        }];
        let address = Ipv4Cidr::new(Ipv4Address::new(10, 99, 0, 1), 24);
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let mut out = String::new();
        write_internal(&mut out, "  ", &address, mac, true, &leases).unwrap();
        assert_eq!(
            out,
            "  internal: 10.99.0.1/24 (appliance 02:00:00:00:00:01), DHCP server on, 1 lease\n\
             \x20   lease 02:aa:00:00:00:01 10.99.0.100, expires in 3500 s\n"
        );
        let mut out = String::new();
        write_internal(&mut out, "", &address, mac, false, &[]).unwrap();
        assert_eq!(
            out,
            "internal: 10.99.0.1/24 (appliance 02:00:00:00:00:01), DHCP server off\n"
        );
    }

    #[test]
    fn port_names_say_what_the_port_is() {
        let uplink = PortKind::Uplink {
            name: String::from("e1000 52:54:00:12:34:56"),
        };
        let guest = PortKind::Guest {
            vm: String::from("web"),
            nic: 1,
        };
        assert_eq!(port_name(&uplink), "e1000 52:54:00:12:34:56");
        assert_eq!(port_name(&PortKind::Appliance), "appliance");
        assert_eq!(port_name(&guest), "web nic1");
        assert_eq!(port_kind(&uplink), "uplink");
        assert_eq!(port_kind(&PortKind::Appliance), "appliance");
        assert_eq!(port_kind(&guest), "guest");
    }
}
