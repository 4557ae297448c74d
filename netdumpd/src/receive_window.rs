//! Which DATA sequence numbers have arrived, and the stream CRC over them in `seq`
//! order, without buffering any data.
//!
//! The cumulative point is the lowest `seq` not yet received. The stream CRC (CRC-32 of
//! the payload CRCs, docs/PROTOCOL.md FINISH) of everything below it is kept as one
//! running value; a packet that arrives beyond it is remembered only as its payload's
//! (CRC, length) until the gap before it fills, then folded in. The client keeps at most 512 packets in flight, so that map stays small;
//! [`ReceiveWindow::MAX_AHEAD`] bounds it against a misbehaving one.

use netdump_core::proto::StreamCrc;
use std::collections::BTreeMap;

/// How a DATA `seq` relates to what has already arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// Not seen before and within reach: write it, then [`ReceiveWindow::record`] it.
    New,
    /// Already received (a retransmission whose ACK was lost, or a duplicated datagram).
    Duplicate,
    /// So far beyond the cumulative point that tracking it would let a peer grow the
    /// server's memory; dropped, the client will send it again.
    TooFarAhead,
}

#[derive(Debug, Clone)]
pub struct ReceiveWindow {
    /// Lowest `seq` not yet received.
    cumulative: u64,
    /// CRC and length of the payloads of every `seq` below `cumulative`, in order.
    prefix: StreamCrc,
    /// Received packets beyond the cumulative point: `seq → (payload CRC, payload length)`.
    ahead: BTreeMap<u64, u32>,
    /// Payload bytes of every distinct packet received.
    payload_bytes: u64,
    /// Packets beyond the cumulative point forgotten by [`release`](Self::release).
    released: u64,
}

impl Default for ReceiveWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiveWindow {
    /// How far beyond the cumulative point a `seq` may be and still be tracked: twice
    /// the largest client window.
    pub const MAX_AHEAD: u64 = 1024;
    /// Bits in the largest selective-ack bitmap (64 bytes).
    pub const SACK_BITS: usize = 64 * 8;

    pub fn new() -> Self {
        ReceiveWindow { cumulative: 0, prefix: StreamCrc::new(), ahead: BTreeMap::new(), payload_bytes: 0, released: 0 }
    }

    pub fn status(&self, seq: u32) -> SeqStatus {
        let seq = u64::from(seq);
        if seq < self.cumulative || self.ahead.contains_key(&seq) {
            SeqStatus::Duplicate
        } else if seq - self.cumulative >= Self::MAX_AHEAD {
            SeqStatus::TooFarAhead
        } else {
            SeqStatus::New
        }
    }

    /// Records the arrival of `seq`, whose DATA payload (sub-header included) has CRC
    /// `crc` and `len` bytes. A `seq` that is not [`SeqStatus::New`] is ignored.
    pub fn record(&mut self, seq: u32, crc: u32, len: u64) {
        if self.status(seq) != SeqStatus::New {
            return;
        }
        self.payload_bytes += len;
        let seq = u64::from(seq);
        if seq != self.cumulative {
            self.ahead.insert(seq, crc);
            return;
        }
        self.prefix.add(crc);
        self.cumulative += 1;
        while let Some(crc) = self.ahead.remove(&self.cumulative) {
            self.prefix.add(crc);
            self.cumulative += 1;
        }
    }

    /// The cumulative ack: every `seq` below it has arrived.
    pub fn cumulative(&self) -> u64 {
        self.cumulative
    }

    /// The value for the ACK's 32-bit `seq` field.
    pub fn cumulative_ack(&self) -> u32 {
        u32::try_from(self.cumulative).unwrap_or(u32::MAX)
    }

    /// The seq after the highest that has arrived: one beyond it opens a gap.
    pub fn next_in_order(&self) -> u64 {
        self.ahead.keys().next_back().map_or(self.cumulative, |&seq| seq + 1)
    }

    /// Whether any packet beyond the cumulative point has arrived.
    pub fn has_gaps(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// Number of distinct packets received.
    pub fn packets(&self) -> u64 {
        self.cumulative + self.ahead.len() as u64 + self.released
    }

    /// Forgets the packets beyond the cumulative point once the dump has ended (nothing
    /// more is taken), keeping their count.
    pub fn release(&mut self) {
        self.released += self.ahead.len() as u64;
        self.ahead = BTreeMap::new();
    }

    /// Payload bytes of every distinct packet received.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// CRC-32 of the payload CRCs (big-endian) of `seq` `0..cumulative`, in order.
    pub fn stream_crc(&self) -> u32 {
        self.prefix.value()
    }

    /// Writes the selective-ack bitmap into `out` (bit *i* ⇔ `cumulative + 1 + i` has
    /// arrived, least significant bit first) and returns its length in bytes: the
    /// fewest bytes that hold every set bit, at most `out.len()`.
    pub fn sack_bitmap(&self, out: &mut [u8]) -> usize {
        out.fill(0);
        let bits = (out.len() * 8) as u64;
        let mut len = 0;
        for &seq in self.ahead.keys() {
            let i = seq - self.cumulative - 1;
            if i >= bits {
                break;
            }
            let byte = (i / 8) as usize;
            out[byte] |= 1 << (i % 8);
            len = byte + 1;
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u32) -> Vec<u8> {
        (0..100 + seq).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq as u8)).collect()
    }

    fn receive(w: &mut ReceiveWindow, seq: u32) -> SeqStatus {
        let p = payload(seq);
        let status = w.status(seq);
        w.record(seq, crc32fast::hash(&p), p.len() as u64);
        status
    }

    fn stream_crc(n: u32) -> u32 {
        let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
        StreamCrc::of_payloads(payloads.iter().map(|p| &p[..]))
    }

    #[test]
    fn in_order_arrival_advances_the_cumulative_point() {
        let mut w = ReceiveWindow::new();
        for seq in 0..10 {
            assert_eq!(receive(&mut w, seq), SeqStatus::New);
            assert_eq!(w.cumulative(), u64::from(seq) + 1);
        }
        assert_eq!(w.stream_crc(), stream_crc(10));
        assert!(!w.has_gaps());
    }

    #[test]
    fn out_of_order_arrival_gives_the_in_order_crc() {
        let mut w = ReceiveWindow::new();
        for seq in [3, 1, 7, 0, 2, 6, 5, 4, 9, 8] {
            receive(&mut w, seq);
        }
        assert_eq!(w.cumulative(), 10);
        assert_eq!(w.stream_crc(), stream_crc(10));
        assert_eq!(w.packets(), 10);
    }

    #[test]
    fn duplicates_change_nothing() {
        let mut w = ReceiveWindow::new();
        for seq in [0, 2, 0, 2, 1, 1] {
            receive(&mut w, seq);
        }
        assert_eq!(w.cumulative(), 3);
        assert_eq!(w.stream_crc(), stream_crc(3));
        assert_eq!(w.payload_bytes(), (0..3).map(|s| payload(s).len() as u64).sum::<u64>());
        assert_eq!(w.status(1), SeqStatus::Duplicate);
    }

    #[test]
    fn a_gap_holds_the_cumulative_point() {
        let mut w = ReceiveWindow::new();
        for seq in [0, 1, 3, 4] {
            receive(&mut w, seq);
        }
        assert_eq!(w.cumulative(), 2);
        assert_eq!(w.stream_crc(), stream_crc(2));
        assert!(w.has_gaps());
    }

    #[test]
    fn sack_bitmap_marks_packets_beyond_the_cumulative_point() {
        let mut w = ReceiveWindow::new();
        for seq in [0, 2, 3, 10] {
            receive(&mut w, seq);
        }
        // cumulative = 1; bit i ⇔ seq 2 + i.
        let mut out = [0xffu8; 64];
        let len = w.sack_bitmap(&mut out);
        assert_eq!(len, 2);
        assert_eq!(out[0], 0b0000_0011);
        assert_eq!(out[1], 0b0000_0001);
        assert!(out[2..].iter().all(|b| *b == 0));
    }

    #[test]
    fn empty_sack_bitmap_has_length_zero() {
        let mut w = ReceiveWindow::new();
        receive(&mut w, 0);
        let mut out = [0u8; 64];
        assert_eq!(w.sack_bitmap(&mut out), 0);
    }

    #[test]
    fn sack_bitmap_is_bounded_by_its_buffer() {
        let mut w = ReceiveWindow::new();
        receive(&mut w, 600);
        receive(&mut w, 5);
        let mut out = [0u8; 64];
        assert_eq!(w.sack_bitmap(&mut out), 1);
        assert_eq!(out[0], 1 << 4);
    }

    #[test]
    fn sequence_numbers_far_ahead_are_refused() {
        let mut w = ReceiveWindow::new();
        assert_eq!(w.status(ReceiveWindow::MAX_AHEAD as u32 - 1), SeqStatus::New);
        assert_eq!(w.status(ReceiveWindow::MAX_AHEAD as u32), SeqStatus::TooFarAhead);
        assert_eq!(w.status(u32::MAX), SeqStatus::TooFarAhead);
        w.record(u32::MAX, 0, 1);
        assert_eq!(w.packets(), 0);
    }
}
