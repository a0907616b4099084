//! The register sequences that bring an e1000/e1000e/igb up, written against a small
//! register trait so host tests drive them with a model of the device (including one that
//! never finishes its reset or never enables a queue). The bare-metal driver implements
//! [`Registers`] over MMIO and [`Waiter`] over the TSC.
//!
//! Sequences: the 8254x manual §14 (general configuration, receive and transmit
//! initialization), the 82574 datasheet §4.6 and the I210 datasheet §4.5/§4.6, reduced to
//! what a polled, legacy-descriptor driver needs.

use super::model::{self, Model, QUEUE_ENABLE, ring};
use super::regs::{self, RxDesc, TxDesc, ctrl, rx_status, tx_status};

/// 32-bit register access to one NIC's BAR0.
pub trait Registers {
    /// Reads the register at byte offset `reg`.
    fn read(&self, reg: u32) -> u32;
    /// Writes the register at byte offset `reg`.
    fn write(&self, reg: u32, value: u32);
}

/// Bounded waits: polls `done` until it holds or `micros` pass.
pub trait Waiter {
    /// Returns whether `done()` held before the time ran out.
    fn wait(&mut self, micros: u64, done: &mut dyn FnMut() -> bool) -> bool;
}

/// Why a NIC could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum E1000Error {
    /// BAR0 is missing, an I/O BAR, unassigned or too small.
    #[error("BAR0 is not an assigned 128 KiB memory BAR")]
    NoRegisterBar,
    /// CTRL.RST did not clear.
    #[error("device reset (CTRL.RST) did not complete within 100 ms")]
    ResetTimeout,
    /// Neither the EEPROM/NVM nor Receive Address 0 held a usable MAC address.
    #[error("no valid MAC address in the NVM or RAL0/RAH0")]
    NoMacAddress,
    /// RXDCTL.ENABLE or TXDCTL.ENABLE did not read back set.
    #[error("{0} queue 0 did not enable within 10 ms ({0}DCTL.ENABLE stays 0)")]
    QueueEnableTimeout(&'static str),
    /// No frames for the rings or buffers.
    #[error("out of memory for descriptor rings and buffers")]
    OutOfMemory,
}

/// Resets the device and sets the link up: mask interrupts, CTRL.RST, wait for it to clear
/// (and, on the 82574 and igb, for the NVM auto-read), mask again, SLU with auto-speed
/// detection, no flow control; tells the firmware a driver is loaded where it listens.
pub fn reset(
    regs: &impl Registers,
    model: Model,
    wait: &mut impl Waiter,
) -> Result<(), E1000Error> {
    regs.write(regs::IMC, 0xffff_ffff);
    regs.write(regs::CTRL, regs.read(regs::CTRL) | ctrl::RST);
    // The manuals ask for at least 1 µs before reading CTRL back.
    wait.wait(10, &mut || false);
    if !wait.wait(100_000, &mut || regs.read(regs::CTRL) & ctrl::RST == 0) {
        return Err(E1000Error::ResetTimeout);
    }
    if model.has_auto_read_done() {
        // Not fatal when it never comes: the MAC check below reports a missing address.
        wait.wait(10_000, &mut || {
            regs.read(regs::EECD) & model::EECD_AUTO_RD != 0
        });
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
    if model.has_driver_loaded_bit() {
        let ext = regs.read(model::CTRL_EXT);
        regs.write(model::CTRL_EXT, ext | model::CTRL_EXT_DRV_LOAD);
    }
    Ok(())
}

/// Reads NVM word `addr` through the model's EERD.
pub fn read_nvm_word(
    regs: &impl Registers,
    model: Model,
    device_id: u16,
    addr: u8,
    wait: &mut impl Waiter,
) -> Option<u16> {
    let eerd = model.eerd(device_id);
    regs.write(
        eerd.reg,
        regs::eerd::START | u32::from(addr) << eerd.addr_shift,
    );
    let mut value = 0;
    let done = wait.wait(10_000, &mut || {
        value = regs.read(eerd.reg);
        value & eerd.done != 0
    });
    done.then_some((value >> regs::eerd::DATA_SHIFT) as u16)
}

/// The MAC: Receive Address 0 as the reset loaded it from the NVM, else NVM words 0..3.
pub fn read_mac(
    regs: &impl Registers,
    model: Model,
    device_id: u16,
    wait: &mut impl Waiter,
) -> Option<[u8; 6]> {
    if let Some(mac) = regs::mac_from_receive_address(regs.read(regs::RAL0), regs.read(regs::RAH0))
    {
        return Some(mac);
    }
    let mut words = [0u16; 3];
    for (addr, word) in (0u8..).zip(words.iter_mut()) {
        *word = read_nvm_word(regs, model, device_id, addr, wait)?;
    }
    regs::mac_from_eeprom(words)
}

/// Receive set-up: receive address, multicast table, queue 0's ring (`ring_phys`,
/// `ring_len` descriptors, all handed to the device but one), the queue enable where the
/// model has one, RCTL. The descriptors must already point at their buffers.
pub fn init_receive(
    regs: &impl Registers,
    model: Model,
    mac: [u8; 6],
    ring_phys: u64,
    ring_len: usize,
    wait: &mut impl Waiter,
) -> Result<(), E1000Error> {
    let (ral, rah) = regs::receive_address(mac);
    regs.write(regs::RAL0, ral);
    regs.write(regs::RAH0, rah);
    for i in 0..regs::MTA_LEN {
        regs.write(regs::MTA + 4 * i, 0);
    }
    if model == Model::E82574 {
        // Legacy write-back format, not the extended one.
        let rfctl = regs.read(model::RFCTL);
        regs.write(model::RFCTL, rfctl & !model::RFCTL_EXTEN);
    }
    let q = model.queue();
    program_ring(regs, q.rx_base, ring_phys, ring_len * size_of::<RxDesc>());
    if let Some(srrctl) = q.srrctl {
        regs.write(srrctl, model::srrctl_legacy_2k());
    }
    if let Some(rxdctl) = q.rxdctl_enable {
        enable_queue(regs, rxdctl, "RX", wait)?;
    }
    // Hardware owns RDH..RDT-1: all but one descriptor. The igb takes the tail only once
    // the queue is enabled, so it is written after.
    regs.write(q.rx_base + ring::TAIL, (ring_len - 1) as u32);
    regs.write(regs::RDTR, 0);
    regs.write(regs::RCTL, regs::RCTL_VALUE);
    Ok(())
}

/// Transmit set-up: queue 0's ring (empty: head = tail = 0), the queue enable where the
/// model has one, TCTL and TIPG.
pub fn init_transmit(
    regs: &impl Registers,
    model: Model,
    ring_phys: u64,
    ring_len: usize,
    wait: &mut impl Waiter,
) -> Result<(), E1000Error> {
    let q = model.queue();
    program_ring(regs, q.tx_base, ring_phys, ring_len * size_of::<TxDesc>());
    regs.write(q.tx_base + ring::TAIL, 0);
    if let Some(txdctl) = q.txdctl_enable {
        enable_queue(regs, txdctl, "TX", wait)?;
    }
    regs.write(regs::TCTL, regs::TCTL_VALUE);
    regs.write(regs::TIPG, regs::TIPG_COPPER);
    Ok(())
}

fn program_ring(regs: &impl Registers, base: u32, phys: u64, bytes: usize) {
    regs.write(base, phys as u32);
    regs.write(base + ring::BAH, (phys >> 32) as u32);
    regs.write(base + ring::LEN, bytes as u32);
    regs.write(base + ring::HEAD, 0);
    regs.write(base + ring::TAIL, 0);
}

/// Sets a queue's ENABLE bit and waits until the device reports it set.
fn enable_queue(
    regs: &impl Registers,
    dctl: u32,
    which: &'static str,
    wait: &mut impl Waiter,
) -> Result<(), E1000Error> {
    regs.write(dctl, regs.read(dctl) | QUEUE_ENABLE);
    if wait.wait(10_000, &mut || regs.read(dctl) & QUEUE_ENABLE != 0) {
        Ok(())
    } else {
        Err(E1000Error::QueueEnableTimeout(which))
    }
}

/// Link state from STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// STATUS.LU.
    pub up: bool,
    /// Mb/s, meaningful when up.
    pub speed_mbps: u32,
}

/// The link as STATUS reports it (same bits on every model).
pub fn link(regs: &impl Registers) -> Link {
    let status = regs.read(regs::STATUS);
    Link {
        up: status & regs::status::LU != 0,
        speed_mbps: regs::speed_mbps(status),
    }
}

/// What a receive descriptor says after write-back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// The device has not filled it yet (DD clear).
    Pending,
    /// A whole, good frame of this many bytes.
    Frame(usize),
    /// Done but unusable (error bits, split across descriptors, longer than the buffer):
    /// recycle it.
    Dropped,
}

/// Classifies a written-back legacy receive descriptor with `buffer_size`-byte buffers.
pub fn rx_outcome(desc: &RxDesc, buffer_size: usize) -> RxOutcome {
    if desc.status & rx_status::DD == 0 {
        return RxOutcome::Pending;
    }
    let len = usize::from(desc.length);
    if desc.status & rx_status::EOP != 0
        && desc.errors & regs::RX_FRAME_ERRORS == 0
        && len <= buffer_size
    {
        RxOutcome::Frame(len)
    } else {
        RxOutcome::Dropped
    }
}

/// Whether a transmit descriptor is free for the driver (written back with DD, or never
/// used: the driver marks fresh ones DD).
pub fn tx_free(desc: &TxDesc) -> bool {
    desc.status & tx_status::DD != 0
}

#[cfg(test)]
mod tests;
