//! Live migration (issue 20): the dirty log on the console, and the TCP source and
//! destination over the migration link ([`link`]).
//!
//! `vm dirty-log <vm> start|pages|stop` drives a VM's dirty log by hand: `start`
//! write-protects its RAM and logs the VMM's own writes, `pages` harvests (lists the pages
//! written since the last harvest and protects them again), `stop` lifts protection. It is
//! what pre-copy does per round, made observable for tests and diagnosis.

pub mod link;
pub mod records;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use crate::console::command::DirtyLogAction;
use crate::vms::VmManager;

/// What `vm dirty-log` reports.
#[derive(Debug)]
pub enum DirtyLogReport {
    /// Logging started over `ram` bytes.
    Started {
        /// Guest RAM in bytes.
        ram: u64,
    },
    /// A harvest's pages (guest-physical addresses, in order).
    Pages(Vec<u64>),
    /// Logging stopped.
    Stopped,
}

/// Why `vm dirty-log` failed.
#[derive(Debug)]
pub enum DirtyLogError {
    /// No running or paused VM of that name or number.
    NoSuchVm(String),
    /// `pages` while logging is off.
    NotLogging(String),
    /// The nested page tables could not be changed (no host memory for a split).
    Tables(String, keel_vmm::memory::MemoryError),
}

impl fmt::Display for DirtyLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyLogError::NoSuchVm(key) => {
                write!(f, "no running VM '{key}' ('vm list' shows them)")
            }
            DirtyLogError::NotLogging(key) => write!(
                f,
                "vm {key} has no dirty log: 'vm dirty-log {key} start' first"
            ),
            DirtyLogError::Tables(key, e) => write!(
                f,
                "vm {key}: cannot change its nested page tables ({e}); all its RAM counts as dirty"
            ),
        }
    }
}

/// Runs `vm dirty-log <key> <action>`.
pub fn dirty_log(
    vms: &mut VmManager,
    key: &str,
    action: DirtyLogAction,
) -> Result<DirtyLogReport, DirtyLogError> {
    let vm = vms
        .live_vm_mut(key)
        .ok_or_else(|| DirtyLogError::NoSuchVm(String::from(key)))?;
    let ram = vm.memory_size();
    let backend = vm
        .vm_backend_mut()
        .ok_or_else(|| DirtyLogError::NoSuchVm(String::from(key)))?;
    let tables = |e| DirtyLogError::Tables(String::from(key), e);
    match action {
        DirtyLogAction::Start => {
            backend.start_dirty_log().map_err(tables)?;
            Ok(DirtyLogReport::Started { ram })
        }
        DirtyLogAction::Pages => {
            if !backend.memory_map().is_logging_dirty() {
                return Err(DirtyLogError::NotLogging(String::from(key)));
            }
            let log = backend.harvest_dirty().map_err(tables)?;
            Ok(DirtyLogReport::Pages(log.pages().collect()))
        }
        DirtyLogAction::Stop => {
            backend.stop_dirty_log().map_err(tables)?;
            Ok(DirtyLogReport::Stopped)
        }
    }
}

/// Most pages `vm dirty-log <vm> pages` lists by address (the count is always whole).
pub const LISTED_PAGES: usize = 64;

impl fmt::Display for DirtyLogReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyLogReport::Started { ram } => {
                write!(f, "dirty log on: {} MiB of RAM write-protected", ram >> 20)
            }
            DirtyLogReport::Pages(pages) => {
                write!(
                    f,
                    "{} dirty page{}:",
                    pages.len(),
                    if pages.len() == 1 { "" } else { "s" }
                )?;
                for gpa in pages.iter().take(LISTED_PAGES) {
                    write!(f, " {gpa:#x}")?;
                }
                if pages.len() > LISTED_PAGES {
                    write!(f, " …")?;
                }
                Ok(())
            }
            DirtyLogReport::Stopped => f.write_str("dirty log off: RAM writable again"),
        }
    }
}
