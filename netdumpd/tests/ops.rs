//! netdumpd for the people who run it: hooks, free space, the memory-dump limit,
//! retention, dedup of repeated crashes, analysis on arrival and the admin commands,
//! against a real server on loopback and real dump directories.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use netdump_core::proto::{DecisionReason, FINISH_MEMORY_SKIPPED, FinishStatus, Section, Verdict};
use netdumpd::hooks::HookConfig;
use netdumpd::retention::RetentionConfig;

/// An executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Waits until `path` exists and holds `lines` lines.
fn wait_lines(path: &Path, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return text;
        }
        assert!(Instant::now() < deadline, "{} has {:?}, wanted {lines} lines", path.display(), text);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers `m` under `cookie` and announces its crash; the DECISION.
fn crash(server: &TestServer, m: &Machine, cookie: u64) -> (TestClient, netdump_core::proto::Decision) {
    let c = TestClient::new(server.addr, cookie);
    c.hello(&m.name);
    let d = c.crash(&m.crash(), 1);
    (c, d)
}

/// Sends the stream the DECISION asked for (memory or not) and FINISH.
fn send_dump(c: &TestClient, m: &Machine, with_memory: bool) -> FinishStatus {
    let stream: Vec<DataPacket> =
        m.stream(1400).into_iter().filter(|p| with_memory || p.section != Section::Memory).collect();
    let stream: Vec<DataPacket> =
        stream.into_iter().enumerate().map(|(i, p)| DataPacket { seq: i as u32, ..p }).collect();
    for p in &stream {
        c.send_data(p, 0);
    }
    let mut finish = finish_for(&stream, if with_memory { m.zero_pages() } else { 0 });
    if !with_memory {
        finish.flags = FINISH_MEMORY_SKIPPED;
    }
    c.finish(stream.len() as u32, &finish).status
}

#[test]
fn a_crash_hook_exiting_1_gives_a_vmcore_free_dump_with_log_and_registers_and_the_finished_hook_says_skipped() {
    let dir = TempDir::new("ops-hook-skip");
    let hooks = TempDir::new("ops-hook-skip-scripts");
    let calls = hooks.path().join("calls");
    let log = calls.display();
    let hook_config = HookConfig {
        register: Some(script(hooks.path(), "register", &format!("echo \"register $1 $2\" >> {log}"))),
        crash: Some(script(
            hooks.path(),
            "crash",
            &format!("echo \"crash $1 $(basename $2) $NETDUMP_MESSAGE\" >> {log}; exit 1"),
        )),
        finished: Some(script(hooks.path(), "finished", &format!("echo \"finished $1 $2 $(basename $3)\" >> {log}"))),
        ..HookConfig::default()
    };
    let server = TestServer::start_with(dir.path(), |c| c.hooks = hook_config);
    let m = Machine::small("watchdog-1");
    let c = TestClient::new(server.addr, 0x701);
    c.hello(&m.name);
    // The register hook runs on the server's job pool: let it finish before the crash,
    // as it would long before a real machine crashes.
    wait_lines(&calls, 1);
    let d = c.crash(&m.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::Hook));
    assert_eq!(send_dump(&c, &m, false), FinishStatus::Verified);

    let dump = &server.dumps()[0];
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    let text = wait_lines(&calls, 3);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "register 10.0.2.15 watchdog-1".to_string(),
            format!("crash 10.0.2.15 {name} {}", m.message),
            format!("finished skipped 10.0.2.15 {name}"),
        ]
    );
    // No memory image at all: log, registers, extra and info.json.
    assert!(!dump.join("vmcore").exists() && !dump.join("vmcore-incomplete").exists());
    assert_eq!(std::fs::read(dump.join("log")).unwrap(), m.log);
    let registers = std::fs::read_to_string(dump.join("registers")).unwrap();
    assert!(registers.starts_with("cpu 1 (crashing)\n") && registers.contains("\ncpu 0 (unknown)\n"), "{registers}");
    let info = read_info(dump);
    assert_eq!(info["status"], "skipped");
    assert_eq!(info["vmcore"], serde_json::Value::Null);
    assert_eq!(info["decision"]["why"], "hook");
}

#[test]
fn the_finished_hook_gets_the_outcome_complete_and_incomplete() {
    let dir = TempDir::new("ops-hook-finished");
    let hooks = TempDir::new("ops-hook-finished-scripts");
    let calls = hooks.path().join("calls");
    let finished = script(
        hooks.path(),
        "finished",
        &format!("echo \"$1 $NETDUMP_CLIENT $NETDUMP_OUTCOME\" >> {}", calls.display()),
    );
    let server = TestServer::start_with(dir.path(), |c| {
        c.hooks = HookConfig { finished: Some(finished), ..HookConfig::default() };
        c.session_timeout = Duration::from_secs(1);
    });
    let a = Machine::small("node-complete");
    let (c, d) = crash(&server, &a, 0x711);
    assert_eq!(d.verdict, Verdict::DumpAll);
    assert_eq!(send_dump(&c, &a, true), FinishStatus::Verified);
    wait_lines(&calls, 1);
    let b = Machine::small("node-silent");
    let (c, _) = crash(&server, &b, 0x712);
    c.send_data(&b.stream(1400)[0], 0);
    let text = wait_lines(&calls, 2);
    assert_eq!(text, "complete node-complete complete\nincomplete node-silent incomplete\n");
}

#[test]
fn no_room_for_memory_runs_the_nospace_hook_once_and_skips_the_image() {
    let dir = TempDir::new("ops-space");
    let hooks = TempDir::new("ops-space-scripts");
    let calls = hooks.path().join("calls");
    let nospace =
        script(hooks.path(), "nospace", &format!("echo \"nospace $1 $NETDUMP_MEMORY_BYTES\" >> {}", calls.display()));
    let available = netdumpd::dumpdir::available_bytes(dir.path()).unwrap();
    let server = TestServer::start_with(dir.path(), |c| {
        c.hooks = HookConfig { nospace: Some(nospace), ..HookConfig::default() };
        // A reserve that leaves room for the log (1 MiB allowance) but not for 64 GiB of
        // memory, with a wide margin for what other programs write meanwhile.
        c.min_free_bytes = available.saturating_sub(512 << 20);
    });
    // Announced with 64 GiB of RAM; only the log and registers are ever sent.
    let m = Machine::small("node-full");
    let huge = [netdump_core::proto::MemoryRange { phys_start: 0, length: 64 << 30, virt_start: 0 }];
    let c = TestClient::new(server.addr, 0x721);
    c.send_hello_declaring(&m.name, 1, 64 << 30);
    c.recv_type(netdump_core::proto::MessageType::HelloAck);
    let d =
        c.crash(&netdump_core::proto::Crash { ranges: netdump_core::proto::RangeTable::Ranges(&huge), ..m.crash() }, 1);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::NoSpace));
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), format!("nospace 10.0.2.15 {}\n", 64u64 << 30));
    assert_eq!(send_dump(&c, &m, false), FinishStatus::Verified);
    let info = read_info(&server.dumps()[0]);
    assert_eq!((info["status"].as_str(), info["decision"]["why"].as_str()), (Some("skipped"), Some("no_space")));
}

#[test]
fn beyond_the_memory_dump_limit_a_crash_sends_log_and_registers_only() {
    let dir = TempDir::new("ops-memory-limit");
    let server = TestServer::start_with(dir.path(), |c| c.max_memory_dumps = 1);
    let a = Machine::small("node-first");
    let (_first, d) = crash(&server, &a, 0x731);
    assert_eq!(d.verdict, Verdict::DumpAll);
    let b = Machine::small("node-second");
    let (second, d) = crash(&server, &b, 0x732);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::Busy));
    assert_eq!(send_dump(&second, &b, false), FinishStatus::Verified);
}

#[test]
fn beyond_the_receive_memory_budget_a_crash_sends_log_and_registers_only() {
    let dir = TempDir::new("ops-receive-budget");
    // Room for one memory image's reservation (a 1-CPU x86_64 dump: its buffers and
    // gathered vmcore bytes) and a log-only dump's beside it, not for a second image.
    let one = netdumpd::budget::receiving_bytes(1, netdump_core::proto::Machine::X86_64, true, false, false, 0);
    let server = TestServer::start_with(dir.path(), |c| c.limits.max_receive_bytes = one + one / 4);
    let a = Machine::small("node-budget-a");
    let (first, d) = crash(&server, &a, 0x735);
    assert_eq!(d.verdict, Verdict::DumpAll);
    let b = Machine::small("node-budget-b");
    let (second, d) = crash(&server, &b, 0x736);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::Busy));
    assert_eq!(send_dump(&second, &b, false), FinishStatus::Verified);
    // The first dump ends: its reservation is free again, and the next image fits.
    assert_eq!(send_dump(&first, &a, true), FinishStatus::Verified);
    let c = Machine::small("node-budget-c");
    let (_third, d) = crash(&server, &c, 0x737);
    assert_eq!(d.verdict, Verdict::DumpAll);
}

#[test]
fn a_repeated_crash_skips_its_memory_and_is_counted() {
    let dir = TempDir::new("ops-dedup");
    let server = TestServer::start_with(dir.path(), |c| {
        c.dedup = netdumpd::dedup::DedupPolicy::SkipMemoryWithin(Duration::from_secs(86400));
    });
    let m = Machine::small("node-dup");
    // The first crash: a full dump. The machine reboots (new cookie) and crashes the same way.
    let (c, d) = crash(&server, &m, 0x741);
    assert_eq!(d.verdict, Verdict::DumpAll);
    assert_eq!(send_dump(&c, &m, true), FinishStatus::Verified);
    let (c, d) = crash(&server, &m, 0x742);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::Duplicate));
    assert_eq!(send_dump(&c, &m, false), FinishStatus::Verified);
    // Another message is another signature: a full dump again.
    let other = Machine { message: "panicked at src/other.rs:1:1: another bug".into(), ..Machine::small("node-dup") };
    let (c, d) = crash(&server, &other, 0x743);
    assert_eq!(d.verdict, Verdict::DumpAll);
    drop(c);

    let dumps = server.dumps();
    assert_eq!(dumps.len(), 3);
    let (first, second) = (read_info(&dumps[0]), read_info(&dumps[1]));
    let first_name = dumps[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(first["dedup"]["occurrence"], 1);
    assert_eq!(second["dedup"]["occurrence"], 2);
    assert_eq!(second["dedup"]["signature"], first["dedup"]["signature"]);
    assert_eq!(second["dedup"]["duplicate_of"], first_name.as_str());
    assert_eq!(second["status"], "skipped");
    assert!(!dumps[1].join("vmcore").exists());
    assert_ne!(read_info(&dumps[2])["dedup"]["signature"], first["dedup"]["signature"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("signatures.json")).unwrap()).unwrap();
    let sig = first["dedup"]["signature"].as_str().unwrap();
    assert_eq!(index["signatures"][sig]["count"], 2);
}

#[test]
fn retention_removes_the_oldest_dumps_and_last_points_to_the_newest() {
    let dir = TempDir::new("ops-retention");
    let server = TestServer::start_with(dir.path(), |c| {
        c.retention = RetentionConfig { max_dumps_per_client: Some(2), ..RetentionConfig::default() };
    });
    let m = Machine::small("node-ret");
    let names_of = |dumps: Vec<PathBuf>| -> Vec<String> {
        dumps.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect()
    };
    let mut names: Vec<String> = Vec::new();
    for i in 0..4u64 {
        let before = names_of(server.dumps());
        let (c, d) = crash(&server, &m, 0x750 + i);
        assert_eq!(d.verdict, Verdict::DumpAll);
        // The new directory (a name retention freed may come back within one second).
        let new = names_of(server.dumps()).into_iter().find(|n| !before.contains(n)).unwrap();
        names.push(new);
        assert_eq!(send_dump(&c, &m, true), FinishStatus::Verified);
        // Wait for this dump's retention pass: the link names it.
        let link = dir.path().join("node-ret.last");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&link).ok().as_deref() != Some(Path::new(&names[i as usize])) {
            assert!(Instant::now() < deadline, "last link never pointed to {}", names[i as usize]);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut kept = names_of(server.dumps());
    kept.sort();
    let mut newest = names[2..].to_vec();
    newest.sort();
    assert_eq!(kept, newest, "the two newest of {names:?}");
    assert!(dir.path().join("node-ret.last").join("vmcore").exists());
}

/// The netdumpd binary's admin commands on the dump directory `dir`.
fn admin(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netdumpd")).args(args).arg("--dir").arg(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn list_and_show_describe_real_dump_directories() {
    let dir = TempDir::new("ops-cli");
    let server = TestServer::start(dir.path());
    let a = Machine::small("node-cli-a");
    let (c, _) = crash(&server, &a, 0x761);
    assert_eq!(send_dump(&c, &a, true), FinishStatus::Verified);
    let b = Machine { message: "panicked at src/b.rs:2:2: b broke".into(), ..Machine::small("node-cli-b") };
    let (c, _) = crash(&server, &b, 0x762);
    c.send_data(&b.stream(1400)[0], 0); // still receiving
    let (ok, text) = admin(dir.path(), &["list", "--json"]);
    assert!(ok, "{text}");
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["client"].as_str(), rows[0]["status"].as_str()), (Some("node-cli-a"), Some("complete")));
    assert_eq!((rows[1]["client"].as_str(), rows[1]["status"].as_str()), (Some("node-cli-b"), Some("receiving")));
    assert!(rows[0]["disk_bytes"].as_u64().unwrap() > 0);
    assert_eq!(rows[0]["signature"].as_str().unwrap().len(), 16);
    assert!(rows[0]["age_seconds"].as_i64().unwrap() >= 0);

    let (ok, text) = admin(dir.path(), &["list"]);
    assert!(ok);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("CLIENT") && lines[0].contains("SIGNATURE") && lines[0].contains("AGE"), "{text}");
    assert!(
        lines[1].starts_with("node-cli-a") && lines[1].contains("complete") && lines[1].contains("test crash"),
        "{text}"
    );
    assert!(lines[2].starts_with("node-cli-b") && lines[2].contains("receiving"), "{text}");

    // By client name (its newest dump, through the `.last` link that the work after a
    // dump sets, on the server's job pool), human and JSON.
    let link = dir.path().join("node-cli-a.last");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !link.exists() {
        assert!(Instant::now() < deadline, "no {} within 10 s", link.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let (ok, text) = admin(dir.path(), &["show", "node-cli-a", "--lines", "2"]);
    assert!(ok, "{text}");
    assert!(text.contains("status    complete"), "{text}");
    assert!(text.contains(&format!("message   {}", a.message)), "{text}");
    assert!(text.contains("--- log (last 2 lines) ---"), "{text}");
    let (ok, text) = admin(dir.path(), &["show", "node-cli-a", "--json", "--lines", "2"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["info"]["status"], "complete");
    assert!(v["files"].as_array().unwrap().iter().any(|f| f == "vmcore"));
    let log = String::from_utf8(a.log.clone()).unwrap();
    let tail: Vec<&str> = log.lines().rev().take(2).collect();
    assert_eq!(v["log_tail"], serde_json::json!([tail[1], tail[0]]));
    let (ok, text) = admin(dir.path(), &["show", "no-such-dump"]);
    assert!(!ok && text.contains("no dump \"no-such-dump\""), "{text}");
}

#[test]
fn check_config_accepts_the_sample_and_names_what_is_missing() {
    let dir = TempDir::new("ops-check");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/netdumpd.toml");
    let (ok, text) = admin(dir.path(), &["check-config", "--config", sample.to_str().unwrap()]);
    // The sample passes as shipped (tests/contrib.rs); hooks and kernels it does not have do not.
    assert!(ok, "{text}");
    let missing = dir.path().join("missing.toml");
    let kernel = "/srv/kernels/node-a/kernel.elf";
    std::fs::write(
        &missing,
        format!("[hooks]\ncrash = \"/etc/netdumpd/hooks/crash\"\n[analysis.kernels]\nnode-a = {kernel:?}\n"),
    )
    .unwrap();
    let (ok, text) = admin(dir.path(), &["check-config", "--config", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("problem: hooks.crash: /etc/netdumpd/hooks/crash"), "{text}");
    assert!(text.contains("problem: analysis.kernels.node-a: /srv/kernels/node-a/kernel.elf"), "{text}");
    let good = dir.path().join("good.toml");
    let hook = script(dir.path(), "crash", "exit 0");
    std::fs::write(&good, format!("max_memory_dumps = 2\n[hooks]\ncrash = \"{}\"\n", hook.display())).unwrap();
    let (ok, text) = admin(dir.path(), &["check-config", "--config", good.to_str().unwrap(), "--json"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["max_memory_dumps"], 2);
    assert_eq!(v["hooks"]["crash"], hook.display().to_string());
    // Settings as data, not Rust's debug text.
    assert_eq!(v["dedup"], serde_json::json!({ "policy": "keep-all" }));
    assert_eq!(v["limits"]["hellos_per_second"], 200);
    assert_eq!(v["netconsole"]["max_clients"], 1024);
    // The memory bound of this configuration, as the library computes it.
    let mut c = netdumpd::ServerConfig::default();
    netdumpd::config::ConfigFile::load(&good).unwrap().apply(&mut c).unwrap();
    let bound = netdumpd::budget::bound(&c, netdump_core::proto::MAX_CPUS as u16, 0).total();
    assert_eq!(v["memory_bound_bytes"], bound);
    assert_eq!(v["limits"]["max_receive_bytes"], 1u64 << 30);
}

/// The function the analysis test "crashes" in: its address goes into the registers.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netdumpd_analysis_crash_site() -> u64 {
    std::hint::black_box(42)
}

#[test]
fn analysis_names_the_crashing_function_from_the_kernel_elf() {
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("gdb not installed: skipping");
        return;
    }
    std::hint::black_box(netdumpd_analysis_crash_site());
    // The "kernel" is this test program; the crash site's address as its ELF says.
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "info address netdumpd_analysis_crash_site"])
        .arg(&exe)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split("0x").nth(1).map(|h| h.trim_end_matches(|c: char| !c.is_ascii_hexdigit())).unwrap();
    let rip = u64::from_str_radix(hex.split(|c: char| !c.is_ascii_hexdigit()).next().unwrap(), 16).unwrap() + 1;

    let dir = TempDir::new("ops-analysis");
    let hooks = TempDir::new("ops-analysis-scripts");
    let seen = hooks.path().join("seen");
    let finished = script(hooks.path(), "finished", &format!("cp \"$NETDUMP_ANALYSIS\" {}", seen.display()));
    let server = TestServer::start_with(dir.path(), |c| {
        c.analysis.kernels.insert("node-analysed".into(), exe.clone());
        c.hooks = HookConfig { finished: Some(finished), ..HookConfig::default() };
        c.max_memory_dumps = 1;
    });
    // Keep the one memory slot busy so this dump is registers-only: its rip is what
    // gdb symbolizes.
    let busy = Machine::small("node-busy");
    let (_busy, _) = crash(&server, &busy, 0x770);
    let m = Machine::small("node-analysed");
    let c = TestClient::new(server.addr, 0x771);
    c.hello(&m.name);
    let d = c.crash(&m.crash(), 1);
    assert_eq!(d.verdict, Verdict::SkipMemory);
    let mut stream: Vec<DataPacket> = m.stream(1400).into_iter().filter(|p| p.section != Section::Memory).collect();
    let mut regs = Machine::registers(1);
    regs.rip = rip;
    let record = [Machine::registers(0).to_bytes(), regs.to_bytes()].concat();
    stream.retain(|p| p.section != Section::Registers);
    stream.push(DataPacket { seq: 0, section: Section::Registers, offset: 0, data: record });
    let stream: Vec<DataPacket> =
        stream.into_iter().enumerate().map(|(i, p)| DataPacket { seq: i as u32, ..p }).collect();
    for p in &stream {
        c.send_data(p, 0);
    }
    let mut finish = finish_for(&stream, 0);
    finish.flags = FINISH_MEMORY_SKIPPED;
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::Verified);

    let text = wait_lines(&seen, 8);
    assert!(text.contains("netdumpd_analysis_crash_site"), "{text}");
    assert!(text.contains(&format!("message: {}", m.message)), "{text}");
    let dump = server.dumps().into_iter().find(|d| d.to_string_lossy().contains("node-analysed")).unwrap();
    assert_eq!(std::fs::read_to_string(dump.join("analysis.txt")).unwrap(), text);
}
