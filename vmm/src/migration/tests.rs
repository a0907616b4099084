//! Host tests: framing, every message round trip, refused streams, the CPU check, the
//! pre-copy policy and the destination's state machine.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::backend::DirtyBitmap;

fn cpu() -> CpuView {
    CpuView {
        vendor: *b"AuthenticAMD",
        entries: MIGRATED_LEAVES
            .iter()
            .map(|&(leaf, subleaf)| CpuViewEntry {
                leaf,
                subleaf,
                regs: [0x0f, 0xf0f0, 0x00ff_00ff, 0x1234_5678],
            })
            .collect(),
    }
}

fn start(token: &str) -> Message {
    Message::Start(Start {
        keel_version: String::from("0.1.0"),
        token: String::from(token),
        cpu: cpu(),
    })
}

fn config(memory_size: u64) -> Message {
    Message::Config(Config {
        name: String::from("web"),
        memory_size,
        vcpus: 1,
        images: vec![ImageRef {
            name: String::from("debian.img"),
            size: 1 << 20,
            sha256: [7; 32],
        }],
        vm_config: b"name = \"web\"".to_vec(),
    })
}

fn stream(messages: &[Message]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for m in messages {
        m.encode(&mut out);
    }
    out
}

/// Decodes `bytes` fed in pieces of `piece` bytes.
fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Message>, StreamError> {
    let mut decoder = FrameDecoder::new();
    let mut messages = Vec::new();
    for chunk in bytes.chunks(piece) {
        decoder.push(chunk);
        while let Some((kind, body)) = decoder.next_frame()? {
            messages.push(Message::decode(kind, &body)?);
        }
    }
    decoder.finish()?;
    Ok(messages)
}

fn whole_conversation() -> Vec<Message> {
    vec![
        start("s3cret"),
        config(4 << 20),
        Message::Memory(MemoryRun {
            gpa: 0x1000,
            data: vec![0xab; 0x2000],
        }),
        Message::RoundEnd { round: 1, pages: 2 },
        Message::Pause,
        Message::Memory(MemoryRun {
            gpa: 0x3f_f000,
            data: vec![1; 0x1000],
        }),
        Message::RoundEnd { round: 2, pages: 1 },
        Message::State(vec![9; 100]),
        Message::Complete,
    ]
}

#[test]
fn every_message_round_trips_in_any_piece_size() {
    let messages = whole_conversation();
    let bytes = stream(&messages);
    for piece in [1, 3, 7, 4096, bytes.len()] {
        assert_eq!(
            decode_all(&bytes, piece).unwrap(),
            messages,
            "pieces of {piece}"
        );
    }
    let abort = stream(&[Message::Abort(String::from("operator cancelled"))]);
    assert_eq!(
        decode_all(&abort, 5).unwrap(),
        [Message::Abort(String::from("operator cancelled"))]
    );
}

#[test]
fn replies_round_trip() {
    for reply in [
        Reply::Accepted,
        Reply::Refused(Refusal::MissingImage(String::from("debian.img"))),
        Reply::Refused(Refusal::BadToken),
        Reply::Resumed {
            downtime_us: 42_000,
        },
    ] {
        let mut bytes = MAGIC.to_vec();
        reply.encode(&mut bytes);
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes);
        let (kind, body) = decoder.next_frame().unwrap().unwrap();
        assert_eq!(Reply::decode(kind, &body).unwrap(), reply);
        decoder.finish().unwrap();
    }
}

#[test]
fn a_truncated_stream_is_refused_at_every_cut() {
    let bytes = stream(&whole_conversation());
    let frame_ends: Vec<usize> = {
        // The offsets where a frame ends are the only clean cuts.
        let mut ends = vec![MAGIC.len()];
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len + 4;
            ends.push(at);
        }
        ends
    };
    for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1, 3]) {
        let result = decode_all(&bytes[..cut], 64);
        if frame_ends.contains(&cut) {
            assert!(result.is_ok(), "a cut between frames decodes what came");
        } else {
            assert!(
                matches!(result, Err(StreamError::Truncated { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }
    // A stream cut between frames is caught by the destination instead.
    let mut destination = Destination::new(policy());
    for message in decode_all(&bytes[..frame_ends[4]], 64).unwrap() {
        destination.handle(message).unwrap();
    }
    let refusal = destination.end_of_stream().unwrap_err();
    assert!(
        refusal.to_string().contains("closed the stream"),
        "{refusal}"
    );
}

#[test]
fn a_flipped_bit_anywhere_in_a_frame_fails_its_crc() {
    let bytes = stream(&[start("s3cret"), config(4 << 20)]);
    // Flip bits in kinds, bodies and CRCs (not lengths: those fail in other ways).
    for at in (MAGIC.len() + 4..bytes.len()).step_by(5) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let result = decode_all(&bad, 4096);
        assert!(result.is_err(), "flip at {at} went unnoticed");
        if let Err(StreamError::UnknownKind(_) | StreamError::Oversized { .. }) = result {
            continue; // the flipped byte was the kind
        }
        assert!(
            matches!(
                result,
                Err(StreamError::BadChecksum { .. }) | Err(StreamError::Truncated { .. })
            ),
            "flip at {at}: {result:?}"
        );
    }
}

#[test]
fn a_wrong_version_and_a_wrong_magic_are_named() {
    let mut bytes = stream(&[start("s3cret")]);
    // The version is the first 4 body bytes; re-encode the frame with version 2.
    let (kind, mut body) = {
        let mut d = FrameDecoder::new();
        d.push(&bytes);
        d.next_frame().unwrap().unwrap()
    };
    body[..4].copy_from_slice(&2u32.to_le_bytes());
    bytes.truncate(MAGIC.len());
    frame::encode_frame(kind, &body, &mut bytes);
    let error = decode_all(&bytes, 16).unwrap_err();
    assert_eq!(error, StreamError::WrongVersion { got: 2 });
    assert!(error.to_string().contains("same Keel release"));

    let mut http = b"GET / HTTP/1.1\r\n".to_vec();
    http.extend_from_slice(&stream(&[Message::Pause])[MAGIC.len()..]);
    assert_eq!(decode_all(&http, 2).unwrap_err(), StreamError::BadMagic);
}

#[test]
fn oversized_frames_are_refused_from_their_header_alone() {
    let mut bytes = MAGIC.to_vec();
    // A memory frame announcing 2 MiB: refused once the length and kind are in, without
    // the body.
    bytes.extend_from_slice(&(2u32 << 20).to_le_bytes());
    bytes.push(0x03);
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes);
    assert!(matches!(
        decoder.next_frame(),
        Err(StreamError::Oversized { kind: 0x03, .. })
    ));
    // Any frame over the global limit, kind or not.
    let mut decoder = FrameDecoder::new();
    decoder.push(&MAGIC);
    decoder.push(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decoder.next_frame(),
        Err(StreamError::Oversized { kind: 0, .. })
    ));
    // Unknown kinds and empty frames.
    let mut decoder = FrameDecoder::new();
    decoder.push(&MAGIC);
    decoder.push(&[1, 0, 0, 0, 0x7f]);
    assert_eq!(decoder.next_frame(), Err(StreamError::UnknownKind(0x7f)));
    let mut decoder = FrameDecoder::new();
    decoder.push(&MAGIC);
    decoder.push(&[0, 0, 0, 0]);
    assert_eq!(decoder.next_frame(), Err(StreamError::Empty));
}

#[test]
fn malformed_memory_frames_are_refused() {
    for (gpa, len, reason) in [
        (0x1001, 0x1000, "address not 4 KiB aligned"),
        (0x1000, 0x800, "not a whole number of pages"),
        (0x1000, 0, "not a whole number of pages"),
    ] {
        let mut body = u64::to_le_bytes(gpa).to_vec();
        body.extend(core::iter::repeat_n(0u8, len));
        let mut bytes = MAGIC.to_vec();
        frame::encode_frame(0x03, &body, &mut bytes);
        assert_eq!(
            decode_all(&bytes, 4096).unwrap_err(),
            StreamError::Malformed {
                what: "memory",
                reason
            }
        );
    }
}

fn policy() -> DestinationPolicy {
    DestinationPolicy {
        tokens: vec![String::new(), String::from("s3cret")],
        cpu: cpu(),
        max_memory: 64 << 20,
        max_vcpus: 4,
    }
}

#[test]
fn the_destination_takes_a_whole_conversation_and_hands_the_state_over_last() {
    let mut destination = Destination::new(policy());
    let mut events = Vec::new();
    for message in whole_conversation() {
        assert!(!destination.is_complete(), "complete only at the end");
        events.push(destination.handle(message).unwrap());
    }
    assert!(destination.is_complete());
    assert!(matches!(events[0], DestinationEvent::Started(_)));
    assert!(matches!(events[1], DestinationEvent::Configured(_)));
    assert_eq!(events[4], DestinationEvent::Paused);
    assert_eq!(events[7], DestinationEvent::StateReceived);
    assert_eq!(
        events[8],
        DestinationEvent::Complete {
            state: vec![9; 100]
        }
    );
    assert_eq!(destination.memory_bytes, 0x3000);
    assert_eq!(destination.rounds, 2);
    destination.end_of_stream().unwrap();
    // Nothing after complete.
    assert!(destination.handle(Message::Pause).is_err());
}

#[test]
fn the_destination_refuses_wrong_tokens_cpus_and_orders() {
    // Wrong token, and an empty token never admits even when one is configured empty.
    for token in ["wrong", ""] {
        let mut d = Destination::new(policy());
        assert_eq!(d.handle(start(token)), Err(Refusal::BadToken));
        assert!(d.has_failed());
        assert!(d.handle(config(4 << 20)).is_err(), "failed stays failed");
    }
    // A CPU lacking one feature bit the guest saw.
    let mut poorer = policy();
    poorer.cpu.entries[1].regs[1] &= !0x10; // leaf 7 EBX bit 4
    let mut d = Destination::new(poorer);
    let Err(Refusal::Cpu(why)) = d.handle(start("s3cret")) else {
        panic!("a missing feature must be refused");
    };
    assert!(why.contains("leaf 0x7.0 ebx bits 0x00000010"), "{why}");
    // Another vendor.
    let mut intel = policy();
    intel.cpu.vendor = *b"GenuineIntel";
    let mut d = Destination::new(intel);
    let Err(Refusal::Cpu(why)) = d.handle(start("s3cret")) else {
        panic!("another vendor must be refused");
    };
    assert!(
        why.contains("AuthenticAMD") && why.contains("GenuineIntel"),
        "{why}"
    );
    // A richer destination is fine.
    let mut richer = policy();
    richer.cpu.entries[0].regs[2] |= 0x8000_0000;
    assert!(Destination::new(richer).handle(start("s3cret")).is_ok());
    // Out of order: state before pause, memory before config, complete before state.
    for wrong in [
        vec![start("s3cret"), config(4 << 20), Message::State(vec![])],
        vec![start("s3cret"), Message::Pause],
        vec![
            start("s3cret"),
            config(4 << 20),
            Message::Pause,
            Message::Complete,
        ],
        vec![config(4 << 20)],
    ] {
        let mut d = Destination::new(policy());
        let n = wrong.len();
        for (i, message) in wrong.into_iter().enumerate() {
            let result = d.handle(message);
            if i + 1 < n {
                result.unwrap();
            } else {
                let Err(Refusal::Stream(why)) = result else {
                    panic!("out of order must be refused: {result:?}");
                };
                assert!(why.contains("out of order"), "{why}");
            }
        }
    }
}

#[test]
fn the_destination_refuses_memory_outside_ram_and_too_much_ram() {
    let mut d = Destination::new(policy());
    d.handle(start("s3cret")).unwrap();
    d.handle(config(4 << 20)).unwrap();
    let result = d.handle(Message::Memory(MemoryRun {
        gpa: (4 << 20) - 0x1000,
        data: vec![0; 0x2000],
    }));
    assert!(
        matches!(&result, Err(Refusal::Stream(why)) if why.contains("outside the VM's")),
        "{result:?}"
    );
    let mut d = Destination::new(policy());
    d.handle(start("s3cret")).unwrap();
    assert_eq!(
        d.handle(config(128 << 20)),
        Err(Refusal::NoMemory { bytes: 128 << 20 })
    );
    let mut d = Destination::new(policy());
    d.handle(start("s3cret")).unwrap();
    assert!(matches!(d.handle(config(3 << 20)), Err(Refusal::Stream(_))));
    // The source's abort ends it with its reason.
    let mut d = Destination::new(policy());
    d.handle(start("s3cret")).unwrap();
    let result = d.handle(Message::Abort(String::from("disk full")));
    assert!(matches!(&result, Err(Refusal::Stream(why)) if why.contains("disk full")));
}

#[test]
fn pre_copy_pauses_when_small_or_at_the_round_limit() {
    let mut p = PreCopy::new(5, 64);
    assert_eq!(p.after_round(10_000), RoundDecision::Another);
    assert_eq!(p.after_round(500), RoundDecision::Another);
    assert_eq!(
        p.after_round(64),
        RoundDecision::Pause {
            limit_reached: false
        }
    );
    let mut busy = PreCopy::new(3, 64);
    assert_eq!(busy.after_round(9999), RoundDecision::Another);
    assert_eq!(busy.after_round(9999), RoundDecision::Another);
    assert_eq!(
        busy.after_round(9999),
        RoundDecision::Pause {
            limit_reached: true
        }
    );
    assert_eq!(busy.round, 3);
}

#[test]
fn memory_runs_split_at_the_frame_limit() {
    let mut log = DirtyBitmap::new(8 << 20);
    // 300 consecutive pages (over one 256-page frame) and a lone page.
    for page in 10..310u64 {
        log.mark(page * 4096);
    }
    log.mark(1000 * 4096);
    let runs: Vec<_> = memory_runs(&log).collect();
    assert_eq!(
        runs,
        [
            (10 * 4096, MAX_MEMORY_RUN),
            (266 * 4096, 44 * 4096),
            (1000 * 4096, 4096)
        ]
    );
    // Every run fits a memory frame the decoder accepts.
    let mut bytes = MAGIC.to_vec();
    Message::Memory(MemoryRun {
        gpa: runs[0].0,
        data: vec![0; runs[0].1 as usize],
    })
    .encode(&mut bytes);
    assert_eq!(decode_all(&bytes, 100_000).unwrap().len(), 1);
}

#[test]
fn a_cpu_view_from_a_policy_hosts_itself() {
    use crate::cpuid::CpuidPolicy;
    use crate::detect::{CpuProbe, CpuidResult};
    struct Amd;
    impl CpuProbe for Amd {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            match leaf {
                0 => CpuidResult {
                    eax: 0xd,
                    ebx: u32::from_le_bytes(*b"Auth"),
                    edx: u32::from_le_bytes(*b"enti"),
                    ecx: u32::from_le_bytes(*b"cAMD"),
                },
                1 => CpuidResult {
                    eax: 0x00a0_0f11,
                    ebx: 0,
                    ecx: 0x7ed8_320b,
                    edx: 0x178b_fbff,
                },
                _ => CpuidResult::default(),
            }
        }
        fn rdmsr(&self, _: u32) -> Option<u64> {
            None
        }
    }
    let view = CpuView::from_policy(&CpuidPolicy::from_host(&Amd));
    assert_eq!(&view.vendor, b"AuthenticAMD");
    assert_eq!(view.entries.len(), MIGRATED_LEAVES.len());
    assert_ne!(view.entries[0].regs[3], 0, "leaf 1 EDX carries features");
    view.can_host(&view).unwrap();
    let mut missing = view.clone();
    missing.entries.pop();
    assert_eq!(view.can_host(&missing), Err(CpuMismatch::Incomplete));
}
