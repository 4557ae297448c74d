//! Page classes and the exclude set of page filtering (makedumpfile's categories and
//! `-d` dump level): what a kernel says its pages hold, and how EXCLUDED records name
//! why a run of pages was left out (docs/PROTOCOL.md, "Page filtering").

/// What a page holds, as the kernel knows it: makedumpfile's categories. A dump with an
/// [`ExcludeSet`] leaves out the pages of the classes in it; the kernel's own memory and
/// pages it cannot classify are always sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageClass {
    /// The kernel cannot tell (the default): sent.
    Unknown = 0,
    /// Kernel text: always sent.
    KernelCode = 1,
    /// Kernel data (slab, stacks, page tables, …): always sent.
    KernelData = 2,
    /// Page cache without private data (makedumpfile `-d` bit 2).
    PageCache = 3,
    /// Page cache with private data, e.g. buffer heads (`-d` bit 4).
    PageCachePrivate = 4,
    /// A user process's memory (`-d` bit 8).
    User = 5,
    /// A free page (`-d` bit 16).
    Free = 6,
}

impl PageClass {
    /// The classes a dump may leave out, in wire order.
    pub const EXCLUDABLE: [PageClass; 4] =
        [PageClass::PageCache, PageClass::PageCachePrivate, PageClass::User, PageClass::Free];

    /// The makedumpfile dump-level bit that excludes this class; 0 for the classes that
    /// are always sent.
    pub const fn dump_level_bit(self) -> u32 {
        match self {
            PageClass::PageCache => ExcludeSet::PAGE_CACHE.0,
            PageClass::PageCachePrivate => ExcludeSet::PAGE_CACHE_PRIVATE.0,
            PageClass::User => ExcludeSet::USER.0,
            PageClass::Free => ExcludeSet::FREE.0,
            PageClass::Unknown | PageClass::KernelCode | PageClass::KernelData => 0,
        }
    }

    /// The class of an excluded run's wire code (its dump-level bit), if excludable.
    pub fn from_dump_level_bit(bit: u32) -> Option<PageClass> {
        Self::EXCLUDABLE.into_iter().find(|c| c.dump_level_bit() == bit)
    }

    /// Its name in `info.json` and logs.
    pub const fn name(self) -> &'static str {
        match self {
            PageClass::Unknown => "unknown",
            PageClass::KernelCode => "kernel_code",
            PageClass::KernelData => "kernel_data",
            PageClass::PageCache => "page_cache",
            PageClass::PageCachePrivate => "page_cache_private",
            PageClass::User => "user",
            PageClass::Free => "free",
        }
    }
}

/// The page classes a dump leaves out, numbered like makedumpfile's `-d` dump level:
///
/// | bit | value | pages left out |
/// |---|---|---|
/// | 0 | 1 | all-zero pages: netdump never sends them, with or without this bit |
/// | 1 | 2 | page cache without private data |
/// | 2 | 4 | page cache with private data |
/// | 3 | 8 | user process pages |
/// | 4 | 16 | free pages |
///
/// `-d 31` ([`ExcludeSet::ALL`]) keeps only the kernel's own memory, as on most Linux
/// systems. Pages the kernel cannot classify ([`PageClass::Unknown`]) are always sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExcludeSet(u32);

impl ExcludeSet {
    /// Nothing is left out (but all-zero pages, as always).
    pub const NONE: ExcludeSet = ExcludeSet(0);
    /// `-d` bit 1: all-zero pages; the dump skips them anyway.
    pub const ZERO: ExcludeSet = ExcludeSet(1);
    /// `-d` bit 2.
    pub const PAGE_CACHE: ExcludeSet = ExcludeSet(2);
    /// `-d` bit 4.
    pub const PAGE_CACHE_PRIVATE: ExcludeSet = ExcludeSet(4);
    /// `-d` bit 8.
    pub const USER: ExcludeSet = ExcludeSet(8);
    /// `-d` bit 16.
    pub const FREE: ExcludeSet = ExcludeSet(16);
    /// `-d 31`: every class that can be left out.
    pub const ALL: ExcludeSet = ExcludeSet(31);

    /// The set of makedumpfile dump level `level` (0..=31), or `None` above 31.
    pub const fn from_dump_level(level: u32) -> Option<ExcludeSet> {
        if level <= Self::ALL.0 { Some(ExcludeSet(level)) } else { None }
    }

    /// The dump level this set is.
    pub const fn dump_level(self) -> u32 {
        self.0
    }

    /// Both sets' classes.
    pub const fn union(self, other: ExcludeSet) -> ExcludeSet {
        ExcludeSet(self.0 | other.0)
    }

    /// Whether pages of `class` are left out.
    pub const fn excludes(self, class: PageClass) -> bool {
        self.0 & class.dump_level_bit() != 0
    }

    /// Whether any page could be left out (bit 1, zero pages, changes nothing).
    pub const fn filters(self) -> bool {
        self.0 & !Self::ZERO.0 != 0
    }
}
