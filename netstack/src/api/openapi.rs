//! The OpenAPI 3.0 document served at `GET /api/v1/openapi.json`.
//!
//! Written by hand, next to the route table in [`super::routes`] and the body types
//! ([`SystemInfo`](super::SystemInfo) and the rest); the router's tests hold it to them:
//! its paths and methods must be exactly [`ROUTES`](super::ROUTES), and every response the
//! router gives in the tests must match the schema documented for its status. Everything
//! but the public routes needs the `bearer` security scheme; every error is the `Error`
//! schema.

use serde_json::{Value, json};

use super::routes::{Op, ROUTES, Route};
use super::{DEFAULT_STOP_TIMEOUT_S, MAX_CONSOLE_INPUT, MAX_STOP_TIMEOUT_S};
use keel_config::limits;

/// The document.
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Keel management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Manage a Keel appliance: system status, its configuration, guest modules, \
                the guest store and VMs. \
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
                "VmName": {
                    "name": "name",
                    "in": "path",
                    "required": true,
                    "description": "A configured VM's name, or any VM's number (as on the \
                        console: `vm list` shows both). Anything else is 400.",
                    "schema": {
                        "type": "string",
                        "pattern": alloc::format!(
                            "^({}|[0-9]{{1,{}}})$",
                            limits::vm_name_pattern(),
                            u32::MAX.ilog10() + 1
                        )
                    }
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
                "description": "An HTML page that lists VMs through this API.",
                "content": { "text/html": { "schema": { "type": "string" } } }
            }
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
    }
}

/// `op`'s operation object without its responses and security.
fn operation(op: Op) -> Value {
    match op {
        Op::Page => json!({ "operationId": "page", "summary": "The web page" }),
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
                problem in `errors`, with paths inside the definition (`memory_mib`). 409 \
                when the name is taken, 503 without a boot disk. Nothing changes on error.",
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
            "description": "Loads its kernel (and initrd) from the guest store and starts \
                it. Takes no request body. 409 when it runs already, or for an ad-hoc VM \
                (start a new one from its module); 422 when its files are missing or \
                unusable or the host lacks the memory."
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
const ERRORS: [(&str, &str); 16] = [
    (
        "400",
        "Malformed request: bad syntax, parameter or JSON body.",
    ),
    ("401", "Missing or wrong bearer token."),
    ("404", "No such VM or module."),
    ("405", "Method not allowed on this path (see `Allow`)."),
    ("408", "The request did not arrive in time."),
    ("409", "The VM is not in a state that allows this."),
    ("411", "The request needs a Content-Length."),
    (
        "412",
        "If-Match does not match the current ETag: the resource changed since it was read.",
    ),
    ("413", "The request body is too large."),
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

fn ipv4(description: &str) -> Value {
    json!({ "type": "string", "format": "ipv4", "description": description })
}

/// The configuration document (keel-config's schema).
fn config_schemas() -> Value {
    json!({
        "Config": {
            "type": "object",
            "additionalProperties": false,
            "description": "The whole appliance configuration. Every field has a default \
                except vms[].name, vms[].memory_mib and vms[].kernel.",
            "properties": {
                "hostname": {
                    "type": "string",
                    "description": "Dot-separated RFC 1123 labels.",
                    "maxLength": limits::MAX_HOSTNAME_LEN,
                    "default": "keel"
                },
                "network": schema_ref("ConfigNetwork"),
                "management": schema_ref("ConfigManagement"),
                "vms": { "type": "array", "items": schema_ref("ConfigVm") }
            }
        },
        "ConfigNetwork": {
            "type": "object",
            "additionalProperties": false,
            "description": "In dhcp mode the other fields must be absent; in static mode \
                address and prefix are required. Takes effect at the next boot.",
            "properties": {
                "mode": { "type": "string", "enum": ["dhcp", "static"], "default": "dhcp" },
                "address": ipv4("Static: the interface's address."),
                "prefix": { "type": "integer", "minimum": 1, "maximum": 32 },
                "gateway": ipv4("Static: the default gateway, inside the subnet."),
                "dns": {
                    "type": "array",
                    "maxItems": limits::MAX_DNS_SERVERS,
                    "items": ipv4("A DNS server.")
                }
            }
        },
        "ConfigManagement": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "api_tokens": {
                    "type": "array",
                    "description": "Bearer tokens the API accepts, in effect as soon as saved.",
                    "items": {
                        "type": "string",
                        "minLength": limits::MIN_TOKEN_LEN,
                        "maxLength": limits::MAX_TOKEN_LEN,
                        "pattern": limits::token_pattern()
                    }
                },
                "http_port": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 65535,
                    "default": 80,
                    "description": "Takes effect at the next boot."
                }
            }
        },
        "ConfigVm": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "memory_mib", "kernel"],
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": alloc::format!("^{}$", limits::vm_name_pattern())
                },
                "vcpus": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": limits::MAX_VCPUS,
                    "default": 1
                },
                "memory_mib": {
                    "type": "integer",
                    "minimum": limits::MIN_MEMORY_MIB,
                    "maximum": limits::MAX_MEMORY_MIB,
                    "multipleOf": limits::MEMORY_ALIGN_MIB
                },
                "kernel": { "type": "string", "description": "A guest store file." },
                "initrd": { "type": "string", "description": "A guest store file." },
                "cmdline": {
                    "type": "string",
                    "maxLength": limits::MAX_CMDLINE_LEN,
                    "default": ""
                },
                "disks": { "type": "array", "items": { "type": "string" } },
                "autostart": { "type": "boolean", "default": false }
            }
        },
        "Invalid": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {
                        "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                        "message": { "type": "string" }
                    }
                },
                "errors": {
                    "type": "array",
                    "description": "Every problem, in document order.",
                    "items": {
                        "type": "object",
                        "required": ["path", "message"],
                        "properties": {
                            "path": {
                                "type": "string",
                                "description": "network.prefix, vms[0].memory_mib; empty for the document itself."
                            },
                            "message": { "type": "string" }
                        }
                    }
                }
            }
        }
    })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn nullable_string(description: &str) -> Value {
    json!({ "type": "string", "nullable": true, "description": description })
}

fn exits() -> Value {
    json!({
        "type": "object",
        "description": "VM exits by reason.",
        "additionalProperties": count()
    })
}

fn schemas() -> Value {
    let summary = json!({
        "name": {
            "type": "string",
            "description": "What /api/v1/vms/{name} takes: a configured VM's name, an ad-hoc \
                VM's number."
        },
        "number": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 },
        "configured": {
            "type": "boolean",
            "description": "Defined in the configuration (false for an ad-hoc VM)."
        },
        "source": {
            "type": "string",
            "description": "`store:<kernel>` for a configured VM, the boot module otherwise."
        },
        "state": schema_ref("VmState"),
        "stop_reason": nullable_string("Why the VM stopped, when stopped."),
        "memory_mib": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4294967295u64,
            "description": "Guest RAM (as defined, until it runs)."
        },
        "vcpus": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4294967295u64,
            "description": "vCPUs (as defined, until it runs)."
        },
        "uptime_s": {
            "type": "integer",
            "minimum": 0,
            "nullable": true,
            "description": "Seconds since it started, while running, idle or stopping."
        },
        "autostart": { "type": "boolean" }
    });
    let summary_required = json!([
        "name",
        "number",
        "configured",
        "source",
        "state",
        "stop_reason",
        "memory_mib",
        "vcpus",
        "uptime_s",
        "autostart"
    ]);
    let mut detail = summary.clone();
    let mut detail_required = summary_required.clone();
    if let (Value::Object(fields), Value::Array(required)) = (&mut detail, &mut detail_required) {
        fields.insert("exits".into(), exits());
        fields.insert(
            "backend".into(),
            nullable_string(
                "The backend of the current or last run (svm, vmx); null until it runs.",
            ),
        );
        fields.insert("console_bytes".into(), count());
        fields.insert(
            "kernel".into(),
            nullable_string("A configured VM's kernel (guest store file); null when ad-hoc."),
        );
        fields.insert(
            "initrd".into(),
            nullable_string("A configured VM's initrd."),
        );
        fields.insert(
            "cmdline".into(),
            nullable_string("A configured VM's kernel command line; null when ad-hoc."),
        );
        for field in [
            "exits",
            "backend",
            "console_bytes",
            "kernel",
            "initrd",
            "cmdline",
        ] {
            required.push(field.into());
        }
    }
    let mut all = json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {
                        "status": { "type": "integer", "minimum": 400, "maximum": 599 },
                        "message": { "type": "string" }
                    }
                }
            }
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "type": "string", "enum": ["ok"] } }
        },
        "SystemInfo": {
            "type": "object",
            "required": [
                "hostname", "version", "uptime_ms", "cpus", "memory", "virtualization", "network"
            ],
            "properties": {
                "hostname": { "type": "string", "description": "From the configuration." },
                "version": { "type": "string" },
                "uptime_ms": count(),
                "cpus": count(),
                "memory": schema_ref("Memory"),
                "virtualization": {
                    "type": "string",
                    "description": "The extension in use, or why there is none."
                },
                "network": schema_ref("Network")
            }
        },
        "Memory": {
            "type": "object",
            "required": ["total_bytes", "free_bytes"],
            "properties": { "total_bytes": count(), "free_bytes": count() }
        },
        "Network": {
            "type": "object",
            "required": ["mac", "dhcp", "address", "gateway", "dns", "lease_events"],
            "properties": {
                "mac": { "type": "string" },
                "dhcp": { "type": "boolean" },
                "address": nullable_string("a.b.c.d/prefix; null while DHCP has no lease."),
                "gateway": nullable_string("The default gateway."),
                "dns": { "type": "array", "items": { "type": "string" } },
                "lease_events": count()
            }
        },
        "ModuleInfo": {
            "type": "object",
            "required": ["index", "name", "size_bytes"],
            "properties": {
                "index": count(),
                "name": { "type": "string" },
                "size_bytes": count()
            }
        },
        "ModuleList": {
            "type": "object",
            "required": ["modules"],
            "properties": {
                "modules": { "type": "array", "items": schema_ref("ModuleInfo") }
            }
        },
        "StoreFile": {
            "type": "object",
            "required": ["name", "size"],
            "properties": {
                "name": { "type": "string" },
                "size": count()
            }
        },
        "StoreList": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": { "type": "array", "items": schema_ref("StoreFile") }
            }
        },
        "VmState": {
            "type": "string",
            "enum": ["defined", "running", "idle", "paused", "stopping", "stopped"],
            "description": "defined: never started since boot; idle: halted, waiting for an \
                interrupt; paused: paused by the operator until resumed; stopping: the power \
                button was pressed."
        },
        "VmSummary": {
            "type": "object",
            "required": summary_required,
            "properties": summary
        },
        "VmList": {
            "type": "object",
            "required": ["vms"],
            "properties": { "vms": { "type": "array", "items": schema_ref("VmSummary") } }
        },
        "VmDetail": {
            "type": "object",
            "required": detail_required,
            "properties": detail
        },
        "RunModule": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "mem_mib": {
                    "type": "integer",
                    "nullable": true,
                    "minimum": limits::MIN_RUN_MEMORY_MIB,
                    "maximum": limits::MAX_MEMORY_MIB,
                    "multipleOf": limits::MEMORY_ALIGN_MIB,
                    "description": "Guest RAM in MiB (even: guest RAM comes in 2 MiB pages); the default when absent."
                },
                "vcpus": {
                    "type": "integer",
                    "nullable": true,
                    "minimum": 1,
                    "maximum": limits::MAX_VCPUS,
                    "description": "vCPUs; 1 when absent."
                }
            }
        },
        "StopRequest": {
            "type": "object",
            "additionalProperties": false,
            "description": alloc::format!(
                "Give `force` or `timeout_s`, not both; neither: a graceful stop forced after \
                 {DEFAULT_STOP_TIMEOUT_S} s."
            ),
            "properties": {
                "force": {
                    "type": "boolean",
                    "default": false,
                    "description": "Stop at once instead of pressing the power button."
                },
                "timeout_s": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_STOP_TIMEOUT_S,
                    "default": DEFAULT_STOP_TIMEOUT_S,
                    "description": "Seconds after the power button before it is forced off."
                }
            }
        },
        "Destroyed": {
            "type": "object",
            "required": ["name", "generation"],
            "properties": {
                "name": { "type": "string" },
                "generation": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The configuration generation saved without the VM."
                }
            }
        },
        "ConsoleInput": {
            "type": "object",
            "required": ["accepted", "dropped"],
            "properties": {
                "accepted": count(),
                "dropped": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Bytes the guest's input queue had no room for."
                }
            }
        },
        "ConsoleChunk": {
            "type": "object",
            "required": ["data", "next", "dropped"],
            "properties": {
                "data": { "type": "string" },
                "next": count(),
                "dropped": count()
            }
        }
    });
    if let (Value::Object(all), Value::Object(config)) = (&mut all, config_schemas()) {
        all.extend(config);
    }
    all
}
