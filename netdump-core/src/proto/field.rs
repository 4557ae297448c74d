//! Where each field of each message lies in its payload, as docs/PROTOCOL.md's tables
//! say (a test reads those tables and compares). Each message's `LAYOUT` lists its
//! fixed fields in wire order; variable parts start where the named constant says.

/// A field: the byte range it occupies.
pub type Field = core::ops::Range<usize>;

/// HELLO.
pub mod hello {
    use super::Field;
    /// The client NIC's MAC address.
    pub const MAC: Field = 0..6;
    /// The client NIC's MTU, bytes (u16).
    pub const MTU: Field = 6..8;
    /// The client's IPv4 address.
    pub const IP: Field = 8..12;
    /// The client's page size, bytes (u32; 4096).
    pub const PAGE_SIZE: Field = 12..16;
    /// Memory size in bytes: the sum of the RAM ranges (u64).
    pub const MEMORY_BYTES: Field = 16..24;
    /// Length of the client name that follows, 1..=64.
    pub const NAME_LEN: Field = 24..25;
    /// Start of the name (`name_len` bytes).
    pub const NAME: usize = NAME_LEN.end;
    /// HELLO's fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[MAC, MTU, IP, PAGE_SIZE, MEMORY_BYTES, NAME_LEN];
}

/// HELLO_ACK.
pub mod hello_ack {
    use super::Field;
    /// 0 registered, 1 refused (name invalid).
    pub const STATUS: Field = 0..1;
    /// Reserved, 0.
    pub const RESERVED: Field = 1..4;
    /// Largest UDP payload the server accepts, bytes (u32).
    pub const MAX_PAYLOAD: Field = 4..8;
    /// Length of the whole payload.
    pub const LEN: usize = MAX_PAYLOAD.end;
    /// HELLO_ACK's fields, in wire order.
    pub const LAYOUT: &[Field] = &[STATUS, RESERVED, MAX_PAYLOAD];
}

/// HELLO in version 2: the version-1 fields ([`hello`]), then these, at offsets counted
/// from the end of the name.
pub mod hello_v2 {
    use super::Field;
    /// Feature bits the client asks for ([`crate::proto::features`]).
    pub const FEATURES: Field = 0..4;
    /// The first 8 bytes of the server public key the client pinned; zero when it does not
    /// encrypt.
    pub const KEY_ID: Field = 4..12;
    /// Length of the handshake message that follows (u16).
    pub const HANDSHAKE_LEN: Field = 12..14;
    /// Start of the handshake message (Noise NK message 1 when encrypting, else empty).
    pub const HANDSHAKE: usize = HANDSHAKE_LEN.end;
    /// The tail's fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[FEATURES, KEY_ID, HANDSHAKE_LEN];
}

/// HELLO_ACK in version 2.
pub mod hello_ack_v2 {
    use super::Field;
    /// [`crate::proto::HelloStatus`].
    pub const STATUS: Field = 0..1;
    /// Reserved, 0.
    pub const RESERVED: Field = 1..4;
    /// Largest UDP payload the server accepts, bytes (u32).
    pub const MAX_PAYLOAD: Field = 4..8;
    /// Feature bits granted.
    pub const FEATURES: Field = 8..12;
    /// Feature bits the server requires.
    pub const REQUIRED: Field = 12..16;
    /// The terms: the fields above, which message 2's payload repeats (authenticated).
    pub const TERMS: Field = 0..16;
    /// Length of the handshake message that follows (u16).
    pub const HANDSHAKE_LEN: Field = 16..18;
    /// Start of the handshake message (Noise NK message 2 when encrypted, else empty).
    pub const HANDSHAKE: usize = HANDSHAKE_LEN.end;
    /// HELLO_ACK v2's fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[STATUS, RESERVED, MAX_PAYLOAD, FEATURES, REQUIRED, HANDSHAKE_LEN];
}

/// The payload of a sealed packet (version 2, flag `SEALED`): the nonce, the ciphertext
/// of the message's payload, and the authentication tag (the last [`sealed::TAG_LEN`]
/// bytes).
pub mod sealed {
    use super::Field;
    /// The sender's nonce for this packet (u64).
    pub const NONCE: Field = 0..8;
    /// Start of the ciphertext (as long as the plaintext payload).
    pub const CIPHERTEXT: usize = NONCE.end;
    /// Length of the tag at the end.
    pub const TAG_LEN: usize = 16;
    /// Bytes sealing adds to a payload: the nonce and the tag.
    pub const OVERHEAD: usize = CIPHERTEXT + TAG_LEN;
    /// The fixed fields before the ciphertext, in wire order.
    pub const LAYOUT: &[Field] = &[NONCE];
}

/// CRASH.
pub mod crash {
    use super::Field;
    /// Crash kind: 1 panic, 2 CPU exception, 3 requested.
    pub const KIND: Field = 0..1;
    /// Exception vector for kind 2, else 0.
    pub const VECTOR: Field = 1..2;
    /// Register records that will follow in the REGISTERS section, 1..=64 (u16).
    pub const CPU_COUNT: Field = 2..4;
    /// Index of the crashing CPU (u16).
    pub const CRASHING_CPU: Field = 4..6;
    /// RAM ranges that follow the fixed part, 1..=32 (u16).
    pub const RANGE_COUNT: Field = 6..8;
    /// Exception error code for kind 2, else 0 (u64).
    pub const ERROR_CODE: Field = 8..16;
    /// Fault address (CR2 for a page fault), else 0 (u64).
    pub const FAULT_ADDRESS: Field = 16..24;
    /// Page size, bytes (u32).
    pub const PAGE_SIZE: Field = 24..28;
    /// Length of the panic message at the end, 0..=256 (u16).
    pub const MESSAGE_LEN: Field = 28..30;
    /// Code addresses of the crashing stack that follow the ranges, 0..=16.
    pub const FRAME_COUNT: Field = 30..31;
    /// The client's architecture, its ELF `e_machine` (62 x86_64, 183 AArch64); 0 (clients
    /// before the field): x86_64.
    pub const MACHINE: Field = 31..32;
    /// Console log bytes the LOG section will carry (u64).
    pub const LOG_LEN: Field = 32..40;
    /// Start of the RAM ranges; then the frames, then the message.
    pub const RANGES: usize = LOG_LEN.end;
    /// One RAM range: `phys_start`, `length`, `virt_start`, u64 each.
    pub const RANGE_LEN: usize = 24;
    /// One frame address, u64.
    pub const FRAME_LEN: usize = 8;
    /// CRASH's fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[
        KIND,
        VECTOR,
        CPU_COUNT,
        CRASHING_CPU,
        RANGE_COUNT,
        ERROR_CODE,
        FAULT_ADDRESS,
        PAGE_SIZE,
        MESSAGE_LEN,
        FRAME_COUNT,
        MACHINE,
        LOG_LEN,
    ];
}

/// DECISION.
pub mod decision {
    use super::Field;
    /// 0 `DUMP_ALL`, 1 `SKIP_MEMORY`, 2 `ABORT`.
    pub const VERDICT: Field = 0..1;
    /// Why the verdict: 0 none, 1 hook, 2 no space, 3 duplicate crash, 4 too many dumps at
    /// once, 5 bad announcement.
    pub const WHY: Field = 1..2;
    /// Reserved, 0.
    pub const RESERVED: Field = 2..4;
    /// Largest UDP payload the server accepts, bytes (u32).
    pub const MAX_PAYLOAD: Field = 4..8;
    /// Length of the whole payload.
    pub const LEN: usize = MAX_PAYLOAD.end;
    /// DECISION's fields, in wire order.
    pub const LAYOUT: &[Field] = &[VERDICT, WHY, RESERVED, MAX_PAYLOAD];
}

/// DATA.
pub mod data {
    use super::Field;
    /// Section: 1 `LOG`, 2 `REGISTERS`, 3 `MEMORY`, 4 `EXTRA`, 5 `EXCLUDED`.
    pub const SECTION: Field = 0..1;
    /// Encoding of the data: 0 raw, 1 an LZ4 block (feature `COMPRESSED` only).
    pub const ENCODING: Field = 1..2;
    /// Reserved, 0.
    pub const RESERVED: Field = 2..4;
    /// Length of the section bytes an LZ4 block decodes to (u32); 0 when raw.
    pub const RAW_LEN: Field = 4..8;
    /// Byte offset of the data in its section; for `MEMORY`, the physical address (u64).
    pub const OFFSET: Field = 8..16;
    /// Start of the data (at least one byte).
    pub const DATA: usize = OFFSET.end;
    /// DATA's sub-header, in wire order.
    pub const LAYOUT: &[Field] = &[SECTION, ENCODING, RESERVED, RAW_LEN, OFFSET];
}

/// ACK.
pub mod ack {
    use super::Field;
    /// Length of the selective-ack bitmap, bytes, 0..=64 (u16).
    pub const BITMAP_LEN: Field = 0..2;
    /// Bit 0 `STOP`: the server abandons the dump.
    pub const FLAGS: Field = 2..3;
    /// Reserved, 0.
    pub const RESERVED: Field = 3..4;
    /// Start of the selective-ack bitmap (`bitmap_len` bytes).
    pub const BITMAP: usize = RESERVED.end;
    /// ACK's fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[BITMAP_LEN, FLAGS, RESERVED];
}

/// FINISH.
pub mod finish {
    use super::Field;
    /// Total DATA bytes sent, sub-headers excluded (u64).
    pub const TOTAL_BYTES: Field = 0..8;
    /// CRC-32 of the concatenated CRC-32s of every DATA payload, in `seq` order (u32).
    pub const STREAM_CRC: Field = 8..12;
    /// Bit 0 memory skipped (by DECISION), bit 1 memory incomplete (u32).
    pub const FLAGS: Field = 12..16;
    /// All-zero pages not sent (u64).
    pub const ZERO_PAGES: Field = 16..24;
    /// Retransmitted DATA packets (u64).
    pub const RETRANSMISSIONS: Field = 24..32;
    /// Length of the whole payload.
    pub const LEN: usize = RETRANSMISSIONS.end;
    /// FINISH's fields, in wire order.
    pub const LAYOUT: &[Field] = &[TOTAL_BYTES, STREAM_CRC, FLAGS, ZERO_PAGES, RETRANSMISSIONS];
}

/// One excluded-run record of the `EXCLUDED` section (feature `FILTER`).
pub mod excluded_run {
    use super::Field;
    /// First page frame number of the run: its physical address / page size (u64).
    pub const START_PFN: Field = 0..8;
    /// Pages in the run, at least 1 (u32).
    pub const PAGES: Field = 8..12;
    /// The class that left them out, as its makedumpfile dump-level bit: 2 page cache,
    /// 4 page cache with private data, 8 user, 16 free.
    pub const CLASS: Field = 12..13;
    /// Reserved, 0.
    pub const RESERVED: Field = 13..16;
    /// Length of one record.
    pub const LEN: usize = RESERVED.end;
    /// The record's fields, in wire order.
    pub const LAYOUT: &[Field] = &[START_PFN, PAGES, CLASS, RESERVED];
}

/// FINISH_ACK.
pub mod finish_ack {
    use super::Field;
    /// 0 `VERIFIED`, 1 `CRC_MISMATCH`, 2 `MISSING_DATA`, 3 `WRITE_ERROR`, 4 `UNKNOWN_SESSION`.
    pub const STATUS: Field = 0..1;
    /// What the client does next: 0 reboot, 1 halt.
    pub const ACTION: Field = 1..2;
    /// Reserved, 0.
    pub const RESERVED: Field = 2..4;
    /// Length of the whole payload.
    pub const LEN: usize = RESERVED.end;
    /// FINISH_ACK's fields, in wire order.
    pub const LAYOUT: &[Field] = &[STATUS, ACTION, RESERVED];
}

/// ABORT and ERROR.
pub mod text {
    use super::Field;
    /// ABORT's reason or ERROR's code (u16).
    pub const CODE: Field = 0..2;
    /// Length of the text that follows, 0..=256 (u16).
    pub const TEXT_LEN: Field = 2..4;
    /// Start of the text (`text_len` bytes).
    pub const TEXT: usize = TEXT_LEN.end;
    /// The fixed fields, in wire order.
    pub const LAYOUT: &[Field] = &[CODE, TEXT_LEN];
}
