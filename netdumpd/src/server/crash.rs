//! CRASH: from a registered cookie to its DECISION (admission: dedup, hooks, space), and
//! the session that then receives the dump.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use netdump_core::proto::{
    Crash, Decision, DecisionReason, Header, MAX_DATAGRAM, Message, TextMessage, VERSION_1, VERSION_2, Verdict,
    error_code, features, flags,
};

use super::{NON_MEMORY_ALLOWANCE, Server};
use crate::admission::{AdmissionContext, PendingCrash, SpaceFit};
use crate::announcement::CrashAnnouncement;
use crate::dedup::{DedupInfo, Occurrence};
use crate::dumpdir::{DumpDir, available_bytes};
use crate::limits::MAX_LOG_BYTES;
use crate::registry::Client;
use crate::session::{Session, StartRequest};
use crate::stats::DropReason;

impl Server {
    /// Moves crashes waiting for their DECISION on; starts the sessions decided.
    pub(super) fn advance_pending(&mut self) {
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
    pub(super) fn start_session(&mut self, p: PendingCrash, verdict: Verdict, why: DecisionReason) {
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
        session.set_max_excluded_runs(self.config.limits.max_excluded_runs);
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
                self.dedup.set_max_signatures(self.config.limits.max_signatures);
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
        self.reply(p.peer, cookie, VERSION_1, p.seq, Message::Decision(decision));
        self.sessions.insert(cookie, session);
    }

    /// How a crash fits in the free space: beside what dumps in progress may still
    /// write, and the reserve.
    pub(super) fn space_fit(&self, crash: &CrashAnnouncement) -> SpaceFit {
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

    pub(super) fn on_crash(&mut self, header: &Header, crash: &Crash<'_>, from: SocketAddr, now: Instant) {
        let cookie = header.cookie;
        if let Some(retired) = self.registry.retired(cookie) {
            let detail = format!("CRASH from {:?} with cookie {cookie:016x}, retired", retired.name);
            return self.drop_packet(DropReason::ReplayedCrash, from, None, &detail);
        }
        let Some(client) = self.registry.get(cookie).cloned() else {
            self.drop_packet(DropReason::UnknownCookie, from, None, &format_args!("CRASH from cookie {cookie:016x}"));
            let error = TextMessage { code: error_code::UNKNOWN_COOKIE, text: b"unknown cookie: send HELLO first" };
            self.reply_unsolicited(from, cookie, header.version, header.seq, Message::Error(error));
            return;
        };
        if let Some(s) = self.sessions.get_mut(&cookie) {
            match s.on_repeated_crash(from) {
                Ok(decision) => self.reply(from, cookie, header.version, header.seq, Message::Decision(decision)),
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
        // A client granted failover whose CRASH is not for its last server is sent on where
        // this server lacks capacity; every other client gets the answers it always got.
        let elsewhere = header.version == VERSION_2
            && client.features & features::FAILOVER != 0
            && header.flags & flags::LAST_SERVER == 0;
        let lacking = |why| if elsewhere { DecisionReason::TryElsewhere } else { why };
        if crash.log_len > MAX_LOG_BYTES {
            let detail = format_args!("CRASH from {} announcing a {} byte log", client.name, crash.log_len);
            self.drop_packet(DropReason::BadField, from, None, &detail);
            let decision = Decision {
                verdict: Verdict::Abort,
                why: DecisionReason::BadAnnouncement,
                max_payload: MAX_DATAGRAM as u32,
            };
            self.registry.record_dump(cookie, "");
            return self.reply(from, cookie, header.version, header.seq, Message::Decision(decision));
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
                why: lacking(DecisionReason::Busy),
                now,
                dir: None,
            };
            let session = Session::start(request, crash);
            self.reply(from, cookie, header.version, header.seq, Message::Decision(session.decision()));
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
                    why: lacking(DecisionReason::NoSpace),
                    max_payload: MAX_DATAGRAM as u32,
                };
                self.reply(from, cookie, header.version, header.seq, Message::Decision(decision));
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
        if elsewhere {
            pending.may_go_elsewhere();
        }
        if let Some((why, limit)) = cap {
            let name = &pending.client.name;
            tracing::warn!(client = %name, announced = memory, limit, "crash announces more memory than allowed: log and registers only");
            pending.lower(Verdict::SkipMemory, why);
        }
        self.pending.insert(cookie, pending);
        self.advance_pending();
    }
}

/// What admission asks of the server.
struct ServerView<'a>(&'a Server);

impl AdmissionContext for ServerView<'_> {
    fn space_fit(&self, crash: &CrashAnnouncement) -> SpaceFit {
        self.0.space_fit(crash)
    }

    fn memory_slot_free(&self, crash: &CrashAnnouncement, client: &Client) -> bool {
        let server = self.0;
        let receiving = || server.sessions.values().filter(|s| s.is_receiving());
        let memory_dumps = receiving().filter(|s| s.decision().verdict == Verdict::DumpAll).count();
        if memory_dumps >= server.config.max_memory_dumps {
            return false;
        }
        let limits = &server.config.limits;
        let reserved: u64 = receiving().map(Session::reserved_bytes).sum();
        let needed = crate::budget::receiving_bytes(
            crash.cpu_count,
            crash.machine,
            true,
            client.features & features::COMPRESSED != 0,
            client.features & features::FILTER != 0,
            limits.max_excluded_runs,
        );
        let fits = reserved.saturating_add(needed) <= limits.max_receive_bytes;
        if !fits {
            tracing::warn!(client = %client.name, reserved, needed, budget = limits.max_receive_bytes, "receive memory budget spent");
        }
        fits
    }
}

/// Removes what a crash whose files could not be created left in its directory, and
/// the directory (unless a hook wrote something else into it).
fn remove_failed_dir(dir: &Path) {
    use crate::dumpdir::{INFO, LOG, VMCORE_INCOMPLETE};
    for f in [VMCORE_INCOMPLETE, LOG, INFO] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let _ = std::fs::remove_dir(dir);
}
