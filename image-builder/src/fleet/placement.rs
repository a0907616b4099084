//! `keel fleet vm create --place auto`: which appliance a new VM goes to.
//!
//! Among the appliances that answered, have every file the VM boots from in their guest
//! store, and have room for its memory, the one with the most free memory wins; a tie goes
//! to the one listed first in the inventory, so the choice is repeatable. The decision
//! keeps every appliance's reason, so the CLI can say where the VM went and why the others
//! were passed over.

use super::report::{SystemSummary, mib};

const MIB: u64 = 1024 * 1024;

/// What one appliance said when asked for placement: its system summary and store listing,
/// or why it could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The inventory name.
    pub name: String,
    /// `GET /api/v1/system` and the names of `GET /api/v1/store`, or the failure.
    pub answer: Result<(SystemSummary, Vec<String>), String>,
}

/// Where the VM goes, and what was weighed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The chosen appliance's inventory name.
    pub chosen: String,
    /// Its free memory when asked.
    pub free_bytes: u64,
    /// Every other appliance with why it was not chosen ("412 MiB free", "no initrd.cpio in
    /// its store", "unreachable: …"), in inventory order.
    pub passed_over: Vec<(String, String)>,
}

impl Placement {
    /// One line for the operator: where and why.
    pub fn explain(&self, files: &[&str]) -> String {
        let mut why = format!(
            "{}: most free memory ({}) among the appliances with {} in their store",
            self.chosen,
            mib(self.free_bytes),
            files.join(" and ")
        );
        for (name, reason) in &self.passed_over {
            why.push_str(&format!("; {name}: {reason}"));
        }
        why
    }
}

/// No appliance can take the VM: each one's reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no appliance can take the VM: {}", reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join("; "))]
pub struct NoPlacement {
    /// Each appliance with why it cannot take the VM, in inventory order.
    pub reasons: Vec<(String, String)>,
}

/// Chooses an appliance for a VM of `memory_mib` that boots from `files` (its kernel and
/// initrd: names in the guest store).
pub fn choose(
    candidates: &[Candidate],
    files: &[&str],
    memory_mib: u64,
) -> Result<Placement, NoPlacement> {
    let needed = memory_mib.saturating_mul(MIB);
    // Each candidate's free memory if it can take the VM, else why not.
    let verdicts: Vec<(&str, Result<u64, String>)> = candidates
        .iter()
        .map(|c| {
            let verdict = match &c.answer {
                Err(reason) => Err(reason.clone()),
                Ok((system, store)) => {
                    let missing: Vec<&str> = files
                        .iter()
                        .copied()
                        .filter(|f| !store.iter().any(|s| s == f))
                        .collect();
                    if !missing.is_empty() {
                        Err(format!("no {} in its store", missing.join(" or ")))
                    } else if system.memory.free_bytes < needed {
                        Err(format!(
                            "{} free, the VM needs {memory_mib} MiB",
                            mib(system.memory.free_bytes)
                        ))
                    } else {
                        Ok(system.memory.free_bytes)
                    }
                }
            };
            (c.name.as_str(), verdict)
        })
        .collect();
    // `max_by_key` keeps the last of equals; scanning in reverse makes it the first.
    let best = verdicts
        .iter()
        .rev()
        .filter_map(|(name, v)| v.as_ref().ok().map(|free| (*name, *free)))
        .max_by_key(|(_, free)| *free);
    let Some((chosen, free_bytes)) = best else {
        return Err(NoPlacement {
            reasons: verdicts
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.err().unwrap_or_default()))
                .collect(),
        });
    };
    let passed_over = verdicts
        .into_iter()
        .filter(|(name, _)| *name != chosen)
        .map(|(name, v)| {
            let reason = match v {
                Ok(free) => format!("{} free", mib(free)),
                Err(reason) => reason,
            };
            (name.to_string(), reason)
        })
        .collect();
    Ok(Placement {
        chosen: chosen.to_string(),
        free_bytes,
        passed_over,
    })
}
