//! Bench part `bytes` (issue 15): bytes on the wire and dump time of the realistic image
//! with and without compression, on the unconstrained emulated NIC and through the
//! proxy's rate limit at 100 Mbit/s; the random pattern's dump rate with compression on
//! against off (what a page that does not shrink costs).

use super::{BenchEnv, number_before, verified_dump};
use crate::netdumpd::Netdumpd;
use crate::proxy::{FaultProxy, ProxyConfig, QueueDepth, RateLimit, WIRE_OVERHEAD};
use crate::qemu::{NicModel, QemuRun};
use anyhow::{Context, Result};
use netdump_core::proto::{Data, HEADER_LEN};
use netdump_test_pattern::Pattern;
use serde::Serialize;
use std::time::Duration;

/// The guest and the image: 128 MiB of RAM, the image 64 MiB of it at 32 MiB.
const MEMORY_MIB: u32 = 128;
const IMAGE: Pattern = Pattern { base: 32 << 20, len: 64 << 20, seed: 0xb17e5, zero_every: 7 };
/// The constrained link's rate, and a queue deep enough that the rate, not drops, is
/// what limits the dump.
const LINK_MBIT_S: f64 = 100.0;
const LINK_QUEUE: usize = 512;

/// One measured dump.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BytesRun {
    /// `raw`, `filtered`, `compressed` or `both` (of the realistic image), `random
    /// on`/`random off`.
    pub label: String,
    /// `unconstrained` or the rate limit.
    pub link: String,
    pub packets: u64,
    /// DATA bytes (sub-headers excluded), as the kernel counts them.
    pub data_bytes: u64,
    /// Ethernet frames of DATA: data, sub-headers, protocol header, UDP/IPv4/Ethernet.
    pub wire_bytes: u64,
    /// Memory bytes the LZ4 blocks stood for, and their bytes.
    pub lz4_raw_bytes: u64,
    pub lz4_wire_bytes: u64,
    /// The client's data phase, seconds.
    pub seconds: f64,
}

/// The part's report (one NIC).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BytesReport {
    pub nic: String,
    pub runs: Vec<BytesRun>,
}

/// The targets of issue 15's compression half.
pub mod target {
    /// The realistic image's bytes on the wire, compressed, at most this share of raw.
    pub const WIRE_RATIO: f64 = 0.5;
    /// Its dump time at 100 Mbit/s, compressed, at most this share of raw.
    pub const TIME_RATIO_100M: f64 = 0.6;
    /// The random pattern's dump rate with compression on at least this share of off.
    pub const RANDOM_RATE: f64 = 0.9;
}

impl BytesReport {
    fn run(&self, label: &str, constrained: bool) -> Option<&BytesRun> {
        self.runs.iter().find(|r| r.label == label && (r.link != "unconstrained") == constrained)
    }
    /// Compressed ÷ raw wire bytes of the image (unconstrained).
    pub fn wire_ratio(&self) -> Option<f64> {
        Some(self.run("compressed", false)?.wire_bytes as f64 / self.run("raw", false)?.wire_bytes.max(1) as f64)
    }
    /// Wire bytes of `label` ÷ raw (unconstrained), and dump time of `label` ÷ raw at
    /// 100 Mbit/s: how filtering, and filtering with compression, compare.
    pub fn against_raw(&self, label: &str) -> Option<(f64, f64)> {
        let wire = self.run(label, false)?.wire_bytes as f64 / self.run("raw", false)?.wire_bytes.max(1) as f64;
        let time = self.run(label, true)?.seconds / self.run("raw", true)?.seconds.max(f64::MIN_POSITIVE);
        Some((wire, time))
    }
    /// Compressed ÷ raw dump time of the image at 100 Mbit/s.
    pub fn time_ratio_100m(&self) -> Option<f64> {
        Some(self.run("compressed", true)?.seconds / self.run("raw", true)?.seconds.max(f64::MIN_POSITIVE))
    }
    /// Rate with compression on ÷ off of the random pattern (same bytes: time off ÷ on).
    pub fn random_rate_ratio(&self) -> Option<f64> {
        Some(self.run("random off", false)?.seconds / self.run("random on", false)?.seconds.max(f64::MIN_POSITIVE))
    }
}

/// Runs the part on `nic`: eight dumps of the image (raw, filtered with makedumpfile's
/// `-d 31`, compressed, and both; unconstrained and at 100 Mbit/s) and two of the random
/// pattern (compression on and off).
pub fn bench_bytes(env: &BenchEnv, nic: NicModel, log: &mut dyn FnMut(&str)) -> Result<BytesReport> {
    let rate = RateLimit::mbit_s(LINK_MBIT_S, QueueDepth::Packets(LINK_QUEUE));
    let mut report = BytesReport { nic: nic.name().to_string(), runs: vec![] };
    let cases: [(&str, &str, Option<RateLimit>); 10] = [
        ("raw", "image=realistic compress=off", None),
        ("filtered", "image=realistic compress=off filter=31", None),
        ("compressed", "image=realistic compress=on", None),
        ("both", "image=realistic compress=on filter=31", None),
        ("raw", "image=realistic compress=off", Some(rate)),
        ("filtered", "image=realistic compress=off filter=31", Some(rate)),
        ("compressed", "image=realistic compress=on", Some(rate)),
        ("both", "image=realistic compress=on filter=31", Some(rate)),
        ("random off", "compress=off", None),
        ("random on", "compress=on", None),
    ];
    for (label, extra, rate) in cases {
        let run = dump_once(env, nic, label, extra, rate)?;
        log(&format!(
            "bytes {} {label} ({}): {} packets, {} wire bytes, {:.2} s",
            nic.name(),
            run.link,
            run.packets,
            run.wire_bytes,
            run.seconds
        ));
        report.runs.push(run);
    }
    Ok(report)
}

fn dump_once(env: &BenchEnv, nic: NicModel, label: &str, extra: &str, rate: Option<RateLimit>) -> Result<BytesRun> {
    let link = rate.map_or("unconstrained".to_string(), |r| r.describe());
    let dir_name =
        format!("bytes-{}-{}-{}", label.replace(' ', "-"), if rate.is_some() { "100m" } else { "free" }, nic.name());
    let dir = env.work_dir.join(dir_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let server = Netdumpd::start(&env.netdumpd, &dir.join("crash"), &["--session-timeout", "30"])?;
    let proxy = match rate {
        Some(r) => Some(FaultProxy::start(
            format!("127.0.0.1:{}", server.port).parse()?,
            ProxyConfig { seed: 15, to_server_rate: Some(r), ..Default::default() },
        )?),
        None => None,
    };
    let port = proxy.as_ref().map_or(server.port, |p| p.port);
    let p = IMAGE;
    let append = format!(
        "scenario=dump server_port={port} name=bench pattern_base={} pattern_len={} seed={} zero_every={} {extra}",
        p.base, p.len, p.seed, p.zero_every
    );
    let q = QemuRun {
        kernel: &env.test_kernel,
        memory_mib: MEMORY_MIB,
        cpus: 1,
        append,
        nic,
        serial_log: dir.join("serial.log"),
        timeout: Duration::from_secs(900),
        capture: None,
    }
    .run()?;
    let server_log = server.stop();
    let (line, seconds) = verified_dump(&q, &format!("bytes {label}"), nic, &server_log)?;
    let packets = number_before(line, " packets")?;
    let data_bytes = number_before(line, " bytes")?;
    let lz4 = q.serial.lines().find(|l| l.starts_with("netdump: compression ") && l.contains("blocks"));
    let (lz4_raw_bytes, lz4_wire_bytes) = match lz4 {
        Some(l) => {
            let wire = l.rsplit(" in ").next().context("no block bytes")?;
            (number_before(l, " memory bytes")?, number_before(wire, " bytes")?)
        }
        None => (0, 0),
    };
    let per_packet = (HEADER_LEN + Data::SUBHEADER_LEN + WIRE_OVERHEAD) as u64;
    Ok(BytesRun {
        label: label.to_string(),
        link,
        packets,
        data_bytes,
        wire_bytes: data_bytes + packets * per_packet,
        lz4_raw_bytes,
        lz4_wire_bytes,
        seconds,
    })
}

/// The part's section of the report.
pub fn markdown(reports: &[BytesReport], compression_text: u64) -> String {
    let mut s = String::new();
    if reports.is_empty() && compression_text == 0 {
        return s;
    }
    s += "\n## Bytes on the wire (issue 15: compression)\n\n";
    s += &format!(
        "The realistic image ({} MiB in a {MEMORY_MIB} MiB guest), raw, filtered (`-d 31`), LZ4-compressed and both, on the emulated NIC unconstrained and through the proxy's rate limit ({LINK_MBIT_S:.0} Mbit/s, queue {LINK_QUEUE} packets); the random pattern with compression on and off. Wire bytes: DATA frames (data, sub-header, header, UDP/IPv4/Ethernet).\n\n",
        IMAGE.len >> 20
    );
    s += "| NIC | dump | link | packets | wire bytes | s | LZ4 memory bytes → bytes |\n|---|---|---|---|---|---|---|\n";
    for r in reports {
        for run in &r.runs {
            s += &format!(
                "| {} | {} | {} | {} | {} | {:.2} | {} → {} |\n",
                r.nic,
                run.label,
                run.link,
                run.packets,
                run.wire_bytes,
                run.seconds,
                run.lz4_raw_bytes,
                run.lz4_wire_bytes
            );
        }
    }
    for r in reports {
        let f = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.2}"));
        let ok = |v: Option<f64>, pass: &dyn Fn(f64) -> bool| v.map_or("", |x| super::mark(pass(x)));
        let (w, t, q) = (r.wire_ratio(), r.time_ratio_100m(), r.random_rate_ratio());
        s += &format!(
            "\n{}: image wire bytes compressed/raw **{}** (≤ {}) {}; dump time at {LINK_MBIT_S:.0} Mbit/s compressed/raw **{}** (≤ {}) {}; random pattern rate compression on/off **{}** (≥ {}) {}\n",
            r.nic,
            f(w),
            target::WIRE_RATIO,
            ok(w, &|x| x <= target::WIRE_RATIO),
            f(t),
            target::TIME_RATIO_100M,
            ok(t, &|x| x <= target::TIME_RATIO_100M),
            f(q),
            target::RANDOM_RATE,
            ok(q, &|x| x >= target::RANDOM_RATE),
        );
        for label in ["filtered", "both"] {
            if let Some((wire, time)) = r.against_raw(label) {
                s += &format!(
                    "{}: {label} ÷ raw: wire bytes **{wire:.2}**, dump time at {LINK_MBIT_S:.0} Mbit/s **{time:.2}**\n",
                    r.nic
                );
            }
        }
    }
    if compression_text > 0 {
        s += &format!(
            "\nWith netdump-core's `compression` feature (the test kernel enables it), the LZ4 encoder adds **{compression_text} bytes** of `.text` (netdump-core's `compress` and `lz4_flex`) and `CrashBuffers` grows by its hash table and output buffer ({} bytes); a kernel without the feature links none of it.\n",
            core::mem::size_of::<netdump_core::client::Lz4Scratch>()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, constrained: bool, wire: u64, seconds: f64) -> BytesRun {
        BytesRun {
            label: label.into(),
            link: if constrained { "100 Mbit/s".into() } else { "unconstrained".into() },
            wire_bytes: wire,
            seconds,
            ..Default::default()
        }
    }

    #[test]
    fn the_ratios_compare_the_right_runs() {
        let r = BytesReport {
            nic: "e1000".into(),
            runs: vec![
                run("raw", false, 1000, 2.0),
                run("compressed", false, 400, 1.0),
                run("raw", true, 1000, 10.0),
                run("compressed", true, 400, 5.0),
                run("random off", false, 900, 3.0),
                run("random on", false, 900, 4.0),
            ],
        };
        assert_eq!(r.wire_ratio(), Some(0.4));
        assert_eq!(r.time_ratio_100m(), Some(0.5));
        assert_eq!(r.random_rate_ratio(), Some(0.75));
        let md = markdown(&[r], 12_345);
        assert!(md.contains("**0.40** (≤ 0.5) ✓"), "{md}");
        assert!(md.contains("**0.75** (≥ 0.9) ✗"), "{md}");
        assert!(md.contains("12345 bytes"), "{md}");
    }

    #[test]
    fn a_missing_run_gives_no_ratio() {
        let r = BytesReport { nic: "e1000".into(), runs: vec![run("raw", false, 1000, 2.0)] };
        assert_eq!(r.wire_ratio(), None);
        assert!(markdown(&[r], 0).contains("**—**"));
    }
}
