//! SIGHUP: the registry and `stats.json` are written now, and the configuration is read
//! again and applied where it can be without a restart ([`crate::reload`] has the
//! table).

use std::sync::PoisonError;
use std::time::Instant;

use super::{STATS_FILE, Server};
use crate::keys::ServerKeys;
use crate::limits::{RateBudget, SourceBudget};
use crate::reload::Settings;

impl Server {
    pub(super) fn on_hangup(&mut self) {
        if let Err(e) = self.registry.flush() {
            tracing::error!("cannot write the client registry: {e}");
        }
        let snap = self.stats.snapshot();
        if let Err(e) = self.write_stats(&snap) {
            tracing::error!("cannot write {STATS_FILE}: {e}");
        }
        let Some(read) = crate::reload::reread() else {
            tracing::info!("SIGHUP: registry and stats written");
            return;
        };
        crate::notify::reloading();
        match read.and_then(|settings| self.reconfigure(settings)) {
            Ok(()) => {}
            Err(e) => {
                tracing::error!("SIGHUP: configuration refused, the running one is kept: {e:#}");
            }
        }
        crate::notify::ready(&format!("serving on {}; {} clients", self.local_addr, self.registry.len()));
    }

    /// Applies `new` where it can be: checks everything first, then changes all or nothing.
    fn reconfigure(&mut self, new: Settings) -> anyhow::Result<()> {
        crate::logging::parse_filter(&new.log_filter)?;
        let plan = crate::reload::plan(&self.config, new.config);
        let c = &plan.config;
        let keys = if c.encryption.private_keys != self.config.encryption.private_keys {
            Some(ServerKeys::load(&c.encryption.private_keys)?)
        } else {
            None
        };
        let no_keys = keys.as_ref().map_or(self.keys.is_empty(), ServerKeys::is_empty);
        anyhow::ensure!(!(c.encryption.require_encryption && no_keys), crate::config::REQUIRE_WITHOUT_KEYS);

        let log_changed = crate::logging::set_filter(&new.log_filter)?;
        if let Some(keys) = keys {
            for k in keys.iter() {
                tracing::info!(key = %k.path.display(), public = %k.public(), "encryption key loaded");
            }
            self.keys = keys;
        }
        let (old, now) = (&self.config.limits, Instant::now());
        if (old.hellos_per_second, old.hellos_per_source_per_second)
            != (c.limits.hellos_per_second, c.limits.hellos_per_source_per_second)
        {
            self.hello_budget =
                SourceBudget::new(c.limits.hellos_per_second, c.limits.hellos_per_source_per_second, now);
        }
        if old.crashes_per_second != c.limits.crashes_per_second {
            self.crash_budget = RateBudget::new(c.limits.crashes_per_second, now);
        }
        crate::logging::set_lines_per_second(c.limits.log_lines_per_second);
        *self.retention.lock().unwrap_or_else(PoisonError::into_inner) = c.retention;
        self.config = plan.config;

        for name in &plan.needs_restart {
            tracing::warn!(setting = name, "SIGHUP: changed in the configuration but needs a restart; left as it runs");
        }
        let mut applied = plan.applied;
        if log_changed {
            applied.push("log_level");
        }
        tracing::info!(
            applied = %if applied.is_empty() { "nothing".to_string() } else { applied.join(", ") },
            needs_restart = plan.needs_restart.len(),
            "SIGHUP: configuration reloaded"
        );
        Ok(())
    }
}
