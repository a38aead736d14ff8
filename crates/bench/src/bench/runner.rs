//! One measured run: a fresh volume, in network mode a `serve` on its own runtime, every
//! mailbox moved with `mailferry-control`'s move code on a runtime whose threads are
//! named by role, CPU sampled per thread, then the whole volume verified: a run that does
//! not verify has no figures.

use super::corpus::ImapRoute;
use super::plan::CaseSpec;
use super::report::{Corpus, RunFigures, StageWall, Verified};
use super::stages::attribute;
use super::{cpu, source_name, BenchArgs, Mode, SourceKind};
use crate::AppError;
use mailferry_control::moving::{Clock, Connected, Destination, MoveArgs};
use mailferry_core::profile::Profile;
use mailferry_core::report::MoveReport;
use mailferry_core::MailboxAddr;
use mailferry_proxy::StoreStats;
use mailferry_store::{Credential, Volume};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tokio runtime whose threads say what they are: `<prefix>-w<n>` for the async
/// workers, `<prefix>-b<n>` for blocking-pool threads. Tokio queues its worker tasks
/// first and starts a thread for each, through the same name function, so the first
/// `workers` names are theirs — provided those threads take the worker tasks before any
/// blocking task is queued (a thread started later could otherwise take a worker task
/// from the shared queue on a busy machine): so this returns once every worker runs.
pub(super) fn runtime(
    prefix: &'static str,
    workers: usize,
) -> Result<tokio::runtime::Runtime, AppError> {
    let rt = named_runtime(prefix, workers)?;
    let running = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut all = Vec::new();
        for _ in 0..workers {
            let running = running.clone();
            // Each task holds its worker until all are held: every worker thread ran.
            all.push(tokio::spawn(async move {
                running.fetch_add(1, Ordering::SeqCst);
                let t0 = Instant::now();
                while running.load(Ordering::SeqCst) < workers
                    && t0.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        for task in all {
            let _ = task.await;
        }
    });
    Ok(rt)
}

fn named_runtime(
    prefix: &'static str,
    workers: usize,
) -> Result<tokio::runtime::Runtime, AppError> {
    let n = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            let i = n.fetch_add(1, Ordering::Relaxed);
            if i < workers {
                format!("{prefix}-w{i}")
            } else {
                format!("{prefix}-b{}", i - workers)
            }
        })
        .enable_all()
        .build()
        .map_err(|e| AppError::Io {
            path: "async runtime".into(),
            source: e,
        })
}

/// The serve of a network-mode run, on its own runtime as it would be in its own process.
struct Server {
    rt: tokio::runtime::Runtime,
    url: String,
    ca: PathBuf,
    token_file: PathBuf,
    stats: Arc<StoreStats>,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Server {
    fn start(
        dir: &Path,
        volume: &Path,
        key: &Path,
        args: &BenchArgs,
        case: &CaseSpec,
    ) -> Result<Server, AppError> {
        let credential = Credential::KeyFile(key.to_path_buf());
        let token_file = dir.join("agent.token");
        mailferry_control::tokens::issue(
            volume,
            &credential,
            &Default::default(),
            "example.com",
            &token_file,
            None,
        )?;
        let rt = runtime("mf-srv", workers())?;
        // On object storage: a fresh prefix per run, the run's volume as its working
        // copy (the first round uploads it).
        let (served, s3) = match &args.s3_volume {
            Some(base) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let mut s3 = args.s3.clone();
                s3.cache_dir = Some(volume.to_path_buf());
                (
                    PathBuf::from(format!("{}/bench-{nanos}", base.trim_end_matches('/'))),
                    s3,
                )
            }
            None => (volume.to_path_buf(), Default::default()),
        };
        let serve_args = mailferry_control::serve::ServeArgs {
            volume: served,
            credential,
            listen: "127.0.0.1:0".parse().expect("literal address"),
            tls: None,
            tls_dir: Some(dir.join("tls")),
            profile: args.profile.clone(),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits: mailferry_proxy::Limits {
                max_streams_per_token: case.concurrency.max(32),
                max_streams: case.concurrency.max(256),
                ..Default::default()
            },
            client_ca: None,
            s3,
        };
        let serving = rt.block_on(mailferry_control::serve::bind_serve(&serve_args))?;
        let url = format!("https://{}", serving.local_addr());
        let ca = serving
            .ca
            .clone()
            .expect("serve generated its TLS material");
        let stats = serving.stats.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.spawn(serving.run(async {
            let _ = stop_rx.await;
        }));
        Ok(Server {
            rt,
            url,
            ca,
            token_file,
            stats,
            stop,
            handle,
        })
    }

    /// Stops accepting, drains, and lets go of the volume.
    fn stop(self) -> Result<(), AppError> {
        let _ = self.stop.send(());
        let res = self.rt.block_on(self.handle).expect("serve task panicked");
        drop(self.rt);
        res
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The reports of a run's moves and how long they took together.
struct Moved {
    reports: Vec<MoveReport>,
    seconds: f64,
    stats: Arc<StoreStats>,
}

/// Moves every mailbox of the corpus, `concurrency` at a time, through one destination.
async fn move_all(
    dest: Destination,
    source: SourceKind,
    imap: Option<ImapRoute<'_>>,
    corpus: &Corpus,
    concurrency: usize,
    profile: &Profile,
    dir: &Path,
) -> Result<Moved, AppError> {
    let t0 = Instant::now();
    let connected = Arc::new(Connected::open(&dest, profile).await?);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for (i, mb) in corpus.mailboxes.iter().enumerate() {
        let (spec, source_options) = match imap {
            Some(route) => route.source(mb),
            None => (
                format!("{}:{}", source_name(source), mb.path.display()),
                Default::default(),
            ),
        };
        let args = MoveArgs {
            source: spec,
            mailbox: MailboxAddr::parse(&mb.address)?,
            destination: dest.clone(),
            state: dir.join(format!("state-{i}")),
            profile: profile.clone(),
            source_options,
        };
        let (connected, slots) = (connected.clone(), slots.clone());
        set.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore never closed");
            (i, connected.run_pass(&args, Clock::start()).await)
        });
    }
    let mut reports: Vec<Option<MoveReport>> = vec![None; corpus.mailboxes.len()];
    while let Some(done) = set.join_next().await {
        let (i, report) = done.expect("agent task panicked");
        reports[i] = Some(report?);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let stats = connected.stats.clone();
    if let Ok(c) = Arc::try_unwrap(connected) {
        c.close().await;
    }
    Ok(Moved {
        reports: reports
            .into_iter()
            .map(|r| r.expect("every agent reported"))
            .collect(),
        seconds,
        stats,
    })
}

/// One run: a new volume, the moves timed, then verified.
pub(super) fn run_once(
    work: &Path,
    case: &CaseSpec,
    corpus: &Corpus,
    imap: Option<ImapRoute<'_>>,
    args: &BenchArgs,
    n: usize,
) -> Result<RunFigures, AppError> {
    let dir = work.join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| AppError::io(&dir, e))?;
    let volume = dir.join("volume");
    let key = dir.join("volume.key");
    Volume::init(&volume, &key)?;
    // Workers are other processes: they reach the volume through a serve.
    let server = match (args.mode, case.workers) {
        (Mode::Network, _) | (_, Some(_)) => Some(Server::start(&dir, &volume, &key, args, case)?),
        (Mode::Embedded, None) => None,
    };
    let dest = destination(server.as_ref(), &volume, &key);
    // Dirty pages of the corpus and of earlier runs are not this run's to flush.
    let _ = std::process::Command::new("sync").status();

    let per_run_rss = mailferry_control::rss::reset_peak_rss();
    let rss_at_start_bytes = mailferry_control::rss::current_rss_bytes();
    // Each sample reads two /proc files per thread (~0.5 ms): every 50 ms costs the run
    // ~1 % of a core (every 20 ms cost ~3 %, taken from the pipeline it measures); a
    // thread that ends loses at most its last 50 ms, which the process total still has.
    let sampler = cpu::Sampler::start(Duration::from_millis(50));
    let rt = runtime(
        match args.mode {
            Mode::Network => "mf-agt",
            Mode::Embedded => "mf-emb",
        },
        workers(),
    )?;
    let mut worker_cpu = None;
    let moved = match (case.workers, imap, &server) {
        (Some(n), Some(route), Some(srv)) => rt
            .block_on(super::workers::move_all(
                &dest,
                route,
                corpus,
                n,
                case.concurrency,
                args,
                &dir,
            ))
            .map(|w| {
                worker_cpu = Some(w.cpu_seconds);
                Moved {
                    reports: w.reports,
                    seconds: w.seconds,
                    stats: srv.stats.clone(),
                }
            }),
        _ => rt.block_on(move_all(
            dest,
            args.source,
            imap,
            corpus,
            case.concurrency,
            &args.profile,
            &dir,
        )),
    };
    // Before the runtime goes: its threads are still there for the last sample.
    let usage = sampler.stop();
    drop(rt);
    let peak_rss_bytes = mailferry_control::rss::peak_rss_bytes();
    let store_stats = server.as_ref().map(|s| s.stats.clone());
    if let Some(s) = server {
        s.stop()?;
    }
    let moved = moved?;
    let stats = store_stats.unwrap_or_else(|| moved.stats.clone());

    let served_as_crlf = imap.is_some();
    let verified = verify(
        &volume,
        &key,
        &args.profile,
        corpus,
        &moved.reports,
        served_as_crlf,
    )
    .map_err(|why| {
        AppError::Failed(format!(
            "{} run {n} did not verify, so it has no figures: {why}",
            case.name
        ))
    })?;

    let messages: u64 = moved.reports.iter().map(|r| r.items_moved).sum();
    let bytes: u64 = moved.reports.iter().map(|r| r.bytes_moved).sum();
    let seconds = moved.seconds.max(1e-9);
    let (cpu_seconds, mut by_thread) = attribute(&usage, &stats);
    if let Some(w) = worker_cpu {
        // Other processes: beside this one's threads, not in its stages.
        by_thread.insert("worker processes".into(), w);
    }
    let mut p50s: Vec<f64> = moved.reports.iter().map(|r| r.latency_ms_p50).collect();
    p50s.sort_by(f64::total_cmp);
    let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e9;
    let agents = |f: fn(&MoveReport) -> f64| moved.reports.iter().map(f).sum::<f64>();
    Ok(RunFigures {
        run: n,
        seconds,
        messages,
        bytes,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        msgs_per_s: messages as f64 / seconds,
        latency_ms_p50: p50s[p50s.len() / 2],
        latency_ms_p99: moved
            .reports
            .iter()
            .map(|r| r.latency_ms_p99)
            .fold(0.0, f64::max),
        peak_rss_bytes,
        peak_rss_per_run: per_run_rss,
        rss_at_start_bytes,
        cpu_seconds_per_gb: cpu_seconds.scaled(1e9 / (bytes.max(1) as f64)),
        cpu_seconds,
        cpu_seconds_by_thread: by_thread,
        stage_wall_seconds: StageWall {
            source_read: agents(|r| r.stages.source_read),
            transport: agents(|r| r.stages.transport),
            stalled: agents(|r| r.stages.stalled),
            store_write: secs(&stats.write_nanos),
            encryption: secs(&stats.encrypt_nanos),
            commit: secs(&stats.commit_nanos),
            sync: secs(&stats.sync_nanos),
            index: secs(&stats.index_nanos),
            audit: secs(&stats.audit_nanos),
            commits: stats.commits.load(Ordering::Relaxed),
        },
        verified,
    })
}

/// Checks a run against its corpus: each move reported every message and nothing bad,
/// the volume holds exactly them (receipt roots equal, counts equal), and every chunk of
/// every message authenticates.
fn verify(
    volume: &Path,
    key: &Path,
    profile: &Profile,
    corpus: &Corpus,
    reports: &[MoveReport],
    served_as_crlf: bool,
) -> Result<Verified, String> {
    let v = Volume::open(volume, key, &profile.store).map_err(|e| e.to_string())?;
    let mut receipts_matching = 0;
    for (mb, r) in corpus.mailboxes.iter().zip(reports) {
        if !r.bad_items.is_empty() {
            let b = &r.bad_items[0];
            return Err(format!(
                "{}: {} bad item(s), first {}: {}",
                mb.address,
                r.bad_items.len(),
                b.item,
                b.reason
            ));
        }
        // IMAP serves LF line ends as CRLF: a message can only grow on the way.
        let bytes_ok = if served_as_crlf {
            r.bytes_moved >= mb.bytes
        } else {
            r.bytes_moved == mb.bytes
        };
        if r.items_moved != mb.messages || !bytes_ok {
            return Err(format!(
                "{}: moved {} messages / {} bytes of {} / {}",
                mb.address, r.items_moved, r.bytes_moved, mb.messages, mb.bytes
            ));
        }
        let address = MailboxAddr::parse(&mb.address).map_err(|e| e.to_string())?;
        let (root, items) = v.receipt_root(&address).map_err(|e| e.to_string())?;
        if items != mb.messages || root != r.receipt.source_root {
            return Err(format!(
                "{}: the volume holds {items} of {} messages, receipt root {root} vs the agent's {}",
                mb.address, mb.messages, r.receipt.source_root
            ));
        }
        receipts_matching += 1;
    }
    let check = v.verify().map_err(|e| e.to_string())?;
    if let Some(d) = check.damaged.first() {
        return Err(format!(
            "{} damaged item(s), first {} in {}: {}",
            check.damaged.len(),
            d.item,
            d.mailbox,
            d.reason
        ));
    }
    if check.messages_checked != corpus.messages {
        return Err(format!(
            "verify checked {} messages, the corpus has {}",
            check.messages_checked, corpus.messages
        ));
    }
    Ok(Verified {
        messages_checked: check.messages_checked,
        bytes_checked: check.bytes_checked,
        receipts_matching,
    })
}

/// Where a run's moves store: the run's `serve`, or the volume through the embedded proxy.
fn destination(server: Option<&Server>, volume: &Path, key: &Path) -> Destination {
    match server {
        Some(s) => Destination::Remote {
            url: s.url.clone(),
            ca: s.ca.clone(),
            token_file: s.token_file.clone(),
        },
        None => Destination::Local {
            volume: volume.to_path_buf(),
            credential: Credential::KeyFile(key.to_path_buf()),
            s3: Default::default(),
        },
    }
}
