//! Turning one built image into one appliance while flashing: a new configuration generation
//! in the copy's `keel-config` slots, and the kernel command line's API token in `grub.cfg`
//! on the copy's ESP. Both are computed in memory as byte ranges that replace the image's
//! bytes on the way to the target ([`Overlay`]); the image file is never modified.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use keel_config::Config;
use keel_config::record::{self, BlockDevice};

use super::table::{PartitionTable, read_partition_table};
use crate::gpt_image::{CONFIG_NAME, ESP_NAME, GRUB_CFG_PATH};

/// The kernel command-line key `keel build` puts the API token under.
const CMDLINE_TOKEN_KEY: &str = "keel.api-token=";

/// Bytes that replace the image's at `offset` on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Byte offset in the image (and on the target).
    pub offset: u64,
    /// The replacement.
    pub bytes: Vec<u8>,
}

/// What the operator asked to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// `--config FILE`: replaces the image's configuration.
    pub config_file: Option<PathBuf>,
    /// `--hostname NAME`.
    pub hostname: Option<String>,
    /// `--token TOKEN`: the only API token.
    pub token: Option<String>,
    /// `--console PORT[,BAUD]`: the operator console's serial port in `grub.cfg`.
    pub console: Option<crate::console::ConsoleOption>,
}

impl Changes {
    /// Whether anything is to change.
    pub fn any(&self) -> bool {
        self.config_file.is_some()
            || self.hostname.is_some()
            || self.token.is_some()
            || self.console.is_some()
    }
}

/// The result: the replacement bytes and what they say.
#[derive(Debug, Clone)]
pub struct Personalized {
    /// The new configuration partition and, when the token changed, the new ESP.
    pub overlays: Vec<Overlay>,
    /// The configuration the flashed appliance boots with.
    pub config: Config,
    /// Its generation in the `keel-config` slots (the highest, so the kernel loads it).
    pub generation: u64,
    /// Whether `grub.cfg`'s `keel.api-token=` was replaced by the new configuration's first
    /// token (the command-line token works even when the configuration is lost, so leaving
    /// the image's would leave every appliance flashed from it open to the build's token).
    pub cmdline_token_replaced: bool,
}

/// Why the image cannot be personalized.
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    /// Reading the image failed.
    #[error("cannot read the image {path}: {source}")]
    ReadImage {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image lacks a partition `keel build` makes.
    #[error(
        "{path} has no GPT partition named `{name}`: not an image made by `keel build`, so \
         --config/--hostname/--token cannot be applied (flash it without them)"
    )]
    MissingPartition {
        /// The image.
        path: PathBuf,
        /// The partition's name.
        name: &'static str,
    },
    /// `--config FILE` is unreadable or invalid.
    #[error(transparent)]
    ConfigFile(#[from] crate::ApplianceConfigError),
    /// The image's configuration partition holds no valid configuration to start from.
    #[error(
        "the image's configuration partition holds no valid configuration ({reason}); give \
         the whole configuration with --config FILE"
    )]
    NoCurrentConfig {
        /// What is wrong.
        reason: String,
    },
    /// The configuration after `--hostname`/`--token` breaks the schema's rules.
    #[error("the resulting configuration is invalid:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// The configuration does not fit into a slot.
    #[error("cannot write the configuration into the image's keel-config slots: {0}")]
    Save(String),
    /// `grub.cfg` on the ESP could not be read or rewritten.
    #[error("cannot update the kernel command line in the ESP's {GRUB_CFG_PATH}: {0}")]
    GrubCfg(String),
}

/// Computes the overlays for `changes` on `image`.
pub fn personalize(image: &Path, changes: &Changes) -> Result<Personalized, PersonalizeError> {
    let read_err = |source| PersonalizeError::ReadImage {
        path: image.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(image).map_err(read_err)?;
    let table = read_partition_table(&mut file).map_err(read_err)?;
    let find = |name: &'static str| {
        table
            .find(name)
            .cloned()
            .ok_or_else(|| PersonalizeError::MissingPartition {
                path: image.to_path_buf(),
                name,
            })
    };
    let config_part = find(CONFIG_NAME)?;
    let mut slots =
        read_range(&mut file, config_part.offset(), config_part.bytes()).map_err(read_err)?;

    let mut config = match &changes.config_file {
        Some(path) => crate::appliance::load(path)?,
        None => current_config(&mut slots)?,
    };
    apply(&mut config, changes)?;

    let generation = record::save(&mut SlotsInMemory(&mut slots), &config.to_json_pretty())
        .map_err(|e| PersonalizeError::Save(e.to_string()))?;
    let mut overlays = vec![Overlay {
        offset: config_part.offset(),
        bytes: slots,
    }];

    let mut cmdline_token_replaced = false;
    let mut new_esp = None;
    if let Some(token) = config.management.api_tokens.first() {
        let esp = find(ESP_NAME)?;
        let esp_bytes = read_range(&mut file, esp.offset(), esp.bytes()).map_err(read_err)?;
        if let Some(bytes) = replace_cmdline_token(esp_bytes, token)? {
            new_esp = Some((esp.offset(), bytes));
            cmdline_token_replaced = true;
        }
    }
    if let Some(console) = &changes.console {
        // On top of the token's rewrite when there was one: both change the same grub.cfg.
        let (offset, esp_bytes) = match new_esp.take() {
            Some(done) => done,
            None => {
                let esp = find(ESP_NAME)?;
                let bytes = read_range(&mut file, esp.offset(), esp.bytes()).map_err(read_err)?;
                (esp.offset(), bytes)
            }
        };
        let bytes = rewrite_grub_cfg(esp_bytes, |text| Some(with_grub_console(text, console)))?
            .ok_or_else(|| PersonalizeError::GrubCfg("it has no kernel line".to_string()))?;
        new_esp = Some((offset, bytes));
    }
    if let Some((offset, bytes)) = new_esp {
        overlays.push(Overlay { offset, bytes });
    }
    overlays.sort_by_key(|o| o.offset);
    Ok(Personalized {
        overlays,
        config,
        generation,
        cmdline_token_replaced,
    })
}

/// The partition table of `image`, for the summary.
pub fn image_table(image: &Path) -> std::io::Result<PartitionTable> {
    read_partition_table(&mut std::fs::File::open(image)?)
}

/// `--hostname` and `--token` on top of `config`, validated (every violation with its path).
pub fn apply(config: &mut Config, changes: &Changes) -> Result<(), PersonalizeError> {
    if let Some(hostname) = &changes.hostname {
        config.hostname = hostname.clone();
    }
    if let Some(token) = &changes.token {
        config.management.api_tokens = vec![token.clone()];
    }
    config.validate().map_err(|errors| {
        PersonalizeError::Invalid(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        )
    })
}

/// The configuration the kernel would load from `slots` (the newest valid record).
fn current_config(slots: &mut [u8]) -> Result<Config, PersonalizeError> {
    let loaded =
        record::load(&mut SlotsInMemory(slots)).map_err(|e| PersonalizeError::NoCurrentConfig {
            reason: e.to_string(),
        })?;
    Config::from_json(&loaded.payload).map_err(|e| PersonalizeError::NoCurrentConfig {
        reason: e.to_string(),
    })
}

/// The ESP image `esp` with every `keel.api-token=…` word in `grub.cfg` set to `token`;
/// `None` when `grub.cfg` has no such word (nothing to change).
pub fn replace_cmdline_token(
    esp: Vec<u8>,
    token: &str,
) -> Result<Option<Vec<u8>>, PersonalizeError> {
    rewrite_grub_cfg(esp, |text| with_cmdline_token(text, token))
}

/// `grub.cfg`'s text with the kernel line's `console=` set to `console` and GRUB's `serial`
/// command moved to the same port.
fn with_grub_console(text: &str, console: &crate::console::ConsoleOption) -> String {
    text.split('\n')
        .map(|line| {
            let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
            let trimmed = line.trim_start();
            if let Some(args) = trimmed.strip_prefix("multiboot2 ") {
                let (kernel, cmdline) = args.split_once(' ').unwrap_or((args, ""));
                let cmdline = crate::console::with_console(cmdline, console);
                format!("{indent}multiboot2 {kernel} {cmdline}")
            } else if trimmed.starts_with("serial ") {
                format!("{indent}{}", console.grub_serial())
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ESP image `esp` with `grub.cfg` replaced by `edit`'s result; `None` when `edit`
/// changes nothing.
fn rewrite_grub_cfg(
    esp: Vec<u8>,
    edit: impl FnOnce(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, PersonalizeError> {
    let fail = |what: &str, e: std::io::Error| PersonalizeError::GrubCfg(format!("{what}: {e}"));
    let mut cursor = Cursor::new(esp);
    {
        let fs = fatfs::FileSystem::new(&mut cursor, fatfs::FsOptions::new())
            .map_err(|e| fail("not a FAT file system", e))?;
        let path = GRUB_CFG_PATH.trim_start_matches('/');
        let mut text = String::new();
        fs.root_dir()
            .open_file(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| fail("reading it", e))?;
        let Some(new_text) = edit(&text) else {
            return Ok(None);
        };
        let mut f = fs
            .root_dir()
            .open_file(path)
            .map_err(|e| fail("opening it", e))?;
        f.truncate().map_err(|e| fail("truncating it", e))?;
        f.write_all(new_text.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| fail("writing it", e))?;
        drop(f);
        fs.unmount()
            .map_err(|e| fail("closing the file system", e))?;
    }
    Ok(Some(cursor.into_inner()))
}

/// `text` with the value of every `keel.api-token=` word replaced, or `None` without one.
fn with_cmdline_token(text: &str, token: &str) -> Option<String> {
    let mut found = false;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            // Rebuild only lines that carry the key, keeping the others byte for byte.
            if !line.contains(CMDLINE_TOKEN_KEY) {
                return line.to_owned();
            }
            let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| {
                    if w.starts_with(CMDLINE_TOKEN_KEY) {
                        found = true;
                        format!("{CMDLINE_TOKEN_KEY}{token}")
                    } else {
                        w.to_owned()
                    }
                })
                .collect();
            format!("{indent}{}", words.join(" "))
        })
        .collect();
    found.then(|| lines.join("\n"))
}

fn read_range(file: &mut std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The configuration partition's bytes as the record store's [`BlockDevice`]: the same A/B
/// slot logic the kernel uses, so the new record is exactly what its `load` picks.
struct SlotsInMemory<'a>(&'a mut [u8]);

/// An access outside the partition (the store never makes one; kept as an error, not a
/// panic, because the bytes come from a file).
#[derive(Debug)]
struct OutOfRange;

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an access outside the configuration partition")
    }
}

impl SlotsInMemory<'_> {
    fn range(&self, lba: u64, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        let start = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(Self::SECTOR))
            .ok_or(OutOfRange)?;
        let end = start.checked_add(len).ok_or(OutOfRange)?;
        if end > self.0.len() {
            return Err(OutOfRange);
        }
        Ok(start..end)
    }
}

impl BlockDevice for SlotsInMemory<'_> {
    type Error = OutOfRange;

    fn sector_count(&self) -> u64 {
        (self.0.len() / Self::SECTOR) as u64
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let r = self.range(lba, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), OutOfRange> {
        let r = self.range(lba, buf.len())?;
        self.0[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutOfRange> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_goes_on_the_kernel_line_and_grubs_serial() {
        let console = crate::console::parse_console_option("ttyS1,57600").unwrap();
        let cfg = "set timeout=0\nserial --unit=0 --speed=115200\nmenuentry 'Keel' {\n    \
                   multiboot2 /boot/keel.elf keel.api-token=t console=ttyS0\n    boot\n}\n";
        assert_eq!(
            with_grub_console(cfg, &console),
            "set timeout=0\nserial --unit=1 --speed=57600\nmenuentry 'Keel' {\n    \
             multiboot2 /boot/keel.elf keel.api-token=t console=ttyS1,57600\n    boot\n}\n"
        );
    }

    #[test]
    fn the_cmdline_token_is_replaced_and_other_lines_kept() {
        let cfg = "serial --unit=0\n\tmultiboot2 /boot/keel.elf keel.api-token=old quiet\n\tboot\n";
        let new = with_cmdline_token(cfg, "n3w").unwrap();
        assert_eq!(
            new,
            "serial --unit=0\n\tmultiboot2 /boot/keel.elf keel.api-token=n3w quiet\n\tboot\n"
        );
        assert_eq!(with_cmdline_token("boot\n", "x"), None);
    }

    #[test]
    fn a_new_generation_wins_over_the_built_one() {
        // The partition as `keel build` writes it: generation 1 in slot A, slot B zeroed.
        let built = crate::tls_cert::default_config("0123456789abcdef0123456789abcdef");
        let mut slots = crate::gpt_image::config_partition_record(&built.to_json_pretty()).unwrap();
        slots.resize((crate::gpt_image::CONFIG_SECTORS * 512) as usize, 0);

        let mut config = current_config(&mut slots).unwrap();
        assert_eq!(config, built);
        let changes = Changes {
            hostname: Some("rack1-a".into()),
            token: Some("fedcba9876543210fedcba9876543210".into()),
            ..Changes::default()
        };
        apply(&mut config, &changes).unwrap();
        let generation =
            record::save(&mut SlotsInMemory(&mut slots), &config.to_json_pretty()).unwrap();
        assert_eq!(generation, 2);
        let loaded = current_config(&mut slots).unwrap();
        assert_eq!(loaded.hostname, "rack1-a");
        assert_eq!(
            loaded.management.api_tokens,
            ["fedcba9876543210fedcba9876543210"]
        );
    }

    #[test]
    fn an_invalid_hostname_is_refused_with_its_path() {
        let mut config = crate::tls_cert::default_config("0123456789abcdef0123456789abcdef");
        let changes = Changes {
            hostname: Some("not a hostname!".into()),
            ..Changes::default()
        };
        let PersonalizeError::Invalid(errors) = apply(&mut config, &changes).unwrap_err() else {
            panic!("not Invalid")
        };
        assert!(
            errors.iter().any(|e| e.starts_with("hostname: ")),
            "{errors:?}"
        );
    }
}
