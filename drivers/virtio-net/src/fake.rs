//! A fake virtio-net device for host tests, behind both virtio-pci interfaces (its legacy
//! I/O registers, its modern common/notify/device structures and its PCI configuration
//! space) and behind a virtio-mmio register block (version 2 or legacy version 1, as
//! QEMU's `virtio-mmio` presents them), plus a device model that walks the split
//! virtqueues in test memory (at device addresses offset from the host's), as QEMU's
//! device does.
//!
//! Knobs make it misbehave the ways a test needs: completing out of order, holding
//! transmit completions back, refusing FEATURES_OK, a reset that never finishes, falling
//! off the bus.

use std::cell::RefCell;
use std::rc::Rc;
use std::vec::Vec;

use netdump_pci::fake::FakeConfigSpace;
use netdump_pci::{ConfigSpace, PciAddress, PciDevice, RegisterBlock, capability_id};

use crate::features::Features;
use crate::layout::legacy_used_offset;
use crate::transport::{DeviceStatus, NO_VECTOR};

pub const ADDRESS: PciAddress = PciAddress::new(0, 4, 0);
/// Where the fake's BARs are (never dereferenced: the fake blocks stand in for them).
pub const LEGACY_PORT: u16 = 0xC040;
pub const LEGACY_PORTS: u16 = 64;
pub const MODERN_BAR: u64 = 0xFE00_0000;
/// QEMU's layout of BAR4: one 4 KiB page per structure.
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;

/// Configuration space shared between the driver's `PciDevice` and the fake device, which
/// looks at it to place its legacy device configuration (it moves with MSI-X).
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

/// The PCI function of a legacy-only device (QEMU's `disable-modern=on`): 1af4:1000, I/O
/// BAR0, an MSI-X capability, no virtio capabilities. Command register as SeaBIOS leaves
/// it: decoding on, bus mastering off.
pub fn legacy_function() -> SharedConfig {
    let mut cfg = FakeConfigSpace::new();
    cfg.add_function(ADDRESS, 0x1AF4, 0x1000)
        .set_class(0x02, 0x00, 0x00)
        .set_io_bar(0, LEGACY_PORT, LEGACY_PORTS)
        .set_memory_bar32(1, 0xFEB0_0000, 0x1000, false)
        .set_command(0x0003)
        .add_capability(capability_id::MSI_X, &[0x02, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0]);
    SharedConfig(Rc::new(RefCell::new(cfg)))
}

/// A `virtio_pci_cap` body (after the ID and next pointer) for a structure in BAR4.
fn virtio_cap(kind: u8, offset: u64, length: u32, multiplier: Option<u32>) -> Vec<u8> {
    let len = if multiplier.is_some() { 20 } else { 16 };
    let mut body = vec![len, kind, 4, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    if let Some(m) = multiplier {
        body.extend_from_slice(&m.to_le_bytes());
    }
    body
}

/// The PCI function of a modern device: `device_id` (0x1041 modern-only, 0x1000
/// transitional, which also gets the legacy I/O BAR0), 64-bit BAR4 with QEMU's four
/// structures, MSI-X.
pub fn modern_function(device_id: u16) -> SharedConfig {
    let mut cfg = FakeConfigSpace::new();
    let f = cfg.add_function(ADDRESS, 0x1AF4, device_id);
    f.set_class(0x02, 0x00, 0x00)
        .set_memory_bar32(1, 0xFEB0_0000, 0x1000, false)
        .set_memory_bar64(4, MODERN_BAR, 0x4000, true)
        .set_command(0x0003)
        .add_capability(capability_id::MSI_X, &[0x02, 0x00, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0])
        .add_capability(capability_id::VENDOR_SPECIFIC, &virtio_cap(1, COMMON_OFFSET, 0x1000, None))
        .add_capability(capability_id::VENDOR_SPECIFIC, &virtio_cap(3, ISR_OFFSET, 0x1000, None))
        .add_capability(capability_id::VENDOR_SPECIFIC, &virtio_cap(4, DEVICE_OFFSET, 0x1000, None))
        .add_capability(capability_id::VENDOR_SPECIFIC, &virtio_cap(2, NOTIFY_OFFSET, 0x1000, Some(NOTIFY_MULTIPLIER)));
    if device_id == 0x1000 {
        f.set_io_bar(0, LEGACY_PORT, LEGACY_PORTS);
    }
    SharedConfig(Rc::new(RefCell::new(cfg)))
}

/// One virtqueue as the device sees it.
#[derive(Debug, Clone, Copy)]
pub struct FakeQueue {
    pub max: u16,
    pub size: u16,
    pub descriptors: u64,
    pub driver: u64,
    pub device: u64,
    pub enabled: bool,
    pub vector: u16,
    pub pfn: u32,
    /// virtio-mmio version 1: the used ring's alignment (QueueAlign).
    pub align: u32,
    pub notify_off: u16,
    /// Next available entry the device will take.
    pub last_avail: u16,
    /// The used ring's index as the device last wrote it.
    pub used_idx: u16,
}

impl FakeQueue {
    fn new(max: u16, notify_off: u16) -> Self {
        FakeQueue {
            max,
            size: max,
            descriptors: 0,
            driver: 0,
            device: 0,
            enabled: false,
            vector: NO_VECTOR,
            pfn: 0,
            align: 4096,
            notify_off,
            last_avail: 0,
            used_idx: 0,
        }
    }
}

/// The device state, shared between the driver's register blocks and the test.
pub struct FakeDevice {
    pub pci: SharedConfig,
    pub offered: Features,
    pub mac: [u8; 6],
    pub link_up: bool,
    pub mtu: u16,
    /// FEATURES_OK is never accepted.
    pub refuse_features_ok: bool,
    /// The status never reads back 0 after a reset.
    pub reset_sticks: bool,
    /// Every register reads all ones, writes are lost.
    pub gone: bool,
    /// Transmit buffers are used as soon as the driver notifies (QEMU's behaviour).
    pub auto_complete_tx: bool,
    /// Used entries are published in reverse order of each processed batch.
    pub out_of_order: bool,
    /// The device sets NO_NOTIFY in its used rings (as QEMU does while busy).
    pub suppress_notifications: bool,
    pub status: u8,
    pub driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    queue_select: u16,
    pub queues: [FakeQueue; 2],
    pub config_vector: u16,
    pub config_generation: u8,
    /// Frames sent, without their headers, and the headers.
    pub sent: Vec<Vec<u8>>,
    pub sent_headers: Vec<Vec<u8>>,
    pub notifications: [usize; 2],
    pub resets: usize,
    /// virtio-mmio: the magic value, version (2 modern, 1 legacy) and device ID the
    /// registers show.
    pub mmio_magic: u32,
    pub mmio_version: u32,
    pub mmio_device_id: u32,
    /// virtio-mmio: InterruptStatus (bit 0 used buffer, bit 1 configuration change); set
    /// when the device publishes used entries the driver did not ask to be spared.
    pub interrupt_status: u32,
    /// virtio-mmio version 1: GuestPageSize.
    pub guest_page_size: u32,
    /// What to add to a physical address the driver programs to reach the memory in the
    /// test process (the tests give the driver low physical addresses, as a legacy device
    /// needs 32-bit page numbers, and host memory lives far higher).
    pub dma_offset: u64,
}

impl FakeDevice {
    pub fn new(pci: SharedConfig, offered: Features, mac: [u8; 6]) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(FakeDevice {
            pci,
            offered,
            mac,
            link_up: true,
            mtu: 1500,
            refuse_features_ok: false,
            reset_sticks: false,
            gone: false,
            auto_complete_tx: true,
            out_of_order: false,
            suppress_notifications: false,
            status: 0,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            queue_select: 0,
            queues: [FakeQueue::new(256, 0), FakeQueue::new(256, 1)],
            config_vector: NO_VECTOR,
            config_generation: 0,
            sent: Vec::new(),
            sent_headers: Vec::new(),
            notifications: [0; 2],
            resets: 0,
            mmio_magic: 0x7472_6976,
            mmio_version: 2,
            mmio_device_id: 1,
            interrupt_status: 0,
            guest_page_size: 0,
            dma_offset: 0,
        }))
    }

    /// A virtio-mmio device of `version` (2 modern, 1 legacy); its PCI function is a
    /// placeholder nothing looks at.
    pub fn mmio(version: u32, offered: Features, mac: [u8; 6]) -> Rc<RefCell<Self>> {
        let device = Self::new(legacy_function(), offered, mac);
        device.borrow_mut().mmio_version = version;
        device
    }

    /// Sets queue `index`'s maximum size (0: no such queue).
    pub fn set_queue_max(&mut self, index: usize, max: u16) {
        self.queues[index] = FakeQueue::new(max, index as u16);
    }

    /// The test-process address of device address `phys`.
    fn host(&self, phys: u64) -> u64 {
        phys.wrapping_add(self.dma_offset)
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.config_vector = NO_VECTOR;
        self.interrupt_status = 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            *q = FakeQueue::new(q.max, i as u16);
        }
        self.resets += 1;
    }

    fn is_modern(&self) -> bool {
        self.driver_features & Features::VERSION_1.bits() != 0
    }

    fn header_len(&self) -> usize {
        if self.is_modern() { 12 } else { 10 }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            // A reset that never happens leaves everything, status included, as it was.
            if !self.reset_sticks {
                self.reset();
            }
            return;
        }
        let mut value = value;
        let features_ok = DeviceStatus::FEATURES_OK.bits();
        if value & features_ok != 0 && self.status & features_ok == 0 {
            let accepted = Features::from_bits_retain(self.driver_features);
            let acceptable = !self.refuse_features_ok
                && self.offered.contains(accepted)
                && accepted.contains(Features::VERSION_1)
                && (!self.offered.contains(Features::ACCESS_PLATFORM) || accepted.contains(Features::ACCESS_PLATFORM));
            if !acceptable {
                value &= !features_ok;
            }
        }
        self.status = value;
    }

    fn device_config(&self, offset: usize, width: usize) -> u32 {
        let mut bytes = [0u8; 12];
        bytes[..6].copy_from_slice(&self.mac);
        bytes[6..8].copy_from_slice(&u16::from(self.link_up).to_le_bytes());
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        bytes[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        let mut value = 0u32;
        for i in 0..width {
            value |= u32::from(*bytes.get(offset + i).unwrap_or(&0)) << (8 * i);
        }
        value
    }

    fn selected(&mut self) -> Option<&mut FakeQueue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn legacy_config_offset(&self) -> usize {
        let mut pci = PciDevice::new(self.pci.clone(), ADDRESS);
        if pci.msi_x_enabled() { 0x18 } else { 0x14 }
    }

    fn legacy_read(&mut self, offset: usize, width: usize) -> u32 {
        let config = self.legacy_config_offset();
        match offset {
            0x00 => self.offered.bits() as u32,
            0x04 => self.driver_features as u32,
            0x08 => self.selected().map_or(0, |q| q.pfn),
            0x0C => self.selected().map_or(0, |q| u32::from(q.max)),
            0x0E => u32::from(self.queue_select),
            0x12 => u32::from(self.status),
            _ if offset >= config => self.device_config(offset - config, width),
            _ => 0,
        }
    }

    fn legacy_write(&mut self, offset: usize, value: u32) {
        match offset {
            0x04 => self.driver_features = u64::from(value),
            0x08 => {
                if let Some(q) = self.selected() {
                    q.pfn = value;
                    q.size = q.max;
                    q.descriptors = u64::from(value) * 4096;
                    q.driver = q.descriptors + 16 * u64::from(q.size);
                    q.device = q.descriptors + legacy_used_offset(q.size) as u64;
                    q.enabled = value != 0;
                }
            }
            0x0E => self.queue_select = value as u16,
            0x10 => self.notify(value as u16),
            0x12 => self.write_status(value as u8),
            _ => {}
        }
    }

    fn common_read(&mut self, offset: usize) -> u32 {
        match offset {
            0x00 => self.device_feature_select,
            0x04 => match self.device_feature_select {
                0 => self.offered.bits() as u32,
                1 => (self.offered.bits() >> 32) as u32,
                _ => 0,
            },
            0x08 => self.driver_feature_select,
            0x0C => match self.driver_feature_select {
                0 => self.driver_features as u32,
                1 => (self.driver_features >> 32) as u32,
                _ => 0,
            },
            0x10 => u32::from(self.config_vector),
            0x12 => 2,
            0x14 => u32::from(self.status),
            0x15 => u32::from(self.config_generation),
            0x16 => u32::from(self.queue_select),
            _ => {
                let Some(q) = self.selected().copied() else {
                    return 0;
                };
                match offset {
                    0x18 => u32::from(q.size),
                    0x1A => u32::from(q.vector),
                    0x1C => u32::from(q.enabled),
                    0x1E => u32::from(q.notify_off),
                    0x20 => q.descriptors as u32,
                    0x24 => (q.descriptors >> 32) as u32,
                    0x28 => q.driver as u32,
                    0x2C => (q.driver >> 32) as u32,
                    0x30 => q.device as u32,
                    0x34 => (q.device >> 32) as u32,
                    _ => 0,
                }
            }
        }
    }

    fn common_write(&mut self, offset: usize, value: u32) {
        let set_low = |field: &mut u64| *field = (*field & !0xFFFF_FFFF) | u64::from(value);
        let set_high = |field: &mut u64| *field = (*field & 0xFFFF_FFFF) | u64::from(value) << 32;
        match offset {
            0x00 => self.device_feature_select = value,
            0x08 => self.driver_feature_select = value,
            0x0C => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | u64::from(value),
                1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | u64::from(value) << 32,
                _ => {}
            },
            0x10 => self.config_vector = value as u16,
            0x14 => self.write_status(value as u8),
            0x16 => self.queue_select = value as u16,
            _ => {
                let Some(q) = self.selected() else { return };
                match offset {
                    0x18 => q.size = value as u16,
                    0x1A => q.vector = value as u16,
                    0x1C => q.enabled = value == 1,
                    0x20 => set_low(&mut q.descriptors),
                    0x24 => set_high(&mut q.descriptors),
                    0x28 => set_low(&mut q.driver),
                    0x2C => set_high(&mut q.driver),
                    0x30 => set_low(&mut q.device),
                    0x34 => set_high(&mut q.device),
                    _ => {}
                }
            }
        }
    }

    /// A virtio-mmio register read, as QEMU answers it: write-only registers and the
    /// other version's registers read 0.
    fn mmio_read(&mut self, offset: usize, width: usize) -> u32 {
        let legacy = self.mmio_version == 1;
        if offset >= 0x100 {
            return self.device_config(offset - 0x100, width);
        }
        match offset {
            0x000 => self.mmio_magic,
            0x004 => self.mmio_version,
            0x008 => self.mmio_device_id,
            0x00C => 0x554D_4551,
            0x010 => match (self.device_feature_select, legacy) {
                (0, _) => self.offered.bits() as u32,
                (1, false) => (self.offered.bits() >> 32) as u32,
                _ => 0,
            },
            0x034 => self.selected().map_or(0, |q| u32::from(q.max)),
            0x040 if legacy => self.selected().map_or(0, |q| q.pfn),
            0x044 if !legacy => self.selected().map_or(0, |q| u32::from(q.enabled)),
            0x060 => self.interrupt_status,
            0x070 => u32::from(self.status),
            0x0FC if !legacy => u32::from(self.config_generation),
            _ => 0,
        }
    }

    fn mmio_write(&mut self, offset: usize, value: u32) {
        let legacy = self.mmio_version == 1;
        let set_low = |field: &mut u64| *field = (*field & !0xFFFF_FFFF) | u64::from(value);
        let set_high = |field: &mut u64| *field = (*field & 0xFFFF_FFFF) | u64::from(value) << 32;
        match offset {
            0x014 => self.device_feature_select = value,
            0x020 => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | u64::from(value),
                1 if !legacy => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | u64::from(value) << 32,
                _ => {}
            },
            0x024 => self.driver_feature_select = value,
            0x028 if legacy => self.guest_page_size = value,
            0x030 => self.queue_select = value as u16,
            0x050 => self.notify(value as u16),
            0x064 => self.interrupt_status &= !value,
            0x070 => self.write_status(value as u8),
            _ => {
                let page_size = u64::from(self.guest_page_size);
                let Some(q) = self.selected() else { return };
                match offset {
                    0x038 => q.size = value as u16,
                    0x03C if legacy => q.align = value,
                    0x040 if legacy => {
                        q.pfn = value;
                        q.descriptors = u64::from(value) * page_size;
                        q.driver = q.descriptors + 16 * u64::from(q.size);
                        let used = q.driver + 6 + 2 * u64::from(q.size);
                        q.device = used.div_ceil(u64::from(q.align.max(1))) * u64::from(q.align.max(1));
                        q.enabled = value != 0;
                    }
                    0x044 if !legacy => q.enabled = value == 1,
                    0x080 if !legacy => set_low(&mut q.descriptors),
                    0x084 if !legacy => set_high(&mut q.descriptors),
                    0x090 if !legacy => set_low(&mut q.driver),
                    0x094 if !legacy => set_high(&mut q.driver),
                    0x0A0 if !legacy => set_low(&mut q.device),
                    0x0A4 if !legacy => set_high(&mut q.device),
                    _ => {}
                }
            }
        }
    }

    fn notify(&mut self, queue: u16) {
        if let Some(count) = self.notifications.get_mut(usize::from(queue)) {
            *count += 1;
        }
        if queue == 1 && self.auto_complete_tx {
            self.process_tx(usize::MAX);
        }
    }

    fn running(&self, queue: usize) -> bool {
        self.status & DeviceStatus::DRIVER_OK.bits() != 0 && self.queues[queue].enabled
    }

    /// Reads a `T` at device address `phys`.
    pub fn load<T: Copy>(&self, phys: u64) -> T {
        // SAFETY: the driver programs only addresses of its DmaRegion, which the tests
        // create from leaked host memory at `phys + dma_offset`, live for the whole run;
        // ring fields are naturally aligned in it. A test that lets a broken driver program
        // other addresses would fault here, failing the test.
        unsafe { std::ptr::read_volatile(self.host(phys) as usize as *const T) }
    }

    /// Writes a `T` at device address `phys`.
    pub fn store<T>(&self, phys: u64, value: T) {
        // SAFETY: as for `load`; the device writes only what the driver gave it to write.
        unsafe { std::ptr::write_volatile(self.host(phys) as usize as *mut T, value) }
    }

    /// Copies `len` bytes at device address `phys` out of a buffer.
    fn load_bytes(&self, phys: u64, len: usize) -> Vec<u8> {
        // SAFETY: as for `load`: a buffer the driver handed over, live and at least `len`
        // bytes long (the driver's descriptor says so).
        unsafe { std::slice::from_raw_parts(self.host(phys) as usize as *const u8, len).to_vec() }
    }

    /// Copies `bytes` into a buffer at device address `phys`.
    fn store_bytes(&self, phys: u64, bytes: &[u8]) {
        // SAFETY: as for `store`: a device-writable buffer the driver handed over, at least
        // `bytes.len()` long (the caller keeps to the descriptor's length).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.host(phys) as usize as *mut u8, bytes.len()) }
    }

    /// The head of the next available buffer of `queue`, if the driver published one.
    fn take_available(&mut self, queue: usize) -> Option<u16> {
        let q = self.queues[queue];
        let avail_idx: u16 = self.load(q.driver + 2);
        if avail_idx == q.last_avail {
            return None;
        }
        let head = self.load(q.driver + 4 + 2 * u64::from(q.last_avail % q.size));
        self.queues[queue].last_avail = q.last_avail.wrapping_add(1);
        Some(head)
    }

    /// The chain starting at `head`: (address, length, device-writable) per descriptor.
    fn chain(&self, queue: usize, head: u16) -> Vec<(u64, usize, bool)> {
        let q = self.queues[queue];
        let mut parts = vec![];
        let mut index = head;
        for _ in 0..q.size {
            let d = q.descriptors + 16 * u64::from(index % q.size);
            let (addr, len, flags, next): (u64, u32, u16, u16) =
                (self.load(d), self.load(d + 8), self.load(d + 12), self.load(d + 14));
            parts.push((addr, len as usize, flags & 2 != 0));
            if flags & 1 == 0 {
                break;
            }
            index = next;
        }
        parts
    }

    /// Publishes used entries in the order given.
    fn publish_used(&mut self, queue: usize, entries: &[(u16, u32)]) {
        let mut q = self.queues[queue];
        for &(head, len) in entries {
            let at = q.device + 4 + 8 * u64::from(q.used_idx % q.size);
            self.store(at, u32::from(head));
            self.store(at + 4, len);
            q.used_idx = q.used_idx.wrapping_add(1);
        }
        self.store(q.device, u16::from(self.suppress_notifications));
        self.store(q.device + 2, q.used_idx);
        self.queues[queue] = q;
        // VIRTQ_AVAIL_F_NO_INTERRUPT spares the driver the used-buffer interrupt.
        if !entries.is_empty() && self.avail_flags(queue) & 1 == 0 {
            self.interrupt_status |= 1;
        }
    }

    /// Sends up to `limit` available frames; returns how many.
    pub fn process_tx(&mut self, limit: usize) -> usize {
        if !self.running(1) {
            return 0;
        }
        let header_len = self.header_len();
        let mut used = vec![];
        while used.len() < limit {
            let Some(head) = self.take_available(1) else {
                break;
            };
            let mut bytes = vec![];
            for (addr, len, _) in self.chain(1, head) {
                bytes.extend(self.load_bytes(addr, len));
            }
            let frame = bytes.split_off(header_len.min(bytes.len()));
            self.sent_headers.push(bytes);
            self.sent.push(frame);
            used.push((head, 0));
        }
        if self.out_of_order {
            used.reverse();
        }
        self.publish_used(1, &used);
        used.len()
    }

    /// Receives `frames` into as many available buffers, publishing the used entries in
    /// order (or reversed with `out_of_order`). Returns how many were received: frames
    /// beyond the available buffers are dropped, as by a device without buffers.
    pub fn receive_all(&mut self, frames: &[&[u8]]) -> usize {
        if !self.running(0) {
            return 0;
        }
        let header_len = self.header_len();
        let mut header = vec![0u8; header_len];
        if self.is_modern() {
            // num_buffers: always 1 without mergeable buffers.
            header[10] = 1;
        }
        let mut used = vec![];
        for frame in frames {
            let Some(head) = self.take_available(0) else {
                break;
            };
            let mut bytes = header.clone();
            bytes.extend_from_slice(frame);
            let mut written = 0;
            for (addr, len, writable) in self.chain(0, head) {
                if !writable {
                    continue;
                }
                let n = len.min(bytes.len() - written);
                self.store_bytes(addr, &bytes[written..written + n]);
                written += n;
            }
            used.push((head, written as u32));
        }
        if self.out_of_order {
            used.reverse();
        }
        self.publish_used(0, &used);
        used.len()
    }

    pub fn receive(&mut self, frame: &[u8]) -> bool {
        self.receive_all(&[frame]) == 1
    }

    /// Publishes a used entry naming `head` with `len` bytes, without touching a buffer
    /// (to play a broken device).
    pub fn publish_raw(&mut self, queue: usize, head: u16, len: u32) {
        self.publish_used(queue, &[(head, len)]);
    }

    /// The driver's avail ring flags of `queue`.
    pub fn avail_flags(&self, queue: usize) -> u16 {
        self.load(self.queues[queue].driver)
    }
}

/// Which of the device's register blocks a [`FakeBlock`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Legacy,
    Common,
    Notify,
    Device,
    /// A whole virtio-mmio register block.
    Mmio,
}

/// One register block of the fake device.
pub struct FakeBlock {
    pub device: Rc<RefCell<FakeDevice>>,
    pub part: Part,
}

impl FakeBlock {
    fn read(&mut self, offset: usize, width: usize) -> u32 {
        let mut d = self.device.borrow_mut();
        if d.gone {
            return u32::MAX >> (32 - 8 * width);
        }
        let value = match self.part {
            Part::Legacy => d.legacy_read(offset, width),
            Part::Common => d.common_read(offset),
            Part::Notify => 0,
            Part::Device => d.device_config(offset, width),
            // virtio-mmio's control registers take 32-bit accesses only (QEMU answers
            // others with 0).
            Part::Mmio if offset < 0x100 && width != 4 => 0,
            Part::Mmio => d.mmio_read(offset, width),
        };
        value & (u32::MAX >> (32 - 8 * width))
    }

    fn write(&mut self, offset: usize, value: u32, width: usize) {
        let mut d = self.device.borrow_mut();
        if d.gone {
            return;
        }
        match self.part {
            Part::Legacy => d.legacy_write(offset, value),
            Part::Common => d.common_write(offset, value),
            Part::Notify => d.notify(value as u16),
            Part::Device => {}
            Part::Mmio if offset < 0x100 && width != 4 => {}
            Part::Mmio => d.mmio_write(offset, value),
        }
    }
}

impl RegisterBlock for FakeBlock {
    fn len(&self) -> usize {
        match self.part {
            Part::Legacy => usize::from(LEGACY_PORTS),
            Part::Mmio => 0x200,
            _ => 0x1000,
        }
    }
    fn read_u8(&mut self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }
    fn read_u16(&mut self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    fn read_u32(&mut self, offset: usize) -> u32 {
        self.read(offset, 4)
    }
    fn write_u8(&mut self, offset: usize, value: u8) {
        self.write(offset, u32::from(value), 1)
    }
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.write(offset, u32::from(value), 2)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, value, 4)
    }
}
