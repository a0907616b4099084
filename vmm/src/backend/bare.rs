//! The floor for `vm-bench`: bare VM-exit round trips on either backend — VMRUN/VMRESUME,
//! the exit code read, RIP set past the instruction, nothing else — so the full exit path
//! (dispatch, device lookup, completion) can be shown as a ratio to it.
//!
//! The guest is four bytes of real-mode code per exit kind: the exiting instruction (two
//! bytes) and a short jump back to it. On each expected exit the loop writes the RIP it knows
//! in advance (the instruction's address + 2) and re-enters; the guest's jump brings it back
//! to the instruction. Interrupt exits (host timer, VMX preemption timer) re-enter without
//! counting; anything else stops the run with the exit code. Bench-only: no VM is built this
//! way, and nothing here is reachable from the VM loop.

use core::fmt;

use super::BackendError;
use super::{svm, vmx};
use crate::cpuid::CpuidPolicy;
use crate::detect::Virtualization;
use crate::host::HostMemory;
use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::EntryFailure;

/// Length of both exiting instructions (`cpuid` = 0F A2, `out imm8, al` = E6 80).
pub const INSTRUCTION_LEN: u64 = 2;

/// The floor guest's RAM (the smallest a VM gets).
const FLOOR_RAM: u64 = 2 << 20;

/// The exit kinds the floor measures, one real-mode loop each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareExit {
    /// `cpuid` in a loop.
    Cpuid,
    /// `out 0x80, al` in a loop (the POST-code port: no device behind it anywhere).
    Out,
}

impl BareExit {
    /// Both kinds, in the order they are run and printed.
    pub const ALL: [BareExit; 2] = [BareExit::Cpuid, BareExit::Out];

    /// The name in the kernel's output line (`floor <name> <rounds> cycles <n>`), the same
    /// as the `bench` guest's.
    pub fn name(self) -> &'static str {
        match self {
            BareExit::Cpuid => "cpuid-exits",
            BareExit::Out => "out-exits",
        }
    }

    /// Guest-physical address (and real-mode IP, CS base 0) of this kind's loop.
    pub fn entry(self) -> u16 {
        match self {
            BareExit::Cpuid => 0x1000,
            BareExit::Out => 0x2000,
        }
    }

    /// The loop: the instruction, then `jmp` back to it (EB FC: -4 from the jump's end).
    pub fn guest_code(self) -> [u8; 4] {
        match self {
            BareExit::Cpuid => [0x0f, 0xa2, 0xeb, 0xfc],
            BareExit::Out => [0xe6, 0x80, 0xeb, 0xfc],
        }
    }

    /// The RIP the loop writes on each expected exit.
    pub fn next_rip(self) -> u64 {
        u64::from(self.entry()) + INSTRUCTION_LEN
    }
}

/// One kind's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BareRun {
    /// Which exit.
    pub exit: BareExit,
    /// Round trips counted (the requested number).
    pub rounds: u64,
    /// Host TSC ticks from before the first counted entry to after the last exit.
    pub cycles: u64,
    /// Interrupt exits taken in between (re-entered, not counted, but inside `cycles`).
    pub other_exits: u64,
}

/// Why a floor run stopped.
#[derive(Debug)]
pub enum BareError {
    /// The VM or its vCPU could not be made.
    Backend(BackendError),
    /// The floor guest's RAM could not be allocated or written.
    Memory(MemoryError),
    /// VM entry failed.
    Entry(EntryFailure),
    /// The guest exited for a reason the floor loop does not handle.
    UnexpectedExit {
        /// Which loop.
        exit: BareExit,
        /// The raw exit code (SVM EXITCODE / VMX basic exit reason).
        code: u64,
    },
    /// Interrupt exits kept coming without the guest making progress.
    TooManyInterruptExits {
        /// Which loop.
        exit: BareExit,
        /// How many there were.
        count: u64,
    },
}

impl fmt::Display for BareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BareError::Backend(e) => write!(f, "cannot create the floor VM: {e}"),
            BareError::Memory(e) => write!(f, "cannot set up the floor guest's RAM: {e}"),
            BareError::Entry(e) => write!(f, "floor guest: {e}"),
            BareError::UnexpectedExit { exit, code } => write!(
                f,
                "floor {} loop: unexpected exit code {code:#x} (a backend change broke the \
                 bare loop's intercepts)",
                exit.name()
            ),
            BareError::TooManyInterruptExits { exit, count } => write!(
                f,
                "floor {} loop: {count} interrupt exits without enough progress (an \
                 interrupt storm on this CPU)",
                exit.name()
            ),
        }
    }
}

impl From<BackendError> for BareError {
    fn from(e: BackendError) -> BareError {
        BareError::Backend(e)
    }
}

impl From<MemoryError> for BareError {
    fn from(e: MemoryError) -> BareError {
        BareError::Memory(e)
    }
}

/// What the loop does after one exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The expected exit, more to go: set RIP and re-enter.
    Advance,
    /// The expected exit, the last one: set RIP and stop the clock.
    Finished,
    /// An interrupt exit: re-enter as is.
    Reenter,
}

/// Counts a floor loop's exits: the part of the loop that needs no hardware.
pub(crate) struct Counter {
    exit: BareExit,
    target: u64,
    done: u64,
    interrupts: u64,
}

impl Counter {
    /// Interrupt exits allowed per counted round trip, plus a fixed allowance; beyond that
    /// the loop gives up instead of spinning (a host timer gives a handful per run).
    const INTERRUPT_ALLOWANCE: u64 = 10_000;

    pub(crate) fn new(exit: BareExit, target: u64) -> Counter {
        Counter {
            exit,
            target,
            done: 0,
            interrupts: 0,
        }
    }

    /// Classifies one exit: `expected` (the loop's instruction), `interrupt` (an interrupt
    /// or preemption-timer exit), or `code` for the error.
    pub(crate) fn step(
        &mut self,
        code: u64,
        expected: bool,
        interrupt: bool,
    ) -> Result<Step, BareError> {
        if expected {
            self.done += 1;
            return Ok(if self.done >= self.target {
                Step::Finished
            } else {
                Step::Advance
            });
        }
        if interrupt {
            self.interrupts += 1;
            if self.interrupts > Self::INTERRUPT_ALLOWANCE + self.done {
                return Err(BareError::TooManyInterruptExits {
                    exit: self.exit,
                    count: self.interrupts,
                });
            }
            return Ok(Step::Reenter);
        }
        Err(BareError::UnexpectedExit {
            exit: self.exit,
            code,
        })
    }

    /// The result once the loop finished, over `cycles` TSC ticks.
    pub(crate) fn result(&self, cycles: u64) -> BareRun {
        BareRun {
            exit: self.exit,
            rounds: self.done,
            cycles,
            other_exits: self.interrupts,
        }
    }
}

/// Runs `rounds` bare round trips of each [`BareExit`] kind (CPUID, then OUT) in one small VM
/// on this host's backend, each on a fresh vCPU. Each run first takes one untimed exit (the
/// first VMRUN flushes the TLB; the first VMX entry is a VMLAUNCH). `rounds` is at least 1.
pub fn run_floor(
    virtualization: &Virtualization,
    host: &'static dyn HostMemory,
    cpuid: CpuidPolicy,
    rounds: u64,
) -> Result<[BareRun; 2], BareError> {
    let rounds = rounds.max(1);
    let memory = GuestMemory::new(host, FLOOR_RAM)?;
    for exit in BareExit::ALL {
        memory.write(u64::from(exit.entry()), &exit.guest_code())?;
    }
    match virtualization {
        Virtualization::Svm(caps) => {
            let mut vm = svm::SvmVm::new(host, caps, memory, cpuid)?;
            Ok([
                vm.bare_round_trips(BareExit::Cpuid, rounds)?,
                vm.bare_round_trips(BareExit::Out, rounds)?,
            ])
        }
        Virtualization::Vmx(caps) => {
            let mut vm = vmx::VmxVm::new(host, caps, memory, cpuid)?;
            Ok([
                vm.bare_round_trips(BareExit::Cpuid, rounds)?,
                vm.bare_round_trips(BareExit::Out, rounds)?,
            ])
        }
        Virtualization::Unavailable(reason) => {
            Err(BareError::Backend(BackendError::Unavailable(*reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_code_jumps_back_to_the_instruction() {
        for exit in BareExit::ALL {
            let code = exit.guest_code();
            // The jump is short (EB) and lands at offset 0: its end (4) plus the signed rel8.
            assert_eq!(code[2], 0xeb);
            assert_eq!(4 + i64::from(code[3] as i8), 0);
            assert_eq!(exit.next_rip(), u64::from(exit.entry()) + 2);
        }
        assert_eq!(BareExit::Cpuid.guest_code()[..2], [0x0f, 0xa2]);
        assert_eq!(BareExit::Out.guest_code()[..2], [0xe6, 0x80]);
        // The loops do not overlap.
        assert!(BareExit::Cpuid.entry() + 4 <= BareExit::Out.entry());
    }

    #[test]
    fn counter_finishes_after_the_target_and_skips_interrupts() {
        let mut c = Counter::new(BareExit::Cpuid, 3);
        assert_eq!(c.step(0x72, true, false).unwrap(), Step::Advance);
        assert_eq!(c.step(0x60, false, true).unwrap(), Step::Reenter);
        assert_eq!(c.step(0x72, true, false).unwrap(), Step::Advance);
        assert_eq!(c.step(0x72, true, false).unwrap(), Step::Finished);
        let run = c.result(600);
        assert_eq!(run.rounds, 3);
        assert_eq!(run.other_exits, 1);
        assert_eq!(run.cycles, 600);
    }

    #[test]
    fn counter_stops_on_an_unexpected_exit() {
        let mut c = Counter::new(BareExit::Out, 10);
        match c.step(0x7f, false, false) {
            Err(BareError::UnexpectedExit { exit, code }) => {
                assert_eq!(exit, BareExit::Out);
                assert_eq!(code, 0x7f);
            }
            other => panic!("expected UnexpectedExit, got {other:?}"),
        }
    }

    #[test]
    fn counter_gives_up_on_an_interrupt_storm() {
        let mut c = Counter::new(BareExit::Cpuid, 10);
        let mut result = Ok(Step::Reenter);
        for _ in 0..=Counter::INTERRUPT_ALLOWANCE {
            result = c.step(0x60, false, true);
        }
        assert!(matches!(
            result,
            Err(BareError::TooManyInterruptExits { count, .. }) if count == Counter::INTERRUPT_ALLOWANCE + 1
        ));
    }
}
