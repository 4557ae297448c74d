//! Dumps shipped to S3-compatible object storage, against a real S3 server (`s3s-fs`,
//! a process on loopback; `common/s3.rs`): the real client dumps to netdumpd, netdumpd
//! uploads, and `netdumpd list/show --bucket` and `fetch` (the binary) read it back.
//! The fetched vmcore must equal the local one byte for byte with the same holes.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use netdump_core::client::{ClientName, Config, Timeouts};
use netdump_core::host::{SystemClock, UdpSocketNic, guest_net};
use netdump_core::log::ConsoleLog;
use netdump_core::memory::{MemoryMap, MemoryRange};
use netdump_core::proto::{REGISTERS_VALID, RegisterRecord};
use netdump_core::{CrashBuffers, CrashInfo, Netdump};
use netdumpd::ServerConfig;
use netdumpd::upload::UploadConfig;
use netdumpd::upload::extents::data_runs;
use netdumpd::upload::marker::{Marker, UploadStatus};
use s3::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

/// RAM of `mib` MiB: every third 256 KiB block zero (a hole in the vmcore), the rest a
/// pattern that differs per page and per `seed`.
impl Ram {
    fn new(mib: usize, seed: u8) -> Ram {
        let mut v = vec![0u8; mib << 20];
        for (i, b) in v.iter_mut().enumerate() {
            if (i >> 18) % 3 != 2 {
                *b = ((i * 7 + (i >> 12)) % 251) as u8 ^ seed | 1;
            }
        }
        Ram(v)
    }
}

/// The dump directories under `root`.
fn dump_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// The real client dumps `ram` to the server at `addr`, whose dump directory is `root`,
/// as `name`; returns the dump directory.
fn dump(addr: SocketAddr, root: &Path, name: &str, ram: &Ram) -> PathBuf {
    let before = dump_dirs(root);
    // Each dump its own MAC and cookie: a repeated cookie is a repeated CRASH.
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nic = UdpSocketNic::new([2, 0, 0, 0, 0x53, n], 1500, addr).unwrap();
    let map = MemoryMap::new(&[MemoryRange { phys_start: RAM_BASE, length: ram.0.len() as u64, virt_start: RAM_BASE }])
        .unwrap();
    let buffers: &'static mut CrashBuffers<64> = Box::leak(Box::new(CrashBuffers::new()));
    let config = Config {
        timeouts: Timeouts { silence_timeout_us: 5_000_000, announce_timeout_us: 5_000_000, ..Timeouts::default() },
        ..Config::new(guest_net(addr.port()), ClientName::new(name).unwrap())
    };
    let mut rng = CounterRng(0x5353_0000 + (u64::from(n) << 8) + u64::from(std::process::id() & 0xff));
    let mut nd = Netdump::install(nic, SystemClock::default(), &mut rng, config, buffers, map).expect("install");
    let log = ConsoleLog::<4096>::new();
    log.write(format!("{name} booted\n{name} about to crash\n").as_bytes());
    let regs = RegisterRecord { rip: 0xffff_8000_0010_2030, flags: REGISTERS_VALID, ..Default::default() };
    nd.dump(&CrashInfo::panic(0, b"upload test panic", &[]), &[regs], ram, Some(&log)).expect("dump");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let new: Vec<PathBuf> = dump_dirs(root).into_iter().filter(|d| !before.contains(d)).collect();
        if let [d] = &new[..]
            && d.join("vmcore").exists()
        {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "no new dump directory");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A credentials file (0600) in `dir`.
fn credentials(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("s3-credentials");
    netdumpd::files::write_private(
        &path,
        format!("access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{secret}\"\n").as_bytes(),
    )
    .unwrap();
    path
}

/// `[upload]` for `s3`, with short waits for the tests.
fn upload_config(s3: &S3Server, creds: &Path, server_name: &str) -> UploadConfig {
    UploadConfig {
        endpoint: Some(s3.endpoint()),
        allow_http: true,
        server_name: server_name.to_string(),
        credentials_file: Some(creds.to_path_buf()),
        part_size: 5 << 20,
        max_backoff: Duration::from_secs(1),
        request_retry_timeout: Duration::from_secs(2),
        rescan_interval: Duration::from_secs(1),
        ..UploadConfig::new(BUCKET)
    }
}

/// A test's scratch directory, an S3 server in it, an `[upload]` for it as
/// `server_name` with credentials whose secret is `secret`, and an empty dump directory.
struct Setup {
    dir: TempDir,
    s3: S3Server,
    upload: UploadConfig,
    dumps: PathBuf,
}

fn setup(label: &str, server_name: &str, secret: &str) -> Setup {
    let dir = TempDir::new(label);
    let s3 = S3Server::start(&dir.path().join("s3"));
    let creds = credentials(dir.path(), secret);
    let upload = upload_config(&s3, &creds, server_name);
    let dumps = dir.path().join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    Setup { dir, s3, upload, dumps }
}

fn with_upload(u: UploadConfig, max_dumps_per_client: Option<usize>) -> impl FnOnce(&mut ServerConfig) {
    move |c| {
        c.upload = Some(u);
        c.retention.keep_until_uploaded = true;
        c.retention.max_dumps_per_client = max_dumps_per_client;
    }
}

/// The same settings as a configuration file, for the `netdumpd` binary.
fn config_file(dir: &Path, u: &UploadConfig) -> PathBuf {
    let path = dir.join("admin.toml");
    let text = format!(
        "dir = \"{}\"\n[upload]\nendpoint = \"{}\"\nbucket = \"{}\"\nserver_name = \"{}\"\ncredentials_file = \"{}\"\nallow_http = true\n",
        dir.display(),
        u.endpoint.as_deref().unwrap(),
        u.bucket,
        u.server_name,
        u.credentials_file.as_ref().unwrap().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn netdumpd(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_netdumpd")).arg("--config").arg(config).args(args).output().unwrap();
    assert!(out.status.success(), "netdumpd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn wait_marker(dir: &Path, what: &str, cond: impl Fn(&Marker) -> bool) -> Marker {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(m) = Marker::read(dir)
            && cond(&m)
        {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", Marker::read(dir));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Returns as soon as the S3 server holds a multipart upload in progress.
fn wait_multipart_start(s3: &S3Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s3.multipart_started() {
        assert!(Instant::now() < deadline, "no multipart upload began");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn done(dir: &Path) -> Marker {
    wait_marker(dir, "the upload to be done", |m| m.status == UploadStatus::Done)
}

/// `fetched` equals `local` byte for byte, and has its data where `local` has it: the
/// holes came back as holes.
fn assert_same_sparse_file(local: &Path, fetched: &Path) {
    let (a, b) = (std::fs::read(local).unwrap(), std::fs::read(fetched).unwrap());
    assert_eq!(a.len(), b.len(), "{} length", fetched.display());
    assert!(a == b, "{} differs from {}", fetched.display(), local.display());
    let runs = |p: &Path| {
        let f = std::fs::File::open(p).unwrap();
        data_runs(&f, f.metadata().unwrap().len()).unwrap()
    };
    assert_eq!(runs(fetched), runs(local), "the fetched vmcore's data extents differ: holes were filled");
    let blocks = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(blocks(fetched) < a.len() as u64, "the fetched vmcore is not sparse");
}

#[test]
fn a_dump_is_uploaded_listed_shown_and_fetched_back_equal_with_its_holes() {
    let Setup { dir, s3, upload: u, dumps } = setup("upload-roundtrip", "dumpserver-1", SECRET_KEY);
    let server = TestServer::start_with(&dumps, with_upload(u.clone(), None));
    let ram = Ram::new(12, 0x11);
    let d = dump(server.addr, &server.dir, "roundtrip-node", &ram);
    let marker = done(&d);
    let name = d.file_name().unwrap().to_string_lossy().into_owned();
    let key = format!("netdump/roundtrip-node/{name}@dumpserver-1");
    assert_eq!(marker.key, key);
    assert_eq!(marker.attempts, 1);

    // The bucket holds the data extents, not the holes: about two thirds of the RAM.
    let vmcore_len = std::fs::metadata(d.join("vmcore")).unwrap().len();
    let objects = s3.objects();
    let data = objects.iter().find(|(k, _)| k.ends_with("/vmcore.data")).expect("vmcore.data in the bucket");
    assert!(data.1 > 7 << 20 && data.1 < 10 << 20, "{} bytes stored of a {vmcore_len}-byte vmcore", data.1);
    for f in ["index.json", "vmcore.manifest.json", "log", "info.json", "registers"] {
        assert!(objects.iter().any(|(k, _)| *k == format!("{key}/{f}")), "{f} missing: {objects:?}");
    }
    assert_eq!(marker.objects.len(), objects.len(), "the marker names every object");

    let config = config_file(dir.path(), &u);
    let list: serde_json::Value = serde_json::from_str(&netdumpd(&config, &["list", "--bucket", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["client"], "roundtrip-node");
    assert_eq!(rows[0]["id"], format!("{name}@dumpserver-1"));
    assert_eq!(rows[0]["status"], "complete");
    let text = netdumpd(&config, &["list", "--bucket"]);
    assert!(text.contains(&format!("{name}@dumpserver-1")) && text.contains("complete"), "{text}");
    let show = netdumpd(&config, &["show", "--bucket", "roundtrip-node"]);
    assert!(show.contains(&format!("s3://{BUCKET}/{key}")), "{show}");
    assert!(show.contains("roundtrip-node about to crash"), "the log tail comes from the bucket: {show}");
    assert!(show.contains("upload    from server dumpserver-1"), "{show}");

    let out = dir.path().join("fetched");
    let text = netdumpd(&config, &["fetch", &format!("{name}@dumpserver-1"), "--to", out.to_str().unwrap()]);
    assert!(text.contains("extents checked"), "{text}");
    assert_same_sparse_file(&d.join("vmcore"), &out.join("vmcore"));
    for f in ["log", "info.json", "registers"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(d.join(f)).unwrap(), "{f}");
    }
    assert!(!out.join("upload.json").exists(), "the local marker is not uploaded");
    // Fetching into an existing directory is refused: nothing is overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_netdumpd"))
        .arg("--config")
        .arg(&config)
        .args(["fetch", &name, "--to", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    // A corrupted extent in the bucket is caught by its CRC-32.
    let stored = s3.root.join(BUCKET).join(&data.0);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_netdumpd"))
        .arg("--config")
        .arg(&config)
        .args(["fetch", &name, "--to", dir.path().join("corrupt").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("CRC-32"), "{}", String::from_utf8_lossy(&bad.stderr));
    server.stop();
}

#[test]
fn the_s3_server_killed_mid_multipart_upload_loses_nothing_and_the_local_copy_is_kept_meanwhile() {
    let Setup { dir, mut s3, upload: u, dumps } = setup("upload-kill", "dumpserver-k", SECRET_KEY);
    // One dump per client: retention wants the older one gone as soon as there are two.
    let server = TestServer::start_with(&dumps, with_upload(u.clone(), Some(1)));
    let big = Ram::new(40, 0x22);
    let first = dump(server.addr, &server.dir, "kill-node", &big);
    wait_multipart_start(&s3);
    s3.kill();
    let kept_vmcore = std::fs::read(first.join("vmcore")).unwrap();
    let m = wait_marker(&first, "a failed attempt", |m| m.last_error.is_some());
    assert_eq!(m.status, UploadStatus::Pending, "the S3 server was killed before the upload finished");

    // A second dump of the client: retention would remove the first, but it is not
    // uploaded, so it stays.
    let second = dump(server.addr, &server.dir, "kill-node", &Ram::new(2, 0x23));
    std::thread::sleep(Duration::from_millis(500));
    assert!(first.join("vmcore").exists(), "retention removed a dump that is not uploaded");
    assert_eq!(Marker::read(&first).unwrap().status, UploadStatus::Pending);

    // netdumpd stops with the uploads pending, and starts again after the S3 server
    // returns: the markers bring them back.
    server.stop();
    s3.restart();
    let server = TestServer::start_with(&dumps, with_upload(u.clone(), Some(1)));
    done(&second);
    // The first, once uploaded and verified, goes (retention runs after each upload).
    let deadline = Instant::now() + Duration::from_secs(120);
    while first.exists() {
        assert!(Instant::now() < deadline, "the first dump was not uploaded and removed: {:?}", Marker::read(&first));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(second.join("vmcore").exists(), "each client's newest dump stays");

    let config = config_file(dir.path(), &u);
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let out = dir.path().join("fetched");
    netdumpd(&config, &["fetch", &name, "--to", out.to_str().unwrap()]);
    let fetched = std::fs::read(out.join("vmcore")).unwrap();
    assert!(fetched == kept_vmcore, "the vmcore uploaded across the S3 server's restart differs");
    let core = common::core_reader::Core::new(&fetched);
    assert_eq!(core.read_virt(RAM_BASE, big.0.len()), &big.0[..], "memory differs");
    server.stop();
}

#[test]
fn a_stop_during_a_multipart_upload_aborts_it_and_the_next_start_uploads_the_dump() {
    let Setup { dir, s3, upload: u, dumps } = setup("upload-stop", "dumpserver-s", SECRET_KEY);
    let server = TestServer::start_with(&dumps, with_upload(u.clone(), None));
    let big = Ram::new(40, 0x31);
    let first = dump(server.addr, &server.dir, "stop-node", &big);
    wait_multipart_start(&s3);
    // netdumpd stops while the vmcore's parts go up: the multipart upload is aborted, so
    // that no part stays in the bucket, and the dump stays pending. The S3 server is
    // frozen meanwhile, so that the upload cannot end before the stop is seen; the parts
    // in flight then end, and the abort removes them.
    s3.pause();
    let stopping = std::thread::spawn(move || server.stop());
    std::thread::sleep(Duration::from_secs(2));
    s3.resume();
    stopping.join().unwrap();
    let m = Marker::read(&first).unwrap();
    assert_eq!(m.status, UploadStatus::Pending, "the upload ended before the stop");
    assert_eq!(m.last_error, None, "a stop is not a failure");
    assert!(!s3.multipart_started(), "the stopped multipart upload was left in the S3 server");

    // The next start uploads it whole.
    let server = TestServer::start_with(&dumps, with_upload(u.clone(), None));
    done(&first);
    assert!(!s3.multipart_started(), "a multipart upload left over after the upload");
    let config = config_file(dir.path(), &u);
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let out = dir.path().join("fetched");
    netdumpd(&config, &["fetch", &name, "--to", out.to_str().unwrap()]);
    assert_same_sparse_file(&first.join("vmcore"), &out.join("vmcore"));
    server.stop();
}

#[test]
fn wrong_credentials_are_a_clear_error_and_nothing_is_marked_done_or_removed() {
    let Setup { dir: _dir, s3, upload: u, dumps } = setup("upload-badcreds", "dumpserver-c", "not-the-secret");
    let config = format!(
        "[retention]\nmax_dumps_per_client = 1\n[upload]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nserver_name = \"dumpserver-c\"\ncredentials_file = \"{}\"\nallow_http = true\nmax_backoff_seconds = 1\nretry_timeout_seconds = 2\n",
        s3.endpoint(),
        u.credentials_file.as_ref().unwrap().display()
    );
    let daemon = Daemon::start(&dumps, &config);
    let first = dump(daemon.addr, &dumps, "cred-node", &Ram::new(2, 0x31));
    let second = dump(daemon.addr, &dumps, "cred-node", &Ram::new(2, 0x32));
    for d in [&first, &second] {
        let m = wait_marker(d, "a refused attempt", |m| m.last_error.is_some());
        let e = m.last_error.as_deref().unwrap();
        assert!(e.contains("refused the credentials"), "unclear error: {e}");
        assert_eq!(m.status, UploadStatus::Pending);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log_text().contains("refused the credentials") {
        assert!(Instant::now() < deadline, "the log does not say why: {}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.log_text().contains("retention keeps dump until its upload is verified"), "{}", daemon.log_text());
    assert!(first.join("vmcore").exists() && second.join("vmcore").exists(), "a local copy was removed");
    assert!(s3.objects().is_empty(), "objects in the bucket: {:?}", s3.objects());
    assert_eq!(u.server_name, "dumpserver-c");
}

#[test]
fn two_servers_share_one_bucket_without_collisions() {
    let dir = TempDir::new("upload-two");
    let s3 = S3Server::start(&dir.path().join("s3"));
    let creds = credentials(dir.path(), SECRET_KEY);
    let mut dirs = Vec::new();
    let mut configs = Vec::new();
    for name in ["east", "west"] {
        let dumps = dir.path().join(name);
        std::fs::create_dir_all(&dumps).unwrap();
        let u = upload_config(&s3, &creds, name);
        let server = TestServer::start_with(&dumps, with_upload(u.clone(), None));
        // The same client name on both: the directory names may well be equal.
        let d = dump(server.addr, &server.dir, "twin-node", &Ram::new(6, if name == "east" { 0x41 } else { 0x42 }));
        done(&d);
        server.stop();
        dirs.push(d);
        configs.push(config_file(&dumps, &u));
    }
    let list: serde_json::Value =
        serde_json::from_str(&netdumpd(&configs[0], &["list", "--bucket", "--json"])).unwrap();
    let mut servers: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["server"].as_str().unwrap()).collect();
    servers.sort();
    assert_eq!(servers, ["east", "west"], "{list}");
    for (d, server) in dirs.iter().zip(["east", "west"]) {
        let id = format!("{}@{server}", d.file_name().unwrap().to_string_lossy());
        let out = dir.path().join(format!("fetched-{server}"));
        // Either server's configuration reads the other's dumps.
        netdumpd(&configs[1], &["fetch", &format!("twin-node/{id}"), "--to", out.to_str().unwrap()]);
        assert_same_sparse_file(&d.join("vmcore"), &out.join("vmcore"));
    }
}
