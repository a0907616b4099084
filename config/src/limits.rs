//! Every limit of the configuration and of a VM, in one place: the configuration's
//! validation, the console's parser, the API's checks and the OpenAPI document all read
//! these, so a limit changes here and nowhere else.
//!
//! The VMM has a hardware limit of its own (`keel_vmm::devices::MAX_CPUS`, the local APICs
//! a VM's platform can hold); the kernel asserts at compile time that [`MAX_VCPUS`] does not
//! exceed it.

use alloc::format;
use alloc::string::String;

/// Guest RAM comes in 2 MiB pages: every guest memory size is a multiple of this many MiB.
pub const MEMORY_ALIGN_MIB: u32 = 2;
// Messages say "an even number of MiB": reword them if the alignment changes.
const _: () = assert!(MEMORY_ALIGN_MIB == 2);
/// Least guest RAM of a VM the configuration defines, in MiB.
pub const MIN_MEMORY_MIB: u32 = 16;
/// Least guest RAM of an ad-hoc VM started from a boot module (`vm run`,
/// `POST /api/v1/modules/{module}/run`), in MiB: one page, enough for a flat test payload.
pub const MIN_RUN_MEMORY_MIB: u32 = MEMORY_ALIGN_MIB;
/// Most guest RAM of any VM, in MiB.
pub const MAX_MEMORY_MIB: u32 = 65536;
/// Most vCPUs a VM may have (they share the host CPU that runs the VM, by turns).
pub const MAX_VCPUS: u8 = 8;

/// Longest VM name. A name is 1 to this many of `a-z0-9-`, a lowercase letter first
/// ([`check_vm_name`]).
pub const MAX_VM_NAME_LEN: usize = 32;
/// Longest hostname (RFC 1123 §2.1, as a DNS name).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest hostname label.
pub const MAX_LABEL_LEN: usize = 63;
/// Most DNS servers.
pub const MAX_DNS_SERVERS: usize = 3;
/// Shortest API token.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest API token.
pub const MAX_TOKEN_LEN: usize = 128;
/// The bytes an API token may hold besides ASCII letters and digits.
pub const TOKEN_PUNCTUATION: &str = "._~+/-";
/// Longest guest command line in bytes.
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Longest store file name in bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Most disks a VM may have (each is a virtio-pci function on the guest's bus 0).
pub const MAX_VM_DISKS: usize = 8;
/// Most NICs a VM may have (each is a virtio-net PCI function on the guest's bus 0).
pub const MAX_VM_NICS: usize = 4;
/// Shortest prefix of the internal network (`network.internal.prefix`).
pub const MIN_INTERNAL_PREFIX: u8 = 8;
/// Longest prefix of the internal network: a /30 still holds the appliance and one guest.
pub const MAX_INTERNAL_PREFIX: u8 = 30;
/// Longest disk serial number in bytes: virtio-blk's GET_ID answers with 20 bytes.
pub const MAX_DISK_SERIAL_LEN: usize = 20;

/// Whether `b` may appear in a disk serial number: printable ASCII, space included.
pub fn disk_serial_char(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// The disk serial rule as a regular expression (anchored), for the OpenAPI document.
pub fn disk_serial_pattern() -> String {
    String::from("^[\\x20-\\x7E]*$")
}

/// Whether `mib` is a guest memory size a VM can have: a multiple of [`MEMORY_ALIGN_MIB`]
/// from `min` ([`MIN_MEMORY_MIB`] or [`MIN_RUN_MEMORY_MIB`]) to [`MAX_MEMORY_MIB`].
pub fn memory_fits(mib: u64, min: u32) -> bool {
    (u64::from(min)..=u64::from(MAX_MEMORY_MIB)).contains(&mib)
        && mib.is_multiple_of(u64::from(MEMORY_ALIGN_MIB))
}

/// Checks a VM name against the rule for `vms[].name` (1 to [`MAX_VM_NAME_LEN`] of
/// `a-z0-9-`, a lowercase letter first); the error says what is wrong (`must start with a
/// lowercase letter`). The console and the API use it to tell a malformed name from an
/// unknown one.
pub fn check_vm_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_VM_NAME_LEN {
        return Err(format!("must be 1 to {MAX_VM_NAME_LEN} characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only lowercase letters, digits and '-'".into());
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a lowercase letter".into());
    }
    Ok(())
}

/// [`check_vm_name`]'s rule as a regular expression (unanchored), for the OpenAPI document.
pub fn vm_name_pattern() -> String {
    format!("[a-z][a-z0-9-]{{0,{}}}", MAX_VM_NAME_LEN - 1)
}

/// Whether `b` may appear in an API token.
pub fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.as_bytes().contains(&b)
}

/// The API token rule as a regular expression (anchored), for the OpenAPI document.
pub fn token_pattern() -> String {
    format!("^[A-Za-z0-9{}]+$", TOKEN_PUNCTUATION.replace('-', "\\-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns say what the checks say, on names at and around every boundary.
    #[test]
    fn patterns_match_the_checks() {
        let name = regex::Regex::new(&format!("^(?:{})$", vm_name_pattern())).unwrap();
        let long = "a".repeat(MAX_VM_NAME_LEN);
        let too_long = "a".repeat(MAX_VM_NAME_LEN + 1);
        for candidate in [
            "", "a", "web-1", "1web", "-a", "a-", "Web", "a_b", "a b", "é", &long, &too_long,
        ] {
            assert_eq!(
                name.is_match(candidate),
                check_vm_name(candidate).is_ok(),
                "{candidate:?}"
            );
        }
        let serial = regex::Regex::new(&disk_serial_pattern()).unwrap();
        for b in 0..=255u8 {
            let s = String::from_utf8_lossy(&[b]).into_owned();
            assert_eq!(serial.is_match(&s), disk_serial_char(b), "{b:#x}");
        }
        let token = regex::Regex::new(&token_pattern()).unwrap();
        for b in 0..=255u8 {
            let s = String::from_utf8_lossy(&[b]).into_owned();
            assert_eq!(token.is_match(&s), token_char(b), "{b:#x}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert!(memory_fits(16, MIN_MEMORY_MIB));
        assert!(!memory_fits(14, MIN_MEMORY_MIB));
        assert!(memory_fits(2, MIN_RUN_MEMORY_MIB));
        assert!(!memory_fits(0, MIN_RUN_MEMORY_MIB));
        assert!(!memory_fits(17, MIN_MEMORY_MIB));
        assert!(memory_fits(u64::from(MAX_MEMORY_MIB), MIN_MEMORY_MIB));
        assert!(!memory_fits(u64::from(MAX_MEMORY_MIB) + 2, MIN_MEMORY_MIB));
    }
}
