//! The lockbox as the admin service runs it, for the REST API and the pages alike:
//! each step opens the service's volume (its audit log records the step, and a grant
//! unlocks it) on a worker thread, runs the [`crate::lockbox`] step and closes it.
//!
//! The export streams a Maildir tar ([`crate::lockbox::tar`]) from the worker thread
//! into the response through a small channel: the volume stays open (and unlocked)
//! only for the download, and no plaintext is written to disk. Session, CSRF and the
//! role of the viewer are checked before these are called; the lockbox itself checks
//! the tenant scope, the two-person rule and the grant's time.

use crate::accounts::Limits;
use crate::lockbox::{self, AccessRequest, Actor, Ctx, Decision, NewRequest, State};
use crate::{AdminError, AdminState, Viewer};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::io::Write;

fn actor(v: &Viewer) -> Actor {
    Actor {
        name: v.name.clone(),
        role: v.role,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::Internal(format!("worker thread failed: {e}")))?
}

/// Runs `f` with the step's context: the volume opened for it (409 while a pass holds
/// it), after a sweep of expired grants.
fn with_ctx<T>(
    st: &AdminState,
    f: impl FnOnce(&Ctx<'_>) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let cfg = st.config();
    let volume = lockbox::open_volume(&cfg.volume, &cfg.key_file)?;
    in_ctx(st, &volume, f)
}

/// [`with_ctx`] with a volume the caller keeps open.
fn in_ctx<T>(
    st: &AdminState,
    volume: &mailferry_store::Volume,
    f: impl FnOnce(&Ctx<'_>) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let now = mailferry_core::unix_now();
    st.lockbox().sweep(Some(volume), st.audit(), now)?;
    f(&Ctx {
        accounts: st.accounts(),
        audit: st.audit(),
        volume,
        now,
    })
}

/// A request as the API and the pages show it: its state at the time of asking.
#[derive(Clone, Debug, Serialize)]
pub struct AccessView {
    /// The request (its `state` as recorded).
    #[serde(flatten)]
    pub request: AccessRequest,
    /// Its state now (an approved grant past its expiry is expired).
    pub state_now: State,
    /// Seconds of the grant left, while it is granted.
    pub seconds_left: Option<i64>,
}

impl AccessView {
    /// The view of `r` at `now`.
    pub fn at(r: AccessRequest, now: i64) -> AccessView {
        let state_now = r.state_at(now);
        AccessView {
            seconds_left: (state_now == State::Approved)
                .then(|| r.expires.map(|e| e - now))
                .flatten(),
            state_now,
            request: r,
        }
    }
}

/// Deletes the one-time keys of grants past their expiry, without opening the volume
/// (so it never competes with a pass for it): the service runs this on a timer, so an
/// expired grant's key is gone within seconds even if nobody looks. The expiry records
/// follow at the next [`sweep`] (any list, page view or step).
pub async fn delete_expired_keys(state: &AdminState) -> Result<(), AdminError> {
    let st = state.clone();
    blocking(move || {
        let now = mailferry_core::unix_now();
        if st.lockbox().sweep_due(now)? {
            st.lockbox().sweep(None, st.audit(), now)?;
        }
        Ok(())
    })
    .await
}

/// Ends expired grants: their keys always, their records when the volume is free.
pub async fn sweep(state: &AdminState) -> Result<(), AdminError> {
    let st = state.clone();
    blocking(move || {
        let now = mailferry_core::unix_now();
        if !st.lockbox().sweep_due(now)? {
            return Ok(());
        }
        let cfg = st.config();
        match lockbox::open_volume(&cfg.volume, &cfg.key_file) {
            Ok(v) => st.lockbox().sweep(Some(&v), st.audit(), now)?,
            // A pass holds the volume: the records follow at a later sweep.
            Err(_) => st.lockbox().sweep(None, st.audit(), now)?,
        };
        Ok(())
    })
    .await
}

/// Every request, newest first (after a sweep).
pub async fn list(state: &AdminState) -> Result<Vec<AccessView>, AdminError> {
    sweep(state).await?;
    let now = mailferry_core::unix_now();
    Ok(state
        .lockbox()
        .list()?
        .into_iter()
        .map(|r| AccessView::at(r, now))
        .collect())
}

/// Request `id` (after a sweep).
pub async fn get(state: &AdminState, id: &str) -> Result<AccessView, AdminError> {
    sweep(state).await?;
    Ok(AccessView::at(
        state.lockbox().get(id)?,
        mailferry_core::unix_now(),
    ))
}

/// The requests of one mailbox, newest first.
pub async fn of_mailbox(state: &AdminState, mailbox: &str) -> Result<Vec<AccessView>, AdminError> {
    sweep(state).await?;
    let now = mailferry_core::unix_now();
    Ok(state
        .lockbox()
        .of_mailbox(mailbox)?
        .into_iter()
        .map(|r| AccessView::at(r, now))
        .collect())
}

/// Records a request of the viewer (an admin).
pub async fn request(
    state: &AdminState,
    v: &Viewer,
    n: NewRequest,
) -> Result<AccessView, AdminError> {
    let (st, a) = (state.clone(), actor(v));
    let r = blocking(move || with_ctx(&st, |ctx| st.lockbox().request(ctx, &a, &n))).await?;
    Ok(AccessView::at(r, mailferry_core::unix_now()))
}

/// A decision as a form or the API gives it.
pub struct DecisionInput {
    /// Approve (else deny).
    pub approve: bool,
    /// A fresh TOTP code of the approver.
    pub totp: zeroize::Zeroizing<String>,
    /// The tenant key file's bytes, for a customer-key tenant (used in memory only).
    pub tenant_key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// Approves or denies request `id`: the viewer's fresh TOTP code first, then the
/// lockbox's checks.
pub async fn decide(
    state: &AdminState,
    v: &Viewer,
    id: &str,
    input: DecisionInput,
) -> Result<AccessView, AdminError> {
    let (st, a, id) = (state.clone(), actor(v), id.to_string());
    let r = blocking(move || {
        with_ctx(&st, |ctx| {
            let cfg = st.config();
            let limits = Limits {
                now: ctx.now,
                max_failures: cfg.max_failures,
                lockout: cfg.lockout,
            };
            st.lockbox().step_up(ctx, &a, &input.totp, &limits)?;
            let decision = if input.approve {
                let key = input
                    .tenant_key
                    .as_deref()
                    .filter(|k| !k.is_empty())
                    .map(|k| lockbox::parse_tenant_key(k))
                    .transpose()?;
                Decision::Approve(key)
            } else {
                Decision::Deny
            };
            st.lockbox().decide(ctx, &a, &id, decision)
        })
    })
    .await?;
    Ok(AccessView::at(r, mailferry_core::unix_now()))
}

// === the export ===

/// The response body: chunks a worker thread writes, in order.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A `Write` that sends 64 KiB chunks to a [`ChannelBody`] (blocking: a slow client
/// slows the export down instead of filling memory).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// Uses grant `id` for an export: checked and recorded ([`lockbox::Lockbox::open_grant`])
/// before the first byte, then the mailbox as a Maildir tar, streamed.
pub async fn export(state: &AdminState, v: &Viewer, id: &str) -> Result<Response, AdminError> {
    let (st, a, id) = (state.clone(), actor(v), id.to_string());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<String, AdminError>>();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let cfg = st.config();
        let opened = lockbox::open_volume(&cfg.volume, &cfg.key_file).and_then(|volume| {
            let o = in_ctx(&st, &volume, |ctx| {
                st.lockbox().open_grant(ctx, &a, &id, "export")
            })?;
            Ok((o, volume))
        });
        let (o, volume) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        if ready_tx.send(Ok(o.mailbox.to_string())).is_err() {
            return;
        }
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let res = lockbox::tar::write_mailbox(&volume, &o.mailbox, &mut w).and_then(|_| w.flush());
        if let Err(e) = res {
            tracing::warn!(grant = %id, "lockbox export stopped: {e}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mailbox = ready_rx
        .await
        .map_err(|_| AdminError::Internal("the export's worker thread failed".into()))??;
    let mut r = axum::body::Body::new(ChannelBody { rx }).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    let file = format!("{}-maildir.tar", mailbox.replace('@', "_at_"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
