//! Noise's functions for `25519_ChaChaPoly_BLAKE2s` (specification sections 4 and 12),
//! over the RustCrypto and dalek crates.

use blake2::Blake2s256;
use blake2::digest::{Digest, KeyInit, Mac};
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Key, Nonce, Tag};
use hmac::SimpleHmac;
use zeroize::Zeroize;

use super::{CryptoError, KEY_LEN, TAG_LEN};

/// A BLAKE2s-256 output (HASHLEN), a chaining key or a cipher key.
pub(crate) type Block = [u8; KEY_LEN];

/// `HASH` (BLAKE2s-256) of the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> Block {
    let mut h = Blake2s256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// `HMAC-HASH(key, a || b)` (RFC 2104 over BLAKE2s, 64-byte blocks). `SimpleHmac`:
/// BLAKE2 buffers lazily (its last block is final), which `Hmac` cannot wrap.
fn hmac2(key: &Block, a: &[u8], b: &[u8]) -> Block {
    let mut mac = <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(a);
    mac.update(b);
    mac.finalize().into_bytes().into()
}

/// `HKDF(chaining_key, input_key_material, 2)` of section 4.3.
pub(crate) fn hkdf2(chaining_key: &Block, ikm: &[u8]) -> (Block, Block) {
    let mut temp_key = hmac2(chaining_key, ikm, &[]);
    let out1 = hmac2(&temp_key, &[0x01], &[]);
    let out2 = hmac2(&temp_key, &out1, &[0x02]);
    temp_key.zeroize();
    (out1, out2)
}

/// The 96-bit ChaChaPoly nonce of a 64-bit Noise nonce: 4 zero bytes, then `n` little-endian.
pub(crate) fn noise_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce
}

/// ChaCha20-Poly1305 (RFC 8439) encryption of `buf` in place; returns the tag.
pub(crate) fn seal(key: &Block, nonce: &[u8; 12], ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    // The only error is a message longer than ChaCha20's keystream (256 GiB).
    let tag = aead.encrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into()).map_err(|_| CryptoError::BadLength)?;
    Ok(tag.into())
}

/// ChaCha20-Poly1305 decryption of `buf` in place if `tag` verifies (else `buf` is left
/// as it was: the tag is checked before anything is decrypted).
pub(crate) fn open(
    key: &Block,
    nonce: &[u8; 12],
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    let aead = ChaCha20Poly1305::new(&Key::from(*key));
    aead.decrypt_inout_detached(&Nonce::from(*nonce), ad, buf.into(), &Tag::from(*tag))
        .map_err(|_| CryptoError::Decrypt)
}

/// `DH(secret, public)`: X25519, refusing a low-order `public` (an all-zero result).
pub(crate) fn dh(secret: &x25519_dalek::StaticSecret, public: &[u8; KEY_LEN]) -> Result<Block, CryptoError> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(CryptoError::InvalidKey);
    }
    Ok(shared.to_bytes())
}
