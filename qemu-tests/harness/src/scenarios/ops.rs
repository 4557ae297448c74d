//! netdumpd for the people who run it, with a real kernel: netconsole lines arriving at
//! a syslog listener on the host and at netdumpd, with and without a dump server (and
//! the dump beside them still bit-exact); a crash hook that skips the memory image;
//! analysis on arrival, the `last` link and the admin commands on a real dump.

use super::common::{self, EVENT_PATIENCE, KernelRun, exit, expect_exit, with_server_log};
use crate::netdumpd::{Netdumpd, free_udp_port};
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use anyhow::{Context, Result, bail, ensure};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines the test kernel prints in normal operation (`kernel/src/netconsole.rs`).
const LINES: usize = 20;

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![
        Scenario::new("netconsole", nic, |c| netconsole_beside_dump(c, Collector::Host, Format::Rfc5424, 0x7101)),
        Scenario::new("netconsole-netdumpd", nic, |c| {
            netconsole_beside_dump(c, Collector::Netdumpd, Format::Rfc3164, 0x7102)
        }),
        Scenario::new("netconsole-only", nic, |c| netconsole_alone(c, Collector::Host, Format::Rfc3164)),
        Scenario::new("netconsole-only-netdumpd", nic, |c| netconsole_alone(c, Collector::Netdumpd, Format::Rfc5424)),
        Scenario::new("hook-skip-memory", nic, hook_skip_memory),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collector {
    /// The harness's own UDP syslog listener.
    Host,
    /// netdumpd's netconsole receiver (`--netconsole-listen`).
    Netdumpd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Rfc5424,
    Rfc3164,
}

impl Format {
    fn arg(self) -> &'static str {
        match self {
            Format::Rfc5424 => "5424",
            Format::Rfc3164 => "3164",
        }
    }
}

/// A syslog message as the listener checked it.
#[derive(Debug, Clone)]
struct Syslog {
    severity: u8,
    host: String,
    sequence: Option<u32>,
    message: String,
}

/// Checks one datagram strictly against RFC 5424 or RFC 3164 as netconsole sends it
/// (facility kern, APP-NAME/TAG `netdump`, a timestamp from the guest's RTC).
fn parse(datagram: &str, format: Format) -> Result<Syslog> {
    let rest = datagram.strip_prefix('<').context("no <PRI>")?;
    let (pri, rest) = rest.split_once('>').context("no <PRI>")?;
    let pri: u8 = pri.parse().context("PRI")?;
    ensure!(pri / 8 == 0, "facility {} is not kern", pri / 8);
    let year_ok = |y: &str| y.parse::<u32>().is_ok_and(|y| (2024..2200).contains(&y));
    match format {
        Format::Rfc5424 => {
            let f: Vec<&str> = rest.splitn(7, ' ').collect();
            ensure!(f.len() == 7 && f[0] == "1", "not RFC 5424: {datagram:?}");
            let ts = f[1];
            let b = ts.as_bytes();
            ensure!(
                ts.len() == 27 && ts.ends_with('Z') && b[4] == b'-' && b[10] == b'T' && b[19] == b'.',
                "timestamp {ts:?}"
            );
            ensure!(year_ok(&ts[..4]), "timestamp {ts:?} is not from the RTC");
            ensure!(f[3] == "netdump" && f[4] == "-" && f[5] == "console", "APP-NAME/PROCID/MSGID in {datagram:?}");
            let sd = f[6].strip_prefix("[meta sequenceId=\"").with_context(|| format!("SD in {datagram:?}"))?;
            let (seq, message) = sd.split_once("\"] ").with_context(|| format!("SD in {datagram:?}"))?;
            Ok(Syslog { severity: pri % 8, host: f[2].into(), sequence: Some(seq.parse()?), message: message.into() })
        }
        Format::Rfc3164 => {
            ensure!(rest.len() > 16, "short: {datagram:?}");
            let (ts, rest) = rest.split_at(15);
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let b = ts.as_bytes();
            ensure!(
                MONTHS.contains(&&ts[..3]) && b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':',
                "timestamp {ts:?}"
            );
            let (host, rest) = rest[1..].split_once(' ').context("no HOSTNAME")?;
            let message = rest.strip_prefix("netdump: ").context("no TAG")?;
            Ok(Syslog { severity: pri % 8, host: host.into(), sequence: None, message: message.into() })
        }
    }
}

/// A UDP syslog listener on the host's loopback: what an rsyslog would receive.
struct Listener {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start() -> Result<Listener> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = socket.local_addr()?.port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    g.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Ok(Listener { port, got, stop, thread: Some(thread) })
    }

    /// Every datagram, once one contains `last` (or after [`EVENT_PATIENCE`]: the
    /// check that follows then fails on what is missing).
    fn until(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + EVENT_PATIENCE;
        while Instant::now() < deadline && !self.got.lock().unwrap().iter().any(|m| m.contains(last)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// netdumpd's console log of `host`: the messages (arrival stamps cut off), once one
/// contains `last`.
fn console_log(dir: &Path, host: &str, last: &str) -> Vec<String> {
    let path = dir.join("console").join(format!("{host}.log"));
    let deadline = Instant::now() + EVENT_PATIENCE;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().filter_map(|l| l.split_once(' ')).map(|(_, m)| m.to_string()).collect();
        if lines.iter().any(|l| l.contains(last)) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The numbered normal-operation lines in order, at severity info, then the panic line
/// at crit. `severities` is empty when the collector does not keep them (netdumpd).
fn check_console(ctx: &Ctx, messages: &[String], severities: &[u8], panic: &str) -> Result<()> {
    let numbered: Vec<&String> = messages.iter().filter(|m| m.starts_with("netconsole line ")).collect();
    let want: Vec<String> = (1..=LINES).map(|i| format!("netconsole line {i} of {LINES}")).collect();
    ensure!(
        numbered.iter().map(|s| s.as_str()).eq(want.iter().map(|s| s.as_str())),
        "normal-operation lines: {numbered:?}"
    );
    let at = messages
        .iter()
        .position(|m| m == &format!("panic: {panic}"))
        .with_context(|| format!("no panic line in {messages:?}"))?;
    ensure!(
        at > messages.iter().rposition(|m| m.starts_with("netconsole line ")).unwrap_or(0),
        "the panic line came before the console lines"
    );
    if !severities.is_empty() {
        for (m, sev) in messages.iter().zip(severities) {
            let want = if m.starts_with("panic:") || m.starts_with("netdump: dump") { 2 } else { 6 };
            ensure!(*sev == want, "severity {sev} for {m:?} (want {want})");
        }
    }
    let _ = ctx;
    Ok(())
}

/// The syslog messages at the collector, checked against the format.
fn collected(
    ctx: &Ctx,
    collector: Collector,
    format: Format,
    listener: Option<&Listener>,
    dir: &Path,
    last: &str,
) -> Result<(Vec<String>, Vec<u8>)> {
    match (collector, listener) {
        (Collector::Host, Some(l)) => {
            let parsed = l.until(last).iter().map(|d| parse(d, format)).collect::<Result<Vec<Syslog>>>()?;
            ensure!(parsed.iter().all(|s| s.host == ctx.id), "HOSTNAME is not {}: {parsed:?}", ctx.id);
            if format == Format::Rfc5424 {
                let seqs: Vec<u32> = parsed.iter().filter_map(|s| s.sequence).collect();
                ensure!(
                    seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs.first() == Some(&1),
                    "sequenceIds {seqs:?}: lost or reordered lines"
                );
            }
            Ok((parsed.iter().map(|s| s.message.clone()).collect(), parsed.iter().map(|s| s.severity).collect()))
        }
        _ => Ok((console_log(dir, &ctx.id, last), vec![])),
    }
}

/// Where the kernel's netconsole goes: the listener's port or netdumpd's.
fn collector_port(collector: Collector, listener: &Option<Listener>, netdumpd_port: Option<u16>) -> u16 {
    match collector {
        Collector::Host => listener.as_ref().map_or(0, |l| l.port),
        Collector::Netdumpd => netdumpd_port.unwrap_or(0),
    }
}

/// A panic with a dump server and netconsole on: the dump is complete and bit-exact,
/// and every console line, the panic line and the dump's own lines reached the
/// collector. With netdumpd as collector, netdumpd also analyses the dump with the
/// kernel ELF, links it as `<client>.last` and lists it.
fn netconsole_beside_dump(ctx: &Ctx, collector: Collector, format: Format, seed: u64) -> Result<Outcome> {
    let listener = (collector == Collector::Host).then(Listener::start).transpose()?;
    let console_port = free_udp_port()?;
    let listen = format!("127.0.0.1:{console_port}");
    // netdumpd finds the kernel to analyse with by build ID, among this one and another.
    let builds = ctx.dir.join("builds");
    std::fs::create_dir_all(&builds)?;
    std::os::unix::fs::symlink(&ctx.artifacts.conformance_kernel, builds.join("a-conformance-kernel"))?;
    std::os::unix::fs::symlink(&ctx.artifacts.test_kernel, builds.join("b-test-kernel"))?;
    let builds = builds.display().to_string();
    let extra: Vec<&str> = if collector == Collector::Netdumpd {
        vec!["--netconsole-listen", &listen, "--kernel-builds", &builds]
    } else {
        vec![]
    };
    let srv = common::start_server(ctx, &extra)?;
    let port = collector_port(collector, &listener, Some(console_port));
    let mut run = KernelRun::new("dump", common::pattern(seed));
    run.extra = format!("netconsole={} syslog_port={port}", format.arg());
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "the dump should verify with netconsole on")?;
        let panic = format!("netdump test panic (seed {seed:#x})");
        let (dump, mut outcome) =
            common::check_complete_dump(ctx, srv, &run.pattern, &panic, "netdump_test_crash_site")?;
        let info = common::read_info(&dump)?;
        let (messages, severities) =
            collected(ctx, collector, format, listener.as_ref(), &srv.dir, "netdump: dump of ")?;
        check_console(ctx, &messages, &severities, &panic)?;
        let dumping = format!("netdump: dumping to 10.0.2.2:{}: DumpAll (None)", srv.port);
        ensure!(messages.contains(&dumping), "no {dumping:?} in {messages:?}");
        let bytes = info.pointer("/bytes_received").and_then(|v| v.as_u64()).context("bytes_received")?;
        let packets = info.pointer("/finish/packets").and_then(|v| v.as_u64()).context("finish.packets")?;
        let done = format!("netdump: dump of {bytes} bytes in {packets} packets: Verified");
        ensure!(messages.contains(&done), "no {done:?} in {messages:?}");
        outcome.detail +=
            &format!(", {} netconsole lines at the {collector:?} collector (RFC {})", messages.len(), format.arg());
        if collector == Collector::Netdumpd {
            outcome.detail += &check_server_extras(ctx, srv, &dump)?;
        }
        Ok(outcome)
    })
}

/// netdumpd's analysis, `last` link and `list` on the dump the kernel just sent.
fn check_server_extras(ctx: &Ctx, srv: &Netdumpd, dump: &Path) -> Result<String> {
    // analysis.txt is written in one piece, ending in a line break, once gdb ran (netdumpd
    // gives gdb 120 s; the wait is longer, so that only a missing analysis fails here).
    let analysis = dump.join("analysis.txt");
    let text = common::wait_until(Duration::from_secs(150), "analysis.txt", || {
        Ok(std::fs::read_to_string(&analysis).ok().filter(|t| t.ends_with('\n')))
    })?;
    ensure!(text.contains("netdump_test_crash_site"), "analysis.txt does not name the crashing function:\n{text}");
    ensure!(text.contains("b-test-kernel"), "analysis.txt did not pick the test kernel by build ID:\n{text}");
    let link = srv.dir.join(format!("{}.last", ctx.id));
    let points = common::wait_until(EVENT_PATIENCE, "the last link", || Ok(std::fs::read_link(&link).ok()));
    ensure!(points.ok().as_deref() == dump.file_name().map(Path::new), "{} does not point to the dump", link.display());
    let out = Command::new(&ctx.artifacts.netdumpd).args(["list", "--json", "--dir"]).arg(&srv.dir).output()?;
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).context("netdumpd list --json")?;
    let row =
        rows.as_array().and_then(|r| r.iter().find(|r| r["client"] == ctx.id.as_str())).context("dump not listed")?;
    ensure!(row["status"] == "complete" && row["analysis"] == true, "netdumpd list says {row}");
    Ok(", kernel found by build ID, analysis names the crash site, last link and list ok".into())
}

/// Netconsole with no dump server configured: the kernel registers nowhere, its lines
/// and panic line still reach the collector.
fn netconsole_alone(ctx: &Ctx, collector: Collector, format: Format) -> Result<Outcome> {
    let listener = (collector == Collector::Host).then(Listener::start).transpose()?;
    let console_port = free_udp_port()?;
    let listen = format!("127.0.0.1:{console_port}");
    let srv = match collector {
        Collector::Netdumpd => Some(common::start_server(ctx, &["--netconsole-listen", &listen])?),
        Collector::Host => None,
    };
    let port = collector_port(collector, &listener, Some(console_port));
    let mut run = KernelRun::new("dump", common::pattern(0x7103));
    run.extra = format!("netconsole={} syslog_port={port} dump_server=none", format.arg());
    // No dump server: the port the kernel is given for one is never used.
    let q = run.boot(ctx, free_udp_port()?)?;
    expect_exit(&q, exit::SUCCESS, "the panic line should be sent")?;
    ensure!(q.serial.contains("netconsole: installed without a dump server"), "kernel did not run netconsole alone");
    let dir = srv.as_ref().map(|s| s.dir.clone()).unwrap_or_default();
    let panic = "netdump test panic (seed 0x7103)";
    let (messages, severities) = collected(ctx, collector, format, listener.as_ref(), &dir, panic)?;
    check_console(ctx, &messages, &severities, panic)?;
    if let Some(srv) = srv {
        let dir = srv.dir.clone();
        // netdumpd writes its registry at most once a second, and on SIGTERM: stopped so,
        // clients.json holds every registration it ever took.
        srv.terminate()?;
        let dumps: Vec<_> = std::fs::read_dir(&dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{}-", ctx.id)))
            .collect();
        ensure!(dumps.is_empty(), "a dump directory appeared without a dump server");
        let clients = std::fs::read_to_string(dir.join("clients.json")).unwrap_or_default();
        ensure!(!clients.contains(&ctx.id), "the kernel registered although no dump server was configured");
    }
    Ok(Outcome {
        detail: format!(
            "{} lines at the {collector:?} collector (RFC {}), no dump server",
            messages.len(),
            format.arg()
        ),
        ..Default::default()
    })
}

fn script(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The crash hook exits 1: the real client sends log and registers only; the dump
/// directory has no vmcore, and the finished hook is told `skipped`.
fn hook_skip_memory(ctx: &Ctx) -> Result<Outcome> {
    let (crash, finished, said) =
        (ctx.dir.join("crash-hook"), ctx.dir.join("finished-hook"), ctx.dir.join("finished-said"));
    script(&crash, "exit 1")?;
    script(&finished, &format!("echo \"$1 $NETDUMP_OUTCOME\" > {}", said.display()))?;
    let (c, f) = (crash.display().to_string(), finished.display().to_string());
    let srv = common::start_server(ctx, &["--hook-crash", &c, "--hook-finished", &f])?;
    let run = KernelRun::new("dump", common::pattern(0x7104));
    let q = run.boot(ctx, srv.port)?;
    with_server_log(srv, |srv| {
        expect_exit(&q, exit::SUCCESS, "a dump without memory still verifies")?;
        let dump = common::only_dump(ctx, srv)?;
        let info = common::read_info(&dump)?;
        ensure!(info["status"] == "skipped" && info["decision"]["why"] == "hook", "info.json: {info}");
        for core in ["vmcore", "vmcore-incomplete"] {
            ensure!(!dump.join(core).exists(), "{core} exists although the memory image was skipped");
        }
        let log = std::fs::read_to_string(dump.join("log")).context("log")?;
        crate::check::log_has(&log, &["netdump test panic (seed 0x7104)", "console line before the crash: 2"])?;
        let registers = std::fs::read_to_string(dump.join("registers")).context("registers")?;
        let rip = registers.lines().find_map(|l| l.trim().strip_prefix("rip")).map(str::trim).context("no rip")?;
        ensure!(
            registers.starts_with("cpu 0 (apic 0, crashing)") && rip != "0x0000000000000000",
            "registers:\n{registers}"
        );
        // The hook's shell creates the file, then writes the line: a whole line is the event.
        let said = common::wait_until(EVENT_PATIENCE, "the finished hook's line", || {
            Ok(std::fs::read_to_string(&said).ok().filter(|t| t.ends_with('\n')))
        })
        .context("the finished hook did not run")?;
        if said.trim() != "skipped skipped" {
            bail!("the finished hook was told {said:?}");
        }
        Ok(Outcome {
            detail: format!(
                "crash hook exit 1: no vmcore, log and registers (rip {rip}) kept, finished hook told skipped"
            ),
            ..Default::default()
        })
    })
}
