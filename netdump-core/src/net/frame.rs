//! Pure frame building and classification, separate from the NIC so it is tested
//! against byte arrays.

use smoltcp::phy::{Checksum, ChecksumCapabilities};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

/// Ethernet (14) + IPv4 (20) + UDP (8) header bytes in front of every datagram.
pub const FRAME_OVERHEAD: usize = 14 + 20 + 8;
const ARP_FRAME_LEN: usize = 14 + 28;

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

/// Classifies a received frame for the interface `mac`/`ip` listening on UDP `port`.
pub fn classify(frame: &[u8], mac: EthernetAddress, ip: Ipv4Address, port: u16) -> Inbound<'_> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return Inbound::Ignored(Ignored::Malformed) };
    let dst = eth.dst_addr();
    if dst != mac && !dst.is_broadcast() {
        return Inbound::Ignored(Ignored::NotForUs);
    }
    match eth.ethertype() {
        EthernetProtocol::Arp => classify_arp(eth.payload(), ip),
        EthernetProtocol::Ipv4 if dst == mac => classify_ipv4(eth.src_addr(), eth.payload(), ip, port),
        _ => Inbound::Ignored(Ignored::NotForUs),
    }
}

fn classify_arp(payload: &[u8], ip: Ipv4Address) -> Inbound<'_> {
    let Ok(packet) = ArpPacket::new_checked(payload) else { return Inbound::Ignored(Ignored::Malformed) };
    let Ok(ArpRepr::EthernetIpv4 {
        operation, source_hardware_addr, source_protocol_addr, target_protocol_addr, ..
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

fn classify_ipv4(src_mac: EthernetAddress, payload: &[u8], ip: Ipv4Address, port: u16) -> Inbound<'_> {
    let caps = ChecksumCapabilities::default();
    let Ok(packet) = Ipv4Packet::new_checked(payload) else { return Inbound::Ignored(Ignored::Malformed) };
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Inbound::Ignored(Ignored::Fragment);
    }
    let Ok(repr) = Ipv4Repr::parse(&packet, &caps) else { return Inbound::Ignored(Ignored::Malformed) };
    if repr.dst_addr != ip || repr.next_header != IpProtocol::Udp {
        return Inbound::Ignored(Ignored::NotForUs);
    }
    let ip_payload = packet.payload();
    let Ok(udp) = UdpPacket::new_checked(ip_payload) else { return Inbound::Ignored(Ignored::Malformed) };
    let Ok(udp_repr) = UdpRepr::parse(&udp, &repr.src_addr.into(), &repr.dst_addr.into(), &caps) else {
        return Inbound::Ignored(Ignored::Malformed);
    };
    if udp_repr.dst_port != port {
        return Inbound::Ignored(Ignored::NotForUs);
    }
    Inbound::Udp { src_mac, src_ip: repr.src_addr, src_port: udp_repr.src_port, payload: udp.payload() }
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

/// The one instance of the frame builder: callers' closures come through `dyn`, so the
/// code exists once in a kernel however many kinds of datagram it sends.
pub(crate) fn emit_udp_dyn(
    frame: &mut [u8],
    flow: &UdpFlow,
    payload_len: usize,
    checksum: UdpChecksum,
    fill: &mut dyn FnMut(&mut [u8]),
) {
    let mut caps = ChecksumCapabilities::default();
    if checksum == UdpChecksum::Device {
        caps.udp = Checksum::None;
    }
    let mut eth = EthernetFrame::new_unchecked(frame);
    EthernetRepr { src_addr: flow.src_mac, dst_addr: flow.dst_mac, ethertype: EthernetProtocol::Ipv4 }.emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    Ipv4Repr {
        src_addr: flow.src_ip,
        dst_addr: flow.dst_ip,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload_len,
        hop_limit: 64,
    }
    .emit(&mut ip, &caps);
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    UdpRepr { src_port: flow.src_port, dst_port: flow.dst_port }.emit(
        &mut udp,
        &flow.src_ip.into(),
        &flow.dst_ip.into(),
        payload_len,
        fill,
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
    let mut eth = EthernetFrame::new_unchecked(frame);
    let dst = target_mac.unwrap_or(EthernetAddress::BROADCAST);
    EthernetRepr { src_addr: our_mac, dst_addr: dst, ethertype: EthernetProtocol::Arp }.emit(&mut eth);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: our_mac,
        source_protocol_addr: our_ip,
        target_hardware_addr: target_mac.unwrap_or(EthernetAddress([0; 6])),
        target_protocol_addr: target_ip,
    }
    .emit(&mut arp);
}

#[cfg(test)]
mod tests {
    use super::*;

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
