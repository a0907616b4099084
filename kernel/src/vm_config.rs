//! Named VMs in the saved configuration: `vm create` / `vm destroy` on the console and
//! `POST` / `DELETE /api/v1/vms` over HTTP both come here.
//!
//! A change builds the new configuration from the running one, saves it to the boot disk's
//! configuration partition ([`Settings::replace`]: validated first, written atomically) and
//! only then updates the [`VmManager`], so a refused or failed change leaves the
//! configuration, the disk and the VMs as they were. The settings and the VM manager come
//! from the caller. Callers word the errors for their side (the console prints lines, the API
//! answers a status).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use keel_config::ValidationError;
use keel_config::schema::Vm;

use crate::settings::{SaveError, Settings};
use crate::vms::{VmDefinition, VmManager};

/// Why a VM definition could not be added or removed. Nothing changed.
#[derive(Debug)]
pub enum VmConfigError {
    /// `create`: a VM with this name is in the configuration already.
    Exists(String),
    /// `destroy`: no VM with this name is in the configuration.
    NotConfigured(String),
    /// There is no boot disk (or no configuration partition) to save to.
    NoDisk(String),
    /// The configuration with this change breaks these rules.
    Invalid(Vec<ValidationError>),
    /// Saving failed (the disk, or a configuration replaced meanwhile).
    Save(String),
}

/// Adds `vm` to the configuration, saves it and defines the VM; returns the generation
/// saved.
pub fn create(vms: &mut VmManager, settings: &mut Settings, vm: Vm) -> Result<u64, VmConfigError> {
    let mut config = settings.current().clone();
    if config.vms.iter().any(|v| v.name == vm.name) {
        return Err(VmConfigError::Exists(vm.name));
    }
    let missing = missing_disks(&vm, config.vms.len());
    if !missing.is_empty() {
        return Err(VmConfigError::Invalid(missing));
    }
    config.vms.push(vm);
    let generation = replace_config(settings, config)?;
    vms.define(&VmDefinition::from_config(settings.current()));
    Ok(generation)
}

/// The disks `vm` (to be `vms[index]`) names that this appliance does not have: a file not in
/// the guest store, a partition not on Keel's disk. Checked when an operator creates a VM,
/// not by validation, which cannot see the store: a configuration written elsewhere may name
/// a disk that is made later (and a VM start refuses it until then).
fn missing_disks(vm: &Vm, index: usize) -> Vec<ValidationError> {
    use keel_config::schema::DiskSource;
    let mut missing = Vec::new();
    for (d, disk) in vm.disks.iter().enumerate() {
        let (field, found) = match disk.source() {
            DiskSource::File(name) => (
                "file",
                crate::store::list()
                    .map_err(|e| e.to_string())
                    .map(|files| {
                        // The store is FAT: names match without regard to case.
                        files.iter().any(|f| f.name.eq_ignore_ascii_case(name))
                    }),
            ),
            DiskSource::Partition(name) => (
                "partition",
                crate::blk::guest_partitions::list()
                    .map_err(|e| e.to_string())
                    .map(|(partitions, _)| partitions.iter().any(|p| p.name == name)),
            ),
        };
        let message = match found {
            Ok(true) => continue,
            Ok(false) => match disk.source() {
                DiskSource::File(name) => {
                    alloc::format!("no file {name:?} in the guest store: see 'store ls'")
                }
                DiskSource::Partition(name) => alloc::format!(
                    "no guest-disk partition {name:?} on Keel's disk: see 'disk', or make it \
                     with 'disk create {name} SIZE'"
                ),
            },
            Err(e) => alloc::format!("cannot look for it: {e}"),
        };
        missing.push(ValidationError {
            path: alloc::format!("vms[{index}].disks[{d}].{field}"),
            message,
        });
    }
    missing
}

/// Removes VM `name` from the configuration, saves it, then stops the VM at once and
/// forgets it; returns the generation saved.
pub fn destroy(
    vms: &mut VmManager,
    settings: &mut Settings,
    name: &str,
) -> Result<u64, VmConfigError> {
    let mut config = settings.current().clone();
    let before = config.vms.len();
    config.vms.retain(|v| v.name != name);
    if config.vms.len() == before {
        return Err(VmConfigError::NotConfigured(String::from(name)));
    }
    let generation = replace_config(settings, config)?;
    // The definition is gone: stop it now and forget it.
    let _ = vms.destroy(name);
    Ok(generation)
}

/// Saves `config` as the running configuration; returns its generation.
fn replace_config(
    settings: &mut Settings,
    config: keel_config::Config,
) -> Result<u64, VmConfigError> {
    let mut partition = crate::blk::boot_disk::config_partition()
        .map_err(|e| VmConfigError::NoDisk(e.to_string()))?;
    match settings.replace(&mut partition, config) {
        Ok(saved) => Ok(saved.generation),
        Err(SaveError::Invalid(errors)) => Err(VmConfigError::Invalid(errors)),
        Err(e) => Err(VmConfigError::Save(e.to_string())),
    }
}
