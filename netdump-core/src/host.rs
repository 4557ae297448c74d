//! Host-side stand-ins (feature `host`, needs std): a [`PolledNic`] that plays QEMU's
//! user network over a real UDP socket, and a wall clock. They run the real client
//! against a real netdumpd on loopback — in tests, and in the bench's ingest simulator.
//!
//! The NIC answers ARP for the gateway itself, turns every UDP datagram the client sends
//! to the gateway into a real datagram to `server` (from one socket per client, so the
//! server sees one address per client), and wraps what comes back in Ethernet/IPv4/UDP.

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
        })
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
                if ip.next_header() != IpProtocol::Udp || ip.dst_addr() != GATEWAY_IP {
                    return;
                }
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { return };
                self.client_port = udp.src_port();
                let mut to = self.server;
                to.set_port(udp.dst_port());
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
                let flow = UdpFlow {
                    src_mac: GATEWAY_MAC,
                    dst_mac: EthernetAddress(self.mac),
                    src_ip: GATEWAY_IP,
                    dst_ip: GUEST_IP,
                    src_port: from.port(),
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
