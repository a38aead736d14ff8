use super::*;
use proptest::prelude::*;

fn sample(len: usize) -> (RecordHeader, Key, Vec<u8>, Vec<u8>) {
    let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let h = RecordHeader {
        key_id: 1,
        message_id: 42,
        mailbox_id: 2,
        salt: [5; 32],
        plain_len: len as u64,
        chunk_count: chunk::chunk_count(len as u64),
    };
    let key = Key::from_bytes([8; 32]);
    let rec = seal_record(&h, &[1; 16], &key, &plain);
    (h, key, plain, rec)
}

#[test]
fn record_round_trip() {
    for len in [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5] {
        let (h, key, plain, rec) = sample(len);
        assert_eq!(rec.len() as u64, h.record_len().unwrap());
        let (h2, p2) = open_record(&[1; 16], &key, &rec).unwrap();
        assert_eq!(h2, h);
        assert_eq!(p2, plain);
    }
}

#[test]
fn swapped_truncated_extended_records_fail() {
    let (_, key, _, rec) = sample(3 * CHUNK_SIZE);
    let c = CHUNK_SIZE + TAG_LEN;
    // Swap chunks 0 and 1.
    let mut sw = rec.clone();
    let (a, b) = (REC_HEADER_LEN, REC_HEADER_LEN + c);
    let first = sw[a..a + c].to_vec();
    sw.copy_within(b..b + c, a);
    sw[b..b + c].copy_from_slice(&first);
    assert!(open_record(&[1; 16], &key, &sw).is_err());
    // Truncate to two chunks, with a header that says so: chunk 1 is not marked last.
    let mut tr = rec[..REC_HEADER_LEN + 2 * c].to_vec();
    tr[56..64].copy_from_slice(&(2 * CHUNK_SIZE as u64).to_be_bytes());
    tr[64..72].copy_from_slice(&2u64.to_be_bytes());
    assert!(open_record(&[1; 16], &key, &tr).is_err());
    // Plain truncation and extension.
    assert!(open_record(&[1; 16], &key, &rec[..rec.len() - 1]).is_err());
    let mut ext = rec.clone();
    ext.push(0);
    assert!(open_record(&[1; 16], &key, &ext).is_err());
    // Another volume.
    assert!(open_record(&[2; 16], &key, &rec).is_err());
}

#[test]
fn file_names() {
    assert_eq!(file_name(3), "00000003.seg");
    assert_eq!(parse_file_name("00000003.seg"), Some(3));
    assert_eq!(parse_file_name("3.seg"), None);
    assert_eq!(parse_file_name("0000000x.seg"), None);
}

proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SegmentHeader::parse(&b);
        let _ = RecordHeader::parse(&b);
        prop_assert!(open_record(&[1; 16], &Key::from_bytes([8; 32]), &b).is_err());
    }

    #[test]
    fn plausible_headers_never_panic(
        plain_len in any::<u64>(), count in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let h = RecordHeader { key_id: 1, message_id: 1, mailbox_id: 1, salt: [0; 32], plain_len, chunk_count: count };
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&tail);
        let _ = open_record(&[1; 16], &Key::from_bytes([8; 32]), &b);
    }

    #[test]
    fn bit_flips_are_caught(pos in 0usize..(REC_HEADER_LEN + 2 * TAG_LEN + CHUNK_SIZE + 10), bit in 0u8..8) {
        let (_, key, _, mut rec) = sample(CHUNK_SIZE + 10);
        rec[pos] ^= 1 << bit;
        // key_id is not authenticated by the chunk layer (it is cross-checked against the
        // index by the reader); every other bit is.
        if !(4..8).contains(&pos) {
            prop_assert!(open_record(&[1; 16], &key, &rec).is_err());
        }
    }
}
