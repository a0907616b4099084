//! Arbitrary bytes as a virtio-net queue's registers and guest RAM, and the frames waiting
//! for the guest; the NIC receives or transmits through it.
//! A panic, a hang or an out-of-bounds access is a bug; errors are the expected answer.
#![no_main]

use std::cell::Cell;

use keel_vmm::host::HostMemory;
use keel_vmm::memory::GuestMemory;
use keel_vmm::virtio::fuzzing::net_queue;
use libfuzzer_sys::fuzz_target;

/// 2 MiB of heap standing in for host frames: one allocation, at fake physical 0.
struct HeapHost {
    bytes: Vec<Cell<u8>>,
    taken: Cell<bool>,
}

const RAM: u64 = 2 << 20;

impl HostMemory for HeapHost {
    fn alloc_frames(&self, count: u64, _align: u64) -> Option<u64> {
        if self.taken.get() || count * 4096 != RAM {
            return None;
        }
        self.taken.set(true);
        Some(0)
    }
    fn free_frames(&self, _phys: u64, _count: u64) {}
    fn ptr(&self, phys: u64) -> *mut u8 {
        self.bytes[phys as usize].as_ptr()
    }
}

thread_local! {
    /// Built once per fuzzing thread; `net_queue` clears what it uses before each input.
    static MEMORY: &'static GuestMemory = {
        let host: &'static HeapHost = Box::leak(Box::new(HeapHost {
            bytes: (0..RAM).map(|_| Cell::new(0)).collect(),
            taken: Cell::new(false),
        }));
        Box::leak(Box::new(GuestMemory::new(host, RAM).expect("2 MiB of heap")))
    };
}

fuzz_target!(|data: &[u8]| {
    MEMORY.with(|memory| {
        net_queue(memory, data);
    });
});
