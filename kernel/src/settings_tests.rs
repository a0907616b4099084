//! Settings over an in-memory partition: boot loading (valid, empty, corrupt, unusable
//! payload, no disk), pending edits, saves, masking.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use keel_config::Config;
use keel_config::record::{self, BlockDevice, Slot};

use super::*;

/// A partition in memory; `fail_writes` makes every write fail.
struct MemDisk {
    bytes: Vec<u8>,
    fail_writes: bool,
}

impl MemDisk {
    fn new(sectors: usize) -> MemDisk {
        MemDisk {
            bytes: vec![0; sectors * 512],
            fail_writes: false,
        }
    }
}

impl BlockDevice for MemDisk {
    type Error = &'static str;

    fn sector_count(&self) -> u64 {
        (self.bytes.len() / 512) as u64
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), &'static str> {
        let at = lba as usize * 512;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), &'static str> {
        if self.fail_writes {
            return Err("device error");
        }
        let at = lba as usize * 512;
        self.bytes[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
}

const TOKEN: &str = "0123456789abcdef-token";

fn configured(hostname: &str) -> Config {
    let mut config = Config {
        hostname: String::from(hostname),
        ..Config::default()
    };
    config.management.api_tokens.push(String::from(TOKEN));
    config
}

fn disk_with(configs: &[Config]) -> MemDisk {
    let mut disk = MemDisk::new(64);
    for c in configs {
        record::save(&mut disk, &c.to_json_pretty()).unwrap();
    }
    disk
}

#[test]
fn boot_loads_the_newest_generation() {
    let mut disk = disk_with(&[configured("one"), configured("two"), configured("three")]);
    let (settings, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(settings.current().hostname, "three");
    assert_eq!(
        settings.source(),
        &Source::Disk {
            generation: 3,
            slot: Some(Slot::A)
        }
    );
    assert_eq!(lines, ["config: loaded generation 3 from slot A"]);
    // A fresh image: one record, the other slot blank, and no warning about it.
    let mut disk = disk_with(&[configured("first")]);
    let (_, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(lines, ["config: loaded generation 1 from slot A"]);
}

#[test]
fn boot_warns_about_a_damaged_other_slot() {
    let mut disk = disk_with(&[configured("one"), configured("two")]);
    // Corrupt slot A (generation 1) in its payload.
    disk.bytes[40] ^= 0xff;
    let (settings, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(settings.current().hostname, "two");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "config: loaded generation 2 from slot B");
    assert!(
        lines[1].starts_with("warning: config slot A holds no usable record (")
            && lines[1].ends_with("the next save rewrites it"),
        "{}",
        lines[1]
    );
}

#[test]
fn boot_falls_back_to_defaults_loudly() {
    // No disk.
    let (settings, lines) =
        Settings::boot::<MemDisk>(Err(String::from("no boot disk found: no virtio-blk disk")));
    assert_eq!(settings.current(), &Config::default());
    assert_eq!(
        lines,
        [
            "WARNING: no valid configuration on the boot disk (no boot disk found: no \
             virtio-blk disk): running with built-in defaults"
        ]
    );
    // An empty partition.
    let mut disk = MemDisk::new(64);
    let (settings, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(settings.current(), &Config::default());
    assert!(matches!(settings.source(), Source::Defaults { .. }));
    assert!(
        lines[0].starts_with(
            "WARNING: no valid configuration on the boot disk (no valid configuration: slot A: "
        ) && lines[0].ends_with("): running with built-in defaults"),
        "{}",
        lines[0]
    );
    // A valid record whose payload is not a valid configuration.
    let mut disk = MemDisk::new(64);
    record::save(&mut disk, br#"{"hostname":"-bad-"}"#).unwrap();
    let (settings, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(settings.current(), &Config::default());
    assert!(
        lines[0].contains("generation 1 in slot A is not a usable configuration: hostname: "),
        "{}",
        lines[0]
    );
}

#[test]
fn set_edits_a_pending_copy_and_bad_input_changes_nothing() {
    let mut disk = disk_with(&[configured("keel")]);
    let (mut s, _) = Settings::boot(Ok(&mut disk));
    let changes = s.set("hostname", "web1").unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(change_line(&changes[0]), "hostname: \"keel\" -> \"web1\"");
    assert_eq!(s.current().hostname, "keel");
    assert_eq!(s.pending().unwrap().hostname, "web1");
    // Invalid: the pending copy stays as it was.
    let before = s.pending().cloned();
    let err = s.set("vms[0]", r#"{"name":"web","memory_mib":5,"kernel":"k"}"#);
    assert!(
        matches!(&err, Err(EditError::Invalid(e)) if e[0].path == "vms[0].memory_mib"),
        "{err:?}"
    );
    assert!(s.set("network.prefix", "40").is_err());
    assert!(s.set("no.such", "1").is_err());
    assert_eq!(s.pending().cloned(), before);
    // Several edits accumulate; diff shows them against the running configuration.
    s.set("network.dns", r#"["10.0.2.3"]"#).unwrap_err(); // dns needs static mode
    s.set("vms[0].cmdline", "").unwrap_err(); // no vms[0] yet
    s.set("management.api_tokens[1]", "abcdefghijklmnop-wxyz")
        .unwrap();
    let diff: Vec<String> = s.diff().iter().map(change_line).collect();
    assert_eq!(
        diff,
        [
            "hostname: \"keel\" -> \"web1\"",
            "management.api_tokens[1]: (unset) -> \"****wxyz\"",
        ]
    );
    assert!(s.revert());
    assert!(!s.revert());
    assert!(s.diff().is_empty());
    assert_eq!(s.current().hostname, "keel");
}

#[test]
fn save_persists_and_a_reboot_loads_it() {
    let mut disk = disk_with(&[configured("keel")]);
    let (mut s, _) = Settings::boot(Ok(&mut disk));
    s.set("hostname", "web1").unwrap();
    let saved = s.save_pending(&mut disk).unwrap();
    assert_eq!(saved.generation, 2);
    assert_eq!(saved.changes.len(), 1);
    assert_eq!(s.current().hostname, "web1");
    assert_eq!(s.pending(), None);
    assert_eq!(s.revision(), 1);
    assert!(s.reboot_needed().is_empty());
    // Network changes need a reboot; the hostname does not.
    s.set("management.http_port", "8080").unwrap();
    s.save_pending(&mut disk).unwrap();
    assert_eq!(s.reboot_needed(), ["management.http_port"]);
    let (after, lines) = Settings::boot(Ok(&mut disk));
    assert_eq!(lines, ["config: loaded generation 3 from slot A"]);
    assert_eq!(after.current(), s.current());
    assert!(after.reboot_needed().is_empty());
    // Saving without edits writes the running configuration again.
    let again = s.save_pending(&mut disk).unwrap();
    assert_eq!((again.generation, again.changes.len()), (4, 0));
}

#[test]
fn failed_saves_change_nothing() {
    let mut disk = disk_with(&[configured("keel")]);
    let (mut s, _) = Settings::boot(Ok(&mut disk));
    s.set("hostname", "web1").unwrap();
    disk.fail_writes = true;
    let err = s.save_pending(&mut disk).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("saving to the boot disk failed: writing slot B failed: device error"),
        "{err}"
    );
    assert_eq!(s.current().hostname, "keel");
    assert_eq!(s.pending().unwrap().hostname, "web1");
    assert_eq!(s.revision(), 0);
    disk.fail_writes = false;
    // An invalid document (only the API can hand one in unvalidated) is refused.
    let mut bad = configured("keel");
    bad.network.prefix = Some(40);
    let err = s.replace(&mut disk, bad).unwrap_err();
    assert!(
        matches!(&err, SaveError::Invalid(e) if e[0].path == "network.prefix"),
        "{err:?}"
    );
    assert_eq!(s.current().hostname, "keel");
    let (reloaded, _) = Settings::boot(Ok(&mut disk));
    assert_eq!(reloaded.current().hostname, "keel");
}

#[test]
fn a_replace_makes_pending_console_edits_stale() {
    let mut disk = disk_with(&[configured("keel")]);
    let (mut s, _) = Settings::boot(Ok(&mut disk));
    s.set("hostname", "from-console").unwrap();
    let saved = s.replace(&mut disk, configured("from-http")).unwrap();
    assert_eq!(saved.generation, 2);
    assert_eq!(s.save_pending(&mut disk), Err(SaveError::Stale));
    assert_eq!(s.current().hostname, "from-http");
    assert!(s.revert());
    s.set("hostname", "from-console").unwrap();
    assert_eq!(s.save_pending(&mut disk).unwrap().generation, 3);
}

#[test]
fn show_masks_tokens() {
    let lines = show_lines(&configured("web1"));
    assert_eq!(
        lines,
        [
            "hostname = \"web1\"",
            "management.api_tokens[0] = \"****oken\"",
            "management.http = \"redirect\"",
            "management.http_port = 80",
            "management.https_port = 443",
            "network.internal.address = \"10.99.0.1\"",
            "network.internal.dhcp = true",
            "network.internal.prefix = 24",
            "network.mode = \"dhcp\"",
            "vms = []",
        ]
    );
    assert!(!lines.concat().contains(TOKEN));
    assert_eq!(display_value("management.api_tokens", "[]"), "[]");
    assert_eq!(
        display_value(
            "management.certificate.key_pem",
            "\"-----BEGIN PRIVATE KEY-----\""
        ),
        "\"(withheld)\""
    );
    assert_eq!(
        display_value("management.api_tokens", "[\"secret-secret-secret\"]"),
        "\"****\""
    );
}
