//! The start-up page's layout: the real-mode → long-mode code (assembled into the kernel
//! image and copied to the page, see `hw.rs`) followed by a parameter block the boot CPU
//! fills for each CPU it starts. This file is the pure part: offsets and the fill, so the
//! byte layout the assembly relies on is unit-tested on the host.

/// Offset of the parameter block in the page; the code must end before it.
pub const PARAMS_OFFSET: usize = 0xf00;

/// Parameter block fields, as offsets from [`PARAMS_OFFSET`]. The assembly uses the same
/// numbers (`PARAM_*` constants passed to `global_asm!`).
pub mod field {
    /// The start-up GDT: null, 32-bit code (0x08), data (0x10), 64-bit code (0x18).
    pub const GDT: usize = 0x00;
    /// GDTR: 16-bit limit, 32-bit linear base.
    pub const GDTR: usize = 0x20;
    /// Far pointer (32-bit offset, 16-bit selector) to the protected-mode code.
    pub const PM32_JUMP: usize = 0x28;
    /// Far pointer to the 64-bit code.
    pub const LM64_JUMP: usize = 0x30;
    /// The kernel's PML4 (must be below 4 GiB: loaded from 32-bit code).
    pub const CR3: usize = 0x38;
    /// Top of the CPU's kernel stack.
    pub const STACK_TOP: usize = 0x40;
    /// The Rust entry, `extern "C" fn(index: u64) -> !`.
    pub const ENTRY: usize = 0x48;
    /// The CPU's kernel index, passed to the entry.
    pub const CPU_INDEX: usize = 0x50;
    /// Claim word: 0 open, 1 taken by the AP (it uses the stack), 2 closed by the boot CPU
    /// after a timeout (a CPU arriving late halts instead of sharing the next CPU's stack).
    pub const CLAIM: usize = 0x58;
    /// Size of the block.
    pub const END: usize = 0x60;
}

/// Claim word values.
pub const CLAIM_OPEN: u32 = 0;
/// The AP took its parameters.
pub const CLAIM_TAKEN: u32 = 1;
/// The boot CPU gave up on this start.
pub const CLAIM_CLOSED: u32 = 2;

/// Selectors of the start-up GDT.
pub const SELECTOR_CODE32: u16 = 0x08;
/// 64-bit code selector of the start-up GDT.
pub const SELECTOR_CODE64: u16 = 0x18;

const GDT_ENTRIES: [u64; 4] = [
    0,
    0x00cf_9a00_0000_ffff, // 32-bit code, base 0, 4 GiB
    0x00cf_9200_0000_ffff, // data, base 0, 4 GiB
    0x00af_9a00_0000_ffff, // 64-bit code
];

/// What one start needs, besides the code.
#[derive(Clone, Copy, Debug)]
pub struct StartParams {
    /// Physical (= linear under the identity map) address of the page.
    pub page: u32,
    /// Offset of the 32-bit code in the page.
    pub pm32_offset: u32,
    /// Offset of the 64-bit code in the page.
    pub lm64_offset: u32,
    /// The kernel's PML4.
    pub cr3: u32,
    /// Top of the CPU's stack (16-byte aligned).
    pub stack_top: u64,
    /// Rust entry address.
    pub entry: u64,
    /// Kernel CPU index.
    pub cpu_index: u64,
}

/// Why the page could not be prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The assembled code overlaps the parameter block.
    CodeTooLarge(usize),
}

/// Copies `code` to the start of `page` and writes the parameter block for one start.
pub fn prepare(page: &mut [u8; 4096], code: &[u8], p: &StartParams) -> Result<(), LayoutError> {
    if code.len() > PARAMS_OFFSET {
        return Err(LayoutError::CodeTooLarge(code.len()));
    }
    page[..code.len()].copy_from_slice(code);
    let block = &mut page[PARAMS_OFFSET..PARAMS_OFFSET + field::END];
    block.fill(0);
    for (i, entry) in GDT_ENTRIES.iter().enumerate() {
        put(block, field::GDT + i * 8, &entry.to_le_bytes());
    }
    let gdt_linear = p.page + (PARAMS_OFFSET + field::GDT) as u32;
    put(
        block,
        field::GDTR,
        &((GDT_ENTRIES.len() * 8 - 1) as u16).to_le_bytes(),
    );
    put(block, field::GDTR + 2, &gdt_linear.to_le_bytes());
    put(
        block,
        field::PM32_JUMP,
        &(p.page + p.pm32_offset).to_le_bytes(),
    );
    put(block, field::PM32_JUMP + 4, &SELECTOR_CODE32.to_le_bytes());
    put(
        block,
        field::LM64_JUMP,
        &(p.page + p.lm64_offset).to_le_bytes(),
    );
    put(block, field::LM64_JUMP + 4, &SELECTOR_CODE64.to_le_bytes());
    put(block, field::CR3, &u64::from(p.cr3).to_le_bytes());
    put(block, field::STACK_TOP, &p.stack_top.to_le_bytes());
    put(block, field::ENTRY, &p.entry.to_le_bytes());
    put(block, field::CPU_INDEX, &p.cpu_index.to_le_bytes());
    put(block, field::CLAIM, &CLAIM_OPEN.to_le_bytes());
    Ok(())
}

fn put(block: &mut [u8], at: usize, bytes: &[u8]) {
    block[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(page: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(page[at..at + 4].try_into().unwrap())
    }

    fn read_u64(page: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(page[at..at + 8].try_into().unwrap())
    }

    fn params() -> StartParams {
        StartParams {
            page: 0x9e000,
            pm32_offset: 0x40,
            lm64_offset: 0x90,
            cr3: 0x1234_5000,
            stack_top: 0x8000_0000,
            entry: 0xffff_1234,
            cpu_index: 3,
        }
    }

    #[test]
    fn code_is_copied_and_the_block_patched_at_the_offsets_the_assembly_uses() {
        let mut page = [0xccu8; 4096];
        prepare(&mut page, &[0xfa, 0xfc, 0x90], &params()).unwrap();
        assert_eq!(&page[..3], &[0xfa, 0xfc, 0x90]);
        let b = PARAMS_OFFSET;
        assert_eq!(read_u64(&page, b + field::GDT), 0);
        assert_eq!(read_u64(&page, b + field::GDT + 8), 0x00cf_9a00_0000_ffff);
        assert_eq!(read_u64(&page, b + field::GDT + 24), 0x00af_9a00_0000_ffff);
        // GDTR: limit 31, base = page + 0xf00.
        assert_eq!(u16::from_le_bytes([page[b + 0x20], page[b + 0x21]]), 31);
        assert_eq!(read_u32(&page, b + field::GDTR + 2), 0x9ef00);
        // Far pointers: linear offset then selector.
        assert_eq!(read_u32(&page, b + field::PM32_JUMP), 0x9e040);
        assert_eq!(page[b + field::PM32_JUMP + 4], 0x08);
        assert_eq!(read_u32(&page, b + field::LM64_JUMP), 0x9e090);
        assert_eq!(page[b + field::LM64_JUMP + 4], 0x18);
        assert_eq!(read_u64(&page, b + field::CR3), 0x1234_5000);
        assert_eq!(read_u64(&page, b + field::STACK_TOP), 0x8000_0000);
        assert_eq!(read_u64(&page, b + field::ENTRY), 0xffff_1234);
        assert_eq!(read_u64(&page, b + field::CPU_INDEX), 3);
        assert_eq!(read_u32(&page, b + field::CLAIM), CLAIM_OPEN);
    }

    #[test]
    fn a_second_start_reopens_the_claim() {
        let mut page = [0u8; 4096];
        prepare(&mut page, &[0x90], &params()).unwrap();
        page[PARAMS_OFFSET + field::CLAIM] = CLAIM_CLOSED as u8;
        prepare(&mut page, &[0x90], &params()).unwrap();
        assert_eq!(read_u32(&page, PARAMS_OFFSET + field::CLAIM), CLAIM_OPEN);
    }

    #[test]
    fn code_overlapping_the_block_is_refused() {
        let mut page = [0u8; 4096];
        let code = [0x90u8; PARAMS_OFFSET + 1];
        assert_eq!(
            prepare(&mut page, &code, &params()),
            Err(LayoutError::CodeTooLarge(PARAMS_OFFSET + 1))
        );
    }
}
