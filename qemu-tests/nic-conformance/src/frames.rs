//! The frames the checks send and recognise, built and parsed with `smoltcp::wire`.
//!
//! UDP datagrams and ARP requests are netdump-core's own ([`emit_udp_with`] and
//! [`emit_arp`]), so the checks send what the dump path sends; ICMP echo, which the dump
//! path never uses, and the stricter ARP reply match are built here.

use netdump_core::net::{FRAME_OVERHEAD, emit_arp};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Message,
    Icmpv4Packet, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr,
};

pub use netdump_core::net::{UdpChecksum, UdpFlow, emit_udp_with};

const ETHERNET_HEADER_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_ECHO_HEADER_LEN: usize = 8;

/// Bytes of an ICMP echo frame before its data.
pub const ICMP_ECHO_OVERHEAD: usize = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + ICMP_ECHO_HEADER_LEN;

/// Length of an ARP request frame (no padding: the driver pads to 60).
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;

/// Length of a UDP frame carrying `payload_len` bytes.
pub const fn udp_frame_len(payload_len: usize) -> usize {
    FRAME_OVERHEAD + payload_len
}

/// The largest UDP payload in one standard Ethernet frame.
pub const MAX_UDP_PAYLOAD: usize = 1500 - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// Who-has `target_ip` tell `our_ip`, broadcast. `frame` is `ARP_FRAME_LEN` bytes.
pub fn arp_request(frame: &mut [u8], our_mac: EthernetAddress, our_ip: Ipv4Address, target_ip: Ipv4Address) {
    emit_arp(frame, ArpOperation::Request, our_mac, our_ip, None, target_ip);
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
        } if source_protocol_addr == target_ip && target_protocol_addr == our_ip => Some(source_hardware_addr),
        _ => None,
    }
}

/// Writes the IPv4 header of a `payload_len`-byte `protocol` packet from `src` to `dst`
/// (don't fragment, checksum filled) after the Ethernet header, and returns the packet.
fn emit_ipv4(
    frame: &mut [u8],
    src: (EthernetAddress, Ipv4Address),
    dst: (EthernetAddress, Ipv4Address),
    protocol: IpProtocol,
    payload_len: usize,
) -> Ipv4Packet<&mut [u8]> {
    EthernetRepr { src_addr: src.0, dst_addr: dst.0, ethertype: EthernetProtocol::Ipv4 }
        .emit(&mut EthernetFrame::new_unchecked(&mut *frame));
    let ip = Ipv4Repr { src_addr: src.1, dst_addr: dst.1, next_header: protocol, payload_len, hop_limit: 64 };
    let mut packet = Ipv4Packet::new_unchecked(&mut frame[ETHERNET_HEADER_LEN..]);
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    packet.set_dont_frag(true);
    packet.fill_checksum();
    packet
}

/// An ICMP echo request from `src` to `dst` with `ident`, `seq` and data written by `fill`.
/// `frame` is `ICMP_ECHO_OVERHEAD + data_len` bytes.
pub fn icmp_echo_request(
    frame: &mut [u8],
    src: (EthernetAddress, Ipv4Address),
    dst: (EthernetAddress, Ipv4Address),
    ident: u16,
    seq: u16,
    fill: impl FnOnce(&mut [u8]),
) {
    let payload_len = frame.len() - ETHERNET_HEADER_LEN - IPV4_HEADER_LEN;
    let mut ip = emit_ipv4(frame, src, dst, IpProtocol::Icmp, payload_len);
    let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(Icmpv4Message::EchoRequest);
    icmp.set_msg_code(0);
    icmp.set_echo_ident(ident);
    icmp.set_echo_seq_no(seq);
    fill(icmp.data_mut());
    icmp.fill_checksum();
}

/// The echo reply in `frame`, if it is one from `peer` to `us`: (ident, seq, data).
pub fn icmp_echo_reply(
    frame: &[u8],
    us: (EthernetAddress, Ipv4Address),
    peer: Ipv4Address,
) -> Option<(u16, u16, &[u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 || eth.dst_addr() != us.0 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).ok()?;
    let caps = ChecksumCapabilities::default();
    let header = Ipv4Repr::parse(&ip, &caps).ok()?;
    if header.next_header != IpProtocol::Icmp || header.src_addr != peer || header.dst_addr != us.1 {
        return None;
    }
    // The IPv4 lengths say where the ICMP message is (a frame may carry padding after it).
    let start = ETHERNET_HEADER_LEN + usize::from(ip.header_len());
    let end = start + header.payload_len;
    let icmp = Icmpv4Packet::new_checked(&frame[start..end]).ok()?;
    if icmp.msg_type() != Icmpv4Message::EchoReply || icmp.msg_code() != 0 || !icmp.verify_checksum() {
        return None;
    }
    Some((icmp.echo_ident(), icmp.echo_seq_no(), &frame[start + ICMP_ECHO_HEADER_LEN..end]))
}
