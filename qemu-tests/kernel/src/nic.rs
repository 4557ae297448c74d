//! Bringing up the e1000 the test kernel dumps through, from static DMA memory.

use netdump_e1000::{E1000, MmioRegisters, find};
use netdump_pci::{DmaRegion, PciDevice, PortConfigSpace};

/// The driver type: MMIO registers, port-based configuration space, 32 + 32 descriptors.
pub type Nic = E1000<MmioRegisters, PortConfigSpace>;

#[repr(C, align(4096))]
struct DmaMemory([u8; Nic::DMA_SIZE]);

/// The driver's rings and buffers, reserved in `.bss` (identity-mapped: physical ==
/// virtual).
static mut DMA: DmaMemory = DmaMemory([0; Nic::DMA_SIZE]);

/// Finds the first e1000 and builds its driver. Call once.
pub fn bring_up() -> Result<Nic, &'static str> {
    // SAFETY: the test kernel is single-CPU with interrupts off, and nothing else uses
    // the PCI configuration ports.
    let mut config = unsafe { PortConfigSpace::new() };
    let function = find(&mut config).ok_or("no e1000 on the PCI bus")?;
    let mut pci = PciDevice::new(config, function.address);
    let bar0 = pci.bar(0).map_err(|_| "e1000 BAR0 unreadable")?.and_then(|b| b.memory_address()).ok_or("e1000 BAR0 is not memory")?;
    let base = core::ptr::NonNull::new(bar0 as *mut u8).ok_or("e1000 BAR0 is zero")?;
    // SAFETY: BAR0 lies below 4 GiB (SeaBIOS assigns it there) inside the runtime's
    // identity map, and this driver is its only user.
    let regs = unsafe { MmioRegisters::new(base) };
    let dma_ptr = &raw mut DMA;
    let virt = core::ptr::NonNull::new(dma_ptr.cast::<u8>()).ok_or("DMA memory at null")?;
    // SAFETY: `DMA` is used only here, once (`bring_up` is called once); it is in the
    // identity-mapped image, so physical == virtual; x86 DMA is cache-coherent.
    let dma = unsafe { DmaRegion::new(virt, virt.as_ptr() as u64, Nic::DMA_SIZE) };
    Nic::new(regs, pci, dma).map_err(|_| "e1000 initialisation failed")
}
