//! The kernel's main loop. [`Kernel`] owns what runs once the machine is up — the VM
//! manager, the network management plane and the running configuration ([`Settings`]) — and
//! turns them on the boot CPU, one pass after another:
//!
//! 1. the bytes typed on COM1 go to the operator shell ([`Shell`]), which runs commands
//!    against the state the kernel lends it ([`Services`]);
//! 2. the network plane polls the NIC and serves HTTP requests ([`NetPlane::poll`]) against
//!    the same state;
//! 3. one VM slice runs ([`VmManager::run_slice`]);
//! 4. the shell shows what the VMs and the plane printed (it owns the terminal);
//!
//! and when no VM can run the CPU sleeps until the next interrupt (the timer tick, a key, a
//! packet), so the prompt and the API answer while guests run.
//!
//! After each client's turn the kernel watches the configuration's
//! [`revision`](Settings::revision): a configuration saved on the console or over HTTP is
//! handed to the VM manager (the named VMs follow it) and to the network plane (the API
//! tokens), so neither keeps a copy that can go stale.
//!
//! Steps 1, 2 and 4 are the boot CPU's own work: the console UART and the NIC are serviced
//! there. Step 3 is apart from them ([`Kernel::run_vms`]): it is the part every host CPU
//! will run once vCPUs spread over them. The clients get the kernel's state borrowed for one
//! call; none of it is global.

use alloc::string::String;
use core::fmt::Write as _;

use crate::console::shell::Shell;
use crate::mgmt::NetPlane;
use crate::settings::{Settings, Source};
use crate::vms::{VmDefinition, VmManager};
use crate::{System, kprintln};

/// What the kernel lends a client (the shell) for one call.
pub struct Services<'a> {
    /// What the kernel learned at boot.
    pub system: &'static System,
    /// The VMs.
    pub vms: &'a mut VmManager,
    /// The running configuration and the console's pending edits.
    pub settings: &'a mut Settings,
    /// The network management plane, when a NIC came up.
    pub net: Option<&'a NetPlane>,
}

/// The running kernel: its state and its clients.
pub struct Kernel {
    system: &'static System,
    vms: VmManager,
    net: Option<NetPlane>,
    settings: Settings,
    /// The configuration revision the VM manager and the network plane were last given.
    applied_revision: u64,
    shell: Shell,
}

impl Kernel {
    /// Brings up the network plane from `settings`, defines the configured VMs and starts
    /// those marked autostart (saying so on the console), and shows the shell's prompt.
    pub fn start(system: &'static System, settings: Settings) -> Kernel {
        let net = start_network(system, settings.current());
        let mut vms = VmManager::new();
        // The named VMs follow the configuration: now, and whenever a save or a PUT
        // replaces it (`apply_config`).
        vms.define(&VmDefinition::from_config(settings.current()));
        for line in vms.autostart(system) {
            kprintln!("{line}");
        }
        Kernel {
            system,
            vms,
            net,
            applied_revision: settings.revision(),
            settings,
            shell: Shell::start(),
        }
    }

    /// Runs the console, the network plane and the VMs forever.
    pub fn run(mut self) -> ! {
        loop {
            self.console_input();
            self.apply_config();
            let runnable = self.vms.any_runnable();
            let mut output = String::new();
            self.poll_network(&mut output);
            self.run_vms(&mut output);
            self.shell.show_output(&mut self.vms, &output);
            if !runnable {
                crate::arch::cpu::wait_for_interrupt();
            }
        }
    }

    /// Hands the bytes typed on COM1 since the last pass to the shell, as many as it takes
    /// now, then what was typed for an attached VM to that VM.
    fn console_input(&mut self) {
        let Kernel {
            system,
            vms,
            net,
            settings,
            shell,
            ..
        } = self;
        let mut services = Services {
            system,
            vms,
            settings,
            net: net.as_ref(),
        };
        while shell.accepts_input() {
            let Some(byte) = crate::serial::try_read_console() else {
                break;
            };
            shell.feed(byte, &mut services);
        }
        shell.forward_input(services.vms);
    }

    /// Polls the network plane once; a configuration it saved (`PUT /api/v1/config`, a VM
    /// created or destroyed) is applied at once and reported in `output`.
    fn poll_network(&mut self, output: &mut String) {
        let Some(net) = self.net.as_mut() else {
            return;
        };
        net.poll(self.system, &mut self.vms, &mut self.settings, output);
        if self.apply_config()
            && let Source::Disk { generation, .. } = self.settings.source()
        {
            let _ = writeln!(output, "config: generation {generation} saved over HTTP");
        }
    }

    /// Runs one VM slice, appending the lines the VMs printed (and their stop notices) to
    /// `output`. With nothing runnable this only collects what stopped VMs printed last.
    fn run_vms(&mut self, output: &mut String) {
        self.vms.run_slice(self.system, output);
    }

    /// Hands a configuration saved since the last call to the VM manager and the network
    /// plane; says whether there was one.
    fn apply_config(&mut self) -> bool {
        let revision = self.settings.revision();
        if revision == self.applied_revision {
            return false;
        }
        self.applied_revision = revision;
        let config = self.settings.current();
        self.vms.define(&VmDefinition::from_config(config));
        if let Some(net) = self.net.as_mut() {
            net.apply_config(config);
        }
        true
    }
}

/// Starts the network plane on the first NIC, saying on the console how it came up.
fn start_network(system: &System, config: &keel_config::Config) -> Option<NetPlane> {
    match NetPlane::start(system, config) {
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
    }
}
