//! The real client (netdump-core's host stand-ins: a UDP socket for the NIC, the system
//! clock) dumping through the fault proxy's rate limit to a real netdumpd: the bench's
//! `--part link` without QEMU, to iterate on congestion control in seconds.
//!
//! `cargo run -p netdump-qemu-harness --example link_host -- <netdumpd binary> [mbit] [loss] [MiB] [cc]`
//! prints the payload rate and the fill, like the bench.

use netdump_core::client::{ClientName, Config, WindowMode};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::memory::{MemoryError, MemoryMap, MemoryRange, MemorySource};
use netdump_core::proto::RegisterRecord;
use netdump_core::{CrashBuffers, CrashInfo, Netdump};
use netdump_qemu_harness::bench::link::{DELAY, QUEUE_PACKETS, flight_stats, payload_capacity, timeline};
use netdump_qemu_harness::host_client::HashRng;
use netdump_qemu_harness::netdumpd::Netdumpd;
use netdump_qemu_harness::proxy::{Direction, FaultProxy, Faults, ProxyConfig, QueueDepth, RateLimit};
use std::path::PathBuf;

const BASE: u64 = 0x10_0000;

struct Ram(Vec<u8>);
impl MemorySource for Ram {
    fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let at = phys.checked_sub(BASE).ok_or(MemoryError { phys })? as usize;
        out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(MemoryError { phys })?);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = PathBuf::from(args.get(1).expect("netdumpd binary"));
    let mbit: f64 = args.get(2).map_or(Ok(100.0), |a| a.parse())?;
    let loss: f64 = args.get(3).map_or(Ok(0.0), |a| a.parse())?;
    let mib: usize = args.get(4).map_or(Ok(32), |a| a.parse())?;
    let cc = args.get(5).is_none_or(|a| a != "0");
    let dir = std::env::temp_dir().join(format!("link-host-{}", std::process::id()));
    let server = Netdumpd::start(&bin, &dir.join("crash"), &["--session-timeout", "30"])?;
    let faults = Faults { loss, delay: DELAY, ..Default::default() };
    let rate = Some(RateLimit::mbit_s(mbit, QueueDepth::Packets(QUEUE_PACKETS)));
    let config =
        ProxyConfig { seed: 0x19, to_server: faults, to_client: faults, to_server_rate: rate, to_client_rate: rate };
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", server.port).parse()?, config)?;
    let mut x = 0x1234_5678_9abc_def0u64;
    let ram = Ram((0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8 | 1
        })
        .collect());
    let map = MemoryMap::new(&[MemoryRange { phys_start: BASE, length: ram.0.len() as u64, virt_start: BASE }])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let nic = UdpSocketNic::new([0x02, 0, 0, 0, 0, 0x19], 1500, format!("127.0.0.1:{}", proxy.port).parse()?)?;
    let buffers: &'static mut CrashBuffers<256> = Box::leak(Box::new(CrashBuffers::new()));
    let mut config = Config::new(guest_net(proxy.port), ClientName::new("link-host").unwrap());
    config.window = 256;
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut HashRng(7), config, buffers, map)
        .map_err(|e| anyhow::anyhow!("install: {e:?}"))?;
    if !cc {
        nd.set_window_mode(WindowMode::Fixed);
    }
    let report = nd
        .dump(&CrashInfo::panic(0, b"link host", &[]), &[RegisterRecord::default()], &ram, None)
        .map_err(|e| anyhow::anyhow!("dump: {e:?}"))?;
    let secs = report.stream_us as f64 / 1e6;
    let events = proxy.events();
    let f = flight_stats(&events);
    std::fs::write(dir.join("timeline.csv"), timeline(&events))?;
    println!(
        "{mbit} Mbit/s, loss {loss}: {:.2} MB/s, fill {:.3}, {} queue drops, {} resent, in flight {:.1} / {}, stalled {:.2} s; {}",
        report.bytes as f64 / secs / 1e6,
        report.bytes as f64 / secs / payload_capacity(mbit),
        proxy.link_stats(Direction::ToServer).map_or(0, |s| s.dropped),
        report.retransmissions,
        f.mean_in_flight,
        f.max_in_flight,
        f.stall_s,
        dir.join("timeline.csv").display()
    );
    drop(server);
    Ok(())
}
