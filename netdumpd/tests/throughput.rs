//! How fast the server takes a dump over loopback, with a plain sliding-window sender.
//! Not run by default (it measures, it does not check behaviour):
//! `cargo test --release -p netdumpd --test throughput -- --ignored --nocapture`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use netdump_core::proto::{Ack, FinishStatus, MemoryRange, Message, MessageType, RangeTable, flags};

#[test]
#[ignore = "a measurement; run it explicitly"]
fn loopback_throughput_of_a_64_mib_dump() {
    const WINDOW: u32 = 256;
    let dir = TempDir::new("throughput");
    let server = TestServer::start(dir.path());
    let mut m = Machine::small("bench");
    m.ranges = vec![MemoryRange { phys_start: 0x100000, length: 64 << 20, virt_start: 0x100000 }];
    let c = TestClient::new(server.addr, 0xbe9c);
    c.hello(&m.name);
    let crash = m.crash();
    let crash = netdump_core::proto::Crash { ranges: RangeTable::Ranges(&m.ranges), ..crash };
    c.crash(&crash, 1);
    let stream = m.stream(1432);
    let packets: Vec<Vec<u8>> = stream.iter().map(|p| c.data_packet(p, 0)).collect();
    let last_flagged: Vec<Vec<u8>> = stream.iter().map(|p| c.data_packet(p, flags::ACK_REQUEST)).collect();
    let total = stream.len() as u32;

    let start = Instant::now();
    let mut cumulative = 0u32;
    let mut next = 0u32;
    let mut acked_ahead = BTreeSet::new();
    let mut retransmissions = 0u64;
    c.socket.set_nonblocking(true).unwrap();
    let mut last_progress = Instant::now();
    let mut buf = [0u8; 2048];
    while cumulative < total {
        while next < total && next < cumulative + WINDOW {
            let p = if next + 1 == cumulative + WINDOW || next + 1 == total { &last_flagged } else { &packets };
            c.send_raw(&p[next as usize]);
            next += 1;
        }
        let mut progressed = false;
        while let Ok((n, _)) = c.socket.recv_from(&mut buf) {
            let Ok((h, payload)) = netdump_core::proto::Header::parse(&buf[..n]) else { continue };
            if h.msg_type != MessageType::Ack {
                continue;
            }
            if let Ok(Message::Ack(a)) = Message::parse(&h, payload) {
                if h.seq > cumulative {
                    cumulative = h.seq;
                    progressed = true;
                }
                acked_ahead =
                    (cumulative..next).filter(|s| Ack { stop: a.stop, bitmap: a.bitmap }.covers(h.seq, *s)).collect();
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(20) {
            for s in cumulative..next {
                if !acked_ahead.contains(&s) {
                    c.send_raw(&last_flagged[s as usize]);
                    retransmissions += 1;
                }
            }
            last_progress = Instant::now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    c.socket.set_nonblocking(false).unwrap();
    let answer = c.finish(total, &finish_for(&stream, m.zero_pages()));
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(answer.status, FinishStatus::Verified);
    let bytes: u64 = stream.iter().map(|p| p.data.len() as u64).sum();
    println!(
        "{} packets, {:.1} MB in {secs:.2} s: {:.0} MB/s, {retransmissions} retransmissions",
        total,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    );
    let info = read_info(&server.dumps()[0]);
    println!("server: {} MB/s", info["throughput_mb_s"]);
}
