use super::*;
use proptest::prelude::*;

fn ctx() -> ChunkContext {
    ChunkContext {
        volume_id: [3; 16],
        mailbox_id: 5,
        message_id: 9,
    }
}

#[test]
fn seal_open_round_trip() {
    let key = ChunkKey::from_bytes(&[1; 32]);
    let mut buf = b"hello chunk".to_vec();
    let tag = seal_chunk(&key, &ctx(), 0, true, &mut buf);
    buf.extend_from_slice(&tag);
    let plain = open_chunk(&key, &ctx(), 0, true, &mut buf.clone())
        .unwrap()
        .to_vec();
    assert_eq!(plain, b"hello chunk");
    // Position, last flag, message, mailbox and volume are all bound.
    assert!(open_chunk(&key, &ctx(), 1, true, &mut buf.clone()).is_err());
    assert!(open_chunk(&key, &ctx(), 0, false, &mut buf.clone()).is_err());
    for other in [
        ChunkContext {
            message_id: 10,
            ..ctx()
        },
        ChunkContext {
            mailbox_id: 6,
            ..ctx()
        },
        ChunkContext {
            volume_id: [4; 16],
            ..ctx()
        },
    ] {
        assert!(open_chunk(&key, &other, 0, true, &mut buf.clone()).is_err());
    }
}

#[test]
fn counts() {
    assert_eq!(chunk_count(0), 1);
    assert_eq!(chunk_count(1), 1);
    assert_eq!(chunk_count(65536), 1);
    assert_eq!(chunk_count(65537), 2);
    assert_eq!(chunk_plain_len(65537, 1), 1);
    assert_eq!(chunk_plain_len(0, 0), 0);
}

proptest! {
    #[test]
    fn open_arbitrary_bytes_errors(mut b in proptest::collection::vec(any::<u8>(), 0..2000), idx in any::<u64>(), last in any::<bool>()) {
        let key = ChunkKey::from_bytes(&[1; 32]);
        prop_assert!(open_chunk(&key, &ctx(), idx, last, &mut b).is_err());
    }
}
