//! The kernel's side of running VMs: host frames for the VMM, starting VMs from boot modules,
//! round-robin scheduling on the boot CPU between console work, and echoing guest output.
//!
//! Each scheduling slice runs one VM until the host timer ticks (a `VmExit::Interrupted` or a
//! preemption request), so a guest that never exits still gives the CPU back every tick (1 ms).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use keel_vmm::cpuid::CpuidPolicy;
use keel_vmm::devices::{Devices, PlatformConfig};
use keel_vmm::exit_handler::StopReason;
use keel_vmm::host::HostMemory;
use keel_vmm::memory::GuestMemory;
use keel_vmm::vm::{Clock, Instant, Vm, VmState};
use keel_vmm::{backend, loader};

use crate::boot::BootModule;
use crate::{System, mm};

/// Guest RAM when `vm run` gives no `mem=`.
pub const DEFAULT_MEM_MIB: u32 = 16;
/// Guest RAM for a Linux VM when `mem=` is not given.
pub const DEFAULT_LINUX_MEM_MIB: u32 = 256;
/// Guest RAM accepted, in MiB (an even number: guest RAM comes in 2 MiB pages).
pub const MEM_MIB_RANGE: (u32, u32) = (2, 65536);

/// Why a VM could not be stopped.
#[derive(Debug)]
pub enum StopError {
    /// No VM has this id.
    NoSuchVm(u32),
    /// The VM had already stopped.
    AlreadyStopped {
        /// VM id.
        id: u32,
        /// Why it stopped.
        reason: String,
    },
}

impl core::fmt::Display for StopError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StopError::NoSuchVm(id) => write!(f, "no VM with id {id}: see 'vm list'"),
            StopError::AlreadyStopped { id, reason } => {
                write!(f, "VM {id} is already stopped ({reason})")
            }
        }
    }
}

/// Why a VM could not be started.
#[derive(Debug)]
pub enum StartError {
    /// No boot module has this index or name.
    NoSuchModule(String),
    /// The memory size is outside the accepted range or odd.
    BadMemorySize(u32),
    /// The host could not provide the guest RAM.
    NoMemory(String),
    /// The payload does not fit or is empty.
    Load(String),
    /// The backend could not create the vCPU (e.g. no virtualization).
    Vcpu(backend::BackendError),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoSuchModule(key) => write!(f, "no boot module '{key}': see 'modules'"),
            StartError::BadMemorySize(mib) => write!(
                f,
                "guest memory must be an even number of MiB between {} and {} (got {mib})",
                MEM_MIB_RANGE.0, MEM_MIB_RANGE.1
            ),
            StartError::NoMemory(m) | StartError::Load(m) => f.write_str(m),
            StartError::Vcpu(e) => write!(f, "cannot create the vCPU: {e}"),
        }
    }
}

/// What a boot module holds, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GuestKind {
    /// Raw real-mode code, entered at 0000:7C00.
    Flat,
    /// A Linux bzImage (`HdrS` at 0x202): the Linux boot protocol's 64-bit entry.
    BzImage,
    /// An ELF image: PVH (`XEN_ELFNOTE_PHYS32_ENTRY`), entered in 32-bit protected mode.
    PvhElf,
}

/// Host frames for the VMM, from the kernel's frame allocator (identity-mapped).
pub struct KernelHost;

impl HostMemory for KernelHost {
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
        mm::alloc_frames(count, align)
    }

    fn free_frames(&self, phys: u64, count: u64) {
        mm::free_frames(phys, count)
    }

    fn ptr(&self, phys: u64) -> *mut u8 {
        phys as *mut u8
    }
}

static HOST: KernelHost = KernelHost;

struct Entry {
    vm: Vm,
    module: String,
    echoed: u64,
    line: Vec<u8>,
    stop_reported: bool,
}

/// All VMs on this host.
pub struct VmManager {
    vms: Vec<Entry>,
    next_id: u32,
    cursor: usize,
}

impl Default for VmManager {
    fn default() -> Self {
        Self::new()
    }
}

fn module_bytes(module: &BootModule) -> &'static [u8] {
    // SAFETY: boot modules lie in RAM the frame allocator reserved at boot and never hands
    // out; all RAM is identity-mapped; nothing writes to modules.
    unsafe { core::slice::from_raw_parts(module.start as *const u8, module.size as usize) }
}

impl VmManager {
    /// No VMs.
    pub const fn new() -> VmManager {
        VmManager {
            vms: Vec::new(),
            next_id: 1,
            cursor: 0,
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

    /// Starts a VM from a boot module; returns its id. A Linux bzImage (the setup header's
    /// `HdrS` signature) boots through the Linux boot protocol with `initrd` (another module)
    /// and `cmdline`; anything else is a flat payload entered in real mode at 0x7C00.
    pub fn start(
        &mut self,
        system: &System,
        key: &str,
        mem_mib: Option<u32>,
        initrd: Option<&str>,
        cmdline: Option<&str>,
    ) -> Result<u32, StartError> {
        let module = Self::find_module(system, key)
            .ok_or_else(|| StartError::NoSuchModule(String::from(key)))?;
        let image = module_bytes(module);
        let kind = if loader::bzimage::is_bzimage(image) {
            GuestKind::BzImage
        } else if image.starts_with(b"\x7fELF") {
            GuestKind::PvhElf
        } else {
            GuestKind::Flat
        };
        if kind == GuestKind::Flat && (initrd.is_some() || cmdline.is_some()) {
            return Err(StartError::Load(alloc::format!(
                "'{}' is neither a Linux bzImage nor a PVH ELF kernel: initrd= and cmdline= \
                 apply to kernels only",
                module.name
            )));
        }
        let initrd = match initrd {
            Some(name) => Some(
                Self::find_module(system, name)
                    .ok_or_else(|| StartError::NoSuchModule(String::from(name)))?,
            ),
            None => None,
        };
        let default_mib = match kind {
            GuestKind::Flat => DEFAULT_MEM_MIB,
            GuestKind::BzImage | GuestKind::PvhElf => DEFAULT_LINUX_MEM_MIB,
        };
        let mem_mib = mem_mib.unwrap_or(default_mib);
        if !(MEM_MIB_RANGE.0..=MEM_MIB_RANGE.1).contains(&mem_mib) || !mem_mib.is_multiple_of(2) {
            return Err(StartError::BadMemorySize(mem_mib));
        }
        let memory = GuestMemory::new(&HOST, u64::from(mem_mib) << 20).map_err(|e| {
            StartError::NoMemory(alloc::format!("cannot give the VM {mem_mib} MiB: {e}"))
        })?;
        let load_error = |e: &dyn core::fmt::Display| {
            StartError::Load(alloc::format!("cannot load '{}': {e}", module.name))
        };
        let start = match kind {
            GuestKind::Flat => loader::flat::load(&memory, image).map_err(|e| load_error(&e))?,
            GuestKind::BzImage | GuestKind::PvhElf => {
                let tables =
                    keel_vmm::acpi_tables::write(&memory, &Default::default()).map_err(|e| {
                        StartError::Load(alloc::format!("cannot write the VM's ACPI tables: {e}"))
                    })?;
                let initrd = initrd.map(module_bytes);
                let cmdline = cmdline.unwrap_or("");
                if kind == GuestKind::BzImage {
                    loader::bzimage::load(&memory, image, initrd, cmdline, Some(tables.rsdp))
                        .map_err(|e| load_error(&e))?
                        .start
                } else {
                    loader::pvh::load(&memory, image, initrd, cmdline, Some(tables.rsdp))
                        .map_err(|e| load_error(&e))?
                        .start
                }
            }
        };
        let cpuid = CpuidPolicy::from_host(&crate::cpuinfo::HostCpu)
            .with_tsc_hz(crate::arch::timer::tsc_hz());
        let vcpu = backend::create_vcpu(&system.virtualization, &HOST, &memory, start, cpuid)
            .map_err(StartError::Vcpu)?;
        let id = self.next_id;
        self.next_id += 1;
        let name = alloc::format!("vm{id}");
        let devices =
            Devices::pc(platform_config()).map_err(|e| StartError::Load(alloc::format!("{e}")))?;
        let vm = Vm::new(id, name, memory, vcpu, devices);
        defmt::info!(
            "vm {=u32} started from module {=str}",
            id,
            module.name.as_str()
        );
        self.vms.push(Entry {
            vm,
            module: String::from(module.name.as_str()),
            echoed: 0,
            line: Vec::new(),
            stop_reported: false,
        });
        Ok(id)
    }

    fn entry_mut(&mut self, id: u32) -> Result<&mut Entry, String> {
        self.vms
            .iter_mut()
            .find(|e| e.vm.id() == id)
            .ok_or_else(|| alloc::format!("no VM with id {id}: see 'vm list'"))
    }

    /// Stops a VM (operator request).
    pub fn stop(&mut self, id: u32) -> Result<(), StopError> {
        let entry = self
            .vms
            .iter_mut()
            .find(|e| e.vm.id() == id)
            .ok_or(StopError::NoSuchVm(id))?;
        if let VmState::Stopped(reason) = entry.vm.state() {
            return Err(StopError::AlreadyStopped {
                id,
                reason: alloc::format!("{reason}"),
            });
        }
        entry.vm.stop(StopReason::Operator);
        Ok(())
    }

    /// The VM's whole retained console output.
    pub fn log(&mut self, id: u32) -> Result<(Vec<u8>, u64), String> {
        let entry = self.entry_mut(id)?;
        let (bytes, _, dropped) = entry.vm.console_output_since(0);
        Ok((bytes, dropped))
    }

    /// Writes the `vm list` table.
    pub fn list(&self, out: &mut impl core::fmt::Write) {
        if self.vms.is_empty() {
            let _ = writeln!(out, "no VMs: start one with 'vm run <module>'");
            return;
        }
        let _ = writeln!(out, "  id  module            state");
        for e in &self.vms {
            let state = match e.vm.state() {
                VmState::Running => String::from("running"),
                VmState::WaitingForInterrupt => String::from("halted, waiting for an interrupt"),
                VmState::Stopped(reason) => alloc::format!("stopped: {reason}"),
            };
            let _ = writeln!(out, "  {:<3} {:<17} {}", e.vm.id(), e.module, state);
            let _ = write!(out, "      exits:");
            for (kind, count) in e.vm.exit_stats().iter() {
                let _ = write!(out, " {kind}={count}");
            }
            let _ = writeln!(out);
        }
    }

    /// Whether any VM can run.
    pub fn any_runnable(&self) -> bool {
        self.vms
            .iter()
            .any(|e| matches!(e.vm.state(), VmState::Running))
    }

    /// Runs the next runnable VM until the host timer ticks, then appends new guest output
    /// lines (and stop notices) to `out` for the console to print. Halted VMs are stepped
    /// once each, which wakes those whose interrupt (a timer, console input) has come.
    pub fn run_slice(&mut self, out: &mut String) {
        for e in &mut self.vms {
            if e.vm.state() == VmState::WaitingForInterrupt {
                e.vm.step(&TscClock);
            }
        }
        let n = self.vms.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            if !matches!(self.vms[i].vm.state(), VmState::Running) {
                continue;
            }
            self.cursor = (i + 1) % n;
            let tick = crate::arch::timer::ticks();
            while matches!(self.vms[i].vm.state(), VmState::Running)
                && crate::arch::timer::ticks() == tick
            {
                self.vms[i].vm.step(&TscClock);
            }
            break;
        }
        for e in &mut self.vms {
            echo(e, out);
        }
    }
}

/// The VM time line: the host TSC, in nanoseconds since boot.
struct TscClock;

impl Clock for TscClock {
    fn now(&self) -> Instant {
        let tsc = crate::arch::cpu::rdtsc();
        let hz = u128::from(crate::arch::timer::tsc_hz().max(1));
        Instant {
            ns: (u128::from(tsc) * 1_000_000_000 / hz) as u64,
            tsc,
        }
    }
}

/// A new VM's platform: the host's TSC rate (the guest reads the same TSC), the host RTC's
/// wall-clock time, and now.
fn platform_config() -> PlatformConfig {
    PlatformConfig {
        tsc_hz: crate::arch::timer::tsc_hz(),
        wall_clock_unix_seconds: crate::arch::rtc::unix_seconds().unwrap_or(0),
        now_ns: TscClock.now().ns,
    }
}

/// Appends complete new lines of guest output as `[vm<id>] <line>`, and a notice when the VM
/// stopped.
fn echo(e: &mut Entry, out: &mut String) {
    let (bytes, next, _) = e.vm.console_output_since(e.echoed);
    e.echoed = next;
    for b in bytes {
        match b {
            b'\n' => {
                let text = String::from_utf8_lossy(&e.line);
                let _ = writeln!(out, "[vm{}] {}", e.vm.id(), text.trim_end_matches('\r'));
                e.line.clear();
            }
            _ if e.line.len() < 512 => e.line.push(b),
            _ => {}
        }
    }
    if let VmState::Stopped(reason) = e.vm.state()
        && !e.stop_reported
    {
        if !e.line.is_empty() {
            let text = String::from_utf8_lossy(&e.line);
            let _ = writeln!(out, "[vm{}] {}", e.vm.id(), text);
            e.line.clear();
        }
        let _ = writeln!(out, "vm {} stopped: {}", e.vm.id(), reason);
        e.stop_reported = true;
    }
}

/// A read-only view of one VM, for the management API.
pub struct VmView<'a> {
    /// VM id.
    pub id: u32,
    /// The boot module it runs.
    pub module: &'a str,
    /// Its state.
    pub state: VmState,
    /// Exits by reason.
    pub exits: keel_vmm::vm::ExitStats,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// Backend name.
    pub backend: &'static str,
    /// Console bytes produced so far.
    pub console_bytes: u64,
}

impl VmManager {
    /// Views of every VM, oldest first.
    pub fn views(&self) -> impl Iterator<Item = VmView<'_>> {
        self.vms.iter().map(|e| VmView {
            id: e.vm.id(),
            module: e.module.as_str(),
            state: e.vm.state(),
            exits: e.vm.exit_stats(),
            mem_mib: (e.vm.memory_size() >> 20) as u32,
            backend: e.vm.backend(),
            console_bytes: e.vm.devices().com1.output_total(),
        })
    }

    /// Console output of VM `id` from byte offset `since`: (bytes, next offset, dropped).
    pub fn console(&self, id: u32, since: u64) -> Option<(Vec<u8>, u64, u64)> {
        self.vms
            .iter()
            .find(|e| e.vm.id() == id)
            .map(|e| e.vm.console_output_since(since))
    }
}
