//! `--compare dovecot`: Dovecot's own `doveadm backup` (with and without mail_crypt) on
//! the same Maildir corpus, run by `benches/dovecot-compare.sh`, and its figures set
//! against ours. It does not start an IMAP server (that is [`crate::dovecot`]).

use super::report::{DovecotComparison, DovecotRow, RunFigures};
use crate::AppError;
use std::collections::BTreeMap;
use std::path::Path;

/// The scripted Dovecot setup (temp config, no root-only paths), shared with CI.
const DOVECOT_SCRIPT: &str = include_str!("../../../../benches/dovecot-compare.sh");

pub(super) fn compare_dovecot(
    work: &Path,
    maildir: &Path,
    case: &str,
    ours: &RunFigures,
) -> Result<DovecotComparison, AppError> {
    let script = work.join("dovecot-compare.sh");
    std::fs::write(&script, DOVECOT_SCRIPT).map_err(|e| AppError::io(&script, e))?;
    let out_dir = work.join("dovecot");
    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir).map_err(|e| AppError::io(&out_dir, e))?;
    }
    // As root the script runs doveadm as `nobody`, which must be able to walk here.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755));
    }
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(maildir)
        .arg(&out_dir)
        .output()
        .map_err(|e| AppError::io(&script, e))?;
    let _ = std::fs::remove_dir_all(&out_dir);
    if !out.status.success() {
        return Err(AppError::Failed(format!(
            "the Dovecot comparison failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let (version, rows) = parse_dovecot(&String::from_utf8_lossy(&out.stdout), ours);
    if rows.is_empty() {
        return Err(AppError::Failed(format!(
            "the Dovecot comparison printed no figures:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(DovecotComparison {
        version,
        case: case.to_string(),
        rows,
    })
}

/// Parses `benches/dovecot-compare.sh`'s `name key=value ...` lines.
pub(super) fn parse_dovecot(text: &str, ours: &RunFigures) -> (String, Vec<DovecotRow>) {
    let mut version = String::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let kv: BTreeMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if name == "dovecot" {
            version = kv.get("version").unwrap_or(&"").to_string();
            continue;
        }
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        if let (Some(seconds), Some(mb), Some(msgs)) =
            (num("seconds"), num("mb_per_s"), num("msgs_per_s"))
        {
            rows.push(DovecotRow {
                name: name.to_string(),
                encrypted: kv.get("encrypted") == Some(&"yes"),
                seconds,
                mb_per_s: mb,
                msgs_per_s: msgs,
                mailferry_ratio_mb: ours.mb_per_s / mb.max(1e-9),
                mailferry_ratio_msgs: ours.msgs_per_s / msgs.max(1e-9),
            });
        }
    }
    (version, rows)
}
