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

/// Opens a volume with the embedded default profile's store settings.
pub fn open(volume: &Path, unlock: &UnlockArgs) -> Result<Volume, AppError> {
    Ok(Volume::open_with(
        volume,
        &unlock.credential()?,
        &Profile::embedded_default().store,
    )?)
}

/// [`open`], then hands the tenant key in `tenant_key` (if any) to the volume, so the
/// command can read that tenant's customer-key mailboxes. A key that is not the one
/// registered for its tenant is refused before anything is read.
pub fn open_for_read(
    volume: &Path,
    unlock: &UnlockArgs,
    tenant_key: Option<&Path>,
) -> Result<Volume, AppError> {
    let v = open(volume, unlock)?;
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
pub fn init(
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
pub fn require_recovery(volume: &Path, no_recovery_key: bool) -> Result<(), AppError> {
    if no_recovery_key || Volume::has_recovery_slot(volume)? {
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
pub fn shred(volume: &Path, unlock: &UnlockArgs, mailbox: &MailboxAddr) -> Result<u64, AppError> {
    Ok(open(volume, unlock)?.shred_mailbox(mailbox)?)
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

/// `volume rotate --mailbox M | --tenant T`.
pub fn rotate(
    volume: &Path,
    unlock: &UnlockArgs,
    mailbox: Option<&MailboxAddr>,
    tenant: Option<&str>,
) -> Result<RotateOutcome, AppError> {
    let scope = KeyScope::of(mailbox, tenant)?;
    let v = open(volume, unlock)?;
    Ok(match scope {
        KeyScope::Mailbox(m) => v.rotate_mailbox(m)?,
        KeyScope::Tenant(t) => v.rotate_tenant(t)?,
    })
}

/// `volume rotate --mailbox M | --tenant T --reencrypt`: new key generation(s), every
/// stored message re-encrypted under it, earlier generations dropped; resumes an
/// interrupted run.
pub fn rotate_reencrypt(
    volume: &Path,
    unlock: &UnlockArgs,
    mailbox: Option<&MailboxAddr>,
    tenant: Option<&str>,
) -> Result<ReencryptOutcome, AppError> {
    let scope = KeyScope::of(mailbox, tenant)?;
    let mut v = open(volume, unlock)?;
    Ok(match scope {
        KeyScope::Mailbox(m) => v.rotate_mailbox_reencrypt(m)?,
        KeyScope::Tenant(t) => v.rotate_tenant_reencrypt(t)?,
    })
}

/// `volume compact`: rewrites segments to drop shredded messages and unreferenced gaps.
pub fn compact(volume: &Path, unlock: &UnlockArgs) -> Result<CompactOutcome, AppError> {
    Ok(open(volume, unlock)?.compact()?)
}
