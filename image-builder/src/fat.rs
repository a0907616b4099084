//! FAT file systems inside a byte range of a disk image: [`Slice`] confines I/O to one
//! partition, [`format()`] makes an empty labelled volume, [`write_files`] copies files in.
//!
//! This is what lets `keel build` make the ESP and the guest store with the `fatfs` crate —
//! no loop devices, mounts, root, `mkfs.fat` or mtools.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Sector size of the volumes made here.
const SECTOR: u64 = 512;
/// Offset of the BPB's "hidden sectors" field (sectors preceding the volume on the disk).
const BPB_HIDDEN_SECTORS: u64 = 0x1C;
/// The sector fatfs puts the FAT32 backup boot sector in.
const FAT32_BACKUP_BOOT_SECTOR: u64 = 6;
/// Largest volume formatted as FAT16; larger ones get FAT32.
const FAT16_MAX_BYTES: u64 = 1 << 30;

/// Why a FAT operation failed. `what` names the step, for example `format ESP` or
/// `write /boot/keel.elf`.
#[derive(Debug, thiserror::Error)]
#[error("FAT: cannot {what}: {source}")]
pub struct FatError {
    /// The step that failed.
    pub what: String,
    /// The I/O error (fatfs reports everything as `io::Error`).
    #[source]
    pub source: io::Error,
}

impl FatError {
    fn new(what: impl Into<String>, source: io::Error) -> Self {
        FatError {
            what: what.into(),
            source,
        }
    }
}

/// A window of `len` bytes at `start` of an underlying stream, seen as a stream of its own.
/// Reads stop at the end of the window; writes past it fail.
#[derive(Debug)]
pub struct Slice<'a, T> {
    inner: &'a mut T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, T: Seek> Slice<'a, T> {
    /// A window over `inner[start..start + len]`, positioned at its start.
    pub fn new(inner: &'a mut T, start: u64, len: u64) -> io::Result<Self> {
        inner.seek(SeekFrom::Start(start))?;
        Ok(Slice {
            inner,
            start,
            len,
            pos: 0,
        })
    }
}

impl<T: Read + Seek> Read for Slice<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let read = self.inner.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl<T: Write + Seek> Write for Slice<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Slice<'_, T> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        match target {
            Some(target) => {
                self.pos = target;
                Ok(target)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

/// Environment variable (the reproducible-builds convention) that fixes the timestamps written
/// into FAT directory entries, in seconds since 1970; otherwise the current time is used.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The clock fatfs stamps directory entries with: `$SOURCE_DATE_EPOCH` or now, in UTC, kept
/// within what FAT can store (1980..=2107).
#[derive(Debug)]
struct BuildClock;

static BUILD_CLOCK: BuildClock = BuildClock;

impl fatfs::TimeProvider for BuildClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        let seconds = std::env::var(SOURCE_DATE_EPOCH)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0)
            });
        fat_date_time(seconds)
    }
}

/// UTC calendar date and time of `seconds` since 1970, clamped to FAT's 1980..=2107.
pub fn fat_date_time(seconds: i64) -> fatfs::DateTime {
    const MIN: i64 = 315_532_800; // 1980-01-01 00:00:00
    const MAX: i64 = 4_354_819_199; // 2107-12-31 23:59:59
    let seconds = seconds.clamp(MIN, MAX);
    let (days, secs_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    // All values are in range by the clamp above, so the narrowing casts are exact.
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs_of_day / 3600) as u16,
            min: (secs_of_day / 60 % 60) as u16,
            sec: (secs_of_day % 60) as u16,
            millis: 0,
        },
    }
}

/// Proleptic Gregorian (year, month, day) of day `z` since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// fatfs options with [`BuildClock`].
fn fs_options() -> fatfs::FsOptions {
    fatfs::FsOptions::new().time_provider(&BUILD_CLOCK)
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Bytes in memory (GRUB images, `grub.cfg`).
    Bytes(Vec<u8>),
    /// A host file, streamed in (kernel, modules).
    File(PathBuf),
}

/// One file to put into a volume, at an absolute `/`-separated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// Path inside the volume, for example `/EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    /// What to write.
    pub contents: Contents,
}

/// Why `name` cannot be a FAT long file name as typed, or `None` if it can: FAT refuses
/// control characters and `"*/:<>?\|`, more than 255 UTF-16 code units, and Windows and
/// fatfs drop trailing dots and spaces, which would change the name.
pub fn long_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("is empty, . or ..");
    }
    if name.encode_utf16().count() > 255 {
        return Some("is longer than FAT's 255 UTF-16 code units");
    }
    if name
        .chars()
        .any(|c| c.is_control() || "\"*/:<>?\\|".contains(c))
    {
        return Some("holds a control character or one of \" * / : < > ? \\ | (FAT refuses them)");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some("ends with a dot or space (FAT would drop it)");
    }
    None
}

/// The FAT type [`format()`] picks for a volume of `bytes`.
pub fn fat_type_for(bytes: u64) -> fatfs::FatType {
    if bytes <= FAT16_MAX_BYTES {
        fatfs::FatType::Fat16
    } else {
        fatfs::FatType::Fat32
    }
}

/// The 11-byte, space-padded, upper-case label FAT stores.
pub fn label_bytes(label: &str) -> [u8; 11] {
    let mut bytes = [b' '; 11];
    for (slot, byte) in bytes.iter_mut().zip(label.bytes()) {
        *slot = byte.to_ascii_uppercase();
    }
    bytes
}

/// Formats `disk[start_lba * 512 ..][.. sectors * 512]` as an empty FAT volume named `label`
/// (in the boot sector and as a root-directory volume entry, which is where GRUB reads it), and
/// records `start_lba` as the volume's hidden sectors.
pub fn format<T: Read + Write + Seek>(
    disk: &mut T,
    start_lba: u64,
    sectors: u64,
    label: &str,
    volume_id: u32,
) -> Result<(), FatError> {
    let what = || format!("format volume {label}");
    let bytes = sectors * SECTOR;
    let fat_type = fat_type_for(bytes);
    let total = u32::try_from(sectors).map_err(|_| {
        FatError::new(
            what(),
            io::Error::new(io::ErrorKind::InvalidInput, "volume too large"),
        )
    })?;
    {
        let slice =
            Slice::new(disk, start_lba * SECTOR, bytes).map_err(|e| FatError::new(what(), e))?;
        let options = fatfs::FormatVolumeOptions::new()
            .fat_type(fat_type)
            .total_sectors(total)
            .volume_label(label_bytes(label))
            .volume_id(volume_id);
        fatfs::format_volume(slice, options).map_err(|e| FatError::new(what(), e))?;
    }
    let hidden = u32::try_from(start_lba).unwrap_or(u32::MAX).to_le_bytes();
    let mut boot_sectors = vec![0];
    if fat_type == fatfs::FatType::Fat32 {
        boot_sectors.push(FAT32_BACKUP_BOOT_SECTOR);
    }
    for sector in boot_sectors {
        disk.seek(SeekFrom::Start(
            (start_lba + sector) * SECTOR + BPB_HIDDEN_SECTORS,
        ))
        .and_then(|_| disk.write_all(&hidden))
        .map_err(|e| FatError::new(what(), e))?;
    }
    Ok(())
}

/// Copies `files` into the FAT volume at `start_lba`, creating parent directories.
pub fn write_files<T: Read + Write + Seek>(
    disk: &mut T,
    start_lba: u64,
    sectors: u64,
    files: &[FatFile],
) -> Result<(), FatError> {
    let slice = Slice::new(disk, start_lba * SECTOR, sectors * SECTOR)
        .map_err(|e| FatError::new("open volume", e))?;
    let fs =
        fatfs::FileSystem::new(slice, fs_options()).map_err(|e| FatError::new("open volume", e))?;
    for file in files {
        let write = || format!("write {}", file.path);
        let path = file.path.trim_start_matches('/');
        let mut dir = fs.root_dir();
        let (parents, name) = match path.rsplit_once('/') {
            Some((parents, name)) => (Some(parents), name),
            None => (None, path),
        };
        for component in parents.into_iter().flat_map(|p| p.split('/')) {
            dir = dir
                .create_dir(component)
                .map_err(|e| FatError::new(write(), e))?;
        }
        let mut out = dir
            .create_file(name)
            .map_err(|e| FatError::new(write(), e))?;
        out.truncate().map_err(|e| FatError::new(write(), e))?;
        match &file.contents {
            Contents::Bytes(bytes) => out.write_all(bytes),
            Contents::File(host) => std::fs::File::open(host)
                .and_then(|mut src| io::copy(&mut src, &mut out).map(|_| ())),
        }
        .map_err(|e| FatError::new(write(), e))?;
        out.flush().map_err(|e| FatError::new(write(), e))?;
    }
    fs.unmount().map_err(|e| FatError::new("flush volume", e))
}

/// Reads a whole file back from the FAT volume at `start_lba` (tests and verification).
pub fn read_file<T: Read + Write + Seek>(
    disk: &mut T,
    start_lba: u64,
    sectors: u64,
    path: &str,
) -> Result<Vec<u8>, FatError> {
    let what = || format!("read {path}");
    let slice = Slice::new(disk, start_lba * SECTOR, sectors * SECTOR)
        .map_err(|e| FatError::new(what(), e))?;
    let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new())
        .map_err(|e| FatError::new(what(), e))?;
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path.trim_start_matches('/'))
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| FatError::new(what(), e))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn slice_confines_reads_writes_and_seeks() {
        let mut backing = Cursor::new(vec![0u8; 64]);
        {
            let mut slice = Slice::new(&mut backing, 16, 8).unwrap();
            slice.write_all(b"abcdefgh").unwrap();
            assert!(slice.write_all(b"x").is_err());
            assert_eq!(slice.seek(SeekFrom::End(-2)).unwrap(), 6);
            let mut buf = Vec::new();
            slice.read_to_end(&mut buf).unwrap();
            assert_eq!(buf, b"gh");
            assert!(slice.seek(SeekFrom::Current(-100)).is_err());
        }
        let data = backing.into_inner();
        assert_eq!(&data[16..24], b"abcdefgh");
        assert!(data[..16].iter().chain(&data[24..]).all(|&b| b == 0));
    }

    #[test]
    fn fat_timestamps() {
        let d = fat_date_time(0);
        assert_eq!((d.date.year, d.date.month, d.date.day), (1980, 1, 1));
        let d = fat_date_time(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!((d.date.year, d.date.month, d.date.day), (2000, 2, 29));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (1, 2, 3));
        let d = fat_date_time(1_704_067_199); // 2023-12-31 23:59:59
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 12, 31));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (23, 59, 59));
        let d = fat_date_time(i64::MAX);
        assert_eq!((d.date.year, d.date.month, d.date.day), (2107, 12, 31));
    }

    #[test]
    fn long_names() {
        for ok in [
            "vmlinuz-6.1",
            "initrd.cpio",
            "a b",
            "x".repeat(255).as_str(),
            "ÄÖ.bin",
        ] {
            assert_eq!(long_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a:b",
            "a/b",
            "a\\b",
            "q?",
            "t\tab",
            "dot.",
            "sp ",
            &"x".repeat(256),
        ] {
            assert!(long_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn label_is_padded_upper_case() {
        assert_eq!(&label_bytes("KeelEsp"), b"KEELESP    ");
        assert_eq!(&label_bytes("ABCDEFGHIJKLMN"), b"ABCDEFGHIJK");
    }

    #[test]
    fn format_write_read_back_inside_a_window() {
        let start = 8;
        let sectors = 8 * 2048; // 8 MiB
        let mut disk = Cursor::new(vec![0xEEu8; ((start + sectors + 8) * 512) as usize]);
        format(&mut disk, start, sectors, "KEELTEST", 0xCAFE_F00D).unwrap();
        let files = vec![
            FatFile {
                path: "/a/b/c.txt".into(),
                contents: Contents::Bytes(b"hello".to_vec()),
            },
            FatFile {
                path: "/top.bin".into(),
                contents: Contents::Bytes(vec![7; 100_000]),
            },
        ];
        write_files(&mut disk, start, sectors, &files).unwrap();
        assert_eq!(
            read_file(&mut disk, start, sectors, "/a/b/c.txt").unwrap(),
            b"hello"
        );
        assert_eq!(
            read_file(&mut disk, start, sectors, "top.bin").unwrap(),
            vec![7; 100_000]
        );

        let raw = disk.into_inner();
        // Nothing outside the window was touched.
        assert!(raw[..(start * 512) as usize].iter().all(|&b| b == 0xEE));
        assert!(
            raw[((start + sectors) * 512) as usize..]
                .iter()
                .all(|&b| b == 0xEE)
        );
        let boot = &raw[(start * 512) as usize..][..512];
        assert_eq!(&boot[510..], &[0x55, 0xAA]);
        assert_eq!(u32::from_le_bytes(boot[0x1C..0x20].try_into().unwrap()), 8);
        assert_eq!(&boot[0x2B..0x36], b"KEELTEST   ");

        let mut disk = Cursor::new(raw);
        let slice = Slice::new(&mut disk, start * 512, sectors * 512).unwrap();
        let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat16);
        assert_eq!(fs.volume_id(), 0xCAFE_F00D);
        assert_eq!(
            fs.read_volume_label_from_root_dir().unwrap().as_deref(),
            Some("KEELTEST")
        );
    }

    #[test]
    fn streamed_host_file_and_missing_host_file() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("blob");
        std::fs::write(&host, b"from the host").unwrap();
        let sectors = 4 * 2048;
        let mut disk = Cursor::new(vec![0u8; (sectors * 512) as usize]);
        format(&mut disk, 0, sectors, "X", 1).unwrap();
        let ok = [FatFile {
            path: "/blob".into(),
            contents: Contents::File(host),
        }];
        write_files(&mut disk, 0, sectors, &ok).unwrap();
        assert_eq!(
            read_file(&mut disk, 0, sectors, "/blob").unwrap(),
            b"from the host"
        );
        let missing = [FatFile {
            path: "/gone".into(),
            contents: Contents::File(tmp.path().join("nope")),
        }];
        let err = write_files(&mut disk, 0, sectors, &missing).unwrap_err();
        assert!(err.to_string().contains("write /gone"), "{err}");
    }

    #[test]
    fn too_small_volume_fails_with_context() {
        let mut disk = Cursor::new(vec![0u8; 4 * 512]);
        let err = write_files(&mut disk, 0, 4, &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("FAT: cannot open volume"),
            "{err}"
        );
    }
}
