//! virtio-blk requests end to end through the transport (see `pci::tests::Rig`).

use super::*;
use crate::virtio::pci::tests::MemDisk;
use crate::virtio::pci::tests::{DATA, HEADER, LINUX_FEATURES, QUEUE_VECTOR, Rig, STATUS};
use crate::virtio::pci::{STATUS_NEEDS_RESET, VirtioDevice};
use crate::virtio::queue::tests::{Driver, memory};

fn sector_bytes(r: &Rig, sector: u64, count: u64) -> Vec<u8> {
    let bytes = r.disk.bytes.lock().unwrap();
    bytes[(sector * 512) as usize..((sector + count) * 512) as usize].to_vec()
}

fn guest_bytes(r: &Rig, gpa: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    r.mem.read(gpa, &mut buf).unwrap();
    buf
}

#[test]
fn config_space_reports_capacity_seg_max_and_block_size() {
    let mut r = Rig::new(false);
    assert_eq!(r.read(0x4000, 8), 64, "capacity");
    assert_eq!(r.read(0x4000 + 12, 4), u64::from(SEG_MAX));
    assert_eq!(r.read(0x4000 + 20, 4), 512);
    assert_eq!(r.read(0x4000 + 0x100, 4), 0, "past the end");
    let features = r.device_features();
    assert_eq!(
        features & (F_FLUSH | F_BLK_SIZE | F_SEG_MAX),
        F_FLUSH | F_BLK_SIZE | F_SEG_MAX
    );
    assert_eq!(features & F_RO, 0);
    let mut ro = Rig::new(true);
    assert_eq!(ro.device_features() & F_RO, F_RO);
}

#[test]
fn reads_writes_flushes_and_get_id_round_trip() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);

    // Read 3 sectors from sector 5.
    let head = r.request(T_IN, 5, 3 * 512, true);
    r.kick();
    assert_eq!(r.status_byte(), S_OK);
    assert_eq!(guest_bytes(&r, DATA, 3 * 512), sector_bytes(&r, 5, 3));
    assert_eq!(r.drv.used_elem(&r.mem, 0), (u32::from(head), 3 * 512 + 1));
    assert_eq!(r.take_interrupt(), Some(QUEUE_VECTOR));

    // Write 2 sectors at sector 60.
    let pattern: Vec<u8> = (0..1024).map(|i| (i * 3) as u8).collect();
    r.mem.write(DATA, &pattern).unwrap();
    let head = r.request(T_OUT, 60, 1024, false);
    r.kick();
    assert_eq!(r.status_byte(), S_OK);
    assert_eq!(sector_bytes(&r, 60, 2), pattern);
    assert_eq!(r.drv.used_elem(&r.mem, 1), (u32::from(head), 1));

    // Flush.
    r.request(T_FLUSH, 0, 0, false);
    r.kick();
    assert_eq!(r.status_byte(), S_OK);
    assert_eq!(*r.disk.flushes.lock().unwrap(), 1);

    // GET_ID: 20 bytes, zero-padded.
    r.request(T_GET_ID, 0, 20, true);
    r.kick();
    assert_eq!(r.status_byte(), S_OK);
    assert_eq!(&guest_bytes(&r, DATA, 20), b"keel-serial-0001\0\0\0\0");

    // An unknown type.
    r.request(11, 0, 0, false);
    r.kick();
    assert_eq!(r.status_byte(), S_UNSUPP);

    let stats = r.device().device().stats();
    assert_eq!(
        stats,
        BlockStats {
            reads: 1,
            writes: 1,
            flushes: 1,
            bytes_read: 1536,
            bytes_written: 1024,
            errors: 1,
        }
    );
}

#[test]
fn reads_scatter_over_uneven_buffers() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    // 40 sectors into buffers that split sectors unevenly.
    let bufs = [
        (HEADER, 16, false),
        (DATA, 1000, true),
        (DATA + 0x1_0000, 24, true),
        (DATA + 0x2_0000, 40 * 512 - 1024, true),
        (STATUS, 1, true),
    ];
    r.mem.write_u32(HEADER, T_IN).unwrap();
    r.mem.write_u64(HEADER + 8, 10).unwrap();
    r.drv.add_chain(&r.mem, &bufs);
    r.kick();
    assert_eq!(r.status_byte(), S_OK);
    let mut got = guest_bytes(&r, DATA, 1000);
    got.extend(guest_bytes(&r, DATA + 0x1_0000, 24));
    got.extend(guest_bytes(&r, DATA + 0x2_0000, 40 * 512 - 1024));
    assert_eq!(got, sector_bytes(&r, 10, 40));
}

#[test]
fn split_headers_and_a_shared_status_buffer_past_the_bounce_buffer() {
    // The model alone over a 700-sector disk: a 300 KiB read (more than the 256 KiB bounce
    // buffer), the header split over two buffers, the status byte the last byte of the
    // data buffer.
    let disk = MemDisk::new(700);
    let mut dev = VirtioBlock::new(Box::new(disk.clone()), false, "");
    assert_eq!(dev.capacity(), 700);
    let mem = memory();
    let mut drv = Driver::new(16, 0x1000);
    let mut q = drv.queue(256);
    mem.write_u32(HEADER, T_IN).unwrap();
    mem.write_u64(HEADER + 8, 1).unwrap();
    let head = drv.add_chain(
        &mem,
        &[
            (HEADER, 6, false),
            (HEADER + 6, 10, false),
            (DATA, 600 * 512 + 1, true),
        ],
    );
    assert!(dev.process_queue(0, &mut q, &mem).unwrap());
    assert_eq!(mem.read_u8(DATA + 600 * 512).unwrap(), S_OK);
    let mut got = vec![0; 600 * 512];
    mem.read(DATA, &mut got).unwrap();
    assert_eq!(got, disk.bytes.lock().unwrap()[512..601 * 512]);
    assert_eq!(drv.used_elem(&mem, 0), (u32::from(head), 600 * 512 + 1));
    assert!(!dev.process_queue(0, &mut q, &mem).unwrap(), "nothing more");
}

#[test]
fn bad_requests_get_ioerr_and_touch_nothing() {
    let mut r = Rig::new(true);
    r.bring_up(LINUX_FEATURES | F_RO);
    let before = r.disk.bytes.lock().unwrap().clone();
    let expect_ioerr = |r: &mut Rig, what: &str| {
        r.kick();
        assert_eq!(r.status_byte(), S_IOERR, "{what}");
        assert_eq!(*r.disk.bytes.lock().unwrap(), before, "{what}");
        assert_eq!(r.status() & STATUS_NEEDS_RESET, 0, "{what}");
    };
    r.request(T_OUT, 0, 512, false);
    expect_ioerr(&mut r, "write to a read-only disk");
    assert_eq!(
        r.device().device().last_error(),
        Some("a write to a read-only disk")
    );
    r.request(T_IN, 63, 1024, true);
    expect_ioerr(&mut r, "read past the end");
    r.request(T_IN, u64::MAX, 512, true);
    expect_ioerr(&mut r, "sector overflow");
    r.request(T_IN, 0, 100, true);
    expect_ioerr(&mut r, "not whole sectors");
    r.drv
        .add_chain(&r.mem, &[(HEADER, 8, false), (STATUS, 1, true)]);
    expect_ioerr(&mut r, "short header");
    r.mem.write_u32(HEADER, T_IN).unwrap();
    r.drv.add_chain(
        &r.mem,
        &[
            (HEADER, 16, false),
            (DATA, 512, true),
            (DATA, 512, false),
            (STATUS, 1, true),
        ],
    );
    expect_ioerr(&mut r, "readable after writable");
    *r.disk.fail.lock().unwrap() = true;
    r.request(T_IN, 0, 512, true);
    expect_ioerr(&mut r, "backend error");
    assert_eq!(
        r.device().device().last_error(),
        Some("read at sector 0 failed: the test disk fails")
    );
    assert_eq!(r.device().device().stats().errors, 7);
    assert_eq!(r.device().error(), None, "the device stays usable");
}

#[test]
fn a_request_without_a_status_byte_needs_reset() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.drv
        .add_chain(&r.mem, &[(HEADER, 16, false), (DATA, 512, false)]);
    r.kick();
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(
        r.device().error(),
        Some("virtio-blk: queue 0: the request at descriptor 0 has no device-writable status byte")
    );
}

#[test]
fn write_zeroes_zeros_one_range_and_refuses_the_rest() {
    let mut r = Rig::new(false);
    assert_eq!(r.device_features() & F_WRITE_ZEROES, F_WRITE_ZEROES);
    assert_eq!(r.read(0x4000 + 48, 4), u64::from(MAX_WRITE_ZEROES_SECTORS));
    assert_eq!(r.read(0x4000 + 52, 4), 1);
    r.bring_up(LINUX_FEATURES | F_WRITE_ZEROES);
    let range = |r: &mut Rig, sector: u64, count: u32, flags: u32| {
        r.mem.write_u64(DATA, sector).unwrap();
        r.mem.write_u32(DATA + 8, count).unwrap();
        r.mem.write_u32(DATA + 12, flags).unwrap();
        r.request(T_WRITE_ZEROES, 0, 16, false);
        r.kick();
        r.status_byte()
    };
    let untouched = sector_bytes(&r, 12, 1);
    assert_eq!(range(&mut r, 9, 3, 1), S_OK, "unmap allowed");
    assert_eq!(sector_bytes(&r, 9, 3), vec![0; 3 * 512]);
    assert_eq!(sector_bytes(&r, 12, 1), untouched);
    assert_eq!(range(&mut r, 0, 1, 2), S_UNSUPP, "unknown flag");
    assert_eq!(range(&mut r, 63, 2, 0), S_IOERR, "past the end");
    assert_eq!(sector_bytes(&r, 63, 1), untouched_last(&r));
    let mut ro = Rig::new(true);
    assert_eq!(ro.device_features() & F_WRITE_ZEROES, 0);
    ro.bring_up(LINUX_FEATURES);
    assert_eq!(range(&mut ro, 0, 1, 0), S_IOERR, "read-only");
    assert_ne!(sector_bytes(&ro, 0, 1), vec![0; 512]);
}

/// The last sector as `MemDisk::new` makes it.
fn untouched_last(_r: &Rig) -> Vec<u8> {
    (63 * 512..64 * 512)
        .map(|i: u64| (i / 512 + i % 7) as u8)
        .collect()
}
