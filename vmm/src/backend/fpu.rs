//! Guest FPU/SSE/AVX state, switched lazily with XSAVE/XRSTOR (FXSAVE/FXRSTOR without XSAVE).
//!
//! Keel's kernel is built soft-float and never touches x87/SSE/AVX registers, so a guest's
//! FPU state can stay in the CPU across exits. Only when a different vCPU is entered on this
//! CPU is the previous owner's state saved to its area and the new one's restored. Neither
//! SVM nor VMX switches this state (or XCR0) for us (APM §15.5.1, SDM Vol. 3C §27.3).
//!
//! Each vCPU owns a [`GuestFpu`]: one 4 KiB save area in the XSAVE standard (non-compacted)
//! layout. [`GuestFpu::save`] forces the live state into the area first when the vCPU owns
//! the registers; [`GuestFpu::restore`] checks an area with [`validate_area`] (XRSTOR of a
//! bad one would raise #GP in the host) before it replaces the state.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::host::HostMemory;
use crate::memory::{ControlFrames, MemoryError};

/// The save area whose state is in this CPU's registers (null: none). One boot CPU runs
/// vCPUs today; with SMP this becomes per-CPU.
static OWNER: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// The host's XCR0 (0 without XSAVE), set by [`enable_on_this_cpu`].
static HOST_XCR0: AtomicU64 = AtomicU64::new(0);
/// The MXCSR bits this CPU allows (`MXCSR_MASK` from FXSAVE), set by [`enable_on_this_cpu`].
static HOST_MXCSR_MASK: AtomicU32 = AtomicU32::new(DEFAULT_MXCSR_MASK);

/// XCR0 components Keel enables in the host: x87, SSE, AVX.
const XCR0_WANTED: u64 = 0b111;
/// The MXCSR mask to assume when FXSAVE reports 0 (SDM Vol. 1 §11.6.6).
pub const DEFAULT_MXCSR_MASK: u32 = 0xffbf;
/// Size of a save area.
pub const AREA_BYTES: usize = 4096;
/// Offset of MXCSR in the legacy region.
const MXCSR: usize = 24;
/// Offset of the XSAVE header (XSTATE_BV, XCOMP_BV, reserved) in the area.
const XSAVE_HEADER: usize = 512;

fn has_xsave() -> bool {
    // `__cpuid` is safe since Rust 1.94; the fuzz crate builds this crate with the pinned
    // firmware nightly (1.89), where it is still `unsafe`.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU; leaf 1 only reads feature bits.
    let leaf = unsafe { core::arch::x86_64::__cpuid(1) };
    leaf.ecx & (1 << 26) != 0
}

/// Prepares this CPU: CR4.OSFXSR/OSXMMEXCPT, and CR4.OSXSAVE with XCR0 = x87|SSE|AVX (as
/// supported) when XSAVE exists, so XSAVE/XRSTOR cover everything a guest can use. Records
/// the XCR0 and MXCSR mask that [`validate_area`] checks against.
pub fn enable_on_this_cpu() {
    const OSFXSR: u64 = 1 << 9;
    const OSXMMEXCPT: u64 = 1 << 10;
    const OSXSAVE: u64 = 1 << 18;
    #[repr(C, align(16))]
    struct Legacy([u8; 512]);
    let xsave = has_xsave();
    let mut legacy = Legacy([0; 512]);
    // SAFETY: setting these CR4 bits only enables FXSAVE/SSE/XSAVE instructions; the kernel is
    // soft-float, so no code relies on them being off. XSETBV is executed only with OSXSAVE
    // set and a mask of components CPUID.0xD.0:EAX reports as supported (x87 always).
    // FXSAVE writes 512 bytes into the 16-byte-aligned local buffer.
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
            HOST_XCR0.store(xcr0, Ordering::Relaxed);
        }
        asm!("fxsave64 [{}]", in(reg) legacy.0.as_mut_ptr(), options(nostack));
    }
    let mask = u32::from_le_bytes([legacy.0[28], legacy.0[29], legacy.0[30], legacy.0[31]]);
    if mask != 0 {
        HOST_MXCSR_MASK.store(mask, Ordering::Relaxed);
    }
}

/// The MXCSR bits this host allows (what [`GuestFpu::restore`] checks areas against).
pub fn host_mxcsr_mask() -> u32 {
    HOST_MXCSR_MASK.load(Ordering::Relaxed)
}

/// The host's XCR0, 0 without XSAVE (what [`GuestFpu::restore`] checks areas against).
pub fn host_xcr0() -> u64 {
    HOST_XCR0.load(Ordering::Relaxed)
}

/// Why a saved FPU area cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuAreaError {
    /// The area is not [`AREA_BYTES`] long.
    Length(usize),
    /// MXCSR has bits this CPU does not allow.
    Mxcsr(u32),
    /// XSTATE_BV names components the host's XCR0 does not enable.
    XstateBv(u64),
    /// The header asks for the compacted format, which Keel does not use.
    Compacted,
    /// The reserved bytes of the XSAVE header are not zero.
    ReservedHeader,
}

impl fmt::Display for FpuAreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FpuAreaError::Length(n) => {
                write!(f, "the area is {n} bytes, not {AREA_BYTES}")
            }
            FpuAreaError::Mxcsr(v) => write!(f, "MXCSR {v:#x} has reserved bits set"),
            FpuAreaError::XstateBv(v) => {
                write!(
                    f,
                    "XSTATE_BV {v:#x} names components this host does not enable"
                )
            }
            FpuAreaError::Compacted => f.write_str("XCOMP_BV asks for the compacted format"),
            FpuAreaError::ReservedHeader => {
                f.write_str("the reserved bytes of the XSAVE header are not zero")
            }
        }
    }
}

fn u64_at(area: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&area[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks that XRSTOR (`xcr0` != 0) or FXRSTOR (`xcr0` == 0) of `area` cannot fault: the
/// length, MXCSR against `mxcsr_mask`, and for XRSTOR the header (SDM Vol. 1 §13.8.1:
/// XSTATE_BV within XCR0, XCOMP_BV zero for the standard form, bytes 16-63 zero).
pub fn validate_area(area: &[u8], mxcsr_mask: u32, xcr0: u64) -> Result<(), FpuAreaError> {
    if area.len() != AREA_BYTES {
        return Err(FpuAreaError::Length(area.len()));
    }
    let mxcsr = u32::from_le_bytes([
        area[MXCSR],
        area[MXCSR + 1],
        area[MXCSR + 2],
        area[MXCSR + 3],
    ]);
    if mxcsr & !mxcsr_mask != 0 {
        return Err(FpuAreaError::Mxcsr(mxcsr));
    }
    if xcr0 != 0 {
        let xstate_bv = u64_at(area, XSAVE_HEADER);
        if xstate_bv & !xcr0 != 0 {
            return Err(FpuAreaError::XstateBv(xstate_bv));
        }
        if u64_at(area, XSAVE_HEADER + 8) != 0 {
            return Err(FpuAreaError::Compacted);
        }
        if area[XSAVE_HEADER + 16..XSAVE_HEADER + 64]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(FpuAreaError::ReservedHeader);
        }
    }
    Ok(())
}

/// Saves the registers into the area at `ptr` (XSAVE of every enabled component, or FXSAVE).
///
/// # Safety
/// `ptr` must point at a 4 KiB, 64-byte-aligned area no Rust reference is using;
/// [`enable_on_this_cpu`] must have run.
unsafe fn save_to(ptr: *mut u8) {
    // SAFETY: per the contract; the mask covers the components enabled in XCR0.
    unsafe {
        if has_xsave() {
            asm!("xsave64 [{}]", in(reg) ptr, in("eax") u32::MAX, in("edx") u32::MAX,
                 options(nostack));
        } else {
            asm!("fxsave64 [{}]", in(reg) ptr, options(nostack));
        }
    }
}

/// One vCPU's FPU/SSE/AVX state: a save area, and possibly the CPU's registers.
pub struct GuestFpu {
    area: ControlFrames,
}

impl fmt::Debug for GuestFpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestFpu")
            .field("area", &self.area)
            .finish()
    }
}

impl GuestFpu {
    /// A save area holding the state after reset: FCW = 0x37F and MXCSR = 0x1F80 as after
    /// FNINIT; XSTATE_BV = 0 makes XRSTOR load init state for everything else.
    pub fn new(host: &'static dyn HostMemory) -> Result<GuestFpu, MemoryError> {
        let mut area = ControlFrames::alloc(host, 1, 1)?;
        init_area(area.page_mut());
        Ok(GuestFpu { area })
    }

    /// The area's host address, for the save/restore instructions, which use it only while
    /// `self` is exclusively borrowed.
    fn ptr(&mut self) -> *mut u8 {
        self.area.page_mut().as_mut_ptr()
    }

    /// Makes this state the one in the CPU's registers, saving the previous owner's first.
    pub fn load(&mut self) {
        let ours = self.ptr();
        let owner = OWNER.load(Ordering::Relaxed);
        if owner == ours {
            return;
        }
        // SAFETY: `owner` is null or the area of a live `GuestFpu` (each clears itself as the
        // owner before its frame is freed, in `Drop` and `restore`), not borrowed now: this
        // CPU is here, not in a borrow of another vCPU's area. `ours` is our initialised,
        // page-aligned area, exclusively borrowed. `enable_on_this_cpu` ran before any vCPU
        // was created.
        unsafe {
            if !owner.is_null() {
                save_to(owner);
            }
            if has_xsave() {
                asm!("xrstor64 [{}]", in(reg) ours, in("eax") u32::MAX, in("edx") u32::MAX,
                     options(nostack));
            } else {
                asm!("fxrstor64 [{}]", in(reg) ours, options(nostack));
            }
        }
        OWNER.store(ours, Ordering::Relaxed);
    }

    /// The state, in XSAVE standard layout ([`AREA_BYTES`] long). When the CPU's registers
    /// hold it, they are saved (into a scratch area: `&self` leaves the vCPU's own area
    /// alone), and stay the live copy.
    pub fn save(&self) -> Vec<u8> {
        let ours = self.area.page().as_ptr() as *mut u8;
        if OWNER.load(Ordering::Relaxed) != ours {
            return self.area.page().to_vec();
        }
        #[repr(C, align(64))]
        struct Scratch([u8; AREA_BYTES]);
        // The current contents as a base: XSAVE writes only the components it saves and
        // the header.
        let mut scratch = Box::new(Scratch([0; AREA_BYTES]));
        scratch.0.copy_from_slice(self.area.page());
        // SAFETY: a 64-byte-aligned 4 KiB heap area we own exclusively; we own the
        // registers, so `enable_on_this_cpu` ran.
        unsafe { save_to(scratch.0.as_mut_ptr()) };
        scratch.0.to_vec()
    }

    /// Replaces the state with `area` after [`validate_area`] against this host; on error
    /// nothing changes. The registers are no longer this vCPU's: the next [`load`](Self::load)
    /// restores from the new area.
    pub fn restore(&mut self, area: &[u8]) -> Result<(), FpuAreaError> {
        validate_area(area, host_mxcsr_mask(), host_xcr0())?;
        let ours = self.ptr();
        let _ = OWNER.compare_exchange(
            ours,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.area.page_mut().copy_from_slice(area);
        Ok(())
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        let ours = self.ptr();
        let _ = OWNER.compare_exchange(
            ours,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// Initialises a fresh save area (zeroed): FCW = 0x37F, MXCSR = 0x1F80.
pub fn init_area(area: &mut [u8; 4096]) {
    area[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    area[MXCSR..MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> std::vec::Vec<u8> {
        let mut a = std::vec![0u8; AREA_BYTES];
        let page: &mut [u8; 4096] = (&mut a[..]).try_into().unwrap();
        init_area(page);
        a
    }

    #[test]
    fn a_fresh_area_is_valid_with_and_without_xsave() {
        assert_eq!(validate_area(&fresh(), DEFAULT_MXCSR_MASK, 0b111), Ok(()));
        assert_eq!(validate_area(&fresh(), DEFAULT_MXCSR_MASK, 0), Ok(()));
    }

    #[test]
    fn areas_xrstor_would_fault_on_are_refused() {
        assert_eq!(
            validate_area(&[0; 512], DEFAULT_MXCSR_MASK, 0b111),
            Err(FpuAreaError::Length(512))
        );
        let mut a = fresh();
        a[MXCSR + 2] = 1; // bit 16
        assert_eq!(
            validate_area(&a, DEFAULT_MXCSR_MASK, 0b111),
            Err(FpuAreaError::Mxcsr(0x1_1f80))
        );
        let mut a = fresh();
        a[MXCSR] |= 0x40; // DAZ: allowed where the CPU's mask has it
        assert!(validate_area(&a, DEFAULT_MXCSR_MASK, 0).is_err());
        assert_eq!(validate_area(&a, 0xffff, 0), Ok(()));
        let mut a = fresh();
        a[XSAVE_HEADER] = 0b1111; // MPX bound registers: not enabled here
        assert_eq!(
            validate_area(&a, DEFAULT_MXCSR_MASK, 0b111),
            Err(FpuAreaError::XstateBv(0b1111))
        );
        assert_eq!(
            validate_area(&a, DEFAULT_MXCSR_MASK, 0),
            Ok(()),
            "FXRSTOR ignores it"
        );
        let mut a = fresh();
        a[XSAVE_HEADER + 15] = 0x80;
        assert_eq!(
            validate_area(&a, DEFAULT_MXCSR_MASK, 0b111),
            Err(FpuAreaError::Compacted)
        );
        let mut a = fresh();
        a[XSAVE_HEADER + 40] = 1;
        assert_eq!(
            validate_area(&a, DEFAULT_MXCSR_MASK, 0b111),
            Err(FpuAreaError::ReservedHeader)
        );
    }
}
