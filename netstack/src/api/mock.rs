//! A [`Management`] for host tests: two modules, VMs that exist only as records, and a
//! log of every call that changes something.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use keel_config::Config;

use super::{
    ApiError, ConsoleChunk, Management, MemoryInfo, ModuleInfo, NetworkInfo, StoreFile, SystemInfo,
    VmDetail, VmState, VmSummary,
};

/// Console bytes the mock keeps per VM; older output counts as dropped.
pub const CONSOLE_KEEP: usize = 8;

pub struct MockVm {
    pub detail: VmDetail,
    /// All console output ever written.
    pub console: String,
}

/// The mock kernel.
pub struct Mock {
    pub vms: Vec<MockVm>,
    /// The guest store; `None`: no boot disk.
    pub store: Option<Vec<StoreFile>>,
    pub next_id: u32,
    /// `start_vm` / `stop_vm` / `save_config` calls, in order.
    pub changes: Vec<String>,
    /// The running configuration.
    pub config: Config,
    /// The generation of the last configuration saved.
    pub generation: u64,
}

impl Default for Mock {
    fn default() -> Self {
        let mut mock = Mock {
            vms: Vec::new(),
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
            next_id: 1,
            changes: Vec::new(),
            config: Config {
                hostname: String::from("keel-test"),
                ..Config::default()
            },
            generation: 1,
        };
        mock.config
            .management
            .api_tokens
            .push(String::from("0123456789abcdef"));
        // VM 1 runs with some output; VM 2 has stopped.
        let id = mock.start_vm("hello.bin", None).unwrap();
        mock.vms[0].console = String::from("Hello from the guest\n");
        let stopped = mock.start_vm("1", Some(64)).unwrap();
        mock.stop_vm(stopped).unwrap();
        mock.vms[1].detail.stop_reason = Some(String::from("guest shut down"));
        mock.changes.clear();
        assert_eq!((id, stopped), (1, 2));
        mock
    }
}

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

impl Mock {
    fn find(&self, id: u32) -> Result<&MockVm, ApiError> {
        self.vms
            .iter()
            .find(|vm| vm.detail.id == id)
            .ok_or_else(|| ApiError::NotFound(format!("no VM with id {id}")))
    }
}

impl Management for Mock {
    fn system(&self) -> SystemInfo {
        SystemInfo {
            hostname: self.config.hostname.clone(),
            version: String::from("0.1.0"),
            uptime_ms: 12_345,
            cpus: 2,
            memory: MemoryInfo {
                total_bytes: 512 << 20,
                free_bytes: 400 << 20,
            },
            virtualization: String::from("AMD-V with NPT"),
            network: NetworkInfo {
                mac: String::from("52:54:00:12:34:56"),
                dhcp: true,
                address: Some(String::from("10.0.2.15/24")),
                gateway: None,
                dns: vec![String::from("10.0.2.3")],
                lease_events: 1,
            },
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
            .map(|vm| {
                let d = &vm.detail;
                VmSummary {
                    id: d.id,
                    module: d.module.clone(),
                    state: d.state,
                    stop_reason: d.stop_reason.clone(),
                    exits: d.exits.clone(),
                }
            })
            .collect()
    }

    fn vm(&self, id: u32) -> Option<VmDetail> {
        let vm = self.find(id).ok()?;
        let mut detail = vm.detail.clone();
        detail.console_bytes = vm.console.len() as u64;
        Some(detail)
    }

    fn start_vm(&mut self, module: &str, mem_mib: Option<u32>) -> Result<u32, ApiError> {
        let modules = modules();
        let Some(found) = modules
            .iter()
            .find(|m| m.name == module || format!("{}", m.index) == module)
        else {
            return Err(ApiError::NotFound(format!("no module {module}")));
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
        let id = self.next_id;
        self.next_id += 1;
        self.changes.push(format!("start {} {mem_mib}", found.name));
        let mut exits = BTreeMap::new();
        exits.insert(String::from("io"), 3);
        exits.insert(String::from("hlt"), 1);
        self.vms.push(MockVm {
            detail: VmDetail {
                id,
                module: found.name.to_owned(),
                state: VmState::Running,
                stop_reason: None,
                exits,
                mem_mib,
                backend: String::from("svm"),
                console_bytes: 0,
            },
            console: String::new(),
        });
        Ok(id)
    }

    fn stop_vm(&mut self, id: u32) -> Result<(), ApiError> {
        self.find(id)?;
        let Some(vm) = self.vms.iter_mut().find(|vm| vm.detail.id == id) else {
            unreachable!("found above");
        };
        if vm.detail.state == VmState::Stopped {
            return Err(ApiError::Conflict(format!("VM {id} is already stopped")));
        }
        vm.detail.state = VmState::Stopped;
        vm.detail.stop_reason = Some(String::from("stopped by the operator"));
        self.changes.push(format!("stop {id}"));
        Ok(())
    }

    fn config(&self) -> Config {
        self.config.clone()
    }

    fn save_config(&mut self, config: Config) -> Result<u64, ApiError> {
        if self.store.is_none() {
            return Err(ApiError::Unavailable(String::from(
                "cannot save the configuration: no boot disk found",
            )));
        }
        self.generation += 1;
        self.changes.push(format!(
            "save config {} as generation {}",
            config.hostname, self.generation
        ));
        self.config = config;
        Ok(self.generation)
    }

    fn console(&self, id: u32, since: u64) -> Result<ConsoleChunk, ApiError> {
        let vm = self.find(id)?;
        let total = vm.console.len() as u64;
        let kept_from = total.saturating_sub(CONSOLE_KEEP as u64);
        let from = since.clamp(kept_from, total);
        Ok(ConsoleChunk {
            data: String::from(&vm.console[from as usize..]),
            next: total,
            dropped: from.saturating_sub(since.min(total)),
        })
    }
}
