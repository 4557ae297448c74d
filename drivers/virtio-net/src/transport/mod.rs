//! The transports: how the driver reaches the device's status, features, configuration,
//! queues and notifications (virtio 1.2, sections 4.1 and 4.2).
//!
//! - [`LegacyTransport`]: virtio 0.9.5's registers in the PCI I/O BAR (BAR0).
//! - [`ModernTransport`]: virtio 1.x's structures, found through vendor-specific PCI
//!   capabilities, in memory BARs (QEMU puts them in a 64-bit BAR4).
//! - [`PciTransport`]: whichever of the two a PCI device offers, modern first.
//! - [`MmioTransport`]: virtio-mmio, one register block and no PCI (QEMU's `microvm`,
//!   Firecracker), version 2 (virtio 1.x) or version 1 (legacy).
//!
//! All are generic over their register blocks (and the PCI ones over the configuration
//! space accessor), so that host tests drive them against a fake device.

mod legacy;
mod mmio;
mod modern;
mod pci;

pub use legacy::LegacyTransport;
pub use mmio::{MMIO_MAGIC, MMIO_MIN_LEN, MmioDeviceSpec, MmioError, MmioTransport, NET_DEVICE_ID};
pub use modern::{ModernTransport, StructureKind, VirtioCapability};
pub use pci::{PciTransport, ProbeError};

use bitflags::bitflags;
use netdump_pci::{ConfigSpace, PciDevice};

pub use crate::layout::QueueRings;

use crate::features::{Features, Interface};

bitflags! {
    /// The device status field (virtio 1.2, 2.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct DeviceStatus: u8 {
        /// The guest has noticed the device.
        const ACKNOWLEDGE = 1;
        /// The guest knows how to drive it.
        const DRIVER = 2;
        /// The driver is set up and ready to drive the device.
        const DRIVER_OK = 4;
        /// Feature negotiation is complete (modern only).
        const FEATURES_OK = 8;
        /// The device hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 0x40;
        /// The driver gave up on the device.
        const FAILED = 0x80;
    }
}

/// "No MSI-X vector": an event routed nowhere (virtio 1.2, 4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xFFFF;

/// Why a queue could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The device has no queue with this index (its size reads 0).
    Absent,
    /// The requested size is not what the device allows (legacy devices fix it).
    BadSize {
        /// The size asked for, in entries.
        requested: u16,
        /// The device's maximum (legacy: its one allowed size), in entries.
        max: u16,
    },
    /// The rings are not laid out as the interface requires (legacy: one 4 KiB-aligned
    /// block, used ring on the next 4 KiB boundary after the available ring).
    BadLayout,
    /// An address the interface cannot express (legacy: page frame numbers are 32 bits).
    AddressTooHigh,
    /// The queue's notification address lies outside the notification structure.
    NotifyOutOfRange,
    /// The device did not keep what was written (e.g. its MSI-X vector).
    NotAccepted,
}

/// What the driver needs from a transport.
pub trait Transport {
    /// Legacy or modern.
    fn interface(&self) -> Interface;

    /// Whether the device still answers (PCI: its vendor ID; MMIO: its magic value).
    fn is_present(&mut self) -> bool;

    /// Makes the registers reachable and every interrupt impossible. PCI: I/O or memory
    /// decode on, INTx disabled in the command register, MSI and MSI-X off, bus mastering
    /// left alone. MMIO: pending interrupts acknowledged (its line is never unmasked).
    /// Called first thing in every reset, since the OS driver may have left any of these
    /// otherwise.
    fn take_over(&mut self);

    /// Lets the device reach the queues' memory, once they point at it (PCI: bus
    /// mastering; MMIO: nothing to do).
    fn enable_dma(&mut self);

    /// The device status (virtio 1.2, 2.1).
    fn status(&mut self) -> DeviceStatus;
    /// Writes the status; writing the empty status resets the device.
    fn set_status(&mut self, status: DeviceStatus);

    /// The features the device offers (legacy: the low 32 bits only).
    fn device_features(&mut self) -> Features;
    /// The features the driver last wrote, as the device reports them.
    fn driver_features(&mut self) -> Features;
    /// Writes the features the driver accepts (legacy: the low 32 bits only), before
    /// `FEATURES_OK` (modern) or `DRIVER_OK`.
    fn set_driver_features(&mut self, features: Features);

    /// Changes whenever the device changes its configuration (legacy: always 0).
    fn config_generation(&mut self) -> u32;
    /// A byte of the device-specific configuration (virtio-net: MAC, status, MTU).
    fn config_u8(&mut self, offset: usize) -> u8;
    /// A 16-bit field of the device-specific configuration.
    fn config_u16(&mut self, offset: usize) -> u16;

    /// The largest size queue `index` may have; 0 if it does not exist.
    fn queue_max_size(&mut self, index: u16) -> u16;
    /// Whether the queue's size is fixed at [`queue_max_size`](Self::queue_max_size)
    /// (legacy) rather than chosen by the driver (modern).
    fn queue_size_fixed(&self) -> bool;
    /// Programs queue `index` with `rings` and enables it, with its interrupt vector (if
    /// any) routed nowhere. Only between the reset and DRIVER_OK.
    fn set_up_queue(&mut self, index: u16, rings: QueueRings) -> Result<(), QueueError>;
    /// Tells the device that queue `index` has new available buffers.
    fn notify(&mut self, index: u16);
}

/// A transport over a PCI function.
pub trait PciBacked: Transport {
    /// How the PCI function's configuration space is reached.
    type Config: ConfigSpace;

    /// The PCI function, e.g. for its command register.
    fn pci(&mut self) -> &mut PciDevice<Self::Config>;
}
