//! virtio-net's hooks: what a dying OS driver might leave (message interrupts on and
//! routed, INTx on, DMA off, the device half re-initialised), and the check that `reset`
//! undid it.

use netdump_pci::{Command, RegisterBlock, capability_id};
use netdump_qemu_nics::{VirtioNic, VirtioTransport};
use netdump_virtio_net::transport::NO_VECTOR;
use netdump_virtio_net::{DeviceStatus, Interface, Transport};

use crate::Note;

/// Legacy registers that exist only while MSI-X is enabled (virtio 1.2, 4.1.4.8).
const LEGACY_CONFIG_VECTOR: usize = 0x14;
const LEGACY_QUEUE_VECTOR: usize = 0x16;
const LEGACY_QUEUE_SELECT: usize = 0x0E;
/// MSI-X Enable in the capability's Message Control (bit 15 of its first dword's upper half).
const MSI_X_ENABLE: u32 = 1 << 31;

pub fn leave_dirty(nic: &mut VirtioNic) {
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

pub fn check_clean(nic: &mut VirtioNic) -> Result<(), Note> {
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
        return Err(note!(
            "state left over: status {:#04x}, driver features {:#x} (negotiated {:#x}), \
             NO_INTERRUPT {suppressed}, MSI-X {msi_x}, INTx disabled {intx_off}, vectors {vectors:x?}",
            status.bits(),
            driver_features.bits(),
            features.bits()
        ));
    }
    Ok(())
}
