//! Where a saved VM's bytes live: a [`Sink`] to write them to, a [`Source`] to read them
//! from, and [`FrameBlob`], a byte buffer in host frames.
//!
//! A whole VM is as large as its RAM, far beyond the kernel heap, so the kernel keeps saved
//! VMs in host frames: [`FrameBlob`] grows by 2 MiB runs (single frames when memory is
//! fragmented) and reads back at any offset. `Vec<u8>` and byte slices serve tests and small
//! blobs; a network stream can be a `Sink` for migration.

use alloc::vec::Vec;

use super::SnapshotError;
use crate::host::{FrameUse, HostMemory};
use crate::memory::{FRAMES_PER_LARGE_PAGE, HostFrames};

/// Where an encoder writes.
pub trait Sink {
    /// Appends `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SnapshotError>;
}

/// Where a decoder reads: random access over a blob of known length.
pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; fails if that runs past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError>;
}

impl Sink for Vec<u8> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.try_reserve(bytes.len())
            .map_err(|_| SnapshotError::OutOfMemory)?;
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
        let start = usize::try_from(offset).map_err(|_| SnapshotError::Truncated)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(SnapshotError::Truncated)?;
        let bytes = self.get(start..end).ok_or(SnapshotError::Truncated)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
        (**self).read_at(offset, buf)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.as_slice().read_at(offset, buf)
    }
}

/// A growable byte buffer in host frames, for blobs larger than the heap.
pub struct FrameBlob {
    host: &'static dyn HostMemory,
    /// The runs in order; every run but the last is full.
    runs: Vec<HostFrames>,
    /// Where each run starts in the blob (for a binary search).
    starts: Vec<u64>,
    /// Bytes written.
    len: u64,
}

impl core::fmt::Debug for FrameBlob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameBlob")
            .field("len", &self.len)
            .field("runs", &self.runs.len())
            .finish()
    }
}

impl FrameBlob {
    /// An empty blob whose frames come from `host`.
    pub fn new(host: &'static dyn HostMemory) -> FrameBlob {
        FrameBlob {
            host,
            runs: Vec::new(),
            starts: Vec::new(),
            len: 0,
        }
    }

    /// Bytes the frames hold (what the blob costs the host).
    pub fn capacity(&self) -> u64 {
        match (self.starts.last(), self.runs.last()) {
            (Some(start), Some(run)) => start + run.len(),
            _ => 0,
        }
    }

    /// The run holding byte `offset` and the offset inside it.
    fn locate(&self, offset: u64) -> Option<(&HostFrames, u64)> {
        let i = self
            .starts
            .partition_point(|&start| start <= offset)
            .checked_sub(1)?;
        let (run, start) = (&self.runs[i], self.starts[i]);
        (offset - start < run.len()).then_some((run, offset - start))
    }

    fn grow(&mut self) -> Result<(), SnapshotError> {
        self.runs
            .try_reserve(1)
            .and_then(|()| self.starts.try_reserve(1))
            .map_err(|_| SnapshotError::OutOfMemory)?;
        // A 2 MiB run keeps the run list short; a fragmented host still gives single frames.
        let run = HostFrames::alloc(self.host, FrameUse::Snapshot, FRAMES_PER_LARGE_PAGE, 1)
            .or_else(|_| HostFrames::alloc(self.host, FrameUse::Snapshot, 1, 1))
            .map_err(|_| SnapshotError::OutOfMemory)?;
        self.starts.push(self.capacity());
        self.runs.push(run);
        Ok(())
    }
}

impl Sink for FrameBlob {
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), SnapshotError> {
        while !bytes.is_empty() {
            if self.len == self.capacity() {
                self.grow()?;
            }
            let (run, at) = self.locate(self.len).ok_or(SnapshotError::OutOfMemory)?;
            let room = (run.len() - at).min(bytes.len() as u64) as usize;
            run.write(at, &bytes[..room])
                .map_err(|_| SnapshotError::OutOfMemory)?;
            self.len += room as u64;
            bytes = &bytes[room..];
        }
        Ok(())
    }
}

impl Source for FrameBlob {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(SnapshotError::Truncated)?;
        if end > self.len {
            return Err(SnapshotError::Truncated);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let (run, at) = self
                .locate(offset + done as u64)
                .ok_or(SnapshotError::Truncated)?;
            let n = (run.len() - at).min((buf.len() - done) as u64) as usize;
            run.read(at, &mut buf[done..done + n])
                .map_err(|_| SnapshotError::Truncated)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FRAME_SIZE;
    use crate::memory::LARGE_PAGE_SIZE;
    use crate::testing::MockHost;

    #[test]
    fn a_frame_blob_reads_back_what_was_written_across_runs() {
        let host = MockHost::leak(4096);
        let mut blob = FrameBlob::new(host);
        let data: Vec<u8> = (0..(LARGE_PAGE_SIZE as usize + 5000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        blob.write_all(&data[..3]).unwrap();
        blob.write_all(&data[3..]).unwrap();
        assert_eq!(Source::len(&blob), data.len() as u64);
        assert_eq!(blob.capacity(), 2 * LARGE_PAGE_SIZE);
        let mut back = vec![0u8; data.len()];
        blob.read_at(0, &mut back).unwrap();
        assert_eq!(back, data);
        let mut straddle = [0u8; 16];
        blob.read_at(LARGE_PAGE_SIZE - 8, &mut straddle).unwrap();
        assert_eq!(
            &straddle[..],
            &data[LARGE_PAGE_SIZE as usize - 8..LARGE_PAGE_SIZE as usize + 8]
        );
        assert_eq!(
            blob.read_at(data.len() as u64 - 1, &mut [0u8; 2]),
            Err(SnapshotError::Truncated)
        );
        drop(blob);
        assert_eq!(host.frames_in_use(), 0, "every frame is returned");
    }

    #[test]
    fn a_frame_blob_falls_back_to_single_frames_and_reports_exhaustion() {
        let host = MockHost::leak(3);
        let mut blob = FrameBlob::new(host);
        blob.write_all(&[1u8; 3 * FRAME_SIZE as usize]).unwrap();
        assert_eq!(blob.capacity(), 3 * FRAME_SIZE);
        assert_eq!(blob.write_all(&[2]), Err(SnapshotError::OutOfMemory));
    }

    #[test]
    fn slices_refuse_reads_past_their_end() {
        let bytes = [1u8, 2, 3];
        let mut two = [0u8; 2];
        bytes[..].read_at(1, &mut two).unwrap();
        assert_eq!(two, [2, 3]);
        assert_eq!(
            bytes[..].read_at(2, &mut two),
            Err(SnapshotError::Truncated)
        );
        assert_eq!(
            bytes[..].read_at(u64::MAX, &mut two),
            Err(SnapshotError::Truncated)
        );
    }
}
