//! Dumps that survive a hostile network and a failing server (issue 4). The test
//! kernel's dump goes through the fault proxy ([`crate::proxy`]), a rogue sender forges
//! packets at both ends, netdumpd is killed mid-dump or its disk fills, four kernels crash
//! into one netdumpd at once. Each scenario ends with vmcores that match their patterns bit
//! for bit, or, when the server is silent or gone, with the client reporting why within
//! its bound and the server marking the dump incomplete, never complete.
//!
//! The proxy's faults are seeded (the seed is in each summary line); set
//! `NETDUMP_PROXY_SEED` to run the fault scenarios with another one.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::check;
use crate::forgery::{Holds, Rogue, Route};
use crate::host_client::HostClient;
use crate::netdumpd::{Netdumpd, free_udp_port};
use crate::proxy::{Action, Direction, Event, Fate, FaultProxy, Faults, Forger, ProxyConfig, Seen};
use crate::qemu::{NicModel, QemuOutcome};
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::Vmcore;
use anyhow::{Context, Result, bail, ensure};
use netdump_core::DumpError;
use netdump_core::proto::{DecisionReason, MessageType, Verdict, flags::RETRANSMIT};
use netdump_test_pattern::Pattern;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client's bounds in the silence scenarios: CRASH, DATA without progress, FINISH.
const SILENCE_BOUND_MS: u64 = 3000;
/// What a bound may overrun on the wire: the guest's TSC clock under TCG, QEMU and the
/// host scheduler (the check is "gave up within its bound", not a speed).
const BOUND_SLACK_MS: u64 = 1500;
/// How long a scenario waits for a kernel to get its dump under way.
const PATIENCE: Duration = Duration::from_secs(180);
const CRASH_SITE: &str = "netdump_test_crash_site";

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    let loss_dup_reorder =
        Faults { loss: 0.20, duplicate: 0.05, reorder: 0.05, reorder_depth: 8, ..Default::default() };
    let flips = Faults { corrupt: 0.01, ..Default::default() };
    let delay = Faults { delay: Duration::from_millis(10), ..Default::default() };
    vec![
        Scenario::new("hostile-loss", nic, |c| through_proxy(c, 0x4e01, Faults::loss(0.05))),
        Scenario::new("hostile-loss-dup-reorder", nic, move |c| through_proxy(c, 0x4e02, loss_dup_reorder)),
        Scenario::new("hostile-bitflips", nic, move |c| through_proxy(c, 0x4e03, flips)),
        Scenario::new("hostile-delay", nic, move |c| through_proxy(c, 0x4e04, delay)),
        Scenario::new("hostile-silent-announce", nic, |c| silent_server(c, Silence::Announce)),
        Scenario::new("hostile-silent-data", nic, |c| silent_server(c, Silence::Data)),
        Scenario::new("hostile-silent-finish", nic, |c| silent_server(c, Silence::Finish)),
        Scenario::new("hostile-spoofing", nic, spoofing),
        Scenario::new("hostile-restart", nic, server_restart),
        Scenario::new("hostile-disk-full", nic, disk_full),
        Scenario::new("hostile-concurrent4", nic, concurrent),
    ]
}

fn proxy_seed(default: u64) -> u64 {
    std::env::var("NETDUMP_PROXY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn panic_message(seed: u64) -> String {
    format!("netdump test panic (seed {seed:#x})")
}

/// The test kernel's report of the server packets it dropped: (bad CRC, cookie or type;
/// wrong address, port or MAC).
fn client_drops(serial: &str) -> Result<(u64, u64)> {
    let line =
        serial.lines().find(|l| l.starts_with("netdump: dropped ")).context("the kernel did not report its drops")?;
    let numbers: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    ensure!(numbers.len() == 2, "unexpected drop report: {line}");
    Ok((numbers[0], numbers[1]))
}

/// The line the kernel printed when its dump failed.
fn failure_line(q: &QemuOutcome) -> Result<&str> {
    q.serial.lines().find(|l| l.contains("dump failed after")).context("the kernel did not report the failure")
}

/// Ensures each kind of fault configured actually happened.
fn faults_happened(proxy: &FaultProxy, faults: &Faults) -> Result<()> {
    let hit = |fate| proxy.count(Direction::ToServer, fate) + proxy.count(Direction::ToClient, fate);
    for (p, fate) in [
        (faults.loss, Fate::Lost),
        (faults.duplicate, Fate::Duplicated),
        (faults.reorder, Fate::Reordered),
        (faults.corrupt, Fate::Corrupted),
    ] {
        ensure!(p == 0.0 || hit(fate) > 0, "the proxy never applied {fate:?}: {}", proxy.summary());
    }
    Ok(())
}

/// A dump through the proxy's faults, both ways: complete and bit-exact.
fn through_proxy(ctx: &Ctx, seed: u64, faults: Faults) -> Result<Outcome> {
    let run = KernelRun::new("dump", common::pattern(seed));
    let srv = common::start_server(ctx, &[])?;
    let config = ProxyConfig { seed: proxy_seed(seed), to_server: faults, to_client: faults, ..Default::default() };
    let proxy = FaultProxy::start(srv.addr(), config)?;
    let q = run.boot(ctx, proxy.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump must verify through the faults")?;
        let (_, mut outcome) = common::check_complete_dump(ctx, srv, &run.pattern, &panic_message(seed), CRASH_SITE)?;
        faults_happened(&proxy, &faults)?;
        let (rejected, _) = client_drops(&q.serial)?;
        let flipped_to_client = corrupted_before_the_end(&proxy.events());
        ensure!(
            flipped_to_client == 0 || rejected > 0,
            "{flipped_to_client} corrupted replies reached the client, it dropped none"
        );
        if proxy.count(Direction::ToServer, Fate::Corrupted) > 0 {
            common::wait_for_log(srv, &["dropped packet"]).context("a corrupted packet reached netdumpd")?;
        }
        outcome.detail += &format!("; {} ({}); client dropped {rejected}", faults.describe(), proxy.summary());
        Ok(outcome)
    })
}

/// Corrupted replies the client must have read: those that went out before the first
/// FINISH_ACK that reached it intact (it reads its NIC in order and stops at that one; a
/// corrupted reply sent later, to a FINISH it repeated meanwhile, may never be read).
/// Without such a FINISH_ACK, every corrupted reply.
fn corrupted_before_the_end(events: &[Event]) -> usize {
    let to_client = |e: &&Event| e.seen.dir == Direction::ToClient;
    let intact_finish_ack =
        events.iter().filter(to_client).find(|e| e.seen.is(MessageType::FinishAck) && e.fate == Fate::Forwarded);
    events
        .iter()
        .filter(to_client)
        .filter(|e| e.fate == Fate::Corrupted && intact_finish_ack.is_none_or(|f| e.at <= f.at))
        .count()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    /// netdumpd hears the CRASH; nothing it says reaches the client.
    Announce,
    /// After 2000 DATA packets the link goes dead both ways.
    Data,
    /// From the first FINISH the link is dead both ways: all the data arrived, the
    /// verification never happens.
    Finish,
}

/// The proxy rule of a silence: from the packet that starts it, drops what the server
/// says (announce) or everything (data, finish).
fn silence_rule(which: Silence) -> impl FnMut(&Seen) -> Action + Send + 'static {
    let mut silent = false;
    let mut data = 0u32;
    move |s: &Seen| {
        let to_server = s.dir == Direction::ToServer;
        data += u32::from(to_server && s.is(MessageType::Data));
        silent |= match which {
            Silence::Announce => to_server && s.is(MessageType::Crash),
            Silence::Data => data > 2000,
            Silence::Finish => to_server && s.is(MessageType::Finish),
        };
        let dead = silent && (which != Silence::Announce || !to_server);
        if dead { Action::Blackhole } else { Action::Pass }
    }
}

/// The server falls silent at one phase: the client gives up within its bound and says
/// why; the server marks the dump incomplete.
fn silent_server(ctx: &Ctx, which: Silence) -> Result<Outcome> {
    let seed = 0x5110 + which as u64;
    let mut run = KernelRun::new("dump", common::pattern(seed));
    run.extra = format!("announce_ms={SILENCE_BOUND_MS} silence_ms={SILENCE_BOUND_MS} finish_ms={SILENCE_BOUND_MS}");
    // At the announcement the client's ABORT reaches netdumpd, which must still be waiting
    // for the dump to record it: its own bound is set beyond the client's (and its slack),
    // so the two bounds never race. The other silences cut the ABORT off too: there the
    // server's bound is what ends the dump.
    let srv = match which {
        Silence::Announce => {
            common::start_server_with_timeout(ctx, (SILENCE_BOUND_MS + BOUND_SLACK_MS) / 1000 + 5, &[])?
        }
        _ => common::start_server(ctx, &[])?,
    };
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig { seed, ..Default::default() })?;
    proxy.set_rule(silence_rule(which));
    let q = run.boot(ctx, proxy.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::DUMP_FAILED, "the dump must give up when the server is silent")?;
        let line = failure_line(&q)?;
        ensure!(line.contains(&format!("server silent during {which:?}")), "unexpected failure: {line}");
        let waited = waited_on_the_wire(&proxy.events(), which)?;
        ensure!(
            waited <= SILENCE_BOUND_MS + BOUND_SLACK_MS,
            "the client gave up {waited} ms after the server fell silent, beyond its bound of {SILENCE_BOUND_MS} ms"
        );
        let (_, info) = common::wait_incomplete(ctx, srv)?;
        let reason = info.pointer("/status_reason").and_then(|v| v.as_str()).unwrap_or("").to_string();
        if which == Silence::Announce {
            let abort = info.pointer("/abort/reason").and_then(|v| v.as_str());
            ensure!(abort == Some("server_silent"), "the client's ABORT did not reach the server: {info}");
        }
        let detail = format!(
            "client: \"{}\" {waited} ms after the server fell silent (bound {SILENCE_BOUND_MS} ms); server: incomplete, {reason}",
            line.trim_start_matches("netdump: ")
        );
        Ok(Outcome { detail, ..Default::default() })
    })
}

/// From the moment the server fell silent to the client's last packet (its ABORT), as
/// the proxy saw them.
fn waited_on_the_wire(events: &[Event], which: Silence) -> Result<u64> {
    let to_server = |e: &&Event| e.seen.dir == Direction::ToServer;
    let from = match which {
        Silence::Announce => events.iter().filter(to_server).find(|e| e.seen.is(MessageType::Crash)),
        // The last reply that reached the client.
        Silence::Data => events.iter().rfind(|e| e.seen.dir == Direction::ToClient && e.fate != Fate::Blackholed),
        Silence::Finish => events.iter().filter(to_server).find(|e| e.seen.is(MessageType::Finish)),
    }
    .context("the proxy never saw the server fall silent")?;
    let last = events.iter().rfind(to_server).context("no packet from the client")?;
    ensure!(last.seen.is(MessageType::Abort), "the client's last packet was not an ABORT: {:?}", last.seen.header);
    Ok(last.at.saturating_duration_since(from.at).as_millis() as u64)
}

/// A dump of `name` by a host client: complete, its image the pattern bit for bit.
fn check_host_dump(srv: &Netdumpd, name: &str, pattern: &Pattern) -> Result<()> {
    let dump = common::only_dump_of(srv, name)?;
    check::info_says_complete(&common::read_info(&dump)?)?;
    check::pattern_matches(&Vmcore::open(&dump.join("vmcore"))?, pattern).with_context(|| format!("dump of {name}"))
}

fn small_pattern(seed: u64) -> Pattern {
    Pattern { base: 1 << 20, len: 1 << 20, seed, zero_every: 5 }
}

/// A rogue sender on the host forges packets at both ends during the dump; the dump is
/// unaffected, nothing forged lands in any dump, both ends count the drops.
///
/// The attack is paced by the dump's events ([`Rogue::attack`]): it starts after the
/// kernel's 300th DATA, each round goes out while the proxy holds the kernel's packets
/// (so a forged `seq` is one the server has not seen yet, however far the kernel got),
/// rounds are 200 DATA packets apart, and the kernel's FINISH waits in the proxy until
/// netdumpd has handled every forgery (it answered a CRASH the rogue sent after them).
fn spoofing(ctx: &Ctx) -> Result<Outcome> {
    const ROUNDS: usize = 5;
    let seed = 0x5900;
    let run = KernelRun::new("dump", common::pattern(seed));
    let srv = common::start_server(ctx, &[])?;
    // An earlier client whose dump finished: the rogue replays its cookie.
    let earlier_name = format!("earlier-{}", ctx.id);
    let earlier = HostClient::new(&earlier_name, small_pattern(seed))
        .run(srv.addr())
        .map_err(|e| anyhow::anyhow!("install: {e:?}"))?;
    earlier.result.map_err(|e| anyhow::anyhow!("the earlier dump failed: {e}"))?;
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig::default())?;
    let rogue = Rogue {
        proxy: &proxy,
        holds: Holds::new(),
        server: srv.addr(),
        replayed: earlier.cookie,
        pattern: run.pattern,
        forgers: &[Forger::ServerPort, Forger::OtherPort, Forger::OtherAddress],
    };
    rogue.arm();
    let (q, attack) = std::thread::scope(|s| {
        let kernel = s.spawn(|| run.boot(ctx, proxy.port));
        let attack = rogue.attack(300, ROUNDS, 200, PATIENCE);
        (kernel.join().expect("the QEMU thread panicked"), attack)
    });
    with_server_log(srv, |srv| {
        let q = q?;
        let attack = attack.with_context(|| format!("the attack; kernel serial:\n{}", common::tail(&q.serial, 10)))?;
        expect_exit(&q, exit::SUCCESS, "forged packets must not change the dump")?;
        let (_, mut outcome) = common::check_complete_dump(ctx, srv, &run.pattern, &panic_message(seed), CRASH_SITE)?;
        let first_finish = proxy
            .events()
            .into_iter()
            .find(|e| e.seen.is(MessageType::Finish) && e.delivered())
            .context("no FINISH reached the server")?;
        ensure!(attack.finished_at < first_finish.at, "the attack ended after the data phase; it proves nothing");
        check_host_dump(srv, &earlier_name, &small_pattern(seed))
            .context("the finished dump whose cookie was replayed")?;
        // The client: each forgery by a wrong cookie, and each from a wrong source.
        let count = |f: fn(&Route) -> bool| (attack.sent.iter().filter(|(_, r)| f(r)).count() * ROUNDS) as u64;
        let by_cookie = count(|r| *r == Route::ToClient(Forger::ServerPort));
        let by_source = count(|r| matches!(r, Route::ToClient(Forger::OtherPort | Forger::OtherAddress)));
        let (rejected, spoofed) = client_drops(&q.serial)?;
        ensure!(
            rejected >= by_cookie,
            "the client dropped {rejected} packets for their cookie; {by_cookie} were forged"
        );
        ensure!(spoofed >= by_source, "the client dropped {spoofed} packets for their source; {by_source} were forged");
        // netdumpd: logged (the first drop of a reason always is: the warning limiter lets
        // one a second through per reason) and counted in the live dump's info.json.
        let reasons =
            ["unknown_cookie", "replayed_crash", "wrong_source", "out_of_range"].map(|r| format!("reason={r}"));
        common::wait_for_log(srv, &reasons.iter().map(String::as_str).collect::<Vec<_>>())?;
        let info = common::read_info(&common::only_dump(ctx, srv)?)?;
        let from_rogue = count(|r| *r == Route::ToServer);
        let rounds = ROUNDS as u64;
        ensure!(common::drops(&info, "wrong_source") >= 5 * rounds, "info.json drops: {}", info["drops"]);
        // Both forgeries beyond the announced sections, every round: their seq was new.
        ensure!(common::drops(&info, "out_of_range") >= 2 * rounds, "info.json drops: {}", info["drops"]);
        outcome.detail += &format!(
            "; {} forgeries in {ROUNDS} rounds paced by the dump ({} to the client, {from_rogue} from a rogue address, the rest spoofing the client's): client dropped {rejected} by cookie + {spoofed} by source, server's session {}",
            attack.sent.len() * ROUNDS,
            by_cookie + by_source,
            info["drops"]
        );
        Ok(outcome)
    })
}

/// netdumpd is killed (SIGKILL) mid-dump and restarted on the same port and directory:
/// the restarted server marks the dump incomplete with what arrived and stops the client.
fn server_restart(ctx: &Ctx) -> Result<Outcome> {
    const KILL_AFTER_DATA: usize = 3000;
    let seed = 0x7e57;
    let run = KernelRun::new("dump", common::pattern(seed));
    let first = common::start_server(ctx, &[])?;
    let port = first.port;
    let proxy = FaultProxy::start(first.addr(), ProxyConfig::default())?;
    let restarted = std::thread::scope(|s| -> Result<_> {
        let kernel = s.spawn(|| run.boot(ctx, proxy.port));
        let killed = proxy.wait_for(Direction::ToServer, MessageType::Data, KILL_AFTER_DATA, PATIENCE).map(|()| {
            let log = first.stop();
            (proxy.events().len(), log)
        });
        // The client retransmits into nothing: the restart waits for the proof of it, a
        // DATA marked as a retransmission after the kill (not for a time).
        let retransmitted = killed.as_ref().map_err(|e| anyhow::anyhow!("{e:#}")).and_then(|(at, _)| {
            let at = *at;
            proxy
                .wait_until(PATIENCE, |events| {
                    events[at.min(events.len())..].iter().any(|e| {
                        e.seen.header.is_some_and(|h| h.msg_type == MessageType::Data && h.flags & RETRANSMIT != 0)
                    })
                })
                .context("the client did not retransmit into the killed server")
        });
        let timeout = common::SESSION_TIMEOUT_S.to_string();
        let second = retransmitted.and_then(|()| {
            Netdumpd::start_on(
                &ctx.artifacts.netdumpd,
                &ctx.dir.join("crash"),
                port,
                &["--session-timeout", &timeout],
                None,
            )
        });
        let q = kernel.join().expect("the QEMU thread panicked");
        killed?;
        Ok((second?, q?))
    })?;
    let (second, q) = restarted;
    with_server_log(second, |srv| {
        expect_exit(&q, exit::DUMP_FAILED, "the restarted server must stop the dump it cannot resume")?;
        let line = failure_line(&q)?;
        ensure!(line.contains("server stopped the dump"), "unexpected failure: {line}");
        let dump = common::only_dump(ctx, srv)?;
        let info = common::read_info(&dump)?;
        ensure!(info["status"] == "incomplete", "the interrupted dump is {}", info["status"]);
        let reason = info["status_reason"].as_str().unwrap_or("");
        ensure!(reason.contains("netdumpd stopped while receiving"), "status_reason: {reason}");
        ensure!(!dump.join("vmcore").exists(), "an interrupted dump was renamed to vmcore");
        let arrived = check::pattern_pages_arrived(&Vmcore::open(&dump.join("vmcore-incomplete"))?, &run.pattern)?;
        ensure!(arrived > 0, "nothing of the pattern arrived before the kill");
        common::wait_for_log(srv, &["dump left receiving by an earlier netdumpd"])
            .context("the restarted server did not log the interrupted dump")?;
        common::wait_for_log(srv, &["reason=session_closed"])
            .context("the restarted server did not count the client's DATA as for a closed session")?;
        let total = run.pattern.len / 4096;
        let detail = format!(
            "killed after {KILL_AFTER_DATA} DATA packets, restarted once the client retransmitted: client \"{}\"; dump incomplete with {arrived} of {total} pattern pages whole and none wrong",
            line.trim_start_matches("netdump: ")
        );
        Ok(Outcome { detail, ..Default::default() })
    })
}

/// Fills every byte the file system has left (the disk filling up under netdumpd).
fn fill_disk(path: &std::path::Path) -> Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// netdumpd's dump directory (a 96 MiB tmpfs) fills up mid-dump: the dump is abandoned
/// with a write error, the client is stopped, the log says why, and netdumpd keeps
/// serving: a client arriving while the disk is full is refused; once room is made, the
/// abandoned dump's `info.json` says incomplete and a new client dumps whole.
fn disk_full(ctx: &Ctx) -> Result<Outcome> {
    const FILL_AFTER_DATA: u32 = 2000;
    let seed = 0xd15c;
    let run = KernelRun::new("dump", common::pattern(seed));
    let timeout = common::SESSION_TIMEOUT_S.to_string();
    let args = ["--session-timeout", timeout.as_str(), "--min-free", "0"];
    let srv = Netdumpd::start_on(&ctx.artifacts.netdumpd, &ctx.dir.join("crash"), free_udp_port()?, &args, Some(96))
        .context("netdumpd on a tmpfs in a private mount namespace (needs root or CAP_SYS_ADMIN)")?;
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig::default())?;
    // From the 2000th DATA on, the kernel's packets wait in the proxy while the disk
    // fills: the dump cannot outrun the filling however the host schedules the two.
    let filling = Arc::new(AtomicBool::new(true));
    let (f, mut data) = (filling.clone(), 0u32);
    proxy.set_rule(move |s: &Seen| {
        let to_server = s.dir == Direction::ToServer;
        data += u32::from(to_server && s.is(MessageType::Data));
        if to_server && data > FILL_AFTER_DATA && f.load(Ordering::SeqCst) { Action::Hold } else { Action::Pass }
    });
    let filler = srv.dir.join("filler");
    let (q, filled) = std::thread::scope(|s| {
        let kernel = s.spawn(|| run.boot(ctx, proxy.port));
        let filled = proxy
            .wait_until(PATIENCE, |events| events.iter().any(|e| e.fate == Fate::Held))
            .context("the kernel did not send its DATA")
            .and_then(|()| fill_disk(&filler));
        filling.store(false, Ordering::SeqCst);
        proxy.release_held();
        (kernel.join().expect("the QEMU thread panicked"), filled)
    });
    let (q, filled) = (q?, filled?);
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::DUMP_FAILED, "a dump the server cannot write must end")?;
        let line = failure_line(&q)?;
        ensure!(line.contains("server stopped the dump"), "unexpected failure: {line}");
        common::wait_for_log(srv, &["dump abandoned: write error"]).context("netdumpd did not log why")?;
        // Still serving while full: a crash is answered (no room even for its log).
        let full_name = format!("full-{}", ctx.id);
        let full = HostClient::new(&full_name, small_pattern(seed))
            .run(srv.addr())
            .map_err(|e| anyhow::anyhow!("install while full: {e:?}"))?;
        match full.result {
            Err(DumpError::Refused(DecisionReason::NoSpace)) => {}
            Ok(r) if r.verdict == Verdict::SkipMemory => {}
            other => bail!("a crash while the disk is full got {other:?}, not a refusal for no space"),
        }
        let dump = common::only_dump(ctx, srv)?;
        ensure!(common::read_info(&dump)?["status"] != "complete", "an abandoned dump looks complete");
        // Room again: the outcome that could not be written is, and new dumps arrive whole.
        std::fs::remove_file(&filler)?;
        let (dump, info) = common::wait_incomplete(ctx, srv)?;
        let reason = info["status_reason"].as_str().unwrap_or("").to_string();
        ensure!(reason.contains("write error") && reason.contains("No space left"), "status_reason: {reason}");
        let arrived = check::pattern_pages_arrived(&Vmcore::open(&dump.join("vmcore-incomplete"))?, &run.pattern)?;
        let after_name = format!("after-{}", ctx.id);
        let after = HostClient::new(&after_name, small_pattern(seed + 1))
            .run(srv.addr())
            .map_err(|e| anyhow::anyhow!("install after: {e:?}"))?;
        after.result.map_err(|e| anyhow::anyhow!("the dump after room was made failed: {e}"))?;
        check_host_dump(srv, &after_name, &small_pattern(seed + 1))?;
        let detail = format!(
            "disk filled ({} MiB) mid-dump: client stopped, dump incomplete ({reason}) with {arrived} pattern pages whole and none wrong; a crash while full was refused, one after room was made dumped whole",
            filled >> 20
        );
        Ok(Outcome { detail, ..Default::default() })
    })
}

/// Four kernels crash into one netdumpd at once (through the proxy, 2% loss each way):
/// every vmcore bit-exact, each in its own directory.
fn concurrent(ctx: &Ctx) -> Result<Outcome> {
    const CLIENTS: usize = 4;
    let seed = 0xc0c0;
    let srv = common::start_server(ctx, &[])?;
    let faults = Faults::loss(0.02);
    let proxy = FaultProxy::start(
        srv.addr(),
        ProxyConfig { seed: proxy_seed(seed), to_server: faults, to_client: faults, ..Default::default() },
    )?;
    // Every CRASH waits in the proxy until all four kernels have announced theirs; then
    // they all go on at once, and the four dump together.
    let announced: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let a = announced.clone();
    proxy.set_rule(move |s: &Seen| {
        if s.dir == Direction::ToServer && s.is(MessageType::Crash) {
            let mut a = a.lock().unwrap_or_else(|e| e.into_inner());
            a.insert(s.client);
            if a.len() < CLIENTS {
                return Action::Hold;
            }
        }
        Action::Pass
    });
    let runs: Vec<KernelRun> = (0..CLIENTS as u64)
        .map(|i| {
            let mut r = KernelRun::new("dump", common::pattern(seed + i));
            r.client = Some(format!("{}-{i}", ctx.id));
            r.extra = "announce_ms=120000".into();
            r
        })
        .collect();
    let outcomes: Vec<Result<QemuOutcome>> = std::thread::scope(|s| {
        let threads: Vec<_> = runs.iter().map(|r| s.spawn(|| r.boot(ctx, proxy.port))).collect();
        // The fourth CRASH passes the rule: the three held ones go with it.
        let all = proxy.wait_until(PATIENCE, |_| {
            announced.lock().map_or(true, |a| a.len() >= CLIENTS) || threads.iter().all(|t| t.is_finished())
        });
        proxy.release_held();
        let outcomes = threads.into_iter().map(|t| t.join().expect("a QEMU thread panicked")).collect();
        all.map(|()| outcomes)
    })
    .context("not every kernel announced its crash")?;
    with_server_log(srv, |srv| {
        let mut bytes = 0;
        let mut seconds: f64 = 0.0;
        let mut dirs = HashSet::new();
        for (r, q) in runs.iter().zip(outcomes) {
            let q = q?;
            let name = r.client.as_deref().unwrap_or_default();
            expect_exit(&q, exit::SUCCESS, name)?;
            let (dir, o) =
                common::check_complete_dump_of(ctx, srv, name, &r.pattern, &panic_message(r.pattern.seed), CRASH_SITE)
                    .with_context(|| format!("the dump of {name}"))?;
            dirs.insert(dir);
            bytes += o.bytes;
            seconds = seconds.max(o.seconds);
        }
        ensure!(dirs.len() == CLIENTS, "the dumps share directories: {dirs:?}");
        // They overlapped: every client was sending DATA at one moment.
        let mut spans: BTreeMap<SocketAddr, (Instant, Instant)> = BTreeMap::new();
        for e in proxy.events().iter().filter(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data)) {
            let span = spans.entry(e.seen.client).or_insert((e.at, e.at));
            span.1 = e.at;
        }
        ensure!(spans.len() == CLIENTS, "DATA came from {} clients", spans.len());
        let last_start = spans.values().map(|s| s.0).max().unwrap_or_else(Instant::now);
        let first_end = spans.values().map(|s| s.1).min().unwrap_or_else(Instant::now);
        ensure!(last_start < first_end, "the four dumps did not overlap");
        let overlap = first_end.duration_since(last_start).as_secs_f64();
        let detail = format!(
            "{CLIENTS} kernels at once ({overlap:.1} s all sending), each 16 MiB bit-exact in its own directory; {} ({})",
            faults.describe(),
            proxy.summary()
        );
        Ok(Outcome { detail, bytes, seconds })
    })
}
