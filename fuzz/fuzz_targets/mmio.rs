//! Arbitrary bytes as a vCPU that touched MMIO: its registers and 2 MiB of guest RAM (page
//! tables and code). The path both backends take on an MMIO exit (`backend::mmio::emulate`,
//! then the completion): fetch the instruction at CS:RIP through the guest's page tables,
//! decode it with iced-x86 into a load, store or read-modify-write, and apply the value the
//! device returns. Nothing may panic; an instruction that cannot be fetched or emulated is
//! the expected answer for most inputs.
//!
//! Layout: byte 0 picks the mode (bit 0 CR0.PE, bit 1 CR0.PG, bit 2 EFER.LMA, bit 3 CS.L,
//! bit 4 CS.D, bit 5 CR4.PAE); then RIP, CR3, CS.base, the device's value and RAX…R15 as
//! little-endian u64s (missing bytes are 0); the rest is guest RAM from address 0.
#![no_main]

use std::cell::Cell;

use keel_fuzz::guest_memory;
use keel_vmm::decode::{self, MmioKind};
use keel_vmm::guest_paging::fetch_instruction;
use keel_vmm::memory::GuestMemory;
use keel_vmm::vcpu::Registers;
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 2 << 20;

thread_local! {
    /// Built once per fuzzing thread; each input clears what the previous one wrote.
    static MEMORY: &'static GuestMemory = guest_memory(RAM);
    static WRITTEN: Cell<u64> = const { Cell::new(0) };
}

/// The next little-endian u64 of `input`, zero-padded.
fn take_u64(input: &mut &[u8]) -> u64 {
    let n = input.len().min(8);
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    u64::from_le_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut input)) = data.split_first() else {
        return;
    };
    let mut regs = Registers::default();
    regs.cr0 = if mode & 1 != 0 { 1 } else { 0 } | if mode & 2 != 0 { 1 << 31 } else { 0 };
    regs.efer = if mode & 4 != 0 {
        (1 << 10) | (1 << 8)
    } else {
        0
    };
    regs.cs.access =
        if mode & 8 != 0 { 1 << 13 } else { 0 } | if mode & 16 != 0 { 1 << 14 } else { 0 };
    regs.cr4 = if mode & 32 != 0 { 1 << 5 } else { 0 };
    // Mostly inside RAM, so the walk and the fetch get somewhere.
    regs.rip = take_u64(&mut input) % (RAM + 0x1000);
    regs.cr3 = take_u64(&mut input) % RAM & !0xfff;
    regs.cs.base = take_u64(&mut input) % RAM;
    regs.cs.limit = 0xffff_ffff;
    let value = take_u64(&mut input);
    for gpr in regs.gpr.iter_mut() {
        *gpr = take_u64(&mut input);
    }
    let ram = &input[..input.len().min(RAM as usize)];

    MEMORY.with(|memory| {
        WRITTEN.with(|written| {
            memory.fill(0, written.get(), 0).expect("clears inside RAM");
            memory.write(0, ram).expect("writes inside RAM");
            written.set(ram.len() as u64);
        });

        let Ok((bytes, n)) = fetch_instruction(memory, &regs) else {
            return;
        };
        assert!((1..=bytes.len()).contains(&n));
        let bitness = regs.code_bitness();
        let Ok(op) = decode::decode_mmio(&bytes[..n], bitness, &regs) else {
            return;
        };
        assert!((1..=n).contains(&op.len), "{op:?}");
        assert!(matches!(op.size, 1 | 2 | 4 | 8), "{op:?}");
        assert_eq!(decode::instruction_length(&bytes[..n], bitness), Ok(op.len));
        match op.kind {
            MmioKind::Store { value } => {
                assert!(
                    op.size == 8 || value >> (u32::from(op.size) * 8) == 0,
                    "{op:?}"
                );
            }
            MmioKind::Load { .. } | MmioKind::ReadModifyWrite { .. } => {
                // What `Vcpu::complete_read` does with the device's answer.
                let before = regs;
                let mut after = regs;
                decode::apply_completion(&mut after, &op, value);
                assert_eq!(after.rip, before.rip);
                assert_eq!(after.cr3, before.cr3);
            }
        }
    });
});
