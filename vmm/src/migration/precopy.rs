//! The source's pre-copy policy and how dirty pages become memory frames.

use crate::backend::DirtyBitmap;

use super::message::MAX_MEMORY_RUN;

/// When the source stops copying while the guest runs and pauses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreCopy {
    /// Rounds sent so far (round 1 is all of RAM).
    pub round: u32,
    /// Pause after this many rounds whatever the dirty set (a guest writing faster than
    /// the link never converges).
    pub max_rounds: u32,
    /// Pause once a round leaves at most this many dirty pages (what the pause then has
    /// to send decides the downtime).
    pub small_enough: u64,
}

/// What to do after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundDecision {
    /// Harvest and send another round with the guest running.
    Another,
    /// Pause the guest and send the last pages.
    Pause {
        /// Whether the round limit, not convergence, decided it.
        limit_reached: bool,
    },
}

impl PreCopy {
    /// A policy: at most `max_rounds` rounds (at least 1), pause at `small_enough` pages.
    pub fn new(max_rounds: u32, small_enough: u64) -> PreCopy {
        PreCopy {
            round: 0,
            max_rounds: max_rounds.max(1),
            small_enough,
        }
    }

    /// Records that a round was sent, and decides given `dirty` pages written since it
    /// began.
    pub fn after_round(&mut self, dirty: u64) -> RoundDecision {
        self.round = self.round.saturating_add(1);
        if dirty <= self.small_enough {
            RoundDecision::Pause {
                limit_reached: false,
            }
        } else if self.round >= self.max_rounds {
            RoundDecision::Pause {
                limit_reached: true,
            }
        } else {
            RoundDecision::Another
        }
    }
}

/// The dirty pages of `log` as `(gpa, len)` runs of at most [`MAX_MEMORY_RUN`] bytes, each
/// one memory frame.
pub fn memory_runs(log: &DirtyBitmap) -> impl Iterator<Item = (u64, u64)> + '_ {
    log.runs().flat_map(|(gpa, len)| {
        (0..len.div_ceil(MAX_MEMORY_RUN)).map(move |i| {
            let at = gpa + i * MAX_MEMORY_RUN;
            (at, MAX_MEMORY_RUN.min(gpa + len - at))
        })
    })
}
