//! `keel logs`: decoding the kernel's defmt diagnostics captured from COM2.
//!
//! The kernel's global defmt logger writes `defmt::Encoder` output: rzCOBS-encoded frames, each
//! ended by a `0x00` byte. A capture may start or stop mid-frame and a frame may be damaged, so
//! [`split_frames`] cuts the stream at the separators itself and every frame is decoded on its
//! own: one bad frame costs one line, never the rest of the stream. The format strings come from
//! the `.defmt` table of the kernel ELF (`defmt-decoder`'s [`Table`]).

use std::path::{Path, PathBuf};

use defmt_decoder::{DecodeError, Encoding, Frame, Table};

/// Why decoding failed as a whole (single bad frames only produce marker lines).
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The ELF cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadElf {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ELF has no `.defmt` section.
    #[error("{} has no defmt table: was it built by `keel build`?", path.display())]
    NoDefmtTable {
        /// The file.
        path: PathBuf,
    },
    /// The ELF or its defmt table is unusable (not an ELF, other defmt version, ...).
    #[error("cannot read the defmt table of {path}: {reason}")]
    BadTable {
        /// The file.
        path: PathBuf,
        /// defmt-decoder's explanation.
        reason: String,
    },
}

/// One piece of a captured stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// The bytes of one frame, without its `0x00` terminator.
    Frame(&'a [u8]),
    /// Bytes after the last terminator: a frame still being written when capture stopped.
    Truncated(&'a [u8]),
}

/// Cuts a captured rzCOBS stream into frames at `0x00` separators. Runs of zeros (idle line,
/// padding) yield nothing.
pub fn split_frames(stream: &[u8]) -> Vec<Chunk<'_>> {
    let mut chunks: Vec<Chunk<'_>> = stream
        .split(|&b| b == 0)
        .filter(|piece| !piece.is_empty())
        .map(Chunk::Frame)
        .collect();
    if stream.last().is_some_and(|&b| b != 0)
        && let Some(Chunk::Frame(last)) = chunks.pop()
    {
        chunks.push(Chunk::Truncated(last));
    }
    chunks
}

/// `<timestamp> <LEVEL> <message>` for one decoded frame; `-` stands for a missing timestamp and
/// `PRINT` for `defmt::println!` frames, which have no level.
pub fn format_frame(frame: &Frame<'_>) -> String {
    let timestamp = frame
        .display_timestamp()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".to_string());
    let level = frame
        .level()
        .map(|l| l.as_str().to_ascii_uppercase())
        .unwrap_or_else(|| "PRINT".to_string());
    format!("{timestamp} {level} {}", frame.display_message())
}

/// Decodes a captured stream with `table`: one line per frame, including marker lines for
/// damaged frames and a truncated tail.
pub fn decode_stream(table: &Table, stream: &[u8]) -> Vec<String> {
    match table.encoding() {
        Encoding::Rzcobs => decode_rzcobs(table, stream),
        _ => decode_raw(table, stream),
    }
}

fn decode_rzcobs(table: &Table, stream: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    for chunk in split_frames(stream) {
        match chunk {
            Chunk::Frame(bytes) => {
                // A fresh decoder per frame: whatever this frame holds cannot leak into the next.
                let mut decoder = table.new_stream_decoder();
                decoder.received(bytes);
                decoder.received(&[0]);
                match decoder.decode() {
                    Ok(frame) => lines.push(format_frame(&frame)),
                    Err(DecodeError::Malformed | DecodeError::UnexpectedEof) => {
                        lines.push(malformed_line(bytes.len()))
                    }
                }
            }
            Chunk::Truncated(bytes) => lines.push(format!(
                "- ? truncated frame at end of capture ({} bytes)",
                bytes.len()
            )),
        }
    }
    lines
}

/// Raw (unframed) encoding cannot resynchronise: decode until the data ends or goes bad.
fn decode_raw(table: &Table, stream: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut decoder = table.new_stream_decoder();
    decoder.received(stream);
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(format_frame(&frame)),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => {
                lines.push("- ? malformed data: raw defmt encoding cannot resynchronise".into());
                break;
            }
        }
    }
    lines
}

fn malformed_line(len: usize) -> String {
    format!("- ? malformed frame ({len} bytes skipped)")
}

/// Loads the defmt table of the ELF at `elf`.
pub fn load_table(elf: &Path) -> Result<Table, LogsError> {
    let bytes = std::fs::read(elf).map_err(|source| LogsError::ReadElf {
        path: elf.to_path_buf(),
        source,
    })?;
    match Table::parse(&bytes) {
        Ok(Some(table)) => Ok(table),
        Ok(None) => Err(LogsError::NoDefmtTable {
            path: elf.to_path_buf(),
        }),
        Err(e) => Err(LogsError::BadTable {
            path: elf.to_path_buf(),
            reason: format!("{e:#}"),
        }),
    }
}

/// Decodes a captured COM2 `stream` with the defmt table of `elf`: one line per frame, each
/// ending in a newline.
pub fn decode_defmt(elf: &Path, stream: &[u8]) -> Result<String, LogsError> {
    let table = load_table(elf)?;
    let mut out = String::new();
    for line in decode_stream(&table, stream) {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
