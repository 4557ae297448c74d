//! One repr per message type of docs/PROTOCOL.md. `parse` takes the payload (after the
//! header); `emit` writes exactly `wire_len()` bytes, whose layout [`super::field`]
//! names. [`Repr`] ties each repr to its message type.

use super::bytes::{Reader, Writer};
use super::field;
use super::{
    Field, Header, MAX_CPUS, MAX_FRAMES, MAX_NAME, MAX_RANGES, MAX_SACK_BYTES, MAX_TEXT, Machine, MessageType,
    ProtoError, VERSION_1, VERSION_2,
};

/// A message body: its type, its length on the wire, how it is written and read.
pub trait Repr<'a>: Sized {
    /// The header's `type` for this body.
    const TYPE: MessageType;
    /// Parses a payload (after the header).
    fn parse(payload: &'a [u8]) -> Result<Self, ProtoError>;
    /// Bytes [`emit`](Self::emit) writes.
    fn wire_len(&self) -> usize;
    /// Writes exactly `wire_len()` bytes at the start of `out`.
    fn emit(&self, out: &mut [u8]);
}

/// Implements [`Repr`] by the inherent `parse`, `wire_len` and `emit` of each body.
macro_rules! repr {
    ($($ty:ident $(<$l:lifetime>)? => $t:ident),+ $(,)?) => {$(
        impl<'a> Repr<'a> for $ty $(<$l>)? {
            const TYPE: MessageType = MessageType::$t;
            fn parse(payload: &'a [u8]) -> Result<Self, ProtoError> {
                $ty::parse(payload)
            }
            fn wire_len(&self) -> usize {
                $ty::wire_len(self)
            }
            fn emit(&self, out: &mut [u8]) {
                $ty::emit(self, out)
            }
        }
    )+};
}

repr!(
    Hello<'a> => Hello,
    HelloV2<'a> => Hello,
    HelloAck => HelloAck,
    HelloAckV2<'a> => HelloAck,
    Crash<'a> => Crash,
    Decision => Decision,
    Data<'a> => Data,
    Ack<'a> => Ack,
    Finish => Finish,
    FinishAck => FinishAck,
    Abort<'a> => Abort,
    ServerError<'a> => Error,
);

/// ABORT: the client gives up (a [`TextMessage`] with an [`abort_reason`] code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort<'a>(pub TextMessage<'a>);

/// ERROR: the server refuses a packet (a [`TextMessage`] with an [`error_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerError<'a>(pub TextMessage<'a>);

impl<'a> Abort<'a> {
    /// Parses an ABORT payload (see [`TextMessage::parse`]).
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        TextMessage::parse(p).map(Abort)
    }
    /// Payload bytes: 4 plus the text (at most [`MAX_TEXT`]).
    pub fn wire_len(&self) -> usize {
        self.0.wire_len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes.
    pub fn emit(&self, out: &mut [u8]) {
        self.0.emit(out)
    }
}

impl<'a> ServerError<'a> {
    /// Parses an ERROR payload (see [`TextMessage::parse`]).
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        TextMessage::parse(p).map(ServerError)
    }
    /// Payload bytes: 4 plus the text (at most [`MAX_TEXT`]).
    pub fn wire_len(&self) -> usize {
        self.0.wire_len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes.
    pub fn emit(&self, out: &mut [u8]) {
        self.0.emit(out)
    }
}

/// A parsed payload of any type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// [`MessageType::Hello`], version 1.
    Hello(Hello<'a>),
    /// [`MessageType::Hello`], version 2.
    HelloV2(HelloV2<'a>),
    /// [`MessageType::HelloAck`], version 1.
    HelloAck(HelloAck),
    /// [`MessageType::HelloAck`], version 2.
    HelloAckV2(HelloAckV2<'a>),
    /// [`MessageType::Crash`].
    Crash(Crash<'a>),
    /// [`MessageType::Decision`].
    Decision(Decision),
    /// [`MessageType::Data`].
    Data(Data<'a>),
    /// [`MessageType::Ack`].
    Ack(Ack<'a>),
    /// [`MessageType::Finish`].
    Finish(Finish),
    /// [`MessageType::FinishAck`].
    FinishAck(FinishAck),
    /// [`MessageType::Abort`]: an [`abort_reason`] code and text.
    Abort(TextMessage<'a>),
    /// [`MessageType::Error`]: an [`error_code`] and text.
    Error(TextMessage<'a>),
}

/// A parsed payload of a type only clients send (what a server dispatches on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// [`MessageType::Hello`], version 1.
    Hello(Hello<'a>),
    /// [`MessageType::Hello`], version 2.
    HelloV2(HelloV2<'a>),
    /// [`MessageType::Crash`].
    Crash(Crash<'a>),
    /// [`MessageType::Data`].
    Data(Data<'a>),
    /// [`MessageType::Finish`].
    Finish(Finish),
    /// [`MessageType::Abort`]: an [`abort_reason`] code and text.
    Abort(TextMessage<'a>),
}

impl<'a> Message<'a> {
    /// Parses the payload of a packet whose header has already been validated (and, for
    /// a sealed packet, the plaintext once opened). HELLO and HELLO_ACK are read in the
    /// header's version; the other messages are the same in both.
    pub fn parse(header: &Header, payload: &'a [u8]) -> Result<Self, ProtoError> {
        let v2 = header.version == VERSION_2;
        Ok(match header.msg_type {
            MessageType::Hello if v2 => Message::HelloV2(HelloV2::parse(payload)?),
            MessageType::Hello => Message::Hello(Hello::parse(payload)?),
            MessageType::HelloAck if v2 => Message::HelloAckV2(HelloAckV2::parse(payload)?),
            MessageType::HelloAck => Message::HelloAck(HelloAck::parse(payload)?),
            MessageType::Crash => Message::Crash(Crash::parse(payload)?),
            MessageType::Decision => Message::Decision(Decision::parse(payload)?),
            MessageType::Data => Message::Data(Data::parse(payload)?),
            MessageType::Ack => Message::Ack(Ack::parse(payload)?),
            MessageType::Finish => Message::Finish(Finish::parse(payload)?),
            MessageType::FinishAck => Message::FinishAck(FinishAck::parse(payload)?),
            MessageType::Abort => Message::Abort(TextMessage::parse(payload)?),
            MessageType::Error => Message::Error(TextMessage::parse(payload)?),
        })
    }

    /// [`parse`](Self::parse) for the client: only what a server sends. A client
    /// message type is an error here, and the client links none of their parsers.
    pub fn parse_from_server(header: &Header, payload: &'a [u8]) -> Result<Self, ProtoError> {
        Ok(match header.msg_type {
            MessageType::HelloAck if header.version == VERSION_2 => Message::HelloAckV2(HelloAckV2::parse(payload)?),
            MessageType::HelloAck => Message::HelloAck(HelloAck::parse(payload)?),
            MessageType::Decision => Message::Decision(Decision::parse(payload)?),
            MessageType::Ack => Message::Ack(Ack::parse(payload)?),
            MessageType::FinishAck => Message::FinishAck(FinishAck::parse(payload)?),
            MessageType::Error => Message::Error(TextMessage::parse(payload)?),
            MessageType::Hello | MessageType::Crash | MessageType::Data | MessageType::Finish | MessageType::Abort => {
                return Err(ProtoError::BadField(Field::MsgType));
            }
        })
    }

    /// [`parse`](Self::parse) for the server: only what a client sends, as a
    /// [`ClientMessage`]. A server message type is an error here.
    pub fn parse_from_client(header: &Header, payload: &'a [u8]) -> Result<ClientMessage<'a>, ProtoError> {
        Ok(match header.msg_type {
            MessageType::Hello if header.version == VERSION_2 => ClientMessage::HelloV2(HelloV2::parse(payload)?),
            MessageType::Hello => ClientMessage::Hello(Hello::parse(payload)?),
            MessageType::Crash => ClientMessage::Crash(Crash::parse(payload)?),
            MessageType::Data => ClientMessage::Data(Data::parse(payload)?),
            MessageType::Finish => ClientMessage::Finish(Finish::parse(payload)?),
            MessageType::Abort => ClientMessage::Abort(TextMessage::parse(payload)?),
            MessageType::HelloAck
            | MessageType::Decision
            | MessageType::Ack
            | MessageType::FinishAck
            | MessageType::Error => return Err(ProtoError::BadField(Field::MsgType)),
        })
    }

    /// The header's `type` for this message.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Hello(_) | Message::HelloV2(_) => MessageType::Hello,
            Message::HelloAck(_) | Message::HelloAckV2(_) => MessageType::HelloAck,
            Message::Crash(_) => MessageType::Crash,
            Message::Decision(_) => MessageType::Decision,
            Message::Data(_) => MessageType::Data,
            Message::Ack(_) => MessageType::Ack,
            Message::Finish(_) => MessageType::Finish,
            Message::FinishAck(_) => MessageType::FinishAck,
            Message::Abort(_) => MessageType::Abort,
            Message::Error(_) => MessageType::Error,
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn wire_len(&self) -> usize {
        match self {
            Message::Hello(m) => m.wire_len(),
            Message::HelloV2(m) => m.wire_len(),
            Message::HelloAck(m) => m.wire_len(),
            Message::HelloAckV2(m) => m.wire_len(),
            Message::Crash(m) => m.wire_len(),
            Message::Decision(m) => m.wire_len(),
            Message::Data(m) => m.wire_len(),
            Message::Ack(m) => m.wire_len(),
            Message::Finish(m) => m.wire_len(),
            Message::FinishAck(m) => m.wire_len(),
            Message::Abort(m) | Message::Error(m) => m.wire_len(),
        }
    }

    /// Writes the payload, exactly `wire_len()` bytes.
    pub fn emit(&self, out: &mut [u8]) {
        match self {
            Message::Hello(m) => m.emit(out),
            Message::HelloV2(m) => m.emit(out),
            Message::HelloAck(m) => m.emit(out),
            Message::HelloAckV2(m) => m.emit(out),
            Message::Crash(m) => m.emit(out),
            Message::Decision(m) => m.emit(out),
            Message::Data(m) => m.emit(out),
            Message::Ack(m) => m.emit(out),
            Message::Finish(m) => m.emit(out),
            Message::FinishAck(m) => m.emit(out),
            Message::Abort(m) | Message::Error(m) => m.emit(out),
        }
    }

    /// The version this message exists in only, if it is one of those (HELLO and
    /// HELLO_ACK differ between versions; the others are the same in both).
    pub fn only_in_version(&self) -> Option<u8> {
        match self {
            Message::Hello(_) | Message::HelloAck(_) => Some(VERSION_1),
            Message::HelloV2(_) | Message::HelloAckV2(_) => Some(VERSION_2),
            _ => None,
        }
    }

    /// Writes a whole unsealed packet (a `version` header with this message's type,
    /// payload, CRC) into `buf`; returns its length. HELLO and HELLO_ACK go in the
    /// version they exist in, whatever `version` says.
    pub fn emit_packet(
        &self,
        version: u8,
        flags: u16,
        cookie: u64,
        seq: u32,
        buf: &mut [u8],
    ) -> Result<usize, ProtoError> {
        let version = self.only_in_version().unwrap_or(version);
        let header = Header { version, msg_type: self.msg_type(), flags, cookie, seq };
        header.emit(buf, self.wire_len(), |p| self.emit(p))
    }
}

/// Declares a `u8`/`u16` wire enum with `TryFrom` that rejects unknown values, the list
/// of its values and the name of each (as `info.json` and logs write it).
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident : $repr:ty { $($(#[$vm:meta])* $variant:ident = $val:expr => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name { $($(#[$vm])* $variant = $val),+ }
        impl TryFrom<$repr> for $name {
            type Error = ProtoError;
            fn try_from(v: $repr) -> Result<Self, ProtoError> {
                match v {
                    $($val => Ok($name::$variant),)+
                    _ => Err(ProtoError::BadField(Field::$name)),
                }
            }
        }
        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The value's name in snake case.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

/// A client name is 1..=64 bytes of `[A-Za-z0-9._-]` beginning with a letter or digit
/// (it becomes a directory name and a hook argument).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        // Not an option to the programs (hooks, scripts) it is handed to, nor a hidden
        // or relative path.
        && name[0].is_ascii_alphanumeric()
}

/// HELLO: install-time registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The client NIC's MAC address.
    pub mac: [u8; 6],
    /// The client NIC's MTU, bytes.
    pub mtu: u16,
    /// The client's IPv4 address.
    pub ip: [u8; 4],
    /// The client's page size, bytes.
    pub page_size: u32,
    /// Bytes of RAM the client will announce at most: the sum of its RAM ranges. The server
    /// refuses the memory of a CRASH that announces more.
    pub memory_bytes: u64,
    /// The client's name, 1..=[`MAX_NAME`] bytes; [`valid_name`] says which are allowed
    /// (parsing does not check it; the server refuses an invalid name in HELLO_ACK).
    pub name: &'a [u8],
}

impl<'a> Hello<'a> {
    /// Parses a HELLO payload: the fixed fields and exactly `name_len` bytes of name, and
    /// nothing after them.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let hello = Self::read(&mut r)?;
        r.finish()?;
        Ok(hello)
    }
    fn read(r: &mut Reader<'a>) -> Result<Self, ProtoError> {
        Ok(Hello {
            mac: r.array()?,
            mtu: r.u16()?,
            ip: r.array()?,
            page_size: r.u32()?,
            memory_bytes: r.u64()?,
            name: {
                let n = r.u8()? as usize;
                r.bytes(n)?
            },
        })
    }
    /// Payload bytes: 25 plus the name.
    pub fn wire_len(&self) -> usize {
        field::hello::NAME + self.name.len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes. `name` must be at most 255 bytes (its length is
    /// one byte on the wire); [`MAX_NAME`] keeps it well below.
    pub fn emit(&self, out: &mut [u8]) {
        // The fixed fields into an array of their size first: every bounds check of the
        // writer is then decided at compile time.
        let mut fixed = [0u8; field::hello::NAME];
        Writer::new(&mut fixed)
            .bytes(&self.mac)
            .u16(self.mtu)
            .bytes(&self.ip)
            .u32(self.page_size)
            .u64(self.memory_bytes)
            .u8(self.name.len() as u8);
        Writer::new(out).bytes(&fixed).bytes(self.name);
    }
}

wire_enum!(
    /// HELLO_ACK status. Version 1 uses 0 and 1 only.
    HelloStatus: u8 {
        /// The server knows the client's cookie and name; it may crash.
        Registered = 0 => "registered",
        /// The name is not valid ([`valid_name`]); the client is not registered (also a
        /// version-1 HELLO refused because the server requires encryption).
        Refused = 1 => "refused",
        /// The server requires encryption and the HELLO did not ask for it.
        EncryptionRequired = 2 => "encryption_required",
        /// The HELLO's `key_id` names no key the server holds.
        UnknownKey = 3 => "unknown_key",
        /// Message 1 of the handshake did not verify (another key of the same id, or a
        /// damaged message).
        HandshakeFailed = 4 => "handshake_failed",
        /// The HELLO asked for a feature the server cannot grant (encryption from a server
        /// without keys).
        FeatureUnsupported = 5 => "feature_unsupported",
    }
);

/// Feature bits of version 2, as HELLO asks for them and HELLO_ACK grants and requires
/// them. The registry: each issue that adds a feature takes the next free bit here and
/// documents it in docs/PROTOCOL.md; a receiver ignores bits it does not know, and a
/// server grants only bits it knows.
pub mod features {
    /// Every packet after the handshake is sealed (Noise NK handshake in HELLO /
    /// HELLO_ACK, ChaCha20-Poly1305 per packet).
    pub const ENCRYPTED: u32 = 1 << 0;
    /// DATA may carry LZ4 blocks ([`Encoding::Lz4`](super::Encoding::Lz4)): asked for by a
    /// client built with `compression`, granted by every server that knows it.
    pub const COMPRESSED: u32 = 1 << 1;
    /// Unsealed packets may carry the XXH64 check instead of CRC-32
    /// ([`flags::CHECK_XXH64`](crate::proto::flags::CHECK_XXH64), docs/PROTOCOL.md
    /// "Integrity checks"). Not asked for in an encrypted session, whose AEAD tags
    /// replace the checks.
    pub const XXH64_CHECK: u32 = 1 << 2;
    /// Page filtering: the client leaves out pages of the classes its configuration
    /// excludes and reports them as excluded runs in the `EXCLUDED` section
    /// ([`ExcludedRun`](super::ExcludedRun)). A client filters only when this is granted.
    pub const FILTER: u32 = 1 << 3;
    /// Failover: the client lists further dump servers and moves on to the next when
    /// this one is silent or cannot take its dump; the server may then answer CRASH with
    /// [`Verdict::Abort`](super::Verdict::Abort) and
    /// [`DecisionReason::TryElsewhere`](super::DecisionReason::TryElsewhere) (unless the
    /// CRASH carries [`LAST_SERVER`](crate::proto::flags::LAST_SERVER)) where it would
    /// otherwise take part of the dump or none.
    pub const FAILOVER: u32 = 1 << 4;
    /// Every bit this version of the code knows.
    pub const KNOWN: u32 = ENCRYPTED | COMPRESSED | XXH64_CHECK | FILTER | FAILOVER;
}

/// Length of the server key id in HELLO v2: the first bytes of the pinned public key.
pub const KEY_ID_LEN: usize = 8;
/// What the Noise prologue of a HELLO v2 begins with (then the cookie, then the HELLO
/// payload up to `handshake_len`).
pub const PROLOGUE_LABEL: &[u8] = b"netdump 2\0";
/// Longest prologue: the label, the cookie, and the longest HELLO v2 before its handshake.
pub const MAX_PROLOGUE: usize =
    PROLOGUE_LABEL.len() + 8 + field::hello::NAME + MAX_NAME + field::hello_v2::HANDSHAKE_LEN.start;

/// HELLO in version 2: the version-1 registration, the features asked for, the pinned
/// key's id and the first handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloV2<'a> {
    /// The version-1 fields.
    pub hello: Hello<'a>,
    /// [`features`] asked for.
    pub features: u32,
    /// The first [`KEY_ID_LEN`] bytes of the server public key the client pinned (zero
    /// when not encrypting).
    pub key_id: [u8; KEY_ID_LEN],
    /// Noise NK message 1 when [`features::ENCRYPTED`], else empty.
    pub handshake: &'a [u8],
}

impl<'a> HelloV2<'a> {
    /// Parses a HELLO v2 payload: the version-1 fields, the tail, exactly
    /// `handshake_len` bytes of handshake and nothing after them.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let hello = Hello::read(&mut r)?;
        let features = r.u32()?;
        let key_id = r.array()?;
        let handshake = {
            let n = r.u16()? as usize;
            r.bytes(n)?
        };
        r.finish()?;
        Ok(HelloV2 { hello, features, key_id, handshake })
    }
    /// Bytes before `handshake_len`: what the Noise prologue binds.
    pub fn bound_len(&self) -> usize {
        self.hello.wire_len() + field::hello_v2::HANDSHAKE_LEN.start
    }
    /// Payload bytes.
    pub fn wire_len(&self) -> usize {
        self.hello.wire_len() + field::hello_v2::HANDSHAKE + self.handshake.len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes; `handshake` at most 65535 bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let n = self.hello.wire_len();
        self.hello.emit(&mut out[..n]);
        Writer::new(&mut out[n..])
            .u32(self.features)
            .bytes(&self.key_id)
            .u16(self.handshake.len() as u16)
            .bytes(self.handshake);
    }
    /// The Noise prologue of this HELLO under `cookie`, written to the start of `out`
    /// (at least [`MAX_PROLOGUE`] bytes): [`PROLOGUE_LABEL`], the cookie (big-endian), then
    /// the payload up to `handshake_len`. Returns its length.
    pub fn prologue(&self, cookie: u64, out: &mut [u8]) -> usize {
        let label = PROLOGUE_LABEL.len();
        out[..label].copy_from_slice(PROLOGUE_LABEL);
        out[label..label + 8].copy_from_slice(&cookie.to_be_bytes());
        let start = label + 8;
        let mut payload = [0u8; field::hello::NAME + MAX_NAME + field::hello_v2::HANDSHAKE];
        let body = HelloV2 { handshake: &[], ..*self };
        body.emit(&mut payload);
        let bound = self.bound_len().min(payload.len());
        out[start..start + bound].copy_from_slice(&payload[..bound]);
        start + bound
    }
}

/// What the server agreed to in a HELLO_ACK v2: its first 16 bytes, which message 2's
/// payload repeats so that an encrypted client reads them authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloTerms {
    /// Whether the client is registered, or why not.
    pub status: HelloStatus,
    /// Largest UDP payload the server accepts, bytes.
    pub max_payload: u32,
    /// [`features`] granted.
    pub features: u32,
    /// [`features`] the server requires of every client.
    pub required: u32,
}

impl HelloTerms {
    /// Bytes on the wire.
    pub const WIRE_LEN: usize = field::hello_ack_v2::TERMS.end;
    /// Parses exactly [`Self::WIRE_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let terms = Self::read(&mut r)?;
        r.finish()?;
        Ok(terms)
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let status = HelloStatus::try_from(r.u8()?)?;
        r.bytes(3)?;
        Ok(HelloTerms { status, max_payload: r.u32()?, features: r.u32()?, required: r.u32()? })
    }
    /// Writes [`Self::WIRE_LEN`] bytes at the start of `out`.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u8(self.status as u8).zeros(3).u32(self.max_payload).u32(self.features).u32(self.required);
    }
}

/// HELLO_ACK in version 2: the terms in the clear, then the second handshake message
/// (whose payload is the terms again, authenticated, when encrypted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAckV2<'a> {
    /// The terms, in the clear (an encrypted client uses message 2's copy instead).
    pub terms: HelloTerms,
    /// Noise NK message 2 when encrypted, else empty.
    pub handshake: &'a [u8],
}

impl<'a> HelloAckV2<'a> {
    /// Parses a HELLO_ACK v2 payload.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let terms = HelloTerms::read(&mut r)?;
        let handshake = {
            let n = r.u16()? as usize;
            r.bytes(n)?
        };
        r.finish()?;
        Ok(HelloAckV2 { terms, handshake })
    }
    /// Payload bytes.
    pub fn wire_len(&self) -> usize {
        field::hello_ack_v2::HANDSHAKE + self.handshake.len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes.
    pub fn emit(&self, out: &mut [u8]) {
        self.terms.emit(out);
        Writer::new(&mut out[HelloTerms::WIRE_LEN..]).u16(self.handshake.len() as u16).bytes(self.handshake);
    }
}

/// HELLO_ACK: the server registered the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    /// Whether the client is registered.
    pub status: HelloStatus,
    /// Largest UDP payload the server accepts, bytes: the client sends no larger datagram.
    pub max_payload: u32,
}

impl HelloAck {
    /// Payload bytes (fixed).
    pub const WIRE_LEN: usize = field::hello_ack::LEN;
    /// Parses a HELLO_ACK payload of exactly [`Self::WIRE_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let status = HelloStatus::try_from(r.u8()?)?;
        r.bytes(3)?;
        let ack = HelloAck { status, max_payload: r.u32()? };
        r.finish()?;
        Ok(ack)
    }
    /// [`Self::WIRE_LEN`].
    pub fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    /// Writes the payload at the start of `out`, which must hold [`Self::WIRE_LEN`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u8(self.status as u8).zeros(3).u32(self.max_payload);
    }
}

wire_enum!(
    /// What killed the kernel.
    CrashKind: u8 {
        /// A Rust panic.
        Panic = 1 => "panic",
        /// A fatal CPU exception; CRASH carries its vector and error code.
        Exception = 2 => "exception",
        /// Asked for, with the kernel still sound (e.g. a debug key).
        Requested = 3 => "requested",
    }
);

/// A RAM range of the client: dumped, and one PT_LOAD in the vmcore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryRange {
    /// Physical address of the first byte; page-aligned.
    pub phys_start: u64,
    /// Bytes in the range; a non-zero multiple of the page size.
    pub length: u64,
    /// Where the client's kernel maps `phys_start` (equal to it for an identity map).
    pub virt_start: u64,
}

impl MemoryRange {
    /// Bytes of one range on the wire: three u64.
    pub const WIRE_LEN: usize = field::crash::RANGE_LEN;
    /// Physical address one past the last byte (saturating at `u64::MAX`).
    pub fn phys_end(&self) -> u64 {
        self.phys_start.saturating_add(self.length)
    }
    /// True if the `len` bytes at `phys` lie wholly inside the range.
    pub fn contains(&self, phys: u64, len: u64) -> bool {
        phys >= self.phys_start && phys.checked_add(len).is_some_and(|end| end <= self.phys_end())
    }
}

/// The RAM ranges of a CRASH: borrowed from the wire when parsed, from the client's
/// memory map when emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeTable<'a> {
    /// As parsed: `range_count` records of [`MemoryRange::WIRE_LEN`] bytes.
    Wire(&'a [u8]),
    /// As the client holds them.
    Ranges(&'a [MemoryRange]),
}

impl<'a> RangeTable<'a> {
    /// Number of ranges.
    pub fn len(&self) -> usize {
        match self {
            RangeTable::Wire(b) => b.len() / MemoryRange::WIRE_LEN,
            RangeTable::Ranges(r) => r.len(),
        }
    }
    /// True if there are no ranges (never the case in a parsed CRASH).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Range `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<MemoryRange> {
        match self {
            RangeTable::Ranges(r) => r.get(i).copied(),
            RangeTable::Wire(b) => {
                let rec = b.get(i * MemoryRange::WIRE_LEN..(i + 1) * MemoryRange::WIRE_LEN)?;
                let mut r = Reader::new(rec);
                Some(MemoryRange { phys_start: r.u64().ok()?, length: r.u64().ok()?, virt_start: r.u64().ok()? })
            }
        }
    }
    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = MemoryRange> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// The code addresses of the crashing stack in a CRASH, innermost first: borrowed from
/// the wire when parsed, from the client's stack walk when emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressTable<'a> {
    /// As parsed: `frame_count` big-endian u64.
    Wire(&'a [u8]),
    /// As the client's stack walk found them; only the first [`MAX_FRAMES`] are sent.
    Addresses(&'a [u64]),
}

impl<'a> AddressTable<'a> {
    /// No addresses.
    pub const EMPTY: AddressTable<'static> = AddressTable::Addresses(&[]);

    /// Entries on the wire: at most [`MAX_FRAMES`] (emit drops the rest).
    pub fn len(&self) -> usize {
        match self {
            AddressTable::Wire(b) => b.len() / 8,
            AddressTable::Addresses(a) => a.len().min(MAX_FRAMES),
        }
    }
    /// True if no address is sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Address `i` (innermost first), or `None` past [`len`](Self::len).
    pub fn get(&self, i: usize) -> Option<u64> {
        if i >= self.len() {
            return None;
        }
        match self {
            AddressTable::Addresses(a) => a.get(i).copied(),
            AddressTable::Wire(b) => Reader::new(b.get(i * 8..i * 8 + 8)?).u64().ok(),
        }
    }
    /// The addresses sent, innermost first.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Checks what PROTOCOL.md requires of a memory map: 1..=32 ranges, page-aligned,
/// non-empty, sorted, non-overlapping.
pub fn validate_ranges(ranges: impl Iterator<Item = MemoryRange>, page_size: u64) -> Result<usize, ProtoError> {
    if page_size == 0 || !page_size.is_power_of_two() {
        return Err(ProtoError::BadField(Field::PageSize));
    }
    let mut count = 0;
    let mut prev_end = 0u64;
    for r in ranges {
        if r.length == 0 || r.phys_start % page_size != 0 || r.length % page_size != 0 {
            return Err(ProtoError::BadField(Field::RangeAlignment));
        }
        if r.phys_start.checked_add(r.length).is_none() || r.virt_start.checked_add(r.length).is_none() {
            return Err(ProtoError::BadField(Field::RangeOverflows));
        }
        if count > 0 && r.phys_start < prev_end {
            return Err(ProtoError::BadField(Field::RangesUnsorted));
        }
        prev_end = r.phys_end();
        count += 1;
    }
    if count == 0 || count > MAX_RANGES {
        return Err(ProtoError::BadField(Field::RangeCount));
    }
    Ok(count)
}

/// CRASH: the crash announcement, with the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash<'a> {
    /// What killed the kernel.
    pub kind: CrashKind,
    /// The exception vector for [`CrashKind::Exception`], else 0.
    pub vector: u8,
    /// Register records the REGISTERS section will carry, 1..=[`MAX_CPUS`].
    pub cpu_count: u16,
    /// Index of the crashing CPU, below `cpu_count`.
    pub crashing_cpu: u16,
    /// The exception's error code for [`CrashKind::Exception`] (0 if the CPU pushes none),
    /// else 0.
    pub error_code: u64,
    /// The faulting address (CR2) for a page fault, else 0.
    pub fault_address: u64,
    /// The client's page size, bytes: a power of two; every range is aligned to it.
    pub page_size: u32,
    /// The client's architecture: the layout of its register records and the vmcore's
    /// `e_machine`. Sent as its `e_machine` byte; 0 from clients before the field, read
    /// as x86_64.
    pub machine: Machine,
    /// Bytes of console log the LOG section will carry.
    pub log_len: u64,
    /// The RAM ranges to dump: 1..=[`MAX_RANGES`], page-aligned, sorted, non-overlapping
    /// ([`validate_ranges`]).
    pub ranges: RangeTable<'a>,
    /// Code addresses of the crashing stack, innermost first (the faulting `rip` of a CPU
    /// exception, then return addresses): what the crash signature hashes.
    pub frames: AddressTable<'a>,
    /// The panic message, UTF-8 by intent (the server replaces invalid sequences); emit sends
    /// at most [`MAX_TEXT`] bytes of it.
    pub message: &'a [u8],
}

impl<'a> Crash<'a> {
    /// Payload bytes before the ranges.
    pub const FIXED_LEN: usize = field::crash::RANGES;

    /// Parses a CRASH payload and checks what PROTOCOL.md requires of it: `cpu_count`,
    /// `crashing_cpu`, `message_len`, `frame_count` in bounds and a valid memory map
    /// ([`validate_ranges`]). Nothing may follow the message.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let kind = CrashKind::try_from(r.u8()?)?;
        let vector = r.u8()?;
        let cpu_count = r.u16()?;
        let crashing_cpu = r.u16()?;
        let range_count = r.u16()? as usize;
        let error_code = r.u64()?;
        let fault_address = r.u64()?;
        let page_size = r.u32()?;
        let message_len = r.u16()? as usize;
        let frame_count = r.u8()? as usize;
        let machine = Machine::from_wire(r.u8()?).ok_or(ProtoError::BadField(Field::Machine))?;
        let log_len = r.u64()?;
        let ranges = RangeTable::Wire(r.bytes(range_count * MemoryRange::WIRE_LEN)?);
        let frames = AddressTable::Wire(r.bytes(frame_count * field::crash::FRAME_LEN)?);
        let message = r.bytes(message_len)?;
        r.finish()?;
        if cpu_count == 0 || cpu_count as usize > MAX_CPUS || crashing_cpu >= cpu_count {
            return Err(ProtoError::BadField(Field::CpuCount));
        }
        if message_len > MAX_TEXT {
            return Err(ProtoError::BadField(Field::MessageLen));
        }
        if frame_count > MAX_FRAMES {
            return Err(ProtoError::BadField(Field::FrameCount));
        }
        validate_ranges(ranges.iter(), page_size as u64)?;
        Ok(Crash {
            kind,
            vector,
            cpu_count,
            crashing_cpu,
            error_code,
            fault_address,
            page_size,
            machine,
            log_len,
            ranges,
            frames,
            message,
        })
    }

    /// Payload bytes: [`Self::FIXED_LEN`], 24 per range, 8 per frame address and the message
    /// (at most [`MAX_TEXT`]).
    pub fn wire_len(&self) -> usize {
        Self::FIXED_LEN
            + self.ranges.len() * MemoryRange::WIRE_LEN
            + self.frames.len() * field::crash::FRAME_LEN
            + self.message.len().min(MAX_TEXT)
    }

    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes. The caller keeps the fields within the limits
    /// [`parse`](Self::parse) checks; only the message and the frames are cut to fit.
    pub fn emit(&self, out: &mut [u8]) {
        let message = &self.message[..self.message.len().min(MAX_TEXT)];
        // The fixed fields into an array of their size first: every bounds check of the
        // writer is then decided at compile time.
        let mut fixed = [0u8; Self::FIXED_LEN];
        Writer::new(&mut fixed)
            .u8(self.kind as u8)
            .u8(self.vector)
            .u16(self.cpu_count)
            .u16(self.crashing_cpu)
            .u16(self.ranges.len() as u16)
            .u64(self.error_code)
            .u64(self.fault_address)
            .u32(self.page_size)
            .u16(message.len() as u16)
            .u8(self.frames.len() as u8)
            .u8(self.machine.wire())
            .u64(self.log_len);
        let mut w = Writer::new(out);
        w.bytes(&fixed);
        // Tables parsed from the wire are in wire order already.
        match self.ranges {
            RangeTable::Wire(b) => _ = w.bytes(b),
            RangeTable::Ranges(ranges) => {
                for r in ranges {
                    w.words(&[r.phys_start, r.length, r.virt_start]);
                }
            }
        }
        match self.frames {
            AddressTable::Wire(b) => _ = w.bytes(b),
            AddressTable::Addresses(a) => _ = w.words(&a[..a.len().min(MAX_FRAMES)]),
        }
        w.bytes(message);
    }
}

wire_enum!(
    /// What the server wants from a crashing client.
    Verdict: u8 {
        /// Send every section, memory included.
        DumpAll = 0 => "dump_all",
        /// Send the log, registers and extra state, but no memory.
        SkipMemory = 1 => "skip_memory",
        /// Send nothing.
        Abort = 2 => "abort",
    }
);
wire_enum!(
    /// Why the server decided as it did.
    DecisionReason: u8 {
        /// No particular reason: the default verdict.
        None = 0 => "none",
        /// The server's decision hook chose the verdict.
        Hook = 1 => "hook",
        /// The dump directory lacks the space: for the memory image, or with
        /// [`Verdict::Abort`] for anything.
        NoSpace = 2 => "no_space",
        /// The crash repeats one already dumped (same signature).
        Duplicate = 3 => "duplicate",
        /// Too many dumps are being received at once.
        Busy = 4 => "busy",
        /// The announcement broke a server limit (memory larger than HELLO declared, an
        /// oversized log).
        BadAnnouncement = 5 => "bad_announcement",
        /// With [`Verdict::Abort`]: this server cannot take the dump now (too many dumps at
        /// once, not enough space) and another one may: the client moves on to its next
        /// server. Sent only to a client granted [`features::FAILOVER`] whose CRASH did not
        /// say [`LAST_SERVER`](crate::proto::flags::LAST_SERVER).
        TryElsewhere = 6 => "try_elsewhere",
    }
);

/// DECISION: the server's answer to CRASH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the client sends.
    pub verdict: Verdict,
    /// Why the server decided so.
    pub why: DecisionReason,
    /// Largest UDP payload the server accepts, bytes: the client sends no larger DATA.
    pub max_payload: u32,
}

impl Decision {
    /// Payload bytes (fixed).
    pub const WIRE_LEN: usize = field::decision::LEN;
    /// Parses a DECISION payload of exactly [`Self::WIRE_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let verdict = Verdict::try_from(r.u8()?)?;
        // A reason this version does not know reads as `None`: the verdict is what the
        // client acts on, and a later server's new reason must not make it drop DECISION.
        let why = DecisionReason::try_from(r.u8()?).unwrap_or(DecisionReason::None);
        r.bytes(2)?;
        let d = Decision { verdict, why, max_payload: r.u32()? };
        r.finish()?;
        Ok(d)
    }
    /// [`Self::WIRE_LEN`].
    pub fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    /// Writes the payload at the start of `out`, which must hold [`Self::WIRE_LEN`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u8(self.verdict as u8).u8(self.why as u8).zeros(2).u32(self.max_payload);
    }
}

wire_enum!(
    /// The sections of a dump's data stream, in the order they are sent.
    Section: u8 {
        /// The last bytes of the console ring, oldest first.
        Log = 1 => "log",
        /// One [`RegisterRecord`](super::RegisterRecord) per CPU, at offset `cpu × 256`.
        Registers = 2 => "registers",
        /// The non-zero pages of the announced ranges, at their physical addresses.
        Memory = 3 => "memory",
        /// Text the kernel writes after the memory image.
        Extra = 4 => "extra",
        /// The runs of pages the client's filter left out ([`ExcludedRun`] records), sent
        /// after the registers and before the memory (feature `FILTER` only).
        Excluded = 5 => "excluded",
    }
);

/// A run of pages the client's filter left out (feature `FILTER`): a record of the
/// `EXCLUDED` section. A DATA packet of that section carries whole records only, at a
/// section offset that is a multiple of [`ExcludedRun::WIRE_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExcludedRun {
    /// First page frame number (physical address / page size).
    pub start_pfn: u64,
    /// Pages in the run, at least 1.
    pub pages: u32,
    /// Why they were left out: one of [`PageClass::EXCLUDABLE`](crate::proto::PageClass).
    pub class: crate::proto::PageClass,
}

impl ExcludedRun {
    /// Bytes of one record.
    pub const WIRE_LEN: usize = field::excluded_run::LEN;

    /// Parses one record of exactly [`Self::WIRE_LEN`] bytes: a class that cannot be
    /// excluded, an empty run or non-zero reserved bytes are errors.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let start_pfn = r.u64()?;
        let pages = r.u32()?;
        let class = crate::proto::PageClass::from_dump_level_bit(u32::from(r.u8()?))
            .ok_or(ProtoError::BadField(Field::ExcludedClass))?;
        if r.bytes(3)?.iter().any(|&b| b != 0) {
            return Err(ProtoError::BadField(Field::ExcludedReserved));
        }
        r.finish()?;
        if pages == 0 {
            return Err(ProtoError::BadField(Field::ExcludedPages));
        }
        Ok(ExcludedRun { start_pfn, pages, class })
    }

    /// The records of an `EXCLUDED` DATA packet's data, which must be whole records.
    pub fn parse_all(data: &[u8]) -> Result<impl Iterator<Item = Result<Self, ProtoError>> + '_, ProtoError> {
        if data.is_empty() || !data.len().is_multiple_of(Self::WIRE_LEN) {
            return Err(ProtoError::BadField(Field::ExcludedLength));
        }
        Ok(data.chunks_exact(Self::WIRE_LEN).map(Self::parse))
    }

    /// Writes the record at the start of `out`, which must hold [`Self::WIRE_LEN`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u64(self.start_pfn).u32(self.pages).u8(self.class.dump_level_bit() as u8).zeros(3);
    }
}

/// DATA: a chunk of one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// The section the bytes belong to.
    pub section: Section,
    /// Byte offset in the section; the physical address for [`Section::Memory`].
    pub offset: u64,
    /// The bytes, at least one.
    pub data: &'a [u8],
}

impl<'a> Data<'a> {
    /// Length of the sub-header before the data.
    pub const SUBHEADER_LEN: usize = field::data::DATA;
    /// Parses a DATA payload: the sub-header and at least one byte of data, whose end must
    /// not pass `u64::MAX` in the section.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let section = Section::try_from(r.u8()?)?;
        r.bytes(7)?;
        let offset = r.u64()?;
        let data = r.rest();
        if data.is_empty() {
            return Err(ProtoError::Truncated);
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(ProtoError::BadField(Field::Offset));
        }
        Ok(Data { section, offset, data })
    }
    /// Payload bytes: [`Self::SUBHEADER_LEN`] plus the data.
    pub fn wire_len(&self) -> usize {
        Self::SUBHEADER_LEN + self.data.len()
    }
    /// Writes the sub-header only; the caller fills `data_len` bytes after it.
    pub fn emit_subheader(section: Section, offset: u64, out: &mut [u8]) {
        Writer::new(out).u8(section as u8).zeros(7).u64(offset);
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Self::emit_subheader(self.section, self.offset, out);
        out[Self::SUBHEADER_LEN..Self::SUBHEADER_LEN + self.data.len()].copy_from_slice(self.data);
    }
}

/// Most section bytes one LZ4 block of a DATA packet decodes to.
pub const MAX_BLOCK: usize = 65536;

/// How a DATA packet's data encodes its section bytes: sub-header bytes 1..8
/// (`encoding`, reserved, `raw_len`). Read beside [`Data`], which carries the data as it
/// is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The data are the section bytes (`encoding` 0, `raw_len` 0): every version.
    Raw,
    /// The data are one LZ4 block (block format, no frame) that decodes to exactly
    /// `raw_len` section bytes, 1..=[`MAX_BLOCK`] (`encoding` 1, feature
    /// [`features::COMPRESSED`]).
    Lz4 {
        /// Section bytes the block decodes to.
        raw_len: u32,
    },
}

impl Encoding {
    const RAW: u8 = 0;
    const LZ4: u8 = 1;

    /// Reads the encoding of a DATA payload (its sub-header).
    pub fn parse(payload: &[u8]) -> Result<Self, ProtoError> {
        let sub = payload.get(..field::data::DATA).ok_or(ProtoError::Truncated)?;
        let raw_len = u32::from_be_bytes(sub[field::data::RAW_LEN].try_into().expect("4-byte field"));
        match sub[field::data::ENCODING.start] {
            Self::RAW if raw_len == 0 => Ok(Encoding::Raw),
            Self::LZ4 if raw_len != 0 && raw_len as usize <= MAX_BLOCK => Ok(Encoding::Lz4 { raw_len }),
            Self::RAW | Self::LZ4 => Err(ProtoError::BadField(Field::RawLen)),
            _ => Err(ProtoError::BadField(Field::Encoding)),
        }
    }

    /// Writes the encoding into the sub-header at the start of `payload` (after
    /// [`Data::emit_subheader`], which leaves it raw).
    pub fn emit(&self, payload: &mut [u8]) {
        let (code, raw_len) = match *self {
            Encoding::Raw => (Self::RAW, 0),
            Encoding::Lz4 { raw_len } => (Self::LZ4, raw_len),
        };
        payload[field::data::ENCODING.start] = code;
        payload[field::data::RESERVED].fill(0);
        payload[field::data::RAW_LEN].copy_from_slice(&raw_len.to_be_bytes());
    }

    /// Section bytes a DATA packet with `data_len` bytes of data covers.
    pub fn section_len(&self, data_len: usize) -> usize {
        match *self {
            Encoding::Raw => data_len,
            Encoding::Lz4 { raw_len } => raw_len as usize,
        }
    }
}

/// ACK: cumulative plus selective acknowledgement. The cumulative point is the header's
/// `seq`: every DATA below it has arrived, and it itself has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The server abandons the dump: stop sending.
    pub stop: bool,
    /// Bit `i` (byte `i/8`, LSB first) set ⇔ DATA `cumulative + 1 + i` has arrived.
    pub bitmap: &'a [u8],
}

impl<'a> Ack<'a> {
    /// Parses an ACK payload: a bitmap of at most [`MAX_SACK_BYTES`] and nothing after it.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let len = r.u16()? as usize;
        let flags = r.u8()?;
        r.u8()?;
        if len > MAX_SACK_BYTES {
            return Err(ProtoError::BadField(Field::BitmapLen));
        }
        let bitmap = r.bytes(len)?;
        r.finish()?;
        Ok(Ack { stop: flags & 1 != 0, bitmap })
    }
    /// Payload bytes: 4 plus the bitmap.
    pub fn wire_len(&self) -> usize {
        field::ack::BITMAP + self.bitmap.len()
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes. The bitmap must be at most [`MAX_SACK_BYTES`].
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u16(self.bitmap.len() as u16).u8(self.stop as u8).u8(0).bytes(self.bitmap);
    }
    /// Whether DATA `seq` is acknowledged, given the cumulative point `cumulative`.
    pub fn covers(&self, cumulative: u32, seq: u32) -> bool {
        if seq < cumulative {
            return true;
        }
        if seq == cumulative {
            return false;
        }
        let i = (seq - cumulative - 1) as usize;
        self.bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

/// The stream CRC of FINISH: CRC-32 of the DATA payloads' checks (big-endian), in `seq`
/// order — each payload's CRC-32, or its XXH64 check for a packet sent with
/// [`flags::CHECK_XXH64`](crate::proto::flags::CHECK_XXH64) ([`Header::check`]). Both ends
/// already hash each payload once (for the header CRC), so the stream CRC costs four
/// bytes per packet.
#[derive(Debug, Clone, Default)]
pub struct StreamCrc(crate::proto::check::crc32::Hasher);

impl StreamCrc {
    /// The stream CRC of no packets.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends the next packet, by its payload's check.
    pub fn add(&mut self, payload_crc: u32) {
        self.0.update(&payload_crc.to_be_bytes());
    }
    /// The stream CRC of the packets added so far; adding may continue.
    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
    /// The stream CRC of whole payloads, in order (for tests and simulators).
    pub fn of_payloads<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> u32 {
        Self::of_payloads_checked(crate::proto::Check::Crc32, payloads)
    }
    /// As [`of_payloads`](Self::of_payloads), for packets sent with `check`.
    pub fn of_payloads_checked<'a>(check: crate::proto::Check, payloads: impl IntoIterator<Item = &'a [u8]>) -> u32 {
        let mut s = Self::new();
        for p in payloads {
            s.add(check.of(p));
        }
        s.value()
    }
}

/// FINISH flag: memory was skipped by the server's decision.
pub const FINISH_MEMORY_SKIPPED: u32 = 1 << 0;
/// FINISH flag: the client could not read some memory.
pub const FINISH_MEMORY_INCOMPLETE: u32 = 1 << 1;

/// FINISH: the totals of a completed stream (header `seq` = number of DATA packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// DATA bytes sent, sub-headers excluded, each packet counted once.
    pub total_bytes: u64,
    /// The [`StreamCrc`] of every DATA payload, in `seq` order.
    pub stream_crc: u32,
    /// [`FINISH_MEMORY_SKIPPED`] and [`FINISH_MEMORY_INCOMPLETE`] bits.
    pub flags: u32,
    /// All-zero pages the client read and did not send.
    pub zero_pages: u64,
    /// DATA packets sent more than once (each resend counted).
    pub retransmissions: u64,
}

impl Finish {
    /// Payload bytes (fixed).
    pub const WIRE_LEN: usize = field::finish::LEN;
    /// Parses a FINISH payload of exactly [`Self::WIRE_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let f = Finish {
            total_bytes: r.u64()?,
            stream_crc: r.u32()?,
            flags: r.u32()?,
            zero_pages: r.u64()?,
            retransmissions: r.u64()?,
        };
        r.finish()?;
        Ok(f)
    }
    /// [`Self::WIRE_LEN`].
    pub fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    /// Writes the payload at the start of `out`, which must hold [`Self::WIRE_LEN`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out)
            .u64(self.total_bytes)
            .u32(self.stream_crc)
            .u32(self.flags)
            .u64(self.zero_pages)
            .u64(self.retransmissions);
    }
}

wire_enum!(
    /// The server's verdict on a finished stream.
    FinishStatus: u8 {
        /// Every byte arrived and the stream CRC matches: the vmcore is complete.
        Verified = 0 => "verified",
        /// Every packet arrived, but the stream CRC disagrees with theirs.
        CrcMismatch = 1 => "crc_mismatch",
        /// Some DATA never arrived, or the byte total disagrees with what did.
        MissingData = 2 => "missing_data",
        /// The server could not write the dump to disk.
        WriteError = 3 => "write_error",
        /// The server holds no dump for the cookie (it declined the crash, or has no
        /// session for it).
        UnknownSession = 4 => "unknown_session",
    }
);
wire_enum!(
    /// What the client should do after the dump.
    AfterDump: u8 {
        /// Reboot the machine.
        Reboot = 0 => "reboot",
        /// Halt, leaving the machine for inspection.
        Halt = 1 => "halt",
    }
);

/// FINISH_ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishAck {
    /// Whether the server verified the dump.
    pub status: FinishStatus,
    /// What the client does next.
    pub action: AfterDump,
}

impl FinishAck {
    /// Payload bytes (fixed).
    pub const WIRE_LEN: usize = field::finish_ack::LEN;
    /// Parses a FINISH_ACK payload of exactly [`Self::WIRE_LEN`] bytes.
    pub fn parse(p: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let status = FinishStatus::try_from(r.u8()?)?;
        let action = AfterDump::try_from(r.u8()?)?;
        r.bytes(2)?;
        r.finish()?;
        Ok(FinishAck { status, action })
    }
    /// [`Self::WIRE_LEN`].
    pub fn wire_len(&self) -> usize {
        Self::WIRE_LEN
    }
    /// Writes the payload at the start of `out`, which must hold [`Self::WIRE_LEN`] bytes.
    pub fn emit(&self, out: &mut [u8]) {
        Writer::new(out).u8(self.status as u8).u8(self.action as u8).zeros(2);
    }
}

/// ABORT reason codes (client → server).
pub mod abort_reason {
    /// The server stopped answering: no DECISION, no ACK progress or no FINISH_ACK
    /// within the configured bound.
    pub const SERVER_SILENT: u16 = 1;
    /// The NIC failed during the stream (the client also sends it for any other local
    /// failure that is not the server's doing).
    pub const NIC_ERROR: u16 = 2;
    /// The kernel panicked again during the dump (reserved by the protocol; this client
    /// does not send it).
    pub const NESTED_PANIC: u16 = 3;
    /// The server set `STOP` in an ACK.
    pub const STOPPED_BY_SERVER: u16 = 4;
    /// The client could not read memory it announced (reserved by the protocol; this
    /// client marks such a dump incomplete in FINISH instead).
    pub const MEMORY_UNREADABLE: u16 = 5;
}

/// ERROR codes (server → client).
pub mod error_code {
    /// The packet's protocol version is not the server's.
    pub const UNSUPPORTED_VERSION: u16 = 1;
    /// No registered client or open session has the packet's cookie.
    pub const UNKNOWN_COOKIE: u16 = 2;
    /// The packet failed to parse.
    pub const MALFORMED: u16 = 3;
    /// The packet's session has ended (reserved by the protocol; netdumpd does not send
    /// it).
    pub const SESSION_CLOSED: u16 = 4;
}

/// ABORT and ERROR: a code and a short text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextMessage<'a> {
    /// An [`abort_reason`] (ABORT) or an [`error_code`] (ERROR).
    pub code: u16,
    /// Human-readable detail, at most [`MAX_TEXT`] bytes (emit cuts longer text).
    pub text: &'a [u8],
}

impl<'a> TextMessage<'a> {
    /// Parses a payload: code, `text_len` of at most [`MAX_TEXT`], that many bytes of text and
    /// nothing after.
    pub fn parse(p: &'a [u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(p);
        let code = r.u16()?;
        let len = r.u16()? as usize;
        if len > MAX_TEXT {
            return Err(ProtoError::BadField(Field::TextLen));
        }
        let text = r.bytes(len)?;
        r.finish()?;
        Ok(TextMessage { code, text })
    }
    /// Payload bytes: 4 plus the text (at most [`MAX_TEXT`]).
    pub fn wire_len(&self) -> usize {
        field::text::TEXT + self.text.len().min(MAX_TEXT)
    }
    /// Writes the payload at the start of `out`, which must hold
    /// [`wire_len`](Self::wire_len) bytes.
    pub fn emit(&self, out: &mut [u8]) {
        let text = &self.text[..self.text.len().min(MAX_TEXT)];
        Writer::new(out).u16(self.code).u16(text.len() as u16).bytes(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(t: MessageType, len: usize, emit: impl FnOnce(&mut [u8])) -> ([u8; 2048], usize) {
        let mut buf = [0u8; 2048];
        let h = Header::v1(t, 0, 42, 7);
        let n = h.emit(&mut buf, len, emit).unwrap();
        (buf, n)
    }

    fn parse(buf: &[u8]) -> Message<'_> {
        let (h, p) = Header::parse(buf).unwrap();
        Message::parse(&h, p).unwrap()
    }

    #[test]
    fn hello_roundtrip() {
        let m = Hello {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            ip: [10, 0, 2, 15],
            page_size: 4096,
            memory_bytes: 1 << 27,
            name: b"node-1",
        };
        let (buf, n) = roundtrip(MessageType::Hello, m.wire_len(), |p| m.emit(p));
        assert_eq!(n, 24 + 31);
        assert_eq!(parse(&buf[..n]), Message::Hello(m));
    }

    #[test]
    fn crash_roundtrip_with_ranges_and_message() {
        let ranges = [
            MemoryRange { phys_start: 0, length: 0x9f000, virt_start: 0 },
            MemoryRange { phys_start: 0x100000, length: 0x7f00000, virt_start: 0xffff_8000_0010_0000 },
        ];
        let m = Crash {
            kind: CrashKind::Exception,
            vector: 14,
            cpu_count: 2,
            crashing_cpu: 1,
            error_code: 2,
            fault_address: 0xdead000,
            page_size: 4096,
            machine: Machine::X86_64,
            log_len: 777,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::Addresses(&[0x10_2345, 0x10_0abc]),
            message: b"page fault",
        };
        let (buf, n) = roundtrip(MessageType::Crash, m.wire_len(), |p| m.emit(p));
        let Message::Crash(c) = parse(&buf[..n]) else { panic!("not a crash") };
        assert_eq!(c.ranges.iter().collect::<Vec<_>>(), ranges);
        assert_eq!((c.kind, c.vector, c.cpu_count, c.crashing_cpu), (CrashKind::Exception, 14, 2, 1));
        assert_eq!((c.error_code, c.fault_address, c.page_size, c.log_len), (2, 0xdead000, 4096, 777));
        assert_eq!(c.frames.iter().collect::<Vec<_>>(), [0x10_2345, 0x10_0abc]);
        assert_eq!(c.message, b"page fault");
    }

    #[test]
    fn crash_carries_at_most_sixteen_frames() {
        let ranges = [MemoryRange { phys_start: 0, length: 0x1000, virt_start: 0 }];
        let many: Vec<u64> = (1..=20).collect();
        let m = Crash {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count: 1,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            page_size: 4096,
            machine: Machine::X86_64,
            log_len: 0,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::Addresses(&many),
            message: b"x",
        };
        let (buf, n) = roundtrip(MessageType::Crash, m.wire_len(), |p| m.emit(p));
        let Message::Crash(c) = parse(&buf[..n]) else { panic!("not a crash") };
        assert_eq!(c.frames.iter().collect::<Vec<_>>(), (1..=16).collect::<Vec<u64>>());
        // A count above 16 on the wire is refused.
        let mut payload = buf[24..n].to_vec();
        payload[30] = 17;
        let frames_end = 40 + 24 + 16 * 8;
        payload.splice(frames_end..frames_end, [0u8; 8]);
        assert_eq!(Crash::parse(&payload), Err(ProtoError::BadField(Field::FrameCount)));
    }

    #[test]
    fn crash_rejects_overlapping_unaligned_or_missing_ranges() {
        let bad: [&[MemoryRange]; 3] = [
            &[
                MemoryRange { phys_start: 0, length: 0x2000, virt_start: 0 },
                MemoryRange { phys_start: 0x1000, length: 0x1000, virt_start: 0 },
            ],
            &[MemoryRange { phys_start: 0x10, length: 0x1000, virt_start: 0 }],
            &[],
        ];
        for ranges in bad {
            let m = Crash {
                kind: CrashKind::Panic,
                vector: 0,
                cpu_count: 1,
                crashing_cpu: 0,
                error_code: 0,
                fault_address: 0,
                page_size: 4096,
                machine: Machine::X86_64,
                log_len: 0,
                ranges: RangeTable::Ranges(ranges),
                frames: AddressTable::EMPTY,
                message: b"",
            };
            let (buf, n) = roundtrip(MessageType::Crash, m.wire_len(), |p| m.emit(p));
            let (h, p) = Header::parse(&buf[..n]).unwrap();
            assert!(matches!(Message::parse(&h, p), Err(ProtoError::BadField(_))), "{ranges:?}");
        }
    }

    #[test]
    fn crash_rejects_crashing_cpu_out_of_range() {
        let ranges = [MemoryRange { phys_start: 0, length: 0x1000, virt_start: 0 }];
        let m = Crash {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count: 1,
            crashing_cpu: 1,
            error_code: 0,
            fault_address: 0,
            page_size: 4096,
            machine: Machine::X86_64,
            log_len: 0,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::EMPTY,
            message: b"",
        };
        let (buf, n) = roundtrip(MessageType::Crash, m.wire_len(), |p| m.emit(p));
        let (h, p) = Header::parse(&buf[..n]).unwrap();
        assert_eq!(Message::parse(&h, p), Err(ProtoError::BadField(Field::CpuCount)));
    }

    #[test]
    fn data_roundtrip_and_empty_data_rejected() {
        let m = Data { section: Section::Memory, offset: 0x1234_5000, data: &[9; 100] };
        let (buf, n) = roundtrip(MessageType::Data, m.wire_len(), |p| m.emit(p));
        assert_eq!(parse(&buf[..n]), Message::Data(m));
        let (buf, n) = roundtrip(MessageType::Data, 16, |p| Data::emit_subheader(Section::Log, 0, p));
        let (h, p) = Header::parse(&buf[..n]).unwrap();
        assert_eq!(Message::parse(&h, p), Err(ProtoError::Truncated));
    }

    #[test]
    fn ack_covers_cumulative_and_selective() {
        let bitmap = [0b0000_0101u8, 0x80];
        let ack = Ack { stop: false, bitmap: &bitmap };
        let (buf, n) = roundtrip(MessageType::Ack, ack.wire_len(), |p| ack.emit(p));
        assert_eq!(parse(&buf[..n]), Message::Ack(ack));
        // cumulative 10: 0..10 received, 10 missing, 11 and 13 received, 12 missing, 26 received
        assert!(ack.covers(10, 9));
        assert!(!ack.covers(10, 10));
        assert!(ack.covers(10, 11));
        assert!(!ack.covers(10, 12));
        assert!(ack.covers(10, 13));
        assert!(ack.covers(10, 26));
        assert!(!ack.covers(10, 27));
        assert!(!ack.covers(10, 10_000));
    }

    #[test]
    fn fixed_messages_roundtrip() {
        let d = Decision { verdict: Verdict::SkipMemory, why: DecisionReason::NoSpace, max_payload: 8972 };
        let (buf, n) = roundtrip(MessageType::Decision, d.wire_len(), |p| d.emit(p));
        assert_eq!(parse(&buf[..n]), Message::Decision(d));
        let f = Finish {
            total_bytes: 1 << 30,
            stream_crc: 0xdeadbeef,
            flags: FINISH_MEMORY_SKIPPED,
            zero_pages: 5,
            retransmissions: 6,
        };
        let (buf, n) = roundtrip(MessageType::Finish, f.wire_len(), |p| f.emit(p));
        assert_eq!(parse(&buf[..n]), Message::Finish(f));
        let fa = FinishAck { status: FinishStatus::CrcMismatch, action: AfterDump::Halt };
        let (buf, n) = roundtrip(MessageType::FinishAck, fa.wire_len(), |p| fa.emit(p));
        assert_eq!(parse(&buf[..n]), Message::FinishAck(fa));
        let e = TextMessage { code: error_code::UNKNOWN_COOKIE, text: b"who are you" };
        let (buf, n) = roundtrip(MessageType::Error, e.wire_len(), |p| e.emit(p));
        assert_eq!(parse(&buf[..n]), Message::Error(e));
    }

    #[test]
    fn the_clients_parser_takes_exactly_what_servers_send() {
        let d = Decision { verdict: Verdict::DumpAll, why: DecisionReason::None, max_payload: 1472 };
        let (buf, n) = roundtrip(MessageType::Decision, d.wire_len(), |p| d.emit(p));
        let (h, p) = Header::parse(&buf[..n]).unwrap();
        assert_eq!(Message::parse_from_server(&h, p), Ok(Message::Decision(d)));
        for t in 0..=255u8 {
            let Ok(msg_type) = MessageType::try_from(t) else { continue };
            let payload = [0u8; 64];
            let h = Header::v1(msg_type, 0, 1, 0);
            let from_server = Message::parse_from_server(&h, &payload);
            if msg_type.from_client() {
                assert_eq!(from_server, Err(ProtoError::BadField(Field::MsgType)), "{msg_type:?}");
            } else {
                assert_eq!(from_server, Message::parse(&h, &payload), "{msg_type:?}");
            }
        }
    }

    #[test]
    fn unknown_enum_values_are_errors_not_panics() {
        let (buf, n) = roundtrip(MessageType::Decision, 8, |p| p.copy_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]));
        let (h, p) = Header::parse(&buf[..n]).unwrap();
        assert_eq!(Message::parse(&h, p), Err(ProtoError::BadField(Field::Verdict)));
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error() {
        let ranges = [MemoryRange { phys_start: 0, length: 0x1000, virt_start: 0 }];
        let crash = Crash {
            kind: CrashKind::Panic,
            vector: 0,
            cpu_count: 1,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            page_size: 4096,
            machine: Machine::X86_64,
            log_len: 0,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::Addresses(&[0x1000]),
            message: b"boom",
        };
        let hello = Hello { mac: [0; 6], mtu: 1500, ip: [0; 4], page_size: 4096, memory_bytes: 0, name: b"x" };
        let mut payload = [0u8; 256];
        let cases: [(MessageType, usize); 3] = [
            (MessageType::Crash, {
                crash.emit(&mut payload);
                crash.wire_len()
            }),
            (MessageType::Hello, 0),
            (MessageType::Finish, 32),
        ];
        for (t, len) in cases {
            let mut p = payload;
            if t == MessageType::Hello {
                hello.emit(&mut p);
            }
            let len = if t == MessageType::Hello { hello.wire_len() } else { len };
            let h = Header::v1(t, 0, 1, 0);
            for cut in 0..len {
                assert!(Message::parse(&h, &p[..cut]).is_err(), "{t:?} cut at {cut}");
            }
            assert!(Message::parse(&h, &p[..len]).is_ok(), "{t:?} whole");
        }
    }

    #[test]
    fn names_must_be_safe_directory_names() {
        assert!(valid_name(b"web-01.example_a"));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a b", &[b'a'; 65], b"-rf", b"--help", b".hidden", b"_x"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    /// One message type's golden bytes, both ways: the literal parses to `repr` (as
    /// `same` judges), `repr` emitted into a 0xa5-filled buffer writes exactly the
    /// literal and nothing after it, every truncation of the literal shorter than
    /// `min_len` is `Truncated`, and the packet parses back through [`Message`].
    fn golden<'a, R>(repr: R, bytes: &'a [u8], min_len: usize, same: impl Fn(&R, &R) -> bool)
    where
        R: Repr<'a> + core::fmt::Debug,
    {
        golden_in(VERSION_1, repr, bytes, min_len, same)
    }

    /// [`golden`] with a header of `version`.
    fn golden_in<'a, R>(version: u8, repr: R, bytes: &'a [u8], min_len: usize, same: impl Fn(&R, &R) -> bool)
    where
        R: Repr<'a> + core::fmt::Debug,
    {
        let parsed = R::parse(bytes).unwrap_or_else(|e| panic!("{:?}: {e}", R::TYPE));
        assert!(same(&parsed, &repr), "{:?}: parsed {parsed:?}, want {repr:?}", R::TYPE);
        assert_eq!(repr.wire_len(), bytes.len(), "{:?} wire_len", R::TYPE);
        let mut out = [0xa5u8; 1024];
        repr.emit(&mut out);
        assert_eq!(&out[..bytes.len()], bytes, "{:?} emitted", R::TYPE);
        assert!(out[bytes.len()..].iter().all(|b| *b == 0xa5), "{:?} wrote past its length", R::TYPE);
        for n in 0..min_len.min(bytes.len()) {
            assert_eq!(R::parse(&bytes[..n]).err(), Some(ProtoError::Truncated), "{:?} cut to {n}", R::TYPE);
        }
        let header = Header { version, ..Header::v1(R::TYPE, 0, 1, 2) };
        let mut padded = [0u8; 1024];
        padded[..bytes.len()].copy_from_slice(bytes);
        if R::TYPE != MessageType::Data {
            let longer = Message::parse(&header, &padded[..bytes.len() + 1]);
            assert!(longer.is_err(), "{:?} with a byte too many", R::TYPE);
        }
        let m = Message::parse(&header, bytes).unwrap();
        assert_eq!(m.msg_type(), R::TYPE);
        assert_eq!(m.wire_len(), bytes.len());
        let mut out = [0xa5u8; 1024];
        m.emit(&mut out);
        assert_eq!(&out[..bytes.len()], bytes, "{:?} through Message", R::TYPE);
    }

    #[test]
    fn hello_golden_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // MAC
            0x05, 0xdc,                         // MTU 1500
            0x0a, 0x00, 0x02, 0x0f,             // 10.0.2.15
            0x00, 0x00, 0x10, 0x00,             // page size 4096
            0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, // 128 MiB
            0x06, b'n', b'o', b'd', b'e', b'-', b'1',
        ];
        let m = Hello {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            ip: [10, 0, 2, 15],
            page_size: 4096,
            memory_bytes: 1 << 27,
            name: b"node-1",
        };
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn hello_ack_golden_bytes() {
        let bytes = [0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x23, 0x0c];
        golden(HelloAck { status: HelloStatus::Refused, max_payload: 8972 }, &bytes, bytes.len(), |a, b| a == b);
    }

    /// The HELLO of `hello_golden_bytes`, then the version-2 tail: features, key id,
    /// handshake length and a 48-byte message 1 (here 0x00, 0x01, … 0x2f).
    #[rustfmt::skip]
    const HELLO_V2: [u8; 31 + 14 + 48] = {
        let head = [
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // MAC
            0x05, 0xdc,                         // MTU 1500
            0x0a, 0x00, 0x02, 0x0f,             // 10.0.2.15
            0x00, 0x00, 0x10, 0x00,             // page size 4096
            0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, // 128 MiB
            0x06, b'n', b'o', b'd', b'e', b'-', b'1',
            0x00, 0x00, 0x00, 0x01,             // features: ENCRYPTED
            0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67, // key id
            0x00, 0x30,                         // handshake_len 48
        ];
        let mut out = [0u8; 31 + 14 + 48];
        let mut i = 0;
        while i < out.len() {
            out[i] = if i < head.len() { head[i] } else { (i - head.len()) as u8 };
            i += 1;
        }
        out
    };

    fn hello_v2_sample(handshake: &[u8]) -> HelloV2<'_> {
        HelloV2 {
            hello: Hello {
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
                ip: [10, 0, 2, 15],
                page_size: 4096,
                memory_bytes: 1 << 27,
                name: b"node-1",
            },
            features: features::ENCRYPTED,
            key_id: [0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67],
            handshake,
        }
    }

    #[test]
    fn hello_v2_golden_bytes() {
        let handshake: [u8; 48] = core::array::from_fn(|i| i as u8);
        golden_in(VERSION_2, hello_v2_sample(&handshake), &HELLO_V2, HELLO_V2.len(), |a, b| a == b);
        // A version-1 header reads the same bytes as a version-1 HELLO: the tail is
        // then bytes too many.
        let v1 = Header::v1(MessageType::Hello, 0, 1, 0);
        assert_eq!(Message::parse(&v1, &HELLO_V2), Err(ProtoError::LengthMismatch));
        let v2 = Header::v2(MessageType::Hello, 0, 1, 0);
        assert!(matches!(Message::parse_from_client(&v2, &HELLO_V2), Ok(ClientMessage::HelloV2(_))));
    }

    #[test]
    fn the_hello_v2_prologue_is_label_cookie_and_everything_before_handshake_len() {
        let handshake = [7u8; 48];
        let mut out = [0u8; MAX_PROLOGUE];
        let n = hello_v2_sample(&handshake).prologue(0x0102_0304_0506_0708, &mut out);
        let mut want = b"netdump 2\0".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&HELLO_V2[..31 + 12]);
        assert_eq!(&out[..n], &want[..]);
        // The handshake itself is not bound (it is hashed by Noise anyway), and the
        // longest name fits.
        let long = [b'a'; MAX_NAME];
        let mut hello = hello_v2_sample(&[]);
        hello.hello.name = &long;
        assert_eq!(hello.prologue(1, &mut out), MAX_PROLOGUE);
    }

    #[test]
    fn hello_ack_v2_golden_bytes() {
        #[rustfmt::skip]
        let head = [
            0x03, 0x00, 0x00, 0x00,             // status UNKNOWN_KEY, reserved
            0x00, 0x00, 0x23, 0x0c,             // max payload 8972
            0x00, 0x00, 0x00, 0x00,             // granted: none
            0x00, 0x00, 0x00, 0x01,             // required: ENCRYPTED
            0x00, 0x04, 0xaa, 0xbb, 0xcc, 0xdd, // a 4-byte handshake
        ];
        let terms = HelloTerms {
            status: HelloStatus::UnknownKey,
            max_payload: 8972,
            features: 0,
            required: features::ENCRYPTED,
        };
        let m = HelloAckV2 { terms, handshake: &[0xaa, 0xbb, 0xcc, 0xdd] };
        golden_in(VERSION_2, m, &head, head.len(), |a, b| a == b);
        assert_eq!(HelloTerms::parse(&head[..HelloTerms::WIRE_LEN]), Ok(terms));
        let mut out = [0u8; HelloTerms::WIRE_LEN];
        terms.emit(&mut out);
        assert_eq!(out, head[..HelloTerms::WIRE_LEN]);
        let v2 = Header::v2(MessageType::HelloAck, 0, 1, 0);
        assert_eq!(Message::parse_from_server(&v2, &head), Ok(Message::HelloAckV2(m)));
    }

    #[test]
    fn emit_packet_writes_hello_and_hello_ack_in_their_own_version() {
        let mut buf = [0u8; 256];
        let ack = Message::HelloAck(HelloAck { status: HelloStatus::Registered, max_payload: 1 });
        let n = ack.emit_packet(VERSION_2, 0, 1, 0, &mut buf).unwrap();
        assert_eq!(Header::parse(&buf[..n]).unwrap().0.version, VERSION_1);
        let handshake = [0u8; 48];
        let hello = Message::HelloV2(hello_v2_sample(&handshake));
        let n = hello.emit_packet(VERSION_1, 0, 1, 0, &mut buf).unwrap();
        assert_eq!(Header::parse(&buf[..n]).unwrap().0.version, VERSION_2);
        let d = Message::Decision(Decision { verdict: Verdict::DumpAll, why: DecisionReason::None, max_payload: 9 });
        for v in [VERSION_1, VERSION_2] {
            let n = d.emit_packet(v, 0, 1, 0, &mut buf).unwrap();
            assert_eq!(Header::parse(&buf[..n]).unwrap().0.version, v);
        }
    }

    #[test]
    fn crash_golden_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0x02, 0x0e, 0x00, 0x02, 0x00, 0x01, 0x00, 0x01, // kind, vector, cpus, crashing, ranges
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // error code
            0x00, 0x00, 0x00, 0x00, 0x0d, 0xea, 0xd0, 0x00, // fault address
            0x00, 0x00, 0x10, 0x00, 0x00, 0x02, 0x01, 0x3e, // page size, message_len, frame_count, machine
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x09, // log bytes 777
            0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, // range: phys_start
            0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, //        length
            0xff, 0xff, 0x80, 0x00, 0x00, 0x10, 0x00, 0x00, //        virt_start
            0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x23, 0x45, // frame
            b'p', b'f',
        ];
        let ranges = [MemoryRange { phys_start: 0x100000, length: 0x200000, virt_start: 0xffff_8000_0010_0000 }];
        let m = Crash {
            kind: CrashKind::Exception,
            vector: 14,
            cpu_count: 2,
            crashing_cpu: 1,
            error_code: 2,
            fault_address: 0xdead000,
            page_size: 4096,
            machine: Machine::X86_64,
            log_len: 777,
            ranges: RangeTable::Ranges(&ranges),
            frames: AddressTable::Addresses(&[0x10_2345]),
            message: b"pf",
        };
        // A parsed CRASH holds its tables as wire bytes: compare what they hold.
        golden(m, &bytes, bytes.len(), |a, b| {
            (
                a.kind,
                a.vector,
                a.cpu_count,
                a.crashing_cpu,
                a.error_code,
                a.fault_address,
                a.page_size,
                a.machine,
                a.log_len,
                a.message,
            ) == (
                b.kind,
                b.vector,
                b.cpu_count,
                b.crashing_cpu,
                b.error_code,
                b.fault_address,
                b.page_size,
                b.machine,
                b.log_len,
                b.message,
            ) && a.ranges.iter().eq(b.ranges.iter())
                && a.frames.iter().eq(b.frames.iter())
        });
        // A client from before the machine byte sends 0 there: x86_64. An AArch64
        // client sends 183; a machine this version does not know is refused.
        let mut old = bytes;
        old[field::crash::MACHINE.start] = 0;
        assert_eq!(Crash::parse(&old).unwrap().machine, Machine::X86_64);
        old[field::crash::MACHINE.start] = 183;
        assert_eq!(Crash::parse(&old).unwrap().machine, Machine::Aarch64);
        old[field::crash::MACHINE.start] = 40;
        assert_eq!(Crash::parse(&old).err(), Some(ProtoError::BadField(Field::Machine)));
    }

    #[test]
    fn decision_golden_bytes() {
        let bytes = [0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0];
        let m = Decision { verdict: Verdict::SkipMemory, why: DecisionReason::NoSpace, max_payload: 1472 };
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn decision_try_elsewhere_golden_bytes() {
        // ABORT (2), reason try_elsewhere (6), reserved, max payload 1472.
        let bytes = [0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0];
        let m = Decision { verdict: Verdict::Abort, why: DecisionReason::TryElsewhere, max_payload: 1472 };
        golden(m, &bytes, bytes.len(), |a, b| a == b);
        assert_eq!(DecisionReason::TryElsewhere.name(), "try_elsewhere");
    }

    #[test]
    fn a_decision_reason_this_version_does_not_know_reads_as_none() {
        // A later server's reason must not make a client drop the DECISION: the verdict
        // still counts.
        for (verdict, reason) in [(0u8, 7u8), (2, 0x80), (1, 0xff)] {
            let bytes = [verdict, reason, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0];
            let d = Decision::parse(&bytes).unwrap();
            assert_eq!(d.why, DecisionReason::None);
            assert_eq!(d.verdict as u8, verdict);
            assert_eq!(d.max_payload, 1472);
        }
        // An unknown verdict is still refused.
        assert_eq!(Decision::parse(&[3, 0, 0, 0, 0, 0, 5, 0xc0]).err(), Some(ProtoError::BadField(Field::Verdict)));
    }

    #[test]
    fn failover_is_feature_bit_4() {
        assert_eq!(features::FAILOVER, 0x10);
        assert_eq!(features::KNOWN & features::FAILOVER, features::FAILOVER);
        // HELLO_ACK terms granting it: status registered, max payload 1472, granted
        // FAILOVER | XXH64_CHECK, nothing required.
        let bytes = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc0, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00];
        let terms = HelloTerms {
            status: HelloStatus::Registered,
            max_payload: 1472,
            features: features::FAILOVER | features::XXH64_CHECK,
            required: 0,
        };
        assert_eq!(HelloTerms::parse(&bytes), Ok(terms));
        let mut out = [0u8; HelloTerms::WIRE_LEN];
        terms.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn data_golden_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // MEMORY, reserved
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // offset 0x1000
            0xde, 0xad,
        ];
        let m = Data { section: Section::Memory, offset: 0x1000, data: &[0xde, 0xad] };
        // Any length from one data byte on is a (shorter) DATA.
        golden(m, &bytes, field::data::DATA + 1, |a, b| a == b);
    }

    #[test]
    fn data_lz4_encoding_golden_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // MEMORY, LZ4, reserved, raw_len 4096
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, // offset 0x2000
            0x1f, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, // an LZ4 block
        ];
        assert_eq!(Encoding::parse(&bytes), Ok(Encoding::Lz4 { raw_len: 4096 }));
        let mut out = [0xa5u8; 24];
        out.copy_from_slice(&bytes);
        out[1..8].fill(0xa5);
        Encoding::Lz4 { raw_len: 4096 }.emit(&mut out);
        assert_eq!(out, bytes);
        // A raw sub-header, as every version-1 client writes it.
        Data::emit_subheader(Section::Memory, 0x2000, &mut out);
        assert_eq!(Encoding::parse(&out), Ok(Encoding::Raw));
        assert_eq!(Encoding::parse(&out[..field::data::DATA - 1]), Err(ProtoError::Truncated));
    }

    #[test]
    fn data_encoding_rejects_unknown_codes_and_bad_lengths() {
        let mut p = [0u8; 17];
        Data::emit_subheader(Section::Memory, 0, &mut p);
        p[1] = 2;
        assert_eq!(Encoding::parse(&p), Err(ProtoError::BadField(Field::Encoding)));
        // Raw with a length, LZ4 without one or past the largest block.
        for (code, len) in [(0u8, 1u32), (1, 0), (1, MAX_BLOCK as u32 + 1)] {
            p[1] = code;
            p[4..8].copy_from_slice(&len.to_be_bytes());
            assert_eq!(Encoding::parse(&p), Err(ProtoError::BadField(Field::RawLen)), "code {code} len {len}");
        }
        p[4..8].copy_from_slice(&(MAX_BLOCK as u32).to_be_bytes());
        assert_eq!(Encoding::parse(&p), Ok(Encoding::Lz4 { raw_len: MAX_BLOCK as u32 }));
    }

    #[test]
    fn ack_golden_bytes() {
        let bytes = [0x00, 0x02, 0x01, 0x00, 0x05, 0x80];
        golden(Ack { stop: true, bitmap: &[0x05, 0x80] }, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn finish_golden_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // total bytes
            0xca, 0xfe, 0xba, 0xbe, 0x00, 0x00, 0x00, 0x03, // stream CRC, flags
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, // zero pages
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // retransmissions
        ];
        let m = Finish {
            total_bytes: 0x0102_0304_0506_0708,
            stream_crc: 0xcafe_babe,
            flags: 3,
            zero_pages: 9,
            retransmissions: 2,
        };
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn finish_ack_golden_bytes() {
        let bytes = [0x01, 0x01, 0x00, 0x00];
        let m = FinishAck { status: FinishStatus::CrcMismatch, action: AfterDump::Halt };
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn abort_golden_bytes() {
        let bytes = [0x00, 0x05, 0x00, 0x08, b'b', b'a', b'd', b' ', b'p', b'a', b'g', b'e'];
        let m = Abort(TextMessage { code: abort_reason::MEMORY_UNREADABLE, text: b"bad page" });
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn error_golden_bytes() {
        let bytes = [0x00, 0x02, 0x00, 0x04, b'w', b'h', b'o', b'?'];
        let m = ServerError(TextMessage { code: error_code::UNKNOWN_COOKIE, text: b"who?" });
        golden(m, &bytes, bytes.len(), |a, b| a == b);
    }

    #[test]
    fn each_side_parses_only_what_the_other_sends() {
        let payloads: [(MessageType, &[u8]); 10] = [
            (
                MessageType::Hello,
                &[2, 0, 0, 0, 0, 1, 5, 0xdc, 10, 0, 2, 15, 0, 0, 16, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, b'a'],
            ),
            (MessageType::HelloAck, &[0, 0, 0, 0, 0, 0, 0x23, 0x0c]),
            (
                MessageType::Crash,
                &[
                    1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            (MessageType::Decision, &[0, 0, 0, 0, 0, 0, 5, 0xc0]),
            (MessageType::Data, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'x']),
            (MessageType::Ack, &[0, 0, 0, 0]),
            (MessageType::Finish, &[0; 32]),
            (MessageType::FinishAck, &[0, 0, 0, 0]),
            (MessageType::Abort, &[0, 1, 0, 0]),
            (MessageType::Error, &[0, 1, 0, 0]),
        ];
        for (t, p) in payloads {
            let h = Header::v1(t, 0, 1, 0);
            assert!(Message::parse(&h, p).is_ok(), "{t:?}");
            let (mine, theirs) = (Message::parse_from_client(&h, p), Message::parse_from_server(&h, p));
            if t.from_client() {
                assert!(mine.is_ok() && theirs == Err(ProtoError::BadField(Field::MsgType)), "{t:?}");
            } else {
                assert!(theirs.is_ok() && mine == Err(ProtoError::BadField(Field::MsgType)), "{t:?}");
            }
        }
    }

    #[test]
    fn wire_enum_names_are_distinct_snake_case_and_every_value_round_trips() {
        fn check<T: Copy + PartialEq + core::fmt::Debug>(
            all: &[T],
            name: fn(T) -> &'static str,
            raw: fn(T) -> u8,
            back: fn(u8) -> Result<T, ProtoError>,
        ) {
            for (i, v) in all.iter().enumerate() {
                assert_eq!(back(raw(*v)), Ok(*v));
                let n = name(*v);
                assert!(!n.is_empty() && n.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'), "{n}");
                assert!(all[..i].iter().all(|w| name(*w) != n), "{n} twice");
            }
        }
        check(Verdict::ALL, Verdict::name, |v| v as u8, Verdict::try_from);
        check(DecisionReason::ALL, DecisionReason::name, |v| v as u8, DecisionReason::try_from);
        check(FinishStatus::ALL, FinishStatus::name, |v| v as u8, FinishStatus::try_from);
        check(CrashKind::ALL, CrashKind::name, |v| v as u8, CrashKind::try_from);
        check(Section::ALL, Section::name, |v| v as u8, Section::try_from);
        assert_eq!(Section::Excluded as u8, 5);
        check(HelloStatus::ALL, HelloStatus::name, |v| v as u8, HelloStatus::try_from);
        assert_eq!(HelloStatus::FeatureUnsupported as u8, 5);
        check(AfterDump::ALL, AfterDump::name, |v| v as u8, AfterDump::try_from);
        assert_eq!(DecisionReason::BadAnnouncement.name(), "bad_announcement");
        assert_eq!(FinishStatus::UnknownSession.name(), "unknown_session");
    }

    #[test]
    fn excluded_run_golden_bytes() {
        use crate::proto::PageClass;
        #[rustfmt::skip]
        let bytes = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x03, // start pfn 0x2003
            0x00, 0x00, 0x01, 0x00,                         // pages 256
            0x08,                                           // class: user (-d bit 8)
            0x00, 0x00, 0x00,                               // reserved
        ];
        let run = ExcludedRun { start_pfn: 0x2003, pages: 256, class: PageClass::User };
        assert_eq!(ExcludedRun::parse(&bytes), Ok(run));
        let mut out = [0xffu8; ExcludedRun::WIRE_LEN];
        run.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn excluded_runs_round_trip_for_every_class() {
        use crate::proto::PageClass;
        let runs: Vec<ExcludedRun> = PageClass::EXCLUDABLE
            .iter()
            .enumerate()
            .map(|(i, &class)| ExcludedRun { start_pfn: 1 << (i * 10), pages: u32::MAX >> i, class })
            .collect();
        let mut data = vec![0u8; runs.len() * ExcludedRun::WIRE_LEN];
        for (run, out) in runs.iter().zip(data.chunks_exact_mut(ExcludedRun::WIRE_LEN)) {
            run.emit(out);
        }
        let back: Vec<ExcludedRun> = ExcludedRun::parse_all(&data).unwrap().map(Result::unwrap).collect();
        assert_eq!(back, runs);
    }

    #[test]
    fn bad_excluded_runs_are_rejected_with_the_field_named() {
        use crate::proto::PageClass;
        let mut good = [0u8; ExcludedRun::WIRE_LEN];
        ExcludedRun { start_pfn: 7, pages: 1, class: PageClass::Free }.emit(&mut good);
        let with = |at: usize, v: u8| {
            let mut b = good;
            b[at] = v;
            ExcludedRun::parse(&b)
        };
        assert_eq!(with(field::excluded_run::PAGES.end - 1, 0), Err(ProtoError::BadField(Field::ExcludedPages)));
        for class in [0, 1, 3, 32, 0xff] {
            assert_eq!(with(field::excluded_run::CLASS.start, class), Err(ProtoError::BadField(Field::ExcludedClass)));
        }
        assert_eq!(with(field::excluded_run::RESERVED.start, 1), Err(ProtoError::BadField(Field::ExcludedReserved)));
        assert_eq!(ExcludedRun::parse(&good[..15]), Err(ProtoError::Truncated));
        assert!(ExcludedRun::parse_all(&good[..15]).is_err());
        assert!(ExcludedRun::parse_all(&[]).is_err());
        let mut two = [good, good].concat();
        two.push(0);
        assert!(ExcludedRun::parse_all(&two).is_err(), "a partial record");
    }
}
