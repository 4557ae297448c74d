//! netdumpd under fuzzing: a fresh server (in a scratch directory) per input, fed its
//! records as datagrams from four source addresses; every reply it sends must be a
//! well-formed server message.
//!
//! A record's tag says how to shape its bytes before they are sent:
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | which of the four sources sends it |
//! | 2 | recompute the CRC (so mutations reach past it) |
//! | 3 | set `payload_len` from the datagram's length |
//! | 4–5 | 1–3: write that fixed cookie into the header (0: leave the bytes) |
//! | 6 | [`server_packets_sealed`] only: seal the packet (the record's header, its payload as
//! plaintext) with the transport of the cookie slot's session, under its next nonce |
//!
//! [`server_packets_sealed`] runs a server holding a key, with each of the three cookies
//! registered encrypted (a real Noise handshake) before the records: their packets reach
//! the encrypted receive path (unsealed, forged, replayed; sealed right with bit 6, so
//! that mutations reach the parser past the tag), and every sealed reply must open with
//! its session's keys under a nonce never used before.

use std::net::{SocketAddr, UdpSocket};

use netdump_core::crypto::{NkInitiator, PublicKey, ReplayWindow, Transport, open_packet};
use netdump_core::proto::{
    AddressTable, Crash, CrashKind, Data, Finish, Header, Hello, HelloAckV2, HelloTerms, HelloV2, MAX_PROLOGUE,
    MemoryRange, Message, MessageType, RangeTable, Section, StreamCrc, TextMessage, abort_reason, features,
};
use netdumpd::{Server, ServerConfig};

use crate::input::{Records, encode, seal, seal_record};
use crate::scratch::Scratch;

/// Cookies the records can name by slot, so that a session's packets agree.
pub const COOKIES: [u64; 3] = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 0x9999_aaaa_bbbb_cccc];
/// Records of one input beyond this are ignored (each is a datagram with file I/O).
const MAX_RECORDS: usize = 256;

/// The four sources: sockets of ours, so that the server's replies come back to be checked.
struct Sources([UdpSocket; 4]);

impl Sources {
    fn new() -> Self {
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind a source socket");
            s.set_nonblocking(true).expect("non-blocking");
            s
        };
        Sources([bind(), bind(), bind(), bind()])
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.0[i % 4].local_addr().expect("bound")
    }

    /// Reads every reply waiting and checks that it is a server message that parses; a
    /// sealed one must open with its session's keys, under a nonce not seen before.
    fn check_replies(&self, sessions: &mut [Option<Session>; 3]) {
        let mut buf = [0u8; 9000];
        let mut plain = [0u8; 9000];
        for s in &self.0 {
            while let Ok(n) = s.recv(&mut buf) {
                let reply = &buf[..n];
                let (h, payload) =
                    Header::parse(reply).unwrap_or_else(|e| panic!("netdumpd sent a bad packet ({e}): {reply:02x?}"));
                assert!(!h.msg_type.from_client(), "netdumpd sent a client message: {h:?}");
                let payload = if h.is_sealed() {
                    let slot = COOKIES.iter().position(|c| *c == h.cookie);
                    let session = slot
                        .and_then(|i| sessions[i].as_mut())
                        .unwrap_or_else(|| panic!("netdumpd sealed a packet for a cookie without a session: {h:?}"));
                    match open_packet(&session.transport, &mut session.replay, reply, &mut plain) {
                        Ok((_, p)) => p,
                        Err(e) => panic!("netdumpd sent a sealed packet that does not open ({e:?}): {h:?}"),
                    }
                } else {
                    payload
                };
                if let Err(e) = Message::parse(&h, payload) {
                    panic!("netdumpd sent a {:?} that does not parse ({e}): {reply:02x?}", h.msg_type);
                }
            }
        }
    }
}

thread_local! {
    static SOURCES: Sources = Sources::new();
}

/// Shapes a record's bytes by its tag (see the module documentation).
fn shape(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut p = bytes.to_vec();
    let slot = usize::from((tag >> 4) & 3);
    if slot != 0 && p.len() >= 16 {
        p[8..16].copy_from_slice(&COOKIES[slot - 1].to_be_bytes());
    }
    seal(&mut p, tag & 0x08 != 0, tag & 0x04 != 0);
    p
}

/// The target: one fresh server, the input's datagrams, every reply checked.
pub fn server_packets(data: &[u8]) {
    run(data, false);
}

/// The target with a server holding a key and the three cookies registered encrypted.
pub fn server_packets_sealed(data: &[u8]) {
    run(data, true);
}

/// The server's private key in the sealed target.
const SERVER_SECRET: [u8; 32] = [0x6b; 32];

/// A client's side of an encrypted session with the server under test.
struct Session {
    transport: Transport,
    /// Nonces of the server's packets seen.
    replay: ReplayWindow,
}

/// Registers cookie slot `slot` (1..=3) with an encrypted HELLO from source 0: a real
/// handshake, whose keys the records of that slot are sealed with.
fn register_sealed(server: &mut Server, sources: &Sources, slot: u8) -> Session {
    let cookie = COOKIES[usize::from(slot) - 1];
    let public = PublicKey(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(SERVER_SECRET)).to_bytes());
    let name = format!("fuzz-node-{slot}");
    let hello = |handshake| HelloV2 {
        hello: node_hello(slot, &name),
        features: features::ENCRYPTED,
        key_id: public.key_id(),
        handshake,
    };
    let mut prologue = [0u8; MAX_PROLOGUE];
    let n = hello(&[]).prologue(cookie, &mut prologue);
    let mut initiator = NkInitiator::new(&public, [slot; 32], &prologue[..n]);
    let mut m1 = [0u8; 48];
    initiator.write_message_1(&[], &mut m1).expect("message 1");
    let h = hello(&m1);
    server.handle_datagram(&packet_v2(MessageType::Hello, cookie, 0, h.wire_len(), |p| h.emit(p)), sources.addr(0));
    let mut buf = [0u8; 2048];
    let n = sources.0[0].recv(&mut buf).expect("a HELLO_ACK to the registration");
    let (hd, payload) = Header::parse(&buf[..n]).expect("a HELLO_ACK");
    let ack = HelloAckV2::parse(payload).expect("a HELLO_ACK v2");
    let mut terms = [0u8; HelloTerms::WIRE_LEN];
    let established = initiator.read_message_2(ack.handshake, &mut terms).expect("message 2 verifies");
    assert_eq!(hd.cookie, cookie);
    Session { transport: established.transport, replay: ReplayWindow::new() }
}

/// Runs an input; returns the status of each dump it left, by directory name.
fn run(data: &[u8], sealed: bool) -> Vec<String> {
    let dir = Scratch::new("server");
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        dump_dir: dir.path().to_path_buf(),
        min_free_bytes: 0,
        max_sessions: 4,
        ..ServerConfig::default()
    };
    if sealed {
        let key = dir.path().join("server.key");
        let hex: String = SERVER_SECRET.iter().map(|b| format!("{b:02x}")).collect();
        netdumpd::files::write_private(&key, hex.as_bytes()).expect("write the key");
        config.encryption.private_keys = vec![key];
        config.limits.hellos_per_source_per_second = 1 << 20;
    }
    let mut server = Server::bind(config).expect("netdumpd binds a scratch directory");
    SOURCES.with(|sources| {
        let mut sessions: [Option<Session>; 3] = [None, None, None];
        sources.check_replies(&mut sessions); // left over from an input that ended early
        if sealed {
            for slot in 1..=3u8 {
                sessions[usize::from(slot) - 1] = Some(register_sealed(&mut server, sources, slot));
            }
        }
        for (tag, bytes) in Records::new(data).take(MAX_RECORDS) {
            let mut datagram = shape(tag, bytes);
            let slot = usize::from((tag >> 4) & 3);
            if sealed
                && tag & 0x40 != 0
                && slot != 0
                && datagram.len() >= netdump_core::proto::HEADER_LEN
                && let Some(s) = sessions[slot - 1].as_mut()
            {
                datagram = seal_record(&mut s.transport, &datagram);
            }
            server.handle_datagram(&datagram, sources.addr(usize::from(tag & 3)));
            sources.check_replies(&mut sessions);
        }
    });
    let mut dumps: Vec<String> = std::fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        // Directories only: not the per-client `last` links to them.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| std::fs::read(e.path().join("info.json")).ok())
        .filter_map(|info| serde_json::from_slice::<serde_json::Value>(&info).ok())
        .map(|info| info["status"].as_str().unwrap_or("").to_string())
        .collect();
    dumps.sort();
    dumps
}

/// A whole version-2 packet from a client, unsealed.
fn packet_v2(t: MessageType, cookie: u64, seq: u32, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; netdump_core::proto::HEADER_LEN + len];
    let n = Header::v2(t, 0, cookie, seq).emit(&mut buf, len, fill).expect("sized buffer");
    buf.truncate(n);
    buf
}

/// A whole packet from a client, as the protocol builds it.
fn packet(t: MessageType, cookie: u64, seq: u32, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; netdump_core::proto::HEADER_LEN + len];
    let n = Header::v1(t, 0, cookie, seq).emit(&mut buf, len, fill).expect("sized buffer");
    buf.truncate(n);
    buf
}

/// The HELLO fields of the fuzz client in cookie slot `slot`.
fn node_hello(slot: u8, name: &str) -> Hello<'_> {
    Hello {
        mac: [2, 0, 0, 0, 0, slot],
        mtu: 1500,
        ip: [10, 0, 2, 15],
        page_size: 4096,
        memory_bytes: 8192,
        name: name.as_bytes(),
    }
}

/// A client's whole conversation: HELLO, CRASH, DATA (log, registers, memory), FINISH;
/// from source `src`, cookie slot `slot`. With `abort`, it ends in ABORT instead.
fn conversation(src: u8, slot: u8, abort: bool) -> Vec<(u8, Vec<u8>)> {
    let cookie = COOKIES[usize::from(slot) - 1];
    let tag = src | (slot << 4);
    let name = format!("fuzz-node-{slot}");
    let hello = node_hello(slot, &name);
    let ranges = [MemoryRange { phys_start: 0x10_0000, length: 8192, virt_start: 0xffff_8000_0010_0000 }];
    let log = b"fuzzed console\n";
    let crash = Crash {
        kind: CrashKind::Panic,
        vector: 0,
        cpu_count: 1,
        crashing_cpu: 0,
        error_code: 0,
        fault_address: 0,
        page_size: 4096,
        machine: netdump_core::proto::Machine::X86_64,
        log_len: log.len() as u64,
        ranges: RangeTable::Ranges(&ranges),
        frames: AddressTable::Addresses(&[0xffff_8000_0010_2000]),
        message: b"fuzz panic",
    };
    let mut records = vec![
        (tag, packet(MessageType::Hello, cookie, 0, hello.wire_len(), |p| hello.emit(p))),
        (tag, packet(MessageType::Crash, cookie, 0, crash.wire_len(), |p| crash.emit(p))),
    ];
    let regs = netdump_core::proto::RegisterRecord { rip: 0xffff_8000_0010_2000, ..Default::default() }.to_bytes();
    let page: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 | 1).collect();
    let chunks: Vec<(Section, u64, &[u8])> = vec![
        (Section::Log, 0, &log[..]),
        (Section::Registers, 0, &regs[..]),
        (Section::Memory, 0x10_0000, &page[..1400]),
        (Section::Memory, 0x10_0000 + 1400, &page[1400..]),
    ];
    let mut crc = StreamCrc::new();
    let mut bytes = 0;
    for (seq, (section, offset, data)) in chunks.iter().enumerate() {
        let d = Data { section: *section, offset: *offset, data };
        let p = packet(MessageType::Data, cookie, seq as u32, d.wire_len(), |b| d.emit(b));
        crc.add(crc32fast::hash(&p[netdump_core::proto::HEADER_LEN..]));
        bytes += data.len() as u64;
        records.push((tag, p));
    }
    if abort {
        let a = TextMessage { code: abort_reason::NIC_ERROR, text: b"fuzz" };
        records.push((tag, packet(MessageType::Abort, cookie, 0, a.wire_len(), |p| a.emit(p))));
    } else {
        let f = Finish { total_bytes: bytes, stream_crc: crc.value(), flags: 0, zero_pages: 1, retransmissions: 0 };
        records.push((tag, packet(MessageType::Finish, cookie, chunks.len() as u32, f.wire_len(), |p| f.emit(p))));
    }
    records
}

/// Seeds of the sealed target: the conversation after the HELLO (the harness registered
/// the cookies encrypted), sealed; the same in clear (dropped: unsealed); and sealed twice
/// over (every second copy a replay).
pub fn seeds_sealed() -> Vec<(&'static str, Vec<u8>)> {
    let sealed: Vec<(u8, Vec<u8>)> =
        conversation(0, 1, false).into_iter().skip(1).map(|(t, p)| (t | 0x40, p)).collect();
    let clear: Vec<(u8, Vec<u8>)> = conversation(0, 2, false).into_iter().skip(1).collect();
    vec![("complete-dump", encode(&sealed)), ("in-clear", encode(&clear))]
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let one = conversation(0, 1, false);
    let mut interleaved = Vec::new();
    for (a, b) in conversation(0, 1, false).into_iter().zip(conversation(1, 2, true)) {
        interleaved.push(a);
        interleaved.push(b);
    }
    // The same dump, its packets also arriving from another source (a spoofer).
    let spoofed: Vec<(u8, Vec<u8>)> =
        one.iter().flat_map(|(t, p)| [(*t, p.clone()), ((*t & !3) | 3, p.clone())]).collect();
    vec![
        ("complete-dump", encode(&one)),
        ("two-clients-one-aborts", encode(&interleaved)),
        ("spoofed-copies", encode(&spoofed)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        seeds().into_iter().find(|(n, _)| *n == name).map(|(_, d)| d).unwrap()
    }

    #[test]
    fn the_seeds_reach_the_end_of_a_dump() {
        assert_eq!(run(&seed("complete-dump"), false), ["complete"]);
        assert_eq!(run(&seed("two-clients-one-aborts"), false), ["complete", "incomplete"]);
        // The copies from another source are dropped; the dump is whole.
        assert_eq!(run(&seed("spoofed-copies"), false), ["complete"]);
    }

    #[test]
    fn the_sealed_seeds_reach_the_end_of_an_encrypted_dump_and_clear_packets_do_not() {
        let sealed = seeds_sealed();
        assert_eq!(run(&sealed[0].1, true), ["complete"]);
        assert!(run(&sealed[1].1, true).is_empty(), "no dump from packets in clear");
    }

    #[test]
    fn shaping_fixes_cookie_length_and_crc() {
        let mut p = seed("complete-dump")[3..].to_vec();
        p.truncate(60);
        let shaped = shape(0x04 | 0x08 | 0x20, &p);
        let (h, _) = Header::parse(&shaped).unwrap();
        assert_eq!(h.cookie, COOKIES[1]);
    }
}
