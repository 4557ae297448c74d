//! Host tests of the driver against the fake vmxnet3 in `fake.rs`. The DMA memory the
//! driver gets is seen by the device at low physical addresses unlike the host addresses
//! behind it, and the fake panics on any device access outside the registered windows.

use std::ptr::NonNull;
use std::vec::Vec;

use netdump_core::nic::{NicError, PolledNic, StatusPacer};
use netdump_pci::{Command, DmaError, DmaRegion, PciDevice, RegisterBlock, capability_id};

use crate::fake::{ADDRESS, Bar, Device, FakeDevice, FakeRegisters, SharedConfig, config_space};
use crate::layout::{DmaLayout, rcd, value};
use crate::{DEFAULT_DMA_SIZE, InitError, MIN_FRAME_LEN, MTU, RX_BUFFER_SIZE, Vmxnet3, dma_size, regs};

const MAC: [u8; 6] = [0x00, 0x50, 0x56, 0x12, 0x34, 0x56];
/// Where the driver's DMA memory is for the device.
const DMA_PHYS: u64 = 0x0100_0000;
/// Where the OS driver's memory is, in the takeover tests.
const OS_DMA_PHYS: u64 = 0x0800_0000;

type Nic<const TX: usize = 32, const RX: usize = 32> = Vmxnet3<FakeRegisters, SharedConfig, TX, RX>;

/// `len` bytes of leaked, page-aligned, zeroed host memory that `device` sees at `phys`.
fn dma(device: &Device, len: usize, phys: u64) -> DmaRegion {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    device.borrow_mut().map_dma(phys, len, base.as_ptr());
    // SAFETY: the block is leaked, so the region owns it for the rest of the run; the fake
    // device reaches device address `phys + i` at host address `base + i`.
    unsafe { DmaRegion::new(base, phys, len) }
}

fn registers(device: &Device) -> (FakeRegisters, FakeRegisters) {
    (FakeRegisters { device: device.clone(), bar: Bar::Pt }, FakeRegisters { device: device.clone(), bar: Bar::Vd })
}

fn new_nic_at<const TX: usize, const RX: usize>(
    device: &Device,
    config: &SharedConfig,
    phys: u64,
) -> Result<Nic<TX, RX>, InitError> {
    let (pt, vd) = registers(device);
    Nic::<TX, RX>::new(pt, vd, PciDevice::new(config.clone(), ADDRESS), dma(device, Nic::<TX, RX>::DMA_SIZE, phys))
}

fn new_nic<const TX: usize, const RX: usize>(device: &Device, config: &SharedConfig) -> Nic<TX, RX> {
    new_nic_at(device, config, DMA_PHYS).unwrap()
}

fn started<const TX: usize, const RX: usize>() -> (Nic<TX, RX>, Device, SharedConfig) {
    let device = FakeDevice::new(MAC);
    let config = config_space();
    let mut nic = new_nic::<TX, RX>(&device, &config);
    nic.reset().unwrap();
    (nic, device, config)
}

/// A recognisable frame: broadcast destination, our source, then bytes from `tag`.
fn frame(len: usize, tag: u32) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (tag as usize).wrapping_add(i * 7) as u8).collect();
    f[..6].copy_from_slice(&[0xFF; 6]);
    f[6..12].copy_from_slice(&MAC);
    f
}

/// A frame to `dest`.
fn frame_to(dest: [u8; 6], len: usize, tag: u32) -> Vec<u8> {
    let mut f = frame(len, tag);
    f[..6].copy_from_slice(&dest);
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

/// The writes to `(bar, offset)` with `value`, by position in the write log.
fn position(device: &Device, bar: Bar, offset: usize, value: u32) -> usize {
    let d = device.borrow();
    d.writes
        .iter()
        .rposition(|&w| w == (bar, offset, value))
        .unwrap_or_else(|| panic!("no write of {value:#x} to {bar:?} {offset:#x}"))
}

/// Turns MSI and MSI-X on, as an OS driver using them leaves the function.
fn enable_message_interrupts(config: &SharedConfig) {
    let mut pci = PciDevice::new(config.clone(), ADDRESS);
    for (id, bit) in [(capability_id::MSI, 1u32 << 16), (capability_id::MSI_X, 1 << 31)] {
        let cap = pci.find_capability(id).unwrap();
        let header = pci.read_u32(cap.offset);
        pci.write_u32(cap.offset, header | bit);
    }
}

fn message_interrupts_enabled(config: &SharedConfig) -> [bool; 2] {
    let mut pci = PciDevice::new(config.clone(), ADDRESS);
    let msi = pci.find_capability(capability_id::MSI).unwrap();
    let msi_control = pci.capability_u16(msi, 2).unwrap();
    [msi_control & 1 != 0, pci.msi_x_enabled()]
}

// --- Construction ---------------------------------------------------------------------

#[test]
fn dma_size_and_layout() {
    assert_eq!(DEFAULT_DMA_SIZE, 107_008);
    assert_eq!(Nic::<32, 32>::DMA_SIZE, dma_size(32, 32));
    let l = DmaLayout::new(64, 128);
    for ring in [l.tx_ring, l.tx_comp, l.tx_data, l.rx_ring0, l.rx_ring1, l.rx_comp] {
        assert_eq!(ring % 512, 0);
    }
    assert_eq!(l.queue_desc % 128, 0);
    assert_eq!(l.rx_comp + (128 + 32) * 16, l.tx_buffers);
    assert_eq!(l.size, l.rx_buffers + 128 * RX_BUFFER_SIZE);
    assert_eq!(Nic::<64, 128>::DMA_SIZE, l.size);
}

#[test]
fn new_rejects_a_region_too_small_or_misaligned() {
    let device = FakeDevice::new(MAC);
    let config = config_space();
    let (pt, vd) = registers(&device);
    let small = dma(&device, Nic::<32, 32>::DMA_SIZE - 1, DMA_PHYS);
    let result = Nic::<32, 32>::new(pt, vd, PciDevice::new(config.clone(), ADDRESS), small);
    assert!(matches!(result, Err(InitError::Dma(DmaError::TooSmall { .. }))));
    // The right size, but starting 256 bytes past a 512-byte boundary.
    let (pt, vd) = registers(&device);
    let mut region = dma(&device, Nic::<32, 32>::DMA_SIZE + 256, 0x0200_0000);
    region.take(256, 1).unwrap();
    let result = Nic::<32, 32>::new(pt, vd, PciDevice::new(config, ADDRESS), region);
    assert!(matches!(result, Err(InitError::Dma(DmaError::TooSmall { .. }))));
}

#[test]
fn new_prefers_the_permanent_address_to_one_the_os_set() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().mac = [0x02, 1, 2, 3, 4, 5];
    let nic = new_nic::<32, 32>(&device, &config_space());
    assert_eq!(nic.mac_address(), MAC);
}

#[test]
fn new_falls_back_to_macl_mach() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().perm_mac_command = false;
    let nic = new_nic::<32, 32>(&device, &config_space());
    assert_eq!(nic.mac_address(), MAC);
}

#[test]
fn new_fails_without_a_unicast_address() {
    let device = FakeDevice::new([0x01, 0, 0, 0, 0, 0]);
    let result = new_nic_at::<32, 32>(&device, &config_space(), DMA_PHYS);
    assert!(matches!(result, Err(InitError::NoMacAddress)));
}

#[test]
fn new_fails_when_registers_read_all_ones() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().gone = true;
    let result = new_nic_at::<32, 32>(&device, &config_space(), DMA_PHYS);
    assert!(matches!(result, Err(InitError::DeviceGone)));
}

#[test]
fn new_refuses_a_device_without_revision_1() {
    let device = FakeDevice::new(MAC);
    device.borrow_mut().vrrs = 0b1100;
    let result = new_nic_at::<32, 32>(&device, &config_space(), DMA_PHYS);
    assert_eq!(result.err(), Some(InitError::UnsupportedRevision { vrrs: 0b1100, uvrs: 1 }));
}

#[test]
fn new_does_not_start_the_device() {
    let device = FakeDevice::new(MAC);
    let _nic = new_nic::<32, 32>(&device, &config_space());
    let d = device.borrow();
    assert!(!d.active);
    assert!(d.writes.iter().all(|&(bar, offset, _)| bar == Bar::Vd && offset == regs::CMD));
}

// --- Reset ------------------------------------------------------------------------------

#[test]
fn reset_activates_the_device_with_driver_shared_in_our_memory() {
    let (mut nic, device, _config) = started::<32, 64>();
    let l = DmaLayout::new(32, 64);
    let d = device.borrow();
    assert!(d.active);
    assert_eq!((d.vrrs_selected, d.uvrs_selected), (Some(1), Some(1)));
    let c = d.config.clone().unwrap();
    let at = |offset: usize| DMA_PHYS + offset as u64;
    assert_eq!(c.shared_pa, at(l.shared));
    assert_eq!((c.queue_desc_pa, c.queue_desc_len), (at(l.queue_desc), 512));
    assert_eq!(c.tx_ring, (at(l.tx_ring), 32));
    assert_eq!(c.tx_comp, (at(l.tx_comp), 32));
    assert_eq!(c.tx_data, (at(l.tx_data), 32));
    assert_eq!(c.rx_ring0, (at(l.rx_ring0), 64));
    assert_eq!(c.rx_ring1, (at(l.rx_ring1), 32));
    assert_eq!(c.rx_comp, (at(l.rx_comp), 96));
    assert_eq!((c.num_tx_queues, c.num_rx_queues), (1, 1));
    assert_eq!(c.mtu, MTU as u32);
    assert_eq!(c.max_rx_sg, 1);
    assert_eq!(c.features, 0, "no UPT1 offloads");
    assert_eq!((c.rev_supported, c.upt_supported), (1, 1));
    assert_eq!(c.gos, value::GOS_BITS | value::GOS_TYPE_LINUX << 2);
    assert_eq!(c.rx_mode, value::RXM_UCAST | value::RXM_BCAST);
    assert!(c.vlan0, "untagged frames pass the VLAN filter");
    assert_eq!((c.num_intrs, c.event_intr, c.tx_intr, c.rx_intr), (1, 0, 0, 0));
    // The device's own view of the rings: slot 0 of lap 1.
    assert_eq!((d.tx.next, d.tx.generation, d.rx0.next, d.rx0.generation), (0, 1, 0, 1));
    drop(d);
    assert_eq!(nic.tx_in_flight(), 0);
    assert!(nic.link_up());
}

#[test]
fn reset_makes_interrupts_impossible() {
    let device = FakeDevice::new(MAC);
    let config = config_space();
    enable_message_interrupts(&config);
    let mut nic = new_nic::<32, 32>(&device, &config);
    nic.reset().unwrap();
    assert_eq!(message_interrupts_enabled(&config), [false, false]);
    let command = nic.pci().command();
    assert!(command.contains(Command::MEMORY_SPACE | Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
    {
        let d = device.borrow();
        assert!(d.masked.iter().all(|&m| m), "every IMR masked");
        let c = d.config.as_ref().unwrap();
        assert_eq!((c.intr_ctrl, c.auto_mask), (value::IC_DISABLE_ALL, 1));
    }
    // Traffic both ways raises nothing.
    for i in 0..100 {
        send(&mut nic, &frame(100, i)).unwrap();
        nic.poll_transmit();
        assert!(device.borrow_mut().receive(&frame(100, i)));
        assert_eq!(receive(&mut nic).1, Some(frame(100, i)));
    }
    assert_eq!(device.borrow().interrupts, 0);
}

#[test]
fn reset_quiesces_resets_then_activates_in_order() {
    let (_nic, device, _config) = started::<32, 32>();
    let mask_last = position(&device, Bar::Pt, regs::IMR, 1);
    let d = device.borrow();
    let first = |bar: Bar, offset: usize, value: Option<u32>| {
        d.writes
            .iter()
            .position(|&(b, o, v)| b == bar && o == offset && value.is_none_or(|value| v == value))
            .unwrap_or_else(|| panic!("no write to {bar:?} {offset:#x}"))
    };
    let imr = first(Bar::Pt, regs::IMR, Some(1));
    let quiesce = first(Bar::Vd, regs::CMD, Some(regs::cmd::QUIESCE_DEV));
    let reset = first(Bar::Vd, regs::CMD, Some(regs::cmd::RESET_DEV));
    let vrrs = first(Bar::Vd, regs::VRRS, Some(1));
    let dsal = first(Bar::Vd, regs::DSAL, None);
    let dsah = first(Bar::Vd, regs::DSAH, None);
    let activate = first(Bar::Vd, regs::CMD, Some(regs::cmd::ACTIVATE_DEV));
    let rxprod = first(Bar::Pt, regs::RXPROD, None);
    let mach = first(Bar::Vd, regs::MACH, None);
    assert!(imr < quiesce && quiesce < reset && reset < vrrs && vrrs < dsal);
    assert!(dsal < dsah && dsah < activate && activate < rxprod && activate < mach);
    // The masks are written again once the device is active (QEMU drops BAR0 writes
    // before): the last IMR write comes after the activation.
    assert!(mask_last > activate);
    assert_eq!(d.writes[rxprod].2, 31, "ring 0's fill index: all descriptors but one armed");
}

#[test]
fn reset_times_out_when_the_reset_never_completes() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<32, 32>(&device, &config_space());
    device.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
    assert!(!device.borrow().active);
}

#[test]
fn reset_reports_a_vanished_device() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<32, 32>(&device, &config_space());
    device.borrow_mut().gone = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
}

#[test]
fn reset_reports_a_refused_activation() {
    let device = FakeDevice::new(MAC);
    let mut nic = new_nic::<32, 32>(&device, &config_space());
    device.borrow_mut().refuse_activation = true;
    assert_eq!(nic.reset(), Err(NicError::DeviceGone));
    // DriverShared's address is withdrawn, as Linux does.
    assert_eq!(device.borrow().drv_shmem, 0);
    device.borrow_mut().refuse_activation = false;
    nic.reset().unwrap();
    assert!(device.borrow().active);
}

#[test]
fn reset_restores_the_station_address_after_activation() {
    let device = FakeDevice::new(MAC);
    let config = config_space();
    device.borrow_mut().perm_mac = [0x00, 0x50, 0x56, 0xAA, 0xBB, 0xCC];
    // The driver was built while the OS's address was current and the device cannot
    // report its permanent one: it keeps the OS's, and the device must use it too.
    device.borrow_mut().perm_mac_command = false;
    let mut nic = new_nic::<32, 32>(&device, &config);
    assert_eq!(nic.mac_address(), MAC);
    nic.reset().unwrap();
    assert_eq!(device.borrow().mac, MAC);
    assert!(device.borrow_mut().receive(&frame_to(MAC, 80, 1)));
    assert_eq!(receive(&mut nic).1, Some(frame_to(MAC, 80, 1)));
    assert!(!device.borrow_mut().receive(&frame_to([0x00, 0x50, 0x56, 0xAA, 0xBB, 0xCC], 80, 2)));
}

/// The OS driver (another instance of this driver, on its own memory) left the device
/// activated with its rings, frames queued and unsent, frames received and unread,
/// interrupts unmasked, MSI and MSI-X on, a promiscuous filter, another station address
/// and bus mastering off.
#[test]
fn takeover_of_a_device_left_active_with_other_rings() {
    let device = FakeDevice::new(MAC);
    let config = config_space();
    let mut os = new_nic_at::<64, 64>(&device, &config, OS_DMA_PHYS).unwrap();
    os.reset().unwrap();
    device.borrow_mut().auto_tx = false;
    for i in 0..10 {
        send(&mut os, &frame(200, 100 + i)).unwrap();
    }
    for i in 0..5 {
        assert!(device.borrow_mut().receive(&frame(90, 200 + i)));
    }
    let os_shared = device.borrow().config.as_ref().unwrap().shared_pa;
    assert_eq!(os_shared, OS_DMA_PHYS);
    {
        let (mut pt, mut vd) = registers(&device);
        pt.write_u32(regs::IMR, 0);
        pt.write_u32(regs::IMR + 8, 0);
        vd.write_u32(regs::MACL, 0x0403_0202);
        vd.write_u32(regs::MACH, 0x0605);
        // Promiscuous, through the OS's own DriverShared.
        let host = device.borrow().config.as_ref().unwrap().shared_pa;
        device.borrow().dma_write(host + crate::layout::shared::RX_MODE as u64, &value::RXM_PROMISC.to_le_bytes());
        vd.write_u32(regs::CMD, regs::cmd::UPDATE_RX_MODE);
    }
    enable_message_interrupts(&config);
    os.pci().disable(Command::BUS_MASTER);
    assert!(!device.borrow().masked[0]);
    // A snapshot of the OS's memory: the device must never touch it again.
    let os_bytes = |device: &Device| {
        let mut bytes = vec![0; Nic::<64, 64>::DMA_SIZE];
        device.borrow().dma_read(OS_DMA_PHYS, &mut bytes);
        bytes
    };
    let before = os_bytes(&device);

    let mut nic = new_nic::<32, 32>(&device, &config);
    nic.reset().unwrap();
    device.borrow_mut().auto_tx = true;
    {
        let d = device.borrow();
        let c = d.config.as_ref().unwrap();
        assert_eq!(c.shared_pa, DMA_PHYS);
        assert!(c.tx_ring.0 >= DMA_PHYS && c.rx_ring0.0 >= DMA_PHYS && c.rx_comp.0 < DMA_PHYS + 0x10_0000);
        assert_eq!(c.rx_mode, value::RXM_UCAST | value::RXM_BCAST);
        assert!(d.masked.iter().all(|&m| m));
        assert_eq!(d.mac, MAC);
        assert!(d.sent.is_empty(), "the OS's queued frames were never sent");
    }
    assert_eq!(message_interrupts_enabled(&config), [false, false]);
    assert!(nic.pci().command().contains(Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
    // Nothing the OS queued or received shows up; our traffic flows both ways.
    assert_eq!(receive(&mut nic), (false, None));
    assert_eq!(nic.poll_transmit(), 0);
    for i in 0..200 {
        send(&mut nic, &frame(60 + i as usize, i)).unwrap();
        assert_eq!(nic.poll_transmit(), 1);
        assert!(device.borrow_mut().receive(&frame(70, i)));
        assert_eq!(receive(&mut nic).1, Some(frame(70, i)));
    }
    // Unicast to another address is filtered out again (the OS left it promiscuous).
    assert!(!device.borrow_mut().receive(&frame_to([0x02, 0, 0, 0, 0, 9], 70, 0)));
    let d = device.borrow();
    assert_eq!(d.sent.len(), 200);
    assert!(d.sent.iter().enumerate().all(|(i, f)| *f == frame(60 + i, i as u32)));
    assert_eq!(d.interrupts, 0);
    drop(d);
    assert!(os_bytes(&device) == before, "the device wrote to the OS's memory after the takeover");
}

#[test]
fn reset_with_frames_queued_starts_from_empty_rings() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
    for i in 0..5 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    for i in 0..3 {
        assert!(device.borrow_mut().receive(&frame(64, 10 + i)));
    }
    nic.reset().unwrap();
    assert_eq!(nic.tx_in_flight(), 0);
    assert_eq!(receive(&mut nic), (false, None));
    for i in 0..31 {
        send(&mut nic, &frame(64, 20 + i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::RingFull));
    device.borrow_mut().complete_tx(usize::MAX);
    let sent: Vec<Vec<u8>> = device.borrow().sent.clone();
    assert_eq!(sent, (0..31).map(|i| frame(64, 20 + i)).collect::<Vec<_>>());
    assert_eq!(nic.poll_transmit(), 31);
}

#[test]
fn reset_can_be_repeated() {
    let (mut nic, device, _config) = started::<32, 32>();
    for round in 0..5 {
        nic.reset().unwrap();
        send(&mut nic, &frame(64, round)).unwrap();
        assert_eq!(nic.poll_transmit(), 1);
        assert!(device.borrow_mut().receive(&frame(64, round)));
        assert_eq!(receive(&mut nic).1, Some(frame(64, round)));
    }
    assert_eq!(device.borrow().sent.len(), 5);
    assert_eq!(device.borrow().activations, 6);
}

// --- Transmit -------------------------------------------------------------------------

#[test]
fn transmit_builds_the_frame_in_place() {
    let (mut nic, device, _config) = started::<32, 32>();
    let mut offered = 0;
    nic.transmit(1514, &mut |buf| {
        offered = buf.len();
        buf.copy_from_slice(&frame(1514, 7));
    })
    .unwrap();
    assert_eq!(offered, 1514);
    assert_eq!(device.borrow().sent, [frame(1514, 7)]);
    assert_eq!(nic.tx_in_flight(), 1);
    assert_eq!(nic.poll_transmit(), 1);
    assert_eq!(nic.tx_in_flight(), 0);
}

#[test]
fn short_frames_are_zero_padded_to_60_bytes() {
    let (mut nic, device, _config) = started::<32, 32>();
    // Dirty every buffer with long frames first.
    for _ in 0..32 {
        send(&mut nic, &frame(300, 0xEE)).unwrap();
        nic.poll_transmit();
    }
    send(&mut nic, &frame(42, 0xAA)).unwrap();
    send(&mut nic, &frame(14, 0xAB)).unwrap();
    let d = device.borrow();
    let sent = &d.sent[d.sent.len() - 2..];
    assert_eq!(sent[0].len(), MIN_FRAME_LEN);
    assert_eq!(&sent[0][..42], &frame(42, 0xAA)[..]);
    assert!(sent[0][42..].iter().all(|&b| b == 0));
    assert_eq!(&sent[1][..14], &frame(14, 0xAB)[..]);
    assert!(sent[1][14..].iter().all(|&b| b == 0) && sent[1].len() == MIN_FRAME_LEN);
}

#[test]
fn frame_lengths_are_checked_without_calling_fill() {
    let (mut nic, device, _config) = started::<32, 32>();
    let mut called = false;
    assert_eq!(nic.transmit(1515, &mut |_| called = true), Err(NicError::FrameTooLarge { len: 1515, max: 1514 }));
    assert_eq!(nic.transmit(13, &mut |_| called = true), Err(NicError::FrameTooShort { len: 13 }));
    assert!(!called);
    assert!(device.borrow().sent.is_empty());
}

#[test]
fn transmit_ring_wraps_and_generations_flip() {
    let (mut nic, device, _config) = started::<32, 32>();
    for i in 0..1000u32 {
        send(&mut nic, &frame(60 + (i as usize * 13) % 1455, i)).unwrap();
        assert_eq!(nic.poll_transmit(), 1);
    }
    let d = device.borrow();
    assert_eq!(d.sent.len(), 1000);
    assert!(d.sent.iter().enumerate().all(|(i, f)| *f == frame(60 + (i * 13) % 1455, i as u32)));
    // 1000 descriptors over a 32-entry ring: 31 full laps, the generation flipped each time.
    assert_eq!((d.tx.laps, d.tx.next, d.tx.generation), (31, 1000 % 32, 1 ^ (31 % 2)));
    assert_eq!((d.tx_comp.laps, d.tx_comp.next), (31, 1000 % 32));
    let txprod: Vec<u32> = d.writes.iter().filter(|w| (w.0, w.1) == (Bar::Pt, regs::TXPROD)).map(|w| w.2).collect();
    assert_eq!(txprod.len(), 1000);
    assert!(txprod.iter().enumerate().all(|(i, &p)| p == (i as u32 + 1) % 32));
}

#[test]
fn a_full_ring_gives_ring_full_until_completions_are_reclaimed() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
    for i in 0..31 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    let mut called = false;
    assert_eq!(nic.transmit(64, &mut |_| called = true), Err(NicError::RingFull));
    assert!(!called);
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 31);
    // Sent, but nothing is free until poll_transmit reads the completions.
    assert_eq!(send(&mut nic, &frame(64, 99)), Err(NicError::RingFull));
    assert_eq!(nic.poll_transmit(), 31);
    assert_eq!(nic.tx_in_flight(), 0);
    send(&mut nic, &frame(64, 31)).unwrap();
    device.borrow_mut().complete_tx(usize::MAX);
    let d = device.borrow();
    assert_eq!(d.sent, (0..32).map(|i| frame(64, i)).collect::<Vec<_>>());
}

#[test]
fn back_pressure_and_recovery_across_many_wraps() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
    let (mut sent, mut ring_full) = (0u32, 0);
    while sent < 500 {
        match send(&mut nic, &frame(64, sent)) {
            Ok(()) => sent += 1,
            Err(NicError::RingFull) => {
                ring_full += 1;
                assert!(ring_full < 1000, "no progress after {sent} frames");
                device.borrow_mut().complete_tx(5);
                nic.poll_transmit();
            }
            Err(e) => panic!("{e}"),
        }
    }
    device.borrow_mut().complete_tx(usize::MAX);
    assert!(ring_full > 10);
    assert_eq!(device.borrow().sent, (0..500).map(|i| frame(64, i)).collect::<Vec<_>>());
}

#[test]
fn poll_transmit_reclaims_only_completed_frames() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
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
fn a_completion_covers_every_earlier_descriptor_and_bogus_ones_are_ignored() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
    for i in 0..6 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    {
        let mut d = device.borrow_mut();
        // Outside the in-flight window, and past the ring: both ignored.
        d.write_tx_completion(20);
        d.write_tx_completion(4095);
        // Descriptor 3's completion hands back 0..=3.
        d.write_tx_completion(3);
    }
    assert_eq!(nic.poll_transmit(), 4);
    assert_eq!(nic.tx_in_flight(), 2);
    // A repeat of an already reclaimed index frees nothing.
    device.borrow_mut().write_tx_completion(3);
    assert_eq!(nic.poll_transmit(), 0);
    device.borrow_mut().write_tx_completion(5);
    assert_eq!(nic.poll_transmit(), 2);
}

#[test]
fn transmit_reports_link_down_and_a_vanished_device() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().link_up = false;
    assert!(!nic.link_up());
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::LinkDown));
    device.borrow_mut().link_up = true;
    nic.reset().unwrap();
    send(&mut nic, &frame(64, 0)).unwrap();
    // Link lost mid-stream: noticed within the status interval.
    device.borrow_mut().link_up = false;
    let mut sent = 0;
    let err = loop {
        match send(&mut nic, &frame(64, 1)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        nic.poll_transmit();
    };
    assert_eq!((err, sent), (NicError::LinkDown, StatusPacer::INTERVAL - 1));
}

#[test]
fn a_full_ring_on_a_vanished_device_is_device_gone() {
    let (mut nic, device, _config) = started::<32, 32>();
    device.borrow_mut().auto_tx = false;
    for i in 0..31 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::RingFull));
    device.borrow_mut().gone = true;
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::DeviceGone));
}

// --- Receive --------------------------------------------------------------------------

#[test]
fn receive_lends_every_frame_size_exactly() {
    let (mut nic, device, _config) = started::<32, 32>();
    assert_eq!(receive(&mut nic), (false, None));
    for len in 60..=1514 {
        let f = frame(len, len as u32);
        assert!(device.borrow_mut().receive(&f), "{len}");
        assert_eq!(receive(&mut nic), (true, Some(f)), "{len}");
    }
    assert_eq!(receive(&mut nic), (false, None));
    // The device pads what is shorter to 60 bytes, as QEMU does.
    assert!(device.borrow_mut().receive(&frame(42, 1)));
    let mut padded = frame(42, 1);
    padded.resize(60, 0);
    assert_eq!(receive(&mut nic).1, Some(padded));
}

#[test]
fn receive_ring_wraps_and_generations_flip() {
    let (mut nic, device, _config) = started::<32, 32>();
    for i in 0..1000u32 {
        let f = frame(60 + (i as usize * 7) % 1455, i);
        assert!(device.borrow_mut().receive(&f), "no buffer at frame {i}");
        assert_eq!(receive(&mut nic), (true, Some(f)));
    }
    let d = device.borrow();
    assert_eq!((d.rx0.laps, d.rx0.next), (31, 1000 % 32));
    // The completion ring has 32 + 32 entries.
    assert_eq!((d.rx_comp.laps, d.rx_comp.next), (15, 1000 % 64));
}

#[test]
fn the_device_runs_out_of_buffers_until_frames_are_polled() {
    let (mut nic, device, _config) = started::<32, 32>();
    for i in 0..31 {
        assert!(device.borrow_mut().receive(&frame(64, i)));
    }
    assert!(!device.borrow_mut().receive(&frame(64, 31)), "one descriptor stays unarmed");
    assert_eq!(receive(&mut nic).1, Some(frame(64, 0)));
    assert!(device.borrow_mut().receive(&frame(64, 31)));
    for i in 1..32 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
    assert_eq!(receive(&mut nic), (false, None));
    // And again, the whole ring, across the wrap.
    for round in 0..3 {
        for i in 0..31 {
            assert!(device.borrow_mut().receive(&frame(64, 100 * round + i)));
        }
        for i in 0..31 {
            assert_eq!(receive(&mut nic).1, Some(frame(64, 100 * round + i)));
        }
    }
}

#[test]
fn bad_frames_are_dropped_and_their_buffers_rearmed() {
    let (mut nic, device, _config) = started::<32, 32>();
    // The device's error bit; a frame too long for a buffer (truncated, error bit, as
    // QEMU does with maxNumRxSG = 1); a frame spread over three buffers.
    assert!(device.borrow_mut().receive_bad(&frame(100, 1)));
    assert!(!device.borrow_mut().receive(&frame(2000, 2)));
    assert!(device.borrow_mut().receive_split(&frame(1500, 3), 600));
    assert!(device.borrow_mut().receive(&frame(100, 4)));
    for _ in 0..5 {
        assert_eq!(receive(&mut nic), (true, None));
    }
    assert_eq!(receive(&mut nic), (true, Some(frame(100, 4))));
    assert_eq!(receive(&mut nic), (false, None));
    // Every buffer came back: the whole ring fills again.
    for i in 0..31 {
        assert!(device.borrow_mut().receive(&frame(64, i)), "buffer {i} lost");
    }
    for i in 0..31 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
}

#[test]
fn bogus_receive_completions_are_dropped_without_losing_buffers() {
    let (mut nic, device, _config) = started::<32, 32>();
    {
        let mut d = device.borrow_mut();
        // Ring 1 (which has no buffers), an index outside the armed window (31 is the
        // unarmed descriptor), and one past the ring.
        d.write_rx_completion(rcd::SOP | rcd::EOP | 1 << rcd::RQID_SHIFT, 64);
        d.write_rx_completion(rcd::SOP | rcd::EOP | 31, 64);
        d.write_rx_completion(rcd::SOP | rcd::EOP | 4000, 64);
    }
    for _ in 0..3 {
        assert_eq!(receive(&mut nic), (true, None));
    }
    for i in 0..31 {
        assert!(device.borrow_mut().receive(&frame(64, i)));
    }
    for i in 0..31 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
}

#[test]
fn a_completion_skipping_buffers_hands_them_all_back() {
    let (mut nic, device, _config) = started::<32, 32>();
    for i in 1..4 {
        assert!(device.borrow_mut().receive(&frame(80, i)));
        assert_eq!(receive(&mut nic).1, Some(frame(80, i)));
    }
    // Descriptors 3, 4, 5… are armed. A device that skipped 3 and 4 and filled 5 reports
    // only 5: buffer 5 (never written: zeros) is delivered and 3..=5 are handed back.
    device.borrow_mut().write_rx_completion(rcd::SOP | rcd::EOP | 5, 80);
    assert_eq!(receive(&mut nic), (true, Some(vec![0; 80])));
    // The fake's own cursor follows what that device did.
    device.borrow_mut().rx0.next = 6;
    for i in 0..31 {
        assert!(device.borrow_mut().receive(&frame(64, i)), "buffer {i} lost");
    }
    assert!(!device.borrow_mut().receive(&frame(64, 99)));
    for i in 0..31 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
}

#[test]
fn rxprod_is_written_only_when_the_device_asks() {
    let (mut nic, device, _config) = started::<32, 32>();
    let rxprod_writes =
        |device: &Device| device.borrow().writes.iter().filter(|w| w.1 == regs::RXPROD && w.0 == Bar::Pt).count();
    assert!(device.borrow_mut().receive(&frame(64, 0)));
    receive(&mut nic);
    assert_eq!(rxprod_writes(&device), 1, "once, at activation");
    device.borrow_mut().wants_rx_prod = true;
    nic.reset().unwrap();
    for i in 0..40 {
        assert!(device.borrow_mut().receive(&frame(64, i)));
        receive(&mut nic);
    }
    let d = device.borrow();
    let last = d.writes.iter().rev().find(|w| w.1 == regs::RXPROD && w.0 == Bar::Pt).unwrap();
    assert_eq!(last.2, (31 + 40) % 32);
    drop(d);
    assert_eq!(rxprod_writes(&device), 2 + 40);
}
