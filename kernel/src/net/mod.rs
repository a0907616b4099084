//! Host NIC drivers, each a `smoltcp::phy::Device`, and the probe that finds them on PCI.
//!
//! [`probe`] walks the PCI list for NICs it knows — virtio-net through the `virtio-drivers`
//! crate ([`virtio_net`]; modern transport, or Keel's legacy I/O-port one in
//! [`virtio_legacy`] for legacy-only devices), Intel 8254x, 82574L and igb by hand
//! ([`e1000`]) — brings each up and returns them as [`Nic`]s: one type that implements
//! `smoltcp::phy::Device` whatever the hardware, with its name, MAC and PCI address. A
//! device that fails to come up is logged and skipped. Every network-class function, with
//! a driver or not, up or failed, is recorded for `net` and the API ([`host_nics`]).
//!
//! The drivers are polled: the kernel calls the netstack (which calls `receive`/`transmit`)
//! from its loop, which wakes at least at every timer tick. Device interrupts are masked
//! (virtio: no used-buffer notifications; e1000: IMC all ones).
//!
//! Guest networking sits on top: the two guest switches ([`switches`]), the appliance's
//! interface on the `internal` one with its DHCP server ([`internal`]), and what `net`,
//! `vm info` and the API show about them ([`report`]).
//!
//! `e1000::{regs, model, bringup}`, [`host_nics`] and [`report`] are pure and build for the
//! host; the rest is bare metal.

pub mod e1000;
pub mod host_nics;
pub mod report;

#[cfg(target_os = "none")]
pub mod internal;
#[cfg(target_os = "none")]
pub mod switches;
#[cfg(target_os = "none")]
pub mod virtio_legacy;
#[cfg(target_os = "none")]
pub mod virtio_net;

/// Now, for smoltcp and the switches: the TSC since boot.
#[cfg(target_os = "none")]
pub fn now() -> smoltcp::time::Instant {
    let hz = crate::arch::timer::tsc_hz().max(1);
    smoltcp::time::Instant::from_micros(
        (u128::from(crate::arch::cpu::rdtsc()) * 1_000_000 / u128::from(hz)) as i64,
    )
}

#[cfg(target_os = "none")]
pub use nic::*;

#[cfg(target_os = "none")]
mod nic {
    use alloc::vec::Vec;
    use core::fmt;

    use smoltcp::phy::{self, DeviceCapabilities};
    use smoltcp::time::Instant;
    use smoltcp::wire::EthernetAddress;

    use super::e1000::{self, E1000, model::Model};
    use super::host_nics::{HostNic, NETWORK_CLASS, NicState};
    use super::virtio_net::{self, VirtioNet};
    use crate::pci::{PciAddress, PciDevice, VIRTIO_VENDOR_ID};

    const INTEL: u16 = 0x8086;

    /// The driver behind a [`Nic`].
    pub enum Driver {
        /// virtio-net over PCI, modern or legacy transport.
        Virtio(VirtioNet),
        /// Intel 8254x, 82574L or igb.
        E1000(E1000),
    }

    /// A NIC ready for a network stack.
    pub struct Nic {
        /// Driver name: `"virtio-net"`, `"e1000"`, `"e1000e"` or `"igb"`.
        pub name: &'static str,
        /// Station (MAC) address.
        pub mac: EthernetAddress,
        /// Where it sits on PCI.
        pub address: PciAddress,
        /// Legacy interrupt line the firmware routed (unused while polled).
        pub interrupt_line: u8,
        /// Interrupt pin (1..=4 = INTA#..INTD#, 0 = none).
        pub interrupt_pin: u8,
        driver: Driver,
    }

    impl Nic {
        /// The driver, for driver-specific queries.
        pub fn driver(&self) -> &Driver {
            &self.driver
        }

        /// Link state, where the hardware reports it (e1000); `None` for virtio-net, whose
        /// link status feature is not negotiated by `virtio-drivers` users.
        pub fn link_up(&self) -> Option<bool> {
            match &self.driver {
                Driver::Virtio(_) => None,
                Driver::E1000(nic) => Some(nic.link_up()),
            }
        }
    }

    /// `e1000 52:54:00:12:34:56 at 00:03.0`
    impl fmt::Display for Nic {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} {} at {}", self.name, Mac(self.mac), self.address)
        }
    }

    /// Writes a MAC address with colons (`52:54:00:12:34:56`, as QEMU and `ip link` do;
    /// smoltcp's own `Display` uses dashes).
    pub struct Mac(pub EthernetAddress);

    impl fmt::Display for Mac {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let b = self.0.0;
            write!(
                f,
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[0], b[1], b[2], b[3], b[4], b[5]
            )
        }
    }

    /// Every network-class function the last [`probe`] saw, for `net` and the API.
    static HOST_NICS: spin::Mutex<Vec<HostNic>> = spin::Mutex::new(Vec::new());

    /// Every network-class PCI function found at boot: driver or none, MAC, up or failed.
    pub fn host_nics() -> Vec<HostNic> {
        HOST_NICS.lock().clone()
    }

    /// Finds and brings up every supported NIC among `devices`, and records every
    /// network-class function (see [`host_nics`]).
    pub fn probe(devices: &[PciDevice]) -> Vec<Nic> {
        let mut nics = Vec::new();
        let mut listing = Vec::new();
        for device in devices {
            let (vendor, id) = (device.vendor_id, device.device_id);
            let a = device.address;
            let mut entry = HostNic {
                pci: (a.bus, a.device, a.function),
                vendor_id: vendor,
                device_id: id,
                driver: None,
                mac: None,
                state: NicState::NoDriver,
            };
            let driver = if vendor == VIRTIO_VENDOR_ID && virtio_net::DEVICE_IDS.contains(&id) {
                entry.driver = Some("virtio-net");
                VirtioNet::new(device)
                    .map(Driver::Virtio)
                    .map_err(|e| alloc::format!("{e}"))
            } else if let Some(model) = (vendor == INTEL).then(|| Model::for_device(id)).flatten() {
                entry.driver = Some(model.driver_name());
                E1000::new(device, model)
                    .map(Driver::E1000)
                    .map_err(|e| alloc::format!("{e}"))
            } else {
                if device.class == NETWORK_CLASS {
                    listing.push(entry);
                }
                continue;
            };
            let driver = match driver {
                Ok(driver) => driver,
                Err(reason) => {
                    log_failure(device, entry.driver.unwrap_or("?"), &reason);
                    entry.state = NicState::Failed(reason);
                    listing.push(entry);
                    continue;
                }
            };
            let (name, mac) = match &driver {
                Driver::Virtio(nic) => ("virtio-net", nic.mac()),
                Driver::E1000(nic) => (nic.driver_name(), nic.mac()),
            };
            entry.state = NicState::Up;
            entry.mac = Some(mac.0);
            listing.push(entry);
            let nic = Nic {
                name,
                mac,
                address: device.address,
                interrupt_line: device.interrupt_line,
                interrupt_pin: device.interrupt_pin,
                driver,
            };
            defmt::info!("net: {}", defmt::Display2Format(&nic));
            nics.push(nic);
        }
        *HOST_NICS.lock() = listing;
        nics
    }

    fn log_failure(device: &PciDevice, name: &str, error: &dyn fmt::Display) {
        defmt::error!(
            "net: {=str} at {} skipped: {}",
            name,
            defmt::Display2Format(&device.address),
            defmt::Display2Format(error)
        );
    }

    /// A receive token of whichever driver the [`Nic`] has.
    pub enum RxToken<'a> {
        /// virtio-net.
        Virtio(virtio_net::RxToken<'a>),
        /// e1000.
        E1000(e1000::RxToken<'a>),
    }

    /// A transmit token of whichever driver the [`Nic`] has.
    pub enum TxToken<'a> {
        /// virtio-net.
        Virtio(virtio_net::TxToken<'a>),
        /// e1000.
        E1000(e1000::TxToken<'a>),
    }

    impl phy::Device for Nic {
        type RxToken<'a> = RxToken<'a>;
        type TxToken<'a> = TxToken<'a>;

        fn receive(&mut self, timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
            match &mut self.driver {
                Driver::Virtio(nic) => nic
                    .receive(timestamp)
                    .map(|(rx, tx)| (RxToken::Virtio(rx), TxToken::Virtio(tx))),
                Driver::E1000(nic) => nic
                    .receive(timestamp)
                    .map(|(rx, tx)| (RxToken::E1000(rx), TxToken::E1000(tx))),
            }
        }

        fn transmit(&mut self, timestamp: Instant) -> Option<TxToken<'_>> {
            match &mut self.driver {
                Driver::Virtio(nic) => nic.transmit(timestamp).map(TxToken::Virtio),
                Driver::E1000(nic) => nic.transmit(timestamp).map(TxToken::E1000),
            }
        }

        fn capabilities(&self) -> DeviceCapabilities {
            match &self.driver {
                Driver::Virtio(nic) => nic.capabilities(),
                Driver::E1000(nic) => nic.capabilities(),
            }
        }
    }

    impl phy::RxToken for RxToken<'_> {
        fn consume<R, F>(self, f: F) -> R
        where
            F: FnOnce(&[u8]) -> R,
        {
            match self {
                RxToken::Virtio(token) => token.consume(f),
                RxToken::E1000(token) => token.consume(f),
            }
        }
    }

    impl phy::TxToken for TxToken<'_> {
        fn consume<R, F>(self, len: usize, f: F) -> R
        where
            F: FnOnce(&mut [u8]) -> R,
        {
            match self {
                TxToken::Virtio(token) => token.consume(len, f),
                TxToken::E1000(token) => token.consume(len, f),
            }
        }
    }
}
