//! netconsole in the test kernel: console lines as UDP syslog on the e1000 the dump uses.
//!
//! Command line: `netconsole=5424|3164 syslog_port=N` turns it on, towards the host
//! (`server_ip`, 10.0.2.2 by default); `dump_server=none` runs it without a dump server
//! ([`ConsoleOnly`] owns the NIC, nothing registers). Either way the kernel prints
//! [`LINES`] numbered lines in normal operation (the console tee sends them through
//! `CrashCell::try_with`), then panics: the panic handler sends the panic line at
//! severity `crit`, and with a dump server the dump adds its own lines.

use crate::{CONSOLE_LOG, NETDUMP, exit, nic::Nic, scenario::Scenario};
use core::sync::atomic::{AtomicBool, Ordering};
use netdump_core::arch::x86_64::{TscClock, read_rtc};
use netdump_core::client::ClientName;
use netdump_core::clock::Clock;
use netdump_core::crash_cell::{CrashCell, SeizeError};
use netdump_core::net::NetConfig;
use netdump_core::netconsole::{
    ConsoleOnly, FACILITY_KERN, NETCONSOLE_CLIENT_PORT, NetconsoleConfig, Severity, SyslogFormat,
};
use netdump_core::text::TextBuf;
use netdump_qemu_runtime::{Cmdline, println, qemu_exit};

/// Console lines printed in normal operation, numbered from 1.
pub const LINES: u32 = 20;
/// How long the panic handler waits for its last lines to leave the NIC.
const DRAIN_US: u64 = 50_000;

/// The NIC when no dump server is configured.
static CONSOLE_ONLY: CrashCell<ConsoleOnly<Nic, TscClock>> = CrashCell::new();
/// Set when the panic handler starts: from then on the panic handler and the dump send
/// console lines themselves, and the tee leaves netconsole alone.
static CRASHING: AtomicBool = AtomicBool::new(false);

/// The netconsole settings of the command line, if it asks for netconsole.
fn config(args: &Cmdline<'static>, s: &Scenario, clock: &TscClock) -> Option<NetconsoleConfig> {
    let format = match args.get("netconsole")? {
        "3164" => SyslogFormat::Rfc3164,
        _ => SyslogFormat::Rfc5424,
    };
    let port = args.get_u64("syslog_port").unwrap_or(u64::from(netdump_core::netconsole::SYSLOG_PORT)) as u16;
    // The RTC keeps UTC in QEMU; its second is boot-relative "now", so subtract the clock.
    let boot_unix_us = read_rtc().map(|secs| (secs * 1_000_000).saturating_sub(clock.now_us()));
    Some(NetconsoleConfig {
        net: NetConfig {
            ip: s.client_ip,
            prefix_len: 24,
            gateway: Some(s.server_ip),
            server_ip: s.server_ip,
            server_port: port,
            client_port: NETCONSOLE_CLIENT_PORT,
        },
        format,
        hostname: ClientName::new(s.name)?,
        facility: FACILITY_KERN,
        boot_unix_us,
    })
}

fn print_lines() {
    for i in 1..=LINES {
        println!("netconsole line {i} of {LINES}");
    }
}

/// With `dump_server=none`: runs netconsole alone on `nic` and panics; never returns.
/// Otherwise gives the NIC back for the dump client.
pub fn without_dump_server(args: &Cmdline<'static>, nic: Nic, clock: TscClock, s: &Scenario) -> Nic {
    if args.get("dump_server") != Some("none") {
        return nic;
    }
    let Some(config) = config(args, s, &clock) else {
        crate::fail(format_args!("dump_server=none needs netconsole=5424|3164"))
    };
    let console = match ConsoleOnly::install(nic, clock, config, &s.timeouts) {
        Ok(c) => c,
        Err(e) => {
            println!("netconsole: install failed: {e}");
            qemu_exit(exit::INSTALL_FAILED)
        }
    };
    if CONSOLE_ONLY.install(console).is_err() {
        crate::fail(format_args!("netconsole installed twice"));
    }
    netdump_qemu_runtime::set_console_tee(|bytes| {
        CONSOLE_LOG.write(bytes);
        if !CRASHING.load(Ordering::Relaxed) {
            CONSOLE_ONLY.try_with(|c| c.write(bytes));
        }
    });
    println!("netconsole: installed without a dump server ({:?})", config.format);
    print_lines();
    crate::netdump_test_crash_site(s.pattern.seed)
}

/// With a dump server: sends console lines through the installed client too.
pub fn attach(args: &Cmdline<'static>, dumper: &mut crate::Dumper, s: &Scenario) {
    let Some(config) = config(args, s, dumper.clock()) else { return };
    if let Err(e) = dumper.attach_netconsole(config) {
        crate::fail(format_args!("netconsole: {e}"));
    }
    println!("netconsole: attached to the dump client ({:?})", config.format);
}

/// After the client is in its cell: the tee feeds netconsole, and the numbered lines go out.
pub fn start_lines(args: &Cmdline<'static>) {
    if args.get("netconsole").is_none() {
        return;
    }
    netdump_qemu_runtime::set_console_tee(|bytes| {
        CONSOLE_LOG.write(bytes);
        if !CRASHING.load(Ordering::Relaxed) {
            NETDUMP.try_with(|nd| nd.console_write(bytes));
        }
    });
    print_lines();
}

/// The panic line, for the panic handler.
fn panic_text(info: &core::panic::PanicInfo<'_>) -> TextBuf<256> {
    let mut line = TextBuf::<256>::new();
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("panic: {}", info.message()));
    line
}

/// Panic handler, first (before it prints): without a dump server, sends the panic line
/// through netconsole and stops (never returns); with one, returns.
pub fn on_panic(info: &core::panic::PanicInfo<'_>) {
    CRASHING.store(true, Ordering::Relaxed);
    let console = match CONSOLE_ONLY.seize() {
        Ok(c) => c,
        Err(SeizeError::Empty) => return,
        Err(SeizeError::AlreadySeized) => qemu_exit(exit::NESTED_PANIC),
    };
    println!("panic: {info}");
    // The NIC may be mid-transfer from normal operation: take it over first.
    if let Err(e) = console.take_over() {
        println!("netconsole: NIC takeover failed: {e}");
        qemu_exit(exit::DUMP_FAILED)
    }
    let sent = console.send_line(Severity::Critical, panic_text(info).as_bytes()).is_ok();
    console.drain(DRAIN_US);
    let c = console.counters();
    println!("netconsole: panic line sent: {sent}; {} lines sent, {} dropped", c.sent, c.dropped);
    qemu_exit(if sent { exit::EXIT_SUCCESS } else { exit::DUMP_FAILED })
}

/// Panic handler, with the client seized: the panic line before the dump.
pub fn panic_line(dumper: &mut crate::Dumper, info: &core::panic::PanicInfo<'_>) {
    if dumper.netconsole().is_some() {
        dumper.console_line(Severity::Critical, panic_text(info).as_bytes());
    }
}

/// Panic handler, after the dump: lets the dump's last console lines leave.
pub fn after_dump(dumper: &mut crate::Dumper) {
    if let Some(c) = dumper.netconsole() {
        let (sent, dropped) = (c.counters.sent, c.counters.dropped);
        dumper.console_drain(DRAIN_US);
        println!("netconsole: {sent} lines sent, {dropped} dropped");
    }
}
