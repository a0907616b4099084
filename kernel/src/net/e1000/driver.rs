//! The bare-metal half of the e1000/e1000e/igb driver: MMIO, rings, and the `smoltcp`
//! device. The register sequences are in [`super::bringup`], host-tested.

use core::cell::Cell;
use core::sync::atomic::{Ordering, fence};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

pub use super::bringup::E1000Error;
use super::bringup::{self, Registers, RxOutcome, Waiter};
use super::model::{Model, ring};
use super::regs::{self, RxDesc, TxDesc, ctrl, tx_cmd, tx_status};
use super::{BUFFER_SIZE, RING_LEN};
use crate::arch::{cpu, timer};
use crate::mm::dma::DmaRegion;
use crate::pci::{self, Bar, PciDevice, command};

/// Largest frame handed to smoltcp (Ethernet without FCS; the NIC appends it).
const MTU: usize = 1514;

/// The register window (BAR0), mapped uncached.
struct Regs {
    base: u64,
    size: u64,
}

impl Regs {
    /// # Safety
    /// `base..base + size` must be the identity mapping, uncached, of this device's BAR0,
    /// used by nothing else.
    unsafe fn new(base: u64, size: u64) -> Regs {
        Regs { base, size }
    }

    fn in_window(&self, reg: u32) -> bool {
        u64::from(reg) + 4 <= self.size && reg.is_multiple_of(4)
    }
}

impl Registers for Regs {
    fn read(&self, reg: u32) -> u32 {
        if !self.in_window(reg) {
            // Every offset the driver uses is a constant inside 128 KiB; never reached.
            return 0;
        }
        // SAFETY: `Regs::new`'s contract: `base..base + size` is this device's register
        // window mapped uncached; `reg` is an aligned register offset inside it (checked).
        unsafe { core::ptr::read_volatile((self.base + u64::from(reg)) as *const u32) }
    }

    fn write(&self, reg: u32, value: u32) {
        if !self.in_window(reg) {
            return;
        }
        // SAFETY: as for `read`; the driver owns the device, so writes cannot disturb others.
        unsafe { core::ptr::write_volatile((self.base + u64::from(reg)) as *mut u32, value) }
    }
}

/// Bounded waits on the TSC (works before interrupts are on).
struct TscWaiter;

impl Waiter for TscWaiter {
    fn wait(&mut self, micros: u64, done: &mut dyn FnMut() -> bool) -> bool {
        wait_until(micros, done)
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

/// An Intel 8254x, 82574 or igb NIC.
pub struct E1000 {
    regs: Regs,
    model: Model,
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
    /// Brings up `device`, a NIC of `model`: reset, MAC, rings, receiver and transmitter.
    pub fn new(device: &PciDevice, model: Model) -> Result<E1000, E1000Error> {
        let (phys, size) = match device.bar(0) {
            Some(bar @ Bar::Memory { .. }) if bar.is_assigned() => {
                bar.memory().ok_or(E1000Error::NoRegisterBar)?
            }
            _ => return Err(E1000Error::NoRegisterBar),
        };
        let mmio_size = model.mmio_size();
        if size < mmio_size {
            return Err(E1000Error::NoRegisterBar);
        }
        pci::enable(device.address, command::MEMORY_SPACE | command::BUS_MASTER);
        let base = crate::mm::map_mmio(phys, mmio_size);
        // SAFETY: `base` is BAR0 of this function, just mapped uncached for `mmio_size`
        // bytes (checked against the BAR's size); the NIC list owns the device from here on.
        let regs = unsafe { Regs::new(base, mmio_size) };

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

        bringup::reset(&regs, model, &mut TscWaiter)?;
        let mac = bringup::read_mac(&regs, model, device.device_id, &mut TscWaiter)
            .ok_or(E1000Error::NoMacAddress)?;
        let nic = E1000 {
            regs,
            model,
            mac: EthernetAddress(mac),
            rx_ring,
            rx_buffers,
            tx_ring,
            tx_buffers,
            rx_next: Cell::new(0),
            tx_next: Cell::new(0),
        };
        nic.init_receive(mac)?;
        nic.init_transmit()?;
        Ok(nic)
    }

    /// The station address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// The driver name for this model: `e1000`, `e1000e` or `igb`.
    pub fn driver_name(&self) -> &'static str {
        self.model.driver_name()
    }

    /// Whether the link is up (STATUS.LU).
    pub fn link_up(&self) -> bool {
        bringup::link(&self.regs).up
    }

    /// Link speed in Mb/s, as STATUS reports it.
    pub fn speed_mbps(&self) -> u32 {
        bringup::link(&self.regs).speed_mbps
    }

    /// Receive descriptors pointing at their buffers, then the register sequence.
    fn init_receive(&self, mac: [u8; 6]) -> Result<(), E1000Error> {
        for i in 0..RING_LEN {
            self.write_rx(
                i,
                RxDesc {
                    addr: self.rx_buffer_phys(i),
                    ..RxDesc::default()
                },
            );
        }
        fence(Ordering::Release);
        bringup::init_receive(
            &self.regs,
            self.model,
            mac,
            self.rx_ring.phys(),
            RING_LEN,
            &mut TscWaiter,
        )
    }

    /// Transmit descriptors marked done (free for the driver), then the register sequence.
    fn init_transmit(&self) -> Result<(), E1000Error> {
        for i in 0..RING_LEN {
            self.write_tx(
                i,
                TxDesc {
                    addr: self.tx_buffer_phys(i),
                    status: tx_status::DD,
                    ..TxDesc::default()
                },
            );
        }
        fence(Ordering::Release);
        bringup::init_transmit(
            &self.regs,
            self.model,
            self.tx_ring.phys(),
            RING_LEN,
            &mut TscWaiter,
        )
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
        if status & regs::rx_status::DD == 0 {
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
        self.regs
            .write(self.model.queue().rx_base + ring::TAIL, i as u32);
        self.rx_next.set((i + 1) % RING_LEN);
    }

    /// Whether the transmit descriptor at `tx_next` is free.
    fn tx_free(&self) -> bool {
        let i = self.tx_next.get();
        // SAFETY: in-ring descriptor (see `write_tx`).
        let status = unsafe { core::ptr::read_volatile(&raw const (*self.tx_desc(i)).status) };
        bringup::tx_free(&TxDesc {
            status,
            ..TxDesc::default()
        })
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
        self.regs
            .write(self.model.queue().tx_base + ring::TAIL, next as u32);
    }
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
            if let RxOutcome::Frame(len) = bringup::rx_outcome(&desc, BUFFER_SIZE) {
                return Some((RxToken { nic, index: i, len }, TxToken { nic }));
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
