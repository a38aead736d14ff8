//! The writer lease: the `LEASE` object, taken with a conditional PUT (create if absent,
//! or replace an expired one only if its ETag is unchanged) and renewed the same way by
//! a thread, so two `serve`s on one prefix never both write. A writer that loses it
//! (renewal refused, or `MANIFEST` changed under it) is fenced: it uploads nothing more
//! and its batches are not acknowledged.

use crate::client::{Client, PutOutcome};
use crate::manifest::LEASE;
use crate::BucketError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The lease object's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    holder: String,
    expires_ms: u64,
}

/// A held lease and its renewal thread.
#[derive(Debug)]
pub(crate) struct Lease {
    holder: String,
    fenced: Arc<AtomicBool>,
    etag: Arc<Mutex<Option<String>>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    /// Set once the lease is lost.
    pub(crate) fn fenced(&self) -> Arc<AtomicBool> {
        self.fenced.clone()
    }

    /// Takes the lease for `holder`, waiting up to one lease time (plus 5 s) for one
    /// another process holds: a holder killed without releasing it lets it expire.
    pub(crate) fn acquire(
        client: &Arc<Client>,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, BucketError> {
        let deadline = now_ms() + ttl.as_millis() as u64 + 5000;
        let body = |exp: u64| {
            Bytes::from(
                serde_json::to_vec(&Body {
                    holder: holder.to_string(),
                    expires_ms: exp,
                })
                .expect("serializes"),
            )
        };
        let etag = loop {
            let current = client.get(LEASE)?;
            let (cond, wait_until) = match &current {
                None => (None, None),
                Some((bytes, etag)) => match serde_json::from_slice::<Body>(bytes) {
                    Ok(b) if b.holder != holder && b.expires_ms > now_ms() => {
                        (etag.clone(), Some((b.holder, b.expires_ms)))
                    }
                    _ => (etag.clone(), None),
                },
            };
            if let Some((other, until)) = wait_until {
                if now_ms() > deadline {
                    return Err(BucketError::Lease {
                        bucket: client.url().bucket.clone(),
                        prefix: client.url().prefix.clone(),
                        reason: format!("the writer lease is held by {other} (renewed until {until} ms since the epoch); stop that process (a volume is written by one process at a time) and try again"),
                    });
                }
                tracing::info!(holder = %other, "waiting for the writer lease of the bucket prefix to expire");
                std::thread::sleep(Duration::from_millis(
                    (until.saturating_sub(now_ms()) + 50).min(500),
                ));
                continue;
            }
            match client.put_if(
                LEASE,
                body(now_ms() + ttl.as_millis() as u64),
                cond.as_deref(),
            )? {
                PutOutcome::Written(Some(e)) => break Some(e),
                PutOutcome::Written(None) => break client.get(LEASE)?.and_then(|(_, e)| e),
                PutOutcome::Conflict => continue,
            }
        };
        let fenced = Arc::new(AtomicBool::new(false));
        let etag = Arc::new(Mutex::new(etag));
        let (stop, rx) = channel::<()>();
        let thread = {
            let (client, fenced, etag, holder) = (
                client.clone(),
                fenced.clone(),
                etag.clone(),
                holder.to_string(),
            );
            std::thread::Builder::new()
                .name("mf-bucket-lease".into())
                .spawn(move || {
                    let mut valid_until = now_ms() + ttl.as_millis() as u64;
                    loop {
                        match rx.recv_timeout(ttl / 3) {
                            Err(RecvTimeoutError::Timeout) => {}
                            _ => return,
                        }
                        let cur = etag.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let exp = now_ms() + ttl.as_millis() as u64;
                        let b = Bytes::from(
                            serde_json::to_vec(&Body { holder: holder.clone(), expires_ms: exp })
                                .expect("serializes"),
                        );
                        match client.put_if(LEASE, b, cur.as_deref()) {
                            Ok(PutOutcome::Written(e)) => {
                                let e = e.or_else(|| client.get(LEASE).ok().flatten().and_then(|(_, e)| e));
                                *etag.lock().unwrap_or_else(|p| p.into_inner()) = e;
                                valid_until = exp;
                            }
                            Ok(PutOutcome::Conflict) => {
                                tracing::error!("writer lease taken over by another process; this one stops writing");
                                fenced.store(true, Ordering::SeqCst);
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "writer lease renewal failed; retrying");
                                if now_ms() > valid_until {
                                    fenced.store(true, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                    }
                })
                .map_err(|e| BucketError::io("lease thread", e))?
        };
        Ok(Lease {
            holder: holder.to_string(),
            fenced,
            etag,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops renewing and deletes the lease object if it is still ours.
    pub(crate) fn release(mut self, client: &Client) {
        self.stop_thread();
        if self.fenced.load(Ordering::SeqCst) {
            return;
        }
        let ours = matches!(client.get(LEASE), Ok(Some((b, _))) if serde_json::from_slice::<Body>(&b).is_ok_and(|b| b.holder == self.holder));
        if ours {
            if let Err(e) = client.delete(LEASE) {
                tracing::warn!(error = %e, "writer lease not released; it expires on its own");
            }
        }
        let _ = &self.etag;
    }

    fn stop_thread(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
