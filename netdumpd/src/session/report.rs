//! What `info.json` says about a session: the report of a dump, received or not.

use std::time::{Duration, Instant};

use netdump_core::memory::PageClass;
use netdump_core::proto::{CrashKind, FINISH_MEMORY_INCOMPLETE, FINISH_MEMORY_SKIPPED, features};

use super::{Phase, Session};
use crate::dumpdir::{VMCORE, VMCORE_INCOMPLETE};
use crate::info::{
    CompressionInfo, CrcInfo, DecisionInfo, DumpInfo, FilterInfo, FinishInfo, RangeInfo, ReasonInfo, hex32, hex64,
    vector_name,
};

impl Session {
    pub(super) fn duration(&self) -> Duration {
        let end = match self.ended {
            Some((at, _)) => at,
            None => Instant::now(),
        };
        end.saturating_duration_since(self.started)
    }

    pub(super) fn throughput_mb_s(&self) -> f64 {
        let secs = self.duration().as_secs_f64();
        if secs > 0.0 { self.counts.data_bytes as f64 / secs / 1e6 } else { 0.0 }
    }

    /// The contents of `info.json`.
    pub fn info(&self) -> DumpInfo {
        let c = &self.crash;
        let page_size = u64::from(c.page_size.max(1));
        let finish = self.finish.map(|(packets, f, status)| FinishInfo {
            packets,
            total_bytes: f.total_bytes,
            memory_skipped: f.flags & FINISH_MEMORY_SKIPPED != 0,
            memory_incomplete: f.flags & FINISH_MEMORY_INCOMPLETE != 0,
            result: status.name(),
        });
        let cpus = self.registers.cpus(c.crashing_cpu, c.cpu_count);
        DumpInfo {
            status: self.status(),
            status_reason: self.status_reason.clone(),
            client: self.client.clone(),
            protocol_version: self.registration.protocol_version,
            encrypted: self.registration.encrypted,
            compressed: self.counts.lz4_blocks > 0,
            compression: (self.registration.features & features::COMPRESSED != 0).then(|| {
                let n = &self.counts;
                let wire = n.data_bytes;
                let section = wire - n.lz4_wire_bytes + n.lz4_raw_bytes;
                CompressionInfo {
                    blocks: n.lz4_blocks,
                    block_bytes: n.lz4_wire_bytes,
                    decoded_bytes: n.lz4_raw_bytes,
                    ratio: if wire > 0 { section as f64 / wire as f64 } else { 1.0 },
                }
            }),
            reason: ReasonInfo {
                kind: c.kind.name(),
                vector: c.vector,
                vector_name: (c.kind == CrashKind::Exception).then(|| vector_name(c.vector)).flatten(),
                error_code: hex64(c.error_code),
                fault_address: hex64(c.fault_address),
                frames: c.frames.iter().map(|a| hex64(*a)).collect(),
            },
            message: c.message.clone(),
            cpu_count: c.cpu_count,
            crashing_cpu: c.crashing_cpu,
            machine: c.machine.name(),
            page_size: c.page_size,
            memory_ranges: c
                .ranges
                .iter()
                .map(|r| RangeInfo {
                    phys_start: hex64(r.phys_start),
                    length: r.length,
                    virt_start: hex64(r.virt_start),
                })
                .collect(),
            memory_size: c.memory_size(),
            decision: DecisionInfo { verdict: self.decision.verdict.name(), why: self.decision.why.name() },
            bytes_received: self.counts.data_bytes,
            packets_received: self.window.packets(),
            duplicate_packets: self.counts.duplicates,
            log_bytes_announced: c.log_len,
            log_bytes: self.counts.log_bytes,
            registers_received: self.registers.complete_count(),
            missing_cpus: cpus.iter().filter(|c| !c.registers).map(|c| c.index).collect(),
            cpus,
            memory_bytes: self.counts.memory_bytes,
            pages: self.counts.memory_bytes / page_size,
            zero_pages_skipped: self.finish.map(|(_, f, _)| f.zero_pages).unwrap_or(0),
            retransmissions: self.finish.map(|(_, f, _)| f.retransmissions).unwrap_or(self.counts.retransmit_flagged),
            extra_bytes: self.counts.extra_bytes,
            start_time: crate::utc::rfc3339(self.started_utc),
            end_time: self.ended.map(|(_, t)| crate::utc::rfc3339(t)),
            duration_seconds: self.duration().as_secs_f64(),
            throughput_mb_s: self.throughput_mb_s(),
            crc: CrcInfo {
                expected: self.finish.map(|(_, f, _)| hex32(f.stream_crc)),
                computed: hex32(self.window.stream_crc()),
                verified: self.phase == Phase::Verified,
            },
            finish,
            abort: self.abort.clone(),
            drops: self.drops.to_map(),
            vmcore: match &self.output {
                Some(o) if !o.with_vmcore => None,
                _ if self.phase == Phase::Verified => Some(VMCORE),
                _ => Some(VMCORE_INCOMPLETE),
            },
            dedup: self.dedup.clone(),
            filter: self.filtered().then(|| FilterInfo {
                runs: self.excluded.run_count() as u64,
                excluded_pages: self.excluded.total_pages(),
                pages_by_class: PageClass::EXCLUDABLE.iter().map(|c| (c.name(), self.excluded.pages(*c))).collect(),
            }),
        }
    }
}
