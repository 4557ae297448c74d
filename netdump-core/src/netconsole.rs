//! netconsole: console lines as UDP syslog to a collector, on the same NIC and driver
//! as the dump, with no allocation and no locks.
//!
//! - **Format**: RFC 5424 (`<PRI>1 TIMESTAMP HOST netdump - console [meta sequenceId="N"] MSG`)
//!   or the BSD format of RFC 3164 (`<PRI>Mmm dd hh:mm:ss HOST netdump: MSG`), chosen at
//!   install. The TIMESTAMP comes from the kernel's wall clock when it gave one
//!   ([`NetconsoleConfig::boot_unix_us`]); RFC 5424 otherwise sends its NILVALUE `-`,
//!   RFC 3164 (which has none) leaves TIMESTAMP out, so that receivers add their own.
//! - **Normal operation**: with a dump server, [`crate::Netdump::attach_netconsole`] and
//!   `Netdump::console_write` through [`crate::CrashCell::try_with`]; with none,
//!   [`ConsoleOnly`] owns the NIC. Console output is cut into lines by a fixed
//!   [`LineBuffer`]; a line longer than it is sent in pieces.
//! - **During a crash**: the dump path owns the NIC. It sends its own lines only at
//!   points where no DATA is in flight (after the DECISION, after FINISH_ACK), so the
//!   window never waits for a console line, and a console frame the ring cannot take is
//!   dropped (counted), never waited for.
//!
//! The collector's MAC (or the gateway's) is resolved by ARP at install and cached, as
//! for the dump server.

use crate::clock::{Clock, Deadline};
use crate::config::{ClientName, Timeouts};
use crate::net::{NetConfig, NetError, UdpLink};
use crate::nic::{NicError, PolledNic};

pub use crate::civil::{Civil, civil, unix_seconds};

/// The syslog port (RFC 5426).
pub const SYSLOG_PORT: u16 = 514;
/// The client's source port for netconsole (the dump uses 6665).
pub const NETCONSOLE_CLIENT_PORT: u16 = 6664;
/// The APP-NAME / TAG of every message.
pub const APP_NAME: &str = "netdump";
/// Largest syslog message sent: RFC 3164's limit, and within every receiver's minimum
/// for RFC 5424 over UDP (RFC 5426 asks receivers for 480 bytes at least, 2048 SHOULD).
pub const MAX_MESSAGE: usize = 1024;
/// Longest console line kept whole; longer ones are sent in pieces.
pub const LINE_BUFFER: usize = 512;

/// The syslog message format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424, with `meta sequenceId` so that a receiver sees lost lines.
    Rfc5424,
    /// The BSD format of RFC 3164.
    Rfc3164,
}

/// Syslog severities (RFC 5424 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Severity {
    /// The system is unusable.
    Emergency = 0,
    /// Action must be taken immediately.
    Alert = 1,
    /// Critical conditions.
    Critical = 2,
    /// Error conditions.
    Error = 3,
    /// Warning conditions.
    Warning = 4,
    /// Normal but significant conditions.
    Notice = 5,
    /// Informational messages: what [`Netconsole::write`] sends console lines at.
    Info = 6,
    /// Debug-level messages.
    Debug = 7,
}

/// Facility `kern` (0); `local0`..`local7` are 16..23.
pub const FACILITY_KERN: u8 = 0;

/// Where and how console lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetconsoleConfig {
    /// The client's address, and the collector as the "server" (`server_ip`,
    /// `server_port`, usually [`SYSLOG_PORT`]); `client_port` is the source port
    /// (usually [`NETCONSOLE_CLIENT_PORT`]).
    pub net: NetConfig,
    /// The syslog message format.
    pub format: SyslogFormat,
    /// HOSTNAME of every message (the client's name: netdumpd files lines under it).
    pub hostname: ClientName,
    /// Facility, 0..=23.
    pub facility: u8,
    /// Wall-clock time (µs since the Unix epoch, UTC) at the clock's zero, if the
    /// kernel knows it (e.g. from the RTC: [`crate::arch::x86_64::read_rtc`]).
    pub boot_unix_us: Option<u64>,
}

/// Lines sent and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetconsoleCounters {
    /// Lines handed to the NIC.
    pub sent: u64,
    /// Lines the NIC could not take (ring full or error).
    pub dropped: u64,
}

/// The netconsole sender: the collector's flow, the format and the line buffer. It
/// does not own the NIC: the owner ([`crate::Netdump`] or [`ConsoleOnly`]) lends it.
pub struct Netconsole {
    link: UdpLink,
    config: NetconsoleConfig,
    sequence: u32,
    line: LineBuffer<LINE_BUFFER>,
    /// Frames queued and not yet seen completed by [`Netconsole::drain`].
    in_flight: usize,
    /// Lines sent and dropped so far.
    pub counters: NetconsoleCounters,
}

impl Netconsole {
    /// A sender for the interface `mac`; call [`resolve`](Self::resolve) before the first
    /// line.
    pub fn new(config: NetconsoleConfig, mac: [u8; 6]) -> Self {
        Netconsole {
            link: UdpLink::new(config.net, mac),
            config,
            sequence: 0,
            line: LineBuffer::new(),
            in_flight: 0,
            counters: NetconsoleCounters::default(),
        }
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &NetconsoleConfig {
        &self.config
    }

    /// Resolves the collector's (or gateway's) MAC by ARP, with the install bounds.
    pub fn resolve(&mut self, nic: &mut dyn PolledNic, clock: &dyn Clock, t: &Timeouts) -> Result<(), NetError> {
        self.link.resolve(nic, clock, t.arp_retry_us, t.arp_attempts).map(|_| ())
    }

    /// Sends one line (without its newline) as one syslog message. Never waits: a full
    /// transmit ring drops the line (counted).
    pub fn send_line(
        &mut self,
        nic: &mut dyn PolledNic,
        clock: &dyn Clock,
        severity: Severity,
        line: &[u8],
    ) -> Result<(), NicError> {
        self.sequence = if self.sequence >= MAX_SEQUENCE { 1 } else { self.sequence + 1 };
        let stamp = self.config.boot_unix_us.map(|b| b.saturating_add(clock.now_us()));
        let pri = self.config.facility.min(23) * 8 + severity as u8;
        let mut msg = [0u8; MAX_MESSAGE];
        let header = Header {
            format: self.config.format,
            pri,
            unix_us: stamp,
            hostname: self.config.hostname.as_bytes(),
            sequence: self.sequence,
        };
        let len = format_message(&mut msg, &header, line);
        let room = self.link.max_payload(nic);
        let len = len.min(room);
        nic.poll_transmit();
        match self.link.send(nic, len, |p| p.copy_from_slice(&msg[..len])) {
            Ok(()) => {
                self.counters.sent += 1;
                self.in_flight += 1;
                Ok(())
            }
            Err(e) => {
                self.counters.dropped += 1;
                Err(e)
            }
        }
    }

    /// Console output, in any pieces: every completed line is sent (at `Info`).
    pub fn write(&mut self, nic: &mut dyn PolledNic, clock: &dyn Clock, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (taken, complete) = self.line.push(rest);
            rest = &rest[taken..];
            if complete {
                let mut copy = [0u8; LINE_BUFFER];
                let n = self.line.take(&mut copy);
                // A dropped line is counted; console output goes on regardless.
                let _ = self.send_line(nic, clock, Severity::Info, &copy[..n]);
            }
        }
    }

    /// Waits, at most `bound_us`, until the NIC reports every queued console frame sent
    /// (before the kernel stops for good, say).
    pub fn drain(&mut self, nic: &mut dyn PolledNic, clock: &dyn Clock, bound_us: u64) {
        let deadline = Deadline::after(clock, bound_us);
        while self.in_flight > 0 && !deadline.passed(clock) {
            self.in_flight = self.in_flight.saturating_sub(nic.poll_transmit());
        }
        self.in_flight = 0;
    }
}

/// RFC 5424 `meta sequenceId` runs 1..=2147483647 and then starts over at 1.
const MAX_SEQUENCE: u32 = 2_147_483_647;

/// The header fields of one message.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// RFC 5424 or RFC 3164.
    pub format: SyslogFormat,
    /// PRI: facility × 8 + severity.
    pub pri: u8,
    /// Wall-clock time of the message, µs since the Unix epoch (UTC).
    pub unix_us: Option<u64>,
    /// HOSTNAME, as in [`NetconsoleConfig::hostname`].
    pub hostname: &'a [u8],
    /// `meta sequenceId` (RFC 5424 only), 1..=2147483647.
    pub sequence: u32,
}

/// Writes one syslog message into `out` and returns its length (the message is cut to
/// fit). Control characters in the line become spaces.
pub fn format_message(out: &mut [u8], h: &Header<'_>, line: &[u8]) -> usize {
    let mut w = Out { buf: out, len: 0 };
    w.put(b"<");
    w.num(u64::from(h.pri), 1);
    w.put(b">");
    match h.format {
        SyslogFormat::Rfc5424 => {
            w.put(b"1 ");
            match h.unix_us {
                Some(us) => {
                    let t = civil(us / 1_000_000);
                    w.num(t.year, 4);
                    w.put(b"-");
                    w.num(t.month, 2);
                    w.put(b"-");
                    w.num(t.day, 2);
                    w.put(b"T");
                    w.time_of_day(&t);
                    w.put(b".");
                    w.num(us % 1_000_000, 6);
                    w.put(b"Z");
                }
                None => w.put(b"-"),
            }
            w.put(b" ");
            w.put(h.hostname);
            w.put(b" ");
            w.put(APP_NAME.as_bytes());
            w.put(b" - console [meta sequenceId=\"");
            w.num(u64::from(h.sequence), 1);
            w.put(b"\"] ");
        }
        SyslogFormat::Rfc3164 => {
            if let Some(us) = h.unix_us {
                const MONTHS: [&[u8; 3]; 12] =
                    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
                let t = civil(us / 1_000_000);
                w.put(MONTHS[(t.month - 1) as usize]);
                w.put(if t.day < 10 { b"  " } else { b" " });
                w.num(t.day, 1);
                w.put(b" ");
                w.time_of_day(&t);
                w.put(b" ");
            }
            w.put(h.hostname);
            w.put(b" ");
            w.put(APP_NAME.as_bytes());
            w.put(b": ");
        }
    }
    for &b in line {
        w.put(&[if b < 0x20 || b == 0x7f { b' ' } else { b }]);
    }
    w.len
}

/// A bounded writer: bytes past the end are dropped.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    /// `hh:mm:ss`, as both formats write it.
    fn time_of_day(&mut self, t: &Civil) {
        self.num(t.hour, 2);
        self.put(b":");
        self.num(t.minute, 2);
        self.put(b":");
        self.num(t.second, 2);
    }

    /// A decimal number with at least `width` digits (zero-padded).
    fn num(&mut self, mut v: u64, width: usize) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        while v > 0 || n < width.max(1) {
            digits[19 - n] = b'0' + (v % 10) as u8;
            v /= 10;
            n += 1;
        }
        self.put(&digits[20 - n..]);
    }
}

/// Collects console output into lines, in a fixed buffer.
pub struct LineBuffer<const N: usize> {
    buf: [u8; N],
    len: usize,
    complete: bool,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuffer { buf: [0; N], len: 0, complete: false }
    }

    /// Takes bytes up to and including a newline, or until the buffer is full; returns
    /// how many it took and whether a line is ready ([`take`](Self::take) it).
    pub fn push(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut taken = 0;
        for &b in bytes {
            taken += 1;
            match b {
                b'\n' => {
                    self.complete = true;
                    return (taken, true);
                }
                b'\r' => {}
                _ => {
                    self.buf[self.len] = b;
                    self.len += 1;
                    if self.len == N {
                        self.complete = true;
                        return (taken, true);
                    }
                }
            }
        }
        (taken, false)
    }

    /// Copies the line out (without its newline) and empties the buffer.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.len = 0;
        self.complete = false;
        n
    }
}

/// A NIC used for netconsole only: a kernel without a dump server. Keep it in a
/// [`crate::CrashCell`] as you would a [`crate::Netdump`]: `try_with` in normal
/// operation, `seize` in the panic handler.
pub struct ConsoleOnly<N: PolledNic, C: Clock> {
    nic: N,
    clock: C,
    console: Netconsole,
}

impl<N: PolledNic, C: Clock> ConsoleOnly<N, C> {
    /// Resets the NIC and resolves the collector's MAC (bounded by `timeouts`).
    pub fn install(mut nic: N, clock: C, config: NetconsoleConfig, timeouts: &Timeouts) -> Result<Self, NetError> {
        nic.reset()?;
        let mut console = Netconsole::new(config, nic.mac_address());
        console.resolve(&mut nic, &clock, timeouts)?;
        Ok(ConsoleOnly { nic, clock, console })
    }

    /// Console output in any pieces; complete lines are sent.
    pub fn write(&mut self, bytes: &[u8]) {
        self.console.write(&mut self.nic, &self.clock, bytes);
    }

    /// Sends one line (without its newline) at `severity`; never waits (a full transmit
    /// ring drops the line, counted).
    pub fn send_line(&mut self, severity: Severity, line: &[u8]) -> Result<(), NicError> {
        self.console.send_line(&mut self.nic, &self.clock, severity, line)
    }

    /// Crash time: resets the NIC (the OS may have left it mid-transfer) so lines go out.
    pub fn take_over(&mut self) -> Result<(), NicError> {
        self.nic.reset()
    }

    /// Waits at most `bound_us` for queued lines to leave.
    pub fn drain(&mut self, bound_us: u64) {
        self.console.drain(&mut self.nic, &self.clock, bound_us);
    }

    /// Lines sent and dropped so far.
    pub fn counters(&self) -> NetconsoleCounters {
        self.console.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(format: SyslogFormat, unix_us: Option<u64>) -> Header<'static> {
        Header { format, pri: 6, unix_us, hostname: b"node-a", sequence: 42 }
    }

    fn msg(h: &Header<'_>, line: &[u8]) -> std::string::String {
        let mut out = [0u8; MAX_MESSAGE];
        let n = format_message(&mut out, h, line);
        std::string::String::from_utf8(out[..n].to_vec()).unwrap()
    }

    // 2026-01-02T03:04:05.000006Z
    const T: u64 = 1_767_323_045_000_006;

    #[test]
    fn rfc5424_messages_carry_time_host_app_and_sequence() {
        assert_eq!(
            msg(&header(SyslogFormat::Rfc5424, Some(T)), b"hello\tworld"),
            "<6>1 2026-01-02T03:04:05.000006Z node-a netdump - console [meta sequenceId=\"42\"] hello world"
        );
        assert_eq!(
            msg(&header(SyslogFormat::Rfc5424, None), b"x"),
            "<6>1 - node-a netdump - console [meta sequenceId=\"42\"] x"
        );
    }

    #[test]
    fn rfc3164_messages_are_bsd_style() {
        assert_eq!(msg(&header(SyslogFormat::Rfc3164, Some(T)), b"hello"), "<6>Jan  2 03:04:05 node-a netdump: hello");
        let h = Header { pri: 2 * 8 + 2, ..header(SyslogFormat::Rfc3164, Some(1_700_000_000_000_000)) };
        assert_eq!(msg(&h, b"x"), "<18>Nov 14 22:13:20 node-a netdump: x");
        assert_eq!(msg(&header(SyslogFormat::Rfc3164, None), b"x"), "<6>node-a netdump: x");
    }

    #[test]
    fn long_lines_are_cut_to_the_message_size() {
        let long = [b'a'; 3000];
        let mut out = [0u8; MAX_MESSAGE];
        assert_eq!(format_message(&mut out, &header(SyslogFormat::Rfc5424, None), &long), MAX_MESSAGE);
    }

    #[test]
    fn the_line_buffer_joins_pieces_and_splits_long_lines() {
        let mut b = LineBuffer::<8>::new();
        let take = |b: &mut LineBuffer<8>| {
            let mut out = [0u8; 8];
            let n = b.take(&mut out);
            out[..n].to_vec()
        };
        assert_eq!(b.push(b"ab"), (2, false));
        assert_eq!(b.push(b"c\r\nde"), (3, true));
        assert_eq!(take(&mut b), b"abc");
        assert_eq!(b.push(b"0123456789\n"), (8, true));
        assert_eq!(take(&mut b), b"01234567");
        assert_eq!(b.push(b"89\n"), (3, true));
        assert_eq!(take(&mut b), b"89");
    }
}
