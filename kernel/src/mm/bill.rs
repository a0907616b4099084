//! The memory bill: frames counted by what they are for, kept as atomic counters updated at
//! every allocation and free (never by walking structures), so `mem` and `GET /api/v1/system`
//! read it for the cost of a few loads.
//!
//! Host-wide uses ([`HostUse`]) are counted in [`Bill::host`]; frames a VM takes through the
//! VMM's `HostMemory` are counted in that VM's [`VmAccount`], by [`FrameUse`]. Per-CPU
//! virtualization pages (SVM host save area, VMXON region) outlive every VM, so they are a
//! host-wide use even though a VM's start allocates them.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use keel_vmm::host::FrameUse;

/// Host-wide uses of frames, outside any VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostUse {
    /// The kernel's own page tables.
    PageTables,
    /// The kernel heap's reservation (all of it, used or not).
    Heap,
    /// DMA memory of host device drivers (NIC rings and buffers, disk queues).
    DeviceDma,
    /// Per-CPU virtualization state shared by all VMs (SVM host save area, VMXON region).
    CpuVirtualization,
    /// Snapshot staging copies of guest memory (`vm save`).
    Snapshot,
}

impl HostUse {
    /// Every use, in table order.
    pub const ALL: [HostUse; 5] = [
        HostUse::PageTables,
        HostUse::Heap,
        HostUse::DeviceDma,
        HostUse::CpuVirtualization,
        HostUse::Snapshot,
    ];

    /// The name `mem` and the API show.
    pub fn name(self) -> &'static str {
        match self {
            HostUse::PageTables => "page_tables",
            HostUse::Heap => "heap_reserved",
            HostUse::DeviceDma => "device_dma",
            HostUse::CpuVirtualization => "cpu_virtualization",
            HostUse::Snapshot => "snapshot",
        }
    }
}

/// The name `mem` and the API show for a VM's use of frames.
pub fn vm_use_name(use_: FrameUse) -> &'static str {
    match use_ {
        FrameUse::GuestRam => "guest_ram",
        FrameUse::SecondLevelTables => "second_level_tables",
        FrameUse::VcpuControl => "vcpu_control",
        FrameUse::CpuVirtualization => "cpu_virtualization",
        FrameUse::Snapshot => "snapshot",
    }
}

/// VMs whose frames are counted one by one; more at once share the last account.
pub const VM_ACCOUNTS: usize = 16;

const VM_USES: usize = FrameUse::ALL.len();

/// One VM's frames by use, and the heap its start took.
pub struct VmAccount {
    /// The VM's number; 0 while the account is free.
    owner: AtomicU32,
    frames: [AtomicU64; VM_USES],
    /// Heap bytes in use after the VM was built minus before: its device models' buffers
    /// (virtio queues state, UART and console buffers, NIC ports) and the VMM's tables.
    heap_at_start: AtomicU64,
}

impl VmAccount {
    const fn new() -> VmAccount {
        VmAccount {
            owner: AtomicU32::new(0),
            frames: [const { AtomicU64::new(0) }; VM_USES],
            heap_at_start: AtomicU64::new(0),
        }
    }

    fn frame_total(&self) -> u64 {
        self.frames.iter().map(|f| f.load(Ordering::Relaxed)).sum()
    }
}

/// A VM's figures, as `mem` and the API report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmBill {
    /// The VM's number.
    pub vm_id: u32,
    /// Frames by [`FrameUse`], in [`FrameUse::ALL`] order.
    pub frames: [u64; VM_USES],
    /// Heap bytes its start took (see [`VmAccount`]).
    pub heap_at_start_bytes: u64,
}

impl VmBill {
    /// Frames billed to `use_`.
    pub fn frames_for(&self, use_: FrameUse) -> u64 {
        self.frames[use_.index()]
    }

    /// Frames beyond the guest's RAM.
    pub fn overhead_frames(&self) -> u64 {
        self.frames.iter().sum::<u64>() - self.frames_for(FrameUse::GuestRam)
    }
}

/// Every counter.
pub struct Bill {
    host: [AtomicU64; HostUse::ALL.len()],
    vms: [VmAccount; VM_ACCOUNTS],
}

impl Default for Bill {
    fn default() -> Self {
        Self::new()
    }
}

impl Bill {
    /// All counters at zero.
    pub const fn new() -> Bill {
        Bill {
            host: [const { AtomicU64::new(0) }; HostUse::ALL.len()],
            vms: [const { VmAccount::new() }; VM_ACCOUNTS],
        }
    }

    fn host_counter(&self, use_: HostUse) -> &AtomicU64 {
        // The array has one counter per `HostUse` in declaration order.
        &self.host[use_ as usize]
    }

    /// Counts `frames` more for `use_`.
    pub fn add_host(&self, use_: HostUse, frames: u64) {
        self.host_counter(use_).fetch_add(frames, Ordering::Relaxed);
    }

    /// Counts `frames` fewer for `use_` (saturating: a bad free never wraps the bill).
    pub fn sub_host(&self, use_: HostUse, frames: u64) {
        saturating_sub(self.host_counter(use_), frames);
    }

    /// Frames counted for `use_`.
    pub fn host_frames(&self, use_: HostUse) -> u64 {
        self.host_counter(use_).load(Ordering::Relaxed)
    }

    /// The account for VM `vm_id`: the one it already has (a restore rebuilding it), else a
    /// free one (no owner, or an owner whose frames are all back), else the shared last one.
    pub fn account_for(&self, vm_id: u32) -> usize {
        if let Some(i) = self
            .vms
            .iter()
            .position(|a| a.owner.load(Ordering::Relaxed) == vm_id)
        {
            return i;
        }
        for (i, a) in self.vms.iter().enumerate().take(VM_ACCOUNTS - 1) {
            let owner = a.owner.load(Ordering::Relaxed);
            if a.frame_total() == 0
                && a.owner
                    .compare_exchange(owner, vm_id, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                a.heap_at_start.store(0, Ordering::Relaxed);
                return i;
            }
        }
        VM_ACCOUNTS - 1
    }

    /// Records the heap VM account `account`'s start took.
    pub fn set_heap_at_start(&self, account: usize, bytes: u64) {
        if let Some(a) = self.vms.get(account) {
            a.heap_at_start.store(bytes, Ordering::Relaxed);
        }
    }

    /// Counts `frames` more for `use_` in VM account `account` (host-wide uses go to the host).
    pub fn add_vm(&self, account: usize, use_: FrameUse, frames: u64) {
        match host_use_of(use_) {
            Some(h) => self.add_host(h, frames),
            None => {
                if let Some(a) = self.vms.get(account) {
                    a.frames[use_.index()].fetch_add(frames, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts `frames` fewer for `use_` in VM account `account`.
    pub fn sub_vm(&self, account: usize, use_: FrameUse, frames: u64) {
        match host_use_of(use_) {
            Some(h) => self.sub_host(h, frames),
            None => {
                if let Some(a) = self.vms.get(account) {
                    saturating_sub(&a.frames[use_.index()], frames);
                }
            }
        }
    }

    /// The VMs holding frames now, by account.
    pub fn vms(&self) -> impl Iterator<Item = VmBill> + '_ {
        self.vms
            .iter()
            .filter(|a| a.frame_total() > 0)
            .map(|a| VmBill {
                vm_id: a.owner.load(Ordering::Relaxed),
                frames: core::array::from_fn(|i| a.frames[i].load(Ordering::Relaxed)),
                heap_at_start_bytes: a.heap_at_start.load(Ordering::Relaxed),
            })
    }

    /// Frames held by all VMs, every use.
    pub fn vm_frames(&self) -> u64 {
        self.vms.iter().map(VmAccount::frame_total).sum()
    }
}

/// The host-wide use a VMM frame use is billed to, if it is not the VM's own.
fn host_use_of(use_: FrameUse) -> Option<HostUse> {
    match use_ {
        FrameUse::CpuVirtualization => Some(HostUse::CpuVirtualization),
        FrameUse::Snapshot => Some(HostUse::Snapshot),
        FrameUse::GuestRam | FrameUse::SecondLevelTables | FrameUse::VcpuControl => None,
    }
}

fn saturating_sub(counter: &AtomicU64, frames: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(frames))
    });
}

/// The breakdown of used memory at one moment, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedBreakdown {
    /// The kernel image (text, rodata, data, bss) from its linker symbols.
    pub kernel_image: u64,
    /// Boot modules (guest images handed over by the boot loader).
    pub boot_modules: u64,
    /// Other RAM taken out at boot or after: the first MiB, the allocator's bitmap,
    /// firmware tables found later.
    pub firmware_and_bitmap: u64,
    /// Host-wide uses, in [`HostUse::ALL`] order.
    pub host: [u64; HostUse::ALL.len()],
    /// All VMs' frames.
    pub vms: u64,
}

impl UsedBreakdown {
    /// The sum of every category.
    pub fn total(&self) -> u64 {
        self.kernel_image
            + self.boot_modules
            + self.firmware_and_bitmap
            + self.host.iter().sum::<u64>()
            + self.vms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_frames_are_billed_to_their_account_and_return_on_free() {
        let bill = Bill::new();
        let a = bill.account_for(7);
        bill.add_vm(a, FrameUse::GuestRam, 512);
        bill.add_vm(a, FrameUse::SecondLevelTables, 3);
        bill.add_vm(a, FrameUse::VcpuControl, 4);
        let vms: Vec<_> = bill.vms().collect();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].vm_id, 7);
        assert_eq!(vms[0].frames_for(FrameUse::GuestRam), 512);
        assert_eq!(vms[0].overhead_frames(), 7);
        assert_eq!(bill.vm_frames(), 519);
        bill.sub_vm(a, FrameUse::GuestRam, 512);
        bill.sub_vm(a, FrameUse::SecondLevelTables, 3);
        bill.sub_vm(a, FrameUse::VcpuControl, 4);
        assert_eq!(bill.vms().count(), 0);
        assert_eq!(bill.vm_frames(), 0);
    }

    #[test]
    fn per_cpu_and_snapshot_frames_go_to_the_host_not_the_vm() {
        let bill = Bill::new();
        let a = bill.account_for(1);
        bill.add_vm(a, FrameUse::CpuVirtualization, 2);
        bill.add_vm(a, FrameUse::Snapshot, 512);
        assert_eq!(bill.vm_frames(), 0);
        assert_eq!(bill.host_frames(HostUse::CpuVirtualization), 2);
        assert_eq!(bill.host_frames(HostUse::Snapshot), 512);
        bill.sub_vm(a, FrameUse::Snapshot, 512);
        assert_eq!(bill.host_frames(HostUse::Snapshot), 0);
    }

    #[test]
    fn an_account_is_reused_once_its_frames_are_back_and_kept_while_held() {
        let bill = Bill::new();
        let a = bill.account_for(1);
        bill.add_vm(a, FrameUse::GuestRam, 1);
        let b = bill.account_for(2);
        assert_ne!(a, b, "a VM holding frames keeps its account");
        assert_eq!(bill.account_for(1), a, "a rebuild finds its own account");
        bill.sub_vm(a, FrameUse::GuestRam, 1);
        bill.add_vm(b, FrameUse::GuestRam, 1);
        let c = bill.account_for(3);
        assert_eq!(c, a, "the freed account is taken again");
    }

    #[test]
    fn too_many_vms_share_the_last_account_and_a_bad_free_never_wraps() {
        let bill = Bill::new();
        for id in 1..=VM_ACCOUNTS as u32 + 3 {
            let a = bill.account_for(id);
            bill.add_vm(a, FrameUse::GuestRam, 1);
        }
        assert_eq!(bill.vm_frames(), VM_ACCOUNTS as u64 + 3);
        assert_eq!(bill.vms().count(), VM_ACCOUNTS);
        bill.sub_host(HostUse::Heap, 5);
        assert_eq!(bill.host_frames(HostUse::Heap), 0);
    }

    #[test]
    fn the_breakdown_total_sums_every_category() {
        let b = UsedBreakdown {
            kernel_image: 1,
            boot_modules: 2,
            firmware_and_bitmap: 4,
            host: [8, 16, 32, 64, 128],
            vms: 256,
        };
        assert_eq!(b.total(), 511);
    }
}
