//! QEMU's `isa-debug-exit` device: a write stops the machine with an exit status. Test
//! payloads and kvm-unit-tests end their run with it.
//!
//! QEMU semantics (`hw/misc/debugexit.c`): the device sits at `iobase` (default `0xF4`)
//! with `iosize` bytes (4 for kvm-unit-tests' `-device isa-debug-exit,iobase=0xf4,iosize=0x4`);
//! a write of `code` of any width exits with status `(code << 1) | 1`, so a guest cannot
//! exit with 0 and a harness can tell a deliberate exit from a crash. Reads return 0. Here
//! the exit becomes [`MachineRequest::Exit`] for the VM loop.
//!
//! Not part of the default PC: a VM gets it only when its settings ask for it, with one
//! registration line:
//!
//! ```
//! use keel_vmm::devices::debug_exit::{DebugExit, DEFAULT_PORT, PORT_LEN};
//! use keel_vmm::devices::{Devices, Region};
//!
//! let mut devices = Devices::pc_for_tests();
//! devices.add_device(DebugExit::new(), &[Region::Ports { base: DEFAULT_PORT, len: PORT_LEN }]).unwrap();
//! ```

use alloc::vec::Vec;

use super::MachineRequest;
use super::device::{Device, DeviceContext, DeviceStateError, PortIoDevice};
use crate::persist::Persist;

/// The port QEMU and kvm-unit-tests use.
pub const DEFAULT_PORT: u16 = 0xF4;
/// Ports the device decodes (kvm-unit-tests' `iosize=0x4`).
pub const PORT_LEN: u16 = 4;
/// The device's name.
pub const NAME: &str = "isa-debug-exit";

/// The exit status QEMU reports for a written `code`.
pub fn exit_status(code: u32) -> u32 {
    (code << 1) | 1
}

/// The debug-exit port. It has no state: every write exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugExit;

impl DebugExit {
    /// The device.
    pub fn new() -> DebugExit {
        DebugExit
    }
}

impl Persist for DebugExit {
    /// The device has no state.
    type State = ();
    type ConstructorArgs = ();
    type Error = core::convert::Infallible;

    fn save(&self) {}

    fn restore((): (), (): &()) -> Result<DebugExit, core::convert::Infallible> {
        Ok(DebugExit)
    }
}

impl PortIoDevice for DebugExit {
    fn read_port(&mut self, _port: u16, _offset: u16, _size: u8, _ctx: &mut DeviceContext) -> u32 {
        0
    }

    fn write_port(
        &mut self,
        _port: u16,
        _offset: u16,
        size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        let bits = 8 * u32::from(size.clamp(1, 4));
        let code = if bits == 32 {
            value
        } else {
            value & ((1 << bits) - 1)
        };
        ctx.request(MachineRequest::Exit {
            status: exit_status(code),
        });
    }
}

impl Device for DebugExit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(DeviceStateError::Decode {
                device: NAME,
                reason: alloc::format!("{} bytes for a device without state", bytes.len()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{Devices, Region};

    #[test]
    fn one_registration_line_and_qemu_exit_status() {
        let mut devices = Devices::pc_for_tests();
        // Not in the default PC.
        assert_eq!(devices.read_port(DEFAULT_PORT, 4), 0xFFFF_FFFF);
        devices.write_port(DEFAULT_PORT, 4, 0);
        assert_eq!(devices.take_machine_request(), None);

        // The one line.
        devices
            .add_device(
                DebugExit::new(),
                &[Region::Ports {
                    base: DEFAULT_PORT,
                    len: PORT_LEN,
                }],
            )
            .unwrap();

        assert_eq!(devices.read_port(DEFAULT_PORT, 4), 0);
        devices.write_port(DEFAULT_PORT, 4, 0);
        assert_eq!(
            devices.take_machine_request(),
            Some(MachineRequest::Exit { status: 1 })
        );
        assert_eq!(devices.take_machine_request(), None, "reported once");
        devices.write_port(DEFAULT_PORT, 1, 0x1FF);
        assert_eq!(
            devices.take_machine_request(),
            Some(MachineRequest::Exit { status: 0x1FF })
        );
        // Any port of the four, any width.
        devices.write_port(DEFAULT_PORT + 2, 2, 0x21);
        assert_eq!(
            devices.take_machine_request(),
            Some(MachineRequest::Exit { status: 0x43 })
        );
        // Overlapping registrations are refused whole.
        let err = devices
            .add_device(DebugExit::new(), &[Region::Ports { base: 0xF6, len: 4 }])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot map isa-debug-exit at 0xf6..=0xf9: overlaps isa-debug-exit at 0xf4..=0xf7"
        );
    }
}
