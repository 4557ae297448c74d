//! Progress of a dump in the server log: bytes so far, rate and time left, every
//! `progress_interval` while data arrives. The memory to come is bounded by the
//! announced RAM (zero pages are never sent), so the estimate is an upper bound.

use crate::info::DumpInfo;

/// The numbers of one progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub received: u64,
    /// Bytes the dump sends at most: log, registers and (unless skipped) every RAM page.
    pub at_most: u64,
    pub mb_s: f64,
    /// Seconds left at the current rate, at most.
    pub eta_s: Option<f64>,
}

impl Progress {
    pub fn of(info: &DumpInfo) -> Progress {
        let memory =
            if info.decision.verdict == netdump_core::proto::Verdict::DumpAll.name() { info.memory_size } else { 0 };
        let registers = u64::from(info.cpu_count) * 256;
        Progress::new(info.bytes_received, info.log_bytes_announced + registers + memory, info.duration_seconds)
    }

    /// `received` of at most `at_most` bytes after `seconds`.
    pub fn new(received: u64, at_most: u64, seconds: f64) -> Progress {
        let rate = if seconds > 0.0 { received as f64 / seconds } else { 0.0 };
        let eta_s = (rate > 0.0).then(|| at_most.saturating_sub(received) as f64 / rate);
        Progress { received, at_most, mb_s: rate / 1e6, eta_s }
    }
}

/// Logs one progress line for a dump being received.
pub fn log(info: &DumpInfo) {
    let p = Progress::of(info);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let eta = p.eta_s.map_or_else(|| "unknown".to_string(), |s| format!("≤ {s:.0} s"));
    tracing::info!(
        client = %info.client.name,
        bytes = p.received,
        "receiving: {:.1} of ≤ {:.1} MiB, {:.1} MB/s, {} packets ({} retransmitted), time left {eta}",
        mib(p.received),
        mib(p.at_most),
        p.mb_s,
        info.packets_received,
        info.retransmissions,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_follow_from_bytes_and_seconds() {
        let p = Progress::new(30_000_000, 100_000_000, 3.0);
        assert_eq!(p.mb_s, 10.0);
        assert_eq!(p.eta_s, Some(7.0));
        assert_eq!(Progress::new(0, 100, 0.0).eta_s, None, "no rate yet, no estimate");
        assert_eq!(Progress::new(200, 100, 1.0).eta_s, Some(0.0), "zero pages make a dump end early, never late");
    }
}
