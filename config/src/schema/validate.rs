//! The rules the schema's types cannot express, checked all at once.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{Config, InternalNetwork, Management, Network, NetworkMode, Vm, VmDisk};
use crate::limits::{
    MAX_CMDLINE_LEN, MAX_DISK_SERIAL_LEN, MAX_DNS_SERVERS, MAX_FILE_NAME_LEN, MAX_HOSTNAME_LEN,
    MAX_INTERNAL_PREFIX, MAX_LABEL_LEN, MAX_MEMORY_MIB, MAX_TOKEN_LEN, MAX_VCPUS, MAX_VM_DISKS,
    MAX_VM_NICS, MEMORY_ALIGN_MIB, MIN_INTERNAL_PREFIX, MIN_MEMORY_MIB, MIN_TOKEN_LEN,
    check_vm_name, disk_serial_char, token_char,
};
use crate::mac::MacAddress;

/// The smallest internal subnet (longest prefix) that holds the DHCP pool's first host
/// number, 100: a /25 (host numbers 1 to 126).
const MAX_DHCP_PREFIX: u8 = 25;

/// One broken rule: where, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// The field: `hostname`, `network.gateway`, `vms[1].memory_mib`.
    pub path: String,
    /// What is wrong, phrased as what the value must be.
    pub message: String,
}

/// Collects violations in document order.
struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Every violation in `config`, in document order.
pub(super) fn check(config: &Config) -> Vec<ValidationError> {
    let mut errors = Errors(Vec::new());
    if let Err(message) = check_hostname(&config.hostname) {
        errors.push("hostname", message);
    }
    check_network(&config.network, &mut errors);
    check_internal(&config.network, &mut errors);
    check_management(&config.management, &mut errors);
    check_vms(&config.vms, &mut errors);
    check_nic_macs(&config.hostname, &config.vms, &mut errors);
    errors.0
}

fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "must be at most {MAX_HOSTNAME_LEN} characters (it has {})",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("must not have empty labels (leading, trailing or doubled dots)".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label \"{label}\" must be at most {MAX_LABEL_LEN} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label \"{}\" may hold only letters, digits and '-'",
                label.escape_default()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label \"{label}\" must not start or end with '-'"));
        }
    }
    Ok(())
}

/// The subnet mask of a prefix length in 1..=32.
fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - u32::from(prefix.clamp(1, 32)))
}

/// Whether `addr` can be a host's address at all.
fn host_address_problem(addr: Ipv4Addr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("must not be 0.0.0.0")
    } else if addr.is_broadcast() {
        Some("must not be the broadcast address 255.255.255.255")
    } else if addr.is_multicast() {
        Some("must not be a multicast address (224.0.0.0/4)")
    } else if addr.is_loopback() {
        Some("must not be a loopback address (127.0.0.0/8)")
    } else {
        None
    }
}

fn check_network(net: &Network, errors: &mut Errors) {
    if let Some(interface) = &net.interface
        && let Err(problem) = interface.parse::<crate::interface::InterfaceSelector>()
    {
        errors.push("network.interface", format!("{interface:?}: {problem}"));
    }
    match net.mode {
        NetworkMode::Dhcp => {
            let only_static = "only valid when network.mode is \"static\"";
            if net.address.is_some() {
                errors.push("network.address", only_static);
            }
            if net.prefix.is_some() {
                errors.push("network.prefix", only_static);
            }
            if net.gateway.is_some() {
                errors.push("network.gateway", only_static);
            }
            if !net.dns.is_empty() {
                errors.push("network.dns", only_static);
            }
        }
        NetworkMode::Static => check_static(net, errors),
    }
}

fn check_static(net: &Network, errors: &mut Errors) {
    let required = "required when network.mode is \"static\"";
    let address = match net.address {
        None => {
            errors.push("network.address", required);
            None
        }
        Some(addr) => match host_address_problem(addr) {
            Some(problem) => {
                errors.push("network.address", problem);
                None
            }
            None => Some(addr),
        },
    };
    let prefix = match net.prefix {
        None => {
            errors.push("network.prefix", required);
            None
        }
        Some(p) if !(1..=32).contains(&p) => {
            errors.push("network.prefix", "must be between 1 and 32");
            None
        }
        Some(p) => Some(p),
    };
    if let (Some(addr), Some(prefix)) = (address, prefix) {
        let m = mask(prefix);
        let bits = u32::from(addr);
        if prefix <= 30 && (bits & !m == 0 || bits & !m == !m) {
            errors.push(
                "network.address",
                format!("{addr} is the network or broadcast address of {addr}/{prefix}"),
            );
        }
    }
    if let Some(gateway) = net.gateway {
        if let Some(problem) = host_address_problem(gateway) {
            errors.push("network.gateway", problem);
        } else if let (Some(addr), Some(prefix)) = (address, prefix) {
            let m = mask(prefix);
            let network = Ipv4Addr::from(u32::from(addr) & m);
            if u32::from(gateway) & m != u32::from(addr) & m {
                errors.push(
                    "network.gateway",
                    format!("{gateway} is outside the subnet {network}/{prefix}"),
                );
            } else if gateway == addr {
                errors.push(
                    "network.gateway",
                    "must differ from network.address (this appliance)",
                );
            }
        }
    }
    if net.dns.len() > MAX_DNS_SERVERS {
        errors.push(
            "network.dns",
            format!(
                "at most {MAX_DNS_SERVERS} servers (it lists {})",
                net.dns.len()
            ),
        );
    }
    for (i, server) in net.dns.iter().enumerate() {
        if let Some(problem) = host_address_problem(*server) {
            errors.push(format!("network.dns[{i}]"), problem);
        }
    }
}

/// `network.internal`: a host address of a subnet from /8 to /30 (at most /25 with DHCP, so
/// the pool fits), apart from a static management subnet.
fn check_internal(net: &Network, errors: &mut Errors) {
    let InternalNetwork {
        address,
        prefix,
        dhcp,
    } = net.internal;
    let prefix_ok = if !(MIN_INTERNAL_PREFIX..=MAX_INTERNAL_PREFIX).contains(&prefix) {
        errors.push(
            "network.internal.prefix",
            format!("must be between {MIN_INTERNAL_PREFIX} and {MAX_INTERNAL_PREFIX}"),
        );
        false
    } else if dhcp && prefix > MAX_DHCP_PREFIX {
        errors.push(
            "network.internal.prefix",
            format!(
                "a /{prefix} is too small for the DHCP pool (host numbers 100 to 199): use a \
                 prefix of {MAX_DHCP_PREFIX} or less, or set network.internal.dhcp = false"
            ),
        );
        false
    } else {
        true
    };
    if let Some(problem) = host_address_problem(address) {
        errors.push("network.internal.address", problem);
        return;
    }
    if !prefix_ok {
        return;
    }
    let m = mask(prefix);
    let bits = u32::from(address);
    if bits & !m == 0 || bits & !m == !m {
        errors.push(
            "network.internal.address",
            format!("{address} is the network or broadcast address of {address}/{prefix}"),
        );
        return;
    }
    // The appliance routes by subnet: the same addresses on both interfaces would be
    // ambiguous. (A DHCP management address is not known until it runs.)
    if net.mode == NetworkMode::Static
        && let (Some(mgmt), Some(mgmt_prefix)) = (net.address, net.prefix)
        && (1..=32).contains(&mgmt_prefix)
    {
        let common = mask(prefix.min(mgmt_prefix));
        if bits & common == u32::from(mgmt) & common {
            let network = Ipv4Addr::from(bits & m);
            errors.push(
                "network.internal.address",
                format!(
                    "the internal network {network}/{prefix} overlaps the management network \
                     {mgmt}/{mgmt_prefix} (network.address): choose another subnet"
                ),
            );
        }
    }
}

fn check_management(mgmt: &Management, errors: &mut Errors) {
    for (i, token) in mgmt.api_tokens.iter().enumerate() {
        let path = format!("management.api_tokens[{i}]");
        // Messages never repeat the token: it is a secret.
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            errors.push(
                path,
                format!(
                    "must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long (it has {})",
                    token.chars().count()
                ),
            );
        } else if !token.bytes().all(token_char) {
            errors.push(
                path,
                "may hold only letters, digits and . _ ~ + / - (no spaces)",
            );
        } else if let Some(first) = mgmt.api_tokens[..i].iter().position(|t| t == token) {
            errors.push(path, format!("duplicates management.api_tokens[{first}]"));
        }
    }
    if mgmt.http_port == 0 {
        errors.push("management.http_port", "must be between 1 and 65535");
    }
    check_migration(mgmt, errors);
    check_management_tls(mgmt, errors);
}

/// `management.migration_*`: a token like an API token, a port, a link with a usable
/// static address.
fn check_migration(mgmt: &Management, errors: &mut Errors) {
    if let Some(token) = &mgmt.migration_token {
        let path = "management.migration_token";
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            errors.push(
                path,
                format!("must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long"),
            );
        } else if !token.bytes().all(token_char) {
            errors.push(
                path,
                "may hold only letters, digits and . _ ~ + / - (no spaces)",
            );
        }
    }
    if mgmt.migration_port == 0 {
        errors.push("management.migration_port", "must be between 1 and 65535");
    } else if mgmt.migration_port == mgmt.http_port {
        errors.push(
            "management.migration_port",
            "must differ from management.http_port",
        );
    }
    if let Some(link) = &mgmt.migration_link {
        if link.interface.trim().is_empty() {
            errors.push(
                "management.migration_link.interface",
                "must name a NIC by MAC or PCI address, as 'net' lists them",
            );
        }
        if !(1..=32).contains(&link.prefix) {
            errors.push(
                "management.migration_link.prefix",
                "must be between 1 and 32",
            );
        }
        let a = link.address;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
            errors.push(
                "management.migration_link.address",
                "must be a unicast address (not 0.0.0.0, 127.x, multicast or broadcast)",
            );
        }
    }
}

/// `management.https_port`, its clash with `http_port`, and the certificate's PEM shape
/// (the kernel checks the key against the certificate when it loads them).
fn check_management_tls(mgmt: &Management, errors: &mut Errors) {
    use super::{MAX_PEM_LEN, PlainHttpMode};
    if mgmt.https_port == 0 {
        errors.push("management.https_port", "must be between 1 and 65535");
    } else if mgmt.https_port == mgmt.http_port && mgmt.http != PlainHttpMode::Off {
        errors.push(
            "management.https_port",
            format!(
                "must differ from management.http_port ({}), unless management.http is \"off\"",
                mgmt.http_port
            ),
        );
    }
    if let Some(cert) = &mgmt.certificate {
        let pem = |text: &str, label_ok: &dyn Fn(&str) -> bool, what: &str| {
            let text = text.trim();
            if text.len() > MAX_PEM_LEN {
                return Err(format!("must be at most {MAX_PEM_LEN} bytes of PEM"));
            }
            let label = text
                .strip_prefix("-----BEGIN ")
                .and_then(|rest| rest.split_once("-----"))
                .map(|(label, _)| label);
            match label {
                Some(label) if label_ok(label) => Ok(()),
                _ => Err(format!("must be PEM ({what})")),
            }
        };
        if let Err(e) = pem(
            &cert.cert_pem,
            &|l| l == "CERTIFICATE",
            "-----BEGIN CERTIFICATE-----",
        ) {
            errors.push("management.certificate.cert_pem", e);
        }
        if cert.key_pem != super::KEY_WITHHELD
            && let Err(e) = pem(
                &cert.key_pem,
                &|l| l == "PRIVATE KEY" || l == "EC PRIVATE KEY",
                "-----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----",
            )
        {
            errors.push("management.certificate.key_pem", e);
        }
    }
}

/// A file name in the guest store: one path component.
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must name a file in the guest store (it is empty)".into());
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(format!("must be at most {MAX_FILE_NAME_LEN} bytes"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err("must be a plain file name in the guest store, without '/' or '\\'".into());
    }
    if name == "." || name == ".." {
        return Err("must name a file, not \".\" or \"..\"".into());
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn check_vms(vms: &[Vm], errors: &mut Errors) {
    for (i, vm) in vms.iter().enumerate() {
        let at = |field: &str| format!("vms[{i}].{field}");
        match check_vm_name(&vm.name) {
            Err(message) => errors.push(at("name"), message),
            Ok(()) => {
                if let Some(first) = vms[..i].iter().position(|other| other.name == vm.name) {
                    errors.push(
                        at("name"),
                        format!("\"{}\" is already the name of vms[{first}]", vm.name),
                    );
                }
            }
        }
        if !(1..=u32::from(MAX_VCPUS)).contains(&vm.vcpus) {
            errors.push(at("vcpus"), format!("must be between 1 and {MAX_VCPUS}"));
        }
        if !(u64::from(MIN_MEMORY_MIB)..=u64::from(MAX_MEMORY_MIB)).contains(&vm.memory_mib) {
            errors.push(
                at("memory_mib"),
                format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}"),
            );
        } else if !vm.memory_mib.is_multiple_of(u64::from(MEMORY_ALIGN_MIB)) {
            errors.push(
                at("memory_mib"),
                format!("must be an even number (guest RAM comes in {MEMORY_ALIGN_MIB} MiB pages)"),
            );
        }
        match (&vm.kernel, &vm.firmware) {
            (None, None) => errors.push(
                at("kernel"),
                "required: name the guest kernel (a store file), or set firmware to boot \
                 the VM's disks through a guest firmware",
            ),
            (Some(_), Some(_)) => errors.push(
                at("firmware"),
                "must not be set together with kernel: a VM boots either a kernel or a \
                 firmware (remove one)",
            ),
            _ => {}
        }
        if let Some(kernel) = &vm.kernel
            && let Err(message) = check_file_name(kernel)
        {
            errors.push(at("kernel"), message);
        }
        if let Some(firmware) = &vm.firmware
            && let Err(message) = check_file_name(firmware)
        {
            errors.push(at("firmware"), message);
        }
        if let Some(initrd) = &vm.initrd {
            if let Err(message) = check_file_name(initrd) {
                errors.push(at("initrd"), message);
            } else if vm.kernel.is_none() && vm.firmware.is_some() {
                errors.push(
                    at("initrd"),
                    "only valid with a kernel: a firmware loads its own initrd from the disk",
                );
            }
        }
        if vm.cmdline.len() > MAX_CMDLINE_LEN {
            errors.push(
                at("cmdline"),
                format!(
                    "must be at most {MAX_CMDLINE_LEN} bytes (it has {})",
                    vm.cmdline.len()
                ),
            );
        } else if vm.cmdline.chars().any(char::is_control) {
            errors.push(at("cmdline"), "must be one line of printable text");
        }
        check_disks(i, &vm.disks, errors);
        check_vm_devices(i, &vm.devices, errors);
        if vm.nics.len() > MAX_VM_NICS {
            errors.push(
                at("nics"),
                format!(
                    "at most {MAX_VM_NICS} NICs per VM (it lists {})",
                    vm.nics.len()
                ),
            );
        }
        for (n, nic) in vm.nics.iter().enumerate() {
            let Some(mac) = nic.mac else { continue };
            if let Some(problem) = mac_problem(mac) {
                errors.push(
                    format!("vms[{i}].nics[{n}].mac"),
                    format!("{mac} {problem}"),
                );
            }
        }
    }
}

/// Why `mac` cannot be a NIC's address, if it cannot.
fn mac_problem(mac: MacAddress) -> Option<&'static str> {
    if mac.is_zero() {
        Some("is not an address; a NIC needs a unicast MAC (or none, for a derived one)")
    } else if mac.is_multicast() {
        Some("is a multicast address; a NIC needs a unicast MAC")
    } else {
        None
    }
}

/// No two NICs of any VMs have the same MAC, explicit or derived (with `hostname`).
fn check_nic_macs(hostname: &str, vms: &[Vm], errors: &mut Errors) {
    // (MAC, owner's path); the NICs are few (at most 4 per VM), a list does.
    let mut seen: Vec<(MacAddress, String)> = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        // A repeated name already has its error, and would repeat all its derived MACs.
        let repeated_name = vms[..i].iter().any(|other| other.name == vm.name);
        for (n, nic) in vm.nics.iter().enumerate() {
            let owner = format!("vms[{i}].nics[{n}]");
            let mac = match nic.mac {
                Some(mac) if mac_problem(mac).is_some() => continue,
                Some(mac) => mac,
                None if repeated_name => continue,
                None => nic.mac_for(hostname, &vm.name, n),
            };
            if let Some((_, first)) = seen.iter().find(|(m, _)| *m == mac) {
                if nic.mac.is_some() {
                    errors.push(
                        format!("{owner}.mac"),
                        format!("{mac} is already {first}'s MAC"),
                    );
                } else {
                    errors.push(
                        owner,
                        format!(
                            "its derived MAC {mac} is already {first}'s MAC: give one of them \
                             another mac"
                        ),
                    );
                }
            } else {
                seen.push((mac, owner));
            }
        }
    }
}

/// `vms[i].disks`: how many, each one's source and serial, no source twice.
fn check_disks(i: usize, disks: &[VmDisk], errors: &mut Errors) {
    if disks.len() > MAX_VM_DISKS {
        errors.push(
            format!("vms[{i}].disks"),
            format!(
                "at most {MAX_VM_DISKS} disks per VM (it lists {}): remove some, or combine \
                 them into one larger disk",
                disks.len()
            ),
        );
    }
    for (d, disk) in disks.iter().enumerate() {
        let at = |field: &str| format!("vms[{i}].disks[{d}].{field}");
        let source_ok = match (&disk.file, &disk.partition) {
            (None, None) => {
                errors.push(
                    format!("vms[{i}].disks[{d}]"),
                    "must name its backing: file (a store file) or partition (a guest-disk \
                     partition)",
                );
                false
            }
            (Some(_), Some(_)) => {
                errors.push(
                    at("partition"),
                    "must not be set together with file: a disk is either a store file or a \
                     partition (remove one)",
                );
                false
            }
            (Some(file), None) => match check_file_name(file) {
                Err(message) => {
                    errors.push(at("file"), message);
                    false
                }
                Ok(()) => true,
            },
            (None, Some(partition)) => match check_vm_name(partition) {
                Err(message) => {
                    errors.push(at("partition"), format!("a partition name {message}"));
                    false
                }
                Ok(()) => true,
            },
        };
        if source_ok
            && let Some(first) = disks[..d]
                .iter()
                .position(|other| other.source() == disk.source())
        {
            let field = if disk.file.is_some() {
                "file"
            } else {
                "partition"
            };
            errors.push(
                at(field),
                format!(
                    "\"{}\" is already attached as vms[{i}].disks[{first}]",
                    disk.source().name()
                ),
            );
        }
        if let Some(serial) = &disk.serial {
            if serial.len() > MAX_DISK_SERIAL_LEN {
                errors.push(
                    at("serial"),
                    format!(
                        "must be at most {MAX_DISK_SERIAL_LEN} bytes (it has {})",
                        serial.len()
                    ),
                );
            } else if !serial.bytes().all(disk_serial_char) {
                errors.push(
                    at("serial"),
                    "may hold only printable ASCII characters (letters, digits, punctuation, \
                     space)",
                );
            }
        }
    }
}

/// `vms[i].devices`: each test device at most once.
fn check_vm_devices(i: usize, devices: &[super::VmDevice], errors: &mut Errors) {
    for (n, device) in devices.iter().enumerate() {
        if let Some(first) = devices[..n].iter().position(|d| d == device) {
            errors.push(
                format!("vms[{i}].devices[{n}]"),
                format!("\"{device}\" is already vms[{i}].devices[{first}]: list each device once"),
            );
        }
    }
}
