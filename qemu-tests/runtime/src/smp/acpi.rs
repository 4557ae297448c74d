//! The CPU list from ACPI: RSDP → XSDT (or RSDT) → MADT ("APIC"), checksums checked.
//!
//! Only what [`super::cpus`] needs is read: the local APIC ids of the enabled processors.
//! Tables are read through the identity map, so every address must lie below 4 GiB
//! (QEMU's always do); a table that does not, or whose checksum or length is wrong, is
//! treated as absent.

use crate::boot_info::IDENTITY_MAP_END;
use crate::println;

/// Longest table read (QEMU's MADT is a few hundred bytes; a bigger "length" is corrupt).
const MAX_TABLE_LEN: u32 = 1 << 20;
/// The common table header (`signature`, `length`, …, `creator_revision`).
const HEADER_LEN: u32 = 36;
/// MADT: the header, the local APIC address and the flags, then the entries.
const MADT_ENTRIES_OFFSET: u32 = HEADER_LEN + 8;
/// MADT entry types.
const PROCESSOR_LOCAL_APIC: u8 = 0;
const PROCESSOR_LOCAL_X2APIC: u8 = 9;
/// The Enabled bit of both entries' flags.
const ENABLED: u32 = 1 << 0;

/// Reads a `T` at physical address `addr`, if it lies below 4 GiB.
fn read<T: Copy>(addr: u64) -> Option<T> {
    let end = addr.checked_add(core::mem::size_of::<T>() as u64)?;
    if end > IDENTITY_MAP_END {
        return None;
    }
    // SAFETY: `addr..end` lies below 4 GiB, which is identity-mapped (this runs at boot,
    // before the guard pages are unmapped); firmware tables are plain memory nothing
    // writes meanwhile, and every `T` read here is an integer or a byte array, valid for
    // any bits. Unaligned because ACPI fields are not aligned.
    Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Whether the `len` bytes at `addr` sum to zero (mod 256).
fn checksum_ok(addr: u64, len: u32) -> bool {
    let mut sum = 0u8;
    for offset in 0..u64::from(len) {
        let Some(byte) = read::<u8>(addr + offset) else { return false };
        sum = sum.wrapping_add(byte);
    }
    sum == 0
}

/// The length of the table at `addr` with signature `signature`, if its header and
/// checksum are right.
fn table(addr: u64, signature: &[u8; 4]) -> Option<u32> {
    if read::<[u8; 4]>(addr)? != *signature {
        return None;
    }
    let len = read::<u32>(addr + 4)?;
    if !(HEADER_LEN..=MAX_TABLE_LEN).contains(&len) {
        println!("netdump-qemu-runtime: ACPI {} at {addr:#x}: bad length {len}", signature.escape_ascii());
        return None;
    }
    if !checksum_ok(addr, len) {
        println!("netdump-qemu-runtime: ACPI {} at {addr:#x}: bad checksum", signature.escape_ascii());
        return None;
    }
    Some(len)
}

/// The physical address of the MADT, found from the RSDP at `rsdp`.
fn find_madt(rsdp: u64) -> Option<u64> {
    if read::<[u8; 8]>(rsdp)? != *b"RSD PTR " {
        println!("netdump-qemu-runtime: no ACPI RSDP signature at {rsdp:#x}");
        return None;
    }
    if !checksum_ok(rsdp, 20) {
        println!("netdump-qemu-runtime: ACPI RSDP at {rsdp:#x}: bad checksum");
        return None;
    }
    let revision = read::<u8>(rsdp + 15)?;
    let xsdt = if revision >= 2 && read::<u32>(rsdp + 20)? >= 36 && checksum_ok(rsdp, 36) {
        read::<u64>(rsdp + 24)?
    } else {
        0
    };
    // The XSDT's entries are 8 bytes, the RSDT's 4.
    let (root, signature, entry_len) =
        if xsdt != 0 { (xsdt, b"XSDT", 8) } else { (u64::from(read::<u32>(rsdp + 16)?), b"RSDT", 4) };
    let len = table(root, signature)?;
    let entries = (len - HEADER_LEN) / entry_len;
    (0..entries).find_map(|i| {
        let at = root + u64::from(HEADER_LEN + i * entry_len);
        let addr = if entry_len == 8 { read::<u64>(at)? } else { u64::from(read::<u32>(at)?) };
        (read::<[u8; 4]>(addr)? == *b"APIC").then_some(addr)
    })
}

/// Calls `cpu(apic_id)` for every enabled processor the MADT lists, in MADT order:
/// Processor Local APIC and Processor Local x2APIC entries with the Enabled flag.
/// Returns false if there is no valid MADT.
pub(super) fn for_each_enabled_cpu(rsdp: u64, mut cpu: impl FnMut(u32)) -> bool {
    let Some(madt) = find_madt(rsdp) else { return false };
    let Some(len) = table(madt, b"APIC") else { return false };
    let mut offset = MADT_ENTRIES_OFFSET;
    while offset + 2 <= len {
        let at = madt + u64::from(offset);
        let (Some(kind), Some(entry_len)) = (read::<u8>(at), read::<u8>(at + 1)) else { break };
        if entry_len < 2 || offset + u32::from(entry_len) > len {
            println!("netdump-qemu-runtime: ACPI MADT entry at {at:#x}: bad length {entry_len}");
            break;
        }
        match kind {
            PROCESSOR_LOCAL_APIC if entry_len >= 8 => {
                if let (Some(apic_id), Some(flags)) = (read::<u8>(at + 3), read::<u32>(at + 4))
                    && flags & ENABLED != 0
                {
                    cpu(u32::from(apic_id));
                }
            }
            PROCESSOR_LOCAL_X2APIC if entry_len >= 16 => {
                if let (Some(apic_id), Some(flags)) = (read::<u32>(at + 4), read::<u32>(at + 8))
                    && flags & ENABLED != 0
                {
                    cpu(apic_id);
                }
            }
            _ => {}
        }
        offset += u32::from(entry_len);
    }
    true
}
