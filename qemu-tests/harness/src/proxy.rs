//! A fault-injecting UDP proxy between QEMU's user network and netdumpd.
//!
//! ```text
//! guest 10.0.2.15 ─SLIRP─ 127.0.0.1:<ephemeral> ──▶ proxy 127.0.0.1:<listen> ──▶ netdumpd
//!                                               ◀── (one upstream socket per client) ◀──
//! ```
//!
//! The kernel is told `server_port=<listen>`. SLIRP turns its datagrams to
//! 10.0.2.2:<listen> into datagrams from 127.0.0.1:<ephemeral>; the proxy forwards each
//! such client's traffic to netdumpd from a socket of its own (so netdumpd sees one address
//! per client) and sends the replies back from `<listen>`, which the guest sees as
//! 10.0.2.2:<listen>: its server.
//!
//! In each direction a packet may be lost, duplicated, held back behind later packets
//! (reordering), have bits flipped, and be delayed (fixed plus jitter). The decisions are
//! drawn from a seeded generator per direction, the same number of draws per packet, so a
//! seed replays the same decisions for the same sequence of packets. A scenario can also
//! steer by protocol events with a [`Rule`] (a server that falls silent at FINISH), watch
//! the [`Event`] trace, and inject forged datagrams in either direction.
//!
//! Each direction may also be a link of limited rate ([`RateLimit`]): a token bucket with
//! a bounded drop-tail queue in front of it, like a switch port. A datagram that survives
//! the random faults enters the queue, leaves it at the link's rate (its wire size counts
//! Ethernet, IPv4 and UDP headers), then takes the direction's delay; one that finds the
//! queue full is dropped ([`Fate::QueueFull`], [`FaultProxy::link_stats`]).

use crate::rate_limit::LinkQueue;
pub use crate::rate_limit::{LinkStats, QueueDepth, RateLimit, WIRE_OVERHEAD};
use anyhow::{Context, Result};
use netdump_core::proto::{HEADER_LEN, Header, MessageType};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a packet is held back for reordering when no later packet comes to pass it.
const MAX_HOLD: Duration = Duration::from_millis(50);
/// How often blocked receivers look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Socket buffers large enough that the host never drops what the proxy did not decide to.
const SOCKET_BUFFER: usize = 8 << 20;

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a guest to netdumpd.
    ToServer,
    /// From netdumpd to a guest.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// The random faults of one direction. Probabilities are in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a packet is held back until `reorder_depth` later packets of its
    /// direction went out (or [`MAX_HOLD`] passed).
    pub reorder: f64,
    pub reorder_depth: u32,
    /// Probability that 1 to 3 bits of the datagram are flipped.
    pub corrupt: f64,
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter`.
    pub jitter: Duration,
}

impl Faults {
    pub fn loss(p: f64) -> Self {
        Faults { loss: p, ..Default::default() }
    }

    /// Short text for a scenario's summary, e.g. `loss 5% dup 2%`.
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        let pct = |p: f64| format!("{}%", (p * 1000.0).round() / 10.0);
        if self.loss > 0.0 {
            parts.push(format!("loss {}", pct(self.loss)));
        }
        if self.duplicate > 0.0 {
            parts.push(format!("dup {}", pct(self.duplicate)));
        }
        if self.reorder > 0.0 {
            parts.push(format!("reorder {} by {}", pct(self.reorder), self.reorder_depth));
        }
        if self.corrupt > 0.0 {
            parts.push(format!("bit flips {}", pct(self.corrupt)));
        }
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            parts.push(format!("delay {} ms + {} ms jitter", self.delay.as_millis(), self.jitter.as_millis()));
        }
        if parts.is_empty() { "clean".into() } else { parts.join(", ") }
    }
}

/// What the proxy is told at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyConfig {
    pub seed: u64,
    pub to_server: Faults,
    pub to_client: Faults,
    /// The guest's uplink: a rate and a queue depth for what goes to netdumpd (`None`:
    /// as fast as loopback takes it).
    pub to_server_rate: Option<RateLimit>,
    /// The same for what netdumpd sends to the guests.
    pub to_client_rate: Option<RateLimit>,
}

/// What the proxy knows about a datagram when a [`Rule`] looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dir: Direction,
    /// The guest (SLIRP-side address) the datagram comes from or goes to.
    pub client: SocketAddr,
    /// The protocol header, when the datagram carries a valid one.
    pub header: Option<Header>,
}

impl Seen {
    pub fn is(&self, t: MessageType) -> bool {
        self.header.is_some_and(|h| h.msg_type == t)
    }
}

/// A rule's verdict on one datagram, before the random faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Apply the direction's random faults, then deliver.
    Pass,
    /// Drop it (a silent server, a cut link).
    Blackhole,
    /// Keep it, in order, until [`FaultProxy::release_held`]; then apply the random
    /// faults (drawn when it arrived) and deliver. A scenario holds a packet to make a
    /// protocol event wait for its own event (a FINISH until an attack is done), never
    /// for a time.
    Hold,
}

/// Steers the proxy by protocol events; called for every datagram, in order.
pub type Rule = Box<dyn FnMut(&Seen) -> Action + Send>;

/// What happened to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    Forwarded,
    /// Dropped by the random loss.
    Lost,
    /// Dropped by the rule.
    Blackholed,
    /// Forwarded twice.
    Duplicated,
    /// Forwarded after later packets.
    Reordered,
    /// Forwarded with flipped bits.
    Corrupted,
    /// Forged by the scenario, not relayed.
    Injected,
    /// Kept by the rule until released; its release is traced as a fate of its own
    /// (forwarded, lost, ...) at the moment it goes on.
    Held,
    /// Dropped by the rate limit: its queue was full (a congested link).
    QueueFull,
}

/// One line of the proxy's trace.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub at: Instant,
    pub seen: Seen,
    pub fate: Fate,
}

impl Event {
    /// A datagram of the guest or the server the proxy decided about (not a forgery, not
    /// one still held: a held datagram is traced again when it is released).
    pub fn relayed(&self) -> bool {
        !matches!(self.fate, Fate::Injected | Fate::Held)
    }

    /// A datagram that went on to its destination (forwarded, possibly late, doubled or
    /// with flipped bits; not lost, blackholed or held).
    pub fn delivered(&self) -> bool {
        matches!(self.fate, Fate::Forwarded | Fate::Duplicated | Fate::Reordered | Fate::Corrupted)
    }
}

/// Where a datagram forged for a guest seems to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forger {
    /// The server's own address and port (what the guest knows as its server).
    ServerPort,
    /// The server's address, another port (the guest sees 10.0.2.2:<other>).
    OtherPort,
    /// Another loopback address, the server's port (SLIRP passes it on as is).
    OtherAddress,
}

/// A packet on its way out.
struct Pending {
    at: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

struct Held {
    remaining: u32,
    deadline: Instant,
    pending: Pending,
}

/// SplitMix64: small, seedable, good enough to draw faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Every random decision for one packet, drawn in a fixed order.
struct Draw {
    lose: bool,
    duplicate: bool,
    reorder: bool,
    corrupt: bool,
    flips: [u64; 3],
    flip_count: u64,
    jitter: Duration,
    dup_jitter: Duration,
}

impl Draw {
    fn new(rng: &mut Rng, f: &Faults) -> Draw {
        let lose = rng.unit() < f.loss;
        let duplicate = rng.unit() < f.duplicate;
        let reorder = rng.unit() < f.reorder;
        let corrupt = rng.unit() < f.corrupt;
        let flips = [rng.next(), rng.next(), rng.next()];
        let flip_count = 1 + rng.below(3);
        let jitter_us = f.jitter.as_micros() as u64;
        let jitter = Duration::from_micros(rng.below(jitter_us));
        let dup_jitter = Duration::from_micros(rng.below(jitter_us.max(1000)));
        Draw { lose, duplicate, reorder, corrupt, flips, flip_count, jitter, dup_jitter }
    }
}

struct Client {
    slirp: SocketAddr,
    upstream: Arc<UdpSocket>,
}

/// A datagram a rule holds, with what [`admit`] had decided about it.
struct HeldByRule {
    dir: Direction,
    seen: Seen,
    bytes: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    draw: Draw,
}

struct State {
    queue: BinaryHeap<Reverse<Pending>>,
    /// The rate limit of each direction, if any; its clock counts from `epoch`.
    links: [Option<LinkQueue>; 2],
    epoch: Instant,
    held: [Vec<Held>; 2],
    rng: [Rng; 2],
    faults: [Faults; 2],
    rule: Option<Rule>,
    clients: Vec<Client>,
    order: u64,
    trace: Vec<Event>,
    /// What the rule holds, in arrival order.
    held_by_rule: Vec<HeldByRule>,
    /// Every datagram of the guests and the server as it arrived, when recording: what an
    /// on-path attacker keeps to replay.
    tape: Option<Vec<(Seen, Vec<u8>)>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    listen: Arc<UdpSocket>,
    server: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// The port guests are told (`server_port=`).
    pub port: u16,
    pub seed: u64,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn udp_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let s = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
    let r = socket2::SockRef::from(&s);
    r.set_recv_buffer_size(SOCKET_BUFFER)?;
    r.set_send_buffer_size(SOCKET_BUFFER)?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port that forwards to `server` (netdumpd).
    pub fn start(server: SocketAddr, config: ProxyConfig) -> Result<Self> {
        let listen = Arc::new(udp_socket("127.0.0.1:0".parse()?)?);
        let port = listen.local_addr()?.port();
        let seed = config.seed;
        let state = State {
            queue: BinaryHeap::new(),
            links: [config.to_server_rate.map(LinkQueue::new), config.to_client_rate.map(LinkQueue::new)],
            epoch: Instant::now(),
            held: [vec![], vec![]],
            rng: [Rng(seed ^ 0x5EED_0000_0000_0001), Rng(seed ^ 0x5EED_0000_0000_0002)],
            faults: [config.to_server, config.to_client],
            rule: None,
            clients: vec![],
            order: 0,
            trace: vec![],
            held_by_rule: vec![],
            tape: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            listen,
            server,
        });
        let mut me = FaultProxy { port, seed, shared: shared.clone(), threads: vec![] };
        let s = shared.clone();
        me.threads.push(std::thread::spawn(move || send_loop(&s)));
        let s = shared;
        me.threads.push(std::thread::spawn(move || listen_loop(&s)));
        Ok(me)
    }

    /// Keeps a copy of every datagram from now on (both directions, as they arrive, before
    /// any fault), as an on-path attacker would, for [`recorded`](Self::recorded).
    pub fn record(&self) {
        self.shared.lock().tape.get_or_insert_with(Vec::new);
    }

    /// The datagrams kept since [`record`](Self::record), in arrival order.
    pub fn recorded(&self) -> Vec<(Seen, Vec<u8>)> {
        self.recorded_since(0)
    }

    /// The datagrams kept from the `from`-th on (what arrived after the tape held `from`),
    /// without copying the ones before.
    pub fn recorded_since(&self, from: usize) -> Vec<(Seen, Vec<u8>)> {
        self.shared.lock().tape.as_ref().map_or_else(Vec::new, |t| t[from.min(t.len())..].to_vec())
    }

    /// How many datagrams the tape holds.
    pub fn recorded_len(&self) -> usize {
        self.shared.lock().tape.as_ref().map_or(0, Vec::len)
    }

    /// How many events the trace holds so far (without copying it).
    pub fn event_count(&self) -> usize {
        self.shared.lock().trace.len()
    }

    /// Installs the rule that steers the proxy from now on.
    pub fn set_rule(&self, rule: impl FnMut(&Seen) -> Action + Send + 'static) {
        self.shared.lock().rule = Some(Box::new(rule));
    }

    /// Replaces the random faults of one direction.
    pub fn set_faults(&self, dir: Direction, faults: Faults) {
        self.shared.lock().faults[dir.index()] = faults;
    }

    /// A copy of the trace so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.lock().trace.clone()
    }

    /// How many events of the trace so far satisfy `f` (without copying the trace).
    pub fn tally(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.shared.lock().trace.iter().filter(|e| f(e)).count()
    }

    /// How many datagrams of a direction met a fate.
    pub fn count(&self, dir: Direction, fate: Fate) -> usize {
        self.shared.lock().trace.iter().filter(|e| e.seen.dir == dir && e.fate == fate).count()
    }

    /// Waits (at most `patience`) until `n` datagrams of type `t` went `dir`, from any
    /// guest, counting relayed ones only (not forgeries, and a held one once it is
    /// released).
    pub fn wait_for(&self, dir: Direction, t: MessageType, n: usize, patience: Duration) -> Result<()> {
        let relayed = |e: &Event| e.seen.dir == dir && e.seen.is(t) && e.relayed();
        self.wait_until(patience, |events| events.iter().filter(|e| relayed(e)).count() >= n).with_context(|| {
            let seen = self.events().iter().filter(|e| relayed(e)).count();
            format!("only {seen} of {n} {t:?} went {dir:?}")
        })
    }

    /// Waits until `done` holds for the trace: the event a scenario waits for. `patience`
    /// only bounds a failure (the event never comes); it is never what a check races.
    pub fn wait_until(&self, patience: Duration, mut done: impl FnMut(&[Event]) -> bool) -> Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            if done(&self.shared.lock().trace) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "not within {patience:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends on, in the order they came, every datagram a rule holds. A rule that holds
    /// by a flag should see the flag cleared before this is called: a datagram the rule
    /// holds after the release stays held.
    pub fn release_held(&self) {
        let mut st = self.shared.lock();
        let held = std::mem::take(&mut st.held_by_rule);
        let now = Instant::now();
        for h in held {
            deliver(&mut st, h.dir, h.seen, &h.bytes, h.socket, h.to, h.draw, now);
        }
        drop(st);
        self.shared.wake.notify_all();
    }

    /// How many datagrams a rule holds right now.
    pub fn held(&self) -> usize {
        self.shared.lock().held_by_rule.len()
    }

    /// The guests seen so far (their SLIRP-side addresses), in order of appearance.
    pub fn clients(&self) -> Vec<SocketAddr> {
        self.shared.lock().clients.iter().map(|c| c.slirp).collect()
    }

    /// Sends a forged datagram to the guest behind `client`, seemingly from `forger`.
    pub fn inject_to_client(&self, client: SocketAddr, bytes: &[u8], forger: Forger) -> Result<()> {
        let listen = &self.shared.listen;
        match forger {
            Forger::ServerPort => listen.send_to(bytes, client)?,
            Forger::OtherPort => UdpSocket::bind("127.0.0.1:0")?.send_to(bytes, client)?,
            Forger::OtherAddress => {
                let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
                let s = UdpSocket::bind((other, self.port)).or_else(|_| UdpSocket::bind((other, 0)))?;
                s.send_to(bytes, client)?
            }
        };
        self.record_injection(Direction::ToClient, client, bytes);
        Ok(())
    }

    /// Sends a forged datagram to netdumpd from `client`'s own upstream address, as an
    /// attacker who can spoof the client's source would.
    pub fn inject_to_server(&self, client: SocketAddr, bytes: &[u8]) -> Result<()> {
        let upstream = {
            let st = self.shared.lock();
            st.clients.iter().find(|c| c.slirp == client).map(|c| c.upstream.clone())
        };
        let upstream = upstream.with_context(|| format!("no client {client} behind the proxy"))?;
        upstream.send_to(bytes, self.shared.server)?;
        self.record_injection(Direction::ToServer, client, bytes);
        Ok(())
    }

    fn record_injection(&self, dir: Direction, client: SocketAddr, bytes: &[u8]) {
        let header = Header::parse(bytes).ok().map(|(h, _)| h);
        let seen = Seen { dir, client, header };
        self.shared.lock().trace.push(Event { at: Instant::now(), seen, fate: Fate::Injected });
    }

    /// What the rate limit of a direction did so far (`None` without one): datagrams
    /// accepted, dropped by a full queue, the deepest the queue got.
    pub fn link_stats(&self, dir: Direction) -> Option<LinkStats> {
        self.shared.lock().links[dir.index()].as_ref().map(LinkQueue::stats)
    }

    /// Counts of the trace, for a scenario's summary line.
    pub fn summary(&self) -> String {
        let f = |dir, fate| self.count(dir, fate);
        let d = |dir| {
            let link = self.link_stats(dir).map_or(String::new(), |s| {
                format!(", {} dropped by a full queue (deepest {} packets)", s.dropped, s.max_queued_packets)
            });
            format!(
                "{} lost, {} dup, {} reordered, {} flipped{link}",
                f(dir, Fate::Lost),
                f(dir, Fate::Duplicated),
                f(dir, Fate::Reordered),
                f(dir, Fate::Corrupted)
            )
        };
        format!("seed {:#x}; to server: {}; to client: {}", self.seed, d(Direction::ToServer), d(Direction::ToClient))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Receives from the guests, learns new ones (with an upstream socket and a thread for
/// netdumpd's replies to each), and hands every datagram to [`admit`].
fn listen_loop(shared: &Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    let mut upstream_threads = vec![];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = shared.listen.recv_from(&mut buf) else { continue };
        let known = shared.lock().clients.iter().find(|c| c.slirp == from).map(|c| c.upstream.clone());
        let upstream = match known {
            Some(u) => u,
            None => {
                let Ok(socket) = udp_socket("127.0.0.1:0".parse().expect("literal address")) else { continue };
                let upstream = Arc::new(socket);
                shared.lock().clients.push(Client { slirp: from, upstream: upstream.clone() });
                let (s, u) = (shared.clone(), upstream.clone());
                upstream_threads.push(std::thread::spawn(move || upstream_loop(&s, &u, from)));
                upstream
            }
        };
        admit(shared, Direction::ToServer, from, &buf[..n], upstream, shared.server);
    }
    for t in upstream_threads {
        let _ = t.join();
    }
}

/// netdumpd's replies to one guest.
fn upstream_loop(shared: &Arc<Shared>, upstream: &Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = upstream.recv_from(&mut buf) else { continue };
        if from != shared.server {
            continue;
        }
        admit(shared, Direction::ToClient, client, &buf[..n], shared.listen.clone(), client);
    }
}

/// Applies the rule and the random faults to one datagram and queues what survives.
fn admit(shared: &Shared, dir: Direction, client: SocketAddr, bytes: &[u8], socket: Arc<UdpSocket>, to: SocketAddr) {
    let now = Instant::now();
    let header = Header::parse(bytes).ok().map(|(h, _)| h);
    let seen = Seen { dir, client, header };
    let mut st = shared.lock();
    let st = &mut *st;
    let d = dir.index();
    let faults = st.faults[d];
    // Drawn before the rule looks, so a rule never shifts the random sequence.
    let draw = Draw::new(&mut st.rng[d], &faults);
    if let Some(tape) = st.tape.as_mut() {
        tape.push((seen, bytes.to_vec()));
    }
    let action = st.rule.as_mut().map_or(Action::Pass, |r| r(&seen));
    match action {
        Action::Blackhole => st.trace.push(Event { at: now, seen, fate: Fate::Blackholed }),
        Action::Hold => {
            st.trace.push(Event { at: now, seen, fate: Fate::Held });
            st.held_by_rule.push(HeldByRule { dir, seen, bytes: bytes.to_vec(), socket, to, draw });
        }
        Action::Pass => {
            deliver(st, dir, seen, bytes, socket, to, draw, now);
            shared.wake.notify_all();
        }
    }
}

/// Applies the random faults `draw` decided to one datagram and queues what survives.
#[allow(clippy::too_many_arguments)]
fn deliver(
    st: &mut State,
    dir: Direction,
    seen: Seen,
    bytes: &[u8],
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    draw: Draw,
    now: Instant,
) {
    let d = dir.index();
    let faults = st.faults[d];
    if draw.lose {
        return st.trace.push(Event { at: now, seen, fate: Fate::Lost });
    }
    // Through the link's queue, if it has one: the datagram leaves it at `sent`.
    let mut sent = now;
    if let Some(link) = st.links[d].as_mut() {
        let since = |t: Instant| t.saturating_duration_since(st.epoch).as_nanos() as u64;
        let wire = (bytes.len() + WIRE_OVERHEAD) as u64;
        match link.offer(since(now), wire) {
            Some(at) => sent = st.epoch + Duration::from_nanos(at),
            None => return st.trace.push(Event { at: now, seen, fate: Fate::QueueFull }),
        }
    }
    let mut record = |fate| st.trace.push(Event { at: now, seen, fate });
    let mut bytes = bytes.to_vec();
    if draw.corrupt && !bytes.is_empty() {
        let bits = bytes.len() as u64 * 8;
        for f in &draw.flips[..draw.flip_count as usize] {
            let bit = f % bits;
            bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        record(Fate::Corrupted);
    }
    let at = sent + faults.delay + draw.jitter;
    if draw.duplicate {
        record(Fate::Duplicated);
    }
    let reorder = draw.reorder && faults.reorder_depth > 0;
    if reorder {
        record(Fate::Reordered);
    }
    if !draw.corrupt && !draw.duplicate && !reorder {
        record(Fate::Forwarded);
    }
    let copy = draw.duplicate.then(|| Pending {
        at: at + draw.dup_jitter,
        order: 0,
        socket: socket.clone(),
        to,
        bytes: bytes.clone(),
    });
    let pending = Pending { at, order: 0, socket, to, bytes };
    if reorder {
        st.held[d].push(Held { remaining: faults.reorder_depth, deadline: now + MAX_HOLD, pending });
    } else {
        schedule(st, d, pending);
    }
    if let Some(c) = copy {
        schedule(st, d, c);
    }
}

/// Queues a packet; packets held back in its direction that it was the last to pass
/// go right after it.
fn schedule(st: &mut State, d: usize, p: Pending) {
    let at = p.at;
    push(st, p);
    let (passed, held): (Vec<Held>, Vec<Held>) = st.held[d].drain(..).partition(|h| h.remaining <= 1);
    st.held[d] = held;
    for h in &mut st.held[d] {
        h.remaining -= 1;
    }
    for mut h in passed {
        h.pending.at = h.pending.at.max(at);
        push(st, h.pending);
    }
}

fn push(st: &mut State, mut p: Pending) {
    st.order += 1;
    p.order = st.order;
    st.queue.push(Reverse(p));
}

fn send_loop(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        release_expired(&mut st, now);
        while st.queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = st.queue.pop() else { break };
            // Best effort, like a network: a failed send is a lost packet.
            let _ = p.socket.send_to(&p.bytes, p.to);
        }
        let next_held = st.held.iter().flatten().map(|h| h.deadline).min();
        let next = st.queue.peek().map(|Reverse(p)| p.at).into_iter().chain(next_held).min();
        let wait = next.map_or(POLL, |t| t.saturating_duration_since(now).min(POLL));
        st = shared.wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Held packets whose hold time ran out go now.
fn release_expired(st: &mut State, now: Instant) {
    for d in 0..2 {
        let (expired, kept): (Vec<Held>, Vec<Held>) = st.held[d].drain(..).partition(|h| h.deadline <= now);
        st.held[d] = kept;
        for mut h in expired {
            h.pending.at = now;
            push(st, h.pending);
        }
    }
}

/// The bytes of a forged datagram: `header` with `payload_len` bytes written by `fill`
/// and a valid CRC.
pub fn forge(header: Header, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload_len];
    let n = header.emit(&mut buf, payload_len, fill).expect("buffer sized for the packet");
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy in front of an echo server, and a client socket.
    struct Rig {
        proxy: FaultProxy,
        client: UdpSocket,
        server: UdpSocket,
    }

    impl Rig {
        fn new(config: ProxyConfig) -> Rig {
            let server = UdpSocket::bind("127.0.0.1:0").unwrap();
            server.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let proxy = FaultProxy::start(server.local_addr().unwrap(), config).unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            client.connect(("127.0.0.1", proxy.port)).unwrap();
            Rig { proxy, client, server }
        }

        /// Sends `n` numbered datagrams one at a time (each waits for the proxy to act)
        /// and returns the numbers that reached the server, in arrival order.
        fn send_numbered(&self, n: u32) -> Vec<u32> {
            for i in 0..n {
                let before = self.proxy.events().len();
                self.client.send(&i.to_be_bytes()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(2);
                while self.proxy.events().len() == before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            self.drain_server()
        }

        fn drain_server(&self) -> Vec<u32> {
            let mut got = vec![];
            let mut buf = [0u8; 64];
            while let Ok((len, _)) = self.server.recv_from(&mut buf) {
                got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                assert_eq!(len, 4);
            }
            got
        }
    }

    fn fates(p: &FaultProxy) -> Vec<Fate> {
        p.events().iter().map(|e| e.fate).collect()
    }

    #[test]
    fn clean_proxy_relays_both_ways_and_replies_come_from_the_listen_port() {
        let rig = Rig::new(ProxyConfig::default());
        rig.client.send(b"ping").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rig.server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        rig.server.send_to(b"pong", from).unwrap();
        let (n, from) = rig.client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(from.port(), rig.proxy.port);
        assert_eq!(rig.proxy.clients(), vec![rig.client.local_addr().unwrap()]);
    }

    #[test]
    fn a_seed_replays_the_same_faults_and_another_seed_does_not() {
        let faults = Faults { loss: 0.3, duplicate: 0.1, corrupt: 0.1, ..Default::default() };
        let run = |seed| {
            let rig = Rig::new(ProxyConfig { seed, to_server: faults, to_client: faults, ..Default::default() });
            let arrived = rig.send_numbered(200);
            (fates(&rig.proxy), arrived.len())
        };
        let (a, arrived) = run(7);
        assert_eq!(run(7).0, a);
        assert_ne!(run(8).0, a);
        let lost = a.iter().filter(|f| **f == Fate::Lost).count();
        assert!((35..=85).contains(&lost), "30% of 200 lost, give or take: {lost}");
        let dups = a.iter().filter(|f| **f == Fate::Duplicated).count();
        assert_eq!(arrived, 200 - lost + dups, "every survivor arrives, duplicates twice");
    }

    #[test]
    fn flipped_bits_are_few_and_only_in_corrupted_packets() {
        let faults = Faults { corrupt: 0.5, ..Default::default() };
        let rig = Rig::new(ProxyConfig { seed: 3, to_server: faults, ..Default::default() });
        let arrived = rig.send_numbered(100);
        let corrupted = rig.proxy.count(Direction::ToServer, Fate::Corrupted);
        assert!(corrupted > 20 && corrupted < 80, "{corrupted}");
        let changed: Vec<(u32, u32)> = arrived
            .iter()
            .enumerate()
            .filter(|(i, v)| **v != *i as u32)
            .map(|(i, v)| ((i as u32 ^ v).count_ones(), *v))
            .collect();
        assert_eq!(changed.len(), corrupted);
        assert!(changed.iter().all(|(bits, _)| (1..=3).contains(bits)), "{changed:?}");
    }

    #[test]
    fn held_packets_arrive_after_later_ones_and_none_is_lost() {
        let faults = Faults { reorder: 0.2, reorder_depth: 3, ..Default::default() };
        let rig = Rig::new(ProxyConfig { seed: 11, to_server: faults, ..Default::default() });
        let arrived = rig.send_numbered(100);
        let mut sorted = arrived.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(arrived, sorted, "some packets must have been overtaken");
        assert!(rig.proxy.count(Direction::ToServer, Fate::Reordered) > 0);
    }

    #[test]
    fn delay_holds_every_packet_at_least_its_fixed_part() {
        let faults =
            Faults { delay: Duration::from_millis(30), jitter: Duration::from_millis(10), ..Default::default() };
        let rig = Rig::new(ProxyConfig { seed: 1, to_server: faults, ..Default::default() });
        let sent = Instant::now();
        rig.client.send(b"late").unwrap();
        let mut buf = [0u8; 8];
        rig.server.recv_from(&mut buf).unwrap();
        assert!(sent.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_rule_blackholes_what_it_selects() {
        let rig = Rig::new(ProxyConfig::default());
        rig.proxy.set_rule(|s: &Seen| if s.dir == Direction::ToServer { Action::Blackhole } else { Action::Pass });
        assert!(rig.send_numbered(5).is_empty());
        assert_eq!(rig.proxy.count(Direction::ToServer, Fate::Blackholed), 5);
    }

    #[test]
    fn a_rule_holds_until_released_then_delivers_in_order() {
        let rig = Rig::new(ProxyConfig::default());
        let hold = Arc::new(AtomicBool::new(true));
        let h = hold.clone();
        rig.proxy.set_rule(move |s: &Seen| {
            if s.dir == Direction::ToServer && h.load(Ordering::SeqCst) { Action::Hold } else { Action::Pass }
        });
        for i in 0..5u32 {
            rig.client.send(&i.to_be_bytes()).unwrap();
        }
        rig.proxy
            .wait_until(Duration::from_secs(5), |e| e.iter().filter(|e| e.fate == Fate::Held).count() == 5)
            .unwrap();
        assert!(rig.drain_server().is_empty(), "a held datagram went on");
        assert_eq!(rig.proxy.held(), 5);
        assert!(rig.proxy.wait_for(Direction::ToServer, MessageType::Data, 1, Duration::ZERO).is_err());
        hold.store(false, Ordering::SeqCst);
        rig.proxy.release_held();
        rig.client.send(&5u32.to_be_bytes()).unwrap();
        let mut got = vec![];
        while got.len() < 6 {
            let more = rig.drain_server();
            assert!(!more.is_empty(), "released datagrams did not arrive: {got:?}");
            got.extend(more);
        }
        assert_eq!(got, (0..6).collect::<Vec<_>>());
        assert_eq!(rig.proxy.held(), 0);
        assert_eq!(rig.proxy.count(Direction::ToServer, Fate::Forwarded), 6);
    }

    #[test]
    fn forged_datagrams_come_from_the_chosen_forger() {
        let rig = Rig::new(ProxyConfig::default());
        rig.client.send(b"hi").unwrap();
        let mut buf = [0u8; 16];
        rig.server.recv_from(&mut buf).unwrap();
        let client = rig.proxy.clients()[0];
        // An unconnected socket in the client's place sees every forger.
        drop(rig.client);
        let open = UdpSocket::bind(client).unwrap();
        open.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let to = client;
        for (forger, check) in [
            (Forger::ServerPort, (Ipv4Addr::LOCALHOST, true)),
            (Forger::OtherPort, (Ipv4Addr::LOCALHOST, false)),
            (Forger::OtherAddress, (Ipv4Addr::new(127, 0, 0, 2), true)),
        ] {
            rig.proxy.inject_to_client(to, b"forged", forger).unwrap();
            let (n, from) = open.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"forged");
            assert_eq!(from.ip(), IpAddr::V4(check.0), "{forger:?}");
            assert_eq!(from.port() == rig.proxy.port, check.1, "{forger:?}");
        }
        rig.proxy.inject_to_server(client, b"spoofed").unwrap();
        let (n, _) = rig.server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"spoofed");
        assert_eq!(rig.proxy.count(Direction::ToClient, Fate::Injected), 3);
    }
}
