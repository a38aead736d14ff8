//! `mailferry volume ...` administration: init with a recovery key or a passphrase,
//! unlock-check, rekey, rotate, shred, compact, upgrade, and the recovery-slot check of
//! `move`.
//!
//! Secrets only ever come from files named on the command line (never from argv
//! itself); this module turns flags into store calls and words for the admin. It prints
//! nothing and holds no key material: the store reads the credential files.

use crate::AppError;
use mailferry_core::profile::Profile;
use mailferry_core::MailboxAddr;
use mailferry_store::{
    Argon2Params, CompactOutcome, Credential, InitOptions, InitOutcome, ReencryptOutcome,
    RotateOutcome, UnlockInfo, Volume,
};
use std::path::{Path, PathBuf};

/// The flags that say how to unlock a volume; exactly one must be given. Commands where
/// unlocking is optional (`move --proxy` has no volume) make the group optional with
/// `#[command(mut_group("UnlockArgs", |g| g.required(false)))]`; at most one may be
/// given there too.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(required = true, multiple = false)]
pub struct UnlockArgs {
    /// The volume's key file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// A file holding the volume's passphrase (never pass a passphrase on the command line).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// The recovery key file written by `volume init`.
    #[arg(long)]
    pub recovery_key_file: Option<PathBuf>,
}

impl UnlockArgs {
    /// The credential these flags name (a usage error unless exactly one is given).
    pub fn credential(&self) -> Result<Credential, AppError> {
        match (
            &self.key_file,
            &self.passphrase_file,
            &self.recovery_key_file,
        ) {
            (Some(k), None, None) => Ok(Credential::KeyFile(k.clone())),
            (None, Some(p), None) => Ok(Credential::Passphrase(p.clone())),
            (None, None, Some(r)) => Ok(Credential::RecoveryKey(r.clone())),
            _ => Err(AppError::Usage(
                "give exactly one of --key-file, --passphrase-file, --recovery-key-file".into(),
            )),
        }
    }

    /// True if any of the flags is given.
    pub fn any(&self) -> bool {
        self.key_file.is_some()
            || self.passphrase_file.is_some()
            || self.recovery_key_file.is_some()
    }
}

/// Where an `s3://` volume is reached and kept locally (`--s3-endpoint`, `--cache-dir`,
/// `--s3-credentials`); ignored for a volume directory. Recorded as given in a
/// lifecycle's or batch's destination (paths and an endpoint, never a secret), so that
/// later passes reach the same bucket.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize,
)]
pub struct S3Args {
    /// S3-compatible endpoint for `--volume s3://bucket/prefix` (default: AWS). Credentials
    /// come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN /
    /// AWS_REGION, or --s3-credentials.
    #[arg(long, value_name = "URL", env = "MAILFERRY_S3_ENDPOINT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// A file with aws_access_key_id / aws_secret_access_key lines (as ~/.aws/credentials).
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_credentials: Option<PathBuf>,
    /// The local working copy of an s3:// volume (default under
    /// $XDG_STATE_HOME/mailferry/s3/); restored from the bucket when missing or stale.
    #[arg(long, value_name = "DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds the writer lease of an s3:// volume lasts without renewal (default 30): a
    /// writer killed without releasing it blocks the next one this long.
    #[arg(long, value_name = "SECONDS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_lease_seconds: Option<u64>,
}

impl S3Args {
    /// True if no option is set (what a destination records as nothing).
    pub fn is_empty(&self) -> bool {
        *self == S3Args::default()
    }

    /// The same options with the paths made absolute, as a recorded destination keeps
    /// them.
    pub fn absolute(&self) -> S3Args {
        let abs = |p: &Option<PathBuf>| {
            p.as_deref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
        };
        S3Args {
            s3_endpoint: self.s3_endpoint.clone(),
            s3_credentials: abs(&self.s3_credentials),
            cache_dir: abs(&self.cache_dir),
            s3_lease_seconds: self.s3_lease_seconds,
        }
    }

    /// The bucket crate's options.
    pub fn options(&self) -> mailferry_bucket::S3Options {
        mailferry_bucket::S3Options {
            endpoint: self.s3_endpoint.clone(),
            credentials_file: self.s3_credentials.clone(),
            cache_dir: self.cache_dir.clone(),
            lease_seconds: self.s3_lease_seconds,
        }
    }
}

/// The `s3://` location `volume` names, if it names one.
pub fn s3_url(volume: &Path) -> Result<Option<mailferry_bucket::S3Url>, AppError> {
    match volume.to_str() {
        Some(s) if mailferry_bucket::S3Url::is_s3(s) => {
            Ok(Some(mailferry_bucket::S3Url::parse(s)?))
        }
        _ => Ok(None),
    }
}

/// Opens a volume directory, or an `s3://` volume through its working copy (restored
/// from the bucket if needed, the offsite copy attached), with `settings`.
pub fn open_at(
    volume: &Path,
    cred: &Credential,
    s3: &S3Args,
    settings: &mailferry_core::profile::StoreSettings,
) -> Result<Volume, AppError> {
    match s3_url(volume)? {
        Some(url) => {
            let o = mailferry_bucket::open(&url, &s3.options(), cred, settings)?;
            if o.restored {
                tracing::info!(volume = %url, cache = %o.cache_dir.display(), "working copy restored from the bucket");
            }
            Ok(o.volume)
        }
        None => Ok(Volume::open_with(volume, cred, settings)?),
    }
}

/// Opens a volume with the embedded default profile's store settings.
pub fn open(volume: &Path, unlock: &UnlockArgs) -> Result<Volume, AppError> {
    open_with_s3(volume, unlock, &S3Args::default())
}

/// [`open`] for a volume that may be `s3://...`.
pub fn open_with_s3(volume: &Path, unlock: &UnlockArgs, s3: &S3Args) -> Result<Volume, AppError> {
    open_at(
        volume,
        &unlock.credential()?,
        s3,
        &Profile::embedded_default().store,
    )
}

/// [`open`], then hands the tenant key in `tenant_key` (if any) to the volume, so the
/// command can read that tenant's customer-key mailboxes. A key that is not the one
/// registered for its tenant is refused before anything is read.
pub fn open_for_read(
    volume: &Path,
    unlock: &UnlockArgs,
    tenant_key: Option<&Path>,
) -> Result<Volume, AppError> {
    open_for_read_s3(volume, unlock, tenant_key, &S3Args::default())
}

/// [`open_for_read`] for a volume that may be `s3://...`.
pub fn open_for_read_s3(
    volume: &Path,
    unlock: &UnlockArgs,
    tenant_key: Option<&Path>,
    s3: &S3Args,
) -> Result<Volume, AppError> {
    let v = open_with_s3(volume, unlock, s3)?;
    if let Some(path) = tenant_key {
        let secret = mailferry_store::TenantSecret::load(path)?;
        v.unlock(mailferry_store::ReadAccess::TenantKey(secret))?;
    }
    Ok(v)
}

/// What `tenant key init` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantKeyInit {
    /// The tenant (mail domain).
    pub tenant: String,
    /// The key file written (the private half; mode 0600).
    pub out: PathBuf,
    /// Fingerprint of the public key.
    pub fingerprint: String,
    /// Whether the public key was registered in a volume.
    pub registered: bool,
    /// Existing mailboxes moved to the key.
    pub mailboxes_converted: u64,
    /// Key generations wrapped to the public key.
    pub keys_rewrapped: u64,
    /// Messages whose index values were recomputed.
    pub messages: u64,
}

/// `tenant key init`: makes an X25519 key pair for `tenant`, writes the private half
/// once to `out` (create-new, 0600, fsynced) and, with a volume, registers the public
/// half there (converting the tenant's existing mailboxes). The file is written first,
/// so no volume ever seals mail to a key nobody holds.
pub fn tenant_key_init(
    volume: Option<&Volume>,
    tenant: &str,
    out: &Path,
) -> Result<TenantKeyInit, AppError> {
    let domain = tenant.trim().to_ascii_lowercase();
    if domain.is_empty() || domain.contains('@') || !domain.contains('.') {
        return Err(AppError::Usage(format!(
            "--tenant {tenant}: a tenant is a mail domain such as example.com"
        )));
    }
    if let Some(v) = volume {
        if let Some(p) = v.tenant_public(&domain)? {
            return Err(AppError::Usage(format!(
                "tenant {domain} already has customer key {}; nothing was written",
                p.fingerprint()
            )));
        }
    }
    let secret = mailferry_store::TenantSecret::generate(&domain);
    secret.write_new(out)?;
    let fingerprint = secret.public().fingerprint();
    let mut r = TenantKeyInit {
        tenant: domain.clone(),
        out: out.to_path_buf(),
        fingerprint,
        registered: false,
        mailboxes_converted: 0,
        keys_rewrapped: 0,
        messages: 0,
    };
    if let Some(v) = volume {
        let c = v.register_tenant_key(&domain, &secret.public())?;
        r.registered = true;
        r.mailboxes_converted = c.mailboxes;
        r.keys_rewrapped = c.keys_rewrapped;
        r.messages = c.messages;
    }
    Ok(r)
}

/// The default recovery key file of a primary credential file: `<file>.recovery`.
pub fn default_recovery_path(primary: &Path) -> PathBuf {
    let mut s = primary.as_os_str().to_owned();
    s.push(".recovery");
    PathBuf::from(s)
}

/// `volume init`: a key file (created if missing) or a passphrase file as the primary
/// credential, and unless `no_recovery_key`, a recovery key written once to
/// `recovery_key_file` (default `<primary file>.recovery`).
///
/// `volume` may be `s3://bucket/prefix` (an empty prefix): the volume is created in the
/// working copy (`--cache-dir`) and uploaded before this returns.
pub fn init(
    volume: &Path,
    s3: &S3Args,
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    recovery_key_file: Option<&Path>,
    no_recovery_key: bool,
) -> Result<InitOutcome, AppError> {
    let Some(url) = s3_url(volume)? else {
        return init_dir(
            volume,
            key_file,
            passphrase_file,
            recovery_key_file,
            no_recovery_key,
        );
    };
    let opts = s3.options();
    if mailferry_bucket::holds_volume(&url, &opts)? {
        return Err(AppError::Usage(format!(
            "{url} already holds a volume; choose an empty prefix (nothing was changed)"
        )));
    }
    let dir = opts.cache_dir_for(&url);
    let out = init_dir(
        &dir,
        key_file,
        passphrase_file,
        recovery_key_file,
        no_recovery_key,
    )?;
    mailferry_bucket::upload_dir(
        &dir,
        &url,
        &opts,
        Profile::embedded_default().store.segment_max_bytes,
    )?;
    Ok(out)
}

/// `volume replicate --to s3://...`: uploads the volume directory `src` (not open
/// elsewhere; no key needed) to an empty prefix or an earlier replica of it, like an
/// upload round of a writer. Returns the manifest generation written.
pub fn replicate_to_s3(src: &Path, to: &Path, s3: &S3Args) -> Result<Option<u64>, AppError> {
    let Some(url) = s3_url(to)? else {
        return Ok(None);
    };
    Ok(Some(mailferry_bucket::upload_dir(
        src,
        &url,
        &s3.options(),
        Profile::embedded_default().store.segment_max_bytes,
    )?))
}

fn init_dir(
    volume: &Path,
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    recovery_key_file: Option<&Path>,
    no_recovery_key: bool,
) -> Result<InitOutcome, AppError> {
    let primary = new_credential(key_file, passphrase_file, "--key-file, --passphrase-file")?;
    if no_recovery_key && recovery_key_file.is_some() {
        return Err(AppError::Usage(
            "--no-recovery-key and --recovery-key-file contradict each other; give one".into(),
        ));
    }
    let recovery = (!no_recovery_key).then(|| {
        recovery_key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_recovery_path(primary.path()))
    });
    Ok(Volume::init_with(
        volume,
        &InitOptions {
            primary,
            recovery_key_file: recovery,
            argon2: Argon2Params::DEFAULT,
        },
    )?)
}

/// The instructions printed after a recovery key was written.
pub fn recovery_instructions(path: &Path) -> String {
    format!(
        "wrote the recovery key to {} (mode 0600). It opens this volume if the key file or \
         passphrase is lost. Store a copy OFF this machine now (password manager, printed in \
         a safe), then delete it here; anyone holding it can read the volume.",
        path.display()
    )
}

/// `move` refuses a volume without a recovery slot unless the admin acknowledged it.
/// An `s3://` volume's header is read from the bucket (no lease is taken).
pub fn require_recovery(volume: &Path, no_recovery_key: bool, s3: &S3Args) -> Result<(), AppError> {
    if no_recovery_key {
        return Ok(());
    }
    let has = match s3_url(volume)? {
        Some(url) => mailferry_bucket::has_recovery_slot(&url, &s3.options())?,
        None => Volume::has_recovery_slot(volume)?,
    };
    if has {
        return Ok(());
    }
    Err(AppError::Usage(format!(
        "volume {}: has no recovery key, so losing its key file or passphrase loses all mail \
         moved into it. Create volumes with `volume init` (which writes a recovery key), or \
         pass --no-recovery-key to accept that risk for this volume",
        volume.display()
    )))
}

/// `volume unlock-check`: reads the header and the credential only.
pub fn unlock_check(volume: &Path, unlock: &UnlockArgs) -> Result<UnlockInfo, AppError> {
    Ok(Volume::unlock_check(volume, &unlock.credential()?)?)
}

/// `volume rekey`: rewraps the master key under a new key file (created if missing) or
/// passphrase file. Returns true if a key file was created.
pub fn rekey(
    volume: &Path,
    unlock: &UnlockArgs,
    new_key_file: Option<&Path>,
    new_passphrase_file: Option<&Path>,
) -> Result<bool, AppError> {
    let new = new_credential(
        new_key_file,
        new_passphrase_file,
        "--new-key-file, --new-passphrase-file",
    )?;
    let old = unlock.credential()?;
    if old.path() == new.path() {
        return Err(AppError::Usage(
            "the new key must be a different file than the one that unlocks the volume".into(),
        ));
    }
    Ok(Volume::rekey(volume, &old, &new, &Argon2Params::DEFAULT)?)
}

/// `volume shred --mailbox M`: returns the number of messages made unreadable.
pub fn shred(
    volume: &Path,
    unlock: &UnlockArgs,
    s3: &S3Args,
    mailbox: &MailboxAddr,
) -> Result<u64, AppError> {
    let v = open_with_s3(volume, unlock, s3)?;
    let n = v.shred_mailbox(mailbox)?;
    // An s3:// volume: the destroyed keys must be gone from the bucket's index too
    // before the admin is told so.
    v.flush_offsite()?;
    Ok(n)
}

/// The credential a new key is wrapped under: exactly one of a key file and a passphrase
/// file (`flags` names the two options for the error).
fn new_credential(
    key_file: Option<&Path>,
    passphrase_file: Option<&Path>,
    flags: &str,
) -> Result<Credential, AppError> {
    match (key_file, passphrase_file) {
        (Some(k), None) => Ok(Credential::KeyFile(k.to_path_buf())),
        (None, Some(p)) => Ok(Credential::Passphrase(p.to_path_buf())),
        _ => Err(AppError::Usage(format!("give exactly one of {flags}"))),
    }
}

/// What `volume rotate` gives a new key: exactly one mailbox or one tenant.
enum KeyScope<'a> {
    Mailbox(&'a MailboxAddr),
    Tenant(&'a str),
}

impl<'a> KeyScope<'a> {
    /// Refuses both or neither (before the volume is opened).
    fn of(mailbox: Option<&'a MailboxAddr>, tenant: Option<&'a str>) -> Result<Self, AppError> {
        match (mailbox, tenant) {
            (Some(m), None) => Ok(KeyScope::Mailbox(m)),
            (None, Some(t)) => Ok(KeyScope::Tenant(t)),
            _ => Err(AppError::Usage(
                "give exactly one of --mailbox, --tenant".into(),
            )),
        }
    }
}

/// `volume rotate --mailbox M | --tenant T`. For a customer-key tenant, `--mailbox`
/// needs no tenant key (the new generation is wrapped to its public key) and `--tenant`
/// needs `tenant_key` (it recomputes the index values from the messages' metadata).
pub fn rotate(
    volume: &Path,
    unlock: &UnlockArgs,
    tenant_key: Option<&Path>,
    mailbox: Option<&MailboxAddr>,
    tenant: Option<&str>,
) -> Result<RotateOutcome, AppError> {
    let scope = KeyScope::of(mailbox, tenant)?;
    let v = open_for_read(volume, unlock, tenant_key)?;
    Ok(match scope {
        KeyScope::Mailbox(m) => v.rotate_mailbox(m)?,
        KeyScope::Tenant(t) => v.rotate_tenant(t)?,
    })
}

/// `volume rotate --mailbox M | --tenant T --reencrypt`: new key generation(s), every
/// stored message re-encrypted under it, earlier generations dropped; resumes an
/// interrupted run. A customer-key tenant's mailboxes need `tenant_key` (every message
/// is read).
pub fn rotate_reencrypt(
    volume: &Path,
    unlock: &UnlockArgs,
    tenant_key: Option<&Path>,
    mailbox: Option<&MailboxAddr>,
    tenant: Option<&str>,
) -> Result<ReencryptOutcome, AppError> {
    let scope = KeyScope::of(mailbox, tenant)?;
    let mut v = open_for_read(volume, unlock, tenant_key)?;
    Ok(match scope {
        KeyScope::Mailbox(m) => v.rotate_mailbox_reencrypt(m)?,
        KeyScope::Tenant(t) => v.rotate_tenant_reencrypt(t)?,
    })
}

/// `volume compact`: rewrites segments to drop shredded messages and unreferenced gaps.
///
/// An `s3://` volume compacts the segments of its working copy (sealed segments that
/// live only in the bucket are left as they are), then uploads the result.
pub fn compact(
    volume: &Path,
    unlock: &UnlockArgs,
    s3: &S3Args,
) -> Result<CompactOutcome, AppError> {
    let mut v = open_with_s3(volume, unlock, s3)?;
    let out = v.compact()?;
    v.flush_offsite()?;
    Ok(out)
}
