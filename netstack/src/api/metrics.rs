//! `GET /metrics`: Prometheus text exposition format 0.0.4, token required.
//!
//! Built on every scrape from what the API already reads ([`Management::system`],
//! [`Management::vms`] and [`Management::vm`], [`Management::network`]) plus the router's own
//! request counters ([`RequestCounters`]). Every family has `# HELP` and `# TYPE`; names
//! start with `keel_`, counters end in `_total`, units are seconds and bytes; label values
//! are escaped as the format says (`\\`, `\"`, `\n`).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write as _;

use super::{Management, VmKey, VmState};
use crate::http::response::Response;

/// The `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Requests the router answered, by route pattern and status.
#[derive(Clone, Debug, Default)]
pub struct RequestCounters {
    counts: Arc<spin::Mutex<BTreeMap<(&'static str, u16), u64>>>,
}

impl RequestCounters {
    /// Counts one answer on `route` (a route pattern, or `other` for no route).
    pub fn count(&self, route: &'static str, status: u16) {
        *self.counts.lock().entry((route, status)).or_insert(0) += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Vec<((&'static str, u16), u64)> {
        self.counts.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Writes families in the exposition format.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// One metric family: its name, help and type, written before its first sample.
pub struct Family<'a> {
    exposition: &'a mut Exposition,
    name: &'static str,
}

impl Exposition {
    /// Starts a family (`kind`: `counter` or `gauge`).
    pub fn family(&mut self, name: &'static str, kind: &str, help: &str) -> Family<'_> {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        Family {
            exposition: self,
            name,
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// One sample with `labels` (name, value).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let out = &mut self.exposition.out;
        out.push_str(self.name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{name}=\"{}\"", escape_label(value));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", number(value));
        self
    }

    /// One sample of an integer value.
    pub fn int(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.sample(labels, value as f64)
    }
}

/// A value as the format writes it (integers without a fraction).
fn number(value: f64) -> String {
    if value.is_nan() {
        String::from("NaN")
    } else if (-1e15..=1e15).contains(&value) && value == (value as i64) as f64 {
        // Whole numbers (counters, bytes) without a fraction; no_std has no `fract`.
        alloc::format!("{}", value as i64)
    } else {
        alloc::format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

const STATES: [VmState; 6] = [
    VmState::Defined,
    VmState::Running,
    VmState::Idle,
    VmState::Paused,
    VmState::Stopping,
    VmState::Stopped,
];

/// The whole scrape.
pub fn render<M: Management + ?Sized>(mgmt: &M, requests: &RequestCounters) -> String {
    let mut x = Exposition::default();
    let system = mgmt.system();
    x.family("keel_uptime_seconds", "gauge", "Time since Keel booted.")
        .sample(&[], system.uptime_ms as f64 / 1000.0);
    x.family("keel_cpus", "gauge", "Host CPUs Keel runs on.")
        .int(&[], u64::from(system.cpus));
    let uptime_ms = system.uptime_ms;
    let online: Vec<_> = system
        .cpu_list
        .iter()
        .filter(|c| c.state == "online")
        .collect();
    let mut f = x.family(
        "keel_cpu_seconds_total",
        "counter",
        "Time each host CPU spent halted (idle) or working (busy) since boot.",
    );
    for cpu in &online {
        let index = cpu.index.to_string();
        let idle = cpu.idle_ms.min(uptime_ms);
        f.sample(&[("cpu", &index), ("mode", "idle")], idle as f64 / 1000.0);
        f.sample(
            &[("cpu", &index), ("mode", "busy")],
            (uptime_ms - idle) as f64 / 1000.0,
        );
    }
    let mut f = x.family(
        "keel_cpu_guest_seconds_total",
        "counter",
        "Time each host CPU spent running vCPUs since boot.",
    );
    for cpu in &online {
        f.sample(
            &[("cpu", &cpu.index.to_string())],
            cpu.guest_ms as f64 / 1000.0,
        );
    }
    let m = &system.memory;
    x.family("keel_memory_total_bytes", "gauge", "Usable host RAM.")
        .int(&[], m.total_bytes);
    x.family("keel_memory_free_bytes", "gauge", "Host RAM not allocated.")
        .int(&[], m.free_bytes);
    let u = &m.by_use;
    let mut f = x.family("keel_memory_bytes", "gauge", "Allocated host RAM by use.");
    for (name, bytes) in [
        ("kernel_image", u.kernel_image_bytes),
        ("boot_modules", u.boot_modules_bytes),
        ("firmware_and_bitmap", u.firmware_and_bitmap_bytes),
        ("page_tables", u.page_tables_bytes),
        ("heap_reserved", u.heap_reserved_bytes),
        ("heap_used", u.heap_used_bytes),
        ("device_dma", u.device_dma_bytes),
        ("cpu_virtualization", u.cpu_virtualization_bytes),
        ("snapshots", u.snapshot_bytes),
        ("vms", u.vms_bytes),
    ] {
        f.int(&[("use", name)], bytes);
    }
    x.family(
        "keel_config_generation",
        "gauge",
        "Generation of the running configuration (0: the built-in defaults).",
    )
    .int(&[], mgmt.config_generation());
    vm_metrics(mgmt, &mut x);
    network_metrics(mgmt, &mut x);
    let mut f = x.family(
        "keel_http_requests_total",
        "counter",
        "HTTP requests the API answered, by route pattern and status.",
    );
    for ((route, status), count) in requests.snapshot() {
        let status = alloc::format!("{status}");
        f.int(&[("route", route), ("status", &status)], count);
    }
    x.finish()
}

fn vm_metrics<M: Management + ?Sized>(mgmt: &M, x: &mut Exposition) {
    let vms = mgmt.vms();
    let details: Vec<_> = vms
        .iter()
        .filter_map(|vm| mgmt.vm(&VmKey::Number(vm.number)))
        .collect();
    let mut f = x.family(
        "keel_vm_state",
        "gauge",
        "1 for the state each VM is in, 0 for the others.",
    );
    for vm in &vms {
        for state in STATES {
            let on = u64::from(vm.state == state);
            f.int(&[("vm", &vm.name), ("state", state.as_str())], on);
        }
    }
    let mut f = x.family("keel_vm_vcpus", "gauge", "vCPUs of each VM.");
    for vm in &vms {
        f.int(&[("vm", &vm.name)], u64::from(vm.vcpus));
    }
    let mut f = x.family("keel_vm_memory_bytes", "gauge", "Guest RAM of each VM.");
    for vm in &vms {
        f.int(&[("vm", &vm.name)], u64::from(vm.memory_mib) << 20);
    }
    let mut f = x.family(
        "keel_vm_uptime_seconds",
        "gauge",
        "How long each live VM has run (paused time included).",
    );
    for vm in &vms {
        if let Some(uptime) = vm.uptime_s {
            f.int(&[("vm", &vm.name)], uptime);
        }
    }
    let mut f = x.family(
        "keel_vm_exits_total",
        "counter",
        "VM exits of the current or last run, by reason.",
    );
    for d in &details {
        for (reason, count) in &d.exits {
            f.int(&[("vm", &d.summary.name), ("reason", reason)], *count);
        }
    }
    let mut f = x.family(
        "keel_vm_console_bytes_total",
        "counter",
        "Bytes the guest wrote to its serial console in the current or last run.",
    );
    for d in &details {
        f.int(&[("vm", &d.summary.name)], d.console_bytes);
    }
    let mut f = x.family(
        "keel_vm_run_seconds_total",
        "counter",
        "Host CPU time the current or last run spent running the VM's vCPUs.",
    );
    for d in &details {
        f.sample(&[("vm", &d.summary.name)], d.run_ms as f64 / 1000.0);
    }
    type NicField = fn(&super::NicView) -> u64;
    let nic_families: [(&'static str, &str, NicField); 7] = [
        (
            "keel_nic_rx_frames_total",
            "Frames the guest NIC received.",
            |n| n.rx_frames,
        ),
        (
            "keel_nic_rx_bytes_total",
            "Bytes the guest NIC received.",
            |n| n.rx_bytes,
        ),
        (
            "keel_nic_tx_frames_total",
            "Frames the guest NIC sent.",
            |n| n.tx_frames,
        ),
        (
            "keel_nic_tx_bytes_total",
            "Bytes the guest NIC sent.",
            |n| n.tx_bytes,
        ),
        (
            "keel_nic_tx_dropped_total",
            "Frames the guest sent that the switch port dropped.",
            |n| n.tx_dropped,
        ),
        (
            "keel_nic_tx_bad_total",
            "Malformed frames the guest sent.",
            |n| n.tx_bad,
        ),
        (
            "keel_nic_rx_dropped_total",
            "Frames for the guest dropped (its receive queue was full).",
            |n| n.rx_dropped,
        ),
    ];
    for (name, help, field) in nic_families {
        let mut f = x.family(name, "counter", help);
        for d in &details {
            for nic in &d.nics {
                let index = alloc::format!("{}", nic.index);
                f.int(&[("vm", &d.summary.name), ("nic", &index)], field(nic));
            }
        }
    }
}

fn network_metrics<M: Management + ?Sized>(mgmt: &M, x: &mut Exposition) {
    let network = mgmt.network();
    type PortField = fn(&super::SwitchPortView) -> u64;
    let families: [(&'static str, &str, PortField); 7] = [
        (
            "keel_switch_rx_frames_total",
            "Frames each switch port sent into its switch.",
            |p| p.rx_frames,
        ),
        (
            "keel_switch_rx_bytes_total",
            "Bytes each switch port sent into its switch.",
            |p| p.rx_bytes,
        ),
        (
            "keel_switch_tx_frames_total",
            "Frames the switch passed to each port.",
            |p| p.tx_frames,
        ),
        (
            "keel_switch_tx_bytes_total",
            "Bytes the switch passed to each port.",
            |p| p.tx_bytes,
        ),
        (
            "keel_switch_dropped_ingress_full_total",
            "Frames dropped because the port's queue into the switch was full.",
            |p| p.dropped_ingress_full,
        ),
        (
            "keel_switch_dropped_egress_full_total",
            "Frames dropped because the port's queue from the switch was full.",
            |p| p.dropped_egress_full,
        ),
        (
            "keel_switch_dropped_forged_source_total",
            "Frames dropped for a source MAC that is not the port's.",
            |p| p.dropped_forged_source,
        ),
    ];
    for (name, help, field) in families {
        let mut f = x.family(name, "counter", help);
        for switch in &network.switches {
            for port in &switch.ports {
                let id = alloc::format!("{}", port.id);
                f.int(
                    &[
                        ("switch", switch.network.as_str()),
                        ("port", &id),
                        ("name", &port.name),
                    ],
                    field(port),
                );
            }
        }
    }
}

/// `GET /metrics`.
pub fn get<M: Management + ?Sized>(mgmt: &M, requests: &RequestCounters) -> Response {
    Response::new(200)
        .with_header("Content-Type", CONTENT_TYPE)
        .with_body(render(mgmt, requests).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_escaping() {
        let mut x = Exposition::default();
        x.family("keel_a_total", "counter", "A count.\nSecond line.")
            .int(&[("vm", "we\"b\\\n")], 3)
            .sample(&[], 1.5);
        assert_eq!(
            x.finish(),
            "# HELP keel_a_total A count.\\nSecond line.\n# TYPE keel_a_total counter\n\
             keel_a_total{vm=\"we\\\"b\\\\\\n\"} 3\nkeel_a_total 1.5\n"
        );
    }

    #[test]
    fn request_counters_are_shared_by_clones() {
        let a = RequestCounters::default();
        let b = a.clone();
        a.count("/api/v1/vms", 200);
        b.count("/api/v1/vms", 200);
        b.count("other", 404);
        assert_eq!(
            a.snapshot(),
            [(("/api/v1/vms", 200), 2), (("other", 404), 1)]
        );
    }
}
