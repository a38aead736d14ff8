//! What to do next, said twice: once for the command line (flags, `mailferry ...`
//! commands) and once for the admin web pages (buttons and pages). Every message of the
//! control plane that gives such advice builds it from an [`Advice`], so the two
//! renderings cannot drift apart; the CLI's wording is [`Advice::cli`], unchanged.
//!
//! Messages are kept as text where they are recorded (a move's lifecycle history, a
//! run's error, a connection test's check): [`web_text`] finds the CLI rendering of
//! every advice in such a text and puts the web rendering in its place, so the pages
//! can show records written before (or by the CLI) in their own terms. It does not
//! rewrite anything else: a text without advice comes back unchanged.

use std::borrow::Cow;

/// One piece of advice about what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Advice {
    /// A limit was hit by skipped items: fix them, raise the limit or approve them.
    FixOrApproveSkipped,
    /// The final pass left unapproved skipped items: check them, then complete approving.
    CheckThenCompleteApproving,
    /// Skipped items must be approved before the move can complete.
    ApproveBeforeComplete,
    /// Some mailboxes of the batch failed: look at the batch's status.
    SeeBatchStatus(String),
    /// The batch is suspended: resume it first.
    ResumeBatch(String),
    /// The move (its state directory) is suspended: resume it first.
    ResumeMove(String),
    /// A completed move takes no more passes: copy the mailbox again with a new move.
    NewMoveToCopyAgain,
    /// A connection test without a user checks only the directory above the mailboxes.
    TestWithUser,
    /// A Maildir source must name the Maildir itself (the directory with cur/ and new/).
    PointAtMailboxRoot,
}

/// The CLI rendering of each kind of advice as (prefix, suffix) around its parameter
/// (none: the suffix is empty and the advice takes no parameter). `web_text` searches
/// texts for these, so each prefix must be distinctive.
const KINDS: &[(&str, &str)] = &[
    (
        "fix the items and run the move again, raise the limit, or accept them with --approve-skipped",
        "",
    ),
    (
        "check them (report.json, `mailferry move status`) and complete with --approve-skipped",
        "",
    ),
    ("need approval (--approve-skipped) before it can complete", ""),
    ("see `mailferry batch status ", "`"),
    ("run `mailferry batch resume ", "` first"),
    ("run `mailferry move resume --state ", "` first"),
    (
        "to copy the mailbox again, start a new move with another --state",
        "",
    ),
    ("give --user to check a mailbox", ""),
    ("point --source at the mailbox root", ""),
];

impl Advice {
    /// Index into [`KINDS`] and the parameter.
    fn parts(&self) -> (usize, Option<&str>) {
        match self {
            Advice::FixOrApproveSkipped => (0, None),
            Advice::CheckThenCompleteApproving => (1, None),
            Advice::ApproveBeforeComplete => (2, None),
            Advice::SeeBatchStatus(b) => (3, Some(b)),
            Advice::ResumeBatch(b) => (4, Some(b)),
            Advice::ResumeMove(d) => (5, Some(d)),
            Advice::NewMoveToCopyAgain => (6, None),
            Advice::TestWithUser => (7, None),
            Advice::PointAtMailboxRoot => (8, None),
        }
    }

    /// The advice of kind `i` with parameter `p` (ignored by kinds without one).
    fn of(i: usize, p: &str) -> Option<Advice> {
        let p = p.to_string();
        Some(match i {
            0 => Advice::FixOrApproveSkipped,
            1 => Advice::CheckThenCompleteApproving,
            2 => Advice::ApproveBeforeComplete,
            3 => Advice::SeeBatchStatus(p),
            4 => Advice::ResumeBatch(p),
            5 => Advice::ResumeMove(p),
            6 => Advice::NewMoveToCopyAgain,
            7 => Advice::TestWithUser,
            8 => Advice::PointAtMailboxRoot,
            _ => return None,
        })
    }

    /// The advice for the command line: flags and `mailferry` commands.
    pub fn cli(&self) -> String {
        let (i, p) = self.parts();
        let (prefix, suffix) = KINDS[i];
        format!("{prefix}{}{suffix}", p.unwrap_or(""))
    }

    /// The advice for the admin web pages: buttons and pages, never flags or commands.
    pub fn web(&self) -> String {
        match self {
            Advice::FixOrApproveSkipped => {
                "fix the items and start the batch again, raise the limit, or \
                 approve them with Approve skipped on the mailbox's page"
                    .into()
            }
            Advice::CheckThenCompleteApproving => {
                "check them on the mailbox's page, then approve them there \
                 with Approve skipped"
                    .into()
            }
            Advice::ApproveBeforeComplete => {
                "need approval (Approve skipped on the mailbox's page) before it can complete"
                    .into()
            }
            Advice::SeeBatchStatus(_) => "each failed mailbox's page says why".into(),
            Advice::ResumeBatch(_) | Advice::ResumeMove(_) => {
                "resume it first with Resume on its batch's page".into()
            }
            Advice::NewMoveToCopyAgain => {
                "to copy the mailbox again, create a new batch with it".into()
            }
            Advice::TestWithUser => "give a user name to check a mailbox".into(),
            Advice::PointAtMailboxRoot => {
                "set the endpoint's mailbox path to the Maildir itself, the \
                 directory that holds cur/ and new/"
                    .into()
            }
        }
    }
}

/// The first advice of a known kind in `text`: its byte range and the advice.
fn find(text: &str) -> Option<(std::ops::Range<usize>, Advice)> {
    let mut best: Option<(std::ops::Range<usize>, Advice)> = None;
    for (i, (prefix, suffix)) in KINDS.iter().enumerate() {
        let Some(start) = text.find(prefix) else {
            continue;
        };
        let after = start + prefix.len();
        let (param, end) = if suffix.is_empty() {
            ("", after)
        } else {
            match text[after..].find(suffix) {
                Some(n) => (&text[after..after + n], after + n + suffix.len()),
                None => continue,
            }
        };
        if best.as_ref().is_none_or(|(r, _)| start < r.start) {
            best = Advice::of(i, param).map(|a| (start..end, a));
        }
    }
    best
}

/// `text` with every advice given for the command line replaced by its web rendering;
/// borrowed unchanged when there is none.
pub fn web_text(text: &str) -> Cow<'_, str> {
    let Some((first, advice)) = find(text) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first.start]);
    out.push_str(&advice.web());
    let mut rest = &text[first.end..];
    while let Some((r, a)) = find(rest) {
        out.push_str(&rest[..r.start]);
        out.push_str(&a.web());
        rest = &rest[r.end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
