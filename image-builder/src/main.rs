//! `keel`: build the Keel image, boot it in QEMU, decode its diagnostics.
//!
//! A thin clap front end over the `keel_image` library; see its docs for what each step does.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keel_image::run::{Firmware, Machine, RunOptions};
use keel_image::{BuildOptions, DemoStatus, Profile};

#[derive(Parser)]
#[command(
    name = "keel",
    version,
    about = "Build, boot and inspect the Keel appliance image"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile the kernel and write target/keel/keel.img (GPT, boots on BIOS and UEFI).
    Build(BuildArgs),
    /// Build, then boot the image in QEMU with the terminal on COM1.
    Run(RunArgs),
    /// Decode a captured COM2 stream (defmt frames) with the kernel ELF.
    Logs(LogsArgs),
    /// Write an image to a disk, USB stick or file: checks the target, asks, writes, reads
    /// back and verifies; --config/--hostname/--token personalize the copy.
    Flash(keel_image::flash::FlashArgs),
    /// Show a running appliance: hostname, version, CPUs, memory, VMs (over its API).
    Status(keel_image::client::StatusArgs),
    /// Manage a running appliance's VMs over its API.
    Vm(keel_image::client::VmArgs),
    /// Read and change a running appliance's configuration over its API.
    Config(keel_image::client::ConfigArgs),
    /// Look at a running appliance's guest store over its API.
    Store(keel_image::client::StoreArgs),
    /// Many appliances from one inventory (~/.config/keel/fleet.toml or --fleet FILE):
    /// status, VMs, placement, configuration.
    Fleet(keel_image::fleet::commands::FleetArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// Add a Multiboot2 module; its file name becomes its name (repeatable).
    #[arg(long = "module", value_name = "FILE")]
    modules: Vec<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// The serial port of the operator console (and GRUB's menu): ttyS0..ttyS3 (COM1..COM4)
    /// or uart,io,0x<port>, optionally with ,<baud> (e.g. ttyS1,115200 for IPMI
    /// serial-over-LAN on COM2); without it the kernel uses the ACPI SPCR port, else COM1.
    #[arg(long, value_name = "PORT[,BAUD]", value_parser = parse_console)]
    console: Option<keel_image::console::ConsoleOption>,
    /// Copy every regular file of DIR into the guest store partition (keel-store).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Make a guest disk (repeatable): NAME=SIZE is an empty, fully allocated image file NAME
    /// in the guest store (SIZE like 64M or 1G, whole 512-byte sectors, below 4 GiB: a FAT
    /// file's limit); NAME=SIZE,partition is a guest-disk GPT partition NAME after the store
    /// (whole MiB, any size). VMs name them in `[[vms.disks]]` as `file = "NAME"` or
    /// `partition = "NAME"`.
    #[arg(long = "disk", value_name = "NAME=SIZE[,partition]", value_parser = parse_disk)]
    disks: Vec<keel_image::DiskRequest>,
    /// Put a guest firmware (rust-hypervisor-firmware's ELF, see README.md) into the guest
    /// store as `hypervisor-fw`, for VMs with `firmware = "hypervisor-fw"`.
    #[arg(long, value_name = "FILE")]
    firmware: Option<PathBuf>,
    /// Appliance configuration (TOML, see config/appliance.example.toml) to store in the
    /// image's configuration partition [default: built-in defaults plus the API token].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Leave out the demo VM. Without --config and --store, the image otherwise gets
    /// config/demo.toml: a Linux VM `demo` (Debian's kernel and busybox, downloaded with apt
    /// into target/linux-guest/ the first time) that starts at boot.
    #[arg(long)]
    no_demo: bool,
    /// Build the kernel with the dev profile instead of --release.
    #[arg(long)]
    debug: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    Q35,
    Pc,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Boot with SeaBIOS (the default).
    #[arg(long, conflicts_with = "uefi")]
    bios: bool,
    /// Boot with OVMF (UEFI).
    #[arg(long)]
    uefi: bool,
    /// QEMU machine type.
    #[arg(long, value_enum, default_value = "q35")]
    machine: MachineArg,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    mem: u32,
    /// Number of CPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Host port on 127.0.0.1 forwarded to the appliance's HTTPS port 443.
    #[arg(long, default_value_t = 8080, conflicts_with = "no_net")]
    http_port: u16,
    /// Attach no network card.
    #[arg(long)]
    no_net: bool,
    /// Extra QEMU arguments, after `--`.
    #[arg(last = true, value_name = "QEMU_ARGS")]
    qemu_args: Vec<OsString>,
}

#[derive(Args)]
struct LogsArgs {
    /// The captured COM2 stream (`-` for stdin), e.g. target/keel/com2.log.
    file: PathBuf,
    /// The kernel ELF holding the defmt table [default: target/keel/keel.elf].
    #[arg(long)]
    elf: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build(args) => build(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Run(args) => run(args),
        Cmd::Logs(args) => logs(&args),
        Cmd::Flash(args) => flash(&args),
        Cmd::Status(args) => client_command(keel_image::client::run_status(&args)),
        Cmd::Vm(args) => client_command(keel_image::client::run_vm(&args)),
        Cmd::Config(args) => client_command(keel_image::client::run_config(&args)),
        Cmd::Store(args) => client_command(keel_image::client::run_store(&args)),
        Cmd::Fleet(args) => keel_image::fleet::commands::run(args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("keel: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An API client command's outcome; its error's text goes after `keel: error: `.
fn client_command(
    result: Result<(), keel_image::client::CommandError>,
) -> Result<ExitCode, String> {
    result
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| e.to_string())
}

/// clap's parser of `--console`: the message is the whole error.
fn parse_console(arg: &str) -> Result<keel_image::console::ConsoleOption, String> {
    keel_image::console::parse_console_option(arg).map_err(|e| e.to_string())
}

/// clap's parser of `--disk`: the message is the whole error.
fn parse_disk(arg: &str) -> Result<keel_image::DiskRequest, String> {
    keel_image::guest_disks::parse_disk_arg(arg).map_err(|e| e.to_string())
}

fn build(args: &BuildArgs) -> Result<keel_image::BuildOutput, String> {
    let opts = BuildOptions {
        modules: args.modules.clone(),
        cmdline: match &args.console {
            Some(console) => keel_image::console::with_console(&args.cmdline, console),
            None => args.cmdline.clone(),
        },
        store: args.store.clone(),
        quiet: args.quiet,
        config: args.config.clone(),
        demo: !args.no_demo,
        disks: args.disks.clone(),
        firmware: args.firmware.clone(),
    };
    let profile = if args.debug {
        Profile::Debug
    } else {
        Profile::Release
    };
    let built = keel_image::build_with_profile(&opts, profile).map_err(|e| e.to_string())?;
    match &built.demo {
        DemoStatus::Unavailable { reason } => eprintln!("{}", demo_unavailable(reason)),
        DemoStatus::Included { .. } if !args.quiet => eprintln!(
            "keel: the VM `demo` starts at boot: `vm list` shows it, `vm console demo` \
             attaches (Ctrl-] detaches); --no-demo leaves it out"
        ),
        _ => {}
    }
    Ok(built)
}

/// The warning when the demo VM could not be made: what happened, that the image boots
/// anyway, and how to fix or silence it.
fn demo_unavailable(reason: &str) -> String {
    format!(
        "keel: warning: the image has no demo VM: {reason}\n\
         keel: the appliance boots without it (no VMs defined). The demo needs Debian's apt and \
         network access once: `apt-get download` of linux-image-6.1.0-*-amd64 and \
         busybox-static into target/linux-guest/ (on a fresh machine run `sudo apt-get update` \
         first). Fix that and run again, or pass --no-demo to build without the demo."
    )
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let built = build(&args.build)?;
    let opts = RunOptions {
        firmware: if args.uefi {
            Firmware::Uefi
        } else {
            Firmware::Bios
        },
        machine: match args.machine {
            MachineArg::Q35 => Machine::Q35,
            MachineArg::Pc => Machine::Pc,
        },
        mem_mib: args.mem,
        smp: args.smp,
        http_port: (!args.no_net).then_some(args.http_port),
        extra_args: args.qemu_args,
    };
    let com2 = keel_image::output_dir().join("com2.log");
    if let Some(port) = opts.http_port {
        eprintln!(
            "keel: API: curl -H 'Authorization: Bearer {}' http://127.0.0.1:{port}/api/v1/system",
            built.api_token
        );
    }
    let status =
        keel_image::run::run_qemu(&opts, &built.image, &com2).map_err(|e| e.to_string())?;
    // GRUB clears the screen, so the warning printed before the boot is gone by now.
    if let DemoStatus::Unavailable { reason } = &built.demo {
        eprintln!("{}", demo_unavailable(reason));
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn logs(args: &LogsArgs) -> Result<ExitCode, String> {
    let elf = args
        .elf
        .clone()
        .unwrap_or_else(|| keel_image::output_dir().join("keel.elf"));
    let stream = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        buf
    } else {
        std::fs::read(&args.file)
            .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?
    };
    let text = keel_image::decode_defmt(&elf, &stream).map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn flash(args: &keel_image::flash::FlashArgs) -> Result<ExitCode, String> {
    let report = keel_image::flash::flash(args).map_err(|e| e.to_string())?;
    let total = report.write_time + report.verify_time;
    eprintln!(
        "keel: flashed and verified {} ({}) in {:.1} s (write + sync {:.1} s, read back {:.1} s); \
         SHA-256 {}",
        args.target.display(),
        keel_image::gpt_image::human(report.bytes),
        total.as_secs_f64(),
        report.write_time.as_secs_f64(),
        report.verify_time.as_secs_f64(),
        report.sha256
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_trailing_qemu_args() {
        let cli = Cli::try_parse_from([
            "keel",
            "run",
            "--uefi",
            "--machine",
            "pc",
            "--mem",
            "512",
            "--module",
            "a.bin",
            "--",
            "-d",
            "int",
        ])
        .unwrap();
        let Cmd::Run(args) = cli.command else {
            panic!("not run")
        };
        assert!(args.uefi && !args.bios);
        assert!(matches!(args.machine, MachineArg::Pc));
        assert_eq!(args.mem, 512);
        assert_eq!(args.build.modules, vec![PathBuf::from("a.bin")]);
        assert_eq!(
            args.qemu_args,
            vec![OsString::from("-d"), OsString::from("int")]
        );
    }

    #[test]
    fn bios_and_uefi_conflict() {
        assert!(Cli::try_parse_from(["keel", "run", "--bios", "--uefi"]).is_err());
    }

    #[test]
    fn build_flags() {
        let cli = Cli::try_parse_from([
            "keel",
            "build",
            "--module",
            "x",
            "--module",
            "y",
            "--cmdline",
            "a b",
            "--store",
            "guests",
            "--debug",
            "--config",
            "appliance.toml",
        ])
        .unwrap();
        let Cmd::Build(args) = cli.command else {
            panic!("not build")
        };
        assert_eq!(args.modules.len(), 2);
        assert_eq!(args.store.as_deref(), Some(std::path::Path::new("guests")));
        assert_eq!(args.cmdline, "a b");
        assert!(args.debug);
        assert_eq!(args.config, Some(PathBuf::from("appliance.toml")));
        assert!(!args.no_demo);
    }

    #[test]
    fn console_flag_for_build_and_flash() {
        let cli = Cli::try_parse_from([
            "keel",
            "build",
            "--cmdline",
            "quiet console=ttyS0",
            "--console",
            "ttyS1,115200",
        ])
        .unwrap();
        let Cmd::Build(args) = cli.command else {
            panic!("not build")
        };
        let console = args.console.as_ref().unwrap();
        assert_eq!(
            keel_image::console::with_console(&args.cmdline, console),
            "quiet console=ttyS1,115200"
        );
        let bad = Cli::try_parse_from(["keel", "build", "--console", "ttyS7"]);
        let message = bad.err().unwrap().to_string();
        assert!(message.contains("only ttyS0..ttyS3"), "{message}");
        let bad = Cli::try_parse_from(["keel", "flash", "img", "out", "--console", "ttyS1,100"]);
        let message = bad.err().unwrap().to_string();
        assert!(message.contains("the speed must be one of"), "{message}");
        let cli = Cli::try_parse_from(["keel", "flash", "img", "out", "--console", "ttyS1"]);
        let Cmd::Flash(args) = cli.unwrap().command else {
            panic!("not flash")
        };
        assert_eq!(args.console.unwrap().com, Some(1));
    }

    #[test]
    fn disk_and_firmware_flags() {
        let cli = Cli::try_parse_from([
            "keel",
            "build",
            "--disk",
            "data.img=64M",
            "--disk",
            "big=20G,partition",
            "--firmware",
            "hypervisor-fw",
        ])
        .unwrap();
        let Cmd::Build(args) = cli.command else {
            panic!("not build")
        };
        assert_eq!(
            args.disks,
            [
                keel_image::DiskRequest {
                    name: "data.img".into(),
                    bytes: 64 << 20,
                    partition: false
                },
                keel_image::DiskRequest {
                    name: "big".into(),
                    bytes: 20 << 30,
                    partition: true
                }
            ]
        );
        assert_eq!(args.firmware, Some(PathBuf::from("hypervisor-fw")));
        // A file disk of 4 GiB or more is refused with the way out.
        let err = Cli::try_parse_from(["keel", "build", "--disk", "big.img=5G"])
            .err()
            .expect("a 5 GiB file disk is refused")
            .to_string();
        assert!(err.contains("--disk big=5G,partition"), "{err}");
    }

    #[test]
    fn flash_takes_image_target_and_personalization() {
        let cli = Cli::try_parse_from([
            "keel",
            "flash",
            "keel.img",
            "/dev/sdb",
            "--yes",
            "--config",
            "a.toml",
            "--hostname",
            "rack1-a",
            "--token",
            "t0ken",
        ])
        .unwrap();
        let Cmd::Flash(args) = cli.command else {
            panic!("not flash")
        };
        assert_eq!(args.image, PathBuf::from("keel.img"));
        assert_eq!(args.target, PathBuf::from("/dev/sdb"));
        assert!(args.yes);
        assert_eq!(args.config, Some(PathBuf::from("a.toml")));
        assert_eq!(args.hostname.as_deref(), Some("rack1-a"));
        assert_eq!(args.token.as_deref(), Some("t0ken"));
        // Both positionals are required.
        assert!(Cli::try_parse_from(["keel", "flash", "keel.img"]).is_err());
    }

    #[test]
    fn no_demo_is_accepted_by_build_and_run() {
        for command in ["build", "run"] {
            let cli = Cli::try_parse_from(["keel", command, "--no-demo"]).unwrap();
            let args = match cli.command {
                Cmd::Build(args) => args,
                Cmd::Run(args) => args.build,
                _ => panic!("not build or run"),
            };
            assert!(args.no_demo, "{command}");
        }
    }

    #[test]
    fn the_demo_warning_says_why_that_boot_goes_on_and_how_to_fix_it() {
        let w = demo_unavailable("cannot run apt-get (Debian's apt): not found");
        assert!(
            w.starts_with(
                "keel: warning: the image has no demo VM: cannot run apt-get (Debian's apt)"
            ),
            "{w}"
        );
        assert!(w.contains("boots without it"), "{w}");
        assert!(w.contains("sudo apt-get update"), "{w}");
        assert!(w.contains("--no-demo"), "{w}");
    }
}
