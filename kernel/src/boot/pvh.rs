//! PVH boot information (`hvm_start_info`, Xen's `arch-x86/hvm/start_info.h`), parsed into a
//! [`BootInfo`].
//!
//! The start info points at other structures by physical address (module list, command line,
//! memory map), so the parser reads through [`PhysRead`]; the kernel implements it over the
//! boot identity map and host tests over a byte array. Counts are capped and every read
//! checked, so a bogus pointer yields warnings instead of a fault.

use super::{BootInfo, BootPath, MAX_CMDLINE, MAX_MODULE_NAME, MAX_MODULES, MAX_REGIONS};

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Reads guest-physical memory for the parser.
pub trait PhysRead {
    /// Fills `buf` from physical address `addr`; false if the range cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

fn read_u32(mem: &impl PhysRead, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(addr, &mut b).then(|| u32::from_le_bytes(b))
}

fn read_u64(mem: &impl PhysRead, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b).then(|| u64::from_le_bytes(b))
}

/// Reads a NUL-terminated string of at most `N` bytes into `buf`, returning its bytes.
fn read_c_string<'a>(mem: &impl PhysRead, addr: u64, buf: &'a mut [u8]) -> &'a [u8] {
    let mut len = 0;
    while len < buf.len() {
        let mut byte = [0u8];
        if !mem.read(addr + len as u64, &mut byte) || byte[0] == 0 {
            break;
        }
        buf[len] = byte[0];
        len += 1;
    }
    &buf[..len]
}

/// Parses the start info at `start_info` (physical address from EBX at the PVH entry).
pub fn parse(mem: &impl PhysRead, start_info: u64) -> BootInfo {
    let mut info = BootInfo::new(BootPath::Pvh);
    if read_u32(mem, start_info) != Some(START_INFO_MAGIC) {
        info.warn("PVH start info has a bad magic number; no boot information used");
        return info;
    }
    let version = read_u32(mem, start_info + 4).unwrap_or(0);
    let nr_modules = read_u32(mem, start_info + 12).unwrap_or(0);
    let modlist = read_u64(mem, start_info + 16).unwrap_or(0);
    let cmdline = read_u64(mem, start_info + 24).unwrap_or(0);
    let rsdp = read_u64(mem, start_info + 32).unwrap_or(0);

    if cmdline != 0 {
        let mut buf = [0u8; MAX_CMDLINE];
        let raw = read_c_string(mem, cmdline, &mut buf);
        info.set_cmdline(raw);
    }
    if rsdp != 0 {
        info.rsdp = Some(rsdp);
    }
    if nr_modules as usize > MAX_MODULES {
        info.warn("more boot modules than Keel keeps; the rest is ignored");
    }
    for i in 0..(nr_modules as usize).min(MAX_MODULES) {
        let entry = modlist + (i as u64) * 32;
        let (Some(paddr), Some(size), Some(name_paddr)) = (
            read_u64(mem, entry),
            read_u64(mem, entry + 8),
            read_u64(mem, entry + 16),
        ) else {
            info.warn("PVH module list cannot be read");
            break;
        };
        let mut buf = [0u8; MAX_MODULE_NAME];
        let name = if name_paddr != 0 {
            read_c_string(mem, name_paddr, &mut buf)
        } else {
            &[]
        };
        info.push_module(name, paddr, size);
    }
    if version >= 1 {
        let memmap = read_u64(mem, start_info + 40).unwrap_or(0);
        let entries = read_u32(mem, start_info + 48).unwrap_or(0);
        for i in 0..(entries as usize).min(MAX_REGIONS + 1) {
            let entry = memmap + (i as u64) * 24;
            match (
                read_u64(mem, entry),
                read_u64(mem, entry + 8),
                read_u32(mem, entry + 16),
            ) {
                (Some(addr), Some(size), Some(kind)) => info.push_region(addr, size, kind),
                _ => {
                    info.warn("PVH memory map cannot be read");
                    break;
                }
            }
        }
    }
    if info.memory.is_empty() {
        info.warn("PVH start info has no memory map (version 0); Keel needs version 1");
    }
    info.sort_memory();
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct FakeMemory(Vec<u8>);

    impl PhysRead for FakeMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let start = addr as usize;
            match self.0.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl FakeMemory {
        fn put(&mut self, addr: usize, bytes: &[u8]) {
            self.0[addr..addr + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn start_info(mem: &mut FakeMemory, version: u32) {
        let mut s = Vec::new();
        s.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
        s.extend_from_slice(&version.to_le_bytes());
        s.extend_from_slice(&0u32.to_le_bytes()); // flags
        s.extend_from_slice(&1u32.to_le_bytes()); // nr_modules
        s.extend_from_slice(&0x200u64.to_le_bytes()); // modlist
        s.extend_from_slice(&0x100u64.to_le_bytes()); // cmdline
        s.extend_from_slice(&0xf5a0u64.to_le_bytes()); // rsdp
        s.extend_from_slice(&0x300u64.to_le_bytes()); // memmap
        s.extend_from_slice(&2u32.to_le_bytes()); // entries
        s.extend_from_slice(&0u32.to_le_bytes());
        mem.put(0, &s);
        mem.put(0x100, b"console=ttyS0 keel.test-crash=stack-overflow\0");
        let mut m = Vec::new();
        m.extend_from_slice(&0x40_0000u64.to_le_bytes());
        m.extend_from_slice(&4096u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes()); // no name
        m.extend_from_slice(&0u64.to_le_bytes());
        mem.put(0x200, &m);
        let mut e = Vec::new();
        for (addr, size, kind) in [
            (0x10_0000u64, 0x3ff0_0000u64, 1u32),
            (0u64, 0x9fc00u64, 1u32),
        ] {
            e.extend_from_slice(&addr.to_le_bytes());
            e.extend_from_slice(&size.to_le_bytes());
            e.extend_from_slice(&kind.to_le_bytes());
            e.extend_from_slice(&0u32.to_le_bytes());
        }
        mem.put(0x300, &e);
    }

    #[test]
    fn version_one_start_info() {
        let mut mem = FakeMemory(vec![0; 0x1000]);
        start_info(&mut mem, 1);
        let info = parse(&mem, 0);
        assert_eq!(info.path, BootPath::Pvh);
        assert_eq!(
            info.cmdline_value("keel.test-crash"),
            Some("stack-overflow")
        );
        assert_eq!(info.rsdp, Some(0xf5a0));
        assert_eq!(info.modules[0].name.as_str(), "module0");
        assert_eq!(info.modules[0].size, 4096);
        assert_eq!(info.memory.len(), 2);
        assert_eq!(info.memory[0].start, 0);
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    #[test]
    fn version_zero_has_no_memory_map() {
        let mut mem = FakeMemory(vec![0; 0x1000]);
        start_info(&mut mem, 0);
        let info = parse(&mem, 0);
        assert!(info.memory.is_empty());
        assert!(!info.warnings.is_empty());
    }

    #[test]
    fn bad_magic_and_bad_pointers_are_warnings() {
        let mem = FakeMemory(vec![0; 64]);
        assert!(!parse(&mem, 0).warnings.is_empty());
        let mut mem = FakeMemory(vec![0; 0x1000]);
        start_info(&mut mem, 1);
        mem.put(16, &0xdead_0000u64.to_le_bytes()); // module list out of range
        let info = parse(&mem, 0);
        assert!(info.warnings.contains(&"PVH module list cannot be read"));
    }
}
