//! The `keel` CLI as an API client, end to end: the real `keel` binary against one appliance
//! booted in QEMU (SeaBIOS, `-M q35`, virtio-net with `hostfwd` to 127.0.0.1 only), its guest
//! store holding `echo.bin`.
//!
//! One boot: `status`; `store ls`; `config set hostname` then `config get hostname`; a VM
//! from `vm create` through `vm list`, `vm info`, `vm start`, `vm console` (a line typed on
//! piped stdin comes back upper-cased from the echo guest, Ctrl-] detaches), `vm log`,
//! `vm stop --force` to `vm destroy`; `--json` output parses. Then every client command
//! against a bad token (the API's 401 message), an unreachable URL (the URL and why, within
//! the timeout) and an API refusal (the API's message, field paths of a 422), each with a
//! non-zero exit status.

use keel_qemu_tests::keel_cli::{console_echo_round_trip, keel_binary};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_qemu_tests::guests::{self, ECHO};
use keel_qemu_tests::http;
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts, check};

/// Builds `keel.img` into `dir` with `echo.bin` in the guest store.
fn image_with_echo(dir: &Path) -> PathBuf {
    let a = artifacts();
    let set = guests::build_guests().expect("building the test guests");
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    let path = set.path(ECHO);
    std::fs::copy(&path, store.join(path.file_name().unwrap())).unwrap();
    let image = dir.join("keel.img");
    // The `keel` client speaks plain HTTP until it pins certificates (issue 23, item 5):
    // this appliance also serves the API in clear.
    let mut config = keel_image::appliance::default_config(&a.api_token);
    config.management.http = keel_config::schema::PlainHttpMode::Serve;
    let config = config.to_json_pretty();
    appliance_image(
        Some(&store),
        &config,
        &[],
        &image,
        "the image with echo.bin",
    );
    image
}

struct Cli {
    keel: PathBuf,
    url: String,
    token: String,
}

impl Cli {
    /// `keel ARGS --appliance URL` with the token in `KEEL_TOKEN` (so that `--token` in
    /// `args` is what overrides it).
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.keel);
        command
            .args(args)
            .args(["--appliance", &self.url, "--timeout", "10"])
            .env("KEEL_TOKEN", &self.token)
            .env("EDITOR", "true")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running keel")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `args`; checks the exit status is success and stdout holds every needle; stdout.
fn ok(m: &Machine, cli: &Cli, args: &[&str], needles: &[&str]) -> String {
    let out = cli.run(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    check!(
        m,
        out.status.success(),
        "keel {args:?} failed ({}): {stderr}{stdout}",
        out.status
    );
    for needle in needles {
        check!(
            m,
            stdout.contains(needle),
            "keel {args:?}: no {needle:?} in:\n{stdout}"
        );
    }
    stdout
}

/// Runs `args`; checks it fails and stderr holds every needle.
fn fails(m: &Machine, what: &str, mut command: Command, needles: &[&str]) {
    let out = command.output().expect("running keel");
    let stderr = text(&out.stderr);
    check!(
        m,
        !out.status.success(),
        "{what}: exit status {} (wanted a failure); stdout:\n{}",
        out.status,
        text(&out.stdout)
    );
    for needle in needles {
        check!(
            m,
            stderr.contains(needle),
            "{what}: no {needle:?} in:\n{stderr}"
        );
    }
}

/// Every client command, on VM `vm` (`config set` sets the hostname).
fn every_command(vm: &'static str) -> Vec<Vec<&'static str>> {
    vec![
        vec!["status"],
        vec!["store", "ls"],
        vec!["config", "get"],
        vec!["config", "get", "hostname"],
        vec!["config", "set", "hostname", "other"],
        vec!["config", "edit"],
        vec!["vm", "list"],
        vec!["vm", "info", vm],
        vec!["vm", "create", vm, "--kernel", "echo.bin", "--mem", "16"],
        vec!["vm", "start", vm],
        vec!["vm", "stop", vm],
        vec!["vm", "restart", vm],
        vec!["vm", "destroy", vm],
        vec!["vm", "log", vm],
        vec!["vm", "console", vm],
    ]
}

#[test]
fn keel_cli_drives_one_appliance_over_its_api() {
    let tmp = tempfile::tempdir().unwrap();
    let keel = keel_binary().to_path_buf();
    let image = image_with_echo(tmp.path());
    let a = artifacts();
    let (port, plain) = (http::free_port(), http::free_port());
    let mut m = Qemu::seabios(&image)
        .machine("q35")
        .defmt_elf(&a.elf)
        .writable_disk()
        .args([
            "-nic".to_owned(),
            http::nic_arg_with_plain("virtio-net-pci", port, plain),
        ])
        .spawn()
        .unwrap();
    m.expect_banner();
    http::await_api(&mut m, port);
    let cli = Cli {
        keel,
        url: format!("http://127.0.0.1:{plain}"),
        token: a.api_token.clone(),
    };
    let started = Instant::now();

    // Reading.
    let status = ok(&m, &cli, &["status"], &["hostname:", "version:", "cpus:"]);
    check!(
        m,
        status.contains(env!("CARGO_PKG_VERSION")),
        "status shows no version {}: {status}",
        env!("CARGO_PKG_VERSION")
    );
    eprint!("keel status:\n{status}");
    ok(&m, &cli, &["store", "ls"], &["NAME", "echo.bin"]);
    let json = ok(&m, &cli, &["status", "--json"], &[]);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("status --json is JSON");
    check!(
        m,
        parsed.pointer("/system/version").is_some(),
        "status --json: {json}"
    );

    // Configuration round trip, ETag-checked on the way.
    ok(
        &m,
        &cli,
        &["config", "set", "hostname", "cli-test"],
        &["hostname = \"cli-test\""],
    );
    let hostname = ok(&m, &cli, &["config", "get", "hostname"], &[]);
    check!(
        m,
        hostname == "cli-test\n",
        "config get hostname: {hostname:?}"
    );
    ok(&m, &cli, &["status"], &["cli-test"]);
    let config: serde_json::Value =
        serde_json::from_str(&ok(&m, &cli, &["config", "get", "--json"], &[]))
            .expect("config get --json is JSON");
    check!(m, config["hostname"] == "cli-test", "{config}");

    // A VM's life.
    ok(
        &m,
        &cli,
        &[
            "vm", "create", "echo", "--kernel", "echo.bin", "--mem", "16",
        ],
        &["created echo (defined)"],
    );
    ok(&m, &cli, &["vm", "list"], &["NAME", "echo", "defined"]);
    ok(&m, &cli, &["vm", "start", "echo"], &["echo: "]);
    ok(
        &m,
        &cli,
        &["vm", "info", "echo"],
        &["name:", "echo", "kernel:", "echo.bin"],
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&m, &cli, &["vm", "list", "--json"], &[]))
            .expect("vm list --json is JSON");
    check!(m, list["vms"][0]["name"] == "echo", "{list}");
    eprint!(
        "keel vm list:\n{}",
        ok(&m, &cli, &["vm", "list"], &["running"])
    );
    if let Err(e) = console_echo_round_trip(cli.command(&["vm", "console", "echo"]), "echo") {
        m.fail(e);
    }
    ok(&m, &cli, &["vm", "log", "echo"], &["HELLO"]);
    let stopped = ok(&m, &cli, &["vm", "stop", "echo", "--force"], &["echo: "]);
    check!(m, stopped.contains("stop"), "vm stop --force: {stopped}");
    ok(&m, &cli, &["vm", "destroy", "echo"], &["destroyed echo"]);
    let list = ok(&m, &cli, &["vm", "list"], &[]);
    check!(
        m,
        !list.contains("echo"),
        "destroyed, still listed:\n{list}"
    );

    // Failures: every command, each way.
    let bad_token = Cli {
        keel: cli.keel.clone(),
        url: cli.url.clone(),
        token: "not-the-token".to_owned(),
    };
    for args in every_command("echo") {
        fails(
            &m,
            &format!("{args:?} with a bad token"),
            bad_token.command(&args),
            &["401 invalid bearer token"],
        );
    }
    let unreachable = Cli {
        keel: cli.keel.clone(),
        url: "http://127.0.0.1:1".to_owned(),
        token: cli.token.clone(),
    };
    for args in every_command("echo") {
        let begun = Instant::now();
        fails(
            &m,
            &format!("{args:?} at a closed port"),
            unreachable.command(&args),
            &[
                "unreachable at http://127.0.0.1:1/api/v1/",
                "Connection refused",
            ],
        );
        check!(
            m,
            begun.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            begun.elapsed()
        );
    }
    let api_errors: [(&[&str], &[&str]); 12] = [
        (&["vm", "info", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "start", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "stop", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "restart", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "destroy", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "log", "nosuch"], &["404 no VM named 'nosuch'"]),
        (&["vm", "console", "nosuch"], &["404 no VM named 'nosuch'"]),
        (
            &[
                "vm", "create", "Bad_Name", "--kernel", "echo.bin", "--mem", "15",
            ],
            &[
                "error: 422 invalid VM definition",
                "\n  name: ",
                "\n  memory_mib: ",
            ],
        ),
        (
            &["vm", "info", "Bad_Name"],
            &["400 ", "neither a VM number nor a VM name"],
        ),
        (&["config", "get", "nosuch"], &["nothing at nosuch"]),
        (
            &["config", "set", "management.http_port", "0"],
            &["management.http_port"],
        ),
        (&["config", "set", "nosuch", "1"], &["nosuch"]),
    ];
    for (args, needles) in api_errors {
        fails(&m, &format!("{args:?}"), cli.command(args), needles);
    }
    eprintln!(
        "cli_client: {} keel commands in {:.1?}",
        17 + 2 * every_command("echo").len() + 12,
        started.elapsed()
    );
    m.kill();
}
