//! Snapshots: `vm snapshot`, `vm snapshots`, `vm restore <snapshot>`, `snapshot rm` — a VM's
//! saved state written to and read from store files (`crate::store::snapshot_files` says
//! which files and in what order).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use keel_vmm::snapshot::{Sink, Source};

pub use crate::store::snapshot_files::*;
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
    #[error("a snapshot named '{0}' exists: delete it with 'snapshot rm {0}' or pick another name")]
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
    /// Whether it was paused for the snapshot and runs again (else it was paused before).
    pub resumed: bool,
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
    if vms.saved().get(PASSING).is_some() {
        return Err(SnapshotError::Vm(SavedVmError::NameTaken(PASSING.into())));
    }
    let paused_here = vms.pause(key).is_ok();
    let started = now_ns();
    let result = vms
        .save(key, Some(PASSING))
        .map_err(SnapshotError::Vm)
        .and_then(|_| {
            let written = write_files(vms, key, &id, started);
            let _ = vms.delete_saved(PASSING);
            written
        });
    let mut stopped = false;
    let mut resumed = false;
    match (&result, stop) {
        (Ok(_), true) => {
            stopped = vms.stop(key, crate::vms::StopMode::Force).is_ok();
        }
        _ => {
            if paused_here {
                vms.resume(key).map_err(SnapshotError::Pause)?;
                resumed = true;
            }
        }
    }
    result.map(|info| TakeReport {
        info,
        stopped,
        resumed,
    })
}

/// Writes the saved VM [`PASSING`] as snapshot `id`'s files (`started`: when the save
/// began, for the figure); on error removes the parts it wrote.
fn write_files(
    vms: &VmManager,
    key: &str,
    id: &str,
    started: u64,
) -> Result<SnapshotInfo, SnapshotError> {
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
    // The snapshot passes through a saved VM of its own name, so errors name it.
    if vms.saved().get(id).is_some() {
        return Err(SnapshotError::Vm(SavedVmError::NameTaken(id.into())));
    }
    vms.saved_mut().insert(SavedVm {
        name: id.into(),
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
    let restored = vms.restore(system, id);
    let _ = vms.delete_saved(id);
    let (vm, _) = restored.map_err(SnapshotError::Vm)?;
    vms.set_source(vm, alloc::format!("snapshot:{id}"));
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
