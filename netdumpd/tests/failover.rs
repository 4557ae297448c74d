//! Client failover: the real netdump-core client with several servers, over loopback UDP
//! through `netdump_core::host::UdpSocketNic` (each server's guest-side address routed to
//! its own real socket), against real netdumpd instances — one absent, silent or busy,
//! the next one taking the dump bit for bit; old clients keep today's answers.

mod common;

use common::core_reader::Core;
use common::*;
use netdump_core::client::{Attempts, ClientName, Config, Phase, Server, Timeouts};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryMap, MemoryRange};
use netdump_core::net::Ipv4Address;
use netdump_core::proto::{
    DecisionReason, Header, Message, MessageType, REGISTERS_VALID, RegisterRecord, Verdict, features,
};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, DumpReport, InstallError, Netdump};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// 1 MiB of "RAM" at physical 1 MiB: every 6th page zero, the rest a pattern that
/// differs per client.
impl Ram {
    fn new(seed: u8) -> Self {
        let v = (0..1usize << 20)
            .map(|i| if (i / 4096) % 6 == 5 { 0 } else { ((i * 13 + i / 4096 + seed as usize) % 251) as u8 | 1 })
            .collect();
        Ram(v)
    }
}

/// The guest-side address of server `n`: off-link (behind the host NIC's gateway), so
/// one ARP serves them all.
fn guest(n: u8) -> (Ipv4Address, u16) {
    (Ipv4Address::new(192, 0, 2, n), 6666)
}

/// Short bounds: these tests wait out absent servers.
fn timeouts() -> Timeouts {
    Timeouts {
        hello_attempts: 3,
        hello_retry_us: 100_000,
        announce_retry_us: 100_000,
        announce_timeout_us: 600_000,
        silence_timeout_us: 2_000_000,
        finish_timeout_us: 2_000_000,
        ..Timeouts::default()
    }
}

/// A configuration listing `servers` (guest-side addresses), in order.
fn config(name: &str, servers: &[(Ipv4Address, u16)]) -> Config {
    let (ip, port) = servers[0];
    let mut net = guest_net(port);
    net.server_ip = ip;
    let mut c = Config { timeouts: timeouts(), ..Config::new(net, ClientName::new(name).unwrap()) };
    for &(ip, port) in &servers[1..] {
        assert!(c.add_server(Server::new(ip, port)));
    }
    c
}

/// A host NIC with each of `routes` (guest-side address → real server) in place.
fn nic(mac: u8, routes: &[((Ipv4Address, u16), SocketAddr)]) -> UdpSocketNic {
    // The default destination is never used: every server is routed.
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0xfa, mac], 1500, "127.0.0.1:9".parse().unwrap()).unwrap();
    for &(g, real) in routes {
        nic.route(g, real);
    }
    nic
}

type Client = Netdump<UdpSocketNic, SystemClock>;

fn map(ram: &Ram) -> MemoryMap {
    MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.len() as u64, virt_start: RAM_BASE }]).unwrap()
}

fn install(nic: UdpSocketNic, config: Config, ram: &Ram) -> Result<Client, InstallError> {
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    Netdump::install(nic, SystemClock::default(), &mut CounterRng(0xfa11), config, buffers, map(ram))
        .map_err(|f| f.error)
}

fn prepare(nic: UdpSocketNic, config: Config, ram: &Ram) -> Client {
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    Netdump::prepare(nic, SystemClock::default(), &mut CounterRng(0xfa12), config, buffers, map(ram))
        .unwrap_or_else(|f| panic!("prepare: {f}"))
}

const LOG: &[u8] = b"booted\nfailing over\n";

fn dump(nd: &mut Client, ram: &Ram) -> Result<DumpReport, DumpError> {
    let log = ConsoleLog::<4096>::new();
    log.write(LOG);
    let regs =
        RegisterRecord { rip: 0xffff_8000_0010_2030, rsp: 0x1f_0000, flags: REGISTERS_VALID, ..Default::default() };
    nd.dump(&CrashInfo::panic(0, b"failover test panic", &[0x10_2345]), &[regs], ram, Some(&log))
}

/// The dump directories of client `name` on `server`.
fn dumps_of(server: &TestServer, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    server.dumps().into_iter().filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(&prefix)).collect()
}

/// `server` holds exactly one dump of `name`: complete, verified, the RAM bit for bit,
/// the log as written.
fn assert_complete_dump(server: &TestServer, name: &str, ram: &Ram) {
    let dumps = dumps_of(server, name);
    assert_eq!(dumps.len(), 1, "one dump of {name}: {dumps:?}");
    let dir = &dumps[0];
    let info = read_info(dir);
    assert_eq!(info["status"], "complete", "{info}");
    let bytes = std::fs::read(dir.join("vmcore")).expect("vmcore");
    assert_eq!(Core::new(&bytes).read_phys(RAM_BASE, ram.0.len()), &ram.0[..], "memory differs");
    assert_eq!(std::fs::read(dir.join("log")).unwrap(), LOG);
}

/// Keeps `server`'s only receiving slot busy: a raw client registered and announced, its
/// dump never sent (it stays receiving for the test's length).
fn occupy(server: &TestServer, name: &str) -> TestClient {
    let c = TestClient::new(server.addr, 0x0cc0_0000 ^ server.addr.port() as u64);
    c.hello(name);
    let m = Machine::small(name);
    assert_eq!(c.crash(&m.crash(), 0).verdict, Verdict::DumpAll);
    c
}

fn one_slot(c: &mut netdumpd::ServerConfig) {
    c.max_sessions = 1;
    c.max_memory_dumps = 1;
    c.session_timeout = Duration::from_secs(60);
}

#[test]
fn first_server_absent_the_second_takes_the_dump_bit_exact() {
    let dir = TempDir::new("failover-absent");
    let b = TestServer::start(dir.path());
    let ram = Ram::new(1);
    // Server 1 has no route: what is sent to it is lost.
    let cfg = config("fo-absent", &[guest(1), guest(2)]);
    let mut nd = install(nic(1, &[(guest(2), b.addr)]), cfg, &ram).expect("install: one server answered");
    assert!(!nd.server_registered(0), "nothing answered for server 1");
    assert!(nd.server_registered(1));
    assert_ne!(nd.granted_features() & features::FAILOVER, 0, "netdumpd grants FAILOVER to a client with servers");
    let report = dump(&mut nd, &ram).expect("dump to the second server");
    assert_eq!(report.server, 1);
    assert_eq!(report.server_addr, guest(2));
    // Server 1 was tried again at the crash (HELLO), and left for its silence.
    assert_eq!(report.attempts.tried(), 2);
    assert_eq!(report.attempts.left(0), Some(DumpError::NotRegistered(InstallError::ServerSilent)));
    assert_eq!(report.attempts.left(1), None);
    assert_complete_dump(&b, "fo-absent", &ram);
}

#[test]
fn a_server_silent_at_the_crash_is_left_after_its_announce_bound() {
    let dir_a = TempDir::new("failover-silent-a");
    let dir_b = TempDir::new("failover-silent-b");
    let a = TestServer::start(dir_a.path());
    let b = TestServer::start(dir_b.path());
    let ram = Ram::new(2);
    let cfg = config("fo-silent", &[guest(1), guest(2)]);
    let mut nd = install(nic(2, &[(guest(1), a.addr), (guest(2), b.addr)]), cfg, &ram).expect("install");
    assert!(nd.server_registered(0) && nd.server_registered(1), "both servers registered the client at install");
    // Server 1 goes away between install and crash.
    let a_dir = a.dir.clone();
    a.stop();
    let report = dump(&mut nd, &ram).expect("dump to the second server");
    assert_eq!(report.server, 1);
    assert_eq!(report.attempts.left(0), Some(DumpError::ServerSilent(Phase::Announce)));
    assert_complete_dump(&b, "fo-silent", &ram);
    let on_a = std::fs::read_dir(&a_dir).unwrap().flatten().filter(|e| e.path().is_dir()).count();
    assert_eq!(on_a, 0, "the stopped server holds no dump");
}

#[test]
fn a_busy_server_sends_a_failover_client_elsewhere() {
    let dir_a = TempDir::new("failover-busy-a");
    let dir_b = TempDir::new("failover-busy-b");
    let a = TestServer::start_with(dir_a.path(), one_slot);
    let b = TestServer::start(dir_b.path());
    let _hog = occupy(&a, "hog");
    let ram = Ram::new(3);
    let cfg = config("fo-busy", &[guest(1), guest(2)]);
    let mut nd = install(nic(3, &[(guest(1), a.addr), (guest(2), b.addr)]), cfg, &ram).expect("install");
    let report = dump(&mut nd, &ram).expect("dump to the second server");
    assert_eq!(report.server, 1);
    assert_eq!(report.attempts.left(0), Some(DumpError::Refused(DecisionReason::TryElsewhere)));
    assert_complete_dump(&b, "fo-busy", &ram);
    assert!(dumps_of(&a, "fo-busy").is_empty(), "the busy server kept no directory for the client");
}

#[test]
fn a_server_without_memory_room_sends_a_failover_client_elsewhere() {
    let dir_a = TempDir::new("failover-room-a");
    let dir_b = TempDir::new("failover-room-b");
    // Room for two sessions, but for one memory image at a time.
    let a = TestServer::start_with(dir_a.path(), |c| {
        c.max_sessions = 2;
        c.max_memory_dumps = 1;
        c.session_timeout = Duration::from_secs(60);
    });
    let b = TestServer::start(dir_b.path());
    let _hog = occupy(&a, "hog");
    let ram = Ram::new(4);
    let cfg = config("fo-room", &[guest(1), guest(2)]);
    let mut nd = install(nic(4, &[(guest(1), a.addr), (guest(2), b.addr)]), cfg, &ram).expect("install");
    let report = dump(&mut nd, &ram).expect("dump to the second server");
    assert_eq!((report.server, report.verdict), (1, Verdict::DumpAll), "the whole dump, memory included");
    assert_eq!(report.attempts.left(0), Some(DumpError::Refused(DecisionReason::TryElsewhere)));
    assert_complete_dump(&b, "fo-room", &ram);
}

#[test]
fn the_last_server_answers_as_to_a_client_without_failover() {
    let dir_a = TempDir::new("failover-last-a");
    let dir_b = TempDir::new("failover-last-b");
    let a = TestServer::start_with(dir_a.path(), one_slot);
    let b = TestServer::start_with(dir_b.path(), |c| {
        c.max_sessions = 2;
        c.max_memory_dumps = 1;
        c.session_timeout = Duration::from_secs(60);
    });
    let (_hog_a, _hog_b) = (occupy(&a, "hog"), occupy(&b, "hog"));
    let ram = Ram::new(5);
    let cfg = config("fo-last", &[guest(1), guest(2)]);
    let mut nd = install(nic(5, &[(guest(1), a.addr), (guest(2), b.addr)]), cfg, &ram).expect("install");
    // Server 1 sends it on; server 2, its last (CRASH says LAST_SERVER), takes what it
    // has room for: log and registers, as it would from any client.
    let report = dump(&mut nd, &ram).expect("log and registers to the last server");
    assert_eq!((report.server, report.verdict), (1, Verdict::SkipMemory));
    assert_eq!(report.attempts.left(0), Some(DumpError::Refused(DecisionReason::TryElsewhere)));
    let dumps = dumps_of(&b, "fo-last");
    assert_eq!(dumps.len(), 1);
    assert_eq!(std::fs::read(dumps[0].join("log")).unwrap(), LOG);
    assert_eq!(read_info(&dumps[0]).pointer("/decision/why").and_then(|v| v.as_str()), Some("busy"));
}

#[test]
fn every_server_absent_ends_in_a_bounded_error_naming_each() {
    let ram = Ram::new(6);
    let t = timeouts();
    // Install: nothing answers, the first server's error.
    let cfg = config("fo-none", &[guest(1), guest(2), guest(3)]);
    assert_eq!(install(nic(6, &[]), cfg, &ram).err(), Some(InstallError::ServerSilent));
    // Prepared: at the crash every server is tried, each within its HELLO bound.
    let mut nd = prepare(nic(7, &[]), cfg, &ram);
    let started = Instant::now();
    let err = dump(&mut nd, &ram).expect_err("no server, no dump");
    let waited = started.elapsed();
    assert_eq!(err, DumpError::NotRegistered(InstallError::ServerSilent));
    let attempts: &Attempts = nd.attempts();
    assert_eq!(attempts.tried(), 3);
    let left: Vec<_> = attempts.iter().collect();
    assert_eq!(left, (0..3).map(|i| (i, DumpError::NotRegistered(InstallError::ServerSilent))).collect::<Vec<_>>());
    // It gives up (slack for a loaded machine: this checks the end comes, not speed).
    let bound = Duration::from_micros(
        t.arp_attempts as u64 * t.arp_retry_us + 3 * (t.hello_attempts as u64 * t.hello_retry_us),
    );
    assert!(waited < bound * 10, "gave up after {waited:?}; the configured bound is {bound:?}");
}

#[test]
fn a_client_without_failover_still_gets_the_old_busy_answer() {
    let dir = TempDir::new("failover-old");
    let a = TestServer::start_with(dir.path(), one_slot);
    let _hog = occupy(&a, "hog");
    let ram = Ram::new(8);
    // One server: the client does not ask for FAILOVER.
    let cfg = config("fo-old", &[guest(1)]);
    let mut nd = install(nic(8, &[(guest(1), a.addr)]), cfg, &ram).expect("install");
    assert_eq!(nd.granted_features() & features::FAILOVER, 0);
    assert_eq!(dump(&mut nd, &ram).err(), Some(DumpError::Refused(DecisionReason::Busy)));
    assert_eq!(nd.attempts().tried(), 1);
    // A version-1 client (no features at all) too.
    let v1 = TestClient::new(a.addr, 0x0101_0101);
    v1.hello("fo-v1");
    let m = Machine::small("fo-v1");
    let d = v1.crash(&m.crash(), 0);
    assert_eq!((d.verdict, d.why), (Verdict::Abort, DecisionReason::Busy));
}

/// A server of a later version: registers the client, then answers its CRASH with an
/// ABORT for a reason this client does not know.
fn later_server(socket: UdpSocket, reason: u8) {
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { return };
        let Ok((h, _)) = Header::parse(&buf[..n]) else { continue };
        let (t, body): (MessageType, Vec<u8>) = match h.msg_type {
            MessageType::Hello => {
                // Version 2 terms: registered, 1472 bytes, nothing granted or required.
                (MessageType::HelloAck, vec![0, 0, 0, 0, 0, 0, 0x05, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            }
            MessageType::Crash => (MessageType::Decision, vec![2, reason, 0, 0, 0, 0, 0x05, 0xc0]),
            MessageType::Abort => return,
            _ => continue,
        };
        let header = Header { version: h.version, ..Header::v1(t, 0, h.cookie, h.seq) };
        let mut out = [0u8; 256];
        let len = header.emit(&mut out, body.len(), |p| p.copy_from_slice(&body)).unwrap();
        socket.send_to(&out[..len], from).unwrap();
        if let Ok(Message::Decision(_)) = Header::parse(&out[..len]).map(|(h, p)| Message::parse(&h, p).unwrap()) {
            return;
        }
    }
}

#[test]
fn an_unknown_decision_reason_never_breaks_a_client() {
    for reason in [7u8, 0x80, 0xff] {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let server = std::thread::spawn(move || later_server(socket, reason));
        let ram = Ram::new(9);
        let cfg = config("fo-later", &[guest(1)]);
        let mut nd = install(nic(9, &[(guest(1), addr)]), cfg, &ram).expect("install");
        // The DECISION is read, its verdict obeyed at once: not waited out as silence.
        assert_eq!(dump(&mut nd, &ram).err(), Some(DumpError::Refused(DecisionReason::None)), "reason {reason}");
        server.join().unwrap();
    }
}

#[test]
fn each_server_has_its_own_key_and_the_dump_is_sealed_to_the_second() {
    let keys = TempDir::new("failover-keys");
    let key = |name: &str| {
        let path = keys.path().join(name);
        let text = netdumpd::keys::keygen(&path).unwrap();
        let public: netdump_core::crypto::PublicKey =
            text.lines().find_map(|l| l.strip_prefix("public key: ")).unwrap().parse().unwrap();
        (path, public)
    };
    let ((file_a, key_a), (file_b, key_b)) = (key("a.key"), key("b.key"));
    let dir_a = TempDir::new("failover-sealed-a");
    let dir_b = TempDir::new("failover-sealed-b");
    let a = TestServer::start_with(dir_a.path(), |c| c.encryption.private_keys = vec![file_a]);
    let b = TestServer::start_with(dir_b.path(), |c| c.encryption.private_keys = vec![file_b]);
    let ram = Ram::new(10);
    let mut cfg = config("fo-sealed", &[guest(1), guest(2)]);
    cfg.server_key = Some(key_a);
    cfg.fallbacks[0].as_mut().unwrap().key = Some(key_b);
    let mut nd = install(nic(10, &[(guest(1), a.addr), (guest(2), b.addr)]), cfg, &ram).expect("install");
    // Two handshakes, each with its server's key: both registered, the first active.
    assert!(nd.server_registered(0) && nd.server_registered(1));
    assert!(nd.encrypted());
    a.stop();
    let report = dump(&mut nd, &ram).expect("a sealed dump to the second server");
    assert_eq!(report.server, 1);
    assert_eq!(report.attempts.left(0), Some(DumpError::ServerSilent(Phase::Announce)));
    assert!(report.encrypted, "the second server's own session seals the dump");
    assert_eq!(report.sealing, Default::default(), "nothing dropped");
    assert_complete_dump(&b, "fo-sealed", &ram);
    assert_eq!(read_info(&dumps_of(&b, "fo-sealed")[0])["encrypted"], true);
}

#[test]
fn a_keyed_server_list_with_a_keyless_fallback_is_refused_at_install() {
    let keys = TempDir::new("failover-mixed-keys");
    let text = netdumpd::keys::keygen(&keys.path().join("a.key")).unwrap();
    let key: netdump_core::crypto::PublicKey =
        text.lines().find_map(|l| l.strip_prefix("public key: ")).unwrap().parse().unwrap();
    let ram = Ram::new(12);
    // Nothing listens: the refusal comes before any frame is sent.
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut cfg = config("fo-mixed", &[guest(1), guest(2)]);
    cfg.server_key = Some(key);
    let routes = [(guest(1), dead), (guest(2), dead)];
    assert_eq!(install(nic(12, &routes), cfg, &ram).err(), Some(InstallError::MixedEncryption));
    // The other way round too: a keyless first server and a keyed fallback.
    let mut cfg = config("fo-mixed", &[guest(1), guest(2)]);
    cfg.fallbacks[0].as_mut().unwrap().key = Some(key);
    assert_eq!(install(nic(12, &routes), cfg, &ram).err(), Some(InstallError::MixedEncryption));
}

#[test]
fn a_server_failing_midway_hands_the_whole_dump_to_the_next() {
    let dir_a = TempDir::new("failover-midway-a");
    let dir_b = TempDir::new("failover-midway-b");
    let a = TestServer::start(dir_a.path());
    let b = TestServer::start(dir_b.path());
    let ram = Ram::new(11);
    let cfg = config("fo-midway", &[guest(1), guest(2)]);
    let mut nic = nic(11, &[(guest(1), a.addr), (guest(2), b.addr)]);
    // The link to server 1 breaks after 40 DATA packets: from then on nothing the client
    // sends to it arrives (CRASH and DATA to server 2 pass).
    let mut data_to_a = 0u32;
    nic.tx_filter = Some(Box::new(move |frame| {
        let to_a = frame.len() > 42 && frame[30..34] == guest(1).0.octets();
        let data = frame.len() > 42 + 3 && frame[42 + 3] == MessageType::Data as u8;
        if to_a && data {
            data_to_a += 1;
        }
        !(to_a && data_to_a > 40)
    }));
    let mut nd = install(nic, cfg, &ram).expect("install");
    let report = dump(&mut nd, &ram).expect("the whole dump on the second server");
    assert_eq!(report.server, 1);
    assert_eq!(report.attempts.left(0), Some(DumpError::ServerSilent(Phase::Data)));
    assert_complete_dump(&b, "fo-midway", &ram);
    // The first server keeps what it got, marked incomplete once the client's ABORT or
    // its own timeout ends the session — never a verified vmcore.
    let on_a = dumps_of(&a, "fo-midway");
    assert_eq!(on_a.len(), 1, "{on_a:?}");
    assert!(!on_a[0].join("vmcore").exists(), "the interrupted dump is not a vmcore");
}
