//! PCI plumbing shared by netdump's polled NIC drivers.
//!
//! - [`ConfigSpace`]: read and write the 256-byte configuration space of a function. The x86
//!   port mechanism ([`PortConfigSpace`], 0xCF8/0xCFC) is one implementation; host tests use
//!   [`fake::FakeConfigSpace`] (feature `testing`).
//! - [`enumerate`] / [`find_device`]: brute-force bus scan that skips absent devices and the
//!   functions of single-function devices.
//! - [`PciDevice`]: one function, with BAR decoding and sizing, command register helpers
//!   (memory/I/O decode, bus mastering), the capability list and its fields, and turning
//!   MSI/MSI-X off.
//! - [`RegisterBlock`]: a device's registers in one BAR, by offset, in memory
//!   ([`MmioBlock`]) or x86 I/O space ([`PortBlock`]); out-of-range accesses never reach
//!   the bus.
//! - [`DmaRegion`]: memory the integrator hands to a driver for descriptor rings and packet
//!   buffers, with helpers to carve aligned sub-regions. Drivers never allocate.
//!
//! Nothing here allocates, locks or panics on device input.
#![cfg_attr(not(any(test, feature = "testing")), no_std)]
#![warn(missing_docs)]

mod block;
mod config;
mod device;
mod dma;
mod enumerate;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
#[cfg(target_arch = "x86_64")]
mod port;

#[cfg(target_arch = "x86_64")]
pub use block::PortBlock;
pub use block::{MmioBlock, RegisterBlock};
pub use config::{ConfigSpace, PciAddress};
pub use device::{Bar, BarError, Capabilities, Capability, Command, MemoryWidth, PciDevice, Status, capability_id};
pub use dma::{DmaError, DmaRegion};
pub use enumerate::{Functions, PciFunction, enumerate, find_device};
#[cfg(target_arch = "x86_64")]
pub use port::PortConfigSpace;

/// Offsets of the type-0/type-1 configuration header fields used here (PCI Local Bus
/// Specification 3.0, section 6.1).
pub mod offset {
    /// Vendor ID, u16; 0xFFFF from an absent function.
    pub const VENDOR_ID: u8 = 0x00;
    /// Device ID, u16.
    pub const DEVICE_ID: u8 = 0x02;
    /// Command register, u16 ([`Command`](crate::Command)).
    pub const COMMAND: u8 = 0x04;
    /// Status register, u16 ([`Status`](crate::Status)).
    pub const STATUS: u8 = 0x06;
    /// Revision ID, u8.
    pub const REVISION_ID: u8 = 0x08;
    /// Programming interface, u8.
    pub const PROG_IF: u8 = 0x09;
    /// Subclass code, u8.
    pub const SUBCLASS: u8 = 0x0A;
    /// Base class code, u8.
    pub const CLASS: u8 = 0x0B;
    /// Header type, u8: the layout in bits 0..=6, multi-function in bit 7.
    pub const HEADER_TYPE: u8 = 0x0E;
    /// First base address register; BAR `n` is at `BAR0 + 4 × n`, u32 each.
    pub const BAR0: u8 = 0x10;
    /// Offset of the first capability, u8 (valid when [`Status::CAPABILITIES_LIST`](crate::Status::CAPABILITIES_LIST) is set).
    pub const CAPABILITIES_POINTER: u8 = 0x34;
    /// Interrupt line, u8: the legacy IRQ firmware routed INTx to.
    pub const INTERRUPT_LINE: u8 = 0x3C;
}
