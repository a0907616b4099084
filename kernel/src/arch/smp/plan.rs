//! Which CPUs to start and where the start-up code goes: pure decisions over the MADT's CPU
//! list and the boot memory map, unit-tested on the host.

use alloc::vec::Vec;

/// Most CPUs the kernel starts (the MADT reader records as many).
pub const MAX_CPUS: usize = 256;

/// Why an application processor is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFailure {
    /// It did not reach the kernel within the wait after INIT and two start-up IPIs.
    NoAnswer {
        /// How long the kernel waited, in milliseconds.
        waited_ms: u64,
    },
    /// It answered but did not finish its set-up (GDT, IDT, local APIC) in time.
    SetupTimeout {
        /// How long the kernel waited, in milliseconds.
        waited_ms: u64,
    },
    /// Its APIC id is above 255 and the boot CPU is in xAPIC mode, which cannot address it.
    NeedsX2Apic,
    /// No free 4 KiB page below 1 MiB for the start-up code (the memory map has none).
    NoTrampolinePage,
    /// The kernel's page tables lie above 4 GiB, out of reach of the 32-bit start-up code.
    PageTablesAbove4GiB,
    /// The kernel heap had no room for the CPU's stacks and descriptor tables.
    OutOfMemory,
    /// More CPUs are listed than the kernel supports.
    TooManyCpus,
    /// The start-up IPI could not be sent: the local APIC never finished delivering it.
    IpiNotDelivered,
    /// Not started: an earlier CPU hung in its set-up and may still use the per-CPU slot
    /// this one would get.
    AfterHungCpu,
}

impl core::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartFailure::NoAnswer { waited_ms } => write!(
                f,
                "no answer to INIT and start-up IPIs within {waited_ms} ms (absent or broken CPU)"
            ),
            StartFailure::SetupTimeout { waited_ms } => write!(
                f,
                "started but did not finish its set-up within {waited_ms} ms"
            ),
            StartFailure::NeedsX2Apic => f.write_str(
                "APIC id above 255 needs x2APIC mode, which this boot CPU does not have",
            ),
            StartFailure::NoTrampolinePage => {
                f.write_str("no free page below 1 MiB for the start-up code")
            }
            StartFailure::PageTablesAbove4GiB => f.write_str(
                "the kernel page tables lie above 4 GiB, out of reach of the start-up code",
            ),
            StartFailure::OutOfMemory => {
                f.write_str("kernel heap too small for this CPU's stacks (add RAM)")
            }
            StartFailure::TooManyCpus => write!(
                f,
                "more than {MAX_CPUS} CPUs listed; the rest are not started"
            ),
            StartFailure::IpiNotDelivered => {
                f.write_str("the local APIC did not deliver the start-up IPI")
            }
            StartFailure::AfterHungCpu => {
                f.write_str("not started: an earlier CPU hung during its set-up")
            }
        }
    }
}

/// One CPU of the start plan. Index 0 is the boot CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedCpu {
    /// Kernel CPU index (dense, 0 = boot CPU).
    pub index: usize,
    /// Local APIC (or x2APIC) id.
    pub apic_id: u32,
    /// Whether to send it INIT–SIPI–SIPI, or why not.
    pub action: Result<(), StartFailure>,
    /// Listed only by the `keel.smp.fake_cpu` test hook (no such CPU exists).
    pub fake: bool,
}

/// Orders the CPUs: the boot CPU first (index 0, even if the MADT omits it), then every
/// other MADT entry (`madt`: the APIC ids of the enabled or online-capable entries) in table
/// order, then the test hook's fake CPU. Duplicate ids are dropped; ids xAPIC mode cannot
/// address are planned as failed.
pub fn plan_cpus(
    madt: &[u32],
    boot_apic_id: u32,
    x2apic: bool,
    fake_apic_id: Option<u32>,
    max_cpus: usize,
) -> Vec<PlannedCpu> {
    let mut plan = Vec::new();
    plan.push(PlannedCpu {
        index: 0,
        apic_id: boot_apic_id,
        action: Ok(()),
        fake: false,
    });
    let listed = madt.iter().map(|&id| (id, false));
    let fake = fake_apic_id.into_iter().map(|id| (id, true));
    for (apic_id, is_fake) in listed.chain(fake) {
        if plan.iter().any(|p| p.apic_id == apic_id) {
            continue;
        }
        let action = if plan.len() >= max_cpus {
            Err(StartFailure::TooManyCpus)
        } else if apic_id > 0xff && !x2apic {
            Err(StartFailure::NeedsX2Apic)
        } else {
            Ok(())
        };
        plan.push(PlannedCpu {
            index: plan.len(),
            apic_id,
            action,
            fake: is_fake,
        });
    }
    plan
}

/// Lowest page the start-up code may use (page 0 holds the real-mode interrupt vectors).
const LOWEST_TRAMPOLINE: u64 = 0x1000;
/// End of the range a start-up IPI vector can name (vectors 0xA0-0xBF are reserved).
const TRAMPOLINE_LIMIT: u64 = 0xa0000;

/// Picks the 4 KiB page for the start-up code: the highest page below 640 KiB that the
/// memory map lists as usable RAM (`usable` as `[start, end)` ranges). The first MiB is
/// kept out of the frame allocator, so the page is free once boot information is parsed.
pub fn pick_trampoline_page(usable: &[core::ops::Range<u64>]) -> Option<u64> {
    usable
        .iter()
        .filter_map(|r| {
            let start = r.start.max(LOWEST_TRAMPOLINE).next_multiple_of(0x1000);
            let end = r.end.min(TRAMPOLINE_LIMIT) & !0xfff;
            (end >= start + 0x1000).then_some(end - 0x1000)
        })
        .max()
}

/// The SIPI vector for a trampoline page (its page number).
pub fn sipi_vector(page: u64) -> u8 {
    (page >> 12) as u8
}

/// Parses `keel.smp.fake_cpu=<apic id>` (decimal or 0x-hex).
pub fn parse_fake_cpu(value: Option<&str>) -> Option<u32> {
    let v = value?.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_cpu_first_then_madt_order_with_sparse_ids() {
        let madt = [4, 0, 8, 2];
        let plan = plan_cpus(&madt, 0, false, None, 256);
        let ids: Vec<_> = plan.iter().map(|p| (p.index, p.apic_id)).collect();
        assert_eq!(ids, [(0, 0), (1, 4), (2, 8), (3, 2)]);
        assert!(plan.iter().all(|p| p.action.is_ok() && !p.fake));
    }

    #[test]
    fn boot_cpu_missing_from_madt_still_index_0_and_duplicates_dropped() {
        let madt = [1, 1, 3];
        let plan = plan_cpus(&madt, 7, true, None, 256);
        let ids: Vec<_> = plan.iter().map(|p| p.apic_id).collect();
        assert_eq!(ids, [7, 1, 3]);
    }

    #[test]
    fn x2apic_ids_need_x2apic_mode() {
        let madt = [0, 300];
        let xapic = plan_cpus(&madt, 0, false, None, 256);
        assert_eq!(xapic[1].action, Err(StartFailure::NeedsX2Apic));
        let x2 = plan_cpus(&madt, 0, true, None, 256);
        assert_eq!(x2[1].action, Ok(()));
    }

    #[test]
    fn fake_cpu_is_appended_once_and_marked() {
        let madt = [0, 1];
        let plan = plan_cpus(&madt, 0, false, Some(9), 256);
        assert_eq!(plan.len(), 3);
        assert_eq!((plan[2].apic_id, plan[2].fake), (9, true));
        // A fake id that is already listed adds nothing.
        assert_eq!(plan_cpus(&madt, 0, false, Some(1), 256).len(), 2);
    }

    #[test]
    fn cpus_beyond_the_limit_are_planned_as_failed() {
        let madt = [0, 1, 2];
        let plan = plan_cpus(&madt, 0, false, None, 2);
        assert_eq!(plan[1].action, Ok(()));
        assert_eq!(plan[2].action, Err(StartFailure::TooManyCpus));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // memory maps with one usable range
    fn trampoline_page_is_the_highest_usable_page_below_640k() {
        // QEMU/SeaBIOS: 0..0x9fc00 usable, EBDA above.
        assert_eq!(pick_trampoline_page(&[0..0x9fc00]), Some(0x9e000));
        assert_eq!(
            pick_trampoline_page(&[0..0x8000, 0x100000..0x800_0000]),
            Some(0x7000)
        );
        // Unaligned ranges only count whole pages; page 0 never counts.
        assert_eq!(pick_trampoline_page(&[0x0..0x1fff]), None);
        assert_eq!(pick_trampoline_page(&[0x1800..0x3000]), Some(0x2000));
        assert_eq!(pick_trampoline_page(&[0x100000..0x200000]), None);
        assert_eq!(sipi_vector(0x9e000), 0x9e);
    }

    #[test]
    fn fake_cpu_values_parse_decimal_and_hex() {
        assert_eq!(parse_fake_cpu(Some("7")), Some(7));
        assert_eq!(parse_fake_cpu(Some("0x1f")), Some(31));
        assert_eq!(parse_fake_cpu(Some("seven")), None);
        assert_eq!(parse_fake_cpu(None), None);
    }
}
