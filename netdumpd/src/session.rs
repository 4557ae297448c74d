//! One crash dump being received: the server side of the protocol for one cookie,
//! from its CRASH to its FINISH_ACK (docs/PROTOCOL.md, "Server state machine").
//!
//! ```text
//! Receiving --FINISH (verified)--> Verified (status complete, or skipped when the memory was)
//!     |  \--FINISH (mismatch/missing/write error)--> Failed
//!     \--ABORT / silence / disk error / shutdown--> Failed
//! Declined: the DECISION was ABORT; nothing is received.
//! ```
//!
//! A session owns its dump directory's files and writes every DATA packet where it
//! belongs as it arrives, in any order; the stream CRC is kept by [`ReceiveWindow`].
//! It never panics on what a packet says: every offset is checked before it is used.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use netdump_core::proto::{
    AfterDump, CrashKind, Data, Decision, DecisionReason, FINISH_MEMORY_INCOMPLETE, FINISH_MEMORY_SKIPPED,
    Finish, FinishAck, FinishStatus, MAX_DATAGRAM, MAX_SACK_BYTES, MemoryRange, REGISTER_RECORD_LEN, RegisterRecord,
    Section, Verdict, abort_reason, flags,
};
use time::OffsetDateTime;

pub use crate::announcement::CrashAnnouncement;
use crate::dedup::DedupInfo;
use crate::dumpdir::{DumpDir, DumpFiles, REGISTERS, VMCORE, VMCORE_INCOMPLETE};
use crate::info::{
    AbortInfo, ClientInfo, CrcInfo, DecisionInfo, DumpInfo, DumpStatus, FinishInfo, RangeInfo, ReasonInfo, hex32,
    hex64, vector_name,
};
use crate::receive_window::{ReceiveWindow, SeqStatus};
use crate::registry::Client;
use crate::stats::{DropCounts, DropReason};
use crate::vmcore::VmcoreLayout;

/// The server acknowledges after this many DATA packets of a session even within a burst.
pub const ACK_EVERY: u32 = 32;

/// How long an owed ACK may wait for more packets to cover (delayed ACK).
pub const ACK_DELAY: Duration = Duration::from_millis(2);
/// Largest EXTRA section the server keeps.
pub const MAX_EXTRA_BYTES: u64 = 64 << 20;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Receiving,
    /// FINISH verified the stream.
    Verified,
    /// Ended without a verified dump; FINISH is answered with `answer`.
    Failed {
        answer: FinishStatus,
    },
    /// The DECISION was ABORT.
    Declined,
}

/// The directory of a dump, its files while it is received, and their layout.
#[derive(Debug)]
struct Output {
    dir: DumpDir,
    /// Open while the dump is received; closed when it ends, so that ended sessions
    /// (remembered a while to answer repeats) hold no file descriptors.
    files: Option<DumpFiles>,
    /// Whether the directory has a vmcore (the memory image was not skipped).
    with_vmcore: bool,
    layout: VmcoreLayout,
}

/// Reassembles the REGISTERS section, whose packets may split a record anywhere.
#[derive(Debug, Clone)]
struct RegisterAssembler {
    bytes: Vec<u8>,
    have: Vec<bool>,
    complete: Vec<bool>,
}

impl RegisterAssembler {
    fn new(cpu_count: u16) -> Self {
        let len = usize::from(cpu_count) * REGISTER_RECORD_LEN;
        RegisterAssembler { bytes: vec![0; len], have: vec![false; len], complete: vec![false; usize::from(cpu_count)] }
    }

    /// Stores `data` at `offset` of the section; returns the CPUs whose record this
    /// completed, or `None` when the bytes lie outside the section.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<Vec<u16>> {
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

    fn record(&self, cpu: u16) -> Option<RegisterRecord> {
        let at = usize::from(cpu) * REGISTER_RECORD_LEN;
        RegisterRecord::parse(self.bytes.get(at..at + REGISTER_RECORD_LEN)?).ok()
    }

    fn complete_count(&self) -> u16 {
        self.complete.iter().filter(|c| **c).count() as u16
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Data bytes (sub-headers excluded) of distinct packets.
    data_bytes: u64,
    duplicates: u64,
    retransmit_flagged: u64,
    log_bytes: u64,
    memory_bytes: u64,
    extra_bytes: u64,
}

/// What the server should do after a DATA packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOutcome {
    /// Send an ACK now rather than after the burst.
    pub ack_now: bool,
    /// The packet was dropped (and counted in the session) for this reason.
    pub dropped: Option<DropReason>,
}

/// An ACK to send: the header `seq` and the payload's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckReply {
    pub cumulative: u32,
    pub stop: bool,
    bitmap: [u8; MAX_SACK_BYTES],
    bitmap_len: usize,
}

impl AckReply {
    pub fn bitmap(&self) -> &[u8] {
        &self.bitmap[..self.bitmap_len]
    }
}

/// What the session needs to know about the server to start.
#[derive(Debug, Clone, Copy)]
pub struct StartRequest<'a> {
    pub cookie: u64,
    pub client: &'a Client,
    /// The address the CRASH came from; DATA is accepted from it only.
    pub peer: SocketAddr,
    /// The dump directory (root of all dumps).
    pub root: &'a Path,
    /// What the server wants to answer (DUMP_ALL, SKIP_MEMORY or ABORT, and why).
    pub verdict: Verdict,
    pub why: DecisionReason,
    pub now: Instant,
    /// The dump's directory when the server created it before deciding (for the crash
    /// hook); else the session creates one under `root`.
    pub dir: Option<&'a DumpDir>,
}

#[derive(Debug)]
pub struct Session {
    cookie: u64,
    client: ClientInfo,
    peer: SocketAddr,
    /// The registration the crash came from (the registry may have moved on since).
    registration: Client,
    crash: CrashAnnouncement,
    decision: Decision,
    phase: Phase,
    output: Option<Output>,
    window: ReceiveWindow,
    registers: RegisterAssembler,
    counts: Counts,
    drops: DropCounts,
    started: Instant,
    started_utc: OffsetDateTime,
    /// When new data last arrived (or the session started): silence is measured from
    /// it, so repeated or duplicate packets cannot keep a dump open for ever.
    last_progress: Instant,
    /// When `info.json` was last written while receiving.
    info_written: Instant,
    ended: Option<(Instant, OffsetDateTime)>,
    since_ack: u32,
    ack_due: bool,
    /// When the owed ACK became owed (the delayed-ACK clock).
    ack_owed_since: Option<Instant>,
    finish: Option<(u32, Finish, FinishStatus)>,
    abort: Option<AbortInfo>,
    status_reason: String,
    write_error: Option<String>,
    /// The last write of `info.json` failed.
    info_unwritten: std::cell::Cell<bool>,
    /// Duplicate detection's view of this crash, for `info.json`.
    dedup: Option<DedupInfo>,
    /// Set when the dump ends, taken once by the server (hooks, analysis, retention).
    end_event: bool,
}

impl Session {
    /// Opens the session of an announced crash: lays out and creates the dump directory
    /// unless the verdict is ABORT. When the directory cannot be created the verdict
    /// becomes ABORT (no space).
    pub fn start(req: StartRequest<'_>, crash: CrashAnnouncement) -> Session {
        let client = ClientInfo {
            name: req.client.name.clone(),
            mac: req.client.mac_string(),
            ip: req.client.ip.to_string(),
            source: req.peer.to_string(),
            cookie: format!("{:#018x}", req.cookie),
        };
        let mut session = Session {
            cookie: req.cookie,
            client,
            peer: req.peer,
            registration: req.client.clone(),
            // Declined sessions receive no registers: no buffer for them.
            registers: RegisterAssembler::new(if req.verdict == Verdict::Abort { 0 } else { crash.cpu_count }),
            crash,
            decision: Decision { verdict: req.verdict, why: req.why, max_payload: MAX_DATAGRAM as u32 },
            phase: Phase::Declined,
            output: None,
            window: ReceiveWindow::new(),
            counts: Counts::default(),
            drops: DropCounts::default(),
            started: req.now,
            started_utc: crate::utc::now(),
            last_progress: req.now,
            info_written: req.now,
            ended: None,
            since_ack: 0,
            ack_due: false,
            ack_owed_since: None,
            finish: None,
            abort: None,
            status_reason: String::new(),
            write_error: None,
            info_unwritten: Default::default(),
            dedup: None,
            end_event: false,
        };
        if req.verdict == Verdict::Abort {
            session.ended = Some((req.now, session.started_utc));
            return session;
        }
        match session.create_output(req.root, req.dir) {
            Ok(output) => {
                session.output = Some(output);
                session.phase = Phase::Receiving;
                session.write_info();
            }
            Err(why) => {
                tracing::error!(client = %session.client.name, "cannot start dump: {why}");
                session.decision.verdict = Verdict::Abort;
                session.decision.why = DecisionReason::NoSpace;
                session.registers = RegisterAssembler::new(0);
                session.ended = Some((req.now, session.started_utc));
            }
        }
        session
    }

    fn create_output(&self, root: &Path, dir: Option<&DumpDir>) -> Result<Output, String> {
        let ranges: &[MemoryRange] = match self.decision.verdict {
            Verdict::DumpAll => &self.crash.ranges,
            _ => &[],
        };
        let layout = VmcoreLayout::new(self.crash.cpu_count, self.crash.note(), ranges).map_err(|e| e.to_string())?;
        let dir = match dir {
            Some(d) => d.clone(),
            None => DumpDir::create(root, &self.client.name, self.started_utc)
                .map_err(|e| format!("cannot create a directory in {}: {e}", root.display()))?,
        };
        let with_vmcore = self.decision.verdict == Verdict::DumpAll;
        let files = DumpFiles::create(dir.clone(), &layout, with_vmcore)
            .map_err(|e| format!("cannot create the files in {}: {e}", dir.path().display()))?;
        Ok(Output { dir, files: Some(files), with_vmcore, layout })
    }

    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    pub fn client_name(&self) -> &str {
        &self.client.name
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The registration the crash came from.
    pub fn registration(&self) -> &Client {
        &self.registration
    }

    /// Whether the dump's files are open (only while it is received).
    pub fn has_open_files(&self) -> bool {
        self.output.as_ref().is_some_and(|o| o.files.is_some())
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// Name of the dump directory, when one was created.
    pub fn dir_name(&self) -> Option<&str> {
        self.output.as_ref().map(|o| o.dir.name())
    }

    pub fn is_receiving(&self) -> bool {
        self.phase == Phase::Receiving
    }

    /// Whether the dump ended (verified or not) after data was accepted: a CRASH for
    /// this cookie now is a replay.
    pub fn dump_ended(&self) -> bool {
        matches!(self.phase, Phase::Verified | Phase::Failed { .. })
    }

    pub fn status(&self) -> DumpStatus {
        match self.phase {
            Phase::Receiving => DumpStatus::Receiving,
            Phase::Verified if self.decision.verdict == Verdict::SkipMemory => DumpStatus::Skipped,
            Phase::Verified => DumpStatus::Complete,
            Phase::Failed { .. } | Phase::Declined => DumpStatus::Incomplete,
        }
    }

    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// Counts a packet of this session dropped by the server before it reached here.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops.add(reason);
    }

    /// Bytes the dump may still write (to budget free space for other dumps).
    pub fn outstanding_bytes(&self) -> u64 {
        match (&self.phase, &self.output) {
            (Phase::Receiving, Some(o)) => {
                let memory = o.layout.memory_len().saturating_sub(self.counts.memory_bytes);
                let log = self.crash.log_len.saturating_sub(self.counts.log_bytes);
                memory.saturating_add(log)
            }
            _ => 0,
        }
    }

    /// A repeated CRASH (its DECISION was lost): the same DECISION, if it comes from
    /// the same place and the dump has not ended.
    pub fn on_repeated_crash(&mut self, from: SocketAddr) -> Result<Decision, DropReason> {
        let reason = if self.dump_ended() {
            DropReason::ReplayedCrash
        } else if from != self.peer {
            DropReason::WrongSource
        } else {
            return Ok(self.decision);
        };
        self.drops.add(reason);
        Err(reason)
    }

    pub fn on_data(
        &mut self,
        from: SocketAddr,
        header_flags: u16,
        seq: u32,
        data: &Data<'_>,
        payload: &[u8],
        now: Instant,
    ) -> DataOutcome {
        if from != self.peer {
            return self.drop_data(DropReason::WrongSource, false);
        }
        match self.phase {
            Phase::Receiving => {}
            // Tell a client that keeps sending into an abandoned dump to stop.
            Phase::Failed { .. } => {
                self.ack_due = true;
                self.ack_owed_since.get_or_insert(now);
                return self.drop_data(DropReason::SessionClosed, false);
            }
            Phase::Verified | Phase::Declined => return self.drop_data(DropReason::SessionClosed, false),
        }
        if header_flags & flags::RETRANSMIT != 0 {
            self.counts.retransmit_flagged += 1;
        }
        let ack_request = header_flags & flags::ACK_REQUEST != 0;
        match self.window.status(seq) {
            SeqStatus::TooFarAhead => return self.drop_data(DropReason::OutOfWindow, false),
            SeqStatus::Duplicate => self.counts.duplicates += 1,
            SeqStatus::New => {
                match self.store(data) {
                    Ok(()) => {
                        self.counts.data_bytes += data.data.len() as u64;
                        self.last_progress = now;
                    }
                    // Out of bounds: a correct client never sends it, so it is neither
                    // written nor acknowledged. Recording its seq would let a forger who
                    // spoofs the client's address take the seq a real packet needs.
                    Err(StoreError::OutOfRange) => return self.drop_data(DropReason::OutOfRange, false),
                    Err(StoreError::Io(e)) => {
                        let what = format!("write error: {e}");
                        tracing::error!(client = %self.client.name, "dump abandoned: {what}");
                        self.write_error = Some(what.clone());
                        self.fail(FinishStatus::WriteError, what, now);
                        return DataOutcome { ack_now: true, dropped: None };
                    }
                }
                self.window.record(seq, crc32fast::hash(payload), payload.len() as u64);
            }
        }
        self.since_ack += 1;
        self.ack_due = true;
        self.ack_owed_since.get_or_insert(now);
        DataOutcome { ack_now: ack_request || self.since_ack >= ACK_EVERY, dropped: None }
    }

    fn drop_data(&mut self, reason: DropReason, ack_now: bool) -> DataOutcome {
        self.drops.add(reason);
        DataOutcome { ack_now, dropped: Some(reason) }
    }

    fn store(&mut self, data: &Data<'_>) -> Result<(), StoreError> {
        let Some(output) = self.output.as_mut() else {
            return Err(StoreError::OutOfRange);
        };
        let (Some(files), layout) = (output.files.as_mut(), &output.layout) else {
            return Err(StoreError::OutOfRange);
        };
        let len = data.data.len() as u64;
        let end = data.offset.checked_add(len).ok_or(StoreError::OutOfRange)?;
        match data.section {
            Section::Log => {
                if end > self.crash.log_len {
                    return Err(StoreError::OutOfRange);
                }
                files.write_log(data.offset, data.data)?;
                self.counts.log_bytes += len;
            }
            Section::Memory => {
                let at = layout.memory_offset(data.offset, len).ok_or(StoreError::OutOfRange)?;
                files.write_vmcore(at, data.data)?;
                self.counts.memory_bytes += len;
            }
            Section::Extra => {
                if end > MAX_EXTRA_BYTES {
                    return Err(StoreError::OutOfRange);
                }
                files.write_extra(data.offset, data.data)?;
                self.counts.extra_bytes += len;
            }
            Section::Registers => {
                let done = self.registers.write(data.offset, data.data).ok_or(StoreError::OutOfRange)?;
                for cpu in done {
                    let Some(record) = self.registers.record(cpu) else { continue };
                    if record.cpu != u64::from(cpu) {
                        tracing::debug!(client = %self.client.name, cpu, record_cpu = record.cpu, "register record names another CPU");
                    }
                    if let Some(at) = layout.prstatus_offset(cpu) {
                        files.write_vmcore(at, &layout.prstatus(cpu, Some(&record)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether an ACK is owed (data arrived since the last one).
    pub fn ack_due(&self) -> bool {
        self.ack_due
    }

    /// When the owed ACK should go out: [`ACK_DELAY`] after the first packet it covers,
    /// or at once while a gap is open (the client learns of a loss within one RTT).
    /// Together with [`ACK_EVERY`] and `ACK_REQUEST` this keeps ACKs to a few per window
    /// instead of one per packet, which matters to a polled client under emulation.
    pub fn ack_deadline(&self) -> Option<Instant> {
        let since = self.ack_owed_since.filter(|_| self.ack_due)?;
        Some(if self.window.has_gaps() { since } else { since + ACK_DELAY })
    }

    /// The ACK to send now; clears what is owed.
    pub fn take_ack(&mut self) -> AckReply {
        self.ack_due = false;
        self.ack_owed_since = None;
        self.since_ack = 0;
        let mut bitmap = [0u8; MAX_SACK_BYTES];
        let bitmap_len = self.window.sack_bitmap(&mut bitmap);
        AckReply {
            cumulative: self.window.cumulative_ack(),
            stop: matches!(self.phase, Phase::Failed { .. }),
            bitmap,
            bitmap_len,
        }
    }

    /// FINISH: verifies the stream (first time) and answers; a repeated FINISH gets
    /// the same answer.
    pub fn on_finish(
        &mut self,
        from: SocketAddr,
        seq: u32,
        finish: &Finish,
        after: AfterDump,
        now: Instant,
    ) -> Result<FinishAck, DropReason> {
        if from != self.peer {
            self.drops.add(DropReason::WrongSource);
            return Err(DropReason::WrongSource);
        }
        let status = match self.phase {
            Phase::Declined => FinishStatus::UnknownSession,
            Phase::Verified => FinishStatus::Verified,
            Phase::Failed { answer } => answer,
            Phase::Receiving => self.verify(seq, finish, now),
        };
        Ok(FinishAck { status, action: after })
    }

    fn verify(&mut self, packets: u32, finish: &Finish, now: Instant) -> FinishStatus {
        let computed = self.window.stream_crc();
        let received = self.window.packets();
        let (status, why) = if let Some(e) = &self.write_error {
            (FinishStatus::WriteError, e.clone())
        } else if received != u64::from(packets) || self.window.cumulative() != u64::from(packets) {
            let why = format!(
                "client sent {packets} packets; {} arrived in order of {received} received",
                self.window.cumulative()
            );
            (FinishStatus::MissingData, why)
        } else if computed != finish.stream_crc {
            let why = format!("stream CRC mismatch: client {}, server {}", hex32(finish.stream_crc), hex32(computed));
            (FinishStatus::CrcMismatch, why)
        } else if self.counts.data_bytes != finish.total_bytes {
            let why =
                format!("client sent {} data bytes, server received {}", finish.total_bytes, self.counts.data_bytes);
            (FinishStatus::MissingData, why)
        } else {
            (FinishStatus::Verified, String::new())
        };
        let mut status = status;
        let mut why = why;
        if status == FinishStatus::Verified
            && let Some(files) = self.output.as_ref().and_then(|o| o.files.as_ref())
            && let Err(e) = files.publish_vmcore()
        {
            status = FinishStatus::WriteError;
            why = format!("cannot rename {VMCORE_INCOMPLETE} to {VMCORE}: {e}");
        }
        self.finish = Some((packets, *finish, status));
        if status == FinishStatus::Verified {
            self.phase = Phase::Verified;
            self.status_reason = self.verified_reason(finish);
            self.end(now);
            let secs = self.duration().as_secs_f64();
            tracing::info!(
                client = %self.client.name,
                dir = self.dir_name().unwrap_or(""),
                bytes = self.counts.data_bytes,
                seconds = format_args!("{secs:.2}"),
                mb_s = format_args!("{:.1}", self.throughput_mb_s()),
                "dump complete"
            );
        } else {
            self.fail(status, why, now);
        }
        status
    }

    fn verified_reason(&self, finish: &Finish) -> String {
        let mut notes = Vec::new();
        if self.decision.verdict == Verdict::SkipMemory {
            notes.push(format!("memory skipped by decision ({})", self.decision.why.name()));
        }
        if finish.flags & FINISH_MEMORY_INCOMPLETE != 0 {
            notes.push("the client could not read some memory".to_string());
        }
        let out_of_range = self.drops.get(DropReason::OutOfRange);
        if out_of_range > 0 {
            notes.push(format!("{out_of_range} packets outside the announced sections were dropped"));
        }
        notes.join("; ")
    }

    /// ABORT from the client: the dump is incomplete.
    pub fn on_abort(&mut self, from: SocketAddr, code: u16, text: &[u8], now: Instant) -> Result<(), DropReason> {
        if from != self.peer {
            self.drops.add(DropReason::WrongSource);
            return Err(DropReason::WrongSource);
        }
        if self.phase != Phase::Receiving {
            return Ok(());
        }
        let text = String::from_utf8_lossy(text).into_owned();
        let reason = abort_reason_name(code);
        let why = if text.is_empty() {
            format!("client aborted: {reason}")
        } else {
            format!("client aborted: {reason}: {text}")
        };
        self.abort = Some(AbortInfo { code, reason, text });
        self.fail(FinishStatus::MissingData, why, now);
        Ok(())
    }

    /// Marks a dump that has received no new data for `timeout` incomplete (repeats
    /// and duplicates do not count: they cannot hold a session and its reserved space
    /// for ever). Returns whether it just ended.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> bool {
        if self.phase != Phase::Receiving || now.saturating_duration_since(self.last_progress) < timeout {
            return false;
        }
        self.fail(FinishStatus::MissingData, format!("no new data for {} s", timeout.as_secs()), now);
        true
    }

    /// Whether an ended session has been kept `linger` (to answer repeated FINISH and
    /// CRASH) and may now be forgotten.
    pub fn forgettable(&self, now: Instant, linger: Duration) -> bool {
        match self.ended {
            Some((at, _)) => now.saturating_duration_since(at) >= linger,
            None => false,
        }
    }

    /// The server is stopping: a dump still receiving is incomplete.
    pub fn shut_down(&mut self, now: Instant) {
        if self.phase == Phase::Receiving {
            self.fail(FinishStatus::MissingData, "server shut down".into(), now);
        }
    }

    fn fail(&mut self, answer: FinishStatus, why: String, now: Instant) {
        tracing::warn!(client = %self.client.name, dir = self.dir_name().unwrap_or(""), reason = ?why, "dump incomplete");
        self.phase = Phase::Failed { answer };
        self.status_reason = why;
        self.end(now);
    }

    /// Rewrites `info.json` of a dump being received every `interval`, so that a
    /// person watching a long transfer sees it progress; and of an ended dump whose last
    /// write failed (a full disk), until one succeeds, so that its outcome is recorded
    /// once there is room again.
    pub fn refresh_info(&mut self, now: Instant, interval: Duration) {
        let due = self.phase == Phase::Receiving || self.info_unwritten.get();
        if due && now.saturating_duration_since(self.info_written) >= interval {
            self.info_written = now;
            self.write_info();
        }
    }

    fn end(&mut self, now: Instant) {
        self.ended = Some((now, crate::utc::now()));
        self.write_registers();
        self.write_info();
        self.end_event = self.output.is_some();
        if let Some(o) = &mut self.output {
            o.files = None;
        }
    }

    /// True once after a dump with a directory ended (verified or not).
    pub fn take_end_event(&mut self) -> bool {
        std::mem::take(&mut self.end_event)
    }

    /// Path of the dump directory, when one was created.
    pub fn dir_path(&self) -> Option<&Path> {
        self.output.as_ref().map(|o| o.dir.path())
    }

    /// Records what duplicate detection said (rewrites `info.json`).
    pub fn set_dedup(&mut self, dedup: DedupInfo) {
        self.dedup = Some(dedup);
        self.write_info();
    }

    /// `registers`: every CPU's record as text, the crashing CPU first, so that a dump
    /// without a vmcore still shows them (and analysis can symbolize `rip`).
    fn write_registers(&self) {
        let Some(o) = &self.output else { return };
        let crashing = self.crash.crashing_cpu;
        let order = std::iter::once(crashing).chain((0..self.crash.cpu_count).filter(|c| *c != crashing));
        let mut text = String::new();
        for cpu in order {
            let Some(r) = self.registers.complete.get(usize::from(cpu)).filter(|c| **c).and(self.registers.record(cpu))
            else {
                continue;
            };
            let mark = if cpu == crashing { " (crashing)" } else { "" };
            text.push_str(&format!("cpu {cpu}{mark}\n"));
            for (name, v) in named_registers(&r) {
                text.push_str(&format!("  {name:<8} {v:#018x}\n"));
            }
        }
        if text.is_empty() {
            return;
        }
        if let Err(e) = crate::files::write_atomic(&o.dir.path().join(REGISTERS), text.as_bytes()) {
            tracing::error!(dir = %o.dir.path().display(), "cannot write {REGISTERS}: {e}");
        }
    }

    fn duration(&self) -> Duration {
        let end = match self.ended {
            Some((at, _)) => at,
            None => Instant::now(),
        };
        end.saturating_duration_since(self.started)
    }

    fn throughput_mb_s(&self) -> f64 {
        let secs = self.duration().as_secs_f64();
        if secs > 0.0 { self.counts.data_bytes as f64 / secs / 1e6 } else { 0.0 }
    }

    fn write_info(&self) {
        let Some(o) = &self.output else { return };
        let result = o.dir.write_info(&self.info());
        if let Err(e) = &result
            && !self.info_unwritten.get()
        {
            tracing::error!(dir = %o.dir.path().display(), "cannot write info.json (retried every few seconds): {e}");
        }
        self.info_unwritten.set(result.is_err());
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
        DumpInfo {
            status: self.status(),
            status_reason: self.status_reason.clone(),
            client: self.client.clone(),
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
            decision: DecisionInfo {
                verdict: self.decision.verdict.name(),
                why: self.decision.why.name(),
            },
            bytes_received: self.counts.data_bytes,
            packets_received: self.window.packets(),
            duplicate_packets: self.counts.duplicates,
            log_bytes_announced: c.log_len,
            log_bytes: self.counts.log_bytes,
            registers_received: self.registers.complete_count(),
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
        }
    }
}

/// The registers of a record with their x86_64 names, in wire order.
fn named_registers(r: &RegisterRecord) -> [(&'static str, u64); 30] {
    [
        ("rax", r.rax), ("rbx", r.rbx), ("rcx", r.rcx), ("rdx", r.rdx), ("rsi", r.rsi), ("rdi", r.rdi),
        ("rbp", r.rbp), ("rsp", r.rsp), ("r8", r.r8), ("r9", r.r9), ("r10", r.r10), ("r11", r.r11),
        ("r12", r.r12), ("r13", r.r13), ("r14", r.r14), ("r15", r.r15), ("rip", r.rip), ("rflags", r.rflags),
        ("cs", r.cs), ("ss", r.ss), ("ds", r.ds), ("es", r.es), ("fs", r.fs), ("gs", r.gs),
        ("fs_base", r.fs_base), ("gs_base", r.gs_base), ("cr0", r.cr0), ("cr2", r.cr2), ("cr3", r.cr3), ("cr4", r.cr4),
    ]
}

enum StoreError {
    OutOfRange,
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

fn abort_reason_name(code: u16) -> &'static str {
    match code {
        abort_reason::SERVER_SILENT => "server_silent",
        abort_reason::NIC_ERROR => "nic_error",
        abort_reason::NESTED_PANIC => "nested_panic",
        abort_reason::STOPPED_BY_SERVER => "stopped_by_server",
        abort_reason::MEMORY_UNREADABLE => "memory_unreadable",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core_reader::{Core, pr_pid, pr_reg};
    use crate::dumpdir::{EXTRA, INFO, LOG};
    use crate::test_dir::TestDir;
    use netdump_core::proto::{AddressTable, Crash, REGISTERS_VALID, RangeTable};
    use std::net::Ipv4Addr;

    const COOKIE: u64 = 0x1234_5678_9abc_def0;
    const PAGE: usize = 4096;

    fn peer() -> SocketAddr {
        "127.0.0.1:6665".parse().unwrap()
    }

    fn client() -> Client {
        Client {
            cookie: COOKIE,
            name: "unit".into(),
            mac: [2, 0, 0, 0, 0, 1],
            ip: Ipv4Addr::new(10, 0, 2, 15),
            source: peer(),
            mtu: 1500,
            page_size: PAGE as u32,
            memory_bytes: 0x30000,
            registered_at: "2026-01-01T00:00:00Z".into(),
            dump: None,
        }
    }

    fn ranges() -> Vec<MemoryRange> {
        vec![
            MemoryRange { phys_start: 0x1000, length: 0x10000, virt_start: 0xffff_8000_0000_1000 },
            MemoryRange { phys_start: 0x100000, length: 0x20000, virt_start: 0xffff_8000_0010_0000 },
        ]
    }

    fn crash(cpu_count: u16) -> CrashAnnouncement {
        let ranges = ranges();
        let wire = Crash {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            page_size: PAGE as u32,
            log_len: 100,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::Addresses(&[0x10_2345, 0x10_1000]),
            message: b"unit test panic \xff",
        };
        CrashAnnouncement::from_wire(&wire)
    }

    fn start(dir: &TestDir, verdict: Verdict) -> Session {
        let c = client();
        let req = StartRequest {
            cookie: COOKIE,
            client: &c,
            peer: peer(),
            root: dir.path(),
            verdict,
            why: if verdict == Verdict::DumpAll { DecisionReason::None } else { DecisionReason::NoSpace },
            now: Instant::now(),
            dir: None,
        };
        Session::start(req, crash(2))
    }

    /// One DATA packet: its payload (sub-header + data) as the wire carries it.
    struct Packet {
        seq: u32,
        section: Section,
        offset: u64,
        data: Vec<u8>,
    }

    impl Packet {
        fn new(seq: u32, section: Section, offset: u64, data: Vec<u8>) -> Self {
            Packet { seq, section, offset, data }
        }
        fn payload(&self) -> Vec<u8> {
            let d = Data { section: self.section, offset: self.offset, data: &self.data };
            let mut p = vec![0; d.wire_len()];
            d.emit(&mut p);
            p
        }
        fn send(&self, s: &mut Session, flags: u16) -> DataOutcome {
            let d = Data { section: self.section, offset: self.offset, data: &self.data };
            s.on_data(peer(), flags, self.seq, &d, &self.payload(), Instant::now())
        }
    }

    fn page(tag: u8) -> Vec<u8> {
        (0..PAGE).map(|i| (i as u8) ^ tag).collect()
    }

    fn registers(cpu: u64) -> Vec<u8> {
        RegisterRecord {
            rip: 0xffff_ffff_8000_0000 + cpu,
            rsp: 0x7000 + cpu,
            rax: cpu,
            cpu,
            flags: REGISTERS_VALID,
            ..Default::default()
        }
        .to_bytes()
        .to_vec()
    }

    /// A whole dump: log, registers (split mid-record), two memory pages, extra.
    fn stream() -> Vec<Packet> {
        let regs: Vec<u8> = [registers(0), registers(1)].concat();
        vec![
            Packet::new(0, Section::Log, 0, vec![b'L'; 60]),
            Packet::new(1, Section::Log, 60, vec![b'M'; 40]),
            Packet::new(2, Section::Registers, 0, regs[..300].to_vec()),
            Packet::new(3, Section::Registers, 300, regs[300..].to_vec()),
            Packet::new(4, Section::Memory, 0x1000, page(1)),
            Packet::new(5, Section::Memory, 0x100000 + 2 * PAGE as u64, [page(2), page(3)].concat()),
            Packet::new(6, Section::Extra, 0, b"extra state\n".to_vec()),
        ]
    }

    fn finish_for(packets: &[Packet]) -> Finish {
        let payloads: Vec<Vec<u8>> = packets.iter().map(|p| p.payload()).collect();
        let bytes = packets.iter().map(|p| p.data.len() as u64).sum();
        let stream_crc = netdump_core::proto::StreamCrc::of_payloads(payloads.iter().map(|p| &p[..]));
        Finish { total_bytes: bytes, stream_crc, flags: 0, zero_pages: 40, retransmissions: 1 }
    }

    fn info_json(s: &Session) -> serde_json::Value {
        let dir = s.output.as_ref().unwrap().dir.path().to_path_buf();
        serde_json::from_slice(&std::fs::read(dir.join(INFO)).unwrap()).unwrap()
    }

    fn dump_path(s: &Session) -> std::path::PathBuf {
        s.output.as_ref().unwrap().dir.path().to_path_buf()
    }

    #[test]
    fn a_crash_opens_a_directory_with_a_sparse_vmcore_and_receiving_info() {
        let dir = TestDir::new("session-start");
        let s = start(&dir, Verdict::DumpAll);
        assert!(s.is_receiving());
        assert!(s.dir_name().unwrap().starts_with("unit-"));
        let path = dump_path(&s);
        assert!(path.join(VMCORE_INCOMPLETE).exists());
        assert!(path.join(LOG).exists());
        let info = info_json(&s);
        assert_eq!(info["status"], "receiving");
        assert_eq!(info["message"], "unit test panic \u{fffd}");
        assert_eq!(info["memory_size"], 0x30000);
        assert_eq!(info["client"]["mac"], "02:00:00:00:00:01");
        assert_eq!(info["decision"]["verdict"], "dump_all");
    }

    #[test]
    fn out_of_order_data_with_duplicates_verifies_and_publishes_the_vmcore() {
        let dir = TestDir::new("session-complete");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        for i in [3, 0, 6, 0, 5, 1, 2, 4, 4, 3] {
            let out = packets[i].send(&mut s, 0);
            assert_eq!(out.dropped, None);
        }
        let ack = s.take_ack();
        assert_eq!((ack.cumulative, ack.bitmap(), ack.stop), (7, &[][..], false));
        let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Halt, Instant::now()).unwrap();
        assert_eq!(answer, FinishAck { status: FinishStatus::Verified, action: AfterDump::Halt });

        let path = dump_path(&s);
        assert!(!path.join(VMCORE_INCOMPLETE).exists());
        let bytes = std::fs::read(path.join(VMCORE)).unwrap();
        let core = Core::new(&bytes);
        assert_eq!(core.read_virt(0xffff_8000_0000_1000, PAGE), &page(1)[..]);
        assert!(core.read_virt(0xffff_8000_0000_2000, PAGE).iter().all(|b| *b == 0), "a page never sent is a hole");
        assert_eq!(core.read_virt(0xffff_8000_0010_2000, 2 * PAGE), &[page(2), page(3)].concat()[..]);
        let notes = core.notes();
        assert_eq!(pr_pid(notes[1].desc), 2);
        assert_eq!(pr_reg(notes[1].desc, 16), 0xffff_ffff_8000_0001, "rip of CPU 1");
        assert_eq!(pr_reg(notes[0].desc, 19), 0x7000, "rsp of CPU 0");
        assert_eq!(std::fs::read(path.join(LOG)).unwrap(), [vec![b'L'; 60], vec![b'M'; 40]].concat());
        assert_eq!(std::fs::read(path.join(EXTRA)).unwrap(), b"extra state\n");

        let info = info_json(&s);
        assert_eq!(info["status"], "complete");
        assert_eq!(info["vmcore"], "vmcore");
        assert_eq!(info["crc"]["verified"], true);
        assert_eq!(info["crc"]["expected"], info["crc"]["computed"]);
        assert_eq!(info["duplicate_packets"], 3);
        assert_eq!(info["registers_received"], 2);
        assert_eq!(info["pages"], 3);
        assert_eq!(info["zero_pages_skipped"], 40);
        assert_eq!(info["log_bytes"], 100);
        assert!(info["end_time"].is_string());
    }

    #[test]
    fn a_crc_mismatch_leaves_vmcore_incomplete_and_says_so() {
        let dir = TestDir::new("session-crc");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        for p in &packets {
            p.send(&mut s, 0);
        }
        let mut finish = finish_for(&packets);
        finish.stream_crc ^= 1;
        let answer = s.on_finish(peer(), 7, &finish, AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::CrcMismatch);
        assert!(dump_path(&s).join(VMCORE_INCOMPLETE).exists());
        assert!(!dump_path(&s).join(VMCORE).exists());
        let info = info_json(&s);
        assert_eq!(info["status"], "incomplete");
        assert_eq!(info["crc"]["verified"], false);
        assert_eq!(info["finish"]["result"], "crc_mismatch");
        assert!(info["status_reason"].as_str().unwrap().contains("CRC mismatch"));
        // The same FINISH again gets the same answer; it does not re-verify.
        let again = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(again.status, FinishStatus::CrcMismatch);
    }

    #[test]
    fn a_missing_packet_is_missing_data() {
        let dir = TestDir::new("session-missing");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        for p in packets.iter().filter(|p| p.seq != 4) {
            p.send(&mut s, 0);
        }
        let ack = s.take_ack();
        assert_eq!((ack.cumulative, ack.bitmap()), (4, &[0b0000_0011][..]));
        let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::MissingData);
        assert_eq!(s.status(), DumpStatus::Incomplete);
    }

    #[test]
    fn a_repeated_finish_after_success_is_verified_again() {
        let dir = TestDir::new("session-finish-repeat");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        for p in &packets {
            p.send(&mut s, 0);
        }
        let f = finish_for(&packets);
        for _ in 0..3 {
            assert_eq!(
                s.on_finish(peer(), 7, &f, AfterDump::Reboot, Instant::now()).unwrap().status,
                FinishStatus::Verified
            );
        }
    }

    #[test]
    fn data_from_another_address_is_dropped() {
        let dir = TestDir::new("session-source");
        let mut s = start(&dir, Verdict::DumpAll);
        let p = &stream()[0];
        let d = Data { section: p.section, offset: p.offset, data: &p.data };
        let other: SocketAddr = "127.0.0.2:6665".parse().unwrap();
        let out = s.on_data(other, 0, 0, &d, &p.payload(), Instant::now());
        assert_eq!(out.dropped, Some(DropReason::WrongSource));
        assert_eq!(s.take_ack().cumulative, 0);
        assert_eq!(s.drops().get(DropReason::WrongSource), 1);
        assert_eq!(
            s.on_finish(other, 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()),
            Err(DropReason::WrongSource)
        );
        assert_eq!(s.on_abort(other, 1, b"", Instant::now()), Err(DropReason::WrongSource));
        assert!(s.is_receiving());
    }

    #[test]
    fn out_of_range_data_is_dropped_counted_and_not_acknowledged() {
        let dir = TestDir::new("session-range");
        let mut s = start(&dir, Verdict::DumpAll);
        let bad = [
            Packet::new(0, Section::Log, 90, vec![0; 11]),               // past log_len
            Packet::new(1, Section::Memory, 0x11000 - 8, vec![1; 16]),   // crosses a range end
            Packet::new(2, Section::Memory, 0x50000, vec![1; 16]),       // between ranges
            Packet::new(3, Section::Registers, 2 * 256 - 1, vec![1; 2]), // past the last record
            Packet::new(4, Section::Extra, MAX_EXTRA_BYTES, vec![1]),    // past the EXTRA cap
            Packet::new(5, Section::Memory, u64::MAX - 3, vec![1; 4]),   // wraps
        ];
        for p in &bad {
            assert_eq!(p.send(&mut s, 0).dropped, Some(DropReason::OutOfRange), "seq {}", p.seq);
        }
        assert_eq!(s.drops().get(DropReason::OutOfRange), 6);
        // Their seqs stay free for the real packets (a forger must not take them).
        assert_eq!(s.take_ack().cumulative, 0);
        let info = s.info();
        assert_eq!((info.bytes_received, info.memory_bytes, info.log_bytes), (0, 0, 0));
        // Nothing was written into the vmcore's memory.
        let bytes = std::fs::read(dump_path(&s).join(VMCORE_INCOMPLETE)).unwrap();
        let core = Core::new(&bytes);
        assert!(core.read_virt(0xffff_8000_0000_1000, 0x10000).iter().all(|b| *b == 0));
        // The stream, without them, verifies; the drops are reported.
        let answer = s.on_finish(peer(), 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::Verified);
        assert!(s.info().status_reason.contains("6 packets outside"));
        assert_eq!(s.info().drops["out_of_range"], 6);
    }

    #[test]
    fn sequence_numbers_far_ahead_are_dropped_unacknowledged() {
        let dir = TestDir::new("session-window");
        let mut s = start(&dir, Verdict::DumpAll);
        let p = Packet::new(5000, Section::Log, 0, vec![1]);
        let out = p.send(&mut s, 0);
        assert_eq!(out, DataOutcome { ack_now: false, dropped: Some(DropReason::OutOfWindow) });
        assert!(!s.ack_due());
    }

    #[test]
    fn acks_are_immediate_on_request_and_every_32_packets() {
        let dir = TestDir::new("session-ack");
        let mut s = start(&dir, Verdict::DumpAll);
        let mut seq = 0;
        let mut send = |s: &mut Session, flags: u16| {
            let p = Packet::new(seq, Section::Memory, 0x1000 + u64::from(seq % 16) * PAGE as u64, page(seq as u8));
            seq += 1;
            p.send(s, flags)
        };
        for _ in 0..31 {
            assert!(!send(&mut s, 0).ack_now);
        }
        assert!(s.ack_due());
        assert!(send(&mut s, 0).ack_now, "the 32nd packet");
        s.take_ack();
        assert!(!s.ack_due());
        assert!(send(&mut s, flags::ACK_REQUEST).ack_now);
        assert!(!send(&mut s, flags::RETRANSMIT).ack_now);
        assert_eq!(s.info().retransmissions, 1);
    }

    #[test]
    fn duplicates_are_acknowledged_too() {
        let dir = TestDir::new("session-dup-ack");
        let mut s = start(&dir, Verdict::DumpAll);
        let p = &stream()[0];
        p.send(&mut s, 0);
        s.take_ack();
        let out = p.send(&mut s, flags::ACK_REQUEST | flags::RETRANSMIT);
        assert_eq!(out, DataOutcome { ack_now: true, dropped: None });
        assert_eq!(s.info().duplicate_packets, 1);
    }

    #[test]
    fn abort_ends_the_dump_and_later_data_is_told_to_stop() {
        let dir = TestDir::new("session-abort");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        packets[0].send(&mut s, 0);
        s.on_abort(peer(), abort_reason::NIC_ERROR, b"tx hang", Instant::now()).unwrap();
        assert_eq!(s.status(), DumpStatus::Incomplete);
        assert!(s.dump_ended());
        let info = info_json(&s);
        assert_eq!(info["abort"]["reason"], "nic_error");
        assert_eq!(info["abort"]["text"], "tx hang");
        assert_eq!(info["status_reason"], "client aborted: nic_error: tx hang");

        let out = packets[1].send(&mut s, 0);
        assert_eq!(out.dropped, Some(DropReason::SessionClosed));
        assert!(s.ack_due());
        assert!(s.take_ack().stop);
        let answer = s.on_finish(peer(), 7, &finish_for(&packets), AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::MissingData);
    }

    #[test]
    fn silence_marks_the_dump_incomplete() {
        let dir = TestDir::new("session-silence");
        let mut s = start(&dir, Verdict::DumpAll);
        let t0 = Instant::now();
        assert!(!s.expire(t0, Duration::from_secs(60)));
        let later = t0 + Duration::from_secs(61);
        assert!(s.expire(later, Duration::from_secs(60)));
        assert!(!s.expire(later, Duration::from_secs(60)), "ends once");
        let info = info_json(&s);
        assert_eq!(info["status"], "incomplete");
        assert_eq!(info["status_reason"], "no new data for 60 s");
        assert!(!s.forgettable(later, Duration::from_secs(120)));
        assert!(s.forgettable(later + Duration::from_secs(120), Duration::from_secs(120)));
    }

    #[test]
    fn duplicates_do_not_keep_a_silent_dump_open() {
        let dir = TestDir::new("session-duplicates");
        let mut s = start(&dir, Verdict::DumpAll);
        let packets = stream();
        let t0 = Instant::now();
        let d = Data { section: packets[0].section, offset: packets[0].offset, data: &packets[0].data };
        s.on_data(peer(), 0, packets[0].seq, &d, &packets[0].payload(), t0);
        // The same packet every 20 s: heard from, but no new data.
        for i in 1..=3 {
            let at = t0 + Duration::from_secs(20 * i);
            let out = s.on_data(peer(), 0, packets[0].seq, &d, &packets[0].payload(), at);
            assert_eq!(out.dropped, None);
        }
        assert!(s.expire(t0 + Duration::from_secs(61), Duration::from_secs(60)));
        assert!(!s.is_receiving());
    }

    #[test]
    fn an_ended_dump_holds_no_open_files() {
        let dir = TestDir::new("session-closed-files");
        let mut s = start(&dir, Verdict::DumpAll);
        assert!(s.has_open_files());
        s.on_abort(peer(), 0, b"bye", Instant::now()).unwrap();
        assert!(!s.has_open_files());
        // Its directory is still known, for the hooks and for repeats.
        assert!(s.dir_path().is_some_and(|p| p.join(VMCORE_INCOMPLETE).exists()));
        assert_eq!(info_json(&s)["status"], "incomplete");
    }

    #[test]
    fn a_declined_crash_keeps_no_register_buffer() {
        let dir = TestDir::new("session-declined-buffer");
        let s = start(&dir, Verdict::Abort);
        assert!(s.registers.bytes.is_empty());
        assert!(s.output.is_none());
    }

    #[test]
    fn skip_memory_keeps_log_and_registers_and_refuses_memory() {
        let dir = TestDir::new("session-skip");
        let mut s = start(&dir, Verdict::SkipMemory);
        let packets: Vec<Packet> = stream().into_iter().filter(|p| p.section != Section::Memory).collect();
        let packets: Vec<Packet> =
            packets.into_iter().enumerate().map(|(i, p)| Packet { seq: i as u32, ..p }).collect();
        for p in &packets {
            assert_eq!(p.send(&mut s, 0).dropped, None);
        }
        let stray = Packet::new(packets.len() as u32, Section::Memory, 0x1000, page(1));
        assert_eq!(stray.send(&mut s, 0).dropped, Some(DropReason::OutOfRange));
        let all = packets;
        let mut f = finish_for(&all);
        f.flags = FINISH_MEMORY_SKIPPED;
        let answer = s.on_finish(peer(), all.len() as u32, &f, AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::Verified);
        let info = info_json(&s);
        assert_eq!(info["status"], "skipped");
        assert_eq!(info["decision"]["why"], "no_space");
        assert!(info["status_reason"].as_str().unwrap().contains("memory skipped by decision (no_space)"));
        // No memory image, no vmcore: the registers are in `registers`, the log in `log`.
        assert!(!dump_path(&s).join(VMCORE).exists() && !dump_path(&s).join(VMCORE_INCOMPLETE).exists());
        assert_eq!(info["vmcore"], serde_json::Value::Null);
        let regs = std::fs::read_to_string(dump_path(&s).join(REGISTERS)).unwrap();
        assert!(regs.starts_with("cpu 0 (crashing)\n"), "{regs}");
        assert!(regs.contains("rip      0xffffffff80000000"), "{regs}");
        assert!(regs.contains("cpu 1\n"), "{regs}");
        assert!(std::fs::metadata(dump_path(&s).join(LOG)).unwrap().len() > 0);
        assert!(s.take_end_event(), "the end is reported once");
        assert!(!s.take_end_event());
    }

    #[test]
    fn repeated_crash_gets_the_same_decision_until_the_dump_ends() {
        let dir = TestDir::new("session-crash-repeat");
        let mut s = start(&dir, Verdict::DumpAll);
        let d = s.decision();
        assert_eq!(s.on_repeated_crash(peer()), Ok(d));
        let other: SocketAddr = "127.0.0.9:1".parse().unwrap();
        assert_eq!(s.on_repeated_crash(other), Err(DropReason::WrongSource));
        s.on_abort(peer(), abort_reason::SERVER_SILENT, b"", Instant::now()).unwrap();
        assert_eq!(s.on_repeated_crash(peer()), Err(DropReason::ReplayedCrash));
        assert_eq!(s.drops().get(DropReason::ReplayedCrash), 1);
    }

    #[test]
    fn a_declined_crash_creates_nothing_and_knows_no_finish() {
        let dir = TestDir::new("session-declined");
        let mut s = start(&dir, Verdict::Abort);
        assert_eq!(s.decision().verdict, Verdict::Abort);
        assert!(s.dir_name().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let answer = s.on_finish(peer(), 0, &finish_for(&[]), AfterDump::Reboot, Instant::now()).unwrap();
        assert_eq!(answer.status, FinishStatus::UnknownSession);
        assert_eq!(stream()[0].send(&mut s, 0).dropped, Some(DropReason::SessionClosed));
        assert_eq!(s.on_repeated_crash(peer()).map(|d| d.verdict), Ok(Verdict::Abort));
    }

    #[test]
    fn an_uncreatable_directory_turns_the_decision_into_abort() {
        let dir = TestDir::new("session-nodir");
        let c = client();
        let req = StartRequest {
            cookie: COOKIE,
            client: &c,
            peer: peer(),
            root: &dir.path().join("missing/deeper"),
            verdict: Verdict::DumpAll,
            why: DecisionReason::None,
            now: Instant::now(),
            dir: None,
        };
        let s = Session::start(req, crash(1));
        assert_eq!((s.decision().verdict, s.decision().why), (Verdict::Abort, DecisionReason::NoSpace));
    }

    #[test]
    fn info_is_refreshed_while_receiving() {
        let dir = TestDir::new("session-refresh");
        let mut s = start(&dir, Verdict::DumpAll);
        stream()[0].send(&mut s, 0);
        let t0 = s.started;
        s.refresh_info(t0 + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(info_json(&s)["log_bytes"], 0, "not yet");
        s.refresh_info(t0 + Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(info_json(&s)["log_bytes"], 60);
        assert_eq!(info_json(&s)["status"], "receiving");
    }

    #[test]
    fn an_outcome_that_could_not_be_written_is_written_once_it_can_be() {
        let dir = TestDir::new("session-unwritten");
        let mut s = start(&dir, Verdict::DumpAll);
        // info.json's temporary file cannot be created (as a full disk would refuse it).
        let blocker = dump_path(&s).join("info.json.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let t0 = s.started;
        s.on_abort(peer(), abort_reason::NIC_ERROR, b"", t0).unwrap();
        assert_eq!(info_json(&s)["status"], "receiving", "the write failed");
        std::fs::remove_dir(&blocker).unwrap();
        s.refresh_info(t0 + Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!(info_json(&s)["status"], "incomplete");
    }

    #[test]
    fn shutdown_marks_a_receiving_dump_incomplete() {
        let dir = TestDir::new("session-shutdown");
        let mut s = start(&dir, Verdict::DumpAll);
        s.shut_down(Instant::now());
        assert_eq!(info_json(&s)["status_reason"], "server shut down");
    }

    #[test]
    fn outstanding_bytes_shrink_as_memory_arrives() {
        let dir = TestDir::new("session-outstanding");
        let mut s = start(&dir, Verdict::DumpAll);
        assert_eq!(s.outstanding_bytes(), 0x30000 + 100);
        stream()[4].send(&mut s, 0);
        assert_eq!(s.outstanding_bytes(), 0x30000 - PAGE as u64 + 100);
        s.shut_down(Instant::now());
        assert_eq!(s.outstanding_bytes(), 0);
    }

    #[test]
    fn registers_split_anywhere_complete_each_record_once() {
        let mut r = RegisterAssembler::new(2);
        let bytes = [registers(0), registers(1)].concat();
        assert_eq!(r.write(0, &bytes[..255]), Some(vec![]));
        assert_eq!(r.write(255, &bytes[255..257]), Some(vec![0]));
        assert_eq!(r.write(257, &bytes[257..]), Some(vec![1]));
        assert_eq!(r.write(0, &bytes[..10]), Some(vec![]), "already complete");
        assert_eq!(r.write(511, &[0, 0]), None);
        assert_eq!(r.write(u64::MAX, &[0]), None);
        assert_eq!(r.record(1).unwrap().rip, 0xffff_ffff_8000_0001);
        assert_eq!(r.complete_count(), 2);
    }
}
