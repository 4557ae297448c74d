//! A crash's way from its announcement to its DECISION. The server answers at once
//! (ABORT) when it is busy; otherwise it creates the dump directory and then:
//!
//! ```text
//! dedup ─▶ crash hook (exit 1: skip memory) ─▶ concurrent memory dumps ─▶ free space
//!                                                        no room ─▶ nospace hook, once ─▶ free space again
//! ```
//!
//! The hooks run on their own threads; the client repeats its CRASH meanwhile and gets
//! no answer until the DECISION is known (the hooks' bound keeps that below its announce
//! timeout). Each step may only lower the verdict: DUMP_ALL → SKIP_MEMORY → ABORT.

use std::net::SocketAddr;

use netdump_core::proto::{DecisionReason, Verdict};

use crate::announcement::CrashAnnouncement;
use crate::dedup::DedupInfo;
use crate::dumpdir::DumpDir;
use crate::hooks::{HookConfig, HookEvent, ProcessEnd, RunningHook};
use crate::registry::Client;

/// What the free space allows, counting dumps in progress and the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceFit {
    /// The whole dump fits (or free space cannot be told).
    Everything,
    /// Only the log, registers and notes fit.
    LogOnly,
    /// Not even those.
    Nothing,
}

impl SpaceFit {
    /// The fit of a dump needing `full` bytes (`small` without memory) in `usable`.
    pub fn of(full: u64, small: u64, usable: u64) -> SpaceFit {
        if full <= usable {
            SpaceFit::Everything
        } else if small <= usable {
            SpaceFit::LogOnly
        } else {
            SpaceFit::Nothing
        }
    }
}

/// What the server tells a step about itself.
pub trait AdmissionContext {
    /// How the dump fits in the free space now.
    fn space_fit(&self, crash: &CrashAnnouncement) -> SpaceFit;
    /// Whether the memory image of `crash` from `client` may be taken now: within the
    /// concurrent-memory-dump limit, and its reservation within the receive budget
    /// (`limits.max_receive_mib`).
    fn memory_slot_free(&self, crash: &CrashAnnouncement, client: &Client) -> bool;
}

enum Stage {
    CrashHook(RunningHook),
    Space,
    NoSpaceHook(RunningHook),
    Decided,
}

/// A crash waiting for its DECISION.
pub struct PendingCrash {
    pub cookie: u64,
    pub client: Client,
    pub crash: CrashAnnouncement,
    /// Where the CRASH came from; the DECISION goes there.
    pub peer: SocketAddr,
    /// `seq` of the latest CRASH, which the DECISION echoes.
    pub seq: u32,
    pub dir: DumpDir,
    pub dedup: DedupInfo,
    verdict: Verdict,
    why: DecisionReason,
    nospace_hook_ran: bool,
    /// The client may go to another server (it was granted FAILOVER and its CRASH is not
    /// for its last server): a lack of capacity aborts with `TryElsewhere` instead of
    /// lowering the verdict ([`PendingCrash::may_go_elsewhere`]).
    elsewhere: bool,
    stage: Stage,
}

impl PendingCrash {
    /// Starts the way to the DECISION: dedup's verdict is known, the crash hook (if any)
    /// starts.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cookie: u64,
        client: Client,
        crash: CrashAnnouncement,
        peer: SocketAddr,
        seq: u32,
        dir: DumpDir,
        dedup: DedupInfo,
        hooks: &HookConfig,
    ) -> PendingCrash {
        let (verdict, why) = match dedup.duplicate_of {
            Some(_) => (Verdict::SkipMemory, DecisionReason::Duplicate),
            None => (Verdict::DumpAll, DecisionReason::None),
        };
        let call = hooks.call(HookEvent::Crash, hook_args(&client, &dir), crash_env(&client, &crash, &dir, &dedup));
        let stage = match call {
            Some(c) => Stage::CrashHook(c.spawn()),
            None => Stage::Space,
        };
        PendingCrash {
            cookie,
            client,
            crash,
            peer,
            seq,
            dir,
            dedup,
            verdict,
            why,
            nospace_hook_ran: false,
            elsewhere: false,
            stage,
        }
    }

    /// The client has another server to go to: where this server lacks the capacity for
    /// the whole dump (too many memory dumps at once, not enough space), the DECISION is
    /// ABORT `TryElsewhere` rather than log and registers only (or nothing), so that the
    /// next server may take all of it.
    pub fn may_go_elsewhere(&mut self) {
        self.elsewhere = true;
    }

    /// Lowers the verdict to `verdict` (never raises it), for `why`.
    pub fn lower(&mut self, verdict: Verdict, why: DecisionReason) {
        let rank = |v: Verdict| match v {
            Verdict::DumpAll => 2,
            Verdict::SkipMemory => 1,
            Verdict::Abort => 0,
        };
        if rank(verdict) < rank(self.verdict) {
            (self.verdict, self.why) = (verdict, why);
        }
    }

    /// Moves on as far as it can; returns the DECISION once it is known.
    pub fn advance(&mut self, hooks: &HookConfig, ctx: &dyn AdmissionContext) -> Option<(Verdict, DecisionReason)> {
        loop {
            match &self.stage {
                Stage::CrashHook(running) => {
                    let end = running.poll()?;
                    if end == ProcessEnd::Exited(1) && self.verdict == Verdict::DumpAll {
                        tracing::info!(client = %self.client.name, "crash hook said: skip the memory image");
                        (self.verdict, self.why) = (Verdict::SkipMemory, DecisionReason::Hook);
                    }
                    self.stage = Stage::Space;
                }
                Stage::NoSpaceHook(running) => {
                    running.poll()?;
                    self.stage = Stage::Space;
                }
                Stage::Space => {
                    if self.verdict == Verdict::DumpAll && !ctx.memory_slot_free(&self.crash, &self.client) {
                        if self.elsewhere {
                            tracing::warn!(client = %self.client.name, "too many memory dumps at once: try another server");
                            (self.verdict, self.why) = (Verdict::Abort, DecisionReason::TryElsewhere);
                            self.stage = Stage::Decided;
                            continue;
                        }
                        tracing::warn!(client = %self.client.name, "too many memory dumps at once: log and registers only");
                        (self.verdict, self.why) = (Verdict::SkipMemory, DecisionReason::Busy);
                    }
                    let fit = ctx.space_fit(&self.crash);
                    let fits = match fit {
                        SpaceFit::Everything => true,
                        SpaceFit::LogOnly => self.verdict != Verdict::DumpAll,
                        SpaceFit::Nothing => false,
                    };
                    if !fits && !self.nospace_hook_ran {
                        self.nospace_hook_ran = true;
                        let env = crash_env(&self.client, &self.crash, &self.dir, &self.dedup);
                        if let Some(c) = hooks.call(HookEvent::NoSpace, hook_args(&self.client, &self.dir), env) {
                            tracing::warn!(client = %self.client.name, "not enough space: running the nospace hook");
                            self.stage = Stage::NoSpaceHook(c.spawn());
                            continue;
                        }
                    }
                    match fit {
                        _ if fits => {}
                        _ if self.elsewhere => {
                            (self.verdict, self.why) = (Verdict::Abort, DecisionReason::TryElsewhere)
                        }
                        SpaceFit::LogOnly => (self.verdict, self.why) = (Verdict::SkipMemory, DecisionReason::NoSpace),
                        _ => (self.verdict, self.why) = (Verdict::Abort, DecisionReason::NoSpace),
                    }
                    self.stage = Stage::Decided;
                }
                Stage::Decided => return Some((self.verdict, self.why)),
            }
        }
    }
}

/// `<client IP> <dump directory>`: the arguments of the crash and nospace hooks.
fn hook_args(client: &Client, dir: &DumpDir) -> Vec<String> {
    vec![client.ip.to_string(), dir.path().display().to_string()]
}

/// The environment every hook about a dump gets.
pub fn dump_env(client: &Client, dir: &std::path::Path) -> Vec<(String, String)> {
    vec![
        ("NETDUMP_CLIENT".into(), client.name.clone()),
        ("NETDUMP_CLIENT_IP".into(), client.ip.to_string()),
        ("NETDUMP_CLIENT_MAC".into(), client.mac_string()),
        ("NETDUMP_DUMP_DIR".into(), dir.display().to_string()),
    ]
}

fn crash_env(client: &Client, crash: &CrashAnnouncement, dir: &DumpDir, dedup: &DedupInfo) -> Vec<(String, String)> {
    let mut env = dump_env(client, dir.path());
    env.push(("NETDUMP_MESSAGE".into(), crash.message.clone()));
    env.push(("NETDUMP_MEMORY_BYTES".into(), crash.memory_size().to_string()));
    env.push(("NETDUMP_SIGNATURE".into(), dedup.signature.clone()));
    env.push(("NETDUMP_OCCURRENCE".into(), dedup.occurrence.to_string()));
    if let Some(d) = &dedup.duplicate_of {
        env.push(("NETDUMP_DUPLICATE_OF".into(), d.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::tests::script;
    use crate::test_dir::TestDir;
    use netdump_core::proto::CrashKind;
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    struct Ctx {
        fits: Cell<SpaceFit>,
        slot: bool,
        asked: Cell<u32>,
    }

    impl AdmissionContext for Ctx {
        fn space_fit(&self, _: &CrashAnnouncement) -> SpaceFit {
            self.asked.set(self.asked.get() + 1);
            self.fits.get()
        }
        fn memory_slot_free(&self, _: &CrashAnnouncement, _: &Client) -> bool {
            self.slot
        }
    }

    fn ctx(fits: SpaceFit, slot: bool) -> Ctx {
        Ctx { fits: Cell::new(fits), slot, asked: Cell::new(0) }
    }

    fn pending(dir: &TestDir, hooks: &HookConfig, duplicate_of: Option<&str>) -> PendingCrash {
        let client = Client {
            cookie: 1,
            name: "node".into(),
            mac: [2, 0, 0, 0, 0, 1],
            ip: "10.0.2.15".parse().unwrap(),
            source: "127.0.0.1:6665".parse().unwrap(),
            mtu: 1500,
            page_size: 4096,
            memory_bytes: 1 << 20,
            registered_at: String::new(),
            dump: None,
            protocol_version: 1,
            encrypted: false,
            features: 0,
        };
        let crash = CrashAnnouncement {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count: 1,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            page_size: 4096,
            machine: netdump_core::proto::Machine::X86_64,
            log_len: 10,
            ranges: vec![],
            frames: vec![],
            message: "boom".into(),
        };
        let d = DumpDir::create(dir.path(), "node", crate::utc::now()).unwrap();
        let dedup = DedupInfo { signature: "s".into(), occurrence: 1, duplicate_of: duplicate_of.map(String::from) };
        PendingCrash::start(1, client, crash, "127.0.0.1:1".parse().unwrap(), 0, d, dedup, hooks)
    }

    fn decide(p: &mut PendingCrash, hooks: &HookConfig, c: &Ctx) -> (Verdict, DecisionReason) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(d) = p.advance(hooks, c) {
                return d;
            }
            assert!(Instant::now() < deadline, "no decision");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn without_hooks_space_alone_decides() {
        let dir = TestDir::new("admit-space");
        let hooks = HookConfig::default();
        for (fit, want) in [
            (SpaceFit::Everything, (Verdict::DumpAll, DecisionReason::None)),
            (SpaceFit::LogOnly, (Verdict::SkipMemory, DecisionReason::NoSpace)),
            (SpaceFit::Nothing, (Verdict::Abort, DecisionReason::NoSpace)),
        ] {
            let mut p = pending(&dir, &hooks, None);
            assert_eq!(p.advance(&hooks, &ctx(fit, true)), Some(want));
        }
    }

    #[test]
    fn the_crash_hook_exiting_1_skips_memory_and_other_statuses_do_not() {
        let dir = TestDir::new("admit-hook");
        for (status, want) in [(1, Verdict::SkipMemory), (0, Verdict::DumpAll), (2, Verdict::DumpAll)] {
            let hooks = HookConfig {
                crash: Some(script(
                    dir.path(),
                    &format!("crash{status}"),
                    &format!("[ -d \"$2\" ] || exit 9; exit {status}"),
                )),
                ..HookConfig::default()
            };
            let mut p = pending(&dir, &hooks, None);
            let (verdict, why) = decide(&mut p, &hooks, &ctx(SpaceFit::Everything, true));
            assert_eq!(verdict, want, "exit {status}");
            if status == 1 {
                assert_eq!(why, DecisionReason::Hook);
            }
        }
    }

    #[test]
    fn a_duplicate_skips_memory_and_a_busy_server_too() {
        let dir = TestDir::new("admit-dup");
        let hooks = HookConfig::default();
        let mut p = pending(&dir, &hooks, Some("node-earlier"));
        assert_eq!(
            p.advance(&hooks, &ctx(SpaceFit::Everything, true)),
            Some((Verdict::SkipMemory, DecisionReason::Duplicate))
        );
        let mut p = pending(&dir, &hooks, None);
        assert_eq!(
            p.advance(&hooks, &ctx(SpaceFit::Everything, false)),
            Some((Verdict::SkipMemory, DecisionReason::Busy))
        );
    }

    #[test]
    fn a_client_that_can_go_elsewhere_is_sent_there_instead_of_losing_memory() {
        let dir = TestDir::new("admit-elsewhere");
        let hooks = HookConfig::default();
        let elsewhere = |fit, slot_free| {
            let mut p = pending(&dir, &hooks, None);
            p.may_go_elsewhere();
            p.advance(&hooks, &ctx(fit, slot_free))
        };
        let try_elsewhere = Some((Verdict::Abort, DecisionReason::TryElsewhere));
        // Too many memory dumps at once, not enough space for memory, nor for anything.
        assert_eq!(elsewhere(SpaceFit::Everything, false), try_elsewhere);
        assert_eq!(elsewhere(SpaceFit::LogOnly, true), try_elsewhere);
        assert_eq!(elsewhere(SpaceFit::Nothing, true), try_elsewhere);
        // Room for everything: the dump stays here.
        assert_eq!(elsewhere(SpaceFit::Everything, true), Some((Verdict::DumpAll, DecisionReason::None)));
        // A duplicate needs no memory slot and fits with the log alone: it stays too.
        let mut p = pending(&dir, &hooks, Some("node-earlier"));
        p.may_go_elsewhere();
        assert_eq!(
            p.advance(&hooks, &ctx(SpaceFit::LogOnly, false)),
            Some((Verdict::SkipMemory, DecisionReason::Duplicate))
        );
    }

    #[test]
    fn the_nospace_hook_runs_once_and_space_is_checked_again() {
        let dir = TestDir::new("admit-nospace");
        let marker = dir.path().join("nospace-ran");
        let hooks = HookConfig {
            nospace: Some(script(dir.path(), "nospace", &format!("echo \"$1\" >> {}", marker.display()))),
            ..HookConfig::default()
        };
        // The hook frees room: the second check finds everything fits.
        let c = ctx(SpaceFit::LogOnly, true);
        let mut p = pending(&dir, &hooks, None);
        assert_eq!(p.advance(&hooks, &c), None, "waits for the hook");
        c.fits.set(SpaceFit::Everything);
        assert_eq!(decide(&mut p, &hooks, &c), (Verdict::DumpAll, DecisionReason::None));
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "10.0.2.15\n");
        // It did not: skip memory, and the hook ran once only.
        std::fs::remove_file(&marker).unwrap();
        let c = ctx(SpaceFit::LogOnly, true);
        let mut p = pending(&dir, &hooks, None);
        assert_eq!(decide(&mut p, &hooks, &c), (Verdict::SkipMemory, DecisionReason::NoSpace));
        assert_eq!(c.asked.get(), 2);
        assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1);
    }
}
