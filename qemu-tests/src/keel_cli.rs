//! The real `keel` binary for the CLI tests (`flash`, `cli_client`, `fleet`): built once per
//! test process, and the `keel vm console` round trip they share.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Builds `keel` (`cargo build -p keel-image-builder --bin keel`, the test's own profile) once
/// per process and returns its path.
///
/// # Panics
///
/// If the build fails or leaves no binary.
pub fn keel_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test>-… → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in target/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(keel_image::workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "keel-image-builder",
            "--bin",
            "keel",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for keel");
        assert!(status.success(), "cargo build of the keel binary failed");
        let keel = profile_dir.join("keel");
        assert!(keel.is_file(), "no keel binary at {}", keel.display());
        keel
    })
}

/// Runs `console` (a `keel vm console <vm> …` command, its appliance and token set) with
/// stdin a pipe against the echo guest: a typed line must come back in upper case within
/// 30 s, then Ctrl-] (0x1d) alone, with the pipe still open, must detach within 10 s, and
/// keel must exit 0 saying it attached to and detached from `vm`. Returns what went wrong.
pub fn console_echo_round_trip(mut console: Command, vm: &str) -> Result<(), String> {
    let mut child = console
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting keel vm console: {e}"))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let sink = Arc::clone(&output);
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(b"hello\r")
        .and_then(|()| stdin.flush())
        .map_err(|e| format!("typing into keel vm console: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&output.lock().unwrap()).contains("HELLO") {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            return Err(format!(
                "vm console: no HELLO within 30 s; stdout {:?}, stderr {}",
                text(&output.lock().unwrap()),
                text(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Detach with the pipe still open: Ctrl-] alone must end it.
    stdin
        .write_all(&[0x1d])
        .and_then(|()| stdin.flush())
        .map_err(|e| format!("typing Ctrl-] into keel vm console: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("vm console: still attached 10 s after Ctrl-]".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let _ = reader.join();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    if !status.success() {
        return Err(format!("vm console exited {status}: {stderr}"));
    }
    for expected in [format!("attached to {vm}"), format!("detached from {vm}")] {
        if !stderr.contains(&expected) {
            return Err(format!("vm console did not say {expected:?}: {stderr}"));
        }
    }
    Ok(())
}
