//! Bad-item and large-item limits of a move (Exchange's BadItemLimit and LargeItemLimit)
//! and the list of skipped items they are counted on.
//!
//! Every item a pass leaves behind is listed as a [`SkippedItem`] with its folder, source
//! id, size (when the source could tell it) and reason, in the pass's `report.json`. A
//! bad item (damaged, unreadable, refused by the store) counts against the bad-item
//! limit, a large item (over the large-item size; not sent) against the large-item
//! count. Items an admin approved (`--approve-skipped`) count against nothing. This
//! module only counts and judges; the lifecycle decides what a verdict does to the move.

use mailferry_core::profile::{ByteSize, Profile};
use mailferry_core::report::{BadItem, SkipKind, SkippedItem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The limits a move runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Unapproved bad items tolerated (Exchange's default: 0).
    pub bad_item_limit: u64,
    /// Messages larger than this many bytes are large items: not sent, listed.
    pub large_item_bytes: Option<u64>,
    /// Unapproved large items tolerated; `None`: any number (they are still listed, and
    /// a final pass still needs them approved).
    pub large_item_count: Option<u64>,
}

impl Limits {
    /// The profile's limits, with the move's own settings (flags) over them.
    pub fn effective(
        profile: &Profile,
        bad_item_limit: Option<u64>,
        large_item_bytes: Option<u64>,
    ) -> Limits {
        Limits {
            bad_item_limit: bad_item_limit.unwrap_or(profile.limits.bad_item_limit),
            large_item_bytes: large_item_bytes.or(profile.filter.max_message_bytes.map(|b| b.0)),
            large_item_count: profile.limits.large_item_limit,
        }
    }

    /// The profile a pass runs with: the large-item size becomes the profile's
    /// `filter.max_message_bytes`, which the agent applies while listing.
    pub fn apply(&self, profile: &mut Profile) {
        profile.filter.max_message_bytes = self.large_item_bytes.map(ByteSize);
    }
}

/// What the limits say about a pass's skipped items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Bad items nobody approved.
    pub bad: u64,
    /// Large items nobody approved.
    pub large: u64,
    /// Skipped items an admin approved.
    pub approved: u64,
    /// Which limit was exceeded, in words; `None` when the pass is within its limits.
    pub exceeded: Option<String>,
}

impl Verdict {
    /// Skipped items nobody approved.
    pub fn unapproved(&self) -> u64 {
        self.bad + self.large
    }
}

/// Counts `skipped` against `limits`.
pub fn judge(skipped: &[SkippedItem], limits: &Limits) -> Verdict {
    let mut v = Verdict::default();
    for s in skipped {
        match (s.approved, s.kind) {
            (true, _) => v.approved += 1,
            (false, SkipKind::BadItem) => v.bad += 1,
            (false, SkipKind::LargeItem) => v.large += 1,
        }
    }
    let mut over = Vec::new();
    if v.bad > limits.bad_item_limit {
        over.push(format!(
            "{} bad item(s), the bad-item limit is {}",
            v.bad, limits.bad_item_limit
        ));
    }
    if let Some(max) = limits.large_item_count {
        if v.large > max {
            over.push(format!(
                "{} large item(s), the large-item limit is {max}",
                v.large
            ));
        }
    }
    if !over.is_empty() {
        v.exceeded = Some(over.join("; "));
    }
    v
}

/// Marks the items named in `approved` as approved.
pub fn mark_approved(skipped: &mut [SkippedItem], approved: &BTreeSet<String>) {
    for s in skipped {
        s.approved = approved.contains(&s.item);
    }
}

/// The bad items of a pass as skipped items (the pass adds the large items its profile's
/// size filter left out, which know their size).
pub fn skipped_items(bad_items: &[BadItem]) -> Vec<SkippedItem> {
    bad_items.iter().map(from_bad_item).collect()
}

/// A bad item as a skipped item (its size is not known).
pub fn from_bad_item(b: &BadItem) -> SkippedItem {
    let (folder, source_id) = split_item(&b.item);
    SkippedItem {
        item: b.item.clone(),
        folder,
        source_id,
        size: None,
        kind: SkipKind::BadItem,
        reason: b.reason.clone(),
        approved: false,
    }
}

/// `folder/source-id` into its parts (source ids never hold a `/`; folder names may).
fn split_item(item: &str) -> (String, String) {
    match item.rsplit_once('/') {
        Some((f, id)) => (f.to_string(), id.to_string()),
        None => (String::new(), item.to_string()),
    }
}

/// Parses a size such as `25MB`, `25 MiB`, `1.5G` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    ByteSize::parse(s).map(|b| b.0)
}

#[cfg(test)]
mod tests;
