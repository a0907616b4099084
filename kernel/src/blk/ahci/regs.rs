//! AHCI 1.3.1 register layout, the command header, the command table and the H2D register
//! FIS, as pure encoders: no memory or MMIO access here.

/// Generic host control registers (AHCI 1.3.1 §3.1), offsets from ABAR.
pub mod ghc {
    /// HBA capabilities.
    pub const CAP: u32 = 0x00;
    /// Global host control.
    pub const GHC: u32 = 0x04;
    /// Interrupt status (one bit per port).
    pub const IS: u32 = 0x08;
    /// Ports implemented.
    pub const PI: u32 = 0x0C;
    /// Version.
    pub const VS: u32 = 0x10;
    /// Extended capabilities.
    pub const CAP2: u32 = 0x24;
    /// BIOS/OS handoff control and status.
    pub const BOHC: u32 = 0x28;

    /// GHC.AE: AHCI enable (the HBA speaks AHCI, not legacy IDE).
    pub const GHC_AE: u32 = 1 << 31;
    /// GHC.IE: interrupt enable (Keel polls; kept clear).
    pub const GHC_IE: u32 = 1 << 1;
    /// CAP.S64A: 64-bit addressing.
    pub const CAP_S64A: u32 = 1 << 31;
    /// CAP.SCLO: command list override.
    pub const CAP_SCLO: u32 = 1 << 24;
    /// CAP.SSS: staggered spin-up (PxCMD.SUD must be set to spin a device up).
    pub const CAP_SSS: u32 = 1 << 27;
    /// CAP2.BOH: BIOS/OS handoff supported.
    pub const CAP2_BOH: u32 = 1 << 0;
    /// BOHC.BOS: the BIOS owns the HBA.
    pub const BOHC_BOS: u32 = 1 << 0;
    /// BOHC.OOS: the OS asks for the HBA.
    pub const BOHC_OOS: u32 = 1 << 1;

    /// Number of command slots the HBA has (CAP.NCS + 1).
    pub fn command_slots(cap: u32) -> u32 {
        ((cap >> 8) & 0x1F) + 1
    }
}

/// Offset of port `port`'s register block from ABAR (§3.3).
pub fn port_base(port: u32) -> u32 {
    0x100 + port * 0x80
}

/// Size of the register window Keel maps: the generic block and 32 port blocks.
pub const ABAR_SIZE: u64 = 0x1100;

/// Port registers (§3.3), offsets inside a port's block.
pub mod port {
    /// Command list base address, low 32 bits (1 KiB aligned).
    pub const CLB: u32 = 0x00;
    /// Command list base address, high 32 bits.
    pub const CLBU: u32 = 0x04;
    /// Received-FIS base address, low 32 bits (256-byte aligned).
    pub const FB: u32 = 0x08;
    /// Received-FIS base address, high 32 bits.
    pub const FBU: u32 = 0x0C;
    /// Interrupt status (write 1 to clear).
    pub const IS: u32 = 0x10;
    /// Interrupt enable.
    pub const IE: u32 = 0x14;
    /// Command and status.
    pub const CMD: u32 = 0x18;
    /// Task file data: the device's status (7:0) and error (15:8) registers.
    pub const TFD: u32 = 0x20;
    /// Signature of the attached device.
    pub const SIG: u32 = 0x24;
    /// SATA status (SStatus).
    pub const SSTS: u32 = 0x28;
    /// SATA control (SControl).
    pub const SCTL: u32 = 0x2C;
    /// SATA error (SError, write 1 to clear).
    pub const SERR: u32 = 0x30;
    /// SATA active (NCQ tags).
    pub const SACT: u32 = 0x34;
    /// Command issue: one bit per slot, cleared by the HBA when the command completes.
    pub const CI: u32 = 0x38;

    /// PxCMD.ST: the HBA processes the command list.
    pub const CMD_ST: u32 = 1 << 0;
    /// PxCMD.SUD: spin up device.
    pub const CMD_SUD: u32 = 1 << 1;
    /// PxCMD.POD: power on device.
    pub const CMD_POD: u32 = 1 << 2;
    /// PxCMD.CLO: command list override (clears a stuck BSY/DRQ).
    pub const CMD_CLO: u32 = 1 << 3;
    /// PxCMD.FRE: FIS receive enable.
    pub const CMD_FRE: u32 = 1 << 4;
    /// PxCMD.FR: the FIS receive DMA engine runs.
    pub const CMD_FR: u32 = 1 << 14;
    /// PxCMD.CR: the command list DMA engine runs.
    pub const CMD_CR: u32 = 1 << 15;

    /// PxIS.TFES: task file error (the device set ERR in its status).
    pub const IS_TFES: u32 = 1 << 30;
    /// PxIS.HBFS: host bus fatal error (a DMA the HBA could not do).
    pub const IS_HBFS: u32 = 1 << 29;
    /// PxIS.HBDS: host bus data error.
    pub const IS_HBDS: u32 = 1 << 28;
    /// PxIS.IFS: interface fatal error.
    pub const IS_IFS: u32 = 1 << 27;
    /// PxIS.OFS: overflow (the device sent more data than the PRDT holds).
    pub const IS_OFS: u32 = 1 << 24;
    /// Every PxIS bit that ends a command with an error.
    pub const IS_ERRORS: u32 = IS_TFES | IS_HBFS | IS_HBDS | IS_IFS | IS_OFS;

    /// PxTFD status: BSY.
    pub const TFD_BSY: u32 = 1 << 7;
    /// PxTFD status: DRQ.
    pub const TFD_DRQ: u32 = 1 << 3;
    /// PxTFD status: ERR.
    pub const TFD_ERR: u32 = 1 << 0;

    /// PxSSTS.DET = 3: a device is present and the PHY link is up.
    pub const DET_PRESENT: u32 = 3;
    /// PxSSTS.DET = 1: a device is present but the link is not up (yet).
    pub const DET_NO_PHY: u32 = 1;
    /// PxSSTS.DET = 4: the PHY is offline (disabled or in BIST).
    pub const DET_OFFLINE: u32 = 4;

    /// PxSIG of an ATA disk.
    pub const SIG_ATA: u32 = 0x0000_0101;
    /// PxSIG of an ATAPI device (optical drive).
    pub const SIG_ATAPI: u32 = 0xEB14_0101;
    /// PxSIG of an enclosure management bridge.
    pub const SIG_SEMB: u32 = 0xC33C_0101;
    /// PxSIG of a port multiplier.
    pub const SIG_PM: u32 = 0x9669_0101;
}

/// PxSSTS.DET: device detection.
pub fn ssts_det(ssts: u32) -> u32 {
    ssts & 0xF
}

/// What PxSIG says is attached, for the operator.
pub fn describe_signature(sig: u32) -> &'static str {
    match sig {
        port::SIG_ATA => "ATA disk",
        port::SIG_ATAPI => "ATAPI device (optical drive)",
        port::SIG_SEMB => "enclosure management bridge",
        port::SIG_PM => "port multiplier",
        _ => "unknown device",
    }
}

/// Size of a command header in the command list (§4.2.2).
pub const COMMAND_HEADER_SIZE: usize = 32;
/// Size of the command list Keel allocates: 32 headers (1 KiB, the alignment it needs).
pub const COMMAND_LIST_SIZE: usize = 32 * COMMAND_HEADER_SIZE;
/// Size of the received-FIS area (§4.2.1).
pub const RECEIVED_FIS_SIZE: usize = 256;
/// Offset of the D2H register FIS inside the received-FIS area.
pub const RFIS_OFFSET: usize = 0x40;
/// Offset of the PRDT inside a command table (§4.2.3).
pub const PRDT_OFFSET: usize = 0x80;
/// Size of a PRDT entry.
pub const PRDT_ENTRY_SIZE: usize = 16;
/// Largest byte count one PRDT entry describes (22-bit DBC: 4 MiB).
pub const PRDT_ENTRY_MAX: u64 = 4 * 1024 * 1024;
/// Length of the H2D register FIS in bytes (CFL = 5 dwords).
pub const H2D_FIS_LEN: usize = 20;
/// FIS type of a register FIS, host to device.
pub const FIS_TYPE_H2D: u8 = 0x27;

/// Command header DW0 (§4.2.2): CFL = 5, W for a write, PRDTL entries.
pub fn command_header(write: bool, prdt_entries: u16, table_phys: u64) -> [u8; 32] {
    let mut dw0 = (H2D_FIS_LEN / 4) as u32;
    if write {
        dw0 |= 1 << 6;
    }
    dw0 |= u32::from(prdt_entries) << 16;
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&dw0.to_le_bytes());
    // DW1 (PRDBC) starts at 0; the HBA counts the bytes it moved there.
    h[8..12].copy_from_slice(&(table_phys as u32).to_le_bytes());
    h[12..16].copy_from_slice(&((table_phys >> 32) as u32).to_le_bytes());
    h
}

/// One PRDT entry (§4.2.3.3): data base address and byte count − 1 (even count).
pub fn prdt_entry(phys: u64, bytes: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0..4].copy_from_slice(&(phys as u32).to_le_bytes());
    e[4..8].copy_from_slice(&((phys >> 32) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(((bytes - 1) as u32) & 0x3F_FFFF).to_le_bytes());
    e
}

/// Why a PRDT could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrdtError {
    /// The buffer's address or length is odd, or the length is zero.
    Misaligned,
    /// The buffer needs more entries than the table holds.
    TooLong,
}

/// The PRDT entries `(phys, bytes)` describing `bytes` bytes at `phys`: pieces of at most
/// [`PRDT_ENTRY_MAX`], at most `max_entries` of them.
pub fn build_prdt(
    phys: u64,
    bytes: u64,
    max_entries: usize,
) -> Result<alloc::vec::Vec<(u64, u64)>, PrdtError> {
    if bytes == 0 || !phys.is_multiple_of(2) || !bytes.is_multiple_of(2) {
        return Err(PrdtError::Misaligned);
    }
    let needed = bytes.div_ceil(PRDT_ENTRY_MAX);
    if needed > max_entries as u64 {
        return Err(PrdtError::TooLong);
    }
    let mut entries = alloc::vec::Vec::with_capacity(needed as usize);
    let mut at = 0;
    while at < bytes {
        let len = (bytes - at).min(PRDT_ENTRY_MAX);
        entries.push((phys + at, len));
        at += len;
    }
    Ok(entries)
}

/// An ATA command for the H2D register FIS: opcode, 48-bit LBA and sector count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtaCommand {
    /// The command opcode (ATA8-ACS).
    pub opcode: u8,
    /// First sector (LBA mode).
    pub lba: u64,
    /// Sectors (0 for non-data commands; 65536 is encoded as 0 by ATA, Keel never sends it).
    pub count: u16,
}

/// The H2D register FIS (SATA 3.x §10.5.5) for `cmd`, with the C bit set (a new command)
/// and the LBA bit in the device register.
pub fn h2d_fis(cmd: &AtaCommand) -> [u8; H2D_FIS_LEN] {
    let lba = cmd.lba.to_le_bytes();
    let count = cmd.count.to_le_bytes();
    let mut f = [0u8; H2D_FIS_LEN];
    f[0] = FIS_TYPE_H2D;
    f[1] = 0x80;
    f[2] = cmd.opcode;
    f[4] = lba[0];
    f[5] = lba[1];
    f[6] = lba[2];
    f[7] = 0x40;
    f[8] = lba[3];
    f[9] = lba[4];
    f[10] = lba[5];
    f[12] = count[0];
    f[13] = count[1];
    f
}

/// The command, LBA and count an H2D FIS carries (for the HBA model in tests).
#[cfg(test)]
pub fn parse_h2d_fis(f: &[u8]) -> AtaCommand {
    let lba = u64::from_le_bytes([f[4], f[5], f[6], f[8], f[9], f[10], 0, 0]);
    AtaCommand {
        opcode: f[2],
        lba,
        count: u16::from_le_bytes([f[12], f[13]]),
    }
}
