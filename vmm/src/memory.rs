//! Guest RAM and owned host frames: the only place the VMM dereferences host pointers.
//!
//! # Role
//!
//! [`GuestMemory`] is a VM's RAM: guest-physical addresses `0..size`, backed by host frames
//! from the kernel's [`HostMemory`]. It is allocated in 2 MiB chunks (512 frames aligned to
//! 512) so that [`nested_paging`](crate::nested_paging) can map it with 2 MiB EPT/NPT pages; a
//! chunk that cannot be had in one piece falls back to 512 single frames. [`GuestMemory::regions`]
//! lists the result as host-contiguous runs, which is what the nested page tables, snapshots
//! and (later) migration walk.
//!
//! [`HostFrames`] owns one `alloc_frames` allocation and is the crate's safe window onto host
//! memory: every access is bounds-checked against the allocation, split at frame boundaries
//! and only then turned into a host pointer. Guest RAM, nested page tables and (for the
//! backends) control blocks all go through it, so the `unsafe` for host-pointer access lives
//! in this file only.
//!
//! # Safety of guest-controlled addresses
//!
//! Every guest-physical access is checked with overflow-safe arithmetic against `0..size`
//! before it is translated; an access outside RAM is a [`MemoryError::OutOfRange`], never a
//! host access. Accesses may span chunks and fallback frames.
//!
//! # Neighbours
//!
//! [`host`](crate::host) provides the frames; [`nested_paging`](crate::nested_paging) maps
//! [`GuestMemory::regions`] into EPT/NPT tables; [`guest_paging`](crate::guest_paging) walks
//! guest page tables stored here; loaders write images with [`GuestMemory::write`].
//!
//! # Host writes and the dirty log
//!
//! Device emulation (virtqueues, virtio-blk/net buffers, kvm-clock pages) writes guest RAM
//! through [`GuestMemory::write`] and [`GuestMemory::fill`], not through the nested page
//! tables, so write protection never sees it. While dirty logging is on
//! ([`GuestMemory::log_host_writes`]) every such write marks its 4 KiB pages in a
//! [`HostWriteLog`] that the [`MemoryMap`](crate::backend::MemoryMap) merges into the
//! dirty log on each harvest: live migration then copies device-written pages too.

use alloc::vec::Vec;
use core::cmp::min;
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::host::{FRAME_SIZE, FrameUse, HostMemory};

/// Size of a large (2 MiB) page: the unit guest RAM is allocated and sized in.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// Host frames in one 2 MiB chunk.
pub const FRAMES_PER_LARGE_PAGE: u64 = LARGE_PAGE_SIZE / FRAME_SIZE;
/// Smallest guest RAM size.
pub const MIN_GUEST_RAM: u64 = LARGE_PAGE_SIZE;
/// Largest guest RAM size (64 GiB).
pub const MAX_GUEST_RAM: u64 = 64 << 30;

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryError {
    /// The requested guest RAM size is not a multiple of 2 MiB in `2 MiB..=64 GiB`.
    InvalidSize {
        /// The size asked for, in bytes.
        size: u64,
    },
    /// The host ran out of frames.
    OutOfHostMemory {
        /// Bytes that were being allocated (the whole guest RAM size for [`GuestMemory::new`]).
        requested: u64,
    },
    /// A guest-physical access falls (partly) outside guest RAM.
    OutOfRange {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// An access to a [`HostFrames`] allocation falls outside it (a VMM bug, not a guest
    /// action).
    FrameOffsetOutOfRange {
        /// Host-physical address of the allocation.
        phys: u64,
        /// Offset of the access in the allocation.
        offset: u64,
        /// Length of the access in bytes.
        len: u64,
    },
    /// A frame allocation was asked for zero frames or a non-power-of-two alignment.
    InvalidFrameRequest {
        /// Frames asked for.
        count: u64,
        /// Alignment asked for, in frames.
        align: u64,
    },
    /// A nested-paging mapping argument is not 4 KiB aligned.
    Unaligned {
        /// Which argument (`"guest-physical address"`, `"host-physical address"`, `"length"`).
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A nested-paging mapping reaches past what 4-level tables can address (guest-physical
    /// 2^48, host-physical 2^52).
    AddressTooLarge {
        /// Which side (`"guest-physical"` or `"host-physical"`).
        what: &'static str,
        /// First address of the mapping.
        start: u64,
        /// Length of the mapping.
        len: u64,
    },
    /// A nested-paging mapping overlaps one that already exists.
    AlreadyMapped {
        /// The first guest-physical address found mapped.
        gpa: u64,
    },
    /// The nested-paging format cannot express these permissions (both formats need read
    /// permission on every mapping).
    UnsupportedAccess {
        /// Readable.
        read: bool,
        /// Writable.
        write: bool,
        /// Executable.
        execute: bool,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryError::InvalidSize { size } => write!(
                f,
                "guest RAM size {size} bytes is invalid: use a multiple of 2 MiB from 2 MiB to 64 GiB"
            ),
            MemoryError::OutOfHostMemory { requested } => write!(
                f,
                "out of host memory allocating {} KiB: stop or shrink other VMs, or give this one less RAM",
                requested / 1024
            ),
            MemoryError::OutOfRange { gpa, len } => write!(
                f,
                "guest-physical access of {len} bytes at {gpa:#x} is outside guest RAM"
            ),
            MemoryError::FrameOffsetOutOfRange { phys, offset, len } => write!(
                f,
                "internal error: access of {len} bytes at offset {offset:#x} is outside the host frames at {phys:#x}"
            ),
            MemoryError::InvalidFrameRequest { count, align } => write!(
                f,
                "internal error: invalid frame allocation ({count} frames aligned to {align})"
            ),
            MemoryError::Unaligned { what, value } => {
                write!(f, "{what} {value:#x} is not 4 KiB aligned")
            }
            MemoryError::AddressTooLarge { what, start, len } => write!(
                f,
                "{what} range {start:#x}+{len:#x} is beyond what the nested page tables can map"
            ),
            MemoryError::AlreadyMapped { gpa } => {
                write!(f, "guest-physical address {gpa:#x} is already mapped")
            }
            MemoryError::UnsupportedAccess {
                read,
                write,
                execute,
            } => write!(
                f,
                "nested paging cannot map a page with read={read} write={write} execute={execute}: every mapping must be readable"
            ),
        }
    }
}

impl core::error::Error for MemoryError {}

/// One `alloc_frames` allocation, owned: freed on drop.
///
/// All reads and writes are bounds-checked against the allocation and split at frame
/// boundaries, so they rely only on [`HostMemory::ptr`] being valid for the rest of the frame
/// it points into. Writes take `&self`: like a physical address, a `HostFrames` is a handle to
/// memory that hardware (a running guest, the nested-paging walker) may also access.
pub struct HostFrames {
    host: &'static dyn HostMemory,
    use_: FrameUse,
    phys: u64,
    count: u64,
}

impl fmt::Debug for HostFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFrames")
            .field("phys", &format_args!("{:#x}", self.phys))
            .field("count", &self.count)
            .finish()
    }
}

impl HostFrames {
    /// Allocates `count` zeroed frames aligned to `align` frames (a power of two), billed to
    /// `use_`.
    pub fn alloc(
        host: &'static dyn HostMemory,
        use_: FrameUse,
        count: u64,
        align: u64,
    ) -> Result<HostFrames, MemoryError> {
        if count == 0 || !align.is_power_of_two() {
            return Err(MemoryError::InvalidFrameRequest { count, align });
        }
        let phys =
            host.alloc_frames_for(use_, count, align)
                .ok_or(MemoryError::OutOfHostMemory {
                    requested: count.saturating_mul(FRAME_SIZE),
                })?;
        Ok(HostFrames {
            host,
            use_,
            phys,
            count,
        })
    }

    /// What these frames are billed to.
    pub fn frame_use(&self) -> FrameUse {
        self.use_
    }

    /// Host-physical address of the first frame.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u64 {
        self.count
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.count * FRAME_SIZE
    }

    /// Always false: an allocation has at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), MemoryError> {
        let len = len as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(MemoryError::FrameOffsetOutOfRange {
                phys: self.phys,
                offset,
                len,
            }),
        }
    }

    /// Calls `f(host_ptr, range)` for each frame-bounded piece of `offset..offset + len`;
    /// `range` is the piece's position relative to `offset`. The caller has checked the range.
    fn pieces(&self, offset: u64, len: usize, mut f: impl FnMut(*mut u8, Range<usize>)) {
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let room = (FRAME_SIZE - at % FRAME_SIZE) as usize;
            let n = min(room, len - done);
            f(self.host.ptr(self.phys + at), done..done + n);
            done += n;
        }
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(offset, buf.len())?;
        self.pieces(offset, buf.len(), |src, range| {
            let dst = &mut buf[range];
            // SAFETY: `src` comes from `HostMemory::ptr` for a byte inside this allocation
            // (checked above), and the piece does not cross the end of that byte's frame, so
            // the `dst.len()` bytes at `src` are frame memory owned by this allocation, which
            // stays allocated while `self` lives. `dst` is a valid exclusive Rust slice.
            // `copy` tolerates overlap, so a caller whose buffer aliases the frame is still
            // sound.
            unsafe { core::ptr::copy(src, dst.as_mut_ptr(), dst.len()) }
        });
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(offset, data.len())?;
        self.pieces(offset, data.len(), |dst, range| {
            let src = &data[range];
            // SAFETY: as in `read`: `dst` points at `src.len()` bytes of frame memory owned
            // by this allocation (bounds checked above, piece within one frame); no Rust
            // reference to frame memory exists, so writing through the raw pointer does not
            // invalidate one. `copy` tolerates overlap.
            unsafe { core::ptr::copy(src.as_ptr(), dst, src.len()) }
        });
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        let ulen = usize::try_from(len).map_err(|_| MemoryError::FrameOffsetOutOfRange {
            phys: self.phys,
            offset,
            len,
        })?;
        self.check(offset, ulen)?;
        self.pieces(offset, ulen, |dst, range| {
            // SAFETY: as in `write`: `dst` points at `range.len()` bytes of frame memory
            // owned by this allocation (bounds checked above, piece within one frame).
            unsafe { core::ptr::write_bytes(dst, byte, range.len()) }
        });
        Ok(())
    }

    /// Reads the little-endian u64 at `offset`.
    pub fn read_u64(&self, offset: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `value` little-endian at `offset`.
    pub fn write_u64(&self, offset: u64, value: u64) -> Result<(), MemoryError> {
        self.write(offset, &value.to_le_bytes())
    }
}

impl Drop for HostFrames {
    fn drop(&mut self) {
        self.host.free_frames_for(self.use_, self.phys, self.count);
    }
}

/// Host frames that only this crate's Rust code reads and writes (and the hardware, while a
/// call that handed it their physical address runs): VMCBs, VMCSs, permission bitmaps, FPU
/// save areas.
///
/// Unlike [`HostFrames`], whose writes take `&self` because a guest may touch the same memory,
/// access here follows Rust's borrow rules: [`frame`](Self::frame) lends a frame for reading
/// through `&self`, [`frame_mut`](Self::frame_mut) for writing through `&mut self`, and each
/// borrow ends with the caller's use of it. No `'static` reference to host memory exists.
pub struct ControlFrames {
    frames: HostFrames,
}

impl fmt::Debug for ControlFrames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ControlFrames").field(&self.frames).finish()
    }
}

impl ControlFrames {
    /// Allocates `count` zeroed frames aligned to `align` frames (a power of two).
    pub fn alloc(
        host: &'static dyn HostMemory,
        count: u64,
        align: u64,
    ) -> Result<ControlFrames, MemoryError> {
        HostFrames::alloc(host, FrameUse::VcpuControl, count, align)
            .map(|frames| ControlFrames { frames })
    }

    /// Host-physical address of the first frame (what the hardware is given).
    pub fn phys(&self) -> u64 {
        self.frames.phys()
    }

    /// Number of frames.
    pub fn frame_count(&self) -> u64 {
        self.frames.frame_count()
    }

    fn frame_ptr(&self, index: u64) -> Result<*mut u8, MemoryError> {
        if index >= self.frames.count {
            return Err(MemoryError::FrameOffsetOutOfRange {
                phys: self.frames.phys,
                offset: index.saturating_mul(FRAME_SIZE),
                len: FRAME_SIZE,
            });
        }
        Ok(self.frames.host.ptr(self.frames.phys + index * FRAME_SIZE))
    }

    /// Frame `index`, for reading; the borrow ends before `self` can be changed.
    pub fn frame(&self, index: u64) -> Result<&[u8; 4096], MemoryError> {
        let ptr = self.frame_ptr(index)?;
        // SAFETY: `ptr` is `HostMemory::ptr` of the first byte of a frame of this allocation,
        // valid for the whole 4096-byte frame, which stays allocated while `self` lives. The
        // frames are reachable only through this value (the inner `HostFrames` is private and
        // its `&self` writers are never called), so no write can happen while the returned
        // shared borrow of `self` lives; the hardware writes them only during calls that hold
        // `&mut self` of the owner and no borrow of the frames. `u8` has alignment 1.
        Ok(unsafe { &*(ptr as *const [u8; 4096]) })
    }

    /// Frame `index`, for writing; the borrow ends before `self` can be used again.
    pub fn frame_mut(&mut self, index: u64) -> Result<&mut [u8; 4096], MemoryError> {
        let ptr = self.frame_ptr(index)?;
        // SAFETY: as in `frame`; `&mut self` makes this the only live reference to the frame.
        Ok(unsafe { &mut *(ptr as *mut [u8; 4096]) })
    }

    /// The first frame, for reading (a VMCB, a VMCS region, an FPU area).
    pub fn page(&self) -> &[u8; 4096] {
        // SAFETY: as in `frame`; frame 0 exists in every allocation (`alloc` refuses 0
        // frames), and `HostMemory::ptr` is valid for the whole frame.
        unsafe { &*(self.frames.host.ptr(self.frames.phys) as *const [u8; 4096]) }
    }

    /// The first frame, for writing.
    pub fn page_mut(&mut self) -> &mut [u8; 4096] {
        // SAFETY: as in `page`, with `&mut self` making this the only live reference.
        unsafe { &mut *(self.frames.host.ptr(self.frames.phys) as *mut [u8; 4096]) }
    }

    /// Copies `data` to `offset` (any length inside the allocation, across frames).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.frames.write(offset, data)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.frames.read(offset, buf)
    }

    /// Sets every byte of the allocation to `byte`.
    pub fn fill(&mut self, byte: u8) -> Result<(), MemoryError> {
        self.frames.fill(0, self.frames.len(), byte)
    }
}

/// A host-contiguous run of guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// First guest-physical address.
    pub gpa: u64,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
    /// Host-physical address backing `gpa`.
    pub hpa: u64,
}

/// The host frames behind one 2 MiB chunk of guest RAM.
enum Chunk {
    /// One 2 MiB-aligned allocation of 512 frames.
    Large(HostFrames),
    /// 512 single frames (the host had no free 2 MiB block).
    Frames(Vec<HostFrames>),
}

/// The 4 KiB pages the VMM itself wrote while logging was on (see the module docs).
///
/// Atomic so that writers holding only `&GuestMemory` can mark pages; one bit per page.
#[derive(Debug)]
pub struct HostWriteLog {
    enabled: AtomicBool,
    /// Bit n of word w: the page at guest-physical `(64 * w + n) * 4096`.
    words: Vec<AtomicU64>,
}

impl HostWriteLog {
    fn new(size: u64) -> Result<HostWriteLog, MemoryError> {
        let count = size.div_ceil(FRAME_SIZE).div_ceil(64) as usize;
        let mut words = Vec::new();
        words
            .try_reserve_exact(count)
            .map_err(|_| MemoryError::OutOfHostMemory { requested: size })?;
        words.extend((0..count).map(|_| AtomicU64::new(0)));
        Ok(HostWriteLog {
            enabled: AtomicBool::new(false),
            words,
        })
    }

    /// Marks the pages of `gpa..gpa + len` (already checked to be inside RAM).
    fn mark(&self, gpa: u64, len: u64) {
        if len == 0 || !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let first = gpa / FRAME_SIZE;
        let last = (gpa + len - 1) / FRAME_SIZE;
        for page in first..=last {
            if let Some(word) = self.words.get((page / 64) as usize) {
                word.fetch_or(1 << (page % 64), Ordering::Relaxed);
            }
        }
    }
}

/// A VM's RAM: guest-physical `0..size`, backed by host frames, freed on drop.
pub struct GuestMemory {
    host: &'static dyn HostMemory,
    size: u64,
    chunks: Vec<Chunk>,
    regions: Vec<RamRegion>,
    host_writes: HostWriteLog,
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemory")
            .field("size", &format_args!("{:#x}", self.size))
            .field("regions", &self.regions)
            .finish()
    }
}

impl GuestMemory {
    /// Allocates `size` bytes of guest RAM (a multiple of 2 MiB, 2 MiB to 64 GiB), zeroed.
    ///
    /// Each 2 MiB chunk is one 2 MiB-aligned allocation where the host has one, else 512
    /// single frames. If the host runs out, everything taken so far is freed and the result
    /// is [`MemoryError::OutOfHostMemory`] with `requested = size`.
    pub fn new(host: &'static dyn HostMemory, size: u64) -> Result<GuestMemory, MemoryError> {
        if !(MIN_GUEST_RAM..=MAX_GUEST_RAM).contains(&size) || !size.is_multiple_of(LARGE_PAGE_SIZE)
        {
            return Err(MemoryError::InvalidSize { size });
        }
        let oom = MemoryError::OutOfHostMemory { requested: size };
        let chunk_count = (size / LARGE_PAGE_SIZE) as usize;
        let mut chunks = Vec::new();
        chunks.try_reserve_exact(chunk_count).map_err(|_| oom)?;
        // On any early return `chunks` drops, freeing what was taken.
        for _ in 0..chunk_count {
            let chunk = match HostFrames::alloc(
                host,
                FrameUse::GuestRam,
                FRAMES_PER_LARGE_PAGE,
                FRAMES_PER_LARGE_PAGE,
            ) {
                Ok(large) => Chunk::Large(large),
                Err(_) => {
                    let mut frames = Vec::new();
                    frames
                        .try_reserve_exact(FRAMES_PER_LARGE_PAGE as usize)
                        .map_err(|_| oom)?;
                    for _ in 0..FRAMES_PER_LARGE_PAGE {
                        frames.push(
                            HostFrames::alloc(host, FrameUse::GuestRam, 1, 1).map_err(|_| oom)?,
                        );
                    }
                    Chunk::Frames(frames)
                }
            };
            chunks.push(chunk);
        }
        let regions = Self::merge_regions(&chunks);
        let host_writes = HostWriteLog::new(size)?;
        Ok(GuestMemory {
            host,
            size,
            chunks,
            regions,
            host_writes,
        })
    }

    /// Lists the chunks as host-contiguous runs, merging neighbours.
    fn merge_regions(chunks: &[Chunk]) -> Vec<RamRegion> {
        let mut regions: Vec<RamRegion> = Vec::new();
        let mut gpa = 0;
        let mut push = |hpa: u64, len: u64| {
            match regions.last_mut() {
                Some(last) if last.hpa + last.len == hpa => last.len += len,
                _ => regions.push(RamRegion { gpa, len, hpa }),
            }
            gpa += len;
        };
        for chunk in chunks {
            match chunk {
                Chunk::Large(frames) => push(frames.phys(), frames.len()),
                Chunk::Frames(list) => list.iter().for_each(|f| push(f.phys(), f.len())),
            }
        }
        regions
    }

    /// The host frames come from.
    pub fn host(&self) -> &'static dyn HostMemory {
        self.host
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host-contiguous runs of RAM, in guest-physical order, covering `0..size`.
    pub fn regions(&self) -> &[RamRegion] {
        &self.regions
    }

    /// Whether `gpa..gpa + len` lies inside RAM (false if it overflows).
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// The host-physical address backing `gpa`, if it is RAM.
    pub fn hpa(&self, gpa: u64) -> Option<u64> {
        let (frames, offset) = self.frames_at(gpa)?;
        Some(frames.phys() + offset)
    }

    /// The allocation holding `gpa` and `gpa`'s offset in it.
    fn frames_at(&self, gpa: u64) -> Option<(&HostFrames, u64)> {
        if gpa >= self.size {
            return None;
        }
        let in_chunk = gpa % LARGE_PAGE_SIZE;
        match self.chunks.get((gpa / LARGE_PAGE_SIZE) as usize)? {
            Chunk::Large(frames) => Some((frames, in_chunk)),
            Chunk::Frames(list) => Some((
                list.get((in_chunk / FRAME_SIZE) as usize)?,
                in_chunk % FRAME_SIZE,
            )),
        }
    }

    /// Checks `gpa..gpa + len` and calls `f(frames, offset, range)` for each piece inside
    /// one allocation; `range` is the piece's position relative to `gpa`.
    fn pieces(
        &self,
        gpa: u64,
        len: u64,
        mut f: impl FnMut(&HostFrames, u64, Range<usize>) -> Result<(), MemoryError>,
    ) -> Result<(), MemoryError> {
        let out = MemoryError::OutOfRange { gpa, len };
        if !self.contains(gpa, len) {
            return Err(out);
        }
        let len = usize::try_from(len).map_err(|_| out)?;
        let mut done = 0usize;
        while done < len {
            let (frames, offset) = self.frames_at(gpa + done as u64).ok_or(out)?;
            let n = min((frames.len() - offset) as usize, len - done);
            f(frames, offset, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// Copies guest RAM at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.pieces(gpa, buf.len() as u64, |frames, offset, range| {
            frames.read(offset, &mut buf[range])
        })
    }

    /// Copies `data` into guest RAM at `gpa` (logged while dirty logging is on).
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.pieces(gpa, data.len() as u64, |frames, offset, range| {
            frames.write(offset, &data[range])
        })?;
        self.host_writes.mark(gpa, data.len() as u64);
        Ok(())
    }

    /// Sets `len` bytes of guest RAM at `gpa` to `byte` (logged while dirty logging is on).
    pub fn fill(&self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        self.pieces(gpa, len, |frames, offset, range| {
            frames.fill(offset, range.len() as u64, byte)
        })?;
        self.host_writes.mark(gpa, len);
        Ok(())
    }

    /// Turns the log of the VMM's own writes on or off; turning it on starts it empty.
    pub fn log_host_writes(&self, on: bool) {
        if on {
            self.host_writes
                .words
                .iter()
                .for_each(|w| w.store(0, Ordering::Relaxed));
        }
        self.host_writes.enabled.store(on, Ordering::Release);
    }

    /// Whether the VMM's own writes are being logged.
    pub fn is_logging_host_writes(&self) -> bool {
        self.host_writes.enabled.load(Ordering::Acquire)
    }

    /// Hands over the VMM's writes logged since the last call, as `(word index, bits)` for
    /// each non-empty 64-page word (bit n of word w: page `64 * w + n`), and clears them.
    pub fn drain_host_writes(&self, mut f: impl FnMut(usize, u64)) {
        for (index, word) in self.host_writes.words.iter().enumerate() {
            let bits = word.swap(0, Ordering::AcqRel);
            if bits != 0 {
                f(index, bits);
            }
        }
    }

    fn read_array<const N: usize>(&self, gpa: u64) -> Result<[u8; N], MemoryError> {
        let mut b = [0u8; N];
        self.read(gpa, &mut b)?;
        Ok(b)
    }

    /// Reads the byte at `gpa`.
    pub fn read_u8(&self, gpa: u64) -> Result<u8, MemoryError> {
        Ok(self.read_array::<1>(gpa)?[0])
    }

    /// Reads the little-endian u16 at `gpa`.
    pub fn read_u16(&self, gpa: u64) -> Result<u16, MemoryError> {
        self.read_array(gpa).map(u16::from_le_bytes)
    }

    /// Reads the little-endian u32 at `gpa`.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, MemoryError> {
        self.read_array(gpa).map(u32::from_le_bytes)
    }

    /// Reads the little-endian u64 at `gpa`.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemoryError> {
        self.read_array(gpa).map(u64::from_le_bytes)
    }

    /// Writes the byte at `gpa`.
    pub fn write_u8(&self, gpa: u64, value: u8) -> Result<(), MemoryError> {
        self.write(gpa, &[value])
    }

    /// Writes `value` little-endian at `gpa`.
    pub fn write_u16(&self, gpa: u64, value: u16) -> Result<(), MemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `gpa`.
    pub fn write_u32(&self, gpa: u64, value: u32) -> Result<(), MemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `gpa`.
    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), MemoryError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests;
