//! The driver against a model of an ATA channel: a fake drive that answers the task-file
//! protocol (IDENTIFY, PIO reads and writes in 28 and 48 bits, flushes), and its failures.

use std::vec;
use std::vec::Vec;

use super::*;
use crate::blk::ata::protocol::{LBA28_LIMIT, Transfer, plan};

/// One fake drive.
#[derive(Clone)]
struct FakeDrive {
    kind: Kind,
    /// Sparse content: (lba, sector) for sectors written; the rest read as a pattern.
    written: Vec<(u64, [u8; SECTOR])>,
    sectors: u64,
    lba48: bool,
    sector_bytes: u32,
    /// A sector whose read fails with UNC.
    bad_sector: Option<u64>,
    /// Never leaves BSY once a command is issued (or from the start).
    stuck_busy: bool,
    /// Aborts every command but IDENTIFY.
    abort_all: bool,
    /// Commands received, with their 48-bit-aware LBA and count.
    log: Vec<(u8, u64, u32)>,
    flushes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disk,
    Atapi,
}

fn disk(sectors: u64, lba48: bool) -> FakeDrive {
    FakeDrive {
        kind: Kind::Disk,
        written: Vec::new(),
        sectors,
        lba48,
        sector_bytes: 512,
        bad_sector: None,
        stuck_busy: false,
        abort_all: false,
        log: Vec::new(),
        flushes: 0,
    }
}

fn atapi() -> FakeDrive {
    FakeDrive {
        kind: Kind::Atapi,
        ..disk(0, false)
    }
}

/// The pattern an unwritten sector reads as: its LBA in every 8 bytes.
fn pattern(lba: u64) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    for chunk in s.chunks_exact_mut(8) {
        chunk.copy_from_slice(&lba.to_le_bytes());
    }
    s
}

impl FakeDrive {
    fn sector(&self, lba: u64) -> [u8; SECTOR] {
        self.written
            .iter()
            .rev()
            .find(|(at, _)| *at == lba)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| pattern(lba))
    }

    fn identify(&self) -> [u8; SECTOR] {
        let mut w = [0u16; 256];
        let put_str = |w: &mut [u16; 256], first: usize, len: usize, text: &str| {
            let mut bytes = vec![b' '; len * 2];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            for i in 0..len {
                w[first + i] = u16::from(bytes[2 * i]) << 8 | u16::from(bytes[2 * i + 1]);
            }
        };
        w[0] = 0x0040;
        put_str(&mut w, 10, 10, "QM00001");
        put_str(&mut w, 27, 20, "QEMU HARDDISK");
        w[49] = 1 << 9;
        let lba28 = self.sectors.min(LBA28_LIMIT - 1) as u32;
        w[60] = lba28 as u16;
        w[61] = (lba28 >> 16) as u16;
        w[83] = 0x4000 | if self.lba48 { 1 << 10 } else { 0 };
        for i in 0..4 {
            w[100 + i] = (self.sectors >> (16 * i)) as u16;
        }
        if self.sector_bytes != 512 {
            w[106] = 0x4000 | 1 << 12;
            let words = self.sector_bytes / 2;
            w[117] = words as u16;
            w[118] = (words >> 16) as u16;
        }
        let mut out = [0u8; SECTOR];
        for (i, v) in w.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// What the selected drive is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    /// Data-in: the next sector to hand out, and the end.
    DataIn {
        next: u64,
        end: u64,
    },
    /// Data-out: the next sector to take, and the end.
    DataOut {
        next: u64,
        end: u64,
    },
    /// One IDENTIFY block to hand out.
    Identify,
    Busy,
}

/// A channel with up to two drives, or none (a floating bus).
struct FakeChannel {
    drives: [Option<FakeDrive>; 2],
    selected: usize,
    /// Task-file registers (current and previous content, for 48-bit commands).
    regs: [u8; 8],
    prev: [u8; 8],
    status: u8,
    error: u8,
    phase: Phase,
    /// Milliseconds: each status read takes one.
    clock: u64,
    control: u8,
    resets: usize,
}

impl FakeChannel {
    fn new(master: Option<FakeDrive>, slave: Option<FakeDrive>) -> FakeChannel {
        let mut channel = FakeChannel {
            drives: [master, slave],
            selected: 0,
            regs: [0; 8],
            prev: [0; 8],
            status: 0,
            error: 0,
            phase: Phase::Idle,
            clock: 0,
            control: 0,
            resets: 0,
        };
        channel.after_reset();
        channel
    }

    fn after_reset(&mut self) {
        self.phase = Phase::Idle;
        self.error = 0x01;
        self.regs = [0; 8];
        let drive = self.drives[self.selected].as_ref();
        match drive {
            Some(d) if d.stuck_busy => self.status = status::BSY,
            Some(d) if d.kind == Kind::Atapi => {
                self.status = 0;
                self.regs[4] = 0x14;
                self.regs[5] = 0xEB;
            }
            Some(_) => self.status = status::DRDY | 0x10,
            None => self.status = 0,
        }
    }

    fn drive(&mut self) -> &mut FakeDrive {
        self.drives[self.selected].as_mut().unwrap()
    }

    fn present(&self) -> bool {
        self.drives[self.selected].is_some()
    }

    fn floating(&self) -> bool {
        self.drives.iter().all(Option::is_none)
    }

    fn abort(&mut self, error: u8) {
        self.status = status::DRDY | status::ERR;
        self.error = error;
        self.phase = Phase::Idle;
    }

    fn lba(&self, ext: bool) -> (u64, u32) {
        let r = &self.regs;
        let p = &self.prev;
        if ext {
            let lba = u64::from_le_bytes([r[3], r[4], r[5], p[3], p[4], p[5], 0, 0]);
            let count = u32::from(r[2]) | u32::from(p[2]) << 8;
            (lba, if count == 0 { 65536 } else { count })
        } else {
            let lba = u64::from_le_bytes([r[3], r[4], r[5], r[6] & 0x0F, 0, 0, 0, 0]);
            let count = u32::from(r[2]);
            (lba, if count == 0 { 256 } else { count })
        }
    }

    fn command(&mut self, opcode: u8) {
        if !self.present() {
            return;
        }
        self.error = 0;
        if self.drive().stuck_busy {
            self.status = status::BSY;
            self.phase = Phase::Busy;
            return;
        }
        let ext = matches!(
            opcode,
            command::READ_SECTORS_EXT | command::WRITE_SECTORS_EXT | command::FLUSH_CACHE_EXT
        );
        let (lba, count) = self.lba(ext);
        self.drive().log.push((opcode, lba, count));
        let kind = self.drive().kind;
        if kind == Kind::Atapi {
            self.regs[4] = 0x14;
            self.regs[5] = 0xEB;
            return self.abort(0x04);
        }
        if opcode == command::IDENTIFY {
            self.status = status::DRDY | status::DRQ;
            self.phase = Phase::Identify;
            return;
        }
        if self.drive().abort_all || (ext && !self.drive().lba48) {
            return self.abort(0x04);
        }
        let sectors = self.drive().sectors;
        match opcode {
            command::READ_SECTORS
            | command::READ_SECTORS_EXT
            | command::WRITE_SECTORS
            | command::WRITE_SECTORS_EXT => {
                if lba + u64::from(count) > sectors {
                    return self.abort(0x10);
                }
                let end = lba + u64::from(count);
                self.phase = if matches!(opcode, command::READ_SECTORS | command::READ_SECTORS_EXT)
                {
                    Phase::DataIn { next: lba, end }
                } else {
                    Phase::DataOut { next: lba, end }
                };
                self.status = status::DRDY | status::DRQ;
                self.check_bad();
            }
            command::FLUSH_CACHE | command::FLUSH_CACHE_EXT => {
                self.drive().flushes += 1;
                self.status = status::DRDY;
            }
            _ => self.abort(0x04),
        }
    }

    /// A read reaching the bad sector fails there with UNC.
    fn check_bad(&mut self) {
        if let Phase::DataIn { next, .. } = self.phase
            && self.drive().bad_sector == Some(next)
        {
            self.abort(0x40);
        }
    }
}

impl AtaPorts for FakeChannel {
    type Deadline = u64;

    fn read(&mut self, reg: TaskReg) -> u8 {
        if self.floating() {
            return 0xFF;
        }
        if !self.present() {
            return 0;
        }
        match reg {
            TaskReg::ErrorFeatures => self.error,
            TaskReg::StatusCommand => self.alt_status(),
            r => self.regs[r as usize],
        }
    }

    fn write(&mut self, reg: TaskReg, value: u8) {
        if self.floating() {
            return;
        }
        match reg {
            TaskReg::StatusCommand => self.command(value),
            TaskReg::Device => {
                self.selected = usize::from(value & device::DEV1 != 0);
                self.regs[6] = value;
            }
            r => {
                self.prev[r as usize] = self.regs[r as usize];
                self.regs[r as usize] = value;
            }
        }
    }

    fn alt_status(&mut self) -> u8 {
        self.clock += 1;
        if self.floating() {
            return 0xFF;
        }
        if !self.present() {
            return 0;
        }
        if self.drive().stuck_busy {
            return status::BSY;
        }
        self.status
    }

    fn set_control(&mut self, value: u8) {
        if self.control & control::SRST != 0 && value & control::SRST == 0 {
            self.resets += 1;
            self.after_reset();
        }
        self.control = value;
    }

    fn read_block(&mut self, buf: &mut [u8; SECTOR]) {
        match self.phase {
            Phase::Identify => {
                *buf = self.drive().identify();
                self.phase = Phase::Idle;
                self.status = status::DRDY;
            }
            Phase::DataIn { next, end } => {
                *buf = self.drive().sector(next);
                let next = next + 1;
                if next == end {
                    self.phase = Phase::Idle;
                    self.status = status::DRDY;
                } else {
                    self.phase = Phase::DataIn { next, end };
                    self.check_bad();
                }
            }
            _ => panic!("data read outside a data-in phase ({:?})", self.phase),
        }
    }

    fn write_block(&mut self, buf: &[u8; SECTOR]) {
        let Phase::DataOut { next, end } = self.phase else {
            panic!("data write outside a data-out phase ({:?})", self.phase);
        };
        self.drive().written.push((next, *buf));
        let next = next + 1;
        if next == end {
            self.phase = Phase::Idle;
            self.status = status::DRDY;
        } else {
            self.phase = Phase::DataOut { next, end };
        }
    }

    fn deadline_after_ms(&mut self, ms: u64) -> u64 {
        self.clock + ms
    }

    fn expired(&mut self, deadline: &u64) -> bool {
        self.clock > *deadline
    }
}

fn identified(channel: &mut FakeChannel, position: Position) -> Identity {
    match probe(channel, position) {
        Probed::Disk(identity) => identity,
        other => panic!("expected a disk, got {other:?}"),
    }
}

fn one_disk(drive: FakeDrive) -> AtaDisk<FakeChannel> {
    let mut channel = FakeChannel::new(Some(drive), None);
    let identity = identified(&mut channel, Position::Master);
    // The tests look at the commands after IDENTIFY.
    channel.drives[0].as_mut().unwrap().log.clear();
    AtaDisk::new(channel, Position::Master, identity)
}

fn log(disk: &mut AtaDisk<FakeChannel>) -> Vec<(u8, u64, u32)> {
    core::mem::take(&mut disk.ports.drives[0].as_mut().unwrap().log)
}

#[test]
fn identify_gives_model_serial_and_size() {
    let mut channel = FakeChannel::new(Some(disk(2048 * 64, true)), None);
    let identity = identified(&mut channel, Position::Master);
    assert_eq!(identity.model, "QEMU HARDDISK");
    assert_eq!(identity.serial, "QM00001");
    assert!(identity.lba48);
    assert_eq!(identity.sectors, 2048 * 64);
    let disk = AtaDisk::new(channel, Position::Master, identity);
    assert_eq!(disk.model(), "QEMU HARDDISK, serial QM00001");
}

#[test]
fn a_floating_bus_has_no_drives() {
    let mut channel = FakeChannel::new(None, None);
    assert!(floating(&mut channel));
    assert_eq!(probe(&mut channel, Position::Master), Probed::Absent);
    assert_eq!(probe(&mut channel, Position::Slave), Probed::Absent);
}

#[test]
fn an_absent_slave_beside_a_master_is_absent() {
    let mut channel = FakeChannel::new(Some(disk(100, false)), None);
    assert!(!floating(&mut channel));
    assert_eq!(probe(&mut channel, Position::Slave), Probed::Absent);
    assert!(matches!(
        probe(&mut channel, Position::Master),
        Probed::Disk(_)
    ));
}

#[test]
fn the_slave_is_probed_and_driven_on_its_own() {
    let mut channel = FakeChannel::new(Some(disk(100, false)), Some(disk(300, true)));
    let identity = identified(&mut channel, Position::Slave);
    assert_eq!(identity.sectors, 300);
    let mut slave = AtaDisk::new(channel, Position::Slave, identity);
    slave.write(299, &[7u8; SECTOR]).unwrap();
    let mut buf = [0u8; SECTOR];
    slave.read(299, &mut buf).unwrap();
    assert_eq!(buf, [7u8; SECTOR]);
    let drives = &slave.ports.drives;
    assert!(
        drives[0].as_ref().unwrap().written.is_empty(),
        "the master was written"
    );
    assert_eq!(drives[1].as_ref().unwrap().written.len(), 1);
}

#[test]
fn an_atapi_device_is_listed_not_driven() {
    let mut channel = FakeChannel::new(Some(atapi()), None);
    assert_eq!(
        probe(&mut channel, Position::Master),
        Probed::Packet(Signature::Atapi)
    );
    // The same device after it has shown a status (DRDY) answers IDENTIFY with an abort.
    channel.status = status::DRDY;
    assert_eq!(
        probe(&mut channel, Position::Master),
        Probed::Packet(Signature::Atapi)
    );
}

#[test]
fn a_drive_that_never_leaves_bsy_fails_the_probe_in_bounded_time() {
    let mut drive = disk(100, true);
    drive.stuck_busy = true;
    let mut channel = FakeChannel::new(Some(drive), None);
    let before = channel.clock;
    match probe(&mut channel, Position::Master) {
        Probed::Failed(ProbeError::Command(AtaError::Timeout { ms, status, .. })) => {
            assert_eq!(ms, IDENTIFY_TIMEOUT_MS);
            assert_eq!(status, status::BSY);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The identify wait and the reset's wait, each bounded.
    assert!(channel.clock - before < IDENTIFY_TIMEOUT_MS + RESET_TIMEOUT_MS + 100);
    assert_eq!(channel.resets, 1, "the channel is reset after the timeout");
}

#[test]
fn a_timeout_message_names_the_status() {
    let e = AtaError::Timeout {
        command: "READ SECTORS",
        ms: 10_000,
        status: 0x80,
    };
    assert_eq!(
        e.to_string(),
        "READ SECTORS: drive not ready after 10000 ms (status 0x80 (BSY))"
    );
}

#[test]
fn a_drive_going_busy_mid_use_is_a_timeout_error_not_a_hang() {
    let mut d = one_disk(disk(1000, true));
    d.ports.drives[0].as_mut().unwrap().stuck_busy = true;
    let mut buf = [0u8; SECTOR];
    let err = d.read(5, &mut buf).unwrap_err();
    let DiskError::Device { op, lba, detail } = err else {
        panic!("{err:?}")
    };
    assert_eq!((op, lba), (DiskOp::Read, 5));
    assert!(detail.contains("not ready after 10000 ms"), "{detail}");
    assert!(d.ports.resets >= 1);
    let err = d.flush().unwrap_err();
    assert!(err.to_string().contains("FLUSH CACHE EXT"), "{err}");
}

#[test]
fn lba28_and_48_identify_words() {
    let mut channel = FakeChannel::new(Some(disk(LBA28_LIMIT + 5000, true)), None);
    assert_eq!(
        identified(&mut channel, Position::Master).sectors,
        LBA28_LIMIT + 5000
    );
    // A drive without LBA48 reports (and is driven within) its 28-bit count.
    let mut channel = FakeChannel::new(Some(disk(LBA28_LIMIT - 1, false)), None);
    let identity = identified(&mut channel, Position::Master);
    assert!(!identity.lba48);
    assert_eq!(identity.sectors, LBA28_LIMIT - 1);
}

#[test]
fn other_sector_sizes_are_refused() {
    let mut drive = disk(1000, true);
    drive.sector_bytes = 4096;
    let mut channel = FakeChannel::new(Some(drive), None);
    let got = probe(&mut channel, Position::Master);
    assert_eq!(
        got,
        Probed::Failed(ProbeError::Identity(IdentityError::SectorSize(4096)))
    );
    let Probed::Failed(e) = got else {
        unreachable!()
    };
    assert_eq!(
        e.to_string(),
        "drive has 4096-byte logical sectors: Keel handles 512-byte sectors only"
    );
}

#[test]
fn reads_and_writes_round_trip_in_28_bit_commands() {
    let mut d = one_disk(disk(10_000, true));
    let data: Vec<u8> = (0..600 * SECTOR).map(|i| (i % 251) as u8).collect();
    d.write(1000, &data).unwrap();
    let mut back = vec![0u8; 600 * SECTOR];
    d.read(1000, &mut back).unwrap();
    assert_eq!(back, data);
    // 600 sectors: 256 + 256 + 88, in each direction.
    let cmds = log(&mut d);
    assert_eq!(
        cmds,
        vec![
            (command::WRITE_SECTORS, 1000, 256),
            (command::WRITE_SECTORS, 1256, 256),
            (command::WRITE_SECTORS, 1512, 88),
            (command::READ_SECTORS, 1000, 256),
            (command::READ_SECTORS, 1256, 256),
            (command::READ_SECTORS, 1512, 88),
        ]
    );
    // Unwritten sectors come back as the drive has them.
    let mut one = [0u8; SECTOR];
    d.read(999, &mut one).unwrap();
    assert_eq!(one, pattern(999));
}

#[test]
fn the_lba48_boundary_switches_to_ext_commands() {
    let mut d = one_disk(disk(LBA28_LIMIT + 1000, true));
    // Sectors 2^28-2 .. 2^28+2: crossing the boundary needs the 48-bit command.
    let data = vec![0x5Au8; 4 * SECTOR];
    d.write(LBA28_LIMIT - 2, &data).unwrap();
    let mut back = vec![0u8; 4 * SECTOR];
    d.read(LBA28_LIMIT - 2, &mut back).unwrap();
    assert_eq!(back, data);
    // The last sector 28 bits reach, and the first beyond.
    let mut one = [0u8; SECTOR];
    d.read(LBA28_LIMIT - 1, &mut one).unwrap();
    d.read(LBA28_LIMIT + 999, &mut one).unwrap();
    assert_eq!(one, pattern(LBA28_LIMIT + 999));
    assert_eq!(
        log(&mut d),
        vec![
            (command::WRITE_SECTORS_EXT, LBA28_LIMIT - 2, 4),
            (command::READ_SECTORS_EXT, LBA28_LIMIT - 2, 4),
            (command::READ_SECTORS, LBA28_LIMIT - 1, 1),
            (command::READ_SECTORS_EXT, LBA28_LIMIT + 999, 1),
        ]
    );
}

#[test]
fn plan_fills_48_bit_commands_to_65536_sectors() {
    let t = plan(LBA28_LIMIT, 65536 + 10, true, false);
    assert_eq!(
        t,
        vec![
            Transfer {
                opcode: command::READ_SECTORS_EXT,
                lba: LBA28_LIMIT,
                count: 65536,
                ext: true
            },
            Transfer {
                opcode: command::READ_SECTORS_EXT,
                lba: LBA28_LIMIT + 65536,
                count: 10,
                ext: true
            },
        ]
    );
    // A count of 65536 goes out as 0 in both bytes, which the drive reads as 65536.
    let mut d = one_disk(disk(LBA28_LIMIT + 70_000, true));
    let mut buf = vec![0u8; 65536 * SECTOR];
    d.read(LBA28_LIMIT, &mut buf).unwrap();
    assert_eq!(
        log(&mut d),
        vec![(command::READ_SECTORS_EXT, LBA28_LIMIT, 65536)]
    );
    assert_eq!(buf[65535 * SECTOR..], pattern(LBA28_LIMIT + 65535));
}

#[test]
fn flush_uses_the_commands_the_drive_has() {
    let mut d = one_disk(disk(100, true));
    d.flush().unwrap();
    assert_eq!(log(&mut d)[0].0, command::FLUSH_CACHE_EXT);
    let mut d = one_disk(disk(100, false));
    d.flush().unwrap();
    assert_eq!(log(&mut d)[0].0, command::FLUSH_CACHE);
    assert_eq!(d.ports.drives[0].as_ref().unwrap().flushes, 1);
}

#[test]
fn an_unreadable_sector_is_reported_by_name_and_the_next_command_works() {
    let mut drive = disk(1000, true);
    drive.bad_sector = Some(103);
    let mut d = one_disk(drive);
    let mut buf = vec![0u8; 8 * SECTOR];
    let err = d.read(100, &mut buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "disk read at sector 100 failed: READ SECTORS failed: status 0x41 (DRDY, ERR), \
         error 0x40 (UNC (uncorrectable data))"
    );
    // ERR from the failed command does not stop the next one.
    let mut one = [0u8; SECTOR];
    d.read(200, &mut one).unwrap();
    assert_eq!(one, pattern(200));
}

#[test]
fn an_aborted_write_is_reported() {
    let mut drive = disk(1000, true);
    drive.abort_all = true;
    let mut d = one_disk(drive);
    let err = d.write(10, &[0u8; SECTOR]).unwrap_err();
    assert!(err.to_string().contains("ABRT (command aborted)"), "{err}");
    let err = d.flush().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("disk flush at sector 0 failed: FLUSH CACHE EXT failed"),
        "{err}"
    );
}

#[test]
fn out_of_range_and_bad_lengths_never_reach_the_drive() {
    let mut d = one_disk(disk(100, false));
    let mut buf = [0u8; 2 * SECTOR];
    assert!(matches!(
        d.read(99, &mut buf),
        Err(DiskError::OutOfRange { .. })
    ));
    assert!(matches!(
        d.write(0, &buf[..100]),
        Err(DiskError::BadLength { len: 100 })
    ));
    assert!(log(&mut d).is_empty());
}

#[test]
fn status_and_error_bits_are_named() {
    assert_eq!(Bits::status(0x58).to_string(), "0x58 (DRDY, DSC, DRQ)");
    assert_eq!(Bits::status(0).to_string(), "0x00");
    assert_eq!(
        Bits::error(0x14).to_string(),
        "0x14 (IDNF (sector not found), ABRT (command aborted))"
    );
}

#[test]
fn identify_of_a_chs_only_drive_is_refused() {
    let mut data = disk(100, false).identify();
    data[98] = 0;
    data[99] = 0;
    assert_eq!(protocol::parse_identify(&data), Err(IdentityError::NoLba));
}
