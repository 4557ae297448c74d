//! A crash storm: 1 000 clients — the real netdump-core client over UDP on loopback
//! (`netdump_core::host`) — register with three `netdumpd` processes, then crash within
//! a few seconds of each other. Each client lists all three servers, starting with its
//! own (client `i` with server `i % 3`), and fails over. Each server runs with a modest
//! limit on dumps at once, on memory images at once and on the memory its receive
//! buffers may reserve, so that it sheds load — "try elsewhere" to a client with another
//! server to go to, log and registers only or a refusal to one at its last server; many
//! clients share a crash signature, so that dedup works under load.
//!
//! Afterwards every client is accounted for: a complete dump whose vmcore holds its
//! memory image bit for bit, or a log-and-registers dump (duplicate, or shed), on some
//! server, or a refusal the client was told by its last server (its
//! `DumpError::Refused`); nothing else, and nothing on a server but these (and dumps a
//! client abandoned midway to finish elsewhere, marked incomplete). Each server's
//! peak RSS (`VmHWM`) is reported and checked against the bound its configuration
//! gives (`netdumpd::budget::bound`) above its RSS once started. The numbers are printed
//! (`cargo test -p netdumpd --test storm -- --nocapture`); no timing is asserted. With
//! `STORM_SMAPS=<path>` each server's `/proc/<pid>/smaps` is copied to `<path>.<n>` after
//! the storm, to see where its memory went.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::core_reader::Core;
use common::{CounterRng, Daemon, TempDir, read_info};
use netdump_core::client::{ClientName, Config, Server as DumpServer};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::net::Ipv4Address;
use netdump_core::nic::{NicError, PolledNic};
use netdump_core::proto::{DecisionReason, REGISTERS_VALID, RegisterRecord, Verdict};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, DumpReport, Netdump};
use netdumpd::ServerConfig;
use netdumpd::config::ConfigFile;

const CLIENTS: usize = 1000;
const SERVERS: usize = 3;
/// Client threads: each owns every `THREADS`-th client, installs them, waits for the
/// others, then dumps them one after the other.
const THREADS: usize = 40;
const PAGE: u64 = 4096;
const RAM_BASE: u64 = 0x10_0000;
/// Packets in flight per client (its crash buffers).
const WINDOW: usize = 16;
/// What the program itself may add to its RSS after start-up besides the data the bound
/// covers: code paths first run during the storm, the allocator's per-thread arenas and
/// fragmentation, thread stacks.
const PROGRAM_SLACK: u64 = 12 << 20;

/// Each server's configuration (its `listen` and `dir` come from the command line).
const SERVER_CONFIG: &str = r#"
min_free_mib = 0
session_timeout = 30
max_sessions = 10
max_memory_dumps = 4
[dedup]
policy = "skip-memory"
within_days = 1
[limits]
max_clients = 1024
max_retired = 64
hellos_per_second = 2000
hellos_per_source_per_second = 2000
crashes_per_second = 20
max_signatures = 128
max_excluded_runs = 1024
max_receive_mib = 2
log_lines_per_second = 50
"#;

/// Pages of client `i`'s RAM: mostly small (4 to 35 pages), every 16th a few hundred KiB.
fn pages_of(i: usize) -> u64 {
    if i % 16 == 5 { 48 + (i as u64 % 5) * 16 } else { 4 + (i as u64 * 7) % 32 }
}

/// Which crash a client has: most share one of two signatures (a bad rollout), every
/// fourth crashes its own way.
fn crash_group(i: usize) -> Option<usize> {
    match i % 4 {
        0 => None,
        1 | 2 => Some(0),
        _ => Some(1),
    }
}

fn message(i: usize) -> String {
    match crash_group(i) {
        Some(g) => format!("storm: rollout {g} dereferenced a null pointer"),
        None => format!("storm: client {i} ran out of luck"),
    }
}

fn frames(i: usize) -> Vec<u64> {
    let base = 0xffff_8000_0010_0000u64;
    match crash_group(i) {
        Some(g) => vec![base + 0x40 * g as u64, base + 0x1000],
        None => vec![base + 0x10_0000 + i as u64 * 8, base + 0x1000],
    }
}

fn name(i: usize) -> String {
    format!("storm-{i:04}")
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Client `client`'s RAM, computed rather than stored: per page, all zero (never sent),
/// a short repeating pattern (compresses) or noise (does not), each distinct per client.
#[derive(Clone, Copy)]
struct Image {
    client: u64,
    pages: u64,
}

impl Image {
    fn byte(&self, offset: u64) -> u8 {
        let page = offset / PAGE;
        let kind = splitmix(self.client << 20 | page) % 5;
        let word = match kind {
            0 => 0,
            1 | 2 => splitmix(self.client * 31 + page) ^ ((offset % 64) / 8),
            _ => splitmix((self.client << 32) ^ (page << 12) ^ (offset / 8)),
        };
        word.to_le_bytes()[(offset % 8) as usize]
    }

    fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|k| self.byte(offset + k)).collect()
    }
}

impl MemorySource for Image {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })?;
        if at + out.len() as u64 > self.pages * PAGE {
            return Err(MemoryError { phys });
        }
        for (k, b) in out.iter_mut().enumerate() {
            *b = self.byte(at + k as u64);
        }
        Ok(())
    }
}

/// [`UdpSocketNic`] that gives the CPU away while the client waits: after a few empty
/// receive polls in a row it sleeps 200 µs, as a kernel's idle loop would `pause`.
/// Forty client threads spinning would otherwise starve three servers of two cores.
struct YieldingNic {
    inner: UdpSocketNic,
    empty_polls: u32,
}

impl PolledNic for YieldingNic {
    fn mac_address(&self) -> [u8; 6] {
        self.inner.mac_address()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.inner.reset()
    }
    fn udp_checksum_offload(&self) -> bool {
        self.inner.udp_checksum_offload()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.empty_polls = 0;
        self.inner.transmit(len, fill)
    }
    fn poll_transmit(&mut self) -> usize {
        self.inner.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        let got = self.inner.poll_receive(handler)?;
        if got {
            self.empty_polls = 0;
        } else {
            self.empty_polls += 1;
            if self.empty_polls > 4 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(got)
    }
}

/// What became of one client; `server` is the storm's server index, `left` the servers
/// the dump tried and left, with why.
#[derive(Debug)]
enum Outcome {
    /// Install failed (no server registered it).
    NotInstalled(String),
    Dumped {
        server: usize,
        report: Box<DumpReport>,
        left: Vec<(usize, DumpError)>,
    },
    Failed {
        server: usize,
        error: DumpError,
        left: Vec<(usize, DumpError)>,
    },
}

/// Server `s` as the clients address it: off-link, behind the host NIC's gateway, each
/// routed to its real socket.
fn guest(s: usize) -> (Ipv4Address, u16) {
    (Ipv4Address::new(192, 0, 2, 1 + s as u8), 6666)
}

/// Client `i`'s servers, in its configuration's order: its own first.
fn servers_of(i: usize) -> [usize; SERVERS] {
    std::array::from_fn(|k| (i + k) % SERVERS)
}

fn log_text(i: usize) -> String {
    format!("storm client {i} booted\n{} pages of RAM\npanicking: {}\n", pages_of(i), message(i))
}

fn registers(i: usize) -> RegisterRecord {
    RegisterRecord {
        rip: frames(i)[0],
        rsp: 0x1f_0000 + i as u64 * 0x100,
        rax: i as u64,
        flags: REGISTERS_VALID,
        ..Default::default()
    }
}

fn run_client_thread(t: usize, servers: &[std::net::SocketAddr], start: &Barrier) -> Vec<(usize, Outcome)> {
    let mine: Vec<usize> = (t..CLIENTS).step_by(THREADS).collect();
    let mut installed = Vec::new();
    let mut out = Vec::new();
    for &i in &mine {
        let order = servers_of(i);
        let image = Image { client: i as u64, pages: pages_of(i) };
        let mac = [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let mut inner = UdpSocketNic::new(mac, 1500, servers[order[0]]).unwrap();
        for (s, real) in servers.iter().enumerate() {
            inner.route(guest(s), *real);
        }
        let nic = YieldingNic { inner, empty_polls: 0 };
        let map =
            MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: image.pages * PAGE, virt_start: RAM_BASE }])
                .unwrap();
        let buffers: &'static mut CrashBuffers<WINDOW> = Box::leak(Box::new(CrashBuffers::new()));
        let (ip, port) = guest(order[0]);
        let mut net = guest_net(port);
        net.server_ip = ip;
        let mut config = Config::new(net, ClientName::new(&name(i)).unwrap());
        for &s in &order[1..] {
            let (ip, port) = guest(s);
            assert!(config.add_server(DumpServer::new(ip, port)));
        }
        let mut rng = CounterRng(0x5eed_0000 + i as u64 * 0x1_0001);
        match Netdump::install(nic, SystemClock::default(), &mut rng, config, buffers, map) {
            Ok(nd) => installed.push((i, order, image, nd)),
            Err(e) => out.push((i, Outcome::NotInstalled(e.to_string()))),
        }
    }
    // Every client of every thread is registered: now they all crash.
    start.wait();
    for (i, order, image, mut nd) in installed {
        let log = ConsoleLog::<1024>::new();
        log.write(log_text(i).as_bytes());
        let message = message(i);
        let frames = frames(i);
        let crash = CrashInfo::panic(0, message.as_bytes(), &frames);
        let result = nd.dump(&crash, &[registers(i)], &image, Some(&log));
        let attempts = nd.attempts();
        let left: Vec<(usize, DumpError)> = attempts.iter().map(|(k, e)| (order[k], e)).collect();
        let outcome = match result {
            Ok(report) => Outcome::Dumped { server: order[report.server], report: Box::new(report), left },
            Err(error) => Outcome::Failed { server: order[attempts.tried().max(1) - 1], error, left },
        };
        out.push((i, outcome));
    }
    out
}

/// A server's dump directories by client name.
fn dumps_by_client(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        // `<client>-<time>/`; `<client>.last` is retention's link to it.
        if path.is_dir() && file.starts_with("storm-") && file.get(10..11) == Some("-") {
            out.entry(file[..10].to_string()).or_default().push(path);
        }
    }
    out
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises the soft limit on open files to the hard one: a thousand clients hold a socket each.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed by pointer, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur >= CLIENTS as u64 + 256, "open files limited to {}", lim.rlim_cur);
}

#[derive(Default, Debug)]
struct Tally {
    complete: usize,
    duplicate: usize,
    shed: usize,
    refused: usize,
    /// Crashes this server sent on ("try elsewhere"), and dumps it took from clients
    /// whose own server was another.
    sent_on: usize,
    took_over: usize,
    bytes: u64,
}

#[test]
fn a_thousand_clients_crash_into_three_servers_and_each_is_accounted_for() {
    raise_fd_limit();
    let dirs: Vec<TempDir> = (0..SERVERS).map(|s| TempDir::new(&format!("storm-{s}"))).collect();
    let daemons: Vec<Daemon> = dirs.iter().map(|d| Daemon::start(d.path(), SERVER_CONFIG)).collect();
    let started_rss: Vec<u64> = daemons.iter().map(|d| proc_status_kib(d.child.id(), "VmRSS:") << 10).collect();
    let servers: Vec<_> = daemons.iter().map(|d| d.addr).collect();

    let wall = Instant::now();
    let start = Arc::new(Barrier::new(THREADS + 1));
    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (servers, start, results) = (servers.clone(), start.clone(), results.clone());
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    let out = run_client_thread(t, &servers, &start);
                    results.lock().unwrap().extend(out);
                })
                .unwrap()
        })
        .collect();
    start.wait();
    let installed_after = wall.elapsed();
    let storm = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let storm_time = storm.elapsed();
    if let Ok(to) = std::env::var("STORM_SMAPS") {
        for (k, d) in daemons.iter().enumerate() {
            std::fs::copy(format!("/proc/{}/smaps", d.child.id()), format!("{to}.{k}")).unwrap();
        }
    }
    let peak: Vec<u64> = daemons.iter().map(|d| proc_status_kib(d.child.id(), "VmHWM:") << 10).collect();
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    results.sort_by_key(|(i, _)| *i);
    assert_eq!(results.len(), CLIENTS);

    // Every client, accounted for against what its server holds.
    let on_disk: Vec<_> = dirs.iter().map(|d| dumps_by_client(d.path())).collect();
    let mut tally: Vec<Tally> = (0..SERVERS).map(|_| Tally::default()).collect();
    let mut unaccounted = Vec::new();
    // (server, crash group) → complete memory dumps.
    let mut full_dumps: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (i, outcome) in &results {
        let i = *i;
        if let Outcome::Dumped { left, .. } | Outcome::Failed { left, .. } = outcome {
            for (s, why) in left {
                if *why == DumpError::Refused(DecisionReason::TryElsewhere) {
                    tally[*s].sent_on += 1;
                }
            }
        }
        let (server, report) = match outcome {
            Outcome::Dumped { server, report, .. } => (*server, report),
            // Told by its last server, which the client's CRASH said it was.
            Outcome::Failed { server, error: DumpError::Refused(why), left } => {
                assert!(
                    matches!(why, DecisionReason::Busy | DecisionReason::NoSpace),
                    "client {i} refused for {why:?} (left {left:?})"
                );
                assert_eq!(left.len(), SERVERS, "client {i} refused before it tried every server: {left:?}");
                assert!(on_disk.iter().all(|d| !d.contains_key(&name(i))), "refused client {i} has a dump directory");
                tally[*server].refused += 1;
                continue;
            }
            Outcome::NotInstalled(e) => {
                unaccounted.push(format!("{}: install failed: {e}", name(i)));
                continue;
            }
            Outcome::Failed { server, error, left } => {
                unaccounted.push(format!("{} (server {server}, after {left:?}): {error}", name(i)));
                continue;
            }
        };
        let t = &mut tally[server];
        t.bytes += report.bytes;
        if server != servers_of(i)[0] {
            t.took_over += 1;
        }
        let dirs = on_disk[server].get(&name(i)).unwrap_or_else(|| panic!("no dump of {} on server {server}", name(i)));
        assert_eq!(dirs.len(), 1, "{} has {} dumps", name(i), dirs.len());
        let dir = &dirs[0];
        let info = read_info(dir);
        assert_eq!(std::fs::read_to_string(dir.join("log")).unwrap(), log_text(i), "{}: log", name(i));
        assert_eq!(info["message"], message(i));
        match report.verdict {
            Verdict::DumpAll => {
                assert_eq!(info["status"], "complete", "{}: {info}", name(i));
                let image = Image { client: i as u64, pages: pages_of(i) };
                let bytes = std::fs::read(dir.join("vmcore")).unwrap();
                let got = Core::new(&bytes).read_phys(RAM_BASE, (image.pages * PAGE) as usize);
                assert!(got == image.bytes(0, got.len()), "{}: memory differs", name(i));
                t.complete += 1;
                if let Some(g) = crash_group(i) {
                    *full_dumps.entry((server, g)).or_default() += 1;
                }
            }
            Verdict::SkipMemory => {
                assert_eq!(info["status"], "skipped", "{}: {info}", name(i));
                assert!(!dir.join("vmcore").exists() && !dir.join("vmcore-incomplete").exists());
                match info["decision"]["why"].as_str() {
                    Some("duplicate") => {
                        assert!(crash_group(i).is_some(), "{} has a signature of its own", name(i));
                        t.duplicate += 1;
                    }
                    Some("busy") => t.shed += 1,
                    why => panic!("{}: memory skipped for {why:?}", name(i)),
                }
            }
            Verdict::Abort => unreachable!("an ABORT is an error"),
        }
    }
    // Nothing on a server that no client knows of: besides the dumps above, only dumps a
    // client left midway (the server stopped or failed it) to finish elsewhere.
    let mut abandoned = 0;
    for (s, dumps) in on_disk.iter().enumerate() {
        for (client, dirs) in dumps {
            let i: usize = client["storm-".len()..].parse().unwrap();
            if matches!(&results[i].1, Outcome::Dumped { server, .. } if *server == s) {
                continue;
            }
            let left_here = match &results[i].1 {
                Outcome::Dumped { left, .. } | Outcome::Failed { left, .. } => left.iter().any(|(k, _)| *k == s),
                Outcome::NotInstalled(_) => false,
            };
            assert!(left_here, "server {s} holds {dirs:?}, which its client does not know of");
            for d in dirs {
                assert_eq!(read_info(d)["status"], "incomplete", "{} left midway", d.display());
                abandoned += 1;
            }
        }
    }

    let total_bytes: u64 = tally.iter().map(|t| t.bytes).sum();
    println!("storm: {CLIENTS} clients, {SERVERS} servers, {THREADS} client threads, window {WINDOW}");
    println!(
        "storm: registration {:.1} s, crash storm {:.1} s (loaded machine: not a measurement)",
        installed_after.as_secs_f64(),
        storm_time.as_secs_f64()
    );
    println!("storm: {total_bytes} DATA bytes in all");
    let mut bounds = Vec::new();
    for (s, t) in tally.iter().enumerate() {
        let mut config = ServerConfig::default();
        ConfigFile::parse(SERVER_CONFIG).unwrap().apply(&mut config).unwrap();
        let bound = netdumpd::budget::bound(&config, 1, on_disk[s].len() as u64);
        let limit = started_rss[s] + bound.total() + PROGRAM_SLACK;
        println!(
            "storm: server {s}: {} complete, {} duplicate (log only), {} shed (log only), {} refused; {} sent elsewhere, {} taken from other servers' clients; {} bytes; RSS {} KiB at start, peak {} KiB; bound {} KiB ({bound:?})",
            t.complete,
            t.duplicate,
            t.shed,
            t.refused,
            t.sent_on,
            t.took_over,
            t.bytes,
            started_rss[s] >> 10,
            peak[s] >> 10,
            limit >> 10
        );
        bounds.push(limit);
        let log = daemons[s].log_text();
        println!(
            "storm: server {s} log: {} × receive memory budget spent, {} × too many memory dumps, {} × too many dumps (lines are rate-limited: lower bounds)",
            log.matches("receive memory budget spent").count(),
            log.matches("too many memory dumps at once").count(),
            log.matches("too many dumps at once").count(),
        );
    }
    let sum = |f: fn(&Tally) -> usize| tally.iter().map(f).sum::<usize>();
    let failed_over = results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Dumped { left, .. } | Outcome::Failed { left, .. } if !left.is_empty()))
        .count();
    println!(
        "storm: in all {} complete, {} duplicate, {} shed, {} refused of {CLIENTS}; {failed_over} clients failed over, {abandoned} dumps abandoned midway",
        sum(|t| t.complete),
        sum(|t| t.duplicate),
        sum(|t| t.shed),
        sum(|t| t.refused)
    );
    assert!(unaccounted.is_empty(), "{} clients unaccounted for:\n{}", unaccounted.len(), unaccounted.join("\n"));
    for (s, t) in tally.iter().enumerate() {
        assert!(
            peak[s] <= bounds[s],
            "server {s}: peak RSS {} KiB above its bound {} KiB",
            peak[s] >> 10,
            bounds[s] >> 10
        );
        assert!(t.complete > 0, "server {s} took no memory image");
        // Dedup across the storm: a signature's memory image at most once per server.
        for g in 0..2 {
            let n = full_dumps.get(&(s, g)).copied().unwrap_or(0);
            assert!(n <= 1, "server {s}: {n} full dumps of shared signature {g}");
        }
        assert!(t.duplicate > 0, "server {s}: no crash was recognised as a duplicate");
    }
    // The limits shed load: some crashes went without memory, or were refused.
    let shed: usize = tally.iter().map(|t| t.shed + t.refused + t.sent_on).sum();
    assert!(shed > 0, "no server shed any load: the limits were never reached");
    // And clients went where there was room: a refusal is final only at the last server.
    // (At the start 40 clients crash at once, about 13 a server: beyond its 10 dumps and
    // its 3 memory images, so some always go elsewhere; how many depends on the machine.)
    assert!(failed_over > 0, "no client failed over");
}
