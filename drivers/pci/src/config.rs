//! Configuration space access.

use core::fmt;

/// Bus, device and function number of a PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Bus number; bus 0 is the root bus, behind the host bridge.
    pub bus: u8,
    /// 0..=31.
    pub device: u8,
    /// 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// The address of `bus:device.function`; `device` is taken modulo 32 and `function`
    /// modulo 8, the widths of their fields.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        PciAddress { bus, device: device & 0x1F, function: function & 0x07 }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Access to the 256-byte configuration space of every function on the machine.
///
/// Implementations perform 32-bit accesses at dword-aligned offsets; the narrower reads are
/// provided on top. A read from an absent function returns all ones, as the hardware does.
/// Methods take `&mut self` because the x86 port mechanism is a two-step (address, data)
/// protocol that must not be interleaved.
pub trait ConfigSpace {
    /// Reads the dword at `offset & !3`.
    fn read_u32(&mut self, address: PciAddress, offset: u8) -> u32;

    /// Writes the dword at `offset & !3`.
    fn write_u32(&mut self, address: PciAddress, offset: u8, value: u32);

    /// Reads the 16-bit field at `offset & !1`.
    fn read_u16(&mut self, address: PciAddress, offset: u8) -> u16 {
        let shift = u32::from(offset & 2) * 8;
        (self.read_u32(address, offset) >> shift) as u16
    }

    /// Reads the byte at `offset`.
    fn read_u8(&mut self, address: PciAddress, offset: u8) -> u8 {
        let shift = u32::from(offset & 3) * 8;
        (self.read_u32(address, offset) >> shift) as u8
    }
}

impl<T: ConfigSpace + ?Sized> ConfigSpace for &mut T {
    fn read_u32(&mut self, address: PciAddress, offset: u8) -> u32 {
        (**self).read_u32(address, offset)
    }

    fn write_u32(&mut self, address: PciAddress, offset: u8, value: u32) {
        (**self).write_u32(address, offset, value)
    }
}
