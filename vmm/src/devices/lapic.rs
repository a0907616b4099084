//! A local APIC with the xAPIC MMIO page and the x2APIC MSR interface, as a state machine over
//! passed-in time.
//!
//! The model follows the Intel SDM Vol. 3A chapter 11, "Advanced Programmable Interrupt
//! Controller (APIC)": the register map (table 11-1, "Local APIC Register Address Map"), the
//! x2APIC MSR map and its rules (§11.12, table 11-6), `IA32_APIC_BASE` and the mode
//! transitions (§11.4.4, §11.12.5, figure 11-27), interrupt acceptance, TPR/PPR and EOI
//! (§11.8), the error status register (§11.5.3), the local vector table (§11.5.1), the timer
//! (§11.5.4, including TSC-deadline mode §11.5.4.1) and the ICR (§11.6.1).
//!
//! # Shape
//!
//! - Guest accesses: [`Lapic::read_mmio`]/[`Lapic::write_mmio`] for the xAPIC page (offsets
//!   in [`reg`]), [`Lapic::read_msr`]/[`Lapic::write_msr`] for x2APIC MSRs 0x800–0x8FF (a
//!   fault is an `Err(MsrFault::Gp)` the backend turns into #GP), plus
//!   [`Lapic::write_apic_base`] and [`Lapic::write_tsc_deadline`] for the two MSRs outside
//!   the x2APIC range.
//! - Interrupts in: [`Lapic::accept_interrupt`] (fixed and lowest-priority messages from the
//!   I/O APIC or other CPUs; the VMM routes with [`Lapic::matches_destination`]).
//! - Interrupts to the CPU: [`Lapic::highest_pending`] (respecting PPR) and
//!   [`Lapic::acknowledge`] when the VMM injects it.
//! - Interrupts out: writes return a [`LapicEvent`]: an IPI from the ICR (INIT and SIPI too,
//!   for a later SMP change), or the EOI of a level-triggered vector that the I/O APIC must
//!   see ([`crate::devices::ioapic::Ioapic::end_of_interrupt`]).
//! - Time: every access takes `now_ns`; [`Lapic::update_timer`] fires an expired timer into
//!   IRR, and [`Lapic::next_timer_deadline`] says when the VM loop must call it next. The timer
//!   counts the bus clock given at creation ([`LapicConfig::bus_hz`]); TSC-deadline mode
//!   converts the deadline with [`LapicConfig::tsc_hz`] and the guest TSC passed in.
//!
//! # Simplifications
//!
//! - Thermal and performance-counter LVTs are stored but have no source; there is no CMCI LVT
//!   (the version register reports five LVT entries above zero, as KVM does) and no
//!   EOI-broadcast suppression.
//! - A software-disabled APIC (SVR bit 8 clear) drops fixed interrupts, as KVM does.
//! - A periodic timer faster than [`MIN_PERIOD_NS`] runs at that period (KVM clamps too), so a
//!   guest cannot make the VM loop spin on timer interrupts; missed periods coalesce into one
//!   interrupt.
//! - Timer mode 3 (reserved) behaves as one-shot.
//! - Clearing the global enable in `IA32_APIC_BASE` resets the registers (the SDM says they
//!   "may" be lost).
//!
//! [`State`] holds every register and the timer for snapshots.

use core::fmt;

use crate::msr::MsrFault;

mod access;
mod snapshot;
mod timer;

pub use snapshot::RestoreError;

/// Where the xAPIC page is after reset.
pub const DEFAULT_BASE: u64 = 0xFEE0_0000;
/// Length of the xAPIC MMIO page.
pub const MMIO_LEN: u64 = 0x1000;

/// `IA32_APIC_BASE` (SDM Vol. 4 table 2-2).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// `IA32_TSC_DEADLINE`.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// First x2APIC MSR; register at xAPIC offset `o` is MSR `0x800 + o / 16` (§11.12.1.2).
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8FF;

/// `IA32_APIC_BASE` bit 8: bootstrap processor (read-only).
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode enable (EXTD).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: APIC global enable (EN).
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `IA32_APIC_BASE` bits 11:0 that are reserved (all but BSP, EXTD and EN).
pub const APIC_BASE_RESERVED_LOW: u64 = 0x2FF;

/// xAPIC register offsets (SDM Vol. 3A table 11-1).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Local APIC version (read-only).
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Arbitration priority (read-only; xAPIC only).
    pub const APR: u32 = 0x090;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0x0A0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0x0B0;
    /// Remote read (read-only; xAPIC only).
    pub const RRD: u32 = 0x0C0;
    /// Logical destination.
    pub const LDR: u32 = 0x0D0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0x0E0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x0F0;
    /// In-service register, bits 31:0 (eight registers, 0x10 apart).
    pub const ISR: u32 = 0x100;
    /// Trigger mode register, bits 31:0.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register, bits 31:0.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// LVT corrected machine-check interrupt (not implemented).
    pub const LVT_CMCI: u32 = 0x2F0;
    /// Interrupt command, bits 31:0 (in x2APIC mode, the whole 64-bit ICR).
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, bits 63:32 (xAPIC only).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance monitoring counters.
    pub const LVT_PERF: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
    /// Self IPI (x2APIC only, write-only).
    pub const SELF_IPI: u32 = 0x3F0;
}

/// The version register: version 0x14 (integrated xAPIC), maximum LVT entry 5 (bits 23:16),
/// no EOI-broadcast suppression (bit 24).
pub const VERSION_VALUE: u32 = 0x0005_0014;

/// SVR bits 7:0: spurious vector.
pub const SVR_VECTOR: u32 = 0xFF;
/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// SVR bit 9: focus processor checking disabled.
pub const SVR_FOCUS_DISABLED: u32 = 1 << 9;
/// SVR bits the guest can write.
pub const SVR_WRITABLE: u32 = SVR_VECTOR | SVR_ENABLE | SVR_FOCUS_DISABLED;

/// LVT bits 7:0: vector.
pub const LVT_VECTOR: u32 = 0xFF;
/// LVT bits 10:8: delivery mode (LINT0, LINT1, thermal, performance).
pub const LVT_DELIVERY_MODE: u32 = 0x700;
/// LVT bit 12: delivery status (read-only).
pub const LVT_DELIVERY_STATUS: u32 = 1 << 12;
/// LVT bit 13: input pin polarity (LINT0, LINT1).
pub const LVT_POLARITY: u32 = 1 << 13;
/// LVT bit 14: remote IRR (read-only; LINT0, LINT1).
pub const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT bit 15: trigger mode, 1 = level (LINT0, LINT1).
pub const LVT_TRIGGER_LEVEL: u32 = 1 << 15;
/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer bits 18:17: timer mode.
pub const LVT_TIMER_MODE: u32 = 3 << 17;
/// Timer mode: one-shot.
pub const TIMER_ONE_SHOT: u32 = 0;
/// Timer mode: periodic.
pub const TIMER_PERIODIC: u32 = 1 << 17;
/// Timer mode: TSC-deadline.
pub const TIMER_TSC_DEADLINE: u32 = 2 << 17;

/// Index of each LVT in [`State::lvt`].
pub mod lvt {
    /// Timer.
    pub const TIMER: usize = 0;
    /// Thermal sensor.
    pub const THERMAL: usize = 1;
    /// Performance monitoring counters.
    pub const PERF: usize = 2;
    /// LINT0 (the PIC's INTR on a PC).
    pub const LINT0: usize = 3;
    /// LINT1 (NMI on a PC).
    pub const LINT1: usize = 4;
    /// Error.
    pub const ERROR: usize = 5;
}

/// Writable bits of each LVT, in [`lvt`] order.
pub const LVT_WRITABLE: [u32; 6] = [
    LVT_VECTOR | LVT_MASKED | LVT_TIMER_MODE,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY | LVT_TRIGGER_LEVEL | LVT_MASKED,
    LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY | LVT_TRIGGER_LEVEL | LVT_MASKED,
    LVT_VECTOR | LVT_MASKED,
];

/// ESR bit 5: send illegal vector.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
/// ESR bit 7: illegal register address.
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// ICR bits 7:0: vector.
pub const ICR_VECTOR: u64 = 0xFF;
/// ICR bits 10:8: delivery mode.
pub const ICR_DELIVERY_MODE_SHIFT: u32 = 8;
/// ICR bit 11: destination mode, 1 = logical.
pub const ICR_DEST_LOGICAL: u64 = 1 << 11;
/// ICR bit 12: delivery status (read-only in xAPIC mode; reserved in x2APIC mode).
pub const ICR_DELIVERY_STATUS: u64 = 1 << 12;
/// ICR bit 14: level, 1 = assert.
pub const ICR_LEVEL_ASSERT: u64 = 1 << 14;
/// ICR bit 15: trigger mode, 1 = level.
pub const ICR_TRIGGER_LEVEL: u64 = 1 << 15;
/// ICR bits 19:18: destination shorthand.
pub const ICR_SHORTHAND_SHIFT: u32 = 18;
/// ICR bits that software can write (low half; the destination is in the high half).
pub const ICR_LOW_WRITABLE: u64 = 0x000C_CFFF;
/// xAPIC ICR destination: bits 63:56.
pub const ICR_XAPIC_DEST_SHIFT: u32 = 56;
/// x2APIC ICR destination: bits 63:32.
pub const ICR_X2APIC_DEST_SHIFT: u32 = 32;

/// Timer divide configuration bits (0, 1 and 3).
pub const DIVIDE_WRITABLE: u32 = 0xB;

/// Shortest periodic-timer period, in ns.
pub const MIN_PERIOD_NS: u64 = 100_000;

/// A delivery mode of an interrupt message or IPI (SDM Vol. 3A §11.6.1, ICR bits 10:8; the
/// I/O APIC's redirection entries use the same encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// 000: the vector, to the destination.
    Fixed,
    /// 001: the vector, to the lowest-priority processor of the destination.
    LowestPriority,
    /// 010: a system management interrupt.
    Smi,
    /// 100: a non-maskable interrupt.
    Nmi,
    /// 101: INIT.
    Init,
    /// 110: start-up IPI (the vector is the start page).
    StartUp,
    /// 111: external interrupt: the vector comes from the 8259 (INTA).
    ExtInt,
}

impl DeliveryMode {
    /// The mode for the three-bit field value `bits`; `None` for the reserved 011.
    pub fn from_bits(bits: u8) -> Option<DeliveryMode> {
        Some(match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => return None,
        })
    }
}

/// The ICR's destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shorthand {
    /// 00: the destination field says who.
    None,
    /// 01: this processor (handled locally; never an event).
    SelfOnly,
    /// 10: every processor, this one included.
    AllIncludingSelf,
    /// 11: every processor but this one.
    AllExcludingSelf,
}

/// An interprocessor interrupt the guest sent through the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Vector (for start-up: the page number of the start address).
    pub vector: u8,
    /// Delivery mode.
    pub delivery_mode: DeliveryMode,
    /// Logical destination mode.
    pub logical: bool,
    /// Level: assert (false only for the legacy INIT level de-assert).
    pub assert: bool,
    /// Level-triggered.
    pub level_triggered: bool,
    /// Destination shorthand.
    pub shorthand: Shorthand,
    /// Destination: 8 bits in xAPIC mode, 32 in x2APIC mode.
    pub destination: u32,
}

/// Something a register write asks the VMM to do outside this APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicEvent {
    /// Deliver an IPI ([`Lapic::matches_destination`] chooses the targets; a shorthand of
    /// "all including self" includes this APIC).
    Ipi(Ipi),
    /// The guest ended a level-triggered interrupt: broadcast the EOI to the I/O APIC.
    Eoi {
        /// The vector that ended.
        vector: u8,
    },
}

/// The APIC's mode from `IA32_APIC_BASE` EN and EXTD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// EN = 0: the APIC is off; LINT0/LINT1 are the CPU's INTR and NMI pins.
    Disabled,
    /// EN = 1, EXTD = 0: xAPIC, registers in the MMIO page.
    XApic,
    /// EN = 1, EXTD = 1: x2APIC, registers in MSRs.
    X2Apic,
}

/// What a local APIC is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicConfig {
    /// Initial APIC ID (CPUID leaf 1 EBX bits 31:24, leaf 0xB x2APIC ID, MADT).
    pub apic_id: u8,
    /// Whether this is the bootstrap processor (`IA32_APIC_BASE` bit 8).
    pub bsp: bool,
    /// Frequency of the clock the timer divides, in Hz (what CPUID leaf 0x15/0x16 or a
    /// hypervisor leaf reports to the guest).
    pub bus_hz: u64,
    /// Guest TSC frequency in Hz, for TSC-deadline mode.
    pub tsc_hz: u64,
    /// Whether CPUID reports x2APIC (otherwise `IA32_APIC_BASE`.EXTD is reserved).
    pub x2apic: bool,
    /// MAXPHYADDR: `IA32_APIC_BASE` bits at and above it are reserved (36..=52).
    pub phys_addr_bits: u8,
}

impl LapicConfig {
    /// The bootstrap processor's APIC: ID 0, a 1 GHz timer clock (as KVM), `tsc_hz`, x2APIC
    /// supported, 39 physical address bits.
    pub fn bsp(tsc_hz: u64) -> LapicConfig {
        LapicConfig {
            apic_id: 0,
            bsp: true,
            bus_hz: 1_000_000_000,
            tsc_hz,
            x2apic: true,
            phys_addr_bits: 39,
        }
    }
}

/// Why [`Lapic::new`] refused a [`LapicConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `bus_hz` is 0.
    ZeroBusFrequency,
    /// `tsc_hz` is 0.
    ZeroTscFrequency,
    /// `phys_addr_bits` is outside 36..=52.
    PhysAddrBits(u8),
    /// `apic_id` is 0xFF, the xAPIC broadcast ID.
    BroadcastId,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroBusFrequency => f.write_str("local APIC timer frequency is 0 Hz"),
            ConfigError::ZeroTscFrequency => f.write_str("local APIC TSC frequency is 0 Hz"),
            ConfigError::PhysAddrBits(bits) => write!(
                f,
                "local APIC: {bits} physical address bits (expected 36 to 52)"
            ),
            ConfigError::BroadcastId => f.write_str("local APIC ID 0xff is the broadcast ID"),
        }
    }
}

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "local APIC";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

/// Every register of a [`Lapic`] and its timer, for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `IA32_APIC_BASE`.
    pub apic_base: u64,
    /// The xAPIC ID register's ID (bits 31:24).
    pub xapic_id: u8,
    /// Task priority.
    pub tpr: u8,
    /// xAPIC logical destination register (bits 31:24 hold the logical ID).
    pub ldr: u32,
    /// xAPIC destination format register.
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register, vectors 0–255 (bit `v % 32` of word `v / 32`).
    pub isr: [u32; 8],
    /// Trigger mode register.
    pub tmr: [u32; 8],
    /// Interrupt request register.
    pub irr: [u32; 8],
    /// Error status as last latched by an ESR write.
    pub esr: u32,
    /// Errors seen since the last ESR write.
    pub esr_pending: u32,
    /// Interrupt command register (xAPIC: destination in bits 63:56; x2APIC: 63:32).
    pub icr: u64,
    /// The LVT, in [`lvt`] order.
    pub lvt: [u32; 6],
    /// Timer initial count.
    pub timer_initial: u32,
    /// Timer divide configuration.
    pub timer_divide: u32,
    /// A one-shot or periodic count is running.
    pub timer_armed: bool,
    /// Timer clock cycle (bus cycles on the `now_ns` time line) at which the running count
    /// was [`State::timer_count_at_start`].
    pub timer_start: u64,
    /// The count at [`State::timer_start`].
    pub timer_count_at_start: u32,
    /// `IA32_TSC_DEADLINE` (0 = disarmed).
    pub tsc_deadline: u64,
    /// When the TSC deadline falls, in ns on the `now_ns` time line.
    pub tsc_deadline_ns: Option<u64>,
    /// Latest `now_ns` seen.
    pub last_ns: u64,
}

/// One local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapic {
    config: LapicConfig,
    s: State,
}

fn test_bit(bits: &[u32; 8], vector: u8) -> bool {
    bits[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
}

fn set_bit(bits: &mut [u32; 8], vector: u8, value: bool) {
    let word = &mut bits[usize::from(vector / 32)];
    if value {
        *word |= 1 << (vector % 32);
    } else {
        *word &= !(1 << (vector % 32));
    }
}

/// The highest vector set in a 256-bit register.
fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find_map(|word| {
        let w = bits[word];
        // word < 8 and the bit index < 32, so the vector fits in u8.
        (w != 0).then(|| (word * 32 + 31 - w.leading_zeros() as usize) as u8)
    })
}

impl Lapic {
    /// A local APIC in its power-up state (SDM §11.4.7.1): xAPIC mode at [`DEFAULT_BASE`],
    /// software-disabled, every LVT masked.
    pub fn new(config: LapicConfig) -> Result<Lapic, ConfigError> {
        if config.bus_hz == 0 {
            return Err(ConfigError::ZeroBusFrequency);
        }
        if config.tsc_hz == 0 {
            return Err(ConfigError::ZeroTscFrequency);
        }
        if !(36..=52).contains(&config.phys_addr_bits) {
            return Err(ConfigError::PhysAddrBits(config.phys_addr_bits));
        }
        if config.apic_id == 0xFF {
            return Err(ConfigError::BroadcastId);
        }
        let bsp = if config.bsp { APIC_BASE_BSP } else { 0 };
        Ok(Lapic {
            config,
            s: Self::reset_state(&config, DEFAULT_BASE | APIC_BASE_ENABLE | bsp, 0),
        })
    }

    /// The registers after power-up or a global disable, with `apic_base`.
    fn reset_state(config: &LapicConfig, apic_base: u64, last_ns: u64) -> State {
        State {
            apic_base,
            xapic_id: config.apic_id,
            tpr: 0,
            ldr: 0,
            dfr: 0xFFFF_FFFF,
            svr: SVR_VECTOR,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; 6],
            timer_initial: 0,
            timer_divide: 0,
            timer_armed: false,
            timer_start: 0,
            timer_count_at_start: 0,
            tsc_deadline: 0,
            tsc_deadline_ns: None,
            last_ns,
        }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &LapicConfig {
        &self.config
    }

    /// The mode `IA32_APIC_BASE` selects.
    pub fn mode(&self) -> Mode {
        match (
            self.s.apic_base & APIC_BASE_ENABLE != 0,
            self.s.apic_base & APIC_BASE_EXTD != 0,
        ) {
            (true, true) => Mode::X2Apic,
            (true, false) => Mode::XApic,
            _ => Mode::Disabled,
        }
    }

    /// `IA32_APIC_BASE` as `RDMSR` reads it.
    pub fn apic_base(&self) -> u64 {
        self.s.apic_base
    }

    /// Where the xAPIC page is, while the APIC is in xAPIC mode (`None` otherwise: the page
    /// is not decoded and should be unmapped).
    pub fn mmio_base(&self) -> Option<u64> {
        (self.mode() == Mode::XApic).then(|| self.s.apic_base & self.base_address_mask())
    }

    /// `WRMSR IA32_APIC_BASE`: reserved bits (including EXTD without x2APIC support) and the
    /// transitions figure 11-27 forbids (EN = 0 with EXTD = 1, x2APIC to xAPIC, disabled to
    /// x2APIC) raise #GP. The BSP bit is read-only. Clearing EN resets the registers.
    pub fn write_apic_base(&mut self, value: u64) -> Result<(), MsrFault> {
        let gp = Err(MsrFault::Gp {
            msr: IA32_APIC_BASE,
        });
        let mut reserved = APIC_BASE_RESERVED_LOW | !((1u64 << self.config.phys_addr_bits) - 1);
        if !self.config.x2apic {
            reserved |= APIC_BASE_EXTD;
        }
        if value & reserved != 0 {
            return gp;
        }
        let old = self.mode();
        let new = match (value & APIC_BASE_ENABLE != 0, value & APIC_BASE_EXTD != 0) {
            (true, true) => Mode::X2Apic,
            (true, false) => Mode::XApic,
            (false, false) => Mode::Disabled,
            (false, true) => return gp,
        };
        if matches!(
            (old, new),
            (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic)
        ) {
            return gp;
        }
        let bsp = self.s.apic_base & APIC_BASE_BSP;
        let apic_base = (value & !APIC_BASE_BSP) | bsp;
        if new == Mode::Disabled && old != Mode::Disabled {
            self.s = Self::reset_state(&self.config, apic_base, self.s.last_ns);
        } else {
            self.s.apic_base = apic_base;
        }
        Ok(())
    }

    /// An INIT (SDM §11.4.7.3): every register back to its power-up value but the APIC ID
    /// and `IA32_APIC_BASE` (so an x2APIC stays in x2APIC mode); the timer stops.
    pub fn init(&mut self, now_ns: u64) {
        let xapic_id = self.s.xapic_id;
        self.s = Self::reset_state(&self.config, self.s.apic_base, now_ns.max(self.s.last_ns));
        self.s.xapic_id = xapic_id;
    }

    /// Whether the APIC is software-enabled (SVR bit 8).
    pub fn software_enabled(&self) -> bool {
        self.s.svr & SVR_ENABLE != 0
    }

    /// The APIC ID the guest sees: the xAPIC ID register, or the initial ID in x2APIC mode.
    pub fn apic_id(&self) -> u32 {
        match self.mode() {
            Mode::X2Apic => u32::from(self.config.apic_id),
            _ => u32::from(self.s.xapic_id),
        }
    }

    /// The logical destination register as the guest sees it (derived in x2APIC mode:
    /// cluster `id >> 4` in bits 31:16, bit `id & 15` below; §11.12.10.2).
    pub fn logical_id(&self) -> u32 {
        match self.mode() {
            Mode::X2Apic => {
                let id = u32::from(self.config.apic_id);
                ((id >> 4) << 16) | (1 << (id & 0xF))
            }
            _ => self.s.ldr,
        }
    }

    /// Whether an interrupt message with destination `destination` and destination mode
    /// `logical` is for this APIC (SDM §11.6.2; x2APIC §11.12.9). Broadcast (0xFF in xAPIC
    /// mode, 0xFFFF_FFFF in x2APIC mode) matches. A disabled APIC matches nothing.
    pub fn matches_destination(&self, destination: u32, logical: bool) -> bool {
        match self.mode() {
            Mode::Disabled => false,
            Mode::XApic => {
                let dest = destination & 0xFF;
                if dest == 0xFF {
                    return true;
                }
                if !logical {
                    return dest == u32::from(self.s.xapic_id);
                }
                let ldr = self.s.ldr >> 24;
                if self.s.dfr >> 28 == 0xF {
                    // Flat model: a bit per APIC.
                    ldr & dest != 0
                } else {
                    // Cluster model: cluster in bits 7:4, members in 3:0.
                    ldr >> 4 == dest >> 4 && ldr & dest & 0xF != 0
                }
            }
            Mode::X2Apic => {
                if destination == u32::MAX {
                    return true;
                }
                if !logical {
                    return destination == u32::from(self.config.apic_id);
                }
                let ldr = self.logical_id();
                ldr >> 16 == destination >> 16 && ldr & destination & 0xFFFF != 0
            }
        }
    }

    /// Accepts a fixed or lowest-priority interrupt for `vector` into IRR (TMR records the
    /// trigger mode). Returns whether it was accepted: a disabled or software-disabled APIC
    /// drops it, and vectors 0–15 are illegal (ESR "receive illegal vector").
    pub fn accept_interrupt(&mut self, vector: u8, level_triggered: bool) -> bool {
        if self.mode() == Mode::Disabled || !self.software_enabled() {
            return false;
        }
        if vector < 16 {
            self.signal_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        set_bit(&mut self.s.irr, vector, true);
        set_bit(&mut self.s.tmr, vector, level_triggered);
        true
    }

    /// The vector the APIC presents to the CPU: the highest in IRR whose priority class is
    /// above PPR's (§11.8.3). `None` if nothing is deliverable (or the APIC is disabled).
    pub fn highest_pending(&self) -> Option<u8> {
        if self.mode() == Mode::Disabled {
            return None;
        }
        let vector = highest(&self.s.irr)?;
        (vector & 0xF0 > self.ppr() & 0xF0).then_some(vector)
    }

    /// The CPU took `vector` (the VMM injected it): IRR to ISR. Returns false, changing
    /// nothing, if `vector` is not requested in IRR.
    pub fn acknowledge(&mut self, vector: u8) -> bool {
        if !test_bit(&self.s.irr, vector) {
            return false;
        }
        set_bit(&mut self.s.irr, vector, false);
        set_bit(&mut self.s.isr, vector, true);
        true
    }

    /// Whether the 8259's INTR reaches the CPU through this APIC: the APIC is disabled (LINT0
    /// is then the INTR pin), or LVT LINT0 is unmasked with ExtINT delivery (virtual wire).
    pub fn accepts_pic_interrupts(&self) -> bool {
        if self.mode() == Mode::Disabled {
            return true;
        }
        let lint0 = self.s.lvt[lvt::LINT0];
        lint0 & LVT_MASKED == 0 && (lint0 & LVT_DELIVERY_MODE) >> 8 == 7
    }

    /// The processor priority (§11.8.3.1).
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.s.isr).unwrap_or(0);
        if self.s.tpr >> 4 >= isrv >> 4 {
            self.s.tpr
        } else {
            isrv & 0xF0
        }
    }

    /// The arbitration priority (SDM §11.6.2.4, "Lowest Priority Delivery Mode").
    fn apr(&self) -> u8 {
        let tpr = self.s.tpr;
        let isrv = highest(&self.s.isr).unwrap_or(0);
        let irrv = highest(&self.s.irr).unwrap_or(0);
        if tpr >> 4 >= irrv >> 4 && tpr >> 4 > isrv >> 4 {
            tpr
        } else {
            (tpr & 0xF0).max(isrv & 0xF0).max(irrv & 0xF0)
        }
    }

    /// EOI: ends the highest in-service interrupt; reports it if it was level-triggered.
    fn end_of_interrupt(&mut self) -> Option<LapicEvent> {
        let vector = highest(&self.s.isr)?;
        set_bit(&mut self.s.isr, vector, false);
        test_bit(&self.s.tmr, vector).then_some(LapicEvent::Eoi { vector })
    }

    /// Records an error and raises the LVT error interrupt if it is unmasked.
    fn signal_error(&mut self, error: u32) {
        self.s.esr_pending |= error;
        let entry = self.s.lvt[lvt::ERROR];
        // An illegal error vector is not delivered (and reports nothing, to avoid a loop).
        let vector = (entry & LVT_VECTOR) as u8;
        if entry & LVT_MASKED == 0 && vector >= 16 && self.software_enabled() {
            set_bit(&mut self.s.irr, vector, true);
            set_bit(&mut self.s.tmr, vector, false);
        }
    }

    /// The ICR was written: sends the IPI it describes. A self IPI is accepted here; the rest
    /// become an event.
    fn send_ipi(&mut self) -> Option<LapicEvent> {
        let icr = self.s.icr;
        let vector = (icr & ICR_VECTOR) as u8;
        let delivery_mode = DeliveryMode::from_bits((icr >> ICR_DELIVERY_MODE_SHIFT) as u8)?;
        if matches!(
            delivery_mode,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) && vector < 16
        {
            self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let shorthand = match (icr >> ICR_SHORTHAND_SHIFT) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        let level_triggered = icr & ICR_TRIGGER_LEVEL != 0;
        if shorthand == Shorthand::SelfOnly {
            // Only fixed delivery is valid with the self shorthand.
            if delivery_mode == DeliveryMode::Fixed {
                self.accept_interrupt(vector, level_triggered);
            }
            return None;
        }
        let destination = match self.mode() {
            Mode::X2Apic => (icr >> ICR_X2APIC_DEST_SHIFT) as u32,
            _ => (icr >> ICR_XAPIC_DEST_SHIFT) as u32,
        };
        Some(LapicEvent::Ipi(Ipi {
            vector,
            delivery_mode,
            logical: icr & ICR_DEST_LOGICAL != 0,
            assert: icr & ICR_LEVEL_ASSERT != 0,
            level_triggered,
            shorthand,
            destination,
        }))
    }

    /// Masks every LVT (software disable, §11.4.7.2).
    fn mask_all_lvts(&mut self) {
        for entry in &mut self.s.lvt {
            *entry |= LVT_MASKED;
        }
    }

    fn base_address_mask(&self) -> u64 {
        ((1u64 << self.config.phys_addr_bits) - 1) & !0xFFF
    }
}

#[cfg(test)]
mod tests;
