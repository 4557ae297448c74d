//! Every scenario of the QEMU suite, by group.

mod basic;
pub mod common;

use crate::qemu::NicModel;
use crate::suite::Scenario;

/// The NIC configurations every dump scenario runs on.
pub const NICS: &[NicModel] = &[NicModel::E1000];

pub fn all() -> Vec<Scenario> {
    let mut v = vec![];
    for &nic in NICS {
        v.extend(basic::scenarios(nic));
    }
    v
}
