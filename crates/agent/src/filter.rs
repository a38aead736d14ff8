//! Applies a migration profile to a source listing: which messages move, into which
//! destination folder, under which id, and which are left out and why.
//!
//! Pure: a listing in, a decision out. It reads no message, talks to nobody and writes
//! nothing; the pass calls it between listing the source and planning against the
//! checkpoint. Patterns and maps are compiled once by [`Filter::new`].
//!
//! # Renamed folders and ids
//!
//! A kept item's `folder` is its *destination* folder. When that differs from the
//! source folder, its `source_id` becomes [`renamed_id`]: the original id behind a
//! short tag derived from the source folder's name (`3f2a9c1e~1700000001.M1P2.host`).
//! So the messages of `Sent Items` and of a hand-made `Sent`, merged into `Sent`, can
//! never collide, whatever ids the source uses (IMAP UIDs collide across folders all
//! the time), and the ids are the same in every pass as long as the profile is. Ids of
//! folders that keep their name are untouched: a profile that renames nothing changes
//! nothing. To open an item at the source, use [`Filtered::source_item`]; to hand the
//! checkpoint back to a source, [`Filter::source_prior`].
//!
//! # Merging
//!
//! With `folders.merge = true`, any number of source folders may arrive in one
//! destination folder. Without it, the profile check refuses an explicit map sending
//! two names to one folder, and when a *listing* has two folders arriving in one place
//! (say `Sent` and `Sent Items` with `special_use`), the folder already called that
//! keeps it and the renamed one keeps its own name; [`FolderDecision::note`] says so.
//!
//! # Roles and virtual folders
//!
//! A source may say what a folder is for ([`crate::source::Listing::roles`], IMAP
//! special-use attributes). With `folders.special_use = true` a folder announced
//! `\Sent` arrives in `Sent` whatever its name, as a well-known name would.
//!
//! A folder with a *virtual* role (`\All`, `\Flagged`: Gmail's All Mail and Starred,
//! Dovecot's virtual folders) is a view over the real folders, and is not copied as a
//! folder of its own, whatever `special_use` says. Its messages that a real folder
//! which moves holds too are left to that folder; those found only there (Gmail's
//! archived mail, which has no label) arrive in `Archive` (or where `folders.map`
//! sends the virtual folder). "The same message" is the same source `ident` (for IMAP,
//! a digest of Message-ID, internal date and size), counted: two copies in the virtual
//! folder and one in a real folder leave one for `Archive`. A message without
//! Message-ID is never taken for another (its ident is a date and a size only): it
//! may then arrive twice, never not at all. Virtual folders are matched in the order
//! `\All`, `\Flagged`, so one message of both arrives once.
//!
//! # What the planner must not delete
//!
//! Messages the filter leaves out are not gone from the source: nothing of theirs may
//! be deleted at the destination. [`Filtered::excluded_folders`] lists the destination
//! folders of excluded source folders (never delete there), and every
//! [`SkippedItem`] names its destination folder and id (keep it if it is there).

pub use crate::renamed::{
    folder_tag, is_renamed_id, renamed_id, TAG_DIGEST_SEPARATOR, TAG_SEPARATOR,
};
use crate::renamed::{untag, Untagged};
use crate::source::{DeltaFolder, Prior, PriorFolder, PriorItem, PriorLookup, SourceItem};
use crate::state::Checkpoint;
use crate::AgentError;
use mailferry_core::profile::{FolderRules, Profile, Rename, Role};
use mailferry_core::report::{self, BadItem};
use mailferry_core::{CoreError, FolderName, SourceId};
use serde::Serialize;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Why an item is left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipCause {
    /// Larger than `filter.max_message_bytes`: a large item, counted against
    /// `limits.large_item_limit`.
    LargeItem,
    /// Outside `filter.after` .. `filter.before`: not part of this move by design.
    OutsideDateWindow,
    /// Its destination folder and id are another item's (only possible with ids that
    /// already look renamed): a bad item, counted against `limits.bad_item_limit`.
    IdCollision,
}

/// A message the profile leaves out, named so an admin can find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedItem {
    /// `folder/source-id` at the source, as items are named in reports.
    pub item: String,
    /// The source folder.
    pub folder: FolderName,
    /// The source's id.
    pub source_id: SourceId,
    /// Where it would arrive: keep it if the destination has it from an earlier pass.
    pub destination_folder: FolderName,
    /// Under which id.
    pub destination_id: SourceId,
    /// Size in bytes.
    pub size: u64,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
    /// The kind of reason.
    pub cause: SkipCause,
    /// The reason in words, with the profile key and value that decided it.
    pub reason: String,
}

impl SkippedItem {
    /// As a bad item of the move report.
    pub fn to_bad_item(&self) -> BadItem {
        BadItem {
            item: self.item.clone(),
            reason: self.reason.clone(),
        }
    }

    /// As a skipped item of the move report, counted against a limit: a large item
    /// against the large-item limit, an id collision against the bad-item limit. An item
    /// outside the date window is not part of the move by design and counts against
    /// nothing: `None` (the dry run and [`FolderDecision::skipped`] still show it).
    pub fn to_report(&self) -> Option<report::SkippedItem> {
        let kind = match self.cause {
            SkipCause::LargeItem => report::SkipKind::LargeItem,
            SkipCause::IdCollision => report::SkipKind::BadItem,
            SkipCause::OutsideDateWindow => return None,
        };
        Some(report::SkippedItem {
            item: self.item.clone(),
            folder: self.folder.to_string(),
            source_id: self.source_id.to_string(),
            size: Some(self.size),
            kind,
            reason: self.reason.clone(),
            approved: false,
        })
    }
}

/// What the profile decided for one source folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FolderDecision {
    /// Its name at the destination (its own when not renamed).
    pub destination: FolderName,
    /// Renamed, and by which rule.
    pub rename: Option<Rename>,
    /// Left out by `folders.include` / `folders.exclude` / `source.exclude_folders`.
    pub excluded: bool,
    /// Something the admin should know (a rename not applied, and why).
    pub note: Option<String>,
    /// Messages listed in the folder.
    pub items: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, kept.
    pub kept: u64,
    /// Of those, skipped (listed in [`Filtered::skipped`]).
    pub skipped: u64,
}

/// The outcome of [`Filter::apply`].
#[derive(Debug, Default)]
pub struct Filtered {
    /// Items that move, in listing order, with `folder` and `source_id` in destination
    /// terms (see the module docs).
    pub kept: Vec<SourceItem>,
    /// Items left out, each with its reason.
    pub skipped: Vec<SkippedItem>,
    /// Destination folders in which nothing may be deleted: those of excluded source
    /// folders (listed, or excluded by exact name). A destination folder that also
    /// receives kept messages is included too: deletions at the source of such a merged
    /// folder are then not mirrored, which loses nothing.
    pub excluded_folders: BTreeSet<FolderName>,
    /// Per source folder of the listing: where it goes and what happened.
    pub folders: BTreeMap<FolderName, FolderDecision>,
    /// Folders the source listed as a change against the checkpoint
    /// ([`crate::source::Listing::delta`]), by destination name (the same as the
    /// source's: such folders are never renamed). Their kept items are their new and
    /// changed messages only.
    pub delta: BTreeMap<FolderName, DeltaFolder>,
    /// Destination (folder, id) of renamed kept items → source (folder, id).
    origins: HashMap<(FolderName, SourceId), (FolderName, SourceId)>,
}

impl Filtered {
    /// The item as its source knows it, for [`crate::source::Source::open`]: a kept
    /// item's source folder and id back in place. Items that were not renamed come
    /// back as they are.
    pub fn source_item<'a>(&self, kept: &'a SourceItem) -> Cow<'a, SourceItem> {
        match self
            .origins
            .get(&(kept.folder.clone(), kept.source_id.clone()))
        {
            Some((folder, id)) => {
                let mut item = kept.clone();
                item.folder = folder.clone();
                item.source_id = id.clone();
                Cow::Owned(item)
            }
            None => Cow::Borrowed(kept),
        }
    }

    /// Skipped large items (for `limits.large_item_limit`).
    pub fn large_items(&self) -> usize {
        self.skipped
            .iter()
            .filter(|s| s.cause == SkipCause::LargeItem)
            .count()
    }

    /// Destination (folder, id) of every skipped item: present at the source, so never
    /// to be deleted at the destination.
    pub fn retained(&self) -> impl Iterator<Item = (&FolderName, &SourceId)> {
        self.skipped
            .iter()
            .map(|s| (&s.destination_folder, &s.destination_id))
    }
}

/// A profile's filter, compiled for one pass.
#[derive(Clone, Debug)]
pub struct Filter {
    rules: FolderRules,
    /// Keep `internal_date >= after`.
    after: Option<i64>,
    /// Keep `internal_date < before`.
    before: Option<i64>,
    max_bytes: Option<u64>,
    after_text: String,
    before_text: String,
}

/// Compiles `profile` and applies it to `items` in one go; `now` (Unix seconds, the
/// start of the pass) resolves ages such as `after = "365d"`. See [`Filter::apply`].
pub fn apply(profile: &Profile, items: Vec<SourceItem>, now: i64) -> Result<Filtered, CoreError> {
    Ok(Filter::new(profile, now)?.apply(items))
}

impl Filter {
    /// Compiles the profile's folder rules and resolves its date window against `now`.
    /// Fails only for a profile that did not come through [`Profile::parse`] (a bad
    /// pattern built in code).
    pub fn new(profile: &Profile, now: i64) -> Result<Filter, CoreError> {
        let f = &profile.filter;
        Ok(Filter {
            rules: profile.folder_rules()?,
            after: f.after.as_ref().map(|d| d.resolve(now)),
            before: f.before.as_ref().map(|d| d.resolve(now)),
            max_bytes: f.max_message_bytes.map(|b| b.0),
            after_text: f.after.as_ref().map(|d| d.to_string()).unwrap_or_default(),
            before_text: f.before.as_ref().map(|d| d.to_string()).unwrap_or_default(),
        })
    }

    /// True if the source folder does not move.
    pub fn excludes(&self, source_folder: &FolderName) -> bool {
        self.rules.is_excluded(source_folder.as_str())
    }

    /// Splits a listing into kept and skipped items; see the module docs for the rules.
    pub fn apply(&self, items: Vec<SourceItem>) -> Filtered {
        self.apply_listing(items, BTreeMap::new())
    }

    /// [`Filter::apply`] for a listing with folders listed as a change against the
    /// checkpoint (`delta`, by source folder). Such a folder takes part in the folder
    /// decisions like any other; its acknowledged messages are counted, not listed.
    pub fn apply_listing(
        &self,
        items: Vec<SourceItem>,
        delta: BTreeMap<FolderName, DeltaFolder>,
    ) -> Filtered {
        self.apply_with_roles(items, delta, &BTreeMap::new())
    }

    /// [`Filter::apply_listing`] for a listing whose source announced folder `roles`
    /// ([`crate::source::Listing::roles`]); see the module docs.
    pub fn apply_with_roles(
        &self,
        items: Vec<SourceItem>,
        delta: BTreeMap<FolderName, DeltaFolder>,
        roles: &BTreeMap<FolderName, Role>,
    ) -> Filtered {
        let mut out = Filtered::default();
        // First the folders: which move, and where to.
        let mut seen: BTreeSet<&FolderName> = BTreeSet::new();
        for item in &items {
            seen.insert(&item.folder);
        }
        seen.extend(delta.keys());
        for folder in seen {
            let excluded = self.rules.is_excluded(folder.as_str());
            let role = roles.get(folder).copied();
            let (destination, rename) = match self.rules.rename_with_role(folder, role) {
                Some((to, why)) => (to, Some(why)),
                None => (folder.clone(), None),
            };
            out.folders.insert(
                folder.clone(),
                FolderDecision {
                    destination,
                    rename,
                    excluded,
                    note: None,
                    items: 0,
                    bytes: 0,
                    kept: 0,
                    skipped: 0,
                },
            );
        }
        if !self.rules.merge() {
            resolve_clashes(&mut out.folders);
        }
        for (folder, d) in &out.folders {
            if d.excluded {
                out.excluded_folders.insert(d.destination.clone());
                if d.destination != *folder {
                    out.excluded_folders.insert(folder.clone());
                }
            }
        }
        for (folder, d) in delta {
            let decision = out.folders.get_mut(&folder).expect("decided above");
            decision.items += d.acknowledged;
            decision.bytes += d.bytes;
            if decision.excluded {
                continue;
            }
            decision.kept += d.acknowledged;
            if decision.destination == folder {
                out.delta.insert(folder, d);
            } else {
                // Never listed so (the pass does not allow it for renamed folders); if
                // it were, its messages could not be told from the checkpoint's: touch
                // nothing there.
                tracing::warn!(%folder, "a renamed folder was listed as a delta; nothing of it is deleted in this pass");
                out.excluded_folders.insert(decision.destination.clone());
            }
        }
        for name in self.rules.excluded_by_name() {
            if let Ok(f) = FolderName::parse(name) {
                if let Some((to, _)) = self.rules.rename(&f) {
                    out.excluded_folders.insert(to);
                }
                out.excluded_folders.insert(f);
            }
        }

        let items = drop_virtual_copies(items, roles, &mut out.folders);

        // Then the items. Two items can only arrive under one destination id when a
        // folder is renamed (ids are unique within a source folder), so the check that
        // costs a set of every id runs only then.
        let any_renamed = out
            .folders
            .iter()
            .any(|(f, d)| !d.excluded && d.destination != *f);
        let mut taken: HashSet<(FolderName, SourceId)> = HashSet::new();
        for mut item in items {
            let d = out
                .folders
                .get_mut(&item.folder)
                .expect("every listed folder has a decision");
            d.items += 1;
            d.bytes += item.size;
            if d.excluded {
                continue;
            }
            let renamed = d.destination != item.folder;
            let dest_id = if renamed {
                renamed_id(&item.folder, &item.source_id)
            } else {
                item.source_id.clone()
            };
            let key = (d.destination.clone(), dest_id);
            let reason = if any_renamed && !taken.insert(key.clone()) {
                Some((
                    SkipCause::IdCollision,
                    format!(
                        "another message arrives as {}/{} too; rename one of the folders \
                         (folders.map)",
                        key.0, key.1
                    ),
                ))
            } else {
                self.skip_reason(&item)
            };
            match reason {
                Some((cause, reason)) => {
                    d.skipped += 1;
                    out.skipped.push(SkippedItem {
                        item: item.name(),
                        folder: item.folder.clone(),
                        source_id: item.source_id.clone(),
                        destination_folder: key.0,
                        destination_id: key.1,
                        size: item.size,
                        internal_date: item.internal_date,
                        cause,
                        reason,
                    });
                }
                None => {
                    d.kept += 1;
                    if renamed {
                        let from = (
                            std::mem::replace(&mut item.folder, key.0.clone()),
                            std::mem::replace(&mut item.source_id, key.1.clone()),
                        );
                        out.origins.insert(key, from);
                    }
                    out.kept.push(item);
                }
            }
        }
        out
    }

    fn skip_reason(&self, item: &SourceItem) -> Option<(SkipCause, String)> {
        let date = item.internal_date;
        if let Some(after) = self.after.filter(|a| date < *a) {
            return Some((
                SkipCause::OutsideDateWindow,
                format!(
                    "received {}, before filter.after ({}, {})",
                    mailferry_core::rfc3339(date),
                    self.after_text,
                    mailferry_core::rfc3339(after)
                ),
            ));
        }
        if let Some(before) = self.before.filter(|b| date >= *b) {
            return Some((
                SkipCause::OutsideDateWindow,
                format!(
                    "received {}, not before filter.before ({}, {})",
                    mailferry_core::rfc3339(date),
                    self.before_text,
                    mailferry_core::rfc3339(before)
                ),
            ));
        }
        if let Some(max) = self.max_bytes.filter(|m| item.size > *m) {
            return Some((
                SkipCause::LargeItem,
                format!(
                    "large item: {} bytes, over filter.max_message_bytes ({max})",
                    item.size
                ),
            ));
        }
        None
    }

    /// Turns what the checkpoint knows (destination folders and ids) back into the
    /// source's terms, for [`crate::source::Source::list`]: items of renamed folders go
    /// back to the source folder their tag names, with their original ids. Cursors stay
    /// where they are (they are keyed by the source's folder names already, as the
    /// source returned them). Ids that cannot be turned back (digest ids, tags of
    /// folders the profile no longer renames) are left out: the source then lists
    /// those messages afresh, and the planner still recognises them by destination id.
    pub fn source_prior(&self, prior: &Prior) -> Prior {
        self.into_source_prior(prior.clone())
    }

    /// [`Filter::source_prior`] taking the checkpoint by value: a folder no rename
    /// arrives in and without renamed-looking ids (the common case) is moved as it is,
    /// not copied message by message.
    pub fn into_source_prior(&self, prior: Prior) -> Prior {
        let (plain, rest): (Vec<_>, Vec<_>) = prior.folders.into_iter().partition(|(f, pf)| {
            self.rules.renamed_into(f).is_empty()
                && pf
                    .items
                    .keys()
                    .all(|id| matches!(untag(id, &[]), Untagged::Plain))
        });
        let mut out = Prior {
            folders: plain.into_iter().collect(),
        };
        let rest = Prior {
            folders: rest.into_iter().collect(),
        };
        // A folder moved above may also receive renamed ids of another one: merge.
        for (folder, pf) in self.source_prior_copied(&rest).folders {
            let entry = out.folders.entry(folder).or_default();
            if entry.cursor.is_none() {
                entry.cursor = pf.cursor;
            }
            entry.items.extend(pf.items);
        }
        out
    }

    fn source_prior_copied(&self, prior: &Prior) -> Prior {
        let mut out = Prior::default();
        for (folder, pf) in &prior.folders {
            let tags: Vec<(String, FolderName)> = self
                .rules
                .renamed_into(folder)
                .into_iter()
                .map(|s| (folder_tag(&s), s))
                .collect();
            let mut plain = BTreeMap::new();
            let mut moved = Vec::new();
            for (id, item) in &pf.items {
                match untag(id, &tags) {
                    Untagged::Plain => {
                        plain.insert(id.clone(), item.clone());
                    }
                    Untagged::From(source, original) => moved.push((source, original, item)),
                    Untagged::Lost => {}
                }
            }
            let entry = out.folders.entry(folder.clone()).or_default();
            if entry.cursor.is_none() {
                entry.cursor.clone_from(&pf.cursor);
            }
            entry.items.extend(plain);
            for (source, original, item) in moved {
                out.folders
                    .entry(source)
                    .or_insert_with(PriorFolder::default)
                    .items
                    .insert(original, item.clone());
            }
        }
        out
    }
}

/// The checkpoint (destination folders and ids) seen through a profile, in the source's
/// terms, for [`crate::source::Source::list`], one folder at a time: what
/// [`Filter::source_prior`] does for a whole checkpoint in memory. Folders the profile
/// renames, or renames others into, are never listed as a delta: their messages mix with
/// others' at the destination. A checkpoint that fails to read makes every folder look
/// unknown (listed in full) and is reported by [`SourcePrior::finish`].
pub struct SourcePrior<'a> {
    filter: &'a Filter,
    checkpoint: &'a dyn Checkpoint,
    error: RefCell<Option<AgentError>>,
    /// Folder roles the source announced ([`PriorLookup::learn_roles`]).
    roles: RefCell<BTreeMap<FolderName, Role>>,
}

impl<'a> SourcePrior<'a> {
    /// `checkpoint` through `filter`.
    pub fn new(filter: &'a Filter, checkpoint: &'a dyn Checkpoint) -> SourcePrior<'a> {
        SourcePrior {
            filter,
            checkpoint,
            error: RefCell::new(None),
            roles: RefCell::new(BTreeMap::new()),
        }
    }

    /// The first error reading the checkpoint, if any: the listing made with this
    /// lookup must then not be used.
    pub fn finish(self) -> Result<(), AgentError> {
        match self.error.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn ok<T: Default>(&self, r: Result<T, AgentError>) -> T {
        r.unwrap_or_else(|e| {
            self.error.borrow_mut().get_or_insert(e);
            T::default()
        })
    }

    fn rename(&self, folder: &FolderName) -> Option<FolderName> {
        let role = self.roles.borrow().get(folder).copied();
        self.filter
            .rules
            .rename_with_role(folder, role)
            .map(|(to, _)| to)
    }

    fn plain(&self, folder: &FolderName) -> bool {
        self.rename(folder).is_none()
            && self
                .filter
                .rules
                .renamed_into_with_roles(folder, &self.roles.borrow())
                .is_empty()
    }
}

impl PriorLookup for SourcePrior<'_> {
    fn cursor(&self, folder: &FolderName) -> Option<String> {
        self.ok(self.checkpoint.cursor(folder))
    }

    fn count(&self, folder: &FolderName) -> usize {
        if self.plain(folder) {
            self.ok(self.checkpoint.plain_summary(folder)).0 as usize
        } else {
            self.items(folder).len()
        }
    }

    fn bytes(&self, folder: &FolderName) -> u64 {
        if self.plain(folder) {
            self.ok(self.checkpoint.plain_summary(folder)).1
        } else {
            self.items(folder).values().map(|i| i.size).sum()
        }
    }

    fn items(&self, folder: &FolderName) -> BTreeMap<SourceId, PriorItem> {
        // Its own messages under their own ids, plus those its rename sent elsewhere,
        // under their tagged ids (see Filter::source_prior).
        let mut items = self.ok(self.checkpoint.prior_items(folder));
        items.retain(|id, _| !is_renamed_id(id));
        if let Some(dest) = self.rename(folder) {
            let tags = [(folder_tag(folder), folder.clone())];
            for (id, item) in self.ok(self.checkpoint.prior_items(&dest)) {
                if let Untagged::From(_, original) = untag(&id, &tags) {
                    items.insert(original, item);
                }
            }
        }
        items
    }

    fn get(&self, folder: &FolderName, id: &SourceId) -> Option<PriorItem> {
        if !self.plain(folder) {
            return self.items(folder).remove(id);
        }
        if is_renamed_id(id) {
            return None;
        }
        self.ok(self.checkpoint.get(folder, id)).map(|a| a.prior)
    }

    fn may_list_delta(&self, folder: &FolderName) -> bool {
        self.plain(folder)
    }

    fn learn_roles(&self, roles: &BTreeMap<FolderName, Role>) {
        self.roles.borrow_mut().clone_from(roles);
    }
}

/// Leaves out the messages of virtual folders that a real folder which moves (or an
/// earlier virtual folder) holds too; see the module docs.
fn drop_virtual_copies(
    items: Vec<SourceItem>,
    roles: &BTreeMap<FolderName, Role>,
    folders: &mut BTreeMap<FolderName, FolderDecision>,
) -> Vec<SourceItem> {
    let moves = |f: &FolderName| folders.get(f).is_some_and(|d| !d.excluded);
    let mut virtuals: Vec<(Role, &FolderName)> = roles
        .iter()
        .filter(|(f, r)| r.is_virtual() && moves(f))
        .map(|(f, r)| (*r, f))
        .collect();
    if virtuals.is_empty() {
        return items;
    }
    virtuals.sort_by_key(|(r, f)| (*r != Role::All, *f));
    let is_virtual = |f: &FolderName| roles.get(f).is_some_and(|r| r.is_virtual());
    // Idents held by the real folders that move, counted.
    let mut held: HashMap<&str, usize> = HashMap::new();
    for item in &items {
        if let Some(ident) = item.ident.as_deref() {
            if !is_virtual(&item.folder) && moves(&item.folder) {
                *held.entry(ident).or_default() += 1;
            }
        }
    }
    let mut drop = vec![false; items.len()];
    let mut found: BTreeMap<&FolderName, (u64, u64)> = BTreeMap::new();
    for (_, folder) in &virtuals {
        for (n, item) in items.iter().enumerate() {
            if item.folder != **folder {
                continue;
            }
            let counts = found.entry(*folder).or_default();
            let Some(ident) = item.ident.as_deref() else {
                counts.1 += 1;
                continue;
            };
            // A message without Message-ID is only a date and a size: never matched.
            let blank = crate::source::imap::ident("", item.internal_date, item.size) == ident;
            match held.get_mut(ident) {
                Some(c) if *c > 0 && !blank => {
                    *c -= 1;
                    drop[n] = true;
                    counts.0 += 1;
                }
                _ => {
                    *held.entry(ident).or_default() += 1;
                    counts.1 += 1;
                }
            }
        }
    }
    for (folder, (elsewhere, only)) in found {
        if let Some(d) = folders.get_mut(folder) {
            let role = roles[folder];
            let note = format!(
                "virtual folder ({role}): {elsewhere} message(s) also in other folders are \
                 stored there; {only} found only here arrive in {}",
                d.destination
            );
            d.note = Some(match d.note.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
    }
    items
        .into_iter()
        .zip(drop)
        .filter_map(|(item, drop)| (!drop).then_some(item))
        .collect()
}

/// Without `merge`: while two folders that move arrive in one destination, the one
/// already called that keeps it (else an explicit rename beats a special-use one, then
/// the first name), and the others keep their own names. Each round un-renames at least
/// one folder, so this ends.
fn resolve_clashes(folders: &mut BTreeMap<FolderName, FolderDecision>) {
    loop {
        let mut by_dest: BTreeMap<FolderName, Vec<FolderName>> = BTreeMap::new();
        for (src, d) in folders.iter().filter(|(_, d)| !d.excluded) {
            by_dest
                .entry(d.destination.clone())
                .or_default()
                .push(src.clone());
        }
        let mut changed = false;
        for (dest, mut sources) in by_dest {
            if sources.len() < 2 {
                continue;
            }
            sources.sort_by_key(|s| {
                let d = &folders[s];
                (s != &dest, d.rename, s.clone())
            });
            let winner = sources[0].clone();
            for loser in &sources[1..] {
                let d = folders.get_mut(loser).expect("listed");
                d.note = Some(format!(
                    "keeps its name: {winner:?} arrives in {dest:?} already \
                     (set folders.merge = true to merge them)"
                ));
                d.destination = loser.clone();
                d.rename = None;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
