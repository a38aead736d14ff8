//! Admin accounts: name, role (with an approver's tenants), Argon2id password hash, TOTP
//! secret, and the login bookkeeping (last accepted TOTP step, failures in a row,
//! lockout), in `DIR/accounts.json` (mode 0600, changed under `DIR/accounts.lock`).
//!
//! Format version 2 added the approver role and its `tenants`; a version 1 file reads
//! as it is (no account had tenants) and is written back as version 2 at its next change.
//!
//! Checks a login (password, then TOTP); it does not make sessions
//! ([`super::session`] does) and does not audit (the caller records every outcome).
//!
//! The TOTP secret has to be kept readable to check codes: the file is the service's
//! own, 0600, in a 0700 directory. Passwords are never stored, only their hashes.
//! Secrets in memory are zeroized on drop and print as `[redacted]`.

use super::role::Role;
use mailferry_control::AppError;
use mailferry_core::secret::SecretBytes;
use mailferry_core::unix_now;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// File name of the accounts in the state directory.
pub const ACCOUNTS_FILE: &str = "accounts.json";
/// Format version of [`ACCOUNTS_FILE`] this code writes.
pub const VERSION: u32 = 2;
/// The oldest format version read (and upgraded on the next write).
pub const OLDEST_VERSION: u32 = 1;
/// TOTP issuer shown by authenticator apps.
pub const ISSUER: &str = "mailferry";

// Argon2id parameters (OWASP's minimum: 19 MiB, 2 passes, 1 lane).
const ARGON_M_KIB: u32 = 19 * 1024;
const ARGON_T: u32 = 2;
const ARGON_P: u32 = 1;

/// A password or TOTP secret in memory: zeroized on drop, `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    /// The secret itself. Call sites are the few that must show or check it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Read as a plain string (a login request's password and code).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// One account as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Account {
    /// Admin, auditor or approver.
    pub role: Role,
    /// An approver's tenants (mail domains, lowercase): the only ones whose lockbox
    /// requests it may decide. Empty for the other roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// `$argon2id$v=19$m=..,t=..,p=..$SALT$HASH` (base64, no padding).
    pub password_hash: String,
    /// Base32 TOTP secret (SHA-1, 6 digits, 30 s).
    pub totp_secret: String,
    /// The last TOTP time step accepted: a code of this step or an earlier one is refused.
    #[serde(default)]
    pub last_totp_step: Option<u64>,
    /// Failed logins since the last success or lockout.
    #[serde(default)]
    pub failures: u32,
    /// Locked until this Unix time.
    #[serde(default)]
    pub locked_until: Option<i64>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time the owner last set the password. `None`: the password is still the
    /// one-time password `mailferry admin add` printed (or the account predates this
    /// field, which was only ever set that way), and must be changed before anything
    /// else.
    #[serde(default)]
    pub password_changed_at: Option<String>,
    /// A new base32 TOTP secret shown to the owner and waiting for one valid code
    /// ([`Accounts::confirm_totp`]); the old secret stays in force until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_totp_secret: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("role", &self.role)
            .field("tenants", &self.tenants)
            .field("password_hash", &"[redacted]")
            .field("totp_secret", &"[redacted]")
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .field("password_changed_at", &self.password_changed_at)
            .finish_non_exhaustive()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.totp_secret.zeroize();
        self.password_hash.zeroize();
        if let Some(p) = &mut self.pending_totp_secret {
            p.zeroize();
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    version: u32,
    accounts: BTreeMap<String, Account>,
}

/// What a new account's owner needs, shown once by `mailferry admin add`.
#[derive(Debug)]
pub struct NewAccount {
    /// The generated password.
    pub password: Secret,
    /// `otpauth://totp/...` for authenticator apps (holds the TOTP secret).
    pub otpauth: Secret,
}

/// Why a login was refused (the audit record's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such account.
    UnknownAccount,
    /// Wrong password.
    BadPassword,
    /// Wrong or malformed TOTP code.
    BadTotp,
    /// A code of a step already used.
    ReusedTotp,
    /// Locked after too many failures.
    Locked,
    /// A TOTP confirmation without a re-enrolment under way.
    NoEnrolment,
}

impl Refusal {
    /// snake_case name for the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownAccount => "unknown_account",
            Refusal::BadPassword => "bad_password",
            Refusal::BadTotp => "bad_totp",
            Refusal::ReusedTotp => "reused_totp",
            Refusal::Locked => "locked",
            Refusal::NoEnrolment => "no_enrolment",
        }
    }
}

/// The outcome of a refused login.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// This failure locked the account (or it was locked already).
    pub locked_for: Option<Duration>,
}

/// An accepted login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginOk {
    /// The account's role.
    pub role: Role,
    /// The password is still the one-time password: nothing but changing it is allowed.
    pub must_change_password: bool,
}

/// Shortest new password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest new password accepted (Argon2id hashes anything, but a form field is no file).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks a new password before it is hashed: long enough, typed the same twice, and
/// not the current one. The message says what to do.
pub fn check_new_password(new: &str, confirm: &str, current: &str) -> Result<(), String> {
    let n = new.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the new password has {n} characters: use at least {MIN_PASSWORD_CHARS} (a passphrase of a few words is easiest to type)"
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(format!(
            "the new password is longer than {MAX_PASSWORD_CHARS} characters: use a shorter one"
        ));
    }
    if new != confirm {
        return Err("the two new passwords differ: type the same new password twice".into());
    }
    if new == current {
        return Err("the new password is the current one: choose a different password".into());
    }
    Ok(())
}

/// The accounts of a state directory.
#[derive(Debug)]
pub struct Accounts {
    path: PathBuf,
    lock_path: PathBuf,
}

/// Checks an account name: 1 to 64 letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AppError::Usage(format!(
            "account name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// Checks an account's tenants against its role: an approver needs at least one mail
/// domain, the other roles none. Returns them lowercased, sorted, without repeats.
pub fn check_tenants(role: Role, tenants: &[String]) -> Result<Vec<String>, AppError> {
    let mut out: Vec<String> = tenants
        .iter()
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    match role {
        Role::Approver if out.is_empty() => Err(AppError::Usage(
            "an approver decides for named tenants only: give at least one --tenant DOMAIN (e.g. --tenant example.com)".into(),
        )),
        Role::Approver => {
            for t in &out {
                let ok = t.len() <= 253
                    && t.contains('.')
                    && t.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !ok {
                    return Err(AppError::Usage(format!(
                        "tenant {t:?}: give a mail domain such as example.com"
                    )));
                }
            }
            Ok(out)
        }
        _ if !out.is_empty() => Err(AppError::Usage(format!(
            "only an approver has tenants; a {} account acts on the whole service: leave out --tenant",
            role.as_str()
        ))),
        _ => Ok(out),
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

/// Hashes `password` with Argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    use base64::Engine;
    let salt = SecretBytes::random(16);
    let mut out = Zeroizing::new([0u8; 32]);
    argon(
        password,
        salt.expose(),
        &mut *out,
        ARGON_M_KIB,
        ARGON_T,
        ARGON_P,
    )?;
    Ok(format!(
        "$argon2id$v=19$m={ARGON_M_KIB},t={ARGON_T},p={ARGON_P}${}${}",
        b64().encode(salt.expose()),
        b64().encode(*out)
    ))
}

fn argon(pw: &str, salt: &[u8], out: &mut [u8], m: u32, t: u32, p: u32) -> Result<(), AppError> {
    let params = argon2::Params::new(m, t, p, Some(out.len()))
        .map_err(|e| AppError::Failed(format!("argon2 parameters: {e}")))?;
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(pw.as_bytes(), salt, out)
        .map_err(|e| AppError::Failed(format!("argon2: {e}")))
}

/// Checks `password` against a hash made by [`hash_password`] (constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use base64::Engine;
    let parts: Vec<&str> = hash.split('$').collect();
    // ["", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash]
    if parts.len() != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
        return false;
    }
    let mut m = 0;
    let mut t = 0;
    let mut p = 0;
    for kv in parts[3].split(',') {
        match kv.split_once('=') {
            Some(("m", v)) => m = v.parse().unwrap_or(0),
            Some(("t", v)) => t = v.parse().unwrap_or(0),
            Some(("p", v)) => p = v.parse().unwrap_or(0),
            _ => return false,
        }
    }
    let (Ok(salt), Ok(want)) = (b64().decode(parts[4]), b64().decode(parts[5])) else {
        return false;
    };
    if want.is_empty() || want.len() > 64 {
        return false;
    }
    let mut got = Zeroizing::new(vec![0u8; want.len()]);
    if argon(password, &salt, &mut got, m, t, p).is_err() {
        return false;
    }
    got.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The TOTP checker of a base32 secret: SHA-1, 6 digits, 30 s steps, ±1 step.
pub fn totp(secret_b32: &str) -> Result<totp_rs::Totp, AppError> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32)
        .map_err(|e| AppError::Failed(format!("stored TOTP secret unreadable: {e}")))?;
    totp_rs::Builder::new()
        .with_secret(secret.as_ref().to_vec())
        .build()
        .map_err(|e| AppError::Failed(format!("stored TOTP secret refused: {e}")))
}

/// The `otpauth://` URI of an account.
pub fn otpauth_uri(name: &str, secret_b32: &str) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(ISSUER),
        enc(name),
        enc(ISSUER)
    )
}

/// `text` as a QR code drawn with Unicode half blocks, for a terminal.
pub fn qr_text(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

/// A random password: 24 characters of URL-safe base64 (144 bits).
fn random_password() -> Secret {
    use base64::Engine;
    let b = SecretBytes::random(18);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.expose()))
}

impl Accounts {
    /// The accounts of state directory `dir` (the file is created on first use).
    pub fn open(dir: &Path) -> Result<Accounts, AppError> {
        Ok(Accounts {
            path: dir.join(ACCOUNTS_FILE),
            lock_path: dir.join("accounts.lock"),
        })
    }

    fn load(&self) -> Result<AccountsFile, AppError> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                let f: AccountsFile = serde_json::from_slice(&b).map_err(|e| {
                    AppError::Failed(format!("{}: unreadable: {e}", self.path.display()))
                })?;
                if !(OLDEST_VERSION..=VERSION).contains(&f.version) {
                    return Err(AppError::Usage(format!(
                        "{}: format version {}, this mailferry reads versions {OLDEST_VERSION} to {VERSION}; use the mailferry that wrote it",
                        self.path.display(),
                        f.version
                    )));
                }
                // Version 1 differs only by lacking `tenants` (read as empty): the next
                // save writes version 2.
                let mut f = f;
                f.version = VERSION;
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccountsFile {
                version: VERSION,
                accounts: BTreeMap::new(),
            }),
            Err(e) => Err(AppError::io(&self.path, e)),
        }
    }

    fn save(&self, f: &AccountsFile) -> Result<(), AppError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(f).expect("accounts serialize"));
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| AppError::io(&tmp, e))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| AppError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| AppError::io(&self.path, e))
    }

    /// Runs `f` on the accounts under the lock and saves them if it returns `Ok`.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut AccountsFile) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| AppError::io(&self.lock_path, e))?;
        lock.lock().map_err(|e| AppError::io(&self.lock_path, e))?;
        let mut file = self.load()?;
        let out = f(&mut file)?;
        self.save(&file)?;
        Ok(out)
    }

    /// Creates account `name` with a random one-time password and a TOTP secret, shown
    /// once. The password must be changed at the first login.
    pub fn add(&self, name: &str, role: Role) -> Result<NewAccount, AppError> {
        self.add_with_tenants(name, role, &[])
    }

    /// [`Accounts::add`] with the tenants (mail domains) of an approver: an approver
    /// needs at least one, the other roles none.
    pub fn add_with_tenants(
        &self,
        name: &str,
        role: Role,
        tenants: &[String],
    ) -> Result<NewAccount, AppError> {
        check_name(name)?;
        let tenants = check_tenants(role, tenants)?;
        let password = random_password();
        let hash = hash_password(password.expose())?;
        let secret =
            Secret::new(totp_rs::Secret::from(SecretBytes::random(20).expose()).to_base32());
        let otpauth = Secret::new(otpauth_uri(name, secret.expose()));
        self.update(|f| {
            if f.accounts.contains_key(name) {
                return Err(AppError::Usage(format!(
                    "account {name} already exists in {}; pick another name",
                    self.path.display()
                )));
            }
            f.accounts.insert(
                name.to_string(),
                Account {
                    role,
                    tenants,
                    password_hash: hash,
                    totp_secret: secret.expose().to_string(),
                    last_totp_step: None,
                    failures: 0,
                    locked_until: None,
                    created_at: mailferry_core::rfc3339(unix_now()),
                    password_changed_at: None,
                    pending_totp_secret: None,
                },
            );
            Ok(())
        })?;
        Ok(NewAccount { password, otpauth })
    }

    /// The role of `name`, if it exists.
    pub fn role(&self, name: &str) -> Result<Option<Role>, AppError> {
        Ok(self.load()?.accounts.get(name).map(|a| a.role))
    }

    /// The tenants an approver account `name` may decide for (empty for other roles
    /// and unknown accounts).
    pub fn tenants(&self, name: &str) -> Result<Vec<String>, AppError> {
        Ok(self
            .load()?
            .accounts
            .get(name)
            .map(|a| a.tenants.clone())
            .unwrap_or_default())
    }

    /// Checks a fresh TOTP code of `name` (step-up before a sensitive action, such as a
    /// lockbox approval): a code of a step already used is refused, and a failure counts
    /// towards the lockout like a failed login.
    pub fn check_totp(
        &self,
        name: &str,
        code: &str,
        limits: &Limits,
    ) -> Result<Result<(), Refused>, AppError> {
        self.update(|f| {
            let a = known(f, name)?;
            if let Some(r) = locked(a, limits) {
                return Ok(Err(r));
            }
            Ok(match check_code(a, code, limits.now)? {
                None => {
                    a.failures = 0;
                    Ok(())
                }
                Some(reason) => Err(fail(a, reason, limits)),
            })
        })
    }

    /// Every account: name and role.
    pub fn list(&self) -> Result<Vec<(String, Role)>, AppError> {
        Ok(self
            .load()?
            .accounts
            .iter()
            .map(|(n, a)| (n.clone(), a.role))
            .collect())
    }

    /// Checks a login: lockout, then password, then TOTP (a step already used is
    /// refused). Failures count towards the lockout: `max_failures` in a row lock the
    /// account for `lockout`. Blocking (Argon2id): call from `spawn_blocking`.
    pub fn check_login(
        &self,
        name: &str,
        password: &str,
        code: &str,
        now: i64,
        max_failures: u32,
        lockout: Duration,
    ) -> Result<Result<LoginOk, Refused>, AppError> {
        let limits = Limits {
            now,
            max_failures,
            lockout,
        };
        self.update(|f| {
            let Some(a) = f.accounts.get_mut(name) else {
                // Same work as a real check, so timing does not tell names apart.
                let _ = verify_password(password, DUMMY_HASH);
                return Ok(Err(Refused {
                    reason: Refusal::UnknownAccount,
                    locked_for: None,
                }));
            };
            Ok(verify(a, password, Some(code), &limits)?.map(|()| LoginOk {
                role: a.role,
                must_change_password: a.password_changed_at.is_none(),
            }))
        })
    }

    /// Whether `name` must still change its one-time password.
    pub fn must_change_password(&self, name: &str) -> Result<bool, AppError> {
        Ok(self
            .load()?
            .accounts
            .get(name)
            .is_some_and(|a| a.password_changed_at.is_none()))
    }

    /// Sets a new password after checking the current one and, when given, a fresh
    /// TOTP code (the first, forced change needs none: the session has just been opened
    /// with one, and every code works only once). Failures count towards the lockout.
    /// The new password must have passed [`check_new_password`]. Blocking (Argon2id).
    pub fn change_password(
        &self,
        name: &str,
        current: &str,
        code: Option<&str>,
        new: &str,
        limits: &Limits,
    ) -> Result<Result<(), Refused>, AppError> {
        let hash = hash_password(new)?;
        self.update(|f| {
            let a = known(f, name)?;
            if let Err(r) = verify(a, current, code, limits)? {
                return Ok(Err(r));
            }
            a.password_hash = hash;
            a.password_changed_at = Some(mailferry_core::rfc3339(limits.now));
            Ok(Ok(()))
        })
    }

    /// Starts a TOTP re-enrolment after checking the current password and TOTP code:
    /// a new secret is kept as pending and its `otpauth://` URI returned, to be shown
    /// once. The old secret stays in force until [`Accounts::confirm_totp`].
    pub fn begin_totp(
        &self,
        name: &str,
        current: &str,
        code: &str,
        limits: &Limits,
    ) -> Result<Result<Secret, Refused>, AppError> {
        let secret =
            Secret::new(totp_rs::Secret::from(SecretBytes::random(20).expose()).to_base32());
        self.update(|f| {
            let a = known(f, name)?;
            if let Err(r) = verify(a, current, Some(code), limits)? {
                return Ok(Err(r));
            }
            a.pending_totp_secret = Some(secret.expose().to_string());
            Ok(Ok(Secret::new(otpauth_uri(name, secret.expose()))))
        })
    }

    /// Puts the pending TOTP secret in force if `code` is a valid code of it (a step not
    /// used before on this account). A wrong code counts towards the lockout and keeps
    /// the old secret.
    pub fn confirm_totp(
        &self,
        name: &str,
        code: &str,
        limits: &Limits,
    ) -> Result<Result<(), Refused>, AppError> {
        self.update(|f| {
            let a = known(f, name)?;
            let Some(pending) = a.pending_totp_secret.clone().map(Secret::new) else {
                return Ok(Err(Refused {
                    reason: Refusal::NoEnrolment,
                    locked_for: None,
                }));
            };
            let t = totp(pending.expose())?;
            let reason = match t.check(code.trim(), limits.now.max(0) as u64) {
                None => Some(Refusal::BadTotp),
                Some(step) if a.last_totp_step.is_some_and(|l| step <= l) => {
                    Some(Refusal::ReusedTotp)
                }
                Some(step) => {
                    a.last_totp_step = Some(step);
                    None
                }
            };
            match reason {
                None => {
                    a.failures = 0;
                    a.totp_secret = pending.expose().to_string();
                    a.pending_totp_secret = None;
                    Ok(Ok(()))
                }
                Some(reason) => Ok(Err(fail(a, reason, limits))),
            }
        })
    }
}

/// The clock and lockout rules a credential check runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unix time now.
    pub now: i64,
    /// Failures in a row that lock the account.
    pub max_failures: u32,
    /// How long it stays locked.
    pub lockout: Duration,
}

fn known<'a>(f: &'a mut AccountsFile, name: &str) -> Result<&'a mut Account, AppError> {
    f.accounts.get_mut(name).ok_or_else(|| {
        AppError::Usage(format!(
            "account {name} no longer exists (deleted while logged in); log in again"
        ))
    })
}

/// `Some` refusal while the account is locked; clears a lock that has run out.
fn locked(a: &mut Account, l: &Limits) -> Option<Refused> {
    if let Some(until) = a.locked_until {
        if until > l.now {
            return Some(Refused {
                reason: Refusal::Locked,
                locked_for: Some(Duration::from_secs((until - l.now) as u64)),
            });
        }
        a.locked_until = None;
    }
    None
}

/// Checks a TOTP code of a step after the last one accepted (which it then becomes):
/// `None` if good, else why not. Counts nothing.
fn check_code(a: &mut Account, code: &str, now: i64) -> Result<Option<Refusal>, AppError> {
    let t = totp(&a.totp_secret)?;
    Ok(match t.check(code.trim(), now.max(0) as u64) {
        None => Some(Refusal::BadTotp),
        Some(step) if a.last_totp_step.is_some_and(|last| step <= last) => {
            Some(Refusal::ReusedTotp)
        }
        Some(step) => {
            a.last_totp_step = Some(step);
            None
        }
    })
}

/// Lockout, then password, then (when given) a TOTP code of a step not used before.
/// Success resets the failure count; a failure counts towards the lockout.
fn verify(
    a: &mut Account,
    password: &str,
    code: Option<&str>,
    l: &Limits,
) -> Result<Result<(), Refused>, AppError> {
    if let Some(r) = locked(a, l) {
        return Ok(Err(r));
    }
    let reason = if !verify_password(password, &a.password_hash) {
        Some(Refusal::BadPassword)
    } else if let Some(code) = code {
        check_code(a, code, l.now)?
    } else {
        None
    };
    Ok(match reason {
        None => {
            a.failures = 0;
            Ok(())
        }
        Some(reason) => Err(fail(a, reason, l)),
    })
}

/// Counts a failure; `max_failures` in a row lock the account.
fn fail(a: &mut Account, reason: Refusal, l: &Limits) -> Refused {
    a.failures += 1;
    let mut locked_for = None;
    if a.failures >= l.max_failures.max(1) {
        a.failures = 0;
        a.locked_until = Some(l.now + l.lockout.as_secs() as i64);
        locked_for = Some(l.lockout);
    }
    Refused { reason, locked_for }
}

// A valid hash of a random password, checked against for unknown names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$zvjS0qXh1n3Hqk4wqsl0c0S4Ty3l0o5F1Qn3d9m3tC0";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horse!", &h));
        assert!(!verify_password("x", "garbage"));
    }

    #[test]
    fn totp_rfc6238_vector() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T=59 -> 94287082
        // (8 digits); our 6-digit code is its last 6 digits.
        let s = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let t = totp(&s).unwrap();
        assert_eq!(t.generate(59).to_string(), "287082");
        assert_eq!(t.check("287082", 59 + 30), Some(1));
        assert_eq!(t.check("287082", 59 + 90), None);
    }

    #[test]
    fn reused_code_and_lockout() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::open(dir.path()).unwrap();
        let new = acc.add("alice", Role::Admin).unwrap();
        let secret = new.otpauth.expose().split("secret=").nth(1).unwrap();
        let secret = secret.split('&').next().unwrap().to_string();
        let t = totp(&secret).unwrap();
        let now = 1_800_000_000;
        let code = t.generate(now as u64).to_string();
        let pw = new.password.expose();
        let lock = Duration::from_secs(60);
        assert_eq!(
            acc.check_login("alice", pw, &code, now, 3, lock)
                .unwrap()
                .unwrap(),
            LoginOk {
                role: Role::Admin,
                must_change_password: true
            }
        );
        let r = acc
            .check_login("alice", pw, &code, now, 3, lock)
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::ReusedTotp);
        let r = acc
            .check_login("alice", "nope", &code, now, 3, lock)
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::BadPassword);
        let r = acc
            .check_login("alice", "nope", &code, now, 3, lock)
            .unwrap()
            .unwrap_err();
        assert!(r.locked_for.is_some());
        let code2 = t.generate(now as u64 + 30).to_string();
        let r = acc
            .check_login("alice", pw, &code2, now + 30, 3, lock)
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::Locked);
        assert!(acc
            .check_login("alice", pw, &code2, now + 61, 3, lock)
            .unwrap()
            .is_ok());
        let mode = std::fs::metadata(dir.path().join(ACCOUNTS_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert!(!format!("{new:?}").contains(pw));
    }

    /// The base32 secret of an otpauth:// URI (also used by the lockbox tests).
    pub(crate) fn secret_of(uri: &str) -> String {
        uri.split("secret=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn issue22_one_time_password_must_change_and_the_old_one_stops_working() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::open(dir.path()).unwrap();
        let new = acc.add("ann", Role::Admin).unwrap();
        let t = totp(&secret_of(new.otpauth.expose())).unwrap();
        let pw = new.password.expose().to_string();
        let now = 1_800_000_000;
        let l = |now| Limits {
            now,
            max_failures: 5,
            lockout: Duration::from_secs(60),
        };
        let code = |n: i64| t.generate(n as u64).to_string();
        let ok = acc
            .check_login("ann", &pw, &code(now), now, 5, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(ok.must_change_password);
        assert!(check_new_password("short", "short", &pw).is_err());
        assert!(
            check_new_password("a long new passphrase", "a long new passphrase!", &pw).is_err()
        );
        assert!(check_new_password(&pw, &pw, &pw).is_err());
        let r = acc
            .change_password("ann", "wrong", None, "a long new passphrase", &l(now))
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::BadPassword);
        assert!(acc.must_change_password("ann").unwrap());
        acc.change_password("ann", &pw, None, "a long new passphrase", &l(now))
            .unwrap()
            .unwrap();
        assert!(!acc.must_change_password("ann").unwrap());
        let n2 = now + 30;
        let r = acc
            .check_login("ann", &pw, &code(n2), n2, 5, Duration::from_secs(60))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            r.reason,
            Refusal::BadPassword,
            "the one-time password still works"
        );
        let ok = acc
            .check_login(
                "ann",
                "a long new passphrase",
                &code(n2),
                n2,
                5,
                Duration::from_secs(60),
            )
            .unwrap()
            .unwrap();
        assert!(!ok.must_change_password);
        // A later change needs a fresh code: the one of the last login is refused.
        let r = acc
            .change_password(
                "ann",
                "a long new passphrase",
                Some(&code(n2)),
                "another passphrase",
                &l(n2),
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::ReusedTotp);
        let text = std::fs::read_to_string(dir.path().join(ACCOUNTS_FILE)).unwrap();
        assert!(
            !text.contains("a long new passphrase"),
            "a password stored in clear"
        );
    }

    #[test]
    fn issue22_totp_reenrolment_takes_effect_only_after_a_valid_code() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::open(dir.path()).unwrap();
        let new = acc.add("ann", Role::Auditor).unwrap();
        let old = totp(&secret_of(new.otpauth.expose())).unwrap();
        let pw = new.password.expose().to_string();
        let now: i64 = 1_800_000_000;
        let l = |now| Limits {
            now,
            max_failures: 5,
            lockout: Duration::from_secs(60),
        };
        let r = acc
            .begin_totp("ann", &pw, "000000", &l(now))
            .unwrap()
            .unwrap_err();
        assert!(matches!(r.reason, Refusal::BadTotp | Refusal::ReusedTotp));
        let r = acc
            .confirm_totp("ann", "123456", &l(now))
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::NoEnrolment);
        let uri = acc
            .begin_totp("ann", &pw, &old.generate(now as u64).to_string(), &l(now))
            .unwrap()
            .unwrap();
        let fresh = totp(&secret_of(uri.expose())).unwrap();
        assert_ne!(secret_of(uri.expose()), secret_of(new.otpauth.expose()));
        // Not yet in force: the old secret still logs in, the new one does not.
        let n1 = now + 30;
        let r = acc
            .check_login(
                "ann",
                &pw,
                &fresh.generate(n1 as u64).to_string(),
                n1,
                5,
                Duration::from_secs(60),
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::BadTotp);
        acc.check_login(
            "ann",
            &pw,
            &old.generate(n1 as u64).to_string(),
            n1,
            5,
            Duration::from_secs(60),
        )
        .unwrap()
        .unwrap();
        let n2 = now + 60;
        let r = acc
            .confirm_totp("ann", "000000", &l(n2))
            .unwrap()
            .unwrap_err();
        assert_eq!(r.reason, Refusal::BadTotp);
        acc.confirm_totp("ann", &fresh.generate(n2 as u64).to_string(), &l(n2))
            .unwrap()
            .unwrap();
        let n3 = now + 90;
        let r = acc
            .check_login(
                "ann",
                &pw,
                &old.generate(n3 as u64).to_string(),
                n3,
                5,
                Duration::from_secs(60),
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(
            r.reason,
            Refusal::BadTotp,
            "the old authenticator entry still works"
        );
        acc.check_login(
            "ann",
            &pw,
            &fresh.generate(n3 as u64).to_string(),
            n3,
            5,
            Duration::from_secs(60),
        )
        .unwrap()
        .unwrap();
    }

    #[test]
    fn issue21_version_1_files_are_read_and_written_back_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let acc = Accounts::open(dir.path()).unwrap();
        let new = acc.add("ann", Role::Admin).unwrap();
        // Make it the file a mailferry before the approver role wrote.
        let path = dir.path().join(ACCOUNTS_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["version"] = 1.into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(acc.role("ann").unwrap(), Some(Role::Admin));
        assert!(acc.tenants("ann").unwrap().is_empty());
        acc.add_with_tenants(
            "pat",
            Role::Approver,
            &[" Example.COM ".into(), "example.com".into()],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(acc.tenants("pat").unwrap(), ["example.com"]);
        // ann still logs in after the upgrade.
        let t = totp(&secret_of(new.otpauth.expose())).unwrap();
        let now = 1_800_000_000;
        acc.check_login(
            "ann",
            new.password.expose(),
            &t.generate(now as u64).to_string(),
            now,
            5,
            Duration::from_secs(60),
        )
        .unwrap()
        .unwrap();
        v.get("accounts").unwrap();
        let mut future = v.clone();
        future["version"] = 3.into();
        std::fs::write(&path, serde_json::to_vec(&future).unwrap()).unwrap();
        assert!(acc
            .role("ann")
            .unwrap_err()
            .to_string()
            .contains("version 3"));
    }

    #[test]
    fn issue21_approvers_need_tenants_and_nobody_else_has_any() {
        assert!(check_tenants(Role::Approver, &[]).is_err());
        assert!(check_tenants(Role::Approver, &["not a domain".into()]).is_err());
        assert!(check_tenants(Role::Admin, &["example.com".into()]).is_err());
        assert_eq!(
            check_tenants(Role::Approver, &["b.org".into(), "A.com".into()]).unwrap(),
            ["a.com", "b.org"]
        );
        assert!(check_tenants(Role::Auditor, &[]).unwrap().is_empty());
    }
}
