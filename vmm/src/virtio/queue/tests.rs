//! Split-queue rules, driven by a tiny guest-side driver that lays out rings in mock RAM.

use super::*;
use crate::memory::GuestMemory;
use crate::testing::MockHost;

/// 4 MiB of mock guest RAM.
pub(crate) fn memory() -> GuestMemory {
    GuestMemory::new(MockHost::leak(1024), 4 << 20).unwrap()
}

/// The guest side of one split queue: rings at fixed addresses, descriptors handed out in
/// order, the available index it published and the used index it consumed.
pub(crate) struct Driver {
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl Driver {
    /// Rings for `size` entries from `base` (16-byte aligned).
    pub(crate) fn new(size: u16, base: u64) -> Driver {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        Driver {
            size,
            desc: base,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// A queue of maximum `max` programmed with these rings and enabled.
    pub(crate) fn queue(&self, max: u16) -> SplitQueue {
        let mut q = SplitQueue::new(max);
        q.set_size(self.size);
        q.set_desc_table(self.desc);
        q.set_avail_ring(self.avail);
        q.set_used_ring(self.used);
        q.set_ready(true).unwrap();
        q
    }

    /// Writes a descriptor into the table at `table`.
    pub(crate) fn write_desc_at(
        mem: &GuestMemory,
        table: u64,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = table + 16 * u64::from(index);
        mem.write_u64(at, addr).unwrap();
        mem.write_u32(at + 8, len).unwrap();
        mem.write_u16(at + 12, flags).unwrap();
        mem.write_u16(at + 14, next).unwrap();
    }

    pub(crate) fn write_desc(
        &self,
        mem: &GuestMemory,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        Self::write_desc_at(mem, self.desc, index, addr, len, flags, next);
    }

    /// Publishes `head` in the available ring.
    pub(crate) fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_u16(self.avail + 4 + 2 * slot, head).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_u16(self.avail + 2, self.avail_idx).unwrap();
    }

    /// Sets the available index directly (for hostile drivers).
    pub(crate) fn set_avail_idx(&mut self, mem: &GuestMemory, idx: u16) {
        self.avail_idx = idx;
        mem.write_u16(self.avail + 2, idx).unwrap();
    }

    /// Chains `buffers` (address, length, device-writable) through fresh descriptors and
    /// publishes the chain; returns its head.
    pub(crate) fn add_chain(&mut self, mem: &GuestMemory, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == buffers.len();
            let flags =
                if writable { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            self.write_desc(mem, index, addr, len, flags, self.next_desc);
        }
        self.publish(mem, head);
        head
    }

    /// The used index the device published.
    pub(crate) fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_u16(self.used + 2).unwrap()
    }

    /// Used element `i`: (id, written length).
    pub(crate) fn used_elem(&self, mem: &GuestMemory, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        (mem.read_u32(at).unwrap(), mem.read_u32(at + 4).unwrap())
    }

    /// Sets `used_event` (EVENT_IDX).
    pub(crate) fn set_used_event(&self, mem: &GuestMemory, value: u16) {
        mem.write_u16(self.avail + 4 + 2 * u64::from(self.size), value)
            .unwrap();
    }

    /// The device's `avail_event` (EVENT_IDX).
    pub(crate) fn avail_event(&self, mem: &GuestMemory) -> u16 {
        mem.read_u16(self.used + 4 + 8 * u64::from(self.size))
            .unwrap()
    }
}

const DATA: u64 = 0x10_0000;

#[test]
fn chains_pop_in_order_and_used_entries_publish_after_their_element() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    assert_eq!(q.pop(&mem).unwrap(), None, "empty queue");
    let a = d.add_chain(&mem, &[(DATA, 16, false), (DATA + 0x100, 512, true)]);
    let b = d.add_chain(&mem, &[(DATA + 0x1000, 0, true)]);
    let first = q.pop(&mem).unwrap().unwrap();
    assert_eq!(first.head, a);
    assert_eq!(
        first.buffers,
        vec![
            Buffer {
                addr: DATA,
                len: 16,
                device_writable: false
            },
            Buffer {
                addr: DATA + 0x100,
                len: 512,
                device_writable: true
            }
        ]
    );
    let second = q.pop(&mem).unwrap().unwrap();
    assert_eq!(second.head, b);
    assert_eq!(
        second.buffers[0].len, 0,
        "zero-length buffers are the device's call"
    );
    assert_eq!(q.pop(&mem).unwrap(), None);
    q.add_used(&mem, b, 0).unwrap();
    q.add_used(&mem, a, 513).unwrap();
    assert_eq!(d.used_idx(&mem), 2);
    assert_eq!(d.used_elem(&mem, 0), (u32::from(b), 0));
    assert_eq!(d.used_elem(&mem, 1), (u32::from(a), 513));
}

#[test]
fn bogus_sizes_and_misaligned_rings_are_refused_at_enable() {
    for size in [0u16, 3, 100, 512] {
        let mut q = SplitQueue::new(256);
        q.set_size(size);
        assert_eq!(
            q.set_ready(true),
            Err(QueueError::BadSize { size, max: 256 })
        );
        assert!(!q.ready());
    }
    for (desc, avail, used, ring) in [
        (0x1008, 0x2000, 0x3000, "descriptor table"),
        (0x1000, 0x2001, 0x3000, "available ring"),
        (0x1000, 0x2000, 0x3002, "used ring"),
    ] {
        let mut q = SplitQueue::new(256);
        q.set_desc_table(desc);
        q.set_avail_ring(avail);
        q.set_used_ring(used);
        let error = q.set_ready(true).unwrap_err();
        assert!(
            matches!(error, QueueError::Misaligned { ring: r, .. } if r == ring),
            "{error}"
        );
    }
}

#[test]
fn rings_outside_ram_are_errors_not_accesses() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    d.used = (4 << 20) - 16;
    let mut q = d.queue(256);
    let error = q.pop(&mem).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the used ring at {:#x} (70 bytes) lies outside guest RAM",
            d.used
        )
    );
    let mut q = SplitQueue::new(256);
    q.set_desc_table(u64::MAX - 15);
    q.set_ready(true).unwrap();
    assert!(matches!(
        q.pop(&mem),
        Err(QueueError::RingOutsideRam {
            ring: "descriptor table",
            ..
        })
    ));
}

#[test]
fn buffers_outside_ram_are_refused() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    d.add_chain(&mem, &[(DATA, 16, false), ((4 << 20) - 8, 16, true)]);
    assert_eq!(
        q.pop(&mem).unwrap_err().to_string(),
        "descriptor 1 points outside guest RAM at 0x3ffff8 (16 bytes)"
    );
    d.add_chain(&mem, &[(u64::MAX, 2, true)]);
    assert!(matches!(
        q.pop(&mem),
        Err(QueueError::BufferOutsideRam { addr: u64::MAX, .. })
    ));
}

#[test]
fn looping_and_overlong_chains_end_as_errors() {
    let mem = memory();
    let mut d = Driver::new(4, 0x1000);
    let mut q = d.queue(256);
    d.write_desc(&mem, 0, DATA, 8, DESC_F_NEXT, 1);
    d.write_desc(&mem, 1, DATA, 8, DESC_F_NEXT, 0);
    d.publish(&mem, 0);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::ChainTooLong { head: 0, limit: 4 }
    );
    // A next index beyond the table, and a head beyond it.
    d.write_desc(&mem, 2, DATA, 8, DESC_F_NEXT, 4);
    d.publish(&mem, 2);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::DescriptorIndex {
            index: 4,
            table_len: 4
        }
    );
    d.publish(&mem, 9);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::DescriptorIndex {
            index: 9,
            table_len: 4
        }
    );
}

#[test]
fn an_avail_index_far_ahead_is_an_error() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    d.set_avail_idx(&mem, 9);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::AvailIndexJump {
            avail_idx: 9,
            next_avail: 0,
            size: 8
        }
    );
}

#[test]
fn indirect_tables_are_flattened_within_their_own_length() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    let table = 0x8000;
    Driver::write_desc_at(&mem, table, 0, DATA, 16, DESC_F_NEXT, 2);
    Driver::write_desc_at(
        &mem,
        table,
        2,
        DATA + 0x200,
        512,
        DESC_F_WRITE | DESC_F_NEXT,
        1,
    );
    Driver::write_desc_at(&mem, table, 1, DATA + 0x400, 1, DESC_F_WRITE, 0);
    d.write_desc(&mem, 0, table, 48, DESC_F_INDIRECT, 0);
    d.publish(&mem, 0);
    let chain = q.pop(&mem).unwrap().unwrap();
    let lens: Vec<_> = chain.buffers.iter().map(|b| b.len).collect();
    assert_eq!(lens, [16, 512, 1]);
    assert!(chain.buffers[1].device_writable && !chain.buffers[0].device_writable);

    // NEXT inside the table beyond its length.
    Driver::write_desc_at(&mem, table, 1, DATA, 1, DESC_F_NEXT, 3);
    d.publish(&mem, 0);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::DescriptorIndex {
            index: 3,
            table_len: 3
        }
    );
    // A loop inside the table.
    Driver::write_desc_at(&mem, table, 1, DATA, 1, DESC_F_NEXT, 0);
    d.publish(&mem, 0);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::ChainTooLong { head: 0, limit: 3 }
    );
    // Nested indirect.
    Driver::write_desc_at(&mem, table, 0, table, 48, DESC_F_INDIRECT, 0);
    d.publish(&mem, 0);
    assert!(matches!(
        q.pop(&mem),
        Err(QueueError::BadIndirect { reason, .. }) if reason.contains("another indirect")
    ));
    // INDIRECT with NEXT, and a bad table length.
    d.write_desc(&mem, 0, table, 48, DESC_F_INDIRECT | DESC_F_NEXT, 1);
    d.publish(&mem, 0);
    assert!(matches!(q.pop(&mem), Err(QueueError::BadIndirect { .. })));
    d.write_desc(&mem, 0, table, 40, DESC_F_INDIRECT, 0);
    d.publish(&mem, 0);
    assert!(matches!(q.pop(&mem), Err(QueueError::BadIndirect { .. })));
    // A table may be longer than the size the driver chose, up to the device's maximum.
    Driver::write_desc_at(&mem, table, 0, DATA, 16, 0, 0);
    d.write_desc(&mem, 0, table, 16 * 9, DESC_F_INDIRECT, 0);
    d.publish(&mem, 0);
    assert_eq!(q.pop(&mem).unwrap().unwrap().buffers.len(), 1);
    d.write_desc(&mem, 0, table, 16 * 257, DESC_F_INDIRECT, 0);
    d.publish(&mem, 0);
    assert_eq!(
        q.pop(&mem).unwrap_err(),
        QueueError::ChainTooLong {
            head: 0,
            limit: 256
        }
    );
}

#[test]
fn no_interrupt_flag_is_honoured_without_event_idx() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    let head = d.add_chain(&mem, &[(DATA, 1, true)]);
    q.pop(&mem).unwrap();
    q.add_used(&mem, head, 1).unwrap();
    assert!(q.should_notify(&mem).unwrap());
    mem.write_u16(d.avail, AVAIL_F_NO_INTERRUPT).unwrap();
    assert!(!q.should_notify(&mem).unwrap());
}

#[test]
fn event_idx_interrupts_only_when_used_event_is_passed() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    q.set_event_idx(true);
    // An empty pop asks the driver to notify at the next entry.
    mem.write_u16(d.used + 4 + 8 * 8, 0xFFFF).unwrap();
    assert_eq!(q.pop(&mem).unwrap(), None);
    assert_eq!(d.avail_event(&mem), 0);
    let mut heads = Vec::new();
    for _ in 0..3 {
        heads.push(d.add_chain(&mem, &[(DATA, 1, true)]));
    }
    for _ in 0..3 {
        q.pop(&mem).unwrap().unwrap();
    }
    assert_eq!(q.pop(&mem).unwrap(), None);
    assert_eq!(d.avail_event(&mem), 3);
    // The driver wants an interrupt once entry 1 (the second) is used.
    d.set_used_event(&mem, 1);
    q.add_used(&mem, heads[0], 1).unwrap();
    assert!(q.should_notify(&mem).unwrap(), "first decision after reset");
    assert!(!q.should_notify(&mem).unwrap(), "nothing new");
    q.add_used(&mem, heads[1], 1).unwrap();
    assert!(
        q.should_notify(&mem).unwrap(),
        "used index passed used_event 1"
    );
    q.add_used(&mem, heads[2], 1).unwrap();
    assert!(!q.should_notify(&mem).unwrap(), "used_event 1 is behind");
}

#[test]
fn indices_wrap_at_u16() {
    let mem = memory();
    let mut d = Driver::new(4, 0x1000);
    let mut q = d.queue(256);
    let mut state = q.state();
    state.next_avail = u16::MAX;
    state.next_used = u16::MAX;
    q.restore(&state).unwrap();
    d.set_avail_idx(&mem, u16::MAX);
    mem.write_u16(d.used + 2, u16::MAX).unwrap();
    for _ in 0..3 {
        let head = d.add_chain(&mem, &[(DATA, 4, true)]);
        let chain = q.pop(&mem).unwrap().unwrap();
        assert_eq!(chain.head, head);
        q.add_used(&mem, head, 4).unwrap();
    }
    assert_eq!(d.used_idx(&mem), 2);
}

#[test]
fn reset_and_state_round_trip() {
    let mem = memory();
    let mut d = Driver::new(8, 0x1000);
    let mut q = d.queue(256);
    q.set_event_idx(true);
    let head = d.add_chain(&mem, &[(DATA, 1, true)]);
    q.pop(&mem).unwrap();
    q.add_used(&mem, head, 1).unwrap();
    let saved = q.state();
    let mut other = SplitQueue::new(256);
    other.restore(&saved).unwrap();
    assert_eq!(other, q);
    q.reset();
    assert_eq!(q, SplitQueue::new(256));
    assert_eq!(q.size(), 256);
    assert!(!q.ready());

    let mut bad = saved.clone();
    bad.size = 12;
    assert_eq!(
        other.restore(&bad),
        Err(QueueError::BadSize { size: 12, max: 256 })
    );
    let mut bad = saved;
    bad.next_avail = 100;
    assert!(other.restore(&bad).is_err());
    assert_eq!(other.state().next_avail, 1, "unchanged after a refusal");
}

/// xorshift64: a deterministic stream of pseudo-random numbers.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An input for `drain_queue` that is mostly plausible: rings at fixed aligned places,
/// descriptors pointing at request slots holding block headers of real types, indices
/// near the valid range; every field sometimes garbage.
fn plausible_input(rng: &mut Rng) -> Vec<u8> {
    let mut input = vec![0u8; 32 + 0x8000];
    let size = 1u16 << rng.below(5);
    let (desc, avail, used) = (0x1000u64, 0x2000u64, 0x3000u64);
    input[0..8].copy_from_slice(&desc.to_le_bytes());
    input[8..16].copy_from_slice(&avail.to_le_bytes());
    input[16..24].copy_from_slice(&used.to_le_bytes());
    // Flags: EVENT_IDX, through virtio-blk (mostly), read-only.
    input[24] = (rng.below(8) as u8) | (2 * u8::from(rng.below(4) != 0));
    let size_field = if rng.below(16) == 0 {
        rng.next() as u16
    } else {
        size
    };
    input[26..28].copy_from_slice(&size_field.to_le_bytes());
    let ram = &mut input[32..];
    let mut put = |at: u64, bytes: &[u8]| {
        ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    // Request slots at 0x4000 + 0x200 k: a header of a known type, in-range sectors.
    for k in 0..16u64 {
        let kind = [0u32, 1, 4, 8, 13, 11][rng.below(6) as usize];
        put(0x4000 + 0x200 * k, &kind.to_le_bytes());
        put(0x4008 + 0x200 * k, &rng.below(20).to_le_bytes());
    }
    let n = u64::from(size);
    for i in 0..n {
        let addr = if rng.below(32) == 0 {
            rng.next()
        } else {
            0x4000 + 0x200 * rng.below(16) + [0, 16][rng.below(2) as usize]
        };
        let len = [0u32, 1, 16, 512, 1024, 17][rng.below(6) as usize];
        // NEXT and WRITE freely; INDIRECT (over the request slots) now and then.
        let flags = rng.below(4) as u16
            | if rng.below(16) == 0 {
                DESC_F_INDIRECT
            } else {
                0
            };
        let next = rng.below(n + 1) as u16;
        let at = desc + 16 * i;
        put(at, &addr.to_le_bytes());
        put(at + 8, &len.to_le_bytes());
        put(at + 12, &flags.to_le_bytes());
        put(at + 14, &next.to_le_bytes());
    }
    let idx = rng.below(n + 2) as u16;
    put(avail + 2, &idx.to_le_bytes());
    for i in 0..n {
        put(avail + 4 + 2 * i, &(rng.below(n + 1) as u16).to_le_bytes());
    }
    put(avail + 4 + 2 * n, &(rng.below(n) as u16).to_le_bytes());
    input
}

#[test]
fn pseudo_random_rings_never_panic() {
    let mem = memory();
    let mut rng = Rng(0x1234_5678_9ABC_DEF0);
    // Raw garbage first, then plausible rings.
    let mut input = vec![0u8; 4096];
    for _ in 0..100 {
        for byte in &mut input {
            *byte = rng.next() as u8;
        }
        let len = rng.below(input.len() as u64) as usize;
        crate::virtio::fuzzing::drain_queue(&mem, &input[..len]);
    }
    let mut used = 0u64;
    for _ in 0..400 {
        let input = plausible_input(&mut rng);
        used += u64::from(crate::virtio::fuzzing::drain_queue(&mem, &input));
    }
    // The plausible inputs reach the device model, not only the queue's refusals.
    assert!(used > 100, "only {used} chains completed");
}
