//! The server's static keys for encrypted dumps (`[encryption] private_keys`): X25519
//! private keys, one a file, each made by `netdumpd keygen`. Clients pin the public key
//! and name it in HELLO by its id (its first 8 bytes), so that a server can hold the old
//! and the new key while a fleet is moved from one to the other.
//!
//! A key file holds the private key as 64 hex digits and a newline (32 raw bytes are read
//! too). It must be private to its owner: a file that its group or others may read or
//! write is an error (`check-config` says so, and the server does not start), as
//! ssh refuses such a key.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use netdump_core::crypto::{KEY_LEN, PublicKey};
use netdump_core::proto::KEY_ID_LEN;
use zeroize::Zeroizing;

/// One static key pair of the server.
pub struct ServerKey {
    /// Where it was read from.
    pub path: PathBuf,
    secret: Zeroizing<[u8; KEY_LEN]>,
    public: PublicKey,
}

impl ServerKey {
    /// The key pair of `secret`.
    pub fn from_secret(path: PathBuf, secret: [u8; KEY_LEN]) -> Self {
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret)).to_bytes();
        ServerKey { path, secret: Zeroizing::new(secret), public: PublicKey(public) }
    }

    /// Reads a key file, refusing one its group or others can read or write.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path).with_context(|| format!("private key {}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "private key {}: mode {:o} lets others than its owner read or change it; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let bytes = Zeroizing::new(std::fs::read(path).with_context(|| format!("private key {}", path.display()))?);
        let secret = parse_secret(&bytes).with_context(|| format!("private key {}", path.display()))?;
        Ok(Self::from_secret(path.to_path_buf(), secret))
    }

    /// The public key clients pin.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The private key, for the handshake.
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey").field("path", &self.path).field("public", &self.public.to_string()).finish()
    }
}

/// 64 hex digits (whitespace around them ignored), or exactly 32 raw bytes.
fn parse_secret(bytes: &[u8]) -> anyhow::Result<[u8; KEY_LEN]> {
    if bytes.len() == KEY_LEN {
        let mut s = [0u8; KEY_LEN];
        s.copy_from_slice(bytes);
        return Ok(s);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow::anyhow!("neither 64 hex digits nor 32 bytes"))?;
    // The public key's parser reads the same 64 hex digits.
    let parsed = PublicKey::from_hex(text).map_err(|_| anyhow::anyhow!("neither 64 hex digits nor 32 bytes"))?;
    Ok(parsed.0)
}

/// The keys of `[encryption] private_keys`, looked up by the id a HELLO names.
#[derive(Debug, Default)]
pub struct ServerKeys(Vec<ServerKey>);

impl ServerKeys {
    /// Loads every file; any error stops the server from starting.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let keys = paths.iter().map(|p| ServerKey::load(p)).collect::<anyhow::Result<Vec<_>>>()?;
        for (i, k) in keys.iter().enumerate() {
            if let Some(other) = keys[..i].iter().find(|o| o.public.key_id() == k.public.key_id()) {
                bail!(
                    "private keys {} and {} have the same key id: clients could not tell them apart",
                    other.path.display(),
                    k.path.display()
                );
            }
        }
        Ok(ServerKeys(keys))
    }

    /// The keys given (tests).
    pub fn new(keys: Vec<ServerKey>) -> Self {
        ServerKeys(keys)
    }

    /// True when the server has no key (it cannot encrypt).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key whose public key begins with `key_id`.
    pub fn find(&self, key_id: &[u8; KEY_ID_LEN]) -> Option<&ServerKey> {
        self.0.iter().find(|k| &k.public.key_id() == key_id)
    }

    /// Every key, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ServerKey> {
        self.0.iter()
    }
}

/// `netdumpd keygen --out FILE`: makes a key pair, writes the private key to a new file
/// (0600; an existing file is never overwritten) and returns what to print: the public key
/// and how a kernel's configuration takes it.
pub fn keygen(out: &Path) -> anyhow::Result<String> {
    let params = netdump_core::crypto::PROTOCOL_NAME.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pair = snow::Builder::new(params).generate_keypair().map_err(|e| anyhow::anyhow!("cannot make a key: {e}"))?;
    let mut secret = Zeroizing::new([0u8; KEY_LEN]);
    secret.copy_from_slice(&pair.private);
    let key = ServerKey::from_secret(out.to_path_buf(), *secret);
    let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 1));
    for b in secret.iter() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    let mut file = crate::files::private_file()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (an existing key is never overwritten)", out.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let public = key.public();
    Ok(format!(
        "private key written to {}\n\
         public key: {public}\n\
         in the server's configuration: [encryption] private_keys = [{:?}]\n\
         in a kernel's netdump configuration (feature \"encryption\"):\n    \
         Config {{ server_key: Some(\"{public}\".parse().unwrap()), ..Config::new(net, name) }}\n",
        out.display(),
        out.display().to_string()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn keygen_writes_a_private_0600_key_whose_public_key_it_prints() {
        let dir = TestDir::new("keygen");
        let path = dir.path().join("server.key");
        let text = keygen(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = ServerKey::load(&path).unwrap();
        let public = key.public().to_string();
        assert!(text.contains(&format!("public key: {public}\n")), "{text}");
        assert!(text.contains(&format!("server_key: Some(\"{public}\".parse().unwrap())")), "{text}");
        // What it prints is what a kernel's configuration parses.
        let line = text.lines().find(|l| l.starts_with("public key: ")).unwrap();
        assert_eq!(line["public key: ".len()..].parse::<PublicKey>().unwrap(), *key.public());
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert_eq!(on_disk.trim().len(), 64);
    }

    #[test]
    fn keygen_refuses_to_overwrite_a_file() {
        let dir = TestDir::new("keygen-exists");
        let path = dir.path().join("server.key");
        std::fs::write(&path, b"precious").unwrap();
        let e = keygen(&path).unwrap_err();
        assert!(format!("{e:#}").contains("never overwritten"), "{e:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn a_key_others_can_read_or_a_malformed_key_is_refused() {
        let dir = TestDir::new("key-mode");
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = ServerKey::load(&path).unwrap_err();
        assert!(format!("{e:#}").contains("chmod 600"), "{e:#}");
        for (name, contents) in [("short", &b"abcd"[..]), ("not-hex", &[b'z'; 64][..]), ("long", &[1u8; 33][..])] {
            let p = dir.path().join(name);
            crate::files::write_private(&p, contents).unwrap();
            assert!(ServerKey::load(&p).is_err(), "{name}");
        }
        // 32 raw bytes are a key too.
        let raw = dir.path().join("raw");
        crate::files::write_private(&raw, &[7u8; 32]).unwrap();
        assert_eq!(ServerKey::load(&raw).unwrap().secret(), &[7u8; 32]);
    }

    #[test]
    fn keys_are_found_by_the_id_a_hello_names_and_ids_must_differ() {
        let dir = TestDir::new("key-ids");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        keygen(&a).unwrap();
        keygen(&b).unwrap();
        let keys = ServerKeys::load(&[a.clone(), b.clone()]).unwrap();
        let kb = ServerKey::load(&b).unwrap();
        assert_eq!(keys.find(&kb.public().key_id()).unwrap().path, b);
        assert!(keys.find(&[0; KEY_ID_LEN]).is_none());
        assert!(ServerKeys::load(&[a.clone(), a]).is_err(), "the same key twice");
    }
}
