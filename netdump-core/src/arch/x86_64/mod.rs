//! x86_64: register capture ([`capture_registers`]), fatal CPU exceptions into the dump
//! ([`ExceptionRegisters`] → [`ExceptionCrash`]), the crashing stack's code addresses
//! ([`StackTrace`]), a TSC clock calibrated against the PIT ([`TscClock`]), the cookie
//! source ([`CookieRng`]: RDRAND, or a documented fallback) and physical memory reads
//! through a direct map ([`DirectMapMemory`]), and the wall clock from the CMOS RTC
//! ([`read_rtc`], for netconsole timestamps).

#![allow(unsafe_code)]

mod exception;
mod io;
mod memory;
mod regs;
mod rng;
#[cfg(feature = "netconsole")]
mod rtc;
mod stack;
mod tsc;

pub use exception::{exception_name, pushes_error_code, vector, ExceptionCrash, ExceptionRegisters};
pub use memory::DirectMapMemory;
pub use regs::{capture_registers, read_control_registers};
pub use rng::{CookieRng, CookieSource};
#[cfg(feature = "netconsole")]
pub use rtc::read_rtc;
pub use stack::StackTrace;
pub use tsc::TscClock;
