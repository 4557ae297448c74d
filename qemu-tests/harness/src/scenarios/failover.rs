//! Client failover: the kernel lists three servers — a port nothing listens on, a
//! netdumpd without room that answers "try another server", and a netdumpd that takes
//! the dump — and the dump lands, bit-exact, on the third.

use super::common::{self, KernelRun, exit, expect_exit, with_server_log};
use crate::netdumpd::{Netdumpd, free_udp_port};
use crate::qemu::NicModel;
use crate::suite::{Ctx, Outcome, Scenario};
use anyhow::{Context, Result, ensure};
use netdump_test_pattern::Pattern;

pub fn scenarios(nic: NicModel) -> Vec<Scenario> {
    vec![Scenario::new("failover", nic, failover)]
}

/// Short bounds for the absent server (it costs them at install and again at the crash).
const BOUNDS: &str = "hello_attempts=2 hello_retry_ms=300 announce_ms=3000";

fn failover(ctx: &Ctx) -> Result<Outcome> {
    let seed = 0xfa11;
    // 4 MiB of pattern: the point is where the dump lands, not its size.
    let pattern = Pattern { base: 32 << 20, len: 4 << 20, seed, zero_every: 7 };
    let absent = free_udp_port()?;
    // No room at all beside its reserve: a failover client is sent on.
    let full = Netdumpd::start(
        &ctx.artifacts.netdumpd,
        &ctx.dir.join("crash-full"),
        &["--session-timeout", "3", "--min-free", "1000000000"],
    )?;
    let full_port = full.port;
    let taker = common::start_server(ctx, &[])?;
    let mut run = KernelRun::new("dump", pattern);
    run.extra = format!("{BOUNDS} fallbacks=10.0.2.2:{full_port},10.0.2.2:{}", taker.port);
    let q = run.boot(ctx, absent)?;
    let full_dumps = full.dumps_of(&ctx.id);
    let full_log = full.stop();
    with_server_log(taker, |taker| {
        expect_exit(&q, exit::SUCCESS, "the dump should verify on the third server")?;
        let serial = &q.serial;
        for line in [
            format!("netdump: server 0 10.0.2.2:{absent} not registered"),
            format!("netdump: server 1 10.0.2.2:{full_port} registered"),
            format!("netdump: server 2 10.0.2.2:{} registered", taker.port),
            "netdump: server 0 left: registration at crash time failed: no HELLO_ACK from the server".into(),
            "netdump: server 1 left: server refused the dump (TryElsewhere)".into(),
            format!("netdump: dump taken by server 2 10.0.2.2:{}", taker.port),
        ] {
            ensure!(serial.contains(&line), "no {line:?} on the console:\n{serial}");
        }
        let message = format!("netdump test panic (seed {seed:#x})");
        let (_, mut outcome) = common::check_complete_dump(ctx, taker, &pattern, &message, "netdump_test_crash_site")?;
        ensure!(full_dumps.is_empty(), "the server without room kept a dump directory: {full_dumps:?}");
        let declined = common::without_colours(&full_log);
        ensure!(
            declined.contains("dump declined") && declined.contains("TryElsewhere"),
            "the server without room did not send the client elsewhere; its log:\n{}",
            common::tail(&declined, 20)
        );
        outcome.detail += ", after an absent server and one without room (try_elsewhere)";
        Ok(outcome)
    })
    .context("failover")
}
