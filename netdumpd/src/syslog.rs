//! netconsole lines received as UDP syslog (RFC 5424, or the BSD format of RFC 3164, as
//! netdump-core's `netconsole` sends them) and appended to the sending client's console
//! log, `<dir>/console/<client>.log`, one line per message prefixed with the server's
//! UTC time of arrival. The client is the message's HOSTNAME when it is a valid client
//! name, else the sender's IP address. A log beyond [`MAX_CONSOLE_LOG`] is rotated to
//! `<client>.log.1`. Lost lines show as gaps in RFC 5424's `meta sequenceId` and are
//! counted in the server log.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use netdump_core::proto::valid_name;

/// The console logs' directory inside the dump directory.
pub const CONSOLE_DIR: &str = "console";
/// A console log larger than this is rotated.
pub const MAX_CONSOLE_LOG: u64 = 16 << 20;

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
pub fn parse(datagram: &str) -> Option<SyslogMessage<'_>> {
    let rest = datagram.strip_prefix('<')?;
    let end = rest.find('>').filter(|e| (1..=3).contains(e))?;
    let pri: u8 = rest[..end].parse().ok().filter(|p| *p <= 191)?;
    let rest = &rest[end + 1..];
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
    if rest.len() > 16 && is_bsd_timestamp(&rest[..15]) && rest.as_bytes()[15] == b' ' {
        m.timestamp = Some(&rest[..15]);
        let after = &rest[16..];
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

fn is_bsd_timestamp(t: &str) -> bool {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = t.as_bytes();
    t.is_ascii()
        && MONTHS.contains(&&t[..3])
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
    while i < bytes.len() && bytes[i] == b'[' {
        let mut quoted = false;
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    let i = i.min(s.len());
    let (sd, msg) = s.split_at(i);
    (sd, msg.strip_prefix(' ').unwrap_or(msg))
}

fn sequence_id(sd: &str) -> Option<u32> {
    let at = sd.find("[meta ")?;
    let v = sd[at..].split("sequenceId=\"").nth(1)?;
    v[..v.find('"')?].parse().ok()
}

/// The netconsole receiver: a UDP socket and the console logs it appends to.
pub struct SyslogReceiver {
    socket: UdpSocket,
    dir: PathBuf,
    last_sequence: HashMap<String, u32>,
}

impl SyslogReceiver {
    pub fn bind(addr: SocketAddr, root: &Path) -> anyhow::Result<SyslogReceiver> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("cannot receive netconsole on {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let dir = root.join(CONSOLE_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        tracing::info!(listen = %socket.local_addr()?, dir = %dir.display(), "receiving netconsole (syslog)");
        Ok(SyslogReceiver { socket, dir, last_sequence: HashMap::new() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket has an address")
    }

    /// Receives until `stop` is set.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::SeqCst) && !crate::signals::termination_requested() {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) => tracing::debug!("syslog receive error: {e}"),
                }
            }
        })
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let text = String::from_utf8_lossy(datagram);
        let Some(m) = parse(&text) else {
            tracing::debug!(%from, "not a syslog message");
            return;
        };
        let client = match m.hostname.filter(|h| valid_name(h.as_bytes())) {
            Some(h) => h.to_string(),
            None => from.ip().to_string(),
        };
        if let Some(seq) = m.sequence
            && let Some(prev) = self.last_sequence.insert(client.clone(), seq)
            && seq > prev + 1
        {
            tracing::warn!(%client, lost = seq - prev - 1, "netconsole lines lost");
        }
        let line = m.message.trim_end_matches(['\n', '\r']);
        if let Err(e) = self.append(&client, line, from.ip()) {
            tracing::error!(%client, "cannot append to the console log: {e}");
        }
    }

    fn append(&self, client: &str, line: &str, from: IpAddr) -> io::Result<()> {
        let path = self.dir.join(format!("{client}.log"));
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_CONSOLE_LOG) {
            std::fs::rename(&path, self.dir.join(format!("{client}.log.1")))?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let stamp = crate::utc::rfc3339(crate::utc::now());
        tracing::trace!(%client, %from, "netconsole: {line}");
        // One write per line, so concurrent appenders never interleave within a line.
        f.write_all(format!("{stamp} {line}\n").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["hello", "<>x", "<192>x", "<1234>x", "<a>x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
