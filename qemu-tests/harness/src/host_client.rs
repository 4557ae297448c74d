//! The real netdump-core client on the host, through its `host` stand-ins (a `PolledNic`
//! over a UDP socket that plays QEMU's user network, and the wall clock), dumping a
//! [`Pattern`] as its RAM. Loopback tests push the proxy's faults through it in
//! milliseconds; QEMU scenarios use it as a second client of the same netdumpd.

use netdump_core::client::{ClientName, Config, Timeouts, WindowMode};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::proto::{REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, DumpError, DumpReport, InstallError, Netdump};
use netdump_test_pattern::Pattern;
use std::hash::BuildHasher;
use std::net::SocketAddr;

/// The console text a host client sends as its log.
pub const HOST_LOG: &[u8] = b"host client booted\nhost client about to crash\n";

/// RAM that holds a pattern: reads anywhere in the pattern's region return its bytes.
pub struct PatternRam(pub Pattern);

impl MemorySource for PatternRam {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let p = &self.0;
        if !p.contains(phys) || !p.contains(phys + out.len().saturating_sub(1) as u64) {
            return Err(MemoryError { phys });
        }
        if phys.is_multiple_of(8) {
            // The dump reads whole pages: a word at a time.
            let done = out.len() / 8 * 8;
            for (i, w) in out[..done].chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&p.word(phys + 8 * i as u64).to_le_bytes());
            }
            for (i, b) in out[done..].iter_mut().enumerate() {
                *b = p.byte(phys + (done + i) as u64);
            }
        } else {
            for (i, b) in out.iter_mut().enumerate() {
                *b = p.byte(phys + i as u64);
            }
        }
        Ok(())
    }
}

/// One client: its name, its RAM, its bounds.
pub struct HostClient {
    pub name: String,
    pub pattern: Pattern,
    pub window: usize,
    /// How the window releases packets (congestion-controlled sliding by default).
    pub mode: WindowMode,
    pub timeouts: Timeouts,
    pub message: String,
}

/// What a run did.
pub struct HostRun {
    pub cookie: u64,
    /// The address netdumpd (or the proxy) saw this client at.
    pub source: SocketAddr,
    pub result: Result<DumpReport, DumpError>,
}

/// A cookie source: the process's random hash keys, so two runs never share a cookie.
pub struct HashRng(pub u64);

impl rand_core::RngCore for HashRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = std::collections::hash_map::RandomState::new().hash_one(self.0);
        self.0
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for b in dst {
            *b = self.next_u64() as u8;
        }
    }
}

impl HostClient {
    pub fn new(name: &str, pattern: Pattern) -> Self {
        HostClient {
            name: name.into(),
            pattern,
            window: netdump_core::client::DEFAULT_WINDOW,
            mode: WindowMode::default(),
            timeouts: Timeouts::default(),
            message: format!("host client panic ({name})"),
        }
    }

    /// Installs against `server` (netdumpd or a proxy, on loopback) and dumps.
    pub fn run(&self, server: SocketAddr) -> Result<HostRun, InstallError> {
        let nic = UdpSocketNic::new([2, 0, 0, 0, 0, 1], 1500, server).map_err(|_| InstallError::ServerSilent)?;
        let source = nic.local_addr();
        let p = self.pattern;
        let map = MemoryMap::new(&[MemoryRange { phys_start: p.base, length: p.len, virt_start: p.base }])
            .map_err(|_| InstallError::Refused)?;
        let config = Config {
            window: self.window,
            timeouts: self.timeouts,
            ..Config::new(guest_net(server.port()), ClientName::new(&self.name).ok_or(InstallError::Refused)?)
        };
        // The crash path's buffers live for the program, as a kernel's statics do.
        let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
        let mut rng = HashRng(p.seed);
        let mut nd =
            Netdump::install(nic, SystemClock::default(), &mut rng, config, buffers, map).map_err(|f| f.error)?;
        nd.set_window_mode(self.mode);
        let log = ConsoleLog::<4096>::new();
        log.write(HOST_LOG);
        let regs =
            RegisterRecord { rip: 0xffff_8000_0010_2030, rsp: p.base, flags: REGISTERS_VALID, ..Default::default() };
        let crash = CrashInfo::panic(0, self.message.as_bytes(), &[]);
        let result = nd.dump(&crash, &[regs], &PatternRam(p), Some(&log));
        Ok(HostRun { cookie: nd.cookie(), source, result })
    }
}
