//! The NIC the test kernel dumps through: whichever configured NIC QEMU gives it
//! (`qemu-tests/nics/src/table.rs`), found and built by `netdump-qemu-nics` from static
//! DMA memory.

use netdump_qemu_runtime::{Cmdline, println};

pub use netdump_qemu_nics::Nic;

/// Finds the first supported NIC and builds its driver. Call once. `checksum_offload`
/// false keeps UDP checksums in software even where the device could compute them.
pub fn bring_up(cmdline: Cmdline<'static>, checksum_offload: bool) -> Result<Nic, &'static str> {
    let (mut nic, found) = netdump_qemu_nics::bring_up(cmdline)?;
    nic.set_udp_checksum_offload(checksum_offload);
    println!(
        "nic: {} ({found}), UDP checksum offload {}",
        nic.kind(),
        if checksum_offload { "where the device has it" } else { "off" }
    );
    Ok(nic)
}
