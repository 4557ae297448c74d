//! A polled, interrupt-free driver for the Intel 8254x gigabit controllers (82540EM, as
//! emulated by QEMU's `-device e1000`), implementing [`netdump_core::nic::PolledNic`].
//!
//! The driver owns three things the integrator hands it: the device's registers
//! ([`MmioRegisters`], BAR0 mapped uncached), its PCI function (to re-enable memory decode
//! and bus mastering on every reset) and a [`DmaRegion`] of [`E1000::DMA_SIZE`] bytes, out
//! of which it carves its legacy descriptor rings and packet buffers. It never allocates.
//!
//! ```text
//! DMA region (128-byte aligned), for TX and RX descriptors:
//!   TX descriptors  TX × 16 B
//!   RX descriptors  RX × 16 B
//!   TX buffers      TX × 1536 B
//!   RX buffers      RX × 2048 B    (32 + 32: 115 712 B)
//! ```
//!
//! Register offsets and bits are in [`regs`], with the sections of the 8254x Software
//! Developer's Manual they come from. `unsafe` lives in `ring` (descriptors and buffers in
//! DMA memory) only; register access is netdump-pci's [`RegisterBlock`].
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod mmio;
pub mod regs;
pub mod ring;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use netdump_core::nic::{NicError, PolledNic, StatusPacer, check_frame_len};
use netdump_pci::{Command, ConfigSpace, DmaError, DmaRegion, PciDevice, PciFunction};

pub use mmio::MmioRegisters;
pub use netdump_pci::RegisterBlock;
pub use ring::{DESCRIPTOR_SIZE, MIN_FRAME_LEN, RX_BUFFER_SIZE, TX_BUFFER_SIZE};

use regs::{Ctrl, Rctl, Status, Tctl};
use ring::{RxRing, TxRing};

/// PCI vendor and device IDs of the controllers this driver runs (all register-compatible
/// for legacy descriptors; QEMU emulates each with `-device e1000`, `e1000-82544gc` and
/// `e1000-82545em`).
pub const SUPPORTED_DEVICES: &[(u16, u16)] = &[
    (0x8086, 0x100E), // 82540EM desktop (QEMU's default e1000)
    (0x8086, 0x100F), // 82545EM copper
    (0x8086, 0x100C), // 82544GC copper
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

/// Why [`E1000::new`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region is too small (it needs [`E1000::DMA_SIZE`] bytes from a
    /// [`DMA_ALIGN`]-aligned start) or its mapping cannot be aligned.
    Dma(DmaError),
    /// The PCI function does not answer, or its registers read all ones.
    DeviceGone,
    /// Neither the EEPROM nor receive address 0 holds a unicast MAC address.
    NoMacAddress,
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InitError::Dma(e) => write!(f, "e1000 DMA memory: {e}"),
            InitError::DeviceGone => f.write_str("e1000 not responding"),
            InitError::NoMacAddress => f.write_str("e1000 has no MAC address"),
        }
    }
}

impl From<DmaError> for InitError {
    fn from(e: DmaError) -> Self {
        InitError::Dma(e)
    }
}

/// Bounds of the driver's waits, in register reads or pause instructions: each register
/// read is a bus round trip (about a microsecond on PCI hardware, less in an emulator).
mod bound {
    /// Reads of STATUS between stopping the DMA engines and the reset, so that transfers in
    /// flight finish (Linux's e1000 sleeps 10 ms here; most of that is for older parts).
    pub const QUIESCE_READS: u32 = 1_000;
    /// Pause instructions after setting CTRL.RST before touching any register: the SDM
    /// (13.4.1) asks for about 1 µs. A pause costs 10 to 150 cycles depending on the CPU.
    pub const RESET_SETTLE_PAUSES: u32 = 2_000;
    /// Reads of CTRL waiting for RST to clear.
    pub const RESET_POLL_READS: u32 = 5_000;
    /// Reads of STATUS after RST clears, while the controller reloads its configuration
    /// from the EEPROM; what it loads would overwrite our settings (Linux's e1000 sleeps
    /// 5 ms here on the 82540/82545, which have no "auto-read done" bit to poll).
    pub const EEPROM_RELOAD_READS: u32 = 5_000;
    /// Reads of EERD waiting for one EEPROM word.
    pub const EEPROM_POLL_READS: u32 = 2_000;
    /// Reads of STATUS waiting for the device to take the checksum context descriptor
    /// (one descriptor fetch); if it has not by then, the descriptor is reclaimed later
    /// like a sent frame.
    pub const CONTEXT_POLL_READS: u32 = 1_000;
}

/// An 8254x driven by polling, with `TX` transmit and `RX` receive descriptors (multiples
/// of 8, at least 8: the descriptor ring lengths must be multiples of 128 bytes).
///
/// `R` is the register access ([`MmioRegisters`] on hardware), `C` the configuration
/// space of its PCI function ([`netdump_pci::PortConfigSpace`] on x86).
pub struct E1000<R: RegisterBlock, C: ConfigSpace, const TX: usize = 32, const RX: usize = 32> {
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

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> E1000<R, C, TX, RX> {
    /// Bytes of DMA memory [`new`](Self::new) needs.
    pub const DMA_SIZE: usize = dma_size(TX, RX);

    /// Descriptor counts must be multiples of 8 (RDLEN/TDLEN are multiples of 128 bytes,
    /// 13.4.27 and 13.4.38) and fit the 16-bit head and tail registers.
    const VALID_RING_SIZES: () = assert!(
        TX >= 8 && TX.is_multiple_of(8) && TX <= 4096 && RX >= 8 && RX.is_multiple_of(8) && RX <= 4096,
        "ring sizes must be multiples of 8 between 8 and 4096"
    );

    /// Takes over a controller: carves the rings out of `dma`, turns on memory decode and
    /// reads the station address (EEPROM words 0–2, else receive address 0). It does not
    /// start the device: call [`reset`](PolledNic::reset) before sending or receiving.
    ///
    /// Read the EEPROM only while no other driver is using the controller (at boot, or
    /// after the OS driver has let go).
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
        Ok(E1000 {
            regs,
            pci,
            tx: TxRing::new(tx_descriptors, tx_buffers),
            rx: RxRing::new(rx_descriptors, rx_buffers),
            mac,
            udp_checksum_offload: true,
            status: StatusPacer::default(),
            unflushed_tail: None,
        })
    }

    /// Turns the device's UDP checksum offload (on by default; every supported part has
    /// it) off or on; takes effect at the next [`reset`](PolledNic::reset).
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

    /// One register write of the reset's: a call, where the per-burst tail writes are
    /// inlined (about 50 writes, each with its bounds check against BAR0, in `reset`).
    #[inline(never)]
    fn set(&mut self, reg: usize, value: u32) {
        self.regs.write_u32(reg, value);
    }

    /// The reset's constant writes, in order, from a table: one call for a run of them.
    #[inline(never)]
    fn set_all(&mut self, writes: &[(usize, u32)]) {
        for &(reg, value) in writes {
            self.regs.write_u32(reg, value);
        }
    }

    /// Stops both DMA engines and masks interrupts, then performs a global reset
    /// (CTRL.RST, 8254x SDM 13.4.1), waiting a bounded time for CTRL.RST to clear.
    fn reset_device(&mut self) -> Result<(), NicError> {
        const QUIESCE: [(usize, u32); 3] = [(regs::IMC, u32::MAX), (regs::RCTL, 0), (regs::TCTL, Tctl::PSP.bits())];
        self.set_all(&QUIESCE);
        for _ in 0..bound::QUIESCE_READS {
            self.regs.read_u32(regs::STATUS);
        }

        let ctrl = self.regs.read_u32(regs::CTRL);
        self.set(regs::CTRL, ctrl | Ctrl::RST.bits());
        for _ in 0..bound::RESET_SETTLE_PAUSES {
            core::hint::spin_loop();
        }
        let mut cleared = false;
        for _ in 0..bound::RESET_POLL_READS {
            let ctrl = self.regs.read_u32(regs::CTRL);
            if ctrl == u32::MAX {
                return Err(NicError::DeviceGone);
            }
            if ctrl & Ctrl::RST.bits() == 0 {
                cleared = true;
                break;
            }
        }
        if !cleared {
            return Err(NicError::ResetTimeout);
        }
        for _ in 0..bound::EEPROM_RELOAD_READS {
            self.regs.read_u32(regs::STATUS);
        }
        // Real hardware comes out of reset with everything masked and disabled; a device
        // model may not (QEMU's e1000 treats RST as a no-op), so the rest of `reset`
        // rewrites every register it relies on instead of trusting reset values.
        self.set(regs::IMC, u32::MAX);
        self.regs.read_u32(regs::ICR);
        Ok(())
    }

    /// Station address in RAL0/RAH0, every other receive address and the multicast table
    /// cleared (13.5.1–13.5.3): unicast to us and, with RCTL.BAM, broadcast.
    fn program_address_filters(&mut self) {
        let mac = self.mac;
        self.set(regs::RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.set(regs::RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | regs::RAH_AV);
        for entry in 1..regs::RA_ENTRIES {
            self.set(regs::RAL0 + 8 * entry, 0);
            self.set(regs::RAH0 + 8 * entry, 0);
        }
        for word in 0..regs::MTA_LEN {
            self.set(regs::MTA + 4 * word, 0);
        }
    }
}

/// The station address: EEPROM words 00h–02h (SDM "EEPROM Address Map", "Ethernet
/// Address"), or receive
/// address 0 if the EEPROM cannot be read (the 82544 has no EERD) or holds no unicast
/// address.
fn read_mac_address<R: RegisterBlock>(regs: &mut R) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut from_eeprom = true;
    for word in 0..3 {
        match read_eeprom_word(regs, word) {
            Some(value) => mac[2 * word..2 * word + 2].copy_from_slice(&value.to_le_bytes()),
            None => {
                from_eeprom = false;
                break;
            }
        }
    }
    if from_eeprom && is_unicast(&mac) {
        return Some(mac);
    }
    let ral = regs.read_u32(regs::RAL0);
    let rah = regs.read_u32(regs::RAH0);
    if rah & regs::RAH_AV == 0 {
        return None;
    }
    mac[..4].copy_from_slice(&ral.to_le_bytes());
    mac[4..].copy_from_slice(&(rah as u16).to_le_bytes());
    is_unicast(&mac).then_some(mac)
}

/// One EEPROM word through EERD (13.4.4), or `None` if DONE never comes.
fn read_eeprom_word<R: RegisterBlock>(regs: &mut R, word: usize) -> Option<u16> {
    regs.write_u32(regs::EERD, (word as u32) << regs::eerd::ADDR_SHIFT | regs::eerd::START);
    for _ in 0..bound::EEPROM_POLL_READS {
        let value = regs.read_u32(regs::EERD);
        if value & regs::eerd::DONE != 0 {
            return Some((value >> regs::eerd::DATA_SHIFT) as u16);
        }
    }
    None
}

fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> PolledNic for E1000<R, C, TX, RX> {
    fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        MTU
    }

    /// Full takeover, following the 8254x SDM's "General Configuration", "Receive
    /// Initialization" and "Transmit Initialization" (chapter 14). Bounded by about
    /// 13 000 register accesses and 2 000 pauses: 5–10 ms on PCI hardware, 2–10 ms under
    /// QEMU TCG.
    fn reset(&mut self) -> Result<(), NicError> {
        if !self.pci.is_present() {
            return Err(NicError::DeviceGone);
        }
        // Registers are unreachable without memory decode; keep INTx quiet whatever IMS says.
        // Bus mastering stays as the OS left it until the rings are ours.
        self.pci.enable(Command::MEMORY_SPACE | Command::INTERRUPT_DISABLE);
        if self.regs.read_u32(regs::STATUS) == u32::MAX {
            return Err(NicError::DeviceGone);
        }
        self.status.reset();
        self.unflushed_tail = None;
        self.reset_device()?;

        // Link up, speed and duplex resolved by the PHY ("General Configuration"), no VLAN
        // mode.
        let ctrl = Ctrl::from_bits_retain(self.regs.read_u32(regs::CTRL));
        let ctrl = (ctrl | Ctrl::SLU | Ctrl::ASDE)
            - (Ctrl::LRST | Ctrl::PHY_RST | Ctrl::ILOS | Ctrl::VME | Ctrl::FRCSPD | Ctrl::FRCDPX | Ctrl::RST);
        self.set(regs::CTRL, ctrl.bits());
        self.program_address_filters();

        // Transmit ring ("Transmit Initialization"): base, length, empty (head = tail = 0).
        self.tx.clear();
        let tx_base = self.tx.phys_addr();
        self.set(regs::TDBAL, tx_base as u32);
        self.set(regs::TDBAH, (tx_base >> 32) as u32);
        self.set(regs::TDLEN, (TX * DESCRIPTOR_SIZE) as u32);
        const TX_REST: [(usize, u32); 4] =
            [(regs::TDH, 0), (regs::TDT, 0), (regs::TIPG, regs::TIPG_COPPER_DEFAULT), (regs::TIDV, 0)];
        self.set_all(&TX_REST);

        // Receive ring ("Receive Initialization"): every buffer armed, head 0, tail N - 1.
        let rdt = self.rx.clear();
        let rx_base = self.rx.phys_addr();
        self.set(regs::RDBAL, rx_base as u32);
        self.set(regs::RDBAH, (rx_base >> 32) as u32);
        self.set(regs::RDLEN, (RX * DESCRIPTOR_SIZE) as u32);
        self.set(regs::RDH, 0);
        self.set(regs::RDT, rdt as u32);
        self.set(regs::RDTR, 0);

        // The rings now point at our memory: let the device master the bus.
        self.pci.enable(Command::BUS_MASTER);

        // Broadcast for ARP, strip the FCS, 2 KiB buffers (BSIZE 00b), no promiscuous or
        // long frames, no loopback.
        // Then pad short packets, collision threshold and full-duplex collision distance.
        const ENABLE: [(usize, u32); 2] = [
            (regs::RCTL, Rctl::EN.bits() | Rctl::BAM.bits() | Rctl::SECRC.bits()),
            (regs::TCTL, Tctl::EN.bits() | Tctl::PSP.bits() | regs::TCTL_CT_DEFAULT | regs::TCTL_COLD_FULL_DUPLEX),
        ];
        self.set_all(&ENABLE);
        if self.udp_checksum_offload {
            // The checksum context stays in the device until the next one: one per reset.
            let tail = self.tx.push_context();
            self.set(regs::TDT, tail as u32);
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

    /// The 8254x computes UDP checksums in hardware (3.3.6, "TCP/IP context descriptor"),
    /// unless [`set_udp_checksum_offload`](E1000::set_udp_checksum_offload) turned it off;
    /// from the [`reset`](PolledNic::reset) that gave the device its checksum context.
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
    /// register write per burst. Under QEMU each TDT write is a trip through the device
    /// model, which then walks the ring; on hardware a posted write and a descriptor fetch.
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

impl<R: RegisterBlock, C: ConfigSpace, const TX: usize, const RX: usize> E1000<R, C, TX, RX> {
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
