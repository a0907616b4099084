//! `keel fleet …`: many appliances from one inventory.
//!
//! - [`inventory`] reads the inventory file (`~/.config/keel/fleet.toml` or `--fleet`).
//! - [`report`] reads the API's JSON and renders fleet tables and `--json` output.
//! - [`placement`] picks the appliance for `fleet vm create --place auto`.
//! - [`config_set`] makes `fleet config set`'s edit and summary.
//! - [`commands`] is the clap front end and the parallel queries (one thread per appliance).

pub mod commands;
pub mod config_set;
pub mod inventory;
pub mod placement;
pub mod report;

pub use inventory::{
    FleetError, Inventory, InventoryEntry, default_inventory_path, load_inventory,
};

#[cfg(test)]
mod tests;
