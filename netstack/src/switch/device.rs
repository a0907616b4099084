//! Devices over ports: a smoltcp [`Device`] for the appliance's interfaces, and the pump
//! between the physical NIC and the uplink port.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::PortHandle;

/// The MTU a [`PortDevice`] reports: a full Ethernet frame without FCS or VLAN tag.
const PORT_DEVICE_MTU: usize = 1514;

/// A smoltcp [`Device`] on a switch port, so an appliance interface sits on the switch like
/// any station: what it transmits enters the switch at the port, what the switch queues for
/// the port is what it receives. Ethernet, MTU 1514.
#[derive(Debug)]
pub struct PortDevice {
    handle: PortHandle,
}

impl PortDevice {
    /// A device on the port `handle` belongs to.
    pub fn new(handle: PortHandle) -> PortDevice {
        PortDevice { handle }
    }

    /// The port's handle.
    pub fn handle(&self) -> &PortHandle {
        &self.handle
    }
}

/// A frame taken from the port's egress queue.
#[derive(Debug)]
pub struct PortRxToken {
    frame: Vec<u8>,
}

impl phy::RxToken for PortRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.frame)
    }
}

/// Room for one frame into the port's ingress queue.
#[derive(Debug)]
pub struct PortTxToken<'a> {
    handle: &'a PortHandle,
}

impl phy::TxToken for PortTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        // A full queue or a bad frame is counted on the port; to smoltcp it is a lost frame.
        self.handle.send_owned(frame);
        result
    }
}

impl Device for PortDevice {
    type RxToken<'a> = PortRxToken;
    type TxToken<'a> = PortTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(PortRxToken, PortTxToken<'_>)> {
        let frame = self.handle.take()?;
        Some((
            PortRxToken { frame },
            PortTxToken {
                handle: &self.handle,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<PortTxToken<'_>> {
        // No token while the switch is behind: smoltcp keeps the data and retries.
        self.handle.can_send().then_some(PortTxToken {
            handle: &self.handle,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = PORT_DEVICE_MTU;
        capabilities.max_burst_size = None;
        capabilities
    }
}

/// Moves frames between the physical `nic` and the `uplink` port: up to `budget` received
/// frames into the switch, then up to `budget` frames the switch queued for the uplink out of
/// the NIC. Frames the uplink's ingress cannot take, and frames longer than the NIC's MTU, are
/// dropped and counted on the port. Returns whether any frame moved.
pub fn pump_uplink<D: Device>(
    nic: &mut D,
    uplink: &PortHandle,
    now: Instant,
    budget: usize,
) -> bool {
    let mut moved = false;
    for _ in 0..budget {
        let Some((frame, _reply)) = nic.receive(now) else {
            break;
        };
        phy::RxToken::consume(frame, |frame| uplink.send(frame));
        moved = true;
    }
    let mtu = nic.capabilities().max_transmission_unit;
    for _ in 0..budget {
        if !uplink.has_frames() {
            break;
        }
        let Some(token) = nic.transmit(now) else {
            break;
        };
        let Some(frame) = uplink.take() else {
            break;
        };
        moved = true;
        if frame.len() > mtu {
            uplink.count_bad_frame();
            continue;
        }
        phy::TxToken::consume(token, frame.len(), |buffer| buffer.copy_from_slice(&frame));
    }
    moved
}
