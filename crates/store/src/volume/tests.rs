use super::*;
use crate::{Finished, IngestSession};
use mailferry_core::frame::{AckStatus, MessageHeader};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{Flags, FolderName, SourceId};
use std::collections::BTreeMap;

pub(crate) struct Fixture {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("volume.key");
    Volume::init(&dir, &key).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        key,
    }
}

pub(crate) fn settings() -> StoreSettings {
    StoreSettings::default()
}

pub(crate) fn open(f: &Fixture) -> Volume {
    Volume::open(&f.dir, &f.key, &settings()).unwrap()
}

pub(crate) fn addr(s: &str) -> MailboxAddr {
    MailboxAddr::parse(s).unwrap()
}

pub(crate) fn sha(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .unwrap()
}

pub(crate) fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) fn start(seq: u64, folder: &str, sid: &str, size: usize) -> MessageHeader {
    MessageHeader {
        seq,
        folder: FolderName::parse(folder).unwrap(),
        source_id: SourceId::parse(sid).unwrap(),
        flags: Flags::from_maildir("RS").unwrap(),
        internal_date: 1_700_000_000 + seq as i64,
        size: size as u64,
    }
}

/// Writes one message in odd-sized pieces and finishes it.
pub(crate) fn put(
    s: &mut IngestSession,
    seq: u64,
    folder: &str,
    sid: &str,
    data: &[u8],
) -> Result<Finished, StoreError> {
    s.begin(start(seq, folder, sid, data.len()))?;
    let sizes = [1usize, 7, 4093, 65535, 13, 100_003];
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].min(data.len() - pos);
        s.write(&data[pos..pos + n])?;
        pos += n;
        i += 1;
    }
    s.finish(sha(data))
}

pub(crate) fn read_all(v: &Volume, m: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::new();
    v.read_message(m, &mut out).unwrap();
    out
}

pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(SEGMENTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

pub(crate) fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn round_trip_sizes() {
    let f = fixture();
    let sizes = [0usize, 1, 65535, 65536, 65537, 300_000];
    let mb = addr("alice@example.org");
    {
        let v = open(&f);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            let r = put(
                &mut s,
                i as u64,
                "Archive/2024",
                &format!("src{i}"),
                &body(*n, i as u8),
            )
            .unwrap();
            assert_eq!(r, Finished::Pending { seq: i as u64 });
        }
        assert_eq!(s.pending_count(), sizes.len());
        let acks = s.commit().unwrap();
        assert_eq!(
            acks,
            (0..sizes.len() as u64)
                .map(|i| (i, AckStatus::Stored))
                .collect::<Vec<_>>()
        );
        assert_eq!(s.pending_count(), 0);
    }
    let v = open(&f);
    assert_eq!(v.mailboxes().unwrap(), vec![mb.clone()]);
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(list.len(), sizes.len());
    for (i, (m, n)) in list.iter().zip(sizes).enumerate() {
        let data = body(n, i as u8);
        assert_eq!(read_all(&v, m), data);
        assert_eq!(m.mailbox, mb);
        assert_eq!(
            m.meta,
            MessageMeta {
                folder: FolderName::parse("Archive/2024").unwrap(),
                source_id: SourceId::parse(&format!("src{i}")).unwrap(),
                flags: Flags::from_maildir("RS").unwrap(),
                internal_date: 1_700_000_000 + i as i64,
                size: n as u64,
                sha256: hex::encode(sha(&data)),
            }
        );
    }
    let report = v.verify().unwrap();
    assert_eq!(report.messages_checked, sizes.len() as u64);
    assert!(report.damaged.is_empty(), "{report:?}");
    assert!(matches!(
        v.list_messages(&addr("nobody@example.org")),
        Err(StoreError::UnknownMailbox { .. })
    ));
}

#[test]
fn duplicates() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("bob@example.org");
    let data = body(1000, 1);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut s, 1, "INBOX", "a", &data).unwrap(),
        Finished::Pending { seq: 1 }
    );
    let len_before = std::fs::metadata(&segment_files(&f.dir)[0]).unwrap().len();
    assert_eq!(
        put(&mut s, 2, "INBOX", "a", &data).unwrap(),
        Finished::Duplicate { seq: 2 }
    );
    assert_eq!(
        std::fs::metadata(&segment_files(&f.dir)[0]).unwrap().len(),
        len_before
    );
    assert_eq!(
        put(&mut s, 3, "INBOX", "b", &data).unwrap(),
        Finished::Pending { seq: 3 }
    );
    assert_eq!(
        s.commit().unwrap(),
        vec![
            (1, AckStatus::Stored),
            (2, AckStatus::Duplicate),
            (3, AckStatus::Stored)
        ]
    );
    drop(s);
    // Across sessions (and another folder is a different message).
    let mut s2 = v.session(&mb, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut s2, 1, "INBOX", "a", &data).unwrap(),
        Finished::Duplicate { seq: 1 }
    );
    assert_eq!(
        put(&mut s2, 2, "Sent", "a", &data).unwrap(),
        Finished::Pending { seq: 2 }
    );
    assert_eq!(
        s2.commit().unwrap(),
        vec![(1, AckStatus::Duplicate), (2, AckStatus::Stored)]
    );
    // Another mailbox is not a duplicate.
    let mut s3 = v
        .session(&addr("carol@example.org"), &CommitSettings::default())
        .unwrap();
    assert_eq!(
        put(&mut s3, 1, "INBOX", "a", &data).unwrap(),
        Finished::Pending { seq: 1 }
    );
    s3.commit().unwrap();
    let list = v.list_messages(&mb).unwrap();
    assert_eq!(list.len(), 3);
}

#[test]
fn concurrent_sessions_same_mailbox_dedup_at_commit() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("dave@example.org");
    let data = body(5000, 2);
    let mut a = v.session(&mb, &CommitSettings::default()).unwrap();
    let mut b = v.session(&mb, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut a, 1, "INBOX", "x", &data).unwrap(),
        Finished::Pending { seq: 1 }
    );
    assert_eq!(
        put(&mut b, 1, "INBOX", "x", &data).unwrap(),
        Finished::Pending { seq: 1 }
    );
    assert_eq!(a.commit().unwrap(), vec![(1, AckStatus::Stored)]);
    assert_eq!(b.commit().unwrap(), vec![(1, AckStatus::Duplicate)]);
    assert_eq!(v.list_messages(&mb).unwrap().len(), 1);
    assert_eq!(segment_files(&f.dir).len(), 2, "two sessions, two segments");
}

#[test]
fn concurrent_sessions_threads_unique_ids() {
    let f = fixture();
    let v = Arc::new(open(&f));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let v = v.clone();
            std::thread::spawn(move || {
                let mb = addr(&format!("user{t}@example.org"));
                let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
                for i in 0..20u64 {
                    put(
                        &mut s,
                        i,
                        "INBOX",
                        &format!("m{i}"),
                        &body(3000 + i as usize, t as u8),
                    )
                    .unwrap();
                    if s.should_commit() || i % 7 == 0 {
                        s.commit().unwrap();
                    }
                }
                s.commit().unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut ids = Vec::new();
    for t in 0..4 {
        for m in v
            .list_messages(&addr(&format!("user{t}@example.org")))
            .unwrap()
        {
            let m = m.unwrap();
            assert_eq!(read_all(&v, &m).len(), m.meta.size as usize);
            ids.push(m.id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 80);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn rejected_messages_roll_back() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("erin@example.org");
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "ok1", &body(70_000, 1)).unwrap();
    let seg = segment_files(&f.dir)[0].clone();
    let len = std::fs::metadata(&seg).unwrap().len();

    // SHA mismatch.
    let data = body(200_000, 2);
    s.begin(start(2, "INBOX", "bad-sha", data.len())).unwrap();
    s.write(&data).unwrap();
    let e = s.finish([0; 32]).unwrap_err();
    assert!(matches!(e, StoreError::Rejected { seq: 2, .. }), "{e}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);

    // Short body.
    s.begin(start(3, "INBOX", "short", 100)).unwrap();
    s.write(&data[..99]).unwrap();
    let e = s.finish(sha(&data[..99])).unwrap_err();
    assert!(matches!(e, StoreError::Rejected { seq: 3, .. }), "{e}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);

    // Long body: refused at write().
    s.begin(start(4, "INBOX", "long", 100)).unwrap();
    let e = s.write(&data[..101]).unwrap_err();
    assert!(matches!(e, StoreError::Rejected { seq: 4, .. }), "{e}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);

    // Abort.
    s.begin(start(5, "INBOX", "aborted", 100_000)).unwrap();
    s.write(&data[..90_000]).unwrap();
    s.abort();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);

    // Misuse.
    s.begin(start(6, "INBOX", "ok2", 10)).unwrap();
    assert!(matches!(
        s.begin(start(7, "INBOX", "x", 1)),
        Err(StoreError::SessionMisuse { .. })
    ));
    s.write(&data[..10]).unwrap();
    assert_eq!(
        s.finish(sha(&data[..10])).unwrap(),
        Finished::Pending { seq: 6 }
    );
    assert!(matches!(
        s.finish([0; 32]),
        Err(StoreError::SessionMisuse { .. })
    ));

    assert_eq!(
        s.commit().unwrap(),
        vec![(1, AckStatus::Stored), (6, AckStatus::Stored)]
    );
    drop(s);
    let v = open_again(v, &f);
    let list = v.list_messages(&mb).unwrap();
    assert_eq!(list.len(), 2);
    assert!(v.verify().unwrap().damaged.is_empty());
}

pub(crate) fn open_again(v: Volume, f: &Fixture) -> Volume {
    drop(v);
    open(f)
}

#[test]
fn wrong_key_changes_nothing() {
    let f = fixture();
    {
        let v = open(&f);
        let mut s = v
            .session(&addr("frank@example.org"), &CommitSettings::default())
            .unwrap();
        put(&mut s, 1, "INBOX", "a", &body(1234, 0)).unwrap();
        s.commit().unwrap();
        // An uncommitted tail that recovery would truncate if it ran.
        put(&mut s, 2, "INBOX", "b", &body(5000, 0)).unwrap();
        let crashed = std::fs::read(&segment_files(&f.dir)[0]).unwrap();
        drop(s);
        drop(v);
        std::fs::write(&segment_files(&f.dir)[0], crashed).unwrap();
    }
    let snapshot = |dir: &Path| -> BTreeMap<PathBuf, (u64, std::time::SystemTime, Vec<u8>)> {
        all_files(dir)
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).unwrap();
                let h = sha(&std::fs::read(&p).unwrap()).to_vec();
                (p, (m.len(), m.modified().unwrap(), h))
            })
            .collect()
    };
    let before = snapshot(&f.dir);
    let wrong = f._tmp.path().join("wrong.key");
    std::fs::write(&wrong, [0x55u8; 32]).unwrap();
    let e = Volume::open(&f.dir, &wrong, &settings()).unwrap_err();
    assert!(matches!(e, StoreError::WrongKey { .. }), "{e}");
    assert!(e.to_string().contains("wrong key"));
    assert_eq!(snapshot(&f.dir), before);

    // A key file of the wrong length is a KeyFile error.
    std::fs::write(&wrong, [0x55u8; 31]).unwrap();
    assert!(matches!(
        Volume::open(&f.dir, &wrong, &settings()),
        Err(StoreError::KeyFile { .. })
    ));
    assert_eq!(snapshot(&f.dir), before);
}

#[test]
fn init_refuses_existing_and_creates_key_0600() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("k");
    let out = Volume::init(&dir, &key).unwrap();
    assert!(out.key_file_created);
    let m = std::fs::metadata(&key).unwrap();
    assert_eq!(m.len(), 32);
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let key_bytes = std::fs::read(&key).unwrap();
    let hdr = std::fs::read(dir.join(HEADER_FILE)).unwrap();

    let e = Volume::init(&dir, &key).unwrap_err();
    assert!(matches!(e, StoreError::NotEmpty { .. }), "{e}");
    let key2 = tmp.path().join("k2");
    assert!(Volume::init(&dir, &key2).is_err());
    assert!(!key2.exists(), "a refused init creates no key file");
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);
    assert_eq!(std::fs::read(dir.join(HEADER_FILE)).unwrap(), hdr);

    // Existing key file is reused; a bad one refused.
    let dir2 = tmp.path().join("vol2");
    let out2 = Volume::init(&dir2, &key).unwrap();
    assert!(!out2.key_file_created);
    assert_ne!(out2.volume_id, out.volume_id);
    let bad = tmp.path().join("bad");
    std::fs::write(&bad, b"short").unwrap();
    assert!(matches!(
        Volume::init(&tmp.path().join("vol3"), &bad),
        Err(StoreError::KeyFile { .. })
    ));
    assert!(!tmp.path().join("vol3").exists());

    // Busy while open; no volume where none is.
    let v = Volume::open(&dir, &key, &settings()).unwrap();
    assert_eq!(v.volume_id(), out.volume_id);
    assert!(matches!(
        Volume::open(&dir, &key, &settings()),
        Err(StoreError::Busy { .. })
    ));
    assert!(matches!(
        Volume::open(&tmp.path().join("none"), &key, &settings()),
        Err(StoreError::NoVolume { .. })
    ));
}

#[test]
fn tamper_is_named_and_others_still_read() {
    let f = fixture();
    let mb = addr("gina@example.org");
    {
        let v = open(&f);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        for i in 0..3u64 {
            put(
                &mut s,
                i,
                "INBOX",
                &format!("m{i}"),
                &body(150_000, i as u8),
            )
            .unwrap();
        }
        s.commit().unwrap();
    }
    let v = open(&f);
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let victim = &list[1];
    // Flip one byte inside chunk 1 of message m1.
    let seg = v.inner.segment_path(victim.loc.segment);
    let mut bytes = std::fs::read(&seg).unwrap();
    let pos = victim.loc.offset as usize + REC_HEADER_LEN + (CHUNK_SIZE + TAG_LEN) + 100;
    bytes[pos] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let report = v.verify().unwrap();
    assert_eq!(report.messages_checked, 3);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].mailbox, "gina@example.org");
    assert_eq!(report.damaged[0].item, "INBOX/m1");
    assert!(
        report.damaged[0]
            .reason
            .contains("chunk 1 failed authentication"),
        "{}",
        report.damaged[0].reason
    );
    let e = v.read_message(victim, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, StoreError::ChunkAuth { n: 1, .. }), "{e}");
    assert_eq!(read_all(&v, &list[0]), body(150_000, 0));
    assert_eq!(read_all(&v, &list[2]), body(150_000, 2));

    // Swap chunks 0 and 1 of m2.
    bytes[pos] ^= 0x01;
    let m2 = &list[2];
    let c = CHUNK_SIZE + TAG_LEN;
    let a = m2.loc.offset as usize + REC_HEADER_LEN;
    let first = bytes[a..a + c].to_vec();
    bytes.copy_within(a + c..a + 2 * c, a);
    bytes[a + c..a + 2 * c].copy_from_slice(&first);
    std::fs::write(&seg, &bytes).unwrap();
    assert!(matches!(
        v.read_message(m2, &mut Vec::new()),
        Err(StoreError::ChunkAuth { n: 0, .. })
    ));
    assert_eq!(read_all(&v, &list[1]), body(150_000, 1));

    // Truncate the segment inside m2: named by verify, no panic.
    let f2 = OpenOptions::new().write(true).open(&seg).unwrap();
    f2.set_len(m2.loc.offset + 1000).unwrap();
    drop(f2);
    let e = v.read_message(m2, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, StoreError::MessageDamaged { .. }), "{e}");
    let report = v.verify().unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].item, "INBOX/m2");
    assert!(
        report.damaged[0].reason.contains("outside segment"),
        "{}",
        report.damaged[0].reason
    );

    // Reopen with the short segment: no panic, the others still read.
    let v = open_again(v, &f);
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(read_all(&v, &list[0]), body(150_000, 0));
    assert_eq!(v.verify().unwrap().damaged.len(), 1);
}

#[test]
fn unreadable_metadata_is_a_per_item_error() {
    let f = fixture();
    let mb = addr("hank@example.org");
    let v = open(&f);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "a", b"one").unwrap();
    put(&mut s, 2, "INBOX", "b", b"two").unwrap();
    s.commit().unwrap();
    drop(s);
    {
        let ix = v.inner.index().unwrap();
        ix.conn_for_tests()
            .execute(
                "UPDATE messages SET meta_enc = zeroblob(60) WHERE id = 1",
                [],
            )
            .unwrap();
    }
    let list = v.list_messages(&mb).unwrap();
    assert!(matches!(
        &list[0],
        Err(StoreError::MetaUnreadable { id: 1, .. })
    ));
    assert_eq!(read_all(&v, list[1].as_ref().unwrap()), b"two");
    let report = v.verify().unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.damaged[0].item, "message id 1");
}

#[test]
fn crash_tail_is_truncated_on_open() {
    let f = fixture();
    let mb = addr("ivan@example.org");
    let committed_len;
    {
        let v = open(&f);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        put(&mut s, 1, "INBOX", "a", &body(100_000, 1)).unwrap();
        put(&mut s, 2, "INBOX", "b", &body(10, 2)).unwrap();
        s.commit().unwrap();
        committed_len = std::fs::metadata(&segment_files(&f.dir)[0]).unwrap().len();
        // A partial record (crash mid-message): keep the segment as it is now, before
        // Drop cleans it, and put it back afterwards.
        s.begin(start(3, "INBOX", "c", 200_000)).unwrap();
        s.write(&body(150_000, 3)).unwrap();
        let crashed = std::fs::read(&segment_files(&f.dir)[0]).unwrap();
        drop(s);
        drop(v);
        std::fs::write(&segment_files(&f.dir)[0], crashed).unwrap();
    }
    let seg = segment_files(&f.dir)[0].clone();
    let mut raw = OpenOptions::new().append(true).open(&seg).unwrap();
    raw.write_all(b"garbage after a torn write").unwrap();
    drop(raw);
    let crashed_len = std::fs::metadata(&seg).unwrap().len();
    assert!(crashed_len > committed_len);
    // An orphan segment file with a torn header.
    std::fs::write(f.dir.join(SEGMENTS_DIR).join("00000099.seg"), b"MFS").unwrap();

    let v = open(&f);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed_len);
    // No row references the orphan: it holds nothing committed and is deleted.
    assert!(!f.dir.join(SEGMENTS_DIR).join("00000099.seg").exists());
    assert_eq!(v.recovery().segments_removed, vec![99]);
    assert_eq!(
        v.recovery().tails_truncated,
        vec![(1, crashed_len - committed_len)]
    );
    assert!(v.recovery().short_segments.is_empty());
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(list.len(), 2);
    assert_eq!(read_all(&v, &list[0]), body(100_000, 1));
    assert_eq!(read_all(&v, &list[1]), body(10, 2));
    // New writes work and read back after another reopen.
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 4, "INBOX", "d", &body(70_000, 4)).unwrap();
    s.commit().unwrap();
    drop(s);
    let v = open_again(v, &f);
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(list.len(), 3);
    assert_eq!(read_all(&v, &list[2]), body(70_000, 4));
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn dropped_session_discards_uncommitted_and_segment_is_reused() {
    let f = fixture();
    let v = open(&f);
    let mb = addr("judy@example.org");
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, "INBOX", "a", &body(1000, 1)).unwrap();
    s.commit().unwrap();
    put(&mut s, 2, "INBOX", "b", &body(1000, 2)).unwrap();
    drop(s);
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    // Not a duplicate: seq 2 was never committed.
    assert_eq!(
        put(&mut s, 1, "INBOX", "b", &body(1000, 2)).unwrap(),
        Finished::Pending { seq: 1 }
    );
    s.commit().unwrap();
    drop(s);
    assert_eq!(segment_files(&f.dir).len(), 1);
    assert_eq!(v.list_messages(&mb).unwrap().len(), 2);
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn segments_roll_over_and_commit_thresholds() {
    let f = fixture();
    let small = StoreSettings {
        segment_max_bytes: 1 << 20,
    };
    let v = Volume::open(&f.dir, &f.key, &small).unwrap();
    let mb = addr("kim@example.org");
    let commit = CommitSettings {
        max_messages: 1000,
        max_bytes: 2 << 20,
        max_delay_ms: 50,
    };
    let mut s = v.session(&mb, &commit).unwrap();
    assert!(s.oldest_pending().is_none());
    let mut stored = 0;
    for i in 0..30u64 {
        put(
            &mut s,
            i,
            "INBOX",
            &format!("m{i}"),
            &body(200_000, i as u8),
        )
        .unwrap();
        assert!(s.oldest_pending().is_some());
        if s.should_commit() {
            stored += s.commit().unwrap().len();
        }
    }
    stored += s.commit().unwrap().len();
    assert_eq!(stored, 30);
    drop(s);
    let segs = segment_files(&f.dir);
    assert!(segs.len() >= 5, "{segs:?}");
    for p in &segs {
        assert!(std::fs::metadata(p).unwrap().len() <= 1 << 20);
    }
    let list: Vec<StoredMessage> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (i, m) in list.iter().enumerate() {
        assert_eq!(read_all(&v, m), body(200_000, i as u8));
    }
    assert!(v.verify().unwrap().damaged.is_empty());
}

#[test]
fn no_plaintext_anywhere_in_the_volume() {
    let f = fixture();
    let markers: [&[u8]; 5] = [
        b"MarkerFolderQx7",
        b"MarkerSourceIdZq9",
        b"MarkerBodySubjectWv3",
        b"markermailboxkp2",
        b"markerdomainyy5",
    ];
    {
        let v = open(&f);
        let mb = addr("markermailboxkp2@markerdomainyy5.example");
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        for i in 0..20u64 {
            let mut data =
                b"Subject: MarkerBodySubjectWv3\r\nMessage-ID: <MarkerBodySubjectWv3@x>\r\n\r\n"
                    .to_vec();
            data.extend(std::iter::repeat_n(b"MarkerBodySubjectWv3 ".as_slice(), 4000).flatten());
            put(
                &mut s,
                i,
                &format!("MarkerFolderQx7/Sub{i}"),
                &format!("MarkerSourceIdZq9-{i}"),
                &data,
            )
            .unwrap();
        }
        s.commit().unwrap();
        // Mirror changes: the locator lookup, the re-sealed metadata, the deletion
        // records and the deleted ids must not put a name in clear anywhere either.
        for i in 0..5u64 {
            s.delete(
                100 + i,
                FolderName::parse(&format!("MarkerFolderQx7/Sub{i}")).unwrap(),
                SourceId::parse(&format!("MarkerSourceIdZq9-{i}")).unwrap(),
            )
            .unwrap();
            s.set_flags(
                200 + i,
                FolderName::parse(&format!("MarkerFolderQx7/Sub{}", i + 5)).unwrap(),
                SourceId::parse(&format!("MarkerSourceIdZq9-{}", i + 5)).unwrap(),
                Flags::from_maildir("FRS").unwrap(),
            )
            .unwrap();
        }
        let acks = s.commit().unwrap();
        assert_eq!(acks.len(), 10);
        assert!(
            acks.iter().all(|(_, st)| *st == AckStatus::Applied),
            "{acks:?}"
        );
        assert_eq!(v.list_messages(&mb).unwrap().len(), 15);
        // Scan while the volume is still open, so the WAL and -shm are there too.
        check_no_markers(&f.dir, &markers, true);
        v.verify().unwrap();
        v.list_messages(&mb).unwrap();
        check_no_markers(&f.dir, &markers, true);
    }
    // After close (WAL checkpointed into the main file).
    check_no_markers(&f.dir, &markers, false);
}

pub(crate) fn check_no_markers(dir: &Path, markers: &[&[u8]], expect_wal: bool) {
    let files = all_files(dir);
    if expect_wal {
        assert!(
            files.iter().any(|p| p.ends_with("index.sqlite-wal")),
            "{files:?}"
        );
        assert!(
            files.iter().any(|p| p.ends_with("index.sqlite-shm")),
            "{files:?}"
        );
    }
    for p in files {
        let bytes = std::fs::read(&p).unwrap();
        let lower = bytes.to_ascii_lowercase();
        for m in markers {
            let m = m.to_ascii_lowercase();
            assert!(
                !lower.windows(m.len()).any(|w| w == m.as_slice()),
                "{} contains {}",
                p.display(),
                String::from_utf8_lossy(&m)
            );
        }
    }
}

#[test]
fn thread_bounds() {
    fn shared<T: Send + Sync>() {}
    fn movable<T: Send + 'static>() {}
    shared::<Volume>();
    movable::<IngestSession>();
    movable::<StoredMessage>();
}

// === issue 8: recovery key, passphrase, rekey, rotation, shredding, upgrade ===

const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn write_file(p: &Path, b: &[u8]) -> PathBuf {
    std::fs::write(p, b).unwrap();
    p.to_path_buf()
}

/// Stores `n` messages in `mb` and commits.
pub(crate) fn fill(v: &Volume, mb: &MailboxAddr, first: u64, n: u64) {
    let mut s = v.session(mb, &CommitSettings::default()).unwrap();
    for i in first..first + n {
        put(
            &mut s,
            i,
            "INBOX",
            &format!("m{i}"),
            &body(1000 + i as usize, i as u8),
        )
        .unwrap();
    }
    s.commit().unwrap();
}

pub(crate) fn read_mailbox(v: &Volume, mb: &MailboxAddr) -> Vec<(String, Vec<u8>)> {
    v.list_messages(mb)
        .unwrap()
        .into_iter()
        .map(|m| {
            let m = m.unwrap();
            (m.meta.source_id.to_string(), read_all(v, &m))
        })
        .collect()
}

#[test]
fn issue8_recovery_key_opens_a_volume_whose_key_file_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("k");
    let rec = tmp.path().join("k.recovery");
    let out = Volume::init_with(
        &dir,
        &InitOptions {
            primary: Credential::KeyFile(key.clone()),
            recovery_key_file: Some(rec.clone()),
            argon2: FAST,
        },
    )
    .unwrap();
    assert!(out.key_file_created);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&rec).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(Volume::has_recovery_slot(&dir).unwrap());
    let mb = addr("a@example.org");
    fill(&Volume::open(&dir, &key, &settings()).unwrap(), &mb, 0, 3);
    std::fs::remove_file(&key).unwrap();
    let info = Volume::unlock_check(&dir, &Credential::RecoveryKey(rec.clone())).unwrap();
    assert_eq!(info.slot_kind, "recovery key");
    let v = Volume::open_with(&dir, &Credential::RecoveryKey(rec.clone()), &settings()).unwrap();
    assert_eq!(read_mailbox(&v, &mb).len(), 3);
    drop(v);
    // Rekey from the recovery key to a new key file; the recovery slot stays.
    let key2 = tmp.path().join("k2");
    assert!(Volume::rekey(
        &dir,
        &Credential::RecoveryKey(rec.clone()),
        &Credential::KeyFile(key2.clone()),
        &FAST
    )
    .unwrap());
    assert!(Volume::has_recovery_slot(&dir).unwrap());
    Volume::unlock_check(&dir, &Credential::KeyFile(key2)).unwrap();
    Volume::unlock_check(&dir, &Credential::RecoveryKey(rec.clone())).unwrap();
    // init never overwrites a recovery key file.
    let e = Volume::init_with(
        &tmp.path().join("vol2"),
        &InitOptions {
            primary: Credential::KeyFile(tmp.path().join("k3")),
            recovery_key_file: Some(rec),
            argon2: FAST,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::KeyFile {
                kind: "recovery key file",
                ..
            }
        ),
        "{e}"
    );
    assert!(!tmp.path().join("vol2").exists() && !tmp.path().join("k3").exists());
}

#[test]
fn issue8_passphrase_volume_refuses_a_wrong_passphrase_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let pass = write_file(&tmp.path().join("pass"), b"tr0ub4dor&3\n");
    Volume::init_with(
        &dir,
        &InitOptions {
            primary: Credential::Passphrase(pass.clone()),
            recovery_key_file: None,
            argon2: FAST,
        },
    )
    .unwrap();
    let mb = addr("a@example.org");
    fill(
        &Volume::open_with(&dir, &Credential::Passphrase(pass.clone()), &settings()).unwrap(),
        &mb,
        0,
        2,
    );
    let before: Vec<_> = all_files(&dir)
        .into_iter()
        .map(|p| (std::fs::read(&p).unwrap(), p))
        .collect();
    let wrong = write_file(&tmp.path().join("wrong"), b"tr0ub4dor&4\n");
    let e = Volume::open_with(&dir, &Credential::Passphrase(wrong), &settings()).unwrap_err();
    assert!(
        matches!(&e, StoreError::WrongKey { hint, .. } if hint.contains("passphrase")),
        "{e}"
    );
    let after: Vec<_> = all_files(&dir)
        .into_iter()
        .map(|p| (std::fs::read(&p).unwrap(), p))
        .collect();
    assert_eq!(before, after);
    // A key file is refused with a hint that this volume wants a passphrase.
    let e = Volume::open(
        &dir,
        &write_file(&tmp.path().join("kf"), &[0; 32]),
        &settings(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no key-file slot"), "{e}");
    let empty = write_file(&tmp.path().join("empty"), b"\n");
    assert!(matches!(
        Volume::open_with(&dir, &Credential::Passphrase(empty), &settings()),
        Err(StoreError::KeyFile {
            kind: "passphrase file",
            ..
        })
    ));
}

#[test]
fn issue8_rekey_killed_at_each_step_opens_with_old_or_new() {
    for stop in [
        WriteStep::TornTemp,
        WriteStep::TempSynced,
        WriteStep::Renamed,
        WriteStep::Done,
    ] {
        let f = fixture();
        let mb = addr("a@example.org");
        fill(&open(&f), &mb, 0, 2);
        let newpass = write_file(&f._tmp.path().join("newpass"), b"new passphrase");
        Volume::rekey_until(
            &f.dir,
            &Credential::KeyFile(f.key.clone()),
            &Credential::Passphrase(newpass.clone()),
            &FAST,
            stop,
        )
        .unwrap();
        let old_ok = Volume::open(&f.dir, &f.key, &settings()).map(|v| read_mailbox(&v, &mb).len());
        let new_ok = Volume::open_with(
            &f.dir,
            &Credential::Passphrase(newpass.clone()),
            &settings(),
        )
        .map(|v| read_mailbox(&v, &mb).len());
        match stop {
            WriteStep::TornTemp | WriteStep::TempSynced => {
                assert_eq!(old_ok.unwrap(), 2, "{stop:?}");
                assert!(new_ok.is_err(), "{stop:?}");
                // Rekeying again after the interruption works.
                Volume::rekey(
                    &f.dir,
                    &Credential::KeyFile(f.key.clone()),
                    &Credential::Passphrase(newpass.clone()),
                    &FAST,
                )
                .unwrap();
                assert!(Volume::open(&f.dir, &f.key, &settings()).is_err());
                assert_eq!(
                    read_mailbox(
                        &Volume::open_with(&f.dir, &Credential::Passphrase(newpass), &settings())
                            .unwrap(),
                        &mb
                    )
                    .len(),
                    2
                );
            }
            _ => {
                assert!(old_ok.is_err(), "{stop:?}");
                assert_eq!(new_ok.unwrap(), 2, "{stop:?}");
            }
        }
    }
}

#[test]
fn issue8_rekey_is_refused_while_open_and_with_a_wrong_key() {
    let f = fixture();
    let v = open(&f);
    let k2 = f._tmp.path().join("k2");
    assert!(matches!(
        Volume::rekey(
            &f.dir,
            &Credential::KeyFile(f.key.clone()),
            &Credential::KeyFile(k2.clone()),
            &FAST
        ),
        Err(StoreError::Busy { .. })
    ));
    drop(v);
    let wrong = write_file(&f._tmp.path().join("wrong"), &[3; 32]);
    assert!(matches!(
        Volume::rekey(
            &f.dir,
            &Credential::KeyFile(wrong),
            &Credential::KeyFile(k2),
            &FAST
        ),
        Err(StoreError::WrongKey { .. })
    ));
}

#[test]
fn issue8_rotated_mailbox_reads_old_and_new_messages_and_still_dedups() {
    let f = fixture();
    let (a, b) = (addr("a@example.org"), addr("b@example.org"));
    let v = open(&f);
    fill(&v, &a, 0, 3);
    fill(&v, &b, 0, 2);
    let before = read_mailbox(&v, &a);
    let r = v.rotate_mailbox(&a).unwrap();
    assert_eq!(r.new_key_id, Some(2));
    fill(&v, &a, 3, 2);
    // The same messages again are duplicates across the rotation.
    let mut s = v.session(&a, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut s, 0, "INBOX", "m0", &body(1000, 0)).unwrap(),
        Finished::Duplicate { seq: 0 }
    );
    drop(s);
    v.rotate_tenant("example.org").unwrap();
    // Both rotations are in the volume's audit log; the tenant's names no domain.
    let records =
        mailferry_audit::read_records(v.dir().join(crate::audit_trail::AUDIT_FILE)).unwrap();
    let rotated: Vec<_> = records
        .iter()
        .filter(|e| e.event == "key.rotated" || e.event == "tenant.key.rotated")
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(rotated, ["key.rotated", "tenant.key.rotated"]);
    let tenant = records
        .iter()
        .find(|e| e.event == "tenant.key.rotated")
        .unwrap();
    let text = serde_json::to_string(&tenant.data).unwrap();
    assert!(!text.contains("example.org"), "{text}");
    assert!(text.contains("\"keys_rewrapped\":3"), "{text}");
    drop(v);
    let v = open(&f);
    let after = read_mailbox(&v, &a);
    assert_eq!(after.len(), 5);
    assert_eq!(&after[..3], &before[..]);
    let key_ids: Vec<u32> = v
        .list_messages(&a)
        .unwrap()
        .into_iter()
        .map(|m| m.unwrap().loc.key_id)
        .collect();
    assert_eq!(key_ids, vec![1, 1, 1, 2, 2]);
    assert_eq!(read_mailbox(&v, &b).len(), 2);
    let rep = v.verify().unwrap();
    assert!(rep.damaged.is_empty(), "{:?}", rep.damaged);
    assert_eq!(rep.messages_checked, 7);
    assert!(matches!(
        v.rotate_tenant("nowhere.example"),
        Err(StoreError::UnknownTenant { .. })
    ));
}

#[test]
fn issue8_shred_destroys_the_wrapped_keys_in_the_index_files() {
    let f = fixture();
    let (a, b) = (addr("a@example.org"), addr("b@example.org"));
    let v = open(&f);
    fill(&v, &a, 0, 3);
    v.rotate_mailbox(&a).unwrap();
    fill(&v, &a, 3, 1);
    fill(&v, &b, 0, 2);
    let wrapped: Vec<Vec<u8>> = {
        let ix = v.inner.index().unwrap();
        let row = ix
            .mailbox_by_mac(&v.inner.keys.name_mac(b'm', a.as_str()))
            .unwrap()
            .unwrap();
        let mut w: Vec<Vec<u8>> = ix
            .old_mailbox_keys(row.id)
            .unwrap()
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        w.push(row.key_wrapped);
        w
    };
    assert_eq!(wrapped.len(), 2);
    // The scan below can see them: before the shred, they are on disk.
    v.inner.index().unwrap().checkpoint_truncate().unwrap();
    let on_disk: Vec<u8> = all_files(&f.dir)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    for w in &wrapped {
        assert!(on_disk.windows(w.len()).any(|x| x == &w[..]));
    }
    assert_eq!(v.shred_mailbox(&a).unwrap(), 4);
    assert!(matches!(
        v.list_messages(&a),
        Err(StoreError::Shredded { .. })
    ));
    assert!(matches!(
        v.session(&a, &CommitSettings::default()),
        Err(StoreError::Shredded { .. })
    ));
    assert!(matches!(
        v.shred_mailbox(&a),
        Err(StoreError::Shredded { .. })
    ));
    assert_eq!(read_mailbox(&v, &b).len(), 2);
    let rep = v.verify().unwrap();
    assert!(rep.damaged.is_empty(), "{:?}", rep.damaged);
    assert_eq!((rep.messages_checked, rep.shredded), (2, 4));
    // While open and after closing: no wrapped key byte string is anywhere in the volume.
    let scan = |when: &str| {
        for p in all_files(&f.dir) {
            let bytes = std::fs::read(&p).unwrap();
            for w in &wrapped {
                assert!(
                    !bytes.windows(w.len()).any(|x| x == &w[..]),
                    "{when}: wrapped key still in {}",
                    p.display()
                );
            }
        }
    };
    scan("open");
    drop(v);
    scan("closed");
    let v = open(&f);
    assert!(matches!(
        v.list_messages(&a),
        Err(StoreError::Shredded { .. })
    ));
}

#[test]
fn issue8_version_1_volume_opens_and_is_upgraded() {
    let f = fixture();
    let mb = addr("a@example.org");
    fill(&open(&f), &mb, 0, 2);
    // Turn it into what the foundation wrote: schema 1 (no mailbox_keys) and header v1.
    {
        let c = rusqlite::Connection::open(f.dir.join(INDEX_FILE)).unwrap();
        c.execute_batch(
            "DROP TABLE tenant_keys; ALTER TABLE messages DROP COLUMN digest; \
             ALTER TABLE messages DROP COLUMN leaf_enc; ALTER TABLE messages DROP COLUMN flags_enc; \
             DROP TABLE mailbox_keys; DROP INDEX messages_locator; \
             ALTER TABLE messages DROP COLUMN locator; DROP TABLE deleted_messages; \
             UPDATE volume SET v = X'0000000000000001' WHERE k = 'schema';",
        )
        .unwrap();
    }
    let mut hb = std::fs::read(f.dir.join(HEADER_FILE)).unwrap();
    hb[9] = 1;
    let n = hb.len();
    let sum = ring::digest::digest(&ring::digest::SHA256, &hb[..n - 32]);
    hb[n - 32..].copy_from_slice(sum.as_ref());
    std::fs::write(f.dir.join(HEADER_FILE), &hb).unwrap();
    assert_eq!(Header::read(&f.dir).unwrap().version, 1);
    let v = open(&f);
    assert_eq!(read_mailbox(&v, &mb).len(), 2);
    assert_eq!(
        Header::read(&f.dir).unwrap().version,
        crate::header::VERSION
    );
    // The lock is on the new header file: a second open is Busy.
    assert!(matches!(
        Volume::open(&f.dir, &f.key, &settings()),
        Err(StoreError::Busy { .. })
    ));
    v.rotate_mailbox(&mb).unwrap();
}

// === issue 8: crash recovery ===

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn issue8_segment_truncated_at_every_offset_of_the_last_record_is_named_and_others_read() {
    let f = fixture();
    let mb = addr("kate@example.org");
    let (last_start, last_end, seg, expected) = {
        let v = open(&f);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        put(&mut s, 1, "INBOX", "first", &body(70_000, 1)).unwrap();
        put(&mut s, 2, "INBOX", "second", &body(500, 2)).unwrap();
        s.commit().unwrap();
        put(&mut s, 3, "INBOX", "last", &body(150, 3)).unwrap();
        s.commit().unwrap();
        drop(s);
        let list: Vec<StoredMessage> = v
            .list_messages(&mb)
            .unwrap()
            .into_iter()
            .map(|m| m.unwrap())
            .collect();
        let last = &list[2];
        let expected: Vec<(String, Vec<u8>)> = read_mailbox(&v, &mb);
        (
            last.loc.offset,
            last.loc.offset + last.loc.record_len,
            segment_files(&f.dir)[0].clone(),
            expected,
        )
    };
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), last_end);
    let seg_name = seg.file_name().unwrap().to_owned();
    let mut cases = 0;
    for cut in last_start..last_end {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        copy_dir(&f.dir, &dir);
        let file = OpenOptions::new()
            .write(true)
            .open(dir.join(SEGMENTS_DIR).join(&seg_name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let v = Volume::open(&dir, &f.key, &settings()).unwrap();
        // Detected at open, left as it is.
        assert_eq!(
            v.recovery().short_segments,
            vec![ShortSegment {
                segment: 1,
                len: cut,
                expected: last_end
            }],
            "cut at {cut}"
        );
        // verify names exactly the damaged message.
        let report = v.verify().unwrap();
        assert_eq!(
            report.damaged.len(),
            1,
            "cut at {cut}: {:?}",
            report.damaged
        );
        assert_eq!(report.damaged[0].item, "INBOX/last");
        assert_eq!(report.damaged[0].mailbox, "kate@example.org");
        // Every other message still reads back byte for byte.
        let mut read = 0;
        for m in v.list_messages(&mb).unwrap() {
            let m = m.unwrap();
            let mut out = Vec::new();
            let res = v.read_message(&m, &mut out);
            if m.meta.source_id.as_str() == "last" {
                assert!(res.is_err(), "cut at {cut}");
            } else {
                res.unwrap();
                let want = expected
                    .iter()
                    .find(|(sid, _)| sid == m.meta.source_id.as_str())
                    .unwrap();
                assert_eq!(out, want.1, "cut at {cut}");
                read += 1;
            }
        }
        assert_eq!(read, 2);
        // The damaged segment is never appended to: new mail goes elsewhere and reads.
        fill(&v, &addr("leo@example.org"), 1, 1);
        assert_eq!(read_mailbox(&v, &addr("leo@example.org")).len(), 1);
        cases += 1;
    }
    // One case per byte of the record: 72-byte header + 150 bytes + one tag.
    assert_eq!(cases, 72 + 150 + 16);
}

#[test]
fn issue8_index_behind_the_segments_is_cut_at_open_and_the_resend_is_stored() {
    let f = fixture();
    let mb = addr("mia@example.org");
    let (committed, crashed) = {
        let v = open(&f);
        let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
        put(&mut s, 1, "INBOX", "a", &body(1000, 1)).unwrap();
        s.commit().unwrap();
        let committed = std::fs::read(&segment_files(&f.dir)[0]).unwrap();
        // Two complete records on disk whose rows never committed (power loss between
        // the fdatasync and the SQLite transaction).
        put(&mut s, 2, "INBOX", "b", &body(2000, 2)).unwrap();
        put(&mut s, 3, "INBOX", "c", &body(3000, 3)).unwrap();
        let job = s.start_commit().unwrap();
        let crashed = std::fs::read(&segment_files(&f.dir)[0]).unwrap();
        drop(job);
        drop(s);
        (committed, crashed)
    };
    assert!(crashed.len() > committed.len());
    std::fs::write(&segment_files(&f.dir)[0], &crashed).unwrap();
    let v = open(&f);
    assert_eq!(
        v.recovery().tails_truncated,
        vec![(1, (crashed.len() - committed.len()) as u64)]
    );
    assert_eq!(std::fs::read(&segment_files(&f.dir)[0]).unwrap(), committed);
    assert_eq!(read_mailbox(&v, &mb).len(), 1);
    // Never acknowledged, so the agent resends: stored, not a duplicate.
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut s, 2, "INBOX", "b", &body(2000, 2)).unwrap(),
        Finished::Pending { seq: 2 }
    );
    s.commit().unwrap();
    drop(s);
    assert_eq!(read_mailbox(&v, &mb).len(), 2);
    assert!(v.verify().unwrap().damaged.is_empty());
}
