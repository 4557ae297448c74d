//! Finding the e1000 and building its driver from static DMA memory, as an integrator does.

use core::ptr::NonNull;

use netdump_core::nic::{NicError, PolledNic};
use netdump_e1000::{E1000, MmioRegisters, Registers, find, regs};
use netdump_pci::{Command, DmaRegion, PciAddress, PciDevice, PortConfigSpace};

use crate::{DeviceUnderTest, Note};

/// The driver under test: MMIO registers, port configuration space, 32 + 32 descriptors.
pub type Nic = E1000<MmioRegisters, PortConfigSpace>;

#[repr(C, align(4096))]
struct DmaMemory([u8; Nic::DMA_SIZE]);

/// The driver's rings and buffers, in `.bss`: identity-mapped, so physical == virtual.
static mut DMA: DmaMemory = DmaMemory([0; Nic::DMA_SIZE]);

/// What discovery found, for the report.
pub struct Found {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    pub bar0: u64,
    pub bar0_size: u64,
    /// The command register as the firmware left it.
    pub command: Command,
}

/// Finds the first supported controller and builds its driver. Call once.
pub fn bring_up() -> Result<(E1000UnderTest, Found), &'static str> {
    // SAFETY: this kernel runs on one CPU with interrupts off; nothing else uses the
    // configuration ports.
    let mut config = unsafe { PortConfigSpace::new() };
    let function = find(&mut config).ok_or("no supported e1000 on the PCI bus")?;
    let mut pci = PciDevice::new(config, function.address);
    let command = pci.command();
    let bar0 = pci
        .bar(0)
        .map_err(|_| "BAR0 unreadable")?
        .and_then(|bar| bar.memory_address())
        .ok_or("BAR0 is not an assigned memory BAR")?;
    let bar0_size = pci.bar_size(0).map_err(|_| "BAR0 cannot be sized")?;
    if bar0_size < MmioRegisters::SIZE as u64
        || bar0 + bar0_size > netdump_qemu_runtime::IDENTITY_MAP_END
    {
        return Err("BAR0 too small or outside the identity map");
    }
    let base = NonNull::new(bar0 as *mut u8).ok_or("BAR0 at address 0")?;
    // SAFETY: BAR0 is inside the runtime's identity map (checked above) and covers the
    // 128 KiB register window; this driver is its only user. (TCG ignores cacheability;
    // on hardware the PCI hole is uncached by the firmware's MTRRs.)
    let regs = unsafe { MmioRegisters::new(base) };
    let virt = NonNull::new((&raw mut DMA).cast::<u8>()).ok_or("DMA memory at address 0")?;
    // SAFETY: `DMA` is referenced only here and `bring_up` runs once, so the region owns it;
    // the kernel image is identity-mapped (physical == virtual); x86 DMA is cache-coherent.
    let dma = unsafe { DmaRegion::new(virt, virt.as_ptr() as u64, Nic::DMA_SIZE) };
    let nic = Nic::new(regs, pci, dma).map_err(|e| match e {
        netdump_e1000::InitError::Dma(_) => "DMA region rejected",
        netdump_e1000::InitError::DeviceGone => "device not responding",
        netdump_e1000::InitError::NoMacAddress => "no MAC address",
    })?;
    let found = Found {
        address: function.address,
        vendor_id: function.vendor_id,
        device_id: function.device_id,
        bar0,
        bar0_size,
        command,
    };
    Ok((
        E1000UnderTest {
            nic,
            registers: base,
        },
        found,
    ))
}

/// The e1000 under test, with the hooks the device-independent checks need.
pub struct E1000UnderTest {
    nic: Nic,
    /// Where BAR0 is mapped.
    registers: NonNull<u8>,
}

impl E1000UnderTest {
    /// A second handle on the registers, standing in for the OS driver that owned the
    /// device before the crash path took over.
    fn previous_owner(&self) -> MmioRegisters {
        // SAFETY: the same mapping as the driver's (see `bring_up`). The kernel is
        // single-threaded and uses this handle only between driver calls, as the OS driver
        // did before the crash path took over.
        unsafe { MmioRegisters::new(self.registers) }
    }
}

impl PolledNic for E1000UnderTest {
    fn mac_address(&self) -> [u8; 6] {
        self.nic.mac_address()
    }
    fn mtu(&self) -> usize {
        self.nic.mtu()
    }
    fn reset(&mut self) -> Result<(), NicError> {
        self.nic.reset()
    }
    fn transmit(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), NicError> {
        self.nic.transmit(len, fill)
    }
    fn poll_transmit(&mut self) -> usize {
        self.nic.poll_transmit()
    }
    fn poll_receive(&mut self, handler: &mut dyn FnMut(&[u8])) -> Result<bool, NicError> {
        self.nic.poll_receive(handler)
    }
}

impl DeviceUnderTest for E1000UnderTest {
    fn bus_master_enabled(&mut self) -> bool {
        self.nic.pci().command().contains(Command::BUS_MASTER)
    }

    fn link_up(&mut self) -> bool {
        self.nic.link_up()
    }

    fn tx_in_flight(&self) -> usize {
        self.nic.tx_in_flight()
    }

    /// Interrupts unmasked, promiscuous long-frame receive, a second station address and
    /// every multicast bit, ring pointers moved, transmit off, bus mastering off.
    fn leave_dirty(&mut self) {
        let mut r = self.previous_owner();
        r.write(regs::IMS, 0x0001_F6DF);
        r.write(
            regs::RCTL,
            (regs::Rctl::EN | regs::Rctl::UPE | regs::Rctl::MPE | regs::Rctl::LPE).bits(),
        );
        r.write(regs::RAL0 + 8, 0x0403_0201);
        r.write(regs::RAH0 + 8, 0x0605 | regs::RAH_AV);
        for i in 0..regs::MTA_LEN {
            r.write(regs::MTA + 4 * i, 0xFFFF_FFFF);
        }
        r.write(regs::TCTL, 0);
        r.write(regs::TDH, 5);
        r.write(regs::TDT, 5);
        r.write(regs::RDT, 3);
        self.nic.pci().disable(Command::BUS_MASTER);
    }

    fn check_clean(&mut self) -> Result<(), Note> {
        let mut r = self.previous_owner();
        let ims = r.read(regs::IMS);
        let rctl = r.read(regs::RCTL);
        let rah1 = r.read(regs::RAH0 + 8);
        let mta_clear = (0..regs::MTA_LEN).all(|i| r.read(regs::MTA + 4 * i) == 0);
        let expected_rctl = (regs::Rctl::EN | regs::Rctl::BAM | regs::Rctl::SECRC).bits();
        if ims != 0 || rctl != expected_rctl || rah1 & regs::RAH_AV != 0 || !mta_clear {
            return Err(note!(
                "state left over: IMS {ims:#x}, RCTL {rctl:#x}, RAH1 {rah1:#x}, MTA clear {mta_clear}"
            ));
        }
        Ok(())
    }
}
