//! Snapshots: a VM's saved state as files in the guest store, so it survives a reboot.
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

#[cfg(target_os = "none")]
pub use kernel_snapshots::*;

#[cfg(target_os = "none")]
mod kernel_snapshots {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use keel_vmm::snapshot::{Sink, Source};

    use super::*;
    use crate::store::{self, StoreError};
    use crate::vms::{SavedVm, SavedVmError, VmManager};

    /// The in-memory saved VM a snapshot passes through (names never start with '.').
    const PASSING: &str = "snapshot-in-progress";

    /// Why a snapshot could not be taken, listed, restored or deleted.
    #[derive(Debug, thiserror::Error)]
    pub enum SnapshotError {
        /// Saving or restoring the VM failed.
        #[error("{0}")]
        Vm(SavedVmError),
        /// The VM could not be paused or resumed.
        #[error("{0}")]
        Pause(crate::vms::PauseVmError),
        /// The store failed.
        #[error("{0}")]
        Store(StoreError),
        /// No snapshot of that name.
        #[error("no snapshot named '{0}': see 'vm snapshots'")]
        NotFound(String),
        /// A snapshot of that name exists.
        #[error(
            "a snapshot named '{0}' exists: delete it with 'snapshot rm {0}' or pick another name"
        )]
        Exists(String),
        /// The name breaks the rule for VM names.
        #[error("'{name}' cannot name a snapshot: it {why}")]
        BadName {
            /// The name.
            name: String,
            /// The rule.
            why: String,
        },
        /// The info file is damaged.
        #[error("snapshot '{id}' is damaged: {error} (delete it with 'snapshot rm {id}')")]
        Info {
            /// The snapshot.
            id: String,
            /// What is wrong.
            error: InfoError,
        },
        /// Writable disks changed since the snapshot.
        #[error(
            "snapshot '{id}': disk '{disk}' {what} since the snapshot; restoring would give the guest a disk that does not match its memory (use --force to restore anyway)"
        )]
        DiskChanged {
            /// The snapshot.
            id: String,
            /// The disk.
            disk: String,
            /// What changed.
            what: String,
        },
        /// Out of host memory for the state.
        #[error("not enough host memory to read snapshot '{0}'")]
        OutOfMemory(String),
    }

    /// What `vm snapshot` did.
    pub struct TakeReport {
        /// The info written.
        pub info: SnapshotInfo,
        /// Whether the VM was left stopped.
        pub stopped: bool,
    }

    fn now_ns() -> u64 {
        use keel_vmm::vm::Clock as _;
        crate::vms::build::TscClock.now().ns
    }

    fn now_unix() -> Option<u64> {
        crate::arch::rtc::unix_seconds()
    }

    fn store_files() -> Result<Vec<String>, SnapshotError> {
        Ok(store::list()
            .map_err(SnapshotError::Store)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }

    /// Size and content hash of the store file `name` now (`None`: gone).
    fn file_now(name: &str, hash: bool) -> Option<(u64, Option<u64>)> {
        if !hash {
            return store::list()
                .ok()?
                .into_iter()
                .find(|e| e.name == name)
                .map(|e| (e.size, None));
        }
        let mut h = Fnv64::default();
        let entry = store::read_with(name, |b| h.feed(b)).ok()?;
        Some((entry.size, Some(h.0)))
    }

    /// Every snapshot (by name); damaged info files are listed as errors.
    pub fn list() -> Result<Vec<Result<SnapshotInfo, SnapshotError>>, SnapshotError> {
        let mut out = Vec::new();
        for f in store_files()? {
            if let Some(id) = f.strip_suffix(INFO_SUFFIX) {
                out.push(read_info(id));
            }
        }
        Ok(out)
    }

    /// The snapshot `id`'s info.
    pub fn read_info(id: &str) -> Result<SnapshotInfo, SnapshotError> {
        let bytes = store::read(&info_name(id)).map_err(|e| {
            if e.is_not_found() {
                SnapshotError::NotFound(id.into())
            } else {
                SnapshotError::Store(e)
            }
        })?;
        let text = core::str::from_utf8(&bytes).map_err(|_| SnapshotError::Info {
            id: id.into(),
            error: InfoError::NotInfo,
        })?;
        SnapshotInfo::decode(text).map_err(|error| SnapshotError::Info {
            id: id.into(),
            error,
        })
    }

    /// Takes a snapshot of VM `key` named `name` (default `<vm>-<unix time>`): pauses it
    /// (if running), writes the files, then resumes it, or stops it with `stop`.
    pub fn take(
        vms: &mut VmManager,
        key: &str,
        name: Option<&str>,
        stop: bool,
    ) -> Result<TakeReport, SnapshotError> {
        let id = match name {
            Some(n) => String::from(n),
            None => alloc::format!("{key}-{}", now_unix().unwrap_or(0)),
        };
        keel_config::limits::check_vm_name(&id).map_err(|why| SnapshotError::BadName {
            name: id.clone(),
            why,
        })?;
        let files = store_files()?;
        if files
            .iter()
            .any(|f| f.eq_ignore_ascii_case(&info_name(&id)))
        {
            return Err(SnapshotError::Exists(id));
        }
        // Parts of an earlier, interrupted snapshot of this name go first.
        for f in leftover_parts(&files) {
            if f.starts_with(&alloc::format!("{id}.")) {
                store::delete(f).map_err(SnapshotError::Store)?;
            }
        }
        let paused_here = vms.pause(key).is_ok();
        let _ = vms.delete_saved(PASSING);
        let result = write_files(vms, key, &id);
        let _ = vms.delete_saved(PASSING);
        let mut stopped = false;
        match (&result, stop) {
            (Ok(_), true) => {
                stopped = vms.stop(key, crate::vms::StopMode::Force).is_ok();
            }
            _ => {
                if paused_here {
                    vms.resume(key).map_err(SnapshotError::Pause)?;
                }
            }
        }
        result.map(|info| TakeReport { info, stopped })
    }

    fn write_files(
        vms: &mut VmManager,
        key: &str,
        id: &str,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let started = now_ns();
        vms.save(key, Some(PASSING)).map_err(SnapshotError::Vm)?;
        let saved = vms
            .saved()
            .get(PASSING)
            .ok_or_else(|| SnapshotError::NotFound(PASSING.into()))?;
        let bytes = saved.blob.len();
        let parts = part_count(bytes);
        let time = now_unix();
        let mut written: Vec<String> = Vec::new();
        let mut outcome = Ok(());
        for n in 0..parts {
            let base = u64::from(n) * PART_BYTES;
            let len = (bytes - base).min(PART_BYTES);
            let name = part_name(id, n);
            let r = store::create(&name, len, time, |off, buf| {
                saved
                    .blob
                    .read_at(base + off, buf)
                    .map_err(|e| alloc::format!("{e}"))
            });
            match r {
                Ok(_) => written.push(name),
                Err(e) => {
                    outcome = Err(SnapshotError::Store(e));
                    break;
                }
            }
        }
        let mut disks = Vec::new();
        for d in &saved.disks {
            let partition = d.disk.kind == crate::store::claims::DiskKind::Partition;
            let now = if partition {
                Some((0, None))
            } else {
                file_now(&d.disk.name, !d.read_only)
            };
            let (size, hash) = now.unwrap_or((0, None));
            disks.push(SnapshotDisk {
                partition,
                name: d.disk.name.clone(),
                read_only: d.read_only,
                serial: d.serial.clone(),
                size,
                hash,
            });
        }
        let info = SnapshotInfo {
            id: id.into(),
            source: key.into(),
            time,
            memory: saved.description.memory_size,
            cpus: u32::from(saved.description.cpus),
            backend: saved.description.backend.clone(),
            bytes,
            parts,
            paravirt_kvm: saved.paravirt == keel_config::schema::Paravirt::Kvm,
            write_ms: (now_ns() - started) / 1_000_000,
            disks,
            nics: saved
                .nics
                .iter()
                .map(|n| SnapshotNic {
                    bridged: n.network == keel_config::schema::NicNetwork::Bridged,
                    mac: n.mac,
                })
                .collect(),
        };
        if outcome.is_ok() {
            let text = info.encode();
            outcome = store::create(&info_name(id), text.len() as u64, time, |off, buf| {
                buf.copy_from_slice(&text.as_bytes()[off as usize..off as usize + buf.len()]);
                Ok(())
            })
            .map(|_| ())
            .map_err(SnapshotError::Store);
        }
        if let Err(e) = outcome {
            for f in written {
                let _ = store::delete(&f);
            }
            return Err(e);
        }
        Ok(info)
    }

    /// Restores snapshot `id` as a new VM and runs it; refused if a writable disk changed
    /// since, unless `force`. Returns the VM's number and the milliseconds it took.
    pub fn restore(
        vms: &mut VmManager,
        system: &crate::System,
        id: &str,
        force: bool,
    ) -> Result<(u32, u64), SnapshotError> {
        let started = now_ns();
        let info = read_info(id)?;
        if !force {
            let changed = changed_disks(&info, |d| {
                if d.partition {
                    Some((0, None))
                } else {
                    file_now(&d.name, d.hash.is_some())
                }
            });
            if let Some(c) = changed.into_iter().next() {
                return Err(SnapshotError::DiskChanged {
                    id: id.into(),
                    disk: c.name,
                    what: c.what,
                });
            }
        }
        let mut blob = keel_vmm::snapshot::FrameBlob::new(&crate::vms::build::HOST);
        for n in 0..info.parts {
            let mut failed = false;
            store::read_with(&part_name(id, n), |b| {
                if !failed && blob.write_all(b).is_err() {
                    failed = true;
                }
            })
            .map_err(SnapshotError::Store)?;
            if failed {
                return Err(SnapshotError::OutOfMemory(id.into()));
            }
        }
        let _ = vms.delete_saved(PASSING);
        vms.saved_mut().insert(SavedVm {
            name: PASSING.into(),
            description: keel_vmm::vm::VmDescription {
                name: info.source.clone(),
                memory_size: info.memory,
                cpus: info.cpus.min(255) as u8,
                backend: info.backend.clone(),
            },
            blob,
            save_ms: info.write_ms,
            disks: info
                .disks
                .iter()
                .map(|d| crate::vms::disks::DiskSpec {
                    disk: if d.partition {
                        crate::store::claims::DiskName::partition(&d.name)
                    } else {
                        crate::store::claims::DiskName::file(&d.name)
                    },
                    read_only: d.read_only,
                    serial: d.serial.clone(),
                })
                .collect(),
            nics: info
                .nics
                .iter()
                .map(|n| crate::vms::nics::NicSpec {
                    network: if n.bridged {
                        keel_config::schema::NicNetwork::Bridged
                    } else {
                        keel_config::schema::NicNetwork::Internal
                    },
                    mac: n.mac,
                })
                .collect(),
            paravirt: if info.paravirt_kvm {
                keel_config::schema::Paravirt::Kvm
            } else {
                keel_config::schema::Paravirt::None
            },
        });
        let restored = vms.restore(system, PASSING);
        let _ = vms.delete_saved(PASSING);
        let (vm, _) = restored.map_err(SnapshotError::Vm)?;
        vms.resume(&vm.to_string()).map_err(SnapshotError::Pause)?;
        Ok((vm, (now_ns() - started) / 1_000_000))
    }

    /// Deletes snapshot `id` (its info file first); returns the bytes freed.
    pub fn delete(id: &str) -> Result<u64, SnapshotError> {
        let files = store_files()?;
        let info_file = info_name(id);
        let has_info = files.contains(&info_file);
        let prefix = alloc::format!("{id}.snap.");
        let parts: Vec<&String> = files.iter().filter(|f| f.starts_with(&prefix)).collect();
        if !has_info && parts.is_empty() {
            return Err(SnapshotError::NotFound(id.into()));
        }
        let mut freed = 0;
        if has_info {
            freed += store::delete(&info_file).map_err(SnapshotError::Store)?;
        }
        for p in parts {
            freed += store::delete(p).map_err(SnapshotError::Store)?;
        }
        Ok(freed)
    }
}
