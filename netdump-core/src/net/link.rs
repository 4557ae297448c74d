//! The interface's IPv4 identity and its one peer, over a [`PolledNic`].

use super::frame::{
    FRAME_OVERHEAD, Ignored, Inbound, UdpChecksum, UdpFlow, arp_frame_len, classify, emit_arp, emit_udp_dyn,
};
use crate::clock::{Clock, Deadline};
use crate::nic::{NicError, PolledNic};
use smoltcp::wire::{ArpOperation, EthernetAddress, Ipv4Address};

/// Addresses of the client and its dump server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The client's IPv4 address.
    pub ip: Ipv4Address,
    /// Prefix length of the client's subnet (24 for 255.255.255.0).
    pub prefix_len: u8,
    /// First hop for a server outside the subnet.
    pub gateway: Option<Ipv4Address>,
    /// The dump server's IPv4 address.
    pub server_ip: Ipv4Address,
    /// The server's UDP port ([`SERVER_PORT`](crate::proto::SERVER_PORT) by default).
    pub server_port: u16,
    /// The client's UDP source port, on which it also listens
    /// ([`CLIENT_PORT`](crate::proto::CLIENT_PORT) by default).
    pub client_port: u16,
}

impl NetConfig {
    /// The address whose MAC frames to the server go to: the server itself when it is
    /// on-link, else the gateway.
    pub fn next_hop(&self) -> Result<Ipv4Address, NetError> {
        let mask = if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - self.prefix_len.min(32) as u32) };
        let on_link = u32::from(self.ip) & mask == u32::from(self.server_ip) & mask;
        if on_link { Ok(self.server_ip) } else { self.gateway.ok_or(NetError::NoRoute) }
    }
}

/// Network failures of the dump path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The server is off-link and no gateway is configured.
    NoRoute,
    /// No ARP reply from the next hop within the bound.
    ArpTimeout(Ipv4Address),
    /// The NIC failed.
    Nic(NicError),
}

impl From<NicError> for NetError {
    fn from(e: NicError) -> Self {
        NetError::Nic(e)
    }
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::NoRoute => f.write_str("server is off-link and no gateway is configured"),
            NetError::ArpTimeout(ip) => write!(f, "no ARP reply from {ip}"),
            NetError::Nic(e) => write!(f, "NIC: {e}"),
        }
    }
}

/// Frames seen and dropped, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Every frame the NIC delivered.
    pub frames_received: u64,
    /// Frames handed to the NIC: UDP and ARP.
    pub frames_sent: u64,
    /// ARP requests for our address answered.
    pub arp_answered: u64,
    /// Frames for another host, port or protocol.
    pub ignored: u64,
    /// Frames with a bad header or checksum, and IPv4 fragments.
    pub malformed: u64,
    /// UDP from another address, port or MAC than the server's.
    pub spoofed: u64,
}

/// The client's end of the UDP flow to the server.
pub struct UdpLink {
    config: NetConfig,
    mac: EthernetAddress,
    /// MAC of the next hop, learned once at install and never relearned.
    peer_mac: Option<EthernetAddress>,
    /// What this link has received, sent and dropped.
    pub counters: LinkCounters,
}

/// Pad ARP frames to the Ethernet minimum (60 bytes without FCS).
const MIN_FRAME: usize = 60;

impl UdpLink {
    /// A link for the interface `mac` with `config`'s addresses; the next hop is unknown
    /// until [`resolve`](Self::resolve).
    pub fn new(config: NetConfig, mac: [u8; 6]) -> Self {
        UdpLink { config, mac: EthernetAddress(mac), peer_mac: None, counters: LinkCounters::default() }
    }

    /// The addresses this link was made with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The next hop's MAC address, once [`resolve`](Self::resolve) has learned it.
    pub fn peer_mac(&self) -> Option<EthernetAddress> {
        self.peer_mac
    }

    /// Sets the next hop's MAC address where it is known without ARP.
    pub fn set_peer_mac(&mut self, mac: EthernetAddress) {
        self.peer_mac = Some(mac);
    }

    /// Aims the link at another server (failover): its address and port, and its next
    /// hop's MAC when known (`None`: unknown until [`resolve`](Self::resolve)). The
    /// counters carry on.
    pub fn retarget(&mut self, server_ip: Ipv4Address, server_port: u16, peer_mac: Option<EthernetAddress>) {
        self.config.server_ip = server_ip;
        self.config.server_port = server_port;
        self.peer_mac = peer_mac;
    }

    /// Largest UDP payload this link can send on `nic`.
    pub fn max_payload(&self, nic: &dyn PolledNic) -> usize {
        nic.mtu().saturating_sub(FRAME_OVERHEAD - 14).min(crate::proto::MAX_DATAGRAM)
    }

    /// Resolves the next hop's MAC (install time): an ARP request every `retry_us`, at
    /// most `attempts` times. Answers ARP for us meanwhile.
    pub fn resolve(
        &mut self,
        nic: &mut dyn PolledNic,
        clock: &dyn Clock,
        retry_us: u64,
        attempts: u32,
    ) -> Result<EthernetAddress, NetError> {
        let hop = self.config.next_hop()?;
        for _ in 0..attempts {
            self.send_arp(nic, ArpOperation::Request, None, hop)?;
            let deadline = Deadline::after(clock, retry_us);
            while !deadline.passed(clock) {
                let mut found = None;
                self.poll_frame(nic, &mut |inbound| {
                    if let Inbound::ArpReply { mac, ip } = inbound
                        && ip == hop
                        && mac.is_unicast()
                    {
                        found = Some(mac);
                    }
                })?;
                if let Some(mac) = found {
                    self.peer_mac = Some(mac);
                    return Ok(mac);
                }
            }
        }
        Err(NetError::ArpTimeout(hop))
    }

    /// Sends one ARP request or reply.
    // Out of line: `resolve` and `poll_frame` each had a copy (ARP is rare in both).
    #[inline(never)]
    fn send_arp(
        &mut self,
        nic: &mut dyn PolledNic,
        op: ArpOperation,
        to_mac: Option<EthernetAddress>,
        to_ip: Ipv4Address,
    ) -> Result<(), NicError> {
        let (mac, ip) = (self.mac, self.config.ip);
        nic.poll_transmit();
        nic.transmit(MIN_FRAME, &mut |f| {
            f.fill(0);
            emit_arp(&mut f[..arp_frame_len()], op, mac, ip, to_mac, to_ip)
        })?;
        self.counters.frames_sent += 1;
        Ok(())
    }

    /// Sends one UDP datagram of `payload_len` bytes to the server; `fill` writes it in
    /// place in the NIC's transmit buffer. Fails with `RingFull` when the NIC is busy.
    pub fn send(
        &mut self,
        nic: &mut dyn PolledNic,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), NicError> {
        self.send_as(nic, payload_len, false, fill)
    }

    /// [`send`](Self::send), through [`PolledNic::transmit_deferred`] when `deferred`:
    /// then the caller flushes the NIC ([`PolledNic::flush_transmit`]) after the burst,
    /// before it waits.
    pub fn send_as(
        &mut self,
        nic: &mut dyn PolledNic,
        payload_len: usize,
        deferred: bool,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), NicError> {
        let mut fill = Some(fill);
        self.send_dyn(nic, payload_len, deferred, &mut |payload| {
            if let Some(f) = fill.take() {
                f(payload)
            }
        })
    }

    /// [`send`](Self::send)'s body, once for every caller (no copy per closure type).
    fn send_dyn(
        &mut self,
        nic: &mut dyn PolledNic,
        payload_len: usize,
        deferred: bool,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), NicError> {
        let Some(dst_mac) = self.peer_mac else { return Err(NicError::LinkDown) };
        let flow = UdpFlow {
            src_mac: self.mac,
            dst_mac,
            src_ip: self.config.ip,
            dst_ip: self.config.server_ip,
            src_port: self.config.client_port,
            dst_port: self.config.server_port,
        };
        let checksum = UdpChecksum::of(nic);
        let len = (FRAME_OVERHEAD + payload_len).max(MIN_FRAME);
        let mut build = |frame: &mut [u8]| {
            frame[FRAME_OVERHEAD + payload_len..].fill(0);
            emit_udp_dyn(frame, &flow, payload_len, checksum, fill);
        };
        if deferred { nic.transmit_deferred(len, &mut build) } else { nic.transmit(len, &mut build) }?;
        self.counters.frames_sent += 1;
        Ok(())
    }

    /// Receives at most one frame. ARP requests for us are answered; datagrams from the
    /// server (its address, port and cached MAC) go to `on_server`; the rest is counted.
    /// Returns whether a frame was consumed.
    pub fn poll(&mut self, nic: &mut dyn PolledNic, on_server: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        let cfg = self.config;
        let peer = self.peer_mac;
        let mut spoofed = false;
        let got = self.poll_frame(nic, &mut |inbound| {
            if let Inbound::Udp { src_mac, src_ip, src_port, payload } = inbound {
                if src_ip == cfg.server_ip && src_port == cfg.server_port && Some(src_mac) == peer {
                    on_server(payload);
                } else {
                    spoofed = true;
                }
            }
        })?;
        if spoofed {
            self.counters.spoofed += 1;
        }
        Ok(got)
    }

    /// Receives one frame, answers ARP, counts drops and hands the rest to `handle`.
    fn poll_frame(&mut self, nic: &mut dyn PolledNic, handle: &mut dyn FnMut(Inbound<'_>)) -> Result<bool, NicError> {
        let (mac, ip, port) = (self.mac, self.config.ip, self.config.client_port);
        let mut reply_to = None;
        let mut counters = self.counters;
        let got = nic.poll_receive(&mut |frame| {
            counters.frames_received += 1;
            match classify(frame, mac, ip, port) {
                Inbound::ArpRequest { mac, ip } => reply_to = Some((mac, ip)),
                Inbound::Ignored(Ignored::NotForUs) => counters.ignored += 1,
                Inbound::Ignored(_) => counters.malformed += 1,
                other => handle(other),
            }
        })?;
        self.counters = counters;
        if let Some((to_mac, to_ip)) = reply_to {
            // A lost reply is harmless: the asker retries.
            if self.send_arp(nic, ArpOperation::Reply, Some(to_mac), to_ip).is_ok() {
                self.counters.arp_answered += 1;
            }
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(server: [u8; 4], gw: Option<[u8; 4]>) -> NetConfig {
        NetConfig {
            ip: Ipv4Address::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: gw.map(Ipv4Address::from),
            server_ip: Ipv4Address::from(server),
            server_port: 6666,
            client_port: 6665,
        }
    }

    #[test]
    fn next_hop_is_the_server_on_link_and_the_gateway_off_link() {
        assert_eq!(cfg([10, 0, 2, 2], None).next_hop(), Ok(Ipv4Address::new(10, 0, 2, 2)));
        assert_eq!(cfg([192, 168, 1, 5], Some([10, 0, 2, 1])).next_hop(), Ok(Ipv4Address::new(10, 0, 2, 1)));
        assert_eq!(cfg([192, 168, 1, 5], None).next_hop(), Err(NetError::NoRoute));
    }
}
