//! Where each field of each message lies in its payload, as docs/PROTOCOL.md's tables
//! say (a test reads those tables and compares). Each message's `LAYOUT` lists its
//! fixed fields in wire order; variable parts start where the named constant says.

/// A field: the byte range it occupies.
pub type Field = core::ops::Range<usize>;

/// HELLO.
pub mod hello {
    use super::Field;
    pub const MAC: Field = 0..6;
    pub const MTU: Field = 6..8;
    pub const IP: Field = 8..12;
    pub const PAGE_SIZE: Field = 12..16;
    pub const MEMORY_BYTES: Field = 16..24;
    pub const NAME_LEN: Field = 24..25;
    /// Start of the name (`name_len` bytes).
    pub const NAME: usize = NAME_LEN.end;
    pub const LAYOUT: &[Field] = &[MAC, MTU, IP, PAGE_SIZE, MEMORY_BYTES, NAME_LEN];
}

/// HELLO_ACK.
pub mod hello_ack {
    use super::Field;
    pub const STATUS: Field = 0..1;
    pub const RESERVED: Field = 1..4;
    pub const MAX_PAYLOAD: Field = 4..8;
    pub const LEN: usize = MAX_PAYLOAD.end;
    pub const LAYOUT: &[Field] = &[STATUS, RESERVED, MAX_PAYLOAD];
}

/// CRASH.
pub mod crash {
    use super::Field;
    pub const KIND: Field = 0..1;
    pub const VECTOR: Field = 1..2;
    pub const CPU_COUNT: Field = 2..4;
    pub const CRASHING_CPU: Field = 4..6;
    pub const RANGE_COUNT: Field = 6..8;
    pub const ERROR_CODE: Field = 8..16;
    pub const FAULT_ADDRESS: Field = 16..24;
    pub const PAGE_SIZE: Field = 24..28;
    pub const MESSAGE_LEN: Field = 28..30;
    pub const FRAME_COUNT: Field = 30..31;
    pub const RESERVED: Field = 31..32;
    pub const LOG_LEN: Field = 32..40;
    /// Start of the RAM ranges; then the frames, then the message.
    pub const RANGES: usize = LOG_LEN.end;
    /// One RAM range: `phys_start`, `length`, `virt_start`, u64 each.
    pub const RANGE_LEN: usize = 24;
    /// One frame address, u64.
    pub const FRAME_LEN: usize = 8;
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
        RESERVED,
        LOG_LEN,
    ];
}

/// DECISION.
pub mod decision {
    use super::Field;
    pub const VERDICT: Field = 0..1;
    pub const WHY: Field = 1..2;
    pub const RESERVED: Field = 2..4;
    pub const MAX_PAYLOAD: Field = 4..8;
    pub const LEN: usize = MAX_PAYLOAD.end;
    pub const LAYOUT: &[Field] = &[VERDICT, WHY, RESERVED, MAX_PAYLOAD];
}

/// DATA.
pub mod data {
    use super::Field;
    pub const SECTION: Field = 0..1;
    pub const RESERVED: Field = 1..8;
    pub const OFFSET: Field = 8..16;
    /// Start of the data (at least one byte).
    pub const DATA: usize = OFFSET.end;
    pub const LAYOUT: &[Field] = &[SECTION, RESERVED, OFFSET];
}

/// ACK.
pub mod ack {
    use super::Field;
    pub const BITMAP_LEN: Field = 0..2;
    pub const FLAGS: Field = 2..3;
    pub const RESERVED: Field = 3..4;
    /// Start of the selective-ack bitmap (`bitmap_len` bytes).
    pub const BITMAP: usize = RESERVED.end;
    pub const LAYOUT: &[Field] = &[BITMAP_LEN, FLAGS, RESERVED];
}

/// FINISH.
pub mod finish {
    use super::Field;
    pub const TOTAL_BYTES: Field = 0..8;
    pub const STREAM_CRC: Field = 8..12;
    pub const FLAGS: Field = 12..16;
    pub const ZERO_PAGES: Field = 16..24;
    pub const RETRANSMISSIONS: Field = 24..32;
    pub const LEN: usize = RETRANSMISSIONS.end;
    pub const LAYOUT: &[Field] = &[TOTAL_BYTES, STREAM_CRC, FLAGS, ZERO_PAGES, RETRANSMISSIONS];
}

/// FINISH_ACK.
pub mod finish_ack {
    use super::Field;
    pub const STATUS: Field = 0..1;
    pub const ACTION: Field = 1..2;
    pub const RESERVED: Field = 2..4;
    pub const LEN: usize = RESERVED.end;
    pub const LAYOUT: &[Field] = &[STATUS, ACTION, RESERVED];
}

/// ABORT and ERROR.
pub mod text {
    use super::Field;
    pub const CODE: Field = 0..2;
    pub const TEXT_LEN: Field = 2..4;
    /// Start of the text (`text_len` bytes).
    pub const TEXT: usize = TEXT_LEN.end;
    pub const LAYOUT: &[Field] = &[CODE, TEXT_LEN];
}
