//! The crashing kernel's side: install at boot (ARP + HELLO), dump at crash time; or
//! prepare at boot without touching the NIC and do all of it at crash time.
//!
//! ```text
//! install: reset NIC → ARP next hop (cached for good) → HELLO ⇄ HELLO_ACK
//! prepare: nothing on the wire (cookie and handshake key drawn, buffers taken)
//! dump:    reset NIC → [prepared: ARP → HELLO ⇄ HELLO_ACK] → CRASH ⇄ DECISION
//!          → DATA window (SACK, RTO) → FINISH ⇄ FINISH_ACK
//! ```

#[cfg(feature = "compression")]
mod compress;
pub mod congestion;
#[cfg(feature = "profile")]
mod profile;
#[cfg(test)]
mod sim;
mod stream;
pub mod window;

#[cfg(feature = "compression")]
pub use compress::{Block, LZ4_SCRATCH, Lz4Scratch};
#[cfg(feature = "profile")]
pub use profile::SendProfile;

pub use crate::config::{ClientName, Config, DEFAULT_WINDOW, MAX_SERVERS, Server, Timeouts};
pub use stream::{ExtraState, MAX_EXTRA_BYTES, MemoryStats};
pub use window::{PacketSlot, RtoBounds, SLOT_PAYLOAD, WindowMode};

use crate::clock::{Clock, Deadline};
#[cfg(feature = "encryption")]
use crate::crypto::{self, NkInitiator, OpenError, ReplayWindow, Transport};
use crate::log::LogSource;
use crate::memory::{ExcludeSet, MemoryMap, MemorySource, PAGE_SIZE};
use crate::net::{EthernetAddress, Ipv4Address, LinkCounters, NetError, UdpLink};
#[cfg(feature = "netconsole")]
use crate::netconsole::{Netconsole, NetconsoleConfig, Severity};
use crate::nic::{NicError, PolledNic};
use crate::proto::{
    Abort, Ack, AddressTable, AfterDump, Check, CpuRegisters, Crash, CrashKind, Decision, DecisionReason,
    FINISH_MEMORY_INCOMPLETE, FINISH_MEMORY_SKIPPED, Finish, FinishAck, FinishStatus, HEADER_LEN, Header, Hello,
    HelloAck, HelloAckV2, HelloStatus, HelloTerms, HelloV2, KEY_ID_LEN, MAX_SACK_BYTES, MessageType, RangeTable,
    RegisterRecord, Repr, TextMessage, VERSION_1, VERSION_2, Verdict, abort_reason, error_code, features, field, flags,
};
use rand_core::RngCore;
use stream::DataStream;
use window::SackWindow;

/// The memory the crash path needs, allocated by the kernel before any crash (usually a
/// `static`): a page buffer and `W` packet slots (the window's copies); with
/// `compression`, the LZ4 encoder's hash table and output buffer too.
pub struct CrashBuffers<const W: usize> {
    page: [u8; PAGE_SIZE],
    slots: [PacketSlot; W],
    #[cfg(feature = "compression")]
    lz4: Lz4Scratch,
}

/// The crash buffers, lent to one server's attempt at the dump.
struct StreamBuffers<'b> {
    page: &'b mut [u8; PAGE_SIZE],
    slots: &'b mut [PacketSlot],
    #[cfg(feature = "compression")]
    lz4: Option<&'b mut Lz4Scratch>,
}

/// The features this build asks for besides those of its configuration.
#[cfg(feature = "compression")]
const ASKED: u32 = features::COMPRESSED;
#[cfg(not(feature = "compression"))]
const ASKED: u32 = 0;

impl<const W: usize> Default for CrashBuffers<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> CrashBuffers<W> {
    /// Zeroed buffers, usable in a `static`.
    pub const fn new() -> Self {
        CrashBuffers {
            page: [0; PAGE_SIZE],
            slots: [PacketSlot::EMPTY; W],
            #[cfg(feature = "compression")]
            lz4: Lz4Scratch::new(),
        }
    }
    /// Bytes this buffer set occupies.
    pub const SIZE: usize = core::mem::size_of::<Self>();
}

/// Why install failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// The NIC failed to reset or send.
    Nic(NicError),
    /// No route to the server, or no ARP reply from the next hop.
    Net(NetError),
    /// No HELLO_ACK after every attempt.
    ServerSilent,
    /// The server refused the registration.
    Refused,
    /// The cookie source failed to produce a usable cookie.
    NoEntropy,
    /// The server requires encryption (HELLO_ACK `ENCRYPTION_REQUIRED`) and this client
    /// has no server key.
    EncryptionRequired,
    /// With a server key: the server did not prove that it holds the key (its message 2
    /// did not verify, or it said the key is unknown or the handshake failed) before the
    /// HELLO attempts ran out.
    ServerKeyMismatch,
    /// With a server key: the server would register this client only without encryption
    /// (it speaks version 1 only, or has no keys). The client never falls back.
    Insecure,
    /// The configuration lists servers with a key and servers without one: a dump that
    /// failed over from an encrypted server to a plaintext one would send in the clear
    /// what the key was there to protect. Give every server a key, or none.
    MixedEncryption,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InstallError::Nic(e) => write!(f, "NIC error: {e}"),
            InstallError::Net(e) => write!(f, "network error: {e}"),
            InstallError::ServerSilent => f.write_str("no HELLO_ACK from the server"),
            InstallError::Refused => f.write_str("the server refused the registration"),
            InstallError::NoEntropy => f.write_str("no usable random number"),
            InstallError::EncryptionRequired => f.write_str("the server requires encryption: configure its key"),
            InstallError::ServerKeyMismatch => f.write_str("the server did not prove it holds the pinned key"),
            InstallError::Insecure => f.write_str("the server would register this client only in plaintext"),
            InstallError::MixedEncryption => {
                f.write_str("some servers have a key and some none: give every server a key, or none")
            }
        }
    }
}

/// A failed [`Netdump::install`] (or a [`Netdump::prepare`] without entropy): the error,
/// and everything install was given back, so that the kernel can keep using the NIC
/// and retry later (e.g. once the server is up) or [`prepare`](Netdump::prepare) instead.
pub struct InstallFailure<N, C, const W: usize> {
    /// Why install failed.
    pub error: InstallError,
    /// The NIC, as install left it (reset, when the failure came after the reset).
    pub nic: N,
    /// The clock.
    pub clock: C,
    /// The crash buffers, unused.
    pub buffers: &'static mut CrashBuffers<W>,
}

impl<N, C, const W: usize> core::fmt::Debug for InstallFailure<N, C, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.error)
    }
}

impl<N, C, const W: usize> core::fmt::Display for InstallFailure<N, C, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl From<NetError> for InstallError {
    fn from(e: NetError) -> Self {
        InstallError::Net(e)
    }
}

/// The phase of a dump in which the server went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for DECISION after CRASH.
    Announce,
    /// Streaming DATA: no ACK progress.
    Data,
    /// Waiting for FINISH_ACK after FINISH.
    Finish,
}

/// Why a dump did not end verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpError {
    /// The crash buffers were already used by an earlier dump.
    AlreadyDumped,
    /// The NIC failed to reset, send or receive.
    Nic(NicError),
    /// No answer within the configured bound.
    ServerSilent(Phase),
    /// The server's DECISION was ABORT.
    Refused(DecisionReason),
    /// The server set STOP in an ACK.
    StoppedByServer,
    /// The server answered FINISH with something other than VERIFIED.
    NotVerified(FinishStatus),
    /// The server reported an error (ERROR message code).
    ServerError(u16),
    /// An encrypted session used up its send nonces (2^64 - 1 packets): it cannot send
    /// another packet without reusing one.
    NoncesExhausted,
    /// A [prepared](Netdump::prepare) client could not register at crash time (no ARP
    /// reply, no HELLO_ACK, refused, …): nothing was announced.
    NotRegistered(InstallError),
}

impl From<NicError> for DumpError {
    fn from(e: NicError) -> Self {
        DumpError::Nic(e)
    }
}

impl core::fmt::Display for DumpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DumpError::AlreadyDumped => f.write_str("the crash buffers were already used"),
            DumpError::Nic(e) => write!(f, "NIC error: {e}"),
            DumpError::ServerSilent(p) => write!(f, "server silent during {p:?}"),
            DumpError::Refused(why) => write!(f, "server refused the dump ({why:?})"),
            DumpError::StoppedByServer => f.write_str("server stopped the dump"),
            DumpError::NotVerified(s) => write!(f, "server did not verify the dump ({s:?})"),
            DumpError::ServerError(c) => write!(f, "server error code {c}"),
            DumpError::NoncesExhausted => f.write_str("the session's nonces are used up"),
            DumpError::NotRegistered(e) => write!(f, "registration at crash time failed: {e}"),
        }
    }
}

/// What the crash was, for the announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashInfo<'a> {
    /// Panic, CPU exception or requested.
    pub kind: CrashKind,
    /// The exception vector for [`CrashKind::Exception`], else 0.
    pub vector: u8,
    /// The exception's error code for [`CrashKind::Exception`], else 0.
    pub error_code: u64,
    /// The faulting address (CR2) for a page fault, else 0.
    pub fault_address: u64,
    /// Index of the crashing CPU: its register record is `cpus[crashing_cpu]` in
    /// [`Netdump::dump`].
    pub crashing_cpu: u16,
    /// The panic or exception message, UTF-8; at most
    /// [`MAX_TEXT`](crate::proto::MAX_TEXT) bytes are sent.
    pub message: &'a [u8],
    /// Code addresses of the crashing stack, innermost first, at most
    /// [`MAX_FRAMES`](crate::proto::MAX_FRAMES) (more are not sent): the faulting `rip`
    /// of a CPU exception, then return addresses. The server's crash signature hashes
    /// them; see [`crate::arch::x86_64::StackTrace`].
    pub frames: &'a [u64],
}

impl<'a> CrashInfo<'a> {
    /// A panic on `crashing_cpu` with its message and stack.
    pub fn panic(crashing_cpu: u16, message: &'a [u8], frames: &'a [u64]) -> Self {
        CrashInfo { kind: CrashKind::Panic, vector: 0, error_code: 0, fault_address: 0, crashing_cpu, message, frames }
    }
}

/// The outcome of a verified dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpReport {
    /// What the server asked for: all of the dump, or everything but memory.
    pub verdict: Verdict,
    /// What the server says to do next: reboot or halt.
    pub action: AfterDump,
    /// DATA packets in the stream (each counted once).
    pub packets: u32,
    /// DATA bytes in the stream, sub-headers excluded.
    pub bytes: u64,
    /// DATA packets sent again.
    pub retransmissions: u64,
    /// Pages sent, skipped as zero and unreadable.
    pub memory: MemoryStats,
    /// The whole dump, from [`Netdump::dump`]'s call to the FINISH_ACK, microseconds.
    pub elapsed_us: u64,
    /// The data phase alone: from the DECISION to the last acknowledgement.
    pub stream_us: u64,
    /// Frames received, sent and dropped by the link.
    pub link: LinkCounters,
    /// Server packets dropped by the client (bad CRC, cookie or type; in an encrypted
    /// session also those of [`sealing`](Self::sealing)).
    pub rejected: u64,
    /// The server packets an encrypted session dropped, by why.
    pub sealing: SealDrops,
    /// The protocol version the session spoke (1 or 2).
    pub version: u8,
    /// Whether every packet after the handshake was sealed.
    pub encrypted: bool,
    /// Whether memory went as LZ4 blocks where they paid (feature `compression`, granted
    /// and not turned off); [`MemoryStats`] counts them.
    pub compressed: bool,
    /// Index of the server that took the dump ([`Config::server`]'s order; 0 unless it
    /// failed over), and its address and port.
    pub server: usize,
    /// Its address and UDP port.
    pub server_addr: (Ipv4Address, u16),
    /// The servers tried before it and why each was left.
    pub attempts: Attempts,
    /// Where the data phase's time went, by step (feature `profile`).
    #[cfg(feature = "profile")]
    pub profile: SendProfile,
}

/// Server packets an encrypted client dropped, by why (all also counted in
/// [`DumpReport::rejected`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealDrops {
    /// Not sealed: once encrypted, the client takes only sealed packets.
    pub unsealed: u64,
    /// The tag did not verify: forged, altered, or of another session.
    pub bad_tag: u64,
    /// A nonce seen before (a replay), or too old to tell.
    pub replayed: u64,
}

/// Longest handshake message a HELLO_ACK v2 may carry to this client: NK message 2 with
/// the 16 bytes of terms as its payload.
/// Packets the send loop fills ahead, unsent, while an older one waits for a full NIC
/// ring (they leave in order once it has room): a quarter of a 32-frame ring.
const FILL_AHEAD: u32 = 8;

const MAX_MESSAGE_2: usize = 48 + HelloTerms::WIRE_LEN;
/// Length of NK message 1 with an empty payload (an ephemeral key and a tag).
const MESSAGE_1_LEN: usize = 48;
/// Largest plaintext of a server message the client opens: an ERROR with the longest text.
#[cfg(feature = "encryption")]
const MAX_SERVER_PLAINTEXT: usize = 512;
/// Bytes sealing adds to each packet's payload (docs/PROTOCOL.md, "Sealed packets").
const SEAL_OVERHEAD: usize = field::sealed::OVERHEAD;

/// An event from the server that passed every check.
#[derive(Clone, Copy)]
enum ServerEvent {
    HelloAck(HelloAck),
    /// A version-2 HELLO_ACK: its clear terms and its handshake message (read only by an
    /// encrypting client).
    #[cfg_attr(not(feature = "encryption"), allow(dead_code))]
    HelloAckV2 {
        terms: HelloTerms,
        // Only an encrypting client reads it: without `encryption` every event (the ACKs
        // of the send loop among them) would carry these bytes.
        #[cfg(feature = "encryption")]
        handshake: [u8; MAX_MESSAGE_2],
        len: usize,
    },
    /// An ERROR `UNSUPPORTED_VERSION` while registering (a version-1 server's answer to a
    /// version-2 HELLO, cookie 0).
    VersionRefused,
    Decision(Decision),
    Ack {
        cumulative: u32,
        stop: bool,
        bitmap: [u8; MAX_SACK_BYTES],
        len: usize,
    },
    FinishAck(FinishAck),
    Error(u16),
}

/// What an [`exchange`](Netdump::exchange) at crash time sends, again until answered.
#[derive(Clone, Copy)]
enum Request<'r> {
    /// The announcement, with its header flags (its sequence number the attempt's).
    Crash(&'r Crash<'r>, u16),
    /// FINISH, with the packets sent as its sequence number.
    Finish(u32, &'r Finish),
}

/// The answer an [`exchange`](Netdump::exchange) waits for: just it, where the whole
/// [`ServerEvent`] (an ACK's bitmap and all) was copied out of the loop.
enum Answer {
    Decision(Decision),
    FinishAck(FinishAck),
}

enum Polled {
    Idle,
    Other,
    Event(ServerEvent),
}

/// Why a datagram from the server's address was dropped (the last three only in an
/// encrypted session).
#[cfg_attr(not(feature = "encryption"), allow(dead_code))]
enum Reject {
    /// It failed the protocol's checks: header, CRC, cookie, type, version, payload.
    Checks,
    Unsealed,
    BadTag,
    Replayed,
}

/// The transport of an encrypted session and the nonces received from the server.
#[cfg(feature = "encryption")]
struct Secure {
    transport: Transport,
    replay: ReplayWindow,
}

/// What the HELLO exchange saw that did not register the client, to say why install
/// failed once the attempts ran out (an encrypting client acts only on what message 2
/// authenticates, so that a forged refusal cannot end its install early).
#[derive(Default)]
struct HelloEvidence {
    key_mismatch: bool,
    insecure: bool,
    refused: bool,
}

/// What the client keeps per dump server, so that moving on to the next server at
/// crash time needs no new registration with one registered at install: about 40 bytes
/// (with `encryption` about 450: the ephemeral key, the session's keys and its replay
/// window), [`MAX_SERVERS`] of them in [`Netdump`].
struct Session {
    server: Server,
    /// The cookie registered with this server (one drawn per server: a server learns no
    /// cookie another one could be sent).
    cookie: u64,
    /// The protocol version: 2, or 1 with a version-1 server.
    version: u8,
    /// Whether the server registered the client: at install, or at crash time.
    registered: bool,
    /// The features the server granted (HELLO_ACK v2 terms; 0 in version 1).
    granted: u32,
    /// Largest UDP payload for this server: the link's, lowered by HELLO_ACK and DECISION.
    max_payload: usize,
    /// The MAC of this server's next hop, once known.
    peer_mac: Option<EthernetAddress>,
    /// The handshake's ephemeral key, drawn before the HELLO that uses it (zero once
    /// used, and without a server key).
    #[cfg(feature = "encryption")]
    ephemeral: [u8; crypto::KEY_LEN],
    #[cfg(feature = "encryption")]
    secure: Option<Secure>,
}

impl Session {
    fn new(server: Server, cookie: u64, max_payload: usize) -> Self {
        Session {
            server,
            cookie,
            version: VERSION_2,
            registered: false,
            granted: 0,
            max_payload,
            peer_mac: None,
            #[cfg(feature = "encryption")]
            ephemeral: [0; crypto::KEY_LEN],
            #[cfg(feature = "encryption")]
            secure: None,
        }
    }
}

/// Why each server a dump tried was left, in the order tried (the configuration's):
/// every server before the one that took the dump, or all of them when none did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    left: [Option<DumpError>; MAX_SERVERS],
    tried: usize,
}

impl Attempts {
    /// Servers tried (the one that took the dump included).
    pub fn tried(&self) -> usize {
        self.tried
    }
    /// Why server `index` was left; `None` for the one that took the dump, and for one
    /// not tried.
    pub fn left(&self, index: usize) -> Option<DumpError> {
        self.left.get(index).copied().flatten()
    }
    /// The servers left, with why, in the order tried.
    pub fn iter(&self) -> impl Iterator<Item = (usize, DumpError)> + '_ {
        self.left.iter().enumerate().take(self.tried).filter_map(|(i, e)| e.map(|e| (i, e)))
    }
    fn record(&mut self, index: usize, error: Option<DumpError>) {
        if let Some(slot) = self.left.get_mut(index) {
            *slot = error;
            self.tried = self.tried.max(index + 1);
        }
    }
}

/// Whether a dump that failed with `e` on one server should go to the next one: yes
/// when the server was silent, could not register the client, refused for want of
/// capacity (try elsewhere, busy, no space), stopped or failed the dump midway; no for
/// a verdict another server would repeat (a hook's, a duplicate, a bad announcement)
/// and when the NIC itself failed.
// Out of line: smaller in the dump, once per server left.
#[inline(never)]
fn worth_another_server(e: &DumpError) -> bool {
    match e {
        DumpError::AlreadyDumped | DumpError::Nic(_) => false,
        DumpError::NotRegistered(
            InstallError::Nic(_) | InstallError::Net(NetError::Nic(_)) | InstallError::NoEntropy,
        ) => false,
        DumpError::Refused(why) => {
            matches!(why, DecisionReason::TryElsewhere | DecisionReason::Busy | DecisionReason::NoSpace)
        }
        _ => true,
    }
}

/// The installed client: a NIC, a clock, the server's cached MAC, the cookie and the
/// crash buffers. Keep it in a [`crate::crash_cell::CrashCell`].
pub struct Netdump<N: PolledNic, C: Clock> {
    nic: N,
    clock: C,
    /// The UDP link, aimed at the active server (its address, port and next hop's MAC).
    link: UdpLink,
    config: Config,
    memory_map: MemoryMap,
    /// The active server's session.
    session: Session,
    /// Index of the active server in [`Config::server`]'s order.
    active: usize,
    /// The other servers' sessions, by index; the active server's entry is a stale
    /// placeholder while its session is in `session`.
    parked: [Session; MAX_SERVERS],
    /// Why each server the last dump tried was left.
    attempts: Attempts,
    buffers: Option<(&'static mut [u8; PAGE_SIZE], &'static mut [PacketSlot])>,
    #[cfg(feature = "compression")]
    lz4: Option<&'static mut Lz4Scratch>,
    /// Whether to compress when `COMPRESSED` is granted ([`Netdump::set_compression`]).
    compress: bool,
    rejected: u64,
    sealing: SealDrops,
    /// The page size HELLO and CRASH announce (see [`Netdump::set_page_size`]).
    page_size: u32,
    /// True while HELLO is being exchanged (a version-1 server's ERROR counts then).
    registering: bool,
    /// The integrity check the kernel wants DATA to carry: XXH64 unless it chose CRC-32
    /// ([`set_integrity_check`](Self::set_integrity_check)); XXH64 only where granted.
    check: Check,
    window_mode: WindowMode,
    /// DATA bursts ring the NIC's doorbell once ([`Netdump::set_batched_doorbells`]).
    batched_doorbells: bool,
    /// Memory is read in place ([`Netdump::set_read_in_place`]).
    read_in_place: bool,
    extra: Option<ExtraState>,
    /// Console lines as syslog on the same NIC, when attached.
    #[cfg(feature = "netconsole")]
    netconsole: Option<Netconsole>,
}

impl<N: PolledNic, C: Clock> Netdump<N, C> {
    /// Installs netdump at boot: resets the NIC, resolves the next hop's MAC, draws the
    /// cookie from `rng`, and registers with the server (HELLO, bounded retries).
    ///
    /// The HELLO is version 2; a client without a server key that meets a version-1
    /// server falls back to a version-1 HELLO. With a server key (feature `encryption`)
    /// the ephemeral key of the Noise handshake is drawn from `rng` too, and every packet
    /// after the handshake is sealed.
    ///
    /// With several servers ([`Config::fallbacks`]) it registers with each in turn (each
    /// within its own ARP and HELLO bounds) and succeeds when at least one registered the
    /// client ([`server_registered`](Self::server_registered) says which); one that did not
    /// is tried again at the crash. It fails, with the first server's error, only when
    /// none did.
    ///
    /// On failure the NIC, the clock and the buffers come back in the [`InstallFailure`]:
    /// the kernel may retry later, or [`prepare`](Self::prepare) instead.
    // Called once: never inlined into the caller (a kernel's boot or panic path), so
    // its code stays netdump's own, and the panic handler stays small.
    #[inline(never)]
    pub fn install<const W: usize>(
        nic: N,
        clock: C,
        rng: &mut impl RngCore,
        config: Config,
        buffers: &'static mut CrashBuffers<W>,
        memory_map: MemoryMap,
    ) -> Result<Self, InstallFailure<N, C, W>> {
        let mut me = match Self::new_client(nic, clock, rng, config, memory_map) {
            Ok(me) => me,
            Err((error, nic, clock)) => return Err(InstallFailure { error, nic, clock, buffers }),
        };
        let connected = me.nic.reset().map_err(InstallError::Nic).and_then(|()| me.connect_all());
        match connected {
            Ok(()) => {
                me.take_buffers(buffers);
                Ok(me)
            }
            Err(error) => {
                let Netdump { nic, clock, .. } = me;
                Err(InstallFailure { error, nic, clock, buffers })
            }
        }
    }

    /// Prepares netdump at boot without touching the NIC: draws the cookie (and, with a
    /// server key, the handshake's ephemeral key) from `rng` and takes the buffers. No
    /// frame is sent or received and no NIC method but `mac_address` and `mtu` is called
    /// until [`dump`](Self::dump), which then takes the NIC over (reset), resolves the
    /// next hop's MAC (unless [`set_next_hop_mac`](Self::set_next_hop_mac) gave it),
    /// registers (HELLO, with the Noise handshake when encrypting) and announces the
    /// crash. For a kernel whose own driver owns the NIC until the crash (FreeBSD's
    /// netdump contacts its server only at panic time, too).
    ///
    /// Bounds at crash time, before the announcement: `arp_attempts × arp_retry_us` for
    /// ARP (none when the MAC is known) and `hello_attempts × hello_retry_us` for HELLO.
    /// Fails only without entropy ([`InstallError::NoEntropy`]).
    // Called once: never inlined into the caller (see `install`).
    #[inline(never)]
    pub fn prepare<const W: usize>(
        nic: N,
        clock: C,
        rng: &mut impl RngCore,
        config: Config,
        buffers: &'static mut CrashBuffers<W>,
        memory_map: MemoryMap,
    ) -> Result<Self, InstallFailure<N, C, W>> {
        match Self::new_client(nic, clock, rng, config, memory_map) {
            Ok(mut me) => {
                me.take_buffers(buffers);
                Ok(me)
            }
            Err((error, nic, clock)) => Err(InstallFailure { error, nic, clock, buffers }),
        }
    }

    /// A client that has not touched the NIC: the cookie and ephemeral key drawn, no
    /// buffers yet.
    // One copy for `install` and `prepare` (a kernel may link both).
    #[inline(never)]
    #[allow(clippy::result_large_err)]
    fn new_client(
        nic: N,
        clock: C,
        rng: &mut impl RngCore,
        config: Config,
        memory_map: MemoryMap,
    ) -> Result<Self, (InstallError, N, C)> {
        #[cfg(feature = "encryption")]
        {
            let servers = config.server_count();
            let keyed = (0..servers).filter_map(|i| config.server(i)).filter(|s| s.key.is_some()).count();
            if keyed != 0 && keyed != servers {
                return Err((InstallError::MixedEncryption, nic, clock));
            }
        }
        let link = UdpLink::new(config.net, nic.mac_address());
        let max_payload = link.max_payload(&nic);
        let mut parked: [Session; MAX_SERVERS] =
            core::array::from_fn(|_| Session::new(config.first_server(), 0, max_payload));
        for (i, session) in parked.iter_mut().enumerate().take(config.server_count()) {
            let Some(server) = config.server(i) else { break };
            // Per server: a cookie, then (with its key) the handshake's ephemeral key.
            let Some(cookie) = (0..4).map(|_| rng.next_u64()).find(|&c| c != 0 && c != u64::MAX) else {
                return Err((InstallError::NoEntropy, nic, clock));
            };
            *session = Session::new(server, cookie, max_payload);
            #[cfg(feature = "encryption")]
            if server.key.is_some() {
                rng.fill_bytes(&mut session.ephemeral);
                if session.ephemeral == [0; crypto::KEY_LEN] {
                    return Err((InstallError::NoEntropy, nic, clock));
                }
            }
        }
        let session = core::mem::replace(&mut parked[0], Session::new(config.first_server(), 0, max_payload));
        Ok(Netdump {
            nic,
            clock,
            link,
            config,
            memory_map,
            session,
            active: 0,
            parked,
            attempts: Attempts::default(),
            buffers: None,
            #[cfg(feature = "compression")]
            lz4: None,
            compress: true,
            rejected: 0,
            sealing: SealDrops::default(),
            page_size: PAGE_SIZE as u32,
            registering: true,
            check: Check::Xxh64,
            window_mode: WindowMode::Sliding,
            batched_doorbells: true,
            read_in_place: true,
            extra: None,
            #[cfg(feature = "netconsole")]
            netconsole: None,
        })
    }

    /// Keeps the crash buffers for the dump: the page buffer, the window's slots and (with
    /// `compression`) the LZ4 encoder's scratch.
    fn take_buffers<const W: usize>(&mut self, buffers: &'static mut CrashBuffers<W>) {
        let CrashBuffers { page, slots, .. } = buffers;
        self.buffers = Some((page, &mut slots[..]));
        #[cfg(feature = "compression")]
        {
            self.lz4 = Some(&mut buffers.lz4);
        }
    }

    /// On a NIC just reset: resolves the active server's next hop (unless known, also
    /// from another server with the same next hop) and registers.
    fn connect(&mut self) -> Result<(), InstallError> {
        if self.link.peer_mac().is_none() {
            let hop = self.link.config().next_hop()?;
            let known = (0..self.config.server_count())
                .filter(|&i| i != self.active)
                .filter(|&i| self.next_hop_of(&self.parked[i].server) == Ok(hop))
                .find_map(|i| self.parked[i].peer_mac);
            match known {
                Some(mac) => self.link.set_peer_mac(mac),
                None => {
                    let t = self.config.timeouts;
                    self.link.resolve(&mut self.nic, &self.clock, t.arp_retry_us, t.arp_attempts)?;
                }
            }
        }
        self.registering = true;
        let result = self.register();
        self.registering = false;
        let max_payload = result?;
        self.session.max_payload = self.session.max_payload.min(max_payload as usize);
        self.session.registered = true;
        Ok(())
    }

    /// Registers with every listed server, in order (each bounded as one server's
    /// install is); ends on the first that registered the client. Fails, with the first
    /// server's error, only when none did. One that did not answer is tried again at the
    /// crash.
    fn connect_all(&mut self) -> Result<(), InstallError> {
        let mut first_error = None;
        let mut registered = None;
        for i in 0..self.config.server_count() {
            self.select(i);
            match self.connect() {
                Ok(()) => {
                    registered.get_or_insert(i);
                }
                Err(InstallError::Nic(e)) => return Err(InstallError::Nic(e)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match registered {
            Some(i) => {
                self.select(i);
                Ok(())
            }
            None => {
                self.select(0);
                Err(first_error.unwrap_or(InstallError::ServerSilent))
            }
        }
    }

    /// The next hop towards `server`: the server on-link, else the gateway.
    fn next_hop_of(&self, server: &Server) -> Result<Ipv4Address, NetError> {
        crate::net::NetConfig { server_ip: server.ip, server_port: server.port, ..self.config.net }.next_hop()
    }

    /// Makes server `index` the active one: its session, its address and its next hop's
    /// MAC on the link. The one left keeps its session for later.
    // Out of line: smaller in the dump, once per server tried.
    #[inline(never)]
    fn select(&mut self, index: usize) {
        if index == self.active || index >= self.config.server_count() {
            return;
        }
        self.session.peer_mac = self.link.peer_mac();
        core::mem::swap(&mut self.session, &mut self.parked[self.active]);
        core::mem::swap(&mut self.session, &mut self.parked[index]);
        self.active = index;
        let server = self.session.server;
        self.link.retarget(server.ip, server.port, self.session.peer_mac);
    }

    /// Whether a server has registered this client (false for a
    /// [prepared](Self::prepare) client until its crash).
    pub fn registered(&self) -> bool {
        self.session.registered
            || (0..self.config.server_count()).any(|i| i != self.active && self.parked[i].registered)
    }

    /// Whether server `index` ([`Config::server`]'s order) has registered this client.
    pub fn server_registered(&self, index: usize) -> bool {
        match index {
            _ if index == self.active => self.session.registered,
            _ if index < self.config.server_count() => self.parked[index].registered,
            _ => false,
        }
    }

    /// The configuration installed.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Why each server the last [`dump`](Self::dump) tried was left (also in
    /// [`DumpReport::attempts`]); after a failed dump, the last one's error is the one
    /// returned.
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Gives the next hop's MAC address (the server's, or the gateway's), where the
    /// kernel knows it (from its own ARP cache): a [prepared](Self::prepare) client then
    /// sends no ARP request at crash time. It is the first server's next hop, and that of
    /// every other server with the same next hop (all of them, behind a gateway).
    pub fn set_next_hop_mac(&mut self, mac: [u8; 6]) {
        let mac = EthernetAddress(mac);
        let Some(first) = self.config.server(0) else { return };
        let hop = self.next_hop_of(&first);
        for i in 0..self.config.server_count() {
            let server = if i == self.active { self.session.server } else { self.parked[i].server };
            if hop.is_ok() && self.next_hop_of(&server) == hop {
                if i == self.active {
                    self.link.set_peer_mac(mac);
                } else {
                    self.parked[i].peer_mac = Some(mac);
                }
            }
        }
    }

    /// The page size HELLO and CRASH announce, bytes: [`PAGE_SIZE`] unless changed
    /// (e.g. 16 KiB on an AArch64 kernel with 16 KiB pages). Memory still travels in
    /// [`PAGE_SIZE`] pieces; every range of the memory map must be aligned to the
    /// announced size. Refused (false) unless a power of two of at least [`PAGE_SIZE`]
    /// bytes, or once registered at a size already announced.
    pub fn set_page_size(&mut self, bytes: u32) -> bool {
        let ok = bytes.is_power_of_two() && bytes as usize >= PAGE_SIZE && !self.registered();
        if ok {
            self.page_size = bytes;
        }
        ok
    }

    /// Whether the session is encrypted (every packet after the handshake sealed).
    pub fn encrypted(&self) -> bool {
        #[cfg(feature = "encryption")]
        return self.session.secure.is_some();
        #[cfg(not(feature = "encryption"))]
        false
    }

    /// The protocol version of the session: 2, or 1 with a version-1 server.
    pub fn protocol_version(&self) -> u8 {
        self.session.version
    }

    /// The features the server granted at registration ([`features`] bits; 0 with a
    /// version-1 server).
    pub fn granted_features(&self) -> u32 {
        self.session.granted
    }

    /// The integrity check the dump's DATA packets carry, with what the server granted so
    /// far: [`Check::Xxh64`] when it granted [`features::XXH64_CHECK`] (asked for by every
    /// unencrypted client) and the kernel did not choose CRC-32, [`Check::Crc32`]
    /// otherwise. A [prepared](Self::prepare) client learns what is granted at the crash.
    pub fn integrity_check(&self) -> Check {
        let granted = self.session.granted & features::XXH64_CHECK != 0 && !self.encrypted();
        if granted { self.check } else { Check::Crc32 }
    }

    /// Chooses the check DATA packets carry where the server grants XXH64 (e.g. CRC-32
    /// to compare, as the bench does); without the grant they carry CRC-32 whatever the
    /// choice. Returns whether DATA carries `check` with what is granted so far.
    pub fn set_integrity_check(&mut self, check: Check) -> bool {
        self.check = check;
        self.integrity_check() == check
    }

    /// The features HELLO asks for: encryption with a server key, page filtering with a
    /// filter configured, failover with more than one server, and the XXH64 check when
    /// not encrypting (an encrypted session's AEAD tags replace the checks).
    fn features_asked(&self) -> u32 {
        #[cfg(feature = "encryption")]
        let encrypting = self.session.server.key.is_some();
        #[cfg(not(feature = "encryption"))]
        let encrypting = false;
        let sealing = if encrypting { features::ENCRYPTED } else { features::XXH64_CHECK };
        let filter = if self.config.exclude.filters() { features::FILTER } else { 0 };
        let failover = if self.config.server_count() > 1 { features::FAILOVER } else { 0 };
        sealing | filter | failover | ASKED
    }

    /// Whether the dump will send LZ4 blocks: built with `compression`, granted by the
    /// server, and not turned off.
    pub fn compressing(&self) -> bool {
        cfg!(feature = "compression") && self.compress && self.session.granted & features::COMPRESSED != 0
    }

    /// Turns compression off (or on again) for the dump; it is on by default when the
    /// server granted it. An uncompressed dump of a kernel built with `compression` is
    /// byte for byte what a kernel without it sends.
    pub fn set_compression(&mut self, on: bool) {
        self.compress = on;
    }

    /// The HELLO exchange: at most `hello_attempts` HELLOs, `hello_retry` apart. Returns
    /// the largest payload the server accepts.
    fn register(&mut self) -> Result<u32, InstallError> {
        let (t, name) = (self.config.timeouts, self.config.name);
        #[cfg_attr(not(feature = "encryption"), allow(unused_mut))]
        let (mut handshake, mut key_id) = ([0u8; MESSAGE_1_LEN], [0u8; KEY_ID_LEN]);
        #[cfg(feature = "encryption")]
        let initiator = match self.session.server.key {
            Some(key) => {
                key_id = key.key_id();
                let mut ephemeral = self.session.ephemeral;
                zeroize::Zeroize::zeroize(&mut self.session.ephemeral);
                if ephemeral == [0; crypto::KEY_LEN] {
                    // Used up by an earlier registration, or never drawn.
                    return Err(InstallError::NoEntropy);
                }
                let mut prologue = [0u8; crate::proto::MAX_PROLOGUE];
                let hello =
                    HelloV2 { hello: self.hello_v1(&name), features: self.features_asked(), key_id, handshake: &[] };
                let n = hello.prologue(self.session.cookie, &mut prologue);
                let mut initiator = NkInitiator::new(&key, ephemeral, &prologue[..n]);
                zeroize::Zeroize::zeroize(&mut ephemeral);
                initiator.write_message_1(&[], &mut handshake).map_err(|_| InstallError::ServerKeyMismatch)?;
                Some(initiator)
            }
            None => None,
        };
        #[cfg(feature = "encryption")]
        let encrypting = initiator.is_some();
        #[cfg(not(feature = "encryption"))]
        let encrypting = false;
        let features = self.features_asked();
        let handshake = if encrypting { &handshake[..] } else { &[][..] };

        let mut evidence = HelloEvidence::default();
        for attempt in 0..t.hello_attempts {
            // Written straight into the frame, in the session's version.
            let hello = HelloV2 { hello: self.hello_v1(&name), features, key_id, handshake };
            let v2 = self.session.version == VERSION_2;
            let len = if v2 { hello.wire_len() } else { hello.hello.wire_len() };
            let fill = |p: &mut [u8]| if v2 { hello.emit(p) } else { hello.hello.emit(p) };
            match self.send_control(MessageType::Hello, attempt, 0, len, &fill) {
                Ok(()) | Err(DumpError::Nic(NicError::RingFull)) => {}
                Err(DumpError::Nic(e)) => return Err(InstallError::Nic(e)),
                Err(_) => return Err(InstallError::Refused),
            }
            let retry = Deadline::after(&self.clock, t.hello_retry_us);
            while !retry.passed(&self.clock) {
                let Polled::Event(event) = self.poll_server().map_err(InstallError::Nic)? else { continue };
                match event {
                    ServerEvent::VersionRefused if encrypting => evidence.insecure = true,
                    ServerEvent::VersionRefused => {
                        // A version-1 server: say HELLO in its version, at once.
                        self.session.version = VERSION_1;
                        break;
                    }
                    ServerEvent::HelloAck(ack) if self.session.version == VERSION_1 => {
                        return match ack.status {
                            HelloStatus::Registered => Ok(ack.max_payload),
                            _ => Err(InstallError::Refused),
                        };
                    }
                    #[cfg(feature = "encryption")]
                    ServerEvent::HelloAckV2 { terms, handshake, len } if encrypting => {
                        if let Some(initiator) = &initiator
                            && let Some(result) =
                                self.finish_handshake(initiator, &terms, &handshake[..len], &mut evidence)
                        {
                            return result;
                        }
                    }
                    ServerEvent::HelloAckV2 { terms, .. } => {
                        return match terms.status {
                            HelloStatus::Registered => {
                                // A server grants only what was asked; more is not trusted.
                                self.session.granted = terms.features & features;
                                Ok(terms.max_payload)
                            }
                            HelloStatus::EncryptionRequired => Err(InstallError::EncryptionRequired),
                            _ => Err(InstallError::Refused),
                        };
                    }
                    // Unauthenticated: an encrypting client does not act on it.
                    ServerEvent::Error(_) if !encrypting => return Err(InstallError::Refused),
                    _ => {}
                }
            }
        }
        Err(if evidence.key_mismatch {
            InstallError::ServerKeyMismatch
        } else if evidence.insecure {
            InstallError::Insecure
        } else if evidence.refused {
            InstallError::Refused
        } else {
            InstallError::ServerSilent
        })
    }

    /// A HELLO_ACK v2 to an encrypting client: only what message 2 authenticates counts.
    /// `Some` ends the exchange; `None` waits on (a clear refusal is noted as evidence).
    #[cfg(feature = "encryption")]
    fn finish_handshake(
        &mut self,
        initiator: &NkInitiator,
        clear: &HelloTerms,
        message_2: &[u8],
        evidence: &mut HelloEvidence,
    ) -> Option<Result<u32, InstallError>> {
        if message_2.is_empty() {
            match clear.status {
                HelloStatus::UnknownKey | HelloStatus::HandshakeFailed => evidence.key_mismatch = true,
                HelloStatus::FeatureUnsupported | HelloStatus::Registered => evidence.insecure = true,
                _ => evidence.refused = true,
            }
            return None;
        }
        let mut payload = [0u8; MAX_MESSAGE_2];
        let established = match initiator.read_message_2(message_2, &mut payload) {
            Ok(e) => e,
            Err(_) => {
                evidence.key_mismatch = true;
                return None;
            }
        };
        let Ok(terms) = HelloTerms::parse(&payload[..established.payload_len]) else {
            evidence.key_mismatch = true;
            return None;
        };
        Some(match terms.status {
            HelloStatus::Registered if terms.features & features::ENCRYPTED != 0 => {
                self.session.granted = terms.features & self.features_asked();
                self.session.secure = Some(Secure { transport: established.transport, replay: ReplayWindow::new() });
                Ok(terms.max_payload)
            }
            HelloStatus::Registered => Err(InstallError::Insecure),
            _ => Err(InstallError::Refused),
        })
    }

    /// The 64-bit cookie this client registered with (with the active server: after
    /// install the first that registered it); every packet carries it.
    pub fn cookie(&self) -> u64 {
        self.session.cookie
    }
    /// The UDP link to the server, with its counters.
    pub fn link(&self) -> &UdpLink {
        &self.link
    }
    /// The NIC, for the kernel's own frames between crashes; [`dump`](Self::dump) resets
    /// it before use.
    pub fn nic(&mut self) -> &mut N {
        &mut self.nic
    }
    /// The clock every wait is measured with.
    pub fn clock(&self) -> &C {
        &self.clock
    }
    /// How the window releases packets ([`WindowMode::Sliding`] unless changed).
    pub fn set_window_mode(&mut self, mode: WindowMode) {
        self.window_mode = mode;
    }
    /// Whether a burst of DATA rings the NIC's doorbell once, after its last frame
    /// ([`PolledNic::transmit_deferred`]; the default), or once per frame (off: for
    /// comparison in `cargo xtask bench`, or for a driver whose deferred path misbehaves).
    pub fn set_batched_doorbells(&mut self, on: bool) {
        self.batched_doorbells = on;
    }
    /// Whether the dump tests each page for zeros where it is and reads it straight into
    /// its packets ([`MemorySource::is_zero`]; the default), or loads it into the page
    /// buffer first (off: for comparison in `cargo xtask bench`). LZ4 compression always
    /// encodes from the page buffer.
    pub fn set_read_in_place(&mut self, on: bool) {
        self.read_in_place = on;
    }

    #[cfg(feature = "netconsole")]
    /// Sends console lines to a syslog collector too, on this NIC ([`crate::netconsole`]):
    /// resolves the collector's MAC now (install time, bounded by the ARP timeouts).
    pub fn attach_netconsole(&mut self, config: NetconsoleConfig) -> Result<(), NetError> {
        let mut console = Netconsole::new(config, self.nic.mac_address());
        console.resolve(&mut self.nic, &self.clock, &self.config.timeouts)?;
        self.netconsole = Some(console);
        Ok(())
    }

    #[cfg(feature = "netconsole")]
    /// The netconsole sender, when attached.
    pub fn netconsole(&self) -> Option<&Netconsole> {
        self.netconsole.as_ref()
    }

    #[cfg(feature = "netconsole")]
    /// Console output in any pieces: complete lines go to the netconsole collector.
    /// Normal-time use goes through [`crate::CrashCell::try_with`].
    pub fn console_write(&mut self, bytes: &[u8]) {
        if let Some(c) = self.netconsole.as_mut() {
            c.write(&mut self.nic, &self.clock, bytes);
        }
    }

    #[cfg(feature = "netconsole")]
    /// One console line to the collector at `severity` (e.g. the panic message, from
    /// the panic handler before [`dump`](Self::dump)); false when it was not sent.
    pub fn console_line(&mut self, severity: Severity, line: &[u8]) -> bool {
        match self.netconsole.as_mut() {
            Some(c) => c.send_line(&mut self.nic, &self.clock, severity, line).is_ok(),
            None => false,
        }
    }

    #[cfg(feature = "netconsole")]
    /// Waits at most `bound_us` for queued console lines to leave the NIC.
    pub fn console_drain(&mut self, bound_us: u64) {
        if let Some(c) = self.netconsole.as_mut() {
            c.drain(&mut self.nic, &self.clock, bound_us);
        }
    }

    #[cfg(feature = "netconsole")]
    /// A line about the dump itself, sent where no DATA is in flight.
    fn dump_note(&mut self, severity: Severity, args: core::fmt::Arguments<'_>) {
        if self.netconsole.is_some() {
            let mut text = crate::text::TextBuf::<160>::new();
            let _ = core::fmt::Write::write_fmt(&mut text, args);
            self.console_line(severity, text.as_bytes());
        }
    }

    /// Replaces the memory map announced at crash time (e.g. after memory hot-add).
    pub fn set_memory_map(&mut self, map: MemoryMap) {
        self.memory_map = map;
    }

    /// Registers the function that writes the kernel's extra state (a task list,
    /// counters), sent after the memory image as the EXTRA section — also when the server
    /// skips the memory. See [`ExtraState`] for what it may do; at most
    /// [`MAX_EXTRA_BYTES`] are sent.
    pub fn set_extra_state(&mut self, extra: ExtraState) {
        self.extra = Some(extra);
    }

    /// Dumps: takes the NIC over, registers if [prepared](Self::prepare), announces the
    /// crash, streams log, registers, memory and extra state through the window, and
    /// finishes. Every wait is bounded by `Timeouts`. x86_64 register records; see
    /// [`dump_registers`](Self::dump_registers) for other machines.
    // Called once: never inlined into the caller (a kernel's boot or panic path), so
    // its code stays netdump's own, and the panic handler stays small.
    #[inline(never)]
    pub fn dump(
        &mut self,
        crash: &CrashInfo<'_>,
        cpus: &[RegisterRecord],
        memory: &dyn MemorySource,
        log: Option<&dyn LogSource>,
    ) -> Result<DumpReport, DumpError> {
        self.dump_registers(crash, CpuRegisters::X86_64(cpus), memory, log)
    }

    /// [`dump`](Self::dump) with the register records of any machine: the CRASH
    /// announcement names the machine, and the server lays the vmcore out for it.
    ///
    /// With several servers ([`Config::fallbacks`]) the dump goes to the first; it moves
    /// on to the next when a server cannot register the client, is silent within its
    /// bound, refuses for want of capacity, or stops or fails the dump midway (which then
    /// starts again from the beginning on the next). The error of a dump no server took
    /// is the last server's; [`attempts`](Self::attempts) says why each was left.
    pub fn dump_registers(
        &mut self,
        crash: &CrashInfo<'_>,
        cpus: CpuRegisters<'_>,
        memory: &dyn MemorySource,
        log: Option<&dyn LogSource>,
    ) -> Result<DumpReport, DumpError> {
        let started = self.clock.now_us();
        let (page, slots) = self.buffers.take().ok_or(DumpError::AlreadyDumped)?;
        #[cfg(feature = "compression")]
        let mut lz4 = self.lz4.take();
        self.attempts = Attempts::default();
        self.nic.reset()?;
        let servers = self.config.server_count();
        let mut result = Err(DumpError::ServerSilent(Phase::Announce));
        for index in 0..servers {
            self.select(index);
            let last = index + 1 == servers;
            let mut buffers = StreamBuffers {
                page: &mut *page,
                slots: &mut *slots,
                #[cfg(feature = "compression")]
                lz4: lz4.as_deref_mut(),
            };
            result = self.dump_to_active(crash, cpus, memory, log, &mut buffers, last);
            match result {
                Ok(ref mut report) => {
                    self.attempts.record(index, None);
                    report.elapsed_us = self.clock.now_us().saturating_sub(started);
                    report.server = index;
                    report.server_addr = (self.session.server.ip, self.session.server.port);
                    report.attempts = self.attempts;
                    break;
                }
                Err(e) => {
                    self.attempts.record(index, Some(e));
                    if !worth_another_server(&e) {
                        break;
                    }
                }
            }
        }
        result
    }

    /// The dump to the active server: registers if it has not, announces the crash,
    /// streams and finishes. `last`: no server is left after this one (CRASH says so to a
    /// server that granted failover).
    // Not inlined into `dump_registers`' loop over the servers: smaller (the crash-time
    // registration, the stream and FINISH keep their own frame).
    #[inline(never)]
    fn dump_to_active(
        &mut self,
        crash: &CrashInfo<'_>,
        cpus: CpuRegisters<'_>,
        memory: &dyn MemorySource,
        log: Option<&dyn LogSource>,
        buffers: &mut StreamBuffers<'_>,
        last: bool,
    ) -> Result<DumpReport, DumpError> {
        if !self.session.registered {
            self.connect().map_err(DumpError::NotRegistered)?;
        }
        let log_len = log.map_or(0, |l| l.freeze_len() as u64);

        let map = self.memory_map;
        // Not `clamp`: the same count without its check of the (constant) bounds, 35 bytes.
        #[allow(clippy::manual_clamp)]
        let cpu_count = cpus.len().max(1).min(crate::proto::MAX_CPUS) as u16;
        let announce = Crash {
            kind: crash.kind,
            vector: crash.vector,
            cpu_count,
            crashing_cpu: crash.crashing_cpu.min(cpu_count - 1),
            error_code: crash.error_code,
            fault_address: crash.fault_address,
            page_size: self.page_size,
            machine: cpus.machine(),
            log_len,
            ranges: RangeTable::Ranges(map.ranges()),
            frames: AddressTable::Addresses(crash.frames),
            message: crash.message,
        };
        let announce_flags =
            if last && self.session.granted & features::FAILOVER != 0 { flags::LAST_SERVER } else { 0 };
        let decision = match self.exchange(
            self.config.timeouts.announce_retry_us,
            self.config.timeouts.announce_timeout_us,
            Request::Crash(&announce, announce_flags),
        )? {
            Some(Answer::Decision(d)) => Ok(d),
            _ => Err(DumpError::ServerSilent(Phase::Announce)),
        }
        // Best effort: a server that hears us but is not heard learns why at once.
        .inspect_err(|_| self.send_abort(abort_reason::SERVER_SILENT, b"no DECISION"))?;
        self.session.max_payload = self.session.max_payload.min(decision.max_payload as usize);
        #[cfg(feature = "netconsole")]
        {
            let server = (self.session.server.ip, self.session.server.port);
            self.dump_note(
                Severity::Critical,
                format_args!(
                    "netdump: dumping to {}:{}: {:?} ({:?})",
                    server.0, server.1, decision.verdict, decision.why
                ),
            );
        }
        if decision.verdict == Verdict::Abort {
            return Err(DumpError::Refused(decision.why));
        }

        let include_memory = decision.verdict == Verdict::DumpAll;
        let overhead = if self.encrypted() { HEADER_LEN + SEAL_OVERHEAD } else { HEADER_LEN };
        let room = SLOT_PAYLOAD.min(self.session.max_payload.saturating_sub(overhead));
        // Filtering only with a server that records the excluded runs (feature FILTER):
        // with any other, excluded pages would look like zero pages, so all are sent.
        let exclude = if self.session.granted & features::FILTER != 0 { self.config.exclude } else { ExcludeSet::NONE };
        let compressed = self.compressing();
        #[cfg_attr(not(feature = "compression"), allow(unused_mut))]
        let mut stream = DataStream::new(
            log,
            log_len,
            cpus.first(cpu_count as usize),
            &map,
            memory,
            &mut *buffers.page,
            include_memory,
        )
        .with_exclude(exclude)
        .with_extra(self.extra)
        .with_in_place(self.read_in_place);
        #[cfg(feature = "compression")]
        {
            let lz4 = buffers.lz4.as_deref_mut();
            stream = stream.with_lz4(lz4.filter(|_| compressed));
        }
        let mut window = SackWindow::new(&mut *buffers.slots, self.config.window, self.config.timeouts.rto);
        window.set_mode(self.window_mode);
        window.check = self.integrity_check();
        let mut totals = StreamTotals::default();
        let stream_started = self.clock.now_us();
        if let Err(e) = self.send_stream(&mut window, &mut stream, room, &mut totals) {
            if e == DumpError::NoncesExhausted {
                return Err(e);
            }
            let reason = match e {
                DumpError::ServerSilent(_) => abort_reason::SERVER_SILENT,
                DumpError::StoppedByServer => abort_reason::STOPPED_BY_SERVER,
                _ => abort_reason::NIC_ERROR,
            };
            self.send_abort(reason, b"dump ended early");
            return Err(e);
        }

        let stream_us = self.clock.now_us().saturating_sub(stream_started);
        let mut finish_flags = 0;
        if !include_memory {
            finish_flags |= FINISH_MEMORY_SKIPPED;
        }
        if stream.stats.unreadable_pages > 0 {
            finish_flags |= FINISH_MEMORY_INCOMPLETE;
        }
        let finish = Finish {
            total_bytes: totals.data_bytes,
            stream_crc: totals.crc.value(),
            flags: finish_flags,
            zero_pages: stream.stats.zero_pages,
            retransmissions: window.retransmissions,
        };
        let packets = window.next_seq();
        let ack = match self.exchange(
            self.config.timeouts.finish_retry_us,
            self.config.timeouts.finish_timeout_us,
            Request::Finish(packets, &finish),
        )? {
            Some(Answer::FinishAck(a)) => Ok(a),
            _ => Err(DumpError::ServerSilent(Phase::Finish)),
        }
        .inspect_err(|_| self.send_abort(abort_reason::SERVER_SILENT, b"no FINISH_ACK"))?;
        #[cfg(feature = "netconsole")]
        self.dump_note(
            Severity::Critical,
            format_args!("netdump: dump of {} bytes in {} packets: {:?}", totals.data_bytes, packets, ack.status),
        );
        if ack.status != FinishStatus::Verified {
            return Err(DumpError::NotVerified(ack.status));
        }
        Ok(DumpReport {
            verdict: decision.verdict,
            action: ack.action,
            packets,
            bytes: totals.data_bytes,
            retransmissions: window.retransmissions,
            memory: stream.stats,
            elapsed_us: 0,
            stream_us,
            link: self.link.counters,
            rejected: self.rejected,
            sealing: self.sealing,
            version: self.session.version,
            encrypted: self.encrypted(),
            compressed,
            server: self.active,
            server_addr: (self.session.server.ip, self.session.server.port),
            attempts: Attempts::default(),
            #[cfg(feature = "profile")]
            profile: totals.profile,
        })
    }

    /// Sends one best-effort ABORT; the server marks the dump incomplete.
    // Four call sites in the dump, all on its way out: one call each.
    #[inline(never)]
    pub fn send_abort(&mut self, reason: u16, text: &[u8]) {
        let _ = self.send_repr(0, &Abort(TextMessage { code: reason, text }));
    }

    /// The version-1 HELLO fields: this NIC, this memory, `name` (the configured one,
    /// copied by the caller so that the HELLO can be written while `self` sends it).
    fn hello_v1<'n>(&self, name: &'n ClientName) -> Hello<'n> {
        Hello {
            mac: self.nic.mac_address(),
            mtu: self.nic.mtu() as u16,
            ip: self.config.net.ip.octets(),
            page_size: self.page_size,
            memory_bytes: self.memory_map.total_bytes(),
            name: name.as_bytes(),
        }
    }

    /// Sends one message of the client's (its type from its [`Repr`]).
    fn send_repr<'r, R: Repr<'r>>(&mut self, seq: u32, repr: &R) -> Result<(), DumpError> {
        self.send_repr_flagged(seq, 0, repr)
    }

    /// [`send_repr`](Self::send_repr) with header flags.
    fn send_repr_flagged<'r, R: Repr<'r>>(&mut self, seq: u32, fl: u16, repr: &R) -> Result<(), DumpError> {
        self.send_control(R::TYPE, seq, fl, repr.wire_len(), &|p| repr.emit(p))
    }

    /// Sends one control message (not DATA, which has its own path): a `ty` header and
    /// the `payload_len` bytes `fill` writes.
    // The fill through `dyn`: one instance for every message type the client sends
    // (CRASH, FINISH, ABORT, HELLO), where a generic one was a copy of the header, the
    // link's send and its closure per type.
    #[inline(never)]
    fn send_control(
        &mut self,
        ty: MessageType,
        seq: u32,
        fl: u16,
        payload_len: usize,
        fill: &dyn Fn(&mut [u8]),
    ) -> Result<(), DumpError> {
        let (version, cookie) = (self.session.version, self.session.cookie);
        let header = Header { version, ..Header::v1(ty, fl, cookie, seq) };
        self.send_message(header, payload_len, fill)
    }

    /// Sends one packet: `header` and the `payload_len` bytes `fill` writes, sealed in an
    /// encrypted session (under a fresh nonce, also for a retransmission).
    fn send_message(
        &mut self,
        header: Header,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), DumpError> {
        self.nic.poll_transmit();
        #[cfg(feature = "encryption")]
        if let Some(secure) = self.session.secure.as_mut() {
            if secure.transport.next_send_nonce() == u64::MAX {
                return Err(DumpError::NoncesExhausted);
            }
            let transport = &mut secure.transport;
            return self
                .link
                .send(&mut self.nic, HEADER_LEN + SEAL_OVERHEAD + payload_len, |buf| {
                    // Sized from `payload_len`, with a nonce left: sealing cannot fail.
                    let _ = crypto::seal_packet(transport, header, payload_len, buf, fill);
                })
                .map_err(DumpError::Nic);
        }
        self.link
            .send(&mut self.nic, HEADER_LEN + payload_len, |buf| {
                // The buffer is sized from `payload_len`, so emit cannot fail.
                let _ = header.emit(buf, payload_len, fill);
            })
            .map_err(DumpError::Nic)
    }

    /// Receives at most one frame and returns a validated server event, if it was one.
    fn poll_server(&mut self) -> Result<Polled, NicError> {
        let (cookie, version, registering) = (self.session.cookie, self.session.version, self.registering);
        let mut outcome = None;
        #[cfg(feature = "encryption")]
        let secure = &mut self.session.secure;
        let got = self.link.poll(&mut self.nic, &mut |datagram| {
            #[cfg(feature = "encryption")]
            if let Some(s) = secure.as_mut() {
                outcome = Some(classify_sealed(datagram, cookie, s));
                return;
            }
            outcome = Some(classify(datagram, cookie, version, registering));
        })?;
        Ok(match outcome {
            Some(Ok(event)) => Polled::Event(event),
            Some(Err(reject)) => {
                self.rejected += 1;
                match reject {
                    Reject::Checks => {}
                    Reject::Unsealed => self.sealing.unsealed += 1,
                    Reject::BadTag => self.sealing.bad_tag += 1,
                    Reject::Replayed => self.sealing.replayed += 1,
                }
                Polled::Other
            }
            None if got => Polled::Other,
            None => Polled::Idle,
        })
    }

    /// Request/response with retries: sends `request` every `retry_us` until its answer
    /// (DECISION to CRASH, FINISH_ACK to FINISH) arrives (returned) or `total_us` passed
    /// (`None`). An ERROR from the server ends the exchange at once.
    // One instance for the announcement and FINISH (once per dump each): a generic
    // sender and acceptor made one copy of this loop per call site.
    #[inline(never)]
    fn exchange(&mut self, retry_us: u64, total_us: u64, request: Request<'_>) -> Result<Option<Answer>, DumpError> {
        let overall = Deadline::after(&self.clock, total_us);
        let mut attempt = 0u32;
        loop {
            let sent = match request {
                Request::Crash(crash, fl) => self.send_repr_flagged(attempt, fl, crash),
                Request::Finish(packets, finish) => self.send_repr(packets, finish),
            };
            match sent {
                Ok(()) | Err(DumpError::Nic(NicError::RingFull)) => {}
                Err(e) => return Err(e),
            }
            attempt = attempt.wrapping_add(1);
            let retry = Deadline::after(&self.clock, retry_us);
            while !retry.passed(&self.clock) {
                if let Polled::Event(e) = self.poll_server()? {
                    match (request, e) {
                        (_, ServerEvent::Error(code)) => return Err(DumpError::ServerError(code)),
                        (Request::Crash(..), ServerEvent::Decision(d)) => return Ok(Some(Answer::Decision(d))),
                        (Request::Finish(..), ServerEvent::FinishAck(a)) => return Ok(Some(Answer::FinishAck(a))),
                        _ => {}
                    }
                }
                if overall.passed(&self.clock) {
                    return Ok(None);
                }
            }
        }
    }

    /// Sends a stored DATA packet (first send or retransmission; in an encrypted
    /// session the window's plaintext is sealed again, under a new nonce).
    fn transmit_data(
        &mut self,
        window: &mut SackWindow<'_>,
        seq: u32,
        ack_request: bool,
        now: u64,
    ) -> Result<bool, DumpError> {
        let mut fl = if ack_request { flags::ACK_REQUEST } else { 0 };
        let retransmit = window.sends(seq) > 0;
        if retransmit {
            fl |= flags::RETRANSMIT | flags::ACK_REQUEST;
        }
        if window.check == Check::Xxh64 {
            fl |= flags::CHECK_XXH64;
        }
        let (version, cookie) = (self.session.version, self.session.cookie);
        let header = Header { version, ..Header::v1(MessageType::Data, fl, cookie, seq) };
        let (payload, crc) = (window.payload(seq), window.payload_crc(seq));
        let sent = if self.encrypted() {
            self.send_message(header, payload.len(), |p| p.copy_from_slice(payload))
        } else {
            // Batched, the send loop reclaims and rings once per burst; otherwise each
            // frame reclaims and rings for itself.
            let deferred = self.batched_doorbells;
            if !deferred {
                self.nic.poll_transmit();
            }
            self.link
                .send_as(&mut self.nic, HEADER_LEN + payload.len(), deferred, |buf| {
                    // The buffer is sized from the payload, so emit cannot fail.
                    let _ = header.emit_with_payload_crc(buf, payload, crc);
                })
                .map_err(DumpError::Nic)
        };
        match sent {
            Ok(()) => {
                window.mark_sent(seq, now);
                Ok(true)
            }
            Err(DumpError::Nic(NicError::RingFull)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn send_stream(
        &mut self,
        window: &mut SackWindow<'_>,
        stream: &mut DataStream<'_>,
        room: usize,
        totals: &mut StreamTotals,
    ) -> Result<(), DumpError> {
        let silence = self.config.timeouts.silence_timeout_us;
        let mut last_progress = self.clock.now_us();
        let mut last_backoff = last_progress;
        let mut last_sent = last_progress;
        let mut exhausted = false;
        loop {
            #[cfg(feature = "profile")]
            let mut round = profile::Round::start(self.clock.now_ns());
            self.nic.poll_transmit();
            // Drain what the server sent.
            for _ in 0..64 {
                match self.poll_server()? {
                    Polled::Idle => break,
                    Polled::Other => {}
                    Polled::Event(ServerEvent::Ack { cumulative, stop, bitmap, len }) => {
                        #[cfg(feature = "profile")]
                        round.busy();
                        if stop {
                            return Err(DumpError::StoppedByServer);
                        }
                        let now = self.clock.now_us();
                        let ack = Ack { stop, bitmap: &bitmap[..len] };
                        if window.on_ack(now, cumulative, &ack).newly_acked > 0 {
                            last_progress = now;
                        }
                    }
                    Polled::Event(ServerEvent::Error(code)) => return Err(DumpError::ServerError(code)),
                    Polled::Event(..) => {}
                }
            }
            #[cfg(feature = "profile")]
            round.lap(self.clock.now_ns(), profile::Step::Receive);
            let now = self.clock.now_us();
            // Silence means no ACK progress while packets are outstanding, judged right
            // after reading what arrived; a window emptied by a long zero-page scan is not
            // silence.
            if window.is_empty() {
                last_progress = now;
            } else if now.saturating_sub(last_progress) > silence {
                return Err(DumpError::ServerSilent(Phase::Data));
            }
            // Retransmit what is due, a bounded number per round, paced like new packets
            // (on the clock as it is now, as the new packets below are: a packet whose
            // first send failed holds them back, and must not wait longer than they would).
            for _ in 0..16 {
                let now = self.clock.now_us();
                if !window.paced(now) {
                    break;
                }
                let Some(seq) = window.due(now) else { break };
                // A first send that failed on a full ring goes as it would have.
                let ack_request = window.sends(seq) > 0 || !window.can_push();
                if !self.transmit_data(window, seq, ack_request, now)? {
                    break;
                }
                if now.saturating_sub(last_progress) >= window.rto_us()
                    && now.saturating_sub(last_backoff) >= window.rto_us()
                {
                    window.back_off();
                    last_backoff = now;
                }
            }
            // Fill the window with new packets. While one waits for its first send (a full
            // ring: the device is behind), up to FILL_AHEAD are filled but not sent, so
            // that the sender's work overlaps the device's; the loop above sends them, in
            // order, once the ring has room.
            while !exhausted && window.can_push() && window.unsent() < FILL_AHEAD {
                let now = self.clock.now_us();
                if !window.paced(now) {
                    break;
                }
                let mut pushed = window.try_push(|slot| stream.next_payload(&mut slot[..room]));
                if pushed.is_none()
                    && !stream.is_done()
                    && now.saturating_sub(last_sent) >= self.config.timeouts.keepalive_us
                {
                    // A long zero-page scan: tell the server the dump is alive.
                    pushed = window.try_push(|slot| stream.keepalive_payload(&mut slot[..room]));
                }
                #[cfg(feature = "profile")]
                round.lap(self.clock.now_ns(), profile::Step::Fill);
                let Some(seq) = pushed else {
                    // Nothing now: the stream ended, or it skipped a long run of zero
                    // pages and hands control back so that ACKs keep being read.
                    exhausted = stream.is_done();
                    window.app_limited();
                    break;
                };
                #[cfg(feature = "profile")]
                round.busy();
                last_sent = now;
                totals.add(window.payload(seq).len(), window.payload_crc(seq));
                if window.unsent() > 1 {
                    // An older packet waits for its first send: this one leaves after it.
                    continue;
                }
                let fills_window = !window.can_push();
                let sent = self.transmit_data(window, seq, fills_window, now)?;
                #[cfg(feature = "profile")]
                round.lap(self.clock.now_ns(), profile::Step::Transmit);
                if !sent {
                    break;
                }
            }
            #[cfg(feature = "profile")]
            round.lap(self.clock.now_ns(), profile::Step::Fill);
            // One doorbell for the burst (retransmissions and new packets).
            self.nic.flush_transmit();
            #[cfg(feature = "profile")]
            {
                round.lap(self.clock.now_ns(), profile::Step::Doorbell);
                totals.profile.add(round);
            }
            if exhausted && window.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Checks an unsealed datagram from the server's address: header and CRC, the session's
/// version and cookie, a server message that parses. While registering, a version-1
/// server's `UNSUPPORTED_VERSION` ERROR (cookie 0) is an event too.
fn classify(datagram: &[u8], cookie: u64, version: u8, registering: bool) -> Result<ServerEvent, Reject> {
    let (h, payload) = Header::parse(datagram).map_err(|_| Reject::Checks)?;
    if h.is_sealed() {
        return Err(Reject::Checks);
    }
    let event = event_of(&h, payload)?;
    if let ServerEvent::Error(code) = event
        && registering
        && version == VERSION_2
        && (h.cookie == 0 || h.cookie == cookie)
        && code == error_code::UNSUPPORTED_VERSION
    {
        return Ok(ServerEvent::VersionRefused);
    }
    if h.cookie != cookie || h.version != version {
        return Err(Reject::Checks);
    }
    Ok(event)
}

/// Checks a datagram in an encrypted session: sealed, this cookie, a fresh nonce, a tag
/// that verifies, a server message that parses.
#[cfg(feature = "encryption")]
fn classify_sealed(datagram: &[u8], cookie: u64, secure: &mut Secure) -> Result<ServerEvent, Reject> {
    let (h, _) = Header::parse(datagram).map_err(|_| Reject::Checks)?;
    if !h.is_sealed() {
        return Err(Reject::Unsealed);
    }
    if h.cookie != cookie {
        return Err(Reject::Checks);
    }
    let mut plain = [0u8; MAX_SERVER_PLAINTEXT];
    let (h, payload) =
        crypto::open_packet(&secure.transport, &mut secure.replay, datagram, &mut plain).map_err(|e| match e {
            OpenError::Unsealed => Reject::Unsealed,
            OpenError::Replayed => Reject::Replayed,
            OpenError::BadTag => Reject::BadTag,
            OpenError::Proto(_) | OpenError::BufferTooSmall => Reject::Checks,
        })?;
    event_of(&h, payload)
}

/// The event a server message's payload is, parsed as
/// [`Message::parse_from_server`](crate::proto::Message::parse_from_server) parses it (a
/// client message type is rejected), straight into the event: a `Message` in between
/// was copied out of every parse.
fn event_of(h: &Header, payload: &[u8]) -> Result<ServerEvent, Reject> {
    let checks = |_| Reject::Checks;
    Ok(match h.msg_type {
        MessageType::HelloAck if h.version == VERSION_2 => {
            let a = HelloAckV2::parse(payload).map_err(checks)?;
            let len = a.handshake.len();
            if len > MAX_MESSAGE_2 {
                return Err(Reject::Checks);
            }
            #[cfg(feature = "encryption")]
            let handshake = {
                let mut handshake = [0; MAX_MESSAGE_2];
                handshake[..len].copy_from_slice(a.handshake);
                handshake
            };
            ServerEvent::HelloAckV2 {
                terms: a.terms,
                #[cfg(feature = "encryption")]
                handshake,
                len,
            }
        }
        MessageType::HelloAck => ServerEvent::HelloAck(HelloAck::parse(payload).map_err(checks)?),
        MessageType::Decision => ServerEvent::Decision(Decision::parse(payload).map_err(checks)?),
        MessageType::Ack => {
            let a = Ack::parse(payload).map_err(checks)?;
            let mut bitmap = [0; MAX_SACK_BYTES];
            bitmap[..a.bitmap.len()].copy_from_slice(a.bitmap);
            ServerEvent::Ack { cumulative: h.seq, stop: a.stop, bitmap, len: a.bitmap.len() }
        }
        MessageType::FinishAck => ServerEvent::FinishAck(FinishAck::parse(payload).map_err(checks)?),
        MessageType::Error => ServerEvent::Error(TextMessage::parse(payload).map_err(checks)?.code),
        MessageType::Hello | MessageType::Crash | MessageType::Data | MessageType::Finish | MessageType::Abort => {
            return Err(Reject::Checks);
        }
    })
}

/// The running totals FINISH reports: data bytes, and the stream CRC over the payload
/// CRCs in seq order (docs/PROTOCOL.md, FINISH).
#[derive(Default)]
struct StreamTotals {
    data_bytes: u64,
    crc: crate::proto::StreamCrc,
    #[cfg(feature = "profile")]
    profile: SendProfile,
}

impl StreamTotals {
    fn add(&mut self, payload_len: usize, payload_crc: u32) {
        self.data_bytes += payload_len.saturating_sub(crate::proto::Data::SUBHEADER_LEN) as u64;
        self.crc.add(payload_crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_session_stays_small() {
        // What failover costs per listed server, preallocated in `Netdump` (PORTING.md,
        // PROTOCOL.md "Failover" say about 40 bytes, about 450 with `encryption`).
        let size = core::mem::size_of::<Session>();
        std::println!("Session: {size} bytes");
        let bound = if cfg!(feature = "encryption") { 480 } else { 48 };
        assert!(size <= bound, "a server's session takes {size} bytes, more than {bound}");
    }

    #[test]
    fn only_capacity_refusals_and_server_failures_send_the_dump_elsewhere() {
        use DecisionReason as R;
        for (why, moves) in [
            (R::TryElsewhere, true),
            (R::Busy, true),
            (R::NoSpace, true),
            (R::Hook, false),
            (R::Duplicate, false),
            (R::BadAnnouncement, false),
            (R::None, false),
        ] {
            assert_eq!(worth_another_server(&DumpError::Refused(why)), moves, "{why:?}");
        }
        for e in [
            DumpError::ServerSilent(Phase::Announce),
            DumpError::ServerSilent(Phase::Data),
            DumpError::ServerSilent(Phase::Finish),
            DumpError::StoppedByServer,
            DumpError::ServerError(1),
            DumpError::NotVerified(FinishStatus::CrcMismatch),
            DumpError::NoncesExhausted,
            DumpError::NotRegistered(InstallError::ServerSilent),
            DumpError::NotRegistered(InstallError::Net(NetError::ArpTimeout(Ipv4Address::new(10, 0, 2, 2)))),
        ] {
            assert!(worth_another_server(&e), "{e:?}");
        }
        for e in [
            DumpError::AlreadyDumped,
            DumpError::Nic(NicError::LinkDown),
            DumpError::NotRegistered(InstallError::Nic(NicError::LinkDown)),
        ] {
            assert!(!worth_another_server(&e), "{e:?}");
        }
    }
}
