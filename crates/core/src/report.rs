//! The move report: what one move did, in numbers and named items.
//!
//! The JSON form of [`MoveReport`] is a stable interface (`mailferry move --json`);
//! fields are only ever added.

use serde::{Deserialize, Serialize};

/// An item that could not be moved, named so an admin can find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadItem {
    /// Where the item is at the source (`folder/source-id` or a path).
    pub item: String,
    /// Why it was not moved.
    pub reason: String,
}

/// An item a move left behind, listed so an admin can find it and decide (Exchange's
/// skipped items): a bad item (damaged, unreadable, refused) or a large item (over the
/// move's large-item size). An approved one no longer counts against the limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// `folder/source-id` at the source, as in `bad_items`.
    pub item: String,
    /// The folder (empty when the item is not inside one, such as an unreadable mbox file).
    pub folder: String,
    /// The source's id of the item within its folder.
    pub source_id: String,
    /// Size in bytes, when the source could tell it.
    pub size: Option<u64>,
    /// `bad_item` or `large_item`.
    pub kind: SkipKind,
    /// Why it was not moved.
    pub reason: String,
    /// Accepted by an admin (`--approve-skipped`): it no longer holds the move back.
    #[serde(default)]
    pub approved: bool,
}

/// An item that was stored byte for byte but is not a plain RFC 5322 message (no
/// header block, binary bytes, bare CR line ends, 8-bit header bytes that are not
/// UTF-8), listed so an admin can look at it. Not a bad item: it never fails a move and
/// no limit counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemWarning {
    /// `folder/source-id`, as in `bad_items`.
    pub item: String,
    /// The folder.
    pub folder: String,
    /// The source's id of the item within its folder.
    pub source_id: String,
    /// What is odd about it.
    pub reason: String,
}

/// Why an item was skipped, as the limits count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// Damaged, unreadable or refused: counted against the bad-item limit.
    BadItem,
    /// Larger than the move's large-item size: not sent, counted against the
    /// large-item limit.
    LargeItem,
}

/// Seconds spent in each stage of the pipeline (wall time on the stage's own thread).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageSeconds {
    /// Listing and reading source files.
    pub source_read: f64,
    /// Store side: hashing, encrypting and appending to segments.
    pub store_write: f64,
    /// Store side: fsync of segments plus SQLite commit plus audit records (on its own
    /// thread, overlapping the writes).
    pub store_commit: f64,
    /// Agent: writing frames to the TLS connection (encryption and socket), including
    /// waits when the proxy reads slower.
    pub transport: f64,
    /// Agent: the reader waiting for the writer or for the window of unacknowledged
    /// bytes (the destination is the bottleneck while this grows).
    pub stalled: f64,
    /// Of `store_write`: SHA-256 of bodies.
    pub hash: f64,
    /// Of `store_write`: AES-256-GCM sealing.
    pub encryption: f64,
    /// Of `store_write`: appending to segment files.
    pub append: f64,
    /// Of `store_commit`: fdatasync of segments.
    pub sync: f64,
    /// Of `store_commit`: SQLite index transactions.
    pub index: f64,
    /// Of `store_commit`: audit records.
    pub audit: f64,
    /// Agent: the reader waiting for the move's throttles (`max_bytes_per_second`,
    /// `max_messages_per_second`, the endpoint's shared limits).
    #[serde(default)]
    pub throttled: f64,
    /// Agent: waiting because a server asked to (the proxy's 429/503 with
    /// `Retry-After`, an IMAP server's `[THROTTLED]` or `Suggested Backoff Time`).
    #[serde(default)]
    pub server_backoff: f64,
}

/// Counts of one folder in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStats {
    /// Messages to send in this pass (not acknowledged before).
    pub found: u64,
    /// Newly stored.
    pub moved: u64,
    /// Already in the store.
    pub duplicate: u64,
    /// Not moved (named in `bad_items`).
    pub bad: u64,
    /// Bytes newly stored.
    pub bytes_moved: u64,
}

/// The move receipt: Merkle roots over `(folder/source-id, sha256)` of every message,
/// computed independently by each side (see docs/audit-log.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Root over what the agent has had acknowledged.
    pub source_root: String,
    /// Messages the source root covers.
    pub source_items: u64,
    /// Root over what the volume holds for the mailbox.
    pub destination_root: String,
    /// Messages the destination root covers.
    pub destination_items: u64,
    /// True if both roots are equal.
    pub matches: bool,
    /// The source's audit log head, signed by the agent at the end of the pass (absent
    /// in records written before heads were signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_head: Option<SignedHead>,
    /// The volume's audit log head, signed by the store after its `pass.receipt` record
    /// (absent when the store is remote: check it on the store host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_head: Option<SignedHead>,
}

/// Which side's audit log a [`SignedHead`] is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSide {
    /// The agent's log (`<state>/audit.jsonl`).
    Source,
    /// The volume's log (`<volume>/audit.jsonl`).
    Destination,
}

impl LogSide {
    /// `source` or `destination`, as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSide::Source => "source",
            LogSide::Destination => "destination",
        }
    }
}

/// A signed audit log head (docs/audit-log.md §10): which log, how many records, the hash
/// of the last one covered, when, by which key, and the Ed25519 signature over exactly
/// those fields. Plain data; `mailferry_audit::head` makes, checks and stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// `mailferry-audit-head/1`.
    pub format: String,
    /// Whose log.
    pub side: LogSide,
    /// The log's identity: hex SHA-256 of its genesis line.
    pub log: String,
    /// Records covered (the seq of the last one).
    pub seq: u64,
    /// Hex SHA-256 of line `seq`.
    pub head: String,
    /// When it was signed: RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Fingerprint of the signing key: hex SHA-256 of the 32-byte Ed25519 public key.
    pub key: String,
    /// Hex Ed25519 signature (64 bytes) over the signed message.
    pub signature: String,
}

/// One point of the throughput-over-time series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the pass started.
    pub t: f64,
    /// Bytes durably acknowledged so far.
    pub bytes: u64,
    /// Messages durably acknowledged so far.
    pub items: u64,
}

/// The record of one move (one mailbox, one pass).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveReport {
    /// The move's id.
    pub move_id: String,
    /// Destination mailbox.
    pub mailbox: String,
    /// The source as given (`maildir:/path`).
    pub source: String,
    /// Start, RFC 3339.
    pub started_at: String,
    /// End, RFC 3339.
    pub finished_at: String,
    /// Items found at the source.
    pub items_total: u64,
    /// Items newly stored by this pass.
    pub items_moved: u64,
    /// Items removed at the destination because they were deleted at the source
    /// (incremental passes mirror the source).
    #[serde(default)]
    pub items_deleted: u64,
    /// Items whose flags changed at the source and were updated at the destination.
    #[serde(default)]
    pub items_flags_updated: u64,
    /// Items not sent again because they are already stored (checkpoint or store dedup).
    pub items_skipped_duplicate: u64,
    /// Items that could not be moved, each with its reason.
    pub bad_items: Vec<BadItem>,
    /// Every item this pass left behind (bad and large items), with folder, id, size,
    /// reason and whether an admin approved it.
    #[serde(default)]
    pub skipped_items: Vec<SkippedItem>,
    /// Items this pass stored although they are not plain RFC 5322 messages (stored
    /// byte for byte; not bad items, not counted by any limit).
    #[serde(default)]
    pub warnings: Vec<ItemWarning>,
    /// Bytes of newly stored messages.
    pub bytes_moved: u64,
    /// Wall time of the pass.
    pub seconds: f64,
    /// `bytes_moved / seconds`.
    pub throughput_bytes_per_s: f64,
    /// `items_moved / seconds`.
    pub messages_per_s: f64,
    /// Time by stage.
    pub stages: StageSeconds,
    /// Peak resident set size of the process, bytes (Linux VmHWM; 0 if unknown).
    pub peak_rss_bytes: u64,
    /// Median per-message latency (read start to durable ACK), milliseconds.
    pub latency_ms_p50: f64,
    /// 99th-percentile per-message latency, milliseconds.
    pub latency_ms_p99: f64,
    /// Counts per folder.
    pub per_folder: std::collections::BTreeMap<String, FolderStats>,
    /// The move receipt of both sides.
    pub receipt: Receipt,
    /// Acknowledged bytes and messages over time.
    pub timeline: Vec<Sample>,
}
