//! Host tests only: a real `keel.img`, written by the image builder's own GPT and FAT code
//! (with stand-in GRUB blobs), loaded into memory.

use std::path::Path;
use std::vec::Vec;

use keel_image::fat::{Contents, FatFile};
use keel_image::gpt_image::{self, Layout};
use keel_image::grub::{self, GrubImages};

/// GRUB-shaped blobs that pass the image builder's checks.
fn fake_grub() -> GrubImages {
    let mut boot_img = std::vec![0x90u8; 512];
    boot_img[510] = 0x55;
    boot_img[511] = 0xaa;
    let mut core_img = std::vec![0x11u8; 4096];
    let at = grub::CORE_BLOCKLIST_OFFSET + 10;
    core_img[at..at + 2].copy_from_slice(&grub::CORE_LOAD_SEGMENT.to_le_bytes());
    GrubImages {
        boot_img,
        core_img,
        efi_img: b"MZ fake".to_vec(),
    }
}

/// The image's bytes and layout, with `store` (name, content) in the guest store.
pub fn image(store: &[(&str, Vec<u8>)]) -> (Vec<u8>, Layout) {
    image_with_partitions(store, &[])
}

/// [`image`] with guest-disk partitions `(name, MiB)` as `keel build --disk …,partition`
/// makes them.
pub fn image_with_partitions(
    store: &[(&str, Vec<u8>)],
    partitions: &[(&str, u64)],
) -> (Vec<u8>, Layout) {
    let tmp = tempfile_dir();
    let files: Vec<FatFile> = store
        .iter()
        .map(|(name, bytes)| FatFile {
            path: std::format!("/{name}"),
            contents: Contents::Bytes(bytes.clone()),
        })
        .collect();
    let out = tmp.join("keel.img");
    let config = keel_image::tls_cert::default_config("0123456789abcdef0123456789abcdef");
    let requests: Vec<_> = partitions
        .iter()
        .map(|(name, mib)| gpt_image::GuestPartitionRequest {
            name: std::string::String::from(*name),
            bytes: mib << 20,
        })
        .collect();
    let summary = gpt_image::write_image_with_partitions(
        &fake_grub(),
        &[],
        &files,
        &config.to_json_pretty(),
        &requests,
        &out,
    )
    .expect("image");
    let bytes = std::fs::read(&out).expect("read image");
    let _ = std::fs::remove_dir_all(&tmp);
    (bytes, summary.layout)
}

/// A fresh directory under the system temp dir.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(std::format!(
        "keel-kernel-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(Path::new(&dir)).expect("temp dir");
    dir
}

/// Pseudo-random bytes (xorshift), reproducible from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
