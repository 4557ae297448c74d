//! The server log, bounded: at most `log_lines_per_second` lines a second reach it,
//! whatever a flood makes the server want to say; the lines held back are counted, and
//! the count is logged once a second ([`report_suppressed`]). Values that came from the
//! network are logged `{:?}`-style everywhere, so no line can be forged by a newline or
//! a control byte in a client's name, message or syslog line.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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

/// Sets up the process's log: `filter` (levels), at most `lines_per_second` lines.
pub fn init(filter: EnvFilter, lines_per_second: u32) {
    BUDGET.per_second.store(lines_per_second.max(1), Ordering::Relaxed);
    // Colour only on a terminal (not into a file or the journal), and never with NO_COLOR.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi);
    tracing_subscriber::registry().with(filter).with(fmt).with(RateLimit).init();
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
}
