//! The migrations since boot, in and out, as `GET /api/v1/migrations` shows them: the
//! plane updates a record as a migration moves (requested, running, done or failed). The
//! bookkeeping is `keel_netstack::api::MigrationLog` (host-tested there); this is its
//! one instance, shared by the plane and the API.

use alloc::string::String;
use alloc::vec::Vec;

use keel_netstack::api::{Migration, MigrationDirection, MigrationLog, MigrationPhase};

/// A record's handle.
pub type RecordId = u64;

static LOG: spin::Mutex<MigrationLog> = spin::Mutex::new(MigrationLog::new());

/// A new migration of `vm` with `peer` in `phase`; returns its handle and the record.
pub fn add(
    vm: &str,
    direction: MigrationDirection,
    peer: String,
    phase: MigrationPhase,
) -> (RecordId, Migration) {
    LOG.lock().add(vm, direction, peer, phase)
}

/// Changes record `id`.
pub fn update(id: RecordId, change: impl FnOnce(&mut Migration)) {
    LOG.lock().update(id, change);
}

/// Marks record `id` failed with `why` (the first reason stays).
pub fn fail(id: RecordId, why: String, total_ms: Option<u64>) {
    LOG.lock().fail(id, why, total_ms);
}

/// The VM of the outgoing migration under way, if one is.
pub fn outgoing_under_way() -> Option<String> {
    LOG.lock().outgoing_under_way()
}

/// Every record, oldest first.
pub fn all() -> Vec<Migration> {
    LOG.lock().all()
}
