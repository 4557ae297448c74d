//! The NIC the test kernel dumps through: whichever supported controller QEMU gives it (an
//! e1000, or a virtio-net through its legacy or modern interface), found and built by
//! `netdump-qemu-nics` from static DMA memory.

use netdump_qemu_runtime::println;

pub use netdump_qemu_nics::Nic;

/// Finds the first supported NIC and builds its driver. Call once. `checksum_offload`
/// false keeps UDP checksums in software even where the device could compute them.
pub fn bring_up(checksum_offload: bool) -> Result<Nic, &'static str> {
    let (mut nic, found) = netdump_qemu_nics::bring_up()?;
    nic.set_udp_checksum_offload(checksum_offload);
    println!(
        "nic: {} ({found}), UDP checksum offload {}",
        nic.kind(),
        if checksum_offload { "where the device has it" } else { "off" }
    );
    Ok(nic)
}
