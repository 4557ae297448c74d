//! Pure frame building and classification, separate from the NIC so it is tested
//! against byte arrays.
//!
//! The few header layouts the dump path needs — Ethernet II, IPv4 without options, UDP,
//! ARP for IPv4 over Ethernet — are read and written through `smoltcp::wire`'s zero-copy
//! accessors (`EthernetFrame`, `Ipv4Packet`, `UdpPacket`, `ArpPacket`: `new_checked`, then
//! field getters and setters), with smoltcp's RFC 1071 sum (`checksum::data`, `combine`).
//! smoltcp's `Repr` parsers and emitters are left out: their generality (options, checksum
//! capabilities, every address family) cost the crash path about 2 KB of code
//! (docs/PERFORMANCE.md, "Footprint"). Headers are written through accessors over
//! fixed-size arrays, so that every field's bounds check is decided at compile time; where
//! an accessor would check again at run time what `new_checked` has checked (`payload()`,
//! `fill_checksum`), a panic site the compiler cannot remove, the same bytes are taken with
//! `get`. The tests check both directions against the `Repr`s, byte for byte and verdict
//! for verdict.

use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame, EthernetProtocol,
    IPV4_HEADER_LEN, IpProtocol, Ipv4Address, Ipv4Packet, UDP_HEADER_LEN, UdpPacket, checksum,
};

/// Ethernet (14) + IPv4 (20) + UDP (8) header bytes in front of every datagram.
pub const FRAME_OVERHEAD: usize = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
/// An ARP packet for IPv4 over Ethernet: 8 fixed bytes, two MAC and two IPv4 addresses.
const ARP_LEN: usize = 8 + 2 * 6 + 2 * 4;
const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_LEN;

/// What an incoming frame means to the dump path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// Someone asks for our MAC: answer.
    ArpRequest {
        /// The asker's MAC address.
        mac: EthernetAddress,
        /// The asker's IPv4 address.
        ip: Ipv4Address,
    },
    /// A reply (or gratuitous announcement) for an address.
    ArpReply {
        /// The MAC address that answers for `ip`.
        mac: EthernetAddress,
        /// The address resolved.
        ip: Ipv4Address,
    },
    /// A UDP datagram to our address and port.
    Udp {
        /// The Ethernet source: the sender, or the router that forwarded it.
        src_mac: EthernetAddress,
        /// The sender's IPv4 address.
        src_ip: Ipv4Address,
        /// The sender's UDP port.
        src_port: u16,
        /// The UDP payload (checksum verified if the sender set one).
        payload: &'a [u8],
    },
    /// Nothing for the dump path; the reason tells malformed frames from others'.
    Ignored(Ignored),
}

/// Why a frame was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not for our MAC (nor broadcast), not IPv4/ARP, or not for our IP/port.
    NotForUs,
    /// A header or checksum is wrong.
    Malformed,
    /// Fragments are never accepted.
    Fragment,
}

const MALFORMED: Inbound<'static> = Inbound::Ignored(Ignored::Malformed);
const NOT_FOR_US: Inbound<'static> = Inbound::Ignored(Ignored::NotForUs);

/// The Internet checksum (RFC 1071) of `data`: the complement of the one's-complement sum
/// of its big-endian 16-bit words. Over a UDP header whose checksum field holds the
/// pseudo-header sum (as [`UdpChecksum::Device`] leaves it) and the payload, this is the
/// datagram's checksum, what a checksum-offloading device writes (a 0 is sent as 0xffff):
/// for a driver that completes it in software.
///
/// The sum is smoltcp's `checksum::data`. Of the loops measured for a 1432-byte payload
/// (the software UDP checksum is per packet on a NIC without offload), its 16-bit words
/// were the fastest — about twice 32-bit words — for 100 bytes more code.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !checksum::data(data)
}

/// The sum of the UDP pseudo-header (RFC 768: addresses, zero, protocol, UDP length) as
/// the 12 bytes it is. smoltcp's `checksum::pseudo_header_v4` gives the same sum, but it
/// sums each part in a call of its own, outlined: 0.2 KB more of the crash path.
fn pseudo_header_sum(src: Ipv4Address, dst: Ipv4Address, udp_len: usize) -> u16 {
    let mut header = [0; 12];
    header[..4].copy_from_slice(&src.octets());
    header[4..8].copy_from_slice(&dst.octets());
    header[9] = IpProtocol::Udp.into();
    header[10..].copy_from_slice(&(udp_len as u16).to_be_bytes());
    checksum::data(&header)
}

/// Classifies a received frame for the interface `mac`/`ip` listening on UDP `port`.
pub fn classify(frame: &[u8], mac: EthernetAddress, ip: Ipv4Address, port: u16) -> Inbound<'_> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return MALFORMED };
    let dst = eth.dst_addr();
    if dst != mac && !dst.is_broadcast() {
        return NOT_FOR_US;
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload(), ip),
        EthernetProtocol::Ipv4 if dst == mac => classify_ipv4(eth.src_addr(), eth.payload(), ip, port),
        _ => NOT_FOR_US,
    }
}

fn classify_arp(payload: &[u8], ip: Ipv4Address) -> Inbound<'_> {
    // Only IPv4 over Ethernet; its addresses then have fixed places in the first 28 bytes.
    let Some(arp) = payload.first_chunk::<ARP_LEN>() else { return MALFORMED };
    let arp = ArpPacket::new_unchecked(arp);
    if arp.hardware_type() != ArpHardware::Ethernet
        || arp.protocol_type() != EthernetProtocol::Ipv4
        || arp.hardware_len() != 6
        || arp.protocol_len() != 4
    {
        return MALFORMED;
    }
    let mac = EthernetAddress::from_bytes(arp.source_hardware_addr());
    let sender = ipv4(arp.source_protocol_addr());
    match arp.operation() {
        ArpOperation::Request if ipv4(arp.target_protocol_addr()) == ip => Inbound::ArpRequest { mac, ip: sender },
        ArpOperation::Reply => Inbound::ArpReply { mac, ip: sender },
        _ => NOT_FOR_US,
    }
}

/// An IPv4 address from the four bytes an accessor returns.
fn ipv4(octets: &[u8]) -> Ipv4Address {
    let mut ip = [0; 4];
    if let Some(a) = octets.first_chunk::<4>() {
        ip = *a;
    }
    Ipv4Address::from(ip)
}

fn classify_ipv4(src_mac: EthernetAddress, bytes: &[u8], ip: Ipv4Address, port: u16) -> Inbound<'_> {
    // The header's and total lengths fit the buffer and each other.
    let Ok(packet) = Ipv4Packet::new_checked(bytes) else { return MALFORMED };
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Inbound::Ignored(Ignored::Fragment);
    }
    // Slices are taken with `get` where smoltcp's `payload()` would index again what
    // `new_checked` has checked, into a panic site the compiler cannot remove.
    let (header_len, total_len) = (usize::from(packet.header_len()), usize::from(packet.total_len()));
    // `verify_checksum` is not used: it passes everything when smoltcp is built for
    // fuzzing, and the fuzz targets must see the checksums the crash path checks.
    if packet.version() != 4 || checksum::data(bytes.get(..header_len).unwrap_or_default()) != !0 {
        return MALFORMED;
    }
    let (src_ip, dst_ip) = (packet.src_addr(), packet.dst_addr());
    if dst_ip != ip || packet.next_header() != IpProtocol::Udp {
        return NOT_FOR_US;
    }
    // The UDP length fits the IPv4 payload and covers the header.
    let datagram = bytes.get(header_len..total_len).unwrap_or_default();
    let Ok(udp) = UdpPacket::new_checked(datagram) else { return MALFORMED };
    if udp.dst_port() == 0 {
        return MALFORMED;
    }
    let datagram = datagram.get(..usize::from(udp.len())).unwrap_or_default();
    // A zero checksum field: the sender computed none (allowed over IPv4).
    if udp.checksum() != 0
        && checksum::combine(&[pseudo_header_sum(src_ip, dst_ip, datagram.len()), checksum::data(datagram)]) != !0
    {
        return MALFORMED;
    }
    if udp.dst_port() != port {
        return NOT_FOR_US;
    }
    let payload = datagram.get(UDP_HEADER_LEN..).unwrap_or_default();
    Inbound::Udp { src_mac, src_ip, src_port: udp.src_port(), payload }
}

/// Addresses of one UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    /// Ethernet source: the sending interface's MAC address.
    pub src_mac: EthernetAddress,
    /// Ethernet destination: the next hop's MAC address (the receiver's, or a gateway's).
    pub dst_mac: EthernetAddress,
    /// IPv4 source address.
    pub src_ip: Ipv4Address,
    /// IPv4 destination address.
    pub dst_ip: Ipv4Address,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

/// Who computes a sent datagram's UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpChecksum {
    /// netdump-core, over the header and the payload.
    Software,
    /// The NIC ([`PolledNic::udp_checksum_offload`](crate::nic::PolledNic::udp_checksum_offload)):
    /// the frame leaves with the pseudo-header sum in the checksum field.
    Device,
}

impl UdpChecksum {
    /// What `nic` offers.
    pub fn of(nic: &dyn crate::nic::PolledNic) -> Self {
        if nic.udp_checksum_offload() { UdpChecksum::Device } else { UdpChecksum::Software }
    }
}

/// Writes a whole Ethernet/IPv4/UDP frame of `FRAME_OVERHEAD + payload_len` bytes into
/// `frame`; `fill` writes the UDP payload. IPv4 header and UDP checksums are computed.
pub fn emit_udp(frame: &mut [u8], flow: &UdpFlow, payload_len: usize, fill: impl FnOnce(&mut [u8])) {
    emit_udp_with(frame, flow, payload_len, UdpChecksum::Software, fill)
}

/// [`emit_udp`], with the UDP checksum left to the device when `checksum` says so: the
/// checksum field then holds the pseudo-header sum, which the device completes.
pub fn emit_udp_with(
    frame: &mut [u8],
    flow: &UdpFlow,
    payload_len: usize,
    checksum: UdpChecksum,
    fill: impl FnOnce(&mut [u8]),
) {
    let mut fill = Some(fill);
    emit_udp_dyn(frame, flow, payload_len, checksum, &mut |payload| {
        if let Some(f) = fill.take() {
            f(payload)
        }
    })
}

/// Writes an Ethernet II header into its 14 bytes.
fn emit_ethernet(
    header: &mut [u8; ETHERNET_HEADER_LEN],
    src: EthernetAddress,
    dst: EthernetAddress,
    ty: EthernetProtocol,
) {
    let mut eth = EthernetFrame::new_unchecked(header);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ty);
}

/// The one instance of the frame builder: callers' closures come through `dyn`, so the
/// code exists once in a kernel however many kinds of datagram it sends.
pub(crate) fn emit_udp_dyn(
    frame: &mut [u8],
    flow: &UdpFlow,
    payload_len: usize,
    checksum: UdpChecksum,
    fill: &mut dyn FnMut(&mut [u8]),
) {
    let udp_len = UDP_HEADER_LEN + payload_len;
    let frame = frame.get_mut(..FRAME_OVERHEAD + payload_len);
    debug_assert!(frame.is_some(), "a frame buffer shorter than its datagram");
    let Some((eth, packet)) = frame.and_then(|f| f.split_first_chunk_mut::<ETHERNET_HEADER_LEN>()) else { return };
    emit_ethernet(eth, flow.src_mac, flow.dst_mac, EthernetProtocol::Ipv4);
    let Some((ip, datagram)) = packet.split_first_chunk_mut::<IPV4_HEADER_LEN>() else { return };
    // IPv4: 20-byte header, no DSCP/ECN, id 0, don't fragment, TTL 64.
    let mut ip = Ipv4Packet::new_unchecked(ip);
    ip.set_version(4);
    ip.set_header_len(IPV4_HEADER_LEN as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len((IPV4_HEADER_LEN + udp_len) as u16);
    ip.set_ident(0);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(64);
    ip.set_next_header(IpProtocol::Udp);
    ip.set_src_addr(flow.src_ip);
    ip.set_dst_addr(flow.dst_ip);
    // `fill_checksum`, with the header's length known: smoltcp's reads it back from the
    // buffer and bounds-checks it into a panic site.
    ip.set_checksum(0);
    ip.set_checksum(!checksum::data(ip.as_ref()));
    let Some((udp, payload)) = datagram.split_first_chunk_mut::<UDP_HEADER_LEN>() else { return };
    let mut udp = UdpPacket::new_unchecked(udp);
    udp.set_src_port(flow.src_port);
    udp.set_dst_port(flow.dst_port);
    udp.set_len(udp_len as u16);
    udp.set_checksum(0);
    fill(payload);
    let pseudo = pseudo_header_sum(flow.src_ip, flow.dst_ip, udp_len);
    udp.set_checksum(match checksum {
        // The device adds the header and payload and complements.
        UdpChecksum::Device => pseudo,
        // 0 means "no checksum": a sum of zero is sent as all ones (RFC 768).
        UdpChecksum::Software => {
            match !checksum::combine(&[pseudo, checksum::data(udp.as_ref()), checksum::data(payload)]) {
                0 => 0xffff,
                c => c,
            }
        }
    });
}

/// Length of an ARP frame (before padding to the Ethernet minimum).
pub const fn arp_frame_len() -> usize {
    ARP_FRAME_LEN
}

/// Writes an ARP request (`target_mac` None, broadcast) or reply into `frame`.
pub fn emit_arp(
    frame: &mut [u8],
    op: ArpOperation,
    our_mac: EthernetAddress,
    our_ip: Ipv4Address,
    target_mac: Option<EthernetAddress>,
    target_ip: Ipv4Address,
) {
    debug_assert!(frame.len() >= ARP_FRAME_LEN, "a frame buffer shorter than ARP");
    let Some((eth, arp)) = frame.split_first_chunk_mut::<ETHERNET_HEADER_LEN>() else { return };
    emit_ethernet(eth, our_mac, target_mac.unwrap_or(EthernetAddress::BROADCAST), EthernetProtocol::Arp);
    let Some(arp) = arp.first_chunk_mut::<ARP_LEN>() else { return };
    let mut arp = ArpPacket::new_unchecked(arp);
    arp.set_hardware_type(ArpHardware::Ethernet);
    arp.set_protocol_type(EthernetProtocol::Ipv4);
    arp.set_hardware_len(6);
    arp.set_protocol_len(4);
    arp.set_operation(op);
    arp.set_source_hardware_addr(our_mac.as_bytes());
    arp.set_source_protocol_addr(&our_ip.octets());
    arp.set_target_hardware_addr(target_mac.unwrap_or(EthernetAddress([0; 6])).as_bytes());
    arp.set_target_protocol_addr(&target_ip.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Checksum, ChecksumCapabilities};
    use smoltcp::wire::{
        ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
        UdpRepr,
    };

    /// The frame builder as smoltcp's `Repr`s write it: what the one above must match.
    fn smoltcp_emit_udp(frame: &mut [u8], flow: &UdpFlow, payload_len: usize, checksum: UdpChecksum, byte: u8) {
        let mut caps = ChecksumCapabilities::default();
        if checksum == UdpChecksum::Device {
            caps.udp = Checksum::None;
        }
        let mut eth = EthernetFrame::new_unchecked(frame);
        EthernetRepr { src_addr: flow.src_mac, dst_addr: flow.dst_mac, ethertype: EthernetProtocol::Ipv4 }
            .emit(&mut eth);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        let repr = Ipv4Repr {
            src_addr: flow.src_ip,
            dst_addr: flow.dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload_len,
            hop_limit: 64,
        };
        repr.emit(&mut ip, &caps);
        let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
        UdpRepr { src_port: flow.src_port, dst_port: flow.dst_port }.emit(
            &mut udp,
            &flow.src_ip.into(),
            &flow.dst_ip.into(),
            payload_len,
            |p| p.fill(byte),
            &caps,
        );
        if checksum == UdpChecksum::Device {
            let pseudo = smoltcp::wire::checksum::pseudo_header_v4(
                &flow.src_ip,
                &flow.dst_ip,
                IpProtocol::Udp,
                (8 + payload_len) as u32,
            );
            udp.set_checksum(pseudo);
        }
    }

    /// The classifier as it was written on smoltcp's `Repr` parsers.
    fn smoltcp_classify(frame: &[u8], mac: EthernetAddress, ip: Ipv4Address, port: u16) -> Inbound<'_> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else { return Inbound::Ignored(Ignored::Malformed) };
        let dst = eth.dst_addr();
        if dst != mac && !dst.is_broadcast() {
            return Inbound::Ignored(Ignored::NotForUs);
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(packet) = ArpPacket::new_checked(eth.payload()) else {
                    return Inbound::Ignored(Ignored::Malformed);
                };
                let Ok(ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                }) = ArpRepr::parse(&packet)
                else {
                    return Inbound::Ignored(Ignored::Malformed);
                };
                match operation {
                    ArpOperation::Request if target_protocol_addr == ip => {
                        Inbound::ArpRequest { mac: source_hardware_addr, ip: source_protocol_addr }
                    }
                    ArpOperation::Reply => Inbound::ArpReply { mac: source_hardware_addr, ip: source_protocol_addr },
                    _ => Inbound::Ignored(Ignored::NotForUs),
                }
            }
            EthernetProtocol::Ipv4 if dst == mac => {
                let caps = ChecksumCapabilities::default();
                let Ok(packet) = Ipv4Packet::new_checked(eth.payload()) else {
                    return Inbound::Ignored(Ignored::Malformed);
                };
                if packet.more_frags() || packet.frag_offset() != 0 {
                    return Inbound::Ignored(Ignored::Fragment);
                }
                let Ok(repr) = Ipv4Repr::parse(&packet, &caps) else { return Inbound::Ignored(Ignored::Malformed) };
                if repr.dst_addr != ip || repr.next_header != IpProtocol::Udp {
                    return Inbound::Ignored(Ignored::NotForUs);
                }
                let Ok(udp) =
                    UdpPacket::new_checked(&frame[14 + packet.header_len() as usize..14 + packet.total_len() as usize])
                else {
                    return Inbound::Ignored(Ignored::Malformed);
                };
                let Ok(udp_repr) = UdpRepr::parse(&udp, &repr.src_addr.into(), &repr.dst_addr.into(), &caps) else {
                    return Inbound::Ignored(Ignored::Malformed);
                };
                if udp_repr.dst_port != port {
                    return Inbound::Ignored(Ignored::NotForUs);
                }
                let (start, len) = (14 + packet.header_len() as usize + 8, udp.len() as usize - 8);
                Inbound::Udp {
                    src_mac: eth.src_addr(),
                    src_ip: repr.src_addr,
                    src_port: udp_repr.src_port,
                    payload: &frame[start..start + len],
                }
            }
            _ => Inbound::Ignored(Ignored::NotForUs),
        }
    }

    #[test]
    fn frames_are_written_as_smoltcp_writes_them() {
        for payload_len in 0..48 {
            for checksum in [UdpChecksum::Software, UdpChecksum::Device] {
                for byte in [0x00, 0x5a, 0xff] {
                    let (mut ours, mut theirs) = ([0xa5u8; FRAME_OVERHEAD + 48], [0xa5u8; FRAME_OVERHEAD + 48]);
                    emit_udp_with(&mut ours, &flow(), payload_len, checksum, |p| p.fill(byte));
                    smoltcp_emit_udp(&mut theirs, &flow(), payload_len, checksum, byte);
                    assert_eq!(ours, theirs, "{payload_len} bytes of {byte:#x}, {checksum:?}");
                }
            }
        }
        for (op, target) in [(ArpOperation::Request, None), (ArpOperation::Reply, Some(GW_MAC))] {
            let (mut ours, mut theirs) = ([0xa5u8; 42], [0xa5u8; 42]);
            emit_arp(&mut ours, op, OUR_MAC, OUR_IP, target, GW_IP);
            let mut eth = EthernetFrame::new_unchecked(&mut theirs[..]);
            let dst = target.unwrap_or(EthernetAddress::BROADCAST);
            EthernetRepr { src_addr: OUR_MAC, dst_addr: dst, ethertype: EthernetProtocol::Arp }.emit(&mut eth);
            ArpRepr::EthernetIpv4 {
                operation: op,
                source_hardware_addr: OUR_MAC,
                source_protocol_addr: OUR_IP,
                target_hardware_addr: target.unwrap_or(EthernetAddress([0; 6])),
                target_protocol_addr: GW_IP,
            }
            .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
            assert_eq!(ours, theirs, "{op:?}");
        }
    }

    #[test]
    fn frames_are_classified_as_smoltcp_classifies_them() {
        // Every byte of a datagram, an ARP request and an ARP reply set to values that
        // matter to some field (lengths, versions, flags, checksums, addresses), alone,
        // and every truncation: the verdict and what it carries agree with smoltcp's.
        let mut udp = [0u8; FRAME_OVERHEAD + 7];
        emit_udp(&mut udp, &flow(), 7, |p| p.copy_from_slice(b"netdump"));
        let mut reply = [0u8; 42];
        emit_arp(&mut reply, ArpOperation::Reply, GW_MAC, GW_IP, Some(OUR_MAC), OUR_IP);
        let mut padded = [0u8; 64];
        padded[..udp.len()].copy_from_slice(&udp);
        // Without a UDP checksum, a changed UDP byte still reaches the port checks.
        let mut unchecked = udp;
        unchecked[40..42].fill(0);
        let mut checked = 0;
        for frame in [&udp[..], &unchecked[..], &ARP_WHO_HAS_US[..], &reply[..], &padded[..]] {
            for len in 0..=frame.len() {
                let f = &frame[..len];
                assert_eq!(classify(f, OUR_MAC, OUR_IP, 6665), smoltcp_classify(f, OUR_MAC, OUR_IP, 6665), "{f:x?}");
            }
            for at in 0..frame.len() {
                let values = [0x00, 0x01, 0x02, 0x06, 0x08, 0x10, 0x11, 0x20, 0x40, 0x45, 0x46, 0x55, 0x80, 0xfe, 0xff];
                for (value, pair) in values.iter().map(|&v| (v, false)).chain([(0x00, true), (0xff, true)]) {
                    let mut f = [0u8; 64];
                    f[..frame.len()].copy_from_slice(frame);
                    f[at] = value;
                    if pair && at + 1 < frame.len() {
                        f[at + 1] = value;
                    }
                    let f = &f[..frame.len()];
                    for port in [6665, 0] {
                        let (ours, theirs) =
                            (classify(f, OUR_MAC, OUR_IP, port), smoltcp_classify(f, OUR_MAC, OUR_IP, port));
                        assert_eq!(ours, theirs, "byte {at} = {value:#x}, port {port}: {f:x?}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 4000);
    }

    const OUR_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const GW_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
    const OUR_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const GW_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    // ARP request "who has 10.0.2.15? tell 10.0.2.2", as QEMU's user network sends it.
    const ARP_WHO_HAS_US: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00,
        0x06, 0x04, 0x00, 0x01, 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02, 0x0a, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x0a, 0x00, 0x02, 0x0f,
    ];

    fn flow() -> UdpFlow {
        UdpFlow { src_mac: GW_MAC, dst_mac: OUR_MAC, src_ip: GW_IP, dst_ip: OUR_IP, src_port: 6666, dst_port: 6665 }
    }

    #[test]
    fn arp_request_for_us_is_recognised() {
        assert_eq!(classify(&ARP_WHO_HAS_US, OUR_MAC, OUR_IP, 6665), Inbound::ArpRequest { mac: GW_MAC, ip: GW_IP });
        assert_eq!(
            classify(&ARP_WHO_HAS_US, OUR_MAC, Ipv4Address::new(10, 0, 2, 16), 6665),
            Inbound::Ignored(Ignored::NotForUs)
        );
    }

    #[test]
    fn arp_reply_we_emit_parses_back() {
        let mut f = [0u8; 42];
        emit_arp(&mut f, ArpOperation::Reply, OUR_MAC, OUR_IP, Some(GW_MAC), GW_IP);
        assert_eq!(classify(&f, GW_MAC, GW_IP, 1), Inbound::ArpReply { mac: OUR_MAC, ip: OUR_IP });
        // and a request we emit is the exact mirror of QEMU's
        let mut req = [0u8; 42];
        emit_arp(&mut req, ArpOperation::Request, GW_MAC, GW_IP, None, OUR_IP);
        assert_eq!(req, ARP_WHO_HAS_US);
    }

    #[test]
    fn udp_roundtrip_with_valid_checksums() {
        let mut f = [0u8; FRAME_OVERHEAD + 5];
        emit_udp(&mut f, &flow(), 5, |p| p.copy_from_slice(b"hello"));
        // IPv4 header checksum and UDP checksum are verified by classify.
        assert_eq!(
            classify(&f, OUR_MAC, OUR_IP, 6665),
            Inbound::Udp { src_mac: GW_MAC, src_ip: GW_IP, src_port: 6666, payload: b"hello" }
        );
        // total length and DF
        assert_eq!(&f[16..18], &[0, 33]);
        assert_eq!(f[20] & 0x40, 0x40);
    }

    /// What a checksum-offloading device does to a frame: the one's-complement sum of
    /// the UDP header and payload, the field holding the pseudo-header sum, complemented.
    fn complete_checksum_as_a_device(f: &mut [u8]) {
        let sum = !smoltcp::wire::checksum::data(&f[34..]);
        assert_eq!(internet_checksum(&f[34..]), sum);
        let sum = if sum == 0 { 0xffff } else { sum };
        f[40..42].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn offloaded_checksum_is_the_pseudo_header_sum_the_device_completes() {
        let mut soft = [0u8; FRAME_OVERHEAD + 5];
        emit_udp(&mut soft, &flow(), 5, |p| p.copy_from_slice(b"hello"));
        let mut dev = [0u8; FRAME_OVERHEAD + 5];
        emit_udp_with(&mut dev, &flow(), 5, UdpChecksum::Device, |p| p.copy_from_slice(b"hello"));
        assert_eq!(soft[..40], dev[..40], "only the UDP checksum differs");
        assert_ne!(soft[40..42], dev[40..42]);
        let pseudo = smoltcp::wire::checksum::pseudo_header_v4(&GW_IP, &OUR_IP, IpProtocol::Udp, 13);
        assert_eq!(dev[40..42], pseudo.to_be_bytes());
        assert_eq!(
            classify(&dev, OUR_MAC, OUR_IP, 6665),
            Inbound::Ignored(Ignored::Malformed),
            "incomplete until the device sums"
        );
        complete_checksum_as_a_device(&mut dev);
        assert_eq!(dev, soft, "the device's checksum is the one software computes");
    }

    #[test]
    fn corrupted_udp_is_malformed() {
        let mut f = [0u8; FRAME_OVERHEAD + 5];
        emit_udp(&mut f, &flow(), 5, |p| p.copy_from_slice(b"hello"));
        f[FRAME_OVERHEAD] ^= 1;
        assert_eq!(classify(&f, OUR_MAC, OUR_IP, 6665), Inbound::Ignored(Ignored::Malformed));
    }

    #[test]
    fn other_ports_addresses_and_macs_are_not_for_us() {
        let mut f = [0u8; FRAME_OVERHEAD + 5];
        emit_udp(&mut f, &flow(), 5, |p| p.copy_from_slice(b"hello"));
        assert_eq!(classify(&f, OUR_MAC, OUR_IP, 7777), Inbound::Ignored(Ignored::NotForUs));
        assert_eq!(classify(&f, OUR_MAC, Ipv4Address::new(10, 0, 2, 99), 6665), Inbound::Ignored(Ignored::NotForUs));
        assert_eq!(classify(&f, GW_MAC, OUR_IP, 6665), Inbound::Ignored(Ignored::NotForUs));
        // IPv4 to the broadcast MAC is not accepted either
        f[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(classify(&f, OUR_MAC, OUR_IP, 6665), Inbound::Ignored(Ignored::NotForUs));
    }

    #[test]
    fn fragments_are_ignored() {
        let mut f = [0u8; FRAME_OVERHEAD + 5];
        emit_udp(&mut f, &flow(), 5, |p| p.copy_from_slice(b"hello"));
        f[20] |= 0x20; // more fragments
        assert_eq!(classify(&f, OUR_MAC, OUR_IP, 6665), Inbound::Ignored(Ignored::Fragment));
    }

    #[test]
    fn garbage_never_panics() {
        let mut f = [0u8; 80];
        for len in 0..f.len() {
            for b in [0x00, 0xff, 0x45, 0x08] {
                f.fill(b);
                let _ = classify(&f[..len], OUR_MAC, OUR_IP, 6665);
            }
        }
    }
}
