//! The boot disk and the guest store: an image built with `--store` boots under SeaBIOS
//! from virtio-blk (`-M pc`); `disk` shows Keel's partitions, `store ls` and `store sum`
//! list and read the files (checked against sizes and CRC32s computed here), and
//! `GET /api/v1/store` lists them. A PVH boot without a disk reports that there is none.

use std::path::Path;
use std::time::Duration;

use keel_qemu_tests::http;
use keel_qemu_tests::{Qemu, artifacts, check};

/// The store directory's files: name and content.
fn store_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("vmlinuz-6.1", artifacts::noise(2_500_000, 0x5eed)),
        ("initrd.cpio", artifacts::noise(70_001, 7)),
        (
            "a-rather-long-file-name-for-the-guest-store.img",
            artifacts::noise(123_457, 11),
        ),
        ("notes with spaces.txt", b"hello from the host\n".to_vec()),
    ]
}

/// Builds `keel.img` into `dir` with the store files and the artifacts' kernel and token.
fn build_image(dir: &Path) -> std::path::PathBuf {
    let a = artifacts();
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    for (name, bytes) in store_files() {
        std::fs::write(store.join(name), bytes).unwrap();
    }
    let image = dir.join("keel.img");
    let cmdline = keel_image::api_token::with_token("", &a.api_token);
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    keel_image::assemble_image(&a.elf, &[], &cmdline, Some(&store), &config, &image)
        .expect("building the image with --store");
    image
}

#[test]
fn seabios_virtio_blk_disk_and_store() {
    let a = artifacts();
    let tmp = tempfile::tempdir().unwrap();
    let image = build_image(tmp.path());
    let port = http::free_port();
    let mut m = Qemu::seabios(&image)
        .defmt_elf(&a.elf)
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        banner.text.contains("disk: virtio-blk at ") && banner.text.contains("guest store FAT16"),
        "boot disk line missing:\n{}",
        banner.text
    );
    m.expect("network: DHCP lease 10.0.2.15/24");
    m.expect_prompt();

    let disk = m.command("disk");
    for needle in [
        "host disks:\n  virtio-blk at 00:",
        "MiB: Keel's disk",
        "disk:     virtio-blk",
        "primary header",
        " keel-config ",
        "20442bb3-5151-4ecd-846b-efa36bb2491f",
        " keel-store ",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        " esp ",
        " bios-boot ",
    ] {
        check!(m, disk.contains(needle), "disk lacks {needle:?}:\n{disk}");
    }

    let ls = m.command("store ls");
    for (name, bytes) in store_files() {
        let row = ls.lines().find(|l| l.trim_start().starts_with(name));
        let size = row.and_then(|r| r.split_whitespace().last());
        check!(
            m,
            size == Some(bytes.len().to_string().as_str()),
            "store ls: {name} should be {} bytes:\n{ls}",
            bytes.len()
        );
    }
    check!(m, ls.contains("4 files"), "store ls:\n{ls}");

    for (name, bytes) in store_files() {
        let out = m.command(&format!("store sum {name}"));
        let expected = format!(
            "{name}: {} bytes, crc32 {:08x}",
            bytes.len(),
            crc32fast::hash(&bytes)
        );
        check!(
            m,
            out.contains(&expected),
            "expected {expected:?}, got {out:?}"
        );
    }
    let missing = m.command("store sum no-such-file");
    check!(
        m,
        missing.contains("error: guest store: no file named 'no-such-file'"),
        "{missing}"
    );

    if let Err(e) = http::wait_until_up(port, "/api/v1/health", Duration::from_secs(30)) {
        m.fail(&e);
    }
    let r = http::request(port, "GET", "/api/v1/store", Some(&a.api_token), None)
        .expect("GET /api/v1/store");
    check!(m, r.status == 200, "GET /api/v1/store: {r:?}");
    for (name, bytes) in store_files() {
        let entry = format!("{{\"name\":\"{name}\",\"size\":{}}}", bytes.len());
        check!(m, r.body.contains(&entry), "{entry} not in {}", r.body);
    }
    let unauthorized = http::request(port, "GET", "/api/v1/store", None, None).expect("GET");
    check!(m, unauthorized.status == 401, "{unauthorized:?}");
}

#[test]
fn pvh_without_a_disk_reports_no_boot_disk() {
    let a = artifacts();
    let mut m = Qemu::pvh(&a.elf).spawn().unwrap();
    let banner = m.expect_banner();
    check!(
        m,
        banner
            .text
            .contains("disk: no boot disk found: no disk a driver knows"),
        "banner:\n{}",
        banner.text
    );
    let disk = m.command("disk");
    check!(m, disk.contains("no boot disk found"), "{disk}");
    let ls = m.command("store ls");
    check!(
        m,
        ls.contains("error: no guest store: no boot disk found"),
        "{ls}"
    );
    let version = m.command("version");
    check!(m, version.starts_with("Keel 0.1.0"), "{version}");
}
