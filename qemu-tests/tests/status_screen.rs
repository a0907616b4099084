//! The status screen on the local display, read back through QEMU's QMP monitor after the
//! DHCP lease: on SeaBIOS the VGA text buffer (`xp` of 0xB8000, characters decoded from the
//! cell words), on OVMF the framebuffer (`screendump` to a PPM, every character cell matched
//! exactly against the same `font8x8` glyphs the kernel draws with — no OCR). Each must show
//! the hostname, the management address and the web page's URL.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::{Machine, PROMPT, Pattern, Qemu, artifacts, check, http};

/// A QMP connection (one JSON object per line).
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after it starts) and leaves negotiation.
    fn connect(path: &Path) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("QMP socket {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = qmp.read_message();
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        qmp.execute(serde_json::json!({"execute": "qmp_capabilities"}));
        qmp
    }

    fn read_message(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading QMP");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP sent {line:?}: {e}"))
    }

    /// Runs a command and returns its `return` value (events in between are skipped).
    fn execute(&mut self, command: serde_json::Value) -> serde_json::Value {
        let mut text = command.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).expect("writing QMP");
        loop {
            let message = self.read_message();
            if let Some(r) = message.get("return") {
                return r.clone();
            }
            if let Some(e) = message.get("error") {
                panic!("QMP {command} failed: {e}");
            }
        }
    }

    fn human(&mut self, command_line: &str) -> String {
        let r = self.execute(serde_json::json!({
            "execute": "human-monitor-command",
            "arguments": {"command-line": command_line}
        }));
        r.as_str().unwrap_or_default().to_owned()
    }
}

/// A booted appliance with a VGA device and a QMP socket, after its DHCP lease.
struct Booted {
    m: Machine,
    qmp: Qmp,
    hostname: String,
    /// `10.0.2.15/24`.
    cidr: String,
    _dir: tempfile::TempDir,
}

fn boot(qemu: Qemu) -> Booted {
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("qmp.sock");
    // Generous waits: OVMF alone takes 15 s to reach GRUB on a loaded 2-core machine.
    let mut m = qemu
        .timeout(Duration::from_secs(90))
        .args([
            "-vga".to_owned(),
            "std".to_owned(),
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", socket.display()),
            "-nic".to_owned(),
            "user,model=virtio-net-pci".to_owned(),
        ])
        .spawn()
        .unwrap();
    let qmp = Qmp::connect(&socket);
    let banner = m.expect_banner();
    let hostname = banner.field("hostname").unwrap_or_default().to_owned();
    check!(m, !hostname.is_empty(), "no hostname in the banner");
    // Printed before the banner, once the display is opened.
    check!(
        m,
        m.transcript_text().contains("status screen: "),
        "no status screen line in the boot output"
    );
    // The notice comes after the prompt, on its line.
    let lease = m.expect(Pattern::regex(r"network: DHCP lease ([0-9./]+),"));
    let cidr = lease.group(1).to_owned();
    // The shell redraws its prompt under the notice.
    m.expect(PROMPT);
    Booted {
        m,
        qmp,
        hostname,
        cidr,
        _dir: dir,
    }
}

/// Polls `read_screen` until it shows every expected line (the main loop redraws within a
/// pass of the lease, but a screenshot can catch a framebuffer half redrawn), then checks the
/// hostname, address, URL and serial console lines.
fn check_screen(b: &mut Booted, what: &str, mut read_screen: impl FnMut(&mut Qmp) -> String) {
    let ip = b.cidr.split('/').next().unwrap_or_default().to_owned();
    // The image carries `keel build`'s certificate: the screen shows its fingerprint's
    // first 16 bytes on the first row.
    let fingerprint = http::build_certificate()
        .map(|der| http::fingerprint(&der))
        .unwrap_or_default();
    let expected = [
        ("hostname", b.hostname.clone()),
        ("management", format!("{} (DHCP)", b.cidr)),
        ("web page and API", format!("https://{ip}/")),
        (
            "cert SHA-256",
            fingerprint[..47.min(fingerprint.len())].to_owned(),
        ),
        ("VMs running", "0".to_owned()),
        ("serial console", "ttyS0 (0x3f8) 115200, 8N1".to_owned()),
    ];
    let missing = |screen: &str| {
        expected
            .iter()
            .find(|(label, value)| {
                !screen.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with(label) && l.ends_with(value.as_str())
                })
            })
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut screen = read_screen(&mut b.qmp);
    while missing(&screen).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        screen = read_screen(&mut b.qmp);
    }
    if let Some((label, value)) = missing(&screen) {
        b.m.fail(format!(
            "{what}: no line `{label} … {value}` on the screen:\n{screen}"
        ));
    }
}

/// The VGA text buffer through `xp /2000hx 0xb8000`: 80×25 words, character in the low byte.
fn read_vga_text(qmp: &mut Qmp) -> String {
    let dump = qmp.human("xp /2000hx 0xb8000");
    let words: Vec<u16> = dump
        .lines()
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|w| u16::from_str_radix(w.trim_start_matches("0x"), 16).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(words.len(), 2000, "xp answered: {dump}");
    words
        .chunks(80)
        .map(|row| {
            let line: String = row.iter().map(|w| char::from((w & 0xff) as u8)).collect();
            line.trim_end().to_owned() + "\n"
        })
        .collect()
}

#[test]
fn seabios_shows_the_address_in_vga_text() {
    let a = artifacts();
    let mut b = boot(Qemu::seabios(&a.image).defmt_elf(&a.elf));
    check!(
        b.m,
        b.m.transcript_text()
            .contains("status screen: VGA text 80x25"),
        "not VGA text"
    );
    check_screen(&mut b, "VGA text", read_vga_text);
    // A saved hostname reaches the screen without a reboot (the main loop's change check).
    let set = b.m.command("config set hostname screen-test");
    check!(b.m, !set.contains("error"), "config set: {set}");
    let save = b.m.command("config save");
    check!(
        b.m,
        save.contains("hostname is now screen-test"),
        "config save: {save}"
    );
    b.hostname = "screen-test".to_owned();
    check_screen(&mut b, "VGA text after config save", read_vga_text);
}

/// A PPM (P6, 8-bit) image.
struct Ppm {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

fn read_ppm(path: &Path) -> Ppm {
    let bytes = std::fs::read(path).unwrap();
    // Header: "P6", width, height, maxval, each separated by whitespace, then one byte.
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&bytes[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P6");
    assert_eq!(fields[3], "255");
    let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let rgb = bytes[at + 1..].to_vec();
    assert_eq!(rgb.len(), width * height * 3);
    Ppm { width, height, rgb }
}

/// Decodes the framebuffer's character cells: in each cell one colour is the background, the
/// rest the glyph, matched exactly against `font8x8` (the kernel's font and
/// its scale rule: glyphs doubled when 60 columns of doubled glyphs fit).
fn decode_framebuffer(ppm: &Ppm) -> String {
    let scale = if ppm.width / 16 >= 60 && ppm.height / 16 >= 20 {
        2
    } else {
        1
    };
    let cell = 8 * scale;
    let (cols, rows) = (ppm.width / cell, ppm.height / cell);
    let pixel = |x: usize, y: usize| {
        let at = (y * ppm.width + x) * 3;
        [ppm.rgb[at], ppm.rgb[at + 1], ppm.rgb[at + 2]]
    };
    let mut text = String::new();
    for row in 0..rows {
        let mut line = String::new();
        for col in 0..cols {
            let (x0, y0) = (col * cell, row * cell);
            let mut counts: Vec<([u8; 3], usize)> = Vec::new();
            for y in 0..8 {
                for x in 0..8 {
                    let p = pixel(x0 + x * scale, y0 + y * scale);
                    match counts.iter_mut().find(|(c, _)| *c == p) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((p, 1)),
                    }
                }
            }
            // The background is one of the cell's colours: the most common first (a glyph
            // such as `0` or `M` can have more pixels set than clear, then the other wins).
            counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            let ch = counts
                .iter()
                .find_map(|(background, _)| {
                    let mut bitmap = [0u8; 8];
                    for (y, bits) in bitmap.iter_mut().enumerate() {
                        for x in 0..8 {
                            if pixel(x0 + x * scale, y0 + y * scale) != *background {
                                *bits |= 1 << x;
                            }
                        }
                    }
                    (32u8..127)
                        .find(|&c| font8x8::legacy::BASIC_LEGACY[usize::from(c)] == bitmap)
                        .map(char::from)
                })
                .unwrap_or('~');
            line.push(ch);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[test]
fn ovmf_shows_the_address_on_the_framebuffer() {
    let a = artifacts();
    let mut b = boot(Qemu::ovmf(&a.image).defmt_elf(&a.elf));
    check!(
        b.m,
        b.m.transcript_text()
            .contains("status screen: framebuffer "),
        "no framebuffer"
    );
    let shot = b._dir.path().join("screen.ppm");
    let shot_arg = shot.to_string_lossy().into_owned();
    check_screen(&mut b, "framebuffer", |qmp| {
        qmp.execute(serde_json::json!({
            "execute": "screendump",
            "arguments": {"filename": shot_arg}
        }));
        decode_framebuffer(&read_ppm(&shot))
    });
}
