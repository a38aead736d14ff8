//! Deltas against real files: the image they rebuild is the new file, byte for byte.

use super::*;
use proptest::prelude::*;

fn files(old: &[u8], new: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("old"), d.path().join("new"));
    std::fs::write(&a, old).unwrap();
    std::fs::write(&b, new).unwrap();
    (d, a, b)
}

fn roundtrip(old: &[u8], new: &[u8]) -> usize {
    let (_d, a, b) = files(old, new);
    let delta = diff(&a, &b, usize::MAX).unwrap().unwrap();
    let mut img = old.to_vec();
    apply(&mut img, &delta).unwrap();
    assert_eq!(img, new);
    delta.len()
}

proptest! {
    #[test]
    fn any_change_rebuilds_the_new_file(
        old in proptest::collection::vec(any::<u8>(), 0..20_000),
        edits in proptest::collection::vec((0usize..20_000, any::<u8>()), 0..20),
        new_len in 0usize..24_000,
    ) {
        let mut new = old.clone();
        new.resize(new_len, 7);
        for (at, v) in edits {
            if at < new.len() {
                new[at] = v;
            }
        }
        roundtrip(&old, &new);
    }
}

#[test]
fn only_changed_blocks_are_shipped() {
    let old: Vec<u8> = (0..100 * BLOCK).map(|i| (i % 251) as u8).collect();
    let mut new = old.clone();
    new[5 * BLOCK + 17] ^= 1;
    new[70 * BLOCK] ^= 1;
    // Two blocks and the header, not 400 KiB.
    assert_eq!(roundtrip(&old, &new), 24 + 2 * (8 + BLOCK));
    assert_eq!(roundtrip(&old, &old), 24);
}

#[test]
fn a_delta_over_the_limit_is_none() {
    let old = vec![0u8; 10 * BLOCK];
    let new = vec![1u8; 10 * BLOCK];
    let (_d, a, b) = files(&old, &new);
    assert!(diff(&a, &b, 5 * BLOCK).unwrap().is_none());
    assert!(diff(&a, &b, 11 * (BLOCK + 8) + 24).unwrap().is_some());
}

#[test]
fn damaged_deltas_are_refused() {
    let old = vec![0u8; 3 * BLOCK];
    let mut new = old.clone();
    new[BLOCK] = 9;
    let (_d, a, b) = files(&old, &new);
    let delta = diff(&a, &b, usize::MAX).unwrap().unwrap();
    for bad in [
        &delta[..delta.len() - 1],
        &delta[..20],
        &[&delta[..], b"x"].concat()[..],
        &[b"MFIXDLT0", &delta[8..]].concat()[..],
    ] {
        let mut img = old.clone();
        assert!(apply(&mut img, bad).is_err());
    }
}

/// The vector of docs/volume-format.md, "Index deltas": a 5,000-byte file of zeros
/// whose byte 4,100 becomes 0xAB and that grows to 5,002 bytes of which the last two
/// are 0xCD.
#[test]
fn the_documented_vector() {
    let old = vec![0u8; 5000];
    let mut new = vec![0u8; 5002];
    new[4100] = 0xAB;
    new[5000] = 0xCD;
    new[5001] = 0xCD;
    let (_d, a, b) = files(&old, &new);
    let delta = diff(&a, &b, usize::MAX).unwrap().unwrap();
    let head = "4d464958444c5431\
                000000000000138a\
                00001000\
                00000001\
                0000000000000001";
    assert_eq!(hex::encode(&delta[..32]), head);
    assert_eq!(delta.len(), 32 + (5002 - 4096));
    // Made by a separate Python script from the spec's words, not from this code.
    let want: String = include_str!("../../../../docs/vectors/object-storage/index-delta.hex")
        .split_whitespace()
        .collect();
    assert_eq!(hex::encode(&delta), want);
    let mut img = old.clone();
    apply(&mut img, &hex::decode(&want).unwrap()).unwrap();
    assert_eq!(img, new);
}
