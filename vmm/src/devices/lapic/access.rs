//! Guest access to the local APIC registers: the xAPIC MMIO page and the x2APIC MSRs.
//!
//! Both views reach the same registers through [`Lapic::read_register`] and
//! [`Lapic::write_register`], keyed by xAPIC offset. They differ in how they treat a bad
//! access (SDM Vol. 3A §11.12.1.2–3):
//!
//! | access | xAPIC (MMIO) | x2APIC (MSR) |
//! | --- | --- | --- |
//! | register not in this mode (CMCI, reserved offsets; in x2APIC also APR, RRD, DFR, ICR high) | ESR "illegal register address"; reads 0 | #GP |
//! | write to a read-only register (ID and LDR in x2APIC, version, PPR, ISR, TMR, IRR, current count) | ignored | #GP |
//! | read of a write-only register (EOI, self IPI) | EOI reads 0 | #GP |
//! | reserved bits set in a write | ignored (masked) | #GP |
//! | EOI or ESR write of a non-zero value | accepted | #GP |
//! | access size | 32-bit aligned writes only (others dropped, as KVM); reads by byte lane | 64-bit |
//!
//! The MMIO page reads all ones and drops writes unless the APIC is in xAPIC mode; the MSRs
//! raise #GP unless it is in x2APIC mode.

use crate::msr::MsrFault;

use super::{
    ESR_ILLEGAL_REGISTER, ESR_SEND_ILLEGAL_VECTOR, ICR_LOW_WRITABLE, LVT_DELIVERY_STATUS,
    LVT_MASKED, LVT_REMOTE_IRR, LVT_WRITABLE, Lapic, LapicEvent, Mode, SVR_ENABLE, SVR_WRITABLE,
    VERSION_VALUE, X2APIC_MSR_FIRST, X2APIC_MSR_LAST, lvt, reg,
};

/// Why a register write was refused.
enum WriteRefused {
    /// No such register in this mode.
    NoRegister,
    /// The register is read-only.
    ReadOnly,
    /// Reserved bits were set (x2APIC mode checks them).
    Reserved,
}

/// The LVT index of an LVT register offset.
fn lvt_index(offset: u32) -> Option<usize> {
    Some(match offset {
        reg::LVT_TIMER => lvt::TIMER,
        reg::LVT_THERMAL => lvt::THERMAL,
        reg::LVT_PERF => lvt::PERF,
        reg::LVT_LINT0 => lvt::LINT0,
        reg::LVT_LINT1 => lvt::LINT1,
        reg::LVT_ERROR => lvt::ERROR,
        _ => return None,
    })
}

/// The index (0–7) of one of the eight 32-bit words of ISR, TMR or IRR at `offset`.
fn word(offset: u32, first: u32) -> Option<usize> {
    (first..first + 0x80)
        .contains(&offset)
        .then(|| ((offset - first) / 0x10) as usize)
}

impl Lapic {
    /// A guest load of `size` bytes at `offset` in the xAPIC page at `now_ns` (byte lanes of
    /// the 32-bit register; lanes past it read 0). All ones outside xAPIC mode.
    pub fn read_mmio(&mut self, offset: u64, size: u8, now_ns: u64) -> u64 {
        let size = size.min(8);
        let low_bytes = |value: u64| {
            if size >= 8 {
                value
            } else {
                value & ((1u64 << (8 * size)) - 1)
            }
        };
        if self.mode() != Mode::XApic {
            return low_bytes(u64::MAX);
        }
        self.update_timer(now_ns);
        let offset = offset & 0xFFF;
        let lane = offset & 0xF;
        if lane >= 4 {
            return 0;
        }
        // Offsets are below 0x1000.
        let dword = match self.read_register(offset as u32 & !0xF) {
            Some(value) => value,
            None => {
                self.signal_error(ESR_ILLEGAL_REGISTER);
                0
            }
        };
        low_bytes(u64::from(dword >> (8 * lane)))
    }

    /// A guest store of `value` at `offset` in the xAPIC page at `now_ns`. Only aligned 32-bit
    /// stores reach a register; outside xAPIC mode the store is dropped.
    pub fn write_mmio(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
        now_ns: u64,
    ) -> Option<LapicEvent> {
        if self.mode() != Mode::XApic || size != 4 || offset & 0xF != 0 {
            return None;
        }
        self.update_timer(now_ns);
        // Offsets are below 0x1000; the store is 32 bits.
        match self.write_register((offset & 0xFFF) as u32, value as u32, false) {
            Ok(event) => event,
            Err(WriteRefused::NoRegister) => {
                self.signal_error(ESR_ILLEGAL_REGISTER);
                None
            }
            Err(WriteRefused::ReadOnly | WriteRefused::Reserved) => None,
        }
    }

    /// `RDMSR` of x2APIC register `msr` (0x800–0x8FF) at `now_ns`.
    pub fn read_msr(&mut self, msr: u32, now_ns: u64) -> Result<u64, MsrFault> {
        let gp = Err(MsrFault::Gp { msr });
        if self.mode() != Mode::X2Apic || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return gp;
        }
        self.update_timer(now_ns);
        let offset = (msr - X2APIC_MSR_FIRST) << 4;
        if offset == reg::ICR_LOW {
            return Ok(self.s.icr);
        }
        match self.read_register(offset) {
            Some(value) => Ok(u64::from(value)),
            None => gp,
        }
    }

    /// `WRMSR` of x2APIC register `msr` (0x800–0x8FF) at `now_ns`; returns what the write asks
    /// of the VMM (an IPI, a level-triggered EOI).
    ///
    /// ```
    /// use keel_vmm::devices::lapic::{Lapic, LapicConfig, APIC_BASE_ENABLE, APIC_BASE_EXTD};
    /// use keel_vmm::msr::MsrFault;
    ///
    /// let mut lapic = Lapic::new(LapicConfig::bsp(2_000_000_000)).unwrap();
    /// let base = lapic.apic_base();
    /// lapic.write_apic_base(base | APIC_BASE_EXTD).unwrap();
    /// lapic.write_msr(0x80F, 0x1FF, 0).unwrap(); // SVR: enable, spurious vector 0xFF
    /// lapic.write_msr(0x83F, 0x40, 0).unwrap(); // self IPI
    /// assert_eq!(lapic.highest_pending(), Some(0x40));
    /// assert_eq!(lapic.write_msr(0x80E, 0, 0), Err(MsrFault::Gp { msr: 0x80E })); // no DFR
    /// ```
    pub fn write_msr(
        &mut self,
        msr: u32,
        value: u64,
        now_ns: u64,
    ) -> Result<Option<LapicEvent>, MsrFault> {
        let gp = Err(MsrFault::Gp { msr });
        if self.mode() != Mode::X2Apic || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return gp;
        }
        self.update_timer(now_ns);
        let offset = (msr - X2APIC_MSR_FIRST) << 4;
        if offset == reg::ICR_LOW {
            // One 64-bit register: destination in bits 63:32; bits 12, 13, 16, 17 and 31:20
            // are reserved.
            if value & !(ICR_LOW_WRITABLE | 0xFFFF_FFFF_0000_0000) != 0 {
                return gp;
            }
            self.s.icr = value;
            return Ok(self.send_ipi());
        }
        // Bits 63:32 of every other x2APIC MSR are reserved.
        let Ok(value) = u32::try_from(value) else {
            return gp;
        };
        self.write_register(offset, value, true).or(gp)
    }

    /// The register at xAPIC offset `offset` in the current mode, or `None` if there is no
    /// such readable register.
    fn read_register(&self, offset: u32) -> Option<u32> {
        let x2 = self.mode() == Mode::X2Apic;
        if let Some(i) = lvt_index(offset) {
            return Some(self.s.lvt[i]);
        }
        if let Some(i) = word(offset, reg::ISR) {
            return Some(self.s.isr[i]);
        }
        if let Some(i) = word(offset, reg::TMR) {
            return Some(self.s.tmr[i]);
        }
        if let Some(i) = word(offset, reg::IRR) {
            return Some(self.s.irr[i]);
        }
        Some(match offset {
            reg::ID if x2 => self.apic_id(),
            reg::ID => u32::from(self.s.xapic_id) << 24,
            reg::VERSION => VERSION_VALUE,
            reg::TPR => u32::from(self.s.tpr),
            reg::APR if !x2 => u32::from(self.apr()),
            reg::PPR => u32::from(self.ppr()),
            reg::EOI | reg::RRD if !x2 => 0,
            reg::LDR => self.logical_id(),
            reg::DFR if !x2 => self.s.dfr,
            reg::SVR => self.s.svr,
            reg::ESR => self.s.esr,
            reg::ICR_LOW => self.s.icr as u32,
            reg::ICR_HIGH if !x2 => (self.s.icr >> 32) as u32,
            reg::TIMER_INITIAL => self.s.timer_initial,
            reg::TIMER_CURRENT => self.timer_current_count(),
            reg::TIMER_DIVIDE => self.s.timer_divide,
            _ => return None,
        })
    }

    /// Writes the register at xAPIC offset `offset`. `strict` (x2APIC) refuses reserved bits
    /// and non-zero EOI/ESR writes; otherwise reserved bits are dropped.
    fn write_register(
        &mut self,
        offset: u32,
        value: u32,
        strict: bool,
    ) -> Result<Option<LapicEvent>, WriteRefused> {
        let x2 = self.mode() == Mode::X2Apic;
        let check = |allowed: u32| {
            if strict && value & !allowed != 0 {
                Err(WriteRefused::Reserved)
            } else {
                Ok(value & allowed)
            }
        };
        if let Some(i) = lvt_index(offset) {
            let read_only = LVT_DELIVERY_STATUS
                | if matches!(i, lvt::LINT0 | lvt::LINT1) {
                    LVT_REMOTE_IRR
                } else {
                    0
                };
            let value = check(LVT_WRITABLE[i] | read_only)? & LVT_WRITABLE[i];
            if i == lvt::TIMER {
                self.write_lvt_timer(value);
            } else {
                let masked = if self.software_enabled() {
                    0
                } else {
                    LVT_MASKED
                };
                self.s.lvt[i] = value | masked;
            }
            return Ok(None);
        }
        if word(offset, reg::ISR)
            .or(word(offset, reg::TMR))
            .or(word(offset, reg::IRR))
            .is_some()
        {
            return Err(WriteRefused::ReadOnly);
        }
        match offset {
            reg::ID if !x2 => self.s.xapic_id = (value >> 24) as u8,
            reg::ID | reg::VERSION | reg::PPR | reg::TIMER_CURRENT => {
                return Err(WriteRefused::ReadOnly);
            }
            reg::APR | reg::RRD if !x2 => return Err(WriteRefused::ReadOnly),
            reg::LDR if x2 => return Err(WriteRefused::ReadOnly),
            reg::TPR => self.s.tpr = check(0xFF)? as u8,
            reg::EOI => {
                check(0)?;
                return Ok(self.end_of_interrupt());
            }
            reg::LDR => self.s.ldr = value & 0xFF00_0000,
            reg::DFR if !x2 => self.s.dfr = value | 0x0FFF_FFFF,
            reg::SVR => {
                let was_enabled = self.software_enabled();
                self.s.svr = check(SVR_WRITABLE)?;
                if was_enabled && self.s.svr & SVR_ENABLE == 0 {
                    self.mask_all_lvts();
                }
            }
            reg::ESR => {
                check(0)?;
                // A write latches the errors seen since the last one (§11.5.3).
                self.s.esr = core::mem::take(&mut self.s.esr_pending);
            }
            reg::ICR_LOW if !x2 => {
                let low = u64::from(value) & ICR_LOW_WRITABLE;
                self.s.icr = (self.s.icr & 0xFFFF_FFFF_0000_0000) | low;
                return Ok(self.send_ipi());
            }
            reg::ICR_HIGH if !x2 => {
                let dest = u64::from(value & 0xFF00_0000) << 32;
                self.s.icr = (self.s.icr & 0xFFFF_FFFF) | dest;
            }
            reg::TIMER_INITIAL => self.write_timer_initial(value),
            reg::TIMER_DIVIDE => {
                let value = check(super::DIVIDE_WRITABLE)?;
                self.write_timer_divide(value);
            }
            reg::SELF_IPI if x2 => {
                let vector = check(0xFF)? as u8;
                if vector < 16 {
                    self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
                } else {
                    self.accept_interrupt(vector, false);
                }
            }
            _ => return Err(WriteRefused::NoRegister),
        }
        Ok(None)
    }
}
