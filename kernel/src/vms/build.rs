//! Building one VM: host frames for the VMM, the guest image (a boot module or a guest store
//! file) and its loader (flat, Linux bzImage, PVH ELF), ACPI tables, the vCPU, the PC
//! platform and the VM's disks and NICs on its PCI bus; and the clock VMs run on. Its neighbour
//! [`super`] manages the VMs built here.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use keel_config::schema::{Paravirt, VmDevice};
use keel_vmm::cpuid::CpuidPolicy;
use keel_vmm::devices::{Devices, PlatformConfig};
use keel_vmm::host::{FrameUse, HostMemory};
use keel_vmm::memory::GuestMemory;
use keel_vmm::vm::{Clock, Instant, Vm};
use keel_vmm::{backend, loader};

use super::disks::{self, AttachedDisk, DiskAttachError, MAX_MEM_MIB_WITH_DISKS, OpenedDisk};
use super::nics::{self, AttachedNic, NicAttachError, NicSpec};
use super::{DEFAULT_LINUX_MEM_MIB, DEFAULT_MEM_MIB, MEM_MIB_RANGE, StartError};
use crate::boot::BootModule;
use crate::{System, mm};

/// What a boot module holds, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GuestKind {
    /// Raw real-mode code, entered at 0000:7C00.
    Flat,
    /// A Linux bzImage (`HdrS` at 0x202): the Linux boot protocol's 64-bit entry.
    BzImage,
    /// An ELF image: PVH (`XEN_ELFNOTE_PHYS32_ENTRY`), entered in 32-bit protected mode.
    PvhElf,
    /// A Multiboot (v1) kernel (a header in its first 8 KiB and no PVH note), such as
    /// kvm-unit-tests' `*.flat`: entered in 32-bit protected mode with the Multiboot
    /// information; the initrd becomes module 0.
    Multiboot,
}

/// Host frames for the VMM, from the kernel's frame allocator (identity-mapped), billed to one
/// memory-bill account: a VM's own ([`vm_host`]) or, for snapshots, [`HOST`]'s.
pub struct KernelHost {
    account: usize,
}

impl HostMemory for KernelHost {
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
        // The VMM tags every allocation it makes; an untagged one is per-vCPU state.
        self.alloc_frames_for(FrameUse::VcpuControl, count, align)
    }

    fn free_frames(&self, phys: u64, count: u64) {
        self.free_frames_for(FrameUse::VcpuControl, phys, count)
    }

    fn alloc_frames_for(&self, use_: FrameUse, count: u64, align: u64) -> Option<u64> {
        mm::alloc_vm_frames(self.account, use_, count, align)
    }

    fn free_frames_for(&self, use_: FrameUse, phys: u64, count: u64) {
        mm::free_vm_frames(self.account, use_, phys, count)
    }

    fn ptr(&self, phys: u64) -> *mut u8 {
        phys as *mut u8
    }
}

/// One host per memory-bill account, so each VM's frames are counted as its own.
static VM_HOSTS: [KernelHost; mm::bill::VM_ACCOUNTS] = {
    let mut hosts = [const { KernelHost { account: 0 } }; mm::bill::VM_ACCOUNTS];
    let mut i = 0;
    while i < hosts.len() {
        hosts[i].account = i;
        i += 1;
    }
    hosts
};

/// The frames host for VM `vm_id`, billing its account.
pub(super) fn vm_host(vm_id: u32) -> &'static KernelHost {
    let account = mm::vm_account(vm_id);
    &VM_HOSTS[account.min(VM_HOSTS.len() - 1)]
}

/// The host for frames no VM owns: snapshot staging (billed host-wide by its use).
pub(super) static HOST: KernelHost = KernelHost {
    account: mm::bill::VM_ACCOUNTS - 1,
};

pub(super) fn module_bytes(module: &BootModule) -> &'static [u8] {
    // SAFETY: boot modules lie in RAM the frame allocator reserved at boot and never hands
    // out; all RAM is identity-mapped; nothing writes to modules.
    unsafe { core::slice::from_raw_parts(module.start as *const u8, module.size as usize) }
}

/// A guest image's bytes: a boot module (static) or a file read from the store.
pub(super) enum ImageBytes {
    /// A boot module's bytes.
    Module(&'static [u8]),
    /// A file read from the guest store.
    Owned(Vec<u8>),
}

impl ImageBytes {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            ImageBytes::Module(b) => b,
            ImageBytes::Owned(v) => v,
        }
    }
}

/// What to build a VM from.
pub(super) struct Blueprint<'a> {
    /// The kernel's name, for messages.
    pub(super) name: &'a str,
    pub(super) kernel: ImageBytes,
    pub(super) initrd: Option<ImageBytes>,
    /// The initrd's name: a Multiboot kernel gets it as module 0's string.
    pub(super) initrd_name: Option<&'a str>,
    pub(super) cmdline: Option<&'a str>,
    pub(super) mem_mib: Option<u32>,
    /// vCPUs (1 to `keel_vmm::devices::MAX_CPUS`).
    pub(super) cpus: u8,
    /// The paravirtual interface its CPUID offers.
    pub(super) paravirt: Paravirt,
    /// Test devices added to its PC ([`add_test_devices`]).
    pub(super) devices: &'a [VmDevice],
}

/// A VM just built, and where its disks and NICs went on its PCI bus.
pub(super) struct BuiltVm {
    pub(super) vm: Vm,
    pub(super) disks: Vec<AttachedDisk>,
    pub(super) nics: Vec<AttachedNic>,
}

/// Builds a VM (RAM, loader, ACPI tables, vCPU, devices) from `blueprint`, with `disks`
/// (opened and claimed by the caller) as virtio-blk PCI functions and then `nics` as
/// virtio-net ones, each on a new port of its switch.
pub(super) fn build_vm(
    system: &System,
    id: u32,
    label: String,
    bp: &Blueprint<'_>,
    disks: Vec<OpenedDisk>,
    nics: &[NicSpec],
) -> Result<BuiltVm, StartError> {
    let heap_before = mm::stats().heap_used;
    let host = vm_host(id);
    let image = bp.kernel.bytes();
    let kind = guest_kind(image);
    if kind == GuestKind::Flat && (bp.initrd.is_some() || bp.cmdline.is_some_and(|c| !c.is_empty()))
    {
        return Err(StartError::Load(alloc::format!(
            "'{}' is neither a Linux bzImage, a PVH ELF nor a Multiboot kernel: initrd= and \
             cmdline= apply to kernels only",
            bp.name
        )));
    }
    let default_mib = match kind {
        GuestKind::Flat => DEFAULT_MEM_MIB,
        GuestKind::BzImage | GuestKind::PvhElf | GuestKind::Multiboot => DEFAULT_LINUX_MEM_MIB,
    };
    let mem_mib = bp.mem_mib.unwrap_or(default_mib);
    if bp.cpus == 0 || bp.cpus > keel_vmm::devices::MAX_CPUS {
        return Err(StartError::BadCpuCount(bp.cpus));
    }
    if !(MEM_MIB_RANGE.0..=MEM_MIB_RANGE.1).contains(&mem_mib) || !mem_mib.is_multiple_of(2) {
        return Err(StartError::BadMemorySize(mem_mib));
    }
    if !disks.is_empty() && mem_mib > MAX_MEM_MIB_WITH_DISKS {
        return Err(StartError::Disk(DiskAttachError::TooMuchMemory {
            vm: label,
            mem_mib,
        }));
    }
    if !nics.is_empty() && mem_mib > MAX_MEM_MIB_WITH_DISKS {
        return Err(StartError::Nic(NicAttachError::TooMuchMemory {
            vm: label,
            mem_mib,
        }));
    }
    let memory = GuestMemory::new(host, u64::from(mem_mib) << 20).map_err(|e| {
        StartError::NoMemory(alloc::format!("cannot give the VM {mem_mib} MiB: {e}"))
    })?;
    let load_error = |e: &dyn core::fmt::Display| {
        StartError::Load(alloc::format!("cannot load '{}': {e}", bp.name))
    };
    let start = match kind {
        GuestKind::Flat => loader::flat::load(&memory, image).map_err(|e| load_error(&e))?,
        GuestKind::BzImage | GuestKind::PvhElf | GuestKind::Multiboot => {
            let acpi = keel_vmm::acpi_tables::AcpiConfig {
                cpus: bp.cpus,
                ..Default::default()
            };
            let tables = keel_vmm::acpi_tables::write(&memory, &acpi).map_err(|e| {
                StartError::Load(alloc::format!("cannot write the VM's ACPI tables: {e}"))
            })?;
            let initrd = bp.initrd.as_ref().map(ImageBytes::bytes);
            let cmdline = bp.cmdline.unwrap_or("");
            if kind == GuestKind::BzImage {
                loader::bzimage::load(&memory, image, initrd, cmdline, Some(tables.rsdp))
                    .map_err(|e| load_error(&e))?
                    .start
            } else if kind == GuestKind::Multiboot {
                // The RSDP is found by the guest's scan of 0xE0000..0xFFFFF, where the table
                // writer put it.
                let modules: Vec<loader::multiboot1::Module<'_>> = initrd
                    .map(|data| loader::multiboot1::Module {
                        data,
                        string: bp.initrd_name.unwrap_or(""),
                    })
                    .into_iter()
                    .collect();
                loader::multiboot1::load(&memory, image, &modules, cmdline)
                    .map_err(|e| load_error(&e))?
                    .start
            } else {
                loader::pvh::load(&memory, image, initrd, cmdline, Some(tables.rsdp))
                    .map_err(|e| load_error(&e))?
                    .start
            }
        }
    };
    let mut devices = Devices::pc(PlatformConfig {
        cpus: bp.cpus,
        ..platform_config()
    })
    .map_err(|e| StartError::Load(alloc::format!("{e}")))?;
    add_test_devices(&mut devices, bp.devices)?;
    let attached = disks::attach(&label, &mut devices, disks).map_err(StartError::Disk)?;
    let attached_nics =
        nics::attach(system, &label, &mut devices, nics).map_err(StartError::Nic)?;
    // The VM backend takes the loaded RAM and maps it; the VM creates its vCPUs through it
    // (the BSP now, each AP at its start-up IPI).
    let mut vm_backend = vm_backend(system, host, memory, bp.paravirt).map_err(StartError::Vcpu)?;
    if DIRTY_TRACKING_SELFTEST {
        let size = vm_backend.memory().size();
        vm_backend.write_protect(0, size).map_err(|e| {
            StartError::NoMemory(alloc::format!("cannot write-protect the VM's RAM: {e}"))
        })?;
    }
    let vm = Vm::new(id, label, vm_backend, start, devices).map_err(StartError::Vcpu)?;
    // What the VM's device models and the VMM's bookkeeping took from the heap; the bill
    // shows it next to the VM's frames.
    mm::set_vm_heap_at_start(
        host.account,
        mm::stats().heap_used.saturating_sub(heap_before),
    );
    Ok(BuiltVm {
        vm,
        disks: attached,
        nics: attached_nics,
    })
}

/// The VM backend over `memory` that every VM on this host gets: the host's virtualization,
/// its CPUID (with the host's TSC rate and the VM's paravirtual interface) and frames.
fn vm_backend(
    system: &System,
    host: &'static KernelHost,
    memory: GuestMemory,
    paravirt: Paravirt,
) -> Result<alloc::boxed::Box<dyn backend::VmBackend>, backend::BackendError> {
    let cpuid = CpuidPolicy::from_host(&crate::cpuinfo::HostCpu)
        .with_tsc_hz(crate::arch::timer::tsc_hz())
        .with_paravirt(match paravirt {
            Paravirt::Kvm => keel_vmm::cpuid::Paravirt::Kvm,
            Paravirt::None => keel_vmm::cpuid::Paravirt::None,
        });
    backend::create_vm_backend(&system.virtualization, host, memory, cpuid)
}

/// What a restore needs from this host: the platform and backend a new VM gets, with the
/// saved VM's disks (opened and claimed by the caller) and NICs (new ports with the saved
/// MACs) on its PCI bus.
pub(super) struct KernelRebuild<'a> {
    system: &'a System,
    label: &'a str,
    /// The disks until `platform` attaches them.
    disks: RefCell<Option<Vec<OpenedDisk>>>,
    /// The NICs `platform` attaches after the disks.
    nics: &'a [NicSpec],
    /// What the NICs' switch ports name their VM: the key commands and the API take.
    key: &'a str,
    /// The paravirtual interface the saved VM offered.
    paravirt: Paravirt,
    /// Frames for the restored VM, billed to its account.
    host: &'static KernelHost,
    /// Where they went, or why they could not be attached.
    attached: RefCell<Result<AttachedDevices, RebuildError>>,
}

/// Where a restored VM's disks and NICs went.
pub(super) type AttachedDevices = (Vec<AttachedDisk>, Vec<AttachedNic>);

/// Why a restore's devices could not be attached.
pub(super) enum RebuildError {
    /// The disks.
    Disk(DiskAttachError),
    /// The NICs.
    Nic(NicAttachError),
}

impl<'a> KernelRebuild<'a> {
    /// The rebuild of VM `label` (known to commands as `key`) with `disks` and `nics`,
    /// offering `paravirt` as the saved VM did.
    pub(super) fn new(
        system: &'a System,
        vm_id: u32,
        label: &'a str,
        key: &'a str,
        disks: Vec<OpenedDisk>,
        nics: &'a [NicSpec],
        paravirt: Paravirt,
    ) -> Self {
        KernelRebuild {
            system,
            label,
            paravirt,
            host: vm_host(vm_id),
            disks: RefCell::new(Some(disks)),
            nics,
            key,
            attached: RefCell::new(Ok((Vec::new(), Vec::new()))),
        }
    }

    /// Why the devices could not be attached (the restore then failed too: the saved device
    /// states name PCI functions the platform lacks), or where they went.
    pub(super) fn into_devices(self) -> Result<AttachedDevices, RebuildError> {
        self.attached.into_inner()
    }
}

impl keel_vmm::vm::Rebuild for KernelRebuild<'_> {
    fn platform(
        &self,
        description: &keel_vmm::vm::VmDescription,
    ) -> Result<Devices, keel_vmm::devices::PlatformError> {
        let mut devices = Devices::pc(PlatformConfig {
            cpus: description.cpus,
            ..platform_config()
        })?;
        let disks = self.disks.borrow_mut().take().unwrap_or_default();
        // The same disks and NICs, in the same order, as at the original start: they land
        // on the same PCI functions, where the saved device states expect them. This cannot
        // run out of slots or window; should it, the restore fails on the missing functions
        // and says why.
        *self.attached.borrow_mut() = disks::attach(self.label, &mut devices, disks)
            .map_err(RebuildError::Disk)
            .and_then(|disks| {
                nics::attach(self.system, self.key, &mut devices, self.nics)
                    .map(|nics| (disks, nics))
                    .map_err(RebuildError::Nic)
            });
        Ok(devices)
    }

    fn backend(
        &self,
        memory: GuestMemory,
    ) -> Result<alloc::boxed::Box<dyn backend::VmBackend>, backend::BackendError> {
        vm_backend(self.system, self.host, memory, self.paravirt)
    }

    fn host(&self) -> &'static dyn HostMemory {
        self.host
    }
}

/// Whether this build checks dirty tracking on the hardware: set
/// `KEEL_DIRTY_TRACKING_SELFTEST` when building the kernel and every VM starts with all of
/// its RAM write-protected, so the first write to each page exits as a dirty-page write that
/// the VM loop logs and lets through. A guest that runs as usual proves the NPF/EPT-violation
/// path on the real backend.
const DIRTY_TRACKING_SELFTEST: bool = option_env!("KEEL_DIRTY_TRACKING_SELFTEST").is_some();

/// Reads a guest store file for VM `vm`.
pub(super) fn store_file(vm: &str, what: &str, name: &str) -> Result<ImageBytes, StartError> {
    crate::store::read(name)
        .map(ImageBytes::Owned)
        .map_err(|e| {
            StartError::Store(alloc::format!(
                "VM {vm}: cannot read its {what} '{name}' from the guest store: {e}"
            ))
        })
}

/// The VM time line: the host TSC, in nanoseconds since boot.
pub struct TscClock;

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
pub(super) fn platform_config() -> PlatformConfig {
    PlatformConfig {
        tsc_hz: crate::arch::timer::tsc_hz(),
        wall_clock_unix_seconds: crate::arch::rtc::unix_seconds().unwrap_or(0),
        now_ns: TscClock.now().ns,
        cpus: 1,
    }
}

/// What a guest image is, by content: a bzImage by its header; an ELF with a PVH note as
/// PVH; an image with a Multiboot header as Multiboot; any other ELF as PVH (whose loader
/// says what is missing); anything else flat.
pub(super) fn guest_kind(image: &[u8]) -> GuestKind {
    let is_elf = image.starts_with(b"\x7fELF");
    let has_pvh_note = || {
        loader::pvh::program_headers(image)
            .and_then(|headers| loader::pvh::find_entry(image, &headers))
            .is_ok()
    };
    if loader::bzimage::is_bzimage(image) {
        GuestKind::BzImage
    } else if is_elf && has_pvh_note() {
        GuestKind::PvhElf
    } else if loader::multiboot1::is_multiboot1(image) {
        GuestKind::Multiboot
    } else if is_elf {
        GuestKind::PvhElf
    } else {
        GuestKind::Flat
    }
}

/// Adds the VM's test devices (`vms[].devices`, `vm run ... devices=`) to its PC: QEMU's
/// `isa-debug-exit` at 0xF4 and `pc-testdev`.
pub(super) fn add_test_devices(devices: &mut Devices, list: &[VmDevice]) -> Result<(), StartError> {
    use keel_vmm::devices::{Region, debug_exit, pc_testdev};
    for device in list {
        let added = match device {
            VmDevice::DebugExit => devices.add_device(
                debug_exit::DebugExit::new(),
                &[Region::Ports {
                    base: debug_exit::DEFAULT_PORT,
                    len: debug_exit::PORT_LEN,
                }],
            ),
            VmDevice::PcTestdev => {
                devices.add_device(pc_testdev::PcTestdev::new(), &pc_testdev::REGIONS)
            }
        };
        added.map_err(|e| {
            StartError::Load(alloc::format!("cannot add the test device {device}: {e}"))
        })?;
    }
    Ok(())
}
