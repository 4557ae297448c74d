//! netdumpd's netconsole receiver under fuzzing: a fresh receiver (in a scratch
//! directory) per input, fed its records as syslog datagrams from four source addresses.
//! It must not panic (netdumpd is built with `panic = "abort"`: a panic there ends the
//! dump server too), every datagram is counted once (written, not syslog, or over the
//! client limit), and each message written is exactly one line with no control character.
//!
//! A record's tag: bits 0–1 choose the source address; the bytes are the datagram.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use netdumpd::syslog::{CONSOLE_DIR, SyslogLimits, SyslogReceiver};

use crate::input::{Records, encode};
use crate::scratch::Scratch;

/// Records of one input beyond this are ignored (each is a datagram with file I/O).
const MAX_RECORDS: usize = 256;

/// The target.
pub fn syslog_datagrams(data: &[u8]) {
    run(data);
}

/// Runs an input; returns the console logs' lines (their arrival stamps cut off), by
/// file name, sorted.
fn run(data: &[u8]) -> Vec<(String, Vec<String>)> {
    let dir = Scratch::new("syslog");
    // A small client limit, so that inputs reach it.
    let limits = SyslogLimits { max_clients: 8, max_log_bytes: 4096, ..SyslogLimits::default() };
    let mut receiver = SyslogReceiver::bind("127.0.0.1:0".parse().expect("literal address"), dir.path(), limits)
        .expect("a receiver binds in a scratch directory");
    let mut sent = 0u64;
    for (tag, datagram) in Records::new(data).take(MAX_RECORDS) {
        let from = SocketAddr::from(([192, 0, 2, 1 + (tag & 3)], 6664));
        receiver.on_datagram(datagram, from);
        sent += 1;
    }
    let c = receiver.counters();
    let (written, not_syslog, over) = (
        c.written.load(Ordering::Relaxed),
        c.not_syslog.load(Ordering::Relaxed),
        c.over_client_limit.load(Ordering::Relaxed),
    );
    assert_eq!(c.write_errors.load(Ordering::Relaxed), 0, "{c:?}");
    assert_eq!(written + not_syslog + over, sent, "every datagram counted once: {c:?}");
    let mut logs: Vec<(String, Vec<String>)> = std::fs::read_dir(dir.path().join(CONSOLE_DIR))
        .expect("the console directory")
        .map(|e| {
            let e = e.expect("a directory entry");
            let text = std::fs::read_to_string(e.path()).expect("console logs are UTF-8");
            let lines = text.lines().map(|l| l.split_once(' ').map_or(l, |(_, m)| m).to_string()).collect();
            (e.file_name().to_string_lossy().into_owned(), lines)
        })
        .collect();
    logs.sort();
    let lines: usize = logs.iter().map(|(_, l)| l.len()).sum();
    // Rotation keeps one older file, so lines can only have gone, never come from nowhere.
    assert!(lines as u64 <= written, "{lines} lines from {written} messages");
    if logs.iter().all(|(name, _)| !name.ends_with(".1")) {
        assert_eq!(lines as u64, written, "one line per message");
    }
    for (name, lines) in &logs {
        for l in lines {
            assert!(!l.chars().any(char::is_control), "{name}: a control character in {l:?}");
        }
    }
    logs
}

/// Seed inputs: the formats netdump-core's netconsole sends, and the datagram of issue 11.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rfc5424: Vec<(u8, Vec<u8>)> = (1..=3)
        .map(|i| {
            (
                0,
                format!(
                    "<6>1 2026-01-02T03:04:05Z node-a netdump - console [meta sequenceId=\"{i}\"] \u{feff}line {i}\n"
                )
                .into_bytes(),
            )
        })
        .collect();
    let rfc3164 = vec![
        (1, b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8".to_vec()),
        (2, b"<6>Jan  2 03:04:05 node-b netdump[0]: line: with colon".to_vec()),
        (3, b"<13>no header at all".to_vec()),
    ];
    let hostile = vec![
        (0, "<13>aaaaaaaaaaaaaaébcdefgh".as_bytes().to_vec()),
        (1, b"<13>1 - node-c a - - - real\nFAKE LINE\r\x1b[2J".to_vec()),
        (2, b"<13>1 - node-c a - - [meta sequenceId=\"4294967295\"] max".to_vec()),
        (2, b"<13>1 - node-c a - - [meta sequenceId=\"0\"] wrapped".to_vec()),
    ];
    vec![("rfc5424", encode(&rfc5424)), ("rfc3164", encode(&rfc3164)), ("hostile", encode(&hostile))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        seeds().into_iter().find(|(n, _)| *n == name).map(|(_, d)| d).unwrap()
    }

    #[test]
    fn the_seeds_write_their_lines() {
        let logs = run(&seed("rfc5424"));
        assert_eq!(logs, [("node-a.log".to_string(), vec!["line 1".into(), "line 2".into(), "line 3".into()])]);
        let logs = run(&seed("hostile"));
        let node_c = &logs.iter().find(|(n, _)| n == "node-c.log").unwrap().1;
        assert_eq!(node_c[0], "real\\nFAKE LINE\\r\\u{1b}[2J");
        assert_eq!(logs.iter().find(|(n, _)| n == "192.0.2.1.log").unwrap().1, ["aaaaaaaaaaaaaaébcdefgh"]);
    }
}
