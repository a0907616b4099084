//! The committed seeds reach what they are for: a seed that stopped parsing would leave its
//! target mutating garbage. `cargo +nightly-2025-06-05 test` in `fuzz/` (no libFuzzer
//! involved; an integration test, because the kernel modules' own unit tests come with
//! `cfg(test)` on the library and need the rest of the kernel).

use keel_fuzz::{SliceDisk, appliance, blk, guest_memory, mmio_input, store};
use keel_vmm::loader::{bzimage, pvh};

fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/corpus/{target}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn config_seeds_parse_and_validate() {
    for name in ["json_empty", "json_vm"] {
        keel_config::Config::from_json(&seed("config", name)[1..]).expect(name);
    }
    for name in ["toml_demo", "toml_example"] {
        let bytes = seed("config", name);
        appliance::parse_toml(std::str::from_utf8(&bytes[1..]).unwrap()).expect(name);
    }
    assert!(appliance::parse_toml("[[vms]]\nname = \"Bad Name\"\nmemory_mib = 3\n").is_err());
}

#[test]
fn gpt_seeds_read_their_partitions() {
    for (name, count, primary) in [
        ("gpt_two_partitions", 2, true),
        ("gpt_fix_crcs", 2, true),
        ("gpt_primary_damaged", 2, false),
        ("gpt_one_partition", 1, true),
    ] {
        let bytes = seed("gpt_fat", name);
        let table = blk::gpt::read(&mut SliceDisk::new(&bytes[1..], 0)).expect(name);
        assert_eq!(table.partitions.len(), count, "{name}");
        assert_eq!(table.primary_error.is_none(), primary, "{name}");
    }
}

#[test]
fn fat_seed_mounts_and_reads_both_files() {
    let bytes = seed("gpt_fat", "fat16_two_files");
    let mut disk = SliceDisk::new(&bytes[1..], 1 << ((bytes[0] >> 1) + 10));
    let volume = store::fat::FatVolume::mount(&mut disk).unwrap();
    let files = volume.list(&mut disk).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["hello.txt", "vmlinuz"]);
    let hello = volume.read(&mut disk, &files[0]).unwrap();
    assert_eq!(hello, b"hello from the store\n");
    assert_eq!(volume.read(&mut disk, &files[1]).unwrap().len(), 1500);
}

#[test]
fn loader_seeds_load() {
    let memory = guest_memory(8 << 20);
    let image = seed("loaders", "bzimage");
    bzimage::load(memory, &image[1..], None, "console=ttyS0", None).unwrap();
    let image = seed("loaders", "pvh_elf");
    pvh::load(memory, &image[1..], None, "console=ttyS0", Some(0xe_0000)).unwrap();
    let image = seed("loaders", "bzimage_old_protocol");
    assert!(bzimage::parse_header(&image[1..]).is_err());
}

#[test]
fn mmio_seeds_decode() {
    use keel_vmm::decode::decode_mmio;
    use keel_vmm::guest_paging::fetch_instruction;
    let memory = guest_memory(2 << 20);
    for name in [
        "real_store",
        "prot32_load",
        "long_rmw",
        "long_movzx",
        "long_store_rex",
    ] {
        let bytes = seed("mmio", name);
        let (regs, _, ram) = mmio_input(&bytes, 2 << 20).unwrap();
        memory.fill(0, 0x1_0000, 0).unwrap();
        memory.write(0, ram).unwrap();
        let (code, n) = fetch_instruction(memory, &regs).expect(name);
        decode_mmio(&code[..n], regs.code_bitness(), &regs).expect(name);
    }
}

#[test]
fn virtio_seeds_complete_chains() {
    use keel_vmm::virtio::fuzzing::{drain_queue, net_queue};
    let memory = guest_memory(2 << 20);
    for name in ["two_chains", "event_idx", "blk_read", "blk_write"] {
        assert!(drain_queue(memory, &seed("virtqueue", name)) >= 1, "{name}");
    }
    for name in [
        "rx_two_frames",
        "rx_mrg",
        "tx_header_and_frame",
        "tx_one_buffer",
    ] {
        assert!(net_queue(memory, &seed("virtio_net", name)) >= 1, "{name}");
    }
}
