//! The fault proxy between the real client (netdump-core over its host UDP NIC) and the
//! real server (netdumpd in a thread), over loopback: every fault profile of the QEMU
//! suite, the silent servers and the rogue sender, in seconds instead of minutes.

use netdump_core::DumpError;
use netdump_core::client::WindowMode;
use netdump_core::client::{Phase, Timeouts};
use netdump_core::proto::MessageType;
use netdump_qemu_harness::check;
use netdump_qemu_harness::forgery::{Holds, Rogue};
use netdump_qemu_harness::host_client::{HostClient, HostRun};
use netdump_qemu_harness::proxy::{
    Action, Direction, Fate, FaultProxy, Faults, Forger, ProxyConfig, QueueDepth, RateLimit, Seen,
};
use netdump_qemu_harness::vmcore::Vmcore;
use netdump_test_pattern::Pattern;
use netdumpd::{DropReason, Server, ServerConfig, ShutdownHandle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the server waits for a silent dump before marking it incomplete.
const SESSION_TIMEOUT: Duration = Duration::from_secs(1);

/// A server in a thread, with its own scratch directory.
struct TestServer {
    addr: SocketAddr,
    dir: PathBuf,
    stats: Arc<netdumpd::ServerStats>,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    fn start(label: &str) -> TestServer {
        Self::start_with(label, SESSION_TIMEOUT)
    }

    fn start_with(label: &str, session_timeout: Duration) -> TestServer {
        let dir = std::env::temp_dir().join(format!("netdump-loopback-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            dump_dir: dir.clone(),
            session_timeout,
            min_free_bytes: 0,
            ..ServerConfig::default()
        };
        let server = Server::bind(config).expect("bind");
        let (addr, stats, stop) = (server.local_addr(), server.stats(), server.shutdown_handle());
        let thread = Some(std::thread::spawn(move || server.run()));
        TestServer { addr, dir, stats, stop, thread }
    }

    fn dump_of(&self, name: &str) -> PathBuf {
        let dumps: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}-")))
            .collect();
        assert_eq!(dumps.len(), 1, "one dump of {name} expected: {dumps:?}");
        dumps[0].clone()
    }

    fn info(&self, name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dump_of(name).join("info.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Waits until the dump of `name` is marked incomplete, and checks that it never
    /// looked complete.
    fn wait_incomplete(&self, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + SESSION_TIMEOUT * 20;
        loop {
            let info = self.info(name);
            assert_ne!(info["status"], "complete", "an interrupted dump was marked complete");
            if info["status"] == "incomplete" {
                let dump = self.dump_of(name);
                assert!(!dump.join("vmcore").exists() && dump.join("vmcore-incomplete").exists());
                return info;
            }
            assert!(Instant::now() < deadline, "the dump was never marked incomplete: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.expect("server thread panicked").expect("server failed");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pattern(seed: u64, mib: u64) -> Pattern {
    Pattern { base: 1 << 20, len: mib << 20, seed, zero_every: 5 }
}

fn client(name: &str, p: Pattern) -> HostClient {
    let mut c = HostClient::new(name, p);
    c.timeouts = Timeouts {
        announce_timeout_us: 2_000_000,
        silence_timeout_us: 2_000_000,
        finish_timeout_us: 2_000_000,
        ..Timeouts::default()
    };
    c
}

/// The dump of `name` is complete, verified, and its image is the pattern bit for bit.
fn check_bit_exact(server: &TestServer, name: &str, p: &Pattern) {
    let dump = server.dump_of(name);
    check::info_says_complete(&server.info(name)).unwrap();
    let core = Vmcore::open(&dump.join("vmcore")).unwrap();
    check::pattern_matches(&core, p).unwrap();
    assert_eq!(std::fs::read(dump.join("log")).unwrap(), netdump_qemu_harness::host_client::HOST_LOG);
}

/// Dumps `mib` MiB through a proxy with `faults` both ways; returns the run and the proxy.
fn dump_through(label: &str, faults: Faults, seed: u64, mib: u64) -> (TestServer, FaultProxy, HostRun, Pattern) {
    let server = TestServer::start(label);
    let proxy = FaultProxy::start(
        server.addr,
        ProxyConfig { seed, to_server: faults, to_client: faults, ..Default::default() },
    )
    .unwrap();
    let p = pattern(seed, mib);
    // At 20% loss both ways a round trip fails more often than not; on a loaded host the
    // client's 2 s of patience can run out between two that succeed. These tests are about
    // recovering from the faults, not about giving up: give it 8 s.
    let mut c = client(label, p);
    c.timeouts.announce_timeout_us = 8_000_000;
    c.timeouts.silence_timeout_us = 8_000_000;
    c.timeouts.finish_timeout_us = 8_000_000;
    let run = c.run(SocketAddr::from(([127, 0, 0, 1], proxy.port))).expect("install");
    (server, proxy, run, p)
}

fn assert_verified(label: &str, faults: Faults, seed: u64) -> (TestServer, FaultProxy, HostRun) {
    let (server, proxy, run, p) = dump_through(label, faults, seed, 2);
    let report = run.result.as_ref().unwrap_or_else(|e| panic!("{label}: {e} ({})", proxy.summary()));
    check_bit_exact(&server, label, &p);
    assert!(report.retransmissions > 0 || faults.loss == 0.0, "{label}: loss must cost retransmissions");
    (server, proxy, run)
}

#[test]
fn five_percent_loss_both_ways() {
    let (_s, proxy, _) = assert_verified("loss5", Faults::loss(0.05), 0x105);
    assert!(proxy.count(Direction::ToServer, Fate::Lost) > 0 && proxy.count(Direction::ToClient, Fate::Lost) > 0);
}

#[test]
fn twenty_percent_loss_with_duplication_and_reordering() {
    let faults = Faults { loss: 0.20, duplicate: 0.05, reorder: 0.10, reorder_depth: 4, ..Default::default() };
    let (server, proxy, _) = assert_verified("loss20", faults, 0x120);
    assert!(proxy.count(Direction::ToServer, Fate::Duplicated) > 0);
    assert!(proxy.count(Direction::ToServer, Fate::Reordered) > 0);
    assert!(server.info("loss20")["duplicate_packets"].as_u64().unwrap() > 0);
}

#[test]
fn flipped_bits_are_dropped_by_the_crc_on_both_sides() {
    let faults = Faults { corrupt: 0.02, ..Default::default() };
    let (server, proxy, run) = assert_verified("flips", faults, 0x0F1);
    let to_server = proxy.count(Direction::ToServer, Fate::Corrupted);
    let to_client = proxy.count(Direction::ToClient, Fate::Corrupted);
    assert!(to_server > 0 && to_client > 0, "{}", proxy.summary());
    let snap = server.stats.snapshot();
    let dropped: u64 = snap.drops.values().sum();
    assert_eq!(dropped, to_server as u64, "every corrupted packet, and nothing else, dropped: {snap:?}");
    let rejected = run.result.unwrap().rejected;
    assert!(rejected >= to_client as u64, "client rejected {rejected} of {to_client} corrupted packets");
}

/// Dumps 4 MiB through a 40 Mbit/s link with 8 packets of queue (the window is 64) in
/// `mode`; returns the proxy after checking the dump bit for bit.
fn through_a_shallow_queue(label: &str, mode: WindowMode) -> FaultProxy {
    let server = TestServer::start(label);
    let rate = RateLimit::mbit_s(40.0, QueueDepth::Packets(8));
    let config = ProxyConfig { seed: 0x11C, to_server_rate: Some(rate), ..Default::default() };
    let proxy = FaultProxy::start(server.addr, config).unwrap();
    let p = pattern(0x11C, 4);
    let mut c = client(label, p);
    c.mode = mode;
    let run = c.run(SocketAddr::from(([127, 0, 0, 1], proxy.port))).expect("install");
    let report = run.result.unwrap_or_else(|e| panic!("{label}: {e} ({})", proxy.summary()));
    check_bit_exact(&server, label, &p);
    println!("{label}: {} retransmissions; {}", report.retransmissions, proxy.summary());
    let stats = proxy.link_stats(Direction::ToServer).unwrap();
    assert_eq!(stats.dropped as usize, proxy.count(Direction::ToServer, Fate::QueueFull));
    assert!(stats.max_queued_packets <= 8, "{stats:?}");
    assert!(report.retransmissions >= stats.dropped.min(1), "every drop was recovered by a retransmission");
    proxy
}

#[test]
fn congestion_control_overflows_a_shallow_queue_far_less_than_a_fixed_window() {
    let fixed = through_a_shallow_queue("queue-fixed", WindowMode::Fixed);
    let controlled = through_a_shallow_queue("queue-cc", WindowMode::Sliding);
    let (f, c) =
        (fixed.count(Direction::ToServer, Fate::QueueFull), controlled.count(Direction::ToServer, Fate::QueueFull));
    assert!(f > 0, "a fixed window of 64 must overflow a queue of 8: {}", fixed.summary());
    assert!(c * 4 < f, "queue drops: {c} with congestion control, {f} with a fixed window");
}

#[test]
fn ten_milliseconds_each_way() {
    let faults = Faults { delay: Duration::from_millis(10), ..Default::default() };
    assert_verified("delay10", faults, 0x10D);
}

#[test]
fn every_fault_at_once() {
    let faults = Faults {
        loss: 0.10,
        duplicate: 0.05,
        reorder: 0.10,
        reorder_depth: 6,
        corrupt: 0.02,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(3),
    };
    assert_verified("all", faults, 0xA11);
}

/// A proxy rule that goes silent (both ways) once `trigger` has seen its packet.
fn silent_after(mut trigger: impl FnMut(&Seen) -> bool + Send + 'static) -> impl FnMut(&Seen) -> Action + Send {
    let mut silent = false;
    move |s: &Seen| {
        silent = silent || trigger(s);
        if silent { Action::Blackhole } else { Action::Pass }
    }
}

fn silent_server(label: &str, rule: impl FnMut(&Seen) -> Action + Send + 'static, phase: Phase) -> serde_json::Value {
    // At the announcement the client's ABORT reaches the server: it must find the session
    // still receiving, so the server waits longer than the client's bound (2 s) before it
    // gives up by itself; otherwise the two bounds race.
    let timeout = if phase == Phase::Announce { SESSION_TIMEOUT * 4 } else { SESSION_TIMEOUT };
    let server = TestServer::start_with(label, timeout);
    let proxy = FaultProxy::start(server.addr, ProxyConfig::default()).unwrap();
    proxy.set_rule(rule);
    let c = client(label, pattern(0x51, 2));
    let run = c.run(SocketAddr::from(([127, 0, 0, 1], proxy.port))).expect("install");
    assert_eq!(run.result.unwrap_err(), DumpError::ServerSilent(phase));
    let info = server.wait_incomplete(label);
    assert!(!info["status_reason"].as_str().unwrap().is_empty());
    info
}

#[test]
fn silent_at_the_announcement() {
    // netdumpd hears the CRASH; nothing it says reaches the client from then on.
    let mut silent = false;
    let rule = move |s: &Seen| {
        silent = silent || s.is(MessageType::Crash);
        if silent && s.dir == Direction::ToClient { Action::Blackhole } else { Action::Pass }
    };
    let info = silent_server("silent-announce", rule, Phase::Announce);
    // The client's ABORT still reaches the server, which records why.
    assert_eq!(info["abort"]["reason"], "server_silent", "{info}");
}

#[test]
fn silent_mid_dump() {
    let mut data = 0;
    let rule = silent_after(move |s| {
        data += usize::from(s.dir == Direction::ToServer && s.is(MessageType::Data));
        data > 300
    });
    silent_server("silent-data", rule, Phase::Data);
}

#[test]
fn silent_at_finish() {
    let rule = silent_after(|s| s.is(MessageType::Finish));
    silent_server("silent-finish", rule, Phase::Finish);
}

#[test]
fn forged_packets_in_both_directions_change_nothing() {
    let server = TestServer::start("rogue");
    // An earlier dump, finished: its cookie is replayed.
    let earlier = client("rogue-earlier", pattern(0xE, 1)).run(server.addr).expect("install");
    earlier.result.as_ref().expect("the earlier dump");
    let faults = Faults { delay: Duration::from_millis(1), ..Default::default() };
    let proxy = FaultProxy::start(
        server.addr,
        ProxyConfig { seed: 1, to_server: faults, to_client: faults, ..Default::default() },
    )
    .unwrap();
    let p = pattern(0x0F, 8);
    let live = client("rogue-live", p);
    let to = SocketAddr::from(([127, 0, 0, 1], proxy.port));
    const ROUNDS: u64 = 3;
    let rogue = Rogue {
        proxy: &proxy,
        holds: Holds::new(),
        server: server.addr,
        replayed: earlier.cookie,
        pattern: p,
        forgers: &[Forger::ServerPort, Forger::OtherPort],
    };
    rogue.arm();
    let (run, attack) = std::thread::scope(|s| {
        let dump = s.spawn(|| live.run(to).expect("install"));
        let attack = rogue.attack(200, ROUNDS as usize, 100, Duration::from_secs(20));
        (dump.join().unwrap(), attack.unwrap())
    });
    let report = run.result.unwrap_or_else(|e| panic!("forgeries changed the dump: {e}"));
    let first_finish =
        proxy.events().iter().find(|e| e.seen.is(MessageType::Finish) && e.delivered()).map(|e| e.at).unwrap();
    assert!(attack.finished_at < first_finish, "the attack must land while data flows");
    check_bit_exact(&server, "rogue-live", &p);
    check_bit_exact(&server, "rogue-earlier", &pattern(0xE, 1));
    let to_client =
        attack.sent.iter().filter(|(_, r)| matches!(r, netdump_qemu_harness::forgery::Route::ToClient(_))).count()
            as u64;
    assert!(
        report.rejected + report.link.spoofed >= to_client * ROUNDS,
        "client dropped {} + {} of {}",
        report.rejected,
        report.link.spoofed,
        to_client * ROUNDS
    );
    // Every forgery was handled before the FINISH: counted exactly (a stranger's CRASH,
    // DATA, FINISH and ABORT, and each barrier CRASH; the replayed CRASH).
    let snap = server.stats.snapshot();
    assert_eq!(snap.dropped(DropReason::UnknownCookie), 4 * ROUNDS + attack.barriers, "{snap:?}");
    assert_eq!(snap.dropped(DropReason::ReplayedCrash), ROUNDS, "{snap:?}");
    for reason in [DropReason::WrongSource, DropReason::OutOfRange] {
        assert!(snap.dropped(reason) > 0, "{reason} not counted: {snap:?}");
    }
    let drops = &server.info("rogue-live")["drops"];
    assert!(drops["wrong_source"].as_u64().unwrap() >= ROUNDS * 5, "{drops}");
    // Each round's two forgeries beyond the map carry a seq the server had not seen (the
    // client waited in the proxy while they went out): both dropped as out of range.
    assert!(drops["out_of_range"].as_u64().unwrap() >= ROUNDS * 2, "{drops}");
}
