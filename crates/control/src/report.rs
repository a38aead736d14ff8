//! `mailferry report`: the move record with all its passes, as JSON or as one
//! self-contained HTML page (inline CSS and SVG, no scripts, no external URLs) with a
//! throughput-over-time plot. Reads the state directory; changes nothing.

use crate::audit_cmd::{identity, Reconciliation};
use crate::AppError;
use mailferry_agent::state::{MoveIdentity, AUDIT_FILE};
use mailferry_core::report::{MoveReport, Sample};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

pub mod plot;

/// Version of the JSON document; bumped only when a field changes meaning.
pub const SCHEMA: &str = "mailferry-move-record/1";

/// Digest of one side's audit log.
#[derive(Debug, Serialize)]
pub struct LogDigest {
    /// Records in the log.
    pub records: u64,
    /// SHA-256 of its last line: pin it to detect records cut off the end later.
    pub head: String,
}

/// The move record.
#[derive(Debug, Serialize)]
pub struct MoveRecord {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The move.
    #[serde(rename = "move")]
    pub identity: MoveIdentity,
    /// Every pass, oldest first (kept until an admin deletes the state directory).
    pub passes: Vec<MoveReport>,
    /// The source side's audit log.
    pub source_audit: LogDigest,
    /// The destination side's audit log, when the volume was given.
    pub destination_audit: Option<LogDigest>,
    /// Message-by-message comparison, when the volume was given.
    pub reconciliation: Option<Reconciliation>,
    /// The move's lifecycle: state, history, settings, approved skipped items.
    pub lifecycle: Option<crate::lifecycle::Lifecycle>,
}

/// Loads the move record of `state`; with `volume`, adds its log digest and a
/// reconciliation.
pub fn load(
    state: &Path,
    volume: Option<&mailferry_store::Volume>,
) -> Result<MoveRecord, AppError> {
    let identity = identity(state)?;
    let path = state.join("reports.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| AppError::io(&path, e))?;
    let mut passes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        passes.push(serde_json::from_str(line).map_err(|e| {
            AppError::Failed(format!(
                "{} line {}: not a move report: {e}",
                path.display(),
                i + 1
            ))
        })?);
    }
    let digest = |p: &Path| -> Result<LogDigest, AppError> {
        let v = mailferry_audit::verify(p).map_err(|e| AppError::Failed(e.to_string()))?;
        Ok(LogDigest {
            records: v.records,
            head: v.head,
        })
    };
    let source_audit = digest(&state.join(AUDIT_FILE))?;
    let (destination_audit, reconciliation) = match volume {
        Some(v) => (
            Some(digest(
                &v.dir().join(mailferry_store::audit_trail::AUDIT_FILE),
            )?),
            Some(crate::audit_cmd::reconcile(state, v)?),
        ),
        None => (None, None),
    };
    Ok(MoveRecord {
        schema: SCHEMA,
        identity,
        passes,
        source_audit,
        destination_audit,
        reconciliation,
        lifecycle: crate::lifecycle::load(state)?,
    })
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Throughput (MB/s) over the pass, as an SVG line plot ([`plot::svg`] without a
/// throttle line).
pub fn throughput_svg(samples: &[Sample]) -> String {
    plot::svg(samples, None)
}

/// The record as one self-contained HTML page.
pub fn html(r: &MoveRecord) -> String {
    let mut o = String::new();
    html_identity(&mut o, r);
    html_lifecycle(&mut o, r);
    html_passes(&mut o, r);
    if let Some(last) = r.passes.last() {
        html_last_pass(&mut o, last);
    }
    html_skipped(&mut o, r);
    html_warnings(&mut o, r);
    html_audit(&mut o, r);
    o.push_str("</body></html>\n");
    o
}

/// The document head (inline style) and the move's identity.
fn html_identity(o: &mut String, r: &MoveRecord) {
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mailferry move {id}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}.bad{{color:#b00}}.ok{{color:#070}}\
         code{{font-size:.85em}}</style></head><body>\
         <h1>Move record</h1><table><tr><th>move</th><td><code>{id}</code></td></tr><tr><th>mailbox</th><td>{mb}</td></tr>\
         <tr><th>source</th><td>{src}</td></tr><tr><th>created</th><td>{created}</td></tr><tr><th>passes</th><td>{n}</td></tr></table>",
        id = esc(&r.identity.move_id.to_string()),
        mb = esc(r.identity.mailbox.as_str()),
        src = esc(&r.identity.source),
        created = esc(&r.identity.created_at),
        n = r.passes.len()
    );
}

/// The lifecycle's state and transitions, if the move has one.
fn html_lifecycle(o: &mut String, r: &MoveRecord) {
    if let Some(lc) = &r.lifecycle {
        let _ = write!(
            o,
            "<h2>Lifecycle: {}</h2><table><tr><th>time</th><th>state</th><th>reason</th><th>actor</th></tr>",
            esc(lc.state.as_str())
        );
        for t in &lc.history {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.at),
                esc(t.state.as_str()),
                esc(&t.reason),
                esc(&t.actor)
            );
        }
        o.push_str("</table>");
    }
}

/// One row per pass, then the throughput plot.
fn html_passes(o: &mut String, r: &MoveRecord) {
    o.push_str("<h2>Passes</h2><table><tr><th>started</th><th>found</th><th>moved</th><th>already there</th><th>bad</th><th>MB moved</th><th>seconds</th><th>MB/s</th><th>msg/s</th><th>latency p50 / p99 ms</th></tr>");
    for p in &r.passes {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1} / {:.1}</td></tr>",
            esc(&p.started_at),
            p.items_total,
            p.items_moved,
            p.items_skipped_duplicate,
            p.bad_items.len(),
            p.bytes_moved as f64 / 1e6,
            p.seconds,
            p.throughput_bytes_per_s / 1e6,
            p.messages_per_s,
            p.latency_ms_p50,
            p.latency_ms_p99
        );
    }
    o.push_str("</table>");
    // The plot shows the last pass that moved data (a rerun that stored nothing is flat).
    if let Some(moving) = r.passes.iter().rev().find(|p| p.bytes_moved > 0) {
        let _ = write!(
            o,
            "<h2>Throughput over time (pass started {})</h2>",
            esc(&moving.started_at)
        );
        o.push_str(&throughput_svg(&moving.timeline));
    }
}

/// The last pass in detail: time by stage, folders, and its receipt.
fn html_last_pass(o: &mut String, last: &MoveReport) {
    let s = &last.stages;
    let rows: [(&str, f64); 14] = [
        ("source read", s.source_read),
        ("transport (TLS write to the proxy)", s.transport),
        ("stalled (waiting for the destination)", s.stalled),
        ("throttled (the move's rate limits)", s.throttled),
        (
            "server backoff (429/503, IMAP [THROTTLED])",
            s.server_backoff,
        ),
        ("store write", s.store_write),
        ("&nbsp;&nbsp;of which SHA-256", s.hash),
        ("&nbsp;&nbsp;of which encryption", s.encryption),
        ("&nbsp;&nbsp;of which segment append", s.append),
        ("store commit (own thread, overlaps writes)", s.store_commit),
        ("&nbsp;&nbsp;of which fsync", s.sync),
        ("&nbsp;&nbsp;of which index", s.index),
        ("&nbsp;&nbsp;of which audit log", s.audit),
        ("wall time", last.seconds),
    ];
    o.push_str("<h2>Time by stage (last pass)</h2><table>");
    for (name, secs) in rows {
        let _ = write!(o, "<tr><th>{name}</th><td>{secs:.3} s</td></tr>");
    }
    let _ = write!(
        o,
        "<tr><th>peak RSS</th><td>{} MiB</td></tr></table>",
        last.peak_rss_bytes >> 20
    );
    o.push_str("<h2>Folders (last pass)</h2><table><tr><th>folder</th><th>to send</th><th>moved</th><th>already there</th><th>bad</th><th>MB moved</th></tr>");
    for (f, st) in &last.per_folder {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            esc(f),
            st.found,
            st.moved,
            st.duplicate,
            st.bad,
            st.bytes_moved as f64 / 1e6
        );
    }
    o.push_str("</table>");
    let rc = &last.receipt;
    let _ = write!(
        o,
        "<h2>Move receipt</h2><table><tr><th>source root ({} messages)</th><td><code>{}</code></td></tr>\
         <tr><th>destination root ({} messages)</th><td><code>{}</code></td></tr><tr><th>match</th><td class=\"{}\">{}</td></tr></table>",
        rc.source_items,
        esc(&rc.source_root),
        rc.destination_items,
        esc(&rc.destination_root),
        if rc.matches { "ok" } else { "bad" },
        if rc.matches { "yes" } else { "NO" }
    );
    // The signed heads handed out with the pass: what `receipt verify --*-public-key`
    // checks the logs against later.
    let heads = [
        ("source", &rc.source_head),
        ("destination", &rc.destination_head),
    ];
    if heads.iter().any(|(_, h)| h.is_some()) {
        o.push_str("<h2>Signed audit heads</h2><table>");
        for (side, h) in heads {
            if let Some(h) = h {
                let _ = write!(
                    o,
                    "<tr><th>{side} log</th><td>{} records at {}, head <code>{}</code>, key <code>{}</code></td></tr>",
                    h.seq,
                    esc(&h.time),
                    esc(&h.head),
                    esc(&h.key)
                );
            }
        }
        o.push_str("</table>");
    }
}

/// Every pass's skipped items, with their approval.
fn html_skipped(o: &mut String, r: &MoveRecord) {
    o.push_str("<h2>Skipped items</h2>");
    let approved = |item: &str| {
        r.lifecycle
            .as_ref()
            .is_some_and(|lc| lc.approved.contains(item))
    };
    // Reports of older versions list bad items only.
    let skipped: Vec<_> = r
        .passes
        .iter()
        .flat_map(|p| {
            let items = if p.skipped_items.is_empty() {
                p.bad_items
                    .iter()
                    .map(crate::limits::from_bad_item)
                    .collect()
            } else {
                p.skipped_items.clone()
            };
            items.into_iter().map(move |s| (p, s))
        })
        .collect();
    if skipped.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str("<table><tr><th>pass</th><th>item</th><th>kind</th><th>bytes</th><th>approved</th><th>reason</th></tr>");
        for (p, s) in skipped {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.started_at),
                esc(&s.item),
                match s.kind {
                    mailferry_core::report::SkipKind::BadItem => "bad item",
                    mailferry_core::report::SkipKind::LargeItem => "large item",
                },
                s.size.map(|n| n.to_string()).unwrap_or_default(),
                if approved(&s.item) { "yes" } else { "no" },
                esc(&s.reason)
            );
        }
        o.push_str("</table>");
    }
}

/// Items stored with a warning.
fn html_warnings(o: &mut String, r: &MoveRecord) {
    // Each pass lists the items it stored; together they are the move's.
    o.push_str("<h2>Warnings</h2>");
    let warned: Vec<_> = r
        .passes
        .iter()
        .flat_map(|p| p.warnings.iter().map(move |w| (p, w)))
        .collect();
    if warned.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str(
            "<p>Stored byte for byte, but not plain RFC 5322 messages: a mail client may show \
             them oddly. Not bad items; no limit counts them.</p>\
             <table><tr><th>pass</th><th>item</th><th>reason</th></tr>",
        );
        for (p, w) in warned {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.started_at),
                esc(&w.item),
                esc(&w.reason)
            );
        }
        o.push_str("</table>");
    }
}

/// Both audit logs' heads and the reconciliation, if one was made.
fn html_audit(o: &mut String, r: &MoveRecord) {
    let _ = write!(
        o,
        "<h2>Audit logs</h2><table><tr><th>source side</th><td>{} records, head <code>{}</code></td></tr>",
        r.source_audit.records,
        esc(&r.source_audit.head)
    );
    if let Some(d) = &r.destination_audit {
        let _ = write!(
            o,
            "<tr><th>destination side</th><td>{} records, head <code>{}</code></td></tr>",
            d.records,
            esc(&d.head)
        );
    }
    o.push_str("</table>");
    if let Some(rc) = &r.reconciliation {
        let _ = write!(
            o,
            "<h2>Reconciliation</h2><p class=\"{}\">{} agreeing; {}.</p>",
            if rc.agrees() { "ok" } else { "bad" },
            rc.agreeing,
            rc.discrepancies()
        );
    }
}
