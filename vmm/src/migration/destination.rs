//! The destination's side of the conversation: which message may come when, what each
//! one is checked against, and nothing built before `Complete`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::StreamError;
use super::cpu::CpuView;
use super::message::{Config, MemoryRun, Message, Refusal, Start};
use crate::memory::{LARGE_PAGE_SIZE, MAX_GUEST_RAM, MIN_GUEST_RAM};

/// What the destination accepts.
#[derive(Clone, Debug)]
pub struct DestinationPolicy {
    /// Tokens that admit a source (the migration token and API tokens); empty admits none.
    pub tokens: Vec<String>,
    /// The CPU this appliance gives guests.
    pub cpu: CpuView,
    /// The most guest RAM it would take (its free memory, less a margin).
    pub max_memory: u64,
    /// The most vCPUs a VM may have here.
    pub max_vcpus: u32,
}

/// What a message asks of the kernel, once the state machine accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationEvent {
    /// Start accepted (token, version, CPU): reply `Accepted`.
    Started(Start),
    /// Configuration plausible: the kernel checks the name, images and memory, reserves
    /// the RAM, and replies `Accepted` or refuses.
    Configured(Config),
    /// Pages to copy into the reserved RAM (checked to lie inside it).
    Memory(MemoryRun),
    /// A round ended.
    RoundEnd {
        /// Its number.
        round: u32,
        /// Pages in it, as the source counted.
        pages: u64,
    },
    /// The source paused the VM: downtime starts now.
    Paused,
    /// The device and vCPU state arrived (kept until `Complete`).
    StateReceived,
    /// Everything arrived: build the VM from the RAM and this state, start it and reply
    /// `Resumed`.
    Complete {
        /// The saved-VM sections.
        state: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitStart,
    AwaitConfig,
    PreCopy,
    Paused,
    HaveState,
    Done,
    Failed,
}

impl Phase {
    fn expected(self) -> &'static str {
        match self {
            Phase::AwaitStart => "start",
            Phase::AwaitConfig => "config",
            Phase::PreCopy => "memory, round-end or pause",
            Phase::Paused => "memory, round-end or state",
            Phase::HaveState => "complete",
            Phase::Done => "nothing (the migration is complete)",
            Phase::Failed => "nothing (the migration was refused)",
        }
    }
}

/// One incoming migration.
#[derive(Debug)]
pub struct Destination {
    policy: DestinationPolicy,
    phase: Phase,
    memory_size: u64,
    state: Option<Vec<u8>>,
    /// Memory bytes received so far.
    pub memory_bytes: u64,
    /// Rounds the source finished.
    pub rounds: u32,
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Destination {
    /// Waits for a source's `Start`.
    pub fn new(policy: DestinationPolicy) -> Destination {
        Destination {
            policy,
            phase: Phase::AwaitStart,
            memory_size: 0,
            state: None,
            memory_bytes: 0,
            rounds: 0,
        }
    }

    /// Whether `Complete` was accepted.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether the migration was refused (no further message is accepted).
    pub fn has_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// The kernel refused the migration for its own reason (images, name, memory, build):
    /// the conversation ends.
    pub fn fail(&mut self) {
        self.phase = Phase::Failed;
    }

    /// The next message; any error ends the conversation (the caller replies `Refused` and
    /// drops what it reserved).
    pub fn handle(&mut self, message: Message) -> Result<DestinationEvent, Refusal> {
        let result = self.step(message);
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        result
    }

    /// A stream error from the decoder, as the refusal to reply with.
    pub fn stream_error(&mut self, error: &StreamError) -> Refusal {
        self.phase = Phase::Failed;
        Refusal::Stream(error.to_string())
    }

    /// The source closed the stream: fine only after `Complete`.
    pub fn end_of_stream(&mut self) -> Result<(), Refusal> {
        if self.phase == Phase::Done {
            return Ok(());
        }
        let expected = self.phase.expected();
        self.phase = Phase::Failed;
        Err(Refusal::Stream(alloc::format!(
            "the source closed the stream while {expected} was expected"
        )))
    }

    fn out_of_order(&self, message: &Message) -> Refusal {
        Refusal::Stream(
            StreamError::OutOfOrder {
                got: message.name(),
                expected: self.phase.expected(),
            }
            .to_string(),
        )
    }

    fn step(&mut self, message: Message) -> Result<DestinationEvent, Refusal> {
        if let Message::Abort(reason) = message {
            return Err(Refusal::Stream(StreamError::Aborted(reason).to_string()));
        }
        match (self.phase, message) {
            (Phase::AwaitStart, Message::Start(start)) => {
                let admitted = self
                    .policy
                    .tokens
                    .iter()
                    .filter(|t| !t.is_empty())
                    .any(|t| same_secret(t.as_bytes(), start.token.as_bytes()));
                if !admitted {
                    return Err(Refusal::BadToken);
                }
                self.policy
                    .cpu
                    .can_host(&start.cpu)
                    .map_err(|e| Refusal::Cpu(e.to_string()))?;
                self.phase = Phase::AwaitConfig;
                Ok(DestinationEvent::Started(start))
            }
            (Phase::AwaitConfig, Message::Config(config)) => {
                let size = config.memory_size;
                if !(MIN_GUEST_RAM..=MAX_GUEST_RAM).contains(&size)
                    || !size.is_multiple_of(LARGE_PAGE_SIZE)
                {
                    return Err(Refusal::Stream(
                        StreamError::Malformed {
                            what: "config",
                            reason: "RAM size not a multiple of 2 MiB between 2 MiB and 64 GiB",
                        }
                        .to_string(),
                    ));
                }
                if size > self.policy.max_memory {
                    return Err(Refusal::NoMemory { bytes: size });
                }
                if config.vcpus == 0 || config.vcpus > self.policy.max_vcpus {
                    return Err(Refusal::Build(alloc::format!(
                        "{} vCPUs (this appliance takes 1 to {})",
                        config.vcpus,
                        self.policy.max_vcpus
                    )));
                }
                self.memory_size = size;
                self.phase = Phase::PreCopy;
                Ok(DestinationEvent::Configured(config))
            }
            (Phase::PreCopy | Phase::Paused, Message::Memory(run)) => {
                let len = run.data.len() as u64;
                if run
                    .gpa
                    .checked_add(len)
                    .is_none_or(|end| end > self.memory_size)
                {
                    return Err(Refusal::Stream(
                        StreamError::MemoryOutOfRange {
                            gpa: run.gpa,
                            len,
                            ram: self.memory_size,
                        }
                        .to_string(),
                    ));
                }
                self.memory_bytes += len;
                Ok(DestinationEvent::Memory(run))
            }
            (Phase::PreCopy | Phase::Paused, Message::RoundEnd { round, pages }) => {
                self.rounds = self.rounds.max(round);
                Ok(DestinationEvent::RoundEnd { round, pages })
            }
            (Phase::PreCopy, Message::Pause) => {
                self.phase = Phase::Paused;
                Ok(DestinationEvent::Paused)
            }
            (Phase::Paused, Message::State(state)) => {
                self.state = Some(state);
                self.phase = Phase::HaveState;
                Ok(DestinationEvent::StateReceived)
            }
            (Phase::HaveState, Message::Complete) => {
                self.phase = Phase::Done;
                Ok(DestinationEvent::Complete {
                    state: self.state.take().unwrap_or_default(),
                })
            }
            (_, message) => Err(self.out_of_order(&message)),
        }
    }
}
