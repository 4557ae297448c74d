//! The standing attack (issue 11): while a test kernel dumps its 16 MiB pattern, a
//! bounded flood ([`crate::flood`]) runs against the same netdumpd from the loopback —
//! HELLO churn from many ports with hostile names among them, CRASH → ABORT session churn
//! with absurd announcements, malformed and random datagrams, replays of an earlier
//! session of the kernel's own client name, and garbage for the netconsole port. The
//! flood starts when the kernel's CRASH reaches the proxy in front of the server (which
//! holds the CRASH until the flood runs, and the FINISH until the last replay round went
//! out) and stops when the FINISH reaches the server, so it covers the whole data phase
//! by construction, not by the clock.
//!
//! Then: the kernel's dump is complete and bit-exact; netdumpd is still running, its open
//! files, threads and peak RSS stayed under the limits below, and it ends cleanly on
//! SIGTERM; the replays were counted (`stats.json` `drops`) and refused (no dump came of
//! them, the earlier dump is unchanged, `<name>.last` points at the kernel's dump); and no
//! line of the server's log was forged by a name or message from the network.

use super::common::{self, EVENT_PATIENCE, KernelRun, exit, expect_exit, tail, without_colours};
use crate::check;
use crate::flood::{self, FloodConfig, FloodReport, Progress, Recorder, Stopped};
use crate::host_client::HostClient;
use crate::netdumpd::{Netdumpd, free_udp_port};
use crate::proxy::{Action, Direction, Event, FaultProxy, ProxyConfig, Seen};
use crate::qemu::{NicModel, QemuOutcome};
use crate::suite::{Ctx, Outcome, Scenario};
use crate::vmcore::Vmcore;
use anyhow::{Context, Result, bail, ensure};
use netdump_core::proto::MessageType;
use netdump_test_pattern::Pattern;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most file descriptors netdumpd may hold open under the flood.
pub const MAX_OPEN_FILES: u64 = 64;
/// Most threads netdumpd may run under the flood.
pub const MAX_THREADS: u64 = 16;
/// Largest resident set netdumpd may reach (VmHWM) under the flood.
pub const MAX_RSS_MIB: u64 = 256;

/// Upper bound of the flood, should the kernel's FINISH never come.
const FLOOD_MAX: Duration = Duration::from_secs(45);
/// Replay rounds of the earlier session, and the pause between them. Round `k` begins
/// once the kernel has sent `(k + 1) * REPLAY_EVERY_DATA` DATA packets (of about 11000),
/// and the kernel's FINISH waits for the last round: all of them land during the dump.
const REPLAY_ROUNDS: u64 = 6;
const REPLAY_GAP: Duration = Duration::from_millis(20);
const REPLAY_EVERY_DATA: u64 = 1000;
/// How long the scenario waits for the kernel's CRASH.
const PATIENCE: Duration = Duration::from_secs(180);
/// How often netdumpd's resources are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
const CRASH_SITE: &str = "netdump_test_crash_site";

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("attack", nic, attack)]
}

fn panic_message(seed: u64) -> String {
    format!("netdump test panic (seed {seed:#x})")
}

/// The earlier session's RAM: small, so a replay round is a few hundred datagrams.
fn earlier_pattern(seed: u64) -> Pattern {
    Pattern { base: 1 << 20, len: 256 << 10, seed, zero_every: 5 }
}

/// The most netdumpd held while the flood ran.
#[derive(Debug, Clone, Copy, Default)]
struct Peaks {
    fds: u64,
    threads: u64,
    hwm_kib: u64,
    samples: u64,
    /// The process was gone at a sample.
    vanished: bool,
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether process `pid` runs (a process that died but was not yet waited for is a
/// zombie: its `/proc` entry stays).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| !s.lines().any(|l| l.starts_with("State:") && l.contains("zombie")))
}

/// Samples `/proc/<pid>` every [`SAMPLE_EVERY`] until `done` is set.
fn sample(pid: u32, done: &AtomicBool) -> Peaks {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let mut p = Peaks::default();
    loop {
        let last = done.load(Ordering::SeqCst);
        let fds = std::fs::read_dir(proc.join("fd")).map(|d| d.count() as u64);
        let status = std::fs::read_to_string(proc.join("status"));
        match (fds, status) {
            (Ok(fds), Ok(status)) if alive(pid) => {
                p.fds = p.fds.max(fds);
                p.threads = p.threads.max(status_field(&status, "Threads:").unwrap_or(0));
                p.hwm_kib = p.hwm_kib.max(status_field(&status, "VmHWM:").unwrap_or(0));
                p.samples += 1;
            }
            _ => {
                p.vanished = true;
                return p;
            }
        }
        if last {
            return p;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// The earlier dump of the kernel's client name, as it was before the attack.
struct Earlier {
    dir: PathBuf,
    vmcore: Vec<u8>,
    info: Vec<u8>,
    pattern: Pattern,
}

/// A host client dumps under `name` through a recorder: its dump, and what it sent.
fn earlier_session(srv: &Netdumpd, name: &str, seed: u64) -> Result<(Earlier, Vec<Vec<u8>>)> {
    let pattern = earlier_pattern(seed);
    let recorder = Recorder::start(srv.addr())?;
    let run = HostClient::new(name, pattern)
        .run(recorder.addr)
        .map_err(|e| anyhow::anyhow!("the earlier client's install: {e:?}"))?;
    let recorded = recorder.finish();
    run.result.map_err(|e| anyhow::anyhow!("the earlier dump failed: {e}"))?;
    let dir = common::only_dump_of(srv, name)?;
    let deadline = Instant::now() + EVENT_PATIENCE;
    while !dir.join("vmcore").exists() || common::read_info(&dir).map_or(true, |i| i["status"] != "complete") {
        ensure!(Instant::now() < deadline, "the earlier dump in {} did not complete", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    check::pattern_matches(&Vmcore::open(&dir.join("vmcore"))?, &pattern).context("the earlier dump")?;
    let earlier = Earlier {
        vmcore: std::fs::read(dir.join("vmcore"))?,
        info: std::fs::read(dir.join("info.json"))?,
        dir,
        pattern,
    };
    Ok((earlier, flood::replayable(&recorded)))
}

/// What happened while the kernel dumped under the flood.
struct Attacked {
    kernel: QemuOutcome,
    flood: FloodReport,
    peaks: Peaks,
    events: Vec<Event>,
}

/// Boots the kernel through a clean proxy (whose trace shows its CRASH, DATA and FINISH)
/// and floods netdumpd from its CRASH to its FINISH. The proxy paces the dump by the
/// flood's events, not by the clock: the kernel's CRASH waits until the flood runs (so
/// no DATA goes out before it), its FINISH until every replay round went out (so all of
/// them land during the dump, however slowly the host runs either side).
fn dump_under_flood(ctx: &Ctx, srv: &Netdumpd, run: &KernelRun, cfg: &FloodConfig) -> Result<Attacked> {
    let proxy = FaultProxy::start(srv.addr(), ProxyConfig::default())?;
    let progress = Arc::new(Progress::gated());
    let p = progress.clone();
    proxy.set_rule(move |s: &Seen| {
        let to_server = s.dir == Direction::ToServer;
        let crash_early = s.is(MessageType::Crash) && !p.started.load(Ordering::SeqCst);
        let finish_early = s.is(MessageType::Finish) && p.replay_rounds.load(Ordering::SeqCst) < REPLAY_ROUNDS;
        if to_server && (crash_early || finish_early) { Action::Hold } else { Action::Pass }
    });
    let kernel_done = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let sampled = AtomicBool::new(false);
    let pid = srv.pid();
    let (kernel, attack) = std::thread::scope(|s| {
        let kernel = s.spawn(|| {
            let q = run.boot(ctx, proxy.port);
            kernel_done.store(true, Ordering::SeqCst);
            q
        });
        let attack = (|| -> Result<(FloodReport, Peaks)> {
            // The kernel's CRASH reached the proxy (and waits there).
            let deadline = Instant::now() + PATIENCE;
            while proxy.tally(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Crash)) == 0 {
                ensure!(!kernel_done.load(Ordering::SeqCst), "the kernel ended before it announced a crash");
                ensure!(Instant::now() < deadline, "no CRASH from the kernel within {PATIENCE:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
            let sampler = s.spawn(|| sample(pid, &sampled));
            let flooding = s.spawn(|| flood::run(cfg, &stop, &progress));
            let mut released = 0;
            // Until the kernel's FINISH reaches the server (or the kernel, the flood or
            // the server is gone), letting the CRASH go once the flood runs and the
            // FINISH once the replays are done.
            loop {
                let data = proxy
                    .tally(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data) && e.relayed())
                    as u64;
                progress.replay_allowed.store(data / REPLAY_EVERY_DATA, Ordering::SeqCst);
                let steps = [
                    progress.started.load(Ordering::SeqCst),
                    progress.replay_rounds.load(Ordering::SeqCst) >= REPLAY_ROUNDS,
                ];
                let due = steps.iter().take_while(|done| **done).count();
                if due > released {
                    released = due;
                    proxy.release_held();
                }
                let finished = proxy
                    .tally(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Finish) && e.delivered())
                    > 0;
                if finished || kernel_done.load(Ordering::SeqCst) || flooding.is_finished() || !alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::SeqCst);
            let report = flooding.join().expect("the flood panicked");
            sampled.store(true, Ordering::SeqCst);
            let peaks = sampler.join().expect("the sampler panicked");
            Ok((report?, peaks))
        })();
        // Should the attack fail, whatever is held goes on and the kernel runs to its end.
        progress.started.store(true, Ordering::SeqCst);
        progress.replay_allowed.store(u64::MAX, Ordering::SeqCst);
        progress.replay_rounds.store(REPLAY_ROUNDS, Ordering::SeqCst);
        proxy.release_held();
        (kernel.join().expect("the QEMU thread panicked"), attack)
    });
    let (flood, peaks) = attack?;
    Ok(Attacked { kernel: kernel?, flood, peaks, events: proxy.events() })
}

/// Lines of the server log (a carriage return starts one on a terminal, too) that begin
/// with text the flood injected after a line break.
fn forged_lines(log: &str, marker: &str) -> Vec<String> {
    without_colours(log)
        .split(['\n', '\r'])
        .filter(|l| l.trim_start().starts_with(marker))
        .map(str::to_string)
        .take(5)
        .collect()
}

/// The first datagram of type `t` the kernel got through to the server.
fn first_at(events: &[Event], t: MessageType) -> Option<&Event> {
    events.iter().find(|e| e.seen.dir == Direction::ToServer && e.seen.is(t) && e.delivered())
}

/// The flood covered the data phase: it began before the kernel's first DATA, ran until
/// its FINISH without running out of count or time, and replayed during it.
fn check_overlap(a: &Attacked) -> Result<()> {
    let f = &a.flood;
    let finish = first_at(&a.events, MessageType::Finish).context("the kernel sent no FINISH")?;
    let data = |e: &&Event| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data) && e.relayed();
    let all = a.events.iter().filter(data).count();
    let before = a.events.iter().filter(data).filter(|e| e.at < f.started).count();
    // The kernel's CRASH waited in the proxy until the flood ran: no DATA before it.
    ensure!(before == 0, "{before} of the kernel's {all} DATA packets went out before the flood began");
    ensure!(f.stopped == Stopped::Asked, "the flood ran out of time ({FLOOD_MAX:?}) before the kernel's FINISH");
    ensure!(f.ended >= finish.at, "the flood ended before the kernel's FINISH");
    ensure!(f.capped.is_empty(), "flood categories ran out of count before the kernel's FINISH: {:?}", f.capped);
    // The kernel's FINISH waited in the proxy for the last replay round.
    ensure!(
        f.replayed.rounds == REPLAY_ROUNDS,
        "only {} replay rounds went out during the dump (want {REPLAY_ROUNDS})",
        f.replayed.rounds
    );
    let (first_replay, _) = f.replay_span.context("nothing replayed")?;
    ensure!(first_replay < finish.at, "the replays began after the kernel's FINISH");
    Ok(())
}

/// The kernel's dump is complete and bit-exact; the earlier dump is the only other one of
/// its name, unchanged; `<name>.last` points at the kernel's.
fn check_dumps(ctx: &Ctx, srv: &Netdumpd, a: &Attacked, earlier: &Earlier, run: &KernelRun) -> Result<Outcome> {
    let name = &ctx.id;
    let crash = first_at(&a.events, MessageType::Crash).context("the kernel sent no CRASH")?;
    let cookie = crash.seen.header.map(|h| h.cookie).context("CRASH without a header")?;
    let dumps = srv.dumps_of(name);
    let cookie_of = |d: &PathBuf| {
        let info = common::read_info(d).ok()?;
        u64::from_str_radix(info.pointer("/client/cookie")?.as_str()?.trim_start_matches("0x"), 16).ok()
    };
    let kernel_dump = dumps
        .iter()
        .find(|d| cookie_of(d) == Some(cookie))
        .with_context(|| format!("no dump of the kernel's cookie {cookie:016x} among {dumps:?}"))?;
    let (kernel_dump, outcome) = common::check_complete_dump_in(
        ctx,
        kernel_dump.clone(),
        &run.pattern,
        &panic_message(run.pattern.seed),
        CRASH_SITE,
    )?;
    ensure!(
        dumps == [earlier.dir.clone(), kernel_dump.clone()],
        "the dumps of {name} are {dumps:?}: want only the earlier one and the kernel's (a replay made a dump?)"
    );
    ensure!(std::fs::read(earlier.dir.join("vmcore"))? == earlier.vmcore, "the earlier dump's vmcore changed");
    ensure!(std::fs::read(earlier.dir.join("info.json"))? == earlier.info, "the earlier dump's info.json changed");
    check::pattern_matches(&Vmcore::open(&earlier.dir.join("vmcore"))?, &earlier.pattern)
        .context("the earlier dump")?;
    // Retention updates the link on a thread after the dump ends.
    let link = srv.dir.join(format!("{name}.last"));
    let want = kernel_dump.file_name().context("dump without a name")?.to_owned();
    let deadline = Instant::now() + EVENT_PATIENCE;
    loop {
        let points = std::fs::read_link(&link).ok().and_then(|t| t.file_name().map(|n| n.to_owned()));
        if points.as_ref() == Some(&want) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{} points at {points:?}, not at the kernel's dump {want:?}",
            link.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(outcome)
}

fn check_resources(p: &Peaks) -> Result<()> {
    ensure!(!p.vanished, "netdumpd vanished during the flood (after {} samples)", p.samples);
    ensure!(p.samples > 0, "netdumpd's resources were never sampled");
    ensure!(p.fds <= MAX_OPEN_FILES, "netdumpd held {} open files under the flood (limit {MAX_OPEN_FILES})", p.fds);
    ensure!(p.threads <= MAX_THREADS, "netdumpd ran {} threads under the flood (limit {MAX_THREADS})", p.threads);
    let mib = p.hwm_kib.div_ceil(1024);
    ensure!(mib <= MAX_RSS_MIB, "netdumpd's RSS peaked at {mib} MiB under the flood (limit {MAX_RSS_MIB} MiB)");
    Ok(())
}

/// The replays, counted: `stats.json`, written when netdumpd stopped.
fn check_stats(dir: &Path, f: &FloodReport) -> Result<(u64, u64)> {
    let path = dir.join("stats.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("netdumpd wrote no {}", path.display()))?;
    let stats: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let drops = |r: &str| stats.pointer(&format!("/drops/{r}")).and_then(|v| v.as_u64()).unwrap_or(0);
    let (hello, crash) = (drops("replayed_hello"), drops("replayed_crash"));
    let r = &f.replayed;
    ensure!(
        hello == r.hello,
        "stats.json counts {hello} replayed_hello drops; {} replayed HELLOs were sent ({stats})",
        r.hello
    );
    ensure!(
        crash == r.crash,
        "stats.json counts {crash} replayed_crash drops; {} replayed CRASHes were sent ({stats})",
        r.crash
    );
    Ok((hello, crash))
}

/// Keeps every check's verdict, so that one failure does not hide the others.
#[derive(Default)]
struct Verdicts(Vec<String>);

impl Verdicts {
    fn check<T>(&mut self, what: &str, r: Result<T>) -> Option<T> {
        r.map_err(|e| self.0.push(format!("{what}: {e:#}"))).ok()
    }
}

fn attack(ctx: &Ctx) -> Result<Outcome> {
    let began = Instant::now();
    let seed = 0xa77a;
    let mut run = KernelRun::new("dump", common::pattern(seed));
    // The proxy holds the kernel's CRASH until the flood runs and its FINISH until the
    // replays are done; the kernel's own bounds on those waits are not under test here.
    run.extra = "announce_ms=120000 finish_ms=120000".into();
    let syslog = std::net::SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
    let mut srv = common::start_server(ctx, &["--netconsole-listen", &syslog.to_string()])?;
    let dump_dir = srv.dir.clone();
    let attacked = (|| {
        let (earlier, replay) = earlier_session(&srv, &ctx.id, seed ^ 0xea71)?;
        for t in [MessageType::Hello, MessageType::Crash, MessageType::Data, MessageType::Finish] {
            ensure!(replay.iter().any(|d| d[3] == t as u8), "the earlier session's recording has no {t:?}");
        }
        let cfg = FloodConfig {
            server: srv.addr(),
            syslog,
            replay,
            replay_rounds: REPLAY_ROUNDS,
            replay_gap: REPLAY_GAP,
            max_duration: FLOOD_MAX,
            seed: seed ^ ctx.nic.index() as u64,
        };
        Ok((earlier, dump_under_flood(ctx, &srv, &run, &cfg)?))
    })();
    let (earlier, a) = match attacked {
        Ok(a) => a,
        Err(e) => bail!("{e:#}\n--- netdumpd log (tail) ---\n{}", tail(&srv.stop(), 30)),
    };
    let f = &a.flood;
    let mut v = Verdicts::default();
    let dumped = v.check("the kernel", expect_exit(&a.kernel, exit::SUCCESS, "the dump must verify under the flood"));
    let outcome = dumped.and_then(|()| v.check("the dumps", check_dumps(ctx, &srv, &a, &earlier, &run)));
    v.check("overlap", check_overlap(&a));
    v.check("resources", check_resources(&a.peaks));
    let running = srv.exited();
    let log = match running {
        Ok(None) => v.check("SIGTERM", srv.terminate()).unwrap_or_default(),
        other => {
            v.0.push(format!("netdumpd did not survive the flood: {other:?}"));
            srv.stop()
        }
    };
    // The whole log, as the server left it: every line it wrote about the flood.
    let forged = forged_lines(&log, &f.marker);
    v.check(
        "server log",
        if forged.is_empty() { Ok(()) } else { Err(anyhow::anyhow!("lines forged from the network: {forged:?}")) },
    );
    let counted = v.check("replays", check_stats(&dump_dir, f));
    let p = &a.peaks;
    let summary = format!(
        "{}; replays counted (replayed_hello, replayed_crash): {}; netdumpd peak {} fds, {} threads, {} MiB RSS ({} samples; limits {MAX_OPEN_FILES}, {MAX_THREADS}, {MAX_RSS_MIB} MiB)",
        f.describe(),
        counted.map_or("not as sent".into(), |c| format!("{c:?} = as sent")),
        p.fds,
        p.threads,
        p.hwm_kib.div_ceil(1024),
        p.samples
    );
    if !v.0.is_empty() {
        bail!("{}\n{summary}\n--- netdumpd log (tail) ---\n{}", v.0.join("\n"), tail(&without_colours(&log), 30));
    }
    let mut outcome = outcome.context("no outcome")?;
    let secs = began.elapsed().as_secs_f64();
    outcome.detail += &format!("; {summary}; scenario {secs:.0} s");
    Ok(outcome)
}
