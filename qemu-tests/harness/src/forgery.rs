//! What a rogue sender aims at a dump in progress: forged server messages for the client
//! and forged client messages for netdumpd. Each forgery would hurt if it were believed
//! (stop the dump, end it with an error, acknowledge data the server never got, write
//! junk into the image, abort it), so a dump that still verifies bit for bit shows that
//! every one was dropped.

use crate::proxy::{Action, Direction, Event, Fate, FaultProxy, Forger, Seen, forge};
use netdump_core::proto::{
    Ack, AddressTable, AfterDump, Crash, CrashKind, Data, Finish, FinishAck, FinishStatus, Header, MemoryRange,
    MessageType, RangeTable, Section, TextMessage, abort_reason, error_code,
};
use netdump_test_pattern::Pattern;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    /// One more than the highest DATA `seq` that went to the server so far (while a round
    /// goes out, the client's later packets wait in the proxy: none from `next_seq` on
    /// reaches the server before the forgeries).
    pub next_seq: u32,
    /// The pattern the live client's RAM holds (junk aimed into it must never land).
    pub pattern: Pattern,
}

fn header(msg_type: MessageType, cookie: u64, seq: u32) -> Header {
    Header::v1(msg_type, 0, cookie, seq)
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
        machine: netdump_core::proto::Machine::X86_64,
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
        f(
            "DATA into the live dump from another address",
            rogue,
            data(t.live, t.next_seq + 8, Section::Memory, into_pattern, 1024),
        ),
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
    /// The target of the last round.
    pub target: Target,
    pub sent: Vec<(&'static str, Route)>,
    pub rounds: usize,
    /// CRASHes of unknown cookies the barrier sent (each one more `unknown_cookie` drop).
    pub barriers: u64,
    /// When the server had handled every forgery (the kernel's FINISH went on after it).
    pub finished_at: Instant,
}

/// What the proxy holds back for a [`Rogue`]: flags its [`rule`] reads.
#[derive(Debug)]
pub struct Holds {
    /// Every datagram of the client to the server, while a round of forgeries goes out.
    client: AtomicBool,
    /// The client's FINISH, until the server has handled every forgery: the attack lands
    /// inside the data phase however slowly the host runs.
    finish: AtomicBool,
}

impl Holds {
    /// The FINISH held from the start; the client's other datagrams pass.
    pub fn new() -> Arc<Holds> {
        Arc::new(Holds { client: AtomicBool::new(false), finish: AtomicBool::new(true) })
    }

    /// The proxy rule these flags steer.
    pub fn rule(self: &Arc<Self>) -> impl FnMut(&Seen) -> Action + Send + 'static {
        let h = self.clone();
        move |s: &Seen| {
            let to_server = s.dir == Direction::ToServer;
            let hold = to_server
                && (h.client.load(Ordering::SeqCst) || (s.is(MessageType::Finish) && h.finish.load(Ordering::SeqCst)));
            if hold { Action::Hold } else { Action::Pass }
        }
    }
}

/// Lets go of everything held, whatever way the attack ends.
struct Release<'a>(&'a FaultProxy, &'a Holds);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.1.client.store(false, Ordering::SeqCst);
        self.1.finish.store(false, Ordering::SeqCst);
        self.0.release_held();
    }
}

/// A rogue sender on the host that watches a dump through the proxy and forges packets
/// into it in both directions.
pub struct Rogue<'a> {
    pub proxy: &'a FaultProxy,
    /// Installed as the proxy's rule (by [`Rogue::arm`]) before the kernel boots.
    pub holds: Arc<Holds>,
    /// netdumpd's own address (the rogue sends straight to it).
    pub server: std::net::SocketAddr,
    pub replayed: u64,
    pub pattern: Pattern,
    /// Which forgers can reach the client (under QEMU all; over the host NIC, which
    /// shows every sender as the gateway, not `OtherAddress`).
    pub forgers: &'a [Forger],
}

impl Rogue<'_> {
    /// Installs the rule of [`Rogue::holds`] on the proxy: the client's FINISH waits
    /// for the attack.
    pub fn arm(&self) {
        self.proxy.set_rule(self.holds.rule());
    }

    /// The attack, paced by the dump's events, not by the clock:
    /// - it starts once the client has sent `after_data` DATA packets;
    /// - each round holds the client's datagrams in the proxy, reads the highest DATA
    ///   `seq` that went to the server, sends every forgery (a forged `seq` beyond it is
    ///   new to the server however far the client has got, since what the client sends
    ///   meanwhile arrives after the forgeries), then lets the client go on;
    /// - the next round waits for `data_between` more DATA packets (or for the client's
    ///   FINISH, held, when it has sent everything);
    /// - after the last round, a barrier: the rogue sends a CRASH of a cookie no one
    ///   holds and waits for netdumpd's ERROR to it (again every 100 ms: such answers
    ///   are rate limited). netdumpd reads its socket in order, so by then it has handled
    ///   every forgery the rogue sent before it; those spoofing the client went through
    ///   the client's own path ahead of its FINISH. Only then does the FINISH go on.
    ///
    /// `patience` bounds each wait should its event never come (a failure, never a race).
    pub fn attack(
        &self,
        after_data: usize,
        rounds: usize,
        data_between: usize,
        patience: Duration,
    ) -> anyhow::Result<Attack> {
        use anyhow::Context;
        let _release = Release(self.proxy, &self.holds);
        self.proxy.wait_for(Direction::ToServer, MessageType::Data, after_data, patience)?;
        let rogue = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let is_data = |e: &Event| e.seen.dir == Direction::ToServer && e.seen.is(MessageType::Data) && e.relayed();
        let mut sent = vec![];
        let mut target = None;
        for round in 0..rounds {
            if round > 0 {
                let so_far = self.proxy.events().iter().filter(|e| is_data(e)).count();
                let finish_held = |e: &Event| e.fate == Fate::Held && e.seen.is(MessageType::Finish);
                self.proxy
                    .wait_until(patience, |events| {
                        events.iter().filter(|e| is_data(e)).count() >= so_far + data_between
                            || events.iter().any(finish_held)
                    })
                    .with_context(|| {
                        format!("the client neither sent {data_between} more DATA nor its FINISH before round {round}")
                    })?;
            }
            self.holds.client.store(true, Ordering::SeqCst);
            let events = self.proxy.events();
            let data: Vec<_> = events
                .iter()
                .filter(|e| is_data(e))
                .filter_map(|e| e.seen.header.map(|h| (e.seen.client, h)))
                .collect();
            let (client, live) = data.last().map(|(c, h)| (*c, h.cookie)).context("no DATA seen")?;
            let next_seq = data.iter().map(|(_, h)| h.seq).max().unwrap_or(0) + 1;
            let t = Target {
                live,
                replayed: self.replayed,
                stranger: 0x5757_5757_dead_beef,
                next_seq,
                pattern: self.pattern,
            };
            let forgeries: Vec<Forgery> = to_client(&t)
                .into_iter()
                .filter(|f| !matches!(f.route, Route::ToClient(fg) if !self.forgers.contains(&fg)))
                .chain(to_server(&t))
                .collect();
            for f in &forgeries {
                match f.route {
                    Route::ToClient(forger) => self.proxy.inject_to_client(client, &f.bytes, forger)?,
                    Route::ToServer => {
                        rogue.send_to(&f.bytes, self.server)?;
                    }
                    Route::ToServerAsClient => self.proxy.inject_to_server(client, &f.bytes)?,
                }
            }
            self.holds.client.store(false, Ordering::SeqCst);
            self.proxy.release_held();
            sent = forgeries.iter().map(|f| (f.what, f.route)).collect();
            target = Some(t);
        }
        let barriers = barrier(&rogue, self.server, &self.pattern, patience)?;
        let target = target.context("no round was sent")?;
        Ok(Attack { target, sent, rounds, barriers, finished_at: Instant::now() })
    }
}

/// Cookies of the barrier's CRASHes (no client holds them).
const BARRIER_COOKIE: u64 = 0xba77_1e00_0000_0000;

/// Sends CRASHes of [`BARRIER_COOKIE`]s from `rogue` until netdumpd answers one with an
/// ERROR: it has then handled everything `rogue` sent before. Returns how many it sent.
fn barrier(
    rogue: &std::net::UdpSocket,
    server: std::net::SocketAddr,
    pattern: &Pattern,
    patience: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + patience;
    rogue.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 2048];
    for n in 1.. {
        anyhow::ensure!(
            Instant::now() < deadline,
            "netdumpd answered none of {} barrier CRASHes within {patience:?}",
            n - 1
        );
        rogue.send_to(&crash(BARRIER_COOKIE | n, pattern), server)?;
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            let Ok(len) = rogue.recv(&mut buf) else { break };
            let reply = Header::parse(&buf[..len]).ok().map(|(h, _)| h);
            if reply.is_some_and(|h| h.msg_type == MessageType::Error && h.cookie & !0xffff_ffff == BARRIER_COOKIE) {
                return Ok(n);
            }
        }
    }
    unreachable!("the loop returns or fails")
}
