//! Duplicate crashes: the paper's idea nobody built. A crash whose signature matches a
//! recent dump that has its memory image need not send the image again; the occurrence
//! is still recorded (a dump directory with log and registers, and a count).
//!
//! The signature is decided at the crash announcement, because that is when the server
//! must answer DUMP_ALL or SKIP_MEMORY: it hashes what the CRASH says — the kind, the
//! exception vector, the panic message and the innermost code addresses of the crashing
//! stack, which the client walks before announcing. Occurrences are kept in
//! `<dir>/signatures.json`, which outlives the dumps retention removes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netdump_core::proto::{CrashKind, Verdict};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::announcement::CrashAnnouncement;
use crate::dumpdir::INFO;
use crate::files::write_atomic;
pub use crate::info::DedupInfo;
use crate::limits::Limits;

pub const SIGNATURES_FILE: &str = "signatures.json";

/// What to do with a repeated crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DedupPolicy {
    /// Take every memory image (the occurrence is still counted).
    #[default]
    KeepAll,
    /// Skip the memory image of a crash whose signature has a dump with memory taken
    /// within this long.
    SkipMemoryWithin(Duration),
}

/// Code addresses of the crashing stack the signature hashes: the innermost ones, where
/// the bug is, not the callers that vary with how it was reached.
pub const SIGNATURE_FRAMES: usize = 8;

/// The signature of an announced crash: 16 hex digits of a 64-bit FNV-1a over the
/// kind, the vector, the message and the first [`SIGNATURE_FRAMES`] code addresses of
/// the crashing stack, so it is stable across servers and restarts. The addresses follow
/// a `0xff` byte (never part of UTF-8, so no message can imitate them), 8 bytes each,
/// big-endian; a crash announced without addresses hashes as if the list did not exist.
pub fn signature(crash: &CrashAnnouncement) -> String {
    let kind: u8 = match crash.kind {
        CrashKind::Panic => 1,
        CrashKind::Exception => 2,
        CrashKind::Requested => 3,
    };
    let frames = &crash.frames[..crash.frames.len().min(SIGNATURE_FRAMES)];
    let separator: &[u8] = if frames.is_empty() { &[] } else { &[0xff] };
    let addresses = frames.iter().flat_map(|a| a.to_be_bytes());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [kind, crash.vector, 0]
        .into_iter()
        .chain(crash.message.bytes())
        .chain(separator.iter().copied())
        .chain(addresses)
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One dump of a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub dump: String,
    pub client: String,
    pub time: String,
    /// Whether this dump was to take the memory image (DUMP_ALL).
    pub memory: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    /// Every occurrence ever seen, including those whose dumps were since removed.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub message: String,
    /// The most recent occurrences (at most [`KEPT_OCCURRENCES`]), and always the latest
    /// one that took the memory image.
    pub occurrences: Vec<Occurrence>,
}

/// Occurrences listed per signature; the count goes on beyond.
pub const KEPT_OCCURRENCES: usize = 32;

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    signatures: BTreeMap<String, SignatureEntry>,
}

/// The index of signatures, `<dir>/signatures.json`.
#[derive(Debug)]
pub struct DedupIndex {
    path: PathBuf,
    root: PathBuf,
    file: IndexFile,
    /// Signatures kept at most (`limits.max_signatures`).
    max_signatures: usize,
}

impl DedupIndex {
    /// Loads the index; a missing file is an empty index, a corrupt one is moved aside.
    pub fn load(root: &Path) -> DedupIndex {
        let path = root.join(SIGNATURES_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), "corrupt signature index ({e}); starting a new one");
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                IndexFile::default()
            }),
            Err(_) => IndexFile::default(),
        };
        DedupIndex { path, root: root.to_path_buf(), file, max_signatures: Limits::default().max_signatures }
    }

    /// Keeps at most `n` signatures from the next [`record`](Self::record) on: beyond,
    /// the least recently seen are forgotten (their count with them), so that crashes
    /// with ever new signatures cannot grow the index, and its file, without bound.
    pub fn set_max_signatures(&mut self, n: usize) {
        self.max_signatures = n.max(1);
    }

    /// Signatures in the index.
    pub fn len(&self) -> usize {
        self.file.signatures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.signatures.is_empty()
    }

    pub fn get(&self, signature: &str) -> Option<&SignatureEntry> {
        self.file.signatures.get(signature)
    }

    /// The earlier dump with memory that a crash of `signature` at `now` repeats under
    /// `policy`: within the policy's window, and still present, received or receiving.
    pub fn duplicate_of(&self, signature: &str, policy: DedupPolicy, now: OffsetDateTime) -> Option<String> {
        let DedupPolicy::SkipMemoryWithin(window) = policy else { return None };
        let entry = self.get(signature)?;
        entry.occurrences.iter().rev().find_map(|o| {
            let t = OffsetDateTime::parse(&o.time, &Rfc3339).ok()?;
            let age = now - t;
            let recent = age.is_negative() || age.unsigned_abs() <= window;
            (o.memory && recent && self.has_memory_image(&o.dump)).then(|| o.dump.clone())
        })
    }

    /// Whether the dump `name` still exists with its memory complete or arriving.
    fn has_memory_image(&self, name: &str) -> bool {
        let Ok(bytes) = std::fs::read(self.root.join(name).join(INFO)) else { return false };
        let Ok(info) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return false };
        let status = info.get("status").and_then(|s| s.as_str()).unwrap_or("");
        let verdict = info.pointer("/decision/verdict").and_then(|s| s.as_str()).unwrap_or("");
        verdict == Verdict::DumpAll.name() && matches!(status, "complete" | "receiving")
    }

    /// Records an occurrence and writes the index; returns its number.
    pub fn record(&mut self, signature: &str, message: &str, occurrence: Occurrence) -> io::Result<u64> {
        let entry = self.file.signatures.entry(signature.to_string()).or_default();
        if entry.count == 0 {
            entry.first_seen = occurrence.time.clone();
            entry.message = message.to_string();
        }
        entry.count += 1;
        entry.last_seen = occurrence.time.clone();
        entry.occurrences.push(occurrence);
        // The oldest go first, but never the latest one with memory: it is what makes a
        // storm of repeats duplicates, however many of them came since.
        while entry.occurrences.len() > KEPT_OCCURRENCES {
            let keep = entry.occurrences.iter().rposition(|o| o.memory);
            entry.occurrences.remove(if keep == Some(0) { 1 } else { 0 });
        }
        let count = entry.count;
        while self.file.signatures.len() > self.max_signatures {
            // The least recently seen other than this one (RFC 3339 UTC sorts as time).
            let oldest = self
                .file
                .signatures
                .iter()
                .filter(|(s, _)| s.as_str() != signature)
                .min_by(|a, b| a.1.last_seen.cmp(&b.1.last_seen))
                .map(|(s, _)| s.clone());
            let Some(oldest) = oldest else { break };
            self.file.signatures.remove(&oldest);
        }
        self.file.version = 1;
        let mut text = serde_json::to_vec_pretty(&self.file).map_err(io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.path, &text)?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn crash(message: &str, kind: CrashKind, vector: u8) -> CrashAnnouncement {
        CrashAnnouncement {
            kind,
            vector,
            cpu_count: 1,
            crashing_cpu: 0,
            error_code: 7,
            fault_address: 0x1000,
            page_size: 4096,
            machine: netdump_core::proto::Machine::X86_64,
            log_len: 10,
            ranges: vec![],
            frames: vec![],
            message: message.into(),
        }
    }

    #[test]
    fn the_signature_is_stable_and_depends_on_kind_vector_and_message() {
        let a = signature(&crash("boom", CrashKind::Panic, 0));
        assert_eq!(a.len(), 16);
        assert_eq!(a, signature(&crash("boom", CrashKind::Panic, 0)));
        // A fixed value (FNV-1a of 01 00 00 "boom", computed independently): the
        // signature must not change between releases.
        assert_eq!(a, "83d7e5b9747e1b87");
        assert_ne!(a, signature(&crash("boom!", CrashKind::Panic, 0)));
        assert_ne!(a, signature(&crash("boom", CrashKind::Exception, 0)));
        assert_ne!(signature(&crash("", CrashKind::Exception, 13)), signature(&crash("", CrashKind::Exception, 14)));
    }

    #[test]
    fn the_signature_hashes_the_innermost_code_addresses() {
        let with = |frames: &[u64]| {
            signature(&CrashAnnouncement { frames: frames.to_vec(), ..crash("boom", CrashKind::Panic, 0) })
        };
        let a = with(&[0x10_2345, 0x10_1000]);
        // FNV-1a of 01 00 00 "boom" ff, then 00..00 10 23 45 and 00..00 10 10 00.
        assert_eq!(a, "9c1e9db5fbd9c30c");
        assert_ne!(a, with(&[0x10_2345, 0x10_1001]));
        assert_ne!(a, with(&[0x10_2345]));
        assert_ne!(a, signature(&crash("boom", CrashKind::Panic, 0)));
        // Callers beyond the innermost eight do not matter.
        let deep: Vec<u64> = (1..=8).collect();
        assert_eq!(with(&[deep.clone(), vec![100]].concat()), with(&[deep, vec![200]].concat()));
    }

    fn write_info(root: &Path, dump: &str, verdict: &str, status: &str) {
        std::fs::create_dir_all(root.join(dump)).unwrap();
        let info = serde_json::json!({ "status": status, "decision": { "verdict": verdict } });
        std::fs::write(root.join(dump).join(INFO), info.to_string()).unwrap();
    }

    fn occ(dump: &str, time: &str, memory: bool) -> Occurrence {
        Occurrence { dump: dump.into(), client: "n".into(), time: time.into(), memory }
    }

    #[test]
    fn a_repeat_within_the_window_of_a_dump_with_memory_is_a_duplicate() {
        let dir = TestDir::new("dedup-window");
        let mut index = DedupIndex::load(dir.path());
        write_info(dir.path(), "n-1", "dump_all", "complete");
        assert_eq!(index.record("s", "boom", occ("n-1", "2026-01-01T00:00:00Z", true)).unwrap(), 1);
        let day = Duration::from_secs(86400);
        let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        let policy = DedupPolicy::SkipMemoryWithin(7 * day);
        assert_eq!(index.duplicate_of("s", policy, t("2026-01-05T00:00:00Z")).as_deref(), Some("n-1"));
        assert_eq!(index.duplicate_of("s", policy, t("2026-01-09T00:00:00Z")), None, "outside the window");
        assert_eq!(index.duplicate_of("s", DedupPolicy::KeepAll, t("2026-01-02T00:00:00Z")), None);
        assert_eq!(index.duplicate_of("other", policy, t("2026-01-02T00:00:00Z")), None);
        // An incomplete or removed earlier dump does not count.
        write_info(dir.path(), "n-1", "dump_all", "incomplete");
        assert_eq!(index.duplicate_of("s", policy, t("2026-01-02T00:00:00Z")), None);
        write_info(dir.path(), "n-1", "dump_all", "complete");
        std::fs::remove_dir_all(dir.path().join("n-1")).unwrap();
        assert_eq!(index.duplicate_of("s", policy, t("2026-01-02T00:00:00Z")), None);
    }

    #[test]
    fn occurrences_are_counted_and_persist() {
        let dir = TestDir::new("dedup-count");
        let mut index = DedupIndex::load(dir.path());
        for i in 0..40 {
            let n = index.record("s", "boom", occ(&format!("d{i}"), "2026-01-01T00:00:00Z", i == 0)).unwrap();
            assert_eq!(n, i + 1);
        }
        let again = DedupIndex::load(dir.path());
        let e = again.get("s").unwrap();
        assert_eq!(e.count, 40);
        assert_eq!(e.occurrences.len(), KEPT_OCCURRENCES);
        assert_eq!(e.occurrences.last().unwrap().dump, "d39");
        assert_eq!(e.message, "boom");
    }

    #[test]
    fn beyond_its_limit_the_least_recently_seen_signature_is_forgotten() {
        let dir = TestDir::new("dedup-limit");
        let mut index = DedupIndex::load(dir.path());
        index.set_max_signatures(3);
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            index.record(s, "boom", occ(&format!("d{i}"), &format!("2026-01-0{}T00:00:00Z", i + 1), true)).unwrap();
        }
        // "a" seen again: "b" is now the least recently seen.
        index.record("a", "boom", occ("d3", "2026-01-04T00:00:00Z", true)).unwrap();
        index.record("d", "boom", occ("d4", "2026-01-05T00:00:00Z", true)).unwrap();
        assert_eq!(index.len(), 3);
        assert!(index.get("b").is_none(), "the least recently seen goes");
        assert_eq!(index.get("a").unwrap().count, 2);
        let again = DedupIndex::load(dir.path());
        assert_eq!(again.len(), 3, "the file holds what the index holds");
        assert!(again.get("c").is_some() && again.get("d").is_some());
    }

    #[test]
    fn the_latest_dump_with_memory_outlives_any_number_of_repeats() {
        let dir = TestDir::new("dedup-storm");
        let mut index = DedupIndex::load(dir.path());
        write_info(dir.path(), "first", "dump_all", "complete");
        index.record("s", "boom", occ("first", "2026-01-01T00:00:00Z", true)).unwrap();
        for i in 0..3 * KEPT_OCCURRENCES {
            index.record("s", "boom", occ(&format!("repeat{i}"), "2026-01-01T00:00:01Z", false)).unwrap();
        }
        let e = index.get("s").unwrap();
        assert_eq!(e.occurrences.len(), KEPT_OCCURRENCES);
        assert_eq!(e.occurrences[0].dump, "first");
        assert_eq!(e.occurrences.last().unwrap().dump, format!("repeat{}", 3 * KEPT_OCCURRENCES - 1));
        let t = OffsetDateTime::parse("2026-01-01T00:01:00Z", &Rfc3339).unwrap();
        let policy = DedupPolicy::SkipMemoryWithin(Duration::from_secs(86400));
        assert_eq!(index.duplicate_of("s", policy, t).as_deref(), Some("first"));
    }

    #[test]
    fn a_corrupt_index_is_moved_aside() {
        let dir = TestDir::new("dedup-corrupt");
        std::fs::write(dir.path().join(SIGNATURES_FILE), b"{nope").unwrap();
        let index = DedupIndex::load(dir.path());
        assert!(index.get("s").is_none());
        assert!(dir.path().join("signatures.json.corrupt").exists());
    }
}
