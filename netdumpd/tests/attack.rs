//! netdumpd under attack (docs/SECURITY.md): each test sends what an attacker on the
//! network would, over UDP on the loopback, to a real server — in a thread, or the
//! `netdumpd` binary where the test measures the process (open files, threads, its log)
//! — and checks that the server holds only what its limits allow, refuses replays, and
//! still takes a real crash. Every loop is bounded in count and time.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use netdump_core::proto::{
    Crash, DecisionReason, FinishStatus, HelloStatus, MemoryRange, MessageType, RangeTable, Verdict, abort_reason,
};
use netdumpd::DropReason;
use netdumpd::hooks::HookConfig;
use netdumpd::limits::Limits;

/// Limits that let a test send as fast as it likes from one address (the loopback):
/// the test is about another bound.
fn open_limits() -> Limits {
    Limits {
        hellos_per_second: 1 << 20,
        hellos_per_source_per_second: 1 << 20,
        crashes_per_second: 1 << 20,
        log_lines_per_second: 1 << 20,
        ..Limits::default()
    }
}

/// A complete small dump by `c` of `m`; returns every datagram it sent.
fn full_dump(c: &TestClient, m: &Machine) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let hello = {
        let h = netdump_core::proto::Hello {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: 1500,
            ip: [10, 0, 2, 15],
            page_size: PAGE as u32,
            memory_bytes: DECLARED_MEMORY,
            name: m.name.as_bytes(),
        };
        c.packet(MessageType::Hello, 0, 1, h.wire_len(), |p| h.emit(p))
    };
    c.send_raw(&hello);
    c.recv_type(MessageType::HelloAck);
    sent.push(hello);
    let crash = m.crash();
    let crash = c.packet(MessageType::Crash, 0, 1, crash.wire_len(), |p| crash.emit(p));
    c.send_raw(&crash);
    c.recv_type(MessageType::Decision);
    sent.push(crash);
    let stream = m.stream(1400);
    for p in &stream {
        let d = c.data_packet(p, 0);
        c.send_raw(&d);
        sent.push(d);
    }
    let finish = finish_for(&stream, m.zero_pages());
    sent.push(c.packet(MessageType::Finish, 0, stream.len() as u32, finish.wire_len(), |p| finish.emit(p)));
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::Verified);
    sent
}

/// Defect 2: an earlier boot's session, replayed after the client rebooted (and after
/// the server restarted, so that the old session is forgotten), neither unregisters the
/// client nor makes a second dump.
#[test]
fn a_replayed_earlier_boot_neither_unregisters_the_client_nor_forges_a_dump() {
    let dir = TempDir::new("attack-replay");
    let m = Machine::small("node-replay");
    let server = TestServer::start(dir.path());
    let first_boot = TestClient::new(server.addr, 0x0b00_7001);
    let recorded = full_dump(&first_boot, &m);
    // The machine reboots and registers again with a new cookie.
    let second_boot = TestClient::new(server.addr, 0x0b00_7002);
    assert_eq!(second_boot.hello(&m.name).status, HelloStatus::Registered);
    server.stop();

    let server = TestServer::start(dir.path());
    let attacker = TestClient::new(server.addr, 0x0b00_7001);
    for d in &recorded {
        attacker.send_raw(d);
    }
    server.wait_for("the replays counted", |s| {
        s.dropped(DropReason::ReplayedHello) == 1 && s.dropped(DropReason::ReplayedCrash) == 1
    });
    // No answer to any of it.
    assert!(attacker.recv_within(Duration::from_millis(200)).is_none());
    // Still one dump, complete; the real client is still registered and can dump.
    assert_eq!(server.dumps().len(), 1);
    assert_eq!(read_info(&server.dumps()[0])["status"], "complete");
    let second_boot = TestClient::new(server.addr, 0x0b00_7002);
    let d = second_boot.crash(&m.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::DumpAll, DecisionReason::None));
    assert_eq!(server.stats.snapshot().dumps_started, 1);
}

/// Defect 3: HELLO → CRASH → ABORT churn from many names leaves no open files, threads
/// or empty directories behind, and a real crash right after it gets DUMP_ALL.
#[test]
fn session_churn_holds_no_files_threads_or_empty_directories() {
    const ROUNDS: u64 = 300;
    let dir = TempDir::new("attack-churn");
    let mut daemon = Daemon::start(
        dir.path(),
        "[limits]\nhellos_per_second = 100000\nhellos_per_source_per_second = 100000\ncrashes_per_second = 100000\n",
    );
    let base_files = daemon.proc_count("fd");
    let (mut peak_files, mut peak_threads) = (0, 0);
    let m = Machine::small("churn");
    for i in 0..ROUNDS {
        let c = TestClient::new(daemon.addr, 0xc4_0000 + i);
        c.hello(&format!("churn-{i}"));
        let d = c.crash(&m.crash(), 1);
        assert_eq!(d.verdict, Verdict::DumpAll, "round {i}");
        c.abort(abort_reason::NIC_ERROR, "churn");
        if i % 10 == 0 {
            peak_files = peak_files.max(daemon.proc_count("fd"));
            peak_threads = peak_threads.max(daemon.proc_count("task"));
        }
    }
    // The last ABORTs are handled; the ended sessions' files are closed at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.proc_count("fd") > base_files + 3 {
        assert!(Instant::now() < deadline, "{} files open after the churn", daemon.proc_count("fd"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(peak_files <= base_files + 3 * 2, "peak {peak_files} open files (base {base_files})");
    assert!(peak_threads <= 2 + Limits::default().max_hook_processes + 2, "peak {peak_threads} threads");
    let empty: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && std::fs::read_dir(e.path()).unwrap().next().is_none())
        .collect();
    assert!(empty.is_empty(), "empty dump directories: {empty:?}");
    let real = TestClient::new(daemon.addr, 0x7ea1);
    real.hello("real-machine");
    let d = real.crash(&m.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::DumpAll, DecisionReason::None));
    assert!(daemon.alive());
}

/// Writes a registry of `n` clients, as a server that ran for a while would have.
fn preload_registry(dir: &Path, n: usize) {
    let clients: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "cookie": format!("{:016x}", 0x5eed_0000_0000u64 + i as u64), "name": format!("fleet-{i:05}"),
                "mac": "52:54:00:12:34:56", "ip": "10.0.2.15", "source": "127.0.0.1:6665", "mtu": 1500,
                "page_size": 4096, "memory_bytes": 1u64 << 30, "registered_at": format!("2026-01-01T00:00:{:02}Z", i % 60)
            })
        })
        .collect();
    let file = serde_json::json!({ "version": 1, "clients": clients });
    std::fs::write(dir.join("clients.json"), serde_json::to_vec(&file).unwrap()).unwrap();
}

/// Defect 4: a HELLO flood at a server with 4000 registered clients, during a live dump,
/// writes the registry about once a second, not once per HELLO, and the dump goes on.
#[test]
fn a_hello_flood_during_a_dump_writes_the_registry_about_once_a_second() {
    const HELLOS: u64 = 600;
    let dir = TempDir::new("attack-hello-flood");
    preload_registry(dir.path(), 4000);
    let server = TestServer::start_with(dir.path(), |c| c.limits = Limits { max_clients: 8192, ..open_limits() });
    let m = Machine::small("node-live");
    let live = TestClient::new(server.addr, 0x11fe);
    live.hello(&m.name);
    assert_eq!(live.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
    let stream = m.stream(1400);
    let writes_before = server.stats.snapshot().registry_writes;
    let started = Instant::now();
    let flood = TestClient::new(server.addr, 0);
    for i in 0..HELLOS {
        let c = TestClient { socket: flood.socket.try_clone().unwrap(), server: server.addr, cookie: 0xf100d + i };
        c.send_hello(&format!("flood-{i}"), 1);
        if i % 100 == 0 {
            live.data_acked(&stream[(i / 100) as usize]);
        }
    }
    server.wait_for("every flood HELLO handled", |s| s.clients >= 4000 + HELLOS);
    let elapsed = started.elapsed().as_secs() + 1;
    let writes = server.stats.snapshot().registry_writes - writes_before;
    assert!(writes <= elapsed + 1, "{writes} registry writes in about {elapsed} s for {HELLOS} HELLOs");
    // The live dump finishes normally.
    for p in &stream {
        live.send_data(p, 0);
    }
    assert_eq!(live.finish(stream.len() as u32, &finish_for(&stream, m.zero_pages())).status, FinishStatus::Verified);
}

/// Defect 4: 300 HELLOs of new names with a register hook run at most
/// `max_hook_processes` hooks at once, and at most that plus the queue in all.
#[test]
fn a_hello_flood_starts_a_bounded_number_of_register_hooks() {
    const HELLOS: u64 = 300;
    let dir = TempDir::new("attack-hook-flood");
    let hooks = TempDir::new("attack-hook-flood-scripts");
    let trace = hooks.path().join("trace");
    let body = format!("echo start >> {t}; sleep 0.2; echo end >> {t}", t = trace.display());
    let script = hooks.path().join("register");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let limits = Limits { max_hook_processes: 3, max_queued_jobs: 20, ..open_limits() };
    let server = TestServer::start_with(dir.path(), |c| {
        c.hooks = HookConfig { register: Some(script.clone()), ..HookConfig::default() };
        c.limits = limits;
    });
    let flood = TestClient::new(server.addr, 0);
    for i in 0..HELLOS {
        let c = TestClient { socket: flood.socket.try_clone().unwrap(), server: server.addr, cookie: 0x400c + i };
        c.send_hello(&format!("hooked-{i}"), 1);
    }
    server.wait_for("every HELLO handled", |s| s.clients == HELLOS);
    server.stop();
    let text = std::fs::read_to_string(&trace).unwrap();
    let (mut running, mut peak, mut runs) = (0i32, 0i32, 0);
    for line in text.lines() {
        match line {
            "start" => {
                running += 1;
                runs += 1;
                peak = peak.max(running);
            }
            _ => running -= 1,
        }
    }
    assert!(peak <= 3, "{peak} register hooks at once");
    assert!(runs <= 3 + 20 + 3, "{runs} register hooks for {HELLOS} HELLOs");
    assert!(runs >= 3, "the hook ran ({runs})");
}

/// Defect 5: a HELLO flood from one address gets at most its budget of replies, and its
/// refused names cost at most the log's line budget.
#[test]
fn replies_and_log_lines_to_a_flood_stay_within_their_budgets() {
    const HELLOS: u64 = 2000;
    let dir = TempDir::new("attack-reflect");
    let limits = Limits::default();
    let daemon = Daemon::start(dir.path(), "");
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut replies = 0;
    let mut buf = [0u8; 2048];
    let mut drain = |replies: &mut u64| {
        while flood.recv_from(&mut buf).is_ok() {
            *replies += 1;
        }
    };
    for i in 0..HELLOS {
        let c = TestClient { socket: flood.try_clone().unwrap(), server: daemon.addr, cookie: 0x2ef1 + i };
        // Half with good names, half with refused ones (a newline, a leading dash).
        let name = if i % 2 == 0 { format!("reflect-{i}") } else { format!("-x{i}\nFORGED line") };
        c.send_hello(&name, 1);
        drain(&mut replies);
    }
    std::thread::sleep(Duration::from_millis(300));
    drain(&mut replies);
    let secs = started.elapsed().as_secs() + 1;
    let allowed = u64::from(limits.hellos_per_source_per_second) * (secs + 1);
    assert!(replies <= allowed, "{replies} replies to {HELLOS} HELLOs in about {secs} s (budget {allowed})");
    assert!(replies > 0, "the budget lets some through");
    let log = daemon.log_text();
    let lines = log.lines().count() as u64;
    let line_budget = u64::from(limits.log_lines_per_second) * (secs + 2) + 10;
    assert!(lines <= line_budget, "{lines} log lines in about {secs} s (budget {line_budget})");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "a log line forged by a name:\n{log}");
}

/// Defect 5: a newline in a panic message cannot forge a line of the server log.
#[test]
fn a_newline_in_a_panic_message_forges_no_log_line() {
    let dir = TempDir::new("attack-message");
    let daemon = Daemon::start(dir.path(), "");
    let m = Machine { message: "boom\nFORGED: dump complete\r\x1b[2K".into(), ..Machine::small("node-msg") };
    let c = TestClient::new(daemon.addr, 0x3e55);
    c.hello(&m.name);
    assert_eq!(c.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
    c.abort(abort_reason::NIC_ERROR, "bye\nFORGED: abort");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("dump incomplete") {
        assert!(Instant::now() < deadline, "no end of the dump in the log:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log_text();
    assert!(log.contains(r#"boom\nFORGED: dump complete\r\u{1b}[2K"#), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "a forged line:\n{log}");
    assert!(!log.contains('\x1b'), "a raw escape byte reached the log");
}

/// Defect 6: a stranger's announcement reserves no more than its HELLO declared, so a
/// real crash after it still gets its memory taken. The stranger announces nearly all
/// the usable space (so that, believed, it would leave no room for the real crash).
#[test]
fn a_huge_announcement_reserves_no_more_than_its_hello_declared() {
    let dir = TempDir::new("attack-reserve");
    let available = netdumpd::dumpdir::available_bytes(dir.path()).unwrap();
    // Room for about 256 MiB of dumps, whatever the disk.
    let server = TestServer::start_with(dir.path(), |c| c.min_free_bytes = available.saturating_sub(256 << 20));
    let m = Machine::small("stranger");
    let huge = [MemoryRange { phys_start: 0, length: (256 << 20) - (512 << 10), virt_start: 0 }];
    let stranger = TestClient::new(server.addr, 0x5742);
    stranger.send_hello_declaring(&m.name, 1, 16 << 20);
    stranger.recv_type(MessageType::HelloAck);
    let d = stranger.crash(&Crash { ranges: RangeTable::Ranges(&huge), ..m.crash() }, 1);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::BadAnnouncement));
    let real_machine = Machine::small("real");
    let real = TestClient::new(server.addr, 0x7ea2);
    real.hello(&real_machine.name);
    let d = real.crash(&real_machine.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::DumpAll, DecisionReason::None));
}

/// Defect 6: a duplicate DATA packet every so often does not keep a session alive.
#[test]
fn duplicate_data_does_not_keep_a_session_alive() {
    let dir = TempDir::new("attack-keepalive");
    let server = TestServer::start_with(dir.path(), |c| c.session_timeout = Duration::from_millis(600));
    let m = Machine::small("keepalive");
    let c = TestClient::new(server.addr, 0x6ee9);
    c.hello(&m.name);
    assert_eq!(c.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
    let first = &m.stream(1400)[0];
    let started = Instant::now();
    // One duplicate every 200 ms for up to 5 s: well inside the timeout each time.
    while server.stats.snapshot().dumps_incomplete == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "the session outlived its timeout ten times over");
        c.send_data(first, 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = read_info(&server.dumps()[0]);
    assert!(info["status_reason"].as_str().unwrap().starts_with("no new data"), "{info}");
}

/// Defect 6: a full registry makes room for a new machine (the oldest registration that
/// never crashed goes), also after a restart.
#[test]
fn a_full_registry_still_takes_a_new_machine_after_a_flood() {
    let dir = TempDir::new("attack-registry");
    let limits = Limits { max_clients: 50, ..open_limits() };
    let server = TestServer::start_with(dir.path(), |c| c.limits = limits);
    for i in 0..80 {
        let c = TestClient::new(server.addr, 0xf1_0000 + i);
        assert_eq!(c.hello(&format!("flood-{i}")).status, HelloStatus::Registered);
    }
    server.wait_for("the registry at its bound", |s| s.clients == 50 && s.packets_sent == 80);
    server.stop();
    let server = TestServer::start_with(dir.path(), |c| c.limits = limits);
    let m = Machine::small("new-machine");
    let c = TestClient::new(server.addr, 0x9e3);
    assert_eq!(c.hello(&m.name).status, HelloStatus::Registered);
    assert_eq!(c.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
    assert_eq!(server.stats.snapshot().dropped(DropReason::RegistryFull), 0);
}

/// Defect 7: a NUL in the panic message reaches the crash hook as `\0`: the hook runs and
/// its "skip the memory image" holds.
#[test]
fn a_nul_in_the_message_does_not_silence_the_crash_hook() {
    let dir = TempDir::new("attack-nul");
    let hooks = TempDir::new("attack-nul-scripts");
    let seen = hooks.path().join("seen");
    let script = hooks.path().join("crash");
    std::fs::write(&script, format!("#!/bin/sh\nprintf '%s' \"$NETDUMP_MESSAGE\" > {}\nexit 1\n", seen.display()))
        .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.hooks = HookConfig { crash: Some(script.clone()), ..HookConfig::default() };
    });
    let m = Machine { message: "before\0after".into(), ..Machine::small("node-nul") };
    let c = TestClient::new(server.addr, 0x4e01);
    c.hello(&m.name);
    let d = c.crash(&m.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::Hook));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "before\\0after");
}

/// Defect 7: names that would reach hooks as options are refused at HELLO.
#[test]
fn names_that_look_like_options_are_refused() {
    let dir = TempDir::new("attack-dash");
    let server = TestServer::start(dir.path());
    for (i, name) in ["-rf", "--help", ".hidden"].iter().enumerate() {
        let c = TestClient::new(server.addr, 0xda5 + i as u64);
        assert_eq!(c.hello(name).status, HelloStatus::Refused, "{name}");
    }
    assert_eq!(server.stats.snapshot().clients, 0);
    let names: BTreeSet<String> =
        std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.starts_with('-') && !n.starts_with(".h")), "{names:?}");
}

/// The server answers nothing to packets it cannot parse, and survives any datagram.
#[test]
fn random_datagrams_get_no_reply_and_kill_nothing() {
    let dir = TempDir::new("attack-random");
    let mut daemon = Daemon::start(dir.path(), "");
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000usize {
        let len = i % 200;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.send_to(&bytes, daemon.addr).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(s.recv_from(&mut buf).is_err(), "an answer to a random datagram");
    let c = TestClient::new(daemon.addr, 0x5afe);
    assert_eq!(c.hello("after-random").status, HelloStatus::Registered);
    assert!(daemon.alive());
}

/// SIGHUP, which ends a process by default, leaves netdumpd running: it writes its
/// registry and counters and says that the configuration is read at start only.
#[test]
fn a_sighup_does_not_end_netdumpd() {
    let dir = TempDir::new("attack-sighup");
    let mut daemon = Daemon::start(dir.path(), "");
    let c = TestClient::new(daemon.addr, 0x4a9);
    assert_eq!(c.hello("hup-machine").status, HelloStatus::Registered);
    let status = Command::new("kill").args(["-HUP", &daemon.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("SIGHUP") {
        assert!(daemon.alive(), "netdumpd ended on SIGHUP:\n{}", daemon.log_text());
        assert!(Instant::now() < deadline, "no SIGHUP line:\n{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.alive());
    // The registration is on disk at once, not only within the second.
    let registry = std::fs::read_to_string(dir.path().join("clients.json")).unwrap();
    assert!(registry.contains("hup-machine"), "{registry}");
    let c = TestClient::new(daemon.addr, 0x4aa);
    assert_eq!(c.hello("after-hup").status, HelloStatus::Registered);
}
