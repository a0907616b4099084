//! Arbitrary bytes as a vCPU that touched MMIO: its registers and 2 MiB of guest RAM (page
//! tables and code). The path both backends take on an MMIO exit (`backend::mmio::emulate`,
//! then the completion): fetch the instruction at CS:RIP through the guest's page tables,
//! decode it with iced-x86 into a load, store or read-modify-write, and apply the value the
//! device returns. Nothing may panic; an instruction that cannot be fetched or emulated is
//! the expected answer for most inputs.
//!
//! Layout: `keel_fuzz::mmio_input` (a mode byte, RIP, CR3, CS.base, the device's value,
//! RAX…R15, then guest RAM from address 0).
#![no_main]

use std::cell::Cell;

use keel_fuzz::{guest_memory, mmio_input};
use keel_vmm::decode::{self, MmioKind};
use keel_vmm::guest_paging::fetch_instruction;
use keel_vmm::memory::GuestMemory;
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 2 << 20;

thread_local! {
    /// Built once per fuzzing thread; each input clears what the previous one wrote.
    static MEMORY: &'static GuestMemory = guest_memory(RAM);
    static WRITTEN: Cell<u64> = const { Cell::new(0) };
}

fuzz_target!(|data: &[u8]| {
    let Some((regs, value, ram)) = mmio_input(data, RAM) else {
        return;
    };

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
