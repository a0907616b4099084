//! The single-appliance commands: their arguments and what they print.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::table::{bytes, duration_s, key_values, render};
use super::{ApiClient, ClientError, CommandError, Connection};

/// `keel status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: Connection,
}

/// `keel store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: StoreCmd,
}

/// The `keel store` commands.
#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// List the guest store's files (kernels, initrds, disk images).
    Ls,
}

/// `keel vm`.
#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: VmCmd,
}

/// The `keel vm` commands.
#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// List the appliance's VMs.
    List,
    /// Show one VM in detail.
    Info {
        /// The VM's name (or an ad-hoc VM's number).
        name: String,
    },
    /// Define a VM in the appliance's configuration (it starts with `vm start`, or at boot
    /// with --autostart).
    Create(CreateArgs),
    /// Start a VM.
    Start {
        /// The VM.
        name: String,
    },
    /// Stop a VM: press its power button (it is forced off after the appliance's grace
    /// time), or with --force stop it at once.
    Stop {
        /// The VM.
        name: String,
        /// Stop at once instead of pressing the power button.
        #[arg(long)]
        force: bool,
    },
    /// Restart a VM (stopping it first as `stop` does).
    Restart {
        /// The VM.
        name: String,
        /// Stop at once instead of pressing the power button.
        #[arg(long)]
        force: bool,
    },
    /// Stop a VM if it runs and remove its definition from the configuration.
    Destroy {
        /// The VM.
        name: String,
    },
    /// Print a VM's console output so far.
    Log {
        /// The VM.
        name: String,
    },
    /// Attach to a VM's serial console: its output is printed, what you type is sent to
    /// it; Ctrl-] detaches.
    Console {
        /// The VM.
        name: String,
    },
}

/// `keel vm create`: the options become a VM definition as the configuration's `[[vms]]`
/// has it; the appliance checks it.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The VM's name.
    pub name: String,
    /// Kernel to boot (a guest store file).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Firmware to boot instead of a kernel (e.g. hypervisor-fw).
    #[arg(long, conflicts_with = "kernel")]
    pub firmware: Option<String>,
    /// Initrd (a guest store file).
    #[arg(long)]
    pub initrd: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub mem: u64,
    /// vCPUs [default: the appliance's default].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// A disk (repeatable): file=NAME (a guest store image file) or partition=NAME (a guest
    /// disk partition), with ",readonly" for a read-only one.
    #[arg(long = "disk", value_name = "file=NAME|partition=NAME[,readonly]", value_parser = parse_disk)]
    pub disks: Vec<Value>,
    /// A network card (repeatable): bridged or internal, with ",mac=aa:bb:cc:dd:ee:ff" for a
    /// fixed MAC address.
    #[arg(long = "nic", value_name = "NETWORK[,mac=MAC]", value_parser = parse_nic)]
    pub nics: Vec<Value>,
    /// Start it when the appliance boots.
    #[arg(long)]
    pub autostart: bool,
}

/// `keel config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: ConfigCmd,
}

/// The `keel config` commands.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the configuration, or the value at PATH (`hostname`, `network.dns[0]`,
    /// `vms[1].memory_mib`).
    Get {
        /// Where in the configuration.
        path: Option<String>,
    },
    /// Set the value at PATH (JSON if it parses as JSON, else a string) and save the
    /// configuration, refusing if someone else changed it since it was read.
    Set {
        /// Where in the configuration.
        path: String,
        /// The new value.
        value: String,
    },
    /// Edit the whole configuration (JSON) in $EDITOR and save it, refusing if someone else
    /// changed it meanwhile.
    Edit,
}

fn parse_disk(arg: &str) -> Result<Value, String> {
    let mut parts = arg.split(',');
    let source = parts.next().unwrap_or("");
    let (kind, name) = source
        .split_once('=')
        .filter(|(k, n)| (*k == "file" || *k == "partition") && !n.is_empty())
        .ok_or_else(|| format!("expected file=NAME or partition=NAME, not {source:?}"))?;
    let mut disk = Map::new();
    disk.insert(kind.to_owned(), Value::String(name.to_owned()));
    for option in parts {
        match option {
            "readonly" => {
                disk.insert("readonly".to_owned(), Value::Bool(true));
            }
            other => return Err(format!("unknown disk option {other:?} (only readonly)")),
        }
    }
    Ok(Value::Object(disk))
}

fn parse_nic(arg: &str) -> Result<Value, String> {
    let mut parts = arg.split(',');
    let network = parts.next().unwrap_or("");
    if network.is_empty() {
        return Err("expected a network (bridged or internal)".to_owned());
    }
    let mut nic = Map::new();
    nic.insert("network".to_owned(), Value::String(network.to_owned()));
    for option in parts {
        match option.split_once('=') {
            Some(("mac", mac)) if !mac.is_empty() => {
                nic.insert("mac".to_owned(), Value::String(mac.to_owned()));
            }
            _ => return Err(format!("unknown NIC option {option:?} (only mac=MAC)")),
        }
    }
    Ok(Value::Object(nic))
}

impl CreateArgs {
    /// The VM definition, as `POST /api/v1/vms` takes it.
    pub fn definition(&self) -> Value {
        let mut vm = Map::new();
        vm.insert("name".into(), json!(self.name));
        vm.insert("memory_mib".into(), json!(self.mem));
        let optional = [
            ("kernel", &self.kernel),
            ("firmware", &self.firmware),
            ("initrd", &self.initrd),
            ("cmdline", &self.cmdline),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                vm.insert(key.into(), json!(value));
            }
        }
        if let Some(vcpus) = self.vcpus {
            vm.insert("vcpus".into(), json!(vcpus));
        }
        if !self.disks.is_empty() {
            vm.insert("disks".into(), Value::Array(self.disks.clone()));
        }
        if !self.nics.is_empty() {
            vm.insert("nics".into(), Value::Array(self.nics.clone()));
        }
        if self.autostart {
            vm.insert("autostart".into(), Value::Bool(true));
        }
        Value::Object(vm)
    }
}

/// A path segment with everything but unreserved characters percent-encoded, so a VM name
/// can never reach another route.
pub fn path_segment(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn vm_path(name: &str, tail: &str) -> String {
    format!("/api/v1/vms/{}{tail}", path_segment(name))
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn text(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn number(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

/// `keel status`.
pub fn run_status(args: &StatusArgs) -> Result<(), CommandError> {
    let client = args.connection.client()?;
    let system = client.get("/api/v1/system")?;
    let vms = client.get("/api/v1/vms")?;
    if args.connection.json {
        print_json(&json!({ "system": system, "vms": vms }));
        return Ok(());
    }
    print!("{}", status_text(client.base_url(), &system, &vms));
    Ok(())
}

/// `keel status`'s text: the system's facts and the VM counts.
pub fn status_text(url: &str, system: &Value, vms: &Value) -> String {
    let list = vms.get("vms").and_then(Value::as_array);
    let total = list.map_or(0, Vec::len);
    let running = list.map_or(0, |l| {
        l.iter()
            .filter(|vm| {
                matches!(
                    vm.get("state").and_then(Value::as_str),
                    Some("running" | "idle" | "paused" | "stopping")
                )
            })
            .count()
    });
    let memory = match (
        number(system, "/memory/free_bytes"),
        number(system, "/memory/total_bytes"),
    ) {
        (Some(free), Some(total)) => format!("{} free of {}", bytes(free), bytes(total)),
        _ => "-".to_owned(),
    };
    let uptime = number(system, "/uptime_ms").map_or("-".to_owned(), |ms| duration_s(ms / 1000));
    key_values(&[
        ("appliance", url.to_owned()),
        ("hostname", text(system, "/hostname")),
        ("version", text(system, "/version")),
        ("uptime", uptime),
        ("cpus", text(system, "/cpus")),
        ("memory", memory),
        ("virtualization", text(system, "/virtualization")),
        ("address", text(system, "/network/address")),
        ("mac", text(system, "/network/mac")),
        ("vms", format!("{running} running, {total} defined")),
    ])
}

/// `keel store …`.
pub fn run_store(args: &StoreArgs) -> Result<(), CommandError> {
    let client = args.connection.client()?;
    match args.command {
        StoreCmd::Ls => {
            let store = client.get("/api/v1/store")?;
            if args.connection.json {
                print_json(&store);
            } else {
                print!("{}", store_table(&store));
            }
        }
    }
    Ok(())
}

/// `keel store ls`'s table.
pub fn store_table(store: &Value) -> String {
    let rows: Vec<Vec<String>> = store
        .get("files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                text(f, "/name"),
                number(f, "/size").map_or("-".to_owned(), bytes),
                text(f, "/size"),
            ]
        })
        .collect();
    render(&["NAME", "SIZE", "BYTES"], &rows)
}

/// `keel vm list`'s table.
pub fn vm_table(vms: &Value) -> String {
    let rows: Vec<Vec<String>> = vms
        .get("vms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|vm| {
            let state = match vm.get("stop_reason").and_then(Value::as_str) {
                Some(reason) => format!("{} ({reason})", text(vm, "/state")),
                None => text(vm, "/state"),
            };
            vec![
                text(vm, "/name"),
                text(vm, "/number"),
                state,
                format!("{} MiB", text(vm, "/memory_mib")),
                text(vm, "/vcpus"),
                number(vm, "/uptime_s").map_or("-".to_owned(), duration_s),
                if vm.get("autostart") == Some(&Value::Bool(true)) {
                    "yes".to_owned()
                } else {
                    "no".to_owned()
                },
                text(vm, "/source"),
            ]
        })
        .collect();
    render(
        &[
            "NAME",
            "NUMBER",
            "STATE",
            "MEMORY",
            "VCPUS",
            "UPTIME",
            "AUTOSTART",
            "SOURCE",
        ],
        &rows,
    )
}

/// `keel vm info`'s text.
pub fn vm_detail_text(vm: &Value) -> String {
    let mut pairs = vec![
        ("name", text(vm, "/name")),
        ("number", text(vm, "/number")),
        ("state", text(vm, "/state")),
        ("stop reason", text(vm, "/stop_reason")),
        ("source", text(vm, "/source")),
        ("kernel", text(vm, "/kernel")),
        ("memory", format!("{} MiB", text(vm, "/memory_mib"))),
        ("vcpus", text(vm, "/vcpus")),
        (
            "uptime",
            number(vm, "/uptime_s").map_or("-".to_owned(), duration_s),
        ),
        ("autostart", text(vm, "/autostart")),
        ("configured", text(vm, "/configured")),
        ("backend", text(vm, "/backend")),
        ("console", format!("{} bytes", text(vm, "/console_bytes"))),
    ];
    let exits = vm
        .get("exits")
        .and_then(Value::as_object)
        .map(|exits| {
            exits
                .iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    pairs.push(("exits", exits));
    key_values(&pairs)
}

/// `keel vm …`.
pub fn run_vm(args: &VmArgs) -> Result<(), CommandError> {
    let client = args.connection.client()?;
    let json_out = args.connection.json;
    let (answer, summary) = match &args.command {
        VmCmd::List => {
            let vms = client.get("/api/v1/vms")?;
            (vms.clone(), vm_table(&vms))
        }
        VmCmd::Info { name } => {
            let vm = client.get(&vm_path(name, ""))?;
            (vm.clone(), vm_detail_text(&vm))
        }
        VmCmd::Create(create) => {
            let vm = client.send("POST", "/api/v1/vms", Some(&create.definition()), None)?;
            let line = format!("created {} ({})\n", text(&vm, "/name"), text(&vm, "/state"));
            (vm, line)
        }
        VmCmd::Start { name } => {
            let vm = client.send("POST", &vm_path(name, "/start"), None, None)?;
            let line = format!("{}: {}\n", text(&vm, "/name"), text(&vm, "/state"));
            (vm, line)
        }
        VmCmd::Stop { name, force } | VmCmd::Restart { name, force } => {
            let verb = if matches!(args.command, VmCmd::Stop { .. }) {
                "/stop"
            } else {
                "/restart"
            };
            let body = force.then(|| json!({ "force": true }));
            let vm = client.send("POST", &vm_path(name, verb), body.as_ref(), None)?;
            let state = text(&vm, "/state");
            // A graceful stop answers at once with the VM still `stopping`: say what follows.
            let note = if state == "stopping" {
                " (its power button was pressed; it is forced off after the grace time)"
            } else {
                ""
            };
            let line = format!("{}: {state}{note}\n", text(&vm, "/name"));
            (vm, line)
        }
        VmCmd::Destroy { name } => {
            let gone = client.send("DELETE", &vm_path(name, ""), None, None)?;
            let line = format!(
                "destroyed {} (configuration generation {})\n",
                text(&gone, "/name"),
                text(&gone, "/generation")
            );
            (gone, line)
        }
        VmCmd::Log { name } => {
            let chunk = client.get(&format!("{}?since=0", vm_path(name, "/console")))?;
            let data = chunk
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            (chunk, data)
        }
        VmCmd::Console { name } => {
            return super::console::attach(&client, name, &vm_path(name, "/console"));
        }
    };
    if json_out {
        print_json(&answer);
    } else {
        print!("{summary}");
    }
    Ok(())
}

/// `keel config …`.
pub fn run_config(args: &ConfigArgs) -> Result<(), CommandError> {
    let client = args.connection.client()?;
    match &args.command {
        ConfigCmd::Get { path } => {
            let config = client.get("/api/v1/config")?;
            let Some(path) = path else {
                if args.connection.json {
                    print_json(&config);
                } else {
                    for (path, value) in leaves(&config) {
                        println!("{path} = {value}");
                    }
                }
                return Ok(());
            };
            let found = lookup(&config, path).ok_or_else(|| {
                CommandError::Usage(format!(
                    "the configuration has nothing at {path} (`keel config get` lists every path)"
                ))
            })?;
            if args.connection.json {
                print_json(found);
            } else {
                match found {
                    Value::String(s) => println!("{s}"),
                    Value::Object(_) | Value::Array(_) => {
                        for (sub, value) in leaves(found) {
                            let sep = if sub.starts_with('[') || sub.is_empty() {
                                ""
                            } else {
                                "."
                            };
                            println!("{path}{sep}{sub} = {value}");
                        }
                    }
                    other => println!("{other}"),
                }
            }
            Ok(())
        }
        ConfigCmd::Set { path, value } => {
            let (current, etag) = client.get_with_etag("/api/v1/config")?;
            let config = keel_config::Config::from_value(&current).map_err(|e| {
                CommandError::Local(format!(
                    "the appliance's configuration does not parse with this keel's schema \
                     (versions differ?): {e}"
                ))
            })?;
            let edited = keel_config::edit::set(&config, path, value)
                .map_err(|e| CommandError::Usage(format!("config set {path}: {e}")))?;
            let saved = put_config(&client, &edited.to_value(), etag.as_deref())?;
            if args.connection.json {
                print_json(&saved);
            } else {
                let shown = lookup(&saved, path).map_or_else(|| value.clone(), |v| v.to_string());
                println!("{path} = {shown}");
            }
            Ok(())
        }
        ConfigCmd::Edit => edit_config(&client, args.connection.json),
    }
}

/// `PUT /api/v1/config` with `If-Match`; a 412 gets the advice to read again.
fn put_config(
    client: &ApiClient,
    document: &Value,
    etag: Option<&str>,
) -> Result<Value, CommandError> {
    let Some(etag) = etag else {
        return Err(CommandError::Client(ClientError::BadResponse {
            url: format!("{}/api/v1/config", client.base_url()),
            reason: "GET /api/v1/config answered without an ETag, so the change cannot be \
                     made safely"
                .to_owned(),
        }));
    };
    match client.send("PUT", "/api/v1/config", Some(document), Some(etag)) {
        Err(ClientError::Api {
            status: 412,
            message,
            errors,
        }) => Err(CommandError::Client(ClientError::Api {
            status: 412,
            message: format!(
                "someone else changed the configuration meanwhile; nothing was saved, run the \
                 command again ({message})"
            ),
            errors,
        })),
        other => Ok(other?),
    }
}

/// `keel config edit`: the JSON document in $EDITOR (then $VISUAL, then vi), PUT back with
/// the ETag it was read with. A refused document stays on disk for another try.
fn edit_config(client: &ApiClient, json_out: bool) -> Result<(), CommandError> {
    let (current, etag) = client.get_with_etag("/api/v1/config")?;
    let original = serde_json::to_string_pretty(&current).unwrap_or_default() + "\n";
    let mut file = tempfile::Builder::new()
        .prefix("keel-config-")
        .suffix(".json")
        .tempfile()
        .map_err(|e| CommandError::Local(format!("creating a temporary file: {e}")))?;
    file.write_all(original.as_bytes())
        .map_err(|e| CommandError::Local(format!("writing {}: {e}", file.path().display())))?;
    let path: PathBuf = file.path().to_owned();
    let editor = std::env::var("EDITOR")
        .or_else(|_| std::env::var("VISUAL"))
        .unwrap_or_else(|_| "vi".to_owned());
    // Through the shell, as git does: $EDITOR may carry arguments ("code --wait").
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| CommandError::Local(format!("running the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(CommandError::Local(format!(
            "the editor {editor:?} failed ({status}); nothing was saved"
        )));
    }
    let edited = std::fs::read_to_string(&path)
        .map_err(|e| CommandError::Local(format!("reading {}: {e}", path.display())))?;
    if edited == original {
        eprintln!("no changes; nothing was saved");
        return Ok(());
    }
    let keep = |file: tempfile::NamedTempFile| match file.keep() {
        Ok((_, kept)) => format!("your edit is kept in {}", kept.display()),
        Err(_) => "your edit could not be kept".to_owned(),
    };
    let document: Value = match serde_json::from_str(&edited) {
        Ok(document) => document,
        Err(e) => {
            return Err(CommandError::Usage(format!(
                "the edited configuration is not JSON ({e}); nothing was saved, {}",
                keep(file)
            )));
        }
    };
    match put_config(client, &document, etag.as_deref()) {
        Ok(saved) => {
            if json_out {
                print_json(&saved);
            } else {
                eprintln!("configuration saved");
            }
            Ok(())
        }
        Err(CommandError::Client(ClientError::Api {
            status,
            message,
            errors,
        })) => Err(CommandError::Client(ClientError::Api {
            status,
            message: format!("{message}; {}", keep(file)),
            errors,
        })),
        Err(other) => Err(other),
    }
}

/// The value at `path` (`network.dns[0]`, `vms[1].name`) in a JSON document.
pub fn lookup<'v>(document: &'v Value, path: &str) -> Option<&'v Value> {
    let mut current = document;
    for part in path.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            current = current.get(key)?;
        }
        let mut rest = indexes;
        while let Some(inner) = rest.strip_prefix('[') {
            let (index, tail) = inner.split_once(']')?;
            current = current.get(index.parse::<usize>().ok()?)?;
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(current)
}

/// Every leaf of a JSON document as (`path`, compact JSON value), in document order; an
/// empty object or list is a leaf of its own.
pub fn leaves(document: &Value) -> Vec<(String, String)> {
    fn walk(path: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, v) in map {
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&sub, v, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), v, out);
                }
            }
            leaf => out.push((path.to_owned(), leaf.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", document, &mut out);
    out
}
