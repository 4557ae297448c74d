//! Every scenario of the QEMU suite, by group.

mod attack;
mod basic;
pub mod common;
mod compress;
mod crypto;
mod exceptions;
mod failover;
mod filter;
mod hostile;
mod link;
mod ops;
mod smp;

use crate::qemu::NicModel;
use crate::suite::Scenario;

/// The NIC configurations every dump scenario runs on: the NIC table's.
pub use crate::qemu::NICS;

pub fn all() -> Vec<Scenario> {
    let mut v = vec![];
    for &nic in NICS {
        v.extend(basic::scenarios(nic));
    }
    // Page filtering changes what the driver carries (fewer, differently spaced pages):
    // every NIC.
    for &nic in NICS {
        v.extend(filter::scenarios(nic));
    }
    // Compressed dumps of the realistic image, against uncompressed ones: every NIC
    // carries the blocks; the bad blocks and encryption are the protocol's (e1000).
    for &nic in NICS {
        v.extend(compress::scenarios(nic));
    }
    v.extend(compress::single(NicModel::E1000));
    // CPU exceptions, memory maps and mappings do not depend on the NIC model.
    v.extend(exceptions::scenarios(NicModel::E1000));
    // Server operations and netconsole do not depend on the NIC model.
    v.extend(ops::scenarios(NicModel::E1000));
    // The network and the server fail under the protocol, not under a NIC driver.
    v.extend(hostile::scenarios(NicModel::E1000));
    // Encrypted dumps cross every NIC; the attacker, the keys and the control that proves
    // the wire search sees memory are the protocol's and the server's.
    for &nic in NICS {
        v.extend(crypto::scenarios(nic));
    }
    v.extend(crypto::single(NicModel::E1000));
    v.extend(filter::single(NicModel::E1000));
    // Unlike the hostile scenarios (e1000 only), the standing attack runs on every NIC: the flood
    // loads netdumpd and the host while the kernel's driver carries the dump, and a
    // driver slowed or starved by it must still get its dump through.
    for &nic in NICS {
        v.extend(attack::scenarios(nic));
    }
    // A link slower than the client with a queue shallower than its window: the queue
    // drops what the client sends too fast, and how fast each NIC's driver sends (a
    // burst after an ACK) is what fills it, so every NIC.
    for &nic in NICS {
        v.extend(link::scenarios(nic));
    }
    // Stopping the other CPUs happens beside the NIC, but the dump from an AP drives the
    // NIC from that AP, and the stop must leave every driver's NIC usable: every NIC.
    for &nic in NICS {
        v.extend(smp::scenarios(nic));
    }
    // Failover is the client's, but its dump goes out after a server switch on the
    // driver that registered with all of them: every NIC.
    for &nic in NICS {
        v.extend(failover::scenarios(nic));
    }
    v
}
