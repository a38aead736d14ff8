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

/// The chunk sequence sealed one whole chunk at a time with [`seal_chunk`]: what the
/// [`Sealer`] must produce however the plaintext is cut.
fn sealed_whole(plain: &[u8]) -> Vec<u8> {
    let key = ChunkKey::from_bytes(&[1; 32]);
    let n = chunk_count(plain.len() as u64);
    let mut out = Vec::new();
    for i in 0..n {
        let start = i as usize * CHUNK_SIZE;
        let mut buf = plain[start..start + chunk_plain_len(plain.len() as u64, i)].to_vec();
        let tag = seal_chunk(&key, &ctx(), i, i + 1 == n, &mut buf);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
    }
    out
}

fn seal_writer(len: u64) -> SealWriter<Vec<u8>> {
    let key = ChunkKey::from_bytes(&[1; 32]);
    SealWriter::new(Sealer::new(key, ctx(), len), Vec::new())
}

#[test]
fn sealer_refuses_more_or_less_plaintext_than_declared() {
    let mut w = seal_writer(10);
    assert_eq!(
        w.write_all(&[0; 11]).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    let mut w = seal_writer(CHUNK_SIZE as u64 + 1);
    w.write_all(&[0; CHUNK_SIZE]).unwrap();
    assert_eq!(w.finish().unwrap_err().kind(), io::ErrorKind::InvalidData);
    // A full last chunk waits for finish: it is sealed with the last flag.
    let mut w = seal_writer(CHUNK_SIZE as u64);
    w.write_all(&[7; CHUNK_SIZE]).unwrap();
    assert_eq!(w.finish().unwrap(), sealed_whole(&[7; CHUNK_SIZE]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn sealer_output_does_not_depend_on_how_the_plaintext_is_cut(
        len in prop_oneof![0usize..300, (CHUNK_SIZE - 2)..(CHUNK_SIZE + 2), (2 * CHUNK_SIZE - 1)..(3 * CHUNK_SIZE + 5)],
        cuts in proptest::collection::vec(1usize..(CHUNK_SIZE + 100), 1..8),
    ) {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut w = seal_writer(len as u64);
        let mut rest = &plain[..];
        for &c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = c.min(rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        prop_assert_eq!(w.finish().unwrap(), sealed_whole(&plain));
    }
}
