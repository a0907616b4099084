//! The shell loop: console input and VM slices share the boot CPU. Each pass handles the
//! bytes typed so far, then runs one VM slice (or sleeps until an interrupt when no VM can
//! run), so the prompt answers while guests run.

use alloc::string::String;

use super::command::{self, COMMANDS, Command};
use super::complete::{Completer as _, Rule, Rules, Words};
use super::line::{Event, LineEditor};
use crate::settings;
use crate::vm_config::VmConfigError;
use crate::vms::{StopMode, VmDefinition, VmManager};
use crate::{System, kprint, kprintln};
use keel_config::edit::EditError;

/// The prompt.
pub const PROMPT: &str = "keel> ";

/// Runs the console and the VMs forever.
pub fn run(system: &System) -> ! {
    let mut editor = LineEditor::new(PROMPT);
    let mut vms = VmManager::new();
    let mut net = match crate::mgmt::NetPlane::start(system) {
        Ok(plane) => {
            match plane.status().address {
                Some(address) if !plane.status().dhcp => {
                    kprintln!("network: {} (static {address})", plane.nic())
                }
                _ => kprintln!("network: {} (waiting for DHCP)", plane.nic()),
            }
            if !plane.has_token() {
                kprintln!(
                    "warning: no API token (management.api_tokens or keel.api-token=…): \
                     protected API routes answer 401"
                );
            }
            Some(plane)
        }
        Err(e) => {
            kprintln!("network: {e}");
            None
        }
    };
    // The named VMs follow the configuration: now, and whenever a save or a PUT replaces it.
    let mut vm_revision = crate::settings::global().revision();
    vms.define(&VmDefinition::from_config(
        crate::settings::global().current(),
    ));
    for line in vms.autostart(system) {
        kprintln!("{line}");
    }
    kprint!("{PROMPT}");
    // The VM the terminal is attached to (`vm console`), and how much of its output it has
    // shown; host lines wait in `held` until the operator detaches.
    let mut attached: Option<(String, u64)> = None;
    let mut held = String::new();
    loop {
        let mut typed = heapless::Vec::<u8, 64>::new();
        while let Some(byte) = crate::serial::try_read_console() {
            if let Some((key, offset)) = &attached {
                if byte == DETACH {
                    vms.detach(*offset);
                    kprint!("\r\n[detached from {key}]\r\n");
                    print_above(&editor, &held);
                    held.clear();
                    attached = None;
                    continue;
                }
                if typed.push(byte).is_err() {
                    break;
                }
                continue;
            }
            let event = editor.feed(
                byte,
                &|before: &str, out: &mut dyn FnMut(&str)| complete(system, &vms, before, out),
                &mut |bytes| crate::serial::console_write(bytes),
            );
            match event {
                Event::None => {}
                Event::Cancelled => kprint!("^C\n{PROMPT}"),
                Event::Line => {
                    kprintln!();
                    match command::parse(editor.text()) {
                        Ok(Some(Command::VmConsole { key })) => match vms.attach(key) {
                            Ok(offset) => {
                                kprintln!("[attached to {key}: Ctrl-] detaches]");
                                attached = Some((String::from(key), offset));
                            }
                            Err(e) => kprintln!("error: {e}"),
                        },
                        Ok(Some(cmd)) => execute(system, &mut vms, net.as_ref(), cmd),
                        Ok(None) => {}
                        Err(e) => kprintln!("{e}"),
                    }
                    editor.clear();
                    if attached.is_none() {
                        kprint!("{PROMPT}");
                    }
                }
            }
        }
        if let Some((key, _)) = &attached
            && !typed.is_empty()
        {
            // The UART's input queue holds 4 KiB; a burst beyond it is dropped, like a
            // terminal pasting faster than the line takes.
            let _ = vms.console_input(key, &typed);
        }
        let revision = crate::settings::global().revision();
        if revision != vm_revision {
            vm_revision = revision;
            vms.define(&VmDefinition::from_config(
                crate::settings::global().current(),
            ));
        }
        let runnable = vms.any_runnable();
        let mut output = String::new();
        if let Some(net) = net.as_mut() {
            net.poll(system, &mut vms, &mut output);
        }
        // With nothing runnable this only collects what stopped VMs printed last.
        vms.run_slice(system, &mut output);
        if let Some((key, offset)) = attached.as_mut() {
            held.push_str(&output);
            match vms.console_raw(key, *offset) {
                Some((bytes, next, stopped)) => {
                    crate::serial::console_write(&bytes);
                    *offset = next;
                    if stopped {
                        vms.detach(next);
                        kprint!("\r\n[{key} stopped: detached]\r\n");
                        print_above(&editor, &held);
                        held.clear();
                        attached = None;
                    }
                }
                None => {
                    vms.detach(*offset);
                    kprint!("\r\n[{key} is gone: detached]\r\n");
                    print_above(&editor, &held);
                    held.clear();
                    attached = None;
                }
            }
        } else if !output.is_empty() {
            // Guest lines go above the prompt: clear the prompt line, print them, redraw the
            // prompt with what the operator has typed so far.
            kprint!("\r\x1b[2K");
            print_above(&editor, &output);
        }
        if !runnable {
            crate::arch::cpu::wait_for_interrupt();
        }
    }
}

/// Ctrl-]: leaves an attached VM console (as telnet and virsh do).
const DETACH: u8 = 0x1D;

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
/// says `<vm>` or `<name>`, boot module names where it says `<module>`.
fn complete(system: &System, vms: &VmManager, before_cursor: &str, out: &mut dyn FnMut(&str)) {
    let names = |emit: &mut dyn FnMut(&str)| {
        for name in vms.names() {
            emit(&name);
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
        argument("<module>", &modules),
    ];
    Rules(&rules).complete(before_cursor, out);
}

fn execute(
    system: &System,
    vms: &mut VmManager,
    net: Option<&crate::mgmt::NetPlane>,
    cmd: Command<'_>,
) {
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
        Command::Mem => {
            let s = crate::mm::stats();
            let mib = |b: u64| b / (1024 * 1024);
            let kib = |b: u64| b / 1024;
            kprintln!("  total: {} MiB", mib(s.usable_bytes));
            kprintln!("  used:  {} MiB", mib(s.usable_bytes - s.free_bytes));
            kprintln!("  free:  {} MiB", mib(s.free_bytes));
            kprintln!(
                "  heap:  {} KiB, {} KiB used, {} KiB free",
                kib(s.heap_bytes),
                kib(s.heap_used),
                kib(s.heap_bytes - s.heap_used)
            );
        }
        Command::Cpus => cpus(system),
        Command::Modules => {
            if system.boot.modules.is_empty() {
                kprintln!("no boot modules (add some with `keel build --module <file>`)");
            }
            for (i, m) in system.boot.modules.iter().enumerate() {
                kprintln!("  {i:<3} {:<24} {} bytes", m.name, m.size);
            }
        }
        Command::Net => match net {
            None => kprintln!("no network: no supported network card was found"),
            Some(net) => {
                let status = net.status();
                kprintln!(
                    "  hostname: {}",
                    crate::settings::global().current().hostname
                );
                kprintln!("  nic:      {}", net.nic());
                match status.address {
                    Some(addr) => kprintln!(
                        "  address:  {addr} ({})",
                        if status.dhcp { "DHCP" } else { "static" }
                    ),
                    None => kprintln!("  address:  none yet (waiting for DHCP)"),
                }
                if let Some(gw) = status.gateway {
                    kprintln!("  gateway:  {gw}");
                }
                for dns in &status.dns {
                    kprintln!("  dns:      {dns}");
                }
                let tokens = match net.token_count() {
                    0 => String::from("no token: protected routes answer 401"),
                    1 => String::from("1 bearer token"),
                    n => alloc::format!("{n} bearer tokens"),
                };
                kprintln!("  http:     port {}, /api/v1 ({tokens})", net.port());
                let pending = crate::settings::global().reboot_needed();
                if !pending.is_empty() {
                    kprintln!(
                        "  note:     saved changes to {} take effect after a reboot",
                        pending.join(" and ")
                    );
                }
            }
        },
        Command::Pci => {
            for device in &system.pci {
                kprintln!("  {device}");
            }
        }
        Command::Disk => disk(),
        Command::StoreLs => store_ls(),
        Command::StoreSum { name } => store_sum(name),
        Command::VmRun {
            module,
            mem_mib,
            vcpus,
            initrd,
            cmdline,
        } => match vms.start(system, module, mem_mib, vcpus, initrd, cmdline) {
            Ok(id) => kprintln!("vm {id} started"),
            Err(e) => kprintln!("error: {e}"),
        },
        Command::VmList => vms.list(&mut crate::serial::ConsoleWriter),
        Command::VmCreate {
            name,
            kernel,
            initrd,
            cmdline,
            mem_mib,
            vcpus,
            autostart,
        } => {
            let vm = keel_config::schema::Vm {
                name: String::from(name),
                vcpus: u32::from(vcpus.unwrap_or(1)),
                memory_mib: u64::from(mem_mib.unwrap_or(crate::vms::DEFAULT_LINUX_MEM_MIB)),
                kernel: String::from(kernel),
                initrd: initrd.map(String::from),
                cmdline: String::from(cmdline.unwrap_or("")),
                disks: alloc::vec::Vec::new(),
                autostart,
            };
            vm_create(vms, vm);
        }
        Command::VmDestroy { name } => vm_destroy(vms, name),
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
        // LEAD: wire to VmManager::pause/resume
        Command::VmPause { key } | Command::VmResume { key } => {
            kprintln!("error: vm {key}: the VM manager cannot pause or resume VMs yet");
        }
        Command::VmInfo { key } => {
            if let Err(e) = vms.info(key, &mut crate::serial::ConsoleWriter) {
                kprintln!("error: {e}");
            }
        }
        // Handled by the loop, which owns the terminal.
        Command::VmConsole { .. } => {}
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
        Command::ConfigShow => config_show(),
        Command::ConfigSet { path, value } => config_set(path, value),
        Command::ConfigDiff => config_diff(),
        Command::ConfigSave => config_save(),
        Command::ConfigRevert => {
            if crate::settings::global().revert() {
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

fn config_show() {
    let settings = crate::settings::global();
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

fn config_set(path: &str, value: &str) {
    let mut settings = crate::settings::global();
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

fn config_diff() {
    let changes = crate::settings::global().diff();
    if changes.is_empty() {
        kprintln!("no pending edits");
    }
    for change in &changes {
        kprintln!("{}", settings::change_line(change));
    }
}

fn vm_create(vms: &mut VmManager, vm: keel_config::schema::Vm) {
    let name = vm.name.clone();
    match crate::vm_config::create(vms, vm) {
        Ok(generation) => {
            kprintln!("configuration saved as generation {generation}");
            kprintln!("vm {name} created: 'vm start {name}' starts it");
        }
        Err(e) => print_vm_config_error(e),
    }
}

fn vm_destroy(vms: &mut VmManager, name: &str) {
    match crate::vm_config::destroy(vms, name) {
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

fn config_save() {
    let mut settings = crate::settings::global();
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

fn disk() {
    let info = match crate::blk::boot_disk::info() {
        Ok(info) => info,
        Err(e) => {
            kprintln!("{e}");
            return;
        }
    };
    kprintln!("  disk:     {} at {}", info.model, info.address);
    kprintln!(
        "  capacity: {} MiB ({} sectors of 512 bytes){}",
        info.sectors / 2048,
        info.sectors,
        if info.read_only { ", read-only" } else { "" }
    );
    kprintln!(
        "  gpt:      disk {}, {} header",
        info.gpt.disk_guid,
        info.gpt.header
    );
    if let Some(e) = &info.gpt.primary_error {
        kprintln!("  warning:  primary GPT unusable ({e}); read the backup");
    }
    kprintln!("  #  name          first LBA   last LBA    size       type");
    for p in &info.gpt.partitions {
        kprintln!(
            "  {:<2} {:<13} {:<11} {:<11} {:<10} {}",
            p.number,
            p.name,
            p.first_lba,
            p.last_lba,
            alloc::format!("{} MiB", p.sectors() / 2048),
            p.type_guid
        );
    }
}

fn store_ls() {
    match crate::store::list() {
        Ok(files) if files.is_empty() => {
            kprintln!("the guest store is empty (add files with `keel build --store <dir>`)")
        }
        Ok(files) => {
            kprintln!("  {:<40} {:>12}", "name", "size");
            for f in &files {
                kprintln!("  {:<40} {:>12}", f.name, f.size);
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
    let cpus = &system.platform.cpus;
    if cpus.is_empty() {
        kprintln!("1 CPU (no ACPI MADT; only the boot CPU is known)");
        return;
    }
    let plural = if cpus.len() == 1 { "" } else { "s" };
    kprintln!("{} CPU{plural} (ACPI MADT)", cpus.len());
    kprintln!("  cpu  apic-id  state");
    let boot_id = crate::arch::apic::id();
    for (i, cpu) in cpus.iter().enumerate() {
        let state = if cpu.apic_id == boot_id {
            "boot CPU, running the management plane and VMs"
        } else if cpu.enabled {
            "present, not started"
        } else {
            "online-capable, not present"
        };
        kprintln!("  {i:<4} {:<8} {state}", cpu.apic_id);
    }
    kprintln!(
        "  timer: local {} at {} Hz, TSC {} MHz (calibrated from {})",
        crate::arch::apic::mode_name(),
        crate::arch::timer::TICK_HZ,
        crate::arch::timer::tsc_hz() / 1_000_000,
        crate::arch::timer::source().describe()
    );
}
