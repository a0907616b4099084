//! Arbitrary bytes as the configuration: the first byte chooses the reader, the rest is the
//! document.
//!
//! - even: JSON, as the store, the HTTP API and `keel config` read it (`Config::from_json`:
//!   parse, deserialize, validate);
//! - odd: TOML, as `keel build --config` reads it (the image builder's `parse_toml`: TOML to
//!   JSON, then the same validation), with its error locations.
//!
//! Nothing may panic. A document either side accepts must be valid, its canonical JSON must
//! read back to the same configuration and encode to the same bytes, and the edits the
//! console and the API make (`set`/`unset` by path, taken from the document's own leaves)
//! must give valid configurations or errors.
#![no_main]

use keel_config::{Config, edit};
use keel_fuzz::appliance::parse_toml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, document)) = data.split_first() else {
        return;
    };
    let config = if mode & 1 == 0 {
        match Config::from_json(document) {
            Ok(config) => config,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    } else {
        let Ok(text) = std::str::from_utf8(document) else {
            return;
        };
        match parse_toml(text) {
            Ok(config) => config,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    };
    assert_eq!(config.validate(), Ok(()));

    let canonical = config.to_json_pretty();
    let again = Config::from_json(&canonical).expect("the canonical JSON reads back");
    assert_eq!(again, config);
    assert_eq!(again.to_json_pretty(), canonical);
    assert_eq!(edit::etag(&again), edit::etag(&config));

    // Each leaf set to its own value, then unset: what the console's `config set`/`unset`
    // and the API's PATCH do. The mode byte's upper bits pick a few of them.
    let leaves = edit::leaves(&config);
    for (path, value) in leaves
        .iter()
        .skip(usize::from(mode >> 1) % 8)
        .step_by(3)
        .take(4)
    {
        let same = edit::set(&config, path, value);
        if let Ok(same) = &same {
            assert_eq!(same.validate(), Ok(()));
        }
        if let Ok(fewer) = edit::unset(&config, path) {
            assert_eq!(fewer.validate(), Ok(()));
            let _ = edit::diff(&config, &fewer);
        }
    }
});
