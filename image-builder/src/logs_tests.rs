//! Host tests for `logs`. No defmt kernel is built here: a small ELF object carrying a `.defmt`
//! section and defmt's symbols is written with the `object` crate, and frames are encoded by a
//! test rzCOBS encoder, so the whole path (table parse, framing, resync, formatting) runs.

use super::*;
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

/// Index of each test format string in the synthetic `.defmt` section.
const INFO: u16 = 1;
const WARN: u16 = 2;
const PRINT: u16 = 3;
const TIMESTAMP: u16 = 4;

/// rzCOBS encoding as `defmt::Encoder` does it (reverse zero-compressing COBS), without the
/// trailing `0x00` separator.
fn rzcobs_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut run = 0u32;
    let mut zeros = 0u8;
    for &byte in data {
        if run < 7 {
            if byte == 0 {
                zeros |= 1 << run;
            } else {
                out.push(byte);
            }
            run += 1;
            if run == 7 && zeros != 0 {
                out.push(zeros);
                run = 0;
                zeros = 0;
            }
        } else if byte == 0 {
            out.push((run - 7) as u8 | 0x80);
            run = 0;
            zeros = 0;
        } else {
            out.push(byte);
            run += 1;
            if run == 134 {
                out.push(0xFF);
                run = 0;
                zeros = 0;
            }
        }
    }
    if run > 0 {
        if run < 7 {
            out.push(zeros | (0x7Fu8 << run) & 0x7F);
        } else {
            out.push((run - 7) as u8 | 0x80);
        }
    }
    out
}

/// One wire frame: index, timestamp (u64), arguments; encoded and terminated.
fn frame(index: u16, timestamp: u64, args: &[u8]) -> Vec<u8> {
    let mut raw = index.to_le_bytes().to_vec();
    raw.extend_from_slice(&timestamp.to_le_bytes());
    raw.extend_from_slice(args);
    let mut encoded = rzcobs_encode(&raw);
    encoded.push(0);
    encoded
}

fn defmt_symbol(tag: &str, data: &str, n: u16) -> String {
    format!(
        r#"{{"package":"keel-kernel","tag":"{tag}","data":"{data}","disambiguator":"{n}","crate_name":"keel_kernel"}}"#
    )
}

/// An ELF object shaped like a defmt firmware: a `.defmt` section whose symbols' addresses are
/// the frame indices, plus the version and encoding marker symbols.
fn defmt_elf(version: &str, with_section: bool) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let add = |obj: &mut Object<'_>, name: String, section: SymbolSection, value: u64| {
        obj.add_symbol(Symbol {
            name: name.into_bytes(),
            value,
            size: 1,
            kind: SymbolKind::Data,
            scope: SymbolScope::Linkage,
            weak: false,
            section,
            flags: SymbolFlags::None,
        });
    };
    add(
        &mut obj,
        format!("_defmt_version_ = {version}"),
        SymbolSection::Absolute,
        0,
    );
    add(
        &mut obj,
        "_defmt_encoding_ = rzcobs".into(),
        SymbolSection::Absolute,
        0,
    );
    if with_section {
        let defmt = obj.add_section(Vec::new(), b".defmt".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(defmt, &[0; 16], 1);
        let entries = [
            ("defmt_info", "booted in {=u32} ms", INFO),
            ("defmt_warn", "link {=str} down", WARN),
            ("defmt_println", "plain {=u8}", PRINT),
            ("defmt_timestamp", "{=u64}", TIMESTAMP),
        ];
        for (tag, data, index) in entries {
            add(
                &mut obj,
                defmt_symbol(tag, data, index),
                SymbolSection::Section(defmt),
                u64::from(index),
            );
        }
    }
    obj.write().unwrap()
}

fn write_elf(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("kernel.elf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn rzcobs_encoder_never_emits_zero() {
    for data in [
        &[0u8; 20][..],
        &[1; 300],
        &[0, 1, 0, 2, 0, 3, 0, 4, 5, 6, 7, 8, 9, 0],
    ] {
        assert!(!rzcobs_encode(data).contains(&0));
    }
}

#[test]
fn split_frames_handles_separators_and_tail() {
    let stream = [0, 0, 1, 2, 0, 3, 0, 0, 0, 4, 5];
    assert_eq!(
        split_frames(&stream),
        vec![
            Chunk::Frame(&[1, 2]),
            Chunk::Frame(&[3]),
            Chunk::Truncated(&[4, 5])
        ]
    );
    assert_eq!(split_frames(&[1, 0]), vec![Chunk::Frame(&[1])]);
    assert!(split_frames(&[]).is_empty());
    assert!(split_frames(&[0, 0]).is_empty());
}

#[test]
fn decodes_levels_timestamps_and_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let elf = write_elf(tmp.path(), &defmt_elf("4", true));
    let mut stream = frame(INFO, 1500, &42u32.to_le_bytes());
    let mut warn_args = vec![4, 0, 0, 0]; // {=str}: u32 length (usize on the wire) then bytes
    warn_args.extend_from_slice(b"eth0");
    stream.extend(frame(WARN, 1501, &warn_args));
    stream.extend(frame(PRINT, 0, &[0]));
    let text = decode_defmt(&elf, &stream).unwrap();
    assert_eq!(
        text,
        "1500 INFO booted in 42 ms\n1501 WARN link eth0 down\n0 PRINT plain 0\n"
    );
}

#[test]
fn resynchronises_after_garbage_and_reports_a_truncated_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let table = load_table(&write_elf(tmp.path(), &defmt_elf("4", true))).unwrap();
    let good = frame(INFO, 7, &1u32.to_le_bytes());
    let mut long_args = 20u32.to_le_bytes().to_vec();
    long_args.extend_from_slice(b"a-long-interface-nam");
    let long = frame(WARN, 123_456_789, &long_args);
    let mut stream = Vec::new();
    // Capture started mid-frame: the second half of a frame, then its separator.
    stream.extend_from_slice(&long[long.len() / 2..]);
    // Plain text someone printed on COM2.
    stream.extend_from_slice(b"hello\n\0");
    stream.extend_from_slice(&good);
    // A frame with an index that is not in the table.
    stream.extend(frame(999, 0, &[]));
    stream.extend_from_slice(&[0, 0, 0]);
    stream.extend(frame(INFO, 8, &2u32.to_le_bytes()));
    // Capture stopped mid-frame.
    stream.extend_from_slice(&good[..4]);
    let lines = decode_stream(&table, &stream);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(lines[0].starts_with("- ? malformed frame"), "{}", lines[0]);
    assert_eq!(lines[1], "- ? malformed frame (6 bytes skipped)");
    assert_eq!(lines[2], "7 INFO booted in 1 ms");
    assert!(lines[3].starts_with("- ? malformed frame"), "{}", lines[3]);
    assert_eq!(lines[4], "8 INFO booted in 2 ms");
    assert_eq!(lines[5], "- ? truncated frame at end of capture (4 bytes)");
}

#[test]
fn long_frames_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let table = load_table(&write_elf(tmp.path(), &defmt_elf("4", true))).unwrap();
    let name = "x".repeat(300);
    let mut args = (name.len() as u32).to_le_bytes().to_vec();
    args.extend_from_slice(name.as_bytes());
    let lines = decode_stream(&table, &frame(WARN, u64::MAX, &args));
    assert_eq!(lines, vec![format!("{} WARN link {name} down", u64::MAX)]);
}

#[test]
fn elf_without_defmt_table() {
    // The running test binary is an ELF without `.defmt`.
    let exe = std::env::current_exe().unwrap();
    let err = decode_defmt(&exe, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} has no defmt table: was it built by `keel build`?",
            exe.display()
        )
    );
}

#[test]
fn unusable_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let err = decode_defmt(&tmp.path().join("missing"), &[]).unwrap_err();
    assert!(matches!(err, LogsError::ReadElf { .. }), "{err}");

    let not_elf = tmp.path().join("notes.txt");
    std::fs::write(&not_elf, b"not an ELF").unwrap();
    let err = decode_defmt(&not_elf, &[]).unwrap_err();
    assert!(matches!(err, LogsError::BadTable { .. }), "{err}");

    let old = write_elf(tmp.path(), &defmt_elf("2", true));
    let err = decode_defmt(&old, &[]).unwrap_err();
    assert!(err.to_string().contains("version mismatch"), "{err}");

    let no_section = write_elf(tmp.path(), &defmt_elf("4", false));
    let err = decode_defmt(&no_section, &[]).unwrap_err();
    assert!(
        err.to_string().contains("no `.defmt` metadata section"),
        "{err}"
    );
}
