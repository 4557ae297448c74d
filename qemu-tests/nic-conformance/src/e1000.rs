//! The e1000's hooks: what a dying OS driver might leave in its registers, and the check
//! that `reset` undid it.

use core::ptr::NonNull;

use netdump_e1000::{MmioRegisters, RegisterBlock, regs};
use netdump_pci::Command;
use netdump_qemu_nics::{E1000Nic, Found, Registers as Window};

use crate::Note;

/// Frames the transmit ring holds: its 32 descriptors but the one that is always left free.
pub const TX_CAPACITY: usize = 31;
/// Receive buffers the device may fill: 32 descriptors, one always held back by RDT.
pub const RX_CAPACITY: usize = 31;

/// A second handle on the registers, standing in for the OS driver that owned the device
/// before the crash path took over.
fn previous_owner(found: &Found) -> Option<MmioRegisters> {
    let Window::Memory { base, .. } = found.registers else {
        return None;
    };
    let base = NonNull::new(base as *mut u8)?;
    // SAFETY: the same mapping as the driver's (identity-mapped BAR0, checked at bring-up).
    // The kernel is single-threaded and uses this handle only between driver calls, as the
    // OS driver did before the crash path took over.
    Some(unsafe { MmioRegisters::new(base) })
}

/// Interrupts unmasked, promiscuous long-frame receive, a second station address and every
/// multicast bit, ring pointers moved, transmit off, bus mastering off.
pub fn leave_dirty(nic: &mut E1000Nic, found: &Found) {
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
    nic.pci().disable(Command::BUS_MASTER);
}

pub fn check_clean(_nic: &mut E1000Nic, found: &Found) -> Result<(), Note> {
    let Some(mut r) = previous_owner(found) else {
        return Err(note!("e1000 registers are not in a memory BAR"));
    };
    let ims = r.read_u32(regs::IMS);
    let rctl = r.read_u32(regs::RCTL);
    let rah1 = r.read_u32(regs::RAH0 + 8);
    let mta_clear = (0..regs::MTA_LEN).all(|i| r.read_u32(regs::MTA + 4 * i) == 0);
    let expected_rctl = (regs::Rctl::EN | regs::Rctl::BAM | regs::Rctl::SECRC).bits();
    if ims != 0 || rctl != expected_rctl || rah1 & regs::RAH_AV != 0 || !mta_clear {
        return Err(note!("state left over: IMS {ims:#x}, RCTL {rctl:#x}, RAH1 {rah1:#x}, MTA clear {mta_clear}"));
    }
    Ok(())
}
