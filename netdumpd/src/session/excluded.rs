//! The `EXCLUDED` section of a filtered dump (feature `FILTER`, docs/PROTOCOL.md): the
//! runs of pages the client's filter left out, so that the vmcore tells "excluded" from
//! "zero" (its exclusion note) and `info.json` counts them per class.
//!
//! Every record of a packet is checked before any is kept: a whole record, a class that
//! can be excluded, a run inside one announced range that overlaps no run already
//! received. A bad packet is dropped whole, with the reason in words.

use std::collections::BTreeMap;

use netdump_core::memory::PageClass;
use netdump_core::proto::{ExcludedRun, MemoryRange, ProtoError};

/// Most runs one dump may report unless configured (`limits.max_excluded_runs`): a
/// hostile client must not grow the server's memory without bound (a run costs about
/// 40 bytes here, twice that while the note is built; 2^20 runs, 40 MiB).
pub const MAX_EXCLUDED_RUNS: usize = 1 << 20;

/// Why an EXCLUDED packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExclusionError {
    /// The client was not granted `FILTER`: it must not send the section.
    NotGranted,
    /// The section offset is not a multiple of the record length.
    Misaligned(u64),
    /// A record does not parse (partial, bad class, empty run, reserved bytes).
    Record(ProtoError),
    /// A run lies outside every announced range (or across two).
    OutsideRanges { start_pfn: u64, pages: u32 },
    /// A run overlaps another (of this packet or an earlier one).
    Overlaps { start_pfn: u64, pages: u32 },
    /// More runs than the limit (`limits.max_excluded_runs`).
    TooMany,
}

impl std::fmt::Display for ExclusionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExclusionError::NotGranted => f.write_str("EXCLUDED data from a client not granted FILTER"),
            ExclusionError::Misaligned(at) => write!(f, "EXCLUDED offset {at} is not a multiple of the record length"),
            ExclusionError::Record(e) => write!(f, "bad EXCLUDED record: {e}"),
            ExclusionError::OutsideRanges { start_pfn, pages } => {
                write!(f, "excluded run pfn {start_pfn:#x}+{pages} lies outside the announced ranges")
            }
            ExclusionError::Overlaps { start_pfn, pages } => {
                write!(f, "excluded run pfn {start_pfn:#x}+{pages} overlaps another excluded run")
            }
            ExclusionError::TooMany => f.write_str("more excluded runs than limits.max_excluded_runs"),
        }
    }
}

/// The runs received so far, by first page frame number.
#[derive(Debug, Default)]
pub struct ExcludedRuns {
    runs: BTreeMap<u64, (u64, PageClass)>,
    pages: [u64; PageClass::EXCLUDABLE.len()],
    /// Runs taken at most; 0 is [`MAX_EXCLUDED_RUNS`].
    limit: usize,
    /// Runs received and since released ([`release`](Self::release)).
    released: usize,
}

impl ExcludedRuns {
    /// Checks and keeps the records of one EXCLUDED packet (`data` at section offset
    /// `offset`), given the announced `ranges` and page size. All or nothing.
    pub fn add(
        &mut self,
        offset: u64,
        data: &[u8],
        ranges: &[MemoryRange],
        page_size: u64,
    ) -> Result<(), ExclusionError> {
        if !offset.is_multiple_of(ExcludedRun::WIRE_LEN as u64) {
            return Err(ExclusionError::Misaligned(offset));
        }
        let mut records = ExcludedRun::parse_all(data)
            .map_err(ExclusionError::Record)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ExclusionError::Record)?;
        if self.runs.len() + records.len() > self.limit() {
            return Err(ExclusionError::TooMany);
        }
        records.sort_by_key(|r| r.start_pfn);
        let mut packet_end = 0;
        for r in &records {
            let outside = ExclusionError::OutsideRanges { start_pfn: r.start_pfn, pages: r.pages };
            let phys = r.start_pfn.checked_mul(page_size).ok_or(outside.clone())?;
            let len = u64::from(r.pages) * page_size;
            if !ranges.iter().any(|range| range.contains(phys, len)) {
                return Err(outside);
            }
            let end = r.start_pfn + u64::from(r.pages);
            let before_overlaps =
                self.runs.range(..=r.start_pfn).next_back().is_some_and(|(s, (n, _))| s + n > r.start_pfn);
            let after_overlaps = self.runs.range(r.start_pfn..).next().is_some_and(|(s, _)| *s < end);
            if r.start_pfn < packet_end || before_overlaps || after_overlaps {
                return Err(ExclusionError::Overlaps { start_pfn: r.start_pfn, pages: r.pages });
            }
            packet_end = end;
        }
        for r in records {
            self.runs.insert(r.start_pfn, (u64::from(r.pages), r.class));
            self.pages[class_index(r.class)] += u64::from(r.pages);
        }
        Ok(())
    }

    /// Pages excluded as `class` (0 for a class that cannot be excluded).
    pub fn pages(&self, class: PageClass) -> u64 {
        PageClass::EXCLUDABLE.iter().position(|c| *c == class).map_or(0, |i| self.pages[i])
    }

    pub fn total_pages(&self) -> u64 {
        self.pages.iter().sum()
    }

    pub fn run_count(&self) -> usize {
        self.runs.len() + self.released
    }

    /// Runs taken at most (`limits.max_excluded_runs`).
    pub fn limit(&self) -> usize {
        if self.limit == 0 { MAX_EXCLUDED_RUNS } else { self.limit }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Forgets the runs once the dump has ended (the note is written), keeping their
    /// counts for `info.json`.
    pub fn release(&mut self) {
        self.released += self.runs.len();
        self.runs = BTreeMap::new();
    }

    /// The runs, ascending: first page frame number, pages, class.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64, PageClass)> + '_ {
        self.runs.iter().map(|(s, (n, c))| (*s, *n, *c))
    }
}

fn class_index(class: PageClass) -> usize {
    PageClass::EXCLUDABLE.iter().position(|c| *c == class).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<MemoryRange> {
        vec![
            MemoryRange { phys_start: 0, length: 16 * 4096, virt_start: 0 },
            MemoryRange { phys_start: 32 * 4096, length: 16 * 4096, virt_start: 32 * 4096 },
        ]
    }

    fn records(runs: &[(u64, u32, PageClass)]) -> Vec<u8> {
        let mut data = vec![0u8; runs.len() * ExcludedRun::WIRE_LEN];
        for (&(start_pfn, pages, class), out) in runs.iter().zip(data.chunks_exact_mut(ExcludedRun::WIRE_LEN)) {
            ExcludedRun { start_pfn, pages, class }.emit(out);
        }
        data
    }

    #[test]
    fn runs_are_kept_and_counted_per_class() {
        let mut x = ExcludedRuns::default();
        x.add(0, &records(&[(1, 2, PageClass::User), (40, 8, PageClass::Free)]), &ranges(), 4096).unwrap();
        x.add(32, &records(&[(4, 1, PageClass::PageCache)]), &ranges(), 4096).unwrap();
        assert_eq!(x.pages(PageClass::User), 2);
        assert_eq!(x.pages(PageClass::Free), 8);
        assert_eq!(x.pages(PageClass::PageCache), 1);
        assert_eq!(x.pages(PageClass::PageCachePrivate), 0);
        assert_eq!(x.total_pages(), 11);
        let runs: Vec<_> = x.runs().collect();
        assert_eq!(runs, [(1, 2, PageClass::User), (4, 1, PageClass::PageCache), (40, 8, PageClass::Free)]);
    }

    #[test]
    fn a_run_outside_or_across_the_ranges_is_refused() {
        let mut x = ExcludedRuns::default();
        for (start, pages) in [(16, 1), (15, 2), (47, 2), (u64::MAX / 2, 1)] {
            let e = x.add(0, &records(&[(start, pages, PageClass::User)]), &ranges(), 4096).unwrap_err();
            assert_eq!(e, ExclusionError::OutsideRanges { start_pfn: start, pages });
            assert!(e.to_string().contains("outside the announced ranges"));
        }
        assert_eq!(x.run_count(), 0);
    }

    #[test]
    fn overlapping_runs_are_refused_and_the_packet_is_kept_whole_or_not_at_all() {
        let mut x = ExcludedRuns::default();
        x.add(0, &records(&[(4, 4, PageClass::User)]), &ranges(), 4096).unwrap();
        for (start, pages) in [(3, 2), (7, 1), (4, 4), (2, 8)] {
            let e = x.add(16, &records(&[(start, pages, PageClass::Free)]), &ranges(), 4096).unwrap_err();
            assert_eq!(e, ExclusionError::Overlaps { start_pfn: start, pages }, "{start}+{pages}");
        }
        // Inside one packet too; the good record before the bad one is not kept either.
        let e = x
            .add(
                16,
                &records(&[(10, 1, PageClass::Free), (12, 2, PageClass::Free), (13, 1, PageClass::Free)]),
                &ranges(),
                4096,
            )
            .unwrap_err();
        assert_eq!(e, ExclusionError::Overlaps { start_pfn: 13, pages: 1 });
        assert_eq!(x.run_count(), 1);
        // Adjacent is fine.
        x.add(16, &records(&[(8, 1, PageClass::Free), (3, 1, PageClass::Free)]), &ranges(), 4096).unwrap();
        assert_eq!(x.run_count(), 3);
    }

    #[test]
    fn malformed_packets_are_refused_with_the_reason() {
        let mut x = ExcludedRuns::default();
        let good = records(&[(1, 1, PageClass::User)]);
        assert_eq!(x.add(8, &good, &ranges(), 4096), Err(ExclusionError::Misaligned(8)));
        let e = x.add(0, &good[..15], &ranges(), 4096).unwrap_err();
        assert_eq!(e, ExclusionError::Record(ProtoError::BadField(netdump_core::proto::Field::ExcludedLength)));
        let mut bad_class = good.clone();
        bad_class[12] = 1; // zero pages are not a class of their own
        let e = x.add(0, &bad_class, &ranges(), 4096).unwrap_err();
        assert!(e.to_string().contains("excluded class"), "{e}");
        assert_eq!(x.run_count(), 0);
    }
}
