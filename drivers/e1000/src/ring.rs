//! Descriptor rings and packet buffers in DMA memory: the driver's DMA layer.
//!
//! Layouts from the 8254x SDM: 3.2.3 "Receive Descriptor Format", 3.3.3 "Legacy Transmit
//! Descriptor Format"; ring semantics from 3.2.6 "Receive Descriptor Queue Structure" and
//! 3.4 "Transmit Descriptor Ring Structure".
//!
//! Ownership is the invariant that makes the `unsafe` here sound. The device owns the
//! descriptors (and their buffers) from head to tail, software owns the rest:
//! - TX: descriptors `clean..tail` are queued or done-but-not-reclaimed; software writes
//!   only at `tail`, which is outside that range, and reclaims only descriptors whose DD bit
//!   the device has written back. One descriptor is always left free so that `tail` never
//!   catches up with `clean` (TDT == TDH means "empty" to the device).
//! - RX: the device fills descriptors from RDH up to, not including, RDT. Software reads
//!   descriptor `next` only once its DD bit is set (the device has finished with it and
//!   moved past), and gives it back by writing RDT = `next`. RDT starts at N - 1, so one
//!   descriptor is always software-owned and RDH == RDT means "no buffers" to the device.
//!
//! Public because these legacy formats are not the 8254x's alone: the 82574 (`netdump-e1000e`)
//! accepts the same legacy receive and transmit descriptors and TCP/IP context and data
//! descriptors, byte for byte, and drives its rings with the same head/tail protocol.

use core::marker::PhantomData;
use core::sync::atomic::{Ordering, fence};

use netdump_core::nic::NicError;
use netdump_pci::DmaRegion;
use volatile::{VolatilePtr, map_field};

use crate::regs::{RxErrors, RxStatus, TxCommand, TxStatus, txd};

/// Bytes per descriptor, legacy or not.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Bytes of each transmit buffer: one full frame (1514 bytes) rounded up to 128.
pub const TX_BUFFER_SIZE: usize = 1536;
/// Bytes of each receive buffer: what RCTL.BSIZE = 00b (BSEX = 0) tells the device.
pub const RX_BUFFER_SIZE: usize = 2048;
/// Frames shorter than this (60 bytes, 64 with the FCS) are padded with zeros before they
/// are handed to the device: 3.3.3 requires at least 48 bytes, and not every device model
/// honours TCTL.PSP (QEMU's does not pad).
pub const MIN_FRAME_LEN: usize = 60;

/// Legacy transmit descriptor (3.3.3, table 3-8).
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy)]
struct TxDescriptor {
    addr: u64,
    length: u16,
    cso: u8,
    cmd: u8,
    status: u8,
    css: u8,
    special: u16,
}

/// Receive descriptor (3.2.3, table 3-1).
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy)]
struct RxDescriptor {
    addr: u64,
    length: u16,
    checksum: u16,
    status: u8,
    errors: u8,
    special: u16,
}

const _: () = assert!(size_of::<TxDescriptor>() == DESCRIPTOR_SIZE);
const _: () = assert!(size_of::<RxDescriptor>() == DESCRIPTOR_SIZE);
const _: () = assert!(size_of::<u128>() == DESCRIPTOR_SIZE && align_of::<u128>() <= align_of::<TxDescriptor>());
const _: () = assert!(align_of::<u128>() <= align_of::<RxDescriptor>());

/// A descriptor's 16 bytes as one little-endian value, field by field in the order of
/// its `repr(C)` layout: written with one volatile store, where the struct's volatile
/// write copied each of its seven fields through the stack (docs/PERFORMANCE.md,
/// "Footprint"). The device sees the same bytes.
trait Bits: Copy {
    fn bits(self) -> u128;
}

impl Bits for TxDescriptor {
    #[inline(always)]
    fn bits(self) -> u128 {
        u128::from(self.addr)
            | u128::from(self.length) << 64
            | u128::from(self.cso) << 80
            | u128::from(self.cmd) << 88
            | u128::from(self.status) << 96
            | u128::from(self.css) << 104
            | u128::from(self.special) << 112
    }
}

impl Bits for RxDescriptor {
    #[inline(always)]
    fn bits(self) -> u128 {
        u128::from(self.addr)
            | u128::from(self.length) << 64
            | u128::from(self.checksum) << 80
            | u128::from(self.status) << 96
            | u128::from(self.errors) << 104
            | u128::from(self.special) << 112
    }
}

/// N descriptors of type `D` at the start of a DMA region.
struct DescriptorArray<D, const N: usize> {
    memory: DmaRegion,
    _descriptor: PhantomData<D>,
}

impl<D, const N: usize> DescriptorArray<D, N> {
    /// `memory` must hold N descriptors and be 16-byte aligned; the driver carves it so.
    fn new(memory: DmaRegion) -> Self {
        assert!(memory.len() >= N * DESCRIPTOR_SIZE && (memory.as_ptr() as usize).is_multiple_of(16));
        DescriptorArray { memory, _descriptor: PhantomData }
    }

    fn phys_addr(&self) -> u64 {
        self.memory.phys_addr()
    }

    /// Descriptor `index % N`.
    fn get(&mut self, index: usize) -> VolatilePtr<'_, D> {
        let index = index % N;
        // SAFETY: `index < N` and the region holds N aligned descriptors (checked in `new`),
        // so the pointer is in bounds, aligned and non-null. Only volatile accesses are made
        // through it, because the device reads and writes descriptors concurrently, and
        // `&mut self` keeps this the only CPU-side pointer for its lifetime.
        unsafe {
            let descriptor = (self.memory.as_ptr() as *mut D).add(index);
            VolatilePtr::new(core::ptr::NonNull::new_unchecked(descriptor))
        }
    }
}

impl<D: Bits, const N: usize> DescriptorArray<D, N> {
    /// Writes descriptor `index % N` whole, in one 16-byte volatile store.
    #[inline(always)]
    fn set(&mut self, index: usize, descriptor: D) {
        let index = index % N;
        // SAFETY: as in `get`: `index < N`, the region holds N descriptors of 16 bytes
        // aligned to 16 (checked in `new`), which `u128` fits in size and alignment (the
        // asserts above); `&mut self` keeps this the only CPU-side pointer. x86 is
        // little-endian, so the value's bytes are the descriptor's `repr(C)` layout.
        unsafe {
            let descriptor_ptr = (self.memory.as_ptr() as *mut D).add(index).cast::<u128>();
            VolatilePtr::new(core::ptr::NonNull::new_unchecked(descriptor_ptr)).write(descriptor.bits());
        }
    }
}

/// N packet buffers of `SIZE` bytes, back to back.
struct BufferArray<const N: usize, const SIZE: usize> {
    memory: DmaRegion,
}

impl<const N: usize, const SIZE: usize> BufferArray<N, SIZE> {
    fn new(memory: DmaRegion) -> Self {
        assert!(memory.len() >= N * SIZE);
        BufferArray { memory }
    }

    fn phys_addr(&self, index: usize) -> u64 {
        self.memory.phys_addr() + ((index % N) * SIZE) as u64
    }

    /// Raw pointer to buffer `index % N`; dereferenced only by the rings below, under the
    /// ownership invariant of this module.
    fn ptr(&self, index: usize) -> *mut u8 {
        self.memory.as_ptr().wrapping_add((index % N) * SIZE)
    }
}

/// The transmit ring: descriptors, buffers and software's two indices.
pub struct TxRing<const N: usize> {
    descriptors: DescriptorArray<TxDescriptor, N>,
    buffers: BufferArray<N, TX_BUFFER_SIZE>,
    /// Next descriptor software fills; the value of TDT.
    tail: usize,
    /// Oldest descriptor not yet reclaimed.
    clean: usize,
    /// Frames that are IPv4/UDP go out in data descriptors asking for the UDP checksum
    /// (after [`push_context`](Self::push_context)).
    udp_checksum: bool,
    /// Whether IPv4/UDP frames with bytes after the IP datagram (Ethernet padding) are
    /// offloaded too ([`set_offload_padded`](Self::set_offload_padded)).
    offload_padded: bool,
}

/// Where an IPv4 (no options) UDP frame's UDP header starts, and its checksum field.
const UDP_HEADER: usize = 14 + 20;
const UDP_CHECKSUM: usize = UDP_HEADER + 6;

/// Completes the UDP checksum of an IPv4 (20-byte header) UDP frame whose checksum field
/// holds the pseudo-header sum, as the device would: the one's-complement sum of the UDP
/// header and data, complemented (0 sent as 0xffff).
fn complete_udp_checksum(frame: &mut [u8]) {
    let ip_len = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let end = (14 + ip_len).min(frame.len());
    let checksum = match netdump_core::net::internet_checksum(frame.get(UDP_HEADER..end).unwrap_or_default()) {
        0 => 0xffff,
        c => c,
    };
    frame[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// Whether `frame` is the kind the context descriptor describes: Ethernet II, IPv4 with
/// a 20-byte header, UDP, not a fragment.
fn is_ipv4_udp(frame: &[u8]) -> bool {
    frame.len() >= UDP_HEADER + 8
        && frame[12..14] == [0x08, 0x00]
        && frame[14] == 0x45
        && frame[23] == 17
        && u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff == 0
}

impl<const N: usize> TxRing<N> {
    /// A ring over `descriptors` (N × [`DESCRIPTOR_SIZE`] bytes, 16-byte aligned) and
    /// `buffers` (N × [`TX_BUFFER_SIZE`] bytes). Call [`clear`](Self::clear) before use.
    pub fn new(descriptors: DmaRegion, buffers: DmaRegion) -> Self {
        TxRing {
            descriptors: DescriptorArray::new(descriptors),
            buffers: BufferArray::new(buffers),
            tail: 0,
            clean: 0,
            udp_checksum: false,
            offload_padded: true,
        }
    }

    /// Whether IPv4/UDP frames longer than their IP datagram (padded to the Ethernet
    /// minimum) still go to the device for their checksum (the default). Off, such frames get
    /// their checksum here and go out in legacy descriptors: QEMU's e1000e model takes the
    /// pseudo-header's length from the frame rather than the IP header and gets them wrong.
    pub fn set_offload_padded(&mut self, on: bool) {
        self.offload_padded = on;
    }

    /// Queues the TCP/IP context descriptor (3.3.6) that makes data descriptors with
    /// POPTS.TXSM get a UDP checksum over bytes 34.. at offset 40, and sends IPv4/UDP
    /// frames that way from now on. Returns the new tail (the caller writes TDT). Right
    /// after [`clear`](Self::clear): the ring has room.
    pub fn push_context(&mut self) -> usize {
        let index = self.tail;
        self.descriptors.set(
            index,
            TxDescriptor {
                addr: txd::context_offsets(UDP_HEADER as u8, UDP_CHECKSUM as u8, 0),
                length: 0,
                cso: 0,
                cmd: (TxCommand::DEXT | TxCommand::RS).bits() | txd::TUCMD_IP,
                status: 0,
                css: 0,
                special: 0,
            },
        );
        fence(Ordering::SeqCst);
        self.tail = (index + 1) % N;
        self.udp_checksum = true;
        self.tail
    }

    /// The device's address of the descriptor ring (for TDBAL/TDBAH).
    pub fn phys_addr(&self) -> u64 {
        self.descriptors.phys_addr()
    }

    /// Frames handed to the device and not yet reclaimed.
    pub fn in_flight(&self) -> usize {
        (self.tail + N - self.clean) % N
    }

    /// Whether IPv4/UDP frames go out with the device computing their UDP checksum.
    pub fn udp_checksum(&self) -> bool {
        self.udp_checksum
    }

    /// At most N - 1 frames can be in flight (see the module documentation).
    pub fn is_full(&self) -> bool {
        self.in_flight() == N - 1
    }

    /// Empties the ring: every descriptor zeroed and pointed at its buffer, both indices 0.
    /// Only while the transmitter is stopped (TCTL.EN clear) and before TDH/TDT are reset.
    pub fn clear(&mut self) {
        for i in 0..N {
            let phys = self.buffers.phys_addr(i);
            self.descriptors
                .set(i, TxDescriptor { addr: phys, length: 0, cso: 0, cmd: 0, status: 0, css: 0, special: 0 });
        }
        self.tail = 0;
        self.clean = 0;
        self.udp_checksum = false;
    }

    /// Builds a `len`-byte frame with `fill` in the tail buffer and queues its descriptor.
    /// Returns the new tail, which the caller writes to TDT to hand the frame over.
    pub fn push(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<usize, NicError> {
        if len > TX_BUFFER_SIZE {
            return Err(NicError::too_large(len, TX_BUFFER_SIZE));
        }
        if self.is_full() {
            return Err(NicError::RingFull);
        }
        let index = self.tail;
        let wire_len = len.max(MIN_FRAME_LEN);
        let offload = {
            // SAFETY: descriptor `tail` is software-owned (it is outside clean..tail, and the
            // ring is not full so it is not `clean` of a full ring either); the device does
            // not read its buffer until TDT moves past it. The buffer holds TX_BUFFER_SIZE
            // bytes ≥ wire_len, and no other reference to it exists while `frame` lives.
            let frame = unsafe { core::slice::from_raw_parts_mut(self.buffers.ptr(index), wire_len) };
            frame[len..].fill(0);
            fill(&mut frame[..len]);
            let udp = self.udp_checksum && is_ipv4_udp(frame);
            let padded = udp && frame.len() > 14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            if padded && !self.offload_padded {
                complete_udp_checksum(frame);
                false
            } else {
                udp
            }
        };
        let phys = self.buffers.phys_addr(index);
        let cmd = TxCommand::EOP | TxCommand::IFCS | TxCommand::RS;
        let descriptor = if offload {
            // A TCP/IP data descriptor (3.3.7): same address and length fields.
            TxDescriptor {
                addr: phys,
                length: wire_len as u16,
                cso: txd::DTYP_DATA,
                cmd: (cmd | TxCommand::DEXT).bits(),
                status: 0,
                css: txd::POPTS_TXSM,
                special: 0,
            }
        } else {
            TxDescriptor { addr: phys, length: wire_len as u16, cso: 0, cmd: cmd.bits(), status: 0, css: 0, special: 0 }
        };
        self.descriptors.set(index, descriptor);
        // The frame and descriptor must be in memory before the device sees the new tail.
        fence(Ordering::SeqCst);
        self.tail = (index + 1) % N;
        Ok(self.tail)
    }

    /// Reclaims, in order, the descriptors whose DD bit the device has written back.
    pub fn reclaim(&mut self) -> usize {
        let mut freed = 0;
        while self.clean != self.tail {
            let descriptor = self.descriptors.get(self.clean);
            let status = TxStatus::from_bits_retain(map_field!(descriptor.status).read());
            if !status.contains(TxStatus::DD) {
                break;
            }
            self.clean = (self.clean + 1) % N;
            freed += 1;
        }
        // Later reads of the buffers must not be hoisted above the DD checks.
        fence(Ordering::SeqCst);
        freed
    }
}

/// What one [`RxRing::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPoll {
    /// Whether the frame was handed to the handler (false: dropped for an error).
    pub delivered: bool,
    /// The descriptor given back; the caller writes it to RDT.
    pub rearmed: usize,
}

/// The receive ring: descriptors, buffers and the next descriptor to look at.
pub struct RxRing<const N: usize> {
    descriptors: DescriptorArray<RxDescriptor, N>,
    buffers: BufferArray<N, RX_BUFFER_SIZE>,
    /// Next descriptor the device completes, in ring order.
    next: usize,
    /// Inside a frame that spans several descriptors (never with 2 KiB buffers and
    /// RCTL.LPE clear, but the device decides): drop until its EOP descriptor.
    discarding: bool,
}

impl<const N: usize> RxRing<N> {
    /// A ring over `descriptors` (N × [`DESCRIPTOR_SIZE`] bytes, 16-byte aligned) and
    /// `buffers` (N × [`RX_BUFFER_SIZE`] bytes). Call [`clear`](Self::clear) before use.
    pub fn new(descriptors: DmaRegion, buffers: DmaRegion) -> Self {
        RxRing {
            descriptors: DescriptorArray::new(descriptors),
            buffers: BufferArray::new(buffers),
            next: 0,
            discarding: false,
        }
    }

    /// The device's address of the descriptor ring (for RDBAL/RDBAH).
    pub fn phys_addr(&self) -> u64 {
        self.descriptors.phys_addr()
    }

    /// Arms every descriptor with its buffer and returns the initial RDT (N - 1). Only
    /// while the receiver is stopped (RCTL.EN clear) and before RDH/RDT are reset.
    pub fn clear(&mut self) -> usize {
        for i in 0..N {
            let phys = self.buffers.phys_addr(i);
            self.descriptors
                .set(i, RxDescriptor { addr: phys, length: 0, checksum: 0, status: 0, errors: 0, special: 0 });
        }
        self.next = 0;
        self.discarding = false;
        N - 1
    }

    /// If the device has completed descriptor `next`, lends its frame to `handler` (unless
    /// it is bad or part of a multi-descriptor frame), re-arms it and returns what happened;
    /// `None` when nothing is pending.
    pub fn poll(&mut self, handler: &mut dyn FnMut(&[u8])) -> Option<RxPoll> {
        let index = self.next;
        let descriptor = self.descriptors.get(index);
        let status = RxStatus::from_bits_retain(map_field!(descriptor.status).read());
        if !status.contains(RxStatus::DD) {
            return None;
        }
        // Read length, errors and the frame only after seeing DD.
        fence(Ordering::SeqCst);
        let length = usize::from(map_field!(descriptor.length).read());
        let errors = RxErrors::from_bits_retain(map_field!(descriptor.errors).read());
        let end_of_packet = status.contains(RxStatus::EOP);
        let fragment = self.discarding || !end_of_packet;
        self.discarding = !end_of_packet;
        let delivered = !fragment
            && !errors.intersects(RxErrors::FRAME)
            && (netdump_core::nic::ETHERNET_HEADER_LEN..=RX_BUFFER_SIZE).contains(&length);
        if delivered {
            // SAFETY: the device set DD on descriptor `index`, so it has finished writing
            // the buffer and RDH has moved past it; it will not write the buffer again until
            // RDT is advanced past `index`, which happens after this borrow ends. `length`
            // was checked against the buffer size.
            let frame = unsafe { core::slice::from_raw_parts(self.buffers.ptr(index), length) };
            handler(frame);
        }
        let phys = self.buffers.phys_addr(index);
        self.descriptors
            .set(index, RxDescriptor { addr: phys, length: 0, checksum: 0, status: 0, errors: 0, special: 0 });
        // The cleared descriptor must be in memory before the device sees the new RDT.
        fence(Ordering::SeqCst);
        self.next = (index + 1) % N;
        Some(RxPoll { delivered, rearmed: index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_is_written_as_the_bytes_of_its_layout() {
        let tx = TxDescriptor {
            addr: 0x1122_3344_5566_7788,
            length: 0x99aa,
            cso: 0xbb,
            cmd: 0xcc,
            status: 0xdd,
            css: 0xee,
            special: 0xf00f,
        };
        // SAFETY: both descriptors are 16 bytes of integers without padding.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(tx) };
        assert_eq!(tx.bits().to_le_bytes(), bytes);
        let rx = RxDescriptor {
            addr: 0x0102_0304_0506_0708,
            length: 0x090a,
            checksum: 0x0b0c,
            status: 0x0d,
            errors: 0x0e,
            special: 0x1f2f,
        };
        // SAFETY: as above.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(rx) };
        assert_eq!(rx.bits().to_le_bytes(), bytes);
    }
}
