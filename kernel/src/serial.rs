//! 16550 UART driver: the operator console (COM1 unless `console=` or the ACPI SPCR table
//! names another port, see [`crate::console_port`]) and the defmt diagnostics (COM2, or COM1
//! when the console took COM2).
//!
//! The console starts on COM1 at entry, so early failures are visible, and moves with
//! [`switch_console`] once the command line and ACPI are read. Transmit is polled (the FIFO
//! drains far faster than the console produces text). Receive is interrupt-driven where the
//! port has an ISA IRQ: the IRQ handler moves bytes into a ring that the console reads
//! through `embedded-io`. The timer tick also drains the UART, so input still works on a
//! port without an IRQ or on a machine whose serial interrupt cannot be routed.

use core::fmt;
use core::sync::atomic::{AtomicU16, Ordering};

use heapless::Deque;
use spin::Mutex;

use crate::arch::cpu::{self, port};

/// I/O base of COM1.
pub const COM1: u16 = 0x3f8;
/// I/O base of COM2.
pub const COM2: u16 = 0x2f8;
use crate::console_port::ConsolePort;

// Register offsets (16550 data sheet).
const DATA: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const SCRATCH: u16 = 7;

const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
const IER_RX_AVAILABLE: u8 = 1 << 0;

/// Bounded wait for the transmitter, so a missing or wedged UART cannot hang the kernel.
const TX_SPIN_LIMIT: u32 = 100_000;

/// A 16550-compatible UART at an I/O base.
pub struct Uart {
    base: u16,
    present: bool,
}

impl Uart {
    /// A UART not yet initialised (writes are dropped until [`Uart::init`]).
    pub const fn new(base: u16) -> Uart {
        Uart {
            base,
            present: false,
        }
    }

    /// Probes and programs 115200 8N1 with FIFOs; returns whether a UART answered.
    pub fn init(&mut self) -> bool {
        self.init_with_divisor(1)
    }

    /// Probes and programs 8N1 at 115200 / `divisor` baud with FIFOs; returns whether a
    /// UART answered.
    pub fn init_with_divisor(&mut self, divisor: u16) -> bool {
        let [divisor_low, divisor_high] = divisor.max(1).to_le_bytes();
        // SAFETY: the base is a UART port the operator or the firmware named (or COM1/COM2),
        // owned by this driver; the scratch-register probe and programming sequence follow
        // the 16550 data sheet.
        unsafe {
            port::outb(self.base + SCRATCH, 0x5a);
            if port::inb(self.base + SCRATCH) != 0x5a {
                self.present = false;
                return false;
            }
            port::outb(self.base + IER, 0x00);
            port::outb(self.base + LCR, 0x80); // DLAB on
            port::outb(self.base + DATA, divisor_low); // divisor latch: 115200 / baud
            port::outb(self.base + IER, divisor_high);
            port::outb(self.base + LCR, 0x03); // 8N1, DLAB off
            port::outb(self.base + FCR, 0xc7); // FIFOs on, cleared, 14-byte threshold
            port::outb(self.base + MCR, 0x0b); // DTR, RTS, OUT2 (routes the IRQ on PCs)
        }
        self.present = true;
        true
    }

    /// Enables the received-data interrupt.
    pub fn enable_rx_interrupt(&mut self) {
        if self.present {
            // SAFETY: IER of our own UART; enabling RX interrupts is harmless before the IRQ
            // is routed (the line just stays asserted).
            unsafe { port::outb(self.base + IER, IER_RX_AVAILABLE) };
        }
    }

    /// Sends one byte, waiting (bounded) for room in the transmitter.
    pub fn write_byte(&mut self, byte: u8) {
        if !self.present {
            return;
        }
        // SAFETY: LSR/THR of our own UART.
        unsafe {
            let mut spins = 0;
            while port::inb(self.base + LSR) & LSR_THR_EMPTY == 0 && spins < TX_SPIN_LIMIT {
                core::hint::spin_loop();
                spins += 1;
            }
            port::outb(self.base + DATA, byte);
        }
    }

    /// Sends bytes, turning `\n` into `\r\n` for terminals.
    pub fn write_text(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }

    /// Sends raw bytes (binary streams such as defmt frames).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    /// Takes one received byte, if any.
    pub fn read_byte(&mut self) -> Option<u8> {
        if !self.present {
            return None;
        }
        // SAFETY: LSR/RBR of our own UART; reading RBR pops the receive FIFO, which is what
        // we want.
        unsafe {
            (port::inb(self.base + LSR) & LSR_DATA_READY != 0).then(|| port::inb(self.base + DATA))
        }
    }
}

static CONSOLE_UART: Mutex<Uart> = Mutex::new(Uart::new(COM1));
/// The console's port and speed, for the banner and the status screen.
static CONSOLE_PORT: Mutex<ConsolePort> = Mutex::new(ConsolePort::COM1);
/// The console's I/O base, read without a lock by [`EmergencyWriter`].
static CONSOLE_BASE: AtomicU16 = AtomicU16::new(COM1);
/// Console input not read yet: 4 KiB, about 350 ms of a paste at 115200 baud while the main
/// loop is busy (a configuration save, a long VM slice).
static RX_RING: Mutex<Deque<u8, 4096>> = Mutex::new(Deque::new());

/// Initialises COM1; called first thing at boot.
pub fn init_console() -> bool {
    CONSOLE_UART.lock().init()
}

/// Moves the console to `port`, programming its speed. A port that does not answer the
/// scratch-register probe is refused (`false`) and the console stays where it is.
pub fn switch_console(port: ConsolePort) -> bool {
    let mut uart = Uart::new(port.base);
    if !uart.init_with_divisor(port.divisor()) {
        return false;
    }
    cpu::without_interrupts(|| {
        *CONSOLE_UART.lock() = uart;
        *CONSOLE_PORT.lock() = port;
        CONSOLE_BASE.store(port.base, Ordering::Relaxed);
    });
    true
}

/// The console's port and speed.
pub fn console_port() -> ConsolePort {
    cpu::without_interrupts(|| *CONSOLE_PORT.lock())
}

/// Enables the console's receive interrupt once the IOAPIC routes it.
pub fn enable_console_rx_interrupt() {
    CONSOLE_UART.lock().enable_rx_interrupt();
}

/// Moves received bytes from the UART into the ring. Called from the console's IRQ and the
/// timer.
pub fn drain_rx() {
    cpu::without_interrupts(|| {
        let mut uart = CONSOLE_UART.lock();
        let mut ring = RX_RING.lock();
        while let Some(b) = uart.read_byte() {
            // A full ring drops input rather than blocking in an interrupt handler.
            let _ = ring.push_back(b);
        }
    });
}

/// Takes one byte of console input, if any arrived.
pub fn try_read_console() -> Option<u8> {
    cpu::without_interrupts(|| RX_RING.lock().pop_front())
}

/// Writes operator text to the console.
pub fn console_write(bytes: &[u8]) {
    cpu::without_interrupts(|| CONSOLE_UART.lock().write_text(bytes));
}

/// `core::fmt` adaptor over the console, used by [`kprint!`](crate::kprint).
pub struct ConsoleWriter;

impl fmt::Write for ConsoleWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}

/// Writes to the console's port without taking the console lock: for exception reports and panics, which may
/// interrupt code that holds it. Interleaving is acceptable there; a deadlock is not.
pub struct EmergencyWriter;

impl fmt::Write for EmergencyWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut uart = Uart {
            base: CONSOLE_BASE.load(Ordering::Relaxed),
            present: true,
        };
        uart.write_text(s.as_bytes());
        Ok(())
    }
}

/// The console as an `embedded-io` stream: blocking reads of operator input, writes to the
/// console's port.
pub struct Console;

impl embedded_io::ErrorType for Console {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Console {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mut n = 0;
            while n < buf.len() {
                match try_read_console() {
                    Some(b) => {
                        buf[n] = b;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n > 0 {
                return Ok(n);
            }
            // Sleep until the UART or timer interrupt brings more input.
            cpu::wait_for_interrupt();
        }
    }
}

impl embedded_io::Write for Console {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        console_write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Prints to the operator console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::ConsoleWriter, $($arg)*);
    }};
}

/// Prints a line to the operator console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::ConsoleWriter, $($arg)*);
    }};
}
