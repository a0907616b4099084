//! Saving and restoring the PIT's [`State`], with the checks that keep a damaged snapshot
//! from loading.

use super::{CW_RW_SHIFT, Channel, DEVICE, PORT_B_GATE2, PORT_B_WRITABLE, Pit, State, StateError};
use crate::persist::Persist;

impl Pit {
    /// All counters and port B, for a snapshot.
    pub fn state(&self) -> State {
        State {
            channels: self.channels.map(|ch| ch.s),
            port_b: self.port_b,
            now_clock: self.now_clock,
            irq0_cursor: self.irq0_cursor,
            irq0_pending: self.irq0_pending,
        }
    }

    /// Loads the counters and port B from a snapshot. A state no 8254 can be in is refused and
    /// the model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        const NAMES: [[&str; 6]; 3] = [
            [
                "channels[0].control",
                "channels[0].reload",
                "channels[0].count",
                "channels[0].origin",
                "channels[0].paused",
                "channels[0].gate",
            ],
            [
                "channels[1].control",
                "channels[1].reload",
                "channels[1].count",
                "channels[1].origin",
                "channels[1].paused",
                "channels[1].gate",
            ],
            [
                "channels[2].control",
                "channels[2].reload",
                "channels[2].count",
                "channels[2].origin",
                "channels[2].paused",
                "channels[2].gate",
            ],
        ];
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        for (i, ch) in state.channels.iter().enumerate() {
            let [control, reload, count, origin, paused, gate] = NAMES[i];
            // A count survives a control word, so a binary count may sit under a BCD mode.
            let max = 0x1_0000;
            if ch.control & !0x3F != 0 || (ch.control >> CW_RW_SHIFT) & 3 == 0 {
                return invalid(control, u64::from(ch.control));
            }
            if !(1..=max).contains(&ch.reload) {
                return invalid(reload, u64::from(ch.reload));
            }
            if !(1..=max).contains(&ch.count) {
                return invalid(count, u64::from(ch.count));
            }
            if ch.origin > state.now_clock {
                return invalid(origin, ch.origin);
            }
            if ch.paused.is_some_and(|d| d > state.now_clock) {
                return invalid(paused, ch.paused.unwrap_or(0));
            }
            // Counters 0 and 1 have their gates tied high; counter 2's is port B bit 0.
            let wired = i < 2 || state.port_b & PORT_B_GATE2 != 0;
            if ch.gate != wired {
                return invalid(gate, u64::from(ch.gate));
            }
        }
        if state.port_b & !PORT_B_WRITABLE != 0 {
            return invalid("port_b", u64::from(state.port_b));
        }
        if state.irq0_cursor > state.now_clock {
            return invalid("irq0_cursor", state.irq0_cursor);
        }
        self.channels = state.channels.map(|s| Channel { s });
        self.port_b = state.port_b;
        self.now_clock = state.now_clock;
        self.irq0_cursor = state.irq0_cursor;
        self.irq0_pending = state.irq0_pending;
        Ok(())
    }
}

impl Persist for Pit {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<Pit, StateError> {
        let mut pit = Pit::new(0);
        Pit::restore(&mut pit, *state)?;
        Ok(pit)
    }
}
