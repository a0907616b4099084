//! The kernel's side of running VMs: host frames for the VMM, named VMs from the
//! configuration (kernel and initrd from the guest store) and ad-hoc VMs from boot modules
//! (`vm run`), their lifecycle, round-robin scheduling on the boot CPU between console work,
//! and echoing guest output.
//!
//! Each scheduling slice runs one VM until the host timer ticks (a `VmExit::Interrupted` or a
//! preemption request), so a guest that never exits still gives the CPU back every tick (1 ms),
//! or until an exit in which one of its NICs sent a frame, so the kernel forwards it at once.
//!
//! # Names and lifecycle
//!
//! A named VM exists from its definition ([`VmDefinition`], a `[[vms]]` entry of the
//! configuration) whether or not it runs; an ad-hoc VM from `vm run` exists from its start and
//! is known by its number. Commands take either (`vm stop web`, `vm stop 3`).
//!
//! ```text
//!   defined ──start──► running ◄──► halted (waiting for an interrupt)
//!                        │  ▲   ▲
//!             stop: ACPI │  │   └── resume ── paused ◄── pause (from running or halted);
//!          power button  ▼  │                   │        a forced stop ends a pause
//!                      stopping ──guest powers off, or the grace time ends (forced)──► stopped
//! ```
//!
//! A paused VM can be saved (`vm save`); `vm restore` builds a new, paused, ad-hoc VM from
//! the saved bytes ([`saved`]).
//!
//! A stopped VM keeps its record (stop reason, exits, console output) until it is started
//! again; its RAM and vCPU are freed at once, its disks' claims given back and its NICs
//! unplugged from their switches within a slice.
//!
//! # Devices
//!
//! A named VM's disks ([`disks`]) and NICs ([`nics`]) are attached at each start, disks
//! first; a restore attaches the saved VM's again in the same order. Between the network
//! poll and the VM slice the kernel's loop calls [`VmManager::poll_io`], which hands frames
//! waiting on a guest's switch port to its NIC even while its vCPUs are halted.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use keel_vmm::exit_handler::StopReason;
use keel_vmm::vm::{Clock, Vm, VmState};

use self::build::{
    Blueprint, BuiltVm, ImageBytes, KernelRebuild, RebuildError, build_vm, module_bytes, store_file,
};
use crate::System;
use crate::boot::BootModule;

mod build;
pub mod disks;
pub mod nics;
mod report;
mod saved;
pub mod snapshots;

pub use self::saved::{SavedVm, SavedVms};

pub use self::build::{KernelHost, TscClock};
pub use self::report::{NicInfo, ViewState, VmView};

/// Guest RAM when `vm run` gives no `mem=`.
pub const DEFAULT_MEM_MIB: u32 = 16;
/// Guest RAM for a Linux VM when `mem=` is not given.
pub const DEFAULT_LINUX_MEM_MIB: u32 = 256;
/// Guest RAM accepted, in MiB (a multiple of `MEMORY_ALIGN_MIB`: guest RAM comes in 2 MiB
/// pages): the configuration's limits, which the console and the API check too.
pub const MEM_MIB_RANGE: (u32, u32) = (
    keel_config::limits::MIN_RUN_MEMORY_MIB,
    keel_config::limits::MAX_MEMORY_MIB,
);

// The configuration's vCPU limit (what the console, the API and validation accept) must fit
// the VMM's platform (one local APIC per vCPU).
const _: () = assert!(keel_config::limits::MAX_VCPUS <= keel_vmm::devices::MAX_CPUS);

/// Why a VM could not be stopped.
#[derive(Debug)]
pub enum StopError {
    /// No VM has this name or number.
    NoSuchVm(String),
    /// The VM is not running.
    NotRunning {
        /// The VM's name or number.
        vm: String,
        /// Its state.
        state: String,
    },
    /// A graceful stop of a paused VM (its guest cannot see the power button).
    Paused(String),
}

impl core::fmt::Display for StopError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StopError::NoSuchVm(key) => write!(f, "no VM named '{key}': see 'vm list'"),
            StopError::NotRunning { vm, state } => write!(f, "VM {vm} is not running ({state})"),
            StopError::Paused(vm) => write!(
                f,
                "VM {vm} is paused and cannot answer the power button: resume it first, or \
                 stop it with force"
            ),
        }
    }
}

/// Why a VM could not be saved or restored, or a saved VM not deleted.
#[derive(Debug)]
pub enum SavedVmError {
    /// No VM has this name or number.
    NoSuchVm(String),
    /// No saved VM has this name.
    NoSuchSave(String),
    /// The name breaks the naming rule.
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        why: String,
    },
    /// A saved VM has this name already.
    NameTaken(String),
    /// Only a paused VM is saved.
    NotPaused {
        /// The VM's name or number.
        vm: String,
        /// Its state.
        state: String,
    },
    /// The VMM could not save it.
    Save {
        /// The VM's name or number.
        vm: String,
        /// Why.
        error: keel_vmm::vm::SaveError,
    },
    /// Its disks cannot be opened, claimed or attached again; nothing was created.
    Disks {
        /// The saved VM's name.
        saved: String,
        /// Why.
        error: disks::DiskAttachError,
    },
    /// Its NICs cannot be attached again (a MAC in use); nothing was created.
    Nics {
        /// The saved VM's name.
        saved: String,
        /// Why.
        error: nics::NicAttachError,
    },
    /// The VMM could not restore it; nothing was created.
    Restore {
        /// The saved VM's name.
        saved: String,
        /// Why.
        error: keel_vmm::vm::RestoreError,
    },
}

impl core::fmt::Display for SavedVmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SavedVmError::NoSuchVm(key) => write!(f, "no VM named '{key}': see 'vm list'"),
            SavedVmError::NoSuchSave(name) => {
                write!(f, "no saved VM named '{name}': see 'saved ls'")
            }
            SavedVmError::BadName { name, why } => {
                write!(f, "'{name}' cannot name a saved VM: it {why}")
            }
            SavedVmError::NameTaken(name) => write!(
                f,
                "a saved VM named '{name}' exists: delete it with 'saved rm {name}' or choose \
                 another name"
            ),
            SavedVmError::NotPaused { vm, state } => {
                write!(f, "VM {vm} is {state}: pause it first ('vm pause {vm}')")
            }
            SavedVmError::Save { vm, error } => write!(f, "cannot save VM {vm}: {error}"),
            SavedVmError::Restore { saved, error } => {
                write!(f, "cannot restore '{saved}': {error}")
            }
            SavedVmError::Disks { saved, error } => {
                write!(f, "cannot restore '{saved}': {error}")
            }
            SavedVmError::Nics { saved, error } => {
                write!(f, "cannot restore '{saved}': {error}")
            }
        }
    }
}

/// What `vm save` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveReport {
    /// The name it is saved under.
    pub name: String,
    /// Bytes saved.
    pub bytes: u64,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs.
    pub cpus: usize,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// Why a VM could not be paused or resumed.
#[derive(Debug, PartialEq, Eq)]
pub enum PauseVmError {
    /// No VM has this name or number.
    NoSuchVm(String),
    /// The VM is not in a state that allows it.
    Refused {
        /// `"pause"` or `"resume"`.
        action: &'static str,
        /// The VM's name or number.
        vm: String,
        /// Why, e.g. "it is not paused".
        why: String,
    },
}

impl core::fmt::Display for PauseVmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PauseVmError::NoSuchVm(key) => write!(f, "no VM named '{key}': see 'vm list'"),
            PauseVmError::Refused { action, vm, why } => {
                write!(f, "cannot {action} VM {vm}: {why}")
            }
        }
    }
}

/// How `vm stop` (and the API's stop) ends a VM: one definition for the console and HTTP.
pub use keel_netstack::api::{DEFAULT_STOP_TIMEOUT_S, StopMode};

/// How `vm run` (and the API's module run) starts an ad-hoc VM; defaults for what is `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions<'a> {
    /// Guest RAM in MiB.
    pub mem_mib: Option<u32>,
    /// vCPUs (1 by default).
    pub cpus: Option<u8>,
    /// The initrd module (Linux guests).
    pub initrd: Option<&'a str>,
    /// The kernel command line (Linux guests).
    pub cmdline: Option<&'a str>,
    /// The paravirtual interface its CPUID offers (KVM's by default).
    pub paravirt: keel_config::schema::Paravirt,
    /// Test devices added to its PC (`devices=debug-exit,pc-testdev`).
    pub devices: &'a [keel_config::schema::VmDevice],
}

/// A named VM, as the configuration defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDefinition {
    /// Its name.
    pub name: String,
    /// The file in the guest store it boots: its kernel, or its firmware when `firmware`
    /// (a firmware is loaded exactly like a PVH kernel).
    pub kernel: String,
    /// Whether `kernel` is the configuration's `firmware` (boots the VM from its disks).
    pub firmware: bool,
    /// Initrd file in the guest store.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// Start it at boot.
    pub autostart: bool,
    /// The paravirtual interface its CPUID offers (`[vms.cpuid] paravirt`).
    pub paravirt: keel_config::schema::Paravirt,
    /// Test devices added to its PC (`vms[].devices`).
    pub devices: Vec<keel_config::schema::VmDevice>,
    /// Its disks, attached at each start as virtio-blk PCI functions in this order
    /// ([`disks`]).
    pub disks: Vec<keel_config::schema::VmDisk>,
    /// Its NICs with their MACs (configured, or derived from the hostname), attached at
    /// each start after the disks as virtio-net PCI functions in this order ([`nics`]).
    pub nics: Vec<nics::NicSpec>,
}

impl VmDefinition {
    /// The definitions of the configuration's `[[vms]]`.
    pub fn from_config(config: &keel_config::Config) -> Vec<VmDefinition> {
        config
            .vms
            .iter()
            .map(|vm| VmDefinition {
                name: vm.name.clone(),
                // Validation guarantees one of kernel and firmware.
                kernel: String::from(vm.boot_file().unwrap_or_default()),
                firmware: vm.kernel.is_none(),
                initrd: vm.initrd.clone(),
                cmdline: vm.cmdline.clone(),
                // Validation caps it at `MAX_MEMORY_MIB`.
                memory_mib: u32::try_from(vm.memory_mib).unwrap_or(u32::MAX),
                // Validation caps it at `MAX_VCPUS`.
                vcpus: u8::try_from(vm.vcpus).unwrap_or(u8::MAX),
                autostart: vm.autostart,
                paravirt: vm.cpuid.paravirt,
                devices: vm.devices.clone(),
                disks: vm.disks.clone(),
                nics: nics::NicSpec::from_config(&config.hostname, &vm.name, &vm.nics),
            })
            .collect()
    }
}

/// Why a VM could not be started.
#[derive(Debug)]
pub enum StartError {
    /// No boot module has this index or name.
    NoSuchModule(String),
    /// No VM is defined with this name.
    NoSuchVm(String),
    /// The VM is already running.
    AlreadyRunning(String),
    /// A guest store file could not be read.
    Store(String),
    /// The memory size is outside the accepted range or odd.
    BadMemorySize(u32),
    /// The vCPU count is 0 or above the most a VM can have.
    BadCpuCount(u8),
    /// The host could not provide the guest RAM.
    NoMemory(String),
    /// The payload does not fit or is empty.
    Load(String),
    /// The backend could not create the vCPU (e.g. no virtualization).
    Vcpu(keel_vmm::backend::BackendError),
    /// A restart could not stop the running VM first.
    Stop(StopError),
    /// Its disks cannot be opened, claimed or attached.
    Disk(disks::DiskAttachError),
    /// Its NICs cannot be attached.
    Nic(nics::NicAttachError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoSuchModule(key) => write!(f, "no boot module '{key}': see 'modules'"),
            StartError::NoSuchVm(name) => {
                write!(
                    f,
                    "no VM named '{name}': see 'vm list' (or 'vm run' for a boot module)"
                )
            }
            StartError::AlreadyRunning(name) => {
                write!(
                    f,
                    "VM {name} is already running: 'vm restart {name}' restarts it"
                )
            }
            StartError::Store(m) => f.write_str(m),
            StartError::BadMemorySize(mib) => write!(
                f,
                "guest memory must be an even number of MiB between {} and {} (got {mib})",
                MEM_MIB_RANGE.0, MEM_MIB_RANGE.1
            ),
            StartError::BadCpuCount(n) => write!(
                f,
                "a VM has 1 to {} vCPUs (got {n})",
                keel_config::limits::MAX_VCPUS
            ),
            StartError::NoMemory(m) | StartError::Load(m) => f.write_str(m),
            StartError::Vcpu(e) => write!(f, "cannot create the vCPU: {e}"),
            StartError::Stop(e) => write!(f, "{e}"),
            StartError::Disk(e) => write!(f, "{e}"),
            StartError::Nic(e) => write!(f, "{e}"),
        }
    }
}

/// One VM slot: a named VM (defined, maybe running) or an ad-hoc one from `vm run`.
struct Entry {
    /// Its number, unique on this host for as long as it runs (`vm list`, `vm stop 3`).
    id: u32,
    /// The definition of a named VM; `None` for an ad-hoc VM.
    definition: Option<VmDefinition>,
    /// Whether the configuration still defines it. A named VM whose definition went away
    /// while it ran keeps its record until it stops, then is forgotten.
    in_config: bool,
    /// What it was started from, for `vm list` (`store:vmlinuz`, a module name).
    source: String,
    /// The current or last run.
    run: Option<Run>,
    /// Start it again once it has stopped (`vm restart`).
    restart_pending: bool,
}

/// One run of a VM.
struct Run {
    vm: Vm,
    started_ns: u64,
    stopped_ns: Option<u64>,
    echoed: u64,
    line: Vec<u8>,
    stop_reported: bool,
    /// When a graceful stop turns into a forced one.
    stop_deadline_ns: Option<u64>,
    /// Its disks, as attached (their claims are released when it stops).
    disks: Vec<disks::AttachedDisk>,
    /// Its NICs, as attached (unplugged from their switches when it stops).
    nics: Vec<nics::AttachedNic>,
    /// The host CPU its vCPUs last ran on (`None` before the first slice). A VM's vCPUs
    /// take turns in its slice, so they share it.
    host_cpu: Option<usize>,
    /// Host CPU time spent in its slices (all its vCPUs: they take turns in a slice).
    run_ns: u64,
}

impl Entry {
    /// The name commands use: the definition's name, or the number of an ad-hoc VM.
    fn key(&self) -> String {
        match &self.definition {
            Some(d) => d.name.clone(),
            None => alloc::format!("{}", self.id),
        }
    }

    /// The prefix of its console lines: `[web]`, or `[vm3]` for an ad-hoc VM.
    fn label(&self) -> String {
        match &self.definition {
            Some(d) => d.name.clone(),
            None => alloc::format!("vm{}", self.id),
        }
    }

    /// A named VM the configuration defines.
    fn configured(&self) -> bool {
        self.definition.is_some() && self.in_config
    }

    /// Ad-hoc VMs keep their record; named ones while defined or running.
    fn worth_keeping(&self) -> bool {
        self.definition.is_none() || self.in_config || self.is_live()
    }

    fn is_live(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.vm.is_stopped())
    }

    /// The state as `vm list` and `vm info` show it.
    fn state_text(&self) -> String {
        match &self.run {
            None => String::from("defined"),
            Some(run) => match run.vm.state() {
                VmState::Running | VmState::WaitingForInterrupt
                    if run.stop_deadline_ns.is_some() =>
                {
                    String::from("stopping")
                }
                VmState::Running => String::from("running"),
                VmState::WaitingForInterrupt => String::from("running (idle)"),
                VmState::Paused => String::from("paused"),
                VmState::Stopped(reason) => alloc::format!("stopped: {reason}"),
            },
        }
    }
}

/// All VMs on this host.
pub struct VmManager {
    vms: Vec<Entry>,
    next_id: u32,
    cursor: usize,
    /// The VM whose console the operator is attached to: its output is shown raw by the
    /// console, not echoed as lines.
    attached: Option<u32>,
    /// VMs saved with `vm save`.
    saved: SavedVms,
}

impl Default for VmManager {
    fn default() -> Self {
        Self::new()
    }
}

fn new_run(built: BuiltVm) -> Run {
    let BuiltVm { vm, disks, nics } = built;
    Run {
        vm,
        disks,
        nics,
        started_ns: TscClock.now().ns,
        stopped_ns: None,
        echoed: 0,
        line: Vec::new(),
        stop_reported: false,
        stop_deadline_ns: None,
        host_cpu: None,
        run_ns: 0,
    }
}

/// Nanoseconds since boot on the clock VMs and the load figures use (the TSC).
pub fn now_ns() -> u64 {
    TscClock.now().ns
}

// Live migration (issue 20; `crate::migrate`) reaches a VM through these.
impl VmManager {
    /// The running (or paused) VM `key` names, for the dirty log and migration; `None`
    /// when there is none or it has stopped.
    pub fn live_vm_mut(&mut self, key: &str) -> Option<&mut Vm> {
        let i = self.index(key)?;
        match self.vms[i].run.as_mut() {
            Some(run) if !run.vm.is_stopped() => Some(&mut run.vm),
            _ => None,
        }
    }

    /// What a migration of VM `key` sends as its configuration: name, RAM, vCPUs and
    /// paravirtual interface; refused (with the reason) for a VM that is not running or
    /// has disks or NICs, which this version does not migrate.
    pub fn migration_candidate(&self, key: &str) -> Result<MigrationCandidate, String> {
        let i = self
            .index(key)
            .ok_or_else(|| alloc::format!("no VM named '{key}' ('vm list' shows them)"))?;
        let e = &self.vms[i];
        let state = e.state_text();
        let run = match e.run.as_ref() {
            Some(run) if !run.vm.is_stopped() && !run.vm.is_paused() => run,
            _ => return Err(alloc::format!("vm {key} is not running ({state})")),
        };
        // Read-only store files travel by name and hash (the destination must hold the
        // same content); writable disks and partitions would need their content copied.
        for d in &run.disks {
            if !d.spec.read_only || d.spec.disk.kind == crate::store::claims::DiskKind::Partition {
                return Err(alloc::format!(
                    "vm {key} has the writable disk or partition '{}': only read-only store \
                     images can migrate (stop it, copy the disk, start it on the destination)",
                    d.spec.disk.name
                ));
            }
            // The stream carries an image's name and hash only: the guest must read the
            // serial the destination derives from the name.
            if d.spec.serial.is_some() {
                return Err(alloc::format!(
                    "vm {key}'s disk '{}' has its own serial: only disks with the default \
                     serial (their name) can migrate",
                    d.spec.disk.name
                ));
            }
        }
        if !run.nics.is_empty() {
            return Err(alloc::format!(
                "vm {key} has NICs: migrating VMs with NICs is not supported yet"
            ));
        }
        Ok(MigrationCandidate {
            name: String::from(run.vm.name()),
            memory_size: run.vm.memory_size(),
            vcpus: run.vm.cpu_count() as u32,
            kvm_paravirt: run.vm.offers_kvm_clock(),
            disks: run.disks.iter().map(|d| d.spec.clone()).collect(),
        })
    }

    /// Drops VM `key` after it moved to another appliance (its RAM is freed).
    pub fn remove_migrated(&mut self, key: &str) {
        if let Some(i) = self.index(key) {
            let e = self.vms.remove(i);
            // Its read-only images are free for other VMs here again.
            disks::release(e.id);
            if self.attached == Some(e.id) {
                self.attached = None;
            }
            defmt::info!("vm {=u32} migrated away", e.id);
        }
    }

    /// Builds a VM that migrated in, from its state over `memory`, and runs it; `source` is
    /// what `vm list` and `vm info` show as where it came from. Returns its number.
    pub fn adopt_migrated(
        &mut self,
        system: &System,
        state: &[u8],
        memory: keel_vmm::memory::GuestMemory,
        kvm_paravirt: bool,
        disk_specs: &[disks::DiskSpec],
        source: String,
    ) -> Result<u32, String> {
        let id = self.next_id;
        let label = alloc::format!("vm{id}");
        let key = alloc::format!("{id}");
        self.release_stopped();
        let opened = disks::open_all(disk_specs).map_err(|e| alloc::format!("{e}"))?;
        disks::claim(id, &key, &opened).map_err(|e| alloc::format!("{e}"))?;
        let paravirt = if kvm_paravirt {
            keel_config::schema::Paravirt::Kvm
        } else {
            keel_config::schema::Paravirt::None
        };
        let rebuild = KernelRebuild::new(system, id, &label, &key, opened, &[], paravirt);
        let restored = Vm::restore_migrated(id, label.clone(), state, memory, &rebuild, &TscClock);
        let (mut vm, disks, nics) = match (restored, rebuild.into_devices()) {
            (Ok(vm), Ok((d, n))) => (vm, d, n),
            (Err(e), _) => {
                disks::release(id);
                return Err(alloc::format!("{e}"));
            }
            (_, Err(_)) => {
                disks::release(id);
                return Err(String::from("its devices could not be attached"));
            }
        };
        if let Err(e) = vm.resume(&TscClock) {
            disks::release(id);
            return Err(alloc::format!("{e}"));
        }
        self.next_id += 1;
        defmt::info!("vm {=u32} migrated in", id);
        self.vms.push(Entry {
            id,
            definition: None,
            in_config: false,
            source,
            run: Some(new_run(BuiltVm { vm, disks, nics })),
            restart_pending: false,
        });
        Ok(id)
    }

    /// Where guest RAM for an incoming migration comes from (host-wide staging, as for
    /// restores).
    pub fn staging_host() -> &'static dyn keel_vmm::host::HostMemory {
        &build::HOST
    }
}

/// What a migration needs to know of a VM before it starts (see
/// [`VmManager::migration_candidate`]).
#[derive(Clone, Debug)]
pub struct MigrationCandidate {
    /// Its name.
    pub name: String,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Whether its CPUID offers KVM's paravirtual interface.
    pub kvm_paravirt: bool,
    /// Its disks: read-only store files, in attach order.
    pub disks: Vec<disks::DiskSpec>,
}

impl VmManager {
    /// Where the vCPUs of the VMs that have not stopped run: `(host CPU, "name/vcpuN")`,
    /// for `cpus` and `GET /api/v1/system`.
    pub fn vcpu_placement(&self) -> Vec<(usize, String)> {
        let mut placed = Vec::new();
        for e in &self.vms {
            let Some(run) = e.run.as_ref().filter(|r| !r.vm.is_stopped()) else {
                continue;
            };
            let Some(cpu) = run.host_cpu else { continue };
            for vcpu in 0..run.vm.cpu_count() {
                placed.push((cpu, alloc::format!("{}/vcpu{vcpu}", e.key())));
            }
        }
        placed
    }

    /// No VMs.
    pub const fn new() -> VmManager {
        VmManager {
            vms: Vec::new(),
            next_id: 1,
            cursor: 0,
            attached: None,
            saved: SavedVms::new(),
        }
    }

    /// Finds a boot module by index or file name.
    pub fn find_module<'a>(system: &'a System, key: &str) -> Option<&'a BootModule> {
        let modules = &system.boot.modules;
        match key.parse::<usize>() {
            Ok(i) => modules.get(i),
            Err(_) => modules.iter().find(|m| m.name.as_str() == key),
        }
    }

    /// The VM `key` names: a name, or any VM's number (names never are all digits).
    fn index(&self, key: &str) -> Option<usize> {
        match key.parse::<u32>() {
            Ok(number) => self.vms.iter().position(|e| e.id == number),
            Err(_) => self.vms.iter().position(|e| e.key() == key),
        }
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Makes the named VMs match `definitions` (the configuration's `[[vms]]`): new names are
    /// added as defined, changed definitions apply at the next start, and names no longer
    /// defined are forgotten unless they run (those go when they stop).
    pub fn define(&mut self, definitions: &[VmDefinition]) {
        for d in definitions {
            match self.index(&d.name) {
                Some(i) => {
                    self.vms[i].definition = Some(d.clone());
                    self.vms[i].in_config = true;
                }
                None => {
                    let id = self.take_id();
                    self.vms.push(Entry {
                        id,
                        definition: Some(d.clone()),
                        in_config: true,
                        source: alloc::format!("store:{}", d.kernel),
                        run: None,
                        restart_pending: false,
                    });
                }
            }
        }
        for e in &mut self.vms {
            if let Some(d) = &e.definition {
                e.in_config = definitions.iter().any(|n| n.name == d.name);
            }
        }
        self.vms.retain(Entry::worth_keeping);
        self.cursor = 0;
    }

    /// The names of the named VMs (for completion).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.vms.iter().map(Entry::key)
    }

    /// Starts every named VM marked autostart; returns one line per VM for the console.
    pub fn autostart(&mut self, system: &System) -> Vec<String> {
        let names: Vec<String> = self
            .vms
            .iter()
            .filter_map(|e| e.definition.as_ref().filter(|d| d.autostart))
            .map(|d| d.name.clone())
            .collect();
        names
            .into_iter()
            .map(|name| match self.start_named(system, &name) {
                Ok(()) => alloc::format!("vm {name} started (autostart)"),
                Err(e) => alloc::format!("vm {name}: autostart failed: {e}"),
            })
            .collect()
    }

    /// Starts the named VM `name` from its definition (kernel and initrd from the guest
    /// store).
    pub fn start_named(&mut self, system: &System, name: &str) -> Result<(), StartError> {
        let i = self
            .index(name)
            .filter(|&i| self.vms[i].configured())
            .ok_or_else(|| StartError::NoSuchVm(String::from(name)))?;
        if self.vms[i].is_live() {
            return Err(StartError::AlreadyRunning(String::from(name)));
        }
        let Some(d) = self.vms[i].definition.clone() else {
            return Err(StartError::NoSuchVm(String::from(name)));
        };
        let kernel = store_file(
            name,
            if d.firmware { "firmware" } else { "kernel" },
            &d.kernel,
        )?;
        // A firmware is entered as a PVH ELF; anything else would run as a flat payload.
        if d.firmware && !kernel.bytes().starts_with(b"\x7fELF") {
            return Err(StartError::Load(alloc::format!(
                "VM {name}: its firmware '{}' is not an ELF file: give it rust-hypervisor-firmware's \
                 ELF build (hypervisor-fw)",
                d.kernel
            )));
        }
        let initrd = match &d.initrd {
            Some(f) => Some(store_file(name, "initrd", f)?),
            None => None,
        };
        let bp = Blueprint {
            name: &d.kernel,
            kernel,
            initrd,
            initrd_name: d.initrd.as_deref(),
            cmdline: Some(&d.cmdline),
            mem_mib: Some(d.memory_mib),
            // The configuration's validation keeps it within 1..=MAX_VCPUS.
            cpus: d.vcpus,
            paravirt: d.paravirt,
            devices: &d.devices,
        };
        let id = self.vms[i].id;
        // A VM that stopped since the last slice gives its disks and MACs back before any
        // claim.
        self.release_stopped();
        self.check_macs(id, name, &d.nics)
            .map_err(StartError::Nic)?;
        let specs: Vec<disks::DiskSpec> =
            d.disks.iter().map(disks::DiskSpec::from_config).collect();
        let opened = disks::open_all(&specs).map_err(StartError::Disk)?;
        disks::claim(id, name, &opened).map_err(StartError::Disk)?;
        let built = match build_vm(system, id, d.name.clone(), &bp, opened, &d.nics) {
            Ok(built) => built,
            Err(e) => {
                disks::release(id);
                return Err(e);
            }
        };
        defmt::info!("vm {=str} started from the store", name);
        crate::events::record(
            crate::events::EventKind::VmStarted,
            Some(name),
            &alloc::format!(
                "started from the store ({}, {} MiB, {} vCPU)",
                d.kernel,
                d.memory_mib,
                d.vcpus
            ),
        );
        let e = &mut self.vms[i];
        e.run = Some(new_run(built));
        e.restart_pending = false;
        Ok(())
    }

    /// Starts an ad-hoc VM from a boot module (`vm run`); returns its number. A Linux bzImage
    /// or PVH ELF kernel boots with `options.initrd` (another module) and `options.cmdline`;
    /// anything else is a flat payload entered in real mode at 0x7C00.
    pub fn start(
        &mut self,
        system: &System,
        key: &str,
        options: RunOptions<'_>,
    ) -> Result<u32, StartError> {
        let RunOptions {
            mem_mib,
            cpus,
            initrd,
            cmdline,
            paravirt,
            devices,
        } = options;
        let module = Self::find_module(system, key)
            .ok_or_else(|| StartError::NoSuchModule(String::from(key)))?;
        let initrd_name = initrd;
        let initrd = match initrd {
            Some(name) => Some(ImageBytes::Module(module_bytes(
                Self::find_module(system, name)
                    .ok_or_else(|| StartError::NoSuchModule(String::from(name)))?,
            ))),
            None => None,
        };
        let bp = Blueprint {
            name: module.name.as_str(),
            kernel: ImageBytes::Module(module_bytes(module)),
            initrd,
            initrd_name,
            cmdline,
            mem_mib,
            cpus: cpus.unwrap_or(1),
            paravirt,
            devices,
        };
        let id = self.next_id;
        // Ad-hoc VMs have neither disks nor NICs.
        let built = build_vm(system, id, alloc::format!("vm{id}"), &bp, Vec::new(), &[])?;
        self.next_id += 1;
        defmt::info!(
            "vm {=u32} started from module {=str}",
            id,
            module.name.as_str()
        );
        crate::events::record(
            crate::events::EventKind::VmStarted,
            Some(&alloc::format!("vm{id}")),
            &alloc::format!("started from boot module {}", module.name),
        );
        self.vms.push(Entry {
            id,
            definition: None,
            in_config: false,
            source: String::from(module.name.as_str()),
            run: Some(new_run(built)),
            restart_pending: false,
        });
        Ok(id)
    }

    /// Stops VM `key` (a name or number) as `mode` says.
    pub fn stop(&mut self, key: &str, mode: StopMode) -> Result<(), StopError> {
        let i = self
            .index(key)
            .ok_or_else(|| StopError::NoSuchVm(String::from(key)))?;
        let e = &mut self.vms[i];
        let state = e.state_text();
        let Some(run) = e.run.as_mut().filter(|r| !r.vm.is_stopped()) else {
            return Err(StopError::NotRunning {
                vm: String::from(key),
                state,
            });
        };
        match mode {
            StopMode::Force => {
                run.vm.stop(StopReason::Operator);
                for nic in &run.nics {
                    nic.detach();
                }
                disks::release(e.id);
            }
            StopMode::Graceful { .. } if run.vm.is_paused() => {
                return Err(StopError::Paused(String::from(key)));
            }
            StopMode::Graceful { timeout_s } => {
                let now = TscClock.now().ns;
                run.vm.press_power_button(now);
                run.stop_deadline_ns = Some(now + u64::from(timeout_s) * 1_000_000_000);
            }
        }
        Ok(())
    }

    /// Pauses VM `key` (a name or number): its vCPUs stop running and its clock stands still
    /// until [`resume`](Self::resume).
    pub fn pause(&mut self, key: &str) -> Result<(), PauseVmError> {
        self.pause_or_resume(key, "pause")
    }

    /// Resumes a paused VM where it stopped.
    pub fn resume(&mut self, key: &str) -> Result<(), PauseVmError> {
        self.pause_or_resume(key, "resume")
    }

    fn pause_or_resume(&mut self, key: &str, action: &'static str) -> Result<(), PauseVmError> {
        let i = self
            .index(key)
            .ok_or_else(|| PauseVmError::NoSuchVm(String::from(key)))?;
        let e = &mut self.vms[i];
        let refuse = |why: String| PauseVmError::Refused {
            action,
            vm: String::from(key),
            why,
        };
        let state = e.state_text();
        let Some(run) = e.run.as_mut() else {
            return Err(refuse(alloc::format!("it is not running ({state})")));
        };
        if run.stop_deadline_ns.is_some() && !run.vm.is_stopped() {
            return Err(refuse(String::from("it is stopping")));
        }
        let done = if action == "pause" {
            run.vm.pause(&TscClock)
        } else {
            run.vm.resume(&TscClock)
        };
        done.map_err(|e| refuse(alloc::format!("{e}")))
    }

    /// Saves paused VM `key` as `name` (default: the VM's name or number).
    pub fn save(&mut self, key: &str, name: Option<&str>) -> Result<SaveReport, SavedVmError> {
        let i = self
            .index(key)
            .ok_or_else(|| SavedVmError::NoSuchVm(String::from(key)))?;
        let e = &self.vms[i];
        let name = String::from(name.unwrap_or(&e.key()));
        if name.parse::<u32>().is_err() {
            keel_config::limits::check_vm_name(&name).map_err(|why| SavedVmError::BadName {
                name: name.clone(),
                why,
            })?;
        }
        if self.saved.get(&name).is_some() {
            return Err(SavedVmError::NameTaken(name));
        }
        let state = e.state_text();
        let run = match e.run.as_ref() {
            Some(run) if run.vm.is_paused() => run,
            _ => {
                return Err(SavedVmError::NotPaused {
                    vm: String::from(key),
                    state,
                });
            }
        };
        let started = TscClock.now().ns;
        let mut blob = keel_vmm::snapshot::FrameBlob::new(&build::HOST);
        let summary = run.vm.save(&mut blob).map_err(|error| SavedVmError::Save {
            vm: String::from(key),
            error,
        })?;
        let ms = (TscClock.now().ns - started) / 1_000_000;
        let description = keel_vmm::vm::VmDescription {
            name: String::from(run.vm.name()),
            memory_size: summary.memory_size,
            // At most MAX_CPUS.
            cpus: summary.cpus as u8,
            backend: String::from(run.vm.backend()),
        };
        let report = SaveReport {
            name: name.clone(),
            bytes: keel_vmm::snapshot::Source::len(&blob),
            memory: summary.memory_size,
            cpus: summary.cpus,
            ms,
        };
        let disks = run.disks.iter().map(|d| d.spec.clone()).collect();
        let nics = run.nics.iter().map(|n| n.spec.clone()).collect();
        self.saved.insert(SavedVm {
            name,
            description,
            blob,
            save_ms: ms,
            disks,
            nics,
            paravirt: if run.vm.offers_kvm_clock() {
                keel_config::schema::Paravirt::Kvm
            } else {
                keel_config::schema::Paravirt::None
            },
        });
        Ok(report)
    }

    /// Builds a new VM, paused, from the saved VM `name`; returns its number and how long the
    /// restore took in milliseconds.
    pub fn restore(&mut self, system: &System, name: &str) -> Result<(u32, u64), SavedVmError> {
        let saved = self
            .saved
            .get(name)
            .ok_or_else(|| SavedVmError::NoSuchSave(String::from(name)))?;
        let id = self.next_id;
        let label = alloc::format!("vm{id}");
        let started = TscClock.now().ns;
        // The same disks in the same order land in the same PCI slots, where the saved
        // device states expect them.
        let disk_error = |error| SavedVmError::Disks {
            saved: String::from(name),
            error,
        };
        let nic_error = |error| SavedVmError::Nics {
            saved: String::from(name),
            error,
        };
        self.release_stopped();
        // The saved MACs come back: refused while another VM (the original, resumed) uses
        // one, as two ports with one MAC would split its traffic between them.
        let key = alloc::format!("{id}");
        self.check_macs(id, &key, &saved.nics).map_err(nic_error)?;
        let opened = disks::open_all(&saved.disks).map_err(disk_error)?;
        disks::claim(id, &key, &opened).map_err(disk_error)?;
        let rebuild = KernelRebuild::new(
            system,
            id,
            &label,
            &key,
            opened,
            &saved.nics,
            saved.paravirt,
        );
        let restored =
            keel_vmm::vm::Vm::restore(id, label.clone(), &saved.blob, &rebuild, &TscClock);
        let (vm, disks_attached, nics_attached) = match (restored, rebuild.into_devices()) {
            (Ok(vm), Ok((d, n))) => (vm, d, n),
            (_, Err(RebuildError::Disk(error))) => {
                disks::release(id);
                return Err(disk_error(error));
            }
            (_, Err(RebuildError::Nic(error))) => {
                disks::release(id);
                return Err(nic_error(error));
            }
            (Err(error), Ok(_)) => {
                disks::release(id);
                return Err(SavedVmError::Restore {
                    saved: String::from(name),
                    error,
                });
            }
        };
        let ms = (TscClock.now().ns - started) / 1_000_000;
        self.next_id += 1;
        defmt::info!("vm {=u32} restored from {=str}", id, name);
        self.vms.push(Entry {
            id,
            definition: None,
            in_config: false,
            source: alloc::format!("saved:{name}"),
            run: Some(new_run(BuiltVm {
                vm,
                disks: disks_attached,
                nics: nics_attached,
            })),
            restart_pending: false,
        });
        Ok((id, ms))
    }

    /// The saved VMs.
    pub fn saved(&self) -> &SavedVms {
        &self.saved
    }

    /// The saved VMs, to add one (a snapshot read from the store passes through them).
    pub fn saved_mut(&mut self) -> &mut SavedVms {
        &mut self.saved
    }

    /// Renames where VM `id` came from (`vm info`, the API's `source`): a snapshot's
    /// restore passes through a saved VM and says `snapshot:<name>` instead.
    pub fn set_source(&mut self, id: u32, source: String) {
        if let Some(e) = self.vms.iter_mut().find(|e| e.id == id) {
            e.source = source;
        }
    }

    /// Deletes the saved VM `name`; returns the bytes freed.
    pub fn delete_saved(&mut self, name: &str) -> Result<u64, SavedVmError> {
        self.saved
            .remove(name)
            .ok_or_else(|| SavedVmError::NoSuchSave(String::from(name)))
    }

    /// Restarts the named VM: a stop as `mode` says, then a start once it has stopped; or
    /// just a start if it is not running. Returns whether it started now (`false`: it
    /// starts when the stop completes, in [`run_slice`](Self::run_slice)).
    pub fn restart(
        &mut self,
        system: &System,
        name: &str,
        mode: StopMode,
    ) -> Result<bool, StartError> {
        let i = self
            .index(name)
            .filter(|&i| self.vms[i].configured())
            .ok_or_else(|| StartError::NoSuchVm(String::from(name)))?;
        if self.vms[i].is_live() {
            // A paused VM cannot answer the power button: its restart is refused, not left
            // waiting for a stop that never comes.
            self.stop(name, mode).map_err(StartError::Stop)?;
            self.vms[i].restart_pending = true;
            Ok(false)
        } else {
            self.start_named(system, name).map(|()| true)
        }
    }

    /// Stops a named VM at once and forgets it (the caller removes it from the
    /// configuration).
    pub fn destroy(&mut self, name: &str) -> Result<(), StopError> {
        let i = self
            .index(name)
            .filter(|&i| self.vms[i].configured())
            .ok_or_else(|| StopError::NoSuchVm(String::from(name)))?;
        if let Some(run) = self.vms[i].run.as_mut() {
            run.vm.stop(StopReason::Operator);
        }
        disks::release(self.vms[i].id);
        self.vms.remove(i);
        self.cursor = 0;
        Ok(())
    }

    /// The VM's whole retained console output.
    pub fn log(&mut self, key: &str) -> Result<(Vec<u8>, u64), String> {
        let e = self
            .index(key)
            .map(|i| &self.vms[i])
            .ok_or_else(|| alloc::format!("no VM named '{key}': see 'vm list'"))?;
        match &e.run {
            Some(run) => {
                let (bytes, _, dropped) = run.vm.console_output_since(0);
                Ok((bytes, dropped))
            }
            None => Err(alloc::format!("VM {key} has not run yet: 'vm start {key}'")),
        }
    }

    /// How many VMs are alive: running, halted waiting for an interrupt, or paused (the
    /// status screen's count).
    pub fn running_count(&self) -> usize {
        self.vms
            .iter()
            .filter(|e| {
                e.run
                    .as_ref()
                    .is_some_and(|r| !matches!(r.vm.state(), VmState::Stopped(_)))
            })
            .count()
    }

    /// Whether any VM can run.
    pub fn any_runnable(&self) -> bool {
        self.vms.iter().any(|e| {
            e.run
                .as_ref()
                .is_some_and(|r| matches!(r.vm.state(), VmState::Running))
        })
    }

    /// Runs the next runnable VM until the host timer ticks, then appends new guest output
    /// lines (and stop notices) to `out` for the console to print. Halted VMs are stepped
    /// once each, which wakes those whose interrupt (a timer, console input) has come; graceful
    /// stops past their grace time are forced; a VM with a restart pending starts again.
    pub fn run_slice(&mut self, system: &System, out: &mut String) {
        let now = TscClock.now().ns;
        for e in &mut self.vms {
            let overdue = e.run.as_ref().is_some_and(|run| {
                run.stop_deadline_ns.is_some_and(|deadline| now >= deadline) && !run.vm.is_stopped()
            });
            if overdue {
                let key = e.key();
                if let Some(run) = e.run.as_mut() {
                    run.vm.stop(StopReason::Operator);
                }
                let _ = writeln!(
                    out,
                    "vm {key}: no shutdown within the grace time after the power button: forced off"
                );
            }
            let Some(run) = e.run.as_mut() else { continue };
            if run.vm.state() == VmState::WaitingForInterrupt {
                run.host_cpu = Some(crate::arch::smp::current());
                run.vm.step(&TscClock);
            }
        }
        let n = self.vms.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let Some(run) = self.vms[i].run.as_mut() else {
                continue;
            };
            if !matches!(run.vm.state(), VmState::Running) {
                continue;
            }
            self.cursor = (i + 1) % n;
            let cpu = crate::arch::smp::current();
            run.host_cpu = Some(cpu);
            let slice_start = TscClock.now().ns;
            let tick = crate::arch::timer::ticks();
            for nic in &run.nics {
                nic.take_transmitted();
            }
            // The slice also ends after an exit in which the guest sent a frame (its TX
            // notify): the kernel forwards it, and brings the answers in, before the next
            // slice instead of a tick later — the round trip of every request and ACK.
            while matches!(run.vm.state(), VmState::Running) && crate::arch::timer::ticks() == tick
            {
                run.vm.step(&TscClock);
                if run
                    .nics
                    .iter()
                    .fold(false, |sent, nic| nic.take_transmitted() | sent)
                {
                    break;
                }
            }
            let slice_end = TscClock.now().ns;
            let slice = slice_end.saturating_sub(slice_start);
            run.run_ns = run.run_ns.saturating_add(slice);
            crate::sched::account_slice(cpu, slice_end, slice);
            break;
        }
        self.release_stopped();
        let mut restarts = Vec::new();
        for e in &mut self.vms {
            echo(e, self.attached == Some(e.id), out);
            if e.restart_pending && !e.is_live() {
                restarts.push(e.key());
            }
        }
        for name in restarts {
            match self.start_named(system, &name) {
                Ok(()) => {
                    let _ = writeln!(out, "vm {name} started (restart)");
                }
                Err(err) => {
                    if let Some(i) = self.index(&name) {
                        self.vms[i].restart_pending = false;
                    }
                    let _ = writeln!(out, "vm {name}: restart failed: {err}");
                }
            }
        }
        // A named VM removed from the configuration while it ran goes once it has stopped.
        if !self.vms.iter().all(Entry::worth_keeping) {
            self.vms.retain(Entry::worth_keeping);
            self.cursor = 0;
        }
    }

    /// Gives back the disk claims of every VM that has stopped and unplugs its NICs (a guest
    /// power-off, a reset, a forced stop at the end of the grace time all end up here within
    /// a slice).
    fn release_stopped(&self) {
        for e in &self.vms {
            let stopped = e.run.as_ref().is_none_or(|r| r.vm.is_stopped());
            if stopped && disks::holds(e.id) {
                disks::release(e.id);
            }
            if let Some(run) = e.run.as_ref().filter(|r| r.vm.is_stopped()) {
                for nic in run.nics.iter().filter(|n| n.is_attached()) {
                    nic.detach();
                }
            }
        }
    }

    /// Refuses NICs whose MAC a live VM other than number `id` has.
    fn check_macs(
        &self,
        id: u32,
        vm: &str,
        specs: &[nics::NicSpec],
    ) -> Result<(), nics::NicAttachError> {
        for (index, spec) in specs.iter().enumerate() {
            let user = self.vms.iter().filter(|e| e.id != id).find(|e| {
                e.run.as_ref().is_some_and(|r| {
                    !r.vm.is_stopped() && r.nics.iter().any(|n| n.spec.mac == spec.mac)
                })
            });
            if let Some(user) = user {
                return Err(nics::NicAttachError::MacInUse {
                    vm: String::from(vm),
                    nic: index,
                    mac: keel_config::schema::MacAddress(spec.mac),
                    other: user.key(),
                });
            }
        }
        Ok(())
    }

    /// Hands frames waiting on the switch ports of running or halted VMs to their NICs;
    /// returns whether a NIC raised an interrupt (a halted vCPU then wakes at its VM's next
    /// step, in this pass's [`run_slice`](Self::run_slice)). Paused and stopped VMs are left
    /// alone: their frames wait in the port's queue, and drop when it is full.
    pub fn poll_io(&mut self) -> bool {
        let mut raised = false;
        for e in &mut self.vms {
            let Some(run) = e.run.as_mut() else { continue };
            if run.nics.is_empty() {
                continue;
            }
            if matches!(
                run.vm.state(),
                VmState::Running | VmState::WaitingForInterrupt
            ) {
                raised |= run.vm.poll_io();
            }
        }
        raised
    }

    /// Queues console input for VM `key`'s COM1; returns how many bytes it took.
    pub fn console_input(&mut self, key: &str, bytes: &[u8]) -> Result<usize, String> {
        let i = self
            .index(key)
            .ok_or_else(|| alloc::format!("no VM named '{key}': see 'vm list'"))?;
        match self.vms[i].run.as_mut().filter(|r| !r.vm.is_stopped()) {
            Some(run) => Ok(run.vm.console_input(bytes)),
            None => Err(alloc::format!("VM {key} is not running")),
        }
    }

    /// Raw console output of VM `key` since `since` (for an attached console): the bytes,
    /// the next offset, and whether the VM has stopped.
    pub fn console_raw(&self, key: &str, since: u64) -> Option<(Vec<u8>, u64, bool)> {
        let e = &self.vms[self.index(key)?];
        let run = e.run.as_ref()?;
        let (bytes, next, _) = run.vm.console_output_since(since);
        Some((bytes, next, run.vm.is_stopped()))
    }

    /// Attaches the console to VM `key`: returns the output offset to show from (the last
    /// 2 KiB, so the operator sees where the guest is). Its lines are no longer echoed.
    pub fn attach(&mut self, key: &str) -> Result<u64, String> {
        let i = self
            .index(key)
            .ok_or_else(|| alloc::format!("no VM named '{key}': see 'vm list'"))?;
        let e = &self.vms[i];
        let run = e
            .run
            .as_ref()
            .filter(|r| !r.vm.is_stopped())
            .ok_or_else(|| alloc::format!("VM {key} is not running ({})", e.state_text()))?;
        self.attached = Some(e.id);
        let total = run.vm.devices().com1().output_total();
        Ok(total.saturating_sub(2048).max(run.echoed.min(total)))
    }

    /// Detaches the console; the VM's output up to `offset` counts as shown.
    pub fn detach(&mut self, offset: u64) {
        let Some(id) = self.attached.take() else {
            return;
        };
        if let Some(run) = self
            .vms
            .iter_mut()
            .find(|e| e.id == id)
            .and_then(|e| e.run.as_mut())
        {
            run.echoed = run.echoed.max(offset);
            run.line.clear();
        }
    }
}

/// Appends complete new lines of guest output as `[vm<id>] <line>`, and a notice when the VM
/// stopped.
fn echo(e: &mut Entry, attached: bool, out: &mut String) {
    let Some(run) = e.run.as_ref() else { return };
    // Called every slice for every VM: return before allocating when there is nothing new.
    // An attached console shows this VM's output itself.
    let new_output = !attached && run.vm.devices().com1().output_total() != run.echoed;
    let stop_to_report = run.vm.is_stopped() && !run.stop_reported;
    if !new_output && !stop_to_report {
        return;
    }
    let label = e.label();
    let key = e.key();
    let Some(run) = e.run.as_mut() else { return };
    if new_output {
        let (bytes, next, _) = run.vm.console_output_since(run.echoed);
        run.echoed = next;
        for b in bytes {
            match b {
                b'\n' => {
                    let text = String::from_utf8_lossy(&run.line);
                    let _ = writeln!(out, "[{label}] {}", text.trim_end_matches('\r'));
                    run.line.clear();
                }
                _ if run.line.len() < 512 => run.line.push(b),
                _ => {}
            }
        }
    }
    if let VmState::Stopped(reason) = run.vm.state()
        && !run.stop_reported
    {
        if !run.line.is_empty() {
            let text = String::from_utf8_lossy(&run.line);
            let _ = writeln!(out, "[{label}] {text}");
            run.line.clear();
        }
        let _ = writeln!(out, "vm {key} stopped: {reason}");
        crate::events::record(
            crate::events::EventKind::VmStopped,
            Some(&key),
            &alloc::format!("stopped: {reason}"),
        );
        run.stop_reported = true;
        run.stop_deadline_ns = None;
        run.stopped_ns = Some(TscClock.now().ns);
    }
}
