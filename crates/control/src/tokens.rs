//! `mailferry token issue | list | revoke`: agent tokens bound to a tenant.
//!
//! A token is written once, mode 0600, to the file the admin names, and shown nowhere
//! else (not on stdout, not in a log); the volume keeps only its SHA-256. Works while
//! `mailferry serve` holds the volume: the running service sees the change at its next
//! request and records it in the volume's audit log.
//!
//! An `s3://` volume: while a `serve` on this machine holds its working copy, the change
//! goes into the working copy's index and that `serve` records and uploads it; otherwise
//! the command opens the volume from the bucket as a writer (lease, working copy) and
//! returns once the change is in the bucket. A `serve` on another machine holds the
//! lease: run the command there.

use crate::volume_admin::S3Args;
use crate::AppError;
use mailferry_core::profile::Profile;
use mailferry_core::secret::SecretBytes;
use mailferry_store::{Credential, TokenAdmin, TokenInfo};
use std::io::Write;
use std::path::Path;

/// What `token issue` did (never the token).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    /// Token id.
    pub id: u64,
    /// Tenant it is bound to.
    pub tenant: String,
    /// Where the token was written.
    pub out: String,
    /// True if a running `serve` holds the volume (and records the audit event).
    pub volume_in_use: bool,
}

fn admin(volume: &Path, cred: &Credential, s3: &S3Args) -> Result<TokenAdmin, AppError> {
    let settings = &Profile::embedded_default().store;
    let Some(url) = crate::volume_admin::s3_url(volume)? else {
        return Ok(TokenAdmin::open(volume, cred, settings)?);
    };
    let dir = s3.options().cache_dir_for(&url);
    if dir.join(mailferry_store::HEADER_FILE).is_file() {
        if let Some(a) = TokenAdmin::open_if_held(&dir, cred)? {
            return Ok(a);
        }
    }
    Ok(TokenAdmin::from_volume(crate::volume_admin::open_at(
        volume, cred, s3, settings,
    )?))
}

/// Returns once the change `admin` made is in the offsite copy of the volume it opened
/// (nothing to do for a volume directory, or when `serve` holds the volume).
fn flushed(admin: &TokenAdmin) -> Result<(), AppError> {
    if let Some(v) = admin.volume() {
        v.flush_offsite()?;
    }
    Ok(())
}

/// Issues a token for `tenant` and writes it to `out`, which must not exist.
pub fn issue(
    volume: &Path,
    cred: &Credential,
    s3: &S3Args,
    tenant: &str,
    out: &Path,
    expires: Option<i64>,
) -> Result<Issued, AppError> {
    use std::os::unix::fs::OpenOptionsExt;
    let admin = admin(volume, cred, s3)?;
    // The file first: if it cannot be created, no token exists that nobody holds.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                AppError::Usage(format!(
                    "{}: already exists; a token file is written once (choose a new path)",
                    out.display()
                ))
            } else {
                AppError::io(out, e)
            }
        })?;
    let issued = match admin.issue_expiring(tenant, expires) {
        Ok(t) => t,
        Err(e) => {
            drop(f);
            let _ = std::fs::remove_file(out);
            return Err(e.into());
        }
    };
    let mut line = zeroize::Zeroizing::new(issued.token.expose().to_vec());
    line.push(b'\n');
    f.write_all(&line)
        .and_then(|_| f.sync_all())
        .map_err(|e| AppError::io(out, e))?;
    flushed(&admin)?;
    Ok(Issued {
        id: issued.id,
        tenant: issued.tenant.clone(),
        out: out.display().to_string(),
        volume_in_use: admin.shared(),
    })
}

/// Registers the token in `token_file` (issued on another store node) for `tenant`, so
/// one agent token opens its mailboxes on every node of a split deployment.
pub fn add(
    volume: &Path,
    cred: &Credential,
    s3: &S3Args,
    tenant: &str,
    token_file: &Path,
) -> Result<Issued, AppError> {
    let token = read_token_file(token_file)?;
    let admin = admin(volume, cred, s3)?;
    let issued = admin.add(tenant, &token)?;
    flushed(&admin)?;
    Ok(Issued {
        id: issued.id,
        tenant: issued.tenant.clone(),
        out: token_file.display().to_string(),
        volume_in_use: admin.shared(),
    })
}

/// Every token of the volume (never the tokens themselves).
pub fn list(volume: &Path, cred: &Credential, s3: &S3Args) -> Result<Vec<TokenInfo>, AppError> {
    admin(volume, cred, s3)?.list().map_err(Into::into)
}

/// Revokes token `id`; false if it was already revoked.
pub fn revoke(volume: &Path, cred: &Credential, s3: &S3Args, id: u64) -> Result<bool, AppError> {
    let admin = admin(volume, cred, s3)?;
    let changed = admin.revoke(id)?;
    flushed(&admin)?;
    Ok(changed)
}

/// The `token list` table.
pub fn table(tokens: &[TokenInfo]) -> String {
    let mut s = format!(
        "{:>6}  {:<30}  {:<20}  {:<20}  {}\n",
        "ID", "TENANT", "CREATED", "EXPIRES", "REVOKED"
    );
    let time = |t: Option<i64>| t.map(mailferry_core::rfc3339).unwrap_or_else(|| "-".into());
    for t in tokens {
        s.push_str(&format!(
            "{:>6}  {:<30}  {:<20}  {:<20}  {}\n",
            t.id,
            t.tenant,
            mailferry_core::rfc3339(t.created),
            time(t.expires),
            time(t.revoked)
        ));
    }
    s
}

/// Reads a token file (as written by `token issue`): its text without surrounding
/// whitespace. The file's bytes are wiped from memory after reading.
pub fn read_token_file(path: &Path) -> Result<SecretBytes, AppError> {
    let raw = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| AppError::io(path, e))?);
    let text = raw.trim_ascii();
    if text.is_empty() || !text.iter().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::Usage(format!(
            "{}: not a token file (expected the one line written by `mailferry token issue`)",
            path.display()
        )));
    }
    Ok(SecretBytes::new(text.to_vec()))
}
