//! A fake 82574 for host tests: a register file with the side effects the driver relies on
//! (CTRL.RST in two flavours, GIO master disable, EECD auto-read, the 82574's EERD, IMS/IMC,
//! clear-on-read ICR, TDT/TCTL ring processing gated by TARC0 as in QEMU), a device model
//! that walks descriptor rings in test memory through device addresses that are *not* the
//! CPU's ([`PHYS_OFFSET`]), receive descriptors in the legacy or extended write-back format
//! as RFCTL/RCTL select, buffer sizes from RCTL (BSIZE or FLXBUF), and an interrupt model
//! that counts every interrupt the device would have delivered (MSI-X, MSI or INTx, as the
//! PCI function's configuration space says).

use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

use netdump_pci::fake::FakeConfigSpace;
use netdump_pci::{Command, ConfigSpace, PciAddress, RegisterBlock, capability_id};

use crate::regs::{self, Ctrl, Ctrl82574, Rctl, RxErrors, RxStatus, Status, Status82574, Tctl, TxCommand, TxStatus};

/// The device sees test memory at the CPU's address plus this. CPU addresses of user-space
/// memory are below it, so a driver that programs one into the device makes the fake panic.
pub const PHYS_OFFSET: u64 = 0x8000_0000_0000;

/// The CPU's pointer to `len` bytes of test memory at device address `phys`.
pub fn dma_ptr(phys: u64, len: usize) -> *mut u8 {
    assert!(phys >= PHYS_OFFSET, "the device was given a CPU address: {phys:#x}");
    assert!(len < 1 << 20);
    (phys - PHYS_OFFSET) as usize as *mut u8
}

/// ICR causes the model raises (datasheet "Interrupt Cause Read").
pub const ICR_TXDW: u32 = 1 << 0;
/// Receiver timer interrupt: a frame was written back.
pub const ICR_RXT0: u32 = 1 << 7;

/// A configuration space shared between the driver (through its `PciDevice`) and the
/// device model, which needs bus mastering and the interrupt enables.
#[derive(Clone)]
pub struct SharedConfig(pub Rc<RefCell<FakeConfigSpace>>);

impl ConfigSpace for SharedConfig {
    fn read_u32(&mut self, address: PciAddress, offset: u8) -> u32 {
        self.0.borrow_mut().read_u32(address, offset)
    }
    fn write_u32(&mut self, address: PciAddress, offset: u8, value: u32) {
        self.0.borrow_mut().write_u32(address, offset, value)
    }
}

/// The device state, shared between the driver's register handle and the test.
pub struct FakeDevice {
    regs: Vec<u32>,
    pub nvm: [u16; 64],
    pub config: SharedConfig,
    pub address: PciAddress,
    /// CTRL.RST never clears.
    pub reset_sticks: bool,
    /// EECD.AUTO_RD never comes back after a reset.
    pub auto_read_never: bool,
    /// STATUS.GIO_MASTER_ENABLE never clears.
    pub master_stuck: bool,
    /// CTRL.RST restores power-on values like hardware and newer QEMU (false: like QEMU
    /// 7.2's model, where it restores only receive address 0).
    pub reset_restores: bool,
    /// Transmit descriptors complete as soon as TDT or TCTL is written (QEMU's behaviour).
    pub auto_complete_tx: bool,
    /// Every register reads all ones (the device fell off the bus).
    pub gone: bool,
    /// The PHY has link.
    pub link: bool,
    /// Frames the device has sent.
    pub sent: Vec<Vec<u8>>,
    /// The last TCP/IP context descriptor's TUCSS, TUCSO and TUCSE.
    pub checksum_context: Option<(u8, u8, u16)>,
    /// Frames whose TCP/UDP checksum the device inserted, of `sent`.
    pub checksummed: usize,
    /// Checksums the way QEMU's e1000e model does (the field zeroed, the pseudo-header's
    /// length taken from the frame, padding included) instead of the datasheet's way.
    pub qemu_checksum: bool,
    /// Interrupts delivered: MSI-X or MSI messages, or INTx assertions.
    pub interrupts: usize,
    /// Every write, in order.
    pub writes: Vec<(usize, u32)>,
}

/// The one's-complement sum of bytes `css..=cse` (to the end when `cse` is 0), the field
/// at `cso` included, complemented into the field at `cso` (0 is sent as 0xffff): the
/// datasheet's TCP/IP context semantics, which the 82574 shares with the 8254x.
fn insert_checksum(frame: &mut [u8], css: usize, cso: usize, cse: usize) {
    let end = if cse == 0 || cse >= frame.len() { frame.len() } else { cse + 1 };
    let mut sum = 0u32;
    for pair in frame[css..end].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[cso..cso + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// What QEMU 7.2's e1000e does for an IPv4/UDP frame with TXSM (`net_tx_pkt_do_sw_csum`):
/// zero the field, then sum the pseudo-header with the length of everything after the IP
/// header (Ethernet padding included) and the UDP header and data.
fn insert_checksum_like_qemu(frame: &mut [u8]) {
    frame[40..42].fill(0);
    let length = (frame.len() - 34) as u32;
    let mut sum = 17 + length;
    for pair in frame[26..34].chunks(2).chain(frame[34..].chunks(2)) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[40..42].copy_from_slice(&checksum.to_be_bytes());
}

/// The driver's handle on a [`FakeDevice`].
pub struct FakeRegisters(pub Rc<RefCell<FakeDevice>>);

impl FakeDevice {
    pub fn new(mac: [u8; 6], config: SharedConfig, address: PciAddress) -> Rc<RefCell<FakeDevice>> {
        let mut nvm = [0u16; 64];
        for i in 0..3 {
            nvm[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
        }
        let mut device = FakeDevice {
            regs: vec![0; regs::MMIO_SIZE / 4],
            nvm,
            config,
            address,
            reset_sticks: false,
            auto_read_never: false,
            master_stuck: false,
            reset_restores: true,
            auto_complete_tx: true,
            gone: false,
            link: true,
            sent: Vec::new(),
            checksum_context: None,
            checksummed: 0,
            qemu_checksum: false,
            interrupts: 0,
            writes: Vec::new(),
        };
        device.power_on();
        Rc::new(RefCell::new(device))
    }

    /// Power-on values, as QEMU's `e1000e_mac_reg_init` has them: link up at 1000 full
    /// duplex, TARC0 enabled, the NVM loaded (EECD.AUTO_RD), RAL0/RAH0 from the NVM.
    fn power_on(&mut self) {
        self.regs.fill(0);
        self.set(regs::CTRL, (Ctrl::FD | Ctrl::SLU).bits() | 0b10 << 8);
        self.set(regs::STATUS, (Status::LU | Status::FD).bits() | 0b10 << 6);
        self.set(regs::EECD, regs::EECD_AUTO_RD | 1 << 8);
        self.set(regs::EERD, regs::eerd::DONE);
        self.set(regs::TARC0, 0x3 | regs::TARC_ENABLE);
        self.set(regs::RXDCTL, 1 << 16);
        self.set(regs::PBA, 0x0014_0014);
        self.set(regs::TIPG, regs::TIPG_82574);
        self.set(regs::RXCSUM, 0x300);
        self.load_receive_address();
    }

    fn load_receive_address(&mut self) {
        let mac: Vec<u8> = self.nvm[..3].iter().flat_map(|w| w.to_le_bytes()).collect();
        self.set(regs::RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.set(regs::RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | regs::RAH_AV);
    }

    pub fn get(&self, offset: usize) -> u32 {
        self.regs[offset / 4]
    }

    /// Sets a register without side effects (to dirty the device before a test).
    pub fn set(&mut self, offset: usize, value: u32) {
        self.regs[offset / 4] = value;
    }

    fn command(&self) -> Command {
        Command::from_bits_retain(self.config.0.borrow_mut().read_u16(self.address, netdump_pci::offset::COMMAND))
    }

    fn bus_master(&self) -> bool {
        self.command().contains(Command::BUS_MASTER)
    }

    /// Whether the capability `id` exists and its Message Control has `enable` set.
    fn message_enabled(&self, id: u8, enable: u16) -> bool {
        let mut config = self.config.0.borrow_mut();
        let mut at = config.read_u8(self.address, netdump_pci::offset::CAPABILITIES_POINTER);
        for _ in 0..48 {
            if at == 0 {
                return false;
            }
            let header = config.read_u32(self.address, at);
            if header as u8 == id {
                return (header >> 16) as u16 & enable != 0;
            }
            at = (header >> 8) as u8;
        }
        false
    }

    /// Raises interrupt causes, counting the interrupt the device would deliver if one is
    /// unmasked: an MSI-X message when MSI-X is on (its vector from IVAR), an MSI when MSI
    /// is, else INTx unless the command register disables it.
    fn raise(&mut self, causes: u32) {
        self.set(regs::ICR, self.get(regs::ICR) | causes);
        if self.get(regs::ICR) & self.get(regs::IMS) == 0 {
            return;
        }
        let delivered = self.message_enabled(capability_id::MSI_X, 1 << 15)
            || self.message_enabled(capability_id::MSI, 1 << 0)
            || !self.command().contains(Command::INTERRUPT_DISABLE);
        if delivered {
            self.interrupts += 1;
        }
    }

    fn ring_len(&self, dlen: usize) -> u32 {
        self.get(dlen) / 16
    }

    fn descriptor(&self, bal: usize, bah: usize, index: u32) -> *mut u8 {
        let base = u64::from(self.get(bah)) << 32 | u64::from(self.get(bal));
        dma_ptr(base + 16 * u64::from(index), 16)
    }

    /// Sends up to `limit` queued frames, writing DD back for descriptors with RS. Like
    /// QEMU's model, only while TCTL.EN and TARC0's enable bit are set, and (like any PCI
    /// device) only with bus mastering on.
    pub fn complete_tx(&mut self, limit: usize) -> usize {
        let mut done = 0;
        if self.get(regs::TCTL) & Tctl::EN.bits() == 0
            || self.get(regs::TARC0) & regs::TARC_ENABLE == 0
            || !self.bus_master()
        {
            return 0;
        }
        let len = self.ring_len(regs::TDLEN);
        while done < limit && self.get(regs::TDH) != self.get(regs::TDT) && self.get(regs::TDT) < len {
            let head = self.get(regs::TDH);
            let d = self.descriptor(regs::TDBAL, regs::TDBAH, head);
            // SAFETY: `d` is the CPU's address of a descriptor the driver programmed into
            // TDBA/TDLEN: its ring lives in leaked test memory for the whole test. Fields are
            // at their legacy offsets (addr 0, length 8, cmd 11, status 12), which the
            // context and data descriptors share (DTYP in byte 10's high nibble, POPTS in
            // byte 13).
            unsafe {
                let addr = d.cast::<u64>().read_unaligned();
                let length = d.add(8).cast::<u16>().read_unaligned();
                let dtyp = d.add(10).read() >> 4;
                let cmd = TxCommand::from_bits_retain(d.add(11).read());
                let popts = d.add(13).read();
                if cmd.contains(TxCommand::DEXT) && dtyp == 0 {
                    self.checksum_context = Some(((addr >> 32) as u8, (addr >> 40) as u8, (addr >> 48) as u16));
                } else {
                    let bytes = std::slice::from_raw_parts(dma_ptr(addr, length.into()), usize::from(length));
                    let mut frame = bytes.to_vec();
                    if cmd.contains(TxCommand::DEXT) && dtyp == 1 && popts & regs::txd::POPTS_TXSM != 0 {
                        let (css, cso, cse) = self.checksum_context.expect("TXSM without a context descriptor");
                        if self.qemu_checksum {
                            insert_checksum_like_qemu(&mut frame);
                        } else {
                            insert_checksum(&mut frame, css.into(), cso.into(), cse.into());
                        }
                        self.checksummed += 1;
                    }
                    self.sent.push(frame);
                }
                if cmd.contains(TxCommand::RS) {
                    d.add(12).write(d.add(12).read() | TxStatus::DD.bits());
                }
            }
            self.set(regs::TDH, (head + 1) % len);
            done += 1;
        }
        if done > 0 {
            self.raise(ICR_TXDW);
        }
        done
    }

    /// Bytes per receive buffer as RCTL says: FLXBUF in KB when set, else BSIZE/BSEX.
    fn rx_buffer_size(&self) -> usize {
        let rctl = self.get(regs::RCTL);
        let flxbuf = (rctl & regs::RCTL_FLXBUF) >> 27;
        if flxbuf != 0 {
            return flxbuf as usize * 1024;
        }
        let bsize = (rctl >> 16) & 3;
        if rctl & Rctl::BSEX.bits() == 0 { 2048 >> bsize } else { [2048, 16384, 8192, 4096][bsize as usize] }
    }

    /// Whether receive descriptors use the extended write-back format (RFCTL.EXTEN, or a
    /// packet-split RCTL.DTYP, which this model treats the same way).
    pub fn extended_rx(&self) -> bool {
        self.get(regs::RFCTL) & regs::RFCTL_EXTEN != 0 || self.get(regs::RCTL) & regs::RCTL_DTYP != 0
    }

    /// Receives a frame into the descriptors from RDH on, split over buffers as RCTL says
    /// (EOP on the last), with `errors` on the last. False if the receiver is off, there is
    /// no link or bus mastering, or too few descriptors (nothing is written then).
    pub fn receive_with(&mut self, frame: &[u8], errors: RxErrors) -> bool {
        if self.get(regs::RCTL) & Rctl::EN.bits() == 0 || !self.link || !self.bus_master() {
            return false;
        }
        let len = self.ring_len(regs::RDLEN);
        if len == 0 || self.get(regs::RDT) >= len {
            return false;
        }
        let pieces: Vec<&[u8]> = frame.chunks(self.rx_buffer_size()).collect();
        let free = (self.get(regs::RDT) + len - self.get(regs::RDH)) % len;
        if (free as usize) < pieces.len() {
            return false;
        }
        for (i, piece) in pieces.iter().enumerate() {
            let head = self.get(regs::RDH);
            let d = self.descriptor(regs::RDBAL, regs::RDBAH, head);
            let last = i + 1 == pieces.len();
            let status = if last { RxStatus::DD | RxStatus::EOP } else { RxStatus::DD };
            let errors = if last { errors.bits() } else { 0 };
            // SAFETY: as in `complete_tx`, for the receive ring; the driver armed the
            // descriptor with a buffer of at least `rx_buffer_size` bytes (what it told the
            // device through RCTL).
            unsafe {
                let addr = d.cast::<u64>().read_unaligned();
                std::ptr::copy_nonoverlapping(piece.as_ptr(), dma_ptr(addr, piece.len()), piece.len());
                if self.extended_rx() {
                    // Extended write-back: MRQ and RSS hash, then status/error (status in
                    // bits 19:0, errors in 31:20), length, VLAN.
                    d.cast::<u64>().write_unaligned(0);
                    let status_error = u32::from(status.bits()) | u32::from(errors) << 24;
                    d.add(8).cast::<u32>().write_unaligned(status_error);
                    d.add(12).cast::<u16>().write_unaligned(piece.len() as u16);
                    d.add(14).cast::<u16>().write_unaligned(0);
                } else {
                    d.add(8).cast::<u16>().write_unaligned(piece.len() as u16);
                    d.add(13).write(errors);
                    d.add(12).write(status.bits());
                }
            }
            self.set(regs::RDH, (head + 1) % len);
        }
        self.raise(ICR_RXT0);
        true
    }

    pub fn receive(&mut self, frame: &[u8]) -> bool {
        self.receive_with(frame, RxErrors::empty())
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.writes.push((offset, value));
        match offset {
            regs::CTRL => {
                let reset = value & Ctrl::RST.bits() != 0;
                if reset && self.reset_restores {
                    self.power_on();
                } else {
                    self.set(regs::CTRL, value & !Ctrl::RST.bits());
                    if reset {
                        self.load_receive_address();
                    }
                }
                if reset && self.reset_sticks {
                    self.set(regs::CTRL, self.get(regs::CTRL) | Ctrl::RST.bits());
                }
                if reset && self.auto_read_never {
                    self.set(regs::EECD, self.get(regs::EECD) & !regs::EECD_AUTO_RD);
                }
            }
            regs::EERD => {
                let word = (value >> regs::eerd::ADDR_SHIFT) & 0x3FFF;
                let data = if value & regs::eerd::START != 0 && (word as usize) < self.nvm.len() {
                    u32::from(self.nvm[word as usize]) << regs::eerd::DATA_SHIFT | regs::eerd::DONE
                } else {
                    0
                };
                self.set(regs::EERD, data | word << regs::eerd::ADDR_SHIFT);
            }
            regs::EECD => {
                let read_only = regs::EECD_AUTO_RD | 1 << 8;
                self.set(regs::EECD, self.get(regs::EECD) & read_only | value & !read_only);
            }
            regs::STATUS => {}
            regs::IMS => {
                self.set(regs::IMS, self.get(regs::IMS) | value);
                self.raise(0);
            }
            regs::IMC => self.set(regs::IMS, self.get(regs::IMS) & !value),
            regs::TDT | regs::TCTL => {
                self.set(offset, value);
                if self.auto_complete_tx {
                    self.complete_tx(usize::MAX);
                }
            }
            _ => self.set(offset, value),
        }
    }

    fn read(&mut self, offset: usize) -> u32 {
        if self.gone {
            return u32::MAX;
        }
        match offset {
            regs::ICR => std::mem::take(&mut self.regs[regs::ICR / 4]),
            regs::STATUS => {
                let mut status = self.get(regs::STATUS) & !(Status::LU.bits() | Status82574::GIO_MASTER_ENABLE.bits());
                if self.link {
                    status |= Status::LU.bits();
                }
                if self.master_stuck || self.get(regs::CTRL) & Ctrl82574::GIO_MASTER_DISABLE.bits() == 0 {
                    status |= Status82574::GIO_MASTER_ENABLE.bits();
                }
                status
            }
            _ => self.get(offset),
        }
    }
}

/// The driver makes 32-bit accesses only; a narrower one is a bug the tests should see.
impl RegisterBlock for FakeRegisters {
    fn len(&self) -> usize {
        regs::MMIO_SIZE
    }
    fn read_u8(&mut self, offset: usize) -> u8 {
        panic!("8-bit read at {offset:#x}")
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        panic!("16-bit read at {offset:#x}")
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.0.borrow_mut().read(offset)
    }
    fn write_u8(&mut self, offset: usize, _: u8) {
        panic!("8-bit write at {offset:#x}")
    }
    fn write_u16(&mut self, offset: usize, _: u16) {
        panic!("16-bit write at {offset:#x}")
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut().write(offset, value)
    }
}
