//! `keel_image::build` end to end from inside `cargo test`: the nested kernel compile (its own
//! target directory, so no lock contention with this cargo) and the real image.

use std::io::{Read, Seek, SeekFrom};

use keel_image::gpt_image::{CONFIG_NAME, ESP_NAME, KEEL_CONFIG_TYPE_GUID, SECTOR, STORE_NAME};
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

    // Without --config, slot A of the configuration partition holds the defaults plus the
    // build's API token, as generation 1.
    let config_part = &parts[&3];
    let mut image = std::fs::File::open(&out.image).unwrap();
    let mut slot_a = vec![0u8; 64 * 1024];
    image
        .seek(SeekFrom::Start(config_part.first_lba * SECTOR))
        .unwrap();
    image.read_exact(&mut slot_a).unwrap();
    let stored = keel_config::record::decode(&slot_a).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.generation, 1);
    let config = keel_config::Config::from_json(&stored.payload).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, out.config);
    assert_eq!(
        config.management.api_tokens,
        std::slice::from_ref(&out.api_token)
    );
}
