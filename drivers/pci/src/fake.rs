//! A fake configuration space for host tests (feature `testing`).
//!
//! Functions are 256-byte arrays. BARs behave like hardware: writing all ones reads back the
//! size mask; the status register is read-only; reads of absent functions return all ones.

use std::vec::Vec;

use crate::config::{ConfigSpace, PciAddress};
use crate::offset;

/// One fake function: its configuration bytes and the BARs' size masks.
#[derive(Debug, Clone)]
pub struct FakeFunction {
    address: PciAddress,
    bytes: [u8; 256],
    /// Writable bits of each BAR dword (0 for an unimplemented BAR or the read-only low bits).
    bar_masks: [u32; 6],
    /// Offset at which `add_capability` places the next capability.
    next_capability: u8,
}

impl FakeFunction {
    fn new(address: PciAddress, vendor_id: u16, device_id: u16) -> Self {
        let mut f = FakeFunction { address, bytes: [0; 256], bar_masks: [0; 6], next_capability: 0x40 };
        f.set_u16(offset::VENDOR_ID, vendor_id);
        f.set_u16(offset::DEVICE_ID, device_id);
        f
    }

    fn set_u16(&mut self, at: u8, value: u16) {
        self.bytes[usize::from(at)..usize::from(at) + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn set_u32(&mut self, at: u8, value: u32) {
        self.bytes[usize::from(at)..usize::from(at) + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn u32_at(&self, at: u8) -> u32 {
        let at = usize::from(at & 0xFC);
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    /// Sets the header type byte (bit 7: multi-function).
    pub fn set_header_type(&mut self, value: u8) -> &mut Self {
        self.bytes[usize::from(offset::HEADER_TYPE)] = value;
        self
    }

    /// Sets the class, subclass and programming interface bytes.
    pub fn set_class(&mut self, class: u8, subclass: u8, prog_if: u8) -> &mut Self {
        self.bytes[usize::from(offset::CLASS)] = class;
        self.bytes[usize::from(offset::SUBCLASS)] = subclass;
        self.bytes[usize::from(offset::PROG_IF)] = prog_if;
        self
    }

    /// Sets the revision ID.
    pub fn set_revision(&mut self, revision: u8) -> &mut Self {
        self.bytes[usize::from(offset::REVISION_ID)] = revision;
        self
    }

    /// Sets the command register as the device would hold it (no write semantics).
    pub fn set_command(&mut self, command: u16) -> &mut Self {
        self.set_u16(offset::COMMAND, command);
        self
    }

    /// Sets the status register as the device would hold it (no write-one-to-clear).
    pub fn set_status(&mut self, status: u16) -> &mut Self {
        self.set_u16(offset::STATUS, status);
        self
    }

    /// A 32-bit memory BAR at `address` decoding `size` bytes (a power of two, ≥ 16).
    pub fn set_memory_bar32(&mut self, index: usize, address: u32, size: u32, prefetchable: bool) -> &mut Self {
        let flags = if prefetchable { 0x8 } else { 0 };
        self.set_u32(offset::BAR0 + 4 * index as u8, address | flags);
        self.bar_masks[index] = !(size - 1);
        self
    }

    /// A 64-bit memory BAR in slots `index` and `index + 1`.
    pub fn set_memory_bar64(&mut self, index: usize, address: u64, size: u64, prefetchable: bool) -> &mut Self {
        let flags = 0x4 | if prefetchable { 0x8 } else { 0 };
        let mask = !(size - 1);
        self.set_u32(offset::BAR0 + 4 * index as u8, address as u32 | flags);
        self.set_u32(offset::BAR0 + 4 * (index as u8 + 1), (address >> 32) as u32);
        self.bar_masks[index] = mask as u32;
        self.bar_masks[index + 1] = (mask >> 32) as u32;
        self
    }

    /// An I/O BAR at `port` decoding `size` ports; like most devices, only 16 address bits
    /// are implemented.
    pub fn set_io_bar(&mut self, index: usize, port: u16, size: u16) -> &mut Self {
        self.set_u32(offset::BAR0 + 4 * index as u8, u32::from(port) | 0x1);
        self.bar_masks[index] = u32::from(!(size - 1)) & 0xFFFF;
        self
    }

    /// A raw BAR dword (for malformed values), not writable.
    pub fn set_raw_bar(&mut self, index: usize, value: u32) -> &mut Self {
        self.set_u32(offset::BAR0 + 4 * index as u8, value);
        self.bar_masks[index] = 0;
        self
    }

    /// Appends a capability with `id` and `body` (the bytes after the ID and next pointer),
    /// links it into the list and sets the status register's capability-list bit.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> &mut Self {
        let at = self.next_capability;
        let len = (2 + body.len()).next_multiple_of(4) as u8;
        self.bytes[usize::from(at)] = id;
        self.bytes[usize::from(at) + 1] = 0;
        self.bytes[usize::from(at) + 2..usize::from(at) + 2 + body.len()].copy_from_slice(body);
        // Link from the tail of the list (or the header pointer).
        let mut link = offset::CAPABILITIES_POINTER;
        while self.bytes[usize::from(link)] != 0 {
            link = self.bytes[usize::from(link)] + 1;
        }
        self.bytes[usize::from(link)] = at;
        self.next_capability = at + len;
        let status = u16::from_le_bytes([self.bytes[6], self.bytes[7]]) | 1 << 4;
        self.set_status(status)
    }

    /// Writes one configuration byte directly (to build malformed lists).
    pub fn poke(&mut self, at: u8, value: u8) -> &mut Self {
        self.bytes[usize::from(at)] = value;
        self
    }

    /// The current value of the 16-bit field at `at`.
    pub fn peek_u16(&self, at: u8) -> u16 {
        u16::from_le_bytes([self.bytes[usize::from(at)], self.bytes[usize::from(at) + 1]])
    }

    /// The current value of the dword at `at`.
    pub fn peek_u32(&self, at: u8) -> u32 {
        self.u32_at(at)
    }

    fn write(&mut self, at: u8, value: u32) {
        let at = at & 0xFC;
        match at {
            // Command is writable; status is read-only here (its RW1C bits are not modelled).
            offset::COMMAND => self.set_u16(offset::COMMAND, value as u16),
            0x10..=0x24 => {
                let index = usize::from((at - offset::BAR0) / 4);
                let mask = self.bar_masks[index];
                let old = self.u32_at(at);
                self.set_u32(at, (old & !mask) | (value & mask));
            }
            // Identification and header fields are read-only; the rest is plain storage.
            0x00 | 0x08 | 0x0C => {}
            _ => self.set_u32(at, value),
        }
    }
}

/// A set of fake functions answering configuration reads and writes, counting reads.
#[derive(Debug, Default, Clone)]
pub struct FakeConfigSpace {
    functions: Vec<FakeFunction>,
    reads: usize,
}

impl FakeConfigSpace {
    /// A configuration space with no functions: every read returns all ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a general (type 0) function and returns it for further setup.
    pub fn add_function(&mut self, address: PciAddress, vendor_id: u16, device_id: u16) -> &mut FakeFunction {
        self.functions.retain(|f| f.address != address);
        self.functions.push(FakeFunction::new(address, vendor_id, device_id));
        self.functions.last_mut().unwrap()
    }

    /// The function at `address`, if added.
    pub fn function(&mut self, address: PciAddress) -> Option<&mut FakeFunction> {
        self.functions.iter_mut().find(|f| f.address == address)
    }

    /// Configuration reads performed so far.
    pub fn reads(&self) -> usize {
        self.reads
    }
}

impl ConfigSpace for FakeConfigSpace {
    fn read_u32(&mut self, address: PciAddress, at: u8) -> u32 {
        self.reads += 1;
        self.functions.iter().find(|f| f.address == address).map_or(0xFFFF_FFFF, |f| f.u32_at(at))
    }

    fn write_u32(&mut self, address: PciAddress, at: u8, value: u32) {
        if let Some(f) = self.functions.iter_mut().find(|f| f.address == address) {
            f.write(at, value);
        }
    }
}
