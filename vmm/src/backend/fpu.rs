//! Guest FPU/SSE/AVX state, switched lazily with XSAVE/XRSTOR (FXSAVE/FXRSTOR without XSAVE).
//!
//! Keel's kernel is built soft-float and never touches x87/SSE/AVX registers, so a guest's
//! FPU state can stay in the CPU across exits. Only when a different vCPU is entered on this
//! CPU is the previous owner's state saved to its area and the new one's restored. Neither
//! SVM nor VMX switches this state (or XCR0) for us (APM §15.5.1, SDM Vol. 3C §27.3).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical address of the save area whose state is in this CPU's registers (0: none).
/// One boot CPU runs vCPUs today; with SMP this becomes per-CPU.
static OWNER: AtomicU64 = AtomicU64::new(0);

/// XCR0 components Keel enables in the host: x87, SSE, AVX.
const XCR0_WANTED: u64 = 0b111;

fn has_xsave() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & (1 << 26) != 0
}

/// Prepares this CPU: CR4.OSFXSR/OSXMMEXCPT, and CR4.OSXSAVE with XCR0 = x87|SSE|AVX (as
/// supported) when XSAVE exists, so XSAVE/XRSTOR cover everything a guest can use.
pub fn enable_on_this_cpu() {
    const OSFXSR: u64 = 1 << 9;
    const OSXMMEXCPT: u64 = 1 << 10;
    const OSXSAVE: u64 = 1 << 18;
    let xsave = has_xsave();
    // SAFETY: setting these CR4 bits only enables FXSAVE/SSE/XSAVE instructions; the kernel is
    // soft-float, so no code relies on them being off. XSETBV is executed only with OSXSAVE
    // set and a mask of components CPUID.0xD.0:EAX reports as supported (x87 always).
    unsafe {
        let mut cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        cr4 |= OSFXSR | OSXMMEXCPT;
        if xsave {
            cr4 |= OSXSAVE;
        }
        asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        if xsave {
            let supported = u64::from(core::arch::x86_64::__cpuid_count(0xd, 0).eax);
            let xcr0 = (supported & XCR0_WANTED) | 1;
            asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32,
                 options(nomem, nostack));
        }
    }
}

/// Initialises a fresh save area (one zeroed 4 KiB page, 64-byte aligned): FCW = 0x37F and
/// MXCSR = 0x1F80 as after FNINIT/reset; XSTATE_BV = 0 makes XRSTOR load init state for
/// everything else.
pub fn init_area(area: &mut [u8; 4096]) {
    area[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
}

/// Makes the state in `area_pa` (mapped at `area_ptr`) the one in this CPU's registers.
///
/// # Safety
/// `area_ptr` must point at the 4 KiB, 64-byte-aligned area at `area_pa`, initialised with
/// [`init_area`] or by a previous save, and the previous owner's area must still be valid
/// (vCPUs call [`release`] before freeing theirs). `enable_on_this_cpu` must have run.
pub unsafe fn switch_to(area_pa: u64, area_ptr: *mut u8, owner_ptr: impl Fn(u64) -> *mut u8) {
    let owner = OWNER.load(Ordering::Relaxed);
    if owner == area_pa {
        return;
    }
    let xsave = has_xsave();
    // SAFETY: both areas are valid, aligned save areas per the contract; the mask covers the
    // components enabled in XCR0.
    unsafe {
        if owner != 0 {
            let prev = owner_ptr(owner);
            if xsave {
                asm!("xsave64 [{}]", in(reg) prev, in("eax") u32::MAX, in("edx") u32::MAX,
                     options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) prev, options(nostack));
            }
        }
        if xsave {
            asm!("xrstor64 [{}]", in(reg) area_ptr, in("eax") u32::MAX, in("edx") u32::MAX,
                 options(nostack));
        } else {
            asm!("fxrstor64 [{}]", in(reg) area_ptr, options(nostack));
        }
    }
    OWNER.store(area_pa, Ordering::Relaxed);
}

/// Forgets `area_pa` as the owner before its memory is freed.
pub fn release(area_pa: u64) {
    let _ = OWNER.compare_exchange(area_pa, 0, Ordering::Relaxed, Ordering::Relaxed);
}
