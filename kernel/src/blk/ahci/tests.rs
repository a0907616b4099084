//! The AHCI driver against the HBA model.

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use super::ata::{self, IdentifyError, TaskFile};
use super::model::{ModelHba, PortModel};
use super::port::{self, AhciError, AhciPort, PortProbe, init_controller, probe_port};
use super::regs::{self, AtaCommand, ghc, port as p};
use crate::blk::disk::{Disk, DiskError};

fn bring_up(hba: &ModelHba, index: u32) -> PortProbe<ModelHba> {
    let mut h = hba.clone();
    let (cap, pi) = init_controller(&mut h).expect("controller");
    assert_ne!(pi & (1 << index), 0);
    probe_port(h, index, cap)
}

fn disk(hba: &ModelHba, index: u32) -> AhciPort<ModelHba> {
    match bring_up(hba, index) {
        PortProbe::Disk(d) => d,
        PortProbe::Empty => panic!("port {index} empty"),
        PortProbe::Failed(e) => panic!("port {index} failed: {e}"),
    }
}

/// Position in the write log of the first write from `start` on to port 0's `reg` matching
/// `pred`.
fn first_write(log: &[(u32, u32)], start: usize, reg: u32, pred: impl Fn(u32) -> bool) -> usize {
    let offset = regs::port_base(0) + reg;
    start
        + log[start..]
            .iter()
            .position(|&(o, v)| o == offset && pred(v))
            .unwrap_or_else(|| panic!("no matching write to port register {reg:#x}"))
}

#[test]
fn bring_up_follows_the_spec_order() {
    let hba = ModelHba::new(vec![PortModel::disk(2048)]);
    // The firmware left the port running with its own command list.
    hba.port(0, |m| {
        m.regs[(p::CMD / 4) as usize] = p::CMD_ST | p::CMD_CR | p::CMD_FRE | p::CMD_FR;
        m.regs[(p::CLB / 4) as usize] = 0xDEAD_0000;
    });
    let d = disk(&hba, 0);
    let log = hba.log();
    let ae = log
        .iter()
        .position(|&(o, v)| o == ghc::GHC && v & ghc::GHC_AE != 0)
        .expect("GHC.AE set");
    let st_off = first_write(&log, 0, p::CMD, |v| v & p::CMD_ST == 0);
    let fre_off = first_write(&log, 0, p::CMD, |v| v & p::CMD_FRE == 0);
    let clb = first_write(&log, 0, p::CLB, |_| true);
    let fb = first_write(&log, 0, p::FB, |_| true);
    let fre_on = first_write(&log, fre_off, p::CMD, |v| v & p::CMD_FRE != 0);
    let st_on = first_write(&log, fre_off, p::CMD, |v| v & p::CMD_ST != 0);
    let ci = first_write(&log, 0, p::CI, |v| v == 1);
    assert!(ae < st_off, "AHCI mode before touching ports");
    assert!(st_off < fre_off, "ST cleared before FRE");
    assert!(
        fre_off < clb && fre_off < fb,
        "engines stopped before the lists move"
    );
    assert!(clb < fre_on && fb < fre_on, "FIS area set before FRE");
    assert!(fre_on < st_on, "FRE before ST");
    assert!(st_on < ci, "started before the first command");
    assert_ne!(hba.port(0, |m| m.regs[(p::CLB / 4) as usize]), 0xDEAD_0000);
    assert_eq!(d.sector_count(), 2048);
    assert_eq!(d.identity().model, "QEMU HARDDISK");
    assert_eq!(d.identity().serial, "QM00001");
    assert_eq!(d.identity().firmware, "2.5+");
    assert_eq!(hba.port(0, |m| m.commands[0].opcode), ata::IDENTIFY_DEVICE);
}

#[test]
fn an_empty_port_is_skipped_quickly_and_left_stopped() {
    let hba = ModelHba::new(vec![PortModel::empty(), PortModel::disk(64)]);
    assert!(matches!(bring_up(&hba, 0), PortProbe::Empty));
    assert!(
        hba.now_ms() <= port::LINK_DETECT_MS + 5,
        "{} ms",
        hba.now_ms()
    );
    assert_eq!(
        hba.port(0, |m| m.regs[(p::CMD / 4) as usize]) & p::CMD_ST,
        0
    );
    assert!(hba.port(0, |m| m.commands.is_empty()));
    assert!(matches!(bring_up(&hba, 1), PortProbe::Disk(_)));
}

#[test]
fn an_atapi_device_is_listed_as_not_a_disk() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    hba.port(0, |m| m.regs[(p::SIG / 4) as usize] = p::SIG_ATAPI);
    match bring_up(&hba, 0) {
        PortProbe::Failed(e) => {
            assert_eq!(
                e,
                AhciError::NotADisk {
                    signature: p::SIG_ATAPI,
                    what: "ATAPI device (optical drive)"
                }
            );
            assert_eq!(
                e.to_string(),
                "not a disk: ATAPI device (optical drive) (signature 0xeb140101)"
            );
        }
        _ => panic!("ATAPI accepted"),
    }
    assert!(hba.port(0, |m| m.commands.is_empty()), "no IDENTIFY sent");
}

#[test]
fn identify_parsing() {
    let data = ata::identify_data("Samsung SSD 870 EVO 1TB", "S6PTNZ0R123456", 1 << 33, 512);
    let id = ata::parse_identify(&data).unwrap();
    assert_eq!(id.model, "Samsung SSD 870 EVO 1TB");
    assert_eq!(id.serial, "S6PTNZ0R123456");
    assert_eq!(id.sectors, 1 << 33, "LBA48 count beyond 32 bits");
    assert!(id.lba48 && id.flush_ext);
    assert_eq!(id.logical_sector_size, 512);
    // The strings really are byte-swapped per word in the raw data.
    assert_eq!(&data[54..58], b"aSsm");

    let data = ata::identify_data("4Kn disk", "X", 1000, 4096);
    assert_eq!(
        ata::parse_identify(&data),
        Err(IdentifyError::SectorSize(4096))
    );
    let mut data = ata::identify_data("old", "X", 1000, 512);
    data[83 * 2 + 1] &= !(1 << 2); // word 83 bit 10
    assert_eq!(ata::parse_identify(&data), Err(IdentifyError::NoLba48));
    assert_eq!(
        ata::parse_identify(&data[..100]),
        Err(IdentifyError::Short(100))
    );
    // Word 106 without its validity bits is ignored: 512-byte sectors.
    let mut data = ata::identify_data("d", "X", 1000, 4096);
    data[106 * 2 + 1] = 0x10;
    assert_eq!(ata::parse_identify(&data).unwrap().logical_sector_size, 512);
}

#[test]
fn reads_and_writes_are_split_into_commands_the_bounce_buffer_holds() {
    let hba = ModelHba::new(vec![PortModel::disk(4096)]);
    let mut d = disk(&hba, 0);
    let data: Vec<u8> = (0..1200 * 512).map(|i| (i * 7 % 251) as u8).collect();
    d.write(100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    d.read(100, &mut back).unwrap();
    assert!(back == data);
    assert!(hba.port(0, |m| m.disk[100 * 512..1300 * 512] == data[..]));
    d.flush().unwrap();
    let commands = hba.port(0, |m| m.commands.clone());
    let per = (port::BOUNCE_BYTES / 512) as u16;
    let rw = |opcode| {
        commands
            .iter()
            .filter(|c| c.opcode == opcode)
            .map(|c| (c.lba, c.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rw(ata::WRITE_DMA_EXT),
        vec![(100, per), (100 + u64::from(per), per), (1124, 176)]
    );
    assert_eq!(rw(ata::READ_DMA_EXT).len(), 3);
    assert_eq!(hba.port(0, |m| m.flushes), 1);
    // Out of range and bad lengths never reach the device.
    let before = hba.port(0, |m| m.commands.len());
    assert!(matches!(
        d.read(4095, &mut [0u8; 1024]),
        Err(DiskError::OutOfRange { .. })
    ));
    assert!(matches!(
        d.write(0, &[0u8; 100]),
        Err(DiskError::BadLength { .. })
    ));
    assert_eq!(hba.port(0, |m| m.commands.len()), before);
}

#[test]
fn a_task_file_error_is_decoded_and_the_port_recovered() {
    let hba = ModelHba::new(vec![PortModel::disk(256)]);
    let mut d = disk(&hba, 0);
    hba.port(0, |m| m.fail_next = Some((0x51, 0x40)));
    let err = d.read(8, &mut [0u8; 512]).unwrap_err();
    let DiskError::Device { detail, lba, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*lba, 8);
    assert_eq!(
        detail,
        "port 0: READ DMA EXT failed: status 0x51 (DRDY|ERR), error 0x40 (UNC)"
    );
    let log = hba.log();
    let n = log.len();
    // Recovery: ST off, SERR and IS cleared, ST on again.
    let tail: Vec<_> = log[n - 6..].to_vec();
    assert!(
        tail.iter()
            .any(|&(o, v)| o == 0x100 + p::SERR && v == u32::MAX)
    );
    assert!(
        tail.iter()
            .any(|&(o, v)| o == 0x100 + p::CMD && v & p::CMD_ST == 0)
    );
    assert_eq!(
        tail.last().map(|&(o, v)| (o, v & p::CMD_ST)),
        Some((0x100 + p::CMD, p::CMD_ST))
    );
    assert!(d.failure().is_none());
    hba.port(0, |m| m.disk[8 * 512] = 0xAB);
    let mut buf = [0u8; 512];
    d.read(8, &mut buf).unwrap();
    assert_eq!(buf[0], 0xAB, "the port works after recovery");
    // A sector beyond what the device has: IDNF by name.
    hba.port(0, |m| m.disk.truncate(16 * 512));
    let err = d.read(20, &mut buf).unwrap_err().to_string();
    assert!(err.contains("error 0x10 (IDNF)"), "{err}");
}

#[test]
fn a_device_that_never_clears_bsy_fails_bring_up_without_hanging() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    hba.port(0, |m| m.stuck_busy = true);
    match bring_up(&hba, 0) {
        PortProbe::Failed(e) => {
            assert_eq!(
                e.to_string(),
                "device not ready after 10000 ms (status 0x80 (BSY), error 0x00 (-))"
            );
        }
        _ => panic!("a busy device came up"),
    }
    assert!(hba.now_ms() < port::DEVICE_READY_MS + 2 * port::ENGINE_STOP_MS);
    assert_eq!(
        hba.port(0, |m| m.regs[(p::CMD / 4) as usize]) & (p::CMD_ST | p::CMD_FRE),
        0
    );
}

#[test]
fn a_command_that_never_completes_times_out_and_a_comreset_recovers() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    // Without command list override, only a COMRESET clears a hung device.
    hba.0.borrow_mut().cap &= !ghc::CAP_SCLO;
    let mut d = disk(&hba, 0);
    hba.port(0, |m| m.hang_next = true);
    let err = d.write(0, &[1u8; 512]).unwrap_err().to_string();
    assert_eq!(
        err,
        "disk write at sector 0 failed: port 0: WRITE DMA EXT did not complete within 5000 ms \
         (status 0x80 (BSY), error 0x00 (-))"
    );
    assert!(
        hba.log()
            .iter()
            .any(|&(o, v)| o == 0x100 + p::SCTL && v & 0xF == 1)
    );
    d.write(0, &[2u8; 512]).unwrap();
    assert_eq!(hba.port(0, |m| m.disk[0]), 2);
}

#[test]
fn a_port_that_cannot_be_recovered_is_taken_out_of_service() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    let mut d = disk(&hba, 0);
    hba.port(0, |m| {
        m.hang_next = true;
        m.stuck_busy = true;
    });
    let first = d.read(0, &mut [0u8; 512]).unwrap_err().to_string();
    assert!(first.contains("did not complete"), "{first}");
    assert!(d.failure().unwrap().starts_with("error recovery failed: "));
    let start = hba.now_ms();
    let commands = hba.port(0, |m| m.commands.len());
    let second = d.read(0, &mut [0u8; 512]).unwrap_err().to_string();
    assert!(second.contains("port out of service"), "{second}");
    assert_eq!(hba.now_ms(), start, "no waiting once failed");
    assert_eq!(hba.port(0, |m| m.commands.len()), commands);
}

#[test]
fn out_of_memory_is_a_probe_failure() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    hba.0.borrow_mut().no_memory = true;
    assert!(matches!(
        bring_up(&hba, 0),
        PortProbe::Failed(AhciError::OutOfMemory)
    ));
}

#[test]
fn the_bios_hands_the_controller_over_or_is_reported() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    {
        let mut m = hba.0.borrow_mut();
        m.cap2 = ghc::CAP2_BOH;
        m.bohc = ghc::BOHC_BOS;
    }
    let mut h = hba.clone();
    // The model's BIOS never lets go.
    assert_eq!(init_controller(&mut h), Err(AhciError::BiosHandoff));
    assert!(
        hba.log()
            .contains(&(ghc::BOHC, ghc::BOHC_BOS | ghc::BOHC_OOS))
    );
}

#[test]
fn prdt_entries_are_at_most_4_mib_with_even_counts() {
    const MIB: u64 = 1024 * 1024;
    assert_eq!(
        regs::build_prdt(0x20_0000, 9 * MIB, 8).unwrap(),
        vec![
            (0x20_0000, 4 * MIB),
            (0x20_0000 + 4 * MIB, 4 * MIB),
            (0x20_0000 + 8 * MIB, MIB)
        ]
    );
    assert_eq!(
        regs::build_prdt(0x1000, 512, 1).unwrap(),
        vec![(0x1000, 512)]
    );
    assert_eq!(
        regs::build_prdt(0x1001, 512, 1),
        Err(regs::PrdtError::Misaligned)
    );
    assert_eq!(
        regs::build_prdt(0x1000, 0, 1),
        Err(regs::PrdtError::Misaligned)
    );
    assert_eq!(
        regs::build_prdt(0x1000, 9 * MIB, 2),
        Err(regs::PrdtError::TooLong)
    );
    let e = regs::prdt_entry(0x1_2345_6000, 4 * MIB);
    assert_eq!(u32::from_le_bytes(e[0..4].try_into().unwrap()), 0x2345_6000);
    assert_eq!(u32::from_le_bytes(e[4..8].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(e[12..16].try_into().unwrap()), 0x3F_FFFF);
    let h = regs::command_header(true, 3, 0x8000);
    assert_eq!(
        u32::from_le_bytes(h[0..4].try_into().unwrap()),
        5 | (1 << 6) | (3 << 16)
    );
    assert_eq!(u32::from_le_bytes(h[8..12].try_into().unwrap()), 0x8000);
}

#[test]
fn h2d_fis_carries_48_bit_lba_and_count() {
    let cmd = AtaCommand {
        opcode: ata::READ_DMA_EXT,
        lba: 0x0000_A1B2_C3D4_E5F6,
        count: 0x1234,
    };
    let fis = regs::h2d_fis(&cmd);
    assert_eq!(&fis[..4], &[0x27, 0x80, 0x25, 0]);
    assert_eq!(
        &fis[4..14],
        &[0xF6, 0xE5, 0xD4, 0x40, 0xC3, 0xB2, 0xA1, 0, 0x34, 0x12]
    );
    assert_eq!(regs::parse_h2d_fis(&fis), cmd);
}

#[test]
fn task_file_names_its_bits() {
    assert_eq!(
        TaskFile::from_tfd(0x0451).to_string(),
        "status 0x51 (DRDY|ERR), error 0x04 (ABRT)"
    );
    assert_eq!(
        TaskFile::from_tfd(0x50).to_string(),
        "status 0x50 (DRDY), error 0x00 (-)"
    );
}

#[test]
fn a_dropped_port_is_stopped_and_one_that_will_not_stop_keeps_its_memory() {
    let hba = ModelHba::new(vec![PortModel::disk(64), PortModel::disk(64)]);
    let first = disk(&hba, 0);
    let second = disk(&hba, 1);
    drop(first);
    let cmd = hba.port(0, |m| m.regs[(p::CMD / 4) as usize]);
    assert_eq!(cmd & (p::CMD_ST | p::CMD_CR | p::CMD_FRE | p::CMD_FR), 0);
    assert_eq!(hba.0.borrow().leaked, 0);
    hba.port(1, |m| m.engine_stuck = true);
    drop(second);
    assert_eq!(
        hba.0.borrow().leaked,
        regs::COMMAND_LIST_SIZE.div_ceil(4096) * 4096
            + regs::RECEIVED_FIS_SIZE.div_ceil(4096) * 4096
            + port::COMMAND_TABLE_BYTES
            + port::BOUNCE_BYTES,
        "the HBA may still write there"
    );
}

#[test]
fn a_device_whose_link_never_comes_up_is_reported() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    hba.port(0, |m| m.regs[(p::SSTS / 4) as usize] = 0x101);
    match bring_up(&hba, 0) {
        PortProbe::Failed(e) => assert_eq!(
            e.to_string(),
            "device detected but the SATA link is not up after 1000 ms (PxSSTS.DET=1)"
        ),
        _ => panic!("a port without a link came up"),
    }
}

#[test]
fn with_staggered_spin_up_the_driver_spins_the_device_up_and_waits_for_its_link() {
    let hba = ModelHba::new(vec![PortModel::disk(64)]);
    hba.0.borrow_mut().cap |= ghc::CAP_SSS;
    // The link comes up 300 ms after SUD: longer than an empty port is watched.
    hba.port(0, |m| m.link_up_after_spin_up = Some(300));
    let d = disk(&hba, 0);
    assert_eq!(d.sector_count(), 64);
    let sud = hba.log().iter().any(|&(o, v)| {
        o == 0x100 + p::CMD && v & (p::CMD_SUD | p::CMD_POD) == p::CMD_SUD | p::CMD_POD
    });
    assert!(sud, "PxCMD.SUD and POD set");
    assert!(hba.now_ms() >= 300);
}
