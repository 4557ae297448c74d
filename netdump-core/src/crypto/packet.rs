//! Sealed packets (docs/PROTOCOL.md, "Sealed packets"): a version-2 header with
//! [`flags::SEALED`] and CRC 0, then `nonce || ciphertext || tag`; the associated data
//! is the 24 header bytes with the CRC field zero. Both sides seal and open through
//! these two functions.

use super::{CryptoError, ReplayWindow, TAG_LEN, Transport};
use crate::proto::field::sealed;
use crate::proto::{HEADER_LEN, Header, ProtoError, VERSION_2, flags};

/// Bytes sealing adds to a payload: the explicit nonce and the tag.
pub const SEAL_OVERHEAD: usize = sealed::OVERHEAD;

/// The header bytes as associated data: the CRC field (bytes 20..24) zero.
fn associated_data(packet: &[u8]) -> [u8; HEADER_LEN] {
    let mut ad = [0u8; HEADER_LEN];
    ad.copy_from_slice(&packet[..HEADER_LEN]);
    ad[HEADER_LEN - 4..].fill(0);
    ad
}

/// Writes a sealed packet to the start of `buf`: `header` as version 2 with
/// [`flags::SEALED`], then the `plaintext_len` bytes `fill` writes, encrypted under the
/// transport's next send nonce. Returns the packet's length,
/// `HEADER_LEN + SEAL_OVERHEAD + plaintext_len`.
///
/// Fails, using no nonce, when `buf` is short ([`CryptoError::BufferTooSmall`]) or the
/// nonces are used up ([`CryptoError::NonceExhausted`]: the session must end).
pub fn seal_packet(
    transport: &mut Transport,
    header: Header,
    plaintext_len: usize,
    buf: &mut [u8],
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, CryptoError> {
    if transport.next_send_nonce() == u64::MAX {
        return Err(CryptoError::NonceExhausted);
    }
    let header = Header { version: VERSION_2, flags: header.flags | flags::SEALED, ..header };
    let payload_len = sealed::OVERHEAD + plaintext_len;
    let len = header
        .emit(buf, payload_len, |payload| fill(&mut payload[sealed::CIPHERTEXT..sealed::CIPHERTEXT + plaintext_len]))
        .map_err(|_| CryptoError::BufferTooSmall)?;
    let ad = associated_data(buf);
    let payload = &mut buf[HEADER_LEN..len];
    let (nonce_field, rest) = payload.split_at_mut(sealed::CIPHERTEXT);
    let (body, tag_field) = rest.split_at_mut(plaintext_len);
    let (nonce, tag) = transport.seal(&ad, body)?;
    nonce_field.copy_from_slice(&nonce.to_be_bytes());
    tag_field.copy_from_slice(&tag);
    Ok(len)
}

/// Why a sealed packet was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The packet does not parse as a header (see [`Header::parse`]).
    Proto(ProtoError),
    /// Not a sealed packet: in an encrypted session every packet must be.
    Unsealed,
    /// Its nonce was seen already, or is too old to tell ([`ReplayWindow`]).
    Replayed,
    /// The tag does not verify: forged, altered, or of another session.
    BadTag,
    /// `out` cannot hold the plaintext.
    BufferTooSmall,
}

/// Opens the sealed `datagram` into `out`: checks its header, its nonce against
/// `replay`, then its tag; decrypts and only then marks the nonce (a forgery moves
/// nothing). Returns the header and the plaintext payload, a prefix of `out`.
pub fn open_packet<'o>(
    transport: &Transport,
    replay: &mut ReplayWindow,
    datagram: &[u8],
    out: &'o mut [u8],
) -> Result<(Header, &'o [u8]), OpenError> {
    let (header, payload) = Header::parse(datagram).map_err(OpenError::Proto)?;
    if !header.is_sealed() {
        return Err(OpenError::Unsealed);
    }
    // `Header::parse` saw to it that the payload holds a nonce and a tag.
    let nonce = u64::from_be_bytes(payload[sealed::NONCE].try_into().map_err(|_| OpenError::BadTag)?);
    if !replay.check(nonce) {
        return Err(OpenError::Replayed);
    }
    let (ciphertext, tag) = payload[sealed::CIPHERTEXT..].split_at(payload.len() - sealed::OVERHEAD);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError::BadTag)?;
    let body = out.get_mut(..ciphertext.len()).ok_or(OpenError::BufferTooSmall)?;
    body.copy_from_slice(ciphertext);
    transport.open(nonce, &associated_data(datagram), body, tag).map_err(|_| OpenError::BadTag)?;
    replay.mark(nonce);
    Ok((header, body))
}
