//! What the harness asks of a run, from the kernel command line:
//!
//! `scenario=dump|takeover|deferred|no-server|nested-panic|exception|smp server_port=N [server_ip=A.B.C.D]
//!  [name=N] [pattern_base=ADDR pattern_len=BYTES seed=N zero_every=N] [window=N] [batch=1] [cc=0]
//!  [smp_case=bsp-panic|ap-panic|double-panic|missing-cpu stop_target=all|each stop_ms=N]
//!  [image=pattern|realistic] [filter=<makedumpfile -d level, 0..=31>] [compress=on|off] [server_key=<64 hex digits>]
//!  [fallbacks=A.B.C.D:PORT,…] [hello_attempts=N hello_retry_ms=N announce_ms=N silence_ms=N finish_ms=N]`

use netdump_core::client::{DEFAULT_WINDOW, Timeouts};
use netdump_core::crash_cell::CrashCell;
use netdump_core::memory::ExcludeSet;
use netdump_core::net::{FRAME_OVERHEAD, Ipv4Address, UdpChecksum, UdpFlow, emit_udp_with};
use netdump_core::nic::PolledNic;
use netdump_qemu_runtime::{Cmdline, println};
use netdump_test_pattern::Pattern;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Install, panic, dump.
    Dump,
    /// Ordinary UDP traffic through the same NIC right up to a panic raised mid-send.
    Takeover,
    /// netdump prepared, not installed: the kernel's own driver instance owns the NIC and
    /// sends ordinary traffic up to the panic; netdump touches the device only then.
    Deferred,
    /// Install against a port where nothing listens: install must fail within its bound.
    NoServer,
    /// A panic inside the dump path (while reading memory).
    NestedPanic,
    /// A fatal CPU exception (`fault=`, see `faults.rs`).
    Exception,
    /// No dump: send `frames=` unacknowledged full-size datagrams (the bench's raw limit).
    RawTx,
    /// No dump: time each step of a DATA packet's way out (the bench's cost table).
    Costs,
    /// Four CPUs, one or two of which crash (`smp_case=`, see `smp.rs`).
    Smp(crate::smp::Case),
}

#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub kind: Kind,
    pub name: &'static str,
    pub client_ip: Ipv4Address,
    pub server_ip: Ipv4Address,
    pub server_port: u16,
    pub pattern: Pattern,
    pub window: usize,
    /// Release packets in batches of `window` (FreeBSD's discipline; `batch=1`).
    pub batch: bool,
    /// Keep `window` packets in flight without congestion control (`cc=0`), to compare.
    pub fixed_window: bool,
    pub timeouts: Timeouts,
    /// Physical page whose read panics (nested-panic scenario).
    pub panic_while_reading: Option<u64>,
    /// Datagrams to send in the raw-tx mode, and the host port they go to.
    pub frames: u32,
    pub raw_port: u16,
    /// The dump server's public key (`server_key=`, 64 hex digits, as `netdumpd keygen`
    /// prints it): the dump is encrypted.
    pub server_key: Option<netdump_core::crypto::PublicKey>,
    /// The page classes the dump leaves out (`filter=`, makedumpfile's `-d` level).
    pub exclude: ExcludeSet,
    /// Send memory as LZ4 blocks when the server grants it (`compress=off`: never).
    pub compress: bool,
    /// The servers to fail over to after the first (`fallbacks=A.B.C.D:PORT,…`, at most
    /// three), in order.
    pub fallbacks: [Option<netdump_core::client::Server>; netdump_core::client::MAX_SERVERS - 1],
}

/// `A.B.C.D:PORT,…`: at most three servers.
fn fallbacks(
    list: Option<&str>,
) -> Result<[Option<netdump_core::client::Server>; netdump_core::client::MAX_SERVERS - 1], &'static str> {
    let mut out = [None; netdump_core::client::MAX_SERVERS - 1];
    let Some(list) = list else { return Ok(out) };
    let mut entries = list.split(',');
    for slot in out.iter_mut() {
        let Some(entry) = entries.next() else { break };
        let (addr, port) = entry.split_once(':').ok_or("fallbacks wants A.B.C.D:PORT,…")?;
        let port = port.parse().map_err(|_| "bad fallback port")?;
        *slot = Some(netdump_core::client::Server::new(ip(addr).ok_or("bad fallback address")?, port));
    }
    if entries.next().is_some() {
        return Err("at most three fallbacks");
    }
    Ok(out)
}

fn ip(s: &str) -> Option<Ipv4Address> {
    let mut o = [0u8; 4];
    let mut parts = s.split('.');
    for b in o.iter_mut() {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Address::from(o))
}

impl Scenario {
    pub fn parse(args: &Cmdline<'static>) -> Result<Self, &'static str> {
        let kind = match args.get("scenario").unwrap_or("dump") {
            "dump" => Kind::Dump,
            "takeover" => Kind::Takeover,
            "deferred" => Kind::Deferred,
            "no-server" => Kind::NoServer,
            "nested-panic" => Kind::NestedPanic,
            "exception" => Kind::Exception,
            "raw-tx" => Kind::RawTx,
            "costs" => Kind::Costs,
            "smp" => Kind::Smp(crate::smp::Case::parse(args)?),
            _ => return Err("unknown scenario"),
        };
        let server_port = args.get_u64("server_port").ok_or("server_port= is required")? as u16;
        let server_ip = match args.get("server_ip") {
            Some(s) => ip(s).ok_or("bad server_ip")?,
            None => Ipv4Address::new(10, 0, 2, 2),
        };
        let ms = |key, default: u64| args.get_u64(key).unwrap_or(default) * 1000;
        let defaults = Timeouts::default();
        let timeouts = Timeouts {
            hello_attempts: args.get_u64("hello_attempts").map_or(defaults.hello_attempts, |v| v as u32),
            hello_retry_us: ms("hello_retry_ms", defaults.hello_retry_us / 1000),
            announce_timeout_us: ms("announce_ms", defaults.announce_timeout_us / 1000),
            silence_timeout_us: ms("silence_ms", defaults.silence_timeout_us / 1000),
            finish_timeout_us: ms("finish_ms", defaults.finish_timeout_us / 1000),
            ..defaults
        };
        let pattern = Pattern {
            base: args.get_u64("pattern_base").unwrap_or(32 << 20),
            len: args.get_u64("pattern_len").unwrap_or(16 << 20),
            seed: args.get_u64("seed").unwrap_or(0x5eed),
            zero_every: args.get_u64("zero_every").unwrap_or(7),
        };
        if !pattern.base.is_multiple_of(4096) || !pattern.len.is_multiple_of(4096) || pattern.len == 0 {
            return Err("pattern must be whole pages");
        }
        Ok(Scenario {
            kind,
            name: args.get("name").unwrap_or("qemu-test"),
            client_ip: Ipv4Address::new(10, 0, 2, 15),
            server_ip,
            server_port,
            pattern,
            window: args.get_u64("window").map_or(DEFAULT_WINDOW, |w| w as usize),
            batch: args.get_u64("batch") == Some(1),
            fixed_window: args.get_u64("cc") == Some(0),
            timeouts,
            panic_while_reading: (kind == Kind::NestedPanic).then_some(pattern.base + 4096),
            frames: args.get_u64("frames").unwrap_or(20_000) as u32,
            raw_port: args.get_u64("raw_port").map_or(server_port.wrapping_add(2), |p| p as u16),
            exclude: match args.get("filter") {
                Some(_) => args
                    .get_u64("filter")
                    .and_then(|l| u32::try_from(l).ok())
                    .and_then(ExcludeSet::from_dump_level)
                    .ok_or("filter wants a level 0..=31")?,
                None => ExcludeSet::NONE,
            },
            server_key: match args.get("server_key") {
                Some(hex) => Some(netdump_core::crypto::PublicKey::from_hex(hex).map_err(|_| "bad server_key")?),
                None => None,
            },
            compress: match args.get("compress").unwrap_or("on") {
                "on" => true,
                "off" => false,
                _ => return Err("compress wants on or off"),
            },
            fallbacks: fallbacks(args.get("fallbacks"))?,
        })
    }
}

/// Floods UDP to the server's port + 1 through the installed NIC, as an OS network
/// stack would, and panics in the middle of a burst — inside a normal-time use of the
/// cell, with transmit descriptors still owned by the device and received frames
/// unconsumed. The dump must take the NIC over from that state.
pub fn traffic_until_panic<N: PolledNic, C: netdump_core::clock::Clock>(
    cell: &CrashCell<netdump_core::Netdump<N, C>>,
    s: &Scenario,
) -> ! {
    let port = s.server_port.wrapping_add(1);
    cell.try_with(|nd| {
        let Some(server_mac) = nd.link().peer_mac() else { panic!("no server MAC") };
        let flow = UdpFlow {
            src_mac: netdump_core::net::EthernetAddress(nd.nic().mac_address()),
            dst_mac: server_mac,
            src_ip: s.client_ip,
            dst_ip: s.server_ip,
            src_port: 7777,
            dst_port: port,
        };
        let payload = 1024;
        let checksum = UdpChecksum::of(nd.nic());
        let mut sent = 0u32;
        for i in 0u32.. {
            let r = nd.nic().transmit(FRAME_OVERHEAD + payload, &mut |f| {
                emit_udp_with(f, &flow, payload, checksum, |p| p.fill(i as u8));
            });
            match r {
                Ok(()) => sent += 1,
                Err(_) => {
                    nd.nic().poll_transmit();
                }
            }
            if sent == 3000 {
                println!("ordinary traffic: {sent} frames sent to port {port}; panicking mid-burst");
                crate::netdump_test_crash_site(s.pattern.seed);
            }
        }
        unreachable!()
    });
    panic!("netdump was busy or seized before the traffic started")
}

/// The kernel's own network driver at work, netdump only prepared: resolves the gateway
/// with its own ARP, floods UDP to the server's port + 1 through its own instance of the
/// driver and panics mid-burst, with its transmit descriptors still owned by the device.
/// netdump's idle instance must take the device over from that at the crash.
pub fn own_traffic_until_panic(
    mut nic: crate::nic::Nic,
    net: netdump_core::net::NetConfig,
    clock: &dyn netdump_core::clock::Clock,
    s: &Scenario,
) -> ! {
    let port = s.server_port.wrapping_add(1);
    let mut link = netdump_core::net::UdpLink::new(net, nic.mac_address());
    let t = s.timeouts;
    let server_mac = match link.resolve(&mut nic, clock, t.arp_retry_us, t.arp_attempts) {
        Ok(mac) => mac,
        Err(e) => panic!("the kernel's own ARP failed: {e:?}"),
    };
    let flow = UdpFlow {
        src_mac: netdump_core::net::EthernetAddress(nic.mac_address()),
        dst_mac: server_mac,
        src_ip: s.client_ip,
        dst_ip: s.server_ip,
        src_port: 7778,
        dst_port: port,
    };
    let payload = 1024;
    let checksum = UdpChecksum::of(&nic);
    let mut sent = 0u32;
    for i in 0u32.. {
        let r = nic.transmit(FRAME_OVERHEAD + payload, &mut |f| {
            emit_udp_with(f, &flow, payload, checksum, |p| p.fill(i as u8));
        });
        match r {
            Ok(()) => sent += 1,
            Err(_) => {
                nic.poll_transmit();
            }
        }
        if sent == 3000 {
            println!(
                "ordinary traffic: {sent} frames sent to port {port} by the kernel's own driver; netdump made {} device calls; panicking mid-burst",
                crate::nic::device_calls()
            );
            crate::netdump_test_crash_site(s.pattern.seed);
        }
    }
    unreachable!()
}
