//! Snapshot files: a VM's saved state as files in the guest store, so it survives a reboot
//! (the pure part: names, the info file, the disk check; `crate::vms::snapshots` writes and
//! reads them).
//!
//! A snapshot `ID` is
//! - `ID.snap.000`, `ID.snap.001`, …: the saved-VM encoding (`vmm::snapshot`, the bytes
//!   `vm save` makes, guest RAM included with its all-zero pages left out) cut into parts of
//!   at most [`PART_BYTES`] (2 GiB; a FAT file holds under 4 GiB);
//! - `ID.snapinfo`: what the snapshot is ([`SnapshotInfo`], lines of text), written **last**:
//!   parts without it are an interrupted snapshot, never listed, and removed by
//!   [`leftover_parts`]' caller. Deleting removes the info file first.
//!
//! Disk contents are not in a snapshot (disk snapshots are out of scope): the info file
//! records each writable store-file disk's size and a content hash (FNV-1a 64), and each
//! partition's size, and a restore refuses when they differ unless forced.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Largest part of a snapshot's state.
pub const PART_BYTES: u64 = 2 << 30;
/// The info file's first line.
const MAGIC: &str = "keel-snapshot 1";
/// Suffixes of a snapshot's files.
pub const INFO_SUFFIX: &str = ".snapinfo";
const PART_INFIX: &str = ".snap.";

/// A disk the VM had when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// `file` or `partition`.
    pub partition: bool,
    /// The store file's or partition's name.
    pub name: String,
    /// Attached read-only.
    pub read_only: bool,
    /// The serial the guest read (`None`: the name).
    pub serial: Option<String>,
    /// Size in bytes when the snapshot was taken.
    pub size: u64,
    /// FNV-1a 64 of a writable store file's content (`None` for partitions and read-only).
    pub hash: Option<u64>,
}

/// A NIC the VM had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotNic {
    /// Bridged (else internal).
    pub bridged: bool,
    /// Its MAC.
    pub mac: [u8; 6],
}

/// The info file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's name.
    pub id: String,
    /// The VM it was taken of (its name or number).
    pub source: String,
    /// When (Unix seconds, from the RTC), if known.
    pub time: Option<u64>,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs.
    pub cpus: u32,
    /// The backend it ran on (`svm`/`vmx`).
    pub backend: String,
    /// Bytes of state (all parts).
    pub bytes: u64,
    /// Number of parts.
    pub parts: u32,
    /// Offered kvm-clock.
    pub paravirt_kvm: bool,
    /// How long writing took.
    pub write_ms: u64,
    /// Its disks, in attach order.
    pub disks: Vec<SnapshotDisk>,
    /// Its NICs, in order.
    pub nics: Vec<SnapshotNic>,
}

/// Why an info file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// The first line is not the magic.
    #[error("not a Keel snapshot info file (or from a newer Keel)")]
    NotInfo,
    /// A line that does not parse.
    #[error("line {line}: {why}")]
    Bad {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// The name of part `n` of snapshot `id`.
pub fn part_name(id: &str, n: u32) -> String {
    format!("{id}{PART_INFIX}{n:03}")
}

/// The name of the info file of `id`.
pub fn info_name(id: &str) -> String {
    format!("{id}{INFO_SUFFIX}")
}

/// Parts needed for `bytes` of state (at least one).
pub fn part_count(bytes: u64) -> u32 {
    bytes.div_ceil(PART_BYTES).max(1) as u32
}

/// Store files that are parts of a snapshot with no info file (an interrupted snapshot).
pub fn leftover_parts(files: &[String]) -> Vec<&str> {
    files
        .iter()
        .filter(|f| {
            f.rsplit_once(PART_INFIX).is_some_and(|(id, n)| {
                n.len() == 3
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && !files.iter().any(|g| *g == info_name(id))
            })
        })
        .map(String::as_str)
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds (UTC), or `-`.
pub fn format_time(unix: Option<u64>) -> String {
    let Some(t) = unix else {
        return "-".into();
    };
    let (date, time) = super::fat::write::dos_date_time(Some(t));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        (date >> 9) + 1980,
        (date >> 5) & 0xf,
        date & 0x1f,
        time >> 11,
        (time >> 5) & 0x3f,
        t % 60
    )
}

/// FNV-1a 64 over bytes fed in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Fnv64(pub u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Adds `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl SnapshotInfo {
    /// The file's text.
    pub fn encode(&self) -> String {
        let mut s = String::from(MAGIC);
        s.push('\n');
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        };
        line("id", &self.id);
        line("source", &self.source);
        line("time", &self.time.map_or("-".into(), |t| t.to_string()));
        line("memory", &self.memory.to_string());
        line("cpus", &self.cpus.to_string());
        line("backend", &self.backend);
        line("bytes", &self.bytes.to_string());
        line("parts", &self.parts.to_string());
        line("paravirt", if self.paravirt_kvm { "kvm" } else { "none" });
        line("write_ms", &self.write_ms.to_string());
        for d in &self.disks {
            line(
                "disk",
                &format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    if d.partition { "partition" } else { "file" },
                    if d.read_only { "ro" } else { "rw" },
                    d.size,
                    d.hash.map_or("-".into(), |h| format!("{h:016x}")),
                    d.serial.as_deref().map_or("-".into(), |s| format!("={s}")),
                    d.name
                ),
            );
        }
        for n in &self.nics {
            let m = n.mac;
            line(
                "nic",
                &format!(
                    "{} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    if n.bridged { "bridged" } else { "internal" },
                    m[0],
                    m[1],
                    m[2],
                    m[3],
                    m[4],
                    m[5]
                ),
            );
        }
        s
    }

    /// Reads the file's text.
    pub fn decode(text: &str) -> Result<SnapshotInfo, InfoError> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(InfoError::NotInfo);
        }
        let mut info = SnapshotInfo {
            id: String::new(),
            source: String::new(),
            time: None,
            memory: 0,
            cpus: 0,
            backend: String::new(),
            bytes: 0,
            parts: 0,
            paravirt_kvm: false,
            write_ms: 0,
            disks: Vec::new(),
            nics: Vec::new(),
        };
        for (k, l) in lines.enumerate() {
            let at = k + 2;
            let bad = |why| InfoError::Bad { line: at, why };
            let (key, value) = l.split_once('=').ok_or(bad("no '='"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|_| bad("not a number"));
            match key {
                "id" => info.id = value.into(),
                "source" => info.source = value.into(),
                "time" => {
                    info.time = if value == "-" {
                        None
                    } else {
                        Some(num(value)?)
                    }
                }
                "memory" => info.memory = num(value)?,
                "cpus" => info.cpus = num(value)? as u32,
                "backend" => info.backend = value.into(),
                "bytes" => info.bytes = num(value)?,
                "parts" => info.parts = num(value)? as u32,
                "paravirt" => info.paravirt_kvm = value == "kvm",
                "write_ms" => info.write_ms = num(value)?,
                "disk" => {
                    let f: Vec<&str> = value.splitn(6, '\t').collect();
                    let [kind, mode, size, hash, serial, name] = f[..] else {
                        return Err(bad("a disk line has six tab-separated fields"));
                    };
                    info.disks.push(SnapshotDisk {
                        partition: kind == "partition",
                        read_only: mode == "ro",
                        size: num(size)?,
                        hash: if hash == "-" {
                            None
                        } else {
                            Some(u64::from_str_radix(hash, 16).map_err(|_| bad("bad hash"))?)
                        },
                        serial: serial.strip_prefix('=').map(String::from),
                        name: name.into(),
                    });
                }
                "nic" => {
                    let (net, mac) = value.split_once(' ').ok_or(bad("nic: network and MAC"))?;
                    let mut bytes = [0u8; 6];
                    let parts: Vec<&str> = mac.split(':').collect();
                    if parts.len() != 6 {
                        return Err(bad("nic: a MAC is six hex bytes"));
                    }
                    for (b, p) in bytes.iter_mut().zip(parts) {
                        *b = u8::from_str_radix(p, 16).map_err(|_| bad("nic: bad MAC"))?;
                    }
                    info.nics.push(SnapshotNic {
                        bridged: net == "bridged",
                        mac: bytes,
                    });
                }
                _ => return Err(bad("unknown key")),
            }
        }
        if info.id.is_empty() || info.parts == 0 || info.memory == 0 {
            return Err(InfoError::Bad {
                line: 1,
                why: "id, parts or memory missing",
            });
        }
        Ok(info)
    }
}

/// A disk whose content changed since the snapshot: what differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskChange {
    /// The disk.
    pub name: String,
    /// What differs.
    pub what: String,
}

/// Compares the recorded disks with what they are now (`now(disk)` gives the current size
/// and, for a store file the snapshot hashed, the hash; `None`: the disk is gone).
pub fn changed_disks(
    info: &SnapshotInfo,
    mut now: impl FnMut(&SnapshotDisk) -> Option<(u64, Option<u64>)>,
) -> Vec<DiskChange> {
    let mut out = Vec::new();
    for d in info.disks.iter().filter(|d| !d.read_only) {
        let what = match now(d) {
            None => Some("it is gone".to_string()),
            Some((size, _)) if size != d.size => {
                Some(format!("its size is {size} bytes, was {}", d.size))
            }
            Some((_, hash)) if d.hash.is_some() && hash != d.hash => {
                Some("its content changed".to_string())
            }
            _ => None,
        };
        if let Some(what) = what {
            out.push(DiskChange {
                name: d.name.clone(),
                what,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SnapshotInfo {
        SnapshotInfo {
            id: "web-1".into(),
            source: "web".into(),
            time: Some(1_796_674_438),
            memory: 256 << 20,
            cpus: 2,
            backend: "svm".into(),
            bytes: 70_000_000,
            parts: 1,
            paravirt_kvm: true,
            write_ms: 812,
            disks: alloc::vec![
                SnapshotDisk {
                    partition: false,
                    name: "data disk.img".into(),
                    read_only: false,
                    serial: Some("ser 1".into()),
                    size: 64 << 20,
                    hash: Some(0x0123_4567_89ab_cdef),
                },
                SnapshotDisk {
                    partition: true,
                    name: "scratch".into(),
                    read_only: true,
                    serial: None,
                    size: 1 << 30,
                    hash: None,
                },
            ],
            nics: alloc::vec![SnapshotNic {
                bridged: false,
                mac: [0x52, 0x54, 0, 1, 2, 0xab],
            }],
        }
    }

    #[test]
    fn info_round_trips_and_refuses_damage() {
        let i = info();
        assert_eq!(SnapshotInfo::decode(&i.encode()), Ok(i.clone()));
        assert_eq!(SnapshotInfo::decode("hello\n"), Err(InfoError::NotInfo));
        let broken = i.encode().replace("memory=268435456", "memory=lots");
        assert!(matches!(
            SnapshotInfo::decode(&broken),
            Err(InfoError::Bad { line: 5, .. })
        ));
        let no_parts = i.encode().replace("parts=1", "parts=0");
        assert!(SnapshotInfo::decode(&no_parts).is_err());
    }

    #[test]
    fn parts_and_leftovers() {
        assert_eq!(part_count(1), 1);
        assert_eq!(part_count(PART_BYTES), 1);
        assert_eq!(part_count(PART_BYTES + 1), 2);
        assert_eq!(part_name("a", 2), "a.snap.002");
        let files: Vec<String> = [
            "a.snap.000",
            "a.snapinfo",
            "b.snap.000",
            "b.snap.001",
            "disk.img",
        ]
        .iter()
        .map(|s| String::from(*s))
        .collect();
        assert_eq!(leftover_parts(&files), ["b.snap.000", "b.snap.001"]);
    }

    #[test]
    fn changed_disks_are_named() {
        let i = info();
        assert!(changed_disks(&i, |d| Some((d.size, d.hash))).is_empty());
        let c = changed_disks(&i, |d| Some((d.size, Some(1))));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].what, "its content changed");
        let c = changed_disks(&i, |_| None);
        assert_eq!(c[0].what, "it is gone");
        // The read-only partition is never checked.
        assert_eq!(changed_disks(&i, |d| Some((d.size + 1, None))).len(), 1);
        let mut h = Fnv64::default();
        h.feed(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }
}
