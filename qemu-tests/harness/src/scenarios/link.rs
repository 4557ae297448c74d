//! A dump over a link of limited rate whose queue is shallower than the client's window
//! (issue 19): the proxy's rate limit ([`crate::rate_limit`]) drops what overflows its
//! queue, as a switch port does, and the client's congestion control must get the whole
//! dump through it, every dropped packet sent again.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::proxy::{Direction, Event, Fate, FaultProxy, Faults, ProxyConfig, QueueDepth, RateLimit};
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use anyhow::{Result, ensure};
use netdump_core::proto::MessageType;
use netdump_test_pattern::Pattern;
use std::collections::HashSet;

/// Slower than any NIC's client under TCG, so that the client always outruns the link and
/// its queue (4 packets, against a window of 64) overflows.
const LINK_MBIT_S: f64 = 20.0;
const QUEUE_PACKETS: usize = 4;

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("link-shallow-queue", nic, shallow_queue)]
}

/// 8 MiB through a 20 Mbit/s uplink with a 4-packet queue and 1% random loss both ways:
/// the dump verifies bit for bit, the queue dropped DATA packets, and each was sent again
/// and got through.
fn shallow_queue(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0x11A;
    let run = KernelRun::new("dump", Pattern { base: 32 << 20, len: 8 << 20, seed, zero_every: 7 });
    let srv = common::start_server(ctx, &[])?;
    let rate = RateLimit::mbit_s(LINK_MBIT_S, QueueDepth::Packets(QUEUE_PACKETS));
    let loss = Faults::loss(0.01);
    let config =
        ProxyConfig { seed, to_server: loss, to_client: loss, to_server_rate: Some(rate), ..Default::default() };
    let proxy = FaultProxy::start(srv.addr(), config)?;
    let q = run.boot(ctx, proxy.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump must verify through the shallow queue")?;
        let panic = format!("netdump test panic (seed {seed:#x})");
        let (_, mut outcome) = common::check_complete_dump(ctx, srv, &run.pattern, &panic, "netdump_test_crash_site")?;
        let events = proxy.events();
        let dropped = dropped_data(&events);
        ensure!(!dropped.is_empty(), "the queue never overflowed: {}", proxy.summary());
        let stats = proxy.link_stats(Direction::ToServer).expect("a rate limit to the server");
        ensure!(stats.max_queued_packets <= QUEUE_PACKETS, "the queue held more than its depth: {stats:?}");
        let unrecovered = unrecovered(&events, &dropped);
        ensure!(unrecovered.is_empty(), "DATA dropped by the queue and never delivered: {unrecovered:?}");
        ensure!(proxy.count(Direction::ToServer, Fate::Lost) > 0, "the random loss never struck");
        outcome.detail += &format!(
            "; {}, {} DATA dropped by the queue, all resent ({})",
            rate.describe(),
            dropped.len(),
            proxy.summary()
        );
        Ok(outcome)
    })
}

/// The DATA packets (seq, position in the trace) the queue dropped.
fn dropped_data(events: &[Event]) -> Vec<(u32, usize)> {
    let data = |e: &Event| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data);
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| data(e) && e.fate == Fate::QueueFull)
        .filter_map(|(i, e)| Some((e.seen.header?.seq, i)))
        .collect()
}

/// Dropped DATA packets whose seq never reached the server: no delivery after the drop,
/// and none before it either (a copy the queue dropped may be a retransmission the
/// client sent too early, of a packet already delivered, when a loaded host delays ACKs).
fn unrecovered(events: &[Event], dropped: &[(u32, usize)]) -> Vec<u32> {
    let delivered = |e: &Event, seq: u32| {
        e.seen.dir == Direction::ToServer
            && e.delivered()
            && e.seen.is(MessageType::Data)
            && e.seen.header.is_some_and(|h| h.seq == seq)
    };
    dropped
        .iter()
        .filter(|&&(seq, _)| !events.iter().any(|e| delivered(e, seq)))
        .map(|&(seq, _)| seq)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}
