//! x86_64: register capture ([`capture_registers`]), a TSC clock calibrated against the
//! PIT ([`TscClock`]), the cookie source ([`CookieRng`]: RDRAND, or a documented
//! fallback) and physical memory reads through a direct map ([`DirectMapMemory`]).

#![allow(unsafe_code)]

mod io;
mod memory;
mod regs;
mod rng;
mod tsc;

pub use memory::DirectMapMemory;
pub use regs::{capture_registers, read_control_registers};
pub use rng::{CookieRng, CookieSource};
pub use tsc::TscClock;
