//! The operator shell on COM1: one client of the kernel's main loop
//! ([`crate::runtime::Kernel`]), which feeds it the bytes typed on the console and the text
//! the VMs and the network plane printed, and lends it the VM manager, the settings and the
//! network plane ([`Services`]) for the commands it runs.
//!
//! [`Shell`] holds the line editor and the terminal's attachment: after `vm console` the
//! typed bytes go to the VM and its output is shown raw, while host lines wait until the
//! operator detaches (Ctrl-]); otherwise host lines are printed above the prompt and the line
//! being edited.

use alloc::string::String;

use super::command::{self, COMMANDS, Command, DiskArg};
use super::complete::{Completer as _, Rule, Rules, Words};
use super::line::{Event, LineEditor};
use crate::runtime::Services;
use crate::settings::{self, Settings};
use crate::vm_config::VmConfigError;
use crate::vms::{StopMode, VmManager};
use crate::{System, kprint, kprintln};
use keel_config::edit::EditError;
use keel_config::schema::DiskSource;

/// The prompt.
pub const PROMPT: &str = "keel> ";

/// Ctrl-]: leaves an attached VM console (as telnet and virsh do).
const DETACH: u8 = 0x1D;

/// The terminal attached to a VM's console (`vm console`).
struct Attached {
    /// The VM's name or number.
    key: String,
    /// How much of its console output the terminal has shown.
    offset: u64,
    /// Bytes typed for it since the last [`Shell::forward_input`].
    typed: heapless::Vec<u8, 64>,
}

/// The operator shell: the line being edited and what the terminal is attached to.
pub struct Shell {
    editor: LineEditor,
    attached: Option<Attached>,
    /// Host lines that wait, while the terminal is attached, until the operator detaches.
    held: String,
}

impl Shell {
    /// A shell at its first prompt (printed).
    pub fn start() -> Shell {
        kprint!("{PROMPT}");
        Shell {
            editor: LineEditor::new(PROMPT),
            attached: None,
            held: String::new(),
        }
    }

    /// Whether the shell takes another byte now. While attached it takes a VM's worth of
    /// typing per pass (the rest waits in the UART's queue for the next one).
    pub fn accepts_input(&self) -> bool {
        self.attached
            .as_ref()
            .is_none_or(|a| a.typed.len() < a.typed.capacity())
    }

    /// Handles one byte typed on the console: line editing and commands, or typing for the
    /// attached VM (kept until [`Shell::forward_input`]), or Ctrl-] to detach.
    pub fn feed(&mut self, byte: u8, kernel: &mut Services<'_>) {
        if let Some(attached) = &mut self.attached {
            if byte == DETACH {
                kernel.vms.detach(attached.offset);
                kprint!("\r\n[detached from {}]\r\n", attached.key);
                self.detached();
            } else {
                // `accepts_input` keeps this from overflowing; a byte beyond is dropped.
                let _ = attached.typed.push(byte);
            }
            return;
        }
        let (system, vms) = (kernel.system, &*kernel.vms);
        let event = self.editor.feed(
            byte,
            &|before: &str, out: &mut dyn FnMut(&str)| complete(system, vms, before, out),
            &mut |bytes| crate::serial::console_write(bytes),
        );
        match event {
            Event::None => {}
            Event::Cancelled => kprint!("^C\n{PROMPT}"),
            Event::Line => {
                kprintln!();
                match command::parse(self.editor.text()) {
                    Ok(Some(Command::VmConsole { key })) => match kernel.vms.attach(key) {
                        Ok(offset) => {
                            kprintln!("[attached to {key}: Ctrl-] detaches]");
                            self.attached = Some(Attached {
                                key: String::from(key),
                                offset,
                                typed: heapless::Vec::new(),
                            });
                        }
                        Err(e) => kprintln!("error: {e}"),
                    },
                    Ok(Some(cmd)) => execute(kernel, cmd),
                    Ok(None) => {}
                    Err(e) => kprintln!("{e}"),
                }
                self.editor.clear();
                if self.attached.is_none() {
                    kprint!("{PROMPT}");
                }
            }
        }
    }

    /// Hands what was typed for the attached VM since the last call to its console.
    pub fn forward_input(&mut self, vms: &mut VmManager) {
        if let Some(attached) = &mut self.attached
            && !attached.typed.is_empty()
        {
            // The UART's input queue holds 4 KiB; a burst beyond it is dropped, like a
            // terminal pasting faster than the line takes.
            let _ = vms.console_input(&attached.key, &attached.typed);
            attached.typed.clear();
        }
    }

    /// Shows `output` (host lines from the VMs and the network plane) and, while attached,
    /// the attached VM's new console output; detaches when that VM stopped or is gone.
    pub fn show_output(&mut self, vms: &mut VmManager, output: &str) {
        let Some(attached) = &mut self.attached else {
            if !output.is_empty() {
                // Guest lines go above the prompt: clear the prompt line, print them, redraw
                // the prompt with what the operator has typed so far.
                kprint!("\r\x1b[2K");
                print_above(&self.editor, output);
            }
            return;
        };
        self.held.push_str(output);
        match vms.console_raw(&attached.key, attached.offset) {
            Some((bytes, next, stopped)) => {
                crate::serial::console_write(&bytes);
                attached.offset = next;
                if stopped {
                    vms.detach(next);
                    kprint!("\r\n[{} stopped: detached]\r\n", attached.key);
                    self.detached();
                }
            }
            None => {
                vms.detach(attached.offset);
                kprint!("\r\n[{} is gone: detached]\r\n", attached.key);
                self.detached();
            }
        }
    }

    /// Back at the prompt after detaching: the held host lines, then the line being edited.
    fn detached(&mut self) {
        print_above(&self.editor, &self.held);
        self.held.clear();
        self.attached = None;
    }
}

/// Prints host output (ended with a newline if it lacks one), then the prompt and the line
/// being edited with the cursor where it was.
fn print_above(editor: &LineEditor, text: &str) {
    kprint!("{text}");
    if !text.is_empty() && !text.ends_with('\n') {
        kprintln!();
    }
    editor.redraw(&mut |bytes| crate::serial::console_write(bytes));
}

/// Tab completion: command and subcommand words from the `help` table, VM names where it
/// says `<vm>` or `<name>`, saved VMs where it says `<saved>`, boot module names where it
/// says `<module>`, and `vm create`'s options after its name.
fn complete(system: &System, vms: &VmManager, before_cursor: &str, out: &mut dyn FnMut(&str)) {
    let names = |emit: &mut dyn FnMut(&str)| {
        for name in vms.names() {
            emit(&name);
        }
    };
    let saved = |emit: &mut dyn FnMut(&str)| {
        for saved in vms.saved().iter() {
            emit(&saved.name);
        }
    };
    let modules = |emit: &mut dyn FnMut(&str)| {
        for module in &system.boot.modules {
            emit(module.name.as_str());
        }
    };
    let argument = |placeholder, source| Rule {
        after: &[],
        words: Words::Argument {
            table: COMMANDS,
            placeholder,
            source,
        },
    };
    let rules = [
        Rule {
            after: &[],
            words: Words::Usage(COMMANDS),
        },
        Rule {
            after: &["help"],
            words: Words::Usage(COMMANDS),
        },
        argument("<vm>", &names),
        argument("<name>", &names),
        argument("<saved>", &saved),
        argument("<module>", &modules),
        Rule {
            after: &["vm", "create"],
            words: Words::Options {
                skip: 1,
                list: VM_CREATE_OPTIONS,
            },
        },
    ];
    Rules(&rules).complete(before_cursor, out);
}

/// `vm create`'s options as Tab offers them (the values after `=` are typed).
const VM_CREATE_OPTIONS: &[&str] = &[
    "kernel=",
    "firmware=",
    "initrd=",
    "cmdline=",
    "mem=",
    "vcpus=",
    "disk=",
    "disk=partition:",
    "nic=bridged",
    "nic=internal",
    "paravirt=none",
    "autostart",
];

fn execute(kernel: &mut Services<'_>, cmd: Command<'_>) {
    let system = kernel.system;
    let vms = &mut *kernel.vms;
    let settings = &mut *kernel.settings;
    match cmd {
        Command::Help { topic: None } => {
            kprintln!("commands (help <command> for one):");
            for (usage, description) in COMMANDS {
                kprintln!("  {usage:<36} {description}");
            }
        }
        Command::Help { topic: Some(topic) } => {
            for (usage, description) in command::help_entries(topic) {
                kprintln!("  {usage}");
                kprintln!("      {description}");
            }
        }
        Command::Version => {
            kprintln!("Keel {}", env!("CARGO_PKG_VERSION"));
            kprintln!(
                "  built with rustc {} for x86_64-unknown-none",
                crate::RUSTC_VERSION
            );
        }
        Command::System => {
            let mut text = alloc::string::String::new();
            // Writing to a String cannot fail.
            let _ = crate::smbios::describe(crate::smbios::hardware(), &mut text);
            kprint!("{text}");
        }
        Command::Mem => super::mem_cmds::show(vms),
        Command::Cpus => {
            cpus(system);
            kprint!(
                "{}",
                crate::sched::vcpu_table(&crate::sched::cpu_loads(vms))
            );
        }
        Command::Modules => {
            if system.boot.modules.is_empty() {
                kprintln!("no boot modules (add some with `keel build --module <file>`)");
            }
            for (i, m) in system.boot.modules.iter().enumerate() {
                kprintln!("  {i:<3} {:<24} {} bytes", m.name, m.size);
            }
        }
        Command::Net => super::net_cmds::show(kernel),
        Command::Pci => {
            // Network functions say which driver took them (or none), as `net` does.
            let nics = crate::net::host_nics();
            for device in &system.pci {
                let a = device.address;
                match nics.iter().find(|n| n.pci == (a.bus, a.device, a.function)) {
                    Some(nic) => {
                        kprintln!("  {device} [{}]", crate::net::host_nics::pci_note(nic))
                    }
                    None => kprintln!("  {device}"),
                }
            }
        }
        Command::Disk => super::disk_cmds::show(settings.current()),
        Command::DiskCreate { name, bytes } => super::disk_cmds::create(name, bytes),
        Command::DiskDelete { name } => super::disk_cmds::delete(name),
        Command::StoreLs => store_ls(),
        Command::StoreSum { name } => store_sum(name),
        Command::VmRun {
            module,
            mem_mib,
            vcpus,
            initrd,
            cmdline,
            paravirt,
            devices,
        } => match vms.start(
            system,
            module,
            crate::vms::RunOptions {
                mem_mib,
                cpus: vcpus,
                initrd,
                cmdline,
                paravirt: paravirt.unwrap_or_default(),
                devices: &devices.to_vec(),
            },
        ) {
            Ok(id) => kprintln!("vm {id} started"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmList => vms.list(&mut crate::serial::ConsoleWriter),
        Command::VmCreate {
            name,
            kernel,
            firmware,
            disks,
            nics,
            initrd,
            cmdline,
            mem_mib,
            vcpus,
            autostart,
            paravirt,
            devices,
        } => {
            let vm = keel_config::schema::Vm {
                name: String::from(name),
                vcpus: u32::from(vcpus.unwrap_or(1)),
                memory_mib: u64::from(mem_mib.unwrap_or(crate::vms::DEFAULT_LINUX_MEM_MIB)),
                kernel: kernel.map(String::from),
                firmware: firmware.map(String::from),
                initrd: initrd.map(String::from),
                cmdline: String::from(cmdline.unwrap_or("")),
                disks: disks.iter().flatten().map(vm_disk).collect(),
                nics: nics
                    .iter()
                    .flatten()
                    .map(|nic| keel_config::schema::VmNic {
                        network: nic.network,
                        mac: nic.mac,
                    })
                    .collect(),
                autostart,
                cpuid: keel_config::schema::VmCpuid {
                    paravirt: paravirt.unwrap_or_default(),
                },
                devices: devices.to_vec(),
            };
            vm_create(vms, settings, vm);
        }
        Command::VmDestroy { name } => vm_destroy(vms, settings, name),
        Command::VmStart { name } => match vms.start_named(system, name) {
            Ok(()) => kprintln!("vm {name} started"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmStop {
            key,
            force,
            timeout_s,
        } => {
            let timeout_s = timeout_s.unwrap_or(crate::vms::DEFAULT_STOP_TIMEOUT_S);
            let mode = if force {
                StopMode::Force
            } else {
                StopMode::Graceful { timeout_s }
            };
            match vms.stop(key, mode) {
                Ok(()) if force => kprintln!("vm {key}: stopping now"),
                Ok(()) => kprintln!(
                    "vm {key}: power button pressed; forced off in {timeout_s} s unless it shuts down"
                ),
                Err(e) => kprintln!("error: {e}"),
            }
        }
        Command::VmRestart { name } => {
            let mode = StopMode::Graceful {
                timeout_s: crate::vms::DEFAULT_STOP_TIMEOUT_S,
            };
            match vms.restart(system, name, mode) {
                Ok(_) => kprintln!("vm {name}: restarting"),
                Err(e) => kprintln!("error: {e}"),
            }
        }
        Command::VmPause { key } => match vms.pause(key) {
            Ok(()) => kprintln!("vm {key} paused"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmResume { key } => match vms.resume(key) {
            Ok(()) => kprintln!("vm {key} resumed"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmSave { key, name } => match vms.save(key, name) {
            Ok(r) => kprintln!(
                "vm {key} saved as '{}': {} KiB for {} MiB of RAM and {} vCPU{}, in {} ms",
                r.name,
                r.bytes.div_ceil(1024),
                r.memory >> 20,
                r.cpus,
                if r.cpus == 1 { "" } else { "s" },
                r.ms
            ),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmRestore { name } if vms.saved().get(name).is_none() => {
            super::snapshot_cmds::restore(vms, system, name, false)
        }
        Command::SnapshotRestore { name, force } => {
            super::snapshot_cmds::restore(vms, system, name, force)
        }
        Command::VmSnapshot { key, name, stop } => super::snapshot_cmds::take(vms, key, name, stop),
        Command::VmSnapshots => super::snapshot_cmds::list(),
        Command::SnapshotRm { name } => super::snapshot_cmds::remove(name),
        Command::VmRestore { name } => match vms.restore(system, name) {
            Ok((id, ms)) => kprintln!(
                "vm {id} restored from '{name}' in {ms} ms, paused: 'vm resume {id}' runs it"
            ),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::SavedLs => saved_ls(vms),
        Command::SavedRm { name } => match vms.delete_saved(name) {
            Ok(bytes) => kprintln!(
                "saved VM '{name}' deleted ({} KiB freed)",
                bytes.div_ceil(1024)
            ),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmInfo { key } => {
            if let Err(e) = vms.info(key, &mut crate::serial::ConsoleWriter) {
                kprintln!("error: {e}");
            }
        }
        // Handled by `Shell::feed`, which owns the terminal.
        Command::VmConsole { .. } => {}
        Command::VmMigrate { key, host, port } => {
            let config = settings.current();
            let port = port.unwrap_or(config.management.migration_port);
            if config.management.migration_link.is_none() {
                kprintln!("error: {}", crate::migrate::link::MigrateError::NoLink);
            } else if let Err(e) = crate::migrate::link::request_outgoing(key, host, port) {
                kprintln!("error: {e}");
            }
        }
        Command::VmDirtyLog { key, action } => match crate::migrate::dirty_log(vms, key, action) {
            Ok(report) => kprintln!("vm {key}: {report}"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmLog { key } => match vms.log(key) {
            Ok((bytes, dropped)) => {
                if dropped > 0 {
                    kprintln!("({dropped} earlier bytes were dropped)");
                }
                crate::serial::console_write(&bytes);
                if !bytes.ends_with(b"\n") && !bytes.is_empty() {
                    kprintln!();
                }
            }
            Err(e) => kprintln!("error: {e}"),
        },
        Command::ConfigShow => config_show(settings),
        Command::ConfigSet { path, value } => config_set(settings, path, value),
        Command::ConfigDiff => config_diff(settings),
        Command::ConfigSave => config_save(settings),
        Command::ConfigRevert => {
            if settings.revert() {
                kprintln!("pending edits dropped; the running configuration is unchanged");
            } else {
                kprintln!("no pending edits");
            }
        }
        Command::Reboot => {
            kprintln!("rebooting...");
            crate::acpi::power::reboot(&system.platform);
        }
        Command::Poweroff => {
            kprintln!("powering off...");
            let err = crate::acpi::power::poweroff(&system.platform);
            kprintln!("poweroff failed: {err}");
        }
    }
}

fn config_show(settings: &Settings) {
    kprintln!("# configuration: {}", settings.source());
    for line in settings::show_lines(settings.current()) {
        kprintln!("{line}");
    }
    let pending = settings.diff().len();
    if pending > 0 {
        kprintln!(
            "# {pending} edits not saved yet: 'config diff' shows them, 'config save' saves them"
        );
    }
}

fn config_set(settings: &mut Settings, path: &str, value: &str) {
    match settings.set(path, value) {
        Ok(changes) if changes.is_empty() => {
            kprintln!("{path}: unchanged")
        }
        Ok(changes) => {
            for change in &changes {
                kprintln!("{}", settings::change_line(change));
            }
            kprintln!("(pending: 'config save' saves and applies it, 'config revert' drops it)");
        }
        Err(EditError::Invalid(errors)) => {
            kprintln!("error: invalid configuration, nothing changed:");
            for e in &errors {
                kprintln!("  {e}");
            }
        }
        Err(e) => kprintln!("error: {e}; nothing changed"),
    }
}

fn config_diff(settings: &Settings) {
    let changes = settings.diff();
    if changes.is_empty() {
        kprintln!("no pending edits");
    }
    for change in &changes {
        kprintln!("{}", settings::change_line(change));
    }
}

/// A `disk=` argument as the configuration's disk.
fn vm_disk(disk: &DiskArg<'_>) -> keel_config::schema::VmDisk {
    let mut vm_disk = match disk.source {
        DiskSource::File(name) => keel_config::schema::VmDisk::file(name),
        DiskSource::Partition(name) => keel_config::schema::VmDisk::partition(name),
    };
    vm_disk.readonly = disk.readonly;
    vm_disk.serial = disk.serial.map(String::from);
    vm_disk
}

fn vm_create(vms: &mut VmManager, settings: &mut Settings, vm: keel_config::schema::Vm) {
    let name = vm.name.clone();
    let nics = vm.nics.clone();
    match crate::vm_config::create(vms, settings, vm) {
        Ok(generation) => {
            kprintln!("configuration saved as generation {generation}");
            // The MACs a DHCP server or firewall will see, derived ones included.
            let hostname = &settings.current().hostname;
            for (index, nic) in nics.iter().enumerate() {
                let mac = nic.mac_for(hostname, &name, index);
                kprintln!("  nic{index}: {mac} {}", nic.network);
            }
            kprintln!("vm {name} created: 'vm start {name}' starts it");
        }
        Err(e) => print_vm_config_error(e),
    }
}

fn vm_destroy(vms: &mut VmManager, settings: &mut Settings, name: &str) {
    match crate::vm_config::destroy(vms, settings, name) {
        Ok(generation) => {
            kprintln!("configuration saved as generation {generation}");
            kprintln!("vm {name} destroyed");
        }
        Err(e) => print_vm_config_error(e),
    }
}

/// Says why `vm create` / `vm destroy` changed nothing.
fn print_vm_config_error(e: VmConfigError) {
    match e {
        VmConfigError::Exists(name) => {
            kprintln!("error: a VM named {name} exists already: 'vm info {name}'")
        }
        VmConfigError::NotConfigured(name) => {
            kprintln!("error: no VM named '{name}' in the configuration: see 'vm list'")
        }
        VmConfigError::NoDisk(e) => {
            kprintln!("error: VM definitions live in the configuration, which cannot be saved: {e}")
        }
        VmConfigError::Invalid(errors) => {
            kprintln!("error: invalid VM definition, nothing changed:");
            for e in errors {
                kprintln!("  {e}");
            }
        }
        VmConfigError::Save(e) => kprintln!("error: {e}"),
    }
}

fn config_save(settings: &mut Settings) {
    let mut partition = match crate::blk::boot_disk::config_partition() {
        Ok(partition) => partition,
        Err(e) => {
            kprintln!("error: cannot save the configuration: {e}");
            return;
        }
    };
    let saved = match settings.save_pending(&mut partition) {
        Ok(saved) => saved,
        Err(e) => {
            kprintln!("error: {e}");
            return;
        }
    };
    drop(partition);
    kprintln!("configuration saved as generation {}", saved.generation);
    let message = alloc::format!(
        "configuration saved as generation {} (console)",
        saved.generation
    );
    crate::events::record(crate::events::EventKind::ConfigSaved, None, &message);
    let changed = |prefix: &str| saved.changes.iter().any(|c| c.path.starts_with(prefix));
    if changed("hostname") {
        kprintln!("hostname is now {}", settings.current().hostname);
    }
    if changed("management.api_tokens") {
        kprintln!("API tokens updated: the API accepts the new set now");
    }
    let reboot = settings.reboot_needed();
    if !reboot.is_empty() {
        kprintln!(
            "changes to {} take effect after a reboot ('reboot')",
            reboot.join(" and ")
        );
    }
    if changed("vms") {
        kprintln!("VM definitions saved: see 'vm list'; 'vm start <name>' starts one");
    }
}

fn saved_ls(vms: &VmManager) {
    if vms.saved().iter().next().is_none() {
        kprintln!("no saved VMs ('vm pause <vm>' then 'vm save <vm>' saves one)");
        return;
    }
    kprintln!(
        "  {:<20} {:<20} {:>10} {:>8} {:>6} {:>8}",
        "NAME",
        "VM",
        "KIB",
        "RAM MIB",
        "VCPUS",
        "SAVE MS"
    );
    for s in vms.saved().iter() {
        kprintln!(
            "  {:<20} {:<20} {:>10} {:>8} {:>6} {:>8}",
            s.name,
            s.description.name,
            s.size().div_ceil(1024),
            s.description.memory_size >> 20,
            s.description.cpus,
            s.save_ms
        );
    }
}

fn store_ls() {
    match crate::store::list() {
        Ok(files) if files.is_empty() => {
            kprintln!("the guest store is empty (add files with `keel build --store <dir>`)")
        }
        Ok(files) => {
            // The size stays the last column (scripts read it from the end of the line).
            kprintln!("  {:<40} {:<24} {:>12}", "name", "used by", "size");
            for f in &files {
                let users =
                    crate::vms::disks::users_text(&crate::vms::disks::DiskName::file(&f.name));
                kprintln!("  {:<40} {:<24} {:>12}", f.name, users, f.size);
            }
            let total: u64 = files.iter().map(|f| f.size).sum();
            kprintln!("  {} files, {} bytes", files.len(), total);
        }
        Err(e) => kprintln!("error: {e}"),
    }
}

fn store_sum(name: &str) {
    let mut crc = crc32fast::Hasher::new();
    let started = crate::arch::cpu::rdtsc();
    match crate::store::read_with(name, |chunk| crc.update(chunk)) {
        Ok(entry) => {
            let ms =
                crate::arch::timer::tsc_delta_ms(crate::arch::cpu::rdtsc().wrapping_sub(started));
            kprintln!(
                "{}: {} bytes, crc32 {:08x} ({} ms)",
                entry.name,
                entry.size,
                crc.finalize(),
                ms
            );
        }
        Err(e) => kprintln!("error: {e}"),
    }
}

fn cpus(system: &System) {
    let listed = system.platform.cpus.len();
    if listed == 0 {
        kprintln!("1 CPU (no ACPI MADT; only the boot CPU is known)");
    } else {
        let plural = if listed == 1 { "" } else { "s" };
        kprintln!("{listed} CPU{plural} (ACPI MADT)");
    }
    let status = crate::arch::smp::cpus();
    kprintln!("  cpu  apic-id  state                 virtualization");
    for cpu in &status {
        let state = cpu.state_text();
        let role = if cpu.index == 0 { " (boot CPU)" } else { "" };
        kprintln!(
            "  {:<4} {:<8} {:<21} {}{}",
            cpu.index,
            cpu.apic_id,
            state,
            cpu.virtualization_text(),
            role
        );
    }
    kprintln!(
        "  online: {} of {}; the boot CPU runs the management plane and every vCPU \
         (the other CPUs wait for work)",
        crate::arch::smp::cpu_count(),
        status.len()
    );
    kprintln!(
        "  timer: local {} at {} Hz, TSC {} MHz (calibrated from {})",
        crate::arch::apic::mode_name(),
        crate::arch::timer::TICK_HZ,
        crate::arch::timer::tsc_hz() / 1_000_000,
        crate::arch::timer::source().describe()
    );
}
