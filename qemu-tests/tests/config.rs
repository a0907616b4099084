//! The configuration on the boot disk, end to end: `keel.img` under SeaBIOS (`-M pc`) with its
//! GPT image as a virtio-blk disk.
//!
//! - A setting saved on the console survives a reboot (banner, `config show`, `net`).
//! - Invalid changes, on the console and through `PUT /api/v1/config`, are refused with every
//!   problem and its path and change nothing (the ETag stays); `PUT` needs `If-Match` (428),
//!   refuses a stale one (412) and applies a valid document at once (hostname, tokens).
//! - Power cuts during saves: the emulator is killed (SIGKILL) at random moments while the
//!   console saves in a loop; every next boot loads a valid generation, never the defaults.
//! - Without a boot disk (PVH) the kernel runs on the built-in defaults and says so loudly.
//!
//! Tests that write take their own copy of the image and boot it with
//! [`Qemu::writable_disk`] (no `snapshot=on`), so that what one boot saves the next one reads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::http::{self, Response};
use keel_qemu_tests::{Machine, Qemu, artifacts, check};
use regex::Regex;

/// Builds a fresh `keel.img` (default configuration with the artifacts' token, generation 1)
/// into `dir`.
fn fresh_image(dir: &Path) -> PathBuf {
    let a = artifacts();
    let image = dir.join("keel.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = keel_image::appliance::default_config(&a.api_token).to_json_pretty();
    keel_image::assemble_image(&a.elf, &[], &cmdline, None, &config, &image)
        .expect("building keel.img");
    image
}

/// Boots `image` writable, optionally with a virtio-net NIC forwarding `port` to port 80.
fn boot_writable(image: &Path, port: Option<u16>) -> Machine {
    let a = artifacts();
    let mut q = Qemu::seabios(image).defmt_elf(&a.elf).writable_disk();
    q = match port {
        Some(port) => q.args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)]),
        None => q.args(["-nic", "none"]),
    };
    q.spawn().unwrap()
}

/// The generation and slot of the `config: loaded generation N from slot S` boot line.
fn loaded_generation(m: &Machine, banner: &str) -> (u64, String) {
    let re = Regex::new(r"config: loaded generation (\d+) from slot ([AB])").unwrap();
    let Some(c) = re.captures(banner) else {
        m.fail(format!(
            "no 'config: loaded generation' line in the boot output:\n{banner}"
        ));
    };
    (c[1].parse().unwrap(), c[2].to_owned())
}

/// The value of `path` in `config show` output.
fn shown<'a>(show: &'a str, path: &str) -> Option<&'a str> {
    show.lines()
        .find_map(|l| l.strip_prefix(path)?.strip_prefix(" = "))
        .map(str::trim_end)
}

#[test]
fn a_saved_setting_survives_a_reboot() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fresh_image(tmp.path());
    let port = http::free_port();
    let mut m = boot_writable(&image, Some(port));
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("keel"),
        "banner:\n{}",
        banner.text
    );
    let (generation, slot) = loaded_generation(&m, &banner.text);
    check!(
        m,
        (generation, slot.as_str()) == (1, "A"),
        "first boot: {generation} {slot}"
    );
    check!(
        m,
        !banner.text.contains("WARNING"),
        "banner:\n{}",
        banner.text
    );
    // The lease notice comes above a redrawn prompt: read both before typing.
    m.expect("network: DHCP lease 10.0.2.15/24");
    m.expect_prompt();

    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"keel\""), "{show}");
    check!(
        m,
        show.contains("# configuration: generation 1 from slot A"),
        "{show}"
    );
    // The token is masked: only its last four characters show.
    let token = &artifacts().api_token;
    check!(
        m,
        !show.contains(token.as_str()),
        "token not masked:\n{show}"
    );
    let tail = &token[token.len() - 4..];
    check!(
        m,
        shown(&show, "management.api_tokens[0]") == Some(format!("\"****{tail}\"").as_str()),
        "{show}"
    );

    let set = m.command("config set hostname web1");
    check!(m, set.contains("hostname: \"keel\" -> \"web1\""), "{set}");
    let diff = m.command("config diff");
    check!(m, diff.trim() == "hostname: \"keel\" -> \"web1\"", "{diff}");
    let save = m.command("config save");
    check!(
        m,
        save.contains("configuration saved as generation 2"),
        "{save}"
    );
    check!(m, save.contains("hostname is now web1"), "{save}");
    check!(
        m,
        m.command("config diff").contains("no pending edits"),
        "diff after save"
    );

    m.type_line("reboot");
    m.expect("rebooting...");
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("web1"),
        "after reboot:\n{}",
        banner.text
    );
    let (generation, slot) = loaded_generation(&m, &banner.text);
    check!(
        m,
        (generation, slot.as_str()) == (2, "B"),
        "after reboot: {generation} {slot}"
    );
    m.expect("network: DHCP lease 10.0.2.15/24");
    m.expect_prompt();
    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"web1\""), "{show}");
    let net = m.command("net");
    check!(m, net.contains("hostname: web1"), "{net}");
    check!(
        m,
        net.contains("http:     port 80, /api/v1 (1 bearer token)"),
        "{net}"
    );
    m.kill();

    // A new emulator process on the same file: the save is in the image itself.
    let mut m = boot_writable(&image, None);
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("web1"),
        "new process:\n{}",
        banner.text
    );
    check!(
        m,
        loaded_generation(&m, &banner.text).0 == 2,
        "{}",
        banner.text
    );
}

struct Api {
    port: u16,
    token: String,
}

impl Api {
    fn get_config(&self) -> Response {
        http::request(self.port, "GET", "/api/v1/config", Some(&self.token), None)
            .expect("GET /api/v1/config")
    }

    fn put_config(&self, if_match: Option<&str>, body: &str) -> Response {
        let mut req = format!(
            "PUT /api/v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n",
            self.token
        );
        if let Some(tag) = if_match {
            req.push_str(&format!("If-Match: {tag}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        http::raw(self.port, req.as_bytes()).expect("PUT /api/v1/config")
    }
}

#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let a = artifacts();
    let port = http::free_port();
    // The shared image, as a snapshot: nothing here needs to outlive the machine.
    let mut m = Qemu::seabios(&a.image)
        .defmt_elf(&a.elf)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    m.expect_banner();
    http::await_api(&mut m, port);
    let api = Api {
        port,
        token: a.api_token.clone(),
    };
    let before = api.get_config();
    check!(m, before.status == 200, "{before:?}");
    let etag = before.header("etag").unwrap_or_default().to_owned();
    check!(
        m,
        etag.len() == 18 && etag.starts_with('"'),
        "ETag {etag:?}"
    );
    check!(
        m,
        before.body.contains("\"hostname\": \"keel\""),
        "{}",
        before.body
    );

    // The console: each refused with its path; nothing pending afterwards.
    let out = m.command("config set network.prefix 40");
    check!(
        m,
        out.contains("error: invalid configuration, nothing changed:"),
        "{out}"
    );
    check!(m, out.contains("  network.prefix: "), "{out}");
    let out =
        m.command(r#"config set vms[0] {"name": "web", "memory_mib": 5, "kernel": "bzImage"}"#);
    check!(
        m,
        out.contains("  vms[0].memory_mib: must be between 16 and 65536"),
        "{out}"
    );
    let out = m.command("config set vms[0].memory_mib 5");
    check!(
        m,
        out.contains("error: vms[0]: index out of range"),
        "{out}"
    );
    let out = m.command("config set hostname -bad-");
    check!(m, out.contains("  hostname: "), "{out}");
    check!(
        m,
        m.command("config diff").contains("no pending edits"),
        "edits were kept"
    );
    let out = m.command("config save");
    check!(
        m,
        out.contains("configuration saved as generation 2"),
        "{out}"
    );

    // HTTP: an invalid document is 422 with every problem.
    let bad = r#"{"hostname":"web1","network":{"mode":"static","address":"10.0.2.15","prefix":40},
        "vms":[{"name":"web","memory_mib":5,"kernel":"bzImage"}]}"#;
    let tag = api
        .get_config()
        .header("etag")
        .unwrap_or_default()
        .to_owned();
    check!(
        m,
        tag == etag,
        "saving the same document changed the ETag: {tag} vs {etag}"
    );
    let r = api.put_config(Some(&tag), bad);
    check!(m, r.status == 422, "{r:?}");
    for needle in [
        r#""path":"network.prefix""#,
        r#""path":"vms[0].memory_mib""#,
        "(nothing was changed)",
    ] {
        check!(m, r.body.contains(needle), "{needle} not in {}", r.body);
    }
    let r = api.put_config(None, r#"{"hostname":"web1"}"#);
    check!(m, r.status == 428 && r.body.contains("If-Match"), "{r:?}");
    let r = api.put_config(Some("\"0000000000000000\""), r#"{"hostname":"web1"}"#);
    check!(
        m,
        r.status == 412 && r.header("etag") == Some(tag.as_str()),
        "{r:?}"
    );
    let r = api.put_config(Some(&tag), "{not json");
    check!(m, r.status == 400, "{r:?}");
    let after = api.get_config();
    check!(
        m,
        after.header("etag") == Some(etag.as_str()) && after.body == before.body,
        "refused PUTs changed the configuration: {after:?}"
    );
    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"keel\""), "{show}");

    // A valid PUT: saved, applied at once (hostname, a second token), new ETag.
    let second = "second-token-0123456789";
    let good = format!(
        r#"{{"hostname":"api1","management":{{"api_tokens":["{}","{second}"]}}}}"#,
        a.api_token
    );
    let r = api.put_config(Some(&etag), &good);
    check!(m, r.status == 200, "{r:?}");
    let new_tag = r.header("etag").unwrap_or_default().to_owned();
    check!(m, new_tag != etag && new_tag.len() == 18, "{new_tag}");
    check!(m, r.body.contains("\"hostname\": \"api1\""), "{}", r.body);
    m.expect("config: generation 3 saved over HTTP");
    let system = http::request(port, "GET", "/api/v1/system", Some(second), None).expect("GET");
    check!(
        m,
        system.status == 200 && system.body.contains("\"hostname\":\"api1\""),
        "the new token or hostname is not in effect: {system:?}"
    );
    let r = api.put_config(Some(&etag), &good);
    check!(m, r.status == 412, "stale ETag accepted: {r:?}");
    // The notice came above a redrawn prompt.
    m.expect_prompt();
    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"api1\""), "{show}");
    check!(m, show.contains("# configuration: generation 3"), "{show}");
}

/// xorshift64: reproducible delays from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Saves per boot in the power-cut test: all typed at once, they must fit the kernel's console
/// receive buffer (about 45 bytes a pair).
const SAVES_PER_BOOT: usize = 12;

/// Boots of the power-cut test after the first (each ends in a kill); override with
/// `KEEL_CONFIG_POWER_CUTS`. About 1.5 s each on the 2-core development machine: 40 kept the
/// whole `config` binary at 58 s (50 took 77 s).
const POWER_CUTS: usize = 40;

/// The fewest cuts for which the test demands that a fair share came mid-save: below it, a
/// hand run with a few cuts could see them all land late by chance.
const MIN_CUTS_FOR_SHARE: usize = 10;

/// Power cuts during saves.
///
/// Fault model: `SIGKILL` of QEMU is a power cut of the whole virtual machine at an arbitrary
/// guest instruction. The disk is opened `cache=writethrough`, so every write the guest has
/// seen complete is in the image file (QEMU writes it with `O_DSYNC` before completing it);
/// requests still in the virtqueue or in QEMU's I/O threads are lost, or land in part at the
/// granularity of the host's `pwritev`. The record store must then load the previous
/// generation or the new one, never neither. Finer tears (half a sector, any subset of
/// unflushed sectors in a volatile cache) are covered deterministically, at every byte and
/// every sector boundary, by `config/src/record/store_tests.rs`.
///
/// Each boot checks what the previous one left (a valid generation no older than the last
/// save the console confirmed, at most one newer, with the hostname saved as that
/// generation), then types `config set hostname tK-I` / `config save` pairs as fast as the
/// console takes them and kills QEMU a random delay after the first save. The first boot runs
/// its saves to the end and measures how long they take, which bounds the random delays;
/// each later cut narrows or widens that bound by where it landed.
/// At the end, at least a third of the cuts must have come before their boot's last save
/// (from [`MIN_CUTS_FOR_SHARE`] cuts on); the output counts them and what each boot loaded.
#[test]
fn power_cuts_during_saves_never_lose_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fresh_image(tmp.path());
    let cuts = std::env::var("KEEL_CONFIG_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POWER_CUTS);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("power-cut test: {cuts} cuts, seed {seed:#x}");
    let mut rng = Rng(seed);
    let saved_re = Regex::new(r"configuration saved as generation (\d+)").unwrap();
    let set_re = Regex::new(r#"hostname: "[^"]*" -> "([^"]+)""#).unwrap();

    // What the last boot confirmed: generation -> hostname, and the hostname being saved
    // when the power went (the one after the last confirmed).
    let mut confirmed: Vec<(u64, String)> = vec![(1, String::from("keel"))];
    let mut in_flight: Option<String> = None;
    let mut window = Duration::from_millis(500);
    let mut calibrated = window;
    let mut loaded_counts = (0usize, 0usize); // (old, new) after cuts
    let mut mid_loop = 0usize; // cuts that came before the boot's last save
    for boot in 0..=cuts {
        let mut m = boot_writable(&image, None);
        let banner = m.expect_banner();
        check!(
            m,
            !banner.text.contains("WARNING"),
            "boot {boot} fell back to defaults (seed {seed:#x}):\n{}",
            banner.text
        );
        let (generation, _) = loaded_generation(&m, &banner.text);
        let hostname = banner.field("hostname").unwrap_or_default().to_owned();
        let &(last_gen, ref last_name) = confirmed.last().unwrap();
        let expected = if generation == last_gen {
            loaded_counts.0 += 1;
            last_name.clone()
        } else if generation == last_gen + 1 && in_flight.is_some() {
            loaded_counts.1 += 1;
            in_flight.clone().unwrap_or_default()
        } else {
            m.fail(format!(
                "boot {boot} loaded generation {generation}; the last confirmed save was \
                 {last_gen} (seed {seed:#x})"
            ));
        };
        check!(
            m,
            hostname == expected,
            "boot {boot}: generation {generation} should be hostname {expected}, is {hostname} \
             (seed {seed:#x})"
        );
        let show = m.command("config show");
        check!(
            m,
            shown(&show, "hostname") == Some(format!("\"{expected}\"").as_str()),
            "{show}"
        );
        if generation != last_gen {
            confirmed.push((generation, expected));
        }
        if boot == cuts {
            break;
        }

        // Type every pair at once: the UART takes them as fast as the kernel reads.
        let start = m.cursor();
        let mut script = String::new();
        for i in 0..SAVES_PER_BOOT {
            script.push_str(&format!("config set hostname t{boot}-{i}\rconfig save\r"));
        }
        if let Err(e) = m.send(&script) {
            m.fail(e);
        }
        // Time from the first save on, so that boot-time jitter does not move the window.
        m.expect(format!(
            "configuration saved as generation {}",
            generation + 1
        ));
        let first = Instant::now();
        if boot == 0 {
            // Calibration: let them all finish.
            m.expect(format!(
                "configuration saved as generation {}",
                generation + SAVES_PER_BOOT as u64
            ));
            window = first.elapsed().mul_f64(0.8);
            calibrated = window;
            eprintln!("saves 2 to {SAVES_PER_BOOT} took {:?}", first.elapsed());
        } else {
            std::thread::sleep(Duration::from_micros(
                rng.below(window.as_micros() as u64 + 1),
            ));
        }
        m.kill();
        // Let the console reader drain what QEMU wrote before it died.
        std::thread::sleep(Duration::from_millis(300));

        // What this boot confirmed before the cut: whole lines only (the last one may have
        // been cut off mid-number).
        let raw = m.transcript();
        let text = String::from_utf8_lossy(&raw[start.min(raw.len())..]).into_owned();
        let text = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let mut current: Option<String> = None;
        in_flight = None;
        for line in text.lines() {
            if let Some(c) = set_re.captures(line) {
                current = Some(c[1].to_owned());
                in_flight = current.clone();
            }
            if let Some(c) = saved_re.captures(line) {
                let g: u64 = c[1].parse().unwrap();
                let name = current.clone().unwrap_or_default();
                confirmed.push((g, name));
                in_flight = None;
            }
        }
        // A `config set` that printed nothing yet may still have been applied to the
        // pending copy and saved: the next name in this boot's sequence.
        let saves_here = confirmed
            .iter()
            .filter(|(_, n)| n.starts_with(&format!("t{boot}-")))
            .count();
        if in_flight.is_none() && saves_here < SAVES_PER_BOOT {
            in_flight = Some(format!("t{boot}-{saves_here}"));
        }
        // The saves' pace varies between boots and machines (CI's ran them in 75 ms where
        // this one takes ~150): a cut that came after the last save shortens the window, one
        // that came during the saves widens it again, which settles near 70% cut mid-loop
        // (0.7^0.28 × 1.15^0.72 ≈ 1) whatever the pace.
        if boot > 0 && saves_here < SAVES_PER_BOOT {
            mid_loop += 1;
            window = window.mul_f64(1.15).min(calibrated);
        } else if boot > 0 {
            window = window.mul_f64(0.7);
        }
        drop(m);
    }
    eprintln!(
        "after {cuts} cuts ({mid_loop} while saves were still running): {} boots found the \
         last confirmed save, {} the one in flight; {} generations saved in all",
        loaded_counts.0,
        loaded_counts.1,
        confirmed.last().map_or(0, |c| c.0)
    );
    // A run whose cuts all came after the last save would prove nothing: at least a third of
    // them must have cut a boot's saves short (about 70% do).
    assert!(
        cuts < MIN_CUTS_FOR_SHARE || mid_loop * 3 >= cuts,
        "only {mid_loop} of {cuts} power cuts came while saves were still running (at least \
         a third should; seed {seed:#x})"
    );
}

#[test]
fn without_a_boot_disk_the_defaults_run_and_saving_says_why_not() {
    let a = artifacts();
    let mut m = Qemu::pvh(&a.elf).spawn().unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        // The reason may go on to list devices a driver saw but could not use (an empty
        // ATAPI drive on the PVH machine's IDE channel).
        banner.text.contains(
            "WARNING: no valid configuration on the boot disk (no boot disk found: no disk a \
             driver knows"
        ) && banner.text.contains("): running with built-in defaults"),
        "banner:\n{}",
        banner.text
    );
    check!(
        m,
        banner.field("hostname") == Some("keel"),
        "{}",
        banner.text
    );
    let show = m.command("config show");
    check!(
        m,
        show.contains("# configuration: built-in defaults (no boot disk found"),
        "{show}"
    );
    check!(
        m,
        shown(&show, "management.api_tokens") == Some("[]"),
        "{show}"
    );
    let set = m.command("config set hostname web1");
    check!(m, set.contains("-> \"web1\""), "{set}");
    let save = m.command("config save");
    check!(
        m,
        save.contains("error: cannot save the configuration: no boot disk found"),
        "{save}"
    );
    let show = m.command("config show");
    check!(m, shown(&show, "hostname") == Some("\"keel\""), "{show}");
    check!(m, show.contains("# 1 edits not saved yet"), "{show}");
}
