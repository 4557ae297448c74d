//! A crash announcement as the server keeps it: owned, so that it outlives the CRASH
//! packet it came in. Admission, deduplication and the session all read it.

use netdump_core::proto::{Crash, CrashKind, Machine, MemoryRange};

use crate::vmcore::CrashNote;

/// A crash announcement, owned: it outlives the packet it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashAnnouncement {
    pub kind: CrashKind,
    pub vector: u8,
    pub cpu_count: u16,
    pub crashing_cpu: u16,
    pub error_code: u64,
    pub fault_address: u64,
    pub page_size: u32,
    /// The client's architecture (x86_64 for clients that do not say).
    pub machine: Machine,
    pub log_len: u64,
    pub ranges: Vec<MemoryRange>,
    /// Code addresses of the crashing stack, innermost first (the faulting `rip` of an
    /// exception, then return addresses).
    pub frames: Vec<u64>,
    /// The panic message, invalid UTF-8 replaced.
    pub message: String,
}

impl CrashAnnouncement {
    pub fn from_wire(c: &Crash<'_>) -> Self {
        CrashAnnouncement {
            kind: c.kind,
            vector: c.vector,
            cpu_count: c.cpu_count,
            crashing_cpu: c.crashing_cpu,
            error_code: c.error_code,
            fault_address: c.fault_address,
            page_size: c.page_size,
            machine: c.machine,
            log_len: c.log_len,
            ranges: c.ranges.iter().collect(),
            frames: c.frames.iter().collect(),
            message: String::from_utf8_lossy(c.message).into_owned(),
        }
    }

    /// Bytes of RAM announced (the sum of the ranges).
    pub fn memory_size(&self) -> u64 {
        self.ranges.iter().fold(0u64, |sum, r| sum.saturating_add(r.length))
    }

    /// The crash's ELF note.
    pub fn note(&self) -> CrashNote {
        CrashNote {
            kind: self.kind,
            vector: self.vector,
            crashing_cpu: self.crashing_cpu,
            error_code: self.error_code,
            fault_address: self.fault_address,
            message: self.message.clone(),
            machine: self.machine,
        }
    }
}
