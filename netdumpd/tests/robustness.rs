//! Bad input: every kind of malformed packet is dropped, counted under its reason,
//! and leaves a dump running beside it untouched; random garbage never stops the server.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::core_reader::Core;
use common::*;
use netdump_core::proto::{
    Finish, FinishStatus, Header, HelloAck, HelloStatus, Message, MessageType, Section, Verdict, error_code,
};
use netdumpd::DropReason;

/// Recomputes a hand-modified packet's CRC (as the protocol defines it, `Header::seal`),
/// so that only the modification is wrong with it.
fn with_crc(mut p: Vec<u8>) -> Vec<u8> {
    netdump_core::proto::Header::set_crc(&mut p);
    p
}

#[test]
fn each_malformed_kind_is_counted_and_a_concurrent_dump_is_undisturbed() {
    let dir = TempDir::new("malformed");
    let server = TestServer::start(dir.path());
    let m = Machine::small("steady");
    let good = TestClient::new(server.addr, 0x600d);
    assert_eq!(good.hello(&m.name).status, HelloStatus::Registered);
    assert_eq!(good.crash(&m.crash(), 1).verdict, Verdict::DumpAll);
    let stream = m.stream(1400);

    // Packets from elsewhere, some using the good client's cookie.
    let evil = TestClient::new(server.addr, 0x600d);
    let stranger = TestClient::new(server.addr, 0xbad);
    let sample = good.data_packet(&stream[0], 0);
    let mut bad: Vec<(DropReason, Vec<u8>)> = Vec::new();
    bad.push((DropReason::Oversized, vec![0x4e; 8973]));
    bad.push((DropReason::Truncated, sample[..23].to_vec()));
    let mut p = sample.clone();
    p[0] = 0x4f;
    bad.push((DropReason::BadMagic, p));
    let mut p = sample.clone();
    p[7] ^= 1; // payload_len
    bad.push((DropReason::LengthMismatch, p));
    let mut p = sample.clone();
    let last = p.len() - 1;
    p[last] ^= 0x80;
    bad.push((DropReason::BadCrc, p));
    let mut p = sample.clone();
    p[3] = 0x42;
    bad.push((DropReason::UnknownType, with_crc(p)));
    let ack = HelloAck { status: HelloStatus::Registered, max_payload: 1 };
    bad.push((DropReason::WrongDirection, evil.packet(MessageType::HelloAck, 0, 0, 8, |b| ack.emit(b))));
    // DATA section 9 with the good cookie: header fine, payload invalid (per session too).
    let mut p = sample.clone();
    p[24] = 9;
    bad.push((DropReason::BadField, with_crc(p)));
    // FINISH cut short.
    bad.push((DropReason::Truncated, evil.packet(MessageType::Finish, 0, 0, 10, |_| {})));
    bad.push((DropReason::UnknownCookie, stranger.data_packet(&stream[0], 0)));
    // The good cookie's DATA from another port.
    bad.push((DropReason::WrongSource, evil.data_packet(&stream[1], 0)));

    // Interleave the good stream with the bad packets.
    for (i, p) in stream.iter().enumerate() {
        good.send_data(p, 0);
        if let Some((_, b)) = bad.get(i) {
            evil.send_raw(b);
        }
    }
    for (_, b) in bad.iter().skip(stream.len()) {
        evil.send_raw(b);
    }
    let expected = |r: DropReason| bad.iter().filter(|(reason, _)| *reason == r).count() as u64;
    server.wait_for("every bad packet counted", |s| s.drops.values().sum::<u64>() == bad.len() as u64);
    let snap = server.stats.snapshot();
    for (reason, _) in &bad {
        assert_eq!(snap.dropped(*reason), expected(*reason), "{reason}: {snap:?}");
    }

    let answer = good.finish(stream.len() as u32, &finish_for(&stream, m.zero_pages()));
    assert_eq!(answer.status, FinishStatus::Verified);
    let dump = &server.dumps()[0];
    let bytes = std::fs::read(dump.join("vmcore")).unwrap();
    let core = Core::new(&bytes);
    for r in &m.ranges {
        for page in (r.phys_start..r.phys_end()).step_by(PAGE as usize) {
            assert_eq!(core.read_phys(page, PAGE as usize), &page_contents(page)[..], "page {page:#x}");
        }
    }
    // The drops that named the good cookie are in its info.json too.
    let info = read_info(dump);
    assert_eq!(info["status"], "complete");
    assert_eq!(info["drops"]["wrong_source"], 1);
    assert_eq!(info["drops"]["bad_field"], 1);
    assert_eq!(info["drops"]["wrong_direction"], 1);
    assert_eq!(info["drops"]["truncated"], 1, "the short FINISH; the short header named no cookie");
}

#[test]
fn another_protocol_version_is_answered_with_an_error_and_counted() {
    let dir = TempDir::new("version");
    let server = TestServer::start(dir.path());
    let c = TestClient::new(server.addr, 0x77);
    let mut p = c.packet(MessageType::Hello, 0, 0x0102_0304, 0, |_| {});
    p[2] = 3;
    c.send_raw(&p);
    let socket: &UdpSocket = &c.socket;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("an ERROR reply");
    let (h, payload) = Header::parse(&buf[..n]).expect("a version-1 packet");
    assert_eq!((h.version, h.msg_type, h.seq), (1, MessageType::Error, 0x0102_0304));
    match Message::parse(&h, payload).unwrap() {
        Message::Error(e) => assert_eq!(e.code, error_code::UNSUPPORTED_VERSION),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.stats.snapshot().dropped(DropReason::UnsupportedVersion), 1);
}

#[test]
fn out_of_range_data_is_dropped_counted_unacknowledged_and_written_nowhere() {
    let dir = TempDir::new("range");
    let server = TestServer::start(dir.path());
    let m = Machine::small("ranger");
    let c = TestClient::new(server.addr, 0x88);
    c.hello(&m.name);
    c.crash(&m.crash(), 1);
    let stray = [
        DataPacket { seq: 0, section: Section::Memory, offset: 0x20000, data: vec![0xee; 64] },
        DataPacket { seq: 1, section: Section::Log, offset: m.log.len() as u64, data: vec![0xee; 1] },
        DataPacket { seq: 2, section: Section::Registers, offset: 512, data: vec![0xee; 8] },
    ];
    for p in &stray {
        c.send_data(p, 0);
    }
    server.wait_for("the strays counted", |s| s.dropped(DropReason::OutOfRange) == 3);
    let dump = &server.dumps()[0];
    assert_eq!(std::fs::metadata(dump.join("log")).unwrap().len(), 0);
    // Their seqs stay free (a forger must not take the seq of a real packet): the real
    // packets that carry them are taken and the dump verifies.
    let real: Vec<DataPacket> = m.stream(1024).into_iter().take(3).collect();
    for p in &real[..2] {
        c.send_data(p, 0);
    }
    assert_eq!(c.data_acked(&real[2]).cumulative, 3);
    assert_eq!(c.finish(3, &finish_for(&real, 0)).status, FinishStatus::Verified);
    let info = read_info(dump);
    assert_eq!(info["drops"]["out_of_range"], 3);
    assert_eq!(info["bytes_received"], real.iter().map(|p| p.data.len()).sum::<usize>());
}

#[test]
fn a_finish_from_a_cookie_without_a_session_is_unknown_session() {
    let dir = TempDir::new("nosession");
    let server = TestServer::start(dir.path());
    let c = TestClient::new(server.addr, 0x99);
    c.hello("lonely");
    let f = Finish { total_bytes: 0, stream_crc: 0, flags: 0, zero_pages: 0, retransmissions: 0 };
    assert_eq!(c.finish(0, &f).status, FinishStatus::UnknownSession);
}

/// xorshift64*, for reproducible garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_garbage_and_mutated_packets_never_stop_the_server() {
    let dir = TempDir::new("fuzz");
    let server = TestServer::start(dir.path());
    let m = Machine::small("fuzzed");
    let c = TestClient::new(server.addr, 0xf022);
    c.hello(&m.name);
    c.crash(&m.crash(), 1);
    let stream = m.stream(1400);
    let crash = m.crash();
    let mut templates = vec![c.packet(MessageType::Crash, 0, 9, crash.wire_len(), |p| crash.emit(p))];
    templates.extend(stream.iter().take(8).map(|p| c.data_packet(p, 0)));
    let f = finish_for(&stream, 0);
    templates.push(c.packet(MessageType::Finish, 0, 3, f.wire_len(), |p| f.emit(p)));

    let noise = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng(0x1234_5678);
    let mut sent = 0u64;
    for round in 0..3000 {
        let mut p = templates[round % templates.len()].clone();
        match rng.next() % 4 {
            // Flip some bits and fix the CRC, so the payload parsers see the damage.
            0 | 1 => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = 24 + (rng.next() as usize) % (p.len() - 24);
                    p[i] ^= 1 << (rng.next() % 8);
                }
                p = with_crc(p);
            }
            // Cut it and fix the length and CRC.
            2 => {
                let keep = 24 + (rng.next() as usize) % (p.len() - 23);
                p.truncate(keep);
                let len = (keep - 24) as u16;
                p[6..8].copy_from_slice(&len.to_be_bytes());
                p = with_crc(p);
            }
            // Pure noise.
            _ => {
                let len = (rng.next() % 200) as usize;
                p = (0..len).map(|_| rng.next() as u8).collect();
            }
        }
        // Half from the client's own address (so they reach its session), half not.
        if round % 2 == 0 {
            c.send_raw(&p);
        } else {
            noise.send_to(&p, server.addr).unwrap();
        }
        sent += 1;
        if round % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Loopback drops datagrams only when the server's queue is full; pacing keeps that rare.
    server.wait_for("the packets seen", |s| s.packets_received >= 2 + sent * 9 / 10);
    // Still serving: a new client can register and announce.
    let fresh = TestClient::new(server.addr, 0xf2e5);
    assert_eq!(fresh.hello("fresh").status, HelloStatus::Registered);
    assert_eq!(fresh.crash(&Machine::small("fresh").crash(), 1).verdict, Verdict::DumpAll);
    // Stopping joins the server thread, which fails the test had it panicked.
    server.stop();
}
