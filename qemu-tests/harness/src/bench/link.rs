//! `--part link`: how much of a rate-limited link a dump fills (issue 19).
//!
//! The proxy limits both directions to a rate, with a queue of [`QUEUE_PACKETS`] in front
//! of each — shallower than the client's window of [`WINDOW`] and than the path's
//! bandwidth-delay product — and delays each direction by [`DELAY`]. A dump of a
//! populated 64 MiB image goes through it at 100 Mbit/s and at the highest rate the
//! emulated client fills (below), without loss and with 1% random loss both ways, with
//! congestion control and, in the same run for comparison, with a fixed window (`cc=0`).
//!
//! The figure is the dump's payload rate (memory bytes over the client's data phase)
//! divided by the link's payload capacity: the rate times the share of a full DATA
//! datagram's wire bytes that is memory (Ethernet, IPv4, UDP, the protocol header and
//! the DATA sub-header counted as overhead).
//!
//! Beside the figure, the proxy's trace gives what the client's window did: the packets
//! in flight as the proxy sees them ([`FlightStats`]: DATA sent and not yet covered by
//! an ACK's cumulative point that reached the proxy) against the path's bandwidth-delay
//! product, and the time no DATA arrived for [`STALL`] or more (retransmission timeouts
//! waited out). A fill far below the target with little queue loss is a window held
//! below the bandwidth-delay product; these say by how much, and for how long it idled.
//!
//! The highest rate the client fills: dumps through the same delayed path without a rate
//! limit (the best of [`CALIBRATION_RUNS`]) measure what the client sends on its own; the
//! link is then set to [`HIGH_RATE_SHARE`] of that (in wire bits, rounded down to 10
//! Mbit/s), so that the link and not the emulated CPU is the bottleneck, by a margin the
//! run-to-run noise of a shared machine does not eat.

use super::{BenchEnv, mark, number_before, verified_dump};
use crate::netdumpd::Netdumpd;
use crate::proxy::{Direction, Event, Fate, FaultProxy, Faults, ProxyConfig, QueueDepth, RateLimit, WIRE_OVERHEAD};
use crate::qemu::{NicModel, QemuRun};
use anyhow::Result;
use netdump_core::client::SLOT_PAYLOAD;
use netdump_core::proto::{Data, HEADER_LEN, MessageType, flags};
use netdump_test_pattern::Pattern;
use serde::Serialize;
use std::time::Duration;

/// The client's window (packets): the test kernel's largest.
pub const WINDOW: usize = 256;
/// The queue in front of the link, packets: shallower than the window and than the
/// path's bandwidth-delay product at 100 Mbit/s (83 full frames at 10 ms).
pub const QUEUE_PACKETS: usize = 32;
/// Delay of each direction: a 10 ms round trip.
pub const DELAY: Duration = Duration::from_millis(5);
/// The reference rate of the issue.
pub const BASE_MBIT_S: f64 = 100.0;
/// The high rate's share of what the client sends on its own.
pub const HIGH_RATE_SHARE: f64 = 0.8;
/// Dumps through the path with no limit, to measure what the client sends alone; the
/// best counts.
pub const CALIBRATION_RUNS: usize = 2;
/// The target: payload rate ÷ link payload capacity, with congestion control.
pub const TARGET: f64 = 0.9;
/// Random loss of the lossy runs, each direction.
pub const LOSS: f64 = 0.01;
/// The populated image each run dumps, bytes: 32 MiB is over 20 000 full packets, about
/// 250 round trips of a full window at 100 Mbit/s — long past slow start — and keeps a
/// run whose client fills a fraction of the link to a few minutes.
pub const IMAGE_BYTES: u64 = 32 << 20;
/// A gap between DATA arrivals at the proxy this long or longer counts as a stall: two
/// round trips of the path.
pub const STALL: Duration = Duration::from_millis(20);

/// What the client's window did, as the proxy saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct FlightStats {
    /// Packets in flight when a DATA packet arrived at the proxy: highest seq sent + 1
    /// minus the newest cumulative ACK point that had reached the proxy, averaged over
    /// DATA arrivals, and its largest value.
    pub mean_in_flight: f64,
    pub max_in_flight: u32,
    /// Seconds of gaps of at least [`STALL`] between DATA arrivals, and how many.
    pub stall_s: f64,
    pub stalls: u32,
}

/// [`FlightStats`] of a proxy trace (events in the order the proxy saw them).
pub fn flight_stats(events: &[Event]) -> FlightStats {
    let (mut next, mut cumulative) = (0u32, 0u32);
    let (mut sum, mut n, mut max) = (0f64, 0u64, 0u32);
    let (mut last_data, mut stall_s, mut stalls) = (None, 0f64, 0u32);
    for e in events.iter().filter(|e| e.relayed()) {
        let Some(h) = e.seen.header else { continue };
        match (e.seen.dir, h.msg_type) {
            (Direction::ToClient, MessageType::Ack) if e.delivered() => cumulative = cumulative.max(h.seq),
            (Direction::ToServer, MessageType::Data) => {
                next = next.max(h.seq.saturating_add(1));
                let in_flight = next.saturating_sub(cumulative);
                sum += f64::from(in_flight);
                n += 1;
                max = max.max(in_flight);
                if let Some(prev) = last_data {
                    let gap = e.at.saturating_duration_since(prev);
                    if gap >= STALL {
                        stall_s += gap.as_secs_f64();
                        stalls += 1;
                    }
                }
                last_data = Some(e.at);
            }
            _ => {}
        }
    }
    FlightStats { mean_in_flight: if n == 0 { 0.0 } else { sum / n as f64 }, max_in_flight: max, stall_s, stalls }
}

/// Retransmissions (DATA with the `RETRANSMIT` flag) of a packet an earlier send of
/// which the proxy had passed on: resent though it was not lost on the way to the
/// server (the client's timer or loss detection misread a late or reordered ACK).
pub fn needless_resends(events: &[Event]) -> u64 {
    let mut delivered = std::collections::HashSet::new();
    let mut needless = 0;
    for e in events.iter().filter(|e| e.relayed()) {
        let Some(h) = e.seen.header else { continue };
        if e.seen.dir != Direction::ToServer || h.msg_type != MessageType::Data {
            continue;
        }
        if h.flags & flags::RETRANSMIT != 0 && delivered.contains(&h.seq) {
            needless += 1;
        }
        if e.delivered() {
            delivered.insert(h.seq);
        }
    }
    needless
}

/// Buckets of [`timeline`], milliseconds.
pub const TIMELINE_MS: u64 = 50;

/// The proxy's trace as a table, one row per [`TIMELINE_MS`] from the first DATA: DATA
/// packets that reached the proxy (of them, resent and dropped by the queue or the loss),
/// ACKs relayed to the client, and the packets in flight at the end of the bucket (as in
/// [`flight_stats`]). Written beside each run as `timeline.csv`: where a fill is lost,
/// startup, a stall or a rate held low, shows here.
pub fn timeline(events: &[Event]) -> String {
    let mut s = String::from("ms,data,resent,queue_drops,lost,acks,in_flight\n");
    let Some(start) = events.iter().find(|e| e.seen.is(MessageType::Data)).map(|e| e.at) else { return s };
    let (mut next, mut cumulative) = (0u32, 0u32);
    let mut row = [0u64; 5];
    let mut bucket = 0u64;
    let flush = |s: &mut String, bucket: u64, row: &mut [u64; 5], in_flight: u32| {
        let [data, resent, drops, lost, acks] = *row;
        s.push_str(&format!("{},{data},{resent},{drops},{lost},{acks},{in_flight}\n", bucket * TIMELINE_MS));
        *row = [0; 5];
    };
    for e in events.iter().filter(|e| e.relayed() && e.at >= start) {
        let Some(h) = e.seen.header else { continue };
        let b = e.at.duration_since(start).as_millis() as u64 / TIMELINE_MS;
        while bucket < b {
            flush(&mut s, bucket, &mut row, next.saturating_sub(cumulative));
            bucket += 1;
        }
        match (e.seen.dir, h.msg_type) {
            (Direction::ToClient, MessageType::Ack) => {
                row[4] += 1;
                if e.delivered() {
                    cumulative = cumulative.max(h.seq);
                }
            }
            (Direction::ToServer, MessageType::Data) => {
                next = next.max(h.seq.saturating_add(1));
                row[0] += 1;
                row[1] += u64::from(h.flags & flags::RETRANSMIT != 0);
                row[2] += u64::from(e.fate == Fate::QueueFull);
                row[3] += u64::from(e.fate == Fate::Lost);
            }
            _ => {}
        }
    }
    flush(&mut s, bucket, &mut row, next.saturating_sub(cumulative));
    s
}

/// The proxy's trace datagram by datagram, from the first DATA: microseconds, direction
/// (`s` to the server, `c` to the client), message type, header flags, seq (an ACK's
/// cumulative point), fate. Written beside each run as `events.csv`: what a timeline
/// only sums (which packet was resent, how long after its first send, and whether that
/// first send had been delivered) shows here.
pub fn events_csv(events: &[Event]) -> String {
    let mut s = String::from("us,dir,type,flags,seq,fate\n");
    let Some(start) = events.iter().find(|e| e.seen.is(MessageType::Data)).map(|e| e.at) else { return s };
    for e in events.iter().filter(|e| e.relayed() && e.at >= start) {
        let Some(h) = e.seen.header else { continue };
        let dir = if e.seen.dir == Direction::ToServer { 's' } else { 'c' };
        let us = e.at.duration_since(start).as_micros();
        s.push_str(&format!("{us},{dir},{:?},{:#x},{},{:?}\n", h.msg_type, h.flags, h.seq, e.fate));
    }
    s
}

/// The path's bandwidth-delay product at `mbit`, in full DATA frames: the window that
/// fills the link (the round trip is twice [`DELAY`]).
pub fn bdp_packets(mbit: f64) -> f64 {
    let (_, wire) = full_packet();
    mbit * 1e6 / 8.0 * (2 * DELAY).as_secs_f64() / wire as f64
}

/// Memory bytes a full DATA datagram carries, and the bytes it takes on the wire.
pub fn full_packet() -> (u64, u64) {
    let data = (SLOT_PAYLOAD - Data::SUBHEADER_LEN) as u64;
    let wire = (SLOT_PAYLOAD + HEADER_LEN + WIRE_OVERHEAD) as u64;
    (data, wire)
}

/// The link's payload capacity at `mbit` Mbit/s, bytes per second.
pub fn payload_capacity(mbit: f64) -> f64 {
    let (data, wire) = full_packet();
    mbit * 1e6 / 8.0 * data as f64 / wire as f64
}

/// One dump through the link.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LinkRun {
    /// Link rate, Mbit/s (0: no limit, the calibration).
    pub mbit: f64,
    pub loss: f64,
    pub congestion_control: bool,
    pub seconds: f64,
    pub bytes: u64,
    /// Payload rate ÷ payload capacity (0 for the calibration).
    pub fill: f64,
    /// Datagrams the link's queue dropped (to the server).
    pub queue_drops: u64,
    pub retransmissions: u64,
    /// Of them, resends of packets the proxy had passed on ([`needless_resends`]).
    pub needless: u64,
    /// The window as the proxy saw it.
    pub flight: FlightStats,
}

impl LinkRun {
    pub fn payload_mb_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

#[derive(Debug, Default, Serialize)]
pub struct LinkReport {
    pub nic: String,
    /// The client's own rate through the delayed path, no limit, payload MB/s.
    pub unlimited_mb_s: f64,
    /// The high rate chosen from it, Mbit/s.
    pub high_mbit: f64,
    pub runs: Vec<LinkRun>,
}

impl LinkReport {
    fn run(&self, mbit: f64, loss: f64, cc: bool) -> Option<&LinkRun> {
        self.runs.iter().find(|r| r.mbit == mbit && r.loss == loss && r.congestion_control == cc)
    }
    /// The runs a target applies to (congestion control on), with whether each met it.
    pub fn targets(&self) -> Vec<(&LinkRun, bool)> {
        self.runs.iter().filter(|r| r.mbit > 0.0 && r.congestion_control).map(|r| (r, r.fill >= TARGET)).collect()
    }
}

/// The high rate: [`HIGH_RATE_SHARE`] of the client's own wire rate, in 10 Mbit/s steps.
pub fn high_rate_mbit(unlimited_payload_mb_s: f64) -> f64 {
    let (data, wire) = full_packet();
    let wire_mbit = unlimited_payload_mb_s * 8.0 * wire as f64 / data as f64;
    ((wire_mbit * HIGH_RATE_SHARE / 10.0).floor() * 10.0).max(10.0)
}

/// Every run of the part on one NIC.
pub fn bench_link(env: &BenchEnv, nic: NicModel, log: &mut dyn FnMut(&str)) -> Result<LinkReport> {
    let mut r = LinkReport { nic: nic.name().into(), ..Default::default() };
    // Best of two: one run's rate on a shared machine can fall many times over (the
    // emulated CPU descheduled), and the high rate is derived from it.
    let mut best = 0f64;
    for attempt in 0..CALIBRATION_RUNS {
        let calibration = link_dump(env, nic, &format!("link-unlimited-{attempt}"), None, 0.0, true)?;
        best = best.max(calibration.payload_mb_s());
    }
    r.unlimited_mb_s = best;
    r.high_mbit = high_rate_mbit(r.unlimited_mb_s);
    log(&format!(
        "{}: link: the client alone through {} ms each way: {:.1} MB/s of payload; high rate {:.0} Mbit/s",
        nic.name(),
        DELAY.as_millis(),
        r.unlimited_mb_s,
        r.high_mbit
    ));
    for mbit in [BASE_MBIT_S, r.high_mbit] {
        for loss in [0.0, LOSS] {
            for cc in [true, false] {
                let label = format!(
                    "link-{mbit:.0}-{}-{}",
                    if loss > 0.0 { "loss" } else { "clean" },
                    if cc { "cc" } else { "fixed" }
                );
                let run = link_dump(env, nic, &label, Some(mbit), loss, cc)?;
                log(&format!(
                    "{}: link {mbit:.0} Mbit/s, loss {:.0}%, {}: {:.2} MB/s, fill {:.2}, {} queue drops, {} retransmissions ({} of packets not lost), in flight {:.1} mean / {} max (BDP {:.0}), {} stalls ≥ {} ms = {:.1} s of {:.1} s",
                    nic.name(),
                    loss * 100.0,
                    if cc { "congestion control" } else { "fixed window" },
                    run.payload_mb_s(),
                    run.fill,
                    run.queue_drops,
                    run.retransmissions,
                    run.needless,
                    run.flight.mean_in_flight,
                    run.flight.max_in_flight,
                    bdp_packets(mbit),
                    run.flight.stalls,
                    STALL.as_millis(),
                    run.flight.stall_s,
                    run.seconds
                ));
                r.runs.push(run);
            }
        }
    }
    Ok(r)
}

/// One dump of [`IMAGE_BYTES`] through the proxy: `mbit` limits both directions (none: calibration),
/// `loss` both ways, congestion control on or off.
fn link_dump(env: &BenchEnv, nic: NicModel, label: &str, mbit: Option<f64>, loss: f64, cc: bool) -> Result<LinkRun> {
    let dir = env.work_dir.join(format!("{label}-{}", nic.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let server = Netdumpd::start(&env.netdumpd, &dir.join("crash"), &["--session-timeout", "30"])?;
    let faults = Faults { loss, delay: DELAY, ..Default::default() };
    let rate = mbit.map(|m| RateLimit::mbit_s(m, QueueDepth::Packets(QUEUE_PACKETS)));
    let config =
        ProxyConfig { seed: 0x19, to_server: faults, to_client: faults, to_server_rate: rate, to_client_rate: rate };
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port).parse()?, config)?;
    let pattern = Pattern { base: 32 << 20, len: IMAGE_BYTES, seed: 0x11f, zero_every: 0 };
    let append = format!(
        "scenario=dump server_port={} name=bench pattern_base={} pattern_len={} seed={} zero_every=0 window={WINDOW}{}",
        proxy.port,
        pattern.base,
        pattern.len,
        pattern.seed,
        if cc { "" } else { " cc=0" }
    );
    let q = QemuRun {
        kernel: &env.test_kernel,
        memory_mib: ((pattern.base + IMAGE_BYTES) >> 20) as u32 + 16,
        cpus: 1,
        append,
        nic,
        serial_log: dir.join("serial.log"),
        timeout: Duration::from_secs(600),
        capture: None,
    }
    .run()?;
    let log = server.stop();
    let (line, seconds) = verified_dump(&q, label, nic, &log)?;
    let bytes = number_before(line, " bytes")?;
    let retransmissions = number_before(line, " retransmissions")?;
    let fill = mbit.map_or(0.0, |m| bytes as f64 / seconds / payload_capacity(m));
    let queue_drops = proxy.link_stats(Direction::ToServer).map_or(0, |s| s.dropped);
    let events = proxy.events();
    let flight = flight_stats(&events);
    let needless = needless_resends(&events);
    std::fs::write(dir.join("timeline.csv"), timeline(&events))?;
    std::fs::write(dir.join("events.csv"), events_csv(&events))?;
    Ok(LinkRun {
        mbit: mbit.unwrap_or(0.0),
        loss,
        congestion_control: cc,
        seconds,
        bytes,
        fill,
        queue_drops,
        retransmissions,
        needless,
        flight,
    })
}

/// The part's section of the report.
pub fn markdown(links: &[LinkReport]) -> String {
    if links.is_empty() {
        return String::new();
    }
    let (data, wire) = full_packet();
    let mut s = format!(
        "\n## Filling a link (window {WINDOW}, queue {QUEUE_PACKETS} packets, {} ms each way)\n\nPayload rate ÷ the link's payload capacity ({data} memory bytes per {wire}-byte full DATA frame: Ethernet, IPv4, UDP, protocol header and sub-header counted). Congestion control on (target ≥ {TARGET}) and, same run, a fixed window (`cc=0`). The high rate is {HIGH_RATE_SHARE} of what the client sends through the same path with no limit. In flight: DATA packets sent and not yet acknowledged as the proxy sees them, mean / largest, against the path's bandwidth-delay product (BDP); stalled: time with no DATA for {} ms or more.\n\n| NIC | client alone MB/s | link Mbit/s | loss | congestion control | fixed window | queue drops (cc / fixed) | retransmissions (cc / fixed) | in flight, cc: mean / max (BDP) | stalled s, cc / fixed |\n|---|---|---|---|---|---|---|---|---|---|\n",
        DELAY.as_millis(),
        STALL.as_millis()
    );
    for l in links {
        for mbit in [BASE_MBIT_S, l.high_mbit] {
            for loss in [0.0, LOSS] {
                let (Some(cc), Some(fixed)) = (l.run(mbit, loss, true), l.run(mbit, loss, false)) else { continue };
                s += &format!(
                    "| {} | {:.1} | {mbit:.0} | {:.0}% | **{:.2}** {} ({:.2} MB/s) | {:.2} ({:.2} MB/s) | {} / {} | {} / {} | {:.1} / {} ({:.0}) | {:.1} of {:.1} / {:.1} of {:.1} |\n",
                    l.nic,
                    l.unlimited_mb_s,
                    loss * 100.0,
                    cc.fill,
                    mark(cc.fill >= TARGET),
                    cc.payload_mb_s(),
                    fixed.fill,
                    fixed.payload_mb_s(),
                    cc.queue_drops,
                    fixed.queue_drops,
                    cc.retransmissions,
                    fixed.retransmissions,
                    cc.flight.mean_in_flight,
                    cc.flight.max_in_flight,
                    bdp_packets(mbit),
                    cc.flight.stall_s,
                    cc.seconds,
                    fixed.flight.stall_s,
                    fixed.seconds
                );
            }
        }
    }
    s
}

/// One line per missed target, for the report's list of misses.
pub fn misses(links: &[LinkReport]) -> Vec<String> {
    let mut v = vec![];
    for l in links {
        for (run, met) in l.targets() {
            if !met {
                v.push(format!(
                    "{}: link {:.0} Mbit/s, loss {:.0}%: the dump filled **{:.2}** of the link's payload capacity with congestion control (target {TARGET}), {} queue drops, {} retransmissions; the client alone sends {:.1} MB/s through the path.",
                    l.nic,
                    run.mbit,
                    run.loss * 100.0,
                    run.fill,
                    run.queue_drops,
                    run.retransmissions,
                    l.unlimited_mb_s
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_capacity_counts_every_header_of_a_full_frame() {
        let (data, wire) = full_packet();
        assert_eq!(wire, 1514, "a full DATA datagram fills a 1500-byte MTU frame");
        assert_eq!(data, (1500 - 20 - 8 - HEADER_LEN - Data::SUBHEADER_LEN) as u64);
        let cap = payload_capacity(100.0);
        assert!((cap - 12.5e6 * data as f64 / 1514.0).abs() < 1e-6);
    }

    #[test]
    fn the_high_rate_is_a_share_of_the_client_s_own_in_steps_of_ten() {
        let (data, wire) = full_packet();
        // A client that alone fills 400 Mbit/s of wire: the link at 320.
        let alone = 400e6 / 8.0 * data as f64 / wire as f64 / 1e6;
        assert_eq!(high_rate_mbit(alone), 320.0);
        assert_eq!(high_rate_mbit(0.1), 10.0, "never below 10 Mbit/s");
    }

    #[test]
    fn the_flight_stats_follow_data_and_the_acks_that_got_through() {
        use crate::proxy::{Fate, Seen};
        use netdump_core::proto::Header;
        let t0 = std::time::Instant::now();
        let client: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ev = |ms: u64, dir, t, seq, fate| Event {
            at: t0 + Duration::from_millis(ms),
            seen: Seen { dir, client, header: Some(Header::v1(t, 0, 1, seq)) },
            fate,
        };
        let (up, down, ok) = (Direction::ToServer, Direction::ToClient, Fate::Forwarded);
        let events = [
            ev(0, up, MessageType::Data, 0, ok),
            ev(0, up, MessageType::Data, 1, ok),
            ev(1, up, MessageType::Data, 2, ok),          // 3 in flight
            ev(2, down, MessageType::Ack, 2, Fate::Lost), // never reached the client
            ev(3, up, MessageType::Data, 3, ok),          // 4 in flight
            ev(4, down, MessageType::Ack, 3, ok),
            ev(40, up, MessageType::Data, 4, ok), // 2 in flight, after a 37 ms stall
        ];
        let f = flight_stats(&events);
        assert_eq!(f.max_in_flight, 4);
        assert!((f.mean_in_flight - (1 + 2 + 3 + 4 + 2) as f64 / 5.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.stalls, 1);
        assert!((f.stall_s - 0.037).abs() < 1e-9, "{f:?}");
        // 100 Mbit/s over a 10 ms round trip: about 83 full frames.
        assert_eq!(bdp_packets(100.0).round(), 83.0);
    }

    #[test]
    fn the_timeline_counts_per_bucket_from_the_first_data() {
        use crate::proxy::{Fate, Seen};
        use netdump_core::proto::Header;
        let t0 = std::time::Instant::now();
        let client: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ev = |ms: u64, dir, t, fl, seq, fate| Event {
            at: t0 + Duration::from_millis(ms),
            seen: Seen { dir, client, header: Some(Header::v1(t, fl, 1, seq)) },
            fate,
        };
        let (up, down, ok) = (Direction::ToServer, Direction::ToClient, Fate::Forwarded);
        let events = [
            ev(0, down, MessageType::Ack, 0, 0, ok), // before the first DATA: not counted
            ev(10, up, MessageType::Data, 0, 0, ok),
            ev(20, up, MessageType::Data, 0, 1, Fate::QueueFull),
            ev(30, up, MessageType::Data, 0, 2, Fate::Lost),
            ev(40, down, MessageType::Ack, 0, 1, ok),
            ev(70, up, MessageType::Data, flags::RETRANSMIT, 1, ok),
            ev(170, up, MessageType::Data, 0, 3, ok),
        ];
        let t = timeline(&events);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(
            rows,
            [
                "ms,data,resent,queue_drops,lost,acks,in_flight",
                "0,3,0,1,1,1,2",
                "50,1,1,0,0,0,2",
                "100,0,0,0,0,0,2",
                "150,1,0,0,0,0,3",
            ],
            "{t}"
        );
    }

    #[test]
    fn a_resend_is_needless_when_an_earlier_send_was_passed_on() {
        use crate::proxy::{Fate, Seen};
        use netdump_core::proto::Header;
        let t0 = std::time::Instant::now();
        let client: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let ev = |fl, seq, fate| Event {
            at: t0,
            seen: Seen { dir: Direction::ToServer, client, header: Some(Header::v1(MessageType::Data, fl, 1, seq)) },
            fate,
        };
        let r = flags::RETRANSMIT;
        let events = [
            ev(0, 0, Fate::Forwarded),
            ev(0, 1, Fate::QueueFull),
            ev(0, 2, Fate::Lost),
            ev(r, 0, Fate::Forwarded), // needless: 0 got through
            ev(r, 1, Fate::Forwarded), // needed
            ev(r, 2, Fate::QueueFull), // needed
            ev(r, 2, Fate::Forwarded), // needed: no send of 2 got through before
            ev(r, 2, Fate::Forwarded), // needless
        ];
        assert_eq!(needless_resends(&events), 2);
    }

    #[test]
    fn only_congestion_controlled_runs_count_for_the_target() {
        let run = |mbit, cc, fill| LinkRun { mbit, congestion_control: cc, fill, seconds: 1.0, ..Default::default() };
        let l = LinkReport {
            nic: "e1000".into(),
            unlimited_mb_s: 40.0,
            high_mbit: 300.0,
            runs: vec![run(0.0, true, 0.0), run(100.0, true, 0.95), run(100.0, false, 0.4), run(300.0, true, 0.8)],
        };
        let t = l.targets();
        assert_eq!(t.len(), 2);
        assert!(t[0].1 && !t[1].1);
        let m = misses(&[l]);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("300 Mbit/s") && m[0].contains("0.80"), "{}", m[0]);
    }
}
