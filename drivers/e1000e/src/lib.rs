//! A polled, interrupt-free driver for the Intel 82574L gigabit controller (QEMU's
//! `-device e1000e`), implementing [`netdump_core::nic::PolledNic`].
//!
//! The driver owns three things the integrator hands it: the device's registers (any
//! [`RegisterBlock`]: netdump-pci's [`MmioBlock`](netdump_pci::MmioBlock) over the
//! [`MMIO_SIZE`] bytes of BAR0 in a kernel, a fake device in host tests), its PCI function
//! (memory decode, bus mastering, INTx and MSI/MSI-X off on every reset) and a
//! [`DmaRegion`] of [`E1000e::DMA_SIZE`] bytes, out of which it carves its rings and
//! packet buffers. It never allocates.
//!
//! ```text
//! DMA region (128-byte aligned), for TX and RX descriptors:
//!   TX descriptors  TX × 16 B
//!   RX descriptors  RX × 16 B
//!   TX buffers      TX × 1536 B
//!   RX buffers      RX × 2048 B    (32 + 32: 115 712 B)
//! ```
//!
//! The 82574 accepts the 8254x's legacy descriptors (with RFCTL.EXTEN and RCTL.DTYP clear),
//! so the rings are netdump-e1000's [`ring`](netdump_e1000::ring) module; the registers the
//! two share are netdump-e1000's [`regs`](netdump_e1000::regs), re-exported by [`regs`]
//! next to what is the 82574's own. What differs is the takeover: MSI-X and its interrupt
//! routing (IVAR, EIAC, IAM, CTRL_EXT), the extended receive descriptors an OS driver turns
//! on, the GIO master disable handshake and NVM auto-read of the reset, and the EERD layout.
//! `unsafe` lives in netdump-e1000's rings and netdump-pci only; this crate has none.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod regs;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use netdump_core::nic::{NicError, PolledNic, StatusPacer, check_frame_len};
use netdump_e1000::ring::{RxRing, TxRing};
use netdump_pci::{Command, ConfigSpace, DmaError, DmaRegion, PciDevice, PciFunction};

pub use netdump_e1000::{DESCRIPTOR_SIZE, MIN_FRAME_LEN, RX_BUFFER_SIZE, TX_BUFFER_SIZE};
pub use netdump_pci::RegisterBlock;
pub use regs::MMIO_SIZE;

use regs::{Ctrl, Ctrl82574, CtrlExt, Rctl, Status, Status82574, Tctl};

/// PCI vendor and device IDs of the controllers this driver runs.
pub const SUPPORTED_DEVICES: &[(u16, u16)] = &[
    (0x8086, 0x10D3), // 82574L (QEMU's e1000e)
];

/// The largest IP packet sent or received: standard Ethernet, no jumbo frames.
pub const MTU: usize = 1500;

/// Required alignment of the DMA region's physical (and virtual) start. A page-aligned
/// region satisfies it; every ring and buffer array inside then falls on 128 bytes.
pub const DMA_ALIGN: usize = 128;

/// Bytes of DMA memory needed for `tx` transmit and `rx` receive descriptors.
pub const fn dma_size(tx: usize, rx: usize) -> usize {
    (tx + rx) * DESCRIPTOR_SIZE + tx * TX_BUFFER_SIZE + rx * RX_BUFFER_SIZE
}

/// DMA memory for the default 32 + 32 descriptors (115 712 bytes).
pub const DEFAULT_DMA_SIZE: usize = dma_size(32, 32);

/// The first supported controller on the machine.
pub fn find<C: ConfigSpace + ?Sized>(config: &mut C) -> Option<PciFunction> {
    netdump_pci::enumerate(config).find(|f| SUPPORTED_DEVICES.contains(&(f.vendor_id, f.device_id)))
}

/// Why [`E1000e::new`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region is too small (it needs [`E1000e::DMA_SIZE`] bytes from a
    /// [`DMA_ALIGN`]-aligned start) or its mapping cannot be aligned.
    Dma(DmaError),
    /// The PCI function does not answer, or its registers read all ones.
    DeviceGone,
    /// Neither receive address 0 nor the NVM holds a unicast MAC address.
    NoMacAddress,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Dma(e) => write!(f, "e1000e DMA memory: {e}"),
            InitError::DeviceGone => f.write_str("e1000e not responding"),
            InitError::NoMacAddress => f.write_str("e1000e has no MAC address"),
        }
    }
}

impl From<DmaError> for InitError {
    fn from(e: DmaError) -> Self {
        InitError::Dma(e)
    }
}

/// Bounds of the driver's waits, in register reads or pause instructions. A register read
/// is a PCIe round trip (0.5–2 µs on hardware, less in an emulator); the driver has no
/// clock, so every bound is a count.
mod bound {
    /// Reads of STATUS waiting for GIO_MASTER_ENABLE to clear after CTRL.GIO_MASTER_DISABLE
    /// (Linux waits up to 80 ms, 800 × 100 µs; an idle device answers at once). The reset
    /// goes ahead when it runs out, as Linux's does: the reset stops DMA anyway.
    pub const MASTER_DISABLE_READS: u32 = 2_000;
    /// Reads of STATUS between stopping the DMA engines and the reset, so that transfers in
    /// flight finish (Linux's e1000e sleeps 10 ms here).
    pub const QUIESCE_READS: u32 = 1_000;
    /// Pause instructions after setting CTRL.RST before touching any register (the
    /// datasheet asks for about 1 µs before the next access). A pause costs 10 to 150
    /// cycles depending on the CPU.
    pub const RESET_SETTLE_PAUSES: u32 = 2_000;
    /// Reads of CTRL waiting for RST to clear.
    pub const RESET_POLL_READS: u32 = 5_000;
    /// Reads of EECD waiting for AUTO_RD, the NVM load that follows a reset (Linux allows
    /// 10 ms); what it loads would overwrite our settings.
    pub const AUTO_READ_POLL_READS: u32 = 10_000;
    /// Reads of EERD waiting for one NVM word.
    pub const EEPROM_POLL_READS: u32 = 2_000;
    /// Reads of STATUS waiting for the device to take the checksum context descriptor (one
    /// descriptor fetch); if it has not by then, the descriptor is reclaimed later like a
    /// sent frame.
    pub const CONTEXT_POLL_READS: u32 = 1_000;
}

/// An 82574 driven by polling, with `TX` transmit and `RX` receive descriptors (multiples of
/// 8, at least 8: the descriptor ring lengths must be multiples of 128 bytes).
///
/// `R` is the register access (a [`netdump_pci::MmioBlock`] of [`MMIO_SIZE`] bytes over
/// BAR0 on hardware), `C` the configuration space of its PCI function
/// ([`netdump_pci::PortConfigSpace`] on x86).
pub struct E1000e<R: RegisterBlock, C: ConfigSpace, const TX: usize = 32, const RX: usize = 32> {
    regs: R,
    pci: PciDevice<C>,
    tx: TxRing<TX>,
    rx: RxRing<RX>,
    mac: [u8; 6],
    /// The device computes UDP checksums ([`PolledNic::udp_checksum_offload`]).
    udp_checksum_offload: bool,
    /// When `transmit` reads STATUS (device present, link up).
    status: StatusPacer,
    /// The tail of frames queued by `transmit_deferred` and not yet written to TDT.
    unflushed_tail: Option<usize>,
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> E1000e<R, C, TX, RX> {
    /// Bytes of DMA memory [`new`](Self::new) needs.
    pub const DMA_SIZE: usize = dma_size(TX, RX);

    /// Descriptor counts must be multiples of 8 (RDLEN/TDLEN are multiples of 128 bytes) and
    /// fit the 16-bit head and tail registers.
    const VALID_RING_SIZES: () = assert!(
        TX >= 8 && TX.is_multiple_of(8) && TX <= 4096 && RX >= 8 && RX.is_multiple_of(8) && RX <= 4096,
        "ring sizes must be multiples of 8 between 8 and 4096"
    );

    /// Takes over a controller: carves the rings out of `dma`, turns on memory decode and
    /// reads the station address (receive address 0, else NVM words 0–2). It does not start
    /// the device: call [`reset`](PolledNic::reset) before sending or receiving.
    ///
    /// `regs` must reach at least [`MMIO_SIZE`] bytes of BAR0. Read the NVM only while no
    /// other driver is using the controller (at boot, or after the OS driver has let go).
    pub fn new(mut regs: R, mut pci: PciDevice<C>, mut dma: DmaRegion) -> Result<Self, InitError> {
        let () = Self::VALID_RING_SIZES;
        let tx_descriptors = dma.take(TX * DESCRIPTOR_SIZE, DMA_ALIGN)?;
        let rx_descriptors = dma.take(RX * DESCRIPTOR_SIZE, DMA_ALIGN)?;
        let tx_buffers = dma.take(TX * TX_BUFFER_SIZE, DMA_ALIGN)?;
        let rx_buffers = dma.take(RX * RX_BUFFER_SIZE, DMA_ALIGN)?;

        if !pci.is_present() {
            return Err(InitError::DeviceGone);
        }
        pci.enable(Command::MEMORY_SPACE);
        if regs.read_u32(regs::STATUS) == u32::MAX {
            return Err(InitError::DeviceGone);
        }
        let mac = read_mac_address(&mut regs).ok_or(InitError::NoMacAddress)?;
        let mut tx = TxRing::new(tx_descriptors, tx_buffers);
        // QEMU's e1000e model (7.2 at least) computes the UDP checksum of a frame it is
        // asked to complete with the pseudo-header length taken from the frame, padding
        // included: UDP frames shorter than 60 bytes get their checksum in software.
        tx.set_offload_padded(false);
        Ok(E1000e {
            regs,
            pci,
            tx,
            rx: RxRing::new(rx_descriptors, rx_buffers),
            mac,
            udp_checksum_offload: true,
            status: StatusPacer::default(),
            unflushed_tail: None,
        })
    }

    /// Turns the device's UDP checksum offload (on by default) off or on; takes effect at
    /// the next [`reset`](PolledNic::reset).
    pub fn set_udp_checksum_offload(&mut self, on: bool) {
        self.udp_checksum_offload = on;
    }

    /// Whether the device reports link (STATUS.LU).
    pub fn link_up(&mut self) -> bool {
        Status::from_bits_retain(self.regs.read_u32(regs::STATUS)).contains(Status::LU)
    }

    /// Frames queued and not yet reclaimed by [`poll_transmit`](PolledNic::poll_transmit).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.in_flight()
    }

    /// The PCI function, e.g. to read its BARs.
    pub fn pci(&mut self) -> &mut PciDevice<C> {
        &mut self.pci
    }

    /// Masks every interrupt source of the device itself: IMC, no auto-mask, no MSI-X
    /// auto-clear, every IVAR entry invalid, no throttling or delay timers.
    fn mask_interrupts(&mut self) {
        self.regs.write_u32(regs::IMC, u32::MAX);
        self.regs.write_u32(regs::IAM, 0);
        self.regs.write_u32(regs::EIAC, 0);
        self.regs.write_u32(regs::IVAR, 0);
    }

    /// Stops both DMA engines and masks interrupts, then performs a software reset the way
    /// Linux's e1000e does for the 82574 (`e1000_reset_hw_82571`): GIO master disable and a
    /// bounded wait for outstanding requests, RCTL/TCTL off, CTRL.RST, then a bounded wait
    /// for RST to clear and for the NVM auto-read (EECD.AUTO_RD).
    fn reset_device(&mut self) -> Result<(), NicError> {
        self.mask_interrupts();
        let ctrl = self.read_checked(regs::CTRL)?;
        self.regs.write_u32(regs::CTRL, ctrl | Ctrl82574::GIO_MASTER_DISABLE.bits());
        for _ in 0..bound::MASTER_DISABLE_READS {
            let status = self.read_checked(regs::STATUS)?;
            if status & Status82574::GIO_MASTER_ENABLE.bits() == 0 {
                break;
            }
        }
        self.regs.write_u32(regs::RCTL, 0);
        self.regs.write_u32(regs::TCTL, Tctl::PSP.bits());
        for _ in 0..bound::QUIESCE_READS {
            self.regs.read_u32(regs::STATUS);
        }

        let ctrl = self.read_checked(regs::CTRL)?;
        self.regs.write_u32(regs::CTRL, ctrl | Ctrl::RST.bits());
        for _ in 0..bound::RESET_SETTLE_PAUSES {
            core::hint::spin_loop();
        }
        let mut cleared = false;
        for _ in 0..bound::RESET_POLL_READS {
            let ctrl = self.read_checked(regs::CTRL)?;
            if ctrl & Ctrl::RST.bits() == 0 {
                cleared = true;
                break;
            }
        }
        if !cleared {
            return Err(NicError::ResetTimeout);
        }
        let mut loaded = false;
        for _ in 0..bound::AUTO_READ_POLL_READS {
            let eecd = self.read_checked(regs::EECD)?;
            if eecd & regs::EECD_AUTO_RD != 0 {
                loaded = true;
                break;
            }
        }
        if !loaded {
            return Err(NicError::ResetTimeout);
        }
        // Hardware comes out of reset with everything masked and disabled; QEMU 7.2's model
        // restores only the receive address on CTRL.RST, so the rest of `reset` rewrites
        // every register it relies on instead of trusting reset values.
        self.mask_interrupts();
        self.regs.read_u32(regs::ICR);
        Ok(())
    }

    /// Reads a register, reporting [`NicError::DeviceGone`] for all ones (a register that
    /// can legitimately read all ones is never read through this).
    fn read_checked(&mut self, offset: usize) -> Result<u32, NicError> {
        match self.regs.read_u32(offset) {
            u32::MAX => Err(NicError::DeviceGone),
            value => Ok(value),
        }
    }

    /// Station address in RAL0/RAH0, every other receive address and the multicast table
    /// cleared: unicast to us and, with RCTL.BAM, broadcast.
    fn program_address_filters(&mut self) {
        let mac = self.mac;
        self.regs.write_u32(regs::RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.regs.write_u32(regs::RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | regs::RAH_AV);
        for entry in 1..regs::RA_ENTRIES {
            self.regs.write_u32(regs::RAL0 + 8 * entry, 0);
            self.regs.write_u32(regs::RAH0 + 8 * entry, 0);
        }
        for word in 0..regs::MTA_LEN {
            self.regs.write_u32(regs::MTA + 4 * word, 0);
        }
    }

    /// Interrupt routing and receive features an OS driver turns on and the polled driver
    /// must not inherit: CTRL_EXT's auto-mask and MSI-X bits (and DRV_LOAD set: a driver
    /// owns the device), no throttling or delay timers, legacy receive descriptors (RFCTL
    /// EXTEN clear), no RSS, no receive checksum offload, queue 0 allowed to transmit,
    /// per-descriptor write-back.
    fn program_device_features(&mut self) {
        let ctrl_ext = CtrlExt::from_bits_retain(self.regs.read_u32(regs::CTRL_EXT));
        let ctrl_ext = (ctrl_ext | CtrlExt::DRV_LOAD)
            - (CtrlExt::IAME | CtrlExt::EIAME | CtrlExt::PBA_CLR | CtrlExt::INT_TIMERS_CLEAR_ENA);
        self.regs.write_u32(regs::CTRL_EXT, ctrl_ext.bits());
        self.regs.write_u32(regs::ITR, 0);
        self.regs.write_u32(regs::RDTR, 0);
        self.regs.write_u32(regs::RADV, 0);
        self.regs.write_u32(regs::TIDV, 0);
        self.regs.write_u32(regs::TADV, 0);
        self.regs.write_u32(regs::RFCTL, 0);
        self.regs.write_u32(regs::MRQC, 0);
        self.regs.write_u32(regs::RXCSUM, 0);
        let tarc = self.regs.read_u32(regs::TARC0);
        self.regs.write_u32(regs::TARC0, tarc | regs::TARC_ENABLE);
        for offset in [regs::RXDCTL, regs::TXDCTL] {
            let thresholds = regs::dctl::PTHRESH | regs::dctl::HTHRESH | regs::dctl::WTHRESH;
            let dctl = self.regs.read_u32(offset) & !thresholds;
            self.regs.write_u32(offset, dctl | regs::dctl::GRAN | regs::dctl::WTHRESH_ONE);
        }
    }
}

/// The station address: receive address 0 when it holds a valid unicast address (what the
/// device loaded from the NVM at reset, or what the OS set), else NVM words 00h–02h through
/// EERD.
fn read_mac_address<R: RegisterBlock>(regs: &mut R) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let ral = regs.read_u32(regs::RAL0);
    let rah = regs.read_u32(regs::RAH0);
    if rah & regs::RAH_AV != 0 {
        mac[..4].copy_from_slice(&ral.to_le_bytes());
        mac[4..].copy_from_slice(&(rah as u16).to_le_bytes());
        if is_unicast(&mac) {
            return Some(mac);
        }
    }
    for word in 0..3 {
        let value = read_nvm_word(regs, word)?;
        mac[2 * word..2 * word + 2].copy_from_slice(&value.to_le_bytes());
    }
    is_unicast(&mac).then_some(mac)
}

/// One NVM word through EERD (82574 layout, [`regs::eerd`]), or `None` if DONE never comes.
fn read_nvm_word<R: RegisterBlock>(regs: &mut R, word: usize) -> Option<u16> {
    regs.write_u32(regs::EERD, (word as u32) << regs::eerd::ADDR_SHIFT | regs::eerd::START);
    for _ in 0..bound::EEPROM_POLL_READS {
        let value = regs.read_u32(regs::EERD);
        if value == u32::MAX {
            return None;
        }
        if value & regs::eerd::DONE != 0 {
            return Some((value >> regs::eerd::DATA_SHIFT) as u16);
        }
    }
    None
}

fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> PolledNic for E1000e<R, C, TX, RX> {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    /// Full takeover, following the datasheet's initialisation chapter (and Linux's
    /// e1000e for the 82574). Bounded by about 20 000 register accesses and 2 000 pauses in
    /// the worst case (a device that never lets go), 1 200 accesses when it behaves: a few
    /// milliseconds on hardware, about a millisecond under QEMU TCG.
    fn reset(&mut self) -> Result<(), NicError> {
        if !self.pci.is_present() {
            return Err(NicError::DeviceGone);
        }
        // Registers are unreachable without memory decode; keep INTx quiet whatever IMS
        // says, and turn MSI/MSI-X off: a message interrupt is a DMA write the command
        // register cannot stop. Bus mastering stays as the OS left it until the rings are
        // ours.
        self.pci.enable(Command::MEMORY_SPACE | Command::INTERRUPT_DISABLE);
        self.pci.disable_message_interrupts();
        if self.regs.read_u32(regs::STATUS) == u32::MAX {
            return Err(NicError::DeviceGone);
        }
        self.status.reset();
        self.unflushed_tail = None;
        self.reset_device()?;

        // Link up, speed and duplex resolved by the PHY, no VLAN mode, PCIe mastering
        // allowed again.
        let ctrl = Ctrl::from_bits_retain(self.regs.read_u32(regs::CTRL));
        let ctrl = (ctrl | Ctrl::SLU | Ctrl::ASDE)
            - (Ctrl::LRST | Ctrl::PHY_RST | Ctrl::ILOS | Ctrl::VME | Ctrl::FRCSPD | Ctrl::FRCDPX | Ctrl::RST);
        self.regs.write_u32(regs::CTRL, ctrl.bits() & !Ctrl82574::GIO_MASTER_DISABLE.bits());
        self.program_device_features();
        self.program_address_filters();

        // Transmit ring: base, length, empty (head = tail = 0).
        self.tx.clear();
        let tx_base = self.tx.phys_addr();
        self.regs.write_u32(regs::TDBAL, tx_base as u32);
        self.regs.write_u32(regs::TDBAH, (tx_base >> 32) as u32);
        self.regs.write_u32(regs::TDLEN, (TX * DESCRIPTOR_SIZE) as u32);
        self.regs.write_u32(regs::TDH, 0);
        self.regs.write_u32(regs::TDT, 0);
        self.regs.write_u32(regs::TIPG, regs::TIPG_82574);

        // Receive ring: every buffer armed, head 0, tail N - 1.
        let rdt = self.rx.clear();
        let rx_base = self.rx.phys_addr();
        self.regs.write_u32(regs::RDBAL, rx_base as u32);
        self.regs.write_u32(regs::RDBAH, (rx_base >> 32) as u32);
        self.regs.write_u32(regs::RDLEN, (RX * DESCRIPTOR_SIZE) as u32);
        self.regs.write_u32(regs::RDH, 0);
        self.regs.write_u32(regs::RDT, rdt as u32);

        // The rings now point at our memory: let the device master the bus.
        self.pci.enable(Command::BUS_MASTER);

        // Broadcast for ARP, strip the FCS, 2 KiB buffers (BSIZE 00b, no FLXBUF), legacy
        // descriptors (DTYP 00b), no promiscuous or long frames, no loopback.
        self.regs.write_u32(regs::RCTL, (Rctl::EN | Rctl::BAM | Rctl::SECRC).bits());
        // Pad short packets, collision threshold and full-duplex collision distance.
        self.regs
            .write_u32(regs::TCTL, (Tctl::EN | Tctl::PSP).bits() | regs::TCTL_CT_DEFAULT | regs::TCTL_COLD_FULL_DUPLEX);
        // Check that the device took what matters (a model that dropped a write, or a
        // device that fell off the bus midway, would otherwise fail silently).
        let rctl = self.read_checked(regs::RCTL)?;
        if rctl & (Rctl::EN.bits() | regs::RCTL_DTYP | regs::RCTL_FLXBUF) != Rctl::EN.bits() {
            return Err(NicError::DeviceGone);
        }
        if self.udp_checksum_offload {
            // The checksum context stays in the device until the next one: one per reset.
            let tail = self.tx.push_context();
            self.regs.write_u32(regs::TDT, tail as u32);
            // Return with the transmit ring empty, as the contract has it.
            for _ in 0..bound::CONTEXT_POLL_READS {
                if self.tx.reclaim() > 0 {
                    break;
                }
                self.regs.read_u32(regs::STATUS);
            }
        }
        Ok(())
    }

    /// The 82574 computes UDP checksums in hardware from a TCP/IP context descriptor (the
    /// 8254x's format), unless [`set_udp_checksum_offload`](E1000e::set_udp_checksum_offload)
    /// turned it off; from the [`reset`](PolledNic::reset) that gave the device its context.
    fn udp_checksum_offload(&self) -> bool {
        self.tx.udp_checksum()
    }

    /// Builds the frame in place in the next transmit buffer, zero-pads it to 60 bytes and
    /// moves TDT. Never waits. Reads STATUS as [`StatusPacer`] says.
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        let tail = self.queue(len, fill)?;
        self.unflushed_tail = None;
        self.regs.write_u32(regs::TDT, tail as u32);
        Ok(())
    }

    /// As `transmit`, leaving TDT for [`flush_transmit`](PolledNic::flush_transmit): one
    /// register write per burst.
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.unflushed_tail = Some(self.queue(len, fill)?);
        Ok(())
    }

    fn flush_transmit(&mut self) {
        if let Some(tail) = self.unflushed_tail.take() {
            self.regs.write_u32(regs::TDT, tail as u32);
        }
    }

    fn poll_transmit(&mut self) -> usize {
        self.tx.reclaim()
    }

    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        match self.rx.poll(handler) {
            None => Ok(false),
            Some(polled) => {
                self.regs.write_u32(regs::RDT, polled.rearmed as u32);
                Ok(true)
            }
        }
    }
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> E1000e<R, C, TX, RX> {
    /// Checks the length (and the status, as [`StatusPacer`] says), builds the frame in
    /// the next transmit buffer and queues its descriptor; returns the new tail for TDT.
    fn queue(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<usize, NicError> {
        check_frame_len(len, MTU)?;
        let full = self.tx.is_full();
        if self.status.due(full) {
            let status = self.regs.read_u32(regs::STATUS);
            if status == u32::MAX {
                return Err(NicError::DeviceGone);
            }
            if !Status::from_bits_retain(status).contains(Status::LU) {
                return Err(NicError::LinkDown);
            }
        }
        if full {
            return Err(NicError::RingFull);
        }
        self.tx.push(len, fill)
    }
}
