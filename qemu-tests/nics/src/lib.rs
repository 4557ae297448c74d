//! The NICs the QEMU test kernels (`qemu-tests/kernel`, `qemu-tests/nic-conformance`)
//! drive. [`bring_up`] finds the first supported controller on the PCI bus, an e1000 or a
//! virtio-net (legacy or modern interface), and builds its driver from static DMA memory,
//! the way an integrator does; [`Nic`] is either driver behind one `PolledNic`.
//!
//! The boot runtime identity-maps the first 4 GiB ([`IDENTITY_MAP_END`]), where SeaBIOS
//! assigns every BAR, so a register block's virtual address is its physical address;
//! anything outside is refused rather than touched.
#![no_std]

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use netdump_core::nic::{NicError, PolledNic};
use netdump_e1000::{E1000, MmioRegisters};
use netdump_pci::{Command, DmaRegion, MmioBlock, PciAddress, PciDevice, PciFunction, PortBlock, PortConfigSpace};
use netdump_qemu_runtime::IDENTITY_MAP_END;
use netdump_virtio_net::{Interface, PciTransport, VirtioNet};

/// The e1000 driver: MMIO registers, port configuration space, 32 + 32 descriptors.
pub type E1000Nic = E1000<MmioRegisters, PortConfigSpace>;
/// The virtio-pci transport: legacy registers in I/O ports, modern ones in memory.
pub type VirtioTransport = PciTransport<PortConfigSpace, PortBlock, MmioBlock>;
/// The virtio-net driver: 32 + 32 buffers.
pub type VirtioNic = VirtioNet<VirtioTransport>;

/// Whichever supported NIC the machine has.
// The variants differ in size (the virtio transport carries its register blocks); there is
// no heap to box into, and the value lives once, in the installed client.
#[allow(clippy::large_enum_variant)]
pub enum Nic {
    E1000(E1000Nic),
    Virtio(VirtioNic),
}

impl Nic {
    /// What the NIC is, for reports: `e1000`, `virtio-net legacy`, `virtio-net modern`.
    pub fn kind(&self) -> &'static str {
        match self {
            Nic::E1000(_) => "e1000",
            Nic::Virtio(v) => match v.interface() {
                Interface::Legacy => "virtio-net legacy",
                Interface::Modern => "virtio-net modern",
            },
        }
    }

    pub fn pci(&mut self) -> &mut PciDevice<PortConfigSpace> {
        match self {
            Nic::E1000(n) => n.pci(),
            Nic::Virtio(n) => n.pci(),
        }
    }

    pub fn link_up(&mut self) -> bool {
        match self {
            Nic::E1000(n) => n.link_up(),
            Nic::Virtio(n) => n.link_up(),
        }
    }

    /// Lets the device compute UDP checksums where it can (e1000), from the next reset;
    /// off, the core computes them (`checksum_offload=off` on the test kernel's command
    /// line, for the bench's comparison).
    pub fn set_udp_checksum_offload(&mut self, on: bool) {
        if let Nic::E1000(n) = self {
            n.set_udp_checksum_offload(on);
        }
    }

    /// Frames handed to the device and not yet reclaimed.
    pub fn tx_in_flight(&self) -> usize {
        match self {
            Nic::E1000(n) => n.tx_in_flight(),
            Nic::Virtio(n) => n.tx_in_flight(),
        }
    }
}

impl PolledNic for Nic {
    fn mac_address(&self) -> [u8; 6] {
        match self {
            Nic::E1000(n) => n.mac_address(),
            Nic::Virtio(n) => n.mac_address(),
        }
    }
    fn mtu(&self) -> usize {
        match self {
            Nic::E1000(n) => n.mtu(),
            Nic::Virtio(n) => n.mtu(),
        }
    }
    fn reset(&mut self) -> Result<(), NicError> {
        match self {
            Nic::E1000(n) => n.reset(),
            Nic::Virtio(n) => n.reset(),
        }
    }
    fn udp_checksum_offload(&self) -> bool {
        match self {
            Nic::E1000(n) => n.udp_checksum_offload(),
            Nic::Virtio(n) => n.udp_checksum_offload(),
        }
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        match self {
            Nic::E1000(n) => n.transmit(len, fill),
            Nic::Virtio(n) => n.transmit(len, fill),
        }
    }
    fn poll_transmit(&mut self) -> usize {
        match self {
            Nic::E1000(n) => n.poll_transmit(),
            Nic::Virtio(n) => n.poll_transmit(),
        }
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        match self {
            Nic::E1000(n) => n.poll_receive(handler),
            Nic::Virtio(n) => n.poll_receive(handler),
        }
    }
}

/// Where a driver's registers are.
#[derive(Debug, Clone, Copy)]
pub enum Registers {
    /// A memory BAR (the e1000's BAR0).
    Memory { bar: usize, base: u64, size: u64 },
    /// An I/O BAR (legacy virtio-net's BAR0).
    Ports { bar: usize, port: u32, size: u64 },
    /// Modern virtio structures: common, notification and device configuration.
    Structures([(u64, usize); 3]),
}

/// What discovery found, for the report.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    /// The command register as the firmware left it.
    pub command: Command,
    pub registers: Registers,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x} at {}, ", self.vendor_id, self.device_id, self.address)?;
        match self.registers {
            Registers::Memory { bar, base, size } => write!(f, "BAR{bar} {base:#x} ({} KiB)", size / 1024)?,
            Registers::Ports { bar, port, size } => write!(f, "I/O BAR{bar} port {port:#x} ({size} ports)")?,
            Registers::Structures([common, notify, device]) => write!(
                f,
                "common {:#x}+{:#x}, notify {:#x}+{:#x}, device {:#x}+{:#x}",
                common.0, common.1, notify.0, notify.1, device.0, device.1
            )?,
        }
        let bus_master = self.command.contains(Command::BUS_MASTER);
        write!(
            f,
            ", firmware command {:#06x} (bus master {})",
            self.command.bits(),
            if bus_master { "on" } else { "off" }
        )
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// DMA memory for whichever driver is brought up.
const DMA_SIZE: usize = max(E1000Nic::DMA_SIZE, VirtioNic::DMA_SIZE);

#[repr(C, align(4096))]
struct DmaMemory([u8; DMA_SIZE]);

/// The driver's rings and buffers, in `.bss`: identity-mapped, so physical == virtual.
static mut DMA: DmaMemory = DmaMemory([0; DMA_SIZE]);
static DMA_TAKEN: AtomicBool = AtomicBool::new(false);

/// The static DMA memory, once.
fn take_dma() -> Result<DmaRegion, &'static str> {
    if DMA_TAKEN.swap(true, Ordering::SeqCst) {
        return Err("the DMA memory is already in use");
    }
    let virt = NonNull::new((&raw mut DMA).cast::<u8>()).ok_or("DMA memory at address 0")?;
    // SAFETY: `DMA` is referenced only here, and DMA_TAKEN hands it out once, so the region
    // owns it; the kernel image is identity-mapped (physical == virtual); x86 DMA is
    // cache-coherent.
    Ok(unsafe { DmaRegion::new(virt, virt.as_ptr() as u64, DMA_SIZE) })
}

/// Whether `base..base + len` lies inside the identity map.
fn mapped(base: u64, len: u64) -> bool {
    base.checked_add(len).is_some_and(|end| end <= IDENTITY_MAP_END)
}

/// Finds the first supported NIC and builds its driver (not yet reset). Call once.
pub fn bring_up() -> Result<(Nic, Found), &'static str> {
    // SAFETY: the test kernels run on one CPU with interrupts off; nothing else uses the
    // configuration ports.
    let mut config = unsafe { PortConfigSpace::new() };
    let function = netdump_pci::enumerate(&mut config)
        .find(|f| {
            let id = (f.vendor_id, f.device_id);
            netdump_e1000::SUPPORTED_DEVICES.contains(&id) || netdump_virtio_net::SUPPORTED_DEVICES.contains(&id)
        })
        .ok_or("no e1000 or virtio-net on the PCI bus")?;
    let mut pci = PciDevice::new(config, function.address);
    let command = pci.command();
    if netdump_virtio_net::SUPPORTED_DEVICES.contains(&(function.vendor_id, function.device_id)) {
        bring_up_virtio(pci, &function, command)
    } else {
        bring_up_e1000(pci, &function, command)
    }
}

fn found(function: &PciFunction, command: Command, registers: Registers) -> Found {
    Found {
        address: function.address,
        vendor_id: function.vendor_id,
        device_id: function.device_id,
        command,
        registers,
    }
}

fn bring_up_e1000(
    mut pci: PciDevice<PortConfigSpace>,
    function: &PciFunction,
    command: Command,
) -> Result<(Nic, Found), &'static str> {
    let base = pci
        .bar(0)
        .map_err(|_| "e1000 BAR0 unreadable")?
        .and_then(|bar| bar.memory_address())
        .ok_or("e1000 BAR0 is not an assigned memory BAR")?;
    let size = pci.bar_size(0).map_err(|_| "e1000 BAR0 cannot be sized")?;
    if size < MmioRegisters::SIZE as u64 || !mapped(base, size) {
        return Err("e1000 BAR0 too small or outside the identity map");
    }
    let pointer = NonNull::new(base as *mut u8).ok_or("e1000 BAR0 at address 0")?;
    // SAFETY: BAR0 is inside the runtime's identity map (checked above) and covers the
    // 128 KiB register window; this driver is its only user. (TCG ignores cacheability;
    // on hardware the PCI hole is uncached by the firmware's MTRRs.)
    let registers = unsafe { MmioRegisters::new(pointer) };
    let nic = E1000Nic::new(registers, pci, take_dma()?).map_err(|e| match e {
        netdump_e1000::InitError::Dma(_) => "e1000 DMA region rejected",
        netdump_e1000::InitError::DeviceGone => "e1000 not responding",
        netdump_e1000::InitError::NoMacAddress => "e1000 has no MAC address",
    })?;
    let registers = Registers::Memory { bar: 0, base, size };
    Ok((Nic::E1000(nic), found(function, command, registers)))
}

fn bring_up_virtio(
    pci: PciDevice<PortConfigSpace>,
    function: &PciFunction,
    command: Command,
) -> Result<(Nic, Found), &'static str> {
    let mut ports = None;
    let mut structures = [(0, 0); 3];
    let mut mapped_count = 0;
    let transport = VirtioTransport::probe(
        pci,
        |port, len| {
            let base = u16::try_from(port).ok()?;
            let count = u16::try_from(len).ok()?;
            ports = Some((port, len));
            // SAFETY: these are the ports the function's I/O BAR0 decodes (the transport
            // read and sized it), and this driver is their only user.
            Some(unsafe { PortBlock::new(base, count) })
        },
        |phys, len| {
            if !mapped(phys, len as u64) || !phys.is_multiple_of(4) {
                return None;
            }
            if let Some(slot) = structures.get_mut(mapped_count) {
                *slot = (phys, len);
            }
            mapped_count += 1;
            let pointer = NonNull::new(phys as *mut u8)?;
            // SAFETY: the structure lies in one of the function's memory BARs (the
            // transport found it through its capability), inside the identity map (checked
            // above), 4-byte aligned; this driver is its only user.
            Some(unsafe { MmioBlock::new(pointer, len) })
        },
    )
    .map_err(|e| match e {
        netdump_virtio_net::ProbeError::DeviceGone => "virtio-net not responding",
        netdump_virtio_net::ProbeError::NoInterface => "virtio-net offers no usable interface",
        netdump_virtio_net::ProbeError::UnmappedPorts => "virtio-net I/O BAR unusable",
        _ => "virtio-net modern structures missing or outside the identity map",
    })?;
    let registers = match ports {
        Some((port, size)) if matches!(transport, PciTransport::Legacy(_)) => Registers::Ports { bar: 0, port, size },
        _ => Registers::Structures(structures),
    };
    let nic = VirtioNic::new(transport, take_dma()?).map_err(|e| match e {
        netdump_virtio_net::InitError::Dma(_) => "virtio-net DMA region rejected",
        netdump_virtio_net::InitError::DeviceGone => "virtio-net not responding",
        netdump_virtio_net::InitError::NoMacAddress => "virtio-net offers no MAC address",
        netdump_virtio_net::InitError::NoVersion1 => "modern virtio-net without VERSION_1",
        netdump_virtio_net::InitError::QueueAbsent { .. } => "virtio-net queue missing",
        netdump_virtio_net::InitError::QueueSizeUnusable { .. } => "virtio-net queue size unusable",
    })?;
    Ok((Nic::Virtio(nic), found(function, command, registers)))
}
