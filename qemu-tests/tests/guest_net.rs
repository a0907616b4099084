//! Guest networking (issue 14): Debian guests with virtio-net NICs on Keel's `bridged` and
//! `internal` switches, the hostile-net guest's bad frames and flood, and the validation of
//! `nics`.
//!
//! The `plain_qemu_*` tests run the network guest (and `hostile-net`) directly under QEMU TCG
//! with `virtio-net-pci,disable-legacy=on` on user networking: they prove the guest image
//! before Keel is in the way. The `keel_*` tests run the same guests as Keel VMs. All traffic
//! stays on 127.0.0.1 (QEMU's `hostfwd`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::http;
use keel_qemu_tests::net_guest::{
    Addressing, GUEST_PROMPT, LEASE_PREFIX, MAC_PREFIX, NET_INITRAMFS, NET_READY_MARKER,
    guest_lines, lease_of, net_cmdline, net_guest, page_text,
};
use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, check};

/// How long the guest may take from QEMU's start to its ready line under plain QEMU.
const PLAIN_BOOT: Duration = Duration::from_secs(180);

/// How long a Debian guest may take to its ready line as a Keel VM.
const KEEL_GUEST_BOOT: Duration = Duration::from_secs(480);

/// The network guest under plain QEMU (`-M q35`, 256 MiB, one CPU) with a modern-only
/// virtio-net-pci NIC on user networking, port 80 of 10.0.2.15 forwarded from `port`.
fn plain_qemu_net_guest(cmdline: &str, port: u16) -> Machine {
    let g = net_guest();
    let mut q = Qemu::pvh(&g.guest.kernel)
        .machine("q35")
        .cpu("qemu64")
        .memory_mib(256)
        .cpus(1)
        .append(cmdline)
        .timeout(PLAIN_BOOT)
        .hard_timeout(Duration::from_secs(300))
        .args([
            "-initrd".to_owned(),
            g.initramfs.display().to_string(),
            "-netdev".to_owned(),
            format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80"),
            "-device".to_owned(),
            "virtio-net-pci,netdev=n0,disable-legacy=on".to_owned(),
        ]);
    q.defmt_elf = None;
    q.spawn().unwrap()
}

/// Types `command` into a guest shell (plain QEMU: the console is the guest's) and waits for
/// `PING-RESULT-42 <target> <status>`; returns ping's exit status.
fn plain_ping(m: &mut Machine, target: &str) -> u32 {
    m.type_line(&ping_line(target));
    ping_status(m, target)
}

/// A shell line that pings `target` twice and prints `PING-RESULT-42 <target> <status>`. The
/// `$((40+2))` keeps the typed echo from matching the answer.
fn ping_line(target: &str) -> String {
    format!("ping -c 2 -W 3 {target} >/dev/null 2>&1; echo PING-RESULT-$((40+2)) {target} $?")
}

/// Waits for [`ping_line`]'s answer for `target`; returns ping's exit status.
fn ping_status(m: &mut Machine, target: &str) -> u32 {
    let re = format!(
        r"PING-RESULT-42 {} (\d+)\r?\n",
        regex::escape(target)
    );
    let answer = m.expect_within(Pattern::regex(&re), Duration::from_secs(60));
    answer.group(1).parse().unwrap_or(u32::MAX)
}

/// `GET /` on 127.0.0.1:`port` until it answers (a forward to a guest that has no address
/// yet resets the connection).
fn guest_page(m: &Machine, port: u16) -> String {
    match http::wait_until_up(port, "/", Duration::from_secs(60)) {
        Ok(r) if r.status == 200 => r.body,
        Ok(r) => m.fail(format!("GET / on port {port}: {r:?}")),
        Err(e) => m.fail(e),
    }
}

#[test]
fn plain_qemu_debian_gets_a_lease_and_serves_its_page_over_virtio_net() {
    let port = http::free_port();
    let mut m = plain_qemu_net_guest(&net_cmdline("ref", &Addressing::Dhcp, 0), port);
    let mac = m.expect_line(MAC_PREFIX);
    check!(m, mac == "52:54:00:12:34:56", "eth0's MAC: {mac:?}");
    let lease = m.expect_line(LEASE_PREFIX);
    check!(m, lease == "10.0.2.15", "QEMU's first lease is 10.0.2.15: {lease:?}");
    let ready = m.expect(Pattern::line_starting(NET_READY_MARKER));
    eprintln!(
        "plain QEMU: the network guest was ready {:.1} s after QEMU started",
        ready.at.as_secs_f64()
    );
    let page = guest_page(&m, port);
    check!(m, page == page_text("ref"), "the guest's page: {page:?}");
    m.expect(GUEST_PROMPT);
    // The gateway answers pings: what the internal guests must not reach.
    let status = plain_ping(&mut m, "10.0.2.2");
    check!(m, status == 0, "ping 10.0.2.2 from a guest on user networking: {status}");
}

#[test]
fn plain_qemu_debian_with_a_static_address_serves_its_page() {
    let port = http::free_port();
    let addressing = Addressing::Static {
        cidr: "10.0.2.15/24".into(),
        gateway: Some("10.0.2.2".into()),
    };
    let mut m = plain_qemu_net_guest(&net_cmdline("fixed", &addressing, 0), port);
    m.expect(Pattern::line_starting("static: 10.0.2.15"));
    m.expect(Pattern::line_starting(NET_READY_MARKER));
    let page = guest_page(&m, port);
    check!(m, page == page_text("fixed"), "the guest's page: {page:?}");
    let lines = guest_lines(&m.transcript_text(), None);
    check!(m, lease_of(&lines).is_none(), "a static guest ran udhcpc");
}
