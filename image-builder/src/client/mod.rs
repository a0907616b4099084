//! The `keel` CLI as a client of an appliance's HTTP API: `keel status`, `keel vm …`,
//! `keel config …`, `keel store ls`, against `--appliance URL` with the token from
//! `--token` or `KEEL_TOKEN`.
//!
//! Output is a table for people, or with `--json` the API's own JSON for scripts. A refused
//! request prints the API's status, message and every field path of a 422, and the command
//! exits non-zero.

mod api;
mod commands;
mod console;
pub mod table;

pub use api::{ApiClient, ClientError, Target, api_error, check_base_url};
pub use commands::{
    ConfigArgs, ConfigCmd, StatusArgs, StoreArgs, StoreCmd, VmArgs, VmCmd, run_config, run_status,
    run_store, run_vm,
};

use std::time::Duration;

use clap::Args;

/// The environment variable holding the API token when `--token` is not given.
pub const TOKEN_ENV: &str = "KEEL_TOKEN";

/// The options every client command takes: which appliance, with which token, how to print.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The appliance: its API address, http://HOST[:PORT].
    #[arg(long, global = true, value_name = "URL")]
    pub appliance: Option<String>,
    /// The API token [default: $KEEL_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds each request may take (connecting, and each read or write).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// What a client command can fail with.
#[derive(Debug)]
pub enum CommandError {
    /// The request failed or the API refused it.
    Client(ClientError),
    /// The command line or the environment is not usable as given.
    Usage(String),
    /// A local file or terminal operation failed.
    Local(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Client(e) => e.fmt(f),
            CommandError::Usage(m) | CommandError::Local(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError::Client(e)
    }
}

impl Connection {
    /// The target: `--appliance` (required), the token from `--token` else `$KEEL_TOKEN`.
    pub fn target(&self) -> Result<Target, CommandError> {
        let Some(appliance) = &self.appliance else {
            return Err(CommandError::Usage(
                "no appliance given: pass --appliance http://HOST[:PORT]".to_owned(),
            ));
        };
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()));
        let url = check_base_url(appliance)?;
        Ok(Target {
            name: None,
            url,
            token,
        })
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Result<Duration, CommandError> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            return Err(CommandError::Usage(format!(
                "--timeout must be a number of seconds above 0 and at most 3600, not {}",
                self.timeout
            )));
        }
        Ok(Duration::from_secs_f64(self.timeout))
    }

    /// A client of the target.
    pub fn client(&self) -> Result<ApiClient, CommandError> {
        let timeout = self.timeout()?;
        Ok(self.target()?.client(timeout)?)
    }
}

#[cfg(test)]
mod tests;
