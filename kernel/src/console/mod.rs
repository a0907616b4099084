//! The operator console on COM1: a line editor with history and completion, the command
//! table and the shell loop.
//!
//! `line`, `history`, `complete` and `command` are pure and host-tested; `shell` runs them
//! against the UART and the kernel's services.

pub mod command;
pub mod complete;
pub mod history;
pub mod line;
#[cfg(target_os = "none")]
pub mod shell;
