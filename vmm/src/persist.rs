//! One way to save and restore the stateful parts of a VM: [`Persist`].
//!
//! Each device model, the interrupt routing and the platform as a whole
//! ([`Devices`](crate::devices::Devices)) turn themselves into a plain `State` value
//! (serde-serialisable, no pointers, no host addresses) and are rebuilt from one with
//! `restore`, which validates every field and fails with an error naming what is wrong
//! instead of building a part the hardware could never be in. A restore that fails leaves
//! nothing behind.
//!
//! Two parts take the same shape through a seam of their own, because the trait's cannot
//! carry them: a vCPU is a `Box<dyn Vcpu>` made by the VM's backend and its state is read and
//! loaded at a host TSC ([`Vcpu::save_state`](crate::vcpu::Vcpu::save_state);
//! [`VmBackend::restore_vcpu`](crate::backend::VmBackend::restore_vcpu) is its `restore`, the
//! backend and APIC id its constructor arguments), and guest RAM is far larger than a `State`
//! value should be, so the [`snapshot`](crate::snapshot) encoding streams it as a section of
//! its own. The whole-VM encoding (header, sections, checksum) is built from these; snapshots
//! and live migration stand on it.
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
