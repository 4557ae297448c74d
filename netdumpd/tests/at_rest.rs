//! Dumps at rest are private: with the process umask at 0 (its own test binary, as the
//! umask is process-wide), a whole dump by the real client, a netconsole line and the
//! server's own files leave only 0700 directories and 0600 files under the dump root,
//! which netdumpd itself creates.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use netdump_core::client::{ClientName, Config};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::proto::{REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, Netdump};

const RAM_BASE: u64 = 0x10_0000;

/// 256 KiB of RAM at 1 MiB.
struct Ram(Vec<u8>);

impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

fn extra_state(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    writeln!(out, "pid 1 state S")
}

/// Every directory and file under `root` (symbolic links, the `<client>.last` links,
/// not followed), with its permission bits.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        out.push((dir.clone(), true, meta.permissions().mode() & 0o7777));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), false, meta.permissions().mode() & 0o7777));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn with_umask_0_a_whole_dump_leaves_only_0700_directories_and_0600_files() {
    // SAFETY: umask(2) cannot fail; this binary's only test, so nothing else races it.
    unsafe { libc::umask(0) };
    let scratch = TempDir::new("at-rest");
    // netdumpd creates the dump root and its missing parents.
    let top = scratch.path().join("var");
    let root = top.join("crash").join("netdump");
    let server = TestServer::start_with(&root, |c| c.syslog_listen = Some("127.0.0.1:0".parse().unwrap()));

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"<13>1 - at-rest netdump - - - a console line", server.syslog.unwrap()).unwrap();

    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x51], 1500, server.addr).unwrap();
    let ram = Ram((0..256 * 1024).map(|i| (i / 4096) as u8 | 1).collect());
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.len() as u64, virt_start: RAM_BASE }])
        .unwrap();
    let config = Config::new(guest_net(server.addr.port()), ClientName::new("at-rest").unwrap());
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut CounterRng(5), config, buffers, map).unwrap();
    nd.set_extra_state(extra_state);
    let log = ConsoleLog::<4096>::new();
    log.write(b"about to crash\n");
    let regs = RegisterRecord { rip: 0x10_2000, flags: REGISTERS_VALID, ..Default::default() };
    nd.dump(&CrashInfo::panic(0, b"at rest", &[0x10_2000]), &[regs], &ram, Some(&log)).expect("the dump verifies");

    let console = root.join("console").join("at-rest.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&console).is_ok_and(|t| t.contains("a console line")) {
        assert!(Instant::now() < deadline, "no console line in {}", console.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    let dump = server.dumps().into_iter().next().expect("a dump directory");
    // Retention, `last` links and the registry are written by the time it has stopped.
    server.stop();

    let entries = walk(&top);
    let names: Vec<String> =
        entries.iter().map(|(p, _, _)| p.strip_prefix(&root).unwrap_or(p).display().to_string()).collect();
    for want in ["vmcore", "log", "extra", "registers", "info.json"] {
        assert!(dump.join(want).is_file(), "{want} missing from {}: {names:?}", dump.display());
    }
    assert!(root.join("clients.json").is_file(), "{names:?}");
    assert!(console.is_file(), "{names:?}");
    let wrong: Vec<String> = entries
        .iter()
        .filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 })
        .map(|(p, is_dir, mode)| format!("{} {} {mode:o}", if *is_dir { "dir" } else { "file" }, p.display()))
        .collect();
    assert!(wrong.is_empty(), "not private under umask 0: {wrong:#?}");
}
