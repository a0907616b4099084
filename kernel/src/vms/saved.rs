//! Saved VMs: named blobs in host frames that `vm save` writes and `vm restore` reads.
//!
//! A saved VM is as large as its RAM's non-zero pages, far beyond the kernel heap, so each
//! lives in a [`FrameBlob`]. They stay in memory until deleted or the appliance restarts
//! (writing them to the guest store is a later step). Its neighbour [`super`] saves and
//! restores VMs through the VMM's [`Vm::save`](keel_vmm::vm::Vm::save) and
//! [`Vm::restore`](keel_vmm::vm::Vm::restore).

use alloc::string::String;
use alloc::vec::Vec;

use keel_vmm::snapshot::{FrameBlob, Source};
use keel_vmm::vm::VmDescription;

/// One saved VM.
pub struct SavedVm {
    /// The name it is saved under.
    pub name: String,
    /// What it is.
    pub description: VmDescription,
    /// The bytes.
    pub blob: FrameBlob,
    /// How long the save took, in milliseconds.
    pub save_ms: u64,
    /// The VM's disks, which a restore attaches again in the same order (their contents are
    /// not part of the save: see `VmManager::restore`).
    pub disks: Vec<super::disks::DiskSpec>,
    /// The VM's NICs (networks and MACs), which a restore plugs into new switch ports in the
    /// same order; frames in flight at the save are lost, as on a network.
    pub nics: Vec<super::nics::NicSpec>,
    /// The paravirtual interface the VM offered: a restore offers the same (its guest may
    /// use kvm-clock).
    pub paravirt: keel_config::schema::Paravirt,
}

impl SavedVm {
    /// Size of the saved bytes.
    pub fn size(&self) -> u64 {
        self.blob.len()
    }
}

/// Every saved VM, by name.
#[derive(Default)]
pub struct SavedVms {
    saved: Vec<SavedVm>,
}

impl SavedVms {
    /// No saved VMs.
    pub const fn new() -> SavedVms {
        SavedVms { saved: Vec::new() }
    }

    /// The saved VM named `name`.
    pub fn get(&self, name: &str) -> Option<&SavedVm> {
        self.saved.iter().find(|s| s.name == name)
    }

    /// Adds `saved` (the caller checked that its name is free).
    pub fn insert(&mut self, saved: SavedVm) {
        self.saved.push(saved);
        self.saved.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Deletes the saved VM named `name`, returning its size; `None` if there is none.
    pub fn remove(&mut self, name: &str) -> Option<u64> {
        let i = self.saved.iter().position(|s| s.name == name)?;
        Some(self.saved.remove(i).size())
    }

    /// Every saved VM, by name.
    pub fn iter(&self) -> impl Iterator<Item = &SavedVm> {
        self.saved.iter()
    }
}
