//! netdumpd as a daemon, run as its binary: the log on stderr (text without colour into a
//! pipe, or JSON lines), readiness on `$NOTIFY_SOCKET`, SIGHUP reading the configuration
//! again (a new hook takes effect, a restart-only setting is named and kept, a broken
//! file is refused and the daemon keeps serving), and the exit statuses.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::{TempDir, TestClient};
use netdump_core::proto::MessageType;
use netdumpd::cli::exit;

/// How long the daemon may take to say something a test waits for (a bound on waiting,
/// not a timing assertion: the machine may be loaded).
const PATIENCE: Duration = Duration::from_secs(60);

fn netdumpd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netdumpd"));
    // The journal is never the default here, whatever the test runner inherited.
    cmd.env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET").env_remove("RUST_LOG");
    cmd
}

/// A running `netdumpd` whose stderr lines are collected.
struct Daemon {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines, seen: Vec::new() }
    }

    /// The next stderr line for which `pick` says yes (lines before it are kept in `seen`).
    fn wait_for_line(&mut self, what: &str, pick: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + PATIENCE;
        loop {
            match self.lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pick(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("netdumpd never logged {what}; its log:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// The next JSON log line whose `message` starts with `prefix`.
    fn wait_for_json(&mut self, prefix: &str) -> serde_json::Value {
        let line = self.wait_for_line(prefix, |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        });
        serde_json::from_str(&line).unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then its exit status and what it wrote on stdout.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let mut stdout = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        (self.child.wait().unwrap().code(), stdout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(path: &Path, dir: &Path, extra: &str) {
    std::fs::write(path, format!("listen = \"127.0.0.1:0\"\ndir = {:?}\n{extra}", dir.display().to_string())).unwrap();
}

/// A register hook that appends its client name to `log`.
fn register_hook(dir: &Path, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let hook = dir.join("register-hook");
    std::fs::write(&hook, format!("#!/bin/sh\necho \"$2\" >> {:?}\n", log.display().to_string())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    hook
}

/// Waits until `path` holds a line `line` (the hook runs on the server's job pool).
fn wait_for_file_line(path: &Path, line: &str) {
    let until = Instant::now() + PATIENCE;
    while Instant::now() < until {
        if std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l == line)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never got the line {line:?}: {:?}", path.display(), std::fs::read_to_string(path));
}

/// Registers `name` and waits for the HELLO_ACK.
fn register(server: std::net::SocketAddr, cookie: u64, name: &str) {
    let client = TestClient::new(server, cookie);
    client.send_hello(name, 1);
    client.recv_type(MessageType::HelloAck);
}

fn listening_on(ready: &serde_json::Value) -> std::net::SocketAddr {
    ready["listen"].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_log_goes_to_stderr_as_json_lines_and_stdout_stays_empty() {
    let dir = TempDir::new("daemon-json");
    let mut cmd = netdumpd();
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json", "--dir"]).arg(dir.path().join("dumps"));
    let mut d = Daemon::start(cmd);
    let ready = d.wait_for_json("netdumpd ready");
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["clients"], 0, "fields are JSON values, not text: {ready}");
    assert!(ready["timestamp"].is_string());
    let (status, stdout) = d.stop();
    assert_eq!(status, Some(0));
    assert_eq!(stdout, "", "stdout is for the admin commands' output");
}

#[test]
fn the_config_file_s_log_format_is_the_flag_s() {
    let dir = TempDir::new("daemon-json-key");
    let config = dir.path().join("netdumpd.toml");
    write_config(&config, &dir.path().join("dumps"), "log_format = \"json\"\n");
    let mut cmd = netdumpd();
    cmd.arg("--config").arg(&config);
    let mut d = Daemon::start(cmd);
    let ready = d.wait_for_json("netdumpd ready");
    assert_eq!(ready["level"], "INFO", "{ready}");
    assert_eq!(d.stop().0, Some(0));
    // A value the flag would refuse is a configuration error (exit 78), named.
    write_config(&config, &dir.path().join("dumps"), "log_format = \"xml\"\n");
    let out = netdumpd().arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"), "{out:?}");
}

#[test]
fn text_logs_into_a_pipe_have_no_colour_codes() {
    let dir = TempDir::new("daemon-text");
    let mut cmd = netdumpd();
    cmd.args(["run", "--listen", "127.0.0.1:0", "--dir"]).arg(dir.path().join("dumps"));
    let mut d = Daemon::start(cmd);
    let line = d.wait_for_line("netdumpd ready", |l| l.contains("netdumpd ready"));
    assert!(!line.contains('\x1b'), "ANSI escape in a log that is not a terminal: {line:?}");
    assert!(line.contains("INFO"), "{line}");
    assert_eq!(d.stop().0, Some(0));
}

#[test]
fn sighup_applies_a_new_hook_names_what_needs_a_restart_and_refuses_a_broken_file() {
    let dir = TempDir::new("daemon-hup");
    let (config, dumps, hooked) =
        (dir.path().join("netdumpd.toml"), dir.path().join("dumps"), dir.path().join("hooked"));
    write_config(&config, &dumps, "");
    let mut cmd = netdumpd();
    cmd.args(["--log-format", "json", "--config"]).arg(&config);
    let mut d = Daemon::start(cmd);
    let server = listening_on(&d.wait_for_json("netdumpd ready"));

    // Before: no hook.
    register(server, 0x1001, "before");
    // A register hook added, and the listen address changed (needs a restart).
    let hook = register_hook(dir.path(), &hooked);
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ndir = {:?}\nlog_level = \"debug\"\n[hooks]\nregister = {:?}\n",
            dumps.display().to_string(),
            hook.display().to_string()
        ),
    )
    .unwrap();
    d.signal("HUP");
    let restart = d.wait_for_json("SIGHUP: changed in the configuration but needs a restart");
    assert_eq!(restart["setting"], "listen");
    assert_eq!(restart["level"], "WARN");
    let reloaded = d.wait_for_json("SIGHUP: configuration reloaded");
    assert_eq!(reloaded["applied"], "hooks, log_level", "{reloaded}");
    register(server, 0x1002, "after");
    wait_for_file_line(&hooked, "after");
    assert!(!std::fs::read_to_string(&hooked).unwrap().contains("before"), "the hook was not there before SIGHUP");

    // A file that does not parse: refused, the running configuration (with its hook) kept.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nno_such_setting = 1\n").unwrap();
    d.signal("HUP");
    let refused = d.wait_for_json("SIGHUP: configuration refused, the running one is kept");
    assert_eq!(refused["level"], "ERROR");
    assert!(refused["message"].as_str().unwrap().contains("no_such_setting"), "{refused}");
    // A value out of range is refused as well.
    write_config(&config, &dumps, "max_sessions = 0\n");
    d.signal("HUP");
    let refused = d.wait_for_json("SIGHUP: configuration refused");
    assert!(refused["message"].as_str().unwrap().contains("max_sessions"), "{refused}");
    assert!(d.alive(), "a broken configuration ended the daemon");
    register(server, 0x1003, "after-refused");
    wait_for_file_line(&hooked, "after-refused");
    assert_eq!(d.stop().0, Some(0));
}

#[test]
fn readiness_reload_and_stopping_are_sent_to_the_notify_socket() {
    let dir = TempDir::new("daemon-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let config = dir.path().join("netdumpd.toml");
    write_config(&config, &dir.path().join("dumps"), "");
    let mut cmd = netdumpd();
    cmd.args(["--log-format", "json", "--config"]).arg(&config).env("NOTIFY_SOCKET", &socket_path);
    let mut d = Daemon::start(cmd);
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("no notification from netdumpd");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let server = listening_on(&d.wait_for_json("netdumpd ready"));
    assert!(ready.contains(&format!("STATUS=serving on {server}")), "{ready:?}");
    d.signal("HUP");
    let reloading = next();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading:?}");
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    d.signal("TERM");
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let out = d.child.wait().unwrap();
    assert_eq!(out.code(), Some(0));
}

#[test]
fn exit_statuses_follow_the_documented_convention() {
    let dir = TempDir::new("daemon-exit");
    let status = |args: &[&str]| {
        let out = netdumpd().args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let dumps = dir.path().join("dumps");
    let dumps = dumps.to_str().unwrap();
    // Usage: clap's 2.
    assert_eq!(status(&["--no-such-flag"]).0, Some(exit::USAGE.into()));
    assert_eq!(status(&["run", "--session-timeout", "0"]).0, Some(exit::USAGE.into()));
    // Configuration: 78, before anything is bound.
    let (code, err) = status(&["--config", "/nonexistent/netdumpd.toml", "--dir", dumps]);
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(err.contains("cannot read /nonexistent/netdumpd.toml"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_sessions = 0\n").unwrap();
    let (code, err) = status(&["--config", bad.to_str().unwrap(), "--dir", dumps, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert_eq!(status(&["--log-level", "netdumpd=nonsense", "--dir", dumps]).0, Some(exit::CONFIG.into()));
    assert_eq!(
        status(&["--private-key", "/nonexistent/key", "--dir", dumps, "--listen", "127.0.0.1:0"]).0,
        Some(exit::CONFIG.into())
    );
    assert_eq!(status(&["check-config", "--config", bad.to_str().unwrap()]).0, Some(exit::CONFIG.into()));
    // Runtime failure: 1 (the address is taken).
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = status(&["--listen", &addr, "--dir", dumps]);
    assert_eq!(code, Some(exit::FAILURE.into()), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    // check-config that finds a problem: 1; a clean one and the help: 0.
    assert_eq!(status(&["check-config", "--dir", dumps, "--hook-crash", "/nonexistent/hook"]).0, Some(1));
    assert_eq!(status(&["check-config", "--dir", dumps]).0, Some(0));
    assert_eq!(status(&["--help"]).0, Some(0));
}

#[test]
fn help_names_the_daemon_conventions() {
    let out = netdumpd().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "EXIT STATUS:",
        "78",
        "SIGHUP",
        "needing a restart",
        "--log-format <FORMAT>",
        "journald",
        "READY=1",
        "netdumpd man",
        "netdumpd completions",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn check_config_json_is_data_a_parser_reads() {
    let dir = TempDir::new("daemon-check-json");
    let config = dir.path().join("netdumpd.toml");
    write_config(
        &config,
        &dir.path().join("dumps"),
        "session_timeout = 30\nafter_dump = \"halt\"\nlog_format = \"json\"\n[dedup]\npolicy = \"skip-memory\"\nwithin_days = 3\n[retention]\nmax_total_mib = 2\n",
    );
    let out = netdumpd().args(["check-config", "--json", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["listen"], "127.0.0.1:0");
    assert_eq!(v["session_timeout_s"], 30);
    assert_eq!(v["after_dump"], "halt");
    assert_eq!(v["log_format"], "json");
    assert_eq!(v["dedup"], serde_json::json!({ "policy": "skip-memory", "within_days": 3 }));
    assert_eq!(v["retention"]["max_total_bytes"], 2 << 20);
    assert_eq!(v["retention"]["max_dumps_per_client"], serde_json::Value::Null);
    assert_eq!(v["encryption"], serde_json::json!({ "private_keys": [], "require_encryption": false }));
    assert!(v["limits"]["max_dump_bytes"].is_u64() && v["hooks"]["timeout_s"].is_u64());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SkipMemoryWithin"), "Rust debug text");
}

#[test]
fn the_man_page_and_completions_come_from_the_binary() {
    let out = netdumpd().arg("man").output().unwrap();
    assert!(out.status.success());
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(man.starts_with(".ie") || man.starts_with(".TH"), "{}", &man[..80.min(man.len())]);
    assert!(man.contains(".TH netdumpd 8"), "section 8");
    for shell in ["bash", "zsh", "fish"] {
        let out = netdumpd().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("log-format") && script.contains("check-config"), "{shell}: {script}");
    }
    assert_eq!(netdumpd().args(["completions", "tcsh"]).output().unwrap().status.code(), Some(2));
}
