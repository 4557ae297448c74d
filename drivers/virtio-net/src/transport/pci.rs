//! Choosing the interface a virtio-pci device offers.

use netdump_pci::{Bar, ConfigSpace, PciDevice, RegisterBlock};

use super::modern::{StructureKind, offers_modern};
use super::{DeviceStatus, LegacyTransport, ModernTransport, PciBacked, QueueError, QueueRings, Transport};
use crate::features::{Features, Interface};

/// Why no transport could be built for a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// The function is not there (its vendor ID reads all ones).
    DeviceGone,
    /// Neither interface is usable: no modern capabilities, and no legacy I/O BAR0 (or not
    /// a transitional device ID).
    NoInterface,
    /// A modern structure the driver needs is missing.
    Missing(StructureKind),
    /// A modern structure is shorter than the driver needs.
    TooShort(StructureKind),
    /// The integrator could not map (or open) the registers of a structure or BAR.
    Unmapped(StructureKind),
    /// The legacy I/O BAR could not be opened.
    UnmappedPorts,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::DeviceGone => f.write_str("virtio-net function not responding"),
            ProbeError::NoInterface => f.write_str("no modern capabilities and no legacy I/O BAR0"),
            ProbeError::Missing(kind) => write!(f, "no {kind:?} configuration capability"),
            ProbeError::TooShort(kind) => write!(f, "{kind:?} configuration structure too short"),
            ProbeError::Unmapped(kind) => write!(f, "{kind:?} configuration structure not mapped"),
            ProbeError::UnmappedPorts => f.write_str("legacy I/O BAR not opened"),
        }
    }
}

/// Transitional device IDs (0x1000–0x103F) are the ones with a legacy interface (4.1.2.3).
const TRANSITIONAL_IDS: core::ops::RangeInclusive<u16> = 0x1000..=0x103F;

/// A virtio-pci device through whichever interface it offers.
pub enum PciTransport<C: ConfigSpace, P: RegisterBlock, M: RegisterBlock> {
    /// Registers in I/O BAR0 (virtio 0.9.5).
    Legacy(LegacyTransport<C, P>),
    /// Structures found through vendor-specific capabilities (virtio 1.x).
    Modern(ModernTransport<C, M>),
}

impl<C: ConfigSpace, P: RegisterBlock, M: RegisterBlock> PciTransport<C, P, M> {
    /// The modern interface when the device offers it (virtio 1.2, 4.1.2.3: a transitional
    /// driver uses the modern interface of a transitional device), else the legacy one of
    /// a transitional device.
    ///
    /// `open_ports(port, len)` opens the legacy I/O BAR; `map(phys, len)` maps a modern
    /// structure in a memory BAR; either returns `None` if it cannot. Probe at install time:
    /// sizing the legacy BAR briefly turns the function's decoding off.
    pub fn probe(
        mut pci: PciDevice<C>,
        open_ports: impl FnOnce(u32, u64) -> Option<P>,
        map: impl FnMut(u64, usize) -> Option<M>,
    ) -> Result<Self, ProbeError> {
        if !pci.is_present() {
            return Err(ProbeError::DeviceGone);
        }
        if offers_modern(&mut pci) {
            return ModernTransport::probe(pci, map).map(PciTransport::Modern);
        }
        if !TRANSITIONAL_IDS.contains(&pci.device_id()) {
            return Err(ProbeError::NoInterface);
        }
        let Ok(Some(Bar::Io { port })) = pci.bar(0) else {
            return Err(ProbeError::NoInterface);
        };
        let len = pci.bar_size(0).map_err(|_| ProbeError::NoInterface)?;
        let ports = open_ports(port, len).ok_or(ProbeError::UnmappedPorts)?;
        Ok(PciTransport::Legacy(LegacyTransport::new(pci, ports)))
    }
}

/// Forwards a `Transport` method to whichever transport is inside.
macro_rules! forward {
    ($self:ident, $t:ident => $call:expr) => {
        match $self {
            PciTransport::Legacy($t) => $call,
            PciTransport::Modern($t) => $call,
        }
    };
}

impl<C: ConfigSpace, P: RegisterBlock, M: RegisterBlock> PciBacked for PciTransport<C, P, M> {
    type Config = C;

    fn pci(&mut self) -> &mut PciDevice<C> {
        forward!(self, t => t.pci())
    }
}

impl<C: ConfigSpace, P: RegisterBlock, M: RegisterBlock> Transport for PciTransport<C, P, M> {
    fn interface(&self) -> Interface {
        forward!(self, t => t.interface())
    }
    fn is_present(&mut self) -> bool {
        forward!(self, t => t.is_present())
    }
    fn take_over(&mut self) {
        forward!(self, t => t.take_over())
    }
    fn enable_dma(&mut self) {
        forward!(self, t => t.enable_dma())
    }
    fn status(&mut self) -> DeviceStatus {
        forward!(self, t => t.status())
    }
    fn set_status(&mut self, status: DeviceStatus) {
        forward!(self, t => t.set_status(status))
    }
    fn device_features(&mut self) -> Features {
        forward!(self, t => t.device_features())
    }
    fn driver_features(&mut self) -> Features {
        forward!(self, t => t.driver_features())
    }
    fn set_driver_features(&mut self, features: Features) {
        forward!(self, t => t.set_driver_features(features))
    }
    fn config_generation(&mut self) -> u32 {
        forward!(self, t => t.config_generation())
    }
    fn config_u8(&mut self, offset: usize) -> u8 {
        forward!(self, t => t.config_u8(offset))
    }
    fn config_u16(&mut self, offset: usize) -> u16 {
        forward!(self, t => t.config_u16(offset))
    }
    fn queue_max_size(&mut self, index: u16) -> u16 {
        forward!(self, t => t.queue_max_size(index))
    }
    fn queue_size_fixed(&self) -> bool {
        forward!(self, t => t.queue_size_fixed())
    }
    fn set_up_queue(&mut self, index: u16, rings: QueueRings) -> Result<(), QueueError> {
        forward!(self, t => t.set_up_queue(index, rings))
    }
    fn notify(&mut self, index: u16) {
        forward!(self, t => t.notify(index))
    }
}
