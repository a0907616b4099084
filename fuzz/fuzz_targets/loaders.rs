//! Arbitrary bytes as a guest kernel image under the VMM's loaders: the bzImage setup
//! header and loader (boot protocol 2.x), the PVH ELF program headers, entry note and loader,
//! and the flat real-mode loader, into 8 MiB of guest RAM. Nothing may panic or write outside
//! guest RAM; errors are the expected answer for most inputs.
//!
//! The first byte chooses: bits 0–1 the loader (0 bzImage, 1 PVH, 2 flat, 3 whichever
//! `is_bzimage` says, as `vm create` does), bit 2 an initrd (the image's last quarter), bit 3
//! an ACPI RSDP address.
#![no_main]

use keel_fuzz::guest_memory;
use keel_vmm::loader::{bzimage, flat, pvh};
use keel_vmm::memory::GuestMemory;
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 8 << 20;

thread_local! {
    /// Built once per fuzzing thread; the loaders only write, so what an earlier input left
    /// in it changes nothing.
    static MEMORY: &'static GuestMemory = guest_memory(RAM);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let (image, initrd) = if mode & 4 != 0 {
        let split = input.len() - input.len() / 4;
        (&input[..split], Some(&input[split..]))
    } else {
        (input, None)
    };
    let rsdp = (mode & 8 != 0).then_some(0xe_0000);
    let cmdline = "console=ttyS0 reboot=t";

    // The parsers on their own, whatever the mode.
    if bzimage::parse_header(image).is_ok() {
        assert!(bzimage::is_bzimage(image));
    }
    if let Ok(headers) = pvh::program_headers(image) {
        let _ = pvh::find_entry(image, &headers);
    }

    MEMORY.with(|memory| {
        let loader = match mode & 3 {
            3 if bzimage::is_bzimage(image) => 0,
            3 => 1,
            n => n,
        };
        match loader {
            0 => {
                let _ = bzimage::load(memory, image, initrd, cmdline, rsdp);
            }
            1 => {
                let _ = pvh::load(memory, image, initrd, cmdline, rsdp);
            }
            _ => {
                let _ = flat::load(memory, image);
            }
        }
    });
});
