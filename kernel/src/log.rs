//! The defmt global logger: encoded frames go into an in-memory ring and, once the console's
//! port is chosen ([`move_to`]), out on COM2 — or on COM1 when the operator console took
//! COM2.
//!
//! defmt keeps format strings in the ELF and sends only indices and arguments, cheap enough
//! for VM-exit paths. `keel logs <capture>` decodes a COM2 capture with the kernel ELF. The
//! ring keeps the most recent frames for a later `logs` console command and the API.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::serial::{COM2, Uart};

/// Bytes of encoded log kept in memory.
pub const RING_BYTES: usize = 16 * 1024;

/// Where encoded bytes go. Kept apart from the encoder so the two are never borrowed as one.
struct Sink {
    uart: Uart,
    ring: [u8; RING_BYTES],
    head: usize,
    wrapped: bool,
}

static TAKEN: AtomicBool = AtomicBool::new(false);
static UART_READY: AtomicBool = AtomicBool::new(false);
static mut SINK: Sink = Sink {
    uart: Uart::new(COM2),
    ring: [0; RING_BYTES],
    head: 0,
    wrapped: false,
};
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();
static RESTORE_INTERRUPTS: AtomicBool = AtomicBool::new(false);

/// Sends the log to the UART at `base` from now on (COM1 when the console took COM2);
/// returns whether a UART answered there (without one, frames only go to the ring).
pub fn move_to(base: u16) -> bool {
    let ok = crate::arch::cpu::without_interrupts(|| {
        if TAKEN.swap(true, Ordering::Acquire) {
            return false;
        }
        // SAFETY: TAKEN is held, so nothing else touches SINK.
        let ok = unsafe {
            let sink = &mut *core::ptr::addr_of_mut!(SINK);
            sink.uart = Uart::new(base);
            sink.uart.init()
        };
        TAKEN.store(false, Ordering::Release);
        ok
    });
    UART_READY.store(ok, Ordering::Relaxed);
    ok
}

/// Whether a log frame is being written (an exception there must not log again).
pub fn busy() -> bool {
    TAKEN.load(Ordering::Relaxed)
}

fn sink(bytes: &[u8]) {
    // SAFETY: only called from the logger between acquire and release, while TAKEN is held
    // with interrupts off on this CPU.
    let state = unsafe { &mut *core::ptr::addr_of_mut!(SINK) };
    for &b in bytes {
        state.ring[state.head] = b;
        state.head = (state.head + 1) % RING_BYTES;
        if state.head == 0 {
            state.wrapped = true;
        }
    }
    if UART_READY.load(Ordering::Relaxed) {
        state.uart.write_raw(bytes);
    }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: acquire/release form a critical section (interrupts off, TAKEN set), so the encoder
// and sinks are used by one frame at a time; a nested acquire (an exception while logging)
// halts instead of corrupting the stream.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        let were_enabled = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        if TAKEN.swap(true, Ordering::Acquire) {
            // Re-entered: a fault inside the logger. Nothing sane to do but stop.
            crate::arch::cpu::halt_forever();
        }
        RESTORE_INTERRUPTS.store(were_enabled, Ordering::Relaxed);
        // SAFETY: TAKEN is held, so this is the only reference to ENCODER.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).start_frame(sink) };
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: called after acquire, TAKEN is held: the only reference to ENCODER.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).end_frame(sink) };
        let restore = RESTORE_INTERRUPTS.load(Ordering::Relaxed);
        TAKEN.store(false, Ordering::Release);
        if restore {
            x86_64::instructions::interrupts::enable();
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between acquire and release, TAKEN is held: the only reference.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, sink) };
    }
}

defmt::timestamp!("{=u64:us}", {
    let hz = crate::arch::timer::tsc_hz();
    if hz == 0 {
        0
    } else {
        (u128::from(crate::arch::cpu::rdtsc()) * 1_000_000 / u128::from(hz)) as u64
    }
});

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    crate::arch::cpu::halt_forever()
}
