//! What the fuzz targets share: heap standing in for host frames under a [`GuestMemory`],
//! the kernel's GPT and FAT readers compiled for the host, and a disk over a byte slice.
//!
//! The image builder's TOML reader comes in by path too (the image builder's dependencies,
//! an HTTP client among them, are not worth building for it).
//!
//! The kernel is a bin crate for bare metal, so its readers come in by path: `blk::disk`,
//! `blk::gpt` and `store::fat` use nothing of the kernel but each other (`crate::blk::disk`,
//! `super::disk`), and the module tree below gives them those paths. Their unit tests stay
//! in the kernel's host tests.

extern crate alloc;

use std::cell::Cell;

use keel_vmm::host::{FRAME_SIZE, HostMemory};
use keel_vmm::memory::GuestMemory;
use keel_vmm::vcpu::{Registers, Segment};

/// The kernel's block-device layer, as much of it as the readers need.
#[path = "../../kernel/src/blk"]
pub mod blk {
    /// The `Disk` trait, its errors and the little-endian helpers.
    #[allow(dead_code, unused_imports)]
    pub mod disk;
    /// The GPT reader.
    #[allow(dead_code, unused_imports)]
    pub mod gpt;
}

/// The kernel's store, as much of it as the FAT reader needs.
#[path = "../../kernel/src/store"]
pub mod store {
    /// The FAT reader the store opens files with.
    #[allow(dead_code, unused_imports)]
    pub mod fat;
}

/// The image builder's appliance TOML reader (`keel build --config`): TOML to the
/// configuration's JSON value, then `keel_config`'s validation. It uses nothing of the image
/// builder but itself.
#[allow(dead_code)]
#[path = "../../image-builder/src/appliance.rs"]
pub mod appliance;

/// A read-only disk over fuzz bytes: at least the bytes rounded up to whole sectors, and
/// zeros after them up to the size asked for (so a seed can be the start of a large volume).
/// Writes are refused (the readers never write).
pub struct SliceDisk<'a> {
    bytes: &'a [u8],
    sectors: u64,
}

impl<'a> SliceDisk<'a> {
    /// A disk of `sectors` sectors, or of `bytes.len()` rounded up if that is more.
    pub fn new(bytes: &'a [u8], sectors: u64) -> SliceDisk<'a> {
        let sectors = sectors.max(bytes.len().div_ceil(blk::disk::SECTOR) as u64);
        SliceDisk { bytes, sectors }
    }
}

impl blk::disk::Disk for SliceDisk<'_> {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), blk::disk::DiskError> {
        blk::disk::check_range(lba, buf.len(), self.sector_count())?;
        let start = usize::try_from(lba)
            .ok()
            .and_then(|lba| lba.checked_mul(blk::disk::SECTOR))
            .unwrap_or(usize::MAX);
        let available = self.bytes.len().saturating_sub(start).min(buf.len());
        if available > 0 {
            buf[..available].copy_from_slice(&self.bytes[start..start + available]);
        }
        buf[available..].fill(0);
        Ok(())
    }

    fn write(&mut self, _lba: u64, _buf: &[u8]) -> Result<(), blk::disk::DiskError> {
        panic!("the GPT and FAT readers never write");
    }

    fn flush(&mut self) -> Result<(), blk::disk::DiskError> {
        Ok(())
    }
}

/// Heap standing in for host frames: `bytes.len()` bytes at fake physical 0, handed out
/// once, front to back (guest RAM is its only user, and it never frees before the end).
struct HeapHost {
    bytes: Vec<Cell<u8>>,
    next: Cell<u64>,
}

impl HostMemory for HeapHost {
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
        let align = align.max(1) * FRAME_SIZE;
        let start = self.next.get().div_ceil(align) * align;
        let end = start.checked_add(count.checked_mul(FRAME_SIZE)?)?;
        if end > self.bytes.len() as u64 {
            return None;
        }
        self.next.set(end);
        Some(start)
    }
    fn free_frames(&self, _phys: u64, _count: u64) {}
    fn ptr(&self, phys: u64) -> *mut u8 {
        self.bytes[phys as usize].as_ptr()
    }
}

/// Guest RAM of `size` bytes (a multiple of 2 MiB) over leaked heap: build it once per
/// fuzzing thread and clear what an input uses.
pub fn guest_memory(size: u64) -> &'static GuestMemory {
    let host: &'static HeapHost = Box::leak(Box::new(HeapHost {
        bytes: (0..size).map(|_| Cell::new(0)).collect(),
        next: Cell::new(0),
    }));
    Box::leak(Box::new(
        GuestMemory::new(host, size).expect("guest RAM over heap"),
    ))
}

/// An `mmio` input laid out as a vCPU: byte 0 picks the mode (bit 0 CR0.PE, bit 1 CR0.PG,
/// bit 2 EFER.LMA, bit 3 CS.L, bit 4 CS.D, bit 5 CR4.PAE); then RIP, CR3, CS.base, the
/// device's value and RAX…R15 as little-endian u64s (missing bytes are 0); the rest is guest
/// RAM from address 0 (at most `ram_size` bytes). Returns the registers, the value and the
/// RAM bytes, or `None` for an empty input.
pub fn mmio_input(data: &[u8], ram_size: u64) -> Option<(Registers, u64, &[u8])> {
    let (&mode, mut input) = data.split_first()?;
    let mut take_u64 = || {
        let n = input.len().min(8);
        let mut bytes = [0u8; 8];
        bytes[..n].copy_from_slice(&input[..n]);
        input = &input[n..];
        u64::from_le_bytes(bytes)
    };
    let bit = |n: u8, value: u64| if mode & (1 << n) != 0 { value } else { 0 };
    // Addresses mostly inside RAM, so the walk and the fetch get somewhere.
    let rip = take_u64() % (ram_size + 0x1000);
    let cr3 = (take_u64() % ram_size) & !0xfff;
    let cs = Segment {
        base: take_u64() % ram_size,
        limit: 0xffff_ffff,
        access: (bit(3, 1 << 13) | bit(4, 1 << 14)) as u32,
        ..Segment::default()
    };
    let value = take_u64();
    let mut gpr = [0u64; 16];
    for reg in gpr.iter_mut() {
        *reg = take_u64();
    }
    let regs = Registers {
        gpr,
        rip,
        cr0: bit(0, 1) | bit(1, 1 << 31),
        cr3,
        cr4: bit(5, 1 << 5),
        efer: bit(2, (1 << 10) | (1 << 8)),
        cs,
        ..Registers::default()
    };
    let ram = &input[..input.len().min(ram_size as usize)];
    Some((regs, value, ram))
}
