//! Host-side stand-ins (feature `host`, needs std): a [`PolledNic`] that plays QEMU's
//! user network over a real UDP socket, and a wall clock. They run the real client
//! against a real netdumpd on loopback — in tests, and in the bench's ingest simulator.
//!
//! The NIC answers ARP for the gateway itself, turns every UDP datagram the client sends
//! to the gateway into a real datagram to `server` (from one socket per client, so the
//! server sees one address per client), and wraps what comes back in Ethernet/IPv4/UDP.
//! [`UdpSocketNic::route`] sends datagrams for other server addresses and ports to
//! other real sockets (a client with several servers, for failover).
//!
//! # Example: install and dump, on the host
//!
//! A kernel's whole use of netdump, with [`UdpSocketNic`] for the NIC, [`SystemClock`] for
//! the TSC and a vector for RAM. The dump goes to a receiver on a loopback socket written
//! here in a few lines from [`proto`](crate::proto)'s types — `netdumpd` is the real one;
//! this one answers every step (HELLO_ACK, DECISION, an ACK per DATA, FINISH_ACK), keeps
//! the memory image and verifies FINISH's totals. The example checks that what arrived is
//! the RAM, byte for byte.
//!
//! ```
//! use netdump_core::client::{ClientName, Config};
//! use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
//! use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
//! use netdump_core::proto::{
//!     Ack, AfterDump, ClientMessage, Data, Decision, DecisionReason, FinishAck, FinishStatus, Header,
//!     HelloAckV2, HelloStatus, HelloTerms, MAX_DATAGRAM, Message, MessageType, RegisterRecord, Section,
//!     StreamCrc, Verdict,
//! };
//! use netdump_core::{CrashBuffers, CrashInfo, Netdump};
//! use std::collections::BTreeMap;
//! use std::net::{SocketAddr, UdpSocket};
//! use std::time::Duration;
//!
//! // The kernel's RAM: 16 pages at 1 MiB, the fifth of them all zeros (never sent).
//! const BASE: u64 = 0x10_0000;
//! const PAGES: u64 = 16;
//! let ram: Vec<u8> = (0..PAGES * 4096).map(|i| if i / 4096 == 4 { 0 } else { (i * 7 % 251) as u8 + 1 }).collect();
//! struct Ram(Vec<u8>);
//! impl MemorySource for Ram {
//!     fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
//!         let at = phys.checked_sub(BASE).ok_or(MemoryError { phys })? as usize;
//!         out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
//!         Ok(())
//!     }
//! }
//!
//! // The receiver, on a thread; it returns the memory image of a verified dump.
//! let socket = UdpSocket::bind("127.0.0.1:0")?;
//! let server: SocketAddr = socket.local_addr()?;
//! let receiver = std::thread::spawn(move || receive(&socket, (PAGES * 4096) as usize));
//!
//! // At boot: the NIC, the buffers (in a kernel, a `static`), what to dump, install.
//! let nic = UdpSocketNic::new([0x02, 0, 0, 0, 0, 0x15], 1500, server)?;
//! let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
//! let map = MemoryMap::new(&[MemoryRange { phys_start: BASE, length: PAGES * 4096, virt_start: BASE }])
//!     .expect("one page-aligned range");
//! let config = Config::new(guest_net(server.port()), ClientName::new("doctest").expect("a valid name"));
//! let mut rng = Counter(0x5eed); // a kernel's entropy: RDRAND (`arch::x86_64::CookieRng`)
//! let mut netdump = Netdump::install(nic, SystemClock::default(), &mut rng, config, buffers, map)
//!     .unwrap_or_else(|e| panic!("install failed: {e}"));
//!
//! // At the crash: the registers of every CPU (one here), the memory, the console log.
//! let crash = CrashInfo::panic(0, b"the example panicked on purpose", &[]);
//! let report = netdump.dump(&crash, &[RegisterRecord::default()], &Ram(ram.clone()), None)
//!     .unwrap_or_else(|e| panic!("the dump failed: {e}"));
//! assert_eq!(report.verdict, Verdict::DumpAll);
//! assert_eq!(report.action, AfterDump::Halt);
//! assert_eq!((report.memory.pages_sent, report.memory.zero_pages), (PAGES - 1, 1));
//! let image = receiver.join().expect("the receiver thread ends")?;
//! assert!(image == ram, "the receiver's image differs from the RAM");
//!
//! /// Answers one client's install and dump; the memory image once FINISH verifies.
//! fn receive(socket: &UdpSocket, ram_len: usize) -> std::io::Result<Vec<u8>> {
//!     // A bound, so that a client that stops talking fails the example instead of hanging it.
//!     socket.set_read_timeout(Some(Duration::from_secs(20)))?;
//!     let mut image = vec![0u8; ram_len];
//!     let mut data = BTreeMap::<u32, Vec<u8>>::new(); // DATA payloads by sequence number
//!     let mut datagram = [0u8; MAX_DATAGRAM];
//!     loop {
//!         let (n, client) = socket.recv_from(&mut datagram)?;
//!         let (h, payload) = Header::parse(&datagram[..n]).expect("the client's packets are valid");
//!         match Message::parse_from_client(&h, payload).expect("a client message") {
//!             ClientMessage::HelloV2(_) => {
//!                 let terms = HelloTerms { status: HelloStatus::Registered, max_payload: 1472, features: 0, required: 0 };
//!                 let ack = HelloAckV2 { terms, handshake: &[] };
//!                 answer(socket, client, &h, MessageType::HelloAck, h.seq, ack.wire_len(), |p| ack.emit(p))?;
//!             }
//!             ClientMessage::Crash(crash) => {
//!                 assert_eq!(crash.message, b"the example panicked on purpose");
//!                 let d = Decision { verdict: Verdict::DumpAll, why: DecisionReason::None, max_payload: 1472 };
//!                 answer(socket, client, &h, MessageType::Decision, h.seq, d.wire_len(), |p| d.emit(p))?;
//!             }
//!             ClientMessage::Data(d) => {
//!                 if d.section == Section::Memory {
//!                     let at = (d.offset - BASE) as usize;
//!                     image[at..at + d.data.len()].copy_from_slice(d.data);
//!                 }
//!                 data.entry(h.seq).or_insert_with(|| payload.to_vec());
//!                 // Cumulative: the first DATA missing; bit i: DATA cumulative + 1 + i arrived.
//!                 let cumulative = (0..).find(|s| !data.contains_key(s)).expect("a gap");
//!                 let mut bitmap = [0u8; 8];
//!                 for i in 0..64 {
//!                     if data.contains_key(&(cumulative + 1 + i)) {
//!                         bitmap[i as usize / 8] |= 1 << (i % 8);
//!                     }
//!                 }
//!                 let ack = Ack { stop: false, bitmap: &bitmap };
//!                 answer(socket, client, &h, MessageType::Ack, cumulative, ack.wire_len(), |p| ack.emit(p))?;
//!             }
//!             ClientMessage::Finish(f) => {
//!                 // FINISH's seq is the number of DATA packets; its totals cover them all.
//!                 let whole = (0..h.seq).all(|s| data.contains_key(&s)) && data.len() == h.seq as usize;
//!                 let bytes: usize = data.values().map(|p| p.len() - Data::SUBHEADER_LEN).sum();
//!                 let crc = StreamCrc::of_payloads(data.values().map(|p| &p[..]));
//!                 let verified = whole && bytes as u64 == f.total_bytes && crc == f.stream_crc;
//!                 let status = if verified { FinishStatus::Verified } else { FinishStatus::CrcMismatch };
//!                 let ack = FinishAck { status, action: AfterDump::Halt };
//!                 answer(socket, client, &h, MessageType::FinishAck, h.seq, ack.wire_len(), |p| ack.emit(p))?;
//!                 assert!(verified, "FINISH's totals disagree with the DATA received");
//!                 return Ok(image);
//!             }
//!             ClientMessage::Hello(_) | ClientMessage::Abort(_) => panic!("unexpected {:?}", h.msg_type),
//!         }
//!     }
//! }
//!
//! /// Sends the server's message `t` to `client`, in the version and session of `to`.
//! fn answer(
//!     socket: &UdpSocket,
//!     client: SocketAddr,
//!     to: &Header,
//!     t: MessageType,
//!     seq: u32,
//!     len: usize,
//!     fill: impl FnOnce(&mut [u8]),
//! ) -> std::io::Result<()> {
//!     let mut packet = [0u8; 256];
//!     let header = Header { version: to.version, ..Header::v1(t, 0, to.cookie, seq) };
//!     let n = header.emit(&mut packet, len, fill).expect("a server message fits 256 bytes");
//!     socket.send_to(&packet[..n], client).map(drop)
//! }
//!
//! /// Cookies from a counter (a kernel uses its hardware RNG: the cookie guards the session).
//! struct Counter(u64);
//! impl rand_core::RngCore for Counter {
//!     fn next_u32(&mut self) -> u32 {
//!         self.next_u64() as u32
//!     }
//!     fn next_u64(&mut self) -> u64 {
//!         self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
//!         self.0
//!     }
//!     fn fill_bytes(&mut self, out: &mut [u8]) {
//!         out.iter_mut().for_each(|b| *b = self.next_u64() as u8);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

extern crate std;

use crate::clock::Clock;
use crate::net::{
    EthernetAddress, FRAME_OVERHEAD, Inbound, Ipv4Address, NetConfig, UdpFlow, classify, emit_arp, emit_udp,
};

use crate::nic::{NicError, PolledNic, check_frame_len};
use smoltcp::wire::{ArpOperation, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;
use std::vec::Vec;

/// The guest address QEMU's user network gives (and the client must be configured with).
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The user network's gateway, which stands for the host.
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);

/// The addresses of a host client that plays a QEMU guest: [`GUEST_IP`] in a /24, the
/// server (and gateway) at [`GATEWAY_IP`] on `server_port`, the default client port.
pub fn guest_net(server_port: u16) -> NetConfig {
    NetConfig {
        ip: GUEST_IP,
        prefix_len: 24,
        gateway: Some(GATEWAY_IP),
        server_ip: GATEWAY_IP,
        server_port,
        client_port: crate::proto::CLIENT_PORT,
    }
}

/// A loss model applied to frames the client transmits (for tests of the window).
pub type TxFilter = std::boxed::Box<dyn FnMut(&[u8]) -> bool + Send>;

/// A fault applied to frames the client transmits, before the loss model (tests of the
/// integrity checks: flip a bit).
pub type TxMangle = std::boxed::Box<dyn FnMut(&mut [u8]) + Send>;

/// A polled NIC backed by a UDP socket on the host.
pub struct UdpSocketNic {
    mac: [u8; 6],
    mtu: usize,
    socket: UdpSocket,
    server: SocketAddr,
    rx: VecDeque<Vec<u8>>,
    /// Datagrams from the server waiting to be received, with the port they came from.
    client_port: u16,
    /// Returns false to drop a transmitted frame.
    pub tx_filter: Option<TxFilter>,
    /// Alters a transmitted frame (before `tx_filter`).
    pub tx_mangle: Option<TxMangle>,
    /// Frames transmitted, including those `tx_filter` dropped.
    pub frames_sent: u64,
    /// The frame being transmitted, reused (no allocation per frame).
    tx_frame: Vec<u8>,
    /// Further servers: a guest-side address and port, and the real socket datagrams to
    /// it go to (and whose answers come back from it).
    routes: Vec<((Ipv4Address, u16), SocketAddr)>,
}

impl UdpSocketNic {
    /// A NIC whose "gateway" forwards to `server`.
    pub fn new(mac: [u8; 6], mtu: usize, server: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        Ok(UdpSocketNic {
            mac,
            mtu,
            socket,
            server,
            rx: VecDeque::new(),
            client_port: 0,
            tx_filter: None,
            tx_mangle: None,
            frames_sent: 0,
            tx_frame: Vec::new(),
            routes: Vec::new(),
        })
    }

    /// Routes UDP to `guest` (an address and port as the client's configuration names
    /// a server) to the real socket `real`, and makes what `real` sends back arrive from
    /// `guest`: several servers for one client (failover). Without a route, datagrams
    /// to the gateway's address go to `server`'s address at the datagram's port, and
    /// datagrams to any other address are lost (a server that is not there).
    pub fn route(&mut self, guest: (Ipv4Address, u16), real: SocketAddr) {
        self.routes.retain(|(g, _)| *g != guest);
        self.routes.push((guest, real));
    }

    /// The host address the server sees for this client.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("bound socket has an address")
    }

    fn gateway_frame(&mut self, frame: &[u8]) {
        let ours = EthernetAddress(self.mac);
        let arp = frame.get(12..14) == Some(&[0x08, 0x06][..]);
        match arp.then(|| classify(frame, GATEWAY_MAC, GATEWAY_IP, 0)) {
            Some(Inbound::ArpRequest { .. }) => {
                let mut reply = std::vec![0u8; 60];
                emit_arp(&mut reply, ArpOperation::Reply, GATEWAY_MAC, GATEWAY_IP, Some(ours), GUEST_IP);
                self.rx.push_back(reply);
            }
            Some(_) => {}
            None => {
                // UDP to the gateway: classify() filters on a port; parse directly instead.
                let Ok(eth) = EthernetFrame::new_checked(frame) else { return };
                if eth.ethertype() != EthernetProtocol::Ipv4 {
                    return;
                }
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return };
                if ip.next_header() != IpProtocol::Udp {
                    return;
                }
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { return };
                let routed = self.routes.iter().find(|(g, _)| *g == (ip.dst_addr(), udp.dst_port()));
                let to = match routed {
                    Some((_, real)) => *real,
                    None if ip.dst_addr() == GATEWAY_IP => {
                        let mut to = self.server;
                        to.set_port(udp.dst_port());
                        to
                    }
                    None => return,
                };
                self.client_port = udp.src_port();
                let _ = self.socket.send_to(udp.payload(), to);
            }
        }
    }
}

impl PolledNic for UdpSocketNic {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }
    fn mtu(&self) -> usize {
        self.mtu
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.rx.clear();
        Ok(())
    }
    /// The host's socket makes the datagram, and its UDP checksum, from the payload.
    fn udp_checksum_offload(&self) -> bool {
        true
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        check_frame_len(len, self.mtu)?;
        let mut frame = core::mem::take(&mut self.tx_frame);
        frame.clear();
        frame.resize(len, 0);
        fill(&mut frame);
        self.frames_sent += 1;
        if let Some(mangle) = self.tx_mangle.as_mut() {
            mangle(&mut frame);
        }
        if self.tx_filter.as_mut().is_none_or(|filter| filter(&frame)) {
            self.gateway_frame(&frame);
        }
        self.tx_frame = frame;
        Ok(())
    }
    fn poll_transmit(&mut self) -> usize {
        0
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        if self.rx.is_empty() {
            let mut buf = [0u8; 9000];
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                let (src_ip, src_port) =
                    self.routes.iter().find(|(_, real)| *real == from).map_or((GATEWAY_IP, from.port()), |(g, _)| *g);
                let flow = UdpFlow {
                    src_mac: GATEWAY_MAC,
                    dst_mac: EthernetAddress(self.mac),
                    src_ip,
                    dst_ip: GUEST_IP,
                    src_port,
                    dst_port: self.client_port,
                };
                let mut frame = std::vec![0u8; FRAME_OVERHEAD + n];
                emit_udp(&mut frame, &flow, n, |p| p.copy_from_slice(&buf[..n]));
                self.rx.push_back(frame);
            }
        }
        match self.rx.pop_front() {
            Some(frame) => {
                handler(&frame);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Wall-clock microseconds since the clock was made.
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}
