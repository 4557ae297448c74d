//! What netdumpd holds in memory, as a function of its configuration: each dump being
//! received reserves its worst case when it is admitted ([`receiving_bytes`]), the
//! sum of the reservations stays under `limits.max_receive_mib`, an ended dump keeps
//! only [`ended_bytes`] while it is remembered, and [`bound`] adds up every term of the
//! server's memory (netdumpd/README.md, "Memory", has the formula in words).
//!
//! The per-item costs are upper estimates of the heap each item holds (its structures,
//! their allocator overhead, and what writing it out costs transiently), not
//! measurements: the storm test (`tests/storm.rs`) checks a real server's peak RSS
//! against [`bound`].

use std::time::Duration;

use netdump_core::proto::{MAX_BLOCK, MAX_CPUS, MAX_DATAGRAM, Machine};

use crate::config::ServerConfig;
use crate::dedup::KEPT_OCCURRENCES;
use crate::dumpdir::GATHER_LIMIT;
use crate::outbox::RecvBatch;
use crate::receive_window::ReceiveWindow;

const KIB: u64 = 1 << 10;

/// How long an ended session is remembered, to answer a repeated FINISH or CRASH (the
/// protocol promises at least 60 s).
pub const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(120);

/// A session's own state, whatever its dump: the announcement (32 ranges, 16 frames, a
/// 256-byte message), the client's registration and names, the vmcore layout, counters,
/// and `info.json` as it is written.
pub const SESSION_FIXED: u64 = 8 * KIB;
/// One packet remembered beyond the cumulative point (a gap): a B-tree entry.
pub const REORDER_ENTRY: u64 = 48;
/// One excluded run of a filtered dump: its B-tree entry, and its share of the
/// exclusion note built when the dump ends.
pub const EXCLUDED_RUN: u64 = 96;
/// One registered client: the registry's entry (with an encrypted session's keys and
/// replay window) and its share of `clients.json` as it is written.
pub const CLIENT: u64 = 2 * KIB;
/// One retired cookie, and its share of `clients.json`.
pub const RETIRED: u64 = 256;
/// One crash signature with its [`KEPT_OCCURRENCES`] occurrences, and its share of
/// `signatures.json` as it is written.
pub const SIGNATURE: u64 = 1024 + KEPT_OCCURRENCES as u64 * 512;
/// One queued job (a finished hook and analysis: the configuration they need).
pub const JOB: u64 = 4 * KIB;
/// Output kept from a hook or gdb: two streams of at most 1 MiB each.
pub const HOOK_OUTPUT: u64 = 2 << 20;
/// One dump directory as retention's scan holds it (names, paths, times: its summary,
/// not its parsed `info.json`).
pub const CATALOG_ENTRY: u64 = KIB;
/// The socket loop's fixed buffers: a receive batch of 64 slots of 64 KiB (runs of
/// datagrams with `UDP_GRO`; touched only as far as filled), the send and open buffers.
pub const LOOP_BUFFERS: u64 = (RecvBatch::SLOTS * RecvBatch::SLOT_LEN) as u64 + 2 * MAX_DATAGRAM as u64;
/// One netconsole client's state in the receiver.
pub const NETCONSOLE_CLIENT: u64 = 2 * KIB;

/// The register records of `cpu_count` CPUs of `machine` while they arrive (the bytes
/// and which of them arrived).
fn register_bytes(cpu_count: u16, machine: Machine) -> u64 {
    2 * u64::from(cpu_count) * machine.record_len() as u64 + u64::from(cpu_count)
}

/// What a dump being received may hold at most: its state, the packets beyond a gap
/// ([`ReceiveWindow::MAX_AHEAD`]), its register records, and with its memory image the
/// gathered vmcore bytes ([`GATHER_LIMIT`]), with compression the block decoder's buffer
/// ([`MAX_BLOCK`]), and when filtered up to `max_excluded_runs` runs.
pub fn receiving_bytes(
    cpu_count: u16,
    machine: Machine,
    memory: bool,
    compressed: bool,
    filtered: bool,
    max_excluded_runs: usize,
) -> u64 {
    let mut bytes = SESSION_FIXED + ReceiveWindow::MAX_AHEAD * REORDER_ENTRY + register_bytes(cpu_count, machine);
    if memory {
        bytes += GATHER_LIMIT as u64;
        if compressed {
            bytes += MAX_BLOCK as u64;
        }
        if filtered {
            bytes += max_excluded_runs as u64 * EXCLUDED_RUN;
        }
    }
    bytes
}

/// What an ended dump keeps while it is remembered ([`ENDED_SESSION_MEMORY`]): its
/// state and its register records (for `info.json`); buffers are released when it ends.
pub fn ended_bytes(cpu_count: u16, machine: Machine) -> u64 {
    SESSION_FIXED + u64::from(cpu_count) * machine.record_len() as u64 + u64::from(cpu_count)
}

/// The server's memory beyond its program, term by term (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBound {
    /// Dumps being received (or waiting for their DECISION): `max_sessions` of them,
    /// the memory images among them within `max_receive_mib`.
    pub receiving: u64,
    /// Ended dumps remembered: at most `max_sessions` plus the crashes admitted in
    /// [`ENDED_SESSION_MEMORY`] (and one second's burst) at `crashes_per_second`.
    pub ended: u64,
    /// The registry: `max_clients` and `max_retired`.
    pub registry: u64,
    /// The dedup index: `max_signatures`.
    pub signatures: u64,
    /// Hooks (crash hooks of waiting crashes, the job pool's) and the job queue.
    pub jobs: u64,
    /// Retention's scan of the dump directory: `dumps_on_disk` entries.
    pub catalog: u64,
    /// The socket loop's buffers and the netconsole receiver.
    pub fixed: u64,
}

impl MemoryBound {
    pub fn total(&self) -> u64 {
        self.receiving + self.ended + self.registry + self.signatures + self.jobs + self.catalog + self.fixed
    }
}

/// The bound on what a server running `config` holds, for clients announcing at most
/// `cpus` CPUs ([`MAX_CPUS`] for any client at all; register records taken at the
/// largest size), with `dumps_on_disk` dump directories for retention to scan (what
/// retention's own limits keep, or what the disk holds when it has none). Worst cases
/// otherwise: compression, and filtering wherever the configuration allows it.
pub fn bound(config: &ServerConfig, cpus: u16, dumps_on_disk: u64) -> MemoryBound {
    let l = &config.limits;
    let machine = Machine::Aarch64;
    let cpus = cpus.clamp(1, MAX_CPUS as u16);
    let with_memory = receiving_bytes(cpus, machine, true, true, config.page_filtering, l.max_excluded_runs);
    let without_memory = receiving_bytes(cpus, machine, false, false, false, 0);
    // Admission keeps the reservations of receiving dumps and a new memory image within
    // the budget; dumps without memory are admitted by count alone.
    let images = config.max_memory_dumps.min(config.max_sessions) as u64;
    let memory_part = (images * with_memory).min(l.max_receive_bytes);
    let receiving = memory_part + config.max_sessions as u64 * without_memory;
    let remembered =
        config.max_sessions as u64 + u64::from(l.crashes_per_second) * (ENDED_SESSION_MEMORY.as_secs() + 1);
    let ended = remembered * ended_bytes(cpus, machine);
    let registry = l.max_clients as u64 * CLIENT + l.max_retired as u64 * RETIRED;
    let signatures = l.max_signatures as u64 * SIGNATURE;
    let h = &config.hooks;
    let crash_hooks = if h.crash.is_some() || h.nospace.is_some() { config.max_sessions } else { 0 };
    let pool = h.register.is_some() || h.finished.is_some() || config.analysis.enabled();
    let pool_hooks = if pool { l.max_hook_processes } else { 0 };
    let jobs = (crash_hooks + pool_hooks) as u64 * HOOK_OUTPUT + l.max_queued_jobs as u64 * JOB;
    let catalog = dumps_on_disk * CATALOG_ENTRY;
    let netconsole = config.syslog_listen.map_or(0, |_| config.syslog_limits.max_clients as u64 * NETCONSOLE_CLIENT);
    MemoryBound { receiving, ended, registry, signatures, jobs, catalog, fixed: LOOP_BUFFERS + netconsole }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_image_costs_its_buffers_and_only_then() {
        let x86 = Machine::X86_64;
        let log_only = receiving_bytes(1, x86, false, true, true, 1000);
        let image = receiving_bytes(1, x86, true, false, false, 1000);
        assert_eq!(image - log_only, GATHER_LIMIT as u64);
        assert_eq!(receiving_bytes(1, x86, true, true, false, 1000) - image, MAX_BLOCK as u64);
        assert_eq!(receiving_bytes(1, x86, true, false, true, 1000) - image, 1000 * EXCLUDED_RUN);
        assert!(ended_bytes(64, x86) < receiving_bytes(64, x86, false, false, false, 0));
    }

    #[test]
    fn the_bound_follows_the_configuration() {
        let c = ServerConfig::default();
        let b = bound(&c, 64, 0);
        let more = ServerConfig { max_sessions: c.max_sessions * 2, ..c.clone() };
        assert!(bound(&more, 64, 0).receiving > b.receiving);
        // The receive budget caps the memory images whatever max_memory_dumps says.
        let mut capped = c.clone();
        capped.max_memory_dumps = 4096;
        capped.max_sessions = 4096;
        capped.limits.max_receive_bytes = 64 << 20;
        let without = receiving_bytes(MAX_CPUS as u16, Machine::Aarch64, false, false, false, 0);
        assert_eq!(bound(&capped, 64, 0).receiving, (64 << 20) + 4096 * without);
        assert_eq!(bound(&c, 64, 10).catalog - b.catalog, 10 * CATALOG_ENTRY);
        assert_eq!(b.total(), b.receiving + b.ended + b.registry + b.signatures + b.jobs + b.fixed);
    }
}
