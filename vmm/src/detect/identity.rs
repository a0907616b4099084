//! Naming the CPU: vendor string, brand string, family/model/stepping (SDM Vol. 2A "CPUID",
//! leaves 0, 1 and 8000_0002h–8000_0004h; APM Vol. 3 appendix E).

use alloc::format;
use alloc::string::String;
use core::fmt;

use super::{CpuProbe, LeafRange, leaf};

/// The 12-byte vendor identification string of `CPUID` leaf 0 (`EBX`, `EDX`, `ECX`).
///
/// Bytes that are not printable ASCII are stored as `?`, so the string is always valid text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VendorId([u8; 12]);

impl VendorId {
    /// Intel's vendor string.
    pub const INTEL: VendorId = VendorId(*b"GenuineIntel");
    /// AMD's vendor string.
    pub const AMD: VendorId = VendorId(*b"AuthenticAMD");
    /// Hygon's vendor string (AMD Zen-derived, has SVM).
    pub const HYGON: VendorId = VendorId(*b"HygonGenuine");

    /// Builds a vendor id from raw bytes; non-printable bytes become `?`.
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        VendorId(bytes.map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'?'
            }
        }))
    }

    pub(super) fn read(cpu: &impl CpuProbe) -> Self {
        let r = cpu.cpuid(leaf::VENDOR, 0);
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        bytes[4..8].copy_from_slice(&r.edx.to_le_bytes());
        bytes[8..12].copy_from_slice(&r.ecx.to_le_bytes());
        VendorId::from_bytes(bytes)
    }

    /// The vendor string, e.g. `GenuineIntel`.
    pub fn as_str(&self) -> &str {
        // Every byte is printable ASCII (see `from_bytes`), so this never falls back.
        core::str::from_utf8(&self.0).unwrap_or("????????????")
    }

    /// The raw 12 bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// `GenuineIntel`.
    pub fn is_intel(&self) -> bool {
        *self == Self::INTEL
    }

    /// `AuthenticAMD`.
    pub fn is_amd(&self) -> bool {
        *self == Self::AMD
    }

    /// AMD or an AMD-derived design (Hygon), whose native extension is SVM.
    pub fn is_amd_family(&self) -> bool {
        self.is_amd() || *self == Self::HYGON
    }
}

impl fmt::Display for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for VendorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VendorId({:?})", self.as_str())
    }
}

/// Who made this CPU and what it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuIdentity {
    /// Vendor string of leaf 0.
    pub vendor: VendorId,
    /// Brand string of leaves 8000_0002h–8000_0004h, trimmed; when the CPU has none, a name
    /// built from the vendor, family, model and stepping.
    pub model_name: String,
    /// Display family: base family, plus the extended family when the base is 0xF.
    pub family: u32,
    /// Display model: base model, with the extended model as high nibble for families 6 and
    /// 0xF.
    pub model: u32,
    /// Stepping id.
    pub stepping: u32,
}

/// Reads the CPU's vendor, brand string and family/model/stepping.
///
/// Family and model follow the SDM's "DisplayFamily"/"DisplayModel" rule (Vol. 2A, CPUID
/// leaf 1, figure 3-6), which also gives AMD's documented values (the extended model bits are
/// zero on AMD parts below family 0xF).
pub fn identify(cpu: &impl CpuProbe) -> CpuIdentity {
    let leaves = LeafRange::read(cpu);
    let vendor = VendorId::read(cpu);
    let version = leaves.cpuid(cpu, leaf::FEATURES, 0).eax;

    let stepping = version & 0xF;
    let base_model = (version >> 4) & 0xF;
    let base_family = (version >> 8) & 0xF;
    let ext_model = (version >> 16) & 0xF;
    let ext_family = (version >> 20) & 0xFF;

    let family = if base_family == 0xF {
        base_family + ext_family
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xF {
        (ext_model << 4) | base_model
    } else {
        base_model
    };

    let model_name = brand_string(cpu, &leaves).unwrap_or_else(|| {
        format!("{vendor} family {family:#x} model {model:#x} stepping {stepping}")
    });

    CpuIdentity {
        vendor,
        model_name,
        family,
        model,
        stepping,
    }
}

/// The trimmed brand string, or `None` when the CPU has no brand-string leaves or they are
/// blank.
fn brand_string(cpu: &impl CpuProbe, leaves: &LeafRange) -> Option<String> {
    if !leaves.has(leaf::BRAND_LAST) {
        return None;
    }
    let mut bytes = [0u8; 48];
    for (chunk, l) in bytes
        .chunks_exact_mut(16)
        .zip(leaf::BRAND_FIRST..=leaf::BRAND_LAST)
    {
        let r = cpu.cpuid(l, 0);
        for (dst, reg) in chunk.chunks_exact_mut(4).zip([r.eax, r.ebx, r.ecx, r.edx]) {
            dst.copy_from_slice(&reg.to_le_bytes());
        }
    }
    // The string is NUL-terminated; older Intel parts right-justify it with leading spaces.
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(&bytes[..end]);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        None
    } else {
        Some(String::from(trimmed))
    }
}
