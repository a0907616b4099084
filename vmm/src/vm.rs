//! One virtual machine: its RAM, its vCPUs, its devices, and where it stands.
//!
//! [`Vm::step`] is one turn of the VM loop: pick the next runnable vCPU (by turns), run it
//! until an exit, count the exit, hand it to [`handle_exit`], and apply the answer (complete a
//! read, wait for an interrupt, or stop). The caller decides how often to step and on which
//! CPU; nothing here reads a clock or blocks. Every vCPU of a VM runs on the host CPU that
//! steps it.
//!
//! ```text
//!            step: exit handled            step: every vCPU halted (HLT with IF=1)
//!   Running ───────────────────► Running ─────────────────────► WaitingForInterrupt
//!      ▲                                                                 │
//!      └──────────────── step: an interrupt is pending ◄─────────────────┘
//!      │
//!      │ step: shutdown, power-off, reset, no vCPU that can ever run again (HLT with IF=0),
//!      │       entry failure, bad access, backend error; stop()
//!      ▼
//!   Stopped(reason)   (final: step does nothing, the first reason is kept)
//! ```
//!
//! Each vCPU has a [`CpuState`] of its own. The BSP (vCPU 0) starts running; application
//! processors wait until the guest sends them INIT and a start-up IPI, and their vCPU is
//! created then, by the VM's [`VmBackend`], in real mode at the start page
//! ([`StartMode::StartupIpi`]). An AP that halts with interrupts disabled is parked (an OS
//! stopping its other CPUs does that); a VM stops for it only when no vCPU can run again.
//! The vCPUs of a VM with more than one exit on PAUSE ([`VmExit::Pause`]): a vCPU spinning
//! on a lock then hands its turn to the others, one of which holds the lock.
//!
//! A halted VM is not run again until its devices have an interrupt for one of its vCPUs (a
//! timer, the UART, an IPI); [`Vm::next_deadline`] tells the caller when a timer will, so it
//! can sleep until then. The operator can still stop it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::backend::{BackendError, VmBackend};
use crate::devices::{CpuRequest, Devices, MachineRequest};
use crate::exit_handler::{ExitAction, StopReason, handle_exit};
use crate::memory::GuestMemory;
use crate::pvclock::{self, KvmClock};
use crate::vcpu::{InternalExits, Registers, StartMode, Vcpu, VmExit};

mod persist;

pub use self::persist::{Rebuild, RestoreError, SaveError, SaveSummary, VmDescription};

/// Where a VM stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// The guest runs when stepped.
    Running,
    /// Every vCPU that can run executed HLT with interrupts enabled and waits for an
    /// interrupt.
    WaitingForInterrupt,
    /// The operator paused the VM ([`Vm::pause`]): its vCPUs do not run and its clock (device
    /// timers, the guest TSC) stands still until [`Vm::resume`].
    Paused,
    /// The VM is finished, for this reason.
    Stopped(StopReason),
}

/// Why a VM could not be paused or resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseError {
    /// The VM has stopped.
    Stopped,
    /// `pause` of a paused VM.
    AlreadyPaused,
    /// `resume` of a VM that is not paused.
    NotPaused,
}

impl core::fmt::Display for PauseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PauseError::Stopped => "it has stopped",
            PauseError::AlreadyPaused => "it is already paused",
            PauseError::NotPaused => "it is not paused",
        })
    }
}

/// Where one vCPU stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CpuState {
    /// Runs when its turn comes.
    Running,
    /// Executed HLT with interrupts enabled: waits for an interrupt.
    Halted,
    /// Executed HLT with interrupts disabled: only an NMI or an INIT brings it back (an AP
    /// an OS stopped; a VM whose every vCPU is parked stops).
    Parked,
    /// An application processor waiting for a start-up IPI (at power-up, after an INIT).
    WaitingForStartup,
}

impl CpuState {
    /// A short lowercase name, for tables.
    pub fn name(self) -> &'static str {
        match self {
            CpuState::Running => "running",
            CpuState::Halted => "halted",
            CpuState::Parked => "parked",
            CpuState::WaitingForStartup => "waiting-for-startup",
        }
    }
}

/// Exit counts by kind ([`VmExit::kind`](crate::vcpu::VmExit::kind) names, plus `cpuid`,
/// `msr`, `injected` and `other` for the exits the backend handled itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitStats {
    /// Sorted by name; no zero counts.
    counts: Vec<(&'static str, u64)>,
}

impl ExitStats {
    /// No exits counted.
    pub const fn new() -> Self {
        ExitStats { counts: Vec::new() }
    }

    /// Counts one exit of `kind`.
    pub fn record(&mut self, kind: &'static str) {
        self.add(kind, 1);
    }

    /// Counts `n` exits of `kind` (saturating).
    pub fn add(&mut self, kind: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.counts.binary_search_by(|(k, _)| (*k).cmp(kind)) {
            Ok(i) => self.counts[i].1 = self.counts[i].1.saturating_add(n),
            Err(i) => self.counts.insert(i, (kind, n)),
        }
    }

    /// The count for `kind` (0 if none).
    pub fn get(&self, kind: &str) -> u64 {
        self.counts
            .binary_search_by(|(k, _)| (*k).cmp(kind))
            .map_or(0, |i| self.counts[i].1)
    }

    /// `(kind, count)` for every kind seen, sorted by kind.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// All exits counted.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }
}

/// One vCPU slot: its state and, while it has one, its backend vCPU.
struct Cpu {
    vcpu: Option<Box<dyn Vcpu>>,
    state: CpuState,
}

/// What a VM holds while it has not stopped. The vCPUs are declared (and so dropped)
/// before the backend whose tables they use.
struct Live {
    /// Index = APIC id; 0 is the BSP.
    cpus: Vec<Cpu>,
    /// The VM's memory map (RAM, nested page tables) and the maker of its vCPUs.
    backend: Box<dyn VmBackend>,
}

/// One virtual machine with one or more vCPUs.
///
/// When the VM stops, its vCPUs (VMCB/VMCS, ASID/VPID, nested page tables) and its guest RAM
/// are released at once; the record — state and stop reason, exit counts, console output,
/// the BSP's last registers — stays for `vm list`, the API and post-mortems.
pub struct Vm {
    id: u32,
    name: String,
    /// The guest's RAM and vCPUs while the VM has not stopped.
    live: Option<Live>,
    memory_size: u64,
    cpu_count: usize,
    backend: &'static str,
    /// Exits counted by vCPUs that are gone (released, or reset by an INIT).
    retired_internal: InternalExits,
    final_registers: Registers,
    devices: Devices,
    state: VmState,
    stats: ExitStats,
    injected_interrupts: u64,
    /// The vCPU that ran last (the turn goes on from the next).
    last_cpu: usize,
    /// The VM's clock against the host's: how long it was paused, and since when it is.
    clock: VmClock,
    /// kvm-clock's MSRs, when the VM's CPUID offers it (`cpuid.paravirt = "kvm"`).
    kvm_clock: Option<KvmClock>,
}

/// VM time is host time plus an offset that a pause moves back by its length (so device
/// timers neither fire for nor catch up on a pause) and a restore sets so that VM time goes
/// on from the saved VM time (which may be ahead of this host's clock: the offset wraps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VmClock {
    /// Added (wrapping) to host nanoseconds to give VM nanoseconds.
    offset_ns: u64,
    /// The host's clocks when the VM was paused, while it is.
    paused_at: Option<Instant>,
}

impl VmClock {
    /// The VM's time for a host reading (the TSC stays the host's: each vCPU's TSC offset
    /// turns it into the guest's).
    fn vm_time(&self, host: Instant) -> Instant {
        Instant {
            ns: host.ns.wrapping_add(self.offset_ns),
            tsc: host.tsc,
        }
    }
}

/// A reading of the host's clocks, taken at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Instant {
    /// Monotonic time in nanoseconds (the VM's device time line).
    pub ns: u64,
    /// The host's TSC.
    pub tsc: u64,
}

/// Where a VM loop gets the time: the kernel reads its calibrated TSC, tests use a fake.
pub trait Clock {
    /// The time now.
    fn now(&self) -> Instant;
}

impl core::fmt::Debug for Vm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("cpus", &self.cpu_count)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn add_internal(sum: &mut InternalExits, more: InternalExits) {
    sum.cpuid = sum.cpuid.saturating_add(more.cpuid);
    sum.msr = sum.msr.saturating_add(more.msr);
    sum.injected = sum.injected.saturating_add(more.injected);
    sum.other = sum.other.saturating_add(more.other);
}

impl Vm {
    /// A running VM on `backend` (whose RAM is already loaded with the guest), with the BSP
    /// created through it to start as `start`, and `devices`. The application processors —
    /// one per further local APIC in `devices` — wait for the guest to start them; the
    /// backend creates their vCPUs then. Fails when the BSP cannot be created.
    pub fn new(
        id: u32,
        name: String,
        mut backend: Box<dyn VmBackend>,
        start: StartMode,
        devices: Devices,
    ) -> Result<Vm, BackendError> {
        let cpu_count = devices.cpu_count().max(1);
        let mut vcpu = backend.create_vcpu(0, start)?;
        if cpu_count > 1 {
            vcpu.set_pause_exiting(true);
        }
        let mut cpus = Vec::with_capacity(cpu_count);
        cpus.push(Cpu {
            state: CpuState::Running,
            vcpu: Some(vcpu),
        });
        for _ in 1..cpu_count {
            cpus.push(Cpu {
                vcpu: None,
                state: CpuState::WaitingForStartup,
            });
        }
        Ok(Vm::from_parts(
            id,
            name,
            Live { cpus, backend },
            devices,
            VmClock::default(),
        ))
    }

    /// A VM from its live parts, with no exits counted yet; `state` is `Running` until the
    /// first step settles it from the vCPUs.
    fn from_parts(id: u32, name: String, live: Live, devices: Devices, clock: VmClock) -> Vm {
        let kvm_clock = (live.backend.kvm_features() & pvclock::KVM_FEATURE_CLOCKSOURCE2 != 0)
            .then(|| {
                let config = devices.platform_config();
                // The wall-clock time at VM time 0: the RTC shows `wall_clock_unix_seconds`
                // at `now_ns`, so guest wall time and the RTC agree.
                let wall_at_zero_ns = config
                    .wall_clock_unix_seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_sub(config.now_ns);
                KvmClock::new(live.cpus.len(), config.tsc_hz, wall_at_zero_ns)
            });
        Vm {
            kvm_clock,
            id,
            name,
            memory_size: live.backend.memory().size(),
            cpu_count: live.cpus.len(),
            backend: live.backend.name(),
            retired_internal: InternalExits::default(),
            final_registers: Registers::default(),
            live: Some(live),
            devices,
            state: VmState::Running,
            stats: ExitStats::new(),
            injected_interrupts: 0,
            last_cpu: 0,
            clock,
        }
    }

    /// Frees the vCPUs (first: they use the VM's nested page tables) and then the backend
    /// with the tables and the RAM, once the VM has stopped.
    fn release_if_stopped(&mut self) {
        if self.is_stopped()
            && let Some(live) = self.live.take()
        {
            let Live { cpus, backend } = live;
            for (i, cpu) in cpus.into_iter().enumerate() {
                if let Some(vcpu) = cpu.vcpu {
                    add_internal(&mut self.retired_internal, vcpu.internal_exits());
                    if i == 0 {
                        self.final_registers = vcpu.registers();
                    }
                }
            }
            drop(backend);
        }
    }

    /// The VM's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the VM stands.
    pub fn state(&self) -> VmState {
        match self.state {
            VmState::Stopped(_) => self.state,
            _ if self.clock.paused_at.is_some() => VmState::Paused,
            state => state,
        }
    }

    /// Pauses the VM at the host time `clock` tells: [`step`](Self::step) does nothing until
    /// [`resume`](Self::resume), and the VM's clock stands still. A VM can be paused whether
    /// its vCPUs run or wait for an interrupt; it can still be stopped while paused.
    pub fn pause(&mut self, clock: &dyn Clock) -> Result<(), PauseError> {
        if self.is_stopped() {
            return Err(PauseError::Stopped);
        }
        if self.clock.paused_at.is_some() {
            return Err(PauseError::AlreadyPaused);
        }
        self.clock.paused_at = Some(clock.now());
        Ok(())
    }

    /// Resumes a paused VM where it stopped: its clock goes on from the instant of the pause.
    pub fn resume(&mut self, clock: &dyn Clock) -> Result<(), PauseError> {
        if self.is_stopped() {
            return Err(PauseError::Stopped);
        }
        let Some(at) = self.clock.paused_at else {
            return Err(PauseError::NotPaused);
        };
        let now = clock.now();
        // Each guest TSC goes on from its value at the pause.
        if let Some(live) = self.live.as_mut() {
            for vcpu in live.cpus.iter_mut().filter_map(|c| c.vcpu.as_mut()) {
                let rebased = vcpu
                    .save_state(at.tsc)
                    .map_err(|_| ())
                    .and_then(|state| vcpu.restore_state(&state, now.tsc).map_err(|_| ()));
                if rebased.is_err() {
                    // A vCPU that cannot reload its own state is a VMM bug: stop this VM.
                    self.stop(StopReason::Backend(crate::vcpu::VcpuError::Stopped));
                    return Err(PauseError::Stopped);
                }
            }
        }
        self.clock.offset_ns = self
            .clock
            .offset_ns
            .wrapping_sub(now.ns.wrapping_sub(at.ns));
        self.clock.paused_at = None;
        Ok(())
    }

    /// Whether the operator paused the VM.
    pub fn is_paused(&self) -> bool {
        self.state() == VmState::Paused
    }

    /// Number of vCPUs.
    pub fn cpu_count(&self) -> usize {
        self.cpu_count
    }

    /// Where each vCPU stands (empty once the VM has stopped).
    pub fn cpu_states(&self) -> Vec<CpuState> {
        self.live
            .as_ref()
            .map(|live| live.cpus.iter().map(|c| c.state).collect())
            .unwrap_or_default()
    }

    /// Whether the VM has stopped for good.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, VmState::Stopped(_))
    }

    /// One turn of the VM loop at the time `clock` tells: runs the devices' timers, carries
    /// out INITs and start-up IPIs, injects waiting NMIs, wakes halted vCPUs that have an
    /// interrupt or took an NMI, picks the next
    /// runnable vCPU after the last one, injects its next interrupt (or asks for an interrupt
    /// window), runs it once and handles the exit; returns the new state.
    ///
    /// A read exit is completed before returning, so the next `step` can run again at once.
    /// A backend error stops the VM with [`StopReason::Backend`]; a guest power-off or reset
    /// stops it with [`StopReason::GuestPowerOff`] / [`StopReason::GuestReset`]. A stopped VM
    /// is left as it is, and a halted one stays halted until an interrupt is due.
    pub fn step(&mut self, clock: &dyn Clock) -> VmState {
        if self.is_stopped() || self.live.is_none() || self.is_paused() {
            return self.state();
        }
        let now = self.clock.vm_time(clock.now());
        self.devices.advance(now.ns);
        self.apply_cpu_requests();
        if self.is_stopped() {
            return self.state;
        }
        let Some(live) = self.live.as_mut() else {
            return self.state;
        };
        for (i, cpu) in live.cpus.iter_mut().enumerate() {
            // A waiting NMI goes in as soon as the vCPU can take it (it runs the handler at
            // its next entry), which ends any halt, also one with interrupts off (an OS parks
            // CPUs that way). An AP waiting for a start-up IPI ignores NMIs, as on hardware.
            if self.devices.nmi_pending(i) {
                match cpu.vcpu.as_mut().map(|vcpu| vcpu.inject_nmi()) {
                    Some(Ok(true)) => {
                        self.devices.nmi_delivered(i);
                        self.stats.record("nmi-injected");
                        cpu.state = CpuState::Running;
                    }
                    // Blocked: retried at the next step.
                    Some(Ok(false)) => {}
                    Some(Err(error)) => {
                        self.state = VmState::Stopped(StopReason::Backend(error));
                        self.release_if_stopped();
                        return self.state;
                    }
                    None => self.devices.nmi_delivered(i),
                }
            }
            // An interrupt ends a halt with interrupts on.
            if cpu.state == CpuState::Halted && self.devices.pending_interrupt(i).is_some() {
                cpu.state = CpuState::Running;
            }
        }
        let n = live.cpus.len();
        let Some(i) = (1..=n)
            .map(|k| (self.last_cpu + k) % n)
            .find(|&i| live.cpus[i].state == CpuState::Running)
        else {
            self.settle();
            return self.state;
        };
        self.last_cpu = i;
        self.state = VmState::Running;
        let Live { cpus, backend } = live;
        let Some(vcpu) = cpus[i].vcpu.as_mut() else {
            // A running slot always has a vCPU; treat a missing one as a VMM bug.
            self.state = VmState::Stopped(StopReason::Backend(crate::vcpu::VcpuError::Stopped));
            self.release_if_stopped();
            return self.state;
        };
        self.devices.set_current_cpu(i);
        if self.devices.pending_interrupt(i).is_some() {
            if vcpu.interruptible() {
                if let Some(vector) = self.devices.acknowledge_interrupt(i) {
                    if let Err(error) = vcpu.inject_interrupt(vector) {
                        self.state = VmState::Stopped(StopReason::Backend(error));
                        self.release_if_stopped();
                        return self.state;
                    }
                    self.injected_interrupts = self.injected_interrupts.saturating_add(1);
                }
            } else {
                vcpu.request_interrupt_window(true);
            }
        }
        let exit = match vcpu.run(backend.memory()) {
            Ok(exit) => exit,
            Err(error) => {
                self.state = VmState::Stopped(StopReason::Backend(error));
                self.release_if_stopped();
                return self.state;
            }
        };
        let now = self.clock.vm_time(clock.now());
        self.devices.set_now(now.ns);
        // Only the TSC-deadline MSR converts with the guest TSC; reading the TSC offset (a
        // VMREAD on VT-x) is not worth it on every other exit.
        if matches!(exit, VmExit::MsrWrite { .. }) {
            self.devices.set_guest_tsc(vcpu.guest_tsc(now.tsc));
        }
        self.stats.record(exit.kind());
        if let VmExit::DirtyPageWrite { gpa } = exit {
            // Dirty tracking: log the page and let the write through (the guest retries it).
            if !matches!(backend.record_dirty_write(gpa), Ok(true)) {
                let rip = vcpu.registers().rip;
                self.stop(StopReason::BadMemoryAccess {
                    gpa,
                    rip,
                    reason: "a write to write-protected RAM could not be let through",
                });
                return self.state;
            }
        }
        let action = match exit {
            VmExit::MsrRead { msr } | VmExit::MsrWrite { msr, .. } if pvclock::is_kvm_msr(msr) => {
                let reading = pvclock::Reading {
                    vm_ns: now.ns,
                    guest_tsc: vcpu.guest_tsc(now.tsc),
                };
                ExitAction::CompleteMsr(kvm_clock_msr(
                    self.kvm_clock.as_mut(),
                    i,
                    &exit,
                    reading,
                    backend.as_mut(),
                    &mut self.stats,
                ))
            }
            _ => handle_exit(&exit, &mut self.devices),
        };
        match action {
            ExitAction::Resume => {}
            ExitAction::CompleteRead(value) => {
                if let Err(error) = vcpu.complete_read(value) {
                    self.state = VmState::Stopped(StopReason::Backend(error));
                }
            }
            ExitAction::CompleteMsr(result) => {
                let done = match result {
                    Some(value) => vcpu.complete_read(value),
                    None => vcpu.fault_msr(),
                };
                if let Err(error) = done {
                    self.state = VmState::Stopped(StopReason::Backend(error));
                }
            }
            ExitAction::WaitForInterrupt => cpus[i].state = CpuState::Halted,
            // `settle` stops the VM when no vCPU can run again.
            ExitAction::WaitForNmiOrInit => cpus[i].state = CpuState::Parked,
            ExitAction::Stop(reason) => self.state = VmState::Stopped(reason),
        }
        // A virtio notify only marks its queue; the requests run here, with guest RAM.
        if self.devices.io_pending() {
            self.devices.service_io(backend.memory());
        }
        match self.devices.take_machine_request() {
            Some(MachineRequest::PowerOff) => self.stop(StopReason::GuestPowerOff),
            Some(MachineRequest::Reset) => self.stop(StopReason::GuestReset),
            Some(MachineRequest::Exit { status }) => self.stop(StopReason::GuestExit { status }),
            None => {}
        }
        // An IPI the exit sent takes effect before the next turn.
        self.apply_cpu_requests();
        self.settle();
        self.state
    }

    /// Services the devices that have work without a vCPU exit (frames waiting for a
    /// virtio-net device), with guest RAM; the kernel calls it each pass of its loop for a
    /// running or halted VM. Returns whether a vCPU now has an interrupt pending: a halted
    /// one wakes at the next [`step`](Self::step). Does nothing for a paused or stopped VM.
    pub fn poll_io(&mut self) -> bool {
        if self.is_stopped() || self.is_paused() {
            return false;
        }
        let Some(live) = self.live.as_ref() else {
            return false;
        };
        if !self.devices.device_work_waiting() {
            return false;
        }
        self.devices.service_io(live.backend.memory());
        (0..self.devices.cpu_count()).any(|cpu| self.devices.pending_interrupt(cpu).is_some())
    }

    /// Sets the VM's state from its vCPUs': running while one runs, waiting while one is
    /// halted, stopped when none can ever run again. A stopped VM is released.
    fn settle(&mut self) {
        if let Some(live) = &self.live
            && !self.is_stopped()
        {
            let any = |s: CpuState| live.cpus.iter().any(|c| c.state == s);
            self.state = if any(CpuState::Running) {
                VmState::Running
            } else if any(CpuState::Halted) {
                VmState::WaitingForInterrupt
            } else {
                VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
            };
        }
        self.release_if_stopped();
    }

    /// Carries out the INITs and start-up IPIs the guest sent. An INIT puts an AP back to
    /// waiting for a start-up IPI (its vCPU is released and its local APIC reset); INITs to
    /// the BSP are ignored. A start-up IPI starts a waiting AP with a new vCPU and is ignored
    /// by any other (as on hardware).
    fn apply_cpu_requests(&mut self) {
        let requests = self.devices.take_cpu_requests();
        for request in requests {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            match request {
                CpuRequest::Init { cpu } if cpu != 0 && cpu < live.cpus.len() => {
                    if let Some(vcpu) = live.cpus[cpu].vcpu.take() {
                        add_internal(&mut self.retired_internal, vcpu.internal_exits());
                    }
                    live.cpus[cpu].state = CpuState::WaitingForStartup;
                    self.devices.init_lapic(cpu);
                    // As KVM: an INIT turns the vCPU's kvm-clock off.
                    if let Some(kvm_clock) = self.kvm_clock.as_mut() {
                        kvm_clock.reset_cpu(cpu);
                    }
                }
                CpuRequest::StartUp { cpu, vector }
                    if cpu < live.cpus.len()
                        && live.cpus[cpu].state == CpuState::WaitingForStartup =>
                {
                    let start = StartMode::StartupIpi { vector };
                    // `cpu` < the vCPU count, at most 8.
                    let apic_id = cpu as u32;
                    match live.backend.create_vcpu(apic_id, start) {
                        Ok(mut vcpu) => {
                            // APs exist only in VMs with several vCPUs.
                            vcpu.set_pause_exiting(true);
                            live.cpus[cpu].vcpu = Some(vcpu);
                            live.cpus[cpu].state = CpuState::Running;
                        }
                        Err(_) => {
                            self.stop(StopReason::ApStartFailed { cpu: apic_id });
                            return;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The host time at which a halted VM's devices next need [`step`](Self::step) (a timer
    /// interrupt), if any; none while paused.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.is_paused() {
            return None;
        }
        self.devices
            .next_deadline()
            .map(|vm_ns| vm_ns.wrapping_sub(self.clock.offset_ns))
    }

    /// Presses the ACPI power button (the guest sees PWRBTN_STS and, if it enabled it, an
    /// SCI): a request to shut down that the guest may honour or ignore.
    pub fn press_power_button(&mut self, now_ns: u64) {
        if !self.is_stopped() {
            let now = self.clock.vm_time(Instant { ns: now_ns, tsc: 0 });
            self.devices.press_power_button(now.ns);
        }
    }

    /// External interrupts injected so far.
    pub fn injected_interrupts(&self) -> u64 {
        self.injected_interrupts
    }

    /// Stops the VM for `reason` (a paused one too). A VM that has already stopped keeps its
    /// first reason (the one that says what the guest did).
    pub fn stop(&mut self, reason: StopReason) {
        if !self.is_stopped() {
            self.state = VmState::Stopped(reason);
        }
        self.clock.paused_at = None;
        self.release_if_stopped();
    }

    /// Exit counts: the exits [`step`](Self::step) saw, merged with the backend's own
    /// ([`InternalExits`](crate::vcpu::InternalExits) as `cpuid`, `msr`, `injected`, `other`).
    pub fn exit_stats(&self) -> ExitStats {
        let mut stats = self.stats.clone();
        let mut internal = self.retired_internal;
        if let Some(live) = &self.live {
            for vcpu in live.cpus.iter().filter_map(|c| c.vcpu.as_ref()) {
                add_internal(&mut internal, vcpu.internal_exits());
            }
        }
        stats.add("cpuid", internal.cpuid);
        stats.add("msr", internal.msr);
        stats.add("injected", internal.injected);
        stats.add("other", internal.other);
        stats.add("irq-injected", self.injected_interrupts);
        stats
    }

    /// Guest console (COM1) output since the running offset `offset`:
    /// `(bytes, next_offset, dropped)`, as [`Uart16550::output_since`]. Start at 0 and pass
    /// back `next_offset`; `dropped` counts bytes the ring lost before they were read.
    ///
    /// [`Uart16550::output_since`]: crate::devices::uart::Uart16550::output_since
    pub fn console_output_since(&self, offset: u64) -> (Vec<u8>, u64, u64) {
        self.devices.com1().output_since(offset)
    }

    /// Queues console (COM1) input for the guest; returns how many bytes were accepted (the
    /// caller keeps the rest for later).
    pub fn console_input(&mut self, bytes: &[u8]) -> usize {
        self.devices.com1_mut().push_input(bytes)
    }

    /// The guest's RAM, until the VM stops.
    pub fn memory(&self) -> Option<&GuestMemory> {
        self.live.as_ref().map(|live| live.backend.memory())
    }

    /// The VM's backend (memory map, write protection, dirty log), until the VM stops.
    pub fn vm_backend_mut(&mut self) -> Option<&mut dyn VmBackend> {
        match self.live.as_mut() {
            Some(live) => Some(live.backend.as_mut()),
            None => None,
        }
    }

    /// Size of the guest's RAM in bytes (also after it was released).
    pub fn memory_size(&self) -> u64 {
        self.memory_size
    }

    /// The device models.
    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// The device models, mutably (to inject input, or restore a snapshot).
    pub fn devices_mut(&mut self) -> &mut Devices {
        &mut self.devices
    }

    /// The BSP's registers, as the backend last saw them.
    pub fn registers(&self) -> Registers {
        match self.live.as_ref().and_then(|l| l.cpus[0].vcpu.as_ref()) {
            Some(vcpu) => vcpu.registers(),
            None => self.final_registers,
        }
    }

    /// Whether the VM offers kvm-clock (its CPUID has KVM's interface with the clock).
    pub fn offers_kvm_clock(&self) -> bool {
        self.kvm_clock.is_some()
    }

    /// Which backend runs the vCPU (`"svm"` or `"vmx"`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// Answers a kvm-clock `RDMSR`/`WRMSR` of vCPU `cpu` at `now`: the value read, 0 for an
/// accepted write, `None` (#GP) when the VM does not offer kvm-clock. A written structure's
/// pages are marked dirty for the dirty log; a structure outside RAM is not written (the
/// write still succeeds, as on KVM) and counted as `kvm-clock-unbacked`.
fn kvm_clock_msr(
    kvm_clock: Option<&mut KvmClock>,
    cpu: usize,
    exit: &VmExit,
    now: pvclock::Reading,
    backend: &mut dyn VmBackend,
    stats: &mut ExitStats,
) -> Option<u64> {
    let kvm_clock = kvm_clock?;
    match *exit {
        VmExit::MsrRead { msr } => kvm_clock.read_msr(cpu, msr),
        VmExit::MsrWrite { msr, value } => {
            let outcome = kvm_clock.write_msr(cpu, msr, value, now, backend.memory())?;
            if let Some((gpa, len)) = outcome.written {
                let map = backend.memory_map_mut();
                map.mark_dirty(gpa);
                map.mark_dirty(gpa + len - 1);
            }
            if outcome.unbacked {
                stats.record("kvm-clock-unbacked");
            }
            Some(0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::VecDeque;
    use alloc::rc::Rc;
    use core::cell::{Cell, RefCell};

    use super::*;
    use crate::backend::MemoryMap;
    use crate::devices::uart::OUTPUT_CAPACITY;
    use crate::devices::{COM1_BASE, POST_PORT};
    use crate::memory::MIN_GUEST_RAM;
    use crate::testing::MockHost;
    use crate::vcpu::{InternalExits, VcpuError, VmExit};

    /// What a test can inspect after handing the vCPU to the VM.
    #[derive(Default)]
    struct Probe {
        runs: Cell<u32>,
        completed: RefCell<Vec<u64>>,
        interruptible: Cell<bool>,
        injected: RefCell<Vec<u8>>,
        window: Cell<bool>,
        faulted: Cell<u32>,
        pause_exiting: Cell<bool>,
        nmis: Cell<u32>,
        nmi_blocked: Cell<bool>,
    }

    /// A vCPU that returns scripted exits and enforces the read-completion protocol; its
    /// architectural state is a [`VcpuState`] it keeps (validated on restore, TSC offset
    /// applied).
    struct ScriptedVcpu {
        exits: VecDeque<VmExit>,
        pending_read: bool,
        internal: InternalExits,
        probe: Rc<Probe>,
        state: Option<crate::vcpu::VcpuState>,
        tsc_offset: u64,
    }

    impl ScriptedVcpu {
        fn new(
            exits: impl IntoIterator<Item = VmExit>,
            internal: InternalExits,
            probe: Rc<Probe>,
        ) -> ScriptedVcpu {
            ScriptedVcpu {
                exits: exits.into_iter().collect(),
                pending_read: false,
                internal,
                probe,
                state: None,
                tsc_offset: 0,
            }
        }
    }

    impl Vcpu for ScriptedVcpu {
        fn run(&mut self, memory: &GuestMemory) -> Result<VmExit, VcpuError> {
            assert_eq!(memory.size(), MIN_GUEST_RAM);
            self.probe.runs.set(self.probe.runs.get() + 1);
            if self.pending_read {
                return Err(VcpuError::ReadNotCompleted);
            }
            let exit = self.exits.pop_front().ok_or(VcpuError::Stopped)?;
            self.pending_read = matches!(
                exit,
                VmExit::IoIn { .. }
                    | VmExit::MmioRead { .. }
                    | VmExit::MmioReadModifyWrite { .. }
                    | VmExit::MsrRead { .. }
                    | VmExit::MsrWrite { .. }
            );
            Ok(exit)
        }

        fn complete_read(&mut self, value: u64) -> Result<(), VcpuError> {
            if !self.pending_read {
                return Err(VcpuError::NoPendingRead);
            }
            self.pending_read = false;
            self.probe.completed.borrow_mut().push(value);
            Ok(())
        }

        fn registers(&self) -> Registers {
            Registers::default()
        }

        fn internal_exits(&self) -> InternalExits {
            self.internal
        }

        fn backend(&self) -> &'static str {
            "scripted"
        }

        fn fault_msr(&mut self) -> Result<(), VcpuError> {
            if !self.pending_read {
                return Err(VcpuError::NoPendingRead);
            }
            self.pending_read = false;
            self.probe.faulted.set(self.probe.faulted.get() + 1);
            Ok(())
        }

        fn interruptible(&self) -> bool {
            self.probe.interruptible.get() && self.probe.injected.borrow().is_empty()
        }

        fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
            if !self.interruptible() {
                return Err(VcpuError::NotInterruptible);
            }
            self.probe.injected.borrow_mut().push(vector);
            Ok(())
        }

        fn request_interrupt_window(&mut self, wanted: bool) {
            self.probe.window.set(wanted);
        }

        fn guest_tsc(&self, host_tsc: u64) -> u64 {
            host_tsc.wrapping_add(self.tsc_offset)
        }

        fn save_state(&self, host_tsc: u64) -> Result<crate::vcpu::VcpuState, VcpuError> {
            if self.pending_read {
                return Err(VcpuError::ReadNotCompleted);
            }
            let tsc = self.guest_tsc(host_tsc);
            Ok(match &self.state {
                Some(state) => crate::vcpu::VcpuState {
                    tsc,
                    ..state.clone()
                },
                None => crate::vcpu::VcpuState::at_reset(
                    crate::backend::start_registers(StartMode::RealMode { entry: 0x7c00 }),
                    tsc,
                ),
            })
        }

        fn restore_state(
            &mut self,
            state: &crate::vcpu::VcpuState,
            host_tsc: u64,
        ) -> Result<(), crate::vcpu::VcpuStateError> {
            state.validate()?;
            self.tsc_offset = state.tsc.wrapping_sub(host_tsc);
            self.state = Some(state.clone());
            self.pending_read = false;
            Ok(())
        }

        fn set_pause_exiting(&mut self, on: bool) -> bool {
            self.probe.pause_exiting.set(on);
            true
        }

        fn inject_nmi(&mut self) -> Result<bool, VcpuError> {
            if self.probe.nmi_blocked.get() {
                return Ok(false);
            }
            self.probe.nmis.set(self.probe.nmis.get() + 1);
            Ok(true)
        }
    }

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct FakeClock(Cell<u64>);

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            Instant {
                ns: self.0.get(),
                tsc: self.0.get() * 2,
            }
        }
    }

    impl Vm {
        /// A step at time 0, for tests that do not care about time.
        fn step0(&mut self) -> VmState {
            self.step(&FakeClock::default())
        }
    }

    /// A VM backend over mock host memory: the BSP it was given, then one scripted vCPU per
    /// AP start (each start recorded); no scripts left means the host has no vCPU to give.
    struct ScriptedBackend {
        map: MemoryMap,
        bsp: Option<ScriptedVcpu>,
        scripts: VecDeque<Vec<VmExit>>,
        started: Rc<RefCell<Vec<(u32, StartMode)>>>,
        probes: Rc<RefCell<Vec<Rc<Probe>>>>,
        /// What `kvm_features` answers (none unless a test offers kvm-clock).
        kvm_features: u32,
    }

    impl ScriptedBackend {
        /// A backend over `memory` whose BSP is `bsp` and which has no APs to give.
        fn over(memory: GuestMemory, bsp: ScriptedVcpu) -> ScriptedBackend {
            ScriptedBackend {
                map: MemoryMap::new(memory, crate::nested_paging::NestedFormat::Npt).unwrap(),
                bsp: Some(bsp),
                scripts: VecDeque::new(),
                started: Rc::default(),
                probes: Rc::default(),
                kvm_features: 0,
            }
        }

        fn new(bsp: ScriptedVcpu, scripts: Vec<Vec<VmExit>>) -> ScriptedBackend {
            let memory = GuestMemory::new(MockHost::leak(3 * 512), MIN_GUEST_RAM).unwrap();
            ScriptedBackend {
                map: MemoryMap::new(memory, crate::nested_paging::NestedFormat::Npt).unwrap(),
                bsp: Some(bsp),
                scripts: scripts.into_iter().collect(),
                started: Rc::default(),
                probes: Rc::default(),
                kvm_features: 0,
            }
        }
    }

    impl VmBackend for ScriptedBackend {
        fn name(&self) -> &'static str {
            "scripted"
        }

        fn memory_map(&self) -> &MemoryMap {
            &self.map
        }

        fn memory_map_mut(&mut self) -> &mut MemoryMap {
            &mut self.map
        }

        fn kvm_features(&self) -> u32 {
            self.kvm_features
        }

        fn create_vcpu(
            &mut self,
            apic_id: u32,
            start: StartMode,
        ) -> Result<Box<dyn Vcpu>, BackendError> {
            if apic_id == 0 {
                return self
                    .bsp
                    .take()
                    .map(|bsp| Box::new(bsp) as Box<dyn Vcpu>)
                    .ok_or(BackendError::OutOfHostMemory);
            }
            let script = self
                .scripts
                .pop_front()
                .ok_or(BackendError::OutOfHostMemory)?;
            self.started.borrow_mut().push((apic_id, start));
            let probe = Rc::new(Probe::default());
            self.probes.borrow_mut().push(Rc::clone(&probe));
            Ok(Box::new(ScriptedVcpu::new(
                script,
                InternalExits::default(),
                probe,
            )))
        }
    }

    fn vm_with(
        exits: impl IntoIterator<Item = VmExit>,
        internal: InternalExits,
    ) -> (Vm, Rc<Probe>) {
        let probe = Rc::new(Probe::default());
        let vcpu = ScriptedVcpu::new(exits, internal, Rc::clone(&probe));
        let vm = Vm::new(
            7,
            String::from("test"),
            Box::new(ScriptedBackend::new(vcpu, Vec::new())),
            StartMode::RealMode { entry: 0x7c00 },
            Devices::pc_for_tests(),
        )
        .unwrap();
        (vm, probe)
    }

    fn vm(exits: impl IntoIterator<Item = VmExit>) -> (Vm, Rc<Probe>) {
        vm_with(exits, InternalExits::default())
    }

    fn out(byte: u8) -> VmExit {
        VmExit::IoOut {
            port: COM1_BASE,
            size: 1,
            data: u32::from(byte),
        }
    }

    /// Steps until the VM is no longer running (at most `limit` times).
    fn run_to_rest(vm: &mut Vm, limit: usize) -> VmState {
        for _ in 0..limit {
            if vm.step0() != VmState::Running {
                break;
            }
        }
        vm.state()
    }

    #[test]
    fn a_vcpu_is_rebuilt_from_its_saved_state_through_the_backend() {
        let probe = Rc::new(Probe::default());
        let bsp = ScriptedVcpu::new([], InternalExits::default(), Rc::clone(&probe));
        let mut backend = ScriptedBackend::new(bsp, std::vec![std::vec![], std::vec![]]);
        let mut original = backend
            .create_vcpu(0, StartMode::RealMode { entry: 0x7c00 })
            .unwrap();
        let mut state = original.save_state(1_000).unwrap();
        assert_eq!(state.tsc, 1_000);
        state.registers.rip = 0x7c05;
        original.restore_state(&state, 1_000).unwrap();
        // Restored into a new vCPU at host TSC 5 000: the guest TSC continues from 1 200.
        let saved = original.save_state(1_200).unwrap();
        assert_eq!(saved.tsc, 1_200);
        let copy = backend.restore_vcpu(1, &saved, 5_000).unwrap();
        assert_eq!(copy.guest_tsc(5_000), 1_200);
        assert_eq!(copy.save_state(5_100).unwrap().registers.rip, 0x7c05);
        // A state the hardware would refuse creates nothing.
        let mut bad = saved.clone();
        bad.registers.cr0 |= 1 << 31;
        let err = backend.restore_vcpu(1, &bad, 0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "vCPU state registers.cr0: paging (PG) without protection (PE)"
        );
        assert_eq!(backend.scripts.len(), 1, "no vCPU was made for it");
        // A vCPU in the middle of a read cannot be saved.
        let mut reading = ScriptedVcpu::new(
            [VmExit::IoIn {
                port: 0x60,
                size: 1,
            }],
            InternalExits::default(),
            probe,
        );
        reading.run(backend.memory()).unwrap();
        assert_eq!(reading.save_state(0), Err(VcpuError::ReadNotCompleted));
    }

    #[test]
    fn a_write_to_protected_ram_is_logged_and_let_through() {
        let (mut vm, probe) = vm([
            VmExit::DirtyPageWrite { gpa: 0x1_2345 },
            out(b'k'),
            VmExit::Hlt {
                interrupts_enabled: false,
            },
        ]);
        let backend = vm.vm_backend_mut().unwrap();
        backend.write_protect(0, MIN_GUEST_RAM).unwrap();
        let writable = |vm: &mut Vm, gpa| {
            vm.vm_backend_mut()
                .unwrap()
                .memory_map()
                .tables()
                .translate(gpa)
        };
        assert!(!writable(&mut vm, 0x1_2000).unwrap().1.write);
        assert_eq!(vm.step0(), VmState::Running);
        assert!(writable(&mut vm, 0x1_2000).unwrap().1.write, "unprotected");
        assert!(
            !writable(&mut vm, 0x1_3000).unwrap().1.write,
            "only that page"
        );
        let dirty = vm.vm_backend_mut().unwrap().take_dirty_pages();
        assert_eq!(dirty.pages().collect::<Vec<_>>(), [0x1_2000]);
        assert_eq!(vm.exit_stats().get("dirty-page-write"), 1);
        run_to_rest(&mut vm, 5);
        assert_eq!(vm.console_output_since(0).0, b"k");
        assert_eq!(probe.completed.borrow().len(), 0);
    }

    #[test]
    fn a_dirty_write_outside_ram_stops_the_vm() {
        let (mut vm, _) = vm([VmExit::DirtyPageWrite { gpa: 1 << 40 }]);
        assert!(matches!(
            vm.step0(),
            VmState::Stopped(StopReason::BadMemoryAccess { gpa, .. }) if gpa == 1 << 40
        ));
    }

    #[test]
    fn a_paused_vm_does_not_run_and_its_clock_stands_still() {
        use crate::devices::acpi_pm;
        let pm_timer = VmExit::IoIn {
            port: acpi_pm::DEFAULT_BASE + acpi_pm::PM_TMR,
            size: 4,
        };
        let (mut vm, probe) = vm([pm_timer, pm_timer, out(b'x')]);
        let clock = FakeClock::default();
        clock.0.set(1_000_000_000);
        vm.step(&clock);
        // One second of the 3.579545 MHz PM timer.
        assert_eq!(probe.completed.borrow()[..], [3_579_545]);

        vm.pause(&clock).unwrap();
        assert_eq!(vm.state(), VmState::Paused);
        assert_eq!(vm.pause(&clock), Err(PauseError::AlreadyPaused));
        clock.0.set(5_000_000_000);
        assert_eq!(vm.step(&clock), VmState::Paused);
        assert_eq!(probe.runs.get(), 1, "a paused VM's vCPUs do not run");
        assert_eq!(vm.next_deadline(), None);

        // Paused from 1 s to 11 s: at 12 s the VM has lived 2 s.
        clock.0.set(11_000_000_000);
        vm.resume(&clock).unwrap();
        assert_eq!(vm.resume(&clock), Err(PauseError::NotPaused));
        assert_eq!(vm.state(), VmState::Running);
        clock.0.set(12_000_000_000);
        vm.step(&clock);
        assert_eq!(probe.completed.borrow()[..], [3_579_545, 7_159_090]);
        vm.step(&clock);
        assert_eq!(vm.console_output_since(0).0, b"x");
    }

    #[test]
    fn pause_and_resume_refuse_a_stopped_vm_and_stop_ends_a_pause() {
        let (mut vm, _) = vm([out(b'a')]);
        let clock = FakeClock::default();
        vm.pause(&clock).unwrap();
        vm.stop(StopReason::Operator);
        assert_eq!(vm.state(), VmState::Stopped(StopReason::Operator));
        assert_eq!(vm.resume(&clock), Err(PauseError::Stopped));
        assert_eq!(vm.pause(&clock), Err(PauseError::Stopped));
        assert_eq!(PauseError::NotPaused.to_string(), "it is not paused");
    }

    #[test]
    fn guest_prints_hi_and_halts() {
        let (mut vm, probe) = vm([
            out(b'h'),
            out(b'i'),
            VmExit::Hlt {
                interrupts_enabled: false,
            },
        ]);
        assert_eq!(vm.state(), VmState::Running);
        assert_eq!(
            run_to_rest(&mut vm, 10),
            VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
        );
        assert_eq!(vm.console_output_since(0), (b"hi".to_vec(), 2, 0));
        assert_eq!(vm.console_output_since(1), (b"i".to_vec(), 2, 0));
        let stats = vm.exit_stats();
        assert_eq!(stats.get("io-out"), 2);
        assert_eq!(stats.get("hlt"), 1);
        assert_eq!(stats.total(), 3);
        assert_eq!(
            stats.iter().collect::<Vec<_>>(),
            [("hlt", 1), ("io-out", 2)]
        );
        assert_eq!(probe.runs.get(), 3);
        assert!(vm.is_stopped());
        assert_eq!(
            vm.state(),
            VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
        );
    }

    #[test]
    fn in_from_unclaimed_port_completes_with_all_ones() {
        let (mut vm, probe) = vm([
            VmExit::IoIn {
                port: 0x2E0,
                size: 1,
            },
            VmExit::IoIn {
                port: 0x2E0,
                size: 2,
            },
            VmExit::IoIn {
                port: POST_PORT,
                size: 4,
            },
            VmExit::MmioRead {
                gpa: 0xFED0_0000,
                size: 8,
            },
            VmExit::Shutdown,
        ]);
        assert_eq!(
            run_to_rest(&mut vm, 10),
            VmState::Stopped(StopReason::GuestShutdown)
        );
        assert_eq!(
            *probe.completed.borrow(),
            [0xFF, 0xFFFF, 0xFFFF_FFFF, u64::MAX]
        );
        let stats = vm.exit_stats();
        assert_eq!(stats.get("io-in"), 3);
        assert_eq!(stats.get("mmio-read"), 1);
        assert_eq!(stats.get("shutdown"), 1);
    }

    #[test]
    fn mmio_read_modify_write_completes_with_the_old_value() {
        let (mut vm, probe) = vm([
            VmExit::MmioReadModifyWrite {
                gpa: 0xFED0_0000,
                size: 2,
                op: crate::decode::AluOp::Or,
                operand: 1,
            },
            VmExit::Shutdown,
        ]);
        assert_eq!(
            run_to_rest(&mut vm, 10),
            VmState::Stopped(StopReason::GuestShutdown)
        );
        assert_eq!(*probe.completed.borrow(), [0xFFFF]);
        assert_eq!(vm.exit_stats().get("mmio-rmw"), 1);
    }

    #[test]
    fn console_input_reaches_the_guest() {
        let (mut vm, probe) = vm([
            VmExit::IoIn {
                port: COM1_BASE,
                size: 1,
            },
            VmExit::Hlt {
                interrupts_enabled: false,
            },
        ]);
        assert_eq!(vm.console_input(b"y"), 1);
        run_to_rest(&mut vm, 10);
        assert_eq!(*probe.completed.borrow(), [u64::from(b'y')]);
    }

    #[test]
    fn shutdown_stops_with_guest_shutdown() {
        let (mut vm, _) = vm([VmExit::Interrupted, VmExit::Shutdown]);
        assert_eq!(vm.step0(), VmState::Running);
        assert_eq!(vm.step0(), VmState::Stopped(StopReason::GuestShutdown));
        assert_eq!(
            alloc::format!("{}", StopReason::GuestShutdown),
            "guest triple-faulted (shutdown)"
        );
        assert_eq!(vm.exit_stats().get("interrupt"), 1);
    }

    #[test]
    fn a_stopped_vm_stays_stopped() {
        let (mut vm, probe) = vm([VmExit::Shutdown, out(b'x'), out(b'y')]);
        vm.step0();
        for _ in 0..5 {
            assert_eq!(vm.step0(), VmState::Stopped(StopReason::GuestShutdown));
        }
        assert_eq!(probe.runs.get(), 1, "the vCPU never ran again");
        vm.stop(StopReason::Operator);
        assert_eq!(
            vm.state(),
            VmState::Stopped(StopReason::GuestShutdown),
            "the first reason is kept"
        );
        assert_eq!(vm.console_output_since(0).1, 0);
    }

    #[test]
    fn operator_stop_ends_a_running_vm() {
        let (mut vm, probe) = vm([out(b'a'), out(b'b')]);
        vm.step0();
        vm.stop(StopReason::Operator);
        assert_eq!(vm.step0(), VmState::Stopped(StopReason::Operator));
        assert_eq!(probe.runs.get(), 1);
    }

    #[test]
    fn hlt_with_interrupts_waits_without_running() {
        let (mut vm, probe) = vm([
            VmExit::Hlt {
                interrupts_enabled: true,
            },
            out(b'z'),
        ]);
        assert_eq!(vm.step0(), VmState::WaitingForInterrupt);
        assert_eq!(vm.step0(), VmState::WaitingForInterrupt);
        assert_eq!(probe.runs.get(), 1);
        vm.stop(StopReason::Operator);
        assert_eq!(vm.state(), VmState::Stopped(StopReason::Operator));
    }

    #[test]
    fn backend_errors_stop_the_vm() {
        // An empty script makes the mock report Stopped.
        let (mut vm, _) = vm([]);
        assert_eq!(
            vm.step0(),
            VmState::Stopped(StopReason::Backend(VcpuError::Stopped))
        );
    }

    #[test]
    fn failures_carry_their_details() {
        let (mut vm, _) = vm([VmExit::UnhandledMemoryAccess {
            gpa: 0xFFFF_FFF0,
            rip: 0xFFF0,
            reason: "instruction fetch",
        }]);
        let state = vm.step0();
        let VmState::Stopped(reason) = state else {
            panic!("{state:?}");
        };
        assert_eq!(
            alloc::format!("{reason}"),
            "guest touched unbacked memory at 0xfffffff0 (rip 0xfff0): instruction fetch"
        );
        assert_eq!(vm.exit_stats().get("bad-memory-access"), 1);
    }

    #[test]
    fn internal_exits_are_merged_into_the_stats() {
        let (mut vm, _) = vm_with(
            [out(b'.'), VmExit::Shutdown],
            InternalExits {
                cpuid: 40,
                msr: 12,
                injected: 1,
                other: 0,
            },
        );
        run_to_rest(&mut vm, 10);
        let stats = vm.exit_stats();
        assert_eq!(
            stats.iter().collect::<Vec<_>>(),
            [
                ("cpuid", 40),
                ("injected", 1),
                ("io-out", 1),
                ("msr", 12),
                ("shutdown", 1)
            ]
        );
        assert_eq!(stats.get("other"), 0);
        assert_eq!(stats.total(), 55);
    }

    #[test]
    fn console_output_reports_drops() {
        let extra = 100;
        let (mut vm, _) = vm((0..OUTPUT_CAPACITY + extra).map(|i| out(i as u8)));
        run_to_rest(&mut vm, OUTPUT_CAPACITY + extra + 1);
        let (bytes, next, dropped) = vm.console_output_since(0);
        assert_eq!(bytes.len(), OUTPUT_CAPACITY);
        assert_eq!(next, (OUTPUT_CAPACITY + extra) as u64);
        assert_eq!(dropped, extra as u64);
        assert_eq!(vm.console_output_since(next), (Vec::new(), next, 0));
    }

    #[test]
    fn a_stopped_vm_releases_ram_and_vcpu_but_keeps_its_record() {
        let (mut other, _) = vm([]);
        let (mut vm, _) = vm([VmExit::Shutdown]);
        vm.step0();
        assert!(vm.is_stopped());
        assert!(vm.memory().is_none(), "guest RAM is freed at stop");
        assert_eq!(vm.memory_size(), MIN_GUEST_RAM);
        assert_eq!(vm.exit_stats().get("shutdown"), 1);
        assert_eq!(vm.backend(), "scripted");
        other.stop(StopReason::Operator);
        assert!(other.memory().is_none());
    }

    #[test]
    fn accessors() {
        let (vm, _) = vm([]);
        assert_eq!(vm.id(), 7);
        assert_eq!(vm.name(), "test");
        assert_eq!(vm.backend(), "scripted");
        assert_eq!(vm.memory().map(|m| m.size()), Some(MIN_GUEST_RAM));
        assert_eq!(vm.memory_size(), MIN_GUEST_RAM);
        assert_eq!(vm.registers(), Registers::default());
        assert_eq!(vm.devices().com1().output_total(), 0);
        assert!(alloc::format!("{vm:?}").contains("Running"));
    }

    #[test]
    fn exit_stats_saturate_and_skip_zero() {
        let mut stats = ExitStats::new();
        stats.add("x", 0);
        assert_eq!(stats.iter().count(), 0);
        stats.add("x", u64::MAX);
        stats.record("x");
        stats.record("a");
        assert_eq!(stats.get("x"), u64::MAX);
        assert_eq!(stats.total(), u64::MAX);
        assert_eq!(stats.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "x"]);
    }

    /// Programs the 8259 pair as a BIOS does: vectors 0x20 and 0x28, everything unmasked.
    fn init_pics(vm: &mut Vm) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x28),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0x00),
            (0xA1, 0x00),
        ] {
            vm.devices_mut().write_port(port, 1, value);
        }
    }

    #[test]
    fn a_halted_guest_wakes_on_the_pit_tick_and_gets_irq0() {
        let (mut vm, probe) = vm([
            VmExit::Hlt {
                interrupts_enabled: true,
            },
            out(b'w'),
        ]);
        init_pics(&mut vm);
        probe.interruptible.set(true);
        let clock = FakeClock::default();
        assert_eq!(vm.step(&clock), VmState::WaitingForInterrupt);
        // The PIT's reset count (65536 at 1.193182 MHz) ends after about 54.9 ms.
        let deadline = vm.next_deadline().expect("the PIT runs from reset");
        assert!((54_000_000..56_000_000).contains(&deadline), "{deadline}");
        clock.0.set(deadline - 1_000);
        assert_eq!(vm.step(&clock), VmState::WaitingForInterrupt);
        assert_eq!(probe.runs.get(), 1, "not run before its timer");
        clock.0.set(deadline);
        assert_eq!(vm.step(&clock), VmState::Running);
        assert_eq!(*probe.injected.borrow(), [0x20]);
        assert_eq!(vm.injected_interrupts(), 1);
        assert_eq!(vm.console_output_since(0).0, b"w");
    }

    #[test]
    fn an_interrupt_waits_for_the_window_when_the_guest_cannot_take_it() {
        let (mut vm, probe) = vm([out(b'a'), VmExit::InterruptWindow, out(b'b')]);
        init_pics(&mut vm);
        let clock = FakeClock::default();
        clock.0.set(60_000_000);
        probe.interruptible.set(false);
        vm.step(&clock);
        assert!(probe.window.get(), "window requested");
        assert!(probe.injected.borrow().is_empty());
        probe.interruptible.set(true);
        probe.window.set(false);
        vm.step(&clock);
        assert_eq!(*probe.injected.borrow(), [0x20]);
        assert_eq!(vm.exit_stats().get("interrupt-window"), 1);
    }

    #[test]
    fn acpi_power_off_stops_the_vm() {
        let slp = (u32::from(crate::devices::S5_SLP_TYP) << crate::devices::acpi_pm::SLP_TYP_SHIFT)
            | u32::from(crate::devices::acpi_pm::SLP_EN);
        let (mut vm, _) = vm([
            VmExit::IoOut {
                port: 0x604,
                size: 2,
                data: slp,
            },
            out(b'x'),
        ]);
        assert_eq!(vm.step0(), VmState::Stopped(StopReason::GuestPowerOff));
        assert_eq!(
            alloc::format!("{}", StopReason::GuestPowerOff),
            "guest powered off"
        );
        assert!(vm.memory().is_none());
    }

    #[test]
    fn a_tsc_deadline_write_arms_the_local_apic_timer() {
        let (mut vm, _) = vm([
            // Local APIC LVT timer: TSC-deadline mode, vector 0xEC.
            VmExit::MmioWrite {
                gpa: 0xFEE0_0320,
                size: 4,
                data: 0x0004_00EC,
            },
            VmExit::MsrWrite {
                msr: crate::msr::IA32_TSC_DEADLINE,
                value: 2_000_000,
            },
            VmExit::MsrRead {
                msr: crate::msr::IA32_TSC_DEADLINE,
            },
            VmExit::Hlt {
                interrupts_enabled: true,
            },
        ]);
        // The test PC's TSC runs at 2 GHz; the fake clock's TSC is 2 × ns.
        for _ in 0..4 {
            vm.step0();
        }
        assert_eq!(
            vm.next_deadline(),
            Some(1_000_000),
            "2e6 cycles at 2 GHz = 1 ms"
        );
    }

    #[test]
    fn x2apic_mode_through_msrs_and_a_self_ipi() {
        use crate::devices::lapic::{APIC_BASE_EXTD, IA32_APIC_BASE};
        let base = Devices::pc_for_tests().lapic(0).unwrap().apic_base();
        let (mut vm, probe) = vm([
            VmExit::MsrWrite {
                msr: IA32_APIC_BASE,
                value: base | APIC_BASE_EXTD,
            },
            // x2APIC SVR: enabled, spurious vector 0xFF.
            VmExit::MsrWrite {
                msr: 0x80F,
                value: 0x1FF,
            },
            // SELF IPI, vector 0x41.
            VmExit::MsrWrite {
                msr: 0x83F,
                value: 0x41,
            },
            VmExit::MsrRead { msr: 0x802 },
            // A reserved x2APIC register: #GP.
            VmExit::MsrWrite {
                msr: 0x80E,
                value: 0,
            },
            VmExit::Hlt {
                interrupts_enabled: true,
            },
        ]);
        probe.interruptible.set(false);
        for _ in 0..6 {
            vm.step0();
        }
        assert_eq!(
            vm.devices().lapic(0).unwrap().apic_base(),
            base | APIC_BASE_EXTD
        );
        assert_eq!(vm.devices().lapic(0).unwrap().highest_pending(), Some(0x41));
        // Completions: three writes (value ignored), the ID register read (x2APIC ID 0).
        assert_eq!(*probe.completed.borrow(), [0, 0, 0, 0]);
        assert_eq!(probe.faulted.get(), 1, "DFR does not exist in x2APIC mode");
        assert_eq!(vm.exit_stats().get("msr-write"), 4);
    }

    /// VMs with more than one vCPU.
    mod smp {
        use super::*;
        use crate::devices::lapic::DEFAULT_BASE as APIC;

        struct Smp {
            vm: Vm,
            started: Rc<RefCell<Vec<(u32, StartMode)>>>,
            ap_probes: Rc<RefCell<Vec<Rc<Probe>>>>,
        }

        fn smp_vm(
            cpus: u8,
            bsp: impl IntoIterator<Item = VmExit>,
            aps: Option<Vec<Vec<VmExit>>>,
        ) -> Smp {
            smp_vm_with_probe(cpus, bsp, aps, Rc::new(Probe::default()))
        }

        fn smp_vm_with_probe(
            cpus: u8,
            bsp: impl IntoIterator<Item = VmExit>,
            aps: Option<Vec<Vec<VmExit>>>,
            bsp_probe: Rc<Probe>,
        ) -> Smp {
            let vcpu = ScriptedVcpu::new(bsp, InternalExits::default(), bsp_probe);
            let backend = ScriptedBackend::new(vcpu, aps.unwrap_or_default());
            let started = Rc::clone(&backend.started);
            let ap_probes = Rc::clone(&backend.probes);
            let vm = Vm::new(
                3,
                String::from("smp"),
                Box::new(backend),
                StartMode::RealMode { entry: 0x7c00 },
                Devices::pc_for_tests_with_cpus(cpus),
            )
            .unwrap();
            Smp {
                vm,
                started,
                ap_probes,
            }
        }

        /// The two xAPIC ICR writes that send `low` to APIC `dest`.
        fn ipi(dest: u8, low: u32) -> [VmExit; 2] {
            [
                VmExit::MmioWrite {
                    gpa: APIC + 0x310,
                    size: 4,
                    data: u64::from(dest) << 24,
                },
                VmExit::MmioWrite {
                    gpa: APIC + 0x300,
                    size: 4,
                    data: u64::from(low),
                },
            ]
        }

        const INIT: u32 = 0x4500;
        const INIT_DEASSERT: u32 = 0x8500;
        const STARTUP_08: u32 = 0x4608;
        const HLT_CLI: VmExit = VmExit::Hlt {
            interrupts_enabled: false,
        };
        const HLT_STI: VmExit = VmExit::Hlt {
            interrupts_enabled: true,
        };

        fn steps(vm: &mut Vm, n: usize) -> VmState {
            for _ in 0..n {
                vm.step0();
            }
            vm.state()
        }

        #[test]
        fn aps_wait_until_the_guest_starts_them_then_run_by_turns() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, INIT_DEASSERT));
            bsp.extend(ipi(1, STARTUP_08));
            // A second start-up IPI (the MP protocol sends two) is ignored: AP 1 runs.
            bsp.extend(ipi(1, STARTUP_08));
            bsp.extend([out(b'a'), out(b'a'), HLT_CLI]);
            let mut t = smp_vm(
                2,
                bsp,
                Some(vec![vec![out(b'b'), out(b'b'), out(b'b'), HLT_CLI]]),
            );
            assert_eq!(
                t.vm.cpu_states(),
                [CpuState::Running, CpuState::WaitingForStartup]
            );
            // INIT, de-assert: AP 1 still waits.
            steps(&mut t.vm, 4);
            assert!(t.started.borrow().is_empty());
            // The start-up IPI creates its vCPU in real mode at page 8.
            steps(&mut t.vm, 2);
            assert_eq!(
                *t.started.borrow(),
                [(1, StartMode::StartupIpi { vector: 8 })]
            );
            assert_eq!(t.vm.cpu_states(), [CpuState::Running, CpuState::Running]);
            // Turns alternate, the AP first: b, (BSP: 2nd SIPI) b, (SIPI) b, a, (AP parks) a.
            run_to_rest(&mut t.vm, 40);
            let (out, _, _) = t.vm.console_output_since(0);
            assert_eq!(out, b"bbbaa");
            assert_eq!(
                t.started.borrow().len(),
                1,
                "the second SIPI started nothing"
            );
            // The BSP parked first; the VM stopped only once the AP parked too.
            assert_eq!(
                t.vm.state(),
                VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
            );
            assert!(t.vm.memory().is_none(), "released");
            assert_eq!(t.vm.exit_stats().get("mmio-write"), 8);
        }

        #[test]
        fn an_ap_the_backend_cannot_create_stops_the_vm_with_a_clear_reason() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            bsp.push(HLT_CLI);
            let mut t = smp_vm(2, bsp, None);
            let state = run_to_rest(&mut t.vm, 10);
            assert_eq!(
                state,
                VmState::Stopped(StopReason::ApStartFailed { cpu: 1 })
            );
            assert!(
                alloc::format!("{}", StopReason::ApStartFailed { cpu: 1 })
                    .contains("could not create it")
            );
        }

        #[test]
        fn startup_ipis_to_cpus_the_vm_does_not_have_change_nothing() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(5, INIT));
            bsp.extend(ipi(5, STARTUP_08));
            bsp.push(out(b'k'));
            bsp.push(HLT_CLI);
            let mut t = smp_vm(2, bsp, Some(vec![vec![HLT_CLI]]));
            run_to_rest(&mut t.vm, 10);
            assert!(t.started.borrow().is_empty());
            assert_eq!(t.vm.console_output_since(0).0, b"k");
            assert_eq!(
                t.vm.state(),
                VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
            );
        }

        #[test]
        fn a_fixed_ipi_wakes_a_halted_ap_and_is_injected_there() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            // Let the AP run up to its HLT, then send it vector 0x41.
            bsp.extend([out(b'.'), out(b'.')]);
            bsp.extend(ipi(1, 0x4041));
            bsp.extend([out(b'.'), HLT_CLI]);
            let ap = vec![
                // Software-enable its APIC, then wait for an interrupt.
                VmExit::MmioWrite {
                    gpa: APIC + 0xF0,
                    size: 4,
                    data: 0x1FF,
                },
                HLT_STI,
                out(b'w'),
                HLT_CLI,
            ];
            let mut t = smp_vm(2, bsp, Some(vec![ap]));
            // BSP: INIT, SIPI (4 steps); then AP (SVR), BSP ('.'), AP (HLT).
            steps(&mut t.vm, 7);
            assert_eq!(t.vm.cpu_states()[1], CpuState::Halted);
            let probe = Rc::clone(&t.ap_probes.borrow()[0]);
            probe.interruptible.set(true);
            run_to_rest(&mut t.vm, 30);
            assert_eq!(*probe.injected.borrow(), [0x41]);
            assert!(t.vm.console_output_since(0).0.contains(&b'w'));
            assert_eq!(t.vm.exit_stats().get("irq-injected"), 1);
        }

        #[test]
        fn an_init_puts_a_running_ap_back_to_waiting_and_a_new_startup_recreates_it() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, 0x4609));
            bsp.push(HLT_CLI);
            let spin = || (0..20).map(|_| out(b's')).collect::<Vec<_>>();
            let mut t = smp_vm(2, bsp, Some(vec![spin(), vec![HLT_CLI]]));
            run_to_rest(&mut t.vm, 80);
            assert_eq!(
                *t.started.borrow(),
                [
                    (1, StartMode::StartupIpi { vector: 8 }),
                    (1, StartMode::StartupIpi { vector: 9 })
                ]
            );
            assert_eq!(
                t.vm.state(),
                VmState::Stopped(StopReason::HaltedWithInterruptsDisabled)
            );
        }

        #[test]
        fn vcpus_of_an_smp_vm_give_their_turn_away_on_pause() {
            let single = Rc::new(Probe::default());
            smp_vm_with_probe(1, [HLT_CLI], None, Rc::clone(&single));
            assert!(
                !single.pause_exiting.get(),
                "one vCPU spins alone: no exits"
            );

            let bsp_probe = Rc::new(Probe::default());
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            // The BSP spins (PAUSE) until the AP has printed.
            bsp.extend([VmExit::Pause, VmExit::Pause, out(b'B'), HLT_CLI]);
            let mut t = smp_vm_with_probe(
                2,
                bsp,
                Some(vec![vec![out(b'A'), HLT_CLI]]),
                Rc::clone(&bsp_probe),
            );
            assert!(bsp_probe.pause_exiting.get());
            run_to_rest(&mut t.vm, 20);
            assert!(t.ap_probes.borrow()[0].pause_exiting.get());
            assert_eq!(t.vm.console_output_since(0).0, b"AB");
            assert_eq!(t.vm.exit_stats().get("pause"), 2);
        }

        #[test]
        fn an_ap_that_triple_faults_stops_the_whole_vm_and_frees_every_vcpu() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            bsp.extend((0..10).map(|_| out(b'.')));
            let mut t = smp_vm(2, bsp, Some(vec![vec![out(b'x'), VmExit::Shutdown]]));
            let state = run_to_rest(&mut t.vm, 40);
            assert_eq!(state, VmState::Stopped(StopReason::GuestShutdown));
            assert!(t.vm.memory().is_none(), "RAM released");
            assert!(t.vm.cpu_states().is_empty(), "vCPUs released");
            // Turns: AP 'x', BSP '.', AP faults; the BSP runs no further.
            assert_eq!(t.vm.console_output_since(0).0, b"x.");
        }

        #[test]
        fn an_nmi_ipi_wakes_a_parked_ap_and_waits_while_nmis_are_blocked() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            bsp.extend([out(b'.'), out(b'.')]);
            // NMI to all but self.
            bsp.extend(ipi(0, 0x000C_0400));
            bsp.extend((0..6).map(|_| out(b'.')));
            bsp.push(HLT_CLI);
            // The AP parks (HLT with IF=0); the NMI wakes it, it prints and parks again.
            let ap = vec![HLT_CLI, out(b'n'), HLT_CLI];
            let mut t = smp_vm(2, bsp, Some(vec![ap]));
            // INIT, SIPI, then AP parks, BSP '.', BSP '.'
            steps(&mut t.vm, 7);
            assert_eq!(t.vm.cpu_states()[1], CpuState::Parked);
            let probe = Rc::clone(&t.ap_probes.borrow()[0]);
            // While the AP's NMIs are blocked the NMI waits and the AP stays parked...
            probe.nmi_blocked.set(true);
            steps(&mut t.vm, 4);
            assert!(t.vm.devices().nmi_pending(1));
            assert_eq!(probe.nmis.get(), 0);
            assert_eq!(t.vm.cpu_states()[1], CpuState::Parked);
            // ...and goes in once they open.
            probe.nmi_blocked.set(false);
            run_to_rest(&mut t.vm, 40);
            assert_eq!(probe.nmis.get(), 1);
            assert!(!t.vm.devices().nmi_pending(1));
            assert!(t.vm.console_output_since(0).0.contains(&b'n'));
            assert_eq!(t.vm.exit_stats().get("nmi-injected"), 1);
        }

        #[test]
        fn an_nmi_to_an_ap_waiting_for_startup_is_dropped() {
            let mut bsp = Vec::new();
            bsp.extend(ipi(1, 0x0400)); // NMI before the AP is started
            bsp.extend(ipi(1, INIT));
            bsp.extend(ipi(1, STARTUP_08));
            bsp.push(HLT_CLI);
            let mut t = smp_vm(2, bsp, Some(vec![vec![out(b'a'), HLT_CLI]]));
            run_to_rest(&mut t.vm, 20);
            assert_eq!(t.ap_probes.borrow()[0].nmis.get(), 0);
            assert_eq!(t.vm.exit_stats().get("nmi-injected"), 0);
            assert_eq!(t.vm.console_output_since(0).0, b"a");
        }

        #[test]
        fn a_vm_whose_cpus_all_wait_for_interrupts_is_idle_until_one_comes() {
            let mut t = smp_vm(2, [HLT_STI, out(b'x'), HLT_CLI], Some(vec![]));
            assert_eq!(t.vm.step0(), VmState::WaitingForInterrupt);
            // AP 1 never started: the VM waits on the BSP alone.
            assert_eq!(
                t.vm.cpu_states(),
                [CpuState::Halted, CpuState::WaitingForStartup]
            );
            assert_eq!(t.vm.step0(), VmState::WaitingForInterrupt);
        }
    }

    /// A virtio notify is a plain MMIO exit; the step that handles it also runs the
    /// request, with the VM's own guest RAM, and the guest sees the answer at its next entry.
    #[test]
    fn a_virtio_notify_exit_is_serviced_in_the_same_step() {
        use crate::devices::pci::config::{COMMAND_BUS_MASTER, COMMAND_MEMORY, reg};
        use crate::virtio::blk::{S_OK, T_IN, block_device};
        use crate::virtio::pci::tests::{MemDisk, cfg_write};
        use crate::virtio::queue::tests::Driver;
        use crate::virtio::{F_VERSION_1, pci};

        const BAR: u64 = 0xE000_0000;
        let disk = MemDisk::new(8);
        let mut devices = Devices::pc_for_tests();
        let slot = devices
            .add_pci_device(block_device(Box::new(disk.clone()), false, "vm"))
            .unwrap();
        let f = slot << 3;
        cfg_write(&mut devices, f, reg::BAR0, 4, BAR as u32);
        cfg_write(&mut devices, f, reg::BAR0 + 4, 4, 0);
        let command = COMMAND_MEMORY | COMMAND_BUS_MASTER;
        cfg_write(&mut devices, f, reg::COMMAND, 2, u32::from(command));
        // The driver's bring-up, polled (no MSI-X), queue 0 of 4 entries at 0x1000.
        let drv = Driver::new(4, 0x1000);
        let status = |bits: u8| (BAR + 0x14, 1, u64::from(bits));
        for (gpa, size, value) in [
            status(pci::STATUS_ACKNOWLEDGE | pci::STATUS_DRIVER),
            (BAR + 0x08, 4, 1),
            (BAR + 0x0C, 4, F_VERSION_1 >> 32),
            status(pci::STATUS_ACKNOWLEDGE | pci::STATUS_DRIVER | pci::STATUS_FEATURES_OK),
            (BAR + 0x18, 2, 4),
            (BAR + 0x20, 8, drv.desc),
            (BAR + 0x28, 8, drv.avail),
            (BAR + 0x30, 8, drv.used),
            (BAR + 0x1C, 2, 1),
            status(0xF),
        ] {
            devices.write_mmio(gpa, size, value);
        }
        let notify = VmExit::MmioWrite {
            gpa: BAR + pci::NOTIFY_CFG,
            size: 2,
            data: 0,
        };
        let probe = Rc::new(Probe::default());
        let vcpu = ScriptedVcpu::new([notify], InternalExits::default(), probe);
        let mut vm = Vm::new(
            7,
            String::from("test"),
            Box::new(ScriptedBackend::new(vcpu, Vec::new())),
            StartMode::RealMode { entry: 0x7c00 },
            devices,
        )
        .unwrap();
        let mut drv = drv;
        let mem = vm.memory().unwrap();
        mem.write_u32(0x8000, T_IN).unwrap();
        mem.write_u64(0x8008, 3).unwrap();
        mem.write_u8(0xA000, 0xAA).unwrap();
        drv.add_chain(
            mem,
            &[(0x8000, 16, false), (0x9000, 512, true), (0xA000, 1, true)],
        );
        vm.step0();
        let mem = vm.memory().unwrap();
        assert_eq!(mem.read_u8(0xA000).unwrap(), S_OK);
        assert_eq!(drv.used_idx(mem), 1);
        let mut data = [0u8; 512];
        mem.read(0x9000, &mut data).unwrap();
        assert_eq!(data[..], disk.bytes.lock().unwrap()[3 * 512..4 * 512]);
        assert!(!vm.devices().io_pending());
    }

    /// Frames reach a VM between its exits: `poll_io` places a waiting frame in the
    /// guest's receive buffers and raises the queue's MSI-X vector, and the halted vCPU
    /// wakes and takes it at the next step. A paused VM is left alone.
    #[test]
    fn poll_io_delivers_a_waiting_frame_and_wakes_a_halted_vcpu() {
        use crate::virtio::net::tests::{
            LINUX_NET_FEATURES, MAC, NetRig, RX_BUFS, RX_VECTOR, frame,
        };

        let mut rig = NetRig::new();
        rig.bring_up(LINUX_NET_FEATURES);
        let NetRig {
            d, mut rx, wire, ..
        } = rig;
        let probe = Rc::new(Probe::default());
        let exits = [
            VmExit::Hlt {
                interrupts_enabled: true,
            },
            out(b'w'),
        ];
        let vcpu = ScriptedVcpu::new(exits, InternalExits::default(), probe.clone());
        let mut vm = Vm::new(
            7,
            String::from("test"),
            Box::new(ScriptedBackend::new(vcpu, Vec::new())),
            StartMode::RealMode { entry: 0x7c00 },
            d,
        )
        .unwrap();
        probe.interruptible.set(true);
        assert_eq!(vm.step0(), VmState::WaitingForInterrupt);
        assert!(!vm.poll_io(), "nothing waits");
        rx.add_chain(vm.memory().unwrap(), &[(RX_BUFS, 1526, true)]);
        let f = frame(MAC, [2; 6], 60, 4);
        wire.0.lock().unwrap().to_guest.push_back(f.clone());

        let clock = FakeClock::default();
        vm.pause(&clock).unwrap();
        assert!(!vm.poll_io(), "a paused VM's devices do not move");
        assert_eq!(rx.used_idx(vm.memory().unwrap()), 0);
        vm.resume(&clock).unwrap();

        assert!(vm.poll_io(), "the frame raised an interrupt");
        let mem = vm.memory().unwrap();
        assert_eq!(rx.used_idx(mem), 1);
        let mut got = [0u8; 60];
        mem.read(RX_BUFS + 12, &mut got).unwrap();
        assert_eq!(got[..], f[..]);
        assert!(wire.0.lock().unwrap().to_guest.is_empty());
        assert_eq!(vm.step0(), VmState::Running);
        assert_eq!(*probe.injected.borrow(), [RX_VECTOR]);
        assert_eq!(vm.console_output_since(0).0, b"w");
    }

    mod kvm_clock;
    mod persist;
}
