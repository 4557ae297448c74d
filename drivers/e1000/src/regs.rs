//! Register offsets and bits of the 8254x family, from the *PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual* (8254x SDM, revision 4.0), chapter 13
//! "Register Descriptions" and chapter 3 "Receive and Transmit Description".
//!
//! Offsets are byte offsets into the memory BAR (BAR0). All registers are 32 bits wide.

use bitflags::bitflags;

/// Device Control (13.4.1).
pub const CTRL: usize = 0x0000;
/// Device Status (13.4.2).
pub const STATUS: usize = 0x0008;
/// EEPROM Read (13.4.4; 82540/82541/82545/82546/82547 only).
pub const EERD: usize = 0x0014;
/// Interrupt Cause Read, clear on read (13.4.17).
pub const ICR: usize = 0x00C0;
/// Interrupt Mask Set/Read (13.4.20).
pub const IMS: usize = 0x00D0;
/// Interrupt Mask Clear (13.4.21).
pub const IMC: usize = 0x00D8;
/// Receive Control (13.4.22).
pub const RCTL: usize = 0x0100;
/// Transmit Control (13.4.33).
pub const TCTL: usize = 0x0400;
/// Transmit Inter Packet Gap (13.4.34).
pub const TIPG: usize = 0x0410;
/// Receive Descriptor Base Address Low: bits 31:0 of the ring's physical address,
/// 16-byte aligned (13.4.25).
pub const RDBAL: usize = 0x2800;
/// Receive Descriptor Base Address High: bits 63:32 (13.4.26).
pub const RDBAH: usize = 0x2804;
/// Receive Descriptor Length in bytes, a multiple of 128 (13.4.27).
pub const RDLEN: usize = 0x2808;
/// Receive Descriptor Head: the next descriptor the device fills (13.4.28).
pub const RDH: usize = 0x2810;
/// Receive Descriptor Tail: one past the last descriptor the driver gave the device
/// (13.4.29).
pub const RDT: usize = 0x2818;
/// Receive Delay Timer (13.4.30); 0 = no delay.
pub const RDTR: usize = 0x2820;
/// Transmit Descriptor Base Address Low: bits 31:0 of the ring's physical address,
/// 16-byte aligned (13.4.36).
pub const TDBAL: usize = 0x3800;
/// Transmit Descriptor Base Address High: bits 63:32 (13.4.37).
pub const TDBAH: usize = 0x3804;
/// Transmit Descriptor Length in bytes, a multiple of 128 (13.4.38).
pub const TDLEN: usize = 0x3808;
/// Transmit Descriptor Head: the next descriptor the device sends (13.4.39).
pub const TDH: usize = 0x3810;
/// Transmit Descriptor Tail: one past the last descriptor the driver queued (13.4.40).
pub const TDT: usize = 0x3818;
/// Transmit Interrupt Delay Value (13.4.41).
pub const TIDV: usize = 0x3820;
/// Multicast Table Array, [`MTA_LEN`] dwords (13.5.1).
pub const MTA: usize = 0x5200;
/// Dwords in the Multicast Table Array.
pub const MTA_LEN: usize = 128;
/// Receive Address Low of entry 0: bytes 0..4 of the MAC address; entry `n` is at
/// `RAL0 + 8 × n` (13.5.2).
pub const RAL0: usize = 0x5400;
/// Receive Address High of entry 0: bytes 4..6 of the MAC address and [`RAH_AV`]
/// (13.5.3).
pub const RAH0: usize = 0x5404;
/// Receive address entries (RAL/RAH pairs).
pub const RA_ENTRIES: usize = 16;

/// Size of the register window BAR0 decodes (13.1 "Register Summary": 128 KiB).
pub const MMIO_SIZE: usize = 0x2_0000;

bitflags! {
    /// CTRL bits (13.4.1, table 13-3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Ctrl: u32 {
        /// Full duplex.
        const FD = 1 << 0;
        /// Link reset.
        const LRST = 1 << 3;
        /// Auto-speed detection enable.
        const ASDE = 1 << 5;
        /// Set link up.
        const SLU = 1 << 6;
        /// Invert loss-of-signal.
        const ILOS = 1 << 7;
        /// Force speed.
        const FRCSPD = 1 << 11;
        /// Force duplex.
        const FRCDPX = 1 << 12;
        /// Device reset; self-clearing (13.4.1 and 14.2 "Software Reset").
        const RST = 1 << 26;
        /// Receive flow control enable.
        const RFCE = 1 << 27;
        /// Transmit flow control enable.
        const TFCE = 1 << 28;
        /// VLAN mode enable.
        const VME = 1 << 30;
        /// PHY reset.
        const PHY_RST = 1 << 31;
    }
}

bitflags! {
    /// STATUS bits (13.4.2, table 13-5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u32 {
        /// Full duplex: the link's resolved duplex.
        const FD = 1 << 0;
        /// Link up.
        const LU = 1 << 1;
        /// Transmission paused by flow control (an XOFF frame was received).
        const TXOFF = 1 << 4;
    }
}

/// EERD fields for the 82540/82545/82546 (13.4.4, table 13-7): start bit 0, done bit 4,
/// word address in bits 15:8, data in bits 31:16.
pub mod eerd {
    /// Start a read: set with the word address.
    pub const START: u32 = 1 << 0;
    /// The read finished; the data field holds the word.
    pub const DONE: u32 = 1 << 4;
    /// Position of the EEPROM word address.
    pub const ADDR_SHIFT: u32 = 8;
    /// Position of the 16-bit word read.
    pub const DATA_SHIFT: u32 = 16;
}

bitflags! {
    /// RCTL bits (13.4.22, table 13-67).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Rctl: u32 {
        /// Receiver enable.
        const EN = 1 << 1;
        /// Store bad packets.
        const SBP = 1 << 2;
        /// Unicast promiscuous.
        const UPE = 1 << 3;
        /// Multicast promiscuous.
        const MPE = 1 << 4;
        /// Long packet enable (frames over 1522 bytes).
        const LPE = 1 << 5;
        /// Loopback mode, bits 7:6 (00 = none).
        const LBM = 0b11 << 6;
        /// Receive descriptor minimum threshold size, bits 9:8 (00 = half).
        const RDMTS = 0b11 << 8;
        /// Multicast offset, bits 13:12.
        const MO = 0b11 << 12;
        /// Broadcast accept mode: needed to see ARP requests.
        const BAM = 1 << 15;
        /// Receive buffer size, bits 17:16; 00 with BSEX = 0 means 2048 bytes.
        const BSIZE = 0b11 << 16;
        /// VLAN filter enable.
        const VFE = 1 << 18;
        /// Buffer size extension.
        const BSEX = 1 << 25;
        /// Strip Ethernet CRC from received frames.
        const SECRC = 1 << 26;
    }
}

bitflags! {
    /// TCTL bits (13.4.33, table 13-76).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tctl: u32 {
        /// Transmit enable.
        const EN = 1 << 1;
        /// Pad short packets to 64 bytes (with FCS).
        const PSP = 1 << 3;
        /// Collision threshold, bits 11:4.
        const CT = 0xFF << 4;
        /// Collision distance, bits 21:12.
        const COLD = 0x3FF << 12;
        /// Re-transmit on late collision.
        const RTLC = 1 << 24;
    }
}

/// Recommended collision threshold (13.4.33: "0Fh").
pub const TCTL_CT_DEFAULT: u32 = 0x0F << 4;
/// Collision distance for full duplex (13.4.33: "40h"; 512 bit times for half duplex).
pub const TCTL_COLD_FULL_DUPLEX: u32 = 0x40 << 12;
/// TIPG for IEEE 802.3 on copper (13.4.34, table 13-77): IPGT 10, IPGR1 8, IPGR2 6.
pub const TIPG_COPPER_DEFAULT: u32 = 10 | 8 << 10 | 6 << 20;

/// RAH "address valid" (13.5.3).
pub const RAH_AV: u32 = 1 << 31;

/// Extended transmit descriptors (3.3.5–3.3.7): a TCP/IP context descriptor sets where
/// the device computes checksums, and TCP/IP data descriptors that follow it say, per
/// frame, whether to. Both share the legacy descriptor's 16 bytes; the fields below are
/// at the legacy layout's byte offsets.
pub mod txd {
    /// Byte 10 of a data descriptor: `DTALEN[19:16]` (zero: buffers are below 64 KiB) and
    /// DTYP = 0001b in the high nibble (3.3.7.1, table 3-17).
    pub const DTYP_DATA: u8 = 0x1 << 4;
    /// Byte 13 of a data descriptor, POPTS (table 3-20): insert the TCP/UDP checksum.
    pub const POPTS_TXSM: u8 = 1 << 1;
    /// Byte 11 of a context descriptor, TUCMD (3.3.6.1, table 3-15): IPv4 (TCP clear:
    /// UDP); with DEXT and RS from [`super::TxCommand`].
    pub const TUCMD_IP: u8 = 1 << 1;
    /// The context descriptor's first eight bytes (3.3.6, table 3-14): IPCSS, IPCSO,
    /// IPCSE (no IP checksum offload: all zero), then TUCSS, TUCSO and TUCSE.
    pub const fn context_offsets(tucss: u8, tucso: u8, tucse: u16) -> u64 {
        (tucss as u64) << 32 | (tucso as u64) << 40 | (tucse as u64) << 48
    }
}

bitflags! {
    /// Legacy transmit descriptor CMD field (3.3.3.1, table 3-10).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxCommand: u8 {
        /// End of packet: the last descriptor of a frame.
        const EOP = 1 << 0;
        /// Insert FCS (the Ethernet CRC).
        const IFCS = 1 << 1;
        /// Insert checksum.
        const IC = 1 << 2;
        /// Report status: write DD back when done.
        const RS = 1 << 3;
        /// Descriptor extension (0 = legacy).
        const DEXT = 1 << 5;
        /// VLAN packet enable.
        const VLE = 1 << 6;
        /// Interrupt delay enable.
        const IDE = 1 << 7;
    }
}

bitflags! {
    /// Legacy transmit descriptor STA field (3.3.3.2, table 3-11).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TxStatus: u8 {
        /// Descriptor done.
        const DD = 1 << 0;
        /// Excess collisions: the frame was given up.
        const EC = 1 << 1;
        /// Late collision (half duplex only).
        const LC = 1 << 2;
        /// Transmit underrun.
        const TU = 1 << 3;
    }
}

bitflags! {
    /// Receive descriptor status field (3.2.3.1, table 3-2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxStatus: u8 {
        /// Descriptor done.
        const DD = 1 << 0;
        /// End of packet: the last descriptor of a frame.
        const EOP = 1 << 1;
        /// Ignore checksum indication.
        const IXSM = 1 << 2;
        /// 802.1Q VLAN packet.
        const VP = 1 << 3;
        /// The device checked the TCP/UDP checksum (the result is in [`RxErrors::TCPE`]).
        const TCPCS = 1 << 5;
        /// The device checked the IPv4 header checksum (the result is in [`RxErrors::IPE`]).
        const IPCS = 1 << 6;
        /// Passed in-exact filter.
        const PIF = 1 << 7;
    }
}

bitflags! {
    /// Receive descriptor errors field (3.2.3.2, table 3-3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RxErrors: u8 {
        /// CRC or alignment error.
        const CE = 1 << 0;
        /// Symbol error.
        const SE = 1 << 1;
        /// Sequence error.
        const SEQ = 1 << 2;
        /// Carrier extension error.
        const CXE = 1 << 4;
        /// TCP/UDP checksum error (only with checksum offload; not a frame error).
        const TCPE = 1 << 5;
        /// IPv4 header checksum error (only with checksum offload; not a frame error).
        const IPE = 1 << 6;
        /// RX data error.
        const RXE = 1 << 7;
        /// Errors that make the frame itself bad.
        const FRAME = Self::CE.bits() | Self::SE.bits() | Self::SEQ.bits() | Self::CXE.bits() | Self::RXE.bits();
    }
}
