//! The configuration schema: what an appliance is told to be.
//!
//! # Shape
//!
//! The same document is written as TOML by the image builder's operator
//! (`config/appliance.example.toml` documents every field) and stored and served as JSON:
//!
//! ```json
//! {
//!   "hostname": "keel",
//!   "network": { "mode": "static", "address": "10.0.2.15", "prefix": 24,
//!                "gateway": "10.0.2.2", "dns": ["10.0.2.3"] },
//!   "management": { "api_tokens": ["0123456789abcdef"], "http_port": 80 },
//!   "vms": [ { "name": "web", "vcpus": 1, "memory_mib": 256, "kernel": "bzImage",
//!              "initrd": "initrd.img", "cmdline": "console=ttyS0", "disks": ["web.img"],
//!              "autostart": true } ]
//! }
//! ```
//!
//! Every object rejects unknown fields; every field but `vms[].name`, `vms[].memory_mib` and
//! `vms[].kernel` has a default ([`Config::default`] is the all-defaults document).
//!
//! # Two steps
//!
//! 1. Shape: [`Config::from_json`] / [`Config::from_value`] deserialize through
//!    `serde_path_to_error` and a walker with operator-worded messages (`de`), which name the
//!    path of a mistyped, unknown or missing field ([`SchemaError`]).
//! 2. Rules: [`Config::validate`] checks every value against the rules the types cannot
//!    express and returns *all* violations ([`ValidationError`]), each with its path.
//!
//! [`Config::to_json_pretty`] is the canonical encoding (fields in declaration order, absent
//! optional fields omitted): what the record stores, `GET` returns and the ETag hashes.

mod de;
mod validate;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::{
    MAX_CMDLINE_LEN, MAX_DNS_SERVERS, MAX_HOSTNAME_LEN, MAX_MEMORY_MIB, MAX_TOKEN_LEN, MAX_VCPUS,
    MEMORY_ALIGN_MIB, MIN_MEMORY_MIB, MIN_TOKEN_LEN, token_pattern, vm_name_pattern,
};

pub use crate::limits::check_vm_name;
pub(crate) use de::from_value;
pub use de::{SchemaError, SchemaErrorKind};
pub use validate::ValidationError;

/// The default hostname.
pub const DEFAULT_HOSTNAME: &str = "keel";
/// The default port of the management HTTP API.
pub const DEFAULT_HTTP_PORT: u16 = 80;

/// The whole appliance configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The appliance's hostname: dot-separated RFC 1123 labels.
    #[schemars(length(max = MAX_HOSTNAME_LEN))]
    pub hostname: String,
    /// The management network interface.
    pub network: Network,
    /// The management API.
    pub management: Management,
    /// The virtual machines, in the order they are started.
    pub vms: Vec<Vm>,
}

impl Default for Config {
    /// The built-in defaults: hostname `keel`, DHCP, no API tokens, port 80, no VMs.
    fn default() -> Self {
        Config {
            hostname: DEFAULT_HOSTNAME.to_string(),
            network: Network::default(),
            management: Management::default(),
            vms: Vec::new(),
        }
    }
}

/// How the management interface gets its address:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Ask a DHCP server (the default).
    #[default]
    Dhcp,
    /// Use `address`/`prefix`/`gateway`/`dns` as configured.
    Static,
}

impl NetworkMode {
    /// The mode as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Dhcp => "dhcp",
            NetworkMode::Static => "static",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The management network interface. In `dhcp` mode the other fields must be absent; in
/// `static` mode `address` and `prefix` are required. Takes effect at the next boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "ConfigNetwork")]
pub struct Network {
    /// DHCP or static addressing.
    pub mode: NetworkMode,
    /// Static: the interface's IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Ipv4>")]
    pub address: Option<Ipv4Addr>,
    /// Static: the subnet prefix length.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub prefix: Option<u8>,
    /// Static: the default gateway, inside the subnet. Absent: no default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Ipv4>")]
    pub gateway: Option<Ipv4Addr>,
    /// Static: the DNS servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<Ipv4>", length(max = MAX_DNS_SERVERS))]
    pub dns: Vec<Ipv4Addr>,
}

/// The management HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "ConfigManagement")]
pub struct Management {
    /// Bearer tokens the API accepts, in effect as soon as saved. Empty: the API accepts no
    /// requests.
    #[schemars(inner(length(min = MIN_TOKEN_LEN, max = MAX_TOKEN_LEN), pattern(token_pattern())))]
    pub api_tokens: Vec<String>,
    /// TCP port of the API. Takes effect at the next boot.
    #[schemars(range(min = 1))]
    pub http_port: u16,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            api_tokens: Vec::new(),
            http_port: DEFAULT_HTTP_PORT,
        }
    }
}

/// One virtual machine. File names refer to files in the guest store partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConfigVm")]
pub struct Vm {
    /// Unique name: `a-z0-9-`, starting with a letter.
    #[schemars(length(min = 1, max = crate::limits::MAX_VM_NAME_LEN), pattern(alloc::format!("^{}$", vm_name_pattern())))]
    pub name: String,
    /// Virtual CPUs.
    #[serde(default = "default_vcpus")]
    #[schemars(range(min = 1, max = MAX_VCPUS))]
    pub vcpus: u32,
    /// Guest memory in MiB (guest RAM comes in pages of `multipleOf` MiB).
    #[schemars(range(min = MIN_MEMORY_MIB, max = MAX_MEMORY_MIB), extend("multipleOf" = MEMORY_ALIGN_MIB))]
    pub memory_mib: u64,
    /// The guest kernel (a store file name).
    pub kernel: String,
    /// The initial ramdisk (a store file name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The guest kernel command line (bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_CMDLINE_LEN))]
    pub cmdline: String,
    /// Disk images (store file names), attached in this order.
    #[serde(default)]
    pub disks: Vec<String>,
    /// Start the VM when the appliance boots.
    #[serde(default)]
    pub autostart: bool,
}

fn default_vcpus() -> u32 {
    1
}

/// The JSON Schema of an IPv4 address in dotted-decimal text (schemars describes
/// `Ipv4Addr` only with `std`).
struct Ipv4;

impl JsonSchema for Ipv4 {
    fn schema_name() -> alloc::borrow::Cow<'static, str> {
        "Ipv4".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "ipv4" })
    }
}

/// Why a configuration document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bytes are not JSON.
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The JSON does not have the schema's shape (a wrong type, an unknown or missing field).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The values break the schema's rules: every violation, in document order.
    #[error("{}", joined(.0))]
    Invalid(Vec<ValidationError>),
}

/// Every error's message, `; ` between them.
pub(crate) fn joined(errors: &[ValidationError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&e.to_string());
    }
    out
}

impl Config {
    /// Parses and validates a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let (line, column) = (e.line(), e.column());
            let full = e.to_string();
            let suffix = alloc::format!(" at line {line} column {column}");
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            ConfigError::Syntax {
                line,
                column,
                message,
            }
        })?;
        Config::from_value(&value)
    }

    /// Deserializes and validates an already parsed document (the image builder's TOML
    /// reader converts TOML to a [`Value`] and comes in here).
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let config: Config = from_value(value)?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// The canonical JSON encoding: pretty-printed, fields in declaration order, optional
    /// fields omitted when absent, a final newline. Equal configurations encode to equal
    /// bytes.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        // Cannot fail: every field is a string, integer, boolean, IPv4 address (serialized
        // as a string), list or struct; serde_json fails only on maps with non-string keys
        // and on `Serialize` impls that return errors, and the schema has neither.
        let mut out = serde_json::to_vec_pretty(self).expect("the schema always serializes");
        out.push(b'\n');
        out
    }

    /// The configuration as a JSON value (the form [`crate::edit`] works on).
    pub fn to_value(&self) -> Value {
        // Cannot fail, for the reasons given in `to_json_pretty`.
        serde_json::to_value(self).expect("the schema always serializes")
    }

    /// Checks every rule and returns every violation, each with its path.
    pub fn validate(&self) -> Result<(), Vec<ValidationError>> {
        let errors = validate::check(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
