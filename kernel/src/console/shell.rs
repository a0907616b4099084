//! The shell loop: read a line from COM1, run the command, print the result, prompt again.

use embedded_io::Read;

use super::command::{self, COMMANDS, Command};
use super::line::{Event, LineEditor};
use crate::serial::Console;
use crate::{System, kprint, kprintln};

/// The prompt.
pub const PROMPT: &str = "keel> ";

/// Runs the console forever.
pub fn run(system: &System) -> ! {
    let mut console = Console;
    let mut editor = LineEditor::new();
    let mut buf = [0u8; 64];
    kprint!("{PROMPT}");
    loop {
        let Ok(n) = console.read(&mut buf);
        for &byte in &buf[..n] {
            match editor.feed(byte) {
                Event::None => {}
                Event::Echo(bytes) => crate::serial::console_write(bytes),
                Event::EchoByte(b) => crate::serial::console_write(&[b]),
                Event::Cancelled => kprint!("^C\n{PROMPT}"),
                Event::Line => {
                    kprintln!();
                    match command::parse(editor.text()) {
                        Ok(Some(cmd)) => execute(system, cmd),
                        Ok(None) => {}
                        Err(e) => kprintln!("{e}"),
                    }
                    editor.clear();
                    kprint!("{PROMPT}");
                }
            }
        }
    }
}

fn execute(system: &System, cmd: Command) {
    match cmd {
        Command::Help => {
            kprintln!("commands:");
            for (name, _, description) in COMMANDS {
                kprintln!("  {name:<10} {description}");
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
        Command::Cpus => {
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
                    "boot CPU, running the management plane"
                } else if cpu.enabled {
                    "present, not started"
                } else {
                    "online-capable, not present"
                };
                kprintln!("  {i:<4} {:<8} {state}", cpu.apic_id);
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
