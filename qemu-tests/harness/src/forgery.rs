//! What a rogue sender aims at a dump in progress: forged server messages for the client
//! and forged client messages for netdumpd. Each forgery would hurt if it were believed
//! (stop the dump, end it with an error, acknowledge data the server never got, write
//! junk into the image, abort it), so a dump that still verifies bit for bit shows that
//! every one was dropped.

use crate::proxy::{forge, Forger};
use netdump_core::proto::{
    error_code, abort_reason, Ack, AddressTable, Crash, CrashKind, Data, Finish, FinishAck, FinishStatus, AfterDump,
    Header, MemoryRange, MessageType, RangeTable, Section, TextMessage,
};
use netdump_test_pattern::Pattern;

/// How a forgery travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the client, through the proxy's path into QEMU, from `Forger`.
    ToClient(Forger),
    /// To netdumpd from the rogue's own socket.
    ToServer,
    /// To netdumpd from the client's own address and port (a forger who spoofs it).
    ToServerAsClient,
}

/// One forged datagram.
#[derive(Debug, Clone)]
pub struct Forgery {
    pub what: &'static str,
    pub route: Route,
    pub bytes: Vec<u8>,
}

/// The cookies a rogue knows, and where the live dump is.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The cookie of the dump in progress (sniffed from the wire).
    pub live: u64,
    /// The cookie of a dump that already finished.
    pub replayed: u64,
    /// A cookie no client holds.
    pub stranger: u64,
    /// One more than the highest DATA `seq` the client has sent so far.
    pub next_seq: u32,
    /// The pattern the live client's RAM holds (junk aimed into it must never land).
    pub pattern: Pattern,
}

fn header(msg_type: MessageType, cookie: u64, seq: u32) -> Header {
    Header { msg_type, flags: 0, cookie, seq }
}

fn ack(cookie: u64, cumulative: u32, stop: bool) -> Vec<u8> {
    let a = Ack { stop, bitmap: &[] };
    forge(header(MessageType::Ack, cookie, cumulative), a.wire_len(), |p| a.emit(p))
}

fn error(cookie: u64) -> Vec<u8> {
    let e = TextMessage { code: error_code::SESSION_CLOSED, text: b"forged" };
    forge(header(MessageType::Error, cookie, 0), e.wire_len(), |p| e.emit(p))
}

fn finish_ack(cookie: u64) -> Vec<u8> {
    let f = FinishAck { status: FinishStatus::Verified, action: AfterDump::Halt };
    forge(header(MessageType::FinishAck, cookie, 0), f.wire_len(), |p| f.emit(p))
}

fn data(cookie: u64, seq: u32, section: Section, offset: u64, len: usize) -> Vec<u8> {
    let junk = vec![0xEE; len];
    let d = Data { section, offset, data: &junk };
    forge(header(MessageType::Data, cookie, seq), d.wire_len(), |p| d.emit(p))
}

fn crash(cookie: u64, pattern: &Pattern) -> Vec<u8> {
    let ranges = [MemoryRange { phys_start: pattern.base, length: pattern.len, virt_start: pattern.base }];
    let c = Crash {
        kind: CrashKind::Panic,
        vector: 0,
        cpu_count: 1,
        crashing_cpu: 0,
        error_code: 0,
        fault_address: 0,
        page_size: 4096,
        log_len: 0,
        ranges: RangeTable::Ranges(&ranges),
        frames: AddressTable::Addresses(&[]),
        message: b"forged crash",
    };
    forge(header(MessageType::Crash, cookie, 0), c.wire_len(), |p| c.emit(p))
}

fn finish(cookie: u64, packets: u32) -> Vec<u8> {
    let f = Finish { total_bytes: 0, stream_crc: 0, flags: 0, zero_pages: 0, retransmissions: 0 };
    forge(header(MessageType::Finish, cookie, packets), f.wire_len(), |p| f.emit(p))
}

fn abort(cookie: u64) -> Vec<u8> {
    let a = TextMessage { code: abort_reason::NIC_ERROR, text: b"forged abort" };
    forge(header(MessageType::Abort, cookie, 0), a.wire_len(), |p| a.emit(p))
}

/// Forged server messages for the client.
pub fn to_client(t: &Target) -> Vec<Forgery> {
    let wrong = t.live ^ 0x0100_0000_0000_0001;
    let f = |what, forger, bytes| Forgery { what, route: Route::ToClient(forger), bytes };
    vec![
        f("STOP with a wrong cookie", Forger::ServerPort, ack(wrong, 0, true)),
        f("ERROR with a wrong cookie", Forger::ServerPort, error(wrong)),
        f("ACK of everything with a wrong cookie", Forger::ServerPort, ack(wrong, t.next_seq, false)),
        f("STOP from another port", Forger::OtherPort, ack(t.live, 0, true)),
        f("ACK of everything from another port", Forger::OtherPort, ack(t.live, t.next_seq, false)),
        f("ERROR from another port", Forger::OtherPort, error(t.live)),
        f("FINISH_ACK from another port", Forger::OtherPort, finish_ack(t.live)),
        f("STOP from another address", Forger::OtherAddress, ack(t.live, 0, true)),
        f("ACK of everything from another address", Forger::OtherAddress, ack(t.live, t.next_seq, false)),
    ]
}

/// Forged client messages for netdumpd.
pub fn to_server(t: &Target) -> Vec<Forgery> {
    let p = &t.pattern;
    let into_pattern = p.base + p.len / 2;
    // Far beyond any RAM a test client announces.
    let beyond_map = 1 << 40;
    let f = |what, route, bytes| Forgery { what, route, bytes };
    let rogue = Route::ToServer;
    vec![
        f("CRASH from a stranger", rogue, crash(t.stranger, p)),
        f("DATA from a stranger", rogue, data(t.stranger, 0, Section::Memory, into_pattern, 1024)),
        f("FINISH from a stranger", rogue, finish(t.stranger, 0)),
        f("ABORT from a stranger", rogue, abort(t.stranger)),
        f("CRASH replayed from a finished dump", rogue, crash(t.replayed, p)),
        f("DATA replayed into a finished dump", rogue, data(t.replayed, 0, Section::Memory, into_pattern, 1024)),
        f("ABORT replayed into a finished dump", rogue, abort(t.replayed)),
        f("DATA into the live dump from another address", rogue, data(t.live, t.next_seq + 8, Section::Memory, into_pattern, 1024)),
        f("LOG into the live dump from another address", rogue, data(t.live, t.next_seq + 9, Section::Log, 0, 64)),
        f("ABORT of the live dump from another address", rogue, abort(t.live)),
        f("FINISH of the live dump from another address", rogue, finish(t.live, t.next_seq)),
        f("CRASH of the live dump from another address", rogue, crash(t.live, p)),
        f(
            "DATA beyond the memory map from the client's address",
            Route::ToServerAsClient,
            data(t.live, t.next_seq + 16, Section::Memory, beyond_map, 1024),
        ),
        f(
            "LOG beyond the announced log from the client's address",
            Route::ToServerAsClient,
            data(t.live, t.next_seq + 17, Section::Log, 1 << 30, 64),
        ),
    ]
}

/// What [`Rogue::attack`] sent.
#[derive(Debug, Clone)]
pub struct Attack {
    pub target: Target,
    pub sent: Vec<(&'static str, Route)>,
    pub finished_at: std::time::Instant,
}

/// A rogue sender on the host that watches a dump through the proxy and forges packets
/// into it in both directions.
pub struct Rogue<'a> {
    pub proxy: &'a crate::proxy::FaultProxy,
    /// netdumpd's own address (the rogue sends straight to it).
    pub server: std::net::SocketAddr,
    pub replayed: u64,
    pub pattern: Pattern,
    /// Which forgers can reach the client (under QEMU all; over the host NIC, which
    /// shows every sender as the gateway, not `OtherAddress`).
    pub forgers: &'a [Forger],
}

impl Rogue<'_> {
    /// Waits (at most `patience`) until the client has sent `after_data` DATA packets,
    /// then sends every forgery `rounds` times, `gap` apart.
    pub fn attack(&self, after_data: usize, rounds: usize, gap: std::time::Duration, patience: std::time::Duration) -> anyhow::Result<Attack> {
        use crate::proxy::{Direction, Fate};
        use anyhow::Context;
        self.proxy.wait_for(Direction::ToServer, MessageType::Data, after_data, patience)?;
        let events = self.proxy.events();
        let data: Vec<_> = events
            .iter()
            .filter(|e| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data) && e.fate != Fate::Injected)
            .filter_map(|e| e.seen.header.map(|h| (e.seen.client, h)))
            .collect();
        let (client, live) = data.last().map(|(c, h)| (*c, h.cookie)).context("no DATA seen")?;
        let next_seq = data.iter().map(|(_, h)| h.seq).max().unwrap_or(0) + 1;
        let target = Target { live, replayed: self.replayed, stranger: 0x5757_5757_dead_beef, next_seq, pattern: self.pattern };
        let rogue = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let forgeries: Vec<Forgery> = to_client(&target)
            .into_iter()
            .filter(|f| !matches!(f.route, Route::ToClient(fg) if !self.forgers.contains(&fg)))
            .chain(to_server(&target))
            .collect();
        for _ in 0..rounds {
            for f in &forgeries {
                match f.route {
                    Route::ToClient(forger) => self.proxy.inject_to_client(client, &f.bytes, forger)?,
                    Route::ToServer => {
                        rogue.send_to(&f.bytes, self.server)?;
                    }
                    Route::ToServerAsClient => self.proxy.inject_to_server(client, &f.bytes)?,
                }
            }
            std::thread::sleep(gap);
        }
        let sent = forgeries.iter().map(|f| (f.what, f.route)).collect();
        Ok(Attack { target, sent, finished_at: std::time::Instant::now() })
    }
}
