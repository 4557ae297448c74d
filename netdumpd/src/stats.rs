//! Counters of dropped packets, per reason, for the whole server and for each session,
//! and the rate limiter that keeps a flood of bad packets from flooding the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why an incoming packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Longer than the largest datagram the protocol allows.
    Oversized,
    /// Shorter than the header or than its message's fixed part.
    Truncated,
    BadMagic,
    /// Right magic, another protocol version (answered with an ERROR).
    UnsupportedVersion,
    /// `payload_len` disagrees with the datagram length.
    LengthMismatch,
    BadCrc,
    UnknownType,
    /// A message type only the server sends.
    WrongDirection,
    /// A field holds a value the specification does not allow.
    BadField,
    /// A cookie no registered client holds.
    UnknownCookie,
    /// DATA/ABORT/CRASH from an address or port other than the session's CRASH.
    WrongSource,
    /// DATA whose section or offset lies outside what the CRASH announced.
    OutOfRange,
    /// DATA whose `seq` is too far beyond the cumulative point to be tracked.
    OutOfWindow,
    /// DATA for a session that is no longer receiving.
    SessionClosed,
    /// A CRASH for a cookie whose dump already happened.
    ReplayedCrash,
    /// A HELLO from a new client while the registry is full.
    RegistryFull,
    /// A HELLO carrying a cookie that is retired: replaced by a newer registration of
    /// its name, or evicted (a replay of an earlier boot's HELLO).
    ReplayedHello,
    /// A HELLO or CRASH beyond the server's per-second budget (`[limits]`).
    RateLimited,
    /// A packet not sealed (or a sealed HELLO) for a cookie whose session is encrypted.
    Unsealed,
    /// A sealed packet whose tag does not verify: forged, altered, of another session,
    /// or for a cookie without keys.
    BadTag,
    /// A sealed packet whose nonce was seen already (a replay), or too old to tell, or
    /// of a retired cookie (an earlier boot's session, replayed).
    ReplayedNonce,
    /// A HELLO for a registered cookie with another handshake than the one it
    /// registered with, or asking for encryption where it registered without.
    HandshakeMismatch,
    /// EXCLUDED data that is malformed, outside the announced ranges, overlapping an
    /// earlier run, or from a client not granted `FILTER`.
    BadExclusion,
    /// DATA whose LZ4 block does not decode, decodes to another length than announced,
    /// or comes from a client not granted `COMPRESSED`.
    BadBlock,
}

impl DropReason {
    pub const ALL: [DropReason; 24] = [
        DropReason::Oversized,
        DropReason::Truncated,
        DropReason::BadMagic,
        DropReason::UnsupportedVersion,
        DropReason::LengthMismatch,
        DropReason::BadCrc,
        DropReason::UnknownType,
        DropReason::WrongDirection,
        DropReason::BadField,
        DropReason::UnknownCookie,
        DropReason::WrongSource,
        DropReason::OutOfRange,
        DropReason::OutOfWindow,
        DropReason::SessionClosed,
        DropReason::ReplayedCrash,
        DropReason::RegistryFull,
        DropReason::ReplayedHello,
        DropReason::RateLimited,
        DropReason::Unsealed,
        DropReason::BadTag,
        DropReason::ReplayedNonce,
        DropReason::HandshakeMismatch,
        DropReason::BadExclusion,
        DropReason::BadBlock,
    ];

    /// The name used in logs and in `info.json`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Truncated => "truncated",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::LengthMismatch => "length_mismatch",
            DropReason::BadCrc => "bad_crc",
            DropReason::UnknownType => "unknown_type",
            DropReason::WrongDirection => "wrong_direction",
            DropReason::BadField => "bad_field",
            DropReason::UnknownCookie => "unknown_cookie",
            DropReason::WrongSource => "wrong_source",
            DropReason::OutOfRange => "out_of_range",
            DropReason::OutOfWindow => "out_of_window",
            DropReason::SessionClosed => "session_closed",
            DropReason::ReplayedCrash => "replayed_crash",
            DropReason::RegistryFull => "registry_full",
            DropReason::ReplayedHello => "replayed_hello",
            DropReason::RateLimited => "rate_limited",
            DropReason::Unsealed => "unsealed",
            DropReason::BadTag => "bad_tag",
            DropReason::ReplayedNonce => "replayed_nonce",
            DropReason::HandshakeMismatch => "handshake_mismatch",
            DropReason::BadExclusion => "bad_exclusion",
            DropReason::BadBlock => "bad_block",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const REASONS: usize = DropReason::ALL.len();

/// Drop counters of one session (owned by the single server thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; REASONS]);

impl DropCounts {
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counters by name, for `info.json`.
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL.iter().filter(|r| self.get(**r) != 0).map(|r| (r.name(), self.get(*r))).collect()
    }
}

/// Server-wide counters, readable from other threads while the server runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    drops: [AtomicU64; REASONS],
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    send_errors: AtomicU64,
    dumps_started: AtomicU64,
    dumps_complete: AtomicU64,
    dumps_incomplete: AtomicU64,
    registry_writes: AtomicU64,
    clients: AtomicU64,
    jobs_skipped: AtomicU64,
}

/// A copy of [`ServerStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub send_errors: u64,
    pub dumps_started: u64,
    pub dumps_complete: u64,
    pub dumps_incomplete: u64,
    /// Times `clients.json` was written (gathered: at most once a second).
    pub registry_writes: u64,
    /// Clients registered now.
    pub clients: u64,
    /// Hooks and analyses skipped because the work queue was full.
    pub jobs_skipped: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl StatsSnapshot {
    /// Dropped packets for one reason (0 when none).
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }
}

/// What a dump ended as, for the server-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpEnd {
    Complete,
    Incomplete,
}

impl ServerStats {
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    pub fn registry_written(&self, times: u64) {
        self.registry_writes.fetch_add(times, Ordering::Relaxed);
    }

    pub fn set_clients(&self, n: usize) {
        self.clients.store(n as u64, Ordering::Relaxed);
    }

    pub fn job_skipped(&self) {
        self.jobs_skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn packet_received(&self) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn packet_sent(&self) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn send_error(&self) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dump_started(&self) {
        self.dumps_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dump_ended(&self, end: DumpEnd) {
        match end {
            DumpEnd::Complete => &self.dumps_complete,
            DumpEnd::Incomplete => &self.dumps_incomplete,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            packets_received: self.packets_received.load(Ordering::Relaxed),
            packets_sent: self.packets_sent.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            dumps_started: self.dumps_started.load(Ordering::Relaxed),
            dumps_complete: self.dumps_complete.load(Ordering::Relaxed),
            dumps_incomplete: self.dumps_incomplete.load(Ordering::Relaxed),
            registry_writes: self.registry_writes.load(Ordering::Relaxed),
            clients: self.clients.load(Ordering::Relaxed),
            jobs_skipped: self.jobs_skipped.load(Ordering::Relaxed),
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.dropped(**r) != 0)
                .map(|r| (r.name(), self.dropped(*r)))
                .collect(),
        }
    }
}

/// Lets one warning per drop reason through per interval and counts the rest, so a
/// flood of bad packets costs a line a second, not a line a packet.
#[derive(Debug)]
pub struct WarnLimiter {
    interval: Duration,
    /// One slot per drop reason, and one for "too many dumps at once".
    last: [Option<Instant>; REASONS + 1],
    suppressed: [u64; REASONS + 1],
}

impl WarnLimiter {
    pub fn new(interval: Duration) -> Self {
        WarnLimiter { interval, last: [None; REASONS + 1], suppressed: [0; REASONS + 1] }
    }

    /// Returns `Some(n)` when a warning may be logged now (`n` warnings of this reason
    /// were suppressed since the last one), `None` when it must be suppressed.
    pub fn allow(&mut self, reason: DropReason, now: Instant) -> Option<u64> {
        self.allow_slot(reason.index(), now)
    }

    fn allow_slot(&mut self, i: usize, now: Instant) -> Option<u64> {
        match self.last[i] {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed[i] += 1;
                None
            }
            _ => {
                self.last[i] = Some(now);
                Some(std::mem::take(&mut self.suppressed[i]))
            }
        }
    }

    /// Logs, rate limited, that a crash was told to abort because too many dumps run.
    pub fn warn_busy(&mut self, from: SocketAddr, client: &str) {
        if let Some(suppressed) = self.allow_slot(REASONS, Instant::now()) {
            tracing::warn!(%client, %from, suppressed, "too many dumps at once; crash told to abort");
        }
    }

    /// Logs a dropped packet at warn level, rate limited per reason.
    pub fn warn(&mut self, reason: DropReason, from: SocketAddr, detail: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.allow(reason, Instant::now()) {
            if suppressed > 0 {
                tracing::warn!(%from, %reason, suppressed, "dropped packet: {detail}");
            } else {
                tracing::warn!(%from, %reason, "dropped packet: {detail}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_index_and_name() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), REASONS);
    }

    #[test]
    fn session_counts_list_only_nonzero_reasons() {
        let mut c = DropCounts::default();
        c.add(DropReason::BadCrc);
        c.add(DropReason::BadCrc);
        c.add(DropReason::WrongSource);
        assert_eq!(c.total(), 3);
        let m = c.to_map();
        assert_eq!(m.len(), 2);
        assert_eq!(m["bad_crc"], 2);
        assert_eq!(m["wrong_source"], 1);
    }

    #[test]
    fn server_snapshot_reflects_counters() {
        let s = ServerStats::default();
        s.drop_packet(DropReason::Oversized);
        s.packet_received();
        s.dump_started();
        s.dump_ended(DumpEnd::Complete);
        let snap = s.snapshot();
        assert_eq!(snap.dropped(DropReason::Oversized), 1);
        assert_eq!(snap.dropped(DropReason::BadCrc), 0);
        assert_eq!(snap.packets_received, 1);
        assert_eq!((snap.dumps_started, snap.dumps_complete, snap.dumps_incomplete), (1, 1, 0));
    }

    #[test]
    fn limiter_lets_one_warning_through_per_interval_and_counts_the_rest() {
        let mut l = WarnLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.allow(DropReason::BadCrc, t0), Some(0));
        assert_eq!(l.allow(DropReason::BadCrc, t0 + Duration::from_millis(10)), None);
        assert_eq!(l.allow(DropReason::BadCrc, t0 + Duration::from_millis(20)), None);
        // Another reason has its own budget.
        assert_eq!(l.allow(DropReason::BadMagic, t0), Some(0));
        assert_eq!(l.allow(DropReason::BadCrc, t0 + Duration::from_secs(2)), Some(2));
    }
}
