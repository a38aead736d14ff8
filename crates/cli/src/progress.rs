//! Live progress of one move or of many (a batch) on stderr: the binary's
//! [`Observer`] of the control plane's runners, fed with each mailbox's [`Progress`]
//! counters.
//!
//! On a terminal ([`Style::Bars`]) it draws an indicatif `MultiProgress`: one summary
//! bar (mailboxes done/total, bytes, rate, ETA, failures; only when there is more than
//! one mailbox) and one bar per active mailbox; a finished mailbox collapses into one
//! line printed above the bars. Elsewhere, or with `--json` ([`Style::Lines`]), there
//! are no bars: a summary log line goes out every few seconds (log target
//! [`PROGRESS_TARGET`]), and one per finished mailbox. Log lines never tear the bars
//! (see [`crate::logging`]). Colours follow `NO_COLOR`.
//!
//! The board only reads counters; it never changes what a pass does, and a pass runs
//! the same with or without one.
//!
//! [`Board`] is the [`Observer`] the commands pass to the control plane's runners; it
//! opens a [`ProgressBoard`] when a run begins and closes it when the run ends.

use crate::logging::{self, PROGRESS_TARGET};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mailferry_control::progress::{Observer, Progress};
use mailferry_control::units::{human_bytes, human_duration};
use mailferry_core::report::MoveReport;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How a board shows progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Bars on stderr (a terminal).
    Bars,
    /// A log line every `interval`, and one per finished mailbox.
    Lines {
        /// Time between summary lines.
        interval: Duration,
    },
}

impl Style {
    /// Bars when stderr is a terminal and the command does not print JSON; log lines
    /// every five seconds otherwise.
    pub fn auto(json: bool) -> Style {
        if std::io::stderr().is_terminal() && !json {
            Style::Bars
        } else {
            Style::Lines {
                interval: Duration::from_secs(5),
            }
        }
    }
}

/// The [`Observer`] the commands give the control plane: a [`ProgressBoard`] of its
/// style for each run of passes, from [`Observer::begin`] (which knows how many
/// mailboxes) to [`Observer::end`].
#[derive(Debug)]
pub struct Board {
    style: Style,
    board: Mutex<Option<ProgressBoard>>,
}

impl Board {
    /// An observer drawing in `style`.
    pub fn new(style: Style) -> Arc<Board> {
        Arc::new(Board {
            style,
            board: Mutex::new(None),
        })
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Option<ProgressBoard>> {
        self.board.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for Board {
    fn begin(&self, mailboxes: u64) {
        *self.board() = Some(ProgressBoard::with_style(mailboxes, self.style));
    }

    fn mailbox(&self, name: &str, counters: Arc<Progress>) {
        if let Some(b) = self.board().as_ref() {
            b.mailbox(name, counters);
        }
    }

    fn finish(&self, name: &str, outcome: Result<&MoveReport, &dyn std::fmt::Display>) {
        if let Some(b) = self.board().as_ref() {
            b.finish(name, outcome);
        }
    }

    fn end(&self) {
        // Taken out of the lock first: closing waits for the last redraw.
        let board = self.board().take();
        if let Some(b) = board {
            b.close();
        }
    }
}

/// One mailbox being moved.
struct Active {
    name: String,
    progress: Arc<Progress>,
    bar: Option<ProgressBar>,
}

/// Everything the board has been told, and the rate it measured.
struct State {
    active: Vec<Active>,
    done: u64,
    failed: u64,
    /// Bytes settled by finished mailboxes.
    finished_bytes: u64,
    /// Rate window: (when, bytes settled by then).
    samples: VecDeque<(Instant, u64)>,
}

struct Shared {
    style: Style,
    total: u64,
    color: bool,
    multi: Option<MultiProgress>,
    summary: Option<ProgressBar>,
    state: Mutex<State>,
    /// Set to stop the ticker; the condvar wakes it at once.
    stop: (Mutex<bool>, Condvar),
}

/// Live progress of a set of moves; see the module docs.
pub struct ProgressBoard {
    shared: Arc<Shared>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ProgressBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressBoard")
            .field("style", &self.shared.style)
            .field("total", &self.shared.total)
            .finish()
    }
}

impl ProgressBoard {
    /// A board in the given style.
    pub fn with_style(total_mailboxes: u64, style: Style) -> ProgressBoard {
        let color = logging::color_on_stderr();
        let (multi, summary) = match style {
            Style::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let summary = (total_mailboxes > 1).then(|| {
                    let bar = multi.add(ProgressBar::new(total_mailboxes));
                    bar.set_style(summary_style(color));
                    bar.set_prefix("mailboxes");
                    bar
                });
                logging::set_bars(Some(multi.clone()));
                (Some(multi), summary)
            }
            _ => (None, None),
        };
        let shared = Arc::new(Shared {
            style,
            total: total_mailboxes,
            color,
            multi,
            summary,
            state: Mutex::new(State {
                active: Vec::new(),
                done: 0,
                failed: 0,
                finished_bytes: 0,
                samples: VecDeque::new(),
            }),
            stop: (Mutex::new(false), Condvar::new()),
        });
        let every = match style {
            Style::Bars => Duration::from_millis(100),
            Style::Lines { interval } => interval.max(Duration::from_millis(100)),
        };
        let ticker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mailferry-progress".into())
                .spawn(move || shared.run_ticker(every))
                .expect("spawning the progress thread")
        };
        ProgressBoard {
            shared,
            ticker: Some(ticker),
        }
    }

    /// Starts showing the move of `name`, whose pass updates `progress`.
    pub fn mailbox(&self, name: &str, progress: Arc<Progress>) {
        let bar = self.shared.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(0));
            bar.set_style(mailbox_style(self.shared.color));
            bar.set_prefix(name.to_string());
            bar
        });
        if let Style::Lines { .. } = self.shared.style {
            tracing::info!(target: PROGRESS_TARGET, mailbox = name, "started");
        }
        self.shared.lock().active.push(Active {
            name: name.to_string(),
            progress,
            bar,
        });
    }

    /// The move of `name` ended: its bar becomes one line (moved, bad, bytes, time) or
    /// the error, and the summary counts it as done or failed.
    pub fn finish(&self, name: &str, outcome: Result<&MoveReport, &dyn std::fmt::Display>) {
        let mut st = self.shared.lock();
        let Some(pos) = st.active.iter().position(|a| a.name == name) else {
            return;
        };
        let a = st.active.remove(pos);
        st.finished_bytes += a.progress.bytes_done.load(Ordering::Relaxed);
        st.done += 1;
        let line = match &outcome {
            Ok(r) => {
                let mut line = format!(
                    "{name}: {} moved, {} already there, {} bad; {} in {:.1} s",
                    r.items_moved,
                    r.items_skipped_duplicate,
                    r.bad_items.len(),
                    human_bytes(r.bytes_moved),
                    r.seconds
                );
                let waited = r.stages.throttled + r.stages.server_backoff;
                if waited >= 0.05 {
                    line.push_str(&format!(" ({waited:.1} s throttled or backing off)"));
                }
                line
            }
            Err(e) => {
                st.failed += 1;
                format!("{name}: FAILED: {e}")
            }
        };
        drop(st);
        match (&self.shared.multi, a.bar) {
            (Some(multi), Some(bar)) => {
                bar.finish_and_clear();
                multi.remove(&bar);
                let mark = match (&outcome, self.shared.color) {
                    (Ok(_), true) => "\x1b[32mdone\x1b[0m",
                    (Ok(_), false) => "done",
                    (Err(_), true) => "\x1b[31mfailed\x1b[0m",
                    (Err(_), false) => "failed",
                };
                let _ = multi.println(format!("{mark} {line}"));
            }
            _ => match &outcome {
                Ok(_) => {
                    tracing::info!(target: PROGRESS_TARGET, mailbox = name, "finished: {line}")
                }
                Err(_) => tracing::warn!(target: PROGRESS_TARGET, mailbox = name, "{line}"),
            },
        }
        self.shared.draw_summary();
    }

    /// Stops drawing; the bars are cleared, the finished lines stay. Also on drop.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        {
            let (lock, cv) = &self.shared.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        if let Some(s) = &self.shared.summary {
            s.finish_and_clear();
        }
        for a in &self.shared.lock().active {
            if let Some(b) = &a.bar {
                b.finish_and_clear();
            }
        }
        if self.shared.multi.is_some() {
            logging::set_bars(None);
        }
    }
}

impl Drop for ProgressBoard {
    fn drop(&mut self) {
        if self.ticker.is_some() {
            self.stop();
        }
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run_ticker(&self, every: Duration) {
        let (lock, cv) = &self.stop;
        let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            stopped = cv
                .wait_timeout(stopped, every)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if *stopped {
                break;
            }
            match self.style {
                Style::Bars => {
                    self.draw_mailboxes();
                    self.draw_summary();
                }
                Style::Lines { .. } => self.log_line(),
            }
        }
    }

    fn draw_mailboxes(&self) {
        let st = self.lock();
        for a in &st.active {
            let Some(bar) = &a.bar else { continue };
            let p = &a.progress;
            bar.set_length(p.bytes_total.load(Ordering::Relaxed));
            bar.set_position(p.bytes_done.load(Ordering::Relaxed));
            bar.set_message(mailbox_message(p));
        }
    }

    /// Totals over every mailbox so far, and the summary's rate and ETA.
    fn totals(&self) -> Totals {
        let mut st = self.lock();
        let mut settled = st.finished_bytes;
        let mut remaining = 0u64;
        let mut known_total = 0u64;
        for a in &st.active {
            let done = a.progress.bytes_done.load(Ordering::Relaxed);
            let total = a.progress.bytes_total.load(Ordering::Relaxed);
            settled += done;
            known_total += total;
            remaining += total.saturating_sub(done);
        }
        let now = Instant::now();
        st.samples.push_back((now, settled));
        while st.samples.len() > 2 && now.duration_since(st.samples[0].0) > Duration::from_secs(10)
        {
            st.samples.pop_front();
        }
        let (t0, b0) = st.samples[0];
        let span = now.duration_since(t0).as_secs_f64();
        let rate = if span > 0.2 {
            settled.saturating_sub(b0) as f64 / span
        } else {
            0.0
        };
        // Mailboxes not started yet are guessed at the average size of those seen.
        let seen = st.done + st.active.len() as u64;
        let unstarted = self.total.saturating_sub(seen);
        if unstarted > 0 && seen > 0 {
            remaining += (st.finished_bytes + known_total) / seen * unstarted;
        }
        Totals {
            done: st.done,
            failed: st.failed,
            active: st.active.len() as u64,
            settled,
            rate,
            eta: (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate)),
        }
    }

    fn draw_summary(&self) {
        let Some(bar) = &self.summary else { return };
        let t = self.totals();
        bar.set_position(t.done);
        bar.set_message(t.describe());
    }

    fn log_line(&self) {
        let t = self.totals();
        let st = self.lock();
        let (mut items_done, mut items_total) = (0, 0);
        for a in &st.active {
            items_done += a.progress.items_done.load(Ordering::Relaxed);
            items_total += a.progress.items_total.load(Ordering::Relaxed);
        }
        drop(st);
        tracing::info!(
            target: PROGRESS_TARGET,
            mailboxes_done = t.done,
            mailboxes_total = self.total,
            mailboxes_active = t.active,
            failed = t.failed,
            bytes = t.settled,
            bytes_per_second = t.rate.round() as u64,
            eta_seconds = t.eta.map(|d| d.as_secs()),
            "{}/{} mailboxes, {}/{} messages of the active ones; {}",
            t.done,
            self.total,
            items_done,
            items_total,
            t.describe()
        );
    }
}

struct Totals {
    done: u64,
    failed: u64,
    active: u64,
    settled: u64,
    rate: f64,
    eta: Option<Duration>,
}

impl Totals {
    fn describe(&self) -> String {
        let eta = match self.eta {
            Some(d) => format!("ETA {}", human_duration(d)),
            None => "ETA ?".into(),
        };
        format!(
            "{}, {}/s, {eta}, {} failed",
            human_bytes(self.settled),
            human_bytes(self.rate as u64),
            self.failed
        )
    }
}

fn mailbox_message(p: &Progress) -> String {
    let mut msg = format!(
        "{}/{} msgs",
        p.items_done.load(Ordering::Relaxed),
        p.items_total.load(Ordering::Relaxed)
    );
    let throttled = p.throttled_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let backoff = p.server_backoff_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    if throttled >= 0.05 {
        msg.push_str(&format!(", throttled {throttled:.0} s"));
    }
    if backoff >= 0.05 {
        msg.push_str(&format!(", server backoff {backoff:.0} s"));
    }
    msg
}

fn mailbox_style(color: bool) -> ProgressStyle {
    let bar = if color {
        "{bar:30.cyan/blue}"
    } else {
        "{bar:30}"
    };
    ProgressStyle::with_template(&format!(
        "{{prefix}} [{bar}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}} {{msg}}"
    ))
    .expect("valid template")
    .progress_chars("=> ")
}

fn summary_style(color: bool) -> ProgressStyle {
    let bar = if color {
        "{bar:20.green/white}"
    } else {
        "{bar:20}"
    };
    ProgressStyle::with_template(&format!("{{prefix}} [{bar}] {{pos}}/{{len}} {{msg}}"))
        .expect("valid template")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_counts_done_and_failed_mailboxes() {
        // Lines an hour apart: no line is due while the test runs.
        let board = ProgressBoard::with_style(
            3,
            Style::Lines {
                interval: Duration::from_secs(3600),
            },
        );
        let p = Arc::new(Progress::default());
        p.bytes_total.store(100, Ordering::Relaxed);
        p.bytes_done.store(40, Ordering::Relaxed);
        board.mailbox("a@example.com", p.clone());
        board.mailbox("b@example.com", Arc::new(Progress::default()));
        let t = board.shared.totals();
        assert_eq!((t.done, t.active, t.settled), (0, 2, 40));
        board.finish("b@example.com", Err(&"no route to host"));
        p.bytes_done.store(100, Ordering::Relaxed);
        let t = board.shared.totals();
        assert_eq!((t.done, t.failed, t.active, t.settled), (1, 1, 1, 100));
        // Unknown names are ignored.
        board.finish("nobody@example.com", Err(&"?"));
        assert_eq!(board.shared.totals().done, 1);
        board.close();
    }
}
