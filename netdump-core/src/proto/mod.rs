//! The netdump wire protocol, versions 1 and 2 — the single implementation shared by
//! the client (this crate) and the server (`netdumpd`). `docs/PROTOCOL.md` is its
//! specification; the layouts here follow it field by field.
//!
//! Shape (after smoltcp's `wire`): [`Header::parse`] validates a datagram and splits
//! it into a header and a payload; [`Message::parse`] turns the payload into a typed repr;
//! every repr has `emit` writing exactly `wire_len()` bytes.

mod bytes;
pub mod check;
mod classes;
pub mod field;
mod header;
mod messages;
mod regs;

pub use check::{Check, xxh64};
pub use classes::{ExcludeSet, PageClass};
pub use header::{HEADER_LEN, Header, MAGIC, VERSION_1, VERSION_2, flags};
pub use messages::*;
pub use regs::{
    AARCH64_RECORD_LEN, Aarch64Record, CPU_STATE_SHIFT, CpuRegisters, CpuState, MAX_RECORD_LEN, Machine,
    REGISTER_RECORD_LEN, REGISTERS_APIC_ID, REGISTERS_VALID, RegisterRecord,
};

/// Default UDP port of the server.
pub const SERVER_PORT: u16 = 6666;
/// Default UDP source port of the client.
pub const CLIENT_PORT: u16 = 6665;
/// Largest UDP payload the protocol allows (a 9000-byte jumbo MTU minus IPv4 and UDP).
pub const MAX_DATAGRAM: usize = 8972;
/// Largest number of RAM ranges in a CRASH announcement.
pub const MAX_RANGES: usize = 32;
/// Largest number of CPUs (register records) in a dump.
pub const MAX_CPUS: usize = 64;
/// Most code addresses (faulting `rip`, return addresses) in a CRASH.
pub const MAX_FRAMES: usize = 16;
/// Longest panic message, ABORT or ERROR text.
pub const MAX_TEXT: usize = 256;
/// Longest client name.
pub const MAX_NAME: usize = 64;
/// Largest selective-ack bitmap, in bytes (512 packets beyond the cumulative point).
pub const MAX_SACK_BYTES: usize = 64;

/// Why a datagram or payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// Shorter than the header, or than its message's fixed part.
    Truncated,
    /// The first two bytes are not [`MAGIC`].
    BadMagic,
    /// The header's version byte (carried) is neither [`VERSION_1`] nor [`VERSION_2`].
    UnsupportedVersion(u8),
    /// `payload_len` disagrees with the datagram's length.
    LengthMismatch,
    /// The header's CRC field does not match the packet's bytes.
    BadCrc,
    /// The header's type byte (carried) names no [`MessageType`].
    UnknownType(u8),
    /// A field holds a value the specification does not allow (its name:
    /// [`Field::name`]).
    BadField(Field),
    /// The output buffer cannot hold the packet.
    BufferTooSmall,
}

impl core::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProtoError::Truncated => f.write_str("truncated packet"),
            ProtoError::BadMagic => f.write_str("bad magic"),
            ProtoError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            ProtoError::LengthMismatch => f.write_str("payload length disagrees with datagram"),
            ProtoError::BadCrc => f.write_str("CRC mismatch"),
            ProtoError::UnknownType(t) => write!(f, "unknown message type {t:#04x}"),
            ProtoError::BadField(field) => write!(f, "invalid field: {}", field.name()),
            ProtoError::BufferTooSmall => f.write_str("buffer too small"),
        }
    }
}

/// Which field [`ProtoError::BadField`] rejects: one byte, where the field's name as a
/// `&'static str` made every parse result 24 bytes, returned through memory and copied
/// at each `?`; the name is [`Field::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Field {
    /// `msg_type`.
    MsgType,
    /// `page_size`.
    PageSize,
    /// `range alignment`.
    RangeAlignment,
    /// `range overflows`.
    RangeOverflows,
    /// `ranges overlap or are unsorted`.
    RangesUnsorted,
    /// `range_count`.
    RangeCount,
    /// `machine`.
    Machine,
    /// `cpu_count`.
    CpuCount,
    /// `message_len`.
    MessageLen,
    /// `frame_count`.
    FrameCount,
    /// `excluded class`.
    ExcludedClass,
    /// `excluded reserved`.
    ExcludedReserved,
    /// `excluded pages`.
    ExcludedPages,
    /// `excluded length`.
    ExcludedLength,
    /// `offset`.
    Offset,
    /// `raw_len`.
    RawLen,
    /// `encoding`.
    Encoding,
    /// `bitmap_len`.
    BitmapLen,
    /// `text_len`.
    TextLen,
    /// `HelloStatus`.
    HelloStatus,
    /// `CrashKind`.
    CrashKind,
    /// `Verdict`.
    Verdict,
    /// `DecisionReason`.
    DecisionReason,
    /// `Section`.
    Section,
    /// `FinishStatus`.
    FinishStatus,
    /// `AfterDump`.
    AfterDump,
}

impl Field {
    /// The field's name, as error messages write it.
    pub const fn name(self) -> &'static str {
        match self {
            Field::MsgType => "msg_type",
            Field::PageSize => "page_size",
            Field::RangeAlignment => "range alignment",
            Field::RangeOverflows => "range overflows",
            Field::RangesUnsorted => "ranges overlap or are unsorted",
            Field::RangeCount => "range_count",
            Field::Machine => "machine",
            Field::CpuCount => "cpu_count",
            Field::MessageLen => "message_len",
            Field::FrameCount => "frame_count",
            Field::ExcludedClass => "excluded class",
            Field::ExcludedReserved => "excluded reserved",
            Field::ExcludedPages => "excluded pages",
            Field::ExcludedLength => "excluded length",
            Field::Offset => "offset",
            Field::RawLen => "raw_len",
            Field::Encoding => "encoding",
            Field::BitmapLen => "bitmap_len",
            Field::TextLen => "text_len",
            Field::HelloStatus => "HelloStatus",
            Field::CrashKind => "CrashKind",
            Field::Verdict => "Verdict",
            Field::DecisionReason => "DecisionReason",
            Field::Section => "Section",
            Field::FinishStatus => "FinishStatus",
            Field::AfterDump => "AfterDump",
        }
    }
}

/// Message types (the header's `type` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Client → server at install time: registers the client and its name.
    Hello = 0x01,
    /// Server → client: HELLO accepted or refused.
    HelloAck = 0x81,
    /// Client → server: the crash announcement.
    Crash = 0x02,
    /// Server → client: what to send of the dump.
    Decision = 0x82,
    /// Client → server: a piece of one section of the dump.
    Data = 0x03,
    /// Server → client: cumulative and selective acknowledgement of DATA.
    Ack = 0x83,
    /// Client → server: the dump is complete; totals to verify it.
    Finish = 0x04,
    /// Server → client: the verification result and what the client does next.
    FinishAck = 0x84,
    /// Client → server: the client gives up on the dump.
    Abort = 0x05,
    /// Server → client: a packet was rejected.
    Error = 0x8F,
}

impl TryFrom<u8> for MessageType {
    type Error = ProtoError;
    fn try_from(v: u8) -> Result<Self, ProtoError> {
        Ok(match v {
            0x01 => MessageType::Hello,
            0x81 => MessageType::HelloAck,
            0x02 => MessageType::Crash,
            0x82 => MessageType::Decision,
            0x03 => MessageType::Data,
            0x83 => MessageType::Ack,
            0x04 => MessageType::Finish,
            0x84 => MessageType::FinishAck,
            0x05 => MessageType::Abort,
            0x8F => MessageType::Error,
            other => return Err(ProtoError::UnknownType(other)),
        })
    }
}

impl MessageType {
    /// True for the types a client sends (the server accepts only these).
    pub fn from_client(self) -> bool {
        (self as u8) & 0x80 == 0
    }
}
