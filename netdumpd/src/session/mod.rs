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
    AfterDump, Check, Data, Decision, DecisionReason, Encoding, FINISH_MEMORY_INCOMPLETE, Finish, FinishAck,
    FinishStatus, MAX_DATAGRAM, MAX_SACK_BYTES, MemoryRange, Section, Verdict, abort_reason, features, flags,
};
use time::OffsetDateTime;

mod excluded;
mod registers;
mod report;

pub use excluded::{ExcludedRuns, ExclusionError, MAX_EXCLUDED_RUNS};
use registers::RegisterAssembler;

pub use crate::announcement::CrashAnnouncement;
use crate::blocks::BlockDecoder;
use crate::dedup::DedupInfo;
use crate::dumpdir::{DumpDir, DumpFiles, REGISTERS, VMCORE, VMCORE_INCOMPLETE};
use crate::info::{AbortInfo, ClientInfo, DumpStatus, hex32};
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
    /// The exclusion note has been written (a filtered dump, once it ended).
    exclusion_note_written: bool,
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
    /// Distinct DATA packets that carried an LZ4 block, their data bytes, and the
    /// section bytes they decoded to.
    lz4_blocks: u64,
    lz4_wire_bytes: u64,
    lz4_raw_bytes: u64,
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
    /// The runs a filtered dump left out (feature `FILTER`).
    excluded: ExcludedRuns,
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
    /// Decodes compressed DATA.
    blocks: BlockDecoder,
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
            registers: RegisterAssembler::new(
                if req.verdict == Verdict::Abort { 0 } else { crash.cpu_count },
                crash.machine,
            ),
            crash,
            decision: Decision { verdict: req.verdict, why: req.why, max_payload: MAX_DATAGRAM as u32 },
            phase: Phase::Declined,
            output: None,
            window: ReceiveWindow::new(),
            excluded: ExcludedRuns::default(),
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
            blocks: BlockDecoder::default(),
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
                session.registers = RegisterAssembler::new(0, session.crash.machine);
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
        let layout = VmcoreLayout::with_exclusions(self.crash.cpu_count, self.crash.note(), ranges, self.filtered())
            .map_err(|e| e.to_string())?;
        let dir = match dir {
            Some(d) => d.clone(),
            None => DumpDir::create(root, &self.client.name, self.started_utc)
                .map_err(|e| format!("cannot create a directory in {}: {e}", root.display()))?,
        };
        let with_vmcore = self.decision.verdict == Verdict::DumpAll;
        let files = DumpFiles::create(dir.clone(), &layout, with_vmcore)
            .map_err(|e| format!("cannot create the files in {}: {e}", dir.path().display()))?;
        Ok(Output { dir, files: Some(files), with_vmcore, layout, exclusion_note_written: false })
    }

    /// Whether the client was granted page filtering (its memory image may have
    /// excluded runs, and its vmcore gets an exclusion note).
    pub fn filtered(&self) -> bool {
        self.registration.features & features::FILTER != 0
    }

    /// The runs a filtered dump left out, so far.
    pub fn excluded(&self) -> &ExcludedRuns {
        &self.excluded
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

    /// A DATA packet: `header_flags` as the server passes them on (`CHECK_XXH64` only
    /// where the header's check is XXH64), `payload` the message's bytes (sub-header
    /// included), which the stream CRC takes by their check.
    pub fn on_data(
        &mut self,
        from: SocketAddr,
        header_flags: u16,
        seq: u32,
        data: &Data<'_>,
        payload: &[u8],
        now: Instant,
    ) -> DataOutcome {
        self.on_data_checked(from, header_flags, seq, data, payload, None, now)
    }

    /// As [`on_data`](Self::on_data), with the payload's check when the caller already
    /// computed it (the header's CRC check covers it: [`Header::parse_with_check`]), so
    /// that a packet is hashed once. It must be the check `header_flags` name (XXH64
    /// with `CHECK_XXH64`, else CRC-32); `None`: computed here.
    ///
    /// [`Header::parse_with_check`]: netdump_core::proto::Header::parse_with_check
    #[allow(clippy::too_many_arguments)]
    pub fn on_data_checked(
        &mut self,
        from: SocketAddr,
        header_flags: u16,
        seq: u32,
        data: &Data<'_>,
        payload: &[u8],
        payload_check: Option<u32>,
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
        let mut ack_now = header_flags & flags::ACK_REQUEST != 0;
        match self.window.status(seq) {
            SeqStatus::TooFarAhead => return self.drop_data(DropReason::OutOfWindow, false),
            SeqStatus::Duplicate => self.counts.duplicates += 1,
            SeqStatus::New => {
                let Ok(encoding) = Encoding::parse(payload) else {
                    return self.drop_data(DropReason::BadField, false);
                };
                let granted = self.registration.features & features::COMPRESSED != 0;
                let bytes = match self.blocks.section_bytes(encoding, data.data, granted) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        // Neither written nor acknowledged: the client sends it again.
                        tracing::debug!(client = %self.client.name, seq, offset = data.offset, "DATA dropped: {e}");
                        return self.drop_data(DropReason::BadBlock, false);
                    }
                };
                let section = Data { section: data.section, offset: data.offset, data: bytes };
                let filtered = self.registration.features & features::FILTER != 0;
                let stored = Self::store_in(
                    self.output.as_mut(),
                    &self.crash,
                    &mut self.registers,
                    &mut self.counts,
                    &self.client,
                    filtered.then_some(&mut self.excluded),
                    &section,
                );
                match stored {
                    Ok(()) => {
                        self.counts.data_bytes += data.data.len() as u64;
                        if let Encoding::Lz4 { raw_len } = encoding {
                            self.counts.lz4_blocks += 1;
                            self.counts.lz4_wire_bytes += data.data.len() as u64;
                            self.counts.lz4_raw_bytes += u64::from(raw_len);
                        }
                        self.last_progress = now;
                    }
                    // Out of bounds: a correct client never sends it, so it is neither
                    // written nor acknowledged. Recording its seq would let a forger who
                    // spoofs the client's address take the seq a real packet needs.
                    Err(StoreError::OutOfRange) => return self.drop_data(DropReason::OutOfRange, false),
                    // Likewise: a correct client never sends it. Said in words, once per packet.
                    Err(StoreError::BadExclusion(why)) => {
                        tracing::warn!(client = %self.client.name, "EXCLUDED packet dropped: {why}");
                        return self.drop_data(DropReason::BadExclusion, false);
                    }
                    Err(StoreError::Io(e)) => {
                        self.write_failed(e, now);
                        return DataOutcome { ack_now: true, dropped: None };
                    }
                }
                let check = payload_check.unwrap_or_else(|| check_of(header_flags).of(payload));
                // News of a gap goes out at once, so that the client learns of a loss
                // within a round trip: a packet beyond the highest so far opens one, a
                // packet at the cumulative point fills one. While it stays open, the
                // usual policy holds: one ACK per packet would cost a polled client under
                // emulation a received frame per frame sent, most of them saying nothing new.
                let at = u64::from(seq);
                ack_now |=
                    at > self.window.next_in_order() || (at == self.window.cumulative() && self.window.has_gaps());
                self.window.record(seq, check, payload.len() as u64);
            }
        }
        self.since_ack += 1;
        self.ack_due = true;
        self.ack_owed_since.get_or_insert(now);
        DataOutcome { ack_now: ack_now || self.since_ack >= ACK_EVERY, dropped: None }
    }

    /// A write to the dump's files failed: the dump is abandoned (FINISH will say
    /// `WRITE_ERROR`, ACKs say `STOP`).
    fn write_failed(&mut self, e: std::io::Error, now: Instant) {
        if self.phase != Phase::Receiving {
            return;
        }
        let what = format!("write error: {e}");
        tracing::error!(client = %self.client.name, "dump abandoned: {what}");
        self.write_error = Some(what.clone());
        self.fail(FinishStatus::WriteError, what, now);
    }

    fn drop_data(&mut self, reason: DropReason, ack_now: bool) -> DataOutcome {
        self.drops.add(reason);
        DataOutcome { ack_now, dropped: Some(reason) }
    }

    /// Writes section bytes where they belong (fields of `self` apart, so that the bytes
    /// may be borrowed from the session's block decoder). `excluded`: the runs of a
    /// client granted `FILTER`, `None` for any other.
    fn store_in(
        output: Option<&mut Output>,
        crash: &CrashAnnouncement,
        registers: &mut RegisterAssembler,
        counts: &mut Counts,
        client: &ClientInfo,
        excluded: Option<&mut ExcludedRuns>,
        data: &Data<'_>,
    ) -> Result<(), StoreError> {
        let Some(output) = output else {
            return Err(StoreError::OutOfRange);
        };
        let (Some(files), layout) = (output.files.as_mut(), &output.layout) else {
            return Err(StoreError::OutOfRange);
        };
        let len = data.data.len() as u64;
        let end = data.offset.checked_add(len).ok_or(StoreError::OutOfRange)?;
        match data.section {
            Section::Log => {
                if end > crash.log_len {
                    return Err(StoreError::OutOfRange);
                }
                files.write_log(data.offset, data.data)?;
                counts.log_bytes += len;
            }
            Section::Memory => {
                let at = layout.memory_offset(data.offset, len).ok_or(StoreError::OutOfRange)?;
                files.write_vmcore(at, data.data)?;
                counts.memory_bytes += len;
            }
            Section::Excluded => {
                let Some(excluded) = excluded else {
                    return Err(StoreError::BadExclusion(ExclusionError::NotGranted));
                };
                let ranges: Vec<MemoryRange> = layout.segments().iter().map(|s| s.range).collect();
                let page_size = u64::from(crash.page_size.max(1));
                excluded.add(data.offset, data.data, &ranges, page_size).map_err(StoreError::BadExclusion)?;
            }
            Section::Extra => {
                if end > MAX_EXTRA_BYTES {
                    return Err(StoreError::OutOfRange);
                }
                files.write_extra(data.offset, data.data)?;
                counts.extra_bytes += len;
            }
            Section::Registers => {
                let done = registers.write(data.offset, data.data).ok_or(StoreError::OutOfRange)?;
                for cpu in done {
                    let Some(record) = registers.record(cpu) else { continue };
                    if record.cpu() != u64::from(cpu) {
                        tracing::debug!(client = %client.name, cpu, record_cpu = record.cpu(), "register record names another CPU");
                    }
                    if let Some(at) = layout.prstatus_offset(cpu) {
                        files.write_vmcore(at, &layout.prstatus_record(cpu, Some(&record)))?;
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

    /// When the owed ACK should go out: [`ACK_DELAY`] after the first packet it covers.
    /// Together with [`ACK_EVERY`], `ACK_REQUEST` and the ACK at once on news of a gap
    /// (a packet that opens or fills one), this keeps ACKs to a few per window instead of
    /// one per packet, which matters to a polled client under emulation.
    pub fn ack_deadline(&self) -> Option<Instant> {
        let since = self.ack_owed_since.filter(|_| self.ack_due)?;
        Some(since + ACK_DELAY)
    }

    /// The ACK to send now; clears what is owed. What the ACK covers is written first
    /// (the vmcore's gathered bytes, [`DumpFiles::write_vmcore`]): an ACK promises that
    /// the data is in the dump's file. A write that fails there ends the dump, and the
    /// ACK says `STOP`.
    pub fn take_ack(&mut self) -> AckReply {
        if let Some(files) = self.output.as_mut().and_then(|o| o.files.as_mut())
            && let Err(e) = files.flush()
        {
            self.write_failed(e, Instant::now());
        }
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
            && let Err(e) = self.write_exclusion_note()
        {
            status = FinishStatus::WriteError;
            why = format!("cannot write the exclusion note: {e}");
        }
        if status == FinishStatus::Verified
            && let Some(files) = self.output.as_mut().and_then(|o| o.files.as_mut())
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
            // One line, whatever the CPU count: the log's line budget is per line.
            tracing::info!(
                client = %self.client.name,
                dir = self.dir_name().unwrap_or(""),
                bytes = self.counts.data_bytes,
                seconds = format_args!("{secs:.2}"),
                mb_s = format_args!("{:.1}", self.throughput_mb_s()),
                "dump complete{}",
                self.missing_cpus_note()
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
        tracing::warn!(
            client = %self.client.name,
            dir = self.dir_name().unwrap_or(""),
            reason = ?why,
            "dump incomplete{}",
            self.missing_cpus_note()
        );
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

    /// Appends the exclusion note of a filtered dump to its vmcore and points the
    /// reserved program header at it; once (a verified dump writes it before the vmcore
    /// is published, any other when it ends).
    fn write_exclusion_note(&mut self) -> std::io::Result<()> {
        let page_size = self.crash.page_size;
        let Some(o) = self.output.as_mut() else { return Ok(()) };
        let (Some(files), false) = (o.files.as_mut(), o.exclusion_note_written) else { return Ok(()) };
        if !files.has_vmcore() {
            return Ok(());
        }
        let runs: Vec<_> = self.excluded.runs().collect();
        let Some((phdr_at, phdr, note_at, note)) = o.layout.exclusion_note(page_size, runs.into_iter()) else {
            return Ok(());
        };
        files.write_vmcore(note_at, &note)?;
        files.write_vmcore(phdr_at, &phdr)?;
        o.exclusion_note_written = true;
        Ok(())
    }

    fn end(&mut self, now: Instant) {
        if let Err(e) = self.write_exclusion_note() {
            tracing::error!(client = %self.client.name, "cannot write the exclusion note: {e}");
        }
        self.ended = Some((now, crate::utc::now()));
        self.write_registers();
        self.write_info();
        self.end_event = self.output.is_some();
        if let Some(o) = &mut self.output {
            o.files = None;
        }
        // Remembered a while to answer repeats: only what info.json needs stays.
        self.blocks.release();
        self.window.release();
        self.excluded.release();
        self.registers.release();
    }

    /// Runs a filtered dump may report at most (`limits.max_excluded_runs`).
    pub fn set_max_excluded_runs(&mut self, n: usize) {
        self.excluded.set_limit(n);
    }

    /// What the session may hold in memory: its reservation while it receives
    /// ([`crate::budget::receiving_bytes`]), what it keeps once ended after.
    pub fn reserved_bytes(&self) -> u64 {
        let (cpus, machine) = (self.crash.cpu_count, self.crash.machine);
        if self.phase != Phase::Receiving {
            return crate::budget::ended_bytes(cpus, machine);
        }
        crate::budget::receiving_bytes(
            cpus,
            machine,
            self.decision.verdict == Verdict::DumpAll,
            self.registration.features & features::COMPRESSED != 0,
            self.filtered(),
            self.excluded.limit(),
        )
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

    /// What the log line of an ended dump adds about CPUs without registers:
    /// `; cpus without registers: 3 (no_answer)`, or nothing when every CPU's arrived.
    /// The state names are the server's own (or `unknown_<code>`), never client text.
    fn missing_cpus_note(&self) -> String {
        let cpus = self.registers.cpus(self.crash.crashing_cpu, self.crash.cpu_count);
        registers::missing_note(&cpus).map(|m| format!("; cpus without registers: {m}")).unwrap_or_default()
    }

    /// `registers`: every CPU's record as text, the crashing CPU first, so that a dump
    /// without a vmcore still shows them (and analysis can symbolize `rip`); a CPU
    /// without registers gets a line saying why. Not written when no record arrived.
    fn write_registers(&self) {
        let Some(o) = &self.output else { return };
        if self.registers.complete_count() == 0 {
            return;
        }
        let text = self.registers.text(self.crash.crashing_cpu, self.crash.cpu_count);
        if let Err(e) = crate::files::write_atomic(&o.dir.path().join(REGISTERS), text.as_bytes()) {
            tracing::error!(dir = %o.dir.path().display(), "cannot write {REGISTERS}: {e}");
        }
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
}

enum StoreError {
    OutOfRange,
    BadExclusion(ExclusionError),
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// The check a DATA payload was sent with (its header's flags as the server passes them
/// on: [`flags::CHECK_XXH64`] only where the header's check is XXH64), which the stream
/// CRC takes.
fn check_of(header_flags: u16) -> Check {
    if header_flags & flags::CHECK_XXH64 != 0 { Check::Xxh64 } else { Check::Crc32 }
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
mod tests;
