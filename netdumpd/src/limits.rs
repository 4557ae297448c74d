//! What a stranger on the network can make the server hold or do, bounded: the
//! `[limits]` section of the configuration and the rate budgets that enforce the
//! per-second ones. docs/SECURITY.md lists each bound beside its test.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The bounds, each with a default sized for a fleet of a few thousand machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Registered clients; when full, the oldest registration that never crashed makes
    /// room for a new name.
    pub max_clients: usize,
    /// Retired cookies remembered (so that replays of earlier boots are refused).
    pub max_retired: usize,
    /// HELLOs handled per second, all sources together; the rest are dropped unanswered
    /// (`rate_limited`). Clients repeat an unanswered HELLO.
    pub hellos_per_second: u32,
    /// HELLOs handled per second from one IP address.
    pub hellos_per_source_per_second: u32,
    /// New crash announcements handled per second; the rest are dropped unanswered
    /// (the client repeats its CRASH).
    pub crashes_per_second: u32,
    /// Largest memory image accepted; a crash announcing more gets SKIP_MEMORY (no
    /// space), so no announcement reserves more free space than this.
    pub max_dump_bytes: u64,
    /// Register and finished hooks (and analyses) running at once; more wait in a
    /// queue of [`Limits::max_queued_jobs`].
    pub max_hook_processes: usize,
    /// Work waiting for a hook slot; beyond it, a register hook is skipped (and
    /// logged) and a finished dump's hook and analysis are skipped.
    pub max_queued_jobs: usize,
    /// Lines netdumpd writes to its log per second; the rest are counted and the count
    /// is logged once a second.
    pub log_lines_per_second: u32,
    /// Crash signatures the dedup index remembers; beyond, the least recently seen one
    /// is forgotten (its next crash counts as a first occurrence).
    pub max_signatures: usize,
    /// Excluded runs one filtered dump may report (`EXCLUDED` section); more are
    /// refused as a bad exclusion.
    pub max_excluded_runs: usize,
    /// What the dumps being received may hold in memory at once, in bytes: every dump
    /// reserves its worst case at admission (netdumpd/README.md, "Memory"), and a memory image
    /// whose reservation does not fit beside the others is shed like one beyond
    /// `max_memory_dumps`.
    pub max_receive_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 4096,
            max_retired: 16384,
            hellos_per_second: 200,
            hellos_per_source_per_second: 20,
            crashes_per_second: 50,
            max_dump_bytes: 4 << 40,
            max_hook_processes: 4,
            max_queued_jobs: 256,
            log_lines_per_second: 100,
            max_signatures: 4096,
            max_excluded_runs: 1 << 20,
            max_receive_bytes: 1 << 30,
        }
    }
}

/// Largest console log a crash may announce; more is a bad announcement.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

/// A token bucket: `rate` events a second on average, bursts of up to `rate`.
#[derive(Debug, Clone)]
pub struct RateBudget {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl RateBudget {
    pub fn new(rate: u32, now: Instant) -> Self {
        RateBudget { rate, tokens: f64::from(rate), at: now }
    }

    /// Takes one event's token; false when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.rate));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A budget for all sources together and one for each source address.
#[derive(Debug)]
pub struct SourceBudget {
    global: RateBudget,
    per_source_rate: u32,
    /// Events of each source in the current second.
    sources: HashMap<IpAddr, u32>,
    window: Instant,
}

/// Sources tracked in one second at most; beyond, only the global budget applies.
const MAX_TRACKED_SOURCES: usize = 4096;

impl SourceBudget {
    pub fn new(global_rate: u32, per_source_rate: u32, now: Instant) -> Self {
        SourceBudget {
            global: RateBudget::new(global_rate, now),
            per_source_rate,
            sources: HashMap::new(),
            window: now,
        }
    }

    /// Whether an event from `source` may be handled now.
    pub fn take(&mut self, source: IpAddr, now: Instant) -> bool {
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.sources.clear();
            self.window = now;
        }
        let seen = self.sources.get(&source).copied().unwrap_or(0);
        if seen >= self.per_source_rate {
            return false;
        }
        if !self.global.take(now) {
            return false;
        }
        if self.sources.len() < MAX_TRACKED_SOURCES || self.sources.contains_key(&source) {
            self.sources.insert(source, seen + 1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_rate_then_refills_with_time() {
        let t0 = Instant::now();
        let mut b = RateBudget::new(10, t0);
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 10);
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(150)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 10);
    }

    #[test]
    fn one_source_cannot_spend_the_whole_budget() {
        let t0 = Instant::now();
        let mut b = SourceBudget::new(100, 5, t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..50).filter(|_| b.take(a, t0)).count(), 5);
        assert_eq!((0..50).filter(|_| b.take(c, t0)).count(), 5);
        // The next second, each source has its share again.
        assert!(b.take(a, t0 + Duration::from_millis(1100)));
    }

    #[test]
    fn many_sources_share_the_global_budget() {
        let t0 = Instant::now();
        let mut b = SourceBudget::new(20, 5, t0);
        let allowed = (0..1000u32).filter(|i| b.take(IpAddr::from(i.to_be_bytes()), t0)).count();
        assert_eq!(allowed, 20);
    }
}
