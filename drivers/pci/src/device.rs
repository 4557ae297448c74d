//! One PCI function: command register, BARs, capabilities.

use bitflags::bitflags;

use crate::config::{ConfigSpace, PciAddress};
use crate::offset;

bitflags! {
    /// The command register (PCI Local Bus Specification 3.0, section 6.2.2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Command: u16 {
        /// Respond to I/O space accesses (I/O BARs).
        const IO_SPACE = 1 << 0;
        /// Respond to memory space accesses (memory BARs).
        const MEMORY_SPACE = 1 << 1;
        /// Allow the device to master the bus, i.e. to do DMA. SeaBIOS leaves it off.
        const BUS_MASTER = 1 << 2;
        /// Monitor Special Cycle operations.
        const SPECIAL_CYCLES = 1 << 3;
        /// May use the Memory Write and Invalidate command when mastering.
        const MEMORY_WRITE_AND_INVALIDATE = 1 << 4;
        /// VGA-compatible devices: snoop palette register writes.
        const VGA_PALETTE_SNOOP = 1 << 5;
        /// Respond to parity errors (otherwise only record them in the status register).
        const PARITY_ERROR_RESPONSE = 1 << 6;
        /// Enable the SERR# driver (system errors).
        const SERR = 1 << 8;
        /// May do fast back-to-back transactions to different targets when mastering.
        const FAST_BACK_TO_BACK = 1 << 9;
        /// Stop asserting INTx (MSI and MSI-X are unaffected).
        const INTERRUPT_DISABLE = 1 << 10;
    }
}

bitflags! {
    /// The status register (PCI Local Bus Specification 3.0, section 6.2.3).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u16 {
        /// An INTx interrupt is pending (whether or not `INTERRUPT_DISABLE` masks it).
        const INTERRUPT = 1 << 3;
        /// The function has a capability list at the capabilities pointer.
        const CAPABILITIES_LIST = 1 << 4;
        /// The function can run at 66 MHz.
        const MHZ_66 = 1 << 5;
        /// The function accepts fast back-to-back transactions to different agents.
        const FAST_BACK_TO_BACK = 1 << 7;
        /// As bus master, the function saw a data parity error (write one to clear).
        const MASTER_DATA_PARITY_ERROR = 1 << 8;
        /// As target, the function ended a transaction with target-abort (write one to
        /// clear).
        const SIGNALED_TARGET_ABORT = 1 << 11;
        /// As bus master, a transaction of the function's was target-aborted (write one to
        /// clear).
        const RECEIVED_TARGET_ABORT = 1 << 12;
        /// As bus master, a transaction of the function's was master-aborted: nobody
        /// answered (write one to clear).
        const RECEIVED_MASTER_ABORT = 1 << 13;
        /// The function asserted SERR# (write one to clear).
        const SIGNALED_SYSTEM_ERROR = 1 << 14;
        /// The function detected a parity error (write one to clear).
        const DETECTED_PARITY_ERROR = 1 << 15;
    }
}

/// Capability IDs (PCI Code and ID Assignment Specification, section 2).
pub mod capability_id {
    /// PCI Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// Message Signaled Interrupts.
    pub const MSI: u8 = 0x05;
    /// Vendor specific; virtio's modern transport describes its structures with these.
    pub const VENDOR_SPECIFIC: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSI_X: u8 = 0x11;
}

/// Address width of a memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWidth {
    /// Anywhere below 4 GiB (type 00b, and the obsolete below-1-MiB type 01b).
    Bits32,
    /// Anywhere in 64-bit space; the BAR uses two slots (type 10b).
    Bits64,
}

/// A decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// A window in memory space.
    Memory {
        /// The window's physical base address (16-byte aligned at least).
        address: u64,
        /// Whether the BAR takes one slot or two.
        width: MemoryWidth,
        /// Reads have no side effects: the window may be mapped write-combining.
        prefetchable: bool,
    },
    /// A window in x86 I/O space.
    Io {
        /// The first port (4-byte aligned at least).
        port: u32,
    },
}

impl Bar {
    /// Decodes a BAR from its dword `low` and, for a 64-bit memory BAR, the next slot's dword
    /// `high` (ignored otherwise). Returns `Ok(None)` for an unassigned BAR (address 0).
    pub fn decode(low: u32, high: u32) -> Result<Option<Bar>, BarError> {
        let bar = if low & 1 == 1 {
            Bar::Io { port: low & !0x3 }
        } else {
            let prefetchable = low & 0x8 != 0;
            let base = u64::from(low & !0xF);
            match (low >> 1) & 0x3 {
                0b00 | 0b01 => Bar::Memory { address: base, width: MemoryWidth::Bits32, prefetchable },
                0b10 => Bar::Memory { address: base | u64::from(high) << 32, width: MemoryWidth::Bits64, prefetchable },
                _ => return Err(BarError::ReservedType { raw: low }),
            }
        };
        Ok(match bar {
            Bar::Memory { address: 0, .. } | Bar::Io { port: 0 } => None,
            bar => Some(bar),
        })
    }

    /// The memory address of a memory BAR.
    pub fn memory_address(&self) -> Option<u64> {
        match *self {
            Bar::Memory { address, .. } => Some(address),
            Bar::Io { .. } => None,
        }
    }

    /// The port of an I/O BAR.
    pub fn io_port(&self) -> Option<u32> {
        match *self {
            Bar::Io { port } => Some(port),
            Bar::Memory { .. } => None,
        }
    }

    /// Whether this BAR occupies two slots.
    pub fn is_64bit(&self) -> bool {
        matches!(self, Bar::Memory { width: MemoryWidth::Bits64, .. })
    }
}

/// Why a BAR could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarError {
    /// The header type has fewer BARs (6 for a general device, 2 for a bridge, 0 otherwise).
    IndexOutOfRange {
        /// The BAR asked for.
        index: usize,
        /// The number of BAR slots the header has.
        count: usize,
    },
    /// This slot is the upper half of the 64-bit BAR in the previous slot.
    UpperHalf {
        /// The BAR asked for.
        index: usize,
    },
    /// A 64-bit BAR in the last slot, with no room for its upper half.
    Truncated64Bit {
        /// The BAR asked for.
        index: usize,
    },
    /// Memory type 11b, reserved by the specification.
    ReservedType {
        /// The BAR's dword as read.
        raw: u32,
    },
}

impl core::fmt::Display for BarError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BarError::IndexOutOfRange { index, count } => {
                write!(f, "BAR{index} does not exist (the header has {count})")
            }
            BarError::UpperHalf { index } => {
                write!(f, "BAR{index} is the upper half of a 64-bit BAR")
            }
            BarError::Truncated64Bit { index } => write!(f, "64-bit BAR{index} has no upper half"),
            BarError::ReservedType { raw } => {
                write!(f, "BAR value {raw:#010x} has a reserved type")
            }
        }
    }
}

/// A capability in the function's capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// The capability ID ([`capability_id`]).
    pub id: u8,
    /// Configuration-space offset of the capability's ID byte; its body follows the next
    /// pointer at `offset + 2`.
    pub offset: u8,
}

/// One PCI function, reached through a configuration space accessor `C`.
///
/// Drivers keep this to re-enable bus mastering on every reset: the OS driver may have
/// turned it off.
#[derive(Debug)]
pub struct PciDevice<C> {
    config: C,
    address: PciAddress,
}

/// Number of BAR slots in a general device's header.
const GENERAL_BARS: usize = 6;
/// Number of BAR slots in a PCI-to-PCI bridge's header.
const BRIDGE_BARS: usize = 2;
/// Capabilities live in the device-specific area after the 64-byte header; each takes at
/// least 4 bytes, so a well-formed list has at most this many entries.
const MAX_CAPABILITIES: usize = (256 - 64) / 4;

impl<C: ConfigSpace> PciDevice<C> {
    /// The function at `address`, reached through `config`. Nothing is read until asked.
    pub fn new(config: C, address: PciAddress) -> Self {
        PciDevice { config, address }
    }

    /// The function's bus, device and function number.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// The configuration space accessor, for reads this type has no helper for.
    pub fn config_space(&mut self) -> &mut C {
        &mut self.config
    }

    /// Reads the configuration dword at `offset & !3`.
    pub fn read_u32(&mut self, offset: u8) -> u32 {
        self.config.read_u32(self.address, offset)
    }

    /// Reads the configuration word at `offset & !1`.
    pub fn read_u16(&mut self, offset: u8) -> u16 {
        self.config.read_u16(self.address, offset)
    }

    /// Reads the configuration byte at `offset`.
    pub fn read_u8(&mut self, offset: u8) -> u8 {
        self.config.read_u8(self.address, offset)
    }

    /// Writes the configuration dword at `offset & !3`.
    pub fn write_u32(&mut self, offset: u8, value: u32) {
        self.config.write_u32(self.address, offset, value)
    }

    /// The vendor ID; 0xFFFF if no function answers.
    pub fn vendor_id(&mut self) -> u16 {
        self.read_u16(offset::VENDOR_ID)
    }

    /// The device ID.
    pub fn device_id(&mut self) -> u16 {
        self.read_u16(offset::DEVICE_ID)
    }

    /// Whether the function answers configuration reads (it may have been hot-removed or
    /// the bus may be broken).
    pub fn is_present(&mut self) -> bool {
        self.vendor_id() != 0xFFFF
    }

    /// The header layout: 0 general device, 1 PCI-to-PCI bridge, 2 CardBus bridge.
    pub fn header_type(&mut self) -> u8 {
        self.read_u8(offset::HEADER_TYPE) & 0x7F
    }

    /// The command register.
    pub fn command(&mut self) -> Command {
        Command::from_bits_retain(self.read_u16(offset::COMMAND))
    }

    /// Writes the command register. The status register shares the dword; it is written
    /// with zeros, which leaves its write-one-to-clear error bits alone.
    pub fn set_command(&mut self, command: Command) {
        self.write_u32(offset::COMMAND, u32::from(command.bits()));
    }

    /// Sets `flags` in the command register, keeping the others.
    pub fn enable(&mut self, flags: Command) {
        let command = self.command();
        self.set_command(command | flags);
    }

    /// Clears `flags` in the command register, keeping the others.
    pub fn disable(&mut self, flags: Command) {
        let command = self.command();
        self.set_command(command - flags);
    }

    /// The status register.
    pub fn status(&mut self) -> Status {
        Status::from_bits_retain(self.read_u16(offset::STATUS))
    }

    fn bar_count(&mut self) -> usize {
        match self.header_type() {
            0 => GENERAL_BARS,
            1 => BRIDGE_BARS,
            _ => 0,
        }
    }

    fn bar_raw(&mut self, index: usize) -> u32 {
        self.read_u32(offset::BAR0 + 4 * index as u8)
    }

    /// Decodes BAR `index`, walking the slots from BAR0 so that the upper half of a 64-bit
    /// BAR is never mistaken for a BAR of its own. `Ok(None)`: unassigned (address 0).
    pub fn bar(&mut self, index: usize) -> Result<Option<Bar>, BarError> {
        let count = self.bar_count();
        if index >= count {
            return Err(BarError::IndexOutOfRange { index, count });
        }
        let mut slot = 0;
        loop {
            let low = self.bar_raw(slot);
            let is_64bit = low & 0x7 == 0x4;
            if slot == index {
                if !is_64bit {
                    return Bar::decode(low, 0);
                }
                if slot + 1 >= count {
                    return Err(BarError::Truncated64Bit { index });
                }
                let high = self.bar_raw(slot + 1);
                return Bar::decode(low, high);
            }
            slot += if is_64bit { 2 } else { 1 };
            if slot > index {
                return Err(BarError::UpperHalf { index });
            }
        }
    }

    /// The size in bytes (or ports) that BAR `index` decodes; 0 if unimplemented.
    ///
    /// Sizes by the standard method: with memory and I/O decode turned off, write all ones,
    /// read back the mask, restore the BAR and the command register. Do this at install
    /// time, not while the device is in use.
    pub fn bar_size(&mut self, index: usize) -> Result<u64, BarError> {
        // Validates the index and rejects upper halves and reserved types.
        self.bar(index)?;
        let bar_offset = offset::BAR0 + 4 * index as u8;
        let command = self.command();
        self.set_command(command - (Command::IO_SPACE | Command::MEMORY_SPACE));

        let low = self.read_u32(bar_offset);
        let low_mask = self.probe_mask(bar_offset, low);
        let size = if low & 1 == 1 {
            // I/O BARs may implement only 16 address bits; the others read back 0.
            match low_mask & !0x3 {
                0 => 0,
                mask if mask & 0xFFFF_0000 == 0 => u64::from((!(mask | 0xFFFF_0000)).wrapping_add(1)),
                mask => u64::from((!mask).wrapping_add(1)),
            }
        } else if low & 0x7 == 0x4 {
            let high_offset = bar_offset + 4;
            let high = self.read_u32(high_offset);
            let high_mask = self.probe_mask(high_offset, high);
            match u64::from(high_mask) << 32 | u64::from(low_mask & !0xF) {
                0 => 0,
                mask => (!mask).wrapping_add(1),
            }
        } else {
            match low_mask & !0xF {
                0 => 0,
                mask => u64::from((!mask).wrapping_add(1)),
            }
        };

        self.set_command(command);
        Ok(size)
    }

    /// Writes all ones to the BAR dword at `at`, reads the mask back, restores `original`.
    fn probe_mask(&mut self, at: u8, original: u32) -> u32 {
        self.write_u32(at, 0xFFFF_FFFF);
        let mask = self.read_u32(at);
        self.write_u32(at, original);
        mask
    }

    /// The capability list, in list order. Empty when the status register says there is
    /// none; stops at a pointer into the header or after 48 entries (a looping list).
    pub fn capabilities(&mut self) -> Capabilities<'_, C> {
        let has_list = self.status().contains(Status::CAPABILITIES_LIST) && matches!(self.header_type(), 0 | 1);
        let next = if has_list { self.read_u8(offset::CAPABILITIES_POINTER) & 0xFC } else { 0 };
        Capabilities { device: self, next, remaining: MAX_CAPABILITIES }
    }

    /// The first capability with `id`.
    pub fn find_capability(&mut self, id: u8) -> Option<Capability> {
        self.capabilities().find(|c| c.id == id)
    }

    /// The byte at `at` bytes into `capability` (0 is its ID, 1 its next pointer), or
    /// `None` when that would run past the 256-byte configuration space.
    pub fn capability_u8(&mut self, capability: Capability, at: u8) -> Option<u8> {
        let offset = capability_field(capability, at, 1)?;
        Some(self.read_u8(offset))
    }

    /// The 16-bit field at `at` bytes into `capability` (2-byte aligned in configuration
    /// space), or `None` when it would run past the configuration space or is misaligned.
    pub fn capability_u16(&mut self, capability: Capability, at: u8) -> Option<u16> {
        let offset = capability_field(capability, at, 2)?;
        Some(self.read_u16(offset))
    }

    /// The 32-bit field at `at` bytes into `capability` (4-byte aligned in configuration
    /// space), or `None` when it would run past the configuration space or is misaligned.
    pub fn capability_u32(&mut self, capability: Capability, at: u8) -> Option<u32> {
        let offset = capability_field(capability, at, 4)?;
        Some(self.read_u32(offset))
    }

    /// Whether MSI-X is enabled (Message Control bit 15 of the MSI-X capability). Some
    /// devices move registers around when it is (legacy virtio's device configuration).
    pub fn msi_x_enabled(&mut self) -> bool {
        self.find_capability(capability_id::MSI_X)
            .and_then(|cap| self.capability_u16(cap, 2))
            .is_some_and(|control| control & MSI_X_ENABLE != 0)
    }

    /// Turns MSI and MSI-X off (their Message Control enable bits), leaving the function
    /// only INTx to signal with, which [`Command::INTERRUPT_DISABLE`] silences. A polled
    /// driver calls this when it takes a device over from an OS driver that used message
    /// interrupts: a message interrupt is a DMA write the command register cannot stop.
    pub fn disable_message_interrupts(&mut self) {
        for (id, enable) in [(capability_id::MSI, MSI_ENABLE), (capability_id::MSI_X, MSI_X_ENABLE)] {
            let Some(cap) = self.find_capability(id) else {
                continue;
            };
            // The capability's first dword: ID and next pointer (read-only) and Message
            // Control in the upper half; the other control bits are kept.
            let header = self.read_u32(cap.offset);
            if header & (u32::from(enable) << 16) != 0 {
                self.write_u32(cap.offset, header & !(u32::from(enable) << 16));
            }
        }
    }
}

/// MSI Message Control: MSI Enable (PCI Local Bus Specification 3.0, section 6.8.1.3).
const MSI_ENABLE: u16 = 1 << 0;
/// MSI-X Message Control: MSI-X Enable (PCI Local Bus Specification 3.0, section 6.8.2.3).
const MSI_X_ENABLE: u16 = 1 << 15;

/// The configuration-space offset of a `width`-byte field `at` bytes into `capability`,
/// if it is inside the 256-byte space and naturally aligned.
fn capability_field(capability: Capability, at: u8, width: u8) -> Option<u8> {
    let offset = capability.offset.checked_add(at)?;
    let fits = u16::from(offset) + u16::from(width) <= 256;
    (fits && offset.is_multiple_of(width)).then_some(offset)
}

/// Iterator returned by [`PciDevice::capabilities`].
pub struct Capabilities<'a, C: ConfigSpace> {
    device: &'a mut PciDevice<C>,
    next: u8,
    remaining: usize,
}

impl<C: ConfigSpace> Capabilities<'_, C> {
    /// The device being walked, to read a capability's fields before moving on.
    pub fn device(&mut self) -> &mut PciDevice<C> {
        self.device
    }
}

impl<C: ConfigSpace> Iterator for Capabilities<'_, C> {
    type Item = Capability;

    fn next(&mut self) -> Option<Capability> {
        if self.next < 0x40 || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let offset = self.next;
        let header = self.device.read_u16(offset);
        self.next = (header >> 8) as u8 & 0xFC;
        Some(Capability { id: header as u8, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeConfigSpace;

    const ADDR: PciAddress = PciAddress::new(0, 3, 0);

    fn device_with(setup: impl FnOnce(&mut crate::fake::FakeFunction)) -> PciDevice<FakeConfigSpace> {
        let mut cfg = FakeConfigSpace::new();
        setup(cfg.add_function(ADDR, 0x8086, 0x100E));
        PciDevice::new(cfg, ADDR)
    }

    #[test]
    fn decodes_32bit_memory_bar() {
        assert_eq!(
            Bar::decode(0xFEBC_0000, 0),
            Ok(Some(Bar::Memory { address: 0xFEBC_0000, width: MemoryWidth::Bits32, prefetchable: false }))
        );
    }

    #[test]
    fn decodes_64bit_prefetchable_memory_bar() {
        assert_eq!(
            Bar::decode(0xFE00_000C, 0x0000_0001),
            Ok(Some(Bar::Memory { address: 0x1_FE00_0000, width: MemoryWidth::Bits64, prefetchable: true }))
        );
    }

    #[test]
    fn decodes_io_bar() {
        assert_eq!(Bar::decode(0x0000_C041, 0), Ok(Some(Bar::Io { port: 0xC040 })));
    }

    #[test]
    fn unassigned_bars_decode_to_none() {
        assert_eq!(Bar::decode(0, 0), Ok(None));
        assert_eq!(Bar::decode(0x1, 0), Ok(None));
        assert_eq!(Bar::decode(0x4, 0), Ok(None));
    }

    #[test]
    fn reserved_memory_type_is_an_error() {
        assert_eq!(Bar::decode(0xFE00_0006, 0), Err(BarError::ReservedType { raw: 0xFE00_0006 }));
    }

    #[test]
    fn bar_skips_upper_half_of_64bit_bar() {
        let mut dev = device_with(|f| {
            f.set_memory_bar64(0, 0x8_0000_0000, 0x4000, true).set_io_bar(2, 0xC000, 0x40);
        });
        assert_eq!(dev.bar(0).unwrap().unwrap().memory_address(), Some(0x8_0000_0000));
        assert_eq!(dev.bar(1), Err(BarError::UpperHalf { index: 1 }));
        assert_eq!(dev.bar(2), Ok(Some(Bar::Io { port: 0xC000 })));
        assert_eq!(dev.bar(3), Ok(None));
        assert_eq!(dev.bar(6), Err(BarError::IndexOutOfRange { index: 6, count: 6 }));
    }

    #[test]
    fn upper_half_that_looks_like_a_bar_is_still_an_upper_half() {
        // The high dword 0x4 would decode as a 64-bit BAR if read on its own.
        let mut dev = device_with(|f| {
            f.set_memory_bar64(4, 0x4_0000_0000, 0x1000, false);
        });
        assert_eq!(dev.bar(5), Err(BarError::UpperHalf { index: 5 }));
    }

    #[test]
    fn truncated_64bit_bar_in_last_slot() {
        let mut dev = device_with(|f| {
            f.set_raw_bar(5, 0xFE00_0004);
        });
        assert_eq!(dev.bar(5), Err(BarError::Truncated64Bit { index: 5 }));
    }

    #[test]
    fn sizes_memory_io_and_64bit_bars_and_restores_them() {
        let mut dev = device_with(|f| {
            f.set_memory_bar32(0, 0xFEB8_0000, 0x2_0000, false)
                .set_io_bar(1, 0xC000, 0x40)
                .set_memory_bar64(2, 0x1_0000_0000, 0x10_0000, true)
                .set_command(0x0007);
        });
        assert_eq!(dev.bar_size(0), Ok(0x2_0000));
        assert_eq!(dev.bar_size(1), Ok(0x40));
        assert_eq!(dev.bar_size(2), Ok(0x10_0000));
        assert_eq!(dev.bar_size(4), Ok(0));
        assert_eq!(dev.bar(0).unwrap().unwrap().memory_address(), Some(0xFEB8_0000));
        assert_eq!(dev.bar(1), Ok(Some(Bar::Io { port: 0xC000 })));
        assert_eq!(dev.bar(2).unwrap().unwrap().memory_address(), Some(0x1_0000_0000));
        assert_eq!(dev.command(), Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
    }

    #[test]
    fn enable_sets_bus_master_and_keeps_other_bits() {
        let mut dev = device_with(|f| {
            f.set_command(0x0003).set_status(0x0010);
        });
        dev.enable(Command::BUS_MASTER);
        assert_eq!(dev.command(), Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        dev.disable(Command::IO_SPACE);
        assert_eq!(dev.command(), Command::MEMORY_SPACE | Command::BUS_MASTER);
        assert_eq!(dev.status(), Status::CAPABILITIES_LIST);
    }

    #[test]
    fn walks_capability_list_in_order() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::POWER_MANAGEMENT, &[0; 6])
                .add_capability(capability_id::VENDOR_SPECIFIC, &[16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .add_capability(capability_id::MSI_X, &[0; 10]);
        });
        let caps: Vec<_> = dev.capabilities().collect();
        assert_eq!(
            caps,
            [
                Capability { id: capability_id::POWER_MANAGEMENT, offset: 0x40 },
                Capability { id: capability_id::VENDOR_SPECIFIC, offset: 0x48 },
                Capability { id: capability_id::MSI_X, offset: 0x58 },
            ]
        );
        assert_eq!(dev.find_capability(capability_id::MSI_X).map(|c| c.offset), Some(0x58));
        assert_eq!(dev.read_u8(0x48 + 2), 16);
        assert_eq!(dev.find_capability(capability_id::MSI), None);
    }

    #[test]
    fn no_capabilities_without_status_bit() {
        let mut dev = device_with(|f| {
            f.poke(offset::CAPABILITIES_POINTER, 0x40).poke(0x40, capability_id::MSI);
        });
        assert_eq!(dev.capabilities().count(), 0);
    }

    #[test]
    fn looping_capability_list_is_bounded() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::VENDOR_SPECIFIC, &[0; 2]).poke(0x41, 0x40);
        });
        assert_eq!(dev.capabilities().count(), MAX_CAPABILITIES);
    }

    #[test]
    fn capability_pointer_into_header_ends_the_list() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::VENDOR_SPECIFIC, &[0; 2]).poke(0x41, 0x10);
        });
        assert_eq!(dev.capabilities().count(), 1);
    }

    #[test]
    fn capability_pointer_low_bits_are_ignored() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::MSI, &[0; 2]).poke(offset::CAPABILITIES_POINTER, 0x43);
        });
        assert_eq!(dev.capabilities().next(), Some(Capability { id: capability_id::MSI, offset: 0x40 }));
    }

    #[test]
    fn reads_capability_fields_within_configuration_space() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::VENDOR_SPECIFIC, &[16, 1, 4, 0, 0, 0, 0x00, 0x30, 0, 0, 0x00, 0x10, 0, 0]);
        });
        let cap = dev.find_capability(capability_id::VENDOR_SPECIFIC).unwrap();
        assert_eq!(dev.capability_u8(cap, 3), Some(1));
        assert_eq!(dev.capability_u8(cap, 4), Some(4));
        assert_eq!(dev.capability_u32(cap, 8), Some(0x3000));
        assert_eq!(dev.capability_u32(cap, 12), Some(0x1000));
        assert_eq!(dev.capability_u16(cap, 2), Some(0x0110));
        // Misaligned fields and fields past the end of the space are refused.
        assert_eq!(dev.capability_u32(cap, 2), None);
        assert_eq!(dev.capability_u16(cap, 1), None);
        let last = Capability { id: capability_id::VENDOR_SPECIFIC, offset: 0xFC };
        assert_eq!(dev.capability_u32(last, 0), Some(0));
        assert_eq!(dev.capability_u32(last, 4), None);
        assert_eq!(dev.capability_u8(last, 4), None);
    }

    #[test]
    fn capability_walk_lends_the_device_for_field_reads() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::VENDOR_SPECIFIC, &[4, 1])
                .add_capability(capability_id::MSI_X, &[0; 10])
                .add_capability(capability_id::VENDOR_SPECIFIC, &[4, 2]);
        });
        let mut types = vec![];
        let mut caps = dev.capabilities();
        while let Some(cap) = caps.next() {
            if cap.id == capability_id::VENDOR_SPECIFIC {
                types.push(caps.device().capability_u8(cap, 3).unwrap());
            }
        }
        assert_eq!(types, [1, 2]);
    }

    #[test]
    fn disables_msi_and_msi_x_keeping_other_control_bits() {
        let mut dev = device_with(|f| {
            // MSI: enabled, 64-bit capable (bit 7). MSI-X: enabled, function mask
            // (bit 14), table size 3 (encoded 2).
            f.add_capability(capability_id::MSI, &[0x81, 0x00, 0, 0, 0, 0, 0, 0, 0, 0])
                .add_capability(capability_id::MSI_X, &[0x02, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0]);
        });
        assert!(dev.msi_x_enabled());
        dev.disable_message_interrupts();
        assert!(!dev.msi_x_enabled());
        let msi = dev.find_capability(capability_id::MSI).unwrap();
        let msi_x = dev.find_capability(capability_id::MSI_X).unwrap();
        assert_eq!(dev.capability_u16(msi, 2), Some(0x0080));
        assert_eq!(dev.capability_u16(msi_x, 2), Some(0x4002));
        // The list is intact.
        assert_eq!(dev.capabilities().count(), 2);
    }

    #[test]
    fn message_interrupts_absent_is_fine() {
        let mut dev = device_with(|f| {
            f.add_capability(capability_id::POWER_MANAGEMENT, &[0; 6]);
        });
        assert!(!dev.msi_x_enabled());
        dev.disable_message_interrupts();
        assert_eq!(dev.capabilities().count(), 1);
    }

    #[test]
    fn absent_device_is_not_present() {
        let mut dev = PciDevice::new(FakeConfigSpace::new(), ADDR);
        assert!(!dev.is_present());
    }
}
