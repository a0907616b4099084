//! The two ends of a migration as byte-in/byte-out sessions over a [`Vm`]: the kernel
//! moves their bytes over TCP and calls them from its loop; each call does a bounded
//! amount of work, so a migration never stalls the console or the API.
//!
//! The source ([`SourceSession`]) pipelines `Start` and `Config`, sends no memory before
//! both are accepted, then pre-copies: round 1 is every non-zero page of RAM (the
//! destination's RAM starts zeroed), each later round the pages the dirty log harvested;
//! when [`PreCopy`] says so it pauses the VM, sends the last harvest, the state and
//! `Complete`, and waits for `Resumed`. Any failure stops the dirty log and resumes the
//! VM if the session paused it: the VM keeps running on the source.
//!
//! The destination ([`DestinationSession`]) decodes frames, runs them through
//! [`Destination`], copies memory into RAM it reserved at `Config`, and hands RAM and
//! state over at `Complete` ([`Arrived`]); what it reserved is freed on any refusal.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::destination::{Destination, DestinationEvent, DestinationPolicy};
use super::frame::{FrameDecoder, MAGIC};
use super::message::{Config, MAX_MEMORY_RUN, MemoryRun, Message, Refusal, Reply, Start};
use super::precopy::{PreCopy, RoundDecision, memory_runs};
use crate::host::{FRAME_SIZE, HostMemory};
use crate::memory::GuestMemory;
use crate::vm::{Clock, Vm};

/// Figures of a finished (or failed) migration, as the source saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Pre-copy rounds, the paused one included.
    pub rounds: u32,
    /// Bytes queued for the destination.
    pub bytes: u64,
    /// Memory pages sent.
    pub pages: u64,
    /// Pages sent after the pause.
    pub paused_pages: u64,
    /// Downtime the destination measured (pause received → VM resumed), microseconds.
    pub downtime_us: u64,
}

/// Where a source session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceOutcome {
    /// Still going.
    InProgress,
    /// The VM runs on the destination: the caller drops its copy.
    Done,
    /// Abandoned; the VM runs on here (resumed if the session had paused it).
    Failed(String),
}

#[derive(Debug)]
enum SourcePhase {
    /// Waiting for `Accepted` twice (start, config).
    Admission {
        accepted: u8,
    },
    /// Sending a round: the runs to send, the next one's index, pages sent in it so far.
    Copying {
        runs: Vec<(u64, u64)>,
        next: usize,
        pages: u64,
    },
    /// State and `Complete` sent: waiting for `Resumed`.
    AwaitResumed,
    Finished,
}

/// The sending end of one migration.
#[derive(Debug)]
pub struct SourceSession {
    phase: SourcePhase,
    precopy: PreCopy,
    out: Vec<u8>,
    replies: FrameDecoder,
    paused_by_us: bool,
    outcome: SourceOutcome,
    /// Figures so far.
    pub stats: SourceStats,
}

/// How many bytes of output a session lets pile up before it waits for the caller to
/// send them (the bound on work per call).
pub const OUTPUT_HIGH_WATER: usize = 2 * MAX_MEMORY_RUN as usize;

impl SourceSession {
    /// A session that will offer `config` with `start`; its first bytes are ready at once.
    pub fn new(start: Start, config: Config, precopy: PreCopy) -> SourceSession {
        let mut out = MAGIC.to_vec();
        Message::Start(start).encode(&mut out);
        Message::Config(config).encode(&mut out);
        SourceSession {
            phase: SourcePhase::Admission { accepted: 0 },
            precopy,
            stats: SourceStats {
                bytes: out.len() as u64,
                ..SourceStats::default()
            },
            out,
            replies: FrameDecoder::new(),
            paused_by_us: false,
            outcome: SourceOutcome::InProgress,
        }
    }

    /// Bytes to send to the destination; the caller removes what it sent with
    /// [`consume`](Self::consume).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`output`](Self::output) went out.
    pub fn consume(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// The session's state.
    pub fn outcome(&self) -> &SourceOutcome {
        &self.outcome
    }

    fn queue(&mut self, message: &Message) {
        let before = self.out.len();
        message.encode(&mut self.out);
        self.stats.bytes += (self.out.len() - before) as u64;
    }

    /// Gives up: `reason` goes to the destination (best effort) and the VM runs on here.
    pub fn abandon(&mut self, vm: &mut Vm, clock: &dyn Clock, reason: &str) {
        if !matches!(self.outcome, SourceOutcome::InProgress) {
            return;
        }
        self.out.clear();
        self.queue(&Message::Abort(String::from(reason)));
        self.fail(vm, clock, String::from(reason));
    }

    fn fail(&mut self, vm: &mut Vm, clock: &dyn Clock, reason: String) {
        if let Some(backend) = vm.vm_backend_mut() {
            // All RAM writable again; an error here only leaves pages protected, which the
            // fault path unprotects one by one.
            let _ = backend.stop_dirty_log();
        }
        if self.paused_by_us {
            let _ = vm.resume(clock);
            self.paused_by_us = false;
        }
        self.phase = SourcePhase::Finished;
        self.outcome = SourceOutcome::Failed(reason);
    }

    /// Bytes the destination sent back.
    pub fn receive(&mut self, vm: &mut Vm, clock: &dyn Clock, bytes: &[u8]) {
        self.replies.push(bytes);
        loop {
            let frame = match self.replies.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.fail(vm, clock, e.to_string()),
            };
            let reply = match Reply::decode(frame.0, &frame.1) {
                Ok(reply) => reply,
                Err(e) => return self.fail(vm, clock, e.to_string()),
            };
            match (&mut self.phase, reply) {
                (_, Reply::Refused(refusal)) => return self.fail(vm, clock, refusal.to_string()),
                (SourcePhase::Admission { accepted }, Reply::Accepted) => {
                    *accepted += 1;
                    if *accepted == 2
                        && let Err(e) = self.start_copy(vm)
                    {
                        return self.fail(vm, clock, e);
                    }
                }
                (SourcePhase::AwaitResumed, Reply::Resumed { downtime_us }) => {
                    self.stats.downtime_us = downtime_us;
                    self.phase = SourcePhase::Finished;
                    self.outcome = SourceOutcome::Done;
                    return;
                }
                (_, reply) => {
                    return self.fail(
                        vm,
                        clock,
                        alloc::format!("unexpected reply from the destination: {reply:?}"),
                    );
                }
            }
        }
    }

    /// The destination closed the connection (or it broke).
    pub fn connection_lost(&mut self, vm: &mut Vm, clock: &dyn Clock) {
        if matches!(self.outcome, SourceOutcome::InProgress) {
            self.fail(
                vm,
                clock,
                String::from("the connection to the destination was lost"),
            );
        }
    }

    /// Round 1: dirty logging on, then all of RAM in frame-sized runs (each run's zero
    /// pages are left out when it is sent, one run per step: no scan of all RAM at once).
    fn start_copy(&mut self, vm: &mut Vm) -> Result<(), String> {
        let backend = vm
            .vm_backend_mut()
            .ok_or_else(|| String::from("the VM stopped"))?;
        backend
            .start_dirty_log()
            .map_err(|e| alloc::format!("cannot start the dirty log: {e}"))?;
        let size = backend.memory().size();
        let runs = (0..size.div_ceil(MAX_MEMORY_RUN))
            .map(|i| {
                let gpa = i * MAX_MEMORY_RUN;
                (gpa, MAX_MEMORY_RUN.min(size - gpa))
            })
            .collect();
        self.phase = SourcePhase::Copying {
            runs,
            next: 0,
            pages: 0,
        };
        Ok(())
    }

    /// Does a bounded step of work (at most about [`OUTPUT_HIGH_WATER`] bytes of output).
    pub fn pump(&mut self, vm: &mut Vm, clock: &dyn Clock) -> &SourceOutcome {
        if vm.is_stopped() && matches!(self.outcome, SourceOutcome::InProgress) {
            self.fail(
                vm,
                clock,
                String::from("the VM stopped during the migration"),
            );
        }
        while self.out.len() < OUTPUT_HIGH_WATER {
            let SourcePhase::Copying { runs, next, pages } = &mut self.phase else {
                break;
            };
            if let Some(&(gpa, len)) = runs.get(*next) {
                *next += 1;
                let Some(memory) = vm.memory() else {
                    self.fail(vm, clock, String::from("the VM stopped"));
                    break;
                };
                let mut data = alloc::vec![0u8; len as usize];
                if let Err(e) = memory.read(gpa, &mut data) {
                    let reason = alloc::format!("reading guest RAM: {e}");
                    self.fail(vm, clock, reason);
                    break;
                }
                // Round 1 leaves zero pages out (the destination's RAM starts zeroed); later
                // rounds send every harvested page (a page written back to zero must go too).
                let first_round = self.stats.rounds == 0;
                let page = FRAME_SIZE as usize;
                let keep = |p: &[u8]| !first_round || p.iter().any(|&b| b != 0);
                let mut pieces = Vec::new();
                let mut at = 0;
                while at < data.len() {
                    if !keep(&data[at..at + page]) {
                        at += page;
                        continue;
                    }
                    let mut end = at + page;
                    while end < data.len() && keep(&data[end..end + page]) {
                        end += page;
                    }
                    pieces.push(MemoryRun {
                        gpa: gpa + at as u64,
                        data: data[at..end].to_vec(),
                    });
                    at = end;
                }
                let n: u64 = pieces
                    .iter()
                    .map(|r| r.data.len() as u64 / FRAME_SIZE)
                    .sum();
                *pages += n;
                self.stats.pages += n;
                if self.paused_by_us {
                    self.stats.paused_pages += n;
                }
                for run in pieces {
                    self.queue(&Message::Memory(run));
                }
                continue;
            }
            // The round is sent.
            let sent = *pages;
            self.stats.rounds += 1;
            let round = self.stats.rounds;
            self.queue(&Message::RoundEnd { round, pages: sent });
            if self.paused_by_us {
                let state = match vm.migration_state() {
                    Ok(state) => state,
                    Err(e) => {
                        let reason = alloc::format!("saving the VM's state: {e}");
                        self.fail(vm, clock, reason);
                        break;
                    }
                };
                self.queue(&Message::State(state));
                self.queue(&Message::Complete);
                self.phase = SourcePhase::AwaitResumed;
                break;
            }
            let harvest = match vm.vm_backend_mut().map(|b| b.harvest_dirty()) {
                Some(Ok(log)) => log,
                Some(Err(e)) => {
                    let reason = alloc::format!("harvesting the dirty log: {e}");
                    self.fail(vm, clock, reason);
                    break;
                }
                None => {
                    self.fail(vm, clock, String::from("the VM stopped"));
                    break;
                }
            };
            if let RoundDecision::Pause { .. } = self.precopy.after_round(harvest.count()) {
                if let Err(e) = vm.pause(clock) {
                    let reason = alloc::format!("cannot pause the VM: {e}");
                    self.fail(vm, clock, reason);
                    break;
                }
                self.paused_by_us = true;
                self.queue(&Message::Pause);
                // What was written between the harvest and the pause.
                let last = match vm.vm_backend_mut().map(|b| b.harvest_dirty()) {
                    Some(Ok(last)) => last,
                    _ => {
                        self.fail(vm, clock, String::from("harvesting the last dirty pages"));
                        break;
                    }
                };
                let mut runs: Vec<(u64, u64)> = memory_runs(&harvest).collect();
                runs.extend(memory_runs(&last));
                self.phase = SourcePhase::Copying {
                    runs,
                    next: 0,
                    pages: 0,
                };
            } else {
                self.phase = SourcePhase::Copying {
                    runs: memory_runs(&harvest).collect(),
                    next: 0,
                    pages: 0,
                };
            }
        }
        &self.outcome
    }

    /// Whether the VM is paused by this session (the caller must not resume it).
    pub fn has_paused_vm(&self) -> bool {
        self.paused_by_us
    }
}

/// What arrived complete at the destination: build the VM from it.
#[derive(Debug)]
pub struct Arrived {
    /// The VM's configuration as sent.
    pub config: Config,
    /// Its RAM, filled.
    pub memory: GuestMemory,
    /// The saved-VM sections ([`Vm::restore_migrated`]).
    pub state: Vec<u8>,
    /// Who sent it (the `Start` message).
    pub start: Start,
}

/// The receiving end of one migration.
#[derive(Debug)]
pub struct DestinationSession {
    destination: Destination,
    decoder: FrameDecoder,
    out: Vec<u8>,
    memory: Option<GuestMemory>,
    config: Option<Config>,
    start: Option<Start>,
    /// When `Pause` arrived (the caller's clock, nanoseconds), for the downtime.
    pub paused_at_ns: Option<u64>,
    /// Why this end refused, once it did (for the operator's view of the migration).
    refused: Option<Refusal>,
    /// The VM's name, once its configuration arrived.
    vm_name: Option<String>,
}

impl DestinationSession {
    /// A session admitting sources as `policy` says.
    pub fn new(policy: DestinationPolicy) -> DestinationSession {
        DestinationSession {
            destination: Destination::new(policy),
            decoder: FrameDecoder::new(),
            out: MAGIC.to_vec(),
            memory: None,
            config: None,
            start: None,
            paused_at_ns: None,
            refused: None,
            vm_name: None,
        }
    }

    /// Why this end refused the migration, if it did.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refused.as_ref()
    }

    /// The migrating VM's name, once its configuration arrived.
    pub fn vm_name(&self) -> Option<&str> {
        self.vm_name.as_deref()
    }

    /// Bytes to send back.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of output went out.
    pub fn consume(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Whether the migration is over (refused, or handed over).
    pub fn is_over(&self) -> bool {
        self.destination.has_failed() || self.destination.is_complete()
    }

    /// Refuses: queues the reply and frees what was reserved.
    pub fn refuse(&mut self, refusal: Refusal) {
        self.destination.fail();
        self.memory = None;
        Reply::Refused(refusal.clone()).encode(&mut self.out);
        self.refused = Some(refusal);
    }

    /// The VM runs here: tells the source.
    pub fn resumed(&mut self, downtime_us: u64) {
        Reply::Resumed { downtime_us }.encode(&mut self.out);
    }

    /// Feeds received bytes. `admit` checks a configuration against this appliance (name,
    /// images) before RAM is reserved from `host`; `now_ns` dates the pause. Returns the
    /// VM's parts once `Complete` arrived.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        host: &'static dyn HostMemory,
        now_ns: u64,
        admit: &mut dyn FnMut(&Config) -> Result<(), Refusal>,
    ) -> Option<Arrived> {
        if self.is_over() {
            return None;
        }
        self.decoder.push(bytes);
        loop {
            let (kind, body) = match self.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => {
                    let refusal = self.destination.stream_error(&e);
                    self.refuse(refusal);
                    return None;
                }
            };
            let message = match Message::decode(kind, &body) {
                Ok(message) => message,
                Err(e) => {
                    let refusal = self.destination.stream_error(&e);
                    self.refuse(refusal);
                    return None;
                }
            };
            let event = match self.destination.handle(message) {
                Ok(event) => event,
                Err(refusal) => {
                    self.refuse(refusal);
                    return None;
                }
            };
            match event {
                DestinationEvent::Started(start) => {
                    self.start = Some(start);
                    Reply::Accepted.encode(&mut self.out);
                }
                DestinationEvent::Configured(config) => {
                    self.vm_name = Some(config.name.clone());
                    if let Err(refusal) = admit(&config) {
                        self.refuse(refusal);
                        return None;
                    }
                    match GuestMemory::new(host, config.memory_size) {
                        Ok(memory) => self.memory = Some(memory),
                        Err(_) => {
                            self.refuse(Refusal::NoMemory {
                                bytes: config.memory_size,
                            });
                            return None;
                        }
                    }
                    self.config = Some(config);
                    Reply::Accepted.encode(&mut self.out);
                }
                DestinationEvent::Memory(run) => {
                    let written = self
                        .memory
                        .as_ref()
                        .map(|memory| memory.write(run.gpa, &run.data));
                    if !matches!(written, Some(Ok(()))) {
                        self.refuse(Refusal::Stream(String::from(
                            "memory arrived that does not fit the VM's RAM",
                        )));
                        return None;
                    }
                }
                DestinationEvent::RoundEnd { .. } | DestinationEvent::StateReceived => {}
                DestinationEvent::Paused => self.paused_at_ns = Some(now_ns),
                DestinationEvent::Complete { state } => {
                    let (Some(memory), Some(config), Some(start)) =
                        (self.memory.take(), self.config.take(), self.start.take())
                    else {
                        self.refuse(Refusal::Stream(String::from("complete without a VM")));
                        return None;
                    };
                    return Some(Arrived {
                        config,
                        memory,
                        state,
                        start,
                    });
                }
            }
        }
    }

    /// The source closed the connection: refused unless complete.
    pub fn end_of_stream(&mut self) {
        if let Err(refusal) = self.destination.end_of_stream() {
            self.refuse(refusal);
        }
    }

    /// Rounds and memory bytes received so far.
    pub fn progress(&self) -> (u32, u64) {
        (self.destination.rounds, self.destination.memory_bytes)
    }
}
