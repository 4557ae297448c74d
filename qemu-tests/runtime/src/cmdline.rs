//! The kernel command line as whitespace-separated `key=value` words.
//!
//! `scenario=panic server=10.0.2.2 pages=0x400 verbose` has the keys `scenario`, `server`,
//! `pages` and the bare word `verbose`. When a key appears twice the last value wins, so
//! a harness can append an override to a default command line. There is no quoting.

/// A parsed view of a command line; cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    text: &'a str,
}

impl<'a> Cmdline<'a> {
    pub const fn new(text: &'a str) -> Self {
        Cmdline { text }
    }

    /// The whole command line, as given.
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// Every word as `(key, value)`; a bare word has the value `None`.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.text.split_ascii_whitespace().map(|word| match word.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (word, None),
        })
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().filter(|(k, _)| *k == key).filter_map(|(_, value)| value).last()
    }

    /// Whether `key` appears, as a bare word or with a value.
    pub fn has(&self, key: &str) -> bool {
        self.iter().any(|(k, _)| k == key)
    }

    /// The value of `key` as an unsigned integer: decimal, or hexadecimal with `0x`.
    /// `None` when the key is missing or its value is not such a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        Self::parse_u64(self.get(key)?)
    }

    /// A number as `get_u64` reads one: decimal, or hexadecimal with `0x` (for values a
    /// kernel splits itself, like `base+len`).
    pub fn parse_u64(text: &str) -> Option<u64> {
        parse_u64(text)
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
