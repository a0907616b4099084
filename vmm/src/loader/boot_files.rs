//! What the two Linux loaders ([`bzimage`](super::bzimage) and [`pvh`](super::pvh)) hand the
//! kernel besides the kernel itself: the command line at [`CMDLINE`] and the initrd, as high
//! as it fits above the kernel ([`place_initrd`]).
//!
//! A loader checks both before it writes anything ([`check_cmdline`], [`check_initrd`]) and
//! writes them with [`write_boot_files`]. What can go wrong there, and in the steps both
//! loaders share (the layout, writing guest memory), is a [`BootFilesError`], which
//! [`BzImageError`](super::bzimage::BzImageError) and [`PvhError`](super::pvh::PvhError) wrap.

use core::fmt;

use crate::memory::{GuestMemory, MemoryError};

use super::layout::{CMDLINE, CMDLINE_MAX, LayoutError, PAGE_SIZE, place_initrd};

/// Whose limit a command line is held to: it picks the wording of
/// [`BootFilesError::CmdlineTooLong`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineLimit {
    /// The kernel's own (a bzImage's `cmdline_size`), capped by the command-line area.
    Kernel,
    /// The command-line area's ([`CMDLINE_MAX`] bytes with the NUL).
    Area,
}

/// Why the command line or initrd could not be given to a kernel, or the layout or guest
/// memory failed a loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFilesError {
    /// The command line is longer than the kernel accepts or its area holds.
    CmdlineTooLong {
        /// Its length in bytes.
        len: u64,
        /// The most allowed.
        max: u64,
        /// Whose limit `max` is.
        limit: CmdlineLimit,
    },
    /// The command line contains a NUL byte, which would end it early.
    CmdlineHasNul,
    /// The initrd is empty.
    InitrdEmpty,
    /// The initrd does not fit between the kernel and its highest allowed address.
    InitrdTooLarge {
        /// Its size in bytes.
        size: u64,
        /// Bytes available.
        room: u64,
    },
    /// The VM's memory size is not one the layout supports.
    Layout(LayoutError),
    /// Writing guest memory failed.
    Memory(MemoryError),
}

impl fmt::Display for BootFilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BootFilesError::CmdlineTooLong {
                len,
                max,
                limit: CmdlineLimit::Kernel,
            } => write!(
                f,
                "the kernel command line is {len} bytes; this kernel accepts at most {max}"
            ),
            BootFilesError::CmdlineTooLong {
                len,
                max,
                limit: CmdlineLimit::Area,
            } => write!(
                f,
                "the kernel command line is {len} bytes; at most {max} fit"
            ),
            BootFilesError::CmdlineHasNul => {
                f.write_str("the kernel command line contains a NUL byte")
            }
            BootFilesError::InitrdEmpty => f.write_str("the initrd is empty"),
            BootFilesError::InitrdTooLarge { size, room } => write!(
                f,
                "the initrd is {} KiB but only {} KiB fit above the kernel: give the VM more \
                 memory or use a smaller initrd",
                size.div_ceil(1024),
                room / 1024
            ),
            BootFilesError::Layout(e) => e.fmt(f),
            BootFilesError::Memory(e) => write!(f, "writing guest memory: {e}"),
        }
    }
}

impl core::error::Error for BootFilesError {}

/// `From` conversions into a loader's error enum `$error` that wraps [`BootFilesError`] in its
/// `BootFiles` variant: from [`BootFilesError`] itself and from the memory and layout errors
/// it wraps, so `?` works on all three.
macro_rules! boot_files_error_conversions {
    ($error:ident) => {
        impl From<$crate::loader::boot_files::BootFilesError> for $error {
            fn from(e: $crate::loader::boot_files::BootFilesError) -> Self {
                $error::BootFiles(e)
            }
        }

        impl From<$crate::memory::MemoryError> for $error {
            fn from(e: $crate::memory::MemoryError) -> Self {
                $error::BootFiles(e.into())
            }
        }

        impl From<$crate::loader::layout::LayoutError> for $error {
            fn from(e: $crate::loader::layout::LayoutError) -> Self {
                $error::BootFiles(e.into())
            }
        }
    };
}
pub(crate) use boot_files_error_conversions;

impl From<MemoryError> for BootFilesError {
    fn from(e: MemoryError) -> Self {
        BootFilesError::Memory(e)
    }
}

impl From<LayoutError> for BootFilesError {
    fn from(e: LayoutError) -> Self {
        BootFilesError::Layout(e)
    }
}

/// Checks `cmdline` and returns its length without the NUL. It must hold no NUL byte and fit
/// the command-line area ([`CMDLINE_MAX`] with its NUL) and, if the kernel names one,
/// `kernel_max` bytes.
pub fn check_cmdline(cmdline: &str, kernel_max: Option<u64>) -> Result<u64, BootFilesError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootFilesError::CmdlineHasNul);
    }
    let (max, limit) = match kernel_max {
        Some(kernel_max) => (kernel_max.min(CMDLINE_MAX - 1), CmdlineLimit::Kernel),
        None => (CMDLINE_MAX - 1, CmdlineLimit::Area),
    };
    let len = cmdline.len() as u64;
    if len > max {
        return Err(BootFilesError::CmdlineTooLong { len, max, limit });
    }
    Ok(len)
}

/// Places `initrd` (if there is one) as high as it fits at or above the page after
/// `kernel_end` and below `limit` (exclusive: the smaller of the end of RAM and the kernel's
/// own limit), and returns its address with its bytes. An empty initrd is an error.
pub fn check_initrd(
    initrd: Option<&[u8]>,
    kernel_end: u64,
    limit: u64,
) -> Result<Option<(u64, &[u8])>, BootFilesError> {
    let Some(data) = initrd else {
        return Ok(None);
    };
    if data.is_empty() {
        return Err(BootFilesError::InitrdEmpty);
    }
    let size = data.len() as u64;
    let lowest = kernel_end.next_multiple_of(PAGE_SIZE);
    let addr = place_initrd(size, lowest, limit).ok_or(BootFilesError::InitrdTooLarge {
        size,
        room: limit.saturating_sub(lowest),
    })?;
    Ok(Some((addr, data)))
}

/// Writes `cmdline` and its NUL at [`CMDLINE`], and the initrd where [`check_initrd`] placed
/// it. Both must have passed their checks.
pub fn write_boot_files(
    memory: &GuestMemory,
    cmdline: &str,
    initrd: Option<(u64, &[u8])>,
) -> Result<(), MemoryError> {
    memory.write(CMDLINE, cmdline.as_bytes())?;
    memory.write_u8(CMDLINE + cmdline.len() as u64, 0)?;
    if let Some((addr, data)) = initrd {
        memory.write(addr, data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn cmdline_is_held_to_the_kernel_and_the_area() {
        assert_eq!(check_cmdline("", None), Ok(0));
        assert_eq!(check_cmdline("12345678", Some(8)), Ok(8));
        assert_eq!(
            check_cmdline("123456789", Some(8)),
            Err(BootFilesError::CmdlineTooLong {
                len: 9,
                max: 8,
                limit: CmdlineLimit::Kernel
            })
        );
        let long = "x".repeat(CMDLINE_MAX as usize);
        assert_eq!(check_cmdline(&long[1..], None), Ok(CMDLINE_MAX - 1));
        assert_eq!(
            check_cmdline(&long[1..], Some(u64::MAX)),
            Ok(CMDLINE_MAX - 1)
        );
        for (kernel_max, limit) in [
            (None, CmdlineLimit::Area),
            (Some(u64::MAX), CmdlineLimit::Kernel),
        ] {
            assert_eq!(
                check_cmdline(&long, kernel_max),
                Err(BootFilesError::CmdlineTooLong {
                    len: CMDLINE_MAX,
                    max: CMDLINE_MAX - 1,
                    limit
                })
            );
        }
        // The NUL is found first, even in a command line that is also too long.
        assert_eq!(
            check_cmdline("a\0bcdefghij", Some(4)),
            Err(BootFilesError::CmdlineHasNul)
        );
    }

    #[test]
    fn initrd_goes_high_above_the_kernel() {
        assert_eq!(check_initrd(None, 2 * MIB, 8 * MIB), Ok(None));
        assert_eq!(
            check_initrd(Some(&[]), 2 * MIB, 8 * MIB),
            Err(BootFilesError::InitrdEmpty)
        );
        let rd = [7u8; 5000];
        assert_eq!(
            check_initrd(Some(&rd), 2 * MIB, 8 * MIB),
            Ok(Some((8 * MIB - 0x2000, &rd[..])))
        );
        // The kernel's end is rounded up to a page before the room is measured.
        assert_eq!(
            check_initrd(Some(&rd), 8 * MIB - 0x2000 + 1, 8 * MIB),
            Err(BootFilesError::InitrdTooLarge {
                size: 5000,
                room: 0x1000
            })
        );
    }

    #[test]
    fn messages() {
        let cases = [
            (
                BootFilesError::CmdlineTooLong {
                    len: 9,
                    max: 8,
                    limit: CmdlineLimit::Kernel,
                },
                "the kernel command line is 9 bytes; this kernel accepts at most 8",
            ),
            (
                BootFilesError::CmdlineTooLong {
                    len: 9,
                    max: 8,
                    limit: CmdlineLimit::Area,
                },
                "the kernel command line is 9 bytes; at most 8 fit",
            ),
            (
                BootFilesError::CmdlineHasNul,
                "the kernel command line contains a NUL byte",
            ),
            (BootFilesError::InitrdEmpty, "the initrd is empty"),
            (
                BootFilesError::InitrdTooLarge {
                    size: 2049,
                    room: 2047,
                },
                "the initrd is 3 KiB but only 1 KiB fit above the kernel: give the VM more \
                 memory or use a smaller initrd",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        let layout = LayoutError::RamTooSmall { size: MIB };
        assert_eq!(BootFilesError::from(layout).to_string(), layout.to_string());
    }
}
