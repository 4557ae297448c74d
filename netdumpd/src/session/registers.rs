//! The REGISTERS section reassembled from DATA packets that may split a record
//! anywhere, and the records as the `registers` text file shows them.

use netdump_core::proto::{CpuState, Machine};

use crate::info::{CpuInfo, NOT_RECEIVED, hex64};
use crate::vmcore::CpuRecord;

/// Reassembles the REGISTERS section, whose packets may split a record anywhere.
#[derive(Debug, Clone)]
pub(super) struct RegisterAssembler {
    pub(super) bytes: Vec<u8>,
    have: Vec<bool>,
    complete: Vec<bool>,
    machine: Machine,
    record_len: usize,
}

impl RegisterAssembler {
    /// The section of `cpu_count` records of `machine`'s layout.
    pub(super) fn new(cpu_count: u16, machine: Machine) -> Self {
        let record_len = machine.record_len();
        let len = usize::from(cpu_count) * record_len;
        RegisterAssembler {
            bytes: vec![0; len],
            have: vec![false; len],
            complete: vec![false; usize::from(cpu_count)],
            machine,
            record_len,
        }
    }

    /// Stores `data` at `offset` of the section; returns the CPUs whose record this
    /// completed, or `None` when the bytes lie outside the section.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> Option<Vec<u16>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(data.len()).filter(|end| *end <= self.have.len())?;
        self.bytes[start..end].copy_from_slice(data);
        self.have[start..end].fill(true);
        let first = start / self.record_len;
        let last = (end - 1) / self.record_len;
        let mut done = Vec::new();
        for cpu in first..=last {
            let rec = cpu * self.record_len..(cpu + 1) * self.record_len;
            if !self.complete[cpu] && self.have[rec].iter().all(|h| *h) {
                self.complete[cpu] = true;
                done.push(cpu as u16);
            }
        }
        Some(done)
    }

    /// Forgets which bytes arrived, once the dump has ended (no more are taken): the
    /// records stay for `info.json`.
    pub(super) fn release(&mut self) {
        self.have = Vec::new();
    }

    pub(super) fn record(&self, cpu: u16) -> Option<CpuRecord> {
        let at = usize::from(cpu) * self.record_len;
        CpuRecord::parse(self.machine, self.bytes.get(at..at + self.record_len)?)
    }

    pub(super) fn complete_count(&self) -> u16 {
        self.complete.iter().filter(|c| **c).count() as u16
    }

    /// CPU `cpu`'s record, once all of it arrived.
    pub(super) fn received(&self, cpu: u16) -> Option<CpuRecord> {
        self.complete.get(usize::from(cpu)).filter(|c| **c)?;
        self.record(cpu)
    }

    /// What `info.json` says of each of the `cpu_count` announced CPUs, in index order.
    pub(super) fn cpus(&self, crashing: u16, cpu_count: u16) -> Vec<CpuInfo> {
        (0..cpu_count)
            .map(|index| {
                let record = self.received(index);
                let valid = record.filter(|r| r.is_valid());
                CpuInfo {
                    index,
                    apic_id: record.and_then(|r| r.apic_id()),
                    state: record.map_or_else(|| NOT_RECEIVED.to_string(), |r| state_name(&r)),
                    registers: valid.is_some(),
                    rip: valid.map(|r| hex64(r.pc())),
                    crashed: index == crashing,
                }
            })
            .collect()
    }

    /// Every CPU's record as text, the crashing CPU first (the `registers` file). A CPU
    /// without registers gets one line saying why: its state, or `not_received`.
    pub(super) fn text(&self, crashing: u16, cpu_count: u16) -> String {
        let order = std::iter::once(crashing).chain((0..cpu_count).filter(|c| *c != crashing));
        let mut text = String::new();
        for cpu in order {
            let record = self.received(cpu);
            let mut notes: Vec<String> =
                record.and_then(|r| r.apic_id()).map(|id| format!("apic {id}")).into_iter().collect();
            if cpu == crashing {
                notes.push("crashing".into());
            }
            let valid = record.filter(|r| r.is_valid());
            if let Some(r) = valid {
                // The crashing CPU's state says what "crashing" says, unless it says more.
                if cpu != crashing || !matches!(r.state(), Some(CpuState::Crashed | CpuState::Unknown)) {
                    notes.push(state_name(&r));
                }
            }
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
            let Some(r) = valid else {
                let why = record.map_or_else(|| NOT_RECEIVED.to_string(), |r| state_name(&r));
                text.push_str(&format!("cpu {cpu}{notes}: no registers ({why})\n"));
                continue;
            };
            text.push_str(&format!("cpu {cpu}{notes}\n"));
            for (name, v) in r.named() {
                text.push_str(&format!("  {name:<8} {v:#018x}\n"));
            }
        }
        text
    }
}

/// The name of a record's CPU state: [`CpuState::name`], or `unknown_<code>` for a code
/// this server does not know.
pub(super) fn state_name(r: &CpuRecord) -> String {
    match r.state() {
        Some(state) => state.name().to_string(),
        None => format!("unknown_{}", r.state_code()),
    }
}

/// The CPUs without registers and why, for the log: `3 (no_answer), 5-63 (not_received)`
/// (consecutive CPUs in the same state as one range, so that the line stays short when
/// a dump ended before the REGISTERS section); `None` when every CPU's arrived.
pub(super) fn missing_note(cpus: &[CpuInfo]) -> Option<String> {
    let mut runs: Vec<(u16, u16, &str)> = Vec::new();
    for c in cpus.iter().filter(|c| !c.registers) {
        match runs.last_mut() {
            Some((_, last, state)) if *last + 1 == c.index && *state == c.state => *last = c.index,
            _ => runs.push((c.index, c.index, &c.state)),
        }
    }
    let run = |(first, last, state): (u16, u16, &str)| {
        if last > first { format!("{first}-{last} ({state})") } else { format!("{first} ({state})") }
    };
    let runs: Vec<String> = runs.into_iter().map(run).collect();
    (!runs.is_empty()).then(|| runs.join(", "))
}
