//! The device under test: whichever NIC `netdump-qemu-nics` brings up, as an integrator
//! does; the hooks of [`DeviceUnderTest`] are its [`Port`](netdump_qemu_nics::Port)'s.

use netdump_core::nic::{NicError, PolledNic};
use netdump_qemu_nics::{Found, Nic};
use netdump_qemu_runtime::Cmdline;

use crate::{DeviceUnderTest, Note};

/// The NIC and where discovery found it.
pub struct UnderTest {
    pub nic: Nic,
    pub found: Found,
}

/// Finds the first configured NIC and builds its driver. Call once.
pub fn bring_up(cmdline: Cmdline<'static>) -> Result<UnderTest, &'static str> {
    let (nic, found) = netdump_qemu_nics::bring_up(cmdline)?;
    Ok(UnderTest { nic, found })
}

impl PolledNic for UnderTest {
    fn mac_address(&self) -> [u8; 6] {
        self.nic.mac_address()
    }
    fn mtu(&self) -> usize {
        self.nic.mtu()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.nic.reset()
    }
    fn udp_checksum_offload(&self) -> bool {
        self.nic.udp_checksum_offload()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.nic.transmit(len, fill)
    }
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.nic.transmit_deferred(len, fill)
    }
    fn flush_transmit(&mut self) {
        self.nic.flush_transmit()
    }
    fn poll_transmit(&mut self) -> usize {
        self.nic.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        self.nic.poll_receive(handler)
    }
}

impl DeviceUnderTest for UnderTest {
    fn kind(&self) -> &'static str {
        self.nic.kind()
    }
    fn bus_master_enabled(&mut self) -> bool {
        self.nic.bus_master_enabled()
    }
    fn link_up(&mut self) -> bool {
        self.nic.link_up()
    }
    fn tx_in_flight(&self) -> usize {
        self.nic.tx_in_flight()
    }
    fn tx_capacity(&self) -> usize {
        self.nic.tx_capacity()
    }
    fn rx_capacity(&self) -> usize {
        self.nic.rx_capacity()
    }
    fn leave_dirty(&mut self) {
        self.nic.leave_dirty(&self.found)
    }
    fn check_clean(&mut self) -> Result<(), Note> {
        self.nic.check_clean(&self.found)
    }
}
