//! A polled, interrupt-free virtio-net driver over virtio-pci and virtio-mmio,
//! implementing [`netdump_core::nic::PolledNic`], for both of virtio-pci's interfaces:
//!
//! - **legacy** (virtio 0.9.5): registers in the I/O BAR0, 32 feature bits, queue sizes
//!   fixed by the device (QEMU `-device virtio-net-pci,disable-modern=on`, 1af4:1000);
//! - **modern** (virtio 1.x): structures found through vendor-specific PCI capabilities in
//!   memory BARs (QEMU `-device virtio-net-pci,disable-legacy=on`, 1af4:1041, 64-bit
//!   BAR4). A transitional device (QEMU's default, 1af4:1000 with both) is driven through
//!   its modern interface.
//!
//! and over **virtio-mmio** ([`MmioTransport`]: one register block, no PCI; version 2 or
//! legacy version 1; QEMU `-M microvm -device virtio-net-device`, Firecracker), with the
//! same queue code.
//!
//! The driver owns what the integrator hands it: a [`Transport`] (usually
//! [`PciTransport::probe`], which chooses the interface, or [`MmioTransport::new`]) and a [`DmaRegion`] of
//! [`VirtioNet::DMA_SIZE`] bytes, out of which it carves one receive and one transmit split
//! virtqueue and their packet buffers. It never allocates.
//!
//! ```text
//! DMA region (4096-byte aligned):
//!   receive queue rings    12 KiB  (descriptors, avail ring, used ring for 256 entries)
//!   transmit queue rings   12 KiB
//!   receive buffers        RX × 2 KiB
//!   transmit buffers       TX × 2 KiB     (32 + 32: 155 648 B)
//! ```
//!
//! What is negotiated, and why, is in [`features`]. On PCI, interrupts are impossible three
//! times over: INTx disabled in the PCI command register, MSI and MSI-X turned off, and both
//! available rings flagged `NO_INTERRUPT` (on virtio-mmio the flag, and pending causes
//! acknowledged at every reset) (with `RING_EVENT_IDX` not negotiated, so the
//! device honours the flag). `unsafe` lives in `queue` (rings and buffers in DMA memory)
//! and in the register blocks of `netdump-pci`.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod features;
mod layout;
mod queue;
pub mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod mmio_tests;
#[cfg(test)]
mod tests;

use netdump_core::nic::{NicError, PolledNic, StatusPacer, check_frame_len};
use netdump_pci::{ConfigSpace, DmaError, DmaRegion, PciDevice, PciFunction};

pub use features::{Features, Interface, Negotiated, NegotiationError};
pub use queue::{BUFFER_SIZE, FRAME_CAPACITY, MAX_QUEUE_SIZE, QUEUE_MEMORY};
pub use transport::{
    DeviceStatus, LegacyTransport, MmioDeviceSpec, MmioError, MmioTransport, ModernTransport, PciBacked, PciTransport,
    ProbeError, Transport,
};

use queue::{RxQueue, TxQueue};

/// Red Hat's PCI vendor ID, which every virtio device uses.
pub const VENDOR_ID: u16 = 0x1AF4;
/// virtio-net's transitional (legacy-capable) and modern-only device IDs.
pub const SUPPORTED_DEVICES: &[(u16, u16)] = &[(VENDOR_ID, 0x1000), (VENDOR_ID, 0x1041)];

/// Required alignment of the DMA region's start: legacy rings begin on a page.
pub const DMA_ALIGN: usize = 4096;

/// Bytes of DMA memory for `tx` transmit and `rx` receive buffers.
pub const fn dma_size(tx: usize, rx: usize) -> usize {
    2 * QUEUE_MEMORY + (tx + rx) * BUFFER_SIZE
}

/// DMA memory for the default 32 + 32 buffers (155 648 bytes).
pub const DEFAULT_DMA_SIZE: usize = dma_size(32, 32);

/// The first virtio-net function on the machine.
pub fn find<C: ConfigSpace + ?Sized>(config: &mut C) -> Option<PciFunction> {
    netdump_pci::enumerate(config).find(|f| SUPPORTED_DEVICES.contains(&(f.vendor_id, f.device_id)))
}

/// virtio-net's queues (5.1.2): receiveq1 and transmitq1.
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;

/// Offsets in virtio-net's device configuration (5.1.4).
mod config {
    pub const MAC: usize = 0;
    pub const STATUS: usize = 6;
    pub const MTU: usize = 10;
    /// `status` bit: link up.
    pub const LINK_UP: u16 = 1;
}

/// Bounds of the driver's waits, in register reads: each is a bus round trip (about a
/// microsecond on real hardware, less in an emulator).
mod bound {
    /// Reads of the device status after writing 0, waiting for the reset to finish
    /// (4.1.4.3.2: the driver MUST wait for a read of 0 before re-initialising).
    pub const RESET_POLL_READS: u32 = 10_000;
    /// Attempts at reading the MAC address without the configuration changing meanwhile
    /// (2.5.1: re-read while `config_generation` moves).
    pub const CONFIG_READ_ATTEMPTS: u32 = 16;
}

/// Why [`VirtioNet::new`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region is too small (it needs [`VirtioNet::DMA_SIZE`] bytes from a
    /// [`DMA_ALIGN`]-aligned start) or its mapping cannot be aligned.
    Dma(DmaError),
    /// The function does not answer, or its registers read all ones.
    DeviceGone,
    /// The device offers no `MAC` feature: there is no station address to use.
    NoMacAddress,
    /// A modern device that does not offer `VERSION_1`.
    NoVersion1,
    /// The device has no queue `queue` (0 receive, 1 transmit).
    QueueAbsent {
        /// The queue's index.
        queue: u16,
    },
    /// A legacy device's fixed queue size is not a power of two of 2 to
    /// [`MAX_QUEUE_SIZE`] entries.
    QueueSizeUnusable {
        /// The queue's index.
        queue: u16,
        /// The size the device fixes, in entries.
        size: u16,
    },
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Dma(e) => write!(f, "virtio-net DMA memory: {e}"),
            InitError::DeviceGone => f.write_str("virtio-net device not responding"),
            InitError::NoMacAddress => f.write_str("virtio-net device offers no MAC address"),
            InitError::NoVersion1 => f.write_str("modern virtio-net device without VERSION_1"),
            InitError::QueueAbsent { queue } => write!(f, "virtio-net queue {queue} absent"),
            InitError::QueueSizeUnusable { queue, size } => write!(
                f,
                "virtio-net queue {queue} has {size} entries (2 to {MAX_QUEUE_SIZE}, a power of two, supported)"
            ),
        }
    }
}

impl From<DmaError> for InitError {
    fn from(e: DmaError) -> Self {
        InitError::Dma(e)
    }
}

impl From<NegotiationError> for InitError {
    fn from(e: NegotiationError) -> Self {
        match e {
            NegotiationError::NoMacAddress => InitError::NoMacAddress,
            NegotiationError::NoVersion1 => InitError::NoVersion1,
        }
    }
}

/// A virtio-net device driven by polling, with `TX` transmit and `RX` receive buffers
/// (1 to 128 each; a queue smaller than twice that uses fewer).
pub struct VirtioNet<T: Transport, const TX: usize = 32, const RX: usize = 32> {
    transport: T,
    rx: RxQueue<RX>,
    tx: TxQueue<TX>,
    mac: [u8; 6],
    negotiated: Negotiated,
    /// When `transmit` reads the device status and the link.
    health: StatusPacer,
    /// Frames were made available by `transmit_deferred` since the last notification.
    unnotified: bool,
}

impl<T: Transport, const TX: usize, const RX: usize> VirtioNet<T, TX, RX> {
    /// Bytes of DMA memory [`new`](Self::new) needs.
    pub const DMA_SIZE: usize = dma_size(TX, RX);

    /// Each buffer takes two descriptors of a queue of at most 256.
    const VALID_BUFFER_COUNTS: () = assert!(
        TX >= 1 && TX <= MAX_QUEUE_SIZE as usize / 2 && RX >= 1 && RX <= MAX_QUEUE_SIZE as usize / 2,
        "buffer counts must be between 1 and 128"
    );

    /// Takes over a device: carves the queues out of `dma`, reads the offered features,
    /// the station address (and MTU, if offered) and checks both queues exist. It does not
    /// start the device: call [`reset`](PolledNic::reset) before sending or receiving.
    ///
    /// Construct it while no other driver is using the device (it selects queues to read
    /// their sizes).
    pub fn new(mut transport: T, mut dma: DmaRegion) -> Result<Self, InitError> {
        let () = Self::VALID_BUFFER_COUNTS;
        let rx_ring = dma.take(QUEUE_MEMORY, DMA_ALIGN)?;
        let tx_ring = dma.take(QUEUE_MEMORY, DMA_ALIGN)?;
        let rx_buffers = dma.take(RX * BUFFER_SIZE, DMA_ALIGN)?;
        let tx_buffers = dma.take(TX * BUFFER_SIZE, DMA_ALIGN)?;

        if !transport.is_present() || transport.status().bits() == u8::MAX {
            return Err(InitError::DeviceGone);
        }
        let negotiated = negotiate(&mut transport)?;
        for queue in [RX_QUEUE, TX_QUEUE] {
            queue_size(&mut transport, queue)?;
        }
        let mac = read_mac(&mut transport);
        Ok(VirtioNet {
            transport,
            rx: RxQueue::new(rx_ring, rx_buffers),
            tx: TxQueue::new(tx_ring, tx_buffers),
            mac,
            negotiated,
            health: StatusPacer::default(),
            unnotified: false,
        })
    }

    /// Which interface, legacy or modern, the driver runs the device through.
    pub fn interface(&self) -> Interface {
        self.transport.interface()
    }

    /// The features accepted at the last reset (before the first: the ones that will be).
    pub fn features(&self) -> Features {
        self.negotiated.features
    }

    /// Whether the device reports link (always true without the `STATUS` feature).
    pub fn link_up(&mut self) -> bool {
        !self.negotiated.features.contains(Features::STATUS)
            || self.transport.config_u16(config::STATUS) & config::LINK_UP != 0
    }

    /// Frames queued and not yet reclaimed by [`poll_transmit`](PolledNic::poll_transmit).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Frames the transmit queue holds at once (buffers in use after the last reset).
    pub fn tx_capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Receive buffers in use after the last reset.
    pub fn rx_capacity(&self) -> usize {
        self.rx.capacity()
    }

    /// Whether both available rings ask the device for no interrupts.
    pub fn interrupts_suppressed(&mut self) -> bool {
        self.rx.interrupts_suppressed() && self.tx.interrupts_suppressed()
    }

    /// Clears `NO_INTERRUPT` in both available rings, so that the device raises
    /// used-buffer interrupts as for an interrupt-driven OS driver: for takeover tests that
    /// play that driver. The next [`reset`](PolledNic::reset) suppresses them again.
    pub fn request_interrupts(&mut self) {
        self.rx.request_interrupts();
        self.tx.request_interrupts();
    }

    /// The transport, e.g. to read the device status or its PCI function.
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Resets the device (status 0) and waits, bounded, for it to read back 0.
    fn reset_device(&mut self) -> Result<(), NicError> {
        self.transport.set_status(DeviceStatus::empty());
        for _ in 0..bound::RESET_POLL_READS {
            match self.transport.status().bits() {
                0 => return Ok(()),
                u8::MAX => return Err(NicError::DeviceGone),
                _ => {}
            }
        }
        Err(NicError::ResetTimeout)
    }

    /// Gives up on the device for this reset: FAILED tells it so (3.1.1 step 8's "if any
    /// of these steps go irrecoverably wrong").
    fn fail(&mut self) -> NicError {
        let status = self.transport.status();
        self.transport.set_status(status | DeviceStatus::FAILED);
        NicError::DeviceGone
    }

    /// The initialisation sequence of 3.1.1 after the reset, through DRIVER_OK.
    fn initialise(&mut self) -> Result<(), NicError> {
        let mut status = DeviceStatus::ACKNOWLEDGE;
        self.transport.set_status(status);
        status |= DeviceStatus::DRIVER;
        self.transport.set_status(status);

        let negotiated = negotiate(&mut self.transport).map_err(|_| self.fail())?;
        self.negotiated = negotiated;
        self.transport.set_driver_features(negotiated.features);
        if self.transport.interface() == Interface::Modern {
            status |= DeviceStatus::FEATURES_OK;
            self.transport.set_status(status);
            if !self.transport.status().contains(DeviceStatus::FEATURES_OK) {
                return Err(self.fail());
            }
        }

        let rx_size = queue_size(&mut self.transport, RX_QUEUE).map_err(|_| self.fail())?;
        let rings = self.rx.reset(rx_size, negotiated.header_len);
        self.transport.set_up_queue(RX_QUEUE, rings).map_err(|_| self.fail())?;
        let tx_size = queue_size(&mut self.transport, TX_QUEUE).map_err(|_| self.fail())?;
        let rings = self.tx.reset(tx_size, negotiated.header_len);
        self.transport.set_up_queue(TX_QUEUE, rings).map_err(|_| self.fail())?;

        // The queues now point at our memory: let the device master the bus.
        self.transport.enable_dma();
        status |= DeviceStatus::DRIVER_OK;
        self.transport.set_status(status);
        let now = self.transport.status();
        if now.bits() == u8::MAX {
            return Err(NicError::DeviceGone);
        }
        if now.intersects(DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED)
            || !now.contains(DeviceStatus::DRIVER_OK)
        {
            return Err(self.fail());
        }
        // Every receive buffer is available: tell the device, which may be holding frames
        // back for want of buffers.
        self.transport.notify(RX_QUEUE);
        Ok(())
    }
}

impl<T: PciBacked, const TX: usize, const RX: usize> VirtioNet<T, TX, RX> {
    /// The PCI function (the PCI transports).
    pub fn pci(&mut self) -> &mut PciDevice<T::Config> {
        self.transport.pci()
    }
}

/// Reads the offered features (and the MTU, if offered) and chooses what to accept.
fn negotiate<T: Transport>(transport: &mut T) -> Result<Negotiated, NegotiationError> {
    let offered = transport.device_features();
    let device_mtu = offered.contains(Features::MTU).then(|| transport.config_u16(config::MTU));
    features::negotiate(offered, transport.interface(), device_mtu)
}

/// The size to give queue `queue`: a legacy device's own (a power of two up to
/// [`MAX_QUEUE_SIZE`]), or the largest power of two up to both the modern device's
/// maximum and [`MAX_QUEUE_SIZE`].
fn queue_size<T: Transport>(transport: &mut T, queue: u16) -> Result<u16, InitError> {
    let max = transport.queue_max_size(queue);
    if max == 0 {
        return Err(InitError::QueueAbsent { queue });
    }
    let size = if transport.queue_size_fixed() { max } else { 1 << max.min(MAX_QUEUE_SIZE).ilog2() };
    if !(2..=MAX_QUEUE_SIZE).contains(&size) || !size.is_power_of_two() {
        return Err(InitError::QueueSizeUnusable { queue, size });
    }
    Ok(size)
}

/// The station address, re-read while the configuration generation moves (bounded).
fn read_mac<T: Transport>(transport: &mut T) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for _ in 0..bound::CONFIG_READ_ATTEMPTS {
        let before = transport.config_generation();
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = transport.config_u8(config::MAC + i);
        }
        if transport.config_generation() == before {
            break;
        }
    }
    mac
}

impl<T: Transport, const TX: usize, const RX: usize> PolledNic for VirtioNet<T, TX, RX> {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        usize::from(self.negotiated.mtu)
    }

    /// Full takeover, following virtio 1.2's 3.1.1 "Driver Requirements: Device
    /// Initialization": interrupts made impossible at the PCI level, device reset (bounded
    /// wait for status 0), ACKNOWLEDGE, DRIVER, features, FEATURES_OK (modern), both queues
    /// rebuilt from scratch, bus mastering, DRIVER_OK. Whatever the OS driver left (rings
    /// mid-transfer, MSI-X on, half-initialised status) the device reset clears on the
    /// device side and the rebuild on ours. At most about 10 100 register accesses.
    fn reset(&mut self) -> Result<(), NicError> {
        if !self.transport.is_present() {
            return Err(NicError::DeviceGone);
        }
        self.transport.take_over();
        if self.transport.status().bits() == u8::MAX {
            return Err(NicError::DeviceGone);
        }
        self.health.reset();
        self.unnotified = false;
        self.reset_device()?;
        self.initialise()
    }

    /// Builds the frame in place behind its header and makes it available; notifies the
    /// device unless it said it is already processing the queue. Never waits.
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.queue(len, fill)?;
        self.unnotified = false;
        if self.tx.device_wants_notification() {
            self.transport.notify(TX_QUEUE);
        }
        Ok(())
    }

    /// As `transmit`, but the notification waits for
    /// [`flush_transmit`](PolledNic::flush_transmit): each frame is made available at
    /// once (a device already processing the queue takes it), and a burst costs at most
    /// one notification (an I/O port or MMIO write, a trip to the device's thread under
    /// QEMU) instead of one per frame the device was idle for.
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.queue(len, fill)?;
        self.unnotified = true;
        Ok(())
    }

    fn flush_transmit(&mut self) {
        if core::mem::take(&mut self.unnotified) && self.tx.device_wants_notification() {
            self.transport.notify(TX_QUEUE);
        }
    }

    fn poll_transmit(&mut self) -> usize {
        self.tx.reclaim()
    }

    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        match self.rx.poll(handler) {
            None => Ok(false),
            Some(_) => {
                if self.rx.device_wants_notification() {
                    self.transport.notify(RX_QUEUE);
                }
                Ok(true)
            }
        }
    }
}

impl<T: Transport, const TX: usize, const RX: usize> VirtioNet<T, TX, RX> {
    /// Checks the length (and the device, as [`StatusPacer`] says), builds the frame in a
    /// free buffer and makes it available, without notifying.
    fn queue(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        check_frame_len(len, self.mtu())?;
        let full = self.tx.is_full();
        if self.health.due(full) {
            let status = self.transport.status();
            if status.bits() == u8::MAX
                || status.intersects(DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED)
                || !status.contains(DeviceStatus::DRIVER_OK)
            {
                return Err(NicError::DeviceGone);
            }
            if !self.link_up() {
                return Err(NicError::LinkDown);
            }
        }
        if full {
            return Err(NicError::RingFull);
        }
        self.tx.push(len, fill)
    }
}
