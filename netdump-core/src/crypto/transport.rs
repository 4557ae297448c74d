//! The packets after the handshake: ChaCha20-Poly1305 with explicit nonces.

use zeroize::Zeroize;

use super::primitives::{self, Block, noise_nonce};
use super::{CryptoError, KEY_LEN, TAG_LEN};

/// One side's transport keys after the handshake, and its next send nonce.
///
/// Every packet is Noise's `ENCRYPT(k, n, ad, plaintext)` with `n` explicit: the sender
/// puts [`seal`](Self::seal)'s nonce on the wire beside the ciphertext and the tag, and
/// passes the bytes it sends in the clear (the packet's header) as `ad`; the receiver
/// checks the nonce against its [`ReplayWindow`](super::ReplayWindow), then
/// [`open`](Self::open)s, then marks the nonce. A retransmission is sealed again, under a
/// new nonce.
///
/// The client gets it from [`NkInitiator::read_message_2`](super::NkInitiator::read_message_2);
/// the server builds it with [`responder`](Self::responder) from snow's raw split
/// (module documentation). Keys are zeroized when it is dropped.
pub struct Transport {
    send: Block,
    recv: Block,
    next_send_nonce: u64,
}

impl Transport {
    /// The initiator's (the client's) transport from `Split()`'s two keys: it sends
    /// with the first and receives with the second. Nonces start at 0.
    pub fn initiator(initiator_key: [u8; KEY_LEN], responder_key: [u8; KEY_LEN]) -> Self {
        Transport { send: initiator_key, recv: responder_key, next_send_nonce: 0 }
    }

    /// The responder's (the server's) transport from `Split()`'s two keys, in the order
    /// snow's `dangerously_get_raw_split()` returns them: it sends with the second.
    pub fn responder(initiator_key: [u8; KEY_LEN], responder_key: [u8; KEY_LEN]) -> Self {
        Transport { send: responder_key, recv: initiator_key, next_send_nonce: 0 }
    }

    /// A transport from keys and a send nonce saved earlier (with [`send_key`](Self::send_key),
    /// [`recv_key`](Self::recv_key), [`next_send_nonce`](Self::next_send_nonce)).
    ///
    /// Whoever persists a transport must never seal twice under one nonce: save a nonce
    /// at least as high as any used since (a reservation ahead of use, say).
    pub fn from_keys(send: [u8; KEY_LEN], recv: [u8; KEY_LEN], next_send_nonce: u64) -> Self {
        Transport { send, recv, next_send_nonce }
    }

    /// The key this side seals with.
    pub fn send_key(&self) -> &[u8; KEY_LEN] {
        &self.send
    }

    /// The key this side opens with.
    pub fn recv_key(&self) -> &[u8; KEY_LEN] {
        &self.recv
    }

    /// The nonce the next [`seal`](Self::seal) uses.
    pub fn next_send_nonce(&self) -> u64 {
        self.next_send_nonce
    }

    /// Encrypts `buf` in place under the next send nonce, authenticating `ad` too (the
    /// packet's header, sent in the clear); returns the nonce (for the wire) and the tag.
    ///
    /// [`CryptoError::NonceExhausted`] once the nonces are used up (`u64::MAX` is
    /// reserved): the session must end there, `buf` untouched.
    pub fn seal(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<(u64, [u8; TAG_LEN]), CryptoError> {
        let nonce = self.next_send_nonce;
        if nonce == u64::MAX {
            return Err(CryptoError::NonceExhausted);
        }
        let tag = primitives::seal(&self.send, &noise_nonce(nonce), ad, buf)?;
        self.next_send_nonce = nonce + 1;
        Ok((nonce, tag))
    }

    /// Decrypts `buf` in place if `tag` verifies for it under `nonce` and `ad`; else
    /// [`CryptoError::Decrypt`] and `buf` is left as it was. Checks no replay: that is the
    /// caller's [`ReplayWindow`](super::ReplayWindow), marked only after this succeeded.
    pub fn open(&self, nonce: u64, ad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), CryptoError> {
        if nonce == u64::MAX {
            return Err(CryptoError::Decrypt);
        }
        primitives::open(&self.recv, &noise_nonce(nonce), ad, buf, tag)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

impl core::fmt::Debug for Transport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transport").field("next_send_nonce", &self.next_send_nonce).finish_non_exhaustive()
    }
}
