//! The OpenAPI 3.0 document served at `GET /api/v1/openapi.json`.
//!
//! Built from what the router itself uses, so that it cannot drift from it:
//!
//! - the paths, methods, security and the statuses of every operation come from the route
//!   table ([`ROUTES`](super::ROUTES), [`Route::statuses`]);
//! - the component schemas are generated with `schemars` from the Rust types of the bodies
//!   ([`SystemInfo`](super::SystemInfo), [`Config`], ... ), request bodies as the router reads
//!   them and response bodies as it writes them, with the limits of `keel_config::limits`;
//! - what is written here by hand is prose: summaries, descriptions and examples.
//!
//! The router's tests check every response they get against the schema documented for its
//! route and status. Everything but the public routes needs the `bearer` security scheme;
//! every error is the `Error` schema (`Invalid` for 422).

use alloc::string::ToString;

use serde_json::{Value, json};

use keel_config::Config;
use schemars::generate::{Contract, SchemaSettings};

use super::config::InvalidBody;
use super::disks::{CreateDisk, DiskList, GuestDisk};
use super::routes::{Op, ROUTES, Route};
use super::{
    ConsoleChunk, ConsoleInput, Destroyed, Health, ModuleList, NetworkView, RunModule, SaveRequest,
    SavedVm, SavedVmList, StopRequest, StoreList, SystemInfo, VmDetail, VmList,
};
use super::{DEFAULT_STOP_TIMEOUT_S, MAX_CONSOLE_INPUT};
use crate::http::response::ErrorBody;
use keel_config::limits;

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Keel management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage a Keel appliance: system status, its configuration, guest modules, \
                the guest store, guest disks, VMs, saved VMs and the guest networks. \
                Every operation except the web page, health and this document needs \
                `Authorization: Bearer <token>`. Errors carry \
                `{\"error\":{\"status\":N,\"message\":\"...\"}}`."
        },
        "security": [{ "bearer": [] }],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" }
            },
            "parameters": {
                "Asset": {
                    "name": "asset",
                    "in": "path",
                    "required": true,
                    "description": "A file of the web page; any other name is 404.",
                    "schema": { "type": "string", "enum": asset_names() }
                },
                "VmName": {
                    "name": "name",
                    "in": "path",
                    "required": true,
                    "description": "A configured VM's name, or any VM's number (as on the \
                        console: `vm list` shows both). Anything else is 400.",
                    "schema": {
                        "type": "string",
                        "pattern": name_or_number_pattern()
                    }
                },
                "SavedName": {
                    "name": "saved",
                    "in": "path",
                    "required": true,
                    "description": "A saved VM's name (see /api/v1/saved): a VM name or a \
                        VM number, as `vm save` takes. Anything else is 400.",
                    "schema": {
                        "type": "string",
                        "pattern": name_or_number_pattern()
                    }
                },
                "SnapshotName": {
                    "name": "snapshot",
                    "in": "path",
                    "required": true,
                    "description": "A snapshot's name (see /api/v1/snapshots): the VM \
                        naming rule. Anything else is 400.",
                    "schema": {
                        "type": "string",
                        "pattern": keel_config::limits::vm_name_pattern()
                    }
                },
                "DiskName": {
                    "name": "disk",
                    "in": "path",
                    "required": true,
                    "description": "A guest disk's name (see /api/v1/disks): a partition's \
                        or a store file's. Only partitions are deleted: a name that breaks \
                        their rule (the VM naming rule) is 400 on DELETE.",
                    "schema": { "type": "string", "minLength": 1 }
                },
                "Module": {
                    "name": "module",
                    "in": "path",
                    "required": true,
                    "description": "A boot module's file name or index (see /api/v1/modules).",
                    "schema": { "type": "string", "minLength": 1 }
                }
            },
            "responses": responses(),
            "schemas": schemas()
        }
    })
}

/// A VM name or a VM number: the `{name}` and `{saved}` path segments.
/// The file names under `/assets/`.
fn asset_names() -> Value {
    super::page::ASSETS
        .iter()
        .filter_map(|a| a.path.strip_prefix("/assets/"))
        .collect()
}

fn name_or_number_pattern() -> alloc::string::String {
    alloc::format!(
        "^({}|[0-9]{{1,{}}})$",
        limits::vm_name_pattern(),
        u32::MAX.ilog10() + 1
    )
}

fn paths() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut operation = operation(route.op);
        if route.public {
            operation["security"] = json!([]);
        }
        operation["responses"] = responses_of(route);
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        if route.path.contains("{name}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/VmName" }]);
        } else if route.path.contains("{saved}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/SavedName" }]);
        } else if route.path.contains("{snapshot}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/SnapshotName" }]);
        } else if route.path.contains("{disk}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/DiskName" }]);
        } else if route.path.contains("{asset}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/Asset" }]);
        } else if route.path.contains("{module}") {
            item["parameters"] = json!([{ "$ref": "#/components/parameters/Module" }]);
        }
        item[route.method.to_ascii_lowercase()] = operation;
    }
    Value::Object(paths)
}

/// Every status of `route` ([`Route::statuses`]): its successes as [`successes`] describes
/// them, its errors by reference to `components/responses`, and `default` for the rest.
fn responses_of(route: &Route) -> Value {
    let successes = successes(route.op);
    let mut out = serde_json::Map::new();
    for status in route.statuses() {
        let key = alloc::format!("{status}");
        let response = if route.success.contains(&status) {
            successes
                .get(&key)
                .cloned()
                .unwrap_or_else(|| json!({ "description": "Success." }))
        } else {
            json!({ "$ref": alloc::format!("#/components/responses/{}", response_name(&key)) })
        };
        out.insert(key, response);
    }
    out.insert("default".into(), error_ref());
    Value::Object(out)
}

/// The success responses of `op`, by status.
fn successes(op: Op) -> Value {
    match op {
        Op::Page => json!({
            "200": {
                "description": "The web console: an HTML page that manages the appliance through \
                    this API (gzip when Accept-Encoding allows it).",
                "content": { "text/html": { "schema": { "type": "string" } } }
            },
            "304": { "description": "Not modified: If-None-Match names the current ETag." }
        }),
        Op::Asset => json!({
            "200": {
                "description": "A script, style sheet or the third-party licences of the page \
                    (gzip when Accept-Encoding allows it).",
                "content": {
                    "text/javascript": { "schema": { "type": "string" } },
                    "text/css": { "schema": { "type": "string" } },
                    "text/plain": { "schema": { "type": "string" } }
                }
            },
            "304": { "description": "Not modified: If-None-Match names the current ETag." }
        }),
        Op::Health => json!({ "200": ok("The server is up.", "Health") }),
        Op::OpenApi => json!({
            "200": {
                "description": "The OpenAPI 3.0 document.",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }
        }),
        Op::System => json!({ "200": ok("System information.", "SystemInfo") }),
        Op::Modules => json!({ "200": ok("The modules.", "ModuleList") }),
        Op::RunModule => json!({ "201": created("The VM was started.") }),
        Op::Store => json!({ "200": ok("The files.", "StoreList") }),
        Op::GetConfig => json!({ "200": config_ok("The configuration.") }),
        Op::PutConfig => {
            json!({ "200": config_ok("The configuration as saved, with its new ETag.") })
        }
        Op::ListVms => json!({ "200": ok("The VMs.", "VmList") }),
        Op::CreateVm => json!({ "201": created("The VM was defined.") }),
        Op::ShowVm => json!({ "200": ok("The VM.", "VmDetail") }),
        Op::DestroyVm => json!({ "200": ok("The VM is gone.", "Destroyed") }),
        Op::StartVm => json!({ "200": ok("The VM, running.", "VmDetail") }),
        Op::StopVm => json!({
            "200": ok("The VM, stopped.", "VmDetail"),
            "202": ok("The VM, stopping.", "VmDetail")
        }),
        Op::RestartVm => json!({
            "200": ok("The VM, started again.", "VmDetail"),
            "202": ok("The VM, stopping; it starts again once stopped.", "VmDetail")
        }),
        Op::PauseVm => json!({ "200": ok("The VM, paused.", "VmDetail") }),
        Op::ResumeVm => json!({ "200": ok("The VM, running again.", "VmDetail") }),
        Op::Console => json!({ "200": ok("Console output.", "ConsoleChunk") }),
        Op::ConsoleInput => json!({ "200": ok("What the guest took.", "ConsoleInput") }),
        Op::ConsoleWs => json!({
            "101": {
                "description": "Switching to WebSocket (RFC 6455).",
                "headers": {
                    "Sec-WebSocket-Accept": {
                        "description": "The handshake's answer to Sec-WebSocket-Key.",
                        "schema": { "type": "string" }
                    }
                }
            }
        }),
        Op::SaveVm => json!({
            "201": {
                "description": "The VM was saved.",
                "headers": {
                    "Location": {
                        "description": "The saved VM's URL.",
                        "schema": { "type": "string" }
                    }
                },
                "content": { "application/json": { "schema": schema_ref("SavedVm") } }
            }
        }),
        Op::TakeSnapshot => json!({
            "201": {
                "description": "The snapshot was written to the store.",
                "headers": {
                    "Location": {
                        "description": "The snapshot's URL.",
                        "schema": { "type": "string" }
                    }
                },
                "content": { "application/json": { "schema": schema_ref("Snapshot") } }
            }
        }),
        Op::MigrateVm => json!({
            "202": {
                "description": "The migration was accepted and runs in the background.",
                "headers": {
                    "Location": {
                        "description": "Where its progress shows (`/api/v1/migrations`).",
                        "schema": { "type": "string" }
                    }
                },
                "content": { "application/json": { "schema": schema_ref("Migration") } }
            }
        }),
        Op::Migrations => json!({ "200": ok("The migrations since boot.", "MigrationList") }),
        Op::ListSnapshots => json!({ "200": ok("The snapshots in the store.", "SnapshotList") }),
        Op::ShowSnapshot => json!({ "200": ok("The snapshot.", "Snapshot") }),
        Op::RestoreSnapshot => json!({ "201": created("The VM was restored and runs.") }),
        Op::DeleteSnapshot => json!({ "204": { "description": "The snapshot's files are gone." } }),
        Op::ListSaved => json!({ "200": ok("The saved VMs.", "SavedVmList") }),
        Op::ShowSaved => json!({ "200": ok("The saved VM.", "SavedVm") }),
        Op::RestoreSaved => json!({ "201": created("The VM was restored, paused.") }),
        Op::DeleteSaved => json!({ "204": { "description": "The saved VM is gone." } }),
        Op::ListDisks => json!({ "200": ok("The guest disks.", "DiskList") }),
        Op::ShowDisk => json!({ "200": ok("The guest disk.", "GuestDisk") }),
        Op::CreateDisk => json!({
            "201": {
                "description": "The partition was made.",
                "headers": {
                    "Location": {
                        "description": "The disk's URL.",
                        "schema": { "type": "string" }
                    }
                },
                "content": { "application/json": { "schema": schema_ref("GuestDisk") } }
            }
        }),
        Op::DeleteDisk => json!({ "204": { "description": "The partition is gone." } }),
        Op::Network => json!({ "200": ok("The guest networks.", "NetworkView") }),
        Op::Events => json!({ "200": ok("The events.", "EventList") }),
        Op::Metrics => json!({
            "200": {
                "description": "The metrics.",
                "content": { "text/plain": { "schema": { "type": "string" } } }
            }
        }),
    }
}

/// `op`'s operation object without its responses and security.
fn operation(op: Op) -> Value {
    match op {
        Op::Page => json!({ "operationId": "page", "summary": "The web page" }),
        Op::Asset => json!({ "operationId": "pageAsset", "summary": "A file of the web page" }),
        Op::Health => json!({ "operationId": "health", "summary": "Liveness check" }),
        Op::OpenApi => json!({ "operationId": "openapi", "summary": "This document" }),
        Op::System => json!({
            "operationId": "system",
            "summary": "Version, uptime, CPUs, memory, virtualization and network"
        }),
        Op::Modules => json!({
            "operationId": "listModules",
            "summary": "Guest payloads VMs can start from"
        }),
        Op::RunModule => json!({
            "operationId": "runModule",
            "summary": "Start an ad-hoc VM from a boot module (`vm run`)",
            "description": "A shortcut for trying a guest: the VM is not in the \
                configuration, is known by its number only, and goes away with the next \
                boot. A flat payload runs in real mode at 0x7C00; a Linux bzImage or PVH \
                ELF kernel boots with an empty command line. The body is optional.",
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("RunModule") }
                }
            }
        }),
        Op::Store => json!({
            "operationId": "listStore",
            "summary": "Files in the guest store (the boot disk's keel-store partition)"
        }),
        Op::GetConfig => json!({
            "operationId": "getConfig",
            "summary": "The configuration the appliance runs with",
            "description": "The canonical JSON document (fields in schema order, absent \
                optional fields left out), API tokens included: a client that holds a token \
                may replace them all anyway. The ETag identifies this exact document; send \
                it back in If-Match when you PUT."
        }),
        Op::PutConfig => json!({
            "operationId": "putConfig",
            "summary": "Replace the whole configuration",
            "description": "Validates the document, saves it to the boot disk's \
                configuration partition (atomically: the previous configuration stays \
                intact until the new one is on disk) and applies what can change while \
                running: the hostname and the API tokens at once; network addressing and \
                the HTTP port at the next boot. If-Match is required (428 without it), so \
                that concurrent clients never overwrite each other silently: send the ETag \
                of your last GET, or `*` to replace whatever is there. A refused request \
                changes nothing.",
            "parameters": [{
                "name": "If-Match",
                "in": "header",
                "required": true,
                "description": "The ETag from GET /api/v1/config, or `*`.",
                "schema": { "type": "string" }
            }],
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("Config") }
                }
            }
        }),
        Op::ListVms => json!({
            "operationId": "listVms",
            "summary": "All VMs (`vm list`)",
            "description": "The VMs defined in the configuration, whether or not they ever \
                ran (state `defined` until their first start), and the ad-hoc VMs started \
                from boot modules, in number order."
        }),
        Op::CreateVm => json!({
            "operationId": "createVm",
            "summary": "Define a named VM (`vm create`)",
            "description": "Adds the definition to the configuration and saves it to the \
                boot disk, as `vm create` does; the VM is `defined` until started. The \
                definition is checked with the configuration's rules: 422 lists every \
                problem in `errors`, with paths inside the definition (`memory_mib`, \
                `disks[1].file`, `nics[0].mac`; a MAC another VM's NIC has names both). \
                Whether a disk's store file or partition exists is checked when the VM \
                starts. A NIC without `mac` gets one derived from the hostname, the VM's name \
                and its index; `GET` shows it. 409 when the name is taken, 503 without a boot disk. \
                Nothing changes on error.",
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("ConfigVm") }
                }
            }
        }),
        Op::ShowVm => json!({ "operationId": "showVm", "summary": "One VM (`vm info`)" }),
        Op::DestroyVm => json!({
            "operationId": "destroyVm",
            "summary": "Destroy a named VM (`vm destroy`)",
            "description": "Stops the VM at once and removes its definition from the \
                configuration (saved to the boot disk). An ad-hoc VM is not in the \
                configuration: 409, stop it instead."
        }),
        Op::StartVm => json!({
            "operationId": "startVm",
            "summary": "Start a named VM (`vm start`)",
            "description": "Loads its kernel (and initrd), or its firmware, from the guest \
                store, attaches its disks and starts it. Takes no request body. 409 when it \
                runs already, for an ad-hoc VM (start a new one from its module), or when a \
                running VM holds one of its disks writable; 422 when its files, disks or \
                partitions are missing or unusable or the host lacks the memory."
        }),
        Op::StopVm => json!({
            "operationId": "stopVm",
            "summary": "Stop a VM (`vm stop`)",
            "description": alloc::format!(
                "By default presses the VM's ACPI power button and forces it off if it has \
                 not shut down after {DEFAULT_STOP_TIMEOUT_S} s (or `timeout_s`): the answer \
                 is 202 with the VM `stopping`, and the stop completes later. With \
                 `{{\"force\": true}}` it stops at once: 200. 409 when it is not running."
            ),
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("StopRequest") }
                }
            }
        }),
        Op::RestartVm => json!({
            "operationId": "restartVm",
            "summary": "Restart a named VM (`vm restart`)",
            "description": "Stops the VM as `POST .../stop` would (the same optional body), \
                then starts it again from its definition: 202 while the stop is under \
                way. A VM that is not running starts at once: 200. 409 for an ad-hoc VM.",
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("StopRequest") }
                }
            }
        }),
        Op::PauseVm => json!({
            "operationId": "pauseVm",
            "summary": "Pause a VM (`vm pause`)",
            "description": "Its vCPUs stop running and its device timers stop advancing \
                until it is resumed; its state is `paused`. Takes no request body. 409 when \
                it is not running or is paused already."
        }),
        Op::ResumeVm => json!({
            "operationId": "resumeVm",
            "summary": "Resume a paused VM (`vm resume`)",
            "description": "The VM continues exactly where it was paused. Takes no request \
                body. 409 when it is not paused."
        }),
        Op::SaveVm => json!({
            "operationId": "saveVm",
            "summary": "Save a paused VM (`vm save`)",
            "description": "Saves every vCPU's state, every device model and the VM's RAM \
                (zero pages left out) into the appliance's memory, where it stays until \
                deleted or the next boot. The VM stays paused. The body is optional: \
                `name` is the name to save it under, by default the VM's name (its number \
                for an ad-hoc VM). 409 when the VM is not paused or a saved VM has the name \
                already; 422 for a name that is neither a VM name nor a number; 503 when \
                the host has no memory for the saved bytes.",
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("SaveRequest") }
                }
            }
        }),
        Op::TakeSnapshot => json!({
            "operationId": "takeSnapshot",
            "summary": "Snapshot a VM to the guest store (`vm snapshot`)",
            "description": "Pauses the VM (if running), writes its vCPU, device and RAM \
                state (zero pages left out) to the guest store as files \
                `<name>.snap.000`… (at most 2 GiB each) and `<name>.snapinfo`, then resumes \
                it, or stops it with `stop`. A snapshot survives a reboot. Disk contents are \
                not in it: writable disks are recorded (size, content hash) so a restore \
                after they changed is refused. The body is optional: `name` (the VM naming \
                rule; default `<vm>-<unix time>`) and `stop`. 409 when a snapshot has the \
                name or the VM does not run; 422 for a bad name or a store without room.",
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("SnapshotRequest") }
                }
            }
        }),
        Op::MigrateVm => json!({
            "operationId": "migrateVm",
            "summary": "Live-migrate a running VM to another appliance (`vm migrate`)",
            "description": "Moves the VM over the migration link                 (`management.migration_link`) to the appliance at `host` (its link address)                 and `port` (default: this appliance's `management.migration_port`),                 presenting `management.migration_token` (else the first API token). The                 VM keeps running during pre-copy; on success it runs on the destination and                 is gone here, on failure it runs on here. 409 when a migration is under way                 or the VM cannot move (not running; disks or NICs); 422 for a host that is                 not an IPv4 address or port 0; 503 without a migration link.",
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("MigrateRequest") }
                }
            }
        }),
        Op::Migrations => json!({
            "operationId": "listMigrations",
            "summary": "Migrations since boot, in and out, with their progress",
            "description": "The most recent migrations, oldest first: phase                 (`requested`, `running`, `done`, `failed`), rounds, bytes sent, total time                 and downtime, and why one failed."
        }),
        Op::ListSnapshots => json!({
            "operationId": "listSnapshots",
            "summary": "All snapshots in the guest store (`vm snapshots`)"
        }),
        Op::ShowSnapshot => json!({ "operationId": "showSnapshot", "summary": "One snapshot" }),
        Op::RestoreSnapshot => json!({
            "operationId": "restoreSnapshot",
            "summary": "Run a new VM from a snapshot (`vm restore <snapshot>`)",
            "description": "Builds an ad-hoc VM from the snapshot's files and runs it from \
                where the snapshot was taken. 409 when a writable disk changed since the \
                snapshot, unless the optional body says `{\"force\": true}`.",
            "requestBody": {
                "required": false,
                "content": {
                    "application/json": { "schema": schema_ref("SnapshotRestoreRequest") }
                }
            }
        }),
        Op::DeleteSnapshot => json!({
            "operationId": "deleteSnapshot",
            "summary": "Delete a snapshot's files (`snapshot rm`)"
        }),
        Op::ListSaved => json!({
            "operationId": "listSaved",
            "summary": "All saved VMs (`saved ls`)",
            "description": "Sorted by name."
        }),
        Op::ShowSaved => json!({ "operationId": "showSaved", "summary": "One saved VM" }),
        Op::RestoreSaved => json!({
            "operationId": "restoreSaved",
            "summary": "Restore a saved VM as a new VM (`vm restore`)",
            "description": "Builds a new ad-hoc VM (known by its number, source \
                `saved:<name>`) from the saved VM, paused: `POST /api/v1/vms/{name}/resume` \
                runs it from where it was saved. The saved VM stays. Takes no request body. \
                422 when the saved bytes or a state in them are refused, 503 without \
                hardware virtualization or host memory for its RAM; nothing is created \
                then."
        }),
        Op::DeleteSaved => json!({
            "operationId": "deleteSaved",
            "summary": "Delete a saved VM (`saved rm`)",
            "description": "Frees its memory. VMs restored from it go on running."
        }),
        Op::ListDisks => json!({
            "operationId": "listDisks",
            "summary": "All guest disks (`disk`)",
            "description": "GPT partitions of Keel's disk (kind `partition`, in table order), \
                then the guest store's disk-image files (kind `file`: those a VM uses or a \
                VM definition names, and names ending in `.img` or `.raw`), each with the \
                VMs using it; and the largest free \
                space for a new partition. 503 without a boot disk."
        }),
        Op::ShowDisk => json!({ "operationId": "showDisk", "summary": "One guest disk" }),
        Op::CreateDisk => json!({
            "operationId": "createDisk",
            "summary": "Make a guest-disk partition (`disk create`)",
            "description": "Carves a partition of `size_mib` MiB, on a 1 MiB boundary, from \
                the first free space on Keel's disk large enough, with Keel's guest-disk type \
                and `name` as its GPT name; both GPT copies are written so that a power cut \
                leaves the old or the new table. Its contents are whatever the sectors held. \
                409 when a partition has the name; 422 for a name or size out of the rules \
                or not enough free space (the message says how much there is); 503 without \
                a writable boot disk.",
            "requestBody": {
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("CreateDisk") }
                }
            }
        }),
        Op::DeleteDisk => json!({
            "operationId": "deleteDisk",
            "summary": "Delete a guest-disk partition (`disk delete`)",
            "description": "Removes the partition from the table; its sectors are left as \
                they are. Store files cannot be deleted here. 404 for no such partition, \
                409 while a VM uses it."
        }),
        Op::Metrics => json!({
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "description": "Prometheus text exposition format 0.0.4                 (`text/plain; version=0.0.4`), names prefixed `keel_`: uptime, CPUs, memory                 by use, configuration generation, each VM's state, vCPUs, memory, uptime,                 exits by reason, console bytes and NIC counters, the switches' port                 counters, and the API's requests by route and status."
        }),
        Op::Events => json!({
            "operationId": "events",
            "summary": "The event log",
            "description": "What happened since boot, oldest first: VMs started and stopped                 (and why), configurations saved, DHCP leases gained and lost. The kernel keeps                 the last 512 events. Poll with `since` set to the last answer's `next` to get                 each event once; a first `seq` above `since` means events were dropped in                 between.",
            "parameters": [{
                "name": "since",
                "in": "query",
                "required": false,
                "description": "The lowest sequence number wanted: 0, or the `next` of the                     last answer.",
                "schema": { "type": "integer", "minimum": 0, "maximum": u64::MAX }
            }]
        }),
        Op::Network => json!({
            "operationId": "network",
            "summary": "The guest networks' switches (`net`)",
            "description": "Both software switches: `bridged` (its ports are the physical \
                NIC's uplink, the appliance and the guest NICs on it) and `internal` (the \
                appliance and the guest NICs on it, never the physical network). Each port \
                with its counters from the port's point of view (`rx`: frames the port sent \
                into the switch) and its drops; each switch's learned MAC addresses. Then the \
                appliance's address on the internal network and its DHCP server's leases."
        }),
        Op::Console => json!({
            "operationId": "vmConsole",
            "summary": "A VM's console output (`vm log`)",
            "description": "Output of the current or last run from byte offset `since` \
                on; empty for a VM that never ran.",
            "parameters": [{
                "name": "since",
                "in": "query",
                "required": false,
                "description": "Byte offset to read from: 0, or the `next` of the last read.",
                "schema": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": u64::MAX,
                    "default": 0
                }
            }]
        }),
        Op::ConsoleWs => json!({
            "operationId": "vmConsoleWebSocket",
            "summary": "A VM's console over a WebSocket",
            "description": "A WebSocket upgrade (RFC 6455, version 13). Authenticate with                 `Authorization: Bearer` on the upgrade, or (browsers) with the text message                 `{\"token\":\"<API token>\"}` as the first message: nothing flows before,                 and a wrong token closes with 1008. Then the server sends the console's kept                 history and its live output as binary messages, and every client message                 (text or binary) is typed to the guest. Close codes: 1000, 1001 (the VM is                 gone), 1002 (protocol error, e.g. an unmasked frame), 1007 (text not UTF-8),                 1008 (token), 1009 (a message over 16 KiB), 1011 (internal).",
            "parameters": [
                {
                    "name": "Upgrade", "in": "header", "required": true,
                    "schema": { "type": "string", "enum": ["websocket"] }
                },
                {
                    "name": "Sec-WebSocket-Version", "in": "header", "required": true,
                    "schema": { "type": "string", "enum": ["13"] }
                },
                {
                    "name": "Sec-WebSocket-Key", "in": "header", "required": true,
                    "description": "Base64 of 16 random bytes.",
                    "schema": { "type": "string" }
                }
            ]
        }),
        Op::ConsoleInput => json!({
            "operationId": "vmConsoleInput",
            "summary": "Type into a VM's console",
            "description": alloc::format!(
                "The body's bytes go to the guest's serial port as if typed (send `\\r` for \
                 Enter), at most {MAX_CONSOLE_INPUT} per request. The answer says how many \
                 the guest's input queue took; the rest was dropped. 409 when the VM is not \
                 running."
            ),
            "requestBody": {
                "required": true,
                "content": {
                    "text/plain": {
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_CONSOLE_INPUT
                        }
                    },
                    "application/octet-stream": {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "minLength": 1,
                            "maxLength": MAX_CONSOLE_INPUT
                        }
                    }
                }
            }
        }),
    }
}

/// 201 with the new VM and its `Location`.
fn created(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {
            "Location": {
                "description": "The VM's URL (by name; by number for an ad-hoc VM).",
                "schema": { "type": "string" }
            }
        },
        "content": { "application/json": { "schema": schema_ref("VmDetail") } }
    })
}

/// Every error response in `components/responses`: the status (or `Error` for the
/// catch-all) and its description.
const ERRORS: [(&str, &str); 17] = [
    (
        "400",
        "Malformed request: bad syntax, parameter or JSON body.",
    ),
    ("401", "Missing or wrong bearer token."),
    ("404", "No such VM, saved VM, module or disk."),
    ("405", "Method not allowed on this path (see `Allow`)."),
    ("408", "The request did not arrive in time."),
    (
        "409",
        "The VM is not in a state that allows this, or the name is taken.",
    ),
    ("411", "The request needs a Content-Length."),
    (
        "412",
        "If-Match does not match the current ETag: the resource changed since it was read.",
    ),
    ("413", "The request body is too large."),
    (
        "426",
        "Not WebSocket version 13 (`Sec-WebSocket-Version: 13` says what is spoken).",
    ),
    (
        "415",
        "The request body's Content-Type is not one this operation takes.",
    ),
    (
        "422",
        "The request is well-formed but cannot be carried out as given.",
    ),
    (
        "428",
        "The request must be conditional: send If-Match with the ETag you last read.",
    ),
    ("431", "The request head is too large."),
    (
        "500",
        "The appliance failed to carry out the request (e.g. a disk error).",
    ),
    (
        "503",
        "The host cannot do this now (no virtualization, no memory).",
    ),
    ("Error", "An error."),
];

fn responses() -> Value {
    let mut out = serde_json::Map::new();
    for (name, description) in ERRORS {
        let mut response = json!({
            "description": description,
            "content": { "application/json": { "schema": schema_ref("Error") } }
        });
        if name == "422" {
            response["description"] = json!(
                "The request is well-formed but cannot be carried out as given. For \
                 PUT /api/v1/config and POST /api/v1/vms, `errors` lists every problem with \
                 its path."
            );
            response["content"]["application/json"]["schema"] = schema_ref("Invalid");
        }
        if name == "412" {
            response["headers"] = json!({
                "ETag": {
                    "description": "The current ETag.",
                    "schema": { "type": "string" }
                }
            });
        }
        if name == "401" {
            response["headers"] = json!({
                "WWW-Authenticate": {
                    "description": "`Bearer realm=\"keel\"`, with `error=\"invalid_token\"` \
                        for a wrong token.",
                    "schema": { "type": "string" }
                }
            });
        }
        out.insert(response_name(name).into(), response);
    }
    Value::Object(out)
}

/// The name in `components/responses` for a status.
fn response_name(status: &str) -> &str {
    match status {
        "400" => "BadRequest",
        "401" => "Unauthorized",
        "404" => "NotFound",
        "405" => "MethodNotAllowed",
        "408" => "RequestTimeout",
        "409" => "Conflict",
        "411" => "LengthRequired",
        "412" => "PreconditionFailed",
        "413" => "ContentTooLarge",
        "415" => "UnsupportedMediaType",
        "422" => "Unprocessable",
        "428" => "PreconditionRequired",
        "426" => "UpgradeRequired",
        "431" => "HeaderFieldsTooLarge",
        "500" => "InternalError",
        "503" => "Unavailable",
        other => other,
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": alloc::format!("#/components/schemas/{name}") })
}

fn error_ref() -> Value {
    json!({ "$ref": "#/components/responses/Error" })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref(schema) } }
    })
}

/// 200 with the configuration document and its `ETag`.
fn config_ok(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {
            "ETag": {
                "description": "Strong entity tag of this document: a quoted hex hash.",
                "schema": { "type": "string" }
            }
        },
        "content": { "application/json": { "schema": schema_ref("Config") } }
    })
}

/// The component schemas, generated from the types the router reads and writes, so that
/// they cannot drift from the wire format: field names, types, which fields may be left out,
/// `null`, the limits (from `keel_config::limits`) and the descriptions (the doc comments).
fn schemas() -> Value {
    let generator = |contract| {
        SchemaSettings::openapi3()
            .with(|s| s.contract = contract)
            .into_generator()
    };
    // Request bodies as the router reads them (defaulted fields may be left out)...
    let mut requests = generator(Contract::Deserialize);
    requests.subschema_for::<Config>();
    requests.subschema_for::<keel_config::schema::Vm>();
    requests.subschema_for::<RunModule>();
    requests.subschema_for::<StopRequest>();
    requests.subschema_for::<SaveRequest>();
    requests.subschema_for::<super::SnapshotRequest>();
    requests.subschema_for::<super::SnapshotRestoreRequest>();
    requests.subschema_for::<super::MigrateRequest>();
    requests.subschema_for::<CreateDisk>();
    // ...and response bodies as it writes them (every field is always there).
    let mut responses = generator(Contract::Serialize);
    responses.subschema_for::<Health>();
    responses.subschema_for::<ErrorBody<'static>>();
    responses.subschema_for::<InvalidBody<'static>>();
    responses.subschema_for::<SystemInfo>();
    responses.subschema_for::<ModuleList>();
    responses.subschema_for::<StoreList>();
    responses.subschema_for::<VmList>();
    responses.subschema_for::<VmDetail>();
    responses.subschema_for::<Destroyed>();
    responses.subschema_for::<ConsoleInput>();
    responses.subschema_for::<ConsoleChunk>();
    responses.subschema_for::<SavedVm>();
    responses.subschema_for::<SavedVmList>();
    responses.subschema_for::<super::Snapshot>();
    responses.subschema_for::<super::SnapshotList>();
    responses.subschema_for::<super::Migration>();
    responses.subschema_for::<super::MigrationList>();
    responses.subschema_for::<DiskList>();
    responses.subschema_for::<GuestDisk>();
    responses.subschema_for::<NetworkView>();
    responses.subschema_for::<super::EventList>();
    let mut all = requests.take_definitions(true);
    // A type in both (`ConfigVmDisk`, in `ConfigVm` and `VmDetail`) keeps its request form:
    // fields with defaults are optional there, and what is optional in a request is still
    // valid in a response that always has it.
    for (name, schema) in responses.take_definitions(true) {
        all.entry(name).or_insert(schema);
    }
    for schema in all.values_mut() {
        collapse_unit_enum(schema);
    }
    Value::Object(all)
}

/// Turns schemars' schema of an enum of documented unit variants (a `oneOf` of one-value
/// string enums, one per variant) into one string `enum`, the variants' descriptions listed
/// in its own: the form clients and code generators expect.
fn collapse_unit_enum(schema: &mut Value) {
    let Some(Value::Array(variants)) = schema.get("oneOf") else {
        return;
    };
    let mut values = alloc::vec::Vec::new();
    let mut description = schema["description"].as_str().unwrap_or("").to_string();
    for variant in variants {
        match (variant["type"].as_str(), variant["enum"].as_array()) {
            (Some("string"), Some(one)) if one.len() == 1 => {
                values.push(one[0].clone());
                if let (Some(name), Some(doc)) = (one[0].as_str(), variant["description"].as_str())
                {
                    description.push_str(&alloc::format!("\n- `{name}`: {doc}"));
                }
            }
            _ => return,
        }
    }
    *schema = json!({
        "type": "string",
        "enum": values,
        "description": description,
    });
}
