use super::*;
use crate::source::{Location, PriorItem};
use mailferry_core::Flags;
use proptest::prelude::*;
use std::path::PathBuf;

fn f(s: &str) -> FolderName {
    FolderName::parse(s).unwrap()
}

fn id(s: &str) -> SourceId {
    SourceId::parse(s).unwrap()
}

fn item(folder: &str, source_id: &str, size: u64, date: i64) -> SourceItem {
    SourceItem {
        folder: f(folder),
        source_id: id(source_id),
        flags: Flags::default(),
        internal_date: date,
        size,
        location: Location::File(PathBuf::from(format!("/src/{folder}/{source_id}"))),
        ident: None,
    }
}

fn profile(text: &str) -> Profile {
    Profile::parse(text, "test").unwrap()
}

const DAY: i64 = 86_400;
const NOW: i64 = 1_750_000_000;

#[test]
fn default_profile_keeps_everything_unchanged() {
    let items = vec![
        item("INBOX", "1", 10, 0),
        item("Sent Items", "1", 10, 0),
        item("[Gmail]/All Mail", "2", 10, 0),
    ];
    let out = apply(&Profile::default(), items.clone(), NOW).unwrap();
    assert!(out.skipped.is_empty() && out.excluded_folders.is_empty());
    let names: Vec<_> = out.kept.iter().map(SourceItem::name).collect();
    let want: Vec<_> = items.iter().map(SourceItem::name).collect();
    assert_eq!(names, want);
    for k in &out.kept {
        assert!(matches!(out.source_item(k), Cow::Borrowed(_)));
    }
}

#[test]
fn special_use_renames_folders_and_tags_ids() {
    let p = profile("[folders]\nspecial_use = true\n");
    let out = apply(
        &p,
        vec![
            item("Sent Items", "42", 10, 0),
            item("Deleted Items", "42", 10, 0),
            item("INBOX", "42", 10, 0),
        ],
        NOW,
    )
    .unwrap();
    let by_folder: BTreeMap<_, _> = out
        .kept
        .iter()
        .map(|i| (i.folder.to_string(), i.source_id.to_string()))
        .collect();
    assert_eq!(
        by_folder["Sent"],
        format!("{}~42", folder_tag(&f("Sent Items")))
    );
    assert_eq!(
        by_folder["Trash"],
        format!("{}~42", folder_tag(&f("Deleted Items")))
    );
    assert_eq!(by_folder["INBOX"], "42");
    // Opening goes back to the source's names.
    let sent = out.kept.iter().find(|i| i.folder == f("Sent")).unwrap();
    let orig = out.source_item(sent);
    assert_eq!(
        (orig.folder.as_str(), orig.source_id.as_str()),
        ("Sent Items", "42")
    );
    assert_eq!(
        out.folders[&f("Sent Items")].rename,
        Some(Rename::SpecialUse)
    );
    assert_eq!(out.folders[&f("Sent Items")].destination, f("Sent"));
}

#[test]
fn without_merge_a_clashing_folder_keeps_its_name() {
    let p = profile("[folders]\nspecial_use = true\n");
    let out = apply(
        &p,
        vec![item("Sent", "1", 1, 0), item("Sent Items", "1", 1, 0)],
        NOW,
    )
    .unwrap();
    let d = &out.folders[&f("Sent Items")];
    assert_eq!(d.destination, f("Sent Items"));
    assert!(
        d.note.as_deref().unwrap().contains("folders.merge"),
        "{d:?}"
    );
    let names: BTreeSet<_> = out.kept.iter().map(SourceItem::name).collect();
    assert_eq!(
        names,
        ["Sent/1", "Sent Items/1"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

#[test]
fn with_merge_two_folders_share_a_destination_without_colliding() {
    let p = profile("[folders]\nspecial_use = true\nmerge = true\n");
    let out = apply(
        &p,
        vec![
            item("Sent", "1", 1, 0),
            item("Sent Items", "1", 1, 0),
            item("Sent Messages", "1", 1, 0),
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(out.kept.len(), 3);
    assert!(out.kept.iter().all(|i| i.folder == f("Sent")));
    let ids: BTreeSet<_> = out.kept.iter().map(|i| i.source_id.clone()).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn excluded_folders_are_listed_under_both_names() {
    let p = profile(
        "[source]\nexclude_folders = [\"Old\"]\n[folders]\nspecial_use = true\nexclude = [\"Junk E-mail\", \"Archive/**\"]\n",
    );
    let out = apply(
        &p,
        vec![
            item("Junk E-mail", "1", 1, 0),
            item("Archive/2020", "1", 1, 0),
            item("INBOX", "1", 1, 0),
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(out.kept.len(), 1);
    let ex: Vec<_> = out.excluded_folders.iter().map(|f| f.as_str()).collect();
    // Junk (where Junk E-mail would arrive), the source name, the listed pattern match,
    // and the exact name even though the listing has no such folder.
    assert_eq!(ex, vec!["Archive/2020", "Junk", "Junk E-mail", "Old"]);
    assert!(out.folders[&f("Archive/2020")].excluded);
    assert_eq!(out.folders[&f("Junk E-mail")].items, 1);
}

#[test]
fn date_window_and_size_limit_skip_with_reasons() {
    let p = profile(
        "[filter]\nafter = \"30d\"\nbefore = \"1d\"\nmax_message_bytes = 1000\n[limits]\nlarge_item_limit = 5\n",
    );
    let out = apply(
        &p,
        vec![
            item("INBOX", "old", 10, NOW - 31 * DAY),
            item("INBOX", "new", 10, NOW),
            item("INBOX", "big", 1001, NOW - 2 * DAY),
            item("INBOX", "ok", 1000, NOW - 2 * DAY),
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(out.kept.len(), 1);
    assert_eq!(out.kept[0].source_id, id("ok"));
    let kinds: BTreeMap<_, _> = out
        .skipped
        .iter()
        .map(|s| (s.source_id.to_string(), (s.cause, s.reason.clone())))
        .collect();
    assert_eq!(kinds["old"].0, SkipCause::OutsideDateWindow);
    assert!(
        kinds["old"].1.contains("filter.after (30d"),
        "{:?}",
        kinds["old"]
    );
    assert_eq!(kinds["new"].0, SkipCause::OutsideDateWindow);
    assert!(kinds["new"].1.contains("filter.before"));
    assert_eq!(kinds["big"].0, SkipCause::LargeItem);
    assert!(kinds["big"].1.contains("1001 bytes"));
    assert_eq!(out.large_items(), 1);
    let s = &out.skipped[0];
    assert_eq!((s.item.as_str(), s.size), ("INBOX/old", 10));
    assert_eq!(out.retained().count(), 3);
    assert_eq!(out.folders[&f("INBOX")].skipped, 3);
    assert_eq!(s.to_bad_item().item, "INBOX/old");
    // Out of the date window: counted against no limit.
    assert_eq!(s.to_report(), None);
    let big = out
        .skipped
        .iter()
        .find(|s| s.cause == SkipCause::LargeItem)
        .unwrap();
    let r = big.to_report().unwrap();
    assert_eq!(r.kind, mailferry_core::report::SkipKind::LargeItem);
    assert_eq!(
        (r.folder.as_str(), r.source_id.as_str(), r.size),
        ("INBOX", "big", Some(1001))
    );
}

#[test]
fn skipped_items_of_renamed_folders_name_their_destination() {
    let p = profile("[folders]\nspecial_use = true\n[filter]\nmax_message_bytes = 5\n");
    let out = apply(&p, vec![item("Sent Items", "9", 6, 0)], NOW).unwrap();
    let s = &out.skipped[0];
    assert_eq!(s.folder, f("Sent Items"));
    assert_eq!(s.source_id, id("9"));
    assert_eq!(s.destination_folder, f("Sent"));
    assert_eq!(s.destination_id, renamed_id(&f("Sent Items"), &id("9")));
}

#[test]
fn a_colliding_id_is_skipped_not_overwritten() {
    // A source id that already looks like a renamed one, in the folder a rename targets.
    let tagged = renamed_id(&f("Sent Items"), &id("1"));
    let p = profile("[folders]\nspecial_use = true\nmerge = true\n");
    let out = apply(
        &p,
        vec![
            item("Sent", tagged.as_str(), 1, 0),
            item("Sent Items", "1", 1, 0),
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(out.kept.len(), 1);
    assert_eq!(out.skipped[0].cause, SkipCause::IdCollision);
}

#[test]
fn long_ids_are_digested() {
    let long = "x".repeat(250);
    let r = renamed_id(&f("Sent Items"), &id(&long));
    assert!(r.as_str().len() <= 255);
    assert!(r.as_str().contains(TAG_DIGEST_SEPARATOR));
    assert_eq!(r, renamed_id(&f("Sent Items"), &id(&long)), "stable");
}

#[test]
fn source_prior_turns_renamed_ids_back() {
    let p = profile("[folders]\nspecial_use = true\nmerge = true\n");
    let filter = Filter::new(&p, NOW).unwrap();
    let pi = PriorItem {
        flags: Flags::default(),
        internal_date: 0,
        size: 1,
        ident: None,
    };
    let mut prior = Prior::default();
    let sent = prior.folders.entry(f("Sent")).or_default();
    sent.cursor = Some("c".into());
    sent.items.insert(id("own"), pi.clone());
    sent.items
        .insert(renamed_id(&f("Sent Items"), &id("7")), pi.clone());
    sent.items.insert(
        renamed_id(&f("Sent Items"), &id(&"y".repeat(250))),
        pi.clone(),
    );
    sent.items
        .insert(renamed_id(&f("Not Mapped"), &id("8")), pi.clone());
    let back = filter.source_prior(&prior);
    assert_eq!(back.folders[&f("Sent")].cursor.as_deref(), Some("c"));
    assert_eq!(
        back.folders[&f("Sent")].items.keys().collect::<Vec<_>>(),
        vec![&id("own")]
    );
    assert_eq!(
        back.folders[&f("Sent Items")]
            .items
            .keys()
            .collect::<Vec<_>>(),
        vec![&id("7")]
    );
}

#[test]
fn a_profile_built_in_code_with_a_bad_pattern_is_an_error() {
    let mut p = Profile::default();
    p.folders.exclude = vec!["re:(".into()];
    let e = apply(&p, vec![], NOW).unwrap_err().to_string();
    assert!(e.contains("folders.exclude[0]"), "{e}");
}

// === properties ===

const FOLDERS: &[&str] = &[
    "INBOX",
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Junk",
    "Junk E-mail",
    "Archive",
    "Archive/2020",
    "[Gmail]/All Mail",
    "[Gmail]/Sent Mail",
    "Old",
];

fn arb_items() -> impl Strategy<Value = Vec<SourceItem>> {
    prop::collection::vec(
        (
            prop::sample::select(FOLDERS),
            "[0-9]{1,2}",
            0u64..2000,
            0i64..1000,
        )
            .prop_map(|(folder, sid, size, day)| item(folder, &sid, size, NOW - day * DAY)),
        0..60,
    )
    .prop_map(|mut v| {
        // A listing never has one (folder, id) twice.
        let mut seen = HashSet::new();
        v.retain(|i| seen.insert((i.folder.clone(), i.source_id.clone())));
        v
    })
}

fn arb_profile() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::subsequence(
            vec![
                "\"Archive/**\"",
                "\"Junk*\"",
                "\"re:Old|INBOX\"",
                "\"[Gmail]/All Mail\"",
            ],
            0..3,
        ),
        prop::option::of(prop::sample::select(vec![
            "\"Sent\"",
            "\"Archive\"",
            "\"INBOX\"",
        ])),
        prop::option::of(1u64..1500),
        prop::option::of(1u64..900),
    )
        .prop_map(|(special, merge, exclude, map_to, max, after_days)| {
            let mut t = format!(
                "[folders]\nspecial_use = {special}\nmerge = {merge}\nexclude = [{}]\n",
                exclude.join(", ")
            );
            if let Some(to) = map_to {
                t += &format!("map = {{ \"Old\" = {to} }}\n");
            }
            t += "[filter]\n";
            if let Some(m) = max {
                t += &format!("max_message_bytes = {m}\n");
            }
            if let Some(d) = after_days {
                t += &format!("after = \"{d}d\"\n");
            }
            t
        })
}

proptest! {
    #[test]
    fn every_item_is_accounted_for_once_and_kept_ids_are_unique(
        items in arb_items(),
        text in arb_profile(),
    ) {
        let p = profile(&text);
        let filter = Filter::new(&p, NOW).unwrap();
        let out = filter.apply(items.clone());
        let excluded: usize = items.iter().filter(|i| filter.excludes(&i.folder)).count();
        prop_assert_eq!(out.kept.len() + out.skipped.len() + excluded, items.len());

        let keys: HashSet<_> = out.kept.iter().map(|i| (i.folder.clone(), i.source_id.clone())).collect();
        prop_assert_eq!(keys.len(), out.kept.len());

        let input: HashSet<_> = items.iter().map(|i| (i.folder.clone(), i.source_id.clone())).collect();
        let mut sources_of: BTreeMap<FolderName, BTreeSet<FolderName>> = BTreeMap::new();
        for k in &out.kept {
            let orig = out.source_item(k);
            prop_assert!(input.contains(&(orig.folder.clone(), orig.source_id.clone())));
            prop_assert!(!filter.excludes(&orig.folder));
            prop_assert_eq!(&out.folders[&orig.folder].destination, &k.folder);
            // Renamed exactly when the folder changed.
            prop_assert_eq!(orig.folder != k.folder, orig.source_id != k.source_id);
            sources_of.entry(k.folder.clone()).or_default().insert(orig.folder.clone());
        }
        if !p.folders.merge {
            for (dest, sources) in &sources_of {
                prop_assert!(sources.len() == 1, "{dest} gets {sources:?} without merge");
            }
        }
        for (src, d) in &out.folders {
            if d.excluded {
                prop_assert!(out.excluded_folders.contains(&d.destination));
                prop_assert!(out.excluded_folders.contains(src));
            }
        }
        for s in &out.skipped {
            prop_assert!(s.cause != SkipCause::IdCollision);
            prop_assert_eq!(&out.folders[&s.folder].destination, &s.destination_folder);
        }
    }

    #[test]
    fn source_prior_inverts_the_renaming(items in arb_items(), text in arb_profile()) {
        let p = profile(&text);
        let filter = Filter::new(&p, NOW).unwrap();
        let out = filter.apply(items);
        // The checkpoint after a pass that acknowledged every kept item.
        let mut prior = Prior::default();
        for k in &out.kept {
            prior.folders.entry(k.folder.clone()).or_default().items.insert(
                k.source_id.clone(),
                PriorItem { flags: Flags::default(), internal_date: 0, size: k.size, ident: None },
            );
        }
        let back = filter.source_prior(&prior);
        let got: BTreeSet<_> = back
            .folders
            .iter()
            .flat_map(|(f, pf)| pf.items.keys().map(move |i| (f.clone(), i.clone())))
            .collect();
        let want: BTreeSet<_> = out
            .kept
            .iter()
            .map(|k| {
                let o = out.source_item(k);
                (o.folder.clone(), o.source_id.clone())
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}

// === Roles and virtual folders ===

fn imap_item(folder: &str, uid: u32, msgid: &str, date: i64, size: u64) -> SourceItem {
    SourceItem {
        ident: Some(crate::source::imap::ident(msgid, date, size)),
        location: Location::Imap {
            uidvalidity: 1,
            uid,
        },
        ..item(folder, &format!("1-{uid}"), size, date)
    }
}

#[test]
fn a_folder_announced_sent_is_mapped_by_role() {
    let roles = BTreeMap::from([
        (f("Gesendete Objekte"), Role::Sent),
        (f("Papierkorb"), Role::Trash),
    ]);
    let items = || {
        vec![
            item("Gesendete Objekte", "1", 10, 0),
            item("Papierkorb", "1", 10, 0),
        ]
    };
    let p = profile("[folders]\nspecial_use = true\n");
    let out = Filter::new(&p, NOW)
        .unwrap()
        .apply_with_roles(items(), BTreeMap::new(), &roles);
    assert_eq!(out.folders[&f("Gesendete Objekte")].destination, f("Sent"));
    assert_eq!(
        out.folders[&f("Gesendete Objekte")].rename,
        Some(Rename::Role)
    );
    assert_eq!(out.folders[&f("Papierkorb")].destination, f("Trash"));
    // Without special_use, names stay; an explicit map wins over the role.
    let out = Filter::new(&Profile::default(), NOW)
        .unwrap()
        .apply_with_roles(items(), BTreeMap::new(), &roles);
    assert_eq!(
        out.folders[&f("Gesendete Objekte")].destination,
        f("Gesendete Objekte")
    );
    let p =
        profile("[folders]\nspecial_use = true\nmap = { \"Gesendete Objekte\" = \"Ausgang\" }\n");
    let out = Filter::new(&p, NOW)
        .unwrap()
        .apply_with_roles(items(), BTreeMap::new(), &roles);
    assert_eq!(
        out.folders[&f("Gesendete Objekte")].destination,
        f("Ausgang")
    );
}

#[test]
fn virtual_folders_keep_only_what_no_real_folder_holds() {
    let roles = BTreeMap::from([(f("All"), Role::All), (f("Starred"), Role::Flagged)]);
    let items = vec![
        imap_item("INBOX", 1, "<a@x>", 100, 10),
        imap_item("Work", 1, "<b@x>", 200, 20),
        imap_item("Hidden", 1, "<h@x>", 300, 30),
        // All: a and b (also in real folders), h (only in an excluded folder), c (only
        // here), two copies of b, and one without Message-ID that looks like INBOX's
        // only by date and size.
        imap_item("All", 1, "<a@x>", 100, 10),
        imap_item("All", 2, "<b@x>", 200, 20),
        imap_item("All", 3, "<b@x>", 200, 20),
        imap_item("All", 4, "<c@x>", 400, 40),
        imap_item("All", 5, "<h@x>", 300, 30),
        imap_item("All", 6, "", 500, 50),
        imap_item("INBOX", 2, "", 500, 50),
        // Starred: c again (All already keeps it) and d (only here).
        imap_item("Starred", 1, "<c@x>", 400, 40),
        imap_item("Starred", 2, "<d@x>", 600, 60),
    ];
    let p = profile("[folders]\nexclude = [\"Hidden\"]\nmerge = true\n");
    let out = Filter::new(&p, NOW)
        .unwrap()
        .apply_with_roles(items, BTreeMap::new(), &roles);
    let mut kept: Vec<String> = out
        .kept
        .iter()
        .map(|k| {
            let s = out.source_item(k);
            format!("{} <- {}", k.folder, s.name())
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "Archive <- All/1-3",
            "Archive <- All/1-4",
            "Archive <- All/1-5",
            "Archive <- All/1-6",
            "Archive <- Starred/1-2",
            "INBOX <- INBOX/1-1",
            "INBOX <- INBOX/1-2",
            "Work <- Work/1-1",
        ]
    );
    let note = out.folders[&f("All")].note.clone().unwrap();
    assert!(
        note.contains("2 message(s) also in other folders") && note.contains("4 found only here"),
        "{note}"
    );
    // Excluded, a virtual folder keeps nothing and drops nothing.
    let p = profile("[folders]\nexclude = [\"All\", \"Starred\"]\n");
    let out = Filter::new(&p, NOW).unwrap().apply_with_roles(
        vec![
            imap_item("INBOX", 1, "<a@x>", 100, 10),
            imap_item("All", 1, "<z@x>", 100, 10),
        ],
        BTreeMap::new(),
        &roles,
    );
    assert_eq!(out.kept.len(), 1);
    assert!(out.folders[&f("All")].note.is_none());
}
