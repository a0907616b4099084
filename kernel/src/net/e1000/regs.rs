//! Registers, bits and descriptor layouts of the Intel 8254x family (82540EM and kin), named
//! as in the *PCI/PCI-X Family of Gigabit Ethernet Controllers Software Developer's Manual*
//! (317453, "the manual" below). Pure values, host-tested.

/// Device Control (§13.4.1).
pub const CTRL: u32 = 0x0000;
/// Device Status (§13.4.2).
pub const STATUS: u32 = 0x0008;
/// EEPROM/Flash Control & Data (§13.4.3).
pub const EECD: u32 = 0x0010;
/// Flow Control Address Low (§13.4.8).
pub const FCAL: u32 = 0x0028;
/// Flow Control Address High (§13.4.8).
pub const FCAH: u32 = 0x002c;
/// Flow Control Type (§13.4.9).
pub const FCT: u32 = 0x0030;
/// Flow Control Transmit Timer Value (§13.4.11).
pub const FCTTV: u32 = 0x0170;
/// Interrupt Cause Read, clear on read (§13.4.17).
pub const ICR: u32 = 0x00c0;
/// Interrupt Mask Set/Read (§13.4.20).
pub const IMS: u32 = 0x00d0;
/// Interrupt Mask Clear (§13.4.21).
pub const IMC: u32 = 0x00d8;
/// Receive Control (§13.4.22).
pub const RCTL: u32 = 0x0100;
/// Transmit Control (§13.4.33).
pub const TCTL: u32 = 0x0400;
/// Transmit Inter Packet Gap (§13.4.34).
pub const TIPG: u32 = 0x0410;
// Queue 0's ring registers (RDBAL.. at 0x2800, TDBAL.. at 0x3800 on the 8254x and 82574,
// 0xC000/0xE000 on igb) are in `model::QueueRegs`.
/// Receive Delay Timer (§13.4.30).
pub const RDTR: u32 = 0x2820;
/// Multicast Table Array, 128 dwords (§13.5.1).
pub const MTA: u32 = 0x5200;
/// Number of MTA entries.
pub const MTA_LEN: u32 = 128;
/// Receive Address Low, entry 0 (§13.5.2).
pub const RAL0: u32 = 0x5400;
/// Receive Address High, entry 0 (§13.5.3).
pub const RAH0: u32 = 0x5404;

/// CTRL bits (§13.4.1, Table 13-3).
pub mod ctrl {
    /// Full duplex.
    pub const FD: u32 = 1 << 0;
    /// Link reset.
    pub const LRST: u32 = 1 << 3;
    /// Auto-speed detection enable.
    pub const ASDE: u32 = 1 << 5;
    /// Set link up.
    pub const SLU: u32 = 1 << 6;
    /// Invert loss-of-signal.
    pub const ILOS: u32 = 1 << 7;
    /// Device reset (self-clearing).
    pub const RST: u32 = 1 << 26;
    /// VLAN mode enable.
    pub const VME: u32 = 1 << 30;
    /// PHY reset.
    pub const PHY_RST: u32 = 1 << 31;
}

/// STATUS bits (§13.4.2, Table 13-6).
pub mod status {
    /// Full duplex.
    pub const FD: u32 = 1 << 0;
    /// Link up.
    pub const LU: u32 = 1 << 1;
    /// Speed, bits 7:6: 00 = 10, 01 = 100, 1x = 1000 Mb/s.
    pub const SPEED_SHIFT: u32 = 6;
}

/// EERD fields every model shares (§13.4.4); the done bit and the address position differ
/// per model (`model::EerdLayout`).
pub mod eerd {
    /// Start read.
    pub const START: u32 = 1 << 0;
    /// Data, bits 31:16.
    pub const DATA_SHIFT: u32 = 16;
}

/// RCTL bits (§13.4.22, Table 13-67).
pub mod rctl {
    /// Receiver enable.
    pub const EN: u32 = 1 << 1;
    /// Store bad packets.
    pub const SBP: u32 = 1 << 2;
    /// Unicast promiscuous.
    pub const UPE: u32 = 1 << 3;
    /// Multicast promiscuous.
    pub const MPE: u32 = 1 << 4;
    /// Long packet enable.
    pub const LPE: u32 = 1 << 5;
    /// Receive descriptor minimum threshold: 1/2 of RDLEN (bits 9:8 = 00).
    pub const RDMTS_HALF: u32 = 0 << 8;
    /// Broadcast accept mode.
    pub const BAM: u32 = 1 << 15;
    /// Buffer size 2048 bytes (BSIZE = 00 with BSEX = 0, bits 17:16).
    pub const BSIZE_2048: u32 = 0 << 16;
    /// Strip Ethernet CRC from incoming packets.
    pub const SECRC: u32 = 1 << 26;
}

/// TCTL bits (§13.4.33, Table 13-76).
pub mod tctl {
    /// Transmit enable.
    pub const EN: u32 = 1 << 1;
    /// Pad short packets.
    pub const PSP: u32 = 1 << 3;
    /// Collision threshold, bits 11:4 (recommended 0x0f).
    pub const CT_SHIFT: u32 = 4;
    /// Collision distance, bits 21:12 (0x40 for full duplex).
    pub const COLD_SHIFT: u32 = 12;
    /// Re-transmit on late collision.
    pub const RTLC: u32 = 1 << 24;
}

/// TIPG for IEEE 802.3 copper (§13.4.34, Table 13-77): IPGT 10, IPGR1 8, IPGR2 6.
pub const TIPG_COPPER: u32 = 10 | 8 << 10 | 6 << 20;

/// TCTL value the driver uses: enabled, short packets padded, full-duplex collision values.
pub const TCTL_VALUE: u32 =
    tctl::EN | tctl::PSP | 0x0f << tctl::CT_SHIFT | 0x40 << tctl::COLD_SHIFT | tctl::RTLC;

/// RCTL value the driver uses: enabled, broadcasts accepted, 2 KiB buffers, CRC stripped,
/// and promiscuous for unicast and multicast: the NIC is the guest switch's uplink, so it
/// must take frames for the guests' MACs (and their multicast groups), not only its own.
pub const RCTL_VALUE: u32 = rctl::EN
    | rctl::UPE
    | rctl::MPE
    | rctl::BAM
    | rctl::RDMTS_HALF
    | rctl::BSIZE_2048
    | rctl::SECRC;

/// Receive Address High: address valid (§13.5.3).
pub const RAH_AV: u32 = 1 << 31;

/// Legacy receive descriptor (§3.2.3, Table 3-1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDesc {
    /// Buffer address.
    pub addr: u64,
    /// Bytes written to the buffer.
    pub length: u16,
    /// Packet checksum.
    pub checksum: u16,
    /// Status (§3.2.3.1).
    pub status: u8,
    /// Errors (§3.2.3.2).
    pub errors: u8,
    /// VLAN tag.
    pub special: u16,
}

/// Receive descriptor status bits (§3.2.3.1, Table 3-2).
pub mod rx_status {
    /// Descriptor done.
    pub const DD: u8 = 1 << 0;
    /// End of packet.
    pub const EOP: u8 = 1 << 1;
}

/// Receive descriptor error bits (§3.2.3.2, Table 3-3): CRC/alignment, symbol, sequence,
/// carrier extension, RX data error. (TCP/IP checksum errors, bits 5 and 6, are left to
/// the stack.)
pub const RX_FRAME_ERRORS: u8 = 1 << 0 | 1 << 1 | 1 << 2 | 1 << 4 | 1 << 7;

/// Legacy transmit descriptor (§3.3.3, Table 3-8).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDesc {
    /// Buffer address.
    pub addr: u64,
    /// Bytes to send from the buffer.
    pub length: u16,
    /// Checksum offset.
    pub cso: u8,
    /// Command (§3.3.3.1).
    pub cmd: u8,
    /// Status (§3.3.3.2).
    pub status: u8,
    /// Checksum start.
    pub css: u8,
    /// VLAN tag.
    pub special: u16,
}

/// Transmit descriptor command bits (§3.3.3.1, Table 3-10).
pub mod tx_cmd {
    /// End of packet.
    pub const EOP: u8 = 1 << 0;
    /// Insert FCS (CRC).
    pub const IFCS: u8 = 1 << 1;
    /// Report status (write back DD).
    pub const RS: u8 = 1 << 3;
}

/// Transmit descriptor status bits (§3.3.3.2, Table 3-11).
pub mod tx_status {
    /// Descriptor done.
    pub const DD: u8 = 1 << 0;
}

const _: () = assert!(core::mem::size_of::<RxDesc>() == 16);
const _: () = assert!(core::mem::offset_of!(RxDesc, length) == 8);
const _: () = assert!(core::mem::offset_of!(RxDesc, status) == 12);
const _: () = assert!(core::mem::offset_of!(RxDesc, special) == 14);
const _: () = assert!(core::mem::size_of::<TxDesc>() == 16);
const _: () = assert!(core::mem::offset_of!(TxDesc, cmd) == 11);
const _: () = assert!(core::mem::offset_of!(TxDesc, status) == 12);

/// The MAC held in Receive Address 0, if marked valid and not all zeros or ones.
pub fn mac_from_receive_address(ral: u32, rah: u32) -> Option<[u8; 6]> {
    if rah & RAH_AV == 0 {
        return None;
    }
    let [a, b, c, d] = ral.to_le_bytes();
    let [e, f, _, _] = rah.to_le_bytes();
    valid_mac([a, b, c, d, e, f])
}

/// The MAC from EEPROM words 0..3 (§5.6.1 "Ethernet Address"), low byte first.
pub fn mac_from_eeprom(words: [u16; 3]) -> Option<[u8; 6]> {
    let [a, b] = words[0].to_le_bytes();
    let [c, d] = words[1].to_le_bytes();
    let [e, f] = words[2].to_le_bytes();
    valid_mac([a, b, c, d, e, f])
}

fn valid_mac(mac: [u8; 6]) -> Option<[u8; 6]> {
    let unicast = mac[0] & 1 == 0;
    (unicast && mac != [0; 6] && mac != [0xff; 6]).then_some(mac)
}

/// RAL/RAH values that program `mac` into Receive Address 0, marked valid.
pub fn receive_address(mac: [u8; 6]) -> (u32, u32) {
    let ral = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let rah = u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV;
    (ral, rah)
}

/// Link speed in Mb/s from STATUS.
pub fn speed_mbps(status: u32) -> u32 {
    match (status >> status::SPEED_SHIFT) & 0b11 {
        0b00 => 10,
        0b01 => 100,
        _ => 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_receive_address() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let (ral, rah) = receive_address(mac);
        assert_eq!(ral, 0x1200_5452);
        assert_eq!(rah, 0x8000_5634);
        assert_eq!(mac_from_receive_address(ral, rah), Some(mac));
        assert_eq!(mac_from_receive_address(ral, rah & !RAH_AV), None);
        assert_eq!(mac_from_receive_address(0, RAH_AV), None);
    }

    #[test]
    fn mac_from_eeprom_words() {
        assert_eq!(
            mac_from_eeprom([0x5452, 0x1200, 0x5634]),
            Some([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(mac_from_eeprom([0xffff; 3]), None);
        assert_eq!(mac_from_eeprom([0x0001, 0, 0]), None, "multicast");
    }

    #[test]
    fn control_values() {
        assert_eq!(TIPG_COPPER, 0x0060_200a);
        assert_eq!(TCTL_VALUE, 0x0104_00fa);
        assert_eq!(RCTL_VALUE, 0x0400_801a);
        assert_eq!(speed_mbps(0b10 << 6 | status::LU | status::FD), 1000);
        assert_eq!(speed_mbps(0b01 << 6), 100);
    }
}
