//! Known answers for the primitives, and the handshake and transport against `snow`.

use super::primitives::{self, noise_nonce};
use super::*;

const PATTERN: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"netdump 2\0cookie";

fn hex<const N: usize>(s: &str) -> [u8; N] {
    let s: String = s.split_whitespace().collect();
    assert_eq!(s.len(), 2 * N, "{s}");
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A server key pair, fixed: secret and public.
fn server_keys(seed: u8) -> ([u8; 32], PublicKey) {
    let secret = [seed; 32];
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
    (secret, PublicKey(public))
}

fn responder(secret: &[u8; 32], prologue: &[u8]) -> snow::HandshakeState {
    snow::Builder::new(PATTERN.parse().unwrap())
        .local_private_key(secret)
        .unwrap()
        .prologue(prologue)
        .unwrap()
        .build_responder()
        .unwrap()
}

// ---------------------------------------------------------------- primitives

#[test]
fn x25519_rfc7748_section_6_1() {
    let alice = hex::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_pub = hex::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob = hex::<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_pub = hex::<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = hex::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    let (a, b) = (x25519_dalek::StaticSecret::from(alice), x25519_dalek::StaticSecret::from(bob));
    assert_eq!(x25519_dalek::PublicKey::from(&a).to_bytes(), alice_pub);
    assert_eq!(x25519_dalek::PublicKey::from(&b).to_bytes(), bob_pub);
    assert_eq!(primitives::dh(&a, &bob_pub).unwrap(), shared);
    assert_eq!(primitives::dh(&b, &alice_pub).unwrap(), shared);
    // A low-order point (here 0, and 1) makes an all-zero secret: refused.
    assert_eq!(primitives::dh(&a, &[0; 32]), Err(CryptoError::InvalidKey));
    let mut one = [0u8; 32];
    one[0] = 1;
    assert_eq!(primitives::dh(&a, &one), Err(CryptoError::InvalidKey));
}

#[test]
fn chacha20_poly1305_rfc8439_section_2_8_2() {
    let key = hex::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = hex::<12>("070000004041424344454647");
    let ad = hex::<12>("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let ciphertext = hex::<114>(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
    );
    let tag = hex::<16>("1ae10b594f09e26a7e902ecbd0600691");
    let mut buf = *plaintext;
    assert_eq!(primitives::seal(&key, &nonce, &ad, &mut buf).unwrap(), tag);
    assert_eq!(buf, ciphertext);
    primitives::open(&key, &nonce, &ad, &mut buf, &tag).unwrap();
    assert_eq!(&buf, plaintext);
    // Noise's nonce encoding: 32 zero bits, then the counter little-endian.
    assert_eq!(noise_nonce(0x4746_4544_4342_4140), hex::<12>("000000004041424344454647"));
}

#[test]
fn blake2s_rfc7693_appendix_b() {
    let abc = hex::<32>("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
    assert_eq!(primitives::hash(&[b"abc"]), abc);
    assert_eq!(primitives::hash(&[b"a", b"", b"bc"]), abc);
}

/// HMAC from its definition (RFC 2104), over BLAKE2s alone.
fn reference_hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for i in 0..32 {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    let inner = primitives::hash(&[&ipad, data]);
    primitives::hash(&[&opad, &inner])
}

#[test]
fn hkdf_matches_its_definition_over_hmac_blake2s() {
    let ck = hex::<32>("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    for ikm in [&b""[..], &[0xab; 32], &[0x5a; 100]] {
        let temp = reference_hmac(&ck, ikm);
        let out1 = reference_hmac(&temp, &[1]);
        let mut second = out1.to_vec();
        second.push(2);
        let out2 = reference_hmac(&temp, &second);
        assert_eq!(primitives::hkdf2(&ck, ikm), (out1, out2));
    }
}

// ---------------------------------------------------------------- the handshake

/// Message 1 is byte for byte snow's, given the same ephemeral key.
#[test]
fn message_1_equals_snows_initiator() {
    let (_, server) = server_keys(0x42);
    let ephemeral = [0x17; 32];
    for payload in [&b""[..], b"HELLO: netdump 2, client kernel-1"] {
        let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
        let mut ours = NkInitiator::new(&server, ephemeral, PROLOGUE);
        let n = ours.write_message_1(payload, &mut a).unwrap();
        let mut theirs = snow::Builder::new(PATTERN.parse().unwrap())
            .remote_public_key(&server.0)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(&ephemeral)
            .build_initiator()
            .unwrap();
        let m = theirs.write_message(payload, &mut b).unwrap();
        assert_eq!(n, payload.len() + MSG1_OVERHEAD);
        assert_eq!(a[..n], b[..m]);
        assert_eq!(ours.handshake_hash()[..], *theirs.get_handshake_hash());
    }
    // Writing message 1 twice is refused; so is reading message 2 before it.
    let mut ours = NkInitiator::new(&server, ephemeral, PROLOGUE);
    let mut out = [0u8; 64];
    assert_eq!(ours.read_message_2(&[0; 48], &mut out).unwrap_err(), CryptoError::WrongState);
    ours.write_message_1(b"", &mut out).unwrap();
    assert_eq!(ours.write_message_1(b"", &mut out), Err(CryptoError::WrongState));
}

/// A full handshake against snow's responder: our initiator's session, and snow's
/// responder (finished).
struct Handshake {
    client: Established,
    server: snow::HandshakeState,
}

fn handshake(payload_1: &[u8], payload_2: &[u8]) -> Handshake {
    let (secret, server_pub) = server_keys(0x42);
    let mut client = NkInitiator::new(&server_pub, [0x99; 32], PROLOGUE);
    let mut server = responder(&secret, PROLOGUE);

    let mut msg1 = [0u8; 256];
    let len1 = client.write_message_1(payload_1, &mut msg1).unwrap();
    let mut got1 = [0u8; 256];
    let n = server.read_message(&msg1[..len1], &mut got1).unwrap();
    assert_eq!(&got1[..n], payload_1);
    assert_eq!(client.handshake_hash()[..], *server.get_handshake_hash());

    let mut msg2 = [0u8; 256];
    let len2 = server.write_message(payload_2, &mut msg2).unwrap();
    assert_eq!(len2, payload_2.len() + MSG2_OVERHEAD);
    let mut got2 = [0u8; 256];
    let client = client.read_message_2(&msg2[..len2], &mut got2).unwrap();
    assert_eq!(&got2[..client.payload_len], payload_2);
    assert!(server.is_handshake_finished());
    Handshake { client, server }
}

#[test]
fn handshake_against_snow_agrees_on_hash_and_keys() {
    for (p1, p2) in [(&b""[..], &b""[..]), (b"HELLO payload", b"HELLO_ACK payload, a little longer")] {
        let Handshake { client, mut server } = handshake(p1, p2);
        // The handshake hash covers every MixHash; snow's raw split every MixKey (HKDF).
        assert_eq!(client.handshake_hash[..], *server.get_handshake_hash());
        let (k1, k2) = server.dangerously_get_raw_split();
        assert_eq!(client.transport.send_key(), &k1);
        assert_eq!(client.transport.recv_key(), &k2);
    }
}

/// With empty associated data our packets are snow's stateless transport messages, both
/// ways, nonces explicit and out of order.
#[test]
fn transport_interoperates_with_snows_stateless_transport() {
    let Handshake { client, server } = handshake(b"hi", b"ho");
    let mut client = client.transport;
    let server = server.into_stateless_transport_mode().unwrap();

    // Client to server: seal in place, snow reads ciphertext || tag under the nonce.
    let mut sealed = Vec::new();
    for i in 0..5u8 {
        let mut buf = [i; 40];
        let (nonce, tag) = client.seal(&[], &mut buf).unwrap();
        assert_eq!(nonce, u64::from(i));
        sealed.push((nonce, [&buf[..], &tag[..]].concat()));
    }
    for (nonce, wire) in sealed.iter().rev() {
        let mut out = [0u8; 64];
        let n = server.read_message(*nonce, wire, &mut out).unwrap();
        assert_eq!(out[..n], [*nonce as u8; 40]);
    }

    // Server to client: snow writes under explicit nonces, out of order.
    for nonce in [7u64, 3, 1000, 4] {
        let plain = nonce.to_le_bytes().repeat(3);
        let mut wire = [0u8; 64];
        let n = server.write_message(nonce, &plain, &mut wire).unwrap();
        let (body, tag) = wire[..n].split_at_mut(n - TAG_LEN);
        client.open(nonce, &[], body, &<[u8; TAG_LEN]>::try_from(&*tag).unwrap()).unwrap();
        assert_eq!(*body, plain[..]);
        // The same packet under another nonce does not open.
        let mut again = [0u8; 64];
        let n = server.write_message(nonce, &plain, &mut again).unwrap();
        let (body, tag) = again[..n].split_at_mut(n - TAG_LEN);
        assert_eq!(
            client.open(nonce + 1, &[], body, &<[u8; TAG_LEN]>::try_from(&*tag).unwrap()),
            Err(CryptoError::Decrypt)
        );
    }
}

/// The protocol's way: the server takes snow's raw split into a responder [`Transport`],
/// and every packet's header is associated data.
#[test]
fn transport_with_associated_data_both_ways() {
    let Handshake { client, mut server } = handshake(b"", b"");
    let mut client = client.transport;
    let (k1, k2) = server.dangerously_get_raw_split();
    let mut server = Transport::responder(k1, k2);
    let header = *b"ND\x02\x10header-bytes";

    let mut buf = *b"a page of the crashed kernel's memory";
    let (nonce, tag) = client.seal(&header, &mut buf).unwrap();
    assert_ne!(&buf, b"a page of the crashed kernel's memory");
    // Anything changed in the header, the body, the tag or the nonce: refused, untouched.
    let mut bad_header = header;
    bad_header[3] ^= 1;
    let mut bad_body = buf;
    bad_body[5] ^= 0x80;
    let mut bad_tag = tag;
    bad_tag[15] ^= 1;
    let original = buf;
    assert_eq!(server.open(nonce, &bad_header, &mut buf, &tag), Err(CryptoError::Decrypt));
    assert_eq!(buf, original);
    assert_eq!(server.open(nonce, &header, &mut bad_body, &tag), Err(CryptoError::Decrypt));
    assert_eq!(server.open(nonce, &header, &mut buf, &bad_tag), Err(CryptoError::Decrypt));
    assert_eq!(server.open(nonce + 1, &header, &mut buf, &tag), Err(CryptoError::Decrypt));
    assert_eq!(server.open(nonce, &[], &mut buf, &tag), Err(CryptoError::Decrypt));
    // A packet cannot be reflected back to its sender: the directions' keys differ.
    assert_eq!(client.open(nonce, &header, &mut buf, &tag), Err(CryptoError::Decrypt));
    assert_eq!(buf, original);
    server.open(nonce, &header, &mut buf, &tag).unwrap();
    assert_eq!(&buf, b"a page of the crashed kernel's memory");

    // And back: the server's nonces count on their own.
    let mut ack = *b"ACK 0";
    let (nonce, tag) = server.seal(&header, &mut ack).unwrap();
    assert_eq!(nonce, 0);
    client.open(nonce, &header, &mut ack, &tag).unwrap();
    assert_eq!(&ack, b"ACK 0");
}

#[test]
fn wrong_server_key_or_prologue_fails() {
    let (secret, server_pub) = server_keys(0x42);
    let (other_secret, other_pub) = server_keys(0x43);
    let mut msg1 = [0u8; 128];
    let mut out = [0u8; 128];

    // A server with another key cannot read message 1.
    let mut client = NkInitiator::new(&server_pub, [1; 32], PROLOGUE);
    let len1 = client.write_message_1(b"secret", &mut msg1).unwrap();
    assert!(responder(&other_secret, PROLOGUE).read_message(&msg1[..len1], &mut out).is_err());

    // A client that pinned another key (an impostor's: the impostor answers) fails on
    // message 2 from a server that answers a different handshake with its own key...
    let mut impostor_client = NkInitiator::new(&other_pub, [2; 32], PROLOGUE);
    let mut impostor = responder(&other_secret, PROLOGUE);
    let mut msg1b = [0u8; 128];
    let n = impostor_client.write_message_1(b"", &mut msg1b).unwrap();
    impostor.read_message(&msg1b[..n], &mut out).unwrap();
    let mut forged = [0u8; 128];
    let len = impostor.write_message(b"welcome", &mut forged).unwrap();
    assert_eq!(client.read_message_2(&forged[..len], &mut out).unwrap_err(), CryptoError::Decrypt);

    // ...and a server that got message 1 under another prologue cannot read it either.
    assert!(responder(&secret, b"netdump 1").read_message(&msg1[..len1], &mut out).is_err());

    // The genuine message 2 is still accepted after the forged one.
    let mut server = responder(&secret, PROLOGUE);
    server.read_message(&msg1[..len1], &mut out).unwrap();
    let mut msg2 = [0u8; 128];
    let len2 = server.write_message(b"welcome", &mut msg2).unwrap();
    // Tampered: each part, and truncations, fail; none consumes the initiator.
    for i in [0, 31, 32, 38, len2 - 1] {
        let mut bad = msg2;
        bad[i] ^= 0x01;
        assert!(client.read_message_2(&bad[..len2], &mut out).is_err(), "byte {i}");
    }
    assert_eq!(client.read_message_2(&msg2[..len2 - 1], &mut out).unwrap_err(), CryptoError::Decrypt);
    assert_eq!(client.read_message_2(&msg2[..MSG2_OVERHEAD - 1], &mut out).unwrap_err(), CryptoError::BadLength);
    assert_eq!(client.read_message_2(&msg2[..len2], &mut [0u8; 6]).unwrap_err(), CryptoError::BufferTooSmall);
    // An ephemeral of low order.
    let mut low = msg2;
    low[..32].fill(0);
    assert_eq!(client.read_message_2(&low[..len2], &mut out).unwrap_err(), CryptoError::InvalidKey);
    let done = client.read_message_2(&msg2[..len2], &mut out).unwrap();
    assert_eq!(&out[..done.payload_len], b"welcome");
    assert_eq!(done.handshake_hash[..], *server.get_handshake_hash());
}

#[test]
fn message_1_errors_change_nothing() {
    let (secret, server_pub) = server_keys(0x42);
    let mut client = NkInitiator::new(&server_pub, [3; 32], PROLOGUE);
    let mut small = [0u8; MSG1_OVERHEAD + 2];
    assert_eq!(client.write_message_1(b"abc", &mut small), Err(CryptoError::BufferTooSmall));
    let big = vec![0u8; MAX_MESSAGE_LEN];
    assert_eq!(client.write_message_1(&big, &mut vec![0u8; 2 * MAX_MESSAGE_LEN]), Err(CryptoError::BadLength));
    // Still usable, and still right.
    let mut msg1 = [0u8; 64];
    let n = client.write_message_1(b"abc", &mut msg1).unwrap();
    let mut out = [0u8; 64];
    assert_eq!(responder(&secret, PROLOGUE).read_message(&msg1[..n], &mut out).unwrap(), 3);
    // A low-order server key is refused at message 1.
    let mut bad = NkInitiator::new(&PublicKey([0; 32]), [3; 32], PROLOGUE);
    assert_eq!(bad.write_message_1(b"", &mut msg1), Err(CryptoError::InvalidKey));
}

// ---------------------------------------------------------------- nonces

#[test]
fn nonce_exhaustion_is_refused() {
    let mut t = Transport::from_keys([1; 32], [2; 32], u64::MAX - 1);
    let mut buf = *b"last";
    assert_eq!(t.seal(b"h", &mut buf).unwrap().0, u64::MAX - 1);
    let mut buf2 = *b"more";
    assert_eq!(t.seal(b"h", &mut buf2), Err(CryptoError::NonceExhausted));
    assert_eq!(&buf2, b"more");
    assert_eq!(t.next_send_nonce(), u64::MAX);
    // Nor is the reserved nonce ever opened.
    let peer = Transport::from_keys([2; 32], [1; 32], 0);
    let tag = primitives::seal(&[1; 32], &noise_nonce(u64::MAX), b"h", &mut buf2).unwrap();
    assert_eq!(peer.open(u64::MAX, b"h", &mut buf2, &tag), Err(CryptoError::Decrypt));
}

#[test]
fn replay_window() {
    let mut w = ReplayWindow::new();
    assert_eq!(w.highest(), None);
    // Check alone marks nothing.
    assert!(w.check(5));
    assert!(w.check(5));
    assert_eq!(w.highest(), None);
    assert!(w.check_and_mark(5));
    assert!(!w.check(5), "duplicate");
    assert!(!w.check_and_mark(5));
    // Reordering within the window: lower nonces, once each.
    assert!(w.check_and_mark(0));
    assert!(w.check_and_mark(3));
    assert!(!w.check_and_mark(3));
    assert!(w.check(4));
    assert_eq!(w.highest(), Some(5));

    // A jump: the window follows; the edge is exact.
    let top = 10_000;
    w.mark(top);
    assert_eq!(w.highest(), Some(top));
    let oldest = top - ReplayWindow::WINDOW + 1;
    assert!(w.check(oldest));
    assert!(!w.check(oldest - 1), "too old");
    assert!(!w.check(5));
    // Bits of nonces that left the window do not shadow the ones that entered.
    assert!(w.check(top - 1) && w.check(top - ReplayWindow::WINDOW + 5));
    assert!(w.check_and_mark(oldest));
    assert!(!w.check(oldest));
    // A mark of a refused nonce changes nothing.
    w.mark(oldest - 1);
    assert_eq!(w.highest(), Some(top));

    // Step by step across several windows: every nonce once, duplicates refused.
    let mut w = ReplayWindow::new();
    for n in 0..3 * ReplayWindow::WINDOW {
        assert!(w.check_and_mark(n), "{n}");
        assert!(!w.check(n));
        if n >= ReplayWindow::WINDOW {
            assert!(!w.check(n - ReplayWindow::WINDOW));
            assert!(!w.check(n - ReplayWindow::WINDOW + 1), "{n}: seen, still in the window");
        }
    }
    // Nonces skipped then caught up in a shuffled order.
    let mut w = ReplayWindow::new();
    let order = [100u64, 2, 99, 50, 101, 0, 1, 1, 100, 2047 + 100, 100, 101, 102];
    // After the jump to 2147, nonce 100 is the oldest in the window (and was seen); 102
    // was never seen.
    let want = [true, true, true, true, true, true, true, false, false, true, false, false, true];
    for (n, ok) in order.iter().zip(want) {
        assert_eq!(w.check_and_mark(*n), ok, "{n}");
    }
    assert!(!w.check(u64::MAX));
    assert!(w.check(u64::MAX - 1));
}

#[test]
fn public_key_text() {
    let (_, key) = server_keys(7);
    let text = key.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<PublicKey>(), Ok(key));
    assert_eq!(PublicKey::from_hex(&format!("  {}\n", text.to_uppercase())), Ok(key));
    assert_eq!(PublicKey::from_hex(&text[1..]), Err(CryptoError::BadKeyText));
    assert_eq!(PublicKey::from_hex(&format!("{text}0")), Err(CryptoError::BadKeyText));
    assert_eq!(PublicKey::from_hex(&format!("g{}", &text[1..])), Err(CryptoError::BadKeyText));
    assert_eq!(PublicKey::from_hex(&"é".repeat(32)), Err(CryptoError::BadKeyText));
}

// ---------------------------------------------------------------- sealed packets

use crate::proto::{Decision, DecisionReason, Header, Message, MessageType, ProtoError, Verdict, flags};

/// A DECISION (DUMP_ALL, max payload 1472) sealed under key 0x11… with nonce 5, cookie
/// 0x0102030405060708, seq 3; computed independently with Python's `cryptography`
/// (ChaCha20Poly1305, nonce = 4 zero bytes and 5 little-endian, AD = the 24 header bytes).
#[rustfmt::skip]
const SEALED_DECISION: [u8; 56] = [
    0x4e, 0x44, 0x02, 0x82, 0x00, 0x04, 0x00, 0x20, // magic, version 2, DECISION, SEALED, payload 32
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // cookie
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, // seq 3, CRC 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // nonce 5
    0xd0, 0xb5, 0x03, 0x25, 0x24, 0xc6, 0x90, 0xd8, // ciphertext
    0xcf, 0xad, 0xe9, 0x91, 0x93, 0x05, 0x19, 0x07, // tag
    0x95, 0xf5, 0xbf, 0x31, 0x13, 0x4a, 0x31, 0xae,
];

const SEALED_DECISION_PLAINTEXT: [u8; 8] = [0, 0, 0, 0, 0, 0, 0x05, 0xc0];
const DECISION: Decision = Decision { verdict: Verdict::DumpAll, why: DecisionReason::None, max_payload: 1472 };

fn server_side() -> Transport {
    Transport::from_keys([0x11; 32], [0x22; 32], 5)
}

fn client_side() -> Transport {
    Transport::from_keys([0x22; 32], [0x11; 32], 0)
}

fn seal_decision(t: &mut Transport, buf: &mut [u8]) -> usize {
    let m = Message::Decision(DECISION);
    let header = Header::v1(MessageType::Decision, 0, 0x0102_0304_0506_0708, 3);
    seal_packet(t, header, m.wire_len(), buf, |p| m.emit(p)).unwrap()
}

#[test]
fn a_sealed_packet_has_the_documented_bytes_and_opens_to_its_message() {
    let mut buf = [0u8; 128];
    let n = seal_decision(&mut server_side(), &mut buf);
    assert_eq!(buf[..n], SEALED_DECISION);
    let mut replay = ReplayWindow::new();
    let mut out = [0u8; 64];
    let (h, plain) = open_packet(&client_side(), &mut replay, &SEALED_DECISION, &mut out).unwrap();
    assert_eq!(h, Header::v2(MessageType::Decision, flags::SEALED, 0x0102_0304_0506_0708, 3));
    assert_eq!(Message::parse_from_server(&h, plain), Ok(Message::Decision(DECISION)));
    assert_eq!(replay.highest(), Some(5));
}

#[test]
fn every_bit_flip_of_a_sealed_packet_outside_the_crc_field_is_refused_and_moves_no_window() {
    let mut out = [0u8; 64];
    for bit in 0..SEALED_DECISION.len() * 8 {
        let mut p = SEALED_DECISION;
        p[bit / 8] ^= 1 << (bit % 8);
        let mut replay = ReplayWindow::new();
        if (20..24).contains(&(bit / 8)) {
            // The CRC field is not checked (the associated data has it zero): it carries
            // nothing, and the packet is the same message.
            let (_, plain) = open_packet(&client_side(), &mut replay, &p, &mut out).unwrap();
            assert_eq!(plain, &SEALED_DECISION_PLAINTEXT);
            continue;
        }
        let r = open_packet(&client_side(), &mut replay, &p, &mut out);
        assert!(r.is_err(), "bit {bit} flipped was accepted");
        assert_eq!(replay.highest(), None, "bit {bit}: a refused packet marked its nonce");
        // Flips that keep the header parseable and sealed reach the tag, which refuses them.
        let byte = bit / 8;
        if byte >= 24 || (8..20).contains(&byte) {
            assert_eq!(r.unwrap_err(), OpenError::BadTag, "bit {bit}");
        }
    }
}

#[test]
fn a_replayed_sealed_packet_is_refused_and_a_retransmission_takes_a_new_nonce() {
    let mut server = server_side();
    let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
    let n = seal_decision(&mut server, &mut a);
    let m = seal_decision(&mut server, &mut b);
    assert_ne!(a[24..32], b[24..32], "the same message sealed twice uses two nonces");
    assert_ne!(a[32..n], b[32..m], "and so two ciphertexts");
    let client = client_side();
    let (mut replay, mut out) = (ReplayWindow::new(), [0u8; 64]);
    assert!(open_packet(&client, &mut replay, &a[..n], &mut out).is_ok());
    assert_eq!(open_packet(&client, &mut replay, &a[..n], &mut out).unwrap_err(), OpenError::Replayed);
    assert!(open_packet(&client, &mut replay, &b[..m], &mut out).is_ok());
    assert_eq!(open_packet(&client, &mut replay, &b[..m], &mut out).unwrap_err(), OpenError::Replayed);
}

#[test]
fn a_packet_of_another_session_or_direction_does_not_open() {
    let mut buf = [0u8; 128];
    let n = seal_decision(&mut server_side(), &mut buf);
    let mut out = [0u8; 64];
    // The sender's own receive key (the other direction), and another session's key.
    let other_direction = Transport::from_keys([0x11; 32], [0x22; 32], 0);
    let other_session = Transport::from_keys([0x33; 32], [0x44; 32], 0);
    for t in [other_direction, other_session] {
        assert_eq!(open_packet(&t, &mut ReplayWindow::new(), &buf[..n], &mut out), Err(OpenError::BadTag));
    }
    // Another cookie in the header (the tag covers it).
    buf[15] ^= 0xff;
    assert_eq!(open_packet(&client_side(), &mut ReplayWindow::new(), &buf[..n], &mut out), Err(OpenError::BadTag));
}

#[test]
fn an_unsealed_packet_is_not_opened_and_a_short_one_is_truncated() {
    let mut buf = [0u8; 128];
    let n = Message::Decision(DECISION).emit_packet(2, 0, 1, 3, &mut buf).unwrap();
    let mut out = [0u8; 64];
    assert_eq!(open_packet(&client_side(), &mut ReplayWindow::new(), &buf[..n], &mut out), Err(OpenError::Unsealed));
    let short = Header::v2(MessageType::Decision, flags::SEALED, 1, 3).emit(&mut buf, 23, |_| {}).unwrap();
    assert_eq!(
        open_packet(&client_side(), &mut ReplayWindow::new(), &buf[..short], &mut out),
        Err(OpenError::Proto(ProtoError::Truncated))
    );
    // Too long a plaintext for the receiver's buffer: refused, not truncated.
    let n = seal_decision(&mut server_side(), &mut buf);
    assert_eq!(
        open_packet(&client_side(), &mut ReplayWindow::new(), &buf[..n], &mut out[..4]),
        Err(OpenError::BufferTooSmall)
    );
}

#[test]
fn sealing_stops_at_the_last_nonce_and_never_reuses_one() {
    let mut t = Transport::from_keys([0x11; 32], [0x22; 32], u64::MAX - 1);
    let mut buf = [0u8; 128];
    let n = seal_decision(&mut t, &mut buf);
    assert_eq!(buf[24..32], (u64::MAX - 1).to_be_bytes());
    let before = buf;
    let header = Header::v1(MessageType::Decision, 0, 1, 3);
    assert_eq!(seal_packet(&mut t, header, 8, &mut buf, |p| p.fill(1)), Err(CryptoError::NonceExhausted));
    assert_eq!(buf, before, "an exhausted transport writes nothing");
    assert_eq!(t.next_send_nonce(), u64::MAX);
    // A receiver never accepts the reserved nonce either.
    let mut forged = before;
    forged[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
    let mut out = [0u8; 64];
    assert_eq!(open_packet(&client_side(), &mut ReplayWindow::new(), &forged[..n], &mut out), Err(OpenError::Replayed));
    // A short buffer fails without using a nonce.
    let mut t = server_side();
    assert_eq!(seal_packet(&mut t, header, 100, &mut buf[..50], |_| {}), Err(CryptoError::BufferTooSmall));
    assert_eq!(t.next_send_nonce(), 5);
}
