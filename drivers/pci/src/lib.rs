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
pub use device::{
    Bar, BarError, Capabilities, Capability, Command, MemoryWidth, PciDevice, Status, capability_id,
};
pub use dma::{DmaError, DmaRegion};
pub use enumerate::{Functions, PciFunction, enumerate, find_device};
#[cfg(target_arch = "x86_64")]
pub use port::PortConfigSpace;

/// Offsets of the type-0/type-1 configuration header fields used here (PCI Local Bus
/// Specification 3.0, section 6.1).
pub mod offset {
    pub const VENDOR_ID: u8 = 0x00;
    pub const DEVICE_ID: u8 = 0x02;
    pub const COMMAND: u8 = 0x04;
    pub const STATUS: u8 = 0x06;
    pub const REVISION_ID: u8 = 0x08;
    pub const PROG_IF: u8 = 0x09;
    pub const SUBCLASS: u8 = 0x0A;
    pub const CLASS: u8 = 0x0B;
    pub const HEADER_TYPE: u8 = 0x0E;
    pub const BAR0: u8 = 0x10;
    pub const CAPABILITIES_POINTER: u8 = 0x34;
    pub const INTERRUPT_LINE: u8 = 0x3C;
}
