//! The memory bill for `mem` and `GET /api/v1/system`: used RAM by use, and each VM's RAM
//! and overhead. [`memory_info`] turns the kernel's counters (`crate::mm::bill`) into the
//! API's [`MemoryInfo`]; [`write_report`] prints that for the console. Both are pure and
//! host-tested; [`gather`] reads the live counters.

use alloc::string::String;
use core::fmt::Write;

use keel_netstack::api::{MemoryByUse, MemoryInfo, VmMemory, VmMemoryByUse};
use keel_vmm::host::{FRAME_SIZE, FrameUse};

use crate::mm::bill::{HostUse, UsedBreakdown, VmBill};

/// The allocator's figures at one moment, as `crate::mm::stats` gives them.
#[derive(Clone, Copy, Debug)]
pub struct Totals {
    /// All usable RAM (the allocator's pool and the boot reservations).
    pub usable_bytes: u64,
    /// RAM not allocated.
    pub free_bytes: u64,
    /// Heap in use.
    pub heap_used_bytes: u64,
    /// Used RAM by use.
    pub used: UsedBreakdown,
}

/// The API's memory figures from the counters; `name_of` names a VM by its number.
pub fn memory_info(
    totals: &Totals,
    vms: &[VmBill],
    name_of: impl Fn(u32) -> Option<String>,
) -> MemoryInfo {
    // `host` holds one figure per `HostUse`, in declaration order.
    let host = |u: HostUse| totals.used.host[u as usize];
    MemoryInfo {
        total_bytes: totals.usable_bytes,
        free_bytes: totals.free_bytes,
        by_use: MemoryByUse {
            kernel_image_bytes: totals.used.kernel_image,
            boot_modules_bytes: totals.used.boot_modules,
            firmware_and_bitmap_bytes: totals.used.firmware_and_bitmap,
            page_tables_bytes: host(HostUse::PageTables),
            heap_reserved_bytes: host(HostUse::Heap),
            heap_used_bytes: totals.heap_used_bytes,
            device_dma_bytes: host(HostUse::DeviceDma),
            cpu_virtualization_bytes: host(HostUse::CpuVirtualization),
            snapshot_bytes: host(HostUse::Snapshot),
            vms_bytes: totals.used.vms,
        },
        vms: vms
            .iter()
            .map(|b| {
                let by_use = VmMemoryByUse {
                    second_level_tables_bytes: b.frames_for(FrameUse::SecondLevelTables)
                        * FRAME_SIZE,
                    vcpu_control_bytes: b.frames_for(FrameUse::VcpuControl) * FRAME_SIZE,
                    device_buffers_bytes: b.heap_at_start_bytes,
                };
                VmMemory {
                    name: name_of(b.vm_id).unwrap_or_else(|| alloc::format!("{}", b.vm_id)),
                    guest_ram_bytes: b.frames_for(FrameUse::GuestRam) * FRAME_SIZE,
                    overhead_bytes: by_use.second_level_tables_bytes
                        + by_use.vcpu_control_bytes
                        + by_use.device_buffers_bytes,
                    by_use,
                }
            })
            .collect(),
    }
}

/// The sum of the parts of used RAM in `by_use` (`heap_used_bytes` is inside the heap's
/// reservation, not a part).
pub fn parts_sum(by_use: &MemoryByUse) -> u64 {
    by_use.kernel_image_bytes
        + by_use.boot_modules_bytes
        + by_use.firmware_and_bitmap_bytes
        + by_use.page_tables_bytes
        + by_use.heap_reserved_bytes
        + by_use.device_dma_bytes
        + by_use.cpu_virtualization_bytes
        + by_use.snapshot_bytes
        + by_use.vms_bytes
}

/// Host memory in use by Keel itself: used RAM minus the VMs and the free part of the heap.
pub fn host_in_use(info: &MemoryInfo) -> u64 {
    let b = &info.by_use;
    (info.total_bytes - info.free_bytes)
        .saturating_sub(b.vms_bytes)
        .saturating_sub(b.heap_reserved_bytes.saturating_sub(b.heap_used_bytes))
}

/// Writes `mem`: the totals and heap lines (their format is relied on), then used RAM by
/// use in KiB, the sum of the parts, Keel's own use, and one line per VM.
pub fn write_report(out: &mut String, info: &MemoryInfo) {
    let mib = |b: u64| b / (1024 * 1024);
    let kib = |b: u64| b / 1024;
    let b = &info.by_use;
    let used = info.total_bytes - info.free_bytes;
    let _ = writeln!(out, "  total: {} MiB", mib(info.total_bytes));
    let _ = writeln!(out, "  used:  {} MiB", mib(used));
    let _ = writeln!(out, "  free:  {} MiB", mib(info.free_bytes));
    let _ = writeln!(
        out,
        "  heap:  {} KiB, {} KiB used, {} KiB free",
        kib(b.heap_reserved_bytes),
        kib(b.heap_used_bytes),
        kib(b.heap_reserved_bytes.saturating_sub(b.heap_used_bytes))
    );
    let _ = writeln!(out, "  used by (KiB):");
    for (name, bytes) in [
        ("kernel image", b.kernel_image_bytes),
        ("boot modules", b.boot_modules_bytes),
        ("firmware+bitmap", b.firmware_and_bitmap_bytes),
        ("page tables", b.page_tables_bytes),
        ("heap reserved", b.heap_reserved_bytes),
        ("device dma", b.device_dma_bytes),
        ("cpu virt", b.cpu_virtualization_bytes),
        ("snapshots", b.snapshot_bytes),
        ("vms", b.vms_bytes),
    ] {
        let _ = writeln!(out, "    {name:<16} {:>9}", kib(bytes));
    }
    let _ = writeln!(
        out,
        "    {:<16} {:>9}  (used: {})",
        "sum",
        kib(parts_sum(b)),
        kib(used)
    );
    let _ = writeln!(
        out,
        "  keel in use: {} KiB (used minus VMs and free heap)",
        kib(host_in_use(info))
    );
    if info.vms.is_empty() {
        let _ = writeln!(out, "  vms: none holding memory");
    }
    for vm in &info.vms {
        let _ = writeln!(
            out,
            "  vm {}: ram {} KiB, overhead {} KiB (npt/ept {} KiB, vcpu {} KiB, devices {} KiB)",
            vm.name,
            kib(vm.guest_ram_bytes),
            kib(vm.overhead_bytes),
            kib(vm.by_use.second_level_tables_bytes),
            kib(vm.by_use.vcpu_control_bytes),
            kib(vm.by_use.device_buffers_bytes),
        );
    }
}

/// The live figures, VMs named by `vms`.
#[cfg(target_os = "none")]
pub fn gather(vms: &crate::vms::VmManager) -> MemoryInfo {
    let s = crate::mm::stats();
    let totals = Totals {
        usable_bytes: s.ram_bytes,
        free_bytes: s.free_bytes,
        heap_used_bytes: s.heap_used,
        used: s.used,
    };
    let bills: alloc::vec::Vec<VmBill> = crate::mm::vm_bills().collect();
    memory_info(&totals, &bills, |id| {
        vms.views().find(|v| v.number == id).map(|v| v.key)
    })
}

/// Prints `mem`.
#[cfg(target_os = "none")]
pub fn show(vms: &crate::vms::VmManager) {
    let mut out = String::new();
    write_report(&mut out, &gather(vms));
    crate::kprint!("{out}");
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn totals() -> Totals {
        let used = UsedBreakdown {
            kernel_image: 1 << 20,
            boot_modules: 3 << 20,
            firmware_and_bitmap: 1 << 20,
            host: [64 << 10, 4 << 20, 256 << 10, 8 << 10, 0],
            vms: (64 << 20) + (148 << 10),
        };
        Totals {
            usable_bytes: 1 << 30,
            free_bytes: (1 << 30) - used.total(),
            heap_used_bytes: 1536 << 10,
            used,
        }
    }

    fn bill() -> VmBill {
        let mut frames = [0; FrameUse::ALL.len()];
        frames[FrameUse::GuestRam.index()] = 64 * 256;
        frames[FrameUse::SecondLevelTables.index()] = 33;
        frames[FrameUse::VcpuControl.index()] = 4;
        VmBill {
            vm_id: 3,
            frames,
            heap_at_start_bytes: 40 << 10,
        }
    }

    #[test]
    fn the_parts_sum_to_used_and_vms_get_their_names_and_overhead() {
        let info = memory_info(&totals(), &[bill()], |id| {
            (id == 3).then(|| String::from("web"))
        });
        assert_eq!(parts_sum(&info.by_use), info.total_bytes - info.free_bytes);
        assert_eq!(info.by_use.page_tables_bytes, 64 << 10);
        assert_eq!(info.by_use.heap_reserved_bytes, 4 << 20);
        assert_eq!(info.by_use.device_dma_bytes, 256 << 10);
        let vm = &info.vms[0];
        assert_eq!(vm.name, "web");
        assert_eq!(vm.guest_ram_bytes, 64 << 20);
        assert_eq!(vm.by_use.second_level_tables_bytes, 33 * 4096);
        assert_eq!(vm.by_use.vcpu_control_bytes, 4 * 4096);
        assert_eq!(vm.overhead_bytes, 37 * 4096 + (40 << 10));
        // Keel's own: used minus the VMs and the 2.5 MiB of free heap.
        assert_eq!(
            host_in_use(&info),
            (1 << 20) + (3 << 20) + (1 << 20) + (64 << 10) + (1536 << 10) + (256 << 10) + (8 << 10)
        );
    }

    #[test]
    fn an_unnamed_vm_is_shown_by_number() {
        let info = memory_info(&totals(), &[bill()], |_| None);
        assert_eq!(info.vms[0].name, "3");
    }

    #[test]
    fn the_report_keeps_the_totals_lines_and_lists_every_use_and_vm() {
        let info = memory_info(&totals(), &[bill()], |_| Some(String::from("web")));
        let mut out = String::new();
        write_report(&mut out, &info);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  total: 1024 MiB");
        assert!(lines[3].starts_with("  heap:  4096 KiB, 1536 KiB used, 2560 KiB free"));
        assert!(out.contains("    page tables             64\n"), "{out}");
        assert!(out.contains("    vms                  65684\n"), "{out}");
        let used_kib = (info.total_bytes - info.free_bytes) / 1024;
        assert!(
            out.contains(&alloc::format!(
                "    sum              {used_kib:>9}  (used: {used_kib})"
            )),
            "{out}"
        );
        assert!(
            out.contains(
                "  vm web: ram 65536 KiB, overhead 188 KiB (npt/ept 132 KiB, vcpu 16 KiB, \
                 devices 40 KiB)"
            ),
            "{out}"
        );
        let mut empty = String::new();
        write_report(&mut empty, &memory_info(&totals(), &[], |_| None));
        assert!(empty.contains("  vms: none holding memory"));
    }
}
