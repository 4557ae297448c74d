//! The client's receive path under fuzzing. The real `Netdump` installs and dumps a small
//! RAM through a NIC that carries its frames to a well-behaved server in this file (ARP,
//! HELLO_ACK, DECISION, selective ACKs, FINISH_ACK), on virtual time; the fuzzer's frames
//! reach the client between the server's. The client must not panic, must end within its
//! bounds, must only ever send frames the server can read, must retransmit byte-identical
//! copies, and whatever the server verifies must be the RAM bit for bit.
//!
//! A record is one frame; its first byte says after how many more frames from the client
//! it arrives, the rest is the frame. The tag says what the rest is:
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | 0 a whole Ethernet frame; 1 a UDP payload from the server; 2 from the server's address, another port; 3 from another address, the server's port |
//! | 2 | recompute the protocol CRC |
//! | 3 | set `payload_len` from the payload's length |
//! | 4 | write the client's cookie into the header |
//! | 5 | [`client_receive_sealed`] only: seal the packet (the record's header and, as
//! plaintext, its payload) under the server's key of the session, with its next nonce |
//!
//! [`client_receive_sealed`] runs the same with the client pinning the server's key: the
//! server here answers the Noise handshake (with `snow`), opens what the client sends
//! (which must open) and seals what it answers, so the fuzzer's frames meet the client's
//! encrypted receive path — unsealed, forged, replayed, or sealed right (bit 5) so that
//! its mutations reach the client's parsing past the tag.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use netdump_core::client::{ClientName, Config, RtoBounds, Timeouts};
use netdump_core::clock::Clock;
use netdump_core::crypto::{PROTOCOL_NAME, PublicKey, ReplayWindow, Transport, open_packet, seal_packet};
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::net::{
    EthernetAddress, FRAME_OVERHEAD, Inbound, Ipv4Address, NetConfig, UdpFlow, classify, emit_arp, emit_udp,
};
use netdump_core::nic::{ETHERNET_HEADER_LEN, NicError, PolledNic, check_frame_len};
use netdump_core::proto::{
    Ack, AfterDump, Data, Decision, DecisionReason, FinishAck, FinishStatus, HEADER_LEN, Header, HelloAck, HelloAckV2,
    HelloStatus, HelloTerms, HelloV2, Message, MessageType, Section, StreamCrc, Verdict,
};
use netdump_core::{CrashBuffers, CrashInfo, Netdump};
use smoltcp::wire::ArpOperation;

use crate::input::{Records, encode, seal, seal_record};

const WINDOW: usize = 8;
const RAM_BASE: u64 = 0x10_0000;
const PAGES: u64 = 12;
const MTU: usize = 1500;
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x15];
const SERVER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const CLIENT_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const SERVER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const OTHER_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);
const SERVER_PORT: u16 = 6666;
const CLIENT_PORT: u16 = 6665;
/// Virtual time each reading of the clock advances.
const TICK_US: u64 = 20;
/// Far beyond the sum of every bound below: reaching it means the client hung.
const TIME_LIMIT_US: u64 = 5_000_000;
/// Records of one input beyond this are ignored.
const MAX_RECORDS: usize = 64;

/// Virtual time that advances on every reading, so every wait of the client ends.
#[derive(Clone, Default)]
struct TickClock(Rc<Cell<u64>>);

impl Clock for TickClock {
    fn now_us(&self) -> u64 {
        let t = self.0.get() + TICK_US;
        self.0.set(t);
        assert!(t < TIME_LIMIT_US, "the client was still waiting after {t} us of virtual time");
        t
    }
}

/// Short bounds, so an input runs in microseconds of real time.
fn timeouts() -> Timeouts {
    Timeouts {
        arp_retry_us: 2_000,
        arp_attempts: 3,
        hello_retry_us: 2_000,
        hello_attempts: 3,
        announce_retry_us: 2_000,
        announce_timeout_us: 20_000,
        silence_timeout_us: 20_000,
        finish_retry_us: 2_000,
        finish_timeout_us: 20_000,
        keepalive_us: 5_000,
        rto: RtoBounds { initial_us: 2_000, min_us: 500, max_us: 5_000 },
    }
}

/// The RAM: every fourth page zero, the others bytes that name their address.
struct Ram;

fn ram_byte(addr: u64) -> u8 {
    if (addr - RAM_BASE) / 4096 % 4 == 3 { 0 } else { (addr.wrapping_mul(31) >> 3) as u8 | 1 }
}

impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        if phys < RAM_BASE || phys + out.len() as u64 > RAM_BASE + PAGES * 4096 {
            return Err(MemoryError { phys });
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = ram_byte(phys + i as u64);
        }
        Ok(())
    }
}

/// The server's static key in the sealed target.
const SERVER_SECRET: [u8; 32] = [0x5e; 32];

fn server_public() -> PublicKey {
    PublicKey(x25519_public(&SERVER_SECRET))
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// The well-behaved server at the other end of the NIC.
#[derive(Default)]
struct Server {
    /// The session's keys, once the handshake is done (sealed target).
    channel: Option<(Transport, ReplayWindow)>,
    cookie: Option<u64>,
    /// The protocol version of the client's HELLO, which every answer speaks.
    version: u8,
    /// DATA payloads by seq (the first copy; later copies must equal it).
    data: BTreeMap<u32, Vec<u8>>,
    image: Vec<u8>,
    since_ack: u32,
    verified: bool,
}

impl Server {
    fn reply(&mut self, t: MessageType, seq: u32, len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut payload = vec![0u8; HEADER_LEN + 24 + len];
        let header = Header { version: self.version, ..Header::v1(t, 0, self.cookie.unwrap_or(0), seq) };
        let n = match self.channel.as_mut() {
            Some((transport, _)) => seal_packet(transport, header, len, &mut payload, fill).expect("sized buffer"),
            None => header.emit(&mut payload, len, fill).expect("sized buffer"),
        };
        udp_frame(SERVER_IP, SERVER_PORT, &payload[..n])
    }

    /// Answers an encrypting client's HELLO: message 2 (the terms as its payload), and
    /// the session's keys.
    fn handshake(&mut self, h: &Header, hello: &HelloV2<'_>) -> Vec<u8> {
        let mut prologue = [0u8; netdump_core::proto::MAX_PROLOGUE];
        let n = hello.prologue(h.cookie, &mut prologue);
        let mut responder = snow::Builder::new(PROTOCOL_NAME.parse().expect("pattern"))
            .local_private_key(&SERVER_SECRET)
            .and_then(|b| b.prologue(&prologue[..n]))
            .and_then(|b| b.build_responder())
            .expect("responder");
        let mut scratch = [0u8; 64];
        responder.read_message(hello.handshake, &mut scratch).expect("the client's message 1 verifies");
        let terms = HelloTerms {
            status: HelloStatus::Registered,
            max_payload: 1472,
            features: netdump_core::proto::features::ENCRYPTED,
            required: 0,
        };
        let mut t = [0u8; HelloTerms::WIRE_LEN];
        terms.emit(&mut t);
        let mut m2 = [0u8; 128];
        let len = responder.write_message(&t, &mut m2).expect("message 2");
        let (i, r) = responder.dangerously_get_raw_split();
        let a = HelloAckV2 { terms, handshake: &m2[..len] };
        let frame = self.reply(MessageType::HelloAck, h.seq, a.wire_len(), |p| a.emit(p));
        self.channel = Some((Transport::responder(i, r), ReplayWindow::new()));
        frame
    }

    /// A frame from the client; answers go to `rx`.
    fn on_frame(&mut self, frame: &[u8], rx: &mut VecDeque<Vec<u8>>) {
        match classify(frame, SERVER_MAC, SERVER_IP, SERVER_PORT) {
            Inbound::ArpRequest { mac, ip } => {
                let mut reply = vec![0u8; 60];
                emit_arp(&mut reply, ArpOperation::Reply, SERVER_MAC, SERVER_IP, Some(mac), ip);
                rx.push_back(reply);
            }
            Inbound::Udp { payload, .. } => self.on_packet(payload, rx),
            Inbound::Ignored(netdump_core::net::Ignored::NotForUs) | Inbound::ArpReply { .. } => {}
            Inbound::Ignored(why) => panic!("the client sent a frame the server cannot read ({why:?}): {frame:02x?}"),
        }
    }

    fn on_packet(&mut self, packet: &[u8], rx: &mut VecDeque<Vec<u8>>) {
        let (h, payload) =
            Header::parse(packet).unwrap_or_else(|e| panic!("the client sent a bad packet ({e}): {packet:02x?}"));
        assert!(h.msg_type.from_client(), "the client sent a server message: {h:?}");
        let mut plain = vec![0u8; packet.len()];
        let payload = match self.channel.as_mut() {
            Some((transport, replay)) => {
                let opened = open_packet(transport, replay, packet, &mut plain);
                let (_, p) = opened.unwrap_or_else(|e| panic!("the client sent a packet that does not open: {e:?}"));
                p
            }
            None => {
                assert!(!h.is_sealed(), "a sealed packet before the handshake");
                payload
            }
        };
        let msg = Message::parse(&h, payload)
            .unwrap_or_else(|e| panic!("the client sent a {:?} that does not parse: {e}", h.msg_type));
        if h.msg_type != MessageType::Hello {
            assert_eq!(Some(h.cookie), self.cookie, "the client changed its cookie");
        }
        match msg {
            Message::Hello(_) => {
                self.cookie = Some(h.cookie);
                self.version = h.version;
                let a = HelloAck { status: HelloStatus::Registered, max_payload: 1472 };
                rx.push_back(self.reply(MessageType::HelloAck, h.seq, a.wire_len(), |p| a.emit(p)));
            }
            Message::HelloV2(hello) if !hello.handshake.is_empty() => {
                self.cookie = Some(h.cookie);
                self.version = h.version;
                if self.channel.is_none() {
                    let frame = self.handshake(&h, &hello);
                    rx.push_back(frame);
                }
            }
            Message::HelloV2(_) => {
                self.cookie = Some(h.cookie);
                self.version = h.version;
                let terms = HelloTerms { status: HelloStatus::Registered, max_payload: 1472, features: 0, required: 0 };
                let a = HelloAckV2 { terms, handshake: &[] };
                rx.push_back(self.reply(MessageType::HelloAck, h.seq, a.wire_len(), |p| a.emit(p)));
            }
            Message::Crash(c) => {
                self.image = vec![0; (PAGES * 4096) as usize];
                assert!(c.ranges.iter().eq([MemoryRange {
                    phys_start: RAM_BASE,
                    length: PAGES * 4096,
                    virt_start: RAM_BASE
                }]));
                let d = Decision { verdict: Verdict::DumpAll, why: DecisionReason::None, max_payload: 1472 };
                rx.push_back(self.reply(MessageType::Decision, h.seq, d.wire_len(), |p| d.emit(p)));
            }
            Message::Data(d) => self.on_data(h, &d, payload, rx),
            Message::Finish(f) => {
                let status = self.verify(h.seq, f.stream_crc, f.total_bytes);
                self.verified |= status == FinishStatus::Verified;
                let a = FinishAck { status, action: AfterDump::Reboot };
                rx.push_back(self.reply(MessageType::FinishAck, h.seq, a.wire_len(), |p| a.emit(p)));
            }
            _ => {}
        }
    }

    fn on_data(&mut self, h: Header, d: &Data<'_>, payload: &[u8], rx: &mut VecDeque<Vec<u8>>) {
        match self.data.get(&h.seq) {
            Some(first) => assert_eq!(first, payload, "DATA {} was retransmitted with other bytes", h.seq),
            None => {
                self.data.insert(h.seq, payload.to_vec());
                if d.section == Section::Memory {
                    let at = usize::try_from(d.offset - RAM_BASE).expect("memory inside the announced range");
                    self.image[at..at + d.data.len()].copy_from_slice(d.data);
                }
            }
        }
        self.since_ack += 1;
        if h.flags & netdump_core::proto::flags::ACK_REQUEST != 0 || self.since_ack >= 4 {
            self.since_ack = 0;
            let cumulative = (0..).find(|s| !self.data.contains_key(s)).unwrap_or(0);
            let mut bitmap = [0u8; 8];
            for i in 0..64u32 {
                if self.data.contains_key(&(cumulative + 1 + i)) {
                    bitmap[(i / 8) as usize] |= 1 << (i % 8);
                }
            }
            let a = Ack { stop: false, bitmap: &bitmap };
            rx.push_back(self.reply(MessageType::Ack, cumulative, a.wire_len(), |p| a.emit(p)));
        }
    }

    fn verify(&self, packets: u32, stream_crc: u32, total_bytes: u64) -> FinishStatus {
        if (0..packets).any(|s| !self.data.contains_key(&s)) || self.data.keys().any(|s| *s >= packets) {
            return FinishStatus::MissingData;
        }
        let mut crc = StreamCrc::new();
        for p in self.data.values() {
            crc.add(crc32fast::hash(p));
        }
        let bytes: u64 = self.data.values().map(|p| (p.len() - Data::SUBHEADER_LEN) as u64).sum();
        if crc.value() != stream_crc || bytes != total_bytes {
            return FinishStatus::CrcMismatch;
        }
        FinishStatus::Verified
    }
}

/// A UDP datagram to the client from `ip:port`, in a whole frame.
fn udp_frame(ip: Ipv4Address, port: u16, payload: &[u8]) -> Vec<u8> {
    let flow = UdpFlow {
        src_mac: SERVER_MAC,
        dst_mac: EthernetAddress(CLIENT_MAC),
        src_ip: ip,
        dst_ip: CLIENT_IP,
        src_port: port,
        dst_port: CLIENT_PORT,
    };
    let mut frame = vec![0u8; FRAME_OVERHEAD + payload.len()];
    emit_udp(&mut frame, &flow, payload.len(), |p| p.copy_from_slice(payload));
    frame
}

/// One of the fuzzer's frames, waiting for its moment.
struct Injection {
    after_tx: u64,
    tag: u8,
    bytes: Vec<u8>,
}

/// The NIC: frames from the client go to the server; the server's answers and the
/// fuzzer's frames come back.
struct FuzzNic {
    server: Server,
    rx: VecDeque<Vec<u8>>,
    injections: VecDeque<Injection>,
    sent: u64,
}

impl FuzzNic {
    /// Queues the fuzzer's frames whose moment has come, shaped by their tags.
    fn inject(&mut self) {
        while self.injections.front().is_some_and(|i| i.after_tx <= self.sent) {
            let Some(i) = self.injections.pop_front() else { break };
            let mut bytes = i.bytes;
            let is_packet = i.tag & 3 != 0;
            if is_packet {
                if i.tag & 0x10 != 0 && bytes.len() >= 16 {
                    bytes[8..16].copy_from_slice(&self.server.cookie.unwrap_or(0).to_be_bytes());
                }
                seal(&mut bytes, i.tag & 0x08 != 0, i.tag & 0x04 != 0);
                if i.tag & 0x20 != 0
                    && bytes.len() >= HEADER_LEN
                    && let Some((transport, _)) = self.server.channel.as_mut()
                {
                    bytes = seal_record(transport, &bytes);
                }
            }
            let frame = match i.tag & 3 {
                0 => bytes,
                1 => udp_frame(SERVER_IP, SERVER_PORT, &bytes),
                2 => udp_frame(SERVER_IP, SERVER_PORT + 1, &bytes),
                _ => udp_frame(OTHER_IP, SERVER_PORT, &bytes),
            };
            if frame.len() <= MTU + ETHERNET_HEADER_LEN {
                self.rx.push_back(frame);
            }
        }
    }
}

impl PolledNic for FuzzNic {
    fn mac_address(&self) -> [u8; 6] {
        CLIENT_MAC
    }
    fn mtu(&self) -> usize {
        MTU
    }
    fn reset(&mut self) -> Result<(), NicError> {
        // A reset loses what the device had received.
        self.rx.clear();
        Ok(())
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        check_frame_len(len, MTU)?;
        let mut frame = vec![0u8; len];
        fill(&mut frame);
        self.sent += 1;
        self.server.on_frame(&frame, &mut self.rx);
        self.inject();
        Ok(())
    }
    fn poll_transmit(&mut self) -> usize {
        0
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        match self.rx.pop_front() {
            Some(frame) => {
                handler(&frame);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The crash buffers, allocated once per thread and lent to each input's client.
fn crash_buffers() -> &'static mut CrashBuffers<WINDOW> {
    thread_local! {
        static BUFFERS: *mut CrashBuffers<WINDOW> = Box::into_raw(Box::new(CrashBuffers::new()));
    }
    // SAFETY: the allocation is never freed, so it lives as long as `'static` says; and
    // each input's client, which holds the only reference, is dropped before the next
    // input on this thread borrows the buffers again (targets run one input at a time).
    BUFFERS.with(|b| unsafe { &mut **b })
}

/// The target: install, dump, check what the server got.
pub fn client_receive(data: &[u8]) {
    run(data, false);
}

/// The target with the client pinning the server's key: the encrypted receive path.
pub fn client_receive_sealed(data: &[u8]) {
    run(data, true);
}

/// Runs an input: the dump's result (none when install failed) and whether the server
/// verified it.
fn run(data: &[u8], sealed: bool) -> (Option<Result<netdump_core::DumpReport, netdump_core::DumpError>>, bool) {
    let mut injections = VecDeque::new();
    let mut at = 0u64;
    for (tag, bytes) in Records::new(data).take(MAX_RECORDS) {
        let Some((&after, frame)) = bytes.split_first() else { continue };
        at += u64::from(after);
        injections.push_back(Injection { after_tx: at, tag, bytes: frame.to_vec() });
    }
    let mut nic = FuzzNic { server: Server::default(), rx: VecDeque::new(), injections, sent: 0 };
    nic.inject();
    let clock = TickClock::default();
    let net = NetConfig {
        ip: CLIENT_IP,
        prefix_len: 24,
        gateway: None,
        server_ip: SERVER_IP,
        server_port: SERVER_PORT,
        client_port: CLIENT_PORT,
    };
    let config = Config {
        window: WINDOW,
        timeouts: timeouts(),
        server_key: sealed.then(server_public),
        ..Config::new(net, ClientName::new("fuzz").expect("valid name"))
    };
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: PAGES * 4096, virt_start: RAM_BASE }])
        .expect("valid map");
    let mut rng = Counter(0x5eed);
    let Ok(mut client) = Netdump::install(nic, clock, &mut rng, config, crash_buffers(), map) else {
        return (None, false);
    };
    let crash = CrashInfo::panic(0, b"fuzz panic", &[]);
    let regs = netdump_core::proto::RegisterRecord::default();
    let result = client.dump(&crash, &[regs], &Ram, None);
    assert_eq!(client.encrypted(), sealed);
    let server = &client.nic().server;
    if server.verified {
        for (i, b) in server.image.iter().enumerate() {
            assert_eq!(
                *b,
                ram_byte(RAM_BASE + i as u64),
                "the server verified a dump that differs at {:#x}",
                RAM_BASE + i as u64
            );
        }
    }
    (Some(result), server.verified)
}

/// Cookies from a counter: the fuzzer needs determinism, not secrecy.
struct Counter(u64);

impl rand_core::RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        dst.iter_mut().for_each(|b| *b = self.next_u64() as u8);
    }
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ack_all = |stop: bool| {
        let a = Ack { stop, bitmap: &[] };
        let mut p = vec![0u8; HEADER_LEN + a.wire_len()];
        Header::v2(MessageType::Ack, 0, 0, 1000).emit(&mut p, a.wire_len(), |b| a.emit(b)).expect("sized");
        p
    };
    let mut arp = vec![0u8; 60];
    emit_arp(&mut arp, ArpOperation::Request, EthernetAddress([2, 9, 9, 9, 9, 9]), OTHER_IP, None, CLIENT_IP);
    vec![
        ("clean", Vec::new()),
        // A STOP from another port, then one with a wrong cookie, mid-dump.
        (
            "stop-from-elsewhere",
            encode(&[(2 | 0x04, [vec![12], ack_all(true)].concat()), (1 | 0x04, [vec![1], ack_all(true)].concat())]),
        ),
        // An ACK of more than was sent, with the client's cookie.
        ("ack-beyond", encode(&[(1 | 0x04 | 0x10, [vec![10], ack_all(false)].concat())])),
        // Someone asks for the client's MAC during the dump.
        ("arp-request", encode(&[(0, [vec![8], arp].concat())])),
    ]
}

/// Seeds of the sealed target: a clean dump, a STOP in clear and an ACK of more than was
/// sent sealed right, both with the client's cookie.
pub fn seeds_sealed() -> Vec<(&'static str, Vec<u8>)> {
    let ack = |stop: bool, seq: u32| {
        let a = Ack { stop, bitmap: &[] };
        let mut p = vec![0u8; HEADER_LEN + a.wire_len()];
        Header::v2(MessageType::Ack, 0, 0, seq).emit(&mut p, a.wire_len(), |b| a.emit(b)).expect("sized");
        p
    };
    vec![
        ("clean", Vec::new()),
        ("clear-stop", encode(&[(1 | 0x04 | 0x10, [vec![12], ack(true, 0)].concat())])),
        ("sealed-ack-beyond", encode(&[(1 | 0x10 | 0x20, [vec![10], ack(false, 1000)].concat())])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sealed_seed_dumps_whole_and_encrypted() {
        for (name, data) in seeds_sealed() {
            let (result, verified) = run(&data, true);
            let report =
                result.unwrap_or_else(|| panic!("{name}: install failed")).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(verified && report.encrypted, "{name}");
        }
        // The STOP in clear was dropped as unsealed.
        let (result, _) = run(&seeds_sealed()[1].1, true);
        assert_eq!(result.unwrap().unwrap().sealing.unsealed, 1);
    }

    #[test]
    fn a_stop_sealed_under_the_session_key_ends_the_encrypted_dump() {
        // Sealing (tag bit 5) takes the fuzzer's bytes past the tag, to the parser.
        let a = Ack { stop: true, bitmap: &[] };
        let mut p = vec![0u8; HEADER_LEN + a.wire_len()];
        Header::v2(MessageType::Ack, 0, 0, 0).emit(&mut p, a.wire_len(), |b| a.emit(b)).unwrap();
        let data = encode(&[(1 | 0x10 | 0x20, [vec![12], p].concat())]);
        let (result, verified) = run(&data, true);
        assert_eq!(result.unwrap().unwrap_err(), netdump_core::DumpError::StoppedByServer);
        assert!(!verified);
    }

    #[test]
    fn every_seed_dumps_whole_despite_its_frames() {
        for (name, data) in seeds() {
            let (result, verified) = run(&data, false);
            let report =
                result.unwrap_or_else(|| panic!("{name}: install failed")).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(verified, "{name}");
            assert!(report.packets > 8, "{name}: {} packets", report.packets);
        }
    }

    #[test]
    fn a_stop_with_the_right_cookie_from_the_server_ends_the_dump() {
        let a = Ack { stop: true, bitmap: &[] };
        let mut p = vec![0u8; HEADER_LEN + a.wire_len()];
        Header::v2(MessageType::Ack, 0, 0, 0).emit(&mut p, a.wire_len(), |b| a.emit(b)).unwrap();
        let data = encode(&[(1 | 0x04 | 0x10, [vec![12], p].concat())]);
        let (result, verified) = run(&data, false);
        assert_eq!(result.unwrap().unwrap_err(), netdump_core::DumpError::StoppedByServer);
        assert!(!verified);
    }
}
