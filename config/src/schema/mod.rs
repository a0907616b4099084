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
//!                "gateway": "10.0.2.2", "dns": ["10.0.2.3"],
//!                "internal": { "address": "10.99.0.1", "prefix": 24, "dhcp": true } },
//!   "management": { "api_tokens": ["0123456789abcdef"], "http_port": 80 },
//!   "vms": [ { "name": "web", "vcpus": 1, "memory_mib": 256, "kernel": "bzImage",
//!              "initrd": "initrd.img", "cmdline": "console=ttyS0",
//!              "disks": [ { "file": "web.img", "readonly": false, "serial": "web-root" },
//!                         { "partition": "big", "readonly": false } ],
//!              "nics": [ { "network": "bridged" },
//!                        { "network": "internal", "mac": "52:54:00:aa:bb:cc" } ],
//!              "autostart": true } ]
//! }
//! ```
//!
//! Every object rejects unknown fields; every field but `vms[].name`, `vms[].memory_mib` and
//! one of `vms[].kernel` / `vms[].firmware` has a default ([`Config::default`] is the
//! all-defaults document).
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
    MAX_CMDLINE_LEN, MAX_DISK_SERIAL_LEN, MAX_DNS_SERVERS, MAX_HOSTNAME_LEN, MAX_INTERNAL_PREFIX,
    MAX_MEMORY_MIB, MAX_TOKEN_LEN, MAX_VCPUS, MAX_VM_DISKS, MAX_VM_NICS, MEMORY_ALIGN_MIB,
    MIN_INTERNAL_PREFIX, MIN_MEMORY_MIB, MIN_TOKEN_LEN, disk_serial_pattern, token_pattern,
    vm_name_pattern,
};

pub use crate::limits::check_vm_name;
pub use crate::mac::MacAddress;
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
    /// The host NIC for management and the `bridged` switch's uplink: its MAC address
    /// (`52:54:00:12:34:56`) or PCI address (`00:03.0`), as `net` lists them. Absent: the
    /// first NIC whose driver brought it up. A NIC named here but not found at boot is
    /// reported on the console and the first usable one is taken instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The `internal` network: a switch that connects guest NICs with `network =
    /// "internal"` and the appliance, never the physical network.
    #[serde(default)]
    pub internal: InternalNetwork,
}

/// The appliance's side of the `internal` guest network. Takes effect at the next boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "ConfigInternalNetwork")]
pub struct InternalNetwork {
    /// The appliance's address on it (guests reach it there; it answers ping).
    #[schemars(with = "Ipv4")]
    pub address: Ipv4Addr,
    /// The subnet's prefix length.
    #[schemars(range(min = MIN_INTERNAL_PREFIX, max = MAX_INTERNAL_PREFIX))]
    pub prefix: u8,
    /// Serve DHCP to the guests on it (addresses .100 to .199 of the subnet, or what of
    /// that range the subnet holds).
    pub dhcp: bool,
}

/// The default address of the appliance on the internal network.
pub const DEFAULT_INTERNAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The default prefix of the internal network.
pub const DEFAULT_INTERNAL_PREFIX: u8 = 24;

impl Default for InternalNetwork {
    /// 10.99.0.1/24 with DHCP.
    fn default() -> Self {
        InternalNetwork {
            address: DEFAULT_INTERNAL_ADDRESS,
            prefix: DEFAULT_INTERNAL_PREFIX,
            dhcp: true,
        }
    }
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
    /// TCP port of plain HTTP (see `http`). Takes effect at the next boot.
    #[schemars(range(min = 1))]
    pub http_port: u16,
    /// The token live migrations to this appliance must present (and that `vm migrate`
    /// here presents to the destination). Absent: the first API token serves for both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = MIN_TOKEN_LEN, max = MAX_TOKEN_LEN), pattern(token_pattern()))]
    pub migration_token: Option<String>,
    /// TCP port the appliance takes migrations on, on the migration link. Takes effect at
    /// the next boot.
    #[serde(
        default = "default_migration_port",
        skip_serializing_if = "is_default_migration_port"
    )]
    #[schemars(range(min = 1))]
    pub migration_port: u16,
    /// The NIC and static address live migrations use, separate from management. Absent:
    /// no migrations in or out. Takes effect at the next boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_link: Option<MigrationLink>,
    /// What plain HTTP on `http_port` does: `redirect` (301 to HTTPS, the API is never
    /// served), `off`, or `serve` (the API over plain HTTP too: insecure, for tests). Takes
    /// effect at the next boot.
    pub http: PlainHttpMode,
    /// TCP port of the API over HTTPS. Takes effect at the next boot.
    #[schemars(range(min = 1))]
    pub https_port: u16,
    /// The HTTPS certificate and its key (PEM). Generated at first boot when absent;
    /// replaceable by an operator's (ECDSA P-256). The API never shows the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ManagementCertificate>,
}

/// The default port for incoming migrations.
pub const DEFAULT_MIGRATION_PORT: u16 = 7070;

fn default_migration_port() -> u16 {
    DEFAULT_MIGRATION_PORT
}

fn is_default_migration_port(port: &u16) -> bool {
    *port == DEFAULT_MIGRATION_PORT
}

/// A NIC given over to live migration, with a static address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConfigMigrationLink")]
pub struct MigrationLink {
    /// The host NIC: its MAC (`52:54:00:12:34:57`) or PCI address (`00:04.0`), as `net`
    /// lists them; not the management NIC.
    pub interface: String,
    /// The appliance's IPv4 address on the link.
    #[schemars(with = "Ipv4")]
    pub address: Ipv4Addr,
    /// The link's prefix length.
    #[schemars(range(min = 1, max = 32))]
    pub prefix: u8,
}

impl Default for Management {
    fn default() -> Self {
        Management {
            api_tokens: Vec::new(),
            http_port: DEFAULT_HTTP_PORT,
            migration_token: None,
            migration_port: DEFAULT_MIGRATION_PORT,
            migration_link: None,
            http: PlainHttpMode::default(),
            https_port: DEFAULT_HTTPS_PORT,
            certificate: None,
        }
    }
}

/// The default port of the management API over HTTPS.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// What plain HTTP does beside HTTPS (`management.http`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlainHttpMode {
    /// 301 to the same path over HTTPS.
    #[default]
    Redirect,
    /// No plain HTTP at all.
    Off,
    /// The API over plain HTTP as well (insecure: the token travels in clear).
    Serve,
}

/// The appliance's HTTPS certificate and key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConfigManagementCertificate")]
pub struct ManagementCertificate {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    #[schemars(length(max = MAX_PEM_LEN))]
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`). The API shows
    /// [`KEY_WITHHELD`] in its place, and takes that back as "keep the current key".
    #[schemars(length(max = MAX_PEM_LEN))]
    pub key_pem: String,
}

/// What the API shows instead of the private key.
pub const KEY_WITHHELD: &str = "(withheld: the key stays on the appliance)";

/// The longest PEM text of a certificate or key.
pub const MAX_PEM_LEN: usize = 16 * 1024;

impl core::fmt::Debug for ManagementCertificate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the key.
        f.debug_struct("ManagementCertificate")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
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
    /// The guest kernel (a store file name): a PVH or bzImage kernel. Exactly one of
    /// `kernel` and `firmware` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// A guest firmware (a store file name, e.g. rust-hypervisor-firmware's PVH ELF) that
    /// boots the VM from its disks, instead of a kernel. It gets `cmdline`, never an
    /// `initrd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The initial ramdisk (a store file name), if any; only with a `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// The guest kernel command line (bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_CMDLINE_LEN))]
    pub cmdline: String,
    /// Disks (virtio-blk), attached in this order: the first is the guest's `vda`.
    #[serde(default)]
    #[schemars(length(max = MAX_VM_DISKS))]
    pub disks: Vec<VmDisk>,
    /// Network interfaces (virtio-net), attached after the disks in this order: the first is
    /// the guest's first NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_VM_NICS))]
    pub nics: Vec<VmNic>,
    /// Start the VM when the appliance boots.
    #[serde(default)]
    pub autostart: bool,
    /// What the guest's CPUID shows of the hypervisor.
    #[serde(default, skip_serializing_if = "VmCpuid::is_default")]
    pub cpuid: VmCpuid,
    /// Test devices added to the VM's PC (none by default): kvm-unit-tests and other test
    /// guests report their result through them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub devices: Vec<VmDevice>,
}

/// A test device a VM can have besides its PC (`vms[].devices`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum VmDevice {
    /// QEMU's `isa-debug-exit` at port 0xF4 (4 bytes): a write of `code` stops the VM with
    /// status `(code << 1) | 1`, shown as its stop reason.
    DebugExit,
    /// QEMU's `pc-testdev`: scratch port 0xE0, page flush 0xE4, IRQ line control 0x2000+line.
    PcTestdev,
}

impl VmDevice {
    /// Every device, in the order they are listed in messages.
    pub const ALL: [VmDevice; 2] = [VmDevice::DebugExit, VmDevice::PcTestdev];

    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            VmDevice::DebugExit => "debug-exit",
            VmDevice::PcTestdev => "pc-testdev",
        }
    }

    /// The value for `text` as written in the configuration.
    pub fn parse(text: &str) -> Option<VmDevice> {
        VmDevice::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

impl fmt::Display for VmDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_vcpus() -> u32 {
    1
}

/// A VM's `[vms.cpuid]` table: what its guests see of the hypervisor through CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(rename = "ConfigVmCpuid")]
pub struct VmCpuid {
    /// The paravirtual interface offered besides Keel's own CPUID leaves.
    pub paravirt: Paravirt,
}

impl VmCpuid {
    /// Whether this is the default (`paravirt = "kvm"`), which is not written out.
    pub fn is_default(&self) -> bool {
        *self == VmCpuid::default()
    }
}

/// The paravirtual interface a VM's guests see:
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Paravirt {
    /// KVM's (signature at CPUID 0x4000_0100): Linux guests use kvm-clock, which reads time
    /// without exits and skips the TSC calibration.
    #[default]
    Kvm,
    /// None beyond Keel's own leaves, for guests that must see no hypervisor interface.
    None,
}

impl Paravirt {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Paravirt::Kvm => "kvm",
            Paravirt::None => "none",
        }
    }

    /// The value for `text` as written in the configuration.
    pub fn parse(text: &str) -> Option<Paravirt> {
        match text {
            "kvm" => Some(Paravirt::Kvm),
            "none" => Some(Paravirt::None),
            _ => None,
        }
    }
}

impl fmt::Display for Paravirt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Vm {
    /// The store file the VM boots: its `kernel`, or else its `firmware` (loaded the same
    /// way, as a PVH ELF). `None` only in a definition that has not been validated.
    pub fn boot_file(&self) -> Option<&str> {
        self.kernel.as_deref().or(self.firmware.as_deref())
    }
}

/// One disk of a VM: a file in the guest store, or a guest-disk GPT partition on Keel's disk
/// (for disks larger than a FAT file can be). Exactly one of `file` and `partition` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConfigVmDisk")]
pub struct VmDisk {
    /// A disk image file in the guest store (at most 4 GiB − 1 bytes, a multiple of 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A guest-disk partition on Keel's disk, by name (`a-z0-9-`, a letter first), as
    /// `disk create` makes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = crate::limits::MAX_VM_NAME_LEN), pattern(alloc::format!("^{}$", vm_name_pattern())))]
    pub partition: Option<String>,
    /// Attach it read-only: the guest cannot write, and any number of VMs may share it.
    #[serde(default)]
    pub readonly: bool,
    /// The serial number the guest reads (virtio-blk GET_ID): printable ASCII. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DISK_SERIAL_LEN), pattern(disk_serial_pattern()))]
    pub serial: Option<String>,
}

/// One network interface of a VM: a virtio-net NIC on one of the appliance's switches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConfigVmNic")]
pub struct VmNic {
    /// The switch it is on.
    pub network: NicNetwork,
    /// Its MAC address (unicast, not all zeros, unique on the appliance). Absent: a stable
    /// locally administered address derived from the hostname, the VM's name and the NIC's
    /// index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
}

impl VmNic {
    /// A NIC on `network` with a derived MAC.
    pub fn on(network: NicNetwork) -> VmNic {
        VmNic { network, mac: None }
    }

    /// The MAC address NIC `nic` of VM `vm` on the appliance `hostname` has: the explicit
    /// one, or else [`derived_mac`](crate::mac::derived_mac).
    pub fn mac_for(&self, hostname: &str, vm: &str, nic: usize) -> MacAddress {
        self.mac
            .unwrap_or_else(|| crate::mac::derived_mac(hostname, vm, nic))
    }
}

/// The switch a guest NIC is on:
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NicNetwork {
    /// The physical network, bridged: the guest is a peer of the appliance on the cable
    /// (gets its address from that network's DHCP server).
    Bridged,
    /// The appliance's internal network: guests and the appliance only, never the cable.
    Internal,
}

impl NicNetwork {
    /// The network as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NicNetwork::Bridged => "bridged",
            NicNetwork::Internal => "internal",
        }
    }
}

impl fmt::Display for NicNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a [`VmDisk`]'s bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskSource<'a> {
    /// A file in the guest store.
    File(&'a str),
    /// A guest-disk GPT partition on Keel's disk.
    Partition(&'a str),
}

impl DiskSource<'_> {
    /// The file's or partition's name.
    pub fn name(&self) -> &str {
        match self {
            DiskSource::File(name) | DiskSource::Partition(name) => name,
        }
    }
}

impl fmt::Display for DiskSource<'_> {
    /// `data.img` for a store file, `partition:big` for a partition (the console's
    /// `disk=` syntax).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSource::File(name) => f.write_str(name),
            DiskSource::Partition(name) => write!(f, "partition:{name}"),
        }
    }
}

impl VmDisk {
    /// A writable store-file disk without a serial.
    pub fn file(name: &str) -> VmDisk {
        VmDisk {
            file: Some(name.to_string()),
            partition: None,
            readonly: false,
            serial: None,
        }
    }

    /// A writable partition disk without a serial.
    pub fn partition(name: &str) -> VmDisk {
        VmDisk {
            file: None,
            partition: Some(name.to_string()),
            readonly: false,
            serial: None,
        }
    }

    /// Where its bytes live. Validation guarantees exactly one of `file`/`partition`; on an
    /// unvalidated disk `file` wins, and neither reads as the empty file name, which no
    /// store holds.
    pub fn source(&self) -> DiskSource<'_> {
        match (&self.file, &self.partition) {
            (Some(file), _) => DiskSource::File(file),
            (None, Some(partition)) => DiskSource::Partition(partition),
            (None, None) => DiskSource::File(""),
        }
    }
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
