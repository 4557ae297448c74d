//! The x86 exception vectors, the one table of them in the workspace: the
//! architecturally defined vectors 0–31 ([`Exception`]) with their names, mnemonics and
//! whether the CPU pushes an error code, and the bits of a page fault's error code
//! ([`PageFaultErrorCode`]). The vector numbers of the exceptions the crash path names
//! are constants here too ([`PAGE_FAULT`], …).
//!
//! Plain data, compiled on every target: netdumpd names a dump's exception on whatever
//! host it runs, and the test runtime's entry stubs take their error-code list from here.
//!
//! Sources: Intel SDM vol. 3A, table 6-1 "Exceptions and Interrupts" and §4.7
//! "Page-Fault Exceptions"; AMD APM vol. 2, table 8-1 "Interrupt Vector Source and Cause"
//! for the vectors only AMD defines (28–30) and §8.4.2 for the RMP bit.

use core::fmt;

use bitflags::bitflags;

/// An architecturally defined x86 exception vector (0–31). The vectors the manuals
/// reserve (15, 22–27, 31) have no variant: [`from_vector`](Self::from_vector) returns
/// `None` for them, as for 32–255 (external interrupts and software `INT n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Exception {
    /// `#DE` (0): `DIV` or `IDIV` by zero, or a quotient too large for its destination.
    DivideError = 0,
    /// `#DB` (1): debug exception (DR0–DR3 breakpoints, single-step, `INT1`).
    Debug = 1,
    /// `NMI` (2): the non-maskable interrupt.
    NonMaskableInterrupt = 2,
    /// `#BP` (3): `INT3`.
    Breakpoint = 3,
    /// `#OF` (4): `INTO` with OF set (not in 64-bit mode).
    Overflow = 4,
    /// `#BR` (5): `BOUND` range exceeded (not in 64-bit mode).
    BoundRangeExceeded = 5,
    /// `#UD` (6): invalid or undefined opcode (`UD2` among them).
    InvalidOpcode = 6,
    /// `#NM` (7): device not available (an x87, MMX or SSE instruction with CR0.TS or
    /// CR0.EM set).
    DeviceNotAvailable = 7,
    /// `#DF` (8): double fault; its error code is always 0.
    DoubleFault = 8,
    /// Coprocessor segment overrun (9): raised by a 386 with an external 387 only,
    /// reserved since the 486. The manuals give it no mnemonic; [`mnemonic`](Self::mnemonic)
    /// says `CSO`.
    CoprocessorSegmentOverrun = 9,
    /// `#TS` (10): invalid TSS.
    InvalidTss = 10,
    /// `#NP` (11): segment not present.
    SegmentNotPresent = 11,
    /// `#SS` (12): stack-segment fault.
    StackSegmentFault = 12,
    /// `#GP` (13): general protection fault.
    GeneralProtection = 13,
    /// `#PF` (14): page fault; the error code is a [`PageFaultErrorCode`], CR2 the
    /// faulting linear address.
    PageFault = 14,
    /// `#MF` (16): x87 floating-point error (math fault).
    X87FloatingPoint = 16,
    /// `#AC` (17): alignment check; its error code is always 0.
    AlignmentCheck = 17,
    /// `#MC` (18): machine check.
    MachineCheck = 18,
    /// `#XM` (19): SIMD floating-point exception (AMD's `#XF`).
    SimdFloatingPoint = 19,
    /// `#VE` (20): virtualization exception (Intel: an EPT violation delivered to the
    /// guest).
    Virtualization = 20,
    /// `#CP` (21): control protection exception (CET: shadow stack or indirect branch
    /// tracking).
    ControlProtection = 21,
    /// `#HV` (28): hypervisor injection exception (AMD SEV-SNP).
    HypervisorInjection = 28,
    /// `#VC` (29): VMM communication exception (AMD SEV-ES).
    VmmCommunication = 29,
    /// `#SX` (30): security exception (AMD SVM).
    Security = 30,
}

/// One row of the table: what [`Exception`]'s accessors return.
struct Row {
    mnemonic: &'static str,
    name: &'static str,
    label: &'static str,
    pushes_error_code: bool,
}

/// A row whose label is the mnemonic and the name, e.g. `"#PF page fault"`.
macro_rules! row {
    ($mnemonic:literal, $name:literal, $pushes_error_code:literal) => {
        Row {
            mnemonic: $mnemonic,
            name: $name,
            label: concat!($mnemonic, " ", $name),
            pushes_error_code: $pushes_error_code,
        }
    };
}

impl Exception {
    /// Every defined vector, in vector order.
    pub const ALL: [Exception; 24] = [
        Exception::DivideError,
        Exception::Debug,
        Exception::NonMaskableInterrupt,
        Exception::Breakpoint,
        Exception::Overflow,
        Exception::BoundRangeExceeded,
        Exception::InvalidOpcode,
        Exception::DeviceNotAvailable,
        Exception::DoubleFault,
        Exception::CoprocessorSegmentOverrun,
        Exception::InvalidTss,
        Exception::SegmentNotPresent,
        Exception::StackSegmentFault,
        Exception::GeneralProtection,
        Exception::PageFault,
        Exception::X87FloatingPoint,
        Exception::AlignmentCheck,
        Exception::MachineCheck,
        Exception::SimdFloatingPoint,
        Exception::Virtualization,
        Exception::ControlProtection,
        Exception::HypervisorInjection,
        Exception::VmmCommunication,
        Exception::Security,
    ];

    /// The exception of `vector`; `None` for the reserved vectors (15, 22–27, 31) and for
    /// 32–255.
    pub const fn from_vector(vector: u8) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u8 == vector {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// The vector number.
    pub const fn vector(self) -> u8 {
        self as u8
    }

    /// The mnemonic: `"#PF"`; `"NMI"` for vector 2, and `"CSO"` for vector 9, which the
    /// manuals leave without one.
    pub const fn mnemonic(self) -> &'static str {
        self.row().mnemonic
    }

    /// The name, in lower case: `"page fault"`.
    pub const fn name(self) -> &'static str {
        self.row().name
    }

    /// The mnemonic and the name, as crash messages start: `"#PF page fault"`; `"NMI"` and
    /// `"coprocessor segment overrun"` for the two vectors without a `#` mnemonic. Also the
    /// [`Display`](fmt::Display) form.
    pub const fn label(self) -> &'static str {
        self.row().label
    }

    /// Whether the CPU pushes an error code on delivering this exception (an entry stub
    /// must push a placeholder for the others, to keep one frame layout). Vectors raised by
    /// `INT n` or delivered as external interrupts never push one.
    pub const fn pushes_error_code(self) -> bool {
        self.row().pushes_error_code
    }

    const fn row(self) -> Row {
        match self {
            Exception::DivideError => row!("#DE", "divide error", false),
            Exception::Debug => row!("#DB", "debug", false),
            Exception::NonMaskableInterrupt => {
                Row { mnemonic: "NMI", name: "non-maskable interrupt", label: "NMI", pushes_error_code: false }
            }
            Exception::Breakpoint => row!("#BP", "breakpoint", false),
            Exception::Overflow => row!("#OF", "overflow", false),
            Exception::BoundRangeExceeded => row!("#BR", "bound range exceeded", false),
            Exception::InvalidOpcode => row!("#UD", "invalid opcode", false),
            Exception::DeviceNotAvailable => row!("#NM", "device not available", false),
            Exception::DoubleFault => row!("#DF", "double fault", true),
            Exception::CoprocessorSegmentOverrun => Row {
                mnemonic: "CSO",
                name: "coprocessor segment overrun",
                label: "coprocessor segment overrun",
                pushes_error_code: false,
            },
            Exception::InvalidTss => row!("#TS", "invalid TSS", true),
            Exception::SegmentNotPresent => row!("#NP", "segment not present", true),
            Exception::StackSegmentFault => row!("#SS", "stack-segment fault", true),
            Exception::GeneralProtection => row!("#GP", "general protection fault", true),
            Exception::PageFault => row!("#PF", "page fault", true),
            Exception::X87FloatingPoint => row!("#MF", "x87 floating-point error", false),
            Exception::AlignmentCheck => row!("#AC", "alignment check", true),
            Exception::MachineCheck => row!("#MC", "machine check", false),
            Exception::SimdFloatingPoint => row!("#XM", "SIMD floating-point exception", false),
            Exception::Virtualization => row!("#VE", "virtualization exception", false),
            Exception::ControlProtection => row!("#CP", "control protection exception", true),
            Exception::HypervisorInjection => row!("#HV", "hypervisor injection exception", false),
            Exception::VmmCommunication => row!("#VC", "VMM communication exception", true),
            Exception::Security => row!("#SX", "security exception", true),
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl TryFrom<u8> for Exception {
    /// The vector, reserved or above 31.
    type Error = u8;

    fn try_from(vector: u8) -> Result<Self, u8> {
        Self::from_vector(vector).ok_or(vector)
    }
}

impl From<Exception> for u8 {
    fn from(exception: Exception) -> u8 {
        exception.vector()
    }
}

// The vector numbers of the exceptions netdump's crash path names (`vector::PAGE_FAULT`).

/// `#DE`: [`Exception::DivideError`].
pub const DIVIDE_ERROR: u8 = Exception::DivideError.vector();
/// `#UD`: [`Exception::InvalidOpcode`].
pub const INVALID_OPCODE: u8 = Exception::InvalidOpcode.vector();
/// `#DF`: [`Exception::DoubleFault`].
pub const DOUBLE_FAULT: u8 = Exception::DoubleFault.vector();
/// `#GP`: [`Exception::GeneralProtection`].
pub const GENERAL_PROTECTION: u8 = Exception::GeneralProtection.vector();
/// `#PF`: [`Exception::PageFault`].
pub const PAGE_FAULT: u8 = Exception::PageFault.vector();

/// The mnemonic and name of an exception vector (its [`Exception::label`]), e.g.
/// `"#PF page fault"`; `"reserved exception vector"` for a vector without an
/// [`Exception`].
pub const fn exception_name(vector: u8) -> &'static str {
    match Exception::from_vector(vector) {
        Some(exception) => exception.label(),
        None => "reserved exception vector",
    }
}

/// Whether the CPU pushes an error code for `vector` (false for vectors without an
/// [`Exception`]).
pub const fn pushes_error_code(vector: u8) -> bool {
    match Exception::from_vector(vector) {
        Some(exception) => exception.pushes_error_code(),
        None => false,
    }
}

bitflags! {
    /// A page fault's error code: what the faulting access was and why it faulted (Intel
    /// SDM vol. 3A §4.7; AMD APM vol. 2 §8.4.2). Undefined bits are kept
    /// ([`from_bits_retain`](Self::from_bits_retain)).
    ///
    /// Its [`Display`](fmt::Display) form is the access, the cause and the mode, e.g.
    /// `"write, page not present, kernel mode"`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PageFaultErrorCode: u64 {
        /// P: the page was present, so the fault is a protection violation (clear: the page
        /// was not present).
        const PRESENT = 1 << 0;
        /// W/R: the access was a write (clear: a read).
        const WRITE = 1 << 1;
        /// U/S: the access was made in user mode (clear: supervisor mode).
        const USER = 1 << 2;
        /// RSVD: a reserved bit was set in some paging-structure entry.
        const RESERVED_BIT = 1 << 3;
        /// I/D: the access was an instruction fetch.
        const INSTRUCTION_FETCH = 1 << 4;
        /// PK: protection-key rights disallowed the access.
        const PROTECTION_KEY = 1 << 5;
        /// SS: the access was a shadow-stack access.
        const SHADOW_STACK = 1 << 6;
        /// HLAT: the fault happened during HLAT paging (Intel).
        const HLAT = 1 << 7;
        /// SGX: the fault violated SGX-specific access control (Intel).
        const SGX = 1 << 15;
        /// RMP: the fault is an RMP violation (AMD SEV-SNP).
        const RMP = 1 << 31;
    }
}

impl PageFaultErrorCode {
    /// The kind of access: `"instruction fetch"`, `"write"` or `"read"`.
    pub const fn access(self) -> &'static str {
        if self.contains(Self::INSTRUCTION_FETCH) {
            "instruction fetch"
        } else if self.contains(Self::WRITE) {
            "write"
        } else {
            "read"
        }
    }

    /// Why the access faulted, the first that applies of: `"reserved bit set in a page
    /// table"`, `"protection key"`, `"protection violation"`, `"page not present"`.
    pub const fn cause(self) -> &'static str {
        if self.contains(Self::RESERVED_BIT) {
            "reserved bit set in a page table"
        } else if self.contains(Self::PROTECTION_KEY) {
            "protection key"
        } else if self.contains(Self::PRESENT) {
            "protection violation"
        } else {
            "page not present"
        }
    }

    /// The privilege of the access: `"user mode"` or `"kernel mode"`.
    pub const fn mode(self) -> &'static str {
        if self.contains(Self::USER) { "user mode" } else { "kernel mode" }
    }
}

impl fmt::Display for PageFaultErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}, {}", self.access(), self.cause(), self.mode())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The defined vectors, typed from Intel SDM vol. 3A table 6-1 (0–21 without 15) and
    /// AMD APM vol. 2 table 8-1 (28–30), not from the table above.
    const DEFINED: [u8; 24] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 28, 29, 30];

    /// The "Error Code: Yes" rows of the same two tables.
    const WITH_ERROR_CODE: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

    #[test]
    fn every_vector_round_trips_or_is_none() {
        for v in 0..=255u8 {
            match Exception::from_vector(v) {
                Some(e) => {
                    assert!(DEFINED.contains(&v), "vector {v} is reserved");
                    assert_eq!(e.vector(), v);
                    assert_eq!(u8::from(e), v);
                    assert_eq!(Exception::try_from(v), Ok(e));
                }
                None => {
                    assert!(!DEFINED.contains(&v), "vector {v} is defined");
                    assert_eq!(Exception::try_from(v), Err(v));
                }
            }
        }
    }

    #[test]
    fn all_lists_every_exception_once_in_vector_order() {
        let vectors: Vec<u8> = Exception::ALL.iter().map(|e| e.vector()).collect();
        assert_eq!(vectors, DEFINED);
    }

    #[test]
    fn the_error_code_table_matches_the_manuals() {
        for v in 0..=255u8 {
            let expected = WITH_ERROR_CODE.contains(&v);
            assert_eq!(pushes_error_code(v), expected, "vector {v}");
            if let Some(e) = Exception::from_vector(v) {
                assert_eq!(e.pushes_error_code(), expected, "{e:?}");
            }
        }
    }

    #[test]
    fn mnemonics_match_the_manuals() {
        let manual = "#DE #DB NMI #BP #OF #BR #UD #NM #DF CSO #TS #NP #SS #GP #PF #MF #AC #MC #XM #VE #CP #HV #VC #SX";
        let ours: Vec<&str> = Exception::ALL.iter().map(|e| e.mnemonic()).collect();
        assert_eq!(ours, manual.split(' ').collect::<Vec<_>>());
    }

    #[test]
    fn names_mnemonics_and_labels_are_distinct() {
        for field in [Exception::name, Exception::mnemonic, Exception::label] {
            let distinct: HashSet<&str> = Exception::ALL.iter().map(|&e| field(e)).collect();
            assert_eq!(distinct.len(), Exception::ALL.len());
        }
    }

    #[test]
    fn labels_are_the_mnemonic_and_the_name() {
        for e in Exception::ALL {
            let expected = match e {
                Exception::NonMaskableInterrupt => "NMI".to_string(),
                Exception::CoprocessorSegmentOverrun => "coprocessor segment overrun".to_string(),
                _ => format!("{} {}", e.mnemonic(), e.name()),
            };
            assert_eq!(e.label(), expected);
            assert_eq!(e.to_string(), expected);
            assert_eq!(exception_name(e.vector()), expected);
        }
        assert_eq!(Exception::PageFault.label(), "#PF page fault");
        assert_eq!(exception_name(15), "reserved exception vector");
        assert_eq!(exception_name(32), "reserved exception vector");
    }

    #[test]
    fn the_crash_path_vectors_are_the_manuals() {
        assert_eq!([DIVIDE_ERROR, INVALID_OPCODE, DOUBLE_FAULT, GENERAL_PROTECTION, PAGE_FAULT], [0, 6, 8, 13, 14]);
    }

    #[test]
    fn page_fault_bits_are_where_the_manuals_put_them() {
        let bits = [
            (PageFaultErrorCode::PRESENT, 0),
            (PageFaultErrorCode::WRITE, 1),
            (PageFaultErrorCode::USER, 2),
            (PageFaultErrorCode::RESERVED_BIT, 3),
            (PageFaultErrorCode::INSTRUCTION_FETCH, 4),
            (PageFaultErrorCode::PROTECTION_KEY, 5),
            (PageFaultErrorCode::SHADOW_STACK, 6),
            (PageFaultErrorCode::HLAT, 7),
            (PageFaultErrorCode::SGX, 15),
            (PageFaultErrorCode::RMP, 31),
        ];
        for (flag, bit) in bits {
            assert_eq!(flag.bits(), 1 << bit, "{flag:?}");
        }
        assert_eq!(PageFaultErrorCode::all().bits().count_ones() as usize, bits.len());
        // Undefined bits survive.
        assert_eq!(PageFaultErrorCode::from_bits_retain(1 << 40 | 2).bits(), 1 << 40 | 2);
    }

    fn describe(code: u64) -> String {
        PageFaultErrorCode::from_bits_retain(code).to_string()
    }

    #[test]
    fn page_fault_error_codes_are_spelled_out() {
        assert_eq!(describe(0b10), "write, page not present, kernel mode");
        assert_eq!(describe(0b101), "read, protection violation, user mode");
        assert_eq!(describe(0b1_0001), "instruction fetch, protection violation, kernel mode");
        assert_eq!(describe(0b1001), "read, reserved bit set in a page table, kernel mode");
        assert_eq!(describe(0b10_0111), "write, protection key, user mode");
        assert_eq!(describe(0b1_0001_0010), "instruction fetch, page not present, kernel mode");
    }
}
