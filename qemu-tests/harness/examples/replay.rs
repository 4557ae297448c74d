//! Replays a fleet into a netdumpd binary and prints what netdumpd cost: for profiling
//! the server (`replay <netdumpd> <clients> <MiB per client> [netdumpd args...]`).
//! `<netdumpd>` may be a script that execs netdumpd under a profiler, e.g.
//! `exec valgrind --tool=callgrind --callgrind-out-file=cg.out path/to/netdumpd "$@"`:
//! instruction counts do not depend on the machine's load, where CPU seconds do.

use netdump_qemu_harness::netdumpd::Netdumpd;
use netdump_qemu_harness::replayer::{Fleet, FleetConfig, peak_rss_bytes};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = Path::new(&args[1]);
    let clients: usize = args[2].parse()?;
    let mib: u64 = args[3].parse()?;
    let extra: Vec<&str> = args[4..].iter().map(String::as_str).collect();
    let dir = std::env::temp_dir().join(format!("netdump-replay-{}", std::process::id()));
    let server = Netdumpd::start(bin, &dir.join("crash"), &extra)?;
    let mut fleet =
        Fleet::build(FleetConfig { clients, per_client: mib << 20, ..FleetConfig::default() }, server.addr())?;
    let run = fleet.run(server.pid())?;
    fleet.verify(&server.dir)?;
    let rss = peak_rss_bytes(server.pid())?;
    // SIGTERM, not a kill: a profiler wrapping netdumpd (valgrind's callgrind) writes
    // its output as netdumpd exits.
    server.terminate()?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{} bytes in {:.2} s: {:.1} MB/s; netdumpd {:.2} CPU s ({:.2} s/GB, {:.0} MB/s per core); {} datagrams, {} resent; peak RSS {} MiB",
        run.bytes,
        run.seconds,
        run.mb_s(),
        run.server_cpu_s,
        run.server_cpu_s_per_gb(),
        1e3 / run.server_cpu_s_per_gb(),
        run.datagrams,
        run.retransmissions,
        rss >> 20
    );
    Ok(())
}
