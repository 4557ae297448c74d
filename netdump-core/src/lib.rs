#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
pub mod clock;
pub mod crash_cell;
pub mod log;
pub mod memory;
pub mod net;
pub mod nic;
pub mod proto;
