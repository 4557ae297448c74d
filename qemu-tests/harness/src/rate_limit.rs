//! A link of limited rate with a bounded queue in front of it, like a switch port: a
//! token bucket releases bytes at `bytes_per_s` (with a burst of at most `burst_bytes`),
//! datagrams that find no tokens wait in a FIFO queue of bounded depth, and a datagram
//! that finds the queue full is dropped (drop-tail).
//!
//! [`LinkQueue`] is the pure model, driven by a clock the caller passes in (nanoseconds
//! since any epoch), so it is tested without wall-clock time; the fault proxy
//! ([`crate::proxy::ProxyConfig`]'s `to_server_rate` / `to_client_rate`) runs one per
//! direction and sends each datagram at the departure time the model gives it.
//!
//! ```
//! use netdump_qemu_harness::rate_limit::{LinkQueue, QueueDepth, RateLimit, WIRE_OVERHEAD};
//! // 100 Mbit/s with 32 full-size frames of queue.
//! let mut port = LinkQueue::new(RateLimit::mbit_s(100.0, QueueDepth::Packets(32)));
//! let depart = port.offer(0, 1472 + WIRE_OVERHEAD as u64);
//! assert_eq!(depart, Some(0), "the bucket starts full: the first frame goes at once");
//! ```

use std::collections::VecDeque;

/// Bytes a UDP datagram occupies on an Ethernet link beyond its payload: the Ethernet
/// header (14), IPv4 (20) and UDP (8). What a rate limit charges per datagram on top of
/// the bytes the proxy relays.
pub const WIRE_OVERHEAD: usize = 14 + 20 + 8;

/// Bytes of the largest Ethernet frame (1500-byte MTU), the default burst.
pub const FULL_FRAME: u64 = 1514;

/// How deep the queue in front of the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueDepth {
    /// At most this many datagrams wait.
    Packets(usize),
    /// At most this many bytes (wire bytes, overhead included) wait.
    Bytes(u64),
}

/// A rate limit of one direction: bytes per second, the bucket's burst, the queue's depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Long-run rate, in wire bytes (payload + [`WIRE_OVERHEAD`]) per second.
    pub bytes_per_s: u64,
    /// Most bytes the bucket holds: what may go back to back after an idle spell. At
    /// least one frame; a larger burst lets a sender exceed the rate for a moment.
    pub burst_bytes: u64,
    /// How many datagrams may wait for tokens before new ones are dropped.
    pub queue: QueueDepth,
}

impl RateLimit {
    /// `mbit` megabits (10^6 bits) per second of wire bytes, a burst of one full frame.
    pub fn mbit_s(mbit: f64, queue: QueueDepth) -> Self {
        RateLimit { bytes_per_s: (mbit * 1e6 / 8.0) as u64, burst_bytes: FULL_FRAME, queue }
    }

    /// The rate in megabits per second.
    pub fn mbit(&self) -> f64 {
        self.bytes_per_s as f64 * 8.0 / 1e6
    }

    /// Short text for a summary, e.g. `100 Mbit/s, queue 32 packets`.
    pub fn describe(&self) -> String {
        let q = match self.queue {
            QueueDepth::Packets(n) => format!("{n} packets"),
            QueueDepth::Bytes(b) => format!("{b} bytes"),
        };
        format!("{:.0} Mbit/s, queue {q}", self.mbit())
    }
}

/// What a [`LinkQueue`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams accepted (sent at once or queued).
    pub accepted: u64,
    /// Wire bytes accepted.
    pub accepted_bytes: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
    /// The most datagrams, and the most bytes, that ever waited at once.
    pub max_queued_packets: usize,
    pub max_queued_bytes: u64,
}

/// Scale of the bucket's level: bytes × 10^9, so that a rate in bytes per second times a
/// time in nanoseconds adds to it exactly.
const SCALE: u128 = 1_000_000_000;

/// A token bucket and its drop-tail queue (see the module's text).
#[derive(Debug, Clone)]
pub struct LinkQueue {
    limit: RateLimit,
    /// Tokens (bytes × [`SCALE`]) at time `level_at_ns`, after the last departure.
    level: u128,
    level_at_ns: u64,
    /// Departure time and wire bytes of every datagram still waiting, in order.
    waiting: VecDeque<(u64, u64)>,
    waiting_bytes: u64,
    stats: LinkStats,
}

impl LinkQueue {
    /// An idle link: its bucket full, its queue empty.
    pub fn new(limit: RateLimit) -> Self {
        assert!(limit.bytes_per_s > 0, "a rate limit of 0 bytes per second sends nothing");
        let level = u128::from(limit.burst_bytes) * SCALE;
        LinkQueue {
            limit,
            level,
            level_at_ns: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            stats: LinkStats::default(),
        }
    }

    /// The limit this queue enforces.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// What it did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Datagrams and wire bytes waiting at `now_ns` (those not yet departed).
    pub fn queued(&mut self, now_ns: u64) -> (usize, u64) {
        self.forget_departed(now_ns);
        (self.waiting.len(), self.waiting_bytes)
    }

    fn forget_departed(&mut self, now_ns: u64) {
        while let Some(&(at, bytes)) = self.waiting.front() {
            if at > now_ns {
                break;
            }
            self.waiting.pop_front();
            self.waiting_bytes -= bytes;
        }
    }

    /// A datagram of `wire_bytes` arrives at `now_ns` (times must not go backwards):
    /// returns when it leaves the link, or `None` when the queue is full and it is
    /// dropped. One that finds tokens leaves at `now_ns` and never occupies the queue.
    pub fn offer(&mut self, now_ns: u64, wire_bytes: u64) -> Option<u64> {
        self.forget_departed(now_ns);
        let rate = u128::from(self.limit.bytes_per_s);
        let need = u128::from(wire_bytes) * SCALE;
        // A frame larger than the burst could never collect its tokens: the bucket holds
        // at least one of it.
        let cap = (u128::from(self.limit.burst_bytes) * SCALE).max(need);
        let start = now_ns.max(self.level_at_ns);
        let level = (self.level + rate * u128::from(start - self.level_at_ns)).min(cap);
        let wait_ns = if level >= need { 0 } else { (need - level).div_ceil(rate) as u64 };
        let depart = start + wait_ns;
        if depart > now_ns {
            let full = match self.limit.queue {
                QueueDepth::Packets(n) => self.waiting.len() >= n,
                QueueDepth::Bytes(b) => self.waiting_bytes + wire_bytes > b,
            };
            if full {
                self.stats.dropped += 1;
                return None;
            }
            self.waiting.push_back((depart, wire_bytes));
            self.waiting_bytes += wire_bytes;
            self.stats.max_queued_packets = self.stats.max_queued_packets.max(self.waiting.len());
            self.stats.max_queued_bytes = self.stats.max_queued_bytes.max(self.waiting_bytes);
        }
        self.level = (level + rate * u128::from(wait_ns)).min(cap) - need;
        self.level_at_ns = depart;
        self.stats.accepted += 1;
        self.stats.accepted_bytes += wire_bytes;
        Some(depart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 1500;

    fn limit(bytes_per_s: u64, burst_bytes: u64, queue: QueueDepth) -> RateLimit {
        RateLimit { bytes_per_s, burst_bytes, queue }
    }

    #[test]
    fn the_long_run_rate_is_the_configured_rate_within_the_burst() {
        // 1 MB/s, a burst of 4 frames, a queue that never fills: 1000 frames offered at
        // once leave over (1000 · 1500 − burst) / rate seconds.
        let burst = 4 * FRAME;
        let mut q = LinkQueue::new(limit(1_000_000, burst, QueueDepth::Packets(10_000)));
        let departures: Vec<u64> = (0..1000).map(|_| q.offer(0, FRAME).unwrap()).collect();
        let last = *departures.last().unwrap();
        let expected_ns = (1000 * FRAME - burst) * 1_000_000_000 / 1_000_000;
        assert!(last.abs_diff(expected_ns) <= 1, "last departure {last} ns, expected {expected_ns} ns");
        assert_eq!(departures.iter().filter(|&&d| d == 0).count(), 4, "the burst goes at once");
        // In order, and each frame one frame time after the one before once the burst is spent.
        for w in departures[4..].windows(2) {
            assert!(w[1] - w[0] <= FRAME * 1000 + 1 && w[1] - w[0] >= FRAME * 1000 - 1, "{w:?}");
        }
    }

    #[test]
    fn a_sender_at_twice_the_rate_gets_the_rate_and_the_rest_is_dropped() {
        // Offered at 2 MB/s (a frame every 750 µs) into a 1 MB/s link with 8 frames of
        // queue: about half is dropped, and what is accepted leaves at 1 MB/s.
        let mut q = LinkQueue::new(limit(1_000_000, FRAME, QueueDepth::Packets(8)));
        let mut last = 0;
        for i in 0..10_000u64 {
            if let Some(d) = q.offer(i * 750_000, FRAME) {
                last = d;
            }
        }
        let s = q.stats();
        let rate = s.accepted_bytes as f64 / (last as f64 / 1e9);
        assert!((rate - 1e6).abs() < 1e6 * 0.01, "long-run rate {rate} B/s");
        assert!(s.dropped > 4_900 && s.dropped < 5_100, "{s:?}");
        assert_eq!(s.dropped + s.accepted, 10_000);
    }

    #[test]
    fn a_full_queue_drops_and_frees_room_as_frames_leave() {
        let mut q = LinkQueue::new(limit(1_000_000, FRAME, QueueDepth::Packets(4)));
        assert_eq!(q.offer(0, FRAME), Some(0), "the first finds tokens");
        for i in 1..=4 {
            assert_eq!(q.offer(0, FRAME), Some(i * 1_500_000), "queued behind {i}");
        }
        assert_eq!(q.queued(0), (4, 4 * FRAME));
        assert_eq!(q.offer(0, FRAME), None, "a fifth waiting frame is dropped");
        assert_eq!(q.stats().dropped, 1);
        // Once the first queued frame left, one more fits, behind the last.
        assert_eq!(q.queued(1_500_000), (3, 3 * FRAME));
        assert_eq!(q.offer(1_500_000, FRAME), Some(5 * 1_500_000));
        assert_eq!(q.offer(1_500_000, FRAME), None);
    }

    #[test]
    fn a_byte_deep_queue_counts_bytes() {
        let mut q = LinkQueue::new(limit(1_000_000, FRAME, QueueDepth::Bytes(1000)));
        assert_eq!(q.offer(0, FRAME), Some(0));
        assert!(q.offer(0, 600).is_some());
        assert_eq!(q.offer(0, 600), None, "1200 bytes would wait, the queue holds 1000");
        assert!(q.offer(0, 400).is_some(), "a smaller one still fits");
        assert_eq!(q.queued(0), (2, 1000));
    }

    #[test]
    fn a_queue_never_exceeds_its_depth() {
        // Bursty arrivals of mixed sizes, at times drawn from a fixed sequence.
        for depth in [QueueDepth::Packets(5), QueueDepth::Bytes(6000)] {
            // Offered at about 1.6 MB/s into 1 MB/s: the queue fills again and again.
            let mut q = LinkQueue::new(limit(1_000_000, 3000, depth));
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut now = 0;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                now += x % 1_000_000;
                let bytes = 60 + x % 1455;
                q.offer(now, bytes);
                let (packets, waiting) = q.queued(now);
                match depth {
                    QueueDepth::Packets(n) => assert!(packets <= n),
                    QueueDepth::Bytes(b) => assert!(waiting <= b),
                }
            }
            let s = q.stats();
            assert!(s.dropped > 0, "the arrivals outran the link at times: {s:?}");
            match depth {
                QueueDepth::Packets(n) => assert_eq!(s.max_queued_packets, n),
                QueueDepth::Bytes(b) => assert!(s.max_queued_bytes <= b && s.max_queued_bytes > b - 1515),
            }
        }
    }

    #[test]
    fn an_idle_link_refills_its_bucket_only_up_to_the_burst() {
        let mut q = LinkQueue::new(limit(1_000_000, 2 * FRAME, QueueDepth::Packets(100)));
        // A long idle spell: still only two frames go at once.
        let t = 10_000_000_000;
        assert_eq!(q.offer(t, FRAME), Some(t));
        assert_eq!(q.offer(t, FRAME), Some(t));
        assert_eq!(q.offer(t, FRAME), Some(t + 1_500_000));
    }

    #[test]
    fn a_frame_larger_than_the_burst_still_goes() {
        let mut q = LinkQueue::new(limit(1_000_000, 100, QueueDepth::Packets(1)));
        assert_eq!(q.offer(0, FRAME), Some(1_400_000), "waits for the tokens it lacks");
        assert_eq!(q.offer(1_400_000, FRAME), Some(2_900_000));
    }

    #[test]
    fn mbit_s_counts_megabits_of_wire_bytes() {
        let l = RateLimit::mbit_s(100.0, QueueDepth::Packets(32));
        assert_eq!(l.bytes_per_s, 12_500_000);
        assert_eq!(l.burst_bytes, FULL_FRAME);
        assert_eq!(l.describe(), "100 Mbit/s, queue 32 packets");
    }
}
