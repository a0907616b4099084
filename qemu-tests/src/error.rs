//! The harness's one error type.

use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong while starting or driving an emulator. Variants that happen while an
/// emulator runs carry a full failure report (console tail, decoded COM2 log, emulator
/// output, command line) in their message.
///
/// `Debug` prints the same text as `Display`, so `.unwrap()` and `.expect()` on a harness
/// result show a readable report instead of an escaped string.
#[derive(thiserror::Error)]
pub enum Error {
    /// Creating the temporary directory, copying the image or writing a config file failed.
    #[error("could not prepare {what}: {source}")]
    Prepare {
        /// What was being prepared.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The emulator binary could not be started.
    #[error("could not start {program} (is it installed? {hint}): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Which Debian package provides it.
        hint: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The emulator did not connect its COM1 to the harness.
    #[error("{emulator} did not connect COM1 to the harness within {timeout:?}\n{report}")]
    Connect {
        /// The emulator.
        emulator: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The failure report.
        report: String,
    },
    /// A wait for console output timed out.
    #[error("timed out after {timeout:?} waiting for {pattern} on COM1\n{report}")]
    WaitTimeout {
        /// The pattern waited for.
        pattern: String,
        /// The timeout.
        timeout: Duration,
        /// The failure report.
        report: String,
    },
    /// The console ended (the emulator exited) while waiting for output.
    #[error("COM1 closed ({why}) while waiting for {pattern}\n{report}")]
    ConsoleClosed {
        /// The pattern waited for.
        pattern: String,
        /// How the stream ended.
        why: String,
        /// The failure report.
        report: String,
    },
    /// Typing on COM1 failed.
    #[error("could not type {text:?} on COM1: {source}\n{report}")]
    Type {
        /// What was being typed.
        text: String,
        /// The underlying error.
        source: io::Error,
        /// The failure report.
        report: String,
    },
    /// The emulator did not exit by itself in time.
    #[error("{emulator} did not exit by itself within {timeout:?}\n{report}")]
    ExitTimeout {
        /// The emulator.
        emulator: String,
        /// The timeout.
        timeout: Duration,
        /// The failure report.
        report: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn prepare(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Prepare { what, source }
    }
}
