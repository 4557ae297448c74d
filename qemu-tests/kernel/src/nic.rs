//! The NIC the test kernel dumps through: whichever supported controller QEMU gives it (an
//! e1000, or a virtio-net through its legacy or modern interface), found and built by
//! `netdump-qemu-nics` from static DMA memory.

use netdump_qemu_runtime::println;

pub use netdump_qemu_nics::Nic;

/// Finds the first supported NIC and builds its driver. Call once.
pub fn bring_up() -> Result<Nic, &'static str> {
    let (nic, found) = netdump_qemu_nics::bring_up()?;
    println!("nic: {} ({found})", nic.kind());
    Ok(nic)
}
