//! One way to save and restore every stateful part of a VM: [`Persist`].
//!
//! Each part — a device model, a vCPU, the interrupt routing, guest memory — turns itself
//! into a plain `State` value (serde-serialisable, no pointers, no host addresses) and is
//! rebuilt from one with `restore`, which validates every field and fails with an error
//! naming what is wrong instead of building a part the hardware could never be in. A
//! restore that fails leaves nothing behind. The whole-VM encoding (header, checksum,
//! sections) is built from these states; snapshots and live migration stand on it.
//!
//! The shape follows Firecracker's `Persist` (`State`, `ConstructorArgs`, `Error`): what a
//! part needs from outside to exist (host frames, the VM's memory, the backend) comes in as
//! `ConstructorArgs`, never through the state.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A part of a VM that can be saved to a plain state and rebuilt from one.
pub trait Persist: Sized {
    /// Everything the part holds that the guest can observe, as plain data.
    type State: Clone + Serialize + DeserializeOwned;
    /// What the part needs from outside to be rebuilt (host services, the VM's clock, …).
    type ConstructorArgs;
    /// Why a state was refused.
    type Error: core::fmt::Display;

    /// The part's state now.
    fn save(&self) -> Self::State;

    /// Rebuilds the part from `state`, refusing a state the part cannot be in.
    fn restore(args: Self::ConstructorArgs, state: &Self::State) -> Result<Self, Self::Error>;
}
