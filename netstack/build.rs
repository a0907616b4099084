//! Embeds the web page's assets: `web/src/*` (Keel's own HTML, JS, CSS) and xterm.js with
//! its fit addon from `target/web-assets/node_modules` (fetched by `web/fetch-assets.sh` at
//! the versions and hashes pinned in `web/package-lock.json`; this script runs it when the
//! files are missing). Each asset is gzip-compressed here, at level 9, with a strong ETag
//! from its uncompressed bytes; `OUT_DIR/web_assets.rs` lists them for `api::page`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// One asset: the URL path it is served at, where it comes from, its media type.
struct Source {
    url: &'static str,
    file: &'static str,
    media_type: &'static str,
}

/// Keel's own sources, under `web/src/`.
const OWN: &[Source] = &[
    Source {
        url: "/",
        file: "index.html",
        media_type: "text/html; charset=utf-8",
    },
    Source {
        url: "/assets/app.js",
        file: "app.js",
        media_type: "text/javascript; charset=utf-8",
    },
    Source {
        url: "/assets/graph.js",
        file: "graph.js",
        media_type: "text/javascript; charset=utf-8",
    },
    Source {
        url: "/assets/style.css",
        file: "style.css",
        media_type: "text/css; charset=utf-8",
    },
];

/// From the npm packages, under `target/web-assets/node_modules/`.
const VENDORED: &[Source] = &[
    Source {
        url: "/assets/xterm.mjs",
        file: "@xterm/xterm/lib/xterm.mjs",
        media_type: "text/javascript; charset=utf-8",
    },
    Source {
        url: "/assets/xterm.css",
        file: "@xterm/xterm/css/xterm.css",
        media_type: "text/css; charset=utf-8",
    },
    Source {
        url: "/assets/addon-fit.mjs",
        file: "@xterm/addon-fit/lib/addon-fit.mjs",
        media_type: "text/javascript; charset=utf-8",
    },
];

/// The licences served at `/assets/licenses.txt`: package and licence file.
const LICENSES: &[(&str, &str)] = &[
    ("@xterm/xterm", "@xterm/xterm/LICENSE"),
    ("@xterm/addon-fit", "@xterm/addon-fit/LICENSE"),
];

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .expect("netstack sits in the workspace")
        .to_path_buf();
    let web = workspace.join("web");
    let assets_dir = env::var_os("KEEL_WEB_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/web-assets"));
    let modules = assets_dir.join("node_modules");
    println!("cargo:rerun-if-env-changed=KEEL_WEB_ASSETS");
    println!("cargo:rerun-if-changed={}", web.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        web.join("package-lock.json").display()
    );
    for s in OWN {
        println!(
            "cargo:rerun-if-changed={}",
            web.join("src").join(s.file).display()
        );
    }

    let lock = web.join("package-lock.json");
    let installed_lock = assets_dir.join("package-lock.json");
    let fresh = fs::read(&lock)
        .ok()
        .is_some_and(|l| fs::read(&installed_lock).ok() == Some(l))
        && VENDORED.iter().all(|s| modules.join(s.file).is_file());
    if !fresh {
        let status = Command::new("bash")
            .arg(web.join("fetch-assets.sh"))
            .env("KEEL_WEB_ASSETS", &assets_dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "web/fetch-assets.sh failed ({s}): the web page needs xterm.js from the npm \
                 registry; run image-builder/install-deps.sh (installs npm) and check registry access"
            ),
            Err(e) => panic!("running bash web/fetch-assets.sh: {e}"),
        }
    }

    let mut table = String::from("&[\n");
    let emit = |url: &str, media_type: &str, bytes: Vec<u8>, table: &mut String| {
        let gz = gzip(&bytes);
        let name = url.trim_start_matches('/').replace(['/', '.'], "_");
        let name = if name.is_empty() {
            "index".to_string()
        } else {
            name
        };
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join(format!("{name}.gz"));
        fs::write(&out, &gz).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
        let _ = writeln!(
            table,
            "    Asset {{ path: {url:?}, media_type: {media_type:?}, etag: \"\\\"{:016x}\\\"\", \
             size: {}, gzip: include_bytes!({:?}) }},",
            fnv1a(&bytes),
            bytes.len(),
            out.display().to_string()
        );
    };
    for s in OWN {
        let bytes = read(&web.join("src").join(s.file));
        emit(s.url, s.media_type, bytes, &mut table);
    }
    for s in VENDORED {
        let bytes = strip_source_map(read(&modules.join(s.file)));
        emit(s.url, s.media_type, bytes, &mut table);
    }
    let mut licenses = String::from(
        "Third-party code in Keel's web page, with its licence.\n\
         Keel itself: Apache-2.0.\n",
    );
    for (package, file) in LICENSES {
        let version = package_version(&modules.join(package).join("package.json"));
        let text = String::from_utf8_lossy(&read(&modules.join(file))).into_owned();
        let _ = write!(licenses, "\n==== {package} {version} ====\n\n{text}");
    }
    emit(
        "/assets/licenses.txt",
        "text/plain; charset=utf-8",
        licenses.into_bytes(),
        &mut table,
    );
    table.push(']');
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_assets.rs");
    fs::write(&out, table).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| {
        panic!(
            "reading web asset {}: {e} (xterm.js files come from web/fetch-assets.sh)",
            path.display()
        )
    })
}

/// The `"version"` of a package.json, found by hand (no JSON parser among build deps).
fn package_version(path: &Path) -> String {
    let text = String::from_utf8_lossy(&read(path)).into_owned();
    text.split("\"version\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or("(unknown version)")
        .to_string()
}

/// Drops a trailing `//# sourceMappingURL=` line: the maps are not embedded, and a browser
/// with developer tools open would ask for them.
fn strip_source_map(mut bytes: Vec<u8>) -> Vec<u8> {
    let marker = b"//# sourceMappingURL=";
    if let Some(at) = bytes.windows(marker.len()).rposition(|w| w == marker) {
        bytes.truncate(at);
    }
    bytes
}

/// A gzip member (RFC 1952) of `data`: fixed 10-byte header (no name, no time), deflate at
/// level 9, CRC-32 and length. `api::page` relies on the 10-byte header when it inflates.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 9));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

/// FNV-1a, 64 bits: the ETag (a change detector, not a security measure).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
