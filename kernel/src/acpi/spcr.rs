//! The ACPI Serial Port Console Redirection table (SPCR): the UART the firmware redirects its
//! console to — on servers usually COM2, which the BMC carries as IPMI serial-over-LAN.
//!
//! Pure: parses the table's bytes (Microsoft's SPCR specification, revisions 1–4) into a
//! [`ConsolePort`] when it names a 16550 on I/O ports; anything else is refused with a
//! reason, and the console stays on COM1.

use crate::console_port::{COM_BASES, ConsolePort, DEFAULT_BAUD, STANDARD_BAUDS};

const HEADER_LEN: usize = 36;
/// Revision 1/2 length; revision 3 adds the UART clock, revision 4 the precise baud rate.
const MIN_LEN: usize = 80;
const INTERFACE_TYPE: usize = 36;
const GAS_SPACE: usize = 40;
const GAS_ADDRESS: usize = 44;
const INTERRUPT_TYPE: usize = 52;
const IRQ: usize = 53;
const CONFIGURED_BAUD: usize = 58;
const PRECISE_BAUD: usize = 84;

/// Interface types that are a 16550 (or its 16450 subset) Keel's driver programs:
/// 0 full 16550, 1 16450 subset, 0x12 16550 described by the GAS.
const UART_16550_TYPES: [u8; 3] = [0x00, 0x01, 0x12];
const SPACE_SYSTEM_IO: u8 = 1;
/// Interrupt type bit 0: a PC-AT IRQ (dual 8259) in the IRQ field.
const INTERRUPT_8259: u8 = 1 << 0;

/// Why an SPCR table is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpcrError {
    /// Shorter than its header says, or than revision 1's 80 bytes.
    #[error("SPCR table is {0} bytes, too short: ignored, console on COM1")]
    TooShort(usize),
    /// Not an SPCR table.
    #[error("SPCR table has a wrong signature: ignored, console on COM1")]
    BadSignature,
    /// The bytes do not sum to zero.
    #[error("SPCR table checksum is wrong: ignored, console on COM1")]
    BadChecksum,
    /// A UART that is no 16550 (an ARM PL011, a USB debug port…).
    #[error("SPCR names interface type {0:#x}, not a 16550: console on COM1")]
    NotA16550(u8),
    /// A memory-mapped or PCI UART: only I/O-port UARTs are driven.
    #[error("SPCR names a UART in address space {0} (only I/O ports are driven): console on COM1")]
    NotIoPort(u8),
    /// Address 0 means redirection is off.
    #[error("SPCR says console redirection is off (address 0): console on COM1")]
    Disabled,
    /// An I/O address past 0xffff.
    #[error("SPCR names I/O port {0:#x}, past 0xffff: console on COM1")]
    PortOutOfRange(u64),
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

/// Reads the console port an SPCR table names.
pub fn parse(table: &[u8]) -> Result<ConsolePort, SpcrError> {
    if table.len() < HEADER_LEN {
        return Err(SpcrError::TooShort(table.len()));
    }
    if &table[..4] != b"SPCR" {
        return Err(SpcrError::BadSignature);
    }
    let declared = u32_at(table, 4) as usize;
    if declared < MIN_LEN || declared > table.len() {
        return Err(SpcrError::TooShort(declared.min(table.len())));
    }
    let table = &table[..declared];
    if table.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)) != 0 {
        return Err(SpcrError::BadChecksum);
    }
    let interface = table[INTERFACE_TYPE];
    if !UART_16550_TYPES.contains(&interface) {
        return Err(SpcrError::NotA16550(interface));
    }
    let space = table[GAS_SPACE];
    let mut address = [0u8; 8];
    address.copy_from_slice(&table[GAS_ADDRESS..GAS_ADDRESS + 8]);
    let address = u64::from_le_bytes(address);
    if address == 0 {
        return Err(SpcrError::Disabled);
    }
    if space != SPACE_SYSTEM_IO {
        return Err(SpcrError::NotIoPort(space));
    }
    let base = u16::try_from(address).map_err(|_| SpcrError::PortOutOfRange(address))?;
    let revision = table[8];
    let precise = (revision >= 4 && table.len() >= PRECISE_BAUD + 4)
        .then(|| u32_at(table, PRECISE_BAUD))
        .filter(|b| STANDARD_BAUDS.contains(b));
    let configured = match table[CONFIGURED_BAUD] {
        3 => Some(9600),
        4 => Some(19200),
        6 => Some(57600),
        7 => Some(115_200),
        // 0: "as is", the firmware's setting, which Keel cannot read back reliably.
        _ => None,
    };
    let mut port = ConsolePort::io(base, precise.or(configured).unwrap_or(DEFAULT_BAUD));
    if table[INTERRUPT_TYPE] & INTERRUPT_8259 != 0 && table[IRQ] < 16 {
        port.irq = Some(table[IRQ]);
    } else if !COM_BASES.contains(&base) {
        port.irq = None;
    }
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// A revision-2 SPCR naming a 16550 at `port` in address space `space`, IRQ 3, 9600 baud.
    pub(crate) fn spcr(interface: u8, space: u8, port: u64) -> Vec<u8> {
        let mut t = vec![0u8; 80];
        t[..4].copy_from_slice(b"SPCR");
        t[4..8].copy_from_slice(&80u32.to_le_bytes());
        t[8] = 2;
        t[10..16].copy_from_slice(b"KEELTS");
        t[INTERFACE_TYPE] = interface;
        t[GAS_SPACE] = space;
        t[41] = 8;
        t[43] = 1;
        t[GAS_ADDRESS..GAS_ADDRESS + 8].copy_from_slice(&port.to_le_bytes());
        t[INTERRUPT_TYPE] = INTERRUPT_8259;
        t[IRQ] = 3;
        t[CONFIGURED_BAUD] = 3;
        t[62] = 0; // VT100
        fix_checksum(&mut t);
        t
    }

    fn fix_checksum(t: &mut [u8]) {
        t[9] = 0;
        let sum = t.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
    }

    #[test]
    fn a_16550_on_io_ports_is_the_console() {
        let port = parse(&spcr(0, 1, 0x2f8)).unwrap();
        assert_eq!((port.base, port.baud, port.irq), (0x2f8, 9600, Some(3)));
    }

    #[test]
    fn revision_4_precise_baud_wins() {
        let mut t = spcr(0, 1, 0x3f8);
        t.resize(88, 0);
        t[4..8].copy_from_slice(&88u32.to_le_bytes());
        t[8] = 4;
        t[PRECISE_BAUD..PRECISE_BAUD + 4].copy_from_slice(&57600u32.to_le_bytes());
        fix_checksum(&mut t);
        assert_eq!(parse(&t).unwrap().baud, 57600);
    }

    #[test]
    fn a_wrong_checksum_is_refused() {
        let mut t = spcr(0, 1, 0x2f8);
        t[9] = t[9].wrapping_add(1);
        assert_eq!(parse(&t), Err(SpcrError::BadChecksum));
    }

    #[test]
    fn mmio_and_other_uarts_are_refused() {
        assert_eq!(
            parse(&spcr(0, 0, 0xfe03_0000)),
            Err(SpcrError::NotIoPort(0))
        );
        assert_eq!(parse(&spcr(3, 1, 0x2f8)), Err(SpcrError::NotA16550(3)));
        assert_eq!(parse(&spcr(0, 1, 0)), Err(SpcrError::Disabled));
        assert_eq!(
            parse(&spcr(0, 1, 0x1_0000)),
            Err(SpcrError::PortOutOfRange(0x1_0000))
        );
    }

    #[test]
    fn truncated_or_foreign_tables_are_refused() {
        let t = spcr(0, 1, 0x2f8);
        assert_eq!(parse(&t[..40]), Err(SpcrError::TooShort(40)));
        assert_eq!(parse(&t[..10]), Err(SpcrError::TooShort(10)));
        let mut foreign = t.clone();
        foreign[..4].copy_from_slice(b"FACP");
        assert_eq!(parse(&foreign), Err(SpcrError::BadSignature));
    }

    #[test]
    fn an_unknown_port_without_an_8259_irq_is_polled() {
        let mut t = spcr(0, 1, 0x3000);
        t[INTERRUPT_TYPE] = 0;
        fix_checksum(&mut t);
        assert_eq!(parse(&t).unwrap().irq, None);
    }
}
