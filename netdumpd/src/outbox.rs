//! The server's socket: receiving with a bounded wait, and sending, with a budget for
//! replies to packets that belong to no live session (so that spoofed packets cannot aim
//! the server at a victim).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netdump_core::crypto::{Transport, seal_packet};
use netdump_core::proto::{Header, MAX_DATAGRAM, Message};

use crate::limits::RateBudget;
use crate::stats::ServerStats;

/// Receive buffer asked of the kernel: a few full client windows of jumbo packets.
const RECEIVE_BUFFER: usize = 8 << 20;
/// `UDP_GRO` (linux/udp.h): the socket option that lets the kernel hand over a run of
/// same-sized datagrams of one flow as one buffer, and the control message that gives
/// their size.
const UDP_GRO: libc::c_int = 104;
/// Replies to packets that belong to no live session (ERRORs, STOP acks): at most
/// this many per second.
pub const UNSOLICITED_REPLIES_PER_SECOND: u32 = 50;

/// How a reply is written.
pub enum Wire<'a> {
    /// Unsealed, with a header of this protocol version.
    Clear(u8),
    /// Sealed (version 2) with the session's transport, under its next send nonce.
    Sealed(&'a mut Transport),
}

/// The socket, a packet buffer, and the budget of unsolicited replies.
pub struct Outbox {
    socket: UdpSocket,
    buf: Vec<u8>,
    stats: Arc<ServerStats>,
    unsolicited: RateBudget,
}

impl Outbox {
    /// Takes the bound socket: non-blocking for good (each turn waits in ppoll(2) and
    /// then drains, with no socket option changed per turn), with a large receive buffer.
    pub fn new(socket: UdpSocket, stats: Arc<ServerStats>) -> io::Result<Outbox> {
        socket.set_nonblocking(true)?;
        enlarge_receive_buffer(&socket);
        enable_receive_offload(&socket);
        Ok(Outbox {
            socket,
            buf: vec![0; MAX_DATAGRAM],
            stats,
            unsolicited: RateBudget::new(UNSOLICITED_REPLIES_PER_SECOND, Instant::now()),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The next datagram, or `WouldBlock`.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf)
    }

    /// The datagrams waiting, up to [`RecvBatch::SLOTS`] slots, with one `recvmmsg(2)`;
    /// 0 when none waits (never `WouldBlock`). A slot holds one datagram, or a run of
    /// same-sized datagrams of one sender that UDP receive offload handed over together
    /// ([`RecvBatch::slot`] splits it). Returns the slots filled.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        const SLOTS: usize = RecvBatch::SLOTS;
        batch.received = 0;
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SLOTS];
        // SAFETY: an all-zero mmsghdr is a valid value (null pointers, zero lengths).
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        let slots = batch.bufs.chunks_exact_mut(RecvBatch::SLOT_LEN);
        let slots = slots.zip(iov.iter_mut()).zip(msgs.iter_mut()).zip(batch.names.iter_mut());
        for ((((buf, v), m), name), control) in slots.zip(batch.controls.iter_mut()) {
            *v = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = control.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = std::mem::size_of_val(control) as _;
        }
        // SAFETY: `msgs` holds SLOTS mmsghdrs whose name, iovec and control pointers point
        // at the batch's own buffers (each iovec one `SLOT_LEN` slot of `bufs`, each
        // control one `controls` entry of the length given) and at `iov`, all alive and
        // unmoved during the call; a null timeout with MSG_DONTWAIT returns at once.
        let rc = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                SLOTS as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        batch.received = rc as usize;
        for ((len, segment), m) in batch.lens.iter_mut().zip(batch.segments.iter_mut()).zip(&msgs[..batch.received]) {
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *len = if truncated { RecvBatch::SLOT_LEN } else { (m.msg_len as usize).min(RecvBatch::SLOT_LEN) };
            *segment = if truncated { 0 } else { gro_segment_size(&m.msg_hdr) };
        }
        Ok(batch.received)
    }

    /// Waits at most `timeout` for a datagram (ppoll(2), microsecond resolution); false
    /// when the time passed or a signal came first.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut fd = libc::pollfd { fd: self.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `fd` is one valid pollfd naming the socket's open descriptor (the socket
        // outlives the call), `ts` a valid timespec, and a null signal mask leaves it as it is.
        let rc = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
        }
        Ok(rc > 0)
    }

    /// Sends `reply` to `to` as `wire` says, counted.
    pub fn send(&mut self, to: SocketAddr, wire: Wire<'_>, cookie: u64, seq: u32, reply: Message<'_>) {
        let built = match wire {
            Wire::Clear(version) => {
                reply.emit_packet(version, 0, cookie, seq, &mut self.buf).map_err(|e| e.to_string())
            }
            Wire::Sealed(transport) => {
                let header = Header::v2(reply.msg_type(), 0, cookie, seq);
                seal_packet(transport, header, reply.wire_len(), &mut self.buf, |p| reply.emit(p))
                    .map_err(|e| e.to_string())
            }
        };
        match built {
            Ok(n) => match self.socket.send_to(&self.buf[..n], to) {
                Ok(_) => self.stats.packet_sent(),
                Err(e) => {
                    self.stats.send_error();
                    tracing::debug!(%to, "send failed: {e}");
                }
            },
            Err(e) => tracing::error!(%to, "cannot build {:?}: {e}", reply.msg_type()),
        }
    }

    /// Whether the budget of replies outside a live session allows one more now (it is
    /// spent if so).
    pub fn take_unsolicited(&mut self) -> bool {
        self.unsolicited.take(Instant::now())
    }

    /// Sends a reply to a packet outside any live session, if the budget allows.
    pub fn send_unsolicited(&mut self, to: SocketAddr, wire: Wire<'_>, cookie: u64, seq: u32, reply: Message<'_>) {
        if self.take_unsolicited() {
            self.send(to, wire, cookie, seq, reply);
        }
    }
}

/// Buffers for [`Outbox::recv_batch`]: a slot per datagram, or per run of datagrams
/// that UDP receive offload coalesced (at most 64 KiB, the most the kernel coalesces; a
/// slot's pages are touched only as far as it is filled). A single datagram longer than
/// [`MAX_DATAGRAM`] is received whole and dropped as oversized.
pub struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    /// Room for each slot's control messages (the coalesced datagrams' size).
    controls: Vec<[u64; 8]>,
    /// Bytes of each slot received (a slot's length for one cut short).
    lens: Vec<usize>,
    /// The size of each coalesced datagram of a slot (the last may be shorter); 0 when
    /// the slot holds one datagram.
    segments: Vec<usize>,
    received: usize,
}

impl RecvBatch {
    /// Slots one `recvmmsg(2)` fills at most.
    pub const SLOTS: usize = 64;
    /// Bytes of one slot: a run of datagrams with `UDP_GRO`.
    pub const SLOT_LEN: usize = 64 << 10;

    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; Self::SLOTS * Self::SLOT_LEN],
            // SAFETY: an all-zero sockaddr_storage is a valid value (family AF_UNSPEC).
            names: vec![unsafe { std::mem::zeroed() }; Self::SLOTS],
            controls: vec![[0; 8]; Self::SLOTS],
            lens: vec![0; Self::SLOTS],
            segments: vec![0; Self::SLOTS],
            received: 0,
        }
    }

    /// How many datagrams the last receive brought.
    pub fn len(&self) -> usize {
        self.received
    }

    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// The datagrams of slot `i` of the last receive (one, or a coalesced run cut back
    /// into the datagrams that were sent) and their source (`None` for a source that is
    /// not IPv4 or IPv6).
    pub fn slot(&self, i: usize) -> (impl Iterator<Item = &[u8]>, Option<SocketAddr>) {
        let start = i * Self::SLOT_LEN;
        (split_datagrams(&self.bufs[start..start + self.lens[i]], self.segments[i]), socket_addr(&self.names[i]))
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The address in a `sockaddr_storage` the kernel filled.
fn socket_addr(sa: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let a = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The datagrams of a received buffer: `segment` bytes each (the last may be shorter)
/// when receive offload coalesced them, else the buffer as one datagram (an empty one
/// too: it is dropped as truncated, and counted).
fn split_datagrams(buf: &[u8], segment: usize) -> impl Iterator<Item = &[u8]> {
    let size = if segment == 0 || segment >= buf.len() { buf.len().max(1) } else { segment };
    buf.chunks(size).chain(std::iter::once(buf).filter(|b| b.is_empty()))
}

/// The size of the coalesced datagrams a received message holds (its `UDP_GRO` control
/// message), or 0 when it holds one datagram.
fn gro_segment_size(hdr: &libc::msghdr) -> usize {
    // SAFETY: `hdr` is a msghdr recvmmsg(2) filled, whose control pointer and length
    // (the kernel's `msg_controllen`) describe the batch's control buffer; CMSG_FIRSTHDR
    // and CMSG_NXTHDR stay within it, and the data of a `UDP_GRO` message is one int,
    // read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    0
}

/// Turns on UDP receive offload (Linux 5.0 and later): a run of same-sized datagrams of
/// one sender arrives as one buffer, cut back into datagrams here, so that the kernel
/// queues and copies one buffer instead of dozens. Where it is not offered, datagrams
/// arrive one by one as before.
fn enable_receive_offload(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket`, and the option value
    // points to a c_int whose size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("no UDP receive offload: {}", io::Error::last_os_error());
    }
}

/// Asks for a receive buffer that holds several client windows; the kernel may grant
/// less (`net.core.rmem_max`), which only costs retransmissions.
fn enlarge_receive_buffer(socket: &UdpSocket) {
    let size = RECEIVE_BUFFER as libc::c_int;
    // SAFETY: the descriptor is a live socket owned by `socket`, and the option value
    // points to a c_int whose size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("cannot enlarge the receive buffer: {}", io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coalesced_run_is_cut_back_into_the_datagrams_that_were_sent() {
        let buf: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let parts: Vec<&[u8]> = split_datagrams(&buf, 1000).collect();
        assert_eq!(parts, vec![&buf[..1000], &buf[1000..2000], &buf[2000..]]);
        assert_eq!(split_datagrams(&buf, 0).collect::<Vec<_>>(), vec![&buf[..]], "one datagram");
        assert_eq!(split_datagrams(&buf, 2500).collect::<Vec<_>>(), vec![&buf[..]]);
        let empty: &[u8] = &[];
        assert_eq!(split_datagrams(empty, 0).collect::<Vec<_>>(), vec![empty], "an empty datagram is one");
        assert_eq!(split_datagrams(&[], 1000).count(), 1);
    }

    /// What `recv_batch` brings, datagram by datagram, until `want` arrived (or 5 s).
    fn receive(outbox: &Outbox, want: usize) -> Vec<(Vec<u8>, Option<SocketAddr>)> {
        let mut batch = RecvBatch::new();
        let mut got = vec![];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            if !outbox.wait_readable(Duration::from_millis(100)).unwrap() {
                continue;
            }
            let n = outbox.recv_batch(&mut batch).unwrap();
            for i in 0..n {
                let (datagrams, from) = batch.slot(i);
                got.extend(datagrams.map(|d| (d.to_vec(), from)));
            }
        }
        got
    }

    #[test]
    fn a_gso_burst_arrives_as_the_datagrams_that_were_sent() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let outbox = Outbox::new(rx, Arc::new(ServerStats::default())).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload: Vec<u8> = (0..3500u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let segment: libc::c_int = 1000;
        // SAFETY: a live socket, and an int option value whose size is passed alongside.
        let gso = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_UDP,
                103, // UDP_SEGMENT: the kernel cuts each send into 1000-byte datagrams
                (&segment as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if gso {
            tx.send_to(&payload, to).unwrap();
        } else {
            for d in payload.chunks(1000) {
                tx.send_to(d, to).unwrap();
            }
        }
        tx.send_to(b"tail", to).unwrap();
        let got = receive(&outbox, 5);
        let sent: Vec<&[u8]> = payload.chunks(1000).chain([&b"tail"[..]]).collect();
        assert_eq!(got.iter().map(|(d, _)| &d[..]).collect::<Vec<_>>(), sent);
        assert!(got.iter().all(|(_, from)| *from == Some(tx.local_addr().unwrap())));
    }
}
