//! The bench's replayer against a real netdumpd (in a thread): every simulated client's
//! dump is verified by the server and then compared with its pattern bit by bit.

use netdump_core::proto::Check;
use netdump_qemu_harness::replayer::{Fleet, FleetConfig};
use netdumpd::{DropReason, Server, ServerConfig};
use std::time::Duration;

/// Runs a fleet of three clients with `check` against a netdumpd in a thread; every
/// FINISH must be verified and every vmcore hold its client's pattern.
fn replay(check: Check) {
    let dir = std::env::temp_dir().join(format!("netdump-replayer-{}-{check:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        dump_dir: dir.clone(),
        session_timeout: Duration::from_secs(10),
        min_free_bytes: 0,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).expect("bind");
    let (addr, stats, stop) = (server.local_addr(), server.stats(), server.shutdown_handle());
    let thread = std::thread::spawn(move || server.run());
    let config = FleetConfig { clients: 3, per_client: 2 << 20, window: 128, datagram: 1472, check };
    let mut fleet = Fleet::build(config, addr).expect("build the streams");
    let run = fleet.run(std::process::id()).expect("every client's FINISH verified");
    // 2 MiB of memory, the log and one register record per client.
    assert!(run.bytes > 3 * (2 << 20), "{} bytes", run.bytes);
    assert!(run.datagrams >= run.bytes / 1432, "{} datagrams", run.datagrams);
    fleet.verify(&dir).expect("every vmcore holds its client's pattern");
    let snap = stats.snapshot();
    assert_eq!(snap.dumps_complete, 3);
    assert_eq!(snap.dropped(DropReason::BadCrc), 0, "packets failed their check: {snap:?}");
    stop.shutdown();
    thread.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_replayed_fleet_of_version_2_clients_with_xxh64_arrives_whole_and_verified() {
    replay(Check::Xxh64);
}

#[test]
fn a_replayed_fleet_of_version_1_clients_with_crc32_arrives_whole_and_verified() {
    replay(Check::Crc32);
}
