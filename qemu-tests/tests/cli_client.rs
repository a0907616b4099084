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
//!
//! Over HTTPS: the first command pins the appliance's certificate in `known-appliances`
//! (next to the inventory, here under a private `XDG_CONFIG_HOME`); a wrong pin in that file
//! or a wrong `fingerprint` in an inventory entry is refused, naming both fingerprints. One
//! `keel status` over plain HTTP checks `management.http = "serve"`.

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
    // Also the API in clear, for one check of `management.http = "serve"` with the client.
    let mut config = keel_image::tls_cert::default_config(&a.api_token);
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

#[derive(Clone)]
struct Cli {
    keel: PathBuf,
    url: String,
    token: String,
    /// `XDG_CONFIG_HOME`: where the pin file goes (never the tester's own).
    config_home: PathBuf,
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
            .env("XDG_CONFIG_HOME", &self.config_home)
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
    let config_home = tmp.path().join("config");
    let cli = Cli {
        keel,
        url: format!("https://127.0.0.1:{port}"),
        token: a.api_token.clone(),
        config_home: config_home.clone(),
    };
    let started = Instant::now();

    // The first command pins the certificate; the pin is the appliance's.
    let first = cli.run(&["status"]);
    let pin_file = config_home.join("keel").join("known-appliances");
    check!(
        m,
        first.status.success() && text(&first.stderr).contains("pinned the certificate"),
        "first keel status over HTTPS ({}): {}",
        first.status,
        text(&first.stderr)
    );
    let pins = std::fs::read_to_string(&pin_file).unwrap_or_default();
    let presented = http::build_certificate()
        .map(|der| http::fingerprint(&der))
        .expect("target/keel/tls-cert.pem");
    check!(
        m,
        pins.contains(&format!("{} {presented}", cli.url)),
        "pin file {}: {pins:?}, wanted {presented}",
        pin_file.display()
    );
    let second = cli.run(&["status"]);
    check!(
        m,
        second.status.success() && !text(&second.stderr).contains("pinned"),
        "second keel status: {}",
        text(&second.stderr)
    );
    // Plain HTTP, served as configured.
    let plain_cli = Cli {
        url: format!("http://127.0.0.1:{plain}"),
        ..cli.clone()
    };
    ok(&m, &plain_cli, &["status"], &["hostname:"]);
    // A changed certificate: a wrong pin in the file, and a wrong inventory fingerprint.
    let wrong = ["00"; 32].join(":");
    let other_url = format!("https://localhost:{port}");
    std::fs::write(&pin_file, format!("{pins}{other_url} {wrong}\n")).unwrap();
    let changed = Cli {
        url: other_url.clone(),
        ..cli.clone()
    };
    fails(
        &m,
        "a changed certificate (pin file)",
        changed.command(&["status"]),
        &[
            "presented a certificate other than the pinned one",
            &format!("pinned SHA-256 {wrong}"),
            &format!("presented SHA-256 {presented}"),
            &format!("delete the line of {other_url} from {}", pin_file.display()),
        ],
    );
    let inventory = tmp.path().join("fleet.toml");
    std::fs::write(
        &inventory,
        format!(
            "[[appliance]]\nname = \"a\"\nurl = \"{}\"\nfingerprint = \"{wrong}\"\n",
            cli.url
        ),
    )
    .unwrap();
    let mut by_name = Command::new(&cli.keel);
    by_name
        .args(["status", "--appliance", "a", "--fleet"])
        .arg(&inventory)
        .env("KEEL_TOKEN", &cli.token)
        .stdin(Stdio::null());
    fails(
        &m,
        "a changed certificate (inventory fingerprint)",
        by_name,
        &[
            &format!("presented SHA-256 {presented}"),
            "set its `fingerprint` in the inventory",
        ],
    );

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
    // The console's WebSocket goes over the same TLS (no fallback to polling).
    let mut attach = cli.command(&["vm", "console", "echo"]);
    let mut child = attach
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running keel vm console");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(&[0x1d]);
    }
    let attached = child.wait_with_output().expect("keel vm console");
    let stderr = text(&attached.stderr);
    check!(
        m,
        attached.status.success()
            && stderr.contains("attached to echo")
            && !stderr.contains("polling"),
        "keel vm console over HTTPS ({}): {stderr}",
        attached.status
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
        token: "not-the-token".to_owned(),
        ..cli.clone()
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
        url: "https://127.0.0.1:1".to_owned(),
        ..cli.clone()
    };
    for args in every_command("echo") {
        let begun = Instant::now();
        fails(
            &m,
            &format!("{args:?} at a closed port"),
            unreachable.command(&args),
            &[
                "unreachable at https://127.0.0.1:1/api/v1/",
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
        23 + 2 * every_command("echo").len() + 12,
        started.elapsed()
    );
    m.kill();
}
