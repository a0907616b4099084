//! Host tests for `demo`: the committed configuration, the initramfs layout, the store files.

use super::*;
use crate::linux_guest::cpio::entries;

#[test]
fn demo_toml_is_valid_and_matches_the_store() {
    let file = crate::appliance::load(&crate::workspace_root().join("config/demo.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let defaults = Config::default();
    assert_eq!(file.hostname, defaults.hostname);
    assert_eq!(file.network, defaults.network);
    assert_eq!(file.management, defaults.management, "no token in the file");
    assert_eq!(file.vms.len(), 1);
    let vm = &file.vms[0];
    assert_eq!(vm.name, "demo");
    assert_eq!(vm.kernel.as_deref(), Some(DEMO_KERNEL));
    assert_eq!(vm.initrd.as_deref(), Some(DEMO_INITRAMFS));
    assert_eq!(vm.cmdline, "console=ttyS0 loglevel=4");
    assert_eq!(vm.memory_mib, 256);
    assert_eq!(vm.vcpus, 2);
    assert!(vm.disks.is_empty());
    assert!(vm.autostart);

    let token = "0123456789abcdef0123";
    let config = demo_config(token);
    assert_eq!(config.management.api_tokens, [token]);
    assert_eq!(config.vms, file.vms);
    config.validate().unwrap();
}

/// The archive's entries by name.
fn demo_entries() -> Vec<(String, u32, Vec<u8>)> {
    entries(&demo_initramfs(b"BUSYBOX", b"BUTTON-KO", b"EVDEV-KO"))
}

fn find<'a>(e: &'a [(String, u32, Vec<u8>)], name: &str) -> &'a (String, u32, Vec<u8>) {
    e.iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn the_initramfs_holds_init_the_modules_and_the_acpid_files() {
    let e = demo_entries();
    let init = find(&e, "init");
    assert_eq!(init.1, 0o100755);
    let init_text = String::from_utf8(init.2.clone()).unwrap();
    assert!(init_text.starts_with("#!/bin/busybox sh\nexport PATH=/bin\n"));
    assert!(init_text.ends_with(DEMO_INIT));
    assert!(init_text.contains(&format!("hostname {DEMO_HOSTNAME}\n")));
    assert!(init_text.contains("insmod /lib/modules/button.ko\n"));
    assert!(init_text.contains("insmod /lib/modules/evdev.ko\n"));
    assert!(init_text.trim_end().ends_with("exec init"));

    assert_eq!(find(&e, "lib/modules/button.ko").2, b"BUTTON-KO");
    assert_eq!(find(&e, "lib/modules/evdev.ko").2, b"EVDEV-KO");
    assert_eq!(find(&e, "bin/busybox").2, b"BUSYBOX");
    for applet in ["sh", "mount", "hostname"] {
        let link = find(&e, &format!("bin/{applet}"));
        assert_eq!((link.1, link.2.as_slice()), (0o120777, &b"busybox"[..]));
    }
    assert_eq!(find(&e, "etc/inittab").2, INITTAB.as_bytes());
    assert_eq!(find(&e, "etc/profile").2, PROFILE.as_bytes());
    assert_eq!(find(&e, "etc/acpid.conf").2, ACPID_CONF.as_bytes());
    let action = find(&e, "etc/acpi/PWRF/00000080");
    assert_eq!(action.1, 0o100755, "acpid executes the handler directly");
    assert_eq!(action.2, POWER_BUTTON_ACTION.as_bytes());
    assert!(find(&e, "var/run").1 & 0o040000 != 0);
}

#[test]
fn every_entry_comes_after_its_parent_directory() {
    let e = demo_entries();
    let mut seen: Vec<&str> = Vec::new();
    for (name, _, _) in &e {
        if let Some((parent, _)) = name.rsplit_once('/') {
            assert!(seen.contains(&parent), "{name} before {parent}");
        }
        seen.push(name);
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry twice");
}

#[test]
fn acpid_maps_the_power_button_to_the_action_script() {
    // busybox acpid: the default map turns KEY_POWER into "button/power PWRF 00000080"; the
    // first action whose key is a substring of that names the handler under /etc/acpi.
    let event = "button/power PWRF 00000080";
    let handler = ACPID_CONF
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .find(|(key, _)| event.contains(key))
        .map(|(_, action)| action);
    assert_eq!(handler, Some("PWRF/00000080"));
    assert!(POWER_BUTTON_ACTION.starts_with("#!/bin/sh\n"));
    assert!(POWER_BUTTON_ACTION.contains("poweroff"));
}

#[test]
fn the_scripts_are_valid_sh() {
    let check = |name: &str, text: &str| {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", text])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check("init", DEMO_INIT);
    check("profile", PROFILE);
    check("power button action", POWER_BUTTON_ACTION);
    assert!(PROFILE.contains(BANNER_PREFIX));
    assert!(INITTAB.contains("::respawn:/bin/cttyhack /bin/sh -l"));
}

#[test]
fn store_files_are_written_whole_and_nothing_else_lands_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let file = store.join(DEMO_INITRAMFS);
    std::fs::write(&file, b"old, longer contents").unwrap();
    write_atomically(&file, b"new").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [DEMO_INITRAMFS]);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn the_demo_store_is_under_target_keel() {
    assert_eq!(demo_store_dir(), crate::output_dir().join("demo-store"));
}
