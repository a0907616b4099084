//! A/B slots on a block device: [`load`] the newest valid record, [`save`] atomically.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::format::{
    HEADER_LEN, MAX_HEADER_LEN, MAX_PAYLOAD, Record, RecordError, decode, decode_header, encode,
};

/// The raw configuration partition, as the kernel's disk driver exposes it.
///
/// Addresses are logical block addresses relative to the partition start. The store only
/// ever passes buffers whose length is a non-zero multiple of [`SECTOR`](Self::SECTOR), and
/// ranges that end at or before [`sector_count`](Self::sector_count).
///
/// Call order within a save: `read` (both slots), `write` (one slot), `flush`, `read` (the
/// same range, to verify). A `write` may sit in a volatile cache until `flush` returns `Ok`;
/// the store assumes nothing about which cached sectors survive a power cut.
pub trait BlockDevice {
    /// The driver's error.
    type Error: fmt::Debug;

    /// Bytes per sector. At least [`MAX_HEADER_LEN`] (512), so a header always fits in the
    /// first sector of a slot.
    const SECTOR: usize = 512;

    /// Number of sectors in the partition.
    fn sector_count(&self) -> u64;

    /// Reads `buf.len() / SECTOR` sectors starting at `lba` into `buf`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes `buf.len() / SECTOR` sectors starting at `lba`.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error>;

    /// Makes every completed write durable (a cache flush / FUA barrier).
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// One of the two record slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first half of the partition.
    A,
    /// The second half of the partition.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// Why a partition cannot hold two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The sector size is below [`MAX_HEADER_LEN`].
    #[error("sector size {size} is not supported (at least {MAX_HEADER_LEN} bytes needed)")]
    UnsupportedSectorSize {
        /// The device's sector size.
        size: usize,
    },
    /// Fewer than two sectors: no room for two slots.
    #[error("configuration partition of {sectors} sectors is too small for two slots")]
    PartitionTooSmall {
        /// The device's sector count.
        sectors: u64,
    },
}

/// The partition split into two equal halves: slot A from LBA 0, slot B right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    sector_size: usize,
    sectors_per_slot: u64,
}

impl Slots {
    /// Lays out two slots on a partition of `sector_count` sectors of `sector_size` bytes.
    pub fn new(sector_count: u64, sector_size: usize) -> Result<Slots, LayoutError> {
        if sector_size < MAX_HEADER_LEN {
            return Err(LayoutError::UnsupportedSectorSize { size: sector_size });
        }
        let sectors_per_slot = sector_count / 2;
        if sectors_per_slot == 0 {
            return Err(LayoutError::PartitionTooSmall {
                sectors: sector_count,
            });
        }
        Ok(Slots {
            sector_size,
            sectors_per_slot,
        })
    }

    /// The layout of `dev`.
    pub fn of<D: BlockDevice>(dev: &D) -> Result<Slots, LayoutError> {
        Slots::new(dev.sector_count(), D::SECTOR)
    }

    /// First LBA of `slot`.
    pub fn start(&self, slot: Slot) -> u64 {
        match slot {
            Slot::A => 0,
            Slot::B => self.sectors_per_slot,
        }
    }

    /// Sectors in each slot.
    pub fn sectors_per_slot(&self) -> u64 {
        self.sectors_per_slot
    }

    /// Bytes in each slot (saturating; only ever compared against small record sizes).
    pub fn slot_bytes(&self) -> u64 {
        self.sectors_per_slot
            .saturating_mul(self.sector_size as u64)
    }

    /// The largest payload a slot holds: the slot minus a header, capped at [`MAX_PAYLOAD`].
    pub fn max_payload(&self) -> usize {
        let room = self.slot_bytes().saturating_sub(HEADER_LEN as u64);
        room.min(MAX_PAYLOAD as u64) as usize
    }

    /// Sectors needed for `bytes` bytes.
    fn sectors_for(&self, bytes: usize) -> u64 {
        bytes.div_ceil(self.sector_size) as u64
    }
}

/// Why a slot holds no usable record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotFault<E> {
    /// The slot was read, but its bytes are not a valid record.
    #[error(transparent)]
    Invalid(RecordError),
    /// The device failed to read the slot.
    #[error("read failed: {0}")]
    Unreadable(E),
}

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState<E> {
    /// A valid record of this generation.
    Valid {
        /// Its generation.
        generation: u64,
    },
    /// No usable record.
    Faulty(SlotFault<E>),
}

impl<E: fmt::Display> fmt::Display for SlotState<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Valid { generation } => write!(f, "valid, generation {generation}"),
            SlotState::Faulty(fault) => fault.fmt(f),
        }
    }
}

/// The configuration [`load`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<E> {
    /// The payload of the newest valid record.
    pub payload: Vec<u8>,
    /// Its generation.
    pub generation: u64,
    /// The slot it came from.
    pub slot: Slot,
    /// What the other slot holds: the previous generation, or why it is unusable (worth a
    /// warning on the console: the next save rewrites it).
    pub other_slot_state: SlotState<E>,
}

/// Why a [`load`] or [`save`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError<E> {
    /// The partition cannot hold two slots.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The payload does not fit in a slot.
    #[error("configuration of {len} bytes does not fit in a slot (at most {max} bytes)")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The largest payload a slot holds.
        max: usize,
    },
    /// Neither slot holds a valid record; says why for each.
    #[error("no valid configuration: slot A: {a}; slot B: {b}")]
    NoValidSlot {
        /// Why slot A is unusable.
        a: SlotFault<E>,
        /// Why slot B is unusable.
        b: SlotFault<E>,
    },
    /// Reading a slot failed. A save stops here: the unreadable slot might hold the newest
    /// configuration, and writing either slot could then lose it.
    #[error("reading slot {slot} failed: {error}")]
    Read {
        /// The slot being read.
        slot: Slot,
        /// The device's error.
        error: E,
    },
    /// Writing the new record failed. The previous configuration is intact in the other
    /// slot; the new record may or may not have reached the disk, so the next [`load`] decides
    /// which of the two is current.
    #[error("writing slot {slot} failed: {error}")]
    Write {
        /// The slot being written.
        slot: Slot,
        /// The device's error.
        error: E,
    },
    /// Flushing the new record failed. The previous configuration is intact in the other
    /// slot; the new record may or may not have reached the disk, so the next [`load`] decides
    /// which of the two is current.
    #[error("flushing slot {slot} failed: {error}")]
    Flush {
        /// The slot just written.
        slot: Slot,
        /// The device's error.
        error: E,
    },
    /// The slot did not read back what was written. The previous configuration is intact in
    /// the other slot; the new record may or may not have reached the disk, so the next
    /// [`load`] decides which of the two is current.
    #[error("slot {slot} did not read back what was written")]
    VerifyFailed {
        /// The slot written.
        slot: Slot,
    },
    /// The newest generation is `u64::MAX`; no newer record can be written.
    #[error("the generation counter is exhausted")]
    GenerationExhausted,
}

/// Reads and checks the record in `slot`: the first sector, then as many more as its header
/// says (bounded by the slot and by [`MAX_PAYLOAD`]).
fn read_slot<D: BlockDevice>(
    dev: &mut D,
    slots: &Slots,
    slot: Slot,
) -> Result<Record, SlotFault<D::Error>> {
    let start = slots.start(slot);
    let mut buf = vec![0u8; D::SECTOR];
    dev.read(start, &mut buf).map_err(SlotFault::Unreadable)?;
    let header = decode_header(&buf).map_err(SlotFault::Invalid)?;
    let record_len = header.record_len();
    let sectors = slots.sectors_for(record_len);
    if sectors > slots.sectors_per_slot() {
        return Err(SlotFault::Invalid(RecordError::Truncated {
            needed: record_len,
            available: slots.slot_bytes().min(usize::MAX as u64) as usize,
        }));
    }
    if sectors > 1 {
        // `sectors` is at most (MAX_HEADER_LEN + MAX_PAYLOAD) / SECTOR + 1: a bounded
        // allocation.
        buf.resize(sectors as usize * D::SECTOR, 0);
        dev.read(start + 1, &mut buf[D::SECTOR..])
            .map_err(SlotFault::Unreadable)?;
    }
    decode(&buf).map_err(SlotFault::Invalid)
}

/// Loads the newest valid configuration.
///
/// Reads both slots and returns the valid record with the higher generation (slot A on a
/// tie, which only a hand-made partition can produce). When one slot is unreadable or invalid,
/// the other is returned and [`Loaded::other_slot_state`] says what is wrong.
pub fn load<D: BlockDevice>(dev: &mut D) -> Result<Loaded<D::Error>, StoreError<D::Error>> {
    let slots = Slots::of(dev)?;
    let a = read_slot(dev, &slots, Slot::A);
    let b = read_slot(dev, &slots, Slot::B);
    let (slot, record, other_slot_state) = match (a, b) {
        (Ok(a), Ok(b)) if b.generation > a.generation => (
            Slot::B,
            b,
            SlotState::Valid {
                generation: a.generation,
            },
        ),
        (Ok(a), Ok(b)) => (
            Slot::A,
            a,
            SlotState::Valid {
                generation: b.generation,
            },
        ),
        (Ok(a), Err(fault)) => (Slot::A, a, SlotState::Faulty(fault)),
        (Err(fault), Ok(b)) => (Slot::B, b, SlotState::Faulty(fault)),
        (Err(a), Err(b)) => return Err(StoreError::NoValidSlot { a, b }),
    };
    Ok(Loaded {
        payload: record.payload,
        generation: record.generation,
        slot,
        other_slot_state,
    })
}

/// Saves `payload` as the new configuration and returns its generation.
///
/// Writes the slot whose record is invalid (slot A when both are) or older, with generation =
/// newest valid + 1 (1 on an empty partition), flushes, and reads the slot back to verify.
/// The slot holding the newest valid record is never written, so after any error — or a
/// power cut at any moment — [`load`] finds the previous configuration or the new one, never
/// neither. After [`StoreError::Write`], [`StoreError::Flush`] or
/// [`StoreError::VerifyFailed`], call [`load`] to learn which one is current.
///
/// Refuses with [`StoreError::Read`] when either slot cannot be read: that slot might hold
/// the newest configuration.
pub fn save<D: BlockDevice>(dev: &mut D, payload: &[u8]) -> Result<u64, StoreError<D::Error>> {
    let slots = Slots::of(dev)?;
    let max = slots.max_payload();
    if payload.len() > max {
        return Err(StoreError::PayloadTooLarge {
            len: payload.len(),
            max,
        });
    }

    let a = read_slot(dev, &slots, Slot::A);
    let b = read_slot(dev, &slots, Slot::B);
    let (target, newest) = match (a, b) {
        (Err(SlotFault::Unreadable(error)), _) => {
            return Err(StoreError::Read {
                slot: Slot::A,
                error,
            });
        }
        (_, Err(SlotFault::Unreadable(error))) => {
            return Err(StoreError::Read {
                slot: Slot::B,
                error,
            });
        }
        (Ok(a), Ok(b)) if b.generation >= a.generation => (Slot::A, b.generation),
        (Ok(a), Ok(_)) => (Slot::B, a.generation),
        (Ok(a), Err(SlotFault::Invalid(_))) => (Slot::B, a.generation),
        (Err(SlotFault::Invalid(_)), Ok(b)) => (Slot::A, b.generation),
        (Err(SlotFault::Invalid(_)), Err(SlotFault::Invalid(_))) => (Slot::A, 0),
    };
    let generation = newest
        .checked_add(1)
        .ok_or(StoreError::GenerationExhausted)?;

    let mut bytes = encode(generation, payload).map_err(|_| StoreError::PayloadTooLarge {
        len: payload.len(),
        max,
    })?;
    bytes.resize(bytes.len().div_ceil(D::SECTOR) * D::SECTOR, 0);

    let start = slots.start(target);
    dev.write(start, &bytes)
        .map_err(|error| StoreError::Write {
            slot: target,
            error,
        })?;
    dev.flush().map_err(|error| StoreError::Flush {
        slot: target,
        error,
    })?;

    let mut back = vec![0u8; bytes.len()];
    dev.read(start, &mut back)
        .map_err(|error| StoreError::Read {
            slot: target,
            error,
        })?;
    if back != bytes {
        return Err(StoreError::VerifyFailed { slot: target });
    }
    Ok(generation)
}
