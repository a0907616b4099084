//! The machine part of SMP: the start-up code, INIT–SIPI–SIPI, the application processors'
//! Rust entry, per-CPU data through the GS base, and the kick IPI.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::plan::MAX_CPUS;
use super::plan::{self, StartFailure};
use super::trampoline::{self, StartParams, field};
use super::{CpuState, CpuStatus, CpuVirtualization};
use crate::arch::timer::Deadline;
use crate::arch::{apic, cpu, gdt, idt, timer};

/// Kernel stack of an application processor (a guard page sits below it).
const AP_STACK_BYTES: usize = 128 * 1024;
/// Each of its three IST stacks.
const AP_IST_BYTES: usize = 16 * 1024;
/// How long a CPU has to reach the kernel after the second start-up IPI.
const ANSWER_TIMEOUT_MS: u64 = 1000;
/// How long it then has to finish its set-up (descriptor tables, APIC, virtualization).
const SETUP_TIMEOUT_MS: u64 = 2000;
const MSR_GS_BASE: u32 = 0xc000_0101;

/// Progress an application processor reports through [`PerCpu::stage`].
const STAGE_NONE: u8 = 0;
const STAGE_ENTERED: u8 = 1;
const STAGE_READY: u8 = 2;

/// Per-CPU data; the GS base points at the CPU's entry, so `gs:[0]` is its index.
#[repr(C)]
struct PerCpu {
    /// Kernel index (first field: read through `gs:[0]`).
    index: AtomicU64,
    apic_id: AtomicU32,
    stage: AtomicU8,
    /// Whether its virtualization extension is on.
    virtualization_on: AtomicBool,
    ticks: AtomicU64,
    /// The CPU's GDT and TSS, set by the boot CPU before the start.
    descriptors: AtomicPtr<gdt::CpuDescriptors>,
    /// Why virtualization is off on this CPU, written by the CPU itself.
    virtualization_error: spin::Mutex<Option<String>>,
}

static PER_CPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        index: AtomicU64::new(0),
        apic_id: AtomicU32::new(0),
        stage: AtomicU8::new(STAGE_NONE),
        virtualization_on: AtomicBool::new(false),
        ticks: AtomicU64::new(0),
        descriptors: AtomicPtr::new(core::ptr::null_mut()),
        virtualization_error: spin::Mutex::new(None),
    }
}; MAX_CPUS];

/// The boot CPU's GS base is set (before that, `current()` is 0 without reading GS).
static GS_READY: AtomicBool = AtomicBool::new(false);
static ONLINE: AtomicU32 = AtomicU32::new(1);
static STATUS: spin::Mutex<Vec<CpuStatus>> = spin::Mutex::new(Vec::new());
/// What the boot CPU's virtualization is (it turns it on lazily with the first VM).
static BOOT_VIRTUALIZATION: spin::Mutex<Option<CpuVirtualization>> = spin::Mutex::new(None);
/// The function every AP runs once [`start_ap_work`] is called.
static AP_WORK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

core::arch::global_asm!(
    r#"
    .section .rodata.keel_ap_trampoline, "a"
    .code16
    .global keel_ap_start
keel_ap_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    movzwl %ax, %ebx
    shll $4, %ebx
    lgdtl ({params} + {gdtr})
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *({params} + {pm32})

    .code32
    .global keel_ap_pm32
keel_ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl ({params} + {cr3})(%ebx), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax
    movl %eax, %cr0
    ljmpl *({params} + {lm64})(%ebx)

    .code64
    .global keel_ap_lm64
keel_ap_lm64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %ecx
    xorl %eax, %eax
    lock cmpxchgl %ecx, ({params} + {claim})(%rbx)
    jne 2f
    movq ({params} + {stack})(%rbx), %rsp
    movq ({params} + {index})(%rbx), %rdi
    movq ({params} + {entry})(%rbx), %rax
    xorl %ebp, %ebp
    callq *%rax
2:
    cli
    hlt
    jmp 2b
    .global keel_ap_end
keel_ap_end:
    .text
"#,
    params = const trampoline::PARAMS_OFFSET,
    gdtr = const field::GDTR,
    pm32 = const field::PM32_JUMP,
    lm64 = const field::LM64_JUMP,
    cr3 = const field::CR3,
    claim = const field::CLAIM,
    stack = const field::STACK_TOP,
    index = const field::CPU_INDEX,
    entry = const field::ENTRY,
    options(att_syntax)
);

unsafe extern "C" {
    static keel_ap_start: u8;
    static keel_ap_pm32: u8;
    static keel_ap_lm64: u8;
    static keel_ap_end: u8;
}

/// The start-up code as bytes, and the offsets of its 32- and 64-bit parts.
fn startup_code() -> (&'static [u8], u32, u32) {
    let start = core::ptr::addr_of!(keel_ap_start) as usize;
    let pm32 = core::ptr::addr_of!(keel_ap_pm32) as usize;
    let lm64 = core::ptr::addr_of!(keel_ap_lm64) as usize;
    let end = core::ptr::addr_of!(keel_ap_end) as usize;
    // SAFETY: the four symbols delimit one assembled block in .rodata, in this order.
    let code = unsafe { core::slice::from_raw_parts(start as *const u8, end - start) };
    (code, (pm32 - start) as u32, (lm64 - start) as u32)
}

fn set_gs_base(entry: &'static PerCpu) {
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; the kernel never uses GS otherwise,
    // and the entry is a static that lives forever.
    unsafe { cpu::wrmsr(MSR_GS_BASE, entry as *const PerCpu as u64) };
}

/// Points the boot CPU's GS base at its per-CPU entry (index 0). Call once, early.
pub fn init_boot_cpu() {
    let entry = &PER_CPU[0];
    entry.index.store(0, Ordering::Relaxed);
    entry.stage.store(STAGE_READY, Ordering::Relaxed);
    set_gs_base(entry);
    GS_READY.store(true, Ordering::Release);
}

/// This CPU's kernel index (0 = boot CPU): one load through the GS base.
pub fn current() -> usize {
    if !GS_READY.load(Ordering::Relaxed) {
        return 0;
    }
    let index: u64;
    // SAFETY: the GS base of every CPU that runs kernel code points at its `PerCpu` entry
    // (the boot CPU's from `init_boot_cpu`, an AP's first thing in `ap_entry`), whose first
    // field is the index.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) index, options(nostack, readonly, preserves_flags))
    };
    index as usize
}

/// CPUs that came up, the boot CPU included (their indices are `0..cpu_count()`).
pub fn cpu_count() -> usize {
    ONLINE.load(Ordering::Acquire) as usize
}

/// Every CPU the firmware listed, with its state and virtualization.
pub fn cpus() -> Vec<CpuStatus> {
    let status = STATUS.lock().clone();
    if status.is_empty() {
        // Before `start_application_processors`: the boot CPU alone.
        return alloc::vec![CpuStatus {
            index: 0,
            apic_id: apic::id(),
            state: CpuState::Online,
            virtualization: boot_virtualization(),
        }];
    }
    status
}

/// Timer ticks CPU `cpu` has taken (application processors count their own).
pub fn ticks(cpu: usize) -> u64 {
    if cpu == 0 {
        return timer::ticks();
    }
    PER_CPU
        .get(cpu)
        .map_or(0, |p| p.ticks.load(Ordering::Relaxed))
}

/// Counts a tick on application processor `cpu` (from the timer handler).
pub fn count_tick(cpu: usize) {
    if let Some(p) = PER_CPU.get(cpu) {
        p.ticks.fetch_add(1, Ordering::Relaxed);
    }
}

fn boot_virtualization() -> CpuVirtualization {
    BOOT_VIRTUALIZATION
        .lock()
        .clone()
        .unwrap_or_else(|| CpuVirtualization::Off(String::from("not probed yet")))
}

/// Whether CPU `cpu` can run guests: its virtualization extension is on (application
/// processors) or usable and turned on with the first VM (the boot CPU).
pub fn virtualization_ready(cpu: usize) -> bool {
    if cpu == 0 {
        return matches!(boot_virtualization(), CpuVirtualization::On(_));
    }
    cpu < cpu_count() && PER_CPU[cpu].virtualization_on.load(Ordering::Acquire)
}

/// Sends CPU `cpu` the kick IPI: a CPU in a guest exits, a halted one wakes. Does nothing
/// for the calling CPU or a CPU that is not online.
pub fn kick(cpu: usize) {
    if cpu >= cpu_count() || cpu == current() {
        return;
    }
    let apic_id = PER_CPU[cpu].apic_id.load(Ordering::Relaxed);
    let _ = apic::send_ipi(apic_id, apic::ICR_FIXED | u32::from(idt::KICK_VECTOR));
}

/// Gives every online application processor its work: each calls `entry(index)` (never
/// returning). Call once, after boot; until then the APs halt with interrupts on.
pub fn start_ap_work(entry: fn(cpu: usize) -> !) {
    let previous = AP_WORK.swap(entry as *mut (), Ordering::AcqRel);
    if !previous.is_null() {
        return;
    }
    for cpu in 1..cpu_count() {
        kick(cpu);
    }
}

/// The boot log line (`cpus: N online (…)`).
pub fn boot_log_line() -> String {
    super::summary(&cpus())
}

/// What the boot CPU passes an AP for its virtualization set-up.
pub type EnableVirtualization = fn() -> Result<(), String>;

static ENABLE_VIRTUALIZATION: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Starts every other CPU the MADT lists (plus `fake_apic_id`, the test hook's CPU that
/// does not exist). `usable_low` is the boot memory map's usable RAM (for the start-up
/// page), `boot_virtualization` the boot CPU's virtualization as `cpus` shows it, and
/// `enable_virtualization` what each AP runs to turn its own extension on (with the
/// extension's short name, `AMD-V` or `VT-x`).
pub fn start_application_processors(
    madt: &[crate::acpi::Cpu],
    usable: &[core::ops::Range<u64>],
    fake_apic_id: Option<u32>,
    boot_virtualization: CpuVirtualization,
    enable_virtualization: Option<(&'static str, EnableVirtualization)>,
) {
    *BOOT_VIRTUALIZATION.lock() = Some(boot_virtualization.clone());
    if let Some((kind, f)) = enable_virtualization {
        *VIRTUALIZATION_KIND.lock() = kind;
        ENABLE_VIRTUALIZATION.store(f as *mut (), Ordering::Release);
    }
    let boot_apic_id = apic::id();
    PER_CPU[0].apic_id.store(boot_apic_id, Ordering::Relaxed);
    let madt_ids: Vec<u32> = madt.iter().map(|c| c.apic_id).collect();
    let planned = plan::plan_cpus(
        &madt_ids,
        boot_apic_id,
        apic::is_x2apic(),
        fake_apic_id,
        MAX_CPUS,
    );
    let mut online = alloc::vec![CpuStatus {
        index: 0,
        apic_id: boot_apic_id,
        state: CpuState::Online,
        virtualization: boot_virtualization,
    }];
    let mut failed: Vec<(u32, StartFailure)> = Vec::new();
    if planned.len() > 1 {
        let page = plan::pick_trampoline_page(usable);
        let cr3 = crate::mm::kernel_page_table_root();
        let setup = match (page, cr3) {
            (None, _) => Err(StartFailure::NoTrampolinePage),
            (_, Some(cr3)) if cr3 >= 1 << 32 => Err(StartFailure::PageTablesAbove4GiB),
            (Some(page), Some(cr3)) => Ok((page, cr3 as u32)),
            (Some(_), None) => Err(StartFailure::PageTablesAbove4GiB),
        };
        match setup {
            Ok((page, cr3)) => {
                crate::mm::set_low_page_executable(page, true);
                let mut spare: Option<ApStacks> = None;
                let mut hung = false;
                for p in &planned[1..] {
                    if let Err(reason) = p.action {
                        failed.push((p.apic_id, reason));
                        continue;
                    }
                    if hung {
                        failed.push((p.apic_id, StartFailure::AfterHungCpu));
                        continue;
                    }
                    let index = online.len();
                    match start_one(index, p.apic_id, page, cr3, &mut spare) {
                        Ok(virtualization) => online.push(CpuStatus {
                            index,
                            apic_id: p.apic_id,
                            state: CpuState::Online,
                            virtualization,
                        }),
                        Err(reason) => {
                            hung = matches!(reason, StartFailure::SetupTimeout { .. });
                            failed.push((p.apic_id, reason));
                        }
                    }
                }
                crate::mm::set_low_page_executable(page, false);
            }
            Err(reason) => failed.extend(planned[1..].iter().map(|p| (p.apic_id, reason))),
        }
    }
    let mut status = online;
    for (apic_id, reason) in failed {
        status.push(CpuStatus {
            index: status.len(),
            apic_id,
            state: CpuState::Failed(reason),
            virtualization: CpuVirtualization::Off(String::from("CPU not running")),
        });
    }
    *STATUS.lock() = status;
}

/// An AP's stacks, prepared before its start; kept for the next CPU if this one fails
/// (a late arrival finds its start closed and never touches them).
struct ApStacks {
    stack_top: u64,
    descriptors: &'static gdt::CpuDescriptors,
}

fn prepare_stacks() -> Result<ApStacks, StartFailure> {
    let stack_top =
        crate::mm::alloc_guarded_stack(AP_STACK_BYTES).ok_or(StartFailure::OutOfMemory)?;
    let mut ist_tops = [0u64; 3];
    for top in &mut ist_tops {
        *top = crate::mm::alloc_guarded_stack(AP_IST_BYTES).ok_or(StartFailure::OutOfMemory)?;
    }
    Ok(ApStacks {
        stack_top,
        descriptors: gdt::build_for_application_processor(ist_tops),
    })
}

/// Starts one CPU as kernel index `index`; on success returns its virtualization.
fn start_one(
    index: usize,
    apic_id: u32,
    page: u64,
    cr3: u32,
    spare: &mut Option<ApStacks>,
) -> Result<CpuVirtualization, StartFailure> {
    let stacks = match spare.take() {
        Some(s) => s,
        None => prepare_stacks()?,
    };
    let entry = &PER_CPU[index];
    entry.index.store(index as u64, Ordering::Relaxed);
    entry.apic_id.store(apic_id, Ordering::Relaxed);
    entry.stage.store(STAGE_NONE, Ordering::Relaxed);
    entry.descriptors.store(
        stacks.descriptors as *const gdt::CpuDescriptors as *mut _,
        Ordering::Relaxed,
    );
    let (code, pm32_offset, lm64_offset) = startup_code();
    let params = StartParams {
        page: page as u32,
        pm32_offset,
        lm64_offset,
        cr3,
        stack_top: stacks.stack_top,
        entry: ap_entry as *const () as u64,
        cpu_index: index as u64,
    };
    // SAFETY: `page` is a usable RAM page below 1 MiB that the frame allocator never hands
    // out (the first MiB is reserved) and only this function writes; identity-mapped.
    let page_bytes = unsafe { &mut *(page as *mut [u8; 4096]) };
    if trampoline::prepare(page_bytes, code, &params).is_err() {
        *spare = Some(stacks);
        return Err(StartFailure::NoTrampolinePage);
    }
    // SAFETY: the claim word is a 4-byte-aligned u32 inside the page written above; the AP
    // races for it with `lock cmpxchg`, so it is only accessed atomically from now on.
    let claim = unsafe {
        AtomicU32::from_ptr((page as usize + trampoline::PARAMS_OFFSET + field::CLAIM) as *mut u32)
    };
    // Make the page's contents visible before the IPIs.
    core::sync::atomic::fence(Ordering::SeqCst);

    let vector = u32::from(plan::sipi_vector(page));
    if !apic::send_ipi(apic_id, apic::ICR_INIT) {
        *spare = Some(stacks);
        return Err(StartFailure::IpiNotDelivered);
    }
    Deadline::after_ms(10).wait();
    for _ in 0..2 {
        if entry.stage.load(Ordering::Acquire) != STAGE_NONE {
            break;
        }
        if !apic::send_ipi(apic_id, apic::ICR_STARTUP | vector) {
            *spare = Some(stacks);
            return Err(StartFailure::IpiNotDelivered);
        }
        Deadline::after_us(200).wait();
    }
    let answered = Deadline::after_ms(ANSWER_TIMEOUT_MS);
    while entry.stage.load(Ordering::Acquire) == STAGE_NONE && !answered.expired() {
        core::hint::spin_loop();
    }
    if entry.stage.load(Ordering::Acquire) == STAGE_NONE {
        // Close the start unless the CPU took it in the meantime.
        let closed = claim.compare_exchange(
            trampoline::CLAIM_OPEN,
            trampoline::CLAIM_CLOSED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if closed.is_ok() {
            *spare = Some(stacks);
            return Err(StartFailure::NoAnswer {
                waited_ms: ANSWER_TIMEOUT_MS + 10,
            });
        }
    }
    let ready = Deadline::after_ms(SETUP_TIMEOUT_MS);
    while entry.stage.load(Ordering::Acquire) != STAGE_READY {
        if ready.expired() {
            // It runs on these stacks: they are its, not a spare.
            return Err(StartFailure::SetupTimeout {
                waited_ms: SETUP_TIMEOUT_MS,
            });
        }
        core::hint::spin_loop();
    }
    ONLINE.store(index as u32 + 1, Ordering::Release);
    Ok(match entry.virtualization_error.lock().clone() {
        Some(reason) => CpuVirtualization::Off(reason),
        None if entry.virtualization_on.load(Ordering::Acquire) => {
            CpuVirtualization::On(virtualization_kind())
        }
        None => CpuVirtualization::Off(String::from("no usable extension on the host")),
    })
}

static VIRTUALIZATION_KIND: spin::Mutex<&'static str> = spin::Mutex::new("");

fn virtualization_kind() -> &'static str {
    *VIRTUALIZATION_KIND.lock()
}

/// The application processors' Rust entry, on their own stack, interrupts off.
extern "C" fn ap_entry(index: u64) -> ! {
    let index = index as usize;
    let entry = &PER_CPU[index];
    set_gs_base(entry);
    entry.stage.store(STAGE_ENTERED, Ordering::Release);
    let descriptors = entry.descriptors.load(Ordering::Acquire);
    // SAFETY: the boot CPU stored a leaked `CpuDescriptors` for this index before the start
    // and never changes it while this CPU runs.
    gdt::load_application_processor(unsafe { &*descriptors });
    idt::load();
    apic::init_application_processor();
    timer::start_periodic();
    let enable = ENABLE_VIRTUALIZATION.load(Ordering::Acquire);
    if !enable.is_null() {
        // SAFETY: only ever stored from an `EnableVirtualization` function pointer.
        let enable: EnableVirtualization = unsafe { core::mem::transmute(enable) };
        match enable() {
            Ok(()) => entry.virtualization_on.store(true, Ordering::Release),
            Err(reason) => *entry.virtualization_error.lock() = Some(reason),
        }
    }
    entry.stage.store(STAGE_READY, Ordering::Release);
    loop {
        let work = AP_WORK.load(Ordering::Acquire);
        if !work.is_null() {
            // SAFETY: only ever stored from a `fn(usize) -> !` in `start_ap_work`.
            let work: fn(usize) -> ! = unsafe { core::mem::transmute(work) };
            work(index);
        }
        crate::sched::idle_until_interrupt();
    }
}

/// How often each AP woke in the self-test's work loop.
static SELF_TEST_WAKES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The self-test's AP work: its timer masked, so only kicks wake it; counts each wake-up.
fn self_test_work(cpu: usize) -> ! {
    apic::write(apic::reg::LVT_TIMER, apic::LVT_MASKED);
    loop {
        // Interrupts off between the count and `sti; hlt`: a kick in between stays pending
        // and ends the HLT instead of being lost.
        x86_64::instructions::interrupts::disable();
        SELF_TEST_WAKES[cpu].fetch_add(1, Ordering::Release);
        cpu::wait_for_interrupt();
    }
}

/// Test hook (`keel.smp.selftest=kick`, never on a production boot: it gives the APs work
/// that only counts): [`start_ap_work`] with a loop whose only wake-up is the kick, then
/// [`kick`] to each AP, each answer awaited for 500 ms. Returns the line to print.
pub fn self_test() -> String {
    start_ap_work(self_test_work);
    let aps = cpu_count().saturating_sub(1);
    let mut ran = 0;
    let mut woke = 0;
    for (ap, wakes) in SELF_TEST_WAKES.iter().enumerate().take(cpu_count()).skip(1) {
        let started = Deadline::after_ms(500);
        while wakes.load(Ordering::Acquire) == 0 && !started.expired() {
            core::hint::spin_loop();
        }
        if wakes.load(Ordering::Acquire) == 0 {
            continue;
        }
        ran += 1;
        // Let the AP reach HLT, then kick it.
        Deadline::after_ms(5).wait();
        let before = wakes.load(Ordering::Acquire);
        kick(ap);
        let answered = Deadline::after_ms(500);
        while wakes.load(Ordering::Acquire) == before && !answered.expired() {
            core::hint::spin_loop();
        }
        if wakes.load(Ordering::Acquire) > before {
            woke += 1;
        }
    }
    alloc::format!("smp self-test: {ran} of {aps} APs ran their work, {woke} woke on a kick")
}
