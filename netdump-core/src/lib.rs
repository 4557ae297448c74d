#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
pub mod nic;
pub mod proto;
