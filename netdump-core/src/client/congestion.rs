//! Congestion control of the DATA stream: a rate-based sender in the spirit of BBR.
//!
//! The sender measures the bottleneck's delivery rate from the ACKs, paces DATA at about
//! that rate and caps what is in flight at twice the path's bandwidth-delay product;
//! isolated losses are taken for random loss. The scheme, and why (docs/PROTOCOL.md,
//! "Congestion control"):
//!
//! - **Delivery rate.** Every packet sent records how many bytes had been delivered
//!   (acknowledged, cumulatively or selectively) and when ([`SendState`]). When an ACK
//!   delivers it, the bytes delivered since, over the longer of the time they took to
//!   send and to acknowledge (never shorter than the smallest RTT), are a sample of the
//!   rate the path delivers. The estimate is the largest sample of the last
//!   10–20 round trips ([`FILTER_ROUNDS`]); a sample of a packet sent while the sender had
//!   nothing to send, or was behind its pacing schedule (held up: a descheduled vCPU),
//!   counts only if it raises the estimate.
//! - **Pacing.** New packets and retransmissions leave no sooner than their bytes at the
//!   pacing rate (the estimate times a gain) after the previous one, measured on the
//!   caller's clock; a sender behind its schedule may catch up by [`PACING_CREDIT`]
//!   packets back to back, or [`PACING_CREDIT_US`] at the pacing rate where that is more
//!   (a fast path: a LAN, where the polled sender is the bottleneck and every hiccup it
//!   could not make up would be lost for good). Until the first sample there is no rate and no pacing.
//! - **Gains.** Startup paces at 2.885× the estimate (the rate doubles per round trip)
//!   until the estimate stops growing by a quarter for three round trips, or a queue
//!   overflows; drain then paces at 1/2.885 until the packets in the network are down to
//!   the bandwidth-delay product (or for one smallest RTT: a server that holds ACKs keeps
//!   more than that in flight); after that a cycle of eight phases of one smallest RTT
//!   each: 1.125× (probe for more), 0.875× (drain what the probe queued, ending
//!   likewise), six at 1×. The probe queues an eighth of the bandwidth-delay product at
//!   most (BBR's quarter filled a 32-packet queue at 150 Mbit/s and 10 ms on its own).
//! - **In flight** at most twice the target, the target being the bandwidth-delay product
//!   (estimate × smallest RTT) plus [`ACK_QUANTUM`] packets a server holds an ACK for;
//!   in startup 2.885× the target, at least the initial window; always within
//!   `[FLOOR, cap]`. Pacing keeps the queue short; the cap is a backstop.
//! - **Loss.** An isolated hole is random loss: it is resent, nothing else changes. A
//!   queue that overflowed shows as a run of [`LOSS_RUN`] packets lost back to back, or
//!   as more than 1 packet in [`LOSS_SHARE`] lost over [`LOSS_SAMPLE`] (a paced sender a
//!   little above the rate loses one here and there): then the estimate is cut by 15%
//!   (startup ends), once per window of data (`recover`); samples at the path's rate
//!   bring it back. What the first, unpaced window loses (no rate is known yet) ends
//!   nothing.
//! - **Timeouts.** One changes nothing (most are a descheduled sender or server); a
//!   second without an ACK in between means the ACK clock is gone: the window is
//!   [`FLOOR`] until an ACK comes.
//!
//! Everything here is a few integers: no allocation, no loop, constant time per call.

use crate::proto::HEADER_LEN;

/// The most packets in flight before the first rate sample: the configured window (the
/// cap) up to this many. A dump is one flow to a server the operator chose, on a path the
/// configured window was chosen for (docs/PROTOCOL.md, "Congestion control").
pub const INITIAL_WINDOW: u32 = 256;
/// The window never falls below this many packets (or the cap, if smaller).
pub const FLOOR: u32 = 4;
/// Packets lost back to back that mean a queue overflowed.
pub const LOSS_RUN: u32 = 3;
/// More than one packet lost in this many means a queue overflowed (random loss of a
/// few percent stays below it), judged over [`LOSS_SAMPLE`] packets at a time.
pub const LOSS_SHARE: u64 = 16;
/// Packets (delivered or lost) over which the share of losses is judged.
pub const LOSS_SAMPLE: u64 = 64;
/// Packets a server may hold an acknowledgement for (netdumpd: every 32 packets, or 2 ms):
/// what is in flight beyond the bandwidth-delay product while the ACK is held.
pub const ACK_QUANTUM: u64 = 32;
/// Round trips each half of the rate filter covers: the estimate is the largest sample
/// of the last 10 to 20 (a sender held up for a few round trips does not lower it; a
/// queue that overflows cuts it at once).
pub const FILTER_ROUNDS: u64 = 10;
/// Packets a sender behind its pacing schedule may send back to back: enough to make up
/// the hiccups of a polled sender (a page read, a burst of ACKs to parse) when the sender
/// itself is the bottleneck, few enough for a shallow queue (a quarter of 32 packets).
pub const PACING_CREDIT: u64 = 8;
/// The credit in time, where it is more packets than [`PACING_CREDIT`]: 8 packets take
/// about 1 ms at 100 Mbit/s, 0.5 ms at 200 Mbit/s, so on such links the packet credit
/// holds; at LAN rates 0.5 ms is tens of packets, which a queue there drains as fast.
pub const PACING_CREDIT_US: u64 = 500;
/// Bytes of a DATA packet on an Ethernet link beyond its payload: Ethernet, IPv4, UDP and
/// the protocol header. What delivery and pacing count per packet.
pub const PACKET_OVERHEAD: u64 = 14 + 20 + 8 + HEADER_LEN as u64;

/// Gains in thousandths.
const STARTUP_GAIN: u64 = 2885;
const DRAIN_GAIN: u64 = 1000 * 1000 / STARTUP_GAIN;
const CYCLE: [u64; 8] = [1125, 875, 1000, 1000, 1000, 1000, 1000, 1000];
/// Bytes of a full frame: the packet size before anything was delivered.
const FULL_PACKET: u64 = 1514;

/// What a packet remembers from its send, for the rate sample its ACK gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendState {
    /// Bytes delivered when it was sent.
    pub delivered: u64,
    /// When the last delivery before its send was acknowledged.
    pub delivered_us: u64,
    /// When the newest packet of that delivery was sent.
    pub first_sent_us: u64,
    /// Sent while the sender had nothing more to send.
    pub app_limited: bool,
}

impl SendState {
    /// A zero state, for statics.
    pub const ZERO: SendState = SendState { delivered: 0, delivered_us: 0, first_sent_us: 0, app_limited: false };
}

/// What an ACK delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Packets newly acknowledged.
    pub packets: u32,
    /// Their bytes, with [`PACKET_OVERHEAD`] each.
    pub bytes: u64,
    /// The most recently sent of them: when, and its [`SendState`].
    pub newest: Option<(u64, SendState)>,
    /// The smallest RTT sample among them (packets sent once).
    pub rtt_us: Option<u64>,
}

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
    /// Cuts of the rate estimate on a queue that overflowed.
    pub reductions: u32,
    /// Lost packets taken for random loss.
    pub random_losses: u32,
    /// Lost packets that belonged to a reduction already made (the same window of data).
    pub losses_in_recovery: u32,
    /// Timeouts that collapsed the window to the floor.
    pub collapses: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Startup,
    Drain,
    /// The phase of [`CYCLE`].
    Probe(u8),
}

/// The congestion state of one dump (see the module's text).
#[derive(Debug, Clone)]
pub struct Congestion {
    cap: u32,
    mode: Mode,
    /// When the current drain or probe phase began.
    phase_us: u64,
    /// Smallest RTT seen (`u64::MAX`: none yet).
    min_rtt_us: u64,
    /// The rate filter, bytes per second: this epoch's largest sample, the last epoch's.
    bw: [u64; 2],
    round: u64,
    epoch_round: u64,
    next_round_delivered: u64,
    /// Startup: the estimate three rounds ago must grow by a quarter.
    full_bw: u64,
    full_bw_rounds: u8,
    /// Packets delivered, and lost at random, since the share of losses was last judged.
    tally_packets: u64,
    tally_lost: u64,
    delivered: u64,
    delivered_packets: u64,
    delivered_us: u64,
    first_sent_us: u64,
    /// Packets sent before this many bytes are delivered were sent app-limited.
    app_limited_until: u64,
    /// Pacing: the next packet may leave at this time, nanoseconds.
    next_send_ns: u64,
    /// Losses of packets before this seq belong to the last reduction.
    recover: u32,
    /// A timeout happened and no packet was acknowledged since.
    timed_out: bool,
    /// Two timeouts without an ACK: the window is the floor until one comes.
    clock_lost: bool,
    stats: CongestionStats,
}

impl Congestion {
    /// A controller for a window of at most `cap` packets.
    pub fn new(cap: usize) -> Self {
        Congestion {
            cap: u32::try_from(cap).unwrap_or(u32::MAX).max(1),
            mode: Mode::Startup,
            phase_us: 0,
            min_rtt_us: u64::MAX,
            bw: [0; 2],
            round: 0,
            epoch_round: 0,
            next_round_delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            tally_packets: 0,
            tally_lost: 0,
            delivered: 0,
            delivered_packets: 0,
            delivered_us: 0,
            first_sent_us: 0,
            app_limited_until: 0,
            next_send_ns: 0,
            recover: 0,
            timed_out: false,
            clock_lost: false,
            stats: CongestionStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> CongestionStats {
        self.stats
    }

    /// The delivery rate estimate, bytes per second (0: no sample yet).
    pub fn bandwidth(&self) -> u64 {
        self.bw[0].max(self.bw[1])
    }

    /// The smallest RTT seen, if any.
    pub fn min_rtt_us(&self) -> Option<u64> {
        (self.min_rtt_us != u64::MAX).then_some(self.min_rtt_us)
    }

    fn gain(&self) -> u64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain => DRAIN_GAIN,
            // The phase is always below `CYCLE.len()`: the `%` (a mask) only spares a bounds check.
            Mode::Probe(i) => CYCLE[i as usize % CYCLE.len()],
        }
    }

    /// The pacing rate, bytes per second (0: not paced).
    #[inline(never)]
    pub fn pacing_rate(&self) -> u64 {
        self.bandwidth() * self.gain() / 1000
    }

    /// Mean bytes of a delivered packet (a full frame before any).
    #[inline(never)]
    fn packet_bytes(&self) -> u64 {
        self.delivered.checked_div(self.delivered_packets).unwrap_or(FULL_PACKET).max(1)
    }

    /// The bandwidth-delay product, packets.
    #[inline(never)]
    pub fn bdp(&self) -> u64 {
        let rtt = self.min_rtt_us().unwrap_or(0);
        self.bandwidth().saturating_mul(rtt) / 1_000_000 / self.packet_bytes()
    }

    /// Packets in flight that keep the link busy: the bandwidth-delay product and what a
    /// server holds an ACK for.
    pub fn target(&self) -> u64 {
        self.bdp() + ACK_QUANTUM
    }

    /// Packets the sender may have in the network now, `1..=cap`.
    pub fn window(&self) -> u32 {
        let floor = FLOOR.min(self.cap);
        let w = if self.clock_lost {
            floor as u64
        } else if self.bandwidth() == 0 {
            INITIAL_WINDOW as u64
        } else if self.mode == Mode::Startup {
            (self.target() * STARTUP_GAIN / 1000).max(INITIAL_WINDOW as u64)
        } else {
            2 * self.target()
        };
        w.max(floor as u64).min(self.cap as u64) as u32
    }

    /// Whether pacing lets a packet leave at `now_us`.
    pub fn pacing_allows(&self, now_us: u64) -> bool {
        now_us.saturating_mul(1000) >= self.next_send_ns || self.pacing_rate() == 0
    }

    /// A packet of `bytes` (payload and [`PACKET_OVERHEAD`]) leaves at `now_us`, with
    /// `in_network` packets (not counting it) in the network; returns what it remembers.
    pub fn on_send(&mut self, now_us: u64, bytes: u64, in_network: usize) -> SendState {
        if in_network == 0 {
            // Starting from idle: the rate is measured from now, not from the last ACK.
            self.delivered_us = now_us;
            self.first_sent_us = now_us;
        }
        let rate = self.pacing_rate();
        if rate > 0 {
            let now_ns = now_us.saturating_mul(1000);
            let per_ns = |b: u64| b.saturating_mul(1_000_000_000) / rate;
            let credit = per_ns(PACING_CREDIT * self.packet_bytes()).max(PACING_CREDIT_US * 1000);
            if now_ns.saturating_sub(credit) > self.next_send_ns {
                // Behind the schedule by more than the credit: the sender was held up (a
                // descheduled vCPU, a long page read), not the path. What is in flight
                // now measures the sender; it may raise the estimate, not lower it.
                self.on_app_limited(in_network);
            }
            self.next_send_ns = self.next_send_ns.max(now_ns.saturating_sub(credit)) + per_ns(bytes);
        }
        SendState {
            delivered: self.delivered,
            delivered_us: self.delivered_us,
            first_sent_us: self.first_sent_us,
            app_limited: self.app_limited_until > self.delivered,
        }
    }

    /// The sender had nothing to send with `in_network` packets in the network: samples
    /// of packets sent until those are delivered say what the sender did, not the path.
    #[inline(never)]
    pub fn on_app_limited(&mut self, in_network: usize) {
        self.app_limited_until = self.delivered + (in_network as u64 + 1) * self.packet_bytes();
    }

    /// An ACK delivered `d` at `now_us`, leaving `in_network` packets in the network;
    /// `next_seq` is the seq the next new packet gets.
    pub fn on_ack(&mut self, now_us: u64, d: Delivery, in_network: usize, next_seq: u32) {
        if d.packets == 0 {
            return;
        }
        if self.bandwidth() == 0 {
            // Until the first sample nothing was paced: what that first window loses is
            // its own burst, not a sign that startup should end.
            self.recover = next_seq;
        }
        self.timed_out = false;
        self.clock_lost = false;
        if let Some(rtt) = d.rtt_us {
            self.min_rtt_us = self.min_rtt_us.min(rtt.max(1));
        }
        self.delivered += d.bytes;
        self.delivered_packets += u64::from(d.packets);
        self.delivered_us = now_us;
        self.tally(u64::from(d.packets), 0);
        let Some((sent_us, p)) = d.newest else { return };
        self.first_sent_us = sent_us;
        let new_round = p.delivered >= self.next_round_delivered;
        if new_round {
            self.next_round_delivered = self.delivered;
            self.round += 1;
        }
        // The longer of the send and the acknowledgement intervals: ACKs that arrive
        // bunched (a held ACK, a descheduled sender) do not make the path look faster.
        let interval = sent_us.saturating_sub(p.first_sent_us).max(now_us.saturating_sub(p.delivered_us));
        if interval > 0 && interval >= self.min_rtt_us().unwrap_or(0) {
            let rate = (self.delivered - p.delivered).saturating_mul(1_000_000) / interval;
            if !p.app_limited || rate >= self.bandwidth() {
                // The filter ages with the samples it takes: app-limited rounds keep it.
                let age = self.round - self.epoch_round;
                if age >= FILTER_ROUNDS {
                    self.bw = [0, if age < 2 * FILTER_ROUNDS { self.bw[0] } else { 0 }];
                    self.epoch_round = self.round;
                }
                self.bw[0] = self.bw[0].max(rate);
            }
        }
        if new_round {
            self.end_round();
        }
        let rtt = self.min_rtt_us().unwrap_or(0);
        let elapsed = now_us.saturating_sub(self.phase_us);
        match self.mode {
            Mode::Startup => {}
            // Draining ends when what the probe (or startup) queued is gone, or after a
            // round trip: with the server holding ACKs, the packets in flight may never
            // fall to the bandwidth-delay product.
            Mode::Drain | Mode::Probe(1) if in_network as u64 <= self.bdp() || elapsed >= rtt => {
                self.enter(Mode::Probe(2), now_us)
            }
            Mode::Probe(i) if elapsed >= rtt => self.enter(Mode::Probe((i + 1) % CYCLE.len() as u8), now_us),
            _ => {}
        }
    }

    fn enter(&mut self, mode: Mode, now_us: u64) {
        self.mode = mode;
        self.phase_us = now_us;
    }

    /// Counts packets delivered and lost at random; too many lost is a queue overflowing
    /// at a sender paced a little above the rate, which drops one packet here and there.
    #[inline(never)]
    fn tally(&mut self, packets: u64, lost: u64) {
        self.tally_packets += packets;
        self.tally_lost += lost;
        if self.tally_packets + self.tally_lost >= LOSS_SAMPLE {
            if self.tally_lost * LOSS_SHARE > self.tally_packets + self.tally_lost {
                self.congestion();
            }
            self.tally_packets = 0;
            self.tally_lost = 0;
        }
    }

    fn end_round(&mut self) {
        if self.mode == Mode::Startup {
            if self.bandwidth() >= self.full_bw + self.full_bw / 4 {
                self.full_bw = self.bandwidth();
                self.full_bw_rounds = 0;
            } else {
                self.full_bw_rounds += 1;
                if self.full_bw_rounds >= 3 {
                    self.enter(Mode::Drain, self.delivered_us);
                }
            }
        }
    }

    /// A queue overflowed: the rate is less than estimated.
    #[inline(never)]
    fn congestion(&mut self) {
        let cut = self.bandwidth() * 85 / 100;
        self.bw = [self.bw[0].min(cut), self.bw[1].min(cut)];
        self.stats.reductions += 1;
        if self.mode == Mode::Startup {
            self.enter(Mode::Drain, self.delivered_us);
        }
    }

    /// Packets newly known lost; `next_seq` is the seq the next new packet gets. Returns
    /// true if they were taken for a queue that overflowed.
    pub fn on_loss(&mut self, loss: LossReport, next_seq: u32) -> bool {
        if loss.holes == 0 {
            return false;
        }
        if loss.newest < self.recover {
            self.stats.losses_in_recovery += loss.holes;
            return false;
        }
        if loss.longest_run < LOSS_RUN {
            // Random, unless too many ([`Self::tally`]).
            self.stats.random_losses += loss.holes;
            let reductions = self.stats.reductions;
            self.tally(0, u64::from(loss.holes));
            if self.stats.reductions == reductions {
                return false;
            }
            self.recover = next_seq;
            return true;
        }
        self.recover = next_seq;
        self.congestion();
        true
    }

    /// The retransmission timer fired with nothing acknowledged for an RTO.
    pub fn on_timeout(&mut self) {
        if self.timed_out && !self.clock_lost {
            // No ACK since the last timeout either: the ACK clock is gone.
            self.clock_lost = true;
            self.stats.collapses += 1;
        }
        self.timed_out = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    /// Sends a packet of `bytes` at `now` and delivers it `rtt` later, as a path of
    /// unlimited rate would; returns the controller.
    fn send_and_ack(c: &mut Congestion, now: u64, bytes: u64, rtt: u64) {
        let s = c.on_send(now, bytes, 0);
        c.on_ack(now + rtt, Delivery { packets: 1, bytes, newest: Some((now, s)), rtt_us: Some(rtt) }, 0, 0);
    }

    /// A steady stream through a link of `rate` bytes per second, `rtt` microseconds:
    /// every packet acknowledged `rtt` after its send, sent at the link's rate.
    #[derive(Default)]
    struct Flow {
        sent: std::collections::VecDeque<(u64, SendState)>,
        now: u64,
    }

    impl Flow {
        fn run(&mut self, c: &mut Congestion, until: u64, rate: u64, rtt: u64) -> u64 {
            let bytes = 1500;
            let gap = bytes * MB / rate;
            while self.now < until {
                while let Some(&(at, s)) = self.sent.front() {
                    if at + rtt > self.now {
                        break;
                    }
                    self.sent.pop_front();
                    let d = Delivery { packets: 1, bytes, newest: Some((at, s)), rtt_us: Some(rtt) };
                    c.on_ack(at + rtt, d, self.sent.len(), 0);
                }
                let s = c.on_send(self.now, bytes, self.sent.len());
                self.sent.push_back((self.now, s));
                self.now += gap;
            }
            self.now
        }
    }

    fn stream(c: &mut Congestion, from: u64, until: u64, rate: u64, rtt: u64) -> u64 {
        Flow { now: from, ..Default::default() }.run(c, until, rate, rtt)
    }

    #[test]
    fn before_any_sample_the_window_is_the_initial_one_and_nothing_is_paced() {
        assert_eq!(Congestion::new(64).window(), 64);
        assert_eq!(Congestion::new(512).window(), INITIAL_WINDOW);
        assert_eq!(Congestion::new(1).window(), 1, "stop-and-wait stays stop-and-wait");
        let mut c = Congestion::new(64);
        for i in 0..100 {
            assert!(c.pacing_allows(i), "no rate, no pacing");
            c.on_send(i, 1500, i as usize);
        }
    }

    #[test]
    fn the_estimate_follows_the_delivery_rate_and_paces_at_it() {
        let mut c = Congestion::new(256);
        // 12.5 MB/s (100 Mbit/s) over 10 ms.
        stream(&mut c, 0, 2 * MB, 12_500_000, 10_000);
        let bw = c.bandwidth();
        assert!((11_000_000..=14_000_000).contains(&bw), "{bw}");
        assert_ne!(c.mode, Mode::Startup, "the rate stopped growing: startup is over");
        let bdp = 12_500_000 / 100 / 1500;
        assert_eq!(c.target(), bdp + ACK_QUANTUM);
        assert_eq!(c.window() as u64, 2 * (bdp + ACK_QUANTUM));
        // Paced: a second packet right after a first waits its time at the rate.
        let mut c2 = c.clone();
        c2.next_send_ns = 0;
        let t = 3 * MB;
        for i in 0..=PACING_CREDIT {
            assert!(c2.pacing_allows(t), "behind the schedule: the credit lets {i} go at once");
            c2.on_send(t, 1500, 50 + i as usize);
        }
        assert!(!c2.pacing_allows(t), "the credit is spent");
        let per_packet_us = 1500 * MB / c2.pacing_rate();
        assert!(c2.pacing_allows(t + 2 * per_packet_us));
    }

    #[test]
    fn the_probe_cycle_spends_one_phase_in_eight_above_the_rate() {
        let mut c = Congestion::new(256);
        let mut flow = Flow::default();
        let mut now = flow.run(&mut c, 2 * MB, 12_500_000, 10_000);
        let mut gains = std::vec::Vec::new();
        for _ in 0..400 {
            now = flow.run(&mut c, now + 1_000, 12_500_000, 10_000);
            gains.push(c.gain());
        }
        let share = |gain| gains.iter().filter(|&&g| g == gain).count();
        // One phase of eight probes; the drain after it ends at once, nothing having
        // queued on this path (the packets in flight are below the target).
        assert!((35..=65).contains(&share(CYCLE[0])), "{gains:?}");
        assert!(share(1000) >= 300, "{gains:?}");
    }

    #[test]
    fn bunched_acks_do_not_inflate_the_estimate() {
        let mut c = Congestion::new(256);
        // 100 packets sent over 100 ms (1.5 MB/s), all acknowledged by one ACK.
        let mut first = None;
        let mut last = (0, SendState::ZERO);
        for i in 0..100u64 {
            let s = c.on_send(i * 1000, 1500, i as usize);
            first.get_or_insert(s);
            last = (i * 1000, s);
        }
        let d = Delivery { packets: 100, bytes: 150_000, newest: Some(last), rtt_us: Some(10_000) };
        c.on_ack(110_000, d, 0, 100);
        assert!(c.bandwidth() <= 1_600_000, "sent at 1.5 MB/s, whatever the ACK says: {}", c.bandwidth());
    }

    #[test]
    fn random_loss_changes_nothing_and_an_overflow_cuts_the_estimate() {
        let mut c = Congestion::new(256);
        stream(&mut c, 0, 2 * MB, 12_500_000, 10_000);
        let bw = c.bandwidth();
        for seq in [100, 200, 300] {
            assert!(!c.on_loss(LossReport { newest: seq, holes: 1, longest_run: 1 }, seq + 50));
        }
        assert_eq!(c.bandwidth(), bw, "random loss is resent, not mistaken for congestion");
        assert_eq!(c.stats().random_losses, 3);
        assert!(c.on_loss(LossReport { newest: 400, holes: 4, longest_run: 4 }, 480));
        assert_eq!(c.bandwidth(), bw * 85 / 100);
        assert!(!c.on_loss(LossReport { newest: 470, holes: 4, longest_run: 4 }, 500), "the same event");
        assert_eq!(c.stats().losses_in_recovery, 4);
        assert_eq!(c.stats().reductions, 1);
    }

    #[test]
    fn many_isolated_losses_in_a_round_are_an_overflow() {
        let mut c = Congestion::new(256);
        let mut flow = Flow::default();
        let now = flow.run(&mut c, 2 * MB, 12_500_000, 10_000);
        let bw = c.bandwidth();
        // Every fourth packet lost (a paced sender above the rate of a full queue).
        c.tally_packets = 0;
        for seq in (1000..1080).step_by(4) {
            c.on_loss(LossReport { newest: seq, holes: 1, longest_run: 1 }, 2000);
        }
        flow.run(&mut c, now + 20_000, 12_500_000, 10_000);
        assert_eq!(c.stats().reductions, 1, "more than 1 in {LOSS_SHARE} lost");
        assert_eq!(c.stats().random_losses, 20, "each on its own looked random");
        // The path delivers at its rate again: the samples bring the estimate back.
        assert!(c.bandwidth() >= bw * 85 / 100);
    }

    #[test]
    fn only_a_second_timeout_without_progress_collapses_the_window() {
        let mut c = Congestion::new(64);
        send_and_ack(&mut c, 0, 1500, 1000);
        let w = c.window();
        c.on_timeout();
        assert_eq!(c.window(), w, "one timeout: most are a stalled sender, not a loss");
        send_and_ack(&mut c, 5000, 1500, 1000);
        c.on_timeout();
        assert_eq!(c.window(), w, "progress came between the two timeouts");
        c.on_timeout();
        assert_eq!(c.window(), FLOOR, "no ACK since the last: the ACK clock is gone");
        send_and_ack(&mut c, 9000, 1500, 1000);
        assert_eq!(c.window(), w, "an ACK brings it back");
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_estimate() {
        let mut c = Congestion::new(256);
        let now = stream(&mut c, 0, 2 * MB, 12_500_000, 10_000);
        let bw = c.bandwidth();
        // The sender has little to send for a long while: one packet per 10 ms.
        c.on_app_limited(0);
        let mut t = now + 20_000;
        for _ in 0..200 {
            c.on_app_limited(0);
            send_and_ack(&mut c, t, 1500, 10_000);
            t += 10_000;
        }
        assert_eq!(c.bandwidth(), bw);
    }
}
