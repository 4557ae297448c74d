//! A fake 8254x for host tests: a register file with the side effects the driver relies on
//! (self-clearing reset, EERD, clear-on-read ICR, TDT/RDT ring processing) and a device
//! model that reads and writes descriptors and buffers in test memory, where physical
//! address = virtual address.

use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

/// What the device sees of the driver's memory: host address + this offset. The tests
/// give the driver device addresses that differ from the host addresses behind them, so
/// a driver that hands the device a pointer (or the CPU a device address) fails.
pub const DMA_OFFSET: u64 = 0x1000_0000_0000;

/// The host address behind device address `device`.
fn host(device: u64) -> *mut u8 {
    device.wrapping_sub(DMA_OFFSET) as usize as *mut u8
}

use netdump_pci::RegisterBlock;

use crate::regs::{self, Ctrl, Rctl, RxErrors, RxStatus, Status, Tctl, TxCommand, TxStatus};

/// The device state, shared between the driver's register handle and the test.
pub struct FakeDevice {
    regs: Vec<u32>,
    pub eeprom: [u16; 64],
    /// EERD answers (false: like an 82544, whose EERD never reports DONE).
    pub eerd_works: bool,
    /// CTRL.RST never clears.
    pub reset_sticks: bool,
    /// CTRL.RST restores power-on register values, like hardware (false: like QEMU's
    /// e1000, where it changes nothing).
    pub reset_clears_registers: bool,
    /// Transmit descriptors complete as soon as TDT moves (QEMU's behaviour).
    pub auto_complete_tx: bool,
    /// Every register reads all ones (the device fell off the bus).
    pub gone: bool,
    /// Frames the device has sent.
    pub sent: Vec<Vec<u8>>,
    /// The last TCP/IP context descriptor's TUCSS, TUCSO and TUCSE (3.3.6).
    pub checksum_context: Option<(u8, u8, u16)>,
    /// Frames whose TCP/UDP checksum the device inserted, of `sent`.
    pub checksummed: usize,
    /// Every write, in order.
    pub writes: Vec<(usize, u32)>,
}

/// What QEMU's e1000 (and the SDM, 3.3.6) does with a checksum context: the one's-
/// complement sum of bytes `css..=cse` (to the end when `cse` is 0), the field at `cso`
/// included, complemented into the field at `cso` (0 is sent as 0xffff).
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

/// The driver's handle on a [`FakeDevice`].
pub struct FakeRegisters(pub Rc<RefCell<FakeDevice>>);

impl FakeDevice {
    pub fn new(mac: [u8; 6]) -> Rc<RefCell<FakeDevice>> {
        let mut eeprom = [0u16; 64];
        for i in 0..3 {
            eeprom[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
        }
        let mut device = FakeDevice {
            regs: vec![0; regs::MMIO_SIZE / 4],
            eeprom,
            eerd_works: true,
            reset_sticks: false,
            reset_clears_registers: true,
            auto_complete_tx: true,
            gone: false,
            sent: Vec::new(),
            checksum_context: None,
            checksummed: 0,
            writes: Vec::new(),
        };
        device.power_on();
        Rc::new(RefCell::new(device))
    }

    /// Power-on values: link up at full duplex, RAL0/RAH0 loaded from the EEPROM.
    fn power_on(&mut self) {
        self.regs.fill(0);
        self.set(regs::STATUS, (Status::LU | Status::FD).bits());
        let mac: Vec<u8> = self.eeprom[..3].iter().flat_map(|w| w.to_le_bytes()).collect();
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

    fn tx_len(&self) -> u32 {
        self.get(regs::TDLEN) / 16
    }

    fn rx_len(&self) -> u32 {
        self.get(regs::RDLEN) / 16
    }

    fn descriptor(base_low: u32, base_high: u32, index: u32) -> *mut u8 {
        host(((u64::from(base_high) << 32) | u64::from(base_low)) + 16 * u64::from(index))
    }

    /// Sends up to `limit` queued frames, writing DD back for descriptors with RS.
    pub fn complete_tx(&mut self, limit: usize) -> usize {
        let mut done = 0;
        if self.get(regs::TCTL) & Tctl::EN.bits() == 0 {
            return 0;
        }
        while done < limit && self.get(regs::TDH) != self.get(regs::TDT) {
            let head = self.get(regs::TDH);
            let d = Self::descriptor(self.get(regs::TDBAL), self.get(regs::TDBAH), head);
            // SAFETY: `host` undoes the device offset of test memory; the driver programmed TDBA/TDLEN to
            // its descriptor ring, which is live for the whole test; descriptor fields are
            // at their legacy-format offsets (addr 0, length 8, cmd 11, status 12), which
            // the extended formats share (DTYP in byte 10's high nibble, POPTS in byte 13).
            unsafe {
                let addr = d.cast::<u64>().read();
                let length = d.add(8).cast::<u16>().read();
                let dtyp = d.add(10).read() >> 4;
                let cmd = TxCommand::from_bits_retain(d.add(11).read());
                let popts = d.add(13).read();
                if cmd.contains(TxCommand::DEXT) && dtyp == 0 {
                    // A context descriptor: no frame, just where checksums go.
                    self.checksum_context = Some(((addr >> 32) as u8, (addr >> 40) as u8, (addr >> 48) as u16));
                } else {
                    let frame = std::slice::from_raw_parts(host(addr), usize::from(length));
                    let mut frame = frame.to_vec();
                    if cmd.contains(TxCommand::DEXT) && dtyp == 1 && popts & crate::regs::txd::POPTS_TXSM != 0 {
                        let (css, cso, cse) = self.checksum_context.expect("TXSM without a context descriptor");
                        insert_checksum(&mut frame, css.into(), cso.into(), cse.into());
                        self.checksummed += 1;
                    }
                    self.sent.push(frame);
                }
                if cmd.contains(TxCommand::RS) {
                    d.add(12).write(d.add(12).read() | TxStatus::DD.bits());
                }
            }
            self.set(regs::TDH, (head + 1) % self.tx_len());
            done += 1;
        }
        done
    }

    /// Receives a frame into the descriptor at RDH, split into descriptors of `chunk` bytes
    /// (EOP on the last), with `errors` on the last. False if the receiver is off or out of
    /// descriptors (no frame is written then).
    pub fn receive_with(&mut self, frame: &[u8], chunk: usize, errors: RxErrors) -> bool {
        if self.get(regs::RCTL) & Rctl::EN.bits() == 0 {
            return false;
        }
        let pieces: Vec<&[u8]> = frame.chunks(chunk).collect();
        let free = (self.get(regs::RDT) + self.rx_len() - self.get(regs::RDH)) % self.rx_len();
        if (free as usize) < pieces.len() {
            return false;
        }
        for (i, piece) in pieces.iter().enumerate() {
            let head = self.get(regs::RDH);
            let d = Self::descriptor(self.get(regs::RDBAL), self.get(regs::RDBAH), head);
            let last = i + 1 == pieces.len();
            // SAFETY: as in `complete_tx`, for the receive ring; the driver armed the
            // descriptor with a buffer of RX_BUFFER_SIZE ≥ `chunk` bytes.
            unsafe {
                let addr = d.cast::<u64>().read();
                std::ptr::copy_nonoverlapping(piece.as_ptr(), host(addr), piece.len());
                d.add(8).cast::<u16>().write(piece.len() as u16);
                d.add(13).write(if last { errors.bits() } else { 0 });
                let status = if last { RxStatus::DD | RxStatus::EOP } else { RxStatus::DD };
                d.add(12).write(status.bits());
            }
            self.set(regs::RDH, (head + 1) % self.rx_len());
        }
        true
    }

    pub fn receive(&mut self, frame: &[u8]) -> bool {
        self.receive_with(frame, crate::RX_BUFFER_SIZE, RxErrors::empty())
    }

    fn write(&mut self, offset: usize, value: u32) {
        self.writes.push((offset, value));
        match offset {
            regs::CTRL => {
                if value & Ctrl::RST.bits() != 0 && self.reset_clears_registers {
                    self.power_on();
                }
                let keep_rst = if self.reset_sticks { Ctrl::RST.bits() } else { 0 };
                self.set(regs::CTRL, value & !Ctrl::RST.bits() | (value & keep_rst));
            }
            regs::EERD => {
                if value & regs::eerd::START != 0 && self.eerd_works {
                    let word = (value >> regs::eerd::ADDR_SHIFT) & 0xFF;
                    let data = u32::from(self.eeprom[word as usize % 64]);
                    self.set(
                        regs::EERD,
                        data << regs::eerd::DATA_SHIFT | word << regs::eerd::ADDR_SHIFT | regs::eerd::DONE,
                    );
                } else {
                    self.set(regs::EERD, value & !regs::eerd::DONE);
                }
            }
            regs::IMS => self.set(regs::IMS, self.get(regs::IMS) | value),
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
