//! The socket loop: one UDP socket, many clients. Each turn drains what the socket
//! holds, hands every packet to its cookie's [`Session`] (or the registry, for HELLO),
//! then acknowledges every session that got data in that burst; a read timeout wakes the
//! loop to expire silent sessions. The handlers of each message live beside it:
//! [`register`] (HELLO), [`crash`] (CRASH to DECISION), [`stream`] (DATA, FINISH,
//! ABORT), and [`after`] (the work after a dump, `stats.json`).

mod after;
mod crash;
mod reconfigure;
mod register;
mod stream;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use netdump_core::crypto::{OpenError, open_packet};
use netdump_core::proto::{
    Ack, ClientMessage, Decision, DecisionReason, Header, MAX_DATAGRAM, Message, MessageType, ProtoError, TextMessage,
    VERSION_1, Verdict, error_code,
};

use crate::admission::PendingCrash;
use crate::config::ServerConfig;
use crate::dedup::DedupIndex;
use crate::jobs::JobPool;
use crate::keys::ServerKeys;
use crate::limits::{RateBudget, SourceBudget};
use crate::outbox::{Outbox, RecvBatch, Wire};
use crate::registry::{Registry, RegistryLimits};
use crate::session::Session;
use crate::stats::{DropReason, DumpEnd, ServerStats, WarnLimiter};
use crate::syslog::SyslogReceiver;

pub use crate::budget::ENDED_SESSION_MEMORY;
/// How often `info.json` of a dump in progress is rewritten.
const INFO_REFRESH: Duration = Duration::from_secs(5);
/// How often `stats.json` is rewritten while the counters change.
const STATS_REFRESH: Duration = Duration::from_secs(2);
/// The server-wide counters, in the dump directory.
pub const STATS_FILE: &str = "stats.json";
/// The read timeout: how often an idle server looks at its sessions and its stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Packets drained in one burst before the loop acknowledges and looks around.
const MAX_BURST: usize = 1024;
/// Room the headers, notes and log of a dump need besides its memory image.
const NON_MEMORY_ALLOWANCE: u64 = 1 << 20;
/// Stops a running [`Server`] from another thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Asks the server to stop; [`Server::run`] returns within its poll interval,
    /// after marking dumps still being received incomplete.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub struct Server {
    config: ServerConfig,
    outbox: Outbox,
    local_addr: SocketAddr,
    registry: Registry,
    sessions: HashMap<u64, Session>,
    /// Crashes waiting for their DECISION (hooks running).
    pending: HashMap<u64, PendingCrash>,
    dedup: DedupIndex,
    /// Work after a dump ended or a client registered (hooks, analysis, retention).
    jobs: JobPool,
    /// HELLOs handled per second, all sources and each source.
    hello_budget: SourceBudget,
    /// New crash announcements handled per second.
    crash_budget: RateBudget,
    /// When `stats.json` was last written, and what it said.
    stats_written: Option<(Instant, crate::stats::StatsSnapshot)>,
    /// When each dump in progress was last reported in the log.
    progress_at: HashMap<u64, Instant>,
    syslog: Option<SyslogReceiver>,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    warn: WarnLimiter,
    /// Where `recvmmsg(2)` puts a burst's datagrams.
    recv_batch: Option<Box<RecvBatch>>,
    /// The plaintext of a sealed packet, once opened.
    open_buf: Vec<u8>,
    /// The static keys of encrypted sessions (`[encryption] private_keys`).
    keys: ServerKeys,
    /// The retention limits the job pool's after-drain work reads (SIGHUP changes them).
    retention: Arc<Mutex<crate::retention::RetentionConfig>>,
    /// Ships ended dumps to object storage (`[upload]`), off this thread.
    uploader: Option<crate::upload::Uploader>,
}

fn drop_reason(e: ProtoError) -> DropReason {
    match e {
        ProtoError::Truncated | ProtoError::BufferTooSmall => DropReason::Truncated,
        ProtoError::BadMagic => DropReason::BadMagic,
        ProtoError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
        ProtoError::LengthMismatch => DropReason::LengthMismatch,
        ProtoError::BadCrc => DropReason::BadCrc,
        ProtoError::UnknownType(_) => DropReason::UnknownType,
        ProtoError::BadField(_) => DropReason::BadField,
    }
}

impl Server {
    /// Creates the dump directory if needed, loads the registry and binds the socket.
    pub fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        let keys = ServerKeys::load(&config.encryption.private_keys)?;
        anyhow::ensure!(
            !(config.encryption.require_encryption && keys.is_empty()),
            crate::config::REQUIRE_WITHOUT_KEYS
        );
        crate::files::create_private_dir_all(&config.dump_dir)
            .with_context(|| format!("cannot create dump directory {}", config.dump_dir.display()))?;
        let registry_limits =
            RegistryLimits { max_clients: config.limits.max_clients, max_retired: config.limits.max_retired };
        let registry = Registry::load(&config.dump_dir, registry_limits)
            .with_context(|| format!("cannot load the client registry in {}", config.dump_dir.display()))?;
        let mut registry = registry;
        for r in crate::recovery::recover_interrupted(&config.dump_dir) {
            if let (Some(cookie), Some(name)) = (r.cookie, r.dir.file_name()) {
                registry.record_dump(cookie, &name.to_string_lossy());
            }
        }
        let socket = UdpSocket::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        // Non-blocking for good: each turn waits in ppoll(2) and then drains, with no
        // socket option changed per turn (three system calls a packet, when a QEMU
        // client's datagrams arrive one at a time).
        let outbox_stats = Arc::new(ServerStats::default());
        let outbox = Outbox::new(socket, outbox_stats.clone())?;
        let local_addr = outbox.local_addr()?;
        let syslog = match config.syslog_listen {
            Some(addr) => Some(SyslogReceiver::bind(addr, &config.dump_dir, config.syslog_limits.clone())?),
            None => None,
        };
        let stats = outbox_stats;
        stats.set_clients(registry.len());
        let retention = Arc::new(Mutex::new(config.retention));
        let uploader = match &config.upload {
            Some(u) => {
                // A verified upload may free a dump retention had to keep: it runs again.
                let (root, limits) = (config.dump_dir.clone(), retention.clone());
                let after_upload: Box<dyn Fn() + Send> = Box::new(move || {
                    let retention = *limits.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Err(e) = crate::retention::enforce(&root, &retention) {
                        tracing::error!(dir = %root.display(), "retention failed: {e}");
                    }
                });
                Some(
                    crate::upload::Uploader::start(u.clone(), config.dump_dir.clone(), Some(after_upload))
                        .context("cannot start uploading to object storage")?,
                )
            }
            None => None,
        };
        let (root, limits) = (config.dump_dir.clone(), retention.clone());
        let jobs = JobPool::new(
            config.limits.max_hook_processes,
            config.limits.max_queued_jobs,
            Some(Box::new(move || {
                let retention = *limits.lock().unwrap_or_else(PoisonError::into_inner);
                if let Err(e) = crate::retention::enforce(&root, &retention) {
                    tracing::error!(dir = %root.display(), "retention failed: {e}");
                }
            })),
        );
        let now = Instant::now();
        for k in keys.iter() {
            tracing::info!(key = %k.path.display(), public = %k.public(), "encryption key loaded");
        }
        tracing::info!(
            listen = %local_addr,
            dir = %config.dump_dir.display(),
            clients = registry.len(),
            encryption = if config.encryption.require_encryption {
                "required"
            } else if keys.is_empty() {
                "off"
            } else {
                "offered"
            },
            "netdumpd ready"
        );
        Ok(Server {
            outbox,
            local_addr,
            registry,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            dedup: DedupIndex::load(&config.dump_dir),
            jobs,
            hello_budget: SourceBudget::new(
                config.limits.hellos_per_second,
                config.limits.hellos_per_source_per_second,
                now,
            ),
            crash_budget: RateBudget::new(config.limits.crashes_per_second, now),
            stats_written: None,
            progress_at: HashMap::new(),
            syslog,
            stats,
            stop: Arc::new(AtomicBool::new(false)),
            warn: WarnLimiter::new(Duration::from_secs(1)),
            recv_batch: Some(Box::default()),
            open_buf: vec![0; MAX_DATAGRAM],
            keys,
            retention,
            uploader,
            config,
        })
    }

    /// The address the socket is bound to (its port, when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The address netconsole lines are received on, when configured.
    pub fn syslog_addr(&self) -> Option<SocketAddr> {
        self.syslog.as_ref().map(|s| s.local_addr())
    }

    /// The server-wide counters, readable while the server runs.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Runs until [`ShutdownHandle::shutdown`] is called or a termination signal was
    /// received (see [`crate::signals`]).
    pub fn run(mut self) -> anyhow::Result<()> {
        let syslog = self.syslog.take().map(|s| s.spawn(self.stop.clone()));
        while !self.stop.load(Ordering::SeqCst) && !crate::signals::termination_requested() {
            self.turn()?;
        }
        crate::notify::stopping();
        let now = Instant::now();
        for s in self.sessions.values_mut() {
            if s.is_receiving() {
                s.shut_down(now);
                self.stats.dump_ended(DumpEnd::Incomplete);
            }
        }
        self.after_dumps();
        if let Err(e) = self.registry.flush() {
            tracing::error!("cannot write the client registry: {e}");
        }
        // Hooks and analyses have their own bounds; let them end.
        self.jobs.finish();
        // An upload in progress stays pending in its marker and resumes at the next start.
        if let Some(mut u) = self.uploader.take() {
            u.stop();
        }
        if let Some(t) = syslog {
            self.stop.store(true, Ordering::SeqCst);
            let _ = t.join();
        }
        let snap = self.stats.snapshot();
        if let Err(e) = self.write_stats(&snap) {
            tracing::error!("cannot write {STATS_FILE}: {e}");
        }
        tracing::info!(
            packets = snap.packets_received,
            dumps = snap.dumps_started,
            complete = snap.dumps_complete,
            incomplete = snap.dumps_incomplete,
            dropped = snap.drops.values().sum::<u64>(),
            "netdumpd stopped"
        );
        Ok(())
    }

    /// One turn of the loop: wait for a packet (at most the poll interval), drain the
    /// burst, acknowledge, expire.
    fn turn(&mut self) -> anyhow::Result<()> {
        let mut batch = self.recv_batch.take().unwrap_or_default();
        if self.outbox.wait_readable(self.receive_timeout())? {
            // Up to MAX_BURST datagrams (and what the last receive brought), a batch of
            // them per recvmmsg(2).
            let mut taken = 0;
            while taken < MAX_BURST {
                match self.outbox.recv_batch(&mut batch) {
                    Ok(0) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        for i in 0..n {
                            let (datagrams, from) = batch.slot(i);
                            for datagram in datagrams {
                                taken += 1;
                                match from {
                                    Some(from) => self.handle(datagram, from, now),
                                    None => self.stats.packet_received(),
                                }
                            }
                        }
                        if n < RecvBatch::SLOTS {
                            break;
                        }
                    }
                    // ICMP errors for earlier sends surface here on some systems; not fatal.
                    Err(e) => {
                        tracing::debug!("receive error: {e}");
                        break;
                    }
                }
            }
        }
        self.recv_batch = Some(batch);
        self.after_burst();
        Ok(())
    }

    /// What the loop does after each burst: acknowledge, admit, expire, finish dumps,
    /// write what changed (at most once a second for the registry, every
    /// [`STATS_REFRESH`] for `stats.json`).
    fn after_burst(&mut self) {
        self.flush_acks();
        self.advance_pending();
        let now = Instant::now();
        self.expire(now);
        self.after_dumps();
        let saves = self.registry.saves();
        if let Err(e) = self.registry.flush_due(now) {
            // Registered in memory; the next change (or the shutdown) tries again.
            tracing::error!("cannot write the client registry: {e}");
        }
        self.stats.registry_written(self.registry.saves() - saves);
        self.stats.set_clients(self.registry.len());
        self.refresh_stats(now);
        if crate::signals::take_hangup() {
            self.on_hangup();
        }
        crate::logging::report_suppressed();
    }

    /// Handles one datagram as if it had just arrived from `from`, then does what the
    /// loop does after a burst; replies go out of the socket as usual. For fuzzing and
    /// for tests that drive the server without running its loop.
    pub fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        self.handle(datagram, from, Instant::now());
        self.after_burst();
    }

    fn flush_acks(&mut self) {
        let now = Instant::now();
        for s in self.sessions.values_mut() {
            if s.ack_deadline().is_some_and(|d| d <= now) {
                send_ack(&mut self.outbox, &mut self.registry, s);
            }
        }
    }

    /// Sends `reply` about `cookie` to `to` ([`reply_to`]); `version` is the request's.
    fn reply(&mut self, to: SocketAddr, cookie: u64, version: u8, seq: u32, reply: Message<'_>) {
        reply_to(&mut self.outbox, &mut self.registry, to, cookie, version, seq, reply);
    }

    /// [`reply`](Self::reply) to a packet outside any live session, if the budget of
    /// such replies allows.
    fn reply_unsolicited(&mut self, to: SocketAddr, cookie: u64, version: u8, seq: u32, reply: Message<'_>) {
        if self.outbox.take_unsolicited() {
            self.reply(to, cookie, version, seq, reply);
        }
    }

    /// How long the next receive may block: the poll interval, or less when a delayed
    /// ACK falls due sooner.
    fn receive_timeout(&self) -> Duration {
        let now = Instant::now();
        let next = self.sessions.values().filter_map(|s| s.ack_deadline()).min();
        next.map_or(POLL_INTERVAL, |d| {
            d.saturating_duration_since(now).clamp(Duration::from_micros(200), POLL_INTERVAL)
        })
    }

    fn expire(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            if s.expire(now, self.config.session_timeout) {
                self.stats.dump_ended(DumpEnd::Incomplete);
            }
            s.refresh_info(now, INFO_REFRESH);
            if s.is_receiving() {
                let last = self.progress_at.entry(s.cookie()).or_insert(now);
                if now.saturating_duration_since(*last) >= self.config.progress_interval {
                    *last = now;
                    crate::progress::log(&s.info());
                }
            }
        }
        self.sessions.retain(|_, s| !s.forgettable(now, ENDED_SESSION_MEMORY));
        let sessions = &self.sessions;
        self.progress_at.retain(|c, _| sessions.get(c).is_some_and(Session::is_receiving));
    }

    /// Counts and (rate-limited) logs a dropped packet; counts it in its session too
    /// when `session_cookie` names one.
    fn drop_packet(
        &mut self,
        reason: DropReason,
        from: SocketAddr,
        session_cookie: Option<u64>,
        detail: &dyn std::fmt::Display,
    ) {
        self.stats.drop_packet(reason);
        if let Some(s) = session_cookie.and_then(|c| self.sessions.get_mut(&c)) {
            s.count_drop(reason);
        }
        self.warn.warn(reason, from, detail);
    }

    /// Counts and logs a drop the session already counted.
    fn note_session_drop(&mut self, reason: DropReason, from: SocketAddr, cookie: u64) {
        self.stats.drop_packet(reason);
        self.warn.warn(reason, from, &format_args!("cookie {cookie:016x}"));
    }

    fn handle(&mut self, datagram: &[u8], from: SocketAddr, now: Instant) {
        self.stats.packet_received();
        if datagram.len() > MAX_DATAGRAM {
            return self.drop_packet(DropReason::Oversized, from, None, &format_args!("{} bytes", datagram.len()));
        }
        // The payload's check, computed once here for the header's CRC, is the one the
        // stream CRC takes too (None for a sealed packet: its plaintext is hashed later).
        let (header, payload, payload_check) = match Header::parse_with_check(datagram) {
            Ok(parsed) => parsed,
            Err(e @ ProtoError::UnsupportedVersion(_)) => {
                self.drop_packet(DropReason::UnsupportedVersion, from, None, &e);
                let seq = Header::peek_seq(datagram).unwrap_or(0);
                let text = b"netdumpd speaks protocol versions 1 and 2";
                let error = TextMessage { code: error_code::UNSUPPORTED_VERSION, text };
                self.outbox.send_unsolicited(from, Wire::Clear(VERSION_1), 0, seq, Message::Error(error));
                return;
            }
            Err(e) => return self.drop_packet(drop_reason(e), from, None, &e),
        };
        let cookie = header.cookie;
        if !header.msg_type.from_client() {
            let detail = format_args!("{:?} from a client, cookie {cookie:016x}", header.msg_type);
            return self.drop_packet(DropReason::WrongDirection, from, Some(cookie), &detail);
        }
        let mut open_buf = std::mem::take(&mut self.open_buf);
        if let Some(payload) = self.unseal(&header, datagram, payload, from, &mut open_buf) {
            let payload_check = payload_check.filter(|_| !header.is_sealed());
            self.dispatch(&header, payload, payload_check, from, now);
        }
        self.open_buf = open_buf;
    }

    /// The payload to act on: an unsealed packet's as it is; a sealed packet's opened
    /// with its cookie's channel (nonce checked against replays first, marked only once
    /// the tag verified). `None` when dropped: a cookie with a channel takes only sealed
    /// packets (HELLO aside, which is never sealed), and a sealed packet needs a channel.
    fn unseal<'p>(
        &mut self,
        header: &Header,
        datagram: &[u8],
        payload: &'p [u8],
        from: SocketAddr,
        open_buf: &'p mut [u8],
    ) -> Option<&'p [u8]> {
        let cookie = header.cookie;
        let what = format_args!("{:?} from cookie {cookie:016x}", header.msg_type);
        if header.msg_type == MessageType::Hello {
            if header.is_sealed() {
                self.drop_packet(DropReason::Unsealed, from, Some(cookie), &format_args!("{what}: a sealed HELLO"));
                return None;
            }
            return Some(payload);
        }
        let Some(channel) = self.registry.channel_mut(cookie) else {
            if !header.is_sealed() {
                return Some(payload);
            }
            // A retired cookie's keys went with it: its sealed packets are an earlier
            // boot's, replayed.
            let reason = if self.registry.retired(cookie).is_some() {
                DropReason::ReplayedNonce
            } else if self.registry.get(cookie).is_some() {
                DropReason::BadTag
            } else {
                DropReason::UnknownCookie
            };
            self.drop_packet(reason, from, Some(cookie), &format_args!("{what}: sealed, and the cookie has no keys"));
            return None;
        };
        match open_packet(&channel.transport, &mut channel.replay, datagram, open_buf) {
            Ok((_, plaintext)) => Some(plaintext),
            Err(e) => {
                let reason = match e {
                    OpenError::Unsealed => DropReason::Unsealed,
                    OpenError::Replayed => DropReason::ReplayedNonce,
                    OpenError::BadTag | OpenError::BufferTooSmall => DropReason::BadTag,
                    OpenError::Proto(e) => drop_reason(e),
                };
                self.drop_packet(reason, from, Some(cookie), &format_args!("{what}: {}", reason.name()));
                None
            }
        }
    }

    /// A packet that passed every check of its header (and its tag): its message.
    /// `payload_check`: the payload's [`Header::check`] when the header's CRC check
    /// already computed it.
    fn dispatch(
        &mut self,
        header: &Header,
        payload: &[u8],
        payload_check: Option<u32>,
        from: SocketAddr,
        now: Instant,
    ) {
        let cookie = header.cookie;
        let message = match Message::parse_from_client(header, payload) {
            Ok(m) => m,
            Err(e) => return self.on_malformed(header, e, from),
        };
        tracing::trace!(%from, cookie = format_args!("{cookie:016x}"), seq = header.seq, "{:?}", header.msg_type);
        match message {
            ClientMessage::Hello(hello) => self.on_hello(header, &hello, from, now),
            ClientMessage::HelloV2(hello) => self.on_hello_v2(header, &hello, from, now),
            ClientMessage::Crash(crash) => self.on_crash(header, &crash, from, now),
            ClientMessage::Data(data) => self.on_data(header, &data, payload, payload_check, from, now),
            ClientMessage::Finish(finish) => self.on_finish(header, &finish, from, now),
            ClientMessage::Abort(abort) => self.on_abort(header, &abort, from, now),
        }
    }

    /// A packet whose header verified but whose payload does not parse.
    fn on_malformed(&mut self, header: &Header, e: ProtoError, from: SocketAddr) {
        let cookie = header.cookie;
        let detail = format_args!("{:?} from cookie {cookie:016x}: {e}", header.msg_type);
        self.drop_packet(drop_reason(e), from, Some(cookie), &detail);
        if self.registry.get(cookie).is_none() {
            return;
        }
        if header.msg_type == MessageType::Crash
            && matches!(e, ProtoError::BadField(_))
            && !self.sessions.contains_key(&cookie)
        {
            // An announcement that parses but breaks the rules (ranges, CPU count):
            // tell the client not to send anything rather than leave it retrying.
            let decision = Decision {
                verdict: Verdict::Abort,
                why: DecisionReason::BadAnnouncement,
                max_payload: MAX_DATAGRAM as u32,
            };
            self.registry.record_dump(cookie, "");
            self.reply_unsolicited(from, cookie, header.version, header.seq, Message::Decision(decision));
            return;
        }
        let text = format!("{e}");
        let error = TextMessage { code: error_code::MALFORMED, text: text.as_bytes() };
        self.reply_unsolicited(from, cookie, header.version, header.seq, Message::Error(error));
    }
}

fn send_ack(outbox: &mut Outbox, registry: &mut Registry, s: &mut Session) {
    let ack = s.take_ack();
    let reply = Ack { stop: ack.stop, bitmap: ack.bitmap() };
    reply_to(outbox, registry, s.peer(), s.cookie(), VERSION_1, ack.cumulative, Message::Ack(reply));
}

/// Sends `reply` about `cookie` to `to`: sealed when the cookie's session is encrypted
/// (HELLO_ACK aside: it carries the handshake), after writing a nonce reservation when
/// one is due; else in the protocol version the client registered with (`version`, the
/// request's, for a cookie not registered). A reply that cannot be sealed without risking
/// a nonce twice (the reservation could not be written) is not sent.
fn reply_to(
    outbox: &mut Outbox,
    registry: &mut Registry,
    to: SocketAddr,
    cookie: u64,
    version: u8,
    seq: u32,
    reply: Message<'_>,
) {
    let version = registry.get(cookie).map_or(version, |c| c.protocol_version);
    if matches!(reply, Message::HelloAck(_) | Message::HelloAckV2(_)) {
        return outbox.send(to, Wire::Clear(version), cookie, seq, reply);
    }
    match registry.channel_to_seal(cookie) {
        Ok(Some(channel)) => outbox.send(to, Wire::Sealed(&mut channel.transport), cookie, seq, reply),
        Ok(None) => outbox.send(to, Wire::Clear(version), cookie, seq, reply),
        Err(e) => tracing::error!(
            cookie = format_args!("{cookie:016x}"),
            "cannot write the nonce reservation to the registry ({e}): {:?} not sent",
            reply.msg_type()
        ),
    }
}
