//! The operator console on COM1: a line editor, the command table and the shell loop.
//!
//! `line` and `command` are pure and host-tested; `shell` runs them against the UART and the
//! kernel's services. (The full console with history and completion is a later issue.)

pub mod command;
pub mod line;
#[cfg(target_os = "none")]
pub mod shell;
