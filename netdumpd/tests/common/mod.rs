//! Integration-test support: a netdumpd running in a thread on an ephemeral loopback
//! port, and a scripted client that speaks the protocol through netdump-core's `proto`.
#![allow(dead_code)]

pub mod core_reader;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netdump_core::proto::{
    Ack, AddressTable, Crash, CrashKind, Data, Decision, Finish, FinishAck, Header, Hello, HelloAck, MemoryRange,
    Message, MessageType, REGISTERS_VALID, RangeTable, RegisterRecord, Section, TextMessage, flags,
};
use netdumpd::{Server, ServerConfig, ServerStats, ShutdownHandle};

pub const PAGE: u64 = 4096;
/// The RAM a test client declares in its HELLO unless it says otherwise.
pub const DECLARED_MEMORY: u64 = 1 << 30;

/// A scratch directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("netdumpd-it-{}-{label}-{n}", std::process::id()));
        std::fs::remove_dir_all(&path).ok();
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A server on `127.0.0.1:<ephemeral>` running in a thread.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where it receives netconsole lines, when the config asked for it.
    pub syslog: Option<SocketAddr>,
    pub dir: PathBuf,
    pub stats: Arc<ServerStats>,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {})
    }

    pub fn start_with(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            dump_dir: dir.to_path_buf(),
            min_free_bytes: 0,
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let server = Server::bind(config).expect("bind");
        let addr = server.local_addr();
        let syslog = server.syslog_addr();
        let stats = server.stats();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer { addr, syslog, dir: dir.to_path_buf(), stats, stop, thread: Some(thread) }
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread panicked").expect("server failed");
        }
    }

    /// The dump directories, oldest first (not the `<client>.last` links, nor the
    /// netconsole logs' `console` directory).
    pub fn dumps(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "console")
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    /// Waits until `cond` holds on the server's counters (they are updated by the
    /// server thread, after the packets a test sent).
    pub fn wait_for(&self, what: &str, cond: impl Fn(&netdumpd::StatsSnapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let snap = self.stats.snapshot();
            if cond(&snap) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; stats: {snap:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            self.stop_now();
        } else {
            self.stop.shutdown();
        }
    }
}

/// A received packet, owned.
#[derive(Debug, Clone)]
pub struct Received {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn message(&self) -> Message<'_> {
        Message::parse(&self.header, &self.payload).expect("server sent a valid message")
    }
}

/// An ACK, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckSeen {
    pub cumulative: u32,
    pub stop: bool,
    pub bitmap: Vec<u8>,
}

/// A client speaking the protocol from its own loopback socket.
pub struct TestClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub cookie: u64,
}

impl TestClient {
    pub fn new(server: SocketAddr, cookie: u64) -> Self {
        Self::bind("127.0.0.1:0", server, cookie)
    }

    pub fn bind(local: &str, server: SocketAddr, cookie: u64) -> Self {
        let socket = UdpSocket::bind(local).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        TestClient { socket, server, cookie }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// A whole packet, as the client would send it.
    pub fn packet(
        &self,
        t: MessageType,
        hflags: u16,
        seq: u32,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 24 + payload_len];
        let h = Header::v1(t, hflags, self.cookie, seq);
        let n = h.emit(&mut buf, payload_len, fill).unwrap();
        buf.truncate(n);
        buf
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    pub fn send(&self, t: MessageType, hflags: u16, seq: u32, payload_len: usize, fill: impl FnOnce(&mut [u8])) {
        let p = self.packet(t, hflags, seq, payload_len, fill);
        self.send_raw(&p);
    }

    /// The next packet from the server, or `None` after `timeout`.
    pub fn recv_within(&self, timeout: Duration) -> Option<Received> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 9000];
        let r = self.socket.recv_from(&mut buf);
        self.socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = r.ok()?;
        assert_eq!(from, self.server, "a packet from someone else");
        let (header, payload) = Header::parse(&buf[..n]).expect("server sent a valid header");
        assert_eq!(header.cookie, self.cookie, "server answered with another cookie");
        Some(Received { header, payload: payload.to_vec() })
    }

    /// The next packet of type `t`, skipping others (ACKs of earlier data).
    pub fn recv_type(&self, t: MessageType) -> Received {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(r) = self.recv_within(Duration::from_secs(5))
                && r.header.msg_type == t
            {
                return r;
            }
        }
        panic!("no {t:?} from the server");
    }

    /// Drops everything the server sent so far.
    pub fn drain(&self) -> Vec<Received> {
        let mut v = Vec::new();
        while let Some(r) = self.recv_within(Duration::from_millis(50)) {
            v.push(r);
        }
        v
    }

    pub fn send_hello(&self, name: &str, seq: u32) {
        self.send_hello_declaring(name, seq, DECLARED_MEMORY);
    }

    /// HELLO declaring `memory_bytes` of RAM (a CRASH may announce no more).
    pub fn send_hello_declaring(&self, name: &str, seq: u32, memory_bytes: u64) {
        let hello = Hello {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            mtu: 1500,
            ip: [10, 0, 2, 15],
            page_size: PAGE as u32,
            memory_bytes,
            name: name.as_bytes(),
        };
        self.send(MessageType::Hello, 0, seq, hello.wire_len(), |p| hello.emit(p));
    }

    pub fn hello(&self, name: &str) -> HelloAck {
        self.send_hello(name, 1);
        let r = self.recv_type(MessageType::HelloAck);
        assert_eq!(r.header.seq, 1, "HELLO_ACK echoes HELLO's seq");
        match r.message() {
            Message::HelloAck(a) => a,
            m => panic!("{m:?}"),
        }
    }

    pub fn send_crash(&self, c: &Crash<'_>, seq: u32) {
        self.send(MessageType::Crash, 0, seq, c.wire_len(), |p| c.emit(p));
    }

    pub fn crash(&self, c: &Crash<'_>, seq: u32) -> Decision {
        self.send_crash(c, seq);
        let r = self.recv_type(MessageType::Decision);
        assert_eq!(r.header.seq, seq, "DECISION echoes CRASH's seq");
        match r.message() {
            Message::Decision(d) => d,
            m => panic!("{m:?}"),
        }
    }

    pub fn data_packet(&self, p: &DataPacket, hflags: u16) -> Vec<u8> {
        let d = Data { section: p.section, offset: p.offset, data: &p.data };
        self.packet(MessageType::Data, hflags, p.seq, d.wire_len(), |b| d.emit(b))
    }

    pub fn send_data(&self, p: &DataPacket, hflags: u16) {
        let bytes = self.data_packet(p, hflags);
        self.send_raw(&bytes);
    }

    /// Sends DATA with ACK_REQUEST and returns the first ACK that covers it (or tells
    /// the client to stop), skipping older ACKs still in flight.
    pub fn data_acked(&self, p: &DataPacket) -> AckSeen {
        self.send_data(p, flags::ACK_REQUEST);
        loop {
            let ack = self.next_ack();
            let view = Ack { stop: ack.stop, bitmap: &ack.bitmap };
            if ack.stop || view.covers(ack.cumulative, p.seq) {
                return ack;
            }
        }
    }

    pub fn next_ack(&self) -> AckSeen {
        let r = self.recv_type(MessageType::Ack);
        match r.message() {
            Message::Ack(a) => AckSeen { cumulative: r.header.seq, stop: a.stop, bitmap: a.bitmap.to_vec() },
            m => panic!("{m:?}"),
        }
    }

    pub fn send_finish(&self, packets: u32, f: &Finish) {
        self.send(MessageType::Finish, 0, packets, f.wire_len(), |p| f.emit(p));
    }

    pub fn finish(&self, packets: u32, f: &Finish) -> FinishAck {
        self.send_finish(packets, f);
        let r = self.recv_type(MessageType::FinishAck);
        assert_eq!(r.header.seq, packets, "FINISH_ACK echoes FINISH's seq");
        match r.message() {
            Message::FinishAck(a) => a,
            m => panic!("{m:?}"),
        }
    }

    pub fn abort(&self, code: u16, text: &str) {
        let m = TextMessage { code, text: text.as_bytes() };
        self.send(MessageType::Abort, 0, 0, m.wire_len(), |p| m.emit(p));
    }
}

/// One DATA packet of a planned stream.
#[derive(Debug, Clone)]
pub struct DataPacket {
    pub seq: u32,
    pub section: Section,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl DataPacket {
    /// The DATA payload (sub-header + data): what the stream CRC covers.
    pub fn payload(&self) -> Vec<u8> {
        let d = Data { section: self.section, offset: self.offset, data: &self.data };
        let mut p = vec![0; d.wire_len()];
        d.emit(&mut p);
        p
    }
}

/// The 8-byte word at physical address `a` of the test machine's memory: derived from
/// the address, so every misplaced byte shows.
pub fn pattern_word(a: u64) -> u64 {
    (a ^ 0x5a5a_0000_0000_0000).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Pages whose index is a multiple of this are all zero (and never sent).
pub const ZERO_EVERY: u64 = 5;

pub fn page_contents(phys: u64) -> Vec<u8> {
    if (phys / PAGE).is_multiple_of(ZERO_EVERY) {
        return vec![0; PAGE as usize];
    }
    (0..PAGE / 8).flat_map(|i| pattern_word(phys + i * 8).to_le_bytes()).collect()
}

/// A crashed machine: its memory map, registers, log and the stream it sends.
pub struct Machine {
    pub name: String,
    pub ranges: Vec<MemoryRange>,
    pub cpus: u16,
    pub log: Vec<u8>,
    pub extra: Vec<u8>,
    pub message: String,
}

impl Machine {
    pub fn small(name: &str) -> Self {
        Machine {
            name: name.into(),
            ranges: vec![
                MemoryRange { phys_start: 0x1000, length: 0x9000, virt_start: 0xffff_8000_0000_1000 },
                MemoryRange { phys_start: 0x100000, length: 0x18000, virt_start: 0xffff_8000_0010_0000 },
            ],
            cpus: 2,
            log: (0..3000).map(|i| b"console line\n"[i % 13]).collect(),
            extra: b"task list: idle, init\n".to_vec(),
            message: "panicked at src/main.rs:42:5: test crash".into(),
        }
    }

    pub fn crash(&self) -> Crash<'_> {
        Crash {
            kind: CrashKind::Exception,
            vector: 14,
            cpu_count: self.cpus,
            crashing_cpu: 1,
            error_code: 2,
            fault_address: 0xdead_b000,
            page_size: PAGE as u32,
            machine: netdump_core::proto::Machine::X86_64,
            log_len: self.log.len() as u64,
            ranges: RangeTable::Ranges(&self.ranges),
            frames: AddressTable::Addresses(&[0x10_2345, 0x10_1000]),
            message: self.message.as_bytes(),
        }
    }

    pub fn registers(cpu: u16) -> RegisterRecord {
        let c = u64::from(cpu);
        RegisterRecord {
            rax: 0xa0 + c,
            rbx: 0xb0 + c,
            rsp: 0xffff_8000_0011_0000 - 0x1000 * c,
            rbp: 0xffff_8000_0011_0100,
            rip: 0xffff_ffff_8020_0000 + c,
            rflags: 0x246,
            cs: 8,
            ss: 0x10,
            cr2: 0xdead_b000,
            cpu: c,
            flags: REGISTERS_VALID,
            ..Default::default()
        }
    }

    /// The DATA stream, in `seq` order: log, registers, non-zero memory in chunks of
    /// `chunk` bytes (so pages straddle packets), extra.
    pub fn stream(&self, chunk: usize) -> Vec<DataPacket> {
        let mut out = Vec::new();
        let mut push = |section, offset, data: &[u8]| {
            let seq = out.len() as u32;
            out.push(DataPacket { seq, section, offset, data: data.to_vec() });
        };
        for (i, part) in self.log.chunks(chunk).enumerate() {
            push(Section::Log, (i * chunk) as u64, part);
        }
        let regs: Vec<u8> = (0..self.cpus).flat_map(|c| Self::registers(c).to_bytes()).collect();
        for (i, part) in regs.chunks(chunk).enumerate() {
            push(Section::Registers, (i * chunk) as u64, part);
        }
        for r in &self.ranges {
            // Runs of non-zero pages, sent in `chunk`-byte pieces that never cross the range.
            let mut page = r.phys_start;
            while page < r.phys_end() {
                if page_contents(page).iter().all(|b| *b == 0) {
                    page += PAGE;
                    continue;
                }
                let start = page;
                let mut run = Vec::new();
                while page < r.phys_end() && page_contents(page).iter().any(|b| *b != 0) {
                    run.extend(page_contents(page));
                    page += PAGE;
                }
                for (i, part) in run.chunks(chunk).enumerate() {
                    push(Section::Memory, start + (i * chunk) as u64, part);
                }
            }
        }
        for (i, part) in self.extra.chunks(chunk).enumerate() {
            push(Section::Extra, (i * chunk) as u64, part);
        }
        out
    }

    pub fn zero_pages(&self) -> u64 {
        self.ranges
            .iter()
            .flat_map(|r| (r.phys_start..r.phys_end()).step_by(PAGE as usize))
            .filter(|p| (p / PAGE).is_multiple_of(ZERO_EVERY))
            .count() as u64
    }
}

/// The FINISH for a stream.
pub fn finish_for(stream: &[DataPacket], zero_pages: u64) -> Finish {
    let payloads: Vec<Vec<u8>> = stream.iter().map(|p| p.payload()).collect();
    let bytes = stream.iter().map(|p| p.data.len() as u64).sum();
    let stream_crc = netdump_core::proto::StreamCrc::of_payloads(payloads.iter().map(|p| &p[..]));
    Finish { total_bytes: bytes, stream_crc, flags: 0, zero_pages, retransmissions: 0 }
}

pub fn read_info(dump: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dump.join("info.json")).unwrap()).unwrap()
}

/// A deterministic shuffle (xorshift), so failures reproduce.
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Cookies from a counter, for the real client: the tests need determinism, not secrecy.
pub struct CounterRng(pub u64);

impl rand_core::RngCore for CounterRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            *b = self.next_u64() as u8;
        }
    }
}

/// The `netdumpd` binary on a free loopback port, with a config file; its log in a file.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(dir, config, port)
    }

    /// [`start`](Self::start) on a given port (a restart takes the same one).
    pub fn start_on(dir: &Path, config: &str, port: u16) -> Daemon {
        let config_path = dir.join("netdumpd.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("netdumpd.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_netdumpd"))
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let daemon = Daemon { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UdpSocket::bind(daemon.addr).is_ok() {
            assert!(Instant::now() < deadline, "netdumpd did not bind: {}", daemon.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn proc_count(&self, what: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/{what}", self.child.id())).unwrap().count()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the host clients' test RAM sits in physical (and virtual) memory.
pub const RAM_BASE: u64 = 0x10_0000;

/// A host client's "RAM": the bytes at [`RAM_BASE`]; each test fills it with its own
/// pattern (an inherent `new` in the test file).
pub struct Ram(pub Vec<u8>);

impl netdump_core::memory::MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), netdump_core::memory::MemoryError> {
        use netdump_core::memory::MemoryError;
        let at = phys.checked_sub(RAM_BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}
