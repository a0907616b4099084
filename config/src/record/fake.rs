//! An in-memory [`BlockDevice`] that fails on purpose: power cuts after a byte budget (torn
//! writes at any byte), a volatile write cache that loses any subset of unflushed sectors,
//! unreadable ranges, failing flushes and silently dropped writes.

use core::ops::Range;

use super::BlockDevice;

/// What the fake device reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FakeError {
    /// The power budget ran out; the device is dead until [`MemDevice::power_cycle`].
    #[error("power cut")]
    PowerCut,
    /// A read of this LBA failed.
    #[error("I/O error at LBA {lba}")]
    Io { lba: u64 },
    /// The request ran past the end of the device or was not whole sectors.
    #[error("bad request")]
    BadRequest,
    /// Flush was set to fail.
    #[error("flush failed")]
    FlushFailed,
}

/// A tiny xorshift PRNG (no external crates).
#[derive(Clone, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// An in-memory disk of `S`-byte sectors.
#[derive(Clone, Debug)]
pub struct MemDevice<const S: usize> {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// With a volatile cache: sectors written but not yet flushed (LBA, data), in write order.
    cache: Option<Vec<(u64, Vec<u8>)>>,
    /// Bytes that may still reach the medium before the power fails (`None`: unlimited).
    power_budget: Option<usize>,
    dead: bool,
    unreadable: Vec<Range<u64>>,
    fail_flush: bool,
    drop_writes: bool,
    pub writes: usize,
    pub flushes: usize,
}

impl<const S: usize> MemDevice<S> {
    pub fn new(sectors: u64) -> Self {
        MemDevice {
            durable: vec![0; sectors as usize * S],
            cache: None,
            power_budget: None,
            dead: false,
            unreadable: Vec::new(),
            fail_flush: false,
            drop_writes: false,
            writes: 0,
            flushes: 0,
        }
    }

    /// Writes stay in a volatile cache until flushed.
    pub fn with_volatile_cache(mut self) -> Self {
        self.cache = Some(Vec::new());
        self
    }

    /// The power fails once `bytes` more bytes have been written: a write that crosses the
    /// budget lands only its first bytes (a tear, possibly mid-sector) and returns
    /// [`FakeError::PowerCut`].
    pub fn cut_power_after_bytes(&mut self, bytes: usize) {
        self.power_budget = Some(bytes);
    }

    /// The power fails once `sectors` more whole sectors have been written.
    pub fn cut_power_after_sectors(&mut self, sectors: usize) {
        self.cut_power_after_bytes(sectors * S);
    }

    pub fn fail_reads(&mut self, lbas: Range<u64>) {
        self.unreadable.push(lbas);
    }

    pub fn fail_flush(&mut self, fail: bool) {
        self.fail_flush = fail;
    }

    pub fn drop_writes(&mut self, drop: bool) {
        self.drop_writes = drop;
    }

    /// Power comes back: faults are cleared; with a volatile cache, each unflushed sector
    /// independently either reached the medium or not, as `rng` decides.
    pub fn power_cycle(&mut self, rng: &mut XorShift) {
        if let Some(cache) = self.cache.as_mut() {
            for (lba, data) in cache.drain(..) {
                if rng.next() & 1 == 1 {
                    let at = lba as usize * S;
                    self.durable[at..at + data.len()].copy_from_slice(&data);
                }
            }
        }
        self.power_budget = None;
        self.dead = false;
    }

    /// The durable bytes of sectors `lbas`.
    pub fn sectors_mut(&mut self, lbas: Range<u64>) -> &mut [u8] {
        &mut self.durable[lbas.start as usize * S..lbas.end as usize * S]
    }

    fn check(&self, lba: u64, len: usize) -> Result<usize, FakeError> {
        if self.dead {
            return Err(FakeError::PowerCut);
        }
        let end = (lba as usize)
            .checked_add(len / S)
            .ok_or(FakeError::BadRequest)?;
        if len == 0 || !len.is_multiple_of(S) || end * S > self.durable.len() {
            return Err(FakeError::BadRequest);
        }
        Ok(lba as usize * S)
    }

    /// The current content of one sector as a reader sees it (cache first).
    fn sector(&self, lba: u64) -> &[u8] {
        if let Some(cache) = &self.cache
            && let Some((_, data)) = cache.iter().rev().find(|(l, _)| *l == lba)
        {
            return data;
        }
        let at = lba as usize * S;
        &self.durable[at..at + S]
    }
}

impl<const S: usize> BlockDevice for MemDevice<S> {
    type Error = FakeError;
    const SECTOR: usize = S;

    fn sector_count(&self) -> u64 {
        (self.durable.len() / S) as u64
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), FakeError> {
        self.check(lba, buf.len())?;
        for (i, chunk) in buf.chunks_exact_mut(S).enumerate() {
            let l = lba + i as u64;
            if self.unreadable.iter().any(|r| r.contains(&l)) {
                return Err(FakeError::Io { lba: l });
            }
            chunk.copy_from_slice(self.sector(l));
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), FakeError> {
        let at = self.check(lba, buf.len())?;
        self.writes += 1;
        if self.drop_writes {
            return Ok(());
        }
        let landed = match self.power_budget {
            Some(budget) => budget.min(buf.len()),
            None => buf.len(),
        };
        match self.cache.as_mut() {
            None => self.durable[at..at + landed].copy_from_slice(&buf[..landed]),
            Some(cache) => {
                // A torn sector in the cache is the old content with a new prefix.
                for (i, chunk) in buf[..landed].chunks(S).enumerate() {
                    let l = lba + i as u64;
                    let mut data = self.durable[l as usize * S..(l as usize + 1) * S].to_vec();
                    if let Some((_, cached)) = cache.iter().rev().find(|(c, _)| *c == l) {
                        data.copy_from_slice(cached);
                    }
                    data[..chunk.len()].copy_from_slice(chunk);
                    cache.push((l, data));
                }
            }
        }
        if let Some(budget) = self.power_budget.as_mut() {
            *budget -= landed;
            if landed < buf.len() {
                self.dead = true;
                return Err(FakeError::PowerCut);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FakeError> {
        if self.dead {
            return Err(FakeError::PowerCut);
        }
        if self.fail_flush {
            return Err(FakeError::FlushFailed);
        }
        self.flushes += 1;
        if let Some(cache) = self.cache.as_mut() {
            for (lba, data) in cache.drain(..) {
                let at = lba as usize * S;
                self.durable[at..at + data.len()].copy_from_slice(&data);
            }
        }
        Ok(())
    }
}
