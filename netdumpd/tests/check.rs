//! The per-packet integrity check (feature XXH64_CHECK, docs/PROTOCOL.md "Integrity
//! checks"): the real client (netdump-core over `host::UdpSocketNic`) against a real
//! netdumpd that grants it, against servers that do not, and a DATA packet whose check
//! fails on the way.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::core_reader::Core;
use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::memory::{MemoryMap, MemoryRange};
use netdump_core::proto::{
    Check, HEADER_LEN, Header, HelloAck, HelloAckV2, HelloStatus, HelloTerms, Message, MessageType, REGISTERS_VALID,
    RegisterRecord, TextMessage, VERSION_1, VERSION_2, error_code, features, flags,
};
use netdump_core::{CrashBuffers, CrashInfo, DumpReport, Netdump};
use netdumpd::DropReason;

/// Ethernet, IPv4 and UDP headers: where the protocol's header starts in a frame.
const UDP_PAYLOAD_AT: usize = 14 + 20 + 8;

/// 512 KiB of RAM: every 6th page zero, the others a byte pattern.
impl Ram {
    fn new() -> Self {
        let mut v = vec![0u8; 512 << 10];
        for (i, b) in v.iter_mut().enumerate() {
            if (i / 4096) % 6 != 5 {
                *b = ((i * 13 + i / 4096) % 253) as u8 | 2;
            }
        }
        Ram(v)
    }
}

fn config(server_port: u16, name: &str) -> Config {
    Config {
        timeouts: Timeouts { silence_timeout_us: 3_000_000, ..Timeouts::default() },
        ..Config::new(guest_net(server_port), ClientName::new(name).unwrap())
    }
}

fn install(nic: UdpSocketNic, port: u16, name: &str) -> Netdump<UdpSocketNic, SystemClock> {
    let ram_len = 512 << 10;
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram_len, virt_start: RAM_BASE }]).unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut CounterRng(0x77), config(port, name), buffers, map)
        .expect("install");
    // Raw DATA, one packet per 1432 bytes of memory: the check is what these tests look
    // at (compression, granted by netdumpd, would send this RAM as far fewer blocks).
    nd.set_compression(false);
    nd
}

/// Dumps `ram` and checks that it arrived bit for bit.
fn dump_and_compare(nd: &mut Netdump<UdpSocketNic, SystemClock>, server: &TestServer, ram: &Ram) -> DumpReport {
    let regs = RegisterRecord { rip: 0xffff_8000_0000_1000, flags: REGISTERS_VALID, ..Default::default() };
    let report = nd.dump(&CrashInfo::panic(0, b"check test", &[]), &[regs], ram, None).expect("the dump is verified");
    let dumps = server.dumps();
    let dir = dumps.last().expect("a dump directory");
    let bytes = std::fs::read(dir.join("vmcore")).expect("vmcore");
    assert_eq!(Core::new(&bytes).read_virt(RAM_BASE, ram.0.len()), &ram.0[..], "memory differs");
    report
}

/// The protocol packet in a transmitted frame, if it is one.
fn packet_of(frame: &[u8]) -> Option<&[u8]> {
    let p = frame.get(UDP_PAYLOAD_AT..)?;
    (p.len() >= HEADER_LEN && p[..2] == [0x4e, 0x44]).then_some(p)
}

/// A recorder of the DATA packets' header flags as the client sent them.
fn record_data_flags(nic: &mut UdpSocketNic) -> Arc<Mutex<Vec<u16>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    nic.tx_filter = Some(Box::new(move |frame| {
        if let Some((h, _)) = packet_of(frame).and_then(|p| Header::parse(p).ok())
            && h.msg_type == MessageType::Data
        {
            s.lock().unwrap().push(h.flags);
        }
        true
    }));
    seen
}

#[test]
fn a_server_that_grants_xxh64_gets_every_data_packet_with_it_and_verifies_the_dump() {
    let dir = TempDir::new("check-granted");
    let server = TestServer::start(dir.path());
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x41], 1500, server.addr).unwrap();
    let seen = record_data_flags(&mut nic);
    let mut nd = install(nic, server.addr.port(), "check-xxh64");
    assert_eq!(nd.protocol_version(), VERSION_2);
    assert_eq!(nd.granted_features() & features::XXH64_CHECK, features::XXH64_CHECK);
    assert_eq!(nd.integrity_check(), Check::Xxh64);
    let ram = Ram::new();
    dump_and_compare(&mut nd, &server, &ram);
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 300, "{} DATA packets", seen.len());
    assert!(seen.iter().all(|f| f & flags::CHECK_XXH64 != 0), "a DATA packet without the XXH64 check");
    assert_eq!(server.stats.snapshot().dropped(DropReason::BadCrc), 0);
}

#[test]
fn a_client_that_chooses_crc32_sends_crc32_and_the_dump_verifies() {
    let dir = TempDir::new("check-crc32");
    let server = TestServer::start(dir.path());
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x42], 1500, server.addr).unwrap();
    let seen = record_data_flags(&mut nic);
    let mut nd = install(nic, server.addr.port(), "check-crc32");
    assert!(nd.set_integrity_check(Check::Crc32));
    assert_eq!(nd.integrity_check(), Check::Crc32);
    dump_and_compare(&mut nd, &server, &Ram::new());
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|f| f & flags::CHECK_XXH64 == 0), "CRC-32 chosen, XXH64 sent");
}

/// A UDP responder on the loopback: answers each datagram with what `answer` makes,
/// until dropped.
struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    fn spawn(answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 9000];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && let Some(reply) = answer(&buf[..n])
                {
                    socket.send_to(&reply, from).unwrap();
                }
            }
        });
        FakeServer { port, stop, thread: Some(thread) }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn reply(version: u8, cookie: u64, seq: u32, m: Message<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = m.emit_packet(version, 0, cookie, seq, &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn a_version_2_server_that_grants_nothing_gets_crc32() {
    // A netdumpd from before the feature: registers a version-2 client, grants no feature.
    let asked = Arc::new(Mutex::new(None));
    let a = asked.clone();
    let old = FakeServer::spawn(move |p| {
        let (h, payload) = Header::parse(p).ok()?;
        if let Ok(Message::HelloV2(hello)) = Message::parse(&h, payload) {
            *a.lock().unwrap() = Some(hello.features);
        }
        let terms = HelloTerms { status: HelloStatus::Registered, max_payload: 1472, features: 0, required: 0 };
        reply(VERSION_2, h.cookie, h.seq, Message::HelloAckV2(HelloAckV2 { terms, handshake: &[] }))
    });
    let nic =
        UdpSocketNic::new([2, 0, 0, 0, 0, 0x43], 1500, format!("127.0.0.1:{}", old.port).parse().unwrap()).unwrap();
    let mut nd = install(nic, old.port, "old-v2-server");
    let asked = asked.lock().unwrap().expect("a HELLO v2");
    assert_eq!(asked & features::XXH64_CHECK, features::XXH64_CHECK, "the client asks for the check");
    assert_eq!((nd.protocol_version(), nd.granted_features()), (VERSION_2, 0));
    assert_eq!(nd.integrity_check(), Check::Crc32);
    assert!(!nd.set_integrity_check(Check::Xxh64), "XXH64 not granted, yet chosen");
    assert_eq!(nd.integrity_check(), Check::Crc32);
}

#[test]
fn a_version_1_server_gets_crc32() {
    let old = FakeServer::spawn(|p| match Header::parse(p) {
        Ok((h, _)) if h.version == VERSION_1 && h.msg_type == MessageType::Hello => {
            let ack = HelloAck { status: HelloStatus::Registered, max_payload: 1472 };
            reply(VERSION_1, h.cookie, h.seq, Message::HelloAck(ack))
        }
        _ => {
            let e = TextMessage { code: error_code::UNSUPPORTED_VERSION, text: b"version 1 only" };
            reply(VERSION_1, 0, Header::peek_seq(p).unwrap_or(0), Message::Error(e))
        }
    });
    let nic =
        UdpSocketNic::new([2, 0, 0, 0, 0, 0x44], 1500, format!("127.0.0.1:{}", old.port).parse().unwrap()).unwrap();
    let nd = install(nic, old.port, "old-v1-server");
    assert_eq!((nd.protocol_version(), nd.granted_features(), nd.integrity_check()), (VERSION_1, 0, Check::Crc32));
}

#[test]
fn a_data_packet_whose_xxh64_check_fails_is_dropped_and_retransmitted() {
    let dir = TempDir::new("check-flip");
    let server = TestServer::start(dir.path());
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x45], 1500, server.addr).unwrap();
    // Flips one payload bit of the first send of DATA 5, 50 and 200 (the check field is
    // left as the client made it).
    let flipped = Arc::new(Mutex::new(Vec::new()));
    let f = flipped.clone();
    nic.tx_mangle = Some(Box::new(move |frame: &mut [u8]| {
        let Some(p) = frame.get_mut(UDP_PAYLOAD_AT..) else { return };
        let Ok((h, _)) = Header::parse(p) else { return };
        if h.msg_type == MessageType::Data
            && [5, 50, 200].contains(&h.seq)
            && h.flags & flags::RETRANSMIT == 0
            && h.flags & flags::CHECK_XXH64 != 0
        {
            let at = HEADER_LEN + 100 + h.seq as usize % 700;
            p[at] ^= 0x10;
            f.lock().unwrap().push(h.seq);
        }
    }));
    let mut nd = install(nic, server.addr.port(), "check-flip");
    assert_eq!(nd.integrity_check(), Check::Xxh64);
    let report = dump_and_compare(&mut nd, &server, &Ram::new());
    assert_eq!(*flipped.lock().unwrap(), vec![5, 50, 200]);
    assert_eq!(server.stats.snapshot().dropped(DropReason::BadCrc), 3, "each flipped packet dropped");
    assert!(report.retransmissions >= 3, "{} retransmissions", report.retransmissions);
}
