//! Saving and restoring the local APIC's [`State`], with the checks that keep a damaged
//! snapshot from loading.

use super::{
    APIC_BASE_BSP, APIC_BASE_ENABLE, APIC_BASE_EXTD, APIC_BASE_RESERVED_LOW, DEVICE,
    DIVIDE_WRITABLE, ICR_LOW_WRITABLE, LVT_MASKED, LVT_TIMER_MODE, LVT_WRITABLE, Lapic, SVR_ENABLE,
    SVR_WRITABLE, State, StateError, TIMER_TSC_DEADLINE, lvt,
};
use super::{ConfigError, LapicConfig};
use crate::persist::Persist;

impl Lapic {
    /// Every register and the timer, for a snapshot.
    pub fn state(&self) -> State {
        self.s
    }

    /// Loads registers and timer from a snapshot taken of an APIC with the same
    /// configuration. A state such an APIC cannot be in is refused and the model is left
    /// unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        let mut reserved = APIC_BASE_RESERVED_LOW | !((1u64 << self.config.phys_addr_bits) - 1);
        if !self.config.x2apic {
            reserved |= APIC_BASE_EXTD;
        }
        let bsp_ok = (state.apic_base & APIC_BASE_BSP != 0) == self.config.bsp;
        let mode_ok =
            state.apic_base & APIC_BASE_ENABLE != 0 || state.apic_base & APIC_BASE_EXTD == 0;
        if state.apic_base & reserved != 0 || !bsp_ok || !mode_ok {
            return invalid("apic_base", state.apic_base);
        }
        if state.ldr & 0x00FF_FFFF != 0 {
            return invalid("ldr", u64::from(state.ldr));
        }
        if state.dfr | 0xF000_0000 != 0xFFFF_FFFF {
            return invalid("dfr", u64::from(state.dfr));
        }
        if state.svr & !SVR_WRITABLE != 0 {
            return invalid("svr", u64::from(state.svr));
        }
        if (state.esr | state.esr_pending) & !0xFF != 0 {
            return invalid("esr", u64::from(state.esr | state.esr_pending));
        }
        let icr_reserved = if state.apic_base & APIC_BASE_EXTD != 0 {
            !(ICR_LOW_WRITABLE | 0xFFFF_FFFF_0000_0000)
        } else {
            !(ICR_LOW_WRITABLE | 0xFF00_0000_0000_0000)
        };
        if state.icr & icr_reserved != 0 {
            return invalid("icr", state.icr);
        }
        for (i, &entry) in state.lvt.iter().enumerate() {
            let masked_ok = state.svr & SVR_ENABLE != 0 || entry & LVT_MASKED != 0;
            if entry & !LVT_WRITABLE[i] != 0 || !masked_ok {
                return invalid(LVT_NAMES[i], u64::from(entry));
            }
        }
        if state.timer_divide & !DIVIDE_WRITABLE != 0 {
            return invalid("timer_divide", u64::from(state.timer_divide));
        }
        let tsc_mode = state.lvt[lvt::TIMER] & LVT_TIMER_MODE == TIMER_TSC_DEADLINE;
        if state.timer_armed && (state.timer_initial == 0 || tsc_mode) {
            return invalid("timer_armed", u64::from(state.timer_armed));
        }
        if state.timer_count_at_start > state.timer_initial {
            return invalid(
                "timer_count_at_start",
                u64::from(state.timer_count_at_start),
            );
        }
        if state.tsc_deadline_ns.is_some() && (!tsc_mode || state.tsc_deadline == 0) {
            return invalid("tsc_deadline_ns", state.tsc_deadline_ns.unwrap_or(0));
        }
        self.s = state;
        Ok(())
    }
}

/// Field names for LVT restore errors, in [`lvt`] order.
const LVT_NAMES: [&str; 6] = [
    "lvt[TIMER]",
    "lvt[THERMAL]",
    "lvt[PERF]",
    "lvt[LINT0]",
    "lvt[LINT1]",
    "lvt[ERROR]",
];

/// Why a local APIC could not be rebuilt from a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The configuration it is rebuilt with is refused.
    Config(ConfigError),
    /// The state is refused.
    State(StateError),
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RestoreError::Config(e) => e.fmt(f),
            RestoreError::State(e) => e.fmt(f),
        }
    }
}

impl Persist for Lapic {
    type State = State;
    /// The configuration the APIC had when it was saved (id, BSP, clocks).
    type ConstructorArgs = LapicConfig;
    type Error = RestoreError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore(config: LapicConfig, state: &State) -> Result<Lapic, RestoreError> {
        let mut lapic = Lapic::new(config).map_err(RestoreError::Config)?;
        Lapic::restore(&mut lapic, *state).map_err(RestoreError::State)?;
        Ok(lapic)
    }
}
