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
