//! Arbitrary bytes as a request on a connection: the head parser, the body framing and the
//! `/api/v1` router over a small in-memory kernel. Nothing may panic, and every answer must
//! be a well-formed response: a known status, and the JSON error body on every 4xx/5xx.
//!
//! Seeds: `seeds/http_request/` (valid API requests to mutate). With cargo-fuzz (nightly):
//! `cargo +nightly fuzz run http_request seeds/http_request`. On stable, coverage-guided
//! but without AddressSanitizer (nothing here is unsafe):
//!
//! ```text
//! RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
//!   -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
//!   -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
//!   --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
//!   cargo build --release --target x86_64-unknown-linux-gnu --target-dir target/cov
//! mkdir -p corpus && cp seeds/http_request/* corpus/
//! target/cov/x86_64-unknown-linux-gnu/release/http_request corpus -max_total_time=60
//! ```
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use keel_config::Config;
use keel_config::schema::Vm;
use keel_netstack::api::{
    ApiError, ConsoleChunk, Management, MemoryInfo, ModuleInfo, NetworkInfo, Router, StopMode,
    StoreFile, SystemInfo, VmDetail, VmKey, VmState, VmSummary,
};
use keel_netstack::http::request::Limits;
use keel_netstack::http::server::{Exchange, exchange};
use libfuzzer_sys::fuzz_target;

/// VMs as plain records; the configuration in memory.
#[derive(Default)]
struct Kernel {
    vms: Vec<VmDetail>,
    config: Config,
}

impl Kernel {
    fn find(&mut self, key: &VmKey<'_>) -> Result<&mut VmDetail, ApiError> {
        self.vms
            .iter_mut()
            .find(|vm| match key {
                VmKey::Number(n) => vm.summary.number == *n,
                VmKey::Name(name) => vm.summary.configured && vm.summary.name == *name,
            })
            .ok_or_else(|| ApiError::NotFound(format!("no VM named '{key}'")))
    }

    fn add(&mut self, name: Option<&str>, source: &str, state: VmState) -> u32 {
        let number = self.vms.len() as u32 + 1;
        self.vms.push(VmDetail {
            summary: VmSummary {
                name: name.map_or_else(|| number.to_string(), String::from),
                number,
                configured: name.is_some(),
                source: source.into(),
                state,
                stop_reason: None,
                memory_mib: 16,
                uptime_s: None,
                autostart: false,
            },
            exits: BTreeMap::new(),
            backend: None,
            console_bytes: 0,
            kernel: None,
            firmware: None,
            initrd: None,
            cmdline: None,
            disks: Vec::new(),
        });
        number
    }
}

fn live(state: VmState) -> bool {
    matches!(state, VmState::Running | VmState::Idle | VmState::Stopping)
}

impl Management for Kernel {
    fn system(&self) -> SystemInfo {
        SystemInfo {
            hostname: self.config.hostname.clone(),
            version: "fuzz".into(),
            uptime_ms: 1,
            cpus: 1,
            memory: MemoryInfo {
                total_bytes: 1 << 30,
                free_bytes: 1 << 29,
            },
            virtualization: "none".into(),
            network: NetworkInfo {
                mac: "02:00:00:00:00:01".into(),
                dhcp: true,
                address: None,
                gateway: None,
                dns: Vec::new(),
                lease_events: 0,
            },
        }
    }

    fn modules(&self) -> Vec<ModuleInfo> {
        vec![ModuleInfo {
            index: 0,
            name: "guest.bin".into(),
            size_bytes: 4096,
        }]
    }

    fn vms(&self) -> Vec<VmSummary> {
        self.vms.iter().map(|vm| vm.summary.clone()).collect()
    }

    fn vm(&self, key: &VmKey<'_>) -> Option<VmDetail> {
        self.vms
            .iter()
            .find(|vm| match key {
                VmKey::Number(n) => vm.summary.number == *n,
                VmKey::Name(name) => vm.summary.configured && vm.summary.name == *name,
            })
            .cloned()
    }

    fn run_module(&mut self, module: &str, _mem_mib: Option<u32>) -> Result<u32, ApiError> {
        if module != "guest.bin" && module != "0" {
            return Err(ApiError::NotFound(format!("no module {module}")));
        }
        if self.vms.len() >= 8 {
            return Err(ApiError::Unavailable("no memory left".into()));
        }
        Ok(self.add(None, module, VmState::Running))
    }

    fn create_vm(&mut self, vm: Vm) -> Result<(), ApiError> {
        if self.vms.len() >= 8 {
            return Err(ApiError::Unavailable("no disk".into()));
        }
        if self.config.vms.iter().any(|v| v.name == vm.name) {
            return Err(ApiError::Conflict("exists".into()));
        }
        self.add(
            Some(&vm.name),
            vm.boot_file().unwrap_or_default(),
            VmState::Defined,
        );
        self.config.vms.push(vm);
        Ok(())
    }

    fn destroy_vm(&mut self, key: &VmKey<'_>) -> Result<u64, ApiError> {
        let name = self.find(key)?.summary.name.clone();
        self.vms.retain(|vm| vm.summary.name != name);
        self.config.vms.retain(|vm| vm.name != name);
        Ok(3)
    }

    fn start_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError> {
        let vm = self.find(key)?;
        if live(vm.summary.state) {
            return Err(ApiError::Conflict("running".into()));
        }
        vm.summary.state = VmState::Running;
        Ok(())
    }

    fn stop_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<(), ApiError> {
        let vm = self.find(key)?;
        if !live(vm.summary.state) {
            return Err(ApiError::Conflict("not running".into()));
        }
        vm.summary.state = match mode {
            StopMode::Force => VmState::Stopped,
            StopMode::Graceful { .. } => VmState::Stopping,
        };
        Ok(())
    }

    fn restart_vm(&mut self, key: &VmKey<'_>, _mode: StopMode) -> Result<bool, ApiError> {
        let vm = self.find(key)?;
        let was_live = live(vm.summary.state);
        vm.summary.state = VmState::Running;
        Ok(!was_live)
    }

    fn console(&self, key: &VmKey<'_>, since: u64) -> Result<ConsoleChunk, ApiError> {
        self.vm(key)
            .map(|_| ConsoleChunk {
                data: String::new(),
                next: since,
                dropped: 0,
            })
            .ok_or_else(|| ApiError::NotFound(format!("no VM named '{key}'")))
    }

    fn console_input(&mut self, key: &VmKey<'_>, bytes: &[u8]) -> Result<usize, ApiError> {
        let vm = self.find(key)?;
        if !live(vm.summary.state) {
            return Err(ApiError::Conflict("not running".into()));
        }
        Ok(bytes.len().min(16))
    }

    fn store(&self) -> Result<Vec<StoreFile>, ApiError> {
        Ok(vec![StoreFile {
            name: "vmlinuz".into(),
            size: 1 << 20,
        }])
    }

    fn config(&self) -> Config {
        self.config.clone()
    }

    fn save_config(&mut self, config: Config) -> Result<u64, ApiError> {
        self.config = config;
        Ok(2)
    }
}

/// Built once: it renders the OpenAPI document.
static ROUTER: OnceLock<Router> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let router = ROUTER.get_or_init(|| Router::new(["fuzz-token"]));
    let mut kernel = Kernel::default();
    let tight = Limits {
        max_head_bytes: 512,
        max_headers: 8,
        max_body_bytes: 256,
    };
    for limits in [Limits::default(), tight] {
        // As the server does: answer, then go on with the bytes after the request.
        let mut rest = data;
        for _ in 0..4 {
            match exchange(rest, &limits, &mut router.bind(&mut kernel)) {
                Exchange::Incomplete { want } => {
                    assert!(want >= 1);
                    break;
                }
                Exchange::Respond {
                    response,
                    consumed,
                    keep_alive,
                    head_request,
                } => {
                    assert!((100..=599).contains(&response.status));
                    assert!(consumed <= rest.len());
                    if response.status >= 400 {
                        let body: serde_json_check::Value = serde_json_check::from(&response.body);
                        assert_eq!(body.status, response.status);
                    }
                    let wire = response.encode(keep_alive, head_request);
                    assert!(wire.starts_with(b"HTTP/1.1 "));
                    if !keep_alive || consumed == 0 {
                        break;
                    }
                    rest = &rest[consumed..];
                }
            }
        }
    }
});

/// Just enough JSON reading to check the error body's shape without another dependency.
mod serde_json_check {
    pub struct Value {
        pub status: u16,
    }

    /// The `status` of `{"error":{"status":N,"message":"..."}}`.
    pub fn from(body: &[u8]) -> Value {
        let text = std::str::from_utf8(body).expect("error body is UTF-8");
        let rest = text
            .strip_prefix("{\"error\":{\"status\":")
            .expect("error body starts with the error object");
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        assert!(
            rest[digits.len()..].starts_with(",\"message\":\"") && text.ends_with("\"}}"),
            "error body shape: {text}"
        );
        Value {
            status: digits.parse().expect("status is a number"),
        }
    }
}
