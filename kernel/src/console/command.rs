//! Console commands: the table (for `help`) and parsing a line into a [`Command`].
//!
//! Limits (memory, vCPUs, names) are `keel_config::limits`, as for the configuration and the
//! API; the messages that name them are built from them at compile time.

use const_format::formatcp;
use keel_config::limits::{
    self, MAX_MEMORY_MIB, MAX_VCPUS, MAX_VM_DISKS, MAX_VM_NICS, MIN_RUN_MEMORY_MIB,
};
use keel_config::schema::{DiskSource, MacAddress, NicNetwork, Paravirt, VmDevice};
use keel_netstack::api::{DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S, VmKey};

/// A parsed console command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one command lives on the stack per typed line; `vm create`'s disks and NICs in \
              place keep it Copy and allocation-free"
)]
pub enum Command<'a> {
    /// List the commands, or those a topic names (`help vm`, `help vm stop`).
    Help {
        /// The words after `help`, if any.
        topic: Option<&'a str>,
    },
    /// Show the Keel version and build.
    Version,
    /// Show what the machine is (SMBIOS vendor, product, serial, BIOS).
    System,
    /// Show memory and heap use.
    Mem,
    /// Show the CPUs the firmware lists.
    Cpus,
    /// List boot modules (guest payloads).
    Modules,
    /// Show the network: NIC, address, API.
    Net,
    /// List PCI devices.
    Pci,
    /// Show the boot disk, its partitions and the guest disks.
    Disk,
    /// Make a guest-disk partition.
    DiskCreate {
        /// Its name.
        name: &'a str,
        /// Its size in bytes.
        bytes: u64,
    },
    /// Delete a guest-disk partition.
    DiskDelete {
        /// Its name.
        name: &'a str,
    },
    /// List the guest store's files.
    StoreLs,
    /// Size and CRC32 of a guest store file.
    StoreSum {
        /// The file name (the rest of the line: names may hold spaces).
        name: &'a str,
    },
    /// Start a VM from a boot module: a flat payload, or a Linux bzImage / PVH ELF kernel
    /// with an optional initrd module and command line.
    VmRun {
        /// Module index or file name.
        module: &'a str,
        /// Guest RAM in MiB (default when `None`).
        mem_mib: Option<u32>,
        /// vCPUs (1 when `None`).
        vcpus: Option<u8>,
        /// The initrd module (Linux guests).
        initrd: Option<&'a str>,
        /// The kernel command line (Linux guests), without its quotes.
        cmdline: Option<&'a str>,
        /// The paravirtual interface (KVM's when `None`).
        paravirt: Option<Paravirt>,
        /// Test devices (`devices=debug-exit,pc-testdev`).
        devices: TestDevices,
    },
    /// List VMs.
    VmList,
    /// Define a named VM in the configuration (saved to the boot disk).
    VmCreate {
        /// VM name.
        name: &'a str,
        /// Kernel file in the guest store.
        kernel: Option<&'a str>,
        /// Firmware file in the guest store (boots the disks instead of a kernel).
        firmware: Option<&'a str>,
        /// Disks, in the order given (`disk=` may repeat up to [`MAX_VM_DISKS`] times).
        disks: [Option<DiskArg<'a>>; MAX_VM_DISKS],
        /// NICs, in the order given (`nic=` may repeat up to [`MAX_VM_NICS`] times).
        nics: [Option<NicArg>; MAX_VM_NICS],
        /// Initrd file in the guest store.
        initrd: Option<&'a str>,
        /// Kernel command line, without its quotes.
        cmdline: Option<&'a str>,
        /// Guest RAM in MiB.
        mem_mib: Option<u32>,
        /// vCPUs.
        vcpus: Option<u8>,
        /// Start at boot.
        autostart: bool,
        /// The paravirtual interface (`[vms.cpuid] paravirt`; KVM's when `None`).
        paravirt: Option<Paravirt>,
        /// Test devices (`vms[].devices`).
        devices: TestDevices,
    },
    /// Stop a named VM at once and remove it from the configuration.
    VmDestroy {
        /// VM name.
        name: &'a str,
    },
    /// Start a named VM.
    VmStart {
        /// VM name.
        name: &'a str,
    },
    /// Stop a VM: ACPI power button, forced after the grace time (or at once).
    VmStop {
        /// VM name or number.
        key: &'a str,
        /// Stop at once instead of pressing the power button.
        force: bool,
        /// Grace time in seconds (default when `None`).
        timeout_s: Option<u32>,
    },
    /// Restart a named VM.
    VmRestart {
        /// VM name.
        name: &'a str,
    },
    /// Pause a running VM: its vCPUs stop and its timers stop advancing.
    VmPause {
        /// VM name or number.
        key: &'a str,
    },
    /// Resume a paused VM where it stopped.
    VmResume {
        /// VM name or number.
        key: &'a str,
    },
    /// Save a paused VM (registers, devices, RAM) in memory under a name.
    VmSave {
        /// VM name or number.
        key: &'a str,
        /// The name to save it under (default: the VM's).
        name: Option<&'a str>,
    },
    /// Build a new VM, paused, from a saved one.
    VmRestore {
        /// The saved VM's name.
        name: &'a str,
    },
    /// Write a VM's state and memory to the store as a snapshot (`snapshot_cmds`).
    VmSnapshot {
        /// VM name or number.
        key: &'a str,
        /// The snapshot's name (default `<vm>-<unix time>`).
        name: Option<&'a str>,
        /// Leave the VM stopped afterwards.
        stop: bool,
    },
    /// List the snapshots in the store.
    VmSnapshots,
    /// Restore a snapshot even if its writable disks changed.
    SnapshotRestore {
        /// The snapshot.
        name: &'a str,
        /// Restore although a disk changed.
        force: bool,
    },
    /// Delete a snapshot's files.
    SnapshotRm {
        /// The snapshot.
        name: &'a str,
    },
    /// List the saved VMs.
    SavedLs,
    /// Delete a saved VM.
    SavedRm {
        /// Its name.
        name: &'a str,
    },
    /// Show one VM in detail.
    VmInfo {
        /// VM name or number.
        key: &'a str,
    },
    /// Attach the console to a VM's COM1.
    VmConsole {
        /// VM name or number.
        key: &'a str,
    },
    /// Show a VM's console output.
    VmLog {
        /// VM name or number.
        key: &'a str,
    },
    /// Migrate a running VM to another appliance over the migration link.
    VmMigrate {
        /// VM name or number.
        key: &'a str,
        /// The destination's migration-link address.
        host: core::net::Ipv4Addr,
        /// Its migration port (`None`: this appliance's `management.migration_port`).
        port: Option<u16>,
    },
    /// Drive a VM's dirty-page log (live migration's pre-copy, by hand).
    VmDirtyLog {
        /// VM name or number.
        key: &'a str,
        /// What to do.
        action: DirtyLogAction,
    },
    /// Show every setting of the running configuration.
    ConfigShow,
    /// Set a setting in the pending copy.
    ConfigSet {
        /// `hostname`, `network.mode`, `vms[0].memory_mib`.
        path: &'a str,
        /// The rest of the line: JSON if it parses as JSON, else a bare string.
        value: &'a str,
    },
    /// Show the pending edits.
    ConfigDiff,
    /// Validate and save the pending copy, then apply it.
    ConfigSave,
    /// Drop the pending edits.
    ConfigRevert,
    /// Reset the machine.
    Reboot,
    /// Power the machine off.
    Poweroff,
}

/// Name, usage and one-line description, in `help` order.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "help [<command>]",
        "list the commands, or show one command (help vm stop)",
    ),
    ("version", "show the Keel version and build"),
    (
        "system",
        "show what the machine is: vendor, product, serial number and BIOS (SMBIOS)",
    ),
    (
        "mem",
        "show total, used and free memory and the kernel heap",
    ),
    ("cpus", "show the CPUs the firmware lists (ACPI MADT)"),
    ("modules", "list boot modules (guest payloads)"),
    (
        "net",
        "show the network card, address (DHCP) and the HTTP API",
    ),
    ("pci", "list PCI devices"),
    (
        "disk",
        "show the boot disk (model, capacity, partitions) and the guest disks",
    ),
    (
        "disk create <name> <size>",
        "make a guest-disk partition on Keel's disk (size like 512M, 8G)",
    ),
    (
        "disk delete <name>",
        "delete a guest-disk partition no VM uses",
    ),
    ("store ls", "list the guest store's files"),
    (
        "store sum <name>",
        "read a guest store file: size and CRC32",
    ),
    (
        "vm run <module> [initrd=<module>] [cmdline=\"…\"] [mem=<MiB>] [vcpus=<n>] \
         [devices=debug-exit,pc-testdev]",
        "start a VM from a boot module: a flat payload, a Linux bzImage, a PVH ELF or a \
         Multiboot kernel (initrd= becomes its module 0); devices= adds QEMU's test devices \
         (debug-exit at 0xF4 stops the VM with the code written)",
    ),
    (
        "vm list",
        "list VMs: name, source, memory, vCPUs, uptime, state, exits by reason",
    ),
    (
        "vm create <name> kernel=<file> [initrd=<file>] [cmdline=\"…\"] [mem=<MiB>] [vcpus=<n>] \
         [disk=<file>[,ro] …] [disk=partition:<name>[,ro] …] [nic=bridged|internal[,mac=<mac>] …] \
         [paravirt=kvm|none] [devices=debug-exit,pc-testdev] [autostart]",
        "define a VM (saved in the configuration) from guest store files; disk= attaches a \
         store file or a guest-disk partition (repeatable, ,ro: read-only, ,serial=<id>); \
         nic= adds a NIC on the bridged (physical) or internal network (repeatable, ,mac=: its \
         MAC, else a derived one); firmware=<file> instead of kernel= boots the disks through \
         a firmware; paravirt=none hides KVM's paravirtual interface (kvm-clock) from the guest",
    ),
    (
        "vm destroy <name>",
        "stop a VM at once and remove it from the configuration",
    ),
    ("vm start <name>", "start a VM the configuration defines"),
    (
        "vm stop <vm> [force | timeout=<s>]",
        formatcp!(
            "stop a VM: ACPI power button, forced off after {DEFAULT_STOP_TIMEOUT_S} s (or the \
             timeout); force: at once"
        ),
    ),
    (
        "vm restart <name>",
        "stop a VM (as 'vm stop') and start it again",
    ),
    (
        "vm pause <vm>",
        "pause a running VM: its vCPUs and timers stop until 'vm resume'",
    ),
    (
        "vm resume <vm>",
        "resume a paused VM exactly where it stopped",
    ),
    (
        "vm save <vm> [<saved>]",
        "save a paused VM (vCPUs, devices, RAM) in memory, under its own name or <saved>",
    ),
    (
        "vm restore <saved>",
        "build a new VM, paused, from a saved one ('vm resume' runs it)",
    ),
    (
        "vm snapshot <vm> [<name>] [--stop]",
        "write a VM's state and RAM to the store as a snapshot (pauses it meanwhile)",
    ),
    (
        "vm snapshots",
        "list the snapshots in the store: name, VM, size, RAM, date",
    ),
    (
        "vm restore <snapshot> [--force]",
        "run a new VM from a snapshot (--force: although its writable disks changed)",
    ),
    (
        "snapshot rm <snapshot>",
        "delete a snapshot's files from the store",
    ),
    ("saved ls", "list the saved VMs: name, VM, size, RAM, vCPUs"),
    ("saved rm <saved>", "delete a saved VM"),
    (
        "vm info <vm>",
        "show a VM: state, uptime, memory, vCPUs and their states, stop reason, exits by reason",
    ),
    (
        "vm console <vm>",
        "attach this terminal to a VM's serial console; Ctrl-] detaches",
    ),
    ("vm log <vm>", "show a VM's console (COM1) output so far"),
    (
        "vm migrate <vm> <host>[:<port>]",
        "move a running VM to another appliance over the migration link; it keeps running",
    ),
    (
        "vm dirty-log <vm> start|pages|stop",
        "track the pages a VM writes: start, list and re-protect those written since, stop",
    ),
    (
        "config show",
        "show every setting and where the configuration came from",
    ),
    (
        "config set <path> <value>",
        "edit a setting (saved by 'config save'): config set hostname web1",
    ),
    ("config diff", "show the edits not saved yet"),
    (
        "config save",
        "validate and save the edits to the boot disk, then apply them",
    ),
    ("config revert", "drop the edits not saved yet"),
    ("reboot", "reset the machine"),
    ("poweroff", "power the machine off (ACPI S5)"),
];

/// One `disk=` argument of `vm create`: `disk=<file>[,ro][,serial=<id>]` or
/// `disk=partition:<name>[,ro][,serial=<id>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskArg<'a> {
    /// A store file, or a guest-disk partition.
    pub source: DiskSource<'a>,
    /// `,ro`: attached read-only.
    pub readonly: bool,
    /// `,serial=<id>`: what the guest reads as the disk's serial number.
    pub serial: Option<&'a str>,
}

/// What `disk=` takes, for messages.
const DISK_SYNTAX: &str = "disk=<file>[,ro][,serial=<id>] or disk=partition:<name>[,ro]\
                           [,serial=<id>]";

/// The value of a `disk=` argument. A store file name with a ',' cannot be given here (the
/// configuration and the API take any name).
fn parse_disk<'a>(argument: &'a str, value: &'a str) -> Result<DiskArg<'a>, ParseError<'a>> {
    let bad = |expected| ParseError::BadValue { argument, expected };
    let mut parts = value.split(',');
    let source = match parts.next().unwrap_or_default() {
        "" => return Err(bad(DISK_SYNTAX)),
        v => match v.strip_prefix("partition:") {
            Some("") => return Err(bad(DISK_SYNTAX)),
            Some(name) => DiskSource::Partition(name),
            None => DiskSource::File(v),
        },
    };
    let mut disk = DiskArg {
        source,
        readonly: false,
        serial: None,
    };
    for option in parts {
        if option == "ro" && !disk.readonly {
            disk.readonly = true;
        } else if let Some(serial) = option.strip_prefix("serial=")
            && disk.serial.is_none()
        {
            disk.serial = Some(serial);
        } else {
            return Err(bad(formatcp!("{DISK_SYNTAX}, each option at most once")));
        }
    }
    Ok(disk)
}

/// One `nic=` argument of `vm create`: `nic=bridged[,mac=<mac>]` or
/// `nic=internal[,mac=<mac>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicArg {
    /// The switch it is on.
    pub network: NicNetwork,
    /// `,mac=<mac>`: its MAC address (else the configuration derives one).
    pub mac: Option<MacAddress>,
}

/// What `nic=` takes, for messages.
const NIC_SYNTAX: &str = "nic=bridged[,mac=<mac>] or nic=internal[,mac=<mac>]";

/// The value of a `nic=` argument. Whether the MAC is unicast and unused is the
/// configuration's validation, which names the NIC that has it.
fn parse_nic<'a>(argument: &'a str, value: &'a str) -> Result<NicArg, ParseError<'a>> {
    let bad = |expected| ParseError::BadValue { argument, expected };
    let mut parts = value.split(',');
    let network = match parts.next().unwrap_or_default() {
        "bridged" => NicNetwork::Bridged,
        "internal" => NicNetwork::Internal,
        _ => return Err(bad(NIC_SYNTAX)),
    };
    let mut nic = NicArg { network, mac: None };
    for option in parts {
        match option.strip_prefix("mac=") {
            Some(mac) if nic.mac.is_none() => {
                nic.mac = Some(mac.parse().map_err(|_| {
                    bad(formatcp!(
                        "{NIC_SYNTAX}, <mac> six hex pairs such as 52:54:00:12:34:56"
                    ))
                })?);
            }
            _ => return Err(bad(formatcp!("{NIC_SYNTAX}, mac= at most once"))),
        }
    }
    Ok(nic)
}

/// What `vm dirty-log` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyLogAction {
    /// Protect all RAM, start an empty log.
    Start,
    /// Harvest: the pages written since the last harvest, protected again.
    Pages,
    /// Lift protection, stop logging.
    Stop,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError<'a> {
    /// The first word names no command.
    #[error("unknown command '{0}': type 'help' for the list of commands")]
    Unknown(&'a str),
    /// The command takes no (more) arguments but got some.
    #[error("'{command}' does not take '{argument}'; type 'help'")]
    UnexpectedArgument {
        /// The command.
        command: &'static str,
        /// The first extra word.
        argument: &'a str,
    },
    /// A required argument is missing.
    #[error("usage: {usage}")]
    Missing {
        /// The usage line.
        usage: &'static str,
    },
    /// An argument has a bad value.
    #[error("bad argument '{argument}': expected {expected}")]
    BadValue {
        /// The argument as typed.
        argument: &'a str,
        /// What was expected.
        expected: &'static str,
    },
}

pub(super) fn no_more<'a>(
    command: &'static str,
    mut words: impl Iterator<Item = &'a str>,
) -> Result<(), ParseError<'a>> {
    match words.next() {
        Some(argument) => Err(ParseError::UnexpectedArgument { command, argument }),
        None => Ok(()),
    }
}

/// The value of a `vcpus=<n>` argument: 1 to the most a VM can have.
fn parse_vcpus<'a>(argument: &'a str, value: &str) -> Result<u8, ParseError<'a>> {
    value
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=MAX_VCPUS).contains(n))
        .ok_or(ParseError::BadValue {
            argument,
            expected: formatcp!("vcpus=<n>, a whole number from 1 to {MAX_VCPUS}"),
        })
}

/// A VM name or number, as `vm list` shows: the API's rule for `{name}` ([`VmKey`]).
fn vm_key<'a>(word: Option<&'a str>, usage: &'static str) -> Result<&'a str, ParseError<'a>> {
    let word = word.ok_or(ParseError::Missing { usage })?;
    if VmKey::parse(word).is_ok() {
        Ok(word)
    } else {
        Err(ParseError::BadValue {
            argument: word,
            expected: "a VM name or number, as 'vm list' shows",
        })
    }
}

/// The words of a line: split at ASCII whitespace outside double quotes; the quotes stay in
/// the word (`cmdline="a b"` is one word). [`parse`] rejects unbalanced quotes first.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let line = self
            .rest
            .trim_start_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() {
            self.rest = line;
            return None;
        }
        let mut quoted = false;
        let end = line
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c.is_ascii_whitespace() && !quoted
            })
            .map_or(line.len(), |(i, _)| i);
        self.rest = &line[end..];
        Some(&line[..end])
    }
}

/// The test devices `devices=` lists, each at most once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestDevices {
    list: [Option<VmDevice>; VmDevice::ALL.len()],
}

impl TestDevices {
    /// The devices, in the order given.
    pub fn to_vec(self) -> alloc::vec::Vec<VmDevice> {
        self.list.into_iter().flatten().collect()
    }
}

/// `devices=debug-exit,pc-testdev` (either or both, each once).
fn parse_devices<'a>(argument: &'a str, value: &str) -> Result<TestDevices, ParseError<'a>> {
    let bad = || ParseError::BadValue {
        argument,
        expected: "devices=debug-exit,pc-testdev (either or both, each once)",
    };
    let mut devices = TestDevices::default();
    for (n, name) in value.split(',').enumerate() {
        let device = VmDevice::parse(name).ok_or_else(bad)?;
        if devices.list.contains(&Some(device)) {
            return Err(bad());
        }
        *devices.list.get_mut(n).ok_or_else(bad)? = Some(device);
    }
    Ok(devices)
}

/// `paravirt=kvm|none`.
fn parse_paravirt<'a>(argument: &'a str, value: &str) -> Result<Paravirt, ParseError<'a>> {
    Paravirt::parse(value).ok_or(ParseError::BadValue {
        argument,
        expected: "paravirt=kvm or paravirt=none",
    })
}

fn parse_vm<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Command<'a>, ParseError<'a>> {
    const USAGE: &str = "vm list | vm create <name> kernel=<file> … | vm destroy <name> | \
                         vm start <name> | vm stop <vm> [force | timeout=<s>] | \
                         vm restart <name> | vm pause <vm> | vm resume <vm> | vm info <vm> | \
                         vm console <vm> | vm log <vm> | \
                         vm run <module> [initrd=<module>] [cmdline=\"…\"] [mem=<MiB>] \
                         [vcpus=<n>] [paravirt=kvm|none] [devices=debug-exit,pc-testdev]";
    const RUN_USAGE: &str = "vm run <module> [initrd=<module>] [cmdline=\"…\"] [mem=<MiB>] \
                             [vcpus=<n>] [paravirt=kvm|none] [devices=debug-exit,pc-testdev]";
    match words.next() {
        Some("run") => {
            let module = words
                .next()
                .ok_or(ParseError::Missing { usage: RUN_USAGE })?;
            let (mut mem_mib, mut vcpus, mut initrd, mut cmdline) = (None, None, None, None);
            let mut paravirt = None;
            let mut devices = None;
            for arg in words {
                let duplicate = ParseError::BadValue {
                    argument: arg,
                    expected: "each of mem=, vcpus=, initrd=, cmdline=, paravirt= and devices= \
                               at most once",
                };
                if let Some(value) = arg.strip_prefix("devices=") {
                    if devices.replace(parse_devices(arg, value)?).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(value) = arg.strip_prefix("paravirt=") {
                    if paravirt.replace(parse_paravirt(arg, value)?).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(value) = arg.strip_prefix("vcpus=") {
                    if vcpus.replace(parse_vcpus(arg, value)?).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(value) = arg.strip_prefix("mem=") {
                    let mib: u32 = value.parse().map_err(|_| ParseError::BadValue {
                        argument: arg,
                        expected: "mem=<MiB>, a whole number of MiB",
                    })?;
                    if !limits::memory_fits(u64::from(mib), MIN_RUN_MEMORY_MIB) {
                        return Err(ParseError::BadValue {
                            argument: arg,
                            expected: formatcp!(
                                "an even number of MiB between {MIN_RUN_MEMORY_MIB} and \
                                 {MAX_MEMORY_MIB}"
                            ),
                        });
                    }
                    if mem_mib.replace(mib).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(value) = arg.strip_prefix("initrd=") {
                    if value.is_empty() {
                        return Err(ParseError::BadValue {
                            argument: arg,
                            expected: "initrd=<module>, a module index or name",
                        });
                    }
                    if initrd.replace(value).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(value) = arg.strip_prefix("cmdline=") {
                    let unquoted = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    if unquoted.contains('"') {
                        return Err(ParseError::BadValue {
                            argument: arg,
                            expected: "cmdline=\"…\" with the whole command line in one pair of quotes",
                        });
                    }
                    if cmdline.replace(unquoted).is_some() {
                        return Err(duplicate);
                    }
                } else {
                    return Err(ParseError::UnexpectedArgument {
                        command: "vm run",
                        argument: arg,
                    });
                }
            }
            Ok(Command::VmRun {
                module,
                mem_mib,
                vcpus,
                initrd,
                cmdline,
                paravirt,
                devices: devices.unwrap_or_default(),
            })
        }
        Some("list") => no_more("vm list", words).map(|_| Command::VmList),
        Some("create") => {
            const CREATE_USAGE: &str = "vm create <name> kernel=<file> | firmware=<file> \
                                        [initrd=<file>] [cmdline=\"…\"] [mem=<MiB>] [vcpus=<n>] \
                                        [disk=<file>[,ro] | disk=partition:<name>[,ro] …] \
                                        [nic=bridged|internal[,mac=<mac>] …] \
                                        [paravirt=kvm|none] \
                                        [devices=debug-exit,pc-testdev] [autostart]";
            let name = vm_key(words.next(), CREATE_USAGE)?;
            let (mut kernel, mut firmware, mut initrd, mut cmdline, mut mem_mib, mut vcpus) =
                (None, None, None, None, None, None);
            let mut disks = [None; MAX_VM_DISKS];
            let mut disk_count = 0;
            let mut nics = [None; MAX_VM_NICS];
            let mut nic_count = 0;
            let mut autostart = false;
            let mut paravirt = None;
            let mut devices = None;
            for arg in words {
                let duplicate = ParseError::BadValue {
                    argument: arg,
                    expected: "each of kernel=, firmware=, initrd=, cmdline=, mem=, vcpus=, \
                               paravirt=, devices= and autostart at most once",
                };
                let empty = |what: &'static str| ParseError::BadValue {
                    argument: arg,
                    expected: what,
                };
                if let Some(v) = arg.strip_prefix("kernel=") {
                    if v.is_empty() {
                        return Err(empty("kernel=<file>, a guest store file"));
                    }
                    if kernel.replace(v).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("firmware=") {
                    if v.is_empty() {
                        return Err(empty("firmware=<file>, a guest store file"));
                    }
                    if firmware.replace(v).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("disk=") {
                    let disk = parse_disk(arg, v)?;
                    let slot = disks.get_mut(disk_count).ok_or(ParseError::BadValue {
                        argument: arg,
                        expected: formatcp!("at most {MAX_VM_DISKS} disks per VM"),
                    })?;
                    *slot = Some(disk);
                    disk_count += 1;
                } else if let Some(v) = arg.strip_prefix("nic=") {
                    let nic = parse_nic(arg, v)?;
                    let slot = nics.get_mut(nic_count).ok_or(ParseError::BadValue {
                        argument: arg,
                        expected: formatcp!("at most {MAX_VM_NICS} NICs per VM"),
                    })?;
                    *slot = Some(nic);
                    nic_count += 1;
                } else if let Some(v) = arg.strip_prefix("initrd=") {
                    if v.is_empty() {
                        return Err(empty("initrd=<file>, a guest store file"));
                    }
                    if initrd.replace(v).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("cmdline=") {
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    if cmdline.replace(v).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("mem=") {
                    let mib: u32 = v.parse().map_err(|_| ParseError::BadValue {
                        argument: arg,
                        expected: "mem=<MiB>, a whole number of MiB",
                    })?;
                    if mem_mib.replace(mib).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("vcpus=") {
                    if vcpus.replace(parse_vcpus(arg, v)?).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("paravirt=") {
                    if paravirt.replace(parse_paravirt(arg, v)?).is_some() {
                        return Err(duplicate);
                    }
                } else if let Some(v) = arg.strip_prefix("devices=") {
                    if devices.replace(parse_devices(arg, v)?).is_some() {
                        return Err(duplicate);
                    }
                } else if arg == "autostart" && !autostart {
                    autostart = true;
                } else {
                    return Err(ParseError::UnexpectedArgument {
                        command: "vm create",
                        argument: arg,
                    });
                }
            }
            // Both kernel= and firmware= is left to the configuration's validation, which
            // says which to drop.
            if kernel.is_none() && firmware.is_none() {
                return Err(ParseError::Missing {
                    usage: CREATE_USAGE,
                });
            }
            Ok(Command::VmCreate {
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
                devices: devices.unwrap_or_default(),
            })
        }
        Some("destroy") => {
            let name = vm_key(words.next(), "vm destroy <name>")?;
            no_more("vm destroy", words).map(|_| Command::VmDestroy { name })
        }
        Some("start") => {
            let name = vm_key(words.next(), "vm start <name>")?;
            no_more("vm start", words).map(|_| Command::VmStart { name })
        }
        Some("stop") => {
            const STOP_USAGE: &str = "vm stop <vm> [force | timeout=<s>]";
            let key = vm_key(words.next(), STOP_USAGE)?;
            let (mut force, mut timeout_s) = (false, None);
            for arg in words {
                if arg == "force" && !force && timeout_s.is_none() {
                    force = true;
                } else if let Some(v) = arg.strip_prefix("timeout=")
                    && !force
                    && timeout_s.is_none()
                {
                    let s: u32 = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=MAX_STOP_TIMEOUT_S).contains(s))
                        .ok_or(ParseError::BadValue {
                            argument: arg,
                            expected: formatcp!(
                                "timeout=<seconds>, from 1 to {MAX_STOP_TIMEOUT_S}"
                            ),
                        })?;
                    timeout_s = Some(s);
                } else {
                    return Err(ParseError::UnexpectedArgument {
                        command: "vm stop",
                        argument: arg,
                    });
                }
            }
            Ok(Command::VmStop {
                key,
                force,
                timeout_s,
            })
        }
        Some("restart") => {
            let name = vm_key(words.next(), "vm restart <name>")?;
            no_more("vm restart", words).map(|_| Command::VmRestart { name })
        }
        Some("pause") => {
            let key = vm_key(words.next(), "vm pause <vm>")?;
            no_more("vm pause", words).map(|_| Command::VmPause { key })
        }
        Some("resume") => {
            let key = vm_key(words.next(), "vm resume <vm>")?;
            no_more("vm resume", words).map(|_| Command::VmResume { key })
        }
        Some("save") => {
            let key = vm_key(words.next(), "vm save <vm> [<saved>]")?;
            let name = words
                .next()
                .map(|w| vm_key(Some(w), "vm save <vm> [<saved>]"))
                .transpose()?;
            no_more("vm save", words).map(|_| Command::VmSave { key, name })
        }
        Some("restore") => {
            let name = vm_key(words.next(), "vm restore <saved>")?;
            super::snapshot_cmds::parse_restore(name, words)
        }
        Some("snapshot") => super::snapshot_cmds::parse_take(words),
        Some("snapshots") => no_more("vm snapshots", words).map(|_| Command::VmSnapshots),
        Some("info") => {
            let key = vm_key(words.next(), "vm info <vm>")?;
            no_more("vm info", words).map(|_| Command::VmInfo { key })
        }
        Some("console") => {
            let key = vm_key(words.next(), "vm console <vm>")?;
            no_more("vm console", words).map(|_| Command::VmConsole { key })
        }
        Some("log") => {
            let key = vm_key(words.next(), "vm log <vm>")?;
            no_more("vm log", words).map(|_| Command::VmLog { key })
        }
        Some("migrate") => {
            const MIGRATE_USAGE: &str = "vm migrate <vm> <host>[:<port>]";
            let key = vm_key(words.next(), MIGRATE_USAGE)?;
            let target = words.next().ok_or(ParseError::Missing {
                usage: MIGRATE_USAGE,
            })?;
            let (host, port) = match target.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (target, None),
            };
            let host = host.parse().map_err(|_| ParseError::BadValue {
                argument: target,
                expected: "the destination's IPv4 address on the migration link, as a.b.c.d[:port]",
            })?;
            let port = match port {
                None => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(
                    ParseError::BadValue {
                        argument: target,
                        expected: "a port from 1 to 65535 after the ':'",
                    },
                )?),
            };
            no_more("vm migrate", words).map(|_| Command::VmMigrate { key, host, port })
        }
        Some("dirty-log") => {
            const DIRTY_USAGE: &str = "vm dirty-log <vm> start|pages|stop";
            let key = vm_key(words.next(), DIRTY_USAGE)?;
            let action = match words.next() {
                Some("start") => DirtyLogAction::Start,
                Some("pages") => DirtyLogAction::Pages,
                Some("stop") => DirtyLogAction::Stop,
                Some(other) => {
                    return Err(ParseError::BadValue {
                        argument: other,
                        expected: "start, pages or stop",
                    });
                }
                None => return Err(ParseError::Missing { usage: DIRTY_USAGE }),
            };
            no_more("vm dirty-log", words).map(|_| Command::VmDirtyLog { key, action })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "list, create, destroy, start, stop, restart, pause, resume, save, \
                       restore, snapshot, snapshots, info, console, log, migrate, dirty-log or run",
        }),
        None => Err(ParseError::Missing { usage: USAGE }),
    }
}

fn parse_store<'a>(
    line: &'a str,
    mut words: impl Iterator<Item = &'a str>,
) -> Result<Command<'a>, ParseError<'a>> {
    const USAGE: &str = "store ls | store sum <name>";
    match words.next() {
        Some("ls") => no_more("store ls", words).map(|_| Command::StoreLs),
        Some("sum") => {
            // Everything after `sum`, so that names with spaces work.
            let name = line
                .trim_start()
                .strip_prefix("store")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix("sum"))
                .map(str::trim)
                .unwrap_or("");
            if name.is_empty() {
                return Err(ParseError::Missing {
                    usage: "store sum <name>",
                });
            }
            Ok(Command::StoreSum { name })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "ls or sum",
        }),
        None => Err(ParseError::Missing { usage: USAGE }),
    }
}

fn parse_saved<'a>(
    mut words: impl Iterator<Item = &'a str>,
) -> Result<Command<'a>, ParseError<'a>> {
    match words.next() {
        Some("ls") => no_more("saved ls", words).map(|_| Command::SavedLs),
        Some("rm") => {
            let name = vm_key(words.next(), "saved rm <saved>")?;
            no_more("saved rm", words).map(|_| Command::SavedRm { name })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "ls or rm",
        }),
        None => Err(ParseError::Missing {
            usage: "saved ls | saved rm <saved>",
        }),
    }
}

/// The `COMMANDS` entries `help <topic>` shows: those whose usage starts with the topic's
/// words (`vm` matches every `vm …` command, `vm stop` just that one).
pub fn help_entries(
    topic: &str,
) -> impl Iterator<Item = &'static (&'static str, &'static str)> + '_ {
    COMMANDS.iter().filter(move |(usage, _)| {
        let mut usage_words = usage.split_ascii_whitespace();
        topic
            .split_ascii_whitespace()
            .all(|w| usage_words.next() == Some(w))
    })
}

fn parse_config<'a>(mut words: Words<'a>) -> Result<Command<'a>, ParseError<'a>> {
    const USAGE: &str = "config show | config set <path> <value> | config diff | config save | \
                         config revert";
    const SET_USAGE: &str = "config set <path> <value> (e.g. config set hostname web1)";
    match words.next() {
        Some("show") => no_more("config show", words).map(|_| Command::ConfigShow),
        Some("diff") => no_more("config diff", words).map(|_| Command::ConfigDiff),
        Some("save") => no_more("config save", words).map(|_| Command::ConfigSave),
        Some("revert") => no_more("config revert", words).map(|_| Command::ConfigRevert),
        Some("set") => {
            let path = words
                .next()
                .ok_or(ParseError::Missing { usage: SET_USAGE })?;
            // The rest of the line, so that JSON with spaces (`{"a": 1}`) and unquoted text
            // with spaces (`console=ttyS0 quiet`) stay whole.
            let value = words.rest.trim();
            if value.is_empty() {
                return Err(ParseError::Missing { usage: SET_USAGE });
            }
            Ok(Command::ConfigSet { path, value })
        }
        Some(other) => Err(ParseError::BadValue {
            argument: other,
            expected: "show, set, diff, save or revert",
        }),
        None => Err(ParseError::Missing { usage: USAGE }),
    }
}

/// Parses a line; `Ok(None)` for a blank line.
pub fn parse(line: &str) -> Result<Option<Command<'_>>, ParseError<'_>> {
    if !line.matches('"').count().is_multiple_of(2) {
        return Err(ParseError::BadValue {
            argument: line.trim(),
            expected: "a closing '\"'",
        });
    }
    let mut words = Words { rest: line };
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let simple = match name {
        "help" => {
            let topic = line.trim_start().strip_prefix("help").map(str::trim);
            let topic = topic.filter(|t| !t.is_empty());
            if let Some(t) = topic
                && help_entries(t).next().is_none()
            {
                return Err(ParseError::Unknown(t));
            }
            return Ok(Some(Command::Help { topic }));
        }
        "version" => Command::Version,
        "system" => Command::System,
        "mem" => Command::Mem,
        "cpus" => Command::Cpus,
        "modules" => Command::Modules,
        "net" => Command::Net,
        "pci" => Command::Pci,
        "disk" => return super::disk_cmds::parse(words).map(Some),
        "reboot" => Command::Reboot,
        "poweroff" => Command::Poweroff,
        "vm" => return parse_vm(words).map(Some),
        "store" => return parse_store(line, words).map(Some),
        "saved" => return parse_saved(words).map(Some),
        "snapshot" => return super::snapshot_cmds::parse(words).map(Some),
        "config" => return parse_config(words).map(Some),
        other => return Err(ParseError::Unknown(other)),
    };
    let command = COMMANDS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == name)
        .unwrap_or("command");
    no_more(command, words)?;
    Ok(Some(simple))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_parse() {
        for (line, command) in [
            ("help", Command::Help { topic: None }),
            (" version ", Command::Version),
            ("system", Command::System),
            ("mem", Command::Mem),
            ("cpus", Command::Cpus),
            ("modules", Command::Modules),
            ("net", Command::Net),
            ("pci", Command::Pci),
            ("reboot", Command::Reboot),
            ("poweroff", Command::Poweroff),
        ] {
            assert_eq!(parse(line), Ok(Some(command)));
        }
    }

    #[test]
    fn help_takes_a_topic() {
        assert_eq!(
            parse("help vm stop"),
            Ok(Some(Command::Help {
                topic: Some("vm stop")
            }))
        );
        assert_eq!(help_entries("vm stop").count(), 1);
        assert!(help_entries("vm").count() >= 7);
        assert_eq!(help_entries("poweroff").count(), 1);
        assert_eq!(parse("help frob"), Err(ParseError::Unknown("frob")));
        assert_eq!(
            std::format!("{}", parse("help vm frob").unwrap_err()),
            "unknown command 'vm frob': type 'help' for the list of commands"
        );
    }

    #[test]
    fn vm_run_and_create_take_test_devices() {
        let Ok(Some(Command::VmRun { devices, .. })) =
            parse("vm run x86-apic.flat initrd=env devices=pc-testdev,debug-exit")
        else {
            panic!("vm run with devices= did not parse");
        };
        assert_eq!(
            devices.to_vec(),
            std::vec![VmDevice::PcTestdev, VmDevice::DebugExit]
        );
        let Ok(Some(Command::VmCreate { devices, .. })) =
            parse("vm create t kernel=k devices=debug-exit")
        else {
            panic!("vm create with devices= did not parse");
        };
        assert_eq!(devices.to_vec(), std::vec![VmDevice::DebugExit]);
        for bad in [
            "devices=",
            "devices=vga",
            "devices=debug-exit,debug-exit",
            "devices=debug-exit,pc-testdev,debug-exit",
        ] {
            assert_eq!(
                std::format!("{}", parse(&std::format!("vm run k {bad}")).unwrap_err()),
                std::format!(
                    "bad argument '{bad}': expected devices=debug-exit,pc-testdev (either or \
                     both, each once)"
                )
            );
        }
    }

    #[test]
    fn vm_commands_parse() {
        assert_eq!(
            parse("vm run hello.bin"),
            Ok(Some(Command::VmRun {
                module: "hello.bin",
                mem_mib: None,
                vcpus: None,
                initrd: None,
                cmdline: None,
                paravirt: None,
                devices: TestDevices::default(),
            }))
        );
        assert_eq!(
            parse("vm run 0 mem=32"),
            Ok(Some(Command::VmRun {
                module: "0",
                mem_mib: Some(32),
                vcpus: None,
                initrd: None,
                cmdline: None,
                paravirt: None,
                devices: TestDevices::default(),
            }))
        );
        assert_eq!(
            parse(r#"vm run vmlinuz initrd=initrd.cpio cmdline="console=ttyS0 quiet" mem=128"#),
            Ok(Some(Command::VmRun {
                module: "vmlinuz",
                mem_mib: Some(128),
                vcpus: None,
                initrd: Some("initrd.cpio"),
                cmdline: Some("console=ttyS0 quiet"),
                paravirt: None,
                devices: TestDevices::default(),
            }))
        );
        assert_eq!(
            parse("vm run vmlinuz cmdline=panic=1"),
            Ok(Some(Command::VmRun {
                module: "vmlinuz",
                mem_mib: None,
                vcpus: None,
                initrd: None,
                cmdline: Some("panic=1"),
                paravirt: None,
                devices: TestDevices::default(),
            }))
        );
        assert_eq!(
            std::format!("{}", parse(r#"vm run k cmdline="a b"#).unwrap_err()),
            r#"bad argument 'vm run k cmdline="a b': expected a closing '"'"#
        );
        assert_eq!(
            std::format!("{}", parse("vm run k mem=32 mem=64").unwrap_err()),
            "bad argument 'mem=64': expected each of mem=, vcpus=, initrd=, cmdline=, paravirt= and devices= at most once"
        );
        assert_eq!(
            parse("vm run k paravirt=none"),
            Ok(Some(Command::VmRun {
                module: "k",
                mem_mib: None,
                vcpus: None,
                initrd: None,
                cmdline: None,
                paravirt: Some(Paravirt::None),
                devices: TestDevices::default(),
            }))
        );
        assert_eq!(
            std::format!("{}", parse("vm run k paravirt=hyperv").unwrap_err()),
            "bad argument 'paravirt=hyperv': expected paravirt=kvm or paravirt=none"
        );
        assert_eq!(
            parse("vm run k vcpus=2"),
            Ok(Some(Command::VmRun {
                module: "k",
                mem_mib: None,
                vcpus: Some(2),
                initrd: None,
                cmdline: None,
                paravirt: None,
                devices: TestDevices::default(),
            }))
        );
        for bad in ["vcpus=0", "vcpus=9", "vcpus=", "vcpus=two", "vcpus=-1"] {
            assert_eq!(
                std::format!("{}", parse(&std::format!("vm run k {bad}")).unwrap_err()),
                std::format!(
                    "bad argument '{bad}': expected vcpus=<n>, a whole number from 1 to 8"
                )
            );
        }
        assert_eq!(
            std::format!("{}", parse("vm run k vcpus=2 vcpus=2").unwrap_err()),
            "bad argument 'vcpus=2': expected each of mem=, vcpus=, initrd=, cmdline=, paravirt= and devices= at most once"
        );
        assert_eq!(
            std::format!("{}", parse("vm run k initrd=").unwrap_err()),
            "bad argument 'initrd=': expected initrd=<module>, a module index or name"
        );
        assert_eq!(
            parse("vm save web"),
            Ok(Some(Command::VmSave {
                key: "web",
                name: None
            }))
        );
        assert_eq!(
            parse("vm save 3 before-upgrade"),
            Ok(Some(Command::VmSave {
                key: "3",
                name: Some("before-upgrade")
            }))
        );
        assert_eq!(
            std::format!("{}", parse("vm save web Bad").unwrap_err()),
            "bad argument 'Bad': expected a VM name or number, as 'vm list' shows"
        );
        assert_eq!(
            std::format!("{}", parse("vm save web a b").unwrap_err()),
            "'vm save' does not take 'b'; type 'help'"
        );
        assert_eq!(
            parse("vm restore web"),
            Ok(Some(Command::VmRestore { name: "web" }))
        );
        assert_eq!(parse("saved ls"), Ok(Some(Command::SavedLs)));
        assert_eq!(
            parse("saved rm web"),
            Ok(Some(Command::SavedRm { name: "web" }))
        );
        assert_eq!(
            std::format!("{}", parse("saved").unwrap_err()),
            "usage: saved ls | saved rm <saved>"
        );
        assert_eq!(parse("vm list"), Ok(Some(Command::VmList)));
        assert_eq!(
            parse("vm stop 3"),
            Ok(Some(Command::VmStop {
                key: "3",
                force: false,
                timeout_s: None
            }))
        );
        assert_eq!(
            parse("vm stop web force"),
            Ok(Some(Command::VmStop {
                key: "web",
                force: true,
                timeout_s: None
            }))
        );
        assert_eq!(
            parse("vm stop web timeout=5"),
            Ok(Some(Command::VmStop {
                key: "web",
                force: false,
                timeout_s: Some(5)
            }))
        );
        assert_eq!(parse("vm log 12"), Ok(Some(Command::VmLog { key: "12" })));
        assert_eq!(
            parse("vm dirty-log 3 pages"),
            Ok(Some(Command::VmDirtyLog {
                key: "3",
                action: DirtyLogAction::Pages
            }))
        );
        assert_eq!(
            parse("vm migrate web 10.77.0.2:7071"),
            Ok(Some(Command::VmMigrate {
                key: "web",
                host: core::net::Ipv4Addr::new(10, 77, 0, 2),
                port: Some(7071)
            }))
        );
        assert_eq!(
            parse("vm migrate 1 10.77.0.2"),
            Ok(Some(Command::VmMigrate {
                key: "1",
                host: core::net::Ipv4Addr::new(10, 77, 0, 2),
                port: None
            }))
        );
        assert!(parse("vm migrate 1 host.example").is_err());
        assert!(parse("vm migrate 1 10.77.0.2:0").is_err());
        assert!(parse("vm migrate 1").is_err());
        assert!(parse("vm dirty-log 3").is_err());
        assert!(parse("vm dirty-log 3 harvest").is_err());
        assert!(parse("vm dirty-log 3 stop now").is_err());
        assert_eq!(
            parse("vm start web-1"),
            Ok(Some(Command::VmStart { name: "web-1" }))
        );
        assert_eq!(
            parse("vm restart db"),
            Ok(Some(Command::VmRestart { name: "db" }))
        );
        assert_eq!(parse("vm info db"), Ok(Some(Command::VmInfo { key: "db" })));
        assert_eq!(
            parse("vm pause web"),
            Ok(Some(Command::VmPause { key: "web" }))
        );
        assert_eq!(parse("vm pause 3"), Ok(Some(Command::VmPause { key: "3" })));
        assert_eq!(
            parse(" vm  resume  web "),
            Ok(Some(Command::VmResume { key: "web" }))
        );
        assert_eq!(
            std::format!("{}", parse("vm pause").unwrap_err()),
            "usage: vm pause <vm>"
        );
        assert_eq!(
            std::format!("{}", parse("vm resume").unwrap_err()),
            "usage: vm resume <vm>"
        );
        assert_eq!(
            std::format!("{}", parse("vm pause web now").unwrap_err()),
            "'vm pause' does not take 'now'; type 'help'"
        );
        assert_eq!(
            std::format!("{}", parse("vm resume Web").unwrap_err()),
            "bad argument 'Web': expected a VM name or number, as 'vm list' shows"
        );
        assert_eq!(help_entries("vm pause").count(), 1);
        assert_eq!(help_entries("vm resume").count(), 1);
        assert_eq!(
            parse("vm console 2"),
            Ok(Some(Command::VmConsole { key: "2" }))
        );
        for bad in [
            "vm stop Web",
            "vm stop web force timeout=3",
            "vm stop web timeout=0",
            "vm stop web now",
            "vm start -x",
            "vm info web extra",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(
            std::format!("{}", parse("vm start Web").unwrap_err()),
            "bad argument 'Web': expected a VM name or number, as 'vm list' shows"
        );
    }

    #[test]
    fn store_commands_parse() {
        assert_eq!(parse("store ls"), Ok(Some(Command::StoreLs)));
        assert_eq!(
            parse("  store   sum  vmlinuz-6.1 "),
            Ok(Some(Command::StoreSum {
                name: "vmlinuz-6.1"
            }))
        );
        assert_eq!(
            parse("store sum a name with spaces.bin"),
            Ok(Some(Command::StoreSum {
                name: "a name with spaces.bin"
            }))
        );
        assert!(matches!(parse("store"), Err(ParseError::Missing { .. })));
        assert!(matches!(
            parse("store sum"),
            Err(ParseError::Missing { .. })
        ));
        assert!(matches!(
            parse("store ls x"),
            Err(ParseError::UnexpectedArgument { .. })
        ));
        assert!(matches!(
            parse("store rm x"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse("disk 1"),
            Err(ParseError::BadValue { argument: "1", .. })
        ));
    }

    #[test]
    fn config_commands_parse() {
        assert_eq!(parse("config show"), Ok(Some(Command::ConfigShow)));
        assert_eq!(parse(" config  diff "), Ok(Some(Command::ConfigDiff)));
        assert_eq!(parse("config save"), Ok(Some(Command::ConfigSave)));
        assert_eq!(parse("config revert"), Ok(Some(Command::ConfigRevert)));
        assert_eq!(
            parse("config set hostname web1"),
            Ok(Some(Command::ConfigSet {
                path: "hostname",
                value: "web1"
            }))
        );
        assert_eq!(
            parse(r#"config set vms[0].cmdline "console=ttyS0 quiet"  "#),
            Ok(Some(Command::ConfigSet {
                path: "vms[0].cmdline",
                value: r#""console=ttyS0 quiet""#
            }))
        );
        assert_eq!(
            parse(r#"config set vms[0] {"name": "web", "memory_mib": 256, "kernel": "k"}"#),
            Ok(Some(Command::ConfigSet {
                path: "vms[0]",
                value: r#"{"name": "web", "memory_mib": 256, "kernel": "k"}"#
            }))
        );
        assert_eq!(
            parse("config set vms[0].cmdline console=ttyS0 quiet"),
            Ok(Some(Command::ConfigSet {
                path: "vms[0].cmdline",
                value: "console=ttyS0 quiet"
            }))
        );
        assert!(matches!(parse("config"), Err(ParseError::Missing { .. })));
        assert!(matches!(
            parse("config set"),
            Err(ParseError::Missing { .. })
        ));
        assert!(matches!(
            parse("config set hostname"),
            Err(ParseError::Missing { .. })
        ));
        assert!(matches!(
            parse("config show all"),
            Err(ParseError::UnexpectedArgument { .. })
        ));
        assert_eq!(
            std::format!("{}", parse("config load").unwrap_err()),
            "bad argument 'load': expected show, set, diff, save or revert"
        );
        assert!(matches!(
            parse(r#"config set hostname "web"#),
            Err(ParseError::BadValue { .. })
        ));
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(
            std::format!("{}", parse("foo bar").unwrap_err()),
            "unknown command 'foo': type 'help' for the list of commands"
        );
        assert_eq!(
            parse("mem now"),
            Err(ParseError::UnexpectedArgument {
                command: "mem",
                argument: "now"
            })
        );
        assert!(matches!(parse("vm"), Err(ParseError::Missing { .. })));
        assert!(matches!(parse("vm run"), Err(ParseError::Missing { .. })));
        assert!(matches!(
            parse("vm run x mem=abc"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse("vm run x mem=3"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse("vm run x mem=0"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse("vm run x size=3"),
            Err(ParseError::UnexpectedArgument { .. })
        ));
        assert!(matches!(parse("vm stop"), Err(ParseError::Missing { .. })));
        assert!(matches!(
            parse("vm stop X"),
            Err(ParseError::BadValue { .. })
        ));
        assert!(matches!(
            parse("vm stop 1 2"),
            Err(ParseError::UnexpectedArgument { .. })
        ));
        assert!(matches!(parse("vm frob"), Err(ParseError::BadValue { .. })));
    }

    /// `vm create`'s arguments as they parse, with the fields not under test at their
    /// defaults.
    fn create<'a>(line: &'a str) -> Result<Command<'a>, ParseError<'a>> {
        parse(line).map(|c| c.expect("a command"))
    }

    #[test]
    fn vm_create_takes_paravirt() {
        let Ok(Command::VmCreate { paravirt, .. }) =
            create("vm create plain kernel=vmlinuz paravirt=none")
        else {
            panic!("vm create did not parse");
        };
        assert_eq!(paravirt, Some(Paravirt::None));
        let Ok(Command::VmCreate { paravirt, .. }) = create("vm create web kernel=vmlinuz") else {
            panic!("vm create did not parse");
        };
        assert_eq!(paravirt, None, "the configuration's default (kvm) applies");
        assert_eq!(
            std::format!(
                "{}",
                create("vm create w kernel=k paravirt=kvm paravirt=none").unwrap_err()
            ),
            "bad argument 'paravirt=none': expected each of kernel=, firmware=, initrd=, \
             cmdline=, mem=, vcpus=, paravirt=, devices= and autostart at most once"
        );
    }

    #[test]
    fn vm_create_takes_disks_and_a_firmware() {
        let Ok(Command::VmCreate {
            name,
            kernel,
            firmware,
            disks,
            ..
        }) = create(
            "vm create web kernel=vmlinuz disk=root.img,serial=web-01 disk=partition:big,ro \
             disk=iso.img,ro,serial=cd",
        )
        else {
            panic!("vm create did not parse");
        };
        assert_eq!((name, kernel, firmware), ("web", Some("vmlinuz"), None));
        let given: std::vec::Vec<DiskArg<'_>> = disks.iter().flatten().copied().collect();
        assert_eq!(
            given,
            [
                DiskArg {
                    source: DiskSource::File("root.img"),
                    readonly: false,
                    serial: Some("web-01"),
                },
                DiskArg {
                    source: DiskSource::Partition("big"),
                    readonly: true,
                    serial: None,
                },
                DiskArg {
                    source: DiskSource::File("iso.img"),
                    readonly: true,
                    serial: Some("cd"),
                },
            ]
        );
        let Ok(Command::VmCreate {
            kernel, firmware, ..
        }) = create("vm create deb firmware=hypervisor-fw disk=debian.img")
        else {
            panic!("vm create with a firmware did not parse");
        };
        assert_eq!((kernel, firmware), (None, Some("hypervisor-fw")));
        // Neither kernel nor firmware: the usage.
        assert!(matches!(
            create("vm create web disk=a.img"),
            Err(ParseError::Missing { .. })
        ));
        // Eight disks fit, a ninth does not.
        let eight = "vm create w kernel=k disk=1 disk=2 disk=3 disk=4 disk=5 disk=6 disk=7 disk=8";
        assert!(create(eight).is_ok());
        let nine = std::format!("{eight} disk=9");
        assert_eq!(
            std::format!("{}", create(&nine).unwrap_err()),
            "bad argument 'disk=9': expected at most 8 disks per VM"
        );
        for bad in [
            "disk=",
            "disk=partition:",
            "disk=a.img,rw",
            "disk=a.img,ro,ro",
            "disk=a.img,serial=1,serial=2",
            "disk=,ro",
        ] {
            let line = std::format!("vm create w kernel=k {bad}");
            let message = std::format!("{}", create(&line).unwrap_err());
            assert!(
                message.starts_with(&std::format!("bad argument '{bad}': expected disk=<file>")),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            std::format!("{}", create("vm create w firmware=").unwrap_err()),
            "bad argument 'firmware=': expected firmware=<file>, a guest store file"
        );
    }

    #[test]
    fn vm_create_takes_nics() {
        let Ok(Command::VmCreate { nics, disks, .. }) = create(
            "vm create web kernel=vmlinuz nic=bridged disk=root.img \
             nic=internal,mac=52:54:00:AA:bb:cc nic=bridged",
        ) else {
            panic!("vm create with NICs did not parse");
        };
        let given: std::vec::Vec<NicArg> = nics.iter().flatten().copied().collect();
        assert_eq!(
            given,
            [
                NicArg {
                    network: NicNetwork::Bridged,
                    mac: None,
                },
                NicArg {
                    network: NicNetwork::Internal,
                    mac: Some(MacAddress([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc])),
                },
                NicArg {
                    network: NicNetwork::Bridged,
                    mac: None,
                },
            ]
        );
        assert_eq!(disks.iter().flatten().count(), 1);
        // Four NICs fit, a fifth does not.
        let four = "vm create w kernel=k nic=bridged nic=bridged nic=internal nic=internal";
        assert!(create(four).is_ok());
        let five = std::format!("{four} nic=bridged");
        assert_eq!(
            std::format!("{}", create(&five).unwrap_err()),
            "bad argument 'nic=bridged': expected at most 4 NICs per VM"
        );
        assert_eq!(
            std::format!("{}", create("vm create w kernel=k nic=nat").unwrap_err()),
            "bad argument 'nic=nat': expected nic=bridged[,mac=<mac>] or \
             nic=internal[,mac=<mac>]"
        );
        assert_eq!(
            std::format!(
                "{}",
                create("vm create w kernel=k nic=bridged,mac=52:54:00:aa:bb").unwrap_err()
            ),
            "bad argument 'nic=bridged,mac=52:54:00:aa:bb': expected nic=bridged[,mac=<mac>] \
             or nic=internal[,mac=<mac>], <mac> six hex pairs such as 52:54:00:12:34:56"
        );
        for bad in [
            "nic=",
            "nic=Bridged",
            "nic=bridged,",
            "nic=bridged,ro",
            "nic=internal,mac=",
            "nic=internal,mac=02:00:00:00:00:01,mac=02:00:00:00:00:02",
            "nic=,mac=02:00:00:00:00:01",
        ] {
            let line = std::format!("vm create w kernel=k {bad}");
            let message = std::format!("{}", create(&line).unwrap_err());
            assert!(
                message.starts_with(&std::format!(
                    "bad argument '{bad}': expected nic=bridged[,mac=<mac>]"
                )),
                "{bad}: {message}"
            );
        }
        // A multicast MAC parses: the configuration's validation refuses it, naming the NIC.
        assert!(create("vm create w kernel=k nic=bridged,mac=01:00:5e:00:00:01").is_ok());
    }
}
