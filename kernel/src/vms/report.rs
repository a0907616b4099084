//! What operators read about VMs: the `vm list` table, `vm info`, and the structured views the
//! management API serializes. Reads [`super::VmManager`]'s records; changes nothing.

use alloc::string::String;
use alloc::vec::Vec;

use keel_vmm::vm::{Clock, VmState};

use super::build::TscClock;
use super::{VmDefinition, VmManager};
use keel_config::schema::MacAddress;

impl VmManager {
    /// Writes the `vm list` table.
    pub fn list(&self, out: &mut impl core::fmt::Write) {
        if self.vms.is_empty() {
            let _ = writeln!(
                out,
                "no VMs: define one with 'vm create', or start a boot module with 'vm run <module>'"
            );
            return;
        }
        let _ = writeln!(
            out,
            "  {:<4}{:<17}{:<22}{:>8}  {:>5}  {:>9}  state",
            "id", "name", "source", "memory", "vcpus", "uptime"
        );
        let now = TscClock.now().ns;
        for e in &self.vms {
            let (mem, vcpus) = e.size();
            let uptime = match &e.run {
                Some(run) if !run.vm.is_stopped() => {
                    format_duration(now.saturating_sub(run.started_ns))
                }
                _ => String::from("-"),
            };
            let _ = writeln!(
                out,
                "  {:<4}{:<17}{:<22}{:>5} MiB  {:>5}  {:>9}  {}",
                e.id,
                e.key(),
                e.source,
                mem,
                vcpus,
                uptime,
                e.state_text()
            );
            if let Some(run) = &e.run {
                let _ = write!(out, "      exits:");
                for (kind, count) in run.vm.exit_stats().iter() {
                    let _ = write!(out, " {kind}={count}");
                }
                let _ = writeln!(out);
            }
        }
    }

    /// Writes `vm info <key>`.
    pub fn info(&self, key: &str, out: &mut impl core::fmt::Write) -> Result<(), String> {
        let e = self
            .index(key)
            .map(|i| &self.vms[i])
            .ok_or_else(|| alloc::format!("no VM named '{key}': see 'vm list'"))?;
        let _ = writeln!(out, "  name:       {}", e.key());
        let _ = writeln!(out, "  number:     {}", e.id);
        let _ = writeln!(out, "  state:      {}", e.state_text());
        let _ = writeln!(out, "  source:     {}", e.source);
        if let Some(d) = &e.definition {
            let _ = writeln!(
                out,
                "  kernel:     {} (store){}",
                d.kernel,
                match &d.initrd {
                    Some(i) => alloc::format!(", initrd {i}"),
                    None => String::new(),
                }
            );
            let _ = writeln!(out, "  cmdline:    {}", d.cmdline);
            let _ = writeln!(
                out,
                "  autostart:  {}",
                if d.autostart { "yes" } else { "no" }
            );
        }
        let Some(run) = &e.run else {
            if let Some(d) = &e.definition {
                let _ = writeln!(out, "  memory:     {} MiB (when started)", d.memory_mib);
                let _ = writeln!(out, "  vcpus:      {} (when started)", d.vcpus);
                for disk in &d.disks {
                    let spec = super::disks::DiskSpec::from_config(disk);
                    let _ = writeln!(
                        out,
                        "  disk:       {} ({}, {}, when started)",
                        spec.disk,
                        spec.disk.kind,
                        if spec.read_only { "ro" } else { "rw" }
                    );
                }
                for (index, nic) in d.nics.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "  nic{index}: {} {} (when started)",
                        MacAddress(nic.mac),
                        nic.network.as_str()
                    );
                }
            }
            return Ok(());
        };
        let now = TscClock.now().ns;
        let end = run.stopped_ns.unwrap_or(now);
        let _ = writeln!(out, "  memory:     {} MiB", run.vm.memory_size() >> 20);
        let states = run.vm.cpu_states();
        if states.is_empty() {
            let _ = writeln!(out, "  vcpus:      {}", run.vm.cpu_count());
        } else {
            let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
            let _ = writeln!(
                out,
                "  vcpus:      {} ({})",
                run.vm.cpu_count(),
                names.join(", ")
            );
        }
        if !run.vm.is_stopped() {
            let _ = writeln!(
                out,
                "  placement:  {}",
                placement_text(run.host_cpu, run.vm.cpu_count())
            );
        }
        let _ = writeln!(out, "  backend:    {}", run.vm.backend());
        let _ = writeln!(
            out,
            "  {:<12}{}",
            if run.vm.is_stopped() {
                "ran for:"
            } else {
                "uptime:"
            },
            format_duration(end.saturating_sub(run.started_ns))
        );
        if let VmState::Stopped(reason) = run.vm.state() {
            let _ = writeln!(out, "  stopped:    {reason}");
        }
        let com1 = run.vm.devices().com1();
        let uart = com1.access_counts();
        // Each access is an exit: what the guest's printing cost (linux-bench reads it).
        let _ = writeln!(
            out,
            "  console:    {} bytes (UART: {} THR writes, {} LSR reads, {} other accesses)",
            com1.output_total(),
            uart.thr_writes,
            uart.lsr_reads,
            uart.other
        );
        for disk in &run.disks {
            write_disk(out, run.vm.devices(), disk);
        }
        for (index, nic) in run.nics.iter().enumerate() {
            let _ = write!(out, "  ");
            let _ = crate::net::report::write_nic_line(
                out,
                index,
                nic.spec.mac,
                nic.spec.network.as_str(),
                &nic.stats(run.vm.devices()),
            );
        }
        let stats = run.vm.exit_stats();
        let _ = writeln!(out, "  exits:      {} in all", stats.total());
        for (kind, count) in stats.iter() {
            let _ = writeln!(out, "    {kind:<18}{count:>12}");
        }
        Ok(())
    }
}

/// One disk of `vm info`: what it is and where, its counters, and the device's errors.
fn write_disk(
    out: &mut impl core::fmt::Write,
    devices: &keel_vmm::devices::Devices,
    disk: &super::disks::AttachedDisk,
) {
    let spec = &disk.spec;
    let _ = writeln!(
        out,
        "  disk:       {} ({}, {}, {} MiB) at PCI 00:{:02x}.0",
        spec.disk,
        spec.disk.kind,
        if spec.read_only { "ro" } else { "rw" },
        disk.sectors / 2048,
        disk.slot
    );
    let Some(status) = super::disks::status(devices, disk) else {
        return;
    };
    let s = status.stats;
    let _ = writeln!(
        out,
        "    reads {} ({} KiB), writes {} ({} KiB), flushes {}, failed {}",
        s.reads,
        s.bytes_read / 1024,
        s.writes,
        s.bytes_written / 1024,
        s.flushes,
        s.errors
    );
    if let Some(e) = status.device_error {
        let _ = writeln!(out, "    device error (needs a reset by the guest): {e}");
    }
    if let Some(e) = status.last_request_error {
        let _ = writeln!(out, "    last failed request: {e}");
    }
}

/// `1h02m03s`, `4m05s`, `6.1s`.
fn format_duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 3600 {
        alloc::format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        alloc::format!("{}m{:02}s", s / 60, s % 60)
    } else {
        alloc::format!("{}.{}s", s, ns / 100_000_000 % 10)
    }
}

/// Where a VM stands, for the management API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewState {
    /// Defined, never started since boot.
    Defined,
    /// Running guest code.
    Running,
    /// Halted, waiting for an interrupt.
    Idle,
    /// A graceful stop is under way.
    Stopping,
    /// Paused by the operator.
    Paused,
    /// Stopped, for this reason.
    Stopped(String),
}

/// A read-only view of one VM, for the management API: what `vm list` and `vm info` show,
/// as values.
pub struct VmView<'a> {
    /// Its number.
    pub number: u32,
    /// What commands name it by: its name, or its number for an ad-hoc VM.
    pub key: String,
    /// A named VM's definition; `None` for an ad-hoc VM.
    pub definition: Option<&'a VmDefinition>,
    /// What it starts from (`store:vmlinuz`, a boot module's name).
    pub source: &'a str,
    /// Its state.
    pub state: ViewState,
    /// Guest RAM in MiB: of the current or last run, else as defined.
    pub memory_mib: u32,
    /// vCPUs: of the current or last run, else as defined.
    pub vcpus: u32,
    /// Seconds since it started, while it runs.
    pub uptime_s: Option<u64>,
    /// Exits by reason of the current or last run.
    pub exits: Option<keel_vmm::vm::ExitStats>,
    /// The backend of the current or last run.
    pub backend: Option<&'static str>,
    /// Console bytes the current or last run produced.
    pub console_bytes: u64,
    /// Host CPU time the current or last run spent in its slices, in nanoseconds.
    pub run_ns: u64,
    /// Its NICs: of the current run with their counters, else as defined with zeros.
    pub nics: Vec<NicInfo>,
}

/// One NIC of a [`VmView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicInfo {
    /// Its position among the VM's NICs.
    pub index: usize,
    /// Its network and MAC.
    pub spec: super::nics::NicSpec,
    /// The device's counters (the guest's view); zeros while the VM does not run.
    pub stats: keel_vmm::virtio::net::NetStats,
}

impl VmManager {
    /// Views of every VM, in number order (named VMs never started included).
    pub fn views(&self) -> impl Iterator<Item = VmView<'_>> {
        let now = TscClock.now().ns;
        self.vms.iter().map(move |e| {
            let state = match &e.run {
                None => ViewState::Defined,
                Some(run) => match run.vm.state() {
                    VmState::Stopped(reason) => ViewState::Stopped(alloc::format!("{reason}")),
                    _ if run.stop_deadline_ns.is_some() => ViewState::Stopping,
                    VmState::Running => ViewState::Running,
                    VmState::WaitingForInterrupt => ViewState::Idle,
                    VmState::Paused => ViewState::Paused,
                },
            };
            let run = e.run.as_ref();
            VmView {
                number: e.id,
                key: e.key(),
                definition: e.definition.as_ref(),
                source: e.source.as_str(),
                memory_mib: e.size().0,
                vcpus: e.size().1,
                uptime_s: run
                    .filter(|r| !r.vm.is_stopped())
                    .map(|r| now.saturating_sub(r.started_ns) / 1_000_000_000),
                exits: run.map(|r| r.vm.exit_stats()),
                backend: run.map(|r| r.vm.backend()),
                console_bytes: run.map_or(0, |r| r.vm.devices().com1().output_total()),
                run_ns: run.map_or(0, |r| r.run_ns),
                nics: e.nic_infos(),
                state,
            }
        })
    }

    /// The key commands take for VM number `number` (its name, or the number of an ad-hoc
    /// VM).
    pub fn key_of(&self, number: u32) -> Option<String> {
        self.vms
            .iter()
            .find(|e| e.id == number)
            .map(super::Entry::key)
    }

    /// Console output of VM `key` from byte offset `since`: (bytes, next offset, dropped);
    /// nothing for a VM that never ran. `None` if there is no such VM.
    pub fn console(&self, key: &str, since: u64) -> Option<(Vec<u8>, u64, u64)> {
        let e = &self.vms[self.index(key)?];
        Some(match &e.run {
            Some(run) => run.vm.console_output_since(since),
            None => (Vec::new(), 0, 0),
        })
    }
}

impl super::Entry {
    /// Its NICs for the API: the running VM's with their counters; otherwise the
    /// definition's (or the last run's, for an ad-hoc VM) with zeros.
    fn nic_infos(&self) -> Vec<NicInfo> {
        match self.run.as_ref() {
            Some(run) if !run.vm.is_stopped() => run
                .nics
                .iter()
                .enumerate()
                .map(|(index, nic)| NicInfo {
                    index,
                    spec: nic.spec.clone(),
                    stats: nic.stats(run.vm.devices()),
                })
                .collect(),
            run => {
                let specs: Vec<super::nics::NicSpec> = match (&self.definition, run) {
                    (Some(d), _) => d.nics.clone(),
                    (None, Some(run)) => run.nics.iter().map(|n| n.spec.clone()).collect(),
                    (None, None) => Vec::new(),
                };
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(index, spec)| NicInfo {
                        index,
                        spec,
                        stats: Default::default(),
                    })
                    .collect()
            }
        }
    }

    /// Guest RAM in MiB and vCPUs: of the current or last run, else as defined.
    fn size(&self) -> (u32, u32) {
        match (&self.run, &self.definition) {
            // Within `keel_config::limits` (`MAX_MEMORY_MIB`, `MAX_VCPUS`): the casts cannot cut.
            (Some(run), _) => (
                (run.vm.memory_size() >> 20) as u32,
                run.vm.cpu_count() as u32,
            ),
            (None, Some(d)) => (d.memory_mib, u32::from(d.vcpus)),
            (None, None) => (0, 0),
        }
    }
}

/// `vm info`'s placement line: `vcpu 0 on cpu 0, vcpu 1 on cpu 0` (every vCPU of a VM runs
/// in its slice on one host CPU today), or that it has not run yet.
fn placement_text(host_cpu: Option<usize>, vcpus: usize) -> String {
    match host_cpu {
        None => String::from("not run yet"),
        Some(cpu) => {
            let each: Vec<String> = (0..vcpus)
                .map(|v| alloc::format!("vcpu {v} on cpu {cpu}"))
                .collect();
            each.join(", ")
        }
    }
}
