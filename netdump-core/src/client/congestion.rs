//! Congestion control of the DATA window: AIMD whose reductions need evidence of a queue.
//!
//! The window ([`super::window::SackWindow`]) lets out at most [`Congestion::window`]
//! packets beyond its cumulative point, never more than the configured window (the cap).
//! The scheme, and why (docs/PROTOCOL.md, "Congestion control"):
//!
//! - **Start at the configured window** (at most [`INITIAL_WINDOW`]): a dump goes to a
//!   server the operator configured, usually on the same LAN, and the configured window is
//!   the operator's statement of what the path takes. Slow start from a few packets cost a
//!   short dump most of its time (a 1 MiB dump at 10 ms of delay took 7 round trips where
//!   the fixed window took 3); a path that cannot take the window shows it in the first
//!   round trip (a run of losses, or a queue delay) and the controller reduces then.
//! - **Growth** as in TCP Reno: slow start (+1 packet per packet acknowledged) after a
//!   collapse, up to the slow-start threshold, then congestion avoidance (+1 per window of
//!   packets acknowledged, about one per round trip), never above the cap.
//! - **Delay as the early signal.** Every RTT sample updates the smallest RTT seen (the
//!   path without a queue) and a fast-moving recent RTT; their difference is the delay of
//!   the queue this sender built. While it exceeds [`queue_threshold`](Congestion::queue_threshold)
//!   the window stops growing (and slow start ends), so a sender usually stops short of
//!   overflowing a queue instead of finding it by loss.
//! - **Loss reduces only with evidence of a queue.** A hole reported by selective
//!   acknowledgement while later packets arrive halves the window only when the queue
//!   delay is above twice the threshold (growth stopped at once the threshold, so a queue
//!   this high is one that grew anyway: another sender's, or a burst), or the hole is a
//!   run of at least [`LOSS_RUN`] packets
//!   lost back to back (what a full drop-tail queue does to a burst). An isolated hole on
//!   a path without a queue is taken for random loss: the packet is sent again and the
//!   window stays. At most one reduction per window of data: losses of packets sent
//!   before the last reduction belong to it (`recover`).
//! - **Timeouts.** One retransmission timeout changes nothing: under emulation and on a
//!   loaded host most are spurious (the sender or its ACKs were descheduled longer than
//!   an RTO, not lost), and a real loss of a retransmission is random loss too. A second
//!   one without an acknowledgement in between means the ACK clock is gone: the window
//!   falls to [`FLOOR`] and slow-starts back to half of what it was.
//!
//! Everything here is a few integers: no allocation, no loop, constant time per call.

/// The most packets the window starts with: it starts at the configured window (the cap)
/// up to this many (370 KiB of DATA). Not RFC 6928's 10 packets: a dump is one flow to a
/// server the operator chose, on a path the configured window was chosen for
/// (docs/PROTOCOL.md, "Congestion control").
pub const INITIAL_WINDOW: u32 = 256;
/// The window never falls below this many packets (or the cap, if smaller).
pub const FLOOR: u32 = 4;
/// Packets lost back to back that mean a queue overflowed, whatever the delay says.
pub const LOSS_RUN: u32 = 3;
/// Queue delay below which a delay is taken for the noise of the path and the hosts,
/// microseconds: a polled client and an emulated NIC add jitter of their own.
pub const QUEUE_DELAY_FLOOR_US: u64 = 1_500;

/// What an ACK's selective acknowledgement revealed as lost (packets sent once, below the
/// highest packet acknowledged, not acknowledged; each reported once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossReport {
    /// The newest (highest) lost seq.
    pub newest: u32,
    /// Packets newly known lost.
    pub holes: u32,
    /// The longest run of consecutive lost packets among them.
    pub longest_run: u32,
}

/// What the controller did during a dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CongestionStats {
    /// Window reductions on loss with evidence of a queue (or on timeout).
    pub reductions: u32,
    /// Lost packets taken for random loss: resent without a reduction.
    pub random_losses: u32,
    /// Lost packets that belonged to a reduction already made (the same window of data).
    pub losses_in_recovery: u32,
    /// Timeouts that collapsed the window to the floor.
    pub collapses: u32,
    /// The smallest window after a reduction.
    pub smallest_window: u32,
}

/// The congestion state of one dump (see the module's text).
#[derive(Debug, Clone)]
pub struct Congestion {
    cap: u32,
    cwnd: u32,
    ssthresh: u32,
    /// Packets acknowledged towards the next +1 of congestion avoidance.
    acked: u32,
    min_rtt_us: Option<u64>,
    recent_rtt_us: Option<u64>,
    /// Losses of packets before this seq belong to the last reduction.
    recover: u32,
    /// A timeout happened and no packet was acknowledged since.
    timed_out: bool,
    stats: CongestionStats,
}

impl Congestion {
    /// A controller for a window of at most `cap` packets.
    pub fn new(cap: usize) -> Self {
        let cap = u32::try_from(cap).unwrap_or(u32::MAX).max(1);
        Congestion {
            cap,
            cwnd: INITIAL_WINDOW.min(cap),
            ssthresh: cap,
            acked: 0,
            min_rtt_us: None,
            recent_rtt_us: None,
            recover: 0,
            timed_out: false,
            stats: CongestionStats { smallest_window: INITIAL_WINDOW.min(cap), ..Default::default() },
        }
    }

    /// Packets the sender may have in flight now, `1..=cap`.
    pub fn window(&self) -> u32 {
        self.cwnd
    }

    /// The slow-start threshold.
    pub fn ssthresh(&self) -> u32 {
        self.ssthresh
    }

    /// What it did so far.
    pub fn stats(&self) -> CongestionStats {
        self.stats
    }

    fn floor(&self) -> u32 {
        FLOOR.min(self.cap)
    }

    /// The queue delay above which a queue is taken to be building: an eighth of the
    /// path's own RTT, at least [`QUEUE_DELAY_FLOOR_US`].
    pub fn queue_threshold(&self) -> u64 {
        (self.min_rtt_us.unwrap_or(0) / 8).max(QUEUE_DELAY_FLOOR_US)
    }

    /// The delay of the queue this sender built: the recent RTT above the smallest.
    pub fn queue_delay_us(&self) -> u64 {
        match (self.recent_rtt_us, self.min_rtt_us) {
            (Some(recent), Some(min)) => recent.saturating_sub(min),
            _ => 0,
        }
    }

    /// Growth stops above the threshold.
    fn queue_building(&self) -> bool {
        self.queue_delay_us() > self.queue_threshold()
    }

    /// A loss is congestion above twice the threshold.
    fn queue_full(&self) -> bool {
        self.queue_delay_us() > 2 * self.queue_threshold()
    }

    /// A round-trip sample of a packet sent once.
    pub fn on_rtt_sample(&mut self, sample_us: u64) {
        self.min_rtt_us = Some(self.min_rtt_us.map_or(sample_us, |m| m.min(sample_us)));
        // Moves a quarter of the way per sample: quicker than the RTO's average, so that
        // a queue shows within a round trip or two.
        self.recent_rtt_us = Some(self.recent_rtt_us.map_or(sample_us, |r| (3 * r + sample_us) / 4));
    }

    /// `newly_acked` packets were acknowledged (after the ACK's RTT sample was given).
    pub fn on_ack(&mut self, newly_acked: u32) {
        if newly_acked == 0 {
            return;
        }
        self.timed_out = false;
        if self.queue_building() {
            // Hold: the link is busy (the queue proves it), more would only wait or drop.
            // Slow start ends here.
            self.ssthresh = self.ssthresh.min(self.cwnd);
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(newly_acked).min(self.ssthresh).min(self.cap);
            return;
        }
        self.acked = self.acked.saturating_add(newly_acked);
        if self.acked >= self.cwnd {
            self.acked -= self.cwnd;
            self.cwnd = (self.cwnd + 1).min(self.cap);
        }
    }

    /// Packets newly known lost; `next_seq` is the seq the next new packet gets. Returns
    /// true if the window was reduced.
    pub fn on_loss(&mut self, loss: LossReport, next_seq: u32) -> bool {
        if loss.holes == 0 {
            return false;
        }
        if loss.newest < self.recover {
            self.stats.losses_in_recovery += loss.holes;
            return false;
        }
        if loss.longest_run < LOSS_RUN && !self.queue_full() {
            self.stats.random_losses += loss.holes;
            return false;
        }
        self.reduce(next_seq);
        true
    }

    /// The retransmission timer fired with nothing acknowledged for an RTO.
    pub fn on_timeout(&mut self, next_seq: u32) {
        if self.timed_out {
            // No ACK since the last timeout either: the ACK clock is gone.
            self.ssthresh = (self.cwnd / 2).max(self.floor());
            self.cwnd = self.floor();
            self.acked = 0;
            self.recover = next_seq;
            self.stats.collapses += 1;
            self.stats.smallest_window = self.stats.smallest_window.min(self.cwnd);
            return;
        }
        self.timed_out = true;
    }

    fn reduce(&mut self, next_seq: u32) {
        self.cwnd = (self.cwnd / 2).max(self.floor());
        self.ssthresh = self.cwnd;
        self.acked = 0;
        self.recover = next_seq;
        self.stats.reductions += 1;
        self.stats.smallest_window = self.stats.smallest_window.min(self.cwnd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isolated(seq: u32) -> LossReport {
        LossReport { newest: seq, holes: 1, longest_run: 1 }
    }

    /// Acks `n` packets one at a time, each with an RTT sample of `rtt_us`.
    fn ack_each(c: &mut Congestion, n: u32, rtt_us: u64) {
        for _ in 0..n {
            c.on_rtt_sample(rtt_us);
            c.on_ack(1);
        }
    }

    #[test]
    fn the_window_starts_at_the_configured_window_up_to_the_initial_window() {
        assert_eq!(Congestion::new(64).window(), 64, "the default window, at once");
        assert_eq!(Congestion::new(256).window(), 256);
        assert_eq!(Congestion::new(512).window(), INITIAL_WINDOW);
    }

    #[test]
    fn slow_start_doubles_per_window_up_to_the_cap() {
        let mut c = Congestion::new(512);
        assert_eq!(c.window(), 256);
        ack_each(&mut c, 100, 1000);
        assert_eq!(c.window(), 356, "one more packet per packet acknowledged");
        ack_each(&mut c, 1000, 1000);
        assert_eq!(c.window(), 512, "never above the configured window");
    }

    #[test]
    fn congestion_avoidance_adds_one_packet_per_window_acknowledged() {
        let mut c = Congestion::new(256);
        c.on_rtt_sample(1000);
        c.on_loss(LossReport { newest: 5, holes: 3, longest_run: 3 }, 10);
        let w = c.window();
        assert_eq!(w, 128);
        ack_each(&mut c, w - 1, 1000);
        assert_eq!(c.window(), w, "not before a whole window is acknowledged");
        ack_each(&mut c, 1, 1000);
        assert_eq!(c.window(), w + 1);
        ack_each(&mut c, w + 1, 1000);
        assert_eq!(c.window(), w + 2);
    }

    #[test]
    fn an_isolated_loss_without_a_queue_does_not_reduce() {
        let mut c = Congestion::new(64);
        ack_each(&mut c, 100, 20_000);
        assert_eq!(c.window(), 64);
        for seq in [100, 200, 300] {
            assert!(!c.on_loss(isolated(seq), seq + 50));
        }
        assert_eq!(c.window(), 64, "random loss is resent, not mistaken for congestion");
        assert_eq!(c.stats().random_losses, 3);
        assert_eq!(c.stats().reductions, 0);
    }

    #[test]
    fn a_run_of_losses_halves_the_window() {
        let mut c = Congestion::new(64);
        ack_each(&mut c, 100, 1000);
        assert!(c.on_loss(LossReport { newest: 120, holes: LOSS_RUN, longest_run: LOSS_RUN }, 164));
        assert_eq!(c.window(), 32);
        assert_eq!(c.ssthresh(), 32);
    }

    #[test]
    fn a_loss_while_the_queue_delay_grows_halves_the_window() {
        let mut c = Congestion::new(64);
        ack_each(&mut c, 100, 1000);
        // RTT grows by 4 ms: a queue this sender filled.
        ack_each(&mut c, 8, 5000);
        assert!(c.queue_delay_us() > 2 * c.queue_threshold());
        assert!(c.on_loss(isolated(110), 170));
        assert_eq!(c.window(), 32);
    }

    #[test]
    fn only_one_reduction_per_window_of_data() {
        let mut c = Congestion::new(64);
        ack_each(&mut c, 100, 1000);
        let run = |newest| LossReport { newest, holes: 4, longest_run: 4 };
        assert!(c.on_loss(run(110), 164));
        // More losses of packets sent before the reduction: the same congestion event.
        assert!(!c.on_loss(run(150), 170));
        assert!(!c.on_loss(run(163), 180));
        assert_eq!(c.window(), 32);
        assert_eq!(c.stats().losses_in_recovery, 8);
        // A loss of a packet sent after it is a new event.
        assert!(c.on_loss(run(164), 200));
        assert_eq!(c.window(), 16);
    }

    #[test]
    fn the_window_never_falls_below_its_floor() {
        let mut c = Congestion::new(64);
        let mut next = 0;
        for _ in 0..20 {
            next += 100;
            c.on_loss(LossReport { newest: next - 1, holes: 5, longest_run: 5 }, next);
        }
        assert_eq!(c.window(), FLOOR);
        c.on_timeout(next + 1);
        c.on_timeout(next + 2);
        assert_eq!(c.window(), FLOOR);
        assert_eq!(c.stats().smallest_window, FLOOR);
    }

    #[test]
    fn a_cap_below_the_initial_window_is_respected() {
        let mut c = Congestion::new(1);
        assert_eq!(c.window(), 1, "stop-and-wait stays stop-and-wait");
        ack_each(&mut c, 100, 1000);
        assert_eq!(c.window(), 1);
        c.on_loss(LossReport { newest: 3, holes: 4, longest_run: 4 }, 10);
        assert_eq!(c.window(), 1);
    }

    #[test]
    fn a_growing_queue_stops_growth_before_any_loss() {
        let mut c = Congestion::new(512);
        ack_each(&mut c, 30, 2000);
        let w = c.window();
        assert!(w > INITIAL_WINDOW);
        ack_each(&mut c, 200, 6000);
        assert!(c.window() <= w + 2, "a few samples to see the queue, then it holds: {} vs {w}", c.window());
        assert!(c.ssthresh() <= c.window(), "and slow start is over");
        assert_eq!(c.stats().reductions, 0, "holding is not a reduction");
    }

    #[test]
    fn only_a_second_timeout_without_progress_collapses_the_window() {
        let mut c = Congestion::new(64);
        ack_each(&mut c, 100, 1000);
        c.on_timeout(200);
        assert_eq!(c.window(), 64, "one timeout: most are a stalled sender, not a loss");
        ack_each(&mut c, 1, 1000);
        c.on_timeout(300);
        assert_eq!(c.window(), 64, "progress came between the two timeouts");
        c.on_timeout(300);
        assert_eq!(c.window(), FLOOR, "no ACK since the last: the ACK clock is gone");
        assert_eq!(c.ssthresh(), 32);
        ack_each(&mut c, 30, 1000);
        assert_eq!(c.window(), 32, "slow start back to the threshold");
    }

    #[test]
    fn jitter_below_the_floor_is_not_a_queue() {
        let mut c = Congestion::new(64);
        for i in 0..200u64 {
            c.on_rtt_sample(500 + (i * 7919) % QUEUE_DELAY_FLOOR_US);
            c.on_ack(1);
        }
        assert!(!c.on_loss(isolated(300), 400));
        assert_eq!(c.window(), 64);
    }
}
