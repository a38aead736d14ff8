//! The incremental receipt equals the receipt computed from scratch, whatever was
//! stored and deleted in between; a cache that does not fit is rebuilt.

use super::*;
use crate::volume::tests::{addr, body, fixture, open, put};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{FolderName, SourceId};
use proptest::prelude::*;

#[test]
fn encode_decode_round_trip_and_binding() {
    let key = Key::from_bytes([7; 32]);
    let c = Cache {
        max_id: 9,
        leaves: vec![(3, [1; 32]), (9, [2; 32])],
    };
    let b = encode(&c, &key, &[0; 16], 4, 1);
    assert_eq!(decode(&b, &key, &[0; 16], 4, 1), Some(c));
    assert_eq!(decode(&b, &key, &[0; 16], 5, 1), None, "another mailbox");
    assert_eq!(
        decode(&b, &key, &[0; 16], 4, 2),
        None,
        "another key generation"
    );
    assert_eq!(decode(&b, &Key::from_bytes([8; 32]), &[0; 16], 4, 1), None);
    let mut flipped = b.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(decode(&flipped, &key, &[0; 16], 4, 1), None);
    assert_eq!(decode(&b[..b.len() - 3], &key, &[0; 16], 4, 1), None);
}

#[test]
fn reconcile_drops_deleted_and_names_new_ids() {
    let c = Cache {
        max_id: 5,
        leaves: vec![(1, [1; 32]), (2, [2; 32]), (5, [5; 32])],
    };
    let (kept, new) = reconcile(&c, &[2, 5, 7, 8]).unwrap();
    assert_eq!(kept, vec![(2, [2; 32]), (5, [5; 32])]);
    assert_eq!(new, vec![7, 8]);
    assert!(reconcile(&c, &[3]).is_none(), "an id the cache should hold");
}

/// One step of a random history: store `n` messages, or delete the `k`-th live one.
#[derive(Clone, Debug)]
enum Step {
    Store(u8),
    Delete(u8),
    Receipt,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..5).prop_map(Step::Store),
        any::<u8>().prop_map(Step::Delete),
        Just(Step::Receipt),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn incremental_receipt_equals_the_receipt_from_scratch(steps in prop::collection::vec(step(), 1..12)) {
        let f = fixture();
        let v = open(&f);
        let mb = addr("inc@example.org");
        let mut live: Vec<String> = Vec::new();
        let mut seq = 0u64;
        let mut next = 0u32;
        // The mailbox exists once something was stored in it.
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        for st in steps.iter().chain(std::iter::once(&Step::Receipt)) {
            match st {
                Step::Store(n) => {
                    for _ in 0..*n {
                        seq += 1;
                        next += 1;
                        let id = format!("m{next}");
                        let folder = if next.is_multiple_of(3) { "Sent" } else { "INBOX" };
                        put(&mut s, seq, folder, &id, &body(50 + next as usize, next as u8)).unwrap();
                        live.push(format!("{folder}/{id}"));
                    }
                    s.commit().unwrap();
                }
                Step::Delete(k) if !live.is_empty() => {
                    let item = live.remove(*k as usize % live.len());
                    let (folder, id) = item.split_once('/').unwrap();
                    seq += 1;
                    s.delete(seq, FolderName::parse(folder).unwrap(), SourceId::parse(id).unwrap()).unwrap();
                    s.commit().unwrap();
                }
                Step::Delete(_) => {}
                Step::Receipt => {
                    if next == 0 {
                        continue;
                    }
                    let scratch = v.receipt_root(&mb).unwrap();
                    prop_assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch.clone());
                    // Twice: the second comes from the cache alone.
                    prop_assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch.clone());
                    prop_assert_eq!(scratch.1, live.len() as u64);
                }
            }
        }
    }
}

#[test]
fn a_damaged_or_stale_cache_is_rebuilt() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("stale@example.org");
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    for i in 1..=4u64 {
        put(&mut s, i, "INBOX", &format!("m{i}"), &body(60, i as u8)).unwrap();
    }
    s.commit().unwrap();
    let scratch = v.receipt_root(&mb).unwrap();
    assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch);
    let dir = f.dir.join(CACHE_DIR);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch);
    // A cache that lacks a message it claims to cover (written by hand): rebuilt.
    let key = {
        let ix = v.inner.index().unwrap();
        let row = v.inner.live_mailbox(&ix, &mb).unwrap();
        drop(ix);
        (
            row.id,
            row.key_id,
            cache_key(&v.inner.key_for(row.id, row.key_id, &mb).unwrap()),
        )
    };
    let mut c = decode(
        &std::fs::read(&file).unwrap(),
        &key.2,
        &v.volume_id(),
        key.0,
        key.1,
    )
    .unwrap();
    c.leaves.remove(1);
    std::fs::write(&file, encode(&c, &key.2, &v.volume_id(), key.0, key.1)).unwrap();
    assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch);
    // A cache that claims a message that is not there: the id list drops it.
    let mut c2 = decode(
        &std::fs::read(&file).unwrap(),
        &key.2,
        &v.volume_id(),
        key.0,
        key.1,
    )
    .unwrap();
    c2.leaves.insert(0, (0, [9; 32]));
    std::fs::write(&file, encode(&c2, &key.2, &v.volume_id(), key.0, key.1)).unwrap();
    assert_eq!(v.receipt_root_incremental(&mb).unwrap(), scratch);
}
