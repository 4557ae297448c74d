//! The Intel 82574L (QEMU `-device e1000e`): BAR0 memory-mapped registers, through
//! netdump-pci's `MmioBlock` (the driver has no register layer of its own).

use core::ptr::NonNull;

use netdump_e1000e::{E1000e, regs};
use netdump_pci::{Command, MmioBlock, PortConfigSpace, RegisterBlock, capability_id};

use crate::{Found, Note, Port, Probe, Registers, memory_bar, take_dma};

/// The e1000e driver as the test kernels build it: 32 + 32 descriptors.
pub type E1000eNic = E1000e<MmioBlock, PortConfigSpace>;

/// The e1000e configuration.
pub struct E1000ePort(pub E1000eNic);

super::polled_nic_through_field!(E1000ePort);

/// Frames the transmit ring holds: its 32 descriptors but the one always left free.
const TX_CAPACITY: usize = 31;
/// Receive buffers the device may fill: 32 descriptors, one always held back by RDT.
const RX_CAPACITY: usize = 31;
/// MSI-X Enable in the capability's Message Control (bit 15 of its first dword's upper half).
const MSI_X_ENABLE: u32 = 1 << 31;

impl Port for E1000ePort {
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>> {
        let (mut pci, function) = probe.pci_function(netdump_e1000e::SUPPORTED_DEVICES)?;
        let command = pci.command();
        Some((|| {
            let (pointer, base, size) = memory_bar(&mut pci, 0, regs::MMIO_SIZE)?;
            // SAFETY: BAR0 is inside the runtime's identity map (`memory_bar` checked) and covers
            // the 128 KiB register window; this driver is its only user.
            let registers = unsafe { MmioBlock::new(pointer, regs::MMIO_SIZE) };
            let nic = E1000eNic::new(registers, pci, take_dma()?).map_err(|e| match e {
                netdump_e1000e::InitError::Dma(_) => "e1000e DMA region rejected",
                netdump_e1000e::InitError::DeviceGone => "e1000e not responding",
                netdump_e1000e::InitError::NoMacAddress => "e1000e has no MAC address",
            })?;
            let registers = Registers::Memory { bar: 0, base, size };
            Ok((E1000ePort(nic), Found::pci(&function, command, registers)))
        })())
    }

    fn kind(&self) -> &'static str {
        "e1000e"
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
        TX_CAPACITY
    }
    fn rx_capacity(&self) -> usize {
        RX_CAPACITY
    }
    fn set_udp_checksum_offload(&mut self, on: bool) {
        self.0.set_udp_checksum_offload(on);
    }

    /// What Linux's e1000e leaves in a running 82574: MSI-X on with causes routed and
    /// unmasked, auto-mask, extended descriptors, 1 KiB flexible buffers, promiscuous,
    /// filters opened, TARC0 disabled, GIO master disabled, ring pointers moved, bus
    /// mastering off.
    fn leave_dirty(&mut self, found: &Found) {
        let Some(mut r) = previous_owner(found) else {
            return;
        };
        r.write_u32(regs::IVAR, 0x8000_0000 | 0x0008_8888 | 0x0001_0000);
        r.write_u32(regs::IAM, 0x01F0_0000);
        r.write_u32(regs::EIAC, 0x01F0_0000);
        r.write_u32(regs::CTRL_EXT, (regs::CtrlExt::IAME | regs::CtrlExt::EIAME | regs::CtrlExt::PBA_CLR).bits());
        r.write_u32(regs::RFCTL, regs::RFCTL_EXTEN);
        r.write_u32(
            regs::RCTL,
            (regs::Rctl::EN | regs::Rctl::UPE | regs::Rctl::MPE | regs::Rctl::LPE).bits() | 1 << 27,
        );
        r.write_u32(regs::RAL0 + 8, 0x0403_0201);
        r.write_u32(regs::RAH0 + 8, 0x0605 | regs::RAH_AV);
        for i in 0..regs::MTA_LEN {
            r.write_u32(regs::MTA + 4 * i, 0xFFFF_FFFF);
        }
        r.write_u32(regs::TARC0, 0x3);
        r.write_u32(regs::TCTL, 0);
        r.write_u32(regs::TDH, 5);
        r.write_u32(regs::TDT, 5);
        r.write_u32(regs::RDT, 3);
        let ctrl = r.read_u32(regs::CTRL);
        r.write_u32(regs::CTRL, ctrl | regs::Ctrl82574::GIO_MASTER_DISABLE.bits());
        let pci = self.0.pci();
        if let Some(cap) = pci.find_capability(capability_id::MSI_X) {
            let header = pci.read_u32(cap.offset);
            pci.write_u32(cap.offset, header | MSI_X_ENABLE);
        }
        r.write_u32(regs::IMS, 0x01F7_00DF);
        pci.disable(Command::BUS_MASTER);
    }

    fn check_clean(&mut self, found: &Found) -> Result<(), Note> {
        let Some(mut r) = previous_owner(found) else {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_str(&mut n, "e1000e registers are not in a memory BAR");
            return Err(n);
        };
        let ims = r.read_u32(regs::IMS);
        let ivar = r.read_u32(regs::IVAR);
        let iam = r.read_u32(regs::IAM);
        let rctl = r.read_u32(regs::RCTL);
        let rfctl = r.read_u32(regs::RFCTL);
        let tarc = r.read_u32(regs::TARC0);
        let rah1 = r.read_u32(regs::RAH0 + 8);
        let mta_clear = (0..regs::MTA_LEN).all(|i| r.read_u32(regs::MTA + 4 * i) == 0);
        let expected_rctl = (regs::Rctl::EN | regs::Rctl::BAM | regs::Rctl::SECRC).bits();
        let msix = self.0.pci().msi_x_enabled();
        if ims != 0
            || ivar != 0
            || iam != 0
            || rctl != expected_rctl
            || rfctl != 0
            || tarc & regs::TARC_ENABLE == 0
            || rah1 & regs::RAH_AV != 0
            || !mta_clear
            || msix
        {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_fmt(
                &mut n,
                format_args!(
                    "state left over: IMS {ims:#x}, IVAR {ivar:#x}, IAM {iam:#x}, RCTL {rctl:#x}, RFCTL {rfctl:#x}, \
                     TARC0 {tarc:#x}, RAH1 {rah1:#x}, MTA clear {mta_clear}, MSI-X {msix}"
                ),
            );
            return Err(n);
        }
        Ok(())
    }
}

/// A second handle on the registers, standing in for the OS driver that owned the device
/// before the crash path took over.
fn previous_owner(found: &Found) -> Option<MmioBlock> {
    let Registers::Memory { base, .. } = found.registers else {
        return None;
    };
    let base = NonNull::new(base as *mut u8)?;
    // SAFETY: the same identity-mapped BAR0 as the driver's (checked at bring-up); the
    // conformance kernel is single-threaded and uses it only between driver calls, as
    // the OS driver did before the crash path took over.
    Some(unsafe { MmioBlock::new(base, regs::MMIO_SIZE) })
}
