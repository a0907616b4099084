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
    config.vms.push(vm);
    let generation = replace_config(settings, config)?;
    vms.define(&VmDefinition::from_config(settings.current()));
    Ok(generation)
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
