//! The polled NIC contract: the only thing a port of netdump must implement.
//!
//! Shaped after FreeBSD debugnet's four driver hooks (init, event, transmit, poll) and
//! smoltcp's `phy::Device` tokens. A driver behind this trait runs with interrupts off,
//! from buffers allocated before the crash, and never allocates, blocks or takes a lock.

/// Errors a polled NIC reports. None of them may be produced by a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicError {
    /// Every transmit descriptor is owned by the device; poll completions and retry.
    RingFull,
    /// The frame is longer than `mtu() + 14` bytes (Ethernet header, no FCS).
    // u32 lengths (saturated; see `too_large`): with usize ones the error took 24 bytes,
    // and every `Result<(), NicError>` of the transmit path went through memory.
    FrameTooLarge {
        /// The frame's length, bytes (`u32::MAX` for a longer one).
        len: u32,
        /// The largest frame the NIC sends, bytes: `mtu() + 14`.
        max: u32,
    },
    /// The frame is shorter than an Ethernet header.
    FrameTooShort {
        /// The frame's length, bytes.
        len: u32,
    },
    /// The device did not come out of reset within the driver's bound.
    ResetTimeout,
    /// The device reports no link.
    LinkDown,
    /// The device is in a state the driver cannot recover from (e.g. reads all-ones).
    DeviceGone,
}

impl NicError {
    /// [`FrameTooLarge`](Self::FrameTooLarge) for a `len`-byte frame on a NIC that sends
    /// at most `max` (lengths past `u32::MAX` saturate).
    pub fn too_large(len: usize, max: usize) -> Self {
        NicError::FrameTooLarge { len: saturate(len), max: saturate(max) }
    }

    /// [`FrameTooShort`](Self::FrameTooShort) for a `len`-byte frame.
    pub fn too_short(len: usize) -> Self {
        NicError::FrameTooShort { len: saturate(len) }
    }
}

fn saturate(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl core::fmt::Display for NicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NicError::RingFull => f.write_str("transmit ring full"),
            NicError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            NicError::FrameTooShort { len } => write!(f, "frame of {len} bytes is too short"),
            NicError::ResetTimeout => f.write_str("device reset timed out"),
            NicError::LinkDown => f.write_str("link down"),
            NicError::DeviceGone => f.write_str("device not responding"),
        }
    }
}

/// Length of an Ethernet II header (no VLAN tag, no FCS).
pub const ETHERNET_HEADER_LEN: usize = 14;

/// The length check every [`PolledNic::transmit`] makes before it takes a buffer: a frame
/// of `len` bytes (header included, FCS excluded) on a device of this `mtu` is
/// [`NicError::FrameTooLarge`] past `mtu + 14` bytes and [`NicError::FrameTooShort`] below
/// an Ethernet header, checked in that order.
#[inline]
pub fn check_frame_len(len: usize, mtu: usize) -> Result<(), NicError> {
    let max = mtu + ETHERNET_HEADER_LEN;
    if len > max {
        return Err(NicError::too_large(len, max));
    }
    if len < ETHERNET_HEADER_LEN {
        return Err(NicError::too_short(len));
    }
    Ok(())
}

/// A network interface driven by polling, from preallocated buffers.
///
/// # Contract
/// - **No allocation, no locks, no interrupts.** Every buffer and descriptor ring was
///   handed to the driver before the crash. The driver masks the device's interrupts in
///   [`reset`](Self::reset) and never unmasks them.
/// - **`reset` takes the device over from any state.** The OS driver may have left it
///   mid-transfer with half-filled rings. `reset` performs a full device reset, waits a
///   bounded time for it to complete, reprograms the MAC filter, rings and receive buffers
///   from the preallocated memory, enables bus mastering, and returns with the device ready
///   to send and receive. It may be called again at any time (for instance at panic time
///   after a healthy install) and must succeed again.
/// - **Frames are Ethernet II frames without FCS.** `transmit` is given the frame length
///   and fills the frame in place in a DMA buffer (no extra copy); `poll_receive` lends
///   each received frame to a closure and re-arms its buffer afterwards.
/// - **Every call returns promptly**: no call spins longer than the driver's documented
///   bound (a few milliseconds at most, for reset).
pub trait PolledNic {
    /// The station address frames are sent from and accepted for.
    fn mac_address(&self) -> [u8; 6];

    /// The largest Ethernet payload (IP packet) the device sends and receives, e.g. 1500.
    fn mtu(&self) -> usize;

    /// Full reset and re-initialisation from the preallocated buffers (see the contract).
    fn reset(&mut self) -> Result<(), NicError>;

    /// Whether the device computes the UDP checksum of the frames it sends.
    ///
    /// When `true`, for every frame [`transmit`](Self::transmit) is given that is IPv4
    /// without options carrying UDP (ethertype 0x0800, version/IHL 0x45, protocol 17, not
    /// a fragment), the device sums the UDP header and payload and stores the checksum in
    /// the UDP header; on entry the checksum field holds the one's-complement sum of the
    /// pseudo-header (Linux's `CHECKSUM_PARTIAL`). netdump-core then skips its own pass
    /// over the payload. Every other frame is sent as built. The default is `false`: the
    /// core computes every checksum.
    fn udp_checksum_offload(&self) -> bool {
        false
    }

    /// Queues one frame of `len` bytes (header included, FCS excluded).
    ///
    /// The driver takes a free transmit buffer, calls `fill` with exactly `len` bytes of it
    /// to build the frame in place, and hands the descriptor to the device.
    /// Returns [`NicError::RingFull`] without calling `fill` when no buffer is free, and
    /// [`NicError::FrameTooLarge`] / [`NicError::FrameTooShort`] for a bad length (as
    /// [`check_frame_len`] decides).
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError>;

    /// Queues one frame as [`transmit`](Self::transmit) does, but may leave the doorbell
    /// (the tail register write, the queue notification) for
    /// [`flush_transmit`](Self::flush_transmit) or the next `transmit`, so that a burst of
    /// frames costs one doorbell instead of one each. The device may not send the frame
    /// before then: a caller that uses this calls `flush_transmit` before it waits for
    /// anything. The default is `transmit`.
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.transmit(len, fill)
    }

    /// Hands the device every frame [`transmit_deferred`](Self::transmit_deferred) queued
    /// since the last doorbell, with one doorbell; nothing when there are none. The
    /// default does nothing (its `transmit_deferred` rings at once).
    fn flush_transmit(&mut self) {}

    /// Reclaims descriptors the device has finished sending; returns how many were freed.
    fn poll_transmit(&mut self) -> usize;

    /// Receives at most one frame: if the device has one, lends it to `handler`, re-arms
    /// its buffer and returns `Ok(true)`; returns `Ok(false)` when nothing is pending.
    /// Frames with receive errors are dropped and re-armed by the driver (returning
    /// `Ok(true)` without calling `handler`, so that callers keep draining).
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError>;
}

/// When a driver's `transmit` should read the device's status (present? link up?):
/// on the first frame after a reset, whenever the ring is full, and on every
/// [`INTERVAL`](Self::INTERVAL)-th frame otherwise. A status read is a bus round trip
/// (about a microsecond on PCI, a trip through the device model in an emulator); made per
/// frame, it cost the e1000 a fifth of its dump rate under QEMU. A link lost mid-stream
/// is still reported within `INTERVAL` frames, and a dead device as soon as the ring
/// fills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusPacer {
    left: u32,
}

impl StatusPacer {
    /// Transmits between two status reads.
    pub const INTERVAL: u32 = 32;

    /// Read the status at the next transmit (call from `reset`).
    pub fn reset(&mut self) {
        self.left = 0;
    }

    /// Whether this transmit reads the status; counts the frame.
    pub fn due(&mut self, ring_full: bool) -> bool {
        let due = ring_full || self.left == 0;
        if due {
            self.left = Self::INTERVAL;
        }
        if !ring_full {
            self.left -= 1;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::{NicError, StatusPacer, check_frame_len};

    #[test]
    fn frame_lengths_are_bounded_by_the_mtu_and_the_header() {
        assert_eq!(check_frame_len(1514, 1500), Ok(()));
        assert_eq!(check_frame_len(14, 1500), Ok(()));
        assert_eq!(check_frame_len(1515, 1500), Err(NicError::FrameTooLarge { len: 1515, max: 1514 }));
        assert_eq!(check_frame_len(13, 1500), Err(NicError::FrameTooShort { len: 13 }));
        assert_eq!(check_frame_len(0, 0), Err(NicError::FrameTooShort { len: 0 }));
        assert_eq!(check_frame_len(15, 0), Err(NicError::FrameTooLarge { len: 15, max: 14 }));
    }

    #[test]
    fn status_is_due_first_then_every_interval_and_whenever_the_ring_is_full() {
        let mut p = StatusPacer::default();
        let pattern: std::vec::Vec<bool> = (0..2 * StatusPacer::INTERVAL).map(|_| p.due(false)).collect();
        let expected: std::vec::Vec<bool> =
            (0..2 * StatusPacer::INTERVAL).map(|i| i % StatusPacer::INTERVAL == 0).collect();
        assert_eq!(pattern, expected);
        assert!(p.due(true) && p.due(true), "a full ring reads it every time");
        p.reset();
        assert!(p.due(false), "and the first frame after a reset");
        assert!(!p.due(false));
    }
}
