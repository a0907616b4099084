//! The `keel fleet` subcommands: clap arguments and the work, one thread per appliance.
//!
//! Every appliance is asked in parallel (`std::thread::scope`) — except by `fleet config
//! set`, which changes them one after the other — each request with its own
//! timeout (`--timeout`, connect and read), so one appliance that is off, unplugged or hung
//! costs at most its timeout per request and shows up as a row saying so.
//!
//! Exit status: `fleet status` and `fleet vm list` report and exit 0 when the inventory
//! could be read, even with appliances down (the table says which; `--json` has
//! `reachable: false` / `error`); `fleet vm create` and `fleet config set`, which change
//! things, exit non-zero when the change did not happen on every appliance it was meant for.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::config_set::{self, ConfigOutcome};
use super::inventory::{
    FleetError, Inventory, InventoryEntry, default_inventory_path, load_inventory,
};
use super::placement::{self, Candidate, NoPlacement};
use super::report::{self, ApplianceStatus, StatusRow, VmListRow};
use crate::client::{ApiClient, ClientError};

/// `keel fleet …`.
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// The inventory [default: $XDG_CONFIG_HOME/keel/fleet.toml, else ~/.config/keel/fleet.toml].
    #[arg(long, value_name = "FILE", global = true)]
    pub fleet: Option<PathBuf>,
    /// Seconds each request to an appliance may take (connect and answer); an appliance
    /// that takes longer is reported unreachable.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = parse_timeout, global = true)]
    pub timeout: f64,
    /// JSON on stdout instead of a table (one object per appliance or VM).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: FleetCommand,
}

/// The fleet subcommands.
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// One row per appliance: reachable or why not, version, CPUs, free memory, VMs
    /// running/total, virtualization. Exits 0 even when some are down.
    Status {
        /// Also the machine's vendor, product and serial number (SMBIOS).
        #[arg(long)]
        wide: bool,
    },
    /// VMs across the fleet.
    #[command(subcommand)]
    Vm(FleetVmCommand),
    /// The configuration of every appliance.
    #[command(subcommand)]
    Config(FleetConfigCommand),
}

/// `keel fleet vm …`.
#[derive(Subcommand, Debug)]
pub enum FleetVmCommand {
    /// Every VM of every appliance, with its appliance.
    List,
    /// Define a VM on one appliance: the one with the most free memory that has its files
    /// (`--place auto`), or the one named.
    Create(CreateArgs),
}

/// `keel fleet vm create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The VM's name.
    pub name: String,
    /// Kernel file in the appliance's guest store (bzImage or PVH ELF).
    #[arg(long, value_name = "FILE")]
    pub kernel: String,
    /// Initrd file in the guest store.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<String>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long = "mem", value_name = "MIB", default_value_t = 256)]
    pub memory_mib: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Start the VM at the appliance's boot.
    #[arg(long)]
    pub autostart: bool,
    /// Start it once defined.
    #[arg(long)]
    pub start: bool,
    /// `auto` (most free memory among the appliances with its files in their store) or an
    /// appliance's inventory name.
    #[arg(long, value_name = "auto|APPLIANCE", default_value = "auto")]
    pub place: String,
}

/// `keel fleet config …`.
#[derive(Subcommand, Debug)]
pub enum FleetConfigCommand {
    /// Set PATH to VALUE on every appliance (GET with ETag, edit, PUT with If-Match), with a
    /// line per appliance: changed, unchanged, refused (the API's message) or not reached.
    /// Paths and values as for `config set` on the console: `hostname web1`,
    /// `network.dns ["10.0.0.1"]`.
    Set {
        /// Where: `hostname`, `network.mode`, `vms[0].memory_mib`.
        path: String,
        /// The value: JSON if it parses as JSON, else a bare string.
        value: String,
    },
}

/// Why a fleet command failed as a whole (per-appliance failures are rows, not errors).
#[derive(Debug, thiserror::Error)]
pub enum FleetCommandError {
    /// The inventory could not be read.
    #[error(transparent)]
    Inventory(#[from] FleetError),
    /// `--place NAME` names no appliance of the inventory.
    #[error("--place {name}: no such appliance in {}; it has: {names} (or use --place auto)", inventory.display())]
    NoSuchAppliance {
        /// The name given.
        name: String,
        /// The inventory file.
        inventory: PathBuf,
        /// The names it has.
        names: String,
    },
    /// `--place auto` found no appliance that can take the VM.
    #[error(transparent)]
    NoPlacement(#[from] NoPlacement),
    /// The chosen appliance refused or could not be reached for the create or start.
    #[error("{action} on {appliance} ({url}): {source}")]
    Appliance {
        /// What was being done (`POST /api/v1/vms`).
        action: String,
        /// The inventory name.
        appliance: String,
        /// Its URL.
        url: String,
        /// What the client said (the API's message and field paths when it refused); boxed
        /// to keep the error small.
        source: Box<ClientError>,
    },
}

/// `--timeout`: positive, finite seconds.
fn parse_timeout(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "{arg:?} is not a number of seconds between 0 and 3600"
        )),
    }
}

/// Runs a `keel fleet` command, printing its table or JSON on stdout.
pub fn run(args: FleetArgs) -> Result<ExitCode, FleetCommandError> {
    let path = match &args.fleet {
        Some(path) => path.clone(),
        None => default_inventory_path()?,
    };
    let inventory = load_inventory(&path)?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let pins = crate::client::pin::PinStore::next_to(&path);
    let fleet = Fleet::with_pins(&inventory, timeout, Some(pins));
    match args.command {
        FleetCommand::Status { wide } => {
            let rows = fleet.status();
            print_out(args.json, report::status_json(&rows), || {
                report::status_table(&rows, wide)
            });
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Vm(FleetVmCommand::List) => {
            let rows = fleet.vm_list();
            print_out(args.json, report::vm_json(&rows), || {
                report::vm_table(&rows)
            });
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Vm(FleetVmCommand::Create(create)) => fleet.create(&create, &path, args.json),
        FleetCommand::Config(FleetConfigCommand::Set {
            path: setting,
            value,
        }) => {
            let outcomes = fleet.config_set(&setting, &value);
            print_out(args.json, config_set::summary_json(&outcomes), || {
                config_set::summary(&outcomes)
            });
            Ok(if outcomes.iter().all(|(_, o)| o.is_success()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print_out(json: bool, value: Value, table: impl FnOnce() -> String) {
    if json {
        // A Value always serializes.
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", table());
    }
}

/// The inventory's appliances, each with its client (or why none could be made).
pub(super) struct Fleet {
    appliances: Vec<(InventoryEntry, Result<ApiClient, ClientError>)>,
}

impl Fleet {
    /// The fleet's clients; `https://` appliances are pinned in `pins` (else in memory).
    pub(super) fn with_pins(
        inventory: &Inventory,
        timeout: Duration,
        pins: Option<crate::client::pin::PinStore>,
    ) -> Fleet {
        let env_token = std::env::var("KEEL_TOKEN").ok().filter(|t| !t.is_empty());
        let appliances = inventory
            .appliances
            .iter()
            .map(|entry| {
                let token = entry.token.clone().or_else(|| env_token.clone());
                let url = entry.url.trim_end_matches('/');
                let client = ApiClient::pinned(
                    url,
                    token,
                    timeout,
                    entry.checked_fingerprint(),
                    pins.clone(),
                );
                (entry.clone(), client)
            })
            .collect();
        Fleet { appliances }
    }

    /// `query` on one appliance after the other, in inventory order.
    fn each_in_turn<T>(
        &self,
        query: impl Fn(&ApiClient) -> Result<T, ClientError>,
    ) -> Vec<Result<T, ClientError>> {
        self.appliances
            .iter()
            .map(|(_, client)| match client {
                Ok(client) => query(client),
                Err(e) => Err(clone_error(e)),
            })
            .collect()
    }

    /// `query` on every appliance at once, one thread each; the answers in inventory order.
    fn each<T: Send>(
        &self,
        query: impl Fn(&ApiClient) -> Result<T, ClientError> + Sync,
    ) -> Vec<Result<T, ClientError>> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .appliances
                .iter()
                .map(|(_, client)| {
                    let query = &query;
                    scope.spawn(move || match client {
                        Ok(client) => query(client),
                        Err(e) => Err(clone_error(e)),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ClientError::BadResponse {
                            url: String::new(),
                            reason: "the query thread panicked (a bug in keel)".to_string(),
                        })
                    })
                })
                .collect()
        })
    }

    pub(super) fn status(&self) -> Vec<StatusRow> {
        let answers = self.each(|client| {
            let system = client.get("/api/v1/system")?;
            let vms = client.get("/api/v1/vms")?;
            Ok((system, vms))
        });
        self.appliances
            .iter()
            .zip(answers)
            .map(|((entry, _), answer)| StatusRow {
                name: entry.name.clone(),
                url: entry.url.clone(),
                status: answer
                    .map_err(|e| e.to_string())
                    .and_then(|(system, vms)| ApplianceStatus::from_bodies(&system, &vms)),
            })
            .collect()
    }

    fn vm_list(&self) -> Vec<VmListRow> {
        let answers = self.each(|client| client.get("/api/v1/vms"));
        self.appliances
            .iter()
            .zip(answers)
            .map(|((entry, _), answer)| VmListRow {
                appliance: entry.name.clone(),
                vms: answer
                    .map_err(|e| e.to_string())
                    .and_then(|body| report::parse_vms(&body)),
            })
            .collect()
    }

    fn create(
        &self,
        args: &CreateArgs,
        inventory: &std::path::Path,
        json_out: bool,
    ) -> Result<ExitCode, FleetCommandError> {
        let mut files = vec![args.kernel.as_str()];
        files.extend(args.initrd.as_deref());
        let (index, why) = if args.place == "auto" {
            let answers = self.each(|client| {
                let system = client.get("/api/v1/system")?;
                let store = client.get("/api/v1/store")?;
                Ok((system, store))
            });
            let candidates: Vec<Candidate> = self
                .appliances
                .iter()
                .zip(answers)
                .map(|((entry, _), answer)| Candidate {
                    name: entry.name.clone(),
                    answer: answer
                        .map_err(|e| e.to_string())
                        .and_then(|(system, store)| {
                            Ok((report::parse_system(&system)?, report::parse_store(&store)?))
                        }),
                })
                .collect();
            let placed = placement::choose(&candidates, &files, args.memory_mib)?;
            let index = self
                .appliances
                .iter()
                .position(|(e, _)| e.name == placed.chosen)
                .unwrap_or_default();
            (index, placed.explain(&files))
        } else {
            let index = self
                .appliances
                .iter()
                .position(|(e, _)| e.name == args.place)
                .ok_or_else(|| FleetCommandError::NoSuchAppliance {
                    name: args.place.clone(),
                    inventory: inventory.to_path_buf(),
                    names: self
                        .appliances
                        .iter()
                        .map(|(e, _)| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            (index, format!("{}: named with --place", args.place))
        };
        let (entry, client) = &self.appliances[index];
        let failed = |action: &str, source: ClientError| FleetCommandError::Appliance {
            action: action.to_string(),
            appliance: entry.name.clone(),
            url: entry.url.clone(),
            source: Box::new(source),
        };
        let client = client
            .as_ref()
            .map_err(|e| failed("connecting", clone_error(e)))?;
        let mut definition = json!({
            "name": args.name,
            "kernel": args.kernel,
            "memory_mib": args.memory_mib,
            "vcpus": args.vcpus,
            "cmdline": args.cmdline,
            "autostart": args.autostart,
        });
        if let Some(initrd) = &args.initrd {
            definition["initrd"] = json!(initrd);
        }
        let created = client
            .send("POST", "/api/v1/vms", Some(&definition), None)
            .map_err(|e| failed("POST /api/v1/vms", e))?;
        let started = if args.start {
            let path = format!("/api/v1/vms/{}/start", args.name);
            // The VM exists by now: say so, so that a retry does not try to create it again.
            let action = format!("POST {path} (VM {} was created)", args.name);
            Some(
                client
                    .send("POST", &path, None, None)
                    .map_err(|e| failed(&action, e))?,
            )
        } else {
            None
        };
        if json_out {
            let out = json!({
                "appliance": entry.name,
                "url": entry.url,
                "why": why,
                "vm": started.unwrap_or(created),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        } else {
            println!(
                "created VM {}{} on {} ({})",
                args.name,
                if args.start { " and started it" } else { "" },
                entry.name,
                entry.url
            );
            println!("why: {why}");
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Applies the setting appliance by appliance, in inventory order (not all at once: a
    /// setting that cuts an appliance off shows on the first one's row before the next is
    /// changed, and the operator reads the summary in the order it happened).
    pub(super) fn config_set(&self, setting: &str, value: &str) -> Vec<(String, ConfigOutcome)> {
        let outcomes = self.each_in_turn(|client| {
            let (current, etag) = client.get_with_etag("/api/v1/config")?;
            let (new, changes) = match config_set::edited(&current, setting, value) {
                Ok(Some(edit)) => edit,
                Ok(None) => return Ok(ConfigOutcome::Unchanged),
                Err(reason) => return Ok(ConfigOutcome::Refused(reason)),
            };
            // Without an ETag the PUT would need `*`, which could overwrite someone else's
            // change made since the GET: refuse rather than risk it.
            let Some(etag) = etag else {
                return Ok(ConfigOutcome::Failed(
                    "GET /api/v1/config answered without an ETag; not overwriting blindly"
                        .to_string(),
                ));
            };
            client.send("PUT", "/api/v1/config", Some(&new.to_value()), Some(&etag))?;
            Ok(ConfigOutcome::Changed(changes))
        });
        self.appliances
            .iter()
            .zip(outcomes)
            .map(|((entry, _), outcome)| {
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e @ ClientError::Api { .. }) => ConfigOutcome::Refused(e.to_string()),
                    Err(e) => ConfigOutcome::Failed(e.to_string()),
                };
                (entry.name.clone(), outcome)
            })
            .collect()
    }
}

/// A copy of a client error for each thread that reports it (the client's error holds only
/// strings and numbers, but need not be `Clone`).
fn clone_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::BadUrl { url, reason } => ClientError::BadUrl {
            url: url.clone(),
            reason: reason.clone(),
        },
        ClientError::Unreachable { url, reason } => ClientError::Unreachable {
            url: url.clone(),
            reason: reason.clone(),
        },
        ClientError::Api {
            status,
            message,
            errors,
        } => ClientError::Api {
            status: *status,
            message: message.clone(),
            errors: errors.clone(),
        },
        ClientError::CertificateChanged {
            url,
            pinned,
            presented,
            pin_file,
        } => ClientError::CertificateChanged {
            url: url.clone(),
            pinned: pinned.clone(),
            presented: presented.clone(),
            pin_file: pin_file.clone(),
        },
        ClientError::Pins(e) => ClientError::Pins(e.clone()),
        ClientError::BadResponse { url, reason } => ClientError::BadResponse {
            url: url.clone(),
            reason: reason.clone(),
        },
    }
}
