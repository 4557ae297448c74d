//! The sender's sliding window with selective acknowledgement.
//!
//! Every in-flight DATA payload is kept as a copy in a preallocated [`PacketSlot`], so a
//! retransmission is byte-identical to the first send even if memory (the dump path's
//! own stack, say) changed meanwhile — the stream CRC depends on it.

use super::congestion::{Congestion, CongestionStats, Delivery, LossReport, PACKET_OVERHEAD, SendState};
pub use crate::config::RtoBounds;
use crate::proto::{Ack, Check};

/// Largest DATA payload (sub-header + data) a slot holds: a 1500-byte MTU minus IPv4,
/// UDP and the protocol header.
pub const SLOT_PAYLOAD: usize = 1500 - 20 - 8 - crate::proto::HEADER_LEN;

/// One in-flight packet: its payload copy and its send history.
#[derive(Clone)]
pub struct PacketSlot {
    seq: u32,
    len: u16,
    /// The payload's check (the window's [`Check`]), computed once when the packet is made.
    crc: u32,
    acked: bool,
    sends: u16,
    sent_at_us: u64,
    /// Sends of the window before this packet's last: the order packets left in, exact
    /// where several leave within a microsecond.
    order: u64,
    /// What the congestion controller recorded at its last send.
    state: SendState,
    payload: [u8; SLOT_PAYLOAD],
}

impl PacketSlot {
    /// A free slot, for initialising arrays of them (e.g. in [`CrashBuffers`](crate::CrashBuffers)).
    /// All zero, so that a `static` of them is in `.bss`, not 1.5 KB of the kernel image
    /// per slot: `acked` is read only for packets pushed (`base..next`), which set it.
    pub const EMPTY: PacketSlot = PacketSlot {
        seq: 0,
        len: 0,
        crc: 0,
        acked: false,
        sends: 0,
        sent_at_us: 0,
        order: 0,
        state: SendState::ZERO,
        payload: [0; SLOT_PAYLOAD],
    };

    /// The packet's payload, as it was first made.
    pub fn payload(&self) -> &[u8] {
        &self.payload[..self.len as usize]
    }
}

/// What an ACK changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckEffect {
    /// Packets acknowledged by this ACK that were not before.
    pub newly_acked: u32,
}

/// How new packets are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowMode {
    /// Keep up to the congestion window in flight, at most `window` packets; each ACK
    /// lets more out (the default; [`super::congestion`]).
    #[default]
    Sliding,
    /// Keep `window` packets in flight whatever the losses say: the sliding window
    /// without congestion control, as before it had one (kept for comparison in
    /// `cargo xtask bench`).
    Fixed,
    /// Send `window` packets, then wait until all are acknowledged before the next batch
    /// (FreeBSD netdump's discipline; kept for comparison in `cargo xtask bench`).
    Batch,
}

/// Sequence numbers `base..next` are in flight; slot `seq % slots.len()` holds `seq`.
pub struct SackWindow<'a> {
    slots: &'a mut [PacketSlot],
    limit: usize,
    mode: WindowMode,
    /// First seq of the current batch ([`WindowMode::Batch`]).
    batch_start: u32,
    base: u32,
    next: u32,
    /// Packets pushed whose first send failed (a full NIC ring): until they are sent, no
    /// newer packet may be ([`has_unsent`](Self::has_unsent)), or it would overtake them
    /// on the wire and make them look lost.
    unsent: u32,
    srtt_us: Option<u64>,
    rttvar_us: u64,
    rto_us: u64,
    bounds: RtoBounds,
    /// No packet is due before this time (a lower bound from the last scan of
    /// [`due`](Self::due)); 0 when something changed that can make one due sooner.
    next_due_us: u64,
    /// The congestion window ([`WindowMode::Sliding`] obeys it).
    congestion: Congestion,
    /// Selective acks have reported every loss below this seq to `congestion`.
    losses_known_below: u32,
    /// Packets in `base..next` already acknowledged (selectively): delivered, so out of
    /// the network, though their slots stay taken until the hole before them is filled.
    acked_in_flight: u32,
    /// When an ACK last acknowledged something (0: never).
    progress_us: u64,
    /// Packets sent so far (first sends and resends): the next one's `order`.
    sent: u64,
    /// The latest send (its `order`) of a packet acknowledged: a packet sent before it and
    /// not acknowledged was overtaken, so lost (the path keeps order; RFC 8985's RACK,
    /// with the order of sends for its clock).
    overtaken_before: u64,
    /// Sends of a packet after its first (what FINISH reports).
    pub retransmissions: u64,
    /// Retransmissions acknowledged sooner than the smallest RTT after they left: the
    /// ACK was for an earlier send, so the resend was not needed.
    pub spurious: u64,
    /// The check each new payload gets (the session's: CRC-32 unless the server granted
    /// XXH64); its packets must be sent with the header flags of the same check.
    pub check: Check,
}

impl<'a> SackWindow<'a> {
    /// A window of at most `limit` packets (clamped to the number of slots, at least 1).
    pub fn new(slots: &'a mut [PacketSlot], limit: usize, bounds: RtoBounds) -> Self {
        let limit = limit.max(1).min(slots.len().max(1));
        SackWindow {
            slots,
            limit,
            mode: WindowMode::Sliding,
            batch_start: 0,
            base: 0,
            next: 0,
            unsent: 0,
            srtt_us: None,
            rttvar_us: 0,
            rto_us: bounds.initial_us,
            bounds,
            next_due_us: 0,
            congestion: Congestion::new(limit),
            losses_known_below: 0,
            acked_in_flight: 0,
            progress_us: 0,
            sent: 0,
            overtaken_before: 0,
            retransmissions: 0,
            spurious: 0,
            check: Check::Crc32,
        }
    }

    /// Packets pushed and not yet cumulatively acknowledged.
    pub fn in_flight(&self) -> usize {
        (self.next - self.base) as usize
    }
    /// Packets pushed and not acknowledged at all (cumulatively or selectively).
    pub fn in_network(&self) -> usize {
        self.in_flight() - self.acked_in_flight as usize
    }
    /// True if the mode lets another packet out now: fewer than the congestion window
    /// in flight (sliding), fewer than the limit (fixed), or the batch not yet full (batch).
    pub fn can_push(&self) -> bool {
        match self.mode {
            // The congestion window counts what is in the network (RFC 6675's "pipe"):
            // packets selectively acknowledged past a hole have left it, so a loss does
            // not stall the sender for the round trips its repair takes, as long as
            // slots are left.
            WindowMode::Sliding => {
                self.in_flight() < self.limit && self.in_network() < self.congestion.window() as usize
            }
            WindowMode::Fixed => self.in_flight() < self.limit,
            WindowMode::Batch => self.is_empty() || (self.next - self.batch_start) < self.limit as u32,
        }
    }

    /// True while a packet pushed earlier waits for its first send (a full NIC ring): the
    /// sender sends it ([`due`](Self::due) returns it at once) before any newer one, so
    /// that packets leave in the order of their seqs and their send times.
    pub fn has_unsent(&self) -> bool {
        self.unsent > 0
    }

    /// Packets pushed and not sent yet.
    pub fn unsent(&self) -> u32 {
        self.unsent
    }

    /// True if pacing lets a packet (new or resent) leave at `now_us`: always, except in
    /// the sliding mode, whose congestion control paces.
    pub fn paced(&self, now_us: u64) -> bool {
        self.mode != WindowMode::Sliding || self.congestion.pacing_allows(now_us)
    }

    /// The sender had nothing to send although the window and pacing let it.
    pub fn app_limited(&mut self) {
        self.congestion.on_app_limited(self.in_network());
    }

    /// Changes how new packets are released (from the next push).
    pub fn set_mode(&mut self, mode: WindowMode) {
        self.mode = mode;
    }
    /// True when every packet pushed has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.base == self.next
    }
    /// Sequence number the next pushed packet gets (= packets pushed so far).
    pub fn next_seq(&self) -> u32 {
        self.next
    }
    /// The current retransmission timeout, microseconds, within the [`RtoBounds`].
    pub fn rto_us(&self) -> u64 {
        self.rto_us
    }
    /// Packets the congestion controller lets be in flight now (at most the limit).
    pub fn congestion_window(&self) -> usize {
        self.congestion.window() as usize
    }
    /// The congestion controller, for tests.
    #[cfg(test)]
    pub(crate) fn congestion(&self) -> &Congestion {
        &self.congestion
    }
    /// What congestion control did so far.
    pub fn congestion_stats(&self) -> CongestionStats {
        self.congestion.stats()
    }

    fn index(&self, seq: u32) -> usize {
        seq as usize % self.slots.len()
    }

    /// Stores a new packet if `fill` produces one: `fill` writes its payload into the
    /// slot and returns its length, or `None` when there is nothing more to send.
    /// Returns the packet's seq. The caller checks [`can_push`](Self::can_push).
    pub fn try_push(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<u32> {
        debug_assert!(self.can_push());
        if self.mode == WindowMode::Batch && self.is_empty() {
            self.batch_start = self.next;
        }
        let seq = self.next;
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        let len = fill(&mut slot.payload)?.min(SLOT_PAYLOAD);
        slot.seq = seq;
        slot.len = len as u16;
        slot.crc = self.check.of(&slot.payload[..len]);
        slot.acked = false;
        slot.sends = 0;
        slot.sent_at_us = 0;
        self.next += 1;
        self.unsent += 1;
        // Not sent yet: due at once if its first send fails (a full NIC ring).
        self.next_due_us = 0;
        Some(seq)
    }

    /// How often `seq` has been sent.
    pub fn sends(&self, seq: u32) -> u16 {
        self.slots[self.index(seq)].sends
    }

    /// The payload of in-flight packet `seq`, byte-identical to its first send.
    pub fn payload(&self, seq: u32) -> &[u8] {
        self.slots[self.index(seq)].payload()
    }

    /// The check of `seq`'s payload (see [`check`](Self::check)).
    pub fn payload_crc(&self, seq: u32) -> u32 {
        self.slots[self.index(seq)].crc
    }

    /// Records that `seq` went out at `now_us`.
    pub fn mark_sent(&mut self, seq: u32, now_us: u64) {
        let others = self.in_network().saturating_sub(1);
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        if slot.sends > 0 {
            self.retransmissions += 1;
        } else {
            self.unsent -= 1;
        }
        slot.sends = slot.sends.saturating_add(1);
        slot.sent_at_us = now_us;
        slot.order = self.sent;
        self.sent += 1;
        slot.state = self.congestion.on_send(now_us, u64::from(slot.len) + PACKET_OVERHEAD, others);
    }

    /// Applies an ACK whose cumulative point is `cumulative`.
    pub fn on_ack(&mut self, now_us: u64, cumulative: u32, ack: &Ack<'_>) -> AckEffect {
        // A selective ack can make a hole due for fast retransmission, a new RTT sample
        // can shorten the RTO.
        self.next_due_us = 0;
        let mut effect = AckEffect::default();
        if cumulative > self.next {
            // Acknowledges packets never sent: not from our server; ignore.
            return effect;
        }
        let mut delivery = Delivery::default();
        // The largest sample goes to the RTO: the oldest packet an ACK covers waited for
        // it longest (a server holds ACKs for a few packets or milliseconds), and a timer
        // shorter than that wait fires on ACKs that are late, not lost.
        let mut rto_sample: Option<u64> = None;
        // The latest first send among the packets acknowledged (its `order` plus one, its
        // send time and state), the earliest (its `order`), and the latest resend.
        let (mut newest_first, mut oldest_first) = ((0, 0, SendState::ZERO), u64::MAX);
        let mut newest_resend: Option<(u64, u64, SendState)> = None;
        let min_rtt = self.congestion.min_rtt_us().unwrap_or(0);
        for seq in self.base..self.next {
            let i = self.index(seq);
            let slot = &mut self.slots[i];
            if slot.acked || !ack.covers(cumulative, seq) {
                continue;
            }
            slot.acked = true;
            effect.newly_acked += 1;
            delivery.packets += 1;
            delivery.bytes += u64::from(slot.len) + PACKET_OVERHEAD;
            if slot.sends == 1 {
                oldest_first = oldest_first.min(slot.order);
                if slot.order >= newest_first.0 {
                    newest_first = (slot.order + 1, slot.sent_at_us, slot.state);
                }
            } else if now_us.saturating_sub(slot.sent_at_us) < min_rtt {
                // A retransmission acknowledged sooner than a round trip after it left
                // was not what arrived: its first send was (RFC 8985, step 2).
                self.spurious += 1;
            } else if newest_resend.is_none_or(|(order, ..)| slot.order > order) {
                newest_resend = Some((slot.order, slot.sent_at_us, slot.state));
            }
            self.acked_in_flight += 1;
            // Karn: only packets sent once give an unambiguous sample.
            if slot.sends == 1 {
                let sample = now_us.saturating_sub(slot.sent_at_us);
                delivery.rtt_us = Some(delivery.rtt_us.map_or(sample, |s| s.min(sample)));
                rto_sample = Some(rto_sample.map_or(sample, |s| s.max(sample)));
            }
        }
        while self.base < self.next && self.slots[self.index(self.base)].acked {
            self.base += 1;
            self.acked_in_flight -= 1;
        }
        if let Some(sample) = rto_sample {
            self.update_rto(sample);
        }
        if effect.newly_acked > 0 {
            self.progress_us = now_us;
        }
        // A resend's send overtakes what was sent before it unless the same ACK brings
        // first sends from before it: then those arrived late, and likely its own first
        // send too (F-RTO's test: a timeout whose next ACK acknowledges packets never
        // resent was spurious). Either way, what the ACK brings shows what it overtook.
        let mut newest = newest_first;
        if let Some((order, at, state)) = newest_resend
            && oldest_first > order
            && order >= newest.0
        {
            newest = (order + 1, at, state);
        }
        if newest.0 > 0 {
            delivery.newest = Some((newest.1, newest.2));
        }
        self.overtaken_before = self.overtaken_before.max(newest.0);
        let in_network = self.in_network();
        self.congestion.on_ack(now_us, delivery, in_network, self.next);
        let loss = self.new_losses();
        self.congestion.on_loss(loss, self.next);
        effect
    }

    /// The packets sent once and not acknowledged that a packet sent after them overtook
    /// (see `overtaken_before`), that no earlier ACK reported: lost on their first
    /// send. By send time, not seq: a packet that left late (its first send failed on a
    /// full ring) is not lost because a newer one arrived first.
    fn new_losses(&mut self) -> LossReport {
        let mut loss = LossReport::default();
        let mut run = 0;
        let mut seq = self.losses_known_below.max(self.base);
        // First sends leave in seq order (`has_unsent`), so the first one not overtaken
        // ends the scan; what comes after it is judged by a later ACK.
        while seq < self.next {
            let slot = &self.slots[self.index(seq)];
            if slot.sends == 0 || (slot.sends == 1 && !slot.acked && slot.order >= self.overtaken_before) {
                break;
            }
            if slot.acked || slot.sends != 1 {
                run = 0;
            } else {
                run += 1;
                loss.holes += 1;
                loss.newest = seq;
                loss.longest_run = loss.longest_run.max(run);
            }
            seq += 1;
        }
        self.losses_known_below = seq;
        loss
    }

    fn update_rto(&mut self, sample: u64) {
        match self.srtt_us {
            None => {
                self.srtt_us = Some(sample);
                self.rttvar_us = sample / 2;
            }
            Some(srtt) => {
                self.rttvar_us = (3 * self.rttvar_us + srtt.abs_diff(sample)) / 4;
                self.srtt_us = Some((7 * srtt + sample) / 8);
            }
        }
        let srtt = self.srtt_us.unwrap_or(sample);
        // Not `clamp`, which panics on bounds the wrong way round (the fields are public):
        // the maximum wins, as in `back_off`.
        self.rto_us = (srtt + 4 * self.rttvar_us).max(self.bounds.min_us).min(self.bounds.max_us);
    }

    /// The oldest unacknowledged packet that is due for retransmission at `now_us`: the
    /// oldest if unacked for an RTO while no ACK acknowledged anything for an RTO either, or one a
    /// packet sent after it overtook (was acknowledged; by the order of sends, not of
    /// seqs, and not counting a resend acknowledged sooner than a round trip after it
    /// left) and that has been out for at least a smoothed RTT. While ACKs keep coming, a
    /// packet is not resent on its timer alone: it is late, not lost, or the ACKs of
    /// packets sent after it will show it lost.
    ///
    /// A scan that finds nothing remembers when the first packet will be due, and later
    /// calls return at once until then (or until a push or an ACK changes the answer):
    /// the sender asks on every turn of its loop, and a scan of the whole window each
    /// time was its largest cost after the CRC.
    pub fn due(&mut self, now_us: u64) -> Option<u32> {
        if now_us < self.next_due_us {
            return None;
        }
        let fast_after = self.srtt_us.map_or(self.rto_us, |s| s.max(self.bounds.min_us / 2));
        let mut earliest = u64::MAX;
        let mut oldest = true;
        for seq in self.base..self.next {
            let slot = &self.slots[self.index(seq)];
            if slot.acked {
                continue;
            }
            // A packet acknowledged that was sent after this one overtook it: on a path
            // that keeps order, this one is lost. The order is that of the sends, the
            // seqs' for first sends (`has_unsent`); a retransmission is overtaken only
            // by what was sent after it.
            let at = if slot.sends == 0 {
                // Pushed, but its first send failed (a full NIC ring).
                0
            } else if slot.order < self.overtaken_before {
                slot.sent_at_us.saturating_add(self.rto_us.min(fast_after))
            } else if oldest {
                slot.sent_at_us.max(self.progress_us).saturating_add(self.rto_us)
            } else {
                // The timer resends only the oldest (a probe, as RACK-TLP's): if it was
                // lost, its ACK overtakes the others lost with it; if the ACKs were only
                // late (a descheduled server), they come for the first sends, and a
                // window resent on the timer would have been resent for nothing.
                u64::MAX
            };
            oldest = false;
            if now_us >= at {
                return Some(seq);
            }
            earliest = earliest.min(at);
        }
        self.next_due_us = earliest;
        None
    }

    /// Backs the RTO off after a timeout with no ACK progress (doubling, bounded).
    pub fn back_off(&mut self) {
        self.next_due_us = 0;
        self.rto_us = (self.rto_us * 2).min(self.bounds.max_us);
        self.congestion.on_timeout();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<PacketSlot> {
        vec![PacketSlot::EMPTY; n]
    }

    fn push_n(w: &mut SackWindow, n: u32, now: u64) {
        for _ in 0..n {
            let seq = w.next_seq();
            w.try_push(|p| {
                p[..4].copy_from_slice(&seq.to_be_bytes());
                Some(4)
            });
            w.mark_sent(seq, now);
        }
    }

    fn ack(w: &mut SackWindow, now: u64, cum: u32, bitmap: &[u8]) -> AckEffect {
        w.on_ack(now, cum, &Ack { stop: false, bitmap })
    }

    #[test]
    fn what_a_fruitless_scan_remembers_never_hides_a_due_packet() {
        let mut s = slots(8);
        let mut w = SackWindow::new(&mut s, 8, RtoBounds::default());
        push_n(&mut w, 2, 0);
        let rto = w.rto_us();
        assert_eq!(w.due(100), None);
        assert_eq!(w.due(rto - 1), None, "remembered: nothing before the first RTO");
        assert_eq!(w.due(rto), Some(0), "and due exactly at it");
        // A packet pushed but not yet sent (its NIC ring was full) is due at once.
        w.mark_sent(0, rto);
        w.mark_sent(1, rto);
        assert_eq!(w.due(rto + 1), None);
        let seq = w.next_seq();
        w.try_push(|p| {
            p[0] = 1;
            Some(1)
        });
        assert_eq!(w.due(rto + 2), Some(seq));
        w.mark_sent(seq, rto + 2);
        // A selective ack of a later packet makes the hole due after a smoothed RTT,
        // sooner than the RTO the last scan remembered.
        assert_eq!(w.due(rto + 3), None);
        assert_eq!(ack(&mut w, rto + 1000, 0, &[0b0000_0010]).newly_acked, 1);
        let soon = rto + 1000 + 2 * RtoBounds::default().min_us;
        assert!(soon < 2 * rto);
        assert_eq!(w.due(soon), Some(0));
    }

    #[test]
    fn window_fills_to_its_limit_and_cumulative_ack_slides_it() {
        let mut s = slots(8);
        let mut w = SackWindow::new(&mut s, 4, RtoBounds::default());
        push_n(&mut w, 4, 0);
        assert!(!w.can_push());
        assert_eq!(ack(&mut w, 1000, 2, &[]).newly_acked, 2);
        assert_eq!(w.in_flight(), 2);
        assert!(w.can_push());
        push_n(&mut w, 2, 1000);
        assert_eq!(w.payload(5), &5u32.to_be_bytes());
    }

    #[test]
    fn slots_wrap_around_many_times_keeping_payloads() {
        let mut s = slots(3);
        let mut w = SackWindow::new(&mut s, 3, RtoBounds::default());
        for round in 0..100u32 {
            push_n(&mut w, 3, round as u64);
            for seq in round * 3..round * 3 + 3 {
                assert_eq!(w.payload(seq), &seq.to_be_bytes());
            }
            ack(&mut w, round as u64 + 1, round * 3 + 3, &[]);
            assert!(w.is_empty());
        }
    }

    #[test]
    fn selective_ack_leaves_only_the_hole_unacked() {
        let mut s = slots(8);
        let mut w = SackWindow::new(&mut s, 8, RtoBounds::default());
        push_n(&mut w, 5, 0);
        assert_eq!(w.due(9_000), None, "nothing is due before an ACK or an RTO");
        // 0,1 cumulative; 2 missing; 3,4 selectively acked (bits 0,1 after cum 2)
        assert_eq!(ack(&mut w, 10_000, 2, &[0b11]).newly_acked, 4);
        assert_eq!(w.in_flight(), 3);
        // the overtaken hole is due once it is a smoothed RTT (10 ms) old, long before
        // the 200 ms RTO
        assert_eq!(w.due(10_000), Some(2));
        w.mark_sent(2, 10_000);
        assert_eq!(w.due(15_000), None, "not resent again within one RTT");
        ack(&mut w, 30_000, 5, &[]);
        assert!(w.is_empty());
    }

    #[test]
    fn timeout_retransmission_is_due_after_rto_and_counted() {
        let mut s = slots(4);
        let bounds = RtoBounds { initial_us: 100, min_us: 10, max_us: 1000 };
        let mut w = SackWindow::new(&mut s, 4, bounds);
        push_n(&mut w, 2, 0);
        assert_eq!(w.due(99), None);
        assert_eq!(w.due(100), Some(0));
        w.mark_sent(0, 100);
        assert_eq!(w.retransmissions, 1);
        assert_eq!(w.due(150), None, "the timer resends the oldest alone");
        w.back_off();
        assert_eq!(w.rto_us(), 200);
        // Its resend acknowledged alone: it was lost, and so was the other packet
        // (sent before the resend, not acknowledged).
        let mut s2 = slots(4);
        let mut w2 = SackWindow::new(&mut s2, 4, bounds);
        push_n(&mut w2, 2, 0);
        w2.mark_sent(0, 100);
        ack(&mut w2, 400, 1, &[]);
        assert_eq!(w2.due(400), Some(1));
        // Acknowledged with the first send of a packet sent before it: the first sends
        // were late, not lost (a server held up), and nothing more is resent.
        let mut s3 = slots(4);
        let mut w3 = SackWindow::new(&mut s3, 4, bounds);
        push_n(&mut w3, 3, 0);
        w3.mark_sent(0, 100);
        ack(&mut w3, 400, 2, &[]);
        assert_eq!(w3.due(400), None);
    }

    #[test]
    fn rto_adapts_to_measured_rtt_within_bounds() {
        let mut s = slots(64);
        let bounds = RtoBounds { initial_us: 1_000_000, min_us: 20_000, max_us: 1_000_000 };
        let mut w = SackWindow::new(&mut s, 64, bounds);
        for i in 0..20u32 {
            push_n(&mut w, 1, i as u64 * 100_000);
            ack(&mut w, i as u64 * 100_000 + 10_000, i + 1, &[]);
        }
        // steady 10 ms RTT → RTO near srtt + 4·rttvar, far below the initial second
        assert!(w.rto_us() >= 20_000 && w.rto_us() < 100_000, "{}", w.rto_us());
    }

    #[test]
    fn batch_mode_waits_for_the_whole_batch() {
        let mut s = slots(8);
        let mut w = SackWindow::new(&mut s, 4, RtoBounds::default());
        w.set_mode(WindowMode::Batch);
        push_n(&mut w, 4, 0);
        assert!(!w.can_push());
        ack(&mut w, 10, 3, &[]);
        assert!(!w.can_push(), "a sliding window would release one packet here");
        ack(&mut w, 20, 4, &[]);
        assert!(w.can_push());
        push_n(&mut w, 4, 30);
        assert!(!w.can_push());
    }

    /// Pushes and sends packets until the window refuses; returns how many.
    fn fill(w: &mut SackWindow, now: u64) -> u32 {
        let mut n = 0;
        while w.can_push() {
            push_n(w, 1, now);
            n += 1;
        }
        n
    }

    /// A SACK bitmap (after cumulative point `cum`) marking every seq in `got`.
    fn bitmap(cum: u32, got: impl Iterator<Item = u32>) -> [u8; 64] {
        let mut b = [0u8; 64];
        for seq in got {
            let i = (seq - cum - 1) as usize;
            b[i / 8] |= 1 << (i % 8);
        }
        b
    }

    /// A window of `limit` packets whose controller has measured a 1 ms path and lets
    /// the whole window out.
    fn grown(s: &mut [PacketSlot], limit: usize) -> SackWindow<'_> {
        let mut w = SackWindow::new(s, limit, RtoBounds::default());
        let mut now = 0;
        loop {
            fill(&mut w, now);
            now += 1000;
            let next = w.next_seq();
            ack(&mut w, now, next, &[]);
            if w.congestion_window() >= limit {
                return w;
            }
        }
    }

    #[test]
    fn the_sliding_window_starts_at_its_limit_and_grows_past_the_initial_window() {
        let mut s = slots(64);
        {
            let mut w = SackWindow::new(&mut s, 64, RtoBounds::default());
            assert_eq!(fill(&mut w, 0), 64, "the configured window at once");
        }
        let mut s = slots(512);
        let mut w = SackWindow::new(&mut s, 512, RtoBounds::default());
        assert_eq!(fill(&mut w, 0), 256, "at most the initial window");
        ack(&mut w, 1000, 256, &[]);
        assert_eq!(fill(&mut w, 1000), 512, "doubled after a round trip");
    }

    #[test]
    fn isolated_holes_are_random_loss_and_a_run_of_holes_is_congestion() {
        let mut s = slots(64);
        let mut w = grown(&mut s, 64);
        let now = 100_000;
        let base = w.next_seq();
        assert_eq!(fill(&mut w, now), 64);
        // Two isolated holes (random loss), every other packet of the window arrived.
        let got = (base..base + 64).filter(|&q| q != base + 5 && q != base + 20);
        let b = bitmap(base, got.filter(|&q| q > base));
        ack(&mut w, now + 1000, base, &b[..8]);
        assert_eq!(w.congestion_stats().random_losses, 3, "seq {base} (cumulative point), +5, +20");
        assert_eq!(w.congestion_stats().reductions, 0);
        // The next window loses a run of four back to back: a queue overflowed.
        let cum = base + 64;
        for seq in [base, base + 5, base + 20] {
            w.mark_sent(seq, now + 2000);
        }
        ack(&mut w, now + 3000, cum, &[]);
        assert_eq!(fill(&mut w, now + 3000), 64);
        let got = (cum + 1..cum + 64).filter(|&q| !(cum + 30..cum + 34).contains(&q));
        let b = bitmap(cum, got);
        ack(&mut w, now + 4000, cum, &b[..8]);
        assert_eq!(w.congestion_stats().reductions, 1);
        assert_eq!(w.in_network(), 5, "the cumulative point and the run are not acknowledged");
        assert!(!w.can_push(), "every slot is taken until the holes are repaired");
    }

    #[test]
    fn selectively_acknowledged_packets_leave_the_congestion_window() {
        let mut s = slots(512);
        let mut w = SackWindow::new(&mut s, 512, RtoBounds::default());
        assert_eq!(fill(&mut w, 0), 256);
        // Packet 0 is lost, 1..256 arrived: only one is still in the network.
        let b = bitmap(0, 1..256);
        ack(&mut w, 1000, 0, &b[..32]);
        assert_eq!((w.in_flight(), w.in_network()), (256, 1));
        let more = fill(&mut w, 1000);
        assert_eq!(more, 256, "the window keeps sending while the hole is repaired, up to its slots");
        assert_eq!(w.in_network(), 257);
    }

    #[test]
    fn the_fixed_mode_ignores_congestion() {
        let mut s = slots(16);
        let mut w = SackWindow::new(&mut s, 16, RtoBounds::default());
        w.set_mode(WindowMode::Fixed);
        assert_eq!(fill(&mut w, 0), 16, "the whole window at once");
        ack(&mut w, 1000, 16, &[]);
        assert_eq!(fill(&mut w, 1000), 16, "unpaced, though the controller has a rate now");
        assert!(w.congestion().pacing_rate() > 0);
        let b = bitmap(16, 24..32);
        ack(&mut w, 2000, 16, &b[..2]);
        assert!(w.congestion_stats().reductions > 0, "the controller saw the run of losses");
        ack(&mut w, 3000, 32, &[]);
        assert_eq!(fill(&mut w, 3000), 16, "and the fixed window did not care");
    }

    #[test]
    fn an_ack_of_a_first_send_does_not_make_its_resend_overtake_what_was_sent_before() {
        // A 1 ms path: the smallest RTT is 1 ms, a smoothed RTT about as much.
        let mut s = slots(64);
        let mut w = grown(&mut s, 64);
        let t = 100_000;
        let base = w.next_seq();
        push_n(&mut w, 4, t);
        // The first is resent (its ACK was late: a stalled device), then four more go.
        w.mark_sent(base, t + 5_000);
        push_n(&mut w, 4, t + 5_100);
        // 300 µs after the resend, an ACK of the first four: of their first sends, as a
        // resend cannot have made a round trip yet.
        ack(&mut w, t + 5_300, base + 4, &[]);
        assert_eq!(w.spurious, 1);
        // The four sent before the resend are in flight, not overtaken: nothing is due
        // before an RTO (a resend a round trip after them would repeat the mistake).
        assert_eq!(w.due(t + 5_100 + 15_000), None);
        // Acknowledged after a round trip, a resend is what arrived: what was sent
        // before it and is missing is lost.
        let next = w.next_seq();
        w.mark_sent(next - 1, t + 6_000);
        ack(&mut w, t + 8_000, base + 4, &bitmap(base + 4, [next - 1].into_iter())[..1]);
        assert_eq!(w.spurious, 1);
        assert_eq!(w.due(t + 5_100 + 15_000), Some(base + 4));
    }

    #[test]
    fn a_packet_whose_first_send_failed_holds_back_newer_ones_and_is_not_lost_for_being_late() {
        let mut s = slots(64);
        let mut w = grown(&mut s, 64);
        let t = 100_000;
        let base = w.next_seq();
        push_n(&mut w, 2, t);
        // The third is pushed, but the ring is full: not sent.
        w.try_push(|p| Some(p.len()));
        assert!(w.has_unsent() && w.can_push(), "the window has room, the order says wait");
        assert_eq!(w.due(t + 10), Some(base + 2), "due at once");
        w.mark_sent(base + 2, t + 3_000);
        assert!(!w.has_unsent());
        push_n(&mut w, 1, t + 3_000);
        // Sent in seq order after all: an ACK of the first two and the third leaves the
        // fourth in flight, and one of the fourth would mean the third was lost.
        ack(&mut w, t + 4_100, base + 3, &[]);
        assert_eq!(w.congestion_stats().random_losses, 0);
        assert_eq!(w.due(t + 3_000 + 15_000), None, "in flight: only the RTO resends it");
        ack(&mut w, t + 4_200, base + 4, &[]);
        assert!(w.is_empty());
    }

    #[test]
    fn acks_for_unsent_packets_are_ignored() {
        let mut s = slots(4);
        let mut w = SackWindow::new(&mut s, 4, RtoBounds::default());
        push_n(&mut w, 2, 0);
        assert_eq!(ack(&mut w, 10, 1000, &[]).newly_acked, 0);
        assert_eq!(w.in_flight(), 2);
    }

    #[test]
    fn duplicate_acks_change_nothing() {
        let mut s = slots(4);
        let mut w = SackWindow::new(&mut s, 4, RtoBounds::default());
        push_n(&mut w, 3, 0);
        assert_eq!(ack(&mut w, 10, 0, &[0b1]).newly_acked, 1);
        assert_eq!(ack(&mut w, 11, 0, &[0b1]).newly_acked, 0);
        assert_eq!(w.in_flight(), 3);
    }
}
