//! Host tests of the driver over the virtio-mmio transport, against the fake device's
//! MMIO register block (`fake.rs`, `Part::Mmio`), version 2 and legacy version 1. The
//! queue code is the PCI transports' (`tests.rs` covers its corners); these check what
//! the transport changes: identification, bring-up, the data path, takeover.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use netdump_core::nic::{NicError, PolledNic};
use netdump_pci::{DmaRegion, RegisterBlock};

use crate::fake::{FakeBlock, FakeDevice, Part};
use crate::transport::{MmioDeviceSpec, MmioError, MmioTransport, Transport};
use crate::{DeviceStatus, Features, InitError, Interface, VirtioNet};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x58];

type Nic = VirtioNet<MmioTransport<FakeBlock>, 8, 8>;
type Device = Rc<RefCell<FakeDevice>>;

/// What QEMU 7.2's virtio-net-device offers with `-netdev user`.
const QEMU: Features = Features::MAC
    .union(Features::STATUS)
    .union(Features::MRG_RXBUF)
    .union(Features::CTRL_VQ)
    .union(Features::ANY_LAYOUT)
    .union(Features::RING_EVENT_IDX)
    .union(Features::VERSION_1);

/// Where the device sees the tests' DMA memory: not where the host has it.
const DMA_PHYS: u64 = 0x0200_0000;

/// virtio-mmio registers the tests poke as a dying OS driver would.
mod reg {
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DEVICE_LOW: usize = 0x0A0;
    pub const STATUS: usize = 0x070;
}

fn dma(device: &Device, len: usize) -> DmaRegion {
    let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    device.borrow_mut().dma_offset = (base.as_ptr() as u64).wrapping_sub(DMA_PHYS);
    assert_ne!(base.as_ptr() as u64, DMA_PHYS);
    // SAFETY: the block is leaked, so the region owns it for the rest of the run; the fake
    // device reaches device address DMA_PHYS + i at host address base + i.
    unsafe { DmaRegion::new(base, DMA_PHYS, len) }
}

fn device(version: u32) -> Device {
    let offered = if version == 1 { Features::from_bits_retain(QEMU.bits() & 0xFFFF_FFFF) } else { QEMU };
    FakeDevice::mmio(version, offered, MAC)
}

fn block(device: &Device) -> FakeBlock {
    FakeBlock { device: device.clone(), part: Part::Mmio }
}

fn new_nic(device: &Device) -> Result<Nic, InitError> {
    let transport = MmioTransport::new(block(device)).unwrap();
    Nic::new(transport, dma(device, Nic::DMA_SIZE))
}

fn started(device: &Device) -> Nic {
    let mut nic = new_nic(device).unwrap();
    nic.reset().unwrap();
    nic
}

fn frame(len: usize, tag: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (tag as usize).wrapping_add(i) as u8).collect();
    f[..6].copy_from_slice(&[0xFF; 6]);
    f[6..12].copy_from_slice(&MAC);
    f
}

fn send(nic: &mut Nic, bytes: &[u8]) -> Result<(), NicError> {
    nic.transmit(bytes.len(), &mut |buf| buf.copy_from_slice(bytes))
}

fn receive(nic: &mut Nic) -> (bool, Option<Vec<u8>>) {
    let mut got = None;
    let polled = nic.poll_receive(&mut |f| got = Some(f.to_vec())).unwrap();
    (polled, got)
}

/// The device addresses of the driver's rings: receive queue first, then transmit (the
/// order `VirtioNet::new` carves them in), 12 KiB each.
fn our_rings(queue: usize) -> u64 {
    DMA_PHYS + queue as u64 * 12288
}

// ---- identification ----

#[test]
fn new_accepts_version_2_and_legacy_version_1() {
    for (version, interface) in [(2, Interface::Modern), (1, Interface::Legacy)] {
        let d = device(version);
        let mut transport = MmioTransport::new(block(&d)).unwrap();
        assert_eq!(transport.interface(), interface);
        assert_eq!(transport.version(), version);
        assert_eq!(transport.vendor_id(), 0x554D_4551);
    }
}

#[test]
fn new_refuses_what_is_not_a_virtio_mmio_network_device() {
    let refused = |f: &dyn Fn(&mut FakeDevice)| {
        let d = device(2);
        f(&mut d.borrow_mut());
        MmioTransport::new(block(&d)).err()
    };
    assert_eq!(refused(&|d| d.mmio_magic = 0x1234_5678), Some(MmioError::BadMagic(0x1234_5678)));
    assert_eq!(refused(&|d| d.mmio_version = 3), Some(MmioError::UnsupportedVersion(3)));
    assert_eq!(refused(&|d| d.mmio_device_id = 0), Some(MmioError::NoDevice));
    assert_eq!(refused(&|d| d.mmio_device_id = 2), Some(MmioError::NotNetwork(2)));
    assert_eq!(refused(&|d| d.gone = true), Some(MmioError::DeviceGone));
}

/// A block that claims fewer bytes than the registers and configuration span.
struct Short(FakeBlock);

impl RegisterBlock for Short {
    fn len(&self) -> usize {
        0x100
    }
    fn read_u8(&mut self, offset: usize) -> u8 {
        self.0.read_u8(offset)
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        self.0.read_u16(offset)
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.0.read_u32(offset)
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        self.0.write_u8(offset, value)
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.0.write_u16(offset, value)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.0.write_u32(offset, value)
    }
}

#[test]
fn new_refuses_a_block_too_short_for_the_configuration() {
    let d = device(2);
    assert_eq!(MmioTransport::new(Short(block(&d))).err(), Some(MmioError::TooShort));
}

#[test]
fn the_driver_requires_version_1_on_a_version_2_transport() {
    let d = FakeDevice::mmio(2, QEMU - Features::VERSION_1, MAC);
    assert!(matches!(new_nic(&d), Err(InitError::NoVersion1)));
}

// ---- bring-up ----

#[test]
fn reset_brings_a_version_2_device_to_driver_ok_with_our_addresses() {
    let d = device(2);
    let mut nic = started(&d);
    assert_eq!(nic.mac_address(), MAC);
    let dev = d.borrow();
    assert_eq!(
        DeviceStatus::from_bits_retain(dev.status),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK
    );
    assert_eq!(Features::from_bits_retain(dev.driver_features), Features::MAC | Features::STATUS | Features::VERSION_1);
    for q in 0..2 {
        let queue = dev.queues[q];
        assert!(queue.enabled);
        assert_eq!(queue.size, 256);
        assert_eq!(queue.descriptors, our_rings(q));
        assert_eq!(queue.driver, our_rings(q) + 16 * 256);
        assert_eq!(queue.device, our_rings(q) + 8192);
    }
    let rx_avail: u16 = dev.load(dev.queues[0].driver + 2);
    assert_eq!(rx_avail, 8);
    assert_eq!(dev.notifications[0], 1);
    drop(dev);
    assert_eq!(nic.interface(), Interface::Modern);
    assert!(nic.interrupts_suppressed());
    assert_eq!(nic.transport().driver_features(), nic.features());
}

#[test]
fn reset_brings_a_legacy_version_1_device_up_through_page_numbers() {
    let d = device(1);
    let nic = started(&d);
    let dev = d.borrow();
    assert_eq!(
        DeviceStatus::from_bits_retain(dev.status),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK
    );
    assert_eq!(dev.driver_features, (Features::MAC | Features::STATUS).bits());
    assert_eq!(dev.guest_page_size, 4096);
    for q in 0..2 {
        let queue = dev.queues[q];
        assert_eq!((queue.size, queue.align), (256, 4096));
        assert_eq!(u64::from(queue.pfn) * 4096, our_rings(q));
        assert_eq!(queue.device, our_rings(q) + 8192);
    }
    drop(dev);
    assert_eq!(nic.interface(), Interface::Legacy);
}

// ---- data path ----

#[test]
fn frames_go_out_and_come_in_without_raising_an_interrupt() {
    for version in [2, 1] {
        let d = device(version);
        let mut nic = started(&d);
        for i in 0..40 {
            send(&mut nic, &frame(60 + i as usize * 30, i)).unwrap();
            nic.poll_transmit();
        }
        let header_len = if version == 2 { 12 } else { 10 };
        let dev = d.borrow();
        assert_eq!(dev.sent.len(), 40);
        assert!(dev.sent.iter().enumerate().all(|(i, f)| *f == frame(60 + i * 30, i as u32)));
        assert!(dev.sent_headers.iter().all(|h| h.len() == header_len && h.iter().all(|&b| b == 0)));
        drop(dev);
        for i in 0..20 {
            assert!(d.borrow_mut().receive(&frame(64 + i, i as u32)));
            assert_eq!(receive(&mut nic), (true, Some(frame(64 + i, i as u32))));
        }
        assert_eq!(receive(&mut nic), (false, None));
        // Both available rings said NO_INTERRUPT, so the device never raised one.
        assert_eq!(d.borrow().interrupt_status, 0, "version {version}");
    }
}

#[test]
fn transmit_reports_a_device_that_fell_off_the_bus() {
    let d = device(2);
    let mut nic = started(&d);
    d.borrow_mut().gone = true;
    // StatusPacer reads the status on the first frame after a reset.
    assert_eq!(send(&mut nic, &frame(60, 0)), Err(NicError::DeviceGone));
}

// ---- takeover ----

/// What a dying OS driver can leave in a virtio-mmio device: DRIVER_OK with its own queues
/// set up and in use, frames in flight and received, interrupts pending and never
/// acknowledged, and the transmit queue re-pointed elsewhere while ready.
fn leave_dirty(nic: &mut Nic, d: &Device) {
    d.borrow_mut().auto_complete_tx = false;
    for i in 0..8 {
        send(nic, &frame(100, i)).unwrap();
    }
    nic.request_interrupts();
    assert!(!nic.interrupts_suppressed());
    // Completions and a frame received, each with the interrupt the rings now ask for.
    d.borrow_mut().process_tx(3);
    assert!(d.borrow_mut().receive(&frame(80, 0xEE)));
    assert_eq!(d.borrow().interrupt_status, 1);
    d.borrow_mut().interrupt_status |= 0b10;
    let registers = nic.transport().registers();
    registers.write_u32(reg::QUEUE_SEL, 1);
    registers.write_u32(reg::QUEUE_NUM, 64);
    registers.write_u32(reg::QUEUE_DESC_LOW, 0x0800_0000);
    registers.write_u32(reg::QUEUE_DRIVER_LOW, 0x0800_0400);
    registers.write_u32(reg::QUEUE_DEVICE_LOW, 0x0800_1000);
    registers.write_u32(reg::QUEUE_READY, 1);
}

#[test]
fn reset_takes_over_a_device_left_running() {
    for version in [2, 1] {
        let d = device(version);
        let mut nic = started(&d);
        if version == 2 {
            leave_dirty(&mut nic, &d);
            assert_eq!(d.borrow().queues[1].descriptors, 0x0800_0000);
        } else {
            d.borrow_mut().auto_complete_tx = false;
            for i in 0..8 {
                send(&mut nic, &frame(100, i)).unwrap();
            }
            assert!(d.borrow_mut().receive(&frame(80, 0xEE)));
            d.borrow_mut().interrupt_status = 0b11;
        }
        let resets = d.borrow().resets;

        nic.reset().unwrap();

        let dev = d.borrow();
        assert_eq!(dev.resets, resets + 1);
        assert_eq!(dev.interrupt_status, 0);
        assert!(dev.status & DeviceStatus::DRIVER_OK.bits() != 0);
        for q in 0..2 {
            assert_eq!(dev.queues[q].descriptors, our_rings(q));
            assert_eq!(dev.queues[q].size, 256);
        }
        drop(dev);
        assert!(nic.interrupts_suppressed());
        assert_eq!(nic.tx_in_flight(), 0);
        assert_eq!(receive(&mut nic), (false, None));
        d.borrow_mut().auto_complete_tx = true;
        d.borrow_mut().sent.clear();
        for i in 0..20 {
            send(&mut nic, &frame(64, i)).unwrap();
            nic.poll_transmit();
        }
        assert_eq!(d.borrow().sent.len(), 20);
        for i in 0..8 {
            assert!(d.borrow_mut().receive(&frame(70, i)));
        }
        assert!(!d.borrow_mut().receive(&frame(70, 8)));
    }
}

#[test]
fn reset_acknowledges_interrupts_a_dead_driver_left_pending() {
    let d = device(2);
    let mut nic = started(&d);
    // A device whose reset keeps the status (and so its interrupt state) still gets its
    // pending interrupts acknowledged before the reset is attempted.
    d.borrow_mut().interrupt_status = 0b11;
    d.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
    assert_eq!(d.borrow().interrupt_status, 0);
}

#[test]
fn reset_times_out_when_the_status_never_clears() {
    let d = device(2);
    let mut nic = started(&d);
    d.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
}

#[test]
fn a_vanished_device_is_device_gone_at_new_and_at_reset() {
    let d = device(2);
    let mut nic = started(&d);
    d.borrow_mut().gone = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
    // Identified while present, gone before construction.
    let d = device(2);
    let transport = MmioTransport::new(block(&d)).unwrap();
    d.borrow_mut().gone = true;
    assert!(matches!(Nic::new(transport, dma(&d, Nic::DMA_SIZE)), Err(InitError::DeviceGone)));
}

#[test]
fn a_transmit_queue_that_disappears_fails_the_reset_and_says_so() {
    let d = device(2);
    let mut nic = new_nic(&d).unwrap();
    d.borrow_mut().set_queue_max(1, 0);
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
    assert!(d.borrow().status & DeviceStatus::FAILED.bits() != 0);
}

#[test]
fn repeated_resets_each_leave_a_working_device() {
    for version in [2, 1] {
        let d = device(version);
        let mut nic = started(&d);
        for round in 0..5 {
            send(&mut nic, &frame(60, round)).unwrap();
            nic.reset().unwrap();
            assert_eq!(nic.tx_in_flight(), 0);
        }
        // Status writes of 0 from the OS in between change nothing either.
        nic.transport().registers().write_u32(reg::STATUS, 0);
        nic.reset().unwrap();
        send(&mut nic, &frame(60, 99)).unwrap();
        assert_eq!(d.borrow().sent.last().unwrap(), &frame(60, 99));
    }
}

// ---- the command line ----

#[test]
fn virtio_mmio_device_parses_as_linux_reads_it() {
    let spec = |s| MmioDeviceSpec::parse(s);
    assert_eq!(spec("512@0xfeb02e00:12"), Some(MmioDeviceSpec { base: 0xFEB0_2E00, size: 512, irq: 12 }));
    assert_eq!(spec("4K@0xd0000000:5:3"), Some(MmioDeviceSpec { base: 0xD000_0000, size: 4096, irq: 5 }));
    assert_eq!(spec("1m@4096:33"), Some(MmioDeviceSpec { base: 4096, size: 1 << 20, irq: 33 }));
    assert_eq!(spec("0x200@0xfeb00000:16"), Some(MmioDeviceSpec { base: 0xFEB0_0000, size: 512, irq: 16 }));
    for bad in ["", "512", "512@0xfeb02e00", "@0x1000:5", "0@0x1000:5", "K@0x1000:5", "512@zz:5", "512@0x1000:x"] {
        assert_eq!(spec(bad), None, "{bad:?}");
    }
    assert_eq!(spec("0x1000@0xffffffffffffffff:5"), None);
}
