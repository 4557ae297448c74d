//! The server log, bounded: at most `log_lines_per_second` lines a second reach it,
//! whatever a flood makes the server want to say; the lines held back are counted, and
//! the count is logged once a second ([`report_suppressed`]). Values that came from the
//! network are logged `{:?}`-style everywhere, so no line can be forged by a newline or
//! a control byte in a client's name, message or syslog line.
//!
//! The log goes to stderr (stdout is the admin commands' output), as text (colour only
//! when stderr is a terminal and `NO_COLOR` is unset), one JSON object a line
//! (`--log-format json`), or to the journal with structured fields (`--log-format
//! journald`, the default when stderr is the journal: `$JOURNAL_STREAM` names it). The
//! filter can be replaced while the server runs ([`set_filter`], on SIGHUP).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::Context as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Where and how the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr (coloured only on a terminal).
    Text,
    /// One JSON object a line on stderr: `timestamp`, `level`, `target`, `message` and
    /// the event's fields.
    Json,
    /// Straight to the systemd journal, with the fields as journal fields.
    Journald,
}

impl LogFormat {
    /// The name the flag and the file take.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        }
    }
}

/// The filter in force and the handle that replaces it.
struct Filter {
    handle: reload::Handle<EnvFilter, Registry>,
    text: String,
}

static FILTER: Mutex<Option<Filter>> = Mutex::new(None);

/// The target of the once-a-second count of held-back lines (never held back itself).
const SUMMARY_TARGET: &str = "netdumpd::log_limit";

/// The budget of the process's log (one logger per process).
struct Budget {
    per_second: AtomicU32,
    /// The second (since `epoch`) the count belongs to.
    window: AtomicU64,
    count: AtomicU32,
    suppressed: AtomicU64,
    reported: AtomicU64,
}

static BUDGET: Budget = Budget {
    per_second: AtomicU32::new(u32::MAX),
    window: AtomicU64::new(0),
    count: AtomicU32::new(0),
    suppressed: AtomicU64::new(0),
    reported: AtomicU64::new(0),
};

fn second() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs()
}

impl Budget {
    /// Whether one more line may be written in the current second.
    fn take(&self, now: u64) -> bool {
        if self.window.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < self.per_second.load(Ordering::Relaxed) {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// The layer that holds back lines beyond the budget.
struct RateLimit;

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        event.metadata().target() == SUMMARY_TARGET || BUDGET.take(second())
    }
}

/// The filter `text` (tracing's env-filter syntax) parsed, or why it is not one.
pub fn parse_filter(text: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(text).with_context(|| format!("bad log level {text:?}"))
}

/// Whether the process's stderr is the stream `$JOURNAL_STREAM` names (`DEVICE:INODE`),
/// as when systemd connects a service's stderr to the journal.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else { return false };
    names_stream(&stream.to_string_lossy(), stderr.dev(), stderr.ino())
}

/// Whether `journal_stream` (`DEVICE:INODE`, decimal) is the file `dev`, `ino`.
fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.split_once(':') else { return false };
    d.parse::<u64>().is_ok_and(|d| d == dev) && i.parse::<u64>().is_ok_and(|i| i == ino)
}

/// The format when none was asked for: the journal's when stderr is the journal, else
/// text.
pub fn default_format() -> LogFormat {
    if stderr_is_journal() { LogFormat::Journald } else { LogFormat::Text }
}

/// Sets up the process's log: `filter` (tracing's env-filter syntax), `format` (else
/// [`default_format`]), at most `lines_per_second` lines. Returns the format in use.
pub fn init(filter: &str, format: Option<LogFormat>, lines_per_second: u32) -> anyhow::Result<LogFormat> {
    let parsed = parse_filter(filter)?;
    set_lines_per_second(lines_per_second);
    let format = format.unwrap_or_else(default_format);
    let (filter_layer, handle) = reload::Layer::new(parsed);
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Text => {
            // Colour only on a terminal (not into a file or the journal), never with NO_COLOR.
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Journald => {
            tracing_journald::layer().context("cannot reach the systemd journal (--log-format journald)")?.boxed()
        }
    };
    tracing_subscriber::registry().with(filter_layer).with(output).with(RateLimit).try_init()?;
    *FILTER.lock().unwrap_or_else(PoisonError::into_inner) = Some(Filter { handle, text: filter.to_string() });
    Ok(format)
}

/// Replaces the log filter of a running process (SIGHUP). Returns whether it changed;
/// an unparsable filter is refused and the old one kept.
pub fn set_filter(text: &str) -> anyhow::Result<bool> {
    let parsed = parse_filter(text)?;
    let mut guard = FILTER.lock().unwrap_or_else(PoisonError::into_inner);
    // No logger (a test's server): nothing to change.
    let Some(filter) = guard.as_mut() else { return Ok(false) };
    if filter.text == text {
        return Ok(false);
    }
    filter.handle.reload(parsed).context("cannot replace the log filter")?;
    filter.text = text.to_string();
    Ok(true)
}

/// Sets the log's line budget (at start and on SIGHUP).
pub fn set_lines_per_second(lines_per_second: u32) {
    BUDGET.per_second.store(lines_per_second.max(1), Ordering::Relaxed);
}

/// Logs how many lines were held back since the last report, at most once a second.
/// The server calls it every turn of its loop.
pub fn report_suppressed() {
    let now = second();
    if BUDGET.reported.load(Ordering::Relaxed) == now {
        return;
    }
    BUDGET.reported.store(now, Ordering::Relaxed);
    let n = BUDGET.suppressed.swap(0, Ordering::Relaxed);
    if n > 0 {
        tracing::warn!(target: SUMMARY_TARGET, suppressed = n, "log lines held back by the log rate limit");
    }
}

/// Lines held back and not yet reported (for tests).
pub fn suppressed() -> u64 {
    BUDGET.suppressed.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_its_lines_through_each_second_and_counts_the_rest() {
        let b = Budget {
            per_second: AtomicU32::new(3),
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        };
        assert_eq!((0..10).filter(|_| b.take(5)).count(), 3);
        assert_eq!(b.suppressed.load(Ordering::Relaxed), 7);
        assert_eq!((0..10).filter(|_| b.take(6)).count(), 3);
    }

    #[test]
    fn journal_stream_names_one_device_and_inode() {
        assert!(names_stream("64:12345", 64, 12345));
        assert!(!names_stream("64:12345", 64, 12346), "another stream, e.g. stderr redirected by a parent");
        assert!(!names_stream("64:12345", 65, 12345));
        assert!(!names_stream("", 0, 0));
        assert!(!names_stream("64", 64, 0));
        assert!(!names_stream("x:y", 0, 0));
    }
}
