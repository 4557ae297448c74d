//! The session's tests: a dump driven packet by packet, without a socket.

use super::*;
use crate::core_reader::{Core, pr_pid, pr_reg};
use crate::dumpdir::{EXTRA, INFO, LOG};
use crate::test_dir::TestDir;
use netdump_core::proto::{
    AddressTable, CPU_STATE_SHIFT, CpuState, Crash, CrashKind, FINISH_MEMORY_SKIPPED, REGISTERS_VALID, RangeTable,
    RegisterRecord,
};
use serde_json::json;
use std::net::Ipv4Addr;

const COOKIE: u64 = 0x1234_5678_9abc_def0;
const PAGE: usize = 4096;

fn peer() -> SocketAddr {
    "127.0.0.1:6665".parse().unwrap()
}

fn client() -> Client {
    Client {
        cookie: COOKIE,
        name: "unit".into(),
        mac: [2, 0, 0, 0, 0, 1],
        ip: Ipv4Addr::new(10, 0, 2, 15),
        source: peer(),
        mtu: 1500,
        page_size: PAGE as u32,
        memory_bytes: 0x30000,
        registered_at: "2026-01-01T00:00:00Z".into(),
        dump: None,
        protocol_version: 1,
        encrypted: false,
        features: 0,
    }
}

fn ranges() -> Vec<MemoryRange> {
    vec![
        MemoryRange { phys_start: 0x1000, length: 0x10000, virt_start: 0xffff_8000_0000_1000 },
        MemoryRange { phys_start: 0x100000, length: 0x20000, virt_start: 0xffff_8000_0010_0000 },
    ]
}

fn crash(cpu_count: u16) -> CrashAnnouncement {
    crash_on(cpu_count, 0)
}

fn crash_on(cpu_count: u16, crashing_cpu: u16) -> CrashAnnouncement {
    let ranges = ranges();
    let wire = Crash {
        kind: CrashKind::Panic,
        vector: 0,
        cpu_count,
        crashing_cpu,
        error_code: 0,
        fault_address: 0,
        page_size: PAGE as u32,
        machine: netdump_core::proto::Machine::X86_64,
        log_len: 100,
        ranges: RangeTable::Ranges(&ranges),
        frames: AddressTable::Addresses(&[0x10_2345, 0x10_1000]),
        message: b"unit test panic \xff",
    };
    CrashAnnouncement::from_wire(&wire)
}

fn start(dir: &TestDir, verdict: Verdict) -> Session {
    start_crash(dir, verdict, crash(2))
}

fn start_crash(dir: &TestDir, verdict: Verdict, crash: CrashAnnouncement) -> Session {
    start_for(dir, verdict, crash, client())
}

fn start_for(dir: &TestDir, verdict: Verdict, crash: CrashAnnouncement, c: Client) -> Session {
    let req = StartRequest {
        cookie: COOKIE,
        client: &c,
        peer: peer(),
        root: dir.path(),
        verdict,
        why: if verdict == Verdict::DumpAll { DecisionReason::None } else { DecisionReason::NoSpace },
        now: Instant::now(),
        dir: None,
    };
    Session::start(req, crash)
}

/// One DATA packet: its payload (sub-header + data) as the wire carries it.
struct Packet {
    seq: u32,
    section: Section,
    offset: u64,
    data: Vec<u8>,
    encoding: Encoding,
}

impl Packet {
    fn new(seq: u32, section: Section, offset: u64, data: Vec<u8>) -> Self {
        Packet { seq, section, offset, data, encoding: Encoding::Raw }
    }
    /// The same section bytes as one LZ4 block.
    fn lz4(self) -> Self {
        let mut out = vec![0; lz4_flex::block::get_maximum_output_size(self.data.len())];
        let mut table = lz4_flex::block::CompressTable::large();
        let n = lz4_flex::block::compress_into_with_table(&self.data, &mut out, &mut table).unwrap();
        out.truncate(n);
        Packet { encoding: Encoding::Lz4 { raw_len: self.data.len() as u32 }, data: out, ..self }
    }
    fn payload(&self) -> Vec<u8> {
        let d = Data { section: self.section, offset: self.offset, data: &self.data };
        let mut p = vec![0; d.wire_len()];
        d.emit(&mut p);
        self.encoding.emit(&mut p);
        p
    }
    fn send(&self, s: &mut Session, flags: u16) -> DataOutcome {
        let d = Data { section: self.section, offset: self.offset, data: &self.data };
        s.on_data(peer(), flags, self.seq, &d, &self.payload(), Instant::now())
    }
}

fn page(tag: u8) -> Vec<u8> {
    (0..PAGE).map(|i| (i as u8) ^ tag).collect()
}

/// A captured record of CPU `cpu` as a client without CPU states sends it (flags = 1).
fn record(cpu: u64) -> RegisterRecord {
    RegisterRecord {
        rip: 0xffff_ffff_8000_0000 + cpu,
        rsp: 0x7000 + cpu,
        rax: cpu,
        cpu,
        flags: REGISTERS_VALID,
        ..Default::default()
    }
}

fn registers(cpu: u64) -> Vec<u8> {
    record(cpu).to_bytes().to_vec()
}

/// A captured record of an SMP client: its state and APIC id in `flags`.
fn smp_record(cpu: u64, state: CpuState, apic_id: u32) -> RegisterRecord {
    let mut r = record(cpu);
    r.set_state(state);
    r.set_apic_id(apic_id);
    r
}

/// The REGISTERS section of `records`, one DATA packet per record at `cpu × 256`, from
/// `seq` 0. A CPU not listed is never sent.
fn register_packets(records: &[RegisterRecord]) -> Vec<Packet> {
    records
        .iter()
        .enumerate()
        .map(|(seq, r)| Packet::new(seq as u32, Section::Registers, r.cpu * 256, r.to_bytes().to_vec()))
        .collect()
}

/// Sends `packets` and a FINISH that covers them: the dump is verified.
fn send_and_finish(s: &mut Session, packets: &[Packet]) {
    for p in packets {
        assert_eq!(p.send(s, 0).dropped, None, "seq {}", p.seq);
    }
    let answer = s.on_finish(peer(), packets.len() as u32, &finish_for(packets), AfterDump::Halt, Instant::now());
    assert_eq!(answer.unwrap().status, FinishStatus::Verified);
}

/// The header lines of a `registers` file (those that do not hold a register).
fn register_headers(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("cpu ")).collect()
}

/// A whole dump: log, registers (split mid-record), two memory pages, extra.
fn stream() -> Vec<Packet> {
    let regs: Vec<u8> = [registers(0), registers(1)].concat();
    vec![
        Packet::new(0, Section::Log, 0, vec![b'L'; 60]),
        Packet::new(1, Section::Log, 60, vec![b'M'; 40]),
        Packet::new(2, Section::Registers, 0, regs[..300].to_vec()),
        Packet::new(3, Section::Registers, 300, regs[300..].to_vec()),
        Packet::new(4, Section::Memory, 0x1000, page(1)),
        Packet::new(5, Section::Memory, 0x100000 + 2 * PAGE as u64, [page(2), page(3)].concat()),
        Packet::new(6, Section::Extra, 0, b"extra state\n".to_vec()),
    ]
}

fn finish_for(packets: &[Packet]) -> Finish {
    let payloads: Vec<Vec<u8>> = packets.iter().map(|p| p.payload()).collect();
    let bytes = packets.iter().map(|p| p.data.len() as u64).sum();
    let stream_crc = netdump_core::proto::StreamCrc::of_payloads(payloads.iter().map(|p| &p[..]));
    Finish { total_bytes: bytes, stream_crc, flags: 0, zero_pages: 40, retransmissions: 1 }
}

fn info_json(s: &Session) -> serde_json::Value {
    let dir = s.output.as_ref().unwrap().dir.path().to_path_buf();
    serde_json::from_slice(&std::fs::read(dir.join(INFO)).unwrap()).unwrap()
}

fn dump_path(s: &Session) -> std::path::PathBuf {
    s.output.as_ref().unwrap().dir.path().to_path_buf()
}

#[test]
fn a_crash_opens_a_directory_with_a_sparse_vmcore_and_receiving_info() {
    let dir = TestDir::new("session-start");
    let s = start(&dir, Verdict::DumpAll);
    assert!(s.is_receiving());
    assert!(s.dir_name().unwrap().starts_with("unit-"));
    let path = dump_path(&s);
    assert!(path.join(VMCORE_INCOMPLETE).exists());
    assert!(path.join(LOG).exists());
    let info = info_json(&s);
    assert_eq!(info["status"], "receiving");
    assert_eq!(info["message"], "unit test panic \u{fffd}");
    assert_eq!(info["memory_size"], 0x30000);
    assert_eq!(info["client"]["mac"], "02:00:00:00:00:01");
    assert_eq!(info["decision"]["verdict"], "dump_all");
    // No register record yet: every CPU is listed, none has registers.
    assert_eq!(info["cpus"][0]["state"], "not_received");
    assert_eq!(info["cpus"][1]["crashed"], false);
    assert_eq!(info["missing_cpus"], json!([0, 1]));
}

#[test]
fn out_of_order_data_with_duplicates_verifies_and_publishes_the_vmcore() {
    let dir = TestDir::new("session-complete");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    for i in [3, 0, 6, 0, 5, 1, 2, 4, 4, 3] {
        let out = packets[i].send(&mut s, 0);
        assert_eq!(out.dropped, None);
    }
    let ack = s.take_ack();
    assert_eq!((ack.cumulative, ack.bitmap(), ack.stop), (7, &[][..], false));
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Halt, Instant::now()).unwrap();
    assert_eq!(answer, FinishAck { status: FinishStatus::Verified, action: AfterDump::Halt });

    let path = dump_path(&s);
    assert!(!path.join(VMCORE_INCOMPLETE).exists());
    let bytes = std::fs::read(path.join(VMCORE)).unwrap();
    let core = Core::new(&bytes);
    assert_eq!(core.read_virt(0xffff_8000_0000_1000, PAGE), &page(1)[..]);
    assert!(core.read_virt(0xffff_8000_0000_2000, PAGE).iter().all(|b| *b == 0), "a page never sent is a hole");
    assert_eq!(core.read_virt(0xffff_8000_0010_2000, 2 * PAGE), &[page(2), page(3)].concat()[..]);
    let notes = core.notes();
    assert_eq!(pr_pid(notes[1].desc), 2);
    assert_eq!(pr_reg(notes[1].desc, 16), 0xffff_ffff_8000_0001, "rip of CPU 1");
    assert_eq!(pr_reg(notes[0].desc, 19), 0x7000, "rsp of CPU 0");
    assert_eq!(std::fs::read(path.join(LOG)).unwrap(), [vec![b'L'; 60], vec![b'M'; 40]].concat());
    assert_eq!(std::fs::read(path.join(EXTRA)).unwrap(), b"extra state\n");

    let info = info_json(&s);
    assert_eq!(info["status"], "complete");
    assert_eq!(info["vmcore"], "vmcore");
    assert_eq!(info["crc"]["verified"], true);
    assert_eq!(info["crc"]["expected"], info["crc"]["computed"]);
    assert_eq!(info["duplicate_packets"], 3);
    assert_eq!(info["registers_received"], 2);
    assert_eq!(info["missing_cpus"], json!([]));
    assert_eq!(info["pages"], 3);
    assert_eq!(info["zero_pages_skipped"], 40);
    assert_eq!(info["log_bytes"], 100);
    assert!(info["end_time"].is_string());
}

#[test]
fn a_crc_mismatch_leaves_vmcore_incomplete_and_says_so() {
    let dir = TestDir::new("session-crc");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    for p in &packets {
        p.send(&mut s, 0);
    }
    let mut finish = finish_for(&packets);
    finish.stream_crc ^= 1;
    let answer = s.on_finish(peer(), 7, &finish, AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::CrcMismatch);
    assert!(dump_path(&s).join(VMCORE_INCOMPLETE).exists());
    assert!(!dump_path(&s).join(VMCORE).exists());
    let info = info_json(&s);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["crc"]["verified"], false);
    assert_eq!(info["finish"]["result"], "crc_mismatch");
    assert!(info["status_reason"].as_str().unwrap().contains("CRC mismatch"));
    // The same FINISH again gets the same answer; it does not re-verify.
    let again = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(again.status, FinishStatus::CrcMismatch);
}

#[test]
fn a_check_the_server_already_computed_is_the_one_the_stream_crc_takes() {
    let packets = stream();
    let send_all = |s: &mut Session, check: &dyn Fn(&[u8]) -> u32| {
        for p in &packets {
            let d = Data { section: p.section, offset: p.offset, data: &p.data };
            let payload = p.payload();
            let out = s.on_data_checked(peer(), 0, p.seq, &d, &payload, Some(check(&payload)), Instant::now());
            assert_eq!(out.dropped, None);
        }
    };
    // The header's CRC check computed the payloads' CRC-32: the dump verifies.
    let dir = TestDir::new("session-check-given");
    let mut s = start(&dir, Verdict::DumpAll);
    send_all(&mut s, &|p| crc32fast::hash(p));
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Halt, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::Verified);
    // A given check is not computed again: one that differs makes the stream CRC differ.
    let dir = TestDir::new("session-check-given-wrong");
    let mut s = start(&dir, Verdict::DumpAll);
    send_all(&mut s, &|p| crc32fast::hash(p) ^ 1);
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Halt, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::CrcMismatch);
}

#[test]
fn a_missing_packet_is_missing_data() {
    let dir = TestDir::new("session-missing");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    for p in packets.iter().filter(|p| p.seq != 4) {
        p.send(&mut s, 0);
    }
    let ack = s.take_ack();
    assert_eq!((ack.cumulative, ack.bitmap()), (4, &[0b0000_0011][..]));
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::MissingData);
    assert_eq!(s.status(), DumpStatus::Incomplete);
}

#[test]
fn a_repeated_finish_after_success_is_verified_again() {
    let dir = TestDir::new("session-finish-repeat");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    for p in &packets {
        p.send(&mut s, 0);
    }
    let f = finish_for(&packets);
    for _ in 0..3 {
        assert_eq!(
            s.on_finish(peer(), 7, &f, AfterDump::Reboot, Instant::now()).unwrap().status,
            FinishStatus::Verified
        );
    }
}

#[test]
fn data_from_another_address_is_dropped() {
    let dir = TestDir::new("session-source");
    let mut s = start(&dir, Verdict::DumpAll);
    let p = &stream()[0];
    let d = Data { section: p.section, offset: p.offset, data: &p.data };
    let other: SocketAddr = "127.0.0.2:6665".parse().unwrap();
    let out = s.on_data(other, 0, 0, &d, &p.payload(), Instant::now());
    assert_eq!(out.dropped, Some(DropReason::WrongSource));
    assert_eq!(s.take_ack().cumulative, 0);
    assert_eq!(s.drops().get(DropReason::WrongSource), 1);
    assert_eq!(
        s.on_finish(other, 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()),
        Err(DropReason::WrongSource)
    );
    assert_eq!(s.on_abort(other, 1, b"", Instant::now()), Err(DropReason::WrongSource));
    assert!(s.is_receiving());
}

#[test]
fn out_of_range_data_is_dropped_counted_and_not_acknowledged() {
    let dir = TestDir::new("session-range");
    let mut s = start(&dir, Verdict::DumpAll);
    let bad = [
        Packet::new(0, Section::Log, 90, vec![0; 11]),               // past log_len
        Packet::new(1, Section::Memory, 0x11000 - 8, vec![1; 16]),   // crosses a range end
        Packet::new(2, Section::Memory, 0x50000, vec![1; 16]),       // between ranges
        Packet::new(3, Section::Registers, 2 * 256 - 1, vec![1; 2]), // past the last record
        Packet::new(4, Section::Extra, MAX_EXTRA_BYTES, vec![1]),    // past the EXTRA cap
        Packet::new(5, Section::Memory, u64::MAX - 3, vec![1; 4]),   // wraps
    ];
    for p in &bad {
        assert_eq!(p.send(&mut s, 0).dropped, Some(DropReason::OutOfRange), "seq {}", p.seq);
    }
    assert_eq!(s.drops().get(DropReason::OutOfRange), 6);
    // Their seqs stay free for the real packets (a forger must not take them).
    assert_eq!(s.take_ack().cumulative, 0);
    let info = s.info();
    assert_eq!((info.bytes_received, info.memory_bytes, info.log_bytes), (0, 0, 0));
    // Nothing was written into the vmcore's memory.
    let bytes = std::fs::read(dump_path(&s).join(VMCORE_INCOMPLETE)).unwrap();
    let core = Core::new(&bytes);
    assert!(core.read_virt(0xffff_8000_0000_1000, 0x10000).iter().all(|b| *b == 0));
    // The stream, without them, verifies; the drops are reported.
    let answer = s.on_finish(peer(), 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::Verified);
    assert!(s.info().status_reason.contains("6 packets outside"));
    assert_eq!(s.info().drops["out_of_range"], 6);
}

#[test]
fn sequence_numbers_far_ahead_are_dropped_unacknowledged() {
    let dir = TestDir::new("session-window");
    let mut s = start(&dir, Verdict::DumpAll);
    let p = Packet::new(5000, Section::Log, 0, vec![1]);
    let out = p.send(&mut s, 0);
    assert_eq!(out, DataOutcome { ack_now: false, dropped: Some(DropReason::OutOfWindow) });
    assert!(!s.ack_due());
}

#[test]
fn acks_are_immediate_on_request_and_every_32_packets() {
    let dir = TestDir::new("session-ack");
    let mut s = start(&dir, Verdict::DumpAll);
    let mut seq = 0;
    let mut send = |s: &mut Session, flags: u16| {
        let p = Packet::new(seq, Section::Memory, 0x1000 + u64::from(seq % 16) * PAGE as u64, page(seq as u8));
        seq += 1;
        p.send(s, flags)
    };
    for _ in 0..31 {
        assert!(!send(&mut s, 0).ack_now);
    }
    assert!(s.ack_due());
    assert!(send(&mut s, 0).ack_now, "the 32nd packet");
    s.take_ack();
    assert!(!s.ack_due());
    assert!(send(&mut s, flags::ACK_REQUEST).ack_now);
    assert!(!send(&mut s, flags::RETRANSMIT).ack_now);
    assert_eq!(s.info().retransmissions, 1);
}

#[test]
fn news_of_a_gap_is_acknowledged_at_once_and_the_open_gap_is_not() {
    let dir = TestDir::new("session-gap-ack");
    let mut s = start(&dir, Verdict::DumpAll);
    let send = |s: &mut Session, seq: u32| {
        let p = Packet::new(seq, Section::Memory, 0x1000 + u64::from(seq % 16) * PAGE as u64, page(seq as u8));
        p.send(s, 0).ack_now
    };
    assert!(!send(&mut s, 0));
    assert!(send(&mut s, 2), "seq 1 is missing: the client should know within a round trip");
    s.take_ack();
    for seq in 3..10 {
        assert!(!send(&mut s, seq), "the gap is still open, nothing new: {seq}");
    }
    assert!(s.ack_due(), "owed, and sent by the usual policy");
    assert!(send(&mut s, 11), "seq 10 is missing too");
    s.take_ack();
    assert!(send(&mut s, 1), "the first gap is filled");
    assert!(!send(&mut s, 12));
}

#[test]
fn duplicates_are_acknowledged_too() {
    let dir = TestDir::new("session-dup-ack");
    let mut s = start(&dir, Verdict::DumpAll);
    let p = &stream()[0];
    p.send(&mut s, 0);
    s.take_ack();
    let out = p.send(&mut s, flags::ACK_REQUEST | flags::RETRANSMIT);
    assert_eq!(out, DataOutcome { ack_now: true, dropped: None });
    assert_eq!(s.info().duplicate_packets, 1);
}

#[test]
fn abort_ends_the_dump_and_later_data_is_told_to_stop() {
    let dir = TestDir::new("session-abort");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    packets[0].send(&mut s, 0);
    s.on_abort(peer(), abort_reason::NIC_ERROR, b"tx hang", Instant::now()).unwrap();
    assert_eq!(s.status(), DumpStatus::Incomplete);
    assert!(s.dump_ended());
    let info = info_json(&s);
    assert_eq!(info["abort"]["reason"], "nic_error");
    assert_eq!(info["abort"]["text"], "tx hang");
    assert_eq!(info["status_reason"], "client aborted: nic_error: tx hang");

    let out = packets[1].send(&mut s, 0);
    assert_eq!(out.dropped, Some(DropReason::SessionClosed));
    assert!(s.ack_due());
    assert!(s.take_ack().stop);
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::MissingData);
}

#[test]
fn silence_marks_the_dump_incomplete() {
    let dir = TestDir::new("session-silence");
    let mut s = start(&dir, Verdict::DumpAll);
    let t0 = Instant::now();
    assert!(!s.expire(t0, Duration::from_secs(60)));
    let later = t0 + Duration::from_secs(61);
    assert!(s.expire(later, Duration::from_secs(60)));
    assert!(!s.expire(later, Duration::from_secs(60)), "ends once");
    let info = info_json(&s);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["status_reason"], "no new data for 60 s");
    assert!(!s.forgettable(later, Duration::from_secs(120)));
    assert!(s.forgettable(later + Duration::from_secs(120), Duration::from_secs(120)));
}

#[test]
fn duplicates_do_not_keep_a_silent_dump_open() {
    let dir = TestDir::new("session-duplicates");
    let mut s = start(&dir, Verdict::DumpAll);
    let packets = stream();
    let t0 = Instant::now();
    let d = Data { section: packets[0].section, offset: packets[0].offset, data: &packets[0].data };
    s.on_data(peer(), 0, packets[0].seq, &d, &packets[0].payload(), t0);
    // The same packet every 20 s: heard from, but no new data.
    for i in 1..=3 {
        let at = t0 + Duration::from_secs(20 * i);
        let out = s.on_data(peer(), 0, packets[0].seq, &d, &packets[0].payload(), at);
        assert_eq!(out.dropped, None);
    }
    assert!(s.expire(t0 + Duration::from_secs(61), Duration::from_secs(60)));
    assert!(!s.is_receiving());
}

#[test]
fn an_ended_dump_holds_no_open_files() {
    let dir = TestDir::new("session-closed-files");
    let mut s = start(&dir, Verdict::DumpAll);
    assert!(s.has_open_files());
    s.on_abort(peer(), 0, b"bye", Instant::now()).unwrap();
    assert!(!s.has_open_files());
    // Its directory is still known, for the hooks and for repeats.
    assert!(s.dir_path().is_some_and(|p| p.join(VMCORE_INCOMPLETE).exists()));
    assert_eq!(info_json(&s)["status"], "incomplete");
}

#[test]
fn an_ended_dump_releases_its_buffers_and_keeps_its_counts() {
    let dir = TestDir::new("session-released");
    let mut s = start(&dir, Verdict::DumpAll);
    let receiving = s.reserved_bytes();
    assert!(receiving >= crate::dumpdir::GATHER_LIMIT as u64, "a memory image reserves its gathered bytes");
    // A gap: packet 1 arrives before 0, and stays beyond the cumulative point.
    let packets = stream();
    assert_eq!(packets[1].send(&mut s, 0).dropped, None);
    assert!(s.window.has_gaps());
    s.on_abort(peer(), 0, b"bye", Instant::now()).unwrap();
    assert!(s.reserved_bytes() < receiving / 8, "an ended dump keeps {} bytes", s.reserved_bytes());
    assert!(!s.window.has_gaps(), "the packets beyond the gap are forgotten");
    assert_eq!(s.window.packets(), 1, "but counted");
    assert_eq!(info_json(&s)["packets_received"], 1);
}

#[test]
fn a_declined_crash_keeps_no_register_buffer() {
    let dir = TestDir::new("session-declined-buffer");
    let s = start(&dir, Verdict::Abort);
    assert!(s.registers.bytes.is_empty());
    assert!(s.output.is_none());
}

#[test]
fn skip_memory_keeps_log_and_registers_and_refuses_memory() {
    let dir = TestDir::new("session-skip");
    let mut s = start(&dir, Verdict::SkipMemory);
    let packets: Vec<Packet> = stream().into_iter().filter(|p| p.section != Section::Memory).collect();
    let packets: Vec<Packet> = packets.into_iter().enumerate().map(|(i, p)| Packet { seq: i as u32, ..p }).collect();
    for p in &packets {
        assert_eq!(p.send(&mut s, 0).dropped, None);
    }
    let stray = Packet::new(packets.len() as u32, Section::Memory, 0x1000, page(1));
    assert_eq!(stray.send(&mut s, 0).dropped, Some(DropReason::OutOfRange));
    let all = packets;
    let mut f = finish_for(&all);
    f.flags = FINISH_MEMORY_SKIPPED;
    let answer = s.on_finish(peer(), all.len() as u32, &f, AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::Verified);
    let info = info_json(&s);
    assert_eq!(info["status"], "skipped");
    assert_eq!(info["decision"]["why"], "no_space");
    assert!(info["status_reason"].as_str().unwrap().contains("memory skipped by decision (no_space)"));
    // No memory image, no vmcore: the registers are in `registers`, the log in `log`.
    assert!(!dump_path(&s).join(VMCORE).exists() && !dump_path(&s).join(VMCORE_INCOMPLETE).exists());
    assert_eq!(info["vmcore"], serde_json::Value::Null);
    let regs = std::fs::read_to_string(dump_path(&s).join(REGISTERS)).unwrap();
    assert!(regs.starts_with("cpu 0 (crashing)\n"), "{regs}");
    assert!(regs.contains("rip      0xffffffff80000000"), "{regs}");
    assert!(regs.contains("cpu 1 (unknown)\n"), "{regs}");
    assert!(std::fs::metadata(dump_path(&s).join(LOG)).unwrap().len() > 0);
    assert!(s.take_end_event(), "the end is reported once");
    assert!(!s.take_end_event());
}

#[test]
fn repeated_crash_gets_the_same_decision_until_the_dump_ends() {
    let dir = TestDir::new("session-crash-repeat");
    let mut s = start(&dir, Verdict::DumpAll);
    let d = s.decision();
    assert_eq!(s.on_repeated_crash(peer()), Ok(d));
    let other: SocketAddr = "127.0.0.9:1".parse().unwrap();
    assert_eq!(s.on_repeated_crash(other), Err(DropReason::WrongSource));
    s.on_abort(peer(), abort_reason::SERVER_SILENT, b"", Instant::now()).unwrap();
    assert_eq!(s.on_repeated_crash(peer()), Err(DropReason::ReplayedCrash));
    assert_eq!(s.drops().get(DropReason::ReplayedCrash), 1);
}

#[test]
fn a_declined_crash_creates_nothing_and_knows_no_finish() {
    let dir = TestDir::new("session-declined");
    let mut s = start(&dir, Verdict::Abort);
    assert_eq!(s.decision().verdict, Verdict::Abort);
    assert!(s.dir_name().is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let answer = s.on_finish(peer(), 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::UnknownSession);
    assert_eq!(stream()[0].send(&mut s, 0).dropped, Some(DropReason::SessionClosed));
    assert_eq!(s.on_repeated_crash(peer()).map(|d| d.verdict), Ok(Verdict::Abort));
}

#[test]
fn an_uncreatable_directory_turns_the_decision_into_abort() {
    let dir = TestDir::new("session-nodir");
    let c = client();
    let req = StartRequest {
        cookie: COOKIE,
        client: &c,
        peer: peer(),
        root: &dir.path().join("missing/deeper"),
        verdict: Verdict::DumpAll,
        why: DecisionReason::None,
        now: Instant::now(),
        dir: None,
    };
    let s = Session::start(req, crash(1));
    assert_eq!((s.decision().verdict, s.decision().why), (Verdict::Abort, DecisionReason::NoSpace));
}

#[test]
fn info_is_refreshed_while_receiving() {
    let dir = TestDir::new("session-refresh");
    let mut s = start(&dir, Verdict::DumpAll);
    stream()[0].send(&mut s, 0);
    let t0 = s.started;
    s.refresh_info(t0 + Duration::from_secs(1), Duration::from_secs(5));
    assert_eq!(info_json(&s)["log_bytes"], 0, "not yet");
    s.refresh_info(t0 + Duration::from_secs(5), Duration::from_secs(5));
    assert_eq!(info_json(&s)["log_bytes"], 60);
    assert_eq!(info_json(&s)["status"], "receiving");
}

#[test]
fn an_outcome_that_could_not_be_written_is_written_once_it_can_be() {
    let dir = TestDir::new("session-unwritten");
    let mut s = start(&dir, Verdict::DumpAll);
    // info.json's temporary file cannot be created (as a full disk would refuse it).
    let blocker = dump_path(&s).join("info.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let t0 = s.started;
    s.on_abort(peer(), abort_reason::NIC_ERROR, b"", t0).unwrap();
    assert_eq!(info_json(&s)["status"], "receiving", "the write failed");
    std::fs::remove_dir(&blocker).unwrap();
    s.refresh_info(t0 + Duration::from_secs(5), Duration::from_secs(5));
    assert_eq!(info_json(&s)["status"], "incomplete");
}

#[test]
fn shutdown_marks_a_receiving_dump_incomplete() {
    let dir = TestDir::new("session-shutdown");
    let mut s = start(&dir, Verdict::DumpAll);
    s.shut_down(Instant::now());
    assert_eq!(info_json(&s)["status_reason"], "server shut down");
}

#[test]
fn outstanding_bytes_shrink_as_memory_arrives() {
    let dir = TestDir::new("session-outstanding");
    let mut s = start(&dir, Verdict::DumpAll);
    assert_eq!(s.outstanding_bytes(), 0x30000 + 100);
    stream()[4].send(&mut s, 0);
    assert_eq!(s.outstanding_bytes(), 0x30000 - PAGE as u64 + 100);
    s.shut_down(Instant::now());
    assert_eq!(s.outstanding_bytes(), 0);
}

#[test]
fn registers_split_anywhere_complete_each_record_once() {
    let mut r = RegisterAssembler::new(2, netdump_core::proto::Machine::X86_64);
    let bytes = [registers(0), registers(1)].concat();
    assert_eq!(r.write(0, &bytes[..255]), Some(vec![]));
    assert_eq!(r.write(255, &bytes[255..257]), Some(vec![0]));
    assert_eq!(r.write(257, &bytes[257..]), Some(vec![1]));
    assert_eq!(r.write(0, &bytes[..10]), Some(vec![]), "already complete");
    assert_eq!(r.write(511, &[0, 0]), None);
    assert_eq!(r.write(u64::MAX, &[0]), None);
    assert_eq!(r.record(1).unwrap().pc(), 0xffff_ffff_8000_0001);
    assert_eq!(r.complete_count(), 2);
}

/// The SMP case the vmcore must get right: CPU 2 crashed, 0 and 1 were stopped by its
/// NMI, 3 did not answer (an absent record). Every CPU keeps its NT_PRSTATUS, the
/// crashing one first, `pr_pid` = index + 1, and CPU 3's registers are zero.
#[test]
fn an_smp_dump_keeps_every_cpus_note_crashing_first_and_says_which_lack_registers() {
    let dir = TestDir::new("session-smp-vmcore");
    let mut s = start_crash(&dir, Verdict::DumpAll, crash_on(4, 2));
    let records = [
        smp_record(0, CpuState::Stopped, 0),
        smp_record(1, CpuState::Stopped, 1),
        smp_record(2, CpuState::Crashed, 2),
        RegisterRecord::absent(3, CpuState::NoAnswer, Some(3)),
    ];
    // Not in index order: where a record lands depends on its offset only.
    let packets = register_packets(&[records[3], records[1], records[2], records[0]]);
    send_and_finish(&mut s, &packets);

    let bytes = std::fs::read(dump_path(&s).join(VMCORE)).unwrap();
    let notes = Core::new(&bytes).notes();
    let prstatus: Vec<_> = notes.iter().filter(|n| n.name == b"CORE").collect();
    assert_eq!(prstatus.iter().map(|n| pr_pid(n.desc)).collect::<Vec<_>>(), [3, 1, 2, 4]);
    for (note, cpu) in prstatus[..3].iter().zip([2u64, 0, 1]) {
        assert_eq!(pr_reg(note.desc, 16), 0xffff_ffff_8000_0000 + cpu, "rip of CPU {cpu}");
        assert_eq!(pr_reg(note.desc, 19), 0x7000 + cpu, "rsp of CPU {cpu}");
    }
    assert!((0..27).all(|i| pr_reg(prstatus[3].desc, i) == 0), "CPU 3 has no registers");

    let info = info_json(&s);
    assert_eq!(info["registers_received"], 4, "whole records, valid or not");
    assert_eq!(info["missing_cpus"], json!([3]));
    assert_eq!(
        info["cpus"],
        json!([
            {"index": 0, "apic_id": 0, "state": "stopped", "registers": true, "rip": "0xffffffff80000000", "crashed": false},
            {"index": 1, "apic_id": 1, "state": "stopped", "registers": true, "rip": "0xffffffff80000001", "crashed": false},
            {"index": 2, "apic_id": 2, "state": "crashed", "registers": true, "rip": "0xffffffff80000002", "crashed": true},
            {"index": 3, "apic_id": 3, "state": "no_answer", "registers": false, "rip": null, "crashed": false},
        ])
    );

    let regs = std::fs::read_to_string(dump_path(&s).join(REGISTERS)).unwrap();
    assert_eq!(
        register_headers(&regs),
        [
            "cpu 2 (apic 2, crashing)",
            "cpu 0 (apic 0, stopped)",
            "cpu 1 (apic 1, stopped)",
            "cpu 3 (apic 3): no registers (no_answer)"
        ],
        "{regs}"
    );
    assert!(regs.starts_with("cpu 2 (apic 2, crashing)\n  rax      0x0000000000000002\n"), "{regs}");
    assert!(regs.ends_with("cpu 3 (apic 3): no registers (no_answer)\n"), "{regs}");
    assert_eq!(s.missing_cpus_note(), "; cpus without registers: 3 (no_answer)");
}

/// A state code this server does not know is shown by its number; a record that never
/// arrived (the dump was aborted first) is `not_received`. The CPUs are listed while the
/// dump is received too: the periodic rewrite of `info.json` has them.
#[test]
fn cpus_show_unknown_state_codes_and_records_never_received() {
    let dir = TestDir::new("session-smp-states");
    let mut s = start_crash(&dir, Verdict::DumpAll, crash_on(4, 0));
    let mut strange = smp_record(1, CpuState::Stopped, 5);
    strange.flags = (strange.flags & !(0xff << CPU_STATE_SHIFT)) | (0x2a << CPU_STATE_SHIFT);
    let records = [
        smp_record(0, CpuState::Crashed, 0),
        strange,
        RegisterRecord::absent(2, CpuState::Offline, None),
        // CPU 3's record never comes.
    ];
    for p in register_packets(&records) {
        assert_eq!(p.send(&mut s, 0).dropped, None);
    }
    let expected = json!([
        {"index": 0, "apic_id": 0, "state": "crashed", "registers": true, "rip": "0xffffffff80000000", "crashed": true},
        {"index": 1, "apic_id": 5, "state": "unknown_42", "registers": true, "rip": "0xffffffff80000001", "crashed": false},
        {"index": 2, "apic_id": null, "state": "offline", "registers": false, "rip": null, "crashed": false},
        {"index": 3, "apic_id": null, "state": "not_received", "registers": false, "rip": null, "crashed": false},
    ]);
    s.refresh_info(s.started + Duration::from_secs(5), Duration::from_secs(5));
    let info = info_json(&s);
    assert_eq!(info["status"], "receiving");
    assert_eq!(info["cpus"], expected);
    assert_eq!(info["missing_cpus"], json!([2, 3]));

    s.on_abort(peer(), abort_reason::NIC_ERROR, b"", Instant::now()).unwrap();
    let info = info_json(&s);
    assert_eq!(info["status"], "incomplete");
    assert_eq!(info["cpus"], expected);
    assert_eq!(info["missing_cpus"], json!([2, 3]));
    assert_eq!((info["registers_received"].as_u64(), info["cpu_count"].as_u64()), (Some(3), Some(4)));

    let regs = std::fs::read_to_string(dump_path(&s).join(REGISTERS)).unwrap();
    assert_eq!(
        register_headers(&regs),
        [
            "cpu 0 (apic 0, crashing)",
            "cpu 1 (apic 5, unknown_42)",
            "cpu 2: no registers (offline)",
            "cpu 3: no registers (not_received)"
        ],
        "{regs}"
    );
    assert_eq!(s.missing_cpus_note(), "; cpus without registers: 2 (offline), 3 (not_received)");
}

/// A single-CPU client that predates CPU states sends flags = 1: one CPU, state
/// `unknown`, with registers; the `registers` file reads as it always did.
#[test]
fn an_old_single_cpu_record_is_one_cpu_in_state_unknown_with_registers() {
    let dir = TestDir::new("session-old-client");
    let mut s = start_crash(&dir, Verdict::DumpAll, crash_on(1, 0));
    assert_eq!(record(0).flags, 1);
    send_and_finish(&mut s, &register_packets(&[record(0)]));
    let info = info_json(&s);
    assert_eq!(
        info["cpus"],
        json!([{"index": 0, "apic_id": null, "state": "unknown", "registers": true, "rip": "0xffffffff80000000", "crashed": true}])
    );
    assert_eq!(info["missing_cpus"], json!([]));
    assert_eq!(info["registers_received"], 1);
    let regs = std::fs::read_to_string(dump_path(&s).join(REGISTERS)).unwrap();
    assert_eq!(register_headers(&regs), ["cpu 0 (crashing)"], "{regs}");
    assert_eq!(s.missing_cpus_note(), "", "nothing to add to the log line");
}

/// The crashing CPU is first whether its registers came or not; without them it says
/// why, and a state that adds to "crashing" is shown beside it.
#[test]
fn the_crashing_cpu_is_first_in_the_registers_file_with_or_without_registers() {
    let mut r = RegisterAssembler::new(2, netdump_core::proto::Machine::X86_64);
    r.write(256, &smp_record(1, CpuState::Stopped, 1).to_bytes()).unwrap();
    assert_eq!(
        register_headers(&r.text(0, 2)),
        ["cpu 0 (crashing): no registers (not_received)", "cpu 1 (apic 1, stopped)"]
    );
    r.write(0, &RegisterRecord::absent(0, CpuState::Unknown, Some(0)).to_bytes()).unwrap();
    assert_eq!(
        register_headers(&r.text(0, 2)),
        ["cpu 0 (apic 0, crashing): no registers (unknown)", "cpu 1 (apic 1, stopped)"]
    );
    r.write(0, &smp_record(0, CpuState::Panicked, 0).to_bytes()).unwrap();
    assert_eq!(register_headers(&r.text(0, 2)), ["cpu 0 (apic 0, crashing, panicked)", "cpu 1 (apic 1, stopped)"]);
    r.write(0, &smp_record(0, CpuState::Crashed, 0).to_bytes()).unwrap();
    assert_eq!(register_headers(&r.text(0, 2))[0], "cpu 0 (apic 0, crashing)");
}

#[test]
fn the_log_note_groups_consecutive_cpus_in_one_state() {
    let mut r = RegisterAssembler::new(64, netdump_core::proto::Machine::X86_64);
    r.write(3 * 256, &RegisterRecord::absent(3, CpuState::NoAnswer, None).to_bytes()).unwrap();
    r.write(4 * 256, &smp_record(4, CpuState::Stopped, 4).to_bytes()).unwrap();
    let cpus = r.cpus(4, 64);
    assert_eq!(
        registers::missing_note(&cpus).as_deref(),
        Some("0-2 (not_received), 3 (no_answer), 5-63 (not_received)")
    );
    assert_eq!(registers::missing_note(&cpus[4..5]), None);
}

/// The bytes of the vmcore file that hold `len` bytes of memory at `phys`.
fn vmcore_memory(s: &Session, phys: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let at = s.output.as_ref().unwrap().layout.memory_offset(phys, len as u64).unwrap();
    let name = if dump_path(s).join(VMCORE).exists() { VMCORE } else { VMCORE_INCOMPLETE };
    let f = std::fs::File::open(dump_path(s).join(name)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, at).unwrap();
    buf
}

/// A page sent in three packets, in order (the writes are gathered), from `seq`.
fn page_in_pieces(seq: u32, phys: u64, tag: u8) -> Vec<Packet> {
    let p = page(tag);
    vec![
        Packet::new(seq, Section::Memory, phys, p[..1432].to_vec()),
        Packet::new(seq + 1, Section::Memory, phys + 1432, p[1432..2864].to_vec()),
        Packet::new(seq + 2, Section::Memory, phys + 2864, p[2864..].to_vec()),
    ]
}

#[test]
fn an_ack_covers_only_data_already_in_the_vmcore() {
    let dir = TestDir::new("session-ack-written");
    let mut s = start(&dir, Verdict::DumpAll);
    for p in page_in_pieces(0, 0x1000, 9) {
        assert_eq!(p.send(&mut s, 0), DataOutcome { ack_now: false, dropped: None });
    }
    let ack = s.take_ack();
    assert_eq!(ack.cumulative, 3);
    assert_eq!(vmcore_memory(&s, 0x1000, PAGE), page(9), "acknowledged, so in the file");
}

#[test]
fn a_dump_that_ends_without_finish_keeps_what_it_gathered() {
    let dir = TestDir::new("session-abort-gathered");
    let mut s = start(&dir, Verdict::DumpAll);
    for p in page_in_pieces(0, 0x2000, 5) {
        p.send(&mut s, 0);
    }
    s.on_abort(peer(), abort_reason::NIC_ERROR, b"", Instant::now()).unwrap();
    assert_eq!(vmcore_memory(&s, 0x2000, PAGE), page(5));
}

#[test]
fn gathered_and_scattered_writes_land_in_the_order_they_were_made() {
    let dir = TestDir::new("session-write-order");
    let mut s = start(&dir, Verdict::DumpAll);
    // Two packets that continue each other (gathered), then one that overwrites the
    // middle of both (written elsewhere: what was gathered goes first), then more.
    let packets = vec![
        Packet::new(0, Section::Memory, 0x3000, vec![1; 1000]),
        Packet::new(1, Section::Memory, 0x3000 + 1000, vec![2; 1000]),
        Packet::new(2, Section::Memory, 0x3000 + 500, vec![3; 1000]),
        Packet::new(3, Section::Memory, 0x3000 + 1500, vec![4; 1000]),
    ];
    send_and_finish(&mut s, &packets);
    let got = vmcore_memory(&s, 0x3000, 2500);
    let want: Vec<u8> = [vec![1; 500], vec![3; 1000], vec![4; 1000]].concat();
    assert_eq!(got, want);
}

/// A session of a client granted FILTER.
fn start_filtered(dir: &TestDir) -> Session {
    let c = Client { protocol_version: 2, features: features::FILTER, ..client() };
    let req = StartRequest {
        cookie: COOKIE,
        client: &c,
        peer: peer(),
        root: dir.path(),
        verdict: Verdict::DumpAll,
        why: DecisionReason::None,
        now: Instant::now(),
        dir: None,
    };
    Session::start(req, crash(1))
}

fn excluded_records(runs: &[(u64, u32, netdump_core::memory::PageClass)]) -> Vec<u8> {
    let mut data = vec![0u8; runs.len() * netdump_core::proto::ExcludedRun::WIRE_LEN];
    for (&(start_pfn, pages, class), out) in runs.iter().zip(data.chunks_exact_mut(16)) {
        netdump_core::proto::ExcludedRun { start_pfn, pages, class }.emit(out);
    }
    data
}

#[test]
fn a_filtered_dump_records_its_excluded_runs_in_the_vmcore_note_and_info_json() {
    use netdump_core::memory::PageClass;
    let dir = TestDir::new("session-filtered");
    let mut s = start_filtered(&dir);
    let packets = vec![
        Packet::new(0, Section::Registers, 0, registers(0)),
        // pfns 0x2..0x4 and 0x5 (range 0x1000..0x11000), 0x100..0x104 (range 0x100000..)
        Packet::new(1, Section::Excluded, 0, excluded_records(&[(2, 2, PageClass::User), (5, 1, PageClass::Free)])),
        Packet::new(2, Section::Excluded, 32, excluded_records(&[(0x100, 4, PageClass::PageCache)])),
        Packet::new(3, Section::Memory, 0x1000, page(1)),
    ];
    send_and_finish(&mut s, &packets);
    let info = info_json(&s);
    assert_eq!(info["status"], "complete");
    assert_eq!(
        info["filter"],
        json!({"runs": 3, "excluded_pages": 7,
               "pages_by_class": {"page_cache": 4, "page_cache_private": 0, "user": 2, "free": 1}})
    );
    let bytes = std::fs::read(dump_path(&s).join(VMCORE)).unwrap();
    let core = Core::new(&bytes);
    let notes = core.notes();
    let note = notes.iter().find(|n| n.note_type == crate::vmcore::NT_NETDUMP_EXCLUDED).expect("exclusion note");
    let d = note.desc;
    assert_eq!(u64::from_le_bytes(d[8..16].try_into().unwrap()), 3, "run count");
    let run = |i: usize| {
        let at = 16 + 24 * i;
        let v = |o: usize| u64::from_le_bytes(d[at + o..at + o + 8].try_into().unwrap());
        (v(0), v(8), u32::from_le_bytes(d[at + 16..at + 20].try_into().unwrap()))
    };
    assert_eq!([run(0), run(1), run(2)], [(2, 2, 8), (5, 1, 16), (0x100, 4, 2)]);
    // The excluded pages are holes; the sent page is there.
    assert_eq!(core.read_phys(0x2000, PAGE), &[0u8; PAGE][..]);
    assert_eq!(core.read_phys(0x1000, PAGE), &page(1)[..]);
    // gdb's view is unchanged: the registers note is still the first.
    assert_eq!(pr_pid(core.notes()[0].desc), 1);
}

#[test]
fn bad_excluded_packets_are_dropped_unacknowledged_with_the_reason_counted() {
    use netdump_core::memory::PageClass;
    let dir = TestDir::new("session-bad-excluded");
    let mut s = start_filtered(&dir);
    let bad = [
        Packet::new(0, Section::Excluded, 0, excluded_records(&[(0x11, 1, PageClass::User)])), // past range 0
        Packet::new(0, Section::Excluded, 8, excluded_records(&[(2, 1, PageClass::User)])),    // misaligned
        Packet::new(0, Section::Excluded, 0, excluded_records(&[(2, 1, PageClass::User)])[..12].to_vec()),
    ];
    for p in &bad {
        assert_eq!(p.send(&mut s, 0).dropped, Some(DropReason::BadExclusion));
    }
    assert_eq!(s.drops().get(DropReason::BadExclusion), 3);
    assert_eq!(s.take_ack().cumulative, 0, "nothing acknowledged");
    assert_eq!(s.excluded().run_count(), 0);
    let good = Packet::new(0, Section::Excluded, 0, excluded_records(&[(2, 1, PageClass::User)]));
    assert_eq!(good.send(&mut s, 0).dropped, None);
    let overlapping = Packet::new(1, Section::Excluded, 16, excluded_records(&[(2, 1, PageClass::Free)]));
    assert_eq!(overlapping.send(&mut s, 0).dropped, Some(DropReason::BadExclusion));
    assert_eq!(s.excluded().run_count(), 1);
}

#[test]
fn a_client_not_granted_filter_may_not_send_excluded_runs_and_has_no_note() {
    use netdump_core::memory::PageClass;
    let dir = TestDir::new("session-unfiltered");
    let mut s = start(&dir, Verdict::DumpAll);
    assert!(!s.filtered());
    let p = Packet::new(0, Section::Excluded, 0, excluded_records(&[(2, 1, PageClass::User)]));
    assert_eq!(p.send(&mut s, 0).dropped, Some(DropReason::BadExclusion));
    send_and_finish(&mut s, &stream());
    assert_eq!(info_json(&s)["filter"], serde_json::Value::Null);
    let bytes = std::fs::read(dump_path(&s).join(VMCORE)).unwrap();
    let core = Core::new(&bytes);
    assert!(core.notes().iter().all(|n| n.note_type != crate::vmcore::NT_NETDUMP_EXCLUDED));
    assert_eq!(core.phdrs().len(), 1 + ranges().len(), "no program header reserved");
}

/// A client granted compression in its HELLO_ACK.
fn compressing_client() -> Client {
    Client { protocol_version: 2, features: netdump_core::proto::features::COMPRESSED, ..client() }
}

/// [`stream`] with its memory (and log) packets as LZ4 blocks.
fn compressed_stream() -> Vec<Packet> {
    stream()
        .into_iter()
        .map(|p| if matches!(p.section, Section::Memory | Section::Log) { p.lz4() } else { p })
        .collect()
}

#[test]
fn a_compressed_dump_writes_the_same_vmcore_as_an_uncompressed_one() {
    let dir = TestDir::new("session-lz4-same");
    let mut raw = start(&dir, Verdict::DumpAll);
    send_and_finish(&mut raw, &stream());
    let dir2 = TestDir::new("session-lz4-same-2");
    let mut lz4 = start_for(&dir2, Verdict::DumpAll, crash(2), compressing_client());
    let packets = compressed_stream();
    assert!(packets[4].data.len() < PAGE / 4, "the memory page shrank: {}", packets[4].data.len());
    send_and_finish(&mut lz4, &packets);
    let (a, b) = (dump_path(&raw), dump_path(&lz4));
    assert_eq!(std::fs::read(a.join(VMCORE)).unwrap(), std::fs::read(b.join(VMCORE)).unwrap());
    assert_eq!(std::fs::read(a.join(LOG)).unwrap(), std::fs::read(b.join(LOG)).unwrap());

    let info = info_json(&lz4);
    assert_eq!(info["status"], "complete");
    assert_eq!(info["compressed"], true);
    assert_eq!(info["compression"]["blocks"], 4);
    let wire: u64 = packets.iter().map(|p| p.data.len() as u64).sum();
    assert_eq!(info["bytes_received"], wire);
    assert_eq!(info["compression"]["decoded_bytes"], 100 + 3 * PAGE as u64);
    assert!(info["compression"]["ratio"].as_f64().unwrap() > 2.0, "{}", info["compression"]);
    assert_eq!(info["memory_bytes"], 3 * PAGE as u64);
    let plain = info_json(&raw);
    assert_eq!(plain["compressed"], false);
    assert_eq!(plain["compression"], serde_json::Value::Null, "not granted: no compression report");
}

/// Sends `bad` for the seq of `good`: dropped as `bad_block`, not acknowledged, nothing
/// written; then `good` (the retransmission) completes the dump.
fn rejected_then_resent(name: &str, bad: Packet, good_index: usize) {
    let dir = TestDir::new(name);
    let mut s = start_for(&dir, Verdict::DumpAll, crash(2), compressing_client());
    let packets = compressed_stream();
    let out = bad.send(&mut s, flags::ACK_REQUEST);
    assert_eq!(out.dropped, Some(DropReason::BadBlock));
    assert_eq!(s.counts.memory_bytes, 0, "nothing of a bad block is written");
    for (i, p) in packets.iter().enumerate().filter(|(i, _)| *i != good_index) {
        assert_eq!(p.send(&mut s, 0).dropped, None, "packet {i}");
    }
    let ack = s.take_ack();
    assert_eq!(ack.cumulative, good_index as u32, "the bad block's seq is not acknowledged");
    assert_eq!(packets[good_index].send(&mut s, flags::RETRANSMIT).dropped, None);
    let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Halt, Instant::now()).unwrap();
    assert_eq!(answer.status, FinishStatus::Verified);
    let core_bytes = std::fs::read(dump_path(&s).join(VMCORE)).unwrap();
    assert_eq!(Core::new(&core_bytes).read_virt(0xffff_8000_0000_1000, PAGE), &page(1)[..]);
    assert_eq!(info_json(&s)["drops"]["bad_block"], 1);
}

#[test]
fn a_block_that_decodes_to_the_wrong_length_is_dropped_and_taken_when_resent() {
    let good = Packet::new(4, Section::Memory, 0x1000, page(1)).lz4();
    let bad = Packet {
        encoding: Encoding::Lz4 { raw_len: PAGE as u32 - 1 },
        ..Packet::new(4, Section::Memory, 0x1000, good.data.clone())
    };
    rejected_then_resent("session-lz4-length", bad, 4);
}

#[test]
fn a_corrupt_block_is_dropped_and_taken_when_resent() {
    let good = Packet::new(4, Section::Memory, 0x1000, page(1)).lz4();
    let mut data = good.data.clone();
    // The first token's match offset, pointed before the start of the output.
    let cut = data.len() - 8;
    data.truncate(cut);
    let bad = Packet { encoding: good.encoding, ..Packet::new(4, Section::Memory, 0x1000, data) };
    rejected_then_resent("session-lz4-corrupt", bad, 4);
}

#[test]
fn a_block_from_a_client_not_granted_compression_is_dropped() {
    let dir = TestDir::new("session-lz4-not-granted");
    let mut s = start(&dir, Verdict::DumpAll);
    let p = Packet::new(0, Section::Memory, 0x1000, page(1)).lz4();
    assert_eq!(p.send(&mut s, 0).dropped, Some(DropReason::BadBlock));
    assert_eq!(s.counts.memory_bytes, 0);
}

#[test]
fn an_unknown_encoding_is_a_bad_field() {
    let dir = TestDir::new("session-lz4-encoding");
    let mut s = start_for(&dir, Verdict::DumpAll, crash(2), compressing_client());
    let p = Packet::new(0, Section::Memory, 0x1000, page(1));
    let mut payload = p.payload();
    payload[1] = 7;
    let d = Data { section: p.section, offset: p.offset, data: &p.data };
    let out = s.on_data(peer(), 0, 0, &d, &payload, Instant::now());
    assert_eq!(out.dropped, Some(DropReason::BadField));
}
