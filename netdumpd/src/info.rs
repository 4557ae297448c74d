//! `info.json`: what the server knows about one crash and its transfer, for people and
//! for scripts. Written when the crash is announced (status `receiving`) and rewritten
//! when the dump ends. Addresses, error codes, cookies and CRCs are hex strings
//! (`"0x…"`); sizes and counts are numbers. The field list is documented in the
//! crate's README.

use std::collections::BTreeMap;

use netdump_core::arch::x86_64::Exception;
use serde::Serialize;

/// Status of a dump, as `info.json` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpStatus {
    /// Data is still arriving.
    Receiving,
    /// FINISH verified: `vmcore` is whole.
    Complete,
    /// The memory image was skipped by the DECISION; log and registers verified.
    Skipped,
    /// Aborted, silent, failed verification or could not be written: `vmcore-incomplete`.
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    pub name: String,
    pub mac: String,
    /// The address the client reported in its HELLO.
    pub ip: String,
    /// The address and port its packets come from.
    pub source: String,
    pub cookie: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonInfo {
    /// `panic`, `exception` or `requested`.
    pub kind: &'static str,
    pub vector: u8,
    /// Name of the exception vector (`#PF`, …) for kind `exception`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_name: Option<&'static str>,
    pub error_code: String,
    pub fault_address: String,
    /// Code addresses of the crashing stack from the announcement, innermost first.
    pub frames: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RangeInfo {
    pub phys_start: String,
    pub length: u64,
    pub virt_start: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionInfo {
    /// `dump_all`, `skip_memory` or `abort`.
    pub verdict: &'static str,
    /// `none`, `hook`, `no_space`, `duplicate`, `busy`, `bad_announcement` or
    /// `try_elsewhere`.
    pub why: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrcInfo {
    /// The stream CRC the client sent in FINISH (null before FINISH).
    pub expected: Option<String>,
    /// The stream CRC over the packets received so far, in `seq` order.
    pub computed: String,
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FinishInfo {
    /// DATA packets the client sent (FINISH's `seq`).
    pub packets: u32,
    pub total_bytes: u64,
    pub memory_skipped: bool,
    pub memory_incomplete: bool,
    /// FINISH_ACK status: `verified`, `crc_mismatch`, `missing_data`, `write_error`.
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbortInfo {
    pub code: u16,
    /// `server_silent`, `nic_error`, `nested_panic`, `stopped_by_server`,
    /// `memory_unreadable` or `unknown`.
    pub reason: &'static str,
    pub text: String,
}

/// What compression did to a dump: `bytes_received` (on the wire) against the section
/// bytes it carried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompressionInfo {
    /// Distinct DATA packets that carried an LZ4 block.
    pub blocks: u64,
    /// Their data bytes, as on the wire.
    pub block_bytes: u64,
    /// The section bytes they decoded to.
    pub decoded_bytes: u64,
    /// Section bytes received (`memory_bytes` + log, registers, extra) per data byte on
    /// the wire: 1.0 when nothing was compressed.
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpInfo {
    pub status: DumpStatus,
    /// Why the dump ended as it did, in words (empty while receiving or when complete).
    pub status_reason: String,
    pub client: ClientInfo,
    /// The protocol version the client registered with (1 or 2).
    pub protocol_version: u8,
    /// Whether every packet of the dump after the handshake was sealed.
    pub encrypted: bool,
    /// Whether any of the dump's DATA carried an LZ4 block (feature `COMPRESSED`).
    pub compressed: bool,
    /// The LZ4 blocks received, when the client was granted compression.
    pub compression: Option<CompressionInfo>,
    pub reason: ReasonInfo,
    pub message: String,
    pub cpu_count: u16,
    pub crashing_cpu: u16,
    /// The client's architecture (`x86_64`, `aarch64`): the vmcore's `e_machine`.
    pub machine: &'static str,
    pub page_size: u32,
    pub memory_ranges: Vec<RangeInfo>,
    /// Sum of the announced ranges.
    pub memory_size: u64,
    pub decision: DecisionInfo,
    /// Data bytes of every distinct DATA packet (sub-headers excluded).
    pub bytes_received: u64,
    pub packets_received: u64,
    /// Copies of packets already received (retransmissions whose ACK was lost,
    /// duplicated datagrams).
    pub duplicate_packets: u64,
    pub log_bytes_announced: u64,
    pub log_bytes: u64,
    /// CPUs whose whole register record arrived (valid or not: see `cpus`).
    pub registers_received: u16,
    /// Every announced CPU, in index order: what became of it and whether its registers
    /// arrived.
    pub cpus: Vec<CpuInfo>,
    /// Indices of the CPUs without registers: record not valid, or not received.
    pub missing_cpus: Vec<u16>,
    pub memory_bytes: u64,
    /// Memory pages received (memory bytes / page size).
    pub pages: u64,
    /// All-zero pages the client did not send (from FINISH; holes in the vmcore).
    pub zero_pages_skipped: u64,
    /// Retransmitted DATA packets: the client's count from FINISH, else the packets
    /// seen with the RETRANSMIT flag.
    pub retransmissions: u64,
    pub extra_bytes: u64,
    pub start_time: String,
    pub end_time: Option<String>,
    pub duration_seconds: f64,
    /// Data bytes per second over the duration, in MB/s (10^6 bytes).
    pub throughput_mb_s: f64,
    pub crc: CrcInfo,
    pub finish: Option<FinishInfo>,
    pub abort: Option<AbortInfo>,
    /// Dropped packets of this session, by reason (only non-zero ones).
    pub drops: BTreeMap<&'static str, u64>,
    /// Name of the core file in this directory; null when the memory image was skipped
    /// (the directory then has no vmcore: `registers` holds the registers).
    pub vmcore: Option<&'static str>,
    /// The crash's signature, its occurrence count and the dump it repeats (null until
    /// the server decided).
    pub dedup: Option<DedupInfo>,
    /// What a filtered dump left out (null when the client was not granted `FILTER`).
    pub filter: Option<FilterInfo>,
}

/// The pages a filtered dump left out: holes in the vmcore that were not zero, listed in
/// its exclusion note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterInfo {
    /// Excluded runs received.
    pub runs: u64,
    /// Pages excluded, all classes.
    pub excluded_pages: u64,
    /// Pages excluded per class: `page_cache`, `page_cache_private`, `user`, `free`
    /// (every class, zeros included).
    pub pages_by_class: BTreeMap<&'static str, u64>,
}

/// One CPU of the crash in `info.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    pub index: u16,
    /// The local APIC id, when the client sent it.
    pub apic_id: Option<u32>,
    /// The CPU's state at the dump as its record says it (`crashed`, `stopped`,
    /// `panicked`, `no_answer`, `offline`, `unknown`, or `unknown_<code>` for a code this
    /// server does not know); `not_received` when its record did not arrive.
    pub state: String,
    /// A complete record with captured values arrived.
    pub registers: bool,
    /// `rip` of those registers (null without them).
    pub rip: Option<String>,
    /// The CPU is the announcement's crashing CPU.
    pub crashed: bool,
}

/// `state` of a CPU whose register record did not arrive.
pub const NOT_RECEIVED: &str = "not_received";

/// The mnemonic of an x86 exception vector (`#PF`); `None` for a reserved vector or one
/// above 31.
pub fn vector_name(vector: u8) -> Option<&'static str> {
    Exception::from_vector(vector).map(Exception::mnemonic)
}

pub fn hex64(v: u64) -> String {
    format!("{v:#x}")
}

pub fn hex32(v: u32) -> String {
    format!("{v:#010x}")
}

/// What deduplication ([`crate::dedup`]) says about one announced crash, recorded in its `info.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DedupInfo {
    pub signature: String,
    /// 1 for the first crash with this signature.
    pub occurrence: u64,
    /// The earlier dump (with memory) this one repeats, when it does.
    pub duplicate_of: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_names_cover_the_architectural_exceptions() {
        assert_eq!(vector_name(14), Some("#PF"));
        assert_eq!(vector_name(13), Some("#GP"));
        assert_eq!(vector_name(9), Some("CSO"));
        assert_eq!(vector_name(15), None);
        // Missing before the names came from netdump-core.
        assert_eq!(vector_name(28), Some("#HV"));
        assert_eq!(vector_name(29), Some("#VC"));
        assert_eq!(vector_name(30), Some("#SX"));
        assert_eq!(vector_name(31), None);
        assert_eq!(vector_name(200), None);
    }

    #[test]
    fn hex_formats_are_prefixed() {
        assert_eq!(hex64(0xdead), "0xdead");
        assert_eq!(hex32(0xbeef), "0x0000beef");
    }

    #[test]
    fn status_serialises_in_snake_case() {
        assert_eq!(serde_json::to_string(&DumpStatus::Incomplete).unwrap(), "\"incomplete\"");
    }
}
