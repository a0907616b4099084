//! Who uses which guest disk: one writer per disk, any number of readers.
//!
//! A VM claims all of its disks when it starts (all or none) and gives them back when it
//! stops (`crate::vms::disks` keeps the host's one [`Claims`] table). A writable claim is
//! refused while another VM holds the same disk writable; read-only claims are always
//! granted (a reader of a disk someone writes sees whatever the writer left, as with a
//! shared disk on any hypervisor; the operator chose it).
//!
//! Store files are named case-insensitively, as FAT does (`Data.img` is `data.img`);
//! partitions by their exact GPT name.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// What backs a guest disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    /// A file in the guest store.
    StoreFile,
    /// A guest-disk GPT partition on Keel's disk.
    Partition,
}

impl fmt::Display for DiskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskKind::StoreFile => "store file",
            DiskKind::Partition => "partition",
        })
    }
}

/// A guest disk by kind and name: shown as `data.img` or `partition:big`, the way
/// `vm create … disk=` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskName {
    /// What backs it.
    pub kind: DiskKind,
    /// The store file's name (as the store spells it) or the partition's GPT name.
    pub name: String,
}

impl DiskName {
    /// The store file `name`.
    pub fn file(name: &str) -> DiskName {
        DiskName {
            kind: DiskKind::StoreFile,
            name: String::from(name),
        }
    }

    /// The guest-disk partition `name`.
    pub fn partition(name: &str) -> DiskName {
        DiskName {
            kind: DiskKind::Partition,
            name: String::from(name),
        }
    }

    /// Whether both name the same disk (store files ignoring ASCII case, as FAT does).
    pub fn same_disk(&self, other: &DiskName) -> bool {
        self.kind == other.kind
            && match self.kind {
                DiskKind::StoreFile => self.name.eq_ignore_ascii_case(&other.name),
                DiskKind::Partition => self.name == other.name,
            }
    }
}

impl fmt::Display for DiskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DiskKind::StoreFile => f.write_str(&self.name),
            DiskKind::Partition => write!(f, "partition:{}", self.name),
        }
    }
}

/// One VM's use of one disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskUser {
    /// The disk.
    pub disk: DiskName,
    /// The VM's name (or number, for an ad-hoc VM).
    pub vm: String,
    /// Whether it is attached read-only.
    pub read_only: bool,
}

/// Why a VM cannot have its disks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Another VM writes the disk.
    #[error("{disk} is attached writable to VM {holder}; stop it first or attach it read-only")]
    WrittenElsewhere {
        /// The disk.
        disk: DiskName,
        /// The VM that writes it.
        holder: String,
    },
    /// The same VM lists a disk twice, once writable.
    #[error("VM {vm} lists {disk} twice: a disk is attached to a VM once")]
    Twice {
        /// The VM.
        vm: String,
        /// The disk.
        disk: DiskName,
    },
}

/// A claim held by the VM numbered `vm_id`.
#[derive(Clone, Debug)]
struct Held {
    vm_id: u32,
    user: DiskUser,
}

/// Every disk claim on the host.
#[derive(Debug, Default)]
pub struct Claims {
    held: Vec<Held>,
}

impl Claims {
    /// No claims.
    pub const fn new() -> Claims {
        Claims { held: Vec::new() }
    }

    /// Claims `wanted` (disk, read-only) for VM `vm` (number `vm_id`): all of them, or none
    /// and the first reason.
    pub fn claim(
        &mut self,
        vm_id: u32,
        vm: &str,
        wanted: &[(DiskName, bool)],
    ) -> Result<(), ClaimError> {
        for (i, (disk, read_only)) in wanted.iter().enumerate() {
            let earlier = wanted[..i].iter().find(|(d, _)| d.same_disk(disk));
            if let Some((_, earlier_ro)) = earlier
                && !(*read_only && *earlier_ro)
            {
                return Err(ClaimError::Twice {
                    vm: String::from(vm),
                    disk: disk.clone(),
                });
            }
            if *read_only {
                continue;
            }
            if let Some(writer) = self
                .held
                .iter()
                .find(|h| h.vm_id != vm_id && !h.user.read_only && h.user.disk.same_disk(disk))
            {
                return Err(ClaimError::WrittenElsewhere {
                    disk: disk.clone(),
                    holder: writer.user.vm.clone(),
                });
            }
        }
        for (disk, read_only) in wanted {
            self.held.push(Held {
                vm_id,
                user: DiskUser {
                    disk: disk.clone(),
                    vm: String::from(vm),
                    read_only: *read_only,
                },
            });
        }
        Ok(())
    }

    /// Gives back every claim of VM number `vm_id`; returns whether it held any.
    pub fn release(&mut self, vm_id: u32) -> bool {
        let before = self.held.len();
        self.held.retain(|h| h.vm_id != vm_id);
        self.held.len() != before
    }

    /// Whether VM number `vm_id` holds claims.
    pub fn holds(&self, vm_id: u32) -> bool {
        self.held.iter().any(|h| h.vm_id == vm_id)
    }

    /// Every claim, in the order they were made.
    pub fn users(&self) -> Vec<DiskUser> {
        self.held.iter().map(|h| h.user.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn file(name: &str) -> DiskName {
        DiskName::file(name)
    }

    #[test]
    fn one_writer_many_readers() {
        let mut claims = Claims::new();
        claims
            .claim(1, "web", &[(file("data.img"), false)])
            .unwrap();
        // A second writer is refused, with the operator's way out.
        let err = claims
            .claim(2, "db", &[(file("DATA.IMG"), false)])
            .unwrap_err();
        assert_eq!(
            err,
            ClaimError::WrittenElsewhere {
                disk: file("DATA.IMG"),
                holder: "web".into()
            }
        );
        assert_eq!(
            alloc::format!("{err}"),
            "DATA.IMG is attached writable to VM web; stop it first or attach it read-only"
        );
        // Readers are welcome, any number.
        claims.claim(2, "db", &[(file("data.img"), true)]).unwrap();
        claims.claim(3, "ro2", &[(file("data.img"), true)]).unwrap();
        assert_eq!(claims.users().len(), 3);
        // Once the writer is gone, another VM may write.
        assert!(claims.release(1));
        assert!(!claims.release(1));
        claims
            .claim(4, "next", &[(file("data.img"), false)])
            .unwrap();
        assert_eq!(claims.users().iter().filter(|u| !u.read_only).count(), 1);
    }

    #[test]
    fn all_or_nothing() {
        let mut claims = Claims::new();
        claims
            .claim(1, "web", &[(DiskName::partition("big"), false)])
            .unwrap();
        let err = claims.claim(
            2,
            "db",
            &[(file("a.img"), false), (DiskName::partition("big"), false)],
        );
        assert!(matches!(err, Err(ClaimError::WrittenElsewhere { .. })));
        assert!(!claims.holds(2));
        // A partition and a store file of the same name are different disks.
        claims.claim(2, "db", &[(file("big"), false)]).unwrap();
        // Partition names are exact.
        claims
            .claim(3, "x", &[(DiskName::partition("BIG"), false)])
            .unwrap();
        assert_eq!(
            alloc::format!("{}", DiskName::partition("big")),
            "partition:big"
        );
    }

    #[test]
    fn a_vm_lists_a_disk_once() {
        let mut claims = Claims::new();
        let err = claims
            .claim(1, "web", &[(file("a.img"), true), (file("A.img"), false)])
            .unwrap_err();
        assert!(matches!(err, ClaimError::Twice { .. }));
        assert!(claims.users().is_empty());
        // Twice read-only is harmless.
        claims
            .claim(1, "web", &[(file("a.img"), true), (file("a.img"), true)])
            .unwrap();
        assert_eq!(
            claims.users(),
            vec![
                DiskUser {
                    disk: file("a.img"),
                    vm: "web".into(),
                    read_only: true
                };
                2
            ]
        );
    }
}
