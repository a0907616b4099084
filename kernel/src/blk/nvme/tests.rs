//! The driver against a model of an NVMe controller: registers, admin and I/O queues in the
//! driver's DMA memory, PRP walking, a namespace in a `Vec`, and injectable failures.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;

use super::NvmeHardware;
use super::command::{
    CQE_BYTES, Command, Completion, SQE_BYTES, Status, StatusType, admin, cns, nvm,
};
use super::controller::{Controller, NvmeError};
use super::dma::DmaMem;
use super::identify::tests::{controller_page, namespace_page};
use super::prp::ENTRIES_PER_LIST;
use super::regs::{self, PAGE_SIZE, csts};
use crate::blk::disk::{Disk, DiskError, SECTOR};

/// A submission or completion queue the model knows.
#[derive(Clone, Copy, Debug)]
struct Ring {
    base: u64,
    entries: u16,
    /// SQ: next entry the model consumes. CQ: next slot the model fills.
    index: u16,
    /// CQ: the phase tag the model writes.
    phase: bool,
    /// SQ: its completion queue.
    cqid: u16,
}

/// What the model does wrong, on purpose.
#[derive(Clone, Debug, Default)]
struct Faults {
    /// CSTS.RDY never becomes 1 after CC.EN = 1.
    never_ready: bool,
    /// CSTS.RDY stays 1 after CC.EN = 0.
    stuck_enabled: bool,
    /// CSTS.CFS is set once enabled.
    fatal_on_enable: bool,
    /// Commands (admin?, opcode) that complete with a status.
    fail: Vec<(bool, u8, Status)>,
    /// Reads of this LBA complete with Unrecovered Read Error.
    bad_lba: Option<u64>,
    /// I/O commands with this opcode are swallowed: no completion.
    swallow: Option<u8>,
}

/// The device model.
struct Model {
    cap: u64,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    /// Polls of CSTS before RDY follows EN.
    ready_delay: u32,
    polls: u32,
    sqs: BTreeMap<u16, Ring>,
    cqs: BTreeMap<u16, Ring>,
    mdts: u8,
    lbads: u8,
    metadata: u16,
    disk: Vec<u8>,
    faults: Faults,
    /// Register writes and admin commands in order: bring-up order checks.
    events: Vec<String>,
    /// Sectors of each Read/Write the model served.
    transfers: Vec<u32>,
    flushes: usize,
    now_ms: u64,
    /// Memory handed out: (device address, pointer, length).
    memory: Vec<(u64, NonNull<u8>, usize)>,
}

impl Model {
    fn new(sectors: usize) -> Model {
        Model {
            // MQES 63 (64 entries), TO 2 (1000 ms), CSS NVM, MPSMIN 0.
            cap: 63 | (2 << 24) | (1u64 << 37),
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            ready_delay: 3,
            polls: 0,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            mdts: 5,
            lbads: 9,
            metadata: 0,
            disk: vec![0; sectors * SECTOR],
            faults: Faults::default(),
            events: Vec::new(),
            transfers: Vec::new(),
            flushes: 0,
            now_ms: 0,
            memory: Vec::new(),
        }
    }

    fn locate(&self, phys: u64, len: usize) -> *mut u8 {
        for &(base, ptr, size) in &self.memory {
            if phys >= base && phys + len as u64 <= base + size as u64 {
                return ptr.as_ptr().wrapping_add((phys - base) as usize);
            }
        }
        panic!("device access at {phys:#x}+{len} outside the driver's DMA memory");
    }

    fn dma_read(&self, phys: u64, out: &mut [u8]) {
        let src = self.locate(phys, out.len());
        // SAFETY: `locate` found the range inside a live allocation handed to the driver
        // (`DmaMem` keeps it alive while the controller that owns this model exists).
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
    }

    fn dma_write(&self, phys: u64, data: &[u8]) {
        let dst = self.locate(phys, data.len());
        // SAFETY: as in `dma_read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    /// The data pages of a command, walking PRP1, PRP2 and the list as a controller does.
    fn data_pages(&self, c: &Command, len: usize) -> Result<Vec<(u64, usize)>, Status> {
        let invalid = Status {
            kind: StatusType::Generic,
            code: 0x13,
            do_not_retry: true,
        };
        let page = PAGE_SIZE as u64;
        if c.prp1() % 4 != 0 {
            return Err(invalid);
        }
        let first = len.min((page - c.prp1() % page) as usize);
        let mut out = vec![(c.prp1(), first)];
        let mut left = len - first;
        if left == 0 {
            return Ok(out);
        }
        let pages = left.div_ceil(PAGE_SIZE);
        let addrs: Vec<u64> = if pages == 1 {
            vec![c.prp2()]
        } else {
            assert!(pages <= ENTRIES_PER_LIST, "model walks one list page");
            let mut raw = vec![0u8; pages * 8];
            self.dma_read(c.prp2(), &mut raw);
            raw.chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        for addr in addrs {
            if addr % page != 0 {
                return Err(invalid);
            }
            let n = left.min(PAGE_SIZE);
            out.push((addr, n));
            left -= n;
        }
        Ok(out)
    }

    fn admin_command(&mut self, c: &Command) -> (Status, u32) {
        let ok = (Status::SUCCESS, 0);
        match c.opcode() {
            admin::IDENTIFY => {
                let page = match c.dwords[10] {
                    cns::CONTROLLER => {
                        controller_page("QEMU NVMe Ctrl", "deadbeef", self.mdts, 4, true)
                    }
                    cns::ACTIVE_NAMESPACES => {
                        let mut p = [0u8; 4096];
                        p[0..4].copy_from_slice(&2u32.to_le_bytes());
                        p
                    }
                    cns::NAMESPACE if c.nsid() == 2 => {
                        namespace_page((self.disk.len() / SECTOR) as u64, self.lbads, self.metadata)
                    }
                    _ => {
                        return (
                            Status {
                                kind: StatusType::Generic,
                                code: 0x0b,
                                do_not_retry: true,
                            },
                            0,
                        );
                    }
                };
                self.dma_write(c.prp1(), &page);
                ok
            }
            admin::SET_FEATURES => ok,
            admin::CREATE_IO_CQ => {
                let qid = c.dwords[10] as u16;
                let entries = (c.dwords[10] >> 16) as u16 + 1;
                self.cqs.insert(
                    qid,
                    Ring {
                        base: c.prp1(),
                        entries,
                        index: 0,
                        phase: true,
                        cqid: 0,
                    },
                );
                ok
            }
            admin::CREATE_IO_SQ => {
                let qid = c.dwords[10] as u16;
                let entries = (c.dwords[10] >> 16) as u16 + 1;
                let cqid = (c.dwords[11] >> 16) as u16;
                if !self.cqs.contains_key(&cqid) {
                    return (
                        Status {
                            kind: StatusType::CommandSpecific,
                            code: 0,
                            do_not_retry: true,
                        },
                        0,
                    );
                }
                self.sqs.insert(
                    qid,
                    Ring {
                        base: c.prp1(),
                        entries,
                        index: 0,
                        phase: false,
                        cqid,
                    },
                );
                ok
            }
            _ => (
                Status {
                    kind: StatusType::Generic,
                    code: 1,
                    do_not_retry: true,
                },
                0,
            ),
        }
    }

    fn io_command(&mut self, c: &Command) -> Option<Status> {
        if self.faults.swallow == Some(c.opcode()) {
            return None;
        }
        let ok = Status::SUCCESS;
        match c.opcode() {
            nvm::FLUSH => {
                self.flushes += 1;
                Some(ok)
            }
            nvm::READ | nvm::WRITE => {
                let blocks = c.blocks();
                let max = (PAGE_SIZE << self.mdts) / SECTOR;
                if self.mdts != 0 && blocks as usize > max {
                    return Some(Status {
                        kind: StatusType::Generic,
                        code: 0x02,
                        do_not_retry: true,
                    });
                }
                let start = c.lba() as usize * SECTOR;
                let len = blocks as usize * SECTOR;
                if start + len > self.disk.len() {
                    return Some(Status {
                        kind: StatusType::Generic,
                        code: 0x80,
                        do_not_retry: true,
                    });
                }
                if c.opcode() == nvm::READ
                    && self
                        .faults
                        .bad_lba
                        .is_some_and(|bad| (c.lba()..c.lba() + u64::from(blocks)).contains(&bad))
                {
                    return Some(Status {
                        kind: StatusType::Media,
                        code: 0x81,
                        do_not_retry: true,
                    });
                }
                let pages = match self.data_pages(c, len) {
                    Ok(p) => p,
                    Err(status) => return Some(status),
                };
                self.transfers.push(blocks);
                let mut at = start;
                for (addr, n) in pages {
                    if c.opcode() == nvm::READ {
                        let data = self.disk[at..at + n].to_vec();
                        self.dma_write(addr, &data);
                    } else {
                        let mut data = vec![0u8; n];
                        self.dma_read(addr, &mut data);
                        self.disk[at..at + n].copy_from_slice(&data);
                    }
                    at += n;
                }
                Some(ok)
            }
            _ => Some(Status {
                kind: StatusType::Generic,
                code: 1,
                do_not_retry: true,
            }),
        }
    }

    /// Consumes submission queue `qid` up to `tail`, posting completions.
    fn ring_sq(&mut self, qid: u16, tail: u16) {
        loop {
            let Some(mut sq) = self.sqs.get(&qid).copied() else {
                return;
            };
            if sq.index == tail % sq.entries {
                return;
            }
            let mut raw = [0u8; SQE_BYTES];
            self.dma_read(sq.base + u64::from(sq.index) * SQE_BYTES as u64, &mut raw);
            let c = Command::from_bytes(&raw);
            sq.index = (sq.index + 1) % sq.entries;
            self.sqs.insert(qid, sq);
            let outcome = if qid == 0 {
                self.events.push(format!(
                    "admin {:#04x} cns {}",
                    c.opcode(),
                    c.dwords[10] & 0xff
                ));
                match self.faults.fail.iter().find(|f| f.0 && f.1 == c.opcode()) {
                    Some(f) => Some((f.2, 0)),
                    None => Some(self.admin_command(&c)),
                }
            } else {
                match self.faults.fail.iter().find(|f| !f.0 && f.1 == c.opcode()) {
                    Some(f) => Some((f.2, 0)),
                    None => self.io_command(&c).map(|s| (s, 0)),
                }
            };
            if let Some((status, result)) = outcome {
                let mut cq = self.cqs[&sq.cqid];
                let entry = Completion {
                    result,
                    sq_head: sq.index,
                    sq_id: qid,
                    command_id: c.command_id(),
                    phase: cq.phase,
                    status,
                };
                self.dma_write(
                    cq.base + u64::from(cq.index) * CQE_BYTES as u64,
                    &entry.to_bytes(),
                );
                cq.index += 1;
                if cq.index == cq.entries {
                    cq.index = 0;
                    cq.phase = !cq.phase;
                }
                self.cqs.insert(sq.cqid, cq);
            }
        }
    }
}

impl NvmeHardware for Model {
    type Deadline = u64;

    fn read32(&mut self, offset: usize) -> u32 {
        match offset {
            regs::CAP => self.cap as u32,
            0x04 => (self.cap >> 32) as u32,
            regs::CC => self.cc,
            regs::CSTS => {
                self.polls += 1;
                let enabled = self.cc & regs::cc::EN != 0;
                if enabled && self.polls >= self.ready_delay && !self.faults.never_ready {
                    self.csts |= csts::RDY;
                }
                if enabled && self.faults.fatal_on_enable {
                    self.csts |= csts::CFS;
                }
                if !enabled && !self.faults.stuck_enabled {
                    self.csts &= !csts::RDY;
                }
                self.csts
            }
            _ => 0,
        }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        match offset {
            regs::CC => {
                self.events.push(format!("CC={value:#x}"));
                let was = self.cc & regs::cc::EN != 0;
                self.cc = value;
                self.polls = 0;
                if value & regs::cc::EN != 0 && !was {
                    // Enabling takes the admin queues from AQA/ASQ/ACQ.
                    let sq_entries = (self.aqa & 0xfff) as u16 + 1;
                    let cq_entries = ((self.aqa >> 16) & 0xfff) as u16 + 1;
                    self.sqs.clear();
                    self.cqs.clear();
                    self.sqs.insert(
                        0,
                        Ring {
                            base: self.asq,
                            entries: sq_entries,
                            index: 0,
                            phase: false,
                            cqid: 0,
                        },
                    );
                    self.cqs.insert(
                        0,
                        Ring {
                            base: self.acq,
                            entries: cq_entries,
                            index: 0,
                            phase: true,
                            cqid: 0,
                        },
                    );
                }
            }
            regs::AQA => {
                self.events.push("AQA".into());
                self.aqa = value;
            }
            regs::ASQ => self.asq = (self.asq & !0xffff_ffff) | u64::from(value),
            0x2c => {
                self.events.push("ASQ".into());
                self.asq = (self.asq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            regs::ACQ => self.acq = (self.acq & !0xffff_ffff) | u64::from(value),
            0x34 => {
                self.events.push("ACQ".into());
                self.acq = (self.acq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            regs::INTMS => {}
            o if o >= regs::DOORBELL_BASE => {
                let index = (o - regs::DOORBELL_BASE) / 4;
                if index % 2 == 0 {
                    self.ring_sq((index / 2) as u16, value as u16);
                }
            }
            _ => {}
        }
    }

    fn deadline_after_ms(&mut self, ms: u64) -> u64 {
        self.now_ms + ms
    }

    fn expired(&mut self, deadline: &u64) -> bool {
        // Each poll is a millisecond of model time: a wait that never ends costs its timeout
        // in polls, not in wall-clock time.
        self.now_ms += 1;
        self.now_ms > *deadline
    }

    fn alloc_dma(&mut self, bytes: usize) -> Option<DmaMem> {
        let words = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE / 8 + PAGE_SIZE / 8;
        let mut buffer: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        // Page-align inside the allocation, as frames are.
        let raw = buffer.as_mut_ptr() as usize;
        let aligned = raw.next_multiple_of(PAGE_SIZE);
        let ptr = NonNull::new(aligned as *mut u8)?;
        let len = bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        self.memory.push((aligned as u64, ptr, len));
        // SAFETY: `aligned..aligned + len` lies inside `buffer` (one spare page covers the
        // alignment), which moves into the `DmaMem` and so lives as long as it; host memory
        // is its own device address here.
        Some(unsafe { DmaMem::new(ptr, aligned as u64, len, Box::new(buffer)) })
    }
}

fn up(model: Model) -> Controller<Model> {
    match Controller::bring_up(model) {
        Ok(c) => c,
        Err(e) => panic!("bring-up failed: {e}"),
    }
}

fn err(model: Model) -> NvmeError {
    match Controller::bring_up(model) {
        Ok(_) => panic!("bring-up succeeded"),
        Err(e) => e,
    }
}

#[test]
fn bring_up_in_specification_order() {
    let mut model = Model::new(2048);
    // Left enabled by the firmware: the driver must disable it first.
    model.cc = regs::CC_ENABLE;
    model.csts = csts::RDY;
    let mut c = up(model);
    assert_eq!(c.nsid(), 2, "first active namespace");
    assert_eq!(c.sector_count(), 2048);
    assert_eq!(c.info().model, "QEMU NVMe Ctrl");
    assert_eq!(c.info().serial, "deadbeef");
    assert_eq!(c.max_sectors(), 256, "MDTS 5 = 128 KiB");
    assert_eq!(c.io_queue().entries(), 64);
    let events = c.hardware().events.clone();
    assert_eq!(
        events,
        [
            "CC=0x0",
            "AQA",
            "ASQ",
            "ACQ",
            &format!("CC={:#x}", regs::CC_ENABLE),
            "admin 0x06 cns 1",
            "admin 0x06 cns 2",
            "admin 0x06 cns 0",
            "admin 0x09 cns 7",
            "admin 0x05 cns 1",
            "admin 0x01 cns 1",
        ]
    );
}

#[test]
fn never_ready_is_reported_not_a_hang() {
    let mut model = Model::new(64);
    model.faults.never_ready = true;
    let e = err(model);
    assert_eq!(e, NvmeError::NotReady(1000));
    assert_eq!(
        format!("{e}"),
        "controller not ready after 1000 ms (CSTS.RDY=0)"
    );
}

#[test]
fn controller_that_will_not_stop_is_reported() {
    let mut model = Model::new(64);
    model.cc = regs::CC_ENABLE;
    model.csts = csts::RDY;
    model.faults.stuck_enabled = true;
    assert_eq!(err(model), NvmeError::NotDisabled(1000));
}

#[test]
fn fatal_status_while_enabling() {
    let mut model = Model::new(64);
    model.faults.never_ready = true;
    model.faults.fatal_on_enable = true;
    let e = err(model);
    assert_eq!(e, NvmeError::Fatal("while enabling"));
    assert!(format!("{e}").contains("CSTS.CFS=1"));
}

#[test]
fn capabilities_keel_cannot_use() {
    let mut model = Model::new(64);
    model.cap &= !(1u64 << 37);
    assert_eq!(err(model), NvmeError::NoNvmCommandSet);
    let mut model = Model::new(64);
    model.cap |= 1u64 << 48; // MPSMIN 8 KiB
    assert_eq!(err(model), NvmeError::PageSize(8192));
}

#[test]
fn failed_admin_command_names_command_and_status() {
    let mut model = Model::new(64);
    let status = Status {
        kind: StatusType::CommandSpecific,
        code: 0x02,
        do_not_retry: true,
    };
    model.faults.fail.push((true, admin::CREATE_IO_CQ, status));
    let e = err(model);
    assert_eq!(
        format!("{e}"),
        "Create I/O Completion Queue failed: Invalid Queue Size (SCT 0x1, SC 0x02), do not retry"
    );
}

#[test]
fn namespace_with_4096_byte_sectors_is_refused() {
    let mut model = Model::new(64);
    model.lbads = 12;
    let e = err(model);
    assert_eq!(
        e,
        NvmeError::SectorSize {
            nsid: 2,
            bytes: 4096
        }
    );
    assert!(format!("{e}").contains("4096-byte sectors"));
    let mut model = Model::new(64);
    model.metadata = 8;
    assert_eq!(err(model), NvmeError::Metadata { nsid: 2, bytes: 8 });
}

#[test]
fn read_write_round_trip_and_flush() {
    let mut c = up(Model::new(4096));
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + i / 512) as u8).collect();
    c.write(100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(100, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        &c.hardware().disk[100 * SECTOR..100 * SECTOR + data.len()],
        &data[..]
    );
    c.flush().unwrap();
    assert_eq!(c.hardware().flushes, 1);
    // Bounds are checked before the device sees anything.
    let mut one = [0u8; SECTOR];
    assert!(matches!(
        c.read(4096, &mut one),
        Err(DiskError::OutOfRange { .. })
    ));
}

#[test]
fn transfers_split_by_mdts_and_bounce_buffer() {
    // MDTS 1: 8 KiB (16 sectors) per command.
    let mut model = Model::new(8192);
    model.mdts = 1;
    let mut c = up(model);
    assert_eq!(c.max_sectors(), 16);
    let data = vec![0x5a; 64 * 1024 + 1024];
    c.write(7, &data).unwrap();
    let sizes = core::mem::take(&mut c.hardware().transfers);
    assert_eq!(sizes, [16, 16, 16, 16, 16, 16, 16, 16, 2]);
    // No MDTS limit: the 256 KiB bounce buffer bounds each command.
    let mut model = Model::new(8192);
    model.mdts = 0;
    let mut c = up(model);
    let data: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    c.write(0, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        c.hardware().transfers,
        [512, 512, 512, 512, 512, 512, 512, 512]
    );
}

#[test]
fn phase_tag_wraps_over_many_commands() {
    let mut model = Model::new(256);
    model.cap = (model.cap & !0xffff) | 3; // four-entry queues
    let mut c = up(model);
    assert_eq!(c.io_queue().entries(), 4);
    let mut flips = 0;
    let mut phase = c.io_queue().phase();
    for round in 0..50u64 {
        let sector = vec![round as u8; SECTOR];
        c.write(round, &sector).unwrap();
        let mut back = [0u8; SECTOR];
        c.read(round, &mut back).unwrap();
        assert_eq!(back[..], sector[..], "round {round}");
        if c.io_queue().phase() != phase {
            flips += 1;
            phase = c.io_queue().phase();
        }
    }
    assert_eq!(
        flips, 25,
        "100 completions on a 4-entry queue wrap 25 times"
    );
}

#[test]
fn failed_read_names_the_media_error_and_the_disk_stays_usable() {
    let mut model = Model::new(256);
    model.faults.bad_lba = Some(10);
    let mut c = up(model);
    let mut buf = vec![0u8; 4 * SECTOR];
    let e = c.read(8, &mut buf).unwrap_err();
    assert_eq!(
        format!("{e}"),
        "disk read at sector 8 failed: nvme: Read failed: Unrecovered Read Error (SCT 0x2, SC 0x81), do not retry"
    );
    c.read(0, &mut buf).unwrap();
}

#[test]
fn lost_completion_times_out_and_the_disk_refuses_later_requests() {
    let mut model = Model::new(256);
    model.faults.swallow = Some(nvm::WRITE);
    let mut c = up(model);
    let e = c.write(3, &[1u8; SECTOR]).unwrap_err();
    assert_eq!(
        format!("{e}"),
        "disk write at sector 3 failed: nvme: Write timed out after 30000 ms (no completion)"
    );
    let mut buf = [0u8; SECTOR];
    let later = c.read(0, &mut buf).unwrap_err();
    assert!(
        format!("{later}").contains("controller unusable after an earlier error: Write timed out"),
        "{later}"
    );
    assert!(
        c.hardware().transfers.is_empty(),
        "no request reached the device after the timeout"
    );
}

#[test]
fn fatal_status_during_io_is_reported() {
    let mut c = up(Model::new(256));
    c.hardware().csts |= csts::CFS;
    let e = c.flush().unwrap_err();
    assert!(format!("{e}").contains("CSTS.CFS=1"), "{e}");
}
