//! virtio-blk (virtio 1.x §5.2) over a [`BlockBackend`] the kernel provides (a store file,
//! a GPT partition).
//!
//! One request queue of 256 entries. Requests: `IN` (read), `OUT` (write), `FLUSH`,
//! `GET_ID` (the serial, 20 bytes), `WRITE_ZEROES` (one range of at most 32 MiB, written as
//! zeros through the backend; the unmap flag is allowed and ignored); any other type is
//! answered `UNSUPP`. Features offered: `SEG_MAX` (254), `BLK_SIZE` (512), `FLUSH`,
//! `WRITE_ZEROES` on a writable disk, and `RO` for a read-only one.
//!
//! The device does not assume how the driver splits a request into buffers (§2.6.4): the
//! device-readable buffers form one byte stream (16-byte header, then write data) and the
//! device-writable ones another (read data or the id, then the status byte, the stream's
//! last byte). A request the device can answer gets a status: `IOERR` for a short header,
//! a transfer that is not whole sectors or runs past the disk's end, a write to a
//! read-only disk, a readable buffer after a writable one, or a backend error — nothing is
//! read or written then. A request without any device-writable byte cannot be answered and
//! puts the device in `DEVICE_NEEDS_RESET`.
//!
//! Data moves through a 256 KiB bounce buffer between guest RAM and the backend (smaller
//! pieces cost more host requests: 64 KiB halved `disk-bench`'s throughput); each
//! request is complete (the backend returned) before its used entry is written.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::pci::{VirtioDevice, VirtioPci};
use super::queue::{Buffer, DescriptorChain, SplitQueue};
use super::{DeviceFault, TYPE_BLOCK, copy_from_stream, copy_to_stream, stream_len};
use crate::memory::GuestMemory;

/// Bytes per sector, whatever the backend's own block size.
pub const SECTOR_SIZE: u64 = 512;
/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most data buffers per request (the queue size less header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes of the serial number `GET_ID` returns.
pub const SERIAL_LEN: usize = 20;
/// Bytes moved between guest RAM and the backend per backend call.
pub const BOUNCE_LEN: usize = 256 * 1024;

/// Feature bit: `seg_max` is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature bit: the disk is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature bit: `blk_size` is valid.
pub const F_BLK_SIZE: u64 = 1 << 6;
/// Feature bit: the `FLUSH` request exists.
pub const F_FLUSH: u64 = 1 << 9;
/// Feature bit: the `WRITE_ZEROES` request exists.
pub const F_WRITE_ZEROES: u64 = 1 << 14;
/// Most sectors one `WRITE_ZEROES` range may cover (32 MiB: the VM waits while they are
/// written).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 65536;

/// Request type: read.
pub const T_IN: u32 = 0;
/// Request type: write.
pub const T_OUT: u32 = 1;
/// Request type: flush the backend's caches.
pub const T_FLUSH: u32 = 4;
/// Request type: the serial number.
pub const T_GET_ID: u32 = 8;
/// Request type: write zeros to ranges.
pub const T_WRITE_ZEROES: u32 = 13;
/// `WRITE_ZEROES` range flag: the device may unmap instead.
const WRITE_ZEROES_UNMAP: u32 = 1;

/// Status: done.
pub const S_OK: u8 = 0;
/// Status: failed.
pub const S_IOERR: u8 = 1;
/// Status: request type not supported.
pub const S_UNSUPP: u8 = 2;

/// The PCI class of a block device: mass storage, other.
const CLASS_MASS_STORAGE_OTHER: u32 = 0x01_8000;
/// Request header: type (u32), reserved (u32), sector (u64).
const HEADER_LEN: u64 = 16;

/// Why a backend could not read, write or flush, in words for the operator (e.g. "store
/// file data.img: cluster 812 is beyond the store").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockError(pub String);

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The storage behind a virtio-blk device, in 512-byte sectors. The device checks every
/// request against [`sectors`](Self::sectors) before calling `read` or `write`, and `buf`
/// is always a non-empty multiple of 512 bytes.
pub trait BlockBackend {
    /// The disk's size in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len() / 512` sectors from `sector`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf.len() / 512` sectors at `sector`.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;
}

/// What a block device has done, for `vm info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Read requests completed.
    pub reads: u64,
    /// Write requests completed.
    pub writes: u64,
    /// Flush requests completed.
    pub flushes: u64,
    /// Bytes read into the guest.
    pub bytes_read: u64,
    /// Bytes written from the guest (including zeros written for `WRITE_ZEROES`, which
    /// count as writes).
    pub bytes_written: u64,
    /// Requests answered `IOERR` or `UNSUPP`.
    pub errors: u64,
}

/// The virtio-blk device model, see the [module docs](self).
pub struct VirtioBlock {
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    serial: [u8; SERIAL_LEN],
    /// The backend's size, read once (a disk does not change size under a running VM).
    capacity: u64,
    queue_sizes: [u16; 1],
    stats: BlockStats,
    /// The last request that failed, and why.
    last_error: Option<String>,
    /// Allocated at the first transfer.
    bounce: Vec<u8>,
}

/// A virtio-blk device on PCI.
pub type VirtioBlockPci = VirtioPci<VirtioBlock>;

/// A virtio-blk PCI device over `backend` (see [`VirtioBlock::new`]), ready for
/// [`Devices::add_pci_device`](crate::devices::Devices::add_pci_device).
pub fn block_device(
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    serial: &str,
) -> VirtioBlockPci {
    VirtioPci::new(VirtioBlock::new(backend, read_only, serial))
}

/// How a request ended: its status and the bytes written into its data buffers.
struct Outcome {
    status: u8,
    data_written: u32,
}

impl Outcome {
    fn status(status: u8) -> Outcome {
        Outcome {
            status,
            data_written: 0,
        }
    }
}

impl VirtioBlock {
    /// A block device over `backend`; `serial` is what `GET_ID` returns (its first 20
    /// bytes, zero-padded).
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, serial: &str) -> VirtioBlock {
        let mut id = [0u8; SERIAL_LEN];
        let n = serial.len().min(SERIAL_LEN);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        VirtioBlock {
            capacity: backend.sectors(),
            backend,
            read_only,
            serial: id,
            queue_sizes: [QUEUE_SIZE],
            stats: BlockStats::default(),
            last_error: None,
            bounce: Vec::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// The last failed request and why (e.g. a backend error), for `vm info`.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether the guest sees the disk read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The disk's size in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The device configuration (`struct virtio_blk_config` up to
    /// `write_zeroes_may_unmap`).
    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.capacity.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
        // max_write_zeroes_seg: one range per request.
        c[52..56].copy_from_slice(&1u32.to_le_bytes());
        c
    }

    /// Answers one request; `Ok` with the bytes written into its writable buffers, or a
    /// fault if it has no status byte.
    fn handle(&mut self, mem: &GuestMemory, chain: &DescriptorChain) -> Result<u32, DeviceFault> {
        let bufs = &chain.buffers;
        let first_writable = bufs
            .iter()
            .position(|b| b.device_writable)
            .unwrap_or(bufs.len());
        let (readable, writable) = bufs.split_at(first_writable);
        let Some(status_at) = writable
            .iter()
            .rev()
            .find(|b| b.len > 0)
            .map(|b| b.addr + u64::from(b.len) - 1)
        else {
            return Err(DeviceFault::Request {
                head: chain.head,
                reason: "has no device-writable status byte".into(),
            });
        };
        let outcome = if writable.iter().any(|b| !b.device_writable) {
            self.refuse("a device-readable buffer follows a device-writable one")
        } else {
            let out_len = stream_len(writable) - 1;
            self.execute(mem, readable, writable, out_len)
        };
        mem.write_u8(status_at, outcome.status)
            .map_err(|_| DeviceFault::Request {
                head: chain.head,
                reason: "has its status byte outside guest RAM".into(),
            })?;
        Ok(outcome.data_written.saturating_add(1))
    }

    /// Counts a refused request and keeps why.
    fn refuse(&mut self, reason: &str) -> Outcome {
        self.stats.errors += 1;
        self.last_error = Some(reason.into());
        Outcome::status(S_IOERR)
    }

    /// Carries out a request whose status byte exists; `out_len` is the room for data in
    /// the writable stream.
    fn execute(
        &mut self,
        mem: &GuestMemory,
        readable: &[Buffer],
        writable: &[Buffer],
        out_len: u64,
    ) -> Outcome {
        let mut header = [0u8; HEADER_LEN as usize];
        if stream_len(readable) < HEADER_LEN
            || copy_from_stream(mem, readable, 0, &mut header).is_err()
        {
            return self.refuse("a request header is shorter than 16 bytes");
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector);
        match kind {
            T_IN => self.read(mem, writable, sector, out_len),
            T_OUT => {
                let len = stream_len(readable) - HEADER_LEN;
                self.write(mem, readable, sector, len)
            }
            T_FLUSH => match self.backend.flush() {
                Ok(()) => {
                    self.stats.flushes += 1;
                    Outcome::status(S_OK)
                }
                Err(error) => self.refuse(&alloc::format!("flush failed: {error}")),
            },
            T_WRITE_ZEROES => self.write_zeroes(mem, readable),
            T_GET_ID => {
                let n = (out_len as usize).min(SERIAL_LEN);
                if copy_to_stream(mem, writable, 0, &self.serial[..n]).is_err() {
                    return self.refuse("the GET_ID buffer is not in guest RAM");
                }
                Outcome {
                    status: S_OK,
                    data_written: n as u32,
                }
            }
            _ => {
                self.stats.errors += 1;
                Outcome::status(S_UNSUPP)
            }
        }
    }

    /// Checks a transfer of `len` bytes at `sector`: whole sectors, inside the disk, and
    /// small enough to report in a used entry.
    fn check_range(&self, sector: u64, len: u64) -> Result<(), String> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(alloc::format!(
                "a transfer of {len} bytes is not whole sectors"
            ));
        }
        let end = sector.checked_add(len / SECTOR_SIZE);
        if end.is_none_or(|end| end > self.capacity) || len >= u64::from(u32::MAX) {
            return Err(alloc::format!(
                "a transfer of {} sectors at sector {sector} runs past the disk's {} sectors",
                len / SECTOR_SIZE,
                self.capacity
            ));
        }
        Ok(())
    }

    fn read(&mut self, mem: &GuestMemory, writable: &[Buffer], sector: u64, len: u64) -> Outcome {
        if let Err(reason) = self.check_range(sector, len) {
            return self.refuse(&reason);
        }
        ensure_bounce(&mut self.bounce);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_LEN as u64) as usize;
            let chunk = &mut self.bounce[..n];
            if let Err(error) = self.backend.read(sector + done / SECTOR_SIZE, chunk) {
                return self.refuse(&alloc::format!("read at sector {sector} failed: {error}"));
            }
            if copy_to_stream(mem, writable, done, chunk).is_err() {
                return self.refuse("a read buffer is not in guest RAM");
            }
            done += n as u64;
        }
        self.stats.reads += 1;
        self.stats.bytes_read += len;
        Outcome {
            status: S_OK,
            // check_range keeps len below u32::MAX.
            data_written: len as u32,
        }
    }

    fn write(&mut self, mem: &GuestMemory, readable: &[Buffer], sector: u64, len: u64) -> Outcome {
        if self.read_only {
            return self.refuse("a write to a read-only disk");
        }
        if let Err(reason) = self.check_range(sector, len) {
            return self.refuse(&reason);
        }
        ensure_bounce(&mut self.bounce);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_LEN as u64) as usize;
            let chunk = &mut self.bounce[..n];
            if copy_from_stream(mem, readable, HEADER_LEN + done, chunk).is_err() {
                return self.refuse("a write buffer is not in guest RAM");
            }
            if let Err(error) = self.backend.write(sector + done / SECTOR_SIZE, chunk) {
                return self.refuse(&alloc::format!("write at sector {sector} failed: {error}"));
            }
            done += n as u64;
        }
        self.stats.writes += 1;
        self.stats.bytes_written += len;
        Outcome::status(S_OK)
    }
}

impl VirtioBlock {
    /// `WRITE_ZEROES`: one 16-byte range (sector, sector count, flags) after the header.
    fn write_zeroes(&mut self, mem: &GuestMemory, readable: &[Buffer]) -> Outcome {
        if self.read_only {
            return self.refuse("a write to a read-only disk");
        }
        if stream_len(readable) != HEADER_LEN + 16 {
            return self.refuse("a WRITE_ZEROES request does not hold exactly one range");
        }
        let mut range = [0u8; 16];
        if copy_from_stream(mem, readable, HEADER_LEN, &mut range).is_err() {
            return self.refuse("a WRITE_ZEROES range is not in guest RAM");
        }
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&range[..8]);
        let sector = u64::from_le_bytes(sector);
        let count = u32::from_le_bytes([range[8], range[9], range[10], range[11]]);
        let flags = u32::from_le_bytes([range[12], range[13], range[14], range[15]]);
        if flags & !WRITE_ZEROES_UNMAP != 0 {
            // §5.2.6.2: unknown flags are UNSUPP.
            self.stats.errors += 1;
            return Outcome::status(S_UNSUPP);
        }
        if count > MAX_WRITE_ZEROES_SECTORS {
            return self.refuse("a WRITE_ZEROES range is longer than max_write_zeroes_sectors");
        }
        let len = u64::from(count) * SECTOR_SIZE;
        if let Err(reason) = self.check_range(sector, len) {
            return self.refuse(&reason);
        }
        ensure_bounce(&mut self.bounce);
        self.bounce.fill(0);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(BOUNCE_LEN as u64) as usize;
            if let Err(error) = self
                .backend
                .write(sector + done / SECTOR_SIZE, &self.bounce[..n])
            {
                return self.refuse(&alloc::format!(
                    "write zeroes at sector {sector} failed: {error}"
                ));
            }
            done += n as u64;
        }
        self.stats.writes += 1;
        self.stats.bytes_written += len;
        Outcome::status(S_OK)
    }
}

/// Allocates the bounce buffer at its first use (a disk that is never used costs nothing).
fn ensure_bounce(bounce: &mut Vec<u8>) {
    if bounce.is_empty() {
        *bounce = vec![0; BOUNCE_LEN];
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u16 {
        TYPE_BLOCK
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn pci_class(&self) -> u32 {
        CLASS_MASS_STORAGE_OTHER
    }

    fn features(&self) -> u64 {
        let access = if self.read_only { F_RO } else { F_WRITE_ZEROES };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | access
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|at| config.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut SplitQueue,
        mem: &GuestMemory,
    ) -> Result<bool, DeviceFault> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            let written = self.handle(mem, &chain)?;
            queue.add_used(mem, chain.head, written)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
