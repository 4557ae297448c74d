//! The running CPU's local APIC in xAPIC mode: its MMIO registers at the address
//! IA32_APIC_BASE gives (identity-mapped below 4 GiB), used only to send IPIs.
//!
//! Each CPU reaches its own local APIC at that address, so two CPUs sending at once never
//! share a register and no lock is needed.

use x86_64::registers::model_specific::Msr;

use crate::boot_info::IDENTITY_MAP_END;

const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE: the APIC is enabled (bit 11); x2APIC mode (bit 10); the base address.
const BASE_ENABLED: u64 = 1 << 11;
const BASE_X2APIC: u64 = 1 << 10;
const BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// Interrupt command register, low and high halves (offsets from the base).
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// ICR low: the previous IPI is still being sent.
const DELIVERY_PENDING: u32 = 1 << 12;
/// Polls of the delivery status before giving up (QEMU never sets it; hardware clears it
/// within microseconds).
const MAX_PENDING_POLLS: u32 = 1 << 20;

/// ICR low values (physical destination, no shorthand).
pub(super) const INIT_ASSERT: u32 = (0b101 << 8) | (1 << 14) | (1 << 15);
pub(super) const INIT_DEASSERT: u32 = (0b101 << 8) | (1 << 15);
pub(super) const STARTUP: u32 = (0b110 << 8) | (1 << 14);
pub(super) const NMI: u32 = (0b100 << 8) | (1 << 14);

/// The previous IPI, or this one, stayed pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IpiPending;

/// The running CPU's local APIC.
pub(super) struct LocalApic {
    base: u64,
}

impl LocalApic {
    /// The running CPU's local APIC, if it is enabled, in xAPIC mode (this runtime drives
    /// xAPIC MMIO only) and identity-mapped; else the IA32_APIC_BASE value.
    pub(super) fn current() -> Result<Self, u64> {
        // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no side effect.
        let value = unsafe { Msr::new(IA32_APIC_BASE).read() };
        let base = value & BASE_ADDRESS;
        if value & BASE_ENABLED == 0 || value & BASE_X2APIC != 0 || base + 0x1000 > IDENTITY_MAP_END {
            return Err(value);
        }
        Ok(LocalApic { base })
    }

    fn register(&self, offset: u64) -> *mut u32 {
        (self.base + offset) as *mut u32
    }

    fn wait_idle(&self) -> Result<(), IpiPending> {
        for _ in 0..MAX_PENDING_POLLS {
            // SAFETY: the ICR is a register of this CPU's local APIC, whose page is
            // identity-mapped (checked in `current`); reading it has no side effect.
            if unsafe { self.register(ICR_LOW).read_volatile() } & DELIVERY_PENDING == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(IpiPending)
    }

    /// Sends the IPI `command` (an ICR low value) to the CPU with xAPIC id `apic_id`.
    pub(super) fn send(&self, apic_id: u8, command: u32) -> Result<(), IpiPending> {
        self.wait_idle()?;
        // SAFETY: as in `wait_idle`. Writing ICR low sends the IPI the caller asks for;
        // ICR high only names its destination.
        unsafe {
            self.register(ICR_HIGH).write_volatile(u32::from(apic_id) << 24);
            self.register(ICR_LOW).write_volatile(command);
        }
        self.wait_idle()
    }
}
