//! What the CPU reports about a VM exit (SDM Vol. 3C §25.9, §28.2): basic exit reasons,
//! the exit qualifications Keel decodes (I/O, control-register access, EPT violation), the
//! interruption-information format shared by event injection and IDT-vectoring information,
//! and the names of VM-instruction errors and VM-entry failures for messages. Pure decoding,
//! host-tested against the SDM's layouts.

/// Basic exit reasons (SDM Vol. 3C appendix C).
#[allow(missing_docs)]
pub mod reason {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const INIT: u16 = 3;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMLAUNCH: u16 = 20;
    pub const VMPTRLD: u16 = 21;
    pub const VMPTRST: u16 = 22;
    pub const VMREAD: u16 = 23;
    pub const VMRESUME: u16 = 24;
    pub const VMWRITE: u16 = 25;
    pub const VMXOFF: u16 = 26;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const IO_INSTRUCTION: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const INVALID_GUEST_STATE: u16 = 33;
    pub const MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const MACHINE_CHECK: u16 = 41;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIGURATION: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const INVVPID: u16 = 53;
    pub const XSETBV: u16 = 55;
}

/// Exit reason bit 31: the "exit" is a failed VM entry (SDM Vol. 3C §27.8).
pub const EXIT_REASON_ENTRY_FAILURE: u64 = 1 << 31;

/// An I/O-instruction exit qualification (SDM Vol. 3C table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Port.
    pub port: u16,
    /// Access size in bytes (1, 2 or 4).
    pub size: u8,
    /// IN/INS (otherwise OUT/OUTS).
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
}

impl IoQualification {
    /// Decodes the qualification.
    pub fn decode(q: u64) -> IoQualification {
        IoQualification {
            port: (q >> 16) as u16,
            size: match q & 7 {
                0 => 1,
                1 => 2,
                _ => 4,
            },
            input: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
        }
    }
}

/// What a control-register access did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessKind {
    /// MOV to CRn from the GPR.
    MovTo,
    /// MOV from CRn to the GPR.
    MovFrom,
    /// CLTS.
    Clts,
    /// LMSW with this 16-bit source.
    Lmsw(u16),
}

/// A control-register-access exit qualification (SDM Vol. 3C table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrQualification {
    /// Control register number.
    pub cr: u8,
    /// The access.
    pub kind: CrAccessKind,
    /// The GPR (`Gpr` encoding) for MOV to/from CR.
    pub gpr: u8,
}

impl CrQualification {
    /// Decodes the qualification.
    pub fn decode(q: u64) -> CrQualification {
        let kind = match (q >> 4) & 3 {
            0 => CrAccessKind::MovTo,
            1 => CrAccessKind::MovFrom,
            2 => CrAccessKind::Clts,
            _ => CrAccessKind::Lmsw((q >> 16) as u16),
        };
        CrQualification {
            cr: (q & 0xf) as u8,
            kind,
            gpr: ((q >> 8) & 0xf) as u8,
        }
    }
}

/// EPT-violation qualification bit 2: the access was an instruction fetch (SDM Vol. 3C
/// table 28-7).
pub const EPT_VIOLATION_FETCH: u64 = 1 << 2;

/// Interruption-information fields (VM-entry, VM-exit, IDT-vectoring; SDM Vol. 3C §25.8.3,
/// §25.9.2): vector in 7:0, type in 10:8, error-code valid in 11, valid in 31.
pub mod intr {
    /// Valid bit.
    pub const VALID: u32 = 1 << 31;
    /// An error code is delivered.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// Type: external interrupt.
    pub const TYPE_EXTERNAL: u32 = 0 << 8;
    /// Type: NMI.
    pub const TYPE_NMI: u32 = 2 << 8;
    /// Type: hardware exception.
    pub const TYPE_HARDWARE_EXCEPTION: u32 = 3 << 8;
    /// Type: software interrupt (INT n).
    pub const TYPE_SOFTWARE_INTERRUPT: u32 = 4 << 8;
    /// Type: privileged software exception (INT1).
    pub const TYPE_PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5 << 8;
    /// Type: software exception (INT3, INTO).
    pub const TYPE_SOFTWARE_EXCEPTION: u32 = 6 << 8;
    /// The type bits.
    pub const TYPE_MASK: u32 = 7 << 8;
    /// The bits VM entry accepts (30:12 are reserved there; the IDT-vectoring field's bit 12
    /// is undefined).
    pub const ENTRY_BITS: u32 = VALID | ERROR_CODE | TYPE_MASK | 0xff;
}

/// Exceptions that push an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// The VM-entry interruption information for a hardware exception. Under unrestricted guest
/// an error code is delivered if and only if the guest is in protected mode and the
/// exception has one (SDM Vol. 3C §27.2.1.3): real mode pushes none.
pub fn exception_injection(vector: u8, protected_mode: bool) -> u32 {
    let mut info = intr::VALID | intr::TYPE_HARDWARE_EXCEPTION | u32::from(vector);
    if protected_mode && exception_has_error_code(vector) {
        info |= intr::ERROR_CODE;
    }
    info
}

/// Whether re-injecting an event of this interruption type needs the VM-entry instruction
/// length (software interrupts and exceptions, SDM Vol. 3C §27.2.1.3).
pub fn needs_instruction_length(info: u32) -> bool {
    matches!(
        info & intr::TYPE_MASK,
        intr::TYPE_SOFTWARE_INTERRUPT
            | intr::TYPE_PRIVILEGED_SOFTWARE_EXCEPTION
            | intr::TYPE_SOFTWARE_EXCEPTION
    )
}

/// The SDM's name for a VM-instruction error number (SDM Vol. 3C §31.4, table 31-1).
pub fn instruction_error_name(n: u32) -> Option<&'static str> {
    Some(match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => return None,
    })
}

/// The SDM's description of a VM-entry failure's basic exit reason (SDM Vol. 3C §27.8).
pub fn entry_failure_name(reason: u16) -> Option<&'static str> {
    Some(match reason {
        reason::INVALID_GUEST_STATE => "invalid guest state",
        reason::MSR_LOADING => "MSR loading",
        reason::MACHINE_CHECK => "machine-check event",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualifications() {
        // OUT DX, AL to 0x3F8.
        let q = IoQualification::decode(0x03f8_0000);
        assert_eq!(
            q,
            IoQualification {
                port: 0x3f8,
                size: 1,
                input: false,
                string: false,
                rep: false
            }
        );
        // IN EAX, DX from 0x2E0.
        let q = IoQualification::decode(0x02e0_0000 | 0x8 | 0x3);
        assert_eq!((q.port, q.size, q.input), (0x2e0, 4, true));
        // IN AX, imm8.
        let q = IoQualification::decode(0x0060_0000 | 0x40 | 0x8 | 0x1);
        assert_eq!((q.port, q.size, q.input), (0x60, 2, true));
        // REP OUTSB.
        let q = IoQualification::decode(0x03f8_0000 | 0x30);
        assert!(q.string && q.rep && !q.input);
    }

    #[test]
    fn cr_qualifications() {
        // MOV CR0, RAX (access type 0, register 0).
        assert_eq!(
            CrQualification::decode(0x0),
            CrQualification {
                cr: 0,
                kind: CrAccessKind::MovTo,
                gpr: 0
            }
        );
        // MOV CR4, R9.
        assert_eq!(
            CrQualification::decode(0x904),
            CrQualification {
                cr: 4,
                kind: CrAccessKind::MovTo,
                gpr: 9
            }
        );
        // MOV RBX, CR3.
        let q = CrQualification::decode(0x313);
        assert_eq!((q.cr, q.kind, q.gpr), (3, CrAccessKind::MovFrom, 3));
        // CLTS.
        assert_eq!(CrQualification::decode(0x20).kind, CrAccessKind::Clts);
        // LMSW with source 0x000b.
        assert_eq!(
            CrQualification::decode(0x000b_0030).kind,
            CrAccessKind::Lmsw(0xb)
        );
    }

    #[test]
    fn exception_injection_encoding() {
        // #GP(0) in protected mode carries an error code; in real mode it must not.
        assert_eq!(exception_injection(13, true), 0x8000_0b0d);
        assert_eq!(exception_injection(13, false), 0x8000_030d);
        assert_eq!(exception_injection(6, true), 0x8000_0306);
        assert!(exception_has_error_code(14));
        assert!(!exception_has_error_code(3));
        assert!(needs_instruction_length(0x8000_0403), "INT n");
        assert!(needs_instruction_length(0x8000_0603), "INT3");
        assert!(!needs_instruction_length(0x8000_0b0e), "#PF");
    }

    #[test]
    fn instruction_error_table() {
        assert_eq!(
            instruction_error_name(7),
            Some("VM entry with invalid control field(s)")
        );
        assert_eq!(
            instruction_error_name(8),
            Some("VM entry with invalid host-state field(s)")
        );
        assert_eq!(
            instruction_error_name(5),
            Some("VMRESUME with non-launched VMCS")
        );
        assert_eq!(
            instruction_error_name(28),
            Some("invalid operand to INVEPT/INVVPID")
        );
        assert_eq!(instruction_error_name(14), None, "14 is not assigned");
        assert_eq!(instruction_error_name(0), None);
        assert_eq!(entry_failure_name(33), Some("invalid guest state"));
        assert_eq!(entry_failure_name(34), Some("MSR loading"));
        assert_eq!(entry_failure_name(12), None);
        use crate::vcpu::EntryFailure;
        assert_eq!(
            EntryFailure::VmxInstructionError(8).to_string(),
            "VM entry failed: VM-instruction error 8 (VM entry with invalid host-state field(s))"
        );
        assert_eq!(
            EntryFailure::VmxEntryCheck {
                reason: 33,
                qualification: 0
            }
            .to_string(),
            "VM entry failed: invalid guest state (exit reason 33 with the entry-failure bit), \
             qualification 0x0"
        );
    }
}
