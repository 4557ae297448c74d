//! The NICs the QEMU test kernels (`qemu-tests/kernel`, `qemu-tests/nic-conformance`)
//! drive. Each NIC configuration is a [`Port`] (in `ports/`: how to find the device, build
//! its driver from static DMA memory the way an integrator does, and the conformance
//! kernel's takeover hooks) and one line of `table.rs`, which generates [`Nic`] (every port
//! behind one `PolledNic`) and [`bring_up`] (the first port whose device is present).
//!
//! The boot runtime identity-maps the first 4 GiB ([`IDENTITY_MAP_END`]), where SeaBIOS
//! assigns every BAR, so a register block's virtual address is its physical address;
//! anything outside is refused rather than touched.
#![no_std]
// Check outcomes are fixed-size text on the stack (no allocator); their size is fine here.
#![allow(clippy::result_large_err)]

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use netdump_core::nic::{NicError, PolledNic};
use netdump_core::text::TextBuf;
use netdump_e1000::{E1000, MmioRegisters};
use netdump_pci::{Command, DmaRegion, MmioBlock, PciAddress, PciDevice, PciFunction, PortBlock, PortConfigSpace};
use netdump_qemu_runtime::{Cmdline, IDENTITY_MAP_END};
use netdump_virtio_net::{PciTransport, VirtioNet};

pub mod ports;

/// The e1000 driver: MMIO registers, port configuration space, 32 + 32 descriptors.
pub type E1000Nic = E1000<MmioRegisters, PortConfigSpace>;
/// The virtio-pci transport: legacy registers in I/O ports, modern ones in memory.
pub type VirtioTransport = PciTransport<PortConfigSpace, PortBlock, MmioBlock>;
/// The virtio-net driver: 32 + 32 buffers.
pub type VirtioNic = VirtioNet<VirtioTransport>;

/// Where a driver's registers are.
#[derive(Debug, Clone, Copy)]
pub enum Registers {
    /// A memory BAR (the e1000's BAR0).
    Memory { bar: usize, base: u64, size: u64 },
    /// An I/O BAR (legacy virtio-net's BAR0).
    Ports { bar: usize, port: u32, size: u64 },
    /// Modern virtio structures: common, notification and device configuration.
    Structures([(u64, usize); 3]),
    /// A virtio-mmio register block: no PCI function at all, so [`Found`]'s PCI fields
    /// (address, IDs, command register) mean nothing beside it.
    VirtioMmio { base: u64, size: u64, version: u32 },
    /// vmxnet3's two memory BARs: BAR0 (PT) and BAR1 (VD).
    Vmxnet3 { pt: u64, vd: u64 },
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

impl Found {
    /// What `function` is, with its command register as the firmware left it.
    pub fn pci(function: &PciFunction, command: Command, registers: Registers) -> Self {
        Found {
            address: function.address,
            vendor_id: function.vendor_id,
            device_id: function.device_id,
            command,
            registers,
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Registers::VirtioMmio { base, size, version } = self.registers {
            return write!(f, "virtio-mmio version {version} at {base:#x} ({size:#x} bytes), no PCI");
        }
        write!(f, "{:04x}:{:04x} at {}, ", self.vendor_id, self.device_id, self.address)?;
        match self.registers {
            Registers::Memory { bar, base, size } => write!(f, "BAR{bar} {base:#x} ({} KiB)", size / 1024)?,
            Registers::Ports { bar, port, size } => write!(f, "I/O BAR{bar} port {port:#x} ({size} ports)")?,
            Registers::Structures([common, notify, device]) => write!(
                f,
                "common {:#x}+{:#x}, notify {:#x}+{:#x}, device {:#x}+{:#x}",
                common.0, common.1, notify.0, notify.1, device.0, device.1
            )?,
            Registers::VirtioMmio { .. } => {}
            Registers::Vmxnet3 { pt, vd } => write!(f, "BAR0 {pt:#x}, BAR1 {vd:#x}")?,
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
const DMA_SIZE: usize = max(
    max(E1000Nic::DMA_SIZE, VirtioNic::DMA_SIZE),
    max(ports::e1000e::E1000eNic::DMA_SIZE, ports::vmxnet3::Vmxnet3Nic::DMA_SIZE),
);

#[repr(C, align(4096))]
struct DmaMemory([u8; DMA_SIZE]);

/// Driver instances the static DMA memory has room for: netdump's, and the kernel's own
/// driver on the same device (the test kernel's `deferred` scenario).
pub const MAX_INSTANCES: usize = 2;

/// The drivers' rings and buffers, in `.bss`: identity-mapped, so physical == virtual.
static mut DMA: [DmaMemory; MAX_INSTANCES] = [const { DmaMemory([0; DMA_SIZE]) }; MAX_INSTANCES];
/// How many of the regions of `DMA` were handed out.
static DMA_TAKEN: AtomicUsize = AtomicUsize::new(0);

/// One of the static DMA regions, each at most once.
pub(crate) fn take_dma() -> Result<DmaRegion, &'static str> {
    let index = DMA_TAKEN.fetch_add(1, Ordering::SeqCst);
    if index >= MAX_INSTANCES {
        return Err("the DMA memory is already in use");
    }
    // SAFETY: only the address of element `index` is taken, no reference is formed.
    let region = unsafe { (&raw mut DMA).cast::<DmaMemory>().add(index) };
    let virt = NonNull::new(region.cast::<u8>()).ok_or("DMA memory at address 0")?;
    // SAFETY: element `index` of `DMA` is referenced only here, and DMA_TAKEN hands each
    // index out once, so the region owns it; the kernel image is identity-mapped
    // (physical == virtual); x86 DMA is cache-coherent.
    Ok(unsafe { DmaRegion::new(virt, virt.as_ptr() as u64, DMA_SIZE) })
}

/// Memory BAR `bar` of `pci`, assigned, decoding at least `min` bytes and inside the
/// identity map: its address (virtual = physical) and decoded size.
pub(crate) fn memory_bar(
    pci: &mut PciDevice<PortConfigSpace>,
    bar: usize,
    min: usize,
) -> Result<(NonNull<u8>, u64, u64), &'static str> {
    let base = pci
        .bar(bar)
        .map_err(|_| "NIC BAR unreadable")?
        .and_then(|b| b.memory_address())
        .ok_or("NIC BAR is not an assigned memory BAR")?;
    let size = pci.bar_size(bar).map_err(|_| "NIC BAR cannot be sized")?;
    if size < min as u64 || !mapped(base, size) {
        return Err("NIC BAR too small or outside the identity map");
    }
    let pointer = NonNull::new(base as *mut u8).ok_or("NIC BAR at address 0")?;
    Ok((pointer, base, size))
}

/// Whether `base..base + len` lies inside the identity map.
pub(crate) fn mapped(base: u64, len: u64) -> bool {
    base.checked_add(len).is_some_and(|end| end <= IDENTITY_MAP_END)
}

/// A check's outcome text in the conformance kernel, formatted without an allocator.
pub type Note = TextBuf<240>;

/// What a port's [`Port::probe`] may look at: the PCI bus and the kernel command line.
pub struct Probe {
    /// The kernel command line (devices without a bus announce themselves there).
    pub cmdline: Cmdline<'static>,
}

impl Probe {
    /// The first PCI function with one of `ids` (vendor, device), and a handle on it.
    pub fn pci_function(&self, ids: &[(u16, u16)]) -> Option<(PciDevice<PortConfigSpace>, PciFunction)> {
        // SAFETY: the test kernels probe from the boot CPU before any other CPU runs,
        // with interrupts off; nothing else uses the configuration ports meanwhile.
        let mut config = unsafe { PortConfigSpace::new() };
        let function = netdump_pci::enumerate(&mut config).find(|f| ids.contains(&(f.vendor_id, f.device_id)))?;
        Some((PciDevice::new(config, function.address), function))
    }
}

/// One NIC configuration of the QEMU suite: finding the device, building its driver, and
/// what the conformance kernel asks of it besides `PolledNic`. One line of `table.rs`
/// adds it everywhere.
pub trait Port: PolledNic + Sized {
    /// Finds this configuration's device and builds its driver (not yet reset): `None`
    /// when the machine has no such device (another port's turn), an error when it has
    /// one that cannot be driven.
    fn probe(probe: &Probe) -> Option<Result<(Self, Found), &'static str>>;
    /// What the NIC is, for reports (`e1000`, `virtio-net legacy`, …).
    fn kind(&self) -> &'static str;
    /// Whether the device may master the bus (do DMA).
    fn bus_master_enabled(&mut self) -> bool;
    /// Whether the link is up.
    fn link_up(&mut self) -> bool;
    /// Frames handed to the device and not yet reclaimed.
    fn tx_in_flight(&self) -> usize;
    /// Frames the transmit ring holds at once.
    fn tx_capacity(&self) -> usize;
    /// Receive buffers the device may fill at once.
    fn rx_capacity(&self) -> usize;
    /// Lets the device compute UDP checksums where it can, from the next reset (off: the
    /// core computes them). Ports without the offload ignore it.
    fn set_udp_checksum_offload(&mut self, _on: bool) {}
    /// Leaves the device as a dying OS driver might (interrupts unmasked, filters opened,
    /// ring registers moved, DMA off), for the conformance kernel's takeover check.
    fn leave_dirty(&mut self, found: &Found);
    /// Checks that `reset` undid everything [`leave_dirty`](Self::leave_dirty) did.
    fn check_clean(&mut self, found: &Found) -> Result<(), Note>;
}

/// Builds [`Nic`] and [`bring_up`] from `table.rs`.
macro_rules! nic_table {
    ($($variant:ident = $port:ty : $name:literal, $machine:ident, $device:literal;)*) => {
        /// Whichever configured NIC the machine has.
        // The variants differ in size; there is no heap to box into, and the value lives
        // once, in the installed client.
        #[allow(clippy::large_enum_variant)]
        pub enum Nic {
            $(
                #[doc = concat!("The `", $name, "` configuration.")]
                $variant($port),
            )*
        }

        /// Finds the first configured NIC the machine has and builds its driver (not yet
        /// reset). Call at most [`MAX_INSTANCES`] times: each instance has DMA memory of
        /// its own (a kernel's own driver and netdump's, on the same device).
        pub fn bring_up(cmdline: Cmdline<'static>) -> Result<(Nic, Found), &'static str> {
            let probe = Probe { cmdline };
            $(
                if let Some(found) = <$port as Port>::probe(&probe) {
                    let (nic, found) = found?;
                    return Ok((Nic::$variant(nic), found));
                }
            )*
            Err("none of the configured NICs is on this machine")
        }

        macro_rules! each {
            ($self:expr, $n:ident => $e:expr) => {
                match $self {
                    $(Nic::$variant($n) => $e,)*
                }
            };
        }
    };
}

include!("table.rs");

impl Nic {
    pub fn kind(&self) -> &'static str {
        each!(self, n => n.kind())
    }
    pub fn bus_master_enabled(&mut self) -> bool {
        each!(self, n => n.bus_master_enabled())
    }
    pub fn link_up(&mut self) -> bool {
        each!(self, n => n.link_up())
    }
    pub fn tx_in_flight(&self) -> usize {
        each!(self, n => n.tx_in_flight())
    }
    pub fn tx_capacity(&self) -> usize {
        each!(self, n => n.tx_capacity())
    }
    pub fn rx_capacity(&self) -> usize {
        each!(self, n => n.rx_capacity())
    }
    /// See [`Port::set_udp_checksum_offload`] (`checksum_offload=off` on the test kernel's
    /// command line, for the bench's comparison).
    pub fn set_udp_checksum_offload(&mut self, on: bool) {
        each!(self, n => n.set_udp_checksum_offload(on))
    }
    pub fn leave_dirty(&mut self, found: &Found) {
        each!(self, n => n.leave_dirty(found))
    }
    pub fn check_clean(&mut self, found: &Found) -> Result<(), Note> {
        each!(self, n => n.check_clean(found))
    }
}

impl PolledNic for Nic {
    fn mac_address(&self) -> [u8; 6] {
        each!(self, n => n.mac_address())
    }
    fn mtu(&self) -> usize {
        each!(self, n => n.mtu())
    }
    fn reset(&mut self) -> Result<(), NicError> {
        each!(self, n => n.reset())
    }
    fn udp_checksum_offload(&self) -> bool {
        each!(self, n => n.udp_checksum_offload())
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        each!(self, n => n.transmit(len, fill))
    }
    fn transmit_deferred(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        each!(self, n => n.transmit_deferred(len, fill))
    }
    fn flush_transmit(&mut self) {
        each!(self, n => n.flush_transmit())
    }
    fn poll_transmit(&mut self) -> usize {
        each!(self, n => n.poll_transmit())
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        each!(self, n => n.poll_receive(handler))
    }
}
