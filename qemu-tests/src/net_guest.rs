//! The guest-networking tests' Linux guest: Debian's kernel with its `virtio_net` driver (a
//! module, loaded by `insmod` from the initramfs in dependency order, like the disk guest's
//! modules: see [`crate::disk_guest::kernel_modules`]) and busybox's `udhcpc`, `httpd` and
//! `ping`.
//!
//! The same initramfs serves every role; the kernel command line picks it:
//!
//! - `keel.guest=<name>`: the name the guest's page carries (`keel guest <name>`, see
//!   [`page_text`]) and its lines start with nothing more (Keel prefixes `[<vm>] ` itself);
//! - `keel.net=dhcp` (the default) runs `udhcpc` on `eth0`, whose script ([`LEASE_SCRIPT`])
//!   sets the address and the default route and prints `lease: <ip>` on the console;
//!   `keel.net=<ip>/<prefix>` sets a static address instead (and `keel.gw=<ip>` a default
//!   route);
//! - `keel.bigfile=<MiB>` also writes a file of that many MiB as `/big` for `net-bench`.
//!
//! It prints `NET-MAC=<eth0's MAC>`, starts `httpd` on port 80, prints
//! `KEEL-NET-READY <name>` and then offers a shell (`guest# `) on the console for the tests'
//! `ping` commands.

use std::path::PathBuf;

use crate::disk_guest::{DiskModules, DiskToolError, io_error, kernel_modules, write_atomically};
use crate::linux_guest::{LinuxGuest, busybox_initramfs, guest_dir};

/// The modules the guest loads (their `depends=` come on top: `virtio`, `virtio_ring`,
/// `failover`, `net_failover`, …).
pub const NET_ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// Where [`net_modules`] keeps the modules, under `target/linux-guest/`.
pub const NET_MODULES_DIR: &str = "net-modules";

/// The initramfs file name, also its store file name in the Keel tests.
pub const NET_INITRAMFS: &str = "net-init.cpio";

/// The line the guest prints once `httpd` runs: `KEEL-NET-READY <name>`.
pub const NET_READY_MARKER: &str = "KEEL-NET-READY";

/// The prefix of the line [`LEASE_SCRIPT`] prints when `udhcpc` binds a lease: `lease: <ip>`.
pub const LEASE_PREFIX: &str = "lease: ";

/// The prefix of the line with eth0's MAC: `NET-MAC=52:54:00:12:34:56`.
pub const MAC_PREFIX: &str = "NET-MAC=";

/// The bench file's path on the guest's web server.
pub const BIG_FILE_PATH: &str = "/big";

/// The guest's shell prompt.
pub const GUEST_PROMPT: &str = "guest# ";

/// The page `httpd` serves at `/` for a guest named `name`.
pub fn page_text(name: &str) -> String {
    format!("keel guest {name}\n")
}

/// How the guest configures `eth0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `udhcpc` on eth0.
    Dhcp,
    /// A static address `cidr` (`10.99.0.50/24`) and an optional default gateway.
    Static {
        /// The address with its prefix length.
        cidr: String,
        /// The default gateway, if any.
        gateway: Option<String>,
    },
}

/// The kernel command line of a network guest named `name` (see the module documentation);
/// `big_mib` > 0 adds the bench file.
pub fn net_cmdline(name: &str, addressing: &Addressing, big_mib: u32) -> String {
    let mut line = format!("{} keel.guest={name}", crate::linux_guest::TEST_CMDLINE);
    match addressing {
        Addressing::Dhcp => line.push_str(" keel.net=dhcp"),
        Addressing::Static { cidr, gateway } => {
            line.push_str(&format!(" keel.net={cidr}"));
            if let Some(gw) = gateway {
                line.push_str(&format!(" keel.gw={gw}"));
            }
        }
    }
    if big_mib > 0 {
        line.push_str(&format!(" keel.bigfile={big_mib}"));
    }
    line
}

/// `udhcpc`'s script (`-s`): brings the interface up without an address on `deconfig`, sets
/// the address, netmask and default route on `bound` and `renew`, and on `bound` prints
/// `lease: <ip>` to the console (`udhcpc` runs in the background after its first lease, with
/// its own output on /dev/null).
pub const LEASE_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
deconfig)
    ifconfig "$interface" 0.0.0.0 up
    ;;
bound|renew)
    ifconfig "$interface" "$ip" netmask "$subnet" up
    if [ -n "$router" ]; then
        while route del default dev "$interface" 2>/dev/null; do :; done
        for r in $router; do route add default gw "$r" dev "$interface"; break; done
    fi
    [ "$1" = bound ] && echo "lease: $ip" > /dev/console
    ;;
esac
exit 0
"#;

/// The `/init` body after the module loads (see the module documentation).
pub const NET_INIT: &str = r#"name=guest
net=dhcp
gw=
big=0
for w in $(cat /proc/cmdline); do
    case "$w" in
    keel.guest=*) name=${w#keel.guest=} ;;
    keel.net=*) net=${w#keel.net=} ;;
    keel.gw=*) gw=${w#keel.gw=} ;;
    keel.bigfile=*) big=${w#keel.bigfile=} ;;
    esac
done
mkdir -p /www
echo "keel guest $name" > /www/index.html
if [ "$big" -gt 0 ]; then dd if=/dev/zero of=/www/big bs=1M count="$big" 2>/dev/null; fi
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "NET-MAC=$(cat /sys/class/net/eth0/address 2>&1)"
ifconfig lo 127.0.0.1 up
ifconfig eth0 up
if [ "$net" = dhcp ]; then
    udhcpc -i eth0 -s /bin/keel-lease -t 30 -T 2 -b
else
    ip addr add "$net" dev eth0
    echo "static: ${net%/*}"
    if [ -n "$gw" ]; then ip route add default via "$gw" dev eth0; fi
fi
httpd -p 80 -h /www
echo "KEEL-NET-READY $name"
export PS1='guest# '
exec sh
"#;

/// The busybox applets [`NET_INIT`], [`LEASE_SCRIPT`] and the tests' commands run.
pub const NET_APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "cat", "sleep", "mkdir", "echo", "dd", "ifconfig", "route", "udhcpc",
    "httpd", "ping", "ip", "wget", "dmesg", "tail", "poweroff",
];

/// [`NET_ROOT_MODULES`] and their dependencies in load order, in
/// `target/linux-guest/net-modules/<release>/` (downloaded the first time).
pub fn net_modules(guest: &LinuxGuest) -> Result<DiskModules, DiskToolError> {
    kernel_modules(guest, NET_ROOT_MODULES, NET_MODULES_DIR)
}

/// The network guest's initramfs: busybox, `modules`, [`LEASE_SCRIPT`] as `/bin/keel-lease`
/// and [`NET_INIT`].
pub fn net_initramfs(guest: &LinuxGuest, modules: &DiskModules) -> Result<Vec<u8>, DiskToolError> {
    let busybox = std::fs::read(&guest.busybox).map_err(io_error(&guest.busybox))?;
    let mut init = String::from(
        "mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for name in modules.names() {
        init.push_str(&format!(
            "insmod /lib/modules/{name}.ko || {{ echo KEEL-INSMOD-FAILED {name}; dmesg | tail -5; }}\n"
        ));
    }
    init.push_str(NET_INIT);
    let mut cpio = busybox_initramfs(&busybox, &init, NET_APPLETS);
    cpio.file("bin/keel-lease", 0o755, LEASE_SCRIPT.as_bytes());
    cpio.dir("lib/modules");
    for file in &modules.files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let data = std::fs::read(file).map_err(io_error(file))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data);
    }
    Ok(cpio.finish())
}

/// The network guest: Debian's kernel and busybox, the virtio-net modules, and the
/// initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetGuest {
    /// Kernel and busybox.
    pub guest: LinuxGuest,
    /// The modules in the initramfs.
    pub modules: DiskModules,
    /// `target/linux-guest/net-init.cpio`.
    pub initramfs: PathBuf,
}

/// Fetches the guest and its modules and writes [`NET_INITRAMFS`], once per process; later
/// calls get the same answer.
///
/// # Panics
///
/// If a step fails (with the same error in every caller).
pub fn net_guest() -> &'static NetGuest {
    static BUILT: std::sync::OnceLock<Result<NetGuest, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let guest = crate::linux_guest::linux_guest()
            .map_err(|e| format!("fetching the Linux guest failed: {e}"))?;
        let modules = net_modules(&guest)
            .map_err(|e| format!("fetching the virtio-net modules failed: {e}"))?;
        let archive = net_initramfs(&guest, &modules)
            .map_err(|e| format!("building {NET_INITRAMFS} failed: {e}"))?;
        let initramfs = guest_dir().join(NET_INITRAMFS);
        write_atomically(&initramfs, &archive).map_err(|e| e.to_string())?;
        Ok(NetGuest {
            guest,
            modules,
            initramfs,
        })
    });
    match built {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

/// The guest's lines in `text`: with `vm` `None` (plain QEMU) every line, otherwise the
/// lines Keel printed for VM `vm` (after `[<vm>] `, which an attached console leaves out).
pub fn guest_lines(text: &str, vm: Option<&str>) -> Vec<String> {
    let text = text.replace('\r', "\n");
    match vm {
        None => text.lines().map(|l| l.trim_end().to_owned()).collect(),
        Some(name) => {
            let prefix = format!("[{name}] ");
            text.lines()
                .filter_map(|l| {
                    let at = l.find(&prefix)?;
                    Some(l[at + prefix.len()..].trim_end().to_owned())
                })
                .collect()
        }
    }
}

/// The address of the first `lease: <ip>` line among `lines`.
pub fn lease_of(lines: &[String]) -> Option<std::net::Ipv4Addr> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(LEASE_PREFIX)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_carries_name_addressing_and_bench_file() {
        let dhcp = net_cmdline("a", &Addressing::Dhcp, 0);
        assert!(dhcp.ends_with(" keel.guest=a keel.net=dhcp"), "{dhcp}");
        assert!(dhcp.starts_with("console=ttyS0"));
        let fixed = net_cmdline(
            "b",
            &Addressing::Static {
                cidr: "10.99.0.50/24".into(),
                gateway: Some("10.99.0.1".into()),
            },
            64,
        );
        assert!(
            fixed.ends_with(
                " keel.guest=b keel.net=10.99.0.50/24 keel.gw=10.99.0.1 keel.bigfile=64"
            ),
            "{fixed}"
        );
    }

    #[test]
    fn leases_and_keel_prefixed_lines_are_found() {
        let text = "boot\r\n[web] NET-MAC=02:00:00:00:00:01\r\n[web] lease: 10.0.2.16\r\n\
                    [other] lease: 10.0.2.17\r\n";
        let web = guest_lines(text, Some("web"));
        assert_eq!(web, ["NET-MAC=02:00:00:00:00:01", "lease: 10.0.2.16"]);
        assert_eq!(lease_of(&web), Some([10, 0, 2, 16].into()));
        assert_eq!(
            lease_of(&guest_lines(text, Some("other"))),
            Some([10, 0, 2, 17].into())
        );
        assert_eq!(lease_of(&guest_lines(text, Some("none"))), None);
        assert_eq!(guest_lines("x\ny\n", None), ["x", "y"]);
    }

    #[test]
    fn the_init_reads_every_cmdline_key_and_ends_in_a_shell() {
        for key in ["keel.guest=", "keel.net=", "keel.gw=", "keel.bigfile="] {
            assert!(NET_INIT.contains(key), "{key}");
        }
        assert!(NET_INIT.contains(&format!("echo \"{NET_READY_MARKER} $name\"")));
        assert!(NET_INIT.trim_end().ends_with("exec sh"));
        assert!(LEASE_SCRIPT.contains("echo \"lease: $ip\""));
        for applet in ["udhcpc", "httpd", "ping", "ifconfig", "route", "ip"] {
            assert!(NET_APPLETS.contains(&applet), "{applet}");
        }
    }
}
