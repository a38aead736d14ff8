//! From `mailferry bench`'s arguments to the cases it runs (size model, messages,
//! mailboxes, folders per case). Every impossible combination is refused here, as a usage
//! error, before anything is written; nothing here measures or writes.

use super::{
    BenchArgs, SourceKind, DEFAULT_MESSAGES, REALISTIC_MEAN_BYTES, SMALL_MESSAGES,
    SMALL_MESSAGE_BYTES,
};
use crate::sample::SizeModel;
use crate::AppError;
use std::path::PathBuf;

/// One configuration to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CaseSpec {
    pub(super) name: String,
    pub(super) mailboxes: usize,
    pub(super) concurrency: usize,
    pub(super) messages: usize,
    pub(super) folders: usize,
    /// `mailferry worker` processes moving the mailboxes (`--workers`); `None`: agents
    /// in the bench's own process.
    pub(super) workers: Option<usize>,
}

/// Checks the arguments and turns them into the size model and the cases to run.
pub(super) fn plan(args: &BenchArgs) -> Result<(SizeModel, Vec<CaseSpec>), AppError> {
    let usage = |m: String| Err(AppError::Usage(m));
    match args.source {
        SourceKind::Maildir | SourceKind::Mbox => {}
        SourceKind::Imap if !crate::dovecot::available() => {
            return usage(
                "--source imap serves the corpus from a scratch Dovecot, which is not \
                 installed: apt-get install dovecot-core dovecot-imapd (./test.sh does)"
                    .into(),
            )
        }
        SourceKind::Imap => {}
    }
    if args.runs == 0 {
        return usage("--runs must be at least 1".into());
    }
    if args.folders == 0 {
        return usage("--folders must be at least 1 (INBOX)".into());
    }
    let model = match (args.message_size, args.small) {
        (Some(0), _) => return usage("--message-size must be more than 0".into()),
        (Some(b), _) => SizeModel::Fixed(b),
        (None, true) => SizeModel::Fixed(SMALL_MESSAGE_BYTES),
        (None, false) => SizeModel::Realistic,
    };
    let mean = match model {
        SizeModel::Fixed(b) => u64::from(b),
        _ => REALISTIC_MEAN_BYTES,
    };
    let messages = match (args.messages, args.size) {
        (Some(_), Some(_)) => return usage("give --messages or --size, not both".into()),
        (Some(n), None) => n,
        (None, Some(bytes)) => bytes.div_ceil(mean) as usize,
        (None, None) if args.small => SMALL_MESSAGES,
        (None, None) => DEFAULT_MESSAGES,
    };
    if messages == 0 {
        return usage("the corpus needs at least 1 message".into());
    }
    if args.concurrency == Some(0) {
        return usage("--concurrency must be at least 1".into());
    }
    let cases = if !args.per_folder.is_empty() {
        if args.mailboxes != [1] {
            return usage("--per-folder runs one mailbox; leave out --mailboxes".into());
        }
        if args.per_folder.contains(&0) {
            return usage("--per-folder sizes must be at least 1".into());
        }
        args.per_folder
            .iter()
            .map(|&n| CaseSpec {
                name: format!("folder of {n}"),
                mailboxes: 1,
                concurrency: 1,
                messages: n,
                folders: 1,
                workers: None,
            })
            .collect()
    } else {
        if args.mailboxes.is_empty() || args.mailboxes.contains(&0) {
            return usage("--mailboxes must be at least 1".into());
        }
        let mut cases = Vec::new();
        for &m in &args.mailboxes {
            if m > messages {
                return usage(format!(
                    "--mailboxes {m} needs at least {m} messages (--messages is the total)"
                ));
            }
            let c = args.concurrency.unwrap_or(m).min(m);
            cases.push(CaseSpec {
                name: format!("{m} mailbox{}", if m == 1 { "" } else { "es" }),
                mailboxes: m,
                concurrency: c,
                messages,
                folders: args.folders,
                workers: None,
            });
        }
        cases
    };
    let cases = worker_cases(args, cases)?;
    if args.compare_dovecot {
        if args.source != SourceKind::Maildir {
            return usage(
                "--compare dovecot reads the corpus as a Maildir: use --source maildir".into(),
            );
        }
        if !cases.iter().any(|c| c.mailboxes == 1) {
            return usage(
                "--compare dovecot compares one mailbox: include 1 in --mailboxes".into(),
            );
        }
        if which("doveadm").is_none() {
            return usage(
                "--compare dovecot: doveadm not found (apt-get install dovecot-core)".into(),
            );
        }
    }
    check_imap_extras(args)?;
    Ok((model, cases))
}

/// `--workers 1,2,4`: the one mailbox case once per worker count, each worker running
/// `--concurrency` (default 4) passes at once.
fn worker_cases(args: &BenchArgs, cases: Vec<CaseSpec>) -> Result<Vec<CaseSpec>, AppError> {
    if args.workers.is_empty() {
        return Ok(cases);
    }
    let usage = |m: &str| Err(AppError::Usage(m.into()));
    if args.workers.contains(&0) {
        return usage("--workers counts must be at least 1");
    }
    if args.source != SourceKind::Imap {
        return usage(
            "--workers moves mailboxes from the scratch IMAP server through an endpoint \
             (as a real batch would): use --source imap",
        );
    }
    if args.db.is_none() {
        return usage(
            "--workers needs a PostgreSQL server for the workers' queue: --db \
             postgres://USER@HOST:PORT/postgres (or MAILFERRY_DB); each run gets a scratch \
             database there, dropped at the end",
        );
    }
    if args.worker_exe.is_none() {
        return usage(
            "--workers starts `mailferry worker` processes: run it from `mailferry bench`",
        );
    }
    let [base] = cases.as_slice() else {
        return usage("--workers runs one mailbox count: give --mailboxes N (one value)");
    };
    let per_worker = args.concurrency.unwrap_or(4);
    Ok(args
        .workers
        .iter()
        .map(|&w| CaseSpec {
            name: format!(
                "{} mailboxes, {w} worker{}",
                base.mailboxes,
                if w == 1 { "" } else { "s" }
            ),
            concurrency: per_worker,
            workers: Some(w),
            ..base.clone()
        })
        .collect())
}

/// `--latency` and `--compare mbsync` need an IMAP server to stand in front of.
fn check_imap_extras(args: &BenchArgs) -> Result<(), AppError> {
    let usage = |m: &str| Err(AppError::Usage(m.into()));
    if !args.latency.is_empty() && args.source != SourceKind::Imap {
        return usage(
            "--latency puts a delay relay between the scratch IMAP server and the agent: \
             use it with --source imap",
        );
    }
    if args.compare_mbsync {
        if args.source != SourceKind::Imap {
            return usage(
                "--compare mbsync pulls the same mail from the same IMAP server: use \
                 --source imap",
            );
        }
        if which("mbsync").is_none() {
            return usage(
                "--compare mbsync: mbsync not found: apt-get install isync (./test.sh does)",
            );
        }
    }
    Ok(())
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}
