//! The legacy interface: virtio 0.9.5's register block in the I/O BAR (virtio 1.2,
//! 4.1.4.8 "Legacy Interfaces: A Note on PCI Device Layout").

use netdump_pci::{Command, ConfigSpace, PciDevice, RegisterBlock};

use super::{DeviceStatus, PciBacked, QueueError, QueueRings, Transport};
use crate::features::{Features, Interface};
use crate::layout::legacy_used_offset;

/// Register offsets in the I/O BAR.
mod reg {
    /// Device features, bits 0–31 (read-only).
    pub const DEVICE_FEATURES: usize = 0x00;
    /// Driver features, bits 0–31.
    pub const DRIVER_FEATURES: usize = 0x04;
    /// Page frame number (address / 4096) of the selected queue; 0 disables it.
    pub const QUEUE_PFN: usize = 0x08;
    /// Size of the selected queue (read-only: legacy devices fix it).
    pub const QUEUE_SIZE: usize = 0x0C;
    pub const QUEUE_SELECT: usize = 0x0E;
    pub const QUEUE_NOTIFY: usize = 0x10;
    pub const DEVICE_STATUS: usize = 0x12;
    /// Device-specific configuration while MSI-X is off; with MSI-X on, two vector
    /// registers come first and it starts at 0x18.
    pub const DEVICE_CONFIG: usize = 0x14;
    pub const DEVICE_CONFIG_MSI_X: usize = 0x18;
}

/// Legacy queues are laid out in 4 KiB pages and addressed by page frame number.
const PAGE: u64 = 4096;

/// A legacy (or transitional) virtio-pci device through its I/O BAR.
pub struct LegacyTransport<C: ConfigSpace, B: RegisterBlock> {
    pci: PciDevice<C>,
    registers: B,
    /// Where the device-specific configuration starts: it moves when MSI-X is enabled.
    device_config: usize,
}

impl<C: ConfigSpace, B: RegisterBlock> LegacyTransport<C, B> {
    /// The device at `pci`, whose I/O BAR (BAR0) `registers` covers. Turns on I/O decode;
    /// nothing else changes until the driver resets the device.
    pub fn new(mut pci: PciDevice<C>, registers: B) -> Self {
        pci.enable(Command::IO_SPACE);
        let device_config = config_offset(&mut pci);
        LegacyTransport { pci, registers, device_config }
    }

    /// The register block, e.g. for a test that plays the OS driver.
    pub fn registers(&mut self) -> &mut B {
        &mut self.registers
    }
}

fn config_offset<C: ConfigSpace>(pci: &mut PciDevice<C>) -> usize {
    if pci.msi_x_enabled() { reg::DEVICE_CONFIG_MSI_X } else { reg::DEVICE_CONFIG }
}

impl<C: ConfigSpace, B: RegisterBlock> PciBacked for LegacyTransport<C, B> {
    type Config = C;

    fn pci(&mut self) -> &mut PciDevice<C> {
        &mut self.pci
    }
}

impl<C: ConfigSpace, B: RegisterBlock> Transport for LegacyTransport<C, B> {
    fn interface(&self) -> Interface {
        Interface::Legacy
    }

    fn is_present(&mut self) -> bool {
        self.pci.is_present()
    }

    fn take_over(&mut self) {
        self.pci.enable(Command::IO_SPACE | Command::INTERRUPT_DISABLE);
        self.pci.disable_message_interrupts();
        self.device_config = config_offset(&mut self.pci);
    }

    fn enable_dma(&mut self) {
        self.pci.enable(Command::BUS_MASTER)
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.registers.read_u8(reg::DEVICE_STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.registers.write_u8(reg::DEVICE_STATUS, status.bits())
    }

    fn device_features(&mut self) -> Features {
        Features::from_bits_retain(u64::from(self.registers.read_u32(reg::DEVICE_FEATURES)))
    }

    fn driver_features(&mut self) -> Features {
        Features::from_bits_retain(u64::from(self.registers.read_u32(reg::DRIVER_FEATURES)))
    }

    fn set_driver_features(&mut self, features: Features) {
        // The legacy register holds bits 0–31; negotiation never picks higher ones here.
        self.registers.write_u32(reg::DRIVER_FEATURES, features.bits() as u32)
    }

    fn config_generation(&mut self) -> u32 {
        0
    }

    fn config_u8(&mut self, offset: usize) -> u8 {
        self.registers.read_u8(self.device_config + offset)
    }

    fn config_u16(&mut self, offset: usize) -> u16 {
        self.registers.read_u16(self.device_config + offset)
    }

    fn queue_max_size(&mut self, index: u16) -> u16 {
        self.registers.write_u16(reg::QUEUE_SELECT, index);
        self.registers.read_u16(reg::QUEUE_SIZE)
    }

    fn queue_size_fixed(&self) -> bool {
        true
    }

    /// The legacy layout is fixed: descriptors at a page boundary, the available ring
    /// right after them, the used ring at the next page boundary; the device learns the
    /// first page's number and the size it chose itself.
    fn set_up_queue(&mut self, index: u16, rings: QueueRings) -> Result<(), QueueError> {
        let max = self.queue_max_size(index);
        if max == 0 {
            return Err(QueueError::Absent);
        }
        if rings.size != max {
            return Err(QueueError::BadSize { requested: rings.size, max });
        }
        let size = u64::from(rings.size);
        if !rings.descriptors.is_multiple_of(PAGE)
            || rings.driver != rings.descriptors + 16 * size
            || rings.device != rings.descriptors + legacy_used_offset(rings.size) as u64
        {
            return Err(QueueError::BadLayout);
        }
        let pfn = u32::try_from(rings.descriptors / PAGE).map_err(|_| QueueError::AddressTooHigh)?;
        self.registers.write_u32(reg::QUEUE_PFN, pfn);
        if self.registers.read_u32(reg::QUEUE_PFN) != pfn {
            return Err(QueueError::NotAccepted);
        }
        Ok(())
    }

    fn notify(&mut self, index: u16) {
        self.registers.write_u16(reg::QUEUE_NOTIFY, index)
    }
}
