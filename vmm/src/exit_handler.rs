//! What the VMM does with each [`VmExit`]: a pure function over the VM's devices.
//!
//! [`handle_exit`] takes one exit and the [`Devices`] and answers with an [`ExitAction`] for
//! the VM loop; it never touches the vCPU, memory or a clock, so it is unit-tested by feeding
//! it made-up exits. The VM loop ([`Vm::step`](crate::vm::Vm::step)) applies the action.
//!
//! | exit | action |
//! | --- | --- |
//! | `IoIn` | the device's value: [`ExitAction::CompleteRead`] (unclaimed ports: all ones) |
//! | `IoOut` | the device write, then [`ExitAction::Resume`] (unclaimed ports: dropped) |
//! | `MmioRead` / `MmioWrite` | as the port exits, on the MMIO bus |
//! | `MmioReadModifyWrite` | read, write back the ALU result (not for `CMP`/`TEST`), [`ExitAction::CompleteRead`] with the old value |
//! | `Hlt`, interrupts enabled | [`ExitAction::WaitForInterrupt`] |
//! | `Hlt`, interrupts disabled | [`ExitAction::WaitForNmiOrInit`] |
//! | `Shutdown` | stop: [`StopReason::GuestShutdown`] |
//! | `Interrupted` | [`ExitAction::Resume`] (the host got its preemption point) |
//! | `Pause` | [`ExitAction::Resume`] (the VM loop gives the next vCPU its turn) |
//! | `InterruptWindow` | [`ExitAction::Resume`] (the VM loop injects the waiting interrupt) |
//! | `MsrRead` / `MsrWrite` | the local APIC's MSRs: [`ExitAction::CompleteMsr`], `None` (#GP) where the APIC refuses |
//! | `FailEntry` | stop: [`StopReason::EntryFailed`] |
//! | `UnhandledMemoryAccess` | stop: [`StopReason::BadMemoryAccess`] |
//! | `Unhandled` | stop: [`StopReason::UnhandledExit`] |
//!
//! **Guest-physical addresses beyond RAM.** An `MmioRead`/`MmioWrite` that no device claims
//! reads all ones and the write is dropped, like a PC bus with nothing decoding the address.
//! Guests probe for devices this way (Linux reads the IOAPIC and HPET areas; firmware sizes
//! memory by writing and reading back), so it must not stop the VM. Only an access the
//! backend cannot even decode (an instruction fetch from such an address, or an instruction
//! iced-x86 cannot make into a load, store or read-modify-write) stops it, as
//! [`StopReason::BadMemoryAccess`].
//!
//! **HLT with interrupts disabled.** Only an NMI, SMI, INIT or reset ends that halt on real
//! hardware; Keel's devices send none of them, only other vCPUs' IPIs do. So the VM loop
//! parks such a vCPU and stops the VM with [`StopReason::HaltedWithInterruptsDisabled`] once
//! no vCPU can run again: at once with one vCPU (the usual end of a test payload, and what
//! Linux does after a panic).

use core::fmt;

use crate::devices::Devices;
use crate::vcpu::{EntryFailure, VcpuError, VmExit};

/// What the VM loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run the guest again.
    Resume,
    /// Complete the pending `IN`/MMIO load with this value
    /// ([`Vcpu::complete_read`](crate::vcpu::Vcpu::complete_read)), then run again.
    CompleteRead(u64),
    /// Complete the pending platform MSR access with this value (a write ignores it), or
    /// refuse it with #GP when `None`.
    CompleteMsr(Option<u64>),
    /// The guest halted with interrupts enabled: do not run it until an interrupt is due.
    WaitForInterrupt,
    /// The guest halted with interrupts disabled: do not run it until another vCPU sends it
    /// an NMI or INIT (the VM loop stops the VM when no vCPU is left to).
    WaitForNmiOrInit,
    /// The VM is finished.
    Stop(StopReason),
}

/// Why a VM stopped. The [`Display`](fmt::Display) form is what `vm list` and the API show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest triple-faulted (or hit another shutdown condition).
    GuestShutdown,
    /// The guest executed HLT with interrupts disabled; nothing can wake it.
    HaltedWithInterruptsDisabled,
    /// The hardware refused to enter the guest.
    EntryFailed(EntryFailure),
    /// The guest accessed guest-physical memory the VMM cannot emulate.
    BadMemoryAccess {
        /// Guest-physical address.
        gpa: u64,
        /// Guest RIP.
        rip: u64,
        /// What went wrong, from the backend.
        reason: &'static str,
    },
    /// An exit Keel has no handler for.
    UnhandledExit {
        /// SVM EXITCODE or VMX basic exit reason.
        code: u64,
        /// SVM EXITINFO1 or VMX exit qualification.
        info1: u64,
        /// SVM EXITINFO2 or VMX guest address.
        info2: u64,
    },
    /// The operator stopped the VM (`vm stop`, the API).
    Operator,
    /// The guest powered off (ACPI S5).
    GuestPowerOff,
    /// The guest reset the machine (i8042 reset line or the 0xCF9 reset register). Keel does
    /// not restart it on its own.
    GuestReset,
    /// The guest wrote its exit code to the debug-exit port
    /// ([`debug_exit`](crate::devices::debug_exit), when the VM has one).
    GuestExit {
        /// QEMU's status for the code: `(code << 1) | 1`.
        status: u32,
    },
    /// The vCPU backend reported an error (a VMM bug rather than a guest action).
    Backend(VcpuError),
    /// The guest started an application processor and the host could not create its vCPU.
    ApStartFailed {
        /// The AP's APIC id.
        cpu: u32,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::GuestShutdown => f.write_str("guest triple-faulted (shutdown)"),
            StopReason::HaltedWithInterruptsDisabled => {
                f.write_str("guest halted with interrupts disabled")
            }
            StopReason::EntryFailed(failure) => {
                write!(f, "the CPU refused to enter the guest: {failure}")
            }
            StopReason::BadMemoryAccess { gpa, rip, reason } => write!(
                f,
                "guest touched unbacked memory at {gpa:#x} (rip {rip:#x}): {reason}"
            ),
            StopReason::UnhandledExit { code, info1, info2 } => write!(
                f,
                "unhandled VM exit {code:#x} (info {info1:#x}, {info2:#x})"
            ),
            StopReason::Operator => f.write_str("stopped by the operator"),
            StopReason::GuestPowerOff => f.write_str("guest powered off"),
            StopReason::GuestReset => f.write_str("guest requested a reset"),
            StopReason::GuestExit { status } => {
                // The code the guest wrote, then QEMU's status for it: a harness reads either.
                write!(f, "debug-exit: code {} (status {status})", status >> 1)
            }
            StopReason::Backend(error) => write!(f, "vCPU error: {error}"),
            StopReason::ApStartFailed { cpu } => write!(
                f,
                "the guest started vCPU {cpu} and the host could not create it \
                 (out of host memory or address-space ids)"
            ),
        }
    }
}

/// Handles one exit against the VM's devices (see the [module docs](self) for the table).
///
/// ```
/// use keel_vmm::devices::Devices;
/// use keel_vmm::exit_handler::{handle_exit, ExitAction};
/// use keel_vmm::vcpu::VmExit;
///
/// let mut devices = Devices::pc_for_tests();
/// let out = VmExit::IoOut { port: 0x3F8, size: 1, data: u32::from(b'!') };
/// assert_eq!(handle_exit(&out, &mut devices), ExitAction::Resume);
/// assert_eq!(devices.com1().output_since(0).0, b"!");
/// ```
pub fn handle_exit(exit: &VmExit, devices: &mut Devices) -> ExitAction {
    match *exit {
        VmExit::IoIn { port, size } => {
            ExitAction::CompleteRead(u64::from(devices.read_port(port, size)))
        }
        VmExit::IoOut { port, size, data } => {
            devices.write_port(port, size, data);
            ExitAction::Resume
        }
        VmExit::MmioRead { gpa, size } => ExitAction::CompleteRead(devices.read_mmio(gpa, size)),
        VmExit::MmioReadModifyWrite {
            gpa,
            size,
            op,
            operand,
        } => {
            let old = devices.read_mmio(gpa, size);
            if let Some(new) = op.apply(size, old, operand).write_back {
                devices.write_mmio(gpa, size, new);
            }
            ExitAction::CompleteRead(old)
        }
        VmExit::MmioWrite { gpa, size, data } => {
            devices.write_mmio(gpa, size, data);
            ExitAction::Resume
        }
        VmExit::Hlt {
            interrupts_enabled: true,
        } => ExitAction::WaitForInterrupt,
        VmExit::Hlt {
            interrupts_enabled: false,
        } => ExitAction::WaitForNmiOrInit,
        VmExit::Shutdown => ExitAction::Stop(StopReason::GuestShutdown),
        // A dirty-page write was logged and unprotected by the VM loop before it came here.
        VmExit::Interrupted
        | VmExit::InterruptWindow
        | VmExit::Pause
        | VmExit::DirtyPageWrite { .. } => ExitAction::Resume,
        VmExit::MsrRead { msr } => ExitAction::CompleteMsr(devices.read_msr(msr)),
        VmExit::MsrWrite { msr, value } => {
            ExitAction::CompleteMsr(devices.write_msr(msr, value).then_some(0))
        }
        VmExit::FailEntry { reason } => ExitAction::Stop(StopReason::EntryFailed(reason)),
        VmExit::UnhandledMemoryAccess { gpa, rip, reason } => {
            ExitAction::Stop(StopReason::BadMemoryAccess { gpa, rip, reason })
        }
        VmExit::Unhandled { code, info1, info2 } => {
            ExitAction::Stop(StopReason::UnhandledExit { code, info1, info2 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::uart::{LSR_TEMT, LSR_THRE};
    use crate::devices::{COM1_BASE, POST_PORT};

    fn handle(exit: VmExit) -> ExitAction {
        handle_exit(&exit, &mut Devices::pc_for_tests())
    }

    #[test]
    fn io_out_reaches_the_uart() {
        let mut devices = Devices::pc_for_tests();
        for b in *b"ok" {
            let exit = VmExit::IoOut {
                port: COM1_BASE,
                size: 1,
                data: u32::from(b),
            };
            assert_eq!(handle_exit(&exit, &mut devices), ExitAction::Resume);
        }
        assert_eq!(devices.com1().output_since(0), (b"ok".to_vec(), 2, 0));
    }

    #[test]
    fn io_in_completes_with_the_device_value() {
        let mut devices = Devices::pc_for_tests();
        let lsr = VmExit::IoIn {
            port: COM1_BASE + 5,
            size: 1,
        };
        assert_eq!(
            handle_exit(&lsr, &mut devices),
            ExitAction::CompleteRead(u64::from(LSR_THRE | LSR_TEMT))
        );
        devices.com1_mut().push_input(b"x");
        let rbr = VmExit::IoIn {
            port: COM1_BASE,
            size: 1,
        };
        assert_eq!(
            handle_exit(&rbr, &mut devices),
            ExitAction::CompleteRead(u64::from(b'x'))
        );
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_swallow_writes() {
        for (size, ones) in [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF)] {
            assert_eq!(
                handle(VmExit::IoIn { port: 0x2E0, size }),
                ExitAction::CompleteRead(ones)
            );
        }
        assert_eq!(
            handle(VmExit::IoOut {
                port: POST_PORT,
                size: 1,
                data: 0x55
            }),
            ExitAction::Resume
        );
    }

    #[test]
    fn mmio_beyond_ram_reads_ones_and_drops_writes() {
        for (size, ones) in [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, u64::MAX)] {
            assert_eq!(
                handle(VmExit::MmioRead {
                    gpa: 0xFED0_0000,
                    size
                }),
                ExitAction::CompleteRead(ones)
            );
        }
        assert_eq!(
            handle(VmExit::MmioWrite {
                gpa: 0x1_0000_0000,
                size: 8,
                data: 1
            }),
            ExitAction::Resume
        );
    }

    /// An MMIO register file that logs every access, to see what an RMW exit does.
    #[derive(Default)]
    struct Recorder {
        value: u64,
        log: alloc::vec::Vec<(&'static str, u64, u8, u64)>,
    }

    impl crate::devices::MmioDevice for Recorder {
        fn read_mmio(
            &mut self,
            offset: u64,
            size: u8,
            _: &mut crate::devices::DeviceContext,
        ) -> u64 {
            self.log.push(("read", offset, size, self.value));
            self.value
        }
        fn write_mmio(
            &mut self,
            offset: u64,
            size: u8,
            value: u64,
            _: &mut crate::devices::DeviceContext,
        ) {
            self.log.push(("write", offset, size, value));
            self.value = value;
        }
    }

    impl crate::devices::Device for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn mmio(&mut self) -> Option<&mut dyn crate::devices::MmioDevice> {
            Some(self)
        }
        fn save_state(&self) -> alloc::vec::Vec<u8> {
            alloc::vec::Vec::new()
        }
        fn restore_state(&mut self, _: &[u8]) -> Result<(), crate::devices::DeviceStateError> {
            Ok(())
        }
    }

    const RECORDER: u64 = 0xC000_0000;

    fn with_recorder(value: u64) -> Devices {
        let mut devices = Devices::pc_for_tests();
        devices
            .add_device(
                Recorder {
                    value,
                    log: alloc::vec::Vec::new(),
                },
                &[crate::devices::Region::Mmio {
                    base: RECORDER,
                    len: 0x100,
                }],
            )
            .unwrap();
        devices
    }

    #[test]
    fn mmio_read_modify_write_reads_writes_back_and_completes_with_the_old_value() {
        use crate::decode::AluOp;
        // The firmware's `or [rax+0x14], sil` on a virtio status byte: 0x01 | 0x02.
        let mut devices = with_recorder(0x01);
        let exit = VmExit::MmioReadModifyWrite {
            gpa: RECORDER + 0x14,
            size: 1,
            op: AluOp::Or,
            operand: 0x02,
        };
        assert_eq!(
            handle_exit(&exit, &mut devices),
            ExitAction::CompleteRead(0x01)
        );
        let recorder = devices.device::<Recorder>().unwrap();
        assert_eq!(
            recorder.log,
            [("read", 0x14, 1, 0x01), ("write", 0x14, 1, 0x03)]
        );
        // SUB wraps within the access size.
        let mut devices = with_recorder(0);
        let exit = VmExit::MmioReadModifyWrite {
            gpa: RECORDER,
            size: 4,
            op: AluOp::Sub,
            operand: 1,
        };
        assert_eq!(
            handle_exit(&exit, &mut devices),
            ExitAction::CompleteRead(0)
        );
        let recorder = devices.device::<Recorder>().unwrap();
        assert_eq!(recorder.log[1], ("write", 0, 4, 0xFFFF_FFFF));
    }

    #[test]
    fn mmio_cmp_and_test_only_read() {
        use crate::decode::AluOp;
        for op in [AluOp::Cmp, AluOp::Test] {
            let mut devices = with_recorder(0x80);
            let exit = VmExit::MmioReadModifyWrite {
                gpa: RECORDER + 8,
                size: 2,
                op,
                operand: 0x80,
            };
            assert_eq!(
                handle_exit(&exit, &mut devices),
                ExitAction::CompleteRead(0x80)
            );
            let recorder = devices.device::<Recorder>().unwrap();
            assert_eq!(recorder.log, [("read", 8, 2, 0x80)], "{op:?}");
        }
        // Unclaimed: reads all ones, the write-back is dropped.
        let exit = VmExit::MmioReadModifyWrite {
            gpa: 0xFED0_0000,
            size: 4,
            op: AluOp::And,
            operand: 0,
        };
        assert_eq!(handle(exit), ExitAction::CompleteRead(0xFFFF_FFFF));
    }

    #[test]
    fn hlt_depends_on_interrupt_flag() {
        assert_eq!(
            handle(VmExit::Hlt {
                interrupts_enabled: true
            }),
            ExitAction::WaitForInterrupt
        );
        assert_eq!(
            handle(VmExit::Hlt {
                interrupts_enabled: false
            }),
            ExitAction::WaitForNmiOrInit
        );
    }

    #[test]
    fn shutdown_interrupted_and_failures() {
        assert_eq!(
            handle(VmExit::Shutdown),
            ExitAction::Stop(StopReason::GuestShutdown)
        );
        assert_eq!(handle(VmExit::Interrupted), ExitAction::Resume);
        let reason = EntryFailure::VmxEntryCheck {
            reason: 33,
            qualification: 0,
        };
        assert_eq!(
            handle(VmExit::FailEntry { reason }),
            ExitAction::Stop(StopReason::EntryFailed(reason))
        );
        assert_eq!(
            handle(VmExit::UnhandledMemoryAccess {
                gpa: 0xFFFF_0000,
                rip: 0xFFF0,
                reason: "instruction fetch"
            }),
            ExitAction::Stop(StopReason::BadMemoryAccess {
                gpa: 0xFFFF_0000,
                rip: 0xFFF0,
                reason: "instruction fetch"
            })
        );
        assert_eq!(
            handle(VmExit::Unhandled {
                code: 0x7C,
                info1: 1,
                info2: 2
            }),
            ExitAction::Stop(StopReason::UnhandledExit {
                code: 0x7C,
                info1: 1,
                info2: 2
            })
        );
    }

    #[test]
    fn stop_reasons_read_well() {
        let cases: [(StopReason, &str); 7] = [
            (StopReason::GuestShutdown, "guest triple-faulted (shutdown)"),
            (
                StopReason::HaltedWithInterruptsDisabled,
                "guest halted with interrupts disabled",
            ),
            (
                StopReason::EntryFailed(EntryFailure::SvmInvalidState),
                "the CPU refused to enter the guest: VMRUN rejected the guest state \
                 (VMEXIT_INVALID)",
            ),
            (
                StopReason::BadMemoryAccess {
                    gpa: 0xFFFF_0000,
                    rip: 0x1234,
                    reason: "instruction fetch",
                },
                "guest touched unbacked memory at 0xffff0000 (rip 0x1234): instruction fetch",
            ),
            (
                StopReason::UnhandledExit {
                    code: 0x7C,
                    info1: 0,
                    info2: 0x10,
                },
                "unhandled VM exit 0x7c (info 0x0, 0x10)",
            ),
            (StopReason::Operator, "stopped by the operator"),
            (
                StopReason::Backend(VcpuError::ReadNotCompleted),
                "vCPU error: the previous IN/MMIO read was not completed",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
