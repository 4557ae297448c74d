//! What most scenarios share: booting the test kernel against a netdumpd, and the
//! checks of a complete or an incomplete dump.

use crate::check;
use crate::gdb;
use crate::netdumpd::Netdumpd;
use crate::qemu::{QemuOutcome, QemuRun};
use crate::suite::{Ctx, Outcome};
use crate::vmcore::{PR_REG_RIP, Vmcore};
use anyhow::{Context, Result, bail, ensure};
use netdump_test_pattern::Pattern;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit codes of the test kernel (`qemu-tests/kernel/src/main.rs`, `mod exit`).
pub mod exit {
    pub const SUCCESS: u32 = 0x10;
    pub const FAILURE: u32 = 0x11;
    pub const DUMP_FAILED: u32 = 0x12;
    pub const INSTALL_FAILED: u32 = 0x13;
    pub const NESTED_PANIC: u32 = 0x14;
}

/// Seconds of silence after which the harness's netdumpd marks a dump incomplete.
pub const SESSION_TIMEOUT_S: u64 = 3;

/// A pattern of 16 MiB at 32 MiB, every 7th page zero.
pub fn pattern(seed: u64) -> Pattern {
    Pattern { base: 32 << 20, len: 16 << 20, seed, zero_every: 7 }
}

/// One boot of the test kernel.
pub struct KernelRun {
    pub scenario: &'static str,
    pub memory_mib: u32,
    /// CPUs the guest has (`-smp`).
    pub cpus: u32,
    /// Where to capture the NIC's frames (pcap), if anywhere.
    pub capture: Option<PathBuf>,
    pub pattern: Pattern,
    /// Further `key=value` arguments.
    pub extra: String,
    /// The client's name when a scenario boots several kernels (default: the scenario
    /// id); it also names the serial log.
    pub client: Option<String>,
}

impl KernelRun {
    pub fn new(scenario: &'static str, pattern: Pattern) -> Self {
        KernelRun { scenario, memory_mib: 64, cpus: 1, capture: None, pattern, extra: String::new(), client: None }
    }

    pub fn append(&self, ctx: &Ctx, port: u16) -> String {
        let p = self.pattern;
        format!(
            "scenario={} server_port={port} name={} pattern_base={} pattern_len={} seed={} zero_every={} {}",
            self.scenario,
            self.client.as_deref().unwrap_or(&ctx.id),
            p.base,
            p.len,
            p.seed,
            p.zero_every,
            self.extra
        )
    }

    pub fn boot(&self, ctx: &Ctx, port: u16) -> Result<QemuOutcome> {
        let serial = self.client.as_ref().map_or("serial.log".into(), |c| format!("{c}.serial.log"));
        QemuRun {
            kernel: &ctx.artifacts.test_kernel,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            append: self.append(ctx, port),
            nic: ctx.nic,
            serial_log: ctx.dir.join(serial),
            timeout: Duration::from_secs(240),
            capture: self.capture.clone(),
        }
        .run()
    }
}

/// Starts the scenario's own netdumpd (in `<dir>/crash`).
pub fn start_server(ctx: &Ctx, extra: &[&str]) -> Result<Netdumpd> {
    start_server_with_timeout(ctx, SESSION_TIMEOUT_S, extra)
}

/// [`start_server`] with another session timeout, for a scenario where the server's own
/// bound must not race a client's.
pub fn start_server_with_timeout(ctx: &Ctx, session_timeout_s: u64, extra: &[&str]) -> Result<Netdumpd> {
    let timeout = session_timeout_s.to_string();
    let mut args = vec!["--session-timeout", timeout.as_str()];
    args.extend_from_slice(extra);
    Netdumpd::start(&ctx.artifacts.netdumpd, &ctx.dir.join("crash"), &args)
}

pub fn expect_exit(q: &QemuOutcome, want: u32, what: &str) -> Result<()> {
    if q.timed_out {
        bail!("QEMU timed out ({what}); serial:\n{}", q.serial);
    }
    if q.exit_code != Some(want) {
        bail!("kernel exit code {:?}, expected {want:#x} ({what}); serial:\n{}", q.exit_code, q.serial);
    }
    Ok(())
}

/// How long a scenario waits for an event that must come (a file the server writes, a
/// log line, a count): only a failure takes this long, so it is generous enough for a
/// host busy with other work (`cargo xtask qemu-test --stress`).
pub const EVENT_PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` until it says yes: the event a check waits for. `patience` bounds only
/// the failure (the event never came); the error says `what` was awaited.
pub fn wait_until<T>(patience: Duration, what: &str, mut done: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(t) = done()? {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {patience:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until netdumpd's log contains each of `needles` (colour codes removed): the
/// server writes a line when it acts, the harness may read the file a moment before.
pub fn wait_for_log(srv: &Netdumpd, needles: &[&str]) -> Result<()> {
    let mut missing = vec![];
    wait_until(EVENT_PATIENCE, "netdumpd's log lines", || {
        let log = without_colours(&srv.log_text());
        missing = needles.iter().filter(|n| !log.contains(**n)).map(|n| n.to_string()).collect();
        Ok(missing.is_empty().then_some(()))
    })
    .with_context(|| format!("netdumpd logged no {missing:?}"))
}

/// A drop counter of netdumpd's `stats.json` or of a dump's `info.json` (`drops.<reason>`).
pub fn drops(v: &serde_json::Value, reason: &str) -> u64 {
    v.pointer(&format!("/drops/{reason}")).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// netdumpd's log without the terminal colour codes tracing puts around field names.
pub fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `f` and, when it fails, appends the tail of the server's log to the error.
pub fn with_server_log<T>(srv: Netdumpd, f: impl FnOnce(&Netdumpd) -> Result<T>) -> Result<T> {
    let r = f(&srv);
    let log = srv.stop();
    r.map_err(|e| anyhow::anyhow!("{e:#}\n--- netdumpd log (tail) ---\n{}", tail(&log, 30)))
}

pub fn read_info(dump: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(dump.join("info.json"))
        .with_context(|| format!("read {}/info.json", dump.display()))?;
    serde_json::from_str(&text).context("parse info.json")
}

/// The one dump directory of this scenario's client.
pub fn only_dump(ctx: &Ctx, srv: &Netdumpd) -> Result<PathBuf> {
    only_dump_of(srv, &ctx.id)
}

/// The one dump directory of client `name`.
pub fn only_dump_of(srv: &Netdumpd, name: &str) -> Result<PathBuf> {
    let dumps = srv.dumps_of(name);
    ensure!(dumps.len() == 1, "expected one dump directory for {name}, found {dumps:?}");
    Ok(dumps[0].clone())
}

/// A complete, bit-exact dump: `vmcore` (not `-incomplete`), info.json complete with the
/// CRC verified, the pattern bit for bit, holes for zero pages, one NT_PRSTATUS, the
/// console lines and panic message in `log`, and gdb's backtrace naming `bt_function`.
pub fn check_complete_dump(
    ctx: &Ctx,
    srv: &Netdumpd,
    pattern: &Pattern,
    panic_message: &str,
    bt_function: &str,
) -> Result<(PathBuf, Outcome)> {
    check_complete_dump_of(ctx, srv, &ctx.id, pattern, panic_message, bt_function)
}

/// [`check_complete_dump`] of client `name`, when a scenario boots several.
pub fn check_complete_dump_of(
    ctx: &Ctx,
    srv: &Netdumpd,
    name: &str,
    pattern: &Pattern,
    panic_message: &str,
    bt_function: &str,
) -> Result<(PathBuf, Outcome)> {
    let dump = only_dump_of(srv, name)?;
    check_complete_dump_in(ctx, dump, pattern, panic_message, bt_function)
}

/// [`check_complete_dump`] of the dump in directory `dump`, when a client has several.
pub fn check_complete_dump_in(
    ctx: &Ctx,
    dump: PathBuf,
    pattern: &Pattern,
    panic_message: &str,
    bt_function: &str,
) -> Result<(PathBuf, Outcome)> {
    let vmcore = dump.join("vmcore");
    ensure!(
        vmcore.exists(),
        "no vmcore in {} (vmcore-incomplete: {})",
        dump.display(),
        dump.join("vmcore-incomplete").exists()
    );
    let info = read_info(&dump)?;
    check::info_says_complete(&info)?;
    let core = Vmcore::open(&vmcore)?;
    check::pattern_matches(&core, pattern).context("pattern check")?;
    check::is_sparse(&vmcore, pattern)?;
    let regs = core.prstatus_registers();
    ensure!(!regs.is_empty(), "no NT_PRSTATUS in the vmcore");
    ensure!(regs[0][PR_REG_RIP] != 0, "NT_PRSTATUS rip is zero");
    let log = std::fs::read_to_string(dump.join("log")).context("read log")?;
    check::log_has(
        &log,
        &[
            panic_message,
            "console line before the crash: 1",
            "console line before the crash: 2",
            "netdump test kernel:",
        ],
    )?;
    let bt = gdb::backtrace(&ctx.artifacts.test_kernel, &vmcore)?;
    ensure!(bt.contains(bt_function), "gdb backtrace lacks {bt_function}:\n{bt}");
    ensure!(!bt.contains("warning:"), "gdb complains about the vmcore:\n{bt}");
    let bytes = info.pointer("/bytes_received").and_then(|v| v.as_u64()).unwrap_or(0);
    let seconds = info.pointer("/duration_seconds").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let detail = format!("{} MiB pattern bit-exact, gdb bt ok", pattern.len >> 20);
    Ok((dump, Outcome { detail, bytes, seconds }))
}

/// Waits until the server marked the dump `incomplete`; fails if it was ever `complete`
/// or renamed to `vmcore`.
pub fn wait_incomplete(ctx: &Ctx, srv: &Netdumpd) -> Result<(PathBuf, serde_json::Value)> {
    let deadline = Instant::now() + Duration::from_secs(SESSION_TIMEOUT_S * 5).max(EVENT_PATIENCE);
    loop {
        if let Some(dump) = srv.dumps_of(&ctx.id).first()
            && let Ok(info) = read_info(dump)
        {
            let status = info.pointer("/status").and_then(|v| v.as_str()).unwrap_or("");
            ensure!(status != "complete", "an interrupted dump was marked complete");
            if status == "incomplete" {
                ensure!(!dump.join("vmcore").exists(), "an interrupted dump was renamed to vmcore");
                ensure!(dump.join("vmcore-incomplete").exists(), "vmcore-incomplete missing");
                return Ok((dump.clone(), info));
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not mark the interrupted dump incomplete");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Negative control: the checker must reject a copy of a good vmcore with one byte of
/// the pattern flipped.
pub fn negative_control(pattern: &Pattern, good: &Path, scratch: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    std::fs::copy(good, scratch)?;
    let core = Vmcore::open(scratch)?;
    let target = pattern.base + pattern.len / 2 + 13;
    let seg =
        core.loads().find(|g| target >= g.paddr && target < g.paddr + g.filesz).context("pattern not in the vmcore")?;
    let offset = seg.offset + (target - seg.paddr);
    drop(core);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(scratch)?;
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 0x20;
    f.write_all_at(&b, offset)?;
    drop(f);
    let result = check::pattern_matches(&Vmcore::open(scratch)?, pattern);
    std::fs::remove_file(scratch)?;
    match result {
        Err(e) if e.to_string().contains(&format!("{:#x}", target & !7)) => Ok(()),
        Err(e) => bail!("checker rejected the flipped byte for the wrong reason: {e}"),
        Ok(()) => bail!("checker accepted a vmcore with a flipped byte at {target:#x}"),
    }
}
