//! The guest's debug address registers DR0-DR3 (and, for VMX, DR6), switched lazily between
//! vCPUs as the FPU state is.
//!
//! Neither VMRUN nor VM entry switches DR0-DR3 (APM §15.5.1 keeps DR6/DR7 in the VMCB; SDM
//! Vol. 3C §27.3.2.1 loads DR7 only, and VMX keeps DR6 in the CPU). Keel does not intercept
//! MOV DR, so while a vCPU runs the CPU's registers are the guest's. Keel's kernel never uses
//! them (its DR7 enables no breakpoint), so they stay in the CPU across exits and are swapped
//! only when another vCPU is entered on this CPU: [`GuestDebug::load`] stores the previous
//! owner's values into its store and loads this vCPU's.

use alloc::boxed::Box;
use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, Ordering};

/// DR0, DR1, DR2, DR3, DR6.
type Regs = [u64; 5];

/// The store whose values are in this CPU's debug registers (null: none). One boot CPU runs
/// vCPUs today; with SMP this becomes per-CPU.
static OWNER: AtomicPtr<Regs> = AtomicPtr::new(core::ptr::null_mut());

/// One vCPU's debug registers while they are not in the CPU.
pub struct GuestDebug {
    regs: Box<UnsafeCell<Regs>>,
    /// Whether DR6 is switched here too (VMX; SVM has it in the VMCB).
    with_dr6: bool,
}

impl core::fmt::Debug for GuestDebug {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GuestDebug")
            .field("with_dr6", &self.with_dr6)
            .finish_non_exhaustive()
    }
}

/// Reads DR0-DR3 and DR6.
fn read_hardware() -> Regs {
    let mut r = [0u64; 5];
    // SAFETY: reading debug registers at CPL 0 has no side effects.
    unsafe {
        asm!("mov {}, dr0", out(reg) r[0], options(nomem, nostack));
        asm!("mov {}, dr1", out(reg) r[1], options(nomem, nostack));
        asm!("mov {}, dr2", out(reg) r[2], options(nomem, nostack));
        asm!("mov {}, dr3", out(reg) r[3], options(nomem, nostack));
        asm!("mov {}, dr6", out(reg) r[4], options(nomem, nostack));
    }
    r
}

/// Writes DR0-DR3 and, with `dr6`, DR6.
fn write_hardware(r: &Regs, dr6: bool) {
    // SAFETY: the host's DR7 enables no breakpoint, so addresses in DR0-DR3 have no effect
    // on it; DR6 holds only status bits (its upper half is zero, `restore` checks that).
    unsafe {
        asm!("mov dr0, {}", in(reg) r[0], options(nomem, nostack));
        asm!("mov dr1, {}", in(reg) r[1], options(nomem, nostack));
        asm!("mov dr2, {}", in(reg) r[2], options(nomem, nostack));
        asm!("mov dr3, {}", in(reg) r[3], options(nomem, nostack));
        if dr6 {
            asm!("mov dr6, {}", in(reg) r[4], options(nomem, nostack));
        }
    }
}

impl GuestDebug {
    /// Reset values: DR0-DR3 zero, DR6 0xFFFF0FF0.
    pub fn new(with_dr6: bool) -> GuestDebug {
        GuestDebug {
            regs: Box::new(UnsafeCell::new([0, 0, 0, 0, 0xffff_0ff0])),
            with_dr6,
        }
    }

    fn is_owner(&self) -> bool {
        OWNER.load(Ordering::Relaxed) == self.regs.get()
    }

    /// Makes this vCPU's values the CPU's, storing the previous owner's first.
    pub fn load(&mut self) {
        let ours = self.regs.get();
        let owner = OWNER.load(Ordering::Relaxed);
        if owner == ours {
            return;
        }
        if !owner.is_null() {
            // SAFETY: `owner` is the store of a live `GuestDebug` (each clears itself as the
            // owner in `Drop` and `set`); stores are touched only here and through `&mut`
            // of their owner, which this CPU is not inside of now.
            unsafe { *owner = read_hardware() };
        }
        // SAFETY: our own store; `&mut self` excludes other access.
        write_hardware(unsafe { &*ours }, self.with_dr6);
        OWNER.store(ours, Ordering::Relaxed);
    }

    /// DR0-DR3 and DR6 (the CPU's when this vCPU owns them).
    pub fn get(&self) -> [u64; 5] {
        if self.is_owner() {
            read_hardware()
        } else {
            // SAFETY: a copy out of our own store, which only `&mut self` methods and
            // `load` of another vCPU (not running now) write.
            unsafe { *self.regs.get() }
        }
    }

    /// Replaces the values; the next [`load`](Self::load) puts them in the CPU.
    pub fn set(&mut self, regs: [u64; 5]) {
        let ours = self.regs.get();
        let _ = OWNER.compare_exchange(
            ours,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *self.regs.get_mut() = regs;
    }
}

impl Drop for GuestDebug {
    fn drop(&mut self) {
        let ours = self.regs.get();
        let _ = OWNER.compare_exchange(
            ours,
            core::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}
