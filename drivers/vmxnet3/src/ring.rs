//! The transmit and receive queues in DMA memory, with their generation bits.
//!
//! vmxnet3 rings have no head or tail registers the device reads back: ownership of a
//! descriptor is its generation bit. Each side keeps, per ring, the index it works at and
//! the generation of the current lap (1 on the first lap, flipped at every wrap). A
//! command-ring descriptor (transmit, receive) belongs to the device while its generation
//! bit equals the device's current one for that slot; a completion-ring descriptor belongs
//! to the driver once its generation equals the driver's current completion generation.
//! Rings start zeroed (generation 0) with both sides at generation 1, so nothing is owned
//! by the other side until written.
//!
//! Ownership of the buffers, which makes the loans below sound:
//! - **Transmit**: descriptors `clean..fill` (modulo N) are the device's (queued, or sent
//!   and not yet reclaimed); the driver writes only at `fill` and never lets `fill` catch
//!   up with `clean` (one descriptor stays free, N − 1 frames in flight at most). A
//!   completion naming descriptor `i` hands back `clean..=i`; one naming a descriptor
//!   outside `clean..fill` is ignored, never trusted.
//! - **Receive** (ring 0): descriptors `next..fill` are armed (the device's); the driver
//!   owns the others. A completion naming descriptor `i` inside `next..fill` hands back
//!   `next..=i`: the frame is in buffer `i`, lent to the handler before anything is
//!   re-armed, and the driver then re-arms as many descriptors at `fill`, which trails
//!   `next` and so never reaches a buffer the device holds or the one just lent. One
//!   descriptor always stays unarmed, as in Linux, so that `fill == next` means "device
//!   has no buffer" to a device that compares RXPROD with its own index.
//! - Every loop over a ring is bounded by its size.

use core::sync::atomic::{Ordering, fence};

use netdump_core::nic::{ETHERNET_HEADER_LEN, NicError};

use crate::dma::DmaBytes;
use crate::layout::{DESCRIPTOR_SIZE, RX_BUFFER_SIZE, RX_RING1_SIZE, TX_BUFFER_SIZE, rcd, rxd, tcd, txd};

/// Frames shorter than this are zero-padded before they are handed to the device (60
/// bytes, 64 with the FCS): QEMU's model sends frames as given.
pub const MIN_FRAME_LEN: usize = 60;

/// An index and the generation of its lap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor<const N: usize> {
    index: usize,
    generation: u32,
}

impl<const N: usize> Cursor<N> {
    /// Slot 0 of the first lap, whose generation is 1 (`VMXNET3_INIT_GEN`).
    const START: Self = Cursor { index: 0, generation: 1 };

    fn advance(&mut self) {
        self.index += 1;
        if self.index == N {
            self.index = 0;
            self.generation ^= 1;
        }
    }
}

/// The generation bit of a completion descriptor (bit 31 of its dword 3).
fn completion_generation(ring: &DmaBytes, index: usize) -> u32 {
    ring.read_u32(index * DESCRIPTOR_SIZE + tcd::DWORD3) >> tcd::GEN_SHIFT
}

/// The transmit queue: transmit ring, completion ring, data ring and N buffers (buffer `i`
/// belongs to descriptor `i`).
pub struct TxQueue<const N: usize> {
    ring: DmaBytes,
    completions: DmaBytes,
    data: DmaBytes,
    buffers: DmaBytes,
    /// Next descriptor the driver fills, and the generation that hands it over.
    fill: Cursor<N>,
    /// Oldest descriptor not yet reclaimed.
    clean: usize,
    /// Next completion descriptor to read.
    completion: Cursor<N>,
}

impl<const N: usize> TxQueue<N> {
    pub fn new(ring: DmaBytes, completions: DmaBytes, data: DmaBytes, buffers: DmaBytes) -> Self {
        TxQueue { ring, completions, data, buffers, fill: Cursor::START, clean: 0, completion: Cursor::START }
    }

    pub fn ring_phys(&self) -> u64 {
        self.ring.phys()
    }

    pub fn completions_phys(&self) -> u64 {
        self.completions.phys()
    }

    pub fn data_phys(&self) -> u64 {
        self.data.phys()
    }

    /// Frames handed to the device and not yet reclaimed.
    pub fn in_flight(&self) -> usize {
        (self.fill.index + N - self.clean) % N
    }

    pub fn is_full(&self) -> bool {
        self.in_flight() == N - 1
    }

    /// Empties the queue: all three rings zeroed (generation 0: nothing for the device),
    /// every index back to slot 0 of lap 1. Only while the device is quiesced or reset.
    pub fn clear(&mut self) {
        self.ring.zero();
        self.completions.zero();
        self.data.zero();
        self.fill = Cursor::START;
        self.clean = 0;
        self.completion = Cursor::START;
    }

    /// Builds a `len`-byte frame (zero-padded to 60) with `fill` in the buffer of
    /// descriptor `fill` and hands it over with one descriptor (EOP, completion
    /// requested). Returns the new fill index, which the caller writes to TXPROD.
    pub fn push(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<usize, NicError> {
        if len > TX_BUFFER_SIZE {
            return Err(NicError::too_large(len, TX_BUFFER_SIZE));
        }
        if self.is_full() {
            return Err(NicError::RingFull);
        }
        let index = self.fill.index;
        let wire_len = len.max(MIN_FRAME_LEN);
        // SAFETY: descriptor `index` is outside `clean..fill` (the ring is not full), so
        // the device does not own it or its buffer: it read the buffer before completing
        // the descriptor's previous use, which `reclaim` saw. The device will not look at
        // it again until its generation bit is written below, after this loan ends.
        let Some(frame) = (unsafe { self.buffers.bytes_mut(index * TX_BUFFER_SIZE, wire_len) }) else {
            return Err(NicError::too_large(len, TX_BUFFER_SIZE));
        };
        frame[len..].fill(0);
        fill(&mut frame[..len]);

        let at = index * DESCRIPTOR_SIZE;
        let phys = self.buffers.phys_at(index * TX_BUFFER_SIZE);
        self.ring.write_u64(at, phys);
        self.ring.write_u32(at + txd::DWORD3, txd::EOP | txd::CQ);
        // The frame, address and flags must be in memory before the generation bit hands
        // the descriptor over; the length goes with the generation in one store.
        fence(Ordering::SeqCst);
        self.ring.write_u32(at + txd::DWORD2, wire_len as u32 | self.fill.generation << txd::GEN_SHIFT);
        // And the descriptor before the TXPROD write that tells the device.
        fence(Ordering::SeqCst);
        self.fill.advance();
        Ok(self.fill.index)
    }

    /// Reads the completions the device has written and reclaims the descriptors they
    /// hand back. Returns how many frames were reclaimed.
    pub fn reclaim(&mut self) -> usize {
        let mut freed = 0;
        for _ in 0..N {
            if completion_generation(&self.completions, self.completion.index) != self.completion.generation {
                break;
            }
            // Read the index only after seeing the generation.
            fence(Ordering::SeqCst);
            let eop = (self.completions.read_u32(self.completion.index * DESCRIPTOR_SIZE) & tcd::INDEX_MASK) as usize;
            self.completion.advance();
            let distance = (eop + N - self.clean) % N;
            if eop < N && distance < self.in_flight() {
                self.clean = (eop + 1) % N;
                freed += distance + 1;
            }
        }
        // Later writes to reclaimed buffers must not move above the generation checks.
        fence(Ordering::SeqCst);
        freed
    }
}

/// What one [`RxQueue::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPoll {
    /// Whether a frame was lent to the handler (false: dropped).
    pub delivered: bool,
    /// Ring 0's fill index after re-arming, for RXPROD.
    pub fill: usize,
}

/// The receive queue: ring 0 with N buffers (buffer `i` belongs to descriptor `i`), ring 1
/// ([`RX_RING1_SIZE`] descriptors, never armed) and the completion ring (one descriptor
/// per descriptor of both rings, as Linux sizes it).
pub struct RxQueue<const N: usize> {
    ring0: DmaBytes,
    ring1: DmaBytes,
    completions: DmaBytes,
    buffers: DmaBytes,
    /// Next ring-0 descriptor the device fills.
    next: usize,
    /// Next ring-0 descriptor the driver arms, and the generation that hands it over.
    fill: Cursor<N>,
    /// Next completion descriptor to read, and its lap's generation.
    completion: (usize, u32),
}

impl<const N: usize> RxQueue<N> {
    /// Entries of the completion ring.
    pub const COMPLETIONS: usize = N + RX_RING1_SIZE;

    pub fn new(ring0: DmaBytes, ring1: DmaBytes, completions: DmaBytes, buffers: DmaBytes) -> Self {
        RxQueue { ring0, ring1, completions, buffers, next: 0, fill: Cursor::START, completion: (0, 1) }
    }

    pub fn ring0_phys(&self) -> u64 {
        self.ring0.phys()
    }

    pub fn ring1_phys(&self) -> u64 {
        self.ring1.phys()
    }

    pub fn completions_phys(&self) -> u64 {
        self.completions.phys()
    }

    /// Receive buffers the device holds.
    pub fn armed(&self) -> usize {
        (self.fill.index + N - self.next) % N
    }

    /// Gives descriptor `fill` (and its buffer) to the device and moves `fill` on.
    fn arm_next(&mut self) {
        let index = self.fill.index;
        let at = index * DESCRIPTOR_SIZE;
        self.ring0.write_u64(at, self.buffers.phys_at(index * RX_BUFFER_SIZE));
        self.ring0.write_u32(at + rxd::DWORD3, 0);
        // Address first; then length, head type and generation in one store.
        fence(Ordering::SeqCst);
        self.ring0.write_u32(at + rxd::DWORD2, RX_BUFFER_SIZE as u32 | self.fill.generation << rxd::GEN_SHIFT);
        self.fill.advance();
    }

    /// Rebuilds the queue: every ring zeroed, N − 1 ring-0 descriptors armed, ring 1 left
    /// empty. Returns ring 0's fill index (for RXPROD). Only while the device is quiesced
    /// or reset.
    pub fn clear(&mut self) -> usize {
        self.ring0.zero();
        self.ring1.zero();
        self.completions.zero();
        self.next = 0;
        self.fill = Cursor::START;
        self.completion = (0, 1);
        for _ in 0..N - 1 {
            self.arm_next();
        }
        fence(Ordering::SeqCst);
        self.fill.index
    }

    /// If the device has completed a buffer, lends its frame to `handler` (unless it is
    /// bad), re-arms what the completion handed back and returns what happened; `None`
    /// when no completion is pending.
    pub fn poll(&mut self, handler: &mut dyn FnMut(&[u8])) -> Option<RxPoll> {
        let (slot, generation) = self.completion;
        if completion_generation(&self.completions, slot) != generation {
            return None;
        }
        // Read the descriptor only after seeing its generation.
        fence(Ordering::SeqCst);
        let at = slot * DESCRIPTOR_SIZE;
        let dword0 = self.completions.read_u32(at);
        let dword2 = self.completions.read_u32(at + rcd::DWORD2);
        self.completion = if slot + 1 == Self::COMPLETIONS { (0, generation ^ 1) } else { (slot + 1, generation) };

        let index = (dword0 & rcd::INDEX_MASK) as usize;
        let ring = (dword0 >> rcd::RQID_SHIFT) & rcd::RQID_MASK;
        let distance = (index + N - self.next) % N;
        if ring != 0 || index >= N || distance >= self.armed() {
            // Not a ring-0 buffer the device holds (ring 1 has none): nothing to hand back.
            return Some(RxPoll { delivered: false, fill: self.fill.index });
        }
        let len = (dword2 & rcd::LEN_MASK) as usize;
        let whole = dword0 & (rcd::SOP | rcd::EOP) == rcd::SOP | rcd::EOP;
        let delivered = whole && dword2 & rcd::ERR == 0 && (ETHERNET_HEADER_LEN..=RX_BUFFER_SIZE).contains(&len);
        if delivered {
            // SAFETY: the completion hands descriptors `next..=index` back (checked to be
            // inside the armed window), so the device has finished writing buffer `index`
            // and will not write it again until it is re-armed, which happens after this
            // loan ends (and at `fill`, which trails `next`). `len` fits the buffer.
            if let Some(frame) = unsafe { self.buffers.bytes(index * RX_BUFFER_SIZE, len) } {
                handler(frame);
            }
        }
        self.next = (index + 1) % N;
        for _ in 0..=distance {
            self.arm_next();
        }
        // The re-armed descriptors must be in memory before RXPROD moves.
        fence(Ordering::SeqCst);
        Some(RxPoll { delivered, fill: self.fill.index })
    }
}
