//! x86_64: the exception vocabulary ([`Exception`], [`PageFaultErrorCode`]; on every
//! target), register capture ([`capture_registers`]), fatal CPU exceptions into the dump
//! ([`ExceptionRegisters`] → [`ExceptionCrash`]), the crashing stack's code addresses
//! ([`StackTrace`]), a TSC clock calibrated against the PIT ([`TscClock`]), the cookie
//! source ([`CookieRng`]: RDRAND, or a documented fallback), physical memory reads through
//! a direct map ([`DirectMapMemory`], copying with [`copy_forward`]), and the wall clock
//! from the CMOS RTC ([`read_rtc`], for netconsole timestamps), and the local APIC's NMI to
//! the other CPUs with the halt a stopped CPU parks in ([`LocalApic`], [`park_this_cpu`]).

#![allow(unsafe_code)]

// The vocabulary, plain data: compiled on every target (the rest only on x86_64).
pub mod vector;
pub use vector::{Exception, PageFaultErrorCode, exception_name, pushes_error_code};

#[cfg(target_arch = "x86_64")]
mod apic;
#[cfg(target_arch = "x86_64")]
mod copy;
#[cfg(target_arch = "x86_64")]
mod exception;
#[cfg(target_arch = "x86_64")]
mod io;
#[cfg(target_arch = "x86_64")]
mod memory;
#[cfg(target_arch = "x86_64")]
mod regs;
#[cfg(target_arch = "x86_64")]
mod rng;
#[cfg(all(target_arch = "x86_64", feature = "netconsole"))]
mod rtc;
#[cfg(target_arch = "x86_64")]
mod stack;
#[cfg(target_arch = "x86_64")]
mod tsc;

#[cfg(target_arch = "x86_64")]
pub use apic::{ApicMode, LocalApic, icr_nmi_low, park_this_cpu, x2apic_icr_nmi, xapic_icr_nmi_high};
#[cfg(target_arch = "x86_64")]
pub use copy::{copy_forward, is_zero_forward};
#[cfg(target_arch = "x86_64")]
pub use exception::{ExceptionCrash, ExceptionRegisters};
#[cfg(target_arch = "x86_64")]
pub use memory::DirectMapMemory;
#[cfg(target_arch = "x86_64")]
pub use regs::{capture_registers, read_control_registers};
#[cfg(target_arch = "x86_64")]
pub use rng::{CookieRng, CookieSource};
#[cfg(all(target_arch = "x86_64", feature = "netconsole"))]
pub use rtc::read_rtc;
#[cfg(target_arch = "x86_64")]
pub use stack::StackTrace;
#[cfg(target_arch = "x86_64")]
pub use tsc::{Calibration, TscClock};
