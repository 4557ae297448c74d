//! The split virtqueue's layout as both sides see it: the addresses of a queue's three
//! parts that the driver hands the device ([`QueueRings`]), and where the legacy
//! interface requires the used ring to be ([`legacy_used_offset`]). A leaf module: the
//! queues (`queue`) lay their rings out by it, the transports check and program it.

/// Bytes of one descriptor.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Legacy rings are laid out in pages of this size.
pub const PAGE: usize = 4096;

/// `value` rounded up to a multiple of `align`.
pub const fn align_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

/// Offset of the used ring from the descriptor table for a queue of `size` entries.
pub const fn legacy_used_offset(size: u16) -> usize {
    let size = size as usize;
    align_up(DESCRIPTOR_SIZE * size + 6 + 2 * size, PAGE)
}

/// Device-visible addresses of one split virtqueue's three parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRings {
    /// Entries in the queue (a power of two).
    pub size: u16,
    /// The descriptor table (16-byte aligned).
    pub descriptors: u64,
    /// The driver area: the available ring (2-byte aligned).
    pub driver: u64,
    /// The device area: the used ring (4-byte aligned).
    pub device: u64,
}
