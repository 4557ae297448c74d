//! Host tests of the driver against the fake 82574 in `fake.rs`. Every DMA region is seen
//! by the device at a different address than the CPU's (`fake::PHYS_OFFSET`).

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

use netdump_core::nic::{NicError, PolledNic, StatusPacer};
use netdump_pci::fake::FakeConfigSpace;
use netdump_pci::{Command, DmaError, DmaRegion, PciAddress, PciDevice, capability_id};

use crate::fake::{FakeDevice, FakeRegisters, PHYS_OFFSET, SharedConfig, dma_ptr};
use crate::regs::{self, Ctrl, Ctrl82574, CtrlExt, Rctl, RxErrors, Tctl};
use crate::{E1000e, InitError, MIN_FRAME_LEN, dma_size};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const ADDRESS: PciAddress = PciAddress::new(0, 2, 0);
/// Offset of the MSI and MSI-X capabilities the fake function has (the first two).
const MSI_CAP: u8 = 0x40;
const MSI_X_CAP: u8 = 0x4C;

type Nic<const TX: usize, const RX: usize> = E1000e<FakeRegisters, SharedConfig, TX, RX>;

/// `len` bytes of leaked, page-aligned, zeroed host memory, which the device sees at
/// `PHYS_OFFSET` above the CPU's address.
fn dma(len: usize) -> DmaRegion {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let base = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap();
    // SAFETY: the block is leaked, so the region owns it for the rest of the run; the fake
    // device reaches it through `dma_ptr`, which undoes the offset.
    unsafe { DmaRegion::new(base, base.as_ptr() as u64 + PHYS_OFFSET, len) }
}

/// An 82574L function as SeaBIOS leaves it (memory decode on, no bus mastering), with the
/// MSI and MSI-X capabilities QEMU gives it, both off.
fn config() -> SharedConfig {
    let mut cfg = FakeConfigSpace::new();
    cfg.add_function(ADDRESS, 0x8086, 0x10D3)
        .set_class(0x02, 0x00, 0x00)
        .set_memory_bar32(0, 0xFEB8_0000, 0x2_0000, false)
        .set_command(0x0003)
        // MSI: Message Control (64-bit capable), address, data.
        .add_capability(capability_id::MSI, &[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0])
        // MSI-X: Message Control (5 vectors), table and PBA offsets in BAR3.
        .add_capability(capability_id::MSI_X, &[0x04, 0x00, 0x03, 0, 0, 0, 0x03, 0x20, 0, 0]);
    SharedConfig(Rc::new(RefCell::new(cfg)))
}

fn device() -> Rc<RefCell<FakeDevice>> {
    FakeDevice::new(MAC, config(), ADDRESS)
}

/// A driver with legacy descriptors only (no checksum context), for the ring tests; the
/// checksum offload has tests of its own below.
fn new_nic<const TX: usize, const RX: usize>(device: &Rc<RefCell<FakeDevice>>) -> Nic<TX, RX> {
    let config = device.borrow().config.clone();
    let pci = PciDevice::new(config, ADDRESS);
    let mut nic = Nic::<TX, RX>::new(FakeRegisters(device.clone()), pci, dma(Nic::<TX, RX>::DMA_SIZE)).unwrap();
    nic.set_udp_checksum_offload(false);
    nic
}

fn started<const TX: usize, const RX: usize>() -> (Nic<TX, RX>, Rc<RefCell<FakeDevice>>) {
    let device = device();
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

fn message_control(device: &Rc<RefCell<FakeDevice>>, cap: u8) -> u16 {
    let config = device.borrow().config.clone();
    let mut cfg = config.0.borrow_mut();
    cfg.function(ADDRESS).unwrap().peek_u16(cap + 2)
}

fn set_message_control(device: &Rc<RefCell<FakeDevice>>, cap: u8, value: u16) {
    let config = device.borrow().config.clone();
    let mut cfg = config.0.borrow_mut();
    let f = cfg.function(ADDRESS).unwrap();
    f.poke(cap + 2, value as u8).poke(cap + 3, (value >> 8) as u8);
}

fn command(device: &Rc<RefCell<FakeDevice>>) -> Command {
    let config = device.borrow().config.clone();
    let mut cfg = config.0.borrow_mut();
    Command::from_bits_retain(cfg.function(ADDRESS).unwrap().peek_u16(netdump_pci::offset::COMMAND))
}

#[test]
fn dma_size_of_default_rings() {
    assert_eq!(crate::DEFAULT_DMA_SIZE, 115_712);
    assert_eq!(Nic::<32, 32>::DMA_SIZE, dma_size(32, 32));
    assert_eq!(Nic::<8, 16>::DMA_SIZE, 24 * 16 + 8 * 1536 + 16 * 2048);
}

#[test]
fn new_rejects_too_small_dma_region() {
    let device = device();
    let pci = PciDevice::new(device.borrow().config.clone(), ADDRESS);
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci, dma(Nic::<8, 8>::DMA_SIZE - 1));
    assert!(matches!(result, Err(InitError::Dma(DmaError::TooSmall { .. }))));
}

#[test]
fn new_reads_mac_from_receive_address_0() {
    let device = device();
    // The OS set a locally administered address: the device filters on it, so it wins.
    device.borrow_mut().set(regs::RAL0, 0x0403_0202);
    device.borrow_mut().set(regs::RAH0, 0x0605 | regs::RAH_AV);
    let nic = new_nic::<8, 8>(&device);
    assert_eq!(nic.mac_address(), [0x02, 0x02, 0x03, 0x04, 0x05, 0x06]);
    assert!(device.borrow().writes.iter().all(|w| w.0 != regs::EERD), "the NVM is not read then");
}

#[test]
fn new_reads_the_nvm_through_the_82574_eerd_when_receive_address_0_is_empty() {
    let device = device();
    device.borrow_mut().set(regs::RAH0, 0);
    device.borrow_mut().set(regs::RAL0, 0);
    let nic = new_nic::<8, 8>(&device);
    assert_eq!(nic.mac_address(), MAC);
    let eerd: Vec<u32> = device.borrow().writes.iter().filter(|w| w.0 == regs::EERD).map(|w| w.1).collect();
    assert_eq!(eerd, [0x1, 0x5, 0x9], "word address in bits 15:2, START in bit 0");
}

#[test]
fn new_fails_without_any_mac_address() {
    let device = FakeDevice::new([0; 6], config(), ADDRESS);
    device.borrow_mut().set(regs::RAH0, 0);
    let pci = PciDevice::new(device.borrow().config.clone(), ADDRESS);
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci, dma(Nic::<8, 8>::DMA_SIZE));
    assert!(matches!(result, Err(InitError::NoMacAddress)));
}

#[test]
fn new_fails_when_registers_read_all_ones() {
    let device = device();
    device.borrow_mut().gone = true;
    let pci = PciDevice::new(device.borrow().config.clone(), ADDRESS);
    let result = Nic::<8, 8>::new(FakeRegisters(device), pci, dma(Nic::<8, 8>::DMA_SIZE));
    assert!(matches!(result, Err(InitError::DeviceGone)));
}

#[test]
fn reset_programs_filters_rings_and_enables_dma() {
    let (mut nic, device) = started::<32, 16>();
    let d = device.borrow();
    assert_eq!(d.get(regs::RAL0), 0x1200_5452);
    assert_eq!(d.get(regs::RAH0), 0x5634 | regs::RAH_AV);
    assert!((0..regs::MTA_LEN).all(|i| d.get(regs::MTA + 4 * i) == 0));
    assert_eq!((d.get(regs::IMS), d.get(regs::IAM), d.get(regs::EIAC), d.get(regs::IVAR)), (0, 0, 0, 0));
    // The device was given device addresses, not the CPU's.
    let tdba = u64::from(d.get(regs::TDBAH)) << 32 | u64::from(d.get(regs::TDBAL));
    let rdba = u64::from(d.get(regs::RDBAH)) << 32 | u64::from(d.get(regs::RDBAL));
    assert!(tdba >= PHYS_OFFSET && rdba >= PHYS_OFFSET);
    assert_eq!(d.get(regs::TDLEN), 32 * 16);
    assert_eq!(d.get(regs::RDLEN), 16 * 16);
    assert_eq!((d.get(regs::TDH), d.get(regs::TDT)), (0, 0));
    assert_eq!((d.get(regs::RDH), d.get(regs::RDT)), (0, 15));
    assert_eq!(Rctl::from_bits_retain(d.get(regs::RCTL)), Rctl::EN | Rctl::BAM | Rctl::SECRC);
    assert!(Tctl::from_bits_retain(d.get(regs::TCTL)).contains(Tctl::EN | Tctl::PSP));
    assert_eq!(d.get(regs::RFCTL), 0, "legacy receive descriptors");
    assert_ne!(d.get(regs::TARC0) & regs::TARC_ENABLE, 0);
    assert_eq!(d.get(regs::TIPG), regs::TIPG_82574);
    let ctrl = d.get(regs::CTRL);
    assert!(ctrl & Ctrl::SLU.bits() != 0 && ctrl & Ctrl82574::GIO_MASTER_DISABLE.bits() == 0);
    assert!(d.get(regs::CTRL_EXT) & CtrlExt::DRV_LOAD.bits() != 0);
    for dctl in [regs::RXDCTL, regs::TXDCTL] {
        assert_eq!(d.get(dctl) & 0x013F_3F3F, regs::dctl::GRAN | regs::dctl::WTHRESH_ONE);
    }
    drop(d);
    let command = nic.pci().command();
    assert!(command.contains(Command::MEMORY_SPACE | Command::BUS_MASTER | Command::INTERRUPT_DISABLE));
    assert_eq!(message_control(&device, MSI_CAP) & 1, 0);
    assert_eq!(message_control(&device, MSI_X_CAP) & 0x8000, 0);
}

#[test]
fn reset_quiesces_before_the_device_reset() {
    let (_nic, device) = started::<8, 8>();
    let writes = &device.borrow().writes;
    let position = |f: &dyn Fn(&(usize, u32)) -> bool| writes.iter().position(f).unwrap();
    let imc = position(&|&(r, v)| r == regs::IMC && v == u32::MAX);
    let master = position(&|&(r, v)| r == regs::CTRL && v & Ctrl82574::GIO_MASTER_DISABLE.bits() != 0);
    let rctl = position(&|&(r, v)| r == regs::RCTL && v == 0);
    let rst = position(&|&(r, v)| r == regs::CTRL && v & Ctrl::RST.bits() != 0);
    assert!(imc < master && master < rctl && rctl < rst);
}

/// What an OS driver (Linux's e1000e) leaves in a running 82574 when the kernel dies: MSI-X
/// on with every cause routed and unmasked, auto-masking, extended receive descriptors and
/// 1 KiB flexible buffers, promiscuous reception, filters opened, queue 0's arbitration bit
/// cleared, GIO mastering disabled, bus mastering off, and both of its rings (in its own
/// memory) still owned by the device: frames queued and not sent, receive buffers armed.
fn leave_running(device: &Rc<RefCell<FakeDevice>>) -> (u64, Vec<u8>) {
    let os = dma(4096);
    let os_phys = os.phys_addr();
    // The OS's transmit ring: 8 descriptors, 3..8 queued with RS and owned by the device.
    for i in 0..8u64 {
        let d = dma_ptr(os_phys + 16 * i, 16);
        // SAFETY: `os` is leaked test memory of 4096 bytes; descriptor `i` is inside it.
        unsafe {
            d.cast::<u64>().write_unaligned(os_phys + 2048);
            d.add(8).cast::<u16>().write_unaligned(64);
            d.add(11).write((regs::TxCommand::EOP | regs::TxCommand::RS).bits());
        }
    }
    // SAFETY: as above; the descriptors are in the first 128 bytes.
    let snapshot = unsafe { std::slice::from_raw_parts(dma_ptr(os_phys, 4096), 4096).to_vec() };
    let mut d = device.borrow_mut();
    d.auto_complete_tx = false;
    d.set(regs::IMS, 0x01F7_00DF);
    d.set(regs::IAM, 0x01F0_0000);
    d.set(regs::EIAC, 0x01F0_0000);
    d.set(regs::IVAR, 0x8000_0000 | 0x0008_8888 | 0x0001_0000);
    d.set(regs::ITR, 500);
    d.set(regs::RDTR, 32);
    d.set(regs::RADV, 8);
    d.set(regs::CTRL_EXT, (CtrlExt::IAME | CtrlExt::EIAME | CtrlExt::PBA_CLR | CtrlExt::DRV_LOAD).bits());
    d.set(regs::RFCTL, regs::RFCTL_EXTEN);
    d.set(regs::RCTL, (Rctl::EN | Rctl::UPE | Rctl::MPE | Rctl::LPE).bits() | 1 << 27);
    d.set(regs::TCTL, Tctl::EN.bits());
    d.set(regs::TARC0, 0x3);
    d.set(regs::MRQC, 0x0035_0001);
    d.set(regs::RXCSUM, 0x2300);
    d.set(regs::TXDCTL, 0x0141_011F);
    d.set(regs::TDBAL, os_phys as u32);
    d.set(regs::TDBAH, (os_phys >> 32) as u32);
    d.set(regs::TDLEN, 8 * 16);
    d.set(regs::TDH, 3);
    d.set(regs::TDT, 0);
    d.set(regs::RDBAL, (os_phys + 128) as u32);
    d.set(regs::RDBAH, ((os_phys + 128) >> 32) as u32);
    d.set(regs::RDLEN, 8 * 16);
    d.set(regs::RDH, 5);
    d.set(regs::RDT, 4);
    d.set(regs::RAL0 + 8, 0xDEAD_BEEF);
    d.set(regs::RAH0 + 8, 0xBEEF | regs::RAH_AV);
    d.set(regs::MTA + 4 * 17, 0xFFFF_FFFF);
    let ctrl = d.get(regs::CTRL) | (Ctrl::VME | Ctrl::FRCSPD).bits() | Ctrl82574::GIO_MASTER_DISABLE.bits();
    d.set(regs::CTRL, ctrl);
    drop(d);
    set_message_control(device, MSI_X_CAP, 0x8004);
    (os_phys, snapshot)
}

#[test]
fn reset_takes_over_a_device_left_running_by_the_os() {
    // On hardware (CTRL.RST restores power-on values) and on QEMU 7.2's model (it restores
    // only receive address 0).
    for reset_restores in [true, false] {
        let device = device();
        let mut nic = new_nic::<8, 8>(&device);
        let (os_phys, snapshot) = leave_running(&device);
        device.borrow_mut().reset_restores = reset_restores;
        nic.pci().disable(Command::BUS_MASTER);
        nic.pci().enable(Command::IO_SPACE);
        nic.reset().unwrap();
        {
            let d = device.borrow();
            assert_eq!((d.get(regs::IMS), d.get(regs::IAM), d.get(regs::EIAC), d.get(regs::IVAR)), (0, 0, 0, 0));
            assert_eq!((d.get(regs::ITR), d.get(regs::RDTR), d.get(regs::RADV)), (0, 0, 0));
            let ctrl_ext = CtrlExt::from_bits_retain(d.get(regs::CTRL_EXT));
            assert!(!ctrl_ext.intersects(CtrlExt::IAME | CtrlExt::EIAME | CtrlExt::PBA_CLR));
            assert_eq!(Rctl::from_bits_retain(d.get(regs::RCTL)), Rctl::EN | Rctl::BAM | Rctl::SECRC);
            assert_eq!((d.get(regs::RFCTL), d.get(regs::MRQC), d.get(regs::RXCSUM)), (0, 0, 0));
            assert_ne!(d.get(regs::TARC0) & regs::TARC_ENABLE, 0);
            assert_eq!((d.get(regs::TDH), d.get(regs::TDT), d.get(regs::RDH), d.get(regs::RDT)), (0, 0, 0, 7));
            assert_eq!(d.get(regs::RAH0 + 8) & regs::RAH_AV, 0);
            assert_eq!(d.get(regs::MTA + 4 * 17), 0);
            let ctrl = d.get(regs::CTRL);
            assert_eq!(ctrl & (Ctrl::VME | Ctrl::FRCSPD).bits(), 0);
            assert_eq!(ctrl & Ctrl82574::GIO_MASTER_DISABLE.bits(), 0);
            let tdba = u64::from(d.get(regs::TDBAH)) << 32 | u64::from(d.get(regs::TDBAL));
            assert_ne!(tdba, os_phys);
        }
        assert_eq!(message_control(&device, MSI_X_CAP) & 0x8000, 0, "MSI-X off");
        assert!(command(&device).contains(Command::BUS_MASTER | Command::INTERRUPT_DISABLE));

        // Traffic flows through our rings only: a full-size frame each way (1 KiB flexible
        // buffers or extended descriptors left in place would split or hide it).
        device.borrow_mut().auto_complete_tx = true;
        send(&mut nic, &frame(1514, 1)).unwrap();
        assert_eq!(device.borrow().sent, [frame(1514, 1)], "the OS's queued frames were not sent");
        assert!(device.borrow_mut().receive(&frame(1514, 2)));
        assert_eq!(receive(&mut nic), (true, Some(frame(1514, 2))));
        assert_eq!(device.borrow().interrupts, 0, "no interrupt was delivered");
        // The OS's rings were never touched after the takeover.
        // SAFETY: the OS ring memory is leaked test memory of 4096 bytes.
        let now = unsafe { std::slice::from_raw_parts(dma_ptr(os_phys, 4096), 4096) };
        assert_eq!(now, &snapshot[..]);
    }
}

#[test]
fn interrupts_stay_off_even_with_causes_pending() {
    let device = device();
    let mut nic = new_nic::<8, 8>(&device);
    leave_running(&device);
    // Without the driver's takeover, the dirty device would interrupt.
    device.borrow_mut().set(regs::IMS, u32::MAX);
    nic.reset().unwrap();
    device.borrow_mut().auto_complete_tx = true;
    for i in 0..20 {
        send(&mut nic, &frame(100, i)).unwrap();
        nic.poll_transmit();
        assert!(device.borrow_mut().receive(&frame(100, i)));
        receive(&mut nic);
    }
    assert_eq!(device.borrow().interrupts, 0);
    // The model does count them: an OS unmasking a cause gets one.
    device.borrow_mut().set(regs::IMS, u32::MAX);
    set_message_control(&device, MSI_X_CAP, 0x8004);
    send(&mut nic, &frame(100, 0)).unwrap();
    assert_eq!(device.borrow().interrupts, 1);
}

#[test]
fn reset_times_out_when_ctrl_rst_never_clears() {
    let device = device();
    let mut nic = new_nic::<8, 8>(&device);
    device.borrow_mut().reset_sticks = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
}

#[test]
fn reset_times_out_when_the_nvm_auto_read_never_finishes() {
    let device = device();
    let mut nic = new_nic::<8, 8>(&device);
    device.borrow_mut().auto_read_never = true;
    assert_eq!(nic.reset(), Err(NicError::ResetTimeout));
}

#[test]
fn reset_goes_ahead_when_the_master_disable_never_completes() {
    let device = device();
    let mut nic = new_nic::<8, 8>(&device);
    device.borrow_mut().master_stuck = true;
    nic.reset().unwrap();
    send(&mut nic, &frame(64, 1)).unwrap();
    assert_eq!(device.borrow().sent.len(), 1);
}

#[test]
fn reset_reports_a_vanished_device() {
    let device = device();
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
    // Dirty every buffer with a long frame first.
    for _ in 0..8 {
        send(&mut nic, &frame(200, 0xEE)).unwrap();
        nic.poll_transmit();
    }
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
    assert_eq!(nic.transmit(0, &mut |_| called = true), Err(NicError::FrameTooShort { len: 0 }));
    assert!(!called);
    assert!(device.borrow().sent.is_empty());
    send(&mut nic, &frame(14, 1)).unwrap();
    send(&mut nic, &frame(1514, 2)).unwrap();
    assert_eq!(device.borrow().sent.len(), 2);
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
    assert_eq!(nic.tx_in_flight(), 7);
    // The device finishes two; nothing is free until poll_transmit says so.
    assert_eq!(device.borrow_mut().complete_tx(2), 2);
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::RingFull));
    assert_eq!(nic.poll_transmit(), 2);
    assert_eq!(nic.tx_in_flight(), 5);
    send(&mut nic, &frame(64, 7)).unwrap();
    send(&mut nic, &frame(64, 8)).unwrap();
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::RingFull));
    assert_eq!(device.borrow_mut().complete_tx(usize::MAX), 7);
    assert_eq!(nic.poll_transmit(), 7);
    assert_eq!(nic.poll_transmit(), 0);
    let tags: Vec<u8> = device.borrow().sent.iter().map(|f| f[20]).collect();
    assert_eq!(tags, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn back_pressure_and_recovery_across_many_wraps() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().auto_complete_tx = false;
    let (mut sent, mut ring_full) = (0u32, 0);
    while sent < 1000 {
        match send(&mut nic, &frame(60 + (sent as usize % 1400), sent as u8)) {
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
    assert!(ring_full > 100);
    let d = device.borrow();
    assert_eq!(d.sent.len(), 1000);
    assert!(d.sent.iter().enumerate().all(|(i, f)| f[20] == i as u8 && f.len() == 60 + i % 1400));
    assert!(d.writes.iter().filter(|w| w.0 == regs::TDT).all(|w| w.1 < 8));
}

#[test]
fn transmit_reports_link_down_and_a_vanished_device() {
    let (mut nic, device) = started::<8, 8>();
    device.borrow_mut().link = false;
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::LinkDown));
    assert!(!nic.link_up());
    device.borrow_mut().link = true;
    assert!(nic.link_up());
    nic.reset().unwrap();
    device.borrow_mut().auto_complete_tx = false;
    for i in 0..7 {
        send(&mut nic, &frame(64, i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::RingFull));
    device.borrow_mut().gone = true;
    assert_eq!(send(&mut nic, &frame(64, 9)), Err(NicError::DeviceGone));
}

#[test]
fn link_loss_mid_stream_is_reported_within_the_status_interval() {
    let (mut nic, device) = started::<8, 8>();
    send(&mut nic, &frame(64, 0)).unwrap();
    device.borrow_mut().link = false;
    let mut sent = 0;
    let err = loop {
        match send(&mut nic, &frame(64, 1)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        nic.poll_transmit();
        assert!(sent < StatusPacer::INTERVAL, "link loss not noticed after {sent} frames");
    };
    assert_eq!(err, NicError::LinkDown);
    assert_eq!(sent, StatusPacer::INTERVAL - 1);
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
    assert!(!device.borrow_mut().receive(&frame(64, 7)), "RDH == RDT: no buffer left");
    assert_eq!(receive(&mut nic).1, Some(frame(64, 0)));
    assert!(device.borrow_mut().receive(&frame(64, 7)));
    for i in 1..8 {
        assert_eq!(receive(&mut nic).1, Some(frame(64, i)));
    }
    assert_eq!(receive(&mut nic), (false, None));
}

#[test]
fn receive_ring_wraps_many_times_with_every_size() {
    let (mut nic, device) = started::<8, 8>();
    for len in 14..=1514usize {
        let f = frame(len, len as u8);
        assert!(device.borrow_mut().receive(&f), "no buffer for {len} bytes");
        assert_eq!(receive(&mut nic), (true, Some(f)));
    }
    let d = device.borrow();
    assert_eq!(d.get(regs::RDH), (1501 % 8) as u32);
    assert_eq!(d.get(regs::RDT), ((1501 + 7) % 8) as u32);
}

#[test]
fn bad_frames_are_dropped_and_rearmed() {
    let (mut nic, device) = started::<8, 8>();
    for errors in [RxErrors::CE, RxErrors::SE, RxErrors::SEQ, RxErrors::RXE] {
        assert!(device.borrow_mut().receive_with(&frame(64, 1), errors));
    }
    // A runt (shorter than an Ethernet header), then a good frame.
    assert!(device.borrow_mut().receive(&[0xAA; 10]));
    assert!(device.borrow_mut().receive(&frame(64, 2)));
    let mut handled = 0;
    for _ in 0..5 {
        assert_eq!(nic.poll_receive(&mut |_| handled += 1), Ok(true));
    }
    assert_eq!(handled, 0, "bad frames never reach the handler");
    assert_eq!(receive(&mut nic), (true, Some(frame(64, 2))));
    assert_eq!(device.borrow().get(regs::RDT), 5, "every descriptor was given back");
    // Checksum-offload verdicts are not frame errors.
    assert!(device.borrow_mut().receive_with(&frame(64, 3), RxErrors::TCPE | RxErrors::IPE));
    assert_eq!(receive(&mut nic), (true, Some(frame(64, 3))));
}

#[test]
fn frames_spanning_descriptors_are_dropped_whole() {
    let (mut nic, device) = started::<8, 8>();
    // 512-byte buffers (as an OS might leave RCTL.BSIZE) split a frame over three.
    let rctl = device.borrow().get(regs::RCTL);
    device.borrow_mut().set(regs::RCTL, rctl | 0b10 << 16);
    assert!(device.borrow_mut().receive(&frame(1500, 1)));
    device.borrow_mut().set(regs::RCTL, rctl);
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
    device.borrow_mut().reset_restores = false;
    nic.reset().unwrap();
    assert_eq!(nic.tx_in_flight(), 0);
    assert_eq!(receive(&mut nic), (false, None), "stale completions are gone");
    for i in 0..7 {
        send(&mut nic, &frame(64, 20 + i)).unwrap();
    }
    assert_eq!(send(&mut nic, &frame(64, 0)), Err(NicError::RingFull));
    assert!(device.borrow_mut().receive(&frame(64, 30)));
    assert_eq!(receive(&mut nic).1, Some(frame(64, 30)));
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
fn reset_gives_the_device_a_udp_checksum_context() {
    let device = device();
    let mut nic = new_nic::<8, 8>(&device);
    nic.set_udp_checksum_offload(true);
    assert!(!nic.udp_checksum_offload(), "not before the reset that programs it");
    nic.reset().unwrap();
    assert!(nic.udp_checksum_offload());
    assert_eq!(device.borrow().checksum_context, Some((34, 40, 0)));
    assert!(device.borrow().sent.is_empty());
    assert_eq!(nic.tx_in_flight(), 0, "reset waited for the device to take the context");
    nic.set_udp_checksum_offload(false);
    device.borrow_mut().checksum_context = None;
    nic.reset().unwrap();
    assert!(!nic.udp_checksum_offload());
    assert_eq!(device.borrow().checksum_context, None);
}

#[test]
fn udp_frames_leave_with_the_checksum_software_would_have_computed() {
    // On a device that follows the datasheet, and on QEMU's model, which gets padded
    // frames wrong unless the driver completes their checksum itself.
    for qemu in [false, true] {
        udp_checksums_on(qemu);
    }
}

fn udp_checksums_on(qemu: bool) {
    use netdump_core::net::UdpChecksum;
    let device = device();
    device.borrow_mut().qemu_checksum = qemu;
    let mut nic = new_nic::<8, 8>(&device);
    nic.set_udp_checksum_offload(true);
    nic.reset().unwrap();
    const LENGTHS: [usize; 8] = [0, 1, 2, 3, 17, 100, 1001, 1458];
    let payload = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 + len) as u8).collect() };
    for len in LENGTHS {
        send(&mut nic, &udp_frame(&payload(len), UdpChecksum::Device)).unwrap();
        send(&mut nic, &frame(60, 0x42)).unwrap();
        nic.poll_transmit();
    }
    let d = device.borrow();
    assert_eq!(d.checksummed, 3, "the UDP frames that need no padding were checksummed by the device");
    let mut sent = d.sent.iter();
    for len in LENGTHS {
        let mut expected = udp_frame(&payload(len), UdpChecksum::Software);
        expected.resize(expected.len().max(MIN_FRAME_LEN), 0);
        assert_eq!(sent.next().unwrap(), &expected, "{len}-byte payload");
        assert_eq!(sent.next().unwrap(), &frame(60, 0x42));
    }
}
