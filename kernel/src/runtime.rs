//! The kernel's main loop. [`Kernel`] owns what runs once the machine is up — the VM
//! manager, the network management plane and the running configuration ([`Settings`]) — and
//! turns them on the boot CPU, one pass after another:
//!
//! 1. the bytes typed on COM1 go to the operator shell ([`Shell`]), which runs commands
//!    against the state the kernel lends it ([`Services`]);
//! 2. the network ([`Kernel::poll_network`]): frames from the physical NIC go to the
//!    `bridged` switch's uplink port, both guest switches forward, the management plane
//!    serves HTTP requests ([`NetPlane::poll`]) against the same state over its switch port,
//!    the appliance's `internal` interface answers ping and DHCP ([`InternalNet::poll`]), and
//!    the switches and the uplink run once more so the replies leave in this pass;
//! 3. frames waiting for guests go to their NICs ([`VmManager::poll_io`]), waking halted
//!    vCPUs;
//! 4. one VM slice runs ([`VmManager::run_slice`]), then what the guests sent in it is
//!    forwarded;
//! 5. the shell shows what the VMs and the plane printed (it owns the terminal);
//!
//! and when no VM can run and no frame moved for [`TRAFFIC_POLL_TICKS`] the CPU sleeps until
//! the next interrupt (the timer tick or a key; NICs are polled, hence the polling after
//! traffic), so the prompt and the API answer while guests run.
//!
//! Every step is bounded — the uplink moves at most 64 frames (`mgmt::UPLINK_BUDGET`)
//! each way per call, a switch takes at most its poll budget from each port per poll and
//! every port queue has a limit — so a guest flooding frames costs the management plane at
//! most a bounded amount of work per pass, and its excess is dropped and counted at its port.
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
use crate::net::internal::InternalNet;
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
    /// The appliance's interface on the `internal` switch, when it came up.
    pub internal: Option<&'a InternalNet>,
}

/// The running kernel: its state and its clients.
pub struct Kernel {
    system: &'static System,
    vms: VmManager,
    net: Option<NetPlane>,
    internal: Option<InternalNet>,
    /// The live-migration link and its sessions, when configured.
    migration: Option<crate::migrate::link::MigrationPlane>,
    settings: Settings,
    /// The configuration revision the VM manager and the network plane were last given.
    applied_revision: u64,
    /// The tick at which a frame last moved or woke a guest (see [`TRAFFIC_POLL_TICKS`]).
    last_traffic_tick: u64,
    shell: Shell,
    /// The status screen on the local display, when the machine has one.
    screen: Option<crate::screen::hw::StatusScreen>,
}

/// How many ticks (ms) the loop keeps polling the NICs after the last frame moved before it
/// lets the CPU sleep until the next tick: short enough that an idle appliance sleeps, long
/// enough to cover the gaps of a TCP exchange.
const TRAFFIC_POLL_TICKS: u64 = 10;

impl Kernel {
    /// Brings up the network plane from `settings`, defines the configured VMs and starts
    /// those marked autostart (saying so on the console), and shows the shell's prompt.
    pub fn start(
        system: &'static System,
        settings: Settings,
        screen: Option<crate::screen::hw::StatusScreen>,
    ) -> Kernel {
        let net = start_network(system, settings.current());
        let internal = start_internal(system, settings.current());
        let (migration, line) =
            crate::migrate::link::MigrationPlane::start(system, settings.current());
        if let Some(line) = line {
            kprintln!("{line}");
        }
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
            internal,
            migration,
            applied_revision: settings.revision(),
            last_traffic_tick: 0,
            settings,
            shell: Shell::start(),
            screen,
        }
    }

    /// Runs the console, the network plane and the VMs forever.
    pub fn run(mut self) -> ! {
        loop {
            self.console_input();
            self.apply_config();
            let runnable = self.vms.any_runnable();
            let mut output = String::new();
            let moved = self.poll_network(&mut output);
            // Frames for halted guests go in now, so they wake in this pass's slice.
            let woke = self.vms.poll_io();
            self.run_vms(&mut output);
            let sent = self.forward_frames();
            self.shell.show_output(&mut self.vms, &output);
            if let Some(screen) = self.screen.as_mut() {
                screen.refresh(&self.settings, self.net.as_ref(), &self.vms);
            }
            // Sleep only with nothing to do: a frame that moved may have more behind it
            // (budgets), or a reply on its way; a guest woken by a frame runs next pass.
            // The NICs are polled, so after traffic the loop keeps polling for a few ticks
            // instead of sleeping: an answer (a TCP ACK, the next request) usually follows
            // within microseconds, and a halted guest would otherwise wait up to a tick
            // for each one.
            let now = crate::arch::timer::ticks();
            if moved || woke || sent {
                self.last_traffic_tick = now;
            }
            let quiet = now.saturating_sub(self.last_traffic_tick) >= TRAFFIC_POLL_TICKS;
            if !runnable && quiet && !self.vms.any_runnable() {
                crate::sched::idle_until_interrupt();
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
            internal,
            settings,
            shell,
            ..
        } = self;
        let mut services = Services {
            system,
            vms,
            settings,
            net: net.as_ref(),
            internal: internal.as_ref(),
        };
        while shell.accepts_input() {
            let Some(byte) = crate::serial::try_read_console() else {
                break;
            };
            shell.feed(byte, &mut services);
        }
        shell.forward_input(services.vms);
    }

    /// Runs the network once: the uplink in, the switches, the management plane (a
    /// configuration it saved — `PUT /api/v1/config`, a VM created or destroyed — is applied
    /// at once and reported in `output`), the internal interface and its DHCP server, then
    /// the switches and the uplink again so replies leave now. Returns whether any frame
    /// moved or any request was served.
    fn poll_network(&mut self, output: &mut String) -> bool {
        let mut moved = false;
        if let Some(net) = self.net.as_mut() {
            moved |= net.pump_uplink(self.system);
        }
        moved |= self.system.switches.lock().poll(crate::net::now());
        if let Some(net) = self.net.as_mut() {
            moved |= net.poll(
                self.system,
                &mut self.vms,
                &mut self.settings,
                self.internal.as_ref(),
                output,
            );
            if self.apply_config()
                && let Source::Disk { generation, .. } = self.settings.source()
            {
                let _ = writeln!(output, "config: generation {generation} saved over HTTP");
            }
        }
        if let Some(internal) = self.internal.as_mut() {
            moved |= internal.poll(crate::net::now());
        }
        // Live migration's own link and sessions (bounded work per call).
        if let Some(migration) = self.migration.as_mut() {
            moved |= migration.poll(self.system, &mut self.vms, self.settings.current(), output);
        }
        moved | self.forward_frames()
    }

    /// Forwards what waits at the switches' ports and moves the uplink port's frames out to
    /// the physical NIC (and what it received in); returns whether any frame moved.
    fn forward_frames(&mut self) -> bool {
        let mut moved = self.system.switches.lock().poll(crate::net::now());
        if let Some(net) = self.net.as_mut() {
            moved |= net.pump_uplink(self.system);
        }
        moved
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

/// Brings up the appliance's interface on the `internal` switch, saying on the console how.
fn start_internal(system: &System, config: &keel_config::Config) -> Option<InternalNet> {
    match InternalNet::start(
        &system.switches,
        &config.hostname,
        &config.network.internal,
        crate::net::now(),
    ) {
        Ok(internal) => {
            kprintln!(
                "internal network: {}, DHCP server {}",
                internal.address(),
                if internal.dhcp() { "on" } else { "off" }
            );
            Some(internal)
        }
        Err(e) => {
            kprintln!("warning: {e}");
            None
        }
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
