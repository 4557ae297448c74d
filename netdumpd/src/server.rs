//! The socket loop: one UDP socket, many clients. Each turn drains what the socket
//! holds, hands every packet to its cookie's [`Session`] (or the registry, for HELLO),
//! then acknowledges every session that got data in that burst; a read timeout wakes the
//! loop to expire silent sessions.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use netdump_core::proto::{
    Ack, ClientMessage, Crash, Data, Decision, DecisionReason, Finish, FinishAck, FinishStatus, Header, Hello,
    HelloAck, HelloStatus, MAX_DATAGRAM, Message, MessageType, ProtoError, TextMessage, Verdict, error_code,
    valid_name,
};

use crate::admission::{AdmissionContext, PendingCrash, SpaceFit, dump_env};
use crate::announcement::CrashAnnouncement;
use crate::config::ServerConfig;
use crate::dedup::{DedupIndex, DedupInfo, Occurrence};
use crate::dumpdir::{DumpDir, available_bytes};
use crate::hooks::HookEvent;
use crate::info::DumpStatus;
use crate::jobs::JobPool;
use crate::limits::{MAX_LOG_BYTES, RateBudget, SourceBudget};
use crate::outbox::Outbox;
use crate::registry::{Client, Registration, Registry, RegistryError, RegistryLimits};
use crate::session::{Session, StartRequest};
use crate::stats::{DropReason, DumpEnd, ServerStats, WarnLimiter};
use crate::syslog::SyslogReceiver;

/// How long an ended session is remembered, to answer a repeated FINISH or CRASH
/// (the protocol promises at least 60 s).
pub const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(120);
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
    recv_buf: Vec<u8>,
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
        let (root, retention) = (config.dump_dir.clone(), config.retention);
        let jobs = JobPool::new(
            config.limits.max_hook_processes,
            config.limits.max_queued_jobs,
            Some(Box::new(move || {
                if let Err(e) = crate::retention::enforce(&root, &retention) {
                    tracing::error!(dir = %root.display(), "retention failed: {e}");
                }
            })),
        );
        let now = Instant::now();
        tracing::info!(
            listen = %local_addr,
            dir = %config.dump_dir.display(),
            clients = registry.len(),
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
            // One byte more than the largest datagram allowed, so that a longer one is seen.
            recv_buf: vec![0; 65536],
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
        let mut buf = std::mem::take(&mut self.recv_buf);
        if self.outbox.wait_readable(self.receive_timeout())? {
            for _ in 0..MAX_BURST {
                match self.outbox.recv_from(&mut buf) {
                    Ok((n, from)) => self.handle(&buf[..n], from, Instant::now()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => break,
                    // ICMP errors for earlier sends surface here on some systems; not fatal.
                    Err(e) => {
                        tracing::debug!("receive error: {e}");
                        break;
                    }
                }
            }
        }
        self.recv_buf = buf;
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
        crate::logging::report_suppressed();
    }

    /// Rewrites `stats.json` when the counters changed and the last write is
    /// [`STATS_REFRESH`] ago.
    fn refresh_stats(&mut self, now: Instant) {
        if self.stats_written.as_ref().is_some_and(|(at, _)| now.saturating_duration_since(*at) < STATS_REFRESH) {
            return;
        }
        let snap = self.stats.snapshot();
        if self.stats_written.as_ref().is_some_and(|(_, last)| *last == snap) {
            return;
        }
        if let Err(e) = self.write_stats(&snap) {
            tracing::error!("cannot write {STATS_FILE}: {e}");
        }
        self.stats_written = Some((now, snap));
    }

    fn write_stats(&self, snap: &crate::stats::StatsSnapshot) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(snap).map_err(io::Error::other)?;
        text.push(b'\n');
        crate::files::write_atomic(&self.config.dump_dir.join(STATS_FILE), &text)
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
                send_ack(&mut self.outbox, s);
            }
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

    /// Queues the work that follows each dump that just ended: analysis, the finished
    /// hook (with the analysis), then retention and the `last` links once the queue
    /// drains. When the queue is full the hook and analysis are skipped (logged); the
    /// dump itself is on disk.
    fn after_dumps(&mut self) {
        for s in self.sessions.values_mut() {
            if !s.take_end_event() {
                continue;
            }
            let Some(dir) = s.dir_path().map(PathBuf::from) else { continue };
            let client = s.registration().clone();
            let outcome = match s.status() {
                DumpStatus::Skipped if s.decision().why == DecisionReason::Duplicate => "duplicate",
                DumpStatus::Skipped => "skipped",
                DumpStatus::Complete => "complete",
                DumpStatus::Incomplete | DumpStatus::Receiving => "incomplete",
            };
            let (hooks, analysis) = (self.config.hooks.clone(), self.config.analysis.clone());
            let queued = self.jobs.submit(true, move || {
                let analysed = crate::analysis::analyse(&dir, &client.name, &analysis);
                let mut env = dump_env(&client, &dir);
                env.push(("NETDUMP_OUTCOME".into(), outcome.into()));
                env.push(("NETDUMP_INFO".into(), dir.join(crate::dumpdir::INFO).display().to_string()));
                if let Some(a) = &analysed {
                    env.push(("NETDUMP_ANALYSIS".into(), a.display().to_string()));
                }
                let args = vec![outcome.to_string(), client.ip.to_string(), dir.display().to_string()];
                if let Some(call) = hooks.call(HookEvent::Finished, args, env) {
                    call.run();
                }
            });
            if queued.is_err() {
                self.stats.job_skipped();
                tracing::warn!(client = %s.client_name(), dir = s.dir_name().unwrap_or(""), "work queue full: finished hook and analysis skipped");
            }
        }
    }

    /// Moves crashes waiting for their DECISION on; starts the sessions decided.
    fn advance_pending(&mut self) {
        let cookies: Vec<u64> = self.pending.keys().copied().collect();
        for cookie in cookies {
            let Some(mut p) = self.pending.remove(&cookie) else { continue };
            match p.advance(&self.config.hooks, &ServerView(self)) {
                Some((verdict, why)) => self.start_session(p, verdict, why),
                None => {
                    self.pending.insert(cookie, p);
                }
            }
        }
    }

    /// The DECISION is known: opens the session in the crash's directory (or removes
    /// the directory, for ABORT), records the occurrence, answers the client.
    fn start_session(&mut self, p: PendingCrash, verdict: Verdict, why: DecisionReason) {
        let now = Instant::now();
        let cookie = p.cookie;
        if verdict == Verdict::Abort {
            // Empty unless a hook wrote into it; then it stays for the admin to see.
            let _ = std::fs::remove_dir(p.dir.path());
        }
        let request = StartRequest {
            cookie,
            client: &p.client,
            peer: p.peer,
            root: &self.config.dump_dir,
            verdict,
            why,
            now,
            dir: Some(&p.dir),
        };
        let mut session = Session::start(request, p.crash.clone());
        let decision = session.decision();
        if verdict != Verdict::Abort && session.dir_name().is_none() {
            // Its files could not be created: leave no empty directory behind.
            remove_failed_dir(p.dir.path());
        }
        match session.dir_name().map(String::from) {
            Some(dir) => {
                self.stats.dump_started();
                let occurrence = Occurrence {
                    dump: dir.clone(),
                    client: p.client.name.clone(),
                    time: session.info().start_time,
                    memory: decision.verdict == Verdict::DumpAll,
                };
                let mut dedup = p.dedup.clone();
                match self.dedup.record(&dedup.signature, &p.crash.message, occurrence) {
                    Ok(n) => dedup.occurrence = n,
                    Err(e) => tracing::error!(client = %p.client.name, "cannot record the crash signature: {e}"),
                }
                tracing::info!(
                    client = %p.client.name,
                    from = %p.peer,
                    dir,
                    verdict = ?decision.verdict,
                    why = ?decision.why,
                    signature = %dedup.signature,
                    occurrence = dedup.occurrence,
                    message = ?p.crash.message,
                    "crash announced"
                );
                session.set_dedup(dedup);
                self.registry.record_dump(cookie, &dir);
            }
            None => {
                tracing::warn!(client = %p.client.name, from = %p.peer, why = ?decision.why, "crash announced; dump declined");
                self.registry.record_dump(cookie, "");
            }
        }
        self.outbox.send(p.peer, cookie, p.seq, Message::Decision(decision));
        self.sessions.insert(cookie, session);
    }

    /// How a crash fits in the free space: beside what dumps in progress may still
    /// write, and the reserve.
    fn space_fit(&self, crash: &CrashAnnouncement) -> SpaceFit {
        let available = match available_bytes(&self.config.dump_dir) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(dir = %self.config.dump_dir.display(), "cannot tell free space ({e}); accepting the dump");
                return SpaceFit::Everything;
            }
        };
        let promised: u64 = self.sessions.values().map(|s| s.outstanding_bytes()).sum();
        let usable = available.saturating_sub(promised).saturating_sub(self.config.min_free_bytes);
        let small = crash.log_len.saturating_add(NON_MEMORY_ALLOWANCE);
        let full = small.saturating_add(crash.memory_size());
        let fit = SpaceFit::of(full, small, usable);
        if fit != SpaceFit::Everything {
            tracing::warn!(
                needed = full,
                needed_without_memory = small,
                usable,
                "not enough space for the dump: {fit:?}"
            );
        }
        fit
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
        let (header, payload) = match Header::parse(datagram) {
            Ok(parsed) => parsed,
            Err(e @ ProtoError::UnsupportedVersion(_)) => {
                self.drop_packet(DropReason::UnsupportedVersion, from, None, &e);
                let seq = Header::peek_seq(datagram).unwrap_or(0);
                let text = b"netdumpd speaks protocol version 1";
                let error = TextMessage { code: error_code::UNSUPPORTED_VERSION, text };
                self.outbox.send_unsolicited(from, 0, seq, Message::Error(error));
                return;
            }
            Err(e) => return self.drop_packet(drop_reason(e), from, None, &e),
        };
        let cookie = header.cookie;
        if !header.msg_type.from_client() {
            let detail = format_args!("{:?} from a client, cookie {cookie:016x}", header.msg_type);
            return self.drop_packet(DropReason::WrongDirection, from, Some(cookie), &detail);
        }
        let message = match Message::parse_from_client(&header, payload) {
            Ok(m) => m,
            Err(e) => return self.on_malformed(&header, e, from),
        };
        tracing::trace!(%from, cookie = format_args!("{cookie:016x}"), seq = header.seq, "{:?}", header.msg_type);
        match message {
            ClientMessage::Hello(hello) => self.on_hello(&header, &hello, from, now),
            ClientMessage::Crash(crash) => self.on_crash(&header, &crash, from, now),
            ClientMessage::Data(data) => self.on_data(&header, &data, payload, from, now),
            ClientMessage::Finish(finish) => self.on_finish(&header, &finish, from, now),
            ClientMessage::Abort(abort) => self.on_abort(&header, &abort, from, now),
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
            self.outbox.send_unsolicited(from, cookie, header.seq, Message::Decision(decision));
            return;
        }
        let text = format!("{e}");
        let error = TextMessage { code: error_code::MALFORMED, text: text.as_bytes() };
        self.outbox.send_unsolicited(from, cookie, header.seq, Message::Error(error));
    }

    /// HELLO: a replay of a retired cookie is counted and dropped before anything else
    /// (no reply, no work); then the HELLO budget (all sources, and each source), then
    /// the name, then the registry.
    fn on_hello(&mut self, header: &Header, hello: &Hello<'_>, from: SocketAddr, now: Instant) {
        let max_payload = MAX_DATAGRAM as u32;
        let cookie = header.cookie;
        if let Some(retired) = self.registry.retired(cookie) {
            let detail = format!("HELLO from {:?} with cookie {cookie:016x}, retired", retired.name);
            return self.drop_packet(DropReason::ReplayedHello, from, None, &detail);
        }
        if !self.hello_budget.take(from.ip(), now) {
            return self.drop_packet(DropReason::RateLimited, from, None, &"HELLO beyond the HELLO budget");
        }
        if !valid_name(hello.name) {
            let name = String::from_utf8_lossy(hello.name);
            self.drop_packet(
                DropReason::BadField,
                from,
                None,
                &format_args!("HELLO refused: invalid client name {name:?}"),
            );
            let ack = HelloAck { status: HelloStatus::Refused, max_payload };
            return self.outbox.send(from, cookie, header.seq, Message::HelloAck(ack));
        }
        let client = Client {
            cookie,
            name: String::from_utf8_lossy(hello.name).into_owned(),
            mac: hello.mac,
            ip: hello.ip.into(),
            source: from,
            mtu: hello.mtu,
            page_size: hello.page_size,
            memory_bytes: hello.memory_bytes,
            registered_at: crate::utc::rfc3339(crate::utc::now()),
            dump: None,
        };
        let name = client.name.clone();
        let for_hook = client.clone();
        match self.registry.register(client) {
            Ok(outcome) => {
                log_registration(&name, cookie, from, outcome);
                if matches!(outcome, Registration::New | Registration::Replaced { .. }) {
                    self.registration_hook(&for_hook);
                }
            }
            Err(RegistryError::Full) => {
                return self.drop_packet(DropReason::RegistryFull, from, None, &format_args!("HELLO from {name}"));
            }
            Err(RegistryError::Retired) => {
                return self.drop_packet(DropReason::ReplayedHello, from, None, &format_args!("HELLO from {name}"));
            }
        }
        let ack = HelloAck { status: HelloStatus::Registered, max_payload };
        self.outbox.send(from, cookie, header.seq, Message::HelloAck(ack));
    }

    /// Queues the register hook (`<client IP> <client name>`); skipped (and counted)
    /// when the work queue is full.
    fn registration_hook(&mut self, client: &Client) {
        let env = vec![
            ("NETDUMP_CLIENT".into(), client.name.clone()),
            ("NETDUMP_CLIENT_IP".into(), client.ip.to_string()),
            ("NETDUMP_CLIENT_MAC".into(), client.mac_string()),
            ("NETDUMP_CLIENT_SOURCE".into(), client.source.to_string()),
        ];
        let args = vec![client.ip.to_string(), client.name.clone()];
        if let Some(call) = self.config.hooks.call(HookEvent::Register, args, env)
            && self
                .jobs
                .submit(false, move || {
                    call.run();
                })
                .is_err()
        {
            self.stats.job_skipped();
            tracing::warn!(client = %client.name, "work queue full: register hook skipped");
        }
    }

    fn on_crash(&mut self, header: &Header, crash: &Crash<'_>, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        if let Some(retired) = self.registry.retired(cookie) {
            let detail = format!("CRASH from {:?} with cookie {cookie:016x}, retired", retired.name);
            return self.drop_packet(DropReason::ReplayedCrash, from, None, &detail);
        }
        let Some(client) = self.registry.get(cookie).cloned() else {
            self.drop_packet(DropReason::UnknownCookie, from, None, &format_args!("CRASH from cookie {cookie:016x}"));
            let error = TextMessage { code: error_code::UNKNOWN_COOKIE, text: b"unknown cookie: send HELLO first" };
            self.outbox.send_unsolicited(from, cookie, header.seq, Message::Error(error));
            return;
        };
        if let Some(s) = self.sessions.get_mut(&cookie) {
            match s.on_repeated_crash(from) {
                Ok(decision) => self.outbox.send(from, cookie, header.seq, Message::Decision(decision)),
                Err(reason) => self.note_session_drop(reason, from, cookie),
            }
            return;
        }
        if let Some(dir) = &client.dump {
            let detail = format_args!("CRASH from {} whose dump {dir:?} already happened", client.name);
            return self.drop_packet(DropReason::ReplayedCrash, from, None, &detail);
        }
        if let Some(p) = self.pending.get_mut(&cookie) {
            // Its hooks are still running: the DECISION goes out when they are done.
            if from == p.peer {
                p.seq = header.seq;
            } else {
                self.note_session_drop(DropReason::WrongSource, from, cookie);
            }
            return;
        }
        if !self.crash_budget.take(now) {
            return self.drop_packet(DropReason::RateLimited, from, None, &"CRASH beyond the crash budget");
        }
        let crash = CrashAnnouncement::from_wire(crash);
        if crash.log_len > MAX_LOG_BYTES {
            let detail = format_args!("CRASH from {} announcing a {} byte log", client.name, crash.log_len);
            self.drop_packet(DropReason::BadField, from, None, &detail);
            let decision = Decision {
                verdict: Verdict::Abort,
                why: DecisionReason::BadAnnouncement,
                max_payload: MAX_DATAGRAM as u32,
            };
            self.registry.record_dump(cookie, "");
            return self.outbox.send(from, cookie, header.seq, Message::Decision(decision));
        }
        let receiving = self.sessions.values().filter(|s| s.is_receiving()).count() + self.pending.len();
        if receiving >= self.config.max_sessions {
            self.warn.warn_busy(from, &client.name);
            let request = StartRequest {
                cookie,
                client: &client,
                peer: from,
                root: &self.config.dump_dir,
                verdict: Verdict::Abort,
                why: DecisionReason::Busy,
                now,
                dir: None,
            };
            let session = Session::start(request, crash);
            self.outbox.send(from, cookie, header.seq, Message::Decision(session.decision()));
            self.sessions.insert(cookie, session);
            // It crashed: a later CRASH of this cookie is a replay.
            self.registry.record_dump(cookie, "");
            return;
        }
        let dir = match DumpDir::create(&self.config.dump_dir, &client.name, crate::utc::now()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(client = %client.name, dir = %self.config.dump_dir.display(), "cannot create a dump directory: {e}");
                let decision = Decision {
                    verdict: Verdict::Abort,
                    why: DecisionReason::NoSpace,
                    max_payload: MAX_DATAGRAM as u32,
                };
                self.outbox.send(from, cookie, header.seq, Message::Decision(decision));
                self.registry.record_dump(cookie, "");
                return;
            }
        };
        // No announcement reserves more than its client declared at HELLO, nor more than
        // the configured maximum: beyond either, log and registers only.
        let memory = crash.memory_size();
        let cap = if memory > client.memory_bytes {
            Some((DecisionReason::BadAnnouncement, client.memory_bytes))
        } else if memory > self.config.limits.max_dump_bytes {
            Some((DecisionReason::NoSpace, self.config.limits.max_dump_bytes))
        } else {
            None
        };
        let signature = crate::dedup::signature(&crash);
        let duplicate_of = self.dedup.duplicate_of(&signature, self.config.dedup, crate::utc::now());
        let occurrence = self.dedup.get(&signature).map_or(0, |e| e.count) + 1;
        let dedup = DedupInfo { signature, occurrence, duplicate_of };
        let mut pending = PendingCrash::start(cookie, client, crash, from, header.seq, dir, dedup, &self.config.hooks);
        if let Some((why, limit)) = cap {
            let name = &pending.client.name;
            tracing::warn!(client = %name, announced = memory, limit, "crash announces more memory than allowed: log and registers only");
            pending.lower(Verdict::SkipMemory, why);
        }
        self.pending.insert(cookie, pending);
        self.advance_pending();
    }

    fn on_data(&mut self, header: &Header, data: &Data<'_>, payload: &[u8], from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            if self.registry.get(cookie).is_some() {
                // Registered, but its dump is gone (ended long ago, or a server restart):
                // tell it to stop rather than let it retransmit until it gives up.
                self.drop_packet(
                    DropReason::SessionClosed,
                    from,
                    None,
                    &format_args!("DATA from cookie {cookie:016x}"),
                );
                let ack = Ack { stop: true, bitmap: &[] };
                self.outbox.send_unsolicited(from, cookie, 0, Message::Ack(ack));
            } else {
                self.drop_packet(
                    DropReason::UnknownCookie,
                    from,
                    None,
                    &format_args!("DATA from cookie {cookie:016x}"),
                );
            }
            return;
        };
        let was_receiving = s.is_receiving();
        let outcome = s.on_data(from, header.flags, header.seq, data, payload, now);
        if outcome.ack_now {
            send_ack(&mut self.outbox, s);
        }
        if was_receiving && !s.is_receiving() {
            self.stats.dump_ended(DumpEnd::Incomplete);
        }
        if let Some(reason) = outcome.dropped {
            self.note_session_drop(reason, from, cookie);
        }
    }

    fn on_finish(&mut self, header: &Header, finish: &Finish, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let after = self.config.after_dump;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            if self.registry.get(cookie).is_some() {
                let ack = FinishAck { status: FinishStatus::UnknownSession, action: after };
                self.outbox.send_unsolicited(from, cookie, header.seq, Message::FinishAck(ack));
            } else {
                self.drop_packet(
                    DropReason::UnknownCookie,
                    from,
                    None,
                    &format_args!("FINISH from cookie {cookie:016x}"),
                );
            }
            return;
        };
        let was_receiving = s.is_receiving();
        match s.on_finish(from, header.seq, finish, after, now) {
            Ok(ack) => {
                // Counted before the answer leaves: whoever hears it sees the counters.
                if was_receiving {
                    let end =
                        if ack.status == FinishStatus::Verified { DumpEnd::Complete } else { DumpEnd::Incomplete };
                    self.stats.dump_ended(end);
                }
                self.outbox.send(from, cookie, header.seq, Message::FinishAck(ack));
            }
            Err(reason) => self.note_session_drop(reason, from, cookie),
        }
    }

    fn on_abort(&mut self, header: &Header, abort: &TextMessage<'_>, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        let Some(s) = self.sessions.get_mut(&cookie) else {
            let reason =
                if self.registry.get(cookie).is_some() { DropReason::SessionClosed } else { DropReason::UnknownCookie };
            return self.drop_packet(reason, from, None, &format_args!("ABORT from cookie {cookie:016x}"));
        };
        let was_receiving = s.is_receiving();
        match s.on_abort(from, abort.code, abort.text, now) {
            Ok(()) if was_receiving => self.stats.dump_ended(DumpEnd::Incomplete),
            Ok(()) => {}
            Err(reason) => self.note_session_drop(reason, from, cookie),
        }
    }
}

/// What admission asks of the server.
struct ServerView<'a>(&'a Server);

impl AdmissionContext for ServerView<'_> {
    fn space_fit(&self, crash: &CrashAnnouncement) -> SpaceFit {
        self.0.space_fit(crash)
    }

    fn memory_slot_free(&self) -> bool {
        let memory_dumps =
            self.0.sessions.values().filter(|s| s.is_receiving() && s.decision().verdict == Verdict::DumpAll).count();
        memory_dumps < self.0.config.max_memory_dumps
    }
}

fn send_ack(outbox: &mut Outbox, s: &mut Session) {
    let ack = s.take_ack();
    let reply = Ack { stop: ack.stop, bitmap: ack.bitmap() };
    outbox.send(s.peer(), s.cookie(), ack.cumulative, Message::Ack(reply));
}

/// Removes what a crash whose files could not be created left in its directory, and
/// the directory (unless a hook wrote something else into it).
fn remove_failed_dir(dir: &std::path::Path) {
    use crate::dumpdir::{INFO, LOG, VMCORE_INCOMPLETE};
    for f in [VMCORE_INCOMPLETE, LOG, INFO] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir(dir);
}

fn log_registration(name: &str, cookie: u64, from: SocketAddr, outcome: Registration) {
    let cookie = format_args!("{cookie:016x}");
    match outcome {
        Registration::New => tracing::info!(client = name, %from, %cookie, "client registered"),
        Registration::Replaced { old_cookie } => {
            tracing::info!(client = name, %from, %cookie, old_cookie = format_args!("{old_cookie:016x}"), "client re-registered")
        }
        Registration::Updated => tracing::info!(client = name, %from, %cookie, "client registration updated"),
        Registration::Unchanged => tracing::debug!(client = name, %from, %cookie, "repeated HELLO"),
    }
}
