//! Planning a pass: compare the source's listing with the checkpoint and decide what to
//! send (new messages), what to change at the destination (flags, deletions) and what
//! to recognise without sending (messages renumbered by the source).
//!
//! It works folder by folder against a [`Checkpoint`], asking only for what it needs: a
//! folder listed in full is compared with that folder's acknowledged messages; a folder
//! the source listed as a change ([`crate::source::Listing::delta`]) costs one lookup
//! per new or changed message; a folder the checkpoint has and the listing does not is
//! read to delete what it holds. So a pass costs what the listing costs plus what
//! changed, never the whole mailbox. Every rule is unit-tested here against an
//! in-memory checkpoint.
//!
//! Safety rules: nothing is deleted at the destination in a folder the profile excludes
//! or the source could not list completely, nor any message the profile's filter left
//! out (it is still at the source).

use crate::filter::Filtered;
use crate::source::{DeltaFolder, SourceItem};
use crate::state::{Acked, Checkpoint, CheckpointEntry, CheckpointView, EntryKind};
use crate::AgentError;
use mailferry_core::{Flags, FolderName, SourceId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A change to apply at the destination without sending content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The message is gone at the source: remove it at the destination.
    Delete {
        /// Folder.
        folder: FolderName,
        /// Its key in the checkpoint (current source id).
        source_id: SourceId,
        /// What the destination holds.
        acked: Acked,
    },
    /// The message's flags changed at the source.
    SetFlags {
        /// Folder.
        folder: FolderName,
        /// Current source id.
        source_id: SourceId,
        /// What the destination holds.
        acked: Acked,
        /// The new flags.
        flags: Flags,
    },
}

impl Op {
    /// `folder/source-id` for reports.
    pub fn name(&self) -> String {
        match self {
            Op::Delete {
                folder, source_id, ..
            }
            | Op::SetFlags {
                folder, source_id, ..
            } => format!("{folder}/{source_id}"),
        }
    }

    /// The checkpoint entry to record once the destination applied it.
    pub fn entry(&self, kind: EntryKind) -> CheckpointEntry {
        let (folder, source_id, acked, flags) = match self {
            Op::Delete {
                folder,
                source_id,
                acked,
            } => (folder, source_id, acked, &acked.prior.flags),
            Op::SetFlags {
                folder,
                source_id,
                acked,
                flags,
            } => (folder, source_id, acked, flags),
        };
        CheckpointEntry {
            kind,
            folder: folder.clone(),
            source_id: source_id.clone(),
            stored_as: acked.stored_as.clone(),
            sha256: acked.sha256.clone(),
            size: acked.prior.size,
            flags: flags.clone(),
            internal_date: acked.prior.internal_date,
            ident: acked.prior.ident.clone(),
        }
    }
}

/// What one pass will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Messages to send, in listing order.
    pub send: Vec<SourceItem>,
    /// Changes to apply at the destination, flags then deletions. The pass sends them
    /// after the new messages: a message moved to another folder at the source is
    /// stored in its new place before it is removed from the old, so a crash in
    /// between leaves it twice for a moment (the resume removes one), never nowhere.
    pub ops: Vec<Op>,
    /// Messages recognised after renumbering: recorded, not sent.
    pub remapped: Vec<CheckpointEntry>,
    /// Messages the destination already holds under the same id with the same flags,
    /// listed or vouched for by a delta folder (remapped ones are counted in
    /// `remapped`, not here).
    pub unchanged: u64,
    /// Of those, messages of delta folders that were not listed at all: found at the
    /// source without appearing in the listing's items.
    pub unlisted: u64,
}

/// What the planner must leave alone at the destination.
#[derive(Debug, Default)]
pub struct Keep {
    /// Destination folders in which nothing is deleted (excluded by the profile, or
    /// listed incompletely by the source).
    pub folders: BTreeSet<FolderName>,
    /// Destination (folder, id) of messages still at the source that the filter left
    /// out (too large, outside the date window).
    pub items: HashSet<(FolderName, SourceId)>,
}

impl Keep {
    /// What a filtered listing says must stay: the profile's excluded folders and
    /// left-out messages, and every folder the source listed incompletely (by its
    /// destination name and, to be safe, its source name).
    pub fn from_listing(filtered: &Filtered, incomplete: &BTreeSet<FolderName>) -> Keep {
        let mut keep = Keep {
            folders: filtered.excluded_folders.clone(),
            items: filtered
                .retained()
                .map(|(f, id)| (f.clone(), id.clone()))
                .collect(),
        };
        for f in incomplete {
            if let Some(d) = filtered.folders.get(f) {
                keep.folders.insert(d.destination.clone());
            }
            keep.folders.insert(f.clone());
        }
        keep
    }
}

/// Compares the listed `items` (in destination terms, after the profile's filter) with
/// what `checkpoint` says the destination holds. `delta` names the folders listed as a
/// change against the checkpoint ([`Filtered::delta`]).
pub fn plan(
    checkpoint: &dyn Checkpoint,
    items: Vec<SourceItem>,
    keep: &Keep,
    delta: &BTreeMap<FolderName, DeltaFolder>,
) -> Result<Plan, AgentError> {
    let mut p = Plan::default();
    let mut deletes = Vec::new();
    // By destination folder, in listing order.
    let mut order: Vec<FolderName> = Vec::new();
    let mut by_folder: HashMap<FolderName, Vec<SourceItem>> = HashMap::new();
    for item in items {
        match by_folder.get_mut(&item.folder) {
            Some(v) => v.push(item),
            None => {
                order.push(item.folder.clone());
                by_folder.insert(item.folder.clone(), vec![item]);
            }
        }
    }
    for folder in &order {
        let list = by_folder.remove(folder).expect("grouped above");
        match delta.get(folder) {
            Some(d) => plan_delta(checkpoint, folder, list, d, &mut p)?,
            None => {
                let acked = checkpoint.folder(folder)?;
                plan_full(folder, list, &acked, keep, &mut p, &mut deletes);
            }
        }
    }
    let listed: HashSet<&FolderName> = order.iter().collect();
    for (folder, d) in delta {
        if !listed.contains(folder) {
            p.unchanged += d.acknowledged;
            p.unlisted += d.acknowledged;
        }
    }
    // Folders the destination has and the listing does not show: gone at the source.
    for (folder, _) in checkpoint.folders()? {
        if listed.contains(&folder) || delta.contains_key(&folder) || keep.folders.contains(&folder)
        {
            continue;
        }
        let acked = checkpoint.folder(&folder)?;
        plan_full(&folder, Vec::new(), &acked, keep, &mut p, &mut deletes);
    }
    deletes.sort_by_key(|o| o.name());
    p.ops.append(&mut deletes);
    Ok(p)
}

/// [`plan`] against a read-only [`CheckpointView`] (a dry run); `None`: the move has
/// not started, so everything listed is new.
pub fn plan_view(
    view: Option<&CheckpointView>,
    items: Vec<SourceItem>,
    keep: &Keep,
    delta: &BTreeMap<FolderName, DeltaFolder>,
) -> Result<Plan, AgentError> {
    match view {
        Some(v) => plan(v.checkpoint(), items, keep, delta),
        None => plan(
            &crate::state::db::CheckpointDb::in_memory(),
            items,
            keep,
            delta,
        ),
    }
}

/// A folder listed as a change: its listed items are new or changed, every other
/// acknowledged message of it is there unchanged, nothing is gone.
fn plan_delta(
    checkpoint: &dyn Checkpoint,
    folder: &FolderName,
    list: Vec<SourceItem>,
    d: &DeltaFolder,
    p: &mut Plan,
) -> Result<(), AgentError> {
    let (mut listed_acked, mut reflagged) = (0u64, 0u64);
    for item in list {
        match checkpoint.get(folder, &item.source_id)? {
            Some(a) => {
                listed_acked += 1;
                if a.prior.flags != item.flags {
                    reflagged += 1;
                    p.ops.push(Op::SetFlags {
                        folder: item.folder,
                        source_id: item.source_id,
                        acked: a,
                        flags: item.flags,
                    });
                }
            }
            None => p.send.push(item),
        }
    }
    p.unchanged += d.acknowledged.saturating_sub(reflagged);
    p.unlisted += d.acknowledged.saturating_sub(listed_acked);
    Ok(())
}

/// A folder listed in full (or not at all: `list` empty) against its acknowledged
/// messages `acked`.
fn plan_full(
    folder: &FolderName,
    list: Vec<SourceItem>,
    acked: &HashMap<SourceId, Acked>,
    keep: &Keep,
    p: &mut Plan,
    deletes: &mut Vec<Op>,
) {
    let mut send = vec![false; list.len()];
    {
        let present: HashSet<&SourceId> = list.iter().map(|i| &i.source_id).collect();
        // Acknowledged messages no longer listed, by identity: candidates for a remap
        // (same message, new id) before they count as deleted. Only items with an
        // identity can be remapped (IMAP); a listing without any (files) skips this.
        let mut gone_by_ident: BTreeMap<&str, Vec<&SourceId>> = BTreeMap::new();
        if list.iter().any(|i| i.ident.is_some()) {
            for (id, a) in acked {
                if !present.contains(id) {
                    if let Some(ident) = &a.prior.ident {
                        gone_by_ident.entry(ident.as_str()).or_default().push(id);
                    }
                }
            }
        }
        for v in gone_by_ident.values_mut() {
            v.sort(); // deterministic choice among identical messages
        }
        let mut claimed: HashSet<&SourceId> = HashSet::new();
        for (n, item) in list.iter().enumerate() {
            if let Some(a) = acked.get(&item.source_id) {
                if a.prior.flags == item.flags {
                    p.unchanged += 1;
                } else {
                    p.ops.push(Op::SetFlags {
                        folder: item.folder.clone(),
                        source_id: item.source_id.clone(),
                        acked: a.clone(),
                        flags: item.flags.clone(),
                    });
                }
                continue;
            }
            let remap = item.ident.as_deref().and_then(|ident| {
                let list = gone_by_ident.get_mut(ident)?;
                let pos = list.iter().position(|k| !claimed.contains(k))?;
                Some(list.remove(pos))
            });
            match remap {
                Some(old) => {
                    claimed.insert(old);
                    let a = &acked[old];
                    p.remapped.push(CheckpointEntry {
                        kind: EntryKind::Remapped,
                        folder: item.folder.clone(),
                        source_id: item.source_id.clone(),
                        stored_as: a.stored_as.clone(),
                        sha256: a.sha256.clone(),
                        size: a.prior.size,
                        flags: a.prior.flags.clone(),
                        internal_date: item.internal_date,
                        ident: item.ident.clone(),
                    });
                    if a.prior.flags != item.flags {
                        let mut moved = a.clone();
                        moved.prior.ident = item.ident.clone();
                        p.ops.push(Op::SetFlags {
                            folder: item.folder.clone(),
                            source_id: item.source_id.clone(),
                            acked: moved,
                            flags: item.flags.clone(),
                        });
                    }
                }
                None => send[n] = true,
            }
        }
        if !keep.folders.contains(folder) {
            for (id, a) in acked {
                if present.contains(id) || claimed.contains(id) {
                    continue;
                }
                if keep.items.contains(&(folder.clone(), id.clone())) {
                    continue;
                }
                deletes.push(Op::Delete {
                    folder: folder.clone(),
                    source_id: id.clone(),
                    acked: a.clone(),
                });
            }
        }
    }
    p.send.extend(
        list.into_iter()
            .zip(send)
            .filter_map(|(item, send)| send.then_some(item)),
    );
}

#[cfg(test)]
mod tests;
