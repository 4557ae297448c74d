//! The Intel 8254x (QEMU `-device e1000`): BAR0 memory-mapped registers.

use core::ptr::NonNull;

use netdump_e1000::{MmioRegisters, RegisterBlock, regs};
use netdump_pci::Command;

use crate::{E1000Nic, Found, Note, Port, Probe, Registers, memory_bar, take_dma};

/// The e1000 configuration: its driver as an integrator builds it.
pub struct E1000Port(pub E1000Nic);

super::polled_nic_through_field!(E1000Port);

/// Frames the transmit ring holds: its 32 descriptors but the one that is always left free.
const TX_CAPACITY: usize = 31;
/// Receive buffers the device may fill: 32 descriptors, one always held back by RDT.
const RX_CAPACITY: usize = 31;

impl Port for E1000Port {
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>> {
        let (mut pci, function) = probe.pci_function(netdump_e1000::SUPPORTED_DEVICES)?;
        let command = pci.command();
        Some((|| {
            let (pointer, base, size) = memory_bar(&mut pci, 0, MmioRegisters::SIZE)?;
            // SAFETY: BAR0 is inside the runtime's identity map (`memory_bar` checked) and covers
            // the 128 KiB register window; this driver is its only user. (TCG ignores
            // cacheability; on hardware the PCI hole is uncached by the firmware's MTRRs.)
            let registers = unsafe { MmioRegisters::new(pointer) };
            let nic = E1000Nic::new(registers, pci, take_dma()?).map_err(|e| match e {
                netdump_e1000::InitError::Dma(_) => "e1000 DMA region rejected",
                netdump_e1000::InitError::DeviceGone => "e1000 not responding",
                netdump_e1000::InitError::NoMacAddress => "e1000 has no MAC address",
            })?;
            let registers = Registers::Memory { bar: 0, base, size };
            Ok((E1000Port(nic), Found::pci(&function, command, registers)))
        })())
    }

    fn kind(&self) -> &'static str {
        "e1000"
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

    /// Interrupts unmasked, promiscuous long-frame receive, a second station address and
    /// every multicast bit, ring pointers moved, transmit off, bus mastering off.
    fn leave_dirty(&mut self, found: &Found) {
        let Some(mut r) = previous_owner(found) else {
            return;
        };
        r.write_u32(regs::IMS, 0x0001_F6DF);
        r.write_u32(regs::RCTL, (regs::Rctl::EN | regs::Rctl::UPE | regs::Rctl::MPE | regs::Rctl::LPE).bits());
        r.write_u32(regs::RAL0 + 8, 0x0403_0201);
        r.write_u32(regs::RAH0 + 8, 0x0605 | regs::RAH_AV);
        for i in 0..regs::MTA_LEN {
            r.write_u32(regs::MTA + 4 * i, 0xFFFF_FFFF);
        }
        r.write_u32(regs::TCTL, 0);
        r.write_u32(regs::TDH, 5);
        r.write_u32(regs::TDT, 5);
        r.write_u32(regs::RDT, 3);
        self.0.pci().disable(Command::BUS_MASTER);
    }

    fn check_clean(&mut self, found: &Found) -> Result<(), Note> {
        let Some(mut r) = previous_owner(found) else {
            return Err(note("e1000 registers are not in a memory BAR"));
        };
        let ims = r.read_u32(regs::IMS);
        let rctl = r.read_u32(regs::RCTL);
        let rah1 = r.read_u32(regs::RAH0 + 8);
        let mta_clear = (0..regs::MTA_LEN).all(|i| r.read_u32(regs::MTA + 4 * i) == 0);
        let expected_rctl = (regs::Rctl::EN | regs::Rctl::BAM | regs::Rctl::SECRC).bits();
        if ims != 0 || rctl != expected_rctl || rah1 & regs::RAH_AV != 0 || !mta_clear {
            let mut n = Note::new();
            let _ = core::fmt::Write::write_fmt(
                &mut n,
                format_args!("state left over: IMS {ims:#x}, RCTL {rctl:#x}, RAH1 {rah1:#x}, MTA clear {mta_clear}"),
            );
            return Err(n);
        }
        Ok(())
    }
}

fn note(text: &str) -> Note {
    let mut n = Note::new();
    let _ = core::fmt::Write::write_str(&mut n, text);
    n
}

/// A second handle on the registers, standing in for the OS driver that owned the device
/// before the crash path took over.
fn previous_owner(found: &Found) -> Option<MmioRegisters> {
    let Registers::Memory { base, .. } = found.registers else {
        return None;
    };
    let base = NonNull::new(base as *mut u8)?;
    // SAFETY: the same mapping as the driver's (identity-mapped BAR0, checked at
    // bring-up). The conformance kernel is single-threaded and uses this handle only
    // between driver calls, as the OS driver did before the crash path took over.
    Some(unsafe { MmioRegisters::new(base) })
}
