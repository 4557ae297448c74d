//! A fleet of simulated clients for the bench: each registers (HELLO), announces a crash
//! (CRASH) and, after its DECISION, sends a **prebuilt** DATA stream — every datagram
//! built with netdump-core's own emit functions before the clock starts — with
//! `sendmmsg(2)`, reading the server's ACKs and resending what they show missing, then
//! FINISH. Clients speak version 2 with the XXH64 check (what netdump-core's client
//! uses where the server grants it), or version 1 with CRC-32 (an older client), as
//! [`FleetConfig::check`] says. One thread drives every client, so that sending a packet costs a slice of a
//! system call and netdumpd, not the clients, is what the bench measures.
//!
//! Each client dumps its own [`Pattern`] (its own seed); [`Fleet::verify`] then reads
//! every vmcore netdumpd wrote and compares it with the pattern bit by bit.

use crate::check;
use crate::vmcore::Vmcore;
use anyhow::{Context, Result, bail, ensure};
use netdump_core::proto::{
    AddressTable, Check, Crash, CrashKind, Data, Finish, FinishStatus, HEADER_LEN, Header, Hello, HelloStatus, HelloV2,
    KEY_ID_LEN, MemoryRange, Message, MessageType, ProtoError, REGISTER_RECORD_LEN, REGISTERS_VALID, RangeTable,
    RegisterRecord, Section, StreamCrc, VERSION_1, VERSION_2, Verdict, features, flags,
};
use netdump_test_pattern::Pattern;
use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The console log each simulated client sends.
const LOG_TEXT: &[u8] = b"replayer client booted\nreplayer client about to crash\n";
/// GSO buffers handed to one `sendmmsg(2)`.
const BATCH: usize = 16;
/// Datagrams in one GSO buffer (44 full ones fit the 64 KiB a UDP send may carry).
const GSO_SEGMENTS: usize = 40;
/// `UDP_SEGMENT` (linux/udp.h): the socket option and control message of UDP GSO.
const UDP_SEGMENT: libc::c_int = 103;

/// What one `sendmmsg(2)` needs, reused from call to call.
#[derive(Default)]
struct SendBuffers {
    /// (first seq, datagrams, bytes) of each GSO buffer.
    groups: Vec<(u32, u32, usize)>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// One control message (`UDP_SEGMENT`) per buffer, 8-aligned.
    control: Vec<[u64; 4]>,
}
/// Without ACK progress for this long, everything unacknowledged is sent again.
const RTO: Duration = Duration::from_millis(40);
/// A packet the selective ack shows missing is resent at most this often.
const RESEND_GAP: Duration = Duration::from_millis(10);
/// HELLO, CRASH and FINISH are repeated this often until answered.
const RETRY: Duration = Duration::from_millis(300);
/// The whole data phase must end within this (a server that stops answering fails the run).
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// What the fleet looks like.
#[derive(Debug, Clone, Copy)]
pub struct FleetConfig {
    pub clients: usize,
    /// Bytes of memory each client dumps (a multiple of 4 KiB).
    pub per_client: u64,
    /// DATA packets in flight per client.
    pub window: u32,
    /// UDP payload of a full DATA packet, header included (1472 for a 1500-byte MTU).
    pub datagram: usize,
    /// The per-packet check: [`Check::Xxh64`] registers with HELLO v2 asking for
    /// [`features::XXH64_CHECK`] (the run fails if the server does not grant it) and
    /// sends every packet in version 2; [`Check::Crc32`] speaks version 1.
    pub check: Check,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { clients: 4, per_client: 64 << 20, window: 256, datagram: 1472, check: Check::Xxh64 }
    }
}

impl FleetConfig {
    /// The protocol version the clients speak.
    pub fn version(&self) -> u8 {
        version_of(self.check)
    }
}

/// The protocol version of clients with `check`.
fn version_of(check: Check) -> u8 {
    match check {
        Check::Crc32 => VERSION_1,
        Check::Xxh64 => VERSION_2,
    }
}

/// The flags every DATA packet with `check` carries besides ACK_REQUEST and RETRANSMIT.
fn data_flags_of(check: Check) -> u16 {
    match check {
        Check::Crc32 => 0,
        Check::Xxh64 => flags::CHECK_XXH64,
    }
}

/// One client's prebuilt stream and where its transfer stands.
struct Client {
    name: String,
    cookie: u64,
    pattern: Pattern,
    socket: UdpSocket,
    check: Check,
    /// Every DATA datagram, `stride` bytes apart, `lens[seq]` long.
    wire: Vec<u8>,
    stride: usize,
    lens: Vec<u16>,
    /// The check of each DATA payload (for a retransmission's header).
    payload_crcs: Vec<u32>,
    total_bytes: u64,
    stream_crc: u32,
    /// Lowest seq the server has not acknowledged.
    cumulative: u32,
    /// Selectively acknowledged, beyond `cumulative`.
    sacked: Vec<bool>,
    /// Next seq never sent.
    next: u32,
    /// When each seq was last (re)sent.
    sent_at: Vec<Option<Instant>>,
    last_progress: Instant,
    /// The last round of resends after [`RTO`].
    rto_from: Instant,
    window: u32,
    retransmissions: u64,
    finish_sent: Option<Instant>,
    finished: Option<FinishStatus>,
}

/// What a fleet's run measured.
#[derive(Debug, Clone, Default)]
pub struct FleetRun {
    /// Data bytes (sub-headers excluded) every client sent, each packet once.
    pub bytes: u64,
    /// From the first DATA to the last FINISH_ACK.
    pub seconds: f64,
    /// netdumpd's user + system CPU over the same span.
    pub server_cpu_s: f64,
    pub datagrams: u64,
    pub retransmissions: u64,
}

impl FleetRun {
    /// The aggregate rate, MB/s.
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
    /// netdumpd's CPU seconds per GB received.
    pub fn server_cpu_s_per_gb(&self) -> f64 {
        self.server_cpu_s / (self.bytes as f64 / 1e9)
    }
}

/// The fleet: its clients' prebuilt streams.
pub struct Fleet {
    config: FleetConfig,
    clients: Vec<Client>,
}

/// A cookie no earlier run used: the process's random hash keys.
fn fresh_cookie(i: usize) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(i as u64) | 1
}

impl Fleet {
    /// Builds every client's DATA stream: LOG, one register record, then the memory of
    /// its pattern (no zero pages: every page is sent), in datagrams of
    /// `config.datagram` bytes.
    pub fn build(config: FleetConfig, server: SocketAddr) -> Result<Fleet> {
        ensure!(config.per_client > 0 && config.per_client.is_multiple_of(4096), "per_client must be whole pages");
        ensure!(config.window >= 1 && config.window <= 512, "window must be 1..=512");
        ensure!(config.datagram > HEADER_LEN + Data::SUBHEADER_LEN, "datagram too small");
        let clients = (0..config.clients)
            .map(|i| {
                let pattern =
                    Pattern { base: 16 << 20, len: config.per_client, seed: 0x5eed_0000 + i as u64, zero_every: 0 };
                Client::build(format!("fleet-{i}"), fresh_cookie(i), pattern, config, server)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Fleet { config, clients })
    }

    /// Names of the clients, in order.
    pub fn names(&self) -> Vec<String> {
        self.clients.iter().map(|c| c.name.clone()).collect()
    }

    /// Registers every client and announces its crash; then sends every stream at once
    /// and finishes each. `server_pid` is whose CPU time the run reports.
    pub fn run(&mut self, server_pid: u32) -> Result<FleetRun> {
        for c in &mut self.clients {
            c.register()?;
        }
        for c in &mut self.clients {
            c.announce()?;
        }
        let cpu_before = process_cpu_seconds(server_pid)?;
        let started = Instant::now();
        for c in &mut self.clients {
            c.last_progress = started;
        }
        let mut datagrams = 0u64;
        let mut out = SendBuffers::default();
        let mut buf = vec![0u8; 2048];
        let mut scratch = vec![0u8; self.config.datagram.max(2048)];
        loop {
            let mut busy = false;
            let mut done = true;
            for c in &mut self.clients {
                if c.finished.is_some() {
                    continue;
                }
                done = false;
                busy |= c.read_replies(&mut buf)?;
                let sent = c.send_new(&mut out)?;
                datagrams += sent as u64;
                busy |= sent > 0;
                let resent = c.resend(Instant::now(), &mut scratch)?;
                datagrams += resent;
                c.finish_if_done(&mut scratch)?;
                ensure!(
                    c.last_progress.elapsed() < SILENCE_LIMIT,
                    "{}: no progress for {} s (cumulative {} of {})",
                    c.name,
                    SILENCE_LIMIT.as_secs(),
                    c.cumulative,
                    c.lens.len()
                );
            }
            if done {
                break;
            }
            if !busy {
                self.wait_readable(Duration::from_millis(2))?;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let server_cpu_s = process_cpu_seconds(server_pid)? - cpu_before;
        for c in &self.clients {
            ensure!(c.finished == Some(FinishStatus::Verified), "{}: FINISH answered {:?}", c.name, c.finished);
        }
        Ok(FleetRun {
            bytes: self.clients.iter().map(|c| c.total_bytes).sum(),
            seconds,
            server_cpu_s,
            datagrams,
            retransmissions: self.clients.iter().map(|c| c.retransmissions).sum(),
        })
    }

    /// Waits at most `timeout` for any client's socket to have a reply.
    fn wait_readable(&self, timeout: Duration) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .clients
            .iter()
            .filter(|c| c.finished.is_none())
            .map(|c| libc::pollfd { fd: c.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds naming open sockets that
        // outlive the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as i32) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Every client's vmcore in `dump_dir` (netdumpd's), compared with its pattern bit by
    /// bit, its log with what was sent, and its `info.json` saying complete.
    pub fn verify(&self, dump_dir: &Path) -> Result<()> {
        for c in &self.clients {
            let prefix = format!("{}-", c.name);
            let mut dirs: Vec<_> = std::fs::read_dir(dump_dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                .collect();
            dirs.sort();
            ensure!(dirs.len() == 1, "{}: {} dump directories, expected one", c.name, dirs.len());
            let dir = &dirs[0];
            let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("info.json"))?)?;
            check::info_says_complete(&info).with_context(|| format!("{}", dir.display()))?;
            let core = Vmcore::open(&dir.join("vmcore"))?;
            check::pattern_matches(&core, &c.pattern).with_context(|| format!("{}: {}", c.name, dir.display()))?;
            let log = std::fs::read(dir.join("log")).with_context(|| format!("{}: no log", dir.display()))?;
            ensure!(log == LOG_TEXT, "{}: the log differs", dir.display());
        }
        Ok(())
    }
}

impl Client {
    fn build(name: String, cookie: u64, pattern: Pattern, config: FleetConfig, server: SocketAddr) -> Result<Client> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(server)?;
        let sock = socket2::SockRef::from(&socket);
        sock.set_send_buffer_size(4 << 20)?;
        sock.set_recv_buffer_size(1 << 20)?;
        let stride = config.datagram;
        let max_data = stride - HEADER_LEN - Data::SUBHEADER_LEN;
        let mut regs = RegisterRecord {
            rip: 0xffff_8000_0010_2030,
            rsp: pattern.base,
            flags: REGISTERS_VALID,
            ..Default::default()
        };
        regs.cpu = 0;
        let regs = regs.to_bytes();
        // (section, offset, data) of every packet, in seq order.
        let mut chunks: Vec<(Section, u64, u64)> = vec![];
        let split = |chunks: &mut Vec<(Section, u64, u64)>, section, len: u64| {
            let mut off = 0;
            while off < len {
                let n = (len - off).min(max_data as u64);
                chunks.push((section, off, n));
                off += n;
            }
        };
        split(&mut chunks, Section::Log, LOG_TEXT.len() as u64);
        split(&mut chunks, Section::Registers, REGISTER_RECORD_LEN as u64);
        let memory_from = chunks.len();
        split(&mut chunks, Section::Memory, pattern.len);
        let packets = chunks.len();
        let mut wire = vec![0u8; packets * stride];
        let mut lens = Vec::with_capacity(packets);
        let mut payload_crcs = Vec::with_capacity(packets);
        let mut stream = StreamCrc::new();
        let mut total_bytes = 0;
        let mut data = vec![0u8; max_data];
        for (seq, &(section, off, n)) in chunks.iter().enumerate() {
            let n = n as usize;
            let offset = if seq >= memory_from { pattern.base + off } else { off };
            match section {
                Section::Log => data[..n].copy_from_slice(&LOG_TEXT[off as usize..off as usize + n]),
                Section::Registers => data[..n].copy_from_slice(&regs[off as usize..off as usize + n]),
                _ => {
                    for (i, w) in data[..n].chunks_mut(8).enumerate() {
                        let bytes = pattern.word(offset + 8 * i as u64).to_le_bytes();
                        w.copy_from_slice(&bytes[..w.len()]);
                    }
                }
            }
            let last = seq + 1 == packets;
            // The last packet asks for an ACK at once; the server acknowledges every 32
            // packets by itself, and half a window is a backstop.
            let ask = last || (seq as u32 + 1).is_multiple_of(config.window.div_ceil(2));
            let fl = data_flags_of(config.check) | if ask { flags::ACK_REQUEST } else { 0 };
            let header = Header { version: config.version(), ..Header::v1(MessageType::Data, fl, cookie, seq as u32) };
            let slot = &mut wire[seq * stride..(seq + 1) * stride];
            let msg = Message::Data(Data { section, offset, data: &data[..n] });
            let len = proto(header.emit(slot, msg.wire_len(), |p| msg.emit(p)))?;
            let payload_crc = config.check.of(&slot[HEADER_LEN..len]);
            stream.add(payload_crc);
            payload_crcs.push(payload_crc);
            lens.push(len as u16);
            total_bytes += n as u64;
        }
        Ok(Client {
            name,
            cookie,
            pattern,
            socket,
            check: config.check,
            wire,
            stride,
            lens,
            payload_crcs,
            total_bytes,
            stream_crc: stream.value(),
            cumulative: 0,
            sacked: vec![false; packets],
            next: 0,
            sent_at: vec![None; packets],
            last_progress: Instant::now(),
            rto_from: Instant::now(),
            window: config.window,
            retransmissions: 0,
            finish_sent: None,
            finished: None,
        })
    }

    fn send_message(&self, seq: u32, msg: Message<'_>) -> Result<()> {
        let mut buf = [0u8; 2048];
        let n = proto(msg.emit_packet(version_of(self.check), 0, self.cookie, seq, &mut buf))?;
        self.socket.send(&buf[..n])?;
        Ok(())
    }

    /// Sends `msg` every [`RETRY`] until a reply of `want` arrives; returns its header and
    /// payload length in `buf`.
    fn exchange(&self, msg: Message<'_>, want: MessageType, buf: &mut [u8]) -> Result<(Header, usize)> {
        self.socket.set_read_timeout(Some(RETRY))?;
        for attempt in 0..20u32 {
            self.send_message(attempt, msg)?;
            let deadline = Instant::now() + RETRY;
            while Instant::now() < deadline {
                let Ok(n) = self.socket.recv(buf) else { break };
                if let Ok((h, _)) = Header::parse(&buf[..n])
                    && h.msg_type == want
                    && h.cookie == self.cookie
                {
                    return Ok((h, n));
                }
            }
        }
        bail!("{}: no {want:?} from the server", self.name)
    }

    fn register(&mut self) -> Result<()> {
        let hello = Hello {
            mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            ip: [10, 0, 2, 15],
            page_size: 4096,
            memory_bytes: self.pattern.len,
            name: self.name.as_bytes(),
        };
        let mut buf = [0u8; 2048];
        if self.check == Check::Crc32 {
            let (h, n) = self.exchange(Message::Hello(hello), MessageType::HelloAck, &mut buf)?;
            return match proto(Message::parse_from_server(&h, &buf[HEADER_LEN..n]))? {
                Message::HelloAck(a) if a.status == HelloStatus::Registered => Ok(()),
                other => bail!("{}: HELLO answered {other:?}", self.name),
            };
        }
        let hello = HelloV2 { hello, features: features::XXH64_CHECK, key_id: [0; KEY_ID_LEN], handshake: &[] };
        let (h, n) = self.exchange(Message::HelloV2(hello), MessageType::HelloAck, &mut buf)?;
        match proto(Message::parse_from_server(&h, &buf[HEADER_LEN..n]))? {
            Message::HelloAckV2(a) if a.terms.status == HelloStatus::Registered => {
                ensure!(
                    a.terms.features & features::XXH64_CHECK != 0,
                    "{}: the server did not grant the XXH64 check ({:#x})",
                    self.name,
                    a.terms.features
                );
                Ok(())
            }
            other => bail!("{}: HELLO v2 answered {other:?}", self.name),
        }
    }

    fn announce(&mut self) -> Result<()> {
        let ranges =
            [MemoryRange { phys_start: self.pattern.base, length: self.pattern.len, virt_start: self.pattern.base }];
        let crash = Crash {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count: 1,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            page_size: 4096,
            machine: netdump_core::proto::Machine::X86_64,
            log_len: LOG_TEXT.len() as u64,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::EMPTY,
            message: b"replayer panic",
        };
        let mut buf = [0u8; 2048];
        let (h, n) = self.exchange(Message::Crash(crash), MessageType::Decision, &mut buf)?;
        match proto(Message::parse_from_server(&h, &buf[HEADER_LEN..n]))? {
            Message::Decision(d) if d.verdict == Verdict::DumpAll => Ok(()),
            other => bail!("{}: CRASH answered {other:?}", self.name),
        }
    }

    /// Reads every reply waiting; true if any arrived.
    fn read_replies(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut any = false;
        loop {
            // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes and the socket
            // is open; MSG_DONTWAIT makes the call return at once when nothing waits.
            let n =
                unsafe { libc::recv(self.socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(any),
                    _ => Err(e).with_context(|| format!("{}: receive", self.name)),
                };
            }
            any = true;
            let Ok((h, payload)) = Header::parse(&buf[..n as usize]) else { continue };
            if h.cookie != self.cookie {
                continue;
            }
            match Message::parse_from_server(&h, payload) {
                Ok(Message::Ack(ack)) => {
                    ensure!(!ack.stop, "{}: the server stopped the dump", self.name);
                    let cum = h.seq.min(self.lens.len() as u32);
                    if cum > self.cumulative {
                        self.cumulative = cum;
                        self.last_progress = Instant::now();
                    }
                    for (i, byte) in ack.bitmap.iter().enumerate() {
                        for bit in 0..8 {
                            if byte & (1 << bit) != 0 {
                                let seq = h.seq as usize + 1 + i * 8 + bit;
                                if let Some(s) = self.sacked.get_mut(seq) {
                                    *s = true;
                                }
                            }
                        }
                    }
                }
                Ok(Message::FinishAck(a)) if self.finish_sent.is_some() => self.finished = Some(a.status),
                _ => {}
            }
        }
    }

    /// Sends new packets while the window has room: consecutive datagrams of full size
    /// go as one UDP GSO buffer (`UDP_SEGMENT`: the kernel cuts it into the datagrams,
    /// which arrive at netdumpd one by one as from any client), up to [`BATCH`] buffers per
    /// `sendmmsg(2)`. Returns how many datagrams left.
    fn send_new(&mut self, out: &mut SendBuffers) -> Result<usize> {
        let total = self.lens.len() as u32;
        let limit = (self.cumulative + self.window).min(total);
        let mut sent = 0;
        while self.next < limit {
            // Group the datagrams: each group is contiguous in `wire`, full-size but for
            // its last, and within the GSO limits.
            out.groups.clear();
            let mut seq = self.next;
            while seq < limit && out.groups.len() < BATCH {
                let first = seq;
                let mut bytes = 0usize;
                while seq < limit && seq - first < GSO_SEGMENTS as u32 {
                    let len = self.lens[seq as usize] as usize;
                    bytes += len;
                    seq += 1;
                    if len != self.stride {
                        break;
                    }
                }
                out.groups.push((first, seq - first, bytes));
            }
            let n = out.groups.len();
            out.iov.clear();
            for &(first, _, bytes) in &out.groups {
                let start = first as usize * self.stride;
                out.iov
                    .push(libc::iovec { iov_base: self.wire[start..].as_ptr() as *mut libc::c_void, iov_len: bytes });
            }
            out.control.resize(n, [0; 4]);
            out.msgs.clear();
            for (k, v) in out.iov.iter_mut().enumerate() {
                // SAFETY: an all-zero msghdr is valid (no name, no control data yet).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                let control = &mut out.control[k];
                m.msg_hdr.msg_control = control.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                m.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: the control buffer (32 bytes, 8-aligned) holds CMSG_SPACE(2) bytes,
                // so CMSG_FIRSTHDR returns a header inside it with room for 2 bytes of data.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), self.stride as u16);
                }
                out.msgs.push(m);
            }
            // SAFETY: `msgs` holds `n` mmsghdrs, each pointing at one iovec into `self.wire`
            // and at its control buffer, all alive and unmoved for the call; the socket is
            // connected, so no address is needed.
            let rc = unsafe {
                libc::sendmmsg(self.socket.as_raw_fd(), out.msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(sent),
                    _ => Err(e).with_context(|| format!("{}: sendmmsg", self.name)),
                };
            }
            let now = Instant::now();
            for &(first, count, _) in &out.groups[..rc as usize] {
                for seq in first..first + count {
                    self.sent_at[seq as usize] = Some(now);
                }
                self.next = first + count;
                sent += count as usize;
            }
            if (rc as usize) < n {
                break;
            }
        }
        Ok(sent)
    }

    /// Resends what the selective ack shows missing (a later packet arrived, this one
    /// not) at most every [`RESEND_GAP`], and everything unacknowledged after [`RTO`]
    /// without progress. Returns how many went out.
    fn resend(&mut self, now: Instant, scratch: &mut [u8]) -> Result<u64> {
        let highest_sacked = (self.cumulative as usize..self.next as usize).rev().find(|&s| self.sacked[s]);
        let timed_out =
            now.saturating_duration_since(self.rto_from.max(self.last_progress)) >= RTO && self.cumulative < self.next;
        let end = if timed_out { Some(self.next as usize) } else { highest_sacked };
        let Some(end) = end else { return Ok(0) };
        let mut count = 0;
        for seq in self.cumulative as usize..end {
            if self.sacked[seq] {
                continue;
            }
            let gap = if timed_out { RTO } else { RESEND_GAP };
            if self.sent_at[seq].is_some_and(|t| now.saturating_duration_since(t) < gap) {
                continue;
            }
            let start = seq * self.stride;
            let payload = &self.wire[start + HEADER_LEN..start + self.lens[seq] as usize];
            let fl = data_flags_of(self.check) | flags::ACK_REQUEST | flags::RETRANSMIT;
            let header = Header {
                version: version_of(self.check),
                ..Header::v1(MessageType::Data, fl, self.cookie, seq as u32)
            };
            let n = proto(header.emit_with_payload_crc(scratch, payload, self.payload_crcs[seq]))?;
            match self.socket.send(&scratch[..n]) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
            self.sent_at[seq] = Some(now);
            self.retransmissions += 1;
            count += 1;
        }
        if timed_out {
            // One round of resends per RTO.
            self.rto_from = now;
        }
        Ok(count)
    }

    /// FINISH once every packet is acknowledged, repeated every [`RETRY`].
    fn finish_if_done(&mut self, scratch: &mut [u8]) -> Result<()> {
        if (self.cumulative as usize) < self.lens.len() {
            return Ok(());
        }
        if self.finish_sent.is_some_and(|t| t.elapsed() < RETRY) {
            return Ok(());
        }
        let finish = Finish {
            total_bytes: self.total_bytes,
            stream_crc: self.stream_crc,
            flags: 0,
            zero_pages: 0,
            retransmissions: self.retransmissions,
        };
        let n = proto(Message::Finish(finish).emit_packet(
            version_of(self.check),
            0,
            self.cookie,
            self.lens.len() as u32,
            scratch,
        ))?;
        self.socket.send(&scratch[..n])?;
        self.finish_sent = Some(Instant::now());
        Ok(())
    }
}

/// A protocol error as the harness reports errors.
fn proto<T>(r: Result<T, ProtoError>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// utime + stime of a process, from /proc.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit(')').next().context("bad /proc stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(ticks as f64 / 100.0)
}

/// A process's peak resident set (VmHWM), bytes, from /proc.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM in /proc status")?;
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).context("bad VmHWM")?;
    Ok(kib * 1024)
}
