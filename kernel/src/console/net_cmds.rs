//! The `net` command: the management interface (NIC, address, HTTP), every host NIC found
//! on PCI (driver or "no driver", MAC, link, which is the uplink), then both guest
//! switches (ports with their traffic and drops, MAC tables) and the internal network (the
//! appliance's address there, the DHCP server's leases). The lines come from
//! `crate::net::report`, which is host-tested; this gathers the values.

use alloc::string::String;

use crate::kprint;
use crate::net::report;
use crate::runtime::Services;

/// Prints `net`.
pub fn show(services: &Services<'_>) {
    let mut out = String::new();
    management(services, &mut out);
    host_nic_lines(services, &mut out);
    let now = crate::net::now();
    {
        let switches = services.system.switches.lock();
        for switch in switches.all() {
            let _ = report::write_switch(
                &mut out,
                "  ",
                switch.network(),
                &switch.ports(),
                &switch.mac_table(now),
            );
        }
    }
    match services.internal {
        Some(internal) => {
            let _ = report::write_internal(
                &mut out,
                "  ",
                &internal.address(),
                internal.mac().0,
                internal.dhcp(),
                &internal.leases(now),
            );
        }
        None => out.push_str(
            "  internal: the appliance has no interface there (see the boot messages); guests \
             on internal still reach each other\n",
        ),
    }
    kprint!("{out}");
}

/// Every network-class PCI function, with the live link state of those that are up.
fn host_nic_lines(services: &Services<'_>, out: &mut String) {
    let listing = crate::net::host_nics();
    if listing.is_empty() {
        out.push_str("  host NICs: none on PCI\n");
        return;
    }
    out.push_str("  host NICs:\n");
    let uplink = services.net.map(|net| net.uplink_address());
    let nics = services.system.nics.lock();
    for entry in &listing {
        let (bus, device, function) = entry.pci;
        let address = crate::pci::PciAddress {
            bus,
            device,
            function,
        };
        let link = nics
            .iter()
            .find(|nic| nic.address == address)
            .and_then(|nic| nic.link_up());
        let _ = crate::net::host_nics::write_host_nic(
            out,
            "    ",
            entry,
            link,
            uplink == Some(address),
        );
    }
}

/// The management interface, as `net` showed it before guest networking.
fn management(services: &Services<'_>, out: &mut String) {
    use core::fmt::Write as _;
    let settings = &*services.settings;
    let Some(net) = services.net else {
        let _ = writeln!(out, "no network: no supported network card was found");
        return;
    };
    let status = net.status();
    let _ = writeln!(out, "  hostname: {}", settings.current().hostname);
    let _ = writeln!(out, "  nic:      {} (uplink of switch bridged)", net.nic());
    match status.address {
        Some(addr) => {
            let _ = writeln!(
                out,
                "  address:  {addr} ({})",
                if status.dhcp { "DHCP" } else { "static" }
            );
        }
        None => {
            let _ = writeln!(out, "  address:  none yet (waiting for DHCP)");
        }
    }
    if let Some(gw) = status.gateway {
        let _ = writeln!(out, "  gateway:  {gw}");
    }
    for dns in &status.dns {
        let _ = writeln!(out, "  dns:      {dns}");
    }
    let tokens = match net.token_count() {
        0 => String::from("no token: protected routes answer 401"),
        1 => String::from("1 bearer token"),
        n => alloc::format!("{n} bearer tokens"),
    };
    net_https_lines(out, net, &tokens);
    let pending = settings.reboot_needed();
    if !pending.is_empty() {
        let _ = writeln!(
            out,
            "  note:     saved changes to {} take effect after a reboot",
            pending.join(" and ")
        );
    }
}

/// The `http`/`https` lines of `net`: ports, what plain HTTP does, the certificate.
fn net_https_lines(out: &mut String, net: &crate::mgmt::NetPlane, tokens: &str) {
    use crate::mgmt::HttpsState;
    use core::fmt::Write as _;
    use keel_netstack::http::PlainHttp;
    match net.https() {
        HttpsState::On { port, plain } => {
            let _ = writeln!(out, "  https:    port {port}, /api/v1 ({tokens})");
            let plain = match plain {
                PlainHttp::Off => String::from("off"),
                PlainHttp::Redirect => alloc::format!("port {}, redirects to HTTPS", net.port()),
                PlainHttp::Serve => {
                    alloc::format!("port {}, serves the API (INSECURE)", net.port())
                }
            };
            let _ = writeln!(out, "  http:     {plain}");
            if let Some(fingerprint) = crate::tls_setup::fingerprint() {
                let _ = writeln!(out, "  cert:     SHA-256 {fingerprint}");
            }
        }
        HttpsState::Off {
            reason,
            serve_plain,
        } => {
            let _ = writeln!(out, "  https:    off ({reason})");
            if *serve_plain {
                let _ = writeln!(
                    out,
                    "  http:     port {}, /api/v1 ({tokens}) (INSECURE)",
                    net.port()
                );
            } else {
                let _ = writeln!(out, "  http:     port {}, answers 503", net.port());
            }
        }
    }
}
