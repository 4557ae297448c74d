//! The frames the checks send and recognise, built and parsed with `smoltcp::wire`.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const ETHERNET_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// Length of an ARP request frame (no padding: the driver pads to 60).
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;

/// Length of a UDP frame carrying `payload_len` bytes.
pub const fn udp_frame_len(payload_len: usize) -> usize {
    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len
}

/// The largest UDP payload in one standard Ethernet frame.
pub const MAX_UDP_PAYLOAD: usize = 1500 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// Who-has `target_ip` tell `our_ip`, broadcast. `frame` is `ARP_FRAME_LEN` bytes.
pub fn arp_request(
    frame: &mut [u8],
    our_mac: EthernetAddress,
    our_ip: Ipv4Address,
    target_ip: Ipv4Address,
) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    EthernetRepr {
        src_addr: our_mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: our_mac,
        source_protocol_addr: our_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target_ip,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
}

/// The hardware address `target_ip` answers with, if `frame` is its ARP reply to us.
pub fn arp_reply_from(
    frame: &[u8],
    our_mac: EthernetAddress,
    our_ip: Ipv4Address,
    target_ip: Ipv4Address,
) -> Option<EthernetAddress> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let header = EthernetRepr::parse(&eth).ok()?;
    if header.ethertype != EthernetProtocol::Arp || header.dst_addr != our_mac {
        return None;
    }
    match ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()? {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } if source_protocol_addr == target_ip && target_protocol_addr == our_ip => {
            Some(source_hardware_addr)
        }
        _ => None,
    }
}

/// Addresses of a UDP flow.
#[derive(Clone, Copy)]
pub struct UdpFlow {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub src_ip: Ipv4Address,
    pub dst_ip: Ipv4Address,
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpFlow {
    /// Builds a UDP/IPv4 frame whose payload `fill` writes. `frame` is
    /// `udp_frame_len(payload_len)` bytes.
    pub fn emit(&self, frame: &mut [u8], payload_len: usize, fill: impl FnOnce(&mut [u8])) {
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(frame);
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let ip = Ipv4Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: UDP_HEADER_LEN + payload_len,
            hop_limit: 64,
        };
        let mut ip_packet = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut ip_packet, &caps);
        ip_packet.set_dont_frag(true);
        ip_packet.fill_checksum();
        UdpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
        .emit(
            &mut UdpPacket::new_unchecked(ip_packet.payload_mut()),
            &IpAddress::Ipv4(self.src_ip),
            &IpAddress::Ipv4(self.dst_ip),
            payload_len,
            fill,
            &caps,
        );
    }
}
