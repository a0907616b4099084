//! What differs between the Intel NIC generations the driver takes: the 8254x ("e1000"),
//! the 82574L ("e1000e") and the igb family (I210/I211/I350). They share the legacy
//! descriptor formats, CTRL/STATUS/RCTL/TCTL/TIPG, the receive address and multicast
//! tables; they differ in where EERD keeps its done bit, where queue 0's ring registers
//! sit, whether a queue must be enabled (RXDCTL/TXDCTL.ENABLE) and how the receive buffer
//! and descriptor type are chosen. Pure values, host-tested.

/// PCI device IDs (vendor 0x8086) of the 8254x parts QEMU emulates: 82540EM, 82545EM
/// (copper), 82544GC (copper); all share the registers used here.
pub const E8254X_DEVICE_IDS: [u16; 3] = [0x100e, 0x100f, 0x100c];
/// The 82574L (QEMU `-device e1000e`, q35's usual NIC) and the 82574LA.
pub const E82574_DEVICE_IDS: [u16; 2] = [0x10d3, 0x10f6];
/// I210 (copper, fiber, SerDes, SGMII, flash-less copper and SerDes), I211 (copper) and
/// I350 (copper, fiber, SerDes, SGMII).
pub const IGB_DEVICE_IDS: [u16; 11] = [
    0x1533, 0x1536, 0x1537, 0x1538, 0x157b, 0x157c, 0x1539, 0x1521, 0x1522, 0x1523, 0x1524,
];

/// A NIC generation the driver knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// 8254x: 82540EM and kin (the 8254x Software Developer's Manual, 317453).
    E8254x,
    /// 82574L (82574 GbE Controller Family datasheet, 317694).
    E82574,
    /// I210/I211 (datasheet 333016) and I350 (datasheet 331505).
    Igb,
}

/// EERD's layout: the 8254x keeps the done bit at 4 and the word address at 15:8; the
/// 82574 and igb at 1 and 15:2. The I210/I211 read their NVM through a copy of EERD at
/// 0x12014 (the I350 at 0x14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EerdLayout {
    /// Register offset.
    pub reg: u32,
    /// Read done bit.
    pub done: u32,
    /// Shift of the word address.
    pub addr_shift: u32,
}

/// Queue 0's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRegs {
    /// Receive descriptor base low; base high, length, head and tail follow at +4, +8,
    /// +0x10 and +0x18 on every model.
    pub rx_base: u32,
    /// Transmit descriptor base low; as for `rx_base`.
    pub tx_base: u32,
    /// Split receive control (buffer size, descriptor type), igb only.
    pub srrctl: Option<u32>,
    /// Receive descriptor control, whose ENABLE bit the queue needs (igb).
    pub rxdctl_enable: Option<u32>,
    /// Transmit descriptor control, whose ENABLE bit the queue needs (igb).
    pub txdctl_enable: Option<u32>,
}

/// Offsets from a ring's base register.
pub mod ring {
    /// Base address high.
    pub const BAH: u32 = 0x04;
    /// Length in bytes.
    pub const LEN: u32 = 0x08;
    /// Head.
    pub const HEAD: u32 = 0x10;
    /// Tail.
    pub const TAIL: u32 = 0x18;
}

/// RXDCTL/TXDCTL queue enable (I210 §8.10.9/§8.12.13, I350 likewise), bit 25.
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// SRRCTL fields (I210 §8.10.7): packet buffer size in KiB at 6:0, descriptor type at
/// 27:25 (000 = legacy), drop when no descriptor is free at 31.
pub mod srrctl {
    /// Shift of BSIZEPACKET (1 KiB units).
    pub const BSIZEPACKET_SHIFT: u32 = 0;
    /// Shift of DESCTYPE.
    pub const DESCTYPE_SHIFT: u32 = 25;
    /// Legacy descriptors.
    pub const DESCTYPE_LEGACY: u32 = 0;
    /// Drop packets when no descriptor is free instead of filling the packet buffer.
    pub const DROP_EN: u32 = 1 << 31;
}

/// EECD.AUTO_RD: the NVM auto-read after reset is done (82574 and igb).
pub const EECD_AUTO_RD: u32 = 1 << 9;
/// CTRL_EXT register.
pub const CTRL_EXT: u32 = 0x0018;
/// CTRL_EXT.DRV_LOAD: tells the manageability firmware a driver owns the device (82574,
/// igb); without it the firmware may keep the PHY to itself.
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
/// Receive Filter Control (82574 §10.2.5.16).
pub const RFCTL: u32 = 0x5008;
/// RFCTL.EXTEN: extended receive descriptors; cleared so the 82574 writes back the legacy
/// format the driver reads.
pub const RFCTL_EXTEN: u32 = 1 << 15;

impl Model {
    /// The model of Intel device `device_id`, if the driver takes it.
    pub fn for_device(device_id: u16) -> Option<Model> {
        if E8254X_DEVICE_IDS.contains(&device_id) {
            Some(Model::E8254x)
        } else if E82574_DEVICE_IDS.contains(&device_id) {
            Some(Model::E82574)
        } else if IGB_DEVICE_IDS.contains(&device_id) {
            Some(Model::Igb)
        } else {
            None
        }
    }

    /// The driver name the operator sees.
    pub fn driver_name(self) -> &'static str {
        match self {
            Model::E8254x => "e1000",
            Model::E82574 => "e1000e",
            Model::Igb => "igb",
        }
    }

    /// Where and how EERD reads an NVM word; I210/I211 (`device_id`) use the copy at 0x12014.
    pub fn eerd(self, device_id: u16) -> EerdLayout {
        match self {
            Model::E8254x => EerdLayout {
                reg: 0x0014,
                done: 1 << 4,
                addr_shift: 8,
            },
            Model::E82574 => EerdLayout {
                reg: 0x0014,
                done: 1 << 1,
                addr_shift: 2,
            },
            Model::Igb => EerdLayout {
                reg: if matches!(device_id, 0x1521..=0x1524) {
                    0x0014
                } else {
                    0x1_2014
                },
                done: 1 << 1,
                addr_shift: 2,
            },
        }
    }

    /// Queue 0's registers: the 8254x and 82574 at 0x2800/0x3800, igb at 0xC000/0xE000
    /// with queue enables and SRRCTL.
    pub fn queue(self) -> QueueRegs {
        match self {
            Model::E8254x | Model::E82574 => QueueRegs {
                rx_base: 0x2800,
                tx_base: 0x3800,
                srrctl: None,
                rxdctl_enable: None,
                txdctl_enable: None,
            },
            Model::Igb => QueueRegs {
                rx_base: 0xc000,
                tx_base: 0xe000,
                srrctl: Some(0xc00c),
                rxdctl_enable: Some(0xc028),
                txdctl_enable: Some(0xe028),
            },
        }
    }

    /// Whether the NVM auto-read after reset is signalled in EECD.AUTO_RD (the 8254x reads
    /// its EEPROM before CTRL.RST clears).
    pub fn has_auto_read_done(self) -> bool {
        self != Model::E8254x
    }

    /// Whether CTRL_EXT.DRV_LOAD exists (firmware hand-off).
    pub fn has_driver_loaded_bit(self) -> bool {
        self != Model::E8254x
    }

    /// Register window the driver maps: 128 KiB on every model (the igb's EERD copy at
    /// 0x12014 is inside it).
    pub fn mmio_size(self) -> u64 {
        0x2_0000
    }
}

/// SRRCTL for 2 KiB buffers and legacy descriptors, dropping when the ring is full.
pub fn srrctl_legacy_2k() -> u32 {
    2 << srrctl::BSIZEPACKET_SHIFT
        | srrctl::DESCTYPE_LEGACY << srrctl::DESCTYPE_SHIFT
        | srrctl::DROP_EN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_by_device_id() {
        assert_eq!(Model::for_device(0x100e), Some(Model::E8254x));
        assert_eq!(Model::for_device(0x10d3), Some(Model::E82574));
        for id in [0x1533, 0x1539, 0x157b, 0x1521, 0x1524] {
            assert_eq!(Model::for_device(id), Some(Model::Igb), "{id:#x}");
        }
        assert_eq!(Model::for_device(0x10c9), None, "82576 is not taken");
        assert_eq!(Model::E82574.driver_name(), "e1000e");
    }

    #[test]
    fn eerd_and_queue_layouts_differ_where_the_datasheets_say() {
        assert_eq!(Model::E8254x.eerd(0x100e).done, 1 << 4);
        assert_eq!(Model::E82574.eerd(0x10d3).addr_shift, 2);
        assert_eq!(Model::Igb.eerd(0x1533).reg, 0x12014, "I210");
        assert_eq!(Model::Igb.eerd(0x1521).reg, 0x14, "I350");
        assert_eq!(Model::E82574.queue().rx_base, 0x2800);
        assert_eq!(Model::Igb.queue().rxdctl_enable, Some(0xc028));
        assert_eq!(srrctl_legacy_2k(), 0x8000_0002);
    }
}
