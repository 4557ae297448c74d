//! The encrypted channel of one registered cookie: the responder's side of its Noise NK
//! handshake (with `snow`), then the transport keys, the nonces received (replay window)
//! and the nonces reserved for sending. Kept with the registry, on disk too, so that a
//! restarted netdumpd still opens the client's packets and seals its answers.
//!
//! Nonces are never reused across a restart: the registry writes a reservation
//! ([`NONCE_RESERVATION`] nonces ahead) before a nonce at or beyond the last one written
//! is used, and a restarted server starts sending at the reservation it read.

use netdump_core::crypto::{KEY_LEN, PROTOCOL_NAME, ReplayWindow, Transport};
use netdump_core::proto::{HelloAckV2, HelloTerms, HelloV2, MAX_PROLOGUE};
use serde::{Deserialize, Serialize};

use crate::keys::ServerKey;

/// Send nonces reserved on disk at a time: a registry write per 2^20 packets sent to one
/// client, at most.
pub const NONCE_RESERVATION: u64 = 1 << 20;

/// Length of message 1 with an empty payload, as clients send it.
pub const MESSAGE_1_LEN: usize = 48;

/// One cookie's encrypted channel.
pub struct Channel {
    pub transport: Transport,
    /// Nonces of the client's packets already opened.
    pub replay: ReplayWindow,
    /// Send nonces below this are covered by a reservation on disk.
    pub reserved: u64,
    /// The client's ephemeral key: a HELLO with another is not this handshake.
    pub client_ephemeral: [u8; KEY_LEN],
    /// The HELLO_ACK v2 payload that answered the handshake, sent again, byte for byte,
    /// to a repeated HELLO.
    pub hello_ack: Vec<u8>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("next_send_nonce", &self.transport.next_send_nonce())
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

/// Why a handshake was not answered with message 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Message 1 is not 48 bytes, or did not decrypt under the key (another key with the
    /// same id, a wrong prologue, a damaged message).
    Failed,
}

impl Channel {
    /// Answers the handshake in `hello` (message 1, under `key`, bound to `cookie` and the
    /// HELLO's fields by the prologue) with `terms` as message 2's payload. Returns the
    /// channel, whose `hello_ack` is the whole HELLO_ACK payload to send.
    pub fn accept(
        key: &ServerKey,
        cookie: u64,
        hello: &HelloV2<'_>,
        terms: HelloTerms,
    ) -> Result<Self, HandshakeError> {
        if hello.handshake.len() != MESSAGE_1_LEN {
            return Err(HandshakeError::Failed);
        }
        let mut prologue = [0u8; MAX_PROLOGUE];
        let n = hello.prologue(cookie, &mut prologue);
        let params = PROTOCOL_NAME.parse().map_err(|_| HandshakeError::Failed)?;
        let mut responder = snow::Builder::new(params)
            .local_private_key(key.secret())
            .and_then(|b| b.prologue(&prologue[..n]))
            .and_then(|b| b.build_responder())
            .map_err(|_| HandshakeError::Failed)?;
        let mut payload = [0u8; MESSAGE_1_LEN];
        responder.read_message(hello.handshake, &mut payload).map_err(|_| HandshakeError::Failed)?;
        let mut terms_bytes = [0u8; HelloTerms::WIRE_LEN];
        terms.emit(&mut terms_bytes);
        let mut message_2 = [0u8; 128];
        let len = responder.write_message(&terms_bytes, &mut message_2).map_err(|_| HandshakeError::Failed)?;
        let (initiator_key, responder_key) = responder.dangerously_get_raw_split();
        let ack = HelloAckV2 { terms, handshake: &message_2[..len] };
        let mut hello_ack = vec![0u8; ack.wire_len()];
        ack.emit(&mut hello_ack);
        let mut client_ephemeral = [0u8; KEY_LEN];
        client_ephemeral.copy_from_slice(&hello.handshake[..KEY_LEN]);
        Ok(Channel {
            transport: Transport::responder(initiator_key, responder_key),
            replay: ReplayWindow::new(),
            reserved: NONCE_RESERVATION,
            client_ephemeral,
            hello_ack,
        })
    }

    /// True if `hello` carries the message 1 this channel answered (a repeated HELLO).
    pub fn is_handshake_of(&self, hello: &HelloV2<'_>) -> bool {
        hello.handshake.get(..KEY_LEN) == Some(&self.client_ephemeral[..])
    }

    /// The HELLO_ACK this channel answered its handshake with.
    pub fn hello_ack(&self) -> HelloAckV2<'_> {
        // Emitted by `accept`, so it parses.
        HelloAckV2::parse(&self.hello_ack).unwrap_or(HelloAckV2 {
            terms: HelloTerms {
                status: netdump_core::proto::HelloStatus::HandshakeFailed,
                max_payload: 0,
                features: 0,
                required: 0,
            },
            handshake: &[],
        })
    }

    /// True when the next send nonce is not covered by the reservation on disk: the
    /// registry must write [`reserve`](Self::reserve)'s before sealing.
    pub fn needs_reservation(&self) -> bool {
        self.transport.next_send_nonce() >= self.reserved
    }

    /// Moves the reservation [`NONCE_RESERVATION`] nonces beyond the next send nonce.
    pub fn reserve(&mut self) {
        self.reserved = self.transport.next_send_nonce().saturating_add(NONCE_RESERVATION);
    }

    /// The on-disk form.
    pub fn entry(&self) -> ChannelEntry {
        ChannelEntry {
            send_key: hex(self.transport.send_key()),
            recv_key: hex(self.transport.recv_key()),
            send_nonce_reserved: self.reserved,
            client_ephemeral: hex(&self.client_ephemeral),
            hello_ack: hex(&self.hello_ack),
        }
    }

    /// A channel read back: it sends from its reservation on (nonces below it may have
    /// been used before the restart), and takes every nonce of the client's as new (a
    /// replay of an earlier packet of the session finds its session gone).
    pub fn from_entry(e: &ChannelEntry) -> Result<Self, String> {
        let key = |s: &str| -> Result<[u8; KEY_LEN], String> {
            unhex(s).and_then(|v| v.try_into().ok()).ok_or_else(|| "bad key in channel".to_string())
        };
        Ok(Channel {
            transport: Transport::from_keys(key(&e.send_key)?, key(&e.recv_key)?, e.send_nonce_reserved),
            replay: ReplayWindow::new(),
            reserved: e.send_nonce_reserved,
            client_ephemeral: key(&e.client_ephemeral)?,
            hello_ack: unhex(&e.hello_ack).ok_or_else(|| "bad HELLO_ACK in channel".to_string())?,
        })
    }
}

/// A channel in `clients.json` (written 0600, like every file of netdumpd's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelEntry {
    send_key: String,
    recv_key: String,
    /// No nonce at or above this was used to send.
    send_nonce_reserved: u64,
    client_ephemeral: String,
    hello_ack: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdump_core::crypto::{NkInitiator, seal_packet};
    use netdump_core::proto::{Header, Hello, HelloStatus, MessageType, features};

    fn key() -> ServerKey {
        ServerKey::from_secret("k".into(), [0x42; 32])
    }

    fn hello<'a>(handshake: &'a [u8], name: &'a [u8]) -> HelloV2<'a> {
        HelloV2 {
            hello: Hello {
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                ip: [10, 0, 2, 15],
                page_size: 4096,
                memory_bytes: 1 << 20,
                name,
            },
            features: features::ENCRYPTED,
            key_id: key().public().key_id(),
            handshake,
        }
    }

    const TERMS: HelloTerms =
        HelloTerms { status: HelloStatus::Registered, max_payload: 8972, features: features::ENCRYPTED, required: 0 };

    /// The client's message 1 for `name` under `cookie`.
    fn message_1(cookie: u64, name: &[u8]) -> (NkInitiator, [u8; 48]) {
        let mut prologue = [0u8; MAX_PROLOGUE];
        let n = hello(&[], name).prologue(cookie, &mut prologue);
        let mut init = NkInitiator::new(key().public(), [0x17; 32], &prologue[..n]);
        let mut m1 = [0u8; 48];
        init.write_message_1(&[], &mut m1).unwrap();
        (init, m1)
    }

    #[test]
    fn the_handshake_binds_the_hello_and_its_cookie() {
        let (init, m1) = message_1(7, b"node");
        let channel = Channel::accept(&key(), 7, &hello(&m1, b"node"), TERMS).unwrap();
        let ack = channel.hello_ack();
        assert_eq!(ack.terms, TERMS);
        let mut payload = [0u8; 64];
        let est = init.read_message_2(ack.handshake, &mut payload).unwrap();
        assert_eq!(HelloTerms::parse(&payload[..est.payload_len]), Ok(TERMS));
        // Another cookie, or another name, than message 1 was made for: refused.
        assert_eq!(Channel::accept(&key(), 8, &hello(&m1, b"node"), TERMS).unwrap_err(), HandshakeError::Failed);
        assert_eq!(Channel::accept(&key(), 7, &hello(&m1, b"evil"), TERMS).unwrap_err(), HandshakeError::Failed);
        assert!(Channel::accept(&key(), 7, &hello(&m1[..40], b"node"), TERMS).is_err());
        assert!(channel.is_handshake_of(&hello(&m1, b"node")));
        assert!(!channel.is_handshake_of(&hello(&[0; 48], b"node")));
    }

    #[test]
    fn a_channel_read_back_seals_beyond_its_reservation_and_opens_the_clients_packets() {
        let (init, m1) = message_1(7, b"node");
        let mut channel = Channel::accept(&key(), 7, &hello(&m1, b"node"), TERMS).unwrap();
        assert!(!channel.needs_reservation());
        let mut payload = [0u8; 64];
        let mut client = init.read_message_2(channel.hello_ack().handshake, &mut payload).unwrap().transport;
        let mut buf = [0u8; 128];
        let header = Header::v2(MessageType::Ack, 0, 7, 0);
        for _ in 0..3 {
            seal_packet(&mut channel.transport, header, 4, &mut buf, |p| p.fill(0)).unwrap();
        }
        let entry = serde_json::to_string(&channel.entry()).unwrap();
        let back = Channel::from_entry(&serde_json::from_str(&entry).unwrap()).unwrap();
        assert_eq!(back.transport.next_send_nonce(), NONCE_RESERVATION, "a restart sends from the reservation");
        assert!(back.needs_reservation(), "and writes a new one before its first packet");
        assert_eq!(back.hello_ack, channel.hello_ack);
        // The restarted channel opens what the client seals.
        let n = seal_packet(&mut client, Header::v2(MessageType::Data, 0, 7, 0), 17, &mut buf, |p| p.fill(3)).unwrap();
        let mut out = [0u8; 64];
        let mut replay = ReplayWindow::new();
        let (_, plain) = netdump_core::crypto::open_packet(&back.transport, &mut replay, &buf[..n], &mut out).unwrap();
        assert_eq!(plain, &[3; 17]);
        let mut back = back;
        back.reserve();
        assert_eq!(back.reserved, 2 * NONCE_RESERVATION);
        assert!(!back.needs_reservation());
    }
}
