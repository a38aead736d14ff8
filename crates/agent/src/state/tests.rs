use super::*;

fn entry(id: &str) -> CheckpointEntry {
    CheckpointEntry {
        kind: EntryKind::Stored,
        folder: FolderName::inbox(),
        source_id: SourceId::parse(id).unwrap(),
        stored_as: SourceId::parse(id).unwrap(),
        sha256: "00".repeat(32),
        size: 1,
        flags: Flags::default(),
        internal_date: 0,
        ident: None,
    }
}

fn mailbox() -> MailboxAddr {
    MailboxAddr::parse("a@example.com").unwrap()
}

fn done(s: &StateDir, id: &str) -> bool {
    s.is_done(&FolderName::inbox(), &SourceId::parse(id).unwrap())
        .unwrap()
}

#[test]
fn checkpoint_survives_reopen_and_torn_tail_is_cut() {
    let d = tempfile::tempdir().unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    let id = s.identity.move_id;
    s.record(&[entry("one"), entry("two")]).unwrap();
    drop(s);
    let cp = d.path().join(AUDIT_FILE);
    let mut f = fs::OpenOptions::new().append(true).open(&cp).unwrap();
    f.write_all(b"{\"seq\":9,\"time\":\"20").unwrap();
    drop(f);
    let mut s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    assert_eq!(s.identity.move_id, id, "same move across passes");
    assert!(done(&s, "two"));
    s.record(&[entry("three")]).unwrap();
    drop(s);
    // genesis, move.created, two messages, one more message: the torn line is gone.
    assert_eq!(mailferry_audit::verify(&cp).unwrap().records, 5);
    let events: Vec<String> = mailferry_audit::read_records(&cp)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events[1], "move.created");
    assert_eq!(&events[2..], ["message.stored"; 3]);
}

#[test]
fn second_agent_on_the_same_state_is_refused_while_the_first_runs() {
    let d = tempfile::tempdir().unwrap();
    let mut first = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    first.record(&[entry("one")]).unwrap();
    let index = fs::read(d.path().join(INDEX_FILE)).unwrap();
    let e = StateDir::open(d.path(), &mailbox(), "maildir:/x")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("another mailferry agent is running a pass"),
        "{e}"
    );
    assert_eq!(
        fs::read(d.path().join(INDEX_FILE)).unwrap(),
        index,
        "the refused agent wrote nothing"
    );
    first.record(&[entry("two")]).unwrap();
    drop(first);
    let s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    assert!(done(&s, "one") && done(&s, "two"));
}

#[test]
fn flags_deletions_and_remaps_replay_into_the_same_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    let mut a = entry("1-1");
    a.ident = Some("m1".into());
    s.record(&[a.clone(), entry("1-2"), entry("1-3")]).unwrap();
    let mut f = entry("1-2");
    f.kind = EntryKind::Flags;
    f.flags = Flags::from_maildir("FS").unwrap();
    let mut del = entry("1-3");
    del.kind = EntryKind::Deleted;
    let mut re = a.clone();
    re.kind = EntryKind::Remapped;
    re.source_id = SourceId::parse("2-1").unwrap();
    s.record(&[f, del, re]).unwrap();
    let mut cursors = BTreeMap::new();
    cursors.insert(FolderName::inbox(), "c1".to_string());
    s.record_cursors(&cursors).unwrap();
    let before = s.all_acked().unwrap();
    drop(s);
    // Rebuilt from the whole log, the index says the same.
    fs::remove_file(d.path().join(INDEX_FILE)).unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert!(matches!(
        s.replay(),
        Replay::Full {
            index_refused: None,
            ..
        }
    ));
    let after = s.all_acked().unwrap();
    assert_eq!(before, after, "the log replays to what was recorded");
    let ids: Vec<&str> = after.iter().map(|(k, _)| k.1.as_str()).collect();
    assert_eq!(ids, ["1-2", "2-1"]);
    assert_eq!(after[0].1.prior.flags.as_str(), "FS");
    assert_eq!(
        after[1].1.stored_as.as_str(),
        "1-1",
        "the destination's id is kept"
    );
    assert_eq!(
        s.checkpoint()
            .cursor(&FolderName::inbox())
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    // The receipt covers what the destination holds, under the ids it knows.
    let sha = "00".repeat(32);
    let expected =
        mailferry_audit::merkle::receipt_root([("INBOX/1-1", sha.as_str()), ("INBOX/1-2", &sha)]);
    assert_eq!(s.receipt().unwrap(), (expected, 2));
}

#[test]
fn a_remap_of_a_remapped_message_keeps_one_entry() {
    let d = tempfile::tempdir().unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    s.record(&[entry("1-1")]).unwrap();
    let mut re = entry("1-1");
    re.kind = EntryKind::Remapped;
    re.source_id = SourceId::parse("2-1").unwrap();
    s.record(&[re.clone()]).unwrap();
    re.source_id = SourceId::parse("3-1").unwrap();
    s.record(&[re]).unwrap();
    let all = s.all_acked().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].0 .1.as_str(), "3-1");
    assert_eq!(all[0].1.stored_as.as_str(), "1-1");
}

#[test]
fn checkpoint_view_reads_without_creating_or_locking_anything() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("not-yet");
    assert!(CheckpointView::load(&missing, &mailbox())
        .unwrap()
        .is_none());
    assert!(!missing.exists(), "a dry run creates no state directory");
    let mut s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    s.record(&[entry("one"), entry("two")]).unwrap();
    let mut cursors = BTreeMap::new();
    cursors.insert(FolderName::inbox(), "c1".to_string());
    s.record_cursors(&cursors).unwrap();
    // Readable while a pass holds the log, and nothing on disk changes.
    let before = fs::read(d.path().join(AUDIT_FILE)).unwrap();
    let v = CheckpointView::load(d.path(), &mailbox()).unwrap().unwrap();
    assert_eq!(v.identity.move_id, s.identity.move_id);
    assert_eq!(v.acked_count().unwrap(), 2);
    assert_eq!(
        v.checkpoint()
            .cursor(&FolderName::inbox())
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    assert_eq!(fs::read(d.path().join(AUDIT_FILE)).unwrap(), before);
    // Without an index, from the log alone.
    drop(v);
    drop(s);
    fs::remove_file(d.path().join(INDEX_FILE)).unwrap();
    let v = CheckpointView::load(d.path(), &mailbox()).unwrap().unwrap();
    assert_eq!(v.acked_count().unwrap(), 2);
    assert!(
        !d.path().join(INDEX_FILE).exists(),
        "a dry run writes no index"
    );
    let other = MailboxAddr::parse("b@example.com").unwrap();
    assert!(CheckpointView::load(d.path(), &other).is_err());
}

#[test]
fn checkpoint_view_applies_records_the_index_has_not_seen() {
    let d = tempfile::tempdir().unwrap();
    let (index_then, after) = index_that_lags(d.path());
    fs::write(d.path().join(INDEX_FILE), &index_then).unwrap();
    let v = CheckpointView::load(d.path(), &mailbox()).unwrap().unwrap();
    assert_eq!(v.all_acked().unwrap(), after);
    assert_eq!(
        fs::read(d.path().join(INDEX_FILE)).unwrap(),
        index_then,
        "the view applied them in memory"
    );
}

/// A state with remaps, flags, deletions and cursors; returns the index file as it was
/// after the first records (closed, so without a WAL) and the checkpoint at the end.
fn index_that_lags(dir: &Path) -> (Vec<u8>, Vec<AckedEntry>) {
    let mut s = StateDir::open(dir, &mailbox(), "imap://x").unwrap();
    let mut a = entry("1-1");
    a.ident = Some("m1".into());
    let mut sent = entry("1-9");
    sent.folder = FolderName::parse("Sent").unwrap();
    s.record(&[a.clone(), entry("1-2"), entry("1-3"), sent])
        .unwrap();
    drop(s);
    let then = fs::read(dir.join(INDEX_FILE)).unwrap();
    let mut s = StateDir::open(dir, &mailbox(), "imap://x").unwrap();
    let mut re = a.clone();
    re.kind = EntryKind::Remapped;
    re.source_id = SourceId::parse("2-1").unwrap();
    let mut f = entry("1-2");
    f.kind = EntryKind::Flags;
    f.flags = Flags::from_maildir("FS").unwrap();
    let mut del = entry("1-3");
    del.kind = EntryKind::Deleted;
    s.record(&[re, f, del, entry("1-4")]).unwrap();
    let mut cursors = BTreeMap::new();
    cursors.insert(FolderName::inbox(), "c1".to_string());
    s.record_cursors(&cursors).unwrap();
    let after = s.all_acked().unwrap();
    drop(s);
    (then, after)
}

#[test]
fn an_index_behind_the_log_catches_up_from_the_records_after_its_mark() {
    // A crash between syncing the log and committing the index leaves it behind.
    let d = tempfile::tempdir().unwrap();
    let (then, after) = index_that_lags(d.path());
    fs::write(d.path().join(INDEX_FILE), then).unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert_eq!(s.replay(), &Replay::Tail { records: 5 });
    assert_eq!(s.all_acked().unwrap(), after);
    assert_eq!(
        s.checkpoint()
            .cursor(&FolderName::inbox())
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    let receipt = s.receipt().unwrap();
    drop(s);
    // Up to date now: the next open replays nothing, and the receipt is the same.
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert_eq!(s.replay(), &Replay::Tail { records: 0 });
    assert_eq!(s.receipt().unwrap(), receipt);
    drop(s);
    fs::remove_file(d.path().join(INDEX_FILE)).unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert_eq!(
        s.all_acked().unwrap(),
        after,
        "same checkpoint from the whole log"
    );
    assert_eq!(s.receipt().unwrap(), receipt);
}

#[test]
fn a_damaged_foreign_or_misfitting_index_is_rebuilt_from_the_whole_log() {
    let d = tempfile::tempdir().unwrap();
    let (_, after) = index_that_lags(d.path());
    let index = d.path().join(INDEX_FILE);
    let good = fs::read(&index).unwrap();
    let other = tempfile::tempdir().unwrap();
    index_that_lags(other.path());
    let foreign = fs::read(other.path().join(INDEX_FILE)).unwrap();
    let mut garbage = good.clone();
    for b in garbage.iter_mut().take(200) {
        *b ^= 0x5a;
    }
    let newer = {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.db");
        fs::write(&p, &good).unwrap();
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute(
            "UPDATE meta SET value = 'mailferry-checkpoint/9' WHERE key = 'format'",
            [],
        )
        .unwrap();
        drop(c);
        fs::read(&p).unwrap()
    };
    for (what, bytes) in [
        ("garbage", garbage),
        ("empty", Vec::new()),
        ("unknown format", newer),
        ("another move's", foreign),
    ] {
        fs::write(&index, &bytes).unwrap();
        let s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
        match s.replay() {
            Replay::Full {
                index_refused: Some(_),
                ..
            } if what != "empty" => {}
            // An empty file is a new, empty SQLite database: no index yet.
            Replay::Full { .. } if what == "empty" => {}
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(s.all_acked().unwrap(), after, "{what}");
    }

    // A log cut before the index's mark (an index that outlived the records it
    // covers) does not fit: the log wins.
    let cp = d.path().join(AUDIT_FILE);
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    let len = fs::metadata(&cp).unwrap().len();
    s.record(&[entry("1-6")]).unwrap();
    drop(s);
    let f = fs::OpenOptions::new().write(true).open(&cp).unwrap();
    f.set_len(len + 3).unwrap(); // tears the last line: cut at open
    drop(f);
    let s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert!(
        matches!(
            s.replay(),
            Replay::Full {
                index_refused: Some(_),
                ..
            }
        ),
        "{:?}",
        s.replay()
    );
    assert!(!done(&s, "1-6"));
    assert_eq!(s.all_acked().unwrap(), after);
}

#[test]
fn killed_after_the_last_batch_the_next_open_replays_the_synced_tail() {
    // kill -9 while a pass appended: the log ends in a torn line after the mark.
    let d = tempfile::tempdir().unwrap();
    let (_, after) = index_that_lags(d.path());
    let cp = d.path().join(AUDIT_FILE);
    let mut f = fs::OpenOptions::new().append(true).open(&cp).unwrap();
    f.write_all(b"{\"seq\":99,\"time\":\"20").unwrap();
    drop(f);
    let mut s = StateDir::open(d.path(), &mailbox(), "imap://x").unwrap();
    assert_eq!(s.replay(), &Replay::Tail { records: 0 });
    assert_eq!(s.all_acked().unwrap(), after);
    s.record(&[entry("1-5")]).unwrap();
    drop(s);
    mailferry_audit::verify(&cp).unwrap();
}

#[test]
fn state_of_another_mailbox_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let b = MailboxAddr::parse("b@example.com").unwrap();
    StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    let e = StateDir::open(d.path(), &b, "maildir:/x")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("belongs to the move of a@example.com"), "{e}");
}

fn vector_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/checkpoint/index-v2.txt")
}

#[test]
fn the_documented_vector_is_reproduced() {
    // docs/checkpoint-index.md: three acknowledged messages in two folders (one remapped
    // from 1-1 to 2-1, one with flags FS, one with an ident, one under a renamed id),
    // one deleted, and one cursor.
    let mut a = entry("1-1");
    a.ident = Some("ident-1".into());
    a.sha256 = "11".repeat(32);
    a.size = 100;
    a.internal_date = 1_700_000_000;
    let mut b = entry("1-2");
    b.sha256 = "22".repeat(32);
    let mut c = entry("3f2a9c1e~7");
    c.folder = FolderName::parse("Sent").unwrap();
    c.sha256 = "33".repeat(32);
    let mut gone = entry("1-3");
    gone.kind = EntryKind::Deleted;
    let mut flags = b.clone();
    flags.kind = EntryKind::Flags;
    flags.flags = Flags::from_maildir("FS").unwrap();
    let mut re = a.clone();
    re.kind = EntryKind::Remapped;
    re.source_id = SourceId::parse("2-1").unwrap();
    let mut db = checkpoint_of(&[a, b, c, entry("1-3"), gone, flags, re]);
    db.reset_meta_for_vector("00000000-0000-4000-8000-000000000000");
    db.apply(
        [(
            "pass.cursors",
            json!({"cursors": {"INBOX": "77:5:3:2"}})
                .as_object()
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    let mut dump = db.dump().unwrap();
    let (root, n) = db.receipt().unwrap();
    dump.push_str(&format!("receipt {root} {n}\n"));
    if std::env::var_os("MAILFERRY_WRITE_VECTORS").is_some() {
        fs::write(vector_path(), &dump).unwrap();
    }
    assert_eq!(dump, fs::read_to_string(vector_path()).unwrap());
}

mod counts {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = (u8, u8, u8, u8)> {
        // (kind, folder, id, size)
        (0u8..6, 0u8..2, 0u8..6, 1u8..50)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// The per-folder counts the planner and the listing read (kept by triggers)
        /// always equal what the rows say, whatever records come in whatever order.
        #[test]
        fn per_folder_counts_follow_every_record(ops in proptest::collection::vec(op(), 1..40)) {
            let mut entries = Vec::new();
            for (kind, f, i, size) in ops {
                let folder = if f == 0 { "INBOX" } else { "Sent" };
                let id = if i == 5 { "3f2a9c1e~1".to_string() } else { format!("1-{i}") };
                let mut e = entry(&id);
                e.folder = FolderName::parse(folder).unwrap();
                e.size = u64::from(size);
                e.kind = match kind {
                    0 | 1 => EntryKind::Stored,
                    2 => EntryKind::Duplicate,
                    3 => EntryKind::Deleted,
                    4 => EntryKind::Flags,
                    _ => {
                        e.source_id = SourceId::parse(&format!("2-{i}")).unwrap();
                        EntryKind::Remapped
                    }
                };
                entries.push(e);
            }
            let db = checkpoint_of(&entries);
            let (kept, counted) = db.counts_both_ways();
            prop_assert_eq!(kept, counted);
        }
    }
}

/// The source side signs with its own key file (0600, the same key at every open); a
/// pass that ends without `sign_head` still signs on close, and a log cut afterwards is
/// never signed over.
#[test]
fn the_source_head_is_signed_with_the_state_key_and_a_cut_is_not_signed_over() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    s.record(&[entry("one"), entry("two")]).unwrap();
    let at_end = s.sign_head().unwrap().unwrap();
    assert_eq!(at_end.side, LogSide::Source);
    assert_eq!(at_end.seq, 4, "genesis, move.created, two messages");
    s.record(&[entry("three")]).unwrap();
    drop(s);
    let key_file = d.path().join(SIGNING_KEY_FILE);
    let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = head_signer(d.path()).unwrap().public_key();
    let head_file = d.path().join(mailferry_audit::head::HEAD_FILE);
    let head = mailferry_audit::head::read_head(&head_file).unwrap();
    assert_eq!(head.seq, 5, "signed on close");
    let log = d.path().join(AUDIT_FILE);
    mailferry_audit::verify_signed(&log, &head, &key).unwrap();

    let bytes = fs::read(&log).unwrap();
    let keep = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    fs::write(&log, &bytes[..keep]).unwrap();
    let mut s = StateDir::open(d.path(), &mailbox(), "maildir:/x").unwrap();
    assert_eq!(s.sign_head().unwrap(), None);
    s.record(&[entry("four")]).unwrap();
    drop(s);
    assert_eq!(
        mailferry_audit::head::read_head(&head_file).unwrap(),
        head,
        "the evidence is kept"
    );
    assert!(mailferry_audit::verify_signed(&log, &head, &key).is_err());
}
