//! The virtio-mmio transport (virtio 1.2, 4.2): one register block per device, no PCI.
//! Version 2 is the virtio 1.x ("modern") register layout; version 1 is the legacy one
//! (4.2.4), which QEMU's `virtio-mmio` still presents by default (`force-legacy=true`).
//! Both are driven; the queue code is the same as on PCI (the legacy ring layout, which
//! both versions accept).

use netdump_pci::RegisterBlock;

use super::{DeviceStatus, QueueError, QueueRings, Transport};
use crate::features::{Features, Interface};
use crate::layout::{PAGE, legacy_used_offset};

/// Register offsets (4.2.2; the legacy-only ones from 4.2.4). Every register is 32 bits
/// wide and must be accessed with aligned 32-bit accesses (4.2.2.2); only the device
/// configuration at [`CONFIG`](reg::CONFIG) takes narrower ones.
mod reg {
    /// "virt" in little-endian: 0x74726976.
    pub const MAGIC_VALUE: usize = 0x000;
    /// 2 (virtio 1.x) or 1 (legacy).
    pub const VERSION: usize = 0x004;
    /// The virtio device type; 0 is an empty transport slot.
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00C;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    /// Write-only.
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    /// Legacy only: the page size QueuePFN counts in.
    pub const GUEST_PAGE_SIZE: usize = 0x028;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    /// Write-only: the size the driver chose.
    pub const QUEUE_NUM: usize = 0x038;
    /// Legacy only: the used ring's alignment.
    pub const QUEUE_ALIGN: usize = 0x03C;
    /// Legacy only: the queue's first page number; 0 disables it.
    pub const QUEUE_PFN: usize = 0x040;
    /// Version 2 only.
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    /// Version 2 only, write-only, as low/high 32-bit halves.
    pub const QUEUE_DESC: usize = 0x080;
    pub const QUEUE_DRIVER: usize = 0x090;
    pub const QUEUE_DEVICE: usize = 0x0A0;
    /// Version 2 only.
    pub const CONFIG_GENERATION: usize = 0x0FC;
    /// The device-specific configuration.
    pub const CONFIG: usize = 0x100;
}

/// The magic value every virtio-mmio device shows at offset 0.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// virtio-net's device ID (virtio 1.2, 5).
pub const NET_DEVICE_ID: u32 = 1;
/// Bytes of registers the driver uses: the control registers and virtio-net's
/// configuration (MAC, status, max queue pairs, MTU). QEMU's transports decode 0x200.
pub const MMIO_MIN_LEN: usize = reg::CONFIG + 12;

/// Why [`MmioTransport::new`] refused a register block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The block is shorter than [`MMIO_MIN_LEN`].
    TooShort,
    /// Every register reads all ones: nothing answers there.
    DeviceGone,
    /// No virtio-mmio magic value at offset 0.
    BadMagic(u32),
    /// A version other than 1 (legacy) or 2 (virtio 1.x).
    UnsupportedVersion(u32),
    /// Device ID 0: a transport slot with no device behind it (QEMU's microvm has 24).
    NoDevice,
    /// A virtio device of another type (2 is a block device, 3 a console, …).
    NotNetwork(u32),
}

impl core::fmt::Display for MmioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmioError::TooShort => write!(f, "virtio-mmio register block shorter than {MMIO_MIN_LEN:#x} bytes"),
            MmioError::DeviceGone => f.write_str("virtio-mmio registers read all ones"),
            MmioError::BadMagic(m) => write!(f, "no virtio-mmio magic value (read {m:#010x})"),
            MmioError::UnsupportedVersion(v) => write!(f, "virtio-mmio version {v} (1 and 2 supported)"),
            MmioError::NoDevice => f.write_str("empty virtio-mmio transport (device ID 0)"),
            MmioError::NotNetwork(id) => write!(f, "virtio-mmio device ID {id} is not a network device"),
        }
    }
}

/// A virtio-net device behind a virtio-mmio register block.
pub struct MmioTransport<R: RegisterBlock> {
    registers: R,
    interface: Interface,
    /// What the driver last wrote to DriverFeatures, which is write-only.
    driver_features: Features,
}

impl<R: RegisterBlock> MmioTransport<R> {
    /// The device whose registers `registers` covers (QEMU: 0x200 bytes; at least
    /// [`MMIO_MIN_LEN`]), after checking that it is a virtio-mmio virtio-net device of a
    /// version this driver speaks. Reads identification registers only: nothing changes
    /// until the driver resets the device.
    pub fn new(mut registers: R) -> Result<Self, MmioError> {
        if registers.len() < MMIO_MIN_LEN {
            return Err(MmioError::TooShort);
        }
        let magic = registers.read_u32(reg::MAGIC_VALUE);
        if magic == u32::MAX {
            return Err(MmioError::DeviceGone);
        }
        if magic != MMIO_MAGIC {
            return Err(MmioError::BadMagic(magic));
        }
        let interface = match registers.read_u32(reg::VERSION) {
            1 => Interface::Legacy,
            2 => Interface::Modern,
            other => return Err(MmioError::UnsupportedVersion(other)),
        };
        match registers.read_u32(reg::DEVICE_ID) {
            NET_DEVICE_ID => {}
            0 => return Err(MmioError::NoDevice),
            other => return Err(MmioError::NotNetwork(other)),
        }
        Ok(MmioTransport { registers, interface, driver_features: Features::empty() })
    }

    /// The register block, e.g. for a test that plays the OS driver.
    pub fn registers(&mut self) -> &mut R {
        &mut self.registers
    }

    /// The transport's version register: 1 (legacy) or 2.
    pub fn version(&mut self) -> u32 {
        self.registers.read_u32(reg::VERSION)
    }

    /// The vendor ID register (QEMU: 0x554D4551, "QEMU").
    pub fn vendor_id(&mut self) -> u32 {
        self.registers.read_u32(reg::VENDOR_ID)
    }

    /// Pending interrupt causes (bit 0 used buffer, bit 1 configuration change).
    pub fn interrupt_status(&mut self) -> u32 {
        self.registers.read_u32(reg::INTERRUPT_STATUS)
    }

    /// Queue `index`'s state as the device reports it: enabled (QueueReady on version 2,
    /// a non-zero QueuePFN on version 1).
    pub fn queue_enabled(&mut self, index: u16) -> bool {
        self.registers.write_u32(reg::QUEUE_SEL, u32::from(index));
        match self.interface {
            Interface::Modern => self.registers.read_u32(reg::QUEUE_READY) != 0,
            Interface::Legacy => self.registers.read_u32(reg::QUEUE_PFN) != 0,
        }
    }

    fn write_u64(&mut self, offset: usize, value: u64) {
        self.registers.write_u32(offset, value as u32);
        self.registers.write_u32(offset + 4, (value >> 32) as u32);
    }

    /// Version 2's queue setup (4.2.3.2): size, the three addresses, QueueReady.
    fn set_up_modern(&mut self, rings: QueueRings) -> Result<(), QueueError> {
        if !rings.descriptors.is_multiple_of(16) || !rings.driver.is_multiple_of(2) || !rings.device.is_multiple_of(4) {
            return Err(QueueError::BadLayout);
        }
        // After the reset it must read 0 (4.2.3.2 step 2); a device that still has the
        // queue enabled did not reset.
        if self.registers.read_u32(reg::QUEUE_READY) != 0 {
            return Err(QueueError::NotAccepted);
        }
        self.registers.write_u32(reg::QUEUE_NUM, u32::from(rings.size));
        self.write_u64(reg::QUEUE_DESC, rings.descriptors);
        self.write_u64(reg::QUEUE_DRIVER, rings.driver);
        self.write_u64(reg::QUEUE_DEVICE, rings.device);
        self.registers.write_u32(reg::QUEUE_READY, 1);
        // The size and addresses are write-only; QueueReady is the one that reads back.
        if self.registers.read_u32(reg::QUEUE_READY) != 1 {
            return Err(QueueError::NotAccepted);
        }
        Ok(())
    }

    /// Version 1's queue setup (4.2.4.3): size, alignment and page number of the legacy
    /// layout, pages of [`PAGE`] bytes.
    fn set_up_legacy(&mut self, rings: QueueRings) -> Result<(), QueueError> {
        let size = u64::from(rings.size);
        if !rings.descriptors.is_multiple_of(PAGE as u64)
            || rings.driver != rings.descriptors + 16 * size
            || rings.device != rings.descriptors + legacy_used_offset(rings.size) as u64
        {
            return Err(QueueError::BadLayout);
        }
        let pfn = u32::try_from(rings.descriptors / PAGE as u64).map_err(|_| QueueError::AddressTooHigh)?;
        if pfn == 0 {
            // Page 0 would read as "queue disabled".
            return Err(QueueError::AddressTooHigh);
        }
        self.registers.write_u32(reg::GUEST_PAGE_SIZE, PAGE as u32);
        self.registers.write_u32(reg::QUEUE_NUM, u32::from(rings.size));
        self.registers.write_u32(reg::QUEUE_ALIGN, PAGE as u32);
        self.registers.write_u32(reg::QUEUE_PFN, pfn);
        if self.registers.read_u32(reg::QUEUE_PFN) != pfn {
            return Err(QueueError::NotAccepted);
        }
        Ok(())
    }
}

impl<R: RegisterBlock> Transport for MmioTransport<R> {
    fn interface(&self) -> Interface {
        self.interface
    }

    fn is_present(&mut self) -> bool {
        self.registers.read_u32(reg::MAGIC_VALUE) == MMIO_MAGIC
    }

    /// Nothing to switch on, and no interrupt to switch off at the transport: the device's
    /// line goes to an interrupt controller input the crash path never unmasks. Pending
    /// causes are acknowledged (the reset clears them too), so that a level-triggered line
    /// a dying OS left asserted drops.
    fn take_over(&mut self) {
        let pending = self.interrupt_status();
        if pending != 0 && pending != u32::MAX {
            self.registers.write_u32(reg::INTERRUPT_ACK, pending);
        }
    }

    /// No bus mastering to grant: a virtio-mmio device reaches memory whenever its queues
    /// are ready.
    fn enable_dma(&mut self) {}

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.registers.read_u32(reg::STATUS) as u8)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        if status.is_empty() {
            self.driver_features = Features::empty();
        }
        self.registers.write_u32(reg::STATUS, u32::from(status.bits()))
    }

    /// Both halves (a legacy device shows 0 in the upper one).
    fn device_features(&mut self) -> Features {
        let mut bits = 0u64;
        for half in 0..2u32 {
            self.registers.write_u32(reg::DEVICE_FEATURES_SEL, half);
            bits |= u64::from(self.registers.read_u32(reg::DEVICE_FEATURES)) << (32 * half);
        }
        Features::from_bits_retain(bits)
    }

    /// DriverFeatures is write-only on virtio-mmio: what this transport last wrote since
    /// the last reset.
    fn driver_features(&mut self) -> Features {
        self.driver_features
    }

    fn set_driver_features(&mut self, features: Features) {
        for half in 0..2u32 {
            self.registers.write_u32(reg::DRIVER_FEATURES_SEL, half);
            self.registers.write_u32(reg::DRIVER_FEATURES, (features.bits() >> (32 * half)) as u32);
        }
        self.driver_features = features;
    }

    fn config_generation(&mut self) -> u32 {
        match self.interface {
            Interface::Modern => self.registers.read_u32(reg::CONFIG_GENERATION),
            Interface::Legacy => 0,
        }
    }

    fn config_u8(&mut self, offset: usize) -> u8 {
        self.registers.read_u8(reg::CONFIG + offset)
    }

    fn config_u16(&mut self, offset: usize) -> u16 {
        self.registers.read_u16(reg::CONFIG + offset)
    }

    fn queue_max_size(&mut self, index: u16) -> u16 {
        self.registers.write_u32(reg::QUEUE_SEL, u32::from(index));
        // Sizes are 16-bit in the rings; a larger maximum is as good as 65535.
        self.registers.read_u32(reg::QUEUE_NUM_MAX).min(u32::from(u16::MAX)) as u16
    }

    /// Both versions let the driver choose the size (QueueNum).
    fn queue_size_fixed(&self) -> bool {
        false
    }

    fn set_up_queue(&mut self, index: u16, rings: QueueRings) -> Result<(), QueueError> {
        let max = self.queue_max_size(index);
        if max == 0 {
            return Err(QueueError::Absent);
        }
        if rings.size == 0 || rings.size > max || !rings.size.is_power_of_two() {
            return Err(QueueError::BadSize { requested: rings.size, max });
        }
        match self.interface {
            Interface::Modern => self.set_up_modern(rings),
            Interface::Legacy => self.set_up_legacy(rings),
        }
    }

    fn notify(&mut self, index: u16) {
        self.registers.write_u32(reg::QUEUE_NOTIFY, u32::from(index))
    }
}

/// A device announced on a kernel command line as `virtio_mmio.device=<size>@<base>:<irq>`
/// (Linux's `virtio_mmio` module parameter, which Firecracker and QEMU's microvm write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceSpec {
    /// Physical address of the register block.
    pub base: u64,
    /// Bytes the block decodes.
    pub size: u64,
    /// The interrupt line (never used by this driver).
    pub irq: u32,
}

impl MmioDeviceSpec {
    /// The command-line key.
    pub const CMDLINE_KEY: &'static str = "virtio_mmio.device";

    /// Parses the value of a `virtio_mmio.device=` word: `<size>@<base>:<irq>[:<id>]`,
    /// the size with an optional `K`, `M` or `G` suffix, numbers decimal or `0x` hex (as
    /// Linux's `memparse` and `kstrtoul` read them; the trailing platform device id is
    /// ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let (size, rest) = value.split_once('@')?;
        let (base, rest) = rest.split_once(':')?;
        let irq = rest.split(':').next()?;
        let (digits, shift) = match size.as_bytes().last()? {
            b'k' | b'K' => (&size[..size.len() - 1], 10),
            b'm' | b'M' => (&size[..size.len() - 1], 20),
            b'g' | b'G' => (&size[..size.len() - 1], 30),
            _ => (size, 0),
        };
        let size = number(digits)?.checked_mul(1 << shift)?;
        let base = number(base)?;
        let irq = u32::try_from(number(irq)?).ok()?;
        if size == 0 || base.checked_add(size).is_none() {
            return None;
        }
        Some(MmioDeviceSpec { base, size, irq })
    }
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
