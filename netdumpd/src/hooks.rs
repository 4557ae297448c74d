//! Hook scripts, as Red Hat's netdump-server had them (netdump-start, netdump-crash,
//! netdump-nospace, netdump-reboot) and FreeBSD netdumpd's `-i script`:
//!
//! | event | when | arguments | its exit status |
//! |---|---|---|---|
//! | `register` | a client registered (HELLO) | client IP, client name | ignored |
//! | `crash` | a crash was announced, before the DECISION | client IP, dump directory | 1: skip the memory image |
//! | `nospace` | the memory image does not fit beside the reserve, before the DECISION | client IP, dump directory | ignored; free space is checked again once |
//! | `finished` | a dump ended | outcome (`complete`, `incomplete`, `skipped`, `duplicate`), client IP, dump directory | ignored |
//!
//! Every hook also gets `NETDUMP_*` environment variables (the event, client, paths, and
//! per event the message, signature, analysis file …). A hook runs in its own process
//! group with stdin closed; its stdout and stderr are logged line by line, and it is
//! killed (the whole group) when it outlives its bound. The `crash` and `nospace` hooks
//! delay the DECISION while the client waits, so they run on a thread of their own and
//! the server keeps serving other clients meanwhile.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hooks an admin configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub register: Option<PathBuf>,
    pub crash: Option<PathBuf>,
    pub nospace: Option<PathBuf>,
    pub finished: Option<PathBuf>,
    /// Bound of the `crash` and `nospace` hooks, which the client waits for: together
    /// they must stay well below the client's announce timeout (10 s by default).
    pub decision_timeout: Duration,
    /// Bound of the `register` and `finished` hooks.
    pub timeout: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            register: None,
            crash: None,
            nospace: None,
            finished: None,
            decision_timeout: Duration::from_secs(4),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    Register,
    Crash,
    NoSpace,
    Finished,
}

impl HookEvent {
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::Register => "register",
            HookEvent::Crash => "crash",
            HookEvent::NoSpace => "nospace",
            HookEvent::Finished => "finished",
        }
    }
}

impl HookConfig {
    /// The script configured for `event`, and its bound.
    pub fn script(&self, event: HookEvent) -> Option<(&Path, Duration)> {
        let (path, bound) = match event {
            HookEvent::Register => (&self.register, self.timeout),
            HookEvent::Crash => (&self.crash, self.decision_timeout),
            HookEvent::NoSpace => (&self.nospace, self.decision_timeout),
            HookEvent::Finished => (&self.finished, self.timeout),
        };
        path.as_deref().map(|p| (p, bound))
    }

    /// A call of the hook for `event`, when one is configured.
    ///
    /// Values from the network (a panic message, say) may hold NUL bytes, which no
    /// argument or environment variable can carry: each is written `\\0`, so the hook
    /// always starts and sees every other byte as sent.
    pub fn call(&self, event: HookEvent, args: Vec<String>, env: Vec<(String, String)>) -> Option<HookCall> {
        let (script, timeout) = self.script(event)?;
        let args = args.into_iter().map(without_nul).collect();
        let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, without_nul(v))).collect();
        env.push(("NETDUMP_EVENT".into(), event.name().into()));
        Some(HookCall { event, program: BoundedCommand { program: script.to_path_buf(), args, env, timeout } })
    }
}

/// `s` with each NUL byte written as the two characters `\\0`.
fn without_nul(s: String) -> String {
    if s.contains('\0') { s.replace('\0', "\\0") } else { s }
}

/// How a bounded child process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEnd {
    /// Exited with this status code.
    Exited(i32),
    /// Killed by a signal it did not ask for.
    Signalled,
    /// Outlived its bound and was killed.
    TimedOut,
    /// Could not be started (missing, not executable, …).
    NotStarted(String),
}

impl std::fmt::Display for ProcessEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessEnd::Exited(c) => write!(f, "exit status {c}"),
            ProcessEnd::Signalled => f.write_str("killed by a signal"),
            ProcessEnd::TimedOut => f.write_str("timed out and was killed"),
            ProcessEnd::NotStarted(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// The result of a bounded run: how it ended and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    pub end: ProcessEnd,
    pub stdout: String,
    pub stderr: String,
}

/// Most output kept from one stream of a child.
const MAX_OUTPUT: u64 = 1 << 20;
/// After a child exits, how long its output pipes may stay open (a background
/// grandchild holding them) before the rest is abandoned.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// A program run with a time bound, in its own process group, stdin closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl BoundedCommand {
    /// Runs the program to its end or its bound, collecting stdout and stderr.
    pub fn run(&self) -> ProcessOutput {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return ProcessOutput {
                    end: ProcessEnd::NotStarted(e.to_string()),
                    stdout: String::new(),
                    stderr: String::new(),
                };
            }
        };
        let stdout = read_in_thread(child.stdout.take());
        let stderr = read_in_thread(child.stderr.take());
        let started = Instant::now();
        let end = loop {
            match child.try_wait() {
                Ok(Some(status)) => break exit_of(status),
                Ok(None) if started.elapsed() >= self.timeout => {
                    kill_group(child.id());
                    let _ = child.wait();
                    break ProcessEnd::TimedOut;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    kill_group(child.id());
                    let _ = child.wait();
                    break ProcessEnd::NotStarted(e.to_string());
                }
            }
        };
        let stdout = stdout.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
        let stderr = stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
        ProcessOutput { end, stdout, stderr }
    }
}

fn read_in_thread(stream: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(s) = stream {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut limited = s.take(MAX_OUTPUT);
            let _ = limited.read_to_end(&mut bytes);
            // Keep draining (and discarding) so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
            let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
        });
    }
    rx
}

fn exit_of(status: ExitStatus) -> ProcessEnd {
    match status.code() {
        Some(c) => ProcessEnd::Exited(c),
        None => ProcessEnd::Signalled,
    }
}

/// Kills the process group `pgid` (the child made itself its leader).
fn kill_group(pgid: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no
        // memory of ours. The group is the child's own (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// One invocation of a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub event: HookEvent,
    pub program: BoundedCommand,
}

impl HookCall {
    /// Runs the hook to its end or bound and logs what it printed and how it ended.
    pub fn run(&self) -> ProcessEnd {
        let name = self.event.name();
        let script = self.program.program.display().to_string();
        tracing::info!(hook = name, %script, args = ?self.program.args, "running hook");
        let out = self.program.run();
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(hook = name, "hook stdout: {}", line.escape_debug());
        }
        for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(hook = name, "hook stderr: {}", line.escape_debug());
        }
        match &out.end {
            ProcessEnd::Exited(0) => tracing::info!(hook = name, "hook finished"),
            ProcessEnd::Exited(c) => tracing::info!(hook = name, status = c, "hook finished"),
            other => tracing::warn!(hook = name, %script, "hook {other}"),
        }
        out.end
    }

    /// Runs the hook on a thread of its own; the result can be polled.
    pub fn spawn(self) -> RunningHook {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.run());
        });
        RunningHook { rx }
    }
}

/// A hook running on its own thread.
#[derive(Debug)]
pub struct RunningHook {
    rx: mpsc::Receiver<ProcessEnd>,
}

impl RunningHook {
    /// How it ended, once it has; `None` while it runs.
    pub fn poll(&self) -> Option<ProcessEnd> {
        match self.rx.try_recv() {
            Ok(end) => Some(end),
            Err(mpsc::TryRecvError::Empty) => None,
            // The thread died without an answer: treat as a hook that could not run.
            Err(mpsc::TryRecvError::Disconnected) => Some(ProcessEnd::NotStarted("hook thread ended".into())),
        }
    }

    /// Waits for the end (the hook's own bound limits the wait).
    pub fn wait(self) -> ProcessEnd {
        self.rx.recv().unwrap_or_else(|_| ProcessEnd::NotStarted("hook thread ended".into()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::PermissionsExt;

    /// Writes an executable shell script.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn cmd(program: PathBuf, timeout_ms: u64) -> BoundedCommand {
        BoundedCommand {
            program,
            args: vec!["a b".into(), "c".into()],
            env: vec![("NETDUMP_X".into(), "y".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn a_hook_gets_its_arguments_and_environment_and_its_status_is_returned() {
        let dir = TestDir::new("hook-args");
        let s = script(dir.path(), "h", "echo \"[$1] [$2] $NETDUMP_X\"; echo oops >&2; exit 3");
        let out = cmd(s, 5000).run();
        assert_eq!(out.end, ProcessEnd::Exited(3));
        assert_eq!(out.stdout, "[a b] [c] y\n");
        assert_eq!(out.stderr, "oops\n");
    }

    #[test]
    fn a_hook_that_outlives_its_bound_is_killed_with_its_children() {
        let dir = TestDir::new("hook-timeout");
        let marker = dir.path().join("survived");
        let s = script(dir.path(), "slow", &format!("(sleep 2; touch {}) & sleep 30", marker.display()));
        let started = Instant::now();
        let out = cmd(s, 200).run();
        assert_eq!(out.end, ProcessEnd::TimedOut);
        // Bounded by its timeout plus the output grace, far below the 30 s it wanted.
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "the hook's background child was not killed");
    }

    #[test]
    fn a_nul_in_a_value_from_the_network_does_not_keep_the_hook_from_running() {
        let dir = TestDir::new("hook-nul");
        let out = dir.path().join("seen");
        let body = format!("printf '%s|%s' \"$1\" \"$NETDUMP_MESSAGE\" > {}; exit 1", out.display());
        let config = HookConfig { crash: Some(script(dir.path(), "crash", &body)), ..HookConfig::default() };
        let env = vec![("NETDUMP_MESSAGE".to_string(), "boom\0after".to_string())];
        let call = config.call(HookEvent::Crash, vec!["a\0b".into()], env).unwrap();
        // Exit 1 is the hook's "skip the memory image": it ran, and said so.
        assert_eq!(call.run(), ProcessEnd::Exited(1));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\\0b|boom\\0after");
    }

    #[test]
    fn a_missing_hook_is_reported_not_fatal() {
        let dir = TestDir::new("hook-missing");
        let out = cmd(dir.path().join("nope"), 1000).run();
        assert!(matches!(out.end, ProcessEnd::NotStarted(_)));
    }

    #[test]
    fn a_spawned_hook_is_polled_to_its_end_and_knows_its_event() {
        let dir = TestDir::new("hook-spawn");
        let s = script(dir.path(), "h", "[ \"$NETDUMP_EVENT\" = crash ] && exit 1; exit 0");
        let config = HookConfig { crash: Some(s), ..HookConfig::default() };
        assert!(config.call(HookEvent::Finished, vec![], vec![]).is_none(), "not configured");
        let running = config.call(HookEvent::Crash, vec![], vec![]).unwrap().spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(end) = running.poll() {
                break end;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(end, ProcessEnd::Exited(1));
    }
}
