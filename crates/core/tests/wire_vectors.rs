//! Checks the wire test vectors of `docs/vectors/wire/` against the frame codec.
//!
//! Every valid vector must decode to the frames constructed here and re-encode to the
//! identical bytes; every vector under `invalid/` must be refused by the decoder. The
//! tables below must name exactly the files on disk, so a vector added without an
//! expectation (or an expectation whose file went missing) fails the test, and the test
//! cannot pass with an empty or missing directory.

use bytes::Bytes;
use mailferry_core::frame::{AckStatus, Frame, MessageHeader, PROTOCOL_VERSION};
use mailferry_core::{Flags, FolderName, MoveId, SourceId};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// At least this many valid and invalid vectors must have been checked.
const MIN_VALID: usize = 23;
const MIN_INVALID: usize = 22;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/wire")
}

/// Reads a vector file: `#` lines are comments, whitespace is ignored, the rest is hex.
fn read_hex(path: &Path) -> Vec<u8> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("vector {}: {e}", path.display()));
    let digits: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("vector {}: bad hex: {e}", path.display()))
}

fn hex_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("vector directory {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter(|n| n.ends_with(".hex"))
        .collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

fn move_id() -> MoveId {
    MoveId(hex_array("00112233445566778899aabbccddeeff"))
}

fn hex_array<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0; N];
    hex::decode_to_slice(s, &mut out).expect("hex constant");
    out
}

fn message(seq: u64, date: i64, size: u64, folder: &str, sid: &str, flags: &str) -> Frame {
    Frame::Message(MessageHeader {
        seq,
        folder: FolderName::parse(folder).expect("valid folder"),
        source_id: SourceId::parse(sid).expect("valid source id"),
        flags: Flags::parse(flags).expect("valid flags"),
        internal_date: date,
        size,
    })
}

fn delete(seq: u64, folder: &str, sid: &str) -> Frame {
    Frame::Delete {
        seq,
        folder: FolderName::parse(folder).expect("valid folder"),
        source_id: SourceId::parse(sid).expect("valid source id"),
    }
}

fn set_flags(seq: u64, folder: &str, sid: &str, flags: &str) -> Frame {
    Frame::SetFlags {
        seq,
        folder: FolderName::parse(folder).expect("valid folder"),
        source_id: SourceId::parse(sid).expect("valid source id"),
        flags: Flags::parse(flags).expect("valid flags"),
    }
}

fn open() -> Frame {
    Frame::Open {
        version: PROTOCOL_VERSION,
        move_id: move_id(),
        fence: None,
    }
}

fn valid_cases() -> Vec<(&'static str, Vec<Frame>)> {
    let hello = b"Hello, world".to_vec();
    let b1: &[u8] = b"Subject: one\r\n\r\nfirst body\r\n";
    let b2: &[u8] = b"Subject: two\r\n\r\nsecond\r\n";
    let b3: &[u8] = b"Subject: three\r\n\r\nalready there\r\n";
    vec![
        ("open.hex", vec![open()]),
        (
            "open-fence.hex",
            vec![Frame::Open {
                version: PROTOCOL_VERSION,
                move_id: move_id(),
                fence: Some(7),
            }],
        ),
        (
            "message.hex",
            vec![message(
                1,
                1_700_000_000,
                12,
                "Archive/Entwürfe",
                "1700000000.M1P2.host",
                "RS",
            )],
        ),
        (
            "message-minimal.hex",
            vec![message(2, -86_400, 0, "INBOX", "2", "")],
        ),
        ("data.hex", vec![Frame::Data(hello.clone().into())]),
        ("data-empty.hex", vec![Frame::Data(Bytes::new())]),
        (
            "end.hex",
            vec![Frame::End {
                seq: 1,
                sha256: sha256(&hello),
            }],
        ),
        ("flush.hex", vec![Frame::Flush]),
        ("close.hex", vec![Frame::Close]),
        (
            "ack.hex",
            vec![Frame::Ack(vec![
                (1, AckStatus::Stored),
                (2, AckStatus::Duplicate),
            ])],
        ),
        ("ack-empty.hex", vec![Frame::Ack(Vec::new())]),
        (
            "ack-mirror.hex",
            vec![Frame::Ack(vec![
                (1, AckStatus::Stored),
                (2, AckStatus::Applied),
                (3, AckStatus::NotFound),
            ])],
        ),
        (
            "delete.hex",
            vec![delete(4, "Archive/Entwürfe", "1700000000.M1P2.host")],
        ),
        ("flags.hex", vec![set_flags(5, "INBOX", "17", "FRS")]),
        ("flags-none.hex", vec![set_flags(6, "INBOX", "17", "")]),
        (
            "message-keywords.hex",
            vec![message(
                7,
                1_700_000_000,
                0,
                "INBOX",
                "42",
                "RS $Junk ProjectX",
            )],
        ),
        (
            "flags-keywords.hex",
            vec![set_flags(8, "INBOX", "17", " $Label1")],
        ),
        (
            "session-mirror-client.hex",
            vec![
                open(),
                message(
                    1,
                    1_700_000_000,
                    b1.len() as u64,
                    "INBOX",
                    "1700000000.M1P1.host",
                    "S",
                ),
                Frame::Data(Bytes::copy_from_slice(b1)),
                Frame::End {
                    seq: 1,
                    sha256: sha256(b1),
                },
                set_flags(2, "Archive/2024", "1700000100.M2P1.host", "RS"),
                delete(3, "INBOX", "1700000200.M3P1.host"),
                delete(4, "INBOX", "gone-already"),
                Frame::Close,
            ],
        ),
        (
            "session-mirror-server.hex",
            vec![
                Frame::Ack(vec![
                    (1, AckStatus::Stored),
                    (2, AckStatus::Applied),
                    (3, AckStatus::Applied),
                    (4, AckStatus::NotFound),
                ]),
                Frame::Closed,
            ],
        ),
        (
            "reject.hex",
            vec![Frame::Reject {
                seq: 3,
                reason: "sha256 mismatch".into(),
            }],
        ),
        (
            "error.hex",
            vec![Frame::Error {
                code: 503,
                message: "store is shutting down".into(),
            }],
        ),
        ("closed.hex", vec![Frame::Closed]),
        (
            "session-client.hex",
            vec![
                open(),
                message(
                    1,
                    1_700_000_000,
                    b1.len() as u64,
                    "INBOX",
                    "1700000000.M1P1.host",
                    "S",
                ),
                Frame::Data(Bytes::copy_from_slice(&b1[..16])),
                Frame::Data(Bytes::copy_from_slice(&b1[16..])),
                Frame::End {
                    seq: 1,
                    sha256: sha256(b1),
                },
                message(
                    2,
                    1_700_000_100,
                    b2.len() as u64,
                    "Archive/2024",
                    "1700000100.M2P1.host",
                    "RS",
                ),
                Frame::Data(Bytes::copy_from_slice(b2)),
                Frame::End {
                    seq: 2,
                    sha256: sha256(b"not the body"),
                },
                Frame::Flush,
                message(
                    3,
                    1_700_000_200,
                    b3.len() as u64,
                    "INBOX",
                    "1700000200.M3P1.host",
                    "",
                ),
                Frame::Data(Bytes::copy_from_slice(b3)),
                Frame::End {
                    seq: 3,
                    sha256: sha256(b3),
                },
                Frame::Close,
            ],
        ),
        (
            "session-server.hex",
            vec![
                Frame::Reject {
                    seq: 2,
                    reason: "sha256 mismatch".into(),
                },
                Frame::Ack(vec![(1, AckStatus::Stored)]),
                Frame::Ack(vec![(3, AckStatus::Duplicate)]),
                Frame::Closed,
            ],
        ),
    ]
}

/// Invalid vectors and a piece of the error message each must produce.
fn invalid_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        ("oversized-length.hex", "more than the 1048576 allowed"),
        ("unknown-kind.hex", "unknown frame kind 0x09"),
        ("unknown-kind-server.hex", "unknown frame kind 0x85"),
        ("trailing-bytes.hex", "trailing bytes"),
        ("end-trailing-bytes.hex", "trailing bytes"),
        ("short-payload.hex", "payload shorter than its fields"),
        ("bad-folder-dotdot.hex", "folder name \"../x\""),
        ("bad-folder-empty.hex", "folder name \"\""),
        ("bad-source-id.hex", "source id \"a/b\""),
        ("unsorted-flags.hex", "flags must be sorted and unique"),
        ("duplicate-flags.hex", "flags must be sorted and unique"),
        ("non-letter-flags.hex", "flags \"S1\""),
        (
            "ack-count-too-large.hex",
            "ACK count larger than its payload",
        ),
        ("ack-bad-status.hex", "unknown ACK status 4"),
        ("delete-bad-folder.hex", "folder name \"../x\""),
        ("delete-trailing-bytes.hex", "trailing bytes"),
        ("flags-unsorted.hex", "flags must be sorted and unique"),
        ("flags-missing-flags.hex", "payload shorter than its fields"),
        ("reject-not-utf8.hex", "not UTF-8"),
        ("keywords-unsorted.hex", "flags must be sorted and unique"),
        ("keyword-atom-special.hex", "keyword \"a(b\""),
        ("keyword-empty.hex", "empty keyword"),
        ("open-short-fence.hex", "payload shorter than its fields"),
        ("open-trailing-bytes.hex", "trailing bytes"),
    ]
}

#[test]
fn valid_vectors_decode_to_the_expected_frames_and_re_encode_identically() {
    let dir = vector_dir();
    let cases = valid_cases();
    let named: BTreeSet<String> = cases.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        hex_files(&dir),
        named,
        "files in {} vs. expectations",
        dir.display()
    );

    let mut checked = 0;
    for (file, expected) in &cases {
        let bytes = read_hex(&dir.join(file));
        let mut at = 0;
        let mut got = Vec::new();
        while at < bytes.len() {
            let rest = &bytes[at..];
            let (frame, used) = Frame::decode(rest)
                .unwrap_or_else(|e| panic!("{file}: frame {} at byte {at}: {e}", got.len()))
                .unwrap_or_else(|| panic!("{file}: incomplete frame at byte {at}"));
            // Every proper prefix of a frame is "need more bytes", never an error.
            for cut in 0..used {
                assert!(
                    matches!(Frame::decode(&rest[..cut]), Ok(None)),
                    "{file}: prefix of {cut} bytes of frame {} did not wait for more",
                    got.len()
                );
            }
            let mut again = Vec::new();
            frame.encode(&mut again);
            assert_eq!(
                again,
                rest[..used],
                "{file}: frame {} re-encodes differently",
                got.len()
            );
            got.push(frame);
            at += used;
        }
        assert_eq!(&got, expected, "{file}: decoded frames");
        checked += 1;
    }
    assert!(checked >= MIN_VALID, "only {checked} valid vectors checked");
}

#[test]
fn invalid_vectors_are_refused() {
    let dir = vector_dir().join("invalid");
    let cases = invalid_cases();
    let named: BTreeSet<String> = cases.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        hex_files(&dir),
        named,
        "files in {} vs. expectations",
        dir.display()
    );

    let mut checked = 0;
    for (file, expected) in &cases {
        let bytes = read_hex(&dir.join(file));
        match Frame::decode(&bytes) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(expected),
                    "{file}: error {msg:?} lacks {expected:?}"
                );
            }
            Ok(other) => panic!("{file}: decoded as {other:?}, expected an error"),
        }
        checked += 1;
    }
    assert!(
        checked >= MIN_INVALID,
        "only {checked} invalid vectors checked"
    );
}
