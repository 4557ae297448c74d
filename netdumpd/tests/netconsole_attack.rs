//! The netconsole (syslog) port under attack, against the real daemon: the `netdumpd`
//! binary (built with `panic = "abort"`, as it ships) with netconsole listening, fed
//! hostile datagrams over loopback UDP. One datagram used to abort the whole daemon,
//! taking the dump port with it (issue 11); control characters used to forge lines.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use netdump_core::proto::HelloStatus;
use netdumpd::syslog::{SyslogLimits, SyslogReceiver};

/// The datagram of issue 11: a multi-byte character where an RFC 3164 timestamp would end.
const ISSUE_11: &[u8] = "<13>aaaaaaaaaaaaaaébcdefgh".as_bytes();

/// A `netdumpd` process on ephemeral loopback ports, its output collected.
struct Daemon {
    child: Child,
    dump: SocketAddr,
    syslog: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

/// `line` without ANSI colour sequences.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address after `listen=` in a log line.
fn listen_field(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listen=")?;
    rest.split_whitespace().next()?.trim_matches('"').parse().ok()
}

impl Daemon {
    fn start(dir: &Path, log_level: &str) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netdumpd"))
            .arg("--dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--netconsole-listen", "127.0.0.1:0", "--min-free", "0"])
            .args(["--log-level", log_level])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netdumpd");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let readers: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for r in readers {
            let (tx, output) = (tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let line = plain(&line);
                    output.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let (mut dump, mut syslog) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while dump.is_none() || syslog.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("netdumpd did not say where it listens: {:?}", output.lock().unwrap());
            };
            if line.contains("receiving netconsole") {
                syslog = listen_field(&line);
            } else if line.contains("netdumpd ready") {
                dump = listen_field(&line);
            }
        }
        Daemon { child, dump: dump.unwrap(), syslog: syslog.unwrap(), output }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon ends cleanly; SIGKILL if it does not within 10 s.
        // SAFETY: kill(2) on our own child's pid, which we have not yet waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn send(to: SocketAddr, datagram: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(datagram, to).unwrap();
}

fn console_log(dir: &Path, client: &str) -> PathBuf {
    dir.join("console").join(format!("{client}.log"))
}

/// Waits until the console log of `client` has a line containing `text`; its lines.
fn wait_for_line(dir: &Path, client: &str, text: &str) -> Vec<String> {
    let path = console_log(dir, client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> =
            std::fs::read_to_string(&path).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.iter().any(|l| l.contains(text)) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no line with {text:?} in {}: {lines:?}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_datagram_of_issue_11_leaves_netdumpd_receiving_and_dumping() {
    let dir = TempDir::new("attack-issue-11");
    let mut d = Daemon::start(dir.path(), "info");
    send(d.syslog, ISSUE_11);
    // Then a well-formed line: the receiver must still be there to write it …
    send(d.syslog, b"<13>1 - after-attack netdump - - - still receiving");
    let lines = wait_for_line(dir.path(), "after-attack", "still receiving");
    assert_eq!(lines.len(), 1, "{lines:?}");
    // … and the attack's own line was written as text, attributed to the sender's address.
    wait_for_line(dir.path(), "127.0.0.1", "aaaaaaaaaaaaaaébcdefgh");
    // The dump port answers.
    let client = TestClient::new(d.dump, 0x1111_2222_3333_4444);
    assert_eq!(client.hello("after-attack").status, HelloStatus::Registered);
    assert!(d.alive(), "netdumpd exited: {:?}", d.output());
}

#[test]
fn a_newline_in_a_message_forges_no_line_in_the_console_log_or_the_server_log() {
    let dir = TempDir::new("attack-forgery");
    let mut d = Daemon::start(dir.path(), "trace");
    send(d.syslog, b"<13>1 - forger netdump - - - real\nFAKE LINE\r\n2026-01-01T00:00:00Z \x1b[2Jcleared");
    send(d.syslog, b"<13>Oct 11 22:14:15 forger su: bsd\nFAKE LINE");
    let lines = wait_for_line(dir.path(), "forger", "bsd");
    assert_eq!(lines.len(), 2, "one line per message: {lines:?}");
    let (_, first) = lines[0].split_once(' ').unwrap();
    assert_eq!(first, "real\\nFAKE LINE\\r\\n2026-01-01T00:00:00Z \\u{1b}[2Jcleared");
    let (_, second) = lines[1].split_once(' ').unwrap();
    assert_eq!(second, "bsd\\nFAKE LINE");
    // The server's log has the messages (at trace level) quoted, never raw.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.output().iter().any(|l| l.contains("bsd\\nFAKE LINE")) {
        assert!(Instant::now() < deadline, "the trace lines did not come: {:?}", d.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = d.output();
    assert!(!output.iter().any(|l| l.starts_with("FAKE LINE") || l.starts_with("2026-01-01T00:00:00Z ")), "{output:?}");
    assert!(!output.iter().any(|l| l.contains('\x1b') || l.contains('\r')), "{output:?}");
    assert!(d.alive());
}

#[test]
fn hostile_datagrams_over_udp_leave_the_daemon_running() {
    let dir = TempDir::new("attack-garbage");
    let mut d = Daemon::start(dir.path(), "info");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let prefixes: [&[u8]; 4] = [b"<13>", b"<13>1 ", b"<13>1 - h a - - [meta sequenceId=\"", b"<13>Oct 11 "];
    for i in 0..400 {
        let mut datagram = prefixes[i % prefixes.len()].to_vec();
        datagram.extend((0..next() % 48).map(|_| next() as u8));
        sock.send_to(&datagram, d.syslog).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for seq in [u32::MAX, 0, u32::MAX] {
        let line = format!("<13>1 - seq-host a - - [meta sequenceId=\"{seq}\"] seq {seq}");
        sock.send_to(line.as_bytes(), d.syslog).unwrap();
    }
    send(d.syslog, b"<13>1 - after-garbage netdump - - - still receiving");
    wait_for_line(dir.path(), "after-garbage", "still receiving");
    let client = TestClient::new(d.dump, 0x5555_6666_7777_8888);
    assert_eq!(client.hello("after-garbage").status, HelloStatus::Registered);
    assert!(d.alive(), "netdumpd exited: {:?}", d.output());
}

#[test]
fn console_logs_are_kept_for_at_most_max_clients_hosts() {
    let dir = TempDir::new("attack-console-cap");
    let limits = SyslogLimits { max_clients: 4, warnings_per_second: 2, ..SyslogLimits::default() };
    let receiver = SyslogReceiver::bind("127.0.0.1:0".parse().unwrap(), dir.path(), limits).unwrap();
    let (addr, counters) = (receiver.local_addr(), receiver.counters());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = receiver.spawn(stop.clone());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..40 {
        sock.send_to(format!("<13>1 - host-{i} a - - - hello from {i}").as_bytes(), addr).unwrap();
    }
    sock.send_to(b"<13>1 - host-0 a - - - host-0 again", addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.received.load(Ordering::Relaxed) < 41 {
        assert!(Instant::now() < deadline, "{counters:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    thread.join().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("console"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["host-0.log", "host-1.log", "host-2.log", "host-3.log"]);
    assert_eq!(counters.over_client_limit.load(Ordering::Relaxed), 36);
    assert_eq!(counters.written.load(Ordering::Relaxed), 5);
    // 36 warnings, at most 2 a second written: the rest counted.
    assert!(counters.log_lines_suppressed.load(Ordering::Relaxed) >= 30, "{counters:?}");
    wait_for_line(dir.path(), "host-0", "host-0 again");
}
