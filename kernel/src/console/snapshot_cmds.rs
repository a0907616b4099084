//! The snapshot commands: `vm snapshot <vm> [<name>] [--stop]`, `vm snapshots`,
//! `vm restore <snapshot> [--force]` and `snapshot rm <snapshot>` (`crate::vms::snapshots`).
//!
//! Parsing is pure and host-tested; the commands run on bare metal only.

use super::command::{Command, ParseError, no_more};

const SNAPSHOT_USAGE: &str = "vm snapshot <vm> [<name>] [--stop]";
const RM_USAGE: &str = "snapshot rm <snapshot>";

/// Parses the words after `vm snapshot`.
pub fn parse_take<'a>(
    mut words: impl Iterator<Item = &'a str>,
) -> Result<Command<'a>, ParseError<'a>> {
    let key = words.next().ok_or(ParseError::Missing {
        usage: SNAPSHOT_USAGE,
    })?;
    let (mut name, mut stop) = (None, false);
    for w in words {
        if w == "--stop" && !stop {
            stop = true;
        } else if name.is_none() && !w.starts_with('-') {
            name = Some(w);
        } else {
            return Err(ParseError::UnexpectedArgument {
                command: "vm snapshot",
                argument: w,
            });
        }
    }
    Ok(Command::VmSnapshot { key, name, stop })
}

/// Parses the words after `vm restore <name>`: nothing, or `--force` (a snapshot whose
/// writable disks changed).
pub fn parse_restore<'a>(
    name: &'a str,
    mut words: impl Iterator<Item = &'a str>,
) -> Result<Command<'a>, ParseError<'a>> {
    match words.next() {
        None => Ok(Command::VmRestore { name }),
        Some("--force") => {
            no_more("vm restore", words).map(|_| Command::SnapshotRestore { name, force: true })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "--force (or nothing)",
        }),
    }
}

/// Parses the words after `snapshot`.
pub fn parse<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Command<'a>, ParseError<'a>> {
    match words.next() {
        Some("rm") => {
            let name = words
                .next()
                .ok_or(ParseError::Missing { usage: RM_USAGE })?;
            no_more("snapshot rm", words).map(|_| Command::SnapshotRm { name })
        }
        Some("ls") => no_more("snapshot ls", words).map(|_| Command::VmSnapshots),
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "rm or ls",
        }),
        None => Err(ParseError::Missing { usage: RM_USAGE }),
    }
}

#[cfg(target_os = "none")]
pub use run::*;

#[cfg(target_os = "none")]
mod run {
    use crate::kprintln;
    use crate::vms::VmManager;
    use crate::vms::snapshots;

    /// `vm snapshot`.
    pub fn take(vms: &mut VmManager, key: &str, name: Option<&str>, stop: bool) {
        match snapshots::take(vms, key, name, stop) {
            Ok(r) => kprintln!(
                "vm {key} snapshot '{}': {} KiB in {} file{} for {} MiB of RAM, in {} ms; {}",
                r.info.id,
                r.info.bytes.div_ceil(1024),
                r.info.parts + 1,
                if r.info.parts == 0 { "" } else { "s" },
                r.info.memory >> 20,
                r.info.write_ms,
                if r.stopped {
                    "the VM is stopped"
                } else if r.resumed {
                    "the VM runs on"
                } else {
                    "the VM stays paused"
                }
            ),
            Err(e) => kprintln!("error: {e}"),
        }
    }

    /// `vm snapshots`.
    pub fn list() {
        let all = match snapshots::list() {
            Ok(all) => all,
            Err(e) => {
                kprintln!("error: {e}");
                return;
            }
        };
        if all.is_empty() {
            kprintln!("no snapshots ('vm snapshot <vm>' takes one)");
        } else {
            kprintln!(
                "  {:<24} {:<16} {:>10} {:>8} {:<20}",
                "NAME",
                "VM",
                "KIB",
                "RAM MIB",
                "DATE (UTC)"
            );
        }
        for s in all {
            match s {
                Ok(i) => kprintln!(
                    "  {:<24} {:<16} {:>10} {:>8} {:<20}",
                    i.id,
                    i.source,
                    i.bytes.div_ceil(1024),
                    i.memory >> 20,
                    snapshots::format_time(i.time)
                ),
                Err(e) => kprintln!("  error: {e}"),
            }
        }
        if let Ok(space) = crate::store::space() {
            kprintln!(
                "store: {} MiB free of {} MiB",
                space.free_bytes >> 20,
                space.total_bytes >> 20
            );
        }
    }

    /// `vm restore <snapshot> [--force]`.
    pub fn restore(vms: &mut VmManager, system: &crate::System, name: &str, force: bool) {
        match snapshots::restore(vms, system, name, force) {
            Ok((id, ms)) => {
                kprintln!("vm {id} restored from snapshot '{name}' in {ms} ms, running")
            }
            // `vm restore` takes saved VMs and snapshots alike, and there is no saved VM of
            // this name either (the shell looked first).
            Err(snapshots::SnapshotError::NotFound(_)) => kprintln!(
                "error: no saved VM or snapshot named '{name}': see 'saved ls' and 'vm snapshots'"
            ),
            Err(e) => kprintln!("error: {e}"),
        }
    }

    /// `snapshot rm`.
    pub fn remove(name: &str) {
        match snapshots::delete(name) {
            Ok(bytes) => kprintln!(
                "snapshot '{name}' deleted ({} KiB freed)",
                bytes.div_ceil(1024)
            ),
            Err(e) => kprintln!("error: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{Command, ParseError, parse};

    #[test]
    fn parses_the_snapshot_commands() {
        assert_eq!(
            parse("vm snapshot web"),
            Ok(Some(Command::VmSnapshot {
                key: "web",
                name: None,
                stop: false
            }))
        );
        assert_eq!(
            parse("vm snapshot web before-upgrade --stop"),
            Ok(Some(Command::VmSnapshot {
                key: "web",
                name: Some("before-upgrade"),
                stop: true
            }))
        );
        assert!(matches!(
            parse("vm snapshot web a b"),
            Err(ParseError::UnexpectedArgument { .. })
        ));
        assert_eq!(parse("vm snapshots"), Ok(Some(Command::VmSnapshots)));
        assert_eq!(
            parse("vm restore s1 --force"),
            Ok(Some(Command::SnapshotRestore {
                name: "s1",
                force: true
            }))
        );
        assert_eq!(
            parse("vm restore s1"),
            Ok(Some(Command::VmRestore { name: "s1" }))
        );
        assert_eq!(
            parse("snapshot rm s1"),
            Ok(Some(Command::SnapshotRm { name: "s1" }))
        );
        assert!(matches!(
            parse("snapshot rm"),
            Err(ParseError::Missing { .. })
        ));
    }
}
