//! `keel flash IMAGE TARGET`: write an appliance image to a disk, USB stick or file, checked.
//!
//! Steps: inspect the target ([`target`]) and refuse a mounted one, the running system's
//! disk, or one smaller than the image; show what will be overwritten and ask (`--yes`
//! skips; no terminal on stdin and no `--yes` → refuse); optionally personalize the copy
//! ([`personalize`]: a new configuration generation, the command-line token); write in
//! 4 MiB chunks with a progress bar, fsync, drop the cached pages, read back and compare
//! SHA-256 digests of what was meant to be written and what is there; on a mismatch, find
//! the first differing byte.
//!
//! Test hook: `KEEL_FLASH_TEST_CORRUPT_AT=<offset>` flips the byte at that offset of the
//! target after the write and before the read-back (so tests can watch the verification
//! fail). Nothing else reads it.

pub mod personalize;
pub mod table;
pub mod target;

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use sha2::{Digest, Sha256};

use personalize::{Changes, Overlay, PersonalizeError, Personalized};
use target::{MountOnTarget, TargetInfo, TargetKind, mount_list, size_text};

/// The test hook's environment variable (see the module docs).
pub const CORRUPT_AT_ENV: &str = "KEEL_FLASH_TEST_CORRUPT_AT";
/// Bytes per write and per read-back: large enough that per-call overhead vanishes, a
/// multiple of every sector size in use (512, 4096), so each write is aligned.
pub const CHUNK: usize = 4 << 20;

/// `keel flash`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct FlashArgs {
    /// The image to write (target/keel/keel.img from `keel build`).
    pub image: PathBuf,
    /// A block device (/dev/sdX: needs write access, usually sudo) or a regular file
    /// (created if missing).
    pub target: PathBuf,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Write this appliance configuration (TOML, as `keel build --config`) into the copy's
    /// keel-config slots as a new generation.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set the copy's hostname (on top of the image's configuration or --config).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Make TOKEN the copy's only API token: in its configuration and on its kernel
    /// command line in place of the build's token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Put the operator console on this serial port in the copy's grub.cfg (as `keel build
    /// --console`): ttyS0..ttyS3 or uart,io,0x<port>, optionally with ,<baud>.
    #[arg(long, value_name = "PORT[,BAUD]", value_parser = parse_console)]
    pub console: Option<crate::console::ConsoleOption>,
}

/// clap's parser of `--console`: the message is the whole error.
fn parse_console(arg: &str) -> Result<crate::console::ConsoleOption, String> {
    crate::console::parse_console_option(arg).map_err(|e| e.to_string())
}

/// What a flash did.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// Bytes written and verified.
    pub bytes: u64,
    /// SHA-256 (hex) of those bytes.
    pub sha256: String,
    /// Time to write and sync.
    pub write_time: Duration,
    /// Time to read back and compare.
    pub verify_time: Duration,
    /// The personalization applied, if any.
    pub personalized: Option<Personalized>,
}

/// Why `keel flash` stopped.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The image cannot be read.
    #[error("cannot read the image {path}: {source}")]
    Image {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image and the target are the same file.
    #[error("{target} is the image itself; give another target")]
    SameFile {
        /// The target.
        target: PathBuf,
    },
    /// The target cannot be inspected.
    #[error("cannot inspect the target {path}: {source}")]
    Inspect {
        /// The target.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The target holds the running system.
    #[error(
        "refusing to overwrite {target}: the running system is on it ({mounts}); pick another \
         disk"
    )]
    SystemDisk {
        /// The target.
        target: PathBuf,
        /// The system's mounts on it.
        mounts: String,
    },
    /// Something on the target is mounted.
    #[error(
        "refusing to overwrite {target}: it is in use ({mounts}); unmount it first (`umount` \
         each mount point{detach})"
    )]
    Mounted {
        /// The target.
        target: PathBuf,
        /// What is mounted where, or the loop devices a file backs.
        mounts: String,
        /// `, then losetup -d …` for a file behind a loop device.
        detach: String,
    },
    /// The target is smaller than the image.
    #[error("refusing to write {target}: it holds {target_size} but the image needs {image_size}")]
    TooSmall {
        /// The target.
        target: PathBuf,
        /// Its size, as text.
        target_size: String,
        /// The image's size, as text.
        image_size: String,
    },
    /// No terminal to ask on, and no `--yes`.
    #[error(
        "refusing to overwrite {target} without confirmation: stdin is not a terminal; check \
         the summary above and pass --yes"
    )]
    NotConfirmed {
        /// The target.
        target: PathBuf,
    },
    /// The operator did not type `yes`.
    #[error("not confirmed: {target} left as it was")]
    Declined {
        /// The target.
        target: PathBuf,
    },
    /// `--config`/`--hostname`/`--token` cannot be applied.
    #[error(transparent)]
    Personalize(#[from] PersonalizeError),
    /// Opening the target for writing failed.
    #[error("cannot open {path} for writing: {source}{hint}")]
    Open {
        /// The target.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
        /// What to do about permission and busy errors.
        hint: &'static str,
    },
    /// Writing failed part way.
    #[error("writing {path} failed at byte {offset}: {source}; the target is now incomplete")]
    Write {
        /// The target.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading the written bytes back failed.
    #[error("reading {path} back failed at byte {offset}: {source}")]
    ReadBack {
        /// The target.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The read-back differs from what was written.
    #[error(
        "verification failed: {path} does not hold what was written (SHA-256 {expected} \
         written, {found} read back); first difference at byte {first_difference} \
         (sector {sector}); the medium may be failing or was changed while flashing"
    )]
    Mismatch {
        /// The target.
        path: PathBuf,
        /// Digest of what was written.
        expected: String,
        /// Digest of what was read.
        found: String,
        /// The first differing byte offset.
        first_difference: u64,
        /// That offset / 512.
        sector: u64,
    },
    /// The test hook's value is not a byte offset inside the image.
    #[error("{CORRUPT_AT_ENV}={value}: not a byte offset below {len} (it is a test hook)")]
    BadTestHook {
        /// The value.
        value: String,
        /// The image length.
        len: u64,
    },
}

/// Runs `keel flash`: checks, summary and confirmation on stderr, write, verify.
pub fn flash(args: &FlashArgs) -> Result<FlashReport, FlashError> {
    let image_err = |source| FlashError::Image {
        path: args.image.clone(),
        source,
    };
    let image_meta = std::fs::metadata(&args.image).map_err(image_err)?;
    let image_len = image_meta.len();
    let info = target::inspect(&args.target).map_err(|source| FlashError::Inspect {
        path: args.target.clone(),
        source,
    })?;
    if let Ok(target_meta) = std::fs::metadata(&args.target)
        && target_meta.dev() == image_meta.dev()
        && target_meta.ino() == image_meta.ino()
    {
        return Err(FlashError::SameFile {
            target: args.target.clone(),
        });
    }
    let system = match &info.kind {
        TargetKind::BlockDevice { name, .. } => {
            target::system_mounts_on_target(name).map_err(|source| FlashError::Inspect {
                path: args.target.clone(),
                source,
            })?
        }
        TargetKind::File { .. } => Vec::new(),
    };
    check_target(&info, &system, image_len)?;

    let changes = Changes {
        config_file: args.config.clone(),
        hostname: args.hostname.clone(),
        token: args.token.clone(),
        console: args.console.clone(),
    };
    // Personalize before asking: a bad --config should not cost a confirmation.
    let personalized = if changes.any() {
        Some(personalize::personalize(&args.image, &changes)?)
    } else {
        None
    };

    eprintln!("keel: about to overwrite:");
    for line in info.describe() {
        eprintln!("  {line}");
    }
    eprintln!(
        "  image:      {} ({})",
        args.image.display(),
        size_text(image_len)
    );
    if let Some(p) = &personalized {
        eprintln!(
            "  config:     hostname {}, {} API token(s), generation {}{}",
            p.config.hostname,
            p.config.management.api_tokens.len(),
            p.generation,
            if p.cmdline_token_replaced {
                "; kernel command-line token replaced"
            } else if p.config.management.api_tokens.is_empty() {
                "; the build's command-line token stays the only one (the configuration has none)"
            } else {
                ""
            }
        );
        if let Some(console) = &args.console {
            eprintln!(
                "  console:    {} (grub.cfg's kernel command line and serial port)",
                console.value
            );
        }
    }
    confirm(args)?;

    let overlays = personalized.as_ref().map_or(&[][..], |p| &p.overlays[..]);
    let started = Instant::now();
    let sha256 = write_target(&args.image, &args.target, image_len, overlays, &info.kind)?;
    let write_time = started.elapsed();
    corrupt_for_test(&args.target, image_len)?;
    let started = Instant::now();
    verify(&args.image, &args.target, image_len, overlays, &sha256)?;
    Ok(FlashReport {
        bytes: image_len,
        sha256: hex(&sha256),
        write_time,
        verify_time: started.elapsed(),
        personalized,
    })
}

/// The refusals that need no I/O: the running system's disk, a mount, a small target.
pub fn check_target(
    info: &TargetInfo,
    system_mounts: &[MountOnTarget],
    image_len: u64,
) -> Result<(), FlashError> {
    if !system_mounts.is_empty() {
        return Err(FlashError::SystemDisk {
            target: info.path.clone(),
            mounts: mount_list(system_mounts),
        });
    }
    if !info.mounts.is_empty() || !info.loop_devices.is_empty() || !info.holders.is_empty() {
        let mut what = Vec::new();
        if !info.mounts.is_empty() {
            what.push(mount_list(&info.mounts));
        }
        if !info.holders.is_empty() {
            what.push(format!(
                "held by {} (device-mapper or RAID: deactivate it)",
                info.holders.join(", ")
            ));
        }
        if !info.loop_devices.is_empty() {
            what.push(format!("backs {}", info.loop_devices.join(", ")));
        }
        return Err(FlashError::Mounted {
            target: info.path.clone(),
            mounts: what.join("; "),
            detach: if info.loop_devices.is_empty() {
                String::new()
            } else {
                format!(", then losetup -d {}", info.loop_devices.join(" "))
            },
        });
    }
    // A regular file grows to the image's size; a device cannot.
    if let (TargetKind::BlockDevice { .. }, Some(bytes)) = (&info.kind, info.bytes)
        && bytes < image_len
    {
        return Err(FlashError::TooSmall {
            target: info.path.clone(),
            target_size: size_text(bytes),
            image_size: size_text(image_len),
        });
    }
    Ok(())
}

/// Asks `Type yes to overwrite …` on a terminal; refuses without one unless `--yes`.
fn confirm(args: &FlashArgs) -> Result<(), FlashError> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(FlashError::NotConfirmed {
            target: args.target.clone(),
        });
    }
    eprint!(
        "Type yes to overwrite {} (anything else stops): ",
        args.target.display()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    // An unreadable stdin is a "no".
    let _ = std::io::stdin().read_line(&mut answer);
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(FlashError::Declined {
            target: args.target.clone(),
        })
    }
}

/// The image's bytes `[offset, offset + buf.len())` with the overlays applied, into `buf`.
fn read_source(
    image: &mut File,
    offset: u64,
    buf: &mut [u8],
    overlays: &[Overlay],
) -> std::io::Result<()> {
    image.seek(SeekFrom::Start(offset))?;
    image.read_exact(buf)?;
    let end = offset + buf.len() as u64;
    for o in overlays {
        let o_end = o.offset + o.bytes.len() as u64;
        if o_end <= offset || o.offset >= end {
            continue;
        }
        let from = o.offset.max(offset);
        let to = o_end.min(end);
        let dst = (from - offset) as usize..(to - offset) as usize;
        let src = (from - o.offset) as usize..(to - o.offset) as usize;
        buf[dst].copy_from_slice(&o.bytes[src]);
    }
    Ok(())
}

/// Writes the image (with overlays) to `target`, syncs, and returns the SHA-256 of what it
/// wrote.
fn write_target(
    image: &Path,
    target: &Path,
    image_len: u64,
    overlays: &[Overlay],
    kind: &TargetKind,
) -> Result<[u8; 32], FlashError> {
    let mut source = File::open(image).map_err(|source| FlashError::Image {
        path: image.to_path_buf(),
        source,
    })?;
    let mut options = OpenOptions::new();
    options.write(true);
    // A file is created if missing; a device never is (a typo in /dev/sdX must not make a
    // regular file in /dev).
    match kind {
        TargetKind::File { .. } => {
            options.create(true);
        }
        // O_EXCL on a block device: the kernel refuses (EBUSY) if anything has it claimed —
        // a mount, device-mapper, RAID — closing the gap between the checks and the write.
        TargetKind::BlockDevice { .. } => {
            std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_EXCL);
        }
    }
    let mut out = options.open(target).map_err(|source| FlashError::Open {
        path: target.to_path_buf(),
        hint: match source.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => " (writing a block device needs root: try sudo)",
            Some(libc::EBUSY) => " (the kernel says it is in use: something claimed it)",
            _ => "",
        },
        source,
    })?;
    let bar = progress_bar(image_len, "writing");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < image_len {
        let n = CHUNK.min((image_len - offset) as usize);
        read_source(&mut source, offset, &mut buf[..n], overlays).map_err(|source| {
            FlashError::Image {
                path: image.to_path_buf(),
                source,
            }
        })?;
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|source| FlashError::Write {
                path: target.to_path_buf(),
                offset,
                source,
            })?;
        offset += n as u64;
        bar.set_position(offset);
    }
    bar.set_message("syncing");
    out.sync_all().map_err(|source| FlashError::Write {
        path: target.to_path_buf(),
        offset,
        source,
    })?;
    bar.finish_and_clear();
    Ok(hasher.finalize().into())
}

/// The test hook: flips the byte at `$KEEL_FLASH_TEST_CORRUPT_AT` on the target.
fn corrupt_for_test(target: &Path, image_len: u64) -> Result<(), FlashError> {
    let Ok(value) = std::env::var(CORRUPT_AT_ENV) else {
        return Ok(());
    };
    let offset = value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&o| o < image_len)
        .ok_or_else(|| FlashError::BadTestHook {
            value: value.clone(),
            len: image_len,
        })?;
    let write_err = |source| FlashError::Write {
        path: target.to_path_buf(),
        offset,
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .map_err(write_err)?;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut byte))
        .map_err(write_err)?;
    byte[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(&byte))
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    Ok(())
}

/// Reads `target` back and compares its digest with `expected`; on a mismatch, finds the
/// first differing byte by comparing chunk by chunk with the image and overlays.
fn verify(
    image: &Path,
    target: &Path,
    image_len: u64,
    overlays: &[Overlay],
    expected: &[u8; 32],
) -> Result<(), FlashError> {
    let read_err = |offset, source| FlashError::ReadBack {
        path: target.to_path_buf(),
        offset,
        source,
    };
    let mut back = File::open(target).map_err(|e| read_err(0, e))?;
    drop_cached_pages(&back);
    let bar = progress_bar(image_len, "verifying");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < image_len {
        let n = CHUNK.min((image_len - offset) as usize);
        back.read_exact(&mut buf[..n])
            .map_err(|e| read_err(offset, e))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        bar.set_position(offset);
    }
    bar.finish_and_clear();
    let found: [u8; 32] = hasher.finalize().into();
    if &found == expected {
        return Ok(());
    }
    let first_difference = first_difference(image, &mut back, image_len, overlays)
        .map_err(|(offset, e)| read_err(offset, e))?
        // The digests differ but the bytes match: the target changed between the two reads.
        .unwrap_or(image_len);
    Err(FlashError::Mismatch {
        path: target.to_path_buf(),
        expected: hex(expected),
        found: hex(&found),
        first_difference,
        sector: first_difference / 512,
    })
}

/// The first offset where `back` differs from the image with overlays, if any.
fn first_difference(
    image: &Path,
    back: &mut File,
    image_len: u64,
    overlays: &[Overlay],
) -> Result<Option<u64>, (u64, std::io::Error)> {
    let mut source = File::open(image).map_err(|e| (0, e))?;
    back.seek(SeekFrom::Start(0)).map_err(|e| (0, e))?;
    let mut want = vec![0u8; CHUNK];
    let mut have = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < image_len {
        let n = CHUNK.min((image_len - offset) as usize);
        read_source(&mut source, offset, &mut want[..n], overlays).map_err(|e| (offset, e))?;
        back.read_exact(&mut have[..n]).map_err(|e| (offset, e))?;
        if let Some(i) = want[..n].iter().zip(&have[..n]).position(|(a, b)| a != b) {
            return Ok(Some(offset + i as u64));
        }
        offset += n as u64;
    }
    Ok(None)
}

/// Asks the kernel to forget `file`'s cached pages (already synced), so the read-back comes
/// from the medium rather than from memory. Advisory: on failure the check still runs.
fn drop_cached_pages(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// A bytes/rate/ETA bar on stderr, hidden when stderr is not a terminal.
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
