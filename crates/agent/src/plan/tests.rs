use super::*;
use crate::source::{DeltaFolder, Listing, Location, PriorItem};

fn id(s: &str) -> SourceId {
    SourceId::parse(s).unwrap()
}

fn folder(s: &str) -> FolderName {
    FolderName::parse(s).unwrap()
}

fn item(f: &str, sid: &str, flags: &str, ident: Option<&str>) -> SourceItem {
    SourceItem {
        folder: folder(f),
        source_id: id(sid),
        flags: Flags::from_maildir(flags).unwrap(),
        internal_date: 7,
        size: 10,
        location: Location::File(format!("/x/{sid}").into()),
        ident: ident.map(str::to_string),
    }
}

fn acked(sid: &str, flags: &str, ident: Option<&str>) -> Acked {
    Acked {
        sha256: format!("sha-{sid}"),
        stored_as: id(sid),
        prior: PriorItem {
            flags: Flags::from_maildir(flags).unwrap(),
            internal_date: 7,
            size: 10,
            ident: ident.map(str::to_string),
        },
    }
}

fn checkpoint(state: &[((&str, &str), Acked)]) -> crate::state::db::CheckpointDb {
    let entries: Vec<CheckpointEntry> = state
        .iter()
        .map(|((f, s), a)| CheckpointEntry {
            kind: EntryKind::Stored,
            folder: folder(f),
            source_id: id(s),
            stored_as: a.stored_as.clone(),
            sha256: a.sha256.clone(),
            size: a.prior.size,
            flags: a.prior.flags.clone(),
            internal_date: a.prior.internal_date,
            ident: a.prior.ident.clone(),
        })
        .collect();
    crate::state::checkpoint_of(&entries)
}

fn run(state: &[((&str, &str), Acked)], listing: Listing, keep_folders: &[&str]) -> Plan {
    // As the pass builds it: the profile's kept folders plus incomplete ones.
    let mut keep = Keep::default();
    keep.folders.extend(keep_folders.iter().map(|f| folder(f)));
    keep.folders.extend(listing.incomplete.iter().cloned());
    plan(&checkpoint(state), listing.items, &keep, &listing.delta).unwrap()
}

fn listing(items: Vec<SourceItem>) -> Listing {
    Listing {
        items,
        ..Default::default()
    }
}

#[test]
fn first_pass_sends_everything() {
    let p = run(
        &[],
        listing(vec![
            item("INBOX", "a", "", None),
            item("Sent", "b", "S", None),
        ]),
        &[],
    );
    assert_eq!(p.send.len(), 2);
    assert!(p.ops.is_empty() && p.remapped.is_empty());
}

#[test]
fn delta_pass_sends_only_new_updates_flags_and_deletes_gone() {
    let state = [
        (("INBOX", "a"), acked("a", "", None)),
        (("INBOX", "b"), acked("b", "", None)),
        (("INBOX", "c"), acked("c", "S", None)),
    ];
    let l = listing(vec![
        item("INBOX", "a", "", None),   // unchanged
        item("INBOX", "b", "FS", None), // flags changed
        item("INBOX", "d", "", None),   // new
    ]);
    let p = run(&state, l, &[]);
    assert_eq!(p.unchanged, 1);
    assert_eq!(p.send.len(), 1);
    assert_eq!(p.send[0].source_id, id("d"));
    assert_eq!(p.ops.len(), 2, "{:?}", p.ops);
    assert!(matches!(&p.ops[0], Op::SetFlags { source_id, flags, .. }
        if source_id == &id("b") && flags.as_str() == "FS"));
    assert!(matches!(&p.ops[1], Op::Delete { source_id, .. } if source_id == &id("c")));
    // The deletion's record names the message as the destination knows it.
    let e = p.ops[1].entry(EntryKind::Deleted);
    assert_eq!((e.stored_as.as_str(), e.sha256.as_str()), ("c", "sha-c"));
}

#[test]
fn incomplete_and_excluded_folders_lose_nothing() {
    let state = [
        (("Broken", "a"), acked("a", "", None)),
        (("Skipped", "b"), acked("b", "", None)),
        (("Gone", "c"), acked("c", "", None)),
    ];
    // The filter removed Skipped's items from the listing and names the folder.
    let mut l = listing(vec![]);
    l.incomplete.insert(folder("Broken"));
    let p = run(&state, l, &["Skipped"]);
    assert!(p.send.is_empty());
    // Only the folder that really vanished is deleted.
    assert_eq!(p.ops.len(), 1, "{:?}", p.ops);
    assert_eq!(p.ops[0].name(), "Gone/c");
}

#[test]
fn renumbered_messages_are_recognised_by_identity_not_resent() {
    // UIDVALIDITY changed: every id is new, the identities are the same.
    let state = [
        (("INBOX", "1-1"), acked("1-1", "S", Some("m1"))),
        (("INBOX", "1-2"), acked("1-2", "", Some("m2"))),
        (("INBOX", "1-3"), acked("1-3", "", Some("dup"))),
        (("INBOX", "1-4"), acked("1-4", "", Some("dup"))),
        (("INBOX", "1-5"), acked("1-5", "", Some("m5"))),
    ];
    let l = listing(vec![
        item("INBOX", "2-1", "S", Some("m1")),
        item("INBOX", "2-2", "F", Some("m2")), // also re-flagged
        item("INBOX", "2-3", "", Some("dup")),
        item("INBOX", "2-4", "", Some("dup")),
        item("INBOX", "2-9", "", Some("new")), // really new
                                               // m5 is gone
    ]);
    let p = run(&state, l, &[]);
    assert_eq!(p.send.len(), 1);
    assert_eq!(p.send[0].source_id, id("2-9"));
    assert_eq!(p.remapped.len(), 4);
    assert_eq!(p.unchanged, 0, "remapped messages are not counted twice");
    let mut pairs: Vec<(String, String)> = p
        .remapped
        .iter()
        .map(|e| (e.source_id.to_string(), e.stored_as.to_string()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("2-1", "1-1"),
            ("2-2", "1-2"),
            ("2-3", "1-3"),
            ("2-4", "1-4")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let names: Vec<String> = p.ops.iter().map(Op::name).collect();
    assert_eq!(names, ["INBOX/2-2", "INBOX/1-5"]);
    assert!(matches!(&p.ops[0], Op::SetFlags { acked, .. } if acked.stored_as == id("1-2")));
}

#[test]
fn identity_never_matches_across_folders_or_present_messages() {
    let state = [
        (("INBOX", "1-1"), acked("1-1", "", Some("m1"))),
        (("Sent", "1-1"), acked("1-1", "", Some("m2"))),
    ];
    // Same identity in another folder is a new message; a still-present one is not a
    // remap candidate.
    let l = listing(vec![
        item("INBOX", "1-1", "", Some("m1")),
        item("Archive", "2-1", "", Some("m2")),
        item("INBOX", "2-7", "", Some("m1")),
    ]);
    let p = run(&state, l, &[]);
    assert_eq!(p.send.len(), 2);
    assert!(p.remapped.is_empty());
    assert_eq!(p.ops.iter().map(Op::name).collect::<Vec<_>>(), ["Sent/1-1"]);
}

#[test]
fn messages_the_filter_left_out_stay_at_the_destination() {
    let state = [
        (("INBOX", "old"), acked("old", "", None)),
        (("INBOX", "gone"), acked("gone", "", None)),
    ];
    let mut keep = Keep::default();
    keep.items.insert((folder("INBOX"), id("old")));
    let p = plan(&checkpoint(&state), Vec::new(), &keep, &BTreeMap::new()).unwrap();
    assert_eq!(
        p.ops.iter().map(Op::name).collect::<Vec<_>>(),
        ["INBOX/gone"]
    );
}

#[test]
fn a_delta_folder_costs_its_changes_and_loses_nothing() {
    let state = [
        (("INBOX", "a"), acked("a", "", None)),
        (("INBOX", "b"), acked("b", "", None)),
        (("INBOX", "c"), acked("c", "S", None)),
        (("Sent", "s"), acked("s", "", None)),
        (("Gone", "g"), acked("g", "", None)),
    ];
    // INBOX vouched for: b re-flagged, d new, a listed although unchanged; nothing of
    // it is deleted even though c is not listed. Sent vouched for with nothing listed.
    let mut l = listing(vec![
        item("INBOX", "a", "", None),
        item("INBOX", "b", "F", None),
        item("INBOX", "d", "", None),
    ]);
    l.delta.insert(
        folder("INBOX"),
        DeltaFolder {
            acknowledged: 3,
            bytes: 30,
        },
    );
    l.delta.insert(
        folder("Sent"),
        DeltaFolder {
            acknowledged: 1,
            bytes: 10,
        },
    );
    let p = run(&state, l, &[]);
    assert_eq!(
        p.send
            .iter()
            .map(|i| i.source_id.as_str())
            .collect::<Vec<_>>(),
        ["d"]
    );
    assert_eq!(
        p.ops.iter().map(Op::name).collect::<Vec<_>>(),
        ["INBOX/b", "Gone/g"],
        "the re-flagged one, and the folder that vanished; nothing of INBOX or Sent goes"
    );
    assert_eq!(p.unchanged, 3, "a and c of INBOX, s of Sent");
    assert_eq!(p.unlisted, 2, "c and s were found without being listed");
}
