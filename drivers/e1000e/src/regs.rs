//! Register offsets and bits of the 82574L, from the *Intel 82574 GbE Controller Family
//! Datasheet*, chapter "Device Registers" (offsets as in Linux's e1000e), checked against
//! QEMU's model (`hw/net/e1000e_core.c`, `e1000_regs.h`).
//!
//! Offsets are byte offsets into the memory BAR (BAR0, 128 KiB). All registers are 32 bits
//! wide. Where a register and the bits the driver uses are the same as on the 8254x, the
//! definition is netdump-e1000's, re-exported here, so that a difference cannot hide in a
//! copy; everything the 82574 does differently (EERD's layout, the interrupt routing of
//! MSI-X, the per-queue control registers, the extended receive filter control) is defined
//! below.

use bitflags::bitflags;

/// Offsets the 82574 keeps at the 8254x's places, with the same meaning for what the driver
/// writes: device control and status, interrupt cause/mask, receive and transmit control,
/// the inter-packet gap, the queue 0 ring registers (the 82574's RDBAL0…, TDBAL0… sit where
/// the 8254x's single ring registers are), the interrupt delay timers, the multicast table
/// and the receive addresses.
pub use netdump_e1000::regs::{
    CTRL, ICR, IMC, IMS, MTA, MTA_LEN, RA_ENTRIES, RAH_AV, RAH0, RAL0, RCTL, RDBAH, RDBAL, RDH, RDLEN, RDT, RDTR,
    STATUS, TCTL, TCTL_COLD_FULL_DUPLEX, TCTL_CT_DEFAULT, TDBAH, TDBAL, TDH, TDLEN, TDT, TIDV, TIPG,
};
/// Bit sets the 82574 shares with the 8254x for the bits the driver uses (CTRL.SLU/RST/…,
/// STATUS.LU, RCTL.EN/BAM/SECRC/BSIZE, TCTL.EN/PSP, descriptor command/status/error bits).
pub use netdump_e1000::regs::{Ctrl, Rctl, RxErrors, RxStatus, Status, Tctl, TxCommand, TxStatus, txd};

/// Size of the register window BAR0 decodes (128 KiB, the memory BAR's size in the
/// datasheet and in QEMU).
pub const MMIO_SIZE: usize = 0x2_0000;

/// EEPROM/NVM Read. Same offset as the 8254x's, different layout ([`eerd`]).
pub const EERD: usize = 0x0014;
/// EEPROM/Flash Control: [`EECD_AUTO_RD`] says the post-reset NVM load is done.
pub const EECD: usize = 0x0010;
/// Extended Device Control: interrupt auto-mask and MSI-X behaviour, and the
/// "driver loaded" handshake with the manageability firmware.
pub const CTRL_EXT: usize = 0x0018;
/// Interrupt Throttling Rate; 0 = no throttling.
pub const ITR: usize = 0x00C4;
/// Extended Interrupt Auto Clear: MSI-X causes cleared when their vector fires.
pub const EIAC: usize = 0x00DC;
/// Interrupt Acknowledge Auto-Mask.
pub const IAM: usize = 0x00E0;
/// Interrupt Vector Allocation: which MSI-X vector each cause uses.
pub const IVAR: usize = 0x00E4;
/// Packet Buffer Allocation: receive KB in bits 4:0, transmit in 20:16; the
/// 82574 has 40 KB in all (QEMU's reset value 0x0014_0014, 20 + 20 KB).
pub const PBA: usize = 0x1000;
/// Receive Descriptor Control, queue 0: prefetch and write-back thresholds.
pub const RXDCTL: usize = 0x2828;
/// Receive Interrupt Absolute Delay Timer; 0 = none.
pub const RADV: usize = 0x282C;
/// Transmit Descriptor Control, queue 0.
pub const TXDCTL: usize = 0x3828;
/// Transmit Absolute Interrupt Delay Value; 0 = none.
pub const TADV: usize = 0x382C;
/// Transmit Arbitration Count, queue 0. QEMU's model sends from queue 0 only
/// while [`TARC_ENABLE`] is set.
pub const TARC0: usize = 0x3840;
/// Receive Checksum Control.
pub const RXCSUM: usize = 0x5000;
/// Receive Filter Control: [`RFCTL_EXTEN`] selects extended receive descriptors.
pub const RFCTL: usize = 0x5008;
/// Multiple Receive Queues Command: RSS, which needs extended descriptors.
pub const MRQC: usize = 0x5818;
/// 3GIO (PCIe) Control: PCIe link and completion-timeout settings.
pub const GCR: usize = 0x5B00;

bitflags! {
    /// 82574 CTRL bits not named by the 8254x's [`Ctrl`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ctrl82574: u32 {
        /// GIO master disable: stop issuing new PCIe requests; STATUS reports when the
        /// outstanding ones are done ([`Status82574::GIO_MASTER_ENABLE`] clears).
        const GIO_MASTER_DISABLE = 1 << 2;
    }
}

bitflags! {
    /// 82574 STATUS bits not named by the 8254x's [`Status`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status82574: u32 {
        /// PHY reset asserted (set by a PHY reset; cleared by writing 0).
        const PHYRA = 1 << 10;
        /// The device still has PCIe master requests outstanding.
        const GIO_MASTER_ENABLE = 1 << 19;
    }
}

/// EECD "auto read done": the NVM load after a reset has finished.
pub const EECD_AUTO_RD: u32 = 1 << 9;

bitflags! {
    /// CTRL_EXT bits the driver sets or clears.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CtrlExt: u32 {
        /// Extended interrupt auto-mask enable (MSI-X: IAM applied when a vector fires).
        const EIAME = 1 << 24;
        /// Interrupt acknowledge auto-mask enable (reading ICR masks IAM's causes).
        const IAME = 1 << 27;
        /// Driver loaded: tells manageability firmware a driver owns the device.
        const DRV_LOAD = 1 << 28;
        /// Writing IMS with every bit fires pending delayed interrupts.
        const INT_TIMERS_CLEAR_ENA = 1 << 29;
        /// MSI-X pending bits cleared by IMS writes.
        const PBA_CLR = 1 << 31;
    }
}

/// RCTL bits 11:10, descriptor type: 00 legacy (or extended, with [`RFCTL_EXTEN`]), 01
/// packet split. The 8254x has no such field.
pub const RCTL_DTYP: u32 = 0b11 << 10;
/// RCTL bits 30:27, flexible buffer size in KB; 0 = RCTL.BSIZE decides.
pub const RCTL_FLXBUF: u32 = 0xF << 27;
/// RFCTL "extended status enable": extended receive descriptors.
pub const RFCTL_EXTEN: u32 = 1 << 15;
/// TARC0 bit 10, which QEMU's model requires to transmit from queue 0 (its reset value,
/// and what Linux leaves set).
pub const TARC_ENABLE: u32 = 1 << 10;

/// RXDCTL/TXDCTL fields (datasheet). The 82574 has no queue-enable bit (the
/// 82575/igb's bit 25): a queue runs when RCTL.EN/TCTL.EN say so.
pub mod dctl {
    /// Prefetch threshold, bits 5:0.
    pub const PTHRESH: u32 = 0x3F;
    /// Host threshold, bits 13:8.
    pub const HTHRESH: u32 = 0x3F << 8;
    /// Write-back threshold, bits 21:16.
    pub const WTHRESH: u32 = 0x3F << 16;
    /// Thresholds count descriptors (1) rather than cache lines (0).
    pub const GRAN: u32 = 1 << 24;
    /// Write each descriptor back as soon as it is done (WTHRESH 1: Linux's e1000e notes the
    /// 82574 needs "one more than desired", and avoids write-back bursts that stall).
    pub const WTHRESH_ONE: u32 = 1 << 16;
}

/// TIPG for the 82574 on copper (Linux's and QEMU's value): IPGT 8, IPGR1 8,
/// IPGR2 6. The 8254x uses IPGT 10.
pub const TIPG_82574: u32 = 8 | 8 << 10 | 6 << 20;

/// EERD fields for the 82574: start bit 0, done bit 1, word address in bits
/// 15:2, data in bits 31:16. The 8254x puts DONE at bit 4 and the address at bit 8.
pub mod eerd {
    /// Start a read: set with the word address.
    pub const START: u32 = 1 << 0;
    /// The read finished; the data field holds the word.
    pub const DONE: u32 = 1 << 1;
    /// Position of the NVM word address.
    pub const ADDR_SHIFT: u32 = 2;
    /// Position of the 16-bit word read.
    pub const DATA_SHIFT: u32 = 16;
}
