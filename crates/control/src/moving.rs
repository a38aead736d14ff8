//! `mailferry move`: agent, proxy and store in one process over loopback HTTPS, or the
//! agent alone streaming to a remote `mailferry serve` (`--proxy`).
//!
//! The embedded proxy listens on 127.0.0.1 on an ephemeral port with a certificate
//! issued at start by a CA that exists only in this process's memory; the agent trusts
//! exactly that CA and authenticates with a random one-time token. Nothing here is
//! specific to loopback: the same agent and proxy code run across machines. With a
//! remote proxy the destination's receipt is not computed here (the volume is on the
//! other side): the report leaves it empty and `receipt.matches` false; check it on the
//! store host with `mailferry receipt verify`.

pub use crate::destination::Destination;
use crate::progress::Observer;
use crate::volume_admin::S3Args;
use crate::{rss, AppError};
use mailferry_agent::client::Endpoint;
use mailferry_agent::pass::{run_pass, PassConfig, Progress};
use mailferry_agent::throttle::{Limits, Throttle, Throttles};
use mailferry_core::profile::Profile;
use mailferry_core::report::{MoveReport, Receipt, Sample, StageSeconds};
use mailferry_core::secret::SecretBytes;
use mailferry_core::{rfc3339, unix_now, MailboxAddr};
use mailferry_proxy::{Proxy, ProxyConfig, StoreStats, TokenSet};
use mailferry_store::{Credential, Volume};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `mailferry move` needs.
#[derive(Debug, Clone)]
pub struct MoveArgs {
    /// `maildir:PATH`.
    pub source: String,
    /// Destination mailbox.
    pub mailbox: MailboxAddr,
    /// Where the messages go: a local volume (embedded proxy) or a remote proxy.
    pub destination: Destination,
    /// Agent state directory.
    pub state: PathBuf,
    /// Migration profile.
    pub profile: Profile,
    /// Credentials and trust for an IMAP source (unused by file sources).
    pub source_options: mailferry_agent::source::SourceOptions,
}

/// Runs one pass of the move and returns its report (also written to the state dir as
/// `report.json`, and appended to `reports.jsonl`, which is never truncated).
pub async fn run_move(args: &MoveArgs) -> Result<MoveReport, AppError> {
    run_move_with(args, PassHooks::default()).await
}

/// [`run_move`] with an observer, live counters or a shared throttle supplied by the
/// caller.
pub async fn run_move_with(args: &MoveArgs, hooks: PassHooks) -> Result<MoveReport, AppError> {
    let clock = Clock::start();
    let dest = Connected::open(&args.destination, &args.profile).await?;
    let report = dest.run_pass_with(args, clock, hooks).await;
    dest.close().await;
    report
}

/// What a caller running several moves (a batch) gives one pass besides its
/// [`MoveArgs`].
#[derive(Clone, Debug, Default)]
pub struct PassHooks {
    /// The pass's live counters, which the caller (a batch) shows on its own observer;
    /// with them given, [`PassHooks::observer`] is not told about this pass.
    pub progress: Option<Arc<Progress>>,
    /// Told about this one pass (`begin(1)`, `mailbox`, `end`; no `finish`: the caller
    /// has the report).
    pub observer: Option<Arc<dyn Observer>>,
    /// A throttle shared with other moves (an endpoint's), obeyed on top of the move's
    /// own `[throttle]` limits.
    pub throttle: Option<Arc<Throttle>>,
    /// The lease's fencing number; the store refuses writes from a lower one. `None`
    /// (no lease: one machine) changes nothing. A refused pass ends with
    /// [`AppError::Fenced`], which the caller must not retry.
    pub fence: Option<u64>,
}

/// When a move started: its report's `started_at` and `seconds` count from here.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    unix: i64,
    instant: Instant,
}

impl Clock {
    /// Now.
    pub fn start() -> Clock {
        Clock {
            unix: unix_now(),
            instant: Instant::now(),
        }
    }
}

/// A destination agents can stream to: the embedded proxy of a local volume, started
/// (one volume, one proxy, any number of agents), or a remote proxy's trust and token.
pub struct Connected {
    url: String,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    token: SecretBytes,
    local: Option<Embedded>,
    /// Store timings of every session of the embedded proxy (all zero for a remote one).
    pub stats: Arc<StoreStats>,
}

impl Connected {
    /// Opens the volume and starts the embedded proxy, or reads the remote proxy's CA and
    /// token files.
    pub async fn open(dest: &Destination, profile: &Profile) -> Result<Connected, AppError> {
        match dest {
            Destination::Local {
                volume,
                credential,
                s3,
            } => start_embedded(volume, credential, s3, profile).await,
            Destination::Remote {
                url,
                ca,
                token_file,
            } => {
                let pem = std::fs::read(ca).map_err(|e| AppError::io(ca, e))?;
                Ok(Connected {
                    url: url.clone(),
                    roots: mailferry_core::tls::certs_from_pem(&pem)?,
                    token: crate::tokens::read_token_file(token_file)?,
                    local: None,
                    stats: Arc::default(),
                })
            }
        }
    }

    /// Runs one pass of the move of `args` (whose destination must be this one) and
    /// writes its report to the state directory. Several may run at once.
    pub async fn run_pass(&self, args: &MoveArgs, clock: Clock) -> Result<MoveReport, AppError> {
        self.run_pass_with(args, clock, PassHooks::default()).await
    }

    /// [`Connected::run_pass`] with the caller's observer or counters and shared
    /// throttle.
    pub async fn run_pass_with(
        &self,
        args: &MoveArgs,
        clock: Clock,
        hooks: PassHooks,
    ) -> Result<MoveReport, AppError> {
        let endpoint = Endpoint::new(&self.url, &self.roots, self.token.clone())?;
        // A bad spec, or a password or CA file that cannot be read, is a usage error.
        let options = args.source_options.with_profile(&args.profile);
        let source = mailferry_agent::source::from_spec(&args.source, &options)
            .map_err(|e| AppError::Usage(e.to_string()))?;
        // Counters given by the caller are shown by the caller: this pass tells its own
        // observer only about counters it made.
        let (progress, observer) = match hooks.progress {
            Some(counters) => (counters, None),
            None => (Arc::default(), hooks.observer),
        };
        if let Some(o) = &observer {
            o.begin(1);
            o.mailbox(args.mailbox.as_str(), progress.clone());
        }
        let (sampler_stop, sampler) = spawn_sampler(progress.clone());
        let outcome = run_pass(
            PassConfig {
                source,
                mailbox: args.mailbox.clone(),
                state_dir: args.state.clone(),
                endpoint,
                profile: args.profile.clone(),
                throttle: Throttles::for_move(
                    Limits::from_profile(&args.profile.throttle),
                    hooks.throttle,
                ),
                fence: hooks.fence,
            },
            progress,
        )
        .await;
        if let Some(o) = observer {
            o.end();
        }
        let _ = sampler_stop.send(());
        let timeline = sampler.await.unwrap_or_default();
        let outcome = outcome.map_err(AppError::from_agent)?;

        // The destination's receipt, computed by the store from what it holds, and recorded
        // in the volume's audit log next to the source's root. Not available here when the
        // store is remote.
        let receipt = match &self.local {
            Some(local) => {
                local_receipt(local.volume.clone(), args.mailbox.clone(), &outcome).await?
            }
            None => Receipt {
                matches: false,
                source_root: outcome.receipt_root.clone(),
                source_items: outcome.receipt_items,
                destination_root: String::new(),
                destination_items: 0,
                source_head: outcome.source_head.clone(),
                destination_head: None,
            },
        };

        let seconds = clock.instant.elapsed().as_secs_f64();
        let stats = &self.stats;
        let nanos = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
        let report = MoveReport {
            move_id: outcome.move_id.to_string(),
            mailbox: args.mailbox.to_string(),
            source: outcome.source,
            started_at: rfc3339(clock.unix),
            finished_at: rfc3339(unix_now()),
            items_total: outcome.items_total,
            items_moved: outcome.items_moved,
            items_deleted: outcome.items_deleted,
            items_flags_updated: outcome.items_flags_updated,
            items_skipped_duplicate: outcome.items_skipped_duplicate,
            skipped_items: crate::limits::skipped_items(&outcome.bad_items)
                .into_iter()
                .chain(outcome.skipped_items.iter().cloned())
                .collect(),
            bad_items: outcome.bad_items,
            warnings: outcome.warnings,
            bytes_moved: outcome.bytes_moved,
            seconds,
            throughput_bytes_per_s: outcome.bytes_moved as f64 / seconds.max(1e-9),
            messages_per_s: outcome.items_moved as f64 / seconds.max(1e-9),
            stages: StageSeconds {
                source_read: outcome.source_read_secs,
                store_write: nanos(&stats.write_nanos),
                store_commit: nanos(&stats.commit_nanos),
                transport: outcome.transport_secs,
                stalled: outcome.stalled_secs,
                throttled: outcome.throttled_secs,
                server_backoff: outcome.server_backoff_secs,
                hash: nanos(&stats.hash_nanos),
                encryption: nanos(&stats.encrypt_nanos),
                append: nanos(&stats.append_nanos),
                sync: nanos(&stats.sync_nanos),
                index: nanos(&stats.index_nanos),
                audit: nanos(&stats.audit_nanos),
            },
            peak_rss_bytes: rss::peak_rss_bytes(),
            latency_ms_p50: outcome.latency_ms_p50,
            latency_ms_p99: outcome.latency_ms_p99,
            per_folder: outcome.per_folder,
            receipt,
            timeline,
        };
        save_report(args, &report)?;
        Ok(report)
    }

    /// Stops the embedded proxy (if any) and waits until it has let go of the volume;
    /// an `s3://` volume's last upload round and the release of its writer lease run on a
    /// blocking thread, not on the async runtime.
    pub async fn close(self) {
        if let Some(l) = self.local {
            let _ = l.stop.send(());
            let _ = l.server.await;
            let volume = l.volume;
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = volume.flush_offsite() {
                    tracing::warn!(error = %e, "last upload round of the volume failed");
                }
                drop(volume);
            })
            .await;
        }
    }
}

/// The destination's receipt of a local volume, computed by the store from what it
/// holds and recorded in the volume's audit log next to the source's root (an `s3://`
/// volume: uploaded before this returns).
async fn local_receipt(
    volume: Arc<Volume>,
    mailbox: MailboxAddr,
    outcome: &mailferry_agent::pass::PassOutcome,
) -> Result<Receipt, AppError> {
    let outcome = outcome.clone();
    tokio::task::spawn_blocking(move || {
        // Incremental: decrypts only what was stored since the last receipt
        // (`receipt verify` recomputes from scratch).
        let t0 = std::time::Instant::now();
        let (root, items) = volume.receipt_root_incremental(&mailbox)?;
        tracing::debug!(
            receipt_ms = t0.elapsed().as_millis() as u64,
            "destination receipt"
        );
        let mut data = serde_json::json!({
            "move_id": outcome.move_id.to_string(),
            "mailbox": volume.pseudonym_of_mailbox(&mailbox),
            "receipt_root": root,
            "receipt_items": items,
            "source_receipt_root": outcome.receipt_root,
        });
        // The source's signed head in the volume's log: the source log is then
        // pinned somewhere its writer cannot roll back.
        if let Some(h) = &outcome.source_head {
            data["source_head"] = serde_json::to_value(h).expect("plain data");
        }
        volume.audit_event("pass.receipt", data)?;
        let destination_head = volume.sign_audit_head()?;
        // An s3:// volume: the receipt record is in the bucket before the report
        // says so (nothing to do for a volume directory).
        volume.flush_offsite()?;
        Ok::<_, AppError>(Receipt {
            matches: root == outcome.receipt_root,
            source_root: outcome.receipt_root,
            source_items: outcome.receipt_items,
            destination_root: root,
            destination_items: items,
            source_head: outcome.source_head,
            // Signed right after the `pass.receipt` record, so it covers it.
            destination_head,
        })
    })
    .await
    .expect("receipt thread panicked")
}

/// The embedded proxy of a local move.
struct Embedded {
    volume: Arc<Volume>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

/// Opens the volume and starts the embedded proxy on loopback, with a certificate from
/// a CA that lives only in this process and a random one-time token. An `s3://` volume
/// is opened as `serve` opens it (writer lease, working copy restored if needed, every
/// batch uploaded before it is acknowledged).
async fn start_embedded(
    dir: &std::path::Path,
    cred: &Credential,
    s3: &S3Args,
    profile: &Profile,
) -> Result<Connected, AppError> {
    // Open the volume first: a wrong key is refused before the source is touched.
    let volume = {
        let (dir, cred, s3, settings) = (
            dir.to_path_buf(),
            cred.clone(),
            s3.clone(),
            profile.store.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::volume_admin::open_at(&dir, &cred, &s3, &settings)
        })
        .await
        .expect("volume open thread panicked")?
    };
    let volume = Arc::new(volume);
    let stats = Arc::new(StoreStats::default());
    let ca = mailferry_core::tls::LocalCa::generate("mailferry embedded CA")?;
    let identity = ca.issue_server(&["127.0.0.1", "localhost"])?;
    let token = SecretBytes::new(hex::encode(SecretBytes::random(32).expose()).into_bytes());
    let mut tokens = TokenSet::default();
    tokens.allow(&token);
    let proxy = Proxy::bind(
        "127.0.0.1:0".parse().expect("literal address"),
        ProxyConfig {
            tls: mailferry_core::tls::server_config(&identity)?,
            backend: mailferry_proxy::Backend::Local {
                tokens,
                volume: volume.clone(),
            },
            commit: profile.commit.clone(),
            stats: stats.clone(),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits: Default::default(),
        },
    )
    .await?;
    let url = format!("https://127.0.0.1:{}", proxy.local_addr().port());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(proxy.serve(async {
        let _ = stop_rx.await;
    }));
    Ok(Connected {
        url,
        roots: vec![ca.cert_der()],
        token,
        local: Some(Embedded {
            volume,
            stop,
            server,
        }),
        stats,
    })
}

fn save_report(args: &MoveArgs, report: &MoveReport) -> Result<(), AppError> {
    use std::io::Write;
    let json = serde_json::to_vec_pretty(report).expect("report serializes");
    mailferry_agent::state::write_atomic(&args.state.join("report.json"), &json)?;
    let path = args.state.join("reports.jsonl");
    let mut f = mailferry_audit::private::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| AppError::io(&path, e))?;
    let mut line = serde_json::to_vec(report).expect("report serializes");
    line.push(b'\n');
    f.write_all(&line)
        .and_then(|_| f.sync_data())
        .map_err(|e| AppError::io(&path, e))
}

/// Samples acknowledged bytes and messages every 100 ms for the report's timeline.
fn spawn_sampler(
    progress: Arc<Progress>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<Sample>>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut out = vec![Sample::default()];
        loop {
            let stop = tokio::select! {
                _ = &mut rx => true,
                _ = tokio::time::sleep(Duration::from_millis(100)) => false,
            };
            out.push(Sample {
                t: t0.elapsed().as_secs_f64(),
                bytes: progress.bytes_acked.load(Ordering::Relaxed),
                items: progress.items_acked.load(Ordering::Relaxed),
            });
            if stop {
                return out;
            }
        }
    });
    (tx, handle)
}

/// A short human summary of a report, for stderr.
pub fn summary(r: &MoveReport) -> String {
    let mut s = format!(
        "move {} of {} from {}: {} found, {} moved, {} already there, {} bad; {:.1} MB in {:.2} s ({:.1} MB/s, {:.0} msg/s)",
        r.move_id,
        r.mailbox,
        r.source,
        r.items_total,
        r.items_moved,
        r.items_skipped_duplicate,
        r.bad_items.len(),
        r.bytes_moved as f64 / 1e6,
        r.seconds,
        r.throughput_bytes_per_s / 1e6,
        r.messages_per_s
    );
    if r.stages.throttled >= 0.05 || r.stages.server_backoff >= 0.05 {
        s.push_str(&format!(
            "\n  waited {:.1} s for the move's throttles and {:.1} s for servers that asked to back off",
            r.stages.throttled, r.stages.server_backoff
        ));
    }
    if r.receipt.destination_root.is_empty() {
        s.push_str("\n  receipt: the destination root was not computed here (remote store); run `mailferry receipt verify` on the store host");
    }
    for b in &r.bad_items {
        s.push_str(&format!("\n  bad item {}: {}", b.item, b.reason));
    }
    for w in &r.warnings {
        s.push_str(&format!("\n  warning {} (stored): {}", w.item, w.reason));
    }
    s
}
