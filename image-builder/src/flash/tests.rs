use super::table::PartitionTable;
use super::target::{MountOnTarget, TargetInfo, TargetKind};
use super::*;

fn device(bytes: u64) -> TargetInfo {
    TargetInfo {
        path: "/dev/sdz".into(),
        kind: TargetKind::BlockDevice {
            name: "sdz".into(),
            disk: "sdz".into(),
        },
        bytes: Some(bytes),
        model: Some("Stick".into()),
        removable: Some(true),
        partitions: Ok(PartitionTable::None),
        mounts: Vec::new(),
        loop_devices: Vec::new(),
        holders: Vec::new(),
    }
}

fn mount(source: &str, point: &str) -> MountOnTarget {
    MountOnTarget {
        source: source.into(),
        mount_point: point.into(),
    }
}

#[test]
fn a_device_smaller_than_the_image_is_refused_and_an_equal_one_is_not() {
    let err = check_target(&device(1 << 20), &[], 52 << 20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to write /dev/sdz: it holds 1.0 MiB (1048576 bytes) but the image needs \
         52.0 MiB (54525952 bytes)"
    );
    check_target(&device(52 << 20), &[], 52 << 20).unwrap();
}

#[test]
fn a_short_existing_file_is_fine_because_it_grows() {
    let mut info = device(1 << 20);
    info.kind = TargetKind::File { exists: true };
    check_target(&info, &[], 52 << 20).unwrap();
}

#[test]
fn a_mounted_target_is_refused_naming_the_mount() {
    let mut info = device(64 << 20);
    info.mounts = vec![mount("/dev/sdz1", "/media/stick")];
    let err = check_target(&info, &[], 1 << 20).unwrap_err().to_string();
    assert!(
        err.starts_with("refusing to overwrite /dev/sdz: it is in use (/dev/sdz1 on /media/stick)"),
        "{err}"
    );
}

#[test]
fn a_file_behind_a_loop_device_is_refused_with_how_to_detach() {
    let mut info = device(64 << 20);
    info.kind = TargetKind::File { exists: true };
    info.loop_devices = vec!["/dev/loop7".into()];
    let err = check_target(&info, &[], 1 << 20).unwrap_err().to_string();
    assert!(err.contains("backs /dev/loop7"), "{err}");
    assert!(err.contains("losetup -d /dev/loop7"), "{err}");
}

#[test]
fn a_disk_held_by_device_mapper_is_refused() {
    let mut info = device(64 << 20);
    info.holders = vec!["dm-0".into()];
    let err = check_target(&info, &[], 1 << 20).unwrap_err().to_string();
    assert!(err.contains("held by dm-0"), "{err}");
}

#[test]
fn the_system_disk_is_refused_before_anything_else() {
    let mut info = device(1 << 20);
    info.mounts = vec![mount("/dev/sdz2", "/")];
    let err = check_target(&info, &[mount("/dev/sdz2", "/")], 52 << 20).unwrap_err();
    assert!(matches!(err, FlashError::SystemDisk { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the running system is on it (/dev/sdz2 on /)")
    );
}

#[test]
fn overlays_replace_exactly_their_bytes_across_chunk_edges() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    std::fs::write(&image, vec![0xAAu8; 100]).unwrap();
    let overlays = [
        Overlay {
            offset: 5,
            bytes: vec![1, 2, 3],
        },
        Overlay {
            offset: 18,
            bytes: vec![9; 4],
        },
    ];
    let mut f = File::open(&image).unwrap();
    let mut buf = [0u8; 16];
    read_source(&mut f, 4, &mut buf, &overlays).unwrap();
    assert_eq!(
        buf,
        [
            0xAA, 1, 2, 3, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 9, 9
        ]
    );
    read_source(&mut f, 20, &mut buf[..4], &overlays).unwrap();
    assert_eq!(buf[..4], [9, 9, 0xAA, 0xAA]);
}

#[test]
fn a_written_file_verifies_and_a_flipped_byte_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    let target = dir.path().join("out");
    // More than one chunk, not a multiple of it.
    let len = CHUNK as u64 + 12_345;
    let contents: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, &contents).unwrap();
    let overlays = [Overlay {
        offset: 1000,
        bytes: b"personal".to_vec(),
    }];
    let kind = TargetKind::File { exists: false };
    let digest = write_target(&image, &target, len, &overlays, &kind).unwrap();
    let written = std::fs::read(&target).unwrap();
    assert_eq!(written.len() as u64, len);
    assert_eq!(&written[1000..1008], b"personal");
    assert_eq!(written[..1000], contents[..1000]);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&written)), digest);
    verify(&image, &target, len, &overlays, &digest).unwrap();

    let at = CHUNK as u64 + 77;
    let mut corrupted = written;
    corrupted[at as usize] ^= 0xFF;
    std::fs::write(&target, &corrupted).unwrap();
    let err = verify(&image, &target, len, &overlays, &digest).unwrap_err();
    let FlashError::Mismatch {
        first_difference,
        sector,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(first_difference, at);
    assert_eq!(sector, at / 512);
}

#[test]
fn flashing_onto_the_image_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    std::fs::write(&image, [0u8; 4096]).unwrap();
    let args = FlashArgs {
        image: image.clone(),
        target: image.clone(),
        yes: true,
        config: None,
        hostname: None,
        token: None,
        console: None,
    };
    assert!(matches!(flash(&args), Err(FlashError::SameFile { .. })));
    assert_eq!(std::fs::read(&image).unwrap(), [0u8; 4096]);
}
