//! The REGISTERS section reassembled from DATA packets that may split a record
//! anywhere, and the records as the `registers` text file shows them.

use netdump_core::proto::{REGISTER_RECORD_LEN, RegisterRecord};

/// Reassembles the REGISTERS section, whose packets may split a record anywhere.
#[derive(Debug, Clone)]
pub(super) struct RegisterAssembler {
    pub(super) bytes: Vec<u8>,
    have: Vec<bool>,
    complete: Vec<bool>,
}

impl RegisterAssembler {
    pub(super) fn new(cpu_count: u16) -> Self {
        let len = usize::from(cpu_count) * REGISTER_RECORD_LEN;
        RegisterAssembler { bytes: vec![0; len], have: vec![false; len], complete: vec![false; usize::from(cpu_count)] }
    }

    /// Stores `data` at `offset` of the section; returns the CPUs whose record this
    /// completed, or `None` when the bytes lie outside the section.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> Option<Vec<u16>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(data.len()).filter(|end| *end <= self.bytes.len())?;
        self.bytes[start..end].copy_from_slice(data);
        self.have[start..end].fill(true);
        let first = start / REGISTER_RECORD_LEN;
        let last = (end - 1) / REGISTER_RECORD_LEN;
        let mut done = Vec::new();
        for cpu in first..=last {
            let rec = cpu * REGISTER_RECORD_LEN..(cpu + 1) * REGISTER_RECORD_LEN;
            if !self.complete[cpu] && self.have[rec].iter().all(|h| *h) {
                self.complete[cpu] = true;
                done.push(cpu as u16);
            }
        }
        Some(done)
    }

    pub(super) fn record(&self, cpu: u16) -> Option<RegisterRecord> {
        let at = usize::from(cpu) * REGISTER_RECORD_LEN;
        RegisterRecord::parse(self.bytes.get(at..at + REGISTER_RECORD_LEN)?).ok()
    }

    pub(super) fn complete_count(&self) -> u16 {
        self.complete.iter().filter(|c| **c).count() as u16
    }
    /// Every complete record as text, the crashing CPU first (the `registers` file).
    pub(super) fn text(&self, crashing: u16, cpu_count: u16) -> String {
        let order = std::iter::once(crashing).chain((0..cpu_count).filter(|c| *c != crashing));
        let mut text = String::new();
        for cpu in order {
            let Some(r) = self.complete.get(usize::from(cpu)).filter(|c| **c).and(self.record(cpu)) else {
                continue;
            };
            let mark = if cpu == crashing { " (crashing)" } else { "" };
            text.push_str(&format!("cpu {cpu}{mark}\n"));
            for (name, v) in named_registers(&r) {
                text.push_str(&format!("  {name:<8} {v:#018x}\n"));
            }
        }
        text
    }
}

/// The registers of a record with their x86_64 names, in wire order.
fn named_registers(r: &RegisterRecord) -> [(&'static str, u64); 30] {
    [
        ("rax", r.rax),
        ("rbx", r.rbx),
        ("rcx", r.rcx),
        ("rdx", r.rdx),
        ("rsi", r.rsi),
        ("rdi", r.rdi),
        ("rbp", r.rbp),
        ("rsp", r.rsp),
        ("r8", r.r8),
        ("r9", r.r9),
        ("r10", r.r10),
        ("r11", r.r11),
        ("r12", r.r12),
        ("r13", r.r13),
        ("r14", r.r14),
        ("r15", r.r15),
        ("rip", r.rip),
        ("rflags", r.rflags),
        ("cs", r.cs),
        ("ss", r.ss),
        ("ds", r.ds),
        ("es", r.es),
        ("fs", r.fs),
        ("gs", r.gs),
        ("fs_base", r.fs_base),
        ("gs_base", r.gs_base),
        ("cr0", r.cr0),
        ("cr2", r.cr2),
        ("cr3", r.cr3),
        ("cr4", r.cr4),
    ]
}
