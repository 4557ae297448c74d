//! The NIC conformance kernel (`qemu-tests/nic-conformance`), checked from the host: the
//! kernel runs every check of the `PolledNic` contract and exits with success, and every
//! tagged datagram of its counted phases must arrive here.
//!
//! Datagram tag (from the kernel's `frames.rs`): `"NDNC"`, phase (u8), 3 bytes, then
//! sequence number and phase total as big-endian u32.

use anyhow::{Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Listener::finish`] waits for datagrams still on their way once the kernel
/// has exited: long, since only a lost datagram makes it wait so long.
const DRAIN_PATIENCE: Duration = Duration::from_secs(30);

/// Phases whose datagrams must all arrive.
pub const COUNTED_PHASES: [(u8, &str); 5] =
    [(1, "flood"), (2, "after takeover"), (3, "between resets"), (4, "largest frame"), (5, "deferred bursts")];

#[derive(Default)]
struct Seen {
    per_phase: BTreeMap<u8, BTreeSet<u32>>,
    totals: BTreeMap<u8, u32>,
}

/// Collects tagged datagrams on a free loopback port.
pub struct Listener {
    pub port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Every counted phase arrived whole.
    fn complete(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        COUNTED_PHASES.iter().all(|(phase, _)| {
            seen.totals
                .get(phase)
                .is_some_and(|&total| seen.per_phase.get(phase).map_or(0, |s| s.len()) == total as usize)
        })
    }

    pub fn start() -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // The kernel floods faster than a default socket buffer absorbs.
        socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = socket.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, t) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else { continue };
                let d = &buf[..n];
                if n >= 16 && &d[..4] == b"NDNC" {
                    let seq = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                    let total = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
                    let mut seen = t.lock().unwrap_or_else(|e| e.into_inner());
                    seen.per_phase.entry(d[4]).or_default().insert(seq);
                    seen.totals.insert(d[4], total);
                }
            }
        });
        Ok(Listener { port, stop, seen, thread: Some(thread) })
    }

    /// Once the kernel is done: waits until every counted phase has arrived whole (the
    /// datagrams still in the host stack are read meanwhile; only a lost one makes this
    /// wait out [`DRAIN_PATIENCE`]), stops listening and checks. Returns a summary.
    pub fn finish(mut self) -> Result<String> {
        let deadline = Instant::now() + DRAIN_PATIENCE;
        while !self.complete() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = vec![];
        for (phase, name) in COUNTED_PHASES {
            let Some(&total) = seen.totals.get(&phase) else { bail!("no datagram of phase {phase} ({name}) arrived") };
            let got = seen.per_phase.get(&phase).map_or(0, |s| s.len() as u32);
            if got != total {
                let missing: Vec<u32> = (0..total).filter(|i| !seen.per_phase[&phase].contains(i)).take(10).collect();
                bail!("phase {phase} ({name}): {got} of {total} datagrams arrived; first missing {missing:?}");
            }
            summary.push(format!("{name} {total}/{total}"));
        }
        Ok(summary.join(", "))
    }
}
