//! The bench's `scaling` part: populated e1000 guests of growing size (64 MiB to 4 GiB),
//! each dumped into a fresh netdumpd: dump time, rate, netdumpd's CPU per GB and its peak
//! resident set. The cost of a dump should grow linearly with its size — a flat rate —
//! and netdumpd's memory should not grow with it at all.

use super::{BenchEnv, mark, mib, timed_dump_encrypted};
use crate::qemu::NicModel;
use anyhow::Result;
use netdump_test_pattern::Pattern;
use serde::Serialize;

/// The guest sizes of the full part, MiB.
pub const SIZES_MIB: [u32; 4] = [64, 256, 1024, 4096];
/// The rate is flat when the slowest point runs at least this share of the fastest: one
/// dump's rate under TCG on a shared machine varies by about a fifth from run to run.
pub const FLAT_RATE: f64 = 0.75;
/// netdumpd's peak RSS is independent of the dump's size when the largest guest's is at
/// most this much above the smallest guest's (a 64× larger dump held in memory would add
/// gigabytes).
pub const RSS_GROWTH_BYTES: u64 = 8 << 20;

/// One guest size.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ScalingPoint {
    pub memory_mib: u32,
    /// Bytes the client sent (the populated pages, log and registers).
    pub bytes: u64,
    /// The client's data phase.
    pub seconds: f64,
    pub mb_s: f64,
    /// netdumpd's CPU over its life (start, the dump, verification) per GB sent.
    pub server_cpu_s_per_gb: f64,
    /// netdumpd's peak resident set (VmHWM), bytes.
    pub server_peak_rss: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ScalingReport {
    pub nic: String,
    pub points: Vec<ScalingPoint>,
}

impl ScalingReport {
    /// Slowest rate ÷ fastest.
    pub fn rate_spread(&self) -> f64 {
        let rates = self.points.iter().map(|p| p.mb_s);
        let (lo, hi) = rates.fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        if hi > 0.0 { lo / hi } else { 0.0 }
    }
    /// Peak RSS of the largest guest minus that of the smallest (0 if it shrank).
    pub fn rss_growth(&self) -> u64 {
        let by_size = |f: fn(&&ScalingPoint, &&ScalingPoint) -> std::cmp::Ordering| {
            self.points.iter().max_by(f).map_or(0, |p| p.server_peak_rss)
        };
        let largest = by_size(|a, b| a.memory_mib.cmp(&b.memory_mib));
        let smallest = by_size(|a, b| b.memory_mib.cmp(&a.memory_mib));
        largest.saturating_sub(smallest)
    }
    pub fn rate_is_flat(&self) -> bool {
        self.rate_spread() >= FLAT_RATE
    }
    pub fn rss_is_flat(&self) -> bool {
        self.rss_growth() <= RSS_GROWTH_BYTES
    }
}

/// The pattern regions of a populated guest of `memory_mib`: from 32 MiB to near the top
/// of RAM, and for a guest that has RAM above the PCI hole (q35 puts RAM above 2 GiB at
/// 4 GiB once the guest has more than 2.75 GiB), that RAM too. Returns the main pattern
/// and the kernel command line of the extra regions.
fn populated(memory_mib: u32) -> (Pattern, String) {
    let main = |len| Pattern { base: mib(32), len, seed: 0x5ca1e, zero_every: 0 };
    if u64::from(memory_mib) <= 2048 {
        return (main(mib(u64::from(memory_mib) - 48)), String::new());
    }
    let high = mib(u64::from(memory_mib) - 2048);
    (main(mib(2048 - 64)), format!("extra_pattern={:#x}+{high:#x}", 4u64 << 30))
}

/// Dumps a populated guest of each size in `sizes_mib` over `nic`, each into its own
/// netdumpd; `log` hears each point as it is measured.
pub fn run(env: &BenchEnv, nic: NicModel, sizes_mib: &[u32], log: &mut dyn FnMut(&str)) -> Result<ScalingReport> {
    let mut report = ScalingReport { nic: nic.name().into(), points: vec![] };
    for &size in sizes_mib {
        let (pattern, extra) = populated(size);
        let label = format!("scaling-{size}m");
        let run = timed_dump_encrypted(env, nic, &label, size, pattern, &extra, None, false)?;
        let gb = run.bytes as f64 / 1e9;
        let point = ScalingPoint {
            memory_mib: size,
            bytes: run.bytes,
            seconds: run.seconds,
            mb_s: run.bytes as f64 / run.seconds / 1e6,
            server_cpu_s_per_gb: run.server_cpu_s / gb,
            server_peak_rss: run.server_peak_rss,
        };
        log(&format!(
            "scaling {}: {size} MiB guest, {:.1} MiB in {:.2} s, {:.1} MB/s, netdumpd {:.2} CPU s per GB, peak RSS {:.1} MiB",
            nic.name(),
            point.bytes as f64 / (1 << 20) as f64,
            point.seconds,
            point.mb_s,
            point.server_cpu_s_per_gb,
            point.server_peak_rss as f64 / (1 << 20) as f64
        ));
        report.points.push(point);
    }
    Ok(report)
}

/// The part's table and its two verdicts.
pub fn markdown(r: &ScalingReport) -> String {
    if r.points.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n## Cost that grows linearly ({}, populated guests)\n\nEach guest's RAM holds the pattern from 32 MiB up (above the PCI hole too), dumped into a fresh netdumpd; time is the client's data phase, CPU is netdumpd's over its whole life per GB sent, RSS its peak (VmHWM).\n\n| guest | sent MiB | dump s | MB/s | netdumpd CPU s per GB | netdumpd peak RSS MiB |\n|---|---|---|---|---|---|\n",
        r.nic
    );
    for p in &r.points {
        s += &format!(
            "| {} MiB | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} |\n",
            p.memory_mib,
            p.bytes as f64 / (1 << 20) as f64,
            p.seconds,
            p.mb_s,
            p.server_cpu_s_per_gb,
            p.server_peak_rss as f64 / (1 << 20) as f64
        );
    }
    s += &format!(
        "\nRate flat: slowest ÷ fastest **{:.2}** (flat at ≥ {FLAT_RATE}) {}. netdumpd's peak RSS from the smallest guest to the largest: **{:+.1} MiB** (independent of size at ≤ {} MiB) {}.\n",
        r.rate_spread(),
        mark(r.rate_is_flat()),
        r.rss_growth() as f64 / (1 << 20) as f64,
        RSS_GROWTH_BYTES >> 20,
        mark(r.rss_is_flat())
    );
    s
}

/// The part's targets this run missed.
pub fn misses(r: &ScalingReport) -> Vec<String> {
    let mut v = vec![];
    if r.points.len() < 2 {
        return v;
    }
    if !r.rate_is_flat() {
        let rates: Vec<String> = r.points.iter().map(|p| format!("{} MiB {:.1} MB/s", p.memory_mib, p.mb_s)).collect();
        v.push(format!(
            "scaling: the rate is not flat, slowest ÷ fastest {:.2} (target ≥ {FLAT_RATE}): {}.",
            r.rate_spread(),
            rates.join(", ")
        ));
    }
    if !r.rss_is_flat() {
        v.push(format!(
            "scaling: netdumpd's peak RSS grew by {:.1} MiB from the smallest guest to the largest (target ≤ {} MiB).",
            r.rss_growth() as f64 / (1 << 20) as f64,
            RSS_GROWTH_BYTES >> 20
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(memory_mib: u32, mb_s: f64, rss_mib: u64) -> ScalingPoint {
        ScalingPoint { memory_mib, mb_s, server_peak_rss: rss_mib << 20, ..Default::default() }
    }

    #[test]
    fn a_flat_run_meets_both_targets_and_a_growing_one_misses_them() {
        let flat = ScalingReport {
            nic: "e1000".into(),
            points: vec![point(64, 60.0, 5), point(256, 66.0, 5), point(4096, 64.0, 6)],
        };
        assert!(flat.rate_is_flat() && flat.rss_is_flat());
        assert!(misses(&flat).is_empty());
        let md = markdown(&flat);
        assert!(md.contains("slowest ÷ fastest **0.91**"), "{md}");
        assert!(md.contains("**+1.0 MiB**"), "{md}");

        let growing = ScalingReport { nic: "e1000".into(), points: vec![point(64, 60.0, 5), point(4096, 30.0, 4100)] };
        assert!(!growing.rate_is_flat() && !growing.rss_is_flat());
        let m = misses(&growing);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("0.50") && m[1].contains("4095.0 MiB"), "{m:?}");
    }

    #[test]
    fn a_guest_above_the_pci_hole_fills_its_high_ram_too() {
        let (p, extra) = populated(256);
        assert_eq!((p.base, p.len, extra.as_str()), (mib(32), mib(208), ""));
        let (p, extra) = populated(4096);
        assert_eq!(p.base + p.len, mib(2048 - 32));
        assert_eq!(extra, "extra_pattern=0x100000000+0x80000000");
    }
}
