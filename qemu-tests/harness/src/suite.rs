//! The QEMU scenarios and what each must prove about what arrived on the server.

use crate::check;
use crate::gdb;
use crate::netdumpd::{free_udp_port, Netdumpd};
use crate::qemu::{NicModel, QemuOutcome, QemuRun};
use crate::vmcore::{Vmcore, PR_REG_RIP};
use anyhow::{bail, ensure, Context, Result};
use netdump_test_pattern::Pattern;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Exit codes of the test kernel (`qemu-tests/kernel/src/main.rs`, `mod exit`).
pub mod exit {
    pub const SUCCESS: u32 = 0x10;
    pub const FAILURE: u32 = 0x11;
    pub const DUMP_FAILED: u32 = 0x12;
    pub const INSTALL_FAILED: u32 = 0x13;
    pub const NESTED_PANIC: u32 = 0x14;
}

/// Where the built artefacts are.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub test_kernel: PathBuf,
    pub conformance_kernel: PathBuf,
    pub netdumpd: PathBuf,
    /// Scratch space for this run (dump directories, serial logs).
    pub work_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dump,
    Takeover,
    NoServer,
    NestedPanic,
    /// The NIC conformance kernel, datagrams counted on the host.
    Conformance,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub kind: Kind,
    pub nic: NicModel,
    pub memory_mib: u32,
    pub pattern: Pattern,
}

impl Scenario {
    pub fn id(&self) -> String {
        format!("{}-{}", self.name, self.nic.name())
    }
}

/// Every scenario of the suite.
pub fn all() -> Vec<Scenario> {
    let pattern = |seed| Pattern { base: 32 << 20, len: 16 << 20, seed, zero_every: 7 };
    let mut v = vec![];
    for nic in [NicModel::E1000] {
        v.push(Scenario { name: "dump", kind: Kind::Dump, nic, memory_mib: 64, pattern: pattern(0x1111) });
        v.push(Scenario { name: "takeover", kind: Kind::Takeover, nic, memory_mib: 64, pattern: pattern(0x2222) });
        v.push(Scenario { name: "no-server", kind: Kind::NoServer, nic, memory_mib: 64, pattern: pattern(0x3333) });
        v.push(Scenario { name: "nested-panic", kind: Kind::NestedPanic, nic, memory_mib: 64, pattern: pattern(0x4444) });
        v.push(Scenario { name: "conformance", kind: Kind::Conformance, nic, memory_mib: 64, pattern: pattern(0) });
    }
    v
}

/// What a passing scenario measured, for the summary line.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub detail: String,
    pub bytes: u64,
    pub seconds: f64,
    /// The dump directory, when one was written.
    pub dump_dir: Option<PathBuf>,
}

const HELLO_ATTEMPTS: u64 = 3;
const HELLO_RETRY_MS: u64 = 300;
/// ARP for the gateway: at most 10 × 200 ms (netdump-core's default).
const ARP_BOUND_MS: u64 = 2000;
const SESSION_TIMEOUT_S: u64 = 3;

fn append(s: &Scenario, port: u16) -> String {
    let kind = match s.kind {
        Kind::Dump => "dump",
        Kind::Takeover => "takeover",
        Kind::NoServer => "no-server",
        Kind::NestedPanic => "nested-panic",
        Kind::Conformance => return format!("port={port} frames=5000"),
    };
    let p = s.pattern;
    format!(
        "scenario={kind} server_port={port} name={} pattern_base={} pattern_len={} seed={} zero_every={} hello_attempts={HELLO_ATTEMPTS} hello_retry_ms={HELLO_RETRY_MS}",
        s.id(), p.base, p.len, p.seed, p.zero_every
    )
}

fn expect_exit(q: &QemuOutcome, want: u32, what: &str) -> Result<()> {
    if q.timed_out {
        bail!("QEMU timed out ({what}); serial:\n{}", q.serial);
    }
    if q.exit_code != Some(want) {
        bail!("kernel exit code {:?}, expected {want:#x} ({what}); serial:\n{}", q.exit_code, q.serial);
    }
    Ok(())
}

/// Runs one scenario end to end.
pub fn run(s: &Scenario, a: &Artifacts) -> Result<Outcome> {
    let dir = a.work_dir.join(s.id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if s.kind == Kind::Conformance {
        return run_conformance(s, a, &dir);
    }
    let server = match s.kind {
        Kind::NoServer | Kind::Conformance => None,
        _ => Some(Netdumpd::start(&a.netdumpd, &dir.join("crash"), &["--session-timeout", &SESSION_TIMEOUT_S.to_string()])?),
    };
    let port = match &server {
        Some(srv) => srv.port,
        None => free_udp_port()?,
    };
    let qemu = QemuRun {
        kernel: &a.test_kernel,
        memory_mib: s.memory_mib,
        append: append(s, port),
        nic: s.nic,
        serial_log: dir.join("serial.log"),
        timeout: Duration::from_secs(180),
    };
    let q = qemu.run()?;
    let result = match s.kind {
        Kind::Dump | Kind::Takeover => {
            let srv = server.as_ref().context("server")?;
            expect_exit(&q, exit::SUCCESS, "the dump should verify").and_then(|_| check_complete_dump(s, a, srv, &q))
        }
        Kind::NoServer => check_no_server(&q),
        Kind::Conformance => unreachable!("handled above"),
        Kind::NestedPanic => {
            let srv = server.as_ref().context("server")?;
            expect_exit(&q, exit::NESTED_PANIC, "a panic inside the dump must end it").and_then(|_| check_incomplete_dump(s, srv))
        }
    };
    let server_log = server.map(|srv| srv.stop()).unwrap_or_default();
    result.map_err(|e| anyhow::anyhow!("{e:#}\n--- netdumpd log (tail) ---\n{}", tail(&server_log, 30)))
}

/// The conformance kernel must pass every check and every counted datagram must arrive.
fn run_conformance(s: &Scenario, a: &Artifacts, dir: &Path) -> Result<Outcome> {
    let listener = crate::conformance::Listener::start()?;
    let q = QemuRun {
        kernel: &a.conformance_kernel,
        memory_mib: s.memory_mib,
        append: append(s, listener.port),
        nic: s.nic,
        serial_log: dir.join("serial.log"),
        timeout: Duration::from_secs(180),
    }
    .run()?;
    let arrived = listener.finish();
    expect_exit(&q, exit::SUCCESS, "every conformance check must pass")?;
    let checks = q.serial.lines().filter(|l| l.starts_with("CHECK")).count();
    ensure!(checks > 0, "the conformance kernel reported no checks:\n{}", q.serial);
    Ok(Outcome { detail: format!("{checks} checks passed; host received {}", arrived?), ..Default::default() })
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn read_info(dump: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(dump.join("info.json")).with_context(|| format!("read {}/info.json", dump.display()))?;
    serde_json::from_str(&text).context("parse info.json")
}

/// The dump must have arrived complete and bit-exact.
fn check_complete_dump(s: &Scenario, a: &Artifacts, srv: &Netdumpd, q: &QemuOutcome) -> Result<Outcome> {
    let dumps = srv.dumps_of(&s.id());
    ensure!(dumps.len() == 1, "expected one dump directory for {}, found {:?}", s.id(), dumps);
    let dump = &dumps[0];
    let vmcore = dump.join("vmcore");
    ensure!(vmcore.exists(), "no vmcore in {} (vmcore-incomplete: {})", dump.display(), dump.join("vmcore-incomplete").exists());
    let info = read_info(dump)?;
    check::info_says_complete(&info)?;
    let core = Vmcore::open(&vmcore)?;
    check::pattern_matches(&core, &s.pattern).context("pattern check")?;
    check::is_sparse(&vmcore, &s.pattern)?;
    let regs = core.prstatus_registers();
    ensure!(regs.len() == 1, "expected one NT_PRSTATUS, found {}", regs.len());
    ensure!(regs[0][PR_REG_RIP] != 0, "NT_PRSTATUS rip is zero");
    let log = std::fs::read_to_string(dump.join("log")).context("read log")?;
    let panic_message = format!("netdump test panic (seed {:#x})", s.pattern.seed);
    check::log_has(&log, &[&panic_message, "console line before the crash: 1", "console line before the crash: 2", "netdump test kernel:"])?;
    let bt = gdb::backtrace(&a.test_kernel, &vmcore)?;
    ensure!(bt.contains("netdump_test_crash_site"), "gdb backtrace lacks the panicking function:\n{bt}");
    if s.kind == Kind::Takeover {
        ensure!(q.serial.contains("ordinary traffic: 3000 frames sent"), "the kernel did not send its ordinary traffic before the panic");
    }
    let bytes = info.pointer("/bytes_received").and_then(|v| v.as_u64()).unwrap_or(0);
    let seconds = info.pointer("/duration_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
    Ok(Outcome { detail: format!("{} MiB RAM, {} MiB pattern bit-exact, gdb bt ok", s.memory_mib, s.pattern.len >> 20), bytes, seconds, dump_dir: Some(dump.clone()) })
}

/// No server: install fails with ServerSilent within its configured bound.
fn check_no_server(q: &QemuOutcome) -> Result<Outcome> {
    expect_exit(q, exit::INSTALL_FAILED, "install must give up when no server answers")?;
    let line = q.serial.lines().find(|l| l.contains("install failed after")).context("kernel did not report the install failure")?;
    ensure!(line.contains("ServerSilent"), "unexpected install failure: {line}");
    let ms: u64 = line.split("after ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).context("no wait time in the report")?;
    let bound = ARP_BOUND_MS + HELLO_ATTEMPTS * HELLO_RETRY_MS;
    ensure!(ms <= bound, "install waited {ms} ms, beyond its configured bound of {bound} ms");
    Ok(Outcome { detail: format!("install gave up after {ms} ms (bound {bound} ms)"), ..Default::default() })
}

/// A panic inside the dump: the server must mark the dump incomplete, never complete.
fn check_incomplete_dump(s: &Scenario, srv: &Netdumpd) -> Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(SESSION_TIMEOUT_S * 5 + 10);
    loop {
        if let Some(dump) = srv.dumps_of(&s.id()).first() {
            if let Ok(info) = read_info(dump) {
                let status = info.pointer("/status").and_then(|v| v.as_str()).unwrap_or("");
                if status == "incomplete" {
                    ensure!(!dump.join("vmcore").exists(), "an interrupted dump was renamed to vmcore");
                    ensure!(dump.join("vmcore-incomplete").exists(), "vmcore-incomplete missing");
                    return Ok(Outcome { detail: "dump ended by the nested panic, server marked it incomplete".into(), dump_dir: Some(dump.clone()), ..Default::default() });
                }
                ensure!(status != "complete", "an interrupted dump was marked complete");
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not mark the interrupted dump incomplete");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Negative control: the checker must reject a copy of a good vmcore with one byte of the
/// pattern flipped.
pub fn negative_control(s: &Scenario, good: &Path, scratch: &Path) -> Result<()> {
    std::fs::copy(good, scratch)?;
    let core = Vmcore::open(scratch)?;
    let target = s.pattern.base + s.pattern.len / 2 + 13;
    let seg = core.loads().find(|g| target >= g.paddr && target < g.paddr + g.filesz).context("pattern not in the vmcore")?;
    let offset = seg.offset + (target - seg.paddr);
    drop(core);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(scratch)?;
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 0x20;
    f.write_all_at(&b, offset)?;
    drop(f);
    let result = check::pattern_matches(&Vmcore::open(scratch)?, &s.pattern);
    std::fs::remove_file(scratch)?;
    match result {
        Err(e) if e.to_string().contains(&format!("{:#x}", target & !7)) => Ok(()),
        Err(e) => bail!("checker rejected the flipped byte for the wrong reason: {e}"),
        Ok(()) => bail!("checker accepted a vmcore with a flipped byte at {target:#x}"),
    }
}

/// Runs scenarios on `jobs` threads; prints a line per scenario; returns failures.
pub fn run_all(scenarios: &[Scenario], a: &Artifacts, jobs: usize) -> Vec<(String, String)> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(vec![]);
    let good_core: Mutex<Option<(Scenario, PathBuf)>> = Mutex::new(None);
    println!("{:<24} {:>10} {:>8} {:>9}  result", "scenario", "dumped", "time", "MB/s");
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(s) = scenarios.get(i) else { break };
                let started = Instant::now();
                match run(s, a) {
                    Ok(o) => {
                        let secs = if o.seconds > 0.0 { o.seconds } else { started.elapsed().as_secs_f64() };
                        let mbs = if o.bytes > 0 && o.seconds > 0.0 { format!("{:.1}", o.bytes as f64 / o.seconds / 1e6) } else { "-".into() };
                        let dumped = if o.bytes > 0 { format!("{:.1} MiB", o.bytes as f64 / (1 << 20) as f64) } else { "-".into() };
                        println!("{:<24} {:>10} {:>7.1}s {:>9}  PASS  {}", s.id(), dumped, secs, mbs, o.detail);
                        if s.kind == Kind::Dump {
                            if let Some(d) = o.dump_dir {
                                *good_core.lock().unwrap() = Some((s.clone(), d.join("vmcore")));
                            }
                        }
                    }
                    Err(e) => {
                        println!("{:<24} {:>10} {:>7.1}s {:>9}  FAIL", s.id(), "-", started.elapsed().as_secs_f64(), "-");
                        failures.lock().unwrap().push((s.id(), format!("{e:#}")));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    match good_core.into_inner().unwrap() {
        Some((s, core)) => match negative_control(&s, &core, &a.work_dir.join("negative-control.vmcore")) {
            Ok(()) => println!("{:<24} {:>10} {:>8} {:>9}  PASS  checker rejects a vmcore with one flipped byte", "negative-control", "-", "-", "-"),
            Err(e) => failures.push(("negative-control".into(), format!("{e:#}"))),
        },
        None if scenarios.iter().any(|s| s.kind == Kind::Dump) => failures.push(("negative-control".into(), "no good vmcore to corrupt".into())),
        None => {}
    }
    failures
}
