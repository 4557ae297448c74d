//! Encrypted, authenticated dumps: the client's side of a Noise handshake at install and
//! ChaCha20-Poly1305 on every packet after it (feature `encryption`; without it none of
//! this is compiled or linked).
//!
//! # Handshake
//!
//! The pattern is **`Noise_NK_25519_ChaChaPoly_BLAKE2s`** ([Noise], revision 34): the
//! kernel (the initiator) knows the server's static public key, pinned in its
//! configuration ([`PublicKey`], 64 hex digits); the server (the responder, netdumpd with
//! the `snow` crate) has no key for the client.
//!
//! ```text
//! NK:
//!   <- s
//!   ...
//!   -> e, es        message 1, in HELLO:     32-byte ephemeral, payload, 16-byte tag
//!   <- e, ee        message 2, in HELLO_ACK: 32-byte ephemeral, payload, 16-byte tag
//! ```
//!
//! [`NkInitiator`] is a hand-assembled NK initiator (the CipherState, SymmetricState and
//! HandshakeState of the specification's section 5, for this one pattern): HASHLEN 32,
//! HKDF of section 4.3 over HMAC-BLAKE2s, Noise's ChaChaPoly nonce encoding (4 zero bytes
//! and the 64-bit counter little-endian). The prologue binds context both sides must agree
//! on (the protocol's version, the install cookie); a mismatch fails message 2.
//!
//! What it gives: message 1's payload is readable only by the holder of the server's
//! static key (but is not forward secret against that key's later compromise, and is
//! replayable: the server must not act on it beyond answering); message 2 and everything
//! after it are readable only by the client that sent message 1 and, since message 2
//! decrypts only under a key derived from `DH(e, s)`, authenticate the server. The client
//! has no static key, so the server learns nothing about who the client is from the
//! handshake: the protocol's cookie and names do that.
//!
//! [`NkInitiator::read_message_2`] does not consume the initiator: a forged or corrupt
//! HELLO_ACK is rejected and the genuine one can still be read after it. To retransmit a
//! lost HELLO, send message 1's bytes again (writing message 1 twice is refused).
//!
//! # Transport: explicit nonces, the header as associated data
//!
//! After message 2 both sides split the chaining key (Noise's `Split()`) into two
//! ChaCha20-Poly1305 keys, one per direction ([`Transport`]). UDP reorders and loses
//! packets, and a retransmission is a new encryption, so nonces cannot be implicit:
//! every packet carries its 64-bit nonce in the clear, and the receiver keeps a
//! [`ReplayWindow`]. Nonce `u64::MAX` is reserved (Noise section 5.1) and never used.
//!
//! Each packet's header (which the server needs before it can decrypt: the type, the
//! sequence numbers, the nonce itself) is authenticated as AEAD associated data, not
//! encrypted. **`snow`'s transport mode cannot do that**: its `write_message(nonce, ..)` /
//! `read_message(nonce, ..)` always pass empty associated data. So the protocol uses snow
//! for the handshake only; the server takes the two keys with snow's
//! `HandshakeState::dangerously_get_raw_split()` (feature `risky-raw-split`) and runs this
//! module's [`Transport`] ([`Transport::responder`]), so that both sides share one
//! implementation of the packet AEAD. This is exactly Noise's
//! `ENCRYPT(k, n, ad, plaintext)` with an explicit `n`: with empty associated data the
//! packets are byte for byte snow's stateless transport messages (the tests check this),
//! and duplicating the header inside the plaintext instead would cost its length on every
//! packet for nothing.
//!
//! # Packets
//!
//! [`seal_packet`] and [`open_packet`] put the transport on the protocol's packets
//! (docs/PROTOCOL.md, "Sealed packets"): a version-2 header with the `SEALED` flag and a
//! CRC field of 0, then the nonce (8 bytes, big-endian), the ciphertext and the tag; the
//! associated data is the header with its CRC field zero. The AEAD tag replaces the
//! CRC-32 of an unsealed packet.
//!
//! # Footprint and targets
//!
//! No alloc, no `unsafe` here, secrets zeroized on drop (the ephemeral key, the chaining
//! and cipher keys, the transport keys). A kernel that uses all of it (the handshake, the
//! transport, a replay window) grows by about 52 KiB of code, 33 KiB with the portable
//! backends below (the example kernel, release, `opt-level = "s"`). On x86_64 the ChaCha20 and Poly1305 crates pick
//! AVX2 or SSE2 code by CPUID at run time, and curve25519-dalek its backend likewise; a
//! kernel that has not enabled SSE/AVX state (or builds for a soft-float target) selects
//! the portable code with `--cfg chacha20_backend="soft" --cfg poly1305_backend="soft"
//! --cfg curve25519_dalek_backend="serial"` in its RUSTFLAGS.
//!
//! [Noise]: https://noiseprotocol.org/noise.html

mod noise;
mod packet;
mod primitives;
mod replay;
#[cfg(test)]
mod tests;
mod transport;

pub use noise::{Established, NkInitiator};
pub use packet::{OpenError, SEAL_OVERHEAD, open_packet, seal_packet};
pub use replay::ReplayWindow;
pub use transport::Transport;

/// The full Noise protocol name (hashed into the initial handshake state).
pub const PROTOCOL_NAME: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
/// Length of every key here: X25519 keys, ChaCha20-Poly1305 keys, BLAKE2s hashes.
pub const KEY_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of a transport packet's explicit nonce on the wire.
pub const NONCE_LEN: usize = 8;
/// Bytes message 1 adds to its payload: the ephemeral public key and the payload's tag
/// (present even when the payload is empty).
pub const MSG1_OVERHEAD: usize = KEY_LEN + TAG_LEN;
/// Bytes message 2 adds to its payload: the server's ephemeral public key and the tag.
pub const MSG2_OVERHEAD: usize = KEY_LEN + TAG_LEN;
/// Largest handshake message Noise allows (section 3).
pub const MAX_MESSAGE_LEN: usize = 65535;

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The output buffer cannot hold the result.
    BufferTooSmall,
    /// A handshake message is shorter than its fixed part, or longer than
    /// [`MAX_MESSAGE_LEN`].
    BadLength,
    /// Authentication failed: the tag does not verify (tampering, a wrong key, a wrong
    /// prologue, a message of another handshake).
    Decrypt,
    /// A public key is of low order (a Diffie-Hellman result of all zeros).
    InvalidKey,
    /// A handshake step out of order (message 1 written twice, message 2 read first).
    WrongState,
    /// The send nonce reached `u64::MAX`, which is reserved: the session must end.
    NonceExhausted,
    /// A key's text is not 64 hex digits.
    BadKeyText,
}

impl core::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            CryptoError::BufferTooSmall => "buffer too small",
            CryptoError::BadLength => "handshake message of a bad length",
            CryptoError::Decrypt => "authentication failed",
            CryptoError::InvalidKey => "low-order public key",
            CryptoError::WrongState => "handshake step out of order",
            CryptoError::NonceExhausted => "nonces exhausted",
            CryptoError::BadKeyText => "a key is 64 hex digits",
        })
    }
}

/// An X25519 public key: the server's static key, which the client pins.
///
/// Its text form, which the server's key generator prints and the kernel's configuration
/// holds, is 64 hex digits (either case; [`Display`](core::fmt::Display) writes lower
/// case); [`PublicKey::from_hex`] or `str::parse` reads it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses 64 hex digits; ASCII whitespace around them is ignored.
    pub fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let digits = text.trim_ascii().as_bytes();
        if digits.len() != 2 * KEY_LEN {
            return Err(CryptoError::BadKeyText);
        }
        let mut key = [0u8; KEY_LEN];
        for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        Ok(PublicKey(key))
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key's id in HELLO v2: its first [`KEY_ID_LEN`](crate::proto::KEY_ID_LEN)
    /// bytes, by which a server holding several keys picks the one the client pinned.
    pub fn key_id(&self) -> [u8; crate::proto::KEY_ID_LEN] {
        let mut id = [0u8; crate::proto::KEY_ID_LEN];
        id.copy_from_slice(&self.0[..crate::proto::KEY_ID_LEN]);
        id
    }
}

fn hex_digit(c: u8) -> Result<u8, CryptoError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(CryptoError::BadKeyText),
    }
}

impl core::str::FromStr for PublicKey {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, CryptoError> {
        PublicKey::from_hex(s)
    }
}

impl core::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
