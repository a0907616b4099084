//! `keel_image::build` end to end from inside `cargo test`: the nested kernel compile (its own
//! target directory, so no lock contention with this cargo) and the real image.

use keel_image::gpt_image::{CONFIG_NAME, ESP_NAME, KEEL_CONFIG_TYPE_GUID, STORE_NAME};
use keel_image::{BuildOptions, build, logs, workspace_root};

#[test]
fn build_compiles_the_kernel_and_writes_the_image() {
    if !std::path::Path::new("/usr/lib/grub/i386-pc").is_dir() {
        eprintln!("SKIPPED: /usr/lib/grub missing (run image-builder/install-deps.sh)");
        return;
    }
    let out = build(&BuildOptions {
        quiet: true,
        ..BuildOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.elf, workspace_root().join("target/keel/keel.elf"));
    assert_eq!(out.image, workspace_root().join("target/keel/keel.img"));

    // The kernel carries the defmt table `keel logs` needs.
    logs::load_table(&out.elf).unwrap_or_else(|e| panic!("{e}"));

    let disk = gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .open(&out.image)
        .unwrap();
    let parts = disk.partitions();
    let names: Vec<&str> = parts.values().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bios-boot", ESP_NAME, CONFIG_NAME, STORE_NAME]);
    assert_eq!(parts[&3].part_type_guid.guid, KEEL_CONFIG_TYPE_GUID);
}
