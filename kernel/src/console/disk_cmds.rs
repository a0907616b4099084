//! The `disk` commands: `disk` (the boot disk, its partitions and every guest disk),
//! `disk create <name> <size>` and `disk delete <name>` (guest-disk partitions,
//! `crate::blk::guest_partitions`).
//!
//! Parsing is pure and host-tested; the commands run on bare metal only.

use super::command::{Command, ParseError, no_more};
use crate::blk::guest_partitions::parse_size;

const CREATE_USAGE: &str = "disk create <name> <size> (e.g. disk create data 8G)";
const DELETE_USAGE: &str = "disk delete <name>";

/// Parses the words after `disk`.
pub fn parse<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Command<'a>, ParseError<'a>> {
    match words.next() {
        None => Ok(Command::Disk),
        Some("create") => {
            let name = words.next().ok_or(ParseError::Missing {
                usage: CREATE_USAGE,
            })?;
            let size = words.next().ok_or(ParseError::Missing {
                usage: CREATE_USAGE,
            })?;
            let bytes = parse_size(size).map_err(|_| ParseError::BadValue {
                argument: size,
                expected: "a size in MiB with a unit, like 512M, 8G or 1T",
            })?;
            no_more("disk create", words).map(|_| Command::DiskCreate { name, bytes })
        }
        Some("delete") => {
            let name = words.next().ok_or(ParseError::Missing {
                usage: DELETE_USAGE,
            })?;
            no_more("disk delete", words).map(|_| Command::DiskDelete { name })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "create or delete (or nothing, to list the disks)",
        }),
    }
}

#[cfg(target_os = "none")]
pub use run::*;

#[cfg(target_os = "none")]
mod run {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use crate::blk::guest_partitions::{self, MIB};
    use crate::kprintln;

    /// `disk`: every host disk the drivers found, the boot disk and its partition table,
    /// then every guest disk (`config`: the running configuration, whose VM definitions
    /// name disks).
    pub fn show(config: &keel_config::Config) {
        kprintln!("host disks:");
        let host_disks = crate::blk::boot_disk::host_disks();
        if host_disks.is_empty() {
            kprintln!("  none found (drivers: virtio-blk, nvme, ahci, ata)");
        }
        for disk in &host_disks {
            kprintln!("  {}", disk);
        }
        let info = match crate::blk::boot_disk::info() {
            Ok(info) => info,
            Err(e) => {
                kprintln!("{e}");
                return;
            }
        };
        kprintln!("boot disk:");
        kprintln!("  disk:     {} at {}", info.model, info.location);
        kprintln!(
            "  capacity: {} MiB ({} sectors of 512 bytes){}",
            info.sectors / 2048,
            info.sectors,
            if info.read_only { ", read-only" } else { "" }
        );
        kprintln!(
            "  gpt:      disk {}, {} header",
            info.gpt.disk_guid,
            info.gpt.header
        );
        if let Some(e) = &info.gpt.primary_error {
            kprintln!("  warning:  primary GPT unusable ({e}); read the backup");
        }
        kprintln!("  #  name          first LBA   last LBA    size       type");
        for p in &info.gpt.partitions {
            kprintln!(
                "  {:<2} {:<13} {:<11} {:<11} {:<10} {}",
                p.number,
                p.name,
                p.first_lba,
                p.last_lba,
                format!("{} MiB", p.sectors() / 2048),
                p.type_guid
            );
        }
        let inventory = match guest_partitions::inventory(config) {
            Ok(inventory) => inventory,
            Err(e) => {
                kprintln!("error: {e}");
                return;
            }
        };
        kprintln!("guest disks:");
        if inventory.disks.is_empty() {
            kprintln!("  none ('disk create <name> <size>' makes a partition)");
        } else {
            kprintln!(
                "  {:<10} {:<32} {:>12}  {}",
                "KIND",
                "NAME",
                "SIZE",
                "USED BY"
            );
        }
        for d in &inventory.disks {
            let users: Vec<String> = d
                .users
                .iter()
                .map(|(vm, ro)| {
                    if *ro {
                        format!("{vm} (ro)")
                    } else {
                        vm.clone()
                    }
                })
                .collect();
            kprintln!(
                "  {:<10} {:<32} {:>12}  {}",
                d.kind.as_str(),
                d.name,
                human(d.bytes),
                if users.is_empty() {
                    String::from("-")
                } else {
                    users.join(", ")
                }
            );
        }
        if let Some(e) = &inventory.store_error {
            kprintln!("  (store files not listed: {e})");
        }
        kprintln!(
            "  free for partitions: {} MiB (largest free space)",
            inventory.free_mib
        );
    }

    /// `disk create <name> <size>`.
    pub fn create(name: &str, bytes: u64) {
        match guest_partitions::create(name, bytes) {
            Ok(p) => kprintln!(
                "disk partition {} created: {} at LBA {}",
                p.name,
                human(p.bytes()),
                p.first_lba
            ),
            Err(e) => kprintln!("error: {e}"),
        }
    }

    /// `disk delete <name>`.
    pub fn delete(name: &str) {
        match guest_partitions::delete(name) {
            Ok(p) => kprintln!("disk partition {} deleted ({})", p.name, human(p.bytes())),
            Err(e) => kprintln!("error: {e}"),
        }
    }

    /// `8 GiB`, `512 MiB`, `4096 bytes`: the largest binary unit the size is a whole
    /// number of (so nothing is rounded away).
    fn human(bytes: u64) -> String {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
                return format!("{} {unit}", bytes >> shift);
            }
        }
        if bytes >= MIB {
            format!("{:.1} MiB", bytes as f64 / MIB as f64)
        } else {
            format!("{bytes} bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::command::parse as parse_line;

    #[test]
    fn disk_commands_parse() {
        assert_eq!(parse_line("disk"), Ok(Some(Command::Disk)));
        assert_eq!(
            parse_line("disk create big 8G"),
            Ok(Some(Command::DiskCreate {
                name: "big",
                bytes: 8 << 30
            }))
        );
        assert_eq!(
            parse_line(" disk  delete big "),
            Ok(Some(Command::DiskDelete { name: "big" }))
        );
        assert_eq!(
            parse_line("disk create big"),
            Err(ParseError::Missing {
                usage: CREATE_USAGE
            })
        );
        assert_eq!(
            parse_line("disk delete"),
            Err(ParseError::Missing {
                usage: DELETE_USAGE
            })
        );
        assert!(matches!(
            parse_line("disk create big 8Q"),
            Err(ParseError::BadValue { argument: "8Q", .. })
        ));
        assert!(matches!(
            parse_line("disk create big 8G now"),
            Err(ParseError::UnexpectedArgument {
                command: "disk create",
                argument: "now"
            })
        ));
        assert!(matches!(
            parse_line("disk grow big"),
            Err(ParseError::BadValue {
                argument: "grow",
                ..
            })
        ));
    }
}
