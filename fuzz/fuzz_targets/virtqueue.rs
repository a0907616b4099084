//! Arbitrary bytes as a split virtqueue's registers and guest RAM; the queue is drained.
//! A panic, a hang or an out-of-bounds access is a bug; errors are the expected answer.
#![no_main]

use keel_fuzz::guest_memory;
use keel_vmm::memory::GuestMemory;
use keel_vmm::virtio::fuzzing::drain_queue;
use libfuzzer_sys::fuzz_target;

/// 2 MiB of guest RAM over heap.
const RAM: u64 = 2 << 20;

thread_local! {
    /// Built once per fuzzing thread; `drain_queue` clears what it uses before each input.
    static MEMORY: &'static GuestMemory = guest_memory(RAM);
}

fuzz_target!(|data: &[u8]| {
    MEMORY.with(|memory| {
        drain_queue(memory, data);
    });
});
