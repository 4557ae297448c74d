//! How the targets read their input: a sequence of records, and the fix-ups that let the
//! fuzzer reach past the CRC.

use netdump_core::crypto::{Transport, seal_packet};
use netdump_core::proto::{HEADER_LEN, Header, MessageType};

/// A fuzz input as records `[tag: u8][len: u16 big-endian][len bytes]`; a record whose
/// length runs past the end takes what is left.
pub struct Records<'a> {
    data: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Records { data }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.data.split_first()?;
        let len = match rest {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let (record, tail) = rest.split_at(len.min(rest.len()));
        self.data = tail;
        Some((tag, record))
    }
}

/// The inverse of [`Records`], for seeds and regression tests.
pub fn encode(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, bytes) in records {
        out.push(*tag);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// Makes a datagram's header consistent, as far as `fix_len` and `fix_crc` ask: the
/// `payload_len` field from the datagram's length, the CRC from its bytes (header bytes
/// 0..20, then the CRC-32 of the payload: docs/PROTOCOL.md). Shorter datagrams are left.
pub fn seal(packet: &mut [u8], fix_len: bool, fix_crc: bool) {
    if packet.len() < HEADER_LEN {
        return;
    }
    if fix_len {
        let len = (packet.len() - HEADER_LEN).min(usize::from(u16::MAX)) as u16;
        packet[6..8].copy_from_slice(&len.to_be_bytes());
    }
    if fix_crc {
        let payload_crc = crc32fast::hash(&packet[HEADER_LEN..]);
        let mut h = crc32fast::Hasher::new();
        h.update(&packet[..20]);
        h.update(&payload_crc.to_be_bytes());
        let crc = h.finalize();
        packet[20..24].copy_from_slice(&crc.to_be_bytes());
    }
}

/// A record's bytes as a sealed packet: its header's type, flags, cookie and `seq`, its
/// payload as the plaintext, under `transport`'s next nonce.
pub(crate) fn seal_record(transport: &mut Transport, bytes: &[u8]) -> Vec<u8> {
    let msg_type = MessageType::try_from(bytes[3]).unwrap_or(MessageType::Ack);
    let be = |r: core::ops::Range<usize>| bytes[r].iter().fold(0u64, |a, b| a << 8 | u64::from(*b));
    let header = Header::v2(msg_type, be(4..6) as u16, be(8..16), be(16..20) as u32);
    let plaintext = &bytes[HEADER_LEN..];
    let mut out = vec![0u8; HEADER_LEN + 24 + plaintext.len()];
    match seal_packet(transport, header, plaintext.len(), &mut out, |p| p.copy_from_slice(plaintext)) {
        Ok(n) => out[..n].to_vec(),
        Err(_) => bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdump_core::proto::{Header, HelloAck, HelloStatus, MessageType};

    #[test]
    fn records_roundtrip_and_a_short_tail_is_taken_whole() {
        let recs = vec![(1u8, vec![1, 2, 3]), (2, vec![]), (3, vec![9; 300])];
        let bytes = encode(&recs);
        let back: Vec<(u8, Vec<u8>)> = Records::new(&bytes).map(|(t, b)| (t, b.to_vec())).collect();
        assert_eq!(back, recs);
        let cut: Vec<(u8, usize)> = Records::new(&bytes[..bytes.len() - 10]).map(|(t, b)| (t, b.len())).collect();
        assert_eq!(cut, vec![(1, 3), (2, 0), (3, 290)]);
        assert_eq!(Records::new(&[7]).collect::<Vec<_>>(), vec![(7, &[][..])]);
    }

    #[test]
    fn a_sealed_packet_parses_as_the_protocol_emits_it() {
        let h = Header::v1(MessageType::HelloAck, 0, 42, 7);
        let ack = HelloAck { status: HelloStatus::Registered, max_payload: 1472 };
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf, ack.wire_len(), |p| ack.emit(p)).unwrap();
        let good = buf[..n].to_vec();
        let mut broken = good.clone();
        broken[6..8].fill(0xff);
        broken[20..24].fill(0);
        seal(&mut broken, true, true);
        assert_eq!(broken, good);
        assert!(Header::parse(&broken).is_ok());
    }
}
