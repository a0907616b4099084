//! The bare-metal half of the e1000 driver: MMIO, rings, and the `smoltcp` device.

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

use super::regs::{self, RxDesc, TxDesc, ctrl, eerd, rx_status, tx_cmd, tx_status};
use super::{BUFFER_SIZE, RING_LEN};
use crate::arch::{cpu, timer};
use crate::mm::dma::DmaRegion;
use crate::pci::{self, Bar, PciDevice, command};

/// Largest frame handed to smoltcp (Ethernet without FCS; the NIC appends it).
const MTU: usize = 1514;

/// Why an e1000 could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum E1000Error {
    /// BAR0 is missing, an I/O BAR, unassigned or too small.
    #[error("BAR0 is not an assigned 128 KiB memory BAR")]
    NoRegisterBar,
    /// CTRL.RST did not clear.
    #[error("device reset (CTRL.RST) did not complete")]
    ResetTimeout,
    /// Neither the EEPROM nor Receive Address 0 held a usable MAC address.
    #[error("no valid MAC address in the EEPROM or RAL0/RAH0")]
    NoMacAddress,
    /// No frames for the rings or buffers.
    #[error("out of memory for descriptor rings and buffers")]
    OutOfMemory,
}

/// The register window (BAR0), mapped uncached.
struct Regs {
    base: u64,
}

impl Regs {
    /// # Safety
    /// `base` must be the identity mapping, uncached, of this device's BAR0 and at least
    /// [`regs::MMIO_SIZE`] long, used by nothing else.
    unsafe fn new(base: u64) -> Regs {
        Regs { base }
    }

    fn read(&self, reg: u32) -> u32 {
        debug_assert!(u64::from(reg) < regs::MMIO_SIZE && reg.is_multiple_of(4));
        // SAFETY: `Regs::new`'s contract: `base..base + MMIO_SIZE` is this device's register
        // window mapped uncached; `reg` is an aligned register offset inside it.
        unsafe { core::ptr::read_volatile((self.base + u64::from(reg)) as *const u32) }
    }

    fn write(&self, reg: u32, value: u32) {
        debug_assert!(u64::from(reg) < regs::MMIO_SIZE && reg.is_multiple_of(4));
        // SAFETY: as for `read`; the driver owns the device, so writes cannot disturb others.
        unsafe { core::ptr::write_volatile((self.base + u64::from(reg)) as *mut u32, value) }
    }
}

/// Spins until `done()` or `micros` pass; returns whether `done()` held.
fn wait_until(micros: u64, mut done: impl FnMut() -> bool) -> bool {
    let hz = timer::tsc_hz().max(1_000_000_000);
    let start = cpu::rdtsc();
    let limit = micros * (hz / 1_000_000);
    loop {
        if done() {
            return true;
        }
        if cpu::rdtsc().wrapping_sub(start) > limit {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// An Intel 8254x NIC.
pub struct E1000 {
    regs: Regs,
    mac: EthernetAddress,
    rx_ring: DmaRegion,
    rx_buffers: DmaRegion,
    tx_ring: DmaRegion,
    tx_buffers: DmaRegion,
    /// Next receive descriptor to look at.
    rx_next: Cell<usize>,
    /// Next transmit descriptor to fill.
    tx_next: Cell<usize>,
}

impl E1000 {
    /// Brings up the e1000 function `device`: reset, MAC, rings, receiver and transmitter.
    pub fn new(device: &PciDevice) -> Result<E1000, E1000Error> {
        let (phys, size) = match device.bar(0) {
            Some(bar @ Bar::Memory { .. }) if bar.is_assigned() => {
                bar.memory().ok_or(E1000Error::NoRegisterBar)?
            }
            _ => return Err(E1000Error::NoRegisterBar),
        };
        if size < regs::MMIO_SIZE {
            return Err(E1000Error::NoRegisterBar);
        }
        pci::enable(device.address, command::MEMORY_SPACE | command::BUS_MASTER);
        let base = crate::mm::map_mmio(phys, regs::MMIO_SIZE);
        // SAFETY: `base` is BAR0 of this function, just mapped uncached for its full 128 KiB;
        // the NIC list owns the device from here on.
        let regs = unsafe { Regs::new(base) };

        let ring_bytes = (RING_LEN * core::mem::size_of::<RxDesc>()) as u64;
        let buffer_bytes = (RING_LEN * BUFFER_SIZE) as u64;
        let (Some(rx_ring), Some(rx_buffers), Some(tx_ring), Some(tx_buffers)) = (
            DmaRegion::new(ring_bytes),
            DmaRegion::new(buffer_bytes),
            DmaRegion::new(ring_bytes),
            DmaRegion::new(buffer_bytes),
        ) else {
            return Err(E1000Error::OutOfMemory);
        };

        reset(&regs)?;
        let mac = read_mac(&regs).ok_or(E1000Error::NoMacAddress)?;
        let nic = E1000 {
            regs,
            mac: EthernetAddress(mac),
            rx_ring,
            rx_buffers,
            tx_ring,
            tx_buffers,
            rx_next: Cell::new(0),
            tx_next: Cell::new(0),
        };
        nic.init_receive(mac);
        nic.init_transmit();
        Ok(nic)
    }

    /// The station address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Whether the link is up (STATUS.LU).
    pub fn link_up(&self) -> bool {
        self.regs.read(regs::STATUS) & regs::status::LU != 0
    }

    /// Link speed in Mb/s, as STATUS reports it.
    pub fn speed_mbps(&self) -> u32 {
        regs::speed_mbps(self.regs.read(regs::STATUS))
    }

    /// §14.4: receive address, multicast table, ring registers, RCTL.
    fn init_receive(&self, mac: [u8; 6]) {
        let (ral, rah) = regs::receive_address(mac);
        self.regs.write(regs::RAL0, ral);
        self.regs.write(regs::RAH0, rah);
        for i in 0..regs::MTA_LEN {
            self.regs.write(regs::MTA + 4 * i, 0);
        }
        for i in 0..RING_LEN {
            self.write_rx(
                i,
                RxDesc {
                    addr: self.rx_buffer_phys(i),
                    ..RxDesc::default()
                },
            );
        }
        let ring = self.rx_ring.phys();
        self.regs.write(regs::RDBAL, ring as u32);
        self.regs.write(regs::RDBAH, (ring >> 32) as u32);
        self.regs.write(
            regs::RDLEN,
            (RING_LEN * core::mem::size_of::<RxDesc>()) as u32,
        );
        self.regs.write(regs::RDH, 0);
        // Hardware owns RDH..RDT-1: all but one descriptor.
        self.regs.write(regs::RDT, (RING_LEN - 1) as u32);
        self.regs.write(regs::RDTR, 0);
        self.regs.write(regs::RCTL, regs::RCTL_VALUE);
    }

    /// §14.5: ring registers, TCTL, TIPG.
    fn init_transmit(&self) {
        for i in 0..RING_LEN {
            // DD set: free for the driver.
            self.write_tx(
                i,
                TxDesc {
                    addr: self.tx_buffer_phys(i),
                    status: tx_status::DD,
                    ..TxDesc::default()
                },
            );
        }
        let ring = self.tx_ring.phys();
        self.regs.write(regs::TDBAL, ring as u32);
        self.regs.write(regs::TDBAH, (ring >> 32) as u32);
        self.regs.write(
            regs::TDLEN,
            (RING_LEN * core::mem::size_of::<TxDesc>()) as u32,
        );
        self.regs.write(regs::TDH, 0);
        self.regs.write(regs::TDT, 0);
        self.regs.write(regs::TCTL, regs::TCTL_VALUE);
        self.regs.write(regs::TIPG, regs::TIPG_COPPER);
    }

    fn rx_buffer_phys(&self, i: usize) -> u64 {
        self.rx_buffers.phys() + (i * BUFFER_SIZE) as u64
    }

    fn tx_buffer_phys(&self, i: usize) -> u64 {
        self.tx_buffers.phys() + (i * BUFFER_SIZE) as u64
    }

    fn rx_desc(&self, i: usize) -> *mut RxDesc {
        debug_assert!(i < RING_LEN);
        self.rx_ring.ptr::<RxDesc>().wrapping_add(i % RING_LEN)
    }

    fn tx_desc(&self, i: usize) -> *mut TxDesc {
        debug_assert!(i < RING_LEN);
        self.tx_ring.ptr::<TxDesc>().wrapping_add(i % RING_LEN)
    }

    fn write_rx(&self, i: usize, desc: RxDesc) {
        // SAFETY: `rx_desc(i)` is inside the receive ring (i < RING_LEN, ring sized for
        // RING_LEN descriptors, 16-byte aligned in a frame the driver owns).
        unsafe { core::ptr::write_volatile(self.rx_desc(i), desc) }
    }

    fn write_tx(&self, i: usize, desc: TxDesc) {
        // SAFETY: as for `write_rx`, in the transmit ring.
        unsafe { core::ptr::write_volatile(self.tx_desc(i), desc) }
    }

    /// The receive descriptor at `rx_next`, if the NIC is done with it.
    fn rx_done(&self) -> Option<(usize, RxDesc)> {
        let i = self.rx_next.get();
        // SAFETY: in-ring descriptor (see `write_rx`); the NIC writes it back as a whole, and
        // the status byte is read first, so the rest is read only after DD was seen.
        let status = unsafe { core::ptr::read_volatile(&raw const (*self.rx_desc(i)).status) };
        if status & rx_status::DD == 0 {
            return None;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above.
        Some((i, unsafe { core::ptr::read_volatile(self.rx_desc(i)) }))
    }

    /// Gives receive descriptor `i` back to the NIC and moves on.
    fn rx_release(&self, i: usize) {
        self.write_rx(
            i,
            RxDesc {
                addr: self.rx_buffer_phys(i),
                ..RxDesc::default()
            },
        );
        fence(Ordering::Release);
        self.regs.write(regs::RDT, i as u32);
        self.rx_next.set((i + 1) % RING_LEN);
    }

    /// Whether the transmit descriptor at `tx_next` is free.
    fn tx_free(&self) -> bool {
        let i = self.tx_next.get();
        // SAFETY: in-ring descriptor (see `write_tx`).
        let status = unsafe { core::ptr::read_volatile(&raw const (*self.tx_desc(i)).status) };
        status & tx_status::DD != 0
    }

    /// Sends `len` bytes already in the buffer of descriptor `tx_next`.
    fn tx_post(&self, len: usize) {
        let i = self.tx_next.get();
        self.write_tx(
            i,
            TxDesc {
                addr: self.tx_buffer_phys(i),
                length: len as u16,
                cmd: tx_cmd::EOP | tx_cmd::IFCS | tx_cmd::RS,
                ..TxDesc::default()
            },
        );
        fence(Ordering::Release);
        let next = (i + 1) % RING_LEN;
        self.tx_next.set(next);
        self.regs.write(regs::TDT, next as u32);
    }
}

/// §14.3 and the CTRL.RST description (§13.4.1): mask interrupts, reset, mask again, set the
/// link up with auto-speed detection, no flow control.
fn reset(regs: &Regs) -> Result<(), E1000Error> {
    regs.write(regs::IMC, 0xffff_ffff);
    regs.write(regs::CTRL, regs.read(regs::CTRL) | ctrl::RST);
    // The manual asks for a wait of at least 1 µs before reading back.
    wait_until(10, || false);
    if !wait_until(100_000, || regs.read(regs::CTRL) & ctrl::RST == 0) {
        return Err(E1000Error::ResetTimeout);
    }
    regs.write(regs::IMC, 0xffff_ffff);
    let _ = regs.read(regs::ICR);
    let ctl = regs.read(regs::CTRL);
    let ctl =
        (ctl | ctrl::SLU | ctrl::ASDE) & !(ctrl::LRST | ctrl::PHY_RST | ctrl::ILOS | ctrl::VME);
    regs.write(regs::CTRL, ctl);
    for reg in [regs::FCAL, regs::FCAH, regs::FCT, regs::FCTTV] {
        regs.write(reg, 0);
    }
    Ok(())
}

/// Reads EEPROM word `addr` through EERD (§5.3.1, §13.4.4).
fn read_eeprom(regs: &Regs, addr: u8) -> Option<u16> {
    regs.write(
        regs::EERD,
        eerd::START | u32::from(addr) << eerd::ADDR_SHIFT,
    );
    let mut value = 0;
    let done = wait_until(10_000, || {
        value = regs.read(regs::EERD);
        value & eerd::DONE != 0
    });
    done.then_some((value >> eerd::DATA_SHIFT) as u16)
}

/// The MAC: Receive Address 0 as the reset loaded it from the EEPROM, else the EEPROM itself.
fn read_mac(regs: &Regs) -> Option<[u8; 6]> {
    if let Some(mac) = regs::mac_from_receive_address(regs.read(regs::RAL0), regs.read(regs::RAH0))
    {
        return Some(mac);
    }
    let words = [
        read_eeprom(regs, 0)?,
        read_eeprom(regs, 1)?,
        read_eeprom(regs, 2)?,
    ];
    regs::mac_from_eeprom(words)
}

impl Drop for E1000 {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers go back to the allocator.
        self.regs.write(regs::RCTL, 0);
        self.regs.write(regs::TCTL, 0);
        self.regs.write(regs::IMC, 0xffff_ffff);
        self.regs
            .write(regs::CTRL, self.regs.read(regs::CTRL) | ctrl::RST);
        wait_until(100_000, || self.regs.read(regs::CTRL) & ctrl::RST == 0);
    }
}

impl phy::Device for E1000 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let nic: &E1000 = self;
        // Skip (and recycle) frames the NIC flagged bad or split across descriptors; those
        // cannot happen with 2 KiB buffers and RCTL.LPE off unless the link misbehaves.
        for _ in 0..RING_LEN {
            let (i, desc) = nic.rx_done()?;
            let good = desc.status & rx_status::EOP != 0
                && desc.errors & regs::RX_FRAME_ERRORS == 0
                && usize::from(desc.length) <= BUFFER_SIZE;
            if good {
                return Some((
                    RxToken {
                        nic,
                        index: i,
                        len: usize::from(desc.length),
                    },
                    TxToken { nic },
                ));
            }
            defmt::debug!(
                "e1000: dropped frame (status {=u8:#x}, errors {=u8:#x})",
                desc.status,
                desc.errors
            );
            nic.rx_release(i);
        }
        None
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.tx_free().then_some(TxToken { nic: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(RING_LEN - 1);
        caps
    }
}

/// A received frame in receive descriptor `index`; the descriptor goes back to the NIC when
/// the token is used or dropped.
pub struct RxToken<'a> {
    nic: &'a E1000,
    index: usize,
    len: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let ptr = self.nic.rx_buffer_phys(self.index) as *const u8;
        // SAFETY: the buffer of a descriptor the NIC has completed (DD) and not yet been
        // given back (RDT not moved past it), so the NIC does not write it; `len` was checked
        // against BUFFER_SIZE. Dropping the token (after `f`) releases the descriptor.
        let frame = unsafe { core::slice::from_raw_parts(ptr, self.len) };
        f(frame)
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        self.nic.rx_release(self.index);
    }
}

/// Room for one frame in the transmit ring.
pub struct TxToken<'a> {
    nic: &'a E1000,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if len > BUFFER_SIZE || !self.nic.tx_free() {
            defmt::warn!("e1000: frame of {=usize} bytes dropped", len);
            return f(&mut alloc::vec![0; len]);
        }
        let i = self.nic.tx_next.get();
        let ptr = self.nic.tx_buffer_phys(i) as *mut u8;
        // SAFETY: the buffer of a free transmit descriptor (DD set: the NIC is done with it
        // and will not read it until `tx_post`), `len` ≤ BUFFER_SIZE, owned by the driver;
        // no other reference to it exists while `f` runs.
        let frame = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
        let result = f(frame);
        self.nic.tx_post(len);
        result
    }
}
