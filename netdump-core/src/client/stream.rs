//! The dump's data stream: console log, register records, the runs of pages the filter
//! leaves out (with an [`ExcludeSet`]), every other non-zero page of memory, then the
//! kernel's extra state text, cut into DATA payloads (sub-header + data) in the order
//! PROTOCOL.md gives.

#[cfg(feature = "compression")]
use super::compress::{Block, Lz4Scratch};
use crate::log::LogSource;
use crate::memory::{ExcludeSet, MemoryMap, MemorySource, PAGE_SIZE, PageClass};
#[cfg(test)]
use crate::proto::RegisterRecord;
use crate::proto::{CpuRegisters, Data, Encoding, ExcludedRun, MAX_RECORD_LEN, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Log,
    Registers,
    Excluded,
    Memory,
    Extra,
    Done,
}

/// Writes the kernel's extra state (a task list, counters — like SysRq-t) as text. Runs
/// on the crash path after the memory image: it must not allocate, lock or wait, and it
/// must write the same text each time it is called, because the stream calls it once per
/// 4 KiB of output and keeps only that window of it (no buffer for the whole text).
pub type ExtraState = fn(&mut dyn core::fmt::Write) -> core::fmt::Result;

/// Data bytes of a keepalive packet.
pub const KEEPALIVE_BYTES: usize = 8;

/// Most bytes of extra state sent; the rest is cut.
pub const MAX_EXTRA_BYTES: u64 = 256 * 1024;

/// Keeps the bytes `skip..skip + buf.len()` of what is written through it; stops the
/// writer (with an error) once the window is full.
struct WindowWriter<'a> {
    skip: u64,
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for WindowWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut bytes = s.as_bytes();
        let skipped = bytes.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
        self.skip -= skipped as u64;
        bytes = &bytes[skipped..];
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if self.len == self.buf.len() { Err(core::fmt::Error) } else { Ok(()) }
    }
}

/// Statistics of the memory walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Non-zero pages read and sent.
    pub pages_sent: u64,
    /// All-zero pages read and not sent.
    pub zero_pages: u64,
    /// Pages the [`MemorySource`](crate::memory::MemorySource) could not read; not sent (the
    /// server's image keeps zeros there).
    pub unreadable_pages: u64,
    /// Pages the filter left out (their class is in the [`ExcludeSet`]); not read, not
    /// sent, reported in the `EXCLUDED` section.
    pub excluded_pages: u64,
    /// DATA packets whose memory went as an LZ4 block (feature `compression`).
    pub lz4_blocks: u64,
    /// Memory bytes those blocks decode to.
    pub lz4_raw_bytes: u64,
    /// Bytes of those blocks on the wire.
    pub lz4_wire_bytes: u64,
    /// Pages offered to the LZ4 encoder (the rest of a run of incompressible pages is
    /// not: see [`MAX_LZ4_SKIP`]).
    pub lz4_tries: u64,
}

/// The most pages sent raw untried after a run of pages that did not shrink (random or
/// encrypted memory): the encoder backs off, 1, 2, 4, … pages after the third
/// incompressible page in a row, up to this, so that incompressible memory costs about
/// one try in this many pages, and compressible memory after it waits at most this long.
#[cfg_attr(not(feature = "compression"), allow(dead_code))]
pub const MAX_LZ4_SKIP: u32 = 64;

/// Cursor over the page currently held in the page buffer.
struct PageCursor {
    /// Index of the range and page (within the range) that the buffer holds.
    range: usize,
    page: u64,
    /// Bytes of the buffered page already sent; `PAGE_SIZE` when none is held.
    used: usize,
}

/// Produces DATA payloads one at a time.
pub struct DataStream<'a> {
    stage: Stage,
    offset: u64,
    log: Option<&'a dyn LogSource>,
    log_len: u64,
    cpus: CpuRegisters<'a>,
    map: &'a MemoryMap,
    memory: &'a dyn MemorySource,
    page: &'a mut [u8; PAGE_SIZE],
    /// Next page of the walk to load (range index, page index in range).
    walk: (usize, u64),
    cursor: PageCursor,
    /// The last all-zero page the walk found, for keepalive packets.
    last_zero_page: Option<u64>,
    /// The page classes left out; [`ExcludeSet::NONE`] unless the server granted `FILTER`.
    exclude: ExcludeSet,
    /// Next page the `EXCLUDED` section classifies (range index, page index in range).
    excluded_walk: (usize, u64),
    /// The memory walk's pages up to this one (range index, page index) are known to be
    /// kept: the last classification's run, so a run of kept pages is classified once.
    kept_until: (usize, u64),
    extra: Option<ExtraState>,
    /// The window of extra state held in the page buffer (once the memory walk is over):
    /// the section offset of its first byte and its length.
    extra_held: Option<(u64, usize)>,
    /// The LZ4 encoder, when the server granted `COMPRESSED`.
    #[cfg(feature = "compression")]
    lz4: Option<&'a mut Lz4Scratch>,
    /// The page (range, page index) whose block did not shrink: the rest of it goes raw.
    #[cfg(feature = "compression")]
    incompressible: Option<(usize, u64)>,
    /// Incompressible pages in a row, and pages still to send raw untried.
    #[cfg(feature = "compression")]
    lz4_misses: u32,
    #[cfg(feature = "compression")]
    lz4_skip: u32,
    /// The page the back-off last decided on (tried, or skipped).
    #[cfg(feature = "compression")]
    lz4_page: Option<(usize, u64)>,
    /// Pages are tested for zeros where they are and read straight into the packets,
    /// not loaded into the page buffer first (without LZ4, which encodes from the buffer).
    in_place: bool,
    pub stats: MemoryStats,
}

impl<'a> DataStream<'a> {
    pub fn new(
        log: Option<&'a dyn LogSource>,
        log_len: u64,
        cpus: impl Into<CpuRegisters<'a>>,
        map: &'a MemoryMap,
        memory: &'a dyn MemorySource,
        page: &'a mut [u8; PAGE_SIZE],
        include_memory: bool,
    ) -> Self {
        let walk = if include_memory { (0, 0) } else { (map.ranges().len(), 0) };
        DataStream {
            stage: Stage::Log,
            offset: 0,
            log,
            log_len,
            cpus: cpus.into(),
            map,
            memory,
            page,
            walk,
            cursor: PageCursor { range: 0, page: 0, used: PAGE_SIZE },
            last_zero_page: None,
            exclude: ExcludeSet::NONE,
            // No memory, no runs to report.
            excluded_walk: walk,
            kept_until: (0, 0),
            extra: None,
            extra_held: None,
            #[cfg(feature = "compression")]
            lz4: None,
            #[cfg(feature = "compression")]
            incompressible: None,
            #[cfg(feature = "compression")]
            lz4_misses: 0,
            #[cfg(feature = "compression")]
            lz4_skip: 0,
            #[cfg(feature = "compression")]
            lz4_page: None,
            in_place: true,
            stats: MemoryStats::default(),
        }
    }

    /// Whether memory is read in place ([`MemorySource::is_zero`], then straight into the
    /// packet: one copy of each byte) or through the page buffer (a copy into it, the
    /// zero test over it, a copy out of it). In place is the default; LZ4 always uses the
    /// buffer.
    pub fn with_in_place(mut self, on: bool) -> Self {
        self.in_place = on;
        self
    }

    /// Whether this stream reads memory in place (see [`with_in_place`](Self::with_in_place)).
    fn reads_in_place(&self) -> bool {
        #[cfg(feature = "compression")]
        if self.lz4.is_some() {
            return false;
        }
        self.in_place
    }

    /// Leaves out the pages of the classes in `exclude` and reports them in the EXCLUDED
    /// section. Only when the server granted the `FILTER` feature: an older server would
    /// drop the EXCLUDED section, and a reader could not tell the holes from zero pages.
    pub fn with_exclude(mut self, exclude: ExcludeSet) -> Self {
        self.exclude = if exclude.filters() { exclude } else { ExcludeSet::NONE };
        self
    }

    /// Sends memory as LZ4 blocks where they carry more than raw bytes (the server
    /// granted `COMPRESSED`).
    #[cfg(feature = "compression")]
    pub fn with_lz4(mut self, lz4: Option<&'a mut Lz4Scratch>) -> Self {
        self.lz4 = lz4;
        self
    }

    /// Sends what `extra` writes, after the memory image, as the EXTRA section.
    pub fn with_extra(mut self, extra: Option<ExtraState>) -> Self {
        self.extra = extra;
        self
    }

    /// Writes the next DATA payload into `out` (at most `out.len()` bytes) and returns
    /// its length, or `None` when the stream is over.
    ///
    /// `None` also when a long run of zero pages was skipped without finding data: the
    /// scan is bounded per call ([`SCAN_BUDGET`] pages) so that the sender keeps
    /// answering ACKs and ARP during a long hole; [`is_done`](Self::is_done) tells the end.
    pub fn next_payload(&mut self, out: &mut [u8]) -> Option<usize> {
        // A plain compare, where `checked_sub(..).filter(..)?` hid from the optimiser
        // that every `out[SUBHEADER_LEN..][..room]` below is in bounds.
        if out.len() <= Data::SUBHEADER_LEN {
            return None;
        }
        let room = out.len() - Data::SUBHEADER_LEN;
        loop {
            let mut encoding = Encoding::Raw;
            let (section, offset, len) = match self.stage {
                Stage::Log => {
                    let n = match self.log {
                        Some(log) if self.offset < self.log_len => {
                            let want = room.min((self.log_len - self.offset) as usize);
                            log.read_at(self.offset as usize, &mut out[Data::SUBHEADER_LEN..][..want])
                        }
                        _ => 0,
                    };
                    if n == 0 {
                        self.advance(Stage::Registers);
                        continue;
                    }
                    (Section::Log, self.offset, n)
                }
                Stage::Registers => {
                    let record_len = self.cpus.machine().record_len();
                    let total = (self.cpus.len() * record_len) as u64;
                    if self.offset >= total {
                        self.advance(Stage::Excluded);
                        continue;
                    }
                    let n = room.min((total - self.offset) as usize);
                    let dst = &mut out[Data::SUBHEADER_LEN..][..n];
                    let mut done = 0;
                    while done < n {
                        // Records are serialised one at a time: no buffer for all CPUs.
                        let pos = self.offset as usize + done;
                        let mut record = [0u8; MAX_RECORD_LEN];
                        self.cpus.record_bytes(pos / record_len, &mut record);
                        let from = pos % record_len;
                        let k = (record_len - from).min(n - done);
                        dst[done..done + k].copy_from_slice(&record[from..record_len][..k]);
                        done += k;
                    }
                    (Section::Registers, self.offset, n)
                }
                Stage::Excluded => match self.fill_excluded(&mut out[Data::SUBHEADER_LEN..][..room]) {
                    MemoryFill::Data(_, n) => (Section::Excluded, self.offset, n),
                    // EXCLUDED records are never compressed: nothing to send this call.
                    MemoryFill::Skipped | MemoryFill::Lz4 { .. } => return None,
                    MemoryFill::End => {
                        self.advance(Stage::Memory);
                        continue;
                    }
                },
                Stage::Memory => match self.next_memory(&mut out[Data::SUBHEADER_LEN..][..room]) {
                    MemoryFill::Data(phys, n) => (Section::Memory, phys, n),
                    MemoryFill::Lz4 { phys, raw_len, wire_len } => {
                        encoding = Encoding::Lz4 { raw_len: raw_len as u32 };
                        (Section::Memory, phys, wire_len)
                    }
                    MemoryFill::Skipped => return None,
                    MemoryFill::End => {
                        self.advance(Stage::Extra);
                        continue;
                    }
                },
                Stage::Extra => {
                    let n = self.fill_extra(&mut out[Data::SUBHEADER_LEN..][..room]);
                    if n == 0 {
                        self.advance(Stage::Done);
                        continue;
                    }
                    (Section::Extra, self.offset, n)
                }
                Stage::Done => return None,
            };
            Data::emit_subheader(section, offset, out);
            encoding.emit(out);
            if section != Section::Memory {
                self.offset += len as u64;
            }
            return Some(Data::SUBHEADER_LEN + len);
        }
    }

    /// Whether every section has been produced.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    fn advance(&mut self, stage: Stage) {
        self.stage = stage;
        self.offset = 0;
    }

    /// A DATA payload that keeps the session alive during a long run of zero pages: the
    /// first [`KEEPALIVE_BYTES`] of the last zero page the walk found, which the server
    /// writes where they already are (zeros in a hole). `None` before any zero page.
    pub fn keepalive_payload(&mut self, out: &mut [u8]) -> Option<usize> {
        let phys = self.last_zero_page?;
        let out = out.get_mut(..Data::SUBHEADER_LEN + KEEPALIVE_BYTES)?;
        Data::emit_subheader(Section::Memory, phys, out);
        out[Data::SUBHEADER_LEN..].fill(0);
        Some(out.len())
    }

    /// Copies the next extra-state bytes at `self.offset` into `out`; 0 at the end. The
    /// page buffer, free once the memory walk is over, holds a 4 KiB window of the text:
    /// when the offset leaves it, the callback runs again and the next window is kept.
    fn fill_extra(&mut self, out: &mut [u8]) -> usize {
        let Some(extra) = self.extra else { return 0 };
        let (mut start, mut held) = self.extra_held.unwrap_or((0, 0));
        if self.offset >= start + held as u64 {
            // A window shorter than the buffer means the text ended there.
            let ended = self.extra_held.is_some_and(|(_, held)| held < PAGE_SIZE);
            if ended || self.offset >= MAX_EXTRA_BYTES {
                return 0;
            }
            let room = PAGE_SIZE.min((MAX_EXTRA_BYTES - self.offset) as usize);
            let mut w = WindowWriter { skip: self.offset, buf: &mut self.page[..room], len: 0 };
            // An error is the writer stopping the callback at a full window, or the
            // callback's own: either way the bytes written so far are what it said.
            let _ = extra(&mut w);
            (start, held) = (self.offset, w.len);
            self.extra_held = Some((start, held));
            if held == 0 {
                return 0;
            }
        }
        let from = (self.offset - start) as usize;
        let n = out.len().min(held - from);
        out[..n].copy_from_slice(&self.page[from..from + n]);
        n
    }

    /// The next memory payload: an LZ4 block of the held page when the encoder is on and
    /// the block pays, else raw bytes ([`fill_memory`](Self::fill_memory)).
    fn next_memory(&mut self, out: &mut [u8]) -> MemoryFill {
        #[cfg(feature = "compression")]
        if self.lz4.is_some() {
            if self.cursor.used == PAGE_SIZE {
                match self.load_data_page() {
                    MemoryFill::Data(..) => {}
                    other => return other,
                }
            }
            let held = (self.cursor.range, self.cursor.page);
            if self.lz4_page != Some(held) {
                // A page new to the encoder (raw packets may have walked into it).
                self.lz4_page = Some(held);
                if self.lz4_skip > 0 {
                    // Backing off after incompressible pages: this one goes raw untried.
                    self.lz4_skip -= 1;
                    self.incompressible = Some(held);
                } else {
                    self.stats.lz4_tries += 1;
                }
            }
            if self.incompressible != Some(held)
                && let Some(lz4) = self.lz4.as_deref_mut()
            {
                match lz4.encode(&self.page[self.cursor.used..], out) {
                    Block::Lz4 { raw_len, wire_len } => {
                        let phys = self.phys_of(held.0, held.1) + self.cursor.used as u64;
                        self.cursor.used += raw_len;
                        self.stats.lz4_blocks += 1;
                        self.stats.lz4_raw_bytes += raw_len as u64;
                        self.stats.lz4_wire_bytes += wire_len as u64;
                        self.lz4_misses = 0;
                        return MemoryFill::Lz4 { phys, raw_len, wire_len };
                    }
                    Block::Incompressible => {
                        self.incompressible = Some(held);
                        self.lz4_misses = self.lz4_misses.saturating_add(1);
                        if self.lz4_misses >= 3 {
                            self.lz4_skip = (1u32 << (self.lz4_misses - 3).min(6)).min(MAX_LZ4_SKIP);
                        }
                    }
                    Block::Raw => {}
                }
            }
            // Raw: this packet only, within the page, so that the next page gets its try.
            let n = out.len().min(PAGE_SIZE - self.cursor.used);
            let phys = self.phys_of(held.0, held.1) + self.cursor.used as u64;
            if self.incompressible != Some(held) {
                out[..n].copy_from_slice(&self.page[self.cursor.used..self.cursor.used + n]);
                self.cursor.used += n;
                return MemoryFill::Data(phys, n);
            }
        }
        self.fill_memory(out)
    }

    /// Loads pages until one with data (`Data(..)`, the page held with nothing sent),
    /// the end, or [`SCAN_BUDGET`] skipped pages.
    fn load_data_page(&mut self) -> MemoryFill {
        let mut skipped = 0;
        loop {
            match self.load_next_page() {
                None => return MemoryFill::End,
                Some(true) => return MemoryFill::Data(0, 0),
                Some(false) if skipped + 1 >= SCAN_BUDGET => return MemoryFill::Skipped,
                Some(false) => skipped += 1,
            }
        }
    }

    fn phys_of(&self, range: usize, page: u64) -> u64 {
        self.map.ranges()[range].phys_start + page * PAGE_SIZE as u64
    }

    /// The class of page `page` of range `range` and how many pages of the range from it
    /// on share it: the memory source's answer, held to 1..=the pages left in the range.
    fn classify(&self, range: usize, page: u64) -> (PageClass, u64) {
        let left = self.map.ranges()[range].length / PAGE_SIZE as u64 - page;
        let (class, run) = self.memory.classify(self.phys_of(range, page), left);
        (class, run.max(1).min(left))
    }

    /// Fills `out` with whole EXCLUDED records: the runs of excluded pages from
    /// `excluded_walk` on, adjacent runs of one class merged, at most [`SCAN_BUDGET`]
    /// classifications per call. The record's offset is the section's byte offset.
    fn fill_excluded(&mut self, out: &mut [u8]) -> MemoryFill {
        let ranges = self.map.ranges();
        let mut len = 0;
        // The last record written and its range: runs are merged within a range only.
        let mut last: Option<(usize, ExcludedRun)> = None;
        if !self.exclude.filters() {
            return MemoryFill::End;
        }
        for _ in 0..SCAN_BUDGET {
            let (mut r, mut p) = self.excluded_walk;
            while r < ranges.len() && p * PAGE_SIZE as u64 >= ranges[r].length {
                (r, p) = (r + 1, 0);
            }
            self.excluded_walk = (r, p);
            if r >= ranges.len() {
                break;
            }
            let (class, run) = self.classify(r, p);
            let run = run.min(u64::from(u32::MAX));
            if self.exclude.excludes(class) {
                let start_pfn = self.phys_of(r, p) / PAGE_SIZE as u64;
                match &mut last {
                    Some((lr, l))
                        if *lr == r
                            && l.class == class
                            && l.start_pfn + u64::from(l.pages) == start_pfn
                            && u64::from(l.pages) + run <= u64::from(u32::MAX) =>
                    {
                        l.pages += run as u32;
                        l.emit(&mut out[len - ExcludedRun::WIRE_LEN..len]);
                    }
                    _ => {
                        // No room for another record: the packet is full.
                        let Some(dst) = out.get_mut(len..len + ExcludedRun::WIRE_LEN) else { break };
                        let record = ExcludedRun { start_pfn, pages: run as u32, class };
                        record.emit(dst);
                        len += ExcludedRun::WIRE_LEN;
                        last = Some((r, record));
                    }
                }
            }
            self.excluded_walk = (r, p + run);
        }
        match (len, self.excluded_walk.0 >= ranges.len()) {
            (0, true) => MemoryFill::End,
            (0, false) => MemoryFill::Skipped,
            (n, _) => MemoryFill::Data(0, n),
        }
    }

    /// Loads the next page of the walk into the buffer; returns whether it is non-zero
    /// (zero and unreadable pages are counted and left unsent, excluded runs skipped
    /// whole without being read). `None` at the end.
    fn load_next_page(&mut self) -> Option<bool> {
        let ranges = self.map.ranges();
        let (mut r, mut p) = self.walk;
        while r < ranges.len() && p * PAGE_SIZE as u64 >= ranges[r].length {
            r += 1;
            p = 0;
        }
        if r >= ranges.len() {
            self.walk = (r, 0);
            return None;
        }
        self.walk = (r, p + 1);
        self.cursor = PageCursor { range: r, page: p, used: 0 };
        if self.exclude.filters() && (r, p) >= self.kept_until {
            let (class, run) = self.classify(r, p);
            if self.exclude.excludes(class) {
                self.walk = (r, p + run);
                self.stats.excluded_pages += run;
                self.cursor.used = PAGE_SIZE;
                return Some(false);
            }
            self.kept_until = (r, p + run);
        }
        let phys = self.phys_of(r, p);
        if self.reads_in_place() {
            match self.memory.is_zero(phys, PAGE_SIZE) {
                Ok(false) => {
                    self.stats.pages_sent += 1;
                    return Some(true);
                }
                Ok(true) => {
                    self.stats.zero_pages += 1;
                    self.last_zero_page = Some(phys);
                }
                Err(_) => self.stats.unreadable_pages += 1,
            }
            self.cursor.used = PAGE_SIZE;
            return Some(false);
        }
        if self.memory.read(phys, self.page).is_err() {
            self.stats.unreadable_pages += 1;
            self.cursor.used = PAGE_SIZE;
            return Some(false);
        }
        if is_zero(self.page) {
            self.stats.zero_pages += 1;
            self.last_zero_page = Some(phys);
            self.cursor.used = PAGE_SIZE;
            return Some(false);
        }
        self.stats.pages_sent += 1;
        Some(true)
    }

    /// Fills `out` with the next run of non-zero memory that is physically contiguous
    /// and within one range. Returns its physical address and length.
    fn fill_memory(&mut self, out: &mut [u8]) -> MemoryFill {
        let mut start: Option<u64> = None;
        let mut len = 0;
        while len < out.len() {
            if self.cursor.used == PAGE_SIZE {
                match start {
                    // Continue the packet only with the very next page of the same range.
                    Some(_) => {
                        let (r, p) = self.walk;
                        let same_range = r == self.cursor.range && p * (PAGE_SIZE as u64) < self.map.ranges()[r].length;
                        if !same_range || self.load_next_page() != Some(true) {
                            break;
                        }
                    }
                    None => match self.load_data_page() {
                        MemoryFill::Data(..) => {}
                        other => return other,
                    },
                }
            }
            let here = self.phys_of(self.cursor.range, self.cursor.page) + self.cursor.used as u64;
            start.get_or_insert(here);
            // Sliced from `len` on, then cut to `n`: bounds the optimiser sees hold.
            let dst = &mut out[len..];
            let n = dst.len().min(PAGE_SIZE - self.cursor.used);
            let dst = &mut dst[..n];
            if self.reads_in_place() {
                if self.memory.read(here, dst).is_err() {
                    // Its zero test read it a moment ago: zeros go in its place, and the
                    // dump is reported incomplete rather than the packet lost.
                    dst.fill(0);
                    self.stats.unreadable_pages += 1;
                }
            } else {
                dst.copy_from_slice(&self.page[self.cursor.used..][..n]);
            }
            self.cursor.used += n;
            len += n;
        }
        match start {
            Some(s) => MemoryFill::Data(s, len),
            None => MemoryFill::End,
        }
    }
}

/// Zero, unreadable or excluded pages (an excluded run counts once) skipped in one call
/// before it returns to the sender; classifications per EXCLUDED packet.
pub const SCAN_BUDGET: usize = 256;

/// What one step of the memory walk produced.
enum MemoryFill {
    /// `len` bytes of contiguous non-zero memory at a physical address (or of EXCLUDED
    /// records, address 0).
    Data(u64, usize),
    /// An LZ4 block of `wire_len` bytes decoding to `raw_len` bytes of memory at `phys`.
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    Lz4 {
        phys: u64,
        raw_len: usize,
        wire_len: usize,
    },
    /// Only skipped pages so far.
    Skipped,
    End,
}

fn is_zero(page: &[u8; PAGE_SIZE]) -> bool {
    page.chunks_exact(8).all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::ConsoleLog;
    use crate::memory::{MemoryError, MemoryRange};
    use crate::proto::Data;
    use std::collections::BTreeMap;

    /// Memory where page `p` is zero when `zero(p)`, else filled with a byte pattern.
    struct FakeMemory {
        zero: fn(u64) -> bool,
        unreadable: Option<u64>,
    }
    impl MemorySource for FakeMemory {
        fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
            if Some(phys) == self.unreadable {
                return Err(MemoryError { phys });
            }
            for (i, b) in out.iter_mut().enumerate() {
                let a = phys + i as u64;
                *b = if (self.zero)(a / 4096) { 0 } else { (a % 251) as u8 | 1 };
            }
            Ok(())
        }
    }

    fn collect(stream: &mut DataStream, mtu_room: usize) -> Vec<(Section, u64, Vec<u8>)> {
        let mut out = vec![0u8; mtu_room];
        let mut v = vec![];
        while !stream.is_done() {
            let Some(n) = stream.next_payload(&mut out) else { continue };
            let d = Data::parse(&out[..n]).unwrap();
            v.push((d.section, d.offset, d.data.to_vec()));
        }
        v
    }

    fn map() -> MemoryMap {
        MemoryMap::new(&[
            MemoryRange { phys_start: 0, length: 3 * 4096, virt_start: 0 },
            MemoryRange { phys_start: 3 * 4096, length: 4 * 4096, virt_start: 3 * 4096 },
            MemoryRange { phys_start: 16 * 4096, length: 2 * 4096, virt_start: 16 * 4096 },
        ])
        .unwrap()
    }

    #[test]
    fn sections_come_in_order_and_memory_matches_byte_for_byte() {
        let log = ConsoleLog::<4096>::new();
        log.write(b"boot ok\npanic: boom\n");
        let len = log.freeze_len() as u64;
        let cpus =
            [RegisterRecord { rip: 0x1234, ..Default::default() }, RegisterRecord { cpu: 1, ..Default::default() }];
        let mem = FakeMemory { zero: |p| p == 1 || p == 5, unreadable: None };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(Some(&log), len, &cpus, &m, &mem, &mut page, true);
        let chunks = collect(&mut s, 1448);
        let order: Vec<Section> = chunks.iter().map(|c| c.0).collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|s| *s as u8);
        assert_eq!(order, sorted, "sections out of order");
        let log_bytes: Vec<u8> = chunks.iter().filter(|c| c.0 == Section::Log).flat_map(|c| c.2.clone()).collect();
        assert_eq!(log_bytes, b"boot ok\npanic: boom\n");
        let regs: Vec<u8> = chunks.iter().filter(|c| c.0 == Section::Registers).flat_map(|c| c.2.clone()).collect();
        assert_eq!(regs.len(), 512);
        assert_eq!(RegisterRecord::parse(&regs[..256]).unwrap().rip, 0x1234);
        // Rebuild memory from the chunks and compare with the source.
        let mut rebuilt: BTreeMap<u64, u8> = BTreeMap::new();
        for (sec, off, data) in chunks.iter().filter(|c| c.0 == Section::Memory) {
            assert_eq!(*sec, Section::Memory);
            for (i, b) in data.iter().enumerate() {
                assert!(rebuilt.insert(off + i as u64, *b).is_none(), "byte sent twice");
            }
        }
        for r in m.ranges() {
            for a in r.phys_start..r.phys_end() {
                let mut b = [0u8];
                mem.read(a, &mut b).unwrap();
                assert_eq!(rebuilt.get(&a).copied().unwrap_or(0), b[0], "at {a:#x}");
                if (mem.zero)(a / 4096) {
                    assert!(!rebuilt.contains_key(&a), "zero page {a:#x} was sent");
                }
            }
        }
        assert_eq!(s.stats, MemoryStats { pages_sent: 7, zero_pages: 2, unreadable_pages: 0, ..Default::default() });
    }

    #[test]
    fn memory_read_in_place_is_the_stream_read_through_the_page_buffer() {
        // A page whose only non-zero byte is its last, and an unreadable one: the zero test
        // in place must see both as the buffered walk does.
        struct Edges(FakeMemory);
        impl MemorySource for Edges {
            fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
                self.0.read(phys, out)?;
                for (i, b) in out.iter_mut().enumerate() {
                    let a = phys + i as u64;
                    if a / 4096 == 16 {
                        *b = u8::from(a % 4096 == 4095);
                    }
                }
                Ok(())
            }
        }
        let mem = Edges(FakeMemory { zero: |p| p == 1 || p == 5, unreadable: Some(4 * 4096) });
        let m = map();
        let streams: Vec<_> = [true, false]
            .into_iter()
            .map(|in_place| {
                let mut page = [0u8; PAGE_SIZE];
                let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_in_place(in_place);
                (collect(&mut s, 1448), s.stats)
            })
            .collect();
        assert_eq!(streams[0], streams[1]);
        assert_eq!(
            streams[0].1,
            MemoryStats { pages_sent: 6, zero_pages: 2, unreadable_pages: 1, ..Default::default() }
        );
        let last = 16 * 4096 + 4095;
        let covers = |(_, off, d): &&(Section, u64, Vec<u8>)| (*off..off + d.len() as u64).contains(&last);
        let (_, off, d) = streams[0].0.iter().find(covers).expect("page 16 was sent");
        assert_eq!(d[(last - off) as usize], 1);
    }

    #[test]
    fn packets_never_cross_a_range_or_a_zero_page() {
        let mem = FakeMemory { zero: |p| p == 5, unreadable: None };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        for (_, off, data) in collect(&mut s, 1448) {
            let end = off + data.len() as u64 - 1;
            let range_of = |a: u64| m.ranges().iter().position(|r| r.contains(a, 1));
            assert_eq!(range_of(off), range_of(end), "chunk {off:#x}+{} crosses a range", data.len());
            assert!(!(off / 4096..=end / 4096).any(|p| p == 5), "chunk covers the zero page");
        }
    }

    #[test]
    fn contiguous_pages_share_packets() {
        let mem = FakeMemory { zero: |_| false, unreadable: None };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0, length: 8 * 4096, virt_start: 0 }]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let chunks = collect(&mut s, 16 + 1432);
        assert_eq!(chunks.len(), (8 * 4096usize).div_ceil(1432));
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.2.len() == 1432));
    }

    #[test]
    fn a_long_hole_yields_to_the_sender_without_ending_the_stream() {
        // 3 × SCAN_BUDGET zero pages, then one page of data.
        let pages = 3 * SCAN_BUDGET as u64 + 1;
        let mem = FakeMemory { zero: |p| p < 3 * SCAN_BUDGET as u64, unreadable: None };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0, length: pages * 4096, virt_start: 0 }]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let mut out = [0u8; 1448];
        let mut yields = 0;
        let first = loop {
            match s.next_payload(&mut out) {
                Some(n) => break n,
                None => {
                    assert!(!s.is_done(), "the stream ended inside the hole");
                    yields += 1;
                }
            }
        };
        assert_eq!(yields, 3, "one yield per SCAN_BUDGET skipped pages");
        assert_eq!(Data::parse(&out[..first]).unwrap().offset, 3 * SCAN_BUDGET as u64 * 4096);
        assert_eq!(s.stats.zero_pages, 3 * SCAN_BUDGET as u64);
    }

    #[test]
    fn unreadable_pages_are_counted_and_skipped() {
        let mem = FakeMemory { zero: |_| false, unreadable: Some(4096) };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0, length: 3 * 4096, virt_start: 0 }]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let chunks = collect(&mut s, 1448);
        assert!(chunks.iter().all(|c| !(4096..8192).contains(&c.1)));
        assert_eq!(s.stats.unreadable_pages, 1);
        assert_eq!(s.stats.pages_sent, 2);
    }

    fn task_list(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        for task in 0..700 {
            writeln!(out, "task {task:4} state {}", if task % 3 == 0 { "running" } else { "sleeping" })?;
        }
        Ok(())
    }

    fn expected_task_list() -> String {
        let mut s = String::new();
        task_list(&mut s).unwrap();
        s
    }

    fn extra_bytes(chunks: &[(Section, u64, Vec<u8>)]) -> Vec<u8> {
        let mut text = vec![];
        for (_, off, data) in chunks.iter().filter(|c| c.0 == Section::Extra) {
            assert_eq!(*off, text.len() as u64, "EXTRA offsets are contiguous");
            text.extend_from_slice(data);
        }
        text
    }

    #[test]
    fn keepalives_repeat_zeros_of_a_zero_page_and_only_after_one_was_found() {
        let mem = FakeMemory { zero: |p| p >= 1, unreadable: None };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0, length: 4 * 4096, virt_start: 0 }]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let mut out = [0u8; 1448];
        assert_eq!(s.keepalive_payload(&mut out), None, "no zero page seen yet");
        while s.next_payload(&mut out).is_some() {}
        let n = s.keepalive_payload(&mut out).unwrap();
        let d = Data::parse(&out[..n]).unwrap();
        assert_eq!((d.section, d.offset, d.data), (Section::Memory, 3 * 4096, &[0u8; KEEPALIVE_BYTES][..]));
    }

    #[test]
    fn extra_state_comes_last_and_whole_across_several_windows() {
        let mem = FakeMemory { zero: |p| p == 1, unreadable: None };
        let m = map();
        let cpus = [RegisterRecord::default()];
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &cpus, &m, &mem, &mut page, true).with_extra(Some(task_list));
        let chunks = collect(&mut s, 1448);
        let first_extra = chunks.iter().position(|c| c.0 == Section::Extra).unwrap();
        assert!(chunks[first_extra..].iter().all(|c| c.0 == Section::Extra), "EXTRA is the last section");
        let text = expected_task_list();
        assert!(text.len() > 3 * PAGE_SIZE, "the test text must span several windows");
        assert_eq!(String::from_utf8(extra_bytes(&chunks)).unwrap(), text);
    }

    #[test]
    fn extra_state_is_sent_when_memory_is_skipped_and_cut_at_its_bound() {
        fn endless(out: &mut dyn core::fmt::Write) -> core::fmt::Result {
            loop {
                out.write_str("counter 12345\n")?;
            }
        }
        let mem = FakeMemory { zero: |_| false, unreadable: None };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, false).with_extra(Some(endless));
        let chunks = collect(&mut s, 1448);
        assert!(chunks.iter().all(|c| c.0 == Section::Extra));
        assert_eq!(extra_bytes(&chunks).len() as u64, MAX_EXTRA_BYTES);

        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, false).with_extra(Some(|_| Ok(())));
        assert!(collect(&mut s, 1448).is_empty(), "no text, no EXTRA packet");

        // Text that fills its last window exactly ends there too.
        let mut page = [0u8; PAGE_SIZE];
        let two_windows =
            |out: &mut dyn core::fmt::Write| (0..2 * PAGE_SIZE / 8).try_for_each(|_| out.write_str("8 bytes\n"));
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, false).with_extra(Some(two_windows));
        assert_eq!(extra_bytes(&collect(&mut s, 1448)).len(), 2 * PAGE_SIZE);
    }

    #[test]
    fn skipping_memory_sends_log_and_registers_only() {
        let mem = FakeMemory { zero: |_| false, unreadable: None };
        let m = map();
        let cpus = [RegisterRecord::default()];
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &cpus, &m, &mem, &mut page, false);
        let chunks = collect(&mut s, 1448);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0, Section::Registers);
    }

    /// Memory with a class per page (`class(pfn)`) answered one page at a time or per run
    /// (`runs`), counting the classifications.
    struct ClassifiedMemory {
        class: fn(u64) -> PageClass,
        zero: fn(u64) -> bool,
        runs: bool,
        calls: std::cell::Cell<u64>,
    }
    impl ClassifiedMemory {
        fn new(class: fn(u64) -> PageClass, zero: fn(u64) -> bool, runs: bool) -> Self {
            ClassifiedMemory { class, zero, runs, calls: Default::default() }
        }
    }
    impl MemorySource for ClassifiedMemory {
        fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
            FakeMemory { zero: self.zero, unreadable: None }.read(phys, out)
        }
        fn classify(&self, phys: u64, pages: u64) -> (PageClass, u64) {
            self.calls.set(self.calls.get() + 1);
            let pfn = phys / 4096;
            let class = (self.class)(pfn);
            let run =
                if self.runs { (0..pages).take_while(|i| (self.class)(pfn + i) == class).count() as u64 } else { 1 };
            (class, run)
        }
    }

    fn excluded_runs(chunks: &[(Section, u64, Vec<u8>)]) -> Vec<ExcludedRun> {
        let mut bytes = vec![];
        for (_, off, data) in chunks.iter().filter(|c| c.0 == Section::Excluded) {
            assert_eq!(*off, bytes.len() as u64, "EXCLUDED offsets are contiguous");
            assert_eq!(data.len() % ExcludedRun::WIRE_LEN, 0, "whole records per packet");
            bytes.extend_from_slice(data);
        }
        ExcludedRun::parse_all(&bytes).map(|i| i.map(Result::unwrap).collect()).unwrap_or_default()
    }

    fn memory_pages(chunks: &[(Section, u64, Vec<u8>)]) -> std::collections::BTreeSet<u64> {
        let mut pages = std::collections::BTreeSet::new();
        for (_, off, data) in chunks.iter().filter(|c| c.0 == Section::Memory) {
            pages.extend(off / 4096..=(off + data.len() as u64 - 1) / 4096);
        }
        pages
    }

    fn classes(p: u64) -> PageClass {
        match p {
            1 | 2 => PageClass::User,
            3 | 4 | 16 | 17 => PageClass::Free,
            5 => PageClass::PageCache,
            _ => PageClass::KernelData,
        }
    }

    #[test]
    fn excluded_pages_are_not_sent_and_are_reported_as_runs_between_registers_and_memory() {
        let mem = ClassifiedMemory::new(classes, |p| p == 6, true);
        let m = map();
        let cpus = [RegisterRecord::default()];
        let mut page = [0u8; PAGE_SIZE];
        let exclude = ExcludeSet::USER.union(ExcludeSet::FREE);
        let mut s = DataStream::new(None, 0, &cpus, &m, &mem, &mut page, true).with_exclude(exclude);
        let chunks = collect(&mut s, 1448);
        let order: Vec<Section> = chunks.iter().map(|c| c.0).collect();
        let first_memory = order.iter().position(|s| *s == Section::Memory).unwrap();
        assert!(order[..first_memory].ends_with(&[Section::Registers, Section::Excluded]), "{order:?}");
        let run = |start_pfn, pages, class| ExcludedRun { start_pfn, pages, class };
        // Runs never cross a range: pfn 2 (user) ends range 0, pfn 3 (free) starts range 1.
        assert_eq!(
            excluded_runs(&chunks),
            [run(1, 2, PageClass::User), run(3, 2, PageClass::Free), run(16, 2, PageClass::Free)]
        );
        // Page cache is not in the set: page 5 is sent; page 6 is zero.
        assert_eq!(memory_pages(&chunks).into_iter().collect::<Vec<_>>(), [0, 5]);
        assert_eq!(
            s.stats,
            MemoryStats { pages_sent: 2, zero_pages: 1, unreadable_pages: 0, excluded_pages: 6, ..Default::default() }
        );
    }

    #[test]
    fn pages_of_unknown_and_kernel_classes_are_sent_whatever_the_set() {
        let mem = ClassifiedMemory::new(
            |p| [PageClass::Unknown, PageClass::KernelCode, PageClass::KernelData][p as usize % 3],
            |_| false,
            false,
        );
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_exclude(ExcludeSet::ALL);
        let chunks = collect(&mut s, 1448);
        assert!(excluded_runs(&chunks).is_empty());
        assert!(chunks.iter().all(|c| c.0 != Section::Excluded), "no EXCLUDED packet without a run");
        assert_eq!(s.stats.pages_sent, 9);
    }

    #[test]
    fn without_a_filter_nothing_is_classified_and_no_excluded_section_is_sent() {
        for exclude in [ExcludeSet::NONE, ExcludeSet::ZERO] {
            let mem = ClassifiedMemory::new(|_| PageClass::Free, |_| false, true);
            let m = map();
            let mut page = [0u8; PAGE_SIZE];
            let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_exclude(exclude);
            let chunks = collect(&mut s, 1448);
            assert_eq!(mem.calls.get(), 0, "{exclude:?}");
            assert!(chunks.iter().all(|c| c.0 == Section::Memory));
            assert_eq!(s.stats.pages_sent, 9);
        }
    }

    #[test]
    fn skipping_memory_sends_no_excluded_runs() {
        let mem = ClassifiedMemory::new(|_| PageClass::Free, |_| false, true);
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, false).with_exclude(ExcludeSet::ALL);
        assert!(collect(&mut s, 1448).is_empty());
        assert_eq!(mem.calls.get(), 0);
    }

    #[test]
    fn a_run_of_kept_pages_is_classified_once_per_pass() {
        let mem = ClassifiedMemory::new(|_| PageClass::KernelData, |_| false, true);
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_exclude(ExcludeSet::ALL);
        collect(&mut s, 1448);
        // One classification per range in the EXCLUDED pass and one in the memory walk.
        assert_eq!(mem.calls.get(), 2 * m.ranges().len() as u64);
        assert_eq!(s.stats.pages_sent, 9);
    }

    #[test]
    fn per_page_answers_are_merged_into_runs_and_many_runs_span_packets_and_yields() {
        // Runs of 3 pages alternating user / free, answered page by page.
        let pages = 4 * SCAN_BUDGET as u64;
        let mem = ClassifiedMemory::new(
            |p| if (p / 3) % 2 == 0 { PageClass::User } else { PageClass::Free },
            |_| false,
            false,
        );
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0, length: pages * 4096, virt_start: 0 }]).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_exclude(ExcludeSet::ALL);
        let mut out = [0u8; 1448];
        let (mut chunks, mut yields) = (vec![], 0);
        while !s.is_done() {
            match s.next_payload(&mut out) {
                Some(n) => {
                    let d = Data::parse(&out[..n]).unwrap();
                    chunks.push((d.section, d.offset, d.data.to_vec()));
                }
                None => yields += 1,
            }
        }
        // A run may be cut where a packet or a call's budget ends; joined, they are the runs.
        let packets = chunks.iter().filter(|c| c.0 == Section::Excluded).count();
        let mut runs: Vec<ExcludedRun> = vec![];
        for r in excluded_runs(&chunks) {
            match runs.last_mut() {
                Some(l) if l.class == r.class && l.start_pfn + u64::from(l.pages) == r.start_pfn => l.pages += r.pages,
                _ => runs.push(r),
            }
        }
        assert!(excluded_runs(&chunks).len() <= runs.len() + packets + yields, "page answers were not merged");
        assert_eq!(runs.len() as u64, pages.div_ceil(3));
        for (i, r) in runs.iter().enumerate() {
            let class = if i % 2 == 0 { PageClass::User } else { PageClass::Free };
            assert_eq!((r.start_pfn, r.class), (3 * i as u64, class));
            assert_eq!(u64::from(r.pages), 3.min(pages - 3 * i as u64));
        }
        assert!(packets > 1, "the runs need several packets");
        assert!(yields > 0, "the memory walk over excluded runs yields to the sender");
        assert!(chunks.iter().all(|c| c.0 == Section::Excluded));
        assert_eq!(s.stats.excluded_pages, pages);
    }

    #[test]
    fn run_lengths_out_of_bounds_are_held_to_the_range() {
        struct Wild(u64);
        impl MemorySource for Wild {
            fn read(&self, _: u64, out: &mut [u8]) -> Result<(), MemoryError> {
                out.fill(1);
                Ok(())
            }
            fn classify(&self, _: u64, _: u64) -> (PageClass, u64) {
                (PageClass::User, self.0)
            }
        }
        let m = map();
        for answer in [0, u64::MAX] {
            let mem = Wild(answer);
            let mut page = [0u8; PAGE_SIZE];
            let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_exclude(ExcludeSet::USER);
            let runs = excluded_runs(&collect(&mut s, 1448));
            let pages: u64 = runs.iter().map(|r| u64::from(r.pages)).sum();
            assert_eq!(pages, 9, "answer {answer}: every page once");
            assert_eq!(runs.len(), m.ranges().len(), "answer {answer}: one run per range, merged");
            assert_eq!(s.stats.excluded_pages, 9);
        }
    }

    /// Memory whose page `p` is random bytes when `random(p)`, else the pattern of
    /// [`FakeMemory`] (which compresses well).
    #[cfg(feature = "compression")]
    struct MixedMemory {
        random: fn(u64) -> bool,
    }
    #[cfg(feature = "compression")]
    impl MemorySource for MixedMemory {
        fn read(&self, phys: u64, out: &mut [u8]) -> Result<(), MemoryError> {
            for (i, b) in out.iter_mut().enumerate() {
                let a = phys + i as u64;
                *b = if (self.random)(a / 4096) {
                    let mut x = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
                    x ^= x >> 29;
                    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    (x >> 32) as u8
                } else {
                    (a % 251) as u8 | 1
                };
            }
            Ok(())
        }
    }

    /// Each memory packet's (offset, encoding, data bytes), and memory rebuilt byte by byte.
    #[cfg(feature = "compression")]
    type Decoded = (Vec<(u64, Encoding, usize)>, BTreeMap<u64, u8>);

    /// Every payload with its encoding; memory decoded (by the reference decoder) into a
    /// map of bytes, each byte sent once.
    #[cfg(feature = "compression")]
    fn collect_decoded(stream: &mut DataStream, room: usize) -> Decoded {
        let mut out = vec![0u8; room];
        let (mut packets, mut memory) = (vec![], BTreeMap::new());
        while !stream.is_done() {
            let Some(n) = stream.next_payload(&mut out) else { continue };
            let d = Data::parse(&out[..n]).unwrap();
            let e = Encoding::parse(&out[..n]).unwrap();
            if d.section != Section::Memory {
                assert_eq!(e, Encoding::Raw, "only memory is compressed");
                continue;
            }
            let bytes = match e {
                Encoding::Raw => d.data.to_vec(),
                Encoding::Lz4 { raw_len } => {
                    let mut b = vec![0u8; raw_len as usize];
                    assert_eq!(lz4_flex::block::decompress_into(d.data, &mut b).unwrap(), raw_len as usize);
                    b
                }
            };
            for (i, b) in bytes.iter().enumerate() {
                assert!(memory.insert(d.offset + i as u64, *b).is_none(), "byte sent twice");
            }
            packets.push((d.offset, e, d.data.len()));
        }
        (packets, memory)
    }

    #[cfg(feature = "compression")]
    fn assert_same_memory(m: &MemoryMap, mem: &dyn MemorySource, rebuilt: &BTreeMap<u64, u8>) {
        for r in m.ranges() {
            for a in r.phys_start..r.phys_end() {
                let mut b = [0u8];
                mem.read(a, &mut b).unwrap();
                assert_eq!(rebuilt.get(&a).copied(), Some(b[0]), "at {a:#x}");
            }
        }
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compressed_memory_decodes_to_the_same_bytes_in_fewer_packets() {
        let mem = FakeMemory { zero: |_| false, unreadable: None };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut plain = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let raw_packets = collect(&mut plain, 1448).len();
        let mut page = [0u8; PAGE_SIZE];
        let mut lz4 = crate::client::Lz4Scratch::new();
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_lz4(Some(&mut lz4));
        let (packets, rebuilt) = collect_decoded(&mut s, 1448);
        assert_same_memory(&m, &mem, &rebuilt);
        assert!(packets.iter().all(|p| matches!(p.1, Encoding::Lz4 { raw_len: 4096 })), "{packets:?}");
        assert_eq!(packets.len(), 9, "one block per page");
        assert!(packets.len() * 3 <= raw_packets, "{} blocks against {raw_packets} raw packets", packets.len());
        assert_eq!(s.stats.lz4_blocks, 9);
        assert_eq!(s.stats.lz4_raw_bytes, 9 * 4096);
        assert_eq!(s.stats.lz4_wire_bytes, packets.iter().map(|p| p.2 as u64).sum::<u64>());
    }

    #[cfg(feature = "compression")]
    #[test]
    fn incompressible_pages_go_raw_in_as_many_packets_as_without_compression() {
        let mem = MixedMemory { random: |_| true };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut plain = DataStream::new(None, 0, &[], &m, &mem, &mut page, true);
        let raw: Vec<(u64, usize)> = collect(&mut plain, 1448).iter().map(|c| (c.1, c.2.len())).collect();
        let mut page = [0u8; PAGE_SIZE];
        let mut lz4 = crate::client::Lz4Scratch::new();
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_lz4(Some(&mut lz4));
        let (packets, rebuilt) = collect_decoded(&mut s, 1448);
        assert_same_memory(&m, &mem, &rebuilt);
        assert!(packets.iter().all(|p| p.1 == Encoding::Raw));
        let sent: Vec<(u64, usize)> = packets.iter().map(|p| (p.0, p.2)).collect();
        assert_eq!(sent, raw, "the same raw packets as an uncompressed stream");
        assert_eq!(s.stats.lz4_blocks, 0);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn runs_of_incompressible_pages_are_tried_less_and_less_often() {
        // 200 random pages: tried at pages 1, 2, 3, 5, 8, 13, 22, 39, 72, 137 (back-off 1,
        // 2, 4, … 64 pages after the third miss in a row), the rest sent raw untried.
        let mem = MixedMemory { random: |_| true };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0x10_0000, length: 200 * 4096, virt_start: 0x10_0000 }])
            .unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut lz4 = crate::client::Lz4Scratch::new();
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_lz4(Some(&mut lz4));
        let (packets, rebuilt) = collect_decoded(&mut s, 1448);
        assert_same_memory(&m, &mem, &rebuilt);
        assert!(packets.iter().all(|p| p.1 == Encoding::Raw));
        assert_eq!(s.stats.lz4_tries, 10);
        // A compressible page after the run is tried again once the back-off ends.
        let mem = MixedMemory { random: |p| p < 0x100 + 20 };
        let m = MemoryMap::new(&[MemoryRange { phys_start: 0x10_0000, length: 120 * 4096, virt_start: 0x10_0000 }])
            .unwrap();
        let mut page = [0u8; PAGE_SIZE];
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_lz4(Some(&mut lz4));
        let (packets, rebuilt) = collect_decoded(&mut s, 1448);
        assert_same_memory(&m, &mem, &rebuilt);
        let first_block = packets.iter().find(|p| p.1 != Encoding::Raw).map(|p| p.0 / 4096);
        assert!(first_block.is_some_and(|pfn| pfn < 0x100 + 20 + 16), "first block at {first_block:?}");
        assert!(s.stats.lz4_blocks >= 90, "{} blocks", s.stats.lz4_blocks);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn mixed_memory_compresses_the_compressible_pages_only() {
        let mem = MixedMemory { random: |p| p % 2 == 0 };
        let m = map();
        let mut page = [0u8; PAGE_SIZE];
        let mut lz4 = crate::client::Lz4Scratch::new();
        let mut s = DataStream::new(None, 0, &[], &m, &mem, &mut page, true).with_lz4(Some(&mut lz4));
        let (packets, rebuilt) = collect_decoded(&mut s, 1448);
        assert_same_memory(&m, &mem, &rebuilt);
        for (offset, e, _) in packets {
            let random = (offset / 4096) % 2 == 0;
            assert_eq!(matches!(e, Encoding::Lz4 { .. }), !random, "page at {offset:#x}");
        }
    }
}
