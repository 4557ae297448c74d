//! The registry of clients that said HELLO: `cookie → (name, MAC, IP, port, memory
//! size, registration time)`, kept in `<dumpdir>/clients.json` so that a client that
//! registered before a server restart can still dump to it.
//!
//! Only a registered cookie may announce a crash, and each cookie gets one dump: the
//! registry remembers the directory of that dump, so a replayed CRASH is recognised even
//! after the server restarted. A rebooted client registers again with a fresh cookie,
//! which replaces its old one (the name is the key a person knows a machine by).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;

/// File name of the registry inside the dump directory.
pub const REGISTRY_FILE: &str = "clients.json";

/// Most clients the registry holds; a HELLO from a new name beyond it is dropped.
pub const MAX_CLIENTS: usize = 4096;

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
    /// Name of the dump directory of this cookie's crash, once it announced one.
    pub dump: Option<String>,
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
    /// A known name with a new cookie (the client rebooted); the old cookie is gone.
    Replaced { old_cookie: u64 },
    /// The same cookie said HELLO again with something changed (e.g. its port).
    Updated,
    /// A repeated HELLO (its HELLO_ACK was lost).
    Unchanged,
}

#[derive(Debug)]
pub enum RegistryError {
    /// [`MAX_CLIENTS`] names are registered already.
    Full,
    /// The registry changed in memory but could not be written to disk.
    Io(io::Error),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::Full => write!(f, "registry full ({MAX_CLIENTS} clients)"),
            RegistryError::Io(e) => write!(f, "cannot write {REGISTRY_FILE}: {e}"),
        }
    }
}

impl std::error::Error for RegistryError {}

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
}

#[derive(Debug, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    clients: Vec<ClientEntry>,
}

impl From<&Client> for ClientEntry {
    fn from(c: &Client) -> Self {
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
        }
    }
}

impl TryFrom<ClientEntry> for Client {
    type Error = String;
    fn try_from(e: ClientEntry) -> Result<Self, String> {
        Ok(Client {
            cookie: u64::from_str_radix(&e.cookie, 16).map_err(|_| format!("bad cookie {:?}", e.cookie))?,
            mac: parse_mac(&e.mac).ok_or_else(|| format!("bad MAC {:?}", e.mac))?,
            name: e.name,
            ip: e.ip,
            source: e.source,
            mtu: e.mtu,
            page_size: e.page_size,
            memory_bytes: e.memory_bytes,
            registered_at: e.registered_at,
            dump: e.dump,
        })
    }
}

#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    by_cookie: HashMap<u64, Client>,
}

impl Registry {
    /// Loads `<dir>/clients.json`; a missing file is an empty registry. An unreadable
    /// or corrupt file is moved aside (`clients.json.corrupt`) with a warning rather than
    /// keeping the server from starting.
    pub fn load(dir: &Path) -> io::Result<Registry> {
        let path = dir.join(REGISTRY_FILE);
        let mut registry = Registry { path, by_cookie: HashMap::new() };
        let text = match std::fs::read_to_string(&registry.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(registry),
            Err(e) => return Err(e),
        };
        match serde_json::from_str::<RegistryFile>(&text) {
            Ok(file) => {
                for entry in file.clients {
                    match Client::try_from(entry) {
                        Ok(c) => {
                            registry.by_cookie.insert(c.cookie, c);
                        }
                        Err(e) => tracing::warn!(file = %registry.path.display(), "skipping registry entry: {e}"),
                    }
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

    pub fn len(&self) -> usize {
        self.by_cookie.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cookie.is_empty()
    }

    /// Registers `client` (from a HELLO whose name is valid): replaces any other cookie
    /// of the same name, and writes the registry if anything changed. On
    /// [`RegistryError::Io`] the registration holds in memory.
    pub fn register(&mut self, client: Client) -> Result<Registration, RegistryError> {
        if let Some(existing) = self.by_cookie.get(&client.cookie)
            && existing.same_registration(&client)
        {
            return Ok(Registration::Unchanged);
        }
        let old_cookie =
            self.by_cookie.values().find(|c| c.name == client.name && c.cookie != client.cookie).map(|c| c.cookie);
        let outcome = match (old_cookie, self.by_cookie.get(&client.cookie)) {
            (Some(old_cookie), _) => Registration::Replaced { old_cookie },
            (None, Some(_)) => Registration::Updated,
            (None, None) if self.by_cookie.len() >= MAX_CLIENTS => return Err(RegistryError::Full),
            (None, None) => Registration::New,
        };
        if let Some(old) = old_cookie {
            self.by_cookie.remove(&old);
        }
        let mut client = client;
        if let Some(existing) = self.by_cookie.get(&client.cookie) {
            // The same cookie again: its dump, if any, still happened.
            client.dump = existing.dump.clone();
            if outcome == Registration::Updated {
                client.registered_at = existing.registered_at.clone();
            }
        }
        self.by_cookie.insert(client.cookie, client);
        self.save().map_err(RegistryError::Io)?;
        Ok(outcome)
    }

    /// Records that `cookie` announced its crash, dumped into directory `dump`.
    pub fn record_dump(&mut self, cookie: u64, dump: &str) -> io::Result<()> {
        if let Some(c) = self.by_cookie.get_mut(&cookie) {
            c.dump = Some(dump.to_string());
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> io::Result<()> {
        let mut clients: Vec<&Client> = self.by_cookie.values().collect();
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        let file = RegistryFile { version: 1, clients: clients.into_iter().map(ClientEntry::from).collect() };
        let mut text = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        text.push(b'\n');
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
        }
    }

    #[test]
    fn registration_survives_a_reload() {
        let dir = TestDir::new("registry-reload");
        let mut r = Registry::load(dir.path()).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.register(client(0xfeed_0000_0000_0001, "alpha")).unwrap(), Registration::New);
        r.record_dump(0xfeed_0000_0000_0001, "alpha-20260101-000000").unwrap();
        let r = Registry::load(dir.path()).unwrap();
        let c = r.get(0xfeed_0000_0000_0001).unwrap();
        assert_eq!(c.name, "alpha");
        assert_eq!(c.mac_string(), "52:54:00:12:34:56");
        assert_eq!(c.dump.as_deref(), Some("alpha-20260101-000000"));
        assert_eq!(*c, Client { dump: Some("alpha-20260101-000000".into()), ..client(0xfeed_0000_0000_0001, "alpha") });
    }

    #[test]
    fn a_new_cookie_for_a_known_name_replaces_the_old_one() {
        let dir = TestDir::new("registry-replace");
        let mut r = Registry::load(dir.path()).unwrap();
        r.register(client(1, "alpha")).unwrap();
        r.register(client(2, "beta")).unwrap();
        assert_eq!(r.register(client(3, "alpha")).unwrap(), Registration::Replaced { old_cookie: 1 });
        assert!(r.get(1).is_none());
        assert_eq!(r.get(3).unwrap().name, "alpha");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_repeated_hello_changes_nothing_and_keeps_the_dump() {
        let dir = TestDir::new("registry-repeat");
        let mut r = Registry::load(dir.path()).unwrap();
        r.register(client(1, "alpha")).unwrap();
        r.record_dump(1, "alpha-x").unwrap();
        assert_eq!(r.register(client(1, "alpha")).unwrap(), Registration::Unchanged);
        let moved =
            Client { source: "127.0.0.1:7000".parse().unwrap(), registered_at: "later".into(), ..client(1, "alpha") };
        assert_eq!(r.register(moved).unwrap(), Registration::Updated);
        let c = r.get(1).unwrap();
        assert_eq!(c.dump.as_deref(), Some("alpha-x"));
        assert_eq!(c.registered_at, "2026-01-01T00:00:00Z");
        assert_eq!(c.source.port(), 7000);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = TestDir::new("registry-corrupt");
        std::fs::write(dir.path().join(REGISTRY_FILE), b"{ not json").unwrap();
        let r = Registry::load(dir.path()).unwrap();
        assert!(r.is_empty());
        assert!(dir.path().join("clients.json.corrupt").exists());
    }

    #[test]
    fn a_bad_entry_is_skipped_and_the_rest_kept() {
        let dir = TestDir::new("registry-bad-entry");
        let mut r = Registry::load(dir.path()).unwrap();
        r.register(client(1, "alpha")).unwrap();
        r.register(client(2, "beta")).unwrap();
        let path = dir.path().join(REGISTRY_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("0000000000000001", "not-hex");
        std::fs::write(&path, text).unwrap();
        let r = Registry::load(dir.path()).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.get(2).is_some());
    }

    #[test]
    fn the_registry_refuses_new_names_when_full() {
        let dir = TestDir::new("registry-full");
        let mut r = Registry::load(dir.path()).unwrap();
        for i in 0..MAX_CLIENTS as u64 {
            r.by_cookie.insert(i, client(i, &format!("n{i}")));
        }
        assert!(matches!(r.register(client(1 << 40, "newcomer")), Err(RegistryError::Full)));
        // A known name may still re-register.
        assert!(matches!(r.register(client(1 << 41, "n7")), Ok(Registration::Replaced { old_cookie: 7 })));
    }

    #[test]
    fn macs_format_and_parse() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }
}
