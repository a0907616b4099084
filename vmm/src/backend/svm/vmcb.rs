//! The VMCB (AMD64 APM Vol. 2, Appendix B): field offsets, and setting up a guest.
//!
//! The VMCB is one 4 KiB page: the control area (intercepts, exit information, event
//! injection, nested paging) at 0x000 and the state-save area at 0x400. [`Vmcb`] is a typed
//! view over the page's bytes, so the set-up logic is plain Rust, unit-tested on the host
//! against the APM's offsets.

use crate::vcpu::{Registers, Segment};

/// Control-area and save-area offsets (APM Vol. 2, Tables B-1 and B-2).
#[allow(missing_docs)]
pub mod offset {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_DR: usize = 0x004;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE_PA: usize = 0x040;
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENT_INJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    pub const CLEAN_BITS: usize = 0x0c0;
    pub const NEXT_RIP: usize = 0x0c8;

    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Intercept bits in `INTERCEPT_MISC1` (APM Vol. 2, Table B-1, offset 0x00C).
#[allow(missing_docs)]
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const VINTR: u32 = 1 << 4;
    pub const IRET: u32 = 1 << 20;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const PAUSE: u32 = 1 << 23;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits in `INTERCEPT_MISC2` (offset 0x010).
#[allow(missing_docs)]
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const ICEBP: u32 = 1 << 8;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_CONDITIONAL: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// Exit codes (APM Vol. 2, Appendix C).
#[allow(missing_docs)]
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7a;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const ICEBP: u64 = 0x88;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID; TCG stores it as 0x0000_0000_ffff_ffff, so compare the low 32 bits.
    pub const INVALID_LOW32: u64 = 0xffff_ffff;
}

/// `VINTR` bit: virtualize interrupt masking (guest RFLAGS.IF does not mask host interrupts).
pub const V_INTR_MASKING: u64 = 1 << 24;
/// `VINTR` bit 8: a virtual interrupt is pending (V_IRQ).
pub const V_IRQ: u64 = 1 << 8;
/// `VINTR` bits 19:16: the virtual interrupt's priority (V_INTR_PRIO), here the highest.
pub const V_INTR_PRIO_MAX: u64 = 0xf << 16;
/// `VINTR` bit 20: the virtual interrupt ignores the guest's TPR (V_IGN_TPR).
pub const V_IGN_TPR: u64 = 1 << 20;
/// `INTERRUPT_SHADOW` bit 0: the guest is in an STI/MOV SS interrupt shadow.
pub const INTERRUPT_SHADOW_ACTIVE: u64 = 1 << 0;
/// `EVENTINJ` bit 31: an event is queued for injection.
pub const EVENT_VALID: u64 = 1 << 31;

/// `EVENTINJ` for an NMI (TYPE = 2, vector 2, APM §15.20).
pub const EVENT_NMI: u64 = EVENT_VALID | (2 << 8) | 2;

/// `EVENTINJ` for external interrupt `vector` (TYPE = 0, APM §15.20).
pub fn event_interrupt(vector: u8) -> u64 {
    EVENT_VALID | u64::from(vector)
}
/// EFER.SVME: must be set in the guest's EFER for VMRUN to accept the VMCB (APM §15.5.1).
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;
/// Power-on PAT value.
pub const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

/// Event-injection field (APM Vol. 2 §15.20): an exception with or without error code.
pub fn event_exception(vector: u8, error_code: Option<u32>) -> u64 {
    const VALID: u64 = 1 << 31;
    const TYPE_EXCEPTION: u64 = 3 << 8;
    const ERROR_VALID: u64 = 1 << 11;
    let mut e = VALID | TYPE_EXCEPTION | u64::from(vector);
    if let Some(code) = error_code {
        e |= ERROR_VALID | (u64::from(code) << 32);
    }
    e
}

/// Converts the neutral access-rights layout to the VMCB's 12-bit attribute format
/// (access byte in bits 0-7, AVL/L/DB/G in bits 8-11).
pub fn attrib_from_access(access: u32) -> u16 {
    ((access & 0xff) | ((access >> 4) & 0xf00)) as u16
}

/// Converts the VMCB attribute format back to the neutral layout.
pub fn access_from_attrib(attrib: u16) -> u32 {
    let a = u32::from(attrib);
    (a & 0xff) | ((a & 0xf00) << 4)
}

/// A typed view over one VMCB page: `Vmcb<&[u8; 4096]>` reads ([`Vmcb::view`]),
/// `Vmcb<&mut [u8; 4096]>` reads and writes ([`Vmcb::new`]).
pub struct Vmcb<B> {
    bytes: B,
}

impl<'a> Vmcb<&'a mut [u8; 4096]> {
    /// Wraps a VMCB page for reading and writing.
    pub fn new(bytes: &'a mut [u8; 4096]) -> Self {
        Vmcb { bytes }
    }
}

impl<'a> Vmcb<&'a [u8; 4096]> {
    /// Wraps a VMCB page for reading.
    pub fn view(bytes: &'a [u8; 4096]) -> Self {
        Vmcb { bytes }
    }
}

impl<B: core::borrow::Borrow<[u8; 4096]>> Vmcb<B> {
    fn b(&self) -> &[u8; 4096] {
        self.bytes.borrow()
    }

    /// Reads a 64-bit field.
    pub fn get(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.b()[off..off + 8]);
        u64::from_le_bytes(b)
    }

    /// Reads a 32-bit field.
    pub fn get32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.b()[off..off + 4]);
        u32::from_le_bytes(b)
    }

    /// Reads an 8-bit field.
    pub fn get8(&self, off: usize) -> u8 {
        self.b()[off]
    }

    /// Reads a segment (selector, attrib, limit, base at +0, +2, +4, +8).
    pub fn segment(&self, off: usize) -> Segment {
        let b = self.b();
        let selector = u16::from_le_bytes([b[off], b[off + 1]]);
        let attrib = u16::from_le_bytes([b[off + 2], b[off + 3]]);
        Segment {
            selector,
            access: access_from_attrib(attrib),
            limit: self.get32(off + 4),
            base: self.get(off + 8),
        }
    }

    /// Reads the guest registers kept in the VMCB into `regs` (other GPRs untouched).
    pub fn registers_into(&self, regs: &mut Registers) {
        regs.es = self.segment(offset::ES);
        regs.cs = self.segment(offset::CS);
        regs.ss = self.segment(offset::SS);
        regs.ds = self.segment(offset::DS);
        regs.fs = self.segment(offset::FS);
        regs.gs = self.segment(offset::GS);
        regs.ldtr = self.segment(offset::LDTR);
        regs.tr = self.segment(offset::TR);
        let gdtr = self.segment(offset::GDTR);
        let idtr = self.segment(offset::IDTR);
        regs.gdtr = (gdtr.base, gdtr.limit as u16);
        regs.idtr = (idtr.base, idtr.limit as u16);
        regs.efer = self.get(offset::EFER) & !EFER_SVME;
        regs.cr0 = self.get(offset::CR0);
        regs.cr2 = self.get(offset::CR2);
        regs.cr3 = self.get(offset::CR3);
        regs.cr4 = self.get(offset::CR4);
        regs.rflags = self.get(offset::RFLAGS);
        regs.rip = self.get(offset::RIP);
        regs.gpr[4] = self.get(offset::RSP);
        regs.gpr[0] = self.get(offset::RAX);
    }
}

impl<B: core::borrow::BorrowMut<[u8; 4096]>> Vmcb<B> {
    fn b_mut(&mut self) -> &mut [u8; 4096] {
        self.bytes.borrow_mut()
    }

    /// Writes a 64-bit field.
    pub fn set(&mut self, off: usize, value: u64) {
        self.b_mut()[off..off + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes a 32-bit field.
    pub fn set32(&mut self, off: usize, value: u32) {
        self.b_mut()[off..off + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// Writes an 8-bit field.
    pub fn set8(&mut self, off: usize, value: u8) {
        self.b_mut()[off] = value;
    }

    /// Writes a segment.
    pub fn set_segment(&mut self, off: usize, seg: &Segment) {
        let b = self.b_mut();
        b[off..off + 2].copy_from_slice(&seg.selector.to_le_bytes());
        b[off + 2..off + 4].copy_from_slice(&attrib_from_access(seg.access).to_le_bytes());
        self.set32(off + 4, seg.limit);
        self.set(off + 8, seg.base);
    }

    /// Sets the intercepts Keel uses for every guest, the permission maps, ASID and nested
    /// paging (APM §15.9-15.13, §15.25).
    pub fn set_controls(&mut self, iopm_pa: u64, msrpm_pa: u64, asid: u32, ncr3: u64) {
        use misc1::*;
        self.set32(
            offset::INTERCEPT_MISC1,
            INTR | NMI | CPUID | INVD | HLT | INVLPGA | IOIO_PROT | MSR_PROT | SHUTDOWN,
        );
        use misc2::*;
        self.set32(
            offset::INTERCEPT_MISC2,
            VMRUN
                | VMMCALL
                | VMLOAD
                | VMSAVE
                | STGI
                | CLGI
                | SKINIT
                | MONITOR
                | MWAIT
                | MWAIT_CONDITIONAL
                | XSETBV,
        );
        self.set(offset::IOPM_BASE_PA, iopm_pa);
        self.set(offset::MSRPM_BASE_PA, msrpm_pa);
        self.set32(offset::GUEST_ASID, asid);
        self.set(offset::VINTR, V_INTR_MASKING);
        self.set(offset::NP_ENABLE, 1);
        self.set(offset::N_CR3, ncr3);
        self.set32(offset::CLEAN_BITS, 0);
    }

    /// Loads guest registers into the save area (RAX and RSP included; the other GPRs live
    /// outside the VMCB). EFER.SVME is forced on, as VMRUN requires.
    pub fn set_registers(&mut self, regs: &Registers) {
        self.set_segment(offset::ES, &regs.es);
        self.set_segment(offset::CS, &regs.cs);
        self.set_segment(offset::SS, &regs.ss);
        self.set_segment(offset::DS, &regs.ds);
        self.set_segment(offset::FS, &regs.fs);
        self.set_segment(offset::GS, &regs.gs);
        self.set_segment(offset::LDTR, &regs.ldtr);
        self.set_segment(offset::TR, &regs.tr);
        let table = |base: u64, limit: u16| Segment {
            base,
            limit: limit.into(),
            ..Segment::default()
        };
        self.set_segment(offset::GDTR, &table(regs.gdtr.0, regs.gdtr.1));
        self.set_segment(offset::IDTR, &table(regs.idtr.0, regs.idtr.1));
        // CPL follows SS.DPL in protected mode and is 0 in real mode.
        self.set8(offset::CPL, ((regs.ss.access >> 5) & 3) as u8);
        self.set(offset::EFER, regs.efer | EFER_SVME);
        self.set(offset::CR0, regs.cr0);
        self.set(offset::CR2, regs.cr2);
        self.set(offset::CR3, regs.cr3);
        self.set(offset::CR4, regs.cr4);
        self.set(offset::RFLAGS, regs.rflags);
        self.set(offset::RIP, regs.rip);
        self.set(offset::RSP, regs.gpr[4]);
        self.set(offset::RAX, regs.gpr[0]);
        self.set(offset::DR6, 0xffff_0ff0);
        self.set(offset::DR7, 0x400);
        self.set(offset::G_PAT, DEFAULT_PAT);
    }
}

/// The I/O permission map: 12 KiB, one bit per port, set = intercept (APM §15.10.1).
pub const IOPM_BYTES: usize = 12 * 1024;
/// The MSR permission map: 8 KiB, two bits per MSR (read, write) in three ranges (§15.11).
pub const MSRPM_BYTES: usize = 8 * 1024;

/// Byte offset and bit (of the read bit; the write bit is the next) of `msr` in the MSRPM,
/// or `None` for MSRs outside the three mapped ranges (always intercepted).
pub fn msrpm_position(msr: u32) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0x0000_0000..=0x0000_1fff => (0x000, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    let bit = index as usize * 2;
    Some((base + bit / 8, (bit % 8) as u8))
}

/// Fills an MSRPM: intercept everything except `passthrough` MSRs.
pub fn fill_msrpm(map: &mut [u8], passthrough: impl Fn(u32) -> bool) {
    map.fill(0xff);
    for range in [
        0x0000_0000u32..0x0000_2000,
        0xc000_0000..0xc000_2000,
        0xc001_0000..0xc001_2000,
    ] {
        for msr in range {
            if passthrough(msr)
                && let Some((byte, bit)) = msrpm_position(msr)
            {
                map[byte] &= !(0b11 << bit);
            }
        }
    }
}

/// Registers of an application processor after INIT and a start-up IPI with `vector`
/// ([`StartMode::StartupIpi`](crate::vcpu::StartMode::StartupIpi)).
pub fn startup_ipi_registers(vector: u8) -> Registers {
    let mut regs = real_mode_registers(0);
    regs.cs.selector = u16::from(vector) << 8;
    regs.cs.base = u64::from(vector) << 12;
    // After INIT the general registers are 0 (EDX aside, which no start-up code reads).
    regs.gpr = Default::default();
    regs
}

/// Real-mode reset-like register state at `0000:entry` (APM §14.1.3, adapted: flat payloads
/// start like a boot sector).
pub fn real_mode_registers(entry: u16) -> Registers {
    let data = Segment {
        selector: 0,
        base: 0,
        limit: 0xffff,
        access: 0x93,
    };
    let mut regs = Registers {
        rip: u64::from(entry),
        rflags: 0x2,
        cr0: 0x10, // ET; caches enabled so guests run at full speed
        cs: Segment {
            access: 0x9b,
            ..data
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            access: 0x8b,
        },
        ldtr: Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            access: 0x82,
        },
        gdtr: (0, 0xffff),
        idtr: (0, 0x3ff),
        ..Registers::default()
    };
    regs.gpr[4] = u64::from(entry); // stack just below the payload, like a BIOS hands over
    regs.gpr[2] = 0x80; // DL: boot drive number, as a BIOS passes it
    regs
}

/// 64-bit long-mode register state (flat segments from the loader's GDT: code 0x08, data
/// 0x10).
pub fn long_mode_registers(entry: u64, cr3: u64, gdt: u64, stack: u64, rsi: u64) -> Registers {
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        access: 0xc093,
    };
    let mut regs = Registers {
        rip: entry,
        rflags: 0x2,
        cr0: 0x8005_0033, // PG, WP, NE, ET, MP, PE
        cr3,
        cr4: 0x6a0,                               // PAE, PGE, OSFXSR, OSXMMEXCPT
        efer: EFER_LME | EFER_LMA | EFER_NXE | 1, // SCE too: the loader's kernels expect it
        cs: Segment {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            access: 0xa09b,
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            selector: 0,
            base: 0,
            limit: 0xffff,
            access: 0x8b,
        },
        ldtr: Segment {
            selector: 0,
            base: 0,
            limit: 0,
            access: 0x1_0082,
        },
        gdtr: (gdt, 0x17),
        idtr: (0, 0),
        ..Registers::default()
    };
    regs.gpr[4] = stack;
    regs.gpr[6] = rsi;
    regs
}

/// 32-bit protected-mode register state with paging off, for the PVH entry
/// ([`StartMode::Protected32`](crate::vcpu::StartMode::Protected32)): flat 4 GiB code (0x08)
/// and data (0x10) segments, CR0 = PE | ET, CR4 = EFER = 0, EBX = `ebx`, TR a busy 32-bit TSS
/// at 0 with limit 0x67 as the PVH ABI states, GDTR and IDTR empty.
pub fn protected_mode_registers(entry: u32, ebx: u32) -> Registers {
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        access: 0xc093, // read/write, accessed, S, P, D/B, G
    };
    let mut regs = Registers {
        rip: u64::from(entry),
        rflags: 0x2,
        cr0: 0x11, // PE, ET
        cs: Segment {
            selector: 0x08,
            access: 0xc09b, // execute/read, accessed, S, P, D/B (32-bit), G
            ..data
        },
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment {
            selector: 0,
            base: 0,
            limit: 0x67,
            access: 0x8b,
        },
        ldtr: Segment {
            selector: 0,
            base: 0,
            limit: 0,
            access: 0x1_0082,
        },
        gdtr: (0, 0),
        idtr: (0, 0),
        ..Registers::default()
    };
    regs.gpr[3] = u64::from(ebx);
    regs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    fn page() -> Box<[u8; 4096]> {
        Box::new([0u8; 4096])
    }

    #[test]
    fn attribute_conversion_round_trips() {
        // 64-bit code: P, S, type 0xB, L.
        assert_eq!(attrib_from_access(0xa09b), 0xa9b);
        assert_eq!(access_from_attrib(0xa9b), 0xa09b);
        assert_eq!(attrib_from_access(0xc093), 0xc93);
        for access in [0x93u32, 0x9b, 0x8b, 0xc09b, 0xa09b, 0xf0ff] {
            assert_eq!(access_from_attrib(attrib_from_access(access)), access);
        }
    }

    #[test]
    fn controls_land_at_apm_offsets() {
        let mut p = page();
        Vmcb::new(&mut p).set_controls(0x1000, 0x4000, 7, 0x9000);
        assert_eq!(
            u32::from_le_bytes(p[0x0c..0x10].try_into().unwrap()) & (1 << 24),
            1 << 24,
            "HLT"
        );
        assert_eq!(p[0x10] & 1, 1, "VMRUN intercept is mandatory");
        assert_eq!(
            u64::from_le_bytes(p[0x40..0x48].try_into().unwrap()),
            0x1000
        );
        assert_eq!(
            u64::from_le_bytes(p[0x48..0x50].try_into().unwrap()),
            0x4000
        );
        assert_eq!(p[0x58], 7);
        assert_eq!(p[0x90], 1, "NP_ENABLE");
        assert_eq!(
            u64::from_le_bytes(p[0xb0..0xb8].try_into().unwrap()),
            0x9000
        );
        assert_eq!(p[0x63] & 1, 1, "V_INTR_MASKING (bit 24)");
    }

    #[test]
    fn real_mode_state_round_trips_with_svme_forced() {
        let mut p = page();
        let mut v = Vmcb::new(&mut p);
        let regs = real_mode_registers(0x7c00);
        v.set_registers(&regs);
        assert_eq!(v.get(offset::RIP), 0x7c00);
        assert_eq!(v.get(offset::EFER), EFER_SVME);
        assert_eq!(v.segment(offset::CS).access, 0x9b);
        let mut back = Registers::default();
        v.registers_into(&mut back);
        assert_eq!(back.efer, 0, "SVME is hidden from the neutral view");
        assert_eq!(back.cs, regs.cs);
        assert_eq!(back.rip, regs.rip);
        assert_eq!(back.gpr[4], regs.gpr[4]);
        assert_eq!(back.code_bitness(), 16);
    }

    #[test]
    fn a_startup_ipi_starts_at_its_page_in_real_mode() {
        let regs = startup_ipi_registers(0x9A);
        assert_eq!(regs.cs.selector, 0x9A00);
        assert_eq!(regs.cs.base, 0x9A000);
        assert_eq!(regs.rip, 0);
        assert_eq!(regs.code_bitness(), 16);
        assert_eq!(regs.cr0 & 1, 0, "real mode");
        assert_eq!(regs.gpr, [0; 16]);
        assert_eq!(regs.ds.base, 0);
    }

    #[test]
    fn long_mode_state_is_64_bit() {
        let regs = long_mode_registers(0x100000, 0x9000, 0x500, 0x8000, 0x7000);
        assert_eq!(regs.code_bitness(), 64);
        let mut p = page();
        let mut v = Vmcb::new(&mut p);
        v.set_registers(&regs);
        assert_eq!(v.segment(offset::CS).access, 0xa09b);
        assert_eq!(v.get(offset::EFER), regs.efer | EFER_SVME);
    }

    #[test]
    fn protected_mode_state_is_flat_32_bit_without_paging() {
        let regs = protected_mode_registers(0x100_0000, 0x6000);
        assert_eq!(regs.code_bitness(), 32);
        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.gpr[3], 0x6000, "EBX: hvm_start_info");
        assert_eq!((regs.cr0, regs.cr4, regs.efer), (0x11, 0, 0));
        assert_eq!(regs.rflags & 0x200, 0, "interrupts off");
        for seg in [regs.cs, regs.ds, regs.es, regs.ss] {
            assert_eq!((seg.base, seg.limit), (0, 0xffff_ffff));
        }
        assert_eq!(
            (regs.tr.base, regs.tr.limit, regs.tr.access),
            (0, 0x67, 0x8b)
        );
        let mut p = page();
        let mut v = Vmcb::new(&mut p);
        v.set_registers(&regs);
        assert_eq!(v.get(offset::EFER), EFER_SVME);
        assert_eq!(v.segment(offset::CS).access, 0xc09b);
        let mut back = Registers::default();
        v.registers_into(&mut back);
        assert_eq!(back.code_bitness(), 32);
        assert_eq!(back.cr0, 0x11);
    }

    #[test]
    fn msrpm_positions_follow_the_apm() {
        assert_eq!(msrpm_position(0), Some((0, 0)));
        assert_eq!(msrpm_position(0x174), Some((0x5d, 0)));
        assert_eq!(msrpm_position(0xc000_0080), Some((0x820, 0)));
        assert_eq!(msrpm_position(0xc000_0101), Some((0x840, 2)));
        assert_eq!(msrpm_position(0xc001_0000), Some((0x1000, 0)));
        assert_eq!(msrpm_position(0x4b56_4d00), None);
        let mut map = std::vec![0u8; MSRPM_BYTES];
        fill_msrpm(&mut map, |m| m == 0xc000_0100);
        assert_eq!(map[0x840], !0b11);
        assert_eq!(map[0x820], 0xff);
    }

    #[test]
    fn exception_injection_encoding() {
        assert_eq!(event_exception(6, None), 0x8000_0306);
        assert_eq!(event_exception(13, Some(0)), 0x8000_0b0d);
        assert_eq!(event_exception(14, Some(2)) >> 32, 2);
    }
}
