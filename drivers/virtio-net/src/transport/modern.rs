//! The modern interface: virtio 1.x structures found through vendor-specific PCI
//! capabilities (virtio 1.2, 4.1.4), in memory BARs.

use netdump_pci::{Capability, Command, ConfigSpace, PciDevice, RegisterBlock, capability_id};

use super::{DeviceStatus, NO_VECTOR, PciBacked, ProbeError, QueueError, QueueRings, Transport};
use crate::features::{Features, Interface};

/// Offsets in the common configuration structure (`virtio_pci_common_cfg`, 4.1.4.3).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0C;
    pub const CONFIG_MSIX_VECTOR: usize = 0x10;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1A;
    pub const QUEUE_ENABLE: usize = 0x1C;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1E;
    /// 64-bit addresses, written as two 32-bit halves (allowed by 4.1.3.1).
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Bytes the driver uses; the structure must be at least this long.
    pub const LEN: usize = 0x38;
}

/// Offsets in a `virtio_pci_cap` (4.1.4).
mod cap {
    pub const CFG_TYPE: u8 = 3;
    pub const BAR: u8 = 4;
    pub const OFFSET: u8 = 8;
    pub const LENGTH: u8 = 12;
    /// `notify_off_multiplier`, in the notification capability only.
    pub const NOTIFY_OFF_MULTIPLIER: u8 = 16;
}

/// Virtio structure types (`cfg_type`, 4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructureKind {
    /// Common configuration: features, status, queue setup (4.1.4.3).
    Common = 1,
    /// Notifications: where the driver writes to kick a queue (4.1.4.4).
    Notify = 2,
    /// ISR status (4.1.4.5); unused when polling.
    Isr = 3,
    /// Device-specific configuration: virtio-net's MAC, status and MTU (4.1.4.6).
    Device = 4,
    /// A window into the BARs through configuration space (4.1.4.9); unused here.
    PciConfigAccess = 5,
}

impl StructureKind {
    fn from_cfg_type(value: u8) -> Option<Self> {
        Some(match value {
            1 => StructureKind::Common,
            2 => StructureKind::Notify,
            3 => StructureKind::Isr,
            4 => StructureKind::Device,
            5 => StructureKind::PciConfigAccess,
            _ => return None,
        })
    }
}

/// One virtio structure a vendor capability points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioCapability {
    /// Which structure.
    pub kind: StructureKind,
    /// The BAR that holds it, 0..=5.
    pub bar: u8,
    /// Offset of the structure in its BAR.
    pub offset: u32,
    /// Bytes the structure spans.
    pub length: u32,
    /// For [`StructureKind::Notify`]: bytes between the notification addresses of
    /// consecutive `queue_notify_off` values.
    pub notify_off_multiplier: u32,
}

/// Reads the virtio structure capability at `capability`, if it is one this driver knows.
fn read_capability<C: ConfigSpace>(pci: &mut PciDevice<C>, capability: Capability) -> Option<VirtioCapability> {
    let kind = StructureKind::from_cfg_type(pci.capability_u8(capability, cap::CFG_TYPE)?)?;
    let notify_off_multiplier =
        if kind == StructureKind::Notify { pci.capability_u32(capability, cap::NOTIFY_OFF_MULTIPLIER)? } else { 0 };
    Some(VirtioCapability {
        kind,
        bar: pci.capability_u8(capability, cap::BAR)?,
        offset: pci.capability_u32(capability, cap::OFFSET)?,
        length: pci.capability_u32(capability, cap::LENGTH)?,
        notify_off_multiplier,
    })
}

/// The first structure of `kind` in a usable memory BAR, with the structure's physical
/// address ("the driver SHOULD use the first instance of each virtio structure type it can
/// support", 4.1.4.1).
fn find_structure<C: ConfigSpace>(pci: &mut PciDevice<C>, kind: StructureKind) -> Option<(VirtioCapability, u64)> {
    let mut caps = pci.capabilities();
    while let Some(capability) = caps.next() {
        if capability.id != capability_id::VENDOR_SPECIFIC {
            continue;
        }
        let device = caps.device();
        let Some(found) = read_capability(device, capability) else {
            continue;
        };
        if found.kind != kind || found.bar > 5 {
            continue;
        }
        let base = match device.bar(usize::from(found.bar)) {
            Ok(Some(bar)) => bar.memory_address(),
            _ => None,
        };
        if let Some(address) = base.and_then(|b| b.checked_add(u64::from(found.offset))) {
            return Some((found, address));
        }
    }
    None
}

/// Whether the function has a modern common configuration structure.
pub(super) fn offers_modern<C: ConfigSpace>(pci: &mut PciDevice<C>) -> bool {
    find_structure(pci, StructureKind::Common).is_some()
}

/// Queue indices whose notification offset the transport remembers: virtio-net's receive
/// and transmit queues.
const QUEUES: usize = 2;

/// A modern virtio-pci device through its capabilities' structures.
pub struct ModernTransport<C: ConfigSpace, B: RegisterBlock> {
    pci: PciDevice<C>,
    common: B,
    notify: B,
    device: B,
    notify_off_multiplier: u32,
    /// Offset in `notify` of each queue's notification address, once it is set up.
    notify_offsets: [Option<usize>; QUEUES],
}

impl<C: ConfigSpace, B: RegisterBlock> ModernTransport<C, B> {
    /// Finds the common, notification and device structures and has `map` give access to
    /// each: `map(physical address, length)` returns a register block covering it, or
    /// `None` if it cannot be mapped. Turns on memory decode.
    pub fn probe(mut pci: PciDevice<C>, mut map: impl FnMut(u64, usize) -> Option<B>) -> Result<Self, ProbeError> {
        pci.enable(Command::MEMORY_SPACE);
        let mut open = |pci: &mut PciDevice<C>, kind, min_len: usize| {
            let (found, address) = find_structure(pci, kind).ok_or(ProbeError::Missing(kind))?;
            let length = found.length as usize;
            if length < min_len {
                return Err(ProbeError::TooShort(kind));
            }
            let block = map(address, length).ok_or(ProbeError::Unmapped(kind))?;
            Ok((found, block))
        };
        let (_, common) = open(&mut pci, StructureKind::Common, common::LEN)?;
        let (notify_cap, notify) = open(&mut pci, StructureKind::Notify, 2)?;
        // The MAC address: the shortest device configuration virtio-net can have.
        let (_, device) = open(&mut pci, StructureKind::Device, 6)?;
        Ok(ModernTransport {
            pci,
            common,
            notify,
            device,
            notify_off_multiplier: notify_cap.notify_off_multiplier,
            notify_offsets: [None; QUEUES],
        })
    }

    /// The configuration change interrupt's MSI-X vector.
    /// The MSI-X vector of configuration-change events ([`NO_VECTOR`](super::NO_VECTOR):
    /// none).
    pub fn config_msix_vector(&mut self) -> u16 {
        self.common.read_u16(common::CONFIG_MSIX_VECTOR)
    }

    /// Routes configuration-change events to MSI-X `vector`; read it back to see whether
    /// the device accepted it.
    pub fn set_config_msix_vector(&mut self, vector: u16) {
        self.common.write_u16(common::CONFIG_MSIX_VECTOR, vector)
    }

    /// Queue `index`'s MSI-X vector.
    pub fn queue_msix_vector(&mut self, index: u16) -> u16 {
        self.common.write_u16(common::QUEUE_SELECT, index);
        self.common.read_u16(common::QUEUE_MSIX_VECTOR)
    }

    /// Routes queue `index`'s events to MSI-X `vector`; read it back to see whether the
    /// device accepted it.
    pub fn set_queue_msix_vector(&mut self, index: u16, vector: u16) {
        self.common.write_u16(common::QUEUE_SELECT, index);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, vector)
    }

    fn write_u64(&mut self, offset: usize, value: u64) {
        self.common.write_u32(offset, value as u32);
        self.common.write_u32(offset + 4, (value >> 32) as u32);
    }

    fn read_u64(&mut self, offset: usize) -> u64 {
        u64::from(self.common.read_u32(offset)) | u64::from(self.common.read_u32(offset + 4)) << 32
    }

    fn read_features(&mut self, select: usize, value: usize) -> Features {
        let mut bits = 0u64;
        for half in 0..2u32 {
            self.common.write_u32(select, half);
            bits |= u64::from(self.common.read_u32(value)) << (32 * half);
        }
        Features::from_bits_retain(bits)
    }
}

impl<C: ConfigSpace, B: RegisterBlock> PciBacked for ModernTransport<C, B> {
    type Config = C;

    fn pci(&mut self) -> &mut PciDevice<C> {
        &mut self.pci
    }
}

impl<C: ConfigSpace, B: RegisterBlock> Transport for ModernTransport<C, B> {
    fn interface(&self) -> Interface {
        Interface::Modern
    }

    fn is_present(&mut self) -> bool {
        self.pci.is_present()
    }

    fn take_over(&mut self) {
        self.pci.enable(Command::MEMORY_SPACE | Command::INTERRUPT_DISABLE);
        self.pci.disable_message_interrupts();
        self.notify_offsets = [None; QUEUES];
    }

    fn enable_dma(&mut self) {
        self.pci.enable(Command::BUS_MASTER)
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.common.read_u8(common::DEVICE_STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.common.write_u8(common::DEVICE_STATUS, status.bits())
    }

    fn device_features(&mut self) -> Features {
        self.read_features(common::DEVICE_FEATURE_SELECT, common::DEVICE_FEATURE)
    }

    fn driver_features(&mut self) -> Features {
        self.read_features(common::DRIVER_FEATURE_SELECT, common::DRIVER_FEATURE)
    }

    fn set_driver_features(&mut self, features: Features) {
        for half in 0..2u32 {
            self.common.write_u32(common::DRIVER_FEATURE_SELECT, half);
            self.common.write_u32(common::DRIVER_FEATURE, (features.bits() >> (32 * half)) as u32);
        }
    }

    fn config_generation(&mut self) -> u32 {
        u32::from(self.common.read_u8(common::CONFIG_GENERATION))
    }

    fn config_u8(&mut self, offset: usize) -> u8 {
        self.device.read_u8(offset)
    }

    fn config_u16(&mut self, offset: usize) -> u16 {
        self.device.read_u16(offset)
    }

    fn queue_max_size(&mut self, index: u16) -> u16 {
        self.common.write_u16(common::QUEUE_SELECT, index);
        self.common.read_u16(common::QUEUE_SIZE)
    }

    fn queue_size_fixed(&self) -> bool {
        false
    }

    /// 4.1.5.1.3 "Virtqueue Configuration": size, vector, the three addresses, enable.
    fn set_up_queue(&mut self, index: u16, rings: QueueRings) -> Result<(), QueueError> {
        let max = self.queue_max_size(index);
        if max == 0 {
            return Err(QueueError::Absent);
        }
        if rings.size == 0 || rings.size > max || !rings.size.is_power_of_two() {
            return Err(QueueError::BadSize { requested: rings.size, max });
        }
        if !rings.descriptors.is_multiple_of(16) || !rings.driver.is_multiple_of(2) || !rings.device.is_multiple_of(4) {
            return Err(QueueError::BadLayout);
        }
        let notify_offset = usize::from(self.common.read_u16(common::QUEUE_NOTIFY_OFF))
            .checked_mul(self.notify_off_multiplier as usize)
            .filter(|&offset| offset.checked_add(2).is_some_and(|end| end <= self.notify.len()))
            .ok_or(QueueError::NotifyOutOfRange)?;
        self.common.write_u16(common::QUEUE_SIZE, rings.size);
        self.common.write_u16(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
        self.write_u64(common::QUEUE_DESC, rings.descriptors);
        self.write_u64(common::QUEUE_DRIVER, rings.driver);
        self.write_u64(common::QUEUE_DEVICE, rings.device);
        let kept = self.common.read_u16(common::QUEUE_SIZE) == rings.size
            && self.common.read_u16(common::QUEUE_MSIX_VECTOR) == NO_VECTOR
            && self.read_u64(common::QUEUE_DESC) == rings.descriptors
            && self.read_u64(common::QUEUE_DRIVER) == rings.driver
            && self.read_u64(common::QUEUE_DEVICE) == rings.device;
        if !kept {
            return Err(QueueError::NotAccepted);
        }
        self.common.write_u16(common::QUEUE_ENABLE, 1);
        if self.common.read_u16(common::QUEUE_ENABLE) != 1 {
            return Err(QueueError::NotAccepted);
        }
        if let Some(slot) = self.notify_offsets.get_mut(usize::from(index)) {
            *slot = Some(notify_offset);
        }
        // Configuration changes raise no interrupt either.
        self.common.write_u16(common::CONFIG_MSIX_VECTOR, NO_VECTOR);
        Ok(())
    }

    fn notify(&mut self, index: u16) {
        if let Some(Some(offset)) = self.notify_offsets.get(usize::from(index)) {
            self.notify.write_u16(*offset, index)
        }
    }
}
