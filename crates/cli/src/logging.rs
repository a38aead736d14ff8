//! Logging of the command line: `tracing` to stderr, as text or as one JSON object per
//! line (`--log-format`), filtered by `RUST_LOG`, coloured only on a terminal and never
//! when `NO_COLOR` is set.
//!
//! Log lines and progress bars share stderr. While the progress board (`progress`)
//! draws bars, every log line is written with the bars lifted out of the way
//! (indicatif's `suspend`) and drawn again below it, so neither tears the other. This
//! module does not decide what is logged; it only carries the lines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// Log target of the periodic progress lines (shown by default, like warnings).
pub const PROGRESS_TARGET: &str = "mailferry::progress";

/// The bars currently on screen, if any: log lines are printed around them.
static BARS: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Routes log lines around `bars` while they are shown (`None`: straight to stderr).
pub(crate) fn set_bars(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// True if colours may be used on stderr: a terminal, and `NO_COLOR` unset or empty.
pub fn color_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(LogWriter)
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(color_on_stderr()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(false)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
    };
}

/// A `MakeWriter` for stderr that keeps each log line whole and out of the bars' way.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// One log line, buffered and written out when the subscriber is done with it.
#[derive(Debug)]
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_above_bars(&self.0);
        }
    }
}

/// Writes `bytes` to stderr, above the bars if some are shown.
pub(crate) fn write_above_bars(bytes: &[u8]) {
    let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    };
    match bars {
        Some(m) => m.suspend(write),
        None => write(),
    }
}
