//! The registry of clients that said HELLO: `cookie → (name, MAC, IP, port, memory
//! size, registration time)`, kept in `<dumpdir>/clients.json` so that a client that
//! registered before a server restart can still dump to it.
//!
//! Only a registered cookie may announce a crash, and each cookie gets one dump: the
//! registry remembers the directory of that dump, so a replayed CRASH is recognised even
//! after the server restarted. A rebooted client registers again with a fresh cookie,
//! which replaces its old one (the name is the key a person knows a machine by); the old
//! cookie is **retired**, with its dump if it had one, and a HELLO or CRASH carrying a
//! retired cookie is a replay of an earlier boot and is refused for good (otherwise a
//! replayed HELLO would unregister the real client and let its old session be replayed
//! into a second dump).
//!
//! Bounds ([`RegistryLimits`]): at most `max_clients` registrations (when full, the oldest
//! registration that never crashed makes room for a new name; when every one has
//! crashed, the new name is refused) and `max_retired` retired cookies (the oldest
//! forgotten first). Writes are gathered: a change marks the registry dirty and
//! [`Registry::flush_due`] writes it at most once per [`SAVE_INTERVAL`], so a HELLO flood
//! costs one file write a second, not one per packet.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelEntry};
use crate::files::write_atomic;

/// File name of the registry inside the dump directory.
pub const REGISTRY_FILE: &str = "clients.json";

/// How often a changed registry is written at most.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// How much the registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Registered clients at most.
    pub max_clients: usize,
    /// Retired cookies remembered at most (replays of older ones are unknown cookies).
    pub max_retired: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits { max_clients: 4096, max_retired: 16384 }
    }
}

/// One registered client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub cookie: u64,
    pub name: String,
    pub mac: [u8; 6],
    /// The IPv4 address the client reported in its HELLO.
    pub ip: Ipv4Addr,
    /// The address and port the HELLO came from (differs from `ip` behind NAT).
    pub source: SocketAddr,
    pub mtu: u16,
    pub page_size: u32,
    pub memory_bytes: u64,
    /// RFC 3339, UTC.
    pub registered_at: String,
    /// Name of the dump directory of this cookie's crash, once it announced one (empty
    /// when the crash was declined before a directory existed).
    pub dump: Option<String>,
    /// The protocol version of its HELLO (1 or 2).
    pub protocol_version: u8,
    /// Whether its session is encrypted (its channel is in the registry).
    pub encrypted: bool,
    /// The features its HELLO_ACK granted (version 2; 0 in version 1).
    pub features: u32,
}

impl Client {
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }

    /// Whether a HELLO describing `other` changes nothing worth a write.
    fn same_registration(&self, other: &Client) -> bool {
        self.cookie == other.cookie
            && self.name == other.name
            && self.mac == other.mac
            && self.ip == other.ip
            && self.source == other.source
            && self.mtu == other.mtu
            && self.page_size == other.page_size
            && self.memory_bytes == other.memory_bytes
            && self.protocol_version == other.protocol_version
            && self.encrypted == other.encrypted
            && self.features == other.features
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// What a HELLO did to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A name not seen before.
    New,
    /// A known name with a new cookie (the client rebooted); the old cookie is retired.
    Replaced { old_cookie: u64 },
    /// The same cookie said HELLO again with something changed (e.g. its port).
    Updated,
    /// A repeated HELLO (its HELLO_ACK was lost).
    Unchanged,
}

#[derive(Debug)]
pub enum RegistryError {
    /// The registry is full of clients that crashed; a new name cannot get in.
    Full,
    /// The cookie is retired: this HELLO is a replay of an earlier boot's.
    Retired,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::Full => f.write_str("registry full of clients that crashed"),
            RegistryError::Retired => f.write_str("the cookie was retired (replaced by a newer registration)"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// A cookie that no longer registers: its name registered again with another cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub name: String,
    /// Its dump's directory, when it crashed.
    pub dump: Option<String>,
}

/// On-disk form of one client.
#[derive(Debug, Serialize, Deserialize)]
struct ClientEntry {
    /// 16 hex digits.
    cookie: String,
    name: String,
    mac: String,
    ip: Ipv4Addr,
    source: SocketAddr,
    mtu: u16,
    page_size: u32,
    memory_bytes: u64,
    registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dump: Option<String>,
    /// Absent in files written before version 2: 1.
    #[serde(default = "version_1")]
    protocol_version: u8,
    /// The features granted; absent in files written before filtering: none (a dump
    /// of such a client sends every page anyway, it was not granted `FILTER`).
    #[serde(default, skip_serializing_if = "is_zero")]
    features: u32,
    /// The encrypted channel: transport keys, send nonce reservation, handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<ChannelEntry>,
}

fn version_1() -> u8 {
    1
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// On-disk form of one retired cookie.
#[derive(Debug, Serialize, Deserialize)]
struct RetiredEntry {
    cookie: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dump: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    clients: Vec<ClientEntry>,
    /// Oldest first. Absent in files written before cookies were retired.
    #[serde(default)]
    retired: Vec<RetiredEntry>,
}

impl ClientEntry {
    fn new(c: &Client, channel: Option<&Channel>) -> Self {
        ClientEntry {
            cookie: format!("{:016x}", c.cookie),
            name: c.name.clone(),
            mac: c.mac_string(),
            ip: c.ip,
            source: c.source,
            mtu: c.mtu,
            page_size: c.page_size,
            memory_bytes: c.memory_bytes,
            registered_at: c.registered_at.clone(),
            dump: c.dump.clone(),
            protocol_version: c.protocol_version,
            features: c.features,
            channel: channel.map(Channel::entry),
        }
    }
}

fn parse_cookie(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|_| format!("bad cookie {s:?}"))
}

impl ClientEntry {
    /// The client, and its channel when it has one.
    fn into_client(self) -> Result<(Client, Option<Channel>), String> {
        let channel = self.channel.as_ref().map(Channel::from_entry).transpose()?;
        let e = self;
        let client = Client {
            cookie: parse_cookie(&e.cookie)?,
            mac: parse_mac(&e.mac).ok_or_else(|| format!("bad MAC {:?}", e.mac))?,
            name: e.name,
            ip: e.ip,
            source: e.source,
            mtu: e.mtu,
            page_size: e.page_size,
            memory_bytes: e.memory_bytes,
            registered_at: e.registered_at,
            dump: e.dump,
            protocol_version: e.protocol_version,
            encrypted: channel.is_some(),
            features: e.features | if channel.is_some() { netdump_core::proto::features::ENCRYPTED } else { 0 },
        };
        Ok((client, channel))
    }
}

#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    limits: RegistryLimits,
    by_cookie: HashMap<u64, Client>,
    /// The cookie each name is registered with.
    by_name: HashMap<String, u64>,
    /// When each cookie registered, as a counter: the oldest goes first when full.
    order: HashMap<u64, u64>,
    next_order: u64,
    retired: HashMap<u64, Retired>,
    /// Retired cookies, oldest first.
    retired_order: VecDeque<u64>,
    /// The encrypted channels of registered cookies.
    channels: HashMap<u64, Channel>,
    /// Changed since the last write.
    dirty: bool,
    saved_at: Option<Instant>,
    saves: u64,
}

impl Registry {
    /// Loads `<dir>/clients.json`; a missing file is an empty registry. An unreadable
    /// or corrupt file is moved aside (`clients.json.corrupt`) with a warning rather than
    /// keeping the server from starting.
    pub fn load(dir: &Path, limits: RegistryLimits) -> io::Result<Registry> {
        let path = dir.join(REGISTRY_FILE);
        let mut registry = Registry {
            path,
            limits,
            by_cookie: HashMap::new(),
            by_name: HashMap::new(),
            order: HashMap::new(),
            next_order: 0,
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            channels: HashMap::new(),
            dirty: false,
            saved_at: None,
            saves: 0,
        };
        let text = match std::fs::read_to_string(&registry.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(registry),
            Err(e) => return Err(e),
        };
        match serde_json::from_str::<RegistryFile>(&text) {
            Ok(file) => {
                let mut clients: Vec<(Client, Option<Channel>)> = Vec::new();
                for entry in file.clients {
                    match entry.into_client() {
                        Ok(c) => clients.push(c),
                        Err(e) => tracing::warn!(file = %registry.path.display(), "skipping registry entry: {e}"),
                    }
                }
                // The oldest registration first, so that eviction order survives a restart.
                clients.sort_by(|a, b| a.0.registered_at.cmp(&b.0.registered_at));
                for entry in file.retired {
                    match parse_cookie(&entry.cookie) {
                        Ok(cookie) => registry.retire(cookie, entry.name, entry.dump),
                        Err(e) => tracing::warn!(file = %registry.path.display(), "skipping retired entry: {e}"),
                    }
                }
                for (c, channel) in clients {
                    if registry.retired.contains_key(&c.cookie) {
                        continue;
                    }
                    if let Some(old) = registry.by_name.get(&c.name).copied() {
                        registry.remove(old);
                    }
                    if let Some(channel) = channel {
                        registry.channels.insert(c.cookie, channel);
                    }
                    registry.insert(c);
                }
            }
            Err(e) => {
                let aside = registry.path.with_file_name(format!("{REGISTRY_FILE}.corrupt"));
                tracing::warn!(
                    file = %registry.path.display(),
                    moved_to = %aside.display(),
                    "registry unreadable ({e}); starting with an empty one"
                );
                std::fs::rename(&registry.path, &aside)?;
            }
        }
        Ok(registry)
    }

    pub fn get(&self, cookie: u64) -> Option<&Client> {
        self.by_cookie.get(&cookie)
    }

    /// The retired cookie `cookie`, if it is one.
    pub fn retired(&self, cookie: u64) -> Option<&Retired> {
        self.retired.get(&cookie)
    }

    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    /// Retired cookies remembered.
    pub fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// Times the registry was written to disk.
    pub fn saves(&self) -> u64 {
        self.saves
    }

    /// The encrypted channel of `cookie`, when it registered with one.
    pub fn channel(&self, cookie: u64) -> Option<&Channel> {
        self.channels.get(&cookie)
    }

    /// [`channel`](Self::channel), to open and seal with.
    pub fn channel_mut(&mut self, cookie: u64) -> Option<&mut Channel> {
        self.channels.get_mut(&cookie)
    }

    /// The channel of `cookie`, ready to seal one packet: when its next send nonce is not
    /// covered by the reservation on disk, a new reservation is written first (now, not
    /// at the next flush), so that no nonce is ever used twice, even across a crash of
    /// the server. `Ok(None)` when the cookie has no channel.
    pub fn channel_to_seal(&mut self, cookie: u64) -> io::Result<Option<&mut Channel>> {
        let Some(channel) = self.channels.get_mut(&cookie) else { return Ok(None) };
        if channel.needs_reservation() {
            channel.reserve();
            self.dirty = true;
            self.flush()?;
        }
        Ok(self.channels.get_mut(&cookie))
    }

    /// Registers `client` (from a HELLO whose name is valid), with the encrypted
    /// `channel` of its handshake if any (a repeated HELLO keeps the channel it has):
    /// replaces and retires any other cookie of the same name. The change is written by
    /// the next [`flush_due`](Self::flush_due).
    pub fn register(&mut self, client: Client, channel: Option<Channel>) -> Result<Registration, RegistryError> {
        if self.retired.contains_key(&client.cookie) {
            return Err(RegistryError::Retired);
        }
        let existing = self.by_cookie.get(&client.cookie);
        if existing.is_some_and(|e| e.same_registration(&client)) {
            return Ok(Registration::Unchanged);
        }
        let old_cookie = self.by_name.get(&client.name).copied().filter(|c| *c != client.cookie);
        let outcome = match (old_cookie, existing) {
            (Some(old_cookie), _) => Registration::Replaced { old_cookie },
            (None, Some(_)) => Registration::Updated,
            (None, None) => {
                if self.by_cookie.len() >= self.limits.max_clients {
                    self.evict_oldest_uncrashed()?;
                }
                Registration::New
            }
        };
        if let Some(old) = old_cookie
            && let Some(gone) = self.remove(old)
        {
            self.retire(old, gone.name, gone.dump);
        }
        if let Some(channel) = channel {
            self.channels.entry(client.cookie).or_insert(channel);
        }
        let mut client = client;
        if let Some(existing) = self.remove(client.cookie) {
            // The same cookie again: its dump, if any, still happened.
            client.dump = existing.dump;
            if outcome == Registration::Updated {
                client.registered_at = existing.registered_at;
            }
        }
        self.insert(client);
        self.dirty = true;
        Ok(outcome)
    }

    /// Records that `cookie` announced its crash, dumped into directory `dump` (empty
    /// when it was declined before a directory existed). The first record stays.
    pub fn record_dump(&mut self, cookie: u64, dump: &str) {
        if let Some(c) = self.by_cookie.get_mut(&cookie)
            && c.dump.is_none()
        {
            c.dump = Some(dump.to_string());
            self.dirty = true;
        }
    }

    /// Writes the registry when it changed and the last write is [`SAVE_INTERVAL`] ago.
    pub fn flush_due(&mut self, now: Instant) -> io::Result<()> {
        if self.dirty && self.saved_at.is_none_or(|t| now.saturating_duration_since(t) >= SAVE_INTERVAL) {
            self.saved_at = Some(now);
            return self.flush();
        }
        Ok(())
    }

    /// Writes the registry now, when it changed.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.save()?;
        self.dirty = false;
        Ok(())
    }

    fn insert(&mut self, client: Client) {
        self.by_name.insert(client.name.clone(), client.cookie);
        self.order.insert(client.cookie, self.next_order);
        self.next_order += 1;
        self.by_cookie.insert(client.cookie, client);
    }

    fn remove(&mut self, cookie: u64) -> Option<Client> {
        let client = self.by_cookie.remove(&cookie)?;
        self.order.remove(&cookie);
        if self.by_name.get(&client.name) == Some(&cookie) {
            self.by_name.remove(&client.name);
        }
        Some(client)
    }

    fn retire(&mut self, cookie: u64, name: String, dump: Option<String>) {
        // Its keys are of no more use: nothing of a retired cookie is answered.
        self.channels.remove(&cookie);
        if self.retired.insert(cookie, Retired { name, dump }).is_none() {
            self.retired_order.push_back(cookie);
        }
        while self.retired.len() > self.limits.max_retired {
            let Some(oldest) = self.retired_order.pop_front() else { break };
            self.retired.remove(&oldest);
        }
    }

    /// Makes room: forgets the oldest registration that never crashed. It is not
    /// retired: that client may register again with the same cookie.
    fn evict_oldest_uncrashed(&mut self) -> Result<(), RegistryError> {
        let oldest = self
            .by_cookie
            .values()
            .filter(|c| c.dump.is_none())
            .min_by_key(|c| self.order.get(&c.cookie).copied().unwrap_or(0))
            .map(|c| c.cookie)
            .ok_or(RegistryError::Full)?;
        self.channels.remove(&oldest);
        if let Some(gone) = self.remove(oldest) {
            tracing::info!(client = ?gone.name, cookie = format_args!("{oldest:016x}"), "registry full: oldest registration that never crashed forgotten");
        }
        Ok(())
    }

    fn save(&mut self) -> io::Result<()> {
        let mut clients: Vec<&Client> = self.by_cookie.values().collect();
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        let retired = self
            .retired_order
            .iter()
            .filter_map(|c| {
                let r = self.retired.get(c)?;
                Some(RetiredEntry { cookie: format!("{c:016x}"), name: r.name.clone(), dump: r.dump.clone() })
            })
            .collect();
        let clients = clients.into_iter().map(|c| ClientEntry::new(c, self.channels.get(&c.cookie))).collect();
        let file = RegistryFile { version: 1, clients, retired };
        let mut text = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        text.push(b'\n');
        self.saves += 1;
        write_atomic(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn client(cookie: u64, name: &str) -> Client {
        Client {
            cookie,
            name: name.into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            ip: Ipv4Addr::new(10, 0, 2, 15),
            source: "127.0.0.1:6665".parse().unwrap(),
            mtu: 1500,
            page_size: 4096,
            memory_bytes: 128 << 20,
            registered_at: "2026-01-01T00:00:00Z".into(),
            dump: None,
            protocol_version: 1,
            encrypted: false,
            features: 0,
        }
    }

    /// A channel for tests: keys of bytes `seed`, nothing sent yet.
    fn channel(seed: u8) -> Channel {
        let entry = serde_json::json!({
            "send_key": format!("{seed:02x}").repeat(32),
            "recv_key": format!("{:02x}", seed ^ 0xff).repeat(32),
            "send_nonce_reserved": crate::channel::NONCE_RESERVATION,
            "client_ephemeral": "ee".repeat(32),
            "hello_ack": "00",
        });
        let mut c = Channel::from_entry(&serde_json::from_value(entry).unwrap()).unwrap();
        c.transport = netdump_core::crypto::Transport::from_keys([seed; 32], [seed ^ 0xff; 32], 0);
        c
    }

    #[test]
    fn a_channel_persists_with_its_registration_and_a_nonce_reservation_ahead_of_use() {
        use crate::channel::NONCE_RESERVATION;
        let dir = TestDir::new("registry-channel");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        let encrypted = Client {
            protocol_version: 2,
            encrypted: true,
            features: netdump_core::proto::features::ENCRYPTED,
            ..client(1, "alpha")
        };
        r.register(encrypted.clone(), Some(channel(0x11))).unwrap();
        r.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join(REGISTRY_FILE)).unwrap();
        assert!(text.contains(&"11".repeat(32)), "the send key is in the registry: {text}");
        // Sealing past the reservation writes a new one first.
        let ch = r.channel_mut(1).unwrap();
        ch.transport = netdump_core::crypto::Transport::from_keys([0x11; 32], [0xee; 32], NONCE_RESERVATION);
        let saves = r.saves();
        let ch = r.channel_to_seal(1).unwrap().unwrap();
        assert_eq!(ch.reserved, 2 * NONCE_RESERVATION);
        assert_eq!(r.saves(), saves + 1, "written before the nonce is used");
        assert!(r.channel_to_seal(2).unwrap().is_none(), "no channel, no write");
        assert_eq!(r.saves(), saves + 1);
        // A restart sends from the reservation on: beyond every nonce used before it.
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        assert_eq!(r.get(1), Some(&encrypted));
        assert_eq!(r.channel(1).unwrap().transport.next_send_nonce(), 2 * NONCE_RESERVATION);
        assert_eq!(r.channel(1).unwrap().transport.send_key(), &[0x11; 32]);
        // A repeated HELLO keeps the channel it has; a reboot retires it with the cookie.
        r.register(encrypted.clone(), Some(channel(0x22))).unwrap();
        assert_eq!(r.channel(1).unwrap().transport.send_key(), &[0x11; 32]);
        r.register(client(2, "alpha"), None).unwrap();
        assert!(r.channel(1).is_none());
        r.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join(REGISTRY_FILE)).unwrap();
        assert!(!text.contains(&"11".repeat(32)), "a retired cookie's keys are forgotten: {text}");
    }

    #[test]
    fn registration_survives_a_reload() {
        let dir = TestDir::new("registry-reload");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.register(client(0xfeed_0000_0000_0001, "alpha"), None).unwrap(), Registration::New);
        r.record_dump(0xfeed_0000_0000_0001, "alpha-20260101-000000");
        r.flush().unwrap();
        let r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        let c = r.get(0xfeed_0000_0000_0001).unwrap();
        assert_eq!(c.name, "alpha");
        assert_eq!(c.mac_string(), "52:54:00:12:34:56");
        assert_eq!(c.dump.as_deref(), Some("alpha-20260101-000000"));
        assert_eq!(*c, Client { dump: Some("alpha-20260101-000000".into()), ..client(0xfeed_0000_0000_0001, "alpha") });
    }

    #[test]
    fn a_new_cookie_for_a_known_name_replaces_the_old_one() {
        let dir = TestDir::new("registry-replace");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        r.register(client(1, "alpha"), None).unwrap();
        r.register(client(2, "beta"), None).unwrap();
        assert_eq!(r.register(client(3, "alpha"), None).unwrap(), Registration::Replaced { old_cookie: 1 });
        assert!(r.get(1).is_none());
        assert_eq!(r.get(3).unwrap().name, "alpha");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_repeated_hello_changes_nothing_and_keeps_the_dump() {
        let dir = TestDir::new("registry-repeat");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        r.register(client(1, "alpha"), None).unwrap();
        r.record_dump(1, "alpha-x");
        assert_eq!(r.register(client(1, "alpha"), None).unwrap(), Registration::Unchanged);
        let moved =
            Client { source: "127.0.0.1:7000".parse().unwrap(), registered_at: "later".into(), ..client(1, "alpha") };
        assert_eq!(r.register(moved, None).unwrap(), Registration::Updated);
        let c = r.get(1).unwrap();
        assert_eq!(c.dump.as_deref(), Some("alpha-x"));
        assert_eq!(c.registered_at, "2026-01-01T00:00:00Z");
        assert_eq!(c.source.port(), 7000);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = TestDir::new("registry-corrupt");
        std::fs::write(dir.path().join(REGISTRY_FILE), b"{ not json").unwrap();
        let r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        assert!(r.is_empty());
        assert!(dir.path().join("clients.json.corrupt").exists());
    }

    #[test]
    fn a_bad_entry_is_skipped_and_the_rest_kept() {
        let dir = TestDir::new("registry-bad-entry");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        r.register(client(1, "alpha"), None).unwrap();
        r.register(client(2, "beta"), None).unwrap();
        r.flush().unwrap();
        let path = dir.path().join(REGISTRY_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("0000000000000001", "not-hex");
        std::fs::write(&path, text).unwrap();
        let r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.get(2).is_some());
    }

    #[test]
    fn a_full_registry_forgets_its_oldest_registration_that_never_crashed() {
        let dir = TestDir::new("registry-full");
        let limits = RegistryLimits { max_clients: 4, max_retired: 16 };
        let mut r = Registry::load(dir.path(), limits).unwrap();
        for i in 0..4 {
            r.register(client(i, &format!("n{i}")), None).unwrap();
        }
        r.record_dump(0, "n0-dump");
        // n0 crashed, so n1 is the oldest that never did.
        assert_eq!(r.register(client(10, "newcomer"), None).unwrap(), Registration::New);
        assert_eq!(r.len(), 4);
        assert!(r.get(1).is_none() && r.get(0).is_some() && r.get(10).is_some());
        // An evicted cookie is not retired: its client may say HELLO again.
        assert!(r.retired(1).is_none());
        // A known name may still re-register.
        assert!(matches!(r.register(client(20, "n2"), None), Ok(Registration::Replaced { old_cookie: 2 })));
        // Every registration crashed: a new name is refused.
        for c in [0, 3, 10, 20] {
            r.record_dump(c, "d");
        }
        assert!(matches!(r.register(client(30, "late"), None), Err(RegistryError::Full)));
    }

    #[test]
    fn a_replaced_cookie_is_retired_and_its_hello_refused_across_a_restart() {
        let dir = TestDir::new("registry-retired");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        r.register(client(1, "alpha"), None).unwrap();
        r.record_dump(1, "alpha-old");
        assert_eq!(r.register(client(2, "alpha"), None).unwrap(), Registration::Replaced { old_cookie: 1 });
        assert_eq!(r.retired(1), Some(&Retired { name: "alpha".into(), dump: Some("alpha-old".into()) }));
        // The earlier boot's HELLO, replayed: refused, and the new cookie stays registered.
        assert!(matches!(r.register(client(1, "alpha"), None), Err(RegistryError::Retired)));
        assert_eq!(r.get(2).unwrap().name, "alpha");
        r.flush().unwrap();
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        assert!(matches!(r.register(client(1, "alpha"), None), Err(RegistryError::Retired)));
        assert_eq!(r.retired(1).and_then(|x| x.dump.as_deref()), Some("alpha-old"));
        assert_eq!(r.get(2).unwrap().name, "alpha");
    }

    #[test]
    fn retired_cookies_are_bounded_oldest_forgotten_first() {
        let dir = TestDir::new("registry-retired-bound");
        let mut r = Registry::load(dir.path(), RegistryLimits { max_clients: 16, max_retired: 3 }).unwrap();
        for cookie in 1..=6 {
            r.register(client(cookie, "alpha"), None).unwrap();
        }
        assert_eq!(r.retired_len(), 3);
        assert!(r.retired(1).is_none() && r.retired(2).is_none());
        assert!(r.retired(3).is_some() && r.retired(5).is_some());
    }

    #[test]
    fn changes_are_written_at_most_once_per_interval() {
        let dir = TestDir::new("registry-gathered");
        let mut r = Registry::load(dir.path(), RegistryLimits::default()).unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            r.register(client(i, &format!("n{i}")), None).unwrap();
            r.flush_due(t0 + Duration::from_millis(i)).unwrap();
        }
        assert_eq!(r.saves(), 1);
        r.flush_due(t0 + SAVE_INTERVAL + Duration::from_millis(100)).unwrap();
        assert_eq!(r.saves(), 2);
        assert_eq!(Registry::load(dir.path(), RegistryLimits::default()).unwrap().len(), 100);
    }

    #[test]
    fn macs_format_and_parse() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }
}
