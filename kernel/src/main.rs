//! Keel's kernel: the thin shell that owns the machine.
//!
//! Boot order: the trampoline (`boot::entry`) enters long mode and calls [`kernel_entry`],
//! which brings up the console UART and diagnostics, the GDT/IDT, parses the boot information,
//! reads ACPI, sets up memory (frames, page tables, heap), the local APIC, timer and IOAPIC,
//! detects the CPU's virtualization extension, probes PCI (NICs, the virtio-blk boot disk and
//! its guest store), loads the configuration from the boot disk, prints the banner and hands
//! the machine to the main loop ([`runtime::Kernel`]: the VMs, the network plane, the
//! settings, and the operator shell as its client).
//!
//! The crate also builds for the host so its pure modules (boot-info parsing, the frame
//! allocator, AML `\_S5` scanning, the line editor and command parser, GPT and FAT reading)
//! run under `cargo test`;
//! everything that touches the machine is `cfg(target_os = "none")`.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

pub mod acpi;
pub mod blk;
pub mod boot;
pub mod console;
pub mod console_port;
pub mod entropy;
pub mod events;
pub mod mm;
pub mod net;
pub mod pci;
pub mod sched;
pub mod screen;
pub mod settings;
pub mod smbios;
pub mod store;

pub mod arch;
pub mod bench;
#[cfg(target_os = "none")]
pub mod cpuinfo;
#[cfg(target_os = "none")]
pub mod crash;
#[cfg(target_os = "none")]
pub mod log;
#[cfg(target_os = "none")]
pub mod mgmt;
#[cfg(target_os = "none")]
pub mod migrate;
#[cfg(target_os = "none")]
pub mod runtime;
#[cfg(target_os = "none")]
pub mod serial;
#[cfg(target_os = "none")]
pub mod tls_setup;
#[cfg(target_os = "none")]
pub mod vm_config;
#[cfg(target_os = "none")]
pub mod vms;

extern crate alloc;

#[cfg(target_os = "none")]
pub use kernel::*;

/// The host build has no kernel to run; it exists for the unit tests.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("keel-kernel runs on bare metal: build it with `cargo run --bin keel -- build`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod kernel {
    use core::fmt::Write as _;

    use keel_vmm::detect::{self, CpuIdentity, Virtualization};
    use spin::Once;

    use crate::acpi::{self, Platform};
    use crate::arch::{apic, cpu, gdt, idt, timer};
    use crate::boot::{self, BootInfo, entry};
    use crate::serial::EmergencyWriter;
    use crate::settings::Settings;
    use crate::{kprintln, mm, serial};

    /// The compiler that built this kernel.
    pub const RUSTC_VERSION: &str = env!("KEEL_RUSTC_VERSION");

    /// What the kernel learned at boot, shared with the main loop and its clients.
    pub struct System {
        /// Normalized boot information.
        pub boot: BootInfo,
        /// Firmware tables, distilled.
        pub platform: Platform,
        /// The boot CPU.
        pub cpu: CpuIdentity,
        /// The usable virtualization extension.
        pub virtualization: Virtualization,
        /// PCI functions found at boot.
        pub pci: alloc::vec::Vec<crate::pci::PciDevice>,
        /// The NICs brought up at boot (`network.interface`, else the first, is the `bridged`
        /// switch's uplink).
        pub nics: spin::Mutex<alloc::vec::Vec<crate::net::Nic>>,
        /// The guest switches, `bridged` and `internal`: the network planes plug the
        /// appliance's interfaces and the uplink in, the VM manager each guest NIC.
        pub switches: spin::Mutex<crate::net::switches::Switches>,
    }

    static SYSTEM: Once<System> = Once::new();

    /// Reads boot structures through the trampoline's 4 GiB identity map.
    struct BootMemory;

    impl boot::pvh::PhysRead for BootMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let end = addr.saturating_add(buf.len() as u64);
            if addr == 0 || end > 1 << 32 {
                return false;
            }
            // SAFETY: the boot page tables identity-map the first 4 GiB, and the range was
            // checked to lie inside it; reads of firmware/loader memory have no side effects.
            unsafe {
                core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            true
        }
    }

    fn read_boot_info(kind: u32, info_ptr: u32) -> BootInfo {
        let mem = BootMemory;
        if kind == entry::ENTRY_PVH {
            return boot::pvh::parse(&mem, u64::from(info_ptr));
        }
        let mut header = [0u8; 8];
        if !boot::pvh::PhysRead::read(&mem, u64::from(info_ptr), &mut header) {
            return boot::multiboot2::parse(&[]);
        }
        let size = boot::multiboot2::declared_size(&header).min(64 * 1024);
        let mut bytes = [0u8; 64 * 1024];
        let bytes = &mut bytes[..size];
        if !boot::pvh::PhysRead::read(&mem, u64::from(info_ptr), bytes) {
            return boot::multiboot2::parse(&header);
        }
        boot::multiboot2::parse(bytes)
    }

    fn fatal(what: &str, error: &dyn core::fmt::Display) -> ! {
        let _ = writeln!(
            EmergencyWriter,
            "\n*** KEEL BOOT FAILED: {what}: {error} ***\nsystem halted"
        );
        cpu::halt_forever()
    }

    /// Routes the console port's ISA IRQ (COM1/COM3: 4, COM2/COM4: 3, or the SPCR's) to the
    /// console vector. A port without an IRQ is polled from the timer tick (`false`).
    fn route_console_irq(platform: &Platform) -> bool {
        let Some(irq) = serial::console_port().irq else {
            return false;
        };
        let (gsi, flags) = platform.isa_irq(irq);
        let Some(ioapic) = platform
            .io_apics
            .iter()
            .map(|io| apic::IoApic::new(u64::from(io.address), io.gsi_base))
            .find(|io| io.serves(gsi))
        else {
            return false;
        };
        // MPS INTI flags: polarity 3 = active low, trigger 3 = level; ISA default is
        // edge/high.
        let active_low = flags & 0b11 == 0b11;
        let level = (flags >> 2) & 0b11 == 0b11;
        ioapic.route(gsi, idt::COM1_VECTOR, apic::id(), level, active_low);
        serial::enable_console_rx_interrupt();
        true
    }

    /// The Rust entry, called by the trampoline on the kernel stack with paging on.
    #[unsafe(no_mangle)]
    pub extern "C" fn kernel_entry(kind: u32, info_ptr: u32, entry_tsc: u64) -> ! {
        serial::init_console();
        gdt::init();
        idt::init();
        crate::arch::smp::init_boot_cpu();
        // Until the console's port is known the log goes to its ring only: on a server whose
        // console is COM2 (serial-over-LAN) its binary frames must not reach the operator.
        defmt::info!("keel {=str}: kernel entered", env!("CARGO_PKG_VERSION"));

        let boot = read_boot_info(kind, info_ptr);
        // ACPI first, on the boot identity map, so its tables can be kept out of the
        // frame allocator.
        let platform = acpi::discover(&boot);
        let console_warnings = select_console(&boot, &platform);
        for warning in &boot.warnings {
            kprintln!("warning: {}", warning);
        }
        for warning in &console_warnings {
            kprintln!("warning: {}", warning);
        }
        // SMBIOS before memory set-up: UEFI firmware may keep it in memory the frame
        // allocator would reuse.
        for warning in &crate::smbios::discover(&boot, &BootMemory).warnings {
            kprintln!("warning: {}", warning);
        }
        if let Err(e) = mm::init(&boot, &acpi::table_ranges()) {
            fatal("memory set-up", &e);
        }
        defmt::info!("memory: {=u64} KiB usable", mm::stats().usable_bytes / 1024);

        apic::init();
        timer::calibrate();
        timer::start_periodic();
        let irq_routed = route_console_irq(&platform);
        x86_64::instructions::interrupts::enable();
        defmt::info!("console irq routed: {=bool}", irq_routed);

        let cpu = detect::identify(&crate::cpuinfo::HostCpu);
        let virtualization = detect::probe(&crate::cpuinfo::HostCpu);
        start_other_cpus(&boot, &platform, &virtualization);
        let pci = crate::pci::enumerate();
        let nics = spin::Mutex::new(crate::net::probe(&pci));
        let boot_disk = crate::blk::boot_disk::init(&pci);
        let system = SYSTEM.call_once(|| System {
            boot,
            platform,
            cpu,
            virtualization,
            pci,
            nics,
            switches: spin::Mutex::new(crate::net::switches::Switches::new()),
        });

        let (mut settings, config_lines) = load_config();
        let screen = open_status_screen(&system.boot);
        kprintln!("{}", crate::arch::smp::boot_log_line());
        print_banner(system, &settings, entry_tsc);
        report_disk(&boot_disk);
        for line in &config_lines {
            kprintln!("{}", line);
        }
        crate::entropy::init();
        crate::tls_setup::prepare(&mut settings);
        for problem in &system.platform.problems {
            kprintln!("warning: {}", problem);
        }
        if system.boot.cmdline_value("keel.smp.selftest") == Some("kick") {
            kprintln!("{}", crate::arch::smp::self_test());
        }
        crate::crash::from_cmdline(system.boot.cmdline_value("keel.test-crash"));
        crate::bench::from_cmdline(system, system.boot.cmdline_value("keel.bench"));
        crate::runtime::Kernel::start(system, settings, screen).run()
    }

    /// Starts the application processors the MADT lists (`keel.smp.fake_cpu=<apic id>`
    /// adds one that does not exist, to test the failure path).
    fn start_other_cpus(boot: &BootInfo, platform: &Platform, virtualization: &Virtualization) {
        use crate::arch::smp;
        let usable: alloc::vec::Vec<_> = boot
            .memory
            .iter()
            .filter(|r| r.kind == boot::MemoryKind::Usable)
            .map(|r| r.start..r.end())
            .collect();
        let fake = smp::plan::parse_fake_cpu(boot.cmdline_value("keel.smp.fake_cpu"));
        let (boot_cpu, enable) = smp::virt::for_boot(virtualization);
        smp::start_application_processors(&platform.cpus, &usable, fake, boot_cpu, enable);
    }

    /// Picks the operator console (`console=`, else the SPCR's port, else COM1) and moves it
    /// there from COM1, where it started; the defmt log leaves COM2 to a console that takes
    /// it. Returns the warnings to print on the console's new port.
    fn select_console(
        boot: &BootInfo,
        platform: &Platform,
    ) -> alloc::vec::Vec<alloc::string::String> {
        use crate::console_port::{self, PortSource};
        use alloc::string::ToString;

        let mut warnings = alloc::vec::Vec::new();
        let spcr = match &platform.spcr {
            Some(Ok(port)) => Some(*port),
            Some(Err(e)) => {
                warnings.push(e.to_string());
                None
            }
            None => None,
        };
        let choice = console_port::choose(console_port::console_args(&boot.cmdline), spcr);
        if let Some(e) = &choice.warning {
            warnings.push(alloc::format!("{e}; the console stays on {}", choice.port));
        }
        if choice.port != serial::console_port() {
            // Said on the old port, so whoever watches COM1 knows where the console went.
            kprintln!("console: moving to {} ({})", choice.port, choice.source);
            if !serial::switch_console(choice.port) {
                warnings.push(alloc::format!(
                    "console: no UART answers at {} ({}); the console stays on {}",
                    choice.port,
                    choice.source,
                    serial::console_port()
                ));
            }
        }
        let log_base = console_port::log_port(&serial::console_port());
        let answered = crate::log::move_to(log_base);
        defmt::info!(
            "log on {=u16:#x} ({=bool}), console from {=str}",
            log_base,
            answered,
            match choice.source {
                PortSource::CommandLine => "command line",
                PortSource::Spcr => "SPCR",
                PortSource::Default => "default",
            }
        );
        warnings
    }

    /// Opens the status screen on the local display, saying on the console what it uses.
    fn open_status_screen(boot: &BootInfo) -> Option<crate::screen::hw::StatusScreen> {
        match crate::screen::hw::StatusScreen::open(boot) {
            Ok(Some((screen, what))) => {
                kprintln!("status screen: {what}");
                Some(screen)
            }
            Ok(None) => None,
            Err(e) => {
                kprintln!("warning: no status screen: {e}");
                None
            }
        }
    }

    fn print_banner(system: &System, settings: &Settings, entry_tsc: u64) {
        let usable_mib = mm::stats().usable_bytes / (1024 * 1024);
        let cpus = system.platform.cpus.len().max(1);
        kprintln!();
        kprintln!("Keel {}", env!("CARGO_PKG_VERSION"));
        kprintln!("  hostname:       {}", settings.current().hostname);
        kprintln!("  boot path:      {}", system.boot.path);
        if let Some(machine) = crate::smbios::summary(crate::smbios::hardware()) {
            kprintln!("  machine:        {}", machine);
        }
        kprintln!(
            "  cpu:            {}, {}",
            system.cpu.vendor,
            system.cpu.model_name
        );
        kprintln!("  virtualization: {}", system.virtualization);
        kprintln!("  console:        {}", serial::console_port());
        kprintln!("  memory:         {} MiB usable", usable_mib);
        kprintln!("  cpus:           {}", cpus);
        kprintln!(
            "  boot time:      {} ms from kernel entry to prompt",
            timer::tsc_delta_ms(cpu::rdtsc().wrapping_sub(entry_tsc))
        );
    }

    /// Loads the configuration from the boot disk (the built-in defaults without one);
    /// returns it and the lines to print after the banner.
    fn load_config() -> (Settings, alloc::vec::Vec<alloc::string::String>) {
        use alloc::string::ToString;

        match crate::blk::boot_disk::config_partition() {
            Ok(mut partition) => Settings::boot(Ok(&mut partition)),
            Err(e) => Settings::boot::<crate::blk::boot_disk::BootPartition>(Err(e.to_string())),
        }
    }

    /// One line on the boot disk and its store, after the banner.
    fn report_disk(
        disk: &Result<crate::blk::boot_disk::DiskInfo, crate::blk::boot_disk::BootDiskError>,
    ) {
        match disk {
            Ok(info) => {
                let store = match crate::store::mount() {
                    Ok(volume) => alloc::format!("guest store {}", volume.fat_type),
                    Err(e) => alloc::format!("{e}"),
                };
                kprintln!(
                    "disk: {} at {}, {} MiB; {}",
                    info.model,
                    info.location,
                    info.sectors / 2048,
                    store
                );
                match crate::store::repair() {
                    Ok(r) if r != Default::default() => kprintln!(
                        "store: repaired after an interrupted write: {} FAT sectors mirrored, \
                         {} lost clusters freed",
                        r.fat_sectors_mirrored,
                        r.clusters_reclaimed
                    ),
                    _ => {}
                }
                if let Some(repair) = &info.gpt_repair {
                    let warning = if repair.is_damage() { "warning: " } else { "" };
                    kprintln!("{}disk: {}", warning, repair);
                }
            }
            Err(e) => kprintln!("disk: {e}"),
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        let _ = writeln!(
            EmergencyWriter,
            "\n*** KERNEL PANIC: {info} ***\nsystem halted"
        );
        cpu::halt_forever()
    }
}
