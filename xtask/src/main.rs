//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask demo`      — a QEMU kernel crashes, dumps to a local netdumpd; shows the
//!   dump directory, its info and gdb's backtrace of the vmcore.
//! - `cargo xtask test`      — every test: `lint`, `cargo test --workspace`, `package`,
//!   then the QEMU suite.
//! - `cargo xtask lint`      — `cargo fmt --check` and clippy with `-D warnings`.
//! - `cargo xtask package`   — `cargo package` of the crates meant for crates.io, each
//!   verified by building it from its `.crate` against the others'.
//! - `cargo xtask qemu-test` — the QEMU suite only (`--stress`: beside two CPU-bound
//!   processes, to show its timing does not depend on the host's load).
//! - `cargo xtask modgraph`  — the module graph of each library crate; fails on a cycle.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use netdump_qemu_harness::{
    gdb,
    netdumpd::Netdumpd,
    qemu::{NicModel, QemuRun},
    scenarios, suite, tools,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod modgraph;

#[derive(Parser)]
#[command(about = "netdump build, test and demo automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a kernel that crashes and dumps to a local netdumpd; show the result.
    Demo,
    /// Run every test: formatting and clippy (`lint`), host unit/integration tests, the
    /// packages of the published crates (`package`), then the QEMU suite.
    Test {
        #[command(flatten)]
        qemu: QemuArgs,
    },
    /// Check formatting (`cargo fmt --check`) and run clippy with `-D warnings` on every
    /// crate, the kernels included.
    Lint,
    /// Package netdump-core, netdump-pci and every driver as `cargo publish` would, and
    /// build each from its `.crate` (target/package/).
    Package,
    /// Run the QEMU suite only.
    QemuTest {
        #[command(flatten)]
        qemu: QemuArgs,
    },
    /// Measure throughput, zero pages, latency, server ingest and footprint; writes
    /// target/bench/report.md and report.json.
    Bench {
        /// Only these NICs (e.g. `e1000`); default: every NIC the suite knows.
        #[arg(long)]
        nic: Vec<String>,
        /// Only these parts of the bench (e.g. `--part nic --part footprint`); default:
        /// every part. Parts: nic, link, sender, bytes, smp, ingest, scaling, footprint.
        #[arg(long)]
        part: Vec<String>,
        /// Guest sizes of the scaling part, MiB (default 64, 256, 1024 and 4096).
        #[arg(long, value_delimiter = ',')]
        scaling_mib: Vec<u32>,
    },
    /// Print the module graph (`crate::` edges between top-level modules) of each crate
    /// and fail if one has a cycle.
    Modgraph {
        /// Source directories to check (default: netdump-core, the drivers, netdumpd).
        dirs: Vec<PathBuf>,
    },
    /// Spin on one CPU until the parent process goes away (`qemu-test --stress`).
    #[command(hide = true)]
    Busy,
}

#[derive(clap::Args)]
struct QemuArgs {
    /// Run only scenarios whose id contains this text (e.g. `takeover`, `e1000`).
    #[arg(long)]
    filter: Option<String>,
    /// Scenarios run at once (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Also run the long scenarios left out of the default suite.
    #[arg(long)]
    all: bool,
    /// Run the suite while two CPU-bound processes compete for the host (its timing must
    /// not depend on the load); they are stopped when the suite ends.
    #[arg(long)]
    stress: bool,
    /// Keep every scenario's directory under target/qemu-tests/ (default: only the failed
    /// ones', as the whole suite's would take over a gigabyte).
    #[arg(long)]
    keep: bool,
}

/// CPU-bound processes competing with the suite (`--stress`): children of this binary
/// running `busy`, killed when dropped, whatever way the run ends; should xtask die
/// first, each ends by itself once its parent is gone.
struct Stress(Vec<std::process::Child>);

impl Stress {
    const PROCESSES: usize = 2;

    fn start() -> Result<Stress> {
        let exe = std::env::current_exe().context("find the xtask binary")?;
        let mut s = Stress(vec![]);
        for _ in 0..Self::PROCESSES {
            s.0.push(
                Command::new(&exe)
                    .arg("busy")
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .context("start a busy process")?,
            );
        }
        Ok(s)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spins until the parent process is gone (re-parented to another).
fn busy() -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    let mut x: u64 = 1;
    while std::os::unix::process::parent_id() == parent {
        for _ in 0..10_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
    }
    Ok(())
}

/// About what `cargo xtask test` writes under target/ from a clean clone (debug and
/// release builds, the kernels, the packaged crates, the QEMU suite's scratch space),
/// GiB, with a margin. Measured: a peak of 3.3 GiB.
const TEST_DISK_GIB: u64 = 4;

/// Says so, before hours of building, when the file system holding target/ has less than
/// `need_gib` free: a full disk shows up later as a linker's bus error.
fn warn_if_disk_low(need_gib: u64) {
    let dir = target_dir();
    let probe = if dir.exists() { dir.clone() } else { workspace_root() };
    let Ok(out) = Command::new("df").arg("-Pk").arg(&probe).output() else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    // POSIX format: a header, then "fs 1024-blocks used available capacity mount".
    let avail_kib = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse::<u64>().ok());
    if let Some(kib) = avail_kib {
        let gib = kib as f64 / (1u64 << 20) as f64;
        if kib < need_gib << 20 {
            eprintln!(
                "warning: {gib:.1} GiB free for {}; this command writes about {need_gib} GiB there \
                 (set CARGO_TARGET_DIR to a larger file system, or free space)",
                dir.display()
            );
        } else {
            println!("disk: {gib:.1} GiB free for {}", dir.display());
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn run(mut c: Command) -> Result<()> {
    let status = c.status().with_context(|| format!("run {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed ({status})");
    }
    Ok(())
}

/// Builds netdumpd and the test kernels (release: TCG runs optimised code much faster;
/// the release profile keeps symbols and unwind tables for gdb).
///
/// The kernels are built in a cargo invocation of their own: features unify across the
/// packages of one build, and the server's `std` features (crc32fast's runtime SIMD
/// detection, say) must not reach a freestanding kernel.
fn build() -> Result<suite::Artifacts> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "netdumpd"]);
    run(c)?;
    // The example kernel on its own as well: it links netdump-core without netconsole,
    // which one build with the test kernel would unify back in.
    for kernels in [&["netdump-test-kernel", "netdump-nic-conformance"][..], &["netdump-example-kernel"]] {
        let mut c = cargo();
        c.args(["build", "--release"]);
        for k in kernels {
            c.args(["-p", k]);
        }
        // Frame pointers: the crash path walks them for the return addresses of the crash
        // signature (the precompiled `core` keeps them already).
        let rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
        c.env("RUSTFLAGS", format!("{rustflags} -Cforce-frame-pointers=yes").trim_start());
        run(c)?;
    }
    let release = target_dir().join("release");
    let work_dir = target_dir().join("qemu-tests");
    std::fs::create_dir_all(&work_dir)?;
    Ok(suite::Artifacts {
        test_kernel: release.join("netdump-test-kernel"),
        conformance_kernel: release.join("netdump-nic-conformance"),
        netdumpd: release.join("netdumpd"),
        work_dir,
    })
}

fn qemu_test(args: &QemuArgs) -> Result<()> {
    tools::ensure_qemu_and_gdb()?;
    tools::ensure_s3s_fs()?;
    let artifacts = build()?;
    let scenarios: Vec<_> = scenarios::all()
        .into_iter()
        .filter(|s| match &args.filter {
            Some(f) => s.id().contains(f.as_str()),
            None => s.default || args.all,
        })
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario matches the filter");
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let stress = if args.stress { Some(Stress::start()?) } else { None };
    let load = if args.stress { format!(", beside {} CPU-bound processes", Stress::PROCESSES) } else { String::new() };
    println!("QEMU suite: {} scenarios, {jobs} at a time (TCG){load}", scenarios.len());
    let started = std::time::Instant::now();
    let keep = if args.keep { suite::KeepDirs::All } else { suite::KeepDirs::Failed };
    let failures = suite::run_all(&scenarios, &artifacts, jobs, keep);
    drop(stress);
    let took = started.elapsed().as_secs();
    if failures.is_empty() {
        println!("QEMU suite: all {} passed in {}m{:02}s{load}", scenarios.len(), took / 60, took % 60);
        return Ok(());
    }
    for (id, why) in &failures {
        eprintln!("\n=== {id} FAILED ===\n{why}");
    }
    bail!("{} of the QEMU suite's {} failed ({}m{:02}s{load})", failures.len(), scenarios.len(), took / 60, took % 60)
}

fn demo() -> Result<()> {
    tools::ensure_qemu_and_gdb()?;
    let a = build()?;
    let kernel = target_dir().join("release").join("netdump-example-kernel");
    let dir = a.work_dir.join("demo");
    let _ = std::fs::remove_dir_all(&dir);
    let server = Netdumpd::start(&a.netdumpd, &dir.join("crash"), &[])?;
    println!(
        "netdumpd listening on 127.0.0.1:{} (QEMU's guest reaches it as 10.0.2.2), dumps in {}",
        server.port,
        server.dir.display()
    );
    println!("booting the example kernel in QEMU; it installs netdump, then panics...\n");
    let run = QemuRun {
        kernel: &kernel,
        memory_mib: 64,
        cpus: 1,
        append: format!("server_port={}", server.port),
        nic: NicModel::E1000,
        serial_log: dir.join("serial.log"),
        timeout: Duration::from_secs(180),
        capture: None,
    };
    let q = std::thread::scope(|s| {
        let qemu = s.spawn(|| run.run());
        show_progress(&server, "example", || qemu.is_finished());
        qemu.join().expect("the QEMU thread panicked")
    })?;
    println!("--- kernel console ---\n{}", q.serial.trim_end());
    let dumps = server.dumps_of("example");
    let log = server.stop();
    let Some(dump) = dumps.first() else {
        bail!("no dump arrived; netdumpd log:\n{log}");
    };
    println!("\n--- dump directory: {} ---", dump.display());
    for e in std::fs::read_dir(dump)?.flatten() {
        let m = e.metadata()?;
        use std::os::unix::fs::MetadataExt;
        println!("  {:<18} {:>12} bytes ({} on disk)", e.file_name().to_string_lossy(), m.len(), m.blocks() * 512);
    }
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dump.join("info.json"))?)?;
    let field = |p: &str| info.pointer(p).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    println!("\n--- info.json (excerpt) ---");
    println!("  status      {}  (CRC verified: {})", field("/status"), field("/crc/verified"));
    println!("  message     {}", field("/message"));
    println!(
        "  received    {} bytes, {} pages; {} zero pages left as holes",
        field("/bytes_received"),
        field("/pages"),
        field("/zero_pages_skipped")
    );
    println!("  took        {} s ({} MB/s)", field("/duration_seconds"), field("/throughput_mb_s"));
    let vmcore = dump.join("vmcore");
    if !vmcore.exists() {
        bail!("the dump did not complete (no vmcore)");
    }
    println!("--- gdb -batch -ex bt {} {} ---", kernel.display(), vmcore.display());
    println!("{}", gdb::backtrace(&kernel, &vmcore)?);
    Ok(())
}

fn bench(nics: &[String], parts: &[String], scaling_mib: &[u32]) -> Result<()> {
    use netdump_qemu_harness::bench;
    tools::ensure_qemu_and_gdb()?;
    let a = build()?;
    let started = std::time::Instant::now();
    let env = bench::BenchEnv {
        test_kernel: a.test_kernel.clone(),
        example_kernel: target_dir().join("release").join("netdump-example-kernel"),
        netdumpd: a.netdumpd.clone(),
        work_dir: target_dir().join("bench").join("runs"),
    };
    std::fs::create_dir_all(&env.work_dir)?;
    let mut report = bench::Report::default();
    let part = |name: &str| parts.is_empty() || parts.iter().any(|p| p == name);
    for &nic in scenarios::NICS.iter().filter(|n| nics.is_empty() || nics.iter().any(|w| w == n.name())) {
        if part("nic") {
            report.nics.push(bench::bench_nic(&env, nic, &mut |line| println!("bench: {line}"))?);
        }
        if part("link") {
            report.links.push(bench::link::bench_link(&env, nic, &mut |line| println!("bench: {line}"))?);
        }
        if part("sender") {
            report.sender.extend(bench::bench_sender(&env, nic, &mut |line| println!("bench: {line}"))?);
        }
        if part("bytes") {
            report.bytes.push(bench::bytes::bench_bytes(&env, nic, &mut |line| println!("bench: {line}"))?);
        }
    }
    if part("smp") {
        report.smp_stop = bench::smp_stop(&env, 3)?;
        for (target, times) in &report.smp_stop.runs {
            println!("bench: smp stop ({target}): {times:?} us from the panic to every CPU stopped");
        }
    }
    if part("ingest") {
        // The ingest part measures a QEMU client itself when no NIC part ran.
        report.ingest = bench::bench_ingest(&env, bench::FLEET, 4, report.nics.is_empty())?;
        let i = &report.ingest;
        println!(
            "bench: server ingest {:.1} MB/s, {:.2} CPU s per GB ({:.0} MB/s per core), peak RSS {} MiB",
            i.aggregate_mb_s,
            i.server_cpu_s_per_gb,
            i.capacity_mb_s_per_core(),
            i.server_peak_rss >> 20
        );
    }
    if part("scaling") {
        let sizes = if scaling_mib.is_empty() { &bench::scaling::SIZES_MIB[..] } else { scaling_mib };
        report.scaling = bench::scaling::run(&env, NicModel::E1000, sizes, &mut |line| println!("bench: {line}"))?;
    }
    if part("footprint") {
        report.footprint = bench::footprint(&env.example_kernel)?;
        report.encryption_text = bench::footprint(&env.test_kernel)?
            .components
            .iter()
            .filter(|(name, _)| name.starts_with("encryption"))
            .map(|(_, sizes)| sizes[0])
            .sum();
        report.compression_text = bench::footprint(&env.test_kernel)?
            .components
            .iter()
            .filter(|(name, _)| name.starts_with("compression"))
            .map(|(_, sizes)| sizes[0])
            .sum();
    }
    report.seconds = started.elapsed().as_secs_f64();
    let out = target_dir().join("bench");
    let md = bench::markdown(&report);
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("\n{md}\nwritten to {}", out.join("report.md").display());
    Ok(())
}

/// A progress bar of the dump while QEMU runs: the bytes the server has written to the
/// vmcore (zero pages are holes, so a dump may end short of the RAM size), rate and ETA
/// from indicatif; a spinner until the crash is announced.
fn show_progress(server: &Netdumpd, client: &str, done: impl Fn() -> bool) {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::os::unix::fs::MetadataExt;
    let bar = ProgressBar::new_spinner().with_message("booting; waiting for the crash");
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut total = None;
    while !done() {
        std::thread::sleep(Duration::from_millis(50));
        let Some(dump) = server.dumps_of(client).into_iter().next() else { continue };
        if total.is_none() {
            let info = std::fs::read_to_string(dump.join("info.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let Some(size) = info.as_ref().and_then(|i| i.pointer("/memory_size")).and_then(|v| v.as_u64()) else {
                continue;
            };
            let style = ProgressStyle::with_template(
                "{spinner} dumping {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_length(size);
            bar.set_message(dump.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            bar.reset_elapsed();
            total = Some(size);
        }
        let written = ["vmcore-incomplete", "vmcore"]
            .iter()
            .filter_map(|f| std::fs::metadata(dump.join(f)).ok())
            .map(|m| m.blocks() * 512)
            .max();
        if let Some(w) = written {
            bar.set_position(w.min(total.unwrap_or(w)));
        }
    }
    bar.abandon_with_message("QEMU exited (zero pages are never sent: holes in the vmcore)");
    println!();
}

/// The freestanding kernels: checked in a clippy invocation of their own, as `build`
/// builds them in one of their own (features unify across the packages of one
/// invocation, and the host crates' std features must not reach a kernel).
const KERNELS: [&str; 3] = ["netdump-test-kernel", "netdump-nic-conformance", "netdump-example-kernel"];

/// `cargo fmt --check`, then clippy with `-D warnings` on the host crates (all targets)
/// and on the kernels.
fn lint() -> Result<()> {
    let mut c = cargo();
    c.args(["fmt", "--all", "--check"]);
    run(c).context("formatting differs from rustfmt's: run `cargo fmt --all`")?;
    let mut c = cargo();
    c.args(["clippy", "--workspace", "--all-targets"]);
    for k in KERNELS {
        c.args(["--exclude", k]);
    }
    c.args(["--", "-D", "warnings"]);
    run(c)?;
    let mut c = cargo();
    c.arg("clippy");
    for k in KERNELS {
        c.args(["-p", k]);
    }
    c.args(["--", "-D", "warnings"]);
    run(c)
}

/// The crates meant for crates.io: the no_std client library, the PCI plumbing and every
/// NIC driver. The kernels, the test crates and the tools are `publish = false`; whether
/// the server, netdumpd, goes to crates.io too is left with the decision on the crate
/// names (CHANGELOG.md, "Publishing").
const PUBLISHED: [&str; 6] =
    ["netdump-core", "netdump-pci", "netdump-e1000", "netdump-e1000e", "netdump-virtio-net", "netdump-vmxnet3"];

/// `cargo package` of [`PUBLISHED`] in one invocation: cargo puts each `.crate` in a local
/// registry overlaid on crates.io, so a driver's verification build compiles the
/// netdump-core and netdump-pci just packaged — not crates.io's unrelated `netdump-core`,
/// which the exact version requirements in the workspace's Cargo.toml keep out.
///
/// `--offline`: the verification resolves only crates already downloaded (and the
/// workspace's Cargo.lock as the starting point), so the result does not depend on the
/// network or on what crates.io holds today; `cargo test --workspace` before it has
/// downloaded everything the packages build with. `--allow-dirty`: this checks that the
/// crates package and build, uncommitted work included; publishing is a separate step.
fn package() -> Result<()> {
    let mut c = cargo();
    c.args(["package", "--offline", "--allow-dirty"]);
    for p in PUBLISHED {
        c.args(["-p", p]);
    }
    run(c).context("a published crate does not package or does not build from its package")
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Demo => demo(),
        Cmd::Test { qemu } => {
            warn_if_disk_low(TEST_DISK_GIB);
            // The host tests need gdb-multiarch too (the AArch64 vmcore).
            tools::ensure_qemu_and_gdb()?;
            // The upload tests' S3 server (netdumpd/tests/upload.rs, the upload scenario).
            tools::ensure_s3s_fs()?;
            lint()?;
            let mut c = cargo();
            c.args(["test", "--workspace"]);
            run(c)?;
            package()?;
            qemu_test(&qemu)
        }
        Cmd::Lint => lint(),
        Cmd::Package => package(),
        Cmd::QemuTest { qemu } => qemu_test(&qemu),
        Cmd::Bench { nic, part, scaling_mib } => bench(&nic, &part, &scaling_mib),
        Cmd::Modgraph { dirs } => modgraph::run(&workspace_root(), &dirs),
        Cmd::Busy => busy(),
    }
}
