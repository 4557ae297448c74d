//! A bounded flood against a netdumpd from the loopback, as a process on the dump
//! server's host (or a blind sender anywhere) could send it: HELLO churn from many ports,
//! CRASH → ABORT session churn, malformed and random datagrams, replays of a recorded
//! session, and garbage for the netconsole (syslog) port. Every category is paced, capped
//! in count and stops by itself at a time bound, or earlier when the scenario says so.
//!
//! [`Recorder`] is the relay that records a session for the replays: a client talks to
//! netdumpd through it, and every datagram it sent is kept.

use anyhow::{Context, Result};
use netdump_core::proto::{
    AddressTable, Crash, CrashKind, HEADER_LEN, Header, Hello, MemoryRange, MessageType, RangeTable, TextMessage,
    abort_reason,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::proxy::forge;

/// How often a paced category looks at the clock, the stop flag and its replies.
const TICK: Duration = Duration::from_millis(10);

/// HELLOs with random cookies and valid names, per second, from [`HELLO_PORTS`] ports.
pub const HELLO_RATE: u64 = 500;
pub const HELLO_CAP: u64 = 15000;
pub const HELLO_PORTS: usize = 48;
/// Distinct valid names the HELLO churn cycles through.
pub const HELLO_NAMES: u64 = 1500;
/// One HELLO in this many carries a hostile name.
pub const HOSTILE_EVERY: u64 = 10;
/// HELLO → CRASH → ABORT rounds per second, each from a new port.
pub const CHURN_RATE: u64 = 40;
pub const CHURN_CAP: u64 = 1200;
/// One churn CRASH in this many announces [`ABSURD_MEMORY`].
pub const ABSURD_EVERY: u64 = 3;
pub const ABSURD_MEMORY: u64 = 70 << 30;
/// How long a churn round waits for the server's HELLO_ACK and DECISION.
const CHURN_REPLY_WAIT: Duration = Duration::from_millis(20);
/// Malformed and random datagrams per second.
pub const MALFORMED_RATE: u64 = 600;
pub const MALFORMED_CAP: u64 = 18000;
/// Syslog garbage per second.
pub const SYSLOG_RATE: u64 = 300;
pub const SYSLOG_CAP: u64 = 9000;
/// Replayed datagrams per second within a round.
pub const REPLAY_RATE: u64 = 4000;

/// What a flood aims at, and its bounds.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// netdumpd's dump port.
    pub server: SocketAddr,
    /// netdumpd's netconsole port.
    pub syslog: SocketAddr,
    /// The datagrams of a recorded session, replayed in order, each round from a new port.
    pub replay: Vec<Vec<u8>>,
    pub replay_rounds: u64,
    /// Pause between replay rounds.
    pub replay_gap: Duration,
    /// The flood stops by itself after this long.
    pub max_duration: Duration,
    /// Seeds the cookies, names and garbage; also tags the flood's names and markers.
    pub seed: u64,
}

/// How far a running flood has got, for a scenario that paces the dump by it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Every category has begun.
    pub started: AtomicBool,
    /// Replay rounds sent whole.
    pub replay_rounds: AtomicU64,
    /// Replay rounds that may begin (set by the scenario as the dump goes on); a round
    /// waits for it, then for [`FloodConfig::replay_gap`] after the previous one.
    pub replay_allowed: AtomicU64,
}

impl Progress {
    /// Replays paced by the scenario: none before [`Progress::replay_allowed`] says so.
    pub fn gated() -> Progress {
        Progress::default()
    }

    /// Replays paced by [`FloodConfig::replay_gap`] alone.
    pub fn ungated() -> Progress {
        Progress { replay_allowed: AtomicU64::new(u64::MAX), ..Progress::default() }
    }
}

/// Why the flood ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The scenario said so.
    Asked,
    /// [`FloodConfig::max_duration`] ran out.
    TimeBound,
}

/// Datagrams replayed, by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub rounds: u64,
    pub hello: u64,
    pub crash: u64,
    pub data: u64,
    pub finish: u64,
    pub other: u64,
}

impl Replayed {
    pub fn total(&self) -> u64 {
        self.hello + self.crash + self.data + self.finish + self.other
    }
}

/// What a flood sent, and what came back.
#[derive(Debug, Clone)]
pub struct FloodReport {
    pub started: Instant,
    pub ended: Instant,
    pub stopped: Stopped,
    /// HELLOs of the churn, hostile names included, and the HELLO_ACKs they got.
    pub hellos: u64,
    pub hostile_hellos: u64,
    pub hello_replies: u64,
    /// CRASH → ABORT rounds, those that announced [`ABSURD_MEMORY`], and the
    /// HELLO_ACKs and DECISIONs they got. Each round sends three datagrams.
    pub churn_rounds: u64,
    pub absurd_crashes: u64,
    pub churn_replies: u64,
    pub malformed: u64,
    /// Replies to the malformed datagrams (ERRORs to a wrong version, say).
    pub malformed_replies: u64,
    pub syslog: u64,
    pub replayed: Replayed,
    /// When the first and the last replayed datagram went out.
    pub replay_span: Option<(Instant, Instant)>,
    /// Categories that reached their cap before the flood was told to stop.
    pub capped: Vec<&'static str>,
    /// Text the hostile names, panic messages and syslog lines put after a line break:
    /// no line of the server's log may start with it.
    pub marker: String,
}

impl FloodReport {
    /// Every datagram the flood sent.
    pub fn total(&self) -> u64 {
        self.hellos + 3 * self.churn_rounds + self.malformed + self.syslog + self.replayed.total()
    }

    /// One line for a scenario's summary.
    pub fn describe(&self) -> String {
        let r = &self.replayed;
        let secs = self.ended.duration_since(self.started).as_secs_f64();
        format!(
            "flood {:.1} s, {} datagrams: {} HELLO from {HELLO_PORTS} ports ({} hostile names, {} answered), {} CRASH→ABORT rounds ({} at 70 GiB, {} answers), {} malformed ({} answered), {} syslog garbage, {} replay rounds ({} HELLO, {} CRASH, {} DATA, {} FINISH)",
            secs,
            self.total(),
            self.hellos,
            self.hostile_hellos,
            self.hello_replies,
            self.churn_rounds,
            self.absurd_crashes,
            self.churn_replies,
            self.malformed,
            self.malformed_replies,
            self.syslog,
            r.rounds,
            r.hello,
            r.crash,
            r.data,
            r.finish
        )
    }
}

/// SplitMix64, seeded: the flood's cookies, names and garbage.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Fewer than `n` random bytes, how many also random.
    fn some_bytes(&mut self, n: u64) -> Vec<u8> {
        let len = self.below(n) as usize;
        self.bytes(len)
    }
}

/// Paces a category: how many it may have sent by now, and whether it must stop.
struct Pace<'a> {
    stop: &'a AtomicBool,
    started: Instant,
    deadline: Instant,
    rate: u64,
    cap: u64,
}

impl Pace<'_> {
    /// How many more may go out now (0 and `false` when the category is done).
    fn due(&self, sent: u64) -> (u64, bool) {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.deadline || sent >= self.cap {
            return (0, false);
        }
        let by_now = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64 + 1;
        (by_now.min(self.cap).saturating_sub(sent), true)
    }
    fn capped(&self, sent: u64) -> bool {
        sent >= self.cap && !self.stop.load(Ordering::Relaxed)
    }
}

fn header(msg_type: MessageType, cookie: u64, seq: u32) -> Header {
    Header::v1(msg_type, 0, cookie, seq)
}

/// A HELLO of `name` with `cookie`.
pub fn hello(cookie: u64, name: &[u8], memory_bytes: u64) -> Vec<u8> {
    let name = &name[..name.len().min(255)];
    let h = Hello {
        mac: [0x02, 0x66, 0x6c, 0x6f, 0x6f, 0x64],
        mtu: 1500,
        ip: [10, 0, 2, 99],
        page_size: 4096,
        memory_bytes,
        name,
    };
    forge(header(MessageType::Hello, cookie, 0), h.wire_len(), |p| h.emit(p))
}

/// A CRASH announcing one RAM range of `memory` bytes.
pub fn crash(cookie: u64, memory: u64, message: &[u8]) -> Vec<u8> {
    let ranges = [MemoryRange { phys_start: 1 << 20, length: memory, virt_start: 1 << 20 }];
    let c = Crash {
        kind: CrashKind::Panic,
        vector: 0,
        cpu_count: 1,
        crashing_cpu: 0,
        error_code: 0,
        fault_address: 0,
        page_size: 4096,
        machine: netdump_core::proto::Machine::X86_64,
        log_len: 64,
        ranges: RangeTable::Ranges(&ranges),
        frames: AddressTable::Addresses(&[0xffff_8000_0010_2030]),
        message,
    };
    forge(header(MessageType::Crash, cookie, 0), c.wire_len(), |p| c.emit(p))
}

fn abort(cookie: u64) -> Vec<u8> {
    let a = TextMessage { code: abort_reason::NIC_ERROR, text: b"flood abort" };
    forge(header(MessageType::Abort, cookie, 0), a.wire_len(), |p| a.emit(p))
}

/// Names a registration must refuse, or that try to forge a line of the server's log
/// (each break followed by `marker`).
fn hostile_names(marker: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        format!("evil\n{marker} netdumpd: dump complete").into_bytes(),
        format!("evil\r\n{marker} INFO registered client").into_bytes(),
        format!("\n{marker}").into_bytes(),
        format!("a\x1b[2K\r{marker} cleared line").into_bytes(),
        b"bell\x07\x08\x7f".to_vec(),
        b"nul\0byte".to_vec(),
        b"-rf".to_vec(),
        b"--help".to_vec(),
        b"../../etc/passwd".to_vec(),
        b"a/b".to_vec(),
        b"..".to_vec(),
        b".".to_vec(),
        b"".to_vec(),
        b"space name".to_vec(),
        "na\u{ef}ve-\u{e9}".as_bytes().to_vec(),
        b"\xff\xfe\xc3".to_vec(),
        b"$(reboot)".to_vec(),
        b"name;rm -rf /".to_vec(),
    ];
    v.push(vec![b'x'; 65]);
    v.push(vec![b'y'; 255]);
    v
}

/// Panic messages with line breaks, control bytes and NULs, for the churn's CRASHes.
fn hostile_messages(marker: &str) -> Vec<Vec<u8>> {
    vec![
        b"flood churn panic".to_vec(),
        format!("flood panic\n{marker} netdumpd: dump complete").into_bytes(),
        format!("flood panic\r{marker}\x1b[1A").into_bytes(),
        b"flood\0panic with a NUL".to_vec(),
        b"\xff\xfe invalid UTF-8".to_vec(),
    ]
}

/// One malformed or random datagram, of kind `i % 10`.
fn malformed(i: u64, rng: &mut Rng) -> Vec<u8> {
    let cookie = rng.next();
    let valid = || hello(cookie, b"flood-malformed", 1 << 26);
    match i % 10 {
        // Random bytes, 0 to 1500 of them.
        0 => rng.some_bytes(1501),
        // A header cut short.
        1 => {
            let mut p = valid();
            p.truncate(rng.below(HEADER_LEN as u64) as usize);
            p
        }
        // A bad CRC.
        2 => {
            let mut p = valid();
            p[20 + rng.below(4) as usize] ^= 1 << rng.below(8);
            p
        }
        // Another protocol version (netdumpd answers these, rate-limited).
        3 => {
            let mut p = crash(cookie, 1 << 26, b"wrong version");
            p[2] = 2 + rng.below(250) as u8;
            Header::set_crc(&mut p);
            p
        }
        // payload_len disagrees with the datagram.
        4 => {
            let mut p = valid();
            p.push(0);
            p.extend_from_slice(&rng.some_bytes(32));
            p
        }
        // A server's message type, sealed.
        5 => {
            let mut p = valid();
            p[3] = [0x81, 0x82, 0x83, 0x84, 0x8F][rng.below(5) as usize];
            Header::set_crc(&mut p);
            p
        }
        // An unknown type, sealed.
        6 => {
            let mut p = valid();
            p[3] = 0x10 + rng.below(0x60) as u8;
            Header::set_crc(&mut p);
            p
        }
        // A sealed header over a payload of garbage (bad fields).
        7 => {
            let t =
                [MessageType::Hello, MessageType::Crash, MessageType::Data, MessageType::Finish, MessageType::Abort]
                    [rng.below(5) as usize];
            let junk = rng.some_bytes(200);
            forge(header(t, cookie, rng.next() as u32), junk.len(), |p| p.copy_from_slice(&junk))
        }
        // Larger than any datagram the protocol allows.
        8 => {
            let mut p = valid();
            p.resize(9000 + rng.below(20000) as usize, 0xAB);
            p
        }
        // A CRASH that breaks the rules: no CPUs, ranges out of order.
        _ => {
            let mut p = crash(cookie, 1 << 26, b"bad fields");
            p[HEADER_LEN + 2] = 0;
            p[HEADER_LEN + 3] = 0;
            Header::set_crc(&mut p);
            p
        }
    }
}

/// Syslog garbage of kind `i % 12` (the ones with a line break put `marker` after it).
fn syslog_garbage(i: u64, rng: &mut Rng, marker: &str) -> Vec<u8> {
    let k = rng.below(24) as usize;
    match i % 12 {
        // The datagram of issue 11: a multi-byte character where a BSD timestamp would end.
        0 => "<13>aaaaaaaaaaaaaa\u{e9}bcdefgh".as_bytes().to_vec(),
        // The same at every offset, with 2, 3 and 4-byte characters.
        1 => format!("<13>{}{}bcdefghijklmnopqrstuvwxyz", "a".repeat(k), ["\u{e9}", "\u{20ac}", "\u{1f600}"][k % 3])
            .into_bytes(),
        2 => format!("<13>Jan  1 00:00:0\u{e9} host{} tag: message", "\u{e9}".repeat(k % 4)).into_bytes(),
        // Random bytes, with or without a PRI.
        3 => {
            let mut v = if k.is_multiple_of(2) { b"<13>".to_vec() } else { vec![] };
            v.extend(rng.some_bytes(1400));
            v
        }
        // Overlong lines.
        4 => {
            let mut v = b"<13>".to_vec();
            v.resize(if k.is_multiple_of(4) { 60000 } else { 8000 }, b'x');
            v
        }
        // Control characters, escapes, a NUL.
        5 => format!("<13>1 - flood-syslog app - - - \x1b[2J\x07\x00\x08\x7f{}\x1b]0;title\x07", "\r".repeat(k))
            .into_bytes(),
        // Line breaks that try to forge a console or server log line.
        6 => format!("<13>1 2026-01-01T00:00:00Z flood-syslog app - - - ok\n{marker} forged console line\r\n{marker}")
            .into_bytes(),
        // PRI and header edge cases.
        7 => {
            [&b"<999>x"[..], b"<>", b"<13", b"<0>", b"<191>1 ", b"<13>1 - - - - - [meta sequenceId=\""][k % 6].to_vec()
        }
        // Sequence numbers that wrap.
        8 => {
            let seq = [u32::MAX, 0, u32::MAX - 1, 1][k % 4];
            format!("<13>1 - flood-syslog app - - [meta sequenceId=\"{seq}\"] wrap").into_bytes()
        }
        // Invalid UTF-8 in every field.
        9 => b"<13>1 \xff\xfe \xc3\x28 \xe2\x82 - - - \xf0\x9f\x98 msg".to_vec(),
        // Valid-looking lines from many hostnames (each would be a console file).
        10 => format!("<13>1 - flood-syslog-{} app - - - line {i}", k % 8).into_bytes(),
        // A BSD line whose tag ends in a multi-byte character.
        _ => format!("<13>Jan  1 00:00:00 host t\u{e9}{}: msg", "\u{e9}".repeat(k)).into_bytes(),
    }
}

fn socket() -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0").context("bind a flood socket")?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Reads whatever replies wait on `s`; counts those of type `want` (any type if `None`).
fn drain(s: &UdpSocket, want: Option<MessageType>) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(len) = s.recv(&mut buf) {
        let t = Header::parse(&buf[..len]).ok().map(|(h, _)| h.msg_type);
        n += u64::from(want.is_none() || t == want);
    }
    n
}

/// Waits up to `wait` for a reply of type `want` on a blocking socket.
fn await_reply(s: &UdpSocket, want: MessageType, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.recv(&mut buf) {
            Ok(len) if Header::parse(&buf[..len]).is_ok_and(|(h, _)| h.msg_type == want) => {
                return true;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().expect("a flood thread panicked")
}

/// Runs the flood until `stop` is set or its bounds run out; blocks until every category
/// has ended. `progress` says when the flood is under way and how many replay rounds
/// went out.
pub fn run(cfg: &FloodConfig, stop: &AtomicBool, progress: &Progress) -> Result<FloodReport> {
    let started = Instant::now();
    let deadline = started + cfg.max_duration;
    let marker = format!("FORGED-{:08x}", cfg.seed as u32);
    let pace = |rate, cap| Pace { stop, started, deadline, rate, cap };
    let capped = Mutex::new(Vec::new());
    let (hellos, churn, malformed_sent, syslog, replayed) = std::thread::scope(|s| {
        let hellos = s.spawn(|| hello_churn(cfg, &pace(HELLO_RATE, HELLO_CAP), &marker, &capped));
        let churn = s.spawn(|| session_churn(cfg, &pace(CHURN_RATE, CHURN_CAP), &marker, &capped));
        let malformed = s.spawn(|| malformed_flood(cfg, &pace(MALFORMED_RATE, MALFORMED_CAP), &capped));
        let syslog = s.spawn(|| syslog_flood(cfg, &pace(SYSLOG_RATE, SYSLOG_CAP), &marker, &capped));
        let replayed = s.spawn(|| replays(cfg, stop, deadline, progress));
        progress.started.store(true, Ordering::SeqCst);
        (join(hellos), join(churn), join(malformed), join(syslog), join(replayed))
    });
    let (hellos, hostile_hellos, hello_replies) = hellos?;
    let (churn_rounds, absurd_crashes, churn_replies) = churn?;
    let (malformed, malformed_replies) = malformed_sent?;
    let (replayed, replay_span) = replayed?;
    let ended = Instant::now();
    let stopped = if stop.load(Ordering::SeqCst) { Stopped::Asked } else { Stopped::TimeBound };
    Ok(FloodReport {
        started,
        ended,
        stopped,
        hellos,
        hostile_hellos,
        hello_replies,
        churn_rounds,
        absurd_crashes,
        churn_replies,
        malformed,
        malformed_replies,
        syslog: syslog?,
        replayed,
        replay_span,
        capped: capped.into_inner().unwrap_or_else(|e| e.into_inner()),
        marker,
    })
}

/// HELLOs with random cookies from [`HELLO_PORTS`] ports, cycling through
/// [`HELLO_NAMES`] valid names; every [`HOSTILE_EVERY`]th a hostile one.
fn hello_churn(
    cfg: &FloodConfig,
    pace: &Pace<'_>,
    marker: &str,
    capped: &Mutex<Vec<&'static str>>,
) -> Result<(u64, u64, u64)> {
    let sockets: Vec<UdpSocket> = (0..HELLO_PORTS).map(|_| socket()).collect::<Result<_>>()?;
    let hostile = hostile_names(marker);
    let mut rng = Rng(cfg.seed ^ 0x4e11);
    let (mut sent, mut hostile_sent, mut replies) = (0u64, 0u64, 0u64);
    loop {
        let (due, go) = pace.due(sent);
        if !go {
            break;
        }
        for _ in 0..due {
            let datagram = if sent % HOSTILE_EVERY == HOSTILE_EVERY - 1 {
                hostile_sent += 1;
                hello(rng.next(), &hostile[(hostile_sent as usize) % hostile.len()], 1 << 26)
            } else {
                let name = format!("flood-{:04x}-{}", cfg.seed & 0xffff, sent % HELLO_NAMES);
                hello(rng.next(), name.as_bytes(), 1 << 26)
            };
            // Best effort, like the network: a send the host refuses is a lost datagram.
            let _ = sockets[sent as usize % HELLO_PORTS].send_to(&datagram, cfg.server);
            sent += 1;
        }
        replies += sockets.iter().map(|s| drain(s, Some(MessageType::HelloAck))).sum::<u64>();
        std::thread::sleep(TICK);
    }
    replies += sockets.iter().map(|s| drain(s, Some(MessageType::HelloAck))).sum::<u64>();
    if pace.capped(sent) {
        capped.lock().unwrap_or_else(|e| e.into_inner()).push("HELLO churn");
    }
    Ok((sent, hostile_sent, replies))
}

/// Rounds of HELLO → CRASH → ABORT, each from a new port with a new cookie, over a few
/// dozen names; every [`ABSURD_EVERY`]th CRASH announces [`ABSURD_MEMORY`].
fn session_churn(
    cfg: &FloodConfig,
    pace: &Pace<'_>,
    marker: &str,
    capped: &Mutex<Vec<&'static str>>,
) -> Result<(u64, u64, u64)> {
    let messages = hostile_messages(marker);
    let mut rng = Rng(cfg.seed ^ 0xc4a5);
    let (mut rounds, mut absurd, mut replies) = (0u64, 0u64, 0u64);
    loop {
        let (due, go) = pace.due(rounds);
        if !go {
            break;
        }
        if due == 0 {
            std::thread::sleep(TICK);
            continue;
        }
        let s = UdpSocket::bind("127.0.0.1:0").context("bind a churn socket")?;
        let cookie = rng.next();
        let name = format!("churn-{:04x}-{}", cfg.seed & 0xffff, rounds % 32);
        let memory = if rounds % ABSURD_EVERY == 0 { ABSURD_MEMORY } else { 64 << 20 };
        absurd += u64::from(memory == ABSURD_MEMORY);
        let _ = s.send_to(&hello(cookie, name.as_bytes(), memory), cfg.server);
        replies += u64::from(await_reply(&s, MessageType::HelloAck, CHURN_REPLY_WAIT));
        let message = &messages[rounds as usize % messages.len()];
        let _ = s.send_to(&crash(cookie, memory, message), cfg.server);
        replies += u64::from(await_reply(&s, MessageType::Decision, CHURN_REPLY_WAIT));
        let _ = s.send_to(&abort(cookie), cfg.server);
        rounds += 1;
    }
    if pace.capped(rounds) {
        capped.lock().unwrap_or_else(|e| e.into_inner()).push("session churn");
    }
    Ok((rounds, absurd, replies))
}

/// Malformed and random datagrams from a handful of ports.
fn malformed_flood(cfg: &FloodConfig, pace: &Pace<'_>, capped: &Mutex<Vec<&'static str>>) -> Result<(u64, u64)> {
    let sockets: Vec<UdpSocket> = (0..8).map(|_| socket()).collect::<Result<_>>()?;
    let mut rng = Rng(cfg.seed ^ 0xba5e);
    let (mut sent, mut replies) = (0u64, 0u64);
    loop {
        let (due, go) = pace.due(sent);
        if !go {
            break;
        }
        for _ in 0..due {
            let datagram = malformed(sent, &mut rng);
            let _ = sockets[sent as usize % sockets.len()].send_to(&datagram, cfg.server);
            sent += 1;
        }
        replies += sockets.iter().map(|s| drain(s, None)).sum::<u64>();
        std::thread::sleep(TICK);
    }
    replies += sockets.iter().map(|s| drain(s, None)).sum::<u64>();
    if pace.capped(sent) {
        capped.lock().unwrap_or_else(|e| e.into_inner()).push("malformed");
    }
    Ok((sent, replies))
}

/// Garbage for the netconsole port from a few ports.
fn syslog_flood(cfg: &FloodConfig, pace: &Pace<'_>, marker: &str, capped: &Mutex<Vec<&'static str>>) -> Result<u64> {
    let sockets: Vec<UdpSocket> = (0..4).map(|_| socket()).collect::<Result<_>>()?;
    let mut rng = Rng(cfg.seed ^ 0x5151_0600);
    let mut sent = 0u64;
    loop {
        let (due, go) = pace.due(sent);
        if !go {
            break;
        }
        for _ in 0..due {
            let datagram = syslog_garbage(sent, &mut rng, marker);
            let _ = sockets[sent as usize % sockets.len()].send_to(&datagram, cfg.syslog);
            sent += 1;
        }
        std::thread::sleep(TICK);
    }
    if pace.capped(sent) {
        capped.lock().unwrap_or_else(|e| e.into_inner()).push("syslog");
    }
    Ok(sent)
}

/// The recorded session, `replay_rounds` times, each round from a new port, paced at
/// [`REPLAY_RATE`]; a round is sent whole once begun, so the counts are exact.
fn replays(
    cfg: &FloodConfig,
    stop: &AtomicBool,
    deadline: Instant,
    progress: &Progress,
) -> Result<(Replayed, Option<(Instant, Instant)>)> {
    let mut r = Replayed::default();
    let mut span: Option<(Instant, Instant)> = None;
    let per_datagram = Duration::from_secs_f64(1.0 / REPLAY_RATE as f64);
    for round in 0..cfg.replay_rounds {
        while progress.replay_allowed.load(Ordering::SeqCst) <= round
            && !stop.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        if round > 0 {
            let until = Instant::now() + cfg.replay_gap;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
            }
        }
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline || cfg.replay.is_empty() {
            break;
        }
        let s = socket()?;
        let round_start = Instant::now();
        for (i, datagram) in cfg.replay.iter().enumerate() {
            let due = round_start + per_datagram * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            // A replay must reach the server to be counted: retry what the host refuses.
            let mut tries = 0;
            while let Err(e) = s.send_to(datagram, cfg.server) {
                tries += 1;
                anyhow::ensure!(tries < 100, "cannot send a replayed datagram: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
            let now = Instant::now();
            span = Some((span.map_or(now, |s| s.0), now));
            match Header::parse(datagram).ok().map(|(h, _)| h.msg_type) {
                Some(MessageType::Hello) => r.hello += 1,
                Some(MessageType::Crash) => r.crash += 1,
                Some(MessageType::Data) => r.data += 1,
                Some(MessageType::Finish) => r.finish += 1,
                _ => r.other += 1,
            }
            drain(&s, None);
        }
        r.rounds += 1;
        progress.replay_rounds.store(r.rounds, Ordering::SeqCst);
    }
    Ok((r, span))
}

/// A UDP relay between one client and netdumpd that keeps every datagram the client
/// sent: the session a flood replays.
pub struct Recorder {
    /// Where the client is told its server is.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Recorder {
    pub fn start(server: SocketAddr) -> Result<Recorder> {
        let listen = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        for s in [&listen, &upstream] {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
        }
        let addr = listen.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let to_server = {
            let (listen, upstream, stop, recorded, client) =
                (listen.clone(), upstream.clone(), stop.clone(), recorded.clone(), client.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = listen.recv_from(&mut buf) else {
                        continue;
                    };
                    *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                    recorded.lock().unwrap_or_else(|e| e.into_inner()).push(buf[..n].to_vec());
                    let _ = upstream.send_to(&buf[..n], server);
                }
            })
        };
        let to_client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = upstream.recv_from(&mut buf) else {
                        continue;
                    };
                    let to = *client.lock().unwrap_or_else(|e| e.into_inner());
                    if let (true, Some(to)) = (from == server, to) {
                        let _ = listen.send_to(&buf[..n], to);
                    }
                }
            })
        };
        Ok(Recorder { addr, stop, recorded, threads: vec![to_server, to_client] })
    }

    /// Stops the relay; returns what the client sent, in order.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop_threads();
        std::mem::take(&mut *self.recorded.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The datagrams of a recorded session a replay sends: HELLO, CRASH, DATA and FINISH.
pub fn replayable(recorded: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let keep = [MessageType::Hello, MessageType::Crash, MessageType::Data, MessageType::Finish];
    recorded.iter().filter(|d| Header::parse(d).is_ok_and(|(h, _)| keep.contains(&h.msg_type))).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_the_flood_builds_parse_as_intended() {
        let (h, _) = Header::parse(&hello(7, b"flood-1", 1 << 26)).unwrap();
        assert_eq!((h.msg_type, h.cookie), (MessageType::Hello, 7));
        let c = crash(9, ABSURD_MEMORY, b"x\ny");
        let (h, p) = Header::parse(&c).unwrap();
        assert_eq!(h.msg_type, MessageType::Crash);
        netdump_core::proto::Message::parse(&h, p).unwrap();
        let (h, _) = Header::parse(&abort(9)).unwrap();
        assert_eq!(h.msg_type, MessageType::Abort);
    }

    #[test]
    fn malformed_datagrams_never_parse_as_a_valid_client_message() {
        let mut rng = Rng(1);
        for i in 0..2000 {
            let d = malformed(i, &mut rng);
            let ok =
                Header::parse(&d).ok().and_then(|(h, p)| netdump_core::proto::Message::parse(&h, p).ok().map(|_| h));
            let from_client = ok.is_some_and(|h| h.msg_type.from_client());
            assert!(!from_client || matches!(i % 10, 0 | 7), "kind {} parsed: {ok:?}", i % 10);
        }
    }

    #[test]
    fn a_hostile_name_is_never_a_valid_one_unless_it_only_looks_like_an_option() {
        for n in hostile_names("M") {
            let valid = netdump_core::proto::valid_name(&n);
            assert!(!valid || n.starts_with(b"-"), "{:?}", String::from_utf8_lossy(&n));
        }
    }
}
