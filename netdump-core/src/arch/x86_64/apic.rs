//! The local APIC, for the one thing the crash path asks of it: an NMI to the other CPUs
//! ([`crate::cpus::NmiSender`]). xAPIC (memory-mapped registers) or x2APIC (MSRs),
//! whichever the firmware or the kernel enabled, detected at run time from
//! `IA32_APIC_BASE`.
//!
//! The interrupt command register (ICR) takes the NMI as delivery mode 100b, level
//! assert, physical destination; the "all excluding self" shorthand (11b) or one
//! destination APIC id. In xAPIC mode the destination goes in ICR high (bits 56–63 of
//! the whole register) and writing ICR low sends; the send is done when its delivery
//! status bit clears, which the sender waits for a bounded number of reads. In x2APIC
//! mode one `WRMSR` to `0x830` with the destination in bits 32–63 sends (Intel SDM
//! vol. 3A, 11.6.1 and 11.12.9).

use crate::cpus::NmiSender;

/// `IA32_APIC_BASE`.
const IA32_APIC_BASE: u32 = 0x1b;
/// `IA32_APIC_BASE` bit 11: the APIC is enabled.
const APIC_GLOBAL_ENABLE: u64 = 1 << 11;
/// `IA32_APIC_BASE` bit 10: x2APIC mode.
const X2APIC_ENABLE: u64 = 1 << 10;
/// x2APIC ICR MSR (`0x800 + 0x300 / 16`).
const X2APIC_ICR: u32 = 0x830;
/// x2APIC id MSR.
const X2APIC_ID: u32 = 0x802;
/// xAPIC register offsets.
const XAPIC_ID: u64 = 0x20;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;

/// ICR low: delivery mode NMI (100b in bits 8–10).
const ICR_NMI: u32 = 0b100 << 8;
/// ICR low: level assert.
const ICR_ASSERT: u32 = 1 << 14;
/// ICR low: the "all excluding self" destination shorthand (11b in bits 18–19).
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;
/// ICR low (xAPIC): delivery status, set while the IPI is being sent.
const ICR_PENDING: u32 = 1 << 12;
/// Reads of the delivery status before the sender moves on: far more than any APIC
/// takes, and still bounded if it never clears.
const MAX_PENDING_READS: u32 = 1 << 20;

/// The ICR low word for an NMI: to `apic_id`'s CPU, or with the "all excluding self"
/// shorthand when `None`.
pub const fn icr_nmi_low(apic_id: Option<u32>) -> u32 {
    match apic_id {
        None => ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_NMI,
        Some(_) => ICR_ASSERT | ICR_NMI,
    }
}

/// The whole 64-bit ICR value for an NMI in x2APIC mode (destination in bits 32–63).
pub const fn x2apic_icr_nmi(apic_id: Option<u32>) -> u64 {
    let dest = match apic_id {
        Some(id) => id as u64,
        None => 0,
    };
    dest << 32 | icr_nmi_low(apic_id) as u64
}

/// The xAPIC ICR high word for an NMI: the 8-bit destination in bits 24–31.
pub const fn xapic_icr_nmi_high(apic_id: Option<u32>) -> u32 {
    match apic_id {
        Some(id) => (id & 0xff) << 24,
        None => 0,
    }
}

/// How the local APIC is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// Memory-mapped registers; `base` is the virtual address where the kernel maps the
    /// APIC's physical page (`IA32_APIC_BASE` bits 12–51).
    XApic {
        /// Virtual address of the register page.
        base: u64,
    },
    /// MSRs.
    X2Apic,
}

/// The running CPU's local APIC, for NMIs to the others. Make one on the crashing CPU
/// (each CPU has its own APIC behind the same address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalApic {
    mode: ApicMode,
}

impl LocalApic {
    /// Reads `IA32_APIC_BASE` and picks the mode the APIC is in; `phys_to_virt` maps the
    /// xAPIC register page's physical address to where the kernel mapped it (uncached).
    /// `None` when the APIC is disabled.
    ///
    /// # Safety
    /// Ring 0 (`RDMSR`); in xAPIC mode, the page `phys_to_virt` returns must map the
    /// APIC's registers.
    pub unsafe fn detect(phys_to_virt: impl FnOnce(u64) -> u64) -> Option<Self> {
        // SAFETY: the caller guarantees ring 0; IA32_APIC_BASE exists on every x86_64 CPU.
        let base = unsafe { super::regs::rdmsr(IA32_APIC_BASE) };
        if base & APIC_GLOBAL_ENABLE == 0 {
            return None;
        }
        let mode = if base & X2APIC_ENABLE != 0 {
            ApicMode::X2Apic
        } else {
            ApicMode::XApic { base: phys_to_virt(base & 0x000f_ffff_ffff_f000) }
        };
        Some(LocalApic { mode })
    }

    /// The mode found by [`detect`](Self::detect).
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// The running CPU's APIC id.
    pub fn id(&self) -> u32 {
        match self.mode {
            // SAFETY: `detect`'s contract: the page maps the APIC; the ID register is
            // readable and reading it has no effect.
            ApicMode::XApic { base } => unsafe { core::ptr::read_volatile((base + XAPIC_ID) as *const u32) >> 24 },
            // SAFETY: x2APIC mode is on (detect saw it), so the ID MSR exists; ring 0 by
            // `detect`'s contract.
            ApicMode::X2Apic => unsafe { super::regs::rdmsr(X2APIC_ID) as u32 },
        }
    }

    fn send_nmi(&mut self, apic_id: Option<u32>) {
        match self.mode {
            ApicMode::XApic { base } => {
                let high = (base + XAPIC_ICR_HIGH) as *mut u32;
                let low = (base + XAPIC_ICR_LOW) as *mut u32;
                // SAFETY: `detect`'s contract: the page maps this CPU's APIC registers.
                // Writing ICR high then ICR low sends one IPI; reading ICR low has no
                // effect. The wait for the delivery status is bounded.
                unsafe {
                    core::ptr::write_volatile(high, xapic_icr_nmi_high(apic_id));
                    core::ptr::write_volatile(low, icr_nmi_low(apic_id));
                    for _ in 0..MAX_PENDING_READS {
                        if core::ptr::read_volatile(low) & ICR_PENDING == 0 {
                            break;
                        }
                        core::hint::spin_loop();
                    }
                }
            }
            // SAFETY: x2APIC mode is on, so the ICR MSR exists; writing it sends one IPI.
            ApicMode::X2Apic => unsafe { super::regs::wrmsr(X2APIC_ICR, x2apic_icr_nmi(apic_id)) },
        }
    }
}

impl NmiSender for LocalApic {
    fn nmi_all_but_self(&mut self) {
        self.send_nmi(None);
    }
    fn nmi_to(&mut self, apic_id: u32) {
        self.send_nmi(Some(apic_id));
    }
}

/// Parks the running CPU for good: interrupts off, halted; an NMI or SMI that wakes it
/// halts it again. Writes no memory. A CPU stopped for a dump ends here.
pub fn park_this_cpu() -> ! {
    loop {
        // SAFETY: `cli; hlt` changes only the interrupt flag and stops the CPU until the
        // next NMI/SMI/INIT; it touches no memory and no stack. Requires ring 0, where
        // every crash path runs.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nmi_icr_words_match_the_sdm() {
        // NMI (100b << 8) | assert (bit 14) | all excluding self (11b << 18).
        assert_eq!(icr_nmi_low(None), 0x000c_4400);
        assert_eq!(icr_nmi_low(Some(3)), 0x0000_4400);
        assert_eq!(xapic_icr_nmi_high(Some(3)), 0x0300_0000);
        assert_eq!(xapic_icr_nmi_high(None), 0);
        assert_eq!(x2apic_icr_nmi(Some(0x1_0203)), 0x0001_0203_0000_4400);
        assert_eq!(x2apic_icr_nmi(None), 0x000c_4400);
    }
}
