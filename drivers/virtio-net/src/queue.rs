//! Split virtqueues in DMA memory: the driver's side of virtio 1.2, section 2.7.
//!
//! Every queue gets [`QUEUE_MEMORY`] bytes laid out as the legacy interface requires
//! (which the modern one accepts too): the descriptor table at the start, the available
//! ring right after it, the used ring at the next 4 KiB boundary.
//!
//! ```text
//!   0                    descriptors   16 × size
//!   16 × size            avail ring    flags, idx, ring[size], used_event
//!   next 4 KiB boundary  used ring     flags, idx, ring[size] of (id, len), avail_event
//! ```
//!
//! Each packet buffer is [`BUFFER_SIZE`] bytes and owns two descriptors, `2 × slot` for
//! the `virtio_net_hdr` at the buffer's start and `2 × slot + 1` for the frame at
//! [`FRAME_OFFSET`]: a layout every device accepts, without `ANY_LAYOUT`. The head
//! descriptor's index is what travels through the rings, so a used-ring entry names its
//! buffer whatever order the device completes them in.
//!
//! Ownership makes the `unsafe` here sound: a buffer belongs to the device from the moment
//! its head is published in the available ring until its head comes back in the used ring;
//! the driver touches a buffer's bytes only while it owns it (tracked per slot), and every
//! ring field is accessed with volatile reads and writes, fenced around the index updates.

use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};

use netdump_core::nic::{ETHERNET_HEADER_LEN, NicError};
use netdump_pci::DmaRegion;
use volatile::VolatilePtr;

use crate::layout::{DESCRIPTOR_SIZE, PAGE, QueueRings, align_up, legacy_used_offset};

/// The largest queue the driver lays out; a modern device's larger queues are shrunk to
/// it, a legacy device (whose sizes are fixed) with a larger one is refused.
pub const MAX_QUEUE_SIZE: u16 = 256;
/// Bytes of each packet buffer.
pub const BUFFER_SIZE: usize = 2048;
/// Where the frame starts in its buffer (after the 10- or 12-byte header, 16-aligned).
pub const FRAME_OFFSET: usize = 16;
/// The longest frame a buffer holds: a 1514-byte frame, a VLAN tag and room to spare.
pub const FRAME_CAPACITY: usize = BUFFER_SIZE - FRAME_OFFSET;
/// Bytes of ring memory each queue needs: the layout for [`MAX_QUEUE_SIZE`] entries,
/// rounded to whole pages.
pub const QUEUE_MEMORY: usize = align_up(legacy_used_offset(MAX_QUEUE_SIZE) + 6 + 8 * MAX_QUEUE_SIZE as usize, PAGE);

/// Descriptor flags (2.7.5).
mod flags {
    /// The buffer continues in `next`.
    pub const NEXT: u16 = 1;
    /// The device writes the buffer (receive) rather than reads it (transmit).
    pub const WRITE: u16 = 2;
    /// Avail ring flag: the driver wants no interrupt when buffers are used (2.7.7).
    pub const AVAIL_NO_INTERRUPT: u16 = 1;
    /// Used ring flag: the device wants no notification when buffers are added (2.7.10).
    pub const USED_NO_NOTIFY: u16 = 1;
}

/// A descriptor (2.7.5), little-endian like every virtio 1.x field; legacy devices use the
/// guest's byte order, which is the same on x86.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy)]
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

const _: () = assert!(size_of::<Descriptor>() == DESCRIPTOR_SIZE);

impl Descriptor {
    fn new(addr: u64, len: usize, flags: u16, next: u16) -> Self {
        Descriptor { addr: addr.to_le(), len: (len as u32).to_le(), flags: flags.to_le(), next: next.to_le() }
    }
}

/// One queue's rings, in [`QUEUE_MEMORY`] bytes of page-aligned DMA memory.
struct Ring {
    memory: DmaRegion,
    /// Entries in the queue: a power of two, at most [`MAX_QUEUE_SIZE`].
    size: u16,
}

impl Ring {
    /// `memory` must be [`QUEUE_MEMORY`] bytes at a page boundary; the driver carves it so.
    fn new(memory: DmaRegion) -> Self {
        assert!(memory.len() >= QUEUE_MEMORY && memory.phys_addr().is_multiple_of(PAGE as u64));
        assert!((memory.as_ptr() as usize).is_multiple_of(PAGE));
        Ring { memory, size: 1 }
    }

    /// Empties the rings for a queue of `size` entries (clamped to a power of two no larger
    /// than [`MAX_QUEUE_SIZE`]) and asks the device for no interrupts. Only while the device
    /// is reset, so that it does not use the memory.
    fn lay_out(&mut self, size: u16) {
        self.memory.zero();
        self.size = if size == 0 { 1 } else { 1 << size.min(MAX_QUEUE_SIZE).ilog2() };
        self.field::<u16>(self.avail_offset()).write(flags::AVAIL_NO_INTERRUPT.to_le());
    }

    fn avail_offset(&self) -> usize {
        DESCRIPTOR_SIZE * usize::from(self.size)
    }

    fn used_offset(&self) -> usize {
        legacy_used_offset(self.size)
    }

    fn rings(&self) -> QueueRings {
        let base = self.memory.phys_addr();
        QueueRings {
            size: self.size,
            descriptors: base,
            driver: base + self.avail_offset() as u64,
            device: base + self.used_offset() as u64,
        }
    }

    /// The ring field of type `T` at `offset`.
    fn field<T>(&mut self, offset: usize) -> VolatilePtr<'_, T> {
        debug_assert!(offset + size_of::<T>() <= QUEUE_MEMORY && offset.is_multiple_of(align_of::<T>()));
        // SAFETY: every caller derives `offset` from an index reduced modulo `size`, and
        // `size <= MAX_QUEUE_SIZE`, so the field lies inside the QUEUE_MEMORY bytes `new`
        // checked; the offsets of the layout are multiples of the field's alignment and the
        // memory is page-aligned. Fields are only accessed volatile, because the device
        // reads and writes them concurrently, and `&mut self` keeps this the only CPU-side
        // pointer while it lives.
        unsafe {
            let field = self.memory.as_ptr().add(offset).cast::<T>();
            VolatilePtr::new(NonNull::new_unchecked(field))
        }
    }

    fn set_descriptor(&mut self, index: u16, descriptor: Descriptor) {
        let offset = DESCRIPTOR_SIZE * usize::from(index % self.size);
        self.field::<Descriptor>(offset).write(descriptor);
    }

    /// The available ring's flags (interrupt suppression).
    fn avail_flags(&mut self) -> u16 {
        u16::from_le(self.field::<u16>(self.avail_offset()).read())
    }

    /// Asks the device for used-buffer interrupts again, as an interrupt-driven driver's
    /// ring does (takeover tests); the next `lay_out` suppresses them.
    fn request_interrupts(&mut self) {
        let flags = self.avail_flags() & !flags::AVAIL_NO_INTERRUPT;
        self.field::<u16>(self.avail_offset()).write(flags.to_le());
        fence(Ordering::SeqCst);
    }

    /// Publishes `head` as available entry `index` (a free-running counter).
    fn make_available(&mut self, index: u16, head: u16) {
        let slot = self.avail_offset() + 4 + 2 * usize::from(index % self.size);
        self.field::<u16>(slot).write(head.to_le());
        // The descriptors and the ring entry must be visible before the new index (2.7.13).
        fence(Ordering::SeqCst);
        let idx = self.avail_offset() + 2;
        self.field::<u16>(idx).write(index.wrapping_add(1).to_le());
    }

    /// The device's free-running count of used entries.
    fn used_index(&mut self) -> u16 {
        u16::from_le(self.field::<u16>(self.used_offset() + 2).read())
    }

    /// Used entry `index` (free-running): the head descriptor and the bytes written.
    fn used_element(&mut self, index: u16) -> (u32, u32) {
        let at = self.used_offset() + 4 + 8 * usize::from(index % self.size);
        let id = u32::from_le(self.field::<u32>(at).read());
        let len = u32::from_le(self.field::<u32>(at + 4).read());
        (id, len)
    }

    /// Whether the device asks to be notified of new buffers (2.7.10), read after the new
    /// available index is visible (the fence orders that store before this load).
    fn device_wants_notification(&mut self) -> bool {
        fence(Ordering::SeqCst);
        u16::from_le(self.field::<u16>(self.used_offset()).read()) & flags::USED_NO_NOTIFY == 0
    }

    /// How many used entries are waiting after `next_used`, bounded by the queue size so
    /// that a device reporting a wild index cannot keep the driver looping.
    fn pending_used(&mut self, next_used: u16) -> u16 {
        let used = self.used_index();
        // The reads of the entries must not move before the read of the index.
        fence(Ordering::SeqCst);
        used.wrapping_sub(next_used).min(self.size)
    }
}

/// N packet buffers of [`BUFFER_SIZE`] bytes, back to back.
struct Buffers<const N: usize> {
    memory: DmaRegion,
}

impl<const N: usize> Buffers<N> {
    fn new(memory: DmaRegion) -> Self {
        assert!(memory.len() >= N * BUFFER_SIZE);
        Buffers { memory }
    }

    fn phys_addr(&self, slot: usize) -> u64 {
        self.memory.phys_addr() + ((slot % N) * BUFFER_SIZE) as u64
    }

    /// Raw pointer to buffer `slot % N`, dereferenced only under the ownership rule of
    /// this module.
    fn ptr(&self, slot: usize) -> *mut u8 {
        self.memory.as_ptr().wrapping_add((slot % N) * BUFFER_SIZE)
    }
}

/// The queue's geometry for this reset.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Buffers in use: at most N, and at most half the queue (two descriptors each).
    slots: usize,
    header_len: usize,
}

impl Geometry {
    fn new<const N: usize>(size: u16, header_len: usize) -> Self {
        Geometry { slots: N.min(usize::from(size) / 2), header_len }
    }

    /// The buffer a used entry's head descriptor names, if it is one of ours.
    fn slot_of(&self, id: u32) -> Option<usize> {
        let id = usize::try_from(id).ok()?;
        (id.is_multiple_of(2) && id / 2 < self.slots).then_some(id / 2)
    }
}

/// The transmit queue: frames built in place, handed to the device, reclaimed when used.
pub struct TxQueue<const N: usize> {
    ring: Ring,
    buffers: Buffers<N>,
    geometry: Geometry,
    /// Slots the driver owns, as a stack.
    free: [u16; N],
    free_count: usize,
    /// Slots the device owns.
    in_flight: [bool; N],
    next_avail: u16,
    next_used: u16,
}

impl<const N: usize> TxQueue<N> {
    pub fn new(ring: DmaRegion, buffers: DmaRegion) -> Self {
        TxQueue {
            ring: Ring::new(ring),
            buffers: Buffers::new(buffers),
            geometry: Geometry { slots: 0, header_len: 0 },
            free: [0; N],
            free_count: 0,
            in_flight: [false; N],
            next_avail: 0,
            next_used: 0,
        }
    }

    /// Empties the queue for `size` entries and `header_len`-byte headers, every buffer
    /// free, and returns where the rings are. Only while the device is reset.
    pub fn reset(&mut self, size: u16, header_len: usize) -> QueueRings {
        self.ring.lay_out(size);
        self.geometry = Geometry::new::<N>(self.ring.size, header_len);
        for slot in 0..self.geometry.slots {
            // The device reads the header, then the frame from the next descriptor.
            let header = self.buffers.phys_addr(slot);
            self.ring
                .set_descriptor(2 * slot as u16, Descriptor::new(header, header_len, flags::NEXT, 2 * slot as u16 + 1));
            self.free[slot] = (self.geometry.slots - 1 - slot) as u16;
        }
        self.free_count = self.geometry.slots;
        self.in_flight = [false; N];
        self.next_avail = 0;
        self.next_used = 0;
        self.ring.rings()
    }

    /// Buffers in use (the ring's capacity in frames).
    pub fn capacity(&self) -> usize {
        self.geometry.slots
    }

    /// Frames handed to the device and not yet reclaimed.
    pub fn in_flight(&self) -> usize {
        self.geometry.slots - self.free_count
    }

    pub fn is_full(&self) -> bool {
        self.free_count == 0
    }

    /// Builds a `len`-byte frame with `fill` behind a zeroed header in a free buffer and
    /// makes it available to the device. The caller checks `len` against the MTU.
    pub fn push(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        if len > FRAME_CAPACITY {
            return Err(NicError::too_large(len, FRAME_CAPACITY));
        }
        if self.free_count == 0 {
            return Err(NicError::RingFull);
        }
        let slot = usize::from(self.free[self.free_count - 1]);
        let header_len = self.geometry.header_len;
        {
            // SAFETY: `slot` is on the free stack, so the device does not own it (it was
            // never published, or its head came back in the used ring); the buffer holds
            // BUFFER_SIZE bytes, enough for the header and FRAME_CAPACITY >= len bytes at
            // FRAME_OFFSET; nothing else refers to it while `buffer` lives.
            let buffer = unsafe { core::slice::from_raw_parts_mut(self.buffers.ptr(slot), FRAME_OFFSET + len) };
            // No offloads: flags 0, GSO_NONE, and num_buffers 0 on transmit.
            buffer[..header_len].fill(0);
            fill(&mut buffer[FRAME_OFFSET..]);
        }
        self.free_count -= 1;
        self.in_flight[slot] = true;
        let frame = self.buffers.phys_addr(slot) + FRAME_OFFSET as u64;
        self.ring.set_descriptor(2 * slot as u16 + 1, Descriptor::new(frame, len, 0, 0));
        self.ring.make_available(self.next_avail, 2 * slot as u16);
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(())
    }

    /// Takes back every buffer the device has used, in whatever order it used them.
    /// Entries that name no buffer the device owns (a broken device) are skipped.
    pub fn reclaim(&mut self) -> usize {
        let mut freed = 0;
        for _ in 0..self.ring.pending_used(self.next_used) {
            let (id, _) = self.ring.used_element(self.next_used);
            self.next_used = self.next_used.wrapping_add(1);
            let Some(slot) = self.geometry.slot_of(id) else {
                continue;
            };
            if !core::mem::replace(&mut self.in_flight[slot], false) {
                continue;
            }
            self.free[self.free_count] = slot as u16;
            self.free_count += 1;
            freed += 1;
        }
        freed
    }

    pub fn device_wants_notification(&mut self) -> bool {
        self.ring.device_wants_notification()
    }

    /// Whether the available ring asks the device for no interrupts.
    pub fn interrupts_suppressed(&mut self) -> bool {
        self.ring.avail_flags() & flags::AVAIL_NO_INTERRUPT != 0
    }

    pub fn request_interrupts(&mut self) {
        self.ring.request_interrupts()
    }
}

/// What one [`RxQueue::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPoll {
    /// Whether a frame was lent to the handler (false: dropped, or not one of ours).
    pub delivered: bool,
}

/// The receive queue: every buffer made available to the device, lent to the handler
/// when used, then made available again.
pub struct RxQueue<const N: usize> {
    ring: Ring,
    buffers: Buffers<N>,
    geometry: Geometry,
    /// Slots the device owns.
    posted: [bool; N],
    next_avail: u16,
    next_used: u16,
}

impl<const N: usize> RxQueue<N> {
    pub fn new(ring: DmaRegion, buffers: DmaRegion) -> Self {
        RxQueue {
            ring: Ring::new(ring),
            buffers: Buffers::new(buffers),
            geometry: Geometry { slots: 0, header_len: 0 },
            posted: [false; N],
            next_avail: 0,
            next_used: 0,
        }
    }

    /// Empties the queue for `size` entries and makes every buffer available. Only while
    /// the device is reset; it sees the buffers once the queue is enabled.
    pub fn reset(&mut self, size: u16, header_len: usize) -> QueueRings {
        self.ring.lay_out(size);
        self.geometry = Geometry::new::<N>(self.ring.size, header_len);
        self.posted = [false; N];
        self.next_avail = 0;
        self.next_used = 0;
        for slot in 0..self.geometry.slots {
            let header = self.buffers.phys_addr(slot);
            self.ring.set_descriptor(
                2 * slot as u16,
                Descriptor::new(header, header_len, flags::WRITE | flags::NEXT, 2 * slot as u16 + 1),
            );
            self.ring.set_descriptor(
                2 * slot as u16 + 1,
                Descriptor::new(header + FRAME_OFFSET as u64, FRAME_CAPACITY, flags::WRITE, 0),
            );
            self.post(slot);
        }
        self.ring.rings()
    }

    fn post(&mut self, slot: usize) {
        self.posted[slot] = true;
        self.ring.make_available(self.next_avail, 2 * slot as u16);
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Buffers in use.
    pub fn capacity(&self) -> usize {
        self.geometry.slots
    }

    /// If the device has used a buffer, lends its frame to `handler` (unless it is too
    /// short or too long to be a frame), makes the buffer available again and says what
    /// happened; `None` when nothing is pending.
    pub fn poll(&mut self, handler: &mut dyn FnMut(&[u8])) -> Option<RxPoll> {
        if self.ring.pending_used(self.next_used) == 0 {
            return None;
        }
        let (id, written) = self.ring.used_element(self.next_used);
        self.next_used = self.next_used.wrapping_add(1);
        let slot = self.geometry.slot_of(id).filter(|&slot| self.posted[slot]);
        let Some(slot) = slot else {
            return Some(RxPoll { delivered: false });
        };
        self.posted[slot] = false;
        let frame_len = (written as usize).checked_sub(self.geometry.header_len);
        let delivered = match frame_len {
            Some(len) if (ETHERNET_HEADER_LEN..=FRAME_CAPACITY).contains(&len) => {
                // SAFETY: the device returned the buffer in the used ring, so it has
                // finished writing it and will not write it again until `post` below
                // publishes it; `len` is within the FRAME_CAPACITY bytes at FRAME_OFFSET.
                let frame = unsafe { core::slice::from_raw_parts(self.buffers.ptr(slot).add(FRAME_OFFSET), len) };
                handler(frame);
                true
            }
            _ => false,
        };
        self.post(slot);
        Some(RxPoll { delivered })
    }

    pub fn device_wants_notification(&mut self) -> bool {
        self.ring.device_wants_notification()
    }

    pub fn interrupts_suppressed(&mut self) -> bool {
        self.ring.avail_flags() & flags::AVAIL_NO_INTERRUPT != 0
    }

    pub fn request_interrupts(&mut self) {
        self.ring.request_interrupts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_layout_puts_the_used_ring_on_the_next_page() {
        // 256 entries: 4096 B of descriptors, 518 B of avail ring, used ring at 8 KiB.
        assert_eq!(legacy_used_offset(256), 8192);
        assert_eq!(legacy_used_offset(128), 4096);
        assert_eq!(legacy_used_offset(8), 4096);
        assert_eq!(QUEUE_MEMORY, 12288);
    }

    #[test]
    fn used_entries_map_to_slots_only_for_our_head_descriptors() {
        let g = Geometry::new::<32>(256, 12);
        assert_eq!(g.slots, 32);
        assert_eq!(g.slot_of(0), Some(0));
        assert_eq!(g.slot_of(62), Some(31));
        assert_eq!(g.slot_of(63), None);
        assert_eq!(g.slot_of(64), None);
        assert_eq!(g.slot_of(u32::MAX), None);
    }

    #[test]
    fn a_small_queue_limits_the_buffers_in_use() {
        assert_eq!(Geometry::new::<32>(16, 10).slots, 8);
        assert_eq!(Geometry::new::<32>(1, 10).slots, 0);
    }
}
