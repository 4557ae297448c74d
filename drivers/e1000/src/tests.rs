//! Host tests of the driver against the fake device in `fake.rs`.

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use netdump_core::nic::{NicError, PolledNic};
use netdump_pci::fake::FakeConfigSpace;
use netdump_pci::{Command, DmaError, DmaRegion, PciAddress, PciDevice};

use crate::fake::{DMA_OFFSET, FakeDevice, FakeRegisters};
use crate::regs::{self, Rctl, RxErrors, Tctl};
use crate::{E1000, InitError, MIN_FRAME_LEN, dma_size};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const ADDRESS: PciAddress = PciAddress::new(0, 3, 0);

type Nic<const TX: usize, const RX: usize> = E1000<FakeRegisters, FakeConfigSpace, TX, RX>;

/// `len` bytes of leaked, page-aligned, zeroed host memory, which the device sees at the
/// host address plus [`DMA_OFFSET`] (physical ≠ virtual).
fn dma(len: usize) -> DmaRegion {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    // SAFETY: the block is leaked, so the region owns it for the rest of the run; the fake
    // device reaches it at the device addresses given here, undoing the offset.
    unsafe { DmaRegion::new(base, base.as_ptr() as u64 + DMA_OFFSET, len) }
}

/// An 82540EM function as SeaBIOS leaves it: I/O and memory decode on, no bus mastering.
fn pci() -> PciDevice<FakeConfigSpace> {
    let mut cfg = FakeConfigSpace::new();
    cfg.add_function(ADDRESS, 0x8086, 0x100E)
        .set_class(0x02, 0x00, 0x00)
        .set_memory_bar32(0, 0xFEB8_0000, 0x2_0000, false)
        .set_command(0x0003);
    PciDevice::new(cfg, ADDRESS)
}

/// A driver with legacy descriptors only (no checksum context), for the ring tests; the
/// checksum offload has tests of its own below.
fn new_nic<const TX: usize, const RX: usize>(device: &Rc<RefCell<FakeDevice>>) -> Nic<TX, RX> {
    let mut nic = Nic::<TX, RX>::new(FakeRegisters(device.clone()), pci(), dma(Nic::<TX, RX>::DMA_SIZE)).unwrap();
    nic.set_udp_checksum_offload(false);
    nic
}

fn started<const TX: usize, const RX: usize>() -> (Nic<TX, RX>, Rc<RefCell<FakeDevice>>) {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<TX, RX>(&device);
    nic.reset().unwrap();
    (nic, device)
}

/// A recognisable frame: broadcast destination, our source, then `tag` repeated.
fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    f[..6].copy_from_slice(&[0xFF; 6]);
    f[6..12].copy_from_slice(&MAC);
    f
}

fn send(nic: &mut impl PolledNic, bytes: &[u8]) -> Result<(), NicError> {
    nic.transmit(bytes.len(), &mut |buf| buf.copy_from_slice(bytes))
}

/// Receives one frame, returning `(polled, frame if delivered)`.
fn receive(nic: &mut impl PolledNic) -> (bool, Option<Vec<u8>>) {
    let mut got = None;
    let polled = nic.poll_receive(&mut |f| got = Some(f.to_vec())).unwrap();
    (polled, got)
}

#[test]
fn dma_size_of_default_rings() {
    assert_eq!(crate::DEFAULT_DMA_SIZE, 115_712);
    assert_eq!(Nic::<32, 32>::DMA_SIZE, dma_size(32, 32));
    assert_eq!(Nic::<8, 16>::DMA_SIZE, 24 * 16 + 8 * 1536 + 16 * 2048);
}

#[test]
fn new_rejects_too_small_dma_region() {
    let device = FakeDevice::new(MAC);
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci(), dma(Nic::<8, 8>::DMA_SIZE - 1));
    assert!(matches!(result, Err(InitError::Dma(DmaError::TooSmall { .. }))));
}

#[test]
fn new_reads_mac_from_eeprom() {
    let device = FakeDevice::new(MAC);
    // RAL0 disagrees (the OS set another address): the EEPROM wins.
    device.borrow_mut().set(regs::RAL0, 0x0403_0201);
    let nic = new_nic::<8, 8>(&device);
    assert_eq!(nic.mac_address(), MAC);
}

#[test]
fn new_falls_back_to_receive_address_without_eerd() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().eerd_works = false;
    let nic = new_nic::<8, 8>(&device);
    assert_eq!(nic.mac_address(), MAC);
}

#[test]
fn new_fails_without_any_mac_address() {
    let device = FakeDevice::new([0; 6]);
    device.borrow_mut().set(regs::RAH0, 0);
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci(), dma(Nic::<8, 8>::DMA_SIZE));
    assert!(matches!(result, Err(InitError::NoMacAddress)));
}

#[test]
fn new_fails_when_registers_read_all_ones() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().gone = true;
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci(), dma(Nic::<8, 8>::DMA_SIZE));
    assert!(matches!(result, Err(InitError::DeviceGone)));
}

#[test]
fn reset_programs_filters_rings_and_enables_dma() {
    let (mut nic, device) = started::<32, 16>();
    let d = device.borrow();
    assert_eq!(d.get(regs::RAL0), 0x1200_5452);
    assert_eq!(d.get(regs::RAH0), 0x5634 | regs::RAH_AV);
    assert!((0..regs::MTA_LEN).all(|i| d.get(regs::MTA + 4 * i) == 0));
    assert_eq!(d.get(regs::IMS), 0);
    assert_eq!(d.get(regs::TDLEN), 32 * 16);
    assert_eq!(d.get(regs::RDLEN), 16 * 16);
    assert_eq!((d.get(regs::TDH), d.get(regs::TDT)), (0, 0));
    assert_eq!((d.get(regs::RDH), d.get(regs::RDT)), (0, 15));
    let rctl = Rctl::from_bits_retain(d.get(regs::RCTL));
    assert_eq!(rctl, Rctl::EN | Rctl::BAM | Rctl::SECRC);
    let tctl = Tctl::from_bits_retain(d.get(regs::TCTL));
    assert!(tctl.contains(Tctl::EN | Tctl::PSP));
    assert!(d.get(regs::CTRL) & regs::Ctrl::SLU.bits() != 0);
    drop(d);
    let command = nic.pci().command();
    assert!(command.contains(Command::MEMORY_SPACE | Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
}

#[test]
fn reset_masks_interrupts_before_the_device_reset() {
    let (_nic, device) = started::<8, 8>();
    let writes = &device.borrow().writes;
    let imc = writes.iter().position(|&(r, v)| r == regs::IMC && v == u32::MAX).unwrap();
    let rst = writes.iter().position(|&(r, v)| r == regs::CTRL && v & regs::Ctrl::RST.bits() != 0).unwrap();
    assert!(imc < rst);
}

#[test]
fn reset_takes_over_a_dirty_device_that_ignores_ctrl_rst() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<8, 8>(&device);
    {
        // What an OS driver mid-transfer leaves behind, on a device model where CTRL.RST
        // restores nothing (QEMU's e1000).
        let mut d = device.borrow_mut();
        d.reset_clears_registers = false;
        d.auto_complete_tx = false;
        d.set(regs::IMS, 0x9D);
        d.set(regs::RCTL, (Rctl::EN | Rctl::UPE | Rctl::MPE | Rctl::LPE | Rctl::LBM).bits());
        d.set(regs::TCTL, Tctl::EN.bits());
        d.set(regs::TDH, 3);
        d.set(regs::TDT, 7);
        d.set(regs::RDH, 5);
        d.set(regs::RDT, 2);
        d.set(regs::RAL0 + 8, 0xDEAD_BEEF);
        d.set(regs::RAH0 + 8, 0xBEEF | regs::RAH_AV);
        d.set(regs::MTA + 4 * 17, 0xFFFF_FFFF);
        d.set(regs::CTRL, regs::Ctrl::VME.bits() | regs::Ctrl::LRST.bits());
    }
    nic.pci().disable(Command::BUS_MASTER | Command::MEMORY_SPACE);
    nic.reset().unwrap();
    {
        let d = device.borrow();
        assert_eq!(d.get(regs::IMS), 0);
        assert_eq!(Rctl::from_bits_retain(d.get(regs::RCTL)), Rctl::EN | Rctl::BAM | Rctl::SECRC);
        assert_eq!((d.get(regs::TDH), d.get(regs::TDT), d.get(regs::RDH), d.get(regs::RDT)), (0, 0, 0, 7));
        assert_eq!(d.get(regs::RAH0 + 8) & regs::RAH_AV, 0);
        assert_eq!(d.get(regs::MTA + 4 * 17), 0);
        assert_eq!(d.get(regs::CTRL) & (regs::Ctrl::VME | regs::Ctrl::LRST).bits(), 0);
    }
    assert!(nic.pci().command().contains(Command::MEMORY_SPACE | Command::BUS_MASTER));
    device.borrow_mut().auto_complete_tx = true;
    send(&mut nic, &frame(100, 1)).unwrap();
    assert_eq!(device.borrow().sent, [frame(100, 1)]);
}

#[test]
fn reset_times_out_when_ctrl_rst_never_clears() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<8, 8>(&device);
    device.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
}

#[test]
fn reset_reports_a_vanished_device() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<8, 8>(&device);
    device.borrow_mut().gone = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
}

#[test]
fn transmit_builds_the_frame_in_place() {
    let (mut nic, device) = started::<8, 8>();
    let mut offered = 0;
    nic.transmit(1514, &mut |buf| {
        offered = buf.len();
        buf.copy_from_slice(&frame(1514, 7));
    })
    .unwrap();
    assert_eq!(offered, 1514);
    assert_eq!(device.borrow().sent, [frame(1514, 7)]);
}

#[test]
fn short_frames_are_zero_padded_to_60_bytes() {
    let (mut nic, device) = started::<8, 8>();
    // Dirty the buffer with a long frame first; descriptor 0 is reused after 8 sends.
    for _ in 0..7 {
        send(&mut nic, &frame(200, 0xEE)).unwrap();
        nic.poll_transmit();
    }
    send(&mut nic, &frame(200, 0xEE)).unwrap();
    nic.poll_transmit();
    send(&mut nic, &frame(42, 0xAA)).unwrap();
    let sent = device.borrow().sent.last().unwrap().clone();
    assert_eq!(sent.len(), MIN_FRAME_LEN);
    assert_eq!(&sent[..42], &frame(42, 0xAA)[..]);
    assert!(sent[42..].iter().all(|&b| b == 0));
}

#[test]
fn oversize_and_undersize_frames_are_rejected_without_fill() {
    let (mut nic, device) = started::<8, 8>();
    let mut called = false;
    assert_eq!(nic.transmit(1515, &mut |_| called = true), Err(NicError::FrameTooLarge { len: 1515, max: 1514 }));
    assert_eq!(nic.transmit(13, &mut |_| called = true), Err(NicError::FrameTooShort { len: 13 }));
    assert!(!called);
    assert!(device.borrow().sent.is_empty());
}

#[test]
fn full_ring_gives_ring_full_until_completions_are_polled() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..7 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    let mut called = false;
    assert_eq!(nic.transmit(64, &mut |_| called = true), Err(NicError::RingFull));
    assert!(!called);
    // The device finishes everything, but nothing is free until poll_transmit says so.
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 7);
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::RingFull));
    assert_eq!(nic.poll_transmit(), 7);
    assert_eq!(nic.tx_in_flight(), 0);
    send(&mut nic, &frame(64, 8)).unwrap();
    device.borrow_mut().complete_tx(usize::MAX);
    let tags: Vec<u8> = device.borrow().sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 8]);
}

#[test]
fn poll_transmit_reclaims_only_completed_descriptors_in_order() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..5 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    assert_eq!(nic.poll_transmit(), 0);
    device.borrow_mut().complete_tx(2);
    assert_eq!(nic.poll_transmit(), 2);
    assert_eq!(nic.tx_in_flight(), 3);
    device.borrow_mut().complete_tx(usize::MAX);
    assert_eq!(nic.poll_transmit(), 3);
    assert_eq!(nic.poll_transmit(), 0);
}

#[test]
fn transmit_ring_wraps_many_times_in_order() {
    let (mut nic, device) = started::<8, 8>();
    for i in 0..1000u32 {
        let tag = (i % 251) as u8;
        if send(&mut nic, &frame(60 + (i as usize % 1400), tag)) == Err(NicError::RingFull) {
            panic!("ring full with auto-completion at frame {i}");
        }
        nic.poll_transmit();
    }
    let d = device.borrow();
    assert_eq!(d.sent.len(), 1000);
    assert!(d.sent.iter().enumerate().all(|(i, f)| f[20] == (i % 251) as u8 && f.len() == 60 + i % 1400));
    assert_eq!(d.get(regs::TDT), 1000 % 8);
    let tdt_values: Vec<u32> = d.writes.iter().filter(|w| w.0 == regs::TDT).map(|w| w.1).collect();
    assert!(tdt_values.iter().all(|&t| t < 8));
}

#[test]
fn back_pressure_and_recovery_across_wraps() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    let (mut sent, mut ring_full) = (0u32, 0);
    while sent < 100 {
        match send(&mut nic, &frame(64, sent as u8)) {
            Ok(()) => sent += 1,
            Err(NicError::RingFull) => {
                ring_full += 1;
                device.borrow_mut().complete_tx(3);
                nic.poll_transmit();
            }
            Err(e) => panic!("{e}"),
        }
    }
    device.borrow_mut().complete_tx(usize::MAX);
    assert!(ring_full > 0);
    let tags: Vec<u8> = device.borrow().sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, (0..100).map(|i| i as u8).collect::<Vec<_>>());
}

#[test]
fn transmit_reports_link_down() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().set(regs::STATUS, 0);
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::LinkDown));
}

#[test]
fn link_loss_mid_stream_is_reported_within_the_status_interval() {
    let (mut nic, device) = started::<8, 8>();
    send(&mut nic, &frame(64, 0)).unwrap();
    device.borrow_mut().set(regs::STATUS, 0);
    let mut sent = 0;
    let err = loop {
        match send(&mut nic, &frame(64, 1)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        nic.poll_transmit();
        assert!(sent < netdump_core::nic::StatusPacer::INTERVAL, "link loss not noticed after {sent} frames");
    };
    assert_eq!(err, NicError::LinkDown);
    assert_eq!(sent, netdump_core::nic::StatusPacer::INTERVAL - 1, "STATUS is read once per interval, not per frame");
}

#[test]
fn a_full_ring_on_a_vanished_device_is_device_gone_not_ring_full() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..7 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::RingFull));
    device.borrow_mut().gone = true;
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::DeviceGone));
}

#[test]
fn receive_lends_the_frame_and_rearms_its_descriptor() {
    let (mut nic, device) = started::<8, 8>();
    assert_eq!(receive(&mut nic), (false, None));
    assert!(device.borrow_mut().receive(&frame(98, 3)));
    assert_eq!(receive(&mut nic), (true, Some(frame(98, 3))));
    assert_eq!(device.borrow().get(regs::RDT), 0);
    assert_eq!(receive(&mut nic), (false, None));
}

#[test]
fn receive_ring_keeps_one_descriptor_back_and_recovers() {
    let (mut nic, device) = started::<8, 8>();
    for i in 0..7 {
        assert!(device.borrow_mut().receive(&frame(64, i)));
    }
    // RDH == RDT: the device has no buffer left.
    assert!(!device.borrow_mut().receive(&frame(64, 7)));
    assert_eq!(receive(&mut nic).1, Some(frame(64, 0)));
    assert!(device.borrow_mut().receive(&frame(64, 7)));
    for i in 1..8 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
    assert_eq!(receive(&mut nic), (false, None));
}

#[test]
fn receive_ring_wraps_many_times() {
    let (mut nic, device) = started::<8, 8>();
    for i in 0..500u32 {
        let f = frame(60 + (i as usize * 7) % 1454, i as u8);
        assert!(device.borrow_mut().receive(&f), "no buffer at frame {i}");
        assert_eq!(receive(&mut nic), (true, Some(f)));
    }
    let d = device.borrow();
    assert_eq!(d.get(regs::RDH), 500 % 8);
    assert_eq!(d.get(regs::RDT), (500 + 7) % 8);
}

#[test]
fn frames_with_errors_are_dropped_and_rearmed() {
    let (mut nic, device) = started::<8, 8>();
    assert!(device.borrow_mut().receive_with(&frame(64, 1), 2048, RxErrors::CE));
    assert!(device.borrow_mut().receive(&frame(64, 2)));
    assert_eq!(receive(&mut nic), (true, None));
    assert_eq!(receive(&mut nic), (true, Some(frame(64, 2))));
    assert_eq!(device.borrow().get(regs::RDT), 1);
}

#[test]
fn checksum_offload_errors_do_not_drop_frames() {
    let (mut nic, device) = started::<8, 8>();
    assert!(device.borrow_mut().receive_with(&frame(64, 1), 2048, RxErrors::TCPE | RxErrors::IPE));
    assert_eq!(receive(&mut nic), (true, Some(frame(64, 1))));
}

#[test]
fn frames_spanning_descriptors_are_dropped_whole() {
    let (mut nic, device) = started::<8, 8>();
    assert!(device.borrow_mut().receive_with(&frame(1500, 1), 512, RxErrors::empty()));
    assert!(device.borrow_mut().receive(&frame(64, 2)));
    for _ in 0..3 {
        assert_eq!(receive(&mut nic), (true, None));
    }
    assert_eq!(receive(&mut nic), (true, Some(frame(64, 2))));
}

#[test]
fn reset_with_frames_queued_starts_from_empty_rings() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..5 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    for i in 0..3 {
        device.borrow_mut().receive(&frame(64, 10 + i));
    }
    device.borrow_mut().reset_clears_registers = false;
    nic.reset().unwrap();
    assert_eq!(nic.tx_in_flight(), 0);
    // Stale receive completions are gone: the old descriptors were re-armed.
    assert_eq!(receive(&mut nic), (false, None));
    // The whole ring is available again, and new traffic flows.
    for i in 0..7 {
        send(&mut nic, &frame(64, 20 + i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::RingFull));
    assert!(device.borrow_mut().receive(&frame(64, 30)));
    assert_eq!(receive(&mut nic).1, Some(frame(64, 30)));
    // Only frames queued after the reset are sent once the device runs.
    device.borrow_mut().sent.clear();
    device.borrow_mut().complete_tx(usize::MAX);
    let tags: Vec<u8> = device.borrow().sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, [20, 21, 22, 23, 24, 25, 26]);
}

#[test]
fn reset_can_be_repeated() {
    let (mut nic, device) = started::<8, 8>();
    for round in 0..3 {
        nic.reset().unwrap();
        send(&mut nic, &frame(64, round)).unwrap();
        assert!(device.borrow_mut().receive(&frame(64, round)));
        assert_eq!(receive(&mut nic).1, Some(frame(64, round)));
    }
    assert_eq!(device.borrow().sent.len(), 3);
}

/// A UDP datagram from us to 10.0.2.2 as netdump-core builds it for a NIC that does (or
/// does not) compute checksums.
fn udp_frame(payload: &[u8], checksum: netdump_core::net::UdpChecksum) -> Vec<u8> {
    use netdump_core::net::{EthernetAddress, FRAME_OVERHEAD, Ipv4Address, UdpFlow, emit_udp_with};
    let flow = UdpFlow {
        src_mac: EthernetAddress(MAC),
        dst_mac: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
        src_ip: Ipv4Address::new(10, 0, 2, 15),
        dst_ip: Ipv4Address::new(10, 0, 2, 2),
        src_port: 6665,
        dst_port: 6666,
    };
    let mut f = vec![0u8; FRAME_OVERHEAD + payload.len()];
    emit_udp_with(&mut f, &flow, payload.len(), checksum, |p| p.copy_from_slice(payload));
    f
}

#[test]
fn reset_gives_the_device_a_udp_checksum_context_once() {
    use netdump_core::nic::PolledNic;
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<8, 8>(&device);
    nic.set_udp_checksum_offload(true);
    assert!(!nic.udp_checksum_offload(), "not before the reset that programs it");
    nic.reset().unwrap();
    assert!(nic.udp_checksum_offload());
    {
        let d = device.borrow();
        assert_eq!((d.get(regs::TDH), d.get(regs::TDT)), (1, 1), "one context descriptor queued and done");
        assert_eq!(d.checksum_context, Some((34, 40, 0)), "UDP header at 34, checksum at 40, to the end");
        assert!(d.sent.is_empty(), "a context descriptor sends nothing");
    }
    assert_eq!(nic.tx_in_flight(), 0, "reset waited for the device to take the context");
    // A device slow to fetch it: the context is reclaimed later, like a frame.
    device.borrow_mut().auto_complete_tx = false;
    nic.reset().unwrap();
    assert_eq!(nic.tx_in_flight(), 1);
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 1);
    assert_eq!(nic.poll_transmit(), 1);
    device.borrow_mut().auto_complete_tx = true;
    // A second reset (the takeover at panic time) programs it again.
    device.borrow_mut().checksum_context = None;
    nic.reset().unwrap();
    assert_eq!(device.borrow().checksum_context, Some((34, 40, 0)));
    // Turned off, the next reset leaves it out and the core computes checksums.
    nic.set_udp_checksum_offload(false);
    device.borrow_mut().checksum_context = None;
    nic.reset().unwrap();
    assert!(!nic.udp_checksum_offload());
    assert_eq!(device.borrow().checksum_context, None);
    assert_eq!(device.borrow().get(regs::TDT), 0);
}

#[test]
fn udp_frames_leave_with_the_checksum_software_would_have_computed() {
    use netdump_core::net::UdpChecksum;
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<8, 8>(&device);
    nic.set_udp_checksum_offload(true);
    nic.reset().unwrap();
    // Every payload length, odd and even, across several ring wraps; and an ARP-sized
    // non-IP frame in between, which must go out untouched.
    const LENGTHS: [usize; 8] = [0, 1, 2, 3, 17, 100, 1001, 1458];
    let payload = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 + len) as u8).collect() };
    for len in LENGTHS {
        send(&mut nic, &udp_frame(&payload(len), UdpChecksum::Device)).unwrap();
        send(&mut nic, &frame(60, 0x42)).unwrap();
        nic.poll_transmit();
    }
    let d = device.borrow();
    assert_eq!(d.checksummed, 8, "the UDP frames, and only those, were checksummed by the device");
    let mut sent = d.sent.iter();
    for len in LENGTHS {
        let mut expected = udp_frame(&payload(len), UdpChecksum::Software);
        expected.resize(expected.len().max(MIN_FRAME_LEN), 0);
        assert_eq!(sent.next().unwrap(), &expected, "{len}-byte payload");
        assert_eq!(sent.next().unwrap(), &frame(60, 0x42));
    }
}

#[test]
fn deferred_frames_leave_with_one_tdt_write_at_the_flush() {
    let (mut nic, device) = started::<8, 8>();
    let writes_before = device.borrow().writes.iter().filter(|w| w.0 == regs::TDT).count();
    for i in 0..5 {
        nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, i))).unwrap();
    }
    assert!(device.borrow().sent.is_empty(), "nothing leaves before the doorbell");
    nic.flush_transmit();
    nic.flush_transmit();
    let d = device.borrow();
    let tdt: Vec<u32> = d.writes.iter().filter(|w| w.0 == regs::TDT).skip(writes_before).map(|w| w.1).collect();
    assert_eq!(tdt, [5], "one TDT write for the burst, none for an empty flush");
    let tags: Vec<u8> = d.sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
}

#[test]
fn a_transmit_after_deferred_frames_hands_over_all_of_them() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..7 {
        nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, i))).unwrap();
    }
    assert_eq!(nic.transmit_deferred(64, &mut |_| {}), Err(NicError::RingFull), "unflushed frames fill the ring");
    nic.flush_transmit();
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 7);
    assert_eq!(nic.poll_transmit(), 7);
    nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, 7))).unwrap();
    send(&mut nic, &frame(64, 8)).unwrap();
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 2);
    let tags: Vec<u8> = device.borrow().sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    // A reset forgets what was queued and not flushed.
    nic.transmit_deferred(64, &mut |buf| buf.copy_from_slice(&frame(64, 9))).unwrap();
    nic.reset().unwrap();
    nic.flush_transmit();
    assert_eq!(device.borrow().get(regs::TDT), 0);
}
