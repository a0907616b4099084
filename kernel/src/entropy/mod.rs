//! The kernel's random source for TLS keys: RDSEED and RDRAND where CPUID offers them (each
//! value checked against the carry flag, with bounded retries), mixed with TSC jitter, hashed
//! into a 256-bit seed for the ChaCha20 generator in [`keel_netstack::tls::random`].
//!
//! Only the hardware instructions are credited: jitter is mixed in but counts for nothing,
//! because under an emulator (Bochs, and QEMU TCG without `+rdrand`) the TSC advances
//! deterministically. With no good hardware source there is no seed, [`init`] says why on
//! the console, and no key is ever generated (HTTPS stays off).
//!
//! [`Pool`] (the accounting and mixing) is pure and host-tested; [`hw`] reads the CPU.

use sha2::{Digest, Sha256};

#[cfg(target_os = "none")]
mod hw;

/// Credited bytes needed before a seed is released: 256 bits.
pub const NEEDED_BYTES: usize = 32;

/// Why there is no seed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntropyError {
    /// CPUID shows neither RDSEED nor RDRAND.
    #[error(
        "this CPU has neither RDSEED nor RDRAND, and timer jitter alone is not trusted for \
         keys (an emulator's TSC is predictable): HTTPS is off; on QEMU add +rdrand to -cpu, \
         or set management.http = \"serve\" for insecure plain HTTP"
    )]
    NoHardwareSource,
    /// The instructions exist but kept failing (carry flag clear through every retry).
    #[error(
        "RDSEED/RDRAND failed {failures} times and gave only {credited} of {NEEDED_BYTES} \
         bytes: the CPU's random unit looks broken, HTTPS is off"
    )]
    HardwareFailing {
        /// Bytes obtained.
        credited: usize,
        /// Attempts that returned no value.
        failures: u32,
    },
}

/// Which hardware sources the pool drew from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// RDSEED values taken.
    pub rdseed: u32,
    /// RDRAND values taken.
    pub rdrand: u32,
    /// Jitter samples mixed in (not credited).
    pub jitter: u32,
}

impl core::fmt::Display for Sources {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} RDSEED + {} RDRAND values, {} timer-jitter samples",
            self.rdseed, self.rdrand, self.jitter
        )
    }
}

/// Collects samples into a SHA-256 state and counts what can be credited.
#[derive(Clone)]
pub struct Pool {
    hash: Sha256,
    credited: usize,
    failures: u32,
    sources: Sources,
    any_hardware: bool,
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool {
            hash: Sha256::new_with_prefix(b"keel entropy v1"),
            credited: 0,
            failures: 0,
            sources: Sources::default(),
            any_hardware: false,
        }
    }

    /// Notes that a hardware instruction exists (for the error when it then fails).
    pub fn hardware_present(&mut self) {
        self.any_hardware = true;
    }

    /// A value from RDSEED (`seed`) or RDRAND; credited in full.
    pub fn add_hardware(&mut self, value: u64, seed: bool) {
        self.hash.update([if seed { 1 } else { 2 }]);
        self.hash.update(value.to_le_bytes());
        self.credited += 8;
        if seed {
            self.sources.rdseed += 1;
        } else {
            self.sources.rdrand += 1;
        }
    }

    /// An attempt whose carry flag said "no value".
    pub fn add_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// A timing sample (TSC delta): mixed, never credited.
    pub fn add_jitter(&mut self, sample: u64) {
        self.hash.update([3]);
        self.hash.update(sample.to_le_bytes());
        self.sources.jitter += 1;
    }

    /// Whether enough was credited.
    pub fn is_full(&self) -> bool {
        self.credited >= NEEDED_BYTES
    }

    /// What was drawn.
    pub fn sources(&self) -> Sources {
        self.sources
    }

    /// The seed, once [`NEEDED_BYTES`] were credited.
    pub fn seed(&self) -> Result<[u8; 32], EntropyError> {
        if !self.any_hardware {
            return Err(EntropyError::NoHardwareSource);
        }
        if !self.is_full() {
            return Err(EntropyError::HardwareFailing {
                credited: self.credited,
                failures: self.failures,
            });
        }
        Ok(self.hash.clone().finalize().into())
    }
}

/// Gathers entropy and seeds the TLS generator; prints one line either way. Returns
/// whether the generator is seeded.
#[cfg(target_os = "none")]
pub fn init() -> bool {
    let pool = hw::gather();
    match pool.seed() {
        Ok(seed) => {
            keel_netstack::tls::random::seed(seed);
            crate::kprintln!("entropy: {}", pool.sources());
            true
        }
        Err(e) => {
            crate::kprintln!("warning: no random source for keys: {e}");
            defmt::warn!("entropy: no seed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hardware_means_no_seed_whatever_the_jitter() {
        let mut pool = Pool::new();
        for i in 0..10_000 {
            pool.add_jitter(i * 7919);
        }
        assert_eq!(pool.seed(), Err(EntropyError::NoHardwareSource));
    }

    #[test]
    fn failing_hardware_is_reported_with_counts() {
        let mut pool = Pool::new();
        pool.hardware_present();
        pool.add_hardware(1, false);
        for _ in 0..30 {
            pool.add_failure();
        }
        assert_eq!(
            pool.seed(),
            Err(EntropyError::HardwareFailing {
                credited: 8,
                failures: 30
            })
        );
        assert!(pool.seed().unwrap_err().to_string().contains("30 times"));
    }

    #[test]
    fn four_hardware_values_give_a_seed_that_depends_on_every_input() {
        let fill = |last: u64, jitter: u64| {
            let mut pool = Pool::new();
            pool.hardware_present();
            pool.add_jitter(jitter);
            for v in [11, 22, 33, last] {
                pool.add_hardware(v, true);
            }
            pool.seed().unwrap()
        };
        let a = fill(44, 5);
        assert_ne!(a, fill(45, 5));
        assert_ne!(a, fill(44, 6));
        assert_eq!(a, fill(44, 5));
    }
}
