//! Live migration and dirty-page tracking on AMD-V under QEMU TCG (SeaBIOS).
//!
//! Migration: two appliances joined by a second NIC on a QEMU socket network
//! (`-netdev socket,listen=` / `connect=`), static addresses 10.77.0.1 and 10.77.0.2 on
//! it (`management.migration_link`); A runs the counter guest as the named VM `ticker`
//! and migrates it to B, where it counts on from the next tick (no repeat), is gone from
//! A, and `vm info` shows where it came from and the downtime. That migration is started
//! over the API (`POST /api/v1/vms/ticker/migrate`: bad input 422, a second one 409) and
//! both ends' `GET /api/v1/migrations` show it done with its downtime.
//!
//! Dirty log (`keel.img`): the `dirty` test
//! guest writes one byte into each of four known pages per `w` it reads on COM1, and
//! `vm dirty-log` must report exactly those pages and the guest's stack page (its print
//! routine pushes there) — nothing else, since the guest only polls the UART in between —
//! then none until the guest writes again, and the same pages after the next request
//! (each harvest re-protects what it reported).

use std::time::Duration;

use std::path::{Path, PathBuf};

use keel_qemu_tests::{Machine, Pattern, Qemu, appliance_image, artifacts, check, guests, http};

/// Ctrl-]: detaches the terminal from a VM console.
const DETACH: &str = "\x1d";

/// The pages one `w` dirties: the stack page, then the four the guest writes.
const WRITTEN: &str = "5 dirty pages: 0x7000 0x30000 0x31000 0x45000 0x9f000";

fn boot() -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner();
    m
}

/// Sends `w` to VM 1's console `times` times and waits for each answer.
fn request_writes(m: &mut Machine, times: usize) {
    m.type_line("vm console 1");
    m.expect("[attached to 1: Ctrl-] detaches]");
    for _ in 0..times {
        m.send("w").unwrap();
        m.expect_within("dirty guest: wrote 4 pages", Duration::from_secs(30));
    }
    m.send(DETACH).unwrap();
    m.expect("[detached from 1]");
    m.expect_prompt();
}

#[test]
fn the_dirty_log_reports_exactly_the_pages_the_guest_wrote() {
    let mut m = boot();
    m.type_line("vm run dirty.bin");
    m.expect("vm 1 started");
    m.expect("[vm1] dirty guest: ready");
    m.expect_prompt();

    let out = m.command("vm dirty-log 1 pages");
    check!(m, out.contains("vm 1 has no dirty log"), "{out:?}");
    let out = m.command("vm dirty-log 1 start");
    check!(m, out.contains("vm 1: dirty log on:"), "{out:?}");
    // The guest only polls its UART: nothing written.
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.contains("vm 1: 0 dirty pages:"),
        "idle guest: {out:?}"
    );

    request_writes(&mut m, 1);
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.trim_end().ends_with(WRITTEN),
        "after one request: {out:?}"
    );
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.contains("vm 1: 0 dirty pages:"),
        "harvest again: {out:?}"
    );

    // Re-protected: two more requests fault on the same pages again, logged once each.
    request_writes(&mut m, 2);
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.trim_end().ends_with(WRITTEN),
        "after two requests: {out:?}"
    );

    let out = m.command("vm dirty-log 1 stop");
    check!(m, out.contains("dirty log off"), "{out:?}");
    // Writable again: the guest runs on without faults.
    request_writes(&mut m, 1);
    let out = m.command("vm dirty-log 1 pages");
    check!(m, out.contains("vm 1 has no dirty log"), "{out:?}");
    let out = m.command("vm dirty-log 9 start");
    check!(m, out.contains("no running VM '9'"), "{out:?}");
}

/// The migration token both appliances share.
const TOKEN: &str = "migrate-token-0123456789";

/// The read-only disk image the ticker VM has; it migrates by name and hash.
const RO_IMAGE: &str = "ro.img";

/// Appliance `n` (1 or 2) presenting and accepting `token`: its migration-link MAC and
/// address, and (on 1) the counter VM with the read-only disk [`RO_IMAGE`].
fn migration_config_with_token(n: u8, token: &str) -> Vec<u8> {
    let a = artifacts();
    let ticker = if n == 1 {
        "[[vms]]\nname = \"ticker\"\nkernel = \"counter.bin\"\nmemory_mib = 16\nautostart = true\n\
         [[vms.disks]]\nfile = \"ro.img\"\nreadonly = true\n"
    } else {
        ""
    };
    let toml = format!(
        r#"
hostname = "host{n}"

[management]
api_tokens = ["{api}"]
migration_token = "{token}"
migration_link = {{ interface = "52:54:00:77:00:0{n}", address = "10.77.0.{n}", prefix = 24 }}

{ticker}"#,
        api = a.api_token
    );
    keel_image::appliance::parse_toml(&toml)
        .expect("the test configuration is valid")
        .to_json_pretty()
}

/// `keel.img` for appliance `n` in `dir`, the counter guest and [`RO_IMAGE`] in its store.
fn migration_image(dir: &Path, n: u8) -> PathBuf {
    migration_image_with(dir, n, true)
}

/// `keel.img` for appliance `n`, with [`RO_IMAGE`] in its store or not.
fn migration_image_with(dir: &Path, n: u8, ro_image: bool) -> PathBuf {
    let store = dir.join(format!("store{n}"));
    std::fs::create_dir(&store).unwrap();
    if ro_image {
        // The same 64 KiB on both appliances.
        let content: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(store.join(RO_IMAGE), content).unwrap();
    }
    let set = guests::build_guests().expect("building the test guests");
    let from = set.path(guests::COUNTER);
    std::fs::copy(&from, store.join(from.file_name().unwrap())).unwrap();
    let image = dir.join(format!("keel{n}.img"));
    appliance_image(
        Some(&store),
        &migration_config_with_token(n, TOKEN),
        &[],
        &image,
        "an appliance image",
    );
    image
}

/// Boots appliance `n` with its management NIC first (the API forwarded from `api_port`)
/// and the migration link second, on the socket network: `listen` on appliance 1,
/// `connect` on 2.
fn boot_appliance(image: &Path, n: u8, link_port: u16, api_port: u16) -> Machine {
    let a = artifacts();
    let socket = if n == 1 {
        format!("socket,id=mig,listen=127.0.0.1:{link_port}")
    } else {
        format!("socket,id=mig,connect=127.0.0.1:{link_port}")
    };
    let mut m = Qemu::seabios(image)
        .defmt_elf(&a.elf)
        .args([
            "-nic".to_owned(),
            format!(
                "{},mac=52:54:00:12:34:0{n}",
                http::nic_arg("virtio-net-pci", api_port)
            ),
            "-netdev".to_owned(),
            socket,
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=mig,mac=52:54:00:77:00:0{n}"),
        ])
        .spawn()
        .unwrap();
    // The link's line comes after the banner, before the first prompt.
    m.expect(format!("migration: virtio-net 52:54:00:77:00:0{n}"));
    m.expect_prompt();
    m
}

#[test]
fn a_running_vm_moves_to_the_other_appliance_and_counts_on() {
    let dir = tempfile::tempdir().unwrap();
    let (image_a, image_b) = (
        migration_image(dir.path(), 1),
        migration_image(dir.path(), 2),
    );
    let link_port = http::free_port();
    let (api_a, api_b) = (http::free_port(), http::free_port());
    let mut a = boot_appliance(&image_a, 1, link_port, api_a);
    let mut b = boot_appliance(&image_b, 2, link_port, api_b);
    for (m, port) in [(&mut a, api_a), (&mut b, api_b)] {
        if let Err(e) = http::wait_until_up(port, "/api/v1/health", Duration::from_secs(60)) {
            m.fail(&e);
        }
    }
    a.expect("[ticker] tick 2");

    let token = artifacts().api_token.clone();
    let post = |body: &str| {
        http::request(
            api_a,
            "POST",
            "/api/v1/vms/ticker/migrate",
            Some(&token),
            Some(body),
        )
        .expect("POST migrate")
    };
    let r = post(r#"{"host":"10.77.0"}"#);
    check!(a, r.status == 422, "a bad host: {} {}", r.status, r.body);
    let r = post(r#"{"host":"10.77.0.2"}"#);
    check!(a, r.status == 202, "the migration: {} {}", r.status, r.body);
    check!(
        a,
        r.body.contains(r#""peer":"10.77.0.2:7070""#) && r.body.contains(r#""phase":"requested""#),
        "{}",
        r.body
    );
    // One outgoing migration at a time (16 MiB under TCG takes far longer than this).
    let r = post(r#"{"host":"10.77.0.2"}"#);
    check!(
        a,
        r.status == 409,
        "a second migration: {} {}",
        r.status,
        r.body
    );
    a.expect("vm ticker: migrating to 10.77.0.2:7070");
    let outcome = a.expect_within(
        Pattern::regex(
            r"(vm ticker migrated to 10\.77\.0\.2: (\d+) rounds, \d+ MiB sent \(\d+ pages after the pause\), total (\d+) ms, downtime (\d+) ms|migration of vm ticker to \S+ abandoned: [^\r\n]*|error: vm migrate [^\r\n]*)",
        ),
        Duration::from_secs(120),
    );
    let done = outcome;
    check!(
        a,
        !done.group(2).is_empty(),
        "the migration failed: {}",
        done.group(1)
    );
    let rounds: u32 = done.group(2).parse().unwrap();
    eprintln!("migration: {}", done.group(1));
    check!(a, rounds >= 2, "pre-copy then the paused round: {rounds}");
    // The last tick A printed before the VM left.
    let before = String::from_utf8_lossy(&a.transcript()).into_owned();
    let last_on_a: u64 = before
        .lines()
        .filter_map(|l| l.split("[ticker] tick ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .expect("A printed ticks");

    b.expect(Pattern::regex(
        r"vm 1 migrated in from 10\.77\.0\.1 \('ticker', downtime \d+ ms\)",
    ));
    // Up to the line end: a number can arrive in pieces.
    let first = b.expect(Pattern::regex(r"\[vm1\] tick (\d+)\r?\n"));
    let first_on_b: u64 = first.group(1).parse().unwrap();
    // The next tick, or the one after when the pause split a line between A and B (the
    // console history stays on A).
    check!(
        b,
        first_on_b == last_on_a + 1 || first_on_b == last_on_a + 2,
        "B counts on from A's last tick {last_on_a}: first {first_on_b}"
    );
    // B's ticks redraw the prompt all the time: wait for the line itself.
    b.type_line("vm info 1");
    b.expect(Pattern::regex(
        r"source:\s+migrated from 10\.77\.0\.1 \(downtime \d+ ms\)",
    ));
    // Gone from A.
    let list = a.command("vm list");
    check!(a, !list.contains("running"), "A still runs it: {list:?}");
    let info = a.command("vm info ticker");
    check!(a, !info.contains("running"), "A: {info:?}");
    // Both ends' API show it done, with the downtime.
    for (m, port, direction) in [(&mut a, api_a, "outgoing"), (&mut b, api_b, "incoming")] {
        let r = http::request(port, "GET", "/api/v1/migrations", Some(&token), None)
            .expect("GET migrations");
        let list: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
        let last = &list["migrations"][0];
        eprintln!("{direction}: {last}");
        check!(
            m,
            last["direction"] == direction
                && last["phase"] == "done"
                && last["vm"] == "ticker"
                && last["downtime_ms"].is_u64(),
            "{direction}: {last}"
        );
    }
}

#[test]
fn a_refused_or_unreachable_destination_leaves_the_vm_running() {
    let dir = tempfile::tempdir().unwrap();
    let image_a = migration_image(dir.path(), 1);
    // B lacks the ticker's read-only image. (A wrong token is refused the same way, before
    // any memory moves: `cargo test -p keel-vmm migration`.)
    let image_b = migration_image_with(dir.path(), 2, false);
    let link_port = http::free_port();
    let mut a = boot_appliance(&image_a, 1, link_port, http::free_port());
    let b = boot_appliance(&image_b, 2, link_port, http::free_port());
    a.expect("[ticker] tick 2");

    a.type_line("vm migrate ticker 10.77.0.2");
    a.expect_within(
        "migration of vm ticker to 10.77.0.2:7070 abandoned: read-only image ro.img is not in \
         the destination's store",
        Duration::from_secs(60),
    );
    a.expect("; the VM runs on here");
    // It runs on: ticks keep coming.
    a.expect(Pattern::regex(r"\[ticker\] tick \d+"));
    a.expect(Pattern::regex(r"\[ticker\] tick \d+"));
    check!(
        b,
        !b.transcript().windows(12).any(|w| w == b"migrated in "),
        "B built nothing"
    );

    // The destination gone: nothing answers on the link; abandoned after the stall time.
    drop(b);
    a.type_line("vm migrate ticker 10.77.0.2");
    a.expect_within(
        Pattern::regex(r"migration of vm ticker to 10\.77\.0\.2:7070 abandoned: (no answer from the destination|the connection to the destination was lost)"),
        Duration::from_secs(60),
    );
    a.expect(Pattern::regex(r"\[ticker\] tick \d+"));
}
