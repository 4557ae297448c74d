//! VMware's vmxnet3 (QEMU `-device vmxnet3`): BAR0 (the "PT" doorbells and interrupt
//! masks) and BAR1 (the "VD" commands and configuration), both memory-mapped.

use core::ptr::NonNull;

use netdump_core::nic::PolledNic;
use netdump_pci::{Command, MmioBlock, PortConfigSpace, RegisterBlock, capability_id};
use netdump_vmxnet3::{Vmxnet3, regs};

use crate::{Found, Note, Port, Probe, Registers, memory_bar, take_dma};

/// The vmxnet3 driver as the test kernels build it: 32 + 32 descriptors.
pub type Vmxnet3Nic = Vmxnet3<MmioBlock, PortConfigSpace>;

/// The vmxnet3 configuration.
pub struct Vmxnet3Port(pub Vmxnet3Nic);

super::polled_nic_through_field!(Vmxnet3Port);

/// MSI-X Enable in the capability's Message Control (bit 15 of its first dword's upper half).
const MSI_X_ENABLE: u32 = 1 << 31;

impl Port for Vmxnet3Port {
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>> {
        let (mut pci, function) = probe.pci_function(netdump_vmxnet3::SUPPORTED_DEVICES)?;
        let command = pci.command();
        Some((|| {
            let mut map = |bar: usize, size: usize| -> Result<(MmioBlock, u64), &'static str> {
                let (pointer, base, _) = memory_bar(&mut pci, bar, size)?;
                // SAFETY: the BAR is inside the runtime's identity map (checked by
                // `memory_bar`) and decodes `size` bytes of registers; this driver is their
                // only user.
                Ok((unsafe { MmioBlock::new(pointer, size) }, base))
            };
            let (pt, pt_base) = map(0, regs::PT_SIZE)?;
            let (vd, vd_base) = map(1, regs::VD_SIZE)?;
            let nic = Vmxnet3Nic::new(pt, vd, pci, take_dma()?).map_err(|e| match e {
                netdump_vmxnet3::InitError::Dma(_) => "vmxnet3 DMA region rejected",
                netdump_vmxnet3::InitError::DeviceGone => "vmxnet3 not responding",
                netdump_vmxnet3::InitError::UnsupportedRevision { .. } => "vmxnet3 without revision 1",
                netdump_vmxnet3::InitError::NoMacAddress => "vmxnet3 has no MAC address",
            })?;
            let registers = Registers::Vmxnet3 { pt: pt_base, vd: vd_base };
            Ok((Vmxnet3Port(nic), Found::pci(&function, command, registers)))
        })())
    }

    fn kind(&self) -> &'static str {
        "vmxnet3"
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

    /// Interrupts unmasked, INTx and MSI-X on, another station address, DMA off, the
    /// device still active on the OS's shared area.
    fn leave_dirty(&mut self, found: &Found) {
        let Some((mut pt, mut vd)) = previous_owner(found) else {
            return;
        };
        for line in 0..regs::MAX_INTRS {
            pt.write_u32(regs::IMR + regs::REG_ALIGN * line, 0);
        }
        vd.write_u32(regs::MACL, 0x0403_0202);
        vd.write_u32(regs::MACH, 0x0605);
        let pci = self.0.pci();
        if let Some(cap) = pci.find_capability(capability_id::MSI_X) {
            let header = pci.read_u32(cap.offset);
            pci.write_u32(cap.offset, header | MSI_X_ENABLE);
        }
        pci.disable(Command::BUS_MASTER | Command::INTERRUPT_DISABLE);
    }

    fn check_clean(&mut self, found: &Found) -> Result<(), Note> {
        let mut n = Note::new();
        let Some((mut pt, mut vd)) = previous_owner(found) else {
            let _ = core::fmt::Write::write_str(&mut n, "vmxnet3 registers not found");
            return Err(n);
        };
        let unmasked = (0..regs::MAX_INTRS).filter(|&l| pt.read_u32(regs::IMR + regs::REG_ALIGN * l) != 1).count();
        let mac = self.0.mac_address();
        let macl = vd.read_u32(regs::MACL);
        let mach = vd.read_u32(regs::MACH);
        let mac_ok = macl == u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]])
            && mach == u32::from(u16::from_le_bytes([mac[4], mac[5]]));
        let msi_x = self.0.pci().msi_x_enabled();
        let command = self.0.pci().command();
        let ok = command.contains(Command::INTERRUPT_DISABLE | Command::BUS_MASTER);
        if unmasked != 0 || !mac_ok || msi_x || !ok {
            let _ = core::fmt::Write::write_fmt(
                &mut n,
                format_args!(
                    "state left over: {unmasked} IMRs unmasked, MACL {macl:#x} MACH {mach:#x}, MSI-X {msi_x}, command {:#x}",
                    command.bits()
                ),
            );
            return Err(n);
        }
        Ok(())
    }
}

/// Second handles on BAR0 and BAR1, standing in for the OS driver.
fn previous_owner(found: &Found) -> Option<(MmioBlock, MmioBlock)> {
    let Registers::Vmxnet3 { pt, vd } = found.registers else {
        return None;
    };
    // SAFETY: the same identity-mapped BARs as the driver's (checked at bring-up); the
    // conformance kernel is single-threaded and uses them only between driver calls.
    unsafe {
        Some((
            MmioBlock::new(NonNull::new(pt as *mut u8)?, regs::PT_SIZE),
            MmioBlock::new(NonNull::new(vd as *mut u8)?, regs::VD_SIZE),
        ))
    }
}
