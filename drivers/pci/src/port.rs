//! PCI configuration mechanism #1: the 0xCF8 address and 0xCFC data ports of x86 machines
//! (PCI Local Bus Specification 3.0, section 3.2.2.3.2).

use x86_64::instructions::port::Port;

use crate::config::{ConfigSpace, PciAddress};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// Bit 31 of CONFIG_ADDRESS turns the next data-port access into a configuration cycle.
const ENABLE: u32 = 1 << 31;

/// Configuration space through the x86 I/O ports 0xCF8/0xCFC.
#[derive(Debug)]
pub struct PortConfigSpace {
    address: Port<u32>,
    data: Port<u32>,
}

impl PortConfigSpace {
    /// # Safety
    /// The caller guarantees that the machine implements configuration mechanism #1 (every
    /// PC-compatible x86 machine and QEMU's `pc` and `q35` do) and that nothing else uses
    /// ports 0xCF8/0xCFC while this value exists: an access from another CPU or an interrupt
    /// handler between our address and data accesses would read or write the wrong register.
    /// At crash time the other CPUs are stopped and interrupts are off, which gives this.
    pub const unsafe fn new() -> Self {
        PortConfigSpace { address: Port::new(CONFIG_ADDRESS), data: Port::new(CONFIG_DATA) }
    }

    fn select(&mut self, address: PciAddress, offset: u8) {
        let value = ENABLE
            | u32::from(address.bus) << 16
            | u32::from(address.device) << 11
            | u32::from(address.function) << 8
            | u32::from(offset & 0xFC);
        // SAFETY: `new`'s contract gives us exclusive use of the configuration ports; writing
        // CONFIG_ADDRESS only selects the register the next data access goes to.
        unsafe { self.address.write(value) }
    }
}

impl ConfigSpace for PortConfigSpace {
    fn read_u32(&mut self, address: PciAddress, offset: u8) -> u32 {
        self.select(address, offset);
        // SAFETY: the address port was just set by `select`, under `new`'s exclusivity
        // guarantee; a configuration read has no side effect on the devices we drive.
        unsafe { self.data.read() }
    }

    fn write_u32(&mut self, address: PciAddress, offset: u8, value: u32) {
        self.select(address, offset);
        // SAFETY: as for `read_u32`; what the written value means for the device is the
        // caller's business (all callers in this crate document their writes).
        unsafe { self.data.write(value) }
    }
}
