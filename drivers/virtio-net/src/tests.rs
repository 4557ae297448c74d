//! Host tests of the driver, its transports and its virtqueues against the fake device in
//! `fake.rs`.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use netdump_core::nic::{NicError, PolledNic};
use netdump_pci::{Command, DmaError, DmaRegion, PciDevice, capability_id};

use crate::fake::{self, FakeBlock, FakeDevice, Part, SharedConfig};
use crate::transport::{NO_VECTOR, PciTransport, ProbeError, StructureKind, Transport};
use crate::{DeviceStatus, Features, InitError, Interface, VirtioNet, dma_size};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];

type Fake = PciTransport<SharedConfig, FakeBlock, FakeBlock>;
type Nic<const TX: usize = 8, const RX: usize = 8> = VirtioNet<Fake, TX, RX>;
type Device = Rc<RefCell<FakeDevice>>;

/// What QEMU 7.2 offers with `-netdev user` (no offloads), legacy bits only.
const QEMU_LEGACY: Features = Features::MAC
    .union(Features::STATUS)
    .union(Features::MRG_RXBUF)
    .union(Features::CTRL_VQ)
    .union(Features::ANY_LAYOUT)
    .union(Features::RING_EVENT_IDX);
const QEMU_MODERN: Features = QEMU_LEGACY.union(Features::VERSION_1);

/// The physical address the tests' DMA memory appears at to the device: low, as a legacy
/// device needs (32-bit page numbers), unlike the host memory behind it.
const DMA_PHYS: u64 = 0x0100_0000;

/// `len` bytes of leaked, page-aligned, zeroed host memory that `device` sees at
/// [`DMA_PHYS`].
fn dma(device: &Device, len: usize) -> DmaRegion {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    device.borrow_mut().dma_offset = (base.as_ptr() as u64).wrapping_sub(DMA_PHYS);
    // SAFETY: the block is leaked, so the region owns it for the rest of the run; the fake
    // device reaches device address DMA_PHYS + i at host address base + i.
    unsafe { DmaRegion::new(base, DMA_PHYS, len) }
}

/// Probes `pci` with blocks of `device`: the legacy ports, and each modern structure by
/// its address in BAR4.
fn probe(pci: SharedConfig, device: &Device) -> Result<Fake, ProbeError> {
    let ports = device.clone();
    let structures = device.clone();
    PciTransport::probe(
        PciDevice::new(pci, fake::ADDRESS),
        move |port, len| {
            assert_eq!((port, len), (u32::from(fake::LEGACY_PORT), u64::from(fake::LEGACY_PORTS)));
            Some(FakeBlock { device: ports, part: Part::Legacy })
        },
        move |phys, _len| {
            let part = match phys - fake::MODERN_BAR {
                fake::COMMON_OFFSET => Part::Common,
                fake::NOTIFY_OFFSET => Part::Notify,
                fake::DEVICE_OFFSET => Part::Device,
                _ => return None,
            };
            Some(FakeBlock { device: structures.clone(), part })
        },
    )
}

fn legacy_device(offered: Features) -> Device {
    FakeDevice::new(fake::legacy_function(), offered, MAC)
}

fn modern_device(offered: Features) -> Device {
    FakeDevice::new(fake::modern_function(0x1041), offered, MAC)
}

fn new_nic<const TX: usize, const RX: usize>(device: &Device) -> Result<Nic<TX, RX>, InitError> {
    let pci = device.borrow().pci.clone();
    let transport = probe(pci, device).unwrap();
    Nic::<TX, RX>::new(transport, dma(device, Nic::<TX, RX>::DMA_SIZE))
}

fn started<const TX: usize, const RX: usize>(device: &Device) -> Nic<TX, RX> {
    let mut nic = new_nic::<TX, RX>(device).unwrap();
    nic.reset().unwrap();
    nic
}

/// A started legacy and a started modern NIC, for tests that hold on both interfaces.
fn both<const TX: usize, const RX: usize>() -> [(Nic<TX, RX>, Device); 2] {
    let legacy = legacy_device(QEMU_LEGACY);
    let modern = modern_device(QEMU_MODERN);
    [(started(&legacy), legacy), (started(&modern), modern)]
}

/// A recognisable frame: broadcast destination, our source, then bytes from `tag`.
fn frame(len: usize, tag: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (tag as usize).wrapping_add(i) as u8).collect();
    f[..6].copy_from_slice(&[0xFF; 6]);
    f[6..12].copy_from_slice(&MAC);
    f
}

fn send(nic: &mut impl PolledNic, bytes: &[u8]) -> Result<(), NicError> {
    nic.transmit(bytes.len(), &mut |buf| buf.copy_from_slice(bytes))
}

/// Receives one frame: `(polled, frame if delivered)`.
fn receive(nic: &mut impl PolledNic) -> (bool, Option<Vec<u8>>) {
    let mut got = None;
    let polled = nic.poll_receive(&mut |f| got = Some(f.to_vec())).unwrap();
    (polled, got)
}

fn command_of<const TX: usize, const RX: usize>(nic: &mut Nic<TX, RX>) -> Command {
    nic.pci().command()
}

#[test]
fn dma_size_of_default_buffers() {
    assert_eq!(crate::DEFAULT_DMA_SIZE, 155_648);
    assert_eq!(Nic::<32, 32>::DMA_SIZE, dma_size(32, 32));
    assert_eq!(Nic::<4, 16>::DMA_SIZE, 2 * 12288 + 20 * 2048);
}

// ---- choosing the interface ----

#[test]
fn probe_takes_legacy_when_only_legacy_is_offered() {
    let device = legacy_device(QEMU_LEGACY);
    let transport = probe(device.borrow().pci.clone(), &device).unwrap();
    assert_eq!(transport.interface(), Interface::Legacy);
}

#[test]
fn probe_takes_modern_when_only_modern_is_offered() {
    let device = modern_device(QEMU_MODERN);
    let transport = probe(device.borrow().pci.clone(), &device).unwrap();
    assert_eq!(transport.interface(), Interface::Modern);
}

#[test]
fn probe_prefers_modern_on_a_transitional_device() {
    let device = FakeDevice::new(fake::modern_function(0x1000), QEMU_MODERN, MAC);
    let transport = probe(device.borrow().pci.clone(), &device).unwrap();
    assert_eq!(transport.interface(), Interface::Modern);
}

#[test]
fn probe_fails_without_either_interface() {
    let device = legacy_device(QEMU_LEGACY);
    // A modern-only ID with no capabilities: nothing to drive.
    let pci = fake::legacy_function();
    pci.0.borrow_mut().function(fake::ADDRESS).unwrap().set_raw_bar(0, 0);
    assert_eq!(probe(pci, &device).err(), Some(ProbeError::NoInterface));
}

#[test]
fn probe_reports_a_structure_that_cannot_be_mapped() {
    let device = modern_device(QEMU_MODERN);
    let pci = PciDevice::new(device.borrow().pci.clone(), fake::ADDRESS);
    let result: Result<Fake, _> = PciTransport::probe(pci, |_, _| None, |_, _| None);
    assert_eq!(result.err(), Some(ProbeError::Unmapped(StructureKind::Common)));
}

/// Points the `n`th virtio capability (0 common, 1 ISR, 2 device, 3 notify) of a
/// [`fake::modern_function`] at BAR0, which is no memory BAR.
fn break_capability(pci: &SharedConfig, n: u8) {
    let mut cfg = pci.0.borrow_mut();
    let f = cfg.function(fake::ADDRESS).unwrap();
    // MSI-X comes first (0x40, 12 bytes); the virtio capabilities follow, 16 bytes each
    // (the notify one, last, 20).
    let at = 0x4C + 16 * n;
    assert_eq!(f.peek_u16(at) & 0xFF, u16::from(capability_id::VENDOR_SPECIFIC));
    f.poke(at + 4, 0);
}

#[test]
fn probe_skips_capabilities_that_point_at_no_memory_bar() {
    let device = modern_device(QEMU_MODERN);
    let pci = fake::modern_function(0x1041);
    break_capability(&pci, 3);
    assert_eq!(probe(pci, &device).err(), Some(ProbeError::Missing(StructureKind::Notify)));
}

#[test]
fn probe_falls_back_to_legacy_when_the_modern_structures_are_unusable() {
    let device = FakeDevice::new(fake::modern_function(0x1000), QEMU_LEGACY, MAC);
    let pci = device.borrow().pci.clone();
    break_capability(&pci, 0);
    let transport = probe(pci, &device).unwrap();
    assert_eq!(transport.interface(), Interface::Legacy);
    // A modern-only device without them has nothing to drive.
    let pci = fake::modern_function(0x1041);
    break_capability(&pci, 0);
    assert_eq!(probe(pci, &device).err(), Some(ProbeError::NoInterface));
}

// ---- construction ----

#[test]
fn new_reads_the_mac_on_both_interfaces() {
    for (nic, _) in both::<8, 8>() {
        assert_eq!(nic.mac_address(), MAC);
    }
}

#[test]
fn new_reads_the_legacy_mac_where_msi_x_moved_it() {
    let device = legacy_device(QEMU_LEGACY);
    let pci = device.borrow().pci.clone();
    // The OS driver enabled MSI-X: the legacy device configuration starts at 0x18.
    let mut p = PciDevice::new(pci, fake::ADDRESS);
    let cap = p.find_capability(capability_id::MSI_X).unwrap();
    let header = p.read_u32(cap.offset);
    p.write_u32(cap.offset, header | 1 << 31);
    let nic = new_nic::<8, 8>(&device).unwrap();
    assert_eq!(nic.mac_address(), MAC);
}

#[test]
fn new_rejects_a_too_small_dma_region() {
    let device = modern_device(QEMU_MODERN);
    let transport = probe(device.borrow().pci.clone(), &device).unwrap();
    let result = Nic::<8, 8>::new(transport, dma(&device, Nic::<8, 8>::DMA_SIZE - 1));
    assert!(matches!(result, Err(InitError::Dma(DmaError::TooSmall { .. }))));
}

#[test]
fn new_requires_a_mac_address() {
    let device = modern_device(QEMU_MODERN - Features::MAC);
    assert!(matches!(new_nic::<8, 8>(&device), Err(InitError::NoMacAddress)));
}

#[test]
fn new_requires_version_1_on_the_modern_interface() {
    let device = modern_device(QEMU_LEGACY);
    assert!(matches!(new_nic::<8, 8>(&device), Err(InitError::NoVersion1)));
}

#[test]
fn new_fails_when_the_device_is_gone() {
    let device = modern_device(QEMU_MODERN);
    device.borrow_mut().gone = true;
    assert!(matches!(new_nic::<8, 8>(&device), Err(InitError::DeviceGone)));
}

#[test]
fn new_refuses_a_legacy_queue_larger_than_the_layout() {
    let device = legacy_device(QEMU_LEGACY);
    device.borrow_mut().set_queue_max(1, 1024);
    assert!(matches!(new_nic::<8, 8>(&device), Err(InitError::QueueSizeUnusable { queue: 1, size: 1024 })));
}

#[test]
fn new_fails_without_a_transmit_queue() {
    let device = modern_device(QEMU_MODERN);
    device.borrow_mut().set_queue_max(1, 0);
    assert!(matches!(new_nic::<8, 8>(&device), Err(InitError::QueueAbsent { queue: 1 })));
}

// ---- reset and initialisation ----

#[test]
fn reset_brings_the_legacy_device_to_driver_ok() {
    let device = legacy_device(QEMU_LEGACY);
    let nic = started::<8, 16>(&device);
    let d = device.borrow();
    assert_eq!(
        DeviceStatus::from_bits_retain(d.status),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK
    );
    assert_eq!(d.driver_features, (Features::MAC | Features::STATUS).bits());
    assert_eq!((d.queues[0].size, d.queues[1].size), (256, 256));
    assert!(d.queues[0].pfn != 0 && d.queues[1].pfn != 0);
    // Every receive buffer is available and the device was told.
    let rx_avail: u16 = d.load(d.queues[0].driver + 2);
    assert_eq!(rx_avail, 16);
    assert_eq!(d.notifications[0], 1);
    drop(d);
    assert_eq!((nic.rx_capacity(), nic.tx_capacity()), (16, 8));
    assert_eq!(nic.interface(), Interface::Legacy);
}

#[test]
fn reset_negotiates_features_ok_on_the_modern_device() {
    let device = modern_device(QEMU_MODERN | Features::ACCESS_PLATFORM);
    let mut nic = started::<8, 8>(&device);
    let d = device.borrow();
    assert_eq!(
        DeviceStatus::from_bits_retain(d.status),
        DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK | DeviceStatus::DRIVER_OK
    );
    assert_eq!(
        Features::from_bits_retain(d.driver_features),
        Features::MAC | Features::STATUS | Features::VERSION_1 | Features::ACCESS_PLATFORM
    );
    assert!(d.queues.iter().all(|q| q.enabled && q.vector == NO_VECTOR));
    assert_eq!(d.config_vector, NO_VECTOR);
    drop(d);
    assert_eq!(nic.features(), Features::MAC | Features::STATUS | Features::VERSION_1 | Features::ACCESS_PLATFORM);
    assert_eq!(nic.transport().driver_features(), nic.features());
}

#[test]
fn reset_silences_every_interrupt_and_enables_bus_mastering() {
    for (mut nic, device) in both::<8, 8>() {
        let command = command_of(&mut nic);
        assert!(command.contains(Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
        assert!(!nic.pci().msi_x_enabled());
        assert!(nic.interrupts_suppressed());
        let d = device.borrow();
        assert_eq!((d.avail_flags(0), d.avail_flags(1)), (1, 1));
    }
}

#[test]
fn reset_shrinks_a_large_modern_queue_and_uses_fewer_buffers_in_a_small_one() {
    let device = modern_device(QEMU_MODERN);
    device.borrow_mut().set_queue_max(0, 1024);
    device.borrow_mut().set_queue_max(1, 8);
    let nic = started::<32, 32>(&device);
    let d = device.borrow();
    assert_eq!((d.queues[0].size, d.queues[1].size), (256, 8));
    drop(d);
    assert_eq!((nic.rx_capacity(), nic.tx_capacity()), (32, 4));
}

#[test]
fn reset_times_out_when_the_status_never_clears() {
    let device = modern_device(QEMU_MODERN);
    let mut nic = started::<8, 8>(&device);
    device.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
}

#[test]
fn reset_fails_when_features_ok_is_refused_and_says_so() {
    let device = modern_device(QEMU_MODERN);
    let mut nic = new_nic::<8, 8>(&device).unwrap();
    device.borrow_mut().refuse_features_ok = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
    assert!(device.borrow().status & DeviceStatus::FAILED.bits() != 0);
}

#[test]
fn reset_of_a_vanished_device_reports_it() {
    let device = legacy_device(QEMU_LEGACY);
    let mut nic = started::<8, 8>(&device);
    device.borrow_mut().gone = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
}

/// The crash-time case: the OS was using the device (frames in flight, frames received and
/// not consumed, MSI-X and INTx on, vectors assigned, bus mastering off) when it died.
#[test]
fn reset_takes_the_device_over_from_any_state() {
    for (mut nic, device) in both::<8, 8>() {
        device.borrow_mut().auto_complete_tx = false;
        for i in 0..8 {
            send(&mut nic, &frame(100, i)).unwrap();
        }
        assert_eq!(send(&mut nic, &frame(100, 9)), Err(NicError::RingFull));
        device.borrow_mut().process_tx(3);
        assert!(device.borrow_mut().receive(&frame(80, 0xEE)));
        // What the dying OS driver left behind.
        let pci = nic.pci();
        let cap = pci.find_capability(capability_id::MSI_X).unwrap();
        let header = pci.read_u32(cap.offset);
        pci.write_u32(cap.offset, header | 1 << 31);
        pci.disable(Command::BUS_MASTER | Command::INTERRUPT_DISABLE);
        if let PciTransport::Modern(t) = nic.transport() {
            t.set_config_msix_vector(0);
            t.set_queue_msix_vector(0, 1);
            t.set_queue_msix_vector(1, 2);
        }
        let resets = device.borrow().resets;

        nic.reset().unwrap();

        assert_eq!(device.borrow().resets, resets + 1);
        assert_eq!(nic.tx_in_flight(), 0);
        assert!(!nic.pci().msi_x_enabled());
        assert!(command_of(&mut nic).contains(Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
        if let PciTransport::Modern(t) = nic.transport() {
            assert_eq!(t.config_msix_vector(), NO_VECTOR);
            assert_eq!((t.queue_msix_vector(0), t.queue_msix_vector(1)), (NO_VECTOR, NO_VECTOR));
        }
        // The frame received before the takeover is gone with the old rings.
        assert_eq!(receive(&mut nic), (false, None));
        // Both directions work, every buffer again.
        device.borrow_mut().auto_complete_tx = true;
        device.borrow_mut().sent.clear();
        for i in 0..20 {
            send(&mut nic, &frame(64, i)).unwrap();
            nic.poll_transmit();
        }
        assert_eq!(device.borrow().sent.len(), 20);
        for i in 0..8 {
            assert!(device.borrow_mut().receive(&frame(70, i)));
        }
        assert!(!device.borrow_mut().receive(&frame(70, 8)));
    }
}

#[test]
fn repeated_resets_each_leave_a_working_device() {
    for (mut nic, device) in both::<8, 8>() {
        for round in 0..5 {
            send(&mut nic, &frame(60, round)).unwrap();
            nic.reset().unwrap();
            assert_eq!(nic.tx_in_flight(), 0);
        }
        send(&mut nic, &frame(60, 99)).unwrap();
        assert_eq!(device.borrow().sent.last().unwrap(), &frame(60, 99));
    }
}

// ---- transmit ----

#[test]
fn transmit_sends_the_frame_behind_a_zero_header_of_the_right_length() {
    for (mut nic, device) in both::<8, 8>() {
        let header_len = if nic.interface() == Interface::Modern { 12 } else { 10 };
        let f = frame(1514, 7);
        send(&mut nic, &f).unwrap();
        let d = device.borrow();
        assert_eq!(d.sent, [f]);
        assert_eq!(d.sent_headers, [vec![0u8; header_len]]);
    }
}

#[test]
fn transmit_checks_lengths_without_calling_fill() {
    for (mut nic, _) in both::<8, 8>() {
        let mut called = false;
        assert_eq!(nic.transmit(1515, &mut |_| called = true), Err(NicError::FrameTooLarge { len: 1515, max: 1514 }));
        assert_eq!(nic.transmit(13, &mut |_| called = true), Err(NicError::FrameTooShort { len: 13 }));
        assert!(!called);
    }
}

#[test]
fn a_smaller_device_mtu_is_kept_to() {
    let device = modern_device(QEMU_MODERN | Features::MTU);
    device.borrow_mut().mtu = 1400;
    let mut nic = started::<8, 8>(&device);
    assert_eq!(nic.mtu(), 1400);
    assert!(nic.features().contains(Features::MTU));
    assert_eq!(send(&mut nic, &frame(1415, 0)), Err(NicError::FrameTooLarge { len: 1415, max: 1414 }));
    send(&mut nic, &frame(1414, 0)).unwrap();
}

/// Back-pressure: with the device holding completions back, the ring fills, `transmit`
/// refuses without touching a buffer, and each completion makes room for one more.
#[test]
fn a_full_transmit_ring_pushes_back_until_completions_are_reclaimed() {
    for (mut nic, device) in both::<4, 8>() {
        device.borrow_mut().auto_complete_tx = false;
        for i in 0..4 {
            send(&mut nic, &frame(200, i)).unwrap();
        }
        assert_eq!(nic.tx_in_flight(), 4);
        let mut called = false;
        assert_eq!(nic.transmit(200, &mut |_| called = true), Err(NicError::RingFull));
        assert!(!called);
        assert_eq!(nic.poll_transmit(), 0, "nothing used yet");

        assert_eq!(device.borrow_mut().process_tx(1), 1);
        assert_eq!(nic.poll_transmit(), 1);
        send(&mut nic, &frame(200, 4)).unwrap();
        assert_eq!(send(&mut nic, &frame(200, 5)), Err(NicError::RingFull));

        assert_eq!(device.borrow_mut().process_tx(usize::MAX), 4);
        assert_eq!(nic.poll_transmit(), 4);
        assert_eq!(nic.tx_in_flight(), 0);
        let sent: Vec<Vec<u8>> = (0..5).map(|i| frame(200, i)).collect();
        assert_eq!(device.borrow().sent, sent);
    }
}

/// More frames than the 16-bit ring indices count: the descriptor table, the available and
/// used rings and the free-running indices all wrap, repeatedly, and every frame arrives
/// intact and in order.
#[test]
fn transmit_ring_wraps_past_the_16_bit_indices() {
    for (mut nic, device) in both::<8, 8>() {
        device.borrow_mut().auto_complete_tx = false;
        let total = 70_000u32;
        let mut sent = 0;
        let mut checked = 0;
        while sent < total {
            match send(&mut nic, &frame(60 + (sent % 64) as usize, sent)) {
                Ok(()) => sent += 1,
                Err(NicError::RingFull) => {
                    device.borrow_mut().process_tx(usize::MAX);
                    nic.poll_transmit();
                    let mut d = device.borrow_mut();
                    for f in d.sent.drain(..) {
                        assert_eq!(f, frame(60 + (checked % 64) as usize, checked));
                        checked += 1;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        device.borrow_mut().process_tx(usize::MAX);
        nic.poll_transmit();
        assert_eq!(nic.tx_in_flight(), 0);
        checked += device.borrow().sent.len() as u32;
        assert_eq!(checked, total);
        assert_eq!(device.borrow().queues[1].used_idx, (total % 65_536) as u16);
    }
}

/// The device may use buffers in any order (2.7.8): every completion frees exactly its own
/// buffer, so no buffer is reused while the device still reads it.
#[test]
fn transmit_completions_out_of_order_free_the_right_buffers() {
    for (mut nic, device) in both::<8, 8>() {
        {
            let mut d = device.borrow_mut();
            d.auto_complete_tx = false;
            d.out_of_order = true;
        }
        let mut next = 0u32;
        for round in 0..200 {
            // Fill the ring, let the device finish a varying part of it in reverse order.
            while send(&mut nic, &frame(100, next)).is_ok() {
                next += 1;
            }
            let done = device.borrow_mut().process_tx(1 + round % 8);
            assert_eq!(nic.poll_transmit(), done);
        }
        device.borrow_mut().process_tx(usize::MAX);
        nic.poll_transmit();
        assert_eq!(nic.tx_in_flight(), 0);
        // Every frame left as it was built: none was overwritten in flight.
        let d = device.borrow();
        let mut sent: Vec<Vec<u8>> = d.sent.clone();
        let mut expected: Vec<Vec<u8>> = (0..next).map(|i| frame(100, i)).collect();
        sent.sort();
        expected.sort();
        assert_eq!(sent, expected);
    }
}

#[test]
fn used_entries_that_name_no_buffer_in_flight_are_ignored() {
    for (mut nic, device) in both::<4, 4>() {
        device.borrow_mut().auto_complete_tx = false;
        send(&mut nic, &frame(64, 1)).unwrap();
        {
            let mut d = device.borrow_mut();
            d.publish_raw(1, 1, 0); // odd: a frame descriptor, not a head
            d.publish_raw(1, 2, 0); // buffer 1: never sent
            d.publish_raw(1, 200, 0); // no such buffer
        }
        assert_eq!(nic.poll_transmit(), 0);
        assert_eq!(nic.tx_in_flight(), 1);
        device.borrow_mut().process_tx(usize::MAX);
        assert_eq!(nic.poll_transmit(), 1);
        // A repeated completion of the same buffer frees nothing twice.
        device.borrow_mut().publish_raw(1, 0, 0);
        assert_eq!(nic.poll_transmit(), 0);
        for i in 0..4 {
            send(&mut nic, &frame(64, i)).unwrap();
        }
        assert_eq!(send(&mut nic, &frame(64, 5)), Err(NicError::RingFull));
    }
}

#[test]
fn transmit_skips_the_notification_the_device_does_not_want() {
    for (mut nic, device) in both::<8, 8>() {
        {
            let mut d = device.borrow_mut();
            d.auto_complete_tx = false;
            d.suppress_notifications = true;
        }
        send(&mut nic, &frame(64, 0)).unwrap();
        assert_eq!(device.borrow().notifications[1], 1, "the used ring said nothing yet");
        // Processing publishes NO_NOTIFY: the device is busy with the queue.
        device.borrow_mut().process_tx(usize::MAX);
        send(&mut nic, &frame(64, 1)).unwrap();
        send(&mut nic, &frame(64, 2)).unwrap();
        assert_eq!(device.borrow().notifications[1], 1);
        // Once it clears the flag, the driver notifies again.
        device.borrow_mut().suppress_notifications = false;
        device.borrow_mut().process_tx(usize::MAX);
        send(&mut nic, &frame(64, 3)).unwrap();
        assert_eq!(device.borrow().notifications[1], 2);
    }
}

#[test]
fn deferred_frames_are_available_at_once_and_notified_once_at_the_flush() {
    for (mut nic, device) in both::<8, 8>() {
        device.borrow_mut().auto_complete_tx = false;
        let before = device.borrow().notifications[1];
        for i in 0..4 {
            nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, i))).unwrap();
        }
        assert_eq!(device.borrow().notifications[1], before, "no notification per frame");
        nic.flush_transmit();
        nic.flush_transmit();
        assert_eq!(device.borrow().notifications[1], before + 1, "one for the burst, none for an empty flush");
        // A device already processing the queue (NO_NOTIFY) takes deferred frames without one.
        device.borrow_mut().suppress_notifications = true;
        device.borrow_mut().process_tx(usize::MAX);
        nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, 4))).unwrap();
        nic.flush_transmit();
        assert_eq!(device.borrow().notifications[1], before + 1);
        device.borrow_mut().process_tx(usize::MAX);
        let tags: Vec<Vec<u8>> = device.borrow().sent.clone();
        assert_eq!(tags, (0..5).map(|i| frame(64, i)).collect::<Vec<_>>());
    }
}

/// Sends (the device taking every frame) until `transmit` fails: how many frames went
/// first, and the error. The status is read once per `StatusPacer::INTERVAL` frames.
fn frames_until_error<const TX: usize, const RX: usize>(nic: &mut Nic<TX, RX>, device: &Device) -> (u32, NicError) {
    let mut sent = 0;
    loop {
        match send(nic, &frame(64, sent)) {
            Ok(()) => sent += 1,
            Err(e) => return (sent, e),
        }
        assert!(sent < netdump_core::nic::StatusPacer::INTERVAL, "no error after {sent} frames");
        device.borrow_mut().process_tx(usize::MAX);
        nic.poll_transmit();
    }
}

#[test]
fn transmit_reports_link_down_and_a_vanished_or_broken_device() {
    for (mut nic, device) in both::<8, 8>() {
        device.borrow_mut().link_up = false;
        assert!(!nic.link_up());
        assert_eq!(
            frames_until_error(&mut nic, &device),
            (0, NicError::LinkDown),
            "the first frame after a reset checks"
        );
        device.borrow_mut().link_up = true;
        send(&mut nic, &frame(64, 0)).unwrap();
        device.borrow_mut().status |= DeviceStatus::DEVICE_NEEDS_RESET.bits();
        assert_eq!(frames_until_error(&mut nic, &device).1, NicError::DeviceGone);
        device.borrow_mut().status &= !DeviceStatus::DEVICE_NEEDS_RESET.bits();
        device.borrow_mut().gone = true;
        assert_eq!(frames_until_error(&mut nic, &device).1, NicError::DeviceGone);
    }
}

#[test]
fn a_full_queue_on_a_vanished_device_is_device_gone_not_ring_full() {
    for (mut nic, device) in both::<8, 8>() {
        while send(&mut nic, &frame(64, 1)).is_ok() {}
        assert_eq!(send(&mut nic, &frame(64, 1)), Err(NicError::RingFull));
        device.borrow_mut().gone = true;
        assert_eq!(send(&mut nic, &frame(64, 1)), Err(NicError::DeviceGone));
    }
}

#[test]
fn without_the_status_feature_the_link_is_assumed_up() {
    let device = legacy_device(QEMU_LEGACY - Features::STATUS);
    let mut nic = started::<8, 8>(&device);
    device.borrow_mut().link_up = false;
    assert!(nic.link_up());
    send(&mut nic, &frame(64, 0)).unwrap();
}

// ---- receive ----

#[test]
fn receive_lends_each_frame_and_makes_its_buffer_available_again() {
    for (mut nic, device) in both::<8, 4>() {
        assert_eq!(receive(&mut nic), (false, None));
        for size in [60, 61, 1000, 1514, 1518] {
            assert!(device.borrow_mut().receive(&frame(size, size as u32)));
            assert_eq!(receive(&mut nic), (true, Some(frame(size, size as u32))));
        }
        // All four buffers are still available to the device.
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(64, i)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        assert_eq!(device.borrow_mut().receive_all(&refs), 4);
    }
}

/// Every frame size from the Ethernet minimum to the MTU, through a 4-buffer ring that
/// wraps hundreds of times, and past the 16-bit indices.
#[test]
fn receive_ring_wraps_through_every_frame_size_and_the_16_bit_indices() {
    for (mut nic, device) in both::<8, 4>() {
        let mut count = 0u32;
        for round in 0..48 {
            for size in 60..=1514usize {
                let f = frame(size, round * 2000 + size as u32);
                assert!(device.borrow_mut().receive(&f), "no buffer for frame {count}");
                assert_eq!(receive(&mut nic), (true, Some(f)));
                count += 1;
            }
        }
        assert!(count > 65_536);
        assert_eq!(device.borrow().queues[0].used_idx, (count % 65_536) as u16);
    }
}

#[test]
fn receive_handles_used_entries_out_of_order() {
    for (mut nic, device) in both::<8, 8>() {
        device.borrow_mut().out_of_order = true;
        for round in 0..100u32 {
            let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(100 + i, round * 8 + i as u32)).collect();
            let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
            assert_eq!(device.borrow_mut().receive_all(&refs), 8);
            // Used entries arrive last-buffer-first; each names its own buffer.
            for f in frames.iter().rev() {
                assert_eq!(receive(&mut nic), (true, Some(f.clone())));
            }
            assert_eq!(receive(&mut nic), (false, None));
        }
    }
}

#[test]
fn receive_drops_runts_and_rearms_their_buffers() {
    for (mut nic, device) in both::<8, 2>() {
        for _ in 0..5 {
            // Shorter than an Ethernet header: dropped, reported as polled.
            assert!(device.borrow_mut().receive(&[0xAB; 13]));
            assert_eq!(receive(&mut nic), (true, None));
        }
        assert!(device.borrow_mut().receive(&frame(64, 1)));
        assert!(device.borrow_mut().receive(&frame(64, 2)));
        assert!(!device.borrow_mut().receive(&frame(64, 3)), "only two buffers");
        assert_eq!(receive(&mut nic), (true, Some(frame(64, 1))));
        assert_eq!(receive(&mut nic), (true, Some(frame(64, 2))));
    }
}

#[test]
fn receive_ignores_used_entries_that_name_no_posted_buffer() {
    for (mut nic, device) in both::<8, 2>() {
        device.borrow_mut().publish_raw(0, 3, 100); // odd: a frame descriptor
        device.borrow_mut().publish_raw(0, 200, 100); // no such buffer
        assert_eq!(receive(&mut nic), (true, None));
        assert_eq!(receive(&mut nic), (true, None));
        assert_eq!(receive(&mut nic), (false, None));
        // Nothing was re-armed twice: the device still has exactly two buffers.
        assert!(device.borrow_mut().receive(&frame(64, 1)));
        assert!(device.borrow_mut().receive(&frame(64, 2)));
        assert!(!device.borrow_mut().receive(&frame(64, 3)));
        assert_eq!(receive(&mut nic), (true, Some(frame(64, 1))));
        assert_eq!(receive(&mut nic), (true, Some(frame(64, 2))));
    }
}

#[test]
fn receive_drops_a_used_length_beyond_the_buffer() {
    for (mut nic, device) in both::<8, 2>() {
        let header_len = if nic.interface() == Interface::Modern { 12 } else { 10 };
        // A broken device claims 4000 bytes in buffer 0.
        device.borrow_mut().publish_raw(0, 0, (header_len + 4000) as u32);
        assert_eq!(receive(&mut nic), (true, None));
        assert!(device.borrow_mut().receive(&frame(64, 1)));
        assert_eq!(receive(&mut nic), (true, Some(frame(64, 1))));
    }
}
