//! GDT and TSS with interrupt stacks (IST) for faults that must not use the current stack.
//!
//! A double fault, NMI or machine check switches to its own stack, so a kernel stack overflow
//! (which faults on the guard page and then cannot push the page-fault frame) ends in a
//! readable double-fault report instead of a triple fault.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (1-based in the IDT, 0-based in the TSS array) for double faults.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST slot for NMIs.
pub const IST_NMI: u16 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u16 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_SIZE]) }; 3];

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

/// Kernel code selector (also used by the IDT).
pub fn kernel_code_selector() -> u16 {
    GDT.get().map_or(0x08, |(_, s)| s.code.0)
}

/// Loads the GDT and TSS on the boot CPU.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (slot, ist) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
            .into_iter()
            .enumerate()
        {
            // Only the address is taken; the stacks are used by the CPU alone.
            let base = (&raw const IST_STACKS) as u64 + (slot * IST_STACK_SIZE) as u64;
            tss.interrupt_stack_table[usize::from(ist - 1)] =
                VirtAddr::new(base + IST_STACK_SIZE as u64);
        }
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives in a static forever; the TSS
    // descriptor points at a static TSS whose IST stacks are static.
    unsafe {
        CS::set_reg(selectors.code);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        SS::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}

/// The IST stack range for `ist` (1-based), to tell which stack a fault ran on.
pub fn ist_stack_range(ist: u16) -> (u64, u64) {
    let slot = usize::from(ist.clamp(1, 3) - 1);
    let base = (&raw const IST_STACKS) as u64 + (slot * IST_STACK_SIZE) as u64;
    (base, base + IST_STACK_SIZE as u64)
}

/// An application processor's GDT and TSS (its own IST stacks), built by the boot CPU
/// before the start and leaked: a CPU's descriptor tables live as long as it runs.
pub struct CpuDescriptors {
    gdt: GlobalDescriptorTable,
    selectors: Selectors,
}

/// Builds the GDT and TSS for an application processor whose IST stacks end at `ist_tops`
/// (double fault, NMI, machine check). Selectors match the boot CPU's, so the shared IDT's
/// code selector is valid on every CPU.
pub fn build_for_application_processor(ist_tops: [u64; 3]) -> &'static CpuDescriptors {
    let mut tss = TaskStateSegment::new();
    for (slot, top) in ist_tops.into_iter().enumerate() {
        tss.interrupt_stack_table[slot] = VirtAddr::new(top);
    }
    let tss: &'static TaskStateSegment = alloc::boxed::Box::leak(alloc::boxed::Box::new(tss));
    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss = gdt.append(Descriptor::tss_segment(tss));
    alloc::boxed::Box::leak(alloc::boxed::Box::new(CpuDescriptors {
        gdt,
        selectors: Selectors { code, data, tss },
    }))
}

/// Loads an application processor's GDT and TSS on the calling CPU.
pub fn load_application_processor(descriptors: &'static CpuDescriptors) {
    descriptors.gdt.load();
    let selectors = &descriptors.selectors;
    // SAFETY: the selectors index the GDT just loaded, leaked so it lives forever; its TSS
    // descriptor points at a leaked TSS whose IST stacks belong to this CPU alone.
    unsafe {
        CS::set_reg(selectors.code);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        SS::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}
