//! The guest-visible CPU a migrated VM needs: vendor and feature leaves, and the check
//! that a destination can show the guest at least what it saw on the source.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::cpuid::CpuidPolicy;

/// The `(leaf, subleaf)` pairs whose bits are features a running guest may have seen and
/// used: leaf 1 (ECX, EDX), 7.0 (EBX, ECX, EDX), 0xD.1 (EAX: XSAVE variants), 0x8000_0001
/// (ECX, EDX). A destination must offer every bit the source offered in them.
pub const MIGRATED_LEAVES: [(u32, u32); 4] = [(1, 0), (7, 0), (0xD, 1), (0x8000_0001, 0)];

/// One feature leaf as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuViewEntry {
    /// `EAX` input.
    pub leaf: u32,
    /// `ECX` input.
    pub subleaf: u32,
    /// The output registers `[eax, ebx, ecx, edx]`.
    pub regs: [u32; 4],
}

/// The vendor and feature leaves of a guest's CPUID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuView {
    /// The 12-byte vendor string (`GenuineIntel`, `AuthenticAMD`, …).
    pub vendor: [u8; 12],
    /// [`MIGRATED_LEAVES`], in that order.
    pub entries: Vec<CpuViewEntry>,
}

/// Which registers of a leaf hold feature bits (index into `[eax, ebx, ecx, edx]`).
fn feature_registers(leaf: u32) -> &'static [usize] {
    match leaf {
        1 | 0x8000_0001 => &[2, 3],
        7 => &[1, 2, 3],
        0xD => &[0],
        _ => &[],
    }
}

const REGISTER_NAMES: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

/// Why a destination cannot give a guest its CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuMismatch {
    /// Another vendor: guests pick code paths by vendor at boot.
    Vendor {
        /// The source's vendor string.
        source: String,
        /// The destination's.
        destination: String,
    },
    /// Feature bits the guest saw that the destination lacks.
    MissingFeatures {
        /// `leaf.subleaf register bits`, one per register with missing bits.
        missing: Vec<(u32, u32, &'static str, u32)>,
    },
    /// The source's view lacks a leaf this version migrates (a damaged or foreign view).
    Incomplete,
}

impl fmt::Display for CpuMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuMismatch::Vendor {
                source,
                destination,
            } => write!(
                f,
                "the guest runs on a {source} CPU and this appliance has a {destination} CPU"
            ),
            CpuMismatch::MissingFeatures { missing } => {
                f.write_str("CPUID features the guest uses are missing here:")?;
                for (leaf, subleaf, register, bits) in missing {
                    write!(f, " leaf {leaf:#x}.{subleaf} {register} bits {bits:#010x};")?;
                }
                Ok(())
            }
            CpuMismatch::Incomplete => f.write_str("the source sent an incomplete CPUID view"),
        }
    }
}

fn vendor_string(vendor: &[u8; 12]) -> String {
    let mut s = String::new();
    for &b in vendor {
        let c = if b.is_ascii_graphic() { b as char } else { '?' };
        let _ = s.write_char(c);
    }
    s
}

impl CpuView {
    /// The view vCPU 0 of a VM with `policy` has.
    pub fn from_policy(policy: &CpuidPolicy) -> CpuView {
        let vendor_leaf = policy.query(0, 0, 0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&vendor_leaf.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&vendor_leaf.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&vendor_leaf.ecx.to_le_bytes());
        let entries = MIGRATED_LEAVES
            .iter()
            .map(|&(leaf, subleaf)| {
                let r = policy.query(leaf, subleaf, 0);
                CpuViewEntry {
                    leaf,
                    subleaf,
                    regs: [r.eax, r.ebx, r.ecx, r.edx],
                }
            })
            .collect();
        CpuView { vendor, entries }
    }

    /// Whether this appliance (`self`) can give a guest that saw `source`: the same vendor
    /// and every feature bit of [`MIGRATED_LEAVES`] the source showed.
    pub fn can_host(&self, source: &CpuView) -> Result<(), CpuMismatch> {
        if self.vendor != source.vendor {
            return Err(CpuMismatch::Vendor {
                source: vendor_string(&source.vendor),
                destination: vendor_string(&self.vendor),
            });
        }
        let mut missing = Vec::new();
        for &(leaf, subleaf) in &MIGRATED_LEAVES {
            let find = |view: &CpuView| {
                view.entries
                    .iter()
                    .find(|e| e.leaf == leaf && e.subleaf == subleaf)
                    .map(|e| e.regs)
            };
            let theirs = find(source).ok_or(CpuMismatch::Incomplete)?;
            let ours = find(self).unwrap_or_default();
            for &r in feature_registers(leaf) {
                let lacking = theirs[r] & !ours[r];
                if lacking != 0 {
                    missing.push((leaf, subleaf, REGISTER_NAMES[r], lacking));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CpuMismatch::MissingFeatures { missing })
        }
    }
}
