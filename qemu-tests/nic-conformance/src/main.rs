//! The NIC conformance kernel: runs whichever supported NIC QEMU gives it (e1000, or
//! virtio-net through its legacy or modern interface) through the `PolledNic` contract on
//! QEMU's user network (`-netdev user`), printing one `CHECK <name>: PASS|FAIL` line per
//! check and exiting through isa-debug-exit (33 = every check passed).
//!
//! Command line: `port=<udp port>` (required; UDP frames go to 10.0.2.2:<port>, i.e. the
//! host's 127.0.0.1:<port>) and `frames=<n>` (default 5000).
//!
//! Every UDP payload starts with a 16-byte header: magic `NDNC` ([`TAG`]), phase (1 flood,
//! 2 after the takeover reset, 3 between repeated resets, 4 the largest frame, 5 deferred
//! bursts (`transmit_deferred` + one `flush_transmit` per burst), 8 frames in
//! flight at a repeated reset, 9 frames queued before the takeover), 3 zero bytes, the sequence number within the phase and the
//! number of frames the phase sends (u32 big-endian each; 0 when not known up front). A host
//! listener counts them (`qemu-tests/harness/src/conformance.rs`). Phases 8 and 9 are not
//! counted: a reset may discard frames the device has not sent yet (virtio devices send
//! asynchronously), so the counted frames are reclaimed before any reset.
//!
//! The checks are written against [`PolledNic`] plus the few hooks of [`DeviceUnderTest`];
//! `nic.rs` brings the NIC up through `netdump-qemu-nics`, whose `Port` of each NIC
//! configuration has the hooks: another NIC needs nothing here (docs/PORTING.md, section 4).
#![no_std]
#![no_main]
// Check outcomes are fixed-size text on the stack (no allocator); their size is fine here.
#![allow(clippy::result_large_err)]

/// A check's outcome text, formatted without an allocator.
pub use netdump_qemu_nics::Note;

macro_rules! note {
    ($($arg:tt)*) => {{
        let mut n = $crate::Note::new();
        let _ = core::fmt::Write::write_fmt(&mut n, format_args!($($arg)*));
        n
    }};
}

mod frames;
mod nic;

use netdump_core::arch::x86_64::TscClock;
use netdump_core::clock::{Clock, Deadline};
use netdump_core::nic::{ETHERNET_HEADER_LEN, NicError, PolledNic};
use netdump_qemu_runtime::{BootInfo, EXIT_FAILURE, EXIT_SUCCESS, println, qemu_exit};
use smoltcp::wire::{EthernetAddress, Ipv4Address};

use frames::{ARP_FRAME_LEN, ICMP_ECHO_OVERHEAD, MAX_UDP_PAYLOAD, UdpChecksum, UdpFlow, emit_udp_with, udp_frame_len};

/// What the checks need beyond [`PolledNic`]; each driver's hook module implements it.
pub trait DeviceUnderTest: PolledNic {
    /// What the NIC is, for the report.
    fn kind(&self) -> &'static str;
    /// Whether the device may master the bus (do DMA).
    fn bus_master_enabled(&mut self) -> bool;
    fn link_up(&mut self) -> bool;
    /// Frames handed to the device and not yet reclaimed.
    fn tx_in_flight(&self) -> usize;
    /// Frames the transmit ring holds at once.
    fn tx_capacity(&self) -> usize;
    /// Receive buffers the device may fill at once.
    fn rx_capacity(&self) -> usize;
    /// Leaves the device as a dying OS driver might: interrupts unmasked, filters opened,
    /// ring registers moved, DMA off.
    fn leave_dirty(&mut self);
    /// Checks that `reset` undid everything `leave_dirty` did.
    fn check_clean(&mut self) -> Result<(), Note>;
}

const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const SOURCE_PORT: u16 = 40_000;
/// Payload header of every UDP frame sent (see the crate documentation).
const TAG: &[u8; 4] = b"NDNC";
const TAG_LEN: usize = 16;
/// UDP payload sizes the flood cycles through: a frame the driver must pad (58 bytes),
/// mid sizes, and the largest frame (1514 bytes).
const PAYLOAD_SIZES: [usize; 4] = [TAG_LEN, 300, 1000, MAX_UDP_PAYLOAD];
/// ARP: retransmit every 200 ms, give up after 5 s (QEMU's e1000 holds received frames
/// back for up to a second after every RCTL write).
const ARP_RETRY_US: u64 = 200_000;
const ARP_TIMEOUT_US: u64 = 5_000_000;
/// How long a full transmit ring may take to free a descriptor.
const RECLAIM_TIMEOUT_US: u64 = 100_000;
/// ICMP echo to the gateway (QEMU's user network answers it itself, at the same size):
/// identifier of our requests, and how long to wait for each reply before asking again.
const ECHO_IDENT: u16 = 0x4E44;
const ECHO_RETRY_US: u64 = 200_000;
const ECHO_ATTEMPTS: u32 = 3;
/// The shortest frame on an Ethernet wire (without FCS).
const MIN_FRAME_LEN: usize = 60;

#[derive(Default)]
struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Result<Note, Note>) -> bool {
        match outcome {
            Ok(note) => {
                self.passed += 1;
                println!("CHECK {name}: PASS {}", note.as_str());
                true
            }
            Err(note) => {
                self.failed += 1;
                println!("CHECK {name}: FAIL {}", note.as_str());
                false
            }
        }
    }

    fn finish(&self) -> ! {
        if self.failed == 0 {
            println!("RESULT: PASS ({} checks)", self.passed);
            qemu_exit(EXIT_SUCCESS)
        } else {
            println!("RESULT: FAIL ({} of {} checks failed)", self.failed, self.passed + self.failed);
            qemu_exit(EXIT_FAILURE)
        }
    }
}

netdump_qemu_runtime::entry!(kernel_main);

fn kernel_main(boot: &'static BootInfo) -> ! {
    println!("netdump NIC conformance: {}", boot.cmdline);
    let args = boot.args();
    let Some(port) = args.get_u64("port").and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0) else {
        println!("usage: -append \"port=<udp port> [frames=<n>]\"");
        qemu_exit(EXIT_FAILURE)
    };
    let flood_frames = args.get_u64("frames").map_or(5000, |n| n as u32);
    let clock = TscClock::calibrate();
    println!(
        "clock: {} TSC ticks/us (calibrated: {}, from {:?})",
        clock.ticks_per_us(),
        clock.calibrated,
        clock.source
    );
    let mut report = Report::default();

    let mut nic = match nic::bring_up(args) {
        Ok(up) => up,
        Err(e) => {
            report.check("pci-discovery", Err(note!("{e}")));
            report.finish()
        }
    };
    let mac = EthernetAddress(nic.mac_address());
    report.check("pci-discovery", Ok(note!("{}: {}, MAC {mac}", nic.kind(), nic.found)));

    let started = clock.now_us();
    let reset = nic.reset();
    let took = clock.now_us() - started;
    let bus_master = nic.bus_master_enabled();
    let link = nic.link_up();
    let ok = report.check(
        "reset",
        match reset {
            Ok(()) if bus_master && link => Ok(note!("in {took} us; bus mastering on, link up")),
            Ok(()) => Err(note!("returned Ok but bus master {bus_master}, link {link}")),
            Err(e) => Err(note!("{e}")),
        },
    );
    if !ok {
        report.finish();
    }

    let gateway = match arp_round_trip(&mut nic, &clock, mac) {
        Ok(reply) => {
            report.check(
                "arp-round-trip",
                Ok(note!(
                    "{GATEWAY_IP} is at {} ({} us after the first request, {} requests, {} other frames)",
                    reply.reply,
                    reply.after_us,
                    reply.requests,
                    reply.other_frames
                )),
            );
            reply.reply
        }
        Err(e) => {
            report.check("arp-round-trip", Err(e));
            report.finish()
        }
    };

    let flow = UdpFlow {
        src_mac: mac,
        dst_mac: gateway,
        src_ip: GUEST_IP,
        dst_ip: GATEWAY_IP,
        src_port: SOURCE_PORT,
        dst_port: port,
    };
    report.check("udp-flood", udp_flood(&mut nic, &clock, &flow, flood_frames));
    report.check("deferred-bursts", deferred_bursts(&mut nic, &clock, &flow, flood_frames / 2));
    report.check("rx-frame-sizes", rx_frame_sizes(&mut nic, &clock, mac, gateway));
    report.check("frame-length-limits", frame_length_limits(&mut nic, &clock, &flow));
    report.check("takeover-reset", takeover(&mut nic, &clock, &flow, gateway));
    report.check("repeated-reset", repeated_reset(&mut nic, &clock, &flow, gateway));
    report.finish()
}

/// What a request/reply exchange saw.
struct Exchange<T> {
    reply: T,
    /// From the first request to the reply.
    after_us: u64,
    requests: u32,
    /// Frames received meanwhile that were not the reply.
    other_frames: u32,
}

/// Sends a `len`-byte request built by `request` every `retry_us`, at most `attempts`
/// times (waiting, bounded, for a free transmit buffer), until `reply` recognises a
/// received frame. `what` names the request in the failure note.
fn exchange<T>(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    what: &str,
    (retry_us, attempts): (u64, u32),
    len: usize,
    request: &mut dyn FnMut(&mut [u8]),
    reply: &mut dyn FnMut(&[u8]) -> Option<T>,
) -> Result<Exchange<T>, Note> {
    let started = clock.now_us();
    let mut other_frames = 0;
    for requests in 1..=attempts {
        loop {
            match nic.transmit(len, request) {
                Ok(()) => break,
                Err(NicError::RingFull) => {
                    reclaim_some(nic, clock)?;
                }
                Err(e) => return Err(note!("{what} not sent: {e}")),
            }
        }
        let retry = Deadline::after(clock, retry_us);
        while !retry.passed(clock) {
            nic.poll_transmit();
            let mut answer = None;
            let polled =
                nic.poll_receive(&mut |frame| answer = reply(frame)).map_err(|e| note!("poll_receive: {e}"))?;
            match answer {
                Some(reply) => {
                    return Ok(Exchange { reply, after_us: clock.now_us() - started, requests, other_frames });
                }
                None if polled => other_frames += 1,
                None => {}
            }
        }
    }
    Err(note!(
        "no reply to {what} in {} ms ({attempts} requests, {other_frames} other frames)",
        (clock.now_us() - started) / 1000
    ))
}

/// Asks who has 10.0.2.2 until the reply comes or the timeout passes.
fn arp_round_trip(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    mac: EthernetAddress,
) -> Result<Exchange<EthernetAddress>, Note> {
    exchange(
        nic,
        clock,
        "ARP request",
        (ARP_RETRY_US, (ARP_TIMEOUT_US / ARP_RETRY_US) as u32),
        ARP_FRAME_LEN,
        &mut |frame| frames::arp_request(frame, mac, GUEST_IP, GATEWAY_IP),
        &mut |frame| frames::arp_reply_from(frame, mac, GUEST_IP, GATEWAY_IP),
    )
}

/// Builds a tagged UDP frame of `payload_len` bytes (≥ TAG_LEN).
fn send_tagged(
    nic: &mut impl DeviceUnderTest,
    flow: &UdpFlow,
    payload_len: usize,
    phase: u8,
    seq: u32,
    total: u32,
) -> Result<(), NicError> {
    let checksum = UdpChecksum::of(&*nic);
    nic.transmit(udp_frame_len(payload_len), &mut |frame| {
        tagged_payload(frame, flow, payload_len, checksum, phase, seq, total);
    })
}

/// Builds the tagged datagram `seq` of `phase` in `frame`.
fn tagged_payload(
    frame: &mut [u8],
    flow: &UdpFlow,
    payload_len: usize,
    checksum: UdpChecksum,
    phase: u8,
    seq: u32,
    total: u32,
) {
    emit_udp_with(frame, flow, payload_len, checksum, |payload| {
        payload[..4].copy_from_slice(TAG);
        payload[4] = phase;
        payload[5..8].fill(0);
        payload[8..12].copy_from_slice(&seq.to_be_bytes());
        payload[12..16].copy_from_slice(&total.to_be_bytes());
        for (i, byte) in payload[TAG_LEN..].iter_mut().enumerate() {
            *byte = (seq as usize + i) as u8;
        }
    });
}

/// Frames of one deferred burst: not a divisor of any ring size here, so bursts straddle
/// the ring's wrap.
const BURST: u32 = 7;

/// Sends `total` frames of phase 5 with `transmit_deferred`, `BURST` at a time, each burst
/// followed by one `flush_transmit` (and a flush before waiting on a full ring, as the
/// contract asks): the send loop's way of ringing the doorbell once per burst. Every frame
/// must reach the host (counted there), and a flush with nothing queued must be harmless.
fn deferred_bursts(nic: &mut impl DeviceUnderTest, clock: &TscClock, flow: &UdpFlow, total: u32) -> Result<Note, Note> {
    let checksum = UdpChecksum::of(&*nic);
    let mut ring_full = 0;
    nic.flush_transmit();
    for seq in 0..total {
        let payload_len = PAYLOAD_SIZES[seq as usize % PAYLOAD_SIZES.len()];
        loop {
            let sent = nic.transmit_deferred(udp_frame_len(payload_len), &mut |frame| {
                tagged_payload(frame, flow, payload_len, checksum, 5, seq, total);
            });
            match sent {
                Ok(()) => break,
                Err(NicError::RingFull) => {
                    ring_full += 1;
                    nic.flush_transmit();
                    reclaim_some(nic, clock)?;
                }
                Err(e) => return Err(note!("deferred frame {seq}: {e}")),
            }
        }
        if seq % BURST == BURST - 1 {
            nic.flush_transmit();
        }
        if seq % 64 == 0 {
            let _ = nic.poll_receive(&mut |_| {});
        }
    }
    nic.flush_transmit();
    nic.flush_transmit();
    drain_transmit(nic, clock)?;
    if ring_full == 0 {
        return Err(note!("{total} deferred frames sent but the ring never reported RingFull"));
    }
    Ok(note!(
        "{total} frames in bursts of {BURST}, one doorbell each; {ring_full} RingFull recovered by flush and poll_transmit"
    ))
}

/// Waits (bounded) until `poll_transmit` frees at least one descriptor.
fn reclaim_some(nic: &mut impl DeviceUnderTest, clock: &TscClock) -> Result<usize, Note> {
    let deadline = Deadline::after(clock, RECLAIM_TIMEOUT_US);
    loop {
        let freed = nic.poll_transmit();
        if freed > 0 {
            return Ok(freed);
        }
        if deadline.passed(clock) {
            return Err(note!("no descriptor completed within {} ms", RECLAIM_TIMEOUT_US / 1000));
        }
    }
}

/// Sends `total` frames with `phase`, relying on RingFull for back-pressure: completions
/// are reclaimed only when the ring is full. Returns (ring-full events, bytes sent).
fn send_phase(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    phase: u8,
    total: u32,
) -> Result<(u32, u64), Note> {
    let mut ring_full = 0;
    let mut bytes = 0;
    for seq in 0..total {
        let payload_len = PAYLOAD_SIZES[seq as usize % PAYLOAD_SIZES.len()];
        loop {
            match send_tagged(nic, flow, payload_len, phase, seq, total) {
                Ok(()) => break,
                Err(NicError::RingFull) => {
                    ring_full += 1;
                    reclaim_some(nic, clock)?;
                }
                Err(e) => return Err(note!("frame {seq} of phase {phase}: {e}")),
            }
        }
        bytes += udp_frame_len(payload_len) as u64;
        // Keep the receive ring drained; nothing here expects traffic back.
        if seq % 64 == 0 {
            let _ = nic.poll_receive(&mut |_| {});
        }
    }
    Ok((ring_full, bytes))
}

/// Reclaims every outstanding transmit descriptor (bounded).
fn drain_transmit(nic: &mut impl DeviceUnderTest, clock: &TscClock) -> Result<(), Note> {
    while nic.tx_in_flight() > 0 {
        reclaim_some(nic, clock)?;
    }
    Ok(())
}

fn udp_flood(nic: &mut impl DeviceUnderTest, clock: &TscClock, flow: &UdpFlow, total: u32) -> Result<Note, Note> {
    let started = clock.now_us();
    let (ring_full, bytes) = send_phase(nic, clock, flow, 1, total)?;
    drain_transmit(nic, clock)?;
    let elapsed = (clock.now_us() - started).max(1);
    if ring_full == 0 {
        return Err(note!("{total} frames sent but the ring never reported RingFull"));
    }
    Ok(note!(
        "{total} frames ({} KiB) to {}:{} in {} ms: {} frames/s, {} Mbit/s; ring of {} cycled {} \
         times, {ring_full} RingFull recovered by poll_transmit; UDP checksums by the {}",
        bytes / 1024,
        flow.dst_ip,
        flow.dst_port,
        elapsed / 1000,
        u64::from(total) * 1_000_000 / elapsed,
        bytes * 8 / elapsed,
        nic.tx_capacity(),
        total as usize / nic.tx_capacity().max(1),
        if nic.udp_checksum_offload() { "device (offload)" } else { "driver's caller" }
    ))
}

/// The data of echo request `seq`: a pattern that differs per request and per byte.
fn echo_byte(seq: u16, i: usize) -> u8 {
    (usize::from(seq) * 7 + i) as u8
}

/// Receives frames of every size from the Ethernet minimum to the MTU: an ICMP echo
/// request of each size to the gateway, whose reply (the same size) must arrive exact.
/// The receive ring cycles many times on the way.
fn rx_frame_sizes(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    mac: EthernetAddress,
    gateway: EthernetAddress,
) -> Result<Note, Note> {
    let us = (mac, GUEST_IP);
    let max = nic.mtu() + ETHERNET_HEADER_LEN;
    let started = clock.now_us();
    let (mut repeated, mut other_frames) = (0u32, 0u32);
    for len in MIN_FRAME_LEN..=max {
        let seq = len as u16;
        let echo = exchange(
            nic,
            clock,
            "echo request",
            (ECHO_RETRY_US, ECHO_ATTEMPTS),
            len,
            &mut |frame| {
                frames::icmp_echo_request(frame, us, (gateway, GATEWAY_IP), ECHO_IDENT, seq, |data| {
                    data.iter_mut().enumerate().for_each(|(i, b)| *b = echo_byte(seq, i))
                })
            },
            &mut |frame| match frames::icmp_echo_reply(frame, us, GATEWAY_IP) {
                Some((ECHO_IDENT, s, data)) if s == seq => {
                    let exact = data.len() == len - ICMP_ECHO_OVERHEAD
                        && data.iter().enumerate().all(|(i, &b)| b == echo_byte(seq, i));
                    Some((frame.len(), exact))
                }
                _ => None,
            },
        )
        .map_err(|e| note!("{len}-byte frames: {}", e.as_str()))?;
        match echo.reply {
            (got, true) if got == len => {}
            (got, exact) => {
                return Err(note!("echo reply to the {len}-byte request: {got} bytes, data intact {exact}"));
            }
        }
        repeated += echo.requests - 1;
        other_frames += echo.other_frames;
    }
    let count = max - MIN_FRAME_LEN + 1;
    Ok(note!(
        "{count} echo replies, every size {MIN_FRAME_LEN}..={max} bytes, each exact, in {} ms; \
         {} receive buffers cycled {} times; {repeated} requests repeated, {other_frames} other frames",
        (clock.now_us() - started) / 1000,
        nic.rx_capacity(),
        count / nic.rx_capacity().max(1)
    ))
}

fn frame_length_limits(nic: &mut impl DeviceUnderTest, clock: &TscClock, flow: &UdpFlow) -> Result<Note, Note> {
    let mut filled = false;
    let max = nic.mtu() + ETHERNET_HEADER_LEN;
    let too_large = nic.transmit(max + 1, &mut |_| filled = true);
    if too_large != Err(NicError::too_large(max + 1, max)) || filled {
        return Err(note!("{}-byte frame: {too_large:?}, fill called: {filled}", max + 1));
    }
    let too_short = nic.transmit(13, &mut |_| filled = true);
    if too_short != Err(NicError::too_short(13)) || filled {
        return Err(note!("13-byte frame: {too_short:?}, fill called: {filled}"));
    }
    let largest = send_tagged(nic, flow, MAX_UDP_PAYLOAD, 4, 0, 1);
    if let Err(e) = largest {
        return Err(note!("1514-byte frame refused: {e}"));
    }
    // It must leave before the takeover check resets the device.
    drain_transmit(nic, clock)?;
    Ok(note!("{} bytes: FrameTooLarge {{ max: {max} }}, 13 bytes: FrameTooShort, 1514 bytes: sent", max + 1))
}

/// Leaves the device the way a dying OS driver might, with frames queued, then takes it
/// over with `reset` and proves it works (ARP round trip, more UDP).
fn takeover(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    gateway: EthernetAddress,
) -> Result<Note, Note> {
    // An ARP request whose reply lands in the receive ring and is never polled.
    let mac = flow.src_mac;
    nic.transmit(ARP_FRAME_LEN, &mut |frame| frames::arp_request(frame, mac, GUEST_IP, GATEWAY_IP))
        .map_err(|e| note!("ARP request: {e}"))?;
    // Queue frames without reclaiming until the ring is full.
    let mut queued = 0u32;
    loop {
        match send_tagged(nic, flow, 200, 9, queued, 0) {
            Ok(()) => queued += 1,
            Err(NicError::RingFull) => break,
            Err(e) => return Err(note!("queueing: {e}")),
        }
    }
    let in_flight_before = nic.tx_in_flight();

    nic.leave_dirty();

    let started = clock.now_us();
    nic.reset().map_err(|e| note!("reset: {e}"))?;
    let took = clock.now_us() - started;

    nic.check_clean()?;
    if nic.tx_in_flight() != 0 || !nic.bus_master_enabled() {
        return Err(note!(
            "after reset: {} frames in flight, bus master {}",
            nic.tx_in_flight(),
            nic.bus_master_enabled()
        ));
    }
    let reply = arp_round_trip(nic, clock, mac)?;
    if reply.reply != gateway {
        return Err(note!("gateway now answers as {}, was {gateway}", reply.reply));
    }
    let (_, _) = send_phase(nic, clock, flow, 2, 100)?;
    drain_transmit(nic, clock)?;
    Ok(note!(
        "{in_flight_before} frames queued, registers dirtied; reset in {took} us cleared them; \
         ARP reply after {} us; 100 more frames sent",
        reply.after_us
    ))
}

fn repeated_reset(
    nic: &mut impl DeviceUnderTest,
    clock: &TscClock,
    flow: &UdpFlow,
    gateway: EthernetAddress,
) -> Result<Note, Note> {
    let mut slowest = 0;
    for round in 0..5 {
        // A counted frame that has left, and another one in flight at the reset.
        send_tagged(nic, flow, 64, 3, round, 5).map_err(|e| note!("round {round}: {e}"))?;
        drain_transmit(nic, clock)?;
        send_tagged(nic, flow, 64, 8, round, 0).map_err(|e| note!("round {round}: {e}"))?;
        let started = clock.now_us();
        nic.reset().map_err(|e| note!("round {round}: {e}"))?;
        slowest = slowest.max(clock.now_us() - started);
    }
    let reply = arp_round_trip(nic, clock, flow.src_mac)?;
    if reply.reply != gateway {
        return Err(note!("gateway now answers as {}", reply.reply));
    }
    Ok(note!("5 resets, slowest {slowest} us; ARP reply after {} us", reply.after_us))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    netdump_qemu_runtime::default_panic(info)
}
