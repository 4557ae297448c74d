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
//! The highest rate the client fills: a first dump through the same delayed path without
//! a rate limit measures what the client sends on its own; the link is then set to
//! [`HIGH_RATE_SHARE`] of that (in wire bits, rounded down to 10 Mbit/s), so that the link
//! and not the emulated CPU is the bottleneck, by a margin the run-to-run noise of a
//! shared machine does not eat.

use super::{BenchEnv, mark, number_before, verified_dump};
use crate::netdumpd::Netdumpd;
use crate::proxy::{Direction, FaultProxy, Faults, ProxyConfig, QueueDepth, RateLimit, WIRE_OVERHEAD};
use crate::qemu::{NicModel, QemuRun};
use anyhow::Result;
use netdump_core::client::SLOT_PAYLOAD;
use netdump_core::proto::{Data, HEADER_LEN};
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
/// The target: payload rate ÷ link payload capacity, with congestion control.
pub const TARGET: f64 = 0.9;
/// Random loss of the lossy runs, each direction.
pub const LOSS: f64 = 0.01;

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
    let calibration = link_dump(env, nic, "link-unlimited", None, 0.0, true)?;
    r.unlimited_mb_s = calibration.payload_mb_s();
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
                    "{}: link {mbit:.0} Mbit/s, loss {:.0}%, {}: {:.2} MB/s, fill {:.2}, {} queue drops, {} retransmissions",
                    nic.name(),
                    loss * 100.0,
                    if cc { "congestion control" } else { "fixed window" },
                    run.payload_mb_s(),
                    run.fill,
                    run.queue_drops,
                    run.retransmissions
                ));
                r.runs.push(run);
            }
        }
    }
    Ok(r)
}

/// One 64 MiB dump through the proxy: `mbit` limits both directions (none: calibration),
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
    let pattern = Pattern { base: 32 << 20, len: 64 << 20, seed: 0x11f, zero_every: 0 };
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
        memory_mib: 112,
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
    Ok(LinkRun {
        mbit: mbit.unwrap_or(0.0),
        loss,
        congestion_control: cc,
        seconds,
        bytes,
        fill,
        queue_drops,
        retransmissions,
    })
}

/// The part's section of the report.
pub fn markdown(links: &[LinkReport]) -> String {
    if links.is_empty() {
        return String::new();
    }
    let (data, wire) = full_packet();
    let mut s = format!(
        "\n## Filling a link (window {WINDOW}, queue {QUEUE_PACKETS} packets, {} ms each way)\n\nPayload rate ÷ the link's payload capacity ({data} memory bytes per {wire}-byte full DATA frame: Ethernet, IPv4, UDP, protocol header and sub-header counted). Congestion control on (target ≥ {TARGET}) and, same run, a fixed window (`cc=0`). The high rate is {HIGH_RATE_SHARE} of what the client sends through the same path with no limit.\n\n| NIC | client alone MB/s | link Mbit/s | loss | congestion control | fixed window | queue drops (cc / fixed) | retransmissions (cc / fixed) |\n|---|---|---|---|---|---|---|---|\n",
        DELAY.as_millis()
    );
    for l in links {
        for mbit in [BASE_MBIT_S, l.high_mbit] {
            for loss in [0.0, LOSS] {
                let (Some(cc), Some(fixed)) = (l.run(mbit, loss, true), l.run(mbit, loss, false)) else { continue };
                s += &format!(
                    "| {} | {:.1} | {mbit:.0} | {:.0}% | **{:.2}** {} ({:.2} MB/s) | {:.2} ({:.2} MB/s) | {} / {} | {} / {} |\n",
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
                    fixed.retransmissions
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
