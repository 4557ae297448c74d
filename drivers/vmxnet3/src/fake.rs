//! A fake vmxnet3 for host tests, modelled on QEMU's (`hw/net/vmxnet3.c`): both register
//! BARs with their side effects (commands and their results, DriverShared's address,
//! MACL/MACH, IMRs, TXPROD), and a device that parses DriverShared and the queue
//! descriptors from DMA memory at ACTIVATE_DEV, walks the rings by their generation bits,
//! sends frames and receives them into the driver's buffers.
//!
//! Device addresses are translated through the DMA windows the tests register: the tests
//! give the driver device addresses unlike the host addresses behind them, and an access
//! outside every window panics, so a driver that hands the device a CPU pointer (or any
//! stray address) fails loudly.
//!
//! Where QEMU is lax the fake is strict, so that the driver keeps to what the interface
//! promises everywhere: activation is refused for a misaligned table or ring, ring sizes
//! that are not multiples of 32, other than one queue each way, or an MTU out of range.

use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

use netdump_pci::fake::FakeConfigSpace;
use netdump_pci::{ConfigSpace, PciAddress, RegisterBlock, capability_id};

use crate::layout::{self, rxq, shared, txq};
use crate::regs::{self, cmd};

/// Where the fake function sits.
pub const ADDRESS: PciAddress = PciAddress::new(0, 4, 0);

/// The device state, shared between the driver's register handles and the test.
pub type Device = Rc<RefCell<FakeDevice>>;

/// A configuration space shared by several [`netdump_pci::PciDevice`]s (the OS's driver
/// and ours, in the takeover tests) and the test.
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

/// A vmxnet3 function as QEMU presents it and SeaBIOS leaves it: three memory BARs (BAR0
/// and BAR1 4 KiB of registers, BAR2 the MSI-X table), memory decode on, no bus
/// mastering, an MSI and an MSI-X capability (both off).
pub fn config_space() -> SharedConfig {
    let mut cfg = FakeConfigSpace::new();
    cfg.add_function(ADDRESS, crate::VENDOR_ID, 0x07B0)
        .set_class(0x02, 0x00, 0x00)
        .set_revision(1)
        .set_memory_bar32(0, 0xFEBF_0000, 0x1000, false)
        .set_memory_bar32(1, 0xFEBF_1000, 0x1000, false)
        .set_memory_bar32(2, 0xFEBF_2000, 0x2000, false)
        .set_command(0x0003)
        // MSI: 64-bit capable, off. MSI-X: 25 vectors (encoded 24), off.
        .add_capability(capability_id::MSI, &[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .add_capability(capability_id::MSI_X, &[24, 0x00, 0x02, 0, 0, 0, 0x02, 0x10, 0, 0]);
    SharedConfig(Rc::new(RefCell::new(cfg)))
}

/// Which register BAR a handle reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// BAR0, "pass-through": producer indices and interrupt masks.
    Pt,
    /// BAR1, "virtual device": revisions, DriverShared address, commands, MAC.
    Vd,
}

/// A ring as the device tracks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    pub pa: u64,
    pub size: u32,
    pub next: u32,
    pub generation: u32,
    /// Times `next` wrapped (and the generation flipped).
    pub laps: u32,
}

impl Ring {
    fn new(pa: u64, size: u32) -> Self {
        Ring { pa, size, next: 0, generation: 1, laps: 0 }
    }

    fn slot(&self) -> u64 {
        self.pa + 16 * u64::from(self.next)
    }

    fn advance(&mut self) {
        self.next += 1;
        if self.next == self.size {
            self.next = 0;
            self.generation ^= 1;
            self.laps += 1;
        }
    }

    fn retreat(&mut self) {
        if self.next == 0 {
            self.next = self.size - 1;
            self.generation ^= 1;
            self.laps -= 1;
        } else {
            self.next -= 1;
        }
    }
}

/// What the device read from DriverShared and the queue descriptors at activation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub shared_pa: u64,
    pub driver_version: u32,
    pub gos: u32,
    pub rev_supported: u32,
    pub upt_supported: u32,
    pub features: u64,
    pub queue_desc_pa: u64,
    pub queue_desc_len: u32,
    pub mtu: u32,
    pub max_rx_sg: u16,
    pub num_tx_queues: u8,
    pub num_rx_queues: u8,
    pub auto_mask: u8,
    pub num_intrs: u8,
    pub event_intr: u8,
    pub intr_ctrl: u32,
    pub rx_mode: u32,
    pub vlan0: bool,
    pub tx_ring: (u64, u32),
    pub tx_data: (u64, u32),
    pub tx_comp: (u64, u32),
    pub tx_intr: u8,
    pub rx_ring0: (u64, u32),
    pub rx_ring1: (u64, u32),
    pub rx_comp: (u64, u32),
    pub rx_intr: u8,
}

/// One DMA window: `len` bytes the device sees at `phys` and the host has at `host`.
struct Window {
    phys: u64,
    len: usize,
    host: *mut u8,
}

pub struct FakeDevice {
    windows: Vec<Window>,
    pub perm_mac: [u8; 6],
    /// The current station address (MACL/MACH; the permanent one again at activation).
    pub mac: [u8; 6],
    /// The device answers GET_PERM_MAC_* (false: with zeros).
    pub perm_mac_command: bool,
    pub link_up: bool,
    /// Every register reads all ones (the device fell off the bus).
    pub gone: bool,
    /// QUIESCE_DEV and RESET_DEV results never read 0.
    pub reset_sticks: bool,
    /// ACTIVATE_DEV fails whatever DriverShared says.
    pub refuse_activation: bool,
    /// What VRRS and UVRS report.
    pub vrrs: u32,
    pub uvrs: u32,
    /// What the driver selected by writing them.
    pub vrrs_selected: Option<u32>,
    pub uvrs_selected: Option<u32>,
    /// Transmit on every TXPROD write, as QEMU does (false: only in `complete_tx`).
    pub auto_tx: bool,
    /// Set `ctrl.updateRxProd` in the receive queue descriptor at activation.
    pub wants_rx_prod: bool,
    pub active: bool,
    dsal: u32,
    pub drv_shmem: u64,
    last_command: u32,
    temp_macl: u32,
    /// Interrupt line masks (true: masked); all masked after a reset.
    pub masked: [bool; regs::MAX_INTRS],
    /// Interrupts the device raised on an unmasked line.
    pub interrupts: usize,
    pub config: Option<Config>,
    pub tx: Ring,
    pub tx_comp: Ring,
    pub rx0: Ring,
    pub rx1: Ring,
    pub rx_comp: Ring,
    /// The frame being gathered from transmit descriptors.
    tx_packet: Vec<u8>,
    /// Frames the device has sent.
    pub sent: Vec<Vec<u8>>,
    /// Frames dropped by the receive filter.
    pub filtered: usize,
    /// Register writes, in order.
    pub writes: Vec<(Bar, usize, u32)>,
    /// Activations that succeeded.
    pub activations: usize,
}

impl FakeDevice {
    pub fn new(mac: [u8; 6]) -> Device {
        Rc::new(RefCell::new(FakeDevice {
            windows: Vec::new(),
            perm_mac: mac,
            mac,
            perm_mac_command: true,
            link_up: true,
            gone: false,
            reset_sticks: false,
            refuse_activation: false,
            vrrs: regs::REVISION_1,
            uvrs: regs::REVISION_1,
            vrrs_selected: None,
            uvrs_selected: None,
            auto_tx: true,
            wants_rx_prod: false,
            active: false,
            dsal: 0,
            drv_shmem: 0,
            last_command: 0,
            temp_macl: 0,
            masked: [true; regs::MAX_INTRS],
            interrupts: 0,
            config: None,
            tx: Ring::default(),
            tx_comp: Ring::default(),
            rx0: Ring::default(),
            rx1: Ring::default(),
            rx_comp: Ring::default(),
            tx_packet: Vec::new(),
            sent: Vec::new(),
            filtered: 0,
            writes: Vec::new(),
            activations: 0,
        }))
    }

    /// Lets the device reach `len` bytes at device address `phys`, which the host has at
    /// `host` (leaked memory that lives for the rest of the test).
    pub fn map_dma(&mut self, phys: u64, len: usize, host: *mut u8) {
        self.windows.push(Window { phys, len, host });
    }

    /// The host pointer behind `len` bytes at device address `pa`.
    fn host(&self, pa: u64, len: usize) -> *mut u8 {
        for w in &self.windows {
            let end = w.phys + w.len as u64;
            if pa >= w.phys && pa.checked_add(len as u64).is_some_and(|e| e <= end) {
                return w.host.wrapping_add((pa - w.phys) as usize);
            }
        }
        panic!("device DMA of {len} bytes at {pa:#x} outside every DMA window");
    }

    pub fn dma_read(&self, pa: u64, buf: &mut [u8]) {
        let host = self.host(pa, buf.len());
        // SAFETY: `host` checked that the bytes lie in a registered window: leaked,
        // live, writable host memory. The driver accesses it concurrently only in the
        // sense a device would (single-threaded tests interleave, never overlap).
        unsafe { std::ptr::copy_nonoverlapping(host, buf.as_mut_ptr(), buf.len()) }
    }

    pub fn dma_write(&self, pa: u64, data: &[u8]) {
        let host = self.host(pa, data.len());
        // SAFETY: as in `dma_read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), host, data.len()) }
    }

    fn read_u8(&self, pa: u64) -> u8 {
        let mut b = [0; 1];
        self.dma_read(pa, &mut b);
        b[0]
    }

    fn read_u16(&self, pa: u64) -> u16 {
        let mut b = [0; 2];
        self.dma_read(pa, &mut b);
        u16::from_le_bytes(b)
    }

    pub fn read_u32(&self, pa: u64) -> u32 {
        let mut b = [0; 4];
        self.dma_read(pa, &mut b);
        u32::from_le_bytes(b)
    }

    fn read_u64(&self, pa: u64) -> u64 {
        let mut b = [0; 8];
        self.dma_read(pa, &mut b);
        u64::from_le_bytes(b)
    }

    fn write_u32(&self, pa: u64, value: u32) {
        self.dma_write(pa, &value.to_le_bytes());
    }

    /// Reads DriverShared and the queue descriptors and starts the queues, as QEMU's
    /// `vmxnet3_activate_device` does (plus the checks in the module documentation).
    fn activate(&mut self) {
        if self.active || self.refuse_activation || self.drv_shmem == 0 {
            return;
        }
        let s = self.drv_shmem;
        if self.read_u32(s + shared::MAGIC as u64) != layout::MAGIC {
            return;
        }
        let q = self.read_u64(s + shared::QUEUE_DESC_PA as u64);
        let r = q + layout::RX_QUEUE_DESC as u64;
        let c = Config {
            shared_pa: s,
            driver_version: self.read_u32(s + shared::DRIVER_VERSION as u64),
            gos: self.read_u32(s + shared::GOS as u64),
            rev_supported: self.read_u32(s + shared::REV_SUPPORTED as u64),
            upt_supported: self.read_u32(s + shared::UPT_SUPPORTED as u64),
            features: self.read_u64(s + shared::UPT_FEATURES as u64),
            queue_desc_pa: q,
            queue_desc_len: self.read_u32(s + shared::QUEUE_DESC_LEN as u64),
            mtu: self.read_u32(s + shared::MTU as u64),
            max_rx_sg: self.read_u16(s + shared::MAX_RX_SG as u64),
            num_tx_queues: self.read_u8(s + shared::NUM_TX_QUEUES as u64),
            num_rx_queues: self.read_u8(s + shared::NUM_RX_QUEUES as u64),
            auto_mask: self.read_u8(s + shared::AUTO_MASK as u64),
            num_intrs: self.read_u8(s + shared::NUM_INTRS as u64),
            event_intr: self.read_u8(s + shared::EVENT_INTR_IDX as u64),
            intr_ctrl: self.read_u32(s + shared::INTR_CTRL as u64),
            rx_mode: self.read_u32(s + shared::RX_MODE as u64),
            vlan0: self.read_u32(s + shared::VF_TABLE as u64) & 1 != 0,
            tx_ring: (self.read_u64(q + txq::RING_PA as u64), self.read_u32(q + txq::RING_SIZE as u64)),
            tx_data: (self.read_u64(q + txq::DATA_RING_PA as u64), self.read_u32(q + txq::DATA_RING_SIZE as u64)),
            tx_comp: (self.read_u64(q + txq::COMP_RING_PA as u64), self.read_u32(q + txq::COMP_RING_SIZE as u64)),
            tx_intr: self.read_u8(q + txq::INTR_IDX as u64),
            rx_ring0: (self.read_u64(r + rxq::RING0_PA as u64), self.read_u32(r + rxq::RING0_SIZE as u64)),
            rx_ring1: (self.read_u64(r + rxq::RING1_PA as u64), self.read_u32(r + rxq::RING1_SIZE as u64)),
            rx_comp: (self.read_u64(r + rxq::COMP_RING_PA as u64), self.read_u32(r + rxq::COMP_RING_SIZE as u64)),
            rx_intr: self.read_u8(r + rxq::INTR_IDX as u64),
        };
        let ring_ok = |(pa, size): (u64, u32), max: u32| {
            pa.is_multiple_of(layout::RING_ALIGN as u64) && size > 0 && size.is_multiple_of(32) && size <= max
        };
        let valid = c.num_tx_queues == 1
            && c.num_rx_queues == 1
            && (60..=9000).contains(&c.mtu)
            && q.is_multiple_of(layout::QUEUE_DESC_ALIGN as u64)
            && ring_ok(c.tx_ring, 4096)
            && ring_ok(c.tx_comp, 4096)
            && ring_ok(c.rx_ring0, 4096)
            && ring_ok(c.rx_ring1, 4096)
            && ring_ok(c.rx_comp, 8192)
            && c.num_intrs >= 1
            && c.event_intr < c.num_intrs
            && c.tx_intr < c.num_intrs
            && c.rx_intr < c.num_intrs;
        if !valid {
            return;
        }
        self.tx = Ring::new(c.tx_ring.0, c.tx_ring.1);
        self.tx_comp = Ring::new(c.tx_comp.0, c.tx_comp.1);
        self.rx0 = Ring::new(c.rx_ring0.0, c.rx_ring0.1);
        self.rx1 = Ring::new(c.rx_ring1.0, c.rx_ring1.1);
        self.rx_comp = Ring::new(c.rx_comp.0, c.rx_comp.1);
        // QEMU zeroes the completion rings (and only those).
        self.dma_write(c.tx_comp.0, &vec![0; 16 * c.tx_comp.1 as usize]);
        self.dma_write(c.rx_comp.0, &vec![0; 16 * c.rx_comp.1 as usize]);
        // Device-managed queue fields.
        self.write_u32(q + txq::THRESHOLD as u64, 1);
        if self.wants_rx_prod {
            self.dma_write(r + rxq::UPDATE_RX_PROD as u64, &[1]);
        }
        self.tx_packet.clear();
        self.config = Some(c);
        self.mac = self.perm_mac;
        self.active = true;
        self.activations += 1;
    }

    /// Deactivation (QUIESCE_DEV; RESET_DEV also forgets DriverShared and masks every
    /// interrupt).
    fn deactivate(&mut self, reset: bool) {
        self.active = false;
        self.tx_packet.clear();
        if reset {
            self.masked = [true; regs::MAX_INTRS];
            self.drv_shmem = 0;
        }
    }

    fn raise_interrupt(&mut self, line: u8) {
        if self.masked.get(usize::from(line)).is_some_and(|masked| !masked) {
            self.interrupts += 1;
        }
    }

    /// Sends up to `limit` frames from the transmit ring, writing a completion for each,
    /// as QEMU's `vmxnet3_process_tx_queue` does. Returns how many were sent.
    pub fn complete_tx(&mut self, limit: usize) -> usize {
        let mut sent = 0;
        if !self.active {
            return 0;
        }
        for _ in 0..self.tx.size {
            if sent == limit {
                break;
            }
            let d = self.tx.slot();
            let dword2 = self.read_u32(d + 8);
            if (dword2 >> 14) & 1 != self.tx.generation {
                break;
            }
            let dword3 = self.read_u32(d + 12);
            let addr = self.read_u64(d);
            let len = match dword2 & 0x3FFF {
                0 => 1 << 14,
                len => len as usize,
            };
            let mut data = vec![0; len];
            self.dma_read(addr, &mut data);
            self.tx_packet.extend_from_slice(&data);
            let index = self.tx.next;
            self.tx.advance();
            if dword3 & layout::txd::EOP != 0 {
                self.sent.push(std::mem::take(&mut self.tx_packet));
                self.write_tx_completion(index);
                let line = self.config.as_ref().map_or(0, |c| c.tx_intr);
                self.raise_interrupt(line);
                sent += 1;
            }
        }
        sent
    }

    /// Writes a transmit completion naming descriptor `index` (any value, to test bogus
    /// completions).
    pub fn write_tx_completion(&mut self, index: u32) {
        let slot = self.tx_comp.slot();
        self.write_u32(slot, index);
        self.write_u32(slot + 4, 0);
        self.write_u32(slot + 8, 0);
        self.write_u32(slot + 12, self.tx_comp.generation << 31);
        self.tx_comp.advance();
    }

    /// Writes a receive completion with these dwords 0 and 2 and the current generation
    /// (to test bogus completions).
    pub fn write_rx_completion(&mut self, dword0: u32, dword2: u32) {
        self.write_rx((self.rx_comp.slot(), dword0, dword2, self.rx_comp.generation));
        self.rx_comp.advance();
    }

    /// Whether the receive filter passes `frame` (QEMU's `vmxnet3_rx_filter_may_indicate`,
    /// untagged frames only).
    fn filter(&self, frame: &[u8]) -> bool {
        let mode = self.config.as_ref().map_or(0, |c| c.rx_mode);
        let dest = &frame[..6];
        if mode & layout::value::RXM_PROMISC != 0 {
            true
        } else if dest == [0xFF; 6] {
            mode & layout::value::RXM_BCAST != 0
        } else if dest[0] & 1 != 0 {
            false
        } else {
            mode & layout::value::RXM_UCAST != 0 && dest == self.mac
        }
    }

    /// Receives `frame` as QEMU does: padded to 60 bytes, filtered, then written into
    /// ring-0 head buffers, at most `maxNumRxSG` (1 if 0) of them; a frame that does not
    /// fit is truncated and its last completion marked bad. False when the device is not
    /// active, the filter drops the frame, or no buffer or completion slot is free.
    pub fn receive(&mut self, frame: &[u8]) -> bool {
        let frags = self.config.as_ref().map_or(1, |c| c.max_rx_sg.max(1)) as usize;
        self.indicate(frame, frags, usize::MAX, false)
    }

    /// As [`receive`](Self::receive), with the error bit set on the frame's completion.
    pub fn receive_bad(&mut self, frame: &[u8]) -> bool {
        self.indicate(frame, 1, usize::MAX, true)
    }

    /// As [`receive`](Self::receive), but spread over buffers of at most `chunk` bytes
    /// (what a device does with a larger `maxNumRxSG`, whatever the driver asked).
    pub fn receive_split(&mut self, frame: &[u8], chunk: usize) -> bool {
        self.indicate(frame, usize::MAX, chunk, false)
    }

    fn indicate(&mut self, frame: &[u8], max_frags: usize, chunk_limit: usize, bad: bool) -> bool {
        if !self.active || !self.link_up {
            return false;
        }
        let mut data = frame.to_vec();
        if data.len() < 60 {
            data.resize(60, 0);
        }
        if !self.filter(&data) {
            self.filtered += 1;
            return false;
        }
        let mut copied = 0;
        let mut frags = 0;
        // The completion being built (slot, dword 0, dword 2, generation), written once
        // the next one is known or at the end, as QEMU does.
        let mut pending: Option<(u64, u32, u32, u32)> = None;
        while copied < data.len() && frags < max_frags {
            // A completion slot, then a head buffer (QEMU's order, and its undo).
            let slot = self.rx_comp.slot();
            if (self.read_u32(slot + 12) >> 31) == self.rx_comp.generation {
                break;
            }
            let generation = self.rx_comp.generation;
            self.rx_comp.advance();
            let d = self.rx0.slot();
            let dword2 = self.read_u32(d + 8);
            if dword2 >> 31 != self.rx0.generation {
                self.rx_comp.retreat();
                break;
            }
            assert_eq!((dword2 >> 14) & 1, 0, "the driver arms head buffers only");
            let addr = self.read_u64(d);
            let chunk = (data.len() - copied).min((dword2 & 0x3FFF) as usize).min(chunk_limit);
            self.dma_write(addr, &data[copied..copied + chunk]);
            if let Some(previous) = pending.take() {
                self.write_rx(previous);
            }
            let sop = if frags == 0 { layout::rcd::SOP } else { 0 };
            pending = Some((slot, self.rx0.next | sop, chunk as u32, generation));
            self.rx0.advance();
            copied += chunk;
            frags += 1;
        }
        let Some((slot, dword0, mut dword2, generation)) = pending else {
            return false;
        };
        if copied < data.len() || bad {
            dword2 |= layout::rcd::ERR;
        }
        self.write_rx((slot, dword0 | layout::rcd::EOP, dword2, generation));
        let line = self.config.as_ref().map_or(0, |c| c.rx_intr);
        self.raise_interrupt(line);
        copied == data.len()
    }

    /// Writes a receive completion: dwords 0 and 2, type 3 (`VMXNET3_CDTYPE_RXCOMP`) and
    /// the generation last.
    fn write_rx(&self, (slot, dword0, dword2, generation): (u64, u32, u32, u32)) {
        self.write_u32(slot, dword0);
        self.write_u32(slot + 4, 0);
        self.write_u32(slot + 8, dword2);
        self.write_u32(slot + 12, 3 << 24 | generation << 31);
    }

    fn command(&mut self, command: u32) {
        self.last_command = command;
        match command {
            cmd::ACTIVATE_DEV => self.activate(),
            cmd::QUIESCE_DEV => self.deactivate(false),
            cmd::RESET_DEV => self.deactivate(true),
            cmd::UPDATE_RX_MODE => {
                if let Some(s) = self.config.as_ref().map(|c| c.shared_pa) {
                    let mode = self.read_u32(s + shared::RX_MODE as u64);
                    if let Some(c) = self.config.as_mut() {
                        c.rx_mode = mode;
                    }
                }
            }
            _ => {}
        }
    }

    fn command_result(&self) -> u32 {
        let mac_lo = |m: [u8; 6]| u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        let mac_hi = |m: [u8; 6]| u32::from(u16::from_le_bytes([m[4], m[5]]));
        match self.last_command {
            cmd::ACTIVATE_DEV => u32::from(!self.active),
            cmd::QUIESCE_DEV | cmd::RESET_DEV => u32::from(self.reset_sticks),
            cmd::GET_LINK if self.link_up => 1000 << 16 | regs::LINK_UP,
            cmd::GET_PERM_MAC_LO if self.perm_mac_command => mac_lo(self.perm_mac),
            cmd::GET_PERM_MAC_HI if self.perm_mac_command => mac_hi(self.perm_mac),
            _ => 0,
        }
    }

    fn write(&mut self, bar: Bar, offset: usize, value: u32) {
        self.writes.push((bar, offset, value));
        match bar {
            // QEMU drops every BAR0 write while the device is not active.
            Bar::Pt if !self.active => {}
            Bar::Pt => match offset {
                regs::TXPROD if self.auto_tx => {
                    self.complete_tx(usize::MAX);
                }
                o if o < regs::MAX_INTRS * regs::REG_ALIGN && o.is_multiple_of(regs::REG_ALIGN) => {
                    self.masked[o / regs::REG_ALIGN] = value != 0;
                }
                _ => {}
            },
            Bar::Vd => match offset {
                regs::VRRS => self.vrrs_selected = Some(value),
                regs::UVRS => self.uvrs_selected = Some(value),
                regs::DSAL => {
                    if value == 0 {
                        self.deactivate(false);
                    }
                    self.dsal = value;
                    self.drv_shmem = 0;
                }
                regs::DSAH => self.drv_shmem = u64::from(self.dsal) | u64::from(value) << 32,
                regs::CMD => self.command(value),
                regs::MACL => self.temp_macl = value,
                regs::MACH => {
                    let [a, b, c, d] = self.temp_macl.to_le_bytes();
                    let [e, f, _, _] = value.to_le_bytes();
                    self.mac = [a, b, c, d, e, f];
                }
                _ => {}
            },
        }
    }

    fn read(&mut self, bar: Bar, offset: usize) -> u32 {
        if self.gone {
            return u32::MAX;
        }
        match (bar, offset) {
            (Bar::Pt, o) if o < regs::MAX_INTRS * regs::REG_ALIGN && o.is_multiple_of(regs::REG_ALIGN) => {
                u32::from(self.masked[o / regs::REG_ALIGN])
            }
            (Bar::Vd, regs::VRRS) => self.vrrs,
            (Bar::Vd, regs::UVRS) => self.uvrs,
            (Bar::Vd, regs::CMD) => self.command_result(),
            (Bar::Vd, regs::MACL) => u32::from_le_bytes([self.mac[0], self.mac[1], self.mac[2], self.mac[3]]),
            (Bar::Vd, regs::MACH) => u32::from(u16::from_le_bytes([self.mac[4], self.mac[5]])),
            _ => 0,
        }
    }
}

/// The driver's handle on one BAR of a [`FakeDevice`].
pub struct FakeRegisters {
    pub device: Device,
    pub bar: Bar,
}

/// The device decodes 32-bit accesses only; a narrower one is a bug the tests should see.
impl RegisterBlock for FakeRegisters {
    fn len(&self) -> usize {
        4096
    }
    fn read_u8(&mut self, offset: usize) -> u8 {
        panic!("8-bit read at {offset:#x}")
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        panic!("16-bit read at {offset:#x}")
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4) && offset < 4096, "read at {offset:#x}");
        self.device.borrow_mut().read(self.bar, offset)
    }
    fn write_u8(&mut self, offset: usize, _: u8) {
        panic!("8-bit write at {offset:#x}")
    }
    fn write_u16(&mut self, offset: usize, _: u16) {
        panic!("16-bit write at {offset:#x}")
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        assert!(offset.is_multiple_of(4) && offset < 4096, "write at {offset:#x}");
        self.device.borrow_mut().write(self.bar, offset, value)
    }
}
