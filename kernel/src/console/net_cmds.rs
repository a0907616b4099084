//! The `net` command: the management interface (NIC, address, HTTP), then both guest
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
    let _ = writeln!(out, "  http:     port {}, /api/v1 ({tokens})", net.port());
    let pending = settings.reboot_needed();
    if !pending.is_empty() {
        let _ = writeln!(
            out,
            "  note:     saved changes to {} take effect after a reboot",
            pending.join(" and ")
        );
    }
}
