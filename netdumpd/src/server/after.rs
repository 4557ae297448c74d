//! What follows a dump (analysis, the finished hook, its upload, retention, on the job
//! pool) and the
//! server-wide counters written to `stats.json`.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use netdump_core::proto::DecisionReason;

use super::{STATS_FILE, STATS_REFRESH, Server};
use crate::admission::dump_env;
use crate::hooks::HookEvent;
use crate::info::DumpStatus;

impl Server {
    /// Rewrites `stats.json` when the counters changed and the last write is
    /// [`STATS_REFRESH`] ago.
    pub(super) fn refresh_stats(&mut self, now: Instant) {
        if self.stats_written.as_ref().is_some_and(|(at, _)| now.saturating_duration_since(*at) < STATS_REFRESH) {
            return;
        }
        let snap = self.stats.snapshot();
        if self.stats_written.as_ref().is_some_and(|(_, last)| *last == snap) {
            return;
        }
        if let Err(e) = self.write_stats(&snap) {
            tracing::error!("cannot write {STATS_FILE}: {e}");
        }
        self.stats_written = Some((now, snap));
    }

    pub(super) fn write_stats(&self, snap: &crate::stats::StatsSnapshot) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(snap).map_err(io::Error::other)?;
        text.push(b'\n');
        crate::files::write_atomic(&self.config.dump_dir.join(STATS_FILE), &text)
    }

    /// Queues the work that follows each dump that just ended: analysis, the finished
    /// hook (with the analysis), then retention and the `last` links once the queue
    /// drains. When the queue is full the hook and analysis are skipped (logged); the
    /// dump itself is on disk.
    pub(super) fn after_dumps(&mut self) {
        for s in self.sessions.values_mut() {
            if !s.take_end_event() {
                continue;
            }
            let Some(dir) = s.dir_path().map(PathBuf::from) else { continue };
            let client = s.registration().clone();
            let outcome = match s.status() {
                DumpStatus::Skipped if s.decision().why == DecisionReason::Duplicate => "duplicate",
                DumpStatus::Skipped => "skipped",
                DumpStatus::Complete => "complete",
                DumpStatus::Incomplete | DumpStatus::Receiving => "incomplete",
            };
            let (hooks, analysis) = (self.config.hooks.clone(), self.config.analysis.clone());
            let upload = self.uploader.as_ref().map(crate::upload::Uploader::handle);
            let upload_dir = dir.clone();
            let queued = self.jobs.submit(true, move || {
                let analysed = crate::analysis::analyse(&dir, &client.name, &analysis);
                let mut env = dump_env(&client, &dir);
                env.push(("NETDUMP_OUTCOME".into(), outcome.into()));
                env.push(("NETDUMP_INFO".into(), dir.join(crate::dumpdir::INFO).display().to_string()));
                if let Some(a) = &analysed {
                    env.push(("NETDUMP_ANALYSIS".into(), a.display().to_string()));
                }
                let args = vec![outcome.to_string(), client.ip.to_string(), dir.display().to_string()];
                if let Some(call) = hooks.call(HookEvent::Finished, args, env) {
                    call.run();
                }
                // Last: the upload takes the analysis with it.
                if let Some(u) = &upload {
                    u.queue(&dir);
                }
            });
            if queued.is_err() {
                if let Some(u) = &self.uploader {
                    u.handle().queue(&upload_dir);
                }
                self.stats.job_skipped();
                tracing::warn!(client = %s.client_name(), dir = s.dir_name().unwrap_or(""), "work queue full: finished hook and analysis skipped");
            }
        }
    }
}
