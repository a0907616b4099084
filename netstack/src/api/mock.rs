//! A [`Management`] for host tests: two modules, VMs and saved VMs that exist only as
//! records, and a log of every call that changes something.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use keel_config::Config;

use keel_config::schema::Vm;

use keel_config::schema::{MacAddress, NicNetwork};

use super::{
    ApiError, ConsoleChunk, HardwareInfo, HostDiskInfo, HostDiskRole, HostNicState, HostNicView,
    InternalNetworkView, LeaseView, MacEntryView, Management, MemoryByUse, MemoryInfo, ModuleInfo,
    NetworkInfo, NetworkView, NicView, PortKindView, SavedVm, StopMode, StoreFile, SwitchPortView,
    SwitchView, SystemInfo, VmDetail, VmKey, VmMemory, VmMemoryByUse, VmState, VmSummary,
    saved_name,
};

/// Console bytes the mock keeps per VM; older output counts as dropped.
pub const CONSOLE_KEEP: usize = 8;

/// Console input bytes a running mock VM's queue takes; the rest is dropped.
pub const INPUT_ROOM: usize = 16;

/// One VM of the mock: what the API shows of it, and its console.
pub struct MockVm {
    /// What `GET /api/v1/vms/{name}` answers.
    pub detail: VmDetail,
    /// All console output ever written.
    pub console: String,
    /// Console input received.
    pub input: Vec<u8>,
}

/// One saved VM of the mock.
pub struct MockSaved {
    /// What `GET /api/v1/saved/{saved}` answers.
    pub info: SavedVm,
    /// Whether the kernel refuses its bytes when restoring it.
    pub damaged: bool,
}

/// The mock kernel.
pub struct Mock {
    /// The VMs, in number order.
    pub vms: Vec<MockVm>,
    /// Saved VMs, sorted by name.
    pub saved: Vec<MockSaved>,
    /// Host memory free for saved VMs and restored VMs' RAM, in MiB.
    pub free_mib: u32,
    /// The guest store; `None`: no boot disk.
    pub store: Option<Vec<StoreFile>>,
    /// The number the next VM gets.
    pub next_number: u32,
    /// Calls that change something, in order.
    pub changes: Vec<String>,
    /// The running configuration.
    pub config: Config,
    /// The generation of the last configuration saved.
    pub generation: u64,
    /// Guest-disk partitions (`api::disks`).
    pub disks: Vec<super::GuestDisk>,
    /// Room on the boot disk for partitions, in MiB.
    pub disk_space_mib: u64,
    /// Snapshots in the store (`api::snapshots`).
    pub snapshots: Vec<super::Snapshot>,
    /// Migrations asked for (`api::migrate`).
    pub migrations: Vec<super::Migration>,
}

/// A configured VM as `POST /api/v1/vms` would define it.
pub fn definition(name: &str, kernel: &str, memory_mib: u64) -> Vm {
    Vm {
        name: String::from(name),
        vcpus: 1,
        memory_mib,
        kernel: Some(String::from(kernel)),
        firmware: None,
        initrd: None,
        cmdline: String::new(),
        disks: Vec::new(),
        nics: Vec::new(),
        autostart: false,
        cpuid: Default::default(),
        devices: Vec::new(),
    }
}

/// The mock's physical NIC (the bridged switch's uplink and the appliance's port).
pub const UPLINK_MAC: MacAddress = MacAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/// A NIC's view with zero counters, as a VM that has not run shows it.
fn nic_view(hostname: &str, vm: &Vm, index: usize) -> NicView {
    let nic = &vm.nics[index];
    NicView {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        network: nic.network,
        mac: nic.mac_for(hostname, &vm.name, index),
        rx_frames: 0,
        rx_bytes: 0,
        tx_frames: 0,
        tx_bytes: 0,
        tx_dropped: 0,
        tx_bad: 0,
        rx_dropped: 0,
    }
}

/// A switch port with counters that grow with its id, so tests tell ports apart.
fn port(id: u32, kind: PortKindView, name: String, mac: Option<MacAddress>) -> SwitchPortView {
    let n = u64::from(id) + 1;
    SwitchPortView {
        id,
        kind,
        name,
        vm: None,
        nic: None,
        mac,
        rx_frames: 10 * n,
        rx_bytes: 1000 * n,
        tx_frames: 12 * n,
        tx_bytes: 1300 * n,
        dropped_ingress_full: 0,
        dropped_egress_full: 0,
        dropped_forged_source: 0,
        dropped_bad_frame: 0,
    }
}

impl Default for Mock {
    fn default() -> Self {
        let mut mock = Mock {
            vms: Vec::new(),
            saved: Vec::new(),
            snapshots: Vec::new(),
            migrations: Vec::new(),
            free_mib: 400,
            store: Some(vec![
                StoreFile {
                    name: String::from("vmlinuz-6.1"),
                    size: 5_000_000,
                },
                StoreFile {
                    name: String::from("initrd.cpio"),
                    size: 1234,
                },
            ]),
            next_number: 1,
            changes: Vec::new(),
            config: Config {
                hostname: String::from("keel-test"),
                ..Config::default()
            },
            generation: 1,
            disks: Vec::new(),
            disk_space_mib: 10_240,
        };
        mock.config
            .management
            .api_tokens
            .push(String::from("0123456789abcdef"));
        // VM 1, web, runs with some output; VM 2, ad-hoc, has stopped; VM 3, db, is only
        // defined.
        let mut web = definition("web", "vmlinuz-6.1", 256);
        web.initrd = Some(String::from("initrd.cpio"));
        web.cmdline = String::from("console=ttyS0");
        web.autostart = true;
        mock.create_vm(web).unwrap();
        mock.start_vm(&VmKey::Name("web")).unwrap();
        mock.vms[0].console = String::from("Hello from the guest\n");
        mock.vms[0].detail.summary.uptime_s = Some(12);
        let stopped = mock.run_module("1", Some(64), None, &[]).unwrap();
        mock.stop_vm(&VmKey::Number(stopped), StopMode::Force)
            .unwrap();
        mock.vms[1].detail.summary.stop_reason = Some(String::from("guest shut down"));
        mock.create_vm(definition("db", "vmlinuz-6.1", 512))
            .unwrap();
        mock.changes.clear();
        mock.generation = 1;
        assert_eq!(stopped, 2);
        mock
    }
}

/// The mock's two boot modules.
pub fn modules() -> Vec<ModuleInfo> {
    vec![
        ModuleInfo {
            index: 0,
            name: String::from("hello.bin"),
            size_bytes: 512,
        },
        ModuleInfo {
            index: 1,
            name: String::from("linux.bzImage"),
            size_bytes: 9_000_000,
        },
    ]
}

fn exits() -> BTreeMap<String, u64> {
    let mut exits = BTreeMap::new();
    exits.insert(String::from("io"), 3);
    exits.insert(String::from("hlt"), 1);
    exits
}

fn live(state: VmState) -> bool {
    matches!(
        state,
        VmState::Running | VmState::Idle | VmState::Paused | VmState::Stopping
    )
}

/// What differs between the ad-hoc VMs the mock creates (`run_module`, `restore_saved`).
struct AdHoc {
    source: String,
    state: VmState,
    memory_mib: u32,
    vcpus: u32,
    exits: BTreeMap<String, u64>,
    backend: String,
}

impl Mock {
    /// Adds an ad-hoc VM (named by its number) and returns its number.
    fn push_ad_hoc(&mut self, vm: AdHoc) -> u32 {
        let number = self.next_number;
        self.next_number += 1;
        self.vms.push(MockVm {
            detail: VmDetail {
                summary: VmSummary {
                    name: format!("{number}"),
                    number,
                    configured: false,
                    source: vm.source,
                    state: vm.state,
                    stop_reason: None,
                    memory_mib: vm.memory_mib,
                    vcpus: vm.vcpus,
                    uptime_s: Some(0),
                    autostart: false,
                },
                exits: vm.exits,
                backend: Some(vm.backend),
                console_bytes: 0,
                run_ms: 0,
                kernel: None,
                firmware: None,
                initrd: None,
                cmdline: None,
                disks: Vec::new(),
                nics: Vec::new(),
            },
            console: String::new(),
            input: Vec::new(),
        });
        number
    }

    /// A snapshot's restore (`api::snapshots`): a running ad-hoc VM, if the host has
    /// memory for its RAM.
    pub(super) fn add_restored_vm(
        &mut self,
        snapshot: &str,
        memory_mib: u32,
        vcpus: u32,
    ) -> Result<u32, ApiError> {
        if memory_mib > self.free_mib {
            return Err(ApiError::Unavailable(format!(
                "cannot restore '{snapshot}': guest RAM: out of host memory ({memory_mib} MiB \
                 requested)"
            )));
        }
        Ok(self.push_ad_hoc(AdHoc {
            source: format!("snapshot:{snapshot}"),
            state: VmState::Running,
            memory_mib,
            vcpus,
            exits: BTreeMap::new(),
            backend: String::from("svm"),
        }))
    }

    fn position(&self, key: &VmKey<'_>) -> Result<usize, ApiError> {
        self.vms
            .iter()
            .position(|vm| {
                let s = &vm.detail.summary;
                match key {
                    VmKey::Number(n) => s.number == *n,
                    VmKey::Name(name) => s.configured && s.name == *name,
                }
            })
            .ok_or_else(|| ApiError::NotFound(format!("no VM named '{key}'")))
    }

    fn saved_position(&self, name: &str) -> Result<usize, ApiError> {
        self.saved
            .iter()
            .position(|s| s.info.name == name)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no saved VM named '{name}': GET /api/v1/saved lists them"
                ))
            })
    }

    fn find(&self, key: &VmKey<'_>) -> Result<&MockVm, ApiError> {
        self.position(key).map(|i| &self.vms[i])
    }

    fn save(&mut self, config: Config, change: String) -> Result<u64, ApiError> {
        if self.store.is_none() {
            return Err(ApiError::Unavailable(String::from(
                "cannot save the configuration: no boot disk found",
            )));
        }
        self.generation += 1;
        self.changes.push(change);
        self.config = config;
        Ok(self.generation)
    }

    /// A configured VM's number, or the conflict for an ad-hoc one.
    fn configured(&self, key: &VmKey<'_>, what: &str) -> Result<usize, ApiError> {
        let i = self.position(key)?;
        let s = &self.vms[i].detail.summary;
        if !s.configured {
            return Err(ApiError::Conflict(format!(
                "VM {} was started from a boot module and is not in the configuration: {what}",
                s.number
            )));
        }
        Ok(i)
    }
}

/// A 512 MiB host with 112 MiB used, one 64 MiB VM among it; the parts sum to the used total.
fn mock_memory() -> MemoryInfo {
    let vm = VmMemory {
        name: String::from("web"),
        guest_ram_bytes: 64 << 20,
        overhead_bytes: (20 + 16 + 48) << 10,
        by_use: VmMemoryByUse {
            second_level_tables_bytes: 20 << 10,
            vcpu_control_bytes: 16 << 10,
            device_buffers_bytes: 48 << 10,
        },
    };
    // Device buffers live in the heap, so the VMs' share of used frames excludes them.
    let vms_bytes =
        vm.guest_ram_bytes + vm.by_use.second_level_tables_bytes + vm.by_use.vcpu_control_bytes;
    let (total_bytes, free_bytes) = (512 << 20, 400 << 20);
    let mut by_use = MemoryByUse {
        kernel_image_bytes: 2 << 20,
        boot_modules_bytes: 9 << 20,
        firmware_and_bitmap_bytes: (1 << 20) + (16 << 10),
        page_tables_bytes: 24 << 10,
        heap_reserved_bytes: 0,
        heap_used_bytes: 3 << 20,
        device_dma_bytes: 264 << 10,
        cpu_virtualization_bytes: 8 << 10,
        snapshot_bytes: 0,
        vms_bytes,
    };
    let parts = by_use.kernel_image_bytes
        + by_use.boot_modules_bytes
        + by_use.firmware_and_bitmap_bytes
        + by_use.page_tables_bytes
        + by_use.device_dma_bytes
        + by_use.cpu_virtualization_bytes
        + by_use.snapshot_bytes
        + by_use.vms_bytes;
    by_use.heap_reserved_bytes = total_bytes - free_bytes - parts;
    MemoryInfo {
        total_bytes,
        free_bytes,
        by_use,
        vms: vec![vm],
    }
}

impl Management for Mock {
    fn system(&self) -> SystemInfo {
        SystemInfo {
            hostname: self.config.hostname.clone(),
            version: String::from("0.1.0"),
            uptime_ms: 12_345,
            cpus: 2,
            cpu_list: (0..2)
                .map(|index| crate::api::types::HostCpuInfo {
                    index,
                    apic_id: index,
                    state: "online".into(),
                    reason: None,
                    virtualization: "on".into(),
                    virtualization_detail: "AMD-V".into(),
                    load_percent: if index == 0 { 12 } else { 0 },
                    vcpus: if index == 0 {
                        vec![String::from("web/vcpu0")]
                    } else {
                        Vec::new()
                    },
                    guest_ms: if index == 0 { 1_500 } else { 0 },
                    idle_ms: if index == 0 { 6_000 } else { 9_000 },
                })
                .collect(),
            memory: mock_memory(),
            virtualization: String::from("AMD-V with NPT"),
            network: NetworkInfo {
                mac: String::from("52:54:00:12:34:56"),
                dhcp: true,
                address: Some(String::from("10.0.2.15/24")),
                gateway: None,
                dns: vec![String::from("10.0.2.3")],
                lease_events: 1,
            },
            hardware: HardwareInfo {
                source: Some(String::from("SMBIOS 3.0")),
                vendor: Some(String::from("KeelTest")),
                product: Some(String::from("Rack9")),
                serial: Some(String::from("SN-4711")),
                bios_vendor: Some(String::from("TestBIOS")),
                bios_version: Some(String::from("9.9")),
                // Absent, as a placeholder would be: the JSON shows null.
                bios_date: None,
            },
            disks: vec![
                HostDiskInfo {
                    driver: String::from("nvme"),
                    location: String::from("00:04.0 nsid 1"),
                    model: String::from("QEMU NVMe Ctrl, serial keel"),
                    size_bytes: 512 << 20,
                    read_only: false,
                    role: HostDiskRole::Keel,
                    detail: String::new(),
                },
                HostDiskInfo {
                    driver: String::from("ahci"),
                    location: String::from("00:1f.2 port 1"),
                    model: String::new(),
                    size_bytes: 0,
                    read_only: false,
                    role: HostDiskRole::Failed,
                    detail: String::from("device never left BSY"),
                },
            ],
        }
    }

    fn modules(&self) -> Vec<ModuleInfo> {
        modules()
    }

    fn store(&self) -> Result<Vec<StoreFile>, ApiError> {
        self.store.clone().ok_or_else(|| {
            ApiError::Unavailable(String::from("no guest store: no boot disk found"))
        })
    }

    fn vms(&self) -> Vec<VmSummary> {
        self.vms
            .iter()
            .map(|vm| vm.detail.summary.clone())
            .collect()
    }

    fn vm(&self, key: &VmKey<'_>) -> Option<VmDetail> {
        let vm = self.find(key).ok()?;
        let mut detail = vm.detail.clone();
        detail.console_bytes = vm.console.len() as u64;
        Some(detail)
    }

    fn run_module(
        &mut self,
        module: &str,
        mem_mib: Option<u32>,
        vcpus: Option<u8>,
        devices: &[keel_config::schema::VmDevice],
    ) -> Result<u32, ApiError> {
        let modules = modules();
        let Some(found) = modules
            .iter()
            .find(|m| m.name == module || format!("{}", m.index) == module)
        else {
            return Err(ApiError::NotFound(format!("no boot module '{module}'")));
        };
        let mem_mib = mem_mib.unwrap_or(16);
        if mem_mib > 4096 {
            return Err(ApiError::Invalid(format!(
                "{mem_mib} MiB is more than the 4096 MiB a VM can have"
            )));
        }
        if found.name.ends_with(".bzImage") && mem_mib < 64 {
            return Err(ApiError::Unavailable(String::from(
                "not enough free memory for a Linux guest",
            )));
        }
        if devices.is_empty() {
            self.changes.push(format!("run {} {mem_mib}", found.name));
        } else {
            let names: Vec<&str> = devices.iter().map(|d| d.as_str()).collect();
            self.changes.push(format!(
                "run {} {mem_mib} devices={}",
                found.name,
                names.join(",")
            ));
        }
        let source = found.name.to_owned();
        let number = self.push_ad_hoc(AdHoc {
            source,
            state: VmState::Running,
            memory_mib: mem_mib,
            vcpus: u32::from(vcpus.unwrap_or(1)),
            exits: exits(),
            backend: String::from("svm"),
        });
        Ok(number)
    }

    fn create_vm(&mut self, vm: Vm) -> Result<(), ApiError> {
        if self.config.vms.iter().any(|v| v.name == vm.name) {
            return Err(ApiError::Conflict(format!(
                "a VM named {} exists already",
                vm.name
            )));
        }
        let mut config = self.config.clone();
        config.vms.push(vm.clone());
        config
            .validate()
            .map_err(|e| ApiError::Invalid(format!("{} problems", e.len())))?;
        self.save(config, format!("create {}", vm.name))?;
        let nics = (0..vm.nics.len())
            .map(|n| nic_view(&self.config.hostname, &vm, n))
            .collect();
        let number = self.next_number;
        self.next_number += 1;
        self.vms.push(MockVm {
            detail: VmDetail {
                summary: VmSummary {
                    name: vm.name.clone(),
                    number,
                    configured: true,
                    source: format!("store:{}", vm.boot_file().unwrap_or_default()),
                    state: VmState::Defined,
                    stop_reason: None,
                    memory_mib: u32::try_from(vm.memory_mib).unwrap_or(u32::MAX),
                    vcpus: vm.vcpus,
                    uptime_s: None,
                    autostart: vm.autostart,
                },
                exits: BTreeMap::new(),
                backend: None,
                console_bytes: 0,
                run_ms: 0,
                kernel: vm.kernel,
                firmware: vm.firmware,
                initrd: vm.initrd,
                cmdline: Some(vm.cmdline),
                disks: vm.disks,
                nics,
            },
            console: String::new(),
            input: Vec::new(),
        });
        Ok(())
    }

    fn destroy_vm(&mut self, key: &VmKey<'_>) -> Result<u64, ApiError> {
        let i = self.configured(key, "stop it instead")?;
        let name = self.vms[i].detail.summary.name.clone();
        let mut config = self.config.clone();
        config.vms.retain(|v| v.name != name);
        let generation = self.save(config, format!("destroy {name}"))?;
        self.vms.remove(i);
        Ok(generation)
    }

    fn start_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let i = self.configured(key, "POST /api/v1/modules/{module}/run starts a new one")?;
        let store = self.store.clone().unwrap_or_default();
        let vm = &mut self.vms[i];
        let d = &mut vm.detail;
        if live(d.summary.state) {
            return Err(ApiError::Conflict(format!(
                "VM {} is already running",
                d.summary.name
            )));
        }
        let (what, boot) = match (&d.kernel, &d.firmware) {
            (None, Some(firmware)) => ("firmware", firmware.clone()),
            (kernel, _) => ("kernel", kernel.clone().unwrap_or_default()),
        };
        if !store.iter().any(|f| f.name == boot) {
            return Err(ApiError::Invalid(format!(
                "VM {}: cannot read its {what} '{boot}' from the guest store",
                d.summary.name
            )));
        }
        // As the kernel does: a disk's store file must exist when the VM starts.
        if let Some(file) = d
            .disks
            .iter()
            .filter_map(|disk| disk.file.as_deref())
            .find(|file| !store.iter().any(|f| f.name == *file))
        {
            return Err(ApiError::Invalid(format!(
                "VM {}: its disk '{file}' is not in the guest store: put it there \
                 (keel build --disk or --store) or remove the disk from the VM",
                d.summary.name
            )));
        }
        d.summary.state = VmState::Running;
        d.summary.stop_reason = None;
        d.summary.uptime_s = Some(0);
        d.exits = exits();
        d.backend = Some(String::from("svm"));
        vm.console.clear();
        self.changes.push(format!("start {}", d.summary.name));
        Ok(())
    }

    fn stop_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<(), ApiError> {
        let i = self.position(key)?;
        let s = &mut self.vms[i].detail.summary;
        if !live(s.state) {
            return Err(ApiError::Conflict(format!(
                "VM {} is not running ({})",
                s.name,
                if s.state == VmState::Defined {
                    "defined"
                } else {
                    "stopped"
                }
            )));
        }
        match mode {
            StopMode::Force => {
                s.state = VmState::Stopped;
                s.stop_reason = Some(String::from("stopped by the operator"));
                s.uptime_s = None;
            }
            StopMode::Graceful { .. } => s.state = VmState::Stopping,
        }
        self.changes.push(format!("stop {} {mode:?}", s.name));
        Ok(())
    }

    fn restart_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<bool, ApiError> {
        let i = self.configured(key, "POST /api/v1/modules/{module}/run starts a new one")?;
        let s = &mut self.vms[i].detail.summary;
        if live(s.state) {
            s.state = VmState::Stopping;
            self.changes.push(format!("restart {} {mode:?}", s.name));
            return Ok(false);
        }
        self.start_vm(key)?;
        Ok(true)
    }

    fn pause_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let i = self.position(key)?;
        let s = &mut self.vms[i].detail.summary;
        match s.state {
            VmState::Running | VmState::Idle => {}
            VmState::Paused => {
                return Err(ApiError::Conflict(format!(
                    "VM {} is already paused",
                    s.name
                )));
            }
            other => {
                return Err(ApiError::Conflict(format!(
                    "VM {} is not running ({other})",
                    s.name
                )));
            }
        }
        s.state = VmState::Paused;
        self.changes.push(format!("pause {}", s.name));
        Ok(())
    }

    fn resume_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let i = self.position(key)?;
        let s = &mut self.vms[i].detail.summary;
        if s.state != VmState::Paused {
            return Err(ApiError::Conflict(format!(
                "VM {} is not paused ({})",
                s.name, s.state
            )));
        }
        s.state = VmState::Running;
        self.changes.push(format!("resume {}", s.name));
        Ok(())
    }

    fn save_vm(&mut self, key: &VmKey<'_>, name: Option<&str>) -> Result<SavedVm, ApiError> {
        let i = self.position(key)?;
        let d = &self.vms[i].detail;
        let s = &d.summary;
        let name = String::from(name.unwrap_or(&s.name));
        saved_name(&name).map_err(ApiError::Invalid)?;
        if self.saved.iter().any(|x| x.info.name == name) {
            return Err(ApiError::Conflict(format!(
                "a saved VM named '{name}' exists: delete it with 'saved rm {name}' or choose \
                 another name"
            )));
        }
        // As the kernel's `vm list` says it.
        let state = match (s.state, &s.stop_reason) {
            (VmState::Paused, _) => None,
            (VmState::Idle, _) => Some(String::from("running (idle)")),
            (VmState::Stopped, Some(reason)) => Some(format!("stopped: {reason}")),
            (other, _) => Some(String::from(other.as_str())),
        };
        if let Some(state) = state {
            return Err(ApiError::Conflict(format!(
                "VM {0} is {state}: pause it first ('vm pause {0}')",
                s.name
            )));
        }
        // A quarter of its RAM is not zero, say.
        let size_bytes = u64::from(s.memory_mib) << 18;
        if size_bytes > u64::from(self.free_mib) << 20 {
            return Err(ApiError::Unavailable(format!(
                "cannot save VM {}: out of host memory for the saved VM",
                s.name
            )));
        }
        let info = SavedVm {
            name: name.clone(),
            vm: if s.configured {
                s.name.clone()
            } else {
                format!("vm{}", s.number)
            },
            size_bytes,
            memory_mib: s.memory_mib,
            vcpus: s.vcpus,
            backend: d.backend.clone().unwrap_or_default(),
            save_ms: 7,
        };
        self.changes.push(format!("save {} as {name}", s.name));
        self.saved.push(MockSaved {
            info: info.clone(),
            damaged: false,
        });
        self.saved.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        Ok(info)
    }

    fn saved_vms(&self) -> Vec<SavedVm> {
        self.saved.iter().map(|s| s.info.clone()).collect()
    }

    fn saved_vm(&self, name: &str) -> Option<SavedVm> {
        let i = self.saved_position(name).ok()?;
        Some(self.saved[i].info.clone())
    }

    fn restore_vm(&mut self, name: &str) -> Result<u32, ApiError> {
        let saved = &self.saved[self.saved_position(name)?];
        if saved.damaged {
            return Err(ApiError::Invalid(format!(
                "cannot restore '{name}': the body's checksum does not match the trailer's: \
                 the saved VM is damaged"
            )));
        }
        let info = saved.info.clone();
        if info.memory_mib > self.free_mib {
            return Err(ApiError::Unavailable(format!(
                "cannot restore '{name}': guest RAM: out of host memory ({} MiB requested)",
                info.memory_mib
            )));
        }
        self.changes
            .push(format!("restore {name} as {}", self.next_number));
        let number = self.push_ad_hoc(AdHoc {
            source: format!("saved:{name}"),
            state: VmState::Paused,
            memory_mib: info.memory_mib,
            vcpus: info.vcpus,
            exits: BTreeMap::new(),
            backend: info.backend,
        });
        Ok(number)
    }

    fn delete_saved(&mut self, name: &str) -> Result<(), ApiError> {
        let i = self.saved_position(name)?;
        self.saved.remove(i);
        self.changes.push(format!("delete saved {name}"));
        Ok(())
    }

    fn config(&self) -> Config {
        self.config.clone()
    }

    fn save_config(&mut self, config: Config) -> Result<u64, ApiError> {
        let change = format!(
            "save config {} as generation {}",
            config.hostname,
            self.generation + 1
        );
        self.save(config, change)
    }

    fn config_generation(&self) -> u64 {
        self.generation
    }

    /// The event log, as the kernel would have written it: starts, stops and saved
    /// configurations from [`Mock::changes`], one second apart.
    fn events(&self, since: u64) -> super::EventList {
        use super::{Event, EventKind};
        let events: Vec<Event> = self
            .changes
            .iter()
            .filter_map(|change| {
                let mut words = change.split(' ');
                let (kind, vm) = match (words.next(), words.next()) {
                    (Some("start"), vm) => (EventKind::VmStarted, vm),
                    (Some("run"), _) => (EventKind::VmStarted, None),
                    (Some("stop"), vm) => (EventKind::VmStopped, vm),
                    (Some("save"), Some("config")) => (EventKind::ConfigSaved, None),
                    _ => return None,
                };
                Some((kind, vm.map(String::from), change.clone()))
            })
            .zip(1u64..)
            .map(|((kind, vm, message), seq)| Event {
                seq,
                time_ms: seq * 1000,
                kind,
                vm,
                message,
            })
            .collect();
        let next = events.len() as u64 + 1;
        super::EventList {
            next,
            events: events.into_iter().filter(|e| e.seq >= since).collect(),
        }
    }

    /// The bridged switch with the uplink and the appliance, the internal one with the
    /// appliance; a guest port for every NIC of a running VM; the appliance's and every
    /// guest's MAC learned; a lease for every internal guest NIC.
    fn network(&self) -> NetworkView {
        let mut bridged = SwitchView {
            network: NicNetwork::Bridged,
            ports: vec![
                port(0, PortKindView::Uplink, format!("e1000 {UPLINK_MAC}"), None),
                port(
                    1,
                    PortKindView::Appliance,
                    String::from("appliance"),
                    Some(UPLINK_MAC),
                ),
            ],
            mac_table: vec![MacEntryView {
                mac: UPLINK_MAC,
                port: 1,
                age_secs: 0,
            }],
        };
        let internal_mac = MacAddress([0x02, 0x4b, 0x45, 0x45, 0x4c, 0x00]);
        let mut internal = SwitchView {
            network: NicNetwork::Internal,
            ports: vec![port(
                0,
                PortKindView::Appliance,
                String::from("appliance"),
                Some(internal_mac),
            )],
            mac_table: vec![MacEntryView {
                mac: internal_mac,
                port: 0,
                age_secs: 3,
            }],
        };
        let net = &self.config.network.internal;
        let mut leases = Vec::new();
        for vm in self.vms.iter().filter(|vm| live(vm.detail.summary.state)) {
            for nic in &vm.detail.nics {
                let switch = match nic.network {
                    NicNetwork::Bridged => &mut bridged,
                    NicNetwork::Internal => &mut internal,
                };
                let id = u32::try_from(switch.ports.len()).unwrap_or(u32::MAX);
                let mut guest = port(
                    id,
                    PortKindView::Guest,
                    format!("{} nic{}", vm.detail.summary.name, nic.index),
                    Some(nic.mac),
                );
                guest.vm = Some(vm.detail.summary.name.clone());
                guest.nic = Some(nic.index);
                switch.ports.push(guest);
                switch.mac_table.push(MacEntryView {
                    mac: nic.mac,
                    port: id,
                    age_secs: 1,
                });
                if nic.network == NicNetwork::Internal && net.dhcp {
                    let host = 100 + u32::try_from(leases.len()).unwrap_or(0);
                    let mask = u32::MAX
                        .checked_shl(32u32.saturating_sub(u32::from(net.prefix)))
                        .unwrap_or(0);
                    let base = u32::from(net.address) & mask;
                    leases.push(LeaseView {
                        mac: nic.mac,
                        address: core::net::Ipv4Addr::from(base | host).to_string(),
                        expires_in_secs: 3500,
                    });
                }
            }
        }
        NetworkView {
            host_nics: vec![
                HostNicView {
                    pci_address: "00:03.0".into(),
                    pci_id: "8086:100e".into(),
                    driver: Some("e1000".into()),
                    mac: Some(UPLINK_MAC),
                    state: HostNicState::Up,
                    error: None,
                    link_up: Some(true),
                    management: true,
                },
                HostNicView {
                    pci_address: "00:04.0".into(),
                    pci_id: "10ec:8139".into(),
                    driver: None,
                    mac: None,
                    state: HostNicState::NoDriver,
                    error: None,
                    link_up: None,
                    management: false,
                },
            ],
            switches: vec![bridged, internal],
            internal: InternalNetworkView {
                address: format!("{}/{}", net.address, net.prefix),
                dhcp: net.dhcp,
                leases,
            },
        }
    }

    fn console(&self, key: &VmKey<'_>, since: u64) -> Result<ConsoleChunk, ApiError> {
        let vm = self.find(key)?;
        let total = vm.console.len() as u64;
        let kept_from = total.saturating_sub(CONSOLE_KEEP as u64);
        let from = since.clamp(kept_from, total);
        Ok(ConsoleChunk {
            data: String::from(&vm.console[from as usize..]),
            next: total,
            dropped: from.saturating_sub(since.min(total)),
        })
    }

    fn console_input(&mut self, key: &VmKey<'_>, bytes: &[u8]) -> Result<usize, ApiError> {
        let i = self.position(key)?;
        let vm = &mut self.vms[i];
        if !live(vm.detail.summary.state) {
            return Err(ApiError::Conflict(format!(
                "VM {} is not running",
                vm.detail.summary.name
            )));
        }
        let room = INPUT_ROOM.saturating_sub(vm.input.len());
        let taken = bytes.len().min(room);
        vm.input.extend_from_slice(&bytes[..taken]);
        self.changes
            .push(format!("input {} {taken}", vm.detail.summary.name));
        Ok(taken)
    }
}
