//! Planning a pass: compare the source's listing with the checkpoint and decide what to
//! send (new messages), what to change at the destination (flags, deletions) and what
//! to recognise without sending (messages renumbered by the source).
//!
//! Pure logic over in-memory data: no I/O, so every rule is unit-tested here. Its cost
//! is linear in the listing and the checkpoint, with no per-message file access, so a
//! delta pass costs what the listing costs plus what changed.
//!
//! Safety rules: nothing is deleted at the destination in a folder the profile excludes
//! or the source could not list completely, nor any message the profile's filter left
//! out (it is still at the source).

use crate::filter::Filtered;
use crate::source::SourceItem;
use crate::state::{Acked, CheckpointEntry, CheckpointView, EntryKind, StateDir};
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
    /// Listed messages the destination already holds under the same id with the same
    /// flags (remapped ones are counted in `remapped`, not here).
    pub unchanged: u64,
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
/// what `state` says the destination holds.
pub fn plan(state: &StateDir, items: &[SourceItem], keep: &Keep) -> Plan {
    plan_with(state.acked_map(), items, keep)
}

/// [`plan`] against a read-only [`CheckpointView`] (a dry run); `None`: the move has
/// not started, so everything listed is new.
pub fn plan_view(view: Option<&CheckpointView>, items: &[SourceItem], keep: &Keep) -> Plan {
    match view {
        Some(v) => plan_with(v.acked_map(), items, keep),
        None => plan_with(&HashMap::new(), items, keep),
    }
}

fn plan_with(
    acked: &HashMap<(FolderName, SourceId), Acked>,
    items: &[SourceItem],
    keep: &Keep,
) -> Plan {
    let mut p = Plan::default();
    let present: HashSet<(&FolderName, &SourceId)> =
        items.iter().map(|i| (&i.folder, &i.source_id)).collect();
    // Acknowledged messages no longer listed, by folder and identity: candidates for a
    // remap (same message, new id) before they count as deleted.
    let mut gone_by_ident: BTreeMap<(&FolderName, &str), Vec<&(FolderName, SourceId)>> =
        BTreeMap::new();
    // Only items with an identity can be remapped (IMAP); a listing without any (files)
    // skips the search.
    let remappable = items.iter().any(|i| i.ident.is_some());
    for (key, a) in acked.iter().filter(|_| remappable) {
        if !present.contains(&(&key.0, &key.1)) {
            if let Some(ident) = &a.prior.ident {
                gone_by_ident
                    .entry((&key.0, ident.as_str()))
                    .or_default()
                    .push(key);
            }
        }
    }
    for v in gone_by_ident.values_mut() {
        v.sort(); // deterministic choice among identical messages
    }
    let mut claimed: HashSet<&(FolderName, SourceId)> = HashSet::new();
    for item in items {
        let key = (item.folder.clone(), item.source_id.clone());
        if let Some(a) = acked.get(&key) {
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
            let list = gone_by_ident.get_mut(&(&item.folder, ident))?;
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
            None => p.send.push(item.clone()),
        }
    }
    let mut deletes: Vec<Op> = acked
        .iter()
        .filter(|(key, _)| {
            !present.contains(&(&key.0, &key.1))
                && !claimed.contains(*key)
                && !keep.folders.contains(&key.0)
                && !keep.items.contains(*key)
        })
        .map(|(key, a)| Op::Delete {
            folder: key.0.clone(),
            source_id: key.1.clone(),
            acked: a.clone(),
        })
        .collect();
    deletes.sort_by_key(|o| o.name());
    p.ops.append(&mut deletes);
    p
}

#[cfg(test)]
mod tests;
