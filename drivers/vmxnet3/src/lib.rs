//! A polled, interrupt-free driver for VMware's vmxnet3 paravirtual NIC (PCI 15ad:07b0;
//! VMware's hypervisors, QEMU `-device vmxnet3`), implementing
//! [`netdump_core::nic::PolledNic`].
//!
//! The driver owns what the integrator hands it: the device's two register BARs (BAR0,
//! the data-path registers, and BAR1, configuration and commands, each a netdump-pci
//! [`RegisterBlock`]: an [`MmioBlock`](netdump_pci::MmioBlock) of [`regs::PT_SIZE`] and
//! [`regs::VD_SIZE`] bytes in a kernel), its PCI function, and a [`DmaRegion`] of
//! [`Vmxnet3::DMA_SIZE`] bytes out of which it carves every structure it shares with the
//! device. It never allocates.
//!
//! ```text
//! DMA region (512-byte aligned), for TX transmit and RX receive descriptors:
//!   DriverShared            720 B
//!   queue descriptors       512 B   (one TxQueueDesc, one RxQueueDesc; 128-aligned)
//!   TX ring                 TX × 16 B   } every ring 512-aligned
//!   TX completion ring      TX × 16 B   }
//!   TX data ring            TX × 128 B  }
//!   RX ring 0               RX × 16 B   }
//!   RX ring 1               32 × 16 B   }
//!   RX completion ring      (RX + 32) × 16 B
//!   TX buffers              TX × 1536 B
//!   RX buffers              RX × 1536 B        (32 + 32: 107 008 B)
//! ```
//!
//! Register offsets and commands are in [`regs`], the shared structures' layouts in
//! [`layout`]. `unsafe` lives in `dma` (volatile accesses to DMA memory by offset) and
//! `ring` (lending packet buffers); register access is netdump-pci's.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod dma;
pub mod layout;
pub mod regs;
mod ring;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use core::sync::atomic::{Ordering, fence};

use netdump_core::nic::{NicError, PolledNic, StatusPacer, check_frame_len};
use netdump_pci::{Command, ConfigSpace, DmaError, DmaRegion, PciDevice, PciFunction};

pub use layout::{DESCRIPTOR_SIZE, RX_BUFFER_SIZE, RX_RING1_SIZE, TX_BUFFER_SIZE};
pub use netdump_pci::RegisterBlock;
pub use ring::MIN_FRAME_LEN;

use dma::DmaBytes;
use layout::{DmaLayout, shared, value};
use ring::{RxQueue, TxQueue};

/// VMware's PCI vendor ID.
pub const VENDOR_ID: u16 = 0x15AD;
/// The vmxnet3's PCI IDs.
pub const SUPPORTED_DEVICES: &[(u16, u16)] = &[(VENDOR_ID, 0x07B0)];

/// The largest IP packet sent or received: standard Ethernet, no jumbo frames.
pub const MTU: usize = 1500;

/// Required alignment of the DMA region's physical (and virtual) start: ring bases are
/// 512-byte aligned (`VMXNET3_RING_BA_ALIGN`). A page-aligned region satisfies it.
pub const DMA_ALIGN: usize = layout::RING_ALIGN;

/// Bytes of DMA memory needed for `tx` transmit and `rx` receive descriptors.
pub const fn dma_size(tx: usize, rx: usize) -> usize {
    DmaLayout::new(tx, rx).size
}

/// DMA memory for the default 32 + 32 descriptors (107 008 bytes).
pub const DEFAULT_DMA_SIZE: usize = dma_size(32, 32);

/// The first vmxnet3 on the machine.
pub fn find<C: ConfigSpace + ?Sized>(config: &mut C) -> Option<PciFunction> {
    netdump_pci::enumerate(config).find(|f| SUPPORTED_DEVICES.contains(&(f.vendor_id, f.device_id)))
}

/// Why [`Vmxnet3::new`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region is too small (it needs [`Vmxnet3::DMA_SIZE`] bytes from a
    /// [`DMA_ALIGN`]-aligned start) or its mapping cannot be aligned.
    Dma(DmaError),
    /// The PCI function does not answer, or its registers read all ones.
    DeviceGone,
    /// The device does not offer revision 1 of the vmxnet3 interface (bit 0 of VRRS) or of
    /// UPT (bit 0 of UVRS), the only ones this driver speaks.
    UnsupportedRevision {
        /// VRRS as read: a bit per supported vmxnet3 revision.
        vrrs: u32,
        /// UVRS as read: a bit per supported UPT version.
        uvrs: u32,
    },
    /// Neither the permanent address nor MACL/MACH holds a unicast MAC address.
    NoMacAddress,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Dma(e) => write!(f, "vmxnet3 DMA memory: {e}"),
            InitError::DeviceGone => f.write_str("vmxnet3 not responding"),
            InitError::UnsupportedRevision { vrrs, uvrs } => {
                write!(f, "vmxnet3 without revision 1 (VRRS {vrrs:#x}, UVRS {uvrs:#x})")
            }
            InitError::NoMacAddress => f.write_str("vmxnet3 has no MAC address"),
        }
    }
}

impl From<DmaError> for InitError {
    fn from(e: DmaError) -> Self {
        InitError::Dma(e)
    }
}

/// Bounds of the driver's waits, in register reads. A vmxnet3 register access is a trap
/// into the hypervisor (a few microseconds on VMware, about one under QEMU/KVM, less under
/// TCG), and both VMware's device and QEMU's carry a command out within the write that
/// issues it, so every wait below ends at its first read on a working device: the bounds
/// only cap what a broken one costs.
mod bound {
    /// Reads of CMD after QUIESCE_DEV or RESET_DEV, waiting for result 0 (at most about
    /// 10 ms on VMware, 2–5 ms under QEMU TCG).
    pub const COMMAND_POLL_READS: u32 = 2_000;
    /// Reads of CMD after ACTIVATE_DEV, waiting for result 0 (a refusal is final on both
    /// device models; the bound is for a device that would take its time).
    pub const ACTIVATE_POLL_READS: u32 = 100;
}

/// A vmxnet3 driven by polling, with `TX` transmit and `RX` receive descriptors
/// (multiples of 32 from 32 to 4096: `VMXNET3_RING_SIZE_ALIGN`, the 12-bit descriptor
/// indices).
///
/// `R` is the register access (netdump-pci's `MmioBlock` on hardware), `C` the
/// configuration space of its PCI function (`netdump_pci::PortConfigSpace` on x86).
pub struct Vmxnet3<R: RegisterBlock, C: ConfigSpace, const TX: usize = 32, const RX: usize = 32> {
    /// BAR0: producer indices, interrupt masks.
    pt: R,
    /// BAR1: revisions, DriverShared address, commands, MAC.
    vd: R,
    pci: PciDevice<C>,
    shared: DmaBytes,
    queues: DmaBytes,
    tx: TxQueue<TX>,
    rx: RxQueue<RX>,
    mac: [u8; 6],
    /// When `transmit` asks for the link (device present? link up?).
    status: StatusPacer,
    /// The fill index of frames queued by `transmit_deferred` and not yet written to
    /// TXPROD.
    unflushed_fill: Option<usize>,
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> Vmxnet3<R, C, TX, RX> {
    /// Bytes of DMA memory [`new`](Self::new) needs.
    pub const DMA_SIZE: usize = dma_size(TX, RX);

    const VALID_RING_SIZES: () = assert!(
        TX >= 32 && TX.is_multiple_of(32) && TX <= 4096 && RX >= 32 && RX.is_multiple_of(32) && RX <= 4096,
        "ring sizes must be multiples of 32 between 32 and 4096"
    );

    /// Takes over a vmxnet3: carves every shared structure out of `dma`, turns on memory
    /// decode, checks the device offers revision 1 and reads the station address (the
    /// permanent one, else MACL/MACH). `pt` and `vd` are BAR0 and BAR1. It does not start
    /// the device: call [`reset`](PolledNic::reset) before sending or receiving.
    ///
    /// Construct it while no other driver is using the device (reading the permanent
    /// address is a command).
    pub fn new(pt: R, mut vd: R, mut pci: PciDevice<C>, mut dma: DmaRegion) -> Result<Self, InitError> {
        let () = Self::VALID_RING_SIZES;
        // In `DmaLayout::new`'s order and alignments: from a DMA_ALIGN-aligned start,
        // `take` pads exactly as the layout does, and DMA_SIZE bytes suffice.
        use layout::{BUFFER_ALIGN, QUEUE_DESC_ALIGN, RING_ALIGN};
        let mut take = |len: usize, align: usize| dma.take(len, align).map(DmaBytes::new);
        let shared = take(layout::SHARED_SIZE, DMA_ALIGN)?;
        let queues = take(layout::QUEUE_DESC_SIZE, QUEUE_DESC_ALIGN)?;
        let tx_ring = take(TX * DESCRIPTOR_SIZE, RING_ALIGN)?;
        let tx_comp = take(TX * DESCRIPTOR_SIZE, RING_ALIGN)?;
        let tx_data = take(TX * layout::TX_DATA_DESC_SIZE, RING_ALIGN)?;
        let rx_ring0 = take(RX * DESCRIPTOR_SIZE, RING_ALIGN)?;
        let rx_ring1 = take(RX_RING1_SIZE * DESCRIPTOR_SIZE, RING_ALIGN)?;
        let rx_comp = take(RxQueue::<RX>::COMPLETIONS * DESCRIPTOR_SIZE, RING_ALIGN)?;
        let tx_buffers = take(TX * TX_BUFFER_SIZE, BUFFER_ALIGN)?;
        let rx_buffers = take(RX * RX_BUFFER_SIZE, BUFFER_ALIGN)?;

        if !pci.is_present() {
            return Err(InitError::DeviceGone);
        }
        pci.enable(Command::MEMORY_SPACE);
        let vrrs = vd.read_u32(regs::VRRS);
        let uvrs = vd.read_u32(regs::UVRS);
        if vrrs == u32::MAX || uvrs == u32::MAX {
            return Err(InitError::DeviceGone);
        }
        if vrrs & regs::REVISION_1 == 0 || uvrs & regs::REVISION_1 == 0 {
            return Err(InitError::UnsupportedRevision { vrrs, uvrs });
        }
        let mac = read_mac_address(&mut vd).ok_or(InitError::NoMacAddress)?;
        Ok(Vmxnet3 {
            pt,
            vd,
            pci,
            shared,
            queues,
            tx: TxQueue::new(tx_ring, tx_comp, tx_data, tx_buffers),
            rx: RxQueue::new(rx_ring0, rx_ring1, rx_comp, rx_buffers),
            mac,
            status: StatusPacer::default(),
            unflushed_fill: None,
        })
    }

    /// Whether the device reports link (`GET_LINK`, bit 0).
    pub fn link_up(&mut self) -> bool {
        let link = command_result(&mut self.vd, regs::cmd::GET_LINK);
        link != u32::MAX && link & regs::LINK_UP != 0
    }

    /// Frames queued and not yet reclaimed by [`poll_transmit`](PolledNic::poll_transmit).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// Frames the transmit ring holds at once: all its descriptors but one.
    pub fn tx_capacity(&self) -> usize {
        TX - 1
    }

    /// Receive buffers the device holds after a reset: all of ring 0's descriptors but one.
    pub fn rx_capacity(&self) -> usize {
        RX - 1
    }

    /// The PCI function, e.g. to read its BARs.
    pub fn pci(&mut self) -> &mut PciDevice<C> {
        &mut self.pci
    }

    /// Masks every interrupt line through the IMRs (a write of 1 masks). QEMU ignores
    /// BAR0 writes while the device is not active, so `reset` does this before the
    /// quiesce (the OS driver's activation is still live) and again after activating.
    fn mask_interrupts(&mut self) {
        for line in 0..regs::MAX_INTRS {
            self.pt.write_u32(regs::IMR + regs::REG_ALIGN * line, 1);
        }
    }

    /// Issues QUIESCE_DEV or RESET_DEV and waits, bounded, for its result to read 0.
    fn command_and_wait(&mut self, command: u32) -> Result<(), NicError> {
        self.vd.write_u32(regs::CMD, command);
        for _ in 0..bound::COMMAND_POLL_READS {
            match self.vd.read_u32(regs::CMD) {
                0 => return Ok(()),
                u32::MAX => return Err(NicError::DeviceGone),
                _ => {}
            }
        }
        Err(NicError::ResetTimeout)
    }

    /// Selects revision 1 of the vmxnet3 and UPT interfaces (a reset forgets nothing of
    /// it on QEMU, but the device may have been handed to another driver meanwhile).
    fn select_revision(&mut self) -> Result<(), NicError> {
        for register in [regs::VRRS, regs::UVRS] {
            let offered = self.vd.read_u32(register);
            if offered == u32::MAX || offered & regs::REVISION_1 == 0 {
                return Err(NicError::DeviceGone);
            }
            self.vd.write_u32(register, regs::REVISION_1);
        }
        Ok(())
    }

    /// Writes DriverShared and the queue descriptor table from scratch: one TX and one RX
    /// queue, no offloads, interrupts disabled, unicast to us and broadcast.
    fn write_shared(&mut self) {
        let s = &mut self.shared;
        s.zero();
        s.write_u32(shared::MAGIC, layout::MAGIC);
        s.write_u32(shared::DRIVER_VERSION, value::DRIVER_VERSION);
        s.write_u32(shared::GOS, value::GOS_BITS | value::GOS_TYPE_LINUX << 2);
        s.write_u32(shared::REV_SUPPORTED, regs::REVISION_1);
        s.write_u32(shared::UPT_SUPPORTED, regs::REVISION_1);
        // No UPT1 features: no receive checksum verification, RSS, VLAN stripping or LRO.
        s.write_u64(shared::UPT_FEATURES, 0);
        s.write_u64(shared::QUEUE_DESC_PA, self.queues.phys());
        s.write_u32(shared::QUEUE_DESC_LEN, layout::QUEUE_DESC_SIZE as u32);
        s.write_u32(shared::MTU, MTU as u32);
        // One buffer per frame: a frame that does not fit comes back marked bad.
        s.write_u16(shared::MAX_RX_SG, 1);
        s.write_u8(shared::NUM_TX_QUEUES, 1);
        s.write_u8(shared::NUM_RX_QUEUES, 1);
        // One interrupt (index 0, INTx's), masked automatically once raised, every one
        // disabled; the IMRs and the PCI command register keep them off too.
        s.write_u8(shared::AUTO_MASK, 1);
        s.write_u8(shared::NUM_INTRS, 1);
        s.write_u8(shared::EVENT_INTR_IDX, 0);
        s.write_u8(shared::MOD_LEVELS, value::IML_HIGHEST);
        s.write_u32(shared::INTR_CTRL, value::IC_DISABLE_ALL);
        s.write_u32(shared::RX_MODE, value::RXM_UCAST | value::RXM_BCAST);
        // VLAN 0: untagged frames (Linux's "allow untagged pkts").
        s.write_u32(shared::VF_TABLE, 1);

        let q = &mut self.queues;
        q.zero();
        q.write_u64(layout::txq::RING_PA, self.tx.ring_phys());
        q.write_u64(layout::txq::DATA_RING_PA, self.tx.data_phys());
        q.write_u64(layout::txq::COMP_RING_PA, self.tx.completions_phys());
        q.write_u32(layout::txq::RING_SIZE, TX as u32);
        q.write_u32(layout::txq::DATA_RING_SIZE, TX as u32);
        q.write_u32(layout::txq::COMP_RING_SIZE, TX as u32);
        q.write_u8(layout::txq::INTR_IDX, 0);
        let r = layout::RX_QUEUE_DESC;
        q.write_u64(r + layout::rxq::RING0_PA, self.rx.ring0_phys());
        q.write_u64(r + layout::rxq::RING1_PA, self.rx.ring1_phys());
        q.write_u64(r + layout::rxq::COMP_RING_PA, self.rx.completions_phys());
        q.write_u32(r + layout::rxq::RING0_SIZE, RX as u32);
        q.write_u32(r + layout::rxq::RING1_SIZE, RX_RING1_SIZE as u32);
        q.write_u32(r + layout::rxq::COMP_RING_SIZE, RxQueue::<RX>::COMPLETIONS as u32);
        q.write_u8(r + layout::rxq::INTR_IDX, 0);
    }

    /// Writes the station address to MACL/MACH.
    fn write_mac(&mut self) {
        let m = self.mac;
        self.vd.write_u32(regs::MACL, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.vd.write_u32(regs::MACH, u32::from(u16::from_le_bytes([m[4], m[5]])));
    }
}

/// Issues a "get" command and returns its result.
fn command_result<R: RegisterBlock>(vd: &mut R, command: u32) -> u32 {
    vd.write_u32(regs::CMD, command);
    vd.read_u32(regs::CMD)
}

/// The permanent station address (GET_PERM_MAC_LO/HI), else the current one in
/// MACL/MACH (what Linux reads), whichever is a unicast address first.
fn read_mac_address<R: RegisterBlock>(vd: &mut R) -> Option<[u8; 6]> {
    let permanent = (command_result(vd, regs::cmd::GET_PERM_MAC_LO), command_result(vd, regs::cmd::GET_PERM_MAC_HI));
    let current = (vd.read_u32(regs::MACL), vd.read_u32(regs::MACH));
    [permanent, current].into_iter().map(|(low, high)| mac_from(low, high)).find(is_unicast)
}

fn mac_from(low: u32, high: u32) -> [u8; 6] {
    let [a, b, c, d] = low.to_le_bytes();
    let [e, f, _, _] = high.to_le_bytes();
    [a, b, c, d, e, f]
}

fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> PolledNic for Vmxnet3<R, C, TX, RX> {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    /// Full takeover, in the order of Linux's `vmxnet3_reset_work` (quiesce, reset,
    /// activate) with everything rebuilt from scratch: interrupts made impossible (PCI
    /// INTx disable, MSI/MSI-X off, every IMR masked), QUIESCE_DEV and RESET_DEV with
    /// bounded waits for their results, revision 1 selected, DriverShared, the queue
    /// descriptors and every ring rewritten in our memory, bus mastering, DSAL/DSAH,
    /// ACTIVATE_DEV (checked), interrupts masked again, RXPROD, the station address and
    /// the receive filter. About 70 register accesses on a working device; at most about
    /// 4 200 (the bounded waits) on a broken one.
    fn reset(&mut self) -> Result<(), NicError> {
        if !self.pci.is_present() {
            return Err(NicError::DeviceGone);
        }
        // Registers reachable, INTx silenced whatever the device does, and no message
        // interrupts: an MSI is a DMA write the command register cannot stop. Bus
        // mastering stays as the OS left it until the rings are ours.
        self.pci.enable(Command::MEMORY_SPACE | Command::INTERRUPT_DISABLE);
        self.pci.disable_message_interrupts();
        if self.vd.read_u32(regs::VRRS) == u32::MAX {
            return Err(NicError::DeviceGone);
        }
        self.status.reset();
        self.unflushed_fill = None;
        self.mask_interrupts();
        // Acknowledges interrupt 0 if the OS left it asserted.
        self.vd.read_u32(regs::ICR);
        self.command_and_wait(regs::cmd::QUIESCE_DEV)?;
        self.command_and_wait(regs::cmd::RESET_DEV)?;
        self.select_revision()?;

        // The device is inactive and has forgotten the OS's DriverShared: rebuild ours.
        self.tx.clear();
        let rx_fill = self.rx.clear();
        self.write_shared();
        // The device reads DriverShared and the rings from now on: let it master the bus.
        self.pci.enable(Command::BUS_MASTER);
        fence(Ordering::SeqCst);
        let shared = self.shared.phys();
        self.vd.write_u32(regs::DSAL, shared as u32);
        self.vd.write_u32(regs::DSAH, (shared >> 32) as u32);
        self.vd.write_u32(regs::CMD, regs::cmd::ACTIVATE_DEV);
        let mut activated = false;
        for _ in 0..bound::ACTIVATE_POLL_READS {
            match self.vd.read_u32(regs::CMD) {
                0 => {
                    activated = true;
                    break;
                }
                u32::MAX => return Err(NicError::DeviceGone),
                _ => {}
            }
        }
        if !activated {
            // The device refused our configuration: nothing a retry would change.
            self.vd.write_u32(regs::DSAL, 0);
            self.vd.write_u32(regs::DSAH, 0);
            return Err(NicError::DeviceGone);
        }
        self.mask_interrupts();
        self.pt.write_u32(regs::RXPROD, rx_fill as u32);
        self.pt.write_u32(regs::RXPROD2, 0);
        // After activation: QEMU's ACTIVATE_DEV puts the permanent address back, which the
        // OS may have replaced.
        self.write_mac();
        self.vd.write_u32(regs::CMD, regs::cmd::UPDATE_RX_MODE);
        self.vd.write_u32(regs::CMD, regs::cmd::UPDATE_VLAN_FILTERS);
        self.vd.write_u32(regs::CMD, regs::cmd::UPDATE_MAC_FILTERS);
        Ok(())
    }

    /// Builds the frame in place in the next transmit buffer, zero-pads it to 60 bytes,
    /// hands its descriptor over with the generation bit and writes TXPROD. Never waits.
    /// Asks for the link (`GET_LINK`) as [`StatusPacer`] says.
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        let fill_index = self.queue(len, fill)?;
        self.unflushed_fill = None;
        self.pt.write_u32(regs::TXPROD, fill_index as u32);
        Ok(())
    }

    /// As `transmit`, leaving TXPROD for [`flush_transmit`](PolledNic::flush_transmit):
    /// one register write per burst.
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.unflushed_fill = Some(self.queue(len, fill)?);
        Ok(())
    }

    fn flush_transmit(&mut self) {
        if let Some(fill_index) = self.unflushed_fill.take() {
            self.pt.write_u32(regs::TXPROD, fill_index as u32);
        }
    }

    fn poll_transmit(&mut self) -> usize {
        self.tx.reclaim()
    }

    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        match self.rx.poll(handler) {
            None => Ok(false),
            Some(polled) => {
                // The device says whether it wants RXPROD as buffers come back (QEMU never
                // does; it watches the generation bits).
                if self.queues.read_u8(layout::RX_QUEUE_DESC + layout::rxq::UPDATE_RX_PROD) != 0 {
                    self.pt.write_u32(regs::RXPROD, polled.fill as u32);
                }
                Ok(true)
            }
        }
    }
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> Vmxnet3<R, C, TX, RX> {
    /// Checks the length (and the link, as [`StatusPacer`] says), builds the frame in the
    /// next transmit buffer and hands its descriptor over; returns the fill index for
    /// TXPROD.
    fn queue(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<usize, NicError> {
        check_frame_len(len, MTU)?;
        let full = self.tx.is_full();
        if self.status.due(full) {
            let link = command_result(&mut self.vd, regs::cmd::GET_LINK);
            if link == u32::MAX {
                return Err(NicError::DeviceGone);
            }
            if link & regs::LINK_UP == 0 {
                return Err(NicError::LinkDown);
            }
        }
        if full {
            return Err(NicError::RingFull);
        }
        self.tx.push(len, fill)
    }
}
