//! Encrypted dumps (protocol version 2, feature `encryption`): the real client
//! (netdump-core over `host::UdpSocketNic`) against a real netdumpd holding a key, with
//! an attacker in the middle where a test needs one — a UDP relay on the loopback that
//! sees, alters, forges and replays packets in both directions. And the versions: what a
//! plaintext client, a version-1 client and a version-1 server get.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::core_reader::Core;
use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::crypto::PublicKey;
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::proto::{
    Ack, Decision, DecisionReason, HEADER_LEN, Header, HelloAckV2, HelloStatus, HelloTerms, Message, MessageType,
    REGISTERS_VALID, RegisterRecord, TextMessage, VERSION_1, Verdict, error_code, flags,
};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, DumpReport, InstallError, Netdump};
use netdumpd::DropReason;

const RAM_BASE: u64 = 0x10_0000;
const RAM_LEN: usize = 1 << 20;

/// 1 MiB of RAM: every 8th page zero, the others 8-byte words that name their address.
struct Ram(Vec<u8>);

impl Ram {
    fn new() -> Self {
        let mut v = vec![0u8; RAM_LEN];
        for (i, w) in v.chunks_exact_mut(8).enumerate() {
            let addr = RAM_BASE + 8 * i as u64;
            if (i * 8 / 4096) % 8 != 7 {
                w.copy_from_slice(&(addr ^ 0x5eed_0000_0000_0000).to_le_bytes());
            }
        }
        Ram(v)
    }

    /// A sample of the image's non-zero 8-byte words.
    fn sample_words(&self) -> Vec<[u8; 8]> {
        self.0
            .chunks_exact(8)
            .step_by(97)
            .filter(|w| w.iter().any(|b| *b != 0))
            .map(|w| w.try_into().unwrap())
            .collect()
    }
}

impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

/// A key file made by `netdumpd keygen` in `dir`, and its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PublicKey) {
    let path = dir.join(name);
    let text = netdumpd::keys::keygen(&path).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("public key: ")).unwrap();
    (path, line.parse().unwrap())
}

/// A server with `keys` in `dir` (and whatever `tweak` changes).
fn server_with_keys(dir: &Path, keys: &[PathBuf], tweak: impl FnOnce(&mut netdumpd::ServerConfig)) -> TestServer {
    TestServer::start_with(dir, |c| {
        c.encryption.private_keys = keys.to_vec();
        tweak(c);
    })
}

fn config(server: SocketAddr, name: &str, key: Option<PublicKey>) -> Config {
    Config {
        timeouts: Timeouts {
            hello_retry_us: 200_000,
            hello_attempts: 4,
            silence_timeout_us: 3_000_000,
            announce_timeout_us: 3_000_000,
            ..Timeouts::default()
        },
        server_key: key,
        ..Config::new(guest_net(server.port()), ClientName::new(name).unwrap())
    }
}

fn install(nic: UdpSocketNic, config: Config, seed: u64) -> Result<Netdump<UdpSocketNic, SystemClock>, InstallError> {
    let map =
        MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: RAM_LEN as u64, virt_start: RAM_BASE }]).unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut CounterRng(seed), config, buffers, map)
        .map_err(|f| f.error)?;
    // Raw DATA: these tests look for memory words on the wire and count packets; sealing
    // compressed blocks is the QEMU suite's `compressed-encrypted` scenario.
    nd.set_compression(false);
    Ok(nd)
}

fn dump(nd: &mut Netdump<UdpSocketNic, SystemClock>, ram: &Ram) -> Result<DumpReport, DumpError> {
    let regs = RegisterRecord { rip: 0xffff_8000_0010_2030, flags: REGISTERS_VALID, ..Default::default() };
    nd.dump(&CrashInfo::panic(0, b"encrypted test panic", &[0x10_2345]), &[regs], ram, None)
}

/// The vmcore of the only dump of `name`: its RAM must be `ram`, bit for bit.
fn assert_bit_exact(server: &TestServer, name: &str, ram: &Ram) -> serde_json::Value {
    let dumps: Vec<PathBuf> = server
        .dumps()
        .into_iter()
        .filter(|d| d.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}-")))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let bytes = std::fs::read(dumps[0].join("vmcore")).expect("a verified vmcore");
    assert_eq!(Core::new(&bytes).read_virt(RAM_BASE, RAM_LEN), &ram.0[..], "memory differs");
    read_info(&dumps[0])
}

/// Every datagram the client sent, after ARP: a capture of its side of the wire.
fn capture(nic: &mut UdpSocketNic) -> Arc<Mutex<Vec<u8>>> {
    let wire = Arc::new(Mutex::new(Vec::new()));
    let w = wire.clone();
    nic.tx_filter = Some(Box::new(move |frame| {
        w.lock().unwrap().extend_from_slice(frame);
        true
    }));
    wire
}

/// Every 8-byte window of a capture, to look words up in.
fn windows(wire: &[u8]) -> std::collections::HashSet<[u8; 8]> {
    wire.windows(8).map(|w| w.try_into().unwrap()).collect()
}

#[test]
fn an_encrypted_dump_arrives_bit_exact_and_no_memory_word_crosses_the_wire_in_clear() {
    let dir = TempDir::new("enc-clean");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    let ram = Ram::new();
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x21], 1500, server.addr).unwrap();
    let wire = capture(&mut nic);
    let mut nd = install(nic, config(server.addr, "sealed", Some(key)), 1).expect("install");
    assert!(nd.encrypted());
    assert_eq!(nd.protocol_version(), 2);
    let report = dump(&mut nd, &ram).expect("dump");
    assert!(report.encrypted);
    assert_eq!(report.sealing, Default::default(), "nothing dropped on a clean link");
    let info = assert_bit_exact(&server, "sealed", &ram);
    assert_eq!(info["encrypted"], true);
    assert_eq!(info["protocol_version"], 2);
    let wire = wire.lock().unwrap();
    assert!(wire.len() > RAM_LEN / 2, "the capture holds the dump ({} bytes)", wire.len());
    let words = ram.sample_words();
    assert!(words.len() > 1000);
    let on_wire = windows(&wire);
    let seen = words.iter().filter(|w| on_wire.contains(*w)).count();
    assert_eq!(seen, 0, "{seen} of {} sampled memory words crossed the wire in clear", words.len());
}

#[test]
fn the_same_dump_in_plaintext_shows_its_memory_on_the_wire() {
    // The control of the test above: the capture check finds what is there.
    let dir = TempDir::new("enc-control");
    let server = TestServer::start(dir.path());
    let ram = Ram::new();
    let mut nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x22], 1500, server.addr).unwrap();
    let wire = capture(&mut nic);
    let mut nd = install(nic, config(server.addr, "clear", None), 2).expect("install");
    assert!(!nd.encrypted());
    let report = dump(&mut nd, &ram).expect("dump");
    assert_eq!((report.encrypted, report.version), (false, 2));
    let info = assert_bit_exact(&server, "clear", &ram);
    assert_eq!(info["encrypted"], false);
    let words = ram.sample_words();
    let on_wire = windows(&wire.lock().unwrap());
    assert!(words.iter().all(|w| on_wire.contains(w)), "every sampled word is on a plaintext wire");
}

#[test]
fn a_wrong_pinned_key_fails_install_with_server_key_mismatch() {
    let dir = TempDir::new("enc-wrong-key");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let (_, other) = keygen(dir.path(), "other.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    // Another key altogether (unknown key id), and a key with the server's id but other
    // bytes (message 1 does not decrypt: handshake failed).
    let mut same_id = other;
    same_id.0[..8].copy_from_slice(&key.0[..8]);
    for (i, pinned) in [other, same_id].into_iter().enumerate() {
        let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x23 + i as u8], 1500, server.addr).unwrap();
        let started = Instant::now();
        let err = install(nic, config(server.addr, "mispinned", Some(pinned)), 3 + i as u64).err();
        assert_eq!(err, Some(InstallError::ServerKeyMismatch), "pinned key {i}");
        // Within the HELLO bounds (4 × 200 ms; generous slack: this checks "gives up").
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let snap = server.stats.snapshot();
    assert_eq!(snap.dropped(DropReason::BadTag), 4, "each HELLO of the same-id key failed its handshake");
    assert!(server.dumps().is_empty());
}

/// A UDP socket on the loopback served by a thread, which calls `turn` (the socket
/// waits at most 10 ms for a datagram) until dropped.
struct SocketLoop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketLoop {
    fn spawn(mut turn: impl FnMut(&UdpSocket) + Send + 'static) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                turn(&socket);
            }
        });
        SocketLoop { addr, stop, thread: Some(thread) }
    }
}

impl Drop for SocketLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A UDP responder that answers each datagram with what `answer` makes.
fn fake_server(mut answer: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketLoop {
    let mut buf = [0u8; 9000];
    SocketLoop::spawn(move |socket| {
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && let Some(reply) = answer(&buf[..n])
        {
            socket.send_to(&reply, from).unwrap();
        }
    })
}

#[test]
fn a_server_whose_message_2_does_not_verify_fails_install_with_server_key_mismatch() {
    let dir = TempDir::new("enc-bad-m2");
    let (_, key) = keygen(dir.path(), "server.key");
    // Answers every HELLO with "registered, encrypted" and a message 2 of noise: a
    // server (or an attacker) without the pinned key.
    let fake = fake_server(|p| {
        let (h, _) = Header::parse(p).ok()?;
        let terms = HelloTerms { status: HelloStatus::Registered, max_payload: 1472, features: 1, required: 0 };
        let noise: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        let reply = Message::HelloAckV2(HelloAckV2 { terms, handshake: &noise });
        let mut buf = vec![0u8; 256];
        let n = reply.emit_packet(2, 0, h.cookie, h.seq, &mut buf).ok()?;
        Some(buf[..n].to_vec())
    });
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x25], 1500, fake.addr).unwrap();
    assert_eq!(install(nic, config(fake.addr, "fooled", Some(key)), 5).err(), Some(InstallError::ServerKeyMismatch));
}

/// A version-1 server: every version-2 packet gets ERROR UNSUPPORTED_VERSION (cookie 0,
/// as the old netdumpd sent it), a version-1 HELLO gets registered.
fn version_1_server() -> SocketLoop {
    fake_server(|p| {
        let mut buf = vec![0u8; 256];
        let reply = match Header::parse(p) {
            Ok((h, _)) if h.version == VERSION_1 && h.msg_type == MessageType::Hello => {
                let ack = netdump_core::proto::HelloAck { status: HelloStatus::Registered, max_payload: 1472 };
                (Message::HelloAck(ack), h.cookie, h.seq)
            }
            _ => {
                let e =
                    TextMessage { code: error_code::UNSUPPORTED_VERSION, text: b"netdumpd speaks protocol version 1" };
                (Message::Error(e), 0, Header::peek_seq(p).unwrap_or(0))
            }
        };
        let n = reply.0.emit_packet(VERSION_1, 0, reply.1, reply.2, &mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
}

#[test]
fn a_plaintext_client_falls_back_to_version_1_with_a_version_1_server_and_an_encrypting_one_does_not() {
    let dir = TempDir::new("enc-v1-server");
    let (_, key) = keygen(dir.path(), "server.key");
    let fake = version_1_server();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x26], 1500, fake.addr).unwrap();
    let nd = install(nic, config(fake.addr, "old-server", None), 6).expect("a plaintext client installs in version 1");
    assert_eq!((nd.protocol_version(), nd.encrypted()), (1, false));
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x27], 1500, fake.addr).unwrap();
    assert_eq!(install(nic, config(fake.addr, "old-server", Some(key)), 7).err(), Some(InstallError::Insecure));
}

#[test]
fn an_encrypting_client_refuses_a_server_without_keys() {
    let dir = TempDir::new("enc-no-keys");
    let (_, key) = keygen(dir.path(), "server.key");
    let server = TestServer::start(dir.path());
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x28], 1500, server.addr).unwrap();
    assert_eq!(install(nic, config(server.addr, "keyless", Some(key)), 8).err(), Some(InstallError::Insecure));
}

#[test]
fn require_encryption_refuses_plaintext_clients_with_the_reason_in_hello_ack_and_the_log() {
    let dir = TempDir::new("enc-required");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let config_text = format!("[encryption]\nprivate_keys = [{:?}]\nrequire_encryption = true\n", key_file);
    let daemon = Daemon::start(dir.path(), &config_text);
    // A version-2 plaintext client: ENCRYPTION_REQUIRED.
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x29], 1500, daemon.addr).unwrap();
    assert_eq!(install(nic, config(daemon.addr, "plain-v2", None), 9).err(), Some(InstallError::EncryptionRequired));
    // A version-1 client: HELLO_ACK refused.
    let v1 = TestClient::new(daemon.addr, 0xabcd);
    assert_eq!(v1.hello("plain-v1").status, HelloStatus::Refused);
    // An encrypting client registers and dumps.
    let ram = Ram::new();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x2a], 1500, daemon.addr).unwrap();
    let mut nd = install(nic, config(daemon.addr, "sealed-ok", Some(key)), 10).expect("install");
    dump(&mut nd, &ram).expect("an encrypted dump where encryption is required");
    let log = daemon.log_text();
    for name in ["plain-v2", "plain-v1"] {
        assert!(
            log.lines().any(|l| l.contains(name) && l.contains("encryption is required")),
            "no log line says why {name} was refused:\n{log}"
        );
    }
    assert!(log.contains("version-1 HELLO") && log.contains("without the ENCRYPTED feature"), "{log}");
}

#[test]
fn a_version_1_client_still_dumps_to_a_server_with_keys() {
    let dir = TempDir::new("enc-v1-client");
    let (key_file, _) = keygen(dir.path(), "server.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    let m = Machine::small("old-kernel");
    let c = TestClient::new(server.addr, 0x0dd);
    assert_eq!(c.hello(&m.name).status, HelloStatus::Registered);
    assert_eq!(c.crash(&m.crash(), 0).verdict, Verdict::DumpAll);
    let stream = m.stream(1400);
    for p in &stream {
        c.send_data(p, 0);
    }
    let finish = c.finish(stream.len() as u32, &finish_for(&stream, m.zero_pages()));
    assert_eq!(finish.status, netdump_core::proto::FinishStatus::Verified);
    let info = read_info(&server.dumps()[0]);
    assert_eq!((info["protocol_version"].as_u64(), info["encrypted"].as_bool()), (Some(1), Some(false)));
}

/// Which way a datagram goes through the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    ToServer,
    ToClient,
}

/// What the relay does with each datagram: the datagrams to send on in its place.
type Tamper = Box<dyn FnMut(Way, &[u8]) -> Vec<Vec<u8>> + Send>;

/// An attacker on the path: a UDP relay between one client and the server, passing
/// every datagram through `tamper`.
fn relay(server: SocketAddr, mut tamper: Tamper) -> SocketLoop {
    let mut client = None;
    let mut buf = [0u8; 9000];
    SocketLoop::spawn(move |socket| {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { return };
        let (way, to) = if from == server {
            (Way::ToClient, client)
        } else {
            client = Some(from);
            (Way::ToServer, Some(server))
        };
        let Some(to) = to else { return };
        for d in tamper(way, &buf[..n]) {
            let _ = socket.send_to(&d, to);
        }
    })
}

fn msg_type(d: &[u8]) -> Option<MessageType> {
    Header::parse(d).ok().map(|(h, _)| h.msg_type)
}

fn flip_last_byte(d: &[u8]) -> Vec<u8> {
    let mut d = d.to_vec();
    *d.last_mut().unwrap() ^= 0x01;
    d
}

#[test]
fn forged_altered_and_replayed_packets_are_refused_both_ways_and_the_dump_is_bit_exact() {
    let dir = TempDir::new("enc-mitm");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    let mut data_seen = 0u32;
    let mut acks_seen = 0u32;
    let mut forged_decision = false;
    // HELLO_ACKs relayed to the client: one answers its HELLO; more answer HELLOs it
    // repeated while the answer was slow (a loaded machine), and reach a client already
    // in its sealed session, which drops them as unsealed too.
    let hello_acks = Arc::new(AtomicU32::new(0));
    let counted = hello_acks.clone();
    let tamper: Tamper = Box::new(move |way, d| {
        let Ok((h, _)) = Header::parse(d) else { return vec![d.to_vec()] };
        if (way, h.msg_type) == (Way::ToClient, MessageType::HelloAck) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        match (way, h.msg_type) {
            (Way::ToServer, MessageType::Data) => {
                data_seen += 1;
                match data_seen {
                    // An altered copy first (a bit of its ciphertext flipped): bad_tag.
                    3 => vec![flip_last_byte(d), d.to_vec()],
                    // The packet, then the same packet again (a replay): replayed_nonce.
                    5 => vec![d.to_vec(), d.to_vec()],
                    // A forged DATA in clear, the cookie right: unsealed.
                    7 => {
                        let forged = netdump_core::proto::Data {
                            section: netdump_core::proto::Section::Memory,
                            offset: RAM_BASE,
                            data: &[0xee; 64],
                        };
                        let mut buf = vec![0u8; 200];
                        let n = Message::Data(forged).emit_packet(2, 0, h.cookie, h.seq, &mut buf).unwrap();
                        vec![buf[..n].to_vec(), d.to_vec()]
                    }
                    _ => vec![d.to_vec()],
                }
            }
            (Way::ToClient, MessageType::Decision) if !forged_decision => {
                forged_decision = true;
                // An ABORT in clear (unsealed), and the real DECISION altered (bad tag),
                // before the real one.
                let abort = Decision { verdict: Verdict::Abort, why: DecisionReason::Hook, max_payload: 1472 };
                let mut buf = vec![0u8; 64];
                let n = Message::Decision(abort).emit_packet(2, 0, h.cookie, h.seq, &mut buf).unwrap();
                vec![buf[..n].to_vec(), flip_last_byte(d), d.to_vec()]
            }
            (Way::ToClient, MessageType::Ack) => {
                acks_seen += 1;
                if acks_seen == 2 {
                    // A STOP in clear, then the ACK twice (a replay).
                    let stop = Ack { stop: true, bitmap: &[] };
                    let mut buf = vec![0u8; 64];
                    let n = Message::Ack(stop).emit_packet(2, 0, h.cookie, h.seq, &mut buf).unwrap();
                    vec![buf[..n].to_vec(), d.to_vec(), d.to_vec()]
                } else {
                    vec![d.to_vec()]
                }
            }
            _ => vec![d.to_vec()],
        }
    });
    let relay = relay(server.addr, tamper);
    let ram = Ram::new();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x30], 1500, relay.addr).unwrap();
    let mut nd = install(nic, config(relay.addr, "attacked", Some(key)), 11).expect("install");
    let report = dump(&mut nd, &ram).expect("the dump survives the attacker");
    assert_bit_exact(&server, "attacked", &ram);
    let late_hello_acks = u64::from(hello_acks.load(Ordering::SeqCst).saturating_sub(1));
    assert_eq!(
        report.sealing.unsealed,
        2 + late_hello_acks,
        "the forged ABORT decision and STOP, and {late_hello_acks} late HELLO_ACKs"
    );
    assert_eq!(report.sealing.bad_tag, 1, "the altered DECISION");
    assert_eq!(report.sealing.replayed, 1, "the replayed ACK");
    server.wait_for("the drops counted", |s| s.dropped(DropReason::Unsealed) == 1);
    let snap = server.stats.snapshot();
    assert_eq!(snap.dropped(DropReason::BadTag), 1, "the altered DATA");
    assert_eq!(snap.dropped(DropReason::ReplayedNonce), 1, "the replayed DATA");
    assert_eq!(snap.dropped(DropReason::Unsealed), 1, "the forged clear DATA");
    drop(relay);
}

#[test]
fn packets_of_an_earlier_boot_are_refused_as_they_are_and_under_the_new_cookie() {
    let dir = TempDir::new("enc-earlier-boot");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    let recorded: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let rec = recorded.clone();
    let relay = relay(
        server.addr,
        Box::new(move |way, d| {
            if way == Way::ToServer {
                rec.lock().unwrap().push(d.to_vec());
            }
            vec![d.to_vec()]
        }),
    );
    // Boot 1 dumps; boot 2 of the same machine registers (boot 1's cookie is retired).
    let ram = Ram::new();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x31], 1500, relay.addr).unwrap();
    let mut first = install(nic, config(relay.addr, "rebooted", Some(key)), 12).expect("install boot 1");
    dump(&mut first, &ram).expect("boot 1 dumps");
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x31], 1500, server.addr).unwrap();
    let second = install(nic, config(server.addr, "rebooted", Some(key)), 13).expect("install boot 2");
    let old = first.cookie();
    let boot_1: Vec<Vec<u8>> = recorded.lock().unwrap().clone();
    let sealed: Vec<&Vec<u8>> = boot_1.iter().filter(|d| Header::parse(d).is_ok_and(|(h, _)| h.is_sealed())).collect();
    assert!(sealed.len() > 100, "boot 1 sent its dump sealed");
    // As recorded (the old cookie), and with the new cookie written over it.
    let replay = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &boot_1 {
        replay.send_to(d, server.addr).unwrap();
        let mut moved = d.to_vec();
        moved[8..16].copy_from_slice(&second.cookie().to_be_bytes());
        Header::set_crc(&mut moved);
        replay.send_to(&moved, server.addr).unwrap();
    }
    let hellos = boot_1.iter().filter(|d| msg_type(d) == Some(MessageType::Hello)).count() as u64;
    let others = boot_1.len() as u64 - hellos;
    assert_eq!(others, sealed.len() as u64, "everything after the HELLO was sealed");
    let counted =
        [DropReason::ReplayedHello, DropReason::ReplayedNonce, DropReason::HandshakeMismatch, DropReason::BadTag];
    server.wait_for("every replay counted", |s| {
        counted.iter().map(|r| s.dropped(*r)).sum::<u64>() == 2 * boot_1.len() as u64
    });
    let snap = server.stats.snapshot();
    // As recorded: a retired cookie's HELLO (replayed_hello), its sealed packets
    // (replayed_nonce: its keys were forgotten with it).
    assert_eq!(snap.dropped(DropReason::ReplayedHello), hellos);
    assert_eq!(snap.dropped(DropReason::ReplayedNonce), others);
    // Under the new cookie: another handshake than the one it registered with, and tags
    // made with boot 1's keys over boot 1's header.
    assert_eq!(snap.dropped(DropReason::HandshakeMismatch), hellos);
    assert_eq!(snap.dropped(DropReason::BadTag), others);
    assert_eq!(snap.dumps_started, 1, "no dump from the replay");
    assert_ne!(old, second.cookie());
}

#[test]
fn a_server_restart_mid_dump_stops_the_encrypted_client_as_it_stops_a_plaintext_one() {
    let dir = TempDir::new("enc-restart");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let config_text = format!("[encryption]\nprivate_keys = [{:?}]\n", key_file);
    let mut first = Daemon::start(dir.path(), &config_text);
    let port = first.addr.port();
    // The relay holds the client's DATA back from the 40th packet on, until the server
    // restarted; it records the nonces of the server's packets.
    let hold = Arc::new(AtomicBool::new(false));
    let nonces: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (h, n) = (hold.clone(), nonces.clone());
    let mut data = 0;
    let relay = relay(
        first.addr,
        Box::new(move |way, d| {
            if let Ok((hd, p)) = Header::parse(d)
                && hd.is_sealed()
                && way == Way::ToClient
            {
                n.lock().unwrap().push(u64::from_be_bytes(p[..8].try_into().unwrap()));
            }
            if way == Way::ToServer && msg_type(d) == Some(MessageType::Data) {
                data += 1;
                if data == 40 {
                    h.store(true, Ordering::SeqCst);
                }
                if h.load(Ordering::SeqCst) {
                    return Vec::new();
                }
            }
            vec![d.to_vec()]
        }),
    );
    let ram = Ram::new();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x32], 1500, relay.addr).unwrap();
    let mut cfg = config(relay.addr, "restarted", Some(key));
    cfg.timeouts.silence_timeout_us = 20_000_000;
    let mut nd = install(nic, cfg, 14).expect("install");
    let dumper = std::thread::spawn(move || {
        let r = dump(&mut nd, &ram);
        (r, nd)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hold.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the dump did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Killed (no clean shutdown), after the registry reached the disk.
    std::thread::sleep(Duration::from_millis(1200));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let before = nonces.lock().unwrap().clone();
    let second = Daemon::start_on(dir.path(), &config_text, port);
    hold.store(false, Ordering::SeqCst);
    let (result, nd) = dumper.join().unwrap();
    assert_eq!(result.unwrap_err(), DumpError::StoppedByServer, "the restarted server stops what it cannot resume");
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect();
    assert_eq!(dumps.len(), 1);
    assert!(dumps[0].join("vmcore-incomplete").exists(), "the dump is kept, incomplete");
    assert_eq!(read_info(&dumps[0])["status"], "incomplete");
    // The STOP was sealed under a nonce beyond every one the first server used.
    let after: Vec<u64> = nonces.lock().unwrap()[before.len()..].to_vec();
    let (max_before, min_after) = (before.iter().max().unwrap(), after.iter().min().expect("a sealed STOP"));
    assert!(min_after > max_before, "nonces {min_after} after the restart, up to {max_before} before");
    assert!(nd.encrypted());
    let log = second.log_text();
    assert!(log.contains("dump left receiving by an earlier netdumpd"), "{log}");
    // The keys on disk are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("clients.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(relay);
}

#[test]
fn every_retransmission_is_sealed_under_a_new_nonce() {
    let dir = TempDir::new("enc-retransmit");
    let (key_file, key) = keygen(dir.path(), "server.key");
    let server = server_with_keys(dir.path(), &[key_file], |_| {});
    // Each DATA the client sent: its seq, its nonce, the datagram.
    type Sent = Vec<(u32, u64, Vec<u8>)>;
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let s = sent.clone();
    let mut state = 7u64;
    let relay = relay(
        server.addr,
        Box::new(move |way, d| {
            if way == Way::ToServer
                && let Ok((h, p)) = Header::parse(d)
                && h.msg_type == MessageType::Data
            {
                s.lock().unwrap().push((h.seq, u64::from_be_bytes(p[..8].try_into().unwrap()), d.to_vec()));
                // Lose 10% of the DATA.
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if (state >> 33).is_multiple_of(10) {
                    return Vec::new();
                }
            }
            vec![d.to_vec()]
        }),
    );
    let ram = Ram::new();
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 0x33], 1500, relay.addr).unwrap();
    let mut nd = install(nic, config(relay.addr, "lossy", Some(key)), 15).expect("install");
    let report = dump(&mut nd, &ram).expect("dump through loss");
    assert!(report.retransmissions > 0);
    assert_bit_exact(&server, "lossy", &ram);
    let sent = sent.lock().unwrap();
    let mut nonces: Vec<u64> = sent.iter().map(|(_, n, _)| *n).collect();
    nonces.sort_unstable();
    nonces.dedup();
    assert_eq!(nonces.len(), sent.len(), "a nonce used twice");
    let retransmitted = sent.iter().filter(|(_, _, d)| u16::from_be_bytes([d[4], d[5]]) & flags::RETRANSMIT != 0);
    for (seq, _, d) in retransmitted {
        let first = sent.iter().find(|(s, _, _)| s == seq).unwrap();
        assert_ne!(first.2[HEADER_LEN..], d[HEADER_LEN..], "DATA {seq} sent again with the same ciphertext");
    }
}
