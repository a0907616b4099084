//! `keel flash` with the real `keel` binary: the test `keel.img` flashed to a file boots under
//! SeaBIOS and OVMF; a copy flashed with `--config`/`--hostname`/`--token` boots with its own
//! hostname and accepts only its own token; the read-back catches a corrupted byte (the
//! `KEEL_FLASH_TEST_CORRUPT_AT` hook); and the refusals (no terminal without `--yes`; as root,
//! a mounted loop device, a file behind a loop device, a 1 MiB loop device) exit non-zero
//! with their messages. Prints the time to flash and verify `keel.img` to a file.

use keel_qemu_tests::keel_cli::keel_binary;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use keel_qemu_tests::http;
use keel_qemu_tests::{Qemu, artifacts, check};

/// Runs `keel flash ARGS…` with stdin from /dev/null (not a terminal) and `env` set.
fn keel_flash(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(keel_binary());
    cmd.arg("flash").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running keel flash")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_flashed_file_boots_under_seabios_and_ovmf() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("stick.img");
    keel_binary(); // built before the clock starts
    let started = Instant::now();
    let out = keel_flash(
        &[a.image.to_str().unwrap(), target.to_str().unwrap(), "--yes"],
        &[],
    );
    let took = started.elapsed();
    assert!(out.status.success(), "keel flash failed:\n{}", stderr(&out));
    let image_len = std::fs::metadata(&a.image).unwrap().len();
    println!(
        "flash + verify of keel.img ({} MiB) to a file: {:.2} s (the binary's own report: {})",
        image_len >> 20,
        took.as_secs_f64(),
        stderr(&out).lines().last().unwrap_or("")
    );
    assert!(
        stderr(&out).contains("keel: flashed and verified"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&a.image).unwrap()
    );

    for (firmware, qemu) in [
        ("SeaBIOS", Qemu::seabios(&target)),
        ("OVMF", Qemu::ovmf(&target)),
    ] {
        let mut m = qemu.defmt_elf(&a.elf).spawn().unwrap();
        let banner = m.expect_banner();
        check!(
            m,
            banner.field("hostname") == Some("keel"),
            "{firmware}: banner:\n{}",
            banner.text
        );
        m.kill();
    }
}

#[test]
fn a_personalized_copy_has_its_hostname_and_only_its_token() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("rack1-a.img");
    let config = dir.path().join("rack1-a.toml");
    let new_token = "c0ffee00c0ffee00c0ffee00c0ffee00";
    std::fs::write(
        &config,
        format!("hostname = \"from-file\"\n[management]\napi_tokens = [\"{new_token}\"]\n"),
    )
    .unwrap();
    let image_before = std::fs::read(&a.image).unwrap();
    let out = keel_flash(
        &[
            a.image.to_str().unwrap(),
            target.to_str().unwrap(),
            "--yes",
            "--config",
            config.to_str().unwrap(),
            "--hostname",
            "rack1-a",
        ],
        &[],
    );
    assert!(out.status.success(), "keel flash failed:\n{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "hostname rack1-a, 1 API token(s), generation 2; kernel command-line token replaced"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&a.image).unwrap(),
        image_before,
        "the image file was modified"
    );

    let port = http::free_port();
    let mut m = Qemu::seabios(&target)
        .defmt_elf(&a.elf)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        banner.field("hostname") == Some("rack1-a"),
        "banner:\n{}",
        banner.text
    );
    http::await_api(&mut m, port);
    let new = http::request(port, "GET", "/api/v1/system", Some(new_token), None).unwrap();
    check!(m, new.status == 200, "new token: {new:?}");
    check!(m, new.body.contains("rack1-a"), "system: {}", new.body);
    let old = http::request(port, "GET", "/api/v1/system", Some(&a.api_token), None).unwrap();
    check!(
        m,
        old.status == 401,
        "the build's token still works: {old:?}"
    );
    m.kill();
}

#[test]
fn a_corrupted_write_is_caught_with_its_offset() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("bad.img");
    let out = keel_flash(
        &[a.image.to_str().unwrap(), target.to_str().unwrap(), "--yes"],
        &[("KEEL_FLASH_TEST_CORRUPT_AT", "5000001")],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a corrupted copy passed:\n{err}");
    assert!(
        err.contains("verification failed")
            && err.contains("first difference at byte 5000001 (sector 9765)"),
        "{err}"
    );
}

#[test]
fn without_a_terminal_or_yes_nothing_is_written() {
    let a = artifacts();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("untouched.img");
    let out = keel_flash(&[a.image.to_str().unwrap(), target.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stdin is not a terminal") && err.contains("--yes"),
        "{err}"
    );
    assert!(!target.exists(), "the target was created");
}

/// A loop device over `file`, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Option<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn as_root_mounted_loop_backed_and_small_targets_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root for losetup and mount");
        return;
    }
    let a = artifacts();
    let image = a.image.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // 1 MiB device: smaller than the image.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    let Some(small_loop) = Loop::attach(&small) else {
        eprintln!("skipped: losetup cannot attach a loop device here");
        return;
    };
    let out = keel_flash(&[image, &small_loop.0, "--yes"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "refusing to write {}: it holds 1.0 MiB",
            small_loop.0
        )),
        "{err}"
    );
    // The file behind it is in use too.
    let out = keel_flash(&[image, small.to_str().unwrap(), "--yes"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("backs {}", small_loop.0)), "{err}");
    drop(small_loop);

    // A file system on a loop device with room for the image, mounted: ext4 when the
    // kernel has it (CI's has no vfat), else FAT.
    let fs_file = dir.path().join("fs.bin");
    let image_len = std::fs::metadata(&a.image).unwrap().len();
    std::fs::File::create(&fs_file)
        .and_then(|f| f.set_len(((image_len >> 20) + 2) << 20))
        .unwrap();
    let kernel_fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let mkfs = if kernel_fs.contains("\text4") {
        Command::new("mkfs.ext4").arg("-q").arg(&fs_file).output()
    } else {
        Command::new("mkfs.vfat").arg(&fs_file).output()
    };
    if !mkfs.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped the mount check: cannot make a file system ({mkfs:?})");
        return;
    }
    let fs_loop = Loop::attach(&fs_file).expect("losetup worked a moment ago");
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .arg(&fs_loop.0)
        .arg(&mount_point)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped the mount check: mount failed (see its message above)");
        return;
    }
    let out = keel_flash(&[image, &fs_loop.0, "--yes"], &[]);
    let _ = Command::new("umount").arg(&mount_point).status();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "refusing to overwrite {}: it is in use ({} on {})",
            fs_loop.0,
            fs_loop.0,
            mount_point.display()
        )),
        "{err}"
    );
    // Unmounted, the same device (larger than the image) is flashed and verified.
    let out = keel_flash(&[image, &fs_loop.0, "--yes"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}
