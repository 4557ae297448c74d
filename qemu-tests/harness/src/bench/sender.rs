//! The `sender` part: each change to the sender's per-packet cost measured on its own,
//! before and after in the same run — the test kernel turns the change off with a
//! command-line switch, and the two settings are dumped interleaved, best of two each,
//! so that both see the same (shared, loaded) machine.

use super::{BenchEnv, mib, timed_dump};
use crate::qemu::NicModel;
use anyhow::Result;
use netdump_test_pattern::Pattern;
use serde::Serialize;

/// One change, on one NIC: the populated dump's rate without it and with it.
#[derive(Debug, Clone, Serialize)]
pub struct SenderChange {
    pub change: String,
    pub nic: String,
    pub before_mb_s: f64,
    pub after_mb_s: f64,
}

/// A change and the test kernel's switches for without it (before) and with it (after).
struct Change {
    name: &'static str,
    before: &'static str,
    after: &'static str,
}

/// The changes measured, in the order they were made.
const CHANGES: &[Change] = &[
    Change { name: "XXH64 per-packet check instead of CRC-32 (feature bit 2)", before: "check=crc32", after: "" },
    Change { name: "one doorbell per burst of DATA, not per frame", before: "doorbell=each", after: "" },
    Change { name: "pages zero-tested in place and read straight into the packet", before: "inplace=0", after: "" },
    Change {
        name: "rate-based congestion control and pacing, against the fixed window (on a LAN it must cost nothing)",
        before: "cc=0",
        after: "",
    },
];

/// The populated image each dump sends: 64 MiB, no zero pages (a 96 MiB guest).
const IMAGE_MIB: u64 = 64;

/// Measures every change on `nic`.
pub fn bench_sender(env: &BenchEnv, nic: NicModel, log: &mut dyn FnMut(&str)) -> Result<Vec<SenderChange>> {
    let image = Pattern { base: mib(16), len: mib(IMAGE_MIB), seed: 0x5e4d, zero_every: 0 };
    let rate = |label: String, extra: &str| -> Result<f64> {
        let (s, bytes) = timed_dump(env, nic, &label, 96, image, extra, None)?;
        Ok(bytes as f64 / s / 1e6)
    };
    let mut out = vec![];
    for (i, c) in CHANGES.iter().enumerate() {
        let (mut before, mut after) = (0.0f64, 0.0f64);
        for round in 0..2 {
            before = before.max(rate(format!("sender{i}-before-{round}"), c.before)?);
            after = after.max(rate(format!("sender{i}-after-{round}"), c.after)?);
        }
        log(&format!("{}: {}: {before:.1} MB/s before, {after:.1} MB/s after", nic.name(), c.name));
        out.push(SenderChange {
            change: c.name.into(),
            nic: nic.name().into(),
            before_mb_s: before,
            after_mb_s: after,
        });
    }
    Ok(out)
}

/// The part's table, empty when the part did not run.
pub fn markdown(changes: &[SenderChange]) -> String {
    if changes.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n## The sender's changes, each measured alone\n\nA populated {IMAGE_MIB} MiB dump with the change turned off (before) and on (after) by a test-kernel switch, the two interleaved, best of two each, same run.\n\n| change | NIC | before MB/s | after MB/s | after ÷ before |\n|---|---|---|---|---|\n"
    );
    for c in changes {
        s += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} |\n",
            c.change,
            c.nic,
            c.before_mb_s,
            c.after_mb_s,
            c.after_mb_s / c.before_mb_s.max(f64::MIN_POSITIVE)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_gives_each_change_per_nic_with_its_ratio() {
        let c = SenderChange { change: "x".into(), nic: "e1000".into(), before_mb_s: 20.0, after_mb_s: 30.0 };
        let md = markdown(&[c]);
        assert!(md.contains("| change | NIC | before MB/s | after MB/s |"), "{md}");
        assert!(md.contains("| x | e1000 | 20.0 | 30.0 | 1.50 |"), "{md}");
        assert_eq!(markdown(&[]), "");
    }
}
