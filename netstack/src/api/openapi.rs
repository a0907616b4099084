//! The OpenAPI 3.0 document served at `GET /api/v1/openapi.json`.
//!
//! Written by hand, next to the route table in [`super::routes`] and the body types
//! ([`SystemInfo`](super::SystemInfo) and the rest); the router's tests hold it to them:
//! its paths and methods must be exactly [`ROUTES`](super::ROUTES), and every response the
//! router gives in the tests must match the schema documented for its status. Everything
//! but the public routes needs the `bearer` security scheme; every error is the `Error`
//! schema.

use serde_json::{Value, json};

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
                "VmId": {
                    "name": "id",
                    "in": "path",
                    "required": true,
                    "description": "The VM's id.",
                    "schema": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 }
                }
            },
            "responses": responses(),
            "schemas": schemas()
        }
    })
}

fn paths() -> Value {
    json!({
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The web page",
                "security": [],
                "responses": {
                    "200": {
                        "description": "An HTML page that lists VMs through this API.",
                        "content": { "text/html": { "schema": { "type": "string" } } }
                    },
                    "default": error_ref()
                }
            }
        },
        "/api/v1/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness check",
                "security": [],
                "responses": {
                    "200": ok("The server is up.", "Health"),
                    "default": error_ref()
                }
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.0 document.",
                        "content": { "application/json": { "schema": { "type": "object" } } }
                    },
                    "default": error_ref()
                }
            }
        },
        "/api/v1/system": {
            "get": {
                "operationId": "system",
                "summary": "Version, uptime, CPUs, memory, virtualization and network",
                "responses": with_errors(ok("System information.", "SystemInfo"), &["401"])
            }
        },
        "/api/v1/modules": {
            "get": {
                "operationId": "listModules",
                "summary": "Guest payloads VMs can start from",
                "responses": with_errors(ok("The modules.", "ModuleList"), &["401"])
            }
        },
        "/api/v1/store": {
            "get": {
                "operationId": "listStore",
                "summary": "Files in the guest store (the boot disk's keel-store partition)",
                "responses": with_errors(ok("The files.", "StoreList"), &["401", "503"])
            }
        },
        "/api/v1/config": {
            "get": {
                "operationId": "getConfig",
                "summary": "The configuration the appliance runs with",
                "description": "The canonical JSON document (fields in schema order, absent \
                    optional fields left out), API tokens included: a client that holds a token \
                    may replace them all anyway. The ETag identifies this exact document; send \
                    it back in If-Match when you PUT.",
                "responses": with_errors(config_ok("The configuration."), &["401"])
            },
            "put": {
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
                },
                "responses": with_errors(
                    config_ok("The configuration as saved, with its new ETag."),
                    &["400", "401", "411", "412", "413", "422", "428", "500", "503"]
                )
            }
        },
        "/api/v1/vms": {
            "get": {
                "operationId": "listVms",
                "summary": "All VMs",
                "responses": with_errors(ok("The VMs.", "VmList"), &["401"])
            },
            "post": {
                "operationId": "startVm",
                "summary": "Start a VM from a module",
                "requestBody": {
                    "required": true,
                    "content": {
                        "application/json": { "schema": schema_ref("StartVm") }
                    }
                },
                "responses": with_errors_at(
                    "201",
                    json!({
                        "description": "The VM was started.",
                        "headers": {
                            "Location": {
                                "description": "The VM's URL.",
                                "schema": { "type": "string" }
                            }
                        },
                        "content": { "application/json": { "schema": schema_ref("VmDetail") } }
                    }),
                    &["400", "401", "404", "411", "413", "422", "503"]
                )
            }
        },
        "/api/v1/vms/{id}": {
            "parameters": [{ "$ref": "#/components/parameters/VmId" }],
            "get": {
                "operationId": "showVm",
                "summary": "One VM",
                "responses": with_errors(ok("The VM.", "VmDetail"), &["400", "401", "404"])
            }
        },
        "/api/v1/vms/{id}/stop": {
            "parameters": [{ "$ref": "#/components/parameters/VmId" }],
            "post": {
                "operationId": "stopVm",
                "summary": "Stop a VM",
                "description": "Any request body is ignored (send `Content-Length: 0`).",
                "responses": with_errors(
                    ok("The VM, stopped.", "VmDetail"),
                    &["400", "401", "404", "409", "411", "413"]
                )
            }
        },
        "/api/v1/vms/{id}/console": {
            "parameters": [{ "$ref": "#/components/parameters/VmId" }],
            "get": {
                "operationId": "vmConsole",
                "summary": "A VM's console output",
                "parameters": [{
                    "name": "since",
                    "in": "query",
                    "required": false,
                    "description": "Byte offset to read from: 0, or the `next` of the last read.",
                    "schema": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 18446744073709551615u64,
                        "default": 0
                    }
                }],
                "responses": with_errors(
                    ok("Console output.", "ConsoleChunk"),
                    &["400", "401", "404"]
                )
            }
        }
    })
}

/// Every error response in `components/responses`: the status (or `Error` for the
/// catch-all) and its description.
const ERRORS: [(&str, &str); 15] = [
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
                 PUT /api/v1/config, `errors` lists every problem with its path."
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

fn with_errors(ok: Value, errors: &[&str]) -> Value {
    with_errors_at("200", ok, errors)
}

/// `success` under `status`, the listed errors by reference, and `default` for the rest.
fn with_errors_at(status: &str, success: Value, errors: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    out.insert(status.into(), success);
    for error in errors {
        out.insert(
            (*error).into(),
            json!({ "$ref": alloc::format!("#/components/responses/{}", response_name(error)) }),
        );
    }
    out.insert("default".into(), error_ref());
    Value::Object(out)
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
                    "description": "Dot-separated RFC 1123 labels, at most 253 characters.",
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
                "dns": { "type": "array", "maxItems": 3, "items": ipv4("A DNS server.") }
            }
        },
        "ConfigManagement": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "api_tokens": {
                    "type": "array",
                    "description": "Bearer tokens the API accepts (16 to 128 characters of \
                        A-Za-z0-9._~+/-), in effect as soon as saved.",
                    "items": { "type": "string", "minLength": 16, "maxLength": 128 }
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
                "name": { "type": "string", "description": "1 to 32 of a-z0-9-, a letter first." },
                "vcpus": { "type": "integer", "minimum": 1, "maximum": 1, "default": 1 },
                "memory_mib": { "type": "integer", "minimum": 16, "maximum": 65536 },
                "kernel": { "type": "string", "description": "A guest store file." },
                "initrd": { "type": "string", "description": "A guest store file." },
                "cmdline": { "type": "string", "maxLength": 2048, "default": "" },
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
                    "description": "PUT /api/v1/config: every problem, in document order.",
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
    let vm_common = json!({
        "id": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 },
        "module": { "type": "string" },
        "state": schema_ref("VmState"),
        "stop_reason": nullable_string("Why the VM stopped, when stopped."),
        "exits": exits()
    });
    let mut detail = vm_common.clone();
    if let Value::Object(fields) = &mut detail {
        fields.insert(
            "mem_mib".into(),
            json!({ "type": "integer", "minimum": 0, "maximum": 4294967295u64 }),
        );
        fields.insert("backend".into(), json!({ "type": "string" }));
        fields.insert("console_bytes".into(), count());
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
        "VmState": { "type": "string", "enum": ["running", "waiting", "stopped"] },
        "VmSummary": {
            "type": "object",
            "required": ["id", "module", "state", "stop_reason", "exits"],
            "properties": vm_common
        },
        "VmList": {
            "type": "object",
            "required": ["vms"],
            "properties": { "vms": { "type": "array", "items": schema_ref("VmSummary") } }
        },
        "VmDetail": {
            "type": "object",
            "required": [
                "id", "module", "state", "stop_reason", "exits", "mem_mib", "backend",
                "console_bytes"
            ],
            "properties": detail
        },
        "StartVm": {
            "type": "object",
            "required": ["module"],
            "additionalProperties": false,
            "properties": {
                "module": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A module name or index (see /api/v1/modules)."
                },
                "mem_mib": {
                    "type": "integer",
                    "nullable": true,
                    "minimum": 2,
                    "maximum": 65536,
                    "multipleOf": 2,
                    "description": "Guest RAM in MiB (even: guest RAM comes in 2 MiB pages); the default when absent."
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
