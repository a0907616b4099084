//! Deliberate faults for the exception-report tests, selected by `keel.test-crash=<kind>` on
//! the kernel command line. Not reachable from the console.

use crate::kprintln;

/// Runs the crash the command line asks for, if any. Returns if the value is unknown.
pub fn from_cmdline(value: Option<&str>) {
    let Some(kind) = value else { return };
    kprintln!("keel.test-crash={kind}: triggering a deliberate fault");
    match kind {
        "page-fault" => {
            // Canonical, far above any RAM, never mapped.
            let ptr = 0x0000_4000_dead_b000 as *const u64;
            // SAFETY: not sound on purpose: the read faults and the handler halts the kernel.
            let value = unsafe { core::ptr::read_volatile(ptr) };
            kprintln!("unexpectedly read {value:#x}");
        }
        "stack-overflow" => {
            let depth = recurse(0);
            kprintln!("unexpectedly returned from depth {depth}");
        }
        "invalid-opcode" => {
            // SAFETY: not sound on purpose: UD2 raises #UD and the handler halts the kernel.
            unsafe { core::arch::asm!("ud2") };
        }
        other => kprintln!(
            "unknown keel.test-crash value '{other}' (page-fault, stack-overflow, invalid-opcode)"
        ),
    }
}

// Unbounded on purpose: it must run into the stack guard page.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // A frame with a live array, so each level really uses stack.
    let frame = core::hint::black_box([depth; 64]);
    recurse(frame[depth as usize % 64] + 1) + frame[0]
}
