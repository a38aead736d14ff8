//! What the dashboard, the batch page and the mailbox page show alike: times (UTC
//! everywhere, one format), percentages that reach 100 only when every item is in, the
//! short state of a mailbox, its table row, and the lifecycle buttons a batch's state
//! allows ([`crate::actions::rules`], the rule the API enforces) with the reason for
//! those it does not. Builds views only; it reads and changes nothing.

use super::url_component;
use crate::actions::rules::{self, BatchAction};
use crate::jobs::{JobKind, JobStatus};
use mailferry_control::advice::web_text;
use mailferry_control::batch::BatchStatus;
use mailferry_control::lifecycle::MoveState;
use mailferry_control::status::MoveStatus;
use mailferry_control::units::{human_bytes, human_duration};
use std::time::Duration;

/// An error or reason as a page shows it: advice for the command line in the page's
/// words ([`web_text`]), and references to the REST API (`(POST /api/v1/batches)`,
/// `; see GET /api/v1/…`), which are for API clients, left out.
pub fn page_text(text: &str) -> String {
    static API_REF: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?: \((?:[^()]*?,? ?(?:or )?with )?(?:GET|POST|PUT|PATCH|DELETE) /api/v1/[^()]*\)|;? see (?:GET|POST) /api/v1/\S+| or with (?:GET|POST|PUT|PATCH|DELETE) /api/v1/\S+)",
        )
        .expect("a valid pattern")
    });
    API_REF.replace_all(&web_text(text), "").into_owned()
}

/// A time as every page shows it: `2026-12-04 13:16:05 UTC`. Text that is not an
/// RFC 3339 time is returned as it is.
pub fn when(rfc3339: &str) -> String {
    match mailferry_core::profile::parse_rfc3339(rfc3339) {
        Ok(t) => at(t),
        Err(_) => rfc3339.to_string(),
    }
}

/// A Unix time as every page shows it.
pub fn at(unix: i64) -> String {
    mailferry_core::rfc3339(unix)
        .replacen('T', " ", 1)
        .replace('Z', " UTC")
}

/// Now, as every page shows it.
pub fn now() -> String {
    at(mailferry_core::unix_now())
}

/// `done` of `total` in whole percent, rounded down and never 100 before every item
/// is in (1,779 of 1,786 is 99 %); 100 once `finished` (completed, nothing left).
pub fn percent(done: u64, total: u64, finished: bool) -> u32 {
    if finished || (total > 0 && done >= total) {
        return 100;
    }
    if total == 0 {
        return 0;
    }
    ((done as u128 * 100 / total as u128) as u32).min(99)
}

/// `1779` as `1,779`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Why the move is in its state, in the pages' words. For a failed move, the reason
/// it failed, even when a later transition (a suspension and resume) says something
/// else.
pub fn reason(st: &MoveStatus) -> Option<String> {
    let r = if st.state == MoveState::Failed {
        // A resume re-enters Failed with "resumed by ..."; the failure is the Failed
        // entry not right after a suspension.
        let h = &st.history;
        (0..h.len())
            .rev()
            .find(|&i| {
                h[i].state == MoveState::Failed
                    && (i == 0 || h[i - 1].state != MoveState::Suspended)
            })
            .map(|i| h[i].reason.as_str())
            .or(st.reason.as_deref())
    } else {
        st.reason.as_deref()
    };
    r.filter(|r| !r.trim().is_empty()).map(page_text)
}

/// The label of a state as admins read it.
pub fn state_label(s: MoveState) -> &'static str {
    match s {
        MoveState::Created => "Created",
        MoveState::Syncing => "Syncing",
        MoveState::Synced => "Synced",
        MoveState::Completing => "Completing",
        MoveState::Completed => "Completed",
        MoveState::Failed => "Failed",
        MoveState::Suspended => "Suspended",
    }
}

/// The mailbox's page.
pub fn mailbox_url(batch: &str, mailbox: &str) -> String {
    format!(
        "/ui/moves/{}/{}",
        url_component(batch),
        url_component(mailbox)
    )
}

/// The batch's page.
pub fn batch_url(batch: &str) -> String {
    format!("/ui/batches/{}", url_component(batch))
}

/// One mailbox row of the dashboard and the batch page: short values only; the detail
/// is on the mailbox's page.
#[derive(Clone, Debug)]
pub struct MoveRow {
    /// Destination address.
    pub mailbox: String,
    /// Lifecycle state (`synced`), for CSS and tests.
    pub state: &'static str,
    /// The state in one word (`Synced`).
    pub state_label: &'static str,
    /// A few words beside it: `pass running`, `2 to approve`, `see its page`.
    pub note: Option<String>,
    /// 0 to 100, see [`percent`].
    pub percent: u32,
    /// `1,779 of 1,786`.
    pub items: String,
    /// Skipped items, `3 (1 approved)`.
    pub skipped: String,
    /// Bytes stored.
    pub bytes: String,
    /// Rate and time left while a pass runs, `12.0 MB/s, 3 min left`; `–` otherwise.
    pub rate: String,
    /// The mailbox's page.
    pub url: String,
    /// Skipped items wait for an admin's approval.
    pub approvable: bool,
    /// The confirmation page of Approve skipped.
    pub approve_url: String,
}

/// The row of one mailbox.
pub fn move_row(batch: &str, st: &MoveStatus) -> MoveRow {
    let waiting = rules::awaiting_approval(st);
    let note = if st.running {
        Some("pass running".to_string())
    } else {
        match st.state {
            MoveState::Failed => Some("error: see its page".into()),
            MoveState::Synced if waiting > 0 => Some(format!("{waiting} to approve")),
            MoveState::Synced => Some("ready to complete".into()),
            MoveState::Suspended => Some("held".into()),
            _ => None,
        }
    };
    let url = mailbox_url(batch, &st.mailbox);
    MoveRow {
        mailbox: st.mailbox.clone(),
        state: st.state.as_str(),
        state_label: state_label(st.state),
        note,
        percent: percent(
            st.items_synced,
            st.items_total,
            st.state == MoveState::Completed,
        ),
        items: format!(
            "{} of {}",
            thousands(st.items_synced),
            thousands(st.items_total)
        ),
        skipped: if st.items_approved > 0 {
            format!(
                "{} ({} approved)",
                thousands(st.items_skipped),
                thousands(st.items_approved)
            )
        } else {
            thousands(st.items_skipped)
        },
        bytes: human_bytes(st.bytes_transferred),
        rate: match (st.running, st.rate_bytes_per_s > 0.0) {
            (true, true) => {
                let left = st
                    .eta_seconds
                    .map(|e| {
                        format!(
                            ", {} left",
                            human_duration(Duration::from_secs_f64(e.max(0.0)))
                        )
                    })
                    .unwrap_or_default();
                format!("{}/s{left}", human_bytes(st.rate_bytes_per_s as u64))
            }
            _ => "–".into(),
        },
        approvable: waiting > 0 && st.state != MoveState::Completed,
        approve_url: format!("{url}/approve"),
        url,
    }
}

/// A lifecycle button of a batch, possible now or not (then with the reason).
#[derive(Clone, Debug)]
pub struct ActionView {
    /// `start`, `sync`, `complete`, `suspend`, `resume`.
    pub action: &'static str,
    /// Button text.
    pub label: &'static str,
    /// Element id (`complete-NAME`), for tests and focus keeping.
    pub id: String,
    /// Where the button goes: the form's target, or the confirmation page (GET).
    pub url: String,
    /// It asks for confirmation first (a link to the confirmation page).
    pub confirm: bool,
    /// The batch's state allows it now.
    pub enabled: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// What it does, when that needs saying.
    pub hint: Option<String>,
}

/// The buttons of a batch in the order the pages show them: one button runs a pass
/// (labelled Start, Retry failed or Sync again after what it will do, since the server
/// runs one pass of every mailbox not completed either way), then Complete, Suspend
/// and Resume.
pub fn batch_actions(s: &BatchStatus, job: Option<&JobStatus>) -> Vec<ActionView> {
    let count =
        |f: &dyn Fn(MoveState) -> bool| s.mailboxes.iter().filter(|m| f(m.status.state)).count();
    let (new, failed, synced) = (
        count(&|st| st == MoveState::Created),
        count(&|st| st == MoveState::Failed),
        count(&|st| st == MoveState::Synced),
    );
    let run = if new + failed > 0 {
        BatchAction::Start
    } else {
        BatchAction::Sync
    };
    let run_label = match (new, failed) {
        (0, 0) => "Sync again",
        (0, _) => "Retry failed",
        _ => "Start",
    };
    let mut parts = Vec::new();
    if new > 0 {
        parts.push(format!("the first copy of {new} new mailbox(es)"));
    }
    if failed > 0 {
        parts.push(format!(
            "a retry of {failed} failed mailbox(es), from where they stopped"
        ));
    }
    if synced > 0 {
        parts.push(format!(
            "a delta pass of {synced} synced mailbox(es), copying what arrived since"
        ));
    }
    let run_hint =
        (parts.len() > 1 || failed > 0).then(|| format!("{run_label} runs {}.", parts.join(", ")));
    let base = format!("/ui/batches/{}", url_component(&s.name));
    let view = |a: BatchAction, label: &'static str, confirm: bool, hint: Option<String>| {
        let check = if matches!(a, BatchAction::Start | BatchAction::Sync) {
            rules::check_run(s, job)
        } else {
            rules::check_batch(s, job, a)
        };
        ActionView {
            action: a.as_str(),
            label,
            id: format!("{}-{}", a.as_str(), s.name),
            url: format!("{base}/{}", a.as_str()),
            confirm,
            enabled: check.is_ok(),
            reason: check.err(),
            hint,
        }
    };
    vec![
        view(run, run_label, false, run_hint),
        view(BatchAction::Complete, "Complete…", true, None),
        view(BatchAction::Suspend, "Suspend…", true, None),
        view(BatchAction::Resume, "Resume", false, None),
    ]
}

/// The batch's latest run, in a few words.
pub fn job_text(j: &JobStatus) -> String {
    let kind = match j.kind {
        JobKind::Sync => "pass",
        JobKind::Complete => "final pass",
        JobKind::Approve => "approval pass",
    };
    match (&j.scheduled_for, j.running, &j.error) {
        (Some(t), true, _) => format!("{kind} scheduled for {}", when(t)),
        (_, true, _) => format!("{kind} running since {}", when(&j.started_at)),
        (_, false, Some(e)) => format!("last {kind} failed: {}", page_text(e)),
        (_, false, None) => format!(
            "last {kind} ended {}",
            j.finished_at.as_deref().map(when).unwrap_or_default()
        ),
    }
}

/// Mailboxes per state, `1 Synced, 1 Failed`, in lifecycle order.
pub fn state_counts(s: &BatchStatus) -> Vec<(&'static str, &'static str, usize)> {
    [
        MoveState::Created,
        MoveState::Syncing,
        MoveState::Synced,
        MoveState::Completing,
        MoveState::Completed,
        MoveState::Failed,
        MoveState::Suspended,
    ]
    .into_iter()
    .map(|st| {
        (
            st.as_str(),
            state_label(st),
            s.mailboxes.iter().filter(|m| m.status.state == st).count(),
        )
    })
    .filter(|(_, _, n)| *n > 0)
    .collect()
}

/// The batch's percent: the mean of its mailboxes' (a mailbox that found nothing yet
/// counts 0), and never 100 before every mailbox is completed or has every item in.
pub fn batch_percent(s: &BatchStatus) -> u32 {
    if s.mailboxes.is_empty() {
        return 0;
    }
    let each: Vec<u32> = s
        .mailboxes
        .iter()
        .map(|m| {
            let st = &m.status;
            percent(
                st.items_synced,
                st.items_total,
                st.state == MoveState::Completed,
            )
        })
        .collect();
    let mean = each.iter().map(|p| u64::from(*p)).sum::<u64>() / each.len() as u64;
    if each.iter().all(|p| *p == 100) {
        100
    } else {
        (mean as u32).min(99)
    }
}

#[cfg(test)]
mod tests;
