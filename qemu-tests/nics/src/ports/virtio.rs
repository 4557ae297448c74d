//! virtio-net over virtio-pci (QEMU `-device virtio-net-pci`): the legacy interface (I/O
//! BAR0) or the modern one (capabilities into memory BARs). `VirtioPort<false>` drives a
//! device that offers only the legacy interface, `VirtioPort<true>` one that offers the
//! modern interface (the driver prefers it when both are there).

use core::ptr::NonNull;

use netdump_core::nic::PolledNic;
use netdump_pci::{Command, MmioBlock, PortBlock, RegisterBlock, capability_id};
use netdump_virtio_net::transport::NO_VECTOR;
use netdump_virtio_net::{DeviceStatus, Interface, PciTransport, Transport};

use crate::{Found, Note, Port, Probe, Registers, VirtioNic, VirtioTransport, mapped, take_dma};

/// A virtio-net configuration: `MODERN` says which interface it runs on.
pub struct VirtioPort<const MODERN: bool>(pub VirtioNic);

super::polled_nic_through_field!(VirtioPort<false>);
super::polled_nic_through_field!(VirtioPort<true>);

/// Legacy registers that exist only while MSI-X is enabled (virtio 1.2, 4.1.4.8).
const LEGACY_CONFIG_VECTOR: usize = 0x14;
const LEGACY_QUEUE_VECTOR: usize = 0x16;
const LEGACY_QUEUE_SELECT: usize = 0x0E;
/// MSI-X Enable in the capability's Message Control (bit 15 of its first dword's upper half).
const MSI_X_ENABLE: u32 = 1 << 31;

impl<const MODERN: bool> Port for VirtioPort<MODERN>
where
    VirtioPort<MODERN>: PolledNic,
{
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>> {
        let (mut pci, function) = probe.pci_function(netdump_virtio_net::SUPPORTED_DEVICES)?;
        let command = pci.command();
        let mut ports = None;
        let mut structures = [(0, 0); 3];
        let mut mapped_count = 0;
        let transport = VirtioTransport::probe(
            pci,
            |port, len| {
                let base = u16::try_from(port).ok()?;
                let count = u16::try_from(len).ok()?;
                ports = Some((port, len));
                // SAFETY: these are the ports the function's I/O BAR0 decodes (the
                // transport read and sized it), and this driver is their only user.
                Some(unsafe { PortBlock::new(base, count) })
            },
            |phys, len| {
                if !mapped(phys, len as u64) || !phys.is_multiple_of(4) {
                    return None;
                }
                if let Some(slot) = structures.get_mut(mapped_count) {
                    *slot = (phys, len);
                }
                mapped_count += 1;
                let pointer = NonNull::new(phys as *mut u8)?;
                // SAFETY: the structure lies in one of the function's memory BARs (the
                // transport found it through its capability), inside the identity map
                // (checked above), 4-byte aligned; this driver is its only user.
                Some(unsafe { MmioBlock::new(pointer, len) })
            },
        );
        let transport = match transport {
            Ok(t) => t,
            Err(e) => {
                return Some(Err(match e {
                    netdump_virtio_net::ProbeError::DeviceGone => "virtio-net not responding",
                    netdump_virtio_net::ProbeError::NoInterface => "virtio-net offers no usable interface",
                    netdump_virtio_net::ProbeError::UnmappedPorts => "virtio-net I/O BAR unusable",
                    _ => "virtio-net modern structures missing or outside the identity map",
                }));
            }
        };
        // The other configuration's device: not this port's.
        if matches!(transport, PciTransport::Modern(_)) != MODERN {
            return None;
        }
        let registers = match ports {
            Some((port, size)) if !MODERN => Registers::Ports { bar: 0, port, size },
            _ => Registers::Structures(structures),
        };
        let dma = match take_dma() {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        Some(
            VirtioNic::new(transport, dma)
                .map_err(|e| match e {
                    netdump_virtio_net::InitError::Dma(_) => "virtio-net DMA region rejected",
                    netdump_virtio_net::InitError::DeviceGone => "virtio-net not responding",
                    netdump_virtio_net::InitError::NoMacAddress => "virtio-net offers no MAC address",
                    netdump_virtio_net::InitError::NoVersion1 => "modern virtio-net without VERSION_1",
                    netdump_virtio_net::InitError::QueueAbsent { .. } => "virtio-net queue missing",
                    netdump_virtio_net::InitError::QueueSizeUnusable { .. } => "virtio-net queue size unusable",
                })
                .map(|nic| (VirtioPort(nic), Found::pci(&function, command, registers))),
        )
    }

    fn kind(&self) -> &'static str {
        match self.0.interface() {
            Interface::Legacy => "virtio-net legacy",
            Interface::Modern => "virtio-net modern",
        }
    }
    fn bus_master_enabled(&mut self) -> bool {
        self.0.pci().command().contains(Command::BUS_MASTER)
    }
    fn link_up(&mut self) -> bool {
        self.0.link_up()
    }
    fn tx_in_flight(&self) -> usize {
        self.0.tx_in_flight()
    }
    fn tx_capacity(&self) -> usize {
        self.0.tx_capacity()
    }
    fn rx_capacity(&self) -> usize {
        self.0.rx_capacity()
    }

    /// Message interrupts on and routed, INTx on, DMA off, the device half re-initialised.
    fn leave_dirty(&mut self, _found: &Found) {
        let nic = &mut self.0;
        let pci = nic.pci();
        // MSI-X on (the table's entries stay masked, so nothing is delivered), INTx on, no DMA.
        if let Some(cap) = pci.find_capability(capability_id::MSI_X) {
            let header = pci.read_u32(cap.offset);
            pci.write_u32(cap.offset, header | MSI_X_ENABLE);
        }
        pci.disable(Command::BUS_MASTER | Command::INTERRUPT_DISABLE);
        // Every event routed to a vector, as an OS driver with MSI-X does.
        match nic.transport() {
            VirtioTransport::Legacy(t) => {
                let registers = t.registers();
                registers.write_u16(LEGACY_CONFIG_VECTOR, 0);
                for queue in 0..2 {
                    registers.write_u16(LEGACY_QUEUE_SELECT, queue);
                    registers.write_u16(LEGACY_QUEUE_VECTOR, 1 + queue);
                }
            }
            VirtioTransport::Modern(t) => {
                t.set_config_msix_vector(0);
                t.set_queue_msix_vector(0, 1);
                t.set_queue_msix_vector(1, 2);
            }
        }
        // The OS driver died re-initialising the device: DRIVER_OK gone, the queues still set up.
        let transport = nic.transport();
        let status = transport.status() & (DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        transport.set_status(status);
    }

    fn check_clean(&mut self, _found: &Found) -> Result<(), Note> {
        let nic = &mut self.0;
        let mut expected = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK;
        if nic.interface() == Interface::Modern {
            expected |= DeviceStatus::FEATURES_OK;
        }
        let features = nic.features();
        let suppressed = nic.interrupts_suppressed();
        let msi_x = nic.pci().msi_x_enabled();
        let intx_off = nic.pci().command().contains(Command::INTERRUPT_DISABLE);
        let transport = nic.transport();
        let status = transport.status();
        let driver_features = transport.driver_features();
        let vectors = match transport {
            VirtioTransport::Modern(t) => [t.config_msix_vector(), t.queue_msix_vector(0), t.queue_msix_vector(1)],
            // With MSI-X off the legacy interface has no vector registers at all.
            VirtioTransport::Legacy(_) => [NO_VECTOR; 3],
        };
        if status != expected
            || driver_features != features
            || !suppressed
            || msi_x
            || !intx_off
            || vectors != [NO_VECTOR; 3]
        {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_fmt(
                &mut n,
                format_args!(
                    "state left over: status {:#04x}, driver features {:#x} (negotiated {:#x}), \
                     NO_INTERRUPT {suppressed}, MSI-X {msi_x}, INTx disabled {intx_off}, vectors {vectors:x?}",
                    status.bits(),
                    driver_features.bits(),
                    features.bits()
                ),
            );
            return Err(n);
        }
        Ok(())
    }
}
