//! Noise's SymmetricState (section 5.2) and the HandshakeState of an NK initiator
//! (section 5.3, pattern NK of section 7.4), over the functions of [`super::primitives`].

use x25519_dalek::StaticSecret;
use zeroize::Zeroize;

use super::primitives::{self, Block};
use super::{CryptoError, KEY_LEN, MAX_MESSAGE_LEN, MSG1_OVERHEAD, MSG2_OVERHEAD, PROTOCOL_NAME, PublicKey, TAG_LEN};
use super::{Transport, primitives::noise_nonce};

/// The chaining key, the handshake hash and the CipherState of the handshake.
#[derive(Clone)]
struct SymmetricState {
    ck: Block,
    h: Block,
    /// The CipherState's key, valid once `has_key`.
    k: Block,
    has_key: bool,
    /// The CipherState's nonce (a handshake message uses at most one).
    n: u64,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`: a name longer than HASHLEN is hashed.
    fn new(protocol_name: &str) -> Self {
        let name = protocol_name.as_bytes();
        let h = if name.len() <= KEY_LEN {
            let mut h = [0u8; KEY_LEN];
            h[..name.len()].copy_from_slice(name);
            h
        } else {
            primitives::hash(&[name])
        };
        SymmetricState { ck: h, h, k: [0; KEY_LEN], has_key: false, n: 0 }
    }

    /// `MixHash(a || b)`.
    fn mix_hash(&mut self, a: &[u8], b: &[u8]) {
        self.h = primitives::hash(&[&self.h, a, b]);
    }

    /// `MixKey(input_key_material)`.
    fn mix_key(&mut self, ikm: &Block) {
        let (ck, k) = primitives::hkdf2(&self.ck, ikm);
        self.ck = ck;
        self.k = k;
        self.has_key = true;
        self.n = 0;
    }

    /// `EncryptAndHash(plaintext)`, in place; returns the tag (the second half of the
    /// ciphertext). Before the first `MixKey` the "ciphertext" is the plaintext and the
    /// tag is empty; NK never gets there (`es` precedes the first payload).
    fn encrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        debug_assert!(self.has_key, "NK encrypts every payload");
        let tag = primitives::seal(&self.k, &noise_nonce(self.n), &self.h, buf)?;
        self.n += 1;
        self.mix_hash(buf, &tag);
        Ok(tag)
    }

    /// `DecryptAndHash(ciphertext)`, in place: `buf` and `tag` are the ciphertext.
    fn decrypt_and_hash(&mut self, buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), CryptoError> {
        debug_assert!(self.has_key, "NK encrypts every payload");
        let h = primitives::hash(&[&self.h, buf, tag]);
        primitives::open(&self.k, &noise_nonce(self.n), &self.h, buf, tag)?;
        self.n += 1;
        self.h = h;
        Ok(())
    }

    /// `Split()`: the initiator's sending key and the responder's.
    fn split(&self) -> (Block, Block) {
        primitives::hkdf2(&self.ck, &[])
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.k.zeroize();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Next: write message 1.
    Start,
    /// Message 1 written; next: read message 2.
    SentMessage1,
}

/// The client's side of a `Noise_NK_25519_ChaChaPoly_BLAKE2s` handshake.
///
/// [`new`](Self::new), [`write_message_1`](Self::write_message_1) (into HELLO), then
/// [`read_message_2`](Self::read_message_2) on each HELLO_ACK until one is accepted; its
/// [`Established`] holds the [`Transport`]. Secrets are zeroized when it is dropped.
pub struct NkInitiator {
    sym: SymmetricState,
    e: StaticSecret,
    e_pub: [u8; KEY_LEN],
    rs: [u8; KEY_LEN],
    step: Step,
}

/// What an accepted message 2 yields.
pub struct Established {
    /// Bytes of message 2's payload written to the start of `payload_out`.
    pub payload_len: usize,
    /// The transport keys, the client's way round.
    pub transport: Transport,
    /// The final handshake hash: the same on both sides, a channel binding.
    pub handshake_hash: [u8; KEY_LEN],
}

impl NkInitiator {
    /// A handshake with the server whose static key is `server`, pinned.
    ///
    /// `ephemeral` is this handshake's X25519 secret: 32 bytes from a cryptographically
    /// secure generator (RDRAND in kernels), never reused; the caller should zeroize its
    /// copy. `prologue` is hashed in first: the context both sides must agree on (the
    /// protocol passes its version and the install cookie, say); the server's must equal
    /// it byte for byte or message 2 is rejected.
    pub fn new(server: &PublicKey, ephemeral: [u8; KEY_LEN], prologue: &[u8]) -> Self {
        let mut sym = SymmetricState::new(PROTOCOL_NAME);
        sym.mix_hash(prologue, &[]);
        // The pre-message pattern `<- s`.
        sym.mix_hash(&server.0, &[]);
        let e = StaticSecret::from(ephemeral);
        // `e`'s public key by the Montgomery ladder (as `DH(e, 9)`) rather than
        // `PublicKey::from`'s Edwards arithmetic: the ladder is linked for DH anyway, and
        // the Edwards code would add about 24 KiB for one multiplication per boot.
        let e_pub = e.diffie_hellman(&x25519_dalek::X25519_BASEPOINT_BYTES.into()).to_bytes();
        NkInitiator { sym, e, e_pub, rs: server.0, step: Step::Start }
    }

    /// The handshake hash so far (after message 1, what the server's is after reading it).
    pub fn handshake_hash(&self) -> &[u8; KEY_LEN] {
        &self.sym.h
    }

    /// Writes message 1 (`e, es`, then `payload` encrypted) to the start of `out`;
    /// returns its length, `payload.len() + MSG1_OVERHEAD`.
    ///
    /// Only once ([`CryptoError::WrongState`] after): a retransmission sends the same
    /// bytes again. Fails without changing anything on a short `out`
    /// ([`CryptoError::BufferTooSmall`]), a message over [`MAX_MESSAGE_LEN`]
    /// ([`CryptoError::BadLength`]) or a low-order server key
    /// ([`CryptoError::InvalidKey`]).
    pub fn write_message_1(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        if self.step != Step::Start {
            return Err(CryptoError::WrongState);
        }
        let len = payload.len() + MSG1_OVERHEAD;
        if len > MAX_MESSAGE_LEN {
            return Err(CryptoError::BadLength);
        }
        let out = out.get_mut(..len).ok_or(CryptoError::BufferTooSmall)?;
        let mut es = primitives::dh(&self.e, &self.rs)?;
        // `e`
        let (e, rest) = out.split_at_mut(KEY_LEN);
        e.copy_from_slice(&self.e_pub);
        self.sym.mix_hash(&self.e_pub, &[]);
        // `es`
        self.sym.mix_key(&es);
        es.zeroize();
        // The payload.
        let (body, tag) = rest.split_at_mut(payload.len());
        body.copy_from_slice(payload);
        tag.copy_from_slice(&self.sym.encrypt_and_hash(body)?);
        self.step = Step::SentMessage1;
        Ok(len)
    }

    /// Reads message 2 (`e, ee`, then the encrypted payload): on success the payload is
    /// decrypted to the start of `payload_out` and the session's keys are returned.
    ///
    /// Leaves the initiator as it was, so that a forged, corrupt or stale HELLO_ACK
    /// ([`CryptoError::Decrypt`], [`CryptoError::BadLength`],
    /// [`CryptoError::InvalidKey`]) does not end the handshake: the genuine one can still
    /// be read. `payload_out` needs `msg.len() - MSG2_OVERHEAD` bytes; what it holds
    /// after an error is unspecified. [`CryptoError::WrongState`] before message 1.
    pub fn read_message_2(&self, msg: &[u8], payload_out: &mut [u8]) -> Result<Established, CryptoError> {
        if self.step != Step::SentMessage1 {
            return Err(CryptoError::WrongState);
        }
        if msg.len() < MSG2_OVERHEAD || msg.len() > MAX_MESSAGE_LEN {
            return Err(CryptoError::BadLength);
        }
        let payload_len = msg.len() - MSG2_OVERHEAD;
        let body = payload_out.get_mut(..payload_len).ok_or(CryptoError::BufferTooSmall)?;
        let (re, rest) = msg.split_at(KEY_LEN);
        let (ciphertext, tag) = rest.split_at(payload_len);
        let re: &[u8; KEY_LEN] = re.try_into().map_err(|_| CryptoError::BadLength)?;
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::BadLength)?;

        let mut sym = self.sym.clone();
        // `e`
        sym.mix_hash(re, &[]);
        // `ee`
        let mut ee = primitives::dh(&self.e, re)?;
        sym.mix_key(&ee);
        ee.zeroize();
        // The payload.
        body.copy_from_slice(ciphertext);
        sym.decrypt_and_hash(body, tag)?;
        let (initiator_key, responder_key) = sym.split();
        Ok(Established {
            payload_len,
            transport: Transport::initiator(initiator_key, responder_key),
            handshake_hash: sym.h,
        })
    }
}

impl core::fmt::Debug for NkInitiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NkInitiator").field("step", &self.step).finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Established {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Established").field("payload_len", &self.payload_len).finish_non_exhaustive()
    }
}
