//! End-to-end dumps against a server running in-process on a loopback port.

mod common;

use std::time::Duration;

use common::core_reader::{Core, assert_pr_reg_in_abi_order, distinct_registers, pr_pid, pr_reg};
use common::*;
use netdump_core::proto::{
    AfterDump, DecisionReason, FinishStatus, HelloStatus, MAX_DATAGRAM, MemoryRange, RangeTable, Section, Verdict,
    abort_reason, flags,
};
use netdumpd::DropReason;

/// Runs HELLO and CRASH; returns the client.
fn announce(server: &TestServer, m: &Machine, cookie: u64) -> TestClient {
    let c = TestClient::new(server.addr, cookie);
    let ack = c.hello(&m.name);
    assert_eq!(ack.status, HelloStatus::Registered);
    assert_eq!(ack.max_payload, MAX_DATAGRAM as u32);
    let d = c.crash(&m.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::DumpAll, DecisionReason::None));
    c
}

#[test]
fn a_dump_sent_out_of_order_with_duplicates_becomes_a_verified_vmcore() {
    let dir = TempDir::new("full");
    let server = TestServer::start_with(dir.path(), |c| c.after_dump = AfterDump::Halt);
    let m = Machine::small("node-a");
    let c = announce(&server, &m, 0xa11c_e000_0000_0001);

    let stream = m.stream(1400);
    let mut order: Vec<usize> = (0..stream.len()).collect();
    shuffle(&mut order, 7);
    // Every fifth packet twice, and the first few again at the end.
    let mut sends: Vec<usize> = order.iter().flat_map(|&i| if i % 5 == 0 { vec![i, i] } else { vec![i] }).collect();
    sends.extend(&order[..3]);
    for &i in &sends {
        c.send_data(&stream[i], if i % 7 == 0 { flags::RETRANSMIT } else { 0 });
    }
    // The last ACK covers everything.
    let mut ack = c.next_ack();
    while ack.cumulative < stream.len() as u32 {
        ack = c.next_ack();
    }
    assert_eq!(ack, AckSeen { cumulative: stream.len() as u32, stop: false, bitmap: vec![] });

    let finish = finish_for(&stream, m.zero_pages());
    let answer = c.finish(stream.len() as u32, &finish);
    assert_eq!((answer.status, answer.action), (FinishStatus::Verified, AfterDump::Halt));

    let dumps = server.dumps();
    assert_eq!(dumps.len(), 1);
    let dump = &dumps[0];
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("node-a-") && name.len() == "node-a-YYYYMMDD-HHMMSS".len(), "{name}");
    assert!(!dump.join("vmcore-incomplete").exists());

    // Every byte of every range: the pattern where pages were sent, zeros in the holes.
    let bytes = std::fs::read(dump.join("vmcore")).unwrap();
    let core = Core::new(&bytes);
    let loads: Vec<_> = core.phdrs().into_iter().filter(|p| p.p_type == 1).collect();
    assert_eq!(loads.len(), m.ranges.len());
    for (ph, r) in loads.iter().zip(&m.ranges) {
        assert_eq!((ph.paddr, ph.vaddr, ph.filesz, ph.memsz), (r.phys_start, r.virt_start, r.length, r.length));
        for page in (r.phys_start..r.phys_end()).step_by(PAGE as usize) {
            assert_eq!(core.read_phys(page, PAGE as usize), &page_contents(page)[..], "page {page:#x}");
        }
    }
    // Registers: one PRSTATUS per CPU, the crashing CPU (1) first.
    let notes = core.notes();
    assert_eq!(pr_pid(notes[0].desc), 2);
    assert_eq!(pr_reg(notes[0].desc, 16), Machine::registers(1).rip);
    assert_eq!(pr_reg(notes[1].desc, 19), Machine::registers(0).rsp);
    assert_eq!(notes[2].desc, m.message.as_bytes());

    assert_eq!(std::fs::read(dump.join("log")).unwrap(), m.log);
    assert_eq!(std::fs::read(dump.join("extra")).unwrap(), m.extra);

    let info = read_info(dump);
    assert_eq!(info["status"], "complete");
    assert_eq!(info["vmcore"], "vmcore");
    assert_eq!(info["client"]["name"], "node-a");
    assert_eq!(info["client"]["mac"], "52:54:00:12:34:56");
    assert_eq!(info["client"]["ip"], "10.0.2.15");
    assert_eq!(info["client"]["source"], c.local_addr().to_string());
    assert_eq!(info["reason"]["kind"], "exception");
    assert_eq!(info["reason"]["vector"], 14);
    assert_eq!(info["reason"]["vector_name"], "#PF");
    assert_eq!(info["reason"]["fault_address"], "0xdeadb000");
    assert_eq!(info["message"], m.message.as_str());
    assert_eq!(info["cpu_count"], 2);
    assert_eq!(info["memory_ranges"][1]["phys_start"], "0x100000");
    assert_eq!(info["memory_size"], 0x9000 + 0x18000);
    assert_eq!(info["bytes_received"], finish.total_bytes);
    assert_eq!(info["packets_received"], stream.len());
    assert_eq!(info["duplicate_packets"], (sends.len() - stream.len()) as u64);
    assert_eq!(info["registers_received"], 2);
    assert_eq!(info["missing_cpus"], serde_json::json!([]));
    assert_eq!(
        (info["cpus"][1]["crashed"].as_bool(), info["cpus"][1]["state"].as_str()),
        (Some(true), Some("unknown"))
    );
    assert_eq!(info["zero_pages_skipped"], m.zero_pages());
    assert_eq!(info["pages"], (0x9000 + 0x18000) / PAGE - m.zero_pages());
    assert_eq!(info["crc"]["verified"], true);
    assert_eq!(info["crc"]["expected"], format!("{:#010x}", finish.stream_crc));
    assert_eq!(info["crc"]["computed"], info["crc"]["expected"]);
    assert!(info["end_time"].is_string());
    assert!(info["throughput_mb_s"].as_f64().unwrap() > 0.0);
    assert_eq!(info["drops"], serde_json::json!({}));

    let snap = server.stats.snapshot();
    assert_eq!((snap.dumps_started, snap.dumps_complete, snap.dumps_incomplete), (1, 1, 0));

    // The registry remembers the client and its dump (written within a second, and at
    // the latest when the server stops).
    server.stop();
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("clients.json")).unwrap()).unwrap();
    let entry = &registry["clients"][0];
    assert_eq!(entry["name"], "node-a");
    assert_eq!(entry["cookie"], "a11ce00000000001");
    assert_eq!(entry["dump"], name.as_str());
}

/// The registers a client sends land, through the session, at the slots of the x86_64
/// ABI's `pr_reg` in each CPU's `NT_PRSTATUS`: the ABI as the tests' reader writes it
/// out (`core_reader::USER_REGS`, from Linux's `user_regs_struct`), read through
/// `object`, with a value of its own in every register.
#[test]
fn the_registers_sent_land_at_their_abi_slots_in_the_vmcore() {
    let dir = TempDir::new("abi-regs");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-r");
    let c = announce(&server, &m, 0xa61);
    let (records, expected): (Vec<_>, Vec<_>) = (0..m.cpus).map(distinct_registers).unzip();
    let regs: Vec<u8> = records.iter().flat_map(|r| r.to_bytes()).collect();
    let mut stream = m.stream(1400);
    for p in stream.iter_mut().filter(|p| p.section == Section::Registers) {
        let at = p.offset as usize;
        p.data = regs[at..at + p.data.len()].to_vec();
    }
    for p in &stream {
        c.send_data(p, 0);
    }
    let finish = finish_for(&stream, m.zero_pages());
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::Verified);

    let bytes = std::fs::read(server.dumps()[0].join("vmcore")).unwrap();
    let notes = Core::new(&bytes).notes();
    // The crashing CPU (1) first.
    for (note, cpu) in notes[..2].iter().zip([1usize, 0]) {
        assert_eq!((note.name, note.note_type), (&b"CORE"[..], 1), "NT_PRSTATUS");
        assert_eq!(pr_pid(note.desc) as usize, cpu + 1);
        assert_pr_reg_in_abi_order(note.desc, &expected[cpu]);
    }
}

#[test]
fn a_bad_crc_in_finish_leaves_vmcore_incomplete_and_info_says_so() {
    let dir = TempDir::new("badcrc");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-b");
    let c = announce(&server, &m, 0xb);
    let stream = m.stream(1400);
    for p in &stream {
        c.send_data(p, 0);
    }
    let mut finish = finish_for(&stream, m.zero_pages());
    finish.stream_crc = !finish.stream_crc;
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::CrcMismatch);
    // A repeated FINISH gets the same answer.
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::CrcMismatch);

    let dump = &server.dumps()[0];
    assert!(dump.join("vmcore-incomplete").exists());
    assert!(!dump.join("vmcore").exists());
    let info = read_info(dump);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["vmcore"], "vmcore-incomplete");
    assert_eq!(info["crc"]["verified"], false);
    assert_ne!(info["crc"]["expected"], info["crc"]["computed"]);
    assert_eq!(info["finish"]["result"], "crc_mismatch");
    assert!(info["status_reason"].as_str().unwrap().starts_with("stream CRC mismatch"));
    server.wait_for("the incomplete dump counted", |s| s.dumps_incomplete == 1);
}

#[test]
fn ack_request_gets_an_immediate_ack_with_the_selective_bitmap() {
    let dir = TempDir::new("sack");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-c");
    let c = announce(&server, &m, 0xc);
    let stream = m.stream(1000);
    c.send_data(&stream[0], 0);
    c.send_data(&stream[2], 0);
    c.send_data(&stream[3], 0);
    let ack = c.data_acked(&stream[10]);
    // Cumulative 1; bits for seq 2, 3 and 10 (bit i ⇔ seq 2 + i).
    assert_eq!(ack, AckSeen { cumulative: 1, stop: false, bitmap: vec![0b0000_0011, 0b0000_0001] });
    // A duplicate is acknowledged too.
    let ack = c.data_acked(&stream[0]);
    assert_eq!(ack.cumulative, 1);
}

#[test]
fn the_server_acknowledges_a_burst_without_being_asked() {
    let dir = TempDir::new("acks");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-d");
    let c = announce(&server, &m, 0xd);
    let stream = m.stream(256);
    assert!(stream.len() >= 40);
    // Sent in one go, no ACK_REQUEST: the server acknowledges after draining (and after
    // every 32 packets, which the session's unit tests pin down).
    for p in &stream[..40] {
        c.send_data(p, 0);
    }
    // Collect ACKs until one covers the whole burst.
    let mut acks = Vec::new();
    while acks.last() != Some(&40) {
        acks.push(c.next_ack().cumulative);
    }
    assert!(acks.windows(2).all(|w| w[0] <= w[1]), "{acks:?}");
}

#[test]
fn a_repeated_crash_gets_the_same_decision_and_a_replay_after_the_dump_is_dropped() {
    let dir = TempDir::new("replay");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-e");
    let c = announce(&server, &m, 0xe);
    let again = c.crash(&m.crash(), 2);
    assert_eq!(again.verdict, Verdict::DumpAll);
    assert_eq!(server.dumps().len(), 1, "no second directory");

    let stream = m.stream(1400);
    for p in &stream {
        c.send_data(p, 0);
    }
    assert_eq!(c.finish(stream.len() as u32, &finish_for(&stream, 0)).status, FinishStatus::Verified);
    c.drain();
    c.send_crash(&m.crash(), 3);
    assert!(c.recv_within(Duration::from_millis(300)).is_none(), "a replayed CRASH is not answered");
    server.wait_for("the replay counted", |s| s.dropped(DropReason::ReplayedCrash) == 1);
    assert_eq!(server.dumps().len(), 1);
}

#[test]
fn a_crash_from_an_unregistered_cookie_gets_an_error_and_no_dump() {
    let dir = TempDir::new("unknown");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-f");
    let c = TestClient::new(server.addr, 0xf);
    c.send_crash(&m.crash(), 1);
    let r = c.recv_type(netdump_core::proto::MessageType::Error);
    match r.message() {
        netdump_core::proto::Message::Error(e) => {
            assert_eq!(e.code, netdump_core::proto::error_code::UNKNOWN_COOKIE)
        }
        other => panic!("{other:?}"),
    }
    assert!(server.dumps().is_empty());
    assert_eq!(server.stats.snapshot().dropped(DropReason::UnknownCookie), 1);
}

#[test]
fn a_hello_with_an_invalid_name_is_refused() {
    let dir = TempDir::new("badname");
    let server = TestServer::start(dir.path());
    let c = TestClient::new(server.addr, 0x10);
    assert_eq!(c.hello("../etc").status, HelloStatus::Refused);
    assert!(!dir.path().join("clients.json").exists());
}

#[test]
fn the_registry_survives_a_server_restart() {
    let dir = TempDir::new("restart");
    let m = Machine::small("node-g");
    let first = TestServer::start(dir.path());
    let c = TestClient::new(first.addr, 0x11);
    assert_eq!(c.hello(&m.name).status, HelloStatus::Registered);
    first.stop();

    let second = TestServer::start(dir.path());
    let c = TestClient::new(second.addr, 0x11);
    assert_eq!(c.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
}

#[test]
fn a_new_cookie_for_the_same_name_replaces_the_old_one() {
    let dir = TempDir::new("rehello");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-h");
    let old = TestClient::new(server.addr, 0x12);
    old.hello(&m.name);
    let new = TestClient::new(server.addr, 0x13);
    new.hello(&m.name);
    // The old cookie is retired: its CRASH is a replay, dropped unanswered.
    old.send_crash(&m.crash(), 1);
    server.wait_for("the retired cookie's CRASH", |s| s.dropped(DropReason::ReplayedCrash) == 1);
    assert!(old.recv_within(Duration::from_millis(100)).is_none());
    assert_eq!(new.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
}

#[test]
fn silence_marks_the_dump_incomplete_and_later_data_is_told_to_stop() {
    let dir = TempDir::new("silence");
    let server = TestServer::start_with(dir.path(), |c| c.session_timeout = Duration::from_millis(300));
    let m = Machine::small("node-i");
    let c = announce(&server, &m, 0x14);
    let stream = m.stream(1400);
    c.send_data(&stream[0], 0);
    server.wait_for("the silent dump expired", |s| s.dumps_incomplete == 1);
    let dump = &server.dumps()[0];
    let info = read_info(dump);
    assert_eq!(info["status"], "incomplete");
    assert!(info["status_reason"].as_str().unwrap().starts_with("no new data for"));
    assert!(dump.join("vmcore-incomplete").exists());

    c.drain();
    let ack = c.data_acked(&stream[1]);
    assert!(ack.stop, "the client is told to stop");
    assert_eq!(c.finish(stream.len() as u32, &finish_for(&stream, 0)).status, FinishStatus::MissingData);
}

#[test]
fn abort_marks_the_dump_incomplete_with_the_clients_reason() {
    let dir = TempDir::new("abort");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-j");
    let c = announce(&server, &m, 0x15);
    c.send_data(&m.stream(1400)[0], 0);
    c.abort(abort_reason::MEMORY_UNREADABLE, "page at 0x5000 faulted");
    server.wait_for("the aborted dump counted", |s| s.dumps_incomplete == 1);
    let info = read_info(&server.dumps()[0]);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["abort"]["reason"], "memory_unreadable");
    assert_eq!(info["abort"]["text"], "page at 0x5000 faulted");
}

#[test]
fn not_enough_space_for_the_memory_gets_skip_memory() {
    let dir = TempDir::new("nospace");
    // Free space decides, not the configured maximum size of a dump.
    let server = TestServer::start_with(dir.path(), |c| c.limits.max_dump_bytes = u64::MAX);
    // 256 TiB of RAM: more than any test machine has free.
    let m = Machine::small("node-k");
    let huge = [MemoryRange { phys_start: 0, length: 256 << 40, virt_start: 0 }];
    let c = TestClient::new(server.addr, 0x16);
    c.send_hello_declaring(&m.name, 1, 256 << 40);
    c.recv_type(netdump_core::proto::MessageType::HelloAck);
    let crash = netdump_core::proto::Crash { ranges: RangeTable::Ranges(&huge), ..m.crash() };
    let d = c.crash(&crash, 1);
    assert_eq!((d.verdict, d.why), (Verdict::SkipMemory, DecisionReason::NoSpace));

    // Log and registers only, then FINISH: verified, status "skipped".
    let stream: Vec<DataPacket> =
        m.stream(1400).into_iter().filter(|p| p.section != netdump_core::proto::Section::Memory).collect();
    let stream: Vec<DataPacket> =
        stream.into_iter().enumerate().map(|(i, p)| DataPacket { seq: i as u32, ..p }).collect();
    for p in &stream {
        c.send_data(p, 0);
    }
    let mut finish = finish_for(&stream, 0);
    finish.flags = netdump_core::proto::FINISH_MEMORY_SKIPPED;
    assert_eq!(c.finish(stream.len() as u32, &finish).status, FinishStatus::Verified);
    let dump = &server.dumps()[0];
    let info = read_info(dump);
    assert_eq!(info["status"], "skipped");
    assert_eq!(info["decision"]["verdict"], "skip_memory");
    assert_eq!(info["decision"]["why"], "no_space");
    // No memory image, no vmcore: the log and the registers (as text) are what it keeps.
    assert!(!dump.join("vmcore").exists() && !dump.join("vmcore-incomplete").exists());
    assert_eq!(std::fs::read(dump.join("log")).unwrap(), m.log);
    let registers = std::fs::read_to_string(dump.join("registers")).unwrap();
    assert!(registers.starts_with("cpu 1 (crashing)\n"), "{registers}");
    assert!(registers.contains(&format!("rip      {:#018x}", Machine::registers(1).rip)), "{registers}");
}

#[test]
fn more_dumps_than_allowed_at_once_get_abort_busy() {
    let dir = TempDir::new("busy");
    let server = TestServer::start_with(dir.path(), |c| c.max_sessions = 1);
    let a = Machine::small("node-l");
    announce(&server, &a, 0x17);
    let b = Machine::small("node-m");
    let c = TestClient::new(server.addr, 0x18);
    c.hello(&b.name);
    let d = c.crash(&b.crash(), 1);
    assert_eq!((d.verdict, d.why), (Verdict::Abort, DecisionReason::Busy));
    // The same answer again.
    assert_eq!(c.crash(&b.crash(), 2).verdict, Verdict::Abort);
    assert_eq!(server.dumps().len(), 1);
}

#[test]
fn an_announcement_breaking_the_rules_gets_abort_bad_announcement() {
    let dir = TempDir::new("badcrash");
    let server = TestServer::start(dir.path());
    let mut m = Machine::small("node-n");
    // Overlapping ranges: parses, but is not a valid memory map.
    m.ranges = vec![
        MemoryRange { phys_start: 0, length: 0x4000, virt_start: 0 },
        MemoryRange { phys_start: 0x2000, length: 0x4000, virt_start: 0 },
    ];
    let c = TestClient::new(server.addr, 0x19);
    c.hello(&m.name);
    let crash = netdump_core::proto::Crash { ranges: RangeTable::Ranges(&m.ranges), ..m.crash() };
    let d = c.crash(&crash, 1);
    assert_eq!((d.verdict, d.why), (Verdict::Abort, DecisionReason::BadAnnouncement));
    assert!(server.dumps().is_empty());
    assert_eq!(server.stats.snapshot().dropped(DropReason::BadField), 1);
}

#[test]
fn shutting_down_marks_a_dump_in_progress_incomplete() {
    let dir = TempDir::new("shutdown");
    let server = TestServer::start(dir.path());
    let m = Machine::small("node-o");
    let c = announce(&server, &m, 0x1a);
    c.data_acked(&m.stream(1400)[0]);
    let dumps = server.dumps();
    server.stop();
    let info = read_info(&dumps[0]);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["status_reason"], "server shut down");
}

#[test]
fn two_clients_dump_at_the_same_time() {
    let dir = TempDir::new("two");
    let server = TestServer::start(dir.path());
    let ma = Machine::small("node-p");
    let mut mb = Machine::small("node-q");
    mb.log = b"another machine's console\n".repeat(50);
    let a = announce(&server, &ma, 0x1b);
    let b = announce(&server, &mb, 0x1c);
    let sa = ma.stream(1400);
    let sb = mb.stream(900);
    for i in 0..sa.len().max(sb.len()) {
        if let Some(p) = sa.get(i) {
            a.send_data(p, 0);
        }
        if let Some(p) = sb.get(i) {
            b.send_data(p, 0);
        }
    }
    assert_eq!(a.finish(sa.len() as u32, &finish_for(&sa, 0)).status, FinishStatus::Verified);
    assert_eq!(b.finish(sb.len() as u32, &finish_for(&sb, 0)).status, FinishStatus::Verified);
    let dumps = server.dumps();
    assert_eq!(dumps.len(), 2);
    assert_eq!(std::fs::read(dumps[0].join("log")).unwrap(), ma.log);
    assert_eq!(std::fs::read(dumps[1].join("log")).unwrap(), mb.log);
}
