//! Brute-force enumeration of every bus, device and function.

use crate::config::{ConfigSpace, PciAddress};
use crate::offset;

/// Identity of a present function, as read during enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciFunction {
    /// Where the function is.
    pub address: PciAddress,
    /// Vendor ID (never 0xFFFF: that means absent).
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Base class code (e.g. 0x02, network controller).
    pub class: u8,
    /// Subclass code (e.g. 0x00, Ethernet, in class 0x02).
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Revision ID.
    pub revision: u8,
    /// Header layout (0 general device, 1 PCI-to-PCI bridge, 2 CardBus bridge), without
    /// the multi-function bit.
    pub header_type: u8,
}

/// Every present function on buses 0..=255, in address order.
///
/// An absent function 0 (vendor ID all ones) means an absent device, so its other
/// functions are not probed; functions 1..=7 are probed only when function 0's header
/// says the device is multi-function. A machine with a handful of devices costs about
/// 8 200 configuration reads.
pub fn enumerate<C: ConfigSpace + ?Sized>(config: &mut C) -> Functions<'_, C> {
    Functions { config, bus: 0, device: 0, function: 0, multifunction: false }
}

/// The first function with this vendor and device ID.
pub fn find_device<C: ConfigSpace + ?Sized>(config: &mut C, vendor_id: u16, device_id: u16) -> Option<PciFunction> {
    enumerate(config).find(|f| f.vendor_id == vendor_id && f.device_id == device_id)
}

/// Iterator returned by [`enumerate`].
pub struct Functions<'a, C: ConfigSpace + ?Sized> {
    config: &'a mut C,
    /// 256 once the scan is over.
    bus: u16,
    device: u8,
    function: u8,
    /// Whether the current device's function 0 announced more functions.
    multifunction: bool,
}

impl<C: ConfigSpace + ?Sized> Functions<'_, C> {
    fn advance(&mut self) {
        if self.function == 0 && !self.multifunction || self.function == 7 {
            self.function = 0;
            self.device += 1;
            if self.device == 32 {
                self.device = 0;
                self.bus += 1;
            }
        } else {
            self.function += 1;
        }
    }
}

impl<C: ConfigSpace + ?Sized> Iterator for Functions<'_, C> {
    type Item = PciFunction;

    fn next(&mut self) -> Option<PciFunction> {
        while self.bus <= 255 {
            let address = PciAddress::new(self.bus as u8, self.device, self.function);
            let ids = self.config.read_u32(address, offset::VENDOR_ID);
            let vendor_id = ids as u16;
            let present = vendor_id != 0xFFFF;
            let mut found = None;
            if present {
                let class = self.config.read_u32(address, offset::REVISION_ID);
                let header = self.config.read_u8(address, offset::HEADER_TYPE);
                if self.function == 0 {
                    self.multifunction = header & 0x80 != 0;
                }
                found = Some(PciFunction {
                    address,
                    vendor_id,
                    device_id: (ids >> 16) as u16,
                    class: (class >> 24) as u8,
                    subclass: (class >> 16) as u8,
                    prog_if: (class >> 8) as u8,
                    revision: class as u8,
                    header_type: header & 0x7F,
                });
            } else if self.function == 0 {
                self.multifunction = false;
            }
            self.advance();
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeConfigSpace;

    #[test]
    fn finds_functions_in_address_order() {
        let mut cfg = FakeConfigSpace::new();
        cfg.add_function(PciAddress::new(0, 3, 0), 0x8086, 0x100E).set_class(0x02, 0x00, 0x00);
        cfg.add_function(PciAddress::new(0, 0, 0), 0x8086, 0x29C0);
        cfg.add_function(PciAddress::new(2, 1, 0), 0x1AF4, 0x1041);
        let found: Vec<_> = enumerate(&mut cfg).map(|f| (f.address, f.device_id)).collect();
        assert_eq!(
            found,
            [
                (PciAddress::new(0, 0, 0), 0x29C0),
                (PciAddress::new(0, 3, 0), 0x100E),
                (PciAddress::new(2, 1, 0), 0x1041),
            ]
        );
    }

    #[test]
    fn reports_class_and_header_type() {
        let mut cfg = FakeConfigSpace::new();
        cfg.add_function(PciAddress::new(0, 3, 0), 0x8086, 0x100E).set_class(0x02, 0x00, 0x00).set_revision(0x03);
        let f = find_device(&mut cfg, 0x8086, 0x100E).unwrap();
        assert_eq!((f.class, f.subclass, f.prog_if, f.revision, f.header_type), (2, 0, 0, 3, 0));
    }

    #[test]
    fn probes_other_functions_only_of_multifunction_devices() {
        let mut cfg = FakeConfigSpace::new();
        // A single-function device whose function 5 would answer if probed (some chipsets
        // alias function 0 onto every function number).
        cfg.add_function(PciAddress::new(0, 1, 0), 0x1234, 0x0001);
        cfg.add_function(PciAddress::new(0, 1, 5), 0x1234, 0x0005);
        // A multi-function device with a gap at function 1.
        cfg.add_function(PciAddress::new(0, 31, 0), 0x8086, 0x2918).set_header_type(0x80);
        cfg.add_function(PciAddress::new(0, 31, 2), 0x8086, 0x2922);
        let found: Vec<_> = enumerate(&mut cfg).map(|f| f.address).collect();
        assert_eq!(found, [PciAddress::new(0, 1, 0), PciAddress::new(0, 31, 0), PciAddress::new(0, 31, 2)]);
    }

    #[test]
    fn skips_absent_devices_with_one_read_each() {
        let mut cfg = FakeConfigSpace::new();
        assert_eq!(enumerate(&mut cfg).count(), 0);
        assert_eq!(cfg.reads(), 256 * 32);
    }

    #[test]
    fn find_device_returns_none_when_absent() {
        let mut cfg = FakeConfigSpace::new();
        cfg.add_function(PciAddress::new(0, 2, 0), 0x1234, 0x1111);
        assert_eq!(find_device(&mut cfg, 0x8086, 0x100E), None);
    }
}
