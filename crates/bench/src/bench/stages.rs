//! CPU seconds by stage: each sampled thread gets a role from its name (see the parent
//! module's doc), and the store's threads, which encrypt and write in turn, are split by
//! the time the store's own counters measured.

use super::cpu;
use super::report::StageCpu;
use mailferry_proxy::StoreStats;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a thread does, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    SourceRead,
    Transport,
    Store,
    Commit,
    /// The commit pipeline's stages, one thread each (`mailferry_store::CommitPipeline`).
    CommitSync,
    CommitIndex,
    CommitAudit,
    AgentAudit,
    /// Not mailferry: the delay relay standing in for the network (`--latency`).
    Peer,
    Other,
}

pub(super) fn role(name: &str) -> Role {
    // Thread names are cut to 15 bytes by the kernel.
    if name == crate::relay::THREAD_NAME {
        return Role::Peer;
    }
    if name == "mailferry-read" {
        return Role::SourceRead;
    }
    if name.starts_with("mailferry-check") {
        return Role::AgentAudit;
    }
    if name.starts_with("mailferry-commi") {
        return Role::Commit;
    }
    match name {
        "mf-store-sync" => return Role::CommitSync,
        "mf-store-index" => return Role::CommitIndex,
        "mf-store-audit" => return Role::CommitAudit,
        _ => {}
    }
    let mut parts = name.split('-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("mf"), Some(_), Some(t)) if t.starts_with('w') => Role::Transport,
        // The agent's blocking work: listing the source, its state events.
        (Some("mf"), Some("agt"), Some(t)) if t.starts_with('b') => Role::SourceRead,
        (Some("mf"), Some("srv" | "emb"), Some(t)) if t.starts_with('b') => Role::Store,
        _ => Role::Other,
    }
}

/// CPU seconds by stage, and by thread name.
pub(super) fn attribute(
    usage: &cpu::CpuUsage,
    st: &StoreStats,
) -> (StageCpu, BTreeMap<String, f64>) {
    let mut c = StageCpu::default();
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    let (mut store, mut commit, mut peer) = (0.0, 0.0, 0.0);
    for t in &usage.threads {
        let key = t.name.trim_end_matches(|ch: char| ch.is_ascii_digit());
        *by_thread.entry(key.to_string()).or_default() += t.seconds;
        match role(&t.name) {
            Role::SourceRead => c.source_read += t.seconds,
            Role::Transport => c.transport_tls += t.seconds,
            Role::Store => store += t.seconds,
            Role::Commit => commit += t.seconds,
            Role::CommitSync => c.sync += t.seconds,
            Role::CommitIndex => c.index += t.seconds,
            Role::CommitAudit => c.audit += t.seconds,
            Role::AgentAudit => c.audit += t.seconds,
            Role::Peer => peer += t.seconds,
            Role::Other => c.other += t.seconds,
        }
    }
    let ns = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let write = ns(&st.write_nanos);
    let share = if write > 0.0 {
        (ns(&st.encrypt_nanos) / write).min(1.0)
    } else {
        0.0
    };
    c.encryption = store * share;
    c.store_write = store - c.encryption;
    let (sync, index, audit) = (ns(&st.sync_nanos), ns(&st.index_nanos), ns(&st.audit_nanos));
    let sum = sync + index + audit;
    if sum > 0.0 {
        c.sync += commit * sync / sum;
        c.index += commit * index / sum;
        c.audit += commit * audit / sum;
    } else {
        c.other += commit;
    }
    let attributed = c.source_read
        + c.transport_tls
        + c.store_write
        + c.encryption
        + c.index
        + c.audit
        + c.sync
        + c.other;
    // The relay is the network's, as Dovecot is the source's: not in our figures.
    let ours = usage.process_seconds - peer;
    // What no live thread accounts for: threads that ended between samples.
    c.other += (ours - attributed).max(0.0);
    c.total = attributed.max(ours);
    (c, by_thread)
}
