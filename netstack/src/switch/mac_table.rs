//! The MAC table: which port each station was last seen on.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;

/// A learned station, for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    /// The station's MAC.
    pub mac: EthernetAddress,
    /// The port it was last seen on.
    pub port: u32,
    /// Seconds since its last frame.
    pub age_secs: u64,
}

#[derive(Clone, Copy, Debug)]
struct Station {
    port: u32,
    last_seen: Instant,
}

/// Seen less than `aging` ago (or "after" `now`: a clock read before the frame was learnt).
/// Subtracts rather than adds so that no `aging` can overflow the clock.
fn is_fresh(station: &Station, now: Instant, aging: Duration) -> bool {
    now <= station.last_seen || now - station.last_seen < aging
}

/// Bounded, aging station table. Entries older than `aging` are forgotten (a station that went
/// quiet or moved without a word is flooded to again); when full, the least recently seen
/// station makes room for a new one.
#[derive(Debug)]
pub(super) struct MacTable {
    stations: BTreeMap<[u8; 6], Station>,
    aging: Duration,
    capacity: usize,
    /// When [`expire`](Self::expire) last swept the table.
    last_sweep: Option<Instant>,
}

/// How often [`MacTable::expire`] walks the table; lookups and listings skip stale entries
/// in between, so this only bounds how long a forgotten station takes up room.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl MacTable {
    pub(super) fn new(aging: Duration, capacity: usize) -> MacTable {
        MacTable {
            stations: BTreeMap::new(),
            aging,
            capacity: capacity.max(1),
            last_sweep: None,
        }
    }

    fn is_fresh(&self, station: &Station, now: Instant) -> bool {
        is_fresh(station, now, self.aging)
    }

    /// Records that `mac` sent from `port` at `now` (a station that moved moves with it).
    pub(super) fn learn(&mut self, mac: EthernetAddress, port: u32, now: Instant) {
        let station = Station {
            port,
            last_seen: now,
        };
        if let Some(known) = self.stations.get_mut(&mac.0) {
            *known = station;
            return;
        }
        if self.stations.len() >= self.capacity {
            // A linear scan, only when a new station meets a full table; guests' sources are
            // pinned to their own MAC, so only the uplink can bring many.
            let oldest = self
                .stations
                .iter()
                .min_by_key(|(_, station)| station.last_seen)
                .map(|(mac, _)| *mac);
            if let Some(oldest) = oldest {
                self.stations.remove(&oldest);
            }
        }
        self.stations.insert(mac.0, station);
    }

    /// The port `mac` was last seen on, unless it aged out.
    pub(super) fn lookup(&self, mac: EthernetAddress, now: Instant) -> Option<u32> {
        self.stations
            .get(&mac.0)
            .filter(|station| self.is_fresh(station, now))
            .map(|station| station.port)
    }

    /// Forgets stations not seen for `aging`; walks the table at most once per
    /// [`SWEEP_INTERVAL`] (the switch calls it every poll).
    pub(super) fn expire(&mut self, now: Instant) {
        if let Some(last) = self.last_sweep
            && now >= last
            && now - last < SWEEP_INTERVAL
        {
            return;
        }
        self.last_sweep = Some(now);
        let aging = self.aging;
        self.stations
            .retain(|_, station| is_fresh(station, now, aging));
    }

    /// Forgets every station on `port` (it was detached).
    pub(super) fn flush_port(&mut self, port: u32) {
        self.stations.retain(|_, station| station.port != port);
    }

    /// The live entries, by MAC.
    pub(super) fn entries(&self, now: Instant) -> Vec<MacEntry> {
        self.stations
            .iter()
            .filter(|(_, station)| self.is_fresh(station, now))
            .map(|(mac, station)| MacEntry {
                mac: EthernetAddress(*mac),
                port: station.port,
                // A clock read before the entry was learnt shows age 0, not a wrap.
                age_secs: if now > station.last_seen {
                    (now - station.last_seen).secs()
                } else {
                    0
                },
            })
            .collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.stations.len()
    }
}
