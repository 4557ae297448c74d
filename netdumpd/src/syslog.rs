//! netconsole lines received as UDP syslog (RFC 5424, or the BSD format of RFC 3164, as
//! netdump-core's `netconsole` sends them) and appended to the sending client's console
//! log, `<dir>/console/<client>.log`, one line per message prefixed with the server's
//! UTC time of arrival. The client is the message's HOSTNAME when it is a valid client
//! name, else the sender's IP address. Lost lines show as gaps in RFC 5424's
//! `meta sequenceId` and are counted in the server log.
//!
//! Anyone who can reach the port can send here, so:
//! - the parser never panics, whatever the bytes (it never slices a string at an offset
//!   it did not find at a character boundary; netdumpd is built with `panic = "abort"`,
//!   so a panic in this thread would take the dump server down with it);
//! - each message is exactly one line of its console log: control characters (and the
//!   Unicode line separators and bidirectional overrides) are escaped as `\n`, `\t`,
//!   `\u{1b}`, …; the server's own log shows network values `{:?}`-quoted;
//! - what a stranger can make the receiver hold is bounded by [`SyslogLimits`]: console
//!   logs of at most `max_clients` clients (messages from more are dropped and counted),
//!   each rotated at `max_log_bytes` to one `.log.1`, no file held open between
//!   messages, and at most `warnings_per_second` lines a second in the server log.
//!
//! The console directory is 0700 and its logs 0600, whatever the umask.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use netdump_core::proto::valid_name;

/// The console logs' directory inside the dump directory.
pub const CONSOLE_DIR: &str = "console";
/// A console log larger than this is rotated (the default of
/// [`SyslogLimits::max_log_bytes`]).
pub const MAX_CONSOLE_LOG: u64 = 16 << 20;

/// Bounds on what the senders of syslog datagrams can make the receiver hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogLimits {
    /// Clients with a console log (those found in the directory at start count too);
    /// messages naming (or coming from) one more are dropped and counted.
    pub max_clients: usize,
    /// A console log larger than this is renamed to `<client>.log.1` (replacing the
    /// previous one) before the next line: at most about twice this per client.
    pub max_log_bytes: u64,
    /// Lines the receiver writes to the server log per second; the rest are counted and
    /// the count is given with the next line logged.
    pub warnings_per_second: u32,
}

impl Default for SyslogLimits {
    fn default() -> Self {
        SyslogLimits { max_clients: 1024, max_log_bytes: MAX_CONSOLE_LOG, warnings_per_second: 5 }
    }
}

/// A syslog message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage<'a> {
    pub facility: u8,
    pub severity: u8,
    /// 5424 or 3164.
    pub rfc: u16,
    pub timestamp: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub app: Option<&'a str>,
    /// RFC 5424 `meta sequenceId`, when present.
    pub sequence: Option<u32>,
    pub message: &'a str,
}

/// Parses a datagram as RFC 5424 or RFC 3164 syslog; `None` when it has no `<PRI>`.
///
/// Never panics: every split is at an ASCII delimiter found in the text (so at a
/// character boundary), or through `str::get`.
pub fn parse(datagram: &str) -> Option<SyslogMessage<'_>> {
    let rest = datagram.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    if !(1..=3).contains(&pri.len()) || !pri.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pri: u8 = pri.parse().ok().filter(|p| *p <= 191)?;
    let mut m = SyslogMessage {
        facility: pri / 8,
        severity: pri % 8,
        rfc: 3164,
        timestamp: None,
        hostname: None,
        app: None,
        sequence: None,
        message: rest,
    };
    if let Some(after) = rest.strip_prefix("1 ") {
        m.rfc = 5424;
        let mut fields = after.splitn(6, ' ');
        m.timestamp = nil(fields.next());
        m.hostname = nil(fields.next());
        m.app = nil(fields.next());
        let _procid = fields.next();
        let _msgid = fields.next();
        let sd_and_msg = fields.next().unwrap_or("");
        let (sd, msg) = split_structured_data(sd_and_msg);
        m.sequence = sequence_id(sd);
        m.message = msg.strip_prefix('\u{feff}').unwrap_or(msg);
        return Some(m);
    }
    // RFC 3164: "Mmm dd hh:mm:ss HOSTNAME TAG: MSG"; without a timestamp, all is MSG.
    // The timestamp is 15 ASCII bytes and a space, so both offsets are then boundaries;
    // `get` keeps that true for any other text too.
    if let (Some(stamp), Some(after)) = (rest.get(..15), rest.get(16..))
        && is_bsd_timestamp(stamp.as_bytes())
        && rest.as_bytes()[15] == b' '
        && !after.is_empty()
    {
        m.timestamp = Some(stamp);
        let (host, msg) = after.split_once(' ').unwrap_or((after, ""));
        m.hostname = Some(host);
        m.message = msg;
        if let Some((tag, text)) = msg.split_once(": ")
            && !tag.is_empty()
            && tag.len() <= 48
            && !tag.contains(' ')
        {
            m.app = Some(tag.split('[').next().unwrap_or(tag));
            m.message = text;
        }
    }
    Some(m)
}

/// RFC 5424's NILVALUE `-` is no value.
fn nil(f: Option<&str>) -> Option<&str> {
    f.filter(|f| *f != "-")
}

/// `Mmm dd hh:mm:ss` (the day space-padded), on bytes: no slicing of text.
fn is_bsd_timestamp(b: &[u8]) -> bool {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let Ok(b) = <&[u8; 15]>::try_from(b) else { return false };
    MONTHS.iter().any(|m| b[..3] == m[..])
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && [7, 8, 10, 11, 13, 14].iter().all(|&i| b[i].is_ascii_digit())
}

/// Splits RFC 5424's STRUCTURED-DATA (`-` or `[…]…`, with `\]`, `\"` escapes inside
/// quoted values) from the MSG after it.
fn split_structured_data(s: &str) -> (&str, &str) {
    if let Some(rest) = s.strip_prefix('-') {
        return ("", rest.strip_prefix(' ').unwrap_or(rest));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while bytes.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    // `i` is just past an ASCII `]`, or past the end; an escape may have skipped the
    // first byte of a multi-byte character, so check rather than trust it.
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    let (sd, msg) = s.split_at(i);
    (sd, msg.strip_prefix(' ').unwrap_or(msg))
}

fn sequence_id(sd: &str) -> Option<u32> {
    let (_, meta) = sd.split_once("[meta ")?;
    let (_, v) = meta.split_once("sequenceId=\"")?;
    let (v, _) = v.split_once('"')?;
    v.parse().ok()
}

/// `c` would break a console log's one line per message, or reorder what a terminal
/// shows: C0 and C1 controls, DEL, the Unicode line and paragraph separators and the
/// bidirectional embeddings, overrides and isolates.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with its control characters escaped as Rust's `escape_debug` does (`\n`, `\r`,
/// `\t`, `\0`, `\u{1b}`), so that it is one line; printable text is unchanged.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What the receiver has seen, readable while it runs.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Lines appended to a console log.
    pub written: AtomicU64,
    /// Datagrams without a `<PRI>`.
    pub not_syslog: AtomicU64,
    /// Messages dropped because they would have started a console log beyond
    /// [`SyslogLimits::max_clients`].
    pub over_client_limit: AtomicU64,
    /// Messages that could not be written.
    pub write_errors: AtomicU64,
    /// Lines lost on the way, by the gaps in `meta sequenceId`.
    pub lost: AtomicU64,
    /// Lines of the server log not written, beyond [`SyslogLimits::warnings_per_second`].
    pub log_lines_suppressed: AtomicU64,
}

impl SyslogCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A budget of log lines per second.
#[derive(Debug)]
struct LogBudget {
    per_second: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    fn new(per_second: u32) -> Self {
        LogBudget { per_second, window: None, used: 0, suppressed: 0 }
    }

    /// `Some(n)` when a line may be logged now (`n` were suppressed since the last one
    /// logged), `None` when this one is suppressed.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.window.is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1)) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// The netconsole receiver: a UDP socket and the console logs it appends to.
pub struct SyslogReceiver {
    socket: UdpSocket,
    dir: PathBuf,
    limits: SyslogLimits,
    /// The clients with a console log; at most `limits.max_clients` (more when more were
    /// found at start).
    clients: HashSet<String>,
    /// The last `meta sequenceId` of each of `clients`.
    last_sequence: HashMap<String, u32>,
    budget: LogBudget,
    counters: Arc<SyslogCounters>,
}

/// Logs through the receiver's budget: at most `warnings_per_second` lines a second.
macro_rules! budgeted {
    ($self:ident, $level:ident, $($arg:tt)+) => {
        match $self.budget.allow(Instant::now()) {
            Some(0) => tracing::$level!($($arg)+),
            Some(suppressed) => tracing::$level!(suppressed, $($arg)+),
            None => SyslogCounters::add(&$self.counters.log_lines_suppressed, 1),
        }
    };
}

impl SyslogReceiver {
    pub fn bind(addr: SocketAddr, root: &Path, limits: SyslogLimits) -> anyhow::Result<SyslogReceiver> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("cannot receive netconsole on {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let dir = root.join(CONSOLE_DIR);
        crate::files::create_private_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // An earlier netdumpd's directory may be wider (before it was created 0700).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
        let clients = existing_clients(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        tracing::info!(
            listen = %socket.local_addr()?,
            dir = %dir.display(),
            clients = clients.len(),
            max_clients = limits.max_clients,
            "receiving netconsole (syslog)"
        );
        Ok(SyslogReceiver {
            socket,
            dir,
            budget: LogBudget::new(limits.warnings_per_second),
            limits,
            clients,
            last_sequence: HashMap::new(),
            counters: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket has an address")
    }

    /// The receiver's counters, readable while it runs.
    pub fn counters(&self) -> Arc<SyslogCounters> {
        self.counters.clone()
    }

    /// Receives until `stop` is set.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) && !crate::signals::termination_requested() {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => budgeted!(self, debug, "syslog receive error: {e}"),
                }
            }
        })
    }

    /// One datagram from `from`: parsed, attributed to a client, appended to its console
    /// log as one line. What the receiving thread does with each; public for the fuzz
    /// target. Nothing here may panic, whatever the bytes.
    pub fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        SyslogCounters::add(&self.counters.received, 1);
        let text = String::from_utf8_lossy(datagram);
        let Some(m) = parse(&text) else {
            SyslogCounters::add(&self.counters.not_syslog, 1);
            budgeted!(self, debug, %from, "not a syslog message");
            return;
        };
        let client = match m.hostname.filter(|h| valid_name(h.as_bytes())) {
            Some(h) => h.to_string(),
            None => from.ip().to_string(),
        };
        if !self.clients.contains(&client) {
            if self.clients.len() >= self.limits.max_clients {
                SyslogCounters::add(&self.counters.over_client_limit, 1);
                budgeted!(
                    self,
                    warn,
                    ?client,
                    %from,
                    max_clients = self.limits.max_clients,
                    dropped = self.counters.over_client_limit.load(Ordering::Relaxed),
                    "netconsole line dropped: console logs of max_clients clients exist"
                );
                return;
            }
            self.clients.insert(client.clone());
        }
        if let Some(seq) = m.sequence
            && let Some(prev) = self.last_sequence.insert(client.clone(), seq)
            && let Some(lost) = seq.checked_sub(prev).and_then(|d| d.checked_sub(1)).filter(|l| *l > 0)
        {
            SyslogCounters::add(&self.counters.lost, u64::from(lost));
            budgeted!(self, warn, ?client, lost, "netconsole lines lost");
        }
        let message = m.message.trim_end_matches(['\n', '\r']);
        match self.append(&client, &escape_controls(message)) {
            Ok(()) => {
                SyslogCounters::add(&self.counters.written, 1);
                tracing::trace!(?client, %from, "netconsole: {message:?}");
            }
            Err(e) => {
                SyslogCounters::add(&self.counters.write_errors, 1);
                budgeted!(self, error, ?client, "cannot append to the console log: {e}");
            }
        }
    }

    /// Appends one line (already escaped) to `client`'s console log, rotating it first
    /// when it is over the limit. The file is opened and closed for each line: no
    /// handles are held, and a log an administrator moved away is started afresh.
    fn append(&self, client: &str, line: &str) -> io::Result<()> {
        let path = self.dir.join(format!("{client}.log"));
        let mut f = open_console_log(&path)?;
        let meta = f.metadata()?;
        if meta.len() > self.limits.max_log_bytes {
            drop(f);
            std::fs::rename(&path, self.dir.join(format!("{client}.log.1")))?;
            f = open_console_log(&path)?;
        } else if meta.permissions().mode() & 0o077 != 0 {
            // Written by a netdumpd before logs were private.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let stamp = crate::utc::rfc3339(crate::utc::now());
        // One write per line, so concurrent appenders never interleave within a line.
        f.write_all(format!("{stamp} {line}\n").as_bytes())
    }
}

/// Opens a console log to append, created 0600; never through a symbolic link.
fn open_console_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The clients whose console logs (`<client>.log`, `<client>.log.1`) are in `dir`.
fn existing_clients(dir: &Path) -> io::Result<HashSet<String>> {
    let mut clients = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(client) = name.strip_suffix(".log").or_else(|| name.strip_suffix(".log.1")) {
            clients.insert(client.to_string());
        }
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let m = parse(
            "<6>1 2026-01-02T03:04:05.000006Z node-a netdump - console [meta sequenceId=\"42\"] \u{feff}hello world",
        )
        .unwrap();
        assert_eq!((m.facility, m.severity, m.rfc), (0, 6, 5424));
        assert_eq!(m.timestamp, Some("2026-01-02T03:04:05.000006Z"));
        assert_eq!(m.hostname, Some("node-a"));
        assert_eq!(m.app, Some("netdump"));
        assert_eq!(m.sequence, Some(42));
        assert_eq!(m.message, "hello world");
    }

    #[test]
    fn rfc5424_nil_values_and_escaped_brackets() {
        let m = parse("<165>1 - - - - - [x@1 a=\"q\\]\\\"\"][meta sequenceId=\"7\"] msg [not sd]").unwrap();
        assert_eq!((m.facility, m.severity), (20, 5));
        assert_eq!((m.timestamp, m.hostname, m.app), (None, None, None));
        assert_eq!(m.sequence, Some(7));
        assert_eq!(m.message, "msg [not sd]");
        assert_eq!(parse("<0>1 - h a - - -").unwrap().message, "");
    }

    #[test]
    fn rfc3164_with_and_without_timestamp() {
        // The example of RFC 3164 section 5.4.
        let m = parse("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8").unwrap();
        assert_eq!((m.facility, m.severity, m.rfc), (4, 2, 3164));
        assert_eq!(m.timestamp, Some("Oct 11 22:14:15"));
        assert_eq!(m.hostname, Some("mymachine"));
        assert_eq!(m.app, Some("su"));
        assert_eq!(m.message, "'su root' failed for lonvick on /dev/pts/8");
        let m = parse("<6>Jan  2 03:04:05 node-a netdump[0]: line: with colon").unwrap();
        assert_eq!((m.hostname, m.app, m.message), (Some("node-a"), Some("netdump"), "line: with colon"));
        let m = parse("<13>no header at all").unwrap();
        assert_eq!((m.hostname, m.message), (None, "no header at all"));
    }

    #[test]
    fn not_syslog_is_refused() {
        for bad in ["hello", "<>x", "<192>x", "<1234>x", "<a>x", "<+1>x", "<é>x", "<1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// Issue 11: this datagram (called 25 bytes there; 27 in UTF-8) panicked the parser
    /// (`&rest[..15]` inside `é`), which aborted netdumpd.
    #[test]
    fn a_multibyte_character_where_a_bsd_timestamp_would_end_is_just_text() {
        let datagram = "<13>aaaaaaaaaaaaaaébcdefgh";
        assert!(!datagram.is_char_boundary(4 + 15));
        let m = parse(datagram).unwrap();
        assert_eq!((m.rfc, m.timestamp, m.hostname), (3164, None, None));
        assert_eq!(m.message, "aaaaaaaaaaaaaaébcdefgh");
    }

    #[test]
    fn a_multibyte_character_after_an_escape_in_structured_data_is_kept_whole() {
        let m = parse("<13>1 - h a - - [x a=\"\\é\"] after").unwrap();
        assert_eq!(m.message, "after");
        let m = parse("<13>1 - h a - - [x a=\"\\é").unwrap();
        assert_eq!(m.message, "");
    }

    /// A deterministic generator (xorshift64*), so that a failure can be replayed.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const TEMPLATES: [&str; 6] = [
        "<13>Oct 11 22:14:15 mymachine su: 'su root' failed",
        "<6>Jan  2 03:04:05 node-a netdump[0]: line: with colon",
        "<165>1 2026-01-02T03:04:05Z node-a netdump - console [meta sequenceId=\"42\"] \u{feff}hello",
        "<165>1 - - - - - [x@1 a=\"q\\]\\\"\"][meta sequenceId=\"7\"] msg [not sd]",
        "<13>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "<0>1 - h a - - -",
    ];

    /// Datagrams an attacker might send: every template with a multi-byte character
    /// inserted at (and replacing the byte at) each offset 0..40, random bytes made
    /// lossy UTF-8 (plain and behind syslog-looking prefixes), and every truncation of
    /// the templates and of their multi-byte variants.
    fn hostile_datagrams() -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let chars = ["é", "€", "😀", "\u{fffd}", "\u{feff}", "\n", "\u{2028}"];
        for t in TEMPLATES {
            for c in chars {
                for at in 0..40.min(t.len() + 1) {
                    let (a, b) = t.split_at(at);
                    out.push(format!("{a}{c}{b}").into_bytes());
                    if let Some(rest) = b.get(1..) {
                        out.push(format!("{a}{c}{rest}").into_bytes());
                    }
                }
            }
        }
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let alphabet =
            b"<>[]\"\\= -:1234567890OctJanDecmeta sequenceId\n\r\x1b\x00\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff";
        let prefixes =
            ["", "<13>", "<6>1 ", "<6>1 - h a - - [meta sequenceId=\"", "<34>Oct 11 22:14:15 ", "<34>Oct 11 "];
        for i in 0..3000 {
            let mut d = prefixes[i % prefixes.len()].as_bytes().to_vec();
            let len = g.below(64);
            for _ in 0..len {
                d.push(if g.below(4) == 0 { g.next() as u8 } else { alphabet[g.below(alphabet.len())] });
            }
            out.push(d);
        }
        let whole: Vec<Vec<u8>> =
            out.iter().take(400).cloned().chain(TEMPLATES.iter().map(|t| t.as_bytes().to_vec())).collect();
        for d in whole {
            for end in 0..d.len() {
                out.push(d[..end].to_vec());
            }
        }
        out
    }

    fn receiver(dir: &Path, limits: SyslogLimits) -> SyslogReceiver {
        SyslogReceiver::bind("127.0.0.1:0".parse().unwrap(), dir, limits).unwrap()
    }

    fn from() -> SocketAddr {
        "192.0.2.7:514".parse().unwrap()
    }

    /// Every console log's lines, by client.
    fn console_lines(dir: &Path) -> HashMap<String, Vec<String>> {
        let mut out = HashMap::new();
        for e in std::fs::read_dir(dir.join(CONSOLE_DIR)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.insert(name, text.lines().map(str::to_string).collect());
        }
        out
    }

    #[test]
    fn no_datagram_panics_the_parser_or_the_receiver_and_each_message_is_one_line() {
        let dir = TestDir::new("syslog-hostile");
        let mut r = receiver(dir.path(), SyslogLimits { max_clients: 64, ..SyslogLimits::default() });
        let datagrams = hostile_datagrams();
        assert!(datagrams.len() > 10_000, "{}", datagrams.len());
        for d in &datagrams {
            let text = String::from_utf8_lossy(d);
            if let Some(m) = parse(&text) {
                // Every field is a piece of the datagram.
                for f in [m.timestamp, m.hostname, m.app, Some(m.message)].into_iter().flatten() {
                    assert!(text.contains(f), "{text:?}: {m:?}");
                }
            }
            r.on_datagram(d, from());
        }
        let c = r.counters();
        let written = c.written.load(Ordering::Relaxed);
        let dropped = c.over_client_limit.load(Ordering::Relaxed);
        let not_syslog = c.not_syslog.load(Ordering::Relaxed);
        assert_eq!(c.write_errors.load(Ordering::Relaxed), 0);
        assert_eq!(written + dropped + not_syslog, datagrams.len() as u64);
        assert!(written > 5000, "{written}");
        let logs = console_lines(dir.path());
        assert!(logs.len() <= 64, "{}", logs.len());
        let lines: usize = logs.values().map(Vec::len).sum();
        assert_eq!(lines as u64, written, "one line per message");
        for line in logs.values().flatten() {
            assert!(!line.chars().any(needs_escape), "{line:?}");
        }
    }

    #[test]
    fn sequence_numbers_at_the_ends_of_u32_do_not_overflow() {
        let dir = TestDir::new("syslog-sequence");
        let mut r = receiver(dir.path(), SyslogLimits::default());
        for seq in [u32::MAX, 0, u32::MAX, u32::MAX - 1, 3] {
            r.on_datagram(format!("<13>1 - node-s a - - [meta sequenceId=\"{seq}\"] line {seq}").as_bytes(), from());
        }
        assert_eq!(r.counters().written.load(Ordering::Relaxed), 5);
        // Only 0 → u32::MAX jumps forward (by all but one of the numbers), and u32::MAX - 1 → 3
        // does not.
        assert_eq!(r.counters().lost.load(Ordering::Relaxed), u64::from(u32::MAX - 1));
    }

    #[test]
    fn control_characters_are_escaped_so_that_a_message_is_one_line() {
        let dir = TestDir::new("syslog-escape");
        let mut r = receiver(dir.path(), SyslogLimits::default());
        r.on_datagram(b"<13>1 - node-e a - - - hello\nFAKE LINE\r\x1b[31mred\t\xe2\x80\xa8end\n", from());
        r.on_datagram("<13>1 - node-e a - - - ünïcödé stays as is: \\n".as_bytes(), from());
        let logs = console_lines(dir.path());
        let lines = &logs["node-e.log"];
        assert_eq!(lines.len(), 2, "{lines:?}");
        let (_, first) = lines[0].split_once(' ').unwrap();
        assert_eq!(first, "hello\\nFAKE LINE\\r\\u{1b}[31mred\\t\\u{2028}end");
        assert!(lines[1].ends_with(" ünïcödé stays as is: \\n"), "{lines:?}");
        assert_eq!(escape_controls("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn console_logs_of_at_most_max_clients_clients_are_kept() {
        let dir = TestDir::new("syslog-cap");
        let limits = SyslogLimits { max_clients: 3, ..SyslogLimits::default() };
        let mut r = receiver(dir.path(), limits.clone());
        for host in ["h1", "h2", "h3", "h4", "h5", "h1"] {
            r.on_datagram(format!("<13>1 - {host} a - - - from {host}").as_bytes(), from());
        }
        let c = r.counters();
        assert_eq!(c.written.load(Ordering::Relaxed), 4);
        assert_eq!(c.over_client_limit.load(Ordering::Relaxed), 2);
        let mut names: Vec<_> = console_lines(dir.path()).into_keys().collect();
        names.sort();
        assert_eq!(names, ["h1.log", "h2.log", "h3.log"]);
        assert_eq!(r.clients.len(), 3, "nothing is kept for the dropped");
        // After a restart, the logs on disk count.
        drop(r);
        let mut r = receiver(dir.path(), limits);
        r.on_datagram(b"<13>1 - h6 a - - - from h6", from());
        r.on_datagram(b"<13>1 - h2 a - - - again from h2", from());
        assert_eq!(r.counters().over_client_limit.load(Ordering::Relaxed), 1);
        assert_eq!(console_lines(dir.path()).len(), 3);
    }

    #[test]
    fn a_console_log_over_the_limit_is_rotated_once() {
        let dir = TestDir::new("syslog-rotate");
        let mut r = receiver(dir.path(), SyslogLimits { max_log_bytes: 1000, ..SyslogLimits::default() });
        for i in 0..200 {
            r.on_datagram(format!("<13>1 - node-r a - - - line {i:04} {}", "x".repeat(40)).as_bytes(), from());
        }
        let logs = console_lines(dir.path());
        assert_eq!(logs.len(), 2, "{:?}", logs.keys());
        for name in ["node-r.log", "node-r.log.1"] {
            let len = std::fs::metadata(dir.path().join(CONSOLE_DIR).join(name)).unwrap().len();
            assert!(len <= 1000 + 100, "{name}: {len}");
        }
        assert!(logs["node-r.log"].last().unwrap().contains("line 0199"));
    }

    #[test]
    fn the_console_directory_and_logs_are_private() {
        let dir = TestDir::new("syslog-private");
        std::fs::create_dir(dir.path().join(CONSOLE_DIR)).unwrap();
        std::fs::set_permissions(dir.path().join(CONSOLE_DIR), std::fs::Permissions::from_mode(0o755)).unwrap();
        let old = dir.path().join(CONSOLE_DIR).join("old.log");
        std::fs::write(&old, "earlier\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut r = receiver(dir.path(), SyslogLimits::default());
        r.on_datagram(b"<13>1 - new a - - - x", from());
        r.on_datagram(b"<13>1 - old a - - - x", from());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(CONSOLE_DIR)), 0o700);
        assert_eq!(mode(&dir.path().join(CONSOLE_DIR).join("new.log")), 0o600);
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn warnings_are_limited_per_second_and_the_rest_counted() {
        let mut b = LogBudget::new(3);
        let t0 = Instant::now();
        let allowed: Vec<_> = (0..10).map(|i| b.allow(t0 + Duration::from_millis(i * 10))).collect();
        assert_eq!(allowed[..4], [Some(0), Some(0), Some(0), None]);
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Some(0));
    }
}
