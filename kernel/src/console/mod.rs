//! The operator console on COM1: a line editor with history and completion, the command
//! table and the shell.
//!
//! `line`, `history`, `complete` and `command` are pure and host-tested; `shell` runs them
//! against the UART as a client of the kernel's main loop (`crate::runtime`), which feeds it
//! the typed bytes and lends it the VMs, the settings and the network plane.

pub mod command;
pub mod complete;
pub mod disk_cmds;
pub mod history;
pub mod line;
pub mod mem_cmds;
#[cfg(target_os = "none")]
pub mod net_cmds;
#[cfg(target_os = "none")]
pub mod shell;
pub mod snapshot_cmds;
