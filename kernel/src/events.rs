//! The event log: what happened to the appliance, for `GET /api/v1/events` and the web
//! page — VMs started and stopped (and why), the configuration saved, DHCP leases gained
//! and lost.
//!
//! A bounded ring ([`CAPACITY`] events; the oldest go first) with sequence numbers that
//! never repeat within a boot, so a client polling with `?since=<next>` sees each event once
//! and can tell when it fell behind (the first sequence number it gets is above its
//! `since`). [`EventLog`] is pure and host-tested; the kernel keeps one in [`LOG`] and
//! stamps events with the time since boot ([`record`]).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

pub use keel_netstack::api::{Event, EventKind, EventList};

/// Events kept.
pub const CAPACITY: usize = 512;

/// Longest message kept (longer ones are cut at a character boundary).
pub const MAX_MESSAGE: usize = 256;

/// A bounded ring of events. See the module docs.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    capacity: usize,
    /// The sequence number the next event gets (the first is 1).
    next_seq: u64,
}

impl EventLog {
    /// An empty log keeping at most `capacity` events (at least 1).
    pub const fn new(capacity: usize) -> EventLog {
        EventLog {
            events: VecDeque::new(),
            capacity: if capacity == 0 { 1 } else { capacity },
            next_seq: 1,
        }
    }

    /// Appends an event at `time_ms` (since boot); drops the oldest when full. Returns its
    /// sequence number.
    pub fn record(
        &mut self,
        time_ms: u64,
        kind: EventKind,
        vm: Option<&str>,
        message: &str,
    ) -> u64 {
        if self.events.len() >= self.capacity {
            self.events.pop_front();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back(Event {
            seq,
            time_ms,
            kind,
            vm: vm.map(String::from),
            message: String::from(clip(message, MAX_MESSAGE)),
        });
        seq
    }

    /// The kept events with a sequence number of at least `since`, oldest first, and the
    /// `since` to ask with next time.
    pub fn since(&self, since: u64) -> EventList {
        // Sequence numbers are consecutive in the ring: index arithmetic finds the start.
        let first = self.events.front().map_or(self.next_seq, |e| e.seq);
        let skip = usize::try_from(since.saturating_sub(first)).unwrap_or(usize::MAX);
        let events: Vec<Event> = self.events.iter().skip(skip).cloned().collect();
        EventList {
            next: self.next_seq,
            events,
        }
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The kernel's event log.
#[cfg(target_os = "none")]
pub static LOG: spin::Mutex<EventLog> = spin::Mutex::new(EventLog::new(CAPACITY));

/// Records an event now. Interrupt handlers must not call it (it takes [`LOG`]'s lock).
#[cfg(target_os = "none")]
pub fn record(kind: EventKind, vm: Option<&str>, message: &str) {
    let hz = crate::arch::timer::tsc_hz().max(1);
    let time_ms = (u128::from(crate::arch::cpu::rdtsc()) * 1000 / u128::from(hz)) as u64;
    LOG.lock().record(time_ms, kind, vm, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_and_since_pages() {
        let mut log = EventLog::new(3);
        assert_eq!(log.since(0).next, 1);
        assert!(log.since(0).events.is_empty());
        for i in 0..5u64 {
            let seq = log.record(i * 10, EventKind::VmStarted, Some("web"), "started");
            assert_eq!(seq, i + 1);
        }
        assert_eq!(log.len(), 3);
        let all = log.since(0);
        assert_eq!(all.next, 6);
        let seqs: Vec<u64> = all.events.iter().map(|e| e.seq).collect();
        // 1 and 2 fell out: a client at since=1 sees the gap.
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(all.events[0].time_ms, 20);
        assert_eq!(log.since(5).events.len(), 1);
        assert!(log.since(6).events.is_empty());
        assert!(log.since(u64::MAX).events.is_empty());
        assert_eq!(log.since(6).next, 6);
    }

    #[test]
    fn long_messages_are_cut_at_a_character() {
        let mut log = EventLog::new(2);
        let long = "é".repeat(200);
        log.record(0, EventKind::Lease, None, &long);
        let message = &log.since(0).events[0].message;
        assert!(message.len() <= MAX_MESSAGE && message.len() >= MAX_MESSAGE - 1);
        assert!(message.chars().all(|c| c == 'é'));
        assert_eq!(log.since(0).events[0].vm, None);
    }

    #[test]
    fn events_serialize_as_the_api_says() {
        let mut log = EventLog::new(4);
        log.record(1500, EventKind::VmStopped, Some("web"), "guest powered off");
        log.record(1600, EventKind::ConfigSaved, None, "generation 3");
        let json = serde_json::to_value(log.since(0)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"next": 3, "events": [
                {"seq": 1, "time_ms": 1500, "kind": "vm-stopped", "vm": "web",
                 "message": "guest powered off"},
                {"seq": 2, "time_ms": 1600, "kind": "config-saved", "vm": null,
                 "message": "generation 3"}
            ]})
        );
    }
}
