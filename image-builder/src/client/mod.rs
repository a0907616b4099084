//! The `keel` CLI as a client of an appliance's HTTP API: `keel status`, `keel vm …`,
//! `keel config …`, `keel store ls`, against `--appliance URL|NAME` (a name is looked up in
//! the fleet inventory) with the token from `--token`, else the inventory's, else
//! `KEEL_TOKEN`.
//!
//! Output is a table for people, or with `--json` the API's own JSON for scripts. A refused
//! request prints the API's status, message and every field path of a 422, and the command
//! exits non-zero.

mod api;
mod commands;
mod console;
pub mod pin;
pub mod table;
mod websocket;

pub use api::{ApiClient, ClientError, Target, api_error, check_base_url};
pub use commands::{
    ConfigArgs, ConfigCmd, StatusArgs, StoreArgs, StoreCmd, VmArgs, VmCmd, run_config, run_status,
    run_store, run_vm,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::fleet::{InventoryEntry, default_inventory_path, load_inventory};

/// The environment variable holding the API token when `--token` is not given.
pub const TOKEN_ENV: &str = "KEEL_TOKEN";

/// The options every client command takes: which appliance, with which token, how to print.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The appliance: its API address, https://HOST[:PORT], or its name in the inventory.
    #[arg(long, global = true, value_name = "URL|NAME")]
    pub appliance: Option<String>,
    /// The API token [default: the inventory's for a named appliance, else $KEEL_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The inventory that appliance names are looked up in
    /// [default: ~/.config/keel/fleet.toml, under $XDG_CONFIG_HOME when set].
    #[arg(long, global = true, value_name = "FILE")]
    pub fleet: Option<PathBuf>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds each request may take (connecting, and each read or write).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// The target of `--appliance` `appliance`: an `http[s]://` URL is used as it is, anything
/// else is an inventory name that `lookup` resolves. The token: `flag_token`, else the
/// inventory entry's, else `env_token`.
pub fn resolve_target(
    appliance: Option<&str>,
    flag_token: Option<String>,
    env_token: Option<String>,
    lookup: impl FnOnce(&str) -> Result<InventoryEntry, CommandError>,
) -> Result<Target, CommandError> {
    let Some(appliance) = appliance else {
        return Err(CommandError::Usage(
            "no appliance given: pass --appliance https://HOST[:PORT] or --appliance NAME \
             (a name from the inventory)"
                .to_owned(),
        ));
    };
    if appliance.contains("://") {
        return Ok(Target {
            name: None,
            url: check_base_url(appliance)?,
            token: flag_token.or(env_token),
            fingerprint: None,
            pins: None,
        });
    }
    let entry = lookup(appliance)?;
    let fingerprint = entry.checked_fingerprint();
    Ok(Target {
        url: check_base_url(&entry.url)?,
        token: flag_token.or(entry.token).or(env_token),
        fingerprint,
        name: Some(entry.name),
        pins: None,
    })
}

/// The entry called `name` in the inventory at `path`.
fn find_in(path: &Path, name: &str) -> Result<InventoryEntry, CommandError> {
    let inventory = load_inventory(path).map_err(|e| CommandError::Usage(e.to_string()))?;
    inventory.find(name).cloned().ok_or_else(|| {
        CommandError::Usage(format!(
            "no appliance named {name:?} in the inventory {} (it has: {}); give a name from \
             it or an https:// URL",
            path.display(),
            inventory.names()
        ))
    })
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
    /// The target: `--appliance` (required) as a URL, or a name looked up in the inventory
    /// (`--fleet` or the default one); the token from `--token`, else the inventory entry's,
    /// else `$KEEL_TOKEN`.
    pub fn target(&self) -> Result<Target, CommandError> {
        let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let mut target = resolve_target(
            self.appliance.as_deref(),
            self.token.clone(),
            env_token,
            |name| self.lookup_name(name),
        )?;
        // First-use pins go next to the inventory (`--fleet`, else the default one); with
        // neither a --fleet nor a home directory they are kept for this command only.
        let inventory = match &self.fleet {
            Some(path) => Some(path.clone()),
            None => default_inventory_path().ok(),
        };
        target.pins = inventory.map(|path| pin::PinStore::next_to(&path));
        Ok(target)
    }

    /// The inventory entry called `name`.
    fn lookup_name(&self, name: &str) -> Result<InventoryEntry, CommandError> {
        let path = match &self.fleet {
            Some(path) => path.clone(),
            None => default_inventory_path().map_err(|e| {
                CommandError::Usage(format!(
                    "--appliance {name:?} is not an https:// URL, so it is an inventory name, \
                     but {e}"
                ))
            })?,
        };
        find_in(&path, name)
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
