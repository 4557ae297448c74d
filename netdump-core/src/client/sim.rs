//! A deterministic simulation of the sender's window and congestion control through a
//! rate-limited link: what `cargo xtask bench --part link` measures through QEMU and the
//! harness's proxy, on a virtual clock. The link is a port of limited rate with a
//! drop-tail queue of a few packets in front of it (the proxy's token bucket with a
//! one-frame burst), a fixed delay each way and random loss each way; the server
//! acknowledges as netdumpd does (every 32 packets, 2 ms after the first packet owed, at
//! once on `ACK_REQUEST` and on a packet that opens or fills a gap). Faults of the bench's
//! machine can be added: a sender descheduled now and then, a NIC whose transmit ring
//! fills while its device (QEMU's I/O thread) is away, a server held up. The fill asserted here is that of the
//! simulated link: a property of the controller, not a timing of this machine.

use super::congestion::PACKET_OVERHEAD;
use super::window::{PacketSlot, RtoBounds, SLOT_PAYLOAD, SackWindow, WindowMode};
use crate::proto::{Ack, MAX_SACK_BYTES};
use std::collections::VecDeque;
use std::vec;
use std::vec::Vec;

/// Wire bytes of a full DATA packet.
const WIRE: u64 = SLOT_PAYLOAD as u64 + PACKET_OVERHEAD;
/// The simulation's step, microseconds.
const TICK_US: u64 = 5;

/// xorshift64*: deterministic loss.
struct Rng(u64);

impl Rng {
    fn lost(&mut self, per_million: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % 1_000_000 < per_million
    }
}

/// A port of `rate` bytes per second (0: unlimited) with at most `depth` packets waiting.
struct Port {
    rate: u64,
    depth: usize,
    /// When each waiting packet starts on the wire, nanoseconds.
    starts: VecDeque<u64>,
    busy_until_ns: u64,
    drops: u64,
}

impl Port {
    /// When a packet offered at `now_ns` has left the port, or `None` if dropped.
    fn offer(&mut self, now_ns: u64, bytes: u64) -> Option<u64> {
        if self.rate == 0 {
            return Some(now_ns);
        }
        while self.starts.front().is_some_and(|&s| s <= now_ns) {
            self.starts.pop_front();
        }
        if self.starts.len() >= self.depth {
            self.drops += 1;
            return None;
        }
        let start = now_ns.max(self.busy_until_ns);
        self.busy_until_ns = start + bytes * 1_000_000_000 / self.rate;
        self.starts.push_back(start);
        Some(self.busy_until_ns)
    }
}

struct Path {
    /// Link rate, bytes per second (0: unlimited).
    rate: u64,
    queue: usize,
    delay_us: u64,
    /// Random loss each way, per million.
    loss_ppm: u64,
    /// The client's time per packet sent, microseconds.
    client_cost_us: u64,
    /// The client is descheduled, per million ticks, for up to `stall_us` (a loaded
    /// host running the emulated CPU).
    stall_ppm: u64,
    stall_us: u64,
    /// Every this many packets (0: never) the stream has nothing to send for `gap_us`
    /// (a run of zero pages being skipped).
    gap_every: u32,
    gap_us: u64,
    /// The NIC's transmit ring, frames (0: frames go on the wire as they are sent). A
    /// frame waits in it until the device takes it; a full ring refuses a send.
    tx_ring: usize,
    /// The device (QEMU's I/O thread, for virtio-net) is descheduled, per million ticks,
    /// for up to `io_stall_us`: meanwhile it neither takes frames from the transmit ring
    /// nor delivers received ones, and both come out together when it is back.
    io_stall_ppm: u64,
    io_stall_us: u64,
    /// The server is descheduled, per million ticks, for up to `server_stall_us`: what
    /// arrives meanwhile waits, and no ACK leaves.
    server_stall_ppm: u64,
    server_stall_us: u64,
    /// Packets one round of the send loop may send, its cost paid after the round (0:
    /// what fits in a tick at `client_cost_us` each).
    round: u64,
    /// How much later than the resends' the new packets' pacing reads the clock (the send
    /// loop reads it again after its resends), microseconds, below a tick.
    reread_us: u64,
    window: usize,
    mode: WindowMode,
}

struct Outcome {
    /// Microseconds until the server had every packet.
    elapsed_us: u64,
    queue_drops: u64,
    /// DATA packets the path lost at random.
    lost: u64,
    retransmissions: u64,
}

/// Sends `packets` full DATA packets through `path`.
/// The sender resent at most `slack` packets beyond those the queue dropped or the path
/// lost.
fn assert_resends_only_lost(o: &Outcome, slack: u64) {
    assert!(
        o.retransmissions <= o.queue_drops + o.lost + slack,
        "{} resent for {} queue drops and {} lost",
        o.retransmissions,
        o.queue_drops,
        o.lost
    );
}

fn run(path: &Path, packets: u32) -> Outcome {
    let mut slots = vec![PacketSlot::EMPTY; path.window];
    let mut w = SackWindow::new(&mut slots, path.window, RtoBounds::default());
    w.set_mode(path.mode);
    let (mut rng, mut stalls) = (Rng(0x9e37_79b9_7f4a_7c15), Rng(0x2545_f491_4f6c_dd1d));
    let mut lost = 0u64;
    let mut io_stalls = Rng(0x5851_f42d_4c95_7f2d);
    let (mut server_stalls, mut server_free) = (Rng(0x1405_7b7e_f767_814f), 0u64);
    // The transmit ring: (seq, ACK_REQUEST); the device is away until `io_free`.
    let (mut ring, mut io_free) = (VecDeque::<(u32, bool)>::new(), 0u64);
    let mut port = Port { rate: path.rate, depth: path.queue, starts: VecDeque::new(), busy_until_ns: 0, drops: 0 };
    // In flight to the server: (arrival µs, seq, ACK_REQUEST); to the client: (arrival
    // µs, cumulative point, bitmap). Both in order (a constant delay after a FIFO port).
    let mut to_server: VecDeque<(u64, u32, bool)> = VecDeque::new();
    let mut to_client: VecDeque<(u64, u32, Vec<u8>)> = VecDeque::new();
    let mut received = vec![false; packets as usize];
    let (mut cumulative, mut next_in_order, mut since_ack, mut owed_since) = (0u32, 0u32, 0u32, None::<u64>);
    let (mut last_progress, mut last_backoff, mut client_free, mut gap_until) = (0u64, 0u64, 0u64, 0u64);
    let mut now = 0u64;
    while cumulative < packets {
        assert!(now < 600_000_000, "the simulated dump did not end in 10 minutes");
        // The server, unless it is descheduled.
        let server_here = now >= server_free;
        if server_here && server_stalls.lost(path.server_stall_ppm) {
            server_free = now + 1 + server_stalls.0 % path.server_stall_us.max(1);
        }
        let mut ack_now = false;
        while server_here && to_server.front().is_some_and(|&(at, ..)| at <= now) {
            let (_, seq, ack_request) = to_server.pop_front().unwrap();
            // News of a gap (netdumpd): a packet beyond the highest opens one, a packet
            // at the cumulative point fills one.
            let fresh = !received[seq as usize];
            ack_now |= fresh && (seq > next_in_order || (seq == cumulative && next_in_order > cumulative + 1));
            received[seq as usize] = true;
            next_in_order = next_in_order.max(seq + 1);
            while cumulative < packets && received[cumulative as usize] {
                cumulative += 1;
            }
            since_ack += 1;
            owed_since.get_or_insert(now);
            ack_now |= ack_request || since_ack >= 32;
        }
        if server_here && (ack_now || owed_since.is_some_and(|t| now >= t + 2_000)) {
            let mut bitmap = vec![0u8; MAX_SACK_BYTES];
            for i in 0..MAX_SACK_BYTES * 8 {
                let seq = cumulative as usize + 1 + i;
                if received.get(seq).copied().unwrap_or(false) {
                    bitmap[i / 8] |= 1 << (i % 8);
                }
            }
            if !rng.lost(path.loss_ppm) {
                to_client.push_back((now + path.delay_us, cumulative, bitmap));
            }
            since_ack = 0;
            owed_since = None;
        }
        // The device: puts what the ring holds on the wire, unless it is away.
        let device_here = now >= io_free;
        if device_here {
            while let Some((seq, ack_request)) = ring.pop_front() {
                if rng.lost(path.loss_ppm) {
                    lost += 1;
                    continue;
                }
                if let Some(left_ns) = port.offer(now * 1000, WIRE) {
                    to_server.push_back((left_ns / 1000 + path.delay_us, seq, ack_request));
                }
            }
            if io_stalls.lost(path.io_stall_ppm) {
                io_free = now + 1 + io_stalls.0 % path.io_stall_us.max(1);
            }
        }
        // The client: reads its ACKs (those the device delivered), then resends and
        // sends as its loop does.
        if now >= client_free {
            while device_here && to_client.front().is_some_and(|&(at, ..)| at <= now) {
                let (_, cum, bitmap) = to_client.pop_front().unwrap();
                if w.on_ack(now, cum, &Ack { stop: false, bitmap: &bitmap }).newly_acked > 0 {
                    last_progress = now;
                }
            }
            if w.is_empty() {
                last_progress = now;
            }
            // A send fails on a full transmit ring (the packet stays unsent, due at once).
            let mut send = |w: &mut SackWindow<'_>, seq: u32, ack_request: bool, now: u64| {
                if path.tx_ring > 0 {
                    if ring.len() >= path.tx_ring {
                        return false;
                    }
                    w.mark_sent(seq, now);
                    ring.push_back((seq, ack_request));
                    return true;
                }
                w.mark_sent(seq, now);
                if rng.lost(path.loss_ppm) {
                    lost += 1;
                    return true;
                }
                if let Some(left_ns) = port.offer(now * 1000, WIRE) {
                    to_server.push_back((left_ns / 1000 + path.delay_us, seq, ack_request));
                }
                true
            };
            // The client spends `client_cost_us` per packet: it sends while that fits in
            // the tick; as its loop, at most 16 resends per round, before new packets.
            let round = if path.round > 0 { path.round } else { TICK_US.div_ceil(path.client_cost_us.max(1)) };
            let mut budget = round;
            let mut resends = 0;
            while budget > 0 && resends < 16 && w.paced(now) {
                let Some(seq) = w.due(now) else { break };
                let ack_request = w.sends(seq) > 0 || !w.can_push();
                if !send(&mut w, seq, ack_request, now) {
                    break;
                }
                budget -= 1;
                resends += 1;
                if now - last_progress >= w.rto_us() && now - last_backoff >= w.rto_us() {
                    w.back_off();
                    last_backoff = now;
                }
            }
            // As the send loop, the new packets' pacing reads the clock again: the round's
            // receiving and resending took a moment.
            let now = now + path.reread_us;
            while budget > 0 && w.next_seq() < packets && w.can_push() && !w.has_unsent() && w.paced(now) {
                if now < gap_until {
                    w.app_limited();
                    break;
                }
                let seq = w.try_push(|p| Some(p.len())).unwrap();
                if path.gap_every > 0 && seq % path.gap_every == path.gap_every - 1 {
                    gap_until = now + path.gap_us;
                }
                let fills = !w.can_push();
                budget -= 1;
                if !send(&mut w, seq, fills, now) {
                    break;
                }
            }
            let sent = round - budget;
            client_free = now + sent * path.client_cost_us;
            if stalls.lost(path.stall_ppm) {
                client_free += 1 + stalls.0 % path.stall_us.max(1);
            }
            if w.next_seq() == packets {
                w.app_limited();
            }
        }
        now += TICK_US;
    }
    Outcome { elapsed_us: now, queue_drops: port.drops, lost, retransmissions: w.retransmissions }
}

/// The link's share the dump's payload filled (wire bytes sent once each, over the time).
fn fill(path: &Path, packets: u32, o: &Outcome) -> f64 {
    (packets as u64 * WIRE) as f64 / (path.rate as f64 * o.elapsed_us as f64 / 1e6)
}

/// The bench's link: 100 Mbit/s, a queue of 32 packets, 5 ms each way, window 256.
fn link(loss_ppm: u64) -> Path {
    Path {
        rate: 100_000_000 / 8,
        queue: 32,
        delay_us: 5_000,
        loss_ppm,
        client_cost_us: 5,
        stall_ppm: 0,
        stall_us: 0,
        gap_every: 0,
        gap_us: 0,
        tx_ring: 0,
        io_stall_ppm: 0,
        io_stall_us: 0,
        server_stall_ppm: 0,
        server_stall_us: 0,
        round: 0,
        reread_us: 0,
        window: 256,
        mode: WindowMode::Sliding,
    }
}

const PACKETS: u32 = 10_000;

#[test]
fn a_shallow_queue_at_100_mbit_is_filled_without_flooding_it() {
    let path = link(0);
    let o = run(&path, PACKETS);
    let f = fill(&path, PACKETS, &o);
    assert!(f >= 0.9, "fill {f:.3}, {} queue drops, {} resent", o.queue_drops, o.retransmissions);
    // The first window (256 packets, unpaced: no rate is known yet) overflows the queue
    // once; after that, pacing keeps it from overflowing more than now and then.
    assert!(o.queue_drops < 400, "{} queue drops", o.queue_drops);
    assert!(o.retransmissions <= o.queue_drops + 50, "{} resent for {} drops", o.retransmissions, o.queue_drops);
}

#[test]
fn one_percent_random_loss_both_ways_is_not_taken_for_congestion() {
    let path = link(10_000);
    let o = run(&path, PACKETS);
    let f = fill(&path, PACKETS, &o);
    assert!(f >= 0.9, "fill {f:.3}, {} queue drops, {} resent", o.queue_drops, o.retransmissions);
}

#[test]
fn the_fixed_window_floods_the_same_queue() {
    let path = Path { mode: WindowMode::Fixed, ..link(0) };
    let o = run(&path, PACKETS);
    assert!(o.queue_drops > PACKETS as u64 / 10, "{} queue drops", o.queue_drops);
}

#[test]
fn a_slow_link_with_a_queue_deeper_than_its_bdp_is_filled_too() {
    let path = Path { rate: 10_000_000 / 8, ..link(0) };
    let o = run(&path, 2_000);
    let f = fill(&path, 2_000, &o);
    assert!(f >= 0.9, "fill {f:.3}, {} queue drops", o.queue_drops);
}

#[test]
fn a_descheduled_sender_still_fills_the_link() {
    // Stalls of up to 20 ms, about one every 50 ms: the sender is away a fifth of the
    // time, and the link idles then (its queue holds 4 ms). What matters is that the
    // estimate does not ratchet down: the fill stays near the share of time it runs.
    for loss_ppm in [0, 10_000] {
        let path = Path { stall_ppm: 100, stall_us: 20_000, ..link(loss_ppm) };
        let o = run(&path, PACKETS);
        let f = fill(&path, PACKETS, &o);
        assert!(f >= 0.75, "fill {f:.3}, {} queue drops, {} resent", o.queue_drops, o.retransmissions);
    }
}

#[test]
fn the_rate_is_remembered_across_runs_of_zero_pages() {
    // 100 ms with nothing to send after every 500 packets (60 ms of the link).
    let path = Path { gap_every: 500, gap_us: 100_000, ..link(0) };
    let o = run(&path, PACKETS);
    let gaps_us = (PACKETS / path.gap_every) as u64 * path.gap_us;
    let f = fill(&path, PACKETS, &Outcome { elapsed_us: o.elapsed_us - gaps_us, ..o });
    assert!(f >= 0.85, "fill {f:.3} outside the gaps");
}

#[test]
fn pacing_does_not_slow_a_sender_on_a_fast_lan() {
    // No rate limit, 50 µs each way, a client that takes 20 µs per packet: the client is
    // the bottleneck, and pacing at the rate it measures must not hold it back.
    let path = Path { rate: 0, delay_us: 50, client_cost_us: 20, ..link(0) };
    let o = run(&path, PACKETS);
    let alone_us = PACKETS as u64 * path.client_cost_us;
    let share = alone_us as f64 / o.elapsed_us as f64;
    assert!(share >= 0.95, "{share:.3} of the client's own rate");
}

/// The bench's link behind a virtio-net device whose I/O thread is away now and then:
/// 1 ms to 5 ms, about every 20 ms (QEMU's main loop on a loaded host); a transmit ring
/// of 32 frames (the driver's default: `VirtioNet`'s `TX` buffers).
fn virtio_link(loss_ppm: u64) -> Path {
    Path { tx_ring: 32, io_stall_ppm: 250, io_stall_us: 5_000, round: 64, reread_us: 4, ..link(loss_ppm) }
}

#[test]
fn a_device_that_stalls_does_not_make_the_sender_resend_what_arrived() {
    // While the device is away the ring fills and sends fail; the packets that failed
    // go when it is back. Before they had to go first, newer packets overtook them on
    // the wire, their late ACKs read as losses (seq below one acknowledged) and 190–550
    // of them were resent for nothing, with as many cuts of the rate for queues that had
    // not overflowed (the bench's virtio-net modern: 906 resends for 322 queue drops).
    for loss_ppm in [0, 10_000] {
        let path = virtio_link(loss_ppm);
        let o = run(&path, PACKETS);
        let f = fill(&path, PACKETS, &o);
        assert_resends_only_lost(&o, 10);
        assert!(f >= 0.85, "fill {f:.3}, {} queue drops, {} resent", o.queue_drops, o.retransmissions);
    }
}

#[test]
fn a_server_held_up_does_not_make_the_sender_resend_its_window() {
    // netdumpd away for up to 100 ms, about every 200 ms (a loaded host: the bench saw
    // 48 ms without an ACK). The timer fires: before, each RTO resent every packet in
    // flight (1 162 resends for 360 queue drops, the same with loss); now it resends the
    // oldest, and the ACKs of the first sends that come after the stall say the rest
    // were not lost.
    for loss_ppm in [0, 10_000] {
        let path = Path { server_stall_ppm: 25, server_stall_us: 100_000, ..link(loss_ppm) };
        let o = run(&path, PACKETS);
        assert_resends_only_lost(&o, 20);
    }
}

#[test]
fn with_loss_a_fast_link_needs_slots_for_two_round_trips() {
    // A hole holds the cumulative point for about two round trips (one to learn of it,
    // one for its repair), and every packet sent meanwhile keeps its slot: at 200 Mbit/s
    // and 10 ms that is over 400 packets. 256 slots cap the rate near 130 Mbit/s whenever
    // a hole is open, which at 1% loss is most of the time; 512 do not.
    let path = |window| Path { rate: 200_000_000 / 8, window, ..link(10_000) };
    let f = |window| {
        let o = run(&path(window), 20_000);
        fill(&path(window), 20_000, &o)
    };
    let (small, large) = (f(256), f(512));
    assert!(small < 0.8, "fill {small:.3} with 256 slots: no longer the limit (docs/PERFORMANCE.md says it is)");
    assert!(large >= 0.9, "fill {large:.3} with 512 slots");
}
