//! The local APIC timer (SDM Vol. 3A §11.5.4): one-shot, periodic and TSC-deadline modes.
//!
//! One-shot and periodic counts run on the timer clock ([`LapicConfig::bus_hz`]) divided by
//! the divide configuration register. The clock is derived from `now_ns` as
//! `now_ns * bus_hz / 10^9` bus cycles, and a running count is kept as "the count was `c` at
//! cycle `t`", so the current count is computed, exact to the cycle, and a periodic timer does
//! not drift. TSC-deadline mode converts the deadline to `now_ns` once, when it is written,
//! from the guest TSC at that moment and [`LapicConfig::tsc_hz`].
//!
//! [`LapicConfig::bus_hz`]: super::LapicConfig::bus_hz
//! [`LapicConfig::tsc_hz`]: super::LapicConfig::tsc_hz

use super::{
    DIVIDE_WRITABLE, LVT_MASKED, LVT_TIMER_MODE, LVT_VECTOR, LVT_WRITABLE, Lapic, MIN_PERIOD_NS,
    Mode, TIMER_PERIODIC, TIMER_TSC_DEADLINE, lvt,
};

const NS_PER_SEC: u128 = 1_000_000_000;

/// The divisor for a divide configuration value (SDM figure 11-10: bits 3 and 1:0;
/// 111 is divide by 1).
pub(super) fn divisor(config: u32) -> u64 {
    match (config & 3) | ((config >> 1) & 4) {
        7 => 1,
        bits => 2 << bits,
    }
}

impl Lapic {
    /// Runs the timer up to `now_ns`: an expired count or TSC deadline puts the timer vector
    /// in IRR (unless LVT timer is masked) and re-arms a periodic timer. Returns whether the
    /// timer expired. Register accesses do this first, too.
    pub fn update_timer(&mut self, now_ns: u64) -> bool {
        let now_ns = now_ns.max(self.s.last_ns);
        self.s.last_ns = now_ns;
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            match self.s.tsc_deadline_ns {
                Some(deadline) if now_ns >= deadline => {
                    // The deadline MSR clears when the timer fires (§11.5.4.1).
                    self.s.tsc_deadline = 0;
                    self.s.tsc_deadline_ns = None;
                    self.fire_timer();
                    true
                }
                _ => false,
            }
        } else {
            if !self.s.timer_armed {
                return false;
            }
            let now = self.cycles_at(now_ns);
            let expiry = self.timer_expiry();
            if now < expiry {
                return false;
            }
            if self.timer_mode() == TIMER_PERIODIC {
                // Missed periods coalesce into this one interrupt.
                let period = self.period_cycles();
                let periods = (now - expiry) / period;
                self.s.timer_start = expiry.saturating_add(periods.saturating_mul(period));
                self.s.timer_count_at_start = self.s.timer_initial;
            } else {
                self.s.timer_armed = false;
            }
            self.fire_timer();
            true
        }
    }

    /// When the timer next needs [`Lapic::update_timer`], in ns on the `now_ns` time line:
    /// `None` if it is not running or its interrupt cannot be delivered (LVT timer masked,
    /// APIC disabled or software-disabled).
    pub fn next_timer_deadline(&self) -> Option<u64> {
        if self.mode() == Mode::Disabled
            || !self.software_enabled()
            || self.s.lvt[lvt::TIMER] & LVT_MASKED != 0
        {
            return None;
        }
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return self.s.tsc_deadline_ns;
        }
        self.s
            .timer_armed
            .then(|| self.ns_at_cycles(self.timer_expiry()))
    }

    /// `RDMSR IA32_TSC_DEADLINE`: the armed deadline, 0 if none or outside TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.s.tsc_deadline
        } else {
            0
        }
    }

    /// `WRMSR IA32_TSC_DEADLINE` at `now_ns`, when the guest's TSC reads `guest_tsc`: arms
    /// (or with 0 disarms) the timer in TSC-deadline mode; ignored in the other modes
    /// (§11.5.4.1). A deadline already passed fires at once.
    pub fn write_tsc_deadline(&mut self, value: u64, now_ns: u64, guest_tsc: u64) {
        self.update_timer(now_ns);
        if self.mode() == Mode::Disabled || self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        let now_ns = self.s.last_ns;
        self.s.tsc_deadline = value;
        self.s.tsc_deadline_ns = if value == 0 {
            None
        } else {
            let ticks = u128::from(value.saturating_sub(guest_tsc));
            let delta = (ticks * NS_PER_SEC).div_ceil(u128::from(self.config.tsc_hz));
            Some(
                u64::try_from(delta)
                    .ok()
                    .and_then(|delta| now_ns.checked_add(delta))
                    .unwrap_or(u64::MAX),
            )
        };
        self.update_timer(now_ns);
    }

    /// The current-count register.
    pub(super) fn timer_current_count(&self) -> u32 {
        if !self.s.timer_armed || self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        let elapsed = self
            .cycles_at(self.s.last_ns)
            .saturating_sub(self.s.timer_start);
        let ticks = elapsed / divisor(self.s.timer_divide);
        // The result is at most timer_count_at_start, a u32.
        u64::from(self.s.timer_count_at_start).saturating_sub(ticks) as u32
    }

    /// A write of the initial-count register (ignored in TSC-deadline mode): starts the
    /// count, or stops it with 0.
    pub(super) fn write_timer_initial(&mut self, value: u32) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return;
        }
        self.s.timer_initial = value;
        self.s.timer_armed = value != 0;
        self.s.timer_start = self.cycles_at(self.s.last_ns);
        self.s.timer_count_at_start = value;
    }

    /// A write of the divide configuration: a running count goes on from its current value
    /// at the new rate.
    pub(super) fn write_timer_divide(&mut self, value: u32) {
        if self.s.timer_armed {
            self.s.timer_count_at_start = self.timer_current_count();
            self.s.timer_start = self.cycles_at(self.s.last_ns);
        }
        self.s.timer_divide = value & DIVIDE_WRITABLE;
    }

    /// A write of LVT timer. Moving into or out of TSC-deadline mode disarms the timer and
    /// clears the initial count and the deadline (§11.5.4.1, as KVM does).
    pub(super) fn write_lvt_timer(&mut self, value: u32) {
        let old_tsc = self.timer_mode() == TIMER_TSC_DEADLINE;
        let mut entry = value & LVT_WRITABLE[lvt::TIMER];
        if !self.software_enabled() {
            entry |= LVT_MASKED;
        }
        self.s.lvt[lvt::TIMER] = entry;
        if old_tsc != (self.timer_mode() == TIMER_TSC_DEADLINE) {
            self.s.timer_armed = false;
            self.s.timer_initial = 0;
            self.s.timer_count_at_start = 0;
            self.s.tsc_deadline = 0;
            self.s.tsc_deadline_ns = None;
        }
    }

    fn timer_mode(&self) -> u32 {
        self.s.lvt[lvt::TIMER] & LVT_TIMER_MODE
    }

    fn fire_timer(&mut self) {
        let entry = self.s.lvt[lvt::TIMER];
        if entry & LVT_MASKED == 0 {
            // The vector field is 8 bits.
            self.accept_interrupt((entry & LVT_VECTOR) as u8, false);
        }
    }

    /// Bus cycles of a full periodic period (at least [`MIN_PERIOD_NS`]).
    fn period_cycles(&self) -> u64 {
        let full = u64::from(self.s.timer_initial).saturating_mul(divisor(self.s.timer_divide));
        full.max(self.min_period_cycles()).max(1)
    }

    fn min_period_cycles(&self) -> u64 {
        let cycles =
            (u128::from(MIN_PERIOD_NS) * u128::from(self.config.bus_hz)).div_ceil(NS_PER_SEC);
        u64::try_from(cycles).unwrap_or(u64::MAX)
    }

    /// The bus cycle at which the running count reaches 0.
    fn timer_expiry(&self) -> u64 {
        let div = divisor(self.s.timer_divide);
        let mut remaining = u64::from(self.s.timer_count_at_start).saturating_mul(div);
        if self.timer_mode() == TIMER_PERIODIC
            && u64::from(self.s.timer_initial).saturating_mul(div) < self.min_period_cycles()
        {
            remaining = self.period_cycles();
        }
        self.s.timer_start.saturating_add(remaining)
    }

    /// Timer clock cycles at `now_ns` (saturating).
    pub(super) fn cycles_at(&self, now_ns: u64) -> u64 {
        let cycles = u128::from(now_ns) * u128::from(self.config.bus_hz) / NS_PER_SEC;
        u64::try_from(cycles).unwrap_or(u64::MAX)
    }

    /// The first ns at which [`Lapic::cycles_at`] reaches `cycles` (saturating).
    fn ns_at_cycles(&self, cycles: u64) -> u64 {
        let ns = (u128::from(cycles) * NS_PER_SEC).div_ceil(u128::from(self.config.bus_hz));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}
