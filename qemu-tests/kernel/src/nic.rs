//! The NIC the test kernel dumps through: whichever configured NIC QEMU gives it
//! (`qemu-tests/nics/src/table.rs`), found and built by `netdump-qemu-nics` from static
//! DMA memory; and [`Counted`], netdump's instance, which counts what reaches the device.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU64, Ordering};

use netdump_core::nic::{NicError, PolledNic};
use netdump_qemu_runtime::{Cmdline, println};

pub use netdump_qemu_nics::Nic;

/// Finds the first supported NIC and builds its driver (not reset). Call at most twice
/// (netdump's instance, then in the `deferred` scenario the kernel's own driver).
/// `checksum_offload` false keeps UDP checksums in software even where the device could
/// compute them.
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

/// Calls of netdump's driver instance that reach the device: every `PolledNic` method
/// but `mac_address`, `mtu` and `udp_checksum_offload`, which read the driver's memory.
static DEVICE_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many calls netdump's instance has made to the device so far.
pub fn device_calls() -> u64 {
    DEVICE_CALLS.load(Ordering::Relaxed)
}

/// Netdump's driver instance, counting in [`device_calls`] what reaches the device: the
/// `deferred` scenario proves with it that netdump touched nothing before the panic.
pub struct Counted(pub Nic);

impl Deref for Counted {
    type Target = Nic;
    fn deref(&self) -> &Nic {
        &self.0
    }
}

impl DerefMut for Counted {
    fn deref_mut(&mut self) -> &mut Nic {
        &mut self.0
    }
}

fn count() {
    DEVICE_CALLS.fetch_add(1, Ordering::Relaxed);
}

impl PolledNic for Counted {
    fn mac_address(&self) -> [u8; 6] {
        self.0.mac_address()
    }
    fn mtu(&self) -> usize {
        self.0.mtu()
    }
    fn udp_checksum_offload(&self) -> bool {
        self.0.udp_checksum_offload()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        count();
        self.0.reset()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        count();
        self.0.transmit(len, fill)
    }
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        count();
        self.0.transmit_deferred(len, fill)
    }
    fn flush_transmit(&mut self) {
        count();
        self.0.flush_transmit()
    }
    fn poll_transmit(&mut self) -> usize {
        count();
        self.0.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        count();
        self.0.poll_receive(handler)
    }
}
