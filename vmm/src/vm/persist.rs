//! A whole VM to bytes and back: [`Vm::save`] writes a paused VM in the
//! [`snapshot`](crate::snapshot) encoding; [`Vm::restore`] builds a new, paused VM from such
//! bytes, or fails — naming what is wrong — and builds nothing.
//!
//! The parts: the [`VmDescription`] (what the VM is), the VM loop's own state (VM time, each
//! vCPU's run state, whose turn is next), each vCPU's [`VcpuState`], the platform's
//! [`DevicesState`] and guest RAM. A restored VM's clock continues from the saved VM time and
//! each guest TSC from its saved value, so the guest sees no jump however long the bytes
//! waited. Exit counts start again from zero (they describe this host's run), and COM1's
//! output ring is console history, not guest state.
//!
//! Only a paused VM is saved: between steps no read exit is pending, and nothing changes
//! while the bytes are written.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::{Cpu, CpuState, Live, Vm, VmClock};
use crate::backend::{BackendError, VcpuRestoreError, VmBackend};
use crate::devices::snapshot::{DevicesState, RestoreError as DevicesRestoreError};
use crate::devices::{Devices, MAX_CPUS, PlatformError};
use crate::host::HostMemory;
use crate::memory::{GuestMemory, MemoryError};
use crate::persist::Persist;
use crate::snapshot::{Reader, Section, Sink, SnapshotError, Source, Writer};
use crate::vcpu::state::VcpuStateError;
use crate::vcpu::{VcpuError, VcpuState};

use super::Clock;

/// What a saved VM is: enough to build the platform and RAM it restores into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescription {
    /// The VM's name when it was saved.
    pub name: String,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// vCPUs.
    pub cpus: u8,
    /// The backend it ran on (`"svm"` or `"vmx"`).
    pub backend: String,
}

/// The VM loop's own state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LoopState {
    /// VM time at the save, in nanoseconds.
    vm_ns: u64,
    /// Each vCPU's run state, by APIC id.
    cpus: Vec<CpuState>,
    /// The vCPU that ran last.
    last_cpu: u8,
    /// External interrupts injected so far.
    injected_interrupts: u64,
    /// kvm-clock's MSRs, when the VM offered it.
    kvm_clock: Option<crate::pvclock::State>,
}

/// Why a VM could not be saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveError {
    /// Only a paused VM is saved.
    NotPaused,
    /// The VM has stopped; there is nothing left to save.
    Stopped,
    /// A vCPU could not report its state.
    Vcpu {
        /// Its APIC id.
        cpu: usize,
        /// Why.
        error: VcpuError,
    },
    /// Writing the bytes failed.
    Snapshot(SnapshotError),
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveError::NotPaused => f.write_str("the VM is not paused: pause it first"),
            SaveError::Stopped => f.write_str("the VM has stopped"),
            SaveError::Vcpu { cpu, error } => write!(f, "vCPU {cpu}: {error}"),
            SaveError::Snapshot(e) => write!(f, "{e}"),
        }
    }
}

impl From<SnapshotError> for SaveError {
    fn from(e: SnapshotError) -> Self {
        SaveError::Snapshot(e)
    }
}

/// Why a VM could not be restored. Nothing was built.
#[derive(Debug)]
pub enum RestoreError {
    /// The bytes are not a saved VM this build reads, or are damaged.
    Snapshot(SnapshotError),
    /// The saved parts contradict each other.
    Inconsistent(&'static str),
    /// The platform could not be built for the saved VM.
    Platform(PlatformError),
    /// The platform refused the saved device state.
    Devices(DevicesRestoreError),
    /// Guest RAM could not be allocated.
    Memory(MemoryError),
    /// The backend could not be set up or a vCPU created.
    Backend(BackendError),
    /// A vCPU refused its saved state.
    Vcpu {
        /// Its APIC id.
        cpu: usize,
        /// Why.
        error: VcpuStateError,
    },
    /// The saved guest uses kvm-clock and the VM it is restored into does not offer it
    /// (`cpuid.paravirt = "none"`): its clock would stop working.
    KvmClockNotOffered,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Snapshot(e) => write!(f, "{e}"),
            RestoreError::Inconsistent(what) => write!(f, "the saved VM is inconsistent: {what}"),
            RestoreError::Platform(e) => write!(f, "cannot build the platform: {e}"),
            RestoreError::Devices(e) => write!(f, "the saved device state is refused: {e}"),
            RestoreError::Memory(e) => write!(f, "guest RAM: {e}"),
            RestoreError::Backend(e) => write!(f, "cannot create the VM: {e}"),
            RestoreError::Vcpu { cpu, error } => {
                write!(f, "the saved state of vCPU {cpu} is refused: {error}")
            }
            RestoreError::KvmClockNotOffered => f.write_str(
                "the saved guest uses kvm-clock, and this VM's cpuid.paravirt is \"none\": \
                 set it to \"kvm\" to restore it",
            ),
        }
    }
}

impl From<SnapshotError> for RestoreError {
    fn from(e: SnapshotError) -> Self {
        RestoreError::Snapshot(e)
    }
}

/// What a restore needs from the host: the platform and backend a VM of this description
/// runs on (as the kernel builds them for a new VM), and frames for its RAM.
pub trait Rebuild {
    /// The platform, as the VM's configuration builds it before it has run.
    fn platform(&self, description: &VmDescription) -> Result<Devices, PlatformError>;
    /// The VM backend over the restored RAM.
    fn backend(&self, memory: GuestMemory) -> Result<Box<dyn VmBackend>, BackendError>;
    /// Where guest RAM comes from.
    fn host(&self) -> &'static dyn HostMemory;
}

/// What [`Vm::save`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveSummary {
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// vCPUs.
    pub cpus: usize,
}

impl Vm {
    /// Writes this paused VM to `sink` in the [`snapshot`](crate::snapshot) encoding.
    pub fn save(&self, sink: &mut dyn Sink) -> Result<SaveSummary, SaveError> {
        let parts = self.state_parts()?;
        let live = self.live.as_ref().ok_or(SaveError::Stopped)?;
        let mut w = Writer::new(sink)?;
        w.section(Section::Description, &parts.description)?;
        w.section(Section::Vm, &parts.loop_state)?;
        w.section(Section::Vcpus, &parts.vcpus)?;
        w.section(Section::Devices, &parts.devices)?;
        w.memory(live.backend.memory())?;
        w.finish()?;
        Ok(SaveSummary {
            memory_size: self.memory_size,
            cpus: self.cpu_count,
        })
    }

    /// The saved-VM sections but memory, of this paused VM.
    fn state_parts(&self) -> Result<StateParts, SaveError> {
        if self.is_stopped() {
            return Err(SaveError::Stopped);
        }
        let Some(at) = self.clock.paused_at else {
            return Err(SaveError::NotPaused);
        };
        let live = self.live.as_ref().ok_or(SaveError::Stopped)?;
        let description = VmDescription {
            name: self.name.clone(),
            memory_size: self.memory_size,
            // At most MAX_CPUS.
            cpus: self.cpu_count as u8,
            backend: String::from(self.backend),
        };
        let loop_state = LoopState {
            vm_ns: self.clock.vm_time(at).ns,
            cpus: live.cpus.iter().map(|c| c.state).collect(),
            last_cpu: self.last_cpu as u8,
            injected_interrupts: self.injected_interrupts,
            kvm_clock: self.kvm_clock.as_ref().map(|c| c.state().clone()),
        };
        let vcpus = live
            .cpus
            .iter()
            .enumerate()
            .map(|(cpu, c)| {
                c.vcpu
                    .as_ref()
                    .map(|v| v.save_state(at.tsc))
                    .transpose()
                    .map_err(|error| SaveError::Vcpu { cpu, error })
            })
            .collect::<Result<Vec<Option<VcpuState>>, SaveError>>()?;
        let devices = self.devices.save();
        Ok(StateParts {
            description,
            loop_state,
            vcpus,
            devices,
        })
    }

    /// The description of the saved VM in `source`, after checking the whole blob.
    pub fn describe(source: &dyn Source) -> Result<VmDescription, RestoreError> {
        let reader = Reader::open(source)?;
        Ok(reader.section(Section::Description)?)
    }

    /// Builds VM `id` named `name` from the saved VM in `source`, paused, at the host time
    /// `clock` tells; [`resume`](Self::resume) runs it from where it was saved.
    ///
    /// The devices take this host's TSC rate: a snapshot restored after a reboot meets
    /// another calibration of the same TSC (a few kHz apart on hardware, GHz under a busy
    /// TCG), and refusing it would make every snapshot unusable after a reboot. The guest's
    /// TSC keeps its value; kvm-clock's structures are rewritten for the new rate, as for a
    /// migrated VM.
    pub fn restore(
        id: u32,
        name: String,
        source: &dyn Source,
        rebuild: &dyn Rebuild,
        clock: &dyn Clock,
    ) -> Result<Vm, RestoreError> {
        let reader = Reader::open(source)?;
        let parts = StateParts {
            description: reader.section(Section::Description)?,
            loop_state: reader.section(Section::Vm)?,
            vcpus: reader.section(Section::Vcpus)?,
            devices: reader.section(Section::Devices)?,
        };
        reader.check_memory()?;
        if reader.memory_size()? != parts.description.memory_size {
            return Err(RestoreError::Inconsistent(
                "the RAM size differs from the description's",
            ));
        }
        parts.check()?;
        let memory = GuestMemory::new(rebuild.host(), parts.description.memory_size)
            .map_err(RestoreError::Memory)?;
        reader.load_memory(&memory)?;
        Vm::from_state_parts(id, name, parts, memory, rebuild, clock)
    }

    /// The rest of a restore, from checked sections and loaded RAM.
    fn from_state_parts(
        id: u32,
        name: String,
        parts: StateParts,
        memory: GuestMemory,
        rebuild: &dyn Rebuild,
        clock: &dyn Clock,
    ) -> Result<Vm, RestoreError> {
        let StateParts {
            description,
            loop_state,
            vcpus,
            devices: mut devices_state,
        } = parts;
        if memory.size() != description.memory_size {
            return Err(RestoreError::Inconsistent(
                "the RAM size differs from the description's",
            ));
        }
        for (cpu, state) in vcpus.iter().enumerate() {
            if let Some(state) = state {
                state
                    .validate()
                    .map_err(|error| RestoreError::Vcpu { cpu, error })?;
            }
        }
        let platform = rebuild
            .platform(&description)
            .map_err(RestoreError::Platform)?;
        // A migrated VM lands on another host, a snapshot after a reboot on another
        // calibration, each with its own TSC rate: the devices take this host's
        // (kvm-clock's structures are rewritten for it below).
        devices_state.tsc_hz = platform.platform_config().tsc_hz;
        let devices = <Devices as Persist>::restore(platform, &devices_state)
            .map_err(RestoreError::Devices)?;
        let mut backend = rebuild.backend(memory).map_err(RestoreError::Backend)?;
        let now = clock.now();
        let mut cpus = Vec::with_capacity(vcpus.len());
        for (cpu, (state, saved)) in loop_state.cpus.iter().zip(&vcpus).enumerate() {
            let vcpu = match saved {
                Some(saved) => {
                    // `cpu` < the vCPU count, at most 8.
                    let mut vcpu =
                        backend
                            .restore_vcpu(cpu as u32, saved, now.tsc)
                            .map_err(|e| match e {
                                VcpuRestoreError::Create(e) => RestoreError::Backend(e),
                                VcpuRestoreError::State(error) => RestoreError::Vcpu { cpu, error },
                            })?;
                    if vcpus.len() > 1 {
                        vcpu.set_pause_exiting(true);
                    }
                    Some(vcpu)
                }
                None => None,
            };
            cpus.push(Cpu {
                vcpu,
                state: *state,
            });
        }
        let mut vm = Vm::from_parts(
            id,
            name,
            Live { cpus, backend },
            devices,
            VmClock {
                offset_ns: loop_state.vm_ns.wrapping_sub(now.ns),
                paused_at: Some(now),
            },
        );
        vm.injected_interrupts = loop_state.injected_interrupts;
        vm.last_cpu = usize::from(loop_state.last_cpu);
        if let Some(saved) = loop_state.kvm_clock {
            let Some(kvm_clock) = vm.kvm_clock.as_mut() else {
                return Err(RestoreError::KvmClockNotOffered);
            };
            kvm_clock.restore(saved).ok_or(RestoreError::Inconsistent(
                "kvm-clock's MSRs are for another vCPU count",
            ))?;
            // Rewrite each enabled structure for this host (its TSC rate may differ); VM time
            // and each guest TSC go on from the saved values, so the guest's time does too.
            if let Some(live) = vm.live.as_ref() {
                for (cpu, slot) in live.cpus.iter().enumerate() {
                    if let Some(vcpu) = slot.vcpu.as_ref() {
                        let reading = crate::pvclock::Reading {
                            vm_ns: loop_state.vm_ns,
                            guest_tsc: vcpu.guest_tsc(now.tsc),
                        };
                        kvm_clock.refresh(cpu, reading, live.backend.memory());
                    }
                }
            }
        }
        Ok(vm)
    }
}

/// The saved-VM sections other than memory: what live migration sends as its state
/// message (postcard, the same values the snapshot sections hold).
#[derive(Serialize, Deserialize)]
struct StateParts {
    description: VmDescription,
    loop_state: LoopState,
    vcpus: Vec<Option<VcpuState>>,
    devices: DevicesState,
}

impl StateParts {
    fn check(&self) -> Result<(), RestoreError> {
        check(
            &self.description,
            &self.loop_state,
            &self.vcpus,
            &self.devices,
        )
    }
}

// Live migration: the state without memory out of a paused VM, and a VM built from it over
// RAM that arrived separately.
impl Vm {
    /// The device, vCPU and VM-loop state of this paused VM (the saved-VM sections without
    /// memory), for a migration's state message.
    pub fn migration_state(&self) -> Result<Vec<u8>, SaveError> {
        let parts = self.state_parts()?;
        postcard::to_allocvec(&parts).map_err(|_| SaveError::Snapshot(SnapshotError::OutOfMemory))
    }

    /// Builds VM `id` named `name`, paused, from a [`migration_state`](Self::migration_state)
    /// and the guest RAM that came before it; [`resume`](Self::resume) runs it. `memory` is
    /// dropped on error (nothing is left behind).
    pub fn restore_migrated(
        id: u32,
        name: String,
        state: &[u8],
        memory: GuestMemory,
        rebuild: &dyn Rebuild,
        clock: &dyn Clock,
    ) -> Result<Vm, RestoreError> {
        let parts: StateParts = postcard::from_bytes(state).map_err(|_| {
            RestoreError::Snapshot(SnapshotError::Malformed {
                section: "migration state",
                reason: "does not decode",
            })
        })?;
        parts.check()?;
        Vm::from_state_parts(id, name, parts, memory, rebuild, clock)
    }

    /// The VM's description as the migration's configuration needs it.
    pub fn describe_live(&self) -> VmDescription {
        VmDescription {
            name: self.name.clone(),
            memory_size: self.memory_size,
            // At most MAX_CPUS.
            cpus: self.cpu_count as u8,
            backend: String::from(self.backend),
        }
    }
}

/// Cross-checks the decoded sections before anything is built.
fn check(
    description: &VmDescription,
    loop_state: &LoopState,
    vcpus: &[Option<VcpuState>],
    devices: &DevicesState,
) -> Result<(), RestoreError> {
    let cpus = usize::from(description.cpus);
    if description.cpus == 0 || description.cpus > MAX_CPUS {
        return Err(RestoreError::Inconsistent(
            "the vCPU count is outside 1 to 8",
        ));
    }
    if loop_state.cpus.len() != cpus || vcpus.len() != cpus || usize::from(devices.cpus) != cpus {
        return Err(RestoreError::Inconsistent(
            "the sections disagree on the vCPU count",
        ));
    }
    if usize::from(loop_state.last_cpu) >= cpus {
        return Err(RestoreError::Inconsistent(
            "the last vCPU to run does not exist",
        ));
    }
    if loop_state.cpus[0] == CpuState::WaitingForStartup {
        return Err(RestoreError::Inconsistent(
            "the boot vCPU waits for a start-up IPI",
        ));
    }
    for (state, saved) in loop_state.cpus.iter().zip(vcpus) {
        if (*state == CpuState::WaitingForStartup) != saved.is_none() {
            return Err(RestoreError::Inconsistent(
                "a vCPU's run state and saved registers disagree",
            ));
        }
    }
    Ok(())
}
