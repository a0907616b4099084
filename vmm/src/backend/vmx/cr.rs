//! Guest CR0 and CR4 under VMX: which bits the host owns, and the emulation of the writes
//! that touch them (SDM Vol. 3C §25.6.6, §26.3 "CR-access exits", §27.3.1.1).
//!
//! In VMX operation some control-register bits are fixed (`IA32_VMX_CR0_FIXED0/1`,
//! `IA32_VMX_CR4_FIXED0/1`): CR0.NE and CR4.VMXE must be 1 in the guest too; with
//! unrestricted guest, CR0.PE and CR0.PG are exempt. Keel owns exactly the bits it must
//! force or forbid:
//!
//! - **CR0**: the fixed-1 bits other than PE/PG (NE), the bits that may not be 1 (bits 63:32
//!   and any reserved ones), and CD/NW. VM entry and exit never load CD and NW (SDM Vol. 3C
//!   §27.3.2.1, §28.5.1): the hardware bits are shared by host and guest, so a guest that set
//!   CD would disable caching for the host too. Keel keeps them the host's and gives the guest
//!   its own copy in the read shadow (guest memory stays write-back through EPT; the guest's
//!   CD/NW are recorded, not applied). PE, PG, WP, TS, MP, EM, AM are the guest's and change
//!   without an exit; the CPU itself switches to IA-32e mode when the guest sets PG with
//!   EFER.LME (and stores LMA into the "IA-32e mode guest" entry control on the next exit).
//! - **CR4**: VMXE (fixed to 1, hidden as 0), and every bit the guest may not set: bits for
//!   features Keel's CPUID hides (SMXE, and OSXSAVE, PKE, … when their CPUID bits are clear)
//!   and bits the CPU does not allow in VMX operation.
//!
//! The guest reads owned bits from the read shadows, so it sees exactly what it wrote. A MOV
//! to CR0/CR4 (or CLTS/LMSW) that would change an owned bit relative to its shadow exits
//! (reason 28); [`CrPolicy::write_cr0`] / [`CrPolicy::write_cr4`] then check the write as the
//! CPU would (#GP for reserved bits, PG without PE, long mode without PAE, …) and compute the
//! new guest-visible values, EFER.LMA when paging turns on or off with EFER.LME, and whether
//! PAE page-directory-pointer entries must be reloaded and the guest TLB flushed.

use crate::cpuid::CpuidPolicy;
use crate::detect::VmxCapabilities;

/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.TS.
pub const CR0_TS: u64 = 1 << 3;
/// CR0.ET (hard-wired to 1 since the P6).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.NW.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;

/// The architectural CR0 bits: PE, MP, EM, TS, ET, NE, WP, AM, NW, CD, PG.
pub const CR0_DEFINED: u64 = 0xe005_003f;

/// CR4 bits (SDM Vol. 3A §2.5).
#[allow(missing_docs)]
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
}

/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// The CR4 bits whose features the guest's CPUID shows, so the guest may set them (the
/// others raise #GP, as on a CPU without the feature).
pub fn cr4_allowed_by_cpuid(cpuid: &CpuidPolicy) -> u64 {
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
    let l1 = cpuid.query(1, 0, 0);
    let l7 = if cpuid.max_basic_leaf() >= 7 {
        cpuid.query(7, 0, 0)
    } else {
        Default::default()
    };
    let mut allowed = cr4::TSD | cr4::PCE;
    for (present, bits) in [
        (bit(l1.edx, 1), cr4::VME | cr4::PVI),
        (bit(l1.edx, 2), cr4::DE),
        (bit(l1.edx, 3), cr4::PSE),
        (bit(l1.edx, 6), cr4::PAE),
        (bit(l1.edx, 7), cr4::MCE),
        (bit(l1.edx, 13), cr4::PGE),
        (bit(l1.edx, 24), cr4::OSFXSR),
        (bit(l1.edx, 25), cr4::OSXMMEXCPT),
        (bit(l1.ecx, 17), cr4::PCIDE),
        (bit(l1.ecx, 26), cr4::OSXSAVE),
        (bit(l7.ebx, 0), cr4::FSGSBASE),
        (bit(l7.ebx, 7), cr4::SMEP),
        (bit(l7.ebx, 20), cr4::SMAP),
        (bit(l7.ecx, 2), cr4::UMIP),
        (bit(l7.ecx, 3), cr4::PKE),
        (bit(l7.ecx, 7), cr4::CET),
        (bit(l7.ecx, 16), cr4::LA57),
    ] {
        if present {
            allowed |= bits;
        }
    }
    allowed
}

/// Which CR0/CR4 bits the host owns and what the hardware values must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrPolicy {
    /// `IA32_VMX_CR0_FIXED0` without PE and PG (unrestricted guest frees them).
    cr0_forced: u64,
    /// `IA32_VMX_CR0_FIXED1`.
    cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0`.
    cr4_forced: u64,
    /// `IA32_VMX_CR4_FIXED1`.
    cr4_fixed1: u64,
    /// CR4 bits the guest may set.
    cr4_allowed: u64,
}

/// The guest's view of the registers a CR write depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrView {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code.
    pub cs_long: bool,
}

/// The result of an accepted CR0/CR4 write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrChange {
    /// New guest-visible CR0.
    pub cr0: u64,
    /// New guest-visible CR4.
    pub cr4: u64,
    /// New EFER (LMA follows paging and LME).
    pub efer: u64,
    /// PAE paging is in use afterwards and the write changed a bit that makes the CPU load
    /// the four PDPTEs from CR3 (SDM Vol. 3A §4.4.1).
    pub load_pdptes: bool,
    /// The write changes how linear addresses translate: flush the guest's TLB entries.
    pub flush_tlb: bool,
}

/// The write raises #GP(0) in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

/// Whether the guest uses PAE paging (not 4-level): the case where EPT takes the PDPTEs from
/// the VMCS (SDM Vol. 3C §27.3.2.4).
pub fn pae_paging(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & CR0_PG != 0 && cr4 & cr4::PAE != 0 && efer & EFER_LMA == 0
}

impl CrPolicy {
    /// The policy for this CPU and the guest's CPUID.
    pub fn new(caps: &VmxCapabilities, cpuid: &CpuidPolicy) -> CrPolicy {
        CrPolicy::from_parts(
            caps.cr0_fixed0,
            caps.cr0_fixed1,
            caps.cr4_fixed0,
            caps.cr4_fixed1,
            cr4_allowed_by_cpuid(cpuid),
        )
    }

    /// The policy from raw fixed-bit MSR values and the CPUID-allowed CR4 bits.
    pub fn from_parts(
        cr0_fixed0: u64,
        cr0_fixed1: u64,
        cr4_fixed0: u64,
        cr4_fixed1: u64,
        cr4_cpuid: u64,
    ) -> CrPolicy {
        CrPolicy {
            cr0_forced: cr0_fixed0 & !(CR0_PE | CR0_PG),
            cr0_fixed1,
            cr4_forced: cr4_fixed0,
            cr4_fixed1,
            cr4_allowed: cr4_cpuid & cr4_fixed1 & !cr4_fixed0 & !(cr4::VMXE | cr4::SMXE),
        }
    }

    /// The CR0 guest/host mask: the bits VMX forces to 1 (NE), those it forbids, and CD/NW,
    /// which VM transitions do not switch.
    pub fn cr0_mask(&self) -> u64 {
        self.cr0_forced | !self.cr0_fixed1 | CR0_CD | CR0_NW
    }

    /// The CR0 guest-state field for a guest-visible value: forced bits on, forbidden bits
    /// off, CD/NW clear (VM entry keeps the CPU's own CD/NW anyway).
    pub fn cr0_hardware(&self, visible: u64) -> u64 {
        (visible | self.cr0_forced) & self.cr0_fixed1 & !(CR0_CD | CR0_NW)
    }

    /// The CR4 guest/host mask: VMXE and every bit the guest may not set.
    pub fn cr4_mask(&self) -> u64 {
        !self.cr4_allowed
    }

    /// The hardware CR4 for a guest-visible value: VMXE (the fixed-1 bits) on.
    pub fn cr4_hardware(&self, visible: u64) -> u64 {
        (visible | self.cr4_forced) & self.cr4_fixed1
    }

    /// CR4 bits the guest may set.
    pub fn cr4_allowed(&self) -> u64 {
        self.cr4_allowed
    }

    /// What the guest reads: owned bits from the shadow, the rest from the hardware value.
    pub fn visible(hardware: u64, shadow: u64, mask: u64) -> u64 {
        (hardware & !mask) | (shadow & mask)
    }

    /// MOV to CR0 (SDM Vol. 3A §2.5, "MOV—Move to/from Control Registers"; Vol. 3C §10.8.5
    /// for IA-32e mode activation).
    pub fn write_cr0(&self, view: &CrView, value: u64) -> Result<CrChange, GpFault> {
        if value >> 32 != 0
            || (value & CR0_PG != 0 && value & CR0_PE == 0)
            || (value & CR0_NW != 0 && value & CR0_CD == 0)
        {
            return Err(GpFault);
        }
        // Writes to reserved bits 31:0 are ignored; ET is hard-wired to 1.
        let new = (value & CR0_DEFINED & self.cr0_fixed1) | CR0_ET;
        let old = view.cr0;
        let mut efer = view.efer;
        let paging_on = old & CR0_PG == 0 && new & CR0_PG != 0;
        let paging_off = old & CR0_PG != 0 && new & CR0_PG == 0;
        if paging_on && efer & EFER_LME != 0 {
            if view.cr4 & cr4::PAE == 0 {
                return Err(GpFault);
            }
            efer |= EFER_LMA;
        }
        if paging_off && efer & EFER_LMA != 0 {
            // Leaving long mode is only allowed from compatibility mode.
            if view.cs_long {
                return Err(GpFault);
            }
            efer &= !EFER_LMA;
        }
        let changed = old ^ new;
        Ok(CrChange {
            cr0: new,
            cr4: view.cr4,
            efer,
            load_pdptes: pae_paging(new, view.cr4, efer)
                && changed & (CR0_PG | CR0_CD | CR0_NW) != 0,
            flush_tlb: changed & (CR0_PG | CR0_PE | CR0_WP | CR0_CD | CR0_NW) != 0,
        })
    }

    /// CLTS: clears CR0.TS.
    pub fn clts(&self, view: &CrView) -> Result<CrChange, GpFault> {
        self.write_cr0(view, view.cr0 & !CR0_TS)
    }

    /// LMSW: loads CR0 bits 3:0 from `source`; it can set PE but never clear it.
    pub fn lmsw(&self, view: &CrView, source: u16) -> Result<CrChange, GpFault> {
        let low = u64::from(source) & 0xf;
        self.write_cr0(view, (view.cr0 & !0xf) | low | (view.cr0 & CR0_PE))
    }

    /// MOV to CR4.
    pub fn write_cr4(&self, view: &CrView, value: u64) -> Result<CrChange, GpFault> {
        let old = view.cr4;
        let lma = view.efer & EFER_LMA != 0;
        if value & !self.cr4_allowed != 0
            || (lma && value & cr4::PAE == 0)
            || (lma && (old ^ value) & cr4::LA57 != 0)
            || (old & cr4::PCIDE == 0 && value & cr4::PCIDE != 0 && (!lma || view.cr3 & 0xfff != 0))
        {
            return Err(GpFault);
        }
        let changed = old ^ value;
        Ok(CrChange {
            cr0: view.cr0,
            cr4: value,
            efer: view.efer,
            load_pdptes: pae_paging(view.cr0, value, view.efer)
                && changed & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP) != 0,
            flush_tlb: changed
                & (cr4::PAE
                    | cr4::PGE
                    | cr4::PSE
                    | cr4::PCIDE
                    | cr4::SMEP
                    | cr4::SMAP
                    | cr4::PKE
                    | cr4::LA57)
                != 0,
        })
    }
}

/// Checks four PAE page-directory-pointer-table entries: a present entry with reserved bits
/// (2:1, 8:5, 63:52) set makes the load raise #GP (SDM Vol. 3A §4.4.1).
pub fn check_pdptes(pdptes: &[u64; 4]) -> Result<(), GpFault> {
    const RESERVED: u64 = 0b1_1110_0110 | (0xfff << 52);
    if pdptes.iter().any(|&e| e & 1 != 0 && e & RESERVED != 0) {
        Err(GpFault)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skylake-like fixed bits: CR0 PE|NE|PG must be 1, all 32 low bits may be 1; CR4 VMXE
    /// must be 1, bits 0-23 minus 15 and 19 may be 1.
    const CR0_FIXED0: u64 = 0x8000_0021;
    const CR0_FIXED1: u64 = 0xffff_ffff;
    const CR4_FIXED0: u64 = 0x2000;
    const CR4_FIXED1: u64 = 0x00ff_7fff & !(1 << 19);

    fn policy(cpuid_cr4: u64) -> CrPolicy {
        CrPolicy::from_parts(CR0_FIXED0, CR0_FIXED1, CR4_FIXED0, CR4_FIXED1, cpuid_cr4)
    }

    fn everything() -> CrPolicy {
        policy(u64::MAX)
    }

    #[test]
    fn cr0_owns_ne_cd_nw_and_the_high_half_but_not_pe_pg() {
        let p = everything();
        assert_eq!(
            p.cr0_mask(),
            CR0_NE | CR0_CD | CR0_NW | 0xffff_ffff_0000_0000
        );
        // The guest's CD/NW never reach the hardware value; it reads them from the shadow.
        assert_eq!(p.cr0_hardware(0x6000_0011), 0x31);
        assert_eq!(
            CrPolicy::visible(0x6000_0031, 0x6000_0011, p.cr0_mask()),
            0x6000_0011
        );
        assert_eq!(
            CrPolicy::visible(0x6000_0031, 0x11, p.cr0_mask()),
            0x11,
            "the host's CD/NW do not show through"
        );
        assert_eq!(p.cr0_hardware(0x10), 0x30, "real mode: NE forced");
        assert_eq!(p.cr0_hardware(0x8000_0011), 0x8000_0031);
        assert_eq!(p.cr0_hardware(0x8005_0033), 0x8005_0033);
        // The guest reads its own NE back.
        assert_eq!(CrPolicy::visible(0x30, 0x10, p.cr0_mask()), 0x10);
        assert_eq!(
            CrPolicy::visible(0x31, 0x10, p.cr0_mask()),
            0x11,
            "PE is the guest's"
        );
    }

    #[test]
    fn cr4_owns_vmxe_smxe_and_what_cpuid_hides() {
        let p = policy(cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::SMXE);
        let mask = p.cr4_mask();
        for owned in [
            cr4::VMXE,
            cr4::SMXE,
            cr4::OSXSAVE,
            cr4::PKE,
            1 << 15,
            1 << 32,
        ] {
            assert_ne!(mask & owned, 0, "{owned:#x}");
        }
        for free in [cr4::PAE, cr4::PGE, cr4::OSFXSR, cr4::OSXMMEXCPT] {
            assert_eq!(mask & free, 0, "{free:#x}");
        }
        assert_eq!(p.cr4_hardware(0), cr4::VMXE);
        assert_eq!(p.cr4_hardware(0x6a0), 0x26a0);
        assert_eq!(CrPolicy::visible(0x26a0, 0x6a0, mask), 0x6a0, "VMXE hidden");
        // A CPU that does not allow a bit in VMX operation never gives it to the guest.
        let narrow = CrPolicy::from_parts(CR0_FIXED0, CR0_FIXED1, CR4_FIXED0, 0x27ff, u64::MAX);
        assert_eq!(narrow.cr4_allowed() & cr4::OSXSAVE, 0);
    }

    #[test]
    fn cr4_allowed_follows_the_guest_cpuid() {
        use crate::detect::{CpuProbe, CpuidResult};
        struct Cpu;
        impl CpuProbe for Cpu {
            fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
                match leaf {
                    0 => CpuidResult {
                        eax: 7,
                        ebx: 0x756e_6547,
                        ecx: 0x6c65_746e,
                        edx: 0x4965_6e69,
                    },
                    // VME, DE, PSE, PAE, MCE, PGE, FXSR, SSE; PCID, XSAVE.
                    1 => CpuidResult {
                        eax: 0x50654,
                        ebx: 0,
                        ecx: (1 << 17) | (1 << 26),
                        edx: 0b11 << 24 | 1 << 13 | 0b1100_1110,
                    },
                    // FSGSBASE, SMEP, SMAP; UMIP, PKU.
                    7 => CpuidResult {
                        eax: 0,
                        ebx: 1 | (1 << 7) | (1 << 20),
                        ecx: (1 << 2) | (1 << 3),
                        edx: 0,
                    },
                    _ => CpuidResult::default(),
                }
            }
            fn rdmsr(&self, _: u32) -> Option<u64> {
                None
            }
        }
        let allowed = cr4_allowed_by_cpuid(&CpuidPolicy::from_host(&Cpu));
        for bit in [
            cr4::VME,
            cr4::PAE,
            cr4::PGE,
            cr4::OSFXSR,
            cr4::OSXMMEXCPT,
            cr4::FSGSBASE,
            cr4::SMEP,
            cr4::SMAP,
            cr4::UMIP,
        ] {
            assert_ne!(allowed & bit, 0, "{bit:#x}");
        }
        // The policy hides XSAVE, PCID and PKU from guests: their CR4 bits raise #GP.
        for bit in [cr4::OSXSAVE, cr4::PKE, cr4::VMXE, cr4::SMXE] {
            assert_eq!(allowed & bit, 0, "{bit:#x}");
        }
    }

    #[test]
    fn paging_on_with_lme_activates_long_mode() {
        let p = everything();
        let view = CrView {
            cr0: 0x11,
            cr4: cr4::PAE,
            efer: EFER_LME,
            ..CrView::default()
        };
        let c = p.write_cr0(&view, 0x8000_0011 | CR0_NE).unwrap();
        assert_eq!(c.cr0, 0x8000_0031);
        assert_eq!(c.efer, EFER_LME | EFER_LMA);
        assert!(c.flush_tlb);
        assert!(!c.load_pdptes, "4-level paging uses no PDPTE registers");
        // Without PAE: #GP.
        let no_pae = CrView { cr4: 0, ..view };
        assert_eq!(p.write_cr0(&no_pae, 0x8000_0011), Err(GpFault));
        // And back out from compatibility mode (not from 64-bit code).
        let long = CrView {
            cr0: c.cr0,
            efer: c.efer,
            ..view
        };
        assert_eq!(p.write_cr0(&long, 0x11).unwrap().efer, EFER_LME);
        let in_64_bit = CrView {
            cs_long: true,
            ..long
        };
        assert_eq!(p.write_cr0(&in_64_bit, 0x11), Err(GpFault));
    }

    #[test]
    fn bad_cr0_values_raise_gp() {
        let p = everything();
        let view = CrView {
            cr0: 0x11,
            ..CrView::default()
        };
        for bad in [1 << 32, CR0_PG, CR0_PE | CR0_NW] {
            assert_eq!(p.write_cr0(&view, bad), Err(GpFault), "{bad:#x}");
        }
        // Reserved low bits are ignored, ET stays 1.
        assert_eq!(p.write_cr0(&view, 0x1 | (1 << 6)).unwrap().cr0, 0x11);
    }

    #[test]
    fn pae_paging_reloads_pdptes() {
        let p = everything();
        let view = CrView {
            cr0: 0x11,
            cr4: cr4::PAE,
            ..CrView::default()
        };
        let c = p.write_cr0(&view, 0x8000_0011).unwrap();
        assert!(c.load_pdptes);
        assert_eq!(c.efer, 0);
        let paged = CrView { cr0: c.cr0, ..view };
        assert!(
            p.write_cr4(&paged, cr4::PAE | cr4::PGE)
                .unwrap()
                .load_pdptes
        );
        assert!(
            !p.write_cr4(&paged, cr4::PAE | cr4::OSFXSR)
                .unwrap()
                .load_pdptes
        );
    }

    #[test]
    fn clts_and_lmsw() {
        let p = everything();
        let view = CrView {
            cr0: 0x11 | CR0_TS | CR0_NE,
            ..CrView::default()
        };
        assert_eq!(p.clts(&view).unwrap().cr0, 0x11 | CR0_NE);
        // LMSW sets MP and TS but cannot clear PE.
        assert_eq!(
            p.lmsw(&view, (CR0_MP | CR0_TS) as u16).unwrap().cr0,
            0x11 | CR0_NE | CR0_MP | CR0_TS
        );
        let real = CrView {
            cr0: 0x10,
            ..CrView::default()
        };
        assert_eq!(
            p.lmsw(&real, 1).unwrap().cr0,
            0x11,
            "LMSW can enter protected mode"
        );
    }

    #[test]
    fn cr4_writes_are_checked() {
        let p = policy(cr4::PAE | cr4::PGE | cr4::PCIDE | cr4::OSFXSR);
        let view = CrView::default();
        assert_eq!(p.write_cr4(&view, cr4::VMXE), Err(GpFault), "no nested VMX");
        assert_eq!(p.write_cr4(&view, cr4::SMXE), Err(GpFault));
        assert_eq!(
            p.write_cr4(&view, cr4::OSXSAVE),
            Err(GpFault),
            "hidden by CPUID"
        );
        assert_eq!(p.write_cr4(&view, cr4::PAE).unwrap().cr4, cr4::PAE);
        let long = CrView {
            cr0: 0x8000_0031,
            cr4: cr4::PAE,
            efer: EFER_LME | EFER_LMA,
            cr3: 0x1000,
            cs_long: true,
        };
        assert_eq!(
            p.write_cr4(&long, 0),
            Err(GpFault),
            "PAE stays on in long mode"
        );
        assert!(p.write_cr4(&long, cr4::PAE | cr4::PCIDE).is_ok());
        let dirty_cr3 = CrView {
            cr3: 0x1001,
            ..long
        };
        assert_eq!(
            p.write_cr4(&dirty_cr3, cr4::PAE | cr4::PCIDE),
            Err(GpFault),
            "PCIDE needs CR3[11:0] = 0"
        );
        assert_eq!(
            p.write_cr4(&view, cr4::PCIDE),
            Err(GpFault),
            "PCIDE needs long mode"
        );
    }

    #[test]
    fn pdpte_reserved_bits() {
        assert!(check_pdptes(&[0x1001, 0, 0x2001, 0]).is_ok());
        assert!(check_pdptes(&[0x1001 | 0x2, 0, 0, 0]).is_err());
        assert!(check_pdptes(&[0x1001 | 0x80, 0, 0, 0]).is_err());
        assert!(
            check_pdptes(&[0x2, 0, 0, 0]).is_ok(),
            "not present: ignored"
        );
    }
}
