//! A VM's NICs: one virtio-net PCI function (`keel_vmm::virtio::net`) per `[[vms.nics]]`
//! entry, after its disks, each backed by a port of its network's switch
//! ([`crate::net::switches`]) that accepts only the NIC's own MAC as a source.
//!
//! The port is detached when the VM stops: the device (kept with the stopped VM's record for
//! `vm info`) holds its port through a [`GuestPort`] whose handle [`AttachedNic::detach`]
//! drops, and the switch removes a port once every handle is gone. A stopped guest's MAC
//! therefore leaves the MAC table and no frames queue up for it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use keel_config::schema::NicNetwork;
use keel_netstack::switch::PortHandle;
use keel_vmm::devices::Devices;
use keel_vmm::virtio::net::{NetBackend, NetStats, VirtioNetPci, net_device};
use spin::Mutex;

use keel_config::schema::MacAddress;

/// One NIC of a VM: its network and MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    /// The switch it is plugged into.
    pub network: NicNetwork,
    /// Its MAC (the configured one, else derived from the hostname, VM and index).
    pub mac: [u8; 6],
}

impl NicSpec {
    /// The NICs of VM `vm`'s `[[vms.nics]]` on appliance `hostname`, in order.
    pub fn from_config(hostname: &str, vm: &str, nics: &[keel_config::schema::VmNic]) -> Vec<Self> {
        nics.iter()
            .enumerate()
            .map(|(i, nic)| NicSpec {
                network: nic.network,
                mac: nic.mac_for(hostname, vm, i).0,
            })
            .collect()
    }
}

/// Why a VM's NICs cannot be attached; the VM does not start.
#[derive(Debug, thiserror::Error)]
pub enum NicAttachError {
    /// Another live VM has a NIC with this MAC (a restored copy of it, or a VM whose MAC was
    /// configured while it ran).
    #[error(
        "VM {vm}: nic{nic}'s MAC {mac} is in use by VM {other}: stop that VM first, or give \
         this NIC another mac"
    )]
    MacInUse {
        /// The VM starting.
        vm: String,
        /// The NIC's index.
        nic: usize,
        /// Its MAC.
        mac: MacAddress,
        /// The VM that has it.
        other: String,
    },
    /// Too much RAM for the PCI hole.
    #[error(
        "VM {vm} has {mem_mib} MiB of RAM and NICs: a VM with PCI devices has at most \
         {max} MiB (they live at 3 GiB and up); lower its memory",
        max = super::disks::MAX_MEM_MIB_WITH_DISKS
    )]
    TooMuchMemory {
        /// The VM.
        vm: String,
        /// Its RAM.
        mem_mib: u32,
    },
    /// The VM's PCI bus refused a device (more devices than slots).
    #[error("VM {vm}: cannot attach nic{nic}: {reason}")]
    Pci {
        /// The VM.
        vm: String,
        /// The NIC's index.
        nic: usize,
        /// Why.
        reason: String,
    },
    /// The devices' BARs do not fit the PCI hole.
    #[error("VM {vm}: no room for its NICs' registers: {reason}; give it fewer NICs or disks")]
    Bars {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
}

/// The switch port a guest NIC's device sends into and receives from, until the VM stops,
/// and whether the guest sent a frame since the VM manager last asked
/// ([`AttachedNic::take_transmitted`]): the manager then ends the VM's slice early, so the
/// frame is forwarded at once instead of at the end of the slice.
#[derive(Clone)]
struct GuestPort {
    port: Arc<Mutex<Option<PortHandle>>>,
    transmitted: Arc<AtomicBool>,
}

impl GuestPort {
    fn new(handle: PortHandle) -> GuestPort {
        GuestPort {
            port: Arc::new(Mutex::new(Some(handle))),
            transmitted: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl NetBackend for GuestPort {
    fn transmit(&mut self, frame: &[u8]) -> bool {
        let sent = self
            .port
            .lock()
            .as_ref()
            .is_some_and(|port| port.send(frame));
        if sent {
            self.transmitted.store(true, Ordering::Relaxed);
        }
        sent
    }

    fn has_rx(&self) -> bool {
        self.port
            .lock()
            .as_ref()
            .is_some_and(PortHandle::has_frames)
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.port
            .lock()
            .as_ref()
            .is_some_and(|port| port.receive(deliver))
    }
}

/// A NIC attached to a VM.
#[derive(Clone)]
pub struct AttachedNic {
    /// What it is.
    pub spec: NicSpec,
    /// Its PCI device number on bus 0 (function 0).
    pub slot: u8,
    port: GuestPort,
}

impl core::fmt::Debug for AttachedNic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttachedNic")
            .field("spec", &self.spec)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl AttachedNic {
    /// Unplugs the NIC from its switch (the VM stopped): the switch drops the port and
    /// forgets its MAC at its next poll; the device sends nothing from now on.
    pub fn detach(&self) {
        self.port.port.lock().take();
    }

    /// Whether it is still plugged in.
    pub fn is_attached(&self) -> bool {
        self.port.port.lock().is_some()
    }

    /// Whether the guest sent a frame into the switch since the last call.
    pub fn take_transmitted(&self) -> bool {
        self.port.transmitted.swap(false, Ordering::Relaxed)
    }

    /// The device's counters (the guest's view: rx = delivered to the guest).
    pub fn stats(&self, devices: &Devices) -> NetStats {
        devices
            .pci_device::<VirtioNetPci>(self.slot, 0)
            .map(|d| d.device().stats())
            .unwrap_or_default()
    }
}

/// Adds one virtio-net PCI function per NIC of `specs` to `devices` (after whatever is there:
/// the disks), each on a new port of its switch, places every BAR in the PCI hole, and
/// returns where each went.
pub fn attach(
    system: &crate::System,
    vm: &str,
    devices: &mut Devices,
    specs: &[NicSpec],
) -> Result<Vec<AttachedNic>, NicAttachError> {
    let mut attached: Vec<AttachedNic> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let handle = system
            .switches
            .lock()
            .add_guest_port(spec.network, vm, index, spec.mac);
        let port = GuestPort::new(handle);
        let device = net_device(Box::new(port.clone()), spec.mac);
        let slot = match devices.add_pci_device(device) {
            Ok(slot) => slot,
            Err(e) => {
                // Unplug the ports made so far now: the devices holding them live on in
                // `devices` until the caller drops it (a restore's platform outlives this).
                for nic in &attached {
                    nic.detach();
                }
                port.port.lock().take();
                return Err(NicAttachError::Pci {
                    vm: String::from(vm),
                    nic: index,
                    reason: alloc::format!("{e}"),
                });
            }
        };
        attached.push(AttachedNic {
            spec: spec.clone(),
            slot,
            port,
        });
    }
    if !attached.is_empty()
        && let Err(e) = devices.assign_pci_bars()
    {
        for nic in &attached {
            nic.detach();
        }
        return Err(NicAttachError::Bars {
            vm: String::from(vm),
            reason: alloc::format!("{e}"),
        });
    }
    Ok(attached)
}
