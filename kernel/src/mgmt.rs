//! The network management plane, wired: `keel_netstack` on the appliance's port of the
//! `bridged` guest switch, the HTTP server and the REST router, over a [`Management`]
//! implementation that reads the kernel's state and drives the VM manager — the same
//! operations as the console.
//!
//! The management NIC (`network.interface`, else the first usable one) is the bridged
//! switch's uplink (promiscuous, see [`crate::net`]): the plane
//! moves frames between it and the uplink port ([`NetPlane::pump_uplink`]), and its own
//! stack runs over a [`PortDevice`] with the NIC's MAC, so the appliance keeps its address on
//! the cable while guests on `bridged` get theirs from the same network.
//!
//! [`NetPlane`] is one client of the kernel's main loop ([`crate::runtime::Kernel`]), which
//! owns it together with the VM manager and the settings and lends those to each
//! [`NetPlane::poll`]; the plane keeps no configuration of its own beyond the router's tokens.
//!
//! Addressing (DHCP or static), the HTTP port and the API tokens come from the configuration
//! loaded at boot ([`crate::settings`]). The API also accepts the token on the kernel
//! command line (`keel.api-token=…`, which `keel build` writes into `grub.cfg`), so an
//! appliance whose configuration is lost can still be reached. A saved configuration's
//! tokens take effect as soon as the kernel hands it over ([`NetPlane::apply_config`]);
//! addressing and port at the next boot.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use keel_config::Config;
use keel_config::schema::NicNetwork;
use keel_netstack::api::{
    ApiError, ConsoleChunk, HardwareInfo, Management, ModuleInfo, NetworkInfo, Router, SavedVm,
    StoreFile, SystemInfo, VmDetail, VmKey, VmState as ApiVmState, VmSummary,
};
use keel_netstack::http::{HttpServer, PlainHttp, ServerConfig};
use keel_netstack::iface::{Addressing, NetConfig, NetStack, NetStatus};
use keel_netstack::switch::{PortDevice, PortHandle, PortKind, pump_uplink};

use crate::System;
use crate::net::internal::InternalNet;
use crate::net::now;
use crate::settings::{SaveError, Settings};
use crate::vm_config::VmConfigError;
use crate::vms::{
    PauseVmError, SavedVmError, StartError, StopError, StopMode, ViewState, VmManager, VmView,
};

/// Concurrent HTTP connections (each takes 12 KiB of socket buffers up front: 1.5 MiB).
/// Generous, because a connection the server closed can hold its socket until the peer's
/// FIN arrives (at most the 10 s request timeout).
const HTTP_CONNECTIONS: usize = 128;

/// Frames moved each way between the physical NIC and the uplink port per call of
/// [`NetPlane::pump_uplink`] (twice a pass): as many as the switch takes from a port per poll.
const UPLINK_BUDGET: usize = 64;

/// The running management plane.
pub struct NetPlane {
    stack: NetStack,
    server: HttpServer,
    router: Router,
    /// The appliance's port on the bridged switch, which the stack sends and receives on.
    device: PortDevice,
    /// The bridged switch's port for the physical NIC.
    uplink: PortHandle,
    /// Index of the uplink in `System::nics`.
    uplink_nic: usize,
    /// Its PCI address, for `net` and the API.
    uplink_address: crate::pci::PciAddress,
    nic: String,
    /// The token on the kernel command line, if any.
    cmdline_token: Option<String>,
    /// How many tokens the router accepts.
    tokens: usize,
    /// The port the server listens on.
    port: u16,
    /// The addressing as the API reports it (refreshed on lease events).
    network: NetworkInfo,
    /// HTTPS: its port, and the plain port's role.
    https: HttpsState,
}

/// How the management plane's HTTPS came up.
#[derive(Clone, Debug)]
pub enum HttpsState {
    /// HTTPS on `port`; plain HTTP as `plain` says.
    On { port: u16, plain: PlainHttp },
    /// No HTTPS (no key could be made): plain HTTP serves the API only if
    /// `management.http = "serve"`, else answers 503 with `reason`.
    Off { reason: String, serve_plain: bool },
}

/// Why the network could not start.
#[derive(Debug)]
pub enum NetPlaneError {
    /// No usable NIC was found.
    NoNic,
    /// The stack or server refused its configuration.
    Setup(String),
}

impl core::fmt::Display for NetPlaneError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetPlaneError::NoNic => f.write_str(
                "no supported network card (virtio-net, Intel e1000/e1000e/igb): the HTTP API is \
                 off (`net` lists the NICs found)",
            ),
            NetPlaneError::Setup(e) => write!(f, "network set-up failed: {e}"),
        }
    }
}

impl NetPlane {
    /// Plugs the management NIC (`network.interface`, else the first usable one; see
    /// [`crate::net::host_nics::choose_uplink`]) into the bridged switch as its uplink and
    /// the appliance's port
    /// beside it, and brings up `config`'s addressing (DHCP or static) and the HTTP server on
    /// its port over that port, with the NIC's MAC.
    pub fn start(system: &System, config: &Config) -> Result<NetPlane, NetPlaneError> {
        let addressing = Addressing::from_config(&config.network)
            .map_err(|e| NetPlaneError::Setup(e.to_string()))?;
        let choice = crate::net::host_nics::choose_uplink(
            &crate::net::host_nics(),
            config.network.interface.as_deref(),
        );
        if let Some(warning) = &choice.warning {
            crate::kprintln!("warning: {warning}");
            defmt::warn!("net: {=str}", warning.as_str());
        }
        let nics = system.nics.lock();
        let uplink_nic = choice.index.unwrap_or(0);
        let nic = nics.get(uplink_nic).ok_or(NetPlaneError::NoNic)?;
        let uplink_address = nic.address;
        let nic_name = alloc::format!("{} {}", nic.name, crate::net::Mac(nic.mac));
        let nic_mac = nic.mac;
        drop(nics);
        let (uplink, appliance) = {
            let mut switches = system.switches.lock();
            let uplink = switches.add_port(
                NicNetwork::Bridged,
                PortKind::Uplink {
                    name: nic_name.clone(),
                },
                None,
            );
            let appliance =
                switches.add_port(NicNetwork::Bridged, PortKind::Appliance, Some(nic_mac));
            (uplink, appliance)
        };
        let mut device = PortDevice::new(appliance);
        let seed = crate::arch::cpu::rdtsc();
        let mut stack = NetStack::new(
            NetConfig::new(nic_mac, addressing, seed),
            &mut device,
            now(),
        )
        .map_err(|e| NetPlaneError::Setup(e.to_string()))?;
        let port = config.management.http_port;
        let server_config = ServerConfig {
            port,
            connections: HTTP_CONNECTIONS,
            ..ServerConfig::default()
        };
        let (server, https) = start_http(config, server_config, &mut stack)?;
        let cmdline_token = system
            .boot
            .cmdline_value("keel.api-token")
            .filter(|t| !t.is_empty())
            .map(String::from);
        let mut plane = NetPlane {
            stack,
            server,
            router: Router::new(Vec::<String>::new()),
            device,
            uplink,
            uplink_nic,
            uplink_address,
            nic: nic_name,
            cmdline_token,
            tokens: 0,
            port,
            https,
            network: NetworkInfo {
                mac: String::new(),
                dhcp: false,
                address: None,
                gateway: None,
                dns: Vec::new(),
                lease_events: 0,
            },
        };
        plane.network = NetworkInfo::from(plane.stack.status());
        plane.apply_config(config);
        Ok(plane)
    }

    /// Takes up a new running configuration: the router accepts its tokens (and the command
    /// line's) from now on. Addressing and port stay as they came up at boot.
    pub fn apply_config(&mut self, config: &Config) {
        let mut tokens = config.management.api_tokens.clone();
        tokens.extend(self.cmdline_token.clone());
        tokens.sort();
        tokens.dedup();
        self.tokens = tokens.len();
        self.router.set_tokens(tokens);
        self.apply_certificate();
    }

    /// Serves a replaced certificate ([`crate::tls_setup::replace`]) to new connections.
    fn apply_certificate(&mut self) {
        let Some(identity) = crate::tls_setup::identity() else {
            return;
        };
        let current = self.server.tls().map(|t| String::from(t.fingerprint()));
        if current.is_none() || current.as_deref() == Some(identity.fingerprint().as_str()) {
            return;
        }
        match keel_netstack::tls::TlsServer::new(&identity, crate::tls_setup::unix_now) {
            Ok(tls) => {
                crate::kprintln!("tls: now serving certificate SHA-256 {}", tls.fingerprint());
                self.server.set_tls(tls);
            }
            Err(e) => crate::kprintln!("warning: the new certificate is not served: {e}"),
        }
    }

    /// Whether any API token is accepted.
    pub fn has_token(&self) -> bool {
        self.tokens > 0
    }

    /// How many API tokens are accepted.
    pub fn token_count(&self) -> usize {
        self.tokens
    }

    /// The port the HTTP server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How HTTPS came up.
    pub fn https(&self) -> &HttpsState {
        &self.https
    }

    /// Moves at most [`UPLINK_BUDGET`] frames each way between the physical NIC and the
    /// bridged switch's uplink port; returns whether any moved.
    pub fn pump_uplink(&mut self, system: &System) -> bool {
        let mut nics = system.nics.lock();
        let Some(nic) = nics.get_mut(self.uplink_nic) else {
            return false;
        };
        pump_uplink(nic, &self.uplink, now(), UPLINK_BUDGET)
    }

    /// Polls the stack on the appliance's port and the server once, serving requests
    /// against `vms` and `settings` (and `internal` for the network view); appends lines
    /// for the console (lease changes) to `out`. A request that replaces the configuration
    /// leaves a new [`Settings::revision`]: the caller hands the new configuration back to
    /// this plane ([`NetPlane::apply_config`]) and to the VMs. Returns whether anything
    /// happened.
    pub fn poll(
        &mut self,
        system: &System,
        vms: &mut VmManager,
        settings: &mut Settings,
        internal: Option<&InternalNet>,
        out: &mut String,
    ) -> bool {
        let mut mgmt = Plane {
            system,
            vms,
            settings,
            network: &self.network,
            internal,
            uplink_address: self.uplink_address,
        };
        let mut api = self.router.bind(&mut mgmt);
        let refusal = match &self.https {
            HttpsState::Off {
                reason,
                serve_plain: false,
            } => Some(reason.clone()),
            _ => None,
        };
        // Without HTTPS (and without "serve"), plain HTTP only says why.
        let mut unavailable = |_: &keel_netstack::http::Request<'_>| {
            keel_netstack::http::Response::error(503, refusal.as_deref().unwrap_or_default())
        };
        // Serve until there is nothing left to do right now. Bounded: the appliance port's
        // queue holds at most what the switch delivered (its queue limit), and each round
        // drains it.
        let mut any = false;
        for _ in 0..64 {
            let served = if refusal.is_some() {
                self.server
                    .serve(now(), &mut self.stack, &mut self.device, &mut unavailable)
            } else {
                self.server
                    .serve(now(), &mut self.stack, &mut self.device, &mut api)
            };
            if !served {
                break;
            }
            any = true;
        }
        let mut changed = false;
        while let Some(event) = self.stack.take_event() {
            use core::fmt::Write as _;
            let _ = writeln!(out, "network: {event}");
            defmt::info!("network event");
            let message = alloc::format!("{event}");
            crate::events::record(keel_netstack::api::EventKind::Lease, None, &message);
            changed = true;
        }
        // The API's view of the addressing changes only with a lease event: rebuild it then,
        // not on every poll (which runs every tick).
        if changed {
            self.network = NetworkInfo::from(self.stack.status());
        }
        any
    }

    /// The interface's addressing state.
    pub fn status(&self) -> &NetStatus {
        self.stack.status()
    }

    /// The NIC in use, e.g. `e1000 52:54:00:12:34:56`.
    pub fn nic(&self) -> &str {
        &self.nic
    }

    /// The management NIC's PCI address.
    pub fn uplink_address(&self) -> crate::pci::PciAddress {
        self.uplink_address
    }
}

/// The kernel seen through the API.
struct Plane<'a> {
    system: &'a System,
    vms: &'a mut VmManager,
    settings: &'a mut Settings,
    network: &'a NetworkInfo,
    /// The appliance's interface on `internal`, for the network view.
    internal: Option<&'a InternalNet>,
    /// The management NIC's PCI address, for the network view.
    uplink_address: crate::pci::PciAddress,
}

fn pause_error(e: PauseVmError) -> ApiError {
    match e {
        PauseVmError::NoSuchVm(_) => ApiError::NotFound(e.to_string()),
        PauseVmError::Refused { .. } => ApiError::Conflict(e.to_string()),
    }
}

/// How a save or restore error answers: the kernel's message, with the status of what went
/// wrong. The host lacking memory or virtualization is 503, as for a start that cannot get a
/// vCPU; saved bytes the VMM refuses are 422 (the request names something unusable);
/// anything else the VMM reports while saving is 500.
fn saved_error(e: SavedVmError) -> ApiError {
    use keel_vmm::memory::MemoryError;
    use keel_vmm::snapshot::SnapshotError;
    use keel_vmm::vm::{RestoreError, SaveError};
    let message = e.to_string();
    match e {
        SavedVmError::NoSuchVm(_) => ApiError::NotFound(message),
        SavedVmError::NoSuchSave(name) => ApiError::NotFound(alloc::format!(
            "no saved VM named '{name}': GET /api/v1/saved lists them"
        )),
        SavedVmError::BadName { .. } => ApiError::Invalid(message),
        SavedVmError::Disks {
            error: crate::vms::disks::DiskAttachError::Claim(_),
            ..
        } => ApiError::Conflict(message),
        SavedVmError::Disks { .. } => ApiError::Invalid(message),
        SavedVmError::Nics {
            error: crate::vms::nics::NicAttachError::MacInUse { .. },
            ..
        } => ApiError::Conflict(message),
        SavedVmError::Nics { .. } => ApiError::Invalid(message),
        SavedVmError::NameTaken(_) | SavedVmError::NotPaused { .. } => ApiError::Conflict(message),
        SavedVmError::Save { error, .. } => match error {
            SaveError::Snapshot(SnapshotError::OutOfMemory) => ApiError::Unavailable(message),
            SaveError::NotPaused | SaveError::Stopped => ApiError::Conflict(message),
            _ => ApiError::Internal(message),
        },
        SavedVmError::Restore { error, .. } => match error {
            RestoreError::Backend(_)
            | RestoreError::Snapshot(SnapshotError::OutOfMemory)
            | RestoreError::Memory(MemoryError::OutOfHostMemory { .. }) => {
                ApiError::Unavailable(message)
            }
            _ => ApiError::Invalid(message),
        },
    }
}

fn saved_vm(saved: &crate::vms::SavedVm) -> SavedVm {
    let d = &saved.description;
    SavedVm {
        name: saved.name.clone(),
        vm: d.name.clone(),
        size_bytes: saved.size(),
        // At most MAX_MEMORY_MIB.
        memory_mib: u32::try_from(d.memory_size >> 20).unwrap_or(u32::MAX),
        vcpus: u32::from(d.cpus),
        backend: d.backend.clone(),
        save_ms: saved.save_ms,
    }
}

fn summary(view: &VmView<'_>) -> VmSummary {
    let (state, stop_reason) = match &view.state {
        ViewState::Defined => (ApiVmState::Defined, None),
        ViewState::Running => (ApiVmState::Running, None),
        ViewState::Idle => (ApiVmState::Idle, None),
        ViewState::Stopping => (ApiVmState::Stopping, None),
        ViewState::Paused => (ApiVmState::Paused, None),
        ViewState::Stopped(reason) => (ApiVmState::Stopped, Some(reason.clone())),
    };
    VmSummary {
        name: view.key.clone(),
        number: view.number,
        configured: view.definition.is_some(),
        source: view.source.into(),
        state,
        stop_reason,
        memory_mib: view.memory_mib,
        vcpus: view.vcpus,
        uptime_s: view.uptime_s,
        autostart: view.definition.is_some_and(|d| d.autostart),
    }
}

fn detail(view: &VmView<'_>) -> VmDetail {
    VmDetail {
        summary: summary(view),
        exits: view
            .exits
            .iter()
            .flat_map(|stats| stats.iter())
            .map(|(k, v)| (String::from(k), v))
            .collect::<BTreeMap<_, _>>(),
        backend: view.backend.map(String::from),
        console_bytes: view.console_bytes,
        run_ms: view.run_ns / 1_000_000,
        kernel: view
            .definition
            .filter(|d| !d.firmware)
            .map(|d| d.kernel.clone()),
        firmware: view
            .definition
            .filter(|d| d.firmware)
            .map(|d| d.kernel.clone()),
        initrd: view.definition.and_then(|d| d.initrd.clone()),
        cmdline: view.definition.map(|d| d.cmdline.clone()),
        disks: view.definition.map(|d| d.disks.clone()).unwrap_or_default(),
        nics: view.nics.iter().map(nic_view).collect(),
    }
}

/// A VM's NIC as the API shows it: definition and the device's counters.
fn nic_view(nic: &crate::vms::NicInfo) -> keel_netstack::api::NicView {
    let s = &nic.stats;
    keel_netstack::api::NicView {
        // At most MAX_VM_NICS.
        index: nic.index as u32,
        network: nic.spec.network,
        mac: keel_config::schema::MacAddress(nic.spec.mac),
        rx_frames: s.rx_frames,
        rx_bytes: s.rx_bytes,
        tx_frames: s.tx_frames,
        tx_bytes: s.tx_bytes,
        tx_dropped: s.tx_dropped,
        tx_bad: s.tx_bad,
        rx_dropped: s.rx_dropped,
    }
}

/// One switch port as the API shows it.
fn port_view(port: keel_netstack::switch::PortStatus) -> keel_netstack::api::SwitchPortView {
    use keel_netstack::api::PortKindView;
    let (kind, vm, nic) = match &port.kind {
        PortKind::Uplink { .. } => (PortKindView::Uplink, None, None),
        PortKind::Appliance => (PortKindView::Appliance, None, None),
        // At most MAX_VM_NICS.
        PortKind::Guest { vm, nic } => (PortKindView::Guest, Some(vm.clone()), Some(*nic as u32)),
    };
    let s = port.stats;
    keel_netstack::api::SwitchPortView {
        id: port.id,
        kind,
        name: crate::net::report::port_name(&port.kind),
        vm,
        nic,
        mac: port.mac.map(|m| keel_config::schema::MacAddress(m.0)),
        rx_frames: s.rx_frames,
        rx_bytes: s.rx_bytes,
        tx_frames: s.tx_frames,
        tx_bytes: s.tx_bytes,
        dropped_ingress_full: s.dropped_ingress_full,
        dropped_egress_full: s.dropped_egress_full,
        dropped_forged_source: s.dropped_forged_source,
        dropped_bad_frame: s.dropped_bad_frame,
    }
}

fn no_vm(key: &VmKey<'_>) -> ApiError {
    ApiError::NotFound(alloc::format!(
        "no VM named '{key}': GET /api/v1/vms lists them"
    ))
}

fn start_error(e: StartError) -> ApiError {
    let message = e.to_string();
    match e {
        // Asking for more guest RAM than the host has free is the request's problem (ask
        // for less), not a server fault; so is a guest file that is missing or unusable.
        StartError::BadMemorySize(_)
        | StartError::BadCpuCount(_)
        | StartError::Load(_)
        | StartError::NoMemory(_)
        | StartError::Store(_) => ApiError::Invalid(message),
        StartError::NoSuchModule(_) | StartError::NoSuchVm(_) => ApiError::NotFound(message),
        StartError::AlreadyRunning(_) | StartError::Stop(_) => ApiError::Conflict(message),
        StartError::Vcpu(_) => ApiError::Unavailable(message),
        // Another VM writes the disk: a conflict with the host's state, not a bad request.
        StartError::Disk(crate::vms::disks::DiskAttachError::Claim(_)) => {
            ApiError::Conflict(message)
        }
        StartError::Disk(_) => ApiError::Invalid(message),
        // Another live VM has the MAC: a conflict with the host's state.
        StartError::Nic(crate::vms::nics::NicAttachError::MacInUse { .. }) => {
            ApiError::Conflict(message)
        }
        StartError::Nic(_) => ApiError::Invalid(message),
    }
}

fn config_error(e: VmConfigError) -> ApiError {
    match e {
        VmConfigError::Exists(name) => {
            ApiError::Conflict(alloc::format!("a VM named {name} exists already"))
        }
        VmConfigError::NotConfigured(name) => ApiError::Conflict(alloc::format!(
            "VM {name} is no longer in the configuration: it goes when it stops"
        )),
        VmConfigError::NoDisk(e) => ApiError::Unavailable(alloc::format!(
            "cannot save the configuration, where VM definitions live: {e}"
        )),
        VmConfigError::Invalid(errors) => {
            let mut message = String::from("invalid configuration:");
            for e in errors {
                message.push(' ');
                message.push_str(&e.to_string());
            }
            ApiError::Invalid(message)
        }
        VmConfigError::Save(e) => ApiError::Internal(e),
    }
}

impl Plane<'_> {
    /// The manager's key for `key` and whether it is a named (configured) VM.
    fn resolve(&self, key: &VmKey<'_>) -> Result<(String, bool), ApiError> {
        let view = match key {
            VmKey::Number(n) => self.vms.views().find(|v| v.number == *n),
            VmKey::Name(name) => self
                .vms
                .views()
                .find(|v| v.definition.is_some() && v.key == *name),
        };
        view.map(|v| (v.key, v.definition.is_some()))
            .ok_or_else(|| no_vm(key))
    }

    /// The manager's key for a named VM; 409 for an ad-hoc one.
    fn named(&self, key: &VmKey<'_>, instead: &str) -> Result<String, ApiError> {
        match self.resolve(key)? {
            (name, true) => Ok(name),
            (number, false) => Err(ApiError::Conflict(alloc::format!(
                "VM {number} was started from a boot module and is not in the configuration: \
                 {instead}"
            ))),
        }
    }
}

/// `SystemInfo::cpu_list`: every CPU as `cpus` shows it.
fn host_cpu_list() -> Vec<keel_netstack::api::HostCpuInfo> {
    use crate::arch::smp::{CpuState, CpuVirtualization};
    crate::arch::smp::cpus()
        .into_iter()
        .map(|c| keel_netstack::api::HostCpuInfo {
            index: c.index as u32,
            apic_id: c.apic_id,
            state: String::from(c.state.name()),
            reason: match &c.state {
                CpuState::Failed(reason) => Some(reason.to_string()),
                _ => None,
            },
            virtualization: String::from(match c.virtualization {
                CpuVirtualization::On(_) => "on",
                CpuVirtualization::Off(_) => "off",
            }),
            virtualization_detail: match c.virtualization {
                CpuVirtualization::On(kind) => String::from(kind),
                CpuVirtualization::Off(reason) => reason,
            },
            // Filled in by `with_vcpu_figures`.
            load_percent: 0,
            vcpus: Vec::new(),
            guest_ms: 0,
            idle_ms: 0,
        })
        .collect()
}

/// Adds each online CPU's vCPU load and placement (`crate::sched`) to `cpus`.
fn with_vcpu_figures(
    mut cpus: Vec<keel_netstack::api::HostCpuInfo>,
    vms: &VmManager,
) -> Vec<keel_netstack::api::HostCpuInfo> {
    for load in crate::sched::cpu_loads(vms) {
        if let Some(cpu) = cpus.iter_mut().find(|c| c.index as usize == load.index) {
            cpu.load_percent = load.load_percent;
            cpu.vcpus = load.vcpus;
            (cpu.guest_ms, cpu.idle_ms) = crate::sched::cpu_times_ms(load.index);
        }
    }
    cpus
}

impl Management for Plane<'_> {
    fn system(&self) -> SystemInfo {
        SystemInfo {
            hostname: self.settings.current().hostname.clone(),
            version: String::from(env!("CARGO_PKG_VERSION")),
            uptime_ms: crate::arch::timer::tsc_delta_ms(crate::arch::cpu::rdtsc()),
            cpus: self.system.platform.cpus.len().max(1) as u32,
            cpu_list: with_vcpu_figures(host_cpu_list(), self.vms),
            memory: crate::console::mem_cmds::gather(self.vms),
            virtualization: self.system.virtualization.to_string(),
            network: self.network.clone(),
            hardware: hardware_info(crate::smbios::hardware()),
            disks: crate::blk::boot_disk::host_disks()
                .iter()
                .map(host_disk_info)
                .collect(),
        }
    }

    fn modules(&self) -> Vec<ModuleInfo> {
        self.system
            .boot
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| ModuleInfo {
                index: i as u32,
                name: m.name.as_str().into(),
                size_bytes: m.size,
            })
            .collect()
    }

    fn store(&self) -> Result<Vec<StoreFile>, ApiError> {
        crate::store::list()
            .map(|files| {
                files
                    .into_iter()
                    .map(|f| StoreFile {
                        name: f.name,
                        size: f.size,
                    })
                    .collect()
            })
            .map_err(|e| ApiError::Unavailable(e.to_string()))
    }

    fn vms(&self) -> Vec<VmSummary> {
        self.vms.views().map(|v| summary(&v)).collect()
    }

    fn vm(&self, key: &VmKey<'_>) -> Option<VmDetail> {
        let (key, _) = self.resolve(key).ok()?;
        self.vms.views().find(|v| v.key == key).map(|v| detail(&v))
    }

    fn run_module(
        &mut self,
        module: &str,
        mem_mib: Option<u32>,
        vcpus: Option<u8>,
        devices: &[keel_config::schema::VmDevice],
    ) -> Result<u32, ApiError> {
        self.vms
            .start(
                self.system,
                module,
                crate::vms::RunOptions {
                    mem_mib,
                    cpus: vcpus,
                    devices,
                    ..Default::default()
                },
            )
            .map_err(start_error)
    }

    fn create_vm(&mut self, vm: keel_config::schema::Vm) -> Result<(), ApiError> {
        crate::vm_config::create(self.vms, self.settings, vm)
            .map(|_| ())
            .map_err(config_error)
    }

    fn destroy_vm(&mut self, key: &VmKey<'_>) -> Result<u64, ApiError> {
        let name = self.named(key, "stop it instead")?;
        crate::vm_config::destroy(self.vms, self.settings, &name).map_err(config_error)
    }

    fn start_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let name = self.named(key, "POST /api/v1/modules/{module}/run starts a new one")?;
        self.vms
            .start_named(self.system, &name)
            .map_err(start_error)
    }

    fn stop_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<(), ApiError> {
        let (key, _) = self.resolve(key)?;
        self.vms.stop(&key, mode).map_err(|e| match e {
            StopError::NoSuchVm(_) => ApiError::NotFound(e.to_string()),
            StopError::NotRunning { .. } | StopError::Paused(_) => {
                ApiError::Conflict(e.to_string())
            }
        })
    }

    fn restart_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<bool, ApiError> {
        let name = self.named(key, "POST /api/v1/modules/{module}/run starts a new one")?;
        self.vms
            .restart(self.system, &name, mode)
            .map_err(start_error)
    }

    fn pause_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let (key, _) = self.resolve(key)?;
        self.vms.pause(&key).map_err(pause_error)
    }

    fn resume_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let (key, _) = self.resolve(key)?;
        self.vms.resume(&key).map_err(pause_error)
    }

    fn save_vm(&mut self, key: &VmKey<'_>, name: Option<&str>) -> Result<SavedVm, ApiError> {
        let (key, _) = self.resolve(key)?;
        let report = self.vms.save(&key, name).map_err(saved_error)?;
        self.saved_vm(&report.name).ok_or_else(|| {
            ApiError::Internal(alloc::format!(
                "saved VM '{}' vanished right after the save",
                report.name
            ))
        })
    }

    fn saved_vms(&self) -> Vec<SavedVm> {
        self.vms.saved().iter().map(saved_vm).collect()
    }

    fn saved_vm(&self, name: &str) -> Option<SavedVm> {
        self.vms.saved().get(name).map(saved_vm)
    }

    fn restore_vm(&mut self, name: &str) -> Result<u32, ApiError> {
        self.vms
            .restore(self.system, name)
            .map(|(number, _ms)| number)
            .map_err(saved_error)
    }

    fn delete_saved(&mut self, name: &str) -> Result<(), ApiError> {
        self.vms
            .delete_saved(name)
            .map(|_bytes| ())
            .map_err(saved_error)
    }

    fn console_input(&mut self, key: &VmKey<'_>, bytes: &[u8]) -> Result<usize, ApiError> {
        let (key, _) = self.resolve(key)?;
        self.vms
            .console_input(&key, bytes)
            .map_err(ApiError::Conflict)
    }

    fn config(&self) -> Config {
        withhold_key(self.settings.current().clone())
    }

    fn network(&self) -> keel_netstack::api::NetworkView {
        use keel_netstack::api::{
            InternalNetworkView, LeaseView, MacEntryView, NetworkView, SwitchView,
        };
        let now = now();
        let switches = {
            let switches = self.system.switches.lock();
            switches
                .all()
                .iter()
                .map(|switch| SwitchView {
                    network: if switch.network() == NicNetwork::Internal.as_str() {
                        NicNetwork::Internal
                    } else {
                        NicNetwork::Bridged
                    },
                    ports: switch.ports().into_iter().map(port_view).collect(),
                    mac_table: switch
                        .mac_table(now)
                        .into_iter()
                        .map(|entry| MacEntryView {
                            mac: keel_config::schema::MacAddress(entry.mac.0),
                            port: entry.port,
                            age_secs: entry.age_secs,
                        })
                        .collect(),
                })
                .collect()
        };
        let internal = match self.internal {
            Some(internal) => InternalNetworkView {
                address: internal.address().to_string(),
                dhcp: internal.dhcp(),
                leases: internal
                    .leases(now)
                    .into_iter()
                    .map(|lease| LeaseView {
                        mac: keel_config::schema::MacAddress(lease.mac.0),
                        address: lease.address.to_string(),
                        expires_in_secs: lease.expires_in_secs,
                    })
                    .collect(),
            },
            // The interface did not come up (the boot messages say why): what the
            // configuration asks for, serving nothing.
            None => {
                let config = &self.settings.current().network.internal;
                InternalNetworkView {
                    address: alloc::format!("{}/{}", config.address, config.prefix),
                    dhcp: false,
                    leases: Vec::new(),
                }
            }
        };
        NetworkView {
            host_nics: self.host_nics(),
            switches,
            internal,
        }
    }

    fn save_config(&mut self, config: Config) -> Result<u64, ApiError> {
        let config = restore_key(config, self.settings.current());
        let new_identity = check_new_certificate(&config, self.settings.current())?;
        let mut partition = crate::blk::boot_disk::config_partition().map_err(|e| {
            ApiError::Unavailable(alloc::format!("cannot save the configuration: {e}"))
        })?;
        let saved = self
            .settings
            .replace(&mut partition, config)
            .map_err(|e| match e {
                SaveError::Invalid(_) => ApiError::Invalid(e.to_string()),
                SaveError::Stale | SaveError::Store(_) => ApiError::Internal(e.to_string()),
            })?;
        let message = alloc::format!(
            "configuration saved as generation {} (PUT /api/v1/config)",
            saved.generation
        );
        crate::events::record(keel_netstack::api::EventKind::ConfigSaved, None, &message);
        if let Some(identity) = new_identity {
            crate::tls_setup::replace(identity);
        }
        Ok(saved.generation)
    }

    fn config_generation(&self) -> u64 {
        match self.settings.source() {
            crate::settings::Source::Disk { generation, .. } => *generation,
            crate::settings::Source::Defaults { .. } => 0,
        }
    }

    fn events(&self, since: u64) -> keel_netstack::api::EventList {
        crate::events::LOG.lock().since(since)
    }

    fn console(&self, key: &VmKey<'_>, since: u64) -> Result<ConsoleChunk, ApiError> {
        let (name, _) = self.resolve(key)?;
        let (bytes, next, dropped) = self.vms.console(&name, since).ok_or_else(|| no_vm(key))?;
        Ok(ConsoleChunk {
            data: String::from_utf8_lossy(&bytes).into_owned(),
            next,
            dropped,
        })
    }

    fn console_bytes(&self, key: &VmKey<'_>, since: u64) -> Result<(Vec<u8>, u64), ApiError> {
        let (name, _) = self.resolve(key)?;
        let (bytes, next, _) = self.vms.console(&name, since).ok_or_else(|| no_vm(key))?;
        Ok((bytes, next))
    }
}

/// The guest-disk routes (`keel_netstack::api::disks`) over `crate::blk::guest_partitions`.
impl Plane<'_> {
    /// Every network-class PCI function, with the live link of those that are up.
    fn host_nics(&self) -> Vec<keel_netstack::api::HostNicView> {
        use crate::net::host_nics::NicState;
        use keel_netstack::api::{HostNicState, HostNicView};
        let nics = self.system.nics.lock();
        crate::net::host_nics()
            .into_iter()
            .map(|entry| {
                let (bus, device, function) = entry.pci;
                let address = crate::pci::PciAddress {
                    bus,
                    device,
                    function,
                };
                let (state, error) = match &entry.state {
                    NicState::Up => (HostNicState::Up, None),
                    NicState::Failed(reason) => (HostNicState::Failed, Some(reason.clone())),
                    NicState::NoDriver => (HostNicState::NoDriver, None),
                };
                HostNicView {
                    pci_address: entry.pci_address(),
                    pci_id: alloc::format!("{:04x}:{:04x}", entry.vendor_id, entry.device_id),
                    driver: entry.driver.map(String::from),
                    mac: entry.mac.map(keel_config::schema::MacAddress),
                    state,
                    error,
                    link_up: nics
                        .iter()
                        .find(|nic| nic.address == address)
                        .and_then(|nic| nic.link_up()),
                    management: address == self.uplink_address,
                }
            })
            .collect()
    }
}

impl keel_netstack::api::DiskManagement for Plane<'_> {
    fn disks(&self) -> Result<keel_netstack::api::DiskList, ApiError> {
        use keel_netstack::api::{DiskKind, DiskList, DiskUse, GuestDisk};
        let inventory = crate::blk::guest_partitions::inventory(self.settings.current())
            .map_err(disk_api_error)?;
        let disks = inventory
            .disks
            .into_iter()
            .map(|d| GuestDisk {
                kind: match d.kind {
                    crate::blk::guest_partitions::GuestDiskKind::Partition => DiskKind::Partition,
                    crate::blk::guest_partitions::GuestDiskKind::StoreFile => DiskKind::File,
                },
                name: d.name,
                size_bytes: d.bytes,
                users: d
                    .users
                    .into_iter()
                    .map(|(vm, readonly)| DiskUse { vm, readonly })
                    .collect(),
            })
            .collect();
        Ok(DiskList {
            disks,
            free_mib: inventory.free_mib,
        })
    }

    fn create_disk(
        &mut self,
        name: &str,
        size_mib: u64,
    ) -> Result<keel_netstack::api::GuestDisk, ApiError> {
        let bytes = size_mib.saturating_mul(crate::blk::guest_partitions::MIB);
        let made = crate::blk::guest_partitions::create(name, bytes).map_err(disk_api_error)?;
        Ok(keel_netstack::api::GuestDisk {
            size_bytes: made.bytes(),
            name: made.name,
            kind: keel_netstack::api::DiskKind::Partition,
            users: Vec::new(),
        })
    }

    fn delete_disk(&mut self, name: &str) -> Result<(), ApiError> {
        crate::blk::guest_partitions::delete(name)
            .map(|_| ())
            .map_err(disk_api_error)
    }
}

/// A guest-partition error as the API answers it.
fn disk_api_error(e: crate::blk::guest_partitions::GuestPartitionError) -> ApiError {
    use crate::blk::guest_partitions::GuestPartitionError as E;
    let message = e.to_string();
    match e {
        E::BootDisk(_) => ApiError::Unavailable(message),
        E::BadName { .. } | E::BadSize { .. } | E::BadSizeText { .. } | E::NoSpace { .. } => {
            ApiError::Invalid(message)
        }
        E::NameTaken { .. } | E::InUse { .. } => ApiError::Conflict(message),
        E::NotFound { .. } | E::Gone { .. } => ApiError::NotFound(message),
        E::Table(crate::blk::gpt_write::GptWriteError::NoFreeEntry { .. }) => {
            ApiError::Invalid(message)
        }
        E::Table(_) | E::Disk(_) => ApiError::Internal(message),
    }
}

/// The SMBIOS findings as the API shows them (absent values are `null`).
fn hardware_info(hw: &crate::smbios::Hardware) -> HardwareInfo {
    let text = |t: &Option<crate::smbios::Text>| t.as_deref().map(String::from);
    HardwareInfo {
        source: hw.source.map(|v| v.to_string()),
        vendor: text(&hw.vendor),
        product: text(&hw.product),
        serial: text(&hw.serial),
        bios_vendor: text(&hw.bios_vendor),
        bios_version: text(&hw.bios_version),
        bios_date: text(&hw.bios_date),
    }
}

/// A host-disk row as `GET /api/v1/system` shows it.
fn host_disk_info(entry: &crate::blk::host::HostDiskEntry) -> keel_netstack::api::HostDiskInfo {
    use crate::blk::host::DiskRole;
    use keel_netstack::api::HostDiskRole;

    keel_netstack::api::HostDiskInfo {
        driver: String::from(entry.driver),
        location: entry.location.clone(),
        model: entry.model.clone(),
        size_bytes: entry.sectors.saturating_mul(512),
        read_only: entry.read_only,
        role: match entry.role {
            DiskRole::Keel => HostDiskRole::Keel,
            DiskRole::Other(_) => HostDiskRole::Other,
            DiskRole::Failed(_) => HostDiskRole::Failed,
        },
        detail: String::from(entry.role.detail()),
    }
}

/// The snapshot routes (`keel_netstack::api::snapshots`) over `crate::vms::snapshots`.
impl keel_netstack::api::SnapshotManagement for Plane<'_> {
    fn take_snapshot(
        &mut self,
        key: &VmKey<'_>,
        name: Option<&str>,
        stop: bool,
    ) -> Result<keel_netstack::api::Snapshot, ApiError> {
        let (key, _) = self.resolve(key)?;
        crate::vms::snapshots::take(self.vms, &key, name, stop)
            .map(|r| snapshot_view(&r.info))
            .map_err(snapshot_error)
    }

    fn snapshots(&self) -> Result<Vec<keel_netstack::api::Snapshot>, ApiError> {
        let all = crate::vms::snapshots::list().map_err(snapshot_error)?;
        // A damaged info file is left out here (the console lists it as an error).
        Ok(all.iter().flatten().map(snapshot_view).collect())
    }

    fn restore_snapshot(&mut self, name: &str, force: bool) -> Result<u32, ApiError> {
        crate::vms::snapshots::restore(self.vms, self.system, name, force)
            .map(|(number, _ms)| number)
            .map_err(snapshot_error)
    }

    fn delete_snapshot(&mut self, name: &str) -> Result<(), ApiError> {
        crate::vms::snapshots::delete(name)
            .map(|_| ())
            .map_err(snapshot_error)
    }
}

/// The migration routes (`keel_netstack::api::migrate`) over `crate::migrate::link`.
impl keel_netstack::api::MigrationManagement for Plane<'_> {
    fn migrate(
        &mut self,
        key: &VmKey<'_>,
        host: [u8; 4],
        port: Option<u16>,
    ) -> Result<keel_netstack::api::Migration, ApiError> {
        use crate::migrate::link::MigrateError;
        let (key, _) = self.resolve(key)?;
        let management = &self.settings.current().management;
        let port = port.unwrap_or(management.migration_port);
        if management.migration_token.is_none() && management.api_tokens.is_empty() {
            return Err(ApiError::Unavailable(MigrateError::NoToken.to_string()));
        }
        self.vms
            .migration_candidate(&key)
            .map_err(ApiError::Conflict)?;
        let [a, b, c, d] = host;
        crate::migrate::link::request_outgoing(
            &key,
            smoltcp::wire::Ipv4Address::new(a, b, c, d),
            port,
        )
        .map_err(|e| match e {
            MigrateError::NoLink | MigrateError::NoToken | MigrateError::Connect(_) => {
                ApiError::Unavailable(e.to_string())
            }
            MigrateError::Busy(_) | MigrateError::Vm(_) => ApiError::Conflict(e.to_string()),
        })
    }

    fn migrations(&self) -> Vec<keel_netstack::api::Migration> {
        crate::migrate::records::all()
    }
}

fn snapshot_view(i: &crate::vms::snapshots::SnapshotInfo) -> keel_netstack::api::Snapshot {
    keel_netstack::api::Snapshot {
        name: i.id.clone(),
        vm: i.source.clone(),
        time: i.time,
        size_bytes: i.bytes,
        parts: i.parts,
        memory_mib: (i.memory >> 20) as u32,
        vcpus: i.cpus,
        backend: i.backend.clone(),
        write_ms: i.write_ms,
        disks: i
            .disks
            .iter()
            .map(|d| keel_netstack::api::SnapshotDiskView {
                name: d.name.clone(),
                partition: d.partition,
                readonly: d.read_only,
                size_bytes: d.size,
            })
            .collect(),
    }
}

fn snapshot_error(e: crate::vms::snapshots::SnapshotError) -> ApiError {
    use crate::store::StoreError;
    use crate::store::fat::FatError;
    use crate::vms::snapshots::SnapshotError as E;
    let message = e.to_string();
    match e {
        E::Vm(v) => saved_error(v),
        E::Pause(_) | E::Exists(_) | E::DiskChanged { .. } => ApiError::Conflict(message),
        E::NotFound(_) => ApiError::NotFound(message),
        E::BadName { .. } | E::Info { .. } => ApiError::Invalid(message),
        E::OutOfMemory(_) => ApiError::Unavailable(message),
        E::Store(StoreError::NoBootDisk(_) | StoreError::Mount(_)) => {
            ApiError::Unavailable(message)
        }
        E::Store(StoreError::Fat(
            FatError::NoSpace { .. }
            | FatError::DirectoryFull
            | FatError::TooLarge { .. }
            | FatError::BadName { .. },
        )) => ApiError::Invalid(message),
        E::Store(StoreError::Fat(FatError::Exists(_))) => ApiError::Conflict(message),
        E::Store(StoreError::Fat(FatError::NotFound(_))) => ApiError::NotFound(message),
        E::Store(_) => ApiError::Internal(message),
    }
}

/// The HTTP server as `management.http`/`https_port` and the TLS identity
/// ([`crate::tls_setup`]) allow: HTTPS with plain HTTP off/redirecting/serving, or, with no
/// identity, plain HTTP only (serving the API only if `management.http = "serve"`).
fn start_http(
    config: &Config,
    server_config: ServerConfig,
    stack: &mut NetStack,
) -> Result<(HttpServer, HttpsState), NetPlaneError> {
    use keel_config::schema::PlainHttpMode;
    let plain = match config.management.http {
        PlainHttpMode::Redirect => PlainHttp::Redirect,
        PlainHttpMode::Off => PlainHttp::Off,
        PlainHttpMode::Serve => PlainHttp::Serve,
    };
    if plain == PlainHttp::Serve {
        crate::kprintln!(
            "WARNING: management.http = \"serve\": the API and its token travel in clear on \
             port {} (insecure; for tests only)",
            server_config.port
        );
    }
    let tls = crate::tls_setup::identity()
        .map(|identity| keel_netstack::tls::TlsServer::new(&identity, crate::tls_setup::unix_now));
    let https_port = config.management.https_port;
    let reason = match tls {
        Some(Ok(tls)) => {
            let server =
                HttpServer::with_tls(server_config, tls, https_port, plain, stack.sockets_mut())
                    .map_err(|e| NetPlaneError::Setup(e.to_string()))?;
            return Ok((
                server,
                HttpsState::On {
                    port: https_port,
                    plain,
                },
            ));
        }
        Some(Err(e)) => e.to_string(),
        None => String::from("HTTPS is off: the appliance has no certificate (see the console)"),
    };
    let serve_plain = plain == PlainHttp::Serve;
    if !serve_plain {
        crate::kprintln!(
            "warning: {reason}; the API is unreachable (plain HTTP answers 503) unless \
             management.http = \"serve\""
        );
    }
    let server = HttpServer::new(server_config, stack.sockets_mut())
        .map_err(|e| NetPlaneError::Setup(e.to_string()))?;
    Ok((
        server,
        HttpsState::Off {
            reason,
            serve_plain,
        },
    ))
}

/// `config` as the API shows it: the certificate's private key withheld.
fn withhold_key(mut config: Config) -> Config {
    if let Some(cert) = &mut config.management.certificate {
        cert.key_pem = String::from(keel_config::schema::KEY_WITHHELD);
    }
    config
}

/// A configuration from the API with the key it could not see put back: a withheld key,
/// or no certificate at all, keep the current certificate and key.
fn restore_key(mut config: Config, current: &Config) -> Config {
    let current_cert = current.management.certificate.clone();
    match &mut config.management.certificate {
        None => config.management.certificate = current_cert,
        Some(cert) if cert.key_pem == keel_config::schema::KEY_WITHHELD => match current_cert {
            Some(current) if current.cert_pem.trim() == cert.cert_pem.trim() => {
                cert.key_pem = current.key_pem
            }
            // A new certificate needs its key; without it, keep the current pair.
            _ => config.management.certificate = current.management.certificate.clone(),
        },
        Some(_) => {}
    }
    config
}

/// A changed `management.certificate` must be a usable pair (the key matches, not
/// expired): the new identity, or the API's 422 naming the field.
fn check_new_certificate(
    config: &Config,
    current: &Config,
) -> Result<Option<keel_netstack::tls::Identity>, ApiError> {
    let Some(cert) = &config.management.certificate else {
        return Ok(None);
    };
    if current.management.certificate.as_ref() == Some(cert) {
        return Ok(None);
    }
    let now = crate::tls_setup::unix_now().unwrap_or(0) as i64;
    keel_netstack::tls::Identity::from_pem(&cert.cert_pem, &cert.key_pem, now)
        .map(Some)
        .map_err(|e| ApiError::Invalid(alloc::format!("management.certificate: {e}")))
}
