use super::*;
use proptest::prelude::*;

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::Open {
            version: PROTOCOL_VERSION,
            move_id: MoveId([7; 16]),
            fence: None,
        },
        Frame::Open {
            version: PROTOCOL_VERSION,
            move_id: MoveId([7; 16]),
            fence: Some(u64::MAX),
        },
        Frame::Message(MessageHeader {
            seq: 42,
            folder: FolderName::parse("Archive/Entwürfe").unwrap(),
            source_id: SourceId::parse("1700000000.M1P2.host").unwrap(),
            flags: Flags::from_maildir("SR").unwrap(),
            internal_date: 1_700_000_000,
            size: 5,
        }),
        Frame::Data(Bytes::from_static(b"hello")),
        Frame::End {
            seq: 42,
            sha256: [0xab; 32],
        },
        Frame::Delete {
            seq: 43,
            folder: FolderName::parse("Archive/Entwürfe").unwrap(),
            source_id: SourceId::parse("1700000000.M1P2.host").unwrap(),
        },
        Frame::SetFlags {
            seq: 44,
            folder: FolderName::inbox(),
            source_id: SourceId::parse("17").unwrap(),
            flags: Flags::from_maildir("FRS").unwrap(),
        },
        Frame::SetFlags {
            seq: 45,
            folder: FolderName::inbox(),
            source_id: SourceId::parse("18").unwrap(),
            flags: Flags::from_maildir("").unwrap(),
        },
        Frame::Flush,
        Frame::Close,
        Frame::Ack(vec![
            (1, AckStatus::Stored),
            (2, AckStatus::Duplicate),
            (43, AckStatus::Applied),
            (44, AckStatus::NotFound),
        ]),
        Frame::Reject {
            seq: 3,
            reason: "sha256 mismatch".into(),
        },
        Frame::Error {
            code: 401,
            message: "bad token".into(),
        },
        Frame::Closed,
    ]
}

#[test]
fn every_frame_round_trips_and_streams_byte_by_byte() {
    let mut all = Vec::new();
    for f in sample_frames() {
        f.encode(&mut all);
    }
    // Feed the stream one byte at a time: the decoder must wait, never misparse.
    let mut got = Vec::new();
    let mut buf = Vec::new();
    for b in all {
        buf.push(b);
        if let Some((f, n)) = Frame::decode(&buf).unwrap() {
            assert_eq!(n, buf.len());
            buf.clear();
            got.push(f);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, sample_frames());
}

#[test]
fn oversized_length_is_refused_before_buffering() {
    let mut b = vec![kind::DATA];
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = Frame::decode(&b).unwrap_err().to_string();
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn hostile_folder_in_message_frame_is_refused() {
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u64.to_be_bytes());
    payload.extend_from_slice(&0u64.to_be_bytes());
    payload.extend_from_slice(&0u64.to_be_bytes());
    for s in ["../../etc", "x", ""] {
        payload.extend_from_slice(&(s.len() as u16).to_be_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    let mut b = vec![kind::MESSAGE];
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(&payload);
    let e = Frame::decode(&b).unwrap_err().to_string();
    assert!(e.contains("folder name"), "{e}");
}

#[test]
fn data_header_matches_full_encoding() {
    let mut a = Vec::new();
    Frame::Data(Bytes::from_static(&[1, 2, 3])).encode(&mut a);
    let mut b = Vec::new();
    encode_data_header(3, &mut b);
    b.extend_from_slice(&[1, 2, 3]);
    assert_eq!(a, b);
}

#[test]
fn hostile_names_in_delete_and_flags_frames_are_refused() {
    let frame = |k: u8, strs: &[&str]| {
        let mut payload = 7u64.to_be_bytes().to_vec();
        for s in strs {
            payload.extend_from_slice(&(s.len() as u16).to_be_bytes());
            payload.extend_from_slice(s.as_bytes());
        }
        let mut b = vec![k];
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&payload);
        Frame::decode(&b).unwrap_err().to_string()
    };
    let e = frame(kind::DELETE, &["../x", "1"]);
    assert!(e.contains("folder name"), "{e}");
    let e = frame(kind::DELETE, &["INBOX", "a/b"]);
    assert!(e.contains("source id"), "{e}");
    let e = frame(kind::FLAGS, &["INBOX", "1", "SR"]);
    assert!(e.contains("sorted and unique"), "{e}");
    let e = frame(kind::FLAGS, &["INBOX", "1"]);
    assert!(e.contains("shorter"), "{e}");
}

#[test]
fn every_ack_status_byte_is_defined_or_refused() {
    for b in 0..=u8::MAX {
        match AckStatus::from_u8(b) {
            Some(st) => assert_eq!(st as u8, b),
            None => assert!(b > 3, "status {b} lost"),
        }
    }
}

fn folder_strategy() -> impl Strategy<Value = FolderName> {
    "[A-Za-z0-9 äé_-]{1,12}(/[A-Za-z0-9_-]{1,12}){0,3}"
        .prop_filter_map("valid folder", |s| FolderName::parse(&s).ok())
}

fn source_id_strategy() -> impl Strategy<Value = SourceId> {
    "[A-Za-z0-9_-][A-Za-z0-9._,=-]{0,40}"
        .prop_filter_map("valid source id", |s| SourceId::parse(&s).ok())
}

fn flags_strategy() -> impl Strategy<Value = Flags> {
    (
        proptest::sample::subsequence(vec!['D', 'F', 'P', 'R', 'S', 'T'], 0..=6),
        proptest::collection::vec("[$A-Za-z0-9_.\\-Üß]{1,20}", 0..5),
    )
        .prop_map(|(letters, keywords)| {
            Flags::new(&letters.into_iter().collect::<String>(), keywords).unwrap()
        })
}

proptest! {
    #[test]
    fn delete_and_flags_frames_round_trip(
        seq in any::<u64>(),
        folder in folder_strategy(),
        source_id in source_id_strategy(),
        flags in flags_strategy(),
        statuses in proptest::collection::vec((any::<u64>(), 0u8..4), 0..20),
    ) {
        let frames = vec![
            Frame::Delete { seq, folder: folder.clone(), source_id: source_id.clone() },
            Frame::SetFlags { seq, folder, source_id, flags },
            Frame::Ack(
                statuses
                    .into_iter()
                    .map(|(s, b)| (s, AckStatus::from_u8(b).unwrap()))
                    .collect(),
            ),
        ];
        for f in frames {
            let mut b = Vec::new();
            f.encode(&mut b);
            let (back, n) = Frame::decode(&b).unwrap().unwrap();
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(back, f);
            for cut in 0..b.len() {
                prop_assert!(matches!(Frame::decode(&b[..cut]), Ok(None)));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn arbitrary_payloads_with_valid_header_never_panic(
        k in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = vec![k];
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&payload);
        if let Ok(Some((f, n))) = Frame::decode(&b) {
            prop_assert_eq!(n, b.len());
            // Whatever decodes must re-encode to the same bytes.
            let mut again = Vec::new();
            f.encode(&mut again);
            prop_assert_eq!(again, b);
        }
    }
}

#[test]
fn frame_buffer_reassembles_odd_pieces() {
    let mut all = Vec::new();
    for f in sample_frames() {
        f.encode(&mut all);
    }
    let mut fb = FrameBuffer::new();
    let mut got = Vec::new();
    for piece in all.chunks(7) {
        fb.push(piece);
        while let Some(f) = fb.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(fb.partial_len(), 0);
    assert_eq!(got, sample_frames());
}

proptest! {
    /// What a session reader does: read pieces of any size straight into the buffer's
    /// spare room, drain frames after each. DATA payloads come out split off the buffer,
    /// and every frame, with its bytes, comes out as it went in.
    #[test]
    fn frames_read_into_the_buffer_in_any_pieces_come_out_whole(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..12),
        piece in 1usize..5000,
    ) {
        let mut sent = vec![Frame::Flush];
        for (i, b) in bodies.iter().enumerate() {
            sent.push(Frame::Data(Bytes::copy_from_slice(b)));
            sent.push(Frame::End { seq: i as u64, sha256: [i as u8; 32] });
        }
        let mut wire = Vec::new();
        for f in &sent {
            f.encode(&mut wire);
        }
        let mut fb = FrameBuffer::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(piece) {
            fb.read_space(piece).extend_from_slice(chunk);
            while let Some(f) = fb.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(fb.partial_len(), 0);
        prop_assert_eq!(got, sent);
    }
}

#[test]
fn an_oversized_data_frame_is_refused_not_buffered() {
    let mut fb = FrameBuffer::new();
    let mut head = vec![kind::DATA];
    head.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
    fb.push(&head);
    let err = fb.next_frame().unwrap_err().to_string();
    assert!(err.contains("more than the"), "{err}");
}

#[test]
fn upgrade_request_carries_the_token_and_hides_the_bearer() {
    let auth = http::HeaderValue::from_static("Bearer s3cret");
    let req = upgrade_request(
        "/v1/mailboxes/a%40b/stream",
        "store.example",
        8443,
        auth,
        None,
    )
    .unwrap();
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri(), "/v1/mailboxes/a%40b/stream");
    let h = req.headers();
    assert_eq!(h["host"], "store.example:8443");
    assert_eq!(h["connection"], "upgrade");
    assert_eq!(h["upgrade"], UPGRADE_TOKEN);
    assert!(h["authorization"].is_sensitive());
    assert!(!format!("{req:?}").contains("s3cret"));
    assert!(h.get(FENCE_HEADER).is_none(), "no fence, no header");
}

#[test]
fn a_fenced_upgrade_request_carries_its_fence_in_decimal() {
    let auth = http::HeaderValue::from_static("Bearer s3cret");
    let req = upgrade_request("/v1/mailboxes/a%40b/stream", "s", 1, auth, Some(42)).unwrap();
    assert_eq!(req.headers()[FENCE_HEADER], "42");
    assert_eq!(parse_fence(b"42"), Some(42));
    assert_eq!(parse_fence(b"18446744073709551615"), Some(u64::MAX));
    for bad in [
        &b""[..],
        b"-1",
        b"+1",
        b" 1",
        b"1x",
        b"18446744073709551616",
    ] {
        assert_eq!(parse_fence(bad), None, "{bad:?}");
    }
}
