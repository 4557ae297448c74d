//! netconsole end to end over loopback: netdump-core's sender, through the host UDP NIC,
//! into netdumpd's syslog receiver and the client's console log — alone (no dump
//! server) and beside a dump, whose window it must not disturb.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::host::{GATEWAY_IP, GUEST_IP, SystemClock, UdpSocketNic, guest_net};
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::net::NetConfig;
use netdump_core::netconsole::{ConsoleOnly, NETCONSOLE_CLIENT_PORT, NetconsoleConfig, Severity, SyslogFormat};
use netdump_core::proto::{CrashKind, REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, Netdump};

fn console_config(name: &str, syslog_port: u16, format: SyslogFormat) -> NetconsoleConfig {
    NetconsoleConfig {
        net: NetConfig {
            ip: GUEST_IP,
            prefix_len: 24,
            gateway: Some(GATEWAY_IP),
            server_ip: GATEWAY_IP,
            server_port: syslog_port,
            client_port: NETCONSOLE_CLIENT_PORT,
        },
        format,
        hostname: ClientName::new(name).unwrap(),
        facility: 0,
        boot_unix_us: Some(1_767_323_045_000_000),
    }
}

/// Waits until the console log of `name` holds `n` lines; returns the messages (the
/// server's arrival stamp cut off).
fn console_lines(dir: &Path, name: &str, n: usize) -> Vec<String> {
    let path = dir.join("console").join(format!("{name}.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(|l| l.split_once(' ').unwrap().1.to_string()).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} has {} lines, wanted {n}: {lines:?}", path.display(), lines.len());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn server_with_syslog(dir: &Path) -> TestServer {
    TestServer::start_with(dir, |c| c.syslog_listen = Some("127.0.0.1:0".parse().unwrap()))
}

#[test]
fn console_lines_reach_netdumpd_without_a_dump_server() {
    let dir = TempDir::new("netconsole-only");
    let server = server_with_syslog(dir.path());
    let port = server.syslog.unwrap().port();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x31], 1500, server.addr).unwrap();
    let config = console_config("console-only", port, SyslogFormat::Rfc3164);
    let mut console = ConsoleOnly::install(nic, SystemClock::default(), config, &Timeouts::default()).unwrap();
    // Pieces as a console driver writes them; a line longer than the buffer comes in parts.
    console.write(b"booting ");
    console.write(b"the kernel\nline two\r\n");
    console.write(&[b'x'; 600]);
    console.write(b"\n");
    console.send_line(Severity::Critical, b"panic: on purpose").unwrap();
    let lines = console_lines(dir.path(), "console-only", 5);
    assert_eq!(lines[..2], ["booting the kernel", "line two"]);
    assert_eq!(lines[2], "x".repeat(512));
    assert_eq!(lines[3], "x".repeat(88));
    assert_eq!(lines[4], "panic: on purpose");
    assert_eq!(console.counters().sent, 5);
    assert_eq!(server.dumps().len(), 0, "no dump, no registration needed");
}

/// 256 KiB of RAM at 1 MiB, every page a different byte.
struct Ram(Vec<u8>);

impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(0x10_0000).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

#[test]
fn console_lines_beside_a_dump_leave_it_bit_exact() {
    let dir = TempDir::new("netconsole-dump");
    let server = server_with_syslog(dir.path());
    let syslog_port = server.syslog.unwrap().port();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x32], 1500, server.addr).unwrap();
    let ram = Ram((0..256 * 1024).map(|i| (i / 4096) as u8 | 1).collect());
    let map =
        MemoryMap::new(&[MemoryRange { phys_start: 0x10_0000, length: ram.0.len() as u64, virt_start: 0x10_0000 }])
            .unwrap();
    let config = Config::new(guest_net(server.addr.port()), ClientName::new("console-dump").unwrap());
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut CounterRng(7), config, buffers, map).unwrap();
    nd.attach_netconsole(console_config("console-dump", syslog_port, SyslogFormat::Rfc5424)).unwrap();
    nd.console_write(b"normal operation: 1\nnormal operation: 2\n");
    assert!(nd.console_line(Severity::Critical, b"panic: beside a dump"));
    let regs = RegisterRecord { rip: 0x10_2000, flags: REGISTERS_VALID, ..Default::default() };
    let crash = CrashInfo {
        kind: CrashKind::Panic,
        vector: 0,
        error_code: 0,
        fault_address: 0,
        crashing_cpu: 0,
        message: b"console test",
        frames: &[],
    };
    let report = nd.dump(&crash, &[regs], &ram, None).expect("the dump verifies");
    assert_eq!(report.retransmissions, 0);
    let lines = console_lines(dir.path(), "console-dump", 5);
    assert_eq!(lines[..3], ["normal operation: 1", "normal operation: 2", "panic: beside a dump"]);
    assert!(lines[3].starts_with("netdump: dumping to 10.0.2.2:") && lines[3].contains("DumpAll"), "{lines:?}");
    assert!(lines[4].starts_with("netdump: dump of ") && lines[4].ends_with("Verified"), "{lines:?}");
    let dump = &server.dumps()[0];
    let core = std::fs::read(dump.join("vmcore")).unwrap();
    assert_eq!(common::core_reader::Core::new(&core).read_phys(0x10_0000, ram.0.len()), &ram.0[..]);
}
