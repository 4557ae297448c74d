//! The 24-byte header every netdump packet starts with (docs/PROTOCOL.md, "Packet").

use super::{Check, MessageType, ProtoError};

/// Field offsets inside the header.
mod field {
    pub type Field = core::ops::Range<usize>;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const FLAGS: Field = 4..6;
    pub const PAYLOAD_LEN: Field = 6..8;
    pub const COOKIE: Field = 8..16;
    pub const SEQ: Field = 16..20;
    pub const CRC: Field = 20..24;
}

/// `0x4E44`, "ND".
pub const MAGIC: u16 = 0x4E44;
/// Protocol version 1: no features, no encryption.
pub const VERSION_1: u8 = 1;
/// Protocol version 2: features negotiated in HELLO / HELLO_ACK, sealed packets.
pub const VERSION_2: u8 = 2;
/// Length of the header.
pub const HEADER_LEN: usize = 24;

/// Header flag bits.
pub mod flags {
    /// On DATA: the server must acknowledge at once.
    pub const ACK_REQUEST: u16 = 1 << 0;
    /// On DATA: this is a retransmission (informational).
    pub const RETRANSMIT: u16 = 1 << 1;
    /// Version 2 only: the payload is sealed (`nonce || ciphertext || tag`, docs/PROTOCOL.md
    /// "Sealed packets"); the CRC field is 0 and not checked, the AEAD tag replaces it.
    pub const SEALED: u16 = 1 << 2;
    /// Version 2 only, unsealed packets only: the CRC field holds the XXH64 check, not
    /// CRC-32 ([`Check::Xxh64`](crate::proto::Check), docs/PROTOCOL.md "Integrity
    /// checks"). A client sets it only when the server granted
    /// [`features::XXH64_CHECK`](crate::proto::features::XXH64_CHECK).
    pub const CHECK_XXH64: u16 = 1 << 8;
    /// Version 2 only, on CRASH, from a client granted
    /// [`features::FAILOVER`](crate::proto::features::FAILOVER): this is the last server
    /// the client tries, so the server answers as it would a client without failover
    /// (never [`DecisionReason::TryElsewhere`](crate::proto::DecisionReason::TryElsewhere)).
    pub const LAST_SERVER: u16 = 1 << 3;
    /// Every flag version 1 defines.
    pub const ALL: u16 = ACK_REQUEST | RETRANSMIT;
    /// Every flag version 2 defines.
    pub const ALL_V2: u16 = ALL | SEALED | LAST_SERVER | CHECK_XXH64;
}

/// The decoded header of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version (byte 2): [`VERSION_1`] or [`VERSION_2`]; each side emits
    /// the version its session speaks.
    pub version: u8,
    /// The message type (byte 3).
    pub msg_type: MessageType,
    /// [`flags`] bits (bytes 4..6); a sender sets none outside [`flags::ALL`].
    /// [`Header::parse`] passes them on as received.
    pub flags: u16,
    /// The client's 64-bit cookie, naming the session (bytes 8..16).
    pub cookie: u64,
    /// Per-type sequence number (bytes 16..20): attempt number, data sequence number,
    /// cumulative ack or echo, as docs/PROTOCOL.md's type table says.
    pub seq: u32,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The header's CRC field: the packet's [`Check`] of header bytes 0..20 followed by the
/// payload's check (big-endian). Two levels, so that the payload is hashed once per packet
/// on each side: the payload check also feeds the stream CRC in FINISH, and a
/// retransmission (whose flags differ) reuses it.
fn header_crc(check: Check, header: &[u8], payload_crc: u32) -> u32 {
    check.header(&header[..field::CRC.start], payload_crc)
}

/// The check a packet of `version` with `flags` carries (see [`Header::check`]).
const fn check_of(version: u8, fl: u16) -> Check {
    if version == VERSION_2 && fl & flags::CHECK_XXH64 != 0 && fl & flags::SEALED == 0 {
        Check::Xxh64
    } else {
        Check::Crc32
    }
}

impl Header {
    /// A version-1 header.
    pub const fn v1(msg_type: MessageType, flags: u16, cookie: u64, seq: u32) -> Header {
        Header { version: VERSION_1, msg_type, flags, cookie, seq }
    }

    /// A version-2 header.
    pub const fn v2(msg_type: MessageType, flags: u16, cookie: u64, seq: u32) -> Header {
        Header { version: VERSION_2, msg_type, flags, cookie, seq }
    }

    /// True if this is a version-2 packet with [`flags::SEALED`]: its payload is
    /// `nonce || ciphertext || tag` and its CRC field is not checked.
    pub const fn is_sealed(&self) -> bool {
        self.version == VERSION_2 && self.flags & flags::SEALED != 0
    }

    /// The integrity check of this packet's CRC field, and of its payload check (which
    /// feeds the stream CRC): XXH64 for an unsealed version-2 packet with
    /// [`flags::CHECK_XXH64`], CRC-32 otherwise (a sealed packet's payload check, for the
    /// stream CRC, is CRC-32 too).
    pub const fn check(&self) -> Check {
        check_of(self.version, self.flags)
    }

    /// Validates a whole datagram and returns its header and payload.
    ///
    /// Checks, in order: length, magic, version (1 or 2), `payload_len` against the
    /// datagram length, CRC (not for a sealed packet, whose payload must hold at least a
    /// nonce and a tag: its AEAD tag, checked by whoever holds the key, replaces the CRC),
    /// and message type. A wrong version is reported before the CRC is checked so that a
    /// server can tell a peer it speaks another version.
    pub fn parse(datagram: &[u8]) -> Result<(Header, &[u8]), ProtoError> {
        Self::parse_with_check(datagram).map(|(header, payload, _)| (header, payload))
    }

    /// As [`parse`](Self::parse), and also returns the payload's check ([`Header::check`]
    /// of the payload) that the CRC field was verified with — `None` for a sealed packet,
    /// whose CRC field is not checked. A receiver that needs the payload check too (a
    /// server's stream CRC) takes it from here instead of hashing the payload twice.
    pub fn parse_with_check(datagram: &[u8]) -> Result<(Header, &[u8], Option<u32>), ProtoError> {
        if datagram.len() < HEADER_LEN {
            return Err(ProtoError::Truncated);
        }
        if be16(&datagram[field::MAGIC]) != MAGIC {
            return Err(ProtoError::BadMagic);
        }
        let version = datagram[field::VERSION];
        if version != VERSION_1 && version != VERSION_2 {
            return Err(ProtoError::UnsupportedVersion(version));
        }
        let payload_len = be16(&datagram[field::PAYLOAD_LEN]) as usize;
        if HEADER_LEN + payload_len != datagram.len() {
            return Err(ProtoError::LengthMismatch);
        }
        let header = Header {
            version,
            msg_type: MessageType::Hello,
            flags: be16(&datagram[field::FLAGS]),
            cookie: u64::from_be_bytes(datagram[field::COOKIE].try_into().unwrap_or([0; 8])),
            seq: u32::from_be_bytes(datagram[field::SEQ].try_into().unwrap_or([0; 4])),
        };
        let payload = &datagram[HEADER_LEN..];
        let payload_check = if header.is_sealed() {
            if payload.len() < super::field::sealed::OVERHEAD {
                return Err(ProtoError::Truncated);
            }
            None
        } else {
            let crc = u32::from_be_bytes(datagram[field::CRC].try_into().unwrap_or([0; 4]));
            let check = header.check();
            let payload_check = check.of(payload);
            if crc != header_crc(check, datagram, payload_check) {
                return Err(ProtoError::BadCrc);
            }
            Some(payload_check)
        };
        let msg_type = MessageType::try_from(datagram[field::TYPE])?;
        Ok((Header { msg_type, ..header }, payload, payload_check))
    }

    /// Rewrites the CRC field of `packet` (header + payload) to what the protocol
    /// requires for its bytes (0 for a sealed packet) — for tests, fuzzers and fault
    /// injectors that alter a packet and need it to pass the CRC check. Does nothing to
    /// a packet shorter than a header.
    pub fn set_crc(packet: &mut [u8]) {
        if packet.len() < HEADER_LEN {
            return;
        }
        let (version, fl) = (packet[field::VERSION], be16(&packet[field::FLAGS]));
        let sealed = version == VERSION_2 && fl & flags::SEALED != 0;
        let check = check_of(version, fl);
        let crc = if sealed { 0 } else { header_crc(check, packet, check.of(&packet[HEADER_LEN..])) };
        packet[field::CRC].copy_from_slice(&crc.to_be_bytes());
    }

    /// The `seq` of a datagram that has a header, without validating anything else
    /// (used to echo it in an ERROR reply).
    pub fn peek_seq(datagram: &[u8]) -> Option<u32> {
        datagram.get(field::SEQ).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Writes a packet: this header, then `payload_len` bytes produced by `fill`, then the
    /// CRC (0 when the header [is sealed](Self::is_sealed): the caller seals the payload
    /// in place, with the header as written as associated data). Returns the packet length.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize, ProtoError> {
        self.emit_inner(buf, payload_len, None, fill)
    }

    /// As [`emit`](Self::emit) for a payload whose check ([`Header::check`]) the caller
    /// already knows (the client's window keeps it per packet): the payload is copied,
    /// not hashed again.
    pub fn emit_with_payload_crc(&self, buf: &mut [u8], payload: &[u8], payload_crc: u32) -> Result<usize, ProtoError> {
        self.emit_inner(buf, payload.len(), Some(payload_crc), |p| p.copy_from_slice(payload))
    }

    fn emit_inner(
        &self,
        buf: &mut [u8],
        payload_len: usize,
        payload_crc: Option<u32>,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<usize, ProtoError> {
        let total = HEADER_LEN + payload_len;
        if payload_len > u16::MAX as usize || buf.len() < total {
            return Err(ProtoError::BufferTooSmall);
        }
        let packet = &mut buf[..total];
        packet[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        packet[field::VERSION] = self.version;
        packet[field::TYPE] = self.msg_type as u8;
        packet[field::FLAGS].copy_from_slice(&self.flags.to_be_bytes());
        packet[field::PAYLOAD_LEN].copy_from_slice(&(payload_len as u16).to_be_bytes());
        packet[field::COOKIE].copy_from_slice(&self.cookie.to_be_bytes());
        packet[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        fill(&mut packet[HEADER_LEN..]);
        let crc = if self.is_sealed() {
            0
        } else {
            let check = self.check();
            let payload_crc = payload_crc.unwrap_or_else(|| check.of(&packet[HEADER_LEN..]));
            header_crc(check, packet, payload_crc)
        };
        packet[field::CRC].copy_from_slice(&crc.to_be_bytes());
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A HELLO_ACK (type 0x81) with cookie 0x0102030405060708, seq 3, payload 00 00 00 00
    // 00 00 05 c0; the CRC (of header bytes 0..20 and the payload CRC) was computed
    // independently with Python zlib.crc32.
    const HELLO_ACK: [u8; 32] = [
        0x4e, 0x44, 0x01, 0x81, 0x00, 0x00, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x00,
        0x00, 0x03, 0xc6, 0x2e, 0xc3, 0xac, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0,
    ];

    fn sample() -> Header {
        Header::v1(MessageType::HelloAck, 0, 0x0102030405060708, 3)
    }

    #[test]
    fn emits_the_documented_bytes() {
        let mut buf = [0u8; 64];
        let n = sample().emit(&mut buf, 8, |p| p.copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x05, 0xc0])).unwrap();
        assert_eq!(&buf[..n], &HELLO_ACK[..]);
    }

    #[test]
    fn parses_the_documented_bytes() {
        let (h, payload) = Header::parse(&HELLO_ACK).unwrap();
        assert_eq!(h, sample());
        assert_eq!(payload, &[0, 0, 0, 0, 0, 0, 0x05, 0xc0]);
    }

    #[test]
    fn rejects_every_single_bit_flip() {
        for bit in 0..HELLO_ACK.len() * 8 {
            let mut p = HELLO_ACK;
            p[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::parse(&p).is_err(), "bit {bit} flipped was accepted");
        }
    }

    #[test]
    fn reports_version_before_crc() {
        let mut p = HELLO_ACK;
        p[2] = 7;
        assert_eq!(Header::parse(&p), Err(ProtoError::UnsupportedVersion(7)));
    }

    #[test]
    fn rejects_truncated_and_padded_datagrams() {
        assert_eq!(Header::parse(&HELLO_ACK[..23]), Err(ProtoError::Truncated));
        assert_eq!(Header::parse(&HELLO_ACK[..31]), Err(ProtoError::LengthMismatch));
        let mut long = [0u8; 33];
        long[..32].copy_from_slice(&HELLO_ACK);
        assert_eq!(Header::parse(&long), Err(ProtoError::LengthMismatch));
    }

    #[test]
    fn rejects_unknown_type_with_valid_crc() {
        let mut buf = [0u8; 64];
        let n = sample().emit(&mut buf, 0, |_| {}).unwrap();
        buf[3] = 0x42;
        let crc = header_crc(Check::Crc32, &buf[..n], crc32fast::hash(&buf[24..n]));
        buf[20..24].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Header::parse(&buf[..n]), Err(ProtoError::UnknownType(0x42)));
    }

    #[test]
    fn emit_with_a_known_payload_crc_matches_emit() {
        let payload = [7u8; 100];
        let (mut a, mut b) = ([0u8; 200], [0u8; 200]);
        let n = sample().emit(&mut a, 100, |p| p.copy_from_slice(&payload)).unwrap();
        let m = sample().emit_with_payload_crc(&mut b, &payload, crc32fast::hash(&payload)).unwrap();
        assert_eq!(a[..n], b[..m]);
        assert_eq!(Header::parse(&a[..n]).unwrap().1, &payload[..]);
    }

    #[test]
    fn set_crc_restores_a_valid_crc_after_an_edit() {
        let mut p = HELLO_ACK;
        p[31] = 0x99;
        assert_eq!(Header::parse(&p), Err(ProtoError::BadCrc));
        Header::set_crc(&mut p);
        assert_eq!(Header::parse(&p).unwrap().1[7], 0x99);
        let mut short = [0u8; 10];
        Header::set_crc(&mut short);
        assert_eq!(short, [0u8; 10]);
    }

    // The same HELLO_ACK header in version 2: only the version byte and the CRC differ
    // (CRC computed independently with Python zlib.crc32).
    const HELLO_ACK_V2: [u8; 32] = [
        0x4e, 0x44, 0x02, 0x81, 0x00, 0x00, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x00,
        0x00, 0x03, 0xff, 0x56, 0x6e, 0xec, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0,
    ];

    #[test]
    fn a_version_2_header_carries_its_version_and_a_crc_like_version_1() {
        let h = Header { version: VERSION_2, ..sample() };
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf, 8, |p| p.copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x05, 0xc0])).unwrap();
        assert_eq!(&buf[..n], &HELLO_ACK_V2[..]);
        assert_eq!(Header::parse(&HELLO_ACK_V2).unwrap().0, h);
        for bit in 0..HELLO_ACK_V2.len() * 8 {
            let mut p = HELLO_ACK_V2;
            p[bit / 8] ^= 1 << (bit % 8);
            // Setting SEALED turns the CRC check off: the tag checks the packet instead.
            if bit == 5 * 8 + 2 {
                continue;
            }
            assert!(Header::parse(&p).is_err(), "bit {bit} flipped was accepted");
        }
    }

    #[test]
    fn a_sealed_packet_has_crc_0_unchecked_and_room_for_nonce_and_tag() {
        let h = Header::v2(MessageType::Ack, flags::SEALED, 9, 4);
        assert!(h.is_sealed());
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf, 24, |p| p.fill(0x5a)).unwrap();
        assert_eq!(&buf[20..24], &[0, 0, 0, 0], "the CRC field of a sealed packet is 0");
        assert_eq!(Header::parse(&buf[..n]).unwrap(), (h, &buf[24..n]));
        // Whatever the payload or the CRC field hold, the header parses: the AEAD judges.
        buf[30] ^= 1;
        buf[21] = 7;
        assert!(Header::parse(&buf[..n]).is_ok());
        // Shorter than a nonce and a tag: truncated.
        let n = h.emit(&mut buf, 23, |_| {}).unwrap();
        assert_eq!(Header::parse(&buf[..n]), Err(ProtoError::Truncated));
        // SEALED means nothing in version 1: the CRC is checked as always.
        let v1 = Header::v1(MessageType::Ack, flags::SEALED, 9, 4);
        assert!(!v1.is_sealed());
        let n = v1.emit(&mut buf, 24, |p| p.fill(0x5a)).unwrap();
        assert_ne!(&buf[20..24], &[0, 0, 0, 0]);
        buf[30] ^= 1;
        assert_eq!(Header::parse(&buf[..n]), Err(ProtoError::BadCrc));
    }

    // The version-2 HELLO_ACK with CHECK_XXH64: the check field is the low 32 bits of
    // XXH64 (seed 0) of header bytes 0..20 and the payload's low-32 XXH64, computed
    // independently with the reference libxxhash through Python ctypes.
    const HELLO_ACK_XXH64: [u8; 32] = [
        0x4e, 0x44, 0x02, 0x81, 0x01, 0x00, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00, 0x00,
        0x00, 0x03, 0x4e, 0x17, 0xee, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0,
    ];

    #[test]
    fn check_xxh64_puts_the_documented_xxh64_check_in_the_crc_field() {
        let h = Header::v2(MessageType::HelloAck, flags::CHECK_XXH64, 0x0102030405060708, 3);
        assert_eq!(h.check(), Check::Xxh64);
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf, 8, |p| p.copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x05, 0xc0])).unwrap();
        assert_eq!(&buf[..n], &HELLO_ACK_XXH64[..]);
        assert_eq!(Header::parse(&HELLO_ACK_XXH64).unwrap().0, h);
        let payload_check = Check::Xxh64.of(&HELLO_ACK_XXH64[24..]);
        let n = h.emit_with_payload_crc(&mut buf, &HELLO_ACK_XXH64[24..], payload_check).unwrap();
        assert_eq!(&buf[..n], &HELLO_ACK_XXH64[..]);
        for bit in 0..HELLO_ACK_XXH64.len() * 8 {
            let mut p = HELLO_ACK_XXH64;
            p[bit / 8] ^= 1 << (bit % 8);
            if bit == 5 * 8 + 2 {
                continue; // SEALED: the tag checks the packet instead.
            }
            assert!(Header::parse(&p).is_err(), "bit {bit} flipped was accepted");
        }
        // A packet with a CRC-32 where its flag says XXH64, and the other way round.
        let mut p = HELLO_ACK_V2;
        p[4] |= 0x01;
        assert_eq!(Header::parse(&p), Err(ProtoError::BadCrc));
        Header::set_crc(&mut p);
        assert_eq!(p, HELLO_ACK_XXH64);
        let mut p = HELLO_ACK_XXH64;
        p[4] &= !0x01;
        assert_eq!(Header::parse(&p), Err(ProtoError::BadCrc));
    }

    #[test]
    fn last_server_is_flag_bit_3_of_version_2() {
        assert_eq!(flags::LAST_SERVER, 0x0008);
        assert_eq!(flags::ALL_V2 & flags::LAST_SERVER, flags::LAST_SERVER);
        assert_eq!(flags::ALL & flags::LAST_SERVER, 0);
        let h = Header::v2(MessageType::Crash, flags::LAST_SERVER, 0x0102030405060708, 0);
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf, 4, |p| p.fill(0)).unwrap();
        // Bytes 4..6: the flags, big-endian.
        assert_eq!(&buf[..8], &[0x4e, 0x44, 0x02, 0x02, 0x00, 0x08, 0x00, 0x04]);
        assert_eq!(Header::parse(&buf[..n]).unwrap().0.flags, flags::LAST_SERVER);
        // It does not change the check: CRC-32 as for flags 0.
        assert_eq!(Header::parse(&buf[..n]).unwrap().0.check(), Check::Crc32);
    }

    #[test]
    fn check_xxh64_means_nothing_in_version_1_nor_when_sealed() {
        let v1 = Header::v1(MessageType::Ack, flags::CHECK_XXH64, 9, 4);
        assert_eq!(v1.check(), Check::Crc32);
        let mut buf = [0u8; 64];
        let n = v1.emit(&mut buf, 8, |p| p.fill(0x5a)).unwrap();
        let mut crc32 = [0u8; 24];
        crc32[..20].copy_from_slice(&buf[..20]);
        crc32[20..].copy_from_slice(&crc32fast::hash(&buf[24..n]).to_be_bytes());
        assert_eq!(buf[20..24], crc32fast::hash(&crc32).to_be_bytes());
        assert!(Header::parse(&buf[..n]).is_ok());
        let sealed = Header::v2(MessageType::Ack, flags::CHECK_XXH64 | flags::SEALED, 9, 4);
        assert_eq!(sealed.check(), Check::Crc32);
    }

    #[test]
    fn parse_with_check_returns_the_payload_check_the_crc_was_verified_with() {
        let (h, payload, check) = Header::parse_with_check(&HELLO_ACK).unwrap();
        assert_eq!((h, payload), Header::parse(&HELLO_ACK).unwrap());
        assert_eq!(check, Some(crc32fast::hash(&HELLO_ACK[24..])));
        let (_, _, check) = Header::parse_with_check(&HELLO_ACK_XXH64).unwrap();
        assert_eq!(check, Some(Check::Xxh64.of(&HELLO_ACK_XXH64[24..])));
        assert_ne!(check, Some(crc32fast::hash(&HELLO_ACK_XXH64[24..])));
        let sealed = Header::v2(MessageType::Ack, flags::SEALED, 9, 4);
        let mut buf = [0u8; 64];
        let n = sealed.emit(&mut buf, 24, |p| p.fill(0x5a)).unwrap();
        assert_eq!(Header::parse_with_check(&buf[..n]).unwrap().2, None, "a sealed packet's CRC is not checked");
        let mut bad = HELLO_ACK;
        bad[31] ^= 1;
        assert_eq!(Header::parse_with_check(&bad), Err(ProtoError::BadCrc));
    }

    #[test]
    fn emit_refuses_a_short_buffer() {
        let mut buf = [0u8; 30];
        assert_eq!(sample().emit(&mut buf, 8, |_| {}), Err(ProtoError::BufferTooSmall));
    }
}
