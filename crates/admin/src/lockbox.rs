//! The lockbox: nobody opens a mailbox's content through the admin service without a
//! request that a second person approved, for a limited time, and every step is in
//! both audit logs.
//!
//! An admin requests access to one mailbox with a reason and a duration; an approver
//! of the mailbox's tenant (a mail domain; never the requester) approves or denies it
//! after re-entering a TOTP code; during the grant the requester can export the mailbox
//! (a streamed Maildir tar, [`tar`]); then the grant expires. Each step (request,
//! approval, denial, use, expiry, refusal) is one `admin.access.*` record in the admin
//! audit log ([`crate::audit`]) and one access record in the volume's audit log
//! ([`Volume::audit_access`]).
//!
//! The grant is cryptographic where the tenant holds its own key (`KeyLevel::Customer`):
//! the request makes a one-time X25519 key pair; the approver's tenant key unwraps the
//! mailbox keys and the store re-wraps them to the grant's public key
//! ([`Volume::grant_bundle`], bound to the grant id and expiry). The one-time private
//! half lives in `DIR/lockbox-keys/ID.key` (0600) only until the grant ends: denial
//! and expiry delete it, so an ended grant cannot decrypt anything even if the state
//! file were edited back. For a tenant under the volume key the grant is a recorded
//! permission only: the service holds the volume key and could read without it.
//!
//! State: `DIR/lockbox.json` (0600), changed under `DIR/lockbox.lock`. This module does
//! not check sessions, CSRF or passwords (the callers do: [`crate::session`] for the
//! web, a password-and-TOTP login for the CLI); it does check the role, the tenant
//! scope, the two-person rule and the grant's time, because those must hold whatever
//! the caller. It never logs or stores a tenant key.

pub mod tar;

#[cfg(test)]
mod tests;

use crate::accounts::{Accounts, Limits, Refusal};
use crate::audit::AdminAudit;
use crate::role::Role;
use crate::AdminError;
use mailferry_control::AppError;
use mailferry_core::MailboxAddr;
pub use mailferry_store::TenantSecret;
use mailferry_store::{
    AccessEvent, GrantBundle, GrantPublic, GrantSecret, KeyLevel, ReadAccess, Volume,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// File name of the lockbox state in the state directory.
pub const LOCKBOX_FILE: &str = "lockbox.json";
/// Directory of the grants' one-time private keys in the state directory.
pub const KEYS_DIR: &str = "lockbox-keys";
/// A request nobody approved or denied within this time lapses (state `expired`, its
/// one-time key deleted): a decision should answer a need of the moment, not approve a
/// stale request weeks later, and the key must not wait on disk forever.
pub const PENDING_LAPSE_SECS: i64 = 24 * 3600;
/// Format version of [`LOCKBOX_FILE`].
pub const VERSION: u32 = 1;
/// Shortest grant.
pub const MIN_DURATION_SECS: u64 = 10;
/// Longest grant: a week. Longer is standing access by another name.
pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;
/// Longest reason.
pub const MAX_REASON_CHARS: usize = 500;

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for an approver.
    Pending,
    /// Approved: a grant until its expiry.
    Approved,
    /// Denied by an approver.
    Denied,
    /// The grant ran out.
    Expired,
}

impl State {
    /// snake_case name (API, audit records).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
        }
    }

    /// The state in the pages' words.
    pub fn label(self) -> &'static str {
        match self {
            State::Pending => "Waiting for approval",
            State::Approved => "Granted",
            State::Denied => "Denied",
            State::Expired => "Expired",
        }
    }
}

/// One use of a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Use {
    /// Unix time.
    pub at: i64,
    /// The account.
    pub by: String,
    /// What was done (`export`).
    pub action: String,
}

/// A request and, once approved, its grant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Random id (12 hex digits), bound into the grant's cryptography.
    pub id: String,
    /// The mailbox.
    pub mailbox: String,
    /// Its tenant (the mailbox's domain).
    pub tenant: String,
    /// Who asked.
    pub requester: String,
    /// Why.
    pub reason: String,
    /// How long the grant lasts once approved.
    pub duration_secs: u64,
    /// Unix time of the request.
    pub requested_at: i64,
    /// Where it is, as last recorded (see [`AccessRequest::state_at`]).
    pub state: State,
    /// `volume` or `customer`: who holds the key the mailbox's content is under.
    pub key_level: String,
    /// The tenant key's fingerprint, for a customer-key tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_fingerprint: Option<String>,
    /// The grant's one-time public key (hex).
    pub grant_public: String,
    /// The approver or denier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Unix time of the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// Unix time the grant ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The mailbox keys wrapped to the grant's public key (customer-key tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<GrantBundle>,
    /// Every use of the grant.
    #[serde(default)]
    pub uses: Vec<Use>,
}

impl AccessRequest {
    /// The state at `now`: a grant past its expiry is expired, even before
    /// [`Lockbox::sweep`] has recorded it.
    pub fn state_at(&self, now: i64) -> State {
        match (self.state, self.expires) {
            (State::Approved, Some(e)) if now >= e => State::Expired,
            (State::Pending, _) if now >= self.requested_at + PENDING_LAPSE_SECS => State::Expired,
            (s, _) => s,
        }
    }

    /// Whether a sweep at `now` has to end it: a grant past its expiry, or a request
    /// nobody decided in time.
    fn ends_at(&self, now: i64) -> bool {
        matches!(self.state, State::Approved | State::Pending)
            && self.state_at(now) == State::Expired
    }

    /// Whether the content is under the tenant's own key.
    pub fn customer_key(&self) -> bool {
        self.key_level == "customer"
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LockboxFile {
    version: u32,
    requests: Vec<AccessRequest>,
}

/// Who acts: an account and its role, from a session or a CLI login.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Account name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// What every step needs besides the lockbox state: the accounts (an approver's
/// tenants), the admin audit log, and the volume (opened by the caller with the volume
/// key) whose audit log records the step.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The accounts.
    pub accounts: &'a Accounts,
    /// The admin audit log.
    pub audit: &'a AdminAudit,
    /// The volume.
    pub volume: &'a Volume,
    /// Unix time now.
    pub now: i64,
}

/// A new request.
#[derive(Clone, Debug)]
pub struct NewRequest {
    /// The mailbox.
    pub mailbox: String,
    /// Why access is needed (shown to the approver, kept in both logs).
    pub reason: String,
    /// How long the grant lasts once approved.
    pub duration_secs: u64,
}

/// A decision on a pending request.
pub enum Decision {
    /// Approve; a customer-key tenant needs its key (used in memory, never stored).
    Approve(Option<TenantSecret>),
    /// Deny.
    Deny,
}

/// The lockbox of one state directory.
#[derive(Debug)]
pub struct Lockbox {
    path: PathBuf,
    lock_path: PathBuf,
    keys: PathBuf,
}

/// A grant opened for a use: the volume can read the mailbox now.
#[derive(Debug)]
pub struct Opened {
    /// The request.
    pub request: AccessRequest,
    /// Its mailbox.
    pub mailbox: MailboxAddr,
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    AdminError::Internal(e.to_string())
}

fn volume_error(ctx: &Ctx<'_>, e: mailferry_store::StoreError) -> AdminError {
    AdminError::Internal(format!(
        "volume {}: {e}; nothing was changed, try again",
        ctx.volume.dir().display()
    ))
}

/// A duration as people write it: `4h`, `30min`, `20s`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<u64, AdminError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        AdminError::invalid(format!(
            "duration {s:?}: {e}; write it like 4h, 30min or 20s"
        ))
    })?;
    Ok(d.as_secs())
}

impl Lockbox {
    /// The lockbox of state directory `dir` (files are created on first use).
    pub fn open(dir: &Path) -> Lockbox {
        Lockbox {
            path: dir.join(LOCKBOX_FILE),
            lock_path: dir.join("lockbox.lock"),
            keys: dir.join(KEYS_DIR),
        }
    }

    /// The one-time private key file of grant `id`.
    pub fn key_path(&self, id: &str) -> PathBuf {
        self.keys.join(format!("{id}.key"))
    }

    fn load(&self) -> Result<LockboxFile, AdminError> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                let f: LockboxFile = serde_json::from_slice(&b).map_err(|e| {
                    internal(format!(
                        "{}: unreadable: {e}; restore it from a backup",
                        self.path.display()
                    ))
                })?;
                if f.version != VERSION {
                    return Err(internal(format!(
                        "{}: format version {}, this mailferry reads version {VERSION}; use the mailferry that wrote it",
                        self.path.display(),
                        f.version
                    )));
                }
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockboxFile {
                version: VERSION,
                requests: Vec::new(),
            }),
            Err(e) => Err(internal(format!("{}: {e}", self.path.display()))),
        }
    }

    fn save(&self, f: &LockboxFile) -> Result<(), AdminError> {
        use std::io::Write;
        let bytes = serde_json::to_vec_pretty(f).expect("lockbox serializes");
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = mailferry_audit::private::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| internal(format!("{}: {e}", tmp.display())))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| internal(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| internal(format!("{}: {e}", self.path.display())))
    }

    /// Runs `f` under the lock and saves if it returns `Ok`.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut LockboxFile) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let lock = mailferry_audit::private::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| internal(format!("{}: {e}", self.lock_path.display())))?;
        lock.lock()
            .map_err(|e| internal(format!("{}: {e}", self.lock_path.display())))?;
        let mut file = self.load()?;
        let out = f(&mut file)?;
        self.save(&file)?;
        Ok(out)
    }

    /// Every request, newest first.
    pub fn list(&self) -> Result<Vec<AccessRequest>, AdminError> {
        let mut v = self.load()?.requests;
        v.reverse();
        Ok(v)
    }

    /// Request `id` (404 if there is none).
    pub fn get(&self, id: &str) -> Result<AccessRequest, AdminError> {
        self.load()?
            .requests
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| not_found(id))
    }

    /// The requests of one mailbox, newest first.
    pub fn of_mailbox(&self, mailbox: &str) -> Result<Vec<AccessRequest>, AdminError> {
        let m = mailbox.to_ascii_lowercase();
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.mailbox == m)
            .collect())
    }

    // === the steps ===

    /// Records a pending request of `actor` (an admin) and makes the grant's one-time
    /// key pair. Recorded as `admin.access.requested` and `Requested`.
    pub fn request(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        n: &NewRequest,
    ) -> Result<AccessRequest, AdminError> {
        let mailbox = MailboxAddr::parse(n.mailbox.trim()).map_err(|e| {
            AdminError::invalid(format!(
                "{e}; give the mailbox's address, such as alice@example.com"
            ))
        })?;
        if actor.role != Role::Admin {
            let e = AdminError::Forbidden(format!(
                "{} is an {}: only an admin requests access to a mailbox (an approver of its tenant then decides)",
                actor.name,
                actor.role.as_str()
            ));
            return Err(self.refuse(ctx, actor, &mailbox, None, "request", e));
        }
        let reason = n.reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(AdminError::invalid(format!(
                "give a reason of 1 to {MAX_REASON_CHARS} characters: the approver decides on it, and both audit logs keep it"
            )));
        }
        if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&n.duration_secs) {
            return Err(AdminError::invalid(format!(
                "a grant lasts from {MIN_DURATION_SECS} seconds to 7 days; {} s is outside that",
                n.duration_secs
            )));
        }
        let known = ctx.volume.mailboxes().map_err(|e| volume_error(ctx, e))?;
        if !known.contains(&mailbox) {
            return Err(AdminError::NotFound(format!(
                "the volume holds no mailbox {mailbox}; check the address (a mailbox is there once a move has stored into it)"
            )));
        }
        let (key_level, fingerprint) = match ctx
            .volume
            .key_level(&mailbox)
            .map_err(|e| volume_error(ctx, e))?
        {
            KeyLevel::Volume => ("volume", None),
            KeyLevel::Customer { fingerprint, .. } => ("customer", Some(fingerprint)),
        };
        let id = hex::encode(mailferry_core::secret::SecretBytes::random(6).expose());
        let secret = GrantSecret::generate();
        self.write_key(&id, &secret)?;
        let req = AccessRequest {
            id: id.clone(),
            mailbox: mailbox.to_string(),
            tenant: mailbox.domain().to_string(),
            requester: actor.name.clone(),
            reason: reason.to_string(),
            duration_secs: n.duration_secs,
            requested_at: ctx.now,
            state: State::Pending,
            key_level: key_level.into(),
            tenant_fingerprint: fingerprint,
            grant_public: secret.public().to_hex(),
            decided_by: None,
            decided_at: None,
            expires: None,
            bundle: None,
            uses: Vec::new(),
        };
        let saved = self.update(|f| {
            ctx.volume
                .audit_access(AccessEvent::Requested {
                    grant_id: id.clone(),
                    mailbox: mailbox.clone(),
                    requester: actor.name.clone(),
                    reason: req.reason.clone(),
                    duration_secs: req.duration_secs,
                })
                .map_err(|e| volume_error(ctx, e))?;
            f.requests.push(req.clone());
            Ok(())
        });
        if let Err(e) = saved {
            self.delete_key(&id);
            return Err(e);
        }
        ctx.audit.record(
            &actor.name,
            "admin.access.requested",
            json!({"grant_id": id, "mailbox": req.mailbox, "tenant": req.tenant, "reason": req.reason,
                   "duration_secs": req.duration_secs, "key_level": req.key_level}),
        )?;
        Ok(req)
    }

    /// Checks a fresh TOTP code of `actor` before a decision (step-up). A wrong or
    /// reused code is refused (403) and recorded as `admin.access.refused`; it counts
    /// towards the account's lockout.
    pub fn step_up(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        code: &str,
        limits: &Limits,
    ) -> Result<(), AdminError> {
        let refusal = if code.trim().is_empty() {
            Some((Refusal::BadTotp, None))
        } else {
            match ctx.accounts.check_totp(&actor.name, code, limits)? {
                Ok(()) => None,
                Err(r) => Some((r.reason, r.locked_for)),
            }
        };
        let Some((reason, locked_for)) = refusal else {
            return Ok(());
        };
        ctx.audit.refusal(
            &actor.name,
            "admin.access.refused",
            json!({"step": "step_up", "reason": reason.as_str(), "locked_for_seconds": locked_for.map(|d| d.as_secs())}),
        );
        Err(match locked_for {
            Some(d) => AdminError::Locked {
                name: actor.name.clone(),
                retry_after: d,
            },
            None => AdminError::Forbidden(
                "refused: a decision needs the code your authenticator app shows now (each code works once); type a fresh one"
                    .into(),
            ),
        })
    }

    /// Approves or denies pending request `id`. Only an approver of the request's
    /// tenant who is not its requester may (two people); the caller has checked a fresh
    /// TOTP code ([`Lockbox::step_up`]). Approving a customer-key tenant's request
    /// needs that tenant's key. Recorded as `admin.access.approved`/`denied` and
    /// `Approved`/`Denied`; a denial deletes the grant's private key.
    pub fn decide(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        id: &str,
        decision: Decision,
    ) -> Result<AccessRequest, AdminError> {
        let req = self.get(id)?;
        let mailbox = MailboxAddr::parse(&req.mailbox).map_err(internal)?;
        let approve = matches!(decision, Decision::Approve(_));
        let step = if approve { "approve" } else { "deny" };
        if let Err(e) = self.may_decide(ctx, actor, &req) {
            return Err(self.refuse(ctx, actor, &mailbox, Some(id), step, e));
        }
        if req.state_at(ctx.now) != State::Pending {
            return Err(AdminError::Conflict(format!(
                "request {id} is {}, not waiting for a decision; ask the requester to request again if access is still needed",
                req.state_at(ctx.now).as_str()
            )));
        }
        let expires = ctx.now + req.duration_secs as i64;
        let bundle = match (&decision, req.customer_key()) {
            (Decision::Approve(key), true) => {
                let Some(key) = key else {
                    return Err(AdminError::invalid(format!(
                        "{} holds its own key: approving needs the tenant key of {} (fingerprint {}), used only to re-wrap the mailbox keys to this grant and never stored",
                        req.tenant,
                        req.tenant,
                        req.tenant_fingerprint.as_deref().unwrap_or("unknown")
                    )));
                };
                if key.tenant() != req.tenant {
                    return Err(AdminError::invalid(format!(
                        "that key is the tenant key of {}, not of {}; give the key of {}",
                        key.tenant(),
                        req.tenant,
                        req.tenant
                    )));
                }
                let public = GrantPublic::from_hex(&req.grant_public).map_err(internal)?;
                let b = ctx
                    .volume
                    .grant_bundle(&mailbox, key, &public, id, expires as u64)
                    .map_err(|e| {
                        AdminError::invalid(format!(
                            "the tenant key could not open {}'s keys: {e}; check it is the current key of {}",
                            req.mailbox, req.tenant
                        ))
                    })?;
                Some(b)
            }
            _ => None,
        };
        let out = self.update(|f| {
            let r = f
                .requests
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| not_found(id))?;
            if r.state != State::Pending {
                return Err(AdminError::Conflict(format!(
                    "request {id} was decided meanwhile ({}); reload",
                    r.state.as_str()
                )));
            }
            let event = if approve {
                AccessEvent::Approved {
                    grant_id: id.to_string(),
                    mailbox: mailbox.clone(),
                    approver: actor.name.clone(),
                    expires: expires as u64,
                }
            } else {
                AccessEvent::Denied {
                    grant_id: id.to_string(),
                    mailbox: mailbox.clone(),
                    approver: actor.name.clone(),
                }
            };
            ctx.volume
                .audit_access(event)
                .map_err(|e| volume_error(ctx, e))?;
            r.state = if approve {
                State::Approved
            } else {
                State::Denied
            };
            r.decided_by = Some(actor.name.clone());
            r.decided_at = Some(ctx.now);
            if approve {
                r.expires = Some(expires);
                r.bundle = bundle;
            }
            Ok(r.clone())
        })?;
        if !approve {
            self.delete_key(id);
        }
        ctx.audit.record(
            &actor.name,
            if approve {
                "admin.access.approved"
            } else {
                "admin.access.denied"
            },
            json!({"grant_id": id, "mailbox": out.mailbox, "tenant": out.tenant, "requester": out.requester,
                   "expires": out.expires.map(mailferry_core::rfc3339), "key_level": out.key_level}),
        )?;
        Ok(out)
    }

    /// Why `actor` may not decide `req`, if not: the requester never (two people); an
    /// approver only for its tenants; nobody else.
    fn may_decide(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        req: &AccessRequest,
    ) -> Result<(), AdminError> {
        if actor.name == req.requester {
            return Err(AdminError::Forbidden(format!(
                "{} requested this access and cannot decide it: a second person, an approver of {}, must",
                actor.name, req.tenant
            )));
        }
        if actor.role != Role::Approver {
            return Err(AdminError::Forbidden(format!(
                "{} is an {}: only an approver of {} decides lockbox requests",
                actor.name,
                actor.role.as_str(),
                req.tenant
            )));
        }
        let tenants = ctx.accounts.tenants(&actor.name)?;
        if !tenants.contains(&req.tenant) {
            return Err(AdminError::Forbidden(format!(
                "{} approves for {} only, not for {}: an approver of {} must decide",
                actor.name,
                if tenants.is_empty() {
                    "no tenant".to_string()
                } else {
                    tenants.join(", ")
                },
                req.tenant,
                req.tenant
            )));
        }
        Ok(())
    }

    /// Opens grant `id` for one use by its requester: checks it is approved and not
    /// expired, unlocks the volume's read keys of the mailbox with the grant's one-time
    /// key (customer-key tenants) and records the use (`admin.access.used`, `Used`).
    /// Outside a grant the refusal is recorded in both logs.
    pub fn open_grant(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        id: &str,
        action: &str,
    ) -> Result<Opened, AdminError> {
        let req = self.get(id)?;
        let mailbox = MailboxAddr::parse(&req.mailbox).map_err(internal)?;
        let state = req.state_at(ctx.now);
        let refusal = if actor.name != req.requester {
            Some(AdminError::Forbidden(format!(
                "grant {id} is {}'s: only the account that requested it may use it; request access of your own",
                req.requester
            )))
        } else if state != State::Approved {
            Some(AdminError::Conflict(match state {
                State::Pending => format!("request {id} is still waiting for an approver of {}: nothing can be read before it is approved", req.tenant),
                State::Denied => format!("request {id} was denied: nothing can be read; request again with a new reason if access is still needed"),
                _ => format!("grant {id} has expired: nothing can be read any more; request access again if it is still needed"),
            }))
        } else {
            None
        };
        if let Some(e) = refusal {
            return Err(self.refuse(ctx, actor, &mailbox, Some(id), action, e));
        }
        if req.customer_key() {
            let secret = self.read_key(id)?;
            let bundle = req
                .bundle
                .clone()
                .ok_or_else(|| internal(format!("grant {id} has no key bundle; request again")))?;
            if let Err(e) = ctx.volume.unlock(ReadAccess::Grant {
                secret,
                bundle,
                now: ctx.now as u64,
            }) {
                let e = AdminError::Conflict(format!(
                    "grant {id} could not open {}: {e}; request access again",
                    req.mailbox
                ));
                return Err(self.refuse(ctx, actor, &mailbox, Some(id), action, e));
            }
        }
        let request = self.update(|f| {
            let r = f
                .requests
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| not_found(id))?;
            ctx.volume
                .audit_access(AccessEvent::Used {
                    grant_id: id.to_string(),
                    mailbox: mailbox.clone(),
                    action: action.to_string(),
                })
                .map_err(|e| volume_error(ctx, e))?;
            r.uses.push(Use {
                at: ctx.now,
                by: actor.name.clone(),
                action: action.to_string(),
            });
            Ok(r.clone())
        })?;
        ctx.audit.record(
            &actor.name,
            "admin.access.used",
            json!({"grant_id": id, "mailbox": request.mailbox, "action": action,
                   "expires": request.expires.map(mailferry_core::rfc3339)}),
        )?;
        Ok(Opened { request, mailbox })
    }

    /// Ends the grants past their expiry and the requests nobody decided within
    /// [`PENDING_LAPSE_SECS`]: deletes their one-time keys and, with the volume at hand,
    /// records `admin.access.expired` and `Expired` once per request.
    /// Without the volume (a pass holds it) only the keys go; the records follow at a
    /// later sweep. Returns the ids recorded as expired now.
    pub fn sweep(
        &self,
        volume: Option<&Volume>,
        audit: &AdminAudit,
        now: i64,
    ) -> Result<Vec<String>, AdminError> {
        let due: Vec<AccessRequest> = self
            .load()?
            .requests
            .into_iter()
            .filter(|r| r.ends_at(now))
            .collect();
        for r in &due {
            self.delete_key(&r.id);
        }
        let Some(volume) = volume else {
            return Ok(Vec::new());
        };
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let ended = self.update(|f| {
            let mut ended = Vec::new();
            for r in f.requests.iter_mut() {
                if r.ends_at(now) {
                    let mailbox = MailboxAddr::parse(&r.mailbox).map_err(internal)?;
                    volume
                        .audit_access(AccessEvent::Expired {
                            grant_id: r.id.clone(),
                            mailbox,
                        })
                        .map_err(|e| internal(format!("volume audit log: {e}")))?;
                    r.state = State::Expired;
                    ended.push(r.clone());
                }
            }
            Ok(ended)
        })?;
        for r in &ended {
            audit.record(
                "lockbox",
                "admin.access.expired",
                json!({"grant_id": r.id, "mailbox": r.mailbox, "requester": r.requester,
                       "expires": r.expires.map(mailferry_core::rfc3339), "uses": r.uses.len(),
                       "undecided": r.decided_at.is_none()}),
            )?;
        }
        Ok(ended.into_iter().map(|r| r.id).collect())
    }

    /// Whether a sweep with the volume has something to record.
    pub fn sweep_due(&self, now: i64) -> Result<bool, AdminError> {
        Ok(self.load()?.requests.iter().any(|r| r.ends_at(now)))
    }

    /// Records a refusal in both logs and returns it. A refusal that cannot be recorded
    /// in the volume's log is still returned (and logged).
    fn refuse(
        &self,
        ctx: &Ctx<'_>,
        actor: &Actor,
        mailbox: &MailboxAddr,
        id: Option<&str>,
        step: &str,
        e: AdminError,
    ) -> AdminError {
        // The volume's log names mailboxes and tenants by pseudonym only: no names here.
        let needed = match step {
            "request" => "a request by an admin",
            "approve" | "deny" => {
                "a decision by an approver of the mailbox's tenant other than the requester"
            }
            _ => "an approved, unexpired grant used by its requester",
        }
        .to_string();
        if let Err(err) = ctx.volume.audit_access(AccessEvent::Refused {
            mailbox: mailbox.clone(),
            needed: needed.clone(),
        }) {
            tracing::error!("recording a lockbox refusal in the volume's audit log: {err}");
        }
        ctx.audit.refusal(
            &actor.name,
            "admin.access.refused",
            json!({"grant_id": id, "mailbox": mailbox.as_str(), "step": step, "code": e.code(),
                   "needed": needed, "reason": e.to_string()}),
        );
        e
    }

    // === the one-time keys ===

    fn write_key(&self, id: &str, secret: &GrantSecret) -> Result<(), AdminError> {
        use std::io::Write;
        mailferry_audit::private::create_dir_all(&self.keys)
            .map_err(|e| internal(format!("{}: {e}", self.keys.display())))?;
        let path = self.key_path(id);
        let hex = zeroize::Zeroizing::new(hex::encode(*secret.to_bytes()));
        let mut f = mailferry_audit::private::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| internal(format!("{}: {e}", path.display())))?;
        f.write_all(hex.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| internal(format!("{}: {e}", path.display())))
    }

    fn read_key(&self, id: &str) -> Result<GrantSecret, AdminError> {
        let path = self.key_path(id);
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
            AdminError::Conflict(format!(
                "grant {id}: its one-time key is gone ({}: {e}); the grant cannot be used, request access again",
                path.display()
            ))
        })?);
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut *bytes)
            .map_err(|e| internal(format!("{}: not a grant key: {e}", path.display())))?;
        Ok(GrantSecret::from_bytes(*bytes))
    }

    /// Deletes grant `id`'s one-time private key (done when the grant ends). A failure
    /// is logged: the grant is refused by its state and expiry anyway.
    fn delete_key(&self, id: &str) {
        let path = self.key_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!("deleting the grant key {}: {e}", path.display()),
        }
    }
}

/// A tenant key from the content of its file (an upload, or a field of an API call),
/// checked like [`TenantSecret::load`] checks a file (one parser, the store's). The text
/// is zeroized by the caller; nothing is written anywhere.
pub fn parse_tenant_key(bytes: &[u8]) -> Result<TenantSecret, AdminError> {
    TenantSecret::parse(bytes, std::path::Path::new("(the uploaded file)")).map_err(|e| {
        AdminError::invalid(format!(
            "{e}; give the file `tenant key init` wrote for this tenant"
        ))
    })
}

/// Checks a command-line login the way the web login does (lockout, password, a TOTP
/// code of a step not used before, the one-time password replaced) and records it in
/// the admin audit log (`admin.login` with `via: cli`, or `admin.login.refused`). The
/// code is consumed: on the command line it is also the step-up code of a decision.
/// Blocking (Argon2id).
pub fn cli_login(
    accounts: &Accounts,
    audit: &AdminAudit,
    name: &str,
    password: &str,
    code: &str,
    now: i64,
) -> Result<Actor, AdminError> {
    // The service's defaults (`admin serve`): 5 failures lock for 15 minutes.
    let out = accounts.check_login(
        name,
        password,
        code,
        now,
        5,
        std::time::Duration::from_secs(15 * 60),
    )?;
    match out {
        Ok(ok) if ok.must_change_password => {
            audit.refusal(
                name,
                "admin.login.refused",
                json!({"reason": "password_change_required", "via": "cli"}),
            );
            Err(AdminError::PasswordChangeRequired {
                name: name.to_string(),
            })
        }
        Ok(ok) => {
            audit.record(
                name,
                "admin.login",
                json!({"role": ok.role.as_str(), "via": "cli"}),
            )?;
            Ok(Actor {
                name: name.to_string(),
                role: ok.role,
            })
        }
        Err(r) => {
            audit.refusal(
                name,
                "admin.login.refused",
                json!({"reason": r.reason.as_str(), "locked_for_seconds": r.locked_for.map(|d| d.as_secs()), "via": "cli"}),
            );
            Err(match (r.reason, r.locked_for) {
                (Refusal::Locked, Some(d)) => AdminError::Locked {
                    name: name.to_string(),
                    retry_after: d,
                },
                _ => AdminError::BadLogin,
            })
        }
    }
}

fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!(
        "no lockbox request {id}; list them on the access page (or GET /api/v1/access)"
    ))
}

/// Opens the service's volume for a lockbox step: 409 while a pass holds it.
pub fn open_volume(volume: &Path, key_file: &Path) -> Result<Volume, AdminError> {
    Volume::open(
        volume,
        key_file,
        &mailferry_core::profile::Profile::embedded_default().store,
    )
    .map_err(|e| {
        AdminError::Conflict(format!(
            "volume {}: {e} (the lockbox records every step in the volume's audit log; if a pass is running, try again when it ends)",
            volume.display()
        ))
    })
}

impl From<AdminError> for AppError {
    fn from(e: AdminError) -> AppError {
        match e {
            AdminError::Invalid { message, .. } | AdminError::BadRequest(message) => {
                AppError::Usage(message)
            }
            AdminError::Conflict(m) => AppError::Refused(m),
            other => AppError::Failed(other.to_string()),
        }
    }
}
