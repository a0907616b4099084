//! The bring-up sequences against a model of the registers: an 8254x, an 82574 and an igb
//! that reset, load their NVM, latch queue enables, or fail to.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::net::e1000::model::{EECD_AUTO_RD, RFCTL, RFCTL_EXTEN};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const I210: u16 = 0x1533;

/// A NIC's registers: a map, plus the few behaviours the driver depends on.
struct FakeNic {
    model: Model,
    device_id: u16,
    regs: RefCell<HashMap<u32, u32>>,
    /// Every write, in order.
    writes: RefCell<Vec<(u32, u32)>>,
    /// CTRL reads before a reset completes; `None`: it never does.
    reset_reads: Option<u32>,
    reads_since_reset: RefCell<u32>,
    /// Whether the reset loads the MAC into RAL0/RAH0 (else only the NVM has it).
    loads_receive_address: bool,
    /// NVM words 0..3; `None`: EERD never reports done.
    nvm: Option<[u16; 3]>,
    /// Whether RXDCTL/TXDCTL.ENABLE latch.
    queues_enable: bool,
}

impl FakeNic {
    fn new(model: Model, device_id: u16) -> FakeNic {
        let mut regs = HashMap::new();
        // The 82574 may come up with extended receive descriptors selected.
        regs.insert(RFCTL, RFCTL_EXTEN);
        FakeNic {
            model,
            device_id,
            regs: RefCell::new(regs),
            writes: RefCell::new(Vec::new()),
            reset_reads: Some(3),
            reads_since_reset: RefCell::new(0),
            loads_receive_address: true,
            nvm: Some([0x5452, 0x1200, 0x5634]),
            queues_enable: true,
        }
    }

    fn get(&self, reg: u32) -> u32 {
        self.regs.borrow().get(&reg).copied().unwrap_or(0)
    }

    fn set(&self, reg: u32, value: u32) {
        self.regs.borrow_mut().insert(reg, value);
    }

    fn wrote(&self, reg: u32) -> Option<usize> {
        self.writes.borrow().iter().rposition(|&(r, _)| r == reg)
    }

    fn complete_reset(&self) {
        self.set(regs::CTRL, self.get(regs::CTRL) & !ctrl::RST);
        if self.loads_receive_address {
            let (ral, rah) = regs::receive_address(MAC);
            self.set(regs::RAL0, ral);
            self.set(regs::RAH0, rah);
        }
        if self.model.has_auto_read_done() {
            self.set(regs::EECD, EECD_AUTO_RD);
        }
    }
}

impl Registers for FakeNic {
    fn read(&self, reg: u32) -> u32 {
        if reg == regs::CTRL && self.get(reg) & ctrl::RST != 0 {
            let mut n = self.reads_since_reset.borrow_mut();
            *n += 1;
            if self.reset_reads.is_some_and(|limit| *n >= limit) {
                drop(n);
                self.complete_reset();
            }
        }
        self.get(reg)
    }

    fn write(&self, reg: u32, value: u32) {
        self.writes.borrow_mut().push((reg, value));
        let eerd = self.model.eerd(self.device_id);
        let q = self.model.queue();
        if reg == regs::CTRL && value & ctrl::RST != 0 {
            *self.reads_since_reset.borrow_mut() = 0;
            // Reset clears the receive addresses and the NVM-loaded flag.
            for r in [regs::RAL0, regs::RAH0, regs::EECD] {
                self.set(r, 0);
            }
            self.set(reg, value);
        } else if reg == eerd.reg && value & regs::eerd::START != 0 {
            let addr = (value >> eerd.addr_shift) & 0xff;
            let result = match self.nvm {
                Some(words) if (addr as usize) < 3 => {
                    eerd.done | u32::from(words[addr as usize]) << regs::eerd::DATA_SHIFT
                }
                _ => 0,
            };
            self.set(reg, result);
        } else if Some(reg) == q.rxdctl_enable || Some(reg) == q.txdctl_enable {
            let latched = if self.queues_enable {
                value
            } else {
                value & !QUEUE_ENABLE
            };
            self.set(reg, latched);
        } else {
            self.set(reg, value);
        }
    }
}

/// Polls up to 100 times whatever the time asked for; counts the polls.
#[derive(Default)]
struct Polls(u32);

impl Waiter for Polls {
    fn wait(&mut self, _micros: u64, done: &mut dyn FnMut() -> bool) -> bool {
        for _ in 0..100 {
            self.0 += 1;
            if done() {
                return true;
            }
        }
        false
    }
}

#[test]
fn reset_sets_link_up_and_driver_loaded_on_each_model() {
    for (model, id) in [
        (Model::E8254x, 0x100e),
        (Model::E82574, 0x10d3),
        (Model::Igb, I210),
    ] {
        let nic = FakeNic::new(model, id);
        nic.set(regs::CTRL, ctrl::LRST | ctrl::VME);
        reset(&nic, model, &mut Polls::default()).unwrap();
        let ctl = nic.get(regs::CTRL);
        assert_eq!(
            ctl & (ctrl::SLU | ctrl::ASDE),
            ctrl::SLU | ctrl::ASDE,
            "{model:?}"
        );
        assert_eq!(ctl & (ctrl::RST | ctrl::LRST | ctrl::VME), 0, "{model:?}");
        assert_eq!(nic.get(regs::IMC), 0xffff_ffff, "interrupts masked");
        let drv_load = nic.get(model::CTRL_EXT) & model::CTRL_EXT_DRV_LOAD != 0;
        assert_eq!(drv_load, model != Model::E8254x, "{model:?}");
    }
}

#[test]
fn a_reset_that_never_completes_is_an_error_not_a_hang() {
    let mut nic = FakeNic::new(Model::E82574, 0x10d3);
    nic.reset_reads = None;
    let mut polls = Polls::default();
    assert_eq!(
        reset(&nic, Model::E82574, &mut polls),
        Err(E1000Error::ResetTimeout)
    );
    assert!(polls.0 <= 200, "bounded: {} polls", polls.0);
    assert_eq!(
        E1000Error::ResetTimeout.to_string(),
        "device reset (CTRL.RST) did not complete within 100 ms"
    );
}

#[test]
fn mac_comes_from_the_receive_address_the_reset_loaded() {
    let nic = FakeNic::new(Model::Igb, I210);
    reset(&nic, Model::Igb, &mut Polls::default()).unwrap();
    assert_eq!(
        read_mac(&nic, Model::Igb, I210, &mut Polls::default()),
        Some(MAC)
    );
    assert_eq!(nic.wrote(0x12014), None, "no NVM read needed");
}

#[test]
fn mac_falls_back_to_the_nvm_through_each_models_eerd() {
    for (model, id, eerd) in [
        (Model::E8254x, 0x100e, 0x14),
        (Model::E82574, 0x10d3, 0x14),
        (Model::Igb, I210, 0x12014),
        (Model::Igb, 0x1521, 0x14),
    ] {
        let mut nic = FakeNic::new(model, id);
        nic.loads_receive_address = false;
        reset(&nic, model, &mut Polls::default()).unwrap();
        assert_eq!(
            read_mac(&nic, model, id, &mut Polls::default()),
            Some(MAC),
            "{model:?} {id:#x}"
        );
        // Word 2 was asked for with the model's address shift.
        let last = nic
            .writes
            .borrow()
            .iter()
            .rev()
            .find(|w| w.0 == eerd)
            .copied();
        let shift = model.eerd(id).addr_shift;
        assert_eq!(last, Some((eerd, 1 | 2 << shift)), "{model:?}");
    }
}

#[test]
fn an_nvm_that_never_answers_gives_no_mac() {
    let mut nic = FakeNic::new(Model::E82574, 0x10d3);
    nic.loads_receive_address = false;
    nic.nvm = None;
    reset(&nic, Model::E82574, &mut Polls::default()).unwrap();
    assert_eq!(
        read_mac(&nic, Model::E82574, 0x10d3, &mut Polls::default()),
        None
    );
}

#[test]
fn igb_enables_its_queues_before_handing_over_the_tail() {
    let nic = FakeNic::new(Model::Igb, I210);
    let mut wait = Polls::default();
    init_receive(&nic, Model::Igb, MAC, 0x1_2345_6000, 256, &mut wait).unwrap();
    init_transmit(&nic, Model::Igb, 0x7000, 256, &mut wait).unwrap();
    assert_eq!(nic.get(0xc000), 0x2345_6000, "RDBAL0");
    assert_eq!(nic.get(0xc004), 1, "RDBAH0");
    assert_eq!(nic.get(0xc008), 4096, "RDLEN0");
    assert_eq!(
        nic.get(0xc00c),
        0x8000_0002,
        "SRRCTL: 2 KiB, legacy descriptors"
    );
    assert_ne!(nic.get(0xc028) & QUEUE_ENABLE, 0);
    assert_ne!(nic.get(0xe028) & QUEUE_ENABLE, 0);
    assert_eq!(nic.get(0xc018), 255, "RDT: all but one descriptor");
    assert!(nic.wrote(0xc028) < nic.wrote(0xc018), "RXDCTL before RDT");
    assert!(
        nic.wrote(0xe028) < nic.wrote(regs::TCTL),
        "TXDCTL before TCTL"
    );
    assert_eq!(nic.get(regs::RCTL), regs::RCTL_VALUE);
    assert_eq!(
        nic.get(regs::RCTL) & regs::rctl::UPE,
        regs::rctl::UPE,
        "promiscuous"
    );
    assert_eq!(nic.get(0xe008), 4096, "TDLEN0");
    // The 8254x ring registers stay untouched on igb.
    assert_eq!(nic.wrote(0x2800), None);
    let (ral, rah) = regs::receive_address(MAC);
    assert_eq!((nic.get(regs::RAL0), nic.get(regs::RAH0)), (ral, rah));
}

#[test]
fn a_queue_that_never_enables_is_reported() {
    let mut nic = FakeNic::new(Model::Igb, I210);
    nic.queues_enable = false;
    assert_eq!(
        init_receive(&nic, Model::Igb, MAC, 0x6000, 256, &mut Polls::default()),
        Err(E1000Error::QueueEnableTimeout("RX"))
    );
    assert_eq!(nic.get(regs::RCTL), 0, "receiver left off");
    assert_eq!(
        init_transmit(&nic, Model::Igb, 0x7000, 256, &mut Polls::default()),
        Err(E1000Error::QueueEnableTimeout("TX"))
    );
    assert_eq!(
        E1000Error::QueueEnableTimeout("RX").to_string(),
        "RX queue 0 did not enable within 10 ms (RXDCTL.ENABLE stays 0)"
    );
}

#[test]
fn e82574_uses_the_legacy_rings_and_write_back_format() {
    let nic = FakeNic::new(Model::E82574, 0x10d3);
    let mut wait = Polls::default();
    init_receive(&nic, Model::E82574, MAC, 0x6000, 256, &mut wait).unwrap();
    init_transmit(&nic, Model::E82574, 0x7000, 256, &mut wait).unwrap();
    assert_eq!(nic.get(RFCTL) & RFCTL_EXTEN, 0, "extended descriptors off");
    assert_eq!((nic.get(0x2800), nic.get(0x2818)), (0x6000, 255));
    assert_eq!((nic.get(0x3800), nic.get(0x3818)), (0x7000, 0));
    assert_eq!(nic.wrote(0xc028), None, "no igb queue enable");
    assert_eq!(polls_used(&wait), 0, "nothing to wait for");
    assert_eq!(nic.get(regs::TCTL), regs::TCTL_VALUE);
}

fn polls_used(wait: &Polls) -> u32 {
    wait.0
}

#[test]
fn link_state_from_status() {
    let nic = FakeNic::new(Model::Igb, I210);
    assert_eq!(
        link(&nic),
        Link {
            up: false,
            speed_mbps: 10
        }
    );
    nic.set(
        regs::STATUS,
        regs::status::LU | regs::status::FD | 0b10 << 6,
    );
    assert_eq!(
        link(&nic),
        Link {
            up: true,
            speed_mbps: 1000
        }
    );
}

#[test]
fn receive_write_back_is_classified() {
    let mut desc = RxDesc::default();
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Pending);
    desc.status = rx_status::DD | rx_status::EOP;
    desc.length = 60;
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Frame(60));
    desc.errors = 1; // CRC error
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Dropped);
    desc.errors = 1 << 5; // TCP checksum: left to the stack
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Frame(60));
    desc.status = rx_status::DD; // no EOP: split frame
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Dropped);
    desc.status = rx_status::DD | rx_status::EOP;
    desc.length = 4000;
    assert_eq!(rx_outcome(&desc, 2048), RxOutcome::Dropped);
    assert!(tx_free(&TxDesc {
        status: tx_status::DD,
        ..TxDesc::default()
    }));
    assert!(!tx_free(&TxDesc::default()));
}
