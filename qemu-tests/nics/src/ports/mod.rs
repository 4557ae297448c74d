//! One module per NIC configuration's [`Port`](crate::Port): the bring-up an integrator
//! writes (find the device, map its registers, hand the driver its DMA memory) and the
//! conformance kernel's takeover hooks (what a dying OS driver leaves, and the check that
//! `reset` undid it).

pub mod e1000;
pub mod e1000e;
pub mod virtio;
pub mod virtio_mmio;
pub mod vmxnet3;

/// `PolledNic` for a port that wraps its driver as field `.0`.
macro_rules! polled_nic_through_field {
    ($port:ty) => {
        impl netdump_core::nic::PolledNic for $port {
            fn mac_address(&self) -> [u8; 6] {
                self.0.mac_address()
            }
            fn mtu(&self) -> usize {
                self.0.mtu()
            }
            fn reset(&mut self) -> Result<(), netdump_core::nic::NicError> {
                self.0.reset()
            }
            fn udp_checksum_offload(&self) -> bool {
                self.0.udp_checksum_offload()
            }
            fn transmit(
                &mut self,
                len: usize,
                fill: &mut dyn FnMut(&mut [u8]),
            ) -> Result<(), netdump_core::nic::NicError> {
                self.0.transmit(len, fill)
            }
            fn transmit_deferred(
                &mut self,
                len: usize,
                fill: &mut dyn FnMut(&mut [u8]),
            ) -> Result<(), netdump_core::nic::NicError> {
                self.0.transmit_deferred(len, fill)
            }
            fn flush_transmit(&mut self) {
                self.0.flush_transmit()
            }
            fn poll_transmit(&mut self) -> usize {
                self.0.poll_transmit()
            }
            fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, netdump_core::nic::NicError> {
                self.0.poll_receive(handler)
            }
        }
    };
}
pub(crate) use polled_nic_through_field;
